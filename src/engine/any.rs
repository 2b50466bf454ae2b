//! [`AnyEngine`]: either engine, chosen at run time (`--engine connect|raw`), behind one type.
//!
//! Experiments are generic over [`Engine`]; a command that lets the user choose hands them this, so
//! one monomorphised copy serves both engines. The dispatch is a `match` per probe, nothing more.

use super::connect::{ConnectEngine, HeldSocket};
use super::raw::{HeldFlow, RawEngine};
use super::{Engine, Held, HoldEnd, ProbeRequest};
use crate::evidence::Observation;

/// The kernel-socket engine or the raw one.
#[derive(Debug, Clone)]
pub enum AnyEngine {
    /// Kernel sockets.
    Connect(ConnectEngine),
    /// Raw sockets and a user-space TCP client.
    Raw(RawEngine),
}

impl AnyEngine {
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
        let ident_len = request.ident.len();
        let observation = match self {
            AnyEngine::Connect(e) => e.probe(request).await,
            AnyEngine::Raw(e) => e.probe(request).await,
        };
        super::trace::connection("probe", &observation, ident_len);
        observation
    }

    async fn hold(&self, request: ProbeRequest) -> Result<AnyHeld, Observation> {
        let held = match self {
            AnyEngine::Connect(e) => e.hold(request).await.map(AnyHeld::Connect),
            AnyEngine::Raw(e) => e.hold(request).await.map(AnyHeld::Raw),
        };
        match &held {
            Ok(h) => super::trace::connection("hold", h.observation(), 0),
            Err(observation) => super::trace::connection("hold", observation, 0),
        }
        held
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
