//! Text from the network, made safe to show: the one place every output for people (and CSV) sends
//! what a server said through before it is written (the reports in [`crate::report`], and
//! [`crate::outcome::Classification::detail`], which quotes what a server said).
//!
//! A server's ident line, refusal message or junk is hostile input. Written raw, an `ESC [ 2 J`
//! clears the user's screen, an `ESC ] 0 ; … BEL` sets the terminal's title, a CR overwrites the
//! row it is in, a NUL or a newline breaks a CSV row, and a Unicode bidi override (`U+202E`) shows
//! the text in another order than it has (Trojan Source, CVE-2021-42574). [`escape`] replaces each
//! such character with a visible escape, so a terminal only ever receives printable text:
//!
//! | character | shown as |
//! |---|---|
//! | TAB, CR, LF | `\t`, `\r`, `\n` |
//! | other C0 controls (U+0000–U+001F), DEL (U+007F) | `\xNN` (as `bytes_text` in JSONL shows them) |
//! | C1 controls (U+0080–U+009F: `U+009B` is an 8-bit CSI) | `\u{9b}` |
//! | bidi controls (U+061C, U+200E–U+200F, U+202A–U+202E, U+2066–U+2069), line and paragraph separators (U+2028–U+2029) | `\u{202e}` |
//!
//! Everything else passes unchanged, backslashes included: the result is for reading, and it stays
//! the same when escaped again, so a line built from escaped parts can be escaped as a whole. The
//! exact bytes are in JSONL (`bytes_hex`). Bytes that are not UTF-8 never get this far: the
//! identification parser turns them into U+FFFD, so no lone C1 byte reaches the output either.
//!
//! JSON keeps every string's value: [`write_json`] writes the same characters as `\uXXXX` escapes,
//! which serde_json alone does only for C0 controls (DEL, C1 and bidi controls it writes raw).

use std::borrow::Cow;
use std::fmt::Write;
use std::io;

/// Whether `c` must not reach a terminal as it is.
/// Whether `c` is escaped in everything shown (for hand-written writers that must agree).
pub(crate) fn is_unsafe_char(c: char) -> bool {
    is_unsafe(c)
}

fn is_unsafe(c: char) -> bool {
    matches!(c,
        '\0'..='\x1f' | '\x7f' | '\u{80}'..='\u{9f}'
        | '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        | '\u{2028}' | '\u{2029}')
}

/// `text` with every character that could drive a terminal or reorder the text replaced by a
/// visible escape (see the module docs); borrowed when there is none, which is the usual case.
///
/// ```
/// use sshprobe::escape::escape;
/// assert_eq!(escape("SSH-2.0-\x1b]0;pwned\x07 ok"), r"SSH-2.0-\x1b]0;pwned\x07 ok");
/// ```
pub fn escape(text: &str) -> Cow<'_, str> {
    let Some(first) = text.find(is_unsafe) else {
        return Cow::Borrowed(text);
    };
    let mut out = String::with_capacity(text.len() + 16);
    out.push_str(&text[..first]);
    for c in text[first..].chars() {
        match c {
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c if c <= '\x7f' && is_unsafe(c) => {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if is_unsafe(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `text` escaped and in double quotes: how people-facing text quotes what a server said.
pub fn quoted(text: &str) -> String {
    format!("\"{}\"", escape(text))
}

/// Serializes `value` as compact JSON, as `serde_json::to_writer` does, but with every character
/// [`escape`] would replace written as a `\uXXXX` escape: the same value for a JSON reader, and
/// nothing a terminal acts on when someone reads the JSONL on one.
pub fn write_json<W: io::Write, T: serde::Serialize + ?Sized>(out: W, value: &T) -> serde_json::Result<()> {
    value.serialize(&mut serde_json::Serializer::with_formatter(out, TerminalSafeJson))
}

/// serde_json's compact formatter, escaping the characters serde_json leaves raw that a terminal
/// would act on (DEL, C1, bidi controls).
struct TerminalSafeJson;

impl serde_json::ser::Formatter for TerminalSafeJson {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        out: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        // serde_json has already escaped C0 controls, quotes and backslashes out of `fragment`; every
        // other character `is_unsafe` matches is DEL or starts with one of these UTF-8 lead bytes.
        if !fragment.bytes().any(|b| matches!(b, 0x7f | 0xc2 | 0xd8 | 0xe2)) {
            return out.write_all(fragment.as_bytes());
        }
        let mut rest = fragment;
        while let Some(at) = rest.find(is_unsafe) {
            out.write_all(&rest.as_bytes()[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            write!(out, "\\u{:04x}", u32::from(c))?;
            rest = &rest[at + c.len_utf8()..];
        }
        out.write_all(rest.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keeps_the_value_and_escapes_what_a_terminal_acts_on() {
        let every: String = (0..=0x3000u32).filter_map(char::from_u32).collect();
        let mut out = Vec::new();
        write_json(&mut out, &serde_json::json!({ "text": every, "n": 1 })).unwrap();
        let json = String::from_utf8(out).unwrap();
        assert!(!json.chars().any(is_unsafe), "{json}");
        assert!(json.contains(r"\u007f") && json.contains(r"\u009b") && json.contains(r"\u202e"), "{json}");
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back["text"].as_str(), Some(every.as_str()));
        // Ordinary records are written exactly as serde_json writes them.
        let plain = serde_json::json!({ "banner": "SSH-2.0-OpenSSH_9.2p1 ünï", "x": [1, 2.5, null] });
        let mut out = Vec::new();
        write_json(&mut out, &plain).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&plain).unwrap());
    }

    #[test]
    fn terminal_sequences_become_visible() {
        let hostile = "SSH-2.0-\x1b[31mRED\x1b]0;pwned\x07\x1b[2J ok";
        assert_eq!(escape(hostile), "SSH-2.0-\\x1b[31mRED\\x1b]0;pwned\\x07\\x1b[2J ok");
        assert_eq!(escape("a\tb\r\nc\0\x7f"), "a\\tb\\r\\nc\\x00\\x7f");
        assert_eq!(
            escape("\u{9b}2J \u{202e}txt.exe \u{2066}x\u{2069}"),
            "\\u{9b}2J \\u{202e}txt.exe \\u{2066}x\\u{2069}"
        );
    }

    #[test]
    fn safe_text_is_borrowed_and_kept() {
        for safe in
            ["", "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3", "a\\x1b stays", "ünïcödé \u{fffd} 日本", "\u{a0}"]
        {
            assert!(matches!(escape(safe), Cow::Borrowed(s) if s == safe), "{safe:?}");
        }
    }

    #[test]
    fn no_unsafe_character_survives_and_escaping_twice_changes_nothing() {
        for c in (0..=0x3000u32).filter_map(char::from_u32) {
            let text = c.to_string();
            let once = escape(&text);
            if is_unsafe(c) {
                assert!(
                    once.starts_with('\\') && once.bytes().all(|b| b.is_ascii_graphic()),
                    "{c:?}: {once}"
                );
            } else {
                assert_eq!(once, text);
            }
            assert_eq!(escape(&once), once, "{c:?}");
        }
    }
}
