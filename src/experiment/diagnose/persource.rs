//! Per-source against global, decided by a test with a stated error rate. Pure.
//!
//! A global limit (sshd's MaxStartups between `start` and `full`) drops new connections at random,
//! whoever makes them; a per-source limit (PerSourceMaxStartups, dropbear's MAX_UNAUTH_PER_IP, a
//! penalty) refuses one address and spares the others. A few banners for a second address beside
//! refusals for the first are likely under a global limit too: at 30 % drops, two banners in a row
//! come half the time. So the two addresses' counts, taken at the same load, are compared with
//! Fisher's exact test (one-sided: is the probing address refused more often than the other?), and
//! per-source is read only when the chance of counts at least this lopsided under one shared drop
//! rate is under `PER_SOURCE_ERROR_RATE`. A refusal of the other address is itself the answer: a
//! per-source limit on the probing address never refuses it, a global one does.
//!
//! Undecided counts call for more probes from both addresses at the same load (`Split::Untold`),
//! one pair at a time; a verdict that cannot get them names both causes. Looking again after each
//! pair raises the chance of a false per-source reading above the per-look rate; the simulation in
//! the tests runs the whole procedure under global limits of every drop rate and checks that it
//! stays under `PER_SOURCE_ERROR_RATE`.
//!
//! The same rate bounds an `ok`: `n` banners in a row rule out random drops of
//! `drops_ruled_out``(n)` or more at that error rate, and `BANNERS_FOR_OK` banners rule out
//! MaxStartups' default drop rate (`DEFAULT_DROP_RATE`).

use serde::Serialize;

/// The chance accepted of reading a per-source limit where a global limit's random drops made the
/// counts (and of calling a server free of random drops that drops at [`DEFAULT_DROP_RATE`]): one
/// in a thousand, so that ten diagnoses of the same server agree but for one time in a hundred.
pub(crate) const PER_SOURCE_ERROR_RATE: f64 = 0.001;

/// sshd's default MaxStartups `rate` (10:30:100): the least a random-dropping sshd drops.
#[cfg(test)]
pub(crate) const DEFAULT_DROP_RATE: f64 = 0.30;

/// Banners in a row that rule out drops at [`DEFAULT_DROP_RATE`] at [`PER_SOURCE_ERROR_RATE`]:
/// 0.7^20 = 0.08 %.
pub(crate) const BANNERS_FOR_OK: u32 = 20;

/// Most pairs of probes (one per address) added to tell per-source from global.
pub(crate) const MAX_EXTRA_PAIRS: u32 = 6;

/// One address's probes at one load: how many, how many refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Count {
    /// Probes refused (by the limit in question).
    pub refused: u32,
    /// Probes in all.
    pub probes: u32,
}

impl Count {
    /// `refused` of `probes`.
    pub fn new(refused: u32, probes: u32) -> Count {
        Count { refused: refused.min(probes), probes }
    }

    /// Probes not refused.
    pub fn served(self) -> u32 {
        self.probes - self.refused
    }
}

/// What the two addresses' counts say.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Split {
    /// The probing address was refused, the other never, and Fisher's exact test puts the chance
    /// of that under one shared drop rate at `p`, under the error rate: a per-source limit.
    PerSource {
        /// The test's p-value.
        p: f64,
    },
    /// The other address was refused too: whatever else there is, a limit for everyone.
    Global,
    /// Neither: more probes from both would tell (`p` is the test's p-value so far).
    Untold {
        /// The test's p-value.
        p: f64,
    },
    /// The probing address was never refused: nothing to compare.
    NoRefusals,
}

/// Reads `here` (the probing address) against `elsewhere` (another address at the same load).
pub(crate) fn split(here: Count, elsewhere: Count) -> Split {
    if here.refused == 0 {
        return Split::NoRefusals;
    }
    if elsewhere.refused > 0 {
        return Split::Global;
    }
    let p = fisher_greater(here, elsewhere);
    if p < PER_SOURCE_ERROR_RATE {
        Split::PerSource { p }
    } else {
        Split::Untold { p }
    }
}

/// Whether the probing address needs another probe for the test to decide: not when the other
/// address's banners alone, with the `elsewhere_left` probes it may still make, could read
/// per-source (a probing address refused every time, beside enough banners). Each further probe
/// of a refused address meets the limit again.
pub(crate) fn needs_probing_address(here: Count, elsewhere: Count, elsewhere_left: u32) -> bool {
    let best = Count::new(elsewhere.refused, elsewhere.probes.saturating_add(elsewhere_left));
    !matches!(split(here, best), Split::PerSource { .. })
}

/// Fisher's exact test, one-sided: the chance, with the margins fixed (the refusals in all, the
/// probes of each address), that `here` gets at least as many of the refusals as it did, were every
/// probe refused with one shared probability.
pub fn fisher_greater(here: Count, elsewhere: Count) -> f64 {
    let total = here.probes + elsewhere.probes;
    let refused = here.refused + elsewhere.refused;
    if total == 0 {
        return 1.0;
    }
    let all = choose(total, here.probes);
    let tail: f64 = (here.refused..=here.probes.min(refused))
        .map(|x| choose(refused, x) * choose(total - refused, here.probes - x))
        .sum();
    (tail / all).min(1.0)
}

/// `n` choose `k`, as a float (exact for the counts diagnose makes).
fn choose(n: u32, k: u32) -> f64 {
    if k > n {
        return 0.0;
    }
    let k = k.min(n - k);
    (0..k).fold(1.0, |acc, i| acc * f64::from(n - i) / f64::from(i + 1))
}

/// The smallest random-drop rate that `banners` banners in a row rule out at
/// [`PER_SOURCE_ERROR_RATE`]: a server dropping that often would have refused one of them with
/// 99.9 % probability.
pub(crate) fn drops_ruled_out(banners: u32) -> f64 {
    if banners == 0 {
        return 1.0;
    }
    1.0 - PER_SOURCE_ERROR_RATE.powf(1.0 / f64::from(banners))
}

/// [`PER_SOURCE_ERROR_RATE`] in whole per mille, as evidence states it.
pub(crate) fn error_rate_per_mille() -> u32 {
    (PER_SOURCE_ERROR_RATE * 1000.0).round() as u32
}

/// A rate as whole per cent, rounded up (a bound is never understated).
pub(crate) fn pct_up(rate: f64) -> u32 {
    (rate * 100.0 - 1e-9).ceil().max(0.0) as u32
}

/// A p-value in per mille, rounded (0 only below 0.05 ‰).
pub(crate) fn per_mille(p: f64) -> u32 {
    (p * 1000.0).round() as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn fisher_matches_the_closed_forms() {
        // Every probe here refused, none elsewhere: 1 / C(n + m, n).
        assert!((fisher_greater(Count::new(3, 3), Count::new(0, 2)) - 0.1).abs() < 1e-12);
        assert!((fisher_greater(Count::new(3, 3), Count::new(0, 4)) - 1.0 / 35.0).abs() < 1e-12);
        assert!((fisher_greater(Count::new(5, 5), Count::new(0, 4)) - 1.0 / 126.0).abs() < 1e-12);
        // Mixed here: C(n, h) / C(n + m, h) when nothing was refused elsewhere.
        assert!((fisher_greater(Count::new(2, 5), Count::new(0, 8)) - 10.0 / 78.0).abs() < 1e-12);
        // Refusals elsewhere too: the whole tail, here 2 of 2 and 1 of 2 (3 refusals of 4):
        // P(X >= 2) with X ~ Hypergeometric(4, 3, 2) = 3/6.
        assert!((fisher_greater(Count::new(2, 2), Count::new(1, 2)) - 0.5).abs() < 1e-12);
        // Nothing refused: certain.
        assert_eq!(fisher_greater(Count::new(0, 3), Count::new(0, 3)), 1.0);
    }

    #[test]
    fn the_failing_runs_are_untold_and_enough_probes_decide() {
        // 3 of 3 refused here, 2 of 2 banners there: p = 0.1, not a per-source limit.
        assert!(matches!(split(Count::new(3, 3), Count::new(0, 2)), Split::Untold { .. }));
        // 1 refusal in 2 loaded probes against 2 banners.
        assert!(matches!(split(Count::new(1, 2), Count::new(0, 2)), Split::Untold { .. }));
        // A real per-source limit: everything refused here; 4 of 4 beside 10 banners decide (1/1001).
        assert!(matches!(split(Count::new(4, 4), Count::new(0, 10)), Split::PerSource { .. }));
        assert!(matches!(split(Count::new(4, 4), Count::new(0, 9)), Split::Untold { .. }));
        // A refusal elsewhere: global, whatever the counts here.
        assert_eq!(split(Count::new(5, 5), Count::new(1, 4)), Split::Global);
        assert_eq!(split(Count::new(0, 5), Count::new(0, 4)), Split::NoRefusals);
    }

    #[test]
    fn banners_in_a_row_bound_the_drop_rate() {
        assert!(drops_ruled_out(BANNERS_FOR_OK) <= DEFAULT_DROP_RATE);
        assert!(drops_ruled_out(BANNERS_FOR_OK - 1) > DEFAULT_DROP_RATE);
        assert_eq!(pct_up(drops_ruled_out(6)), 69);
        assert_eq!(pct_up(drops_ruled_out(0)), 100);
    }

    /// diagnose's whole procedure, as gather runs it with nothing held: 3 baseline probes, 4 more when
    /// they are mixed, 2 from the other address, then pairs while the test is untold.
    fn procedure(drop: f64, rng: &mut impl Rng) -> Option<Split> {
        let mut probe = || rng.gen_bool(drop);
        let mut here: Vec<bool> = (0..3).map(|_| probe()).collect();
        if !here.iter().any(|&r| r) {
            return None;
        }
        if here.iter().any(|&r| !r) {
            here.extend((0..4).map(|_| probe()));
        }
        let mut elsewhere: Vec<bool> = (0..2).map(|_| probe()).collect();
        let count = |v: &[bool]| Count::new(v.iter().filter(|&&r| r).count() as u32, v.len() as u32);
        let untold = |h: &[bool], e: &[bool]| matches!(split(count(h), count(e)), Split::Untold { .. });
        // As gather's `pairs`: the other address's probe, then (while untold) the probing one's, at
        // most MAX_EXTRA_PAIRS of those; the other goes on alone up to its cap of 12.
        let mut extra_here = 0;
        while untold(&here, &elsewhere) && elsewhere.len() < 12 {
            elsewhere.push(probe());
            let left = 12 - elsewhere.len() as u32;
            if untold(&here, &elsewhere)
                && needs_probing_address(count(&here), count(&elsewhere), left)
                && extra_here < MAX_EXTRA_PAIRS
                && here.len() < 12
            {
                here.push(probe());
                extra_here += 1;
            }
        }
        Some(split(count(&here), count(&elsewhere)))
    }

    /// Under a global limit of any drop rate, the whole sequential procedure reads per-source less
    /// often than the stated error rate.
    #[test]
    fn the_procedure_keeps_its_error_rate_under_every_global_drop_rate() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(15);
        for drop in [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95] {
            let runs = 40_000;
            let per_source = (0..runs)
                .filter(|_| matches!(procedure(drop, &mut rng), Some(Split::PerSource { .. })))
                .count();
            let rate = per_source as f64 / runs as f64;
            assert!(rate < PER_SOURCE_ERROR_RATE, "drop {drop}: per-source in {rate} of runs");
        }
    }

    /// The same under load, held from the probing address: its 2 probes at the first load that
    /// refused anything (so at least one refused), 2 from the other address, then pairs while
    /// untold, the probing address with room for 3 more under its cap and the other going on alone
    /// up to its own (10 more). (Sparing the probing address here, as with nothing held, would
    /// raise the rate over the stated one at some drop rates: so it is not spared under load.)
    fn loaded_procedure(drop: f64, rng: &mut impl Rng) -> Option<Split> {
        let mut probe = || rng.gen_bool(drop);
        let mut here = vec![probe(), probe()];
        if !here.iter().any(|&r| r) {
            return None;
        }
        let mut elsewhere = vec![probe(), probe()];
        let count = |v: &[bool]| Count::new(v.iter().filter(|&&r| r).count() as u32, v.len() as u32);
        let untold = |h: &[bool], e: &[bool]| matches!(split(count(h), count(e)), Split::Untold { .. });
        // Under load the probing address is not spared (gather's `pairs` with `spare_refused` off).
        for _ in 0..10 {
            if !untold(&here, &elsewhere) {
                break;
            }
            elsewhere.push(probe());
            if untold(&here, &elsewhere) && here.len() < 5 {
                here.push(probe());
            }
        }
        Some(split(count(&here), count(&elsewhere)))
    }

    #[test]
    fn under_load_the_procedure_keeps_its_error_rate_too() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(16);
        for drop in [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95] {
            let runs: Vec<Split> = (0..40_000).filter_map(|_| loaded_procedure(drop, &mut rng)).collect();
            let per_source = runs.iter().filter(|s| matches!(s, Split::PerSource { .. })).count();
            let rate = per_source as f64 / runs.len() as f64;
            assert!(rate < PER_SOURCE_ERROR_RATE, "drop {drop}: per-source in {rate} of runs");
        }
    }

    /// With nothing held, a refused address is probed again only while the other address's banners
    /// alone, within its cap, could not decide.
    #[test]
    fn a_refused_address_is_probed_again_only_when_the_other_alone_cannot_decide() {
        // 4 of 4 refused, 2 banners there with 10 more to come: 1/C(16,4) = 1/1820 would decide.
        assert!(!needs_probing_address(Count::new(4, 4), Count::new(0, 2), 10));
        // 3 of 3: the other's 12 banners alone give 1/455, not enough: probe here again.
        assert!(needs_probing_address(Count::new(3, 3), Count::new(0, 2), 10));
        assert!(needs_probing_address(Count::new(1, 3), Count::new(0, 2), 10));
    }

    /// A per-source limit (every probe here refused, none elsewhere) is told within the pairs.
    #[test]
    fn a_per_source_limit_is_told_within_the_extra_pairs() {
        let told = (0..=MAX_EXTRA_PAIRS).find(|k| {
            matches!(split(Count::new(3 + k, 3 + k), Count::new(0, 2 + k)), Split::PerSource { .. })
        });
        assert_eq!(told, Some(4));
        // Under load, 2 probes here and 2 there, 3 more here under the cap: the other address goes
        // on to 8 banners (1/1287).
        assert!(matches!(split(Count::new(5, 5), Count::new(0, 8)), Split::PerSource { .. }));
        assert!(matches!(split(Count::new(5, 5), Count::new(0, 7)), Split::Untold { .. }));
    }

    proptest::proptest! {
        /// The p-value is a probability, and more refusals here (or fewer there) never raise it.
        #[test]
        fn fisher_is_a_monotone_probability(h in 0u32..12, n in 1u32..12, e in 0u32..12, m in 1u32..12) {
            let (h, e) = (h.min(n), e.min(m));
            let p = fisher_greater(Count::new(h, n), Count::new(e, m));
            proptest::prop_assert!((0.0..=1.0 + 1e-12).contains(&p));
            if h < n {
                proptest::prop_assert!(fisher_greater(Count::new(h + 1, n), Count::new(e, m)) <= p + 1e-12);
            }
            if e > 0 {
                proptest::prop_assert!(fisher_greater(Count::new(h, n), Count::new(e - 1, m)) <= p + 1e-12);
            }
        }
    }
}
