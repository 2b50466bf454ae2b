//! Writing to stdout and stderr when either may be a closed pipe.
//!
//! `sshprobe diagnose HOST 2>&1 | head -1` closes both of our outputs after one line. Rust ignores
//! SIGPIPE, so every later write fails with EPIPE, and `eprintln!`/`println!` panic on it (exit 101).
//! Here a line on stderr is best effort (a reader that went away loses nothing it wanted), and a
//! command writing results on stdout learns of the closed pipe as an `io::Error` of kind
//! `BrokenPipe`, stops, and exits with the status of what it wrote, as other Unix tools do.

use std::io::Write;

/// One line on stderr, like `eprintln!`, but never a panic: a closed or full stderr loses the line.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::pipe::stderr_line(format_args!($($arg)*))
    };
}
pub(crate) use say;

/// Writes one line to stderr; errors (EPIPE on a closed pipe) are dropped.
pub fn stderr_line(line: std::fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(line).and_then(|()| err.write_all(b"\n"));
}

/// Writes one line to stdout and flushes it; `Ok(false)` when nobody reads stdout any more.
pub fn stdout_line(line: std::fmt::Arguments<'_>) -> std::io::Result<bool> {
    let mut out = std::io::stdout().lock();
    open(out.write_fmt(line).and_then(|()| out.write_all(b"\n")).and_then(|()| out.flush()))
}

/// `Ok(true)` after a write that worked, `Ok(false)` after one that met a closed pipe, the error
/// otherwise.
pub fn open(result: std::io::Result<()>) -> std::io::Result<bool> {
    match result {
        Ok(()) => Ok(true),
        Err(e) if is_closed(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether an error is a reader that went away.
pub fn is_closed(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::BrokenPipe
}

/// Whether an error, anywhere in its chain of causes, is a reader that went away.
pub fn chain_is_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| cause.downcast_ref::<std::io::Error>().is_some_and(is_closed))
}
