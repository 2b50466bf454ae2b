//! Micro benchmarks of the per-probe work that is not I/O: the ident scanner, the classifier and the
//! JSONL report line.
//!
//! `ident::scan` is reported in bytes/s over what servers really send (OpenSSH and dropbear banners,
//! TCP-wrappers pre-banner text) and over hostile input (8 KiB without a line end, 1024 short lines, and
//! a server dribbling its bytes so the engine re-scans every prefix). Run with `cargo bench --bench
//! micro`; figures, not assertions (see docs/performance.md).

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sshprobe::evidence::{Connect, End, Observation, ProbeOrder, Timings};
use sshprobe::ident;
use sshprobe::outcome::classify;
use sshprobe::report::probe::ProbeReporter;
use sshprobe::report::Format;
use sshprobe::scan::ProbeResult;
use std::time::Duration;

const OPENSSH: &[u8] = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n";

fn dropbear() -> Vec<u8> {
    // The ident, then the start of the binary KEXINIT dropbear sends without waiting.
    let mut v = b"SSH-2.0-dropbear_2022.83\r\n".to_vec();
    v.extend_from_slice(&[0, 0, 1, 0x14, 0x0a, 0x14]);
    v.extend((0..200u32).map(|i| (i * 37 % 251) as u8));
    v
}

fn prebanner() -> Vec<u8> {
    let mut v = Vec::new();
    for _ in 0..6 {
        v.extend_from_slice(b"*** Authorized use only. Activity may be monitored and reported. ***\r\n");
    }
    v.extend_from_slice(OPENSSH);
    v
}

/// The scanner's hostile inputs: each is as expensive as an input that still gets a verdict can be.
fn hostile() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        // One pre-banner line just under the 8192-byte limit, no line end: NeedMore after 8 KiB.
        ("8k_no_newline", vec![b'A'; ident::MAX_PREBANNER_LINE - 1]),
        // The most pre-banner lines allowed, all short: NeedMore after 1024 lines.
        ("1024_short_lines", b"x\r\n".repeat(ident::MAX_PREBANNER_LINES)),
    ]
}

fn bench_scan(c: &mut Criterion) {
    let mut g = c.benchmark_group("ident_scan");
    let inputs: Vec<(&str, Vec<u8>)> = [("openssh", OPENSSH.to_vec()), ("dropbear_kexinit", dropbear())]
        .into_iter()
        .chain([("prebanner_6_lines", prebanner())])
        .chain(hostile())
        .collect();
    for (name, buf) in &inputs {
        g.throughput(Throughput::Bytes(buf.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), buf, |b, buf| {
            b.iter(|| ident::scan(black_box(buf)))
        });
    }
    // A server dribbling one line end at a time: the connect engine re-scans the whole buffer after
    // every read that brings a line end, so the work is the sum over every prefix ending in LF.
    // Throughput counts every byte scanned, so this compares with the single-pass rows above.
    for (name, buf) in
        [("dribbled_openssh", OPENSSH.to_vec()), ("dribbled_1024_lines", hostile()[1].1.clone())]
    {
        let ends: Vec<usize> =
            buf.iter().enumerate().filter(|(_, &b)| b == b'\n').map(|(i, _)| i + 1).collect();
        let scanned: usize = ends.iter().sum();
        g.throughput(Throughput::Bytes(scanned as u64));
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                for &end in &ends {
                    black_box(ident::scan(black_box(&buf[..end])));
                }
            })
        });
    }
    g.finish();
}

fn observation(connect: Connect, end: Option<End>, received: &[u8]) -> Observation {
    Observation {
        remote: "127.0.0.1:22".parse().expect("a literal address"),
        local: Some("127.0.0.1:40000".parse().expect("a literal address")),
        order: ProbeOrder::WaitForBanner,
        connect,
        end,
        timings: Timings { connected: Some(40), first_byte: Some(90), ident: Some(95), closed: Some(120) },
        received: Bytes::copy_from_slice(received),
        sent_ident: true,
        packets: Vec::new(),
    }
}

fn cases() -> Vec<(&'static str, Observation)> {
    vec![
        ("banner", observation(Connect::Established, Some(End::WeClosed), OPENSSH)),
        ("prebanner", observation(Connect::Established, Some(End::WeClosed), &prebanner())),
        ("refusal", observation(Connect::Established, Some(End::Fin), b"Not allowed at this time\r\n")),
        ("closed_silently", observation(Connect::Established, Some(End::Fin), b"")),
        ("http", observation(Connect::Established, Some(End::Fin), b"HTTP/1.1 400 Bad Request\r\n\r\n")),
        ("refused", observation(Connect::Refused, None, b"")),
    ]
}

fn bench_classify(c: &mut Criterion) {
    let mut g = c.benchmark_group("classify");
    for (name, obs) in cases() {
        g.bench_with_input(BenchmarkId::from_parameter(name), &obs, |b, obs| {
            b.iter(|| classify(black_box(obs)))
        });
    }
    g.finish();
}

/// One JSONL line into a 64 KiB `BufWriter`, as `probe` writes it (the sink behind it discards, so no
/// system call is counted).
fn bench_report(c: &mut Criterion) {
    let mut g = c.benchmark_group("report_jsonl");
    for (name, obs) in cases() {
        let classification = classify(&obs);
        let result = ProbeResult {
            target: "127.0.0.1:22".into(),
            seq: 0,
            time: std::time::SystemTime::UNIX_EPOCH,
            observation: obs,
            classification,
        };
        let out = std::io::BufWriter::with_capacity(64 * 1024, std::io::sink());
        let mut reporter = ProbeReporter::new(out, Format::Jsonl, false, false);
        g.bench_with_input(BenchmarkId::from_parameter(name), &result, |b, r| {
            b.iter(|| reporter.write_unflushed(black_box(r)).expect("writing to a sink"))
        });
    }
    g.finish();
}

criterion_group! {
    name = micro;
    // Short runs: the whole suite, e2e included, is meant to take a few minutes on 2 cores.
    config = Criterion::default().warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    targets = bench_scan, bench_classify, bench_report
}
criterion_main!(micro);
