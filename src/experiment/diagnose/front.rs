//! What stands in front of sshd: firewall rules that refuse or drop one address's SYNs. Pure.
//!
//! The signals are computed once, each in one place ([`Signals::of`]), then one `match` over them
//! ([`rule`]) gives the verdict: a new front-end is a new arm. A block is a connect that fails (RST
//! or ICMP to the SYN, or no answer) for the probing address:
//!
//! | block | elsewhere | held here | lifted | verdict |
//! |---|---|---|---|---|
//! | from the start | served | none | — | `source_blocked` (a static rule or an older ban) |
//! | from the start | served | some | — | `firewall_limit`, a count (connlimit, `ct count`) |
//! | mid-run | — | some | after release | `firewall_limit`, a count |
//! | mid-run | — | none | after a wait | `firewall_limit`, a rate (`limit rate`, `recent`, hashlimit) |
//! | mid-run | served, or one address | — | not | `source_blocked`: our probes tripped a ban |
//!
//! Anything else is left to the rules for what sshd itself does ([`super::decide()`]).

use super::decide::{Confidence, Verdict};
use super::evidence::{Evidence, Note};
use super::facts::{ExperimentKind, ExperimentProbe, Facts, Tally};
use crate::experiment::sources::Source;
use crate::outcome::Outcome;
use std::net::IpAddr;

/// When the probing address's SYNs began to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Block {
    /// Never: every connect from it succeeded (or failed after accept).
    None,
    /// From its first probe, and every probe after.
    FromStart,
    /// After `served` banners, and every probe after (a persistence or recheck banner aside).
    MidRun {
        /// Banners before the first blocked SYN.
        served: usize,
    },
    /// Some connects failed among others: no clear block.
    Mixed,
}

/// The signals a front-end verdict rests on, each computed here and nowhere else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Signals {
    /// When the probing address's SYNs began to fail.
    pub block: Block,
    /// The probing address's blocked probes' outcomes.
    pub blocked: Tally,
    /// Probes from the probing address in all.
    pub probes: usize,
    /// Another address's probes: (address, banners, probes); `None` when none was tried.
    pub elsewhere: Option<(Source, usize, usize)>,
    /// Connections the probing address held when its SYNs failed: this host's (other processes)
    /// and ours (the load experiment's, when held from it).
    pub held_here: u32,
    /// A probe after releasing our connections got a banner again.
    pub lifted_after_release: bool,
    /// The recheck after a wait with nothing held: `Some(true)` when it got a banner.
    pub recheck: Option<bool>,
    /// How long the recheck waited.
    pub recheck_wait_ms: u64,
    /// Whether a second address was available at all.
    pub second_source: bool,
}

impl Signals {
    /// The signals of `facts`.
    pub(super) fn of(facts: &Facts) -> Signals {
        let timeline = facts.probing_timeline();
        let first_block = timeline.iter().position(|p| p.connect_failed());
        let is_release_probe = |p: &&ExperimentProbe| p.held == 0 && p.served();
        let block = match first_block {
            None => Block::None,
            Some(i) => {
                let before_all_served = timeline[..i].iter().all(|p| p.served());
                // After the first block, only blocks, or banners once nothing was held (a count limit
                // lifting after release, a rate limit after a wait).
                let after_all_blocked = timeline[i..]
                    .iter()
                    .all(|p| p.connect_failed() || (is_release_probe(p) && kind_after_load(facts, p)));
                match (i, before_all_served, after_all_blocked) {
                    (0, _, true) => Block::FromStart,
                    (served, true, true) => Block::MidRun { served },
                    _ => Block::Mixed,
                }
            }
        };
        let blocked = Tally::of(timeline.iter().copied().filter(|p| p.connect_failed()));
        let elsewhere: Vec<&ExperimentProbe> = facts.probes(ExperimentKind::Source).collect();
        let elsewhere = elsewhere
            .first()
            .map(|first| (first.source, elsewhere.iter().filter(|p| p.served()).count(), elsewhere.len()));
        let probing: Option<IpAddr> =
            timeline.iter().find_map(|p| p.source.ip().or(p.local().map(|a| a.ip())));
        let host_here: u32 =
            facts.host_connections.iter().filter(|h| Some(h.local) == probing).map(|h| h.count).sum();
        let ours_here = facts
            .of(ExperimentKind::Load)
            .filter(|e| e.held_from_probing_source && e.probes.iter().any(|p| p.connect_failed()))
            .map(|e| e.held)
            .max()
            .unwrap_or(0);
        let after_block = |kind: ExperimentKind| {
            let probes: Vec<&ExperimentProbe> = facts.probes(kind).collect();
            (!probes.is_empty()).then(|| probes.iter().any(|p| p.served()))
        };
        Signals {
            block,
            blocked,
            probes: timeline.len(),
            elsewhere,
            held_here: host_here + ours_here,
            lifted_after_release: after_block(ExperimentKind::Persistence) == Some(true),
            recheck: after_block(ExperimentKind::Recheck),
            recheck_wait_ms: facts.recheck_wait_ms,
            second_source: facts.second_source,
        }
    }

    /// Every blocked SYN was refused (RST or ICMP), none went unanswered.
    fn refused_not_dropped(&self) -> bool {
        self.blocked.counts().all(|(o, _)| o != Outcome::ConnectTimeout)
    }

    fn served_elsewhere(&self) -> bool {
        self.elsewhere.as_ref().is_some_and(|&(_, banners, probes)| probes > 0 && banners == probes)
    }
}

/// Whether `p` was made after the load experiment (persistence or recheck).
fn kind_after_load(facts: &Facts, p: &ExperimentProbe) -> bool {
    facts
        .experiments
        .iter()
        .filter(|e| matches!(e.kind, ExperimentKind::Persistence | ExperimentKind::Recheck))
        .any(|e| e.probes.iter().any(|q| std::ptr::eq(q, p)))
}

/// A front-end verdict: what [`rule`] concludes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FrontFinding {
    pub verdict: Verdict,
    pub confidence: Confidence,
    pub evidence: Vec<Evidence>,
    pub notes: Vec<Note>,
}

/// The front-end rules: one arm per kind of block. `None`: no front-end signature; sshd's own rules
/// decide.
pub(super) fn rule(s: &Signals) -> Option<FrontFinding> {
    use Block::*;
    let served_elsewhere = s.served_elsewhere();
    let one_address = !s.second_source;
    let held = s.held_here > 0;
    let (verdict, confidence, specific, notes): (Verdict, Confidence, Vec<Evidence>, Vec<Note>) =
        match (s.block, served_elsewhere, held, s.lifted_after_release, s.recheck) {
            (None | Mixed, ..) => return Option::None,
            // Refused while it holds connections, others served: a count rule.
            (FromStart, true, true, ..) => (
                Verdict::FirewallLimit,
                Confidence::High,
                vec![Evidence::CountLimit { held_here: s.held_here, lifted: false }],
                vec![],
            ),
            // Refused from the first SYN, others served, nothing held: a rule for this address.
            (FromStart, true, false, ..) => (Verdict::SourceBlocked, Confidence::High, vec![], vec![]),
            // Everyone refused from the start, or nobody else asked: not a front-end signature.
            (FromStart, false, ..) => return Option::None,
            // Blocked while our connections from it were held, served once they were released, and
            // refused (count rules reject: connlimit's usual `--reject-with tcp-reset`); dropped SYNs
            // that pass again a moment later are read as a rate rule's tokens refilling.
            (MidRun { .. }, _, true, true, _) if s.refused_not_dropped() => (
                Verdict::FirewallLimit,
                Confidence::Medium,
                vec![Evidence::CountLimit { held_here: s.held_here, lifted: true }],
                vec![],
            ),
            // Blocked after a burst, served again after a wait with nothing held: a rate rule.
            (MidRun { served }, _, _, true, _) | (MidRun { served }, _, _, _, Some(true)) => (
                Verdict::FirewallLimit,
                if served_elsewhere || one_address { Confidence::High } else { Confidence::Medium },
                vec![Evidence::RateLimit { passed: served, waited_ms: s.recheck_wait_ms }],
                vec![],
            ),
            // Served, then blocked, and still blocked after the wait: our probes tripped a ban.
            (MidRun { served }, true, _, _, recheck) => {
                let mut e = vec![Evidence::BanTripped { banners: served }];
                if recheck == Some(false) {
                    e.push(Evidence::BlockOutlivedWait { waited_ms: s.recheck_wait_ms });
                }
                let confidence = if recheck == Some(false) { Confidence::High } else { Confidence::Medium };
                (Verdict::SourceBlocked, confidence, e, vec![Note::StoppedProbingBlockedAddress])
            }
            (MidRun { served }, false, _, _, recheck) if one_address => {
                let mut e = vec![Evidence::BanTripped { banners: served }];
                if recheck == Some(false) {
                    e.push(Evidence::BlockOutlivedWait { waited_ms: s.recheck_wait_ms });
                }
                (
                    Verdict::SourceBlocked,
                    Confidence::Medium,
                    e,
                    vec![Note::StoppedProbingBlockedAddress, Note::OneAddressLookAlikes],
                )
            }
            // Another address refused too: the server went away mid-run, not a rule for us.
            (MidRun { .. }, false, ..) => return Option::None,
        };
    let served_first = match s.block {
        MidRun { served } => served,
        _ => 0,
    };
    let mut evidence =
        vec![Evidence::SynsBlocked { tally: s.blocked.clone(), probes: s.probes, served_first }];
    if let Some((source, banners, probes)) = &s.elsewhere {
        evidence.push(Evidence::ServedElsewhere { source: *source, banners: *banners, probes: *probes });
    }
    evidence.extend(specific);
    Some(FrontFinding { verdict, confidence, evidence, notes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::diagnose::facts::fixtures::*;
    use crate::experiment::diagnose::facts::{Experiment, HostHolder};

    fn ok() -> ExperimentProbe {
        banner("OpenSSH_9.2p1")
    }

    fn signals(experiments: Vec<Experiment>) -> Signals {
        Signals::of(&facts(experiments))
    }

    #[test]
    fn a_static_rule_blocks_from_the_first_syn() {
        for outcome in [Outcome::Refused, Outcome::ConnectTimeout, Outcome::Unreachable] {
            let s = signals(vec![
                exp(ExperimentKind::Baseline, 0, vec![rec(outcome); 3]),
                exp(ExperimentKind::Source, 0, vec![ok(); 2]),
            ]);
            assert_eq!(s.block, Block::FromStart);
            let f = rule(&s).unwrap();
            assert_eq!((f.verdict, f.confidence), (Verdict::SourceBlocked, Confidence::High));
            assert!(f.evidence.contains(&Evidence::ServedElsewhere {
                source: Source::KernelChoice,
                banners: 2,
                probes: 2
            }));
        }
        // Everyone refused: nothing listens, not a rule for this address.
        let s = signals(vec![
            exp(ExperimentKind::Baseline, 0, vec![rec(Outcome::Refused); 3]),
            exp(ExperimentKind::Source, 0, vec![rec(Outcome::Refused); 2]),
        ]);
        assert_eq!(rule(&s), None);
    }

    #[test]
    fn refused_while_this_address_holds_connections_is_a_count_limit() {
        let f = Facts {
            host_connections: vec![HostHolder {
                pid: Some(7),
                process: Some("python3".into()),
                local: "127.0.0.1".parse().unwrap(),
                count: 2,
            }],
            ..facts(vec![
                exp(ExperimentKind::Baseline, 0, vec![rec(Outcome::Refused); 3]),
                exp(ExperimentKind::Source, 0, vec![ok(); 2]),
            ])
        };
        // The fixtures' probes come from the kernel's choice, 127.0.0.1.
        let f = rule(&Signals::of(&f)).unwrap();
        assert_eq!(f.verdict, Verdict::FirewallLimit);
        assert!(
            f.evidence.contains(&Evidence::CountLimit { held_here: 2, lifted: false }),
            "{:?}",
            f.evidence
        );
    }

    fn ban_run(after: Vec<Experiment>) -> Vec<Experiment> {
        let mut e = vec![
            exp(ExperimentKind::Baseline, 0, vec![ok(); 3]),
            exp(ExperimentKind::Load, 3, vec![rec(Outcome::Refused)]),
            exp(ExperimentKind::Source, 3, vec![ok(); 2]),
        ];
        e.extend(after);
        e
    }

    #[test]
    fn served_then_blocked_and_still_blocked_after_a_wait_is_a_ban_we_tripped() {
        let mut f = facts(ban_run(vec![
            exp(ExperimentKind::Persistence, 0, vec![rec(Outcome::Refused)]),
            exp(ExperimentKind::Recheck, 0, vec![rec(Outcome::Refused)]),
        ]));
        f.recheck_wait_ms = 10_000;
        let s = Signals::of(&f);
        assert_eq!(s.block, Block::MidRun { served: 3 });
        let f = rule(&s).unwrap();
        assert_eq!((f.verdict, f.confidence), (Verdict::SourceBlocked, Confidence::High));
        assert!(f.evidence.contains(&Evidence::BanTripped { banners: 3 }));
        assert!(f.evidence.contains(&Evidence::BlockOutlivedWait { waited_ms: 10_000 }));
        assert!(f.notes.contains(&Note::StoppedProbingBlockedAddress));
    }

    #[test]
    fn served_again_after_a_wait_is_a_rate_limit() {
        let mut f = facts(ban_run(vec![
            exp(ExperimentKind::Persistence, 0, vec![rec(Outcome::ConnectTimeout)]),
            exp(ExperimentKind::Recheck, 0, vec![ok()]),
        ]));
        f.recheck_wait_ms = 10_000;
        let f = rule(&Signals::of(&f)).unwrap();
        assert_eq!((f.verdict, f.confidence), (Verdict::FirewallLimit, Confidence::High));
        assert!(
            f.evidence.contains(&Evidence::RateLimit { passed: 3, waited_ms: 10_000 }),
            "{:?}",
            f.evidence
        );
    }

    #[test]
    fn blocked_while_we_held_from_it_and_served_after_release_is_a_count_limit() {
        let mut load = exp(ExperimentKind::Load, 3, vec![rec(Outcome::Refused)]);
        load.held_from_probing_source = true;
        let f = Facts {
            experiments: vec![
                exp(ExperimentKind::Baseline, 0, vec![ok(); 3]),
                load,
                exp(ExperimentKind::Persistence, 0, vec![ok()]),
            ],
            ..Facts::default()
        };
        let f = rule(&Signals::of(&f)).unwrap();
        assert_eq!(f.verdict, Verdict::FirewallLimit);
        assert!(
            f.evidence.contains(&Evidence::CountLimit { held_here: 3, lifted: true }),
            "{:?}",
            f.evidence
        );
    }

    #[test]
    fn one_address_blocked_mid_run_names_the_look_alikes() {
        let f = Facts {
            experiments: vec![
                exp(ExperimentKind::Baseline, 0, vec![ok(); 3]),
                exp(ExperimentKind::Load, 3, vec![rec(Outcome::ConnectTimeout)]),
                exp(ExperimentKind::Persistence, 0, vec![rec(Outcome::ConnectTimeout)]),
                exp(ExperimentKind::Recheck, 0, vec![rec(Outcome::ConnectTimeout)]),
            ],
            ..Facts::default()
        };
        let f = rule(&Signals::of(&f)).unwrap();
        assert_eq!((f.verdict, f.confidence), (Verdict::SourceBlocked, Confidence::Medium));
        assert!(f.notes.contains(&Note::OneAddressLookAlikes));
    }

    #[test]
    fn blocks_among_banners_are_no_front_end_signature() {
        let s =
            signals(vec![exp(ExperimentKind::Baseline, 0, vec![ok(), rec(Outcome::ConnectTimeout), ok()])]);
        assert_eq!(s.block, Block::Mixed);
        assert_eq!(rule(&s), None);
        let s = signals(vec![exp(ExperimentKind::Baseline, 0, vec![ok(); 3])]);
        assert_eq!(rule(&s), None);
    }
}
