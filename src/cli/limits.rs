//! `sshprobe limits`.

use super::engine::EngineArgs;
use super::EXIT_OK;
use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use sshprobe::engine::any::AnyEngine;
use sshprobe::engine::EngineConfig;
use sshprobe::experiment::limits::{limits, LimitsOptions, Progress};
use sshprobe::report::limits::{plot_svg, write_limits};
use sshprobe::report::Format;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  sshprobe limits 127.0.0.1:2222 --plot limits.svg    ramp, fit MaxStartups, accept rate, plot
  sshprobe limits host --max-held 50 -o jsonl         one object per level, then a summary
  sshprobe limits host --grace 150s                   also measure LoginGraceTime (waits for it)

limits holds unauthenticated connections on purpose, up to --max-held: run it against servers
you own. Against OpenSSH 9.8+ set `PerSourcePenalties no` (or exempt the probing addresses)
first, or penalties mix into the curve; limits warns and checks for it.")]
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
    #[arg(long, default_value = "3s", value_parser = super::parse::timeout)]
    connect_timeout: Duration,

    /// Banner deadline per probe.
    #[arg(long, default_value = "8s", value_parser = super::parse::timeout)]
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

/// A progress bar on stderr (drawn only on a terminal).
struct Bar(ProgressBar);

impl Progress for Bar {
    fn level(&self, held: u32, refused: u32, probes: u32) {
        self.0.set_position(u64::from(held));
        self.0.set_message(format!("held {held}: {refused}/{probes} refused"));
    }

    fn phase(&self, name: &str) {
        self.0.set_prefix(name.to_string());
    }

    fn warn(&self, message: &str) {
        self.0.suspend(|| eprintln!("sshprobe: warning: {}", sshprobe::escape::escape(message)));
    }
}

pub async fn run(args: LimitsArgs) -> anyhow::Result<u8> {
    let engine = args.engine.clone();
    engine.run(EngineConfig::default(), |engine| measure(engine, args)).await
}

/// Runs the benchmark through `engine` and reports it.
async fn measure(engine: AnyEngine, args: LimitsArgs) -> anyhow::Result<u8> {
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
    let report = limits(&engine, &args.target, remote, &options, &Bar(bar.clone())).await;
    bar.finish_and_clear();
    let report = report?;
    let mut out = std::io::stdout().lock();
    write_limits(&mut out, &report, args.format).context("writing the report")?;
    if let Some(mut plot) = plot {
        let path = plot.path;
        plot_svg(&report, path).map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))?;
        plot.written = true;
        eprintln!("plot written to {}", path.display());
    }
    Ok(EXIT_OK)
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
