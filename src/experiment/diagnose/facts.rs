//! The facts diagnose gathers: experiments of probes, each probe one [`ProbeRecord`] with the
//! experiment's context. Data only; [`super::decide()`] reads them, the report writes them.

use crate::evidence::{End, ProbeOrder, Timings};
use crate::experiment::sources::Source;
use crate::ident::IdentLine;
use crate::outcome::{KnownRefusal, Outcome};
use crate::record::ProbeRecord;
use crate::server::Software;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// One probe of an experiment: its [`ProbeRecord`] (the observation and its classification) and the
/// experiment's context when it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExperimentProbe {
    /// What the probe observed and what it means.
    pub record: ProbeRecord,
    /// Where it came from: an address asked for, or the kernel's choice.
    pub source: Source,
    /// Our held connections open when it connected.
    pub held: u32,
}

impl ExperimentProbe {
    /// The outcome.
    pub fn outcome(&self) -> Outcome {
        self.record.outcome()
    }

    /// Microseconds from connect to the end.
    pub fn closed_us(&self) -> Option<u64> {
        self.record.observation.timings.closed
    }

    /// Our address as connected.
    pub fn local(&self) -> Option<SocketAddr> {
        self.record.observation.local
    }

    /// What the server said instead of an ident.
    pub fn message(&self) -> Option<&str> {
        self.record.classification.message.as_deref()
    }

    /// A recognised refusal.
    pub fn refusal(&self) -> Option<KnownRefusal> {
        self.record.classification.refusal
    }

    /// The server's `softwareversion`, from its ident line.
    pub(crate) fn software_version(&self) -> Option<&str> {
        self.record.banner().map(|b| b.software.as_str())
    }

    /// Whether the server accepted and then refused, silently or not.
    pub fn refused(&self) -> bool {
        self.outcome().is_refusal_after_accept()
    }

    /// The kind of answer: a banner, a refusal after accept, or the outcome itself.
    pub fn kind(&self) -> Outcome {
        if self.refused() {
            Outcome::ClosedBeforeBanner
        } else {
            self.outcome()
        }
    }

    /// A refusal with no byte before the close (FIN or RST): never one that sent bytes, even a
    /// partial ident.
    pub(crate) fn zero_byte_refusal(&self) -> bool {
        matches!(self.outcome(), Outcome::ClosedBeforeBanner | Outcome::ResetBeforeBanner)
            && self.record.observation.received.is_empty()
    }

    /// The connect itself failed: RST or ICMP to the SYN, or no answer to it.
    pub fn connect_failed(&self) -> bool {
        matches!(self.outcome(), Outcome::Refused | Outcome::ConnectTimeout | Outcome::Unreachable)
    }

    /// Whether the probe got a banner.
    pub fn served(&self) -> bool {
        self.outcome() == Outcome::Banner
    }

    /// Microseconds from connect to the server's ident line, when one came.
    pub fn ident_us(&self) -> Option<u64> {
        self.served().then_some(self.record.observation.timings.ident).flatten()
    }

    /// The order the probe used.
    pub fn order(&self) -> ProbeOrder {
        self.record.observation.order
    }

    /// How long the server itself took to close, less the round trip (the handshake's time, twice):
    /// the delay to the close, not to a first byte, so a server that sends bytes and then resets
    /// is placed by its reset.
    pub fn server_delay_us(&self) -> Option<u64> {
        let t = self.record.observation.timings;
        Some(t.closed?.saturating_sub(2 * t.connected?))
    }

    /// The connect round trip, in µs: how long the handshake took.
    pub fn connect_us(&self) -> Option<u64> {
        self.record.observation.timings.connected
    }
}

/// The JSON of one [`ExperimentProbe`]: the probe JSONL's fields, by the same names and with the
/// same meaning (`outcome`, `order`, `local`, `end`, `timings_us`, `bytes_len`, `banner`, `message`,
/// `refusal`: see `report::probe::JsonRecord`), and the experiment's own: `source`, `held` and,
/// for a refusal after accept, `server_delay_us`.
#[derive(Serialize)]
struct ExperimentProbeJson<'a> {
    outcome: Outcome,
    order: ProbeOrder,
    source: Source,
    #[serde(skip_serializing_if = "Option::is_none")]
    local: Option<SocketAddr>,
    held: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    end: Option<End>,
    timings_us: Timings,
    bytes_len: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_delay_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    banner: Option<&'a IdentLine>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal: Option<KnownRefusal>,
}

impl Serialize for ExperimentProbe {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let obs = &self.record.observation;
        ExperimentProbeJson {
            outcome: self.outcome(),
            order: obs.order,
            source: self.source,
            local: obs.local,
            held: self.held,
            end: obs.end,
            timings_us: obs.timings,
            bytes_len: obs.received.len(),
            server_delay_us: self.refused().then(|| self.server_delay_us()).flatten(),
            banner: self.record.classification.banner.as_ref(),
            message: self.message(),
            refusal: self.refusal(),
        }
        .serialize(serializer)
    }
}

/// Which experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, strum::IntoStaticStr)]
#[serde(into = "&'static str")]
#[strum(serialize_all = "snake_case")]
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
    /// One probe from a blocked address after a wait with nothing held: a rate limit has let a
    /// new connection through by then, a ban has not.
    Recheck,
    /// Probes the time limit (`--max-duration`) cut in flight, with what each saw until then. Listed
    /// after the decision, which never reads them: an unfinished probe is no evidence.
    Cut,
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
    pub probes: Vec<ExperimentProbe>,
    /// Attempts to hold a connection that the server refused while we filled up to `held`.
    #[serde(skip_serializing_if = "is_zero")]
    pub hold_refused: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Experiment {
    /// An experiment of `kind` at `held` connections, none of them from the probing address, none of
    /// our hold attempts refused.
    pub fn new(kind: ExperimentKind, held: u32, probes: Vec<ExperimentProbe>) -> Experiment {
        Experiment { kind, held, held_from_probing_source: false, probes, hold_refused: 0 }
    }

    /// Its probes' outcomes, counted.
    pub fn tally(&self) -> Tally {
        Tally::of(&self.probes)
    }
}

/// Outcomes counted: `{banner: 3, server_refusal: 2}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Tally(BTreeMap<Outcome, u32>);

impl Tally {
    /// Counts the outcomes of `probes`.
    pub fn of<'a>(probes: impl IntoIterator<Item = &'a ExperimentProbe>) -> Tally {
        let mut counts = BTreeMap::new();
        for p in probes {
            *counts.entry(p.outcome()).or_default() += 1;
        }
        Tally(counts)
    }

    /// How many probes.
    pub fn total(&self) -> u32 {
        self.0.values().sum()
    }

    /// Each outcome seen and how often, in [`Outcome`] order.
    pub fn counts(&self) -> impl Iterator<Item = (Outcome, u32)> + '_ {
        self.0.iter().map(|(&o, &n)| (o, n))
    }
}

/// Everything gathered, in the order it was gathered.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Facts {
    /// The experiments.
    pub experiments: Vec<Experiment>,
    /// Whether a second source address was available.
    pub second_source: bool,
    /// Whether the budget stopped an experiment early.
    pub budget_exhausted: bool,
    /// Established connections from this host to the server that are not diagnose's own, by owner:
    /// unauthenticated ones count towards the server's limits like anyone's.
    pub host_connections: Vec<HostHolder>,
    /// Why probing stopped before any probe could be made, when it did.
    pub not_tested: Option<NotTestedReason>,
    /// The per-address cap (`--max-per-address`) kept an experiment from running.
    pub capped: bool,
    /// How long diagnose waited, with nothing held, before the [`ExperimentKind::Recheck`] probe.
    pub recheck_wait_ms: u64,
    /// What the server logged while diagnose ran (`--server-log`): `None` when no log was given.
    pub server_log: Option<Vec<crate::serverlog::LogLine>>,
}

/// Connections to the server held by one process of this host from one local address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostHolder {
    /// The owning process, when it could be found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Its name (`comm`), when it could be found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
    /// The local address the connections come from.
    pub local: IpAddr,
    /// How many.
    pub count: u32,
}

impl From<&crate::hostconns::Owner> for HostHolder {
    fn from(owner: &crate::hostconns::Owner) -> HostHolder {
        HostHolder {
            pid: owner.process.as_ref().map(|p| p.pid),
            process: owner.process.as_ref().map(|p| p.name.clone()),
            local: owner.local,
            count: owner.count,
        }
    }
}

/// Why no probe was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotTestedReason {
    /// The time limit (`--max-duration`) ended while waiting for the probe budget.
    TimeLimit,
    /// The time limit (`--max-duration`) cut the probes in flight before any finished (a server that
    /// holds connections without a word).
    TimeLimitCut,
    /// The per-source budget allowed no probe.
    Budget,
}

impl Facts {
    /// Our local ports, as the server saw them: how its log lines are matched to our probes.
    pub fn our_ports(&self) -> std::collections::HashSet<u16> {
        self.experiments.iter().flat_map(|e| &e.probes).filter_map(|p| p.local()).map(|a| a.port()).collect()
    }

    /// The experiments of `kind`.
    pub fn of(&self, kind: ExperimentKind) -> impl Iterator<Item = &Experiment> {
        self.experiments.iter().filter(move |e| e.kind == kind)
    }

    /// The probes of every experiment of `kind`.
    pub fn probes(&self, kind: ExperimentKind) -> impl Iterator<Item = &ExperimentProbe> {
        self.of(kind).flat_map(|e| e.probes.iter())
    }

    /// Probes from the probing address with nothing held: baseline and determinism.
    pub fn unloaded(&self) -> Vec<&ExperimentProbe> {
        self.probes(ExperimentKind::Baseline).chain(self.probes(ExperimentKind::Determinism)).collect()
    }

    /// Every probe from the probing address, in the order made (baseline, determinism, load,
    /// persistence, recheck): the address's story through the run.
    pub(crate) fn probing_timeline(&self) -> Vec<&ExperimentProbe> {
        self.experiments.iter().filter(|e| e.kind != ExperimentKind::Source).flat_map(|e| &e.probes).collect()
    }

    /// The server software, from any banner.
    pub fn software(&self) -> Option<Software> {
        self.experiments.iter().flat_map(|e| &e.probes).find_map(|p| p.record.banner()).map(Software::of)
    }
}

/// Probes and experiments built from observations, for tests of the rules and the report.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    pub(crate) use crate::evidence::{Connect, End, Observation, ProbeOrder, Timings};

    /// A probe from the kernel's choice of address (127.0.0.1) that ended `closed_us` after connecting.
    pub(crate) fn probe(
        connect: Connect,
        received: &[u8],
        end: Option<End>,
        closed_us: u64,
    ) -> ExperimentProbe {
        let established = connect == Connect::Established;
        let observation = Observation {
            remote: "127.0.0.1:22".parse().unwrap(),
            local: Some("127.0.0.1:40000".parse().unwrap()),
            order: ProbeOrder::WaitForBanner,
            connect,
            end,
            timings: Timings {
                connected: established.then_some(100),
                ident: received.starts_with(b"SSH-").then_some(closed_us),
                closed: Some(closed_us),
                ..Timings::default()
            },
            received: bytes::Bytes::copy_from_slice(received),
            sent_ident: false,
            packets: Vec::new(),
            kexinit: None,
            ident_scan: None,
        };
        ExperimentProbe { record: ProbeRecord::new(observation), source: Source::KernelChoice, held: 0 }
    }

    /// A probe whose observation classifies as `outcome`, with nothing received.
    pub(crate) fn rec(outcome: Outcome) -> ExperimentProbe {
        let p = match outcome {
            Outcome::Refused => probe(Connect::Refused, b"", None, 300),
            Outcome::ConnectTimeout => probe(Connect::TimedOut, b"", None, 300),
            Outcome::Unreachable => probe(Connect::Unreachable { detail: "no route".into() }, b"", None, 300),
            Outcome::ClosedBeforeBanner => probe(Connect::Established, b"", Some(End::Fin), 300),
            Outcome::ResetBeforeBanner => probe(Connect::Established, b"", Some(End::Rst), 300),
            Outcome::BannerTimeout => probe(Connect::Established, b"", Some(End::Timeout), 300),
            other => panic!("rec({other}) needs bytes: use banner or refusal"),
        };
        assert_eq!(p.outcome(), outcome);
        p
    }

    pub(crate) fn banner(sw: &str) -> ExperimentProbe {
        probe(Connect::Established, format!("SSH-2.0-{sw}\r\n").as_bytes(), Some(End::WeClosed), 300)
    }

    pub(crate) fn closed_after(us: u64) -> ExperimentProbe {
        probe(Connect::Established, b"", Some(End::Fin), us)
    }

    pub(crate) fn reset_after(us: u64) -> ExperimentProbe {
        probe(Connect::Established, b"", Some(End::Rst), us)
    }

    /// The server sent `line` and closed.
    pub(crate) fn refusal(line: &str) -> ExperimentProbe {
        probe(Connect::Established, format!("{line}\r\n").as_bytes(), Some(End::Fin), 300)
    }

    pub(crate) fn exp(kind: ExperimentKind, held: u32, probes: Vec<ExperimentProbe>) -> Experiment {
        Experiment::new(kind, held, probes)
    }

    /// Facts with a second source address available.
    pub(crate) fn facts(experiments: Vec<Experiment>) -> Facts {
        Facts { experiments, second_source: true, ..Facts::default() }
    }

    /// A probe connected after `connect_us` that closed with zero bytes `closed_us` after the start.
    pub(crate) fn closed_at(connect_us: u64, closed_us: u64) -> ExperimentProbe {
        let mut p = closed_after(closed_us);
        p.record.observation.timings.connected = Some(connect_us);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    #[test]
    fn a_probe_serializes_with_the_probe_jsonl_names_and_its_experiment_context() {
        let mut p = refusal("Exceeded MaxStartups");
        p.held = 3;
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "outcome": "server_refusal", "order": "wait_for_banner", "source": "default",
                "local": "127.0.0.1:40000", "held": 3, "end": "fin",
                "timings_us": {"connected": 100, "closed": 300}, "bytes_len": 22,
                "server_delay_us": 100, "message": "Exceeded MaxStartups", "refusal": "exceeded_max_startups"
            })
        );
        let p = ExperimentProbe {
            source: Source::Address("127.77.0.1".parse().unwrap()),
            ..banner("OpenSSH_9.2p1")
        };
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(
            (&json["source"], &json["banner"]["software"], &json["timings_us"]["ident"]),
            (&"127.77.0.1".into(), &"OpenSSH_9.2p1".into(), &300.into())
        );
    }

    #[test]
    fn the_software_comes_from_the_first_banner() {
        let f = facts(vec![exp(
            ExperimentKind::Baseline,
            0,
            vec![closed_after(300), banner("dropbear_2022.83")],
        )]);
        assert_eq!(f.software(), Some(Software::Dropbear));
        assert_eq!(Tally::of(&f.experiments[0].probes).total(), 2);
    }
}
