//! Gathering: the experiments against a real server (I/O), then [`super::decide()`], then a
//! [`Diagnosis`].

use super::decide::{decide, Verdict, CONFIDENT_LOAD};
use super::evidence::Evidence;
use super::facts::{Experiment, ExperimentKind, ExperimentProbe, Facts};
use super::Finding;
use crate::engine::{Engine, ProbeRequest};
use crate::evidence::ProbeOrder;
use crate::experiment::budget::{Budget, BudgetUse};
use crate::experiment::holder::{Holder, SETTLE_AFTER_RELEASE};
use crate::experiment::sources::{LoopbackAliases, Sources};
use crate::outcome::{classify, Outcome};
use crate::record::ProbeRecord;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// A diagnosis of one target.
#[derive(Debug, Clone)]
pub struct Diagnosis {
    /// The target as given.
    pub target: String,
    /// The address diagnosed.
    pub remote: SocketAddr,
    /// The conclusion.
    pub finding: Finding,
    /// The server's `softwareversion`, if any probe got a banner.
    pub server: Option<String>,
    /// The experiments and their probes.
    pub experiments: Vec<Experiment>,
    /// Connections spent per source address.
    pub budget: BudgetUse,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
}

/// How diagnose runs.
#[derive(Debug, Clone)]
pub struct DiagnoseOptions {
    /// Connect timeout per probe.
    pub connect_timeout: Duration,
    /// Banner deadline per probe (longer than Debian's 5 s wrappers delay).
    pub banner_timeout: Duration,
    /// The most connections held at once in the load experiment.
    pub max_held: u32,
    /// Local addresses to use; the first probes, the others are second sources and holders. Empty:
    /// the kernel's choice, plus 127.77.0.x on IPv4 loopback.
    pub sources: Vec<IpAddr>,
    /// Gap between single probes.
    pub spacing: Duration,
    /// When penalised, poll until the block lifts, for at most this long (zero: do not wait).
    pub penalty_wait: Duration,
}

impl Default for DiagnoseOptions {
    fn default() -> DiagnoseOptions {
        DiagnoseOptions {
            connect_timeout: Duration::from_secs(3),
            banner_timeout: Duration::from_secs(8),
            max_held: CONFIDENT_LOAD,
            sources: Vec::new(),
            spacing: Duration::from_millis(200),
            penalty_wait: Duration::ZERO,
        }
    }
}

/// diagnose's automatic second sources on IPv4 loopback: 127.77.0.1 to 127.77.0.40.
const LOOPBACK_SOURCES: LoopbackAliases = LoopbackAliases { first_subnet: 0, count: 40 };

/// Runs the experiments against `remote` through `engine` and decides, taking connections from
/// `budget`: one budget per server host, shared by every target naming it (a penalty counts per
/// server and source address, whatever the port or name).
pub async fn diagnose<E: Engine>(
    engine: &E,
    target: &str,
    remote: SocketAddr,
    options: &DiagnoseOptions,
    budget: &Budget,
) -> Diagnosis {
    let started = std::time::Instant::now();
    let sources = Sources::plan(remote, &options.sources, LOOPBACK_SOURCES);
    let others = sources.others();
    let lab = Bench::new(engine, remote, options, budget);
    let mut facts = Facts { second_source: !others.is_empty(), ..Facts::default() };
    let primary = sources.probing();

    // 1. Baseline: both orders, one at a time.
    let mut baseline = Vec::new();
    for order in [ProbeOrder::WaitForBanner, ProbeOrder::SendFirst, ProbeOrder::WaitForBanner] {
        if !baseline.is_empty() {
            tokio::time::sleep(options.spacing).await;
        }
        match lab.probe(order, primary, 0).await {
            Some(p) => baseline.push(p),
            None => facts.budget_exhausted = true,
        }
    }
    let all_banner = !baseline.is_empty() && baseline.iter().all(|p| p.outcome() == Outcome::Banner);
    let any_refused = baseline.iter().any(|p| p.refused() || p.outcome() == Outcome::BannerTimeout);
    // Mixed means different kinds of answer; a reset and a close are the same refusal seen from
    // the two probe orders (FACTS §2).
    let mixed = baseline.windows(2).any(|w| w[0].kind() != w[1].kind());
    facts.experiments.push(Experiment {
        kind: ExperimentKind::Baseline,
        held: 0,
        held_from_probing_source: false,
        probes: baseline,
        hold_refused: 0,
    });

    if any_refused {
        // 2. Determinism, when the baseline did not already show it.
        if mixed {
            let probes = lab.series(ProbeOrder::WaitForBanner, primary, 4, 0, &mut facts).await;
            facts.experiments.push(Experiment {
                kind: ExperimentKind::Determinism,
                held: 0,
                held_from_probing_source: false,
                probes,
                hold_refused: 0,
            });
        }
        // 3. Source: does another address fare better? (Two at once: a different address, and
        // nothing of ours is held.)
        if let Some(&other) = others.first() {
            let probes = lab.concurrent(other, 2, 0).await;
            facts.experiments.push(Experiment {
                kind: ExperimentKind::Source,
                held: 0,
                held_from_probing_source: false,
                probes,
                hold_refused: 0,
            });
        }
    } else if all_banner {
        load_experiment(&lab, primary, &others, options, &mut facts).await;
    }

    let mut finding = decide(&facts);
    if finding.verdict == Verdict::Penalized {
        finding.evidence.push(match wait_for_lift(&lab, primary, options.penalty_wait).await {
            Some(after) => Evidence::PenaltyLifted { after_ms: after.as_millis() as u64 },
            None if options.penalty_wait.is_zero() => Evidence::PenaltyLiftsLater,
            None => Evidence::PenaltyNotLifted { polled_ms: options.penalty_wait.as_millis() as u64 },
        });
    }
    let server =
        facts.experiments.iter().flat_map(|e| &e.probes).find_map(|p| p.software_version().map(String::from));
    Diagnosis {
        target: target.to_string(),
        remote,
        finding,
        server,
        experiments: facts.experiments,
        budget: budget.usage(),
        duration_ms: started.elapsed().as_millis() as u64,
    }
}

/// Polls `source` every 2 s until it gets a banner again, for at most `wait`: how long a penalty
/// lasted. Refused attempts do not extend a block (FACTS §5), so the budget does not stop them, but
/// every poll is counted in what was spent.
async fn wait_for_lift<E: Engine>(
    bench: &Bench<'_, E>,
    source: Option<IpAddr>,
    wait: Duration,
) -> Option<Duration> {
    let started = std::time::Instant::now();
    while started.elapsed() < wait {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let obs = bench.engine.probe(bench.request.clone().source(source)).await;
        bench.budget.charge(source);
        if classify(&obs).outcome == Outcome::Banner {
            return Some(started.elapsed());
        }
    }
    None
}

/// Steps of held connections in the load experiment. They stop below sshd's default MaxStartups
/// `start` (10): refusals that early mean the server has little room left (a low limit, or others
/// holding connections), while every server refuses past its configured limit, which is no fault.
/// `sshprobe limits` measures the whole curve.
const LOAD_STEPS: [u32; 3] = [3, 6, 8];
/// Probes per load step, one at a time. With the baseline's 3 and persistence's 2, the probing
/// address spends at most 11 connections: under the default budget of 12.
const PROBES_PER_STEP: u32 = 2;

/// 4 and 5: hold more and more connections, probe at each step; on refusals, check another source
/// and, after releasing, whether they persist.
async fn load_experiment<E: Engine>(
    lab: &Bench<'_, E>,
    primary: Option<IpAddr>,
    others: &[Option<IpAddr>],
    options: &DiagnoseOptions,
    facts: &mut Facts,
) {
    // Hold from the other addresses when there are any, so a per-source limit on the probing address
    // cannot be mistaken for a global one, and penalties are spread.
    let (holder_sources, from_probing): (Vec<Option<IpAddr>>, bool) =
        if others.len() >= 2 { (others[1..].to_vec(), false) } else { (vec![primary], true) };
    let mut holder = Holder::new(lab.engine, lab.request.clone());
    let mut refused_at = None;
    for &step in LOAD_STEPS.iter().filter(|&&s| s <= options.max_held) {
        let refused_before = holder.refused();
        let held = holder.fill_to(step, &holder_sources, lab.budget, step * 3).await;
        let hold_refused = holder.refused() - refused_before;
        // One probe at a time, so that the server's count is what we hold (plus others' load).
        let probes = lab.series(ProbeOrder::WaitForBanner, primary, PROBES_PER_STEP, held, facts).await;
        let refused = probes.iter().any(|p| p.refused() || p.outcome() == Outcome::BannerTimeout);
        let stop = probes.len() < PROBES_PER_STEP as usize || held < step;
        if probes.is_empty() {
            break;
        }
        facts.experiments.push(Experiment {
            kind: ExperimentKind::Load,
            held,
            held_from_probing_source: from_probing,
            probes,
            hold_refused,
        });
        if refused || hold_refused > 0 {
            refused_at = Some(held);
            break;
        }
        if stop {
            break;
        }
    }
    if let Some(held) = refused_at {
        // Another address at the same load: global or per-source?
        if let Some(&fresh) = others.first() {
            let probes = lab.series(ProbeOrder::WaitForBanner, fresh, PROBES_PER_STEP, held, facts).await;
            facts.experiments.push(Experiment {
                kind: ExperimentKind::Source,
                held,
                held_from_probing_source: from_probing,
                probes,
                hold_refused: 0,
            });
        }
    }
    holder.release().await;
    if refused_at.is_some() {
        // MaxStartups counts clear about 0.5 s after held connections close (FACTS §3); a penalty stays.
        tokio::time::sleep(SETTLE_AFTER_RELEASE).await;
        let probes = lab.series(ProbeOrder::WaitForBanner, primary, 2, 0, facts).await;
        facts.experiments.push(Experiment {
            kind: ExperimentKind::Persistence,
            held: 0,
            held_from_probing_source: false,
            probes,
            hold_refused: 0,
        });
    }
}

/// Makes probes for experiments through one engine, within the budget.
struct Bench<'a, E: Engine> {
    engine: &'a E,
    /// Every probe's request: the remote and timeouts; source and order are each probe's own.
    request: ProbeRequest,
    budget: &'a Budget,
    spacing: Duration,
}

impl<'a, E: Engine> Bench<'a, E> {
    fn new(engine: &'a E, remote: SocketAddr, options: &DiagnoseOptions, budget: &'a Budget) -> Bench<'a, E> {
        let request = ProbeRequest::new(remote).timeouts(options.connect_timeout, options.banner_timeout);
        Bench { engine, request, budget, spacing: options.spacing }
    }

    /// One probe, if the budget allows.
    async fn probe(&self, order: ProbeOrder, source: Option<IpAddr>, held: u32) -> Option<ExperimentProbe> {
        if !self.budget.try_take(source) {
            return None;
        }
        let observation = self.engine.probe(self.request.clone().source(source).order(order)).await;
        Some(ExperimentProbe { record: ProbeRecord::new(observation), source, held })
    }

    /// `n` probes one after another, `spacing` apart, with `held` connections held.
    async fn series(
        &self,
        order: ProbeOrder,
        source: Option<IpAddr>,
        n: u32,
        held: u32,
        facts: &mut Facts,
    ) -> Vec<ExperimentProbe> {
        let mut out = Vec::new();
        for i in 0..n {
            if i > 0 {
                tokio::time::sleep(self.spacing).await;
            }
            match self.probe(order, source, held).await {
                Some(p) => out.push(p),
                None => {
                    facts.budget_exhausted = true;
                    break;
                }
            }
        }
        out
    }

    /// `n` probes at once.
    async fn concurrent(&self, source: Option<IpAddr>, n: u32, held: u32) -> Vec<ExperimentProbe> {
        let probes = (0..n).map(|_| self.probe(ProbeOrder::WaitForBanner, source, held));
        let mut out = Vec::new();
        for p in crate::experiment::join_all(probes).await.into_iter().flatten() {
            out.push(p);
        }
        out
    }
}
