//! `sshprobe lab` and `sshprobe demo`.

use super::engine::EngineArgs;
use super::pipe::{say, stdout_line};
use super::EXIT_OK;
use anyhow::{anyhow, bail, Context};
use clap::Args;
use sshprobe::engine::any::AnyEngine;
use sshprobe::engine::{Engine, EngineConfig, ProbeRequest};
use sshprobe::evidence::ProbeOrder;
use sshprobe::experiment::budget::{Budget, DEFAULT_PER_SOURCE};
use sshprobe::experiment::diagnose::{diagnose, DiagnoseOptions};
use sshprobe::lab::{Behaviour, Lab, LabConfig, MaxStartups};
use sshprobe::outcome::classify;
use sshprobe::record::ProbeRecord;
use sshprobe::report::diagnose::write_diagnosis;
use sshprobe::report::probe::ProbeReporter;
use sshprobe::report::{stdout_wants_colour, Format};
use sshprobe::scan::ProbeResult;
use sshprobe::shutdown::ShutdownSignals;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  sshprobe lab
      ports chosen by the system, printed at start
  sshprobe lab --base-port 2200 --maxstartups 3:50:10
  sshprobe probe 127.0.0.1:2200 127.0.0.1:2201   (in another terminal)")]
pub struct LabArgs {
    /// Address to listen on (keep it on loopback).
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,

    /// First port; the behaviours take consecutive ports from here (12 of them, so at most 65524).
    /// 0: the system chooses.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(..=LAST_BASE_PORT))]
    base_port: u16,

    /// How long deny_close waits before closing (Debian's TCP-wrappers child waits 5 s).
    #[arg(long, default_value = "5s", value_parser = super::parse::duration)]
    deny_delay: Duration,

    /// MaxStartups start:rate:full for the maxstartups and not_allowed endpoints, as in sshd_config:
    /// unauthenticated connections open before refusals start, the refusal percentage there, and
    /// the count at which every new connection is refused.
    #[arg(long, default_value = "3:30:6")]
    maxstartups: MaxStartups,

    /// How long a connection may stay open (sshd's LoginGraceTime).
    #[arg(long, default_value = "30s", value_parser = super::parse::timeout)]
    grace: Duration,
}

/// The highest `--base-port` that leaves room for every behaviour's port.
const LAST_BASE_PORT: i64 = 65535 - (Behaviour::ALL.len() as i64 - 1);

pub async fn run_lab(args: LabArgs) -> anyhow::Result<u8> {
    let config = LabConfig {
        bind: args.bind,
        base_port: args.base_port,
        deny_delay: args.deny_delay,
        maxstartups: args.maxstartups,
        grace: args.grace,
        ..LabConfig::default()
    };
    if !args.bind.is_loopback() {
        say!(
            "sshprobe: warning: the lab listens on {}, beyond loopback: anyone who reaches it can hold its \
             connections and read its endpoints (keep it on 127.0.0.1 unless a second host must probe it)",
            args.bind
        );
    }
    // Caught before the table says the lab is up: a Ctrl-C right after it must stop the lab, not be
    // lost (or, where the shell ignores SIGINT for background jobs, ignored for good).
    let mut signals = ShutdownSignals::install().context("installing the SIGINT and SIGTERM handlers")?;
    let lab = Lab::start(config).await.context("starting the lab")?;
    // The lab serves on when nobody reads its table (`sshprobe lab | head -1`).
    let _ = stdout_line(format_args!("{:<12} {:<22} BEHAVIOUR", "ENDPOINT", "ADDRESS"));
    for (behaviour, addr) in lab.endpoints() {
        let _ = stdout_line(format_args!("{:<12} {:<22} {}", behaviour.name(), addr, behaviour.describe()));
    }
    say!("lab running; Ctrl-C stops it");
    signals.recv().await;
    drop(lab);
    Ok(EXIT_OK)
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Output format.
    #[arg(short = 'o', long = "format", value_enum, default_value_t = Format::Table)]
    format: Format,

    #[command(flatten)]
    engine: EngineArgs,
}

/// How many connections the demo holds on each MaxStartups endpoint: enough to reach `full`.
const DEMO_MAXSTARTUPS: MaxStartups = MaxStartups { start: 2, rate: 100, full: 2 };

/// deny_close's delay in the probe table: shortened, so the table comes at once.
const DEMO_DENY_DELAY: Duration = Duration::from_millis(500);

/// The MaxStartups rule of the diagnosed lab server: Debian's sshd default scaled down.
const SCENARIO_MAXSTARTUPS: MaxStartups = MaxStartups { start: 3, rate: 30, full: 6 };

pub async fn run_demo(args: DemoArgs) -> anyhow::Result<u8> {
    let format = args.format;
    args.engine.run(EngineConfig::default(), |engine| demo(engine, format)).await
}

/// Starts the lab and probes every behaviour once through `engine`.
async fn demo(engine: AnyEngine, format: Format) -> anyhow::Result<u8> {
    let lab = Lab::start(LabConfig {
        deny_delay: DEMO_DENY_DELAY,
        maxstartups: DEMO_MAXSTARTUPS,
        slow_interval: Duration::from_millis(20),
        ..LabConfig::default()
    })
    .await
    .context("starting the lab")?;

    // Fill both MaxStartups endpoints so that the probes see the refusal.
    let timeouts = |r: ProbeRequest| r.timeouts(Duration::from_secs(2), Duration::from_secs(2));
    let mut held = Vec::new();
    for behaviour in [Behaviour::Maxstartups, Behaviour::NotAllowed] {
        for _ in 0..DEMO_MAXSTARTUPS.full {
            let request = timeouts(ProbeRequest::new(lab.addr(behaviour)));
            let connection = engine.hold(request).await.map_err(|obs| {
                anyhow!("holding a {behaviour} connection: the lab answered {}", classify(&obs).outcome)
            })?;
            held.push(connection);
        }
    }

    let mut plan: Vec<(String, SocketAddr, ProbeOrder)> = Behaviour::ALL
        .iter()
        .map(|b| (b.name().to_string(), lab.addr(*b), ProbeOrder::WaitForBanner))
        .collect();
    plan.insert(2, ("deny_close --send-first".into(), lab.addr(Behaviour::DenyClose), ProbeOrder::SendFirst));

    let probes = plan.into_iter().map(|(label, remote, order)| {
        let engine = engine.clone();
        async move {
            let time = std::time::SystemTime::now();
            let observation = engine.probe(timeouts(ProbeRequest::new(remote)).order(order)).await;
            ProbeResult { target: label, seq: 0, time, record: ProbeRecord::new(observation) }
        }
    });
    let handles: Vec<_> = probes.map(tokio::spawn).collect();
    let mut results = Vec::with_capacity(handles.len());
    for handle in handles {
        results.push(handle.await.context("a demo probe failed")?);
    }
    drop(held);

    let table = format == Format::Table;
    let colour = table && stdout_wants_colour();
    if table {
        let intro = format_args!(
            "Each lab behaviour, probed once (the lab shortens deny_close's 5-s TCP-wrappers delay to {} ms here):\n",
            DEMO_DENY_DELAY.as_millis()
        );
        if !stdout_line(intro)? {
            return Ok(EXIT_OK);
        }
    }
    {
        let mut reporter = ProbeReporter::new(std::io::stdout().lock(), format, colour, false);
        for r in &results {
            // Nobody reads any more (`sshprobe demo | head -1`): what was written is the demo.
            if !super::pipe::open(reporter.write(r)).context("writing results")? {
                return Ok(EXIT_OK);
            }
        }
    }
    drop(lab);
    // The machine formats carry one kind of record: the probes. The diagnoses are for people.
    if table {
        diagnose_scenarios(&engine, colour).await?;
    }
    Ok(EXIT_OK)
}

/// The main job: `diagnose` on four lab servers, each a cause of `Connection closed by remote
/// host`, with its verdict, evidence and remedy.
async fn diagnose_scenarios(engine: &AnyEngine, colour: bool) -> anyhow::Result<()> {
    use std::io::Write;
    // The real 5-s wrappers delay: diagnose tells a TCP-wrappers denial by it (a shorter one would
    // be some other zero-byte close), so this lab does not shorten it.
    let lab =
        Lab::start(LabConfig { maxstartups: SCENARIO_MAXSTARTUPS, per_source: 3, ..LabConfig::default() })
            .await
            .context("starting the lab")?;
    let hold_timeouts = |r: ProbeRequest| r.timeouts(Duration::from_secs(2), Duration::from_secs(2));
    // Other clients fill the MaxStartups table, and take this address's per-source allowance.
    let mut held = Vec::new();
    let fills = [(Behaviour::Maxstartups, SCENARIO_MAXSTARTUPS.full), (Behaviour::PerSource, 3)];
    for (behaviour, count) in fills {
        // Past `start`, MaxStartups refuses at random: try again, a bounded number of times.
        let mut got = 0;
        for _ in 0..count * 20 {
            let request = hold_timeouts(ProbeRequest::new(lab.addr(behaviour)));
            if let Ok(connection) = engine.hold(request).await {
                held.push(connection);
                got += 1;
                if got == count {
                    break;
                }
            }
        }
        if got < count {
            bail!("filling the lab's {behaviour} endpoint: {got} of {count} connections held");
        }
    }
    let scenarios = [
        (
            Behaviour::DenyClose,
            "a TCP-wrappers denial (hosts.deny: Debian's child closes after 5 s, no byte)",
        ),
        (Behaviour::Maxstartups, "a full MaxStartups table (other clients hold 6 of MaxStartups 3:30:6)"),
        (
            Behaviour::PerSource,
            "a per-address limit (this address already holds 3 of PerSourceMaxStartups 3)",
        ),
        (Behaviour::Ok, "a healthy server"),
    ];
    say!("diagnosing four lab servers (about 10 s)...");
    let options = DiagnoseOptions::default();
    let runs = scenarios.iter().map(|&(behaviour, _)| {
        let options = options.clone();
        let remote = lab.addr(behaviour);
        async move {
            // The lab has no penalties: no pacing.
            let budget = Budget::penalty_safe(DEFAULT_PER_SOURCE);
            budget.server_has_no_penalties();
            let started = std::time::SystemTime::now();
            let d = diagnose(engine, behaviour.name(), remote, &options, &budget).await;
            (d, started)
        }
    });
    let diagnoses = futures_join_all(runs).await;
    drop(held);
    let mut out = std::io::stdout().lock();
    let mut write = || -> std::io::Result<()> {
        writeln!(out, "\nWhat diagnose says about each (sshprobe diagnose HOST):")?;
        for ((_, what), (d, started)) in scenarios.iter().zip(&diagnoses) {
            writeln!(out, "\n== {what}")?;
            write_diagnosis(&mut out, d, *started, Format::Table, colour)?;
        }
        Ok(())
    };
    // A reader that went away (`sshprobe demo | head`) took what it wanted.
    super::pipe::open(write()).context("writing the diagnoses")?;
    Ok(())
}

/// Runs every future to completion at once (they share the engine, no task needs to own it).
async fn futures_join_all<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut set: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, out) in set.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *out = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}
