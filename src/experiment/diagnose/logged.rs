//! What the server's own log adds to a verdict (`diagnose --server-log`). Pure, like `decide`.
//!
//! The wire leaves some causes ambiguous (docs/facts.md §3): OpenSSH 9.8+ sends one line for MaxStartups,
//! per-source limits and penalties; a zero-byte close at the listener may be a full table or a
//! forwarder; a session that dies in milliseconds may be a broken server or an access rule. sshd's
//! log says which, and names the setting. A line is matched to our probes by its client port; a line
//! that names none (a host key it cannot load, a rate-limited summary) counts because it was
//! appended while we probed. A line that explains a refusal makes the verdict `high`; lines this
//! module does not know are shown as they are, never dropped.

use super::decide::{Confidence, Finding, Verdict};
use super::evidence::Evidence;
use super::facts::{ExperimentKind, Facts};
#[cfg(test)]
use crate::serverlog::LogEventKind;
use crate::serverlog::{DropReason, LogEvent, LogFormat, LogLine};
use std::collections::HashSet;

/// The most lines of each kind cited.
const CITED: usize = 4;

/// Refines `f` with what `facts.server_log` holds, if a log was given.
pub(super) fn refine(facts: &Facts, f: &mut Finding) {
    let Some(lines) = &facts.server_log else { return };
    let ours = facts.our_ports();
    let is_ours = |line: &LogLine| line.event.client().is_some_and(|c| ours.contains(&c.port()));
    let addresses = our_addresses(facts);
    let about_us = |line: &LogLine| addresses.iter().any(|&ip| line.event.is_about(ip));
    // Lines about other clients' connections are not ours to cite (the log may be busy); of the
    // recent past, only what names our addresses (a ban, a penalty, a wrappers refusal).
    let relevant: Vec<&LogLine> = lines
        .iter()
        .filter(|l| match (l.before_run, l.event.client(), l.event.address()) {
            (true, _, _) => about_us(l),
            (false, Some(_), _) => is_ours(l),
            (false, None, Some(_)) => about_us(l),
            (false, None, None) => true,
        })
        .collect();

    let mut cited = 0;
    let mut seen = HashSet::new();
    // A ban-after-failures daemon logs every failure it counts before the ban: cite what happened
    // (a ban, a drop) before the failures that led to it, so the cap never leaves the ban out.
    let mut cited_first: Vec<&&LogLine> = relevant.iter().filter(|l| l.event.is_evidence()).collect();
    cited_first.sort_by_key(|l| matches!(l.event, LogEvent::FailureCounted { .. }));
    for line in cited_first {
        let event = line.event.kind();
        if cited < CITED && seen.insert((event, line.message.clone())) {
            f.evidence.push(Evidence::ServerLogged {
                line: line.to_string(),
                event,
                ours: is_ours(line),
                before_run: line.before_run,
            });
            cited += 1;
        }
    }
    // Unknown lines, those above debug level first: a DEBUG log is mostly noise.
    let mut unknown: Vec<&&LogLine> =
        relevant.iter().filter(|l| matches!(l.event, LogEvent::Unrecognised { .. })).collect();
    unknown.sort_by_key(|l| l.level.as_deref().is_some_and(|level| level.starts_with("debug")));
    if !unknown.is_empty() {
        f.evidence.push(Evidence::ServerLoggedUnknown {
            lines: unknown.iter().take(CITED).map(|l| l.to_string()).collect(),
            count: unknown.len(),
        });
    }

    // What the lines prove, strongest first.
    // Only what was logged while we probed decides; the recent past is cited, not concluded from.
    let has = |wanted: &dyn Fn(&LogEvent) -> bool| relevant.iter().any(|l| !l.before_run && wanted(&l.event));
    let second_served = facts
        .of(ExperimentKind::Source)
        .flat_map(|e| &e.probes)
        .any(|p| p.outcome() == crate::outcome::Outcome::Banner);
    if has(&|e| matches!(e, LogEvent::Drop { reason: DropReason::Penalty(_), .. })) {
        f.conclude(Verdict::Penalized, Confidence::High);
    } else if has(&|e| {
        matches!(e, LogEvent::Drop { reason: DropReason::PastMaxStartups | DropReason::Maxstartups, .. })
    }) {
        // sshd logs its global and per-source limits alike: another address tells them apart.
        let verdict = if second_served { Verdict::PerSourceLimit } else { Verdict::Maxstartups };
        f.conclude(verdict, Confidence::High);
    } else if has(&|e| matches!(e, LogEvent::WrapperRefusedConnect { .. } | LogEvent::WrapperRefused)) {
        f.conclude(Verdict::AccessDenied, Confidence::High);
    } else if has(&|e| matches!(e, LogEvent::HostKeyUnloadable { .. } | LogEvent::NoHostKeys))
        || (f.verdict == Verdict::ServerError && has(&|e| matches!(e, LogEvent::Fatal { .. })))
    {
        // A session that cannot start: no host key, or a fatal error where the wire showed one dying.
        f.conclude(Verdict::ServerError, Confidence::High);
    } else if matches!(f.verdict, Verdict::ListenerDrop | Verdict::Maxstartups | Verdict::PerSourceLimit)
        && lines.iter().any(is_dropbear)
        && !lines.iter().any(is_ours)
    {
        // dropbear is there (no forwarder) and said nothing about our probes: its limits.
        f.evidence.push(Evidence::DropbearSilentAboutDrops);
        if f.verdict == Verdict::ListenerDrop {
            f.conclude(Verdict::Maxstartups, Confidence::High);
        }
    }
}

/// Whether `line` is dropbear's: by its program, its format, or what it says.
fn is_dropbear(line: &LogLine) -> bool {
    line.program.as_deref() == Some("dropbear")
        || line.format == LogFormat::DropbearStderr
        || matches!(line.event, LogEvent::DropbearConnection { .. } | LogEvent::DropbearExitBeforeAuth { .. })
}

/// The local addresses our probes came from.
fn our_addresses(facts: &Facts) -> Vec<std::net::IpAddr> {
    let mut addresses: Vec<std::net::IpAddr> =
        facts.experiments.iter().flat_map(|e| &e.probes).filter_map(|p| p.local().map(|l| l.ip())).collect();
    addresses.sort();
    addresses.dedup();
    addresses
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::diagnose::decide;
    use crate::experiment::diagnose::facts::fixtures::*;
    use crate::serverlog::parse_log;

    /// Facts whose probes came from 127.0.0.1:40000 (the fixtures' local address), with `log`.
    fn with_log(experiments: Vec<crate::experiment::diagnose::Experiment>, log: &str) -> Facts {
        Facts { server_log: Some(parse_log(log)), ..facts(experiments) }
    }

    #[test]
    fn a_drop_line_for_our_probe_makes_the_limit_certain_and_names_it() {
        const NOT_ALLOWED: &str = "Not allowed at this time";
        // OpenSSH 10's one line, no second address served: on the wire a likely penalty, or MaxStartups.
        let probes = vec![
            exp(ExperimentKind::Baseline, 0, vec![refusal(NOT_ALLOWED); 3]),
            exp(ExperimentKind::Source, 0, vec![refusal(NOT_ALLOWED); 2]),
        ];
        let maxstartups = "drop connection #1 from [127.0.0.1]:40000 on [127.0.0.1]:2663 Maxstartups\n";
        let f = decide(&with_log(probes.clone(), maxstartups));
        assert_eq!((f.verdict, f.confidence), (Verdict::Maxstartups, Confidence::High));
        assert!(
            f.evidence
                .iter()
                .any(|e| matches!(e, Evidence::ServerLogged { event: LogEventKind::Drop, ours: true, .. })),
            "{:?}",
            f.evidence
        );
        let penalty =
            "drop connection #1 from [127.0.0.1]:40000 on [127.0.0.1]:2663 penalty: connections without \
                       attempting authentication\n";
        let f = decide(&with_log(probes, penalty));
        assert_eq!((f.verdict, f.confidence), (Verdict::Penalized, Confidence::High));
    }

    #[test]
    fn lines_about_others_are_left_out_and_unknown_ones_shown() {
        let probes = vec![exp(ExperimentKind::Baseline, 0, vec![closed_at(80, 12_900); 3])];
        let log = "drop connection #1 from [10.0.0.9]:5555 on [127.0.0.1]:22 past MaxStartups\n\
                   Unable to load host key: /etc/ssh/ssh_host_ed25519_key\n\
                   something sshd never said before\n";
        let f = decide(&with_log(probes, log));
        // The host key, not someone else's MaxStartups drop.
        assert_eq!((f.verdict, f.confidence), (Verdict::ServerError, Confidence::High), "{:?}", f.evidence);
        assert!(f
            .evidence
            .iter()
            .all(|e| !matches!(e, Evidence::ServerLogged { event: LogEventKind::Drop, .. })));
        assert!(
            f.evidence.contains(&Evidence::ServerLoggedUnknown {
                lines: vec!["something sshd never said before".into()],
                count: 1
            }),
            "{:?}",
            f.evidence
        );
    }

    #[test]
    fn dropbear_saying_nothing_about_our_drops_is_its_limit_not_a_forwarder() {
        let quick = || closed_at(60, 300);
        let probes = vec![
            exp(ExperimentKind::Baseline, 0, vec![quick(); 3]),
            exp(ExperimentKind::Source, 0, vec![quick(); 2]),
        ];
        let log = "[311] Dec 02 04:50:01 Child connection from 127.0.0.9:51234\n";
        let f = decide(&with_log(probes, log));
        assert_eq!((f.verdict, f.confidence), (Verdict::Maxstartups, Confidence::High), "{:?}", f.evidence);
        assert!(f.evidence.contains(&Evidence::DropbearSilentAboutDrops));
    }

    #[test]
    fn a_ban_on_our_address_before_the_run_is_cited_and_one_on_another_is_not() {
        let probes = vec![exp(ExperimentKind::Baseline, 0, vec![closed_at(80, 300); 3])];
        let log = "2026-12-03 09:19:07,416 fail2ban.actions        [9]: NOTICE  [sshd] Ban 127.0.0.1\n\
                   2026-12-03 09:19:07,417 fail2ban.actions        [9]: NOTICE  [sshd] Ban 192.0.2.7\n";
        let mut lines = parse_log(log);
        lines.iter_mut().for_each(|l| l.before_run = true);
        let f = decide(&Facts { server_log: Some(lines), ..facts(probes) });
        let cited: Vec<&Evidence> =
            f.evidence.iter().filter(|e| matches!(e, Evidence::ServerLogged { .. })).collect();
        assert_eq!(cited.len(), 1, "{:?}", f.evidence);
        assert!(
            matches!(cited[0], Evidence::ServerLogged { event: LogEventKind::Banned, before_run: true, line, .. }
                if line.contains("Ban 127.0.0.1")),
            "{cited:?}"
        );
    }

    #[test]
    fn lines_of_the_past_about_others_or_about_old_connections_are_left_out() {
        let probes = vec![exp(ExperimentKind::Baseline, 0, vec![closed_at(80, 300); 3])];
        // An old connection from our address (another port) and a drop for another client.
        let log = "Dec  3 09:19:07 lab sshd[5]: drop connection #3 from [127.0.0.1]:39999 on [127.0.0.1]:22 past MaxStartups\n\
                   Dec  3 09:19:07 lab sshd[5]: drop connection #3 from [10.0.0.9]:40000 on [127.0.0.1]:22 past MaxStartups\n";
        let mut lines = parse_log(log);
        lines.iter_mut().for_each(|l| l.before_run = true);
        let f = decide(&Facts { server_log: Some(lines.clone()), ..facts(probes.clone()) });
        // The first names our address: cited as of the past, but it does not decide this run; the
        // second is someone else's.
        let cited: Vec<&Evidence> =
            f.evidence.iter().filter(|e| matches!(e, Evidence::ServerLogged { .. })).collect();
        assert_eq!(cited.len(), 1, "{:?}", f.evidence);
        assert!(
            matches!(cited[0], Evidence::ServerLogged { before_run: true, ours: false, .. }),
            "{cited:?}"
        );
        assert_ne!(f.verdict, Verdict::Maxstartups, "{:?}", f.evidence);
    }

    #[test]
    fn a_ban_is_cited_before_the_failures_that_led_to_it() {
        let probes = vec![exp(ExperimentKind::Baseline, 0, vec![closed_at(80, 300); 3])];
        // Six distinct failures (distinct lines: the citing dedups equal ones), then the ban.
        let mut log: String = (0..6)
            .map(|i| {
                format!(
                    "2026-12-03 09:19:0{i},267 fail2ban.filter         [9]: INFO    [sshd] Found 127.0.0.1 - \
                     2026-12-03 09:19:0{i}\n"
                )
            })
            .collect();
        log += "2026-12-03 09:19:07,416 fail2ban.actions        [9]: NOTICE  [sshd] Ban 127.0.0.1\n";
        let f = decide(&with_log(probes, &log));
        assert!(
            f.evidence
                .iter()
                .any(|e| matches!(e, Evidence::ServerLogged { event: LogEventKind::Banned, .. })),
            "{:?}",
            f.evidence
        );
    }
}
