//! Bad input (issue 12): every mistake a user can make on the command line or in a target file is
//! one clear line on stderr naming it, exit status 2, never a panic, and never a packet or a DNS
//! query it did not ask for. Loopback only; no root needed.

mod common;

use common::sshprobe;
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
}
