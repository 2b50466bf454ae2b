//! [`AnyEngine`]: either engine, chosen at run time (`--engine connect|raw`), behind one type.
//!
//! Experiments are generic over [`Engine`]; a command that lets the user choose hands them this, so
//! one monomorphised copy serves both engines. The dispatch is a `match` per probe, nothing more.
//!
//! This is the one door every wing opens an engine through: the CLI's `--engine` and the exporter's
//! per-module `engine = "raw"` both name an [`EngineKind`] and call [`AnyEngine::open`]. What varies
//! between probes of one engine (order, ident, timeouts, and the [`EngineConfig`] when a caller
//! overrides it, as the exporter's modules do) travels with each [`ProbeRequest`].

use super::connect::{ConnectEngine, HeldSocket};
use super::raw::{HeldFlow, RawEngine, RawError, RawOptions};
use super::{Engine, EngineConfig, Held, HoldEnd, ProbeRequest};
use crate::evidence::Observation;

/// Which engine makes the connections: `--engine connect|raw`, or `engine = "raw"` in a module of
/// the exporter.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum, strum::IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum EngineKind {
    /// Kernel sockets: unprivileged, the default.
    #[default]
    Connect,
    /// Raw sockets and a user-space TCP client: a packet trace; needs CAP_NET_RAW and CAP_NET_ADMIN,
    /// and installs an nftables rule while it runs.
    Raw,
}

impl EngineKind {
    /// The name users write (`connect`, `raw`).
    pub fn name(self) -> &'static str {
        self.into()
    }
}

/// The kernel-socket engine or the raw one.
#[derive(Debug, Clone)]
pub enum AnyEngine {
    /// Kernel sockets.
    Connect(ConnectEngine),
    /// Raw sockets and a user-space TCP client.
    Raw(RawEngine),
}

impl AnyEngine {
    /// Opens an engine of this kind: the connect engine at once; the raw one with its capability
    /// check, run lock and firewall rule (`raw` says which ports and whether to install the rule).
    /// Catch signals first ([`crate::shutdown::ShutdownSignals`]), so none can leave the rule behind.
    pub fn open(kind: EngineKind, config: EngineConfig, raw: RawOptions) -> Result<AnyEngine, RawError> {
        Ok(match kind {
            EngineKind::Connect => AnyEngine::Connect(ConnectEngine::new(config)),
            EngineKind::Raw => AnyEngine::Raw(RawEngine::new(config, raw)?),
        })
    }

    /// Which kind this is.
    pub fn kind(&self) -> EngineKind {
        match self {
            AnyEngine::Connect(_) => EngineKind::Connect,
            AnyEngine::Raw(_) => EngineKind::Raw,
        }
    }

    /// Stops the raw engine now (on a signal): every flow in flight is reset and its firewall rule
    /// removed. The connect engine's sockets close when their owners drop them.
    pub fn shutdown(&self) {
        if let AnyEngine::Raw(raw) = self {
            raw.shutdown();
        }
    }

    /// Whether this is the raw engine (whose observations carry a packet trace).
    pub fn is_raw(&self) -> bool {
        matches!(self, AnyEngine::Raw(_))
    }
}

/// A connection held by either engine.
#[derive(Debug)]
pub enum AnyHeld {
    /// A kernel socket.
    Connect(HeldSocket),
    /// A raw-engine flow.
    Raw(HeldFlow),
}

impl Engine for AnyEngine {
    type Held = AnyHeld;

    async fn probe(&self, request: ProbeRequest) -> Observation {
        match self {
            AnyEngine::Connect(e) => e.probe(request).await,
            AnyEngine::Raw(e) => e.probe(request).await,
        }
    }

    async fn hold(&self, request: ProbeRequest) -> Result<AnyHeld, Observation> {
        match self {
            AnyEngine::Connect(e) => e.hold(request).await.map(AnyHeld::Connect),
            AnyEngine::Raw(e) => e.hold(request).await.map(AnyHeld::Raw),
        }
    }

    fn kernel_sockets(&self) -> Option<super::EngineConfig> {
        match self {
            AnyEngine::Connect(e) => e.kernel_sockets(),
            AnyEngine::Raw(e) => e.kernel_sockets(),
        }
    }
}

impl Held for AnyHeld {
    fn observation(&self) -> &Observation {
        match self {
            AnyHeld::Connect(h) => h.observation(),
            AnyHeld::Raw(h) => h.observation(),
        }
    }

    async fn ended(&mut self) -> HoldEnd {
        match self {
            AnyHeld::Connect(h) => h.ended().await,
            AnyHeld::Raw(h) => h.ended().await,
        }
    }
}
