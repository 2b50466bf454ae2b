//! Command-line interface: arguments, logging, the runtime, and errors reported with context.

mod diagnose;
mod engine;
mod generate;
mod lab;
mod limits;
mod parse;
mod probe;
mod serve;

use clap::{ColorChoice, Parser, Subcommand};
use std::process::ExitCode;

/// Exit status when every probe got a banner.
pub const EXIT_OK: u8 = 0;
/// Exit status when some probe did not get a banner.
pub const EXIT_SOME_FAILED: u8 = 1;
/// Exit status for usage and input errors.
pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "sshprobe",
    version,
    about = "Find out why SSH connections die during the identification exchange",
    long_about = "Find out why SSH connections die during the identification exchange.\n\n\
        sshprobe performs only the SSH identification-string exchange (RFC 4253 4.2), never \
        authentication, and classifies every outcome with its evidence: RST to SYN, RST or FIN \
        before the banner, connect and banner timeouts, 'Exceeded MaxStartups'-style refusals, \
        non-SSH replies.",
    after_help = "Examples:\n  \
        sshprobe demo                         probe the embedded lab: every outcome, no server needed\n  \
        sshprobe probe 192.0.2.10             one probe of port 22\n  \
        sshprobe diagnose 192.0.2.10          why does ssh fail there, and what fixes it\n  \
        sshprobe limits 127.0.0.1:2222        benchmark MaxStartups of a server you own\n  \
        sshprobe probe --help                 all probe options"
)]
struct Cli {
    /// More logs on stderr (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    /// When to colour output for people: auto (on a terminal, unless NO_COLOR is set, TERM is dumb,
    /// or CLICOLOR_FORCE asks for it anyway), always, never. Applies to tables and logs.
    #[arg(long, value_name = "WHEN", value_enum, global = true, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Probe endpoints: one identification exchange per probe, classified.
    Probe(probe::ProbeArgs),
    /// Tell why the exchange fails: wrappers, MaxStartups, per-source limits, penalties, firewalls.
    Diagnose(diagnose::DiagnoseArgs),
    /// Benchmark connection limits: MaxStartups start:rate:full, accept rate, LoginGraceTime.
    Limits(limits::LimitsArgs),
    /// Run the embedded lab: emulated endpoints on loopback, one port per behaviour.
    Lab(lab::LabArgs),
    /// Start the lab in-process, probe every behaviour once and print the table.
    Demo(lab::DemoArgs),
    /// Serve a Prometheus exporter: /probe?target= answers why a server refuses, as metrics.
    Serve(serve::ServeArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(generate::CompletionsArgs),
    /// Print a man page (roff): sshprobe's, or a command's.
    Man(generate::ManArgs),
}

/// Parses the command line, runs the command, and turns errors into one line on stderr.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    sshprobe::report::set_colour_choice(cli.color);
    init_logging(cli.verbose);
    // Text generated from the argument definitions: no runtime needed.
    let generated = match &cli.command {
        Command::Completions(args) => Some(generate::completions(args)),
        Command::Man(args) => Some(generate::man(args)),
        _ => None,
    };
    if let Some(result) = generated {
        return exit_code(result);
    }
    let runtime = match runtime_for(&cli.command) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sshprobe: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // Every command catches Ctrl-C and SIGTERM itself, through the library's one catcher
    // (`sshprobe::shutdown`): `probe` and `limits` report what was done so far, the others drop
    // their work (and with it every connection it holds) and shut the engine down.
    let result = runtime.block_on(async {
        match cli.command {
            Command::Probe(args) => probe::run(args).await,
            Command::Diagnose(args) => diagnose::run(args).await,
            Command::Limits(args) => limits::run(args).await,
            Command::Lab(args) => lab::run_lab(args).await,
            Command::Demo(args) => lab::run_demo(args).await,
            Command::Serve(args) => serve::run(args).await,
            Command::Completions(_) | Command::Man(_) => Ok(EXIT_OK),
        }
    });
    // Leave no task behind (lab connections, held sockets) past this point.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    exit_code(result)
}

/// The exit status of a command's result; an error is one line on stderr.
fn exit_code(result: anyhow::Result<u8>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("sshprobe: {e:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// `probe` chooses its own runtime (see `probe --threads`); the other commands use tokio's default.
fn runtime_for(command: &Command) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match command {
        Command::Probe(args) => probe::runtime_builder(args),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all().build()
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "sshprobe=warn",
        1 => "sshprobe=debug",
        _ => "sshprobe=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        // No ANSI codes in a log file or a pipe.
        .with_ansi(sshprobe::report::stderr_wants_colour())
        .init();
}
