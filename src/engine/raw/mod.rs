//! The raw engine: the identification exchange over raw sockets, with a TCP client in user space.
//!
//! It shows the packet-level truth behind an outcome (which segments went each way, when, with which
//! flags, TTL and window) and probes without a file descriptor or a TIME_WAIT socket per connection.
//! It produces the same [`Observation`] as the connect engine, `packets` filled, for the same
//! classifier: the two must agree on the outcome for the same server behaviour.
//!
//! Layout, each depending only on those above it:
//!
//! | module | what | I/O |
//! |---|---|---|
//! | [`wire`] | packet views and reprs (TCP, IPv4, IPv6, ICMP) | none |
//! | [`tcp`] | one probe's TCP client as a state machine; its trace | none |
//! | [`firewall`] | the host setup: port range, nftables rule, run lock | `nft`, files |
//! | [`socket`] | the raw sockets | network |
//! | this module | the engine: one receive thread, the flow table, per-probe tasks with timers | threads |
//!
//! One receive thread polls the raw sockets (with a timeout, so it can stop) and hands each packet
//! that answers one of our probes to that probe's task through a channel; everything else (the
//! host's other TCP traffic, which raw sockets also see) is dropped. A packet answers a probe when its
//! 4-tuple is in the flow table and it carries an ACK, or is a reset whose acknowledgement number (if
//! any) lies within what that probe can have sent (zmap's stateless validation, so that a stray reset
//! is not even queued); the probe's state machine then checks it exactly. An ACK outside that range
//! is not dropped: it is the 4-tuple's previous incarnation (a server's TIME_WAIT answering our SYN),
//! which the probe must reset before its SYN can succeed. Probes are tasks, not threads or sockets:
//! thousands can be in flight.
//!
//! The sockets, the thread and the host setup belong to a process-wide [`Driver`] shared by every
//! `RawEngine` alive, and released with the last one.

pub mod firewall;
pub mod socket;
pub mod tcp;
pub mod wire;

use self::firewall::{Firewall, RunLock, SetupError};
use self::socket::{RawSockets, Received};
use self::tcp::{Flow, FlowParams, Inbound, Outbound};
use self::wire::{
    IcmpErrorKind, IcmpErrorRepr, Ipv4Packet, SeqNumber, TcpFlags, TcpOptions, TcpPacket, TcpRepr,
};
use super::{Engine, ProbeConfig, ProbeRequest};
use crate::evidence::{Connect, Observation};
use bytes::Bytes;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Why the raw engine cannot start.
#[derive(Debug, thiserror::Error)]
pub enum RawError {
    /// The process lacks a capability the engine needs.
    #[error(
        "the raw engine needs {missing} (run it as root, or grant them with \
         `setcap cap_net_raw,cap_net_admin+ep`); the default connect engine (--engine connect) needs neither"
    )]
    MissingCapabilities {
        /// The missing capabilities, e.g. `CAP_NET_RAW and CAP_NET_ADMIN`.
        missing: String,
    },
    /// The host setup failed.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// A raw socket could not be opened.
    #[error("opening raw sockets: {0}")]
    Socket(io::Error),
    /// The receive thread could not start.
    #[error("starting the receive thread: {0}")]
    Thread(io::Error),
    /// A driver with other options is already running in this process.
    #[error("a raw engine with other options (firewall, ports) is already running in this process")]
    OptionsConflict,
}

/// How the raw engine sets up the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawOptions {
    /// Install the nftables rule that keeps the kernel from resetting our connections. Without it
    /// the user must drop those RSTs some other way (FACTS §7), or every probe is reset.
    pub firewall: bool,
    /// Source ports, outside `ip_local_port_range`; `None` for those above it (or below it when
    /// it reaches 65535).
    pub ports: Option<RangeInclusive<u16>>,
}

impl Default for RawOptions {
    fn default() -> RawOptions {
        RawOptions { firewall: true, ports: None }
    }
}

/// Raw-socket engine. Cheap to clone; all engines of a process share one [`Driver`].
#[derive(Debug, Clone)]
pub struct RawEngine {
    config: ProbeConfig,
    driver: Arc<Driver>,
}

impl RawEngine {
    /// An engine whose probes behave as `config` says, starting the process's driver (sockets,
    /// receive thread, firewall rule) unless one is running.
    pub fn new(config: ProbeConfig, options: RawOptions) -> Result<RawEngine, RawError> {
        Ok(RawEngine { config, driver: Driver::shared(options)? })
    }

    /// The configuration every probe uses.
    pub fn config(&self) -> &ProbeConfig {
        &self.config
    }

    /// The source ports in use.
    pub fn ports(&self) -> RangeInclusive<u16> {
        self.driver.ports.clone()
    }

    /// Stops now, before the last engine is dropped (on a signal): removes the firewall rule and
    /// stops the receive thread. Probes still running then time out.
    pub fn shutdown(&self) {
        self.driver.shutdown();
    }
}

/// The capabilities (bit numbers in `CapEff`) the engine needs.
const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;

/// Names the capabilities among `needed` that the process lacks, if it can tell.
fn missing_capabilities(needed: &[(u32, &str)]) -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
    let effective = u64::from_str_radix(hex, 16).ok()?;
    let missing: Vec<&str> =
        needed.iter().filter(|(bit, _)| effective & (1 << bit) == 0).map(|&(_, name)| name).collect();
    (!missing.is_empty()).then(|| missing.join(" and "))
}

/// What the receive thread hands a probe.
#[derive(Debug)]
enum Event {
    Segment(Inbound),
    Icmp { t_us: u64, kind: IcmpErrorKind, seq: SeqNumber },
}

/// A flow's 4-tuple: (our address, our port, their address, their port).
type FlowKey = (IpAddr, u16, IpAddr, u16);

/// What the receive thread knows of a flow: where to send its packets, and what validates them.
#[derive(Debug)]
struct FlowEntry {
    tx: mpsc::Sender<Event>,
    start: Instant,
    iss: SeqNumber,
    max_ack: u32,
}

impl FlowEntry {
    /// zmap-style: a reset's acknowledgement must cover our SYN and at most what we can have sent.
    fn ack_ok(&self, ack: SeqNumber) -> bool {
        (1..=self.max_ack).contains(&ack.0.wrapping_sub(self.iss.0))
    }
}

#[derive(Debug, Default)]
struct FlowTable {
    flows: Mutex<HashMap<FlowKey, FlowEntry>>,
}

impl FlowTable {
    fn lock(&self) -> MutexGuard<'_, HashMap<FlowKey, FlowEntry>> {
        self.flows.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The process-wide part of the raw engine: sockets, receive thread, flow table, host setup.
#[derive(Debug)]
pub struct Driver {
    options: RawOptions,
    sockets: Arc<RawSockets>,
    flows: Arc<FlowTable>,
    ports: RangeInclusive<u16>,
    cursor: AtomicU32,
    secret: RandomState,
    routes: Mutex<HashMap<IpAddr, IpAddr>>,
    /// Source addresses (`--source`) found to be this host's.
    sources: Mutex<HashSet<IpAddr>>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
    // Dropped in this order: the rule before the lock.
    firewall: Option<Firewall>,
    _lock: RunLock,
}

/// The driver of this process, while any engine holds it.
static SHARED: Mutex<Weak<Driver>> = Mutex::new(Weak::new());

/// How long the receive thread waits for packets before checking whether it should stop.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Packets queued for one probe before more are dropped (as a full NIC ring drops them).
const FLOW_QUEUE: usize = 64;
/// Source addresses remembered per destination before the cache starts over.
const ROUTE_CACHE: usize = 4096;

impl Driver {
    fn shared(options: RawOptions) -> Result<Arc<Driver>, RawError> {
        let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(driver) = shared.upgrade() {
            return if driver.options == options { Ok(driver) } else { Err(RawError::OptionsConflict) };
        }
        let driver = Arc::new(Driver::start(options)?);
        *shared = Arc::downgrade(&driver);
        Ok(driver)
    }

    fn start(options: RawOptions) -> Result<Driver, RawError> {
        let mut needed = vec![(CAP_NET_RAW, "CAP_NET_RAW")];
        if options.firewall {
            needed.push((CAP_NET_ADMIN, "CAP_NET_ADMIN"));
        }
        if let Some(missing) = missing_capabilities(&needed) {
            return Err(RawError::MissingCapabilities { missing });
        }
        let ports = match &options.ports {
            Some(p) => {
                firewall::check_ports(p)?;
                p.clone()
            }
            None => firewall::port_range()?,
        };
        let lock = RunLock::acquire()?;
        let sockets = Arc::new(RawSockets::open(ports.clone()).map_err(|e| match e.raw_os_error() {
            Some(libc::EPERM | libc::EACCES) => {
                RawError::MissingCapabilities { missing: "CAP_NET_RAW".into() }
            }
            _ => RawError::Socket(e),
        })?);
        let firewall = if options.firewall {
            Some(Firewall::install(ports.clone())?)
        } else {
            // A table a killed run left would be harmless but confusing; ours is stale (we hold
            // the lock), so remove it when we can.
            if let Err(e) = Firewall::remove_leftover(&ports) {
                tracing::debug!("not removing a leftover nftables table: {e}");
            }
            None
        };
        let flows = Arc::new(FlowTable::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (sockets, flows, stop) = (sockets.clone(), flows.clone(), stop.clone());
            std::thread::Builder::new()
                .name("raw-recv".into())
                .spawn(move || receive_loop(&sockets, &flows, &stop))
                .map_err(RawError::Thread)?
        };
        let span = u32::from(ports.end() - ports.start()) + 1;
        Ok(Driver {
            cursor: AtomicU32::new(rand::random::<u32>() % span),
            options,
            sockets,
            flows,
            ports,
            secret: RandomState::new(),
            routes: Mutex::new(HashMap::new()),
            sources: Mutex::new(HashSet::new()),
            stop,
            thread: Mutex::new(Some(thread)),
            firewall,
            _lock: lock,
        })
    }

    fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = thread.join();
        }
        if let Some(fw) = &self.firewall {
            fw.remove();
        }
    }

    /// The source address for `remote`: the kernel's choice, cached.
    fn source_for(&self, remote: IpAddr) -> io::Result<IpAddr> {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&src) = routes.get(&remote) {
            return Ok(src);
        }
        let src = socket::route_source(remote)?;
        if routes.len() >= ROUTE_CACHE {
            routes.clear();
        }
        routes.insert(remote, src);
        Ok(src)
    }

    /// Whether `ip` is an address of this host (binding to it works), cached when it is.
    fn check_source(&self, ip: IpAddr) -> io::Result<()> {
        let mut known = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        if known.contains(&ip) {
            return Ok(());
        }
        let domain = if ip.is_ipv4() { socket2::Domain::IPV4 } else { socket2::Domain::IPV6 };
        let probe = socket2::Socket::new(domain, socket2::Type::DGRAM, None)?;
        probe.bind(&SocketAddr::new(ip, 0).into())?;
        known.insert(ip);
        Ok(())
    }

    /// RFC 6528's initial sequence number: a 4 µs clock plus a keyed hash of the 4-tuple, so a
    /// reused 4-tuple starts above its previous incarnation (as the server's TIME_WAIT requires)
    /// and replies cannot be forged by anyone who does not see our SYN.
    fn iss(&self, key: &FlowKey) -> SeqNumber {
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| (d.as_micros() / 4) as u32);
        SeqNumber(clock.wrapping_add(self.secret.hash_one(key) as u32))
    }

    /// Registers a flow from `local` to `remote` on a free port; the registration removes it when
    /// dropped.
    fn register(
        &self,
        local: IpAddr,
        remote: SocketAddr,
        config: &ProbeConfig,
        tx: mpsc::Sender<Event>,
    ) -> Result<Registration<'_>, Connect> {
        let span = u32::from(self.ports.end() - self.ports.start()) + 1;
        let mut flows = self.flows.lock();
        for _ in 0..span {
            let port = self.ports.start() + (self.cursor.fetch_add(1, Ordering::Relaxed) % span) as u16;
            let key = (local, port, remote.ip(), remote.port());
            if flows.contains_key(&key) {
                continue;
            }
            let iss = self.iss(&key);
            let start = Instant::now();
            flows.insert(key, FlowEntry { tx, start, iss, max_ack: Flow::max_ack_offset(config) });
            return Ok(Registration { table: &self.flows, key, iss, start });
        }
        Err(Connect::LocalError {
            detail: format!(
                "all {span} raw-engine source ports ({}-{}) are in use towards {remote}",
                self.ports.start(),
                self.ports.end()
            ),
        })
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A flow's place in the table, released on drop (also when a probe's future is dropped).
struct Registration<'a> {
    table: &'a FlowTable,
    key: FlowKey,
    iss: SeqNumber,
    start: Instant,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.table.lock().remove(&self.key);
    }
}

impl Engine for RawEngine {
    async fn probe(&self, request: ProbeRequest) -> Observation {
        let cfg = &self.config;
        let remote = request.remote;
        let started = Instant::now();
        let local_error = |detail: String| {
            Observation::failed_connect(
                remote,
                None,
                cfg.order,
                Connect::LocalError { detail },
                started.elapsed().as_micros() as u64,
            )
        };
        if remote.is_ipv6() && !self.driver.sockets.has_ipv6() {
            return local_error("no IPv6 raw sockets on this host".into());
        }
        let source = match request.source {
            // With IP_HDRINCL the kernel would send from any address: check that it is ours, as
            // the connect engine's bind does.
            Some(ip) => match self.driver.check_source(ip) {
                Ok(()) => ip,
                Err(e) => return local_error(e.to_string()),
            },
            None => match self.driver.source_for(remote.ip()) {
                Ok(ip) => ip,
                Err(e) => return local_error(format!("no route to {}: {e}", remote.ip())),
            },
        };
        let (tx, mut rx) = mpsc::channel(FLOW_QUEUE);
        let registration = match self.driver.register(source, remote, cfg, tx) {
            Ok(r) => r,
            Err(connect) => {
                return Observation::failed_connect(remote, None, cfg.order, connect, 0);
            }
        };
        let local = SocketAddr::new(source, registration.key.1);
        let start = registration.start;
        let us = move || start.elapsed().as_micros() as u64;
        let mut flow = Flow::new(FlowParams {
            local,
            remote,
            iss: registration.iss,
            mss: if remote.is_ipv4() { 1460 } else { 1440 },
            ttl: socket::TTL,
            config: cfg.clone(),
        });
        let first = flow.start();
        self.send_all(&mut flow, local, remote, first, us());
        while !flow.is_done() {
            let Some(at) = flow.poll_at() else { break };
            let deadline = tokio::time::Instant::from_std(start + Duration::from_micros(at));
            let out = tokio::select! {
                event = rx.recv() => match event {
                    Some(Event::Segment(seg)) => flow.on_segment(&seg),
                    Some(Event::Icmp { t_us, kind, seq }) => {
                        flow.on_icmp(t_us, kind, seq);
                        Vec::new()
                    }
                    // The driver stopped (shutdown): nothing more will arrive.
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => flow.on_timer(us().max(at)),
            };
            self.send_all(&mut flow, local, remote, out, us());
        }
        drop(registration);
        flow.into_observation()
    }
}

impl RawEngine {
    /// Sends a flow's segments, recording each that went out. A failure to send the SYN that the
    /// kernel explains (a local firewall's reject, no route) ends the connect as the connect engine
    /// would report it; others are losses, left to retransmission.
    fn send_all(&self, flow: &mut Flow, local: SocketAddr, remote: SocketAddr, out: Vec<Outbound>, now: u64) {
        for seg in out {
            let repr = TcpRepr {
                src_port: local.port(),
                dst_port: remote.port(),
                flags: seg.flags,
                seq: seg.seq,
                ack: seg.ack,
                window: seg.window,
                options: seg.options.clone(),
                payload: &seg.payload,
            };
            match self.driver.sockets.send(local.ip(), remote.ip(), &repr) {
                Ok(()) => flow.sent(now, &seg),
                Err(e) => {
                    tracing::debug!(%remote, error = %e, flags = %seg.flags, "raw send failed");
                    if seg.flags.has(TcpFlags::SYN) {
                        match e.raw_os_error() {
                            Some(libc::EPERM | libc::EACCES | libc::EHOSTUNREACH | libc::ENETUNREACH) => {
                                flow.fail_connect(now, Connect::Unreachable { detail: e.to_string() })
                            }
                            Some(libc::ENOBUFS | libc::EAGAIN) => {}
                            _ => flow.fail_connect(now, Connect::LocalError { detail: e.to_string() }),
                        }
                    }
                }
            }
        }
    }
}

/// The receive thread: polls the raw sockets until told to stop, and hands every packet that
/// answers a registered flow to it.
fn receive_loop(sockets: &RawSockets, flows: &FlowTable, stop: &AtomicBool) {
    let mut buf = vec![0u8; 65536];
    // A bound on the packets read from one socket per wake-up, so none starves the others.
    const BATCH: usize = 256;
    while !stop.load(Ordering::Relaxed) {
        let ready = match sockets.wait(POLL_INTERVAL) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("raw engine: poll failed: {e}");
                std::thread::sleep(POLL_INTERVAL);
                continue;
            }
        };
        for (which, _) in ready.iter().enumerate().filter(|(_, r)| **r) {
            for _ in 0..BATCH {
                match sockets.recv(which, &mut buf) {
                    Ok(Some(received)) => dispatch(flows, &buf, received, Instant::now()),
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!("raw engine: receive failed: {e}");
                        break;
                    }
                }
            }
        }
    }
}

/// Finds the flow a packet answers, validates it, and queues it there.
fn dispatch(flows: &FlowTable, buf: &[u8], received: Received, at: Instant) {
    match received {
        Received::Tcp4 { len } => {
            let Ok(ip) = Ipv4Packet::new_checked(&buf[..len]) else { return };
            if ip.protocol() != wire::PROTO_TCP || ip.is_fragment() {
                return;
            }
            let Ok(tcp) = TcpPacket::new_checked(ip.payload()) else { return };
            deliver_segment(flows, IpAddr::V4(ip.dst_addr()), IpAddr::V4(ip.src_addr()), &tcp, ip.ttl(), at);
        }
        Received::Tcp6 { len, src, dst, hop_limit } => {
            let Some(dst) = dst else { return };
            let Ok(tcp) = TcpPacket::new_checked(&buf[..len]) else { return };
            deliver_segment(flows, IpAddr::V6(dst), IpAddr::V6(src), &tcp, hop_limit.unwrap_or(0), at);
        }
        Received::Icmp4 { len } => {
            let Ok(ip) = Ipv4Packet::new_checked(&buf[..len]) else { return };
            if let Ok(icmp) = IcmpErrorRepr::parse_v4(ip.payload()) {
                deliver_icmp(flows, &icmp, at);
            }
        }
        Received::Icmp6 { len } => {
            if let Ok(icmp) = IcmpErrorRepr::parse_v6(&buf[..len]) {
                deliver_icmp(flows, &icmp, at);
            }
        }
    }
}

fn deliver_segment(
    flows: &FlowTable,
    local: IpAddr,
    remote: IpAddr,
    tcp: &TcpPacket<&[u8]>,
    ttl: u8,
    at: Instant,
) {
    let key = (local, tcp.dst_port(), remote, tcp.src_port());
    let flags = tcp.flags();
    let (tx, start) = {
        let table = flows.lock();
        let Some(entry) = table.get(&key) else { return };
        // An RST must acknowledge something we can have sent (or nothing); any other ACK goes to
        // the probe, which answers a stale one (a server's TIME_WAIT) with a reset.
        let answers = match (flags.has(TcpFlags::ACK), flags.has(TcpFlags::RST)) {
            (true, true) => entry.ack_ok(tcp.ack_number()),
            (true, false) => true,
            (false, rst) => rst,
        };
        if !answers {
            return;
        }
        (entry.tx.clone(), entry.start)
    };
    let segment = Inbound {
        t_us: at.saturating_duration_since(start).as_micros() as u64,
        flags,
        seq: tcp.seq_number(),
        ack: tcp.ack_number(),
        window: tcp.window_len(),
        ttl,
        options: TcpOptions::new(tcp.options()).filter_map(Result::ok).collect(),
        payload: Bytes::copy_from_slice(tcp.payload()),
    };
    if tx.try_send(Event::Segment(segment)).is_err() {
        tracing::debug!(?key, "raw engine: a probe's queue is full; segment dropped");
    }
}

fn deliver_icmp(flows: &FlowTable, icmp: &IcmpErrorRepr, at: Instant) {
    let key = (icmp.src, icmp.src_port, icmp.dst, icmp.dst_port);
    let (tx, start) = {
        let table = flows.lock();
        let Some(entry) = table.get(&key) else { return };
        // The quoted segment is one of ours: its sequence number lies in what we can have sent.
        if icmp.seq.0.wrapping_sub(entry.iss.0) >= entry.max_ack {
            return;
        }
        (entry.tx.clone(), entry.start)
    };
    let t_us = at.saturating_duration_since(start).as_micros() as u64;
    let _ = tx.try_send(Event::Icmp { t_us, kind: icmp.kind, seq: icmp.seq });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_are_validated_against_what_we_can_have_sent() {
        let (tx, _rx) = mpsc::channel(1);
        let entry = FlowEntry { tx, start: Instant::now(), iss: SeqNumber(u32::MAX - 2), max_ack: 13 };
        assert!(!entry.ack_ok(SeqNumber(u32::MAX - 2)));
        assert!(entry.ack_ok(SeqNumber(u32::MAX - 1)));
        assert!(entry.ack_ok(SeqNumber(10)));
        assert!(!entry.ack_ok(SeqNumber(11)));
    }

    #[test]
    fn capabilities_are_read_from_proc() {
        // Whatever this process has, asking for nothing finds nothing missing.
        assert_eq!(missing_capabilities(&[]), None);
    }
}
