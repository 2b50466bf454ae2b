//! Engines: the I/O that turns a target address into an [`Observation`].
//!
//! An engine performs one identification exchange per call and reports what it saw, nothing more:
//! classification happens later, in [`crate::outcome`], so every engine feeds the same classifier and
//! must agree with the others on the same server behaviour.
//!
//! - [`connect`]: kernel sockets through tokio. Unprivileged, the default.
//! - `raw` (with the raw-engine issue): a user-space TCP handshake over raw sockets with a packet trace.

pub mod connect;

use crate::evidence::{CloseMode, Observation, ProbeOrder};
use bytes::Bytes;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Our identification line when the user does not choose one. Never starts with `Probe-` and never
/// mentions `SSH_Version_Mapper`: sshd treats those as scanners and closes silently (FACTS §1).
pub const DEFAULT_IDENT: &str = concat!("SSH-2.0-sshprobe_", env!("CARGO_PKG_VERSION"));

/// The most bytes a probe reads from one connection.
pub const DEFAULT_BYTE_CAP: usize = 8 * 1024;

/// How every probe of a run behaves.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// Which side speaks first.
    pub order: ProbeOrder,
    /// Our identification line, CR LF included.
    pub ident: Bytes,
    /// How long the TCP handshake may take.
    pub connect_timeout: Duration,
    /// How long after connecting the server's ident may take to arrive in full: a total deadline,
    /// not a per-read one, so a server dribbling bytes cannot hold a probe forever.
    pub banner_timeout: Duration,
    /// The most bytes read from one connection.
    pub byte_cap: usize,
    /// How we close once done.
    pub close: CloseMode,
}

impl Default for ProbeConfig {
    fn default() -> ProbeConfig {
        ProbeConfig {
            order: ProbeOrder::WaitForBanner,
            ident: ident_line(DEFAULT_IDENT),
            connect_timeout: Duration::from_secs(5),
            banner_timeout: Duration::from_secs(10),
            byte_cap: DEFAULT_BYTE_CAP,
            close: CloseMode::Fin,
        }
    }
}

/// Our identification line with its CR LF.
pub fn ident_line(text: &str) -> Bytes {
    Bytes::from(format!("{text}\r\n"))
}

/// One probe to make: where to, and from which local address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeRequest {
    /// The server's address.
    pub remote: SocketAddr,
    /// The local address to bind, or `None` for the kernel's choice.
    pub source: Option<IpAddr>,
}

/// Something that can perform identification exchanges.
pub trait Engine: Send + Sync + 'static {
    /// Performs one exchange and reports what it saw. Never fails: every failure is an observation.
    fn probe(&self, request: ProbeRequest) -> impl Future<Output = Observation> + Send;
}
