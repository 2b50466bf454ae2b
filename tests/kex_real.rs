//! Reading the server's KEXINIT (`ProbeRequest::kex`, `probe --kex`) against real servers and small
//! servers of the test's own, on both engines.
//!
//! Real servers: Debian's sshd 9.2, OpenSSH 10 (the trixie root), dropbear; every list must be what
//! `sshd -T` says the server offers, `strict_kex` and `post_quantum` right for each. Small servers
//! here for what no installed server offers on demand: legacy-only offers, ChaCha20 without strict
//! KEX, CBC with EtM, a KEXINIT split across segments, a length that lies, a 35,000-byte packet,
//! name-lists with control bytes and empty names. The raw engine's half needs root (skipped loudly
//! otherwise).

mod common;

use common::{have, is_root, jsonl, openssh10_root, Dropbear, Server, Sshd};
use sshprobe::engine::connect::ConnectEngine;
use sshprobe::engine::raw::{RawEngine, RawOptions};
use sshprobe::engine::{Engine, EngineConfig, ProbeRequest};
use sshprobe::evidence::{End, Observation, ProbeOrder};
use sshprobe::kexinit::openssh::{self, Kind};
use sshprobe::kexinit::{wrap_payload, KexError, KexInit, KexRead, STRICT_KEX_SERVER};
use sshprobe::outcome::{classify, Outcome};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::time::{Duration, Instant};

fn request(addr: SocketAddr, order: ProbeOrder) -> ProbeRequest {
    ProbeRequest::new(addr).order(order).timeouts(Duration::from_secs(3), Duration::from_secs(5)).kex(true)
}

/// The observations of every engine this run can use (connect always; raw as root), in both orders.
async fn probe_all(addr: SocketAddr, config: EngineConfig) -> Vec<(String, Observation)> {
    let mut out = Vec::new();
    for order in [ProbeOrder::WaitForBanner, ProbeOrder::SendFirst] {
        let obs = ConnectEngine::new(config).probe(request(addr, order)).await;
        out.push((format!("connect {order:?}"), obs));
        if is_root() {
            let raw = RawEngine::new(config, RawOptions::default()).expect("the raw engine");
            out.push((format!("raw {order:?}"), raw.probe(request(addr, order)).await));
        }
    }
    out
}

fn kexinit<'a>(what: &str, obs: &'a Observation) -> &'a KexInit {
    assert_eq!(classify(obs).outcome, Outcome::Banner, "{what}: {obs:?}");
    match &obs.kexinit {
        Some(KexRead::Kexinit(k)) => k,
        other => panic!("{what}: no KEXINIT: {other:?}; end {:?}", obs.end),
    }
}

fn failure<'a>(what: &str, obs: &'a Observation) -> &'a KexError {
    assert_eq!(classify(obs).outcome, Outcome::Banner, "{what}: {obs:?}");
    match &obs.kexinit {
        Some(KexRead::Failed(e)) => e,
        other => panic!("{what}: expected a malformation, got {other:?}"),
    }
}

/// `sshd -T`'s list for `key`, for the server's own config (inside the root when chrooted).
fn sshd_t(server: &Server, root: Option<&std::path::Path>, key: &str) -> Vec<String> {
    let config = server.dir().join("sshd_config");
    let mut cmd = match root {
        Some(root) => {
            let mut c = Command::new("chroot");
            let seen = std::path::Path::new("/").join(config.strip_prefix(root).expect("inside the root"));
            c.arg(root).args(["/usr/sbin/sshd", "-T", "-f"]).arg(seen);
            c
        }
        None => {
            let mut c = Command::new("sshd");
            c.args(["-T", "-f"]).arg(&config);
            c
        }
    };
    let out = cmd.args(["-C", "user=x,host=x,addr=127.0.0.1"]).output().expect("sshd -T");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{key} ")))
        .unwrap_or_else(|| panic!("sshd -T has no {key}: {text} {}", String::from_utf8_lossy(&out.stderr)));
    line[key.len() + 1..].split(',').map(str::to_string).collect()
}

fn check_openssh(server: &Server, root: Option<&std::path::Path>, k: &KexInit, what: &str) {
    let mut kex = sshd_t(server, root, "kexalgorithms");
    kex.retain(|n| !n.starts_with("ext-info") && !n.starts_with("kex-strict"));
    let offered: Vec<String> =
        k.kex_algorithms.names().filter(|n| !sshprobe::kexinit::is_pseudo_kex(n)).map(String::from).collect();
    assert_eq!(offered, kex, "{what}");
    assert_eq!(k.encryption_algorithms_client_to_server.0, sshd_t(server, root, "ciphers"), "{what}");
    assert_eq!(k.encryption_algorithms_server_to_client.0, sshd_t(server, root, "ciphers"), "{what}");
    assert_eq!(k.mac_algorithms_client_to_server.0, sshd_t(server, root, "macs"), "{what}");
    // One ed25519 host key: that is all it can offer.
    assert_eq!(k.server_host_key_algorithms.0, ["ssh-ed25519"], "{what}");
    assert!(k.strict_kex() && !k.terrapin_exposed() && k.post_quantum(), "{what}");
    assert!(!openssh::check(k).fails(), "{what}");
}

#[tokio::test]
async fn debian_sshd_9_2_offers_what_sshd_t_says() {
    if !have("kex_sshd92", &["sshd"]) {
        return;
    }
    let sshd = Sshd::new().start();
    for (what, obs) in probe_all(sshd.addr, EngineConfig::default()).await {
        let k = kexinit(&what, &obs);
        check_openssh(&sshd, None, k, &what);
        assert_eq!(k.preferred_kex(), Some("sntrup761x25519-sha512"), "{what}");
        assert_eq!(obs.end, Some(End::WeClosed), "{what}");
        assert!(obs.sent_ident, "{what}: OpenSSH sends nothing before our ident");
    }
}

#[tokio::test]
async fn openssh_10_offers_mlkem_first() {
    let Some(root) = openssh10_root("kex_openssh10") else { return };
    let sshd = Sshd::new().chroot(&root).start();
    for (what, obs) in probe_all(sshd.addr, EngineConfig::default()).await {
        let k = kexinit(&what, &obs);
        check_openssh(&sshd, Some(&root), k, &what);
        assert_eq!(k.preferred_kex(), Some("mlkem768x25519-sha256"), "{what}");
        assert!(k.kex_algorithms.contains("ext-info-s"), "{what}");
    }
}

#[tokio::test]
async fn dropbear_sends_it_without_waiting_and_it_is_read() {
    if !have("kex_dropbear", &["dropbear", "dropbearkey"]) {
        return;
    }
    let server = Dropbear::new().start();
    for (what, obs) in probe_all(server.addr, EngineConfig::default()).await {
        let k = kexinit(&what, &obs);
        assert_eq!(k.preferred_kex(), Some("curve25519-sha256"), "{what}");
        assert!(k.server_host_key_algorithms.contains("ssh-ed25519"), "{what}");
        assert!(k.strict_kex() && !k.post_quantum() && !k.terrapin_exposed(), "{what}");
    }
}

#[test]
fn probe_kex_jsonl_and_csv_carry_it() {
    if !have("kex_cli", &["sshd"]) {
        return;
    }
    let sshd = Sshd::new().start();
    let addr = sshd.addr.to_string();
    let (lines, out) = jsonl(&["probe", "--kex", "-o", "jsonl", &addr]);
    assert_eq!(lines.len(), 1, "{}", String::from_utf8_lossy(&out.stderr));
    let k = &lines[0]["kexinit"];
    assert_eq!(k["server_host_key_algorithms"], serde_json::json!(["ssh-ed25519"]));
    assert_eq!((k["strict_kex"].as_bool(), k["post_quantum"].as_bool()), (Some(true), Some(true)));
    assert_eq!(k["terrapin_exposed"], false);
    assert_eq!(k["languages_server_to_client"], serde_json::json!([]));
    // Without --kex: no object, and the probe closes right after the banner as before.
    let (lines, _) = jsonl(&["probe", "-o", "jsonl", &addr]);
    assert!(lines[0].get("kexinit").is_none());
    let csv = common::sshprobe().args(["probe", "--kex", "-o", "csv", &addr]).output().unwrap();
    let text = String::from_utf8_lossy(&csv.stdout);
    let mut rows = text.lines();
    assert!(rows.next().unwrap().ends_with(",time,kexinit"));
    assert!(rows
        .next()
        .unwrap()
        .ends_with(",kex=sntrup761x25519-sha512 hostkey=ssh-ed25519 strict=yes terrapin=no pq=yes"));
}

// ---------------------------------------------------------------------------------------------
// Small servers of our own
// ---------------------------------------------------------------------------------------------

/// What a small server sends after its ident line.
struct Script {
    /// Wait for the client's ident first, as OpenSSH does (dropbear does not).
    wait_for_client: bool,
    /// The chunks to send, each written and flushed alone with a pause between (TCP_NODELAY).
    chunks: Vec<Vec<u8>>,
}

/// A server on 127.0.0.1 that serves up to `connections` clients with `script`, each in a thread of
/// its own (a diagnosis holds connections), then ends; bounded in time (30 s), joined when dropped.
struct Tiny {
    addr: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Tiny {
    fn start(script: Script, connections: usize) -> Tiny {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding");
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let script = std::sync::Arc::new(script);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut served = Vec::new();
            let going = || !stopped.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline;
            while served.len() < connections && going() {
                let s = match listener.accept() {
                    Ok((s, _)) => s,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                let script = script.clone();
                served.push(std::thread::spawn(move || serve(s, &script)));
            }
            for t in served {
                let _ = t.join();
            }
        });
        Tiny { addr, stop, thread: Some(thread) }
    }
}

/// One connection of a [`Tiny`] server.
fn serve(mut s: std::net::TcpStream, script: &Script) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
    let _ = s.write_all(b"SSH-2.0-TinyKex_1.0\r\n");
    if script.wait_for_client {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\n") && line.len() < 256 {
            match s.read(&mut byte) {
                Ok(1) => line.push(byte[0]),
                _ => break,
            }
        }
    }
    for chunk in &script.chunks {
        if s.write_all(chunk).is_err() {
            break;
        }
        let _ = s.flush();
        std::thread::sleep(Duration::from_millis(15));
    }
    // Until the client closes (or 20 s of silence: a diagnosis holds connections that long).
    let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
    let mut sink = [0u8; 512];
    while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
}

impl Drop for Tiny {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
fn offer(kex: &[&str], hostkey: &[&str], ciphers: &[&str], macs: &[&str]) -> KexInit {
    KexInit::offering(kex, hostkey, ciphers, macs)
}

/// How many connections one probe_all takes.
fn connections() -> usize {
    if is_root() {
        4
    } else {
        2
    }
}

async fn serve_and_probe(script: Script, config: EngineConfig) -> Vec<(String, Observation)> {
    let tiny = Tiny::start(script, connections());
    let all = probe_all(tiny.addr, config).await;
    drop(tiny);
    all
}

fn whole(packet: Vec<u8>, wait_for_client: bool) -> Script {
    Script { wait_for_client, chunks: vec![packet] }
}

#[tokio::test]
async fn a_legacy_only_server_is_one_no_current_openssh_client_can_talk_to() {
    let legacy = offer(
        &["diffie-hellman-group1-sha1"],
        &["ssh-dss"],
        &["3des-cbc", "aes128-cbc"],
        &["hmac-md5", "hmac-sha1"],
    );
    for (what, obs) in serve_and_probe(whole(legacy.emit_packet(), true), EngineConfig::default()).await {
        let k = kexinit(&what, &obs);
        assert_eq!(k, &legacy, "{what}");
        assert!(!k.strict_kex() && !k.post_quantum() && !k.terrapin_exposed(), "{what}");
        let n = openssh::check(k);
        assert_eq!(
            n.missing.iter().map(|m| m.kind).collect::<Vec<_>>(),
            [Kind::Kex, Kind::HostKey, Kind::Cipher]
        );
        assert!(n.newest_fails());
    }
}

#[tokio::test]
async fn chacha20_without_strict_kex_and_cbc_with_etm_are_terrapin_exposed() {
    let chacha = offer(
        &["curve25519-sha256"],
        &["ssh-ed25519"],
        &["chacha20-poly1305@openssh.com"],
        &["hmac-sha2-256"],
    );
    let cbc_etm =
        offer(&["curve25519-sha256"], &["ssh-ed25519"], &["aes256-cbc"], &["hmac-sha2-256-etm@openssh.com"]);
    let mut strict = chacha.clone();
    strict.kex_algorithms.0.push(STRICT_KEX_SERVER.into());
    for (sent, exposed) in [(chacha, true), (cbc_etm, true), (strict, false)] {
        // Sent without waiting for our ident, like dropbear.
        for (what, obs) in serve_and_probe(whole(sent.emit_packet(), false), EngineConfig::default()).await {
            let k = kexinit(&what, &obs);
            assert_eq!((k, k.terrapin_exposed()), (&sent, exposed), "{what}");
        }
    }
}

#[tokio::test]
async fn a_kexinit_split_across_segments_is_joined() {
    let packet =
        offer(&["curve25519-sha256"], &["ssh-ed25519"], &["aes128-ctr"], &["hmac-sha2-256"]).emit_packet();
    let chunks =
        vec![packet[..2].to_vec(), packet[2..9].to_vec(), packet[9..60].to_vec(), packet[60..].to_vec()];
    for (what, obs) in
        serve_and_probe(Script { wait_for_client: true, chunks }, EngineConfig::default()).await
    {
        assert_eq!(kexinit(&what, &obs).preferred_kex(), Some("curve25519-sha256"), "{what}");
    }
}

#[tokio::test]
async fn a_packet_length_that_lies_is_named_at_once() {
    // 2 GiB announced, then a few bytes, then nothing: the probe must not wait for the rest.
    let lie = vec![0x7f, 0xff, 0xff, 0xf8, 4, 20, 0, 0];
    for (what, obs) in serve_and_probe(whole(lie, true), EngineConfig::default()).await {
        assert!(matches!(failure(&what, &obs), KexError::LengthTooLarge { length: 0x7fff_fff8 }), "{what}");
        assert_eq!(obs.end, Some(End::WeClosed), "{what}");
    }
}

/// A valid KEXINIT of exactly 35,000 bytes (a long kex list).
fn big_kexinit() -> Vec<u8> {
    let mut k = offer(&[], &["ssh-ed25519"], &["aes128-ctr"], &["hmac-sha2-256"]);
    let mut i = 0;
    while k.emit_packet().len() < 35_000 - 40 {
        k.kex_algorithms.0.push(format!("x{i:05}@example.com"));
        i += 1;
    }
    let mut packet = k.emit_packet();
    // Pad the last name up to exactly 35,000 bytes, still aligned (whole blocks of 8).
    while packet.len() < 35_000 {
        let last = k.kex_algorithms.0.last_mut().unwrap();
        last.push_str("12345678");
        packet = k.emit_packet();
    }
    assert_eq!(packet.len(), 35_000);
    packet
}

#[tokio::test]
async fn a_35000_byte_kexinit_exceeds_the_default_cap_and_is_read_with_a_larger_one() {
    let packet = big_kexinit();
    for (what, obs) in serve_and_probe(whole(packet.clone(), true), EngineConfig::default()).await {
        let room = 8 * 1024 - "SSH-2.0-TinyKex_1.0\r\n".len();
        assert_eq!(failure(&what, &obs), &KexError::ExceedsCap { bytes: 35_000, room }, "{what}");
        // Decided from the length: nothing more read than what came with it.
        assert!(obs.received.len() < 8 * 1024, "{what}: {} bytes", obs.received.len());
    }
    let config = EngineConfig { byte_cap: 64 * 1024, ..EngineConfig::default() };
    for (what, obs) in serve_and_probe(whole(packet, true), config).await {
        let k = kexinit(&what, &obs);
        assert_eq!(k.emit_packet().len(), 35_000, "{what}");
        assert!(k.kex_algorithms.0.len() > 1_000, "{what}");
    }
}

fn raw_kex_list(list: &[u8]) -> Vec<u8> {
    let mut payload = vec![20];
    payload.extend([7; 16]);
    payload.extend((list.len() as u32).to_be_bytes());
    payload.extend(list);
    for _ in 0..9 {
        payload.extend(0u32.to_be_bytes());
    }
    payload.extend([0, 0, 0, 0, 0]);
    wrap_payload(&payload)
}

#[tokio::test]
async fn control_bytes_and_empty_names_are_malformations_shown_safely() {
    let cases: [(&[u8], KexError); 2] = [
        (
            b"curve25519-sha256,\x1b]0;owned\x07",
            KexError::BadNameByte { field: "kex_algorithms", index: 1, byte: 0x1b },
        ),
        (b"curve25519-sha256,,ecdh-sha2-nistp256", KexError::EmptyName { field: "kex_algorithms", index: 1 }),
    ];
    for (list, want) in cases {
        for (what, obs) in serve_and_probe(whole(raw_kex_list(list), true), EngineConfig::default()).await {
            let e = failure(&what, &obs);
            assert_eq!(e, &want, "{what}");
            assert!(!obs.kexinit.as_ref().unwrap().to_string().contains('\x1b'));
        }
    }
}

#[test]
fn probe_kex_shows_a_malformation_in_every_format() {
    let tiny = Tiny::start(whole(raw_kex_list(b"a,\x1b[2J"), true), 3);
    let addr = tiny.addr.to_string();
    let (lines, _) = jsonl(&["probe", "--kex", "-o", "jsonl", &addr]);
    assert_eq!(lines[0]["kexinit"]["error"], "bad_name_byte");
    assert!(lines[0]["kexinit"]["detail"].as_str().unwrap().contains("0x1b"));
    let table = common::sshprobe().args(["probe", "--kex", &addr]).output().unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("kexinit: error=bad_name_byte"), "{text}");
    assert!(!text.contains('\x1b'));
    let csv = common::sshprobe().args(["probe", "--kex", "-o", "csv", &addr]).output().unwrap();
    assert!(String::from_utf8_lossy(&csv.stdout).lines().nth(1).unwrap().ends_with(",error=bad_name_byte"));
}

// ---------------------------------------------------------------------------------------------
// diagnose
// ---------------------------------------------------------------------------------------------

fn diagnose(target: &str) -> serde_json::Value {
    let (mut lines, out) = jsonl(&["diagnose", target, "-o", "jsonl", "--max-held", "2"]);
    assert_eq!(lines.len(), 1, "stderr: {}", String::from_utf8_lossy(&out.stderr));
    lines.remove(0)
}

fn texts(d: &serde_json::Value, key: &str) -> Vec<String> {
    d[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {d}"))
        .iter()
        .map(|e| e.get("text").and_then(|t| t.as_str()).or(e.as_str()).unwrap_or_default().to_string())
        .collect()
}

#[test]
fn diagnose_calls_a_legacy_only_server_legacy_algorithms_with_the_missing_kinds() {
    let legacy = offer(
        &["diffie-hellman-group1-sha1"],
        &["ssh-dss"],
        &["3des-cbc", "aes128-cbc"],
        &["hmac-md5", "hmac-sha1"],
    );
    let tiny = Tiny::start(whole(legacy.emit_packet(), true), 200);
    let d = diagnose(&tiny.addr.to_string());
    assert_eq!(d["verdict"], "legacy_algorithms", "{d}");
    let missing: Vec<&str> = d["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "clients_cannot_negotiate")
        .map(|e| e["missing"].as_str().unwrap())
        .collect();
    assert_eq!(missing, ["kex", "host_key", "cipher"], "{d}");
    let evidence = texts(&d, "evidence").join("\n");
    assert!(evidence.contains("-o HostKeyAlgorithms=+ssh-dss"), "{evidence}");
    assert!(evidence.contains("no matching key exchange method found"), "{evidence}");
    let remedy = texts(&d, "remedy").join("\n");
    assert!(remedy.contains("weakens") && remedy.contains("sshd_config"), "{remedy}");
}

#[test]
fn diagnose_notes_terrapin_and_no_post_quantum_beside_ok() {
    let chacha = offer(
        &["curve25519-sha256"],
        &["ssh-ed25519"],
        &["chacha20-poly1305@openssh.com"],
        &["hmac-sha2-256"],
    );
    let tiny = Tiny::start(whole(chacha.emit_packet(), true), 200);
    let d = diagnose(&tiny.addr.to_string());
    assert_eq!(d["verdict"], "ok", "{d}");
    let notes = texts(&d, "notes").join("\n");
    assert!(notes.contains("Terrapin") && notes.contains("no post-quantum"), "{notes}");
}

#[test]
fn diagnose_reads_the_kexinit_of_real_servers() {
    if !have("kex_diagnose_real", &["sshd", "dropbear", "dropbearkey"]) {
        return;
    }
    let sshd = Sshd::new().start();
    let d = diagnose(&sshd.addr.to_string());
    assert_eq!(d["verdict"], "ok", "{d}");
    let offer = d["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "kex_offer")
        .expect("kex_offer")
        .clone();
    assert_eq!(
        (offer["strict_kex"].as_bool(), offer["post_quantum"].as_bool()),
        (Some(true), Some(true)),
        "{d}"
    );
    assert!(!texts(&d, "notes").join(" ").contains("Terrapin"), "{d}");
    let server = Dropbear::new().start();
    let d = diagnose(&server.addr.to_string());
    assert_eq!(d["verdict"], "ok", "{d}");
    assert!(texts(&d, "notes").join(" ").contains("no post-quantum"), "{d}");
}

// ---------------------------------------------------------------------------------------------
// serve
// ---------------------------------------------------------------------------------------------

#[test]
fn serve_exports_the_kex_metrics_to_a_real_prometheus() {
    use common::prometheus::{need_prometheus, sample, scrape_config, Exporter, Prometheus};
    if !need_prometheus("kex_serve_prometheus", &["sshd", "prometheus"]) {
        return;
    }
    let sshd = Sshd::new().start();
    let chacha = offer(
        &["curve25519-sha256"],
        &["ssh-ed25519"],
        &["chacha20-poly1305@openssh.com"],
        &["hmac-sha2-256"],
    );
    let tiny = Tiny::start(whole(chacha.emit_packet(), true), 100);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sshprobe.toml");
    std::fs::write(&config, "[modules.default]\nkex = true\n").unwrap();
    let exporter = Exporter::start(&["--config", config.to_str().unwrap()]);

    // The exporter's answer itself.
    let (status, text) = exporter.get(&format!("/probe?target={}", tiny.addr));
    assert_eq!(status, 200, "{text}");
    assert_eq!(sample(&text, "sshprobe_terrapin_exposed"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "sshprobe_kex_strict"), Some(0.0), "{text}");
    assert_eq!(sample(&text, "sshprobe_post_quantum_kex"), Some(0.0), "{text}");

    let prometheus = Prometheus::start(&scrape_config(exporter.addr, &[sshd.addr, tiny.addr], "1s"));
    let value = |expr: &str| prometheus.query(expr)[0]["value"][1].as_str().map(String::from);
    let strict = format!("sshprobe_kex_strict{{instance=\"{}\"}}", sshd.addr);
    let exposed = format!("sshprobe_terrapin_exposed{{instance=\"{}\"}}", tiny.addr);
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && (value(&strict).is_none() || value(&exposed).is_none()) {
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        value(&strict).as_deref(),
        Some("1"),
        "exporter:\n{}\nprometheus:\n{}",
        exporter.log(),
        prometheus.log()
    );
    assert_eq!(value(&exposed).as_deref(), Some("1"));
    assert_eq!(
        value(&format!("sshprobe_post_quantum_kex{{instance=\"{}\"}}", sshd.addr)).as_deref(),
        Some("1")
    );
    assert_eq!(
        value(&format!("sshprobe_terrapin_exposed{{instance=\"{}\"}}", sshd.addr)).as_deref(),
        Some("0")
    );
    let info = prometheus.query(&format!("sshprobe_kex_info{{instance=\"{}\"}}", sshd.addr));
    assert_eq!(info[0]["metric"]["kex"], "sntrup761x25519-sha512", "{info}");
    assert_eq!(info[0]["metric"]["host_key"], "ssh-ed25519", "{info}");
    // The dashboard's key-exchange panel finds data.
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../docs/grafana/sshprobe-dashboard.json"))
            .expect("dashboard JSON");
    let panel = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["description"].as_str().unwrap_or("").contains("kex = true"))
        .expect("the key-exchange panel");
    for target in panel["targets"].as_array().unwrap() {
        let expr = target["expr"].as_str().unwrap().replace("$job", "sshprobe").replace("$instance", ".*");
        let result = prometheus.query(&expr);
        assert!(result.as_array().is_some_and(|r| r.len() == 2), "dashboard query {expr}: {result}");
    }
}
