//! `--engine connect|raw` and its companions, shared by every command that makes connections.
//!
//! One place opens the chosen engine (the raw one with its capability check, firewall rule and run
//! lock) and guards a command's run with it: on Ctrl-C or SIGTERM the raw engine is shut down (its
//! flows reset, its nftables rule removed) before the process exits with 130 or 143.

use super::pipe::say;
use clap::Args;
use sshprobe::engine::any::AnyEngine;
pub use sshprobe::engine::any::EngineKind;
use sshprobe::engine::raw::RawOptions;
use sshprobe::engine::EngineConfig;
use sshprobe::shutdown::{guarded, Guarded};
use std::future::Future;
use std::ops::RangeInclusive;

/// The engine flags.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// How to make connections: connect (kernel sockets, unprivileged) or raw (a user-space TCP
    /// client over raw sockets: packet trace, no file descriptor or TIME_WAIT per probe; needs
    /// CAP_NET_RAW and CAP_NET_ADMIN, and installs an nftables rule for the run).
    #[arg(long, value_enum, default_value_t = EngineKind::Connect)]
    pub engine: EngineKind,

    /// With --engine raw: do not install the nftables table that drops the kernel's RSTs from the
    /// engine's source ports (ports above ip_local_port_range) and, before the kernel's TCP, the
    /// IPv4 segments to them; you arrange the first yourself (IPv4 is then read at the IP layer).
    #[arg(long)]
    pub no_firewall: bool,

    /// With --engine raw: the source ports to use, as LO-HI or one port (default: those above
    /// ip_local_port_range). They must lie outside that range. One port per probe in flight
    /// towards the same destination.
    #[arg(long, value_name = "LO-HI", value_parser = parse_port_range)]
    pub source_ports: Option<RangeInclusive<u16>>,

    /// The raw engine's threads: set by `probe --threads`, one for every other command.
    #[arg(skip = 1usize)]
    pub raw_threads: usize,
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

    /// The raw engine's options these flags give.
    fn raw_options(&self) -> RawOptions {
        RawOptions {
            firewall: !self.no_firewall,
            ports: self.source_ports.clone(),
            threads: self.raw_threads,
        }
    }

    /// Opens the chosen engine through the library's one door ([`AnyEngine::open`]). Install
    /// [`sshprobe::shutdown::ShutdownSignals`] first, so no signal can leave the raw engine's rule behind.
    pub fn open(&self, config: EngineConfig) -> anyhow::Result<AnyEngine> {
        self.warn_unused();
        Ok(AnyEngine::open(self.engine, config, self.raw_options())?)
    }

    /// Opens the chosen engine and runs `run` with it, guarded by the library's signal catcher: on
    /// Ctrl-C or SIGTERM the run is dropped (every connection it holds closed), the raw engine's
    /// firewall rule removed, and the exit status is 130 or 143.
    pub async fn run<F, Fut>(&self, config: EngineConfig, run: F) -> anyhow::Result<u8>
    where
        F: FnOnce(AnyEngine) -> Fut,
        Fut: Future<Output = anyhow::Result<u8>>,
    {
        self.warn_unused();
        match guarded(self.engine, config, self.raw_options(), run).await? {
            Guarded::Finished(code) => code,
            Guarded::Stopped(stop) => {
                if self.engine == EngineKind::Raw {
                    say!("sshprobe: {}: stopped; the raw engine's firewall rule is removed", stop.name());
                } else {
                    say!("sshprobe: {}; every held connection was closed", stop.name());
                }
                Ok(stop.exit_code())
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
