//! The crate's layers import only downward (`src/lib.rs` lists them): a module may use the modules
//! listed before it, never one after it. Read from the source text, so a new upward import fails
//! here with the file and line that made it.

use std::path::Path;

/// The library's modules, lowest layer first, as `src/lib.rs` lists them.
const LAYERS: [&str; 11] = [
    "ident",
    "evidence",
    "outcome",
    "record",
    "server",
    "target",
    "engine",
    "scan",
    "experiment",
    "lab",
    "report",
];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|m| *m == module)
}

/// Every `crate::NAME` a line names.
fn crate_paths(line: &str) -> Vec<&str> {
    line.match_indices("crate::")
        .map(|(i, _)| {
            let rest = &line[i + "crate::".len()..];
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            &rest[..end]
        })
        .collect()
}

fn visit(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("reading src") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            visit(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

#[test]
fn layers_import_only_downward() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    visit(&src, &mut files);
    let mut upward = Vec::new();
    let mut checked = 0;
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src");
        let top = relative.components().next().and_then(|c| c.as_os_str().to_str()).unwrap_or("");
        let module = top.trim_end_matches(".rs");
        let Some(own) = rank(module) else { continue };
        checked += 1;
        let text = std::fs::read_to_string(file).expect("reading a source file");
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for used in crate_paths(line) {
                if rank(used).is_some_and(|r| r > own) {
                    upward.push(format!("{}:{}: {module} uses crate::{used}", relative.display(), n + 1));
                }
            }
        }
    }
    assert!(checked > 20, "only {checked} files checked: is src/ where it was?");
    assert!(upward.is_empty(), "imports that reach up a layer:\n{}", upward.join("\n"));
}

#[test]
fn crate_paths_are_found() {
    assert_eq!(crate_paths("use crate::engine::{Engine, ProbeRequest};"), ["engine"]);
    assert_eq!(
        crate_paths("let x = crate::report::probe::format_us(v) + crate::ident::X;"),
        ["report", "ident"]
    );
    assert!(crate_paths("use super::budget::Budget;").is_empty());
}
