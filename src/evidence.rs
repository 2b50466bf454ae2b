//! What one probe observed, exactly: the one record that flows from an engine to the classifier and on
//! to every report.
//!
//! An [`Observation`] holds facts only (what the connect did, which bytes arrived when, how the
//! connection ended, from which local address), never an interpretation: [`crate::outcome::classify`]
//! turns it into an outcome, and both are reported side by side so a reader can check the verdict
//! against the evidence. Times are microseconds from the moment the probe started connecting.

use bytes::Bytes;
use serde::Serialize;
use std::fmt;
use std::net::SocketAddr;

/// Which side speaks first. FACTS §2: a server that closes without reading sends FIN to a client that
/// has sent nothing and RST to one whose ident sits unread in its receive queue, so the order decides
/// how the same refusal looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ProbeOrder {
    /// Wait for the server's line, then send ours (sees FIN from a silent refusal).
    #[default]
    WaitForBanner,
    /// Send our line right after connecting, as OpenSSH's `ssh` does (sees RST from a silent refusal).
    SendFirst,
}

/// How the probe ends a connection it is done with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum CloseMode {
    /// An orderly close: FIN, and our side goes through TIME_WAIT.
    #[default]
    Fin,
    /// An abortive close (SO_LINGER 0): RST, no TIME_WAIT, so no ephemeral-port pressure.
    Rst,
}

/// What the TCP connection attempt gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Connect {
    /// The three-way handshake completed.
    Established,
    /// RST in answer to our SYN (ECONNREFUSED): nothing listening, or a firewall's reset.
    Refused,
    /// An ICMP error (host or network unreachable, administratively prohibited).
    Unreachable {
        /// The error as the system described it.
        detail: String,
    },
    /// No answer to our SYNs within the connect timeout.
    TimedOut,
    /// The probe could not even try: a local error (EADDRNOTAVAIL, EMFILE...).
    LocalError {
        /// The error as the system described it.
        detail: String,
    },
    /// The run was stopped (Ctrl-C, SIGTERM) while this probe was under way: reported so that no
    /// probe goes missing, though what it had seen so far is not kept.
    Interrupted,
}

/// How an established connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum End {
    /// The server closed in order (we read end of stream).
    Fin,
    /// The server reset the connection.
    Rst,
    /// Our banner deadline passed first.
    Timeout,
    /// We closed, having what we came for.
    WeClosed,
    /// The server sent more than we read without an ident line.
    ByteCap,
}

impl End {
    /// The snake_case name used in every output format.
    pub fn name(self) -> &'static str {
        match self {
            End::Fin => "fin",
            End::Rst => "rst",
            End::Timeout => "timeout",
            End::WeClosed => "we_closed",
            End::ByteCap => "byte_cap",
        }
    }
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Microseconds from the start of the connect, for each milestone that happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Timings {
    /// The handshake completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connected: Option<u64>,
    /// The first byte from the server arrived.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_byte: Option<u64>,
    /// The server's identification line was complete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ident: Option<u64>,
    /// The connection ended (or the connect attempt failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed: Option<u64>,
}

/// Direction of a traced segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From us to the server.
    Out,
    /// From the server to us.
    In,
}

/// One packet of a raw-engine trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PacketRecord {
    /// Microseconds from the start of the probe.
    pub t_us: u64,
    /// Which way it went.
    pub dir: Direction,
    /// TCP flags as letters (`S`, `SA`, `A`, `PA`, `FA`, `R`, `RA`), or `icmp`.
    pub flags: String,
    /// Sequence number relative to the sender's initial one.
    pub seq: u32,
    /// Acknowledgement number relative to the peer's initial sequence number.
    pub ack: u32,
    /// Advertised window.
    pub window: u16,
    /// IP TTL (or IPv6 hop limit).
    pub ttl: u8,
    /// TCP payload length.
    pub len: usize,
    /// TCP options, e.g. `mss=65495`, `sack_perm`, `ws=7`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// Everything one probe observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Observation {
    /// The address probed.
    pub remote: SocketAddr,
    /// Our address for this connection, when the socket got one.
    pub local: Option<SocketAddr>,
    /// Which side was to speak first.
    pub order: ProbeOrder,
    /// What the connect gave.
    pub connect: Connect,
    /// How the connection ended; `None` when it never was established.
    pub end: Option<End>,
    /// The milestones, in microseconds from the start of the connect.
    pub timings: Timings,
    /// Every byte received, up to the engine's cap.
    #[serde(skip)]
    pub received: Bytes,
    /// Whether our ident went out (in full) before the connection ended.
    pub sent_ident: bool,
    /// The raw engine's packet trace (empty for the connect engine).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub packets: Vec<PacketRecord>,
}

impl Observation {
    /// An observation of a connect attempt that did not establish a connection.
    pub fn failed_connect(
        remote: SocketAddr,
        local: Option<SocketAddr>,
        order: ProbeOrder,
        connect: Connect,
        after_us: u64,
    ) -> Observation {
        Observation {
            remote,
            local,
            order,
            connect,
            end: None,
            timings: Timings { closed: Some(after_us), ..Timings::default() },
            received: Bytes::new(),
            sent_ident: false,
            packets: Vec::new(),
        }
    }
}
