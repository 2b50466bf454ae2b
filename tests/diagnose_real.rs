//! `diagnose` against real servers started by the tests: each cause gets its verdict, from both
//! engines alike.

mod common;

use common::delayline::{DelayLine, Side};
use common::{dropbear, have, hold, jsonl, openssh10_root, root_or_skip, Netns, Nft, Sshd};
use serde_json::Value;
use std::net::IpAddr;
use std::time::Duration;

/// Runs `diagnose` once with `--engine` `engine`.
fn diagnose_with(engine: &str, target: &str, extra: &[&str]) -> Value {
    let mut args = vec!["diagnose", target, "-o", "jsonl", "--engine", engine];
    args.extend_from_slice(extra);
    let (mut lines, out) = jsonl(&args);
    assert_eq!(lines.len(), 1, "--engine {engine}: stderr: {}", String::from_utf8_lossy(&out.stderr));
    let d = lines.remove(0);
    let ok = d["verdict"] == "ok";
    assert_eq!(out.status.code(), Some(if ok { 0 } else { 1 }), "--engine {engine}: {d}");
    record(engine, &d);
    d
}

/// With `SSHPROBE_VERDICTS_OUT=FILE`, appends what each diagnosis concluded, how long it took and
/// what it spent, one JSON line per run (the table in the closing notes and docs comes from there).
fn record(engine: &str, d: &Value) {
    let Some(path) = std::env::var_os("SSHPROBE_VERDICTS_OUT") else { return };
    let test = std::thread::current().name().unwrap_or("?").to_string();
    let line = serde_json::json!({
        "test": test, "engine": engine, "verdict": d["verdict"], "confidence": d["confidence"],
        "duration_ms": d["duration_ms"], "spent": d["budget"]["spent"],
        "evidence": d["evidence"].as_array().map(|e| e.iter().map(|e| e["text"].clone()).collect::<Vec<_>>()),
    });
    use std::io::Write;
    let mut file =
        std::fs::OpenOptions::new().create(true).append(true).open(path).expect("the verdicts file");
    writeln!(file, "{line}").expect("writing the verdicts file");
}

/// One raw-engine run at a time in this process: a second would find the first's run lock (it
/// owns the network namespace's raw source ports and firewall table) and refuse to start.
static RAW_ENGINE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Diagnoses `target` with the connect engine and then (as root) with the raw engine: both must
/// reach the same verdict with the same confidence. Returns the connect engine's diagnosis.
fn diagnose(target: &str, extra: &[&str]) -> Value {
    let d = diagnose_with("connect", target, extra);
    if common::need_root(&format!("diagnose {target} --engine raw")) {
        let raw = {
            let _one_at_a_time = RAW_ENGINE.lock().unwrap_or_else(|p| p.into_inner());
            diagnose_with("raw", target, extra)
        };
        assert_eq!(
            (verdict(&raw), &raw["confidence"]),
            (verdict(&d), &d["confidence"]),
            "the engines disagree on {target}:\nraw: {raw:#}\nconnect: {d:#}"
        );
        within_budget(&raw);
    }
    d
}

fn verdict(d: &Value) -> &str {
    d["verdict"].as_str().unwrap_or("?")
}

fn remedy(d: &Value) -> String {
    d["remedy"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The piece of evidence of `kind` (typed: its numbers beside its text), if the diagnosis cites one.
fn evidence<'a>(d: &'a Value, kind: &str) -> Option<&'a Value> {
    d["evidence"].as_array()?.iter().find(|e| e["kind"] == kind)
}

/// Every connection diagnose made stayed within its budget: a cap, or sshd's penalty arithmetic
/// (at most `per_source` seconds owed at any time, so at most that plus one a second of the run).
fn within_budget(d: &Value) {
    let per = d["budget"]["per_source"].as_u64().unwrap();
    let most = match d["budget"]["pace"].as_str() {
        Some("penalty_safe") => per + d["duration_ms"].as_u64().unwrap() / 1000 + 1,
        _ => per,
    };
    for (source, spent) in d["budget"]["spent"].as_object().unwrap() {
        assert!(spent.as_u64().unwrap() <= most, "{source} spent {spent} > {most}");
    }
}

#[test]
fn hosts_deny_is_access_denied() {
    if !root_or_skip("hosts_deny_verdict") || !have("hosts_deny_verdict", &["sshd", "unshare"]) {
        return;
    }
    let sshd = Sshd::new().hosts_deny("sshd: ALL\n").start();
    let d = diagnose(&sshd.addr.to_string(), &[]);
    assert_eq!(verdict(&d), "access_denied", "{d:#}");
    assert_eq!(d["confidence"], "high");
    // Debian's libwrap child sleeps 5 s before it closes (docs/facts.md §3).
    let close = evidence(&d, "zero_byte_close").unwrap_or_else(|| panic!("no zero_byte_close: {d:#}"));
    let median = close["median_us"].as_u64().unwrap();
    assert!((4_500_000..=6_500_000).contains(&median), "{d:#}");
    // The class is decided by the fastest close less twice the fastest connect, and says so.
    let fastest = close["fastest_delay_us"].as_u64().unwrap();
    assert!((4_500_000..=6_500_000).contains(&fastest) && fastest <= median, "{d:#}");
    assert!(
        close["text"].as_str().unwrap().contains(&format!("leaves {:.3}ms", fastest as f64 / 1000.0)),
        "{d:#}"
    );
    assert!(evidence(&d, "wrappers_delay").is_some(), "{d:#}");
    assert!(remedy(&d).contains("hosts.allow"), "{d:#}");
    within_budget(&d);
}

#[test]
fn maxstartups_at_capacity_held_by_another_address() {
    if !root_or_skip("maxstartups_verdict") || !have("maxstartups_verdict", &["sshd"]) {
        return;
    }
    let sshd = Sshd::new().option("MaxStartups 2").start();
    let other: IpAddr = "127.0.0.5".parse().unwrap();
    let _held: Vec<_> = (0..2).map(|_| hold(sshd.addr, Some(other))).collect();
    let d = diagnose(&sshd.addr.to_string(), &[]);
    assert_eq!(verdict(&d), "maxstartups", "{d:#}");
    let said = evidence(&d, "refusal_message").unwrap_or_else(|| panic!("no refusal_message: {d:#}"));
    assert_eq!(said["refusal"], "exceeded_max_startups", "{d:#}");
    assert!(evidence(&d, "refused_everywhere").is_some(), "{d:#}");
    assert!(remedy(&d).contains("MaxStartups"), "{d:#}");
    within_budget(&d);
}

#[test]
fn per_source_maxstartups_from_the_probing_address() {
    if !root_or_skip("per_source_verdict") || !have("per_source_verdict", &["sshd"]) {
        return;
    }
    let sshd = Sshd::new().option("PerSourceMaxStartups 2").start();
    let _held: Vec<_> = (0..2).map(|_| hold(sshd.addr, Some("127.0.0.1".parse().unwrap()))).collect();
    let d = diagnose(&sshd.addr.to_string(), &[]);
    assert_eq!(verdict(&d), "per_source_limit", "{d:#}");
    assert!(remedy(&d).contains("PerSourceMaxStartups"), "{d:#}");
}

#[test]
fn nothing_listening() {
    let closed = common::closed_port();
    let d = diagnose(&closed.addr().to_string(), &[]);
    assert_eq!(verdict(&d), "not_listening", "{d:#}");
}

#[test]
fn dropped_syns_are_filtered() {
    if !root_or_skip("filtered_verdict") || !have("filtered_verdict", &["ip", "nft", "sshd"]) {
        return;
    }
    let ns = Netns::new();
    let sshd = Sshd::new().in_netns(&ns).start();
    let _drop = Nft::new(Some(&ns), "input", &[&format!("tcp dport {} drop", sshd.addr.port())]);
    let d = diagnose(&sshd.addr.to_string(), &["--connect-timeout", "1s"]);
    assert_eq!(verdict(&d), "filtered", "{d:#}");
    assert!(remedy(&d).contains("firewall"), "{d:#}");
}

#[test]
fn healthy_server_is_ok() {
    if !root_or_skip("ok_verdict") || !have("ok_verdict", &["sshd"]) {
        return;
    }
    let sshd = Sshd::new().start();
    let d = diagnose(&sshd.addr.to_string(), &[]);
    assert_eq!(verdict(&d), "ok", "{d:#}");
    assert!(d["server"].as_str().unwrap().starts_with("OpenSSH_"));
    within_budget(&d);
}

#[test]
fn dropbear_beyond_five_from_one_address_is_per_source() {
    if !root_or_skip("dropbear_verdict") || !have("dropbear_verdict", &["dropbear", "dropbearkey"]) {
        return;
    }
    let server = dropbear();
    let _held: Vec<_> = (0..5).map(|_| hold(server.addr, Some("127.0.0.1".parse().unwrap()))).collect();
    let d = diagnose(&server.addr.to_string(), &[]);
    assert_eq!(verdict(&d), "per_source_limit", "{d:#}");
    assert!(remedy(&d).contains("MAX_UNAUTH_PER_IP"), "{d:#}");
}

#[test]
fn openssh10_penalty_after_a_burst_of_banner_grabs() {
    if !root_or_skip("openssh10_penalty") || !have("openssh10_penalty", &["unshare", "chroot"]) {
        return;
    }
    let Some(root) = openssh10_root("openssh10_penalty") else { return };
    let sshd = Sshd::new().root(&root).start();
    let target = sshd.addr.to_string();
    // docs/facts.md §5: about 15-19 banner grabs from one address, then `Not allowed at this time`.
    let (burst, _) = jsonl(&["probe", &target, "--count", "25", "--interval", "10ms", "-o", "jsonl"]);
    assert!(burst[0]["banner"]["software"].as_str().unwrap().starts_with("OpenSSH_10"), "{}", burst[0]);
    assert_eq!(burst.last().unwrap()["message"], "Not allowed at this time", "the burst was not penalised");
    let d = diagnose(&target, &[]);
    assert_eq!(verdict(&d), "penalized", "{d:#}");
    assert!(remedy(&d).contains("PerSourcePenaltyExemptList"), "{d:#}");
}

#[test]
fn openssh10_at_capacity_is_maxstartups_with_the_new_line() {
    if !root_or_skip("openssh10_maxstartups") || !have("openssh10_maxstartups", &["unshare", "chroot"]) {
        return;
    }
    let Some(root) = openssh10_root("openssh10_maxstartups") else { return };
    let sshd = Sshd::new().root(&root).option("PerSourcePenalties no").option("MaxStartups 2").start();
    let _held: Vec<_> = (0..2).map(|_| hold(sshd.addr, Some("127.0.0.6".parse().unwrap()))).collect();
    let d = diagnose(&sshd.addr.to_string(), &[]);
    assert_eq!(verdict(&d), "maxstartups", "{d:#}");
    let said = d["experiments"][0]["probes"][0]["message"].as_str().unwrap_or_default().to_string();
    assert_eq!(said, "Not allowed at this time", "{d:#}");
}

/// A server whose session process dies before its banner: sshd 9.2 re-executes a child for every
/// connection, and the child loads the host keys, so a key removed after start breaks every
/// session (7-18 ms after accept, zero bytes) while the listener still accepts.
#[test]
fn a_host_key_gone_after_start_is_a_server_error() {
    if !root_or_skip("server_error_verdict") || !have("server_error_verdict", &["sshd"]) {
        return;
    }
    let sshd = Sshd::new().start();
    for name in ["host_ed25519", "host_ed25519.pub"] {
        std::fs::remove_file(sshd.dir().join(name)).expect("removing the host key");
    }
    let d = diagnose(&sshd.addr.to_string(), &[]);
    assert_eq!(verdict(&d), "server_error", "{d:#}");
    let close = cited(&d, "zero_byte_close");
    assert_eq!(close["class"], "session_process", "{d:#}");
    assert!(cited(&d, "session_process_dies")["server_delay_us"].as_u64().unwrap() >= 2_000, "{d:#}");
    assert!(remedy(&d).contains("sshd -t"), "{d:#}");
    assert!(sshd.log().contains("no hostkeys available") || sshd.log().contains("Unable to load host key"));
}

/// An accept-and-close forwarder with no backend (docker-proxy for a stopped container, HAProxy):
/// zero bytes at the listener from every address, nothing on this host holding connections.
#[test]
fn an_accept_and_close_forwarder_is_a_listener_drop() {
    let forwarder = AcceptAndCloseHere::start();
    let d = diagnose(&forwarder.addr.to_string(), &[]);
    assert_eq!(verdict(&d), "listener_drop", "{d:#}");
    assert_eq!(d["confidence"], "medium", "both addresses were refused: {d:#}");
    let close = cited(&d, "zero_byte_close");
    assert_eq!(close["class"], "listener", "{d:#}");
    assert!(remedy(&d).contains("forwarder"), "{d:#}");
    assert!(forwarder.accepted() >= 5, "{} accepted", forwarder.accepted());
}

/// The server's own delay is the close less the round trip: through the delay line (10 ms each
/// way, a real 20 ms round trip), an accept-and-close closes 40 ms after the SYN but still reads as
/// a listener drop. The client end has a single address, so no second source: `low`.
#[test]
fn the_round_trip_is_taken_out_of_the_servers_delay() {
    if !common::delayline::need_line("delay_correction", &["ip"]) {
        return;
    }
    let line = DelayLine::new(Duration::from_millis(10));
    let forwarder = line.accept_and_close();
    let bin = env!("CARGO_BIN_EXE_sshprobe");
    for engine in ["connect", "raw"] {
        let out = line
            .command(Side::Client, bin)
            .args(["diagnose", &forwarder.addr.to_string(), "-o", "jsonl", "--engine", engine])
            .env("SSHPROBE_STATE_DIR", "")
            .output()
            .expect("running sshprobe in the client namespace");
        let text = String::from_utf8_lossy(&out.stdout);
        let d: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
            panic!("--engine {engine}: {e}: {text}\n{}", String::from_utf8_lossy(&out.stderr))
        });
        assert_eq!(
            (verdict(&d), &d["confidence"]),
            ("listener_drop", &"low".into()),
            "--engine {engine}: {d:#}"
        );
        let close = cited(&d, "zero_byte_close");
        let (median, own) =
            (close["median_us"].as_u64().unwrap(), close["server_delay_us"].as_u64().unwrap());
        assert!(median >= 40_000, "--engine {engine}: the close came {median} µs after the SYN: {d:#}");
        assert!(own < 5_000, "--engine {engine}: the server's own share is {own} µs: {d:#}");
        assert_eq!(close["class"], "listener", "--engine {engine}: {d:#}");
    }
}

/// Two diagnoses back to back against a default OpenSSH 10 (penalties on): the ledger carries what
/// the first spent, the second paces itself, both answer `ok`, and the address is not blocked.
#[test]
fn two_runs_back_to_back_stay_under_openssh10s_penalty() {
    if !root_or_skip("penalty_pacing") || !have("penalty_pacing", &["unshare", "chroot"]) {
        return;
    }
    let Some(root) = openssh10_root("penalty_pacing") else { return };
    let sshd = Sshd::new().root(&root).start();
    let target = sshd.addr.to_string();
    let state = tempfile::tempdir().unwrap();
    for run in 1..=2 {
        let out = common::sshprobe()
            .args(["diagnose", &target, "-o", "jsonl"])
            .env("SSHPROBE_STATE_DIR", state.path())
            .output()
            .expect("running sshprobe");
        let d: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("run {run}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!(verdict(&d), "ok", "run {run}: {d:#}");
        assert_eq!(d["budget"]["pace"], "penalty_safe", "run {run}: {d:#}");
    }
    // Still served: the address owes under the 15 s that would block it.
    let (probe, _) = jsonl(&["probe", &target, "-o", "jsonl"]);
    assert_eq!(probe[0]["outcome"], "banner", "{}", probe[0]);
}

/// dropbear's server-wide table (MAX_UNAUTH_CLIENTS, 30) filled by connections this host holds
/// (five from each of six addresses, under MAX_UNAUTH_PER_IP): every address is closed at once
/// without a byte, and this host's connections explain it. Without them it would be a listener drop.
#[test]
fn dropbear_full_from_this_host_is_maxstartups_with_the_holders_named() {
    if !root_or_skip("dropbear_full_from_here")
        || !have("dropbear_full_from_here", &["dropbear", "dropbearkey"])
    {
        return;
    }
    let server = dropbear();
    let _held: Vec<_> =
        (0..30).map(|i| hold(server.addr, Some(IpAddr::from([127, 0, 1, 1 + i / 5])))).collect();
    let d = diagnose(&server.addr.to_string(), &[]);
    assert_eq!((verdict(&d), &d["confidence"]), ("maxstartups", &"high".into()), "{d:#}");
    let held = cited(&d, "host_holds_connections");
    assert_eq!(held["total"], 30, "{d:#}");
    let me = std::process::id();
    assert!(held["holders"].as_array().unwrap().iter().all(|h| h["pid"] == me), "{d:#}");
    assert!(remedy(&d).contains("MAX_UNAUTH_CLIENTS"), "{d:#}");
}

/// OpenSSH 10's one line for three limits: with PerSourceMaxStartups filled by connections this
/// host holds from the probing address, another address served, it is the per-source limit, not
/// a penalty.
#[test]
fn openssh10_per_source_limit_filled_from_this_host() {
    if !root_or_skip("openssh10_per_source_here")
        || !have("openssh10_per_source_here", &["unshare", "chroot"])
    {
        return;
    }
    let Some(root) = openssh10_root("openssh10_per_source_here") else { return };
    let sshd = Sshd::new().root(&root).option("PerSourceMaxStartups 2").start();
    let _held: Vec<_> = (0..2).map(|_| hold(sshd.addr, Some("127.0.0.1".parse().unwrap()))).collect();
    let d = diagnose(&sshd.addr.to_string(), &[]);
    assert_eq!((verdict(&d), &d["confidence"]), ("per_source_limit", &"high".into()), "{d:#}");
    assert_eq!(cited(&d, "host_holds_connections")["from_probing_address"], 2, "{d:#}");
    assert_eq!(cited(&d, "refusal_message")["message"], "Not allowed at this time", "{d:#}");
    assert!(remedy(&d).contains("PerSourceMaxStartups"), "{d:#}");
}

/// The server's own log, read while diagnose probes (`--server-log`, here sshd's `-e` output),
/// names the cause: `high`, with the line cited.
#[test]
fn the_servers_log_names_the_cause() {
    if !root_or_skip("server_log") || !have("server_log", &["sshd"]) {
        return;
    }
    // MaxStartups (9.2): `drop connection #2 from [127.0.0.1]:P on [...] past MaxStartups` for our probes.
    let sshd = Sshd::new().option("MaxStartups 2").start();
    let _held: Vec<_> = (0..2).map(|_| hold(sshd.addr, Some("127.0.0.5".parse().unwrap()))).collect();
    let log = sshd.dir().join("stderr.log");
    let d = diagnose(&sshd.addr.to_string(), &["--server-log", log.to_str().unwrap()]);
    assert_eq!((verdict(&d), &d["confidence"]), ("maxstartups", &"high".into()), "{d:#}");
    let drop = d["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "server_logged" && e["event"] == "drop")
        .unwrap_or_else(|| panic!("no drop line cited: {d:#}"));
    assert_eq!(drop["ours"], true, "{d:#}");
    assert!(drop["line"].as_str().unwrap().contains("past MaxStartups"), "{d:#}");

    // A host key gone (9.2): `Unable to load host key`, logged by each dying session process.
    let broken = Sshd::new().start();
    for name in ["host_ed25519", "host_ed25519.pub"] {
        std::fs::remove_file(broken.dir().join(name)).expect("removing the host key");
    }
    let log = broken.dir().join("stderr.log");
    let d = diagnose(&broken.addr.to_string(), &["--server-log", log.to_str().unwrap()]);
    assert_eq!((verdict(&d), &d["confidence"]), ("server_error", &"high".into()), "{d:#}");
    let events: Vec<&Value> = d["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "server_logged")
        .map(|e| &e["event"])
        .collect();
    assert!(events.iter().any(|e| *e == "host_key_unloadable" || *e == "no_host_keys"), "{d:#}");
}

/// OpenSSH 10's penalty, which its line shares with MaxStartups, named by its log: `drop connection
/// ... penalty: connections without attempting authentication`.
#[test]
fn openssh10s_log_tells_a_penalty_from_maxstartups() {
    if !root_or_skip("server_log_penalty") || !have("server_log_penalty", &["unshare", "chroot"]) {
        return;
    }
    let Some(root) = openssh10_root("server_log_penalty") else { return };
    // Each engine on a server of its own: sshd rate-limits its drop lines, so a diagnosis right
    // after another's refused probes can find none of its own logged (docs/facts.md §9), and the
    // two would differ by the log's luck, not by what they measured.
    for engine in ["connect", "raw"] {
        let sshd = Sshd::new().root(&root).start();
        let target = sshd.addr.to_string();
        // Just enough grabs to be penalised: a long burst would leave no drop line for diagnose's own
        // probes.
        let (burst, _) = jsonl(&["probe", &target, "--count", "20", "--interval", "10ms", "-o", "jsonl"]);
        assert_eq!(
            burst.last().unwrap()["message"],
            "Not allowed at this time",
            "the burst was not penalised"
        );
        let log = sshd.dir().join("stderr.log");
        let d = {
            let _one_at_a_time = RAW_ENGINE.lock().unwrap_or_else(|p| p.into_inner());
            diagnose_with(engine, &target, &["--server-log", log.to_str().unwrap()])
        };
        assert_eq!(
            (verdict(&d), &d["confidence"]),
            ("penalized", &"high".into()),
            "--engine {engine}: {d:#}"
        );
        assert!(
            d["evidence"].as_array().unwrap().iter().any(|e| e["kind"] == "server_logged"
                && e["line"]
                    .as_str()
                    .unwrap()
                    .contains("penalty: connections without attempting authentication")),
            "--engine {engine}: {d:#}"
        );
        within_budget(&d);
    }
}

/// The piece of evidence of `kind`, which the diagnosis must cite.
fn cited<'a>(d: &'a Value, kind: &str) -> &'a Value {
    evidence(d, kind).unwrap_or_else(|| panic!("no {kind} evidence in {d:#}"))
}

/// An accept-and-close listener on loopback: every connection closed at once without a byte, on a
/// thread of its own, for at most a minute.
struct AcceptAndCloseHere {
    addr: std::net::SocketAddr,
    accepted: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl AcceptAndCloseHere {
    fn start() -> AcceptAndCloseHere {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("0.0.0.0:0").expect("a listener");
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], listener.local_addr().unwrap().port()));
        listener.set_nonblocking(true).unwrap();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (count, halt) = (accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            let end = std::time::Instant::now() + Duration::from_secs(60);
            while !halt.load(Ordering::Relaxed) && std::time::Instant::now() < end {
                match listener.accept() {
                    Ok((stream, _)) => {
                        count.fetch_add(1, Ordering::Relaxed);
                        drop(stream);
                    }
                    Err(_) => std::thread::sleep(Duration::from_micros(200)),
                }
            }
        });
        AcceptAndCloseHere { addr, accepted, stop }
    }

    fn accepted(&self) -> u64 {
        self.accepted.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for AcceptAndCloseHere {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
