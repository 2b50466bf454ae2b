//! `sshprobe serve` end to end: the exporter binary against real sshd and dropbear (healthy, TCP
//! wrappers denying, MaxStartups full, nothing listening), scraped over HTTP and by a real
//! Prometheus; and its safety rules (allow list, shared probes, in-flight bound, bad queries,
//! SIGTERM) checked against servers that count what reaches them.

mod common;

use common::prometheus::{
    http_get, http_raw, need_prometheus, sample, scrape_config, Blackbox, Exporter, Prometheus,
};
use common::{dropbear, free_port, hold, need, need_root, Sshd};
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `eprintln!` the harness cannot swallow, so the scrapes show in the test's output.
fn show(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// Scrapes `target` through `exporter`; panics unless the answer is 200.
fn scrape(exporter: &Exporter, target: SocketAddr) -> String {
    let (status, body) = exporter.get(&format!("/probe?target={target}"));
    assert_eq!(status, 200, "{body}\n{}", exporter.log());
    show(&format!("--- GET /probe?target={target}\n{body}"));
    body
}

fn outcome_is(body: &str, outcome: &str) {
    let line = format!("sshprobe_outcome{{outcome=\"{outcome}\"}}");
    assert_eq!(sample(body, &line), Some(1.0), "{line} should be 1:\n{body}");
    let ones = body.lines().filter(|l| l.starts_with("sshprobe_outcome{") && l.ends_with(" 1")).count();
    assert_eq!(ones, 1, "one-hot:\n{body}");
}

#[test]
fn scrapes_of_real_servers_say_why() {
    if !need("serve_real_servers", &["sshd", "unshare", "dropbear"]) {
        return;
    }
    let healthy = Sshd::new().start();
    let wrapped = Sshd::new().hosts_deny("sshd: ALL\n").start();
    let full = Sshd::new().option("MaxStartups 1:100:1").start();
    let _held = hold(full.addr, None);
    let bear = dropbear();
    let nothing: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let exporter = Exporter::start(&[]);

    let body = scrape(&exporter, healthy.addr);
    outcome_is(&body, "banner");
    assert_eq!(sample(&body, "probe_success"), Some(1.0));
    assert!(body.contains("sshprobe_banner_info{proto=\"2.0\",software=\"OpenSSH_"), "{body}");
    assert!(sample(&body, "sshprobe_phase_seconds{phase=\"connect\"}").is_some(), "{body}");

    let body = scrape(&exporter, wrapped.addr);
    outcome_is(&body, "closed_before_banner");
    assert_eq!(sample(&body, "probe_success"), Some(0.0));
    // Debian's libwrap child sleeps 5 s before it closes (docs/facts.md §3): the delay tells wrappers apart.
    let delay = sample(&body, "sshprobe_refusal_delay_seconds").expect("a refusal delay");
    assert!(delay > 4.5, "wrappers close after about 5 s, not {delay}:\n{body}");

    let body = scrape(&exporter, full.addr);
    outcome_is(&body, "server_refusal");
    assert!(
        body.contains("sshprobe_refusal_info{message=\"Exceeded MaxStartups\",meaning=\"OpenSSH 8.2-9.7"),
        "{body}"
    );
    let delay = sample(&body, "sshprobe_refusal_delay_seconds").expect("a refusal delay");
    assert!(delay < 1.0, "a listener drop is immediate, not {delay} s:\n{body}\n{}", full.log());
    assert_eq!(sample(&body, "sshprobe_cached"), Some(0.0));
    // Within --min-interval: the same result, marked, and no second connection.
    let again = scrape(&exporter, full.addr);
    outcome_is(&again, "server_refusal");
    assert_eq!(sample(&again, "sshprobe_cached"), Some(1.0), "{again}");

    let body = scrape(&exporter, bear.addr);
    outcome_is(&body, "banner");
    assert!(body.contains("software=\"dropbear"), "{body}");

    let body = scrape(&exporter, nothing);
    outcome_is(&body, "refused");
    assert!(!body.contains("sshprobe_refusal_delay_seconds"), "{body}");

    let (status, metrics) = exporter.get("/metrics");
    assert_eq!(status, 200);
    show(&format!("--- GET /metrics\n{metrics}"));
    for (outcome, n) in
        [("banner", 2.0), ("closed_before_banner", 1.0), ("server_refusal", 1.0), ("refused", 1.0)]
    {
        let line = format!("sshprobe_exporter_probes_total{{outcome=\"{outcome}\"}}");
        assert_eq!(sample(&metrics, &line), Some(n), "{line}:\n{metrics}");
    }
    assert_eq!(sample(&metrics, "sshprobe_exporter_results_reused_total"), Some(1.0), "{metrics}");
    let (status, page) = exporter.get("/");
    assert_eq!(status, 200);
    assert!(page.contains(&full.addr.to_string()) && page.contains("server_refusal"), "{page}");
}

#[test]
fn prometheus_reads_the_maxstartups_refusal() {
    if !need_prometheus("serve_prometheus", &["sshd", "prometheus"]) {
        return;
    }
    let healthy = Sshd::new().start();
    let full = Sshd::new().option("MaxStartups 1:100:1").start();
    let _held = hold(full.addr, None);
    let exporter = Exporter::start(&[]);
    let config = scrape_config(exporter.addr, &[full.addr, healthy.addr], "1s");
    let prometheus = Prometheus::start(&config);
    let query = |expr: &str| prometheus.query(expr);
    let refusal = format!("sshprobe_outcome{{instance=\"{}\",outcome=\"server_refusal\"}}", full.addr);
    let banner = format!("sshprobe_outcome{{instance=\"{}\",outcome=\"banner\"}}", healthy.addr);
    let value = |result: &serde_json::Value| result[0]["value"][1].as_str().map(String::from);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut got_refusal, mut got_banner) = (None, None);
    while Instant::now() < deadline {
        got_refusal = value(&query(&refusal));
        got_banner = value(&query(&banner));
        let counted = value(&query("sum(sshprobe_exporter_probes_total)")).is_some();
        if got_refusal.as_deref() == Some("1") && got_banner.as_deref() == Some("1") && counted {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let answer = query("sshprobe_outcome{outcome=\"server_refusal\"}");
    show(&format!("--- Prometheus: sshprobe_outcome{{outcome=\"server_refusal\"}}\n{answer:#}"));
    assert_eq!(
        got_refusal.as_deref(),
        Some("1"),
        "{refusal}: {answer}\nexporter:\n{}\nprometheus:\n{}",
        exporter.log(),
        prometheus.log()
    );
    assert_eq!(got_banner.as_deref(), Some("1"), "{banner}");
    // The refusal's text reaches Prometheus as a label.
    let info = query("sshprobe_refusal_info");
    assert_eq!(info[0]["metric"]["message"], "Exceeded MaxStartups", "{info}");
    // Prometheus scraped the exporter's own counters too.
    let probes = query("sum(sshprobe_exporter_probes_total)");
    assert!(value(&probes).is_some(), "{probes}");
    // Every query of the Grafana dashboard parses, and those on probe metrics find data.
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../docs/grafana/sshprobe-dashboard.json"))
            .expect("dashboard JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut checked = 0;
    // (The key-exchange panel needs a module with `kex = true`: tests/kex_real.rs checks it.)
    for expr in panels
        .iter()
        .filter(|p| !p["description"].as_str().unwrap_or("").contains("kex = true"))
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str())
    {
        let expr = expr.replace("$job", "sshprobe").replace("$instance", ".*");
        let result = query(&expr);
        if !expr.contains("rate(") {
            assert!(!result.as_array().is_none_or(|r| r.is_empty()), "dashboard query {expr} found nothing");
        }
        checked += 1;
    }
    assert!(checked >= 8, "{checked} dashboard queries");
}

/// A loopback server that counts connections and answers each as `answer` says; stopped when
/// dropped.
struct Counting {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl Counting {
    /// `banner`: Some(bytes) to send and close; None to hold the connection open, silent.
    fn start(banner: Option<&'static [u8]>) -> Counting {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted, stop, held) = (Arc::default(), Arc::new(AtomicBool::new(false)), Arc::default());
        let (a, s, h): (Arc<AtomicUsize>, Arc<AtomicBool>, Arc<Mutex<Vec<TcpStream>>>) =
            (Arc::clone(&accepted), Arc::clone(&stop), Arc::clone(&held));
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        a.fetch_add(1, Ordering::SeqCst);
                        match banner {
                            Some(bytes) => {
                                let _ = stream.write_all(bytes);
                            }
                            None => h.lock().unwrap().push(stream),
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Counting { addr, accepted, stop, held }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.held.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

#[test]
fn targets_outside_the_allow_list_get_403_and_no_packet() {
    let server = Counting::start(Some(b"SSH-2.0-counted\r\n"));
    let port = server.addr.port();
    let exporter = Exporter::start(&["--allow", "127.0.0.2/32"]);
    for target in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("%5B%3A%3Affff%3A127.0.0.1%5D:{port}"),
        "192.0.2.1".to_string(),
    ] {
        let (status, body) = exporter.get(&format!("/probe?target={target}"));
        assert_eq!(status, 403, "{target}: {body}");
        assert!(body.contains("outside --allow"), "{body}");
    }
    let (status, _) = exporter.get(&format!("/diagnose?target=127.0.0.1:{port}"));
    assert_eq!(status, 403);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.accepted(), 0, "a refused target must see no connection");
    let (_, metrics) = exporter.get("/metrics");
    assert_eq!(sample(&metrics, "sshprobe_exporter_scrapes_refused_total{reason=\"forbidden\"}"), Some(5.0));
}

#[test]
fn hundreds_of_concurrent_scrapes_share_one_probe() {
    let server = Counting::start(Some(b"SSH-2.0-counted\r\n"));
    let exporter = Arc::new(Exporter::start(&[]));
    let scrapes = 300;
    let threads: Vec<_> = (0..scrapes)
        .map(|_| {
            let (exporter, target) = (exporter.clone(), server.addr);
            std::thread::spawn(move || exporter.get(&format!("/probe?target={target}")))
        })
        .collect();
    let answers: Vec<(u16, String)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        outcome_is(body, "banner");
    }
    let cached = answers.iter().filter(|(_, b)| sample(b, "sshprobe_cached") == Some(1.0)).count();
    assert_eq!((server.accepted(), cached), (1, scrapes - 1), "one probe, shared by every scrape");
    let (_, metrics) = exporter.get("/metrics");
    assert_eq!(sample(&metrics, "sshprobe_exporter_results_reused_total"), Some((scrapes - 1) as f64));
    assert_eq!(exporter.get("/-/healthy"), (200, "Healthy\n".to_string()));
}

#[test]
fn busy_bad_queries_deadlines_and_sigterm() {
    let tarpit = Counting::start(None);
    let other = Counting::start(None);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sshprobe.toml");
    std::fs::write(&config, "[modules.slow]\nbanner_timeout = \"3s\"\n").unwrap();
    let exporter = Arc::new(Exporter::start(&["--max-in-flight", "1", "--config", config.to_str().unwrap()]));

    // One probe in flight fills the exporter: a second server's scrape gets 503.
    let first = {
        let (exporter, target) = (exporter.clone(), tarpit.addr);
        std::thread::spawn(move || exporter.get(&format!("/probe?target={target}&module=slow")))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while tarpit.accepted() == 0 {
        assert!(Instant::now() < deadline, "the first probe never connected");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (status, body) = exporter.get(&format!("/probe?target={}", other.addr));
    assert_eq!((status, body.lines().count()), (503, 1), "{body}");
    let (status, body) = first.join().unwrap();
    assert_eq!(status, 200, "{body}");
    outcome_is(&body, "banner_timeout");

    // The scrape timeout bounds the probe: 1 s less a quarter.
    let (status, body) = http_get(
        exporter.addr,
        &format!("/probe?target={}", other.addr),
        &[("X-Prometheus-Scrape-Timeout-Seconds", "1")],
    );
    assert_eq!(status, 200, "{body}");
    outcome_is(&body, "banner_timeout");
    let took = sample(&body, "probe_duration_seconds").unwrap();
    assert!(took < 0.9, "a 1 s scrape timeout leaves a 0.75 s probe, not {took} s");

    // Bad queries: 400 and one line.
    let huge = format!("/probe?target={}", "a".repeat(10_000));
    for path in [
        "/probe",
        "/probe?module=slow",
        "/probe?target=127.0.0.1:99999",
        "/probe?target=127.0.0.1:0",
        "/probe?target=%FF%FE",
        "/probe?target=10.0.0.0/8",
        "/probe?target=127.0.0.1&module=missing",
        huge.as_str(),
    ] {
        let (status, body) = exporter.get(path);
        assert_eq!((status, body.lines().count()), (400, 1), "{}: {body}", &path[..path.len().min(60)]);
    }
    // A request head beyond hyper's 16 KiB buffer: hyper's own 431, and the exporter goes on.
    let (status, _) = exporter.get(&format!("/probe?target={}", "a".repeat(20_000)));
    assert_eq!(status, 431);
    let (status, _) = http_get(
        exporter.addr,
        "/probe?target=127.0.0.1",
        &[("X-Prometheus-Scrape-Timeout-Seconds", "soon")],
    );
    assert_eq!(status, 400);
    // Raw bytes that are not UTF-8 in the request line.
    let (status, _) = http_raw(
        exporter.addr,
        b"GET /probe?target=\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 400);
    assert_eq!(exporter.get("/-/healthy").0, 200, "still answering");

    let exporter = Arc::try_unwrap(exporter).ok().expect("no other owner");
    let (status, log) = exporter.terminate();
    assert!(status.success(), "SIGTERM ends it cleanly: {status}\n{log}");
    assert!(log.contains("terminated: stopped cleanly"), "{log}");
}

#[test]
fn diagnose_answers_json_for_a_dashboard_link() {
    if !need("serve_diagnose", &["sshd"]) {
        return;
    }
    let healthy = Sshd::new().start();
    let exporter = Exporter::start(&[]);
    let (status, body) = exporter.get(&format!("/diagnose?target={}", healthy.addr));
    assert_eq!(status, 200, "{body}\n{}", exporter.log());
    let d: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(d["verdict"], "ok", "{d:#}");
    assert_eq!(d["remote"], healthy.addr.to_string());
    // Within the diagnose interval: the same answer, no new connections.
    assert_eq!(exporter.get(&format!("/diagnose?target={}", healthy.addr)), (200, body));
}

#[test]
fn a_raw_module_probes_through_the_raw_engine() {
    if !need_root("serve_raw_module") || !need("serve_raw_module", &["sshd", "nft"]) {
        return;
    }
    let sshd = Sshd::new().start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sshprobe.toml");
    std::fs::write(&config, "[modules.wire]\nengine = \"raw\"\norder = \"send_first\"\n").unwrap();
    // One raw engine per network namespace: another test (here or in another process) may hold it
    // for a while.
    let deadline = Instant::now() + Duration::from_secs(60);
    let exporter = loop {
        match Exporter::try_start(&["--config", config.to_str().unwrap()]) {
            Ok(e) => break e,
            Err(e) if e.contains("another sshprobe raw engine") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(500))
            }
            Err(e) => panic!("{e}"),
        }
    };
    let (status, body) = exporter.get(&format!("/probe?target={}&module=wire", sshd.addr));
    assert_eq!(status, 200, "{body}\n{}", exporter.log());
    outcome_is(&body, "banner");
    let (status, log) = exporter.terminate();
    assert!(status.success(), "{status}\n{log}");
}

/// The README's side-by-side table: on the same four servers, blackbox_exporter's `ssh_banner`
/// says `probe_success 0` for every failure alike; sshprobe names each.
#[test]
fn blackbox_says_down_where_sshprobe_says_why() {
    if !need_prometheus("serve_blackbox", &["sshd", "unshare", "prometheus-blackbox-exporter"]) {
        return;
    }
    let healthy = Sshd::new().start();
    let wrapped = Sshd::new().hosts_deny("sshd: ALL\n").start();
    let full = Sshd::new().option("MaxStartups 1:100:1").start();
    let _held = hold(full.addr, None);
    let nothing: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let blackbox = Blackbox::start();
    let exporter = Exporter::start(&[]);
    let servers = [
        ("healthy sshd 9.2", healthy.addr, "banner"),
        ("sshd, hosts.deny `sshd: ALL`", wrapped.addr, "closed_before_banner"),
        ("sshd, MaxStartups full", full.addr, "server_refusal"),
        ("nothing listening", nothing, "refused"),
    ];
    let mut table = String::from(
        "| server | blackbox `ssh_banner`: probe_success | duration | sshprobe: probe_success | sshprobe_outcome | duration | what else sshprobe says |\n|---|---|---|---|---|---|---|\n",
    );
    for (name, addr, want) in servers {
        let b = blackbox.probe(addr);
        let s = scrape(&exporter, addr);
        outcome_is(&s, want);
        let success = sample(&b, "probe_success");
        assert_eq!(success, Some(if want == "banner" { 1.0 } else { 0.0 }), "blackbox on {name}:\n{b}");
        let extra: Vec<String> = s
            .lines()
            .filter(|l| l.starts_with("sshprobe_refusal") || l.starts_with("sshprobe_banner_info"))
            .map(|l| format!("`{l}`"))
            .collect();
        table += &format!(
            "| {name} | {} | {:.3} s | {} | `{want}` | {:.3} s | {} |\n",
            success.unwrap_or(f64::NAN),
            sample(&b, "probe_duration_seconds").unwrap_or(f64::NAN),
            sample(&s, "probe_success").unwrap_or(f64::NAN),
            sample(&s, "probe_duration_seconds").unwrap_or(f64::NAN),
            extra.join("<br>")
        );
    }
    show(&table);
}

/// Many servers at once beyond `--max-in-flight`: every scrape is answered, 200 or 503, and every
/// probe the exporter counts is one connection a server saw.
#[test]
fn beyond_the_in_flight_bound_scrapes_get_503_and_the_exporter_goes_on() {
    let tarpits: Vec<Counting> = (0..8).map(|_| Counting::start(None)).collect();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sshprobe.toml");
    std::fs::write(&config, "[modules.default]\nbanner_timeout = \"1s\"\n").unwrap();
    let exporter = Arc::new(Exporter::start(&[
        "--max-in-flight",
        "4",
        "--min-interval",
        "0s",
        "--config",
        config.to_str().unwrap(),
    ]));
    let threads: Vec<_> = (0..400)
        .map(|i| {
            let (exporter, target) = (exporter.clone(), tarpits[i % tarpits.len()].addr);
            std::thread::spawn(move || exporter.get(&format!("/probe?target={target}")))
        })
        .collect();
    let answers: Vec<(u16, String)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    let busy = answers.iter().filter(|(s, _)| *s == 503).count();
    assert_eq!(
        ok + busy,
        answers.len(),
        "only 200 and 503: {:?}",
        answers.iter().find(|(s, _)| *s != 200 && *s != 503)
    );
    assert!(ok > 0 && busy > 0, "{ok} answered, {busy} busy");
    for (_, body) in answers.iter().filter(|(s, _)| *s == 200) {
        outcome_is(body, "banner_timeout");
    }
    let (_, metrics) = exporter.get("/metrics");
    let probes = sample(&metrics, "sshprobe_exporter_probes_total{outcome=\"banner_timeout\"}").unwrap();
    let connections: usize = tarpits.iter().map(Counting::accepted).sum();
    assert_eq!(probes as usize, connections, "one connection per probe:\n{metrics}");
    assert_eq!(sample(&metrics, "sshprobe_exporter_probes_in_flight"), Some(0.0));
    assert_eq!(
        sample(&metrics, "sshprobe_exporter_scrapes_refused_total{reason=\"busy\"}"),
        Some(busy as f64)
    );
    assert_eq!(exporter.get("/-/healthy").0, 200);
}

#[test]
fn ipv6_targets() {
    let Ok(listener) = TcpListener::bind("[::1]:0") else {
        let _ = writeln!(std::io::stderr(), "\n*** SKIPPED serve ipv6_targets: no ::1 on this host ***\n");
        return;
    };
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("one connection");
        stream.write_all(b"SSH-2.0-OpenSSH_9.9 v6\r\n").unwrap();
    });
    let exporter = Exporter::start(&[]);
    let (status, body) = exporter.get(&format!("/probe?target=[::1]:{}", addr.port()));
    assert_eq!(status, 200, "{body}");
    outcome_is(&body, "banner");
    assert_eq!(sample(&body, "probe_ip_protocol"), Some(6.0));
    server.join().unwrap();
}
