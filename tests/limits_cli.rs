//! `limits` as a user meets it: levels stream as they are measured, Ctrl-C leaves a
//! partial summary and closes every held connection, a server that is not SSH is a finding (exit 1)
//! rather than a usage error, each warning is printed once, rates and times are readable. Against
//! the embedded lab and a small server that counts its connections; loopback only.

mod common;

use common::sshprobe;
use sshprobe::lab::{Behaviour, Lab, LabConfig};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn background_lab() -> (tokio::runtime::Runtime, Lab) {
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let lab = rt.block_on(Lab::start(LabConfig::default())).expect("the lab");
    (rt, lab)
}

/// An SSH-looking server that holds every connection until the client closes it, and counts the
/// connections open. Stops when dropped.
struct Counting {
    addr: SocketAddr,
    open: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Counting {
    fn start() -> Counting {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("address");
        let (open, accepted, stop) =
            (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let (o, a, s) = (open.clone(), accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                let Ok((mut stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                a.fetch_add(1, Ordering::Relaxed);
                o.fetch_add(1, Ordering::Relaxed);
                let o = o.clone();
                std::thread::spawn(move || {
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.2p1 counting\r\n");
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
                    let mut buf = [0u8; 1024];
                    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
                    o.fetch_sub(1, Ordering::Relaxed);
                });
            }
        });
        Counting { addr, open, accepted, stop }
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn spawn(args: &[&str]) -> Child {
    Command::new(assert_cmd::cargo::cargo_bin("sshprobe"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sshprobe")
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("sshprobe did not exit");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn levels_stream_and_ctrl_c_leaves_a_partial_summary_with_every_connection_closed() {
    let server = Counting::start();
    let target = server.addr.to_string();
    for format in ["jsonl", "table"] {
        let mut child = spawn(&["limits", &target, "--max-held", "200", "--probes", "3", "-o", format]);
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        // Three levels arrive while the ramp goes on (to 200 held: far longer than this test).
        let heading = if format == "table" { 2 } else { 0 };
        let mut seen = Vec::new();
        for _ in 0..heading + 3 {
            let mut line = String::new();
            stdout.read_line(&mut line).expect("a line");
            seen.push(line);
        }
        assert!(child.try_wait().expect("wait").is_none(), "the levels came before the end: {seen:?}");
        assert!(server.open.load(Ordering::Relaxed) >= 2, "connections are held");
        // SAFETY: kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) }, 0);
        let status = wait_exit(&mut child);
        let mut rest = String::new();
        stdout.read_to_string(&mut rest).expect("the rest");
        let mut stderr = String::new();
        child.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("stderr");
        assert_eq!(status.code(), Some(130), "{stderr}");
        assert!(stderr.contains("every held connection was closed"), "{stderr}");
        let all = seen.concat() + &rest;
        if format == "jsonl" {
            let records: Vec<serde_json::Value> =
                all.lines().map(|l| serde_json::from_str(l).expect("JSON")).collect();
            let levels = records.iter().filter(|r| r["type"] == "level").count();
            let summary = records.last().expect("a summary");
            assert_eq!(
                (summary["type"].as_str(), summary["partial"].as_bool()),
                (Some("summary"), Some(true)),
                "{all}"
            );
            assert_eq!(summary["levels_measured"].as_u64(), Some(levels as u64), "{all}");
            assert!(levels >= 3 && records.iter().all(|r| r["time"].is_string()), "{all}");
        } else {
            assert!(all.starts_with(&format!("limits of {target}")), "{all}");
            assert!(all.contains("PARTIAL: interrupted after"), "{all}");
        }
        // Every held connection is closed (bounded wait for the server's threads to notice).
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.open.load(Ordering::Relaxed) > 0 {
            assert!(
                Instant::now() < deadline,
                "{} connections still open",
                server.open.load(Ordering::Relaxed)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    assert!(server.accepted.load(Ordering::Relaxed) > 6);
}

#[test]
fn a_server_that_is_not_ssh_is_a_finding_not_a_usage_error() {
    let (_rt, lab) = background_lab();
    let refused = format!("127.0.0.1:{}", common::free_port());
    let not_ssh = lab.addr(Behaviour::NotSsh).to_string();
    for (target, outcome) in [(refused.as_str(), "refused"), (not_ssh.as_str(), "not_ssh")] {
        let out =
            sshprobe().args(["limits", target]).timeout(Duration::from_secs(30)).output().expect("sshprobe");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(&format!("did not answer with a banner ({outcome})")), "{stderr}");
    }
}

#[test]
fn warnings_once_rates_and_one_unit_per_column() {
    let (_rt, lab) = background_lab();
    // The lab says OpenSSH 9.9: limits warns about PerSourcePenalties.
    let ok = lab.addr(Behaviour::Ok).to_string();
    let out = sshprobe()
        .args(["limits", &ok, "--max-held", "2", "--probes", "2", "--rate-duration", "500ms"])
        .timeout(Duration::from_secs(60))
        .output()
        .expect("sshprobe");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(stderr.matches("has PerSourcePenalties").count(), 1, "once, on stderr: {stderr}");
    assert!(!stdout.contains("PerSourcePenalties"), "not on stdout too: {stdout}");
    // Latency: one unit (ms, in the heading), three decimals in every cell.
    assert!(stdout.contains("BANNER LATENCY ms p50 / p90 / p99"), "{stdout}");
    let rows: Vec<&str> =
        stdout.lines().skip(2).take_while(|l| l.trim_start().starts_with(char::is_numeric)).collect();
    assert_eq!(rows.len(), 3, "{stdout}");
    for row in rows {
        let cells: Vec<&str> = row.rsplitn(6, ' ').collect(); // p99 / p90 / p50 (reversed)
        for cell in [cells[0], cells[2], cells[4]] {
            let (int, frac) = cell.split_once('.').unwrap_or_else(|| panic!("{cell:?} in {row:?}"));
            assert!(int.bytes().all(|b| b.is_ascii_digit()) && frac.len() == 3, "{cell:?} in {row:?}");
        }
    }
    // The accept rate: about four significant digits.
    let rate_line = stdout.lines().find(|l| l.starts_with("accept rate: ")).expect("an accept rate line");
    let rate = rate_line["accept rate: ".len()..].split(' ').next().expect("a rate");
    let digits = rate.bytes().filter(u8::is_ascii_digit).count();
    assert!((4..=5).contains(&digits) && rate.parse::<f64>().is_ok(), "{rate_line}");
    assert!(rate_line.contains(" banners/s "), "{rate_line}");
}

#[test]
fn diagnose_lists_source_addresses_in_numeric_order() {
    let (_rt, lab) = background_lab();
    let ok = lab.addr(Behaviour::Ok).to_string();
    // As text, 127.0.0.10 sorts before 127.0.0.2.
    let out = sshprobe()
        .args(["diagnose", &ok, "--source", "127.0.0.10", "--source", "127.0.0.9", "--source", "127.0.0.2"])
        .timeout(Duration::from_secs(60))
        .output()
        .expect("sshprobe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let budget = stdout.lines().find(|l| l.trim_start().starts_with("budget:")).expect("a budget line");
    let addrs: Vec<std::net::Ipv4Addr> = budget
        .split(", ")
        .filter_map(|p| p.split(" from ").nth(1))
        .filter_map(|a| a.split(' ').next()?.parse().ok())
        .collect();
    assert!(
        addrs.iter().any(|a| a.octets()[3] >= 10) && addrs.iter().any(|a| a.octets()[3] < 10),
        "{budget}"
    );
    let mut sorted = addrs.clone();
    sorted.sort();
    assert_eq!(addrs, sorted, "{budget}");
}
