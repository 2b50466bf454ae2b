//! `--engine connect|raw` and its companions, shared by every command that makes connections.
//!
//! One place opens the chosen engine (the raw one with its capability check, firewall rule and run
//! lock) and guards a command's run with it: on Ctrl-C or SIGTERM the raw engine is shut down (its
//! flows reset, its nftables rule removed) before the process exits with 130 or 143.

use super::pipe::say;
use super::{EXIT_INTERRUPTED, EXIT_TERMINATED};
use anyhow::Context;
use clap::Args;
use sshprobe::engine::any::AnyEngine;
use sshprobe::engine::connect::ConnectEngine;
use sshprobe::engine::raw::{RawEngine, RawOptions};
use sshprobe::engine::EngineConfig;
use std::future::Future;
use std::ops::RangeInclusive;

/// Which engine makes the connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineKind {
    /// Kernel sockets.
    Connect,
    /// Raw sockets and a user-space TCP client.
    Raw,
}

/// The engine flags.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// How to make connections: connect (kernel sockets, unprivileged) or raw (a user-space TCP
    /// client over raw sockets: packet trace, no file descriptor or TIME_WAIT per probe; needs
    /// CAP_NET_RAW and CAP_NET_ADMIN, and installs an nftables rule for the run).
    #[arg(long, value_enum, default_value_t = EngineKind::Connect)]
    pub engine: EngineKind,

    /// With --engine raw: do not install the nftables rule that drops the kernel's RSTs from the
    /// engine's source ports (ports above ip_local_port_range); you arrange that yourself.
    #[arg(long)]
    pub no_firewall: bool,

    /// With --engine raw: the source ports to use, as LO-HI or one port (default: those above
    /// ip_local_port_range). They must lie outside that range. One port per probe in flight
    /// towards the same destination.
    #[arg(long, value_name = "LO-HI", value_parser = parse_port_range)]
    pub source_ports: Option<RangeInclusive<u16>>,
}

impl EngineArgs {
    /// Warns about raw-only flags given with the connect engine.
    fn warn_unused(&self) {
        if self.engine == EngineKind::Raw {
            return;
        }
        if self.no_firewall {
            tracing::warn!("--no-firewall applies only to --engine raw");
        }
        if self.source_ports.is_some() {
            tracing::warn!("--source-ports applies only to --engine raw");
        }
    }

    /// Opens the chosen engine (the raw one: its capability check, run lock and firewall rule).
    /// Install [`ShutdownSignals`] first, so no signal can leave the rule behind.
    pub fn open(&self, config: EngineConfig) -> anyhow::Result<AnyEngine> {
        self.warn_unused();
        Ok(match self.engine {
            EngineKind::Connect => AnyEngine::Connect(ConnectEngine::new(config)),
            EngineKind::Raw => AnyEngine::Raw(RawEngine::new(
                config,
                RawOptions { firewall: !self.no_firewall, ports: self.source_ports.clone() },
            )?),
        })
    }

    /// Opens the chosen engine and runs `run` with it. With the raw engine, Ctrl-C and SIGTERM are
    /// caught from before its firewall rule exists, and end the run with the rule removed.
    pub async fn run<F, Fut>(&self, config: EngineConfig, run: F) -> anyhow::Result<u8>
    where
        F: FnOnce(AnyEngine) -> Fut,
        Fut: Future<Output = anyhow::Result<u8>>,
    {
        match self.engine {
            EngineKind::Connect => run(self.open(config)?).await,
            EngineKind::Raw => {
                // Caught before the rule exists, so no window leaves it behind.
                let mut signals = ShutdownSignals::install()?;
                let engine = self.open(config)?;
                // The engine's nftables rule must not outlive the run: on Ctrl-C or SIGTERM remove it
                // before exiting (a normal end removes it when the last engine is dropped).
                tokio::select! {
                    code = run(engine.clone()) => code,
                    (name, code) = signals.recv() => {
                        engine.shutdown();
                        say!("sshprobe: {name}: stopped; the raw engine's firewall rule is removed");
                        Ok(code)
                    }
                }
            }
        }
    }
}

/// Parses `LO-HI` or `PORT` into a port range.
pub fn parse_port_range(s: &str) -> Result<RangeInclusive<u16>, String> {
    let bad = || format!("invalid port range {s:?}: expected LO-HI or PORT, with 1 <= LO <= HI <= 65535");
    let (lo, hi) = s.split_once('-').unwrap_or((s, s));
    let (lo, hi): (u16, u16) = (lo.trim().parse().map_err(|_| bad())?, hi.trim().parse().map_err(|_| bad())?);
    if lo == 0 || lo > hi {
        return Err(bad());
    }
    Ok(lo..=hi)
}

/// Ctrl-C and SIGTERM, caught from the moment this exists.
pub struct ShutdownSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Starts catching both.
    pub fn install() -> anyhow::Result<ShutdownSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(ShutdownSignals {
            interrupt: signal(SignalKind::interrupt()).context("installing a SIGINT handler")?,
            terminate: signal(SignalKind::terminate()).context("installing a SIGTERM handler")?,
        })
    }

    /// Waits for either; returns what happened and the conventional exit status.
    pub async fn recv(&mut self) -> (&'static str, u8) {
        tokio::select! {
            _ = self.interrupt.recv() => ("interrupted", EXIT_INTERRUPTED),
            _ = self.terminate.recv() => ("terminated", EXIT_TERMINATED),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("61000-61010"), Ok(61000..=61010));
        assert_eq!(parse_port_range("62000"), Ok(62000..=62000));
        for bad in ["0-10", "10-9", "1-70000", "a", "", "5-"] {
            assert!(parse_port_range(bad).is_err(), "{bad}");
        }
    }
}
