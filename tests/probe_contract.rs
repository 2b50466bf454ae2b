//! The JSONL contract, checked field by field on every kind of record a real server produces, and
//! the real-server facts of docs/facts.md that the classifier rests on: Debian's OpenSSH 9.2 and
//! OpenSSH 10 (a Debian 13 root), dropbear, nothing listening, dropped SYNs.
//!
//! Run with `--nocapture` to see each record: they are the measurements behind the assertions.

mod common;

use common::{have, hold, jsonl, openssh10_root, root_or_skip, Dropbear, Netns, Nft, Sshd};
use serde_json::Value;
use std::net::{IpAddr, SocketAddr};

/// One probe through the CLI, its record checked against the contract and printed.
fn probe_one(args: &[&str]) -> Value {
    let mut all = vec!["probe", "-o", "jsonl"];
    all.extend_from_slice(args);
    let (mut lines, out) = jsonl(&all);
    assert_eq!(lines.len(), 1, "one probe, one line; stderr: {}", String::from_utf8_lossy(&out.stderr));
    let r = lines.remove(0);
    common::check_record(&r);
    eprintln!("{}", r);
    r
}

fn us(r: &Value, k: &str) -> u64 {
    r["timings_us"][k].as_u64().unwrap_or_else(|| panic!("no timings_us.{k}: {r}"))
}

#[test]
fn openssh9_banner_record() {
    if !root_or_skip("openssh9_banner_record") || !have("openssh9_banner_record", &["sshd"]) {
        return;
    }
    let sshd = Sshd::new().start();
    let target = sshd.addr.to_string();
    let r = probe_one(&[&target]);
    assert_eq!((r["outcome"].as_str(), r["end"].as_str()), (Some("banner"), Some("we_closed")), "{r}");
    assert_eq!(r["target"], target.as_str());
    assert_eq!(r["remote"], target.as_str());
    assert_eq!(r["banner"]["proto"], "2.0");
    let version = sshd.version(); // OpenSSH_9.2
    let software = r["banner"]["software"].as_str().expect("software");
    assert!(software.starts_with(&version), "{software} vs sshd -V {version}");
    assert!(r["banner"]["comments"].as_str().expect("Debian's comment").starts_with("Debian-"), "{r}");
    assert_eq!(r["sent_ident"], true, "the probe answers with its ident after the banner");
    // sshd's whole first flight is its ident line: it waits for ours before its KEXINIT.
    let line = format!("SSH-2.0-{software} {}\r\n", r["banner"]["comments"].as_str().expect("comments"));
    assert_eq!(hex::decode(r["bytes_hex"].as_str().expect("hex")).expect("hex"), line.as_bytes());
}

#[test]
fn nothing_listening_record() {
    let target = format!("127.0.0.1:{}", common::free_port());
    let r = probe_one(&[&target]);
    assert_eq!(r["outcome"], "refused", "{r}");
    assert_eq!((r["bytes_len"].as_u64(), r["sent_ident"].as_bool()), (Some(0), Some(false)), "{r}");
    // The same with --send-first: there is nothing to send on.
    let r = probe_one(&[&target, "--send-first"]);
    assert_eq!((r["outcome"].as_str(), r["order"].as_str()), (Some("refused"), Some("send_first")), "{r}");
}

/// docs/facts.md §2: Debian's libwrap child sends nothing and exits after 5 s; the probe order decides FIN
/// or RST.
#[test]
fn openssh9_wrappers_denial_records() {
    let test = "openssh9_wrappers_denial_records";
    if !root_or_skip(test) || !have(test, &["sshd", "unshare"]) {
        return;
    }
    let sshd = Sshd::new().hosts_deny("sshd: ALL\n").start();
    let target = sshd.addr.to_string();
    let waiting = std::thread::spawn({
        let target = target.clone();
        move || probe_one(&[&target])
    });
    let first = probe_one(&[&target, "--send-first"]);
    let waiting = waiting.join().expect("the waiting probe");
    for (r, outcome, end, sent) in
        [(&waiting, "closed_before_banner", "fin", false), (&first, "reset_before_banner", "rst", true)]
    {
        assert_eq!((r["outcome"].as_str(), r["end"].as_str()), (Some(outcome), Some(end)), "{r}");
        assert_eq!((r["bytes_len"].as_u64(), r["bytes_hex"].as_str()), (Some(0), Some("")), "{r}");
        assert_eq!(r["sent_ident"].as_bool(), Some(sent), "{r}");
        assert!(us(r, "connected") < us(r, "closed"));
        assert!(us(r, "closed") - us(r, "connected") >= 4_000_000, "the 5 s libwrap sleep: {r}");
    }
}

/// docs/facts.md §3: OpenSSH 8.2-9.7 drops at its listener with `Exceeded MaxStartups\r\n` (22 bytes),
/// in both probe orders (the message arrives before the RST a send-first probe provokes).
#[test]
fn openssh9_maxstartups_records() {
    let test = "openssh9_maxstartups_records";
    if !root_or_skip(test) || !have(test, &["sshd"]) {
        return;
    }
    let sshd = Sshd::new().option("MaxStartups 1:100:1").start();
    let _held = hold(sshd.addr, None);
    let target = sshd.addr.to_string();
    for order in [None, Some("--send-first")] {
        let args: Vec<&str> = std::iter::once(target.as_str()).chain(order).collect();
        let r = probe_one(&args);
        assert_eq!(r["outcome"], "server_refusal", "{r}");
        assert_eq!(r["message"], "Exceeded MaxStartups");
        assert_eq!(r["refusal"], "exceeded_max_startups");
        assert_eq!(
            hex::decode(r["bytes_hex"].as_str().expect("hex")).expect("hex"),
            b"Exceeded MaxStartups\r\n"
        );
        assert!(matches!(r["end"].as_str(), Some("fin" | "rst")), "{r}");
        // A listener drop, not a 5 s wrappers sleep (docs/facts.md §3: well under a millisecond here).
        assert!(us(&r, "closed") < 2_000_000, "{r}");
    }
}

/// docs/facts.md §3: PerSourceMaxStartups sends the same bytes as MaxStartups; another source address
/// still gets the banner.
#[test]
fn openssh9_per_source_maxstartups_spares_other_addresses() {
    let test = "openssh9_per_source_maxstartups_spares_other_addresses";
    if !root_or_skip(test) || !have(test, &["sshd"]) {
        return;
    }
    let sshd = Sshd::new().option("PerSourceMaxStartups 1").start();
    let _held = hold(sshd.addr, Some(IpAddr::from([127, 0, 0, 1])));
    let target = sshd.addr.to_string();
    let same = probe_one(&[&target, "--source", "127.0.0.1"]);
    assert_eq!(
        (same["outcome"].as_str(), same["refusal"].as_str()),
        (Some("server_refusal"), Some("exceeded_max_startups")),
        "{same}"
    );
    let other = probe_one(&[&target, "--source", "127.0.0.2"]);
    assert_eq!(other["outcome"], "banner", "{other}");
    assert!(other["local"].as_str().expect("local").starts_with("127.0.0.2:"), "{other}");
}

#[test]
fn dropbear_records() {
    let test = "dropbear_records";
    if !root_or_skip(test) || !have(test, &["dropbear", "dropbearkey"]) {
        return;
    }
    let server = Dropbear::new().start();
    let target = server.addr.to_string();
    // From another address than the held connections below, so that this probe's own connection,
    // until dropbear's child has seen it close, does not count toward their per-address limit.
    let r = probe_one(&[&target, "--source", "127.0.0.3"]);
    assert_eq!(r["outcome"], "banner", "{r}");
    let version = server.version(); // v2022.83
    assert_eq!(r["banner"]["software"], format!("dropbear_{}", version.trim_start_matches('v')), "{r}");
    // docs/facts.md §3: over MAX_UNAUTH_PER_IP (5) dropbear closes at its listener without a byte.
    let _held: Vec<_> = (0..5).map(|_| hold(server.addr, None)).collect();
    let r = probe_one(&[&target]);
    assert_eq!(r["outcome"], "closed_before_banner", "{r}");
    assert_eq!(r["bytes_len"], 0);
    assert!(us(&r, "closed") < 2_000_000, "a listener drop, not a 5 s wrappers sleep: {r}");
    // Another source address is not over the per-address limit.
    let r = probe_one(&[&target, "--source", "127.0.0.2"]);
    assert_eq!(r["outcome"], "banner", "{r}");
}

/// docs/facts.md §3: a dropped SYN; the kernel retries until the connect timeout.
#[test]
fn dropped_syns_record() {
    let test = "dropped_syns_record";
    if !root_or_skip(test) || !have(test, &["ip", "nft"]) {
        return;
    }
    let ns = Netns::new();
    let port = common::free_port();
    let fw = Nft::drop_syns(Some(&ns), port);
    let target = SocketAddr::new(ns.inner_ip, port).to_string();
    let r = probe_one(&[&target, "--connect-timeout", "1200ms"]);
    assert_eq!(r["outcome"], "connect_timeout", "{r}");
    assert!(us(&r, "closed") >= 1_100_000, "{r}");
    assert!(r.get("end").is_none() && r["timings_us"].get("connected").is_none(), "{r}");
    // Without the rule, nothing listens there: the namespace's kernel answers with RST.
    drop(fw);
    let r = probe_one(&[&target, "--connect-timeout", "1200ms"]);
    assert_eq!(r["outcome"], "refused", "{r}");
}

/// OpenSSH 10 (Debian 13): its banner, and docs/facts.md §3's `Not allowed at this time\r\n` (26 bytes) for
/// a MaxStartups drop.
#[test]
fn slow_openssh10_records() {
    let test = "slow_openssh10_records";
    let Some(root) = openssh10_root(test) else { return };
    let sshd =
        Sshd::new().chroot(&root).option("PerSourcePenalties no").option("MaxStartups 1:100:1").start();
    let target = sshd.addr.to_string();
    let held = hold(sshd.addr, None);
    let r = probe_one(&[&target]);
    assert_eq!(r["outcome"], "server_refusal", "{r}\n{}", sshd.log());
    assert_eq!(r["message"], "Not allowed at this time");
    assert_eq!(r["refusal"], "not_allowed_at_this_time");
    assert_eq!(
        hex::decode(r["bytes_hex"].as_str().expect("hex")).expect("hex"),
        b"Not allowed at this time\r\n"
    );
    drop(held);
    // The slot frees once sshd has seen the close (docs/facts.md §4: about 0.5 s); bounded retries.
    let mut r = Value::Null;
    for _ in 0..20 {
        std::thread::sleep(std::time::Duration::from_millis(250));
        r = probe_one(&[&target]);
        if r["outcome"] == "banner" {
            break;
        }
    }
    assert_eq!(r["outcome"], "banner", "{r}");
    let software = r["banner"]["software"].as_str().expect("software");
    assert!(software.starts_with("OpenSSH_10."), "{r}");
    assert!(software.starts_with(&sshd.version()), "{software} vs {}", sshd.version());
}

/// Debian 13's sshd-session still links libwrap: a hosts.deny denial looks as on Debian 12.
#[test]
fn slow_openssh10_wrappers_denial() {
    let test = "slow_openssh10_wrappers_denial";
    let Some(root) = openssh10_root(test) else { return };
    let sshd = Sshd::new().chroot(&root).option("PerSourcePenalties no").hosts_deny("sshd: ALL\n").start();
    let r = probe_one(&[&sshd.addr.to_string()]);
    assert_eq!(r["outcome"], "closed_before_banner", "{r}\n{}", sshd.log());
    assert_eq!(r["bytes_len"], 0);
    assert!(us(&r, "closed") - us(&r, "connected") >= 4_000_000, "{r}");
}

/// docs/facts.md §3: a firewall's `reject with tcp reset` and an ICMP port-unreachable read as `refused` to
/// a kernel socket, like nothing listening; an ICMP admin-prohibited reads as `unreachable`.
#[test]
fn firewall_rejects_records() {
    let test = "firewall_rejects_records";
    if !root_or_skip(test) || !have(test, &["ip", "nft"]) {
        return;
    }
    let ns = Netns::new();
    for (rule, outcome) in [
        ("reject with tcp reset", "refused"),
        ("reject with icmp type port-unreachable", "refused"),
        ("reject with icmp type admin-prohibited", "unreachable"),
    ] {
        let port = common::free_port();
        let _fw = Nft::new(Some(&ns), "input", &[&format!("tcp dport {port} {rule}")]);
        let r = probe_one(&[&SocketAddr::new(ns.inner_ip, port).to_string(), "--connect-timeout", "3s"]);
        assert_eq!(r["outcome"], outcome, "{rule}: {r}");
        if outcome == "unreachable" {
            assert!(r["error"].is_string(), "the system's words: {r}");
        }
    }
}

/// IPv6: the target form `[::1]:port`, an IPv6 local address, the same banner.
#[test]
fn ipv6_banner_record() {
    if !root_or_skip("ipv6_banner_record") || !have("ipv6_banner_record", &["sshd"]) {
        return;
    }
    let sshd = Sshd::new().listen("::1".parse().expect("::1")).start();
    let target = sshd.addr.to_string();
    assert!(target.starts_with("[::1]:"), "{target}");
    let r = probe_one(&[&target]);
    assert_eq!(r["outcome"], "banner", "{r}\n{}", sshd.log());
    assert!(r["local"].as_str().expect("local").starts_with("[::1]:"), "{r}");
    assert_eq!(r["remote"], target.as_str());
}
