//! TCP segments (RFC 9293): the header view, the options, and what a segment says.

use super::{be16, be32, transport_checksum, SeqNumber, WireError, PROTO_TCP};
pub use crate::packet::{TcpFlags, TcpOption};
use std::fmt;
use std::net::IpAddr;

mod field {
    use std::ops::Range;
    pub(crate) const SRC_PORT: usize = 0;
    pub(crate) const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    pub(crate) const OFFSET: usize = 12;
    pub(crate) const FLAGS: usize = 13;
    pub(crate) const WINDOW: usize = 14;
    pub(crate) const CHECKSUM: Range<usize> = 16..18;
    pub(crate) const URGENT: usize = 18;
    pub(crate) const HEADER: usize = 20;
}

/// A read (or, over `&mut [u8]`, write) view of a TCP segment: header, options, payload.
#[derive(Debug, Clone, Copy)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// A view that trusts the buffer; accessors may panic if it is malformed.
    pub fn new_unchecked(buffer: T) -> TcpPacket<T> {
        TcpPacket { buffer }
    }

    /// A view whose accessors cannot panic: the fixed header is present and the data offset lies
    /// between it and the end of the buffer.
    pub fn new_checked(buffer: T) -> Result<TcpPacket<T>, WireError> {
        let p = TcpPacket { buffer };
        let len = p.buffer.as_ref().len();
        if len < field::HEADER {
            return Err(WireError::Truncated);
        }
        let header = p.header_len();
        if header < field::HEADER {
            return Err(WireError::Malformed);
        }
        if header > len {
            return Err(WireError::Truncated);
        }
        Ok(p)
    }

    /// The underlying bytes.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// Sequence number.
    pub fn seq_number(&self) -> SeqNumber {
        SeqNumber(be32(self.buffer.as_ref(), field::SEQ))
    }

    /// Acknowledgement number (meaningful with ACK set).
    pub fn ack_number(&self) -> SeqNumber {
        SeqNumber(be32(self.buffer.as_ref(), field::ACK))
    }

    /// Header length in bytes, options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::OFFSET] >> 4) * 4
    }

    /// Control bits.
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(self.buffer.as_ref()[field::FLAGS])
    }

    /// Advertised window (unscaled).
    pub fn window_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::WINDOW)
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// The option bytes.
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::HEADER..self.header_len()]
    }

    /// The payload.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// Whether the checksum is right for these pseudo-header addresses. (Loopback segments carry
    /// only a partial checksum, offloaded to hardware that is not there: do not insist on it.)
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> bool {
        transport_checksum(src, dst, PROTO_TCP, self.buffer.as_ref()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    fn bytes_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    /// Sets the source port.
    pub fn set_src_port(&mut self, port: u16) {
        self.bytes_mut()[field::SRC_PORT..][..2].copy_from_slice(&port.to_be_bytes());
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, port: u16) {
        self.bytes_mut()[field::DST_PORT..][..2].copy_from_slice(&port.to_be_bytes());
    }

    /// Sets the sequence number.
    pub fn set_seq_number(&mut self, seq: SeqNumber) {
        self.bytes_mut()[field::SEQ..][..4].copy_from_slice(&seq.0.to_be_bytes());
    }

    /// Sets the acknowledgement number.
    pub fn set_ack_number(&mut self, ack: SeqNumber) {
        self.bytes_mut()[field::ACK..][..4].copy_from_slice(&ack.0.to_be_bytes());
    }

    /// Sets the header length (a multiple of 4, at most 60) and clears the reserved bits.
    pub fn set_header_len(&mut self, len: usize) {
        self.bytes_mut()[field::OFFSET] = ((len / 4) as u8) << 4;
    }

    /// Sets the control bits.
    pub(crate) fn set_flags(&mut self, flags: TcpFlags) {
        self.bytes_mut()[field::FLAGS] = flags.0;
    }

    /// Sets the window.
    pub fn set_window_len(&mut self, window: u16) {
        self.bytes_mut()[field::WINDOW..][..2].copy_from_slice(&window.to_be_bytes());
    }

    /// Sets the urgent pointer.
    pub(crate) fn set_urgent(&mut self, urgent: u16) {
        self.bytes_mut()[field::URGENT..][..2].copy_from_slice(&urgent.to_be_bytes());
    }

    /// Computes and writes the checksum for these pseudo-header addresses.
    pub fn fill_checksum(&mut self, src: IpAddr, dst: IpAddr) {
        self.bytes_mut()[field::CHECKSUM].fill(0);
        let sum = transport_checksum(src, dst, PROTO_TCP, self.buffer.as_ref());
        self.bytes_mut()[field::CHECKSUM].copy_from_slice(&sum.to_be_bytes());
    }
}

impl<T: AsRef<[u8]>> fmt::Display for TcpPacket<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TCP {}->{} [{}] seq={} ack={} win={} len={}",
            self.src_port(),
            self.dst_port(),
            self.flags(),
            self.seq_number(),
            self.ack_number(),
            self.window_len(),
            self.payload().len()
        )?;
        for opt in TcpOptions::new(self.options()) {
            match opt {
                Ok(o) if o.is_padding() => {}
                Ok(o) => write!(f, " {o}")?,
                Err(_) => f.write_str(" <bad options>")?,
            }
        }
        Ok(())
    }
}

/// Writes `option` into `buf`; returns the bytes used. Only the kinds the engine sends.
fn emit_option(option: &TcpOption, buf: &mut [u8]) -> usize {
    match *option {
        TcpOption::EndOfList => {
            buf[0] = 0;
            1
        }
        TcpOption::NoOperation => {
            buf[0] = 1;
            1
        }
        TcpOption::MaxSegmentSize(mss) => {
            buf[..2].copy_from_slice(&[2, 4]);
            buf[2..4].copy_from_slice(&mss.to_be_bytes());
            4
        }
        TcpOption::WindowScale(shift) => {
            buf[..3].copy_from_slice(&[3, 3, shift]);
            3
        }
        TcpOption::SackPermitted => {
            buf[..2].copy_from_slice(&[4, 2]);
            2
        }
        TcpOption::Timestamps { value, echo } => {
            buf[..2].copy_from_slice(&[8, 10]);
            buf[2..6].copy_from_slice(&value.to_be_bytes());
            buf[6..10].copy_from_slice(&echo.to_be_bytes());
            10
        }
        // Not sent by the engine: written as padding so the layout stays right.
        TcpOption::Sack(_) | TcpOption::Unknown { .. } => {
            buf[0] = 1;
            1
        }
    }
}

/// The bytes [`emit_option`] writes for `option`.
fn emitted_len(option: &TcpOption) -> usize {
    match option {
        TcpOption::EndOfList | TcpOption::NoOperation => 1,
        TcpOption::MaxSegmentSize(_) => 4,
        TcpOption::WindowScale(_) => 3,
        TcpOption::SackPermitted => 2,
        TcpOption::Timestamps { .. } => 10,
        TcpOption::Sack(_) | TcpOption::Unknown { .. } => 1,
    }
}

/// Iterates over the options of a TCP header; stops after the end-of-list option or after the first
/// malformed one (which it yields as an error).
#[derive(Debug, Clone)]
pub struct TcpOptions<'a> {
    rest: &'a [u8],
}

impl<'a> TcpOptions<'a> {
    /// The options in `bytes` (a header's option area).
    pub fn new(bytes: &'a [u8]) -> TcpOptions<'a> {
        TcpOptions { rest: bytes }
    }
}

impl Iterator for TcpOptions<'_> {
    type Item = Result<TcpOption, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (&kind, after) = self.rest.split_first()?;
        match kind {
            0 => {
                self.rest = &[];
                return Some(Ok(TcpOption::EndOfList));
            }
            1 => {
                self.rest = after;
                return Some(Ok(TcpOption::NoOperation));
            }
            _ => {}
        }
        let Some(&len) = after.first() else {
            self.rest = &[];
            return Some(Err(WireError::Truncated));
        };
        let len = usize::from(len);
        if len < 2 || len > self.rest.len() {
            self.rest = &[];
            return Some(Err(if len < 2 { WireError::Malformed } else { WireError::Truncated }));
        }
        let data = &self.rest[2..len];
        self.rest = &self.rest[len..];
        let option = match (kind, data.len()) {
            (2, 2) => TcpOption::MaxSegmentSize(be16(data, 0)),
            (3, 1) => TcpOption::WindowScale(data[0]),
            (4, 0) => TcpOption::SackPermitted,
            (5, n) if n % 8 == 0 => {
                TcpOption::Sack(data.chunks_exact(8).map(|c| (be32(c, 0), be32(c, 4))).collect())
            }
            (8, 8) => TcpOption::Timestamps { value: be32(data, 0), echo: be32(data, 4) },
            (2..=5 | 8, _) => {
                self.rest = &[];
                return Some(Err(WireError::Malformed));
            }
            (kind, len) => TcpOption::Unknown { kind, len },
        };
        Some(Ok(option))
    }
}

/// What a TCP segment says, apart from its ports' place in a flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpRepr<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Control bits (ACK among them).
    pub flags: TcpFlags,
    /// Sequence number.
    pub seq: SeqNumber,
    /// Acknowledgement number (sent as zero without ACK).
    pub ack: SeqNumber,
    /// Window.
    pub window: u16,
    /// Options, in order.
    pub options: Vec<TcpOption>,
    /// Payload.
    pub payload: &'a [u8],
}

impl<'a> TcpRepr<'a> {
    /// Reads a checked segment. Options that do not parse end the option list silently: a probe
    /// reports what it can.
    pub fn parse(packet: &TcpPacket<&'a [u8]>) -> TcpRepr<'a> {
        let bytes: &'a [u8] = packet.buffer;
        TcpRepr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            flags: packet.flags(),
            seq: packet.seq_number(),
            ack: packet.ack_number(),
            window: packet.window_len(),
            options: TcpOptions::new(packet.options()).filter_map(Result::ok).collect(),
            payload: &bytes[packet.header_len()..],
        }
    }

    /// The header length with options, padded to a multiple of four.
    pub fn header_len(&self) -> usize {
        let options: usize = self.options.iter().map(emitted_len).sum();
        (field::HEADER + options).div_ceil(4) * 4
    }

    /// The whole segment's length.
    pub fn buffer_len(&self) -> usize {
        self.header_len() + self.payload.len()
    }

    /// Writes the segment into `buf` (exactly [`buffer_len`](Self::buffer_len) bytes long) with the
    /// checksum for `src` → `dst`.
    pub fn emit(&self, buf: &mut [u8], src: IpAddr, dst: IpAddr) {
        let header_len = self.header_len();
        buf[..header_len].fill(0);
        let mut at = field::HEADER;
        for option in &self.options {
            at += emit_option(option, &mut buf[at..header_len]);
        }
        // Pad with end-of-list (zeros, already there).
        buf[header_len..][..self.payload.len()].copy_from_slice(self.payload);
        let mut p = TcpPacket::new_unchecked(&mut buf[..header_len + self.payload.len()]);
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_seq_number(self.seq);
        p.set_ack_number(self.ack);
        p.set_header_len(header_len);
        p.set_flags(self.flags);
        p.set_window_len(self.window);
        p.set_urgent(0);
        p.fill_checksum(src, dst);
    }
}

impl fmt::Display for TcpRepr<'_> {
    /// As the packet view prints the segment it emits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TCP {}->{} [{}] seq={} ack={} win={} len={}",
            self.src_port,
            self.dst_port,
            self.flags,
            self.seq,
            self.ack,
            self.window,
            self.payload.len()
        )?;
        for option in self.options.iter().filter(|o| !o.is_padding()) {
            write!(f, " {option}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::raw::wire::captured::*;
    use crate::engine::raw::wire::Ipv4Packet;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn parses_a_captured_syn() {
        let bytes = unhex(SYN_V4);
        let ip = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!((tcp.src_port(), tcp.dst_port()), (58360, 53553));
        assert_eq!(tcp.flags().to_string(), "S");
        assert_eq!(tcp.window_len(), 65495);
        let repr = TcpRepr::parse(&tcp);
        let opts: Vec<String> =
            repr.options.iter().filter(|o| **o != TcpOption::NoOperation).map(ToString::to_string).collect();
        assert_eq!(opts, ["mss=65495", "sack_perm", "ts=2158958332/0", "ws=10"]);
        assert_eq!(tcp.to_string(), "TCP 58360->53553 [S] seq=741174318 ack=0 win=65495 len=0 mss=65495 sack_perm ts=2158958332/0 ws=10");
    }

    #[test]
    fn parses_a_captured_synack_and_banner() {
        let (synack, ..) = segment_v4(SYNACK_V4);
        let synack = TcpPacket::new_checked(&synack[..]).unwrap();
        assert_eq!(synack.flags().to_string(), "SA");
        let (syn, ..) = segment_v4(SYN_V4);
        let syn = TcpPacket::new_checked(&syn[..]).unwrap();
        assert_eq!(synack.ack_number(), syn.seq_number() + 1);

        let (banner, ..) = segment_v4(BANNER_V4);
        let tcp = TcpPacket::new_checked(&banner[..]).unwrap();
        assert_eq!(tcp.flags().to_string(), "PA");
        assert_eq!(tcp.payload(), b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n");
        assert_eq!(tcp.seq_number(), synack.seq_number() + 1);
    }

    #[test]
    fn parses_a_captured_ipv6_segment() {
        let bytes = unhex(SYNACK_V6);
        let tcp = TcpPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!((tcp.src_port(), tcp.dst_port()), (34777, 56472));
        assert_eq!(tcp.flags().to_string(), "SA");
        assert_eq!(TcpOptions::new(tcp.options()).next(), Some(Ok(TcpOption::MaxSegmentSize(65476))));
    }

    #[test]
    fn rejects_what_would_make_accessors_panic() {
        assert_eq!(TcpPacket::new_checked(&[0u8; 19][..]).err(), Some(WireError::Truncated));
        let mut short_offset = [0u8; 20];
        short_offset[12] = 0x40; // data offset 16 bytes
        assert_eq!(TcpPacket::new_checked(&short_offset[..]).err(), Some(WireError::Malformed));
        let mut long_offset = [0u8; 24];
        long_offset[12] = 0xf0; // 60 bytes of header in 24
        assert_eq!(TcpPacket::new_checked(&long_offset[..]).err(), Some(WireError::Truncated));
    }

    #[test]
    fn malformed_options_end_the_list() {
        let opts: Vec<_> = TcpOptions::new(&[1, 2, 4, 5, 0xb4, 2]).collect();
        assert_eq!(
            opts,
            [Ok(TcpOption::NoOperation), Ok(TcpOption::MaxSegmentSize(1460)), Err(WireError::Truncated)]
        );
        let opts: Vec<_> = TcpOptions::new(&[30, 0, 1]).collect();
        assert_eq!(opts, [Err(WireError::Malformed)]);
        let opts: Vec<_> = TcpOptions::new(&[2, 3, 0]).collect();
        assert_eq!(opts, [Err(WireError::Malformed)]);
        let opts: Vec<_> = TcpOptions::new(&[30, 4, 1, 2, 0, 9]).collect();
        assert_eq!(opts, [Ok(TcpOption::Unknown { kind: 30, len: 2 }), Ok(TcpOption::EndOfList)]);
        let opts: Vec<_> = TcpOptions::new(&[5, 10, 0, 0, 0, 1, 0, 0, 0, 9]).collect();
        assert_eq!(opts, [Ok(TcpOption::Sack(vec![(1, 9)]))]);
    }

    #[test]
    fn emit_round_trips_captured_bytes() {
        // Re-emitting a captured segment from its meaning gives the same bytes. (Checksums on
        // loopback are partial, so compare with the checksum recomputed.)
        let lo6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let v6 = (unhex(SYNACK_V6), lo6, lo6);
        for (segment, src, dst) in [segment_v4(SYN_V4), segment_v4(SYNACK_V4), segment_v4(BANNER_V4), v6] {
            let tcp = TcpPacket::new_checked(&segment[..]).unwrap();
            let repr = TcpRepr::parse(&tcp);
            let mut out = vec![0u8; repr.buffer_len()];
            repr.emit(&mut out, src, dst);
            let mut expected = segment.clone();
            TcpPacket::new_unchecked(&mut expected[..]).fill_checksum(src, dst);
            assert_eq!(hex::encode(&out), hex::encode(&expected), "{tcp}");
            assert!(TcpPacket::new_checked(&out[..]).unwrap().verify_checksum(src, dst));
            assert_eq!(repr.to_string(), tcp.to_string(), "the repr prints as its packet");
        }
    }

    #[test]
    fn checksums_agree_with_pnet() {
        use pnet::packet::tcp::TcpPacket as PnetTcp;
        let repr = TcpRepr {
            src_port: 61000,
            dst_port: 22,
            flags: TcpFlags(TcpFlags::PSH | TcpFlags::ACK),
            seq: SeqNumber(0xfffffff0),
            ack: SeqNumber(7),
            window: 8192,
            options: vec![TcpOption::MaxSegmentSize(1460)],
            payload: b"SSH-2.0-sshprobe\r\n",
        };
        let v4 = (Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(198, 18, 0, 2));
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&mut buf, IpAddr::V4(v4.0), IpAddr::V4(v4.1));
        let p = PnetTcp::new(&buf).unwrap();
        assert_eq!(p.get_checksum(), pnet::packet::tcp::ipv4_checksum(&p, &v4.0, &v4.1));
        assert_eq!((p.get_source(), p.get_sequence(), p.get_data_offset()), (61000, 0xfffffff0, 6));
        let v6 = (Ipv6Addr::LOCALHOST, "2001:db8::2".parse::<Ipv6Addr>().unwrap());
        repr.emit(&mut buf, IpAddr::V6(v6.0), IpAddr::V6(v6.1));
        let p = PnetTcp::new(&buf).unwrap();
        assert_eq!(p.get_checksum(), pnet::packet::tcp::ipv6_checksum(&p, &v6.0, &v6.1));
    }
}
