//! `sshprobe probe`.

use super::engine::{EngineArgs, EngineKind};
use super::pipe::say;
use super::{EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE};
use anyhow::{bail, Context};
use clap::Args;
use sshprobe::engine::{ident_line, Engine, EngineConfig, ProbeRequest, DEFAULT_BYTE_CAP, DEFAULT_IDENT};
use sshprobe::evidence::{CloseMode, ProbeOrder};
use sshprobe::outcome::Outcome;
use sshprobe::report::probe::ProbeReporter;
use sshprobe::report::{wants_colour, Format, WholeLines};
use sshprobe::scan::{
    self, Dest, Event, NetOrder, RunOptions, Stop, TargetReaderOptions, TargetSource, TargetStream,
};
use sshprobe::shutdown::ShutdownSignals;
use sshprobe::target::{Exclusions, TargetError};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::error::TryRecvError;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  sshprobe probe 192.0.2.10
      port 22, wait for the banner
  sshprobe probe --send-first gw.example:2222
      speak first, as OpenSSH's ssh does
  sshprobe probe 10.1.0.0/24 -c 256 -o jsonl
      a network, JSON Lines
  sshprobe probe 10.1.0.0/24 -p 22,2222
      two ports of each address (or host:2200-2210)
  sshprobe probe -i hosts.txt --rate 50
      targets from a file, 50 new connections/s
  sshprobe probe host --count 20 --interval 100ms \\
      --source 10.0.0.5 --source 10.0.0.6
      20 probes, 100 ms apart, from two local addresses in turn
  sshprobe probe --engine raw --trace 127.0.0.1:2222
      every segment each way (root)
  sshprobe probe --kex -o jsonl host
      also the server's algorithms (its KEXINIT)

Exit status: 0 when every probe got a banner, 1 when some did not, 2 for usage
or input errors, 130 after Ctrl-C and 143 after SIGTERM (the probes under way
are reported as interrupted).")]
pub struct ProbeArgs {
    /// Targets: host, host:port, [v6addr]:port, CIDR (10.0.0.0/24 or 10.0.0.0/24:2222).
    #[arg(value_name = "TARGET")]
    targets: Vec<String>,

    /// Read targets from FILE, one per line (`#` comments); `-` for stdin. Repeatable.
    #[arg(short = 'i', long = "input", value_name = "FILE")]
    inputs: Vec<PathBuf>,

    /// Ports for targets that name none: a port, a list, ranges (22,2222 or 2200-2210). Targets
    /// may name theirs the same way (host:2200-2210).
    #[arg(short, long = "port", value_name = "PORTS", default_value = "22", value_parser = super::parse::ports)]
    ports: super::parse::Ports,

    /// How long the TCP handshake may take.
    #[arg(long, default_value = super::parse::duration_text(sshprobe::engine::SCAN_CONNECT_TIMEOUT), value_parser = super::parse::timeout)]
    connect_timeout: Duration,

    /// Deadline for the server's whole ident line, from connect (long enough for a Debian
    /// TCP-wrappers denial, which closes after 5 s).
    #[arg(long, default_value = super::parse::duration_text(sshprobe::engine::SCAN_BANNER_TIMEOUT), value_parser = super::parse::timeout)]
    banner_timeout: Duration,

    /// Targets probed at once.
    #[arg(short, long, default_value = "64", value_parser = super::parse::count::<usize>)]
    concurrency: usize,

    /// New connections per second, across all targets.
    #[arg(long)]
    rate: Option<f64>,

    /// Probes per target.
    #[arg(long, default_value = "1", value_parser = super::parse::count::<u32>)]
    count: u32,

    /// Gap between a target's probes (with --count).
    #[arg(long, default_value = "1s", value_parser = super::parse::duration)]
    interval: Duration,

    /// Local address to probe from; repeat for several, used round-robin.
    #[arg(long = "source", value_name = "ADDR")]
    sources: Vec<IpAddr>,

    /// Send our ident right after connecting, as OpenSSH's client does (a silent refusal then
    /// reads as a reset instead of a close).
    #[arg(long)]
    send_first: bool,

    /// Our identification line.
    #[arg(long, default_value = DEFAULT_IDENT)]
    ident: String,

    /// How to close: fin (orderly) or rst (abortive: no TIME_WAIT).
    #[arg(long, value_enum, default_value_t = CloseMode::Fin)]
    close: CloseMode,

    /// Output format.
    #[arg(short = 'o', long = "format", value_enum, default_value_t = Format::Table)]
    format: Format,

    /// Write results to FILE instead of stdout (created or truncated), a whole line at a time: a
    /// crash or a kill leaves no torn line.
    #[arg(long, value_name = "FILE")]
    output_file: Option<PathBuf>,

    #[command(flatten)]
    engine: EngineArgs,

    /// Also read the server's KEXINIT, which it sends unasked after the exchange (we never send
    /// ours, so no key exchange starts): its algorithms, strict KEX (Terrapin), post-quantum key
    /// exchange. JSONL gets a `kexinit` object, CSV a `kexinit` column, the table a line per probe.
    /// Costs a round trip more per probe with OpenSSH, which sends it only after our ident.
    #[arg(long)]
    kex: bool,

    /// The most bytes read from one connection (ident and KEXINIT together). A KEXINIT longer than
    /// what is left after the ident is reported as `exceeds_byte_cap`, not read.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_BYTE_CAP, value_parser = super::parse::count::<usize>)]
    byte_cap: usize,

    /// Record each probe's packet trace (--engine raw), to the end of the close: printed under its
    /// table row, and as `packets` in JSONL. Without it a probe ends once our FIN or RST is out.
    #[arg(long)]
    trace: bool,

    /// Never probe this network or address (repeatable): checked for every address, names after
    /// they resolve, before any packet leaves.
    #[arg(long = "exclude", value_name = "CIDR", value_parser = sshprobe::target::parse_exclusion)]
    excludes: Vec<ipnet::IpNet>,

    /// Never probe the networks listed in FILE, one per line (`#` comments), like zmap's and
    /// masscan's blocklists. Repeatable. A line that is not a network stops the run before it starts.
    #[arg(long = "exclude-file", value_name = "FILE")]
    exclude_files: Vec<PathBuf>,

    /// Also probe addresses that are never a unicast host (left out by default): 0.0.0.0/8,
    /// multicast 224.0.0.0/4 and ff00::/8, reserved 240.0.0.0/4 and the broadcast 255.255.255.255,
    /// the unspecified ::. Private ranges are probed either way.
    #[arg(long)]
    include_special: bool,

    /// List the targets that would be probed (after exclusions, shards and order), one a line, and
    /// send nothing (nmap -sL, zmap --dryrun). Names are listed as given: they are resolved only
    /// when probed.
    #[arg(long)]
    dry_run: bool,

    /// Probe only shard I of N (1-based, e.g. 2/4): disjoint parts of the target list for N machines.
    /// Shards of one scan must share --seed (without --seed, sharded runs use seed 0).
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    shard: Option<(u64, u64)>,

    /// Walk every network in a pseudo-random order (default: only networks larger than a /24, so
    /// load spreads across subnets). Lines of a file always keep their order.
    #[arg(long, conflicts_with = "no_shuffle")]
    shuffle: bool,

    /// Walk every network in address order.
    #[arg(long)]
    no_shuffle: bool,

    /// Seed of the pseudo-random order (implies --shuffle unless --no-shuffle): the same seed gives
    /// the same order. Default: random, shown with -v.
    #[arg(long)]
    seed: Option<u64>,

    /// Threads driving the probes: 1 (the default) runs every connection on one thread, which costs
    /// the least CPU per probe (docs/performance.md); 0 for one per CPU. With --engine raw, the
    /// engine's threads, each with its share of the source ports.
    #[arg(long, default_value = "1", value_name = "N", value_parser = super::parse::threads)]
    threads: usize,
}

/// The runtime `probe` runs on: one thread by default. On loopback, where the kernel's TCP work is
/// most of the cost, a second worker only adds cross-thread wake-ups (docs/performance.md). The
/// raw engine runs its flows on threads of its own (`--threads` of them), so its runtime only
/// hands out targets and writes results: one thread.
pub fn runtime_builder(args: &ProbeArgs) -> tokio::runtime::Builder {
    match args.threads {
        _ if args.engine.engine == EngineKind::Raw => tokio::runtime::Builder::new_current_thread(),
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if n > 1 {
                builder.worker_threads(n);
            }
            builder
        }
    }
}

/// Descriptors a run needs besides one per probe in flight: stdio, the runtime's epoll and wake-up
/// descriptors, target files, resolver sockets.
const FD_HEADROOM: u64 = 64;

fn parse_shard(s: &str) -> Result<(u64, u64), String> {
    let bad = || format!("invalid shard {s:?}: expected I/N with 1 <= I <= N, e.g. 1/4");
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let (i, n): (u64, u64) = (i.parse().map_err(|_| bad())?, n.parse().map_err(|_| bad())?);
    if i == 0 || i > n {
        return Err(bad());
    }
    Ok((i - 1, n))
}

/// Checks our ident line: errors for what would break the exchange, warnings for what servers dislike.
fn check_ident(ident: &str) -> anyhow::Result<()> {
    if ident.contains(['\r', '\n', '\0']) {
        bail!("--ident {ident:?}: must be one line without CR, LF or NUL");
    }
    if !(ident.starts_with("SSH-2.0-") || ident.starts_with("SSH-1.99-")) {
        bail!("--ident {ident:?}: must start with SSH-2.0- (RFC 4253 4.2)");
    }
    if ident.len() + 2 > sshprobe::ident::MAX_IDENT_LINE {
        bail!("--ident: {} bytes with CR LF, more than the 255 RFC 4253 allows", ident.len() + 2);
    }
    if ident.len() + 2 >= 128 {
        tracing::warn!("--ident is {} bytes with CR LF: libssh servers reject 128 or more", ident.len() + 2);
    }
    let software = ident.splitn(3, '-').nth(2).unwrap_or("");
    if software.starts_with("Probe-") || ident.contains("SSH_Version_Mapper") {
        tracing::warn!(
            "--ident {ident:?}: sshd closes silently on scanner idents (Probe-*, SSH_Version_Mapper)"
        );
    }
    Ok(())
}

pub async fn run(mut args: ProbeArgs) -> anyhow::Result<u8> {
    check_ident(&args.ident)?;
    if args.targets.is_empty() && args.inputs.is_empty() {
        bail!("no targets: give TARGET arguments or -i FILE (see sshprobe probe --help)");
    }
    if let Some(rate) = args.rate {
        if !(rate.is_finite() && rate > 0.0) {
            bail!("--rate {rate}: must be a positive number of connections per second");
        }
    }
    // The raw engine's packet trace only when asked for: without it a probe's slot is free as soon
    // as our close is out, and the record has no trace to write.
    let config = EngineConfig { byte_cap: args.byte_cap, close: args.close, trace: args.trace };
    let order = if args.send_first { ProbeOrder::SendFirst } else { ProbeOrder::WaitForBanner };
    let probe = ProbeRequest::new(SocketAddr::from(([0, 0, 0, 0], 0)))
        .order(order)
        .ident(ident_line(&args.ident))
        .timeouts(args.connect_timeout, args.banner_timeout)
        .kex(args.kex);
    let open_files = scan::raise_open_files_limit().context("reading the open-files limit")?;
    let needed = args.concurrency as u64 + FD_HEADROOM;
    if open_files.soft < needed {
        bail!(
            "--concurrency {} needs about {needed} open files, but the limit is {} (hard limit {}): \
             lower --concurrency to {} or less, or raise the hard limit (ulimit -Hn as root, \
             LimitNOFILE= in a systemd unit, nofile in /etc/security/limits.conf)",
            args.concurrency,
            open_files.soft,
            open_files.hard,
            open_files.soft.saturating_sub(FD_HEADROOM).max(1)
        );
    }
    let order = match (args.shuffle || args.seed.is_some(), args.no_shuffle) {
        (_, true) => NetOrder::Sequential,
        (true, false) => NetOrder::Shuffled,
        (false, false) => NetOrder::Auto,
    };
    // Shards must agree on the order, so a sharded run without a seed uses a fixed one.
    let seed = args.seed.unwrap_or_else(|| if args.shard.is_some() { 0 } else { rand::random() });
    tracing::debug!(seed, ?order, "target order");
    let first_port = args.ports.0.first().copied().unwrap_or(22);
    super::targets::warn_ambiguous(&args.targets, first_port);
    super::targets::check_source_families(&args.sources, &args.targets, first_port)?;
    let mut excludes = args.excludes;
    if !args.include_special {
        state_special_exclusions(&args.targets, first_port);
        excludes.extend(sshprobe::target::never_unicast());
    }
    let sources: Vec<TargetSource> = args
        .targets
        .into_iter()
        .map(TargetSource::Arg)
        .chain(args.inputs.into_iter().map(TargetSource::File))
        .collect();
    let total = PlannedTotal::count(&sources, &args.ports.0, args.count, args.shard);
    let exclusions = Arc::new(load_exclusions(excludes, &args.exclude_files)?);
    let targets = scan::spawn_target_reader(
        sources,
        TargetReaderOptions {
            default_ports: args.ports.0,
            shard: args.shard,
            order,
            seed,
            exclusions: exclusions.clone(),
        },
    );
    if args.dry_run {
        return list_targets(targets, args.format).await;
    }
    let stop = Stop::default();
    let options = RunOptions {
        concurrency: args.concurrency,
        rate: args.rate,
        count: args.count,
        interval: args.interval,
        sources: args.sources,
        probe,
        stop: stop.clone(),
        exclusions,
        in_flight: Arc::default(),
    };
    if args.trace && args.engine.engine != EngineKind::Raw {
        tracing::warn!("--trace shows packets only with --engine raw");
    }
    // Opened before any probe: a path that cannot be written is an input error, found at once.
    let results: Box<dyn std::io::Write> = match &args.output_file {
        Some(path) => Box::new(
            std::fs::File::create(path).with_context(|| format!("--output-file {}", path.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let output = Output {
        format: args.format,
        trace: args.trace,
        kex: args.kex,
        shard: args.shard,
        to_file: args.output_file.is_some(),
        total,
    };
    // Caught before the raw engine's rule exists, so no window leaves it behind.
    let mut signals = ShutdownSignals::install().context("installing the SIGINT and SIGTERM handlers")?;
    args.engine.raw_threads = match args.threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let engine = Arc::new(args.engine.open(config)?);
    let (code, signal) =
        drive_until_signal(engine.clone(), targets, options, output, results, &mut signals, &stop).await?;
    if let Some(signal) = signal {
        let name = signal.name();
        // The raw engine's nftables rule must not outlive the run: removed before exiting (a normal
        // end removes it when the engine is dropped).
        engine.shutdown();
        let rule = if engine.is_raw() { ", and the raw engine's firewall rule is removed" } else { "" };
        say!("sshprobe: {name}: stopped; the probes under way are reported as interrupted{rule}");
    }
    Ok(code)
}

/// How many probes the run will make: addresses × ports × `--count`, the share of one shard, known
/// at once for targets on the command line and once a thread has read the `-i` files (never for
/// standard input, which can be read only once). Excluded addresses are not subtracted, so the run
/// may make fewer. The progress line gets the total whenever it comes.
#[derive(Debug, Default)]
struct PlannedTotal {
    /// The total once known, and the progress line to give it to once there is one.
    state: Mutex<(Option<u64>, Option<indicatif::ProgressBar>)>,
}

impl PlannedTotal {
    /// Counts the probes of `sources`: at once for command-line targets, else on a thread.
    fn count(
        sources: &[TargetSource],
        ports: &[u16],
        count: u32,
        shard: Option<(u64, u64)>,
    ) -> Arc<PlannedTotal> {
        let planned = Arc::new(PlannedTotal::default());
        let all_args = sources.iter().all(|s| matches!(s, TargetSource::Arg(_)));
        let (sources, ports, fill) = (sources.to_vec(), ports.to_vec(), planned.clone());
        let count_them = move || {
            let Some(addresses) = scan::count_addresses(&sources, &ports) else { return };
            let mut probes = addresses.saturating_mul(u128::from(count));
            if let Some((i, n)) = shard {
                let (i, n) = (u128::from(i), u128::from(n));
                probes = probes / n + u128::from(i < probes % n);
            }
            if let Ok(probes) = u64::try_from(probes) {
                fill.set(probes);
            }
        };
        if all_args {
            count_them();
        } else if let Err(e) = std::thread::Builder::new().name("count".into()).spawn(count_them) {
            tracing::debug!("no thread to count the targets ({e}): the progress line shows no total");
        }
        planned
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Option<u64>, Option<indicatif::ProgressBar>)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, total: u64) {
        let mut state = self.lock();
        state.0 = Some(total);
        if let Some(bar) = &state.1 {
            show_total(bar, total);
        }
    }

    /// Gives `bar` the total now if it is known, else when it is.
    fn show_on(&self, bar: &indicatif::ProgressBar) {
        let mut state = self.lock();
        if let Some(total) = state.0 {
            show_total(bar, total);
        }
        state.1 = Some(bar.clone());
    }
}

/// `--dry-run`: writes every target the run would probe, in its order, and sends nothing. A table
/// line is `LABEL ADDRESS` (`name:port` for a name), JSON `{"target", "remote"}` or
/// `{"target", "host", "port"}`, CSV `target,remote`. Bad targets go to stderr as in a run.
async fn list_targets(mut targets: TargetStream, format: Format) -> anyhow::Result<u8> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let (mut listed, mut bad) = (0u64, false);
    let write = |out: &mut std::io::BufWriter<std::io::StdoutLock<'_>>,
                 t: &scan::Target|
     -> std::io::Result<()> {
        let label = sshprobe::escape::escape(&t.label);
        match (&t.dest, format) {
            (Dest::Addr(a), Format::Table) if t.label == a.to_string() => writeln!(out, "{a}"),
            (Dest::Addr(a), Format::Table) => writeln!(out, "{label:<28} {a}"),
            (Dest::Host { name, port }, Format::Table) => {
                writeln!(out, "{label:<28} {}:{port} (resolved when probed)", sshprobe::escape::escape(name))
            }
            (Dest::Addr(a), Format::Jsonl) => {
                sshprobe::escape::write_json(
                    &mut *out,
                    &serde_json::json!({"target": t.label, "remote": a.to_string()}),
                )?;
                writeln!(out)
            }
            (Dest::Host { name, port }, Format::Jsonl) => {
                sshprobe::escape::write_json(
                    &mut *out,
                    &serde_json::json!({"target": t.label, "host": name, "port": port}),
                )?;
                writeln!(out)
            }
            (Dest::Addr(a), Format::Csv) => writeln!(out, "{},{a}", sshprobe::report::csv_field(&t.label)),
            (Dest::Host { name, port }, Format::Csv) => {
                writeln!(
                    out,
                    "{},{}:{port}",
                    sshprobe::report::csv_field(&t.label),
                    sshprobe::report::csv_field(name)
                )
            }
        }
    };
    if format == Format::Csv {
        writeln!(out, "target,remote")?;
    }
    while let Some(item) = targets.recv().await {
        match item {
            Ok(t) => {
                let written = write(&mut out, &t);
                match written {
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(EXIT_OK),
                    result => result.context("writing the target list")?,
                }
                listed += 1;
            }
            Err(e @ TargetError::Excluded { .. }) => eprintln!("sshprobe: {e}"),
            Err(e) => {
                eprintln!("sshprobe: {e}");
                bad = true;
            }
        }
    }
    match out.flush() {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(EXIT_OK),
        result => result.context("writing the target list")?,
    }
    eprintln!("sshprobe: dry run: {listed} targets listed, nothing sent");
    Ok(if bad { EXIT_USAGE } else { EXIT_OK })
}

/// [`drive`], stopped by Ctrl-C or SIGTERM: the run starts no new probe, reports those under way as
/// interrupted and the results already made, and ends with 130 (143 for SIGTERM). A second signal
/// while it does so ends it at once. Returns the exit status and the signal, if one came.
async fn drive_until_signal<E: Engine>(
    engine: Arc<E>,
    targets: TargetStream,
    options: RunOptions,
    output: Output,
    results: Box<dyn std::io::Write>,
    signals: &mut ShutdownSignals,
    stop: &Stop,
) -> anyhow::Result<(u8, Option<sshprobe::shutdown::Stop>)> {
    let run = drive(engine, targets, options, output, results);
    tokio::pin!(run);
    tokio::select! {
        code = &mut run => Ok((code?, None)),
        signal = signals.recv() => {
            stop.stop();
            tokio::select! {
                drained = &mut run => { drained?; }
                _ = signals.recv() => {}
            }
            Ok((signal.exit_code(), Some(signal)))
        }
    }
}

/// One line on stderr when a target argument reaches into networks that are never a unicast host,
/// which the run leaves out (see [`sshprobe::target::never_unicast`]).
fn state_special_exclusions(targets: &[String], port: u16) {
    let touching: Vec<&str> = targets
        .iter()
        .filter(|t| {
            sshprobe::target::parse_target_ports(t, &[port])
                .is_ok_and(|specs| specs.iter().any(sshprobe::target::touches_never_unicast))
        })
        .map(String::as_str)
        .collect();
    if !touching.is_empty() {
        say!(
            "sshprobe: {}: leaving out addresses that are never a unicast host (0.0.0.0/8, multicast \
             224.0.0.0/4 and ff00::/8, reserved 240.0.0.0/4 and 255.255.255.255, ::); --include-special \
             probes them",
            sshprobe::escape::escape(&touching.join(", "))
        );
    }
}

/// The networks of `--exclude` and of every `--exclude-file`. A line that is not a network is an
/// error naming FILE:LINE: a blocklist read wrong could let packets out.
fn load_exclusions(mut nets: Vec<ipnet::IpNet>, files: &[PathBuf]) -> anyhow::Result<Exclusions> {
    for file in files {
        let text = std::fs::read(file).with_context(|| format!("--exclude-file {}", file.display()))?;
        for (i, line) in text.split(|&b| b == b'\n').enumerate() {
            let at = || format!("{}:{}", file.display(), i + 1);
            let line = std::str::from_utf8(line).map_err(|_| anyhow::anyhow!("{}: not UTF-8 text", at()))?;
            let line = line.split('#').next().unwrap_or("").trim();
            if !line.is_empty() {
                nets.push(
                    sshprobe::target::parse_exclusion(line).map_err(|e| anyhow::anyhow!("{}: {e}", at()))?,
                );
            }
        }
    }
    Ok(Exclusions::new(nets))
}

/// How results are shown.
#[derive(Debug, Clone)]
struct Output {
    format: Format,
    trace: bool,
    /// `--kex`: the KEXINIT's summary in CSV and table.
    kex: bool,
    /// The shard probed, to say so when it holds no target.
    shard: Option<(u64, u64)>,
    /// Whether results go to `--output-file` rather than stdout.
    to_file: bool,
    /// How many probes the run will make, once known (exclusions may make it fewer).
    total: Arc<PlannedTotal>,
}

/// Runs the probes with `engine`, reports each result, and returns the exit status.
async fn drive<E: Engine>(
    engine: Arc<E>,
    targets: TargetStream,
    options: RunOptions,
    output: Output,
    results: Box<dyn std::io::Write>,
) -> anyhow::Result<u8> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let in_flight = options.in_flight.clone();
    let runner = tokio::spawn(scan::run(engine, targets, options, tx));

    let started = Instant::now();
    let table = output.format == Format::Table;
    // Buffered, and flushed whenever no further result is waiting: lines still stream as probes
    // finish, but a busy run writes many lines per system call instead of one, whole lines only.
    let out = WholeLines::new(results, 64 * 1024);
    let on_terminal = !output.to_file && std::io::stdout().is_terminal();
    let mut reporter =
        ProbeReporter::new(out, output.format, table && wants_colour(on_terminal), output.trace)
            .kex(output.kex);
    let mut tally: BTreeMap<Outcome, u64> = BTreeMap::new();
    let mut bad_targets = 0u64;
    let mut excluded = 0u64;
    let progress = progress_line(on_terminal);
    output.total.show_on(&progress);
    let mut open = true;
    while open {
        let event = match rx.try_recv() {
            Ok(event) => event,
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => {
                open = output_open(reporter.flush())?;
                match rx.recv().await {
                    Some(event) if open => event,
                    _ => break,
                }
            }
        };
        match event {
            Event::Probe(result) => {
                *tally.entry(result.record.outcome()).or_default() += 1;
                progress.inc(1);
                progress.set_message(in_flight.load(std::sync::atomic::Ordering::Relaxed).to_string());
                open = output_open(reporter.write_unflushed(&result))?;
            }
            Event::BadTarget(e) => {
                bad_targets += 1;
                progress.suspend(|| say!("sshprobe: {e}"));
            }
            Event::Excluded(e) => {
                excluded += 1;
                progress.suspend(|| say!("sshprobe: {e}"));
            }
        }
    }
    progress.finish_and_clear();
    // The status says what was reported: every result written was a banner, or not.
    let status = |tally: &BTreeMap<Outcome, u64>| {
        if bad_targets > 0 {
            EXIT_USAGE
        } else if !tally.is_empty() && tally.keys().all(|o| o.is_success()) {
            EXIT_OK
        } else {
            EXIT_SOME_FAILED
        }
    };
    if !open || !output_open(reporter.flush())? {
        // Nobody reads the results any more (`sshprobe probe ... | head`): stop probing, with the
        // status of what was written.
        runner.abort();
        return Ok(status(&tally));
    }
    runner.await.context("the probe runner failed")?;
    let probes: u64 = tally.values().sum();
    if probes == 0 && bad_targets == 0 {
        match output.shard {
            _ if excluded > 0 => {
                bail!("no targets: every target given is excluded (--exclude, or never a unicast host)")
            }
            Some((i, n)) => bail!("no targets: shard {}/{n} holds none of the targets given", i + 1),
            None => bail!("no targets: the target list is empty"),
        }
    }
    // After bad targets alone, their lines on stderr say it all.
    // The summary stays on the terminal after the progress line is gone (and always with a table).
    if probes > 0 && (table || std::io::stderr().is_terminal()) {
        let parts: Vec<String> = tally.iter().map(|(o, n)| format!("{n} {o}")).collect();
        let noun = if probes == 1 { "probe" } else { "probes" };
        say!("{probes} {noun} in {:.2?}: {}", started.elapsed(), parts.join(", "));
    }
    Ok(status(&tally))
}

/// Whether stdout still takes results: a closed pipe (`| head`) ends the run quietly, as it does for
/// other Unix tools; any other write error is an error.
fn output_open(result: std::io::Result<()>) -> anyhow::Result<bool> {
    match result {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("writing results"),
    }
}

/// A progress line on stderr for runs whose results go to a file or a pipe: probes done, rate,
/// elapsed. Hidden when stderr is not a terminal, and when results go to the terminal themselves.
fn progress_line(results_on_terminal: bool) -> indicatif::ProgressBar {
    if results_on_terminal {
        return indicatif::ProgressBar::hidden();
    }
    // indicatif draws on stderr only when it is a terminal.
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message("0");
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} {pos} probes, {msg} in flight, {per_sec}, {elapsed}",
    ) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

/// Gives the progress line its total, percent and ETA (once the `-i` files are counted).
fn show_total(bar: &indicatif::ProgressBar, total: u64) {
    bar.set_length(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} {pos}/{len} probes ({percent}%), {msg} in flight, {per_sec}, ETA {eta}",
    ) {
        bar.set_style(style);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards() {
        assert_eq!(parse_shard("1/4"), Ok((0, 4)));
        assert_eq!(parse_shard("4/4"), Ok((3, 4)));
        for bad in ["0/4", "5/4", "1", "a/b", "1/0"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn idents() {
        assert!(check_ident(DEFAULT_IDENT).is_ok());
        assert!(check_ident("SSH-2.0-x\r\n").is_err());
        assert!(check_ident("hello").is_err());
        assert!(check_ident(&format!("SSH-2.0-{}", "x".repeat(250))).is_err());
    }
}
