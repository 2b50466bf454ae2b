//! The delay line (`common::delayline`): a real round trip between two namespaces, checked with
//! kernel sockets, with a real sshd probed by both engines, and with an accept-and-close server,
//! where it shows the correction diagnose uses for the time a server took:
//! `timings.closed − 2 × timings.connected`.
//!
//! The bounds asserted here are correctness checks of the fixture, not speed targets: the line
//! never delivers a packet early, so an answer cannot come sooner than the round trips it needs
//! (a lower bound that must always hold), and the upper bounds are ten times the expected value.
//!
//! Needs root and `ip` (and `sshd`, `nft` where used): skipped loudly otherwise, a failure under
//! `CI=true`.

#[macro_use]
mod common;

use common::delayline::{need_line, DelayLine, Side};
use common::{check_record, Sshd};
use serde_json::Value;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// The delay each way in these tests: a 20 ms round trip.
const DELAY: Duration = Duration::from_millis(10);

/// Runs `sshprobe probe ARGS -o jsonl` in the client namespace and returns its records, each
/// checked against the JSONL contract.
fn probe_through(line: &DelayLine, args: &[&str]) -> Vec<Value> {
    let out = line
        .command(Side::Client, env!("CARGO_BIN_EXE_sshprobe"))
        .arg("probe")
        .args(args)
        .args(["-o", "jsonl"])
        .output()
        .expect("running sshprobe in the client namespace");
    let records: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    assert!(!records.is_empty(), "no record; stderr: {}", String::from_utf8_lossy(&out.stderr));
    for r in &records {
        check_record(r);
    }
    records
}

/// `timings_us.KEY` as a duration.
fn at(r: &Value, key: &str) -> Duration {
    Duration::from_micros(r["timings_us"][key].as_u64().unwrap_or_else(|| panic!("no timings_us.{key}: {r}")))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The raw engine, which ran inside the client namespace (the only one with a route to the
/// server; its nftables table and run lock are per namespace), removed its table there.
fn assert_raw_engine_cleaned_up(line: &DelayLine) {
    let out = line.command(Side::Client, "nft").args(["list", "tables"]).output().expect("running nft");
    assert!(out.status.success(), "nft list tables: {}", String::from_utf8_lossy(&out.stderr));
    let tables = String::from_utf8_lossy(&out.stdout);
    assert!(
        !tables.contains("sshprobe_raw"),
        "the raw engine left its table in {}: {tables}",
        line.client_ns
    );
}

#[test]
fn a_tcp_connect_through_the_line_takes_one_round_trip() {
    if !need_line("a_tcp_connect_through_the_line_takes_one_round_trip", &[]) {
        return;
    }
    let line = DelayLine::new(DELAY);
    let server = SocketAddr::from((line.server_ip, 0));
    let listener =
        line.run_in(Side::Server, || TcpListener::bind(server)).expect("a listener in the server namespace");
    let server = listener.local_addr().expect("its address");

    let carried_before = line.carried();
    let mut took = Vec::new();
    for _ in 0..5 {
        let (stream, elapsed) = line.run_in(Side::Client, || {
            let start = Instant::now();
            let stream = TcpStream::connect_timeout(&server, Duration::from_secs(2));
            (stream, start.elapsed())
        });
        let stream = stream.unwrap_or_else(|e| panic!("connecting to {server} through the line: {e}"));
        assert_eq!(stream.local_addr().expect("local address").ip(), line.client_ip);
        let (accepted, peer) = listener.accept().expect("the server accepts");
        assert_eq!(peer, stream.local_addr().expect("local address"), "the server sees the client end");
        drop((stream, accepted));
        took.push(elapsed);
    }
    loud!(
        "delayline: TCP connect with {DELAY:?} each way: {:.1?} ms",
        took.iter().map(|&d| ms(d)).collect::<Vec<_>>()
    );
    for &t in &took {
        assert!(t >= line.rtt(), "a connect in {t:?}, shorter than the round trip {:?}", line.rtt());
        assert!(t < 10 * line.rtt(), "a connect in {t:?}, over ten round trips");
    }
    // SYN, SYN-ACK, ACK for each connect, and the closes: every one of them went through the line.
    assert!(
        line.carried() - carried_before >= 15,
        "only {} packets carried",
        line.carried() - carried_before
    );
    assert_eq!(line.dropped(), 0);
}

#[test]
fn dropping_the_line_removes_both_namespaces_even_on_panic() {
    if !need_line("dropping_the_line_removes_both_namespaces_even_on_panic", &[]) {
        return;
    }
    let names = |line: &DelayLine| [line.client_ns.clone(), line.server_ns.clone()];
    let line = DelayLine::new(DELAY);
    let made = names(&line);
    assert!(made.iter().all(|n| common::Netns::exists(n)), "{made:?} not created");
    // The devices live in the namespaces, not in ours.
    let here = std::process::Command::new(common::find_bin("ip").expect("ip"))
        .args(["-o", "link"])
        .output()
        .expect("ip link")
        .stdout;
    assert!(!String::from_utf8_lossy(&here).contains("dlc:"), "the client device is in our namespace");
    drop(line);
    assert!(made.iter().all(|n| !common::Netns::exists(n)), "{made:?} survived the drop");

    let (tx, rx) = std::sync::mpsc::channel();
    let panicked = std::panic::catch_unwind(move || {
        let line = DelayLine::new(DELAY);
        tx.send(names(&line)).expect("sending the names");
        panic!("a test failing with a line up");
    });
    assert!(panicked.is_err());
    let made = rx.recv().expect("the names");
    assert!(made.iter().all(|n| !common::Netns::exists(n)), "{made:?} survived the panic");
}

/// Probes sshd behind the line with `engine` and checks the timings: the connect takes a round
/// trip, the banner at least two (sshd can only send it once our ACK arrived, half a round trip
/// after the connect, and it needs another half to come back).
fn sshd_banner_through_the_line(line: &DelayLine, engine: &str) {
    let sshd = Sshd::new().behind(line).start();
    let records =
        probe_through(line, &["--engine", engine, "--connect-timeout", "2s", &sshd.addr.to_string()]);
    let r = &records[0];
    assert_eq!(r["outcome"], "banner", "{r}");
    assert_eq!(r["remote"], sshd.addr.to_string(), "{r}");
    let (connected, ident) = (at(r, "connected"), at(r, "ident"));
    loud!(
        "delayline: sshd with {DELAY:?} each way, --engine {engine}: connected {:.1} ms, \
         first byte {:.1} ms, ident {:.1} ms",
        ms(connected),
        ms(at(r, "first_byte")),
        ms(ident)
    );
    assert!(connected >= line.rtt() && connected < 10 * line.rtt(), "connected at {connected:?}: {r}");
    assert!(ident >= 2 * line.rtt() && ident < 10 * 2 * line.rtt(), "ident at {ident:?}: {r}");
    assert!(sshd.log().contains(&line.client_ip.to_string()), "sshd saw no connection from the client end");
}

#[test]
fn sshd_banner_through_the_line_connect_engine() {
    if !need_line("sshd_banner_through_the_line_connect_engine", &["sshd", "ssh-keygen"]) {
        return;
    }
    sshd_banner_through_the_line(&DelayLine::new(DELAY), "connect");
}

#[test]
fn sshd_banner_through_the_line_raw_engine() {
    if !need_line("sshd_banner_through_the_line_raw_engine", &["sshd", "ssh-keygen", "nft"]) {
        return;
    }
    let line = DelayLine::new(DELAY);
    sshd_banner_through_the_line(&line, "raw");
    assert_raw_engine_cleaned_up(&line);
}

/// An accept-and-close server 10 ms away: every probe is `closed_before_banner`, its close comes
/// two round trips after the start (never sooner), and `closed − 2 × connected`, the time the
/// server took, is about zero: the correction diagnose uses.
fn accept_and_close_through_the_line(line: &DelayLine, engine: &str) {
    let server = line.accept_and_close();
    let count = 5;
    let records = probe_through(
        line,
        &["--engine", engine, "--count", &count.to_string(), "--interval", "50ms", &server.addr.to_string()],
    );
    assert_eq!(records.len(), count, "{records:?}");
    let mut server_took = Vec::new();
    for r in &records {
        assert_eq!(r["outcome"], "closed_before_banner", "{r}");
        assert_eq!(r["bytes_len"], 0, "{r}");
        let (connected, closed) = (at(r, "connected"), at(r, "closed"));
        assert!(closed >= 2 * line.rtt(), "closed at {closed:?}, before two round trips: {r}");
        assert!(connected >= line.rtt(), "connected at {connected:?}, before a round trip: {r}");
        server_took.push(ms(closed) - 2.0 * ms(connected));
    }
    let closes: Vec<f64> = records.iter().map(|r| ms(at(r, "closed"))).collect();
    let connects: Vec<f64> = records.iter().map(|r| ms(at(r, "connected"))).collect();
    loud!(
        "delayline: accept-and-close with {DELAY:?} each way, --engine {engine}: \
         connected {connects:.1?} ms, closed {closes:.1?} ms, closed - 2 x connected {server_took:.2?} ms"
    );
    // Scheduling on a busy machine only ever adds time, to a connect and to a close alike, so the
    // run's fastest close and fastest connect show the correction diagnose makes
    // (`DelayClass::of_fastest`): about zero for a server that closes at once. A probe's own
    // `closed − 2 × connected` is no such measure: a connect the line delayed makes it too small,
    // even below zero (-5.3 ms in one run under load).
    let fastest = |times: &[f64]| times.iter().copied().fold(f64::INFINITY, f64::min);
    let took = fastest(&closes) - 2.0 * fastest(&connects);
    assert!(
        took.abs() < 5.0,
        "the server took {took:.2} ms by the run's fastest close and connect; closes at {closes:?} ms, \
         connects at {connects:?} ms"
    );
    assert_eq!(server.accepted(), count as u64, "the server accepted every probe");
}

#[test]
fn accept_and_close_through_the_line_connect_engine() {
    if !need_line("accept_and_close_through_the_line_connect_engine", &[]) {
        return;
    }
    accept_and_close_through_the_line(&DelayLine::new(DELAY), "connect");
}

#[test]
fn accept_and_close_through_the_line_raw_engine() {
    if !need_line("accept_and_close_through_the_line_raw_engine", &["nft"]) {
        return;
    }
    let line = DelayLine::new(DELAY);
    accept_and_close_through_the_line(&line, "raw");
    assert_raw_engine_cleaned_up(&line);
}
