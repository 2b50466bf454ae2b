//! The probe record's JSON line, written by hand: the hot path of a scan.
//!
//! serde_json spent about 12 000 instructions on a probe's line (callgrind: about 20 strings through
//! its escaping writer, the timings map, formatting machinery for every number), a sizeable share of
//! a probe's user-space cost. The record's fields are few and fixed, so [`write_line`] writes them
//! directly into a reused buffer from the result itself, in serde's order, with serde_json's escaping plus the terminal-safe
//! escapes of [`crate::escape::write_json`]. The tests check it byte for byte against serde over
//! generated records, hostile strings included. A record it does not cover (a packet trace) goes to
//! serde: [`write_line`] says so by returning false, having written nothing.

use super::probe::SHOWN_BYTES;
use crate::evidence::{ProbeOrder, Timings};
use crate::ident::IdentLine;
use crate::scan::ProbeResult;

/// Appends the JSON object of `r` (no line end) to `out`, exactly as serde writes its
/// [`JsonRecord`](super::probe::JsonRecord) (through [`crate::escape::write_json`]); false, with nothing written, for a record
/// it does not cover (a packet trace, a KEXINIT: `--trace` and `--kex` runs go through serde). Built from the result itself, so the hex and text of the
/// bytes go straight into `out` with no string of their own.
pub fn write_line(out: &mut Vec<u8>, r: &ProbeResult) -> bool {
    let obs = &r.record.observation;
    let c = &r.record.classification;
    if !obs.packets.is_empty() || obs.kexinit.is_some() {
        return false;
    }
    out.extend_from_slice(b"{\"target\":");
    string(out, &r.target);
    out.extend_from_slice(b",\"seq\":");
    number(out, u64::from(r.seq));
    out.extend_from_slice(b",\"time\":\"");
    // RFC 3339 text: digits, dashes, colons, a dot, T and Z; nothing to escape.
    let _ = std::io::Write::write_fmt(out, format_args!("{}", humantime::format_rfc3339_micros(r.time)));
    out.extend_from_slice(b"\",\"outcome\":\"");
    out.extend_from_slice(c.outcome.name().as_bytes());
    out.extend_from_slice(if c.outcome.is_success() {
        b"\",\"success\":true"
    } else {
        b"\",\"success\":false"
    });
    if let Some(banner) = &c.banner {
        out.extend_from_slice(b",\"banner\":");
        ident_line(out, banner);
    }
    if let Some(message) = &c.message {
        out.extend_from_slice(b",\"message\":");
        string(out, message);
    }
    if let Some(refusal) = c.refusal {
        out.extend_from_slice(b",\"refusal\":\"");
        out.extend_from_slice(refusal.name().as_bytes());
        out.extend_from_slice(b"\",\"refusal_meaning\":");
        string(out, refusal.meaning());
    }
    if let Some(not_ssh) = c.not_ssh {
        out.extend_from_slice(b",\"not_ssh\":");
        string(out, &not_ssh.to_string());
    }
    if let Some(error) = super::probe::connect_error(obs) {
        out.extend_from_slice(b",\"error\":");
        string(out, error);
    }
    if let Some(end) = obs.end {
        out.extend_from_slice(b",\"end\":");
        string(out, end.name());
    }
    out.extend_from_slice(b",\"timings_us\":");
    timings(out, &obs.timings);
    out.extend_from_slice(b",\"bytes_len\":");
    number(out, obs.received.len() as u64);
    let shown = &obs.received[..obs.received.len().min(SHOWN_BYTES)];
    out.extend_from_slice(b",\"bytes_hex\":\"");
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in shown {
        out.extend_from_slice(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
    }
    out.extend_from_slice(b"\",\"bytes_text\":\"");
    // `escape_default`'s text is printable ASCII; JSON then escapes its backslashes and quotes.
    for &b in shown {
        for e in std::ascii::escape_default(b) {
            match e {
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'"' => out.extend_from_slice(b"\\\""),
                e => out.push(e),
            }
        }
    }
    out.push(b'"');
    if let Some(local) = obs.local {
        out.extend_from_slice(b",\"local\":\"");
        super::probe::write_addr(out, &local);
        out.push(b'"');
    }
    out.extend_from_slice(b",\"remote\":\"");
    super::probe::write_addr(out, &obs.remote);
    out.extend_from_slice(b"\",\"order\":\"");
    out.extend_from_slice(match obs.order {
        ProbeOrder::WaitForBanner => b"wait_for_banner",
        ProbeOrder::SendFirst => b"send_first",
    });
    out.extend_from_slice(if obs.sent_ident {
        b"\",\"sent_ident\":true}"
    } else {
        b"\",\"sent_ident\":false}"
    });
    true
}

fn ident_line(out: &mut Vec<u8>, line: &IdentLine) {
    out.extend_from_slice(b"{\"proto\":");
    string(out, &line.proto);
    out.extend_from_slice(b",\"software\":");
    string(out, &line.software);
    if let Some(comments) = &line.comments {
        out.extend_from_slice(b",\"comments\":");
        string(out, comments);
    }
    if !line.prebanner.is_empty() {
        out.extend_from_slice(b",\"prebanner\":[");
        for (i, text) in line.prebanner.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            string(out, text);
        }
        out.push(b']');
    }
    if line.over_rfc_length {
        out.extend_from_slice(b",\"over_rfc_length\":true");
    }
    out.push(b'}');
}

fn timings(out: &mut Vec<u8>, t: &Timings) {
    out.push(b'{');
    let mut first = true;
    for (name, value) in [
        (&b"\"connected\":"[..], t.connected),
        (b"\"first_byte\":", t.first_byte),
        (b"\"ident\":", t.ident),
        (b"\"closed\":", t.closed),
    ] {
        if let Some(v) = value {
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(name);
            number(out, v);
        }
    }
    out.push(b'}');
}

/// A number in decimal, as serde_json writes it.
fn number(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20]; // u64::MAX has 20 digits
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[at..]);
}

/// A JSON string: serde_json's escapes (quote, backslash, `\b \f \n \r \t`, other C0 controls as
/// `\u00xx`), then those of [`crate::escape::write_json`] for the characters a terminal would act
/// on that serde_json leaves raw (DEL, C1 controls, bidi controls, line and paragraph separators),
/// as `\uxxxx`.
fn string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    // Bytes that may start something to escape: ASCII controls, quote, backslash, and the lead
    // bytes of what the terminal-safe escaping covers (one list, in `escape`).
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let special = b < 0x20 || b == b'"' || b == b'\\' || crate::escape::may_start_unsafe(b);
        if !special {
            i += 1;
            continue;
        }
        // The character at `i` (valid UTF-8: `s` is a str).
        let c = s[i..].chars().next().unwrap_or_default();
        let len = c.len_utf8();
        let short: Option<&[u8]> = match c {
            '"' => Some(b"\\\""),
            '\\' => Some(b"\\\\"),
            '\u{8}' => Some(b"\\b"),
            '\u{c}' => Some(b"\\f"),
            '\n' => Some(b"\\n"),
            '\r' => Some(b"\\r"),
            '\t' => Some(b"\\t"),
            _ => None,
        };
        let escape = short.is_some() || crate::escape::is_unsafe_char(c);
        if escape {
            out.extend_from_slice(&bytes[start..i]);
            match short {
                Some(e) => out.extend_from_slice(e),
                None => {
                    let v = u32::from(c);
                    out.extend_from_slice(b"\\u");
                    for shift in [12, 8, 4, 0] {
                        out.push(HEX[((v >> shift) & 0xf) as usize]);
                    }
                }
            }
            start = i + len;
        }
        i += len;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::{Connect, Direction, End, Observation, PacketKind};
    use crate::record::ProbeRecord;
    use crate::scan::ProbeResult;
    use proptest::prelude::*;
    use std::net::SocketAddr;
    use std::time::{Duration, SystemTime};

    use crate::report::probe::JsonRecord;

    fn serde_line(r: &ProbeResult) -> String {
        let mut out = Vec::new();
        crate::escape::write_json(&mut out, &JsonRecord::new(r)).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn fast_line(r: &ProbeResult) -> String {
        let mut out = Vec::new();
        assert!(write_line(&mut out, r));
        String::from_utf8(out).unwrap()
    }

    fn result(
        received: &[u8],
        connect: Connect,
        end: Option<End>,
        timings: Timings,
        label: &str,
    ) -> ProbeResult {
        let remote: SocketAddr = "127.0.0.1:22".parse().unwrap();
        let mut obs = Observation::failed_connect(remote, None, ProbeOrder::WaitForBanner, connect, 5);
        obs.end = end;
        obs.timings = timings;
        obs.received = bytes::Bytes::copy_from_slice(received);
        ProbeResult {
            target: label.to_string(),
            seq: 3,
            time: SystemTime::UNIX_EPOCH + Duration::from_micros(1_764_000_000_123_456),
            record: ProbeRecord::new(obs),
        }
    }

    #[test]
    fn strings_are_escaped_as_serde_and_the_terminal_escapes_do() {
        let every: String = (0..=0x3000u32).filter_map(char::from_u32).collect();
        for s in [every.as_str(), "", "plain", "\"\\\u{7f}\u{9b}\u{202e}\u{2028}ü\u{1f600}"] {
            let mut fast = Vec::new();
            string(&mut fast, s);
            let mut slow = Vec::new();
            crate::escape::write_json(&mut slow, &s).unwrap();
            assert_eq!(String::from_utf8(fast).unwrap(), String::from_utf8(slow).unwrap());
        }
    }

    #[test]
    fn a_trace_goes_to_serde() {
        let mut r = result(b"", Connect::Refused, None, Timings::default(), "x");
        r.record.observation.packets.push(crate::evidence::PacketRecord {
            t_us: 1,
            dir: Direction::Out,
            kind: PacketKind::Tcp { flags: Default::default(), options: Vec::new() },
            seq: 0,
            ack: 0,
            window: 0,
            ttl: 64,
            len: 0,
        });
        assert!(!write_line(&mut Vec::new(), &r));
    }

    proptest! {
        #[test]
        fn lines_are_serdes_byte_for_byte(
            received in prop_oneof![
                Just(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n".to_vec()),
                Just(b"Exceeded MaxStartups\r\n".to_vec()),
                Just(b"hello\r\nSSH-1.99-x \x1b[31m\xe2\x80\xae\r\n".to_vec()),
                Just(b"HTTP/1.1 400 Bad\r\n\0".to_vec()),
                proptest::collection::vec(any::<u8>(), 0..80),
                "[ -~\\t\\r\\n\u{80}-\u{3000}]{0,60}".prop_map(|s| s.into_bytes()),
                "(SSH-2.0-[!-~]{1,20}( [ -~\u{7f}-\u{2070}]{0,20})?\r\n)".prop_map(|s| s.into_bytes()),
                // Beyond RFC 4253's 255 bytes: a banner flagged over_rfc_length.
                "(SSH-2.0-[!-~]{250,400}\r\n)".prop_map(|s| s.into_bytes()),
            ],
            connect in prop_oneof![
                Just(Connect::Established),
                Just(Connect::Refused),
                Just(Connect::TimedOut),
                Just(Connect::Interrupted),
                "[ -~\u{80}-\u{2070}]{0,30}".prop_map(|detail| Connect::Unreachable { detail }),
                "[ -~]{0,30}".prop_map(|detail| Connect::LocalError { detail }),
            ],
            end in proptest::option::of(prop_oneof![
                Just(End::Fin), Just(End::Rst), Just(End::Timeout), Just(End::WeClosed), Just(End::ByteCap),
                Just(End::Interrupted)
            ]),
            t in proptest::array::uniform4(proptest::option::of(0u64..u64::MAX)),
            label in "[ -~\u{80}-\u{2070}]{0,30}",
            local in proptest::option::of(any::<SocketAddr>()),
            remote in any::<SocketAddr>(),
            send_first in any::<bool>(),
            sent_ident in any::<bool>(),
            seq in any::<u32>(),
            micros in 0u64..4_000_000_000_000_000,
        ) {
            let timings = Timings { connected: t[0], first_byte: t[1], ident: t[2], closed: t[3] };
            let mut r = result(&received, connect, end, timings, &label);
            let obs = &mut r.record.observation;
            obs.local = local;
            obs.remote = remote;
            obs.order = if send_first { ProbeOrder::SendFirst } else { ProbeOrder::WaitForBanner };
            obs.sent_ident = sent_ident;
            r.record = ProbeRecord::new(r.record.observation.clone());
            r.seq = seq;
            r.time = SystemTime::UNIX_EPOCH + Duration::from_micros(micros);
            prop_assert_eq!(fast_line(&r), serde_line(&r));
        }
    }
}
