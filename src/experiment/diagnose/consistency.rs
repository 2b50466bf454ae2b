//! No evidence may state something its probes contradict: over generated probe sets, every count
//! and claim [`decide`] cites is checked against the probes it speaks of.

use super::decide::decide;
use super::evidence::Evidence;
use super::facts::fixtures::*;
use super::facts::{Experiment, ExperimentKind, ExperimentProbe, Facts, HostHolder, Tally};
use super::persource::Count;
use crate::outcome::Outcome;
use proptest::prelude::*;

/// One generated probe: every kind of answer diagnose meets.
fn any_probe() -> impl Strategy<Value = ExperimentProbe> {
    prop_oneof![
        Just(()).prop_map(|_| banner("OpenSSH_9.2p1")),
        Just(()).prop_map(|_| rec(Outcome::Refused)),
        Just(()).prop_map(|_| rec(Outcome::ConnectTimeout)),
        Just(()).prop_map(|_| rec(Outcome::Unreachable)),
        Just(()).prop_map(|_| rec(Outcome::BannerTimeout)),
        (100u64..6_000_000).prop_map(closed_after),
        (100u64..6_000_000).prop_map(reset_after),
        Just(()).prop_map(|_| refusal("Exceeded MaxStartups")),
        Just(()).prop_map(|_| refusal("Not allowed at this time")),
        // Bytes, then a reset: never "zero bytes".
        Just(()).prop_map(|_| probe(Connect::Established, b"SSH-2.0-Open", Some(End::Rst), 50_000)),
    ]
}

fn experiment(kind: ExperimentKind, held: u32, max: usize) -> impl Strategy<Value = Experiment> {
    (prop::collection::vec(any_probe(), 0..=max), any::<bool>()).prop_map(
        move |(mut probes, from_probing)| {
            for p in &mut probes {
                p.held = held;
            }
            Experiment { kind, held, held_from_probing_source: from_probing, probes, hold_refused: 0 }
        },
    )
}

fn any_facts() -> impl Strategy<Value = Facts> {
    (
        prop::collection::vec(any_probe(), 1..=3),
        experiment(ExperimentKind::Determinism, 0, 4),
        experiment(ExperimentKind::Source, 0, 3),
        prop::collection::vec((1u32..=8, 0usize..=2), 0..=3),
        experiment(ExperimentKind::Source, 4, 2),
        experiment(ExperimentKind::Persistence, 0, 2),
        experiment(ExperimentKind::Recheck, 0, 1),
        0u32..3,
        any::<bool>(),
    )
        .prop_flat_map(|(base, det, src, levels, fresh, after, recheck, host, second)| {
            let loads: Vec<_> =
                levels.into_iter().map(|(held, n)| experiment(ExperimentKind::Load, held, n)).collect();
            (Just((base, det, src, fresh, after, recheck, host, second)), loads)
        })
        .prop_map(|((base, det, src, fresh, after, recheck, host, second), loads)| {
            let mut experiments = vec![exp(ExperimentKind::Baseline, 0, base), det, src];
            experiments.extend(loads);
            experiments.extend([fresh, after, recheck]);
            experiments.retain(|e| e.kind == ExperimentKind::Baseline || !e.probes.is_empty());
            let host_connections = (host > 0)
                .then(|| HostHolder {
                    pid: None,
                    process: None,
                    local: "127.0.0.1".parse().unwrap(),
                    count: host,
                })
                .into_iter()
                .collect();
            Facts {
                experiments,
                host_connections,
                second_source: second,
                recheck_wait_ms: 10_000,
                ..Facts::default()
            }
        })
}

/// What `e` claims that `facts` contradicts, if anything.
fn contradiction(facts: &Facts, e: &Evidence) -> Option<String> {
    let unloaded = facts.unloaded();
    let second: Vec<&ExperimentProbe> =
        facts.of(ExperimentKind::Source).filter(|x| x.held == 0).flat_map(|x| &x.probes).collect();
    let sources: Vec<&ExperimentProbe> = facts.probes(ExperimentKind::Source).collect();
    let loads: Vec<&ExperimentProbe> = facts.probes(ExperimentKind::Load).collect();
    let timeline = facts.probing_timeline();
    let count = |ps: &[&ExperimentProbe], f: fn(&ExperimentProbe) -> bool| ps.iter().filter(|p| f(p)).count();
    let bad = |ok: bool, what: &str| (!ok).then(|| format!("{what}: {e:?}"));
    match e {
        Evidence::Unloaded { tally } => bad(*tally == Tally::of(unloaded.iter().copied()), "unloaded tally"),
        Evidence::SecondSource { tally, .. } => {
            bad(*tally == Tally::of(second.iter().copied()), "second tally")
        }
        Evidence::UnloadedBanners { probes, .. } => {
            bad(*probes == unloaded.len() && unloaded.iter().all(|p| p.served()), "unloaded banners")
        }
        Evidence::ServedUnderLoad { max_held } => bad(
            loads.iter().all(|p| p.served()) && facts.of(ExperimentKind::Load).any(|x| x.held == *max_held),
            "served under load",
        ),
        Evidence::ConnectFailed { outcome, probes } => bad(
            *probes == unloaded.len() && unloaded.iter().all(|p| p.outcome() == *outcome),
            "connect failed",
        ),
        Evidence::ZeroByteClose { .. } => bad(
            unloaded.iter().filter(|p| p.refused()).all(|p| p.record.observation.received.is_empty()),
            "zero bytes",
        ),
        Evidence::RefusedHereServedElsewhere { refused, probes }
        | Evidence::RandomRefusals { refused, probes } => {
            bad(*probes == unloaded.len() && *refused == count(&unloaded, |p| p.refused()), "refusal count")
        }
        Evidence::NoBanner { probes, .. } => bad(
            *probes == unloaded.len() && unloaded.iter().all(|p| p.outcome() == Outcome::BannerTimeout),
            "no banner",
        ),
        Evidence::HungServer { syn_unanswered, accepted_silent } => bad(
            *syn_unanswered == count(&unloaded, |p| p.outcome() == Outcome::ConnectTimeout)
                && *accepted_silent == count(&unloaded, |p| p.outcome() == Outcome::BannerTimeout),
            "hung server",
        ),
        Evidence::LoadTimeouts { timeouts } => {
            bad(*timeouts == count(&loads, |p| p.outcome() == Outcome::BannerTimeout), "load timeouts")
        }
        Evidence::LoadRefusals { held, tally, .. } => {
            bad(facts.experiments.iter().any(|x| x.held == *held && x.tally() == *tally), "load refusals")
        }
        Evidence::AfterRelease { tally } => {
            bad(*tally == Tally::of(facts.probes(ExperimentKind::Persistence)), "after release")
        }
        Evidence::SynsBlocked { tally, probes, served_first } => bad(
            *tally == Tally::of(timeline.iter().copied().filter(|p| p.connect_failed()))
                && *probes == timeline.len()
                && timeline.iter().take_while(|p| !p.connect_failed()).filter(|p| p.served()).count()
                    == *served_first,
            "syns blocked",
        ),
        Evidence::ServedElsewhere { banners, probes, .. } => {
            bad(*probes == sources.len() && *banners == count(&sources, |p| p.served()), "served elsewhere")
        }
        Evidence::BanTripped { banners } => {
            bad(timeline.iter().take(*banners).all(|p| p.served()) && *banners > 0, "ban tripped")
        }
        Evidence::BlockOutlivedWait { .. } => {
            bad(facts.probes(ExperimentKind::Recheck).all(|p| p.connect_failed()), "block outlived wait")
        }
        Evidence::RateLimit { .. } => bad(
            facts
                .probes(ExperimentKind::Recheck)
                .chain(facts.probes(ExperimentKind::Persistence))
                .any(|p| p.served()),
            "rate limit lifted",
        ),
        Evidence::PerSourceShown { here, elsewhere, p_per_mille, .. }
        | Evidence::PerSourceUntold { here, elsewhere, p_per_mille, .. } => {
            // The counts are those of the probes at one load (nothing held, or one level held),
            // and the p-value is the test's on them.
            let at = |kind: ExperimentKind, held: u32| -> Vec<&ExperimentProbe> {
                facts.of(kind).filter(|x| x.held == held).flat_map(|x| &x.probes).collect()
            };
            let counted = |ps: &[&ExperimentProbe]| {
                Count::new(ps.iter().filter(|p| !p.served()).count() as u32, ps.len() as u32)
            };
            let levels = std::iter::once((counted(&unloaded), counted(&second))).chain(
                facts.of(ExperimentKind::Load).map(|x| {
                    (counted(&at(ExperimentKind::Load, x.held)), counted(&at(ExperimentKind::Source, x.held)))
                }),
            );
            let matches = levels.into_iter().any(|(h, el)| h == *here && el == *elsewhere);
            let p = super::persource::per_mille(super::persource::fisher_greater(*here, *elsewhere));
            bad(matches && p == *p_per_mille && elsewhere.refused == 0 && here.refused > 0, "per-source test")
        }
        Evidence::ServedAfterRelease { banners, .. } => {
            let after: Vec<&ExperimentProbe> = facts.probes(ExperimentKind::Persistence).collect();
            bad(*banners as usize == after.len() && after.iter().all(|p| p.served()), "served after release")
        }
        Evidence::NoDropsSeen { banners, .. } => {
            let all: Vec<&ExperimentProbe> = facts.experiments.iter().flat_map(|x| &x.probes).collect();
            bad(*banners as usize == all.len() && all.iter().all(|p| p.served()), "no drops seen")
        }
        Evidence::RefusalsBeginAt { .. } => {
            bad(facts.probes(ExperimentKind::Persistence).all(|p| p.served()), "refusals begin at")
        }
        Evidence::HostHoldsConnections { total, .. } => {
            bad(*total == facts.host_connections.iter().map(|h| h.count).sum::<u32>(), "host holds")
        }
        _ => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn no_evidence_contradicts_its_probes(facts in any_facts()) {
        let f = decide(&facts);
        for e in &f.evidence {
            if let Some(why) = contradiction(&facts, e) {
                prop_assert!(false, "{} in {:?}: {:?}", why, f.verdict, facts.experiments);
            }
        }
    }
}
