//! What the server logged: sshd's and dropbear's log lines as typed events.
//!
//! On the wire, several causes look alike (docs/facts.md §3): OpenSSH 9.8+ sends the same bytes for a
//! `MaxStartups` drop and a penalty; dropbear drops over its limits with zero bytes, like a
//! forwarder with no backend. The server's log tells them apart, and names the setting: `diagnose
//! --server-log FILE` reads what the server appended while it probed, and this module turns each
//! line into a [`LogLine`]: when (if the format says), which process, and a [`LogEvent`].
//!
//! Three formats are read, recognised line by line (a file may mix them, e.g. after rotation):
//!
//! | format | example |
//! |---|---|
//! | syslog / `auth.log` / `secure` (rsyslog's traditional format) | `Dec  2 04:50:01 host sshd[123]: msg` |
//! | rsyslog with RFC 3339 timestamps (Debian 12's default) | `2026-12-02T04:50:01.123456+00:00 host sshd[123]: msg` |
//! | `journalctl -u ssh` (`short`, `short-iso`) | `Dec 02 04:50:01 host sshd[123]: msg`, `2026-12-02T04:50:01+0000 host sshd[123]: msg` |
//! | `sshd -E FILE` (and `-e`) | `msg` (no time, no process) |
//! | `dropbear -E` (its standard error) | `[123] Dec 02 04:50:01 msg` |
//!
//! Every line becomes a [`LogLine`]; a message this module does not know is
//! [`LogEvent::Unrecognised`], never dropped: near a probe's time it is shown to the user as it is.
//! The fixtures under `tests/fixtures/serverlog/` were captured from the real servers (OpenSSH 9.2
//! and 10.0, dropbear 2022.83); `capture.py` there says how.
//!
//! [`LogTail`] is the only I/O: it reads what is appended to a file after it was opened (or what
//! arrives on standard input), so that old lines are never mistaken for this run's.

use serde::Serialize;
use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// When a line was logged, as far as its format says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Timestamp {
    /// The year, when the format has one (RFC 3339, `short-iso`); traditional syslog has none.
    pub year: Option<i32>,
    /// 1-12.
    pub month: u8,
    /// 1-31.
    pub day: u8,
    /// 0-23.
    pub hour: u8,
    /// 0-59.
    pub minute: u8,
    /// 0-60.
    pub second: u8,
    /// Fraction of the second, in µs (0 when the format has none).
    pub micros: u32,
    /// Offset from UTC in seconds, when the format has one; traditional syslog is in the logging
    /// host's local time.
    pub utc_offset_s: Option<i32>,
}

impl Timestamp {
    /// Microseconds since the Unix epoch, taking the year and the UTC offset from the line when it
    /// has them, else from `year` and `utc_offset_s` (the reader's guess: this year, local time).
    pub(crate) fn unix_micros(&self, year: i32, utc_offset_s: i32) -> i64 {
        let year = self.year.unwrap_or(year);
        let offset = self.utc_offset_s.unwrap_or(utc_offset_s);
        let days = days_from_civil(year, self.month, self.day);
        let seconds = days * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
            - i64::from(offset);
        seconds * 1_000_000 + i64::from(self.micros)
    }
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard Hinnant's algorithm).
fn days_from_civil(year: i32, month: u8, day: u8) -> i64 {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Which format a line was in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// `Dec  2 04:50:01 host prog[pid]: msg` (syslog files and `journalctl` `short`).
    Syslog,
    /// `2026-12-02T04:50:01.123456+00:00 host prog[pid]: msg` (rsyslog RFC 3339, `journalctl`
    /// `short-iso`).
    Iso,
    /// `[pid] Dec 02 04:50:01 msg` (dropbear's standard error).
    DropbearStderr,
    /// `msg` alone (`sshd -E` / `-e`).
    Bare,
    /// fail2ban's own log: `2026-12-03 09:14:16,366 fail2ban.actions [906]: NOTICE  [sshd] Ban A`.
    Fail2ban,
}

/// One line of a server's log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogLine {
    /// Its format.
    pub format: LogFormat,
    /// When, if the format says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<Timestamp>,
    /// The host that logged it (syslog and journal formats).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The program: `sshd`, `sshd-session` (OpenSSH 9.8+'s per-connection process), `dropbear`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// Its process id, when the line names one (libwrap's own lines under `sshd -E` do not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The message's level, from sshd's prefix (`error:`, `fatal:`, `debug1:`...), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// The message, after the prefixes: what to cite.
    pub message: String,
    /// What it means.
    pub event: LogEvent,
    /// Logged before diagnose started (read from the recent past by [`LogTail::read_lines`]), not
    /// while it probed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub before_run: bool,
}

/// Why sshd dropped a connection at its listener, as its `drop connection` line says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "detail")]
pub enum DropReason {
    /// `past MaxStartups` (OpenSSH 8.2-9.9): the global `MaxStartups` or, logged alike,
    /// `PerSourceMaxStartups` (8.5+).
    PastMaxStartups,
    /// `Maxstartups` (OpenSSH 10): the same two limits, logged alike.
    Maxstartups,
    /// `penalty: <reason>` (OpenSSH 9.8+): the source address is serving a `PerSourcePenalties`
    /// penalty, e.g. `connections without attempting authentication`.
    Penalty(String),
    /// Another wording.
    Other(String),
}

/// What a log line means. Its name ([`LogEvent::name`], the JSON's `event`) comes from strum's and
/// serde's one `snake_case` rule, never from a table of strings.
///
/// Its kind without the details is a [`LogEventKind`] (derived by strum): what evidence keeps and
/// reports match on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, strum::IntoStaticStr, strum::EnumDiscriminants)]
#[serde(rename_all = "snake_case", tag = "event")]
#[strum(serialize_all = "snake_case")]
#[strum_discriminants(
    name(LogEventKind),
    derive(Serialize, strum::IntoStaticStr, Hash),
    serde(rename_all = "snake_case"),
    strum(serialize_all = "snake_case")
)]
pub enum LogEvent {
    /// sshd's listener dropped a connection before forking for it:
    /// `drop connection #N from [A]:P on [B]:Q past MaxStartups` (or `Maxstartups`, `penalty: ...`).
    Drop {
        /// How many unauthenticated connections the server counted (`#N`).
        count: u32,
        /// The client.
        from: SocketAddr,
        /// The server's address.
        on: SocketAddr,
        /// Why.
        reason: DropReason,
    },
    /// `beginning MaxStartups throttling`: the first drop of a burst (OpenSSH 8.2-9.9).
    ThrottlingBegins,
    /// `exited MaxStartups throttling after 00:00:01, 4 connections dropped`.
    ThrottlingEnds {
        /// How long throttling lasted, as logged.
        after: String,
        /// Connections dropped meanwhile.
        dropped: u32,
    },
    /// `Maxstartups logging rate-limited: additional N connections dropped` (OpenSSH 10; also
    /// `PerSourcePenalties logging rate-limited: ...`): drops not logged one by one.
    DropsNotLogged {
        /// Whose drops: `MaxStartups`, `PerSourcePenalties` (as logged, capitalisation aside).
        limit: String,
        /// How many.
        additional: u32,
    },
    /// `srclimit_penalise: ...` (OpenSSH 9.8+, `LogLevel VERBOSE`): a source earning or serving a
    /// `PerSourcePenalties` penalty.
    Penalise {
        /// The address block, e.g. `127.0.0.1/32`.
        block: String,
        /// Seconds of penalty.
        seconds: u32,
        /// Whether the penalty now blocks the source (`activating`), rather than being recorded
        /// (`deferred`).
        active: bool,
        /// Why, e.g. `connections without attempting authentication`.
        reason: String,
    },
    /// libwrap's own line: `refused connect from HOST (ADDR)` (hosts.deny matched).
    WrapperRefusedConnect {
        /// The client as libwrap names it.
        host: String,
        /// Its address.
        #[serde(skip_serializing_if = "Option::is_none")]
        addr: Option<IpAddr>,
    },
    /// sshd's `Connection refused by tcp wrapper` (logged at `DEBUG1` only).
    WrapperRefused,
    /// `Unable to load host key: PATH`: a session process cannot start (OpenSSH before 9.8 loads
    /// the keys in every re-executed child).
    HostKeyUnloadable {
        /// The key file.
        path: String,
    },
    /// `sshd: no hostkeys available -- exiting.`
    NoHostKeys,
    /// A `fatal:` line: the process logging it exits.
    Fatal {
        /// What it said.
        text: String,
    },
    /// `Connection from A port P on B port Q` (OpenSSH, `LogLevel VERBOSE`): a session process
    /// started for the client.
    ConnectionFrom {
        /// The client.
        from: SocketAddr,
        /// The server's address.
        on: SocketAddr,
    },
    /// `Connection closed by A port P` / `Connection reset by A port P` (optionally `[preauth]`).
    ConnectionClosed {
        /// The client.
        from: SocketAddr,
        /// `reset` rather than `closed`.
        reset: bool,
    },
    /// `Timeout before authentication for A port P` or `... for connection from A to B`
    /// (LoginGraceTime expired).
    GraceTimeout {
        /// The client's address, when the line names one.
        #[serde(skip_serializing_if = "Option::is_none")]
        from: Option<IpAddr>,
    },
    /// `Server listening on A port P.`: sshd (re)started.
    Listening {
        /// The address.
        on: SocketAddr,
    },
    /// dropbear: `Child connection from A:P`.
    DropbearConnection {
        /// The client.
        from: SocketAddr,
    },
    /// dropbear: `Exit before auth from <A:P>: REASON`.
    DropbearExitBeforeAuth {
        /// The client.
        from: SocketAddr,
        /// Why, e.g. `Exited normally`.
        reason: String,
    },
    /// A ban-after-failures daemon blocked an address: fail2ban's `[sshd] Ban A` (or `Restore Ban
    /// A` at its restart), sshguard's `Blocking "A/32" for 120 secs (3 attacks in 1 secs, ...)`.
    Banned {
        /// The address (the block's first address for sshguard's `A/NN`).
        addr: IpAddr,
        /// The block's prefix length, when the line names a block (sshguard).
        #[serde(skip_serializing_if = "Option::is_none")]
        prefix: Option<u8>,
        /// fail2ban's jail (`sshd`), when the line names one.
        #[serde(skip_serializing_if = "Option::is_none")]
        jail: Option<String>,
        /// For how long, when the line says (sshguard: `for N secs`; `None` for `forever` too).
        #[serde(skip_serializing_if = "Option::is_none")]
        seconds: Option<u64>,
        /// fail2ban re-applying a ban it had before it restarted (`Restore Ban`).
        restored: bool,
    },
    /// fail2ban lifted a ban: `[sshd] Unban A`.
    Unbanned {
        /// The address.
        addr: IpAddr,
        /// The jail, when named.
        #[serde(skip_serializing_if = "Option::is_none")]
        jail: Option<String>,
    },
    /// A failure counted towards a ban: fail2ban's `[sshd] Found A - 2026-12-03 09:14:16`,
    /// sshguard's `Attack from "A" on service 100 with danger 10.`
    FailureCounted {
        /// The address.
        addr: IpAddr,
        /// The jail, when named.
        #[serde(skip_serializing_if = "Option::is_none")]
        jail: Option<String>,
    },
    /// fail2ban found a failure from an address it has banned already: `[sshd] A already banned`.
    AlreadyBanned {
        /// The address.
        addr: IpAddr,
        /// The jail, when named.
        #[serde(skip_serializing_if = "Option::is_none")]
        jail: Option<String>,
    },
    /// Anything else, kept as it was.
    Unrecognised {
        /// The message.
        text: String,
    },
}

impl LogEvent {
    /// The event's name, as JSON and evidence cite it: `drop`, `penalise`, `banned`...
    pub fn name(&self) -> &'static str {
        self.into()
    }

    /// The event's kind, without its details.
    pub fn kind(&self) -> LogEventKind {
        self.into()
    }

    /// The client address the event is about, when it names one: a probe's (by its address and
    /// port), a banned or penalised address, a wrappers refusal's. How lines of the recent past,
    /// which no probe's port can match, are matched to the addresses diagnose probes from.
    pub fn address(&self) -> Option<IpAddr> {
        match self {
            LogEvent::Banned { addr, .. }
            | LogEvent::Unbanned { addr, .. }
            | LogEvent::FailureCounted { addr, .. }
            | LogEvent::AlreadyBanned { addr, .. } => Some(*addr),
            LogEvent::WrapperRefusedConnect { addr, .. } => *addr,
            LogEvent::GraceTimeout { from } => *from,
            LogEvent::Penalise { block, .. } => block.split('/').next().and_then(|a| a.parse().ok()),
            other => other.client().map(|c| c.ip()),
        }
    }

    /// Whether the event concerns `ip`: it names `ip`, or a block (`A/NN`) that holds it.
    pub(crate) fn is_about(&self, ip: IpAddr) -> bool {
        let block = match self {
            LogEvent::Banned { addr, prefix: Some(p), .. } => Some((*addr, *p)),
            LogEvent::Penalise { block, .. } => block
                .split_once('/')
                .and_then(|(a, p)| Some((a.parse::<IpAddr>().ok()?, p.parse::<u8>().ok()?))),
            _ => None,
        };
        match block {
            Some((net, prefix)) => in_block(ip, net, prefix),
            None => self.address() == Some(ip),
        }
    }

    /// The client's address and port, when the event names them: how a line is matched to a probe.
    pub fn client(&self) -> Option<SocketAddr> {
        match self {
            LogEvent::Drop { from, .. }
            | LogEvent::ConnectionFrom { from, .. }
            | LogEvent::ConnectionClosed { from, .. }
            | LogEvent::DropbearConnection { from }
            | LogEvent::DropbearExitBeforeAuth { from, .. } => Some(*from),
            _ => None,
        }
    }

    /// Whether `diagnose` cares: the line explains a refusal (a drop, a penalty, a wrappers denial,
    /// a server that cannot start sessions), rather than tracing ordinary connections.
    pub(crate) fn is_evidence(&self) -> bool {
        !matches!(
            self,
            LogEvent::ConnectionFrom { .. }
                | LogEvent::ConnectionClosed { .. }
                | LogEvent::Listening { .. }
                | LogEvent::DropbearConnection { .. }
                | LogEvent::DropbearExitBeforeAuth { .. }
                | LogEvent::Unrecognised { .. }
        )
    }
}

impl fmt::Display for LogLine {
    /// The line as cited to a user: `[time] program[pid]: message`, control characters escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(t) = self.time {
            write!(f, "{:02}-{:02} {:02}:{:02}:{:02} ", t.month, t.day, t.hour, t.minute, t.second)?;
        }
        if let Some(p) = &self.program {
            write!(f, "{}", escape(p))?;
            if let Some(pid) = self.pid {
                write!(f, "[{pid}]")?;
            }
            write!(f, ": ")?;
        }
        if let Some(level) = &self.level {
            write!(f, "{}: ", escape(level))?;
        }
        write!(f, "{}", escape(&self.message))
    }
}

/// Whether `ip` lies in `net/prefix`.
fn in_block(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix.min(32))).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix.min(128))).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// A log's text is written by others (and quotes what clients sent): escaped for a terminal.
fn escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] })
        .collect()
}

/// Parses every line of `text` (empty lines are skipped).
pub(crate) fn parse_log(text: &str) -> Vec<LogLine> {
    text.lines().filter(|l| !l.trim().is_empty()).map(parse_line).collect()
}

/// Parses one line, in whichever of the formats it is.
pub(crate) fn parse_line(line: &str) -> LogLine {
    let line = line.trim_end_matches(['\r', '\n']);
    if let Some(parsed) = fail2ban_line(line) {
        return parsed;
    }
    if let Some((time, rest)) = iso_time(line) {
        return with_header(LogFormat::Iso, Some(time), rest, line);
    }
    if let Some((time, rest)) = syslog_time(line) {
        return with_header(LogFormat::Syslog, Some(time), rest, line);
    }
    if let Some((pid, time, message)) = dropbear_stderr(line) {
        let mut parsed = from_message(LogFormat::DropbearStderr, message);
        parsed.time = Some(time);
        parsed.pid = Some(pid);
        return parsed;
    }
    from_message(LogFormat::Bare, line)
}

/// After a timestamp: `host program[pid]: message`. A line that does not continue so is kept
/// whole, unrecognised.
fn with_header(format: LogFormat, time: Option<Timestamp>, rest: &str, line: &str) -> LogLine {
    let header = rest.split_once(' ').and_then(|(host, rest)| {
        let (tag, message) = rest.split_once(": ").or_else(|| rest.strip_suffix(':').map(|t| (t, "")))?;
        let (program, pid) = match tag.strip_suffix(']').and_then(|t| t.split_once('[')) {
            Some((program, pid)) => (program, Some(pid.parse::<u32>().ok()?)),
            None => (tag, None),
        };
        (!program.is_empty() && !program.contains(' ')).then_some((host, program, pid, message))
    });
    match header {
        Some((host, program, pid, message)) => {
            let mut parsed = from_message(format, message);
            parsed.time = time;
            parsed.host = Some(host.to_string());
            parsed.program = Some(program.to_string());
            parsed.pid = pid;
            parsed
        }
        None => {
            let mut parsed = from_message(format, line);
            parsed.event = LogEvent::Unrecognised { text: line.to_string() };
            parsed.time = time;
            parsed
        }
    }
}

/// A bare message: its level prefix, then its meaning.
fn from_message(format: LogFormat, message: &str) -> LogLine {
    let (level, text) = match message.split_once(": ") {
        Some((level, text)) if is_level(level) => (Some(level.to_string()), text),
        _ => (None, message),
    };
    let event = match level.as_deref() {
        Some("fatal") => LogEvent::Fatal { text: text.to_string() },
        _ => event(text),
    };
    LogLine {
        format,
        time: None,
        host: None,
        program: None,
        pid: None,
        level,
        message: text.to_string(),
        event,
        before_run: false,
    }
}

fn is_level(word: &str) -> bool {
    matches!(word, "fatal" | "error" | "verbose" | "debug1" | "debug2" | "debug3" | "debug")
}

/// What a message (prefixes removed) means.
fn event(text: &str) -> LogEvent {
    let text_no_preauth = text.strip_suffix(" [preauth]").unwrap_or(text);
    let unrecognised = || LogEvent::Unrecognised { text: text.to_string() };
    if let Some(rest) = text.strip_prefix("drop connection #") {
        return drop_line(rest).unwrap_or_else(unrecognised);
    }
    if text == "beginning MaxStartups throttling" {
        return LogEvent::ThrottlingBegins;
    }
    if let Some(rest) = text.strip_prefix("exited MaxStartups throttling after ") {
        // `00:00:01, 4 connections dropped`
        let parsed = rest.split_once(", ").and_then(|(after, n)| {
            let dropped = n.strip_suffix(" connections dropped")?.parse().ok()?;
            Some(LogEvent::ThrottlingEnds { after: after.to_string(), dropped })
        });
        return parsed.unwrap_or_else(unrecognised);
    }
    if let Some((limit, rest)) = text.split_once(" logging rate-limited: additional ") {
        if let Some(n) = rest.strip_suffix(" connections dropped").and_then(|n| n.parse().ok()) {
            return LogEvent::DropsNotLogged { limit: limit.to_string(), additional: n };
        }
    }
    if let Some(rest) = text.strip_prefix("srclimit_penalise: ") {
        return penalise(rest).unwrap_or_else(unrecognised);
    }
    if let Some(rest) = text.strip_prefix("refused connect from ") {
        // `HOST (ADDR)`, or `HOST` alone.
        let (host, addr) = match rest.strip_suffix(')').and_then(|r| r.rsplit_once(" (")) {
            Some((host, addr)) => (host, addr.parse().ok()),
            None => (rest, None),
        };
        return LogEvent::WrapperRefusedConnect { host: host.to_string(), addr };
    }
    if text == "Connection refused by tcp wrapper" {
        return LogEvent::WrapperRefused;
    }
    if let Some(path) = text.strip_prefix("Unable to load host key: ") {
        return LogEvent::HostKeyUnloadable { path: path.to_string() };
    }
    if text.ends_with("no hostkeys available -- exiting.") {
        return LogEvent::NoHostKeys;
    }
    if let Some(rest) = text_no_preauth.strip_prefix("Connection from ") {
        // `A port P on B port Q rdomain ""`
        let parsed = rest.split_once(" on ").and_then(|(from, on)| {
            let on = on.split(" rdomain").next()?;
            Some(LogEvent::ConnectionFrom { from: word_port(from)?, on: word_port(on)? })
        });
        return parsed.unwrap_or_else(unrecognised);
    }
    for (prefix, reset) in [("Connection closed by ", false), ("Connection reset by ", true)] {
        if let Some(rest) = text_no_preauth.strip_prefix(prefix) {
            // `A port P`, or `authenticating user U A port P`, `invalid user U A port P`.
            let words: Vec<&str> = rest.split(' ').collect();
            if let [.., addr, "port", port] = words[..] {
                if let Some(from) = word_port(&format!("{addr} port {port}")) {
                    return LogEvent::ConnectionClosed { from, reset };
                }
            }
            return unrecognised();
        }
    }
    if let Some(rest) = text_no_preauth.strip_prefix("Timeout before authentication for ") {
        // `A port P` (before 10.x) or `connection from A to B` (10.x).
        let addr = rest.strip_prefix("connection from ").unwrap_or(rest);
        let from = addr.split(' ').next().and_then(|a| a.parse().ok());
        return LogEvent::GraceTimeout { from };
    }
    if let Some(rest) = text.strip_prefix("Server listening on ") {
        return rest
            .strip_suffix('.')
            .and_then(word_port)
            .map_or_else(unrecognised, |on| LogEvent::Listening { on });
    }
    if let Some(rest) = text.strip_prefix("Blocking ") {
        return sshguard_block(rest).unwrap_or_else(unrecognised);
    }
    if let Some(rest) = text.strip_prefix("Attack from ") {
        // `"A" on service 100 with danger 10.` (older releases: no quotes)
        let addr = rest.split(' ').next().map(|a| a.trim_matches('"')).and_then(|a| a.parse().ok());
        return addr.map_or_else(unrecognised, |addr| LogEvent::FailureCounted { addr, jail: None });
    }
    if let Some(rest) = text.strip_prefix("Child connection from ") {
        return colon_port(rest).map_or_else(unrecognised, |from| LogEvent::DropbearConnection { from });
    }
    if let Some(rest) = text.strip_prefix("Exit before auth from <") {
        // `A:P>: REASON`
        let parsed = rest.split_once(">: ").and_then(|(from, reason)| {
            Some(LogEvent::DropbearExitBeforeAuth { from: colon_port(from)?, reason: reason.to_string() })
        });
        return parsed.unwrap_or_else(unrecognised);
    }
    unrecognised()
}

/// After sshguard's `Blocking `: `"A/32" for 120 secs (3 attacks in 1 secs, after 1 abuses over 1
/// secs.)`, `A for 1680 secs (...)` (older releases), `"A/32" forever (...)`.
fn sshguard_block(rest: &str) -> Option<LogEvent> {
    let (target, rest) = rest.split_once(' ')?;
    let target = target.trim_matches('"');
    let (addr, prefix) = match target.split_once('/') {
        Some((a, p)) => (a.parse().ok()?, Some(p.parse().ok()?)),
        None => (target.parse().ok()?, None),
    };
    let seconds = rest.strip_prefix("for ").and_then(|r| r.split(' ').next()).and_then(|n| n.parse().ok());
    if seconds.is_none() && !rest.starts_with("forever") {
        return None;
    }
    Some(LogEvent::Banned { addr, prefix, jail: None, seconds, restored: false })
}

/// fail2ban's own log line: `2026-12-03 09:14:16,366 fail2ban.actions        [906]: NOTICE  [sshd]
/// Ban 127.0.14.1` (the date in the local time of the host; a comma before the milliseconds).
fn fail2ban_line(line: &str) -> Option<LogLine> {
    let b = line.as_bytes();
    if b.len() < 24 || b[4] != b'-' || b[7] != b'-' || b[10] != b' ' || b[19] != b',' {
        return None;
    }
    let (hour, minute, second) = clock(line.get(11..19)?)?;
    let time = Timestamp {
        year: Some(line.get(..4)?.parse().ok()?),
        month: line.get(5..7)?.parse().ok()?,
        day: line.get(8..10)?.parse().ok()?,
        hour,
        minute,
        second,
        micros: line.get(20..23)?.parse::<u32>().ok()? * 1000,
        utc_offset_s: None,
    };
    let rest = line.get(23..)?.trim_start();
    let (component, rest) = rest.split_once(' ')?;
    if !component.starts_with("fail2ban") || !valid(&time) {
        return None;
    }
    let (pid, rest) = rest.trim_start().strip_prefix('[')?.split_once("]: ")?;
    let (level, message) = rest.split_once(' ')?;
    let message = message.trim_start();
    let (jail, text) = match message.strip_prefix('[').and_then(|m| m.split_once("] ")) {
        Some((jail, text)) => (Some(jail.to_string()), text),
        None => (None, message),
    };
    let event = fail2ban_event(jail.clone(), text)
        .unwrap_or_else(|| LogEvent::Unrecognised { text: message.to_string() });
    Some(LogLine {
        format: LogFormat::Fail2ban,
        time: Some(time),
        host: None,
        program: Some(component.to_string()),
        pid: pid.parse().ok(),
        level: Some(level.to_string()),
        message: message.to_string(),
        event,
        before_run: false,
    })
}

/// What a fail2ban jail's message means: `Ban A`, `Restore Ban A`, `Unban A`, `Found A - DATE`,
/// `A already banned`.
fn fail2ban_event(jail: Option<String>, text: &str) -> Option<LogEvent> {
    let first_addr = |t: &str| t.split(' ').next().and_then(|a| a.parse::<IpAddr>().ok());
    if let Some(rest) = text.strip_prefix("Ban ") {
        return Some(LogEvent::Banned {
            addr: first_addr(rest)?,
            prefix: None,
            jail,
            seconds: None,
            restored: false,
        });
    }
    if let Some(rest) = text.strip_prefix("Restore Ban ") {
        return Some(LogEvent::Banned {
            addr: first_addr(rest)?,
            prefix: None,
            jail,
            seconds: None,
            restored: true,
        });
    }
    if let Some(rest) = text.strip_prefix("Unban ") {
        return Some(LogEvent::Unbanned { addr: first_addr(rest)?, jail });
    }
    if let Some(rest) = text.strip_prefix("Found ") {
        return Some(LogEvent::FailureCounted { addr: first_addr(rest)?, jail });
    }
    if let Some(addr) = text.strip_suffix(" already banned") {
        return Some(LogEvent::AlreadyBanned { addr: addr.parse().ok()?, jail });
    }
    None
}

/// After `drop connection #`: `N from [A]:P on [B]:Q REASON`.
fn drop_line(rest: &str) -> Option<LogEvent> {
    let (count, rest) = rest.split_once(" from ")?;
    let (from, rest) = rest.split_once(" on ")?;
    let (on, reason) = rest.split_once(' ')?;
    let reason = match reason {
        "past MaxStartups" => DropReason::PastMaxStartups,
        "Maxstartups" | "MaxStartups" => DropReason::Maxstartups,
        other => match other.strip_prefix("penalty: ") {
            Some(why) => DropReason::Penalty(why.to_string()),
            None => DropReason::Other(other.to_string()),
        },
    };
    Some(LogEvent::Drop { count: count.parse().ok()?, from: bracketed(from)?, on: bracketed(on)?, reason })
}

/// After `srclimit_penalise: `:
/// `ipv4: new 127.0.0.1/32 deferred penalty of 1 seconds for penalty: REASON` or
/// `127.0.0.1/32: activating ipv4 penalty of 16 seconds for penalty: REASON`.
fn penalise(rest: &str) -> Option<LogEvent> {
    let (head, reason) = rest.split_once(" penalty of ")?;
    let (seconds, reason) = reason.split_once(" seconds for ")?;
    let reason = reason.strip_prefix("penalty: ").unwrap_or(reason);
    let active = head.contains("activating");
    let block = head.split([' ', ':']).find(|w| w.contains('/'))?;
    Some(LogEvent::Penalise {
        block: block.to_string(),
        seconds: seconds.parse().ok()?,
        active,
        reason: reason.to_string(),
    })
}

/// `[127.0.0.1]:42014`, `[::1]:42014`.
fn bracketed(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.strip_prefix('[')?.split_once("]:")?;
    Some(SocketAddr::new(ip.parse().ok()?, port.parse().ok()?))
}

/// `127.0.0.1 port 42014`.
fn word_port(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(" port ")?;
    Some(SocketAddr::new(ip.parse().ok()?, port.trim().parse().ok()?))
}

/// `127.0.0.1:42014`, `::1:42014` (dropbear writes IPv6 without brackets).
fn colon_port(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.rsplit_once(':')?;
    let ip = ip.strip_prefix('[').and_then(|i| i.strip_suffix(']')).unwrap_or(ip);
    Some(SocketAddr::new(ip.parse().ok()?, port.parse().ok()?))
}

const MONTHS: [&str; 12] =
    ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// `Dec  2 04:50:01 ` or `Dec 02 04:50:01 ` at the start: the time and the rest.
fn syslog_time(line: &str) -> Option<(Timestamp, &str)> {
    let head = line.get(..16)?;
    let month = MONTHS.iter().position(|m| head.starts_with(m))? as u8 + 1;
    if head.as_bytes()[3] != b' ' || head.as_bytes()[15] != b' ' {
        return None;
    }
    let day: u8 = head[4..6].trim_start().parse().ok()?;
    let (hour, minute, second) = clock(&head[7..15])?;
    let time = Timestamp { year: None, month, day, hour, minute, second, micros: 0, utc_offset_s: None };
    valid(&time).then_some((time, &line[16..]))
}

/// `2026-12-02T04:50:01.123456+00:00 `, `2026-12-02T04:50:01+0000 ` (or `Z`) at the start.
fn iso_time(line: &str) -> Option<(Timestamp, &str)> {
    let (stamp, rest) = line.split_once(' ')?;
    let b = stamp.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    let year = stamp[..4].parse().ok()?;
    let month = stamp[5..7].parse().ok()?;
    let day = stamp[8..10].parse().ok()?;
    let (hour, minute, second) = clock(&stamp[11..19])?;
    let mut tail = &stamp[19..];
    let mut micros = 0;
    if let Some(fraction) = tail.strip_prefix('.') {
        let digits = fraction.find(|c: char| !c.is_ascii_digit()).unwrap_or(fraction.len());
        let padded = format!("{:0<6}", &fraction[..digits.min(6)]);
        micros = padded.parse().ok()?;
        tail = &fraction[digits..];
    }
    let utc_offset_s = match tail {
        "Z" => 0,
        _ => {
            let sign = match tail.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let digits: String = tail[1..].chars().filter(|c| *c != ':').collect();
            if digits.len() != 4 {
                return None;
            }
            let (h, m): (i32, i32) = (digits[..2].parse().ok()?, digits[2..].parse().ok()?);
            sign * (h * 3600 + m * 60)
        }
    };
    let time = Timestamp {
        year: Some(year),
        month,
        day,
        hour,
        minute,
        second,
        micros,
        utc_offset_s: Some(utc_offset_s),
    };
    valid(&time).then_some((time, rest))
}

/// `04:50:01`.
fn clock(text: &str) -> Option<(u8, u8, u8)> {
    let b = text.as_bytes();
    if b.len() != 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    Some((text[..2].parse().ok()?, text[3..5].parse().ok()?, text[6..8].parse().ok()?))
}

fn valid(t: &Timestamp) -> bool {
    (1..=12).contains(&t.month) && (1..=31).contains(&t.day) && t.hour < 24 && t.minute < 60 && t.second <= 60
}

/// dropbear's standard error: `[123] Dec 02 04:50:01 message`.
fn dropbear_stderr(line: &str) -> Option<(u32, Timestamp, &str)> {
    let (pid, rest) = line.strip_prefix('[')?.split_once("] ")?;
    let pid = pid.parse().ok()?;
    let (time, message) = syslog_time(rest)?;
    Some((pid, time, message))
}

/// The most a [`LogTail`] keeps between two reads: a log that grows faster is cut (the newest
/// lines are kept).
pub(crate) const TAIL_CAP: usize = 16 << 20;

/// How much of a file's recent past [`LogTail::open`] keeps: its last 1 MiB before the run.
pub const PAST_CAP: u64 = 1 << 20;

/// How far back [`LogTail::read_lines`] looks before the run: a ban, a penalty or a wrappers
/// refusal logged in these minutes still explains what this run sees.
pub const RECENT_PAST: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Reads what is appended to one or more logs after they were opened (a file from its size at
/// opening, from its start again if it was truncated or replaced by a shorter one, as at rotation;
/// a stream such as standard input by a thread of its own, since a read from a pipe cannot be
/// interrupted), and what the files held of the recent past when they were opened.
pub struct LogTail {
    sources: Vec<TailSource>,
    /// The end of each file as it was at opening (at most [`PAST_CAP`]), until read once.
    past: Option<String>,
    /// When the logs were opened: the end of the recent past.
    opened: std::time::SystemTime,
}

impl fmt::Debug for LogTail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let paths: Vec<String> = self
            .sources
            .iter()
            .map(|s| match s {
                TailSource::File { path, offset } => format!("{}@{offset}", path.display()),
                TailSource::Stream { .. } => "-".to_string(),
            })
            .collect();
        f.debug_struct("LogTail").field("sources", &paths).finish()
    }
}

enum TailSource {
    File { path: PathBuf, offset: u64 },
    Stream { received: Arc<Mutex<Vec<u8>>> },
}

/// A log that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("reading the server log {path}: {source}")]
pub struct LogTailError {
    /// The log.
    pub path: String,
    /// Why.
    pub source: std::io::Error,
}

impl LogTail {
    /// Opens `path` (`-`: standard input) and remembers where it ends now.
    pub fn open(path: &str) -> Result<LogTail, LogTailError> {
        LogTail::open_all(&[path])
    }

    /// Opens every log in `paths` (`-`: standard input, at most once) and remembers where each
    /// ends now, and what each held last (its recent past).
    pub fn open_all<S: AsRef<str>>(paths: &[S]) -> Result<LogTail, LogTailError> {
        let mut sources = Vec::new();
        let mut past = String::new();
        let mut stdin_taken = false;
        for path in paths.iter().map(AsRef::as_ref) {
            if path == "-" {
                if !stdin_taken {
                    sources.push(TailSource::stream(std::io::stdin()));
                    stdin_taken = true;
                }
                continue;
            }
            let err = |source| LogTailError { path: path.to_string(), source };
            let offset = std::fs::metadata(path).map_err(err)?.len();
            past += &read_range(std::path::Path::new(path), offset.saturating_sub(PAST_CAP), offset)
                .map_err(err)?;
            sources.push(TailSource::File { path: PathBuf::from(path), offset });
        }
        Ok(LogTail { sources, past: Some(past), opened: std::time::SystemTime::now() })
    }

    /// Everything `stream` yields from now on.
    pub fn from_stream<R: Read + Send + 'static>(stream: R) -> LogTail {
        LogTail {
            sources: vec![TailSource::stream(stream)],
            past: None,
            opened: std::time::SystemTime::now(),
        }
    }

    /// What was appended to every log since the last call (or since opening), as text (invalid
    /// UTF-8 replaced), one log after the other. A partial last line is left for the next call.
    pub fn read_appended(&mut self) -> Result<String, LogTailError> {
        let mut text = String::new();
        for source in &mut self.sources {
            text += &source.read_appended()?;
        }
        Ok(text)
    }

    /// [`LogTail::read_appended`], parsed, and on the first call also the lines of the recent past
    /// (logged within [`RECENT_PAST`] before the logs were opened, by their time stamps; a line
    /// without one cannot be placed and is left out), marked [`LogLine::before_run`]. Lines of
    /// the past come first.
    pub fn read_lines(&mut self) -> Result<Vec<LogLine>, LogTailError> {
        let mut lines = match self.past.take() {
            Some(past) => recent(&past, self.opened, RECENT_PAST, local_utc_offset_s()),
            None => Vec::new(),
        };
        lines.extend(parse_log(&self.read_appended()?));
        Ok(lines)
    }
}

/// The lines of `text` logged within `window` before `until` (time stamps without a zone read in
/// `utc_offset_s`, without a year in `until`'s), marked as logged before the run. Pure: the
/// recent past's filter, tested without a clock.
pub fn recent(
    text: &str,
    until: std::time::SystemTime,
    window: std::time::Duration,
    utc_offset_s: i32,
) -> Vec<LogLine> {
    let until_us = until
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    let from_us = until_us.saturating_sub(i64::try_from(window.as_micros()).unwrap_or(i64::MAX));
    let year = year_of(until_us, utc_offset_s);
    parse_log(text)
        .into_iter()
        .filter(|l| {
            l.time.is_some_and(|t| {
                let at = t.unix_micros(year, utc_offset_s);
                // A second of slack: syslog stamps are whole seconds.
                (from_us..=until_us + 1_000_000).contains(&at)
            })
        })
        .map(|mut l| {
            l.before_run = true;
            l
        })
        .collect()
}

/// The civil year at `unix_us` in a zone `utc_offset_s` east of UTC.
fn year_of(unix_us: i64, utc_offset_s: i32) -> i32 {
    let days = (unix_us / 1_000_000 + i64::from(utc_offset_s)).div_euclid(86_400);
    // Hinnant's civil_from_days, the year only.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2)) as i32
}

/// This host's offset from UTC now, in seconds east (syslog and fail2ban stamps are local time).
fn local_utc_offset_s() -> i32 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as libc::time_t);
    // SAFETY: localtime_r writes only into the `tm` we pass; a zeroed tm is a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&now, &mut tm).is_null() };
    if ok {
        tm.tm_gmtoff as i32
    } else {
        0
    }
}

/// The bytes `from..to` of the file at `path`, as text; a partial first line is dropped.
fn read_range(path: &std::path::Path, from: u64, to: u64) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::new();
    file.take(to - from).read_to_end(&mut bytes)?;
    let start =
        if from == 0 { 0 } else { bytes.iter().position(|&b| b == b'\n').map_or(bytes.len(), |i| i + 1) };
    Ok(String::from_utf8_lossy(&bytes[start..]).into_owned())
}

impl TailSource {
    fn stream<R: Read + Send + 'static>(mut stream: R) -> TailSource {
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&received);
        std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while let Ok(n) = stream.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                let Ok(mut buffer) = sink.lock() else { break };
                buffer.extend_from_slice(&chunk[..n]);
                if buffer.len() > TAIL_CAP {
                    let excess = buffer.len() - TAIL_CAP;
                    buffer.drain(..excess);
                }
            }
        });
        TailSource::Stream { received }
    }

    fn read_appended(&mut self) -> Result<String, LogTailError> {
        match self {
            TailSource::Stream { received } => {
                let mut buffer = received.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let complete = buffer.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                let text = String::from_utf8_lossy(&buffer[..complete]).into_owned();
                buffer.drain(..complete);
                Ok(text)
            }
            TailSource::File { path, offset } => {
                let err = |source| LogTailError { path: path.display().to_string(), source };
                let mut file = std::fs::File::open(&*path).map_err(err)?;
                let len = file.metadata().map_err(err)?.len();
                if len < *offset {
                    *offset = 0; // truncated or rotated: the new file is all new
                }
                let start = (*offset).max(len.saturating_sub(TAIL_CAP as u64));
                file.seek(SeekFrom::Start(start)).map_err(err)?;
                let mut bytes = Vec::new();
                file.take(len - start).read_to_end(&mut bytes).map_err(err)?;
                let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                *offset = start + complete as u64;
                Ok(String::from_utf8_lossy(&bytes[..complete]).into_owned())
            }
        }
    }
}

#[cfg(test)]
#[path = "serverlog_tests.rs"]
mod tests;
