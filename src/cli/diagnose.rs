//! `sshprobe diagnose`.

use super::engine::EngineArgs;
use super::{EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE};
use anyhow::{bail, Context};
use clap::Args;
use sshprobe::engine::any::AnyEngine;
use sshprobe::engine::EngineConfig;
use sshprobe::experiment::budget::{Budget, Ledger, DEFAULT_PER_SOURCE};
use sshprobe::experiment::diagnose::{diagnose, DiagnoseOptions, Verdict};
use sshprobe::report::diagnose::{write_diagnosis, CSV_HEADER};
use sshprobe::report::{stdout_wants_colour, Format};
use sshprobe::resolve::resolve_one;
use sshprobe::serverlog::LogTail;
use sshprobe::target::{parse_target, TargetSpec};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  sshprobe diagnose 192.0.2.10                 why does ssh fail with 'Connection closed by remote host'?
  sshprobe diagnose gw.example:2222 -o jsonl   one JSON object per target
  sshprobe diagnose host --source 10.0.0.5 --source 10.0.0.6
                                               probe from 10.0.0.5; 10.0.0.6 is the second address

Verdicts:
  ok                the identification exchange works; look past it (ssh -vvv)
  not_listening     RST to the SYN: nothing listens (or a firewall rejects with a reset)
  filtered          no answer to the SYNs: a firewall drops them, the host is down, or the server's
                    accept queue is full (a hung sshd)
  unreachable       ICMP errors answer the SYN
  access_denied     an access rule refuses this client: Debian's 5-s zero-byte close (TCP wrappers),
                    a message, or a close for this address only
  server_error      the server accepts, but its session process dies before the banner (host keys,
                    a broken install or configuration)
  listener_drop     zero bytes, at the listener, from every address, nothing on this host explains it:
                    a full table on a server that sends no message, or a forwarder with no backend
  maxstartups       the server-wide limit on unauthenticated connections (MaxStartups, dropbear's
                    MAX_UNAUTH_CLIENTS)
  per_source_limit  a per-address limit (PerSourceMaxStartups, dropbear's MAX_UNAUTH_PER_IP)
  penalized         OpenSSH 9.8+ PerSourcePenalties blocks this address
  source_blocked    a firewall refuses or drops this address's SYNs while others are served: a
                    static rule, or a ban (fail2ban, sshguard, `recent`), perhaps tripped by our probes
  firewall_limit    a firewall blocks an address only while it holds N connections (connlimit,
                    nft `ct count`) or opens more than R a minute (`limit rate`, `recent`, hashlimit)
  overloaded        accepted but no banner, or banners timing out under load
  not_ssh           something other than an SSH-2 server answers
  intermittent      failures without a pattern
  not_tested        no probe could be made within --max-duration

The budget: OpenSSH 9.8+ charges 1 s to an address for every connection that does not
authenticate and blocks it past 15 s owed (PerSourcePenalties). diagnose keeps each source address
under --budget seconds owed (10): a burst of about ten connections, then about one a second, waiting
rather than giving up. What an address owes is kept between runs (in $SSHPROBE_STATE_DIR, else
~/.local/state/sshprobe), and a banner from a server without penalties lifts the pacing.
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

    /// Penalty seconds a source address may owe the server (OpenSSH 9.8+ blocks past 15).
    #[arg(long, default_value_t = DEFAULT_PER_SOURCE, value_parser = super::parse::count::<u32>)]
    budget: u32,

    /// At most this many connections from one source address in one run, whatever the pace: a
    /// ban-safe cap for servers behind fail2ban or sshguard (each identification-only connection can
    /// count as a failure). The verdict says when the cap kept an experiment from running.
    #[arg(long, value_name = "N", default_value_t = 12, value_parser = super::parse::count::<u32>)]
    max_per_address: u32,

    /// The server's log, to cite what it says about our probes: sshd's or dropbear's, as `auth.log`
    /// or `secure` lines, `journalctl -u ssh` output or an `sshd -E` file, fail2ban's log or
    /// sshguard's lines; `-` for standard input (e.g. `ssh host journalctl -fu ssh | sshprobe
    /// diagnose host --server-log -`). Repeat for several logs (`--server-log /var/log/auth.log
    /// --server-log /var/log/fail2ban.log`). What is appended while diagnose runs is read, and what
    /// the files say about the probing addresses in the 15 minutes before (a ban, a penalty, a
    /// wrappers refusal).
    #[arg(long, value_name = "FILE")]
    server_log: Vec<String>,

    /// Stop starting probes after this long (waiting for the budget included); a target with no
    /// probe by then is `not_tested`.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    max_duration: Option<Duration>,

    /// Unauthenticated connections held at once in the load experiment, at most (steps 3, 6, 8).
    #[arg(long, default_value_t = 8)]
    max_held: u32,

    /// Connect timeout per probe.
    #[arg(long, default_value = super::parse::duration_text(sshprobe::engine::DEFAULT_CONNECT_TIMEOUT), value_parser = super::parse::timeout)]
    connect_timeout: Duration,

    /// Banner deadline per probe (must exceed Debian's 5 s TCP-wrappers delay to see it).
    #[arg(long, default_value = super::parse::duration_text(sshprobe::engine::DEFAULT_BANNER_TIMEOUT), value_parser = super::parse::timeout)]
    banner_timeout: Duration,

    /// When the verdict is `penalized`, poll every 2 s until the block lifts, for at most this long.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = super::parse::duration)]
    wait_penalty: Duration,

    /// Output format.
    #[arg(short = 'o', long = "format", value_enum, default_value_t = Format::Table)]
    format: Format,

    #[command(flatten)]
    engine: EngineArgs,
}

pub async fn run(args: DiagnoseArgs) -> anyhow::Result<u8> {
    if args.budget == 0 {
        bail!("--budget must be at least 1");
    }
    let engine = args.engine.clone();
    engine.run(EngineConfig::default(), |engine| diagnose_all(engine, args)).await
}

/// Diagnoses every target in turn through `engine`.
async fn diagnose_all(engine: AnyEngine, args: DiagnoseArgs) -> anyhow::Result<u8> {
    let options = DiagnoseOptions {
        connect_timeout: args.connect_timeout,
        banner_timeout: args.banner_timeout,
        max_held: args.max_held,
        sources: args.sources,
        penalty_wait: args.wait_penalty,
        // Opened before the first probe: only what the server appends from now on is read.
        server_log: match args.server_log.is_empty() {
            false => Some(Arc::new(Mutex::new(LogTail::open_all(&args.server_log)?))),
            true => None,
        },
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
    // of one sshd) share its source addresses' penalty count; the ledger carries it between runs.
    let mut budgets: std::collections::HashMap<IpAddr, Budget> = std::collections::HashMap::new();
    let ledger_path = Ledger::default_path();
    let mut ledger = ledger_path.as_deref().map(Ledger::read).unwrap_or_default();
    let deadline = args.max_duration.map(|d| std::time::Instant::now() + d);
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
            eprintln!("diagnosing {text} ({remote})...");
        }
        let budget = budgets.entry(remote.ip()).or_insert_with(|| {
            // One line when the waiting starts, then at most one every 10 s: progress, not a flood.
            let last = Mutex::new(None::<std::time::Instant>);
            let budget = Budget::penalty_safe(args.budget).max_per_address(args.max_per_address).on_wait(move |source, wait| {
                let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
                if last.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(10)) {
                    return;
                }
                *last = Some(std::time::Instant::now());
                let source = source.map_or_else(|| "the default address".to_string(), |s| s.to_string());
                eprintln!(
                    "sshprobe: pacing {source} at about one connection a second ({:.1} s to wait now): OpenSSH 9.8+ \
                     penalises faster probing",
                    wait.as_secs_f64()
                );
            });
            budget.load(&ledger, remote.ip());
            budget
        });
        if budget.usage().spent.values().any(|&n| n > 0) {
            eprintln!(
                "sshprobe: {text}: same host as an earlier target: its probes share that target's budget"
            );
        }
        let options = DiagnoseOptions {
            max_duration: deadline.map(|d| d.saturating_duration_since(std::time::Instant::now())),
            ..options.clone()
        };
        let started = std::time::SystemTime::now();
        let d = diagnose(&engine, text, remote, &options, budget).await;
        budget.store(&mut ledger, remote.ip());
        if let Some(path) = &ledger_path {
            if let Err(e) = ledger.write(path) {
                tracing::warn!("keeping the penalty ledger in {}: {e}", path.display());
            }
        }
        all_ok &= d.finding.verdict == Verdict::Ok;
        write_diagnosis(&mut out, &d, started, args.format, colour).context("writing the diagnosis")?;
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
        TargetSpec::Host { name, port } => resolve_one(&name, port, None)
            .await
            .map_err(|e| anyhow::anyhow!("cannot resolve {text:?}: {}", e.reason())),
        TargetSpec::Net { .. } => {
            bail!("{text:?} is a network: diagnose takes single hosts (use probe for networks)")
        }
    }
}
