//! The target reader alone, without probing: does a huge target list stream?
//!
//! - `127.0.0.0/8` (16 777 214 addresses, shuffled as a large network is by default): time to the first
//!   target, targets per second, and this process's RSS after 1, 4 and 16 million targets (flat means
//!   nothing is collected up front);
//! - a file of one million lines: the same for `-i FILE`.
//!
//! No traffic at all. Settings: `SSHPROBE_BENCH_NET` (default `127.0.0.0/8`), `SSHPROBE_BENCH_LINES`
//! (default 1000000).

use sshprobe::scan::{spawn_target_reader, TargetReaderOptions, TargetSource};
use std::io::Write;
use std::time::{Duration, Instant};

/// `VmRSS` and `VmHWM` of this process, in KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Drains a reader, reporting time to first target, the rate, and RSS at the checkpoints.
fn drain(name: &str, sources: Vec<TargetSource>, checkpoints: &[u64]) {
    let (rss0, _) = rss_kib();
    let started = Instant::now();
    let mut targets = spawn_target_reader(sources, TargetReaderOptions::new(22));
    let mut first = None;
    let mut n = 0u64;
    let mut errors = 0u64;
    let mut marks = checkpoints.iter().peekable();
    let limit = Duration::from_secs(120);
    while let Some(item) = targets.blocking_recv() {
        if first.is_none() {
            first = Some(started.elapsed());
        }
        n += 1;
        errors += u64::from(item.is_err());
        if marks.peek().is_some_and(|&&m| m == n) {
            marks.next();
            let (rss, _) = rss_kib();
            println!(
                "targets: {name}: after {:>10} targets: RSS {:.1} MiB ({:+.1} MiB since the start), {:.1} s",
                n,
                mib(rss),
                mib(rss) - mib(rss0),
                started.elapsed().as_secs_f64()
            );
        }
        if started.elapsed() > limit {
            println!("targets: {name}: stopped after {limit:?}");
            break;
        }
    }
    let elapsed = started.elapsed();
    let (rss, hwm) = rss_kib();
    println!(
        "targets: {name}: {n} targets ({errors} errors) in {:.2} s = {:.2} M/s; first after {:.2} ms; \
         RSS at the end {:.1} MiB, peak {:.1} MiB",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64() / 1e6,
        first.map_or(f64::NAN, |f| f.as_secs_f64() * 1e3),
        mib(rss),
        mib(hwm)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    if args.first().is_some_and(|f| !"targets".contains(f.as_str())) {
        return;
    }
    if !std::env::args().any(|a| a == "--bench") {
        println!("targets: run with `cargo bench --bench targets`");
        return;
    }
    let net = std::env::var("SSHPROBE_BENCH_NET").unwrap_or_else(|_| "127.0.0.0/8".into());
    drain(&net, vec![TargetSource::Arg(net.clone())], &[1_000_000, 4_000_000, 16_000_000]);

    let lines: u64 =
        std::env::var("SSHPROBE_BENCH_LINES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("targets.txt");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("creating the target file"));
        for i in 0..lines {
            writeln!(f, "127.{}.{}.{}:22", (i >> 16) & 255, (i >> 8) & 255, i & 255)
                .expect("writing targets");
        }
    }
    drain(&format!("file of {lines} lines"), vec![TargetSource::File(path)], &[lines / 2]);
}
