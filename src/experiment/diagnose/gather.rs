//! Gathering: the experiments against a real server (I/O), then [`super::decide()`], then a
//! [`Diagnosis`].

use super::decide::{decide, Verdict, CONFIDENT_LOAD};
use super::evidence::Evidence;
use super::facts::{Experiment, ExperimentKind, ExperimentProbe, Facts, HostHolder, NotTestedReason};
use super::persource::{needs_probing_address, split, Count, Split, BANNERS_FOR_OK, MAX_EXTRA_PAIRS};
use super::Finding;
use crate::engine::{Engine, Interrupt, ProbeRequest};
use crate::evidence::ProbeOrder;
use crate::experiment::budget::{Budget, BudgetUse};
use crate::experiment::holder::{Holder, SETTLE_AFTER_RELEASE};
use crate::experiment::sources::{LoopbackAliases, Sources};
use crate::outcome::{classify, Outcome};
use crate::record::ProbeRecord;
use crate::server::Software;
use crate::serverlog::LogTail;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
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
    /// How long a probe that has not answered is waited for before the next one starts beside it:
    /// fast answers come one at a time, answers that take seconds (Debian's 5-s wrappers close)
    /// overlap, so the whole baseline costs one such wait.
    pub patience: Duration,
    /// No probe starts after this long (waiting for the probe budget included), and probes in
    /// flight then are cut there; `None`: no limit.
    pub max_duration: Option<Duration>,
    /// The server's log, read from where it ended when opened: what it appends while diagnose
    /// probes is matched to the probes and cited (`--server-log`).
    pub server_log: Option<Arc<Mutex<LogTail>>>,
    /// What each source address owes the server from earlier runs (OpenSSH 9.8+ penalties outlive
    /// a run): loaded into the budget before probing and stored back after, so the exporter's
    /// `/diagnose` and the CLI keep one account. `None`: the caller keeps the ledger itself.
    pub ledger: Option<Arc<Mutex<crate::experiment::budget::Ledger>>>,
}

impl Default for DiagnoseOptions {
    fn default() -> DiagnoseOptions {
        DiagnoseOptions {
            connect_timeout: crate::engine::DEFAULT_CONNECT_TIMEOUT,
            banner_timeout: crate::engine::DEFAULT_BANNER_TIMEOUT,
            max_held: CONFIDENT_LOAD,
            sources: Vec::new(),
            spacing: Duration::from_millis(200),
            penalty_wait: Duration::ZERO,
            patience: Duration::from_millis(400),
            max_duration: None,
            server_log: None,
            ledger: None,
        }
    }
}

/// How long after its last probe diagnose waits for the server's log to catch up.
const LOG_SETTLE: Duration = Duration::from_millis(500);

/// diagnose's automatic second sources on IPv4 loopback: 127.77.0.1 to 127.77.0.40.
const LOOPBACK_SOURCES: LoopbackAliases = LoopbackAliases { first_subnet: 0, count: 40 };

/// Runs the experiments against `remote` through `engine` and decides, taking connections from
/// `budget`: one budget per server (address and port), shared by every target naming it.
pub async fn diagnose<E: Engine>(
    engine: &E,
    target: &str,
    remote: SocketAddr,
    options: &DiagnoseOptions,
    budget: &Budget,
) -> Diagnosis {
    let started = std::time::Instant::now();
    if let Some(ledger) = &options.ledger {
        budget.load(&ledger.lock().unwrap_or_else(|p| p.into_inner()), remote);
    }
    let sources = Sources::plan(remote, &options.sources, LOOPBACK_SOURCES);
    let others = sources.others();
    let until = options.max_duration.map(|d| tokio::time::Instant::now() + d);
    // The time limit is a hard cap: probes and held connections in flight at `until` end there,
    // keeping what they saw, and the diagnosis goes on with what finished.
    let deadline = until.map(Deadline::start);
    let mut lab = Bench::new(engine, remote, options, budget, until);
    if let Some(d) = &deadline {
        lab.request = lab.request.interrupt(d.interrupt());
    }
    let mut facts = Facts { second_source: !others.is_empty(), ..Facts::default() };
    let primary = sources.probing();
    // What this host already holds to the server, before we open anything: unauthenticated
    // connections of ours (Ansible's forks, a stuck client) fill its limits like anyone's.
    match crate::hostconns::HostConnections::gather(remote, &Default::default()) {
        Ok(held) => facts.host_connections = held.by_owner.iter().map(HostHolder::from).collect(),
        Err(e) => tracing::debug!("listing this host's connections to {remote}: {e}"),
    }

    // 1. Baseline: both orders, one at a time while answers are fast. A probe still unanswered after
    //    `patience` (Debian's wrappers hold a denied connection 5 s) lets the next start beside it,
    //    and the second address's probes start then too: the whole unloaded phase costs one slow
    //    answer, not one per probe.
    // The first also reads the server's KEXINIT (never sending ours): what a working exchange
    // meets next (super::kex).
    let plan = [
        (ProbeOrder::WaitForBanner, true),
        (ProbeOrder::SendFirst, false),
        (ProbeOrder::WaitForBanner, false),
    ]
    .map(|(order, kex)| lab.probe_kex(order, primary, 0, kex));
    let second = others
        .first()
        .map(|&other| (0..2).map(|_| lab.probe_kex(ProbeOrder::WaitForBanner, other, 0, false)).collect());
    let slow_or_refused =
        |p: &Option<ExperimentProbe>| p.as_ref().is_some_and(|p| p.outcome() != Outcome::Banner);
    let (baseline, second) =
        staggered(Vec::from(plan), second, options.spacing, options.patience, slow_or_refused).await;
    let attempted = baseline.len();
    let baseline: Vec<ExperimentProbe> = baseline.into_iter().flatten().collect();
    if baseline.len() < attempted && !lab.cut() {
        facts.budget_exhausted = true;
    }
    if baseline.is_empty() && until.is_some_and(|u| tokio::time::Instant::now() >= u) {
        facts.not_tested =
            Some(if lab.cut() { NotTestedReason::TimeLimitCut } else { NotTestedReason::TimeLimit });
    }
    let all_banner = !baseline.is_empty() && baseline.iter().all(|p| p.outcome() == Outcome::Banner);
    // Every probe counts: a connect refused or unanswered is a failure too.
    let any_refused =
        baseline.iter().any(|p| p.refused() || p.connect_failed() || p.outcome() == Outcome::BannerTimeout);
    // More probes at concurrency 1 tell a pattern only among answers: a server that answers some
    // probes. Timeouts and blocked SYNs repeat at seconds each and tell nothing new.
    let answered = baseline.iter().any(|p| p.served() || p.refused());
    // Mixed means different kinds of answer; a reset and a close are the same refusal seen from
    // the two probe orders (docs/facts.md §2).
    let mixed = baseline.windows(2).any(|w| w[0].kind() != w[1].kind());
    facts.experiments.push(Experiment::new(ExperimentKind::Baseline, 0, baseline));

    if any_refused {
        // 2. Determinism, when the baseline did not already show it.
        if mixed && answered {
            let probes = lab.series(ProbeOrder::WaitForBanner, primary, 4, 0, &mut facts).await;
            facts.experiments.push(Experiment::new(ExperimentKind::Determinism, 0, probes));
        }
        // 3. Source: does another address fare better? (Two at once: a different address, and
        // nothing of ours is held.) Already made beside a slow baseline.
        let second = match (second, others.first()) {
            (Some(probes), _) => Some(probes.into_iter().flatten().collect()),
            (None, Some(&other)) => Some(lab.concurrent(other, 2, 0).await),
            (None, None) => None,
        };
        if let Some(probes) = second {
            facts.experiments.push(Experiment::new(ExperimentKind::Source, 0, probes));
        }
        // Refused here, served there: a few banners are likely under a global limit's random drops
        // too, so more pairs until the per-source test decides.
        if let (Some(&other), Some((here, elsewhere))) =
            (others.first(), super::decide::unloaded_counts_to_test(&facts))
        {
            let (mine, theirs) =
                pairs(&lab, (primary, here), (other, elsewhere), 0, (0, true), &mut facts).await;
            if !mine.is_empty() {
                facts.experiments.push(Experiment::new(ExperimentKind::Determinism, 0, mine));
            }
            if !theirs.is_empty() {
                facts.experiments.push(Experiment::new(ExperimentKind::Source, 0, theirs));
            }
        }
        // Served, then blocked, with nothing held: one probe after a wait tells a rate limit from
        // a ban.
        if matches!(super::front::Signals::of(&facts).block, super::front::Block::MidRun { .. }) {
            recheck(&lab, primary, others.first().copied(), &mut facts).await;
        }
    } else if all_banner {
        // The second address's probes started beside a slow baseline (a multiplexer's wait): they
        // were made and spent, so they are reported.
        if let Some(probes) = second {
            let probes: Vec<ExperimentProbe> = probes.into_iter().flatten().collect();
            if !probes.is_empty() {
                facts.experiments.push(Experiment::new(ExperimentKind::Source, 0, probes));
            }
        }
        let baseline = &facts.experiments[0].probes;
        if super::decide::multiplexer_in(baseline).is_some() {
            // A multiplexer holds every connection that waits for its timeout: held connections
            // would each take that long, and clients that speak first are not affected.
            tracing::debug!("a protocol multiplexer answers: no load experiment");
        } else {
            load_experiment(&lab, primary, &others, options, &mut facts).await;
        }
    }
    facts.capped |= budget.capped();

    if let Some(tail) = &options.server_log {
        // sshd writes as it drops; syslog and the journal may take a moment to pass it on.
        tokio::time::sleep(LOG_SETTLE).await;
        // What was appended while we probed, and what the logs held of the recent past.
        let lines = tail.lock().unwrap_or_else(|p| p.into_inner()).read_lines();
        match lines {
            Ok(lines) => facts.server_log = Some(lines),
            Err(e) => tracing::warn!("{e}"),
        }
    }
    let mut finding = decide(&facts);
    super::kex::amend(&facts, &mut finding);
    if finding.verdict == Verdict::Penalized {
        finding.evidence.push(match wait_for_lift(&lab, primary, options.penalty_wait).await {
            Some(after) => Evidence::PenaltyLifted { after_ms: after.as_millis() as u64 },
            None if options.penalty_wait.is_zero() => Evidence::PenaltyLiftsLater,
            None => Evidence::PenaltyNotLifted { polled_ms: options.penalty_wait.as_millis() as u64 },
        });
    }
    let server =
        facts.experiments.iter().flat_map(|e| &e.probes).find_map(|p| p.software_version().map(String::from));
    if let Some(ledger) = &options.ledger {
        let mut ledger = ledger.lock().unwrap_or_else(|p| p.into_inner());
        budget.store(&mut ledger, remote);
        if let Some(sw) = &server {
            ledger.saw(remote, sw);
        }
    }
    let mut experiments = facts.experiments;
    let cut = std::mem::take(&mut *lab.cut_probes());
    if !cut.is_empty() {
        experiments.push(Experiment::new(ExperimentKind::Cut, 0, cut));
    }
    Diagnosis {
        target: target.to_string(),
        remote,
        finding,
        server,
        experiments,
        budget: budget.usage(),
        duration_ms: started.elapsed().as_millis() as u64,
    }
}

/// Polls `source` every 2 s until it gets a banner again, for at most `wait`: how long a penalty
/// lasted. Refused attempts do not extend a block (docs/facts.md §5), so the budget does not stop them, but
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
    // With one other address, the probing address holds: the other stays clean, to show that the
    // server serves others (a ban-after-failures daemon counts every held connection as a failure
    // when it closes, and would ban both). The per-address cap then ends the load early.
    let (holder_sources, from_probing): (Vec<Option<IpAddr>>, bool) =
        if others.len() >= 2 { (others[1..].to_vec(), false) } else { (vec![primary], true) };
    let mut holder = Holder::new(lab.engine, lab.request.clone());
    // Two refusals in a row: a firewall blocking the address (each unanswered SYN costs the connect
    // timeout) or a full table; more attempts would only wait or trip a ban.
    holder.give_up_after(2);
    let mut refused_at = None;
    // The probing address's SYNs failed under load: a firewall rule or a ban, not sshd.
    let mut blocked = false;
    for &step in LOAD_STEPS.iter().filter(|&&s| s <= options.max_held) {
        // Held from the probing address, a step must leave room under the per-address cap for its
        // probes and the final check.
        let cost = step.saturating_sub(holder.alive()) + PROBES_PER_STEP + FINAL_CHECK;
        if from_probing && lab.budget.cap_remaining(primary).is_some_and(|left| left < cost) {
            facts.capped = true;
            break;
        }
        let refused_before = holder.refused();
        let held = holder.fill_to(step, &holder_sources, lab.budget, step * 3).await;
        let hold_refused = holder.refused() - refused_before;
        // One probe at a time, so that the server's count is what we hold (plus others' load).
        let probes = lab.series(ProbeOrder::WaitForBanner, primary, PROBES_PER_STEP, held, facts).await;
        let refused =
            probes.iter().any(|p| p.refused() || p.connect_failed() || p.outcome() == Outcome::BannerTimeout);
        blocked |= probes.iter().any(|p| p.connect_failed());
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
    // Served throughout, while this host's connections and ours reach sshd's default MaxStartups
    // `start`, where it drops at random: so few banners do not rule drops out. Another address tops
    // them up at the highest load, before it is released, to the number that rules out MaxStartups'
    // default drop rate at the stated error rate. (Not otherwise: each of its probes counts towards
    // a ban-after-failures daemon's threshold, and it must stay clean to show others are served.)
    let top = facts.of(ExperimentKind::Load).last().map(|e| e.held);
    let host_held: u32 = facts.host_connections.iter().map(|h| h.count).sum();
    let drops_plausible = top.is_some_and(|top| host_held + top >= DEFAULT_MAXSTARTUPS_START);
    if let (false, None, Some(&fresh), Some(top), true) =
        (blocked, refused_at, others.first(), top, drops_plausible)
    {
        let made: u32 = facts.experiments.iter().map(|e| e.probes.len() as u32).sum();
        // Within the other address's cap: the banners it cannot give are said as a weaker bound.
        let room = lab.budget.cap_remaining(fresh).unwrap_or(u32::MAX);
        let want = BANNERS_FOR_OK.saturating_sub(made + FINAL_CHECK).min(room);
        let mut probes = Vec::new();
        for i in 0..want {
            if i > 0 {
                tokio::time::sleep(lab.spacing).await;
            }
            let Some(p) = lab.probe(ProbeOrder::WaitForBanner, fresh, top).await else { break };
            let served = p.served();
            probes.push(p);
            if !served {
                refused_at = Some(top);
                break;
            }
        }
        if !probes.is_empty() {
            facts.experiments.push(Experiment {
                kind: ExperimentKind::Source,
                held: top,
                held_from_probing_source: from_probing,
                probes,
                hold_refused: 0,
            });
        }
    }
    if let Some(held) = refused_at {
        // Another address at the same load: global or per-source?
        let asked = facts.of(ExperimentKind::Source).any(|e| e.held == held);
        if let (Some(&fresh), false) = (others.first(), asked) {
            let probes = lab.series(ProbeOrder::WaitForBanner, fresh, PROBES_PER_STEP, held, facts).await;
            facts.experiments.push(Experiment {
                kind: ExperimentKind::Source,
                held,
                held_from_probing_source: from_probing,
                probes,
                hold_refused: 0,
            });
        }
        // Held from the probing address, refused there and served there: a per-source limit
        // refuses every probe from the holder, a global one drops at random from both. More pairs
        // at the same load, the probing address keeping one connection for the check after release.
        let (here, elsewhere) = super::decide::loaded_counts(facts, held);
        if let (Some(&fresh), true, false, 0) = (others.first(), from_probing, blocked, elsewhere.refused) {
            let (mine, theirs) =
                pairs(lab, (primary, here), (fresh, elsewhere), held, (FINAL_CHECK, false), facts).await;
            for (kind, probes) in [(ExperimentKind::Load, mine), (ExperimentKind::Source, theirs)] {
                if !probes.is_empty() {
                    facts.experiments.push(Experiment {
                        kind,
                        held,
                        held_from_probing_source: from_probing,
                        probes,
                        hold_refused: 0,
                    });
                }
            }
        }
    }
    holder.release().await;
    if !blocked && refused_at.is_none() {
        // Served throughout. A ban-after-failures daemon counts identification-only connections as
        // they close, and the held ones closed just now: one probe after its reaction time says
        // whether our own probes got this address banned (docs/facts.md §11: 0.1-1.2 s).
        tokio::time::sleep(BAN_REACTION).await;
        let probes = lab.series(ProbeOrder::WaitForBanner, primary, FINAL_CHECK, 0, facts).await;
        let banned = probes.iter().any(|p| p.connect_failed());
        facts.experiments.push(Experiment::new(ExperimentKind::Persistence, 0, probes));
        if banned {
            recheck(lab, primary, others.first().copied(), facts).await;
        }
        return;
    }
    if blocked && (!from_probing || refused_at == Some(0)) {
        // Held from other addresses, so nothing from the probing address is held now: a count rule
        // has nothing left to count. Stop probing from it at once (a ban grows with every failure);
        // one probe after a wait tells a rate limit (lets a new connection through by then) from a
        // ban (does not).
        recheck(lab, primary, others.first().copied(), facts).await;
        return;
    }
    if refused_at.is_some() {
        // MaxStartups counts clear about 0.5 s after held connections close (docs/facts.md §3); a penalty stays.
        tokio::time::sleep(SETTLE_AFTER_RELEASE).await;
        if blocked {
            facts.recheck_wait_ms = SETTLE_AFTER_RELEASE.as_millis() as u64;
        }
        let probes =
            lab.series(ProbeOrder::WaitForBanner, primary, if blocked { 1 } else { 2 }, 0, facts).await;
        let still_blocked = probes.iter().any(|p| p.connect_failed());
        facts.experiments.push(Experiment::new(ExperimentKind::Persistence, 0, probes));
        if blocked && still_blocked {
            recheck(lab, primary, others.first().copied(), facts).await;
        }
    }
}

/// Pairs of probes at `held` connections held, the other address's first, then the probing one's,
/// one at a time (so both meet the same server), while the per-source test is untold: at most
/// `MAX_EXTRA_PAIRS * 2` from the other address (within its cap), and from the probing address at
/// most [`MAX_EXTRA_PAIRS`], keeping `reserve` connections of its cap. With `spare_refused`, the
/// probing address is probed only while the other's banners alone could not decide
/// ([`needs_probing_address`]): every further probe of a refused address meets the limit again,
/// and may deepen a penalty or count towards a ban (and sshd rate-limits the log lines that would
/// name it). Under load it is not spared: it holds the connections, and the other's banners alone
/// cannot decide within its cap. Returns the probing address's probes and the other's.
async fn pairs<E: Engine>(
    lab: &Bench<'_, E>,
    (primary, mut here): (Option<IpAddr>, Count),
    (other, mut elsewhere): (Option<IpAddr>, Count),
    held: u32,
    (reserve, spare_refused): (u32, bool),
    facts: &mut Facts,
) -> (Vec<ExperimentProbe>, Vec<ExperimentProbe>) {
    let untold = |here, elsewhere| matches!(split(here, elsewhere), Split::Untold { .. });
    let room =
        |source: Option<IpAddr>, keep: u32| lab.budget.cap_remaining(source).is_none_or(|left| left > keep);
    let add = |c: Count, p: &ExperimentProbe| Count::new(c.refused + u32::from(!p.served()), c.probes + 1);
    let (mut mine, mut theirs) = (Vec::new(), Vec::new());
    let rounds = MAX_EXTRA_PAIRS * 2;
    for round in 0..rounds {
        if !untold(here, elsewhere) || !room(other, 0) {
            break;
        }
        tokio::time::sleep(lab.spacing).await;
        let Some(p) = lab.probe(ProbeOrder::WaitForBanner, other, held).await else {
            facts.budget_exhausted |= !lab.cut();
            break;
        };
        elsewhere = add(elsewhere, &p);
        theirs.push(p);
        let other_left = lab.budget.cap_remaining(other).unwrap_or(u32::MAX).min(rounds - round - 1);
        if !untold(here, elsewhere)
            || (spare_refused && !needs_probing_address(here, elsewhere, other_left))
            || !room(primary, reserve)
            || mine.len() as u32 >= MAX_EXTRA_PAIRS
        {
            continue;
        }
        tokio::time::sleep(lab.spacing).await;
        let Some(p) = lab.probe(ProbeOrder::WaitForBanner, primary, held).await else {
            facts.budget_exhausted |= !lab.cut();
            break;
        };
        here = add(here, &p);
        mine.push(p);
    }
    (mine, theirs)
}

/// sshd's default MaxStartups `start` (10:30:100): unauthenticated connections past which it drops
/// new ones at random.
const DEFAULT_MAXSTARTUPS_START: u32 = 10;

/// Probes kept for the check after the load experiment.
const FINAL_CHECK: u32 = 1;
/// How long a ban-after-failures daemon takes to ban after the last failure it counts: fail2ban
/// 0.1-0.6 s with pyinotify, about 1.2 s polling (docs/facts.md §11).
const BAN_REACTION: Duration = Duration::from_millis(1500);

/// How long a blocked address waits, with nothing held, before its one recheck: a rate rule of 6
/// new connections a minute lets one through every 10 s (docs/facts.md §11).
const RECHECK_WAIT: Duration = Duration::from_secs(10);

/// One probe from the blocked `source` after [`RECHECK_WAIT`]: a rate limit lets it through, a ban
/// does not.
/// When no other address was asked yet, `other` is asked once too: is the server serving others?
async fn recheck<E: Engine>(
    lab: &Bench<'_, E>,
    source: Option<IpAddr>,
    other: Option<Option<IpAddr>>,
    facts: &mut Facts,
) {
    let asked_elsewhere = facts.experiments.iter().any(|e| e.kind == ExperimentKind::Source);
    if let (Some(other), false) = (other, asked_elsewhere) {
        let probes = lab.series(ProbeOrder::WaitForBanner, other, 1, 0, facts).await;
        facts.experiments.push(Experiment::new(ExperimentKind::Source, 0, probes));
    }
    tokio::time::sleep(RECHECK_WAIT).await;
    facts.recheck_wait_ms = RECHECK_WAIT.as_millis() as u64;
    let probes = lab.series(ProbeOrder::WaitForBanner, source, 1, 0, facts).await;
    facts.experiments.push(Experiment::new(ExperimentKind::Recheck, 0, probes));
}

/// Fires an [`Interrupt`] at a run's time limit; the timer stops when this is dropped.
struct Deadline {
    rx: tokio::sync::watch::Receiver<bool>,
    timer: tokio::task::JoinHandle<()>,
}

impl Deadline {
    fn start(at: tokio::time::Instant) -> Deadline {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let timer = tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let _ = tx.send(true);
            // Keep the sender, so the switch stays fired for probes that start later.
            std::future::pending::<()>().await;
        });
        Deadline { rx, timer }
    }

    fn interrupt(&self) -> Interrupt {
        Interrupt::new(self.rx.clone())
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        self.timer.abort();
    }
}

/// Makes probes for experiments through one engine, within the budget.
struct Bench<'a, E: Engine> {
    engine: &'a E,
    /// Every probe's request: the remote and timeouts; source and order are each probe's own.
    request: ProbeRequest,
    budget: &'a Budget,
    spacing: Duration,
    /// No probe starts after this.
    until: Option<tokio::time::Instant>,
    /// The probes the time limit cut in flight.
    cut: std::sync::Mutex<Vec<ExperimentProbe>>,
}

impl<'a, E: Engine> Bench<'a, E> {
    fn new(
        engine: &'a E,
        remote: SocketAddr,
        options: &DiagnoseOptions,
        budget: &'a Budget,
        until: Option<tokio::time::Instant>,
    ) -> Bench<'a, E> {
        let request = ProbeRequest::new(remote).timeouts(options.connect_timeout, options.banner_timeout);
        Bench { engine, request, budget, spacing: options.spacing, until, cut: Default::default() }
    }

    /// The probes the time limit cut in flight.
    fn cut_probes(&self) -> std::sync::MutexGuard<'_, Vec<ExperimentProbe>> {
        self.cut.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the time limit cut a probe in flight.
    fn cut(&self) -> bool {
        !self.cut_probes().is_empty()
    }

    /// One probe, when the budget allows it (waiting for it, within the time limit).
    async fn probe(&self, order: ProbeOrder, source: Option<IpAddr>, held: u32) -> Option<ExperimentProbe> {
        self.probe_kex(order, source, held, false).await
    }

    /// One probe that also reads the server's KEXINIT when `kex`.
    async fn probe_kex(
        &self,
        order: ProbeOrder,
        source: Option<IpAddr>,
        held: u32,
        kex: bool,
    ) -> Option<ExperimentProbe> {
        if !self.budget.take(source, self.until).await {
            return None;
        }
        let observation = self.engine.probe(self.request.clone().source(source).order(order).kex(kex)).await;
        let record = ProbeRecord::new(observation);
        if record.outcome() == Outcome::Interrupted {
            // Cut at the time limit: not a finished probe, so no evidence (as a probe the budget
            // did not allow in time), but kept with what it saw for the report.
            tracing::debug!("a probe cut at the time limit: {record:?}");
            self.cut_probes().push(ExperimentProbe { record, source: source.into(), held });
            return None;
        }
        match record.banner().map(|b| Software::of(b).has_penalties()) {
            // OpenSSH before 9.8, dropbear: no penalty to pace for.
            Some(false) => self.budget.server_has_no_penalties(),
            // OpenSSH 9.8+, whatever an earlier run remembered of this server.
            Some(true) => self.budget.server_has_penalties(),
            None => {}
        }
        Some(ExperimentProbe { record, source: source.into(), held })
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
                // A blocked SYN: more from this address would only extend a ban.
                Some(p) if p.connect_failed() => {
                    out.push(p);
                    break;
                }
                Some(p) => out.push(p),
                None => {
                    facts.budget_exhausted |= !self.cut();
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

/// Runs `first` staggered: each starts `spacing` after the one before it ended, or `patience` after
/// it started if it has not ended by then, so fast answers come one at a time and slow ones overlap.
/// `extra` starts (all at once) as soon as one of `first` ends in a way `wants_extra` accepts, or
/// the first probe is still unanswered after `patience`; if neither happens it never starts. Returns
/// the outputs of `first` in order, and those of `extra` if it ran.
async fn staggered<F: Future>(
    first: Vec<F>,
    extra: Option<Vec<F>>,
    spacing: Duration,
    patience: Duration,
    wants_extra: impl Fn(&F::Output) -> bool,
) -> (Vec<F::Output>, Option<Vec<F::Output>>) {
    use tokio::time::Instant;
    let n = first.len();
    let mut waiting = first.into_iter();
    let mut extra = extra;
    let extra_n = extra.as_ref().map_or(0, Vec::len);
    // Running futures by slot: 0..n are `first`, n.. are `extra`.
    let mut running: Vec<(usize, Pin<Box<F>>)> = Vec::new();
    let mut outputs: Vec<Option<F::Output>> = (0..n + extra_n).map(|_| None).collect();
    let (mut started, mut extra_started) = (0usize, false);
    let mut latest: Option<(Instant, Option<Instant>)> = None; // the latest of `first`: started, ended
    let began = Instant::now();
    loop {
        let now = Instant::now();
        let may_start = started < n
            && match latest {
                None => true,
                Some((_, Some(ended))) => now >= ended + spacing,
                Some((at, None)) => now >= at + patience,
            };
        if may_start {
            if let Some(f) = waiting.next() {
                running.push((started, Box::pin(f)));
                latest = Some((now, None));
                started += 1;
            }
            continue;
        }
        let first_slow = outputs[0].is_none() && started > 0 && now >= began + patience;
        let first_wants = outputs[..n].iter().flatten().any(&wants_extra);
        if !extra_started && (first_slow || first_wants) {
            if let Some(more) = extra.take() {
                running.extend(more.into_iter().enumerate().map(|(i, f)| (n + i, Box::pin(f))));
                extra_started = true;
                continue;
            }
        }
        if started == n && running.is_empty() {
            break;
        }
        // Sleep until the next start could be due (or `patience` for the extra), or a probe ends.
        let mut wake = began + Duration::from_secs(3600);
        if started < n {
            wake = match latest {
                Some((_, Some(ended))) => ended + spacing,
                Some((at, None)) => at + patience,
                None => now,
            };
        }
        if !extra_started && extra.is_some() && outputs[0].is_none() {
            wake = wake.min(began + patience);
        }
        let sleep = tokio::time::sleep_until(wake);
        tokio::pin!(sleep);
        let latest_slot = started.checked_sub(1);
        std::future::poll_fn(|cx| {
            let mut progressed = false;
            running.retain_mut(|(slot, f)| match f.as_mut().poll(cx) {
                Poll::Ready(out) => {
                    outputs[*slot] = Some(out);
                    if Some(*slot) == latest_slot {
                        if let Some((at, None)) = latest {
                            latest = Some((at, Some(Instant::now())));
                        }
                    }
                    progressed = true;
                    false
                }
                Poll::Pending => true,
            });
            if progressed || sleep.as_mut().poll(cx).is_ready() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
    let mut outputs = outputs.into_iter();
    let first_out: Vec<F::Output> = outputs.by_ref().take(n).flatten().collect();
    let extra_out = extra_started.then(|| outputs.flatten().collect());
    (first_out, extra_out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A probe that answers after `takes`, noting when it started.
    async fn answer(
        log: &Mutex<Vec<(usize, u64)>>,
        id: usize,
        takes: Duration,
        began: tokio::time::Instant,
    ) -> usize {
        log.lock().unwrap().push((id, began.elapsed().as_millis() as u64));
        tokio::time::sleep(takes).await;
        id
    }

    #[tokio::test(start_paused = true)]
    async fn fast_answers_come_one_at_a_time_and_slow_ones_overlap() {
        let (spacing, patience) = (Duration::from_millis(200), Duration::from_millis(400));
        let began = tokio::time::Instant::now();
        // Fast (1 ms): sequential, `spacing` apart; the extra never starts (every answer is fine).
        let log = Mutex::new(Vec::new());
        let fast = |id| answer(&log, id, Duration::from_millis(1), began);
        let (out, extra) =
            staggered(vec![fast(0), fast(1), fast(2)], Some(vec![fast(9)]), spacing, patience, |&id| {
                id == 99
            })
            .await;
        assert_eq!((out, extra), (vec![0, 1, 2], None));
        let starts: Vec<u64> = log.lock().unwrap().iter().map(|&(_, t)| t).collect();
        assert_eq!(starts, [0, 201, 402]);

        // Slow (5 s, Debian's wrappers): each starts `patience` after the last, the extra at `patience`;
        // all done in one slow answer plus two patiences.
        let began = tokio::time::Instant::now();
        let log = Mutex::new(Vec::new());
        let slow = |id| answer(&log, id, Duration::from_secs(5), began);
        let (out, extra) = staggered(
            vec![slow(0), slow(1), slow(2)],
            Some(vec![slow(7), slow(8)]),
            spacing,
            patience,
            |_| false,
        )
        .await;
        assert_eq!((out, extra), (vec![0, 1, 2], Some(vec![7, 8])));
        let mut starts = log.lock().unwrap().clone();
        starts.sort();
        assert_eq!(starts, [(0, 0), (1, 400), (2, 800), (7, 400), (8, 400)]);
        assert_eq!(began.elapsed().as_millis(), 5_800);

        // A refusal (not what a banner is) starts the extra at once.
        let began = tokio::time::Instant::now();
        let log = Mutex::new(Vec::new());
        let fast = |id| answer(&log, id, Duration::from_millis(1), began);
        let (_, extra) =
            staggered(vec![fast(0), fast(1)], Some(vec![fast(5)]), spacing, patience, |&id| id == 0).await;
        assert_eq!(extra, Some(vec![5]));
        let extra_start = log.lock().unwrap().iter().find(|&&(id, _)| id == 5).map(|&(_, t)| t);
        assert_eq!(extra_start, Some(1));
    }
}
