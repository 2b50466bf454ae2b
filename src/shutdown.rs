//! Ctrl-C and SIGTERM: the one signal catcher, and the guard that runs work on an engine.
//!
//! Every wing that makes connections (the CLI's commands, the exporter) stops the same way: the
//! signals are caught from before the raw engine's nftables rule exists, so no signal can leave it
//! behind; on a signal the engine is shut down (the raw engine's flows reset and its rule removed,
//! the connect engine's sockets closed when their owners are dropped) and the process exits with
//! the conventional status, 128 plus the signal's number.

use crate::engine::any::{AnyEngine, EngineKind};
use crate::engine::raw::{RawError, RawOptions};
use crate::engine::EngineConfig;
use std::future::Future;

/// What stopped a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Stop {
    /// SIGINT (Ctrl-C).
    Interrupted,
    /// SIGTERM.
    Terminated,
}

impl Stop {
    /// `interrupted` or `terminated`, as messages say it.
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// The exit status a shell expects after this signal: 130 or 143.
    pub fn exit_code(self) -> u8 {
        match self {
            Stop::Interrupted => EXIT_INTERRUPTED,
            Stop::Terminated => EXIT_TERMINATED,
        }
    }
}

/// Exit status after Ctrl-C (128 + SIGINT).
pub(crate) const EXIT_INTERRUPTED: u8 = 130;
/// Exit status after SIGTERM (128 + SIGTERM).
pub(crate) const EXIT_TERMINATED: u8 = 143;

/// Ctrl-C and SIGTERM, caught from the moment this exists (the default action, ending the process,
/// no longer applies).
#[derive(Debug)]
pub struct ShutdownSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Starts catching both. Needs a tokio runtime with I/O enabled.
    pub fn install() -> std::io::Result<ShutdownSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(ShutdownSignals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Waits for either.
    pub async fn recv(&mut self) -> Stop {
        tokio::select! {
            _ = self.interrupt.recv() => Stop::Interrupted,
            _ = self.terminate.recv() => Stop::Terminated,
        }
    }
}

/// How a guarded run ended.
#[derive(Debug)]
pub enum Guarded<T> {
    /// It ran to its end.
    Finished(T),
    /// A signal stopped it; the engine was shut down first.
    Stopped(Stop),
}

/// Why a guarded run could not start.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// The signal handlers could not be installed.
    #[error("installing the SIGINT and SIGTERM handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// The engine could not be opened.
    #[error(transparent)]
    Engine(#[from] RawError),
}

/// Opens an engine of `kind` and runs `run` with it until it ends or a signal arrives. The signals
/// are caught before the engine opens; on one, `run` is dropped (and with it every connection it
/// holds) and the engine shut down.
pub async fn guarded<F, Fut, T>(
    kind: EngineKind,
    config: EngineConfig,
    raw: RawOptions,
    run: F,
) -> Result<Guarded<T>, GuardError>
where
    F: FnOnce(AnyEngine) -> Fut,
    Fut: Future<Output = T>,
{
    let mut signals = ShutdownSignals::install().map_err(GuardError::Signals)?;
    let engine = AnyEngine::open(kind, config, raw)?;
    tokio::select! {
        value = run(engine.clone()) => Ok(Guarded::Finished(value)),
        stop = signals.recv() => {
            engine.shutdown();
            Ok(Guarded::Stopped(stop))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_128_plus_the_signal() {
        assert_eq!(Stop::Interrupted.exit_code(), 128 + libc::SIGINT as u8);
        assert_eq!(Stop::Terminated.exit_code(), 128 + libc::SIGTERM as u8);
        assert_eq!(Stop::Terminated.name(), "terminated");
    }

    #[tokio::test]
    async fn a_guarded_run_that_ends_returns_its_value() {
        let ran = guarded(
            EngineKind::Connect,
            EngineConfig::default(),
            RawOptions::default(),
            |engine| async move { engine.kind() },
        )
        .await
        .expect("the connect engine opens");
        assert!(matches!(ran, Guarded::Finished(EngineKind::Connect)));
    }
}
