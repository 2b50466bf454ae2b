//! [`ProbeRecord`]: one probe's result, the record every command keeps and reports.
//!
//! An engine produces an [`Observation`] (facts only); [`classify`](crate::outcome::classify) gives its [`Classification`] (what
//! the facts mean). A `ProbeRecord` keeps the two side by side, so a reader can always check a verdict
//! against its evidence, and so nothing downstream has to re-parse a string to get at a fact: `scan`,
//! `diagnose` and `limits` all hold these, and the reports render them.

use crate::evidence::Observation;
use crate::ident::IdentLine;
use crate::outcome::{classify_scanned, Classification, Outcome};

/// One probe: what was observed and what it means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeRecord {
    /// What the engine observed.
    pub observation: Observation,
    /// What it means.
    pub classification: Classification,
}

impl ProbeRecord {
    /// Classifies `observation` and keeps both. The engine's ident scan
    /// ([`Observation::ident_scan`]) is taken for the classification, not kept twice.
    pub fn new(mut observation: Observation) -> ProbeRecord {
        let scanned = observation.ident_scan.take();
        let classification = classify_scanned(&observation, scanned);
        ProbeRecord { observation, classification }
    }

    /// The outcome.
    pub fn outcome(&self) -> Outcome {
        self.classification.outcome
    }

    /// The server's identification line, when it sent one.
    pub fn banner(&self) -> Option<&IdentLine> {
        self.classification.banner.as_ref()
    }

    /// How long the *server* took to answer, in µs: from accepting the connection to its first byte
    /// (a refusal line, a banner) or, when it sent none, to its close, less the connect round trip.
    ///
    /// Our clock starts at the SYN. The handshake completes for us one round trip later
    /// (`connected`); the server accepted half a round trip before that, and what it sends reaches
    /// us half a round trip after it sent it. So the server's own time is `t - 2 × connected`, with
    /// `connected` standing for the round trip: on loopback it is near zero, and 20 ms away (10 ms
    /// each way) an accept-and-close still reads as about 0 instead of 40 ms (measured through the
    /// test delay line). `None` when the connection was never seen established.
    pub fn server_delay_us(&self) -> Option<u64> {
        let t = self.observation.timings;
        let connected = t.connected?;
        let answered = if self.observation.received.is_empty() { t.closed } else { t.first_byte };
        Some(answered?.saturating_sub(2 * connected))
    }
}

impl From<Observation> for ProbeRecord {
    fn from(observation: Observation) -> ProbeRecord {
        ProbeRecord::new(observation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::{Connect, End, ProbeOrder};

    fn record(received: &'static [u8], connected: u64, first_byte: Option<u64>, closed: u64) -> ProbeRecord {
        let mut obs = Observation::failed_connect(
            "127.0.0.1:22".parse().unwrap(),
            None,
            ProbeOrder::WaitForBanner,
            Connect::Established,
            closed,
        );
        obs.end = Some(End::Fin);
        obs.received = bytes::Bytes::from_static(received);
        obs.timings.connected = Some(connected);
        obs.timings.first_byte = first_byte;
        ProbeRecord::new(obs)
    }

    #[test]
    fn the_servers_delay_takes_out_the_round_trip() {
        // 20 ms away: an accept-and-close is seen 40 ms after the SYN, and took the server nothing.
        assert_eq!(record(b"", 20_000, None, 40_300).server_delay_us(), Some(300));
        // A refusal line counts from its first byte, not the close after it.
        let refusal = record(b"Exceeded MaxStartups\r\n", 80, Some(300), 900);
        assert_eq!(refusal.server_delay_us(), Some(140));
        // Never below zero, and nothing to say without a handshake.
        assert_eq!(record(b"", 500, None, 700).server_delay_us(), Some(0));
        let mut never = record(b"", 0, None, 700);
        never.observation.timings.connected = None;
        assert_eq!(never.server_delay_us(), None);
    }
}
