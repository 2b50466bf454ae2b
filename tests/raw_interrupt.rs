//! The raw engine honours an interrupt as the connect engine does: a probe cut by Ctrl-C ends
//! `interrupted` at once, keeping what it saw (the bytes read, the handshake's time, our address).
//! Through the `sshprobe` binary, against a small loopback server. (diagnose's `--max-duration` on
//! the raw engine: `tests/diagnose_max_duration.rs`.)
//!
//! Needs root (raw sockets and an nftables rule): skipped, loudly, otherwise.

mod common;

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
