//! The SSH identification string (RFC 4253 §4.2), parsed without I/O.
//!
//! A server opens the SSH conversation by sending one line,
//!
//! ```text
//! SSH-protoversion-softwareversion SP comments CR LF
//! ```
//!
//! and it may send other text lines *before* it (TCP-wrappers `banners`, legal notices). Everything
//! sshprobe learns about an endpoint starts with the question "what arrived instead of, or before, that
//! line?", so this module answers exactly that for the bytes received so far:
//!
//! - [`Scan::NeedMore`]: no verdict yet, keep reading;
//! - [`Scan::Ident`]: an SSH-2 identification line (`SSH-2.0-` or the compatible `SSH-1.99-`);
//! - [`Scan::Ssh1Only`]: a well-formed line for SSH-1 only (`SSH-1.5-`), a protocol mismatch;
//! - [`Scan::NotSsh`]: something no SSH client would accept, with the reason.
//!
//! The limits are those of the OpenSSH client (8.0+, `kex_exchange_identification` in kex.c), which is
//! what users actually run into: every line, the SSH- line included, is at most 8192 bytes
//! (`SSH_MAX_BANNER_LEN`), at most 1024 lines may come before the SSH- line, no line may contain NUL,
//! and CR is only allowed right before LF. A bare LF is accepted as a line end (RFC 4253 asks servers
//! to tolerate it; OpenSSH does). RFC 4253 §4.2 caps the SSH- line at 255 bytes with its CR LF, but
//! OpenSSH does not enforce that: a longer line is an ident all the same, flagged
//! [`IdentLine::over_rfc_length`], because `ssh` proceeds to the key exchange with such a server.
//!
//! [`scan`] never panics and never allocates unless it found a line; it is fuzzed (`fuzz/`) and
//! property-tested.

use serde::Serialize;
use std::fmt;

/// The longest SSH- line RFC 4253 §4.2 allows, CR LF included. Longer lines are still idents (OpenSSH
/// accepts them up to [`MAX_PREBANNER_LINE`]), flagged [`IdentLine::over_rfc_length`]; what we send
/// stays within it.
pub const MAX_IDENT_LINE: usize = 255;
/// The longest line OpenSSH's client accepts, before the SSH- line and as the SSH- line (its
/// `SSH_MAX_BANNER_LEN`; we count the line end in it, so we are stricter by two bytes at most).
pub const MAX_PREBANNER_LINE: usize = 8192;
/// How many lines OpenSSH's client accepts before the SSH- line.
pub const MAX_PREBANNER_LINES: usize = 1024;

/// The protocol an identification line announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// `SSH-2.0-`.
    Ssh2,
    /// `SSH-1.99-`: a server that speaks both; SSH-2 clients treat it as SSH-2.
    Ssh1Compat,
    /// `SSH-1.x-` other than 1.99: SSH-1 only, which no modern client speaks.
    Ssh1Only,
    /// Any other version string (`SSH-3.0-`...): not one we know.
    Unknown,
}

impl Protocol {
    fn from_version(v: &str) -> Protocol {
        match v {
            "2.0" => Protocol::Ssh2,
            "1.99" => Protocol::Ssh1Compat,
            v if v.starts_with("1.") => Protocol::Ssh1Only,
            _ => Protocol::Unknown,
        }
    }
}

/// An identification line, as received, split into its parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdentLine {
    /// `protoversion`, e.g. `2.0`.
    pub proto: String,
    /// `softwareversion`, e.g. `OpenSSH_9.2p1`.
    pub software: String,
    /// Whatever follows the first space, e.g. `Debian-2+deb12u3`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comments: Option<String>,
    /// Text lines the server sent before its SSH- line, without their line ends.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub prebanner: Vec<String>,
    /// The SSH- line, with its line end, is longer than RFC 4253's 255 bytes. OpenSSH's client goes
    /// on with such a server (it allows 8192), other clients may not.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub over_rfc_length: bool,
    /// Offset just past the SSH- line's LF in the scanned buffer: bytes from here on belong to the
    /// binary protocol (dropbear sends its KEXINIT right away).
    #[serde(skip)]
    pub end_offset: usize,
}

impl IdentLine {
    /// What the protocol version announces.
    pub fn protocol(&self) -> Protocol {
        Protocol::from_version(&self.proto)
    }
}

impl fmt::Display for IdentLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SSH-{}-{}", self.proto, self.software)?;
        if let Some(c) = &self.comments {
            write!(f, " {c}")?;
        }
        Ok(())
    }
}

/// Why the bytes cannot be the start of an SSH conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotSshReason {
    /// A NUL byte in a line.
    Nul,
    /// A CR not followed by LF.
    BareCr,
    /// The SSH- line is longer than 8192 bytes (OpenSSH's limit for every line).
    IdentTooLong,
    /// A line before the SSH- line is longer than 8192 bytes.
    LineTooLong,
    /// More than 1024 lines before the SSH- line.
    TooManyLines,
    /// A line starting `SSH-` that is not `SSH-version-software`.
    MalformedIdent,
}

impl NotSshReason {
    /// A few words for people.
    pub fn describe(self) -> &'static str {
        match self {
            NotSshReason::Nul => "NUL byte in a line",
            NotSshReason::BareCr => "CR not followed by LF",
            NotSshReason::IdentTooLong => "SSH- line longer than 8192 bytes",
            NotSshReason::LineTooLong => "line longer than 8192 bytes",
            NotSshReason::TooManyLines => "more than 1024 lines before any SSH- line",
            NotSshReason::MalformedIdent => "SSH- line without protocol and software versions",
        }
    }
}

impl fmt::Display for NotSshReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// The verdict on the bytes received so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// No complete SSH- line yet and nothing wrong so far.
    NeedMore,
    /// An SSH-2 (or 1.99) identification line.
    Ident(IdentLine),
    /// A well-formed identification line for a protocol an SSH-2 client cannot speak.
    Ssh1Only(IdentLine),
    /// Bytes no SSH client would accept.
    NotSsh(NotSshReason),
}

/// Scans `buf`, the bytes a server sent from the start of the connection, for its identification line.
///
/// Call it again with a longer buffer after [`Scan::NeedMore`]; the answer for a prefix never
/// contradicts the answer for the whole (a `NotSsh` stays `NotSsh`, an ident stays the same ident).
pub fn scan(buf: &[u8]) -> Scan {
    let mut start = 0;
    let mut lines = 0usize;
    loop {
        let rest = &buf[start..];
        let is_ident = rest.len() >= 4 && &rest[..4] == b"SSH-";
        // OpenSSH's client holds the SSH- line to the same limit as any other line.
        let limit = MAX_PREBANNER_LINE;
        // Look for the line end within the limit, checking every byte on the way.
        let window = &rest[..rest.len().min(limit)];
        let mut line_end = None;
        for (i, &b) in window.iter().enumerate() {
            match b {
                0 => return Scan::NotSsh(NotSshReason::Nul),
                b'\n' => {
                    line_end = Some(i);
                    break;
                }
                b'\r' => match window.get(i + 1) {
                    Some(b'\n') => {}
                    Some(_) => return Scan::NotSsh(NotSshReason::BareCr),
                    // CR at the end of the window: if the window is the whole limit, the LF would
                    // make the line too long; otherwise wait for the next byte.
                    None if window.len() == limit => {}
                    None => return Scan::NeedMore,
                },
                _ => {}
            }
        }
        let Some(lf) = line_end else {
            // A prefix of "SSH-" could still become an ident line; anything else is judged by the
            // pre-banner limit, which is the larger one.
            if rest.len() >= limit {
                return Scan::NotSsh(if is_ident {
                    NotSshReason::IdentTooLong
                } else {
                    NotSshReason::LineTooLong
                });
            }
            return Scan::NeedMore;
        };
        let mut content = &rest[..lf];
        if content.last() == Some(&b'\r') {
            content = &content[..content.len() - 1];
        }
        if is_ident {
            return parse_ident_line(content, &buf[..start], start + lf + 1, lf + 1 > MAX_IDENT_LINE);
        }
        lines += 1;
        if lines > MAX_PREBANNER_LINES {
            return Scan::NotSsh(NotSshReason::TooManyLines);
        }
        start += lf + 1;
    }
}

/// Splits `SSH-proto-software[ comments]` (line end already removed); `prebanner` is every byte
/// before the line.
fn parse_ident_line(content: &[u8], prebanner: &[u8], end_offset: usize, over_rfc_length: bool) -> Scan {
    let body = &content[4..];
    let Some(dash) = body.iter().position(|&b| b == b'-') else {
        return Scan::NotSsh(NotSshReason::MalformedIdent);
    };
    let proto = &body[..dash];
    let after = &body[dash + 1..];
    let (software, comments) = match after.iter().position(|&b| b == b' ') {
        Some(sp) => (&after[..sp], Some(&after[sp + 1..])),
        None => (after, None),
    };
    if proto.is_empty() || software.is_empty() {
        return Scan::NotSsh(NotSshReason::MalformedIdent);
    }
    let line = IdentLine {
        proto: lossy(proto),
        software: lossy(software),
        comments: comments.map(lossy),
        prebanner: prebanner.split_inclusive(|&b| b == b'\n').map(strip_line_end).map(lossy).collect(),
        over_rfc_length,
        end_offset,
    };
    match line.protocol() {
        Protocol::Ssh1Only => Scan::Ssh1Only(line),
        _ => Scan::Ident(line),
    }
}

fn strip_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Text from the wire: bytes that are not UTF-8 kept as `\xNN`, not U+FFFD (two different bytes
/// must not read the same).
fn lossy(b: &[u8]) -> String {
    crate::escape::text_of_bytes(b)
}

/// The non-empty text lines at the start of `buf` (at most `max_lines`), line ends removed; a last
/// line without its line end counts too. For showing what a server said instead of an ident.
pub(crate) fn text_lines(buf: &[u8], max_lines: usize) -> Vec<String> {
    buf.split_inclusive(|&b| b == b'\n')
        .map(strip_line_end)
        .filter(|l| !l.is_empty())
        .take(max_lines)
        .map(lossy)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(buf: &[u8]) -> IdentLine {
        match scan(buf) {
            Scan::Ident(l) => l,
            other => panic!("expected an ident, got {other:?}"),
        }
    }

    #[test]
    fn openssh_debian_banner() {
        let l = ident(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n");
        assert_eq!(l.proto, "2.0");
        assert_eq!(l.software, "OpenSSH_9.2p1");
        assert_eq!(l.comments.as_deref(), Some("Debian-2+deb12u3"));
        assert!(l.prebanner.is_empty());
        assert_eq!(l.end_offset, 40);
        assert_eq!(l.protocol(), Protocol::Ssh2);
        assert_eq!(l.to_string(), "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3");
    }

    #[test]
    fn dropbear_banner_followed_by_kexinit() {
        let mut buf = b"SSH-2.0-dropbear_2022.83\r\n".to_vec();
        buf.extend_from_slice(&[0, 0, 1, 0x14, 0x0a, 0x14]); // binary packet start
        let l = ident(&buf);
        assert_eq!(l.software, "dropbear_2022.83");
        assert_eq!(l.comments, None);
        assert_eq!(l.end_offset, 26);
    }

    #[test]
    fn bare_lf_is_a_line_end() {
        let l = ident(b"SSH-2.0-Cisco-1.25\n");
        assert_eq!(l.software, "Cisco-1.25");
        assert_eq!(l.end_offset, 19);
    }

    #[test]
    fn need_more_until_the_line_ends() {
        let full = b"SSH-2.0-OpenSSH_9.2p1\r\n";
        for n in 0..full.len() {
            assert_eq!(scan(&full[..n]), Scan::NeedMore, "prefix of {n} bytes");
        }
        assert!(matches!(scan(full), Scan::Ident(_)));
    }

    #[test]
    fn prebanner_lines_are_kept() {
        let l = ident(b"Authorized use only\r\n\r\nContact ops\nSSH-2.0-OpenSSH_8.9\r\n");
        assert_eq!(l.prebanner, vec!["Authorized use only", "", "Contact ops"]);
        assert_eq!(l.software, "OpenSSH_8.9");
    }

    #[test]
    fn ssh_1_99_is_ssh2_and_1_5_is_not() {
        assert_eq!(ident(b"SSH-1.99-OpenSSH_3.9p1\r\n").protocol(), Protocol::Ssh1Compat);
        match scan(b"SSH-1.5-Cisco-1.25\r\n") {
            Scan::Ssh1Only(l) => assert_eq!(l.proto, "1.5"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refusal_messages_are_need_more_until_close() {
        // A server refusal is a text line and then a close: the scanner cannot know it is final.
        assert_eq!(scan(b"Exceeded MaxStartups\r\n"), Scan::NeedMore);
        assert_eq!(scan(b"Not allowed at this time\r\n"), Scan::NeedMore);
    }

    #[test]
    fn hostile_inputs() {
        assert_eq!(scan(b"SSH-2.0-a\0b\r\n"), Scan::NotSsh(NotSshReason::Nul));
        assert_eq!(scan(b"hello\rworld\n"), Scan::NotSsh(NotSshReason::BareCr));
        assert_eq!(scan(b"hello\r"), Scan::NeedMore);
        assert_eq!(scan(b"SSH-2.0\r\n"), Scan::NotSsh(NotSshReason::MalformedIdent));
        assert_eq!(scan(b"SSH--x\r\n"), Scan::NotSsh(NotSshReason::MalformedIdent));
        assert_eq!(scan(b"SSH-2.0-\r\n"), Scan::NotSsh(NotSshReason::MalformedIdent));

        let mut long = b"SSH-2.0-".to_vec();
        long.resize(MAX_PREBANNER_LINE, b'x');
        assert_eq!(scan(&long), Scan::NotSsh(NotSshReason::IdentTooLong));
        assert_eq!(scan(&long[..MAX_PREBANNER_LINE - 1]), Scan::NeedMore);

        let endless = vec![b'A'; MAX_PREBANNER_LINE];
        assert_eq!(scan(&endless), Scan::NotSsh(NotSshReason::LineTooLong));
        assert_eq!(scan(&endless[..MAX_PREBANNER_LINE - 1]), Scan::NeedMore);

        let many = b"x\n".repeat(MAX_PREBANNER_LINES + 1);
        assert_eq!(scan(&many), Scan::NotSsh(NotSshReason::TooManyLines));
        let enough = b"x\n".repeat(MAX_PREBANNER_LINES);
        assert_eq!(scan(&enough), Scan::NeedMore);
    }

    #[test]
    fn the_rfc_length_is_a_flag_not_a_refusal() {
        // 253 bytes + CR LF = 255: the longest line RFC 4253 allows.
        let mut ok = b"SSH-2.0-".to_vec();
        ok.resize(MAX_IDENT_LINE - 2, b'x');
        ok.extend_from_slice(b"\r\n");
        assert!(!ident(&ok).over_rfc_length);
        // One byte more, and a 400-byte line (OpenSSH's client goes on to KEXINIT with both).
        for len in [MAX_IDENT_LINE - 1, 398] {
            let mut long = b"SSH-2.0-".to_vec();
            long.resize(len, b'X');
            long.extend_from_slice(b"\r\n");
            let l = ident(&long);
            assert!(l.over_rfc_length, "{len}");
            assert_eq!(l.software.len(), len - 8);
            assert_eq!(l.end_offset, len + 2);
        }
        // The longest line OpenSSH takes, LF included.
        let mut max = b"SSH-2.0-".to_vec();
        max.resize(MAX_PREBANNER_LINE - 1, b'X');
        max.push(b'\n');
        assert!(ident(&max).over_rfc_length);
    }

    #[test]
    fn http_reply_waits_for_more_then_is_judged_by_caller() {
        // Text lines that are not SSH are not invalid by themselves (they may be a pre-banner).
        assert_eq!(scan(b"HTTP/1.1 400 Bad Request\r\n\r\n"), Scan::NeedMore);
    }

    #[test]
    fn text_lines_for_display() {
        assert_eq!(text_lines(b"Exceeded MaxStartups\r\n", 4), vec!["Exceeded MaxStartups"]);
        assert_eq!(text_lines(b"a\r\n\r\nb\nc", 2), vec!["a", "b"]);
        assert_eq!(text_lines(b"a\nc", 5), vec!["a", "c"]);
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn never_panics(buf in proptest::collection::vec(any::<u8>(), 0..600)) {
                let _ = scan(&buf);
            }

            #[test]
            fn never_panics_on_texty_input(s in "(SSH-|[a-zA-Z .\r\n\0-])*") {
                let _ = scan(s.as_bytes());
            }

            #[test]
            fn a_prefix_never_contradicts_the_whole(buf in proptest::collection::vec(
                prop_oneof![Just(b'S'), Just(b'H'), Just(b'-'), Just(b'2'), Just(b'.'), Just(b'\r'),
                            Just(b'\n'), Just(b' '), Just(0u8), any::<u8>()], 0..300)) {
                let whole = scan(&buf);
                for n in 0..buf.len() {
                    match scan(&buf[..n]) {
                        Scan::NeedMore => {}
                        verdict => prop_assert_eq!(&verdict, &whole, "prefix {}", n),
                    }
                }
            }

            #[test]
            fn any_valid_line_round_trips(proto in "2\\.0|1\\.99",
                                          sw in "[!-,.-~]{1,40}",
                                          comments in proptest::option::of("[ -~]{0,40}"),
                                          pre in proptest::collection::vec("[ -~&&[^S]][ -~]{0,30}", 0..4)) {
                let mut buf = Vec::new();
                for p in &pre { buf.extend_from_slice(p.as_bytes()); buf.extend_from_slice(b"\r\n"); }
                let mut line = format!("SSH-{proto}-{sw}");
                if let Some(c) = &comments { line.push(' '); line.push_str(c); }
                buf.extend_from_slice(line.as_bytes());
                buf.extend_from_slice(b"\r\n");
                match scan(&buf) {
                    Scan::Ident(l) => {
                        prop_assert_eq!(l.to_string(), line);
                        prop_assert_eq!(l.prebanner, pre);
                        prop_assert_eq!(l.end_offset, buf.len());
                    }
                    other => prop_assert!(false, "{:?}", other),
                }
            }
        }
    }
}
