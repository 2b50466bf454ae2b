//! The penalty ledger keeps one account per server, address and port, and remembers the software
//! seen there: a server on another port of the same host (OpenSSH 9.2, without penalties) is not
//! paced for the debt a first server ran up. Against the lab.

mod common;

use common::sshprobe;
use sshprobe::lab::{Behaviour, Lab, LabConfig};

fn ledger_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).expect("the ledger file");
    serde_json::from_str(&text).expect("the ledger is JSON")
}

#[test]
fn another_port_of_the_host_does_not_inherit_the_debt() {
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let lab = rt.block_on(Lab::start(LabConfig::default())).expect("the lab");
    let state = tempfile::tempdir().expect("a temp dir");
    let ledger = state.path().join("penalty-ledger.json");
    // A server that resets without a banner: its software is unknown, so it is paced, and what
    // it is owed goes into the ledger under its port.
    let reset = lab.addr(Behaviour::DenyReset);
    let first = sshprobe()
        .env("SSHPROBE_STATE_DIR", state.path())
        .args(["diagnose", &reset.to_string(), "--budget", "2", "--max-duration", "2s"])
        .output()
        .expect("sshprobe");
    let lines = ledger_lines(&ledger);
    assert!(
        lines.iter().any(|l| l["port"] == reset.port() && l["owed"].as_f64().is_some_and(|o| o > 0.0)),
        "no debt for {reset} in {lines:?}\n{}",
        String::from_utf8_lossy(&first.stderr)
    );
    // OpenSSH 9.2 on another port of the same host, at once: not paced by the first's debt.
    let old = lab.addr(Behaviour::PerSource);
    let second = sshprobe()
        .env("SSHPROBE_STATE_DIR", state.path())
        .args(["diagnose", &old.to_string(), "--budget", "2"])
        .output()
        .expect("sshprobe");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!stderr.contains("pacing"), "{old} was paced:\n{stderr}");
    let lines = ledger_lines(&ledger);
    assert!(
        lines.iter().any(|l| l["port"] == old.port() && l["software"] == "OpenSSH_9.2p1"),
        "the software at {old} is not remembered: {lines:?}"
    );
}
