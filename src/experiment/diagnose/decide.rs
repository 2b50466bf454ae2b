//! The verdict: [`decide`] reads the gathered [`Facts`] and writes a [`Finding`]. Pure, so every rule
//! is unit-tested on synthetic facts; no English (the report writes [`Evidence`] for people).
//!
//! First what stands in front of sshd (`super::front`: signals and one `match`), then sshd's own
//! rules, in the same shape: `Signals::of` computes each signal once (what the probes with nothing
//! held got, taken together; what another address got and what the per-source test of
//! `super::persource` read of the two; what this host holds; what the load experiment showed), then
//! one exhaustive `match` over them gives the verdict, one commented arm per rule, so a new verdict
//! is a new arm. Every rule that reads a per-source limit (or a penalty, or an access rule for this
//! address) against a global one reads it by that test at its stated error rate; when the test is
//! untold, the evidence names both causes and the confidence is low.

use super::evidence::{DelayClass, Evidence, Note};
use super::facts::{Experiment, ExperimentKind, ExperimentProbe, Facts, NotTestedReason, Tally};
use super::persource::{self, Count, Split};
use super::remedy::{remedies, Remedy};
use crate::experiment::sources::Source;
use crate::experiment::stats::percentile;
use crate::outcome::{KnownRefusal, Outcome};
use crate::server::Software;
use serde::Serialize;
use std::fmt;

/// What diagnose concludes. Its name ([`Verdict::name`], the JSON) comes from strum's `snake_case` rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, strum::IntoStaticStr, strum::VariantArray)]
#[serde(into = "&'static str")]
#[strum(serialize_all = "snake_case")]
pub enum Verdict {
    /// The identification exchange works: the problem is past it.
    Ok,
    /// Nothing listens: RST to SYN.
    NotListening,
    /// SYNs get no answer: a firewall drops them, or the host is down.
    Filtered,
    /// ICMP errors answer the SYN.
    Unreachable,
    /// TCP wrappers or an ACL: a deterministic refusal after accept, with evidence of an access rule
    /// (Debian's 5-s zero-byte close, a message, a close for this address only).
    AccessDenied,
    /// The server accepts, but its session process dies before the banner (host keys, a broken
    /// install or configuration).
    ServerError,
    /// Zero bytes, closed at the listener, from every address, and nothing on this host explains it:
    /// a full connection table on a server that sends no message, or a forwarder with no backend.
    ListenerDrop,
    /// The server's global MaxStartups limit.
    Maxstartups,
    /// A per-source-address limit (PerSourceMaxStartups, dropbear's MAX_UNAUTH_PER_IP).
    PerSourceLimit,
    /// OpenSSH 9.8+ PerSourcePenalties has blocked this address.
    Penalized,
    /// A firewall refuses or drops this address's SYNs while another address is served: a static
    /// rule, or a ban (fail2ban, sshguard, `recent`), perhaps tripped by diagnose's own probes.
    SourceBlocked,
    /// A firewall refuses or drops an address's SYNs only while it holds N connections (connlimit,
    /// nft `ct count`) or opens more than R per interval (`limit rate`, `recent`, hashlimit).
    FirewallLimit,
    /// Accepted but no banner, or banners slowing and timing out under load.
    Overloaded,
    /// Not an SSH server.
    NotSsh,
    /// Failures without a pattern.
    Intermittent,
    /// No probe could be made (the time limit ended while waiting for the probe budget).
    NotTested,
    /// The exchange works, but the server's KEXINIT offers nothing a current OpenSSH client accepts
    /// by default for some kind (key exchange, host key, cipher, MAC): `Unable to negotiate`.
    LegacyAlgorithms,
}

impl Verdict {
    /// The stable snake_case name.
    pub fn name(self) -> &'static str {
        self.into()
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How sure the verdict is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, strum::IntoStaticStr)]
#[serde(into = "&'static str")]
#[strum(serialize_all = "snake_case")]
pub enum Confidence {
    /// Other explanations remain likely.
    Low,
    /// The evidence points one way, with a plausible alternative.
    Medium,
    /// The evidence has this verdict's signature.
    High,
}

/// The conclusion: a verdict, how sure, why, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The verdict.
    pub verdict: Verdict,
    /// How sure.
    pub confidence: Confidence,
    /// Why: the facts it rests on, with their numbers.
    pub evidence: Vec<Evidence>,
    /// What to change, naming the setting.
    pub remedy: Vec<Remedy>,
    /// Caveats: what limited the experiments.
    pub notes: Vec<Note>,
}

impl Finding {
    fn new(verdict: Verdict, confidence: Confidence) -> Finding {
        Finding { verdict, confidence, evidence: Vec::new(), remedy: Vec::new(), notes: Vec::new() }
    }

    pub(super) fn conclude(&mut self, verdict: Verdict, confidence: Confidence) {
        self.verdict = verdict;
        self.confidence = confidence;
    }
}

/// Held connections that, refused-free, make `ok` a confident verdict.
pub(super) const CONFIDENT_LOAD: u32 = 8;

/// Decides the verdict from the facts, and the remedies for it. Pure.
pub fn decide(facts: &Facts) -> Finding {
    let mut f = Finding::new(Verdict::Intermittent, Confidence::Low);
    if facts.budget_exhausted {
        f.notes.push(Note::BudgetExhausted);
    }
    if facts.capped {
        f.notes.push(Note::CapKeptExperimentFromRunning);
    }
    let unloaded = facts.unloaded();
    let software = facts.software();
    if unloaded.is_empty() {
        f.conclude(Verdict::NotTested, Confidence::High);
        f.evidence.push(Evidence::NoProbes { reason: facts.not_tested.unwrap_or(NotTestedReason::Budget) });
    } else if let Some(front) = super::front::rule(&super::front::Signals::of(facts)) {
        f.conclude(front.verdict, front.confidence);
        f.evidence.extend(front.evidence);
        f.notes.extend(front.notes);
    } else {
        decide_sshd(facts, &mut f, software);
    }
    super::logged::refine(facts, &mut f);
    // Our address as the server saw it, for an access rule to name.
    let client =
        unloaded.iter().filter(|p| p.refused()).find_map(|p| p.local()).map(|a| a.ip()).or_else(|| {
            facts.probing_timeline().iter().find_map(|p| p.source.ip().or(p.local().map(|a| a.ip())))
        });
    f.remedy = remedies(f.verdict, software, &f.evidence, client);
    f
}

/// The probing address's probes with nothing held against another address's: how many of each did
/// not get a banner. Every per-source rule with nothing held is tested on these counts.
pub(super) fn unloaded_counts(facts: &Facts) -> (Count, Count) {
    let here = facts.unloaded();
    let elsewhere: Vec<&ExperimentProbe> =
        facts.of(ExperimentKind::Source).filter(|e| e.held == 0).flat_map(|e| &e.probes).collect();
    (count_failed(&here), count_failed(&elsewhere))
}

/// The counts an unloaded per-source rule would be tested on, when more probes could change the
/// verdict: a rule that reads per-source by the test applies (a limit's refusals, not a 5-s wrappers
/// close: those are certain, and each costs 5 s), and the test is untold.
pub(super) fn unloaded_counts_to_test(facts: &Facts) -> Option<(Count, Count)> {
    let s = Signals::of(facts, facts.software());
    (s.tested_shape() && matches!(s.elsewhere, Elsewhere::Served(Split::Untold { .. }))).then_some(s.counts)
}

/// The probing address's probes at `held` connections held from it, against a fresh address's at
/// the same load: how many of each did not get a banner.
pub(super) fn loaded_counts(facts: &Facts, held: u32) -> (Count, Count) {
    let at = |kind: ExperimentKind| -> Vec<&ExperimentProbe> {
        facts.of(kind).filter(|e| e.held == held).flat_map(|e| &e.probes).collect()
    };
    (count_failed(&at(ExperimentKind::Load)), count_failed(&at(ExperimentKind::Source)))
}

/// How many of `probes` did not get a banner.
fn count_failed(probes: &[&ExperimentProbe]) -> Count {
    Count::new(probes.iter().filter(|p| !p.served()).count() as u32, probes.len() as u32)
}

/// Evidence that the test read per-source.
fn shown(here: Count, elsewhere: Count, p: f64) -> Evidence {
    Evidence::PerSourceShown {
        here,
        elsewhere,
        p_per_mille: persource::per_mille(p),
        error_rate_per_mille: persource::error_rate_per_mille(),
    }
}

/// Evidence that the test could not tell per-source from global.
fn untold(here: Count, elsewhere: Count, p: f64) -> Evidence {
    Evidence::PerSourceUntold {
        here,
        elsewhere,
        p_per_mille: persource::per_mille(p),
        error_rate_per_mille: persource::error_rate_per_mille(),
    }
}

/// Cites the connections this host holds to the server, when it holds any.
fn cite_holders(facts: &Facts, f: &mut Finding) {
    let total: u32 = facts.host_connections.iter().map(|h| h.count).sum();
    if total > 0 {
        f.evidence.push(Evidence::HostHoldsConnections {
            holders: facts.host_connections.clone(),
            total,
            from_probing_address: 0,
        });
    }
}

/// What the probes with nothing held got, taken together: the first of sshd's signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unloaded {
    /// Every one got a banner: the load experiment decides.
    Served,
    /// Every connect failed, the same way (`refused`, `connect_timeout`, `unreachable`).
    ConnectFailed(Outcome),
    /// Every one met something that is not an SSH-2 server.
    NotSsh,
    /// Every one was refused after accept, in this way.
    Refused(Refusal),
    /// Never a banner, never a refusal: some SYNs unanswered, the rest accepted without a banner.
    Hung {
        /// Probes whose SYN got no answer.
        syn_unanswered: usize,
        /// Probes accepted without a banner.
        accepted_silent: usize,
    },
    /// Every one accepted, and no banner came.
    Silent,
    /// Banners and a limit's refusals (a line that names one, or a zero-byte close at the listener).
    Drops {
        /// Banners first, then nothing but refusals: a block that began during this diagnosis.
        began_mid_run: bool,
    },
    /// Failures that fit none of these.
    NoPattern,
}

/// How every probe with nothing held was refused after accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// With a line that names a limit.
    Message(KnownRefusal),
    /// Without a byte, the server's own delay placing the close.
    ZeroByte(DelayClass),
    /// With text no sshd limit sends (a wrappers `twist`, an ACL's message).
    Text,
}

/// What another address got with nothing held.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Elsewhere {
    /// No other address was asked.
    NotAsked,
    /// A banner every time; the per-source test's reading of the two addresses' counts.
    Served(Split),
    /// Refused after accept every time.
    Refused,
    /// Its SYNs unanswered every time.
    Unanswered,
    /// Anything else.
    Mixed,
}

/// What the load experiment showed, when every probe with nothing held got a banner.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Load {
    /// Nothing failed under load (`timeouts` banners never came).
    Clean {
        /// Banner timeouts under load.
        timeouts: usize,
    },
    /// Something failed at some load.
    Refused {
        /// The probing address stayed refused after the release while a fresh address was served,
        /// on a server with penalties.
        penalty_outlived: bool,
        /// Held from the probing address, a fresh address served at the same load, and cleared on
        /// release: the per-source test's reading.
        holder_split: Option<Split>,
        /// Every probe after the release got a banner.
        cleared: bool,
        /// A connect failed at that load (not sshd's doing).
        connect_failed: bool,
    },
}

/// The signals sshd's own rules rest on, each computed here and nowhere else.
struct Signals<'a> {
    /// The probing address's probes with nothing held.
    unloaded: Vec<&'a ExperimentProbe>,
    /// Another address's probes with nothing held.
    second: Vec<&'a ExperimentProbe>,
    /// What the probes with nothing held got.
    shape: Unloaded,
    /// What another address got with nothing held.
    elsewhere: Elsewhere,
    /// The counts the per-source test read, when another address was asked.
    counts: (Count, Count),
    /// The server may penalise: OpenSSH 9.8+, or its one line for three limits was seen.
    penalties_possible: bool,
    /// Connections this host holds to the server: in all, and from the probing address.
    host_held: (u32, u32),
    /// The load experiment, when it ran.
    load: Option<Load>,
}

impl<'a> Signals<'a> {
    /// Whether the verdict reads per-source or global by the per-source test: every probe refused
    /// by a limit's line or at the listener or a session process, or a limit's drops among banners.
    fn tested_shape(&self) -> bool {
        matches!(
            self.shape,
            Unloaded::Refused(
                Refusal::Message(_) | Refusal::ZeroByte(DelayClass::Listener | DelayClass::SessionProcess)
            ) | Unloaded::Drops { .. }
        )
    }

    fn of(facts: &'a Facts, software: Option<Software>) -> Signals<'a> {
        let unloaded = facts.unloaded();
        let second: Vec<&ExperimentProbe> =
            facts.of(ExperimentKind::Source).filter(|e| e.held == 0).flat_map(|e| &e.probes).collect();
        let n = unloaded.len();
        let count = |o: Outcome| unloaded.iter().filter(|p| p.outcome() == o).count();
        let refusals: Vec<&ExperimentProbe> = unloaded.iter().copied().filter(|p| p.refused()).collect();
        let known = refusals.iter().find_map(|p| p.refusal());
        let shape = if unloaded.iter().all(|p| p.served()) {
            Unloaded::Served
        } else if let Some(o) = [Outcome::Refused, Outcome::ConnectTimeout, Outcome::Unreachable]
            .into_iter()
            .find(|&o| count(o) == n)
        {
            Unloaded::ConnectFailed(o)
        } else if unloaded.iter().all(|p| matches!(p.outcome(), Outcome::NotSsh | Outcome::ProtocolMismatch))
        {
            Unloaded::NotSsh
        } else if refusals.len() == n {
            Unloaded::Refused(match known {
                Some(r) => Refusal::Message(r),
                None if refusals.iter().all(|p| p.zero_byte_refusal()) => {
                    Refusal::ZeroByte(DelayClass::of_fastest(&refusals))
                }
                None => Refusal::Text,
            })
        } else if count(Outcome::Banner) == 0
            && count(Outcome::ConnectTimeout) > 0
            && count(Outcome::ConnectTimeout) + count(Outcome::BannerTimeout) == n
        {
            Unloaded::Hung {
                syn_unanswered: count(Outcome::ConnectTimeout),
                accepted_silent: count(Outcome::BannerTimeout),
            }
        } else if count(Outcome::BannerTimeout) == n {
            Unloaded::Silent
        } else if !refusals.is_empty()
            && count(Outcome::Banner) > 0
            && (known.is_some()
                || (refusals.iter().all(|p| p.zero_byte_refusal())
                    && DelayClass::of_fastest(&refusals) == DelayClass::Listener))
        {
            let first_refused = unloaded.iter().position(|p| p.refused()).unwrap_or(n);
            Unloaded::Drops {
                began_mid_run: unloaded[..first_refused].iter().all(|p| p.served())
                    && unloaded[first_refused..].iter().all(|p| p.refused()),
            }
        } else {
            Unloaded::NoPattern
        };
        let counts = unloaded_counts(facts);
        let elsewhere = if second.is_empty() {
            Elsewhere::NotAsked
        } else if second.iter().all(|p| p.served()) {
            Elsewhere::Served(persource::split(counts.0, counts.1))
        } else if second.iter().all(|p| p.refused()) {
            Elsewhere::Refused
        } else if second.iter().all(|p| p.outcome() == Outcome::ConnectTimeout) {
            Elsewhere::Unanswered
        } else {
            Elsewhere::Mixed
        };
        let probing = unloaded.iter().find_map(|p| p.local()).map(|a| a.ip());
        let host = &facts.host_connections;
        let host_held = (
            host.iter().map(|h| h.count).sum(),
            host.iter().filter(|h| Some(h.local) == probing).map(|h| h.count).sum(),
        );
        let penalties_possible = software.is_some_and(Software::has_penalties)
            || facts
                .experiments
                .iter()
                .flat_map(|e| &e.probes)
                .any(|p| p.refusal() == Some(KnownRefusal::NotAllowedAtThisTime));
        let load = (shape == Unloaded::Served).then(|| Load::of(facts, penalties_possible));
        Signals { unloaded, second, shape, elsewhere, counts, penalties_possible, host_held, load }
    }
}

impl Load {
    /// What the load experiment showed. Every probe counts: a connect refused or unanswered under
    /// load is a failure like a refusal after accept.
    fn of(facts: &Facts, penalties_possible: bool) -> Load {
        let Some(level) = refused_level(facts) else {
            let timeouts =
                facts.probes(ExperimentKind::Load).filter(|p| p.outcome() == Outcome::BannerTimeout).count();
            return Load::Clean { timeouts };
        };
        let fresh: Vec<&ExperimentProbe> =
            facts.of(ExperimentKind::Source).filter(|e| e.held > 0).flat_map(|e| &e.probes).collect();
        let fresh_banner = !fresh.is_empty() && fresh.iter().all(|p| p.served());
        let after: Vec<&ExperimentProbe> = facts.probes(ExperimentKind::Persistence).collect();
        let cleared = !after.is_empty() && after.iter().all(|p| p.served());
        let holder_split = (level.held_from_probing_source && fresh_banner && cleared).then(|| {
            let (here, elsewhere) = loaded_counts(facts, level.held);
            persource::split(here, elsewhere)
        });
        Load::Refused {
            penalty_outlived: penalties_possible && fresh_banner && !after.is_empty() && !cleared,
            holder_split,
            cleared,
            connect_failed: level.probes.iter().any(|p| p.connect_failed()),
        }
    }
}

/// The first load at which anything failed: our probes, our attempts to hold more, or the fresh
/// address probing at the same load (one more sample of the same server count).
fn refused_level(facts: &Facts) -> Option<&Experiment> {
    let failed = |p: &ExperimentProbe| p.refused() || p.connect_failed();
    facts
        .experiments
        .iter()
        .filter(|e| e.kind == ExperimentKind::Load || (e.kind == ExperimentKind::Source && e.held > 0))
        .find(|e| e.hold_refused > 0 || e.probes.iter().any(failed))
}

/// The server's own delay to the close (median, and range) over `refusals`.
fn server_delay(refusals: &[&ExperimentProbe]) -> (u64, Option<(u64, u64)>) {
    let mut delays: Vec<u64> = refusals.iter().filter_map(|p| p.server_delay_us()).collect();
    delays.sort_unstable();
    let closes: Vec<u64> = refusals.iter().filter_map(|p| p.closed_us()).collect();
    let median = percentile(&delays, 0.5).or_else(|| percentile(&closes, 0.5)).unwrap_or(0);
    (median, delays.first().copied().zip(delays.last().copied()))
}

/// What one of sshd's rules concludes.
struct Conclusion {
    verdict: Verdict,
    confidence: Confidence,
    evidence: Vec<Evidence>,
    notes: Vec<Note>,
    /// Cite the connections this host holds (after the evidence).
    cite_holders: bool,
}

fn conclude(verdict: Verdict, confidence: Confidence, evidence: Vec<Evidence>) -> Conclusion {
    Conclusion { verdict, confidence, evidence, notes: Vec::new(), cite_holders: false }
}

impl Conclusion {
    fn citing_holders(mut self) -> Conclusion {
        self.cite_holders = true;
        self
    }

    fn noting(mut self, note: Note) -> Conclusion {
        self.notes.push(note);
        self
    }
}

/// sshd's own rules, when no front-end rule applied: the evidence every verdict of a shape shares,
/// then one `match` over the signals, one arm per rule.
fn decide_sshd(facts: &Facts, f: &mut Finding, software: Option<Software>) {
    use Elsewhere as E;
    use Unloaded as U;
    let s = Signals::of(facts, software);
    let n = s.unloaded.len();
    let refusals: Vec<&ExperimentProbe> = s.unloaded.iter().copied().filter(|p| p.refused()).collect();
    let (held_anywhere, held_here) = (s.host_held.0 > 0, s.host_held.1 > 0);
    // What the per-source test read, for the rules that read per-source: shown, or untold (the
    // global reading is then the verdict, and the evidence names both).
    let (here, there) = s.counts;
    let (per_source, untold_read) = match s.elsewhere {
        E::Served(Split::PerSource { p }) => (Some(shown(here, there, p)), None),
        E::Served(Split::Untold { p }) => (None, Some(untold(here, there, p))),
        _ => (None, None),
    };
    let refused_everywhere = s.elsewhere == E::Refused;

    // The evidence a shape's rules share, in the order reports have always had it.
    match s.shape {
        U::Served => {
            f.evidence.push(Evidence::UnloadedBanners { probes: n, software });
            f.evidence.extend(multiplexer(facts));
        }
        U::ConnectFailed(_) | U::NotSsh => {}
        U::Refused(_) | U::Hung { .. } | U::Silent | U::Drops { .. } | U::NoPattern => {
            f.evidence.push(Evidence::Unloaded { tally: Tally::of(s.unloaded.iter().copied()) });
            if let Some(first) = s.second.first() {
                f.evidence.push(Evidence::SecondSource {
                    source: first.source,
                    tally: Tally::of(s.second.iter().copied()),
                });
            } else if !facts.second_source {
                f.notes.push(Note::NoSecondSource);
            }
        }
    }
    let closes: Vec<u64> = refusals.iter().filter_map(|p| p.closed_us()).collect();
    let median_us = percentile(&closes, 0.5).unwrap_or(0);
    let (server_delay_us, server_delay_range_us) = server_delay(&refusals);
    let cite_host = |f: &mut Finding| {
        if held_anywhere {
            f.evidence.push(Evidence::HostHoldsConnections {
                holders: facts.host_connections.clone(),
                total: s.host_held.0,
                from_probing_address: s.host_held.1,
            });
        }
    };
    match s.shape {
        U::Refused(Refusal::Message(refusal)) => {
            let message = refusals.iter().find_map(|p| p.message()).unwrap_or_default().to_string();
            f.evidence.push(Evidence::RefusalMessage { message, refusal, median_us, probes: n });
            cite_host(f);
        }
        U::Refused(Refusal::ZeroByte(class)) => {
            f.evidence.push(Evidence::ZeroByteClose {
                median_us,
                probes: closes.len(),
                source: refusals.first().map_or(Source::KernelChoice, |p| p.source),
                server_delay_us,
                server_delay_range_us,
                fastest_delay_us: super::evidence::fastest_delay_us(&refusals),
                class,
            });
            if class == DelayClass::Listener {
                cite_host(f);
            }
        }
        U::Served => {
            if let Some(Load::Refused { .. }) = s.load {
                cite_load(facts, f);
            }
        }
        _ => {}
    }
    // The per-source test's reading, for the rules of a refusal on every probe that read per-source
    // or global by it (the Drops rules cite it with their own evidence).
    let refused_tested = s.tested_shape() && !matches!(s.shape, U::Drops { .. });
    if refused_tested {
        f.evidence.extend(per_source.clone().or_else(|| untold_read.clone()));
    }
    let load_untold = match s.load {
        Some(Load::Refused { holder_split: Some(Split::Untold { p }), .. }) => {
            let level = refused_level(facts).map_or(0, |l| l.held);
            let (here, elsewhere) = loaded_counts(facts, level);
            Some(untold(here, elsewhere, p))
        }
        _ => None,
    };
    f.evidence.extend(load_untold);

    let held_level = refused_level(facts).map_or(0, |l| l.held);
    let c = match (s.shape, s.elsewhere, s.load) {
        // The connect itself fails. Every address's SYNs unanswered while this host holds
        // connections to the server: a front-end (or sshd) whose accept queue is full of them.
        (U::ConnectFailed(Outcome::ConnectTimeout), E::Unanswered, _) if held_anywhere => conclude(
            Verdict::Overloaded,
            Confidence::Medium,
            vec![Evidence::HungServer { syn_unanswered: n, accepted_silent: 0 }],
        )
        .citing_holders(),
        (U::ConnectFailed(outcome), ..) => conclude(
            match outcome {
                Outcome::Refused => Verdict::NotListening,
                Outcome::ConnectTimeout => Verdict::Filtered,
                _ => Verdict::Unreachable,
            },
            if n >= 2 { Confidence::High } else { Confidence::Medium },
            vec![Evidence::ConnectFailed { outcome, probes: n }],
        ),
        (U::NotSsh, ..) => {
            let said = s
                .unloaded
                .iter()
                .find_map(|p| p.message().or(p.software_version()))
                .unwrap_or_default()
                .to_string();
            conclude(
                Verdict::NotSsh,
                Confidence::High,
                vec![Evidence::NotSsh { tally: Tally::of(s.unloaded.iter().copied()), said }],
            )
        }

        // Every probe refused with a line that names a limit, another address served (and the
        // per-source test says so). This host fills the probing address's share: a per-source
        // limit, whatever the line.
        (U::Refused(Refusal::Message(_)), E::Served(Split::PerSource { .. }), _) if held_here => {
            conclude(Verdict::PerSourceLimit, Confidence::High, vec![])
        }
        (U::Refused(Refusal::Message(r)), E::Served(Split::PerSource { .. }), _)
            if r == KnownRefusal::NotAllowedAtThisTime || software.is_some_and(Software::has_penalties) =>
        {
            conclude(
                Verdict::Penalized,
                Confidence::Medium,
                vec![Evidence::ServedElsewhereWithPenalties { software }],
            )
        }
        (U::Refused(Refusal::Message(_)), E::Served(Split::PerSource { .. }), _) => conclude(
            Verdict::PerSourceLimit,
            Confidence::High,
            vec![Evidence::ServedElsewhereWithoutPenalties { software }],
        ),
        // Every address refused while this host holds connections to the server: its table is full.
        (U::Refused(Refusal::Message(_)), ..) if held_anywhere => conclude(
            Verdict::Maxstartups,
            Confidence::High,
            if refused_everywhere { vec![Evidence::RefusedEverywhere] } else { vec![] },
        ),
        // OpenSSH 9.8+ sends one line for all three limits, and no second address tells them apart.
        (U::Refused(Refusal::Message(KnownRefusal::NotAllowedAtThisTime)), E::NotAsked, _) => {
            conclude(Verdict::Penalized, Confidence::Low, vec![Evidence::AmbiguousRefusalLine])
                .noting(Note::SecondSourceWouldTell)
        }
        (U::Refused(Refusal::Message(_)), ..) => conclude(
            Verdict::Maxstartups,
            if refused_everywhere { Confidence::High } else { Confidence::Medium },
            if refused_everywhere { vec![Evidence::RefusedEverywhere] } else { vec![] },
        ),

        // Every probe refused without a byte, placed by the server's own delay. About 5 s: Debian's
        // wrappers child (certain, so no test).
        (U::Refused(Refusal::ZeroByte(DelayClass::WrappersDelay)), elsewhere, _) => {
            let mut e = vec![Evidence::WrappersDelay { median_us }];
            if matches!(elsewhere, E::Served(_)) {
                e.push(Evidence::RuleMatchesThisAddressOnly);
            }
            conclude(Verdict::AccessDenied, Confidence::High, e)
        }
        // At the listener, this address only.
        (U::Refused(Refusal::ZeroByte(DelayClass::Listener)), E::Served(_), _)
            if software == Some(Software::Dropbear) =>
        {
            conclude(Verdict::PerSourceLimit, Confidence::High, vec![Evidence::DropbearPerSourceClose])
        }
        (U::Refused(Refusal::ZeroByte(DelayClass::Listener)), E::Served(_), _) if held_here => {
            conclude(Verdict::PerSourceLimit, Confidence::High, vec![Evidence::ListenerDropThisAddress])
        }
        // Nothing held from this address here: an access rule at the listener (a proxy's ACL), or a
        // per-address limit held full by others behind the same address.
        (U::Refused(Refusal::ZeroByte(DelayClass::Listener)), E::Served(_), _) => conclude(
            Verdict::AccessDenied,
            Confidence::Medium,
            vec![Evidence::AtTheListener { server_delay_us }],
        ),
        // A server-wide table (MaxStartups, dropbear's MAX_UNAUTH_CLIENTS) filled, at least in part,
        // from this host.
        (U::Refused(Refusal::ZeroByte(DelayClass::Listener)), ..) if held_anywhere => conclude(
            Verdict::Maxstartups,
            Confidence::High,
            if refused_everywhere { vec![Evidence::RefusedEverywhere] } else { vec![] },
        ),
        (U::Refused(Refusal::ZeroByte(DelayClass::Listener)), ..) => conclude(
            Verdict::ListenerDrop,
            if refused_everywhere { Confidence::Medium } else { Confidence::Low },
            vec![Evidence::ListenerDropEverywhere { server_delay_us }],
        ),
        // In a session process: for this address only an access rule, from every address a
        // server that cannot start sessions.
        (U::Refused(Refusal::ZeroByte(DelayClass::SessionProcess)), E::Served(_), _) => conclude(
            Verdict::AccessDenied,
            Confidence::Medium,
            vec![Evidence::SessionProcessRefusesThisAddress { server_delay_us }],
        ),
        (U::Refused(Refusal::ZeroByte(DelayClass::SessionProcess)), ..) => conclude(
            Verdict::ServerError,
            if refused_everywhere { Confidence::Medium } else { Confidence::Low },
            vec![Evidence::SessionProcessDies { server_delay_us }],
        ),
        (U::Refused(Refusal::ZeroByte(DelayClass::Other)), ..) => conclude(
            Verdict::Intermittent,
            Confidence::Low,
            vec![Evidence::UnusualZeroByteClose { median_us }],
        ),
        // Text that is not a recognised refusal: a wrappers `twist`, a custom ACL message.
        (U::Refused(Refusal::Text), ..) => {
            let message = refusals.iter().find_map(|p| p.message()).unwrap_or_default().to_string();
            conclude(Verdict::AccessDenied, Confidence::Medium, vec![Evidence::UnknownRefusal { message }])
        }

        // No banner ever, and no refusal: a hung server whose listen queue is full (the kernel
        // completes handshakes until it overflows), not a firewall.
        (U::Hung { syn_unanswered, accepted_silent }, ..) => conclude(
            Verdict::Overloaded,
            Confidence::Medium,
            vec![Evidence::HungServer { syn_unanswered, accepted_silent }],
        )
        .citing_holders(),
        (U::Silent, ..) => {
            let partial = s.unloaded.iter().find_map(|p| p.message()).map(String::from);
            conclude(Verdict::Overloaded, Confidence::Medium, vec![Evidence::NoBanner { probes: n, partial }])
                .citing_holders()
        }

        // Some banners, some limit refusals, with nothing held by us. Banners then only refusals, on
        // a server that penalises, another address served: a penalty that began during this run.
        (U::Drops { began_mid_run: true }, E::Served(_), _) if s.penalties_possible => {
            let banners = s.unloaded.iter().take_while(|p| p.served()).count();
            conclude(Verdict::Penalized, Confidence::Medium, vec![Evidence::PenaltyBegan { banners }])
                .noting(Note::OwnProbesNearPenaltyThreshold)
        }
        (U::Drops { .. }, E::Served(Split::PerSource { .. }), _) => {
            let mut e = vec![Evidence::RefusedHereServedElsewhere { refused: refusals.len(), probes: n }];
            e.extend(per_source.clone());
            conclude(Verdict::PerSourceLimit, Confidence::Medium, e)
        }
        // Random drops: MaxStartups between `start` and `full` (the test untold, both are named).
        (U::Drops { .. }, ..) => {
            let mut e = vec![Evidence::RandomRefusals { refused: refusals.len(), probes: n }];
            e.extend(untold_read.clone());
            conclude(Verdict::Maxstartups, Confidence::Medium, e).citing_holders()
        }
        (U::NoPattern, ..) => conclude(Verdict::Intermittent, Confidence::Low, vec![Evidence::NoPattern]),

        // Every probe with nothing held got a banner: the load experiment decides.
        (U::Served, _, Some(Load::Clean { timeouts })) if timeouts > 0 => {
            conclude(Verdict::Overloaded, Confidence::Medium, vec![Evidence::LoadTimeouts { timeouts }])
                .citing_holders()
        }
        (U::Served, _, None | Some(Load::Clean { .. })) => ok_served(facts),
        (U::Served, _, Some(Load::Refused { penalty_outlived: true, .. })) => {
            conclude(Verdict::Penalized, Confidence::Medium, vec![Evidence::PenaltyOutlivedLoad])
                .noting(Note::OwnProbesDuringLoad)
        }
        (U::Served, _, Some(Load::Refused { holder_split: Some(Split::PerSource { p }), .. })) => {
            let (here, elsewhere) = loaded_counts(facts, held_level);
            conclude(
                Verdict::PerSourceLimit,
                Confidence::Medium,
                vec![Evidence::PerSourceUnderLoad { held: held_level }, shown(here, elsewhere, p)],
            )
        }
        // Refused only while diagnose itself held connections, served again once it let them go:
        // nothing refuses anyone now; the limit is where it is.
        // How few banners after the release say so is stated: they rule out only high drop rates.
        (U::Served, _, Some(Load::Refused { cleared: true, connect_failed: false, .. }))
            if !held_anywhere =>
        {
            let banners = facts.probes(ExperimentKind::Persistence).count() as u32;
            conclude(
                Verdict::Ok,
                Confidence::High,
                vec![
                    Evidence::RefusalsBeginAt { held: held_level },
                    Evidence::ServedAfterRelease {
                        banners,
                        ruled_out_pct: persource::pct_up(persource::drops_ruled_out(banners)),
                        error_rate_per_mille: persource::error_rate_per_mille(),
                    },
                ],
            )
        }
        (U::Served, _, Some(Load::Refused { cleared, .. })) => {
            let after_release = facts.probes(ExperimentKind::Persistence).next().is_some();
            let c = conclude(
                Verdict::Maxstartups,
                if cleared { Confidence::High } else { Confidence::Medium },
                vec![Evidence::MaxStartupsUnderLoad { held: held_level, cleared }],
            );
            if after_release && !cleared {
                c.noting(Note::RefusalsPersisted)
            } else {
                c
            }
        }
    };
    f.conclude(c.verdict, c.confidence);
    f.evidence.extend(c.evidence);
    f.notes.extend(c.notes);
    if c.cite_holders {
        cite_holders(facts, f);
    }
    // The per-source test untold: both readings are named, at low confidence (random drops beside
    // banners were always a medium reading). With a line that names a limit, the global reading is
    // the verdict; a zero-byte close keeps its per-address reading (its global one would claim
    // every address closed, which the other address's banners contradict).
    if untold_read.is_some() && refused_tested {
        f.confidence = Confidence::Low;
    }
}

/// The evidence of the first load at which something failed, what a fresh address got at the same
/// load, and what the probing address got after the release.
fn cite_load(facts: &Facts, f: &mut Finding) {
    let Some(level) = refused_level(facts) else { return };
    f.evidence.push(Evidence::LoadRefusals {
        held: level.held,
        from_probing_source: level.held_from_probing_source,
        tally: level.tally(),
    });
    if level.hold_refused > 0 {
        f.evidence.push(Evidence::HoldRefused { attempts: level.hold_refused });
    }
    if let Some(message) = level.probes.iter().filter(|p| p.refused()).find_map(|p| p.message()) {
        f.evidence.push(Evidence::RefusalsSaid { message: message.to_string() });
    }
    let fresh: Vec<&ExperimentProbe> =
        facts.of(ExperimentKind::Source).filter(|e| e.held > 0).flat_map(|e| &e.probes).collect();
    if !fresh.is_empty() {
        f.evidence.push(Evidence::FreshAddressUnderLoad { tally: Tally::of(fresh.iter().copied()) });
    }
    if facts.probes(ExperimentKind::Persistence).next().is_some() {
        f.evidence
            .push(Evidence::AfterRelease { tally: Tally::of(facts.probes(ExperimentKind::Persistence)) });
    }
}

/// `ok` after the load experiment refused nothing: how sure, and what the banners rule out.
fn ok_served(facts: &Facts) -> Conclusion {
    let loads: Vec<&ExperimentProbe> = facts.probes(ExperimentKind::Load).collect();
    let max_held = facts.of(ExperimentKind::Load).map(|e| e.held).max().unwrap_or(0);
    let mut c = conclude(
        Verdict::Ok,
        if max_held >= CONFIDENT_LOAD { Confidence::High } else { Confidence::Medium },
        vec![],
    );
    // Said only when every load probe got a banner: nothing failed and nothing timed out here.
    if max_held > 0 && loads.iter().all(|p| p.served()) {
        c.evidence.push(Evidence::ServedUnderLoad { max_held });
    }
    // What so many banners rule out: random drops at some rate or more, not any drop at all.
    let all: Vec<&ExperimentProbe> = facts.experiments.iter().flat_map(|e| &e.probes).collect();
    if all.iter().all(|p| p.served()) {
        let banners = all.len() as u32;
        c.evidence.push(Evidence::NoDropsSeen {
            banners,
            ruled_out_pct: persource::pct_up(persource::drops_ruled_out(banners)),
            error_rate_per_mille: persource::error_rate_per_mille(),
        });
    }
    if max_held < CONFIDENT_LOAD {
        c.notes.push(Note::LoadNotConfident { max_held });
    }
    c
}

/// A banner that waited far longer when we waited than when we spoke first: a protocol
/// multiplexer (sslh waits its timeout for the client's first bytes before it picks a backend).
fn multiplexer(facts: &Facts) -> Option<Evidence> {
    multiplexer_in(facts.unloaded())
}

/// [`multiplexer`] over `probes` with nothing held.
pub(super) fn multiplexer_in<'a>(probes: impl IntoIterator<Item = &'a ExperimentProbe>) -> Option<Evidence> {
    use crate::evidence::ProbeOrder;
    let probes: Vec<&ExperimentProbe> = probes.into_iter().collect();
    let waits = |order: ProbeOrder| {
        let us: Vec<u64> =
            probes.iter().filter(|p| p.order() == order).filter_map(|p| p.ident_us()).collect();
        percentile(&us, 0.5)
    };
    let (waited, spoke_first) = (waits(ProbeOrder::WaitForBanner)?, waits(ProbeOrder::SendFirst)?);
    (waited >= MULTIPLEXER_MIN_WAIT_US && spoke_first.saturating_mul(4) < waited)
        .then_some(Evidence::Multiplexer { waited_ms: waited / 1000, spoke_first_ms: spoke_first / 1000 })
}

/// The shortest wait for a banner read as a multiplexer's timeout (sslh's is whole seconds).
pub(super) const MULTIPLEXER_MIN_WAIT_US: u64 = 900_000;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::diagnose::facts::fixtures::*;
    use crate::experiment::diagnose::facts::HostHolder;

    const EXCEEDED: &str = "Exceeded MaxStartups";
    const NOT_ALLOWED: &str = "Not allowed at this time";
    const OPENSSH_9_2: Option<Software> = Some(Software::Openssh { major: 9, minor: 2 });
    const OPENSSH_10_0: Option<Software> = Some(Software::Openssh { major: 10, minor: 0 });

    /// Banners and `Exceeded MaxStartups` mixed, at concurrency 1 with nothing held.
    fn random_refusals() -> Vec<Experiment> {
        let (ok, refused) = (|| banner("OpenSSH_9.2p1"), || refusal(EXCEEDED));
        vec![
            exp(ExperimentKind::Baseline, 0, vec![ok(), refused(), ok()]),
            exp(ExperimentKind::Determinism, 0, vec![refused(), ok()]),
        ]
    }

    #[test]
    fn verdict_names_are_stable_and_match_serde() {
        use strum::VariantArray;
        // The JSON contract, and the list in `sshprobe diagnose --help`.
        let names: Vec<&str> = Verdict::VARIANTS.iter().map(|v| v.name()).collect();
        assert_eq!(
            names.join(", "),
            "ok, not_listening, filtered, unreachable, access_denied, server_error, listener_drop, maxstartups, \
             per_source_limit, penalized, source_blocked, firewall_limit, overloaded, not_ssh, intermittent, \
             not_tested, legacy_algorithms"
        );
        for v in Verdict::VARIANTS {
            assert_eq!(serde_json::to_value(v).unwrap(), v.name());
        }
        assert_eq!(serde_json::to_value(Confidence::Medium).unwrap(), "medium");
        assert_eq!(serde_json::to_value(ExperimentKind::Persistence).unwrap(), "persistence");
    }

    #[test]
    fn not_allowed_with_no_second_address_is_a_likely_penalty_with_both_remedies() {
        let f = decide(&Facts {
            experiments: vec![exp(ExperimentKind::Baseline, 0, vec![refusal(NOT_ALLOWED); 3])],
            ..Facts::default()
        });
        assert_eq!((f.verdict, f.confidence), (Verdict::Penalized, Confidence::Low));
        assert!(f.evidence.contains(&Evidence::AmbiguousRefusalLine), "{:?}", f.evidence);
        assert_eq!(f.remedy, [Remedy::ExemptFromPenalties, Remedy::RaiseMaxStartupsIfEveryAddressRefused]);
        assert_eq!(f.notes, [Note::NoSecondSource, Note::SecondSourceWouldTell]);
    }

    #[test]
    fn a_penalty_that_begins_during_the_baseline_is_penalized_not_random_drops() {
        let f = decide(&facts(vec![
            exp(
                ExperimentKind::Baseline,
                0,
                vec![banner("OpenSSH_10.0p2"), refusal(NOT_ALLOWED), refusal(NOT_ALLOWED)],
            ),
            exp(ExperimentKind::Determinism, 0, vec![refusal(NOT_ALLOWED); 4]),
            exp(ExperimentKind::Source, 0, vec![banner("OpenSSH_10.0p2"); 2]),
        ]));
        assert_eq!((f.verdict, f.confidence), (Verdict::Penalized, Confidence::Medium));
        assert!(f.evidence.contains(&Evidence::PenaltyBegan { banners: 1 }), "{:?}", f.evidence);
        assert_eq!(f.notes, [Note::OwnProbesNearPenaltyThreshold]);
        // Refusals at random (not banners then refusals) on one address, 2 banners on another: a
        // global limit dropping 40 % serves 2 in a row 36 % of the time, so per-source is not shown.
        let mut experiments = random_refusals();
        experiments.push(exp(ExperimentKind::Source, 0, vec![banner("OpenSSH_9.2p1"); 2]));
        let f = decide(&facts(experiments));
        assert_eq!((f.verdict, f.confidence), (Verdict::Maxstartups, Confidence::Medium));
        // Fisher's exact test: 2 of 5 refused here, 0 of 2 there: p = C(5,2)/C(7,2) = 0.476.
        let untold = |here, elsewhere, p_per_mille| Evidence::PerSourceUntold {
            here,
            elsewhere,
            p_per_mille,
            error_rate_per_mille: 1,
        };
        assert!(f.evidence.contains(&untold(Count::new(2, 5), Count::new(0, 2), 476)), "{:?}", f.evidence);
        // 8 banners on the other address are still too few against random refusals here (p =
        // C(5,2)/C(13,2) = 0.128): a global limit's drops give that one time in eight.
        let mut experiments = random_refusals();
        experiments.push(exp(ExperimentKind::Source, 0, vec![banner("OpenSSH_9.2p1"); 8]));
        let f = decide(&facts(experiments));
        assert_eq!(f.verdict, Verdict::Maxstartups);
        assert!(f.evidence.contains(&untold(Count::new(2, 5), Count::new(0, 8), 128)), "{:?}", f.evidence);
        // A limit on this address refuses it every time: 7 of 7 here, 0 of 8 there: p = 1/C(15,7).
        let refused = || refusal(EXCEEDED);
        let f = decide(&facts(vec![
            exp(ExperimentKind::Baseline, 0, vec![banner("OpenSSH_9.2p1"), refused(), refused()]),
            exp(ExperimentKind::Determinism, 0, vec![refused(); 6]),
            exp(ExperimentKind::Source, 0, vec![banner("OpenSSH_9.2p1"); 8]),
        ]));
        assert_eq!(f.verdict, Verdict::PerSourceLimit, "{:?}", f.evidence);
        assert!(f.evidence.contains(&Evidence::RefusedHereServedElsewhere { refused: 8, probes: 9 }));
        assert!(
            f.evidence.iter().any(|e| matches!(e, Evidence::PerSourceShown { p_per_mille: 0, .. })),
            "{:?}",
            f.evidence
        );
    }

    #[test]
    fn refusals_at_load_count_wherever_they_were_seen() {
        let ok = || banner("OpenSSH_9.2p1");
        let base = || exp(ExperimentKind::Baseline, 0, vec![ok(), ok(), ok()]);
        // Our probes at 8 were lucky; the fresh address at the same load was refused.
        let f = decide(&facts(vec![
            base(),
            exp(ExperimentKind::Load, 3, vec![ok(), ok()]),
            exp(ExperimentKind::Load, 8, vec![ok(), ok()]),
            exp(ExperimentKind::Source, 8, vec![ok(), refusal(EXCEEDED)]),
            exp(ExperimentKind::Persistence, 0, vec![ok(), ok()]),
        ]));
        // Only under our load, and cleared: nothing refuses anyone now.
        assert_eq!(f.verdict, Verdict::Ok, "{:?}", f.evidence);
        assert!(f.evidence.contains(&Evidence::RefusalsBeginAt { held: 8 }), "{:?}", f.evidence);
        // Our attempts to hold more were refused on the way to 8.
        let mut load = exp(ExperimentKind::Load, 8, vec![ok(), ok()]);
        load.hold_refused = 3;
        let f = decide(&facts(vec![base(), load, exp(ExperimentKind::Persistence, 0, vec![ok(), ok()])]));
        assert_eq!(f.verdict, Verdict::Ok, "{:?}", f.evidence);
        assert!(f.evidence.contains(&Evidence::HoldRefused { attempts: 3 }), "{:?}", f.evidence);
        // The same while another process of this host holds connections: they fill the table for
        // everyone, so the limit is live: maxstartups.
        let f = decide(&Facts {
            host_connections: vec![HostHolder {
                pid: None,
                process: None,
                local: "127.0.0.9".parse().unwrap(),
                count: 5,
            }],
            ..facts(vec![
                base(),
                exp(ExperimentKind::Load, 3, vec![ok(), refusal(EXCEEDED)]),
                exp(ExperimentKind::Persistence, 0, vec![ok(), ok()]),
            ])
        });
        assert_eq!(f.verdict, Verdict::Maxstartups, "{:?}", f.evidence);
        assert!(
            f.evidence.contains(&Evidence::MaxStartupsUnderLoad { held: 3, cleared: true }),
            "{:?}",
            f.evidence
        );
    }

    #[test]
    fn connect_failures() {
        for (outcome, verdict, remedy) in [
            (Outcome::Refused, Verdict::NotListening, Remedy::StartServer),
            (Outcome::ConnectTimeout, Verdict::Filtered, Remedy::AllowInFirewall),
            (Outcome::Unreachable, Verdict::Unreachable, Remedy::FixRouting),
        ] {
            let f = decide(&facts(vec![exp(ExperimentKind::Baseline, 0, vec![rec(outcome); 3])]));
            assert_eq!((f.verdict, f.confidence), (verdict, Confidence::High));
            assert_eq!(f.evidence, [Evidence::ConnectFailed { outcome, probes: 3 }]);
            assert_eq!(f.remedy, [remedy]);
        }
        let f = decide(&facts(vec![exp(ExperimentKind::Baseline, 0, vec![rec(Outcome::Refused)])]));
        assert_eq!((f.verdict, f.confidence), (Verdict::NotListening, Confidence::Medium));
        let http = probe(Connect::Established, b"HTTP/1.1 400 Bad Request\r\n\r\n", Some(End::Fin), 300);
        let f = decide(&facts(vec![exp(ExperimentKind::Baseline, 0, vec![http; 3])]));
        assert_eq!(f.verdict, Verdict::NotSsh);
        assert!(
            matches!(&f.evidence[..], [Evidence::NotSsh { said, .. }] if said == "HTTP/1.1 400 Bad Request"),
            "{:?}",
            f.evidence
        );
    }

    #[test]
    fn wrappers_denial_is_access_denied() {
        let base = vec![closed_after(5_010_000), reset_after(5_012_000), closed_after(5_020_000)];
        let f = decide(&facts(vec![
            exp(ExperimentKind::Baseline, 0, base),
            exp(ExperimentKind::Source, 0, vec![closed_after(5_000_000); 2]),
        ]));
        assert_eq!((f.verdict, f.confidence), (Verdict::AccessDenied, Confidence::High));
        assert!(
            f.evidence.contains(&Evidence::ZeroByteClose {
                median_us: 5_012_000,
                probes: 3,
                source: Source::KernelChoice,
                server_delay_us: 5_011_800,
                server_delay_range_us: Some((5_009_800, 5_019_800)),
                fastest_delay_us: 5_009_800,
                class: DelayClass::WrappersDelay,
            }),
            "{:?}",
            f.evidence
        );
        assert!(f.evidence.contains(&Evidence::WrappersDelay { median_us: 5_012_000 }), "{:?}", f.evidence);
        assert_eq!(f.remedy, [Remedy::AllowInHostsAllow { client: Some("127.0.0.1".parse().unwrap()) }]);
    }

    /// The fastest refusal places a run of zero-byte closes: a session process that died in 4.0-5.3
    /// ms (sshd 9.2 without its host key, on a quiet machine) is not a listener drop, and one slow
    /// listener drop among fast ones (a loaded machine) does not make the listener a session.
    #[test]
    fn the_fastest_refusal_places_a_zero_byte_close() {
        let quick_death = vec![closed_at(100, 4_223), closed_at(100, 4_671), closed_at(100, 5_504)];
        let f = decide(&facts(vec![
            exp(ExperimentKind::Baseline, 0, quick_death.clone()),
            exp(ExperimentKind::Source, 0, quick_death[..2].to_vec()),
        ]));
        assert_eq!(f.verdict, Verdict::ServerError, "{:?}", f.evidence);
        // One connect seen 1 ms late: that probe's own correction (4 223 − 2 × 1 100) is under
        // the listener bound, the run's (4 223 − 2 × 100) is not.
        let late_connect = vec![closed_at(1_100, 4_223), closed_at(100, 4_671), closed_at(100, 5_504)];
        let f = decide(&facts(vec![
            exp(ExperimentKind::Baseline, 0, late_connect.clone()),
            exp(ExperimentKind::Source, 0, late_connect[1..].to_vec()),
        ]));
        assert_eq!(f.verdict, Verdict::ServerError, "{:?}", f.evidence);
        let loaded_listener = vec![closed_at(100, 450), closed_at(100, 3_600), closed_at(100, 3_900)];
        let f = decide(&facts(vec![
            exp(ExperimentKind::Baseline, 0, loaded_listener.clone()),
            exp(ExperimentKind::Source, 0, loaded_listener[..2].to_vec()),
        ]));
        assert!(
            f.evidence
                .iter()
                .any(|e| matches!(e, Evidence::ZeroByteClose { class: DelayClass::Listener, .. })),
            "{:?}",
            f.evidence
        );
    }

    /// The server's own delay, not the close as we saw it, places a zero-byte close: at the listener
    /// (a connection table, a forwarder), in a session process (a broken server), at Debian's wrappers
    /// delay (an access rule). Only the last, a close for this address only, or a message, is
    /// `access_denied`.
    #[test]
    fn a_zero_byte_close_is_placed_by_the_servers_own_delay() {
        // A session process that dies before its banner (sshd 9.2 whose host key is gone: 7-18 ms),
        // from every address: the server is broken.
        let broken = || closed_at(80, 12_900);
        let f = decide(&facts(vec![
            exp(ExperimentKind::Baseline, 0, vec![broken(); 3]),
            exp(ExperimentKind::Source, 0, vec![broken(); 2]),
        ]));
        assert_eq!((f.verdict, f.confidence), (Verdict::ServerError, Confidence::Medium));
        assert!(
            f.evidence.contains(&Evidence::SessionProcessDies { server_delay_us: 12_740 }),
            "{:?}",
            f.evidence
        );
        assert_eq!(f.remedy, [Remedy::RepairServer]);
        // The same close for this address only: an access rule without Debian's delay.
        let f = decide(&facts(vec![
            exp(ExperimentKind::Baseline, 0, vec![broken(); 3]),
            exp(ExperimentKind::Source, 0, vec![banner("OpenSSH_9.2p1"); 17]),
        ]));
        assert_eq!((f.verdict, f.confidence), (Verdict::AccessDenied, Confidence::Medium));
        assert_eq!(f.remedy.last(), Some(&Remedy::CheckServerLog));

        // Accept-and-close at the listener from every address, nothing held here: a forwarder with no
        // backend or a table full of others' connections; the evidence allows both.
        let forwarder = || closed_at(60, 500);
        let f = decide(&facts(vec![
            exp(ExperimentKind::Baseline, 0, vec![forwarder(); 3]),
            exp(ExperimentKind::Source, 0, vec![forwarder(); 2]),
        ]));
        assert_eq!((f.verdict, f.confidence), (Verdict::ListenerDrop, Confidence::Medium));
        assert!(
            f.evidence.contains(&Evidence::ListenerDropEverywhere { server_delay_us: 380 }),
            "{:?}",
            f.evidence
        );
        assert_eq!(f.remedy, [Remedy::TellListenerDropsApart]);
        // Without a second address to ask, less sure.
        let f = decide(&Facts {
            experiments: vec![exp(ExperimentKind::Baseline, 0, vec![forwarder(); 3])],
            ..Facts::default()
        });
        assert_eq!((f.verdict, f.confidence), (Verdict::ListenerDrop, Confidence::Low));

        // 20 ms away (10 ms each way), an accept-and-close is still at the listener: the round trip is
        // taken out. Uncorrected, the 40 ms close would read as a session process.
        let far = || closed_at(20_300, 40_900);
        let f = decide(&facts(vec![
            exp(ExperimentKind::Baseline, 0, vec![far(); 3]),
            exp(ExperimentKind::Source, 0, vec![far(); 2]),
        ]));
        assert_eq!(f.verdict, Verdict::ListenerDrop, "{:?}", f.evidence);

        // A delay no known cause has: no pattern, never access_denied without evidence of a rule.
        let f = decide(&facts(vec![exp(ExperimentKind::Baseline, 0, vec![closed_after(3_000_000); 3])]));
        assert_eq!((f.verdict, f.confidence), (Verdict::Intermittent, Confidence::Low));
        assert!(
            f.evidence.contains(&Evidence::UnusualZeroByteClose { median_us: 3_000_000 }),
            "{:?}",
            f.evidence
        );

        let f = decide(&facts(vec![exp(ExperimentKind::Baseline, 0, vec![refusal("go away"); 3])]));
        assert_eq!(f.verdict, Verdict::AccessDenied);
        assert!(f.evidence.contains(&Evidence::UnknownRefusal { message: "go away".into() }));
    }

    #[test]
    fn maxstartups_full_from_others_hits_every_address() {
        let f = decide(&facts(vec![
            exp(ExperimentKind::Baseline, 0, vec![refusal(EXCEEDED); 3]),
            exp(ExperimentKind::Source, 0, vec![refusal(EXCEEDED); 2]),
        ]));
        assert_eq!((f.verdict, f.confidence), (Verdict::Maxstartups, Confidence::High));
        assert!(f.evidence.contains(&Evidence::RefusedEverywhere), "{:?}", f.evidence);
        assert!(
            matches!(
                f.evidence[2],
                Evidence::RefusalMessage {
                    refusal: KnownRefusal::ExceededMaxStartups,
                    median_us: 300,
                    probes: 3,
                    ..
                }
            ),
            "{:?}",
            f.evidence
        );
        assert_eq!(f.remedy, [Remedy::RaiseMaxStartups]);
    }

    #[test]
    fn per_source_limits_spare_other_addresses() {
        let f = decide(&facts(vec![
            exp(ExperimentKind::Baseline, 0, vec![refusal(EXCEEDED); 3]),
            exp(ExperimentKind::Source, 0, vec![banner("OpenSSH_9.2p1"); 17]),
        ]));
        assert_eq!((f.verdict, f.confidence), (Verdict::PerSourceLimit, Confidence::High));
        assert!(f.evidence.contains(&Evidence::ServedElsewhereWithoutPenalties { software: OPENSSH_9_2 }));
        // 3 of 3 refused here, 17 of 17 served there: p = 1/C(20,3), under the 0.1 % error rate.
        assert!(f.evidence.contains(&Evidence::PerSourceShown {
            here: Count::new(3, 3),
            elsewhere: Count::new(0, 17),
            p_per_mille: 1,
            error_rate_per_mille: 1
        }));
        assert_eq!(f.remedy, [Remedy::RaisePerSourceMaxStartups]);
        // With 2 banners there, a global limit dropping at random gives that with p = 0.1: both causes
        // are named, the global one the verdict at low confidence.
        let f = decide(&facts(vec![
            exp(ExperimentKind::Baseline, 0, vec![refusal(EXCEEDED); 3]),
            exp(ExperimentKind::Source, 0, vec![banner("OpenSSH_9.2p1"); 2]),
        ]));
        assert_eq!((f.verdict, f.confidence), (Verdict::Maxstartups, Confidence::Low));
        assert!(f.evidence.contains(&Evidence::PerSourceUntold {
            here: Count::new(3, 3),
            elsewhere: Count::new(0, 2),
            p_per_mille: 100,
            error_rate_per_mille: 1
        }));

        let quick = vec![closed_after(300), reset_after(300), closed_after(300)];
        let f = decide(&facts(vec![
            exp(ExperimentKind::Baseline, 0, quick),
            exp(ExperimentKind::Source, 0, vec![banner("dropbear_2022.83"); 17]),
        ]));
        assert_eq!(f.verdict, Verdict::PerSourceLimit);
        assert!(f.evidence.contains(&Evidence::DropbearPerSourceClose), "{:?}", f.evidence);
        assert_eq!(f.remedy, [Remedy::DropbearMaxUnauthPerIp]);
    }

    #[test]
    fn penalties_on_9_8_plus() {
        let f = decide(&facts(vec![
            exp(ExperimentKind::Baseline, 0, vec![refusal(NOT_ALLOWED); 3]),
            exp(ExperimentKind::Source, 0, vec![banner("OpenSSH_10.0p2"); 17]),
        ]));
        assert_eq!(f.verdict, Verdict::Penalized);
        assert!(f.evidence.contains(&Evidence::ServedElsewhereWithPenalties { software: OPENSSH_10_0 }));
        assert_eq!(f.remedy, [Remedy::ExemptFromPenalties]);
    }

    #[test]
    fn random_refusals_with_nothing_held_are_maxstartups() {
        let f = decide(&facts(random_refusals()));
        assert_eq!(f.verdict, Verdict::Maxstartups);
        assert!(f.evidence.contains(&Evidence::RandomRefusals { refused: 2, probes: 5 }), "{:?}", f.evidence);
    }

    #[test]
    fn healthy_under_load_is_ok() {
        let f = decide(&facts(vec![
            exp(ExperimentKind::Baseline, 0, vec![banner("OpenSSH_9.2p1"); 3]),
            exp(ExperimentKind::Load, 8, vec![banner("OpenSSH_9.2p1"); 3]),
            exp(ExperimentKind::Load, 8, vec![banner("OpenSSH_9.2p1"); 3]),
        ]));
        assert_eq!((f.verdict, f.confidence), (Verdict::Ok, Confidence::High));
        assert_eq!(
            f.evidence,
            [
                Evidence::UnloadedBanners { probes: 3, software: OPENSSH_9_2 },
                Evidence::ServedUnderLoad { max_held: 8 },
                // 9 banners rule out drops of 54 % or more (0.46^9 < 0.1 %), not MaxStartups' 30 %.
                Evidence::NoDropsSeen { banners: 9, ruled_out_pct: 54, error_rate_per_mille: 1 }
            ]
        );
        assert_eq!(f.remedy, [Remedy::LookPastTheExchange]);
        assert!(f.notes.is_empty());
        // Fewer held than a confident verdict needs.
        let f = decide(&facts(vec![
            exp(ExperimentKind::Baseline, 0, vec![banner("OpenSSH_9.2p1"); 3]),
            exp(ExperimentKind::Load, 3, vec![banner("OpenSSH_9.2p1"); 2]),
        ]));
        assert_eq!((f.verdict, f.confidence), (Verdict::Ok, Confidence::Medium));
        assert_eq!(f.notes, [Note::LoadNotConfident { max_held: 3 }]);
    }

    /// Refusals only while diagnose itself held connections, gone once released: `ok`, with where the
    /// refusals begin (a burst of that many unauthenticated connections will meet them).
    #[test]
    fn a_limit_met_only_under_our_load_is_ok_with_where_it_begins() {
        let f = decide(&facts(vec![
            exp(ExperimentKind::Baseline, 0, vec![banner("OpenSSH_9.2p1"); 3]),
            exp(ExperimentKind::Load, 4, vec![refusal(EXCEEDED), banner("OpenSSH_9.2p1"), refusal(EXCEEDED)]),
            exp(ExperimentKind::Source, 4, vec![refusal(EXCEEDED); 2]),
            exp(ExperimentKind::Persistence, 0, vec![banner("OpenSSH_9.2p1"); 2]),
        ]));
        assert_eq!((f.verdict, f.confidence), (Verdict::Ok, Confidence::High));
        assert!(f.evidence.contains(&Evidence::RefusalsBeginAt { held: 4 }), "{:?}", f.evidence);
        assert!(f.evidence.contains(&Evidence::RefusalsSaid { message: EXCEEDED.into() }));
        assert_eq!(f.remedy, [Remedy::LookPastTheExchange]);
    }

    #[test]
    fn own_penalty_is_reported_as_such() {
        let f = decide(&facts(vec![
            exp(ExperimentKind::Baseline, 0, vec![banner("OpenSSH_10.0p2"); 3]),
            exp(ExperimentKind::Load, 8, vec![refusal(NOT_ALLOWED); 3]),
            exp(ExperimentKind::Source, 8, vec![banner("OpenSSH_10.0p2"); 2]),
            exp(ExperimentKind::Persistence, 0, vec![refusal(NOT_ALLOWED); 2]),
        ]));
        assert_eq!(f.verdict, Verdict::Penalized);
        assert!(f.evidence.contains(&Evidence::PenaltyOutlivedLoad), "{:?}", f.evidence);
        assert_eq!(f.notes, [Note::OwnProbesDuringLoad]);
    }

    #[test]
    fn no_banner_ever_is_overloaded() {
        let f = decide(&facts(vec![exp(ExperimentKind::Baseline, 0, vec![rec(Outcome::BannerTimeout); 3])]));
        assert_eq!((f.verdict, f.confidence), (Verdict::Overloaded, Confidence::Medium));
        assert!(f.evidence.contains(&Evidence::NoBanner { probes: 3, partial: None }), "{:?}", f.evidence);
        assert_eq!(f.remedy, [Remedy::RestartHungServer]);
    }

    #[test]
    fn banners_that_time_out_under_load_are_overloaded() {
        let f = decide(&facts(vec![
            exp(ExperimentKind::Baseline, 0, vec![banner("OpenSSH_9.2p1"); 3]),
            exp(ExperimentKind::Load, 3, vec![banner("OpenSSH_9.2p1"), rec(Outcome::BannerTimeout)]),
        ]));
        assert_eq!((f.verdict, f.confidence), (Verdict::Overloaded, Confidence::Medium));
        assert!(f.evidence.contains(&Evidence::LoadTimeouts { timeouts: 1 }), "{:?}", f.evidence);
        assert_eq!(f.remedy, [Remedy::CheckServerUnderLoad]);
    }

    #[test]
    fn failures_without_a_pattern_are_intermittent() {
        // A slow zero-byte close and a banner timeout among banners: no limit closes like that.
        let f = decide(&facts(vec![
            exp(
                ExperimentKind::Baseline,
                0,
                vec![banner("OpenSSH_9.2p1"), closed_after(3_000_000), banner("OpenSSH_9.2p1")],
            ),
            exp(ExperimentKind::Determinism, 0, vec![rec(Outcome::BannerTimeout), banner("OpenSSH_9.2p1")]),
        ]));
        assert_eq!((f.verdict, f.confidence), (Verdict::Intermittent, Confidence::Low));
        assert_eq!(f.evidence.last(), Some(&Evidence::NoPattern));
        assert_eq!(f.remedy, [Remedy::CollectMore]);
    }

    /// No verdict without probes: a run whose time limit ended before its first probe says so.
    #[test]
    fn no_probe_at_all_is_not_tested() {
        let f = decide(&Facts {
            budget_exhausted: true,
            not_tested: Some(NotTestedReason::TimeLimit),
            ..facts(vec![exp(ExperimentKind::Baseline, 0, vec![])])
        });
        assert_eq!(
            (f.verdict, f.evidence, f.remedy),
            (
                Verdict::NotTested,
                vec![Evidence::NoProbes { reason: NotTestedReason::TimeLimit }],
                vec![Remedy::AllowMoreTime]
            )
        );
        assert_eq!(f.notes, [Note::BudgetExhausted]);
    }

    /// Refusals while this host holds connections to the server are load limits, whatever the
    /// server calls them: a full table when every address is refused, a per-source limit when
    /// another address is served.
    #[test]
    fn connections_this_host_holds_explain_refusals() {
        let holders = |local: &str, count| {
            vec![HostHolder {
                pid: Some(4242),
                process: Some("python3".into()),
                local: local.parse().unwrap(),
                count,
            }]
        };
        // dropbear's MAX_UNAUTH_CLIENTS filled from this host: zero bytes at the listener everywhere.
        let quick = || closed_at(60, 300);
        let f = decide(&Facts {
            host_connections: holders("127.0.0.9", 30),
            ..facts(vec![
                exp(ExperimentKind::Baseline, 0, vec![quick(); 3]),
                exp(ExperimentKind::Source, 0, vec![quick(); 2]),
            ])
        });
        assert_eq!((f.verdict, f.confidence), (Verdict::Maxstartups, Confidence::High), "{:?}", f.evidence);
        assert!(
            f.evidence.contains(&Evidence::HostHoldsConnections {
                holders: holders("127.0.0.9", 30),
                total: 30,
                from_probing_address: 0
            }),
            "{:?}",
            f.evidence
        );
        assert_eq!(f.remedy[0], Remedy::ReleaseThisHostsConnections);
        // OpenSSH 10's one line, another address served, this host holding from the probing address:
        // PerSourceMaxStartups, not a penalty.
        let f = decide(&Facts {
            host_connections: holders("127.0.0.1", 3),
            ..facts(vec![
                exp(ExperimentKind::Baseline, 0, vec![refusal(NOT_ALLOWED); 3]),
                exp(ExperimentKind::Source, 0, vec![banner("OpenSSH_10.0p2"); 17]),
            ])
        });
        assert_eq!(
            (f.verdict, f.confidence),
            (Verdict::PerSourceLimit, Confidence::High),
            "{:?}",
            f.evidence
        );
        assert_eq!(f.remedy, [Remedy::ReleaseThisHostsConnections, Remedy::RaisePerSourceMaxStartups]);
        // ... and every address refused with that line: the server-wide table.
        let f = decide(&Facts {
            host_connections: holders("127.0.0.1", 3),
            ..facts(vec![
                exp(ExperimentKind::Baseline, 0, vec![refusal(NOT_ALLOWED); 3]),
                exp(ExperimentKind::Source, 0, vec![refusal(NOT_ALLOWED); 2]),
            ])
        });
        assert_eq!((f.verdict, f.confidence), (Verdict::Maxstartups, Confidence::High), "{:?}", f.evidence);
    }

    /// Every address's SYNs unanswered while this host holds connections to the server: a full
    /// accept queue (HAProxy at `maxconn`), with the holders named.
    #[test]
    fn syns_unanswered_everywhere_while_this_host_holds_is_overloaded_with_holders() {
        let holders = vec![HostHolder {
            pid: Some(9),
            process: Some("ssh".into()),
            local: "127.0.0.9".parse().unwrap(),
            count: 2,
        }];
        let f = decide(&Facts {
            host_connections: holders.clone(),
            ..facts(vec![
                exp(ExperimentKind::Baseline, 0, vec![rec(Outcome::ConnectTimeout); 3]),
                exp(ExperimentKind::Source, 0, vec![rec(Outcome::ConnectTimeout); 2]),
            ])
        });
        assert_eq!(f.verdict, Verdict::Overloaded, "{:?}", f.evidence);
        assert!(f.evidence.contains(&Evidence::HostHoldsConnections {
            holders,
            total: 2,
            from_probing_address: 0
        }));
        assert_eq!(f.remedy[0], Remedy::ReleaseThisHostsConnections);
        // Accepted and silent from every address, the same.
        let f = decide(&Facts {
            host_connections: vec![HostHolder {
                pid: None,
                process: None,
                local: "127.0.0.9".parse().unwrap(),
                count: 2,
            }],
            ..facts(vec![exp(ExperimentKind::Baseline, 0, vec![rec(Outcome::BannerTimeout); 3])])
        });
        assert_eq!(f.verdict, Verdict::Overloaded);
        assert!(f.evidence.iter().any(|e| matches!(e, Evidence::HostHoldsConnections { total: 2, .. })));
    }

    /// A reset at the listener for this address only, nothing held from it here: an access rule
    /// there (a proxy's ACL), not sshd's wrappers and not a per-source limit of ours.
    #[test]
    fn a_reset_at_the_listener_for_this_address_only_is_access_denied_there() {
        let f = decide(&facts(vec![
            exp(ExperimentKind::Baseline, 0, vec![reset_after(480); 3]),
            exp(ExperimentKind::Source, 0, vec![banner("OpenSSH_9.2p1"); 17]),
        ]));
        assert_eq!((f.verdict, f.confidence), (Verdict::AccessDenied, Confidence::Medium));
        assert!(f.evidence.iter().any(|e| matches!(e, Evidence::AtTheListener { .. })), "{:?}", f.evidence);
        assert!(matches!(f.remedy[..], [Remedy::AllowAtTheListener { .. }]), "{:?}", f.remedy);
    }

    /// Bytes, then a reset: never a zero-byte close.
    #[test]
    fn bytes_then_a_reset_is_never_zero_bytes() {
        let partial = || probe(Connect::Established, b"SSH-2.0-Open", Some(End::Rst), 50_000);
        let f = decide(&facts(vec![exp(ExperimentKind::Baseline, 0, vec![partial(); 3])]));
        assert!(!f.evidence.iter().any(|e| matches!(e, Evidence::ZeroByteClose { .. })), "{:?}", f.evidence);
        assert_ne!(f.verdict, Verdict::ListenerDrop);
    }

    /// A banner after a fixed wait when we waited, at once when we spoke first: a multiplexer, `ok`.
    #[test]
    fn a_multiplexers_wait_is_ok_and_named() {
        let waited =
            || probe(Connect::Established, b"SSH-2.0-OpenSSH_9.2p1\r\n", Some(End::WeClosed), 2_004_000);
        let mut spoke = probe(Connect::Established, b"SSH-2.0-OpenSSH_9.2p1\r\n", Some(End::WeClosed), 6_000);
        spoke.record.observation.order = ProbeOrder::SendFirst;
        let f = decide(&facts(vec![exp(ExperimentKind::Baseline, 0, vec![waited(), spoke, waited()])]));
        assert_eq!(f.verdict, Verdict::Ok);
        assert!(
            f.evidence.contains(&Evidence::Multiplexer { waited_ms: 2004, spoke_first_ms: 6 }),
            "{:?}",
            f.evidence
        );
        // The same wait in both orders is a slow server, not a multiplexer.
        let mut slow = waited();
        slow.record.observation.order = ProbeOrder::SendFirst;
        let f = decide(&facts(vec![exp(ExperimentKind::Baseline, 0, vec![waited(), slow, waited()])]));
        assert!(!f.evidence.iter().any(|e| matches!(e, Evidence::Multiplexer { .. })));
    }

    /// Some SYNs unanswered and some connections accepted without a banner: a hung server, not a
    /// firewall.
    #[test]
    fn a_full_accept_queue_is_a_hung_server() {
        let f = decide(&facts(vec![exp(
            ExperimentKind::Baseline,
            0,
            vec![rec(Outcome::BannerTimeout), rec(Outcome::ConnectTimeout), rec(Outcome::ConnectTimeout)],
        )]));
        assert_eq!((f.verdict, f.confidence), (Verdict::Overloaded, Confidence::Medium));
        assert!(
            f.evidence.contains(&Evidence::HungServer { syn_unanswered: 2, accepted_silent: 1 }),
            "{:?}",
            f.evidence
        );
        assert_eq!(f.remedy, [Remedy::RestartHungServer]);
    }

    /// Every rule that reads per-source reads it by the test: a reset at the listener for this
    /// address beside 2 banners elsewhere (p = 0.1) keeps its per-address reading at low
    /// confidence, naming both; it never says every address is closed.
    #[test]
    fn an_untold_zero_byte_close_names_both_and_never_every_address() {
        let f = decide(&facts(vec![
            exp(ExperimentKind::Baseline, 0, vec![reset_after(480); 3]),
            exp(ExperimentKind::Source, 0, vec![banner("OpenSSH_9.2p1"); 2]),
        ]));
        assert_eq!((f.verdict, f.confidence), (Verdict::AccessDenied, Confidence::Low), "{:?}", f.evidence);
        assert!(f.evidence.iter().any(|e| matches!(e, Evidence::PerSourceUntold { p_per_mille: 100, .. })));
        assert!(!f.evidence.iter().any(|e| matches!(e, Evidence::ListenerDropEverywhere { .. })));
    }

    /// Held from the probing address, refused there and served elsewhere at the same load: a
    /// per-source limit only when the test says so; random drops on both otherwise.
    #[test]
    fn per_source_under_load_is_read_by_the_test() {
        let ok = || banner("OpenSSH_9.2p1");
        let run = |mine: Vec<ExperimentProbe>, theirs: Vec<ExperimentProbe>| {
            let mut load = exp(ExperimentKind::Load, 3, mine);
            load.held_from_probing_source = true;
            decide(&facts(vec![
                exp(ExperimentKind::Baseline, 0, vec![ok(); 3]),
                load,
                exp(ExperimentKind::Source, 3, theirs),
                exp(ExperimentKind::Persistence, 0, vec![ok()]),
            ]))
        };
        // 1 refusal in 2 beside 2 banners: untold, not a per-source limit.
        let f = run(vec![refusal(EXCEEDED), ok()], vec![ok(); 2]);
        assert_eq!(f.verdict, Verdict::Ok, "{:?}", f.evidence);
        assert!(f.evidence.iter().any(|e| matches!(e, Evidence::PerSourceUntold { .. })), "{:?}", f.evidence);
        // 5 of 5 refused beside 9 banners: p = 1/2002, per-source.
        let f = run(vec![refusal(EXCEEDED); 5], vec![ok(); 9]);
        assert_eq!(f.verdict, Verdict::PerSourceLimit, "{:?}", f.evidence);
        assert!(f.evidence.contains(&Evidence::PerSourceShown {
            here: Count::new(5, 5),
            elsewhere: Count::new(0, 9),
            p_per_mille: 0,
            error_rate_per_mille: 1
        }));
        // A refusal elsewhere at the same load: a limit for everyone.
        let f = run(vec![refusal(EXCEEDED); 2], vec![ok(), refusal(EXCEEDED)]);
        assert_ne!(f.verdict, Verdict::PerSourceLimit, "{:?}", f.evidence);
    }

    /// An ok says what its banners rule out: 20 in a row rule out drops of 30 % (MaxStartups'
    /// default rate) at the 0.1 % error rate.
    #[test]
    fn an_ok_says_what_its_banners_rule_out() {
        let ok = || banner("OpenSSH_9.2p1");
        let f = decide(&facts(vec![
            exp(ExperimentKind::Baseline, 0, vec![ok(); 3]),
            exp(ExperimentKind::Load, 3, vec![ok(); 2]),
            exp(ExperimentKind::Source, 3, vec![ok(); 14]),
            exp(ExperimentKind::Persistence, 0, vec![ok()]),
        ]));
        assert_eq!(f.verdict, Verdict::Ok);
        assert!(
            f.evidence.contains(&Evidence::NoDropsSeen {
                banners: 20,
                ruled_out_pct: 30,
                error_rate_per_mille: 1
            }),
            "{:?}",
            f.evidence
        );
    }
}
