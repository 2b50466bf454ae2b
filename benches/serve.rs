//! `sshprobe serve` under load: scrapes per second at 64 concurrent scrapes, the exporter's CPU per
//! scrape, and its RSS over 100,000 scrapes (it should stay flat).
//!
//! - 64 banner servers written for the bench (tokio, one port each on 127.0.0.1): each connection
//!   gets an OpenSSH-like line and is closed, like the lab's `ok` endpoint.
//! - The exporter is the real binary (`sshprobe serve`, built with the bench profile), a child
//!   process: its CPU time and RSS come from `/proc/PID/stat` and `/proc/PID/status`, so the client's
//!   and the servers' work is not counted.
//! - 64 clients, each on its own keep-alive HTTP connection, each scraping its own server: with
//!   `--min-interval 0` no two scrapes share a key, so **every scrape is a real probe** (one TCP
//!   connection to a banner server). A second run with the default `--min-interval 2s` has the
//!   same 64 clients scrape the same 64 targets: nearly every scrape is then answered from the
//!   cache, which is what a Prometheus scraping faster than the interval costs.
//!
//! Only loopback; every loop is bounded in scrapes and in time. Settings (environment):
//! `SSHPROBE_BENCH_SCRAPES` scrapes per run (default 100000).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const BANNER: &[u8] = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n";
const CONCURRENCY: usize = 64;
/// No run may take longer than this, whatever happens.
const RUN_LIMIT: Duration = Duration::from_secs(300);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A child's CPU time (user + system) from `/proc/PID/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok())).sum();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / per_second)
}

/// A process's resident set in KiB, from `/proc/PID/status`.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The exporter as a child; killed when dropped.
struct Exporter {
    child: Child,
    addr: SocketAddr,
}

impl Exporter {
    fn start(args: &[&str]) -> Exporter {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_sshprobe"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting sshprobe serve");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        std::io::BufReader::new(stdout).read_line(&mut line).expect("reading the listening line");
        let addr = line
            .trim()
            .strip_prefix("sshprobe serve: listening on http://")
            .and_then(|a| a.trim_end_matches('/').parse().ok())
            .unwrap_or_else(|| panic!("sshprobe serve said {line:?}"));
        Exporter { child, addr }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the banner servers; their tasks live as long as the runtime.
async fn banner_servers(n: usize) -> Vec<SocketAddr> {
    let mut addrs = Vec::with_capacity(n);
    for _ in 0..n {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding a banner server");
        addrs.push(listener.local_addr().expect("its address"));
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else { continue };
                tokio::spawn(async move {
                    let _ = stream.write_all(BANNER).await;
                    // Read the prober's ident (or its close) before closing, as sshd does.
                    let mut buf = [0u8; 256];
                    let _ = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await;
                });
            }
        });
    }
    addrs
}

/// One keep-alive HTTP/1.1 client scraping `target` until `remaining` runs out: returns (scrapes,
/// answers that were not 200 with a banner).
async fn client(
    exporter: SocketAddr,
    target: SocketAddr,
    remaining: Arc<AtomicU64>,
    deadline: Instant,
) -> (u64, u64) {
    let stream = TcpStream::connect(exporter).await.expect("connecting to the exporter");
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let request = format!("GET /probe?target={target} HTTP/1.1\r\nHost: bench\r\n\r\n");
    let (mut done, mut bad) = (0, 0);
    let mut line = String::new();
    let mut body = Vec::new();
    while Instant::now() < deadline
        && remaining.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok()
    {
        write.write_all(request.as_bytes()).await.expect("sending a scrape");
        let mut status_ok = false;
        let mut length = 0usize;
        let mut first = true;
        loop {
            line.clear();
            if read.read_line(&mut line).await.expect("reading the answer") == 0 {
                panic!("the exporter closed the connection");
            }
            if first {
                status_ok = line.starts_with("HTTP/1.1 200");
                first = false;
            } else if line == "\r\n" {
                break;
            } else if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        body.resize(length, 0);
        read.read_exact(&mut body).await.expect("reading the body");
        const BANNER_ONE: &[u8] = b"sshprobe_outcome{outcome=\"banner\"} 1\n";
        let banner = body.windows(BANNER_ONE.len()).any(|w| w == BANNER_ONE);
        done += 1;
        if !(status_ok && banner) {
            bad += 1;
        }
    }
    (done, bad)
}

struct RunResult {
    scrapes: u64,
    bad: u64,
    elapsed: Duration,
    cpu: Duration,
    rss_start: u64,
    rss_marks: Vec<(u64, u64)>,
}

/// Scrapes through `exporter` with [`CONCURRENCY`] clients, one target each, `total` in all.
async fn run(exporter: &Exporter, targets: &[SocketAddr], total: u64) -> RunResult {
    let pid = exporter.child.id();
    // Warm-up: every client's connection and target once.
    let warm = Arc::new(AtomicU64::new(CONCURRENCY as u64 * 4));
    let deadline = Instant::now() + RUN_LIMIT;
    let tasks: Vec<_> =
        targets.iter().map(|&t| tokio::spawn(client(exporter.addr, t, warm.clone(), deadline))).collect();
    for t in tasks {
        t.await.expect("a warm-up client");
    }
    let rss_start = rss_kib(pid);
    let cpu_start = cpu_time(pid);
    let remaining = Arc::new(AtomicU64::new(total));
    let started = Instant::now();
    let deadline = started + RUN_LIMIT;
    let tasks: Vec<_> = targets
        .iter()
        .map(|&t| tokio::spawn(client(exporter.addr, t, remaining.clone(), deadline)))
        .collect();
    // RSS at every 10% of the run.
    let mut rss_marks = Vec::new();
    let mut next_mark = total / 10;
    while remaining.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        let done = total - remaining.load(Ordering::Relaxed);
        if done >= next_mark {
            rss_marks.push((done, rss_kib(pid)));
            next_mark += total / 10;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut scrapes, mut bad) = (0, 0);
    for t in tasks {
        let (d, b) = t.await.expect("a client");
        scrapes += d;
        bad += b;
    }
    let elapsed = started.elapsed();
    let cpu = cpu_time(pid).saturating_sub(cpu_start);
    rss_marks.push((scrapes, rss_kib(pid)));
    RunResult { scrapes, bad, elapsed, cpu, rss_start, rss_marks }
}

fn report(name: &str, r: &RunResult) {
    println!("{name}");
    println!(
        "  {} scrapes in {:.2} s: {:.0} scrapes/s; exporter CPU {:.2} s = {:.1} µs per scrape; {} not 200+banner",
        r.scrapes,
        r.elapsed.as_secs_f64(),
        r.scrapes as f64 / r.elapsed.as_secs_f64(),
        r.cpu.as_secs_f64(),
        r.cpu.as_secs_f64() * 1e6 / r.scrapes.max(1) as f64,
        r.bad
    );
    let marks: Vec<String> =
        r.rss_marks.iter().map(|(n, kib)| format!("{}k: {:.1}", n / 1000, *kib as f64 / 1024.0)).collect();
    println!(
        "  exporter RSS (MiB) after warm-up {:.1}; by scrapes done: {}",
        r.rss_start as f64 / 1024.0,
        marks.join(", ")
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this with no arguments: keep it short.
    let benching = std::env::args().any(|a| a == "--bench");
    let total: u64 = env_or("SSHPROBE_BENCH_SCRAPES", if benching { 100_000 } else { 2_000 });
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async {
        if !benching {
            println!("(cargo test: a {total}-scrape smoke run of the test build; figures come from cargo bench --bench serve)");
        }
        let targets = banner_servers(CONCURRENCY).await;
        println!(
            "sshprobe serve, {CONCURRENCY} concurrent keep-alive clients, one loopback banner server each \
             (exporter measured alone, from /proc)"
        );
        let exporter = Exporter::start(&["--min-interval", "0s", "--max-in-flight", "128"]);
        let r = run(&exporter, &targets, total).await;
        report("--min-interval 0 (every scrape is a probe: one TCP connection and ident exchange)", &r);
        drop(exporter);
        let exporter = Exporter::start(&[]);
        let r = run(&exporter, &targets, total).await;
        report("--min-interval 2s, default (the same 64 targets: scrapes answered from the cache)", &r);
    });
}
