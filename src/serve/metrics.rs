//! The Prometheus side: one probe's result as metrics (`/probe`), and the exporter's own counters
//! (`/metrics`), both encoded by `prometheus-client` in the OpenMetrics text format.
//!
//! Names follow blackbox_exporter where it has one (`probe_success`, `probe_duration_seconds`,
//! `probe_ip_protocol`, `probe_dns_lookup_time_seconds`), so dashboards and alerts written for it
//! keep working; everything it cannot say is under `sshprobe_`:
//!
//! | metric | what it says |
//! |---|---|
//! | `sshprobe_outcome{outcome}` | 1 for this probe's outcome, 0 for every other outcome name |
//! | `sshprobe_phase_seconds{phase}` | `connect` (SYN to handshake), `first_byte` (handshake to the server's first byte), `ident` (first byte to the complete ident line): each phase that happened |
//! | `sshprobe_refusal_delay_seconds` | for a refusal after accept: how long the server took to close (≈5 s for Debian's TCP wrappers, under 1 ms for a MaxStartups drop) |
//! | `sshprobe_refusal_info{message,meaning}` | the text a refusing server sent, and what it means |
//! | `sshprobe_banner_info{proto,software,comments}` | the server's identification line |
//! | `sshprobe_cached`, `sshprobe_result_age_seconds` | 1 when this scrape reused another scrape's probe, and that probe's age |
//! | `sshprobe_kex_strict`, `sshprobe_terrapin_exposed`, `sshprobe_post_quantum_kex` | with a module's `kex = true`: 1 or 0, from the server's KEXINIT |
//! | `sshprobe_kex_info{kex,host_key}` | with `kex = true`: the server's preferred key exchange and host-key algorithm |
//! | `sshprobe_kexinit_error_info{error}` | with `kex = true`, when no KEXINIT could be read: why (`kexinit::KexError::name`) |
//!
//! Every label value from a server passes through [`label_value`]: control characters removed,
//! at most [`LABEL_CHARS`] characters; the encoder then escapes `\`, `"` and newlines.

use crate::evidence::Timings;
use crate::outcome::Outcome;
use crate::record::ProbeRecord;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// The content type of both answers.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The most characters of a label value taken from a server's bytes.
pub const LABEL_CHARS: usize = 128;

/// A label value made from text a server sent: control characters removed and at most
/// [`LABEL_CHARS`] characters, the cut marked with `…`.
pub fn label_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(LABEL_CHARS * 4));
    for (n, c) in text.chars().filter(|c| !c.is_control()).enumerate() {
        if n == LABEL_CHARS {
            out.push('…');
            break;
        }
        out.push(c);
    }
    out
}

/// What one probe found, kept to answer later scrapes within the minimum interval.
#[derive(Debug, Clone)]
pub(crate) struct Probed {
    /// What the probe observed, and what it means.
    pub record: ProbeRecord,
    /// How long the probe took, from the first address lookup to its end.
    pub duration: Duration,
}

/// What the scrape itself adds to a probe's result.
#[derive(Debug, Clone, Copy)]
pub struct Scrape {
    /// How long resolving the target took (zero for an address).
    pub dns: Duration,
    /// `Some(age)` when the result is another scrape's probe, started `age` ago.
    pub reused: Option<Duration>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: &'static str,
}

/// A gauge holding seconds.
type Seconds = Gauge<f64, AtomicU64>;

fn gauge(reg: &mut Registry, name: &str, help: &str, value: f64) {
    let g = Seconds::default();
    g.set(value);
    reg.register(name, help, g);
}

/// The `/probe` answer: `probed`'s metrics, as this scrape sees them.
pub(crate) fn render_probe(probed: &Probed, scrape: Scrape) -> String {
    let c = &probed.record.classification;
    let timings = &probed.record.observation.timings;
    let mut reg = Registry::default();
    gauge(
        &mut reg,
        "probe_success",
        "Whether the server sent an SSH-2 identification line",
        f64::from(u8::from(c.outcome.is_success())),
    );
    gauge(
        &mut reg,
        "probe_duration_seconds",
        "How long the probe took, name lookup included",
        (scrape.dns + probed.duration).as_secs_f64(),
    );
    gauge(
        &mut reg,
        "probe_dns_lookup_time_seconds",
        "How long resolving the target took",
        scrape.dns.as_secs_f64(),
    );
    gauge(
        &mut reg,
        "probe_ip_protocol",
        "The IP version probed: 4 or 6",
        if probed.record.observation.remote.is_ipv4() { 4.0 } else { 6.0 },
    );

    let outcomes = Family::<OutcomeLabel, Gauge>::default();
    for o in Outcome::ALL {
        outcomes.get_or_create(&OutcomeLabel { outcome: o.name() }).set(i64::from(o == c.outcome));
    }
    reg.register("sshprobe_outcome", "1 for the probe's outcome, 0 for every other outcome", outcomes);

    let phases = Family::<PhaseLabel, Seconds>::default();
    for (phase, seconds) in phase_seconds(timings) {
        phases.get_or_create(&PhaseLabel { phase }).set(seconds);
    }
    reg.register(
        "sshprobe_phase_seconds",
        "Seconds per phase: connect (SYN to handshake), first_byte (handshake to the first byte), ident (first byte to the complete ident line)",
        phases,
    );

    if c.outcome.is_refusal_after_accept() {
        if let Some(delay) = probed.record.server_delay_us() {
            gauge(
                &mut reg,
                "sshprobe_refusal_delay_seconds",
                "How long the server itself took to refuse: its close or first byte after accepting, less the \
                 connect round trip",
                micros(delay),
            );
        }
    }
    if c.outcome == Outcome::ServerRefusal {
        let meaning = c.refusal.map_or("a refusal text sshprobe does not recognise", |r| r.meaning());
        let message = c.message.as_deref().unwrap_or("");
        reg.register(
            "sshprobe_refusal",
            "What the server said instead of an identification line, and what it means",
            Info::new(vec![("message", label_value(message)), ("meaning", meaning.to_string())]),
        );
    }
    if let Some(banner) = &c.banner {
        reg.register(
            "sshprobe_banner",
            "The server's identification line",
            Info::new(vec![
                ("proto", label_value(&banner.proto)),
                ("software", label_value(&banner.software)),
                ("comments", label_value(banner.comments.as_deref().unwrap_or(""))),
            ]),
        );
    }
    match &probed.record.observation.kexinit {
        Some(crate::kexinit::KexRead::Kexinit(k)) => {
            let flag = |b: bool| f64::from(u8::from(b));
            gauge(
                &mut reg,
                "sshprobe_kex_strict",
                "Whether the server does strict key exchange (kex-strict-s-v00@openssh.com, the Terrapin fix)",
                flag(k.strict_kex()),
            );
            gauge(
                &mut reg,
                "sshprobe_terrapin_exposed",
                "Whether the server offers ChaCha20-Poly1305 or CBC with EtM without strict key exchange \
                 (CVE-2023-48795)",
                flag(k.terrapin_exposed()),
            );
            gauge(
                &mut reg,
                "sshprobe_post_quantum_kex",
                "Whether the server offers a post-quantum key exchange (mlkem768x25519-sha256, sntrup761x25519-sha512)",
                flag(k.post_quantum()),
            );
            // Names are printable ASCII (checked by the parser); capped like every server text.
            reg.register(
                "sshprobe_kex",
                "The server's preferred key exchange and host-key algorithm, from its KEXINIT",
                Info::new(vec![
                    ("kex", label_value(k.preferred_kex().unwrap_or(""))),
                    ("host_key", label_value(k.server_host_key_algorithms.first().unwrap_or(""))),
                ]),
            );
        }
        Some(crate::kexinit::KexRead::Failed(e)) => reg.register(
            "sshprobe_kexinit_error",
            "Why the server's KEXINIT could not be read",
            Info::new(vec![("error", e.name().to_string())]),
        ),
        None => {}
    }
    gauge(
        &mut reg,
        "sshprobe_cached",
        "1 when this scrape reused the result of an earlier or concurrent probe",
        f64::from(u8::from(scrape.reused.is_some())),
    );
    gauge(
        &mut reg,
        "sshprobe_result_age_seconds",
        "How long ago the probe behind this result started",
        scrape.reused.unwrap_or_default().as_secs_f64(),
    );
    encoded(&reg)
}

/// The outcome of a scrape whose target name did not resolve (no probe made): beside the probe
/// outcomes in `sshprobe_outcome` and `sshprobe_exporter_probes_total`, so a dashboard sees a
/// name that stopped resolving as such, not as a missing series.
pub(crate) const RESOLVE_ERROR: &str = "resolve_error";

/// The `/probe` answer for a target whose name did not resolve: no probe was made.
pub(crate) fn render_unresolved(dns: Duration) -> String {
    let mut reg = Registry::default();
    gauge(&mut reg, "probe_success", "Whether the server sent an SSH-2 identification line", 0.0);
    gauge(
        &mut reg,
        "probe_duration_seconds",
        "How long the probe took, name lookup included",
        dns.as_secs_f64(),
    );
    gauge(&mut reg, "probe_dns_lookup_time_seconds", "How long resolving the target took", dns.as_secs_f64());
    let outcomes = Family::<OutcomeLabel, Gauge>::default();
    for o in Outcome::ALL {
        let _ = outcomes.get_or_create(&OutcomeLabel { outcome: o.name() });
    }
    outcomes.get_or_create(&OutcomeLabel { outcome: RESOLVE_ERROR }).set(1);
    reg.register("sshprobe_outcome", "1 for the probe's outcome, 0 for every other outcome", outcomes);
    encoded(&reg)
}

/// Seconds of each phase that happened, from a probe's timings.
fn phase_seconds(t: &Timings) -> Vec<(&'static str, f64)> {
    let mut phases = Vec::with_capacity(3);
    if let Some(connected) = t.connected {
        phases.push(("connect", micros(connected)));
        if let Some(first) = t.first_byte {
            phases.push(("first_byte", micros(first.saturating_sub(connected))));
            if let Some(ident) = t.ident {
                phases.push(("ident", micros(ident.saturating_sub(first))));
            }
        }
    }
    phases
}

fn micros(us: u64) -> f64 {
    us as f64 / 1e6
}

fn encoded(reg: &Registry) -> String {
    let mut out = String::with_capacity(2048);
    // Writing into a String cannot fail.
    let _ = encode(&mut out, reg);
    out
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Why a scrape was not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Refusal {
    /// 400: a bad query.
    BadRequest,
    /// 403: a target outside `--allow`.
    Forbidden,
    /// 503: too many probes in flight.
    Busy,
}

impl Refusal {
    fn name(self) -> &'static str {
        self.into()
    }
}

/// The exporter's own counters, for `/metrics`.
#[derive(Debug)]
pub(crate) struct ExporterMetrics {
    registry: Registry,
    probes: Family<OutcomeLabel, Counter>,
    refused: Family<ReasonLabel, Counter>,
    reused: Counter,
    in_flight: Gauge,
    diagnoses: Counter,
}

impl Default for ExporterMetrics {
    fn default() -> ExporterMetrics {
        let mut registry = Registry::default();
        let probes = Family::<OutcomeLabel, Counter>::default();
        for o in Outcome::ALL {
            let _ = probes.get_or_create(&OutcomeLabel { outcome: o.name() });
        }
        let _ = probes.get_or_create(&OutcomeLabel { outcome: RESOLVE_ERROR });
        let refused = Family::<ReasonLabel, Counter>::default();
        for r in [Refusal::BadRequest, Refusal::Forbidden, Refusal::Busy] {
            let _ = refused.get_or_create(&ReasonLabel { reason: r.name() });
        }
        let (reused, in_flight, diagnoses) = (Counter::default(), Gauge::default(), Counter::default());
        registry.register("sshprobe_exporter_probes", "Probes made, by outcome", probes.clone());
        registry.register(
            "sshprobe_exporter_scrapes_refused",
            "Scrapes answered without a probe: 400, 403, 503",
            refused.clone(),
        );
        registry.register(
            "sshprobe_exporter_results_reused",
            "Scrapes answered with another scrape's probe (min-interval and shared probes)",
            reused.clone(),
        );
        registry.register("sshprobe_exporter_probes_in_flight", "Probes running now", in_flight.clone());
        registry.register("sshprobe_exporter_diagnoses", "Diagnoses run for /diagnose", diagnoses.clone());
        ExporterMetrics { registry, probes, refused, reused, in_flight, diagnoses }
    }
}

impl ExporterMetrics {
    /// Counts a probe made.
    pub fn probed(&self, outcome: Outcome) {
        self.probes.get_or_create(&OutcomeLabel { outcome: outcome.name() }).inc();
    }

    /// Counts a scrape whose target name did not resolve: no probe was made.
    pub(crate) fn unresolved(&self) {
        self.probes.get_or_create(&OutcomeLabel { outcome: RESOLVE_ERROR }).inc();
    }

    /// Counts a scrape not served.
    pub fn refused(&self, why: Refusal) {
        self.refused.get_or_create(&ReasonLabel { reason: why.name() }).inc();
    }

    /// Counts a result reused.
    pub fn reused(&self) {
        self.reused.inc();
    }

    /// Counts a diagnosis run.
    pub fn diagnosed(&self) {
        self.diagnoses.inc();
    }

    /// The in-flight gauge, raised while the returned guard lives.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// The `/metrics` answer.
    pub fn render(&self) -> String {
        encoded(&self.registry)
    }
}

/// Lowers the in-flight gauge when dropped (also when a probe is cancelled).
#[derive(Debug)]
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::{Connect, End, Observation, ProbeOrder};
    use bytes::Bytes;

    fn probed(bytes: &'static [u8], end: End) -> Probed {
        let obs = Observation {
            remote: "127.0.0.1:22".parse().unwrap(),
            local: None,
            order: ProbeOrder::WaitForBanner,
            connect: Connect::Established,
            end: Some(end),
            timings: Timings {
                connected: Some(100),
                first_byte: Some(300),
                ident: Some(350),
                closed: Some(400),
            },
            received: Bytes::from_static(bytes),
            sent_ident: false,
            packets: Vec::new(),
            kexinit: None,
            ident_scan: None,
        };
        Probed { record: ProbeRecord::new(obs), duration: Duration::from_micros(400) }
    }

    fn fresh() -> Scrape {
        Scrape { dns: Duration::ZERO, reused: None }
    }

    #[test]
    fn a_kexinit_gives_its_flags_and_preferences() {
        const CAPTURE: &[u8] = include_bytes!("../../tests/fixtures/kexinit/openssh10.bin");
        let mut p = probed(CAPTURE, End::WeClosed);
        let after = &CAPTURE[CAPTURE.iter().position(|&b| b == b'\n').unwrap() + 1..];
        p.record.observation.kexinit =
            Some(crate::kexinit::KexRead::from_result(crate::kexinit::parse_after_ident(after, 8192)));
        let text = render_probe(&p, fresh());
        assert!(text.contains("sshprobe_kex_strict 1.0\n"), "{text}");
        assert!(text.contains("sshprobe_terrapin_exposed 0.0\n"), "{text}");
        assert!(text.contains("sshprobe_post_quantum_kex 1.0\n"), "{text}");
        assert!(
            text.contains("sshprobe_kex_info{kex=\"mlkem768x25519-sha256\",host_key=\"ssh-ed25519\"} 1\n"),
            "{text}"
        );
        p.record.observation.kexinit =
            Some(crate::kexinit::KexRead::Failed(crate::kexinit::KexError::LengthTooLarge {
                length: 1 << 30,
            }));
        let text = render_probe(&p, fresh());
        assert!(text.contains("sshprobe_kexinit_error_info{error=\"length_too_large\"} 1\n"), "{text}");
        assert!(!text.contains("sshprobe_kex_strict"), "{text}");
        // Not asked: none of them.
        assert!(!render_probe(&probed(CAPTURE, End::WeClosed), fresh()).contains("kex"));
    }

    #[test]
    fn a_refusal_is_one_hot_with_its_text_and_delay() {
        let text = render_probe(&probed(b"Exceeded MaxStartups\r\n", End::Fin), fresh());
        assert!(text.contains("probe_success 0.0\n"), "{text}");
        assert!(text.contains("sshprobe_outcome{outcome=\"server_refusal\"} 1\n"), "{text}");
        assert_eq!(text.matches("sshprobe_outcome{").count(), Outcome::ALL.len());
        // The labels are the outcomes' JSON names.
        for o in Outcome::ALL {
            let json = serde_json::to_value(o).unwrap();
            assert!(text.contains(&format!("{{outcome={json}}}")), "{json}");
        }
        assert_eq!(text.matches("sshprobe_outcome{").count() - 1, text.matches("} 0\n").count(), "{text}");
        assert!(
            text.contains("sshprobe_refusal_info{message=\"Exceeded MaxStartups\",meaning=\"OpenSSH 8.2-9.7")
        );
        // The server's own delay: its first byte at 300 µs, less the 100-µs connect counted twice.
        assert!(text.contains("sshprobe_refusal_delay_seconds 0.0001\n"), "{text}");
        assert!(text.contains("sshprobe_phase_seconds{phase=\"connect\"} 0.0001\n"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn a_banner_has_its_info_and_success() {
        let text = render_probe(
            &probed(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n", End::WeClosed),
            Scrape { dns: Duration::ZERO, reused: Some(Duration::from_secs(1)) },
        );
        assert!(text.contains("probe_success 1.0\n"), "{text}");
        assert!(text.contains(
            "sshprobe_banner_info{proto=\"2.0\",software=\"OpenSSH_9.2p1\",comments=\"Debian-2+deb12u3\"} 1\n"
        ));
        assert!(text.contains("sshprobe_cached 1.0\n") && text.contains("sshprobe_result_age_seconds 1.0\n"));
        assert!(!text.contains("sshprobe_refusal"), "{text}");
        assert!(text.contains("probe_ip_protocol 4.0\n"));
    }

    #[test]
    fn hostile_text_is_escaped_and_capped() {
        let long: &'static [u8] =
            Box::leak([&b"Go \"away\" \\ now"[..], &[b'x'; 400][..], b"\r\n"].concat().into_boxed_slice());
        let text = render_probe(&probed(long, End::Fin), fresh());
        let line = text.lines().find(|l| l.starts_with("sshprobe_refusal_info")).unwrap();
        assert!(line.starts_with("sshprobe_refusal_info{message=\"Go \\\"away\\\" \\\\ nowxxx"), "{line}");
        assert!(line.chars().count() < LABEL_CHARS * 2 + 100, "{line}");
        assert_eq!(label_value("a\nb\tc\u{7f}d"), "abcd");
        assert_eq!(label_value(&"é".repeat(200)).chars().count(), LABEL_CHARS + 1);
    }

    #[test]
    fn exporter_counters() {
        let m = ExporterMetrics::default();
        m.probed(Outcome::Banner);
        m.refused(Refusal::Forbidden);
        m.reused();
        let guard = m.in_flight();
        let text = m.render();
        assert!(text.contains("sshprobe_exporter_probes_total{outcome=\"banner\"} 1\n"), "{text}");
        assert!(text.contains("sshprobe_exporter_scrapes_refused_total{reason=\"forbidden\"} 1\n"));
        assert!(text.contains("sshprobe_exporter_results_reused_total 1\n"));
        assert!(text.contains("sshprobe_exporter_probes_in_flight 1\n"));
        drop(guard);
        assert!(m.render().contains("sshprobe_exporter_probes_in_flight 0\n"));
    }
}
