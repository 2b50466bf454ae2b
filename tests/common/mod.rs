//! Real servers and hosts for integration tests, started by the tests and always stopped.
//!
//! - [`Sshd`]: Debian's OpenSSH sshd with its own config, host key and free loopback port; a private
//!   `/etc/hosts.deny` through `unshare --mount` (the system file is never touched); inside a network
//!   namespace; or OpenSSH 10 from a Debian 13 root ([`openssh10_root`]).
//! - [`dropbear`]: dropbear on a free loopback port.
//! - [`Netns`]: a network namespace joined to this one by a veth pair (198.18.0.0/15, the RFC 2544
//!   test range), and [`Nft`]: an nftables table in it. Both are removed when dropped.
//!
//! Every guard cleans up in `Drop`, so a failing test leaves nothing behind. Readiness is read from
//! `/proc/net/tcp` rather than by connecting: a connection would cost a MaxStartups slot (and, on
//! OpenSSH 9.8+, a penalty second).
#![allow(dead_code)] // each test file uses its own part

use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// True when running as root; otherwise says loudly that `test` is skipped.
pub fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    eprintln!("SKIPPED {test}: needs root (unshare, nftables, network namespaces, sshd); CI runs as root");
    false
}

/// True when every program exists; otherwise says loudly that `test` is skipped and why.
pub fn have(test: &str, programs: &[&str]) -> bool {
    let missing: Vec<&&str> = programs.iter().filter(|p| which(p).is_none()).collect();
    if missing.is_empty() {
        return true;
    }
    eprintln!("SKIPPED {test}: missing {missing:?} (bash .ci/run installs them)");
    false
}

fn which(program: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"].iter().map(|d| Path::new(d).join(program)).find(|p| p.exists())
}

/// A free TCP port on 127.0.0.1 (free when asked; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// A unique name part for namespaces and tables used by concurrently running tests.
fn unique() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{}x{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

/// A running server: killed with its whole process group when dropped.
pub struct Server {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    /// What the server wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pgid = self.child.id() as i32;
        // SAFETY: signalling a process group we created.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Pre-auth children of sshd are in the group too.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// Starts `cmd` in its own process group with stderr to `log`, and waits until `port` listens.
fn spawn(
    mut cmd: Command,
    port: u16,
    netns: Option<&str>,
    dir: tempfile::TempDir,
    log: PathBuf,
    addr: SocketAddr,
) -> Server {
    let err = std::fs::File::create(&log).expect("creating the server log");
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(err).process_group(0);
    let child = cmd.spawn().expect("starting the server");
    let server = Server { child, addr, log, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(15);
    while !listening(port, netns) {
        assert!(
            Instant::now() < deadline,
            "the server did not listen on port {port} within 15 s; its log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

/// Whether something listens on `port` (IPv4 or IPv6), in `netns` or here.
fn listening(port: u16, netns: Option<&str>) -> bool {
    let needle = format!(":{port:04X} ");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        let text = match netns {
            None => std::fs::read_to_string(table).unwrap_or_default(),
            Some(ns) => Command::new("ip")
                .args(["netns", "exec", ns, "cat", table])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default(),
        };
        // Column 2 is local_address:port, column 4 the state (0A = LISTEN).
        text.lines().skip(1).any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.len() > 3 && format!("{} ", &cols[1][cols[1].len() - 5..]) == needle && cols[3] == "0A"
        })
    })
}

/// An OpenSSH sshd to start.
pub struct Sshd {
    options: Vec<String>,
    hosts_deny: Option<String>,
    listen: IpAddr,
    netns: Option<String>,
    root: Option<PathBuf>,
}

impl Sshd {
    /// Debian's sshd on 127.0.0.1 and a free port.
    pub fn new() -> Sshd {
        Sshd {
            options: Vec::new(),
            hosts_deny: None,
            listen: IpAddr::from([127, 0, 0, 1]),
            netns: None,
            root: None,
        }
    }

    /// An extra sshd_config line, e.g. `option("MaxStartups 1:100:1")`.
    pub fn option(mut self, line: &str) -> Sshd {
        self.options.push(line.to_string());
        self
    }

    /// A private /etc/hosts.deny with these lines (and an empty private /etc/hosts.allow).
    pub fn hosts_deny(mut self, text: &str) -> Sshd {
        self.hosts_deny = Some(text.to_string());
        self
    }

    /// Listen on `ip` inside network namespace `netns`.
    pub fn in_netns(mut self, netns: &Netns) -> Sshd {
        self.netns = Some(netns.name.clone());
        self.listen = netns.inner_ip;
        self
    }

    /// Run the sshd of a Debian root (see [`openssh10_root`]) instead of the system's.
    pub fn root(mut self, root: &Path) -> Sshd {
        self.root = Some(root.to_path_buf());
        self
    }

    /// Starts it and waits until it listens.
    pub fn start(self) -> Server {
        let port = free_port();
        let dir = tempfile::Builder::new().prefix("sshprobe-sshd-").tempdir().expect("a temp dir");
        // Inside a root, config and key must be reachable by the chrooted sshd.
        let (files, seen_as) = match &self.root {
            Some(root) => {
                let inside = PathBuf::from("/tmp").join(dir.path().file_name().expect("a temp dir name"));
                std::fs::create_dir_all(root.join(inside.strip_prefix("/").expect("absolute")))
                    .expect("dir in root");
                (root.join(inside.strip_prefix("/").expect("absolute")), inside)
            }
            None => (dir.path().to_path_buf(), dir.path().to_path_buf()),
        };
        let key = files.join("host_ed25519");
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", ""])
            .arg("-f")
            .arg(&key)
            .status()
            .expect("running ssh-keygen");
        assert!(status.success(), "ssh-keygen failed");
        let mut config = format!(
            "Port {port}\nListenAddress {}\nHostKey {}\nPidFile {}\nUsePAM no\nLogLevel DEBUG1\n",
            self.listen,
            seen_as.join("host_ed25519").display(),
            seen_as.join("sshd.pid").display()
        );
        for line in &self.options {
            config.push_str(line);
            config.push('\n');
        }
        std::fs::write(files.join("sshd_config"), config).expect("writing sshd_config");
        let config_path = seen_as.join("sshd_config");
        let run_dir = self.root.as_ref().map_or(PathBuf::from("/run/sshd"), |r| r.join("run/sshd"));
        std::fs::create_dir_all(&run_dir).expect("creating the privilege separation dir");

        // One shell line: private mounts first (they vanish with the process), then exec sshd.
        let mut script = String::new();
        if let Some(deny) = &self.hosts_deny {
            std::fs::write(dir.path().join("hosts.deny"), deny).expect("writing hosts.deny");
            std::fs::write(dir.path().join("hosts.allow"), "").expect("writing hosts.allow");
            let etc = self.root.as_ref().map_or(PathBuf::from("/etc"), |r| r.join("etc"));
            script += &format!(
                "mount --bind {d}/hosts.deny {e}/hosts.deny && mount --bind {d}/hosts.allow {e}/hosts.allow && ",
                d = dir.path().display(),
                e = etc.display()
            );
        }
        match &self.root {
            Some(root) => {
                script += &format!(
                    "mount --bind /dev {r}/dev && mount -t proc proc {r}/proc && exec chroot {r} /usr/sbin/sshd -D -e -f {c}",
                    r = root.display(),
                    c = config_path.display()
                );
            }
            None => script += &format!("exec /usr/sbin/sshd -D -e -f {}", config_path.display()),
        }
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]);
                c.arg("unshare");
                c
            }
            None => Command::new("unshare"),
        };
        cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script]);
        let log = dir.path().join("sshd.log");
        spawn(cmd, port, self.netns.as_deref(), dir, log, SocketAddr::new(self.listen, port))
    }
}

/// Dropbear on 127.0.0.1 and a free port.
pub fn dropbear() -> Server {
    let port = free_port();
    let dir = tempfile::Builder::new().prefix("sshprobe-dropbear-").tempdir().expect("a temp dir");
    let key = dir.path().join("host_ed25519");
    let out = Command::new("dropbearkey")
        .args(["-t", "ed25519", "-f"])
        .arg(&key)
        .output()
        .expect("running dropbearkey");
    assert!(out.status.success(), "dropbearkey failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut cmd = Command::new("dropbear");
    cmd.args(["-F", "-E", "-p", &format!("127.0.0.1:{port}"), "-r"]).arg(&key);
    let log = dir.path().join("dropbear.log");
    spawn(cmd, port, None, dir, log, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// A network namespace joined to this one by a veth pair; removed when dropped.
pub struct Netns {
    /// Its name.
    pub name: String,
    /// Our end's address.
    pub outer_ip: IpAddr,
    /// Its end's address.
    pub inner_ip: IpAddr,
}

impl Netns {
    /// Creates `sp<unique>` with `198.18.N.1/30` here and `198.18.N.2/30` there.
    pub fn new() -> Netns {
        static SUBNET: AtomicU32 = AtomicU32::new(0);
        let id = unique();
        // Distinct per process and per call, so parallel tests and runs do not collide.
        let n = ((std::process::id() % 60) * 4 + SUBNET.fetch_add(1, Ordering::SeqCst) % 4) as u8;
        let ns = Netns {
            name: format!("sp{id}"),
            outer_ip: IpAddr::from([198, 18, n, 1]),
            inner_ip: IpAddr::from([198, 18, n, 2]),
        };
        let (outer, inner) = (format!("vo{id}"), format!("vi{id}"));
        let steps: Vec<Vec<String>> = vec![
            vec!["netns".into(), "add".into(), ns.name.clone()],
            vec![
                "link".into(),
                "add".into(),
                outer.clone(),
                "type".into(),
                "veth".into(),
                "peer".into(),
                "name".into(),
                inner.clone(),
            ],
            vec!["link".into(), "set".into(), inner.clone(), "netns".into(), ns.name.clone()],
            vec!["addr".into(), "add".into(), format!("{}/30", ns.outer_ip), "dev".into(), outer.clone()],
            vec!["link".into(), "set".into(), outer.clone(), "up".into()],
            vec![
                "-n".into(),
                ns.name.clone(),
                "addr".into(),
                "add".into(),
                format!("{}/30", ns.inner_ip),
                "dev".into(),
                inner.clone(),
            ],
            vec!["-n".into(), ns.name.clone(), "link".into(), "set".into(), inner, "up".into()],
            vec!["-n".into(), ns.name.clone(), "link".into(), "set".into(), "lo".into(), "up".into()],
        ];
        for step in steps {
            let out = Command::new("ip").args(&step).output().expect("running ip");
            assert!(out.status.success(), "ip {step:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair with it.
        let _ = Command::new("ip").args(["netns", "delete", &self.name]).status();
    }
}

/// An nftables table, in a namespace or here; deleted when dropped.
pub struct Nft {
    table: String,
    netns: Option<String>,
}

impl Nft {
    /// Creates `table inet <unique>` with one chain `hook` (e.g. `input`) holding `rules`.
    pub fn new(netns: Option<&Netns>, hook: &str, rules: &[&str]) -> Nft {
        let table = format!("sshprobe_test_{}", unique());
        let mut script =
            format!("table inet {table} {{\n chain c {{\n  type filter hook {hook} priority 0;\n");
        for r in rules {
            script += &format!("  {r}\n");
        }
        script += " }\n}\n";
        let nft = Nft { table, netns: netns.map(|n| n.name.clone()) };
        let out = nft.command(&["-f", "-"], Some(&script));
        assert!(out.status.success(), "nft -f: {}\n{script}", String::from_utf8_lossy(&out.stderr));
        nft
    }

    fn command(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "nft"]);
                c
            }
            None => Command::new("nft"),
        };
        cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("running nft");
        if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
            use std::io::Write;
            input.write_all(text.as_bytes()).expect("writing to nft");
        }
        child.wait_with_output().expect("waiting for nft")
    }
}

impl Drop for Nft {
    fn drop(&mut self) {
        let table = self.table.clone();
        let _ = self.command(&["delete", "table", "inet", &table], None);
    }
}

/// A Debian 13 root with OpenSSH 10 for [`Sshd::root`], built once and cached outside the repo
/// (`SSHPROBE_TRIXIE_ROOT`, default `/var/cache/sshprobe-tests/trixie`). `None`, said loudly, when it
/// cannot be built here (no debootstrap, no access to Debian's mirror).
pub fn openssh10_root(test: &str) -> Option<PathBuf> {
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _serial = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    let root = std::env::var_os("SSHPROBE_TRIXIE_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/sshprobe-tests/trixie"));
    if root.join("usr/sbin/sshd").exists() {
        return Some(root);
    }
    if !have(test, &["debootstrap", "chroot"]) {
        return None;
    }
    // Another test process may be building it: a lock file serialises builders across processes.
    let parent = root.parent().unwrap_or(Path::new("/var/cache"));
    std::fs::create_dir_all(parent).ok()?;
    let lock = std::fs::File::create(parent.join(".trixie.lock")).ok()?;
    lock.lock().ok()?;
    if root.join("usr/sbin/sshd").exists() {
        return Some(root);
    }
    let building = parent.join(format!("trixie.building.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    eprintln!(
        "{test}: building a Debian 13 root with OpenSSH 10 in {} (once; about a minute)",
        root.display()
    );
    let ok = Command::new("debootstrap")
        .args(["--variant=minbase", "trixie"])
        .arg(&building)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
        && Command::new("chroot")
            .arg(&building)
            .args(["apt-get", "install", "-y", "-qq", "openssh-server"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !ok || std::fs::rename(&building, &root).is_err() {
        let _ = std::fs::remove_dir_all(&building);
        eprintln!("SKIPPED {test}: cannot build the OpenSSH 10 root (debootstrap trixie failed: no mirror?)");
        return None;
    }
    Some(root)
}

/// Opens a connection from `source` (or the kernel's choice) and waits for the server's banner, so
/// the server counts it before the test goes on. Panics when no banner comes.
pub fn hold(addr: SocketAddr, source: Option<IpAddr>) -> TcpStream {
    let socket = socket2::Socket::new(
        if addr.is_ipv4() { socket2::Domain::IPV4 } else { socket2::Domain::IPV6 },
        socket2::Type::STREAM,
        None,
    )
    .expect("a socket");
    if let Some(ip) = source {
        socket.bind(&SocketAddr::new(ip, 0).into()).expect("binding the source");
    }
    socket.connect_timeout(&addr.into(), Duration::from_secs(5)).expect("connecting to hold");
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("a read timeout");
    let mut buf = [0u8; 256];
    let n = stream.read(&mut buf).expect("reading the banner of a held connection");
    assert!(buf[..n].starts_with(b"SSH-"), "no banner on a held connection: {:?}", &buf[..n]);
    stream
}

/// The sshprobe binary.
pub fn sshprobe() -> assert_cmd::Command {
    assert_cmd::Command::cargo_bin("sshprobe").expect("the sshprobe binary")
}

/// Runs sshprobe with `args` and parses each stdout line as JSON.
pub fn jsonl(args: &[&str]) -> (Vec<serde_json::Value>, std::process::Output) {
    let out = sshprobe().args(args).output().expect("running sshprobe");
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    (lines, out)
}
