//! The server's KEXINIT in a diagnosis: the failure right after the one the rest of diagnose
//! explains. Pure: [`amend`] looks at the KEXINIT one baseline probe read and, when the exchange
//! works (`ok`), says whether current OpenSSH clients can negotiate with the offer.
//!
//! - a current client (the newest of [`openssh::CLIENTS`]) cannot: the verdict becomes
//!   [`Verdict::LegacyAlgorithms`], with one piece of evidence per missing kind (what the server
//!   offers, which client versions fail, the `-o` workaround) and the server-side fix;
//! - only older clients cannot (a server offering nothing but post-quantum key exchange, say): a note;
//! - Terrapin exposure and no post-quantum key exchange: notes beside the verdict, not verdicts.
//!
//! Kept apart from the rules of [`super::decide()`] so that it runs after them, on their verdict, as
//! one step.

use super::decide::{Confidence, Finding, Verdict};
use super::evidence::{Evidence, Note};
use super::facts::Facts;
use super::remedy::Remedy;
use crate::kexinit::{openssh, KexRead};

/// The KEXINIT read by one of the probes with nothing held, if any asked for it.
pub(crate) fn kexinit_read(facts: &Facts) -> Option<&KexRead> {
    facts.unloaded().into_iter().find_map(|p| p.record.observation.kexinit.as_ref())
}

/// Adds what the server's KEXINIT shows to a finding (see the module doc). Leaves every verdict but
/// `ok` as it is: a failing exchange is the problem to solve first.
pub fn amend(facts: &Facts, finding: &mut Finding) {
    if finding.verdict != Verdict::Ok {
        return;
    }
    let Some(read) = kexinit_read(facts) else { return };
    let offer = match read {
        KexRead::Kexinit(k) => k,
        KexRead::Failed(e) => {
            finding.notes.push(Note::KexinitUnreadable { error: e.name() });
            return;
        }
    };
    finding.evidence.push(Evidence::KexOffer {
        kex: offer.preferred_kex().map(String::from),
        host_key: offer.server_host_key_algorithms.first().map(String::from),
        strict_kex: offer.strict_kex(),
        terrapin_exposed: offer.terrapin_exposed(),
        post_quantum: offer.post_quantum(),
    });
    let negotiation = openssh::check(offer);
    if negotiation.newest_fails() {
        finding.conclude(Verdict::LegacyAlgorithms, Confidence::High);
        for m in &negotiation.missing {
            finding.evidence.push(Evidence::ClientsCannotNegotiate {
                missing: m.kind,
                clients: m.clients.clone(),
                server_offers: m.server_offers.clone(),
                workaround: m.workaround.clone(),
            });
        }
        finding.remedy = vec![Remedy::EnableCurrentAlgorithms];
    } else if negotiation.fails() {
        // Each release since 8.8 only added names, so the clients that fail are the oldest ones.
        let newest_failing = openssh::CLIENTS
            .iter()
            .rev()
            .map(|c| c.versions)
            .find(|v| negotiation.missing.iter().any(|m| m.clients.contains(v)));
        if let Some(up_to) = newest_failing {
            finding.notes.push(Note::OlderClientsCannotNegotiate { up_to });
        }
    }
    if offer.terrapin_exposed() {
        finding.notes.push(Note::TerrapinExposed);
    }
    if !offer.post_quantum() {
        finding.notes.push(Note::NoPostQuantumKex);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::diagnose::facts::fixtures::*;
    use crate::experiment::diagnose::facts::{Experiment, ExperimentKind, ExperimentProbe};
    use crate::kexinit::KexInit;
    use crate::record::ProbeRecord;

    fn facts_with(offer: KexInit) -> Facts {
        let mut obs = Observation::failed_connect(
            "127.0.0.1:22".parse().unwrap(),
            None,
            ProbeOrder::WaitForBanner,
            Connect::Established,
            500,
        );
        obs.end = Some(End::WeClosed);
        obs.received = bytes::Bytes::from_static(b"SSH-2.0-OpenSSH_5.3\r\n");
        obs.kexinit = Some(KexRead::Kexinit(Box::new(offer)));
        let probe = ExperimentProbe {
            record: ProbeRecord::new(obs),
            source: crate::experiment::sources::Source::KernelChoice,
            held: 0,
        };
        Facts {
            experiments: vec![Experiment {
                kind: ExperimentKind::Baseline,
                held: 0,
                held_from_probing_source: false,
                probes: vec![probe],
                hold_refused: 0,
            }],
            ..Facts::default()
        }
    }
    fn offer(kex: &[&str], hostkey: &[&str], ciphers: &[&str], macs: &[&str]) -> KexInit {
        KexInit::offering(kex, hostkey, ciphers, macs)
    }

    fn ok() -> Finding {
        Finding {
            verdict: Verdict::Ok,
            confidence: Confidence::High,
            evidence: vec![],
            remedy: vec![Remedy::LookPastTheExchange],
            notes: vec![],
        }
    }

    #[test]
    fn a_legacy_only_server_gets_legacy_algorithms_with_the_missing_kinds() {
        let facts =
            facts_with(offer(&["diffie-hellman-group1-sha1"], &["ssh-dss"], &["3des-cbc"], &["hmac-md5"]));
        let mut f = ok();
        amend(&facts, &mut f);
        assert_eq!(f.verdict, Verdict::LegacyAlgorithms);
        let kinds: Vec<openssh::Kind> = f
            .evidence
            .iter()
            .filter_map(|e| match e {
                Evidence::ClientsCannotNegotiate { missing, .. } => Some(*missing),
                _ => None,
            })
            .collect();
        assert_eq!(
            kinds,
            [openssh::Kind::Kex, openssh::Kind::HostKey, openssh::Kind::Cipher, openssh::Kind::Mac]
        );
        assert_eq!(f.remedy, [Remedy::EnableCurrentAlgorithms]);
        assert!(f.notes.contains(&Note::NoPostQuantumKex));
    }

    #[test]
    fn terrapin_and_no_post_quantum_are_notes_beside_ok() {
        let facts = facts_with(offer(
            &["curve25519-sha256"],
            &["ssh-ed25519"],
            &["chacha20-poly1305@openssh.com"],
            &["hmac-sha2-256"],
        ));
        let mut f = ok();
        amend(&facts, &mut f);
        assert_eq!(f.verdict, Verdict::Ok);
        assert_eq!(f.notes, [Note::TerrapinExposed, Note::NoPostQuantumKex]);
        // Another verdict is left alone.
        let mut refused = ok();
        refused.verdict = Verdict::Maxstartups;
        amend(&facts, &mut refused);
        assert!(refused.notes.is_empty() && refused.evidence.is_empty());
    }
}
