//! Every lab behaviour gives its outcome through the library, and the CLI keeps its promises: help
//! with examples, exit statuses, bad targets reported without stopping the others, input files,
//! CSV. Loopback only; no root needed.

mod common;

use common::{jsonl, sshprobe};
use predicates::str::contains;
use sshprobe::engine::connect::ConnectEngine;
use sshprobe::engine::{Engine, ProbeRequest};
use sshprobe::evidence::{End, ProbeOrder};
use sshprobe::lab::{Behaviour, Lab, LabConfig, MaxStartups};
use sshprobe::outcome::{classify, Classification, KnownRefusal, Outcome};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncReadExt;

fn lab_config() -> LabConfig {
    LabConfig {
        deny_delay: Duration::from_millis(300),
        slow_interval: Duration::from_millis(5),
        maxstartups: MaxStartups { start: 2, rate: 100, full: 2 },
        ..LabConfig::default()
    }
}

async fn probe(addr: SocketAddr, order: ProbeOrder) -> (Classification, sshprobe::evidence::Observation) {
    let request =
        ProbeRequest::new(addr).order(order).timeouts(Duration::from_secs(5), Duration::from_secs(1));
    let obs = ConnectEngine::default().probe(request).await;
    (classify(&obs), obs)
}

/// The OpenSSH-like endpoints answer the client's ident with a KEXINIT, as sshd does, so `--kex`
/// and diagnose read one from the lab; it comes only after our ident (a probe that does not ask
/// for it reads the banner alone).
#[tokio::test]
async fn the_lab_sends_its_kexinit_after_our_ident() {
    use sshprobe::kexinit::KexRead;
    let lab = Lab::start(lab_config()).await.expect("the lab");
    for behaviour in [Behaviour::Ok, Behaviour::Slow, Behaviour::Prebanner, Behaviour::PerSource] {
        let request =
            ProbeRequest::new(lab.addr(behaviour)).timeouts(Duration::from_secs(5), Duration::from_secs(5));
        let obs = ConnectEngine::default().probe(request.clone().kex(true)).await;
        let Some(KexRead::Kexinit(k)) = &obs.kexinit else { panic!("{behaviour}: no KEXINIT: {obs:?}") };
        assert!(k.strict_kex() && k.post_quantum() && !k.terrapin_exposed(), "{behaviour}: {k:?}");
        assert_eq!(k.server_host_key_algorithms.names().collect::<Vec<_>>(), ["ssh-ed25519"]);
        let plain = ConnectEngine::default().probe(request).await;
        let c = classify(&plain);
        assert_eq!(c.outcome, Outcome::Banner, "{behaviour}: {plain:?}");
        let ident_end = plain.received.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        assert_eq!(
            ident_end,
            plain.received.len(),
            "{behaviour}: nothing after the ident unasked: {plain:?}"
        );
    }
    assert_eq!(sshprobe::kexinit::openssh::CLIENTS[2].versions, "9.9", "the lab offers OpenSSH 9.9's lists");
}

#[tokio::test]
async fn every_lab_behaviour_gives_its_outcome() {
    let lab = Lab::start(lab_config()).await.expect("the lab");
    let expected = [
        (Behaviour::Ok, ProbeOrder::WaitForBanner, Outcome::Banner, End::WeClosed),
        (Behaviour::DenyClose, ProbeOrder::WaitForBanner, Outcome::ClosedBeforeBanner, End::Fin),
        (Behaviour::DenyClose, ProbeOrder::SendFirst, Outcome::ResetBeforeBanner, End::Rst),
        (Behaviour::DenyReset, ProbeOrder::WaitForBanner, Outcome::ResetBeforeBanner, End::Rst),
        (Behaviour::Tarpit, ProbeOrder::WaitForBanner, Outcome::BannerTimeout, End::Timeout),
        (Behaviour::Slow, ProbeOrder::WaitForBanner, Outcome::Banner, End::WeClosed),
        (Behaviour::NotSsh, ProbeOrder::WaitForBanner, Outcome::NotSsh, End::Fin),
        (Behaviour::Endless, ProbeOrder::WaitForBanner, Outcome::NotSsh, End::ByteCap),
        (Behaviour::Prebanner, ProbeOrder::WaitForBanner, Outcome::Banner, End::WeClosed),
        (Behaviour::Ssh1, ProbeOrder::WaitForBanner, Outcome::ProtocolMismatch, End::WeClosed),
        // Nothing held: below `start`, the MaxStartups endpoints answer.
        (Behaviour::Maxstartups, ProbeOrder::WaitForBanner, Outcome::Banner, End::WeClosed),
        (Behaviour::NotAllowed, ProbeOrder::SendFirst, Outcome::Banner, End::WeClosed),
    ];
    for (behaviour, order, outcome, end) in expected {
        let (c, obs) = probe(lab.addr(behaviour), order).await;
        assert_eq!((c.outcome, obs.end), (outcome, Some(end)), "{behaviour} {order:?}: {obs:?}");
    }
    let (c, _) = probe(lab.addr(Behaviour::Prebanner), ProbeOrder::WaitForBanner).await;
    assert_eq!(c.banner.expect("a banner").prebanner.len(), 2);
    let (c, obs) = probe(lab.addr(Behaviour::DenyClose), ProbeOrder::WaitForBanner).await;
    assert_eq!(c.outcome, Outcome::ClosedBeforeBanner);
    assert!(obs.timings.closed.unwrap() >= 250_000, "the deny delay shows: {obs:?}");
}

#[tokio::test]
async fn maxstartups_endpoints_refuse_only_once_start_is_reached() {
    let lab = Lab::start(lab_config()).await.expect("the lab");
    for (behaviour, line, kind) in [
        (Behaviour::Maxstartups, "Exceeded MaxStartups", KnownRefusal::ExceededMaxStartups),
        (Behaviour::NotAllowed, "Not allowed at this time", KnownRefusal::NotAllowedAtThisTime),
    ] {
        let addr = lab.addr(behaviour);
        let mut held = Vec::new();
        for n in 0..2 {
            let (c, _) = probe(addr, ProbeOrder::WaitForBanner).await;
            assert_eq!(c.outcome, Outcome::Banner, "{behaviour} with {n} held");
            held.push(hold(addr).await);
        }
        let (c, obs) = probe(addr, ProbeOrder::WaitForBanner).await;
        assert_eq!(c.outcome, Outcome::ServerRefusal, "{behaviour} at full: {obs:?}");
        assert_eq!((c.message.as_deref(), c.refusal), (Some(line), Some(kind)));
        drop(held);
        // The lab notices the closes at once; give its tasks a moment.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (c, _) = probe(addr, ProbeOrder::WaitForBanner).await;
        assert_eq!(c.outcome, Outcome::Banner, "{behaviour} after release");
    }
}

async fn hold(addr: SocketAddr) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).await.expect("banner");
    assert!(buf[..n].starts_with(b"SSH-"));
    s
}

#[test]
fn demo_prints_a_row_per_behaviour() {
    let out = sshprobe().arg("demo").output().expect("demo");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for b in Behaviour::ALL {
        assert!(text.lines().any(|l| l.starts_with(b.name())), "no row for {b}:\n{text}");
    }
    for outcome in [
        "banner",
        "closed_before_banner",
        "reset_before_banner",
        "server_refusal",
        "banner_timeout",
        "not_ssh",
        "protocol_mismatch",
    ] {
        assert!(text.contains(outcome), "no {outcome} in the demo:\n{text}");
    }
    assert!(text.contains("Exceeded MaxStartups") && text.contains("Not allowed at this time"), "{text}");
}

#[test]
fn help_shows_examples() {
    sshprobe()
        .args(["probe", "--help"])
        .assert()
        .success()
        .stdout(contains("Examples:"))
        .stdout(contains("--send-first"));
    sshprobe()
        .args(["diagnose", "--help"])
        .assert()
        .success()
        .stdout(contains("Examples:"))
        .stdout(contains("budget"));
    sshprobe().args(["limits", "--help"]).assert().success().stdout(contains("Examples:"));
    sshprobe().arg("--help").assert().success().stdout(contains("sshprobe demo"));
}

/// A lab on a runtime of its own, for CLI tests that run the binary.
fn background_lab() -> (tokio::runtime::Runtime, Lab) {
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let lab = rt.block_on(Lab::start(lab_config())).expect("the lab");
    (rt, lab)
}

#[test]
fn exit_status_says_whether_every_probe_got_a_banner() {
    let (_rt, lab) = background_lab();
    let ok = lab.addr(Behaviour::Ok).to_string();
    let deny = lab.addr(Behaviour::DenyReset).to_string();
    sshprobe().args(["probe", &ok]).assert().code(0);
    sshprobe().args(["probe", &ok, &deny]).assert().code(1);
}

#[test]
fn bad_targets_are_named_and_the_others_still_probed() {
    let (_rt, lab) = background_lab();
    let ok = lab.addr(Behaviour::Ok).to_string();
    let (lines, out) =
        jsonl(&["probe", "not a host", &ok, "10.0.0.0/33", "no-such-host.invalid", "-o", "jsonl"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["outcome"], "banner");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid host name \"not a host\""), "{err}");
    assert!(err.contains("invalid network \"10.0.0.0/33\""), "{err}");
    assert!(err.contains("cannot resolve \"no-such-host.invalid"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // Usage errors: exit 2 with one line.
    sshprobe().args(["probe"]).assert().code(2).stderr(contains("no targets"));
    sshprobe().args(["probe", &ok, "--ident", "hello"]).assert().code(2).stderr(contains("--ident"));
    sshprobe().args(["probe", &ok, "--connect-timeout", "soon"]).assert().code(2);
}

#[test]
fn targets_from_files_and_stdin_with_csv_and_counts() {
    let (_rt, lab) = background_lab();
    let ok = lab.addr(Behaviour::Ok).to_string();
    let ssh1 = lab.addr(Behaviour::Ssh1).to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("targets.txt");
    std::fs::write(&file, format!("# lab\n{ok}\n\n{ssh1}  # old\n")).unwrap();
    let (lines, _) = jsonl(&["probe", "-i", file.to_str().unwrap(), "-o", "jsonl"]);
    let mut outcomes: Vec<&str> = lines.iter().map(|l| l["outcome"].as_str().unwrap()).collect();
    outcomes.sort();
    assert_eq!(outcomes, ["banner", "protocol_mismatch"]);

    let out = sshprobe()
        .args(["probe", "-i", "-", "-o", "csv", "--count", "3", "--interval", "10ms"])
        .write_stdin(format!("{ok}\n"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = text.lines().collect();
    assert!(rows[0].starts_with("target,seq,outcome,end,"), "{text}");
    let seqs: Vec<&str> = rows[1..].iter().map(|r| r.split(',').nth(1).unwrap()).collect();
    assert_eq!(seqs, ["0", "1", "2"]);
}

#[test]
fn a_network_is_walked() {
    let (_rt, lab) = background_lab();
    let port = lab.addr(Behaviour::Ok).port();
    // 127.0.0.0/30: 127.0.0.1 (the lab) and 127.0.0.2 (nothing listens there on that port).
    let (lines, _) = jsonl(&["probe", &format!("127.0.0.0/30:{port}"), "-o", "jsonl"]);
    let mut got: Vec<(String, String)> = lines
        .iter()
        .map(|l| (l["target"].as_str().unwrap().into(), l["outcome"].as_str().unwrap().into()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [(format!("127.0.0.1:{port}"), "banner".into()), (format!("127.0.0.2:{port}"), "refused".into())]
    );
}

#[test]
fn a_closed_stdout_ends_the_run_quietly() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let (_rt, lab) = background_lab();
    let ok = lab.addr(Behaviour::Ok).to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("targets.txt");
    std::fs::write(&file, format!("{ok}\n").repeat(5000)).unwrap();
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("sshprobe"))
        .args(["probe", "-i", file.to_str().unwrap(), "-o", "jsonl"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sshprobe");
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(first.contains("\"banner\""), "{first}");
    // The reader is gone now (`| head -1`).
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("Broken pipe"), "{err}");
}

/// The demo shows the main job: diagnose on four lab servers, each with the right verdict, its
/// evidence and a remedy; the machine formats carry only the probe records.
#[test]
fn demo_diagnoses_four_lab_servers() {
    let out = sshprobe().arg("demo").output().expect("demo");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("shortens deny_close's 5-s TCP-wrappers delay"), "{text}");
    let verdicts: Vec<(&str, &str)> = text
        .lines()
        .skip_while(|l| !l.starts_with("What diagnose says"))
        .filter(|l| !l.starts_with(' ') && l.contains("(confidence:"))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            Some((words.next()?, words.next()?))
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            ("deny_close", "access_denied"),
            ("maxstartups", "maxstartups"),
            ("per_source", "per_source_limit"),
            ("ok", "ok")
        ],
        "{text}"
    );
    assert_eq!(text.matches("  evidence:").count(), 4, "{text}");
    assert_eq!(text.matches("  remedy:").count(), 4, "{text}");
    assert!(text.contains("Debian's TCP-wrappers delay") && text.contains("hosts.deny"), "{text}");
    assert!(text.contains("PerSourceMaxStartups"), "{text}");
}
