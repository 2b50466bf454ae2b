//! Real front-ends placed before a real sshd: a ban-after-failures daemon (fail2ban), nftables
//! per-source meters, a TCP proxy (HAProxy) and a protocol multiplexer (sslh). Most SSH servers
//! people reach sit behind one of these, and each answers a probe in its own way on the wire
//! (docs/facts.md §11); `diagnose` must tell them apart, so the tests start the real programs.
//!
//! Every fixture runs its program in the foreground with a private configuration under a temp
//! dir (never the system's service or config files) and is a guard: dropping it stops the program
//! and every process it forked, deletes the nftables table it made and removes its files, also
//! when the test panics.
//!
//! | fixture | what it gives |
//! |---|---|
//! | [`Syslog`] | a `/dev/log` listener writing an `auth.log`, for `Sshd::syslog` |
//! | [`Fail2ban`] → [`Fail2banGuard`] | `fail2ban-server -f`, the `sshd` jail on that auth.log, bans in a table of ours |
//! | [`meter_count`], [`meter_rate`], [`block_source`] | nft per-source rules before a port |
//! | [`Haproxy`] → [`HaproxyGuard`] | `haproxy -db` in TCP mode before a server |
//! | [`Sslh`] → [`SslhGuard`] | `sslh -f` before a server |
//!
//! ```ignore
//! let syslog = Syslog::new();
//! let sshd = Sshd::new().syslog(syslog.socket()).start();
//! let f2b = Fail2ban::new().maxretry(3).bantime("20s").start(sshd.addr.port(), syslog.auth_log(), None);
//! // ... probe sshd.addr until f2b.banned() ...
//! ```

use super::{bin, daemon_command, free_port, lock_file, next_id, run_quietly, Daemon, Netns, Nft, NET_LOCK};
use std::fs;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a front-end may take to start (fail2ban reads its whole configuration in Python).
const START_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// A syslog listener of our own
// ---------------------------------------------------------------------------------------------

/// A datagram socket standing in for `/dev/log`, and a thread that writes what arrives to an
/// `auth.log` as a syslog daemon does: `Mon DD HH:MM:SS HOST TAG[PID]: MESSAGE`, one line each,
/// flushed at once (fail2ban's pyinotify backend reacts to each write).
pub struct Syslog {
    dir: tempfile::TempDir,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The host name our listener writes (sshd's own messages carry none).
const SYSLOG_HOST: &str = "sshprobe-test";

impl Syslog {
    pub fn new() -> Syslog {
        let dir = tempfile::Builder::new().prefix("sshprobe-syslog-").tempdir().expect("a temp dir");
        let socket = UnixDatagram::bind(dir.path().join("log.sock")).expect("binding the syslog socket");
        // sshd's preauth processes write as the unprivileged sshd user on some builds.
        let _ = fs::set_permissions(
            dir.path().join("log.sock"),
            std::os::unix::fs::PermissionsExt::from_mode(0o666),
        );
        socket.set_read_timeout(Some(Duration::from_millis(50))).expect("a read timeout");
        let log_path = dir.path().join("auth.log");
        fs::write(&log_path, "").expect("creating auth.log");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut log = fs::OpenOptions::new().append(true).open(&log_path).expect("opening auth.log");
            let mut buf = vec![0u8; 8192];
            while !stopping.load(Ordering::Relaxed) {
                let Ok(n) = socket.recv(&mut buf) else { continue };
                let line = syslog_line(&String::from_utf8_lossy(&buf[..n]));
                let _ = log.write_all(line.as_bytes());
                let _ = log.flush();
            }
        });
        Syslog { dir, stop, thread: Some(thread) }
    }

    /// Where `/dev/log` must point.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("log.sock")
    }

    /// The log it writes.
    pub fn auth_log(&self) -> PathBuf {
        self.dir.path().join("auth.log")
    }

    /// Everything written so far.
    pub fn text(&self) -> String {
        fs::read_to_string(self.auth_log()).unwrap_or_default()
    }
}

impl Default for Syslog {
    fn default() -> Syslog {
        Syslog::new()
    }
}

impl Drop for Syslog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One datagram as glibc's `syslog(3)` sends it (`<PRI>Mmm dd hh:mm:ss TAG[PID]: MSG`), as a log
/// line: the priority dropped, our host name after the 15-character time stamp, one newline.
pub fn syslog_line(datagram: &str) -> String {
    let body = datagram.trim_end_matches(['\0', '\n']);
    let body = match body.strip_prefix('<').and_then(|b| b.split_once('>')) {
        Some((_pri, rest)) => rest,
        None => body,
    };
    match (body.get(..15), body.get(15..)) {
        (Some(stamp), Some(rest)) if rest.starts_with(' ') => format!("{stamp} {SYSLOG_HOST}{rest}\n"),
        _ => format!("{body}\n"),
    }
}

// ---------------------------------------------------------------------------------------------
// fail2ban
// ---------------------------------------------------------------------------------------------

/// `fail2ban-server -f` with Debian's `sshd` filter in one jail, to start with [`Fail2ban::start`].
///
/// The configuration is Debian's (`/etc/fail2ban` copied into a temp dir, its `jail.d` emptied),
/// plus our `fail2ban.local` (own socket, pid file and log, `dbfile = :memory:`) and `jail.local`:
/// `ignoreself = false` and an empty `ignoreip` (it ignores loopback by default), `backend =
/// pyinotify` (reacts in 0.1–0.6 s), the filter in `mode = aggressive` (identification-only
/// connections count as failures only in that mode, docs/facts.md §11), and Debian's `nftables`
/// action with a table name of ours (`sp_<pid>_<n>`, which the stale-table reaper knows), so its
/// bans never touch the system's `f2b-table`. Its default `blocktype = reject` answers a banned
/// address's SYNs with ICMP port unreachable.
#[derive(Debug, Clone)]
pub struct Fail2ban {
    maxretry: u32,
    findtime: String,
    bantime: String,
    mode: String,
    blocktype: Option<String>,
}

impl Default for Fail2ban {
    fn default() -> Fail2ban {
        Fail2ban::new()
    }
}

impl Fail2ban {
    /// Defaults: `maxretry = 3`, `findtime = 10m`, `bantime = 30s`, `mode = aggressive`.
    pub fn new() -> Fail2ban {
        Fail2ban {
            maxretry: 3,
            findtime: "10m".into(),
            bantime: "30s".into(),
            mode: "aggressive".into(),
            blocktype: None,
        }
    }

    pub fn maxretry(mut self, n: u32) -> Fail2ban {
        self.maxretry = n;
        self
    }

    /// fail2ban's time syntax: `30s`, `10m`.
    pub fn findtime(mut self, t: &str) -> Fail2ban {
        self.findtime = t.into();
        self
    }

    pub fn bantime(mut self, t: &str) -> Fail2ban {
        self.bantime = t.into();
        self
    }

    /// The sshd filter's mode: `normal`, `aggressive`, `ddos`, `extra`.
    pub fn mode(mut self, m: &str) -> Fail2ban {
        self.mode = m.into();
        self
    }

    /// The nftables action's `blocktype` (default `reject`; `drop` makes a ban silent).
    pub fn blocktype(mut self, b: &str) -> Fail2ban {
        self.blocktype = Some(b.into());
        self
    }

    /// Starts the server watching `auth_log` for sshd on `port`, in `netns` (a name for `ip netns
    /// exec`) or ours, and waits until the jail runs. Panics with its log when it does not.
    pub fn start(self, port: u16, auth_log: &Path, netns: Option<&str>) -> Fail2banGuard {
        let dir = tempfile::Builder::new().prefix("sshprobe-f2b-").tempdir().expect("a temp dir");
        let conf = dir.path().join("conf");
        copy_tree(Path::new("/etc/fail2ban"), &conf);
        for entry in fs::read_dir(conf.join("jail.d")).into_iter().flatten().flatten() {
            let _ = fs::remove_file(entry.path());
        }
        let table = {
            let _lock = lock_file(Path::new(NET_LOCK));
            format!("sp_{}_{}", std::process::id(), next_id())
        };
        let d = dir.path().display();
        fs::write(
            conf.join("fail2ban.local"),
            format!(
                "[Definition]\nloglevel = INFO\nlogtarget = {d}/fail2ban.log\nsocket = {d}/f2b.sock\n\
                 pidfile = {d}/f2b.pid\ndbfile = :memory:\n"
            ),
        )
        .expect("writing fail2ban.local");
        let blocktype = self.blocktype.as_deref().map(|b| format!(", blocktype={b}")).unwrap_or_default();
        fs::write(
            conf.join("jail.local"),
            format!(
                "[DEFAULT]\nignoreself = false\nignoreip =\nbackend = pyinotify\n\n\
                 [sshd]\nenabled = true\nmode = {mode}\nport = {port}\nlogpath = {log}\n\
                 maxretry = {maxretry}\nfindtime = {findtime}\nbantime = {bantime}\n\
                 action = nftables[name=sshd, port=\"{port}\", protocol=tcp, table={table}{blocktype}]\n",
                mode = self.mode,
                log = auth_log.display(),
                maxretry = self.maxretry,
                findtime = self.findtime,
                bantime = self.bantime,
            ),
        )
        .expect("writing jail.local");
        let argv = vec![
            bin("fail2ban-server").display().to_string(),
            "-f".into(),
            "-x".into(),
            "-c".into(),
            conf.display().to_string(),
            "-s".into(),
            dir.path().join("f2b.sock").display().to_string(),
            "-p".into(),
            dir.path().join("f2b.pid").display().to_string(),
        ];
        let cmd = daemon_command(netns, &[], None, argv);
        let mut daemon = Daemon::spawn("fail2ban-server", cmd, dir.path().join("stderr.log"));
        let guard_table = TableGuard { table: table.clone(), netns: netns.map(String::from) };
        let log_path = dir.path().join("fail2ban.log");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let log = fs::read_to_string(&log_path).unwrap_or_default();
            if log.contains("Jail 'sshd' started") {
                break;
            }
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!("fail2ban-server exited ({status}):\n{}\n{log}", daemon.log());
            }
            if Instant::now() >= deadline {
                panic!("fail2ban's sshd jail not started after {START_TIMEOUT:?}:\n{}\n{log}", daemon.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Fail2banGuard { daemon, table: guard_table, log: log_path, _dir: dir }
    }
}

/// A running fail2ban. Dropping it stops the server, deletes its table, removes its files.
pub struct Fail2banGuard {
    daemon: Daemon,
    table: TableGuard,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Fail2banGuard {
    /// fail2ban's own log (`NOTICE [sshd] Ban 127.77.0.1` ...).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The addresses in the ban set now.
    pub fn banned(&self) -> Vec<IpAddr> {
        let listing = self.table.list();
        let Some(elements) = listing.split("elements = {").nth(1) else { return Vec::new() };
        elements
            .split('}')
            .next()
            .unwrap_or("")
            .split([',', ' ', '\n', '\t'])
            .filter_map(|w| w.parse().ok())
            .collect()
    }

    /// Waits (bounded) until `ip` is banned; returns whether it is.
    pub fn wait_banned(&self, ip: IpAddr, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.banned().contains(&ip) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// The nft table the bans go to.
    pub fn table(&self) -> &str {
        &self.table.table
    }

    /// What it wrote on stderr.
    pub fn stderr(&self) -> String {
        self.daemon.log()
    }
}

/// An nftables table of `inet` family made by someone else (fail2ban's action), deleted on drop.
struct TableGuard {
    table: String,
    netns: Option<String>,
}

impl TableGuard {
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

    fn list(&self) -> String {
        self.command()
            .args(["list", "table", "inet", &self.table])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    fn exists(&self) -> bool {
        self.command().args(["list", "table", "inet", &self.table]).output().is_ok_and(|o| o.status.success())
    }
}

impl Drop for TableGuard {
    fn drop(&mut self) {
        let table = self.table.clone();
        run_quietly(self.command().args(["delete", "table", "inet", &table]));
    }
}

/// `cp -a`, in Rust: files and directories (fail2ban's configuration has no special files).
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap_or_else(|e| panic!("creating {}: {e}", to.display()));
    for entry in fs::read_dir(from).unwrap_or_else(|e| panic!("reading {}: {e}", from.display())).flatten() {
        let target = to.join(entry.file_name());
        let Ok(kind) = entry.file_type() else { continue };
        if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else if let Ok(bytes) = fs::read(entry.path()) {
            fs::write(&target, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", target.display()));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// nftables per-source rules
// ---------------------------------------------------------------------------------------------

/// A new connection's first packet: a SYN without ACK. Retransmitted SYNs match too, unlike `ct
/// state new` alone after the first drop.
const SYN: &str = "tcp flags & (syn | ack) == syn";

/// `ct count over n` per source address before TCP `port`, answered with an RST: the (n+1)th
/// connection from an address already holding `n` is reset at the SYN; the count drops as soon as
/// one closes (docs/facts.md §11). In `netns`, or on our loopback.
pub fn meter_count(netns: Option<&Netns>, port: u16, n: u32) -> Nft {
    Nft::table(
        netns,
        &format!(
            "set held {{ type ipv4_addr; flags dynamic; size 1024; }}\n\
             chain input {{ type filter hook input priority -10; policy accept;\n\
               tcp dport {port} {SYN} add @held {{ ip saddr ct count over {n} }} reject with tcp reset\n}}"
        ),
    )
}

/// `limit rate over per_minute/minute burst burst packets` per source address before TCP `port`,
/// dropping: `burst` SYNs pass, then SYNs (retransmissions too) vanish, one per `60/per_minute` s
/// getting through (docs/facts.md §11).
pub fn meter_rate(netns: Option<&Netns>, port: u16, per_minute: u32, burst: u32) -> Nft {
    Nft::table(
        netns,
        &format!(
            "set paced {{ type ipv4_addr; flags dynamic; timeout 5m; size 1024; }}\n\
             chain input {{ type filter hook input priority -10; policy accept;\n\
               tcp dport {port} {SYN} add @paced {{ ip saddr limit rate over {per_minute}/minute burst {burst} packets }} drop\n}}"
        ),
    )
}

/// How [`block_source`] answers a blocked address's SYN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// Silence.
    Drop,
    /// An RST.
    Reset,
    /// ICMP port unreachable (nft's plain `reject` for TCP... is ICMP; fail2ban's default).
    Icmp,
}

/// Every SYN from `source` to TCP `port` blocked, others untouched: a static firewall rule.
pub fn block_source(netns: Option<&Netns>, port: u16, source: IpAddr, how: Block) -> Nft {
    let verdict = match how {
        Block::Drop => "drop",
        Block::Reset => "reject with tcp reset",
        Block::Icmp => "reject",
    };
    Nft::table(
        netns,
        &format!(
            "chain input {{ type filter hook input priority -10; policy accept;\n\
               ip saddr {source} tcp dport {port} {SYN} {verdict}\n}}"
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------------------------

/// How many ports a front-end is tried on before its start fails.
const PORT_ATTEMPTS: usize = 3;

/// Starts a daemon with `spawn(port)` on a port free a moment ago, and waits until it listens
/// there. A port is free only until someone takes it: when the daemon exits before it listens (it
/// lost the port to another test), it is started again on another, at most [`PORT_ATTEMPTS`]
/// times. Returns the daemon, what `spawn` returned beside it, and the port; or the last log.
fn start_on_a_free_port<T>(
    what: &str,
    mut spawn: impl FnMut(u16) -> (Daemon, T),
) -> Result<(Daemon, T, u16), String> {
    let mut last = String::new();
    for _ in 0..PORT_ATTEMPTS {
        let port = free_port();
        let (mut daemon, extra) = spawn(port);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                last = format!("{what} exited ({status}) before listening on {port}:\n{}", daemon.log());
                break;
            }
            let pid = daemon.child.id();
            let listening = ["tcp", "tcp6"].iter().any(|f| {
                fs::read_to_string(format!("/proc/{pid}/net/{f}"))
                    .is_ok_and(|t| super::table_has_listener(&t, port))
            });
            if listening {
                return Ok((daemon, extra, port));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{what} not listening on {port} after {START_TIMEOUT:?}:\n{}",
                    daemon.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Err(last)
}

// ---------------------------------------------------------------------------------------------
// HAProxy
// ---------------------------------------------------------------------------------------------

/// `haproxy -db -f CONFIG` in TCP mode before `backend`, to start with [`Haproxy::start`].
#[derive(Debug, Clone)]
pub struct Haproxy {
    backend: SocketAddr,
    reject: Vec<IpAddr>,
    maxconn: Option<u32>,
    backlog: Option<u32>,
}

impl Haproxy {
    pub fn new(backend: SocketAddr) -> Haproxy {
        Haproxy { backend, reject: Vec::new(), maxconn: None, backlog: None }
    }

    /// `tcp-request connection reject if { src ADDR }`: the handshake completes, then an RST about
    /// 0.1 ms later, zero bytes (docs/facts.md §11).
    pub fn reject(mut self, source: IpAddr) -> Haproxy {
        self.reject.push(source);
        self
    }

    /// The frontend's `maxconn`: beyond it, connections wait in the kernel's queue, no byte.
    pub fn maxconn(mut self, n: u32) -> Haproxy {
        self.maxconn = Some(n);
        self
    }

    /// The frontend's `backlog` (its listen queue): once full, SYNs go unanswered.
    pub fn backlog(mut self, n: u32) -> Haproxy {
        self.backlog = Some(n);
        self
    }

    pub fn start(self) -> HaproxyGuard {
        let dir = tempfile::Builder::new().prefix("sshprobe-haproxy-").tempdir().expect("a temp dir");
        start_on_a_free_port("haproxy", |port| {
            let addr = SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port);
            let mut front = format!("frontend ssh_in\n  bind {addr}\n  default_backend sshd\n");
            if let Some(n) = self.maxconn {
                front += &format!("  maxconn {n}\n");
            }
            if let Some(n) = self.backlog {
                front += &format!("  backlog {n}\n");
            }
            for ip in &self.reject {
                front += &format!("  tcp-request connection reject if {{ src {ip} }}\n");
            }
            let config = format!(
                "global\n  maxconn 256\n\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 60s\n\
                 timeout server 60s\n\n{front}\nbackend sshd\n  server s1 {}\n",
                self.backend
            );
            let path = dir.path().join("haproxy.cfg");
            fs::write(&path, &config).expect("writing haproxy.cfg");
            let argv = vec![
                bin("haproxy").display().to_string(),
                "-db".into(),
                "-f".into(),
                path.display().to_string(),
            ];
            let daemon = Daemon::spawn(
                &format!("haproxy on {addr}"),
                daemon_command(None, &[], None, argv),
                dir.path().join("log"),
            );
            (daemon, config)
        })
        .map(|(daemon, config, port)| HaproxyGuard {
            daemon,
            addr: SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port),
            config,
            _dir: dir,
        })
        .unwrap_or_else(|log| panic!("haproxy did not start:\n{log}"))
    }
}

/// A running HAProxy. Dropping it stops it and removes its files.
pub struct HaproxyGuard {
    daemon: Daemon,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its configuration.
    pub config: String,
    _dir: tempfile::TempDir,
}

impl HaproxyGuard {
    pub fn log(&self) -> String {
        self.daemon.log()
    }
}

// ---------------------------------------------------------------------------------------------
// sslh
// ---------------------------------------------------------------------------------------------

/// `sslh -f --listen ADDR --ssh BACKEND --timeout T`: a client that waits gets the banner `T` s
/// after connecting; one that sends its ident first is forwarded at once (docs/facts.md §11).
#[derive(Debug, Clone)]
pub struct Sslh {
    backend: SocketAddr,
    timeout_s: u32,
}

impl Sslh {
    pub fn new(backend: SocketAddr) -> Sslh {
        Sslh { backend, timeout_s: 2 }
    }

    pub fn timeout_s(mut self, t: u32) -> Sslh {
        self.timeout_s = t;
        self
    }

    pub fn start(self) -> SslhGuard {
        let dir = tempfile::Builder::new().prefix("sshprobe-sslh-").tempdir().expect("a temp dir");
        start_on_a_free_port("sslh", |port| {
            let addr = SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port);
            let argv = vec![
                bin("sslh").display().to_string(),
                "-f".into(),
                "--listen".into(),
                addr.to_string(),
                "--ssh".into(),
                self.backend.to_string(),
                "--timeout".into(),
                self.timeout_s.to_string(),
                "--pidfile".into(),
                dir.path().join("sslh.pid").display().to_string(),
            ];
            let daemon = Daemon::spawn(
                &format!("sslh on {addr}"),
                daemon_command(None, &[], None, argv),
                dir.path().join("log"),
            );
            (daemon, ())
        })
        .map(|(daemon, (), port)| SslhGuard {
            daemon,
            addr: SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port),
            _dir: dir,
        })
        .unwrap_or_else(|log| panic!("sslh did not start:\n{log}"))
    }
}

/// A running sslh. Dropping it stops it and its per-connection processes (which outlive the main
/// one: docs/facts.md §11), and removes its files.
pub struct SslhGuard {
    daemon: Daemon,
    /// Where it listens.
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl SslhGuard {
    pub fn log(&self) -> String {
        self.daemon.log()
    }
}
