//! Reports of diagnoses: a block of text per target for people, one JSON object per target otherwise.
//!
//! This is where a diagnosis becomes English: [`evidence_text`], [`remedy_text`] and [`note_text`]
//! write the typed [`Evidence`], [`Remedy`] and [`Note`] for people. The JSON keeps each piece of
//! evidence's kind and numbers beside its text: `{"kind": "zero_byte_close", "median_us": 5011343,
//! "probes": 3, "source": "default", "text": "every refusal sent zero bytes; ..."}`.

use super::probe::format_us;
use super::{Format, Palette};
use crate::escape::{escape, quoted};
use crate::experiment::budget::{BudgetUse, Pace};
use crate::experiment::diagnose::persource::Count;
use crate::experiment::diagnose::{
    Confidence, DelayClass, Diagnosis, Evidence, Experiment, HostHolder, NotTestedReason, Note, Remedy,
    Tally, Verdict,
};
use crate::outcome::Outcome;
use crate::server::Software;
use serde::Serialize;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::SystemTime;

/// Writes one diagnosis in `format`; `started` is when it began (JSONL and CSV `time`: RFC 3339,
/// UTC, microseconds).
pub fn write_diagnosis(
    out: &mut impl Write,
    d: &Diagnosis,
    started: SystemTime,
    format: Format,
    colour: bool,
) -> io::Result<()> {
    let time = humantime::format_rfc3339_micros(started);
    match format {
        Format::Jsonl => {
            crate::escape::write_json(&mut *out, &DiagnosisJson::of(d, time.to_string()))?;
            writeln!(out)?;
        }
        Format::Csv => {
            let f = &d.finding;
            let evidence: Vec<String> = f.evidence.iter().map(evidence_text).collect();
            let remedy: Vec<String> = f.remedy.iter().map(|r| remedy_text(r, d.remote.port())).collect();
            writeln!(
                out,
                "{},{},{},{},{},{time}",
                super::csv_field(&d.target),
                f.verdict,
                <&str>::from(f.confidence),
                super::csv_field(&evidence.join(" | ")),
                super::csv_field(&remedy.join(" | "))
            )?;
        }
        Format::Table => write_text(out, d, Palette::new(colour))?,
    }
    out.flush()
}

/// The CSV header for [`write_diagnosis`].
pub const CSV_HEADER: &str = "target,verdict,confidence,evidence,remedy,time";

/// The JSON object of one diagnosis.
#[derive(Serialize)]
struct DiagnosisJson<'a> {
    target: &'a str,
    /// When it began: RFC 3339, UTC, microseconds.
    time: String,
    remote: SocketAddr,
    verdict: Verdict,
    confidence: Confidence,
    evidence: Vec<EvidenceJson<'a>>,
    remedy: Vec<String>,
    notes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server: Option<&'a str>,
    experiments: &'a [Experiment],
    budget: &'a BudgetUse,
    duration_ms: u64,
}

/// One piece of evidence in JSON: its kind and numbers, and the text for people.
#[derive(Serialize)]
struct EvidenceJson<'a> {
    #[serde(flatten)]
    evidence: &'a Evidence,
    text: String,
}

impl<'a> DiagnosisJson<'a> {
    fn of(d: &'a Diagnosis, time: String) -> DiagnosisJson<'a> {
        let f = &d.finding;
        DiagnosisJson {
            target: &d.target,
            time,
            remote: d.remote,
            verdict: f.verdict,
            confidence: f.confidence,
            evidence: f
                .evidence
                .iter()
                .map(|e| EvidenceJson { evidence: e, text: evidence_text(e) })
                .collect(),
            remedy: f.remedy.iter().map(|r| remedy_text(r, d.remote.port())).collect(),
            notes: f.notes.iter().map(note_text).collect(),
            server: d.server.as_deref(),
            experiments: &d.experiments,
            budget: &d.budget,
            duration_ms: d.duration_ms,
        }
    }
}

fn write_text(out: &mut impl Write, d: &Diagnosis, palette: Palette) -> io::Result<()> {
    let f = &d.finding;
    let colour = match f.verdict {
        Verdict::Ok => "32",
        Verdict::Intermittent | Verdict::Overloaded => "33",
        _ => "31",
    };
    let confidence: &str = f.confidence.into();
    writeln!(
        out,
        "{}  {}  (confidence: {confidence}, {:.1} s)",
        escape(&d.target),
        palette.paint(colour, f.verdict.name(), 0),
        d.duration_ms as f64 / 1000.0
    )?;
    if let Some(server) = &d.server {
        writeln!(out, "  server:   {}", escape(server))?;
    }
    // Evidence and notes quote what servers said: escaped like everything from the network.
    writeln!(out, "  evidence:")?;
    for e in &f.evidence {
        writeln!(out, "    - {}", escape(&evidence_text(e)))?;
    }
    writeln!(out, "  remedy:")?;
    for r in &f.remedy {
        writeln!(out, "    - {}", escape(&remedy_text(r, d.remote.port())))?;
    }
    for n in &f.notes {
        writeln!(out, "  note:     {}", escape(&note_text(n)))?;
    }
    writeln!(out, "  experiments:")?;
    for e in &d.experiments {
        let kind: &str = e.kind.into();
        let sources: std::collections::BTreeSet<_> = e.probes.iter().map(|p| p.source).collect();
        let source = if sources.is_empty() {
            "-".to_string()
        } else {
            sources.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
        };
        let tally =
            if e.probes.is_empty() { "no probe finished".to_string() } else { tally_text(&e.tally()) };
        writeln!(out, "    {kind:<12} held {:>3}  from {source:<12} {tally}", e.held)?;
    }
    // `Source`'s order: addresses in numeric order (127.77.0.10 after 127.77.0.2), then the
    // kernel's choice.
    let spent: Vec<String> = d.budget.spent.iter().map(|(s, n)| format!("{n} from {s}")).collect();
    let budget = &d.budget;
    let rule = match budget.pace {
        Pace::Cap => format!("at most {} per source address", budget.per_source),
        Pace::PenaltySafe => format!(
            "paced so no source address owes the server over {} s of penalty{}",
            budget.per_source,
            if budget.waited_ms > 0 {
                format!("; waited {:.1} s for it", budget.waited_ms as f64 / 1000.0)
            } else {
                String::new()
            }
        ),
    };
    writeln!(out, "  budget:   {} ({rule})", spent.join(", "))?;
    writeln!(out)
}

/// A p-value given in per mille, as a decimal.
fn per_mille_text(p: u32) -> String {
    if p == 0 {
        "< 0.001".into()
    } else {
        format!("{:.3}", f64::from(p) / 1000.0)
    }
}

/// A rate given in per mille, as per cent: `0.1 %`.
fn rate_text(per_mille: u32) -> String {
    format!("{} %", f64::from(per_mille) / 10.0)
}

/// `3 banner, 2 server_refusal`.
/// The two addresses' refusals at the same load, as the per-source test compared them.
fn both_counts_text(here: &Count, elsewhere: &Count) -> String {
    format!(
        "this address was refused {} of {} times, another at the same load {} of {}",
        here.refused, here.probes, elsewhere.refused, elsewhere.probes
    )
}

pub(crate) fn tally_text(tally: &Tally) -> String {
    tally.counts().map(|(o, n)| format!("{n} {o}")).collect::<Vec<_>>().join(", ")
}

/// Where a delay places a close, for people.
fn delay_class_text(class: DelayClass) -> &'static str {
    match class {
        DelayClass::Listener => {
            "at the listener, before any session process (a connection limit, a forwarder)"
        }
        DelayClass::SessionProcess => "in a session process (milliseconds: a process was started and ended)",
        DelayClass::WrappersDelay => "Debian's TCP-wrappers delay (the child sleeps 5 s)",
        DelayClass::Other => "at no delay any known cause has",
    }
}

/// What a cited log event means, for people (after the line).
fn log_meaning(event: crate::serverlog::LogEventKind) -> &'static str {
    use crate::serverlog::LogEventKind as K;
    match event {
        K::Drop => {
            " (its listener dropped the connection: MaxStartups or PerSourceMaxStartups, logged alike, or a \
                   PerSourcePenalties penalty when the line says `penalty:`)"
        }
        K::ThrottlingBegins | K::DropsNotLogged => " (MaxStartups throttling)",
        K::Penalise => " (PerSourcePenalties)",
        K::WrapperRefusedConnect | K::WrapperRefused => " (TCP wrappers: /etc/hosts.deny matched)",
        K::HostKeyUnloadable | K::NoHostKeys => " (its session cannot start without a host key: `HostKey`)",
        K::Fatal => " (the process exits)",
        K::Banned | K::AlreadyBanned => {
            " (a ban-after-failures daemon, fail2ban or sshguard, blocks this address: its firewall rule \
             refuses or drops every connection from it until the ban lifts)"
        }
        K::Unbanned => " (the ban on this address lifted)",
        K::FailureCounted => {
            " (a ban-after-failures daemon counted a failure from this address towards a ban)"
        }
        K::ThrottlingEnds
        | K::ConnectionFrom
        | K::ConnectionClosed
        | K::GraceTimeout
        | K::Listening
        | K::DropbearConnection
        | K::DropbearExitBeforeAuth
        | K::Unrecognised => "",
    }
}

/// One of this host's connection owners: `python3 (pid 4242) holds 5 from 10.0.0.5`.
fn holder_text(h: &HostHolder) -> String {
    let who = match (&h.process, h.pid) {
        (Some(name), Some(pid)) => format!("{} (pid {pid})", name),
        (None, Some(pid)) => format!("pid {pid}"),
        _ => "an unknown process".to_string(),
    };
    format!("{who} holds {} from {}", h.count, h.local)
}

/// The server family for a sentence: `OpenSSH 9.2`, `dropbear`, or `the server`.
fn server_text(software: Option<Software>) -> String {
    software.map(|s| s.to_string()).unwrap_or_else(|| "the server".into())
}

/// One piece of evidence, for people.
pub fn evidence_text(evidence: &Evidence) -> String {
    match evidence {
        // Names are printable ASCII without commas: the KEXINIT parser checks them.
        Evidence::KexOffer { kex, host_key, strict_kex, terrapin_exposed, post_quantum } => format!(
            "the server's KEXINIT prefers key exchange {} and host key {}; strict KEX {}, Terrapin-exposed {}, \
             post-quantum key exchange {}",
            kex.as_deref().unwrap_or("(none)"),
            host_key.as_deref().unwrap_or("(none)"),
            yes_no(*strict_kex),
            yes_no(*terrapin_exposed),
            yes_no(*post_quantum),
        ),
        Evidence::ClientsCannotNegotiate { missing: kind, clients, server_offers, workaround } => format!(
            "OpenSSH {} clients cannot negotiate: {} (the server offers {}); client-side workaround, weakening \
             security: {workaround}",
            if clients.len() == crate::kexinit::openssh::CLIENTS.len() {
                "8.8 and later".to_string()
            } else {
                clients.join(", ")
            },
            kind.ssh_error(),
            server_offers.join(","),
        ),
        Evidence::NoProbes { reason: NotTestedReason::TimeLimit } => {
            "no probe could be made: the time limit ended while waiting for the probe budget (OpenSSH 9.8+ \
             penalises an address that opens connections faster than about one a second)"
                .into()
        }
        Evidence::NoProbes { reason: NotTestedReason::TimeLimitCut } => {
            "no probe finished: the time limit cut every probe still waiting for the server".into()
        }
        Evidence::NoProbes { reason: NotTestedReason::Budget } => "no probe could be made within the budget".into(),
        Evidence::ConnectFailed { outcome, probes } => {
            let why = match outcome {
                Outcome::Refused => {
                    "answered every SYN with RST: nothing listens on this address and port (or a firewall rejects \
                     with a TCP reset)"
                }
                Outcome::ConnectTimeout => {
                    "never answered our SYNs: a firewall drops them, the host is down, or the server's accept \
                     queue is full (a hung sshd that no longer accepts: the kernel drops SYNs once its listen \
                     backlog overflows)"
                }
                Outcome::Unreachable => {
                    "answered with ICMP errors: no route to the host, or a firewall rejecting with ICMP"
                }
                _ => "could not be reached",
            };
            format!("all {probes} probes: {outcome}; the server {why}")
        }
        Evidence::NotSsh { tally, said } => {
            format!("all {} probes: {}; the server said {}", tally.total(), tally_text(tally), quoted(said))
        }
        Evidence::Unloaded { tally } => {
            format!("{} probes with nothing held, one at a time while answers are fast: {}", tally.total(), tally_text(tally))
        }
        Evidence::SecondSource { source, tally } => {
            format!("from a second address ({source}): {}", tally_text(tally))
        }
        Evidence::RefusalMessage { message, refusal, median_us, .. } => format!(
            "the server sent {} and closed, in {} (median): {}",
            quoted(message),
            format_us(*median_us),
            refusal.meaning()
        ),
        Evidence::ServedElsewhereWithPenalties { software } => {
            let sw = server_text(*software);
            format!(
                "another address gets a banner ({sw}) while this one is refused with nothing held by us: \
                 PerSourcePenalties (on by default since 9.8) blocks this address; PerSourceMaxStartups \
                 (off by default) would need other clients on this address holding connections"
            )
        }
        Evidence::ServedElsewhereWithoutPenalties { software } => {
            let sw = server_text(*software);
            format!("another address gets a banner ({sw}): the limit is per source address, and {sw} has no penalties")
        }
        Evidence::AmbiguousRefusalLine => {
            "OpenSSH 9.8+ sends this line for PerSourcePenalties, PerSourceMaxStartups and MaxStartups alike. \
             With nothing held by us, a global limit needs others holding unauthenticated connections up to \
             `full` (100 by default), a penalty only earlier connections from this address that did not \
             authenticate (scanners, monitoring, earlier runs): the likelier cause, not a proven one"
                .into()
        }
        Evidence::RefusedEverywhere => {
            "another address is refused too, while we hold nothing: the server is at its global MaxStartups \
             `full` with unauthenticated connections held by others"
                .into()
        }
        Evidence::ZeroByteClose {
            median_us, probes, server_delay_us, server_delay_range_us, fastest_delay_us, class, ..
        } => {
            match server_delay_range_us {
                Some((fastest, slowest)) => format!(
                    "every refusal sent zero bytes; the server closed after {} (median; {probes} probes), {} of it \
                     its own (range {}–{}; the rest is the round trip); the fastest close less twice the \
                     fastest connect leaves {}: {}",
                    format_us(*median_us),
                    format_us(*server_delay_us),
                    format_us(*fastest),
                    format_us(*slowest),
                    format_us(*fastest_delay_us),
                    delay_class_text(*class)
                ),
                None => format!(
                    "every refusal sent zero bytes; the server closed after {} (median; {probes} probes; no probe \
                     timed its handshake, so the round trip is not taken out): {}",
                    format_us(*median_us),
                    delay_class_text(*class)
                ),
            }
        }
        Evidence::WrappersDelay { .. } => {
            "a zero-byte close about 5 s after accept, on every probe, is Debian's TCP-wrappers denial \
             (the sshd child sleeps 5 s before exiting); load-dependent limits close in under a millisecond"
                .into()
        }
        Evidence::RuleMatchesThisAddressOnly => {
            "another address gets a banner: the rule matches this address only".into()
        }
        Evidence::DropbearPerSourceClose => {
            "dropbear closes with zero bytes at once when one address has MAX_UNAUTH_PER_IP (5) unauthenticated \
             connections; another address gets a banner"
                .into()
        }
        Evidence::ListenerDropEverywhere { .. } => {
            "every address is closed at the listener without a byte, and this host holds no connection to the \
             server: either its connection table is full of others' unauthenticated connections and it sends no \
             message (dropbear's MAX_UNAUTH_CLIENTS, OpenSSH before 8.2), or it is a forwarder with no backend \
             (docker-proxy for a stopped container, HAProxy, kubectl port-forward); the evidence allows both"
                .into()
        }
        Evidence::ListenerDropThisAddress => {
            "this address is closed at the listener without a byte while another address gets a banner: a \
             per-address limit at the listener"
                .into()
        }
        Evidence::SessionProcessDies { server_delay_us } => format!(
            "every address is closed without a byte {} after accept: long enough for sshd to start a session \
             process, too short for Debian's wrappers delay. The session dies before its banner (a host key it \
             cannot read, a broken install or configuration); an access rule matching every address and closing \
             at once (TCP wrappers without Debian's delay) would look the same, so read the server's log",
            format_us(*server_delay_us)
        ),
        Evidence::SessionProcessRefusesThisAddress { server_delay_us } => format!(
            "this address is closed without a byte {} after accept while another gets a banner: a session \
             process refuses this address only, an access rule (TCP wrappers without Debian's delay, an ACL)",
            format_us(*server_delay_us)
        ),
        Evidence::HostHoldsConnections { holders, total, from_probing_address } => format!(
            "this host holds {total} established connection{} to the server besides ours ({from_probing_address} \
             from the probing address): {}; unauthenticated ones count towards the server's limits",
            if *total == 1 { "" } else { "s" },
            holders.iter().map(holder_text).collect::<Vec<_>>().join(", ")
        ),
        Evidence::ServerLogged { line, event, ours, before_run } => format!(
            "the server logged{}: {line}{}",
            match (*before_run, *ours) {
                (true, _) => " in the minutes before this run, about a probing address",
                (false, true) => " for one of our probes",
                (false, false) => " while we probed",
            },
            log_meaning(*event)
        ),
        Evidence::ServerLoggedUnknown { lines, count } => format!(
            "the server logged {count} line{} diagnose does not know while we probed: {}",
            if *count == 1 { "" } else { "s" },
            lines.join(" | ")
        ),
        Evidence::DropbearSilentAboutDrops => "dropbear logged its other connections but nothing for our refused \
             probes: its limits (MAX_UNAUTH_PER_IP, MAX_UNAUTH_CLIENTS) drop a connection without a word, which \
             rules out a forwarder with no backend"
            .into(),
        Evidence::HungServer { syn_unanswered, accepted_silent } => format!(
            "{syn_unanswered} probes got no answer to their SYNs and {accepted_silent} were accepted but never got a \
             banner: the server's listen queue is full (a hung sshd), not a firewall"
        ),
        Evidence::UnusualZeroByteClose { .. } => {
            "a zero-byte close on every probe, at an unusual delay: an access rule or a broken server".into()
        }
        Evidence::UnknownRefusal { message } => format!(
            "every probe was refused with {}: a message no sshd limit sends (a TCP-wrappers `twist` or an ACL)",
            quoted(message)
        ),
        Evidence::NoBanner { partial: Some(partial), .. } => format!(
            "the server accepts and starts its ident line ({}) but never completes it: sshd or a middlebox \
             stalls mid-banner, or something on the path holds the connection",
            crate::escape::quoted(partial)
        ),
        Evidence::NoBanner { partial: None, .. } => {
            "the server accepts but never sends its banner: sshd is not accepting (hung, or its listen backlog is \
             full and the kernel completes handshakes for it), or something on the path holds the connection"
                .into()
        }
        Evidence::PenaltyBegan { banners } => format!(
            "the first {banners} probes got banners, then every one was refused, while another address is \
             served: a PerSourcePenalties block on this address that began during this diagnosis"
        ),
        Evidence::RefusedHereServedElsewhere { refused, probes } => format!(
            "{refused} of {probes} probes refused with nothing held by us, while another address is served: a limit on \
             this address (unauthenticated connections from it held by others: PerSourceMaxStartups)"
        ),
        Evidence::RandomRefusals { refused, probes } => format!(
            "{refused} of {probes} probes refused at random with nothing held by us: the server's unauthenticated \
             connections (held by others) are between MaxStartups `start` and `full`, where sshd drops at random"
        ),
        Evidence::NoPattern => "failures without a pattern".into(),
        Evidence::UnloadedBanners { probes, software } => {
            format!("{probes} probes with nothing held: all banner ({})", server_text(*software))
        }
        Evidence::LoadTimeouts { timeouts } => {
            format!("{timeouts} probes under load timed out waiting for the banner")
        }
        Evidence::ServedUnderLoad { max_held } => {
            format!("with up to {max_held} unauthenticated connections held, every probe still got a banner")
        }
        Evidence::LoadRefusals { held: 0, from_probing_source, tally } => format!(
            "trying to hold unauthenticated connections{}, of which the server kept none: {}",
            if *from_probing_source { " from the probing address" } else { " from other addresses" },
            tally_text(tally)
        ),
        Evidence::LoadRefusals { held, from_probing_source, tally } => format!(
            "holding {held} unauthenticated connections{}: {}",
            if *from_probing_source { " from the probing address" } else { " from other addresses" },
            tally_text(tally)
        ),
        Evidence::HoldRefused { attempts } => {
            format!("{attempts} of our attempts to hold more connections were refused on the way there")
        }
        Evidence::RefusalsSaid { message } => format!("the refusals said {}", quoted(message)),
        Evidence::FreshAddressUnderLoad { tally } => format!("meanwhile from a fresh address: {}", tally_text(tally)),
        Evidence::AfterRelease { tally } => format!("after releasing them: {}", tally_text(tally)),
        Evidence::PenaltyOutlivedLoad => {
            "the probing address stayed refused after we released everything while a fresh address was served: a \
             PerSourcePenalties block, likely earned by this diagnosis's own connections on top of earlier ones"
                .into()
        }
        Evidence::PerSourceUnderLoad { held: 0 } => "refusals began as the probing address tried to hold \
             connections (the server kept none) while a fresh address was served, and cleared when it stopped: a \
             per-source limit"
            .into(),
        Evidence::PerSourceUnderLoad { held } => format!(
            "refusals began at {held} connections from the probing address while a fresh address was served, and \
             cleared when they were released: a per-source limit"
        ),
        Evidence::MaxStartupsUnderLoad { held: 0, cleared } => format!(
            "refusals began as diagnose tried to hold connections, and it kept none{}: new connections were \
             already being refused at the server's limit (others' unauthenticated connections); `sshprobe \
             limits` estimates start:rate:full",
            if *cleared { ", and cleared once it stopped" } else { "" },
        ),
        Evidence::MaxStartupsUnderLoad { held, cleared } => format!(
            "refusals began with {held} connections held{}: MaxStartups `start` is at most {held} (minus unauthenticated \
             connections others hold); `sshprobe limits` estimates start:rate:full",
            if *cleared { " and cleared once they were released" } else { "" },
        ),
        Evidence::SynsBlocked { tally, probes, served_first } => {
            let blocked = tally.total();
            let how = tally_text(tally);
            if *served_first > 0 {
                format!(
                    "this address got {served_first} banner(s), then {blocked} of its later connects failed at the \
                     SYN ({how}): refused (RST or ICMP) or dropped before any connection existed; {probes} probes from it in all"
                )
            } else {
                format!(
                    "{blocked} of this address's {probes} connects failed at the SYN ({how}): refused (RST or ICMP) or \
                     dropped before any connection existed"
                )
            }
        }
        Evidence::ServedElsewhere { source, banners, probes } => {
            format!("from another address ({source}): {banners} banner(s) of {probes} probes: the server is up and serves others")
        }
        Evidence::BanTripped { banners } => format!(
            "the address was served {banners} time(s) in this run, then blocked: diagnose's own probes (each an \
             identification-only connection, a failure to a ban-after-failures rule such as fail2ban's aggressive \
             sshd filter, sshguard, or iptables `recent`) tripped a ban; the user's ssh from this address is blocked \
             too until it lifts"
        ),
        Evidence::BlockOutlivedWait { waited_ms } => format!(
            "still blocked after waiting {:.1} s with nothing held: not a rate limit (which lets a new connection \
             through by then) but a ban",
            *waited_ms as f64 / 1000.0
        ),
        Evidence::CountLimit { held_here, lifted: false } => format!(
            "refused at the SYN while this address holds {held_here} connection(s) to the server, while another address \
             is served: a per-address connection count rule (iptables connlimit, nft `ct count`)"
        ),
        Evidence::CountLimit { held_here, lifted: true } => format!(
            "refused at the SYN while this address held {held_here} connection(s), served again once they were \
             released: a per-address connection count rule (iptables connlimit, nft `ct count`)"
        ),
        Evidence::RateLimit { passed, waited_ms } => format!(
            "{passed} new connection(s) passed, then SYNs were blocked; after {:.1} s with nothing of ours held, a \
             new one was served again: a per-address rate limit on new connections (nft `limit rate`, iptables `recent \
             --hitcount` or hashlimit), not a ban",
            *waited_ms as f64 / 1000.0
        ),
        Evidence::AtTheListener { server_delay_us } => format!(
            "closed {} after the handshake, zero bytes, for this address only, with nothing held from it here: at the \
             listener, before any sshd session (sshd's TCP wrappers close after 5 s): an access rule there (a proxy's \
             ACL such as HAProxy's `tcp-request connection reject`, an allow list), or, if others share this address \
             (NAT), a per-address limit they hold full",
            format_us(*server_delay_us)
        ),
        Evidence::Multiplexer { waited_ms, spoke_first_ms } => format!(
            "the banner came after {:.1} s when we waited, and after {spoke_first_ms} ms when we spoke first: a \
             protocol multiplexer (sslh and the like) waits for the client's first bytes before it picks a backend; \
             ssh clients speak first, so they are not delayed",
            *waited_ms as f64 / 1000.0
        ),
        Evidence::PerSourceShown { here, elsewhere, p_per_mille, error_rate_per_mille } => format!(
            "per-source, not global: {}; under one drop rate for both that happens with p = {} (Fisher's exact \
             test), under the {} error rate a per-source verdict needs",
            both_counts_text(here, elsewhere),
            per_mille_text(*p_per_mille),
            rate_text(*error_rate_per_mille)
        ),
        Evidence::PerSourceUntold { here, elsewhere, p_per_mille, error_rate_per_mille } => format!(
            "{}: a global limit dropping at random gives counts like these with p = {} (Fisher's exact test), over \
             the {} error rate a per-source verdict needs, and no more probes could be made: a global MaxStartups \
             (random drops) or a per-source limit (PerSourceMaxStartups, a penalty); more probes from each address \
             would tell",
            both_counts_text(here, elsewhere),
            per_mille_text(*p_per_mille),
            rate_text(*error_rate_per_mille)
        ),
        Evidence::ServedAfterRelease { banners, ruled_out_pct, error_rate_per_mille } => format!(
            "after the release, {banners} probe(s) in a row got banners: that rules out random drops of \
             {ruled_out_pct} % or more now (at a {} error rate), not lower rates",
            rate_text(*error_rate_per_mille)
        ),
        Evidence::NoDropsSeen { banners, ruled_out_pct, error_rate_per_mille } => format!(
            "{banners} probes in a row got banners: random drops of {ruled_out_pct} % or more would have refused \
             one of them (at a {} error rate); lower drop rates are not ruled out",
            rate_text(*error_rate_per_mille)
        ),
        Evidence::RefusalsBeginAt { held: 0 } => "refusals came only while diagnose was opening connections to \
             hold (the server kept none of them), and cleared once it stopped: nothing refuses anyone now, but a \
             burst of new connections at once is refused"
            .into(),
        Evidence::RefusalsBeginAt { held } => format!(
            "refusals came only while diagnose itself held {held} unauthenticated connections, and cleared once it let \
             them go: nothing refuses anyone now, but the server starts refusing at about {held} unauthenticated \
             connections at once (a burst such as Ansible's default 5 forks, or more, from several hosts can reach it)"
        ),
        Evidence::PenaltyLifted { after_ms } => {
            format!("the block lifted {:.1} s later (polled every 2 s)", *after_ms as f64 / 1000.0)
        }
        Evidence::PenaltyLiftsLater => "the block lifts once the address's outstanding penalty drops under \
             the threshold: at most `max` (600 s by default) from now; --wait-penalty 10m measures it"
            .into(),
        Evidence::PenaltyNotLifted { polled_ms } => {
            format!("the block had not lifted after {:.0} s of polling", *polled_ms as f64 / 1000.0)
        }
    }
}

/// A remedy, for people.
/// A remedy, for people; `port` is the server's port, for the commands it names.
pub fn remedy_text(remedy: &Remedy, port: u16) -> String {
    let maxstartups = format!(
        "raise `MaxStartups` in sshd_config (default 10:30:100; e.g. `MaxStartups 50:30:200`), lower \
         `LoginGraceTime` so stalled connections free their slot sooner, and find who holds unauthenticated \
         connections (`ss -tn state established '( sport = :{port} )'` on the server)"
    );
    let client_text = |client: &Option<std::net::IpAddr>| {
        client.map_or_else(|| "this client".to_string(), |c| c.to_string())
    };
    match remedy {
        Remedy::UnbanOrExempt { client } => {
            let c = client_text(client);
            format!(
                "a ban-after-failures daemon banned {c}: add it to fail2ban's `ignoreip` (jail.local) or sshguard's \
                 whitelist (`-w`), unban it now (`fail2ban-client set sshd unbanip {c}`), or wait out the ban time \
                 (fail2ban's `bantime`, 10 min by default); `fail2ban-client status sshd` lists the banned addresses"
            )
        }
        Remedy::AllowSourceInFirewall { client } => format!(
            "find the firewall rule that refuses or drops {}: `nft list ruleset`, `iptables -S` on the server or on \
             the path, and allow the address",
            client_text(client)
        ),
        Remedy::RaiseFirewallCountLimit => "raise the firewall's per-address connection count (iptables `-m connlimit \
             --connlimit-above`, nft `ct count over`), or hold fewer connections at once from this address \
             (ControlMaster reuses one)"
            .into(),
        Remedy::RaiseFirewallRateLimit => "raise the firewall's per-address rate of new connections (nft `limit rate \
             over`, iptables `-m recent --hitcount` or `-m hashlimit`), or open connections more slowly \
             (ControlMaster reuses one; fewer Ansible forks)"
            .into(),
        Remedy::AllowAtTheListener { client } => format!(
            "allow {} where the connection is accepted: a proxy's ACL (HAProxy `tcp-request connection reject`, nginx \
             `stream` allow/deny), the listener's allow list; if many clients share this address (NAT), check also a \
             per-address limit there, and who holds connections to the port (`ss -tn state established '( sport = \
             :{port} )'` on the server)",
            client_text(client)
        ),
        Remedy::StartServer => "start sshd or fix its `ListenAddress`/`Port` (check with `ss -ltnp` on the server); \
             if sshd runs, look for a firewall rule rejecting with tcp reset"
            .into(),
        Remedy::AllowInFirewall => "allow TCP to this port in the firewall on the path (nftables/iptables DROP rules, \
             cloud security groups), or check that the host is up"
            .into(),
        Remedy::FixRouting => "fix routing to the host, or the firewall rule that rejects with ICMP".into(),
        Remedy::CheckPort => "something other than an SSH-2 server answers on this port: check the port number, or \
             what listens there"
            .into(),
        Remedy::AllowInHostsAllow { client } => {
            let client = client.map_or_else(|| "CLIENT".to_string(), |ip| ip.to_string());
            format!(
                "TCP wrappers: find the matching rule in /etc/hosts.deny (e.g. `sshd: ALL`) and allow this client in \
                 /etc/hosts.allow (`sshd: {client}`); sshd logs the denial only at LogLevel DEBUG1 \
                 ('Connection refused by tcp wrapper'). Otherwise look for another access rule in front of sshd"
            )
        }
        Remedy::CheckServerLog => "check the server's log for the reason (sshd -d on a spare port shows it)".into(),
        Remedy::RaiseMaxStartups => maxstartups,
        Remedy::RaiseMaxStartupsIfEveryAddressRefused => format!("if every address is refused: {maxstartups}"),
        Remedy::RaisePerSourceMaxStartups => "raise or remove `PerSourceMaxStartups` in sshd_config (OpenSSH 8.5+; \
             `PerSourceNetBlockSize` sets what counts as one source), or close the idle unauthenticated connections \
             this address holds"
            .into(),
        Remedy::DropbearMaxUnauthPerIp => "dropbear allows MAX_UNAUTH_PER_IP (5) unauthenticated connections per \
             address, a compile-time constant (default_options.h): close idle connections from this address or \
             rebuild dropbear with a higher limit"
            .into(),
        Remedy::ExemptFromPenalties => "wait for the penalty to lift (each unauthenticated connection earns 1 s, up \
             to `max:600`), or exempt the address: `PerSourcePenaltyExemptList 192.0.2.0/24` in sshd_config; \
             `PerSourcePenalties noauth:0` stops penalising connections that never authenticate (monitoring, \
             probes); `PerSourcePenalties no` turns it off. `sshd -T | grep -i penalt` shows the settings"
            .into(),
        Remedy::RestartHungServer => {
            "check sshd is alive and not overloaded (load, `MaxStartups`, LoginGraceTime); restart it if hung".into()
        }
        Remedy::CheckServerUnderLoad => {
            "the server slows to a stop under load: check its CPU, `MaxStartups`, and LoginGraceTime".into()
        }
        Remedy::RepairServer => "the server accepts but its session process dies before the banner: run `sshd -t` \
             on the server (it checks the configuration and loads the host keys), read its log (`journalctl -u ssh`, \
             /var/log/auth.log: 'Unable to load host key', 'no hostkeys available', 'fatal:'), and reinstall \
             openssh-server if its files are broken"
            .into(),
        Remedy::TellListenerDropsApart => format!(
            "tell a full connection table from a forwarder with no backend: the \
             server's log (sshd logs MaxStartups drops; dropbear logs nothing for its limits), `ss -tn state \
             established '( sport = :{port} )'` on the server (who holds unauthenticated connections), what listens on \
             the port (`ss -ltnp`: docker-proxy, haproxy, kubectl), and a retry after LoginGraceTime (120 s): a full \
             table empties as held connections time out, a forwarder with no backend does not"
            ),
        Remedy::DropbearMaxUnauthClients => "dropbear allows MAX_UNAUTH_CLIENTS (30) unauthenticated connections in \
             all, a compile-time constant (default_options.h): find who holds them (`ss -tn` on the server) or \
             rebuild dropbear with a higher limit"
            .into(),
        Remedy::ReleaseThisHostsConnections => "close the connections this host holds to the server, or open fewer \
             at once (Ansible forks, parallel ssh, ControlMaster multiplexing reuses one): they fill the same limit"
            .into(),
        Remedy::AllowMoreTime => "run again with a longer --max-duration: the probe budget refills at about one \
             connection a second per source address, which keeps OpenSSH 9.8+ from penalising it"
            .into(),
        Remedy::AllowTheServerMoreTime => "run again with a --max-duration longer than --banner-timeout (8 s by \
             default): the server held every probe without a word until the time limit cut it; `sshprobe probe \
             TARGET` shows how long it takes to answer, if it does"
            .into(),
        Remedy::CollectMore => "collect more: `sshprobe probe TARGET --count 50 --interval 200ms -o jsonl`, and check \
             the path (packet loss, middleboxes)"
            .into(),
        Remedy::LookPastTheExchange => "the identification exchange works: look past it (host keys and known_hosts, \
             key exchange algorithms, authentication): `ssh -vvv` shows where it stops"
            .into(),
        Remedy::EnableCurrentAlgorithms => "on the server: upgrade it, or enable current algorithms in its \
             configuration (KexAlgorithms, HostKeyAlgorithms, Ciphers, MACs in sshd_config; for host keys, an \
             Ed25519 key: `ssh-keygen -t ed25519 -f /etc/ssh/ssh_host_ed25519_key` and a `HostKey` line). \
             Meanwhile a client connects with the `-o` options in the evidence, e.g. `ssh -o \
             HostKeyAlgorithms=+ssh-rsa HOST`: that re-enables weak algorithms for this connection and weakens \
             its security, so set it for this host only (a `Host` block in ~/.ssh/config), never globally"
            .into(),
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// A caveat, for people.
pub fn note_text(note: &Note) -> String {
    match note {
        Note::KexinitUnreadable { error } => {
            format!("the server's KEXINIT could not be read ({error}; `sshprobe probe --kex` shows the detail)")
        }
        Note::OlderClientsCannotNegotiate { up_to } => format!(
            "OpenSSH clients up to {up_to} cannot negotiate with this server by default (current ones can)"
        ),
        Note::TerrapinExposed => "the server offers ChaCha20-Poly1305 (or a CBC cipher with an EtM MAC) without \
             strict key exchange: exposed to the Terrapin prefix-truncation attack (CVE-2023-48795); upgrade to \
             OpenSSH 9.6+ (or a server with kex-strict-s-v00@openssh.com), or disable those ciphers and MACs"
            .into(),
        Note::NoPostQuantumKex => "no post-quantum key exchange offered (mlkem768x25519-sha256, \
             sntrup761x25519-sha512): recorded traffic could be decrypted by a future quantum computer; OpenSSH \
             10 warns its users about such servers (OpenSSH 9.0+ servers offer sntrup761, 9.9+ ML-KEM)"
            .into(),
        Note::BudgetExhausted => "the probe budget per source address ran out: some experiments were cut short \
             (raise it with --budget, at the risk of an OpenSSH 9.8+ penalty)"
            .into(),
        Note::NoSecondSource => "no second source address: per-source limits and penalties cannot be told from \
             global ones (give two --source addresses)"
            .into(),
        Note::SecondSourceWouldTell => "a second source address tells a penalty (one address) from MaxStartups \
             (every address): give two --source addresses, or probe from another host"
            .into(),
        Note::OwnProbesNearPenaltyThreshold => "our own probes may have caused this refusal: the address was close \
             to the penalty threshold (earlier connections that did not authenticate) and this diagnosis's \
             connections added to it"
            .into(),
        Note::OwnProbesDuringLoad => {
            "our own probes may have caused this refusal: the exchange worked before the load experiment".into()
        }
        Note::LoadNotConfident { max_held } => format!(
            "the load experiment reached only {max_held} held connections (budget or --max-held): a MaxStartups \
             `start` above that was not tested"
        ),
        Note::OneAddressLookAlikes => "with one source address, a block on this address looks like the host going \
             down, nothing listening any more, or a firewall on the path: a second address (`--source`) would tell"
            .into(),
        Note::CapKeptExperimentFromRunning => "the per-address cap (--max-per-address) kept an experiment from \
             running: the verdict rests on fewer probes"
            .into(),
        Note::StoppedProbingBlockedAddress => "probing from the blocked address stopped at once (at most 2 more \
             SYNs to confirm), so as not to prolong a ban"
            .into(),
        Note::RefusalsPersisted => {
            "refusals persisted after we released our connections: others' load or a penalty".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::diagnose::facts::fixtures::*;
    use crate::experiment::diagnose::{decide, ExperimentKind, ExperimentProbe};
    use crate::experiment::sources::Source;

    /// The README's case: Debian sshd with `sshd: ALL` in hosts.deny.
    fn hosts_deny() -> Diagnosis {
        let facts = facts(vec![
            exp(
                ExperimentKind::Baseline,
                0,
                vec![closed_after(5_010_000), reset_after(5_013_155), closed_after(5_020_000)],
            ),
            exp(
                ExperimentKind::Source,
                0,
                vec![
                    ExperimentProbe {
                        source: Source::Address("127.77.0.1".parse().unwrap()),
                        ..closed_after(5_000_000)
                    };
                    2
                ],
            ),
        ]);
        Diagnosis {
            target: "127.0.0.1:2301".into(),
            remote: "127.0.0.1:2301".parse().unwrap(),
            finding: decide(&facts),
            server: None,
            experiments: facts.experiments,
            budget: BudgetUse {
                per_source: 10,
                pace: Pace::PenaltySafe,
                spent: [(Source::KernelChoice, 3), (Source::Address("127.77.0.1".parse().unwrap()), 2)]
                    .into(),
                waited_ms: 0,
            },
            duration_ms: 6_100,
        }
    }

    /// A load the server refused wholly (diagnose held nothing) is never "holding 0" or "began at 0".
    #[test]
    fn a_load_of_nothing_kept_says_so() {
        for e in [
            Evidence::LoadRefusals { held: 0, from_probing_source: false, tally: Tally::default() },
            Evidence::MaxStartupsUnderLoad { held: 0, cleared: true },
            Evidence::RefusalsBeginAt { held: 0 },
            Evidence::PerSourceUnderLoad { held: 0 },
        ] {
            let text = evidence_text(&e);
            assert!(!text.contains(" 0 ") && text.contains("kept none"), "{text}");
        }
    }

    /// Refusals whose handshake no probe timed (a reset read with the connect) give no server
    /// delay: the sentence says so instead of a range of zeros.
    #[test]
    fn a_close_without_connect_times_claims_no_delay_range() {
        let e = Evidence::ZeroByteClose {
            median_us: 120,
            probes: 4,
            source: Source::KernelChoice,
            server_delay_us: 120,
            server_delay_range_us: None,
            fastest_delay_us: 120,
            class: DelayClass::Listener,
        };
        let text = evidence_text(&e);
        assert!(text.contains("round trip is not taken out") && !text.contains("range"), "{text}");
        assert!(serde_json::to_value(&e).unwrap().get("server_delay_range_us").is_none());
    }

    /// Diagnose prints a probe with the probe JSONL's names: every field they share has the same
    /// name and the same value, and the rest is the experiment's own context.
    #[test]
    fn a_diagnose_probe_speaks_the_probe_jsonl_vocabulary() {
        use crate::experiment::diagnose::facts::fixtures::{banner, closed_at, refusal, reset_after};
        let context = ["source", "held", "server_delay_us"];
        for probe in
            [banner("OpenSSH_9.2p1"), refusal("Exceeded MaxStartups"), reset_after(5_000), closed_at(90, 400)]
        {
            let ours = serde_json::to_value(&probe).unwrap();
            let result = crate::scan::ProbeResult {
                target: "t".into(),
                seq: 0,
                time: SystemTime::UNIX_EPOCH,
                record: probe.record.clone(),
            };
            let jsonl = serde_json::to_value(crate::report::probe::JsonRecord::new(&result)).unwrap();
            for (key, value) in ours.as_object().unwrap() {
                if !context.contains(&key.as_str()) {
                    assert_eq!(Some(value), jsonl.get(key), "{key}: {ours} against {jsonl}");
                }
            }
        }
    }

    #[test]
    fn evidence_in_json_has_its_kind_numbers_and_text() {
        let mut out = Vec::new();
        write_diagnosis(&mut out, &hosts_deny(), std::time::UNIX_EPOCH, Format::Jsonl, false).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        for field in [
            "target",
            "remote",
            "verdict",
            "confidence",
            "evidence",
            "remedy",
            "notes",
            "experiments",
            "budget",
            "duration_ms",
        ] {
            assert!(json.get(field).is_some(), "{field} missing: {json}");
        }
        assert_eq!((&json["verdict"], &json["confidence"]), (&"access_denied".into(), &"high".into()));
        let zero =
            json["evidence"].as_array().unwrap().iter().find(|e| e["kind"] == "zero_byte_close").unwrap();
        assert_eq!(
            *zero,
            serde_json::json!({
                "kind": "zero_byte_close", "median_us": 5_013_155, "probes": 3, "source": "default",
                "server_delay_us": 5_012_955, "server_delay_range_us": [5_009_800, 5_019_800],
                "fastest_delay_us": 5_009_800, "class": "wrappers_delay",
                "text": "every refusal sent zero bytes; the server closed after 5013.155ms (median; 3 probes), 5012.955ms of it its own (range 5009.800ms–5019.800ms; the rest is the round trip); the fastest close less twice the fastest connect leaves 5009.800ms: Debian's TCP-wrappers delay (the child sleeps 5 s)"
            })
        );
        assert_eq!(
            json["evidence"][0]["tally"],
            serde_json::json!({"reset_before_banner": 1, "closed_before_banner": 2})
        );
        assert!(json["remedy"][0].as_str().unwrap().contains("(`sshd: 127.0.0.1`)"), "{json}");
        assert_eq!(json["experiments"][1]["probes"][0]["source"], "127.77.0.1");
    }

    #[test]
    fn text_for_people_is_the_readme_s() {
        let mut out = Vec::new();
        write_diagnosis(&mut out, &hosts_deny(), std::time::UNIX_EPOCH, Format::Table, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        let expected = "\
127.0.0.1:2301  access_denied  (confidence: high, 6.1 s)
  evidence:
    - 3 probes with nothing held, one at a time while answers are fast: 1 reset_before_banner, 2 closed_before_banner
    - from a second address (127.77.0.1): 2 closed_before_banner
    - every refusal sent zero bytes; the server closed after 5013.155ms (median; 3 probes), 5012.955ms of it its own (range 5009.800ms–5019.800ms; the rest is the round trip); the fastest close less twice the fastest connect leaves 5009.800ms: Debian's TCP-wrappers delay (the child sleeps 5 s)
    - a zero-byte close about 5 s after accept, on every probe, is Debian's TCP-wrappers denial (the sshd child sleeps 5 s before exiting); load-dependent limits close in under a millisecond
  remedy:
    - TCP wrappers: find the matching rule in /etc/hosts.deny (e.g. `sshd: ALL`) and allow this client in /etc/hosts.allow (`sshd: 127.0.0.1`); sshd logs the denial only at LogLevel DEBUG1 ('Connection refused by tcp wrapper'). Otherwise look for another access rule in front of sshd
  experiments:
    baseline     held   0  from default      1 reset_before_banner, 2 closed_before_banner
    source       held   0  from 127.77.0.1   2 closed_before_banner
  budget:   2 from 127.77.0.1, 3 from default (paced so no source address owes the server over 10 s of penalty)

";
        assert_eq!(text, expected);
    }
}
