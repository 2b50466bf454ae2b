//! Packet formats: zero-copy views over TCP, IPv4, IPv6 and ICMP bytes, and their high-level meaning.
//!
//! Modelled on smoltcp's `wire`: a `Packet<T: AsRef<[u8]>>` view wraps a buffer and `new_checked`
//! validates the lengths once, so no accessor can panic on whatever arrived from the network; a `Repr`
//! type holds the meaning, with `parse` and `emit`. Every type is `Display`, which is what makes a
//! packet trace readable. Nothing here does I/O.
//!
//! The raw engine sends IPv4 with its own header (`IP_HDRINCL`) and TCP over IPv6 without one (the
//! kernel writes IPv6 headers), and receives IPv4 with its header and IPv6 without: hence views for
//! all three, and a TCP checksum that takes the pseudo-header's addresses.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
    pub fn diff(self, earlier: SeqNumber) -> i32 {
        self.0.wrapping_sub(earlier.0) as i32
    }

    /// Whether `self` lies in `[start, end)`, wrapping.
    pub fn in_range(self, start: SeqNumber, end: SeqNumber) -> bool {
        self.0.wrapping_sub(start.0) < end.0.wrapping_sub(start.0)
    }
}

impl fmt::Display for SeqNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// TCP control bits.
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
    /// Letters in the order traces use: `S`, `SA`, `A`, `PA`, `FA`, `R`, `RA`, `FPA`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const LETTERS: [(u8, char); 8] = [
            (TcpFlags::SYN, 'S'),
            (TcpFlags::FIN, 'F'),
            (TcpFlags::RST, 'R'),
            (TcpFlags::PSH, 'P'),
            (TcpFlags::ACK, 'A'),
            (TcpFlags::URG, 'U'),
            (TcpFlags::ECE, 'E'),
            (TcpFlags::CWR, 'C'),
        ];
        if self.0 == 0 {
            return f.write_str(".");
        }
        for (bit, letter) in LETTERS {
            if self.0 & bit != 0 {
                write!(f, "{letter}")?;
            }
        }
        Ok(())
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
pub fn transport_checksum(src: IpAddr, dst: IpAddr, protocol: u8, segment: &[u8]) -> u16 {
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

// ---------------------------------------------------------------------------------------------
// TCP

mod tcp_field {
    use std::ops::Range;
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    pub const OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: Range<usize> = 16..18;
    pub const URGENT: usize = 18;
    pub const HEADER: usize = 20;
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
        if len < tcp_field::HEADER {
            return Err(WireError::Truncated);
        }
        let header = p.header_len();
        if header < tcp_field::HEADER {
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
        be16(self.buffer.as_ref(), tcp_field::SRC_PORT)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), tcp_field::DST_PORT)
    }

    /// Sequence number.
    pub fn seq_number(&self) -> SeqNumber {
        SeqNumber(be32(self.buffer.as_ref(), tcp_field::SEQ))
    }

    /// Acknowledgement number (meaningful with ACK set).
    pub fn ack_number(&self) -> SeqNumber {
        SeqNumber(be32(self.buffer.as_ref(), tcp_field::ACK))
    }

    /// Header length in bytes, options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[tcp_field::OFFSET] >> 4) * 4
    }

    /// Control bits.
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(self.buffer.as_ref()[tcp_field::FLAGS])
    }

    /// Advertised window (unscaled).
    pub fn window_len(&self) -> u16 {
        be16(self.buffer.as_ref(), tcp_field::WINDOW)
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), tcp_field::CHECKSUM.start)
    }

    /// The option bytes.
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[tcp_field::HEADER..self.header_len()]
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
        self.bytes_mut()[tcp_field::SRC_PORT..][..2].copy_from_slice(&port.to_be_bytes());
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, port: u16) {
        self.bytes_mut()[tcp_field::DST_PORT..][..2].copy_from_slice(&port.to_be_bytes());
    }

    /// Sets the sequence number.
    pub fn set_seq_number(&mut self, seq: SeqNumber) {
        self.bytes_mut()[tcp_field::SEQ..][..4].copy_from_slice(&seq.0.to_be_bytes());
    }

    /// Sets the acknowledgement number.
    pub fn set_ack_number(&mut self, ack: SeqNumber) {
        self.bytes_mut()[tcp_field::ACK..][..4].copy_from_slice(&ack.0.to_be_bytes());
    }

    /// Sets the header length (a multiple of 4, at most 60) and clears the reserved bits.
    pub fn set_header_len(&mut self, len: usize) {
        self.bytes_mut()[tcp_field::OFFSET] = ((len / 4) as u8) << 4;
    }

    /// Sets the control bits.
    pub fn set_flags(&mut self, flags: TcpFlags) {
        self.bytes_mut()[tcp_field::FLAGS] = flags.0;
    }

    /// Sets the window.
    pub fn set_window_len(&mut self, window: u16) {
        self.bytes_mut()[tcp_field::WINDOW..][..2].copy_from_slice(&window.to_be_bytes());
    }

    /// Sets the urgent pointer.
    pub fn set_urgent(&mut self, urgent: u16) {
        self.bytes_mut()[tcp_field::URGENT..][..2].copy_from_slice(&urgent.to_be_bytes());
    }

    /// Computes and writes the checksum for these pseudo-header addresses.
    pub fn fill_checksum(&mut self, src: IpAddr, dst: IpAddr) {
        self.bytes_mut()[tcp_field::CHECKSUM].fill(0);
        let sum = transport_checksum(src, dst, PROTO_TCP, self.buffer.as_ref());
        self.bytes_mut()[tcp_field::CHECKSUM].copy_from_slice(&sum.to_be_bytes());
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
                Ok(TcpOption::NoOperation | TcpOption::EndOfList) => {}
                Ok(o) => write!(f, " {o}")?,
                Err(_) => f.write_str(" <bad options>")?,
            }
        }
        Ok(())
    }
}

/// One TCP option.
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
    /// Writes the option into `buf`; returns the bytes used. Only the kinds the engine sends.
    fn emit(&self, buf: &mut [u8]) -> usize {
        match *self {
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

    fn emitted_len(&self) -> usize {
        match self {
            TcpOption::EndOfList | TcpOption::NoOperation => 1,
            TcpOption::MaxSegmentSize(_) => 4,
            TcpOption::WindowScale(_) => 3,
            TcpOption::SackPermitted => 2,
            TcpOption::Timestamps { .. } => 10,
            TcpOption::Sack(_) | TcpOption::Unknown { .. } => 1,
        }
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
        let options: usize = self.options.iter().map(TcpOption::emitted_len).sum();
        (tcp_field::HEADER + options).div_ceil(4) * 4
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
        let mut at = tcp_field::HEADER;
        for option in &self.options {
            at += option.emit(&mut buf[at..header_len]);
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

// ---------------------------------------------------------------------------------------------
// IPv4

mod ipv4_field {
    pub const VER_IHL: usize = 0;
    pub const LENGTH: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLG_OFF: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
    pub const HEADER: usize = 20;
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
        if b.len() < ipv4_field::HEADER {
            return Err(WireError::Truncated);
        }
        let p = Ipv4Packet { buffer };
        if p.version() != 4 || p.header_len() < ipv4_field::HEADER {
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
        self.buffer.as_ref()[ipv4_field::VER_IHL] >> 4
    }

    /// Header length in bytes.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[ipv4_field::VER_IHL] & 0x0f) * 4
    }

    /// Total length field.
    pub fn total_len(&self) -> u16 {
        be16(self.buffer.as_ref(), ipv4_field::LENGTH)
    }

    /// Identification field.
    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), ipv4_field::IDENT)
    }

    /// Whether this is a fragment (more fragments follow, or an offset other than zero).
    pub fn is_fragment(&self) -> bool {
        be16(self.buffer.as_ref(), ipv4_field::FLG_OFF) & 0x3fff != 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[ipv4_field::TTL]
    }

    /// The payload's protocol number.
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[ipv4_field::PROTOCOL]
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
    pub const HEADER_LEN: usize = ipv4_field::HEADER;

    /// Writes the header (Don't Fragment set, identification zero for the kernel to fill, checksum
    /// computed) into the first 20 bytes of `buf`.
    pub fn emit(&self, buf: &mut [u8]) {
        let h = &mut buf[..ipv4_field::HEADER];
        h.fill(0);
        h[ipv4_field::VER_IHL] = 0x45;
        let total = (ipv4_field::HEADER + self.payload_len) as u16;
        h[ipv4_field::LENGTH..][..2].copy_from_slice(&total.to_be_bytes());
        h[ipv4_field::FLG_OFF] = 0x40;
        h[ipv4_field::TTL] = self.ttl;
        h[ipv4_field::PROTOCOL] = self.protocol;
        h[ipv4_field::SRC..][..4].copy_from_slice(&self.src.octets());
        h[ipv4_field::DST..][..4].copy_from_slice(&self.dst.octets());
        let sum = checksum(h);
        h[ipv4_field::CHECKSUM..][..2].copy_from_slice(&sum.to_be_bytes());
    }
}

// ---------------------------------------------------------------------------------------------
// IPv6

mod ipv6_field {
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: usize = 8;
    pub const DST: usize = 24;
    pub const HEADER: usize = 40;
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
        if buffer.as_ref().len() < ipv6_field::HEADER {
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
        self.buffer.as_ref()[ipv6_field::NEXT_HEADER]
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[ipv6_field::HOP_LIMIT]
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        addr6(&self.buffer.as_ref()[ipv6_field::SRC..])
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        addr6(&self.buffer.as_ref()[ipv6_field::DST..])
    }

    /// The payload present in the buffer (at most the payload length).
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let len = usize::from(be16(b, ipv6_field::PAYLOAD_LEN));
        &b[ipv6_field::HEADER..b.len().min(ipv6_field::HEADER + len)]
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

// ---------------------------------------------------------------------------------------------
// ICMP errors

/// The kind of an ICMP or ICMPv6 error that can answer a SYN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpErrorKind {
    /// ICMPv4 destination unreachable, with its code.
    Unreachable4(u8),
    /// ICMPv6 destination unreachable, with its code.
    Unreachable6(u8),
    /// Time exceeded in transit (a routing loop, or a TTL too small).
    TimeExceeded,
}

impl fmt::Display for IcmpErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match *self {
            IcmpErrorKind::Unreachable4(code) => match code {
                0 => "network unreachable",
                1 => "host unreachable",
                2 => "protocol unreachable",
                3 => "port unreachable",
                4 => "fragmentation needed",
                5 => "source route failed",
                6 | 7 => "destination unknown",
                9 | 10 | 13 => "administratively prohibited",
                11 | 12 => "unreachable for type of service",
                _ => return write!(f, "ICMP unreachable (code {code})"),
            },
            IcmpErrorKind::Unreachable6(code) => match code {
                0 => "no route to destination",
                1 => "administratively prohibited",
                2 => "beyond scope of source address",
                3 => "address unreachable",
                4 => "port unreachable",
                5 => "source address failed policy",
                6 => "reject route to destination",
                _ => return write!(f, "ICMPv6 unreachable (code {code})"),
            },
            IcmpErrorKind::TimeExceeded => "time exceeded",
        };
        f.write_str(name)
    }
}

/// An ICMP error about a TCP segment: what went wrong and which segment it quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpErrorRepr {
    /// What went wrong.
    pub kind: IcmpErrorKind,
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
        let kind = match icmp[0] {
            3 => IcmpErrorKind::Unreachable4(icmp[1]),
            11 => IcmpErrorKind::TimeExceeded,
            _ => return Err(WireError::Unsupported),
        };
        // The quoted datagram: its header and at least 8 bytes of payload (RFC 792); its total
        // length may exceed what is quoted.
        let quoted = &icmp[8..];
        if quoted.len() < ipv4_field::HEADER {
            return Err(WireError::Truncated);
        }
        let ihl = usize::from(quoted[0] & 0x0f) * 4;
        if quoted[0] >> 4 != 4 || ihl < ipv4_field::HEADER {
            return Err(WireError::Malformed);
        }
        if quoted[ipv4_field::PROTOCOL] != PROTO_TCP {
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
    pub fn parse_v6(icmp: &[u8]) -> Result<IcmpErrorRepr, WireError> {
        if icmp.len() < 8 {
            return Err(WireError::Truncated);
        }
        let kind = match icmp[0] {
            1 => IcmpErrorKind::Unreachable6(icmp[1]),
            3 => IcmpErrorKind::TimeExceeded,
            _ => return Err(WireError::Unsupported),
        };
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

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    /// A SYN captured on loopback (Linux 6.x client, IPv4 header included): port 58360 → 53553.
    const SYN_V4: &str = "4500003c8a4440004006b2757f0000017f000001e3f8d1312c2d6c2e00000000a002ffd7fe300000\
                          0204ffd70402080a80af16fc000000000103030a";
    /// The SYN-ACK answering it.
    const SYNACK_V4: &str =
        "4500003c0000400040063cba7f0000017f000001d131e3f812d6b9182c2d6c2fa012ffcbfe300000\
                             0204ffd70402080a5b6604da80af16fc0103030a";
    /// The server's ident line, PSH|ACK with timestamps.
    const BANNER_V4: &str =
        "4500005c0a054000400632957f0000017f000001d131e3f812d6b9192c2d6c2f80180040fe500000\
                             0101080a5b6604da80af16fc5353482d322e302d4f70656e5353485f392e3270312044656269616e\
                             2d322b646562313275330d0a";
    /// An IPv6 SYN-ACK as a raw IPv6 socket delivers it (no IPv6 header), ::1 port 34777 → 56472.
    const SYNACK_V6: &str =
        "87d9dc982bee224e52b88319a012ffb8003000000204ffc40402080a74d09061ecf000580103030a";
    /// An ICMP port unreachable (nftables `reject`) quoting a SYN to 127.0.0.1:9, IPv4 header first.
    const ICMP_V4: &str = "45c00058ac8f00004001cf537f0000017f0000010303b814000000004500003ce73f40004006557a\
                           7f0000017f000001a22000096832b49a00000000a002ffd7fe3000000204ffd70402080a79085ce8\
                           000000000103030a";
    /// An ICMPv6 administratively prohibited quoting a SYN to [::1]:9.
    const ICMP_V6: &str =
        "01019c3d00000000600a1761002806400000000000000000000000000000000100000000000000000000\
                           000000000001a99000094a265dd100000000a002ffc4003000000204ffc40402080add5303990000\
                           00000103030a";

    fn loopback() -> IpAddr {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    }

    #[test]
    fn parses_a_captured_syn() {
        let bytes = unhex(SYN_V4);
        let ip = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!((ip.protocol(), ip.ttl(), ip.src_addr()), (PROTO_TCP, 64, Ipv4Addr::LOCALHOST));
        assert!(!ip.is_fragment());
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
        let bytes = unhex(SYNACK_V4);
        let ip = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        let synack = TcpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!(synack.flags().to_string(), "SA");
        let syn_bytes = unhex(SYN_V4);
        let syn_ip = Ipv4Packet::new_checked(&syn_bytes[..]).unwrap();
        let syn = TcpPacket::new_checked(syn_ip.payload()).unwrap();
        assert_eq!(synack.ack_number(), syn.seq_number() + 1);

        let bytes = unhex(BANNER_V4);
        let ip = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
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
    fn parses_captured_icmp_errors() {
        let bytes = unhex(ICMP_V4);
        let ip = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(ip.protocol(), PROTO_ICMP);
        let e = IcmpErrorRepr::parse_v4(ip.payload()).unwrap();
        assert_eq!(e.kind, IcmpErrorKind::Unreachable4(3));
        assert_eq!((e.src, e.dst, e.src_port, e.dst_port), (loopback(), loopback(), 41504, 9));
        assert_eq!(e.seq, SeqNumber(0x6832b49a));
        assert_eq!(
            e.to_string(),
            "ICMP port unreachable for TCP 127.0.0.1:41504->127.0.0.1:9 seq=1748153498"
        );

        let e = IcmpErrorRepr::parse_v6(&unhex(ICMP_V6)).unwrap();
        assert_eq!(e.kind, IcmpErrorKind::Unreachable6(1));
        assert_eq!(e.kind.to_string(), "administratively prohibited");
        assert_eq!((e.src, e.dst_port), (IpAddr::V6(Ipv6Addr::LOCALHOST), 9));
        // Echo requests and the like are not errors about our segments.
        assert_eq!(IcmpErrorRepr::parse_v4(&[8, 0, 0, 0, 0, 0, 0, 0]), Err(WireError::Unsupported));
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
        let mut ip = unhex(SYN_V4);
        ip[3] = 200; // total length past the buffer
        assert_eq!(Ipv4Packet::new_checked(&ip[..]).err(), Some(WireError::Truncated));
        ip[3] = 10; // total length inside the header
        assert_eq!(Ipv4Packet::new_checked(&ip[..]).err(), Some(WireError::Malformed));
        assert!(IcmpErrorRepr::parse_v4(&unhex(ICMP_V4)[20..40]).is_err());
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
    }

    #[test]
    fn emit_round_trips_captured_bytes() {
        // Re-emitting a captured segment from its meaning gives the same bytes. (Checksums on
        // loopback are partial, so compare with the checksum recomputed.)
        for (hexed, has_ip) in [(SYN_V4, true), (SYNACK_V4, true), (BANNER_V4, true), (SYNACK_V6, false)] {
            let bytes = unhex(hexed);
            let (segment, src, dst) = if has_ip {
                let ip = Ipv4Packet::new_checked(&bytes[..]).unwrap();
                (ip.payload().to_vec(), IpAddr::V4(ip.src_addr()), IpAddr::V4(ip.dst_addr()))
            } else {
                let lo = IpAddr::V6(Ipv6Addr::LOCALHOST);
                (bytes.clone(), lo, lo)
            };
            let tcp = TcpPacket::new_checked(&segment[..]).unwrap();
            let repr = TcpRepr::parse(&tcp);
            let mut out = vec![0u8; repr.buffer_len()];
            repr.emit(&mut out, src, dst);
            let mut expected = segment.clone();
            TcpPacket::new_unchecked(&mut expected[..]).fill_checksum(src, dst);
            assert_eq!(hex::encode(&out), hex::encode(&expected), "{hexed}");
            assert!(TcpPacket::new_checked(&out[..]).unwrap().verify_checksum(src, dst));
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

    #[test]
    fn ipv4_header_round_trips() {
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
        assert_eq!(checksum(&buf[..20]), 0);
        assert_eq!(ip.to_string(), "IPv4 127.0.0.1->198.18.0.2 proto=6 ttl=64 len=60");
    }

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
    fn flags_print_as_traces_show_them() {
        let f = |bits| TcpFlags(bits).to_string();
        assert_eq!(f(TcpFlags::SYN | TcpFlags::ACK), "SA");
        assert_eq!(f(TcpFlags::FIN | TcpFlags::ACK), "FA");
        assert_eq!(f(TcpFlags::RST | TcpFlags::ACK), "RA");
        assert_eq!(f(TcpFlags::FIN | TcpFlags::PSH | TcpFlags::ACK), "FPA");
        assert_eq!(f(0), ".");
    }
}
