//! The library's front door: probe one target, stream a scan, diagnose one target.
//!
//! Each call takes its options type, opens the engine the options name through the one door
//! ([`AnyEngine::open`]), and hands back the same records the command line prints: a
//! [`ProbeRecord`] (what one probe observed and what it means), a stream of [`ScanEvent`]s, a
//! [`Diagnosis`] (verdict, evidence, remedies). These are re-exported at the crate root.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), sshprobe::Error> {
//! use sshprobe::lab::{Behaviour, Lab, LabConfig};
//! use sshprobe::{probe_target, ProbeOptions};
//!
//! // The embedded lab: emulated servers on loopback, one per behaviour.
//! let lab = Lab::start(LabConfig::default()).await?;
//! let record = probe_target(lab.addr(Behaviour::DenyReset), &ProbeOptions::default()).await?;
//! assert_eq!(record.outcome().name(), "reset_before_banner");
//! # Ok(())
//! # }
//! ```

use crate::engine::any::{AnyEngine, EngineKind};
use crate::engine::raw::{RawError, RawOptions};
use crate::engine::{Engine, EngineConfig, ProbeRequest};
use crate::evidence::ProbeOrder;
use crate::experiment::budget::{Budget, DEFAULT_PER_SOURCE};
use crate::experiment::diagnose::{DiagnoseOptions, Diagnosis};
use crate::record::ProbeRecord;
use crate::scan::{spawn_target_reader, Event, RunOptions, TargetReaderOptions, TargetSource};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// What the front door's calls can fail with. Probes themselves never fail: every failure of the
/// exchange is an outcome in the record.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The raw engine could not start (capabilities, firewall, sockets).
    #[error(transparent)]
    Engine(#[from] RawError),
    /// An I/O error outside a probe (starting the lab, the runtime).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// How [`probe_target`] probes.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// Which engine makes the connection.
    pub engine: EngineKind,
    /// Which side speaks first.
    pub order: ProbeOrder,
    /// The local address to probe from; `None` for the kernel's choice.
    pub source: Option<IpAddr>,
    /// How long the TCP handshake may take.
    pub connect_timeout: Duration,
    /// How long the server's ident may take after the handshake.
    pub banner_timeout: Duration,
}

impl Default for ProbeOptions {
    /// The connect engine, waiting for the banner, with `probe`'s timeouts.
    fn default() -> ProbeOptions {
        ProbeOptions {
            engine: EngineKind::Connect,
            order: ProbeOrder::WaitForBanner,
            source: None,
            connect_timeout: crate::engine::SCAN_CONNECT_TIMEOUT,
            banner_timeout: crate::engine::SCAN_BANNER_TIMEOUT,
        }
    }
}

impl ProbeOptions {
    /// The request these options make for `remote`.
    fn request(&self, remote: SocketAddr) -> ProbeRequest {
        ProbeRequest::new(remote)
            .source(self.source)
            .order(self.order)
            .timeouts(self.connect_timeout, self.banner_timeout)
    }
}

/// One identification exchange with `remote`: what was seen, classified.
pub async fn probe_target(remote: SocketAddr, options: &ProbeOptions) -> Result<ProbeRecord, Error> {
    let engine = AnyEngine::open(options.engine, EngineConfig::default(), RawOptions::default())?;
    Ok(ProbeRecord::new(engine.probe(options.request(remote)).await))
}

/// How [`scan_targets`] runs.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Which engine makes the connections.
    pub engine: EngineKind,
    /// The port of targets that name none.
    pub default_port: u16,
    /// Targets in progress at once.
    pub concurrency: usize,
    /// New connections per second across the run; `None`: as fast as concurrency allows.
    pub rate: Option<f64>,
    /// How each probe is made (its engine field is ignored: `engine` above decides).
    pub probe: ProbeOptions,
}

impl Default for ScanOptions {
    fn default() -> ScanOptions {
        ScanOptions {
            engine: EngineKind::Connect,
            default_port: 22,
            concurrency: 64,
            rate: None,
            probe: ProbeOptions::default(),
        }
    }
}

/// What a scan reports as it goes: a finished probe, or a target that could not be probed.
pub type ScanEvent = Event;

/// A running scan: its events in the order they happen. Dropping it stops the scan.
#[derive(Debug)]
pub struct Scan {
    events: mpsc::Receiver<Event>,
    task: tokio::task::JoinHandle<()>,
}

impl Scan {
    /// The next event, or `None` once every target is done.
    pub async fn next(&mut self) -> Option<ScanEvent> {
        self.events.recv().await
    }
}

impl Drop for Scan {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts probing `targets` (addresses, `host:port`, CIDR networks, as the command line takes them)
/// and streams the results: constant memory however many targets, bounded concurrency, an exact
/// rate. Must be called within a tokio runtime.
pub fn scan_targets<I, S>(targets: I, options: &ScanOptions) -> Result<Scan, Error>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let engine = Arc::new(AnyEngine::open(options.engine, EngineConfig::default(), RawOptions::default())?);
    let sources = targets.into_iter().map(|t| TargetSource::Arg(t.into())).collect();
    let stream = spawn_target_reader(sources, TargetReaderOptions::new(options.default_port));
    let run = RunOptions {
        concurrency: options.concurrency,
        rate: options.rate,
        probe: options.probe.request(SocketAddr::from(([0, 0, 0, 0], 0))),
        ..RunOptions::default()
    };
    let (tx, events) = mpsc::channel(options.concurrency.max(1) * 2);
    let task = tokio::spawn(crate::scan::run(engine, stream, run, tx));
    Ok(Scan { events, task })
}

/// Diagnoses `remote` (named `target` in the report): why the exchange fails there and what fixes
/// it, within a penalty-safe budget and at most [`DEFAULT_PER_SOURCE`] connections per source
/// address (the ban-safe cap). Pass a ledger in `options` to pace as one client across calls.
pub async fn diagnose_target(
    target: &str,
    remote: SocketAddr,
    engine: EngineKind,
    options: &DiagnoseOptions,
) -> Result<Diagnosis, Error> {
    let engine = AnyEngine::open(engine, EngineConfig::default(), RawOptions::default())?;
    let budget = Budget::penalty_safe(DEFAULT_PER_SOURCE).max_per_address(DEFAULT_PER_SOURCE);
    Ok(crate::experiment::diagnose::diagnose(&engine, target, remote, options, &budget).await)
}
