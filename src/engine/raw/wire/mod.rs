//! Packet formats: zero-copy views over TCP, IPv4, IPv6 and ICMP bytes, and their high-level meaning.
//!
//! Modelled on smoltcp's `wire`: a `Packet<T: AsRef<[u8]>>` view wraps a buffer and `new_checked`
//! validates the lengths once, so no accessor can panic on whatever arrived from the network; a private
//! `mod field` names each header field's bytes; a `Repr` type holds the meaning, with `parse`, `emit`
//! and `buffer_len`. Every type is `Display`, which is what makes a packet trace readable. Nothing here
//! does I/O.
//!
//! The raw engine sends IPv4 with its own header (`IP_HDRINCL`) and TCP over IPv6 without one (the
//! kernel writes IPv6 headers), and receives IPv4 with its header and IPv6 without: hence views for
//! all three, and a TCP checksum that takes the pseudo-header's addresses.
//!
//! | module | format | view | meaning |
//! |---|---|---|---|
//! | [`tcp`] | TCP segment, its options | [`TcpPacket`], [`TcpOptions`] | [`TcpRepr`] |
//! | [`ipv4`] | IPv4 header | [`Ipv4Packet`] | [`Ipv4Repr`] |
//! | [`ipv6`] | IPv6 header (only quoted in ICMPv6 errors) | [`Ipv6Packet`] | — |
//! | [`icmp`] | ICMP and ICMPv6 errors quoting a TCP segment | — | [`IcmpErrorRepr`] |
//! | here | what they share: [`SeqNumber`], the Internet checksum, [`WireError`] | | |
//!
//! The values a trace records ([`TcpFlags`], [`TcpOption`], [`IcmpKind`]) are defined in the pure
//! [`crate::packet`], which the evidence may import and this engine module re-exports.
//!
//! Why our own and not a crate's: `benches/micro.rs` (group `wire`) measures these views against
//! smoltcp's and etherparse's on the same captured packets; see `docs/performance.md`.

pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;

#[cfg(test)]
mod captured;

pub use self::icmp::{IcmpErrorRepr, IcmpKind};
pub use self::ipv4::{Ipv4Packet, Ipv4Repr};
pub use self::ipv6::Ipv6Packet;
pub use self::tcp::{TcpFlags, TcpOption, TcpOptions, TcpPacket, TcpRepr};

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

/// Why bytes are not a well-formed packet of the kind asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than its header, or than a length field says.
    #[error("truncated packet")]
    Truncated,
    /// A header field holds a value the format does not allow.
    #[error("malformed packet")]
    Malformed,
    /// Valid, but not something the engine handles (a fragment, another protocol).
    #[error("unsupported packet")]
    Unsupported,
}

/// A TCP sequence number: arithmetic and comparison wrap modulo 2³², as RFC 9293 requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SeqNumber(pub u32);

impl std::ops::Add<usize> for SeqNumber {
    type Output = SeqNumber;

    /// The number `n` bytes further on.
    fn add(self, n: usize) -> SeqNumber {
        SeqNumber(self.0.wrapping_add(n as u32))
    }
}

impl SeqNumber {
    /// How far `self` is after `earlier` (negative when before), as a wrapping difference.
    pub(crate) fn diff(self, earlier: SeqNumber) -> i32 {
        self.0.wrapping_sub(earlier.0) as i32
    }

    /// Whether `self` lies in `[start, end)`, wrapping.
    pub(crate) fn in_range(self, start: SeqNumber, end: SeqNumber) -> bool {
        self.0.wrapping_sub(start.0) < end.0.wrapping_sub(start.0)
    }
}

impl fmt::Display for SeqNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The Internet checksum's running sum (RFC 1071), folded at the end.
#[derive(Debug, Clone, Copy, Default)]
struct Checksum(u32);

impl Checksum {
    fn add(mut self, data: &[u8]) -> Checksum {
        let mut chunks = data.chunks_exact(2);
        for c in &mut chunks {
            self.0 += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            self.0 += u32::from(*last) << 8;
        }
        self.0 = (self.0 & 0xffff) + (self.0 >> 16);
        self
    }

    fn finish(self) -> u16 {
        let mut sum = self.0;
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }
}

/// The ones'-complement checksum of `data` (an IPv4 header's, for instance).
pub fn checksum(data: &[u8]) -> u16 {
    Checksum::default().add(data).finish()
}

/// The checksum of a transport segment with its IPv4 or IPv6 pseudo-header (RFC 793, RFC 8200 §8.1).
/// The segment's own checksum field must be zero, or the result is zero when it is correct.
pub(crate) fn transport_checksum(src: IpAddr, dst: IpAddr, protocol: u8, segment: &[u8]) -> u16 {
    let sum = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let len = segment.len() as u16;
            Checksum::default().add(&s.octets()).add(&d.octets()).add(&[0, protocol]).add(&len.to_be_bytes())
        }
        (s, d) => {
            let (s, d) = (v6(s), v6(d));
            let len = segment.len() as u32;
            Checksum::default()
                .add(&s.octets())
                .add(&d.octets())
                .add(&len.to_be_bytes())
                .add(&[0, 0, 0, protocol])
        }
    };
    sum.add(segment).finish()
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// IP protocol number of ICMPv6.
pub const PROTO_ICMPV6: u8 = 58;

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_wrap() {
        let a = SeqNumber(u32::MAX - 1);
        let b = a + 4;
        assert_eq!(b, SeqNumber(2));
        assert_eq!(b.diff(a), 4);
        assert_eq!(a.diff(b), -4);
        assert!(SeqNumber(0).in_range(a, b));
        assert!(!b.in_range(a, b));
    }

    #[test]
    fn checksum_is_rfc_1071s() {
        // RFC 1071 §3's example: the sum of these words is ddf2, so the checksum is its complement.
        assert_eq!(checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), !0xddf2);
        // An odd length pads with a zero byte; a buffer holding its own checksum sums to zero.
        assert_eq!(checksum(&[0xab]), !0xab00);
        let mut with_sum = vec![0x45, 0x00, 0x12, 0x34, 0, 0];
        let sum = checksum(&with_sum);
        with_sum[4..].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(checksum(&with_sum), 0);
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;
        use std::net::Ipv4Addr;

        proptest! {
            /// Whatever arrives, a view that `new_checked` accepts reads, prints and parses without
            /// panicking, and so do the ICMP parsers.
            #[test]
            fn no_bytes_make_a_view_panic(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
                if let Ok(tcp) = TcpPacket::new_checked(&bytes[..]) {
                    let _ = (tcp.to_string(), TcpRepr::parse(&tcp).buffer_len(), tcp.payload().len());
                }
                if let Ok(ip) = Ipv4Packet::new_checked(&bytes[..]) {
                    let _ = (ip.to_string(), Ipv4Repr::parse(&ip), ip.is_fragment(), ip.ident());
                    let _ = IcmpErrorRepr::parse_v4(ip.payload());
                }
                if let Ok(ip) = Ipv6Packet::new_checked(&bytes[..]) {
                    let _ = (ip.to_string(), ip.payload().len());
                }
                let _ = (IcmpErrorRepr::parse_v4(&bytes), IcmpErrorRepr::parse_v6(&bytes));
            }

            /// Any segment the engine can send parses back to itself, with a valid checksum.
            #[test]
            fn a_segment_round_trips(
                ports in any::<(u16, u16)>(),
                flags in any::<u8>(),
                numbers in any::<(u32, u32, u16)>(),
                mss in proptest::option::of(any::<u16>()),
                ws in proptest::option::of(0u8..15),
                sack_permitted in any::<bool>(),
                ts in proptest::option::of(any::<(u32, u32)>()),
                payload in proptest::collection::vec(any::<u8>(), 0..80),
            ) {
                let mut options = Vec::new();
                options.extend(mss.map(TcpOption::MaxSegmentSize));
                options.extend(ws.map(TcpOption::WindowScale));
                if sack_permitted {
                    options.push(TcpOption::SackPermitted);
                }
                options.extend(ts.map(|(value, echo)| TcpOption::Timestamps { value, echo }));
                let repr = TcpRepr {
                    src_port: ports.0,
                    dst_port: ports.1,
                    flags: TcpFlags(flags),
                    seq: SeqNumber(numbers.0),
                    ack: SeqNumber(numbers.1),
                    window: numbers.2,
                    options,
                    payload: &payload,
                };
                let (src, dst) = (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)));
                let mut buf = vec![0u8; repr.buffer_len()];
                repr.emit(&mut buf, src, dst);
                let tcp = TcpPacket::new_checked(&buf[..]).unwrap();
                prop_assert!(tcp.verify_checksum(src, dst));
                let mut parsed = TcpRepr::parse(&tcp);
                parsed.options.retain(|o| !o.is_padding());
                prop_assert_eq!(parsed, repr);
            }
        }
    }
}
