//! Experiments: sequences of probes, chosen from what earlier probes showed, that answer a question
//! about a server rather than about one connection.
//!
//! - [`diagnose`]: *why* does the identification exchange fail (or does it)? A verdict with its
//!   evidence and the remedy.
//! - [`limits`]: how does the server behave as unauthenticated connections pile up? Its MaxStartups
//!   `start:rate:full`, LoginGraceTime and accept rate.
//!
//! Experiments compose an [`crate::engine::Engine`] with [`holder`] (connections held open on
//! purpose, always released) and keep to a [`budget`] of connections per source address, because
//! OpenSSH 9.8+ penalises every connection that leaves without authenticating (FACTS §5). Their
//! arithmetic lives in [`stats`], without I/O.

pub mod budget;
pub mod diagnose;
pub mod holder;
pub mod stats;
