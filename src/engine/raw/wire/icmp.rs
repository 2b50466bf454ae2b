//! ICMP (RFC 792) and ICMPv6 (RFC 4443) errors about a TCP segment: what went wrong, and which
//! segment (addresses, ports, sequence number) it quotes, so the engine can find the flow it ends.
//! Types and codes are named by [`IcmpKind`], which the trace records.

use super::ipv4;
use super::{be16, be32, Ipv6Packet, SeqNumber, WireError, PROTO_TCP};
pub use crate::packet::IcmpKind;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

/// An ICMP error about a TCP segment: what went wrong and which segment it quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpErrorRepr {
    /// What went wrong.
    pub kind: IcmpKind,
    /// The quoted segment's source address (ours).
    pub src: IpAddr,
    /// The quoted segment's destination address.
    pub dst: IpAddr,
    /// The quoted segment's source port.
    pub src_port: u16,
    /// The quoted segment's destination port.
    pub dst_port: u16,
    /// The quoted segment's sequence number.
    pub seq: SeqNumber,
}

impl IcmpErrorRepr {
    /// Parses an ICMPv4 message (without its IP header). `Unsupported` for anything but an
    /// unreachable or time-exceeded error quoting a TCP segment.
    pub fn parse_v4(icmp: &[u8]) -> Result<IcmpErrorRepr, WireError> {
        if icmp.len() < 8 {
            return Err(WireError::Truncated);
        }
        let kind = IcmpKind::from_v4(icmp[0], icmp[1]).ok_or(WireError::Unsupported)?;
        // The quoted datagram: its header and at least 8 bytes of payload (RFC 792); its total
        // length may exceed what is quoted.
        let quoted = &icmp[8..];
        if quoted.len() < ipv4::field::HEADER {
            return Err(WireError::Truncated);
        }
        let ihl = usize::from(quoted[0] & 0x0f) * 4;
        if quoted[0] >> 4 != 4 || ihl < ipv4::field::HEADER {
            return Err(WireError::Malformed);
        }
        if quoted[ipv4::field::PROTOCOL] != PROTO_TCP {
            return Err(WireError::Unsupported);
        }
        let tcp = quoted.get(ihl..ihl + 8).ok_or(WireError::Truncated)?;
        Ok(IcmpErrorRepr {
            kind,
            src: IpAddr::V4(Ipv4Addr::new(quoted[12], quoted[13], quoted[14], quoted[15])),
            dst: IpAddr::V4(Ipv4Addr::new(quoted[16], quoted[17], quoted[18], quoted[19])),
            src_port: be16(tcp, 0),
            dst_port: be16(tcp, 2),
            seq: SeqNumber(be32(tcp, 4)),
        })
    }

    /// Parses an ICMPv6 message. `Unsupported` for anything but an unreachable or time-exceeded
    /// error quoting a TCP segment right after the IPv6 header.
    pub(crate) fn parse_v6(icmp: &[u8]) -> Result<IcmpErrorRepr, WireError> {
        if icmp.len() < 8 {
            return Err(WireError::Truncated);
        }
        let kind = IcmpKind::from_v6(icmp[0], icmp[1]).ok_or(WireError::Unsupported)?;
        let quoted = Ipv6Packet::new_checked(&icmp[8..])?;
        if quoted.next_header() != PROTO_TCP {
            return Err(WireError::Unsupported);
        }
        let tcp = quoted.payload().get(..8).ok_or(WireError::Truncated)?;
        Ok(IcmpErrorRepr {
            kind,
            src: IpAddr::V6(quoted.src_addr()),
            dst: IpAddr::V6(quoted.dst_addr()),
            src_port: be16(tcp, 0),
            dst_port: be16(tcp, 2),
            seq: SeqNumber(be32(tcp, 4)),
        })
    }
}

impl fmt::Display for IcmpErrorRepr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ICMP {} for TCP {}:{}->{}:{} seq={}",
            self.kind, self.src, self.src_port, self.dst, self.dst_port, self.seq
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::raw::wire::captured::*;
    use crate::engine::raw::wire::{Ipv4Packet, PROTO_ICMP};
    use std::net::Ipv6Addr;

    fn loopback() -> IpAddr {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    }

    #[test]
    fn parses_captured_icmp_errors() {
        let bytes = unhex(ICMP_V4);
        let ip = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(ip.protocol(), PROTO_ICMP);
        let e = IcmpErrorRepr::parse_v4(ip.payload()).unwrap();
        assert_eq!(e.kind, IcmpKind::PortUnreachable);
        assert_eq!((e.src, e.dst, e.src_port, e.dst_port), (loopback(), loopback(), 41504, 9));
        assert_eq!(e.seq, SeqNumber(0x6832b49a));
        assert_eq!(
            e.to_string(),
            "ICMP port unreachable for TCP 127.0.0.1:41504->127.0.0.1:9 seq=1748153498"
        );

        let e = IcmpErrorRepr::parse_v6(&unhex(ICMP_V6)).unwrap();
        assert_eq!(e.kind, IcmpKind::AdminProhibited);
        assert_eq!(e.kind.to_string(), "administratively prohibited");
        assert_eq!((e.src, e.dst_port), (IpAddr::V6(Ipv6Addr::LOCALHOST), 9));
        // Echo requests and the like are not errors about our segments.
        assert_eq!(IcmpErrorRepr::parse_v4(&[8, 0, 0, 0, 0, 0, 0, 0]), Err(WireError::Unsupported));
        assert_eq!(IcmpErrorRepr::parse_v6(&[128, 0, 0, 0, 0, 0, 0, 0]), Err(WireError::Unsupported));
    }

    #[test]
    fn a_short_or_foreign_quote_is_refused() {
        let icmp = unhex(ICMP_V4)[20..].to_vec();
        // The quoted IPv4 header, cut short; then without the TCP ports and sequence number.
        assert_eq!(IcmpErrorRepr::parse_v4(&icmp[..20]), Err(WireError::Truncated));
        assert_eq!(IcmpErrorRepr::parse_v4(&icmp[..8 + 20 + 4]), Err(WireError::Truncated));
        assert!(IcmpErrorRepr::parse_v4(&icmp[..8 + 20 + 8]).is_ok(), "RFC 792's 8 bytes suffice");
        // A quoted UDP datagram is not about our segments.
        let mut udp = icmp.clone();
        udp[8 + 9] = 17;
        assert_eq!(IcmpErrorRepr::parse_v4(&udp), Err(WireError::Unsupported));
        let mut bad_version = icmp;
        bad_version[8] = 0x65;
        assert_eq!(IcmpErrorRepr::parse_v4(&bad_version), Err(WireError::Malformed));
        let v6 = unhex(ICMP_V6);
        assert_eq!(IcmpErrorRepr::parse_v6(&v6[..8 + 40 + 4]), Err(WireError::Truncated));
    }
}
