//! [`ProbeRecord`]: one probe's result, the record every command keeps and reports.
//!
//! An engine produces an [`Observation`] (facts only); [`classify`] gives its [`Classification`] (what
//! the facts mean). A `ProbeRecord` keeps the two side by side, so a reader can always check a verdict
//! against its evidence, and so nothing downstream has to re-parse a string to get at a fact: `scan`,
//! `diagnose` and `limits` all hold these, and the reports render them.

use crate::evidence::Observation;
use crate::ident::IdentLine;
use crate::outcome::{classify, Classification, Outcome};

/// One probe: what was observed and what it means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeRecord {
    /// What the engine observed.
    pub observation: Observation,
    /// What it means.
    pub classification: Classification,
}

impl ProbeRecord {
    /// Classifies `observation` and keeps both.
    pub fn new(observation: Observation) -> ProbeRecord {
        let classification = classify(&observation);
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
}

impl From<Observation> for ProbeRecord {
    fn from(observation: Observation) -> ProbeRecord {
        ProbeRecord::new(observation)
    }
}
