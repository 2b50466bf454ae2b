//! The lab in the other probe order, its MaxStartups rule step by step, the demo's records against the
//! JSONL contract, and the CLI's promise of one stderr line per bad target. Loopback only; no root.

mod common;

use common::{jsonl, sshprobe};
use sshprobe::engine::connect::ConnectEngine;
use sshprobe::engine::{Engine, ProbeRequest};
use sshprobe::evidence::{End, Observation, ProbeOrder};
use sshprobe::lab::{Behaviour, Lab, LabConfig, MaxStartups};
use sshprobe::outcome::{classify, Classification, KnownRefusal, Outcome};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncReadExt;

async fn probe(addr: SocketAddr, order: ProbeOrder) -> (Classification, Observation) {
    let request =
        ProbeRequest::new(addr).order(order).timeouts(Duration::from_secs(5), Duration::from_secs(1));
    let obs = ConnectEngine::default().probe(request).await;
    (classify(&obs), obs)
}

/// A connection that got the lab's banner, kept open: one unauthenticated connection to the lab.
async fn hold(addr: SocketAddr) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut got = Vec::new();
    let mut buf = [0u8; 128];
    while !got.contains(&b'\n') {
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .expect("the banner in time")
            .expect("reading the banner");
        assert!(n > 0, "closed before the banner: {:?}", got.escape_ascii().to_string());
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"SSH-"), "{:?}", got.escape_ascii().to_string());
    s
}

/// Every behaviour when the client speaks first, as OpenSSH's `ssh` does (docs/facts.md §2): the silent
/// refusals turn into resets, everything else reads the same as when waiting.
#[tokio::test]
async fn every_lab_behaviour_when_the_client_speaks_first() {
    let lab = Lab::start(LabConfig {
        deny_delay: Duration::from_millis(300),
        slow_interval: Duration::from_millis(5),
        ..LabConfig::default()
    })
    .await
    .expect("the lab");
    use Behaviour as B;
    use Outcome as O;
    let expected: [(B, O, &[End]); 11] = [
        (B::Ok, O::Banner, &[End::WeClosed]),
        (B::DenyClose, O::ResetBeforeBanner, &[End::Rst]),
        (B::DenyReset, O::ResetBeforeBanner, &[End::Rst]),
        (B::Maxstartups, O::Banner, &[End::WeClosed]),
        (B::NotAllowed, O::Banner, &[End::WeClosed]),
        (B::Tarpit, O::BannerTimeout, &[End::Timeout]),
        (B::Slow, O::Banner, &[End::WeClosed]),
        // The HTTP reply, then a close with our ident unread: an RST, after the text was read.
        (B::NotSsh, O::NotSsh, &[End::Rst, End::Fin]),
        (B::Endless, O::NotSsh, &[End::ByteCap]),
        (B::Prebanner, O::Banner, &[End::WeClosed]),
        (B::Ssh1, O::ProtocolMismatch, &[End::WeClosed]),
    ];
    for (behaviour, outcome, ends) in expected {
        let (c, obs) = probe(lab.addr(behaviour), ProbeOrder::SendFirst).await;
        assert_eq!(c.outcome, outcome, "{behaviour}: {obs:?}");
        assert!(ends.contains(&obs.end.expect("established")), "{behaviour}: {obs:?}");
        assert!(obs.sent_ident, "{behaviour}: the ident goes out first: {obs:?}");
    }
    // The same silent refusal when waiting: a FIN, and nothing sent.
    let (c, obs) = probe(lab.addr(B::DenyClose), ProbeOrder::WaitForBanner).await;
    assert_eq!(
        (c.outcome, obs.end, obs.sent_ident),
        (O::ClosedBeforeBanner, Some(End::Fin), false),
        "{obs:?}"
    );
    let (connected, closed) =
        (obs.timings.connected.expect("connected"), obs.timings.closed.expect("closed"));
    assert!(closed - connected >= 250_000, "the deny delay shows: {obs:?}");
    // The HTTP reply keeps its words.
    let (c, _) = probe(lab.addr(B::NotSsh), ProbeOrder::SendFirst).await;
    assert!(c.message.expect("the reply's first lines").starts_with("HTTP/1.1 400 Bad Request"));
}

/// How long the lab may take to notice a probe's close.
const SETTLE: Duration = Duration::from_millis(50);

/// `start:100:full`: deterministic. Below `start` every probe gets the banner; at `start` held
/// connections every probe is refused with the endpoint's line; one released, banners again.
#[tokio::test]
async fn maxstartups_refusals_start_exactly_at_start() {
    let rule = MaxStartups { start: 3, rate: 100, full: 10 };
    let lab = Lab::start(LabConfig { maxstartups: rule, ..LabConfig::default() }).await.expect("the lab");
    for (behaviour, line, kind) in [
        (Behaviour::Maxstartups, "Exceeded MaxStartups", KnownRefusal::ExceededMaxStartups),
        (Behaviour::NotAllowed, "Not allowed at this time", KnownRefusal::NotAllowedAtThisTime),
    ] {
        let addr = lab.addr(behaviour);
        let mut held = Vec::new();
        for n in 0..rule.start {
            for order in [ProbeOrder::WaitForBanner, ProbeOrder::SendFirst] {
                let (c, obs) = probe(addr, order).await;
                assert_eq!(c.outcome, Outcome::Banner, "{behaviour} {order:?} with {n} held: {obs:?}");
                // The probe's own connection counts until the lab has read its close: let it, so
                // that the next probe sees exactly the held ones.
                tokio::time::sleep(SETTLE).await;
            }
            held.push(hold(addr).await);
        }
        for order in [ProbeOrder::WaitForBanner, ProbeOrder::SendFirst, ProbeOrder::WaitForBanner] {
            let (c, obs) = probe(addr, order).await;
            assert_eq!(c.outcome, Outcome::ServerRefusal, "{behaviour} {order:?} at start: {obs:?}");
            assert_eq!((c.message.as_deref(), c.refusal), (Some(line), Some(kind)), "{obs:?}");
            assert_eq!(&obs.received[..], format!("{line}\r\n").as_bytes());
        }
        // Release one: below `start` again once the lab has seen the close (bounded retries).
        held.pop();
        let mut outcome = Outcome::ServerRefusal;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            outcome = probe(addr, ProbeOrder::WaitForBanner).await.0.outcome;
            if outcome == Outcome::Banner {
                break;
            }
        }
        assert_eq!(outcome, Outcome::Banner, "{behaviour} after a release");
    }
}

/// `sshprobe demo -o jsonl`: one record per planned probe, each meeting the JSONL contract, each
/// with the outcome of its behaviour.
#[test]
fn demo_records_meet_the_contract() {
    let (lines, out) = jsonl(&["demo", "-o", "jsonl"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let expected = [
        ("ok", "banner"),
        ("deny_close", "closed_before_banner"),
        ("deny_close --send-first", "reset_before_banner"),
        ("deny_reset", "reset_before_banner"),
        ("maxstartups", "server_refusal"),
        ("not_allowed", "server_refusal"),
        ("tarpit", "banner_timeout"),
        ("slow", "banner"),
        ("not_ssh", "not_ssh"),
        ("endless", "not_ssh"),
        ("prebanner", "banner"),
        ("ssh1", "protocol_mismatch"),
    ];
    let got: Vec<(&str, &str)> = lines
        .iter()
        .map(|r| {
            common::check_record(r);
            (r["target"].as_str().expect("target"), r["outcome"].as_str().expect("outcome"))
        })
        .collect();
    assert_eq!(got, expected);
    let refusals: Vec<&str> = lines.iter().filter_map(|r| r["refusal"].as_str()).collect();
    assert_eq!(refusals, ["exceeded_max_startups", "not_allowed_at_this_time"]);
}

/// Exit 2 for bad input: exactly one stderr line per bad target, naming it; the good ones are
/// still probed and reported.
#[test]
fn one_stderr_line_per_bad_target() {
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let lab = rt.block_on(Lab::start(LabConfig::default())).expect("the lab");
    let ok = lab.addr(Behaviour::Ok).to_string();
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("targets");
    std::fs::write(&file, format!("{ok}\nhost:0\n")).expect("writing targets");
    let bad = ["not a host", "10.0.0.0/33", "no-such-host.invalid"];
    let mut args =
        vec!["probe", "-o", "jsonl", "-i", file.to_str().expect("utf-8"), "-i", "/nonexistent/targets"];
    args.extend(bad);
    let (lines, out) = jsonl(&args);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let err_lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(err_lines.len(), 5, "one line per bad target:\n{stderr}");
    for name in
        ["\"not a host\"", "\"10.0.0.0/33\"", "\"no-such-host.invalid", "\"0\"", "/nonexistent/targets"]
    {
        assert_eq!(err_lines.iter().filter(|l| l.contains(name)).count(), 1, "{name}:\n{stderr}");
    }
    assert!(err_lines.iter().all(|l| l.starts_with("sshprobe: ")), "{stderr}");
    assert_eq!(lines.len(), 1, "the good target is still probed");
    assert_eq!(common::check_record(&lines[0])["outcome"], "banner");
    drop(lab);
}

/// `--count 3` numbers a target's probes 0, 1, 2; `-i -` reads targets from standard input.
#[test]
fn counts_number_the_probes_in_jsonl_too() {
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let lab = rt.block_on(Lab::start(LabConfig::default())).expect("the lab");
    let ok = lab.addr(Behaviour::Ok).to_string();
    let out = sshprobe()
        .args(["probe", "-i", "-", "-o", "jsonl", "--count", "3", "--interval", "10ms"])
        .write_stdin(format!("# a comment\n{ok}\n"))
        .output()
        .expect("running sshprobe");
    assert_eq!(out.status.code(), Some(0));
    let records: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let seqs: Vec<u64> =
        records.iter().map(|r| common::check_record(r)["seq"].as_u64().expect("seq")).collect();
    assert_eq!(seqs, [0, 1, 2]);
    assert!(records.iter().all(|r| r["target"] == ok.as_str()));
}
