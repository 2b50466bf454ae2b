//! IPv6 headers (RFC 8200), read only where an ICMPv6 error quotes one: raw IPv6 sockets deliver
//! and take TCP segments without their IPv6 header (the kernel writes it; the destination and hop
//! limit come as control messages).

use super::{be16, WireError};
use std::fmt;
use std::net::Ipv6Addr;

mod field {
    pub(crate) const PAYLOAD_LEN: usize = 4;
    pub(crate) const NEXT_HEADER: usize = 6;
    pub(crate) const HOP_LIMIT: usize = 7;
    pub(crate) const SRC: usize = 8;
    pub(crate) const DST: usize = 24;
    pub(crate) const HEADER: usize = 40;
}

/// A view of an IPv6 packet (seen only inside ICMPv6 errors: raw IPv6 sockets deliver payloads).
#[derive(Debug, Clone, Copy)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// A view whose accessors cannot panic: version 6 and the fixed header present. The payload is
    /// whatever follows, up to the payload length (an ICMPv6 error quotes a truncated packet).
    pub fn new_checked(buffer: T) -> Result<Ipv6Packet<T>, WireError> {
        if buffer.as_ref().len() < field::HEADER {
            return Err(WireError::Truncated);
        }
        let p = Ipv6Packet { buffer };
        if p.buffer.as_ref()[0] >> 4 != 6 {
            return Err(WireError::Malformed);
        }
        Ok(p)
    }

    /// The next header's protocol number.
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        addr6(&self.buffer.as_ref()[field::SRC..])
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        addr6(&self.buffer.as_ref()[field::DST..])
    }

    /// The payload present in the buffer (at most the payload length).
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let len = usize::from(be16(b, field::PAYLOAD_LEN));
        &b[field::HEADER..b.len().min(field::HEADER + len)]
    }
}

fn addr6(b: &[u8]) -> Ipv6Addr {
    let mut o = [0u8; 16];
    o.copy_from_slice(&b[..16]);
    Ipv6Addr::from(o)
}

impl<T: AsRef<[u8]>> fmt::Display for Ipv6Packet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IPv6 {}->{} nxt={} hlim={} len={}",
            self.src_addr(),
            self.dst_addr(),
            self.next_header(),
            self.hop_limit(),
            self.payload().len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::raw::wire::captured::*;
    use crate::engine::raw::wire::PROTO_TCP;

    #[test]
    fn reads_the_header_an_icmpv6_error_quotes() {
        let bytes = unhex(ICMP_V6);
        let ip = Ipv6Packet::new_checked(&bytes[8..]).unwrap();
        assert_eq!((ip.next_header(), ip.hop_limit()), (PROTO_TCP, 64));
        assert_eq!((ip.src_addr(), ip.dst_addr()), (Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST));
        // The payload is the quoted SYN: its destination port is 9.
        assert_eq!((ip.payload().len(), be16(ip.payload(), 2)), (40, 9));
        assert_eq!(ip.to_string(), "IPv6 ::1->::1 nxt=6 hlim=64 len=40");
    }

    #[test]
    fn rejects_what_would_make_accessors_panic() {
        let bytes = unhex(ICMP_V6);
        assert_eq!(Ipv6Packet::new_checked(&bytes[8..47]).err(), Some(WireError::Truncated));
        let mut v4 = bytes[8..].to_vec();
        v4[0] = 0x45;
        assert_eq!(Ipv6Packet::new_checked(&v4[..]).err(), Some(WireError::Malformed));
        // A payload length past the quote: the payload is what is there.
        let mut long = bytes[8..].to_vec();
        long[4..6].copy_from_slice(&1000u16.to_be_bytes());
        assert_eq!(Ipv6Packet::new_checked(&long[..]).unwrap().payload().len(), 40);
    }
}
