//! Bad input: every mistake a user can make on the command line or in a target file is
//! one clear line on stderr naming it, exit status 2, never a panic, and never a packet or a DNS
//! query it did not ask for. Loopback only; no root needed.

mod common;

use common::sshprobe;
use sshprobe::lab::{Behaviour, Lab, LabConfig};
use std::time::Duration;

/// Runs sshprobe; returns exit status, stdout and stderr.
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = sshprobe().args(args).timeout(Duration::from_secs(30)).output().expect("running sshprobe");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts a usage error: exit 2, nothing on stdout, one line on stderr containing `want`.
fn assert_one_line_error(args: &[&str], want: &str) {
    let (code, stdout, stderr) = run(args);
    assert_eq!(code, Some(2), "{args:?}: stderr {stderr}");
    assert!(stdout.is_empty(), "{args:?}: stdout {stdout}");
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: one line, got:\n{stderr}");
    assert!(stderr.contains(want), "{args:?}: wanted {want:?} in:\n{stderr}");
}

#[test]
fn dotted_quads_that_are_not_addresses_are_input_errors_not_names() {
    for command in ["probe", "diagnose", "limits"] {
        for (target, shown) in [("999.1.1.1", "999.1.1.1"), ("10.1:2222", "10.1"), ("1.2.3.4.5", "1.2.3.4.5")]
        {
            let (code, _, stderr) = run(&[command, target]);
            assert_eq!(code, Some(2), "{command} {target}: {stderr}");
            assert!(
                stderr.contains(&format!("invalid IPv4 address \"{shown}\"")),
                "{command} {target}: {stderr}"
            );
            // Never sent to the resolver.
            assert!(!stderr.contains("resolve"), "{command} {target}: {stderr}");
        }
    }
    // One line, nothing else.
    for command in ["diagnose", "limits"] {
        assert_one_line_error(&[command, "999.1.1.1"], "invalid IPv4 address \"999.1.1.1\"");
    }
}

/// A lab on a runtime of its own, for tests that run the binary against it.
fn background_lab() -> (tokio::runtime::Runtime, Lab) {
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let lab = rt.block_on(Lab::start(LabConfig::default())).expect("the lab");
    (rt, lab)
}

/// Asserts a usage error that clap reports: exit 2, one `error:` line naming the option, then
/// clap's pointer to --help.
fn assert_clap_error(args: &[&str], option: &str, want: &str) {
    let (code, stdout, stderr) = run(args);
    assert_eq!(code, Some(2), "{args:?}: stderr {stderr}");
    assert!(stdout.is_empty(), "{args:?}: stdout {stdout}");
    let lines: Vec<&str> =
        stderr.lines().filter(|l| !l.is_empty() && !l.starts_with("For more information")).collect();
    assert_eq!(lines.len(), 1, "{args:?}: one line, got:\n{stderr}");
    assert!(lines[0].starts_with("error: ") && lines[0].contains(option), "{args:?}: {stderr}");
    assert!(lines[0].contains(want), "{args:?}: wanted {want:?} in:\n{stderr}");
}

#[test]
fn zero_timeouts_ports_and_counts_are_refused_alike() {
    let target = "127.0.0.1:1";
    for (args, option, want) in [
        (vec!["probe", target, "--connect-timeout", "0"], "--connect-timeout", "longer than zero"),
        (vec!["probe", target, "--banner-timeout", "0s"], "--banner-timeout", "longer than zero"),
        (vec!["probe", target, "--connect-timeout", "soon"], "--connect-timeout", "not a duration"),
        (vec!["probe", target, "-p", "0"], "--port", "from 1 to 65535"),
        (vec!["probe", target, "--count", "0"], "--count", "at least 1"),
        (vec!["probe", target, "--count=-1"], "--count", "at least 1"),
        (vec!["probe", target, "--concurrency", "0"], "--concurrency", "at least 1"),
        (vec!["probe", target, "--threads", "100000"], "--threads", "1024"),
        (vec!["diagnose", target, "--connect-timeout", "0s"], "--connect-timeout", "longer than zero"),
        (vec!["diagnose", target, "--budget", "0"], "--budget", "at least 1"),
        (vec!["diagnose", target, "-p", "0"], "--port", "from 1 to 65535"),
        (vec!["limits", target, "--max-held", "0"], "--max-held", "at least 1"),
        (vec!["limits", target, "--probes", "0"], "--probes", "at least 1"),
        (vec!["limits", target, "--banner-timeout", "0"], "--banner-timeout", "longer than zero"),
        (vec!["limits", target, "--max-duration", "0s"], "--max-duration", "longer than zero"),
        (vec!["lab", "--base-port", "65530"], "--base-port", "65525"),
    ] {
        assert_clap_error(&args, option, want);
    }
    // A bare number is seconds, for every duration: `--connect-timeout 5` is a timeout like `5s`.
    let (code, _, stderr) = run(&["probe", target, "--connect-timeout", "5", "--banner-timeout", "1.5"]);
    assert_eq!(code, Some(1), "refused, not a usage error: {stderr}");
}

#[test]
fn a_lab_port_in_use_is_named() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().expect("address").port();
    if port > 65525 {
        return; // The lab's ports would not fit: the test above covers that.
    }
    assert_one_line_error(
        &["lab", "--base-port", &port.to_string()],
        &format!("listening on 127.0.0.1:{port}: Address already in use"),
    );
}

#[test]
fn an_empty_target_list_is_an_input_error() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "# nothing here\n\n").expect("write");
    assert_one_line_error(
        &["probe", "-i", empty.to_str().expect("path")],
        "no targets: the target list is empty",
    );
    assert_one_line_error(&["probe", "-i", "-", "-o", "jsonl"], "no targets");
    // Two targets in three shards: the third gets none, and nothing is probed.
    assert_one_line_error(
        &["probe", "127.0.0.1:1", "127.0.0.1:2", "--shard", "3/3"],
        "no targets: shard 3/3 holds none of the targets given",
    );
}

#[test]
fn a_bad_target_is_one_line_and_the_file_lines_after_a_bad_one_are_still_probed() {
    assert_one_line_error(&["probe", "bad host"], "invalid host name \"bad host\"");
    let (_rt, lab) = background_lab();
    let ok = lab.addr(Behaviour::Ok).to_string();
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("targets.txt");
    let mut text = b"# hosts\n\xff\xfe\x1b[2J\n".to_vec();
    text.extend_from_slice(format!("{ok}\nbad host\n999.1.1.1\n{ok} # again\n").as_bytes());
    std::fs::write(&file, text).expect("write");
    let path = file.to_str().expect("path");
    let (code, stdout, stderr) = run(&["probe", "-i", path, "-o", "jsonl"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stdout.lines().filter(|l| l.contains("\"banner\"")).count(), 2, "{stdout}");
    let errors: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        errors,
        [
            format!("sshprobe: {path}:2: not UTF-8 text: \"\u{fffd}\u{fffd}\\u{{1b}}[2J\""),
            format!("sshprobe: {path}:4: invalid host name \"bad host\""),
            format!("sshprobe: {path}:5: invalid IPv4 address \"999.1.1.1\": expected four numbers from 0 to 255, e.g. 192.0.2.10"),
        ],
        "{stderr}"
    );
}

#[test]
fn an_unwritable_plot_is_found_before_the_benchmark() {
    // A server that counts connections: limits must not open one.
    let server = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    server.set_nonblocking(true).expect("nonblocking");
    let target = server.local_addr().expect("address").to_string();
    assert_one_line_error(
        &["limits", &target, "--plot", "/nonexistent/dir/x.svg"],
        "--plot /nonexistent/dir/x.svg: cannot write there",
    );
    assert!(
        matches!(server.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "limits connected before checking --plot"
    );
}
