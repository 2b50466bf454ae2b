//! `probe` against real servers, beyond the JSONL contract of probe_contract.rs: a server inside a
//! network namespace, and source addresses taken round-robin.

mod common;

use common::{have, jsonl, root_or_skip, Netns, Sshd};
use serde_json::Value;

fn probe_one(args: &[&str]) -> Value {
    let (mut lines, out) = jsonl(args);
    assert_eq!(lines.len(), 1, "one probe, one line; stderr: {}", String::from_utf8_lossy(&out.stderr));
    lines.remove(0)
}

#[test]
fn banner_inside_a_namespace() {
    if !root_or_skip("banner_in_netns") || !have("banner_in_netns", &["ip", "sshd"]) {
        return;
    }
    let ns = Netns::new();
    let sshd = Sshd::new().in_netns(&ns).start();
    let r = probe_one(&["probe", &sshd.addr.to_string(), "-o", "jsonl"]);
    assert_eq!(r["outcome"], "banner", "{r}\n{}", sshd.log());
    assert_eq!(r["local"].as_str().unwrap().split(':').next(), Some(ns.outer_ip.to_string().as_str()));
}

#[test]
fn source_address_shows_in_local() {
    if !root_or_skip("source_address") || !have("source_address", &["sshd"]) {
        return;
    }
    let sshd = Sshd::new().start();
    let (lines, _) = jsonl(&[
        "probe",
        &sshd.addr.to_string(),
        "--source",
        "127.0.0.2",
        "--source",
        "127.0.0.3",
        "--count",
        "2",
        "--interval",
        "50ms",
        "-o",
        "jsonl",
    ]);
    let locals: Vec<&str> =
        lines.iter().map(|r| r["local"].as_str().unwrap().split(':').next().unwrap()).collect();
    assert_eq!(locals, ["127.0.0.2", "127.0.0.3"]);
    let seqs: Vec<u64> = lines.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [0, 1]);
}
