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
//! The files, from I/O to pure rules:
//!
//! | file | what it does | I/O |
//! |---|---|---|
//! | [`gather`] | [`diagnose`]: runs the experiments within the budget, then decides: a [`Diagnosis`] | network |
//! | [`facts`] | what was gathered: [`Facts`], [`Experiment`]s of [`ExperimentProbe`]s (each a [`crate::record::ProbeRecord`] with its source and load), [`Tally`] | none |
//! | [`decide`](mod@decide) | [`decide()`]: the rules, from facts to a [`Finding`] (verdict, confidence, evidence, remedies, notes) | none |
//! | [`persource`] | per-source against global: Fisher's exact test at a stated error rate, and what a run of banners rules out | none |
//! | [`evidence`] | [`Evidence`] and [`Note`]: what a verdict rests on, typed, with its numbers | none |
//! | [`remedy`] | [`Remedy`]: what to change, chosen by verdict and server family in one table | none |
//! | [`kex`] | after the rules: what the server's KEXINIT (read by one baseline probe) means for current OpenSSH clients, Terrapin, post-quantum | none |
//!
//! English is the report's job: `report::diagnose` writes evidence, remedies and notes for people,
//! and the JSON with each piece of evidence's kind, numbers and text.

pub mod decide;
pub mod evidence;
pub mod facts;
mod front;
#[cfg(test)]
mod consistency;
pub mod gather;
pub mod kex;
mod logged;
pub mod persource;
pub mod remedy;

pub use decide::{decide, Confidence, Finding, Verdict};
pub use evidence::{DelayClass, Evidence, Note};
pub use facts::{Experiment, ExperimentKind, ExperimentProbe, Facts, HostHolder, NotTestedReason, Tally};
pub use gather::{diagnose, DiagnoseOptions, Diagnosis};
pub use remedy::Remedy;
