//! IPv4 headers (RFC 791): read on every packet the IPv4 sockets deliver, written on every segment
//! we send (the socket has `IP_HDRINCL`).

use super::{be16, checksum, WireError};
use std::fmt;
use std::net::Ipv4Addr;

pub(super) mod field {
    pub(crate) const VER_IHL: usize = 0;
    pub(crate) const LENGTH: usize = 2;
    pub(crate) const IDENT: usize = 4;
    pub(crate) const FLG_OFF: usize = 6;
    pub const TTL: usize = 8;
    pub(crate) const PROTOCOL: usize = 9;
    pub(crate) const CHECKSUM: usize = 10;
    pub(crate) const SRC: usize = 12;
    pub(crate) const DST: usize = 16;
    pub(crate) const HEADER: usize = 20;
}

/// A view of an IPv4 packet.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// A view whose accessors cannot panic: version 4, a header of at least 20 bytes, and a total
    /// length between the header's and the buffer's (bytes past the total length are ignored).
    pub fn new_checked(buffer: T) -> Result<Ipv4Packet<T>, WireError> {
        let b = buffer.as_ref();
        if b.len() < field::HEADER {
            return Err(WireError::Truncated);
        }
        let p = Ipv4Packet { buffer };
        if p.version() != 4 || p.header_len() < field::HEADER {
            return Err(WireError::Malformed);
        }
        let total = usize::from(p.total_len());
        if total < p.header_len() {
            return Err(WireError::Malformed);
        }
        if total > p.buffer.as_ref().len() {
            return Err(WireError::Truncated);
        }
        Ok(p)
    }

    /// IP version (4).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// Total length field.
    pub fn total_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Identification field.
    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::IDENT)
    }

    /// Whether this is a fragment (more fragments follow, or an offset other than zero).
    pub fn is_fragment(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLG_OFF) & 0x3fff != 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// The payload's protocol number.
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        let b = self.buffer.as_ref();
        Ipv4Addr::new(b[12], b[13], b[14], b[15])
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = self.buffer.as_ref();
        Ipv4Addr::new(b[16], b[17], b[18], b[19])
    }

    /// The payload: from the header's end to the total length.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]>> fmt::Display for Ipv4Packet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IPv4 {}->{} proto={} ttl={} len={}",
            self.src_addr(),
            self.dst_addr(),
            self.protocol(),
            self.ttl(),
            self.total_len()
        )
    }
}

/// An IPv4 header to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Payload protocol.
    pub protocol: u8,
    /// Payload length.
    pub payload_len: usize,
    /// Time to live.
    pub ttl: u8,
}

impl Ipv4Repr {
    /// The header's length: no options.
    pub const HEADER_LEN: usize = field::HEADER;

    /// What a checked header says (its options, identification and type of service are not kept).
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv4Packet<T>) -> Ipv4Repr {
        Ipv4Repr {
            src: packet.src_addr(),
            dst: packet.dst_addr(),
            protocol: packet.protocol(),
            payload_len: packet.payload().len(),
            ttl: packet.ttl(),
        }
    }

    /// The length [`emit`](Self::emit) writes: the header alone.
    pub fn buffer_len(&self) -> usize {
        Self::HEADER_LEN
    }

    /// Writes the header (Don't Fragment set, identification zero for the kernel to fill, checksum
    /// computed) into the first 20 bytes of `buf`.
    pub fn emit(&self, buf: &mut [u8]) {
        let h = &mut buf[..field::HEADER];
        h.fill(0);
        h[field::VER_IHL] = 0x45;
        let total = (field::HEADER + self.payload_len) as u16;
        h[field::LENGTH..][..2].copy_from_slice(&total.to_be_bytes());
        h[field::FLG_OFF] = 0x40;
        h[field::TTL] = self.ttl;
        h[field::PROTOCOL] = self.protocol;
        h[field::SRC..][..4].copy_from_slice(&self.src.octets());
        h[field::DST..][..4].copy_from_slice(&self.dst.octets());
        let sum = checksum(h);
        h[field::CHECKSUM..][..2].copy_from_slice(&sum.to_be_bytes());
    }
}

impl fmt::Display for Ipv4Repr {
    /// As the packet view prints the header it emits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IPv4 {}->{} proto={} ttl={} len={}",
            self.src,
            self.dst,
            self.protocol,
            self.ttl,
            Self::HEADER_LEN + self.payload_len
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::raw::wire::captured::*;
    use crate::engine::raw::wire::PROTO_TCP;

    #[test]
    fn parses_a_captured_header() {
        let bytes = unhex(SYN_V4);
        let ip = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!((ip.protocol(), ip.ttl(), ip.src_addr()), (PROTO_TCP, 64, Ipv4Addr::LOCALHOST));
        assert!(!ip.is_fragment());
        assert_eq!((ip.header_len(), ip.payload().len()), (20, 40));
        assert_eq!(checksum(&bytes[..20]), 0, "the kernel's header checksum is complete");
        assert_eq!(ip.to_string(), "IPv4 127.0.0.1->127.0.0.1 proto=6 ttl=64 len=60");
    }

    #[test]
    fn rejects_what_would_make_accessors_panic() {
        let mut ip = unhex(SYN_V4);
        assert_eq!(Ipv4Packet::new_checked(&ip[..19]).err(), Some(WireError::Truncated));
        ip[3] = 200; // total length past the buffer
        assert_eq!(Ipv4Packet::new_checked(&ip[..]).err(), Some(WireError::Truncated));
        ip[3] = 10; // total length inside the header
        assert_eq!(Ipv4Packet::new_checked(&ip[..]).err(), Some(WireError::Malformed));
        ip[3] = 60;
        ip[0] = 0x44; // a header of 16 bytes
        assert_eq!(Ipv4Packet::new_checked(&ip[..]).err(), Some(WireError::Malformed));
        ip[0] = 0x65; // version 6
        assert_eq!(Ipv4Packet::new_checked(&ip[..]).err(), Some(WireError::Malformed));
    }

    #[test]
    fn fragments_are_recognised() {
        let mut ip = unhex(SYN_V4);
        ip[6] = 0x20; // more fragments
        assert!(Ipv4Packet::new_checked(&ip[..]).unwrap().is_fragment());
        ip[6] = 0x00;
        ip[7] = 0x08; // an offset
        assert!(Ipv4Packet::new_checked(&ip[..]).unwrap().is_fragment());
    }

    #[test]
    fn header_round_trips() {
        let repr = Ipv4Repr {
            src: Ipv4Addr::LOCALHOST,
            dst: Ipv4Addr::new(198, 18, 0, 2),
            protocol: PROTO_TCP,
            payload_len: 40,
            ttl: 64,
        };
        let mut buf = [0u8; 60];
        repr.emit(&mut buf);
        let ip = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!((ip.src_addr(), ip.dst_addr(), ip.ttl(), ip.total_len()), (repr.src, repr.dst, 64, 60));
        assert_eq!(Ipv4Repr::parse(&ip), repr);
        assert_eq!(checksum(&buf[..20]), 0);
        assert_eq!(ip.to_string(), "IPv4 127.0.0.1->198.18.0.2 proto=6 ttl=64 len=60");
        assert_eq!(repr.to_string(), ip.to_string());
        // pnet, an independent implementation, reads the same header and checksum.
        let p = pnet::packet::ipv4::Ipv4Packet::new(&buf).unwrap();
        assert_eq!(p.get_checksum(), pnet::packet::ipv4::checksum(&p));
        assert_eq!((p.get_total_length(), p.get_flags(), p.get_ttl()), (60, 2, 64));
    }

    #[test]
    fn a_captured_header_re_emits_as_the_kernel_sent_it_but_for_the_id() {
        let bytes = unhex(SYNACK_V4); // identification 0, as the kernel sends with DF
        let ip = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        let repr = Ipv4Repr::parse(&ip);
        assert_eq!(repr.buffer_len(), 20);
        let mut out = [0u8; 20];
        repr.emit(&mut out);
        assert_eq!(hex::encode(out), hex::encode(&bytes[..20]));
    }
}
