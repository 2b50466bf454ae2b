//! What a network engineer expects of a command-line tool: shell completions and man
//! pages, `--color`, port lists and ranges, exclusion lists applied before any packet, absolute
//! times in every record, an output file written a whole line at a time. Loopback only.

mod common;

use common::sshprobe;
use sshprobe::lab::{Behaviour, Lab, LabConfig};
use std::time::Duration;

fn stdout_of(args: &[&str]) -> String {
    let out = sshprobe().args(args).timeout(Duration::from_secs(60)).output().expect("running sshprobe");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn bash_completes_commands_and_options() {
    let script = stdout_of(&["completions", "bash"]);
    if !common::need_bins("bash_completes_commands_and_options", &["bash"]) {
        return;
    }
    let complete = |words: &str| {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("sshprobe.bash");
        std::fs::write(&path, &script).expect("write");
        let program = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
             _sshprobe sshprobe \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\"; echo \"${{COMPREPLY[@]}}\"",
            path.display()
        );
        let out = std::process::Command::new("bash").args(["--norc", "-c", &program]).output().expect("bash");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(complete("sshprobe pro"), "probe");
    assert_eq!(complete("sshprobe diag"), "diagnose");
    assert!(complete("sshprobe probe --send-f").split(' ').any(|w| w == "--send-first"));
    for shell in ["zsh", "fish"] {
        let script = stdout_of(&["completions", shell]);
        assert!(script.contains("send-first") && script.contains("diagnose"), "{shell}: {script}");
    }
}

#[test]
fn man_pages_for_sshprobe_and_each_command() {
    let page = stdout_of(&["man"]);
    assert!(page.contains(".TH sshprobe 1"), "{page}");
    assert!(page.contains("diagnose") && page.contains("limits"), "{page}");
    let probe = stdout_of(&["man", "probe"]);
    assert!(probe.contains(".TH sshprobe\\-probe 1") || probe.contains(".TH sshprobe-probe 1"), "{probe}");
    assert!(probe.contains("send\\-first"), "{probe}");
    let out = sshprobe().args(["man", "nope"]).output().expect("sshprobe");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no command \"nope\": one of probe, diagnose"));
    // Rendered by man(1) when it is installed.
    if common::find_bin("man").is_some() {
        let rendered = std::process::Command::new("sh")
            .args(["-c", "sshprobe_page=$(mktemp) && cat > $sshprobe_page && MANWIDTH=100 man -l $sshprobe_page; rm -f $sshprobe_page"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().expect("stdin").write_all(probe.as_bytes())?;
                child.wait_with_output()
            })
            .expect("man");
        let text = String::from_utf8_lossy(&rendered.stdout);
        assert!(text.contains("--send-first"), "{text}");
    }
}

/// A lab on a runtime of its own, for tests that run the binary against it.
fn background_lab() -> (tokio::runtime::Runtime, Lab) {
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let lab = rt.block_on(Lab::start(LabConfig::default())).expect("the lab");
    (rt, lab)
}

#[test]
fn colour_follows_the_flag_and_the_environment_and_logs_off_a_terminal_have_none() {
    let (_rt, lab) = background_lab();
    let ok = lab.addr(Behaviour::Ok).to_string();
    // Output captured by the test is never a terminal: colour only when forced.
    let run = |flags: &[&str], env: &[(&str, &str)]| {
        let mut cmd = sshprobe();
        cmd.env_remove("NO_COLOR").env_remove("CLICOLOR_FORCE").env("TERM", "xterm-256color");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd
            .args(["probe", "-v", &ok])
            .args(flags)
            .timeout(Duration::from_secs(30))
            .output()
            .expect("sshprobe");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(stderr.contains("target order"), "the -v log line: {stderr}");
        (String::from_utf8_lossy(&out.stdout).contains("\x1b[32m"), stderr.contains('\x1b'))
    };
    assert_eq!(run(&[], &[]), (false, false), "auto, off a terminal");
    assert_eq!(run(&["--color", "always"], &[]), (true, true));
    assert_eq!(run(&["--color", "always"], &[("NO_COLOR", "1")]), (true, true), "the flag wins");
    assert_eq!(run(&["--color", "never"], &[("CLICOLOR_FORCE", "1")]), (false, false));
    assert_eq!(run(&[], &[("CLICOLOR_FORCE", "1")]), (true, true));
    assert_eq!(run(&[], &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]), (false, false));
    assert_eq!(run(&[], &[("CLICOLOR_FORCE", "0")]), (false, false));
    assert_eq!(run(&["--color=auto"], &[("TERM", "dumb")]), (false, false));
}

/// Runs sshprobe; returns the exit status, the JSON records on stdout, and stderr.
fn records(args: &[&str]) -> (Option<i32>, Vec<serde_json::Value>, String) {
    let out = sshprobe().args(args).timeout(Duration::from_secs(60)).output().expect("running sshprobe");
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (out.status.code(), lines, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn field<'a>(records: &'a [serde_json::Value], key: &str) -> Vec<&'a str> {
    let mut v: Vec<&str> = records.iter().map(|r| r[key].as_str().expect(key)).collect();
    v.sort_unstable();
    v
}

#[test]
fn port_lists_and_ranges_on_the_command_line_and_in_targets() {
    let (_rt, lab) = background_lab();
    let ok = lab.addr(Behaviour::Ok).port();
    let free = common::free_port();
    let list = format!("{ok},{free}");
    let (code, got, stderr) = records(&["probe", "127.0.0.1", "-p", &list, "-o", "jsonl"]);
    assert_eq!(code, Some(1), "{stderr}");
    let mut pairs: Vec<(String, String)> = got
        .iter()
        .map(|r| (r["target"].as_str().unwrap().into(), r["outcome"].as_str().unwrap().into()))
        .collect();
    pairs.sort();
    let mut want = vec![
        (format!("127.0.0.1:{ok}"), "banner".to_string()),
        (format!("127.0.0.1:{free}"), "refused".into()),
    ];
    want.sort();
    assert_eq!(pairs, want);
    // A range in the target, for an address and a network.
    let lo = free.min(65533);
    let range = format!("127.0.0.1:{lo}-{}", lo + 2);
    let (_, got, stderr) = records(&["probe", &range, "-o", "jsonl", "--connect-timeout", "2s"]);
    let remotes = field(&got, "remote");
    assert_eq!(remotes, [0, 1, 2].map(|i| format!("127.0.0.1:{}", lo + i)), "{stderr}");
    let net = format!("127.0.0.0/30:{lo}-{}", lo + 1);
    let (_, got, _) = records(&["probe", &net, "-o", "jsonl", "--no-shuffle"]);
    assert_eq!(got.len(), 4, "2 addresses x 2 ports");
}

/// A listener that counts connections: an excluded target must never reach it.
fn counting_listener() -> std::net::TcpListener {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.set_nonblocking(true).expect("nonblocking");
    l
}

fn assert_never_connected(l: &std::net::TcpListener) {
    assert!(
        matches!(l.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "an excluded target got a connection"
    );
}

#[test]
fn excluded_networks_get_no_packet() {
    let guarded = counting_listener();
    let port = guarded.local_addr().expect("address").port();
    let addr = format!("127.0.0.1:{port}");
    let net = format!("127.0.0.0/30:{port}");
    // An address named on the command line, and a network's member.
    let (code, got, stderr) = records(&["probe", &addr, &net, "--exclude", "127.0.0.1/32", "-o", "jsonl"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(field(&got, "remote"), [format!("127.0.0.2:{port}")], "{stderr}");
    assert!(stderr.contains(&format!("{addr} (127.0.0.1) is excluded (--exclude): not probed")), "{stderr}");
    assert_never_connected(&guarded);
    // A blocklist file, and a name that resolves into it: everything is excluded.
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("blocklist.txt");
    std::fs::write(&file, "# loopback\n127.0.0.0/8  # all of it\n\n").expect("write");
    let localhost = format!("localhost:{port}");
    let out = sshprobe()
        .args(["probe", &localhost, &addr, "--exclude-file", file.to_str().expect("path")])
        .args(["--exclude", "::1"])
        .timeout(Duration::from_secs(30))
        .output()
        .expect("sshprobe");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no targets: every target given is excluded"), "{stderr}");
    assert!(stderr.contains(&format!("{localhost} (")), "the name is named: {stderr}");
    assert_never_connected(&guarded);
    // A blocklist line that is not a network stops the run before it starts.
    std::fs::write(&file, "10.0.0.0/8\n10.0.0.0/33\n").expect("write");
    let out = sshprobe()
        .args(["probe", &addr, "--exclude-file", file.to_str().expect("path")])
        .output()
        .expect("sshprobe");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("{}:2: invalid network \"10.0.0.0/33\"", file.display())), "{stderr}");
    assert_never_connected(&guarded);
}

#[test]
fn every_record_carries_its_absolute_start_time() {
    let (_rt, lab) = background_lab();
    let ok = lab.addr(Behaviour::Ok).to_string();
    let refused = format!("127.0.0.1:{}", common::free_port());
    let before = std::time::SystemTime::now();
    let (_, got, _) = records(&["probe", &ok, &refused, "-o", "jsonl"]);
    let out = sshprobe().args(["probe", &ok, &refused, "-o", "csv"]).output().expect("sshprobe");
    let after = std::time::SystemTime::now();
    let csv = String::from_utf8_lossy(&out.stdout);
    let mut rows = csv.lines();
    let header: Vec<&str> = rows.next().expect("header").split(',').collect();
    let column = header.iter().position(|&h| h == "time").expect("a time column");
    let mut times: Vec<String> = got.iter().map(|r| r["time"].as_str().expect("time").to_string()).collect();
    times.extend(rows.map(|row| row.split(',').nth(column).expect("time").to_string()));
    assert_eq!(times.len(), 4, "{csv}");
    for t in times {
        // 2026-12-02T05:03:35.586589Z: UTC, six decimals.
        assert!(t.len() == 27 && t.ends_with('Z') && t.as_bytes()[19] == b'.', "{t}");
        let parsed = humantime::parse_rfc3339(&t).unwrap_or_else(|e| panic!("{t}: {e}"));
        let micros =
            |st: std::time::SystemTime| st.duration_since(std::time::UNIX_EPOCH).expect("epoch").as_micros();
        assert!(micros(before) <= micros(parsed) && micros(parsed) <= micros(after), "{t}");
    }
}

#[test]
fn output_file_takes_the_results_whole_lines_even_when_killed() {
    use std::process::{Command, Stdio};
    let (_rt, lab) = background_lab();
    let ok = lab.addr(Behaviour::Ok).to_string();
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("results.jsonl");
    let path = file.to_str().expect("path");
    let out =
        sshprobe().args(["probe", &ok, "-o", "jsonl", "--output-file", path]).output().expect("sshprobe");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty(), "results went to the file");
    let text = std::fs::read_to_string(&file).expect("the results file");
    let r: serde_json::Value = serde_json::from_str(text.trim_end()).expect("one JSON line");
    common::check_record(&r);
    assert_eq!(r["outcome"], "banner");
    // An unwritable path is an input error before any probe.
    let out =
        sshprobe().args(["probe", &ok, "--output-file", "/nonexistent/dir/x"]).output().expect("sshprobe");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--output-file /nonexistent/dir/x"));

    // Killed mid-run (SIGKILL: no chance to flush): the file holds whole lines only.
    let port = common::free_port().to_string();
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("sshprobe"))
        .args(["probe", "127.0.0.0/16", "-p", &port, "-o", "csv", "--rate", "20000", "--output-file", path])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sshprobe");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0) < 200_000
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("kill");
    child.wait().expect("wait");
    let text = std::fs::read(&file).expect("the results file");
    assert!(text.len() >= 200_000, "{} bytes written before the deadline", text.len());
    assert_eq!(text.last(), Some(&b'\n'), "a torn last line");
    let text = String::from_utf8(text).expect("UTF-8");
    assert!(text.lines().skip(1).all(|row| row.split(',').count() == 15 && row.ends_with('Z')), "a torn row");
}

/// The shell script of the Kubernetes example's container, as Kubernetes would run it.
fn kubernetes_script() -> String {
    let yaml = include_str!("../docs/kubernetes-indexed-job.yaml");
    let mut lines = yaml.lines().skip_while(|l| l.trim() != "args:").skip(1);
    let first = lines.next().expect("the args list");
    assert_eq!(first.trim(), "- |", "the script is a block scalar");
    let body: Vec<&str> = lines.take_while(|l| l.starts_with("              ")).collect();
    body.iter().map(|l| &l[14..]).collect::<Vec<_>>().join("\n")
}

#[test]
fn the_kubernetes_indexed_job_example_splits_a_scan_into_disjoint_shards() {
    let script = kubernetes_script();
    assert!(script.contains("--shard") && script.contains("--output-file"), "{script}");
    let (_rt, lab) = background_lab();
    let ok = lab.addr(Behaviour::Ok);
    let refused = common::free_port();
    let dir = tempfile::tempdir().expect("a temp dir");
    let (targets_dir, results_dir) = (dir.path().join("targets"), dir.path().join("results"));
    std::fs::create_dir_all(&targets_dir).expect("mkdir");
    std::fs::create_dir_all(&results_dir).expect("mkdir");
    std::fs::write(targets_dir.join("targets.txt"), format!("{ok}\n127.0.0.0/28:{refused}\n"))
        .expect("write");
    std::fs::write(targets_dir.join("exclude.txt"), "127.0.0.9   # not ours\n").expect("write");
    let script = script
        .replace("/targets/", &format!("{}/", targets_dir.display()))
        .replace("/results/", &format!("{}/", results_dir.display()));
    let bin_dir = assert_cmd::cargo::cargo_bin("sshprobe").parent().expect("bin dir").to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let shards = 3;
    let mut all: Vec<String> = Vec::new();
    for index in 0..shards {
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .env("PATH", &path)
            .env("JOB_COMPLETION_INDEX", index.to_string())
            .env("SHARDS", shards.to_string())
            .env("SEED", "20261202")
            .output()
            .expect("sh");
        // Refused probes make sshprobe exit 1: the script counts that as a finished shard.
        assert!(out.status.success(), "shard {index}: {}", String::from_utf8_lossy(&out.stderr));
        let text =
            std::fs::read_to_string(results_dir.join(format!("shard-{index}.jsonl"))).expect("shard file");
        let shard: Vec<String> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).expect("JSON")["remote"]
                    .as_str()
                    .expect("remote")
                    .into()
            })
            .collect();
        assert!(!shard.is_empty(), "shard {index} is empty");
        all.extend(shard);
    }
    all.sort();
    let mut want: Vec<String> = (1..=14)
        .filter(|&i| i != 9)
        .map(|i| format!("127.0.0.{i}:{refused}"))
        .chain([ok.to_string()])
        .collect();
    want.sort();
    assert_eq!(all, want, "every target once, the excluded one never");
}

#[test]
fn diagnose_and_limits_records_carry_their_time_too() {
    let (_rt, lab) = background_lab();
    let ok = lab.addr(Behaviour::Ok).to_string();
    let micros =
        |st: std::time::SystemTime| st.duration_since(std::time::UNIX_EPOCH).expect("epoch").as_micros();
    let before = std::time::SystemTime::now();
    let limits = ["--max-held", "1", "--probes", "1", "--rate-duration", "0s"];
    let mut times = Vec::new();
    for (command, extra) in [("diagnose", &[][..]), ("limits", &limits[..])] {
        let (_, got, stderr) = records(&[&[command, &ok, "-o", "jsonl"][..], extra].concat());
        assert!(!got.is_empty(), "{command}: {stderr}");
        times
            .extend(got.iter().map(|r| {
                r["time"].as_str().unwrap_or_else(|| panic!("{command}: no time: {r}")).to_string()
            }));
        let csv = stdout_of(&[&[command, &ok, "-o", "csv"][..], extra].concat());
        let mut rows = csv.lines();
        let header: Vec<&str> = rows.next().expect("header").split(',').collect();
        assert_eq!(header.last(), Some(&"time"), "{command}: {csv}");
        // The last column of each row (evidence may hold quoted commas, but never a time).
        times.extend(rows.map(|row| row.rsplit(',').next().expect("time").to_string()));
    }
    let after = std::time::SystemTime::now();
    assert!(times.len() >= 6, "{times:?}");
    for t in times {
        let parsed = humantime::parse_rfc3339(&t).unwrap_or_else(|e| panic!("{t}: {e}"));
        assert!(t.len() == 27 && micros(before) <= micros(parsed) && micros(parsed) <= micros(after), "{t}");
    }
}
