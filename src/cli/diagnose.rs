//! `sshprobe diagnose`.

use super::engine::EngineArgs;
use super::pipe::say;
use super::{EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE};
use anyhow::{bail, Context};
use clap::Args;
use sshprobe::engine::any::AnyEngine;
use sshprobe::engine::EngineConfig;
use sshprobe::experiment::budget::{Budget, Ledger, DEFAULT_PER_SOURCE};
use sshprobe::experiment::diagnose::{diagnose, DiagnoseOptions, Verdict};
use sshprobe::experiment::sources::Source;
use sshprobe::report::diagnose::{write_diagnosis, CSV_HEADER};
use sshprobe::report::{stdout_wants_colour, Format};
use sshprobe::resolve::resolve_one;
use sshprobe::serverlog::LogTail;
use sshprobe::shutdown::ShutdownSignals;
use sshprobe::target::{parse_target, TargetSpec};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  sshprobe diagnose 192.0.2.10
      why does ssh fail with 'Connection closed by remote host'?
  sshprobe diagnose gw.example:2222 -o jsonl
      one JSON object per target
  sshprobe diagnose gw.example -p 22,2222
      each port in turn (also host:2200-2202)
  sshprobe diagnose -i hosts.txt
      targets from a file, one a line (- for stdin)
  sshprobe diagnose host --source 10.0.0.5 --source 10.0.0.6
      probe from 10.0.0.5; 10.0.0.6 is the second address

Verdicts:
  ok                the identification exchange works; look past it (ssh -vvv)
  not_listening     RST to the SYN: nothing listens (or a firewall rejects with
                    a reset)
  filtered          no answer to the SYNs: a firewall drops them, the host is
                    down, or the server's accept queue is full (a hung sshd)
  unreachable       ICMP errors answer the SYN
  access_denied     an access rule refuses this client: Debian's 5-s zero-byte
                    close (TCP wrappers), a message, or a close for this
                    address only
  server_error      the server accepts, but its session process dies before the
                    banner (host keys, a broken install or configuration)
  listener_drop     zero bytes, at the listener, from every address, nothing on
                    this host explains it: a full table on a server that sends
                    no message, or a forwarder with no backend
  maxstartups       the server-wide limit on unauthenticated connections
                    (MaxStartups, dropbear's MAX_UNAUTH_CLIENTS)
  per_source_limit  a per-address limit (PerSourceMaxStartups, dropbear's
                    MAX_UNAUTH_PER_IP)
  penalized         OpenSSH 9.8+ PerSourcePenalties blocks this address
  source_blocked    a firewall refuses or drops this address's SYNs while
                    others are served: a static rule, or a ban (fail2ban,
                    sshguard, `recent`), perhaps tripped by our probes
  firewall_limit    a firewall blocks an address only while it holds N
                    connections (connlimit, nft `ct count`) or opens more than
                    R a minute (`limit rate`, `recent`, hashlimit)
  overloaded        accepted but no banner, or banners timing out under load
  not_ssh           something other than an SSH-2 server answers
  intermittent      failures without a pattern
  not_tested        no probe could be made within --max-duration
  legacy_algorithms the exchange works, but the server's KEXINIT offers
                    nothing a current OpenSSH client accepts for some kind
                    (kex, host key, cipher, MAC): `Unable to negotiate`; the
                    evidence names the -o workaround (weakening security),
                    the remedy the server fix
Beside ok, notes say when the server is exposed to Terrapin or offers no
post-quantum key exchange.

The budget: OpenSSH 9.8+ charges 1 s to an address for every connection that
does not authenticate and blocks it past 15 s owed (PerSourcePenalties).
diagnose keeps each source address under --budget seconds owed (10): a burst of
about ten connections, then about one a second, waiting rather than giving up.
What an address owes each server (address and port) is kept between runs (in
$SSHPROBE_STATE_DIR, else ~/.local/state/sshprobe), with the software its
banner named: a server without penalties (OpenSSH before 9.8, dropbear) is not
paced, in this run or the next. On IPv4 loopback it adds second addresses from
127.77.0.0/24 by itself.

Ctrl-C (or SIGTERM) stops at once: the diagnoses finished are written, the one
under way is reported as interrupted with the connections it made, and the
penalty ledger keeps them.

Exit status: 0 when every target's verdict is ok, 1 otherwise, 2 for usage or
input errors, 130 (143) when interrupted.")]
pub struct DiagnoseArgs {
    /// Targets: host, host:port, [v6addr]:port; a port list or range (host:22,2222, host:2200-2210)
    /// diagnoses each port.
    #[arg(value_name = "TARGET")]
    targets: Vec<String>,

    /// Read targets from FILE, one a line (`#` starts a comment); `-` for standard input.
    #[arg(short = 'i', long = "input", value_name = "FILE")]
    inputs: Vec<String>,

    /// Ports for targets that name none: a port, a list or a range (22, 22,2222, 2200-2210).
    #[arg(short, long = "port", value_name = "PORTS", default_value = "22", value_parser = super::parse::ports)]
    ports: super::parse::Ports,

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

    /// Stop after this long, waiting for the budget included: probes still in flight are cut
    /// there, and the verdict rests on those that finished; a target with none is `not_tested`.
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
    if args.targets.is_empty() && args.inputs.is_empty() {
        bail!("no targets: give TARGET arguments or -i FILE (see sshprobe diagnose --help)");
    }
    // Caught before the raw engine's rule exists, so no window leaves it behind.
    let mut signals = ShutdownSignals::install()?;
    let engine = args.engine.open(EngineConfig::default())?;
    diagnose_all(engine, args, &mut signals).await
}

/// The target texts: the arguments, then each input's lines (`-` is standard input), with where
/// each came from for error messages.
fn target_texts(args: &DiagnoseArgs) -> anyhow::Result<Vec<(String, String)>> {
    let mut texts: Vec<(String, String)> = args.targets.iter().map(|t| (t.clone(), t.clone())).collect();
    for input in &args.inputs {
        let content = if input == "-" {
            std::io::read_to_string(std::io::stdin().lock()).context("reading targets from standard input")?
        } else {
            std::fs::read_to_string(input).with_context(|| format!("reading targets from {input}"))?
        };
        let name = if input == "-" { "<stdin>" } else { input.as_str() };
        for (n, line) in content.lines().enumerate() {
            let text = line.split('#').next().unwrap_or("").trim();
            if !text.is_empty() {
                texts.push((text.to_string(), format!("{name}:{}", n + 1)));
            }
        }
    }
    Ok(texts)
}

/// Diagnoses every target in turn through `engine`; a signal stops it with what was seen so far.
async fn diagnose_all(
    engine: AnyEngine,
    args: DiagnoseArgs,
    signals: &mut ShutdownSignals,
) -> anyhow::Result<u8> {
    if args.server_log.iter().any(|l| l == "-") && args.inputs.iter().any(|i| i == "-") {
        bail!("-i - and --server-log - both want standard input: give one of them a file");
    }
    let texts = target_texts(&args)?;
    let options = DiagnoseOptions {
        connect_timeout: args.connect_timeout,
        banner_timeout: args.banner_timeout,
        max_held: args.max_held,
        sources: args.sources.clone(),
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
        // A closed stdout shows again at the first diagnosis, which then ends the run.
        super::pipe::open(writeln!(out, "{CSV_HEADER}")).context("writing the CSV header")?;
    }
    let mut all_ok = true;
    let mut bad_input = false;
    // One budget per server, address and port: two targets naming one server (a name and its
    // address) share its source addresses' penalty count; another port of the host (dropbear beside
    // sshd) keeps its own; the ledger carries both between runs, with the software seen there.
    let mut budgets: std::collections::HashMap<SocketAddr, Budget> = std::collections::HashMap::new();
    let ledger_path = Ledger::default_path();
    let mut ledger = ledger_path.as_deref().map(Ledger::read).unwrap_or_default();
    let deadline = args.max_duration.map(|d| std::time::Instant::now() + d);
    let first_port = args.ports.0.first().copied().unwrap_or(22);
    super::targets::warn_ambiguous(&args.targets, first_port);
    let mut targets = Vec::new();
    for (text, origin) in texts {
        let resolved = resolve_ports(&text, &args.ports.0).await.and_then(|remotes| {
            remotes
                .into_iter()
                .map(|r| super::targets::checked_remote(&args.sources, &text, r))
                .collect::<anyhow::Result<Vec<SocketAddr>>>()
        });
        match resolved {
            Ok(remotes) => {
                let several = remotes.len() > 1;
                for remote in remotes {
                    let label =
                        if several { format!("{text} (port {})", remote.port()) } else { text.clone() };
                    targets.push((label, remote));
                }
            }
            Err(e) if origin != text => {
                say!("sshprobe: {origin}: {e:#}");
                bad_input = true;
            }
            Err(e) => {
                say!("sshprobe: {e:#}");
                bad_input = true;
            }
        }
    }
    for (diagnosed, (text, remote)) in targets.iter().enumerate() {
        let (text, remote) = (text.as_str(), *remote);
        if args.format == Format::Table {
            say!("diagnosing {text} ({remote})...");
        }
        let budget = budgets.entry(remote).or_insert_with(|| {
            // One line when the waiting starts, then at most one every 10 s: progress, not a flood.
            let last = Mutex::new(None::<std::time::Instant>);
            let budget = Budget::penalty_safe(args.budget).max_per_address(args.max_per_address).on_wait(move |source, wait| {
                let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
                if last.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(10)) {
                    return;
                }
                *last = Some(std::time::Instant::now());
                let source = match source {
                    Source::Address(ip) => ip.to_string(),
                    Source::KernelChoice => "the default address".to_string(),
                };
                say!(
                    "sshprobe: pacing {source} at about one connection a second ({:.1} s to wait now): OpenSSH 9.8+ \
                     penalises faster probing",
                    wait.as_secs_f64()
                );
            });
            budget.load(&ledger, remote);
            budget
        });
        if budget.usage().spent.values().any(|&n| n > 0) {
            say!("sshprobe: {text}: same server as an earlier target: its probes share that target's budget");
        }
        let options = DiagnoseOptions {
            max_duration: deadline.map(|d| d.saturating_duration_since(std::time::Instant::now())),
            ..options.clone()
        };
        let started = std::time::SystemTime::now();
        let clock = std::time::Instant::now();
        let outcome = tokio::select! {
            d = diagnose(&engine, text, remote, &options, budget) => Ok(d),
            signal = signals.recv() => Err(signal),
        };
        budget.store(&mut ledger, remote);
        let d = match outcome {
            Ok(d) => d,
            Err(stop) => {
                let (name, code) = (stop.name(), stop.exit_code());
                // The probes made so far are in the ledger; the diagnosis under way has no verdict.
                if let Some(path) = &ledger_path {
                    let _ = ledger.write(path);
                }
                let spent: u32 = budget.usage().spent.values().sum();
                let elapsed = clock.elapsed().as_secs_f64();
                write_interrupted(&mut out, text, remote, spent, elapsed, args.format)?;
                say!(
                    "sshprobe: {name}: stopped while diagnosing {text} ({elapsed:.1} s, {spent} connections made, \
                     no verdict); {diagnosed} of {} targets diagnosed",
                    targets.len()
                );
                return Ok(code);
            }
        };
        if let Some(sw) = &d.server {
            ledger.saw(remote, sw);
        }
        if let Some(path) = &ledger_path {
            if let Err(e) = ledger.write(path) {
                tracing::warn!("keeping the penalty ledger in {}: {e}", path.display());
            }
        }
        all_ok &= d.finding.verdict == Verdict::Ok;
        let written = super::pipe::open(write_diagnosis(&mut out, &d, started, args.format, colour))
            .context("writing the diagnosis")?;
        if !written {
            // Nobody reads any more (`diagnose A B | head -1`): diagnose no further target; the
            // status is that of the diagnoses written.
            break;
        }
    }
    Ok(if bad_input {
        EXIT_USAGE
    } else if all_ok {
        EXIT_OK
    } else {
        EXIT_SOME_FAILED
    })
}

/// What a diagnosis cut short by a signal saw: a table line, or a JSON object with `interrupted`.
fn write_interrupted(
    out: &mut impl std::io::Write,
    text: &str,
    remote: SocketAddr,
    connections: u32,
    elapsed_s: f64,
    format: Format,
) -> std::io::Result<()> {
    let target = sshprobe::escape::escape(text);
    match format {
        Format::Table => writeln!(
            out,
            "{target}  interrupted  (after {elapsed_s:.1} s and {connections} connections to {remote}: no verdict)"
        ),
        Format::Jsonl => {
            let v = serde_json::json!({
                "target": text,
                "remote": remote.to_string(),
                "interrupted": true,
                "connections": connections,
                "duration_ms": (elapsed_s * 1000.0) as u64,
            });
            sshprobe::escape::write_json(&mut *out, &v)?;
            writeln!(out)
        }
        Format::Csv => Ok(()),
    }
}

/// Every address for a target whose port may be a list or a range (`host:22,2222`), one per port.
async fn resolve_ports(text: &str, ports: &[u16]) -> anyhow::Result<Vec<SocketAddr>> {
    let specs = sshprobe::target::parse_target_ports(text, ports)?;
    let mut remotes = Vec::with_capacity(specs.len());
    for spec in specs {
        remotes.push(resolve_spec(text, spec).await?);
    }
    Ok(remotes)
}

/// One address for a target: diagnose needs a single server, so a network is an error.
pub async fn resolve(text: &str, port: u16) -> anyhow::Result<SocketAddr> {
    resolve_spec(text, parse_target(text, port)?).await
}

async fn resolve_spec(text: &str, spec: TargetSpec) -> anyhow::Result<SocketAddr> {
    match spec {
        TargetSpec::Addr(a) => Ok(a),
        TargetSpec::Host { name, port } => resolve_one(&name, port, None)
            .await
            .map_err(|e| anyhow::anyhow!("cannot resolve {text:?}: {}", e.reason())),
        TargetSpec::Net { .. } => {
            bail!("{text:?} is a network: diagnose takes single hosts (use probe for networks)")
        }
    }
}
