//! `sshprobe completions SHELL` and `sshprobe man [COMMAND]`: shell completions and roff man pages,
//! generated from the same clap definitions as `--help`.

use super::{Cli, EXIT_OK};
use anyhow::Context;
use clap::{Args, CommandFactory};
use std::io::Write;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  sshprobe completions bash \\
      > ~/.local/share/bash-completion/completions/sshprobe
  sshprobe completions zsh > ~/.zfunc/_sshprobe
      (with fpath+=~/.zfunc before compinit)
  sshprobe completions fish > ~/.config/fish/completions/sshprobe.fish")]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  sshprobe man | man -l -                                one page for sshprobe
  sshprobe man probe > ~/.local/share/man/man1/sshprobe-probe.1
  for c in '' probe diagnose limits lab demo serve completions man; do
    sshprobe man $c > ~/.local/share/man/man1/sshprobe${c:+-$c}.1; done")]
pub struct ManArgs {
    /// The command whose page to write (sshprobe's own page without one).
    #[arg(value_name = "COMMAND")]
    command: Option<String>,
}

/// Writes the completion script for `args.shell` to stdout.
pub fn completions(args: &CompletionsArgs) -> anyhow::Result<u8> {
    // Generated into memory first: clap_complete panics when its writer fails (`| head`).
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "sshprobe", &mut script);
    write_stdout(&script).context("writing the completions")?;
    Ok(EXIT_OK)
}

/// Writes `text` to stdout; a reader that went away (`| head`) is no error.
fn write_stdout(text: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Writes a roff man page to stdout: `sshprobe(1)`, or `sshprobe-COMMAND(1)`.
pub fn man(args: &ManArgs) -> anyhow::Result<u8> {
    let mut cli = Cli::command();
    cli.build();
    let page = match &args.command {
        None => cli,
        Some(name) => {
            let sub = cli.find_subcommand(name).cloned().with_context(|| {
                let names: Vec<&str> =
                    cli.get_subcommands().map(|c| c.get_name()).filter(|&n| n != "help").collect();
                format!("no command {name:?}: one of {}", names.join(", "))
            })?;
            // The page's title and its usage line name the whole command, `sshprobe-probe`.
            // Each page says which version it documents, as sshprobe(1) does.
            sub.name(format!("sshprobe-{name}"))
                .bin_name(format!("sshprobe {name}"))
                .version(env!("CARGO_PKG_VERSION"))
        }
    };
    let mut roff = Vec::new();
    clap_mangen::Man::new(page).render(&mut roff).context("rendering the man page")?;
    write_stdout(&roff).context("writing the man page")?;
    Ok(EXIT_OK)
}
