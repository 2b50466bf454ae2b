//! The exporter's only calls into the engines and into `diagnose`: [`run_probe`] and
//! [`run_diagnose`]. Everything else in `serve` sees an [`Observation`] or a [`Diagnosis`].

use super::config::{EngineKind, Module, Modules};
use crate::engine::any::AnyEngine;
use crate::engine::raw::{RawError, RawOptions};
use crate::engine::{Engine, EngineConfig};
use crate::evidence::{Connect, Observation};
use crate::experiment::budget::{Budget, Ledger, DEFAULT_PER_SOURCE};
use crate::experiment::diagnose::{diagnose, DiagnoseOptions, Diagnosis};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The engines the exporter's modules need, opened once through the library's one door
/// ([`AnyEngine::open`]) and alive as long as it serves: the connect engine always, the raw one when
/// a module says `engine = "raw"`. The raw engine's driver (sockets, thread, nftables rule) is set
/// up at start, so a missing capability is an error at start, not a failed scrape. Each module's
/// close mode travels with its requests, so one engine of each kind serves every module.
#[derive(Debug)]
pub struct Engines {
    connect: AnyEngine,
    raw: Option<AnyEngine>,
    /// What each source address owes each server in OpenSSH 9.8+ penalties: the CLI's ledger, read
    /// at start and written after every diagnosis, so `/diagnose` and `sshprobe diagnose` pace as
    /// one client.
    ledger: Arc<Mutex<Ledger>>,
}

impl Engines {
    /// Opens what `modules` need.
    pub fn start(modules: &Modules) -> Result<Engines, RawError> {
        let open = |kind| AnyEngine::open(kind, EngineConfig::default(), RawOptions::default());
        let raw = if modules.need_raw() { Some(open(EngineKind::Raw)?) } else { None };
        let ledger = Ledger::default_path().as_deref().map(Ledger::read).unwrap_or_default();
        Ok(Engines { connect: open(EngineKind::Connect)?, raw, ledger: Arc::new(Mutex::new(ledger)) })
    }

    /// The engine of `kind`, if it was opened.
    fn of(&self, kind: EngineKind) -> Option<&AnyEngine> {
        match kind {
            EngineKind::Connect => Some(&self.connect),
            EngineKind::Raw => self.raw.as_ref(),
        }
    }

    /// Stops the raw engine now (on SIGTERM): its firewall rule is removed, probes in flight end.
    pub fn shutdown(&self) {
        if let Some(raw) = &self.raw {
            raw.shutdown();
        }
    }
}

/// Makes one probe of `remote` as `module` says, ending within `deadline` when one is given.
pub async fn run_probe(
    engines: &Engines,
    module: &Module,
    remote: SocketAddr,
    deadline: Option<Duration>,
) -> Observation {
    let request = module.request(remote, deadline).config(module.engine_config());
    match engines.of(module.engine) {
        Some(engine) => engine.probe(request).await,
        None => Observation::failed_connect(
            remote,
            None,
            module.order,
            Connect::LocalError { detail: format!("the {} engine was not started", module.engine.name()) },
            0,
        ),
    }
}

/// The longest one diagnosis may take before `/diagnose` gives up (504). Its connections are
/// bounded by the budget; this bounds its time.
pub const DIAGNOSE_TIMEOUT: Duration = Duration::from_secs(90);

/// Runs `diagnose` on `remote` through the engine `module` names, as the CLI does by default: a
/// penalty-safe budget kept in the shared ledger, at most [`DEFAULT_PER_SOURCE`] connections per
/// source address (the ban-safe cap), within [`DIAGNOSE_TIMEOUT`].
pub async fn run_diagnose(
    engines: &Engines,
    module: &Module,
    target: &str,
    remote: SocketAddr,
) -> Option<Diagnosis> {
    let engine = engines.of(module.engine)?;
    // What `sshprobe diagnose` (or another exporter) wrote since: its debts pace this run too.
    let path = Ledger::default_path();
    if let Some(path) = &path {
        engines.ledger.lock().unwrap_or_else(|p| p.into_inner()).merge_newer(Ledger::read(path));
    }
    let budget = Budget::penalty_safe(DEFAULT_PER_SOURCE).max_per_address(DEFAULT_PER_SOURCE);
    let options = DiagnoseOptions { ledger: Some(engines.ledger.clone()), ..DiagnoseOptions::default() };
    let d = tokio::time::timeout(DIAGNOSE_TIMEOUT, diagnose(engine, target, remote, &options, &budget))
        .await
        .ok();
    if let Some(path) = path {
        // Folded in again, so what another run wrote meanwhile is kept, not overwritten.
        let ledger = {
            let mut ledger = engines.ledger.lock().unwrap_or_else(|p| p.into_inner());
            ledger.merge_newer(Ledger::read(&path));
            ledger.clone()
        };
        if let Err(e) = ledger.write(&path) {
            tracing::warn!("keeping the penalty ledger in {}: {e}", path.display());
        }
    }
    d
}

/// A diagnosis as `/diagnose` answers it: the JSON object `diagnose -o jsonl` prints.
pub(crate) fn diagnosis_json(d: &Diagnosis) -> Vec<u8> {
    let mut out = Vec::with_capacity(4096);
    // It ended just now, after `duration_ms`.
    let started = std::time::SystemTime::now() - Duration::from_millis(d.duration_ms);
    // Writing into a Vec cannot fail.
    let _ =
        crate::report::diagnose::write_diagnosis(&mut out, d, started, crate::report::Format::Jsonl, false);
    out
}
