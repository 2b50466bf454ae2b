//! `sshprobe diagnose`.

use super::{EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE};
use anyhow::{bail, Context};
use clap::Args;
use sshprobe::experiment::budget::{Budget, DEFAULT_PER_SOURCE};
use sshprobe::experiment::diagnose::{diagnose, DiagnoseOptions, Verdict};
use sshprobe::report::diagnose::{write_diagnosis, CSV_HEADER};
use sshprobe::report::{stdout_wants_colour, Format};
use sshprobe::target::{parse_target, TargetSpec};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  sshprobe diagnose 192.0.2.10                 why does ssh fail with 'Connection closed by remote host'?
  sshprobe diagnose gw.example:2222 -o jsonl   one JSON object per target
  sshprobe diagnose host --source 10.0.0.5 --source 10.0.0.6
                                               probe from 10.0.0.5; 10.0.0.6 is the second address

Verdicts: ok, not_listening, filtered, unreachable, access_denied, maxstartups, per_source_limit,
penalized, overloaded, not_ssh, intermittent.

The budget: OpenSSH 9.8+ blocks an address after about 15 connections that do not authenticate
(PerSourcePenalties), so diagnose opens at most --budget connections per source address (12).
On IPv4 loopback it adds second addresses from 127.77.0.0/24 by itself.

Exit status: 0 when every target's verdict is ok, 1 otherwise, 2 for usage or input errors.")]
pub struct DiagnoseArgs {
    /// Targets: host, host:port, [v6addr]:port.
    #[arg(value_name = "TARGET", required = true)]
    targets: Vec<String>,

    /// Port for targets that name none.
    #[arg(short, long, default_value = "22", value_parser = super::parse::port)]
    port: u16,

    /// Local addresses: the first probes, the others serve as second sources and holders.
    #[arg(long = "source", value_name = "ADDR")]
    sources: Vec<IpAddr>,

    /// Connections per source address, at most.
    #[arg(long, default_value_t = DEFAULT_PER_SOURCE, value_parser = super::parse::count::<u32>)]
    budget: u32,

    /// Unauthenticated connections held at once in the load experiment, at most (steps 3, 6, 8).
    #[arg(long, default_value_t = 8)]
    max_held: u32,

    /// Connect timeout per probe.
    #[arg(long, default_value = "3s", value_parser = super::parse::timeout)]
    connect_timeout: Duration,

    /// Banner deadline per probe (must exceed Debian's 5 s TCP-wrappers delay to see it).
    #[arg(long, default_value = "8s", value_parser = super::parse::timeout)]
    banner_timeout: Duration,

    /// When the verdict is `penalized`, poll every 2 s until the block lifts, for at most this long.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = super::parse::duration)]
    wait_penalty: Duration,

    /// Output format.
    #[arg(short = 'o', long = "format", value_enum, default_value_t = Format::Table)]
    format: Format,
}

pub async fn run(args: DiagnoseArgs) -> anyhow::Result<u8> {
    let options = DiagnoseOptions {
        connect_timeout: args.connect_timeout,
        banner_timeout: args.banner_timeout,
        max_held: args.max_held,
        sources: args.sources,
        penalty_wait: args.wait_penalty,
        ..DiagnoseOptions::default()
    };
    let mut out = std::io::stdout().lock();
    let colour = args.format == Format::Table && stdout_wants_colour();
    if args.format == Format::Csv {
        use std::io::Write;
        writeln!(out, "{CSV_HEADER}")?;
    }
    let mut all_ok = true;
    let mut bad_input = false;
    // One budget per server host: two targets naming one server (a name and its address, two ports
    // of one sshd) share its source addresses' penalty count.
    let mut budgets: std::collections::HashMap<IpAddr, Budget> = std::collections::HashMap::new();
    for text in &args.targets {
        let remote = match resolve(text, args.port).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("sshprobe: {e:#}");
                bad_input = true;
                continue;
            }
        };
        if args.format == Format::Table {
            eprintln!(
                "diagnosing {text} ({remote}): at most {} connections per source address...",
                args.budget
            );
        }
        let budget = budgets.entry(remote.ip()).or_insert_with(|| Budget::new(args.budget));
        if budget.usage().spent.values().any(|&n| n > 0) {
            eprintln!(
                "sshprobe: {text}: same host as an earlier target: its probes share that target's budget"
            );
        }
        let d = diagnose(text, remote, &options, budget).await;
        all_ok &= d.finding.verdict == Verdict::Ok;
        write_diagnosis(&mut out, &d, args.format, colour).context("writing the diagnosis")?;
    }
    Ok(if bad_input {
        EXIT_USAGE
    } else if all_ok {
        EXIT_OK
    } else {
        EXIT_SOME_FAILED
    })
}

/// One address for a target: diagnose needs a single server, so a network is an error.
pub async fn resolve(text: &str, port: u16) -> anyhow::Result<SocketAddr> {
    match parse_target(text, port)? {
        TargetSpec::Addr(a) => Ok(a),
        TargetSpec::Host { name, port } => tokio::net::lookup_host((name.as_str(), port))
            .await
            .with_context(|| format!("cannot resolve {text:?}"))?
            .next()
            .with_context(|| format!("cannot resolve {text:?}: no addresses")),
        TargetSpec::Net { .. } => {
            bail!("{text:?} is a network: diagnose takes single hosts (use probe for networks)")
        }
    }
}
