//! The raw engine honours an interrupt as the connect engine does: a probe cut by Ctrl-C or by
//! diagnose's `--max-duration` ends `interrupted` at once, keeping what it saw (the bytes read, the
//! handshake's time, our address). Through the `sshprobe` binary, against small loopback servers.
//!
//! Needs root (raw sockets and an nftables rule): skipped, loudly, otherwise.

mod common;

use sshprobe::lab::{Behaviour, Lab, LabConfig};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One raw run at a time: runs share the per-namespace lock.
static SERIAL: Mutex<()> = Mutex::new(());

macro_rules! require_root {
    () => {
        if !common::need_root(test_name!()) {
            return;
        }
    };
}

/// Kills the child (if still alive) on drop, so a failing test leaves no run behind; the run's own
/// signal handling removes its nftables table.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback server that sends `payload` to its first connection, then waits (bounded) for the
/// client to close.
fn serve_once(payload: &'static [u8]) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let thread = std::thread::spawn(move || {
        listener.set_nonblocking(true).expect("nonblocking");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.write_all(payload);
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(15)));
                    let mut buf = [0u8; 1024];
                    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
                    return;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    (addr, thread)
}

#[test]
fn a_raw_probe_interrupted_mid_banner_keeps_its_bytes() {
    require_root!();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // Half an ident line, then silence.
    let (addr, server) = serve_once(b"SSH-2.0-Open");
    let child = Command::new(assert_cmd::cargo::cargo_bin("sshprobe"))
        .args(["probe", "--engine", "raw", "-o", "jsonl", &addr.to_string(), "--banner-timeout", "30s"])
        .env("SSHPROBE_STATE_DIR", "")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sshprobe");
    let mut child = Reap(child);
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: kill(2) on our own child, not yet reaped.
    assert_eq!(unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGINT) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.0.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "probe did not stop");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut s) = child.0.stdout.take() {
        let _ = s.read_to_string(&mut stdout);
    }
    if let Some(mut s) = child.0.stderr.take() {
        let _ = s.read_to_string(&mut stderr);
    }
    let r: serde_json::Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    common::check_record(&r);
    assert_eq!((r["outcome"].as_str(), r["end"].as_str()), (Some("interrupted"), Some("interrupted")), "{r}");
    assert_eq!((r["bytes_len"].as_u64(), r["bytes_text"].as_str()), (Some(12), Some("SSH-2.0-Open")), "{r}");
    assert!(r["timings_us"]["connected"].is_u64() && r["timings_us"]["first_byte"].is_u64(), "{r}");
    assert!(r["local"].is_string(), "{r}");
    assert_eq!(child.0.try_wait().expect("wait").and_then(|s| s.code()), Some(130), "{stderr}");
    server.join().expect("server");
}

#[test]
fn raw_diagnose_max_duration_cuts_probes_at_a_tarpit() {
    require_root!();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let lab = rt.block_on(Lab::start(LabConfig::default())).expect("the lab");
    let tarpit = lab.addr(Behaviour::Tarpit);
    // The banner wait alone is longer than the limit: a probe that ignored the interrupt would wait
    // it out and give the tarpit a verdict of its own.
    let out = common::sshprobe()
        .args(["diagnose", "--engine", "raw", &tarpit.to_string(), "--max-duration", "2s", "-o", "jsonl"])
        .timeout(Duration::from_secs(20))
        .output()
        .expect("sshprobe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "not ended by itself:\n{stdout}\n{stderr}");
    let d: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON diagnosis");
    assert_eq!(d["verdict"], "not_tested", "{d}");
    assert_eq!(d["evidence"][0]["reason"], "time_limit_cut", "{d}");
    // The cut probes keep what each saw, as the connect engine's do.
    let cut: Vec<&serde_json::Value> = d["experiments"]
        .as_array()
        .expect("experiments")
        .iter()
        .filter(|e| e["kind"] == "cut")
        .flat_map(|e| e["probes"].as_array().into_iter().flatten())
        .collect();
    assert!(!cut.is_empty(), "{d}");
    for p in &cut {
        assert_eq!((&p["outcome"], &p["end"]), (&"interrupted".into(), &"interrupted".into()), "{p}");
        assert!(p["timings_us"]["connected"].is_u64() && p["local"].is_string(), "what it saw is kept: {p}");
    }
}
