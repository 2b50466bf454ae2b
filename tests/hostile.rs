//! Hostile bytes and cut-short work: whatever a server sends, every output format keeps it
//! from driving the user's terminal; a server that stops mid-line, stalls or floods is described as
//! it is; a run stopped by Ctrl-C or a closed pipe reports what it did. Small servers on loopback send
//! every byte value, terminal escape sequences, C1 controls and bidi overrides.

mod common;

use common::sshprobe;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the hostile server does after sending its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    /// Wait for the client to close (at most a few seconds): a server that sent a banner.
    Hold,
    /// Close at once: a refusal or junk.
    Close,
    /// Reset at once (SO_LINGER 0): a server that died mid-line.
    Reset,
}

/// A loopback server that sends `payload` to every connection. Stops when dropped.
struct Hostile {
    addr: SocketAddr,
    /// Connections accepted so far.
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Hostile {
    fn start(payload: Vec<u8>, after: After) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("address");
        let stop = Arc::new(AtomicBool::new(false));
        let payload = Arc::new(payload);
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let thread = std::thread::spawn({
            let (stop, accepted) = (stop.clone(), accepted.clone());
            move || {
                // Bounded: a test that forgets to drop its server still ends.
                let deadline = Instant::now() + Duration::from_secs(120);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                            let payload = payload.clone();
                            std::thread::spawn(move || answer(stream, &payload, after));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            }
        });
        Hostile { addr, accepted, stop, thread: Some(thread) }
    }

    fn target(&self) -> String {
        self.addr.to_string()
    }
}

fn answer(mut stream: TcpStream, payload: &[u8], after: After) {
    let _ = stream.set_nonblocking(false);
    if stream.write_all(payload).is_err() || after == After::Close {
        return;
    }
    if after == After::Reset {
        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        return;
    }
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = [0u8; 4096];
    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The issue's case: colour, a window title, a screen clear, in an otherwise valid ident line.
const RED: &[u8] = b"SSH-2.0-\x1b[31mRED\x1b]0;pwned\x07\x1b[2J ok\r\n";
/// How the table and the text formats show it.
const RED_SHOWN: &str = r"SSH-2.0-\x1b[31mRED\x1b]0;pwned\x07\x1b[2J ok";

/// Bidi and line-separator characters that reorder or break what a terminal shows.
const BIDI: &str = "\u{61c}\u{200e}\u{200f}\u{202a}\u{202b}\u{202c}\u{202d}\u{202e}\u{2066}\u{2067}\u{2068}\u{2069}\u{2028}\u{2029}";

/// Servers that between them send every byte value inside what sshprobe shows: ident lines
/// (software and comments), a refusal message, and junk.
fn hostile_servers() -> Vec<(&'static str, Hostile)> {
    let line = |head: &[u8], body: &[u8]| [head, body, b"\r\n"].concat();
    // Every byte but the line end itself (and NUL, which makes the line invalid: see `all_bytes`).
    let ascii: Vec<u8> = (1..=0x7fu8).filter(|b| !matches!(b, b'\r' | b'\n')).collect();
    let high: Vec<u8> = (0x80..=0xffu8).collect();
    let c1: String = ('\u{80}'..='\u{9f}').collect::<String>() + BIDI;
    let all: Vec<u8> = (0..=0xffu8).collect();
    vec![
        ("red", Hostile::start(RED.to_vec(), After::Hold)),
        ("ascii", Hostile::start(line(b"SSH-2.0-A ", &ascii), After::Hold)),
        ("high", Hostile::start(line(b"SSH-2.0-B ", &high), After::Hold)),
        ("c1", Hostile::start(line(b"SSH-2.0-C\xc2\x9b[2J ", c1.as_bytes()), After::Hold)),
        ("refusal", Hostile::start(format!("Denied \u{9b}2J {BIDI}\r\n").into_bytes(), After::Close)),
        ("bare_cr", Hostile::start(b"hello\rworld\x1b[2J\r\n".to_vec(), After::Close)),
        ("all_bytes", Hostile::start(all.clone(), After::Close)),
        ("all_bytes_reversed", Hostile::start(all.into_iter().rev().collect(), After::Close)),
    ]
}

/// The characters no output may carry raw: C0 controls but the line end, DEL, C1, bidi controls.
fn unsafe_char(c: char) -> bool {
    (c < ' ' && c != '\n') || c == '\x7f' || ('\u{80}'..='\u{9f}').contains(&c) || BIDI.contains(c)
}

/// Panics when `out` (a command's stdout or stderr) is not UTF-8 (a lone C1 byte would not be), or
/// carries a character a terminal would act on.
fn assert_terminal_safe(what: &str, out: &[u8]) {
    let text = std::str::from_utf8(out).unwrap_or_else(|e| panic!("{what}: not UTF-8 ({e}): {out:?}"));
    if let Some((at, c)) = text.char_indices().find(|&(_, c)| unsafe_char(c)) {
        let line = text[..at].lines().count();
        panic!("{what}: raw {c:?} on line {line}:\n{}", text.escape_debug());
    }
}

fn run(args: &[&str]) -> std::process::Output {
    sshprobe().args(args).timeout(Duration::from_secs(60)).output().expect("running sshprobe")
}

#[test]
fn probe_output_in_every_format_carries_no_raw_control_character() {
    let servers = hostile_servers();
    let targets: Vec<String> = servers.iter().map(|(_, s)| s.target()).collect();
    for format in ["table", "csv", "jsonl"] {
        let mut args = vec!["probe", "-o", format, "--banner-timeout", "3s"];
        args.extend(targets.iter().map(String::as_str));
        let out = run(&args);
        assert_terminal_safe(&format!("probe -o {format} (stdout)"), &out.stdout);
        assert_terminal_safe(&format!("probe -o {format} (stderr)"), &out.stderr);
        let text = String::from_utf8_lossy(&out.stdout);
        let rows = text.lines().count();
        // One row per server, and a header row in table and CSV.
        assert_eq!(rows, servers.len() + usize::from(format != "jsonl"), "{text}");
        match format {
            "table" => {
                assert!(text.contains(RED_SHOWN), "{text}");
                assert!(text.contains(r"\xc2\x9b2J \xd8\x9c"), "{text}");
                assert!(text.contains(r"hello\rworld\x1b[2J"), "{text}");
            }
            "csv" => assert!(text.contains(r"\x1b[31mRED\x1b]0;pwned\x07\x1b[2J,"), "{text}"),
            _ => {
                // JSON keeps the exact characters; only their spelling is escaped.
                let red: serde_json::Value = text
                    .lines()
                    .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON"))
                    .find(|r| r["remote"] == servers[0].1.target())
                    .expect("the red server's record");
                assert_eq!(red["banner"]["software"], "\x1b[31mRED\x1b]0;pwned\x07\x1b[2J", "{red}");
                assert!(text.contains(r"\u009b"), "{text}");
            }
        }
    }
}

#[test]
fn diagnose_output_in_every_format_carries_no_raw_control_character() {
    let servers = hostile_servers();
    // A banner with escapes (the `server:` line), a refusal with C1 and bidi controls (evidence
    // quoting it), and junk with every byte value.
    let chosen: Vec<String> = ["red", "refusal", "all_bytes"]
        .iter()
        .map(|name| servers.iter().find(|(n, _)| n == name).expect("server").1.target())
        .collect();
    for format in ["table", "csv", "jsonl"] {
        let mut args = vec!["diagnose", "-o", format, "--banner-timeout", "3s", "--max-held", "2"];
        args.extend(chosen.iter().map(String::as_str));
        let out = run(&args);
        assert_terminal_safe(&format!("diagnose -o {format} (stdout)"), &out.stdout);
        assert_terminal_safe(&format!("diagnose -o {format} (stderr)"), &out.stderr);
        let text = String::from_utf8_lossy(&out.stdout);
        if format == "table" {
            assert!(text.contains(r"server:   \x1b[31mRED\x1b]0;pwned\x07\x1b[2J"), "{text}");
            assert!(text.contains(r"\xc2\x9b2J"), "{text}");
        }
        // One escaping for people: `\xNN`, never Rust's `\u{1b}` (a `{:?}` on server text).
        if format != "jsonl" {
            assert!(!text.contains(r"\u{"), "diagnose -o {format}: {text}");
        }
    }
}

#[test]
fn limits_output_in_every_format_carries_no_raw_control_character() {
    let red = Hostile::start(RED.to_vec(), After::Hold);
    for format in ["table", "csv", "jsonl"] {
        let out = run(&[
            "limits",
            &red.target(),
            "-o",
            format,
            "--max-held",
            "2",
            "--probes",
            "2",
            "--rate-duration",
            "0s",
        ]);
        assert_terminal_safe(&format!("limits -o {format} (stdout)"), &out.stdout);
        assert_terminal_safe(&format!("limits -o {format} (stderr)"), &out.stderr);
        let text = String::from_utf8_lossy(&out.stdout);
        if format == "table" {
            assert!(text.contains(r"server \x1b[31mRED\x1b]0;pwned\x07\x1b[2J,"), "{text}");
        }
    }
}

#[test]
fn the_raw_engine_trace_carries_no_raw_control_character() {
    if !common::need_root("the_raw_engine_trace_carries_no_raw_control_character") {
        return;
    }
    let servers = hostile_servers();
    let mut args = vec!["probe", "--engine", "raw", "--trace", "--banner-timeout", "3s"];
    let targets: Vec<String> = servers.iter().map(|(_, s)| s.target()).collect();
    args.extend(targets.iter().map(String::as_str));
    // One raw engine per network namespace: another test (or engineer) may hold it for a while.
    let deadline = Instant::now() + Duration::from_secs(60);
    let out = loop {
        let out = run(&args);
        let busy = String::from_utf8_lossy(&out.stderr).contains("another sshprobe raw engine is running");
        if !busy || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_terminal_safe("probe --engine raw --trace (stdout)", &out.stdout);
    assert_terminal_safe("probe --engine raw --trace (stderr)", &out.stderr);
    let text = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains(RED_SHOWN), "{:?}\n{text}\n{stderr}", out.status);
    assert!(
        text.lines().filter(|l| l.contains(" <- ")).count() >= servers.len(),
        "a trace per probe: {text}"
    );
}

/// One probe through the CLI, as JSON.
fn probe_record(target: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["probe", "-o", "jsonl", target];
    args.extend_from_slice(extra);
    let out = run(&args);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let record =
        serde_json::from_str(lines.next().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(lines.next().is_none(), "{text}");
    common::check_record(&record);
    record
}

#[test]
fn an_ident_line_cut_by_a_reset_is_a_reset_with_its_bytes() {
    let cut = Hostile::start(b"SSH-2.0-Open".to_vec(), After::Reset);
    let r = probe_record(&cut.target(), &[]);
    assert_eq!((r["outcome"].as_str(), r["end"].as_str()), (Some("reset_before_banner"), Some("rst")), "{r}");
    assert_eq!(
        (r["message"].as_str(), r["bytes_text"].as_str()),
        (Some("SSH-2.0-Open"), Some("SSH-2.0-Open")),
        "{r}"
    );
    // Cut by a FIN: closed, not a refusal message either.
    let closed = Hostile::start(b"SSH-2.0-Open".to_vec(), After::Close);
    let r = probe_record(&closed.target(), &[]);
    assert_eq!(r["outcome"], "closed_before_banner", "{r}");
}

#[test]
fn a_server_that_stalls_after_ssh_dash_sent_bytes() {
    let stall = Hostile::start(b"SSH-2.0-".to_vec(), After::Hold);
    let r = probe_record(&stall.target(), &["--banner-timeout", "1s"]);
    assert_eq!(
        (r["outcome"].as_str(), r["message"].as_str()),
        (Some("banner_timeout"), Some("SSH-2.0-")),
        "{r}"
    );
    assert_eq!(r["bytes_len"], 8, "{r}");
    let out = run(&["diagnose", &stall.target(), "--banner-timeout", "1s", "--max-held", "1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("starts its ident line (\"SSH-2.0-\") but never completes it"), "{text}");
    assert!(!text.contains("never sends its banner"), "{text}");
}

#[test]
fn a_pre_banner_stopped_by_the_byte_cap_says_so() {
    let flood = Hostile::start(b"Authorized use only. All access is logged.\r\n".repeat(2000), After::Hold);
    let r = probe_record(&flood.target(), &[]);
    assert_eq!((r["outcome"].as_str(), r["end"].as_str()), (Some("not_ssh"), Some("byte_cap")), "{r}");
    assert_eq!(
        r["not_ssh"],
        "no SSH- line in the first 8192 bytes (186 lines of text): reading stopped at the byte cap",
        "{r}"
    );
}

/// Waits (bounded) until `server` has accepted `n` connections.
fn wait_accepted(server: &Hostile, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.accepted.load(Ordering::Relaxed) < n {
        assert!(Instant::now() < deadline, "the probes never connected");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits (bounded) for `child` to exit; kills it if it does not.
fn wait_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("sshprobe did not exit after the signal");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn probes_under_way_at_ctrl_c_are_reported_as_interrupted() {
    use std::process::{Command, Stdio};
    let tarpit = Hostile::start(Vec::new(), After::Hold);
    let red = Hostile::start(RED.to_vec(), After::Hold);
    for (format, signal, code) in [("jsonl", libc::SIGINT, 130), ("table", libc::SIGTERM, 143)] {
        // Counted before the child starts: it can connect before this thread runs again.
        let before = tarpit.accepted.load(Ordering::Relaxed);
        let child = Command::new(assert_cmd::cargo::cargo_bin("sshprobe"))
            .args(["probe", "-o", format, &red.target(), &tarpit.target(), &tarpit.target()])
            .args(["--banner-timeout", "30s"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sshprobe");
        wait_accepted(&tarpit, before + 2);
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
        let mut child = child;
        let status = wait_exit(&mut child);
        let out = child.wait_with_output().expect("output");
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(status.code(), Some(code), "{stderr}");
        assert!(stderr.contains("the probes under way are reported as interrupted"), "{stderr}");
        let outcomes: Vec<&str> = match format {
            "jsonl" => stdout
                .lines()
                .map(|l| {
                    let r: serde_json::Value = serde_json::from_str(l).expect("JSON");
                    common::check_record(&r);
                    if r["outcome"] == "interrupted" {
                        assert_eq!(r["remote"], tarpit.target(), "{r}");
                        // What the probe saw is kept: the handshake, its time, our address.
                        assert_eq!(r["end"], "interrupted", "{r}");
                        assert!(r["timings_us"]["connected"].is_u64() && r["local"].is_string(), "{r}");
                    }
                    match r["outcome"].as_str() {
                        Some("interrupted") => "interrupted",
                        Some("banner") => "banner",
                        _ => "other",
                    }
                })
                .collect(),
            _ => stdout.lines().skip(1).map(|l| l.split_whitespace().nth(1).unwrap_or("")).collect(),
        };
        let count = |o: &str| outcomes.iter().filter(|&&x| x == o).count();
        assert_eq!((count("interrupted"), count("banner"), outcomes.len()), (2, 1, 3), "{stdout}");
    }
}

#[test]
fn a_closed_pipe_leaves_the_status_of_what_was_written() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    // A /16 of a port nobody listens on: 65534 refusals, far more than `head -2` reads.
    let closed = common::closed_port();
    let port = closed.port().to_string();
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("sshprobe"))
        .args(["probe", "127.0.0.0/16", "-p", &port, "-o", "csv"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sshprobe");
    let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
    let mut lines = [String::new(), String::new()];
    for line in &mut lines {
        reader.read_line(line).expect("a line");
    }
    drop(reader); // `| head -2` exits
    assert!(lines[0].starts_with("target,"), "{lines:?}");
    assert_eq!(lines[1].split(',').nth(2), Some("refused"), "{lines:?}");
    let status = wait_exit(&mut child);
    let out = child.wait_with_output().expect("output");
    assert_eq!(status.code(), Some(1), "a refused row was written: {}", String::from_utf8_lossy(&out.stderr));
}
