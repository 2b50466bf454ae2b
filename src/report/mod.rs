//! Output formats, kept apart from the core and the engines: they only read results.
//!
//! - `table`: for people; aligned columns, coloured as `--color` says ([`colour_wanted`]).
//! - `jsonl`: one JSON object per line, for pipelines; `probe` flushes whenever no further result is
//!   waiting, so lines stream without a write per line (fields in [`probe::JsonRecord`]).
//! - `csv`: one row per probe with a header.
//!
//! Whatever a server sent goes through [`crate::escape::escape`] before it reaches the table, the text of
//! a diagnosis or CSV: no byte from the network drives the user's terminal.

pub mod diagnose;
pub mod jsonl;
pub mod limits;
pub mod probe;

use std::borrow::Cow;
use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicU8, Ordering};

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated values with a header row.
    Csv,
}

/// When to colour output for people (`--color`): `auto`, `always` or `never`.
pub use clap::ColorChoice;

/// The run's `--color`, set once by the binary before any output ([`set_colour_choice`]).
static COLOUR_CHOICE: AtomicU8 = AtomicU8::new(0);

/// Sets the run's `--color` for [`stdout_wants_colour`] and [`stderr_wants_colour`].
pub fn set_colour_choice(choice: ColorChoice) {
    let code = match choice {
        ColorChoice::Auto => 0,
        ColorChoice::Always => 1,
        ColorChoice::Never => 2,
    };
    COLOUR_CHOICE.store(code, Ordering::Relaxed);
}

fn colour_choice() -> ColorChoice {
    match COLOUR_CHOICE.load(Ordering::Relaxed) {
        1 => ColorChoice::Always,
        2 => ColorChoice::Never,
        _ => ColorChoice::Auto,
    }
}

/// The environment variables that decide colour under `--color auto`.
#[derive(Debug, Clone, Default)]
pub struct ColourEnv {
    /// `NO_COLOR` (no-color.org): set and not empty, no colour.
    pub no_color: Option<std::ffi::OsString>,
    /// `CLICOLOR_FORCE`: set, not empty and not `0`, colour even off a terminal.
    pub clicolor_force: Option<std::ffi::OsString>,
    /// `TERM`: `dumb` has no colour.
    pub term: Option<std::ffi::OsString>,
}

impl ColourEnv {
    /// The process's environment.
    pub(crate) fn from_process() -> ColourEnv {
        ColourEnv {
            no_color: std::env::var_os("NO_COLOR"),
            clicolor_force: std::env::var_os("CLICOLOR_FORCE"),
            term: std::env::var_os("TERM"),
        }
    }
}

/// Whether to colour a stream: `--color always` and `never` decide alone; under `auto`, `NO_COLOR`
/// turns colour off, then `CLICOLOR_FORCE` on, then `TERM=dumb` off, and otherwise colour goes
/// only to a terminal.
pub fn colour_wanted(choice: ColorChoice, env: &ColourEnv, is_terminal: bool) -> bool {
    let set = |v: &Option<std::ffi::OsString>| v.as_ref().is_some_and(|v| !v.is_empty());
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto if set(&env.no_color) => false,
        ColorChoice::Auto
            if set(&env.clicolor_force) && env.clicolor_force.as_deref() != Some("0".as_ref()) =>
        {
            true
        }
        ColorChoice::Auto if env.term.as_deref() == Some("dumb".as_ref()) => false,
        ColorChoice::Auto => is_terminal,
    }
}

/// Whether to colour output written to stdout ([`colour_wanted`] with the run's `--color`).
pub fn stdout_wants_colour() -> bool {
    wants_colour(std::io::stdout().is_terminal())
}

/// Whether to colour output written to a terminal (`is_terminal`) or elsewhere (a file), by the
/// run's `--color` and the environment.
pub fn wants_colour(is_terminal: bool) -> bool {
    colour_wanted(colour_choice(), &ColourEnv::from_process(), is_terminal)
}

/// Whether to colour what goes to stderr (logs): the same rule, for stderr.
pub fn stderr_wants_colour() -> bool {
    colour_wanted(colour_choice(), &ColourEnv::from_process(), std::io::stderr().is_terminal())
}

/// ANSI colours, or none.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Palette {
    on: bool,
}

impl Palette {
    /// Colours when `on`.
    pub fn new(on: bool) -> Palette {
        Palette { on }
    }

    /// `text` in the SGR colour `code` (e.g. `"32"` green), padded to `width` first so columns align.
    pub(crate) fn paint(self, code: &str, text: &str, width: usize) -> String {
        if self.on {
            format!("\x1b[{code}m{text:<width$}\x1b[0m")
        } else {
            format!("{text:<width$}")
        }
    }
}

/// A buffered writer that hands the writer under it whole lines only: the bytes of a results file
/// always end at a line end, so a crash, a kill or a full disk leaves no torn line for the next
/// reader. It writes when its buffer passes `capacity` or when flushed, everything up to the last
/// line end (std's `LineWriter` writes at every line end instead: one system call per result).
#[derive(Debug)]
pub struct WholeLines<W: Write> {
    inner: W,
    buf: Vec<u8>,
    capacity: usize,
}

impl<W: Write> WholeLines<W> {
    /// Whole lines to `inner`, in writes of about `capacity` bytes.
    pub fn new(inner: W, capacity: usize) -> WholeLines<W> {
        WholeLines { inner, buf: Vec::with_capacity(capacity), capacity }
    }

    /// Writes every complete line buffered.
    fn write_lines(&mut self) -> io::Result<()> {
        if let Some(last) = self.buf.iter().rposition(|&b| b == b'\n') {
            let result = self.inner.write_all(&self.buf[..=last]);
            self.buf.drain(..=last);
            result?;
        }
        Ok(())
    }
}

impl<W: Write> Write for WholeLines<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= self.capacity {
            self.write_lines()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_lines()?;
        self.inner.flush()
    }
}

impl<W: Write> Drop for WholeLines<W> {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// A CSV field: control characters escaped ([`crate::escape::escape`]: no raw ESC, NUL or line end from
/// the network), a text a spreadsheet would run as a formula neutralised ([`FORMULA_STARTS`]), then
/// quoted when it needs it (RFC 4180).
pub fn csv_field(s: &str) -> String {
    let escaped = crate::escape::escape(s);
    let text = if s.starts_with(FORMULA_STARTS) || escaped.starts_with(FORMULA_STARTS) {
        Cow::Owned(format!("'{escaped}"))
    } else {
        escaped
    };
    if text.contains([',', '"']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.into_owned()
    }
}

/// The first characters that make a spreadsheet read a cell as a formula: a server sending
/// `SSH-2.0-=HYPERLINK("http://x", "click")` would otherwise put a live link (or worse, `=cmd|...`
/// DDE) in the user's sheet. As OWASP's "CSV Injection" page advises, such a cell gets a leading
/// `'`, which spreadsheets take as "this is text" and do not show.
pub const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what each write(2) would have been.
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>);

    impl Write for Writes {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.0.push(data.to_vec());
            Ok(data.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// The cell's value as a CSV reader sees it (RFC 4180 unquoting).
    fn unquoted(cell: &str) -> String {
        match cell.strip_prefix('"').and_then(|c| c.strip_suffix('"')) {
            Some(inner) => inner.replace("\"\"", "\""),
            None => cell.to_string(),
        }
    }

    #[test]
    fn formula_cells_are_text() {
        for (text, cell) in [
            ("=HYPERLINK(\"http://x\",\"y\")", "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\""),
            ("+1", "'+1"),
            ("-1+2", "'-1+2"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\t=1", "'\\t=1"),
            ("\r=1", "'\\r=1"),
            ("OpenSSH_9.2p1", "OpenSSH_9.2p1"),
            ("a=b", "a=b"),
        ] {
            assert_eq!(csv_field(text), cell, "{text:?}");
        }
    }

    proptest::proptest! {
        /// Whatever a server sends, its cell neither starts a formula nor breaks the row.
        #[test]
        fn no_cell_from_any_text_starts_a_formula(text in "\\PC*|[=+@\t\r-].*") {
            let cell = csv_field(&text);
            let value = unquoted(&cell);
            proptest::prop_assert!(!value.starts_with(FORMULA_STARTS), "{text:?} -> {cell:?}");
            proptest::prop_assert!(!cell.contains(['\n', '\r', '\t']), "{text:?} -> {cell:?}");
            // Quoted exactly when it holds a comma or a quote, and then every inner quote doubled.
            if value.contains([',', '"']) {
                proptest::prop_assert!(cell.starts_with('"') && cell.ends_with('"'));
            } else {
                proptest::prop_assert_eq!(&cell, &value);
            }
            // Nothing but the one `'` is added to the escaped text.
            let escaped = crate::escape::escape(&text);
            let neutralised = format!("'{}", escaped);
            proptest::prop_assert!(value == *escaped || value == neutralised, "{}", value);
        }
    }

    #[test]
    fn whole_lines_only_ever_reach_the_writer() {
        let mut w = WholeLines::new(Writes::default(), 16);
        // A row written in pieces, as `write!` does, across the buffer's size.
        for _ in 0..5 {
            let (target, seq) = ("127.0.0.1:22", 0);
            writeln!(w, "{target},{seq},banner").unwrap();
            w.write_all(b"partial").unwrap();
            w.write_all(b" line\n").unwrap();
        }
        let before_flush: Vec<Vec<u8>> = w.inner.0.clone();
        assert!(!before_flush.is_empty(), "writes happen before the flush once the buffer is full");
        w.flush().unwrap();
        let writes = &w.inner.0;
        assert!(writes.iter().all(|chunk| chunk.ends_with(b"\n")), "{writes:?}");
        assert_eq!(writes.concat(), b"127.0.0.1:22,0,banner\npartial line\n".repeat(5));
    }

    #[test]
    fn colour_follows_the_flag_then_the_environment_then_the_terminal() {
        let env = |no: Option<&str>, force: Option<&str>, term: Option<&str>| ColourEnv {
            no_color: no.map(Into::into),
            clicolor_force: force.map(Into::into),
            term: term.map(Into::into),
        };
        let plain = env(None, None, Some("xterm-256color"));
        assert!(colour_wanted(ColorChoice::Auto, &plain, true));
        assert!(!colour_wanted(ColorChoice::Auto, &plain, false));
        assert!(colour_wanted(ColorChoice::Always, &env(Some("1"), None, Some("dumb")), false));
        assert!(!colour_wanted(ColorChoice::Never, &env(None, Some("1"), None), true));
        assert!(!colour_wanted(ColorChoice::Auto, &env(Some("1"), None, None), true));
        assert!(
            colour_wanted(ColorChoice::Auto, &env(Some(""), None, None), true),
            "empty NO_COLOR is unset"
        );
        assert!(colour_wanted(ColorChoice::Auto, &env(None, Some("1"), None), false));
        assert!(!colour_wanted(ColorChoice::Auto, &env(None, Some("0"), None), false));
        assert!(!colour_wanted(ColorChoice::Auto, &env(Some("1"), Some("1"), None), false));
        assert!(!colour_wanted(ColorChoice::Auto, &env(None, None, Some("dumb")), true));
    }
}
