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
    // The remedy is about the server's silence, not the budget's pace.
    let remedy = d["remedy"][0].as_str().unwrap_or_default();
    assert!(remedy.contains("--banner-timeout") && !remedy.contains("refills"), "{remedy}");
    // The cut probes are kept, with what each saw: every connection the budget counted is listed,
    // and every address the budget names made one of them.
    let experiments = d["experiments"].as_array().expect("experiments");
    let cut: Vec<&serde_json::Value> = experiments
        .iter()
        .filter(|e| e["kind"] == "cut")
        .flat_map(|e| e["probes"].as_array().into_iter().flatten())
        .collect();
    let spent = d["budget"]["spent"].as_object().expect("budget.spent");
    assert_eq!(cut.len() as u64, spent.values().filter_map(|n| n.as_u64()).sum::<u64>(), "{d}");
    for p in &cut {
        assert_eq!((&p["outcome"], &p["end"]), (&"interrupted".into(), &"interrupted".into()), "{p}");
        assert!(p["timings_us"]["connected"].is_u64() && p["local"].is_string(), "what it saw is kept: {p}");
    }
    for source in spent.keys() {
        assert!(
            cut.iter().any(|p| p["source"] == source.as_str()),
            "{source} is in the budget, in no probe: {d}"
        );
    }
}
