//! Smoke tests of the shared fixtures in `tests/common`: each real server starts and answers, and
//! each guard leaves nothing behind when dropped (no process, no zombie, no namespace, no table, no
//! file, no mount).
//!
//! SLOW on a machine's first run: `slow_openssh10_root_serves_an_openssh_10_banner` builds the
//! Debian 13 root (debootstrap, about 30-45 s with the Debian archive reachable), cached afterwards;
//! it skips loudly when it cannot be built.

mod common;

use common::{Dropbear, Netns, Nft, Sshd};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

fn banner(addr: SocketAddr) -> String {
    let (_stream, line) = common::connect_and_read_line(addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("banner from {addr}: {e}"));
    String::from_utf8_lossy(&line).into_owned()
}

/// Whether anything listens on `port` in our network namespace.
fn listening(port: u16) -> bool {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .any(|f| std::fs::read_to_string(f).is_ok_and(|t| common::table_has_listener(&t, port)))
}

/// Whether a process exists at all, zombies included.
fn exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The pids whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    == Some(pid.to_string().as_str())
            })
        })
        .collect()
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A test that always has something to skip for: run only by
/// `a_skip_is_seen_and_fails_under_ci_as_root`, in a child process of this test binary.
#[test]
#[ignore = "a fixture of a_skip_is_seen_and_fails_under_ci_as_root, run by it"]
fn needs_a_program_nobody_has() {
    if !common::need_bins(test_name!(), &["sshprobe-no-such-program"]) {
        return;
    }
    panic!("a program that does not exist was found");
}

#[test]
fn a_skip_is_seen_and_fails_under_ci_as_root() {
    // This test binary, running only the fixture above, as `cargo test` runs it: output captured.
    let run = |ci: Option<&str>| {
        let mut cmd = std::process::Command::new(std::env::current_exe().expect("the test binary"));
        cmd.args(["--ignored", "--exact", "needs_a_program_nobody_has", "--test-threads=1"]);
        match ci {
            Some(value) => cmd.env("CI", value),
            None => cmd.env_remove("CI"),
        };
        let out = cmd.output().expect("running the test binary");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };
    let line = "SKIPPED needs_a_program_nobody_has: needs sshprobe-no-such-program";
    // Elsewhere the test passes (libtest has no skipped state), and says why on stderr although the
    // harness captures what tests print.
    let (passed, stdout, stderr) = run(None);
    assert!(passed, "{stdout}{stderr}");
    assert!(stdout.contains("1 passed"), "{stdout}");
    assert!(stderr.contains(line), "the skip was not seen: {stderr}");
    // Under CI as root it fails; under CI as another user it may still skip.
    let (passed, stdout, stderr) = run(Some("true"));
    if common::is_root() {
        assert!(!passed, "a skip passed under CI=true as root: {stdout}{stderr}");
        assert!(stdout.contains("no test may skip"), "{stdout}");
        assert!(!stderr.contains(line), "{stderr}");
    } else {
        assert!(passed && stderr.contains(line), "{stdout}{stderr}");
    }
}

#[test]
fn proc_net_tcp_parsing() {
    let table =
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
       0: 0100007F:8AE6 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n\
       1: 0100007F:0016 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 2 1\n";
    assert!(common::table_has_listener(table, 0x8AE6));
    assert!(!common::table_has_listener(table, 22), "an established socket is not a listener");
    assert!(!common::table_has_listener(table, 1));
    assert_eq!(common::owner_pid("sp-1234-0", "sp-", '-'), Some(1234));
    assert_eq!(common::owner_pid("sp_99_3", "sp_", '_'), Some(99));
    assert_eq!(common::owner_pid("filter", "sp_", '_'), None);
}

#[test]
fn sshd_starts_sends_a_banner_and_is_gone_after_drop() {
    if !common::need("sshd_starts_sends_a_banner_and_is_gone_after_drop", &["sshd", "ssh-keygen"]) {
        return;
    }
    let sshd = Sshd::new().start();
    let (addr, pid, version, dir) = (sshd.addr, sshd.pid(), sshd.version(), sshd.dir().to_path_buf());
    assert!(version.starts_with("OpenSSH_"), "{version}");
    let line = banner(addr);
    assert!(line.starts_with(&format!("SSH-2.0-{version}")), "banner {line:?}, sshd -V {version}");
    assert!(line.ends_with("\r\n"), "{line:?}");
    assert!(sshd.log().contains("Server listening"), "log:\n{}", sshd.log());
    drop(sshd);
    assert!(!exists(pid), "sshd {pid} survived its guard");
    assert!(!listening(addr.port()), "port {} still listening", addr.port());
    assert!(!dir.exists(), "{} survived its guard", dir.display());
}

/// sshd's per-connection children run in sessions of their own (setsid), so killing sshd's process
/// group misses them: the wrappers child would sleep on for 5 s, a pre-auth child until
/// LoginGraceTime. The guard must kill and reap them too.
#[test]
fn sshd_children_die_and_are_reaped_with_the_guard() {
    let test = "sshd_children_die_and_are_reaped_with_the_guard";
    if !common::need(test, &["sshd", "ssh-keygen", "unshare"]) {
        return;
    }
    let system_deny = std::fs::read("/etc/hosts.deny").ok();
    let sshd = Sshd::new().hosts_deny("sshd: ALL\n").start();
    // The private file is visible to sshd only: the system's is unchanged.
    assert_eq!(std::fs::read("/etc/hosts.deny").ok(), system_deny);
    let pid = sshd.pid();
    let _conn = std::net::TcpStream::connect(sshd.addr).expect("connecting to the denying sshd");
    // The wrappers child: forked per connection, sleeping 5 s before it exits (docs/facts.md §3).
    let mut forked = Vec::new();
    wait_until("sshd forks a child for the connection", Duration::from_secs(3), || {
        forked = children(pid);
        !forked.is_empty()
    });
    wait_until("sshd logs the denial", Duration::from_secs(3), || {
        sshd.log().contains("Connection refused by tcp wrapper")
    });
    drop(sshd);
    for child in forked {
        assert!(!exists(child), "sshd's child {child} survived the guard (or is an unreaped zombie)");
    }
    assert!(!exists(pid), "sshd {pid} survived its guard");
}

#[test]
fn sshd_options_reach_the_config() {
    if !common::need("sshd_options_reach_the_config", &["sshd", "ssh-keygen"]) {
        return;
    }
    let sshd = Sshd::new().option("MaxStartups 1:100:1").option("LoginGraceTime 5").log_level("INFO").start();
    let config = sshd.config();
    for line in ["MaxStartups 1:100:1", "LoginGraceTime 5", "LogLevel INFO", "UsePAM no"] {
        assert!(config.lines().any(|l| l == line), "{line:?} not in:\n{config}");
    }
    // sshd took them: its process title shows the MaxStartups it runs with.
    let cmdline = std::fs::read_to_string(format!("/proc/{}/cmdline", sshd.pid())).unwrap_or_default();
    assert!(cmdline.contains("0 of 1-1 startups"), "{cmdline:?}");
}

#[test]
fn dropbear_starts_and_sends_a_banner() {
    if !common::need("dropbear_starts_and_sends_a_banner", &["dropbear", "dropbearkey"]) {
        return;
    }
    let dropbear = Dropbear::new().start();
    let version = dropbear.version();
    assert!(version.starts_with('v'), "{version}");
    let line = banner(dropbear.addr);
    assert!(line.starts_with("SSH-2.0-dropbear"), "{line:?}\nlog:\n{}", dropbear.log());
    assert!(line.contains(version.trim_start_matches('v')), "{line:?} vs {version}");
    let (pid, dir) = (dropbear.pid(), dropbear.dir().to_path_buf());
    drop(dropbear);
    assert!(!exists(pid) && !dir.exists(), "dropbear's process or files survived its guard");
}

#[test]
fn netns_exists_answers_and_is_gone_after_drop() {
    if !common::need("netns_exists_answers_and_is_gone_after_drop", &["ip", "sshd", "ssh-keygen", "dropbear"])
    {
        return;
    }
    let ns = Netns::new();
    let (name, veth) = (ns.name.clone(), ns.host_veth());
    assert!(Netns::exists(&name), "{name} not in ip netns list");
    let out = ns.exec(&["ip", "-o", "-4", "addr", "show", "dev", &ns.ns_veth()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{}/30", ns.inner_ip)));
    {
        let sshd = Sshd::new().in_netns(&ns).start();
        assert_eq!(sshd.addr.ip(), ns.inner_ip);
        let line = banner(sshd.addr);
        assert!(line.starts_with("SSH-2.0-OpenSSH_"), "{line:?}");
        // It listens inside the namespace, not in ours.
        assert!(!listening(sshd.addr.port()));
        let dropbear = Dropbear::new().netns(&ns).start();
        assert!(banner(dropbear.addr).starts_with("SSH-2.0-dropbear"));
    }
    // A second namespace at the same time gets a subnet of its own.
    let other = Netns::new();
    assert_ne!(other.inner_ip, ns.inner_ip);
    drop(other);
    assert!(veth_into(&veth, &name), "the check sees our veth while it exists");
    drop(ns);
    assert!(!Netns::exists(&name), "{name} survived its guard");
    assert!(!veth_into(&veth, &name), "{veth} survived its guard");
}

#[test]
fn nft_table_exists_and_is_gone_after_drop() {
    if !common::need("nft_table_exists_and_is_gone_after_drop", &["ip", "nft"]) {
        return;
    }
    let ns = Netns::new();
    let tables =
        |ns: &Netns| String::from_utf8_lossy(&ns.exec(&["nft", "list", "tables"]).stdout).into_owned();
    let fw = Nft::drop_syns(Some(&ns), 2222);
    let table = fw.name().to_string();
    assert!(tables(&ns).contains(&table), "{}", tables(&ns));
    assert!(fw.list().contains("tcp dport 2222"), "{}", fw.list());
    drop(fw);
    assert!(!tables(&ns).contains(&table), "table {table} survived its guard");

    // In our own namespace too, with the chain-and-rules form.
    let fw = Nft::new(None, "input", &["ip saddr 198.51.100.1 counter drop"]);
    let table = fw.name().to_string();
    let ours = || {
        let out = std::process::Command::new("nft").args(["list", "tables"]).output().expect("nft");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(ours().contains(&table));
    assert!(fw.list().contains("198.51.100.1"), "{}", fw.list());
    drop(fw);
    assert!(!ours().contains(&table), "table {table} survived its guard");
}

/// Whether the host has a veth named `veth` whose peer is in namespace `netns`. Veth names follow
/// the subnet index, which a test running meanwhile may take again: a link of that name is the one
/// we made only while its peer is in our namespace.
fn veth_into(veth: &str, netns: &str) -> bool {
    let out =
        std::process::Command::new("ip").args(["-o", "link", "show", "dev", veth]).output().expect("ip");
    String::from_utf8_lossy(&out.stdout).contains(&format!("link-netns {netns}"))
}

/// A test that panics still drops its guards: the server, its namespace and its table are gone.
#[test]
fn guards_clean_up_when_a_test_panics() {
    if !common::need("guards_clean_up_when_a_test_panics", &["ip", "nft", "sshd", "ssh-keygen"]) {
        return;
    }
    let made = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let ns = Netns::new();
        let fw = Nft::new(Some(&ns), "input", &["tcp dport 9 drop"]);
        let sshd = Sshd::new().in_netns(&ns).start();
        *made.lock().expect("lock") = Some((
            ns.name.clone(),
            ns.host_veth(),
            fw.name().to_string(),
            sshd.pid(),
            sshd.dir().to_path_buf(),
        ));
        panic!("a failing assertion in the middle of a test");
    }));
    assert!(result.is_err());
    let (name, veth, _table, pid, dir) = made.lock().expect("lock").take().expect("the guards were made");
    assert!(!exists(pid), "sshd {pid} survived the panic");
    assert!(!dir.exists(), "{} survived the panic", dir.display());
    assert!(!Netns::exists(&name), "{name} survived the panic (and its table with it)");
    // Veth names follow the subnet index, which a test running meanwhile may take again: a link of
    // that name is ours only if its peer is still in our namespace.
    let link =
        std::process::Command::new("ip").args(["-o", "link", "show", "dev", &veth]).output().expect("ip");
    let link = String::from_utf8_lossy(&link.stdout);
    assert!(!link.contains(&format!("link-netns {name}")), "{veth} survived the panic: {link}");
}

/// SLOW on first run: builds the Debian 13 root (debootstrap, about 30-45 s), then reuses it.
#[test]
fn slow_openssh10_root_serves_an_openssh_10_banner() {
    let test = "slow_openssh10_root_serves_an_openssh_10_banner";
    let Some(root) = common::openssh10_root(test) else { return };
    let root_text = root.to_str().expect("a UTF-8 path").to_string();
    let mounts_under_root =
        || std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo").matches(&root_text).count();
    let before = mounts_under_root();
    let sshd = Sshd::new().chroot(&root).option("PerSourcePenalties no").start();
    assert!(sshd.version().starts_with("OpenSSH_10."), "{}", sshd.version());
    let line = banner(sshd.addr);
    assert!(line.starts_with("SSH-2.0-OpenSSH_10."), "{line:?}\nlog:\n{}", sshd.log());
    // The root's /dev and /proc are mounted in sshd's private namespace, not in ours.
    assert_eq!(mounts_under_root(), before);
    let (dir, pid) = (sshd.dir().to_path_buf(), sshd.pid());
    assert!(dir.starts_with(root.join("tmp")), "{}", dir.display());
    drop(sshd);
    assert!(!dir.exists(), "{} survived its guard", dir.display());
    assert!(!exists(pid), "sshd {pid} survived its guard");
}
