//! The raw engine against the embedded lab on loopback: for every behaviour, probe order and close
//! mode, it must reach the same outcome as the connect engine, and its trace must show the segments
//! that explain it.
//!
//! Needs root (raw sockets and an nftables rule): skipped, loudly, otherwise.

mod common;

use sshprobe::engine::connect::ConnectEngine;
use sshprobe::engine::raw::{RawEngine, RawOptions};
use sshprobe::engine::{Engine, EngineConfig, Held, ProbeRequest};
use sshprobe::evidence::{CloseMode, Connect, Direction, End, Observation, ProbeOrder};
use sshprobe::lab::{Behaviour, Lab, LabConfig, MaxStartups};
use sshprobe::outcome::{classify, Outcome};
use sshprobe::packet::TcpOption;
use std::net::SocketAddr;
use std::time::Duration;

macro_rules! require_root {
    () => {
        if !common::need_root(test_name!()) {
            return;
        }
    };
}

/// An engine configuration and the probe every test engine makes: the order and deadlines travel
/// with each probe, the close mode with the engine.
#[derive(Clone)]
struct Setup {
    engine: EngineConfig,
    request: ProbeRequest,
}

fn config(order: ProbeOrder, close: CloseMode) -> Setup {
    let request = ProbeRequest::new(SocketAddr::from(([127, 0, 0, 1], 0)))
        .order(order)
        .timeouts(Duration::from_secs(2), Duration::from_millis(1500));
    Setup { engine: EngineConfig { close, ..EngineConfig::default() }, request }
}

/// A raw engine, as `cfg` says.
fn raw_engine(cfg: &Setup) -> RawEngine {
    RawEngine::new(cfg.engine, RawOptions::default()).expect("the raw engine")
}

async fn lab() -> Lab {
    Lab::start(LabConfig {
        deny_delay: Duration::from_millis(200),
        slow_interval: Duration::from_millis(5),
        maxstartups: MaxStartups { start: 100, rate: 100, full: 100 },
        ..LabConfig::default()
    })
    .await
    .expect("starting the lab")
}

async fn probe(engine: &impl Engine, cfg: &Setup, remote: SocketAddr) -> Observation {
    engine.probe(cfg.request.to(remote, None)).await
}

/// Flags of the trace, `>` for ours and `<` for theirs.
fn flags(obs: &Observation) -> Vec<String> {
    obs.packets
        .iter()
        .map(|p| format!("{}{}", if p.dir == Direction::Out { ">" } else { "<" }, p.kind))
        .collect()
}

/// A port nothing listens on.
fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_and_connect_agree_on_every_lab_behaviour() {
    require_root!();
    let lab = lab().await;
    let behaviours = [
        (Behaviour::Ok, Outcome::Banner),
        // docs/facts.md §2: the same silent refusal is a FIN to a probe that waits, an RST to one that spoke.
        (Behaviour::DenyClose, Outcome::ClosedBeforeBanner),
        (Behaviour::DenyReset, Outcome::ResetBeforeBanner),
        (Behaviour::Tarpit, Outcome::BannerTimeout),
        (Behaviour::Slow, Outcome::Banner),
        (Behaviour::NotSsh, Outcome::NotSsh),
        (Behaviour::Endless, Outcome::NotSsh),
        (Behaviour::Prebanner, Outcome::Banner),
        (Behaviour::Ssh1, Outcome::ProtocolMismatch),
    ];
    for order in [ProbeOrder::WaitForBanner, ProbeOrder::SendFirst] {
        for close in [CloseMode::Fin, CloseMode::Rst] {
            let cfg = config(order, close);
            let raw = raw_engine(&cfg);
            let connect = ConnectEngine::new(cfg.engine);
            for (behaviour, expected) in behaviours {
                let expected = match (behaviour, order) {
                    (Behaviour::DenyClose, ProbeOrder::SendFirst) => Outcome::ResetBeforeBanner,
                    _ => expected,
                };
                let addr = lab.addr(behaviour);
                let (r, c) = tokio::join!(probe(&raw, &cfg, addr), probe(&connect, &cfg, addr));
                let (ro, co) = (classify(&r).outcome, classify(&c).outcome);
                assert_eq!(
                    (ro, co),
                    (expected, expected),
                    "{behaviour} {order:?} {close:?}: raw {ro} connect {co}\nraw trace {:?}",
                    flags(&r)
                );
                // How the connection ended must agree too, except where it is a race on the
                // server's side: the lab's HTTP reply is written and closed at once, so whether a
                // send-first client's ident is already queued (RST) or not yet (FIN) varies.
                if !(behaviour == Behaviour::NotSsh && order == ProbeOrder::SendFirst) {
                    assert_eq!(r.end, c.end, "{behaviour} {order:?} {close:?}: {:?}", flags(&r));
                }
                assert!(r.local.is_some_and(|l| raw.ports().contains(&l.port())));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn banner_trace_shows_the_handshake_the_exchange_and_the_close() {
    require_root!();
    let lab = lab().await;
    let cfg = config(ProbeOrder::WaitForBanner, CloseMode::Fin);
    let raw = raw_engine(&cfg);
    let obs = probe(&raw, &cfg, lab.addr(Behaviour::Ok)).await;
    assert_eq!(classify(&obs).outcome, Outcome::Banner);
    assert_eq!((obs.end, obs.sent_ident), (Some(End::WeClosed), true));
    let f = flags(&obs);
    // After the banner, one segment: its ACK, our ident and our FIN.
    assert_eq!(f[..5], [">S", "<SA", ">A", "<PA", ">FPA"], "{f:?}");
    assert_eq!(obs.packets[4].len, sshprobe::engine::DEFAULT_IDENT.len() + 2, "{f:?}");
    // Then the server's end: a FIN, or, as sshd does, its KEXINIT in answer to our ident, which
    // our closed side answers with an RST.
    let rest = &f[5..];
    assert!(
        rest.iter().any(|s| s.starts_with('<') && s.contains('F'))
            || (rest.first().is_some_and(|s| s == "<PA") && rest.contains(&">R".to_string())),
        "{f:?}"
    );
    let syn = &obs.packets[0];
    assert_eq!(syn.options(), [TcpOption::MaxSegmentSize(1460)]);
    assert_eq!((syn.seq, syn.ttl), (0, 64));
    let synack = &obs.packets[1];
    assert_eq!((synack.seq, synack.ack), (0, 1));
    assert!(synack.options().iter().any(|o| matches!(o, TcpOption::MaxSegmentSize(_))), "{synack:?}");
    let banner = &obs.packets[3];
    assert_eq!(banner.len, sshprobe::lab::LAB_BANNER.len());
    let t = obs.timings;
    assert!(t.connected.unwrap() <= t.first_byte.unwrap() && t.first_byte <= t.ident && t.ident <= t.closed);
    assert_eq!(t.connected, Some(synack.t_us));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_is_an_rst_to_the_syn() {
    require_root!();
    let cfg = config(ProbeOrder::WaitForBanner, CloseMode::Fin);
    let raw = raw_engine(&cfg);
    let addr = closed_port();
    let obs = probe(&raw, &cfg, addr).await;
    let c = probe(&ConnectEngine::new(cfg.engine), &cfg, addr).await;
    assert_eq!((obs.connect.clone(), c.connect), (Connect::Refused, Connect::Refused));
    assert_eq!(flags(&obs), [">S", "<RA"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_loopback_works_too() {
    require_root!();
    let Ok(listener) = tokio::net::TcpListener::bind("[::1]:0").await else {
        common::skip(test_name!(), "no ::1 on this host");
        return;
    };
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s.write_all(b"SSH-2.0-v6test\r\n").await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let cfg = config(ProbeOrder::SendFirst, CloseMode::Rst);
    let raw = raw_engine(&cfg);
    let obs = probe(&raw, &cfg, addr).await;
    assert_eq!(classify(&obs).outcome, Outcome::Banner, "{:?}", flags(&obs));
    assert_eq!(obs.local.map(|l| l.ip()), Some("::1".parse().unwrap()));
    assert!(obs.packets.iter().filter(|p| p.dir == Direction::In).all(|p| p.ttl == 64), "{:?}", obs.packets);
    assert_eq!(flags(&obs).last().map(String::as_str), Some(">RA"));
}

/// Thousands of probes at once: the lab's accept queue would overflow (for both engines alike: SYN
/// cookies, dropped ACKs), so most go to a closed port, whose RSTs come from the kernel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_probes_in_flight_share_one_receive_thread() {
    require_root!();
    let lab = lab().await;
    let cfg = config(ProbeOrder::WaitForBanner, CloseMode::Rst);
    let raw = raw_engine(&cfg);
    let (ok, closed) = (lab.addr(Behaviour::Ok), closed_port());
    let mut set = tokio::task::JoinSet::new();
    for i in 0..2100 {
        let raw = raw.clone();
        let addr = if i % 21 == 0 { ok } else { closed };
        let cfg = cfg.clone();
        set.spawn(async move { probe(&raw, &cfg, addr).await });
    }
    let results: Vec<Observation> = set.join_all().await;
    let count = |o: Outcome| results.iter().filter(|r| classify(r).outcome == o).count();
    assert_eq!((count(Outcome::Banner), count(Outcome::Refused)), (100, 2000));
    let mut ports: Vec<u16> = results.iter().filter_map(|o| o.local.map(|l| l.port())).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 2100, "every probe had its own port");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_address_is_used_and_must_be_ours() {
    require_root!();
    let lab = lab().await;
    let cfg = config(ProbeOrder::WaitForBanner, CloseMode::Rst);
    let raw = raw_engine(&cfg);
    let connect = ConnectEngine::new(cfg.engine);
    let remote = lab.addr(Behaviour::Ok);
    // Any 127/8 address is this host's (the lab listens on 127.0.0.1).
    let source = Some("127.0.0.9".parse().unwrap());
    let obs = raw.probe(cfg.request.to(remote, source)).await;
    assert_eq!(classify(&obs).outcome, Outcome::Banner);
    assert_eq!(obs.local.map(|l| l.ip()), source);
    // 192.0.2.1 (TEST-NET-1) is not: both engines fail locally, neither sends a packet.
    let source = Some("192.0.2.1".parse().unwrap());
    let (r, c) = tokio::join!(
        raw.probe(cfg.request.to(remote, source)),
        connect.probe(cfg.request.to(remote, source))
    );
    assert_eq!((classify(&r).outcome, classify(&c).outcome), (Outcome::LocalError, Outcome::LocalError));
    assert!(r.packets.is_empty());
}

/// A probe whose future is dropped (a cancelled run, a caller's timeout) releases the connection at
/// once: the server sees a reset, not a connection held until our banner deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_probe_resets_its_connection() {
    require_root!();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut cfg = config(ProbeOrder::WaitForBanner, CloseMode::Fin);
    cfg.request.banner_timeout = Duration::from_secs(30);
    let raw = raw_engine(&cfg);
    let server = tokio::task::spawn_blocking(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 64];
        (std::io::Read::read(&mut conn, &mut buf).map_err(|e| e.kind()), started.elapsed())
    });
    let cancelled = tokio::time::timeout(Duration::from_millis(300), probe(&raw, &cfg, addr)).await;
    assert!(cancelled.is_err(), "the tarpit never answers: the probe is still waiting");
    let (read, after) = server.await.unwrap();
    assert_eq!(read, Err(std::io::ErrorKind::ConnectionReset), "after {after:?}");
    // (Not one second later, when the flow's first timer would notice nobody waits.)
    assert!(after < Duration::from_millis(800), "reset only after {after:?}");
}

/// The raw engine holds a connection as the connect engine does: the banner, then silence until the
/// server ends it (the lab's LoginGraceTime), which `ended` reports as the server's FIN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_hold_reports_the_servers_close() {
    require_root!();
    let lab = Lab::start(LabConfig { grace: Duration::from_millis(400), ..LabConfig::default() })
        .await
        .expect("starting the lab");
    let cfg = config(ProbeOrder::SendFirst, CloseMode::Fin);
    let raw = raw_engine(&cfg);
    let mut held = raw.hold(cfg.request.to(lab.addr(Behaviour::Ok), None)).await.expect("a held connection");
    let obs = held.observation().clone();
    assert_eq!(classify(&obs).outcome, Outcome::Banner);
    // A hold never speaks, even with send-first configured.
    assert!(!obs.sent_ident);
    assert_eq!(obs.end, None);
    let end = tokio::time::timeout(Duration::from_secs(5), held.ended()).await.expect("the lab's grace");
    assert_eq!(end.end, End::Fin);
    assert!(end.after >= Duration::from_millis(350), "{end:?}");
}

/// Dropping a raw hold releases the connection at once: the server reads a reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_raw_hold_resets_its_connection() {
    require_root!();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::task::spawn_blocking(move || {
        let (mut conn, _) = listener.accept().unwrap();
        std::io::Write::write_all(&mut conn, b"SSH-2.0-held\r\n").unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        std::io::Read::read(&mut conn, &mut buf).map_err(|e| e.kind())
    });
    let cfg = config(ProbeOrder::WaitForBanner, CloseMode::Fin);
    let raw = raw_engine(&cfg);
    let held = raw.hold(cfg.request.to(addr, None)).await.expect("a held connection");
    drop(held);
    assert_eq!(server.await.unwrap(), Err(std::io::ErrorKind::ConnectionReset));
}
