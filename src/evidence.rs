//! What one probe observed, exactly: the one record that flows from an engine to the classifier and on
//! to every report.
//!
//! An [`Observation`] holds facts only (what the connect did, which bytes arrived when, how the
//! connection ended, from which local address), never an interpretation: [`crate::outcome::classify`]
//! turns it into an outcome, and both are reported side by side so a reader can check the verdict
//! against the evidence. Times are microseconds from the moment the probe started connecting.

use crate::packet::{IcmpKind, TcpFlags, TcpOption};
use bytes::Bytes;
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};
use std::fmt;
use std::net::SocketAddr;

/// Which side speaks first. docs/facts.md §2: a server that closes without reading sends FIN to a client that
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
    /// The run was stopped (Ctrl-C, SIGTERM, its time limit) while this probe was still connecting:
    /// reported so that no probe goes missing. (Stopped after the handshake, a probe is
    /// `Established` and ends [`End::Interrupted`], with what it saw.)
    Interrupted,
}

/// How an established connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
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
    /// The run was stopped (Ctrl-C, SIGTERM, its time limit) before the exchange ended: what came
    /// until then is kept.
    Interrupted,
}

impl End {
    /// The snake_case name used in every output format.
    pub fn name(self) -> &'static str {
        self.into()
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

/// What a traced packet was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PacketKind {
    /// A TCP segment.
    Tcp {
        /// Its control bits.
        flags: TcpFlags,
        /// Its options, padding left out.
        options: Vec<TcpOption>,
    },
    /// An ICMP or ICMPv6 error quoting one of our segments.
    Icmp(IcmpKind),
}

impl fmt::Display for PacketKind {
    /// The flags' letters (`SA`), or `icmp`; padded to a width like a string.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PacketKind::Tcp { flags, .. } => flags.fmt(f),
            PacketKind::Icmp(_) => f.pad("icmp"),
        }
    }
}

/// One packet of a raw-engine trace.
///
/// In JSON (the `packets` of a JSONL record) it is flat, as it always was: `flags` as letters (`"SA"`)
/// or `"icmp"`, `options` as the trace shows them (`["mss=65495", "ws=7"]`, left out when there are
/// none; for an ICMP error its text, `["port unreachable"]`), and for an ICMP error also `icmp`, its
/// snake_case name (`"port_unreachable"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketRecord {
    /// Microseconds from the start of the probe.
    pub t_us: u64,
    /// Which way it went.
    pub dir: Direction,
    /// A segment's flags and options, or an ICMP error's name.
    pub kind: PacketKind,
    /// Sequence number relative to the sender's initial one (for an ICMP error: the quoted
    /// segment's, relative to ours).
    pub seq: u32,
    /// Acknowledgement number relative to the peer's initial sequence number.
    pub ack: u32,
    /// Advertised window.
    pub window: u16,
    /// IP TTL (or IPv6 hop limit).
    pub ttl: u8,
    /// TCP payload length.
    pub len: usize,
}

impl PacketRecord {
    /// A segment's control bits; `None` for an ICMP error.
    pub fn flags(&self) -> Option<TcpFlags> {
        match self.kind {
            PacketKind::Tcp { flags, .. } => Some(flags),
            PacketKind::Icmp(_) => None,
        }
    }

    /// A segment's options (empty for an ICMP error).
    pub fn options(&self) -> &[TcpOption] {
        match &self.kind {
            PacketKind::Tcp { options, .. } => options,
            PacketKind::Icmp(_) => &[],
        }
    }
}

impl Serialize for PacketRecord {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut record = serializer.serialize_struct("PacketRecord", 10)?;
        record.serialize_field("t_us", &self.t_us)?;
        record.serialize_field("dir", &self.dir)?;
        match &self.kind {
            PacketKind::Tcp { flags, .. } => record.serialize_field("flags", flags)?,
            PacketKind::Icmp(_) => record.serialize_field("flags", "icmp")?,
        }
        record.serialize_field("seq", &self.seq)?;
        record.serialize_field("ack", &self.ack)?;
        record.serialize_field("window", &self.window)?;
        record.serialize_field("ttl", &self.ttl)?;
        record.serialize_field("len", &self.len)?;
        match &self.kind {
            PacketKind::Tcp { options, .. } if options.is_empty() => record.skip_field("options")?,
            PacketKind::Tcp { options, .. } => record.serialize_field("options", options)?,
            PacketKind::Icmp(kind) => {
                record.serialize_field("options", &[kind.to_string()])?;
                record.serialize_field("icmp", kind)?;
            }
        }
        record.end()
    }
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
    /// The server's KEXINIT, or why there is none, when the probe asked for it
    /// ([`ProbeRequest::kex`](crate::engine::ProbeRequest::kex)) and the server's ident came.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kexinit: Option<crate::kexinit::KexRead>,
    /// What the engine's reader found when it scanned `received` for the ident line, when it
    /// found more than a partial line (`None`: the classifier scans): handed to
    /// [`ProbeRecord::new`](crate::record::ProbeRecord::new), which takes it, so a probe's bytes
    /// are parsed once.
    #[serde(skip)]
    pub ident_scan: Option<crate::ident::Scan>,
}

impl Observation {
    /// An observation of a connect attempt that did not establish a connection.
    pub(crate) fn failed_connect(
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
            kexinit: None,
            ident_scan: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: PacketKind) -> PacketRecord {
        PacketRecord { t_us: 120, dir: Direction::In, kind, seq: 0, ack: 1, window: 65483, ttl: 64, len: 0 }
    }

    #[test]
    fn a_traced_segment_serializes_as_the_jsonl_packets_always_were() {
        let synack = record(PacketKind::Tcp {
            flags: TcpFlags(TcpFlags::SYN | TcpFlags::ACK),
            options: vec![
                TcpOption::MaxSegmentSize(65495),
                TcpOption::SackPermitted,
                TcpOption::WindowScale(7),
            ],
        });
        assert_eq!(
            serde_json::to_string(&synack).unwrap(),
            r#"{"t_us":120,"dir":"in","flags":"SA","seq":0,"ack":1,"window":65483,"ttl":64,"len":0,"options":["mss=65495","sack_perm","ws=7"]}"#
        );
        assert_eq!(synack.flags(), Some(TcpFlags(TcpFlags::SYN | TcpFlags::ACK)));
        let ack = record(PacketKind::Tcp { flags: TcpFlags(TcpFlags::ACK), options: vec![] });
        let json = serde_json::to_value(&ack).unwrap();
        assert_eq!((json["flags"].as_str(), json.get("options")), (Some("A"), None));
        assert_eq!(format!("[{:<3}]", ack.kind), "[A  ]");
    }

    #[test]
    fn a_traced_icmp_error_keeps_its_text_and_gains_its_name() {
        let icmp = record(PacketKind::Icmp(IcmpKind::AdminProhibited));
        let json = serde_json::to_value(&icmp).unwrap();
        assert_eq!(json["flags"], "icmp");
        assert_eq!(json["options"], serde_json::json!(["administratively prohibited"]));
        assert_eq!(json["icmp"], "admin_prohibited");
        assert_eq!((icmp.flags(), icmp.options()), (None, &[][..]));
        assert_eq!(icmp.kind.to_string(), "icmp");
    }
}
