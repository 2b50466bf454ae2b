//! What a user and a hostile tester expect of every command: quiet and correct in pipes, CSV cells
//! a spreadsheet does not run, safe defaults, one escaping, targets read as written. Through the CLI,
//! against the embedded lab and small servers the tests start on loopback; no root needed.

mod common;

use common::sshprobe;
use sshprobe::lab::{Behaviour, Lab, LabConfig};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A lab on a runtime of its own, for tests that run the binary against it.
fn background_lab() -> (tokio::runtime::Runtime, Lab) {
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let lab = rt.block_on(Lab::start(LabConfig::default())).expect("the lab");
    (rt, lab)
}

/// The write end of a pipe whose read end is already closed: every write to it fails with EPIPE,
/// as `| head -1` makes every write after the first line fail.
fn closed_pipe() -> std::io::PipeWriter {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    writer
}

/// Runs sshprobe with stdout (and stderr, when `both`) on a closed pipe; returns its exit status
/// and what it wrote on stderr when stderr was kept.
fn run_into_closed_pipe(args: &[&str], both: bool) -> (Option<i32>, String) {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("sshprobe"));
    cmd.args(args).env("SSHPROBE_STATE_DIR", "").stdin(Stdio::null()).stdout(closed_pipe());
    if both {
        cmd.stderr(closed_pipe());
    } else {
        cmd.stderr(Stdio::piped());
    }
    let out = cmd.output().expect("running sshprobe");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn every_command_is_quiet_on_a_closed_stdout_or_stderr_with_the_status_of_what_it_wrote() {
    let (_rt, lab) = background_lab();
    let closed = common::closed_port();
    let nothing = closed.addr().to_string();
    let ok = lab.addr(Behaviour::Ok).to_string();
    let cases: Vec<(Vec<&str>, i32)> = vec![
        // Nothing listens: the diagnosis is `not_listening`, status 1, whether or not it could be read.
        (vec!["diagnose", &nothing], 1),
        (vec!["diagnose", &nothing, "-o", "csv"], 1),
        (vec!["probe", &nothing], 1),
        (vec!["probe", &ok, "-o", "jsonl"], 0),
        (vec!["demo"], 0),
        (vec!["man", "probe"], 0),
        (vec!["completions", "bash"], 0),
        (vec!["limits", &nothing], 1),
    ];
    for (args, status) in &cases {
        for both in [true, false] {
            let (code, stderr) = run_into_closed_pipe(args, both);
            assert_eq!(code, Some(*status), "{args:?} (stderr closed too: {both}): {stderr}");
            assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{args:?}: {stderr}");
        }
    }
}

#[test]
fn diagnose_stops_at_a_closed_stdout_and_diagnoses_no_further_target() {
    let closed = common::closed_port();
    let nothing = closed.addr().to_string();
    let second = common::closed_port();
    let other = second.addr().to_string();
    let (code, stderr) = run_into_closed_pipe(&["diagnose", &nothing, &other], false);
    // The status of the one diagnosis written (not_listening), no `Broken pipe`, and the second
    // target never started.
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stderr.contains("Broken pipe") && !stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains(&format!("diagnosing {nothing}")), "{stderr}");
    assert!(!stderr.contains(&format!("diagnosing {other}")), "{stderr}");
}

#[test]
fn the_lab_serves_on_when_nobody_reads_its_table() {
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("sshprobe"))
        .args(["lab", "--base-port", "0"])
        .stdin(Stdio::null())
        .stdout(closed_pipe())
        .stderr(closed_pipe())
        .spawn()
        .expect("starting the lab");
    let pid = child.id();
    // Up when its sockets listen (ss names the owning process), or ended early: at most 20 s.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut listening = false;
    while Instant::now() < deadline && !listening {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the lab ended with {status} before it was stopped");
        }
        let ss = Command::new("ss").args(["-ltnpH"]).output().map(|o| o.stdout).unwrap_or_default();
        listening = String::from_utf8_lossy(&ss).contains(&format!("pid={pid},"));
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: a signal to the child we started.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let status = common::wait_within(&mut child, Duration::from_secs(20), "the lab after SIGINT");
    assert!(listening, "the lab never listened");
    assert!(matches!(status.code(), Some(0) | Some(130)), "{status}");
}

/// A server on loopback that answers every connection with `banner` and closes after reading the
/// client's line (or 2 s), for as long as the returned guard lives.
struct BannerServer {
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BannerServer {
    fn start(banner: &'static [u8]) -> BannerServer {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("its address");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        std::thread::spawn(move || {
                            let _ = conn.set_nonblocking(false);
                            let _ = conn.write_all(banner);
                            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                            let _ = conn.read(&mut [0u8; 256]);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        BannerServer { addr, stop, thread: Some(thread) }
    }
}

impl Drop for BannerServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The cells of one CSV row (RFC 4180), unquoted.
fn csv_cells(row: &str) -> Vec<String> {
    let (mut cells, mut cell, mut quoted, mut chars) =
        (Vec::new(), String::new(), false, row.chars().peekable());
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cell.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => cells.push(std::mem::take(&mut cell)),
            (c, _) => cell.push(c),
        }
    }
    cells.push(cell);
    cells
}

#[test]
fn no_csv_cell_from_a_server_starts_a_spreadsheet_formula() {
    let server = BannerServer::start(b"SSH-2.0-=HYPERLINK(\"http://x\",\"click\")\r\n");
    let refusing = BannerServer::start(b"@SUM(1+1)*cmd|' /C calc'!A0\r\n");
    let dropping = BannerServer::start(b"-5\r\n");
    let mut checked = 0;
    for addr in [server.addr, refusing.addr, dropping.addr] {
        let target = addr.to_string();
        for args in [vec!["probe", &target, "-o", "csv"], vec!["diagnose", &target, "-o", "csv"]] {
            let out = sshprobe().args(&args).timeout(Duration::from_secs(120)).output().expect("sshprobe");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(stdout.lines().count() >= 2, "{args:?}: {stdout}");
            for row in stdout.lines().skip(1) {
                for cell in csv_cells(row) {
                    checked += 1;
                    assert!(
                        !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                        "{args:?}: cell {cell:?} in {row}"
                    );
                }
            }
            if args[0] == "probe" && addr == server.addr {
                assert!(stdout.contains("'=HYPERLINK"), "{stdout}");
            }
        }
    }
    assert!(checked > 0);
}

/// Runs sshprobe; returns exit status, stdout and stderr.
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = sshprobe().args(args).timeout(Duration::from_secs(60)).output().expect("running sshprobe");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_ipv6_address_that_looks_like_it_names_a_port_is_warned_about_and_shown_with_its_port() {
    let (_, stdout, stderr) = run(&["probe", "::1:2901", "--connect-timeout", "1s"]);
    assert!(
        stderr.contains(
            "warning: ::1:2901 is the IPv6 address ::1:2901, port 22; for port 2901 of ::1, write [::1]:2901"
        ),
        "{stderr}"
    );
    assert!(stdout.contains("[::1:2901]:22"), "{stdout}");
    // Written with brackets: no warning.
    let closed = common::closed_port();
    let (_, _, stderr) = run(&["probe", &format!("[::1]:{}", closed.port()), "--connect-timeout", "1s"]);
    assert!(!stderr.contains("warning"), "{stderr}");
}

#[test]
fn a_target_file_line_that_is_no_host_name_is_rejected_with_its_line() {
    let closed = common::closed_port();
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("targets");
    std::fs::write(&file, format!("{}\n-5\n--help\na..b\n", closed.addr())).expect("write");
    let path = file.to_str().expect("a UTF-8 path");
    let (code, stdout, stderr) = run(&["probe", "-i", path, "-o", "jsonl"]);
    assert_eq!(code, Some(2), "{stderr}");
    for (line, text) in [(2, "-5"), (3, "--help"), (4, "a..b")] {
        assert!(stderr.contains(&format!("{path}:{line}: invalid host name \"{text}\"")), "{stderr}");
    }
    assert!(!stderr.contains("resolve"), "{stderr}");
    // The good line was probed.
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
}

#[test]
fn a_source_of_the_other_family_is_a_usage_error_naming_both() {
    let closed = common::closed_port();
    let v4 = closed.addr().to_string();
    for args in [
        vec!["probe", "--source", "::1", &v4],
        vec!["diagnose", "--source", "::1", &v4],
        vec!["limits", "--source", "::1", &v4],
        vec!["probe", "--source", "127.0.0.1", "[::1]:22"],
    ] {
        let (code, stdout, stderr) = run(&args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stdout.is_empty() || args[0] == "diagnose", "{args:?}: {stdout}");
        let (source, target) = (args[2], args[3]);
        assert!(
            stderr.contains(&format!("--source {source} is")) && stderr.contains(target),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn addresses_that_are_never_a_unicast_host_are_left_out_unless_asked() {
    let closed = common::closed_port();
    let zero = format!("0.0.0.0:{}", closed.port());
    let special = ["224.0.0.1", "255.255.255.255", zero.as_str(), "240.0.0.0/30", "ff02::1"];
    let mut args = vec!["probe", "-o", "jsonl", "--connect-timeout", "1s"];
    args.extend(special);
    let (code, stdout, stderr) = run(&args);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    // Stated once, naming the targets and the way to probe them anyway.
    assert_eq!(stderr.matches("leaving out addresses that are never a unicast host").count(), 1, "{stderr}");
    assert!(stderr.contains("--include-special"), "{stderr}");
    assert!(stderr.contains("224.0.0.1 (224.0.0.1) is excluded (never a unicast host"), "{stderr}");
    assert!(stderr.contains("no targets: every target given is excluded"), "{stderr}");
    // Asked for: every one is attempted (none is a host here, so none gets a banner).
    args.push("--include-special");
    let (code, stdout, stderr) = run(&args);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stdout.lines().count(), 4 + 2, "{stdout}");
    assert!(!stderr.contains("never a unicast host"), "{stderr}");
    // Private and loopback networks stay in, and say nothing.
    let (code, stdout, stderr) = run(&["probe", "-o", "jsonl", &format!("127.0.0.0/30:{}", closed.port())]);
    assert_eq!((code, stdout.lines().count()), (Some(1), 2), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

#[test]
fn limits_outside_loopback_runs_only_when_confirmed() {
    // 198.18.0.0/15 (benchmarking) is no address of this host: nothing may be sent there unasked.
    let (code, stdout, stderr) = run(&["limits", "198.18.0.1:22", "--max-held", "1", "--probes", "1"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("locked out") && stderr.contains("give --yes"), "{stderr}");
    // Loopback needs no confirmation (a closed port: the benchmark's own error, not a question).
    let closed = common::closed_port();
    let (_, _, stderr) = run(&["limits", &closed.addr().to_string()]);
    assert!(!stderr.contains("--yes"), "{stderr}");
}

/// Starts a long-running sshprobe command, waits for its first stdout line (or 20 s), stops it
/// with `signal`, and returns that line and all of stderr.
fn first_line_then_signal(args: &[&str], signal: i32) -> (String, String) {
    use std::io::{BufRead, Read};
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("sshprobe"))
        .args(args)
        .env("SSHPROBE_STATE_DIR", "")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning sshprobe");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
    // SAFETY: a signal to the child we started.
    unsafe { libc::kill(child.id() as i32, signal) };
    common::wait_within(
        &mut child,
        Duration::from_secs(20),
        &format!("sshprobe {args:?} after signal {signal}"),
    );
    let mut stderr = String::new();
    let _ = child.stderr.take().expect("stderr").read_to_string(&mut stderr);
    (line, stderr)
}

#[test]
fn serve_and_lab_warn_when_they_leave_loopback() {
    let (line, stderr) =
        first_line_then_signal(&["serve", "--listen", "0.0.0.0:0", "--allow", "0.0.0.0/0"], libc::SIGTERM);
    assert!(line.contains("listening on"), "{line} {stderr}");
    assert!(
        stderr.contains("warning: listening on 0.0.0.0:0, beyond loopback, with --allow 0.0.0.0/0"),
        "{stderr}"
    );
    // On loopback, or with a narrow --allow: no warning.
    for args in [
        ["serve", "--listen", "127.0.0.1:0", "--allow", "0.0.0.0/0"],
        ["serve", "--listen", "0.0.0.0:0", "--allow", "10.1.2.0/24"],
    ] {
        let (line, stderr) = first_line_then_signal(&args, libc::SIGTERM);
        assert!(line.contains("listening on") && !stderr.contains("warning"), "{args:?}: {line} {stderr}");
    }
    let (line, stderr) = first_line_then_signal(&["lab", "--bind", "0.0.0.0"], libc::SIGINT);
    assert!(line.contains("ENDPOINT"), "{line} {stderr}");
    assert!(stderr.contains("warning: the lab listens on 0.0.0.0, beyond loopback"), "{stderr}");
    let (_, stderr) = first_line_then_signal(&["lab"], libc::SIGINT);
    assert!(!stderr.contains("warning"), "{stderr}");
}

/// The help of every command, at `columns` terminal columns.
fn help_at(command: &str, columns: &str) -> String {
    let mut cmd = sshprobe();
    if !command.is_empty() {
        cmd.arg(command);
    }
    let out = cmd.arg("--help").env("COLUMNS", columns).output().expect("sshprobe --help");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const COMMANDS: [&str; 9] = ["", "probe", "diagnose", "limits", "lab", "demo", "serve", "completions", "man"];

#[test]
fn help_tables_and_examples_keep_their_shape_on_an_80_column_terminal() {
    for command in COMMANDS {
        let (narrow, wide) = (help_at(command, "80"), help_at(command, "1000"));
        // Everything after the options (examples, tables, notes) is laid out by hand: clap must not
        // need to re-wrap a line of it on 80 columns.
        let tail = |h: &str| h.split_once("\nExamples:").map(|(_, t)| t.to_string()).unwrap_or_default();
        assert!(!tail(&wide).is_empty() || command == "demo", "{command}: no examples");
        assert_eq!(tail(&narrow), tail(&wide), "sshprobe {command} --help: re-wrapped on 80 columns");
        for line in tail(&wide).lines() {
            assert!(line.chars().count() < 80, "sshprobe {command} --help: {line:?}");
            // No example command broken mid-quote.
            if line.trim_start().starts_with("sshprobe ") || line.trim_start().starts_with("curl ") {
                assert_eq!(line.matches('\'').count() % 2, 0, "sshprobe {command} --help: {line:?}");
            }
        }
    }
}

#[test]
fn every_man_page_names_the_version_and_the_readme_installs_every_page() {
    let version = env!("CARGO_PKG_VERSION");
    for command in COMMANDS {
        let mut cmd = sshprobe();
        cmd.arg("man");
        if !command.is_empty() {
            cmd.arg(command);
        }
        let page = String::from_utf8_lossy(&cmd.output().expect("sshprobe man").stdout).into_owned();
        let title = page.lines().find(|l| l.starts_with(".TH")).unwrap_or_default();
        assert!(title.contains(version), "sshprobe man {command}: {title}");
    }
    let readme = std::fs::read_to_string("README.md").expect("README.md");
    let man_loop = readme.lines().find(|l| l.starts_with("for c in ''")).expect("the README's man loop");
    for command in COMMANDS.iter().skip(1) {
        assert!(
            man_loop.split_whitespace().any(|w| w.trim_end_matches(';') == *command),
            "README man loop lacks {command}: {man_loop}"
        );
    }
    // `cargo install --path .` comes before the first command that needs sshprobe on the PATH.
    let install = readme.find("cargo install --path .").expect("the README installs sshprobe");
    let first_use = readme.find("\nsshprobe ").expect("a command line");
    assert!(install < first_use, "the README uses sshprobe before installing it");
}

/// One HTTP/1.0 GET to `addr`; the whole answer.
fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connecting to the exporter");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("a read timeout");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").expect("the request");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

#[test]
fn serve_counts_and_shows_a_name_that_does_not_resolve() {
    if !common::need("serve_counts_and_shows_a_name_that_does_not_resolve", &["ip"]) {
        return;
    }
    // In a network namespace of this thread's own (namespaces are per thread): the lookup of a
    // name that is nowhere cannot leave the machine, and the exporter started from here shares it.
    std::thread::spawn(|| {
        // SAFETY: unshare on this thread only; no memory is involved.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "{}", std::io::Error::last_os_error());
        let up = Command::new("ip").args(["link", "set", "lo", "up"]).status().expect("ip");
        assert!(up.success());
        let mut child = Command::new(assert_cmd::cargo::cargo_bin("sshprobe"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("sshprobe serve");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
        let addr: std::net::SocketAddr = line
            .trim()
            .rsplit("http://")
            .next()
            .and_then(|a| a.trim_end_matches('/').parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        let scrape = http_get(addr, "/probe?target=nosuch.invalid:22");
        let metrics = http_get(addr, "/metrics");
        let page = http_get(addr, "/");
        // SAFETY: a signal to the child we started.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        common::wait_within(&mut child, Duration::from_secs(20), "serve after SIGTERM");
        assert!(scrape.contains("sshprobe_outcome{outcome=\"resolve_error\"} 1"), "{scrape}");
        assert!(scrape.contains("probe_success 0"), "{scrape}");
        assert!(metrics.contains("sshprobe_exporter_probes_total{outcome=\"resolve_error\"} 1"), "{metrics}");
        assert!(page.contains("nosuch.invalid") && page.contains("resolve_error"), "{page}");
    })
    .join()
    .expect("the namespace thread");
}

#[test]
fn serve_answers_a_scrape_in_flight_at_sigterm_as_interrupted() {
    // A server that accepts and never speaks: the probe waits for a banner until stopped.
    let tarpit = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
    let target = tarpit.local_addr().expect("its address");
    let (accepted_tx, accepted_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((conn, _)) = tarpit.accept() {
            let _ = accepted_tx.send(());
            std::thread::sleep(Duration::from_secs(60));
            drop(conn);
        }
    });
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("sshprobe"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sshprobe serve");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
    let addr: std::net::SocketAddr = line
        .trim()
        .rsplit("http://")
        .next()
        .and_then(|a| a.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let scrape = std::thread::spawn(move || http_get(addr, &format!("/probe?target={target}")));
    // The probe is under way once the tarpit accepted it; then SIGTERM.
    accepted_rx.recv_timeout(Duration::from_secs(20)).expect("the probe reached the tarpit");
    // SAFETY: a signal to the child we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let answer = scrape.join().expect("the scrape");
    let status = common::wait_within(&mut child, Duration::from_secs(20), "serve after SIGTERM");
    assert!(answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("sshprobe_outcome{outcome=\"interrupted\"} 1"), "{answer}");
    assert!(status.success(), "{status}");
}
