//! The per-connection trace behind `-vv`: what `ssh -vvv` shows of the identification exchange
//! (the connect, bytes in and out, the close, each with its time in µs), for every command.
//!
//! Events are TRACE level with the target [`TARGET`], so `-v` (DEBUG) stays quiet on a large scan
//! and `-vv` (or `RUST_LOG=sshprobe::conn=trace`) turns them on. They are written when the
//! connection's exchange is over, from its [`Observation`], so one connection's lines stay
//! together however many run at once; the times are the engine's, from the start of the connect.

use crate::evidence::{Connect, Observation};

/// The tracing target of per-connection events.
pub const TARGET: &str = "sshprobe::conn";

/// How many bytes of what the server sent one trace line shows.
const SHOWN: usize = 200;

/// Traces one connection's exchange: `what` is `probe` or `hold`, `ident_len` the bytes of our
/// ident line.
pub fn connection(what: &str, obs: &Observation, ident_len: usize) {
    if !tracing::enabled!(target: TARGET, tracing::Level::TRACE) {
        return;
    }
    let remote = obs.remote;
    let from = obs.local.map_or_else(|| "the kernel's choice of address".to_string(), |a| a.to_string());
    let t = obs.timings;
    let us = |v: Option<u64>| v.map_or_else(|| "?".to_string(), |v| v.to_string());
    match &obs.connect {
        Connect::Established => {
            tracing::trace!(target: TARGET, "{remote} {what}: connected from {from} at {} µs", us(t.connected));
        }
        other => {
            tracing::trace!(target: TARGET, "{remote} {what}: connect from {from}: {other:?} at {} µs", us(t.closed));
            return;
        }
    }
    if obs.sent_ident {
        tracing::trace!(target: TARGET, "{remote} {what}: sent our ident ({ident_len} bytes, {:?})", obs.order);
    }
    if !obs.received.is_empty() {
        let shown = &obs.received[..obs.received.len().min(SHOWN)];
        let more = if obs.received.len() > SHOWN { "..." } else { "" };
        tracing::trace!(
            target: TARGET,
            "{remote} {what}: received {} bytes, the first at {} µs{}: \"{}{more}\"",
            obs.received.len(),
            us(t.first_byte),
            t.ident.map(|i| format!(", the ident line complete at {i} µs")).unwrap_or_default(),
            shown.escape_ascii(),
        );
    }
    match obs.end {
        Some(end) => {
            tracing::trace!(target: TARGET, "{remote} {what}: closed ({end}) at {} µs", us(t.closed))
        }
        None => tracing::trace!(target: TARGET, "{remote} {what}: holding the connection open"),
    }
}
