//! The raw engine's nftables table never outlives a run: removed at the end, on SIGTERM, and, when a
//! run was killed with SIGKILL, by the next run. Without the capabilities, one clear error line.
//!
//! These run the `sshprobe` binary. Needs root: skipped, loudly, otherwise.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Output, Stdio};
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

fn sshprobe() -> Command {
    Command::new(assert_cmd::cargo::cargo_bin("sshprobe"))
}

fn table_exists() -> bool {
    let out = Command::new("nft").args(["list", "tables"]).output().expect("running nft list tables");
    String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == "table inet sshprobe_raw")
}

/// Removes the engine's table (if a test left it) and kills the child (if alive) on drop.
struct Cleanup(Option<Child>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", "sshprobe_raw"])
            .stderr(Stdio::null())
            .status();
    }
}

/// A listener nobody accepts from: the kernel completes handshakes, nothing is ever sent.
fn tarpit() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

fn closed_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// Starts a raw probe that will sit on the tarpit, and waits until its table is installed.
fn start_long_run(target: SocketAddr) -> Cleanup {
    let child = sshprobe()
        .args(["probe", "--engine", "raw", "--banner-timeout", "60s", &target.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning sshprobe");
    let guard = Cleanup(Some(child));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !table_exists() {
        assert!(Instant::now() < deadline, "the run never installed its nftables table");
        std::thread::sleep(Duration::from_millis(20));
    }
    guard
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill on the pid of a child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

fn wait(mut guard: Cleanup) -> (Output, Cleanup) {
    let child = guard.0.take().expect("a child");
    let output = child.wait_with_output().expect("waiting for sshprobe");
    (output, guard)
}

#[test]
fn the_table_is_removed_at_the_end_of_a_run() {
    require_root!();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let _cleanup = Cleanup(None);
    let out = sshprobe().args(["probe", "--engine", "raw", &closed_port().to_string()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("refused"));
    assert!(!table_exists());
}

#[test]
fn sigterm_removes_the_table() {
    require_root!();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (_listener, target) = tarpit();
    let guard = start_long_run(target);
    signal(guard.0.as_ref().unwrap(), libc::SIGTERM);
    let (out, _guard) = wait(guard);
    assert_eq!(out.status.code(), Some(143), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("firewall rule is removed"));
    assert!(!table_exists(), "SIGTERM left the table");
}

#[test]
fn sigint_removes_the_table() {
    require_root!();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (_listener, target) = tarpit();
    let guard = start_long_run(target);
    signal(guard.0.as_ref().unwrap(), libc::SIGINT);
    let (out, _guard) = wait(guard);
    assert_eq!(out.status.code(), Some(130));
    assert!(!table_exists(), "SIGINT left the table");
}

#[test]
fn a_run_killed_with_sigkill_leaves_a_table_the_next_run_removes() {
    require_root!();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (_listener, target) = tarpit();
    let guard = start_long_run(target);
    signal(guard.0.as_ref().unwrap(), libc::SIGKILL);
    let (out, guard) = wait(guard);
    assert_eq!(out.status.code(), None, "killed by a signal");
    assert!(table_exists(), "SIGKILL gives no chance to clean up: the table must still be there");
    // The next run takes the lock (the kernel released the dead run's), replaces the stale table,
    // probes, and removes it.
    let out = sshprobe().args(["probe", "--engine", "raw", &closed_port().to_string()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("refused"));
    assert!(!table_exists(), "the next run left the table");
    drop(guard);
}

#[test]
fn without_capabilities_one_line_names_what_is_missing() {
    require_root!();
    if Command::new("setpriv").arg("--version").output().is_err() {
        common::skip(test_name!(), "needs setpriv (util-linux)");
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let _cleanup = Cleanup(None);
    let bin = assert_cmd::cargo::cargo_bin("sshprobe");
    let out = Command::new("setpriv")
        .args(["--inh-caps=-all", "--bounding-set=-net_raw,-net_admin"])
        .arg(&bin)
        .args(["probe", "--engine", "raw", &closed_port().to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("CAP_NET_RAW and CAP_NET_ADMIN"), "{stderr}");
    assert!(stderr.contains("connect engine"), "{stderr}");
    assert!(!table_exists());
    // Without the rule, only CAP_NET_RAW is needed; and the default engine needs nothing.
    let out = Command::new("setpriv")
        .args(["--inh-caps=-all", "--bounding-set=-net_raw"])
        .arg(&bin)
        .args(["probe", "--engine", "raw", "--no-firewall", &closed_port().to_string()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs CAP_NET_RAW ("));
    let out = Command::new("setpriv")
        .args(["--inh-caps=-all", "--bounding-set=-net_raw,-net_admin"])
        .arg(&bin)
        .args(["probe", &closed_port().to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("refused"));
}

#[test]
fn source_ports_inside_the_ephemeral_range_are_refused_before_any_rule() {
    require_root!();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let _cleanup = Cleanup(None);
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let lo: u16 = text.split_whitespace().next().unwrap().parse().unwrap();
    let inside = format!("{lo}-{}", lo.saturating_add(10));
    let out = sshprobe()
        .args(["probe", "--engine", "raw", "--source-ports", &inside, &closed_port().to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&format!("source ports {inside} overlap ip_local_port_range")), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(!table_exists());
}
