//! sshprobe: find out why SSH connections die during the identification exchange.
//!
//! `ssh_exchange_identification: Connection closed by remote host` means a server accepted the TCP
//! connection and dropped it before or during the exchange of identification strings (RFC 4253 §4.2):
//! TCP wrappers, `MaxStartups`, per-source limits and penalties, a broken daemon, a firewall. sshprobe
//! performs only that exchange, never authentication, and records exactly what happened.
//!
//! # Layout
//!
//! The crate is layered; each layer uses only those above it in this list.
//!
//! | module | what it is | I/O |
//! |---|---|---|
//! | [`escape`] | text from the network made safe for terminals and CSV; JSON that keeps it so | none |
//! | [`ident`] | the identification-string parser | none |
//! | [`evidence`] | [`evidence::Observation`]: what one probe saw, exactly | none |
//! | [`outcome`] | [`outcome::classify`]: an observation's [`outcome::Outcome`] | none |
//! | [`server`] | what real servers do: sshd's MaxStartups rule, versions and their features | none |
//! | [`target`] | targets as users write them | none |
//! | [`engine`] | performs exchanges: [`engine::connect`] (kernel sockets), [`engine::raw`] (a user-space TCP handshake over raw sockets, with a packet trace) | network |
//! | [`scan`] | many probes: streamed targets, concurrency, rate, sources | network |
//! | [`lab`] | emulated endpoints for demos and for cases no real server produces on demand | network |
//! | [`report`] | table, JSON Lines and CSV output | writes |
//!
//! The binary (`src/main.rs`, `src/cli/`) only parses arguments, wires these together and reports
//! errors. One [`evidence::Observation`] flows from an engine through the classifier to a report; no
//! layer reaches back up.

pub mod engine;
pub mod escape;
pub mod evidence;
pub mod experiment;
pub mod ident;
pub mod lab;
pub mod outcome;
pub mod report;
pub mod scan;
pub mod server;
pub mod target;
