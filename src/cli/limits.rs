//! `sshprobe limits`.

use super::engine::EngineArgs;
use super::{EXIT_OK, EXIT_SOME_FAILED};
use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use sshprobe::engine::any::AnyEngine;
use sshprobe::engine::EngineConfig;
use sshprobe::experiment::limits::{limits, Level, LimitsError, LimitsOptions, LimitsReport, Progress};
use sshprobe::experiment::stats::{fit_maxstartups, LevelCount};
use sshprobe::report::limits::{plot_svg, write_level, write_summary};
use sshprobe::report::Format;
use sshprobe::shutdown::ShutdownSignals;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use std::time::{Instant, SystemTime};

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  sshprobe limits 127.0.0.1:2222 --plot limits.svg    ramp, fit MaxStartups, accept rate, plot
  sshprobe limits host --max-held 50 -o jsonl         one object per level, then a summary
  sshprobe limits host --grace 150s                   also measure LoginGraceTime (waits for it)

limits holds unauthenticated connections on purpose, up to --max-held: run it against servers
you own. Against OpenSSH 9.8+ set `PerSourcePenalties no` (or exempt the probing addresses)
first, or penalties mix into the curve; limits warns and checks for it.

Each level is written as soon as it is measured. Ctrl-C (or SIGTERM) closes every held connection,
writes a summary of the levels so far marked partial, and exits 130 (143).

Exit status: 0 after a run, 1 when the server does not answer with a banner, 2 for usage errors.")]
pub struct LimitsArgs {
    /// The server: host, host:port, [v6addr]:port.
    #[arg(value_name = "TARGET")]
    target: String,

    /// Port when the target names none.
    #[arg(short, long, default_value = "22", value_parser = super::parse::port)]
    port: u16,

    /// Unauthenticated connections held at once, at most.
    #[arg(long, default_value = "200", value_parser = super::parse::count::<u32>)]
    max_held: u32,

    /// Stop the ramp after this long (no hold or probe starts later; one under way may take up to
    /// its timeout). The recheck, accept-rate and grace phases that follow have their own bounds.
    #[arg(long, default_value = "2m", value_parser = super::parse::timeout)]
    max_duration: Duration,

    /// Probes at each level.
    #[arg(long, default_value = "20", value_parser = super::parse::count::<u32>)]
    probes: u32,

    /// How long to measure the accept rate (0s: skip).
    #[arg(long, default_value = "3s", value_parser = super::parse::duration)]
    rate_duration: Duration,

    /// Also measure LoginGraceTime, waiting at most this long (sshd's default is 120 s).
    #[arg(long, value_name = "WAIT", num_args = 0..=1, default_missing_value = "150s", value_parser = super::parse::timeout)]
    grace: Option<Duration>,

    /// With --grace against OpenSSH 9.8 or 9.9: measure anyway, although those charge every held
    /// connection that reaches LoginGraceTime 90 s of penalty (the probing addresses are blocked
    /// for minutes).
    #[arg(long, requires = "grace")]
    accept_grace_penalty: bool,

    /// Local addresses to spread probes and holders over (default: 127.77.x.y on IPv4 loopback).
    #[arg(long = "source", value_name = "ADDR")]
    sources: Vec<IpAddr>,

    /// Connect timeout per probe.
    #[arg(long, default_value = super::parse::duration_text(sshprobe::engine::DEFAULT_CONNECT_TIMEOUT), value_parser = super::parse::timeout)]
    connect_timeout: Duration,

    /// Banner deadline per probe.
    #[arg(long, default_value = super::parse::duration_text(sshprobe::engine::DEFAULT_BANNER_TIMEOUT), value_parser = super::parse::timeout)]
    banner_timeout: Duration,

    /// Draw the refused fraction against held connections, with the fitted rule, to FILE.svg.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,

    /// Output format.
    #[arg(short = 'o', long = "format", value_enum, default_value_t = Format::Table)]
    format: Format,

    #[command(flatten)]
    engine: EngineArgs,
}

/// The run's progress: a bar on stderr (drawn only on a terminal), each level written to stdout as
/// soon as it is measured, and each warning printed once on stderr.
struct Stream {
    bar: ProgressBar,
    target: String,
    remote: SocketAddr,
    format: Format,
    /// The levels so far, for a partial summary.
    levels: Mutex<Vec<Level>>,
    /// Warnings already printed.
    warned: Mutex<Vec<String>>,
    /// The first error writing stdout (a closed pipe), reported at the end.
    write_error: Mutex<Option<std::io::Error>>,
}

impl Progress for Stream {
    fn level(&self, level: &Level) {
        self.bar.set_position(u64::from(level.held));
        self.bar.set_message(format!("held {}: {}/{} refused", level.held, level.refused, level.probes));
        let mut levels = self.levels.lock().unwrap_or_else(|p| p.into_inner());
        let first = levels.is_empty();
        levels.push(level.clone());
        let mut error = self.write_error.lock().unwrap_or_else(|p| p.into_inner());
        if error.is_none() {
            let written = self.bar.suspend(|| {
                write_level(
                    &mut std::io::stdout().lock(),
                    &self.target,
                    self.remote,
                    level,
                    SystemTime::now(),
                    self.format,
                    first,
                )
            });
            *error = written.err();
        }
    }

    fn phase(&self, name: &str) {
        self.bar.set_prefix(name.to_string());
    }

    fn warn(&self, message: &str) {
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        if !warned.iter().any(|w| w == message) {
            warned.push(message.to_string());
            self.bar.suspend(|| eprintln!("sshprobe: warning: {}", sshprobe::escape::escape(message)));
        }
    }
}

pub async fn run(args: LimitsArgs) -> anyhow::Result<u8> {
    // Caught before the raw engine's rule exists, so no window leaves it behind; a signal ends the
    // benchmark with the levels measured so far (the rule goes when the engine is dropped).
    let mut signals = ShutdownSignals::install().context("installing the SIGINT and SIGTERM handlers")?;
    let engine = args.engine.open(EngineConfig::default())?;
    measure(&engine, args, &mut signals).await
}

/// Runs the benchmark through `engine` and reports it.
async fn measure(engine: &AnyEngine, args: LimitsArgs, signals: &mut ShutdownSignals) -> anyhow::Result<u8> {
    // A benchmark takes minutes: a plot it could not write would be found out only at its end.
    let plot = args.plot.as_deref().map(PlotFile::check).transpose()?;
    let remote = super::diagnose::resolve(&args.target, args.port).await?;
    let options = LimitsOptions {
        max_held: args.max_held,
        max_duration: args.max_duration,
        probes_per_level: args.probes,
        connect_timeout: args.connect_timeout,
        banner_timeout: args.banner_timeout,
        sources: args.sources,
        rate_duration: args.rate_duration,
        grace: args.grace,
        accept_grace_penalty: args.accept_grace_penalty,
    };
    let bar = ProgressBar::new(u64::from(args.max_held));
    bar.set_style(
        ProgressStyle::with_template("{prefix:>11} [{bar:30}] {pos}/{len} held  {msg}  {elapsed}")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let stream = Stream {
        bar: bar.clone(),
        target: args.target.clone(),
        remote,
        format: args.format,
        levels: Mutex::new(Vec::new()),
        warned: Mutex::new(Vec::new()),
        write_error: Mutex::new(None),
    };
    let started = (SystemTime::now(), Instant::now());
    // On Ctrl-C or SIGTERM the benchmark's future is dropped, and with it every held connection
    // (the holder closes them when dropped); the levels measured so far make a partial summary.
    let (report, signal) = tokio::select! {
        report = limits(engine, &args.target, remote, &options, &stream) => (Some(report), None),
        signal = signals.recv() => (None, Some(signal)),
    };
    bar.finish_and_clear();
    let mut out = std::io::stdout().lock();
    let (report, partial) = match report {
        Some(Ok(report)) => (report, false),
        Some(Err(e @ LimitsError::NoBanner { .. })) => {
            // The server answered, just not with a banner: a finding about it, not a usage error.
            eprintln!("sshprobe: {e}");
            return Ok(EXIT_SOME_FAILED);
        }
        Some(Err(e)) => return Err(e.into()),
        None => {
            let levels = std::mem::take(&mut *stream.levels.lock().unwrap_or_else(|p| p.into_inner()));
            (partial_report(&args.target, remote, levels, started.1), true)
        }
    };
    // Warnings found after the ramp, once (those found early were printed as they came).
    for w in &report.warnings {
        stream.warn(w);
    }
    if let Some(e) = stream.write_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return Ok(EXIT_OK);
        }
        return Err(e).context("writing the report");
    }
    match write_summary(&mut out, &report, started.0, args.format, partial) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(EXIT_OK),
        result => result.context("writing the report")?,
    }
    if let Some(signal) = signal {
        eprintln!(
            "sshprobe: {}: stopped after {} levels; every held connection was closed",
            signal.name(),
            report.levels.len()
        );
        return Ok(signal.exit_code());
    }
    if let Some(mut plot) = plot {
        let path = plot.path;
        plot_svg(&report, path).map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))?;
        plot.written = true;
        eprintln!("plot written to {}", path.display());
    }
    Ok(EXIT_OK)
}

/// A report of the levels measured before an interruption, with the fit over them.
fn partial_report(target: &str, remote: SocketAddr, levels: Vec<Level>, started: Instant) -> LimitsReport {
    // The trials are the probes the server decided on, as in the full run.
    let counts: Vec<LevelCount> = levels
        .iter()
        .map(|l| LevelCount { open: l.held, refused: l.refused, probes: l.refused + l.banners })
        .collect();
    LimitsReport {
        target: target.to_string(),
        remote,
        server: None,
        fit: fit_maxstartups(&counts),
        levels,
        recheck: (0, 0),
        accept_rate: None,
        grace: None,
        warnings: Vec::new(),
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

/// The `--plot` file, found writable before the run; removed again if the run ends without
/// writing a plot into a file it created.
struct PlotFile<'a> {
    path: &'a Path,
    created: bool,
    written: bool,
}

impl<'a> PlotFile<'a> {
    fn check(path: &'a Path) -> anyhow::Result<PlotFile<'a>> {
        let existed = path.exists();
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("--plot {}: cannot write there", path.display()))?;
        Ok(PlotFile { path, created: !existed, written: false })
    }
}

impl Drop for PlotFile<'_> {
    fn drop(&mut self) {
        if self.created && !self.written {
            let _ = std::fs::remove_file(self.path);
        }
    }
}
