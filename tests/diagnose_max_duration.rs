//! `diagnose --max-duration` is a hard cap: probes in flight at the limit are cut there, and the
//! diagnosis ends with what it has. Against the lab's tarpit, which accepts and never says a word.

mod common;

use common::sshprobe;
use sshprobe::lab::{Behaviour, Lab, LabConfig};
use std::time::Duration;

#[test]
fn max_duration_cuts_probes_at_a_tarpit() {
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let lab = rt.block_on(Lab::start(LabConfig::default())).expect("the lab");
    let tarpit = lab.addr(Behaviour::Tarpit);
    // A generous bound for the child (the banner wait alone is longer than the limit); it is killed
    // past it, which the exit status below would show.
    let out = sshprobe()
        .args(["diagnose", &tarpit.to_string(), "--max-duration", "2s", "-o", "jsonl"])
        .timeout(Duration::from_secs(20))
        .output()
        .expect("sshprobe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "not ended by itself:\n{stdout}\n{stderr}");
    let d: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON diagnosis");
    assert_eq!(d["verdict"], "not_tested", "{d}");
    assert_eq!(d["evidence"][0]["reason"], "time_limit_cut", "{d}");
    assert!(d["notes"].as_array().is_some_and(|n| n.is_empty()), "no budget note when time cut: {d}");
}
