//! `diagnose` against real servers started by the tests: each cause gets its verdict, from both
//! engines alike.

mod common;

use common::{dropbear, have, hold, jsonl, openssh10_root, root_or_skip, Netns, Nft, Sshd};
use serde_json::Value;
use std::net::IpAddr;

/// Runs `diagnose` once with `--engine` `engine`.
fn diagnose_with(engine: &str, target: &str, extra: &[&str]) -> Value {
    let mut args = vec!["diagnose", target, "-o", "jsonl", "--engine", engine];
    args.extend_from_slice(extra);
    let (mut lines, out) = jsonl(&args);
    assert_eq!(lines.len(), 1, "--engine {engine}: stderr: {}", String::from_utf8_lossy(&out.stderr));
    let d = lines.remove(0);
    let ok = d["verdict"] == "ok";
    assert_eq!(out.status.code(), Some(if ok { 0 } else { 1 }), "--engine {engine}: {d}");
    d
}

/// One raw-engine run at a time in this process: a second would find the first's run lock (it
/// owns the network namespace's raw source ports and firewall table) and refuse to start.
static RAW_ENGINE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Diagnoses `target` with the connect engine and then (as root) with the raw engine: both must
/// reach the same verdict with the same confidence. Returns the connect engine's diagnosis.
fn diagnose(target: &str, extra: &[&str]) -> Value {
    let d = diagnose_with("connect", target, extra);
    if common::need_root(&format!("diagnose {target} --engine raw")) {
        let raw = {
            let _one_at_a_time = RAW_ENGINE.lock().unwrap_or_else(|p| p.into_inner());
            diagnose_with("raw", target, extra)
        };
        assert_eq!(
            (verdict(&raw), &raw["confidence"]),
            (verdict(&d), &d["confidence"]),
            "the engines disagree on {target}:\nraw: {raw:#}\nconnect: {d:#}"
        );
        within_budget(&raw);
    }
    d
}

fn verdict(d: &Value) -> &str {
    d["verdict"].as_str().unwrap_or("?")
}

fn remedy(d: &Value) -> String {
    d["remedy"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The piece of evidence of `kind` (typed: its numbers beside its text), if the diagnosis cites one.
fn evidence<'a>(d: &'a Value, kind: &str) -> Option<&'a Value> {
    d["evidence"].as_array()?.iter().find(|e| e["kind"] == kind)
}

/// Every connection diagnose made stayed within its budget.
fn within_budget(d: &Value) {
    let per = d["budget"]["per_source"].as_u64().unwrap();
    for (source, spent) in d["budget"]["spent"].as_object().unwrap() {
        assert!(spent.as_u64().unwrap() <= per, "{source} spent {spent} > {per}");
    }
}

#[test]
fn hosts_deny_is_access_denied() {
    if !root_or_skip("hosts_deny_verdict") || !have("hosts_deny_verdict", &["sshd", "unshare"]) {
        return;
    }
    let sshd = Sshd::new().hosts_deny("sshd: ALL\n").start();
    let d = diagnose(&sshd.addr.to_string(), &[]);
    assert_eq!(verdict(&d), "access_denied", "{d:#}");
    assert_eq!(d["confidence"], "high");
    // Debian's libwrap child sleeps 5 s before it closes (FACTS §3).
    let close = evidence(&d, "zero_byte_close").unwrap_or_else(|| panic!("no zero_byte_close: {d:#}"));
    let median = close["median_us"].as_u64().unwrap();
    assert!((4_500_000..=6_500_000).contains(&median), "{d:#}");
    assert!(evidence(&d, "wrappers_delay").is_some(), "{d:#}");
    assert!(remedy(&d).contains("hosts.allow"), "{d:#}");
    within_budget(&d);
}

#[test]
fn maxstartups_at_capacity_held_by_another_address() {
    if !root_or_skip("maxstartups_verdict") || !have("maxstartups_verdict", &["sshd"]) {
        return;
    }
    let sshd = Sshd::new().option("MaxStartups 2").start();
    let other: IpAddr = "127.0.0.5".parse().unwrap();
    let _held: Vec<_> = (0..2).map(|_| hold(sshd.addr, Some(other))).collect();
    let d = diagnose(&sshd.addr.to_string(), &[]);
    assert_eq!(verdict(&d), "maxstartups", "{d:#}");
    let said = evidence(&d, "refusal_message").unwrap_or_else(|| panic!("no refusal_message: {d:#}"));
    assert_eq!(said["refusal"], "exceeded_max_startups", "{d:#}");
    assert!(evidence(&d, "refused_everywhere").is_some(), "{d:#}");
    assert!(remedy(&d).contains("MaxStartups"), "{d:#}");
    within_budget(&d);
}

#[test]
fn per_source_maxstartups_from_the_probing_address() {
    if !root_or_skip("per_source_verdict") || !have("per_source_verdict", &["sshd"]) {
        return;
    }
    let sshd = Sshd::new().option("PerSourceMaxStartups 2").start();
    let _held: Vec<_> = (0..2).map(|_| hold(sshd.addr, Some("127.0.0.1".parse().unwrap()))).collect();
    let d = diagnose(&sshd.addr.to_string(), &[]);
    assert_eq!(verdict(&d), "per_source_limit", "{d:#}");
    assert!(remedy(&d).contains("PerSourceMaxStartups"), "{d:#}");
}

#[test]
fn nothing_listening() {
    let d = diagnose(&format!("127.0.0.1:{}", common::free_port()), &[]);
    assert_eq!(verdict(&d), "not_listening", "{d:#}");
}

#[test]
fn dropped_syns_are_filtered() {
    if !root_or_skip("filtered_verdict") || !have("filtered_verdict", &["ip", "nft", "sshd"]) {
        return;
    }
    let ns = Netns::new();
    let sshd = Sshd::new().in_netns(&ns).start();
    let _drop = Nft::new(Some(&ns), "input", &[&format!("tcp dport {} drop", sshd.addr.port())]);
    let d = diagnose(&sshd.addr.to_string(), &["--connect-timeout", "1s"]);
    assert_eq!(verdict(&d), "filtered", "{d:#}");
    assert!(remedy(&d).contains("firewall"), "{d:#}");
}

#[test]
fn healthy_server_is_ok() {
    if !root_or_skip("ok_verdict") || !have("ok_verdict", &["sshd"]) {
        return;
    }
    let sshd = Sshd::new().start();
    let d = diagnose(&sshd.addr.to_string(), &[]);
    assert_eq!(verdict(&d), "ok", "{d:#}");
    assert!(d["server"].as_str().unwrap().starts_with("OpenSSH_"));
    within_budget(&d);
}

#[test]
fn dropbear_beyond_five_from_one_address_is_per_source() {
    if !root_or_skip("dropbear_verdict") || !have("dropbear_verdict", &["dropbear", "dropbearkey"]) {
        return;
    }
    let server = dropbear();
    let _held: Vec<_> = (0..5).map(|_| hold(server.addr, Some("127.0.0.1".parse().unwrap()))).collect();
    let d = diagnose(&server.addr.to_string(), &[]);
    assert_eq!(verdict(&d), "per_source_limit", "{d:#}");
    assert!(remedy(&d).contains("MAX_UNAUTH_PER_IP"), "{d:#}");
}

#[test]
fn openssh10_penalty_after_a_burst_of_banner_grabs() {
    if !root_or_skip("openssh10_penalty") || !have("openssh10_penalty", &["unshare", "chroot"]) {
        return;
    }
    let Some(root) = openssh10_root("openssh10_penalty") else { return };
    let sshd = Sshd::new().root(&root).start();
    let target = sshd.addr.to_string();
    // FACTS §5: about 15-19 banner grabs from one address, then `Not allowed at this time`.
    let (burst, _) = jsonl(&["probe", &target, "--count", "25", "--interval", "10ms", "-o", "jsonl"]);
    assert!(burst[0]["banner"]["software"].as_str().unwrap().starts_with("OpenSSH_10"), "{}", burst[0]);
    assert_eq!(burst.last().unwrap()["message"], "Not allowed at this time", "the burst was not penalised");
    let d = diagnose(&target, &[]);
    assert_eq!(verdict(&d), "penalized", "{d:#}");
    assert!(remedy(&d).contains("PerSourcePenaltyExemptList"), "{d:#}");
}

#[test]
fn openssh10_at_capacity_is_maxstartups_with_the_new_line() {
    if !root_or_skip("openssh10_maxstartups") || !have("openssh10_maxstartups", &["unshare", "chroot"]) {
        return;
    }
    let Some(root) = openssh10_root("openssh10_maxstartups") else { return };
    let sshd = Sshd::new().root(&root).option("PerSourcePenalties no").option("MaxStartups 2").start();
    let _held: Vec<_> = (0..2).map(|_| hold(sshd.addr, Some("127.0.0.6".parse().unwrap()))).collect();
    let d = diagnose(&sshd.addr.to_string(), &[]);
    assert_eq!(verdict(&d), "maxstartups", "{d:#}");
    let said = d["experiments"][0]["probes"][0]["message"].as_str().unwrap_or_default().to_string();
    assert_eq!(said, "Not allowed at this time", "{d:#}");
}
