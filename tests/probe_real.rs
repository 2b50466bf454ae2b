//! `probe` against real servers started by the tests: Debian's sshd (with a private hosts.deny and
//! MaxStartups settings), dropbear, nothing listening, and SYNs dropped inside a network namespace.

mod common;

use common::{dropbear, have, hold, jsonl, root_or_skip, Netns, Nft, Sshd};
use serde_json::Value;
use sshprobe::engine::connect::ConnectEngine;
use sshprobe::engine::{Engine, ProbeConfig, ProbeRequest};
use sshprobe::evidence::{End, ProbeOrder};
use sshprobe::outcome::{classify, KnownRefusal, Outcome};

fn probe_one(args: &[&str]) -> Value {
    let (mut lines, out) = jsonl(args);
    assert_eq!(lines.len(), 1, "one probe, one line; stderr: {}", String::from_utf8_lossy(&out.stderr));
    lines.remove(0)
}

#[test]
fn real_sshd_banner_with_the_jsonl_contract() {
    if !root_or_skip("real_sshd_banner") || !have("real_sshd_banner", &["sshd", "unshare"]) {
        return;
    }
    let sshd = Sshd::new().start();
    let target = sshd.addr.to_string();
    let (lines, out) = jsonl(&["probe", &target, "-o", "jsonl"]);
    assert_eq!(out.status.code(), Some(0), "exit 0 when every probe got a banner");
    let r = &lines[0];
    assert_eq!(r["target"], target.as_str());
    assert_eq!(r["outcome"], "banner");
    assert_eq!(r["success"], true);
    assert_eq!(r["banner"]["proto"], "2.0");
    assert!(r["banner"]["software"].as_str().unwrap().starts_with("OpenSSH_"), "{r}");
    assert!(r["banner"]["comments"].as_str().unwrap().starts_with("Debian"), "{r}");
    assert_eq!(r["end"], "we_closed");
    assert_eq!(r["remote"], target.as_str());
    assert!(r["local"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(r["sent_ident"], true);
    let t = &r["timings_us"];
    let (c, f, i, z) =
        (t["connected"].as_u64(), t["first_byte"].as_u64(), t["ident"].as_u64(), t["closed"].as_u64());
    assert!(c.unwrap() <= f.unwrap() && f <= i && i <= z, "{t}");
    let text = r["bytes_text"].as_str().unwrap();
    assert!(text.starts_with("SSH-2.0-OpenSSH_") && text.ends_with("\\r\\n"), "{text}");
    assert_eq!(
        hex::decode(r["bytes_hex"].as_str().unwrap()).unwrap().len() as u64,
        r["bytes_len"].as_u64().unwrap()
    );
}

#[test]
fn nothing_listening_is_refused() {
    let port = common::free_port();
    let r = probe_one(&["probe", &format!("127.0.0.1:{port}"), "-o", "jsonl"]);
    assert_eq!(r["outcome"], "refused");
    assert!(r.get("end").is_none(), "{r}");
}

#[test]
fn wrappers_denial_closes_or_resets_by_probe_order() {
    if !root_or_skip("wrappers_denial") || !have("wrappers_denial", &["sshd", "unshare"]) {
        return;
    }
    let sshd = Sshd::new().hosts_deny("sshd: ALL\n").start();
    let target = sshd.addr.to_string();
    // FACTS §2: the same denial reads as FIN to a client that waits, RST to one that spoke first.
    let wait = std::thread::spawn({
        let target = target.clone();
        move || probe_one(&["probe", &target, "-o", "jsonl"])
    });
    let first = probe_one(&["probe", &target, "--send-first", "-o", "jsonl"]);
    let wait = wait.join().expect("the waiting probe");
    for (r, outcome, end) in [(&wait, "closed_before_banner", "fin"), (&first, "reset_before_banner", "rst")]
    {
        assert_eq!(r["outcome"], outcome, "{r}\nsshd log:\n{}", sshd.log());
        assert_eq!(r["end"], end);
        assert_eq!(r["bytes_len"], 0);
        // Debian's libwrap child sleeps 5 s before it exits.
        let closed = r["timings_us"]["closed"].as_u64().unwrap();
        assert!(closed >= 4_000_000, "closed after {closed} µs: {r}");
    }
    assert!(
        sshd.log().contains("refused by tcp wrapper") || sshd.log().contains("refused connect"),
        "{}",
        sshd.log()
    );
}

#[test]
fn maxstartups_refusal_is_a_server_refusal_with_its_message() {
    if !root_or_skip("maxstartups_refusal") || !have("maxstartups_refusal", &["sshd"]) {
        return;
    }
    let sshd = Sshd::new().option("MaxStartups 1:100:1").start();
    let _held = hold(sshd.addr, None);
    let r = probe_one(&["probe", &sshd.addr.to_string(), "-o", "jsonl"]);
    assert_eq!(r["outcome"], "server_refusal", "{r}");
    assert_eq!(r["message"], "Exceeded MaxStartups");
    assert_eq!(r["refusal"], "exceeded_max_startups");
    assert_eq!(r["bytes_len"], 22);
    assert_eq!(r["bytes_text"], "Exceeded MaxStartups\\r\\n");
    // A listener drop: well under the 5 s of a wrappers denial.
    assert!(r["timings_us"]["closed"].as_u64().unwrap() < 1_000_000, "{r}");
}

#[test]
fn maxstartups_message_survives_the_reset_a_send_first_probe_provokes() {
    if !root_or_skip("maxstartups_send_first") || !have("maxstartups_send_first", &["sshd"]) {
        return;
    }
    let sshd = Sshd::new().option("MaxStartups 1:100:1").start();
    let _held = hold(sshd.addr, None);
    let config = ProbeConfig { order: ProbeOrder::SendFirst, ..ProbeConfig::default() };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let obs = rt.block_on(ConnectEngine::new(config).probe(ProbeRequest { remote: sshd.addr, source: None }));
    let c = classify(&obs);
    assert_eq!(c.outcome, Outcome::ServerRefusal, "{obs:?}");
    assert_eq!(c.refusal, Some(KnownRefusal::ExceededMaxStartups));
    assert!(matches!(obs.end, Some(End::Rst | End::Fin)), "{obs:?}");
}

#[test]
fn dropbear_banner() {
    if !root_or_skip("dropbear_banner") || !have("dropbear_banner", &["dropbear", "dropbearkey"]) {
        return;
    }
    let server = dropbear();
    let r = probe_one(&["probe", &server.addr.to_string(), "-o", "jsonl"]);
    assert_eq!(r["outcome"], "banner", "{r}");
    assert!(r["banner"]["software"].as_str().unwrap().starts_with("dropbear"), "{r}");
}

#[test]
fn dropped_syns_are_a_connect_timeout() {
    if !root_or_skip("dropped_syns") || !have("dropped_syns", &["ip", "nft", "sshd"]) {
        return;
    }
    let ns = Netns::new();
    let sshd = Sshd::new().in_netns(&ns).start();
    let _drop = Nft::new(Some(&ns), "input", &[&format!("tcp dport {} drop", sshd.addr.port())]);
    let r = probe_one(&["probe", &sshd.addr.to_string(), "--connect-timeout", "1500ms", "-o", "jsonl"]);
    assert_eq!(r["outcome"], "connect_timeout", "{r}");
    let closed = r["timings_us"]["closed"].as_u64().unwrap();
    assert!(closed >= 1_400_000, "{r}");
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
