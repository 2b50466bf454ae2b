//! Output formats, kept apart from the core and the engines: they only read results.
//!
//! - `table`: for people; aligned columns, colour only on a terminal and without `NO_COLOR`.
//! - `jsonl`: one JSON object per line, for pipelines; `probe` flushes whenever no further result is
//!   waiting, so lines stream without a write per line (fields in [`probe::JsonRecord`]).
//! - `csv`: one row per probe with a header.
//!
//! Whatever a server sent goes through [`crate::escape::escape`] before it reaches the table, the text of
//! a diagnosis or CSV: no byte from the network drives the user's terminal.

pub mod diagnose;
pub mod limits;
pub mod probe;

use std::io::IsTerminal;

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

/// Whether to colour output written to stdout: only on a terminal, and never with `NO_COLOR` set.
pub fn stdout_wants_colour() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
}

/// ANSI colours, or none.
#[derive(Debug, Clone, Copy)]
pub struct Palette {
    on: bool,
}

impl Palette {
    /// Colours when `on`.
    pub fn new(on: bool) -> Palette {
        Palette { on }
    }

    /// `text` in the SGR colour `code` (e.g. `"32"` green), padded to `width` first so columns align.
    pub fn paint(self, code: &str, text: &str, width: usize) -> String {
        if self.on {
            format!("\x1b[{code}m{text:<width$}\x1b[0m")
        } else {
            format!("{text:<width$}")
        }
    }
}

/// A CSV field: control characters escaped ([`crate::escape::escape`]: no raw ESC, NUL or line end from
/// the network), then quoted when it needs it (RFC 4180).
pub fn csv_field(s: &str) -> String {
    let s = crate::escape::escape(s);
    if s.contains([',', '"']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.into_owned()
    }
}
