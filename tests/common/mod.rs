//! Real servers and private networks for integration tests, cleaned up even when a test panics.
//!
//! sshprobe's verdicts are only as good as its knowledge of real servers, so the integration tests
//! start real ones: Debian's OpenSSH (9.2p1 here, with the TCP-wrappers patch), dropbear, and
//! OpenSSH 10 from a cached Debian 13 root. They also build small private networks (a network
//! namespace joined to ours by a veth pair) and firewall rules (an nftables table) for the failures
//! no server produces on its own. Every fixture is a guard: whatever it created (processes, temp
//! files, namespaces, tables) is gone when the guard is dropped, also when the test panics.
//!
//! Every test file uses this module with `mod common;`. A typical test:
//!
//! ```ignore
//! #[test]
//! fn wrappers_denial_closes_without_a_byte() {
//!     if !common::need("wrappers_denial_closes_without_a_byte", &["sshd", "unshare"]) {
//!         return; // printed a loud SKIPPED line
//!     }
//!     let sshd = common::Sshd::new().hosts_deny("sshd: ALL\n").option("LoginGraceTime 5").start();
//!     // ... probe sshd.addr ...
//! } // sshd stops here, its children too, its temp dir is removed
//! ```
//!
//! | fixture | what it gives |
//! |---|---|
//! | [`need`], [`need_root`] (= [`root_or_skip`]), [`need_bins`] (= [`have`]), [`skip`] | loud skips; failures under CI as root |
//! | [`closed_port`] → [`ClosedPort`] | a port nobody listens on, held so nobody can take it |
//! | [`free_port`], [`free_port_on`] | a port for a server the test starts |
//! | [`Sshd`] → [`Server`] | OpenSSH: options, private hosts.deny, in a [`Netns`], OpenSSH 10 [`Sshd::chroot`] |
//! | [`Dropbear`] / [`dropbear`] → [`Server`] | dropbear |
//! | [`Netns`] | a second host: namespace + veth pair in 198.18.0.0/15 |
//! | [`Nft`] | an nftables table of our own, here or in a [`Netns`] |
//! | [`openssh10_root`] | a cached Debian 13 root with OpenSSH 10 |
//! | [`frontends`] | fail2ban, nft per-source meters, HAProxy, sslh before a server; [`Sshd::syslog`] |
//! | [`hold`], [`connect_and_read_line`] | connections that got their banner, kept open |
//! | [`sshprobe`], [`jsonl`] | the binary, and its JSON Lines parsed |
//!
//! # Rules the fixtures keep
//! - Traffic only to loopback or to addresses inside namespaces a test created (198.18.0.0/15, the
//!   RFC 2544 benchmarking range, which no real network uses).
//! - Never edit a system file: a private `/etc/hosts.deny` is bind-mounted inside a private mount
//!   namespace (`unshare --mount`) that exists only as long as the server does.
//! - Readiness is read from `/proc/<pid>/net/tcp{,6}` (the server's own network namespace), never by
//!   connecting: a test connection would take a `MaxStartups` slot, or earn an OpenSSH 9.8+ penalty
//!   second (docs/facts.md §5), and change what the test measures.
//! - Every wait is bounded, and a failure panics with what the server wrote on stderr.
//! - Needing root or a program that is missing is not a pass: every skip goes through [`skip`],
//!   which prints `SKIPPED <test>: ...` on stderr where libtest shows it, and the test returns.
//!   Under CI as root (`CI=true`) nothing may skip: [`skip`] fails the test instead.

#![allow(dead_code)] // each test binary uses its own part of this module
pub mod delayline;
pub mod frontends;

pub mod prometheus;

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long a server may take to start listening.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the system's daemons live (often not on a test's PATH).
const SBIN_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/local/sbin", "/usr/local/bin"];

// ---------------------------------------------------------------------------------------------
// Skipping loudly
// ---------------------------------------------------------------------------------------------

/// `eprintln!` that the test harness cannot swallow: libtest captures the print macros of passing
/// tests (`print!`, `eprintln!` go to a per-test buffer), so a skip reported with `eprintln!` would
/// be invisible without `--nocapture`. This formats the line first and writes it with one
/// `write_all` on the process's unbuffered stderr, which the capture does not reach, so it shows in
/// every `cargo test` run, whole, whatever other tests print meanwhile.
macro_rules! loud {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let line = format!("{}\n", format_args!($($arg)*));
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }};
}

/// The name of the test function it is used in, as libtest names it (`sigterm_removes_the_table`,
/// without the test binary's crate name), for [`skip`] lines.
#[macro_export]
macro_rules! test_name {
    () => {{
        fn here() {}
        let path = std::any::type_name_of_val(&here);
        let path = path.strip_suffix("::here").unwrap_or(path);
        path.split_once("::").map_or(path, |(_crate, name)| name)
    }};
}

/// Whether this run is CI's: `CI=true` (or `CI=1`), as CI sets it.
pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether we run as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The one way a test skips: it says `SKIPPED <test>: <reason>` where libtest shows it (see
/// [`loud!`]), and the caller returns at once. libtest cannot mark a test skipped at run time, so the
/// test still reports `ok`; this line is how a reader tells.
///
/// Under CI as root (`CI=true`, euid 0) nothing may skip: whatever is missing (a program, `::1`,
/// a root that cannot be built) is a failure of the machine's setup, and this panics instead.
pub fn skip(test: &str, reason: &str) {
    if is_ci() && is_root() {
        panic!("{test} cannot run: {reason}. Under CI=true as root no test may skip: install what it needs");
    }
    loud!("\n*** SKIPPED {test}: {reason} ***\n");
}

/// Whether we run as root. When not, [`skip`]s with `needs root (...)` and returns false: the caller
/// returns at once.
pub fn need_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    skip(
        test,
        &format!(
            "needs root (euid is {euid}; network namespaces, nftables, mount namespaces, raw sockets \
             and sshd need it)"
        ),
    );
    false
}

/// [`need_root`] under the name the first tests used.
pub fn root_or_skip(test: &str) -> bool {
    need_root(test)
}

/// The path of a program, looked up on PATH and in the sbin directories.
pub fn find_bin(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// Whether every program in `bins` is installed. When one is missing, [`skip`]s with
/// `needs <bin> (...)` and returns false.
pub fn need_bins(test: &str, bins: &[&str]) -> bool {
    let missing: Vec<&str> = bins.iter().copied().filter(|b| find_bin(b).is_none()).collect();
    if missing.is_empty() {
        return true;
    }
    let named: Vec<String> = missing
        .iter()
        .map(|b| match debian_package(b) {
            Some(package) => format!("{b} (Debian package {package})"),
            None => format!("{b} (no Debian package known to the tests)"),
        })
        .collect();
    skip(test, &format!("needs {}: not installed", named.join(", ")));
    false
}

/// The Debian package that installs `program`, for the SKIPPED line (`apt-get install PACKAGE`).
/// `.ci/run`'s list installs the same packages.
pub fn debian_package(program: &str) -> Option<&'static str> {
    Some(match program {
        "sshd" | "ssh-keygen" => "openssh-server",
        "ssh" => "openssh-client",
        "dropbear" | "dropbearkey" => "dropbear-bin",
        "nft" => "nftables",
        "ip" | "ss" | "tc" => "iproute2",
        "unshare" | "nsenter" | "mount" => "util-linux",
        "chroot" | "timeout" => "coreutils",
        "bash" => "bash",
        "debootstrap" => "debootstrap",
        "fail2ban-server" | "fail2ban-client" => "fail2ban",
        "haproxy" => "haproxy",
        "sslh" | "sslh-select" => "sslh",
        "prometheus" => "prometheus",
        "prometheus-blackbox-exporter" => "prometheus-blackbox-exporter",
        "strace" => "strace",
        _ => return None,
    })
}

/// [`need_bins`] under the name the first tests used.
pub fn have(test: &str, programs: &[&str]) -> bool {
    need_bins(test, programs)
}

/// [`need_root`] and [`need_bins`] together: the usual first line of a real-server test.
pub fn need(test: &str, bins: &[&str]) -> bool {
    need_root(test) && need_bins(test, bins)
}

/// The path of a program that [`need_bins`] has checked, for `Command::new`.
fn bin(name: &str) -> PathBuf {
    find_bin(name).unwrap_or_else(|| PathBuf::from(name))
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// A port that was free on `ip` a moment ago: bind port 0, read the port the kernel chose, close.
/// (Another process could take it before the server binds it; on a test machine that is rare, and
/// the server's start then fails loudly rather than silently.)
pub fn free_port_on(ip: IpAddr) -> u16 {
    TcpListener::bind(SocketAddr::new(ip, 0))
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("cannot bind {ip}:0 to find a free port: {e}"))
        .port()
}

/// A free port on 127.0.0.1 ([`free_port_on`] loopback).
pub fn free_port() -> u16 {
    free_port_on(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// A port on which nothing listens, and nothing can start listening while this value lives: a
/// socket bound to `0.0.0.0:PORT` that never listens. A connection to any loopback address at the
/// port is refused (RST), and a server that a parallel test starts cannot bind it (EADDRINUSE), as
/// it could a port that [`free_port`] found free and let go.
pub struct ClosedPort {
    socket: socket2::Socket,
    port: u16,
}

impl ClosedPort {
    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.port)
    }
}

impl std::fmt::Debug for ClosedPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClosedPort({}, fd {})", self.port, self.socket.as_raw_fd())
    }
}

/// A [`ClosedPort`]: the "nothing listening" case of every test.
pub fn closed_port() -> ClosedPort {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .unwrap_or_else(|e| panic!("a socket to hold a closed port: {e}"));
    // No SO_REUSEADDR: nobody else may bind the port, on any address, while it is held.
    socket
        .bind(&SocketAddr::from(([0, 0, 0, 0], 0)).into())
        .unwrap_or_else(|e| panic!("binding 0.0.0.0:0 to hold a closed port: {e}"));
    let port = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map(|a| a.port())
        .unwrap_or_else(|| panic!("the port of a bound socket"));
    ClosedPort { socket, port }
}

/// A number unique within this test process, for names.
fn next_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Runs a command to completion; panics with its output when it fails.
fn run(cmd: &mut Command, what: &str) -> Output {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{what}: {cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Runs a command, ignoring how it ends: for cleanup in `Drop`, which must never panic.
fn run_quietly(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// An exclusive `flock` on `path` (created if needed), held until the returned file is dropped.
/// Serialises work across test threads *and* processes (other test binaries, other developers).
fn lock_file(path: &Path) -> File {
    if let Some(parent) = path.parent() {
        let _ = fs::create_dir_all(parent);
    }
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open lock file {}: {e}", path.display()));
    // SAFETY: a valid open descriptor; flock has no memory effects.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock {}: {}", path.display(), std::io::Error::last_os_error());
    file
}

/// Connects to `addr` and reads until the first LF (the server's ident line), within `within`.
/// Returns the connection, still open, and the bytes read: a held connection counts toward the
/// server's `MaxStartups` until it is dropped.
pub fn connect_and_read_line(addr: SocketAddr, within: Duration) -> std::io::Result<(TcpStream, Vec<u8>)> {
    read_line(TcpStream::connect_timeout(&addr, within)?, within)
}

/// Reads from `stream` until the first LF, the end of the stream, or `within`.
fn read_line(mut stream: TcpStream, within: Duration) -> std::io::Result<(TcpStream, Vec<u8>)> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !got.contains(&b'\n') {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no line in time"));
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            // A signal to the test process (a child's SIGCHLD, with a handler some test installed)
            // interrupts a blocking read: read again.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok((stream, got))
}

/// Opens a connection from `source` (or the kernel's choice) that received a complete `SSH-` line,
/// and keeps it open: it then counts as one unauthenticated connection toward the server's
/// `MaxStartups` (and `PerSourceMaxStartups` for `source`) until dropped. Panics otherwise, so a test
/// never goes on believing it holds a slot it does not.
pub fn hold(addr: SocketAddr, source: Option<IpAddr>) -> TcpStream {
    let within = Duration::from_secs(5);
    let domain = if addr.is_ipv4() { socket2::Domain::IPV4 } else { socket2::Domain::IPV6 };
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None).expect("a socket");
    if let Some(ip) = source {
        socket
            .bind(&SocketAddr::new(ip, 0).into())
            .unwrap_or_else(|e| panic!("binding {ip} to hold {addr}: {e}"));
    }
    socket.connect_timeout(&addr.into(), within).unwrap_or_else(|e| panic!("connecting to hold {addr}: {e}"));
    let (stream, got) =
        read_line(socket.into(), within).unwrap_or_else(|e| panic!("reading the banner to hold {addr}: {e}"));
    assert!(
        got.starts_with(b"SSH-"),
        "holding a connection to {addr}: expected a banner, got {:?}",
        got.escape_ascii().to_string()
    );
    stream
}

/// The sshprobe binary, for `assert_cmd`.
///
/// Its penalty ledger is off (`SSHPROBE_STATE_DIR` empty): each run starts with a fresh probe budget,
/// whatever other tests spent. A test of the ledger sets the variable itself.
/// Waits for `child` at most `within`; past it, kills it and fails naming `what` (a child that
/// ignored its signal must not hang the suite).
#[allow(dead_code)]
pub fn wait_within(
    child: &mut std::process::Child,
    within: Duration,
    what: &str,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not end within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn sshprobe() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("sshprobe").expect("the sshprobe binary");
    cmd.env("SSHPROBE_STATE_DIR", "");
    cmd
}

/// Runs sshprobe with `args` (which should include `-o jsonl`) and parses every stdout line as JSON.
/// Panics on a line that is not JSON: the JSONL contract is one object per line, nothing else.
pub fn jsonl(args: &[&str]) -> (Vec<serde_json::Value>, Output) {
    let out = sshprobe().args(args).output().expect("running sshprobe");
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    (lines, out)
}

// ---------------------------------------------------------------------------------------------
// The JSONL contract
// ---------------------------------------------------------------------------------------------

/// The outcome names of the contract.
pub const OUTCOMES: [&str; 12] = [
    "banner",
    "refused",
    "unreachable",
    "connect_timeout",
    "reset_before_banner",
    "closed_before_banner",
    "server_refusal",
    "banner_timeout",
    "not_ssh",
    "protocol_mismatch",
    "local_error",
    "interrupted",
];

/// Checks what every JSONL record promises, whatever its outcome (the contract of
/// `sshprobe::report::probe::JsonRecord`), and returns it: outcome names, `success`, timings present
/// as far as the probe got and in order, `bytes_hex`/`bytes_text` views of the same bytes, `end`
/// exactly for established connections, `banner` exactly for `banner`/`protocol_mismatch`.
pub fn check_record(r: &serde_json::Value) -> &serde_json::Value {
    let text = |k: &str| r[k].as_str().unwrap_or_else(|| panic!("{k} is not a string: {r}"));
    assert!(!text("target").is_empty(), "{r}");
    assert!(r["seq"].is_u64(), "{r}");
    // The absolute start: RFC 3339, UTC, microseconds.
    let time = text("time");
    assert!(
        time.len() == 27 && time.ends_with('Z') && humantime::parse_rfc3339(time).is_ok(),
        "time {time}: {r}"
    );
    let outcome = text("outcome");
    assert!(OUTCOMES.contains(&outcome), "unknown outcome {outcome}: {r}");
    assert_eq!(r["success"].as_bool(), Some(outcome == "banner"), "{r}");
    assert!(matches!(text("order"), "wait_for_banner" | "send_first"), "{r}");
    assert!(r["sent_ident"].is_boolean(), "{r}");
    let remote: SocketAddr = text("remote").parse().expect("remote is an address");
    if let Some(local) = r.get("local") {
        let local: SocketAddr =
            local.as_str().expect("local is a string").parse().expect("local is an address");
        assert_eq!(local.is_ipv4(), remote.is_ipv4(), "{r}");
    }

    // Timings: `closed` always; the others only as far as the probe got, in order.
    let t = &r["timings_us"];
    let at = |k: &str| t.get(k).map(|v| v.as_u64().unwrap_or_else(|| panic!("timings_us.{k}: {r}")));
    let closed = at("closed").unwrap_or_else(|| panic!("no timings_us.closed: {r}"));
    let milestones: Vec<u64> = ["connected", "first_byte", "ident"].iter().filter_map(|k| at(k)).collect();
    assert!(milestones.windows(2).all(|w| w[0] <= w[1]), "timings out of order: {t}");
    assert!(milestones.iter().all(|&m| m <= closed), "a milestone after closed: {t}");

    // Bytes: hex and text views of the same bytes, and first_byte exactly when there are any.
    let len = r["bytes_len"].as_u64().expect("bytes_len") as usize;
    let bytes = hex::decode(text("bytes_hex")).expect("bytes_hex is hex");
    assert_eq!(bytes.len(), len.min(512), "{r}");
    assert_eq!(text("bytes_text"), bytes.escape_ascii().to_string(), "{r}");
    assert_eq!(at("first_byte").is_some(), len > 0, "{r}");

    // How it ended: only for established connections (a probe interrupted while connecting has
    // none; one interrupted after the handshake ends `interrupted`, with what it saw).
    let connect_failed = matches!(outcome, "refused" | "unreachable" | "connect_timeout" | "local_error")
        || (outcome == "interrupted" && r.get("end").is_none());
    assert_eq!(r.get("end").is_none(), connect_failed, "{r}");
    if let Some(end) = r.get("end") {
        assert!(
            matches!(
                end.as_str(),
                Some("fin" | "rst" | "timeout" | "we_closed" | "byte_cap" | "interrupted")
            ),
            "{r}"
        );
        assert_eq!(end == "interrupted", outcome == "interrupted", "{r}");
    }
    if connect_failed {
        assert!(at("connected").is_none() && len == 0, "{r}");
    }

    // The banner, split, exactly for the outcomes that have one.
    let has_banner = matches!(outcome, "banner" | "protocol_mismatch");
    assert_eq!(r.get("banner").is_some(), has_banner, "{r}");
    if has_banner {
        let b = &r["banner"];
        assert!(!b["proto"].as_str().expect("banner.proto").is_empty(), "{r}");
        assert!(!b["software"].as_str().expect("banner.software").is_empty(), "{r}");
        assert!(at("ident").is_some(), "{r}");
    }
    if r.get("refusal").is_some() {
        assert_eq!(outcome, "server_refusal", "{r}");
        assert!(r["message"].is_string() && r["refusal_meaning"].is_string(), "{r}");
    }
    r
}

// ---------------------------------------------------------------------------------------------
// Processes: start in their own group, wait for LISTEN, kill the whole tree
// ---------------------------------------------------------------------------------------------

/// A daemon process started by a fixture. Dropping it stops the daemon and every process it
/// forked (sshd's per-connection children live in sessions of their own, so a process-group
/// signal alone would miss them).
struct Daemon {
    what: String,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Starts `cmd` in a process group of its own, its stdout and stderr going to `log`.
    fn spawn(what: &str, mut cmd: Command, log: PathBuf) -> Daemon {
        become_subreaper();
        let out = File::create(&log).unwrap_or_else(|e| panic!("{what}: creating {}: {e}", log.display()));
        let err = out.try_clone().expect("cloning a file descriptor");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err).process_group(0);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("{what}: cannot start {cmd:?}: {e}"));
        Daemon { what: what.to_string(), child, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the daemon's network namespace has a TCP socket in LISTEN on `port`, reading
    /// `/proc/<pid>/net/tcp{,6}` (which shows the namespace of that process, so this also works for
    /// a daemon inside a network namespace). Panics with the daemon's log on timeout or exit.
    fn wait_listening(&mut self, port: u16) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let pid = self.child.id();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before listening on port {port}; its log:\n{}",
                    self.what,
                    self.log()
                );
            }
            let listening = ["tcp", "tcp6"].iter().any(|f| {
                fs::read_to_string(format!("/proc/{pid}/net/{f}")).is_ok_and(|t| table_has_listener(&t, port))
            });
            if listening {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} not listening on port {port} after {READY_TIMEOUT:?}; its log:\n{}",
                    self.what,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Makes this test process the reaper of its orphaned descendants (`PR_SET_CHILD_SUBREAPER`), once:
/// the children of a daemon we kill are then re-parented to us, and [`Daemon`]'s `Drop` reaps them,
/// instead of leaving zombies to an init that may not reap promptly (this machine's does not).
fn become_subreaper() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer argument and has no memory effects.
    ONCE.call_once(|| unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0);
    });
}

/// Whether a `/proc/net/tcp` or `tcp6` table has a socket in state LISTEN (`0A`) on `port`.
pub fn table_has_listener(table: &str, port: u16) -> bool {
    let want = format!("{port:04X}");
    table.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace();
        let local = fields.nth(1).unwrap_or("");
        let state = fields.nth(1).unwrap_or("");
        state == "0A" && local.rsplit_once(':').is_some_and(|(_, p)| p == want)
    })
}

/// Every descendant of `root` (children, grandchildren...), from `/proc/*/stat`.
fn descendants(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else { continue };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses, so cut at the last ')'.
        let Some(ppid) = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)) else {
            continue;
        };
        if let Ok(ppid) = ppid.parse::<u32>() {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            if seen.insert(c) {
                found.push(c);
                todo.push(c);
            }
        }
    }
    found
}

fn signal(pid: i32, sig: libc::c_int) {
    // SAFETY: kill has no memory effects; a stale pid only gives ESRCH.
    unsafe { libc::kill(pid, sig) };
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = self.child.id() as i32;
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // Freeze the daemon so that it forks no more, kill everything it forked (sshd's
        // per-connection children run in sessions of their own: a group signal would miss them),
        // then ask the daemon to stop, and insist after a while.
        signal(pid, libc::SIGSTOP);
        let forked = descendants(pid as u32);
        for &d in &forked {
            signal(d as i32, libc::SIGKILL);
        }
        signal(-pid, libc::SIGTERM);
        signal(-pid, libc::SIGCONT);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && !matches!(self.child.try_wait(), Ok(Some(_))) {
            std::thread::sleep(Duration::from_millis(10));
        }
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            signal(-pid, libc::SIGKILL);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        reap(&forked);
    }
}

/// Reaps the killed descendants that were re-parented to us (see [`become_subreaper`]), bounded in
/// time. A pid that is not our child (ECHILD) was reaped by its own parent.
fn reap(pids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut left: Vec<u32> = pids.to_vec();
    while !left.is_empty() && Instant::now() < deadline {
        left.retain(|&p| {
            let mut status = 0;
            // SAFETY: waitpid on a specific pid, with a valid pointer to an int.
            let rc = unsafe { libc::waitpid(p as libc::pid_t, &mut status, libc::WNOHANG) };
            rc == 0 // still running: try again
        });
        if !left.is_empty() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Builds `sh -c SCRIPT` that performs `mounts` (private to the mount namespace it runs in) and then
/// execs `argv`. Paths travel as positional parameters, so no quoting can go wrong.
fn mounts_then_exec(mounts: &[Mount], argv: &[String]) -> Vec<String> {
    let mut script = String::from("set -e\n");
    let mut args: Vec<String> = Vec::new();
    for m in mounts {
        match m {
            Mount::Bind { src, dst } => {
                args.push(src.display().to_string());
                args.push(dst.display().to_string());
                script += &format!("mount --bind \"${{{}}}\" \"${{{}}}\"\n", args.len() - 1, args.len());
            }
            Mount::Proc { dst } => {
                args.push(dst.display().to_string());
                script += &format!("mount -t proc proc \"${{{}}}\"\n", args.len());
            }
            Mount::PrivateDev { log } => {
                args.push(log.display().to_string());
                script += "mount -t tmpfs -o mode=755,size=64k sshprobe-dev /dev\n\
                           mknod -m 666 /dev/null c 1 3\nmknod -m 666 /dev/zero c 1 5\n\
                           mknod -m 666 /dev/random c 1 8\nmknod -m 666 /dev/urandom c 1 9\n";
                script += &format!("ln -s \"${{{}}}\" /dev/log\n", args.len());
            }
        }
    }
    script += &format!("shift {}\nexec \"$@\"\n", args.len());
    let mut out = vec!["sh".to_string(), "-c".to_string(), script, "sh".to_string()];
    out.extend(args);
    out.extend(argv.iter().cloned());
    out
}

enum Mount {
    Bind {
        src: PathBuf,
        dst: PathBuf,
    },
    Proc {
        dst: PathBuf,
    },
    /// A tmpfs over `/dev` with the four character devices a daemon needs, and `/dev/log` a
    /// symlink to `log` (the host has no `/dev/log` to bind over, and none may be created there).
    PrivateDev {
        log: PathBuf,
    },
}

/// The full command line for a daemon: `[ip netns exec NS] [unshare --mount ... sh -c MOUNTS]
/// [chroot ROOT] ARGV`. `ip netns exec` and `unshare` exec (no fork) and the script ends in `exec`,
/// so the process we spawn *is* the daemon in the end: its pid, its group, its namespaces.
fn daemon_command(
    netns: Option<&str>,
    mounts: &[Mount],
    chroot: Option<&Path>,
    argv: Vec<String>,
) -> Command {
    let mut line: Vec<String> = Vec::new();
    if let Some(ns) = netns {
        line.extend([bin("ip").display().to_string(), "netns".into(), "exec".into(), ns.to_string()]);
    }
    let mut inner: Vec<String> = Vec::new();
    if let Some(root) = chroot {
        inner.extend([bin("chroot").display().to_string(), root.display().to_string()]);
    }
    inner.extend(argv);
    if mounts.is_empty() {
        line.extend(inner);
    } else {
        line.extend([
            bin("unshare").display().to_string(),
            "--mount".into(),
            "--propagation".into(),
            "private".into(),
        ]);
        line.extend(mounts_then_exec(mounts, &inner));
    }
    let mut cmd = Command::new(&line[0]);
    cmd.args(&line[1..]);
    cmd
}

// ---------------------------------------------------------------------------------------------
// OpenSSH
// ---------------------------------------------------------------------------------------------

/// A real OpenSSH server to start: Debian's `/usr/sbin/sshd` by default, or the one in a Debian 13
/// root ([`openssh10_root`]) with [`Sshd::chroot`].
///
/// The configuration is written from scratch (the system's `/etc/ssh/sshd_config` is never read):
/// `Port`, `ListenAddress`, `HostKey` (a fresh ed25519 key), `PidFile`, `UsePAM no`, `LogLevel`,
/// then every [`Sshd::option`] line in order. sshd runs with `-D -e`: in the foreground, logging to
/// stderr, which the guard captures ([`Server::log`]).
#[derive(Debug, Clone)]
pub struct Sshd {
    listen: Option<IpAddr>,
    port: Option<u16>,
    log_level: String,
    options: Vec<String>,
    hosts_deny: Option<String>,
    netns: Option<(String, IpAddr)>,
    chroot: Option<PathBuf>,
    syslog: Option<PathBuf>,
}

impl Default for Sshd {
    fn default() -> Sshd {
        Sshd::new()
    }
}

impl Sshd {
    /// Defaults: 127.0.0.1, a free port, `LogLevel DEBUG1`, no extra options.
    pub fn new() -> Sshd {
        Sshd {
            listen: None,
            port: None,
            log_level: "DEBUG1".into(),
            options: Vec::new(),
            hosts_deny: None,
            netns: None,
            chroot: None,
            syslog: None,
        }
    }

    /// Logs to syslog instead of stderr: sshd runs without `-e`, in a private mount namespace whose
    /// `/dev` is a small tmpfs of its own (null, zero, random, urandom) where `/dev/log` points at
    /// `socket`, a listener of the test's own ([`frontends::Syslog`]). The lines then carry the
    /// `sshd[PID]: ` tag that log readers such as fail2ban's filters need (docs/facts.md §11).
    pub fn syslog(mut self, socket: &Path) -> Sshd {
        self.syslog = Some(socket.to_path_buf());
        self
    }

    /// Listen on `ip` (default 127.0.0.1, or the namespace's address with [`Sshd::netns`]).
    pub fn listen(mut self, ip: IpAddr) -> Sshd {
        self.listen = Some(ip);
        self
    }

    /// Listen on this port (default: a free one).
    pub fn port(mut self, port: u16) -> Sshd {
        self.port = Some(port);
        self
    }

    /// sshd's `LogLevel` (default `DEBUG1`, at which TCP-wrappers denials are logged).
    pub fn log_level(mut self, level: &str) -> Sshd {
        self.log_level = level.into();
        self
    }

    /// One more sshd_config line, `Keyword value`: e.g. `option("MaxStartups 1:100:1")`,
    /// `option("PerSourceMaxStartups 2")`, `option("PerSourcePenalties no")` (OpenSSH 9.8+),
    /// `option("LoginGraceTime 5")`. Lines come after the fixture's own, in order; for most
    /// keywords sshd keeps the first value it reads, so do not repeat the fixture's keywords.
    pub fn option(mut self, line: &str) -> Sshd {
        self.options.push(line.into());
        self
    }

    /// Runs sshd with this text as its `/etc/hosts.deny` (and an empty `/etc/hosts.allow`), both
    /// bind-mounted in a private mount namespace: e.g. `"sshd: ALL\n"` for a TCP-wrappers denial of
    /// every client. The system's files are untouched and invisible to this sshd.
    pub fn hosts_deny(mut self, text: &str) -> Sshd {
        self.hosts_deny = Some(text.into());
        self
    }

    /// Runs sshd inside the network namespace `ns` (`ip netns exec`), listening on the namespace's
    /// address unless [`Sshd::listen`] says otherwise.
    pub fn netns(mut self, ns: &Netns) -> Sshd {
        self.netns = Some((ns.name.clone(), ns.inner_ip));
        self
    }

    /// [`Sshd::netns`] under the name the first tests used.
    pub fn in_netns(self, ns: &Netns) -> Sshd {
        self.netns(ns)
    }

    /// Runs the sshd of the Debian root `root` (see [`openssh10_root`]) under `chroot`, with its
    /// config and keys inside the root and `/dev` and `/proc` mounted into it in a private mount
    /// namespace (nothing appears in the host's mount table). Loopback is shared with the host.
    pub fn chroot(mut self, root: &Path) -> Sshd {
        self.chroot = Some(root.to_path_buf());
        self
    }

    /// [`Sshd::chroot`] under the name the first tests used.
    pub fn root(self, root: &Path) -> Sshd {
        self.chroot(root)
    }

    /// Starts sshd and waits until it listens. Panics, with sshd's stderr, when it does not.
    pub fn start(self) -> Server {
        let ip =
            self.listen.or(self.netns.as_ref().map(|(_, ip)| *ip)).unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        // A fresh namespace has every port free; ours says which are free on loopback.
        let port = self.port.unwrap_or_else(|| match self.netns {
            Some(_) => free_port(),
            None => free_port_on(ip),
        });
        // Config and keys live where sshd can see them: inside the root when chrooted.
        let dir = match &self.chroot {
            Some(root) => tempfile::Builder::new()
                .prefix("sshprobe-sshd-")
                .tempdir_in(root.join("tmp"))
                .unwrap_or_else(|e| panic!("temp dir in {}/tmp: {e}", root.display())),
            None => tempfile::Builder::new().prefix("sshprobe-sshd-").tempdir().expect("creating a temp dir"),
        };
        // The path sshd sees for a file in `dir`.
        let seen = |p: &Path| -> String {
            match &self.chroot {
                Some(root) => {
                    Path::new("/").join(p.strip_prefix(root).expect("inside the root")).display().to_string()
                }
                None => p.display().to_string(),
            }
        };
        let key = dir.path().join("host_ed25519");
        run(
            Command::new(bin("ssh-keygen"))
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "sshprobe-test", "-f"])
                .arg(&key),
            "generating the sshd host key",
        );
        let run_sshd = match &self.chroot {
            Some(root) => root.join("run/sshd"),
            None => PathBuf::from("/run/sshd"),
        };
        if !run_sshd.is_dir() {
            fs::create_dir_all(&run_sshd).unwrap_or_else(|e| panic!("creating {}: {e}", run_sshd.display()));
            let _ = fs::set_permissions(&run_sshd, fs::Permissions::from_mode(0o755));
        }
        let mut config = format!(
            "# written by sshprobe's tests\nPort {port}\nListenAddress {ip}\nHostKey {}\nPidFile {}\n\
             UsePAM no\nLogLevel {}\n",
            seen(&key),
            seen(&dir.path().join("sshd.pid")),
            self.log_level
        );
        for line in &self.options {
            config += &format!("{line}\n");
        }
        let config_path = dir.path().join("sshd_config");
        fs::write(&config_path, &config).expect("writing sshd_config");

        let mut mounts = Vec::new();
        if let Some(root) = &self.chroot {
            mounts.push(Mount::Bind { src: "/dev".into(), dst: root.join("dev") });
            mounts.push(Mount::Proc { dst: root.join("proc") });
        }
        if let Some(deny) = &self.hosts_deny {
            let etc = self.chroot.as_ref().map_or(PathBuf::from("/etc"), |r| r.join("etc"));
            let deny_path = dir.path().join("hosts.deny");
            let allow_path = dir.path().join("hosts.allow");
            fs::write(&deny_path, deny).expect("writing the private hosts.deny");
            fs::write(&allow_path, "").expect("writing the private hosts.allow");
            for (private, system) in
                [(deny_path, etc.join("hosts.deny")), (allow_path, etc.join("hosts.allow"))]
            {
                if !system.exists() {
                    // A bind mount needs a file to cover. Creating an empty one only happens inside our
                    // own Debian root: on the host, a missing file is left alone (libwrap then reads
                    // nothing from it, which is what an empty file means too).
                    if self.chroot.is_some() {
                        let _ = fs::write(&system, "");
                    } else if system.ends_with("hosts.deny") {
                        panic!(
                            "{} does not exist: cannot bind a private hosts.deny over it",
                            system.display()
                        );
                    } else {
                        continue;
                    }
                }
                mounts.push(Mount::Bind { src: private, dst: system });
            }
        }
        let sshd_bin = if self.chroot.is_some() {
            "/usr/sbin/sshd".to_string()
        } else {
            bin("sshd").display().to_string()
        };
        if let Some(socket) = &self.syslog {
            mounts.push(Mount::PrivateDev { log: socket.clone() });
        }
        let mut argv = vec![sshd_bin.clone(), "-D".into(), "-e".into(), "-f".into(), seen(&config_path)];
        if self.syslog.is_some() {
            argv.retain(|a| a != "-e");
        }
        let cmd = daemon_command(
            self.netns.as_ref().map(|(n, _)| n.as_str()),
            &mounts,
            self.chroot.as_deref(),
            argv,
        );
        let what = format!("sshd on {}", SocketAddr::new(ip, port));
        let mut daemon = Daemon::spawn(&what, cmd, dir.path().join("stderr.log"));
        daemon.wait_listening(port);
        let version_argv = match &self.chroot {
            Some(root) => {
                vec![bin("chroot").display().to_string(), root.display().to_string(), sshd_bin, "-V".into()]
            }
            None => vec![sshd_bin, "-V".into()],
        };
        Server { daemon, addr: SocketAddr::new(ip, port), version_argv, config, dir }
    }
}

/// A running server (sshd or dropbear). Dropping it stops the server and every process it forked,
/// reaps them, and removes its files.
pub struct Server {
    // Fields drop in order: the daemon stops before its directory goes.
    daemon: Daemon,
    /// Where it listens.
    pub addr: SocketAddr,
    version_argv: Vec<String>,
    config: String,
    dir: tempfile::TempDir,
}

/// The guard [`Sshd::start`] returns.
pub type SshdGuard = Server;
/// The guard [`Dropbear::start`] returns.
pub type DropbearGuard = Server;

impl Server {
    /// Where it listens (the same as the `addr` field).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Everything it wrote on stdout and stderr so far (sshd `-e` and dropbear `-E` log there).
    pub fn log(&self) -> String {
        self.daemon.log()
    }

    /// The sshd_config it runs with (empty for dropbear).
    pub fn config(&self) -> &str {
        &self.config
    }

    /// Its version from `-V`, e.g. `OpenSSH_9.2`, `OpenSSH_10.0p2` or `v2022.83` (the banner may say
    /// more, e.g. `OpenSSH_9.2p1 Debian-2+deb12u3`). Costs no connection.
    pub fn version(&self) -> String {
        let out =
            Command::new(&self.version_argv[0]).args(&self.version_argv[1..]).output().expect("running -V");
        let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
        text.split([',', ' ', '\n'])
            .find(|w| {
                w.starts_with("OpenSSH_")
                    || (w.starts_with('v') && w[1..].starts_with(|c: char| c.is_ascii_digit()))
            })
            .unwrap_or_else(|| panic!("{:?} said {text:?}", self.version_argv))
            .to_string()
    }

    /// The directory of its config, key, pid file and log (inside the root when chrooted); removed
    /// when the server is dropped.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The pid of the listening process.
    pub fn pid(&self) -> u32 {
        self.daemon.child.id()
    }
}

// ---------------------------------------------------------------------------------------------
// Dropbear
// ---------------------------------------------------------------------------------------------

/// A real dropbear server to start: `dropbear -F -E -p IP:PORT -r KEY -P PIDFILE` with a fresh
/// ed25519 key (`dropbearkey`). Dropbear sends its binary KEXINIT right after its ident line
/// (docs/facts.md §1), and refuses over its limits with zero bytes (docs/facts.md §3).
#[derive(Debug, Clone, Default)]
pub struct Dropbear {
    listen: Option<IpAddr>,
    netns: Option<(String, IpAddr)>,
    args: Vec<String>,
}

impl Dropbear {
    /// Defaults: 127.0.0.1, a free port.
    pub fn new() -> Dropbear {
        Dropbear::default()
    }

    /// Listen on `ip`.
    pub fn listen(mut self, ip: IpAddr) -> Dropbear {
        self.listen = Some(ip);
        self
    }

    /// Run inside the network namespace `ns`, on its address.
    pub fn netns(mut self, ns: &Netns) -> Dropbear {
        self.netns = Some((ns.name.clone(), ns.inner_ip));
        self
    }

    /// One more command-line argument for dropbear.
    pub fn arg(mut self, arg: &str) -> Dropbear {
        self.args.push(arg.into());
        self
    }

    /// Starts dropbear and waits until it listens. Panics, with its stderr, when it does not.
    pub fn start(self) -> Server {
        let ip =
            self.listen.or(self.netns.as_ref().map(|(_, ip)| *ip)).unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let port = match self.netns {
            Some(_) => free_port(),
            None => free_port_on(ip),
        };
        let dir =
            tempfile::Builder::new().prefix("sshprobe-dropbear-").tempdir().expect("creating a temp dir");
        let key = dir.path().join("host_ed25519");
        run(
            Command::new(bin("dropbearkey")).args(["-t", "ed25519", "-f"]).arg(&key),
            "generating the dropbear host key",
        );
        let addr = SocketAddr::new(ip, port);
        let mut argv = vec![
            bin("dropbear").display().to_string(),
            "-F".into(),
            "-E".into(),
            "-p".into(),
            addr.to_string(),
            "-r".into(),
            key.display().to_string(),
            "-P".into(),
            dir.path().join("dropbear.pid").display().to_string(),
        ];
        argv.extend(self.args.iter().cloned());
        let cmd = daemon_command(self.netns.as_ref().map(|(n, _)| n.as_str()), &[], None, argv);
        let mut daemon = Daemon::spawn(&format!("dropbear on {addr}"), cmd, dir.path().join("stderr.log"));
        daemon.wait_listening(port);
        let version_argv = vec![bin("dropbear").display().to_string(), "-V".into()];
        Server { daemon, addr, version_argv, config: String::new(), dir }
    }
}

/// dropbear on 127.0.0.1 and a free port: `Dropbear::new().start()`.
pub fn dropbear() -> Server {
    Dropbear::new().start()
}

// ---------------------------------------------------------------------------------------------
// Network namespaces
// ---------------------------------------------------------------------------------------------

/// Where fixtures that must be unique machine-wide take turns (subnet choice, stale cleanup).
const NET_LOCK: &str = "/run/sshprobe-tests/net.lock";

/// How many /30 subnets 198.18.0.0/15 holds.
const SUBNETS: u32 = 1 << 15;
/// Where the search for a free /30 starts: 198.19.0.0, above the 198.18.x.y that simpler fixtures
/// (which do not look before they take) use.
const FIRST_SUBNET: u32 = 1 << 14;

/// A network namespace joined to ours by a veth pair: a second host for tests.
///
/// The pair gets a /30 of 198.18.0.0/15 (RFC 2544's benchmarking range): `.1` on our side
/// ([`Netns::outer_ip`]), `.2` inside ([`Netns::inner_ip`]); both links and the namespace's `lo` are
/// up. The subnet is chosen under a machine-wide lock among those no interface uses, so tests in
/// parallel (and other test processes) never collide. Dropping the guard deletes the veth pair and
/// the namespace; namespaces left by a killed test process (`sp-<dead pid>-*`) are deleted by the
/// next one.
pub struct Netns {
    /// Its name, for `ip netns exec NAME` and `ip -n NAME`: `sp-<pid>-<n>`.
    pub name: String,
    /// Our end's address (`.1` of the /30): where traffic to the namespace comes from.
    pub outer_ip: IpAddr,
    /// Its end's address (`.2` of the /30): where its servers listen.
    pub inner_ip: IpAddr,
    index: u32,
}

impl Netns {
    /// Creates the namespace and its link. Panics when a step fails (and undoes the others).
    pub fn new() -> Netns {
        let _lock = lock_file(Path::new(NET_LOCK));
        reap_stale_namespaces();
        let used = used_subnets();
        let index = (FIRST_SUBNET..SUBNETS)
            .chain(0..FIRST_SUBNET)
            .find(|i| !used.contains(i))
            .expect("a free /30 in 198.18.0.0/15");
        let base = u32::from(Ipv4Addr::new(198, 18, 0, 0)) + index * 4;
        let ns = Netns {
            name: format!("sp-{}-{}", std::process::id(), next_id()),
            outer_ip: IpAddr::V4(Ipv4Addr::from(base + 1)),
            inner_ip: IpAddr::V4(Ipv4Addr::from(base + 2)),
            index,
        };
        run(Command::new(bin("ip")).args(["netns", "add", &ns.name]), "ip netns add");
        // From here on, a panic drops `ns`, which deletes whatever was made.
        let (outer, inner) = (ns.host_veth(), ns.ns_veth());
        run(
            Command::new(bin("ip"))
                .args(["link", "add", &outer, "type", "veth", "peer", "name", &inner, "netns", &ns.name]),
            "creating the veth pair",
        );
        run(
            Command::new(bin("ip")).args(["addr", "add", &format!("{}/30", ns.outer_ip), "dev", &outer]),
            "ip addr add",
        );
        run(Command::new(bin("ip")).args(["link", "set", &outer, "up"]), "ip link set up");
        run(
            Command::new(bin("ip")).args([
                "-n",
                &ns.name,
                "addr",
                "add",
                &format!("{}/30", ns.inner_ip),
                "dev",
                &inner,
            ]),
            "ip addr add (namespace)",
        );
        run(
            Command::new(bin("ip")).args(["-n", &ns.name, "link", "set", &inner, "up"]),
            "ip link set up (namespace)",
        );
        run(
            Command::new(bin("ip")).args(["-n", &ns.name, "link", "set", "lo", "up"]),
            "ip link set lo up (namespace)",
        );
        ns
    }

    /// The veth on our side (`spv<index>`: interface names are at most 15 bytes).
    pub fn host_veth(&self) -> String {
        format!("spv{}", self.index)
    }

    /// The veth inside the namespace.
    pub fn ns_veth(&self) -> String {
        format!("spn{}", self.index)
    }

    /// A command that runs `program` inside the namespace (`ip netns exec NAME program`).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(bin("ip"));
        cmd.args(["netns", "exec", &self.name]).arg(bin(program));
        cmd
    }

    /// Runs `argv` inside the namespace and returns its output; panics when it fails.
    pub fn exec(&self, argv: &[&str]) -> Output {
        let (program, args) = argv.split_first().expect("a command to run");
        run(self.command(program).args(args), &format!("running {argv:?} in {}", self.name))
    }

    /// Whether a namespace of this name exists (`ip netns list`).
    pub fn exists(name: &str) -> bool {
        namespaces().iter().any(|n| n == name)
    }
}

impl Default for Netns {
    fn default() -> Netns {
        Netns::new()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting one end deletes the pair; then the namespace itself.
        run_quietly(Command::new(bin("ip")).args(["link", "del", &self.host_veth()]));
        run_quietly(Command::new(bin("ip")).args(["netns", "delete", &self.name]));
    }
}

/// Names from `ip netns list` (`NAME` or `NAME (id: N)`).
fn namespaces() -> Vec<String> {
    let out = Command::new(bin("ip")).args(["netns", "list"]).output().map(|o| o.stdout).unwrap_or_default();
    String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect()
}

/// The /30 indexes of 198.18.0.0/15 that some interface in our namespace uses.
fn used_subnets() -> HashSet<u32> {
    let out = Command::new(bin("ip"))
        .args(["-o", "-4", "addr", "show"])
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
    String::from_utf8_lossy(&out)
        .split_whitespace()
        .filter_map(|w| w.split('/').next()?.parse::<Ipv4Addr>().ok())
        .map(u32::from)
        .filter(|a| (base..base + SUBNETS * 4).contains(a))
        .map(|a| (a - base) / 4)
        .collect()
}

/// Whether `pid` names a live process.
fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The pid in a fixture's name `<prefix><pid><sep>...`.
pub fn owner_pid(name: &str, prefix: &str, sep: char) -> Option<u32> {
    name.strip_prefix(prefix)?.split(sep).next()?.parse().ok()
}

/// Deletes namespaces that a test process which is gone left behind (killed before its `Drop`).
fn reap_stale_namespaces() {
    for name in namespaces() {
        if owner_pid(&name, "sp-", '-').is_some_and(|pid| !alive(pid)) {
            loud!("common: deleting the stale network namespace {name}");
            run_quietly(Command::new(bin("ip")).args(["netns", "delete", &name]));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// nftables
// ---------------------------------------------------------------------------------------------

/// An nftables table of our own (`inet sp_<pid>_<n>`), in our namespace or inside a [`Netns`].
/// Dropping the guard deletes the table; nothing else in the ruleset is touched.
///
/// ```ignore
/// let ns = common::Netns::new();
/// let _fw = common::Nft::drop_syns(Some(&ns), 2222); // SYNs to ns.addr():2222 vanish
/// ```
pub struct Nft {
    table: String,
    netns: Option<String>,
}

impl Nft {
    /// Adds a table with one filter chain on `hook` (`input`, `output`, `forward`...) at priority 0,
    /// policy accept, holding `rules`: e.g. `Nft::new(Some(&ns), "input", &["tcp dport 22 drop"])`.
    pub fn new(netns: Option<&Netns>, hook: &str, rules: &[&str]) -> Nft {
        let mut body = format!("chain c {{\n  type filter hook {hook} priority 0; policy accept;\n");
        for rule in rules {
            body += &format!("  {rule}\n");
        }
        body += "}";
        Nft::table(netns, &body)
    }

    /// Adds `table inet NAME { BODY }`, where `body` holds chains and rules in `nft -f` syntax.
    pub fn table(netns: Option<&Netns>, body: &str) -> Nft {
        let _lock = lock_file(Path::new(NET_LOCK));
        reap_stale_tables();
        let nft = Nft {
            table: format!("sp_{}_{}", std::process::id(), next_id()),
            netns: netns.map(|n| n.name.clone()),
        };
        let script = format!("table inet {} {{\n{body}\n}}\n", nft.table);
        let mut child = nft
            .command()
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running nft");
        child.stdin.take().expect("nft's stdin").write_all(script.as_bytes()).expect("writing to nft");
        let out = child.wait_with_output().expect("waiting for nft");
        assert!(out.status.success(), "nft -f rejected:\n{script}\n{}", String::from_utf8_lossy(&out.stderr));
        nft
    }

    /// A table that silently drops every SYN to TCP `port` arriving in the namespace (or in ours):
    /// a connect there times out, as behind a dropping firewall.
    pub fn drop_syns(netns: Option<&Netns>, port: u16) -> Nft {
        Nft::table(
            netns,
            &format!(
                "chain input {{ type filter hook input priority -10; policy accept; \
                 tcp dport {port} tcp flags & (syn | ack) == syn drop; }}"
            ),
        )
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.table
    }

    /// `nft` in the right namespace.
    fn command(&self) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new(bin("ip"));
                c.args(["netns", "exec", ns]).arg(bin("nft"));
                c
            }
            None => Command::new(bin("nft")),
        }
    }

    /// The table as `nft list table` shows it (with counters, if the rules have them).
    pub fn list(&self) -> String {
        let out = self.command().args(["list", "table", "inet", &self.table]).output().expect("nft list");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Nft {
    fn drop(&mut self) {
        // Fails harmlessly when the namespace went first (its tables went with it).
        let table = self.table.clone();
        run_quietly(self.command().args(["delete", "table", "inet", &table]));
    }
}

/// Deletes tables in our namespace that a test process which is gone left behind.
fn reap_stale_tables() {
    let Ok(out) = Command::new(bin("nft")).args(["list", "tables"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let ["table", family, name] = words[..] {
            if owner_pid(name, "sp_", '_').is_some_and(|pid| !alive(pid)) {
                loud!("common: deleting the stale nftables table {family} {name}");
                run_quietly(Command::new(bin("nft")).args(["delete", "table", family, name]));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// OpenSSH 10: a cached Debian 13 root
// ---------------------------------------------------------------------------------------------

/// Where the Debian 13 root is cached unless `SSHPROBE_TRIXIE_ROOT` says otherwise.
pub const DEFAULT_TRIXIE_ROOT: &str = "/var/cache/sshprobe-tests/trixie";

/// How long building the root may take (it took about 30 s here).
const ROOT_BUILD_TIMEOUT: &str = "900";

/// A Debian 13 (trixie) root with `openssh-server` (OpenSSH 10), for [`Sshd::chroot`].
///
/// Built once, cached outside the repository (`/var/cache/sshprobe-tests/trixie`, or the path in
/// `SSHPROBE_TRIXIE_ROOT`): `debootstrap --variant=minbase trixie`, then `apt-get install
/// openssh-server` in a chroot, with a `policy-rc.d` that forbids starting services. It is built in
/// a temporary sibling that is renamed into place when complete, under a lock file, so concurrent
/// test processes build it once and never see half a root. Every step runs in a private mount
/// namespace, so no mount (debootstrap's /proc, our /dev) can outlive it on the host.
///
/// Returns `None` after a [`skip`] (`cannot build the OpenSSH 10 root: ...`) when it cannot be built
/// (no root, no debootstrap, no network to the Debian archive); under CI as root that fails.
pub fn openssh10_root(test: &str) -> Option<PathBuf> {
    if !need(test, &["debootstrap", "unshare", "chroot", "timeout", "sshd", "ssh-keygen"]) {
        return None;
    }
    let root =
        std::env::var_os("SSHPROBE_TRIXIE_ROOT").map(PathBuf::from).unwrap_or(DEFAULT_TRIXIE_ROOT.into());
    let ready = |r: &Path| r.join("usr/sbin/sshd").is_file() && r.join("tmp").is_dir();
    if ready(&root) {
        remove_stale_config_dirs(&root);
        return Some(root);
    }
    let cannot_build = |reason: String| {
        skip(test, &format!("cannot build the OpenSSH 10 root at {}: {reason}", root.display()));
        None
    };
    let (Some(parent), Some(name)) = (root.parent(), root.file_name().and_then(|n| n.to_str())) else {
        return cannot_build("not a usable path".into());
    };
    if let Err(e) = fs::create_dir_all(parent) {
        return cannot_build(format!("creating {}: {e}", parent.display()));
    }
    let _lock = lock_file(&parent.join(format!(".{name}.lock")));
    if ready(&root) {
        return Some(root); // another process built it while we waited for the lock
    }
    loud!("common: building the OpenSSH 10 root at {} (debootstrap; about 30 s) ...", root.display());
    let started = Instant::now();
    // Leftovers of an interrupted build (we hold the lock, so no one is building them).
    for entry in fs::read_dir(parent).into_iter().flatten().flatten() {
        let stale = entry.file_name().to_str().is_some_and(|n| n.starts_with(&format!("{name}.tmp-")));
        if stale {
            if let Err(reason) = remove_tree(&entry.path()) {
                return cannot_build(reason);
            }
        }
    }
    if root.exists() {
        // Not ready, so incomplete: rebuild.
        if let Err(reason) = remove_tree(&root) {
            return cannot_build(reason);
        }
    }
    let tmp = parent.join(format!("{name}.tmp-{}", std::process::id()));
    match build_trixie(&tmp) {
        Ok(()) if ready(&tmp) => {}
        Ok(()) => {
            let _ = remove_tree(&tmp);
            return cannot_build("the build finished without /usr/sbin/sshd".into());
        }
        Err(reason) => {
            let _ = remove_tree(&tmp);
            return cannot_build(reason);
        }
    }
    if let Err(e) = fs::rename(&tmp, &root) {
        let _ = remove_tree(&tmp);
        return cannot_build(format!("renaming {} into place: {e}", tmp.display()));
    }
    loud!("common: built the OpenSSH 10 root in {:.0?}", started.elapsed());
    Some(root)
}

/// Removes `sshprobe-sshd-*` directories older than an hour from the root's /tmp: left by a test
/// process that was killed before its guard ran, or by older fixtures that did not clean up. (No
/// test keeps an sshd for an hour, so none of them is in use.)
fn remove_stale_config_dirs(root: &Path) {
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    for entry in fs::read_dir(root.join("tmp")).into_iter().flatten().flatten() {
        let ours = entry.file_name().to_str().is_some_and(|n| n.starts_with("sshprobe-sshd-"));
        let old = entry.metadata().and_then(|m| m.modified()).is_ok_and(|t| t < hour_ago);
        if ours && old {
            let _ = remove_tree(&entry.path());
        }
    }
}

/// debootstrap and openssh-server into `dir`, each in a private mount namespace, time-bounded.
fn build_trixie(dir: &Path) -> Result<(), String> {
    let step = |cmd: &mut Command, what: &str| -> Result<(), String> {
        let out = cmd.stdin(Stdio::null()).output().map_err(|e| format!("{what}: {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        let tail = |b: &[u8]| {
            let s = String::from_utf8_lossy(b);
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(15)..].join("\n")
        };
        Err(format!("{what} failed ({}):\n{}\n{}", out.status, tail(&out.stdout), tail(&out.stderr)))
    };
    let private = |argv: Vec<String>, mounts: &[Mount]| -> Command {
        let mut line = vec![ROOT_BUILD_TIMEOUT.to_string(), bin("unshare").display().to_string()];
        line.extend(["--mount".into(), "--propagation".into(), "private".into()]);
        if mounts.is_empty() {
            line.extend(argv);
        } else {
            line.extend(mounts_then_exec(mounts, &argv));
        }
        let mut cmd = Command::new(bin("timeout"));
        cmd.args(line);
        cmd
    };
    step(
        &mut private(
            vec![
                bin("debootstrap").display().to_string(),
                "--variant=minbase".into(),
                "trixie".into(),
                dir.display().to_string(),
                "http://deb.debian.org/debian".into(),
            ],
            &[],
        ),
        "debootstrap --variant=minbase trixie",
    )?;
    // Forbid the package's scripts to start any service: an sshd started by postinst would listen
    // on port 22 of the host's loopback.
    let policy = dir.join("usr/sbin/policy-rc.d");
    fs::write(&policy, "#!/bin/sh\nexit 101\n").map_err(|e| format!("writing {}: {e}", policy.display()))?;
    fs::set_permissions(&policy, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
    let install = "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server";
    step(
        &mut private(
            vec![
                bin("chroot").display().to_string(),
                dir.display().to_string(),
                "/bin/sh".into(),
                "-c".into(),
                install.into(),
            ],
            &[
                Mount::Bind { src: "/dev".into(), dst: dir.join("dev") },
                Mount::Proc { dst: dir.join("proc") },
            ],
        ),
        "apt-get install openssh-server in the trixie root",
    )?;
    // Host keys made by the package are never used: every test makes its own.
    for entry in fs::read_dir(dir.join("etc/ssh")).into_iter().flatten().flatten() {
        if entry.file_name().to_str().is_some_and(|n| n.starts_with("ssh_host_")) {
            let _ = fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// `rm -rf` of a directory we made, refusing when anything is mounted below it (a leaked bind of
/// /dev or /proc would make the removal destroy the host's files).
fn remove_tree(dir: &Path) -> Result<(), String> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = dir.display().to_string();
    if let Some(line) =
        mountinfo.lines().find(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&prefix)))
    {
        return Err(format!("refusing to remove {prefix}: something is mounted below it ({line})"));
    }
    fs::remove_dir_all(dir).map_err(|e| format!("removing {prefix}: {e}"))
}
