//! The raw engine keeps the kernel's TCP out of its IPv4 flows: it reads them through a packet
//! socket, before the IP layer, and drops them at prerouting, so the kernel never looks for a
//! socket, finds none and builds a reset (which the engine's output rule would then drop). The
//! kernel counts every reset its TCP builds (`Tcp: OutRsts` in /proc/net/snmp, per network
//! namespace, counted before any firewall sees the reset), so the count tells.
//!
//! Needs root (raw sockets and an nftables rule): skipped, loudly, otherwise. Meant to run in a
//! private network namespace, as the raw tests are: other traffic of the namespace would count.

mod common;

use sshprobe::lab::{Behaviour, Lab, LabConfig};
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

/// One raw run at a time: runs share the per-namespace lock, and the reset count is the namespace's.
static SERIAL: Mutex<()> = Mutex::new(());

/// The kernel TCP's resets sent so far in this network namespace.
fn out_rsts() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").expect("reading /proc/net/snmp");
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next().expect("Tcp names"), tcp.next().expect("Tcp values"));
    let at = names.split_whitespace().position(|n| n == "OutRsts").expect("an OutRsts column");
    values.split_whitespace().nth(at).and_then(|v| v.parse().ok()).expect("an OutRsts value")
}

/// Runs `probes` raw probes of `target` with `env` set, and returns how many resets the kernel's
/// TCP built meanwhile.
fn kernel_resets_during(target: std::net::SocketAddr, probes: usize, env: Option<(&str, &str)>) -> u64 {
    kernel_resets_and_ports(target, probes, env, &[]).0
}

/// [`kernel_resets_during`] with more flags; also returns each probe's source port.
fn kernel_resets_and_ports(
    target: std::net::SocketAddr,
    probes: usize,
    env: Option<(&str, &str)>,
    flags: &[&str],
) -> (u64, Vec<u16>) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let list = dir.path().join("targets");
    let mut file = std::fs::File::create(&list).expect("the target file");
    for _ in 0..probes {
        writeln!(file, "{target}").expect("writing targets");
    }
    drop(file);
    let mut cmd = common::sshprobe();
    cmd.args(["probe", "--engine", "raw", "-c", "8", "-o", "jsonl"]).args(flags).arg("-i").arg(&list);
    if let Some((name, value)) = env {
        cmd.env(name, value);
    }
    let before = out_rsts();
    let out = cmd.timeout(Duration::from_secs(60)).output().expect("sshprobe");
    let after = out_rsts();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let banners = stdout.lines().filter(|l| l.contains("\"outcome\":\"banner\"")).count();
    assert_eq!(banners, probes, "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let ports = stdout
        .lines()
        .map(|l| {
            let record: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            let local: std::net::SocketAddr =
                record["local"].as_str().and_then(|a| a.parse().ok()).expect("a local address");
            local.port()
        })
        .collect();
    (after - before, ports)
}

/// Runs `test` with the lab's well-behaved server, one raw run at a time; skipped (loudly) without
/// root.
fn with_ok_server(name: &str, test: impl FnOnce(std::net::SocketAddr)) {
    if !common::need_root(name) {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let lab = rt.block_on(Lab::start(LabConfig::default())).expect("the lab");
    test(lab.addr(Behaviour::Ok));
}

#[test]
fn the_kernel_builds_no_reset_for_the_raw_engines_ipv4_flows() {
    with_ok_server(test_name!(), |target| {
        // Through the packet socket (the default): no reset.
        assert_eq!(kernel_resets_during(target, 40, None), 0);
        // Through the raw socket, the server's segments also reach the kernel's TCP, which answers
        // each with a reset (dropped on its way out by the engine's rule): the count sees them.
        let through_ip = kernel_resets_during(target, 40, Some(("SSHPROBE_RAW_RECEIVE", "socket")));
        assert!(through_ip >= 40, "{through_ip} kernel resets for 40 probes read through the raw socket");
    });
}

/// A SYN this host's own firewall drops on its way out: `sendmmsg` refuses that message (EPERM) and
/// the probe ends `unreachable` at once, saying why, while the probes beside it in the same batch go
/// out and get their banners. (The connect engine's kernel socket retransmits into the same drop
/// and ends `connect_timeout`: the engines disagree here, as they did before batching.)
#[test]
fn a_syn_the_hosts_firewall_drops_is_unreachable_and_its_batch_goes_on() {
    with_ok_server(test_name!(), |ok| {
        let blocked = common::closed_port();
        let _drop = common::Nft::new(None, "output", &[&format!("tcp dport {} drop", blocked.port())]);
        let mut targets = vec![blocked.addr().to_string()];
        targets.extend((0..20).map(|_| ok.to_string()));
        let mut args = vec!["probe", "--engine", "raw", "-o", "jsonl", "--connect-timeout", "3s"];
        args.extend(targets.iter().map(String::as_str));
        let (records, out) = common::jsonl(&args);
        assert_eq!(records.len(), 21, "{}", String::from_utf8_lossy(&out.stderr));
        let blocked_label = blocked.addr().to_string();
        for r in &records {
            common::check_record(r);
            let want = if r["target"] == blocked_label.as_str() { "unreachable" } else { "banner" };
            assert_eq!(r["outcome"], want, "{r}");
        }
        let blocked = records.iter().find(|r| r["target"] == blocked_label.as_str()).expect("its record");
        assert!(blocked.to_string().contains("Operation not permitted"), "{blocked}");
    });
}

/// `probe --engine raw --threads 2`: two engine threads, each with half the source ports and its
/// own sockets. Every probe gets its banner, both halves of the range carry probes (so both threads
/// ran flows, each reading only its own), and the prerouting drop covers both: no kernel reset.
#[test]
fn two_engine_threads_share_the_ports_and_keep_the_kernel_out() {
    with_ok_server(test_name!(), |target| {
        let flags = ["--threads", "2", "--source-ports", "62000-62999"];
        let (resets, ports) = kernel_resets_and_ports(target, 40, None, &flags);
        assert_eq!(resets, 0);
        assert_eq!(ports.len(), 40);
        assert!(ports.iter().all(|p| (62000..=62999).contains(p)), "{ports:?}");
        let low = ports.iter().filter(|&&p| p < 62500).count();
        // Probes go to the threads in turn (by their ids), so the halves carry 20 each.
        assert_eq!(low, 20, "{ports:?}");
    });
}
