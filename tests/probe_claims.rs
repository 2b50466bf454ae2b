//! Claims a probe makes about what it saw, checked through the CLI against small loopback servers:
//! an over-long ident that OpenSSH's client accepts is a banner (flagged as beyond RFC 4253's 255
//! bytes), and `bytes_len` counts what was read.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

/// A loopback server that sends `payload` to each of its first `conns` connections, then waits
/// (bounded) for the client to close.
fn serve(payload: Vec<u8>, conns: usize) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let thread = std::thread::spawn(move || {
        listener.set_nonblocking(true).expect("nonblocking");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut served = 0;
        while served < conns && Instant::now() < deadline {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    served += 1;
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.write_all(&payload);
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut buf = [0u8; 1024];
                    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    (addr, thread)
}

#[test]
fn a_400_byte_ident_is_a_banner_beyond_the_rfc_length() {
    // `ssh -vvv` goes on to KEXINIT with such a server: OpenSSH allows 8192-byte lines.
    let ident = [b"SSH-2.0-".as_slice(), &[b'X'; 390], b"\r\n"].concat();
    let (addr, server) = serve(ident, 2);
    let (records, out) = common::jsonl(&["probe", "-o", "jsonl", &addr.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = &records[0];
    assert_eq!(r["outcome"], "banner", "{r}");
    assert_eq!(r["banner"]["over_rfc_length"], true, "{r}");
    assert_eq!(r["banner"]["software"].as_str().map(str::len), Some(390), "{r}");
    assert_eq!(r["bytes_len"], 400, "{r}");
    // A line within the RFC's length carries no flag.
    let (addr2, server2) = serve(b"SSH-2.0-OpenSSH_9.2p1\r\n".to_vec(), 1);
    let (records, _) = common::jsonl(&["probe", "-o", "jsonl", &addr2.to_string()]);
    assert!(records[0]["banner"].get("over_rfc_length").is_none(), "{}", records[0]);
    // The table says so too.
    let out = common::sshprobe().args(["probe", &addr.to_string()]).output().expect("sshprobe");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("banner"), "{text}");
    server.join().expect("server");
    server2.join().expect("server");
}

#[test]
fn dry_run_lists_the_targets_after_exclusions_and_shards_and_sends_nothing() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("address").port().to_string();
    let out = common::sshprobe()
        .args(["probe", "--dry-run", "127.0.0.0/29", "-p", &port, "--exclude", "127.0.0.3", "--no-shuffle"])
        .output()
        .expect("sshprobe");
    let text = String::from_utf8_lossy(&out.stdout);
    let want: Vec<String> = [1, 2, 4, 5, 6].iter().map(|h| format!("127.0.0.{h}:{port}")).collect();
    assert_eq!(text.lines().collect::<Vec<_>>(), want, "{text}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("dry run: 5 targets listed, nothing sent"));
    assert_eq!(out.status.code(), Some(0));
    // Shards split the same list; JSON lines name each target.
    let shard = |i: &str| {
        let (records, _) = common::jsonl(&[
            "probe",
            "--dry-run",
            "127.0.0.0/29",
            "-p",
            &port,
            "--exclude",
            "127.0.0.3",
            "--shard",
            i,
            "-o",
            "jsonl",
        ]);
        records.iter().map(|r| r["remote"].as_str().expect("remote").to_string()).collect::<Vec<_>>()
    };
    let (a, b) = (shard("1/2"), shard("2/2"));
    let mut both = [a.clone(), b.clone()].concat();
    both.sort();
    assert_eq!(both, want, "{a:?} {b:?}");
    assert!(!a.is_empty() && !b.is_empty());
    // Nothing connected.
    assert!(listener.accept().is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock));
}

/// A probe cut by Ctrl-C keeps what it saw: the handshake's time, our address, the bytes so far.
#[test]
fn a_probe_interrupted_mid_banner_keeps_its_bytes() {
    use std::process::{Command, Stdio};
    // Half an ident line, then silence.
    let (addr, server) = serve(b"SSH-2.0-Open".to_vec(), 1);
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("sshprobe"))
        .args(["probe", "-o", "jsonl", &addr.to_string(), "--banner-timeout", "30s"])
        .env("SSHPROBE_STATE_DIR", "")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sshprobe");
    std::thread::sleep(Duration::from_millis(800));
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "probe did not stop");
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("output");
    let text = String::from_utf8_lossy(&out.stdout);
    let r: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"));
    common::check_record(&r);
    assert_eq!((r["outcome"].as_str(), r["end"].as_str()), (Some("interrupted"), Some("interrupted")), "{r}");
    assert_eq!((r["bytes_len"].as_u64(), r["bytes_text"].as_str()), (Some(12), Some("SSH-2.0-Open")), "{r}");
    assert!(r["timings_us"]["connected"].is_u64() && r["timings_us"]["first_byte"].is_u64(), "{r}");
    assert!(r["local"].is_string(), "{r}");
    assert_eq!(out.status.code(), Some(130));
    server.join().expect("server");
}

/// `-vv` traces each connection as `ssh -vvv` would (connect, bytes in and out, close, in µs), for
/// every command; `-v` does not, so a large scan's log stays small.
#[test]
fn double_v_traces_each_connection_and_single_v_does_not() {
    let (addr, server) = serve(b"SSH-2.0-OpenSSH_9.2p1\r\n".to_vec(), 3);
    let target = addr.to_string();
    let run = |args: &[&str]| {
        let out = common::sshprobe().args(args).env_remove("RUST_LOG").output().expect("sshprobe");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let trace = run(&["probe", &target, "-vv", "--send-first"]);
    for want in [
        format!("{target} probe: connected from 127.0.0.1:"),
        format!("{target} probe: sent our ident ("),
        "bytes, SendFirst)".to_string(),
        format!("{target} probe: received 23 bytes, the first at "),
        "the ident line complete at ".to_string(),
        "\"SSH-2.0-OpenSSH_9.2p1\\r\\n\"".to_string(),
        format!("{target} probe: closed (we_closed) at "),
    ] {
        assert!(trace.contains(&want), "no {want:?} in:\n{trace}");
    }
    assert!(trace.contains(" µs"), "{trace}");
    let debug = run(&["probe", &target, "-v"]);
    assert!(!debug.contains("probe: connected from"), "{debug}");
    // Another command, the same trace.
    let refused = common::free_port();
    let trace = run(&["limits", &format!("127.0.0.1:{refused}"), "-vv"]);
    assert!(
        trace.contains(&format!("127.0.0.1:{refused} probe: connect from")) && trace.contains("Refused at"),
        "{trace}"
    );
    drop(server);
}

/// On a terminal, probe draws a progress line (total, percent, in flight, ETA) on stderr and leaves
/// a summary line that survives it, whatever the results' format. `script` gives it a terminal.
#[test]
fn a_progress_line_on_a_terminal_then_a_summary_that_stays() {
    if !common::need("progress_line", &["script"]) {
        return;
    }
    // Accepts (in its backlog) and never answers: each probe waits out its banner timeout.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("address").port();
    let closed = common::free_port();
    let command = format!(
        "{} probe 127.0.0.1:{port} 127.0.0.1:{closed} --banner-timeout 1s -o jsonl --output-file /dev/null",
        assert_cmd::cargo::cargo_bin("sshprobe").display()
    );
    let out = std::process::Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .env("SSHPROBE_STATE_DIR", "")
        .output()
        .expect("script");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(
        screen.contains("/2 probes (") && screen.contains("in flight,") && screen.contains("ETA"),
        "{screen:?}"
    );
    assert!(screen.contains("2 probes in ") && screen.contains("1 refused, 1 banner_timeout"), "{screen:?}");

    // Targets from a file: the total comes once the file is counted (a comment, a blank line and
    // a line that does not parse count nothing; a /30 counts its 2 hosts).
    let dir = tempfile::tempdir().expect("a temp dir");
    let list = dir.path().join("targets");
    std::fs::write(
        &list,
        format!("# silent first\n127.0.0.1:{port}\n\n-5\n127.0.0.1:{closed}\n127.0.1.0/30:{closed}\n"),
    )
    .expect("the target file");
    let command = format!(
        "{} probe -i {} --banner-timeout 1s -o jsonl --output-file /dev/null",
        assert_cmd::cargo::cargo_bin("sshprobe").display(),
        list.display()
    );
    let out = std::process::Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .env("SSHPROBE_STATE_DIR", "")
        .output()
        .expect("script");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(screen.contains("/4 probes (") && screen.contains("ETA"), "{screen:?}");
    drop(silent);
}
