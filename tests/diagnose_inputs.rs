//! `diagnose` takes targets as `probe` does: from `-i FILE` or `-i -`, with port lists and ranges,
//! and on Ctrl-C writes what it finished and what it was doing. Against the lab.

mod common;

use common::sshprobe;
use sshprobe::lab::{Behaviour, Lab, LabConfig};
use std::io::Read;
use std::time::{Duration, Instant};

fn background_lab() -> (tokio::runtime::Runtime, Lab) {
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let lab = rt.block_on(Lab::start(LabConfig::default())).expect("the lab");
    (rt, lab)
}

/// The verdict lines of a table: `TARGET  VERDICT  (confidence...`.
fn verdicts(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.starts_with(' ') && l.contains("(confidence:"))
        .filter_map(|l| {
            let (target, rest) = l.split_once("  ")?;
            Some((target.to_string(), rest.split_whitespace().next()?.to_string()))
        })
        .collect()
}

#[test]
fn targets_from_a_file_and_stdin_with_port_lists() {
    let (_rt, lab) = background_lab();
    let ok = lab.addr(Behaviour::Ok);
    let ssh1 = lab.addr(Behaviour::Ssh1);
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("targets");
    std::fs::write(&file, format!("# lab\n{ok}\n\n127.0.0.1:{},{}  # two ports\n", ok.port(), ssh1.port()))
        .expect("writing targets");
    let out = sshprobe()
        .args(["diagnose", "-i", file.to_str().expect("path"), "--max-held", "1"])
        .output()
        .expect("sshprobe");
    let text = String::from_utf8_lossy(&out.stdout);
    let two = format!("127.0.0.1:{},{}", ok.port(), ssh1.port());
    assert_eq!(
        verdicts(&text),
        [
            (ok.to_string(), "ok".to_string()),
            (format!("{two} (port {})", ok.port()), "ok".to_string()),
            (format!("{two} (port {})", ssh1.port()), "not_ssh".to_string()),
        ],
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Standard input, and a -p range for a target that names no port.
    let out = sshprobe()
        .args(["diagnose", "-i", "-", "-p", &format!("{}-{}", ok.port(), ok.port()), "--max-held", "1"])
        .write_stdin("127.0.0.1\n")
        .output()
        .expect("sshprobe");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(verdicts(&text), [("127.0.0.1".to_string(), "ok".to_string())], "{text}");
    assert_eq!(out.status.code(), Some(0));
    // A bad line is named by FILE:LINE; the good ones are still diagnosed.
    std::fs::write(&file, format!("{ok}\n10.0.0.0/24\n")).expect("writing targets");
    let out = sshprobe()
        .args(["diagnose", "-i", file.to_str().expect("path"), "--max-held", "1"])
        .output()
        .expect("sshprobe");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:2: ", file.display())) && stderr.contains("is a network"),
        "{stderr}"
    );
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(verdicts(&String::from_utf8_lossy(&out.stdout)).len(), 1);
}

#[test]
fn ctrl_c_writes_the_diagnoses_done_and_the_one_under_way() {
    use std::process::{Command, Stdio};
    let (_rt, lab) = background_lab();
    let ok = lab.addr(Behaviour::Ok).to_string();
    let tarpit = lab.addr(Behaviour::Tarpit).to_string();
    let child = Command::new(assert_cmd::cargo::cargo_bin("sshprobe"))
        .args(["diagnose", &ok, &tarpit, "--max-held", "1", "--banner-timeout", "30s"])
        .env("SSHPROBE_STATE_DIR", "")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sshprobe");
    let mut child = child;
    // Wait (bounded) until the first verdict is out and the tarpit is being diagnosed.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("  remedy:") {
        assert!(Instant::now() < deadline, "no first diagnosis: {}", String::from_utf8_lossy(&seen));
        let n = stdout.read(&mut buf).expect("read");
        assert!(n > 0, "sshprobe ended early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("diagnose did not stop on SIGINT");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    stdout.read_to_end(&mut seen).expect("the rest");
    let mut stderr = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("stderr");
    let text = String::from_utf8_lossy(&seen);
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert_eq!(verdicts(&text), [(ok.clone(), "ok".to_string())], "{text}");
    let line = text.lines().find(|l| l.starts_with(&tarpit)).unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("interrupted") && line.contains("connections to") && line.contains("no verdict"),
        "{line}"
    );
    assert!(
        stderr.contains(&format!("stopped while diagnosing {tarpit}")) && stderr.contains("1 of 2 targets"),
        "{stderr}"
    );
}
