//! sshprobe: find out why SSH connections die during the identification exchange.
//!
//! `ssh_exchange_identification: Connection closed by remote host` means a server accepted the TCP
//! connection and dropped it before or during the exchange of identification strings (RFC 4253 §4.2):
//! TCP wrappers, `MaxStartups`, per-source limits and penalties, a broken daemon, a firewall. sshprobe
//! performs only that exchange, never authentication, and records exactly what happened.
//!
//! # Layout
//!
//! The crate is layered; each layer uses only those above it in this list (a test in
//! `tests/layers.rs` checks the imports).
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
//! | [`engine`] | the only door to the network: [`engine::Engine`] probes and holds; [`engine::exchange`] (the identification exchange as a pure machine both engines drive), [`engine::connect`] (kernel sockets), [`engine::raw`] (a user-space TCP client over raw sockets, with a packet trace), [`engine::any`] (either, chosen at run time) | network |
//! | [`scan`] | many probes: streamed targets, concurrency, rate, sources | network |
//! | [`experiment`] | questions about a server, answered by sequences of probes through any engine: [`experiment::diagnose`], [`experiment::limits`], with [`experiment::holder`], [`experiment::budget`] and the pure [`experiment::stats`] | network |
//! | [`lab`] | emulated endpoints for demos and for cases no real server produces on demand | network |
//! | [`report`] | table, JSON Lines, CSV and SVG output of probes, diagnoses and limits | writes |
//! | [`serve`] | the Prometheus exporter: `/probe`, `/diagnose`, safe by default; uses [`report`] for the diagnosis JSON | network |
//!
//! The binary (`src/main.rs`, `src/cli/`) only parses arguments, opens the engine the user chose
//! (`cli/engine.rs`), wires these together and reports errors. One [`evidence::Observation`] flows
//! from an engine through the classifier to a report; no layer reaches back up.

pub mod engine;
pub mod escape;
pub mod evidence;
pub mod experiment;
pub mod hostconns;
pub mod ident;
pub mod kexinit;
pub mod lab;
pub mod outcome;
pub mod packet;
pub mod record;
pub mod report;
pub mod scan;
pub mod serve;
pub mod server;
pub mod serverlog;
pub mod target;
