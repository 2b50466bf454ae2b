//! `diagnose`: why does the identification exchange fail, and which fix applies?
//!
//! A short, bounded sequence of experiments, each chosen from what the previous ones showed:
//!
//! 1. **baseline**: three single probes at concurrency 1, 200 ms apart, in both probe orders;
//!    if they all agree on a refusal, that is also the determinism test;
//! 2. **determinism**: when the baseline is mixed, more probes at concurrency 1 show the pattern;
//! 3. **source**: the same from a second local address: per-source limits and penalties hit one
//!    address, global MaxStartups and (most) access rules hit all;
//! 4. **load** (when the baseline works): hold more and more unauthenticated connections (from other
//!    addresses when there are any) and probe at each level: does a limit appear?
//! 5. **persistence**: after releasing them, do refusals clear (MaxStartups) or stay (a penalty)?
//!
//! Gathering ([`diagnose`]) does I/O; deciding ([`decide`]) is a pure function of the gathered
//! [`Facts`], so every verdict rule is unit-tested on synthetic facts.

use super::budget::{Budget, BudgetUse};
use super::holder::Holder;
use crate::engine::connect::ConnectEngine;
use crate::engine::{Engine, ProbeConfig, ProbeRequest};
use crate::evidence::{End, ProbeOrder};
use crate::outcome::{classify, KnownRefusal, Outcome};
use crate::server::Software;
use serde::Serialize;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// What diagnose concludes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The identification exchange works: the problem is past it.
    Ok,
    /// Nothing listens: RST to SYN.
    NotListening,
    /// SYNs get no answer: a firewall drops them, or the host is down.
    Filtered,
    /// ICMP errors answer the SYN.
    Unreachable,
    /// TCP wrappers or an ACL: a deterministic refusal after accept.
    AccessDenied,
    /// The server's global MaxStartups limit.
    Maxstartups,
    /// A per-source-address limit (PerSourceMaxStartups, dropbear's MAX_UNAUTH_PER_IP).
    PerSourceLimit,
    /// OpenSSH 9.8+ PerSourcePenalties has blocked this address.
    Penalized,
    /// Accepted but no banner, or banners slowing and timing out under load.
    Overloaded,
    /// Not an SSH server.
    NotSsh,
    /// Failures without a pattern.
    Intermittent,
}

impl Verdict {
    /// The stable snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::NotListening => "not_listening",
            Verdict::Filtered => "filtered",
            Verdict::Unreachable => "unreachable",
            Verdict::AccessDenied => "access_denied",
            Verdict::Maxstartups => "maxstartups",
            Verdict::PerSourceLimit => "per_source_limit",
            Verdict::Penalized => "penalized",
            Verdict::Overloaded => "overloaded",
            Verdict::NotSsh => "not_ssh",
            Verdict::Intermittent => "intermittent",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How sure the verdict is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    /// Other explanations remain likely.
    Low,
    /// The evidence points one way, with a plausible alternative.
    Medium,
    /// The evidence has this verdict's signature.
    High,
}

/// One probe, as an experiment records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeRecord {
    /// The outcome.
    pub outcome: Outcome,
    /// The probe order.
    pub order: ProbeOrder,
    /// The source address asked for (`default`: the kernel's choice).
    pub source: String,
    /// Our address as connected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local: Option<SocketAddr>,
    /// Our held connections open when it connected.
    pub held: u32,
    /// Bytes received.
    pub bytes: usize,
    /// How the connection ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<End>,
    /// Microseconds from connect to the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_us: Option<u64>,
    /// Microseconds from connect to the complete ident line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ident_us: Option<u64>,
    /// The server's software, from its ident line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub software: Option<String>,
    /// What the server said instead of an ident.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// A recognised refusal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<KnownRefusal>,
}

impl ProbeRecord {
    fn refused(&self) -> bool {
        self.outcome.is_refusal_after_accept()
    }

    /// The kind of answer: a banner, a refusal after accept, or the outcome itself.
    fn kind(&self) -> Outcome {
        if self.refused() {
            Outcome::ClosedBeforeBanner
        } else {
            self.outcome
        }
    }

    fn zero_byte_refusal(&self) -> bool {
        matches!(self.outcome, Outcome::ClosedBeforeBanner | Outcome::ResetBeforeBanner)
    }
}

/// Which experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExperimentKind {
    /// Single probes, both orders, nothing held.
    Baseline,
    /// More single probes at concurrency 1.
    Determinism,
    /// From a second source address.
    Source,
    /// Probes while holding connections.
    Load,
    /// Probes after releasing held connections.
    Persistence,
}

/// One experiment's probes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Experiment {
    /// Which experiment.
    pub kind: ExperimentKind,
    /// Our held connections during it.
    pub held: u32,
    /// Whether the held connections came from the probing address.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub held_from_probing_source: bool,
    /// Its probes.
    pub probes: Vec<ProbeRecord>,
    /// Attempts to hold a connection that the server refused while we filled up to `held`.
    #[serde(skip_serializing_if = "is_zero")]
    pub hold_refused: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Experiment {
    /// `3 banner, 2 server_refusal` style counts.
    pub fn tally(&self) -> String {
        tally(self.probes.iter())
    }
}

fn tally<'a>(probes: impl Iterator<Item = &'a ProbeRecord>) -> String {
    let mut counts: std::collections::BTreeMap<Outcome, u32> = Default::default();
    for p in probes {
        *counts.entry(p.outcome).or_default() += 1;
    }
    counts.iter().map(|(o, n)| format!("{n} {o}")).collect::<Vec<_>>().join(", ")
}

/// Everything gathered, in the order it was gathered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Facts {
    /// The experiments.
    pub experiments: Vec<Experiment>,
    /// Whether a second source address was available.
    pub second_source: bool,
    /// Whether the budget stopped an experiment early.
    pub budget_exhausted: bool,
}

impl Facts {
    fn of(&self, kind: ExperimentKind) -> impl Iterator<Item = &Experiment> {
        self.experiments.iter().filter(move |e| e.kind == kind)
    }

    fn probes(&self, kind: ExperimentKind) -> impl Iterator<Item = &ProbeRecord> {
        self.of(kind).flat_map(|e| e.probes.iter())
    }

    /// Probes from the probing address with nothing held: baseline and determinism.
    fn unloaded(&self) -> Vec<&ProbeRecord> {
        self.probes(ExperimentKind::Baseline).chain(self.probes(ExperimentKind::Determinism)).collect()
    }

    /// The server software, from any banner.
    pub fn software(&self) -> Option<Software> {
        self.experiments
            .iter()
            .flat_map(|e| &e.probes)
            .find_map(|p| p.software.as_deref())
            .map(Software::parse)
    }
}

/// The conclusion: a verdict, how sure, why, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The verdict.
    pub verdict: Verdict,
    /// How sure.
    pub confidence: Confidence,
    /// Why, in a few sentences with the numbers.
    pub evidence: Vec<String>,
    /// What to change, naming the setting.
    pub remedy: Vec<String>,
    /// Caveats: what limited the experiments.
    pub notes: Vec<String>,
}

/// A diagnosis of one target.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnosis {
    /// The target as given.
    pub target: String,
    /// The address diagnosed.
    pub remote: SocketAddr,
    /// The conclusion.
    #[serde(flatten)]
    pub finding: Finding,
    /// The server's ident line, if any probe got one.
    #[serde(skip_serializing_if = "Option::is_none")]
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

/// The probing address and the others.
#[derive(Debug, Clone)]
struct Sources {
    primary: Option<IpAddr>,
    others: Vec<Option<IpAddr>>,
}

/// How many automatic loopback sources to make available.
const LOOPBACK_SOURCES: u8 = 40;

impl Sources {
    fn plan(remote: SocketAddr, given: &[IpAddr]) -> Sources {
        let same_family: Vec<IpAddr> =
            given.iter().copied().filter(|ip| ip.is_ipv4() == remote.is_ipv4()).collect();
        if let Some((&first, rest)) = same_family.split_first() {
            return Sources { primary: Some(first), others: rest.iter().copied().map(Some).collect() };
        }
        let others = match remote.ip() {
            IpAddr::V4(v4) if v4.is_loopback() => {
                (1..=LOOPBACK_SOURCES).map(|i| Some(IpAddr::from([127, 77, 0, i]))).collect()
            }
            _ => Vec::new(),
        };
        Sources { primary: None, others }
    }
}

fn source_label(source: Option<IpAddr>) -> String {
    source.map_or_else(|| "default".to_string(), |ip| ip.to_string())
}

/// Runs the experiments against `remote` and decides, taking connections from `budget`: one
/// budget per server host, shared by every target naming it (a penalty counts per server and
/// source address, whatever the port or name).
pub async fn diagnose(
    target: &str,
    remote: SocketAddr,
    options: &DiagnoseOptions,
    budget: &Budget,
) -> Diagnosis {
    let started = std::time::Instant::now();
    let sources = Sources::plan(remote, &options.sources);
    let lab = Bench::new(remote, options, budget);
    let mut facts = Facts { second_source: !sources.others.is_empty(), ..Facts::default() };
    let primary = sources.primary;

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
    let all_banner = !baseline.is_empty() && baseline.iter().all(|p| p.outcome == Outcome::Banner);
    let any_refused = baseline.iter().any(|p| p.refused() || p.outcome == Outcome::BannerTimeout);
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
        if let Some(&other) = sources.others.first() {
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
        load_experiment(&lab, &sources, options, &mut facts).await;
    }

    let mut finding = decide(&facts);
    if finding.verdict == Verdict::Penalized {
        finding.evidence.push(match wait_for_lift(&lab, primary, options.penalty_wait).await {
            Some(after) => format!("the block lifted {:.1} s later (polled every 2 s)", after.as_secs_f64()),
            None if options.penalty_wait.is_zero() => {
                "the block lifts once the address's outstanding penalty drops under \
                 the threshold: at most `max` (600 s by default) from now; --wait-penalty 10m measures it"
                    .into()
            }
            None => format!(
                "the block had not lifted after {:.0} s of polling",
                options.penalty_wait.as_secs_f64()
            ),
        });
    }
    let server = facts.experiments.iter().flat_map(|e| &e.probes).find_map(|p| p.software.clone());
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
async fn wait_for_lift(bench: &Bench<'_>, source: Option<IpAddr>, wait: Duration) -> Option<Duration> {
    let started = std::time::Instant::now();
    while started.elapsed() < wait {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let obs = bench.wait.probe(ProbeRequest { remote: bench.remote, source }).await;
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
/// Held connections that, refused-free, make `ok` a confident verdict.
const CONFIDENT_LOAD: u32 = 8;
/// Probes per load step, one at a time. With the baseline's 3 and persistence's 2, the probing
/// address spends at most 11 connections: under the default budget of 12.
const PROBES_PER_STEP: u32 = 2;

/// 4 and 5: hold more and more connections, probe at each step; on refusals, check another source
/// and, after releasing, whether they persist.
async fn load_experiment(lab: &Bench<'_>, sources: &Sources, options: &DiagnoseOptions, facts: &mut Facts) {
    // Hold from the other addresses when there are any, so a per-source limit on the probing address
    // cannot be mistaken for a global one, and penalties are spread.
    let (holder_sources, from_probing): (Vec<Option<IpAddr>>, bool) = if sources.others.len() >= 2 {
        (sources.others[1..].to_vec(), false)
    } else {
        (vec![sources.primary], true)
    };
    let mut holder = Holder::new(lab.remote);
    let mut refused_at = None;
    for &step in LOAD_STEPS.iter().filter(|&&s| s <= options.max_held) {
        let refused_before = holder.refused();
        let held = holder.fill_to(step, &holder_sources, lab.budget, options.banner_timeout, step * 3).await;
        let hold_refused = holder.refused() - refused_before;
        // One probe at a time, so that the server's count is what we hold (plus others' load).
        let probes =
            lab.series(ProbeOrder::WaitForBanner, sources.primary, PROBES_PER_STEP, held, facts).await;
        let refused = probes.iter().any(|p| p.refused() || p.outcome == Outcome::BannerTimeout);
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
        if let Some(&fresh) = sources.others.first() {
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
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let probes = lab.series(ProbeOrder::WaitForBanner, sources.primary, 2, 0, facts).await;
        facts.experiments.push(Experiment {
            kind: ExperimentKind::Persistence,
            held: 0,
            held_from_probing_source: false,
            probes,
            hold_refused: 0,
        });
    }
}

/// Makes probes for experiments, within the budget.
struct Bench<'a> {
    remote: SocketAddr,
    wait: ConnectEngine,
    send_first: ConnectEngine,
    budget: &'a Budget,
    spacing: Duration,
}

impl<'a> Bench<'a> {
    fn new(remote: SocketAddr, options: &DiagnoseOptions, budget: &'a Budget) -> Bench<'a> {
        let config = ProbeConfig {
            connect_timeout: options.connect_timeout,
            banner_timeout: options.banner_timeout,
            ..ProbeConfig::default()
        };
        Bench {
            remote,
            wait: ConnectEngine::new(config.clone()),
            send_first: ConnectEngine::new(ProbeConfig { order: ProbeOrder::SendFirst, ..config }),
            budget,
            spacing: options.spacing,
        }
    }

    /// One probe, if the budget allows.
    async fn probe(&self, order: ProbeOrder, source: Option<IpAddr>, held: u32) -> Option<ProbeRecord> {
        if !self.budget.try_take(source) {
            return None;
        }
        let engine = if order == ProbeOrder::SendFirst { &self.send_first } else { &self.wait };
        let obs = engine.probe(ProbeRequest { remote: self.remote, source }).await;
        let c = classify(&obs);
        Some(ProbeRecord {
            outcome: c.outcome,
            order,
            source: source_label(source),
            local: obs.local,
            held,
            bytes: obs.received.len(),
            end: obs.end,
            closed_us: obs.timings.closed,
            ident_us: obs.timings.ident,
            software: c.banner.as_ref().map(|b| b.software.clone()),
            message: c.message,
            refusal: c.refusal,
        })
    }

    /// `n` probes one after another, `spacing` apart, with `held` connections held.
    async fn series(
        &self,
        order: ProbeOrder,
        source: Option<IpAddr>,
        n: u32,
        held: u32,
        facts: &mut Facts,
    ) -> Vec<ProbeRecord> {
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
    async fn concurrent(&self, source: Option<IpAddr>, n: u32, held: u32) -> Vec<ProbeRecord> {
        let probes = (0..n).map(|_| self.probe(ProbeOrder::WaitForBanner, source, held));
        let mut out = Vec::new();
        for p in super::join_all(probes).await.into_iter().flatten() {
            out.push(p);
        }
        out
    }
}

/// Debian's libwrap child sleeps 5 s before closing a denied connection (FACTS §3).
const WRAPPERS_DELAY_US: std::ops::RangeInclusive<u64> = 4_500_000..=6_500_000;
/// Listener drops close well under this.
const FAST_CLOSE_US: u64 = 100_000;

/// Decides the verdict from the facts. Pure.
pub fn decide(facts: &Facts) -> Finding {
    let unloaded = facts.unloaded();
    let mut f = Finding {
        verdict: Verdict::Intermittent,
        confidence: Confidence::Low,
        evidence: Vec::new(),
        remedy: Vec::new(),
        notes: Vec::new(),
    };
    if facts.budget_exhausted {
        f.notes.push(
            "the probe budget per source address ran out: some experiments were cut short \
             (raise it with --budget, at the risk of an OpenSSH 9.8+ penalty)"
                .into(),
        );
    }
    let n = unloaded.len();
    if n == 0 {
        f.evidence.push("no probe could be made within the budget".into());
        return f;
    }
    let count = |o: Outcome| unloaded.iter().filter(|p| p.outcome == o).count();
    let all = |o: Outcome| count(o) == n;
    let software = facts.software();

    // The connect itself fails.
    for (outcome, verdict, why, remedy) in [
        (
            Outcome::Refused,
            Verdict::NotListening,
            "answered every SYN with RST: nothing listens on this address and port (or a firewall rejects with a TCP reset)",
            "start sshd or fix its `ListenAddress`/`Port` (check with `ss -ltnp` on the server); if sshd runs, look for a firewall rule rejecting with tcp reset",
        ),
        (
            Outcome::ConnectTimeout,
            Verdict::Filtered,
            "never answered our SYNs: a firewall drops them, or the host is down",
            "allow TCP to this port in the firewall on the path (nftables/iptables DROP rules, cloud security groups), or check that the host is up",
        ),
        (
            Outcome::Unreachable,
            Verdict::Unreachable,
            "answered with ICMP errors: no route to the host, or a firewall rejecting with ICMP",
            "fix routing to the host, or the firewall rule that rejects with ICMP",
        ),
    ] {
        if all(outcome) {
            f.verdict = verdict;
            f.confidence = if n >= 2 { Confidence::High } else { Confidence::Medium };
            f.evidence.push(format!("all {n} probes: {outcome}; the server {why}"));
            f.remedy.push(remedy.into());
            return f;
        }
    }
    if unloaded.iter().all(|p| matches!(p.outcome, Outcome::NotSsh | Outcome::ProtocolMismatch)) {
        f.verdict = Verdict::NotSsh;
        f.confidence = Confidence::High;
        let what = unloaded.iter().find_map(|p| p.message.clone().or(p.software.clone())).unwrap_or_default();
        f.evidence
            .push(format!("all {n} probes: {}; the server said {what:?}", tally(unloaded.iter().copied())));
        f.remedy.push("something other than an SSH-2 server answers on this port: check the port number, or what listens there".into());
        return f;
    }
    if all(Outcome::Banner) {
        return decide_loaded(facts, f, software);
    }

    let refusals: Vec<&ProbeRecord> = unloaded.iter().copied().filter(|p| p.refused()).collect();
    let second: Vec<&ProbeRecord> =
        facts.of(ExperimentKind::Source).filter(|e| e.held == 0).flat_map(|e| &e.probes).collect();
    let second_all_banner = !second.is_empty() && second.iter().all(|p| p.outcome == Outcome::Banner);
    let second_all_refused = !second.is_empty() && second.iter().all(|p| p.refused());
    let deterministic = refusals.len() == n;
    f.evidence.push(format!(
        "{} probes at concurrency 1 with nothing held: {}",
        n,
        tally(unloaded.iter().copied())
    ));
    if !second.is_empty() {
        f.evidence.push(format!(
            "from a second address ({}): {}",
            second[0].source,
            tally(second.iter().copied())
        ));
    } else if !facts.second_source {
        f.notes.push(
            "no second source address: per-source limits and penalties cannot be told from global ones \
             (give two --source addresses)"
                .into(),
        );
    }

    if deterministic {
        let known = refusals.iter().find_map(|p| p.refusal);
        let zero = refusals.iter().all(|p| p.zero_byte_refusal());
        let closes: Vec<u64> = refusals.iter().filter_map(|p| p.closed_us).collect();
        let median = super::stats::percentile(&closes, 0.5).unwrap_or(0);
        if let Some(kind) = known {
            let line = refusals.iter().find_map(|p| p.message.clone()).unwrap_or_default();
            f.evidence.push(format!(
                "the server sent {line:?} and closed, in {} (median): {}",
                us(median),
                kind.meaning()
            ));
            if second_all_banner {
                let sw = software.map(|s| s.to_string()).unwrap_or_else(|| "the server".into());
                if kind == KnownRefusal::NotAllowedAtThisTime || software.is_some_and(Software::has_penalties)
                {
                    f.verdict = Verdict::Penalized;
                    f.confidence = Confidence::Medium;
                    f.evidence.push(format!(
                        "another address gets a banner ({sw}) while this one is refused with nothing held by us: \
                         PerSourcePenalties (on by default since 9.8) blocks this address; PerSourceMaxStartups \
                         (off by default) would need other clients on this address holding connections"
                    ));
                    f.remedy.push(penalty_remedy());
                } else {
                    f.verdict = Verdict::PerSourceLimit;
                    f.confidence = Confidence::High;
                    f.evidence.push(format!(
                        "another address gets a banner ({sw}): the limit is per source address, and {sw} has no penalties"
                    ));
                    f.remedy.push(per_source_remedy(software));
                }
            } else if second.is_empty() && kind == KnownRefusal::NotAllowedAtThisTime {
                // OpenSSH 9.8+ sends one line for all three limits, and there is no second address
                // to tell per-source from global.
                f.verdict = Verdict::Penalized;
                f.confidence = Confidence::Low;
                f.evidence.push(
                    "OpenSSH 9.8+ sends this line for PerSourcePenalties, PerSourceMaxStartups and MaxStartups alike. \
                     With nothing held by us, a global limit needs others holding unauthenticated connections up to \
                     `full` (100 by default), a penalty only earlier connections from this address that did not \
                     authenticate (scanners, monitoring, earlier runs): the likelier cause, not a proven one"
                        .into(),
                );
                f.notes.push(
                    "a second source address tells a penalty (one address) from MaxStartups (every address): \
                     give two --source addresses, or probe from another host"
                        .into(),
                );
                f.remedy.push(penalty_remedy());
                f.remedy.push(format!("if every address is refused: {}", maxstartups_remedy()));
            } else {
                f.verdict = Verdict::Maxstartups;
                f.confidence = if second_all_refused { Confidence::High } else { Confidence::Medium };
                if second_all_refused {
                    f.evidence.push(
                        "another address is refused too, while we hold nothing: the server is at its global MaxStartups \
                         `full` with unauthenticated connections held by others"
                            .into(),
                    );
                }
                f.remedy.push(maxstartups_remedy());
            }
            return f;
        }
        if zero {
            f.evidence.push(format!(
                "every refusal sent zero bytes; the server closed after {} (median; {} probes)",
                us(median),
                closes.len()
            ));
            if WRAPPERS_DELAY_US.contains(&median) {
                f.verdict = Verdict::AccessDenied;
                f.confidence = Confidence::High;
                f.evidence.push(
                    "a zero-byte close about 5 s after accept, on every probe, is Debian's TCP-wrappers denial \
                     (the sshd child sleeps 5 s before exiting); load-dependent limits close in under a millisecond"
                        .into(),
                );
                if second_all_banner {
                    f.evidence
                        .push("another address gets a banner: the rule matches this address only".into());
                }
                f.remedy.push(wrappers_remedy(&refusals));
                return f;
            }
            if median < FAST_CLOSE_US && second_all_banner && software == Some(Software::Dropbear) {
                f.verdict = Verdict::PerSourceLimit;
                f.confidence = Confidence::High;
                f.evidence.push(
                    "dropbear closes with zero bytes at once when one address has MAX_UNAUTH_PER_IP (5) unauthenticated \
                     connections; another address gets a banner"
                        .into(),
                );
                f.remedy.push(per_source_remedy(software));
                return f;
            }
            f.verdict = Verdict::AccessDenied;
            f.confidence = Confidence::Medium;
            f.evidence.push(if median < FAST_CLOSE_US {
                "a fast zero-byte close on every probe: an access rule (TCP wrappers without Debian's delay, an ACL), or \
                 a server that cannot start sessions (a host key it cannot read closes in ~7 ms), or a connection limit \
                 on a server that sends no message (dropbear, OpenSSH before 8.2) held full by others"
                    .into()
            } else {
                "a zero-byte close on every probe, at an unusual delay: an access rule or a broken server".into()
            });
            f.remedy.push(wrappers_remedy(&refusals));
            f.remedy.push("check the server's log for the reason (sshd -d on a spare port shows it)".into());
            return f;
        }
        // Text that is not a recognised refusal: a wrappers `twist`, a custom ACL message.
        let line = refusals.iter().find_map(|p| p.message.clone()).unwrap_or_default();
        f.verdict = Verdict::AccessDenied;
        f.confidence = Confidence::Medium;
        f.evidence.push(format!(
            "every probe was refused with {line:?}: a message no sshd limit sends (a TCP-wrappers `twist` or an ACL)"
        ));
        f.remedy.push(wrappers_remedy(&refusals));
        return f;
    }

    if all(Outcome::BannerTimeout) {
        f.verdict = Verdict::Overloaded;
        f.confidence = Confidence::Medium;
        // A server that sent part of its line (`SSH-2.0-`, then nothing) did send bytes.
        match unloaded.iter().find_map(|p| p.message.as_deref()) {
            Some(partial) => f.evidence.push(format!(
                "the server accepts and starts its ident line ({}) but never completes it: sshd or a middlebox \
                 stalls mid-banner, or something on the path holds the connection",
                crate::escape::quoted(partial)
            )),
            None => f.evidence.push(
                "the server accepts but never sends its banner: sshd is not accepting (hung, or its listen backlog is \
                 full and the kernel completes handshakes for it), or something on the path holds the connection"
                    .into(),
            ),
        }
        f.remedy.push("check sshd is alive and not overloaded (load, `MaxStartups`, LoginGraceTime); restart it if hung".into());
        return f;
    }

    // Some banners, some refusals, with nothing held by us.
    if !refusals.is_empty() && count(Outcome::Banner) > 0 {
        let known = refusals.iter().find_map(|p| p.refusal);
        let fast_zero =
            refusals.iter().all(|p| p.zero_byte_refusal() && p.closed_us.unwrap_or(0) < FAST_CLOSE_US);
        // Banners first, then nothing but refusals: a block that began during this diagnosis.
        let first_refused = unloaded.iter().position(|p| p.refused()).unwrap_or(n);
        let banners_then_refused = unloaded[..first_refused].iter().all(|p| p.outcome == Outcome::Banner)
            && unloaded[first_refused..].iter().all(|p| p.refused());
        let penalties_possible = known == Some(KnownRefusal::NotAllowedAtThisTime)
            || software.is_some_and(Software::has_penalties);
        if (known.is_some() || fast_zero) && second_all_banner {
            if banners_then_refused && penalties_possible {
                f.verdict = Verdict::Penalized;
                f.confidence = Confidence::Medium;
                f.evidence.push(format!(
                    "the first {first_refused} probes got banners, then every one was refused, while another address is \
                     served: a PerSourcePenalties block on this address that began during this diagnosis"
                ));
                f.notes.push(
                    "our own probes may have caused this refusal: the address was close to the penalty threshold \
                     (earlier connections that did not authenticate) and this diagnosis's connections added to it"
                        .into(),
                );
                f.remedy.push(penalty_remedy());
            } else {
                f.verdict = Verdict::PerSourceLimit;
                f.confidence = Confidence::Medium;
                f.evidence.push(format!(
                    "{} of {n} probes refused with nothing held by us, while another address is served: a limit on \
                     this address (unauthenticated connections from it held by others: PerSourceMaxStartups)",
                    refusals.len()
                ));
                f.remedy.push(per_source_remedy(software));
            }
            return f;
        }
        if known.is_some() || fast_zero {
            f.verdict = Verdict::Maxstartups;
            f.confidence = Confidence::Medium;
            f.evidence.push(format!(
                "{} of {n} probes refused at random with nothing held by us: the server's unauthenticated connections \
                 (held by others) are between MaxStartups `start` and `full`, where sshd drops at random",
                refusals.len()
            ));
            f.remedy.push(maxstartups_remedy());
            return f;
        }
    }
    f.evidence.push("failures without a pattern".into());
    f.remedy.push(
        "collect more: `sshprobe probe TARGET --count 50 --interval 200ms -o jsonl`, and check the path (packet loss, \
         middleboxes)"
            .into(),
    );
    f
}

/// The verdict when unloaded probes all got banners: what did the load experiment show?
fn decide_loaded(facts: &Facts, mut f: Finding, software: Option<Software>) -> Finding {
    let loads: Vec<&Experiment> = facts.of(ExperimentKind::Load).collect();
    let n = facts.unloaded().len();
    let sw = software.map(|s| s.to_string()).unwrap_or_else(|| "the server".into());
    f.evidence.push(format!("{n} probes with nothing held: all banner ({sw})"));
    // The first load at which anything was refused: our probes, our attempts to hold more, or the
    // fresh address probing at the same load (one more sample of the same server count).
    let refused_level = facts
        .experiments
        .iter()
        .filter(|e| e.kind == ExperimentKind::Load || (e.kind == ExperimentKind::Source && e.held > 0))
        .find(|e| e.hold_refused > 0 || e.probes.iter().any(|p| p.refused()));
    let timeouts =
        loads.iter().flat_map(|e| &e.probes).filter(|p| p.outcome == Outcome::BannerTimeout).count();
    let max_held = loads.iter().map(|e| e.held).max().unwrap_or(0);
    let Some(level) = refused_level else {
        if timeouts > 0 {
            f.verdict = Verdict::Overloaded;
            f.confidence = Confidence::Medium;
            f.evidence.push(format!("{timeouts} probes under load timed out waiting for the banner"));
            f.remedy.push(
                "the server slows to a stop under load: check its CPU, `MaxStartups`, and LoginGraceTime"
                    .into(),
            );
            return f;
        }
        f.verdict = Verdict::Ok;
        f.confidence = if max_held >= CONFIDENT_LOAD { Confidence::High } else { Confidence::Medium };
        if max_held > 0 {
            f.evidence.push(format!(
                "with up to {max_held} unauthenticated connections held, every probe still got a banner"
            ));
        }
        if max_held < CONFIDENT_LOAD {
            f.notes.push(format!(
                "the load experiment reached only {max_held} held connections (budget or --max-held): a MaxStartups \
                 `start` above that was not tested"
            ));
        }
        f.remedy.push(
            "the identification exchange works: look past it (host keys and known_hosts, key exchange algorithms, \
             authentication): `ssh -vvv` shows where it stops"
                .into(),
        );
        return f;
    };
    let refused: Vec<&ProbeRecord> = level.probes.iter().filter(|p| p.refused()).collect();
    f.evidence.push(format!(
        "holding {} unauthenticated connections{}: {}",
        level.held,
        if level.held_from_probing_source { " from the probing address" } else { " from other addresses" },
        level.tally()
    ));
    if level.hold_refused > 0 {
        f.evidence.push(format!(
            "{} of our attempts to hold more connections were refused on the way there",
            level.hold_refused
        ));
    }
    if let Some(line) = refused.iter().find_map(|p| p.message.clone()) {
        f.evidence.push(format!("the refusals said {line:?}"));
    }
    let fresh: Vec<&ProbeRecord> =
        facts.of(ExperimentKind::Source).filter(|e| e.held > 0).flat_map(|e| &e.probes).collect();
    let fresh_banner = !fresh.is_empty() && fresh.iter().all(|p| p.outcome == Outcome::Banner);
    let after: Vec<&ProbeRecord> = facts.probes(ExperimentKind::Persistence).collect();
    let cleared = !after.is_empty() && after.iter().all(|p| p.outcome == Outcome::Banner);
    if !fresh.is_empty() {
        f.evidence.push(format!("meanwhile from a fresh address: {}", tally(fresh.iter().copied())));
    }
    if !after.is_empty() {
        f.evidence.push(format!("after releasing them: {}", tally(after.iter().copied())));
    }
    // A penalty needs a server that has them, and outlives our held connections.
    let penalties_possible = software.is_some_and(Software::has_penalties)
        || refused.iter().any(|p| p.refusal == Some(KnownRefusal::NotAllowedAtThisTime));
    if penalties_possible && fresh_banner && !after.is_empty() && !cleared {
        f.verdict = Verdict::Penalized;
        f.confidence = Confidence::Medium;
        f.evidence.push(
            "the probing address stayed refused after we released everything while a fresh address was served: a \
             PerSourcePenalties block, likely earned by this diagnosis's own connections on top of earlier ones"
                .into(),
        );
        f.notes.push(
            "our own probes may have caused this refusal: the exchange worked before the load experiment"
                .into(),
        );
        f.remedy.push(penalty_remedy());
        return f;
    }
    if level.held_from_probing_source && fresh_banner && cleared {
        f.verdict = Verdict::PerSourceLimit;
        f.confidence = Confidence::Medium;
        f.evidence.push(format!(
            "refusals began at {} connections from the probing address while a fresh address was served, and \
             cleared when they were released: a per-source limit",
            level.held
        ));
        f.remedy.push(per_source_remedy(software));
        return f;
    }
    f.verdict = Verdict::Maxstartups;
    f.confidence = if cleared { Confidence::High } else { Confidence::Medium };
    f.evidence.push(format!(
        "refusals began with {} connections held{}: MaxStartups `start` is at most {} (minus unauthenticated \
         connections others hold); `sshprobe limits` estimates start:rate:full",
        level.held,
        if cleared { " and cleared once they were released" } else { "" },
        level.held
    ));
    if !after.is_empty() && !cleared {
        f.notes
            .push("refusals persisted after we released our connections: others' load or a penalty".into());
    }
    f.remedy.push(maxstartups_remedy());
    f
}

fn us(v: u64) -> String {
    crate::report::probe::format_us(v)
}

fn wrappers_remedy(refusals: &[&ProbeRecord]) -> String {
    let client =
        refusals.iter().find_map(|p| p.local).map(|a| a.ip().to_string()).unwrap_or_else(|| "CLIENT".into());
    format!(
        "TCP wrappers: find the matching rule in /etc/hosts.deny (e.g. `sshd: ALL`) and allow this client in \
         /etc/hosts.allow (`sshd: {client}`); sshd logs the denial only at LogLevel DEBUG1 \
         ('Connection refused by tcp wrapper'). Otherwise look for another access rule in front of sshd"
    )
}

fn maxstartups_remedy() -> String {
    "raise `MaxStartups` in sshd_config (default 10:30:100; e.g. `MaxStartups 50:30:200`), lower `LoginGraceTime` so \
     stalled connections free their slot sooner, and find who holds unauthenticated connections \
     (`ss -tn state established '( sport = :22 )'` on the server)"
        .into()
}

fn per_source_remedy(software: Option<Software>) -> String {
    if software == Some(Software::Dropbear) {
        "dropbear allows MAX_UNAUTH_PER_IP (5) unauthenticated connections per address, a compile-time constant \
         (default_options.h): close idle connections from this address or rebuild dropbear with a higher limit"
            .into()
    } else {
        "raise or remove `PerSourceMaxStartups` in sshd_config (OpenSSH 8.5+; `PerSourceNetBlockSize` sets what counts \
         as one source), or close the idle unauthenticated connections this address holds"
            .into()
    }
}

fn penalty_remedy() -> String {
    "wait for the penalty to lift (each unauthenticated connection earns 1 s, up to `max:600`), or exempt the \
     address: `PerSourcePenaltyExemptList 192.0.2.0/24` in sshd_config; `PerSourcePenalties noauth:0` stops \
     penalising connections that never authenticate (monitoring, probes); `PerSourcePenalties no` turns it off. \
     `sshd -T | grep -i penalt` shows the settings"
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(outcome: Outcome) -> ProbeRecord {
        ProbeRecord {
            outcome,
            order: ProbeOrder::WaitForBanner,
            source: "default".into(),
            local: Some("127.0.0.1:40000".parse().unwrap()),
            held: 0,
            bytes: 0,
            end: None,
            closed_us: Some(300),
            ident_us: None,
            software: None,
            message: None,
            refusal: None,
        }
    }

    fn banner(sw: &str) -> ProbeRecord {
        ProbeRecord { software: Some(sw.into()), bytes: 30, ..rec(Outcome::Banner) }
    }

    fn closed_after(us: u64) -> ProbeRecord {
        ProbeRecord { closed_us: Some(us), ..rec(Outcome::ClosedBeforeBanner) }
    }

    fn refusal(line: &str) -> ProbeRecord {
        ProbeRecord {
            message: Some(line.into()),
            refusal: KnownRefusal::recognise(line),
            bytes: line.len() + 2,
            ..rec(Outcome::ServerRefusal)
        }
    }

    fn exp(kind: ExperimentKind, held: u32, probes: Vec<ProbeRecord>) -> Experiment {
        Experiment { kind, held, held_from_probing_source: false, probes, hold_refused: 0 }
    }

    /// Banners and `Exceeded MaxStartups` mixed, at concurrency 1 with nothing held.
    fn random_refusals() -> Vec<Experiment> {
        let (ok, refused) = (|| banner("OpenSSH_9.2p1"), || refusal("Exceeded MaxStartups"));
        vec![
            exp(ExperimentKind::Baseline, 0, vec![ok(), refused(), ok()]),
            exp(ExperimentKind::Determinism, 0, vec![refused(), ok()]),
        ]
    }

    fn facts(experiments: Vec<Experiment>) -> Facts {
        Facts { experiments, second_source: true, budget_exhausted: false }
    }

    #[test]
    fn not_allowed_with_no_second_address_is_a_likely_penalty_with_both_remedies() {
        let na = "Not allowed at this time";
        let f = decide(&Facts {
            experiments: vec![exp(ExperimentKind::Baseline, 0, vec![refusal(na); 3])],
            second_source: false,
            budget_exhausted: false,
        });
        assert_eq!((f.verdict, f.confidence), (Verdict::Penalized, Confidence::Low));
        assert!(f.remedy.iter().any(|r| r.contains("PerSourcePenaltyExemptList")), "{:?}", f.remedy);
        assert!(f.remedy.iter().any(|r| r.contains("MaxStartups")), "{:?}", f.remedy);
        assert!(f.notes.iter().any(|n| n.contains("--source")), "{:?}", f.notes);
    }

    #[test]
    fn a_penalty_that_begins_during_the_baseline_is_penalized_not_random_drops() {
        let na = "Not allowed at this time";
        let f = decide(&facts(vec![
            exp(ExperimentKind::Baseline, 0, vec![banner("OpenSSH_10.0p2"), refusal(na), refusal(na)]),
            exp(ExperimentKind::Determinism, 0, vec![refusal(na); 4]),
            exp(ExperimentKind::Source, 0, vec![banner("OpenSSH_10.0p2"); 2]),
        ]));
        assert_eq!((f.verdict, f.confidence), (Verdict::Penalized, Confidence::Medium));
        assert!(f.notes.iter().any(|n| n.contains("our own probes")), "{:?}", f.notes);
        // Refusals at random (not banners then refusals) on one address only: a per-source limit.
        let mut experiments = random_refusals();
        experiments.push(exp(ExperimentKind::Source, 0, vec![banner("OpenSSH_9.2p1"); 2]));
        let f = decide(&facts(experiments));
        assert_eq!(f.verdict, Verdict::PerSourceLimit);
    }

    #[test]
    fn refusals_at_load_count_wherever_they_were_seen() {
        let ok = || banner("OpenSSH_9.2p1");
        let line = "Exceeded MaxStartups";
        let base = || exp(ExperimentKind::Baseline, 0, vec![ok(), ok(), ok()]);
        // Our probes at 8 were lucky; the fresh address at the same load was refused.
        let f = decide(&facts(vec![
            base(),
            exp(ExperimentKind::Load, 3, vec![ok(), ok()]),
            exp(ExperimentKind::Load, 8, vec![ok(), ok()]),
            exp(ExperimentKind::Source, 8, vec![ok(), refusal(line)]),
            exp(ExperimentKind::Persistence, 0, vec![ok(), ok()]),
        ]));
        assert_eq!(f.verdict, Verdict::Maxstartups, "{:?}", f.evidence);
        // Our attempts to hold more were refused on the way to 8.
        let mut load = exp(ExperimentKind::Load, 8, vec![ok(), ok()]);
        load.hold_refused = 3;
        let f = decide(&facts(vec![base(), load, exp(ExperimentKind::Persistence, 0, vec![ok(), ok()])]));
        assert_eq!(f.verdict, Verdict::Maxstartups, "{:?}", f.evidence);
        assert!(f.evidence.iter().any(|e| e.contains("3 of our attempts to hold")), "{:?}", f.evidence);
    }

    #[test]
    fn connect_failures() {
        let f = decide(&facts(vec![exp(ExperimentKind::Baseline, 0, vec![rec(Outcome::Refused); 3])]));
        assert_eq!((f.verdict, f.confidence), (Verdict::NotListening, Confidence::High));
        let f = decide(&facts(vec![exp(ExperimentKind::Baseline, 0, vec![rec(Outcome::ConnectTimeout); 3])]));
        assert_eq!(f.verdict, Verdict::Filtered);
        let f = decide(&facts(vec![exp(ExperimentKind::Baseline, 0, vec![rec(Outcome::Unreachable); 3])]));
        assert_eq!(f.verdict, Verdict::Unreachable);
        let f = decide(&facts(vec![exp(ExperimentKind::Baseline, 0, vec![rec(Outcome::NotSsh); 3])]));
        assert_eq!(f.verdict, Verdict::NotSsh);
    }

    #[test]
    fn wrappers_denial_is_access_denied() {
        let base = vec![closed_after(5_010_000), rec(Outcome::ResetBeforeBanner), closed_after(5_020_000)];
        let mut base = base;
        base[1].closed_us = Some(5_012_000);
        let f = decide(&facts(vec![
            exp(ExperimentKind::Baseline, 0, base),
            exp(ExperimentKind::Source, 0, vec![closed_after(5_000_000); 2]),
        ]));
        assert_eq!((f.verdict, f.confidence), (Verdict::AccessDenied, Confidence::High));
        assert!(f.remedy[0].contains("hosts.allow"), "{:?}", f.remedy);
        assert!(f.remedy[0].contains("sshd: 127.0.0.1"), "{:?}", f.remedy);
    }

    #[test]
    fn maxstartups_full_from_others_hits_every_address() {
        let line = "Exceeded MaxStartups";
        let f = decide(&facts(vec![
            exp(ExperimentKind::Baseline, 0, vec![refusal(line); 3]),
            exp(ExperimentKind::Source, 0, vec![refusal(line); 2]),
        ]));
        assert_eq!((f.verdict, f.confidence), (Verdict::Maxstartups, Confidence::High));
        assert!(f.remedy[0].contains("MaxStartups"));
    }

    #[test]
    fn per_source_limits_spare_other_addresses() {
        let f = decide(&facts(vec![
            exp(ExperimentKind::Baseline, 0, vec![refusal("Exceeded MaxStartups"); 3]),
            exp(ExperimentKind::Source, 0, vec![banner("OpenSSH_9.2p1"); 2]),
        ]));
        assert_eq!((f.verdict, f.confidence), (Verdict::PerSourceLimit, Confidence::High));
        assert!(f.remedy[0].contains("PerSourceMaxStartups"));

        let mut quick = vec![closed_after(300); 3];
        quick[1].outcome = Outcome::ResetBeforeBanner;
        let f = decide(&facts(vec![
            exp(ExperimentKind::Baseline, 0, quick),
            exp(ExperimentKind::Source, 0, vec![banner("dropbear_2022.83"); 2]),
        ]));
        assert_eq!(f.verdict, Verdict::PerSourceLimit);
        assert!(f.remedy[0].contains("MAX_UNAUTH_PER_IP"));
    }

    #[test]
    fn penalties_on_9_8_plus() {
        let f = decide(&facts(vec![
            exp(ExperimentKind::Baseline, 0, vec![refusal("Not allowed at this time"); 3]),
            exp(ExperimentKind::Source, 0, vec![banner("OpenSSH_10.0p2"); 2]),
        ]));
        assert_eq!(f.verdict, Verdict::Penalized);
        assert!(f.remedy[0].contains("PerSourcePenaltyExemptList"));
    }

    #[test]
    fn random_refusals_with_nothing_held_are_maxstartups() {
        let f = decide(&facts(random_refusals()));
        assert_eq!(f.verdict, Verdict::Maxstartups);
    }

    #[test]
    fn healthy_under_load_is_ok() {
        let f = decide(&facts(vec![
            exp(ExperimentKind::Baseline, 0, vec![banner("OpenSSH_9.2p1"); 3]),
            exp(ExperimentKind::Load, 8, vec![banner("OpenSSH_9.2p1"); 3]),
            exp(ExperimentKind::Load, 8, vec![banner("OpenSSH_9.2p1"); 3]),
        ]));
        assert_eq!((f.verdict, f.confidence), (Verdict::Ok, Confidence::High));
    }

    #[test]
    fn a_limit_under_load_that_clears_is_maxstartups() {
        let line = "Exceeded MaxStartups";
        let f = decide(&facts(vec![
            exp(ExperimentKind::Baseline, 0, vec![banner("OpenSSH_9.2p1"); 3]),
            exp(ExperimentKind::Load, 4, vec![refusal(line), banner("OpenSSH_9.2p1"), refusal(line)]),
            exp(ExperimentKind::Source, 4, vec![refusal(line); 2]),
            exp(ExperimentKind::Persistence, 0, vec![banner("OpenSSH_9.2p1"); 2]),
        ]));
        assert_eq!((f.verdict, f.confidence), (Verdict::Maxstartups, Confidence::High));
    }

    #[test]
    fn own_penalty_is_reported_as_such() {
        let line = "Not allowed at this time";
        let f = decide(&facts(vec![
            exp(ExperimentKind::Baseline, 0, vec![banner("OpenSSH_10.0p2"); 3]),
            exp(ExperimentKind::Load, 8, vec![refusal(line); 3]),
            exp(ExperimentKind::Source, 8, vec![banner("OpenSSH_10.0p2"); 2]),
            exp(ExperimentKind::Persistence, 0, vec![refusal(line); 2]),
        ]));
        assert_eq!(f.verdict, Verdict::Penalized);
        assert!(f.notes.iter().any(|n| n.contains("our own probes")), "{:?}", f.notes);
    }
}
