//! The verdict: [`decide`] reads the gathered [`Facts`] and writes a [`Finding`]. Pure, so every rule
//! is unit-tested on synthetic facts; no English (the report writes [`Evidence`] for people).
//!
//! The rules, in order: the connect fails (`not_listening`, `filtered`, `unreachable`); something
//! else answers (`not_ssh`); the exchange works with nothing held, so the load experiment decides
//! (`ok`, `maxstartups`, `per_source_limit`, `penalized`, `overloaded`); every probe is refused (by a
//! line that names a limit, a zero-byte close whose delay tells the cause, or another message); no
//! banner ever; some banners, some refusals; else `intermittent`.

use super::evidence::{DelayClass, Evidence, Note};
use super::facts::{Experiment, ExperimentKind, ExperimentProbe, Facts, HostHolder, NotTestedReason, Tally};
use super::persource::{self, Count, Split};
use super::remedy::{remedies, Remedy};
use crate::experiment::stats::percentile;
use crate::outcome::{KnownRefusal, Outcome};
use crate::server::Software;
use serde::Serialize;
use std::fmt;
use std::net::IpAddr;

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
    } else if unloaded.iter().all(|p| p.outcome() == Outcome::Banner) {
        decide_loaded(facts, &mut f, software);
    } else {
        decide_unloaded(facts, &unloaded, &mut f, software);
    }
    super::logged::refine(facts, &mut f);
    // Our address as the server saw it, for an access rule to name.
    let client = unloaded
        .iter()
        .filter(|p| p.refused())
        .find_map(|p| p.local())
        .map(|a| a.ip())
        .or_else(|| facts.probing_timeline().iter().find_map(|p| p.source.or(p.local().map(|a| a.ip()))));
    f.remedy = remedies(f.verdict, software, &f.evidence, client);
    f
}

/// The verdict when some probe with nothing held did not get a banner.
fn decide_unloaded(
    facts: &Facts,
    unloaded: &[&ExperimentProbe],
    f: &mut Finding,
    software: Option<Software>,
) {
    let n = unloaded.len();
    let count = |o: Outcome| unloaded.iter().filter(|p| p.outcome() == o).count();

    // Every address's SYNs unanswered while this host holds connections to the server: a
    // front-end (or sshd) whose accept queue is full of them, not a firewall.
    let host_holds = facts.host_connections.iter().any(|h| h.count > 0);
    let second_unanswered = facts
        .of(ExperimentKind::Source)
        .flat_map(|e| &e.probes)
        .map(|p| p.outcome() == Outcome::ConnectTimeout)
        .reduce(|a, b| a && b)
        .unwrap_or(false);
    if host_holds && second_unanswered && count(Outcome::ConnectTimeout) == n {
        f.conclude(Verdict::Overloaded, Confidence::Medium);
        f.evidence.push(Evidence::HungServer { syn_unanswered: n, accepted_silent: 0 });
        cite_holders(facts, f);
        return;
    }

    // The connect itself fails.
    for (outcome, verdict) in [
        (Outcome::Refused, Verdict::NotListening),
        (Outcome::ConnectTimeout, Verdict::Filtered),
        (Outcome::Unreachable, Verdict::Unreachable),
    ] {
        if count(outcome) == n {
            f.conclude(verdict, if n >= 2 { Confidence::High } else { Confidence::Medium });
            f.evidence.push(Evidence::ConnectFailed { outcome, probes: n });
            return;
        }
    }
    if unloaded.iter().all(|p| matches!(p.outcome(), Outcome::NotSsh | Outcome::ProtocolMismatch)) {
        f.conclude(Verdict::NotSsh, Confidence::High);
        let said = unloaded
            .iter()
            .find_map(|p| p.message().or(p.software_version()))
            .unwrap_or_default()
            .to_string();
        f.evidence.push(Evidence::NotSsh { tally: Tally::of(unloaded.iter().copied()), said });
        return;
    }

    let refusals: Vec<&ExperimentProbe> = unloaded.iter().copied().filter(|p| p.refused()).collect();
    let second: Vec<&ExperimentProbe> =
        facts.of(ExperimentKind::Source).filter(|e| e.held == 0).flat_map(|e| &e.probes).collect();
    let second_all_banner = !second.is_empty() && second.iter().all(|p| p.outcome() == Outcome::Banner);
    let second_all_refused = !second.is_empty() && second.iter().all(|p| p.refused());
    f.evidence.push(Evidence::Unloaded { tally: Tally::of(unloaded.iter().copied()) });
    if let Some(first) = second.first() {
        f.evidence.push(Evidence::SecondSource {
            source: first.source_label(),
            tally: Tally::of(second.iter().copied()),
        });
    } else if !facts.second_source {
        f.notes.push(Note::NoSecondSource);
    }

    if refusals.len() == n {
        let (here, elsewhere) = unloaded_counts(facts);
        let per_source = match persource::split(here, elsewhere) {
            Split::PerSource { p } if second_all_banner => PerSource::Shown(shown(here, elsewhere, p)),
            Split::Untold { p } if second_all_banner => PerSource::Untold(untold(here, elsewhere, p)),
            _ => PerSource::NotServedElsewhere,
        };
        let cx = Context {
            software,
            second_all_banner,
            per_source,
            second_all_refused,
            no_second: second.is_empty(),
            host: &facts.host_connections,
            probing: unloaded.iter().find_map(|p| p.local()).map(|a| a.ip()),
        };
        decide_all_refused(&refusals, f, &cx);
        return;
    }

    // Some SYNs unanswered, or accepted without a banner, and never a banner: a hung server whose
    // listen queue is full (the kernel completes handshakes until it overflows), not a firewall.
    let syn_unanswered = count(Outcome::ConnectTimeout);
    let accepted_silent = count(Outcome::BannerTimeout);
    if count(Outcome::Banner) == 0 && syn_unanswered + accepted_silent == n && syn_unanswered > 0 {
        f.conclude(Verdict::Overloaded, Confidence::Medium);
        f.evidence.push(Evidence::HungServer { syn_unanswered, accepted_silent });
        cite_holders(facts, f);
        return;
    }

    if count(Outcome::BannerTimeout) == n {
        f.conclude(Verdict::Overloaded, Confidence::Medium);
        let partial = unloaded.iter().find_map(|p| p.message()).map(String::from);
        f.evidence.push(Evidence::NoBanner { probes: n, partial });
        cite_holders(facts, f);
        return;
    }

    // Some banners, some refusals, with nothing held by us.
    if !refusals.is_empty() && count(Outcome::Banner) > 0 {
        let known = refusals.iter().find_map(|p| p.refusal());
        let fast_zero = refusals.iter().all(|p| {
            p.zero_byte_refusal()
                && p.server_delay_us().is_some_and(|d| DelayClass::of(d) == DelayClass::Listener)
        });
        // Banners first, then nothing but refusals: a block that began during this diagnosis.
        let first_refused = unloaded.iter().position(|p| p.refused()).unwrap_or(n);
        let banners_then_refused = unloaded[..first_refused].iter().all(|p| p.outcome() == Outcome::Banner)
            && unloaded[first_refused..].iter().all(|p| p.refused());
        let penalties_possible = known == Some(KnownRefusal::NotAllowedAtThisTime)
            || software.is_some_and(Software::has_penalties);
        // Under a global limit's random drops the other address's banners could be luck: per-source
        // needs Fisher's exact test on both addresses' counts to decide at the stated error rate.
        let (here, elsewhere) = unloaded_counts(facts);
        let split = persource::split(here, elsewhere);
        if (known.is_some() || fast_zero) && second_all_banner {
            if banners_then_refused && penalties_possible {
                f.conclude(Verdict::Penalized, Confidence::Medium);
                f.evidence.push(Evidence::PenaltyBegan { banners: first_refused });
                f.notes.push(Note::OwnProbesNearPenaltyThreshold);
                return;
            }
            if let Split::PerSource { p } = split {
                f.conclude(Verdict::PerSourceLimit, Confidence::Medium);
                f.evidence.push(Evidence::RefusedHereServedElsewhere { refused: refusals.len(), probes: n });
                f.evidence.push(shown(here, elsewhere, p));
                return;
            }
            f.conclude(Verdict::Maxstartups, Confidence::Medium);
            f.evidence.push(Evidence::RandomRefusals { refused: refusals.len(), probes: n });
            if let Split::Untold { p } = split {
                f.evidence.push(untold(here, elsewhere, p));
            }
            cite_holders(facts, f);
            return;
        }
        if known.is_some() || fast_zero {
            f.conclude(Verdict::Maxstartups, Confidence::Medium);
            f.evidence.push(Evidence::RandomRefusals { refused: refusals.len(), probes: n });
            cite_holders(facts, f);
            return;
        }
    }
    f.evidence.push(Evidence::NoPattern);
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
/// verdict: the probing address refused after accept and quickly (a limit's refusal, not a 5-s
/// wrappers close: those are certain, and each costs 5 s), and another address served every time.
pub(super) fn unloaded_counts_to_test(facts: &Facts) -> Option<(Count, Count)> {
    let unloaded = facts.unloaded();
    let quick_refusal = |p: &&ExperimentProbe| {
        p.refused()
            && (p.refusal().is_some()
                || p.server_delay_us().is_some_and(|d| {
                    matches!(DelayClass::of(d), DelayClass::Listener | DelayClass::SessionProcess)
                }))
    };
    let only_banners_and_quick_refusals = unloaded.iter().all(|p| p.served() || quick_refusal(p));
    let (here, elsewhere) = unloaded_counts(facts);
    (only_banners_and_quick_refusals && here.refused > 0 && elsewhere.probes > 0 && elsewhere.refused == 0)
        .then_some((here, elsewhere))
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
        error_rate_pct: persource::error_rate_pct(),
    }
}

/// Evidence that the test could not tell per-source from global.
fn untold(here: Count, elsewhere: Count, p: f64) -> Evidence {
    Evidence::PerSourceUntold {
        here,
        elsewhere,
        p_per_mille: persource::per_mille(p),
        error_rate_pct: persource::error_rate_pct(),
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

/// What the other addresses got with nothing held, and what this host holds: the context in which
/// every probe was refused.
struct Context<'a> {
    software: Option<Software>,
    /// Another address got a banner every time.
    second_all_banner: bool,
    /// What the per-source test made of that.
    per_source: PerSource,
    second_all_refused: bool,
    no_second: bool,
    /// This host's other connections to the server.
    host: &'a [HostHolder],
    /// Our probing address as the server saw it.
    probing: Option<IpAddr>,
}

/// What Fisher's exact test made of this address refused every time while another was served.
enum PerSource {
    /// Per-source, at the stated error rate: the evidence says so.
    Shown(Evidence),
    /// Untold: the global reading is the verdict, at low confidence, and the evidence names both.
    Untold(Evidence),
    /// The other address was not served every time (or not asked).
    NotServedElsewhere,
}

impl Context<'_> {
    /// Applies the per-source test to a per-source rule: `true` when the rule may conclude (the
    /// evidence of the test is added); `false` when the global reading must (the evidence naming
    /// both is added, and the verdict the caller then concludes is lowered to low confidence by
    /// [`Context::settle`]).
    fn per_source_shown(&self, f: &mut Finding) -> bool {
        match &self.per_source {
            PerSource::Shown(e) => {
                f.evidence.push(e.clone());
                true
            }
            PerSource::Untold(e) => {
                f.evidence.push(e.clone());
                false
            }
            PerSource::NotServedElsewhere => false,
        }
    }

    /// After a global reading was concluded in place of an untold per-source one: low confidence.
    fn settle(&self, f: &mut Finding) {
        if matches!(self.per_source, PerSource::Untold(_)) {
            f.confidence = Confidence::Low;
        }
    }

    /// Connections this host holds to the server, in all and from the probing address.
    fn host_held(&self) -> (u32, u32) {
        let total = self.host.iter().map(|h| h.count).sum();
        let here = self.host.iter().filter(|h| Some(h.local) == self.probing).map(|h| h.count).sum();
        (total, here)
    }

    /// Cites this host's connections when there are any; returns (total, from the probing address).
    fn cite_host(&self, f: &mut Finding) -> (u32, u32) {
        let (total, here) = self.host_held();
        if total > 0 {
            f.evidence.push(Evidence::HostHoldsConnections {
                holders: self.host.to_vec(),
                total,
                from_probing_address: here,
            });
        }
        (total, here)
    }
}

/// The verdict when every probe with nothing held was refused after accept.
fn decide_all_refused(refusals: &[&ExperimentProbe], f: &mut Finding, cx: &Context<'_>) {
    let closes: Vec<u64> = refusals.iter().filter_map(|p| p.closed_us()).collect();
    let median_us = percentile(&closes, 0.5).unwrap_or(0);
    if let Some(refusal) = refusals.iter().find_map(|p| p.refusal()) {
        let message = refusals.iter().find_map(|p| p.message()).unwrap_or_default().to_string();
        f.evidence.push(Evidence::RefusalMessage { message, refusal, median_us, probes: refusals.len() });
        let (held_here, held_anywhere) = {
            let (total, here) = cx.cite_host(f);
            (here > 0, total > 0)
        };
        if cx.per_source_shown(f) {
            if held_here {
                // This host fills the probing address's share: a per-source limit, whatever the line.
                f.conclude(Verdict::PerSourceLimit, Confidence::High);
            } else if refusal == KnownRefusal::NotAllowedAtThisTime
                || cx.software.is_some_and(Software::has_penalties)
            {
                f.conclude(Verdict::Penalized, Confidence::Medium);
                f.evidence.push(Evidence::ServedElsewhereWithPenalties { software: cx.software });
            } else {
                f.conclude(Verdict::PerSourceLimit, Confidence::High);
                f.evidence.push(Evidence::ServedElsewhereWithoutPenalties { software: cx.software });
            }
        } else if held_anywhere {
            // Every address refused while this host holds connections to the server: its table is full.
            f.conclude(Verdict::Maxstartups, Confidence::High);
            if cx.second_all_refused {
                f.evidence.push(Evidence::RefusedEverywhere);
            }
        } else if cx.no_second && refusal == KnownRefusal::NotAllowedAtThisTime {
            // OpenSSH 9.8+ sends one line for all three limits, and there is no second address
            // to tell per-source from global.
            f.conclude(Verdict::Penalized, Confidence::Low);
            f.evidence.push(Evidence::AmbiguousRefusalLine);
            f.notes.push(Note::SecondSourceWouldTell);
        } else {
            f.conclude(
                Verdict::Maxstartups,
                if cx.second_all_refused { Confidence::High } else { Confidence::Medium },
            );
            if cx.second_all_refused {
                f.evidence.push(Evidence::RefusedEverywhere);
            }
        }
        cx.settle(f);
        return;
    }
    if refusals.iter().all(|p| p.zero_byte_refusal()) {
        decide_zero_byte(refusals, median_us, closes.len(), f, cx);
        return;
    }
    // Text that is not a recognised refusal: a wrappers `twist`, a custom ACL message.
    let message = refusals.iter().find_map(|p| p.message()).unwrap_or_default().to_string();
    f.conclude(Verdict::AccessDenied, Confidence::Medium);
    f.evidence.push(Evidence::UnknownRefusal { message });
}

/// Every probe was refused without a byte: where in the server the close came from (its delay,
/// less the round trip), whether other addresses fare better, and what this host holds decide.
fn decide_zero_byte(
    refusals: &[&ExperimentProbe],
    median_us: u64,
    probes: usize,
    f: &mut Finding,
    cx: &Context<'_>,
) {
    let mut delays: Vec<u64> = refusals.iter().filter_map(|p| p.server_delay_us()).collect();
    delays.sort_unstable();
    let server_delay_us = percentile(&delays, 0.5).unwrap_or(median_us);
    let range = (delays.first().copied().unwrap_or(0), delays.last().copied().unwrap_or(0));
    let class = DelayClass::of(server_delay_us);
    let source = refusals.first().map(|p| p.source_label()).unwrap_or_default();
    f.evidence.push(Evidence::ZeroByteClose {
        median_us,
        probes,
        source,
        server_delay_us,
        server_delay_range_us: range,
        class,
    });
    match class {
        DelayClass::WrappersDelay => {
            f.conclude(Verdict::AccessDenied, Confidence::High);
            f.evidence.push(Evidence::WrappersDelay { median_us });
            if cx.second_all_banner {
                f.evidence.push(Evidence::RuleMatchesThisAddressOnly);
            }
        }
        DelayClass::Listener => {
            let (held, held_here) = cx.cite_host(f);
            if cx.per_source_shown(f) {
                if cx.software == Some(Software::Dropbear) {
                    f.conclude(Verdict::PerSourceLimit, Confidence::High);
                    f.evidence.push(Evidence::DropbearPerSourceClose);
                } else if held_here > 0 {
                    f.conclude(Verdict::PerSourceLimit, Confidence::High);
                    f.evidence.push(Evidence::ListenerDropThisAddress);
                } else {
                    // Nothing held from this address here: an access rule at the listener (a proxy's
                    // ACL), or a per-address limit held full by others behind the same address.
                    f.conclude(Verdict::AccessDenied, Confidence::Medium);
                    f.evidence.push(Evidence::AtTheListener { server_delay_us });
                }
            } else if held > 0 {
                // A server-wide table (MaxStartups, dropbear's MAX_UNAUTH_CLIENTS) filled, at least in
                // part, from this host.
                f.conclude(Verdict::Maxstartups, Confidence::High);
                if cx.second_all_refused {
                    f.evidence.push(Evidence::RefusedEverywhere);
                }
            } else {
                let confidence = if cx.second_all_refused { Confidence::Medium } else { Confidence::Low };
                f.conclude(Verdict::ListenerDrop, confidence);
                f.evidence.push(Evidence::ListenerDropEverywhere { server_delay_us });
            }
        }
        DelayClass::SessionProcess => {
            if cx.per_source_shown(f) {
                f.conclude(Verdict::AccessDenied, Confidence::Medium);
                f.evidence.push(Evidence::SessionProcessRefusesThisAddress { server_delay_us });
            } else {
                let confidence = if cx.second_all_refused { Confidence::Medium } else { Confidence::Low };
                f.conclude(Verdict::ServerError, confidence);
                f.evidence.push(Evidence::SessionProcessDies { server_delay_us });
            }
        }
        DelayClass::Other => {
            f.conclude(Verdict::Intermittent, Confidence::Low);
            f.evidence.push(Evidence::UnusualZeroByteClose { median_us });
        }
    }
    if class != DelayClass::WrappersDelay {
        cx.settle(f);
    }
}

/// The verdict when unloaded probes all got banners: what did the load experiment show? Every
/// probe counts: a connect refused or unanswered under load is a failure like a refusal after accept.
fn decide_loaded(facts: &Facts, f: &mut Finding, software: Option<Software>) {
    let loads: Vec<&Experiment> = facts.of(ExperimentKind::Load).collect();
    f.evidence.push(Evidence::UnloadedBanners { probes: facts.unloaded().len(), software });
    if let Some(mux) = multiplexer(facts) {
        f.evidence.push(mux);
    }
    let failed = |p: &ExperimentProbe| p.refused() || p.connect_failed();
    // The first load at which anything failed: our probes, our attempts to hold more, or the
    // fresh address probing at the same load (one more sample of the same server count).
    let refused_level = facts
        .experiments
        .iter()
        .filter(|e| e.kind == ExperimentKind::Load || (e.kind == ExperimentKind::Source && e.held > 0))
        .find(|e| e.hold_refused > 0 || e.probes.iter().any(failed));
    let timeouts =
        loads.iter().flat_map(|e| &e.probes).filter(|p| p.outcome() == Outcome::BannerTimeout).count();
    let max_held = loads.iter().map(|e| e.held).max().unwrap_or(0);
    let Some(level) = refused_level else {
        if timeouts > 0 {
            f.conclude(Verdict::Overloaded, Confidence::Medium);
            f.evidence.push(Evidence::LoadTimeouts { timeouts });
            cite_holders(facts, f);
            return;
        }
        f.conclude(
            Verdict::Ok,
            if max_held >= CONFIDENT_LOAD { Confidence::High } else { Confidence::Medium },
        );
        // Said only when every load probe got a banner: nothing failed and nothing timed out here.
        if max_held > 0 && loads.iter().flat_map(|e| &e.probes).all(|p| p.served()) {
            f.evidence.push(Evidence::ServedUnderLoad { max_held });
        }
        // What so many banners rule out: random drops at some rate or more, not any drop at all.
        let all: Vec<&ExperimentProbe> = facts.experiments.iter().flat_map(|e| &e.probes).collect();
        if all.iter().all(|p| p.served()) {
            let banners = all.len() as u32;
            f.evidence.push(Evidence::NoDropsSeen {
                banners,
                ruled_out_pct: persource::pct_up(persource::drops_ruled_out(banners)),
                error_rate_pct: persource::error_rate_pct(),
            });
        }
        if max_held < CONFIDENT_LOAD {
            f.notes.push(Note::LoadNotConfident { max_held });
        }
        return;
    };
    let refused: Vec<&ExperimentProbe> = level.probes.iter().filter(|p| p.refused()).collect();
    f.evidence.push(Evidence::LoadRefusals {
        held: level.held,
        from_probing_source: level.held_from_probing_source,
        tally: level.tally(),
    });
    if level.hold_refused > 0 {
        f.evidence.push(Evidence::HoldRefused { attempts: level.hold_refused });
    }
    if let Some(message) = refused.iter().find_map(|p| p.message()) {
        f.evidence.push(Evidence::RefusalsSaid { message: message.to_string() });
    }
    let fresh: Vec<&ExperimentProbe> =
        facts.of(ExperimentKind::Source).filter(|e| e.held > 0).flat_map(|e| &e.probes).collect();
    let fresh_banner = !fresh.is_empty() && fresh.iter().all(|p| p.outcome() == Outcome::Banner);
    let after: Vec<&ExperimentProbe> = facts.probes(ExperimentKind::Persistence).collect();
    let cleared = !after.is_empty() && after.iter().all(|p| p.outcome() == Outcome::Banner);
    if !fresh.is_empty() {
        f.evidence.push(Evidence::FreshAddressUnderLoad { tally: Tally::of(fresh.iter().copied()) });
    }
    if !after.is_empty() {
        f.evidence.push(Evidence::AfterRelease { tally: Tally::of(after.iter().copied()) });
    }
    // A penalty needs a server that has them, and outlives our held connections.
    let penalties_possible = software.is_some_and(Software::has_penalties)
        || refused.iter().any(|p| p.refusal() == Some(KnownRefusal::NotAllowedAtThisTime));
    if penalties_possible && fresh_banner && !after.is_empty() && !cleared {
        f.conclude(Verdict::Penalized, Confidence::Medium);
        f.evidence.push(Evidence::PenaltyOutlivedLoad);
        f.notes.push(Note::OwnProbesDuringLoad);
        return;
    }
    if level.held_from_probing_source && fresh_banner && cleared {
        // A per-source limit refuses every probe from the address that holds; a global one drops at
        // random from both: the test decides, or both are named.
        let (here, elsewhere) = loaded_counts(facts, level.held);
        match persource::split(here, elsewhere) {
            Split::PerSource { p } => {
                f.conclude(Verdict::PerSourceLimit, Confidence::Medium);
                f.evidence.push(Evidence::PerSourceUnderLoad { held: level.held });
                f.evidence.push(shown(here, elsewhere, p));
                return;
            }
            Split::Untold { p } => f.evidence.push(untold(here, elsewhere, p)),
            Split::Global | Split::NoRefusals => {}
        }
    }
    let others_hold = facts.host_connections.iter().any(|h| h.count > 0);
    if cleared && !others_hold && !level.probes.iter().any(|p| p.connect_failed()) {
        // Refused only while diagnose itself held connections, served again once it let them go:
        // nothing refuses anyone now; the limit is where it is.
        f.conclude(Verdict::Ok, Confidence::High);
        f.evidence.push(Evidence::RefusalsBeginAt { held: level.held });
        return;
    }
    f.conclude(Verdict::Maxstartups, if cleared { Confidence::High } else { Confidence::Medium });
    f.evidence.push(Evidence::MaxStartupsUnderLoad { held: level.held, cleared });
    if !after.is_empty() && !cleared {
        f.notes.push(Note::RefusalsPersisted);
    }
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
            error_rate_pct: 1,
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
                source: "default".into(),
                server_delay_us: 5_011_800,
                server_delay_range_us: (5_009_800, 5_019_800),
                class: DelayClass::WrappersDelay,
            }),
            "{:?}",
            f.evidence
        );
        assert!(f.evidence.contains(&Evidence::WrappersDelay { median_us: 5_012_000 }), "{:?}", f.evidence);
        assert_eq!(f.remedy, [Remedy::AllowInHostsAllow { client: Some("127.0.0.1".parse().unwrap()) }]);
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
            exp(ExperimentKind::Source, 0, vec![banner("OpenSSH_9.2p1"); 7]),
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
            exp(ExperimentKind::Source, 0, vec![banner("OpenSSH_9.2p1"); 7]),
        ]));
        assert_eq!((f.verdict, f.confidence), (Verdict::PerSourceLimit, Confidence::High));
        assert!(f.evidence.contains(&Evidence::ServedElsewhereWithoutPenalties { software: OPENSSH_9_2 }));
        // 3 of 3 refused here, 7 of 7 served there: p = 1/C(10,3), under the 1 % error rate.
        assert!(f.evidence.contains(&Evidence::PerSourceShown {
            here: Count::new(3, 3),
            elsewhere: Count::new(0, 7),
            p_per_mille: 8,
            error_rate_pct: 1
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
            error_rate_pct: 1
        }));

        let quick = vec![closed_after(300), reset_after(300), closed_after(300)];
        let f = decide(&facts(vec![
            exp(ExperimentKind::Baseline, 0, quick),
            exp(ExperimentKind::Source, 0, vec![banner("dropbear_2022.83"); 7]),
        ]));
        assert_eq!(f.verdict, Verdict::PerSourceLimit);
        assert!(f.evidence.contains(&Evidence::DropbearPerSourceClose), "{:?}", f.evidence);
        assert_eq!(f.remedy, [Remedy::DropbearMaxUnauthPerIp]);
    }

    #[test]
    fn penalties_on_9_8_plus() {
        let f = decide(&facts(vec![
            exp(ExperimentKind::Baseline, 0, vec![refusal(NOT_ALLOWED); 3]),
            exp(ExperimentKind::Source, 0, vec![banner("OpenSSH_10.0p2"); 7]),
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
                // 9 banners rule out drops of 41 % or more (0.59^9 < 1 %), not MaxStartups' 30 %.
                Evidence::NoDropsSeen { banners: 9, ruled_out_pct: 41, error_rate_pct: 1 }
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
                exp(ExperimentKind::Source, 0, vec![banner("OpenSSH_10.0p2"); 7]),
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
            exp(ExperimentKind::Source, 0, vec![banner("OpenSSH_9.2p1"); 7]),
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
}
