//! Outcomes: what an [`Observation`] means, decided without I/O.
//!
//! Every probe ends in exactly one [`Outcome`]. Their snake_case names are the JSON contract and never
//! change meaning. [`classify`] is a pure function of the observation, so the same evidence always gives
//! the same outcome, whichever engine gathered it.
//!
//! The outcomes follow the order in which things can go wrong: the connect (`refused`, `unreachable`,
//! `connect_timeout`), then what arrived before any SSH- line (`reset_before_banner`,
//! `closed_before_banner`, `server_refusal`, `banner_timeout`, `not_ssh`), then the line itself
//! (`protocol_mismatch`, `banner`). Two say nothing about the server: `local_error` and
//! `interrupted`.

use crate::escape::{escape, quoted};
use crate::evidence::{Connect, End, Observation};
use crate::ident::{self, IdentLine, NotSshReason, Scan};
use serde::Serialize;
use std::fmt;

/// The classified result of one probe.
///
/// Its name has one source, strum's `snake_case` rule: [`Outcome::name`] reads it and serde writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, strum::IntoStaticStr)]
#[serde(into = "&'static str")]
#[strum(serialize_all = "snake_case")]
pub enum Outcome {
    /// The server sent an SSH-2 identification line: the exchange works.
    Banner,
    /// RST in answer to our SYN: nothing listening, or a firewall rejecting with a reset.
    Refused,
    /// An ICMP error answered the SYN: no route, or a firewall rejecting with ICMP.
    Unreachable,
    /// No answer to the SYN: a firewall dropping it, a host that is down, or a full accept queue.
    ConnectTimeout,
    /// Accepted, then reset before any byte (or within the ident line, whose bytes are kept): a
    /// silent refusal seen by a client that spoke first, or a server that died mid-line.
    ResetBeforeBanner,
    /// Accepted, then closed before any byte (or within the ident line): a silent refusal (TCP
    /// wrappers, dropbear's limits...).
    ClosedBeforeBanner,
    /// Accepted, a text line that is not an SSH ident, then a close: the server said no, and why.
    ServerRefusal,
    /// Accepted, but no complete ident before the banner deadline.
    BannerTimeout,
    /// Something that is not SSH answered.
    NotSsh,
    /// An SSH-1-only server (`SSH-1.5-`): no SSH-2 client can talk to it.
    ProtocolMismatch,
    /// The probe could not be made (no local port, too many open files...): says nothing of the server.
    LocalError,
    /// The run was stopped (Ctrl-C, SIGTERM) while the probe was under way: says nothing of the server.
    Interrupted,
}

impl Outcome {
    /// Every outcome, in the order of the module docs.
    pub const ALL: [Outcome; 12] = [
        Outcome::Banner,
        Outcome::Refused,
        Outcome::Unreachable,
        Outcome::ConnectTimeout,
        Outcome::ResetBeforeBanner,
        Outcome::ClosedBeforeBanner,
        Outcome::ServerRefusal,
        Outcome::BannerTimeout,
        Outcome::NotSsh,
        Outcome::ProtocolMismatch,
        Outcome::LocalError,
        Outcome::Interrupted,
    ];

    /// The stable snake_case name.
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// Whether the identification exchange worked (zmap's `success`).
    pub fn is_success(self) -> bool {
        self == Outcome::Banner
    }

    /// Whether the server accepted the TCP connection and then refused, silently or not: the
    /// `ssh_exchange_identification` family.
    pub(crate) fn is_refusal_after_accept(self) -> bool {
        matches!(self, Outcome::ResetBeforeBanner | Outcome::ClosedBeforeBanner | Outcome::ServerRefusal)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A refusal message we recognise, with what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum KnownRefusal {
    /// `Exceeded MaxStartups`: OpenSSH 8.2–9.7 dropped the connection at its listener under
    /// `MaxStartups` or `PerSourceMaxStartups`.
    ExceededMaxStartups,
    /// `Not allowed at this time`: OpenSSH 9.8+ dropped the connection at its listener under
    /// `MaxStartups`, `PerSourceMaxStartups` or `PerSourcePenalties` (the same bytes for all three).
    NotAllowedAtThisTime,
}

impl KnownRefusal {
    /// Every refusal we know.
    pub const ALL: [KnownRefusal; 2] =
        [KnownRefusal::ExceededMaxStartups, KnownRefusal::NotAllowedAtThisTime];

    /// The line the server sends, without its CR LF: the one place these bytes are written down
    /// (the classifier, the server model and the lab all use it).
    pub fn line(self) -> &'static str {
        match self {
            KnownRefusal::ExceededMaxStartups => "Exceeded MaxStartups",
            KnownRefusal::NotAllowedAtThisTime => "Not allowed at this time",
        }
    }

    /// Recognises a refusal line.
    pub fn recognise(message: &str) -> Option<KnownRefusal> {
        KnownRefusal::ALL.into_iter().find(|r| message.contains(r.line()))
    }

    /// The stable snake_case name.
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// What the message means, for people.
    pub fn meaning(self) -> &'static str {
        match self {
            KnownRefusal::ExceededMaxStartups => {
                "OpenSSH 8.2-9.7 listener drop: MaxStartups (too many unauthenticated connections) \
                 or PerSourceMaxStartups (too many from this address)"
            }
            KnownRefusal::NotAllowedAtThisTime => {
                "OpenSSH 9.8+ listener drop: MaxStartups, PerSourceMaxStartups or a \
                 PerSourcePenalties block on this address (the server sends the same line for all three)"
            }
        }
    }
}

/// Why something is judged not to be SSH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotSshCause {
    /// The bytes break the identification-line rules.
    Invalid(NotSshReason),
    /// The first line is another protocol's greeting or reply.
    Protocol(&'static str),
    /// Bytes that are not text.
    Binary,
    /// The byte cap stopped reading in text lines, before any SSH- line.
    NoIdentWithinCap {
        /// How many bytes were read: the cap.
        bytes: usize,
        /// How many complete lines they held.
        lines: usize,
    },
}

impl fmt::Display for NotSshCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotSshCause::Invalid(r) => write!(f, "{r}"),
            NotSshCause::Protocol(p) => write!(f, "{p} reply"),
            NotSshCause::Binary => f.write_str("binary data"),
            NotSshCause::NoIdentWithinCap { bytes, lines } => write!(
                f,
                "no SSH- line in the first {bytes} bytes ({lines} lines of text): reading stopped at the byte cap"
            ),
        }
    }
}

/// The outcome of one probe and the facts it rests on, beyond the observation itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Classification {
    /// The outcome.
    pub outcome: Outcome,
    /// The server's identification line (for `banner` and `protocol_mismatch`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub banner: Option<IdentLine>,
    /// What the server said instead of an ident (for `server_refusal`, `not_ssh`, `banner_timeout`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// A refusal message we recognise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<KnownRefusal>,
    /// Why the reply is not SSH.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_ssh: Option<NotSshCause>,
}

impl Classification {
    fn bare(outcome: Outcome) -> Classification {
        Classification { outcome, banner: None, message: None, refusal: None, not_ssh: None }
    }

    fn not_ssh(cause: NotSshCause, received: &[u8]) -> Classification {
        Classification {
            not_ssh: Some(cause),
            message: first_text(received),
            ..Classification::bare(Outcome::NotSsh)
        }
    }

    /// One line for people: what the server said, or what was wrong. What the server said is
    /// escaped ([`escape`]): the line is safe to print.
    pub fn detail(&self) -> String {
        match (&self.banner, &self.message, self.refusal, self.not_ssh) {
            (Some(b), _, _, _) => escape(&b.to_string()).into_owned(),
            (_, Some(m), Some(r), _) => format!("{}: {}", quoted(m), r.meaning()),
            (_, m, _, Some(c)) => match m {
                Some(m) => format!("{c}: {}", quoted(m)),
                None => c.to_string(),
            },
            (_, Some(m), _, _) => quoted(m),
            _ => String::new(),
        }
    }
}

/// How many lines of a non-SSH reply are kept as its message.
const MESSAGE_LINES: usize = 4;
/// How many characters of a non-SSH reply are kept as its message.
const MESSAGE_CHARS: usize = 200;

/// Decides the outcome of one probe from what it observed.
pub fn classify(obs: &Observation) -> Classification {
    classify_scanned(obs, obs.ident_scan.clone())
}

/// [`classify`], with the ident scan the engine already made of `obs.received` (`None`: scan
/// here). The scan must be of these very bytes, or of a prefix that gave more than `NeedMore`
/// ([`ident::scan`] never changes such an answer).
pub fn classify_scanned(obs: &Observation, scanned: Option<Scan>) -> Classification {
    match &obs.connect {
        Connect::Established => {}
        Connect::Refused => return Classification::bare(Outcome::Refused),
        Connect::Unreachable { .. } => return Classification::bare(Outcome::Unreachable),
        Connect::TimedOut => return Classification::bare(Outcome::ConnectTimeout),
        Connect::LocalError { .. } => return Classification::bare(Outcome::LocalError),
        Connect::Interrupted => return Classification::bare(Outcome::Interrupted),
    }
    let received = &obs.received[..];
    match scanned.unwrap_or_else(|| ident::scan(received)) {
        Scan::Ident(line) => {
            return Classification { banner: Some(line), ..Classification::bare(Outcome::Banner) }
        }
        Scan::Ssh1Only(line) => {
            return Classification { banner: Some(line), ..Classification::bare(Outcome::ProtocolMismatch) }
        }
        Scan::NotSsh(reason) => {
            let cause = if is_binary(received) { NotSshCause::Binary } else { NotSshCause::Invalid(reason) };
            return Classification::not_ssh(cause, received);
        }
        Scan::NeedMore => {}
    }
    // No SSH- line (yet): judge by what did arrive and how the connection ended.
    let end = obs.end.unwrap_or(End::Timeout);
    if received.is_empty() {
        return Classification::bare(match end {
            End::Rst => Outcome::ResetBeforeBanner,
            End::Fin | End::WeClosed => Outcome::ClosedBeforeBanner,
            End::Timeout | End::ByteCap => Outcome::BannerTimeout,
            End::Interrupted => Outcome::Interrupted,
        });
    }
    if is_binary(received) {
        return Classification::not_ssh(NotSshCause::Binary, received);
    }
    if let Some(protocol) = other_protocol(received) {
        return Classification::not_ssh(NotSshCause::Protocol(protocol), received);
    }
    let message = first_text(received);
    // Stopped by the run, not by the server: what came is kept, no verdict on it.
    if end == End::Interrupted {
        return Classification { message, ..Classification::bare(Outcome::Interrupted) };
    }
    // Cut off within its SSH- line (`SSH-2.0-Open`, then RST or FIN): the server started its
    // banner and died or dropped us; not a refusal message. The bytes are kept as the message.
    if in_ident_line(received) && matches!(end, End::Rst | End::Fin) {
        let outcome = if end == End::Rst { Outcome::ResetBeforeBanner } else { Outcome::ClosedBeforeBanner };
        return Classification { message, ..Classification::bare(outcome) };
    }
    match end {
        End::Fin | End::Rst | End::WeClosed => Classification {
            refusal: message.as_deref().and_then(KnownRefusal::recognise),
            message,
            ..Classification::bare(Outcome::ServerRefusal)
        },
        End::Timeout => Classification { message, ..Classification::bare(Outcome::BannerTimeout) },
        End::ByteCap => {
            let lines = received.iter().filter(|&&b| b == b'\n').count();
            Classification::not_ssh(NotSshCause::NoIdentWithinCap { bytes: received.len(), lines }, received)
        }
        End::Interrupted => Classification { message, ..Classification::bare(Outcome::Interrupted) },
    }
}

/// Whether `buf` ends within an SSH- line: its last, unterminated line starts `SSH-` (or is the
/// start of `SSH-`).
fn in_ident_line(buf: &[u8]) -> bool {
    let last = match buf.iter().rposition(|&b| b == b'\n') {
        Some(lf) => &buf[lf + 1..],
        None => buf,
    };
    !last.is_empty() && (last.starts_with(b"SSH-") || b"SSH-".starts_with(last))
}

/// Whether the bytes hold anything but text (controls other than TAB, CR, LF).
fn is_binary(buf: &[u8]) -> bool {
    buf.iter().any(|&b| (b < 0x20 && !matches!(b, b'\t' | b'\r' | b'\n')) || b == 0x7f)
}

/// Names the protocol whose greeting or reply `buf` starts with, if it is a well-known one.
fn other_protocol(buf: &[u8]) -> Option<&'static str> {
    const SIGNATURES: &[(&[u8], &str)] = &[
        (b"HTTP/", "HTTP"),
        (b"<!DOCTYPE", "HTML"),
        (b"<html", "HTML"),
        (b"220 ", "SMTP/FTP"),
        (b"220-", "SMTP/FTP"),
        (b"+OK", "POP3"),
        (b"* OK", "IMAP"),
        (b"RFB ", "VNC"),
    ];
    SIGNATURES.iter().find(|(sig, _)| buf.starts_with(sig)).map(|&(_, name)| name)
}

/// The first few text lines of `buf`, joined by ` | `, capped for display.
fn first_text(buf: &[u8]) -> Option<String> {
    let lines = ident::text_lines(buf, MESSAGE_LINES);
    if lines.is_empty() {
        return None;
    }
    let joined = lines.join(" | ");
    Some(match joined.char_indices().nth(MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &joined[..cut]),
        None => joined,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::{ProbeOrder, Timings};
    use bytes::Bytes;

    fn established(bytes: &'static [u8], end: End) -> Observation {
        Observation {
            remote: "127.0.0.1:22".parse().unwrap(),
            local: None,
            order: ProbeOrder::WaitForBanner,
            connect: Connect::Established,
            end: Some(end),
            timings: Timings::default(),
            received: Bytes::from_static(bytes),
            sent_ident: false,
            packets: Vec::new(),
            kexinit: None,
            ident_scan: None,
        }
    }

    fn outcome(bytes: &'static [u8], end: End) -> Outcome {
        classify(&established(bytes, end)).outcome
    }

    #[test]
    fn connect_failures() {
        let remote = "127.0.0.1:22".parse().unwrap();
        let order = ProbeOrder::WaitForBanner;
        let cases = [
            (Connect::Refused, Outcome::Refused),
            (Connect::TimedOut, Outcome::ConnectTimeout),
            (Connect::Unreachable { detail: "no route".into() }, Outcome::Unreachable),
            (Connect::LocalError { detail: "EMFILE".into() }, Outcome::LocalError),
        ];
        for (connect, want) in cases {
            let obs = Observation::failed_connect(remote, None, order, connect, 5);
            assert_eq!(classify(&obs).outcome, want);
        }
    }

    #[test]
    fn banners() {
        let c = classify(&established(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", End::WeClosed));
        assert_eq!(c.outcome, Outcome::Banner);
        assert_eq!(c.banner.unwrap().software, "OpenSSH_9.2p1");
        // A banner is a banner however the connection ended afterwards.
        assert_eq!(
            outcome(b"SSH-2.0-x\r\nInvalid SSH identification string.\r\n", End::Fin),
            Outcome::Banner
        );
        assert_eq!(outcome(b"SSH-1.5-Cisco-1.25\r\n", End::WeClosed), Outcome::ProtocolMismatch);
    }

    #[test]
    fn silent_refusals_depend_on_the_close() {
        assert_eq!(outcome(b"", End::Fin), Outcome::ClosedBeforeBanner);
        assert_eq!(outcome(b"", End::Rst), Outcome::ResetBeforeBanner);
        assert_eq!(outcome(b"", End::Timeout), Outcome::BannerTimeout);
    }

    #[test]
    fn openssh_refusal_messages_are_recognised() {
        let c = classify(&established(b"Exceeded MaxStartups\r\n", End::Fin));
        assert_eq!(c.outcome, Outcome::ServerRefusal);
        assert_eq!(c.message.as_deref(), Some("Exceeded MaxStartups"));
        assert_eq!(c.refusal, Some(KnownRefusal::ExceededMaxStartups));
        // The message arrives before the RST a send-first probe provokes.
        let c = classify(&established(b"Not allowed at this time\r\n", End::Rst));
        assert_eq!(c.outcome, Outcome::ServerRefusal);
        assert_eq!(c.refusal, Some(KnownRefusal::NotAllowedAtThisTime));
        // An unknown refusal keeps its words.
        let c = classify(&established(b"Go away\r\n", End::Fin));
        assert_eq!((c.outcome, c.refusal), (Outcome::ServerRefusal, None));
        assert_eq!(c.detail(), "\"Go away\"");
    }

    #[test]
    fn other_protocols_are_not_ssh() {
        let c = classify(&established(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", End::Fin));
        assert_eq!(c.outcome, Outcome::NotSsh);
        assert_eq!(c.not_ssh, Some(NotSshCause::Protocol("HTTP")));
        assert_eq!(c.message.as_deref(), Some("HTTP/1.1 400 Bad Request | Content-Length: 0"));
        assert_eq!(outcome(b"\x16\x03\x01\x00", End::Fin), Outcome::NotSsh);
        assert_eq!(outcome(b"220 mail ESMTP\r\n", End::Timeout), Outcome::NotSsh);
        assert_eq!(outcome(b"SSH-2.0-a\0\r\n", End::Fin), Outcome::NotSsh);
        assert_eq!(outcome(b"lots of text\r\n", End::ByteCap), Outcome::NotSsh);
    }

    #[test]
    fn partial_text_then_timeout_is_a_banner_timeout() {
        let c = classify(&established(b"SSH-2.0-Open", End::Timeout));
        assert_eq!(c.outcome, Outcome::BannerTimeout);
        assert_eq!(c.message.as_deref(), Some("SSH-2.0-Open"));
        let c = classify(&established(b"SSH-2.0-", End::Timeout));
        assert_eq!((c.outcome, c.message.as_deref()), (Outcome::BannerTimeout, Some("SSH-2.0-")));
    }

    #[test]
    fn an_ident_line_cut_by_a_close_is_no_refusal_message() {
        // Captured from a server killed mid-line: `SSH-2.0-Open`, then RST.
        let c = classify(&established(b"SSH-2.0-Open", End::Rst));
        assert_eq!((c.outcome, c.message.as_deref()), (Outcome::ResetBeforeBanner, Some("SSH-2.0-Open")));
        assert_eq!(c.detail(), "\"SSH-2.0-Open\"");
        let c = classify(&established(b"Welcome\r\nSSH-2.0-OpenSSH_9", End::Fin));
        assert_eq!(
            (c.outcome, c.message.as_deref()),
            (Outcome::ClosedBeforeBanner, Some("Welcome | SSH-2.0-OpenSSH_9"))
        );
        assert_eq!(outcome(b"SS", End::Rst), Outcome::ResetBeforeBanner);
        // A complete line that is not an ident is a message, however the close came.
        assert_eq!(outcome(b"SSH is not allowed here\r\n", End::Rst), Outcome::ServerRefusal);
        assert_eq!(outcome(b"Exceeded MaxStartups\r\n", End::Rst), Outcome::ServerRefusal);
        assert_eq!(outcome(b"Go away", End::Fin), Outcome::ServerRefusal);
    }

    #[test]
    fn the_byte_cap_in_pre_banner_text_says_so() {
        let text: &'static [u8] =
            Box::leak(b"Authorized use only. All access is logged.\r\n".repeat(2000).into_boxed_slice());
        let capped = &text[..8192];
        let c = classify(&established(capped, End::ByteCap));
        assert_eq!(c.outcome, Outcome::NotSsh);
        assert_eq!(c.not_ssh, Some(NotSshCause::NoIdentWithinCap { bytes: 8192, lines: 186 }));
        assert!(c.detail().starts_with("no SSH- line in the first 8192 bytes (186 lines of text): reading stopped at the byte cap: \"Authorized"), "{}", c.detail());
    }

    #[test]
    fn interrupted_probes_say_nothing_of_the_server() {
        let obs = Observation::failed_connect(
            "127.0.0.1:22".parse().unwrap(),
            None,
            ProbeOrder::WaitForBanner,
            Connect::Interrupted,
            5,
        );
        assert_eq!(classify(&obs), Classification::bare(Outcome::Interrupted));
        assert!(!Outcome::Interrupted.is_success() && !Outcome::Interrupted.is_refusal_after_accept());
    }

    #[test]
    fn messages_are_capped() {
        let long: &'static [u8] = Box::leak(vec![b'x'; 1000].into_boxed_slice());
        let c = classify(&established(long, End::Fin));
        assert_eq!(c.message.unwrap().chars().count(), MESSAGE_CHARS + 1);
    }

    #[test]
    fn names_are_stable_and_match_serde() {
        // The JSON contract: these names never change meaning.
        let names: Vec<&str> = Outcome::ALL.iter().map(|o| o.name()).collect();
        assert_eq!(
            names,
            [
                "banner",
                "refused",
                "unreachable",
                "connect_timeout",
                "reset_before_banner",
                "closed_before_banner",
                "server_refusal",
                "banner_timeout",
                "not_ssh",
                "protocol_mismatch",
                "local_error",
                "interrupted"
            ]
        );
        for o in Outcome::ALL {
            assert_eq!(serde_json::to_string(&o).unwrap(), format!("\"{}\"", o.name()));
        }
    }
}
