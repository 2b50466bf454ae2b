//! A 4-tuple the server still holds in TIME_WAIT: the raw engine's next probe from the same source
//! port must still connect.
//!
//! A server that closes first (a wrappers denial, a MaxStartups refusal, or here one that half-closes
//! after its banner) keeps the 4-tuple in TIME_WAIT for 60 s. Runs given one source port
//! (`--source-ports`) reuse that 4-tuple, so each run's SYN meets the last one's TIME_WAIT; when its
//! initial sequence number is not above the old connection's (a fresh secret per process: about one
//! run in two), the server answers with the old acknowledgement instead of a SYN-ACK. Before the
//! engine reset such ACKs, those probes read as `connect_timeout`.
//!
//! Runs the `sshprobe` binary (one process per run, so each has its own ISS secret). Needs root:
//! skipped, loudly, otherwise.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Runs of the binary; without the reset, all succeed with probability about 2^-(RUNS-1).
const RUNS: usize = 10;

/// A source port outside ip_local_port_range, as the engine requires: the highest port, or the one
/// below the range when it reaches 65535.
fn source_port() -> u16 {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").expect("reading the range");
    let mut range = text.split_whitespace().map(|p| p.parse::<u16>().expect("a port"));
    let (lo, hi) = (range.next().expect("low end"), range.next().expect("high end"));
    if hi < u16::MAX {
        u16::MAX
    } else {
        lo - 1
    }
}

/// Accepts until told to stop: banner, half-close (so the server's FIN goes first and the server
/// ends in TIME_WAIT), read the client's ident and FIN, close.
fn half_closing_server(listener: TcpListener, stop: Arc<AtomicBool>) {
    listener.set_nonblocking(true).expect("a non-blocking listener");
    while !stop.load(Ordering::Relaxed) {
        let Ok((mut conn, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let _ = conn.set_nonblocking(false);
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        // Corked, the banner waits for the FIN and both leave in one segment: the client cannot
        // answer the banner before our FIN is out, so we are always the side that closed first.
        let _ = socket2::SockRef::from(&conn).set_cork(true);
        let _ = conn.write_all(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n");
        let _ = conn.shutdown(Shutdown::Write);
        let mut sink = Vec::new();
        let _ = conn.read_to_end(&mut sink);
    }
}

/// The server's sockets in TIME_WAIT on `port`.
fn server_time_waits(port: u16) -> usize {
    let out = Command::new("ss")
        .args(["-Htan", "state", "time-wait", &format!("( sport = :{port} )")])
        .output()
        .expect("running ss");
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.trim().is_empty()).count()
}

#[test]
fn a_server_time_wait_on_our_port_is_reset_and_the_probe_connects() {
    if !common::need_root(test_name!()) {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    let addr = listener.local_addr().expect("the listener's address");
    let stop = Arc::new(AtomicBool::new(false));
    let server = std::thread::spawn({
        let stop = stop.clone();
        move || half_closing_server(listener, stop)
    });
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let _stop = StopOnDrop(stop);

    let target = addr.to_string();
    let port = source_port().to_string();
    let mut local_ports = Vec::new();
    let mut stale_resets = 0;
    for run in 0..RUNS {
        let (lines, out) = common::jsonl(&[
            "probe",
            "--engine",
            "raw",
            "--source-ports",
            &port,
            "-o",
            "jsonl",
            "--trace",
            "--connect-timeout",
            "3s",
            "--banner-timeout",
            "3s",
            &target,
        ]);
        let [record] = lines.as_slice() else {
            panic!("run {run}: one record expected: {lines:?}\n{}", String::from_utf8_lossy(&out.stderr))
        };
        let flags: Vec<&str> =
            record["packets"].as_array().unwrap().iter().map(|p| p["flags"].as_str().unwrap()).collect();
        assert_eq!(record["outcome"], "banner", "run {run}: trace {flags:?}");
        // A stale ACK, when one came, was answered with a bare reset and the SYN again.
        if let Some(i) = flags.iter().position(|f| *f == "R") {
            assert_eq!(&flags[i - 2..=i + 2], ["S", "A", "R", "S", "SA"], "run {run}");
            stale_resets += 1;
        }
        local_ports.push(record["local"].as_str().unwrap().to_string());
        if run == 0 {
            assert!(server_time_waits(addr.port()) > 0, "the server should hold the 4-tuple in TIME_WAIT");
        }
    }
    // Every run used the same 4-tuple, so every run after the first met a TIME_WAIT.
    local_ports.dedup();
    assert_eq!(local_ports, [format!("127.0.0.1:{port}")]);
    eprintln!("{stale_resets} of {} runs met a stale ACK and reset it", RUNS - 1);
    drop(_stop);
    server.join().expect("the server thread");
}
