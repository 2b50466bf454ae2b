//! Statistics for experiments, without I/O: proportions with confidence intervals, percentiles, and a
//! maximum-likelihood fit of sshd's `MaxStartups start:rate:full` rule to refusal counts.
//!
//! The fit is exact rather than clever: sshd drops a connection with probability
//! `p(n) = rate + (100 - rate) * (n - start) / (full - start)` percent (integer arithmetic) when `n`
//! unauthenticated connections are open, so for every candidate `(start, rate, full)` the binomial
//! log-likelihood of the observed counts is summed, and the best candidate wins. The server's count
//! is sometimes one more than what we hold (a finished probe not yet reaped): how often is fitted
//! too, instead of letting one early refusal drag `start` down. Confidence intervals
//! come from the profile likelihood (every value whose best log-likelihood is within 1.92 of the
//! maximum: a 95 % interval by Wilks' theorem).

use crate::server::MaxStartups;
use serde::Serialize;

/// A proportion's 95 % Wilson score interval.
pub fn wilson(successes: u32, trials: u32) -> (f64, f64) {
    if trials == 0 {
        return (0.0, 1.0);
    }
    let z = 1.959_964;
    let n = f64::from(trials);
    let p = f64::from(successes) / n;
    let denom = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denom;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// The `q` quantile (0..=1) of `values` by the nearest-rank method; `None` when empty.
pub fn percentile(values: &[u64], q: f64) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.saturating_sub(1).min(sorted.len() - 1)])
}

/// Refusals observed with a given number of unauthenticated connections open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LevelCount {
    /// Unauthenticated connections open when the probes connected (ours held, as far as we know).
    pub open: u32,
    /// Probes the server refused at its listener.
    pub refused: u32,
    /// Probes made.
    pub probes: u32,
}

/// A fitted `start:rate:full` with 95 % intervals.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MaxStartupsFit {
    /// The best fit.
    pub best: MaxStartups,
    /// Interval for `start`.
    pub start_ci: (u32, u32),
    /// Interval for `rate`, in percent.
    pub rate_ci: (u32, u32),
    /// Interval for `full` (its upper end is the largest candidate tried when `full` lies beyond
    /// the levels measured).
    pub full_ci: (u32, u32),
    /// Whether `full` lies beyond the highest level measured: then only `start` and the slope were
    /// seen, and `rate` and `full` are uncertain together.
    pub full_beyond_observed: bool,
    /// How often the server seemed to count one connection more than we held (0 on a quiet server).
    pub one_more: f64,
    /// The maximised log-likelihood.
    pub log_likelihood: f64,
}

/// Candidates for how often the server counts one connection more than we hold (a finished probe
/// whose sshd child has not been reaped, someone else's connection): fitted along with the rule,
/// near 0 on a quiet server, 0.1-0.2 on a loaded one (measured here).
const ONE_MORE: [f64; 4] = [0.0, 0.05, 0.1, 0.2];

/// `ln p` and `ln (1 - p)` for every probability a probe can see: `ONE_MORE[e]` mixing drop
/// percentages `a` (at the level) and `b` (one above), floored so that nothing observed is
/// impossible and one stray observation cannot rule a rule out. Computed once: the fit's inner loop
/// is then additions.
struct LogTable(Vec<(f64, f64)>);

impl LogTable {
    fn get() -> &'static LogTable {
        static TABLE: std::sync::OnceLock<LogTable> = std::sync::OnceLock::new();
        TABLE.get_or_init(|| {
            const EPS: f64 = 1e-3;
            let mut t = Vec::with_capacity(ONE_MORE.len() * 101 * 101);
            for e in ONE_MORE {
                for a in 0..=100u32 {
                    for b in 0..=100u32 {
                        let p = ((1.0 - e) * f64::from(a) + e * f64::from(b)) / 100.0;
                        let p = p.clamp(EPS, 1.0 - EPS);
                        t.push((p.ln(), (1.0 - p).ln()));
                    }
                }
            }
            LogTable(t)
        })
    }

    /// The log-likelihood of `refused` of `probes` under rule `ms` at `open` held, with `ONE_MORE[e]`.
    fn level_ll(&self, ms: MaxStartups, e: usize, l: &LevelCount) -> f64 {
        let (a, b) = (ms.drop_percent(l.open) as usize, ms.drop_percent(l.open + 1) as usize);
        let (ln_p, ln_q) = self.0[(e * 101 + a) * 101 + b];
        f64::from(l.refused) * ln_p + f64::from(l.probes - l.refused) * ln_q
    }
}

/// Fits sshd's rule to refusal counts by maximum likelihood. `None` without a single refusal (no
/// limit reached: nothing to fit) or without data.
pub fn fit_maxstartups(levels: &[LevelCount]) -> Option<MaxStartupsFit> {
    let levels: Vec<LevelCount> = levels.iter().copied().filter(|l| l.probes > 0).collect();
    if !levels.iter().any(|l| l.refused > 0) {
        return None;
    }
    let max_open = levels.iter().map(|l| l.open).max()?;
    // `full` may lie beyond every level measured; then it and `rate` trade off (only the slope is
    // seen), so candidates go well past the last level, sparser as they go.
    let beyond = max_open + 1;
    let mut fulls: Vec<u32> = (0..=beyond).collect();
    let mut extra = beyond;
    while extra < 4 * beyond + 100 {
        extra += (extra / 8).max(1);
        fulls.push(extra);
    }
    let top = *fulls.last().unwrap_or(&beyond);

    let table = LogTable::get();
    let mut best: Option<(f64, MaxStartups, f64)> = None;
    let mut by_start = vec![f64::NEG_INFINITY; (beyond + 1) as usize];
    let mut by_rate = [f64::NEG_INFINITY; 101];
    let mut by_full = vec![f64::NEG_INFINITY; (top + 1) as usize];
    // Every candidate is tried: refusals below `start` and banners at or above `full` are unlikely
    // under the floor in `level_ll`, not excluded, so one stray observation cannot force the fit.
    // Candidates that predict the same integer behaviour (`4:0:5` and `5:100:5`) tie; the first
    // found wins, so `start` runs downwards to prefer the canonical one (highest start, lowest full).
    for start in (0..=beyond).rev() {
        for &full in fulls.iter().filter(|&&f| f >= start) {
            let rates: &[u32] = if full == start { &[100] } else { &RATES };
            for &rate in rates {
                let ms = MaxStartups { start, rate, full };
                // The best `one_more` for this rule (a nuisance parameter, maximised out).
                let (ll, one_more) = (0..ONE_MORE.len())
                    .map(|e| (levels.iter().map(|l| table.level_ll(ms, e, l)).sum::<f64>(), ONE_MORE[e]))
                    .fold((f64::NEG_INFINITY, 0.0), |a, b| if b.0 > a.0 { b } else { a });
                let slot = &mut by_start[start as usize];
                *slot = slot.max(ll);
                let slot = &mut by_full[full as usize];
                *slot = slot.max(ll);
                if full == start {
                    // A hard limit says nothing about rate: every rate is as likely.
                    for r in by_rate.iter_mut() {
                        *r = r.max(ll);
                    }
                } else {
                    by_rate[rate as usize] = by_rate[rate as usize].max(ll);
                }
                if best.is_none_or(|(b, _, _)| ll > b) {
                    best = Some((ll, ms, one_more));
                }
            }
        }
    }
    let (ll_max, best, one_more) = best?;
    let interval = |profile: &[f64]| -> (u32, u32) {
        let inside: Vec<u32> = profile
            .iter()
            .enumerate()
            .filter(|(_, &ll)| ll >= ll_max - 1.92)
            .map(|(i, _)| i as u32)
            .collect();
        (inside.first().copied().unwrap_or(0), inside.last().copied().unwrap_or(0))
    };
    Some(MaxStartupsFit {
        best,
        start_ci: interval(&by_start),
        rate_ci: interval(&by_rate),
        full_ci: interval(&by_full),
        full_beyond_observed: best.full > max_open,
        one_more,
        log_likelihood: ll_max,
    })
}

const RATES: [u32; 101] = {
    let mut r = [0u32; 101];
    let mut i = 0;
    while i < 101 {
        r[i] = i as u32;
        i += 1;
    }
    r
};

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn wilson_intervals() {
        let (lo, hi) = wilson(0, 10);
        assert_eq!(lo, 0.0);
        assert!((hi - 0.2775).abs() < 1e-3, "{hi}");
        let (lo, hi) = wilson(5, 10);
        assert!((lo - 0.2366).abs() < 1e-3 && (hi - 0.7634).abs() < 1e-3, "{lo} {hi}");
        assert_eq!(wilson(0, 0), (0.0, 1.0));
    }

    #[test]
    fn percentiles() {
        let v = [5, 1, 4, 2, 3];
        assert_eq!(percentile(&v, 0.5), Some(3));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&v, 1.0), Some(5));
        assert_eq!(percentile(&v, 0.9), Some(5));
        assert_eq!(percentile(&[], 0.5), None);
    }

    /// Refusal counts drawn from sshd's rule, as a perfect measurement would see them.
    fn simulate(truth: MaxStartups, levels: std::ops::Range<u32>, probes: u32, seed: u64) -> Vec<LevelCount> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        levels
            .map(|open| {
                let p = truth.drop_percent(open);
                let refused = (0..probes).filter(|_| rng.gen_range(0..100) < p).count() as u32;
                LevelCount { open, refused, probes }
            })
            .collect()
    }

    #[test]
    fn fit_recovers_the_rule_from_simulated_counts() {
        for (truth, seed) in [
            (MaxStartups { start: 4, rate: 30, full: 12 }, 1),
            (MaxStartups { start: 3, rate: 50, full: 10 }, 2),
            (MaxStartups { start: 10, rate: 30, full: 20 }, 3),
        ] {
            let fit = fit_maxstartups(&simulate(truth, 0..truth.full + 3, 30, seed)).expect("a fit");
            let b = fit.best;
            assert!(b.start.abs_diff(truth.start) <= 1, "{truth} fitted as {b}");
            assert!(b.full.abs_diff(truth.full) <= 1, "{truth} fitted as {b}");
            assert!(b.rate.abs_diff(truth.rate) <= 15, "{truth} fitted as {b}");
            assert!(fit.start_ci.0 <= truth.start && truth.start <= fit.start_ci.1, "{fit:?}");
            assert!(!fit.full_beyond_observed);
        }
    }

    #[test]
    fn fit_survives_the_server_counting_one_more_now_and_then() {
        // What a loaded machine produces: now and then a probe meets one extra connection.
        let truth = MaxStartups { start: 4, rate: 30, full: 12 };
        for seed in 10..16 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let levels: Vec<LevelCount> = (0..14)
                .map(|open| {
                    let refused = (0..20)
                        .filter(|_| {
                            let extra = u32::from(rng.gen_range(0..100) < 15);
                            rng.gen_range(0..100) < truth.drop_percent(open + extra)
                        })
                        .count() as u32;
                    LevelCount { open, refused, probes: 20 }
                })
                .collect();
            let b = fit_maxstartups(&levels).expect("a fit").best;
            assert!(
                b.start.abs_diff(4) <= 1 && b.full.abs_diff(12) <= 1 && b.rate.abs_diff(30) <= 15,
                "seed {seed}: {b}"
            );
        }
    }

    #[test]
    fn fit_of_the_facts_table() {
        // FACTS §4: 9.2p1 with MaxStartups 3:50:10, 40 probes per level.
        let dropped = [0.0, 0.0, 0.0, 0.53, 0.70, 0.63, 0.63, 0.88, 0.88, 0.98, 1.0, 1.0];
        let levels: Vec<LevelCount> = dropped
            .iter()
            .enumerate()
            .map(|(open, &f)| LevelCount {
                open: open as u32,
                refused: (f * 40.0_f64).round() as u32,
                probes: 40,
            })
            .collect();
        let b = fit_maxstartups(&levels).expect("a fit").best;
        assert_eq!(b.start, 3);
        assert!(b.full.abs_diff(10) <= 1, "{b}");
        assert!(b.rate.abs_diff(50) <= 15, "{b}");
    }

    #[test]
    fn a_hard_limit_fits_start_equal_full() {
        let levels: Vec<LevelCount> = (0..8)
            .map(|open| LevelCount { open, refused: if open >= 5 { 20 } else { 0 }, probes: 20 })
            .collect();
        let fit = fit_maxstartups(&levels).expect("a fit");
        assert_eq!((fit.best.start, fit.best.full), (5, 5), "{fit:?}");
    }

    #[test]
    fn full_beyond_the_levels_measured_is_a_lower_bound() {
        let fit = fit_maxstartups(&simulate(MaxStartups::DEFAULT, 0..31, 40, 7)).expect("a fit");
        assert!(fit.full_beyond_observed, "{fit:?}");
        assert!(fit.best.start.abs_diff(10) <= 1, "{fit:?}");
        // The slope is what was seen: 30 % at 10, 45 % at 30 for 10:30:100.
        let seen = fit.best.drop_percent(30);
        assert!(seen.abs_diff(45) <= 12, "{fit:?} predicts {seen} % at 30");
        assert!(fit.full_ci.1 >= 100, "{fit:?}");
    }

    #[test]
    fn nothing_to_fit_without_refusals() {
        let levels =
            [LevelCount { open: 0, refused: 0, probes: 10 }, LevelCount { open: 5, refused: 0, probes: 10 }];
        assert!(fit_maxstartups(&levels).is_none());
        assert!(fit_maxstartups(&[]).is_none());
    }
}
