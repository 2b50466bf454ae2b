//! The crate's layers import only downward, read from the source text so that a new upward import
//! fails here with the file and line that made it.
//!
//! - The library's layers are the `mod` declarations of `src/lib.rs`, in their order, lowest first: a
//!   module may use the modules declared before it, never one declared after it. The list is read
//!   from `src/lib.rs` itself, so a new module is covered the moment it is declared.
//! - Inside `engine::raw`, the same rule over `src/engine/raw/mod.rs`'s declarations: packet views
//!   (`wire`) below the pure TCP machine (`tcp`) below the host setup, sockets and thread.
//! - Inside `experiment::diagnose`, the pure files (everything but `gather`, which runs the
//!   experiments) import no I/O: not `gather`, and no library layer from `engine` up, nor tokio.
//!
//! Every path that starts at the crate root counts, wherever it stands (a `use`, an expression, a
//! type), including grouped and multi-line imports (`use crate::{a, b::{c, d}}`) and `super::`
//! chains that climb out of the file's own module. Comments and string literals do not count.

use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The names of the `mod` declarations of a module file, in their order.
fn declared_modules(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let rest = ["pub mod ", "pub(crate) mod ", "mod "].iter().find_map(|p| line.strip_prefix(p));
        if let Some(name) = rest.and_then(|r| r.strip_suffix(';')) {
            names.push(name.trim().to_string());
        }
    }
    names
}

/// The text with comments, string and char literals blanked (newlines kept, so line numbers stay).
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |out: &mut String, s: &[u8]| {
        for &c in s {
            out.push(if c == b'\n' { '\n' } else { ' ' });
        }
    };
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            let end = b[i..].iter().position(|&c| c == b'\n').map_or(b.len(), |p| i + p);
            blank(&mut out, &b[i..end]);
            i = end;
        } else if b[i..].starts_with(b"/*") {
            let end = text[i + 2..].find("*/").map_or(b.len(), |p| i + 2 + p + 2);
            blank(&mut out, &b[i..end]);
            i = end;
        } else if b[i] == b'r'
            && (b[i..].starts_with(b"r\"") || b[i..].starts_with(b"r#"))
            && !ident_byte(b, i)
        {
            // A raw string: r"...", r#"..."#.
            let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
            let open = i + 1 + hashes;
            if b.get(open) != Some(&b'"') {
                out.push(b[i] as char);
                i += 1;
                continue;
            }
            let close = format!("\"{}", "#".repeat(hashes));
            let end = text[open + 1..].find(&close).map_or(b.len(), |p| open + 1 + p + close.len());
            blank(&mut out, &b[i..end]);
            i = end;
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(b.len());
            blank(&mut out, &b[i..end]);
            i = end;
        } else if b[i] == b'\'' {
            // A char literal ('a', '\n', '\u{1b}'), not a lifetime ('a).
            let end = if b.get(i + 1) == Some(&b'\\') {
                b[i + 2..].iter().position(|&c| c == b'\'').map(|p| i + 2 + p + 1)
            } else if b.get(i + 2) == Some(&b'\'') {
                Some(i + 3)
            } else {
                None
            };
            match end {
                Some(end) => {
                    blank(&mut out, &b[i..end]);
                    i = end;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            let c = text[i..].chars().next().expect("in bounds");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

fn ident_byte(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

/// One path that leaves the file's own module: its segments from the crate root, and its line.
#[derive(Debug, PartialEq)]
struct UsedPath {
    segments: Vec<String>,
    line: usize,
}

/// Every path in `code` that starts with `crate::`, `super::` or `self::`, resolved against the
/// file's module path `own` (segments from the crate root), with `{...}` groups expanded.
fn used_paths(code: &str, own: &[String]) -> Vec<UsedPath> {
    let b = code.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let starts =
            |kw: &str| b[i..].starts_with(kw.as_bytes()) && !ident_byte(b, i) && (i == 0 || b[i - 1] != b':');
        let root: Option<Vec<String>> = if starts("crate::") {
            Some(Vec::new())
        } else if starts("super::") || starts("self::") {
            Some(own.to_vec())
        } else {
            None
        };
        let Some(mut base) = root else {
            i += 1;
            continue;
        };
        let line = code[..i].matches('\n').count() + 1;
        // Walk `super::` / `self::` prefixes.
        let mut j = i;
        if starts("crate::") {
            j += "crate::".len();
        }
        loop {
            if code[j..].starts_with("super::") {
                base.pop();
                j += "super::".len();
            } else if code[j..].starts_with("self::") {
                j += "self::".len();
            } else {
                break;
            }
        }
        let (paths, end) = path_tree(code, j);
        for p in paths {
            let mut segments = base.clone();
            segments.extend(p);
            found.push(UsedPath { segments, line });
        }
        i = end.max(i + 1);
    }
    found
}

/// Parses a path tail at `at`: `a::b::c` or `a::{b, c::{d}}`; returns the expanded segment lists and
/// where it ended.
fn path_tree(code: &str, at: usize) -> (Vec<Vec<String>>, usize) {
    let b = code.as_bytes();
    let mut prefix = Vec::new();
    let mut i = at;
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < b.len() && b[i] == b'{' {
            let mut out = Vec::new();
            i += 1;
            loop {
                while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b',') {
                    i += 1;
                }
                if i >= b.len() {
                    return (out, i);
                }
                if b[i] == b'}' {
                    return (out, i + 1);
                }
                let (inner, end) = path_tree(code, i);
                for p in inner {
                    let mut whole = prefix.clone();
                    whole.extend(p);
                    out.push(whole);
                }
                // Skip an `as name` or anything else up to the next separator.
                i = end;
                while i < b.len() && b[i] != b',' && b[i] != b'}' {
                    i += 1;
                }
            }
        }
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'*') {
            i += 1;
        }
        if i == start {
            return (vec![prefix], i);
        }
        prefix.push(code[start..i].to_string());
        let mut k = i;
        while k < b.len() && b[k].is_ascii_whitespace() {
            k += 1;
        }
        if code[k..].starts_with("::") {
            i = k + 2;
        } else {
            return (vec![prefix], i);
        }
    }
}

/// The module path of a source file under `src/` (`engine/raw/mod.rs` is `engine::raw`).
fn module_path(relative: &Path) -> Vec<String> {
    let mut segments: Vec<String> =
        relative.iter().map(|s| s.to_string_lossy().trim_end_matches(".rs").to_string()).collect();
    if segments.last().is_some_and(|s| s == "mod" || s == "lib") {
        segments.pop();
    }
    // `serverlog_tests.rs` is `serverlog`'s test module, included with `#[path]`.
    if let Some(last) = segments.last_mut() {
        if let Some(stem) = last.strip_suffix("_tests") {
            *last = stem.to_string();
        }
    }
    segments
}

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("reading src") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// A rule over one set of sibling modules: `order` lowest first, under `parent`.
struct Layers<'a> {
    parent: &'a [&'a str],
    order: Vec<String>,
}

impl Layers<'_> {
    fn rank(&self, segments: &[String]) -> Option<usize> {
        if segments.len() <= self.parent.len() || !segments.iter().zip(self.parent).all(|(a, b)| a == b) {
            return None;
        }
        self.order.iter().position(|m| *m == segments[self.parent.len()])
    }
}

/// Every violation of the crate's layer rules in the source tree under `root`.
fn violations(root: &Path) -> (Vec<String>, usize) {
    let read =
        |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_else(|e| panic!("reading src/{p}: {e}"));
    let library = Layers { parent: &[], order: declared_modules(&read("lib.rs")) };
    let raw = Layers { parent: &["engine", "raw"], order: declared_modules(&read("engine/raw/mod.rs")) };
    let io_layers_from = library.order.iter().position(|m| m == "engine").expect("lib.rs declares engine");
    let mut files = Vec::new();
    rust_files(root, &mut files);
    let mut found = Vec::new();
    let mut checked = 0;
    for file in &files {
        let relative = file.strip_prefix(root).expect("under src");
        let own = module_path(relative);
        // The binary (main.rs, cli/) sits above the library and may use all of it.
        let Some(own_rank) = library.rank(&own) else { continue };
        checked += 1;
        let code = code_only(&std::fs::read_to_string(file).expect("reading a source file"));
        let at = |line: usize| format!("src/{}:{line}", relative.display());
        for used in used_paths(&code, &own) {
            let path = used.segments.join("::");
            if library.rank(&used.segments).is_some_and(|r| r > own_rank) {
                found.push(format!(
                    "{}: {} uses crate::{path}, a layer above it",
                    at(used.line),
                    own.join("::")
                ));
            }
            if let (Some(mine), Some(theirs)) = (raw.rank(&own), raw.rank(&used.segments)) {
                if theirs > mine {
                    found.push(format!(
                        "{}: {} uses crate::{path}, above it in engine::raw",
                        at(used.line),
                        own.join("::")
                    ));
                }
            }
            let pure_diagnose = own.starts_with(&["experiment".into(), "diagnose".into()])
                && own.len() > 2
                && own[2] != "gather";
            if pure_diagnose {
                let io =
                    used.segments.starts_with(&["experiment".into(), "diagnose".into(), "gather".into()])
                        || library
                            .rank(&used.segments)
                            .is_some_and(|r| r >= io_layers_from && used.segments[0] != "experiment")
                        || used.segments.starts_with(&["experiment".into(), "holder".into()])
                        || used.segments.starts_with(&["experiment".into(), "budget".into()]);
                if io {
                    found.push(format!(
                        "{}: {} is pure but uses crate::{path}",
                        at(used.line),
                        own.join("::")
                    ));
                }
            }
        }
        let pure_diagnose = relative.starts_with("experiment/diagnose")
            && !relative.ends_with("gather.rs")
            && !relative.ends_with("mod.rs");
        if pure_diagnose && code.contains("tokio::") {
            found.push(format!("src/{}: pure diagnose file uses tokio", relative.display()));
        }
    }
    (found, checked)
}

#[test]
fn layers_import_only_downward() {
    let (found, checked) = violations(&src());
    assert!(checked > 40, "only {checked} files checked: is src/ where it was?");
    assert!(found.is_empty(), "imports that break the layers:\n{}", found.join("\n"));
}

#[test]
fn every_library_module_is_a_layer() {
    let order = declared_modules(&std::fs::read_to_string(src().join("lib.rs")).expect("lib.rs"));
    assert!(order.len() >= 16, "{order:?}");
    for entry in std::fs::read_dir(src()).expect("src") {
        let path = entry.expect("entry").path();
        let name = path.file_stem().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let is_module = path.is_dir() || path.extension().is_some_and(|e| e == "rs");
        if !is_module || ["lib", "main", "cli"].contains(&name.as_str()) || name.ends_with("_tests") {
            continue;
        }
        assert!(order.contains(&name), "src/{name} is not declared in lib.rs, so no layer rule covers it");
    }
}

fn segs(s: &str) -> Vec<String> {
    s.split("::").map(String::from).collect()
}

#[test]
fn grouped_multiline_and_relative_paths_are_resolved() {
    let own = segs("engine::raw::tcp");
    let code = code_only(
        "use crate::{report::Format as _, engine::{Engine, any}};\nuse crate::{\n    serve::x,\n    scan,\n};\nuse super::wire::TcpRepr;\nuse super::super::super::lab::Lab;\nlet x = crate::record::ProbeRecord::new(); // crate::serve::hidden\nlet s = \"crate::serve::in_a_string\";",
    );
    let used: Vec<(String, usize)> =
        used_paths(&code, &own).into_iter().map(|u| (u.segments.join("::"), u.line)).collect();
    assert_eq!(
        used,
        [
            ("report::Format".to_string(), 1),
            ("engine::Engine".to_string(), 1),
            ("engine::any".to_string(), 1),
            ("serve::x".to_string(), 2),
            ("scan".to_string(), 2),
            ("engine::raw::wire::TcpRepr".to_string(), 6),
            ("lab::Lab".to_string(), 7),
            ("record::ProbeRecord::new".to_string(), 8),
        ]
    );
}

/// The rule catches each kind of upward import, checked on copies of the real tree with one
/// violation injected at a time.
#[test]
fn injected_violations_fail() {
    let injections: [(&str, &str); 6] = [
        ("ident.rs", "use crate::{report::Format as _};\n"),
        ("ident.rs", "use crate::{\n    escape,\n    serve::ServeOptions,\n};\n"),
        ("escape.rs", "use crate::serve::config::Module;\n"),
        ("outcome.rs", "use crate::serverlog::LogEvent;\n"),
        ("engine/raw/wire/tcp.rs", "use super::super::socket::RawSockets;\n"),
        ("experiment/diagnose/decide.rs", "use super::gather::diagnose;\n"),
    ];
    let tree = tempfile::tempdir().expect("a temp dir");
    copy_tree(&src(), tree.path());
    assert!(violations(tree.path()).0.is_empty(), "the copy is clean");
    for (file, line) in injections {
        let path = tree.path().join(file);
        let original = std::fs::read_to_string(&path).expect("the file");
        std::fs::write(&path, format!("{line}{original}")).expect("injecting");
        let (found, _) = violations(tree.path());
        assert!(
            found.iter().any(|v| v.starts_with(&format!("src/{file}:"))),
            "{file} <- {line:?} passed: {found:?}"
        );
        std::fs::write(&path, original).expect("restoring");
    }
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("reading") {
        let path = entry.expect("entry").path();
        let target = to.join(path.file_name().expect("a name"));
        if path.is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_tree(&path, &target);
        } else {
            std::fs::copy(&path, &target).expect("copy");
        }
    }
}
