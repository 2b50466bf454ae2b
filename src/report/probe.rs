//! Reports of probe results, in each format, one result at a time.

use super::{csv_field, Format, Palette};
use crate::escape::escape;
use crate::evidence::{Connect, Observation, PacketKind, PacketRecord, Timings};
use crate::ident::IdentLine;
use crate::outcome::{KnownRefusal, NotSshCause, Outcome};
use crate::scan::ProbeResult;
use serde::Serialize;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::SystemTime;

/// The most characters of detail in a table row (JSON keeps all of it).
const TABLE_DETAIL_CHARS: usize = 100;

/// The most received bytes shown in `bytes_hex` / `bytes_text`.
pub(crate) const SHOWN_BYTES: usize = 512;

/// One probe as a JSON object: the JSONL contract. Fields are only ever added.
#[derive(Debug, Serialize)]
pub struct JsonRecord<'a> {
    /// The target as given (or the address, for members of a network).
    pub target: &'a str,
    /// Which of the target's probes (0-based, with `--count`).
    pub seq: u32,
    /// When the probe started: RFC 3339, UTC, microseconds (`2026-12-02T05:03:15.123456Z`).
    #[serde(serialize_with = "serialize_time")]
    pub time: SystemTime,
    /// The outcome's stable name.
    pub outcome: Outcome,
    /// Whether the identification exchange worked.
    pub success: bool,
    /// The server's ident line, split (`banner` and `protocol_mismatch`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub banner: Option<&'a IdentLine>,
    /// What the server said instead of an ident.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<&'a str>,
    /// A refusal message we recognise, and what it means.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<KnownRefusal>,
    /// What the recognised refusal means.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal_meaning: Option<&'static str>,
    /// Why the reply is not SSH.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_ssh: Option<String>,
    /// The connect's error, as the system described it (`unreachable`, `local_error`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    /// How the connection ended: `fin`, `rst`, `timeout`, `we_closed`, `byte_cap`, `interrupted`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<&'static str>,
    /// Microseconds from the start of the connect: `connected`, `first_byte`, `ident`, `closed`.
    pub timings_us: Timings,
    /// How many bytes were read: reading stops once the ident line is complete (or at the byte cap),
    /// so this is not the size of the server's first flight (dropbear sends its KEXINIT with its
    /// ident: 512 of its 538 bytes may be read).
    pub bytes_len: usize,
    /// The first bytes received, hex.
    pub bytes_hex: String,
    /// The first bytes received, printable (non-printable bytes escaped).
    pub bytes_text: String,
    /// Our address for the connection.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "serialize_opt_addr")]
    pub local: Option<SocketAddr>,
    /// The server's address.
    #[serde(serialize_with = "serialize_addr")]
    pub remote: SocketAddr,
    /// The probe order: `wait_for_banner` or `send_first`.
    pub order: crate::evidence::ProbeOrder,
    /// Whether our ident went out.
    pub sent_ident: bool,
    /// The raw engine's packet trace.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub packets: &'a [PacketRecord],
    /// The server's KEXINIT (`probe --kex`): the ten name-lists by their RFC 4253 names,
    /// `first_kex_packet_follows`, `strict_kex`, `terrapin_exposed`, `post_quantum`; or
    /// `{"error", "detail"}` when none could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kexinit: Option<&'a crate::kexinit::KexRead>,
}

impl<'a> JsonRecord<'a> {
    /// The record for one result.
    pub fn new(r: &'a ProbeResult) -> JsonRecord<'a> {
        let obs = &r.record.observation;
        let c = &r.record.classification;
        let shown = &obs.received[..obs.received.len().min(SHOWN_BYTES)];
        JsonRecord {
            target: &r.target,
            seq: r.seq,
            time: r.time,
            outcome: c.outcome,
            success: c.outcome.is_success(),
            banner: c.banner.as_ref(),
            message: c.message.as_deref(),
            refusal: c.refusal,
            refusal_meaning: c.refusal.map(KnownRefusal::meaning),
            not_ssh: c.not_ssh.map(|n: NotSshCause| n.to_string()),
            error: connect_error(obs),
            end: obs.end.map(|e| e.name()),
            timings_us: obs.timings,
            bytes_len: obs.received.len(),
            bytes_hex: hex_lower(shown),
            bytes_text: escaped(shown),
            local: obs.local,
            remote: obs.remote,
            order: obs.order,
            sent_ident: obs.sent_ident,
            packets: &obs.packets,
            kexinit: obs.kexinit.as_ref(),
        }
    }
}

/// Serializes an address as its `Display` text, as serde does, without the formatting machinery for
/// IPv4 (serde's way cost a third of a JSON line's instructions: callgrind).
fn serialize_addr<S: serde::Serializer>(addr: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
    match addr {
        SocketAddr::V4(a) => {
            let mut buf = [0u8; 21]; // 255.255.255.255:65535
            let mut n = 0;
            for (i, octet) in a.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                n += decimal(u16::from(octet), &mut buf[n..]);
            }
            buf[n] = b':';
            n += 1;
            n += decimal(a.port(), &mut buf[n..]);
            // ASCII digits, dots and a colon: always UTF-8.
            s.serialize_str(std::str::from_utf8(&buf[..n]).unwrap_or_default())
        }
        SocketAddr::V6(_) => s.collect_str(addr),
    }
}

/// Appends an address as its `Display` text (as [`serialize_addr`] writes it, without the quotes).
pub(super) fn write_addr(out: &mut Vec<u8>, addr: &SocketAddr) {
    match addr {
        SocketAddr::V4(a) => {
            let mut buf = [0u8; 5];
            for (i, octet) in a.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                let n = decimal(u16::from(octet), &mut buf);
                out.extend_from_slice(&buf[..n]);
            }
            out.push(b':');
            let n = decimal(a.port(), &mut buf);
            out.extend_from_slice(&buf[..n]);
        }
        SocketAddr::V6(_) => {
            let _ = write!(out, "{addr}");
        }
    }
}

/// Writes `v` in decimal at the start of `out`, which has room for five digits; returns the length.
fn decimal(v: u16, out: &mut [u8]) -> usize {
    let digits = [v / 10_000, v / 1000 % 10, v / 100 % 10, v / 10 % 10, v % 10];
    let first = digits.iter().position(|&d| d != 0).unwrap_or(4);
    for (slot, &d) in out.iter_mut().zip(&digits[first..]) {
        *slot = b'0' + d as u8;
    }
    digits.len() - first
}

/// Serializes a time as RFC 3339 in UTC with microseconds.
fn serialize_time<S: serde::Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_micros(*time))
}

fn serialize_opt_addr<S: serde::Serializer>(addr: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
    match addr {
        Some(a) => serialize_addr(a, s),
        None => s.serialize_none(),
    }
}

/// `bytes` as lowercase hex, as `hex::encode` gives it, without a per-character iterator.
fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// `bytes` with non-printable bytes escaped, as `<[u8]>::escape_ascii` gives it, without going
/// through the formatting machinery.
fn escaped(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() + 8);
    for &b in bytes {
        s.extend(std::ascii::escape_default(b).map(char::from));
    }
    s
}

pub(super) fn connect_error(obs: &Observation) -> Option<&str> {
    match &obs.connect {
        Connect::Unreachable { detail } | Connect::LocalError { detail } => Some(detail),
        _ => None,
    }
}

/// Writes probe results in one format.
pub struct ProbeReporter<W: Write> {
    out: W,
    format: Format,
    palette: Palette,
    trace: bool,
    kex: bool,
    wrote_header: bool,
    /// One JSON line, serialized here first: serde_json writes many small pieces, which a `Vec`
    /// takes far more cheaply than a `BufWriter` over stdout.
    line: Vec<u8>,
}

impl<W: Write> ProbeReporter<W> {
    /// A reporter writing `format` to `out`; `colour` applies to the table only; `trace` prints the
    /// packet trace under each table row.
    pub fn new(out: W, format: Format, colour: bool, trace: bool) -> ProbeReporter<W> {
        ProbeReporter {
            out,
            format,
            palette: Palette::new(colour),
            trace,
            kex: false,
            wrote_header: false,
            line: Vec::new(),
        }
    }

    /// With the KEXINIT's summary (`probe --kex`): a `kexinit` column last in CSV, a line under each
    /// table row. JSONL shows the `kexinit` object whenever a record has one.
    pub fn kex(mut self, yes: bool) -> ProbeReporter<W> {
        self.kex = yes;
        self
    }

    /// Writes one result (and the header first, for table and CSV), flushed.
    pub fn write(&mut self, r: &ProbeResult) -> io::Result<()> {
        self.write_unflushed(r)?;
        self.out.flush()
    }

    /// Flushes what [`ProbeReporter::write_unflushed`] left in the writer's buffer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Writes one result without flushing: for a buffered writer that the caller flushes whenever it
    /// has nothing more to write for the moment (one write per batch of lines instead of per line).
    pub fn write_unflushed(&mut self, r: &ProbeResult) -> io::Result<()> {
        if !self.wrote_header {
            self.wrote_header = true;
            self.header()?;
        }
        match self.format {
            Format::Jsonl => {
                self.line.clear();
                // The hand-written line (the hot path of a scan); serde for what it does not cover.
                if !super::jsonl::write_line(&mut self.line, r) {
                    crate::escape::write_json(&mut self.line, &JsonRecord::new(r))?;
                }
                self.line.push(b'\n');
                self.out.write_all(&self.line)?;
            }
            Format::Csv => self.csv_row(r)?,
            Format::Table => self.table_row(r)?,
        }
        Ok(())
    }

    fn header(&mut self) -> io::Result<()> {
        match self.format {
            Format::Jsonl => Ok(()),
            Format::Csv => writeln!(
                self.out,
                "target,seq,outcome,end,connected_us,first_byte_us,ident_us,closed_us,bytes_len,local,remote,software,message,refusal,time{}",
                if self.kex { ",kexinit" } else { "" }
            ),
            Format::Table => writeln!(
                self.out,
                "{:<28} {:<21} {:>10} {:<9} {:>5}  DETAIL",
                "TARGET", "OUTCOME", "TIME", "END", "BYTES"
            ),
        }
    }

    fn csv_row(&mut self, r: &ProbeResult) -> io::Result<()> {
        let obs = &r.record.observation;
        let c = &r.record.classification;
        let t = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
        write!(
            self.out,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            csv_field(&r.target),
            r.seq,
            c.outcome,
            obs.end.map(|e| e.name()).unwrap_or(""),
            t(obs.timings.connected),
            t(obs.timings.first_byte),
            t(obs.timings.ident),
            t(obs.timings.closed),
            obs.received.len(),
            obs.local.map(|a| a.to_string()).unwrap_or_default(),
            obs.remote,
            csv_field(c.banner.as_ref().map(|b| b.software.as_str()).unwrap_or("")),
            csv_field(c.message.as_deref().unwrap_or("")),
            c.refusal.map(|k| k.name()).unwrap_or(""),
            humantime::format_rfc3339_micros(r.time),
        )?;
        if self.kex {
            // Names are printable ASCII without commas (checked by the parser); quoted for the spaces.
            write!(
                self.out,
                ",{}",
                csv_field(&obs.kexinit.as_ref().map(|k| k.summary()).unwrap_or_default())
            )?;
        }
        writeln!(self.out)
    }

    fn table_row(&mut self, r: &ProbeResult) -> io::Result<()> {
        let obs = &r.record.observation;
        let c = &r.record.classification;
        let colour = match c.outcome {
            Outcome::Banner => "32",
            Outcome::ServerRefusal | Outcome::ResetBeforeBanner | Outcome::ClosedBeforeBanner => "31",
            Outcome::ConnectTimeout | Outcome::BannerTimeout => "33",
            _ => "35",
        };
        let target = match r.seq {
            0 => r.target.clone(),
            n => format!("{} #{n}", r.target),
        };
        // The time that matters: when the ident was complete, or when it all ended.
        let time = obs.timings.ident.or(obs.timings.closed).map(format_us).unwrap_or_default();
        let detail = match (&obs.connect, c.detail()) {
            (Connect::Unreachable { detail } | Connect::LocalError { detail }, _) => detail.clone(),
            (_, d) => d,
        };
        // Escaped before it is cut, so the row stays as short as promised.
        let detail = escape(&detail);
        let detail = match detail.char_indices().nth(TABLE_DETAIL_CHARS) {
            Some((cut, _)) => format!("{}…", &detail[..cut]),
            None => detail.into_owned(),
        };
        writeln!(
            self.out,
            "{:<28} {} {:>10} {:<9} {:>5}  {}",
            escape(&target),
            self.palette.paint(colour, c.outcome.name(), 21),
            time,
            obs.end.map(|e| e.name()).unwrap_or("-"),
            obs.received.len(),
            detail
        )?;
        if self.kex {
            if let Some(k) = &obs.kexinit {
                let line = match k {
                    crate::kexinit::KexRead::Kexinit(_) => k.summary(),
                    crate::kexinit::KexRead::Failed(e) => format!("error={} ({e})", e.name()),
                };
                writeln!(self.out, "    kexinit: {line}")?;
            }
        }
        if self.trace {
            for p in &obs.packets {
                let arrow = match p.dir {
                    crate::evidence::Direction::Out => "->",
                    crate::evidence::Direction::In => "<-",
                };
                write!(
                    self.out,
                    "    {:>10} {arrow} {:<3} seq={} ack={} win={} ttl={} len={}",
                    format_us(p.t_us),
                    p.kind,
                    p.seq,
                    p.ack,
                    p.window,
                    p.ttl,
                    p.len,
                )?;
                // Options as the trace writes them (`mss=1460,ws=7`); an ICMP error in words.
                match &p.kind {
                    PacketKind::Tcp { options, .. } => {
                        for (i, option) in options.iter().enumerate() {
                            write!(self.out, "{}{option}", if i == 0 { " " } else { "," })?;
                        }
                    }
                    PacketKind::Icmp(kind) => write!(self.out, " {kind}")?,
                }
                writeln!(self.out)?;
            }
        }
        Ok(())
    }
}

/// `1234` µs as `1.234ms`; seconds past 10 s.
pub(crate) fn format_us(us: u64) -> String {
    if us >= 10_000_000 {
        format!("{:.2}s", us as f64 / 1e6)
    } else {
        format!("{:.3}ms", us as f64 / 1e3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_text_are_those_of_the_standard_encoders() {
        let all: Vec<u8> = (0..=255u8).chain(*b"SSH-2.0-x\r\n\"'\\").collect();
        assert_eq!(hex_lower(&all), all.iter().map(|b| format!("{b:02x}")).collect::<String>());
        assert_eq!(escaped(&all), all.escape_ascii().to_string());
        assert_eq!((hex_lower(b""), escaped(b"")), (String::new(), String::new()));
    }

    #[test]
    fn addresses_serialize_as_their_display_text() {
        for a in [
            "0.0.0.0:1",
            "127.0.0.1:22",
            "10.200.3.45:65535",
            "255.255.255.255:9",
            "[::1]:22",
            "[fd00::5]:2222",
        ] {
            let addr: SocketAddr = a.parse().unwrap();
            let mut out = Vec::new();
            serialize_addr(&addr, &mut serde_json::Serializer::new(&mut out)).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), format!("\"{addr}\""));
        }
    }

    #[test]
    fn the_trace_shows_flags_options_and_icmp_errors_by_name() {
        use crate::evidence::{Direction, End, ProbeOrder};
        use crate::packet::{IcmpKind, TcpFlags, TcpOption};
        let packet =
            |t_us, dir, kind| PacketRecord { t_us, dir, kind, seq: 0, ack: 0, window: 64, ttl: 64, len: 0 };
        let tcp = |bits, options| PacketKind::Tcp { flags: TcpFlags(bits), options };
        let observation = Observation {
            remote: "127.0.0.1:22".parse().unwrap(),
            local: None,
            order: ProbeOrder::WaitForBanner,
            connect: Connect::Established,
            end: Some(End::Fin),
            timings: Timings { connected: Some(100), closed: Some(300), ..Timings::default() },
            received: bytes::Bytes::new(),
            sent_ident: false,
            packets: vec![
                packet(0, Direction::Out, tcp(TcpFlags::SYN, vec![TcpOption::MaxSegmentSize(1460)])),
                packet(
                    100,
                    Direction::In,
                    tcp(
                        TcpFlags::SYN | TcpFlags::ACK,
                        vec![TcpOption::MaxSegmentSize(65495), TcpOption::WindowScale(7)],
                    ),
                ),
                packet(300, Direction::In, tcp(TcpFlags::FIN | TcpFlags::ACK, vec![])),
                packet(400, Direction::In, PacketKind::Icmp(IcmpKind::AdminProhibited)),
            ],
            kexinit: None,
            ident_scan: None,
        };
        let result = ProbeResult {
            target: "t".into(),
            seq: 0,
            time: std::time::UNIX_EPOCH,
            record: crate::record::ProbeRecord::new(observation),
        };
        let mut out = Vec::new();
        ProbeReporter::new(&mut out, Format::Table, false, true).write(&result).unwrap();
        let text = String::from_utf8(out).unwrap();
        let trace: Vec<&str> = text.lines().filter(|l| l.starts_with("    ")).map(str::trim).collect();
        assert_eq!(
            trace,
            [
                "0.000ms -> S   seq=0 ack=0 win=64 ttl=64 len=0 mss=1460",
                "0.100ms <- SA  seq=0 ack=0 win=64 ttl=64 len=0 mss=65495,ws=7",
                "0.300ms <- FA  seq=0 ack=0 win=64 ttl=64 len=0",
                "0.400ms <- icmp seq=0 ack=0 win=64 ttl=64 len=0 administratively prohibited",
            ],
            "{text}"
        );
    }
}
