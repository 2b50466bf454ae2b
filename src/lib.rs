//! sshprobe: find out why SSH connections die during the identification exchange.
//!
//! `ssh_exchange_identification: Connection closed by remote host` means a server accepted the TCP
//! connection and dropped it before or during the exchange of identification strings (RFC 4253 §4.2):
//! TCP wrappers, `MaxStartups`, per-source limits and penalties, a broken daemon, a firewall. sshprobe
//! performs only that exchange, never authentication, and records exactly what happened.
//!
//! # Using it as a library
//!
//! Three calls, each with its options type: [`probe_target`] (one exchange, one [`ProbeRecord`]),
//! [`scan_targets`] (many, streamed), [`diagnose_target`] (a [`Diagnosis`]: verdict, evidence,
//! remedies). The embedded [`lab`] serves emulated SSH endpoints on loopback, so these run anywhere:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), sshprobe::Error> {
//! use sshprobe::lab::{Behaviour, Lab, LabConfig};
//! use sshprobe::{probe_target, Outcome, ProbeOptions};
//!
//! let lab = Lab::start(LabConfig::default()).await?;
//! let record = probe_target(lab.addr(Behaviour::Ok), &ProbeOptions::default()).await?;
//! assert_eq!(record.outcome(), Outcome::Banner);
//! assert!(record.banner().is_some_and(|ident| ident.software.starts_with("OpenSSH")));
//! # Ok(())
//! # }
//! ```
//!
//! The path of that probe, one layer at a time, is the same under every command: an engine performs
//! the exchange and reports an [`Observation`] (facts only: timings, bytes, how it ended); the pure
//! classifier ([`outcome::classify`]) says what the facts mean; a [`ProbeRecord`] keeps the two side
//! by side for every report:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use sshprobe::engine::connect::ConnectEngine;
//! use sshprobe::engine::{Engine, ProbeRequest};
//! use sshprobe::evidence::End;
//! use sshprobe::lab::{Behaviour, Lab, LabConfig};
//! use sshprobe::outcome::{classify, KnownRefusal, Outcome};
//! use sshprobe::server::MaxStartups;
//!
//! // A lab whose MaxStartups table is always full (start 0, full 1).
//! let full = MaxStartups { start: 0, rate: 100, full: 1 };
//! let lab = Lab::start(LabConfig { maxstartups: full, ..LabConfig::default() }).await?;
//! // 1. The engine: the only door to the network. A full MaxStartups table refuses at once.
//! let observation = ConnectEngine::default().probe(ProbeRequest::new(lab.addr(Behaviour::Maxstartups))).await;
//! assert_eq!(observation.received.as_ref(), b"Exceeded MaxStartups\r\n");
//! assert_eq!(observation.end, Some(End::Fin));
//! // 2. The classifier: pure, no I/O.
//! let classification = classify(&observation);
//! assert_eq!(classification.outcome, Outcome::ServerRefusal);
//! assert_eq!(classification.refusal, Some(KnownRefusal::ExceededMaxStartups));
//! // 3. The record every report renders.
//! let record = sshprobe::ProbeRecord::new(observation);
//! assert_eq!(record.outcome(), Outcome::ServerRefusal);
//! # Ok(())
//! # }
//! ```
//!
//! `examples/` has the three calls as programs: `cargo run --example probe`, `scan`, `diagnose`.
//!
//! # Layout
//!
//! The crate is layered: each module uses only those above it in this list, which is also the order
//! of the `mod` declarations below, lowest first. `tests/layers.rs` reads that order from this file
//! and checks every path in every file against it (grouped and multi-line imports included).
//!
//! | module | what it is | I/O |
//! |---|---|---|
//! | [`escape`] | text from the network made safe for terminals and CSV; JSON that keeps it so | none |
//! | [`ident`] | the identification-string parser | none |
//! | [`kexinit`] | the server's first binary packet and its KEXINIT (algorithms, strict KEX, post-quantum); what current OpenSSH clients accept | none |
//! | [`packet`] | what a packet trace records: TCP flags and options, ICMP errors by name | none |
//! | [`evidence`] | [`evidence::Observation`]: what one probe saw, exactly | none |
//! | [`outcome`] | [`outcome::classify`]: an observation's [`outcome::Outcome`]; the refusal lines servers send | none |
//! | [`record`] | [`record::ProbeRecord`]: an observation beside its classification, the one result record | none |
//! | [`server`] | what real servers do: sshd's MaxStartups rule, versions and their features | none |
//! | [`target`] | targets as users write them | none |
//! | [`serverlog`] | sshd's and dropbear's log lines (syslog, journal, `sshd -E`) as typed events; reading only what is appended to a log | reads |
//! | [`hostconns`] | this host's own established TCP connections to a server, by owning process and local address (`/proc/net/tcp*`, `/proc/*/fd`) | reads |
//! | [`resolve`] | host names to addresses: the one resolver | DNS |
//! | [`engine`] | the only door to the network: [`engine::Engine`] probes and holds; [`engine::exchange`] (the identification exchange as a pure machine both engines drive), [`engine::connect`] (kernel sockets), [`engine::raw`] (a user-space TCP client over raw sockets, with a packet trace), [`engine::any`] (either, chosen at run time) | network |
//! | [`shutdown`] | Ctrl-C and SIGTERM: the one signal catcher, and the guard that opens an engine and shuts it down on a signal | signals |
//! | [`scan`] | many probes: streamed targets, concurrency, rate, sources | network |
//! | [`experiment`] | questions about a server, answered by sequences of probes through any engine: [`experiment::diagnose`], [`experiment::limits`], with [`experiment::holder`], [`experiment::budget`] and the pure [`experiment::stats`] | network |
//! | [`lab`] | emulated endpoints for demos and for cases no real server produces on demand | network |
//! | [`report`] | table, JSON Lines, CSV and SVG output of probes, diagnoses and limits | writes |
//! | [`api`] | the front door: [`probe_target`], [`scan_targets`], [`diagnose_target`], each with its options type, re-exported here | network |
//! | [`serve`] | the Prometheus exporter: `/probe`, `/diagnose`, safe by default; uses [`report`] for the diagnosis JSON | network |
//!
//! The binary (`src/main.rs`, `src/cli/`) only parses arguments, opens the engine the user chose
//! (`cli/engine.rs`), wires these together and reports errors. One [`evidence::Observation`] flows
//! from an engine through the classifier to a report; no layer reaches back up.

pub mod escape;
pub mod ident;
pub mod kexinit;
pub mod packet;
pub mod evidence;
pub mod outcome;
pub mod record;
pub mod server;
pub mod target;
pub mod serverlog;
pub mod hostconns;
pub mod resolve;
pub mod engine;
pub mod shutdown;
pub mod scan;
pub mod experiment;
pub mod lab;
pub mod report;
pub mod serve;
pub mod api;

pub use api::{
    diagnose_target, probe_target, scan_targets, Error, ProbeOptions, Scan, ScanEvent, ScanOptions,
};
pub use engine::any::EngineKind;
pub use evidence::{Observation, ProbeOrder};
pub use experiment::diagnose::{DiagnoseOptions, Diagnosis, Verdict};
pub use outcome::Outcome;
pub use record::ProbeRecord;
