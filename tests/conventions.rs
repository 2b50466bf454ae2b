//! What a network engineer expects of a command-line tool (issue 12): shell completions and man
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
