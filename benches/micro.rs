//! Micro benchmarks of the per-probe work that is not I/O: the ident scanner, the classifier, the
//! JSONL report line, and the raw engine's packet formats (ours against smoltcp's and etherparse's).
//!
//! `ident::scan` is reported in bytes/s over what servers really send (OpenSSH and dropbear banners,
//! TCP-wrappers pre-banner text) and over hostile input (8 KiB without a line end, 1024 short lines, and
//! a server dribbling its bytes so the engine re-scans every prefix). Run with `cargo bench --bench
//! micro`; figures, not assertions (see docs/performance.md).

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sshprobe::evidence::{Connect, End, Observation, ProbeOrder, Timings};
use sshprobe::ident;
use sshprobe::outcome::classify;
use sshprobe::packet::IcmpKind;
use sshprobe::record::ProbeRecord;
use sshprobe::report::probe::ProbeReporter;
use sshprobe::report::Format;
use sshprobe::scan::ProbeResult;
use std::net::Ipv4Addr;
use std::time::Duration;

const OPENSSH: &[u8] = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n";

fn dropbear() -> Vec<u8> {
    // The ident, then the start of the binary KEXINIT dropbear sends without waiting.
    let mut v = b"SSH-2.0-dropbear_2022.83\r\n".to_vec();
    v.extend_from_slice(&[0, 0, 1, 0x14, 0x0a, 0x14]);
    v.extend((0..200u32).map(|i| (i * 37 % 251) as u8));
    v
}

fn prebanner() -> Vec<u8> {
    let mut v = Vec::new();
    for _ in 0..6 {
        v.extend_from_slice(b"*** Authorized use only. Activity may be monitored and reported. ***\r\n");
    }
    v.extend_from_slice(OPENSSH);
    v
}

/// The scanner's hostile inputs: each is as expensive as an input that still gets a verdict can be.
fn hostile() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        // One pre-banner line just under the 8192-byte limit, no line end: NeedMore after 8 KiB.
        ("8k_no_newline", vec![b'A'; ident::MAX_PREBANNER_LINE - 1]),
        // The most pre-banner lines allowed, all short: NeedMore after 1024 lines.
        ("1024_short_lines", b"x\r\n".repeat(ident::MAX_PREBANNER_LINES)),
    ]
}

fn bench_scan(c: &mut Criterion) {
    let mut g = c.benchmark_group("ident_scan");
    let inputs: Vec<(&str, Vec<u8>)> = [("openssh", OPENSSH.to_vec()), ("dropbear_kexinit", dropbear())]
        .into_iter()
        .chain([("prebanner_6_lines", prebanner())])
        .chain(hostile())
        .collect();
    for (name, buf) in &inputs {
        g.throughput(Throughput::Bytes(buf.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), buf, |b, buf| {
            b.iter(|| ident::scan(black_box(buf)))
        });
    }
    // A server dribbling one line end at a time: the connect engine re-scans the whole buffer after
    // every read that brings a line end, so the work is the sum over every prefix ending in LF.
    // Throughput counts every byte scanned, so this compares with the single-pass rows above.
    for (name, buf) in
        [("dribbled_openssh", OPENSSH.to_vec()), ("dribbled_1024_lines", hostile()[1].1.clone())]
    {
        let ends: Vec<usize> =
            buf.iter().enumerate().filter(|(_, &b)| b == b'\n').map(|(i, _)| i + 1).collect();
        let scanned: usize = ends.iter().sum();
        g.throughput(Throughput::Bytes(scanned as u64));
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                for &end in &ends {
                    black_box(ident::scan(black_box(&buf[..end])));
                }
            })
        });
    }
    g.finish();
}

fn observation(connect: Connect, end: Option<End>, received: &[u8]) -> Observation {
    Observation {
        remote: "127.0.0.1:22".parse().expect("a literal address"),
        local: Some("127.0.0.1:40000".parse().expect("a literal address")),
        order: ProbeOrder::WaitForBanner,
        connect,
        end,
        timings: Timings { connected: Some(40), first_byte: Some(90), ident: Some(95), closed: Some(120) },
        received: Bytes::copy_from_slice(received),
        sent_ident: true,
        packets: Vec::new(),
        kexinit: None,
        ident_scan: None,
    }
}

fn cases() -> Vec<(&'static str, Observation)> {
    vec![
        ("banner", observation(Connect::Established, Some(End::WeClosed), OPENSSH)),
        ("prebanner", observation(Connect::Established, Some(End::WeClosed), &prebanner())),
        ("refusal", observation(Connect::Established, Some(End::Fin), b"Not allowed at this time\r\n")),
        ("closed_silently", observation(Connect::Established, Some(End::Fin), b"")),
        ("http", observation(Connect::Established, Some(End::Fin), b"HTTP/1.1 400 Bad Request\r\n\r\n")),
        ("refused", observation(Connect::Refused, None, b"")),
    ]
}

/// What a banner costs from the engine's read to its classification: the reader scans the bytes as
/// they come, and the classifier takes that scan (`handed`) or scans them again (`rescanned`, as
/// before the reader kept its answer).
fn bench_read_then_classify(c: &mut Criterion) {
    let mut g = c.benchmark_group("read_then_classify");
    let obs = observation(Connect::Established, Some(End::WeClosed), OPENSSH);
    for handed in [true, false] {
        let name = if handed { "handed" } else { "rescanned" };
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut reader = sshprobe::engine::BannerReader::new(512);
                black_box(reader.push(black_box(OPENSSH)));
                let scanned = if handed { reader.take_scanned() } else { None };
                sshprobe::outcome::classify_scanned(black_box(&obs), scanned)
            })
        });
    }
    g.finish();
}

fn bench_classify(c: &mut Criterion) {
    let mut g = c.benchmark_group("classify");
    for (name, obs) in cases() {
        g.bench_with_input(BenchmarkId::from_parameter(name), &obs, |b, obs| {
            b.iter(|| classify(black_box(obs)))
        });
    }
    g.finish();
}

/// One JSONL line into a 64 KiB `BufWriter`, as `probe` writes it (the sink behind it discards, so no
/// system call is counted).
fn bench_report(c: &mut Criterion) {
    let mut g = c.benchmark_group("report_jsonl");
    for (name, obs) in cases() {
        let result = ProbeResult {
            target: "127.0.0.1:22".into(),
            seq: 0,
            time: std::time::SystemTime::UNIX_EPOCH,
            record: ProbeRecord::new(obs),
        };
        let out = std::io::BufWriter::with_capacity(64 * 1024, std::io::sink());
        let mut reporter = ProbeReporter::new(out, Format::Jsonl, false, false);
        g.bench_with_input(BenchmarkId::from_parameter(name), &result, |b, r| {
            b.iter(|| reporter.write_unflushed(black_box(r)).expect("writing to a sink"))
        });
    }
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// wire: our packet views against smoltcp's and etherparse's, per packet

/// Packets captured on loopback (the same as `src/engine/raw/wire/captured.rs`'s), IPv4 header first.
mod captured {
    pub const SYNACK_V4: &str =
        "4500003c0000400040063cba7f0000017f000001d131e3f812d6b9182c2d6c2fa012ffcbfe300000\
                                 0204ffd70402080a5b6604da80af16fc0103030a";
    /// The server's ident line, PSH|ACK with timestamps.
    pub const BANNER_V4: &str = "4500005c0a054000400632957f0000017f000001d131e3f812d6b9192c2d6c2f80180040fe500000\
                                 0101080a5b6604da80af16fc5353482d322e302d4f70656e5353485f392e3270312044656269616e\
                                 2d322b646562313275330d0a";
    /// An ICMP port unreachable (nftables `reject`) quoting a SYN to 127.0.0.1:9.
    pub const ICMP_V4: &str = "45c00058ac8f00004001cf537f0000017f0000010303b814000000004500003ce73f40004006557a\
                               7f0000017f000001a22000096832b49a00000000a002ffd7fe3000000204ffd70402080a79085ce8\
                               000000000103030a";
}

/// What the raw engine takes from an inbound TCP packet: addresses, TTL, ports, flags, numbers,
/// window, the options (collected, as the flow gets them) and the payload.
#[derive(Debug, PartialEq, Eq)]
struct Inbound<'a> {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    ports: (u16, u16),
    flags: u8,
    seq: u32,
    ack: u32,
    window: u16,
    mss: Option<u16>,
    options: usize,
    payload: &'a [u8],
}

/// What it takes from an ICMP error: its name, and the quoted segment's 4-tuple and sequence number.
#[derive(Debug, PartialEq, Eq)]
struct IcmpError {
    kind: IcmpKind,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ports: (u16, u16),
    seq: u32,
}

mod ours {
    use super::{IcmpError, Inbound};
    use sshprobe::engine::raw::wire::{
        IcmpErrorRepr, Ipv4Packet, Ipv4Repr, SeqNumber, TcpFlags, TcpOption, TcpOptions, TcpPacket, TcpRepr,
        PROTO_TCP,
    };
    use std::net::IpAddr;

    pub fn parse_tcp(bytes: &[u8]) -> Option<Inbound<'_>> {
        let ip = Ipv4Packet::new_checked(bytes).ok()?;
        if ip.protocol() != PROTO_TCP || ip.is_fragment() {
            return None;
        }
        let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
        let options: Vec<TcpOption> = TcpOptions::new(tcp.options()).filter_map(Result::ok).collect();
        // (Our views lend their payload for the view's lifetime, not the buffer's: sliced here.)
        let payload = &bytes[ip.header_len() + tcp.header_len()..usize::from(ip.total_len())];
        Some(Inbound {
            src: ip.src_addr(),
            dst: ip.dst_addr(),
            ttl: ip.ttl(),
            ports: (tcp.src_port(), tcp.dst_port()),
            flags: tcp.flags().0,
            seq: tcp.seq_number().0,
            ack: tcp.ack_number().0,
            window: tcp.window_len(),
            mss: options.iter().find_map(|o| match o {
                TcpOption::MaxSegmentSize(m) => Some(*m),
                _ => None,
            }),
            options: options.len(),
            payload,
        })
    }

    pub fn parse_icmp(bytes: &[u8]) -> Option<IcmpError> {
        let ip = Ipv4Packet::new_checked(bytes).ok()?;
        let e = IcmpErrorRepr::parse_v4(ip.payload()).ok()?;
        let (IpAddr::V4(src), IpAddr::V4(dst)) = (e.src, e.dst) else { return None };
        Some(IcmpError { kind: e.kind, src, dst, ports: (e.src_port, e.dst_port), seq: e.seq.0 })
    }

    /// IPv4 header + TCP segment with checksums, as `RawSockets::send4` builds it.
    pub fn emit(buf: &mut [u8], seg: &super::Outbound) -> usize {
        let options = match seg.mss {
            Some(mss) => vec![TcpOption::MaxSegmentSize(mss)],
            None => Vec::new(),
        };
        let tcp = TcpRepr {
            src_port: seg.ports.0,
            dst_port: seg.ports.1,
            flags: TcpFlags(seg.flags),
            seq: SeqNumber(seg.seq),
            ack: SeqNumber(seg.ack),
            window: seg.window,
            options,
            payload: seg.payload,
        };
        let ip = Ipv4Repr {
            src: seg.src,
            dst: seg.dst,
            protocol: PROTO_TCP,
            payload_len: tcp.buffer_len(),
            ttl: 64,
        };
        let len = Ipv4Repr::HEADER_LEN + tcp.buffer_len();
        ip.emit(&mut buf[..len]);
        tcp.emit(&mut buf[Ipv4Repr::HEADER_LEN..len], IpAddr::V4(seg.src), IpAddr::V4(seg.dst));
        len
    }
}

mod smol {
    use super::{IcmpError, IcmpKind, Inbound};
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        Icmpv4DstUnreachable, Icmpv4Packet, Icmpv4Repr, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr,
        TcpOption, TcpPacket, TcpSeqNumber,
    };

    pub fn parse_tcp(bytes: &[u8]) -> Option<Inbound<'_>> {
        let ip = Ipv4Packet::new_checked(bytes).ok()?;
        if ip.next_header() != IpProtocol::Tcp || ip.more_frags() || ip.frag_offset() != 0 {
            return None;
        }
        // The view, not `TcpRepr::parse`: the Repr folds the control bits into one `Control`
        // (PSH is lost beside FIN, ECE/CWR/URG always) and drops unknown options.
        let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
        let mut options: Vec<TcpOption<'_>> = Vec::new();
        let mut rest = tcp.options();
        while !rest.is_empty() {
            let Ok((next, option)) = TcpOption::parse(rest) else { break };
            options.push(option);
            if option == TcpOption::EndOfList {
                break;
            }
            rest = next;
        }
        let flags = u8::from(tcp.fin())
            | u8::from(tcp.syn()) << 1
            | u8::from(tcp.rst()) << 2
            | u8::from(tcp.psh()) << 3
            | u8::from(tcp.ack()) << 4
            | u8::from(tcp.urg()) << 5
            | u8::from(tcp.ece()) << 6
            | u8::from(tcp.cwr()) << 7;
        Some(Inbound {
            src: ip.src_addr(),
            dst: ip.dst_addr(),
            ttl: ip.hop_limit(),
            ports: (tcp.src_port(), tcp.dst_port()),
            flags,
            seq: tcp.seq_number().0 as u32,
            ack: tcp.ack_number().0 as u32,
            window: tcp.window_len(),
            mss: options.iter().find_map(|o| match o {
                TcpOption::MaxSegmentSize(m) => Some(*m),
                _ => None,
            }),
            options: options.len(),
            payload: tcp.payload(),
        })
    }

    pub fn parse_icmp(bytes: &[u8]) -> Option<IcmpError> {
        let ip = Ipv4Packet::new_checked(bytes).ok()?;
        let icmp = Icmpv4Packet::new_checked(ip.payload()).ok()?;
        let kind = IcmpKind::from_v4(3, icmp.msg_code())?;
        // (Refuses a quote shorter than the quoted datagram's total length, RFC 792's minimal
        // header + 8 bytes among them; Linux quotes whole SYNs.)
        let Ok(Icmpv4Repr::DstUnreachable { reason, header, data }) =
            Icmpv4Repr::parse(&icmp, &ChecksumCapabilities::ignored())
        else {
            return None;
        };
        let _: Icmpv4DstUnreachable = reason;
        let be16 = |at: usize| u16::from_be_bytes([data[at], data[at + 1]]);
        Some(IcmpError {
            kind,
            src: header.src_addr,
            dst: header.dst_addr,
            ports: (be16(0), be16(2)),
            seq: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
        })
    }

    pub fn emit(buf: &mut [u8], seg: &super::Outbound) -> usize {
        let tcp_len = 20 + if seg.mss.is_some() { 4 } else { 0 } + seg.payload.len();
        let len = 20 + tcp_len;
        let ip = Ipv4Repr {
            src_addr: seg.src,
            dst_addr: seg.dst,
            next_header: IpProtocol::Tcp,
            payload_len: tcp_len,
            hop_limit: 64,
        };
        ip.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..20]), &ChecksumCapabilities::default());
        // The view's setters (`TcpRepr::emit` cannot send FIN with PSH, as our coalesced FPA is).
        let mut tcp = TcpPacket::new_unchecked(&mut buf[20..len]);
        tcp.set_src_port(seg.ports.0);
        tcp.set_dst_port(seg.ports.1);
        tcp.set_seq_number(TcpSeqNumber(seg.seq as i32));
        tcp.set_ack_number(TcpSeqNumber(seg.ack as i32));
        tcp.set_header_len(tcp_len as u8 - seg.payload.len() as u8);
        tcp.clear_flags();
        tcp.set_fin(seg.flags & 0x01 != 0);
        tcp.set_syn(seg.flags & 0x02 != 0);
        tcp.set_rst(seg.flags & 0x04 != 0);
        tcp.set_psh(seg.flags & 0x08 != 0);
        tcp.set_ack(seg.flags & 0x10 != 0);
        tcp.set_window_len(seg.window);
        tcp.set_urgent_at(0);
        if let Some(mss) = seg.mss {
            TcpOption::MaxSegmentSize(mss).emit(tcp.options_mut());
        }
        tcp.payload_mut().copy_from_slice(seg.payload);
        tcp.fill_checksum(&IpAddress::Ipv4(seg.src), &IpAddress::Ipv4(seg.dst));
        len
    }
}

mod ether {
    use super::{IcmpError, IcmpKind, Inbound};
    use etherparse::{
        Icmpv4Slice, Icmpv4Type, IpNumber, Ipv4Header, Ipv4Slice, LaxIpv4Slice, TcpHeader, TcpOptionElement,
        TcpSlice,
    };

    pub fn parse_tcp(bytes: &[u8]) -> Option<Inbound<'_>> {
        let ip = Ipv4Slice::from_slice(bytes).ok()?;
        if ip.payload_ip_number() != IpNumber::TCP || ip.is_payload_fragmented() {
            return None;
        }
        let tcp = TcpSlice::from_slice(ip.payload().payload).ok()?;
        // (An unknown option kind ends the iteration with an error: the trace would lose it.)
        let options: Vec<TcpOptionElement> = tcp.options_iterator().filter_map(Result::ok).collect();
        let flags = u8::from(tcp.fin())
            | u8::from(tcp.syn()) << 1
            | u8::from(tcp.rst()) << 2
            | u8::from(tcp.psh()) << 3
            | u8::from(tcp.ack()) << 4
            | u8::from(tcp.urg()) << 5
            | u8::from(tcp.ece()) << 6
            | u8::from(tcp.cwr()) << 7;
        let h = ip.header();
        Some(Inbound {
            src: h.source_addr(),
            dst: h.destination_addr(),
            ttl: h.ttl(),
            ports: (tcp.source_port(), tcp.destination_port()),
            flags,
            seq: tcp.sequence_number(),
            ack: tcp.acknowledgment_number(),
            window: tcp.window_size(),
            mss: options.iter().find_map(|o| match o {
                TcpOptionElement::MaximumSegmentSize(m) => Some(*m),
                _ => None,
            }),
            // etherparse yields no end-of-list element; ours and smoltcp's do.
            options: options.len() + usize::from(tcp.options().contains(&0)),
            payload: tcp.payload(),
        })
    }

    pub fn parse_icmp(bytes: &[u8]) -> Option<IcmpError> {
        let ip = Ipv4Slice::from_slice(bytes).ok()?;
        let icmp = Icmpv4Slice::from_slice(ip.payload().payload).ok()?;
        let Icmpv4Type::DestinationUnreachable(_) = icmp.icmp_type() else { return None };
        // The lax slice accepts a quote shorter than the quoted datagram's total length.
        let (quoted, _) = LaxIpv4Slice::from_slice(icmp.payload()).ok()?;
        let data = quoted.payload().payload;
        let tcp = data.get(..8)?;
        let h = quoted.header();
        Some(IcmpError {
            kind: IcmpKind::from_v4(icmp.type_u8(), icmp.code_u8())?,
            src: h.source_addr(),
            dst: h.destination_addr(),
            ports: (u16::from_be_bytes([tcp[0], tcp[1]]), u16::from_be_bytes([tcp[2], tcp[3]])),
            seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
        })
    }

    pub fn emit(buf: &mut [u8], seg: &super::Outbound) -> usize {
        let mut tcp = TcpHeader::new(seg.ports.0, seg.ports.1, seg.seq, seg.window);
        tcp.acknowledgment_number = seg.ack;
        tcp.fin = seg.flags & 0x01 != 0;
        tcp.syn = seg.flags & 0x02 != 0;
        tcp.rst = seg.flags & 0x04 != 0;
        tcp.psh = seg.flags & 0x08 != 0;
        tcp.ack = seg.flags & 0x10 != 0;
        if let Some(mss) = seg.mss {
            tcp.set_options(&[TcpOptionElement::MaximumSegmentSize(mss)]).expect("one option fits");
        }
        let tcp_len = tcp.header_len() + seg.payload.len();
        let mut ip = Ipv4Header::new(tcp_len as u16, 64, IpNumber::TCP, seg.src.octets(), seg.dst.octets())
            .expect("a small payload");
        ip.header_checksum = ip.calc_header_checksum();
        tcp.checksum = tcp
            .calc_checksum_ipv4_raw(seg.src.octets(), seg.dst.octets(), seg.payload)
            .expect("a small payload");
        let len = 20 + tcp_len;
        let mut out = &mut buf[..len];
        ip.write(&mut out).expect("room for the header");
        tcp.write(&mut out).expect("room for the header");
        out.copy_from_slice(seg.payload);
        len
    }
}

/// A segment the engine sends.
struct Outbound {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ports: (u16, u16),
    flags: u8,
    seq: u32,
    ack: u32,
    window: u16,
    mss: Option<u16>,
    payload: &'static [u8],
}

fn bench_wire(c: &mut Criterion) {
    let unhex = |s: &str| hex::decode(s).expect("a hex capture");
    let parsed = [("synack", unhex(captured::SYNACK_V4)), ("data_segment", unhex(captured::BANNER_V4))];
    let mut g = c.benchmark_group("wire");
    for (name, bytes) in &parsed {
        // The comparison is fair only if all three read the same: checked once, here.
        let want = ours::parse_tcp(bytes).expect("ours parses the capture");
        assert_eq!(smol::parse_tcp(bytes).as_ref(), Some(&want), "smoltcp reads {name} differently");
        assert_eq!(ether::parse_tcp(bytes).as_ref(), Some(&want), "etherparse reads {name} differently");
        g.bench_with_input(BenchmarkId::new("parse_ours", name), bytes, |b, p| {
            b.iter(|| ours::parse_tcp(black_box(p)))
        });
        g.bench_with_input(BenchmarkId::new("parse_smoltcp", name), bytes, |b, p| {
            b.iter(|| smol::parse_tcp(black_box(p)))
        });
        g.bench_with_input(BenchmarkId::new("parse_etherparse", name), bytes, |b, p| {
            b.iter(|| ether::parse_tcp(black_box(p)))
        });
    }
    let icmp = unhex(captured::ICMP_V4);
    let want = ours::parse_icmp(&icmp).expect("ours parses the capture");
    assert_eq!(smol::parse_icmp(&icmp).as_ref(), Some(&want), "smoltcp reads the ICMP error differently");
    assert_eq!(ether::parse_icmp(&icmp).as_ref(), Some(&want), "etherparse reads the ICMP error differently");
    g.bench_function(BenchmarkId::new("parse_ours", "icmp_error"), |b| {
        b.iter(|| ours::parse_icmp(black_box(&icmp)))
    });
    g.bench_function(BenchmarkId::new("parse_smoltcp", "icmp_error"), |b| {
        b.iter(|| smol::parse_icmp(black_box(&icmp)))
    });
    g.bench_function(BenchmarkId::new("parse_etherparse", "icmp_error"), |b| {
        b.iter(|| ether::parse_icmp(black_box(&icmp)))
    });

    let (src, dst) = (Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2));
    let emitted = [
        (
            "syn",
            Outbound {
                src,
                dst,
                ports: (61000, 22),
                flags: 0x02,
                seq: 0x1234_5678,
                ack: 0,
                window: 64,
                mss: Some(1460),
                payload: b"",
            },
        ),
        (
            "data_segment",
            Outbound {
                src,
                dst,
                ports: (61000, 22),
                flags: 0x18,
                seq: 0x1234_5679,
                ack: 0x0abc_def0,
                window: 64,
                mss: None,
                payload: b"SSH-2.0-sshprobe\r\n",
            },
        ),
    ];
    for (name, seg) in &emitted {
        let mut buf = [0u8; 128];
        let want = {
            let n = ours::emit(&mut buf, seg);
            buf[..n].to_vec()
        };
        for (who, emit) in
            [("smoltcp", smol::emit as fn(&mut [u8], &Outbound) -> usize), ("etherparse", ether::emit)]
        {
            let mut other = [0u8; 128];
            let n = emit(&mut other, seg);
            assert_eq!(hex::encode(&other[..n]), hex::encode(&want), "{who} emits {name} differently");
        }
        g.bench_with_input(BenchmarkId::new("emit_ours", name), seg, |b, s| {
            b.iter(|| ours::emit(&mut buf, black_box(s)))
        });
        g.bench_with_input(BenchmarkId::new("emit_smoltcp", name), seg, |b, s| {
            b.iter(|| smol::emit(&mut buf, black_box(s)))
        });
        g.bench_with_input(BenchmarkId::new("emit_etherparse", name), seg, |b, s| {
            b.iter(|| ether::emit(&mut buf, black_box(s)))
        });
    }
    g.finish();
}

criterion_group! {
    name = micro;
    // Short runs: the whole suite, e2e included, is meant to take a few minutes on 2 cores.
    config = Criterion::default().warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    targets = bench_scan, bench_read_then_classify, bench_classify, bench_report, bench_wire
}
criterion_main!(micro);
