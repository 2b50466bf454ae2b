//! The exporter's only calls into the engines and into `diagnose`: [`run_probe`] and
//! [`run_diagnose`]. Everything else in `serve` sees an [`Observation`] or a [`Diagnosis`].

use super::config::{EngineKind, Module, Modules};
use crate::engine::connect::ConnectEngine;
use crate::engine::raw::{RawEngine, RawError, RawOptions};
use crate::engine::{Engine, EngineConfig};
use crate::evidence::{Connect, Observation};
use crate::experiment::budget::{Budget, DEFAULT_PER_SOURCE};
use crate::experiment::diagnose::{diagnose, DiagnoseOptions, Diagnosis};
use std::net::SocketAddr;
use std::time::Duration;

/// The engines the exporter's modules need, alive as long as it serves. The raw engine's driver
/// (sockets, thread, nftables rule) is set up once at start, so a missing capability is an error
/// at start, not a failed scrape, and the rule is not rebuilt for every probe.
#[derive(Debug)]
pub struct Engines {
    raw: Option<RawEngine>,
}

impl Engines {
    /// Starts what `modules` need: the raw engine's driver when a module says `engine = "raw"`.
    pub fn start(modules: &Modules) -> Result<Engines, RawError> {
        let raw = if modules.need_raw() {
            Some(RawEngine::new(EngineConfig::default(), RawOptions::default())?)
        } else {
            None
        };
        Ok(Engines { raw })
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
    let request = module.request(remote, deadline);
    let config = module.engine_config();
    match module.engine {
        EngineKind::Connect => ConnectEngine::new(config).probe(request).await,
        EngineKind::Raw => {
            // Shares the driver `engines` keeps running; only the module's close mode differs.
            let started = engines.raw.as_ref().map(|_| RawEngine::new(config, RawOptions::default()));
            match started {
                Some(Ok(engine)) => engine.probe(request).await,
                Some(Err(e)) => local_error(module, remote, e.to_string()),
                None => local_error(module, remote, "the raw engine was not started".into()),
            }
        }
    }
}

fn local_error(module: &Module, remote: SocketAddr, detail: String) -> Observation {
    Observation::failed_connect(remote, None, module.order, Connect::LocalError { detail }, 0)
}

/// The longest one diagnosis may take before `/diagnose` gives up (504). Its connections are
/// bounded by the budget; this bounds its time.
pub const DIAGNOSE_TIMEOUT: Duration = Duration::from_secs(90);

/// Runs `diagnose` on `remote` with its default options and a fresh budget (at most
/// [`DEFAULT_PER_SOURCE`] connections per source address), within [`DIAGNOSE_TIMEOUT`].
pub async fn run_diagnose(target: &str, remote: SocketAddr) -> Option<Diagnosis> {
    let budget = Budget::penalty_safe(DEFAULT_PER_SOURCE);
    let options = DiagnoseOptions::default();
    let engine = ConnectEngine::default();
    tokio::time::timeout(DIAGNOSE_TIMEOUT, diagnose(&engine, target, remote, &options, &budget)).await.ok()
}

/// A diagnosis as `/diagnose` answers it: the JSON object `diagnose -o jsonl` prints.
pub fn diagnosis_json(d: &Diagnosis) -> Vec<u8> {
    let mut out = Vec::with_capacity(4096);
    // It ended just now, after `duration_ms`.
    let started = std::time::SystemTime::now() - Duration::from_millis(d.duration_ms);
    // Writing into a Vec cannot fail.
    let _ =
        crate::report::diagnose::write_diagnosis(&mut out, d, started, crate::report::Format::Jsonl, false);
    out
}
