//! Fixtures for `sshprobe serve`: the exporter as a process, a tiny HTTP client, and a real
//! Prometheus (Debian's `prometheus` package) scraping it. Every guard kills and reaps its process,
//! and removes its files, when dropped (also when the test panics).

use super::{find_bin, free_port, need};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// [`need`] for tests that need Prometheus: with `CI=true` as root, a missing binary fails the
/// test instead of skipping it (`.ci/run` installs the package).
pub fn need_prometheus(test: &str, bins: &[&str]) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if root && std::env::var("CI").is_ok_and(|v| v == "true") {
        let missing: Vec<&str> = bins.iter().copied().filter(|b| find_bin(b).is_none()).collect();
        assert!(
            missing.is_empty(),
            "{test}: CI=true as root, but {missing:?} is not installed (.ci/run installs it)"
        );
    }
    need(test, bins)
}

/// A running `sshprobe serve`. Dropped: killed and reaped.
pub struct Exporter {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    stderr: tempfile::NamedTempFile,
}

impl Exporter {
    /// Starts `sshprobe serve --listen 127.0.0.1:0 ARGS...` and reads its address from the line it
    /// prints on stdout. Panics with its stderr when it does not start within 20 s.
    pub fn start(args: &[&str]) -> Exporter {
        Exporter::try_start(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Exporter::start`], returning what went wrong instead of panicking.
    pub fn try_start(args: &[&str]) -> Result<Exporter, String> {
        let stderr = tempfile::NamedTempFile::new().expect("a temp file for the exporter's stderr");
        let bin = assert_cmd::cargo::cargo_bin("sshprobe");
        let mut child = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr.reopen().expect("reopening the temp file"))
            .spawn()
            .expect("starting sshprobe serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        let addr = line
            .trim()
            .strip_prefix("sshprobe serve: listening on http://")
            .and_then(|rest| rest.trim_end_matches('/').parse().ok());
        let mut exporter = Exporter { child, addr: "127.0.0.1:9".parse().unwrap(), stderr };
        match addr {
            Some(a) => exporter.addr = a,
            None => {
                return Err(format!(
                    "sshprobe serve did not start: stdout {line:?}, stderr:\n{}",
                    exporter.log()
                ))
            }
        }
        Ok(exporter)
    }

    /// What it wrote on stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap_or_default()
    }

    /// `GET path` from it.
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path, &[])
    }

    /// Sends SIGTERM and waits (at most 15 s) for it to exit: its exit status and stderr.
    pub fn terminate(mut self) -> (ExitStatus, String) {
        // SAFETY: kill with a pid we own and a valid signal number.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (status, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "sshprobe serve still running 15 s after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `request` (whole, as bytes) to `addr` and reads the answer to its end: the status code
/// (0 when the connection closed without one) and the body.
pub fn http_raw(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connecting over HTTP");
    stream.set_read_timeout(Some(Duration::from_secs(60))).expect("a read timeout");
    stream.write_all(request).expect("sending the request");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// `GET path_and_query` with extra headers, on a connection of its own.
pub fn http_get(addr: SocketAddr, path_and_query: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut request = format!("GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request += &format!("{name}: {value}\r\n");
    }
    request += "\r\n";
    http_raw(addr, request.as_bytes())
}

/// The value of the sample `name{labels}` (labels as written, in order) in a text exposition.
pub fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// The scrape config the README shows: Prometheus scrapes `/probe` on the exporter, once per
/// target, the target passed as `?target=` and kept as the `instance` label.
pub fn scrape_config(exporter: SocketAddr, targets: &[SocketAddr], interval: &str) -> String {
    let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    format!(
        "global:\n  scrape_interval: {interval}\n  scrape_timeout: {interval}\n\
         scrape_configs:\n\
         \x20 - job_name: sshprobe\n\
         \x20   metrics_path: /probe\n\
         \x20   params:\n\
         \x20     module: [default]\n\
         \x20   static_configs:\n\
         \x20     - targets: [{}]\n\
         \x20   relabel_configs:\n\
         \x20     - source_labels: [__address__]\n\
         \x20       target_label: __param_target\n\
         \x20     - source_labels: [__param_target]\n\
         \x20       target_label: instance\n\
         \x20     - target_label: __address__\n\
         \x20       replacement: {exporter}\n\
         \x20 - job_name: sshprobe_exporter\n\
         \x20   static_configs:\n\
         \x20     - targets: ['{exporter}']\n",
        targets.join(", ")
    )
}

/// A real Prometheus on a free loopback port, with its own config and storage in a temp dir.
/// Dropped: killed and reaped, its files removed.
pub struct Prometheus {
    child: Child,
    /// Where its HTTP API listens.
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts `/usr/bin/prometheus` with `config` (YAML) and waits (at most 60 s) until it is ready.
    pub fn start(config: &str) -> Prometheus {
        let dir = tempfile::Builder::new().prefix("sshprobe-prometheus-").tempdir().expect("a temp dir");
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("writing prometheus.yml");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("a log file");
        let bin = find_bin("prometheus").expect("prometheus is installed");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning a descriptor"))
            .stderr(log)
            .spawn()
            .expect("starting prometheus");
        let p = Prometheus { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_get_quiet(addr, "/-/ready") != 200 {
            assert!(Instant::now() < deadline, "prometheus not ready after 60 s:\n{}", p.log());
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }

    /// Its log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Its data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// An instant query through the HTTP API: the `data.result` array.
    pub fn query(&self, expr: &str) -> serde_json::Value {
        let encoded: String = expr
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect();
        let (status, body) = http_get(self.addr, &format!("/api/v1/query?query={encoded}"), &[]);
        assert_eq!(status, 200, "query {expr}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("the API answers JSON");
        v["data"]["result"].clone()
    }
}

/// The status of `GET path`, 0 when nothing answers.
fn http_get_quiet(addr: SocketAddr, path: &str) -> u16 {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else { return 0 };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return 0;
    }
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    String::from_utf8_lossy(&raw).split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// blackbox_exporter's `ssh_banner` module as its README gives it: expect `^SSH-2.0-`, send an ident.
pub const BLACKBOX_SSH_BANNER: &str = "modules:\n  ssh_banner:\n    prober: tcp\n    timeout: 10s\n    tcp:\n      query_response:\n        - expect: \"^SSH-2.0-\"\n        - send: \"SSH-2.0-blackbox-ssh-check\"\n";

/// A real blackbox_exporter (Debian's `prometheus-blackbox-exporter`) on a free loopback port,
/// with [`BLACKBOX_SSH_BANNER`]. Dropped: killed and reaped, its files removed.
pub struct Blackbox {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Blackbox {
    /// Starts it and waits (at most 30 s) until it answers `/-/healthy`.
    pub fn start() -> Blackbox {
        let dir = tempfile::Builder::new().prefix("sshprobe-blackbox-").tempdir().expect("a temp dir");
        let config_path = dir.path().join("blackbox.yml");
        std::fs::write(&config_path, BLACKBOX_SSH_BANNER).expect("writing blackbox.yml");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = std::fs::File::create(dir.path().join("blackbox.log")).expect("a log file");
        let bin = find_bin("prometheus-blackbox-exporter").expect("blackbox_exporter is installed");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning a descriptor"))
            .stderr(log)
            .spawn()
            .expect("starting prometheus-blackbox-exporter");
        let b = Blackbox { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_get_quiet(addr, "/-/healthy") != 200 {
            assert!(Instant::now() < deadline, "blackbox_exporter not healthy after 30 s:\n{}", b.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        b
    }

    /// Its log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("blackbox.log")).unwrap_or_default()
    }

    /// Probes `target` with the `ssh_banner` module: the metrics text.
    pub fn probe(&self, target: SocketAddr) -> String {
        let (status, body) = http_get(self.addr, &format!("/probe?module=ssh_banner&target={target}"), &[]);
        assert_eq!(status, 200, "{body}\n{}", self.log());
        body
    }
}

impl Drop for Blackbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
