//! The raw engine against real servers (Debian's sshd, dropbear), on loopback and through a
//! network namespace: for each server behaviour it reaches the same outcome as the connect engine,
//! and its trace shows the segments behind it.
//!
//! Needs root: skipped, loudly, otherwise.

mod common;

use common::{dropbear, have, hold, root_or_skip, Netns, Nft, Sshd};
use sshprobe::engine::connect::ConnectEngine;
use sshprobe::engine::raw::{RawEngine, RawOptions};
use sshprobe::engine::{Engine, EngineConfig, ProbeRequest};
use sshprobe::evidence::{CloseMode, Connect, Direction, End, Observation, PacketKind, ProbeOrder};
use sshprobe::outcome::{classify, KnownRefusal, Outcome};
use sshprobe::packet::IcmpKind;
use std::net::SocketAddr;
use std::time::Duration;

/// How both engines are set up for a test: the run's engine configuration and the probe.
#[derive(Clone)]
struct Setup {
    engine: EngineConfig,
    request: ProbeRequest,
}

fn config(order: ProbeOrder) -> Setup {
    let request = ProbeRequest::new(SocketAddr::from(([127, 0, 0, 1], 0)))
        .order(order)
        .timeouts(Duration::from_secs(3), Duration::from_secs(10));
    Setup { engine: EngineConfig::default(), request }
}

/// Both engines probe `addr` once each, one after the other (so neither takes a slot the other
/// needs); returns (raw, connect).
async fn both(addr: SocketAddr, cfg: Setup) -> (Observation, Observation) {
    let raw = RawEngine::new(cfg.engine, RawOptions::default()).expect("the raw engine");
    let request = cfg.request.to(addr, None);
    let r = raw.probe(request.clone()).await;
    let c = ConnectEngine::new(cfg.engine).probe(request).await;
    (r, c)
}

/// The trace's flags, `>` ours, `<` theirs.
fn flags(obs: &Observation) -> Vec<String> {
    obs.packets
        .iter()
        .map(|p| format!("{}{}", if p.dir == Direction::Out { ">" } else { "<" }, p.kind))
        .collect()
}

fn agree(r: &Observation, c: &Observation, want: Outcome) {
    let (ro, co) = (classify(r).outcome, classify(c).outcome);
    assert_eq!((ro, co), (want, want), "raw {ro}, connect {co}; raw trace {:?}", flags(r));
}

fn skip(test: &str, programs: &[&str]) -> bool {
    !root_or_skip(test) || !have(test, programs)
}

#[tokio::test]
async fn banner_from_sshd() {
    if skip("raw banner_from_sshd", &["sshd", "unshare"]) {
        return;
    }
    let sshd = Sshd::new().start();
    let (r, c) = both(sshd.addr, config(ProbeOrder::WaitForBanner)).await;
    agree(&r, &c, Outcome::Banner);
    assert_eq!(classify(&r).banner, classify(&c).banner);
    assert_eq!((r.end, r.sent_ident), (Some(End::WeClosed), true));
    // S, SA, A, then the server's line, and one segment with our ACK of it, our line and our FIN;
    // then the server's answer to our line and FIN (its KEXINIT draws an RST: we closed; or its FIN).
    let f = flags(&r);
    assert_eq!(f[..5], [">S", "<SA", ">A", "<PA", ">FPA"], "{f:?}");
    let ours = &r.packets[4];
    assert_eq!((ours.seq, ours.len), (1, sshprobe::engine::DEFAULT_IDENT.len() + 2));
    // The server's segments came over loopback with Linux's TTL.
    assert!(r.packets.iter().filter(|p| p.dir == Direction::In).all(|p| p.ttl == 64));
}

#[tokio::test]
async fn banner_from_dropbear_send_first_rst_close() {
    if skip("raw banner_from_dropbear", &["dropbear", "dropbearkey"]) {
        return;
    }
    let server = dropbear();
    let mut cfg = config(ProbeOrder::SendFirst);
    cfg.engine.close = CloseMode::Rst;
    let (r, c) = both(server.addr, cfg).await;
    agree(&r, &c, Outcome::Banner);
    let f = flags(&r);
    assert_eq!(f[..4], [">S", "<SA", ">A", ">PA"], "{f:?}");
    assert_eq!(f.last().map(String::as_str), Some(">RA"), "{f:?}");
}

#[tokio::test]
async fn nothing_listening_is_refused() {
    if !root_or_skip("raw nothing_listening") {
        return;
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], common::free_port()));
    let (r, c) = both(addr, config(ProbeOrder::WaitForBanner)).await;
    agree(&r, &c, Outcome::Refused);
    assert_eq!(flags(&r), [">S", "<RA"]);
}

#[tokio::test]
async fn wrappers_denial_is_a_fin_or_an_rst_after_five_seconds() {
    if skip("raw wrappers_denial", &["sshd", "unshare"]) {
        return;
    }
    let sshd = Sshd::new().hosts_deny("sshd: ALL\n").start();
    // A probe that waits sees the server's FIN (docs/facts.md §2)...
    let (r, c) = both(sshd.addr, config(ProbeOrder::WaitForBanner)).await;
    agree(&r, &c, Outcome::ClosedBeforeBanner);
    assert_eq!((r.end, c.end), (Some(End::Fin), Some(End::Fin)));
    let f = flags(&r);
    // Our ACK of their FIN rides on ours.
    assert_eq!(f[..5], [">S", "<SA", ">A", "<FA", ">FA"], "{f:?}");
    let fin = &r.packets[3];
    assert!((4_500_000..7_000_000).contains(&fin.t_us), "the libwrap child sleeps 5 s: {fin:?}");
    // ...one that spoke first, the RST of a close with unread data.
    let (r, c) = both(sshd.addr, config(ProbeOrder::SendFirst)).await;
    agree(&r, &c, Outcome::ResetBeforeBanner);
    let f = flags(&r);
    assert_eq!(f[..4], [">S", "<SA", ">A", ">PA"], "{f:?}");
    assert!(f.iter().any(|x| x == "<RA" || x == "<R"), "{f:?}");
    assert_eq!(r.received.len(), 0);
}

#[tokio::test]
async fn maxstartups_refusal_is_a_server_refusal() {
    if skip("raw maxstartups", &["sshd", "unshare"]) {
        return;
    }
    let sshd = Sshd::new().option("MaxStartups 1:100:1").start();
    let _held = hold(sshd.addr, None);
    for order in [ProbeOrder::WaitForBanner, ProbeOrder::SendFirst] {
        let (r, c) = both(sshd.addr, config(order)).await;
        agree(&r, &c, Outcome::ServerRefusal);
        assert_eq!(classify(&r).refusal, Some(KnownRefusal::ExceededMaxStartups));
        assert_eq!(&r.received[..], b"Exceeded MaxStartups\r\n");
        let f = flags(&r);
        // The refusal line, then the close: FIN to a probe that waited, RST to one whose ident is
        // unread.
        let refusal = f.iter().position(|x| x == "<PA" || x == "<FPA").expect("the refusal segment");
        match order {
            ProbeOrder::WaitForBanner => {
                assert_eq!((r.end, c.end), (Some(End::Fin), Some(End::Fin)), "{f:?}")
            }
            // The listener closes 20-60 µs after the handshake: whether our ident is in its queue
            // by then (RST) or arrives just after (FIN, then RSTs for our late segments) is a race,
            // for the kernel's client as for ours.
            ProbeOrder::SendFirst => {
                assert!(matches!(r.end, Some(End::Rst | End::Fin)), "{f:?}");
                assert!(matches!(c.end, Some(End::Rst | End::Fin)));
            }
        }
        assert!(refusal >= 3, "{f:?}");
    }
}

#[tokio::test]
async fn dropped_syns_are_a_connect_timeout_after_retransmissions() {
    if skip("raw dropped_syns", &["ip", "nft", "sshd"]) {
        return;
    }
    let ns = Netns::new();
    let sshd = Sshd::new().in_netns(&ns).start();
    let _drop = Nft::new(Some(&ns), "input", &[&format!("tcp dport {} drop", sshd.addr.port())]);
    let mut cfg = config(ProbeOrder::WaitForBanner);
    cfg.request.connect_timeout = Duration::from_millis(3500);
    let (r, c) = both(sshd.addr, cfg).await;
    agree(&r, &c, Outcome::ConnectTimeout);
    assert_eq!(r.connect, Connect::TimedOut);
    // The kernel's schedule: SYNs at 0, 1 and 3 s.
    assert_eq!(flags(&r), [">S", ">S", ">S"]);
    let secs: Vec<u64> = r.packets.iter().map(|p| (p.t_us + 500_000) / 1_000_000).collect();
    assert_eq!(secs, [0, 1, 3]);
    assert!(r.timings.closed.is_some_and(|t| t >= 3_500_000));
}

#[tokio::test]
async fn banner_through_a_namespace() {
    if skip("raw banner_in_netns", &["ip", "sshd"]) {
        return;
    }
    let ns = Netns::new();
    let sshd = Sshd::new().in_netns(&ns).start();
    let (r, c) = both(sshd.addr, config(ProbeOrder::WaitForBanner)).await;
    agree(&r, &c, Outcome::Banner);
    assert_eq!(r.local.map(|l| l.ip()), Some(ns.outer_ip));
    assert!(flags(&r).starts_with(&[">S".to_string(), "<SA".to_string()]));
}

#[tokio::test]
async fn icmp_rejects_read_as_the_kernel_reads_them() {
    if skip("raw icmp_reject", &["ip", "nft"]) {
        return;
    }
    // A firewall's reject: the wire shows the ICMP error; both engines say what the kernel makes of
    // it (docs/facts.md §3): administratively prohibited is unreachable (EHOSTUNREACH), a port unreachable
    // (nft's plain `reject`) is refused (ECONNREFUSED), like an RST.
    let ns = Netns::new();
    let (prohibited, plain) = (common::free_port(), common::free_port());
    let _reject = Nft::new(
        Some(&ns),
        "input",
        &[
            &format!("tcp dport {prohibited} reject with icmp type admin-prohibited"),
            &format!("tcp dport {plain} reject"),
        ],
    );
    let cfg = config(ProbeOrder::WaitForBanner);
    let (r, c) = both(SocketAddr::new(ns.inner_ip, prohibited), cfg.clone()).await;
    agree(&r, &c, Outcome::Unreachable);
    assert_eq!(r.connect, Connect::Unreachable { detail: "administratively prohibited".into() });
    assert_eq!(flags(&r), [">S", "<icmp"]);
    assert_eq!(r.packets[1].kind, PacketKind::Icmp(IcmpKind::AdminProhibited));
    let (r, c) = both(SocketAddr::new(ns.inner_ip, plain), cfg).await;
    agree(&r, &c, Outcome::Refused);
    assert_eq!(flags(&r), [">S", "<icmp"]);
    assert_eq!(r.packets[1].kind, PacketKind::Icmp(IcmpKind::PortUnreachable));
}
