//! The vocabulary of a packet trace: TCP control bits, TCP options, and ICMP errors by name.
//!
//! Pure types shared by two layers that may not import each other's: the raw engine's packet formats
//! ([`crate::engine::raw::wire`]) parse and emit them, and the evidence
//! ([`crate::evidence::PacketRecord`]) records them, so a trace says `SA` with `mss=65495` or
//! `admin_prohibited` as typed values that a classifier can match on, and the report renders.
//!
//! Each type is `Display` the way traces show it (`FPA`, `ws=7`, `port unreachable`) and serializes
//! as that same text, which is what the JSON Lines `packets` array has always carried; an ICMP error
//! also has a snake_case [`IcmpKind::name`] for machines.

use serde::{Serialize, Serializer};
use std::fmt;

/// TCP control bits (RFC 9293 §3.1; ECE and CWR from RFC 3168).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// No more data from the sender.
    pub const FIN: u8 = 0x01;
    /// Synchronise sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push.
    pub const PSH: u8 = 0x08;
    /// The acknowledgement number is significant.
    pub const ACK: u8 = 0x10;
    /// The urgent pointer is significant.
    pub const URG: u8 = 0x20;
    /// ECN echo.
    pub const ECE: u8 = 0x40;
    /// Congestion window reduced.
    pub const CWR: u8 = 0x80;

    /// Whether every bit of `bits` is set.
    pub fn has(self, bits: u8) -> bool {
        self.0 & bits == bits
    }
}

impl fmt::Display for TcpFlags {
    /// Letters in the order traces use: `S`, `SA`, `A`, `PA`, `FA`, `R`, `RA`, `FPA`; `.` for none.
    /// Width and alignment apply (`{:<3}`), as for a string.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const LETTERS: [(u8, u8); 8] = [
            (TcpFlags::SYN, b'S'),
            (TcpFlags::FIN, b'F'),
            (TcpFlags::RST, b'R'),
            (TcpFlags::PSH, b'P'),
            (TcpFlags::ACK, b'A'),
            (TcpFlags::URG, b'U'),
            (TcpFlags::ECE, b'E'),
            (TcpFlags::CWR, b'C'),
        ];
        if self.0 == 0 {
            return f.pad(".");
        }
        let mut text = [0u8; 8];
        let mut len = 0;
        for (bit, letter) in LETTERS {
            if self.0 & bit != 0 {
                text[len] = letter;
                len += 1;
            }
        }
        // Only ASCII letters were written.
        f.pad(std::str::from_utf8(&text[..len]).unwrap_or("?"))
    }
}

impl Serialize for TcpFlags {
    /// As its letters: `"SA"`.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One TCP option, as parsed from a header or to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcpOption {
    /// End of the option list (kind 0).
    EndOfList,
    /// Padding (kind 1).
    NoOperation,
    /// Maximum segment size (kind 2).
    MaxSegmentSize(u16),
    /// Window scale shift (kind 3).
    WindowScale(u8),
    /// SACK permitted (kind 4).
    SackPermitted,
    /// SACK blocks as (left, right) edges (kind 5).
    Sack(Vec<(u32, u32)>),
    /// Timestamps (kind 8).
    Timestamps {
        /// The sender's clock.
        value: u32,
        /// The echoed peer's clock.
        echo: u32,
    },
    /// Any other kind, with its data length.
    Unknown {
        /// Option kind.
        kind: u8,
        /// Bytes of option data (after kind and length).
        len: usize,
    },
}

impl TcpOption {
    /// Whether the option is only layout (padding or the end of the list), which traces leave out.
    pub(crate) fn is_padding(&self) -> bool {
        matches!(self, TcpOption::EndOfList | TcpOption::NoOperation)
    }
}

impl fmt::Display for TcpOption {
    /// As traces show options: `mss=1460`, `ws=7`, `sack_perm`, `ts=1/0`, `sack=1-2`, `opt30/4`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TcpOption::EndOfList => f.write_str("eol"),
            TcpOption::NoOperation => f.write_str("nop"),
            TcpOption::MaxSegmentSize(m) => write!(f, "mss={m}"),
            TcpOption::WindowScale(s) => write!(f, "ws={s}"),
            TcpOption::SackPermitted => f.write_str("sack_perm"),
            TcpOption::Sack(blocks) => {
                f.write_str("sack=")?;
                for (i, (l, r)) in blocks.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{l}-{r}")?;
                }
                Ok(())
            }
            TcpOption::Timestamps { value, echo } => write!(f, "ts={value}/{echo}"),
            TcpOption::Unknown { kind, len } => write!(f, "opt{kind}/{len}"),
        }
    }
}

impl Serialize for TcpOption {
    /// As a trace shows it: `"mss=1460"`.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// An ICMP (RFC 792, RFC 1812 §5.2.7.1) or ICMPv6 (RFC 4443 §3) error that can answer a TCP segment,
/// by name. Destination-unreachable codes that mean the same to a prober share a name (IPv4's three
/// "administratively prohibited" codes; port unreachable in both versions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum IcmpKind {
    /// No route to the network (v4 unreachable code 0).
    NetUnreachable,
    /// The host did not answer on its network (v4 code 1): ARP or neighbour discovery failed.
    HostUnreachable,
    /// The host does not speak the protocol (v4 code 2).
    ProtocolUnreachable,
    /// Nothing listens on the port, or a firewall's plain `reject` (v4 code 3, v6 code 4). The
    /// kernel reports it as ECONNREFUSED, like an RST.
    PortUnreachable,
    /// Fragmentation needed but Don't Fragment set (v4 code 4): path MTU discovery, not a failure.
    FragmentationNeeded,
    /// A source route failed (v4 code 5).
    SourceRouteFailed,
    /// The destination network or host is unknown (v4 codes 6 and 7).
    DestinationUnknown,
    /// Communication administratively prohibited: a firewall's reject (v4 codes 9, 10 and 13,
    /// v6 code 1).
    AdminProhibited,
    /// Unreachable for the type of service (v4 codes 11 and 12).
    TosUnreachable,
    /// No route to the destination (v6 code 0).
    NoRoute,
    /// The destination is beyond the scope of the source address (v6 code 2).
    BeyondScope,
    /// The address is unreachable (v6 code 3): neighbour discovery failed.
    AddressUnreachable,
    /// The source address failed an ingress or egress policy (v6 code 5).
    SourcePolicyFailed,
    /// A reject route to the destination (v6 code 6).
    RejectRoute,
    /// Time exceeded in transit (v4 type 11, v6 type 3): a routing loop, or a TTL too small.
    TimeExceeded,
    /// A destination-unreachable code without a name here.
    #[strum(serialize = "unreachable")]
    OtherUnreachable {
        /// Whether it came as ICMPv6.
        v6: bool,
        /// The code.
        code: u8,
    },
}

impl IcmpKind {
    /// The ICMPv4 error of this type and code, if it is one that can answer a TCP segment
    /// (destination unreachable, type 3; time exceeded, type 11).
    pub fn from_v4(icmp_type: u8, code: u8) -> Option<IcmpKind> {
        let kind = match (icmp_type, code) {
            (3, 0) => IcmpKind::NetUnreachable,
            (3, 1) => IcmpKind::HostUnreachable,
            (3, 2) => IcmpKind::ProtocolUnreachable,
            (3, 3) => IcmpKind::PortUnreachable,
            (3, 4) => IcmpKind::FragmentationNeeded,
            (3, 5) => IcmpKind::SourceRouteFailed,
            (3, 6 | 7) => IcmpKind::DestinationUnknown,
            (3, 9 | 10 | 13) => IcmpKind::AdminProhibited,
            (3, 11 | 12) => IcmpKind::TosUnreachable,
            (3, code) => IcmpKind::OtherUnreachable { v6: false, code },
            (11, _) => IcmpKind::TimeExceeded,
            _ => return None,
        };
        Some(kind)
    }

    /// The ICMPv6 error of this type and code, if it is one that can answer a TCP segment
    /// (destination unreachable, type 1; time exceeded, type 3).
    pub(crate) fn from_v6(icmp_type: u8, code: u8) -> Option<IcmpKind> {
        let kind = match (icmp_type, code) {
            (1, 0) => IcmpKind::NoRoute,
            (1, 1) => IcmpKind::AdminProhibited,
            (1, 2) => IcmpKind::BeyondScope,
            (1, 3) => IcmpKind::AddressUnreachable,
            (1, 4) => IcmpKind::PortUnreachable,
            (1, 5) => IcmpKind::SourcePolicyFailed,
            (1, 6) => IcmpKind::RejectRoute,
            (1, code) => IcmpKind::OtherUnreachable { v6: true, code },
            (3, _) => IcmpKind::TimeExceeded,
            _ => return None,
        };
        Some(kind)
    }

    /// The snake_case name machines read (`port_unreachable`, `admin_prohibited`); codes without a
    /// name are `unreachable`, their code in [`Display`](fmt::Display)'s text.
    pub fn name(self) -> &'static str {
        self.into()
    }
}

impl fmt::Display for IcmpKind {
    /// In words, as a person reads it (and as `Connect::Unreachable`'s detail says it).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match *self {
            IcmpKind::NetUnreachable => "network unreachable",
            IcmpKind::HostUnreachable => "host unreachable",
            IcmpKind::ProtocolUnreachable => "protocol unreachable",
            IcmpKind::PortUnreachable => "port unreachable",
            IcmpKind::FragmentationNeeded => "fragmentation needed",
            IcmpKind::SourceRouteFailed => "source route failed",
            IcmpKind::DestinationUnknown => "destination unknown",
            IcmpKind::AdminProhibited => "administratively prohibited",
            IcmpKind::TosUnreachable => "unreachable for type of service",
            IcmpKind::NoRoute => "no route to destination",
            IcmpKind::BeyondScope => "beyond scope of source address",
            IcmpKind::AddressUnreachable => "address unreachable",
            IcmpKind::SourcePolicyFailed => "source address failed policy",
            IcmpKind::RejectRoute => "reject route to destination",
            IcmpKind::TimeExceeded => "time exceeded",
            IcmpKind::OtherUnreachable { v6: false, code } => {
                return write!(f, "ICMP unreachable (code {code})")
            }
            IcmpKind::OtherUnreachable { v6: true, code } => {
                return write!(f, "ICMPv6 unreachable (code {code})")
            }
        };
        f.write_str(text)
    }
}

impl Serialize for IcmpKind {
    /// As its [`name`](IcmpKind::name).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_print_as_traces_show_them() {
        let f = |bits| TcpFlags(bits).to_string();
        assert_eq!(f(TcpFlags::SYN | TcpFlags::ACK), "SA");
        assert_eq!(f(TcpFlags::FIN | TcpFlags::ACK), "FA");
        assert_eq!(f(TcpFlags::RST | TcpFlags::ACK), "RA");
        assert_eq!(f(TcpFlags::FIN | TcpFlags::PSH | TcpFlags::ACK), "FPA");
        assert_eq!(f(0xff), "SFRPAUEC");
        assert_eq!(f(0), ".");
        // Padded as a string would be, so trace columns line up.
        assert_eq!(format!("[{:<3}]", TcpFlags(TcpFlags::ACK)), "[A  ]");
        assert_eq!(serde_json::to_string(&TcpFlags(TcpFlags::SYN | TcpFlags::ACK)).unwrap(), "\"SA\"");
        assert!(TcpFlags(TcpFlags::SYN | TcpFlags::ACK).has(TcpFlags::ACK));
        assert!(!TcpFlags(TcpFlags::SYN).has(TcpFlags::SYN | TcpFlags::ACK));
    }

    #[test]
    fn options_serialize_as_the_trace_shows_them() {
        let options = vec![
            TcpOption::MaxSegmentSize(65495),
            TcpOption::SackPermitted,
            TcpOption::Timestamps { value: 7, echo: 0 },
            TcpOption::WindowScale(7),
            TcpOption::Sack(vec![(1, 2), (5, 9)]),
            TcpOption::Unknown { kind: 30, len: 4 },
        ];
        assert_eq!(
            serde_json::to_string(&options).unwrap(),
            r#"["mss=65495","sack_perm","ts=7/0","ws=7","sack=1-2,5-9","opt30/4"]"#
        );
        assert!(TcpOption::NoOperation.is_padding() && TcpOption::EndOfList.is_padding());
        assert!(!TcpOption::SackPermitted.is_padding());
    }

    #[test]
    fn icmp_errors_have_names_in_both_versions() {
        // What a firewall's rejects send (nftables `reject with icmp(v6) type ...`).
        assert_eq!(IcmpKind::from_v4(3, 3), Some(IcmpKind::PortUnreachable));
        assert_eq!(IcmpKind::from_v6(1, 4), Some(IcmpKind::PortUnreachable));
        for code in [9, 10, 13] {
            assert_eq!(IcmpKind::from_v4(3, code), Some(IcmpKind::AdminProhibited), "code {code}");
        }
        assert_eq!(IcmpKind::from_v6(1, 1), Some(IcmpKind::AdminProhibited));
        assert_eq!(IcmpKind::from_v4(3, 1), Some(IcmpKind::HostUnreachable));
        assert_eq!(IcmpKind::from_v6(1, 3), Some(IcmpKind::AddressUnreachable));
        assert_eq!(IcmpKind::from_v4(3, 4), Some(IcmpKind::FragmentationNeeded));
        assert_eq!(IcmpKind::from_v4(11, 0), Some(IcmpKind::TimeExceeded));
        assert_eq!(IcmpKind::from_v6(3, 1), Some(IcmpKind::TimeExceeded));
        // Not errors about a segment: echo, redirect, packet too big (not handled).
        assert_eq!(IcmpKind::from_v4(8, 0), None);
        assert_eq!(IcmpKind::from_v4(5, 1), None);
        assert_eq!(IcmpKind::from_v6(2, 0), None);
        assert_eq!(IcmpKind::from_v6(128, 0), None);
        // Codes without a name keep their number, and their version.
        let other = IcmpKind::from_v4(3, 15).unwrap();
        assert_eq!((other.name(), other.to_string()), ("unreachable", "ICMP unreachable (code 15)".into()));
        assert_eq!(IcmpKind::from_v6(1, 7).unwrap().to_string(), "ICMPv6 unreachable (code 7)");
        assert_eq!(IcmpKind::AdminProhibited.to_string(), "administratively prohibited");
        assert_eq!(serde_json::to_string(&IcmpKind::AdminProhibited).unwrap(), "\"admin_prohibited\"");
    }
}
