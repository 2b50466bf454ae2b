//! `sshprobe lab` and `sshprobe demo`.

use super::engine::EngineArgs;
use super::EXIT_OK;
use anyhow::{anyhow, Context};
use clap::Args;
use sshprobe::engine::any::AnyEngine;
use sshprobe::engine::{Engine, EngineConfig, ProbeRequest};
use sshprobe::evidence::ProbeOrder;
use sshprobe::lab::{Behaviour, Lab, LabConfig, MaxStartups};
use sshprobe::outcome::classify;
use sshprobe::record::ProbeRecord;
use sshprobe::report::probe::ProbeReporter;
use sshprobe::report::{stdout_wants_colour, Format};
use sshprobe::scan::ProbeResult;
use sshprobe::shutdown::ShutdownSignals;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  sshprobe lab                                   ports chosen by the system, printed at start
  sshprobe lab --base-port 2200 --maxstartups 3:50:10
  sshprobe probe 127.0.0.1:2200 127.0.0.1:2201   (in another terminal)")]
pub struct LabArgs {
    /// Address to listen on (keep it on loopback).
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,

    /// First port; the behaviours take consecutive ports from here (11 of them, so at most 65525).
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
    let lab = Lab::start(config).await.context("starting the lab")?;
    println!("{:<12} {:<22} BEHAVIOUR", "ENDPOINT", "ADDRESS");
    for (behaviour, addr) in lab.endpoints() {
        println!("{:<12} {:<22} {}", behaviour.name(), addr, behaviour.describe());
    }
    eprintln!("lab running; Ctrl-C stops it");
    let mut signals = ShutdownSignals::install().context("installing the SIGINT and SIGTERM handlers")?;
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

pub async fn run_demo(args: DemoArgs) -> anyhow::Result<u8> {
    let format = args.format;
    args.engine.run(EngineConfig::default(), |engine| demo(engine, format)).await
}

/// Starts the lab and probes every behaviour once through `engine`.
async fn demo(engine: AnyEngine, format: Format) -> anyhow::Result<u8> {
    let lab = Lab::start(LabConfig {
        deny_delay: Duration::from_millis(500),
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
    let mut reporter =
        ProbeReporter::new(std::io::stdout().lock(), format, table && stdout_wants_colour(), false);
    for r in &results {
        reporter.write(r).context("writing results")?;
    }
    Ok(EXIT_OK)
}
