//! `limits`: benchmark how a server behaves as unauthenticated connections pile up.
//!
//! 1. **ramp**: hold 0, 1, 2, ... connections (spread over source addresses) and, at each level,
//!    probe one at a time so the server's count is what we hold; the refused fraction at each
//!    level, with its Wilson interval and banner latency percentiles;
//! 2. **fit**: sshd's `start:rate:full` by maximum likelihood ([`super::stats::fit_maxstartups`]);
//!    others' unauthenticated connections count too, so the fit is the curve *as seen from here*;
//! 3. **recheck**: with everything released, probe again: refusals now mean a penalty (OpenSSH
//!    9.8+) or others' load distorted the measurement;
//! 4. **accept rate**: back-to-back probes below `start` for a few seconds: banners per second;
//! 5. **grace** (asked for with `--grace`, since it costs waiting): hold a few connections until
//!    the server gives up on them: LoginGraceTime (OpenSSH 9.9+ adds 0–4 s of jitter).
//!
//! Every connection is released on every path: the [`Holder`] closes them when dropped.

use super::budget::Budget;
use super::holder::Holder;
use super::stats::{fit_maxstartups, percentile, wilson, LevelCount, MaxStartupsFit};
use crate::engine::{Engine, ProbeRequest};
use crate::outcome::{KnownRefusal, Outcome};
use crate::record::ProbeRecord;
use crate::server::Software;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// How `limits` runs.
#[derive(Debug, Clone)]
pub struct LimitsOptions {
    /// The most connections held at once.
    pub max_held: u32,
    /// Stop the ramp after this long.
    pub max_duration: Duration,
    /// Probes at each level.
    pub probes_per_level: u32,
    /// Connect timeout per probe.
    pub connect_timeout: Duration,
    /// Banner deadline per probe.
    pub banner_timeout: Duration,
    /// Local addresses to spread probes and holders over. Empty: the kernel's choice, plus
    /// 127.77.x.y on IPv4 loopback.
    pub sources: Vec<IpAddr>,
    /// How long to measure the accept rate (zero: skip).
    pub rate_duration: Duration,
    /// Measure LoginGraceTime, waiting at most this long (None: skip).
    pub grace: Option<Duration>,
    /// Measure it even on OpenSSH 9.8–9.9, which charge an expired LoginGraceTime as a crash (90 s
    /// of penalty per held connection): the user said so.
    pub accept_grace_penalty: bool,
}

impl Default for LimitsOptions {
    fn default() -> LimitsOptions {
        LimitsOptions {
            max_held: 200,
            max_duration: Duration::from_secs(120),
            probes_per_level: 20,
            connect_timeout: crate::engine::DEFAULT_CONNECT_TIMEOUT,
            banner_timeout: crate::engine::DEFAULT_BANNER_TIMEOUT,
            sources: Vec::new(),
            rate_duration: Duration::from_secs(3),
            grace: None,
            accept_grace_penalty: false,
        }
    }
}

/// What one level of the ramp showed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Level {
    /// Our connections alive while probing.
    pub held: u32,
    /// Probes made.
    pub probes: u32,
    /// Refused after accept (any refusal: message, close or reset before the banner).
    pub refused: u32,
    /// Banners.
    pub banners: u32,
    /// Banner timeouts.
    pub timeouts: u32,
    /// Other outcomes (connect failures...).
    pub other: u32,
    /// The refused fraction of the probes the server decided on (refusals and banners: timeouts
    /// and failed connects are left out, as in the fit).
    pub fraction: f64,
    /// Its 95 % Wilson interval.
    pub fraction_ci: (f64, f64),
    /// Banner latency (connect to complete ident), µs: 50th, 90th, 99th percentile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<[u64; 3]>,
    /// The refusal lines seen, with counts.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub messages: BTreeMap<String, u32>,
}

/// The sustained accept rate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AcceptRate {
    /// Banners per second.
    pub banners_per_s: f64,
    /// Probes in flight at once.
    pub concurrency: u32,
    /// Probes made.
    pub probes: u32,
    /// Of which refused.
    pub refused: u32,
    /// Banner latency p50, p90, p99 (µs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<[u64; 3]>,
    /// Measured over this long, in ms.
    pub duration_ms: u64,
}

/// LoginGraceTime, measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Grace {
    /// How long each held connection lived, in ms.
    pub lifetimes_ms: Vec<u64>,
    /// The shortest lifetime, in seconds: LoginGraceTime (OpenSSH 9.9+ adds up to 4 s of jitter).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate_s: Option<f64>,
    /// Connections still open when we stopped waiting.
    pub still_open: u32,
}

/// Everything `limits` measured.
#[derive(Debug, Clone, Serialize)]
pub struct LimitsReport {
    /// The target as given.
    pub target: String,
    /// The address measured.
    pub remote: SocketAddr,
    /// The server's software, from its banner.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The ramp.
    pub levels: Vec<Level>,
    /// The fitted `start:rate:full`, as seen from here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fit: Option<MaxStartupsFit>,
    /// A jump from no refusal to every probe refused: a hard limit, not sshd's random early drop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hard_limit: Option<HardLimit>,
    /// With everything released after the ramp: probes and refusals.
    pub recheck: (u32, u32),
    /// The sustained accept rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept_rate: Option<AcceptRate>,
    /// LoginGraceTime.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grace: Option<Grace>,
    /// What may have distorted the measurement (in words: `report::limits::describe_warning`).
    pub warnings: Vec<LimitsWarning>,
    /// How long it took, in ms.
    pub duration_ms: u64,
}

/// What may distort a `limits` measurement. Facts only: the report puts them in words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum LimitsWarning {
    /// The server has PerSourcePenalties: refusals from penalties mix into the curve.
    Penalties {
        /// The server's software.
        software: Software,
        /// Whether probes and holders are spread over many source addresses.
        spread: bool,
    },
    /// One source address: a per-source limit would look like MaxStartups.
    OneSource,
    /// Every probe of a level timed out: the server stopped answering.
    AllTimedOut {
        /// Connections held at that level.
        held: u32,
    },
    /// `--max-duration` ended the ramp.
    MaxDuration {
        /// Connections held when it stopped.
        held: u32,
    },
    /// Probes were refused with nothing held any more: the curve is distorted.
    RefusedAfterRelease {
        /// Refused.
        refused: u32,
        /// Probes made.
        probes: u32,
        /// Whether the refusals said `Not allowed at this time` on a server with penalties.
        penalty_lines: bool,
    },
}

/// The phases of a `limits` run, for a progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Holding more and more connections, probing at each level.
    Ramp,
    /// Finding a hard limit's exact level.
    Bisect,
    /// Probing again with everything released.
    Recheck,
    /// Measuring the sustained accept rate.
    AcceptRate,
    /// Waiting for LoginGraceTime.
    Grace,
}

/// A hard limit: no probe refused at `accepted_at` held connections, every probe refused at
/// `refused_at`. Bisected down to one connection apart unless the time ran out. Dropbear's
/// `MAX_UNAUTH_CLIENTS` (30) is one; sshd's `MaxStartups N` (N:100:N) is another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HardLimit {
    /// The highest level measured with no refusal.
    pub accepted_at: u32,
    /// The lowest level measured with every probe refused.
    pub refused_at: u32,
}

impl HardLimit {
    /// Finds the jump in `levels` (sorted by `held`): a level with banners and no refusal right
    /// below one where every probe was refused.
    pub fn find(levels: &[Level]) -> Option<HardLimit> {
        levels.windows(2).find_map(|w| {
            let (below, above) = (&w[0], &w[1]);
            let clean = below.refused == 0 && below.banners > 0;
            let saturated = above.probes > 0 && above.refused == above.probes;
            (clean && saturated).then_some(HardLimit { accepted_at: below.held, refused_at: above.held })
        })
    }

    /// Whether the limit is known to one connection.
    pub(crate) fn is_exact(self) -> bool {
        self.refused_at == self.accepted_at + 1
    }
}

/// Why `limits` could not run.
#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    /// The first probe did not get a banner.
    #[error("{remote} did not answer with a banner ({outcome}): limits needs a working server; try `sshprobe diagnose`")]
    NoBanner {
        /// The server.
        remote: SocketAddr,
        /// What the first probe got.
        outcome: Outcome,
    },
    /// `--grace` against a server that would charge it as a crash, without the user's consent.
    #[error(
        "{software} charges a connection left to hit LoginGraceTime as a crash (90 s of PerSourcePenalties per \
         held connection, fixed in 10.0): measuring it would block the probing addresses for minutes. Run without \
         --grace, or add --accept-grace-penalty"
    )]
    GraceWouldPenalise {
        /// The server's software.
        software: Software,
    },
}

/// Whether holding connections until LoginGraceTime expires costs `software` a crash penalty
/// (OpenSSH 9.8 and 9.9: docs/facts.md §5 and §9).
pub(crate) fn grace_is_charged_as_crash(software: Software) -> bool {
    software.openssh_at_least(9, 8) && !software.openssh_at_least(10, 0)
}

/// Progress of a run, for a progress bar and for reports that stream each level as it is measured.
pub trait Progress: Send + Sync {
    /// A level of the ramp was measured.
    fn level(&self, level: &Level);
    /// A phase started.
    fn phase(&self, phase: Phase);
    /// Something the user should know now, before waiting for the end.
    fn warn(&self, warning: &LimitsWarning);
    /// The server's software, from the first banner (for a partial report).
    fn server(&self, _software: &str) {}
}

/// No progress reporting.
pub struct NoProgress;

impl Progress for NoProgress {
    fn level(&self, _: &Level) {}
    fn phase(&self, _: Phase) {}
    fn warn(&self, _: &LimitsWarning) {}
}

/// Runs the benchmark through `engine`.
pub async fn limits<E: Engine>(
    engine: &E,
    target: &str,
    remote: SocketAddr,
    options: &LimitsOptions,
    progress: &dyn Progress,
) -> Result<LimitsReport, LimitsError> {
    let started = Instant::now();
    // 127.77.1.0/24 .. 127.77.4.0/24 on loopback: enough addresses that neither a per-source limit nor a
    // penalty on one of them shapes the curve.
    let aliases = super::sources::LoopbackAliases { first_subnet: 1, count: 1000 };
    let sources = super::sources::Sources::plan(remote, &options.sources, aliases).spread();
    // limits is a benchmark on purpose: no per-source budget beyond spreading over sources, but a
    // single source is warned about below.
    let budget = Budget::new(u32::MAX);
    let request = ProbeRequest::new(remote).timeouts(options.connect_timeout, options.banner_timeout);
    let probe = |source| engine.probe(request.clone().source(source));
    let mut turn = 0usize;
    let mut next_source = || {
        turn += 1;
        sources[turn % sources.len()]
    };

    let first = ProbeRecord::new(probe(next_source()).await);
    let Some(banner) = first.banner().filter(|_| first.outcome() == Outcome::Banner).cloned() else {
        return Err(LimitsError::NoBanner { remote, outcome: first.outcome() });
    };
    let software = Software::of(&banner);
    progress.server(&banner.software);
    if options.grace.is_some() && grace_is_charged_as_crash(software) && !options.accept_grace_penalty {
        return Err(LimitsError::GraceWouldPenalise { software });
    }
    let mut warnings = Vec::new();
    if software.has_penalties() {
        warnings.push(LimitsWarning::Penalties { software, spread: sources.len() > 1 });
    }
    if sources.len() == 1 {
        warnings.push(LimitsWarning::OneSource);
    }

    for w in &warnings {
        progress.warn(w);
    }
    progress.phase(Phase::Ramp);
    let mut holder = Holder::new(engine, request.clone());
    // The ramp's time cap holds inside a level too: filling and probing stop at the deadline (an
    // attempt under way may take up to its timeout).
    let ramp_deadline = started + options.max_duration;
    holder.set_deadline(Some(ramp_deadline));
    let past_deadline = || Instant::now() >= ramp_deadline;
    let mut levels = Vec::new();
    let holder_sources: Vec<Option<IpAddr>> = sources.iter().rev().copied().collect();
    let mut timed_out = false;
    for step in level_schedule(options.max_held) {
        if past_deadline() {
            timed_out = true;
            break;
        }
        // Near `full` the server refuses our holders too, nearly always: a refused attempt costs well
        // under a millisecond, so try many times before concluding that no more will be taken.
        let want = step.saturating_sub(holder.alive());
        holder.fill_to(step, &holder_sources, &budget, want.max(1).saturating_mul(HOLD_ATTEMPTS)).await;
        if past_deadline() {
            timed_out = true;
            break;
        }
        let held = holder.alive();
        if levels.last().is_some_and(|l: &Level| l.held == held) {
            // The server would not take more: what we measured last is the top.
            break;
        }
        let outcomes = probe_level(&probe, &mut next_source, options.probes_per_level, ramp_deadline).await;
        timed_out |= outcomes.len() < options.probes_per_level as usize;
        if timed_out && outcomes.is_empty() {
            break;
        }
        let level = summarise(held, &outcomes);
        progress.level(&level);
        let saturated = level.refused == level.probes;
        let all_timeouts = level.timeouts == level.probes;
        levels.push(level);
        // Two saturated levels in a row: `full` is reached.
        if saturated && levels.iter().rev().nth(1).is_some_and(|l| l.refused == l.probes) {
            break;
        }
        if all_timeouts {
            warnings.push(LimitsWarning::AllTimedOut { held });
            break;
        }
    }
    if timed_out {
        warnings.push(LimitsWarning::MaxDuration { held: holder.alive() });
    }
    // A jump from no refusal to every probe refused is a hard limit (dropbear's MAX_UNAUTH_CLIENTS,
    // sshd's `MaxStartups N`), not sshd's random early drop: bisect it down to one connection.
    if let Some(mut step) = HardLimit::find(&levels).filter(|s| !s.is_exact() && !timed_out) {
        progress.phase(Phase::Bisect);
        holder.release_and_settle().await;
        while !step.is_exact() && !past_deadline() {
            let mid = step.accepted_at + (step.refused_at - step.accepted_at) / 2;
            let mut bisect = Holder::new(engine, request.clone());
            bisect.set_deadline(Some(ramp_deadline));
            bisect.fill_to(mid, &holder_sources, &budget, mid.saturating_mul(HOLD_ATTEMPTS)).await;
            let held = bisect.alive();
            let outcomes =
                probe_level(&probe, &mut next_source, options.probes_per_level, ramp_deadline).await;
            bisect.release_and_settle().await;
            if held != mid || outcomes.is_empty() {
                break;
            }
            let level = summarise(held, &outcomes);
            progress.level(&level);
            let (clean, saturated) = (level.refused == 0 && level.banners > 0, level.refused == level.probes);
            levels.push(level);
            levels.sort_by_key(|l| l.held);
            match (clean, saturated) {
                (true, _) => step.accepted_at = mid,
                (_, true) => step.refused_at = mid,
                // Some refused, some not: not a hard limit after all.
                _ => break,
            }
        }
        holder = Holder::new(engine, request.clone());
    }
    let hard_limit = HardLimit::find(&levels)
        .filter(|s| levels.iter().all(|l| l.refused == 0 || l.refused == l.probes || l.held > s.refused_at));
    // With everything released, refusals mean a penalty or others' load.
    progress.phase(Phase::Recheck);
    holder.release_and_settle().await;
    let mut recheck = (0, 0);
    let mut penalty_lines = 0;
    for _ in 0..options.probes_per_level.min(10) {
        let record = ProbeRecord::new(probe(next_source()).await);
        recheck.0 += 1;
        if record.outcome().is_refusal_after_accept() {
            recheck.1 += 1;
            let refusal = record.classification.refusal;
            penalty_lines += u32::from(refusal == Some(KnownRefusal::NotAllowedAtThisTime));
        }
    }
    if recheck.1 > 0 {
        warnings.push(LimitsWarning::RefusedAfterRelease {
            refused: recheck.1,
            probes: recheck.0,
            penalty_lines: penalty_lines > 0 && software.has_penalties(),
        });
    }
    // The trials are the probes the server decided on (a banner or a refusal): a banner timeout or a
    // failed connect near `full` says nothing about sshd's drop, and counted as accepted it would
    // bias the drop rate low.
    let counts: Vec<LevelCount> = levels
        .iter()
        .map(|l| LevelCount { open: l.held, refused: l.refused, probes: l.refused + l.banners })
        .collect();
    let fit = fit_maxstartups(&counts);

    let accept_rate = if options.rate_duration.is_zero() {
        None
    } else {
        progress.phase(Phase::AcceptRate);
        // Stay well below where refusals began, so the rate is the server's, not its limit's: sshd
        // still counts a finished probe until its child has exited.
        let below = fit.map_or(8, |f| f.best.start / 2).clamp(1, 8);
        Some(accept_rate(&probe, &sources, below, options.rate_duration).await)
    };

    let grace = match options.grace {
        None => None,
        Some(wait) => {
            progress.phase(Phase::Grace);
            Some(measure_grace(Holder::new(engine, request.clone()), &holder_sources, &budget, wait).await)
        }
    };

    Ok(LimitsReport {
        target: target.to_string(),
        remote,
        server: Some(banner.software.clone()),
        levels,
        fit,
        hard_limit,
        recheck,
        accept_rate,
        grace,
        warnings,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

/// Up to `count` probes one at a time, stopping at `deadline`. After a banner it waits for the
/// server to forget the probe: sshd counts it until its child has exited, which takes about as long
/// as starting it did, so it waits twice that and the next probe sees only what we hold.
async fn probe_level<P, F>(
    probe: &P,
    next_source: &mut impl FnMut() -> Option<IpAddr>,
    count: u32,
    deadline: Instant,
) -> Vec<ProbeRecord>
where
    P: Fn(Option<IpAddr>) -> F,
    F: std::future::Future<Output = crate::evidence::Observation>,
{
    let mut outcomes = Vec::new();
    for _ in 0..count {
        if Instant::now() >= deadline {
            break;
        }
        let record = ProbeRecord::new(probe(next_source()).await);
        if record.outcome() == Outcome::Banner {
            let settle = (2 * record.observation.timings.ident.unwrap_or(0)).max(2_000);
            tokio::time::sleep(Duration::from_micros(settle)).await;
        }
        outcomes.push(record);
    }
    outcomes
}

/// Attempts per connection to add to the holder: at 99 % refusals, 200 attempts still add one with
/// 87 % probability.
const HOLD_ATTEMPTS: u32 = 200;

/// The held-connection levels: every count up to 24, then about 25 % apart.
pub fn level_schedule(max_held: u32) -> Vec<u32> {
    let mut levels: Vec<u32> = (0..=max_held.min(24)).collect();
    let mut n = 24u32;
    while n < max_held {
        n = (n + n / 4).min(max_held);
        levels.push(n);
    }
    levels
}

fn summarise(held: u32, records: &[ProbeRecord]) -> Level {
    let probes = records.len() as u32;
    let count = |f: &dyn Fn(Outcome) -> bool| records.iter().filter(|r| f(r.outcome())).count() as u32;
    let refused = count(&|o| o.is_refusal_after_accept());
    let banners = count(&|o| o == Outcome::Banner);
    let timeouts = count(&|o| o == Outcome::BannerTimeout);
    let latencies = banner_latencies(records);
    let mut messages = BTreeMap::new();
    for r in records.iter().filter(|r| r.outcome().is_refusal_after_accept()) {
        let message = r.classification.message.clone().unwrap_or_else(|| "(no bytes)".into());
        *messages.entry(message).or_insert(0) += 1;
    }
    Level {
        held,
        probes,
        refused,
        banners,
        timeouts,
        other: probes - refused - banners - timeouts,
        fraction: if refused + banners == 0 {
            0.0
        } else {
            f64::from(refused) / f64::from(refused + banners)
        },
        fraction_ci: wilson(refused, refused + banners),
        latency_us: percentiles(&latencies),
        messages,
    }
}

/// Connect-to-ident times of the probes that got a banner, in µs.
fn banner_latencies(records: &[ProbeRecord]) -> Vec<u64> {
    records
        .iter()
        .filter(|r| r.outcome() == Outcome::Banner)
        .filter_map(|r| r.observation.timings.ident)
        .collect()
}

fn percentiles(values: &[u64]) -> Option<[u64; 3]> {
    Some([percentile(values, 0.5)?, percentile(values, 0.9)?, percentile(values, 0.99)?])
}

/// `concurrency` workers probing back to back for `duration`, each probe made by `probe` from a
/// source.
async fn accept_rate<P, F>(
    probe: &P,
    sources: &[Option<IpAddr>],
    concurrency: u32,
    duration: Duration,
) -> AcceptRate
where
    P: Fn(Option<IpAddr>) -> F,
    F: std::future::Future<Output = crate::evidence::Observation>,
{
    let started = Instant::now();
    let deadline = started + duration;
    let worker = |w: usize| async move {
        let mut results = Vec::new();
        let mut i = w;
        while Instant::now() < deadline {
            let source = sources[i % sources.len()];
            i += concurrency as usize;
            results.push(ProbeRecord::new(probe(source).await));
        }
        results
    };
    let all = super::join_all((0..concurrency as usize).map(worker)).await;
    let elapsed = started.elapsed();
    let records: Vec<ProbeRecord> = all.into_iter().flatten().collect();
    let banners = records.iter().filter(|r| r.outcome() == Outcome::Banner).count();
    AcceptRate {
        banners_per_s: banners as f64 / elapsed.as_secs_f64(),
        concurrency,
        probes: records.len() as u32,
        refused: records.iter().filter(|r| r.outcome().is_refusal_after_accept()).count() as u32,
        latency_us: percentiles(&banner_latencies(&records)),
        duration_ms: elapsed.as_millis() as u64,
    }
}

/// Holds three connections with `holder` until the server closes them, or `wait` passes.
async fn measure_grace<E: Engine>(
    mut holder: Holder<'_, E>,
    sources: &[Option<IpAddr>],
    budget: &Budget,
    wait: Duration,
) -> Grace {
    const HELD: u32 = 3;
    holder.fill_to(HELD, sources, budget, HELD * 5).await;
    let deadline = Instant::now() + wait;
    while holder.alive() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lifetimes: Vec<u64> = holder.lifetimes().iter().map(|d| d.as_millis() as u64).collect();
    let still_open = holder.alive();
    holder.release().await;
    Grace {
        estimate_s: lifetimes.iter().min().map(|&ms| ms as f64 / 1000.0),
        lifetimes_ms: lifetimes,
        still_open,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::{Connect, End, Observation, ProbeOrder};

    #[test]
    fn only_openssh_9_8_and_9_9_charge_an_expired_grace_as_a_crash() {
        let sw = |s: &str| Software::parse(s);
        assert!(grace_is_charged_as_crash(sw("OpenSSH_9.8p1")));
        assert!(grace_is_charged_as_crash(sw("OpenSSH_9.9p2")));
        for fine in ["OpenSSH_9.7p1", "OpenSSH_10.0p2", "OpenSSH_9.2p1", "dropbear_2022.83"] {
            assert!(!grace_is_charged_as_crash(sw(fine)), "{fine}");
        }
    }

    #[test]
    fn schedule_is_dense_then_geometric() {
        assert_eq!(level_schedule(5), vec![0, 1, 2, 3, 4, 5]);
        let s = level_schedule(200);
        assert_eq!(&s[..25], &(0..=24).collect::<Vec<_>>()[..]);
        assert_eq!(&s[25..], &[30, 37, 46, 57, 71, 88, 110, 137, 171, 200]);
    }

    /// A record of a probe that got `received` and ended as `end`, its ident (if any) at `ident_us`.
    fn record(received: &'static [u8], end: End, ident_us: Option<u64>) -> ProbeRecord {
        let mut obs = Observation::failed_connect(
            "127.0.0.1:22".parse().unwrap(),
            None,
            ProbeOrder::WaitForBanner,
            Connect::Established,
            9_000,
        );
        obs.end = Some(end);
        obs.received = bytes::Bytes::from_static(received);
        obs.timings.ident = ident_us;
        ProbeRecord::new(obs)
    }

    #[test]
    fn a_hard_limit_is_a_clean_level_right_below_a_saturated_one() {
        let level = |held, refused, banners| Level {
            held,
            probes: refused + banners,
            refused,
            banners,
            timeouts: 0,
            other: 0,
            fraction: 0.0,
            fraction_ci: (0.0, 1.0),
            latency_us: None,
            messages: BTreeMap::new(),
        };
        let dropbear = [level(23, 0, 5), level(24, 0, 5), level(30, 5, 0)];
        let step = HardLimit::find(&dropbear).expect("a step");
        assert_eq!((step.accepted_at, step.refused_at, step.is_exact()), (24, 30, false));
        assert!(HardLimit::find(&[level(29, 0, 5), level(30, 5, 0)]).expect("a step").is_exact());
        // sshd's random early drop: refusals rise through mixed levels.
        assert_eq!(HardLimit::find(&[level(3, 0, 5), level(4, 2, 3), level(5, 5, 0)]), None);
    }

    #[test]
    fn levels_summarise_outcomes() {
        let records = vec![
            record(b"SSH-2.0-x\r\n", End::WeClosed, Some(5000)),
            record(b"SSH-2.0-x\r\n", End::WeClosed, Some(7000)),
            record(b"Exceeded MaxStartups\r\n", End::Fin, None),
            record(b"", End::Fin, None),
            record(b"", End::Timeout, None),
        ];
        let l = summarise(4, &records);
        assert_eq!((l.held, l.probes, l.refused, l.banners, l.timeouts, l.other), (4, 5, 2, 2, 1, 0));
        assert_eq!(l.latency_us, Some([5000, 7000, 7000]));
        assert_eq!(l.messages["Exceeded MaxStartups"], 1);
        assert_eq!(l.messages["(no bytes)"], 1);
        // 2 refused of the 4 the server decided on: the timeout is left out.
        assert!((l.fraction - 0.5).abs() < 1e-9);
    }
}
