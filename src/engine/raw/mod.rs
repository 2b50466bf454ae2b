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
//! | `thread` | the engine thread: flow table, timers, dispatch | threads |
//! | this module | the driver (sockets, threads, host setup) and the async front: probes and holds | threads |
//!
//! One engine thread owns every flow (with `probe --threads N`, N threads, each owning the flows on
//! its share of the source ports, with sockets that read only those: see [`RawOptions::threads`]).
//! A probe (an async call of [`Engine::probe`]) hands its target over through a channel, wakes the
//! thread if it sleeps, and awaits its [`Observation`] on a oneshot channel; dropping the probe's
//! future cancels it (the flow is reset if the server had accepted it). The thread does not wake
//! each probe's task itself: a wake-up from outside a runtime costs a system call (tokio writes its
//! driver's eventfd every time), so it leaves a round's observations in a `Mailbox` and wakes one
//! collector task per round, which hands each to its probe from inside the runtime, where a wake-up
//! is a queue push. The thread waits in `poll` on the raw sockets, the wake-up descriptor and its
//! earliest timer, and runs each flow's state machine where its packets arrive: no lock, no
//! hand-off and no task wake-up per packet (an earlier design, a receive thread feeding a task per
//! probe through channels, spent 30–45% more CPU per probe, most of it switching threads).
//!
//! A packet answers a probe when its 4-tuple is in the flow table and it carries an ACK, or is a
//! reset whose acknowledgement number (if any) lies within what that probe can have sent (zmap's
//! stateless validation); the state machine then checks it exactly. Everything else (the host's
//! other TCP traffic, which raw sockets also see, though a BPF filter keeps most of it out) is
//! dropped. An ACK outside that range is not dropped: it is the 4-tuple's previous incarnation (a
//! server's TIME_WAIT answering our SYN), which the flow must reset before its SYN can succeed.
//! Flows are entries in a table, not threads, tasks or sockets: thousands can be in flight.
//!
//! The sockets, the threads and the host setup belong to a process-wide [`Driver`] shared by every
//! `RawEngine` alive, and released with the last one.

// In layer order, lowest first (tests/layers.rs enforces it).
pub mod wire;
pub mod tcp;
pub mod firewall;
pub mod socket;
mod thread;

use self::firewall::{Firewall, RunLock, SetupError};
use self::socket::RawSockets;
use self::thread::EngineThread;
use super::exchange::Purpose;
use super::{Engine, EngineConfig, Held, HoldEnd, ProbeRequest};
use crate::evidence::{Connect, End, Observation};
use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Notify};

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
    /// The engine thread (or its wake-up socket) could not start.
    #[error("starting the raw engine's thread: {0}")]
    Thread(io::Error),
    /// A driver with other options is already running in this process.
    #[error("a raw engine with other options (firewall, ports) is already running in this process")]
    OptionsConflict,
}

/// How the raw engine sets up the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawOptions {
    /// Install the nftables rule that keeps the kernel from resetting our connections. Without it
    /// the user must drop those RSTs some other way (docs/facts.md §7), or every probe is reset.
    pub firewall: bool,
    /// Source ports, outside `ip_local_port_range`; `None` for those above it (or below it when
    /// it reaches 65535).
    pub ports: Option<RangeInclusive<u16>>,
    /// Engine threads, each owning its share of the source ports and the flows on them (`probe
    /// --threads`): 1, the default, costs the least CPU a probe; more spread the kernel's work for
    /// our segments (on loopback, the server's TCP too) over as many cores.
    pub threads: usize,
}

impl Default for RawOptions {
    fn default() -> RawOptions {
        RawOptions { firewall: true, ports: None, threads: 1 }
    }
}

/// Raw-socket engine. Cheap to clone; all engines of a process share one [`Driver`].
#[derive(Debug, Clone)]
pub struct RawEngine {
    config: EngineConfig,
    driver: Arc<Driver>,
    /// The mailbox of this engine (and its clones), and its collector's runtime.
    mailbox: Arc<MailboxSlot>,
}

/// An observation on its way to the probe that waits for it.
pub(super) struct Letter {
    pub(super) done: oneshot::Sender<Observation>,
    pub(super) observation: Observation,
}

impl Letter {
    fn deliver(self) {
        let _ = self.done.send(self.observation);
    }
}

/// Where the engine thread leaves observations for one runtime's probes, and how it wakes the
/// collector task that hands them over: one wake-up (one eventfd write) a round of the engine
/// thread, where a wake-up a probe cost one each.
#[derive(Debug, Default)]
pub(super) struct Mailbox {
    state: Mutex<MailboxState>,
    notify: Notify,
    /// How many times the collector woke and found letters.
    rounds: AtomicU64,
}

#[derive(Debug, Default)]
struct MailboxState {
    /// Its collector is gone (its runtime ended, or the engine was dropped): letters are
    /// delivered directly.
    closed: bool,
    /// The engine was dropped: the collector delivers what is left and ends.
    retired: bool,
    letters: Vec<Letter>,
}

impl std::fmt::Debug for Letter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Letter").field("observation", &self.observation).finish_non_exhaustive()
    }
}

impl Mailbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, MailboxState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Leaves a round's letters and wakes the collector (once, however many); delivers them
    /// directly when it is gone.
    pub(super) fn post(&self, letters: impl IntoIterator<Item = Letter>) {
        let mut state = self.lock();
        if state.closed {
            drop(state);
            letters.into_iter().for_each(Letter::deliver);
            return;
        }
        state.letters.extend(letters);
        drop(state);
        self.notify.notify_one();
    }

    fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// The collector: hands each letter to its probe from inside the runtime, until the engine is
    /// dropped or the runtime ends (then the mailbox closes and what is left goes directly). The
    /// mailbox closes when the future is dropped, even if it was never polled (a runtime that
    /// ended first).
    fn collector(self: Arc<Mailbox>) -> impl std::future::Future<Output = ()> + Send + 'static {
        struct CloseOnDrop(Arc<Mailbox>);
        impl Drop for CloseOnDrop {
            fn drop(&mut self) {
                let mut state = self.0.lock();
                state.closed = true;
                let letters = std::mem::take(&mut state.letters);
                drop(state);
                letters.into_iter().for_each(Letter::deliver);
            }
        }
        let close = CloseOnDrop(self);
        async move {
            let mailbox = &close.0;
            loop {
                mailbox.notify.notified().await;
                let (letters, retired) = {
                    let mut state = mailbox.lock();
                    (std::mem::take(&mut state.letters), state.retired)
                };
                if !letters.is_empty() {
                    mailbox.rounds.fetch_add(1, Ordering::Relaxed);
                }
                letters.into_iter().for_each(Letter::deliver);
                if retired {
                    return;
                }
            }
        }
    }
}

/// The mailbox an engine and its clones share; its collector ends with the last of them.
#[derive(Debug, Default)]
struct MailboxSlot(Mutex<Option<Arc<Mailbox>>>);

impl MailboxSlot {
    /// The mailbox for a probe polled on the current runtime: the open one, or a new one with
    /// its collector spawned here. None outside a runtime.
    fn current(&self) -> Option<Arc<Mailbox>> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mailbox) = slot.as_ref().filter(|m| !m.is_closed()) {
            return Some(mailbox.clone());
        }
        let mailbox = Arc::new(Mailbox::default());
        runtime.spawn(mailbox.clone().collector());
        *slot = Some(mailbox.clone());
        Some(mailbox)
    }
}

impl Drop for MailboxSlot {
    fn drop(&mut self) {
        if let Some(mailbox) = self.0.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            mailbox.lock().retired = true;
            mailbox.notify.notify_one();
        }
    }
}

impl RawEngine {
    /// An engine whose connections read and close as `config` says, starting the process's driver
    /// (sockets, engine thread, firewall rule) unless one is running.
    pub fn new(config: EngineConfig, options: RawOptions) -> Result<RawEngine, RawError> {
        Ok(RawEngine { config, driver: Driver::shared(options)?, mailbox: Arc::default() })
    }

    /// The configuration every connection uses.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The source ports in use.
    pub fn ports(&self) -> RangeInclusive<u16> {
        self.driver.ports.clone()
    }

    /// Stops now, before the last engine is dropped (on a signal): ends every probe in flight
    /// with what it saw (resetting connections the servers accepted), stops the engine thread and
    /// removes the firewall rule.
    pub fn shutdown(&self) {
        self.driver.shutdown();
    }
}

/// The capabilities (bit numbers in `CapEff`) the engine needs.
const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;

/// Names the capabilities among `needed` that the process lacks, if it can tell.
fn missing_capabilities(needed: &[(u32, &str)]) -> Option<String> {
    missing_in_status(&std::fs::read_to_string("/proc/self/status").ok()?, needed)
}

/// Names the capabilities among `needed` that a `/proc/<pid>/status` text's effective set
/// (`CapEff`, hexadecimal) lacks; `None` when none is missing or the text does not say.
fn missing_in_status(status: &str, needed: &[(u32, &str)]) -> Option<String> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
    let effective = u64::from_str_radix(hex, 16).ok()?;
    let missing: Vec<&str> =
        needed.iter().filter(|(bit, _)| effective & (1 << bit) == 0).map(|&(_, name)| name).collect();
    (!missing.is_empty()).then(|| missing.join(" and "))
}

/// A flow's 4-tuple: (our address, our port, their address, their port).
type FlowKey = (IpAddr, u16, IpAddr, u16);

/// What a probe asks of the engine thread.
enum Command {
    Start(Box<Start>),
    /// The probe with this id was cancelled (its future dropped): reset and forget its flow.
    Cancel(u64),
    /// The probe with this id was interrupted (its request's [`Interrupt`](super::Interrupt)
    /// fired): it ends now with what it saw, and its observation goes as usual.
    Interrupt(u64),
}

/// A probe handed to the engine thread.
struct Start {
    /// Unique in this process: how a cancellation names the probe.
    id: u64,
    source: IpAddr,
    request: ProbeRequest,
    engine: EngineConfig,
    purpose: Purpose,
    /// Where its observation goes (a hold's: once its banner is in); dropped by the caller when
    /// the probe is cancelled.
    done: oneshot::Sender<Observation>,
    /// Through which collector it goes; none outside a tokio runtime (sent directly).
    mailbox: Option<Arc<Mailbox>>,
    /// A hold's: where the end of the held connection goes.
    ended: Option<oneshot::Sender<HoldEnd>>,
}

/// The process-wide part of the raw engine: sockets, engine threads, host setup.
#[derive(Debug)]
pub struct Driver {
    options: RawOptions,
    ports: RangeInclusive<u16>,
    /// The engine threads; a probe goes to the one its id names (`id % len`), and so do its
    /// cancellation and interruption.
    shards: Vec<Shard>,
    /// Whether IPv6 targets can be probed.
    ipv6: bool,
    next_id: AtomicU64,
    routes: Mutex<HashMap<IpAddr, IpAddr>>,
    /// Source addresses (`--source`) found to be this host's.
    sources: Mutex<HashSet<IpAddr>>,
    stop: Arc<AtomicBool>,
    // Dropped in this order: the rule before the lock.
    firewall: Option<Firewall>,
    _lock: RunLock,
}

/// One engine thread and the way to it. Its sockets keep only segments to its share of the
/// source ports, so each thread sees only its own flows' packets.
#[derive(Debug)]
struct Shard {
    commands: std_mpsc::Sender<Command>,
    /// Wakes the engine thread from `poll` when a probe is handed over.
    wake: UnixDatagram,
    /// Whether a wake-up is already on its way (so a burst of probes costs one).
    wake_pending: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// `ports` cut into `n` contiguous shares, as even as they come (at most one share a port).
fn share_ports(ports: &RangeInclusive<u16>, n: usize) -> Vec<RangeInclusive<u16>> {
    let (lo, hi) = (u32::from(*ports.start()), u32::from(*ports.end()));
    let span = hi - lo + 1;
    let n = (n.max(1) as u32).min(span);
    (0..n)
        .map(|i| {
            let start = lo + span * i / n;
            let end = lo + span * (i + 1) / n - 1;
            start as u16..=end as u16
        })
        .collect()
}

/// The driver of this process, while any engine holds it.
static SHARED: Mutex<Weak<Driver>> = Mutex::new(Weak::new());

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
        // IPv4 is read before the IP layer, and kept from the kernel's TCP, when the firewall is
        // ours to set (`SSHPROBE_RAW_RECEIVE=socket` keeps the raw socket, for comparison).
        let packet =
            options.firewall && std::env::var("SSHPROBE_RAW_RECEIVE").map_or(true, |v| v != "socket");
        let shares = share_ports(&ports, options.threads);
        let mut sockets = shares
            .iter()
            .map(|share| RawSockets::open(share.clone(), packet))
            .collect::<io::Result<Vec<_>>>()
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EPERM | libc::EACCES) => {
                    RawError::MissingCapabilities { missing: "CAP_NET_RAW".into() }
                }
                _ => RawError::Socket(e),
            })?;
        let close_packets = |sockets: &mut Vec<RawSockets>| {
            sockets.iter_mut().zip(&shares).try_for_each(|(s, share)| s.close_packet(share))
        };
        let has_packet = sockets.iter().all(RawSockets::has_packet);
        if !has_packet {
            // Every thread reads the same way, and the firewall matches it.
            close_packets(&mut sockets).map_err(RawError::Socket)?;
        }
        let firewall = if options.firewall {
            let installed = match Firewall::install(ports.clone(), has_packet) {
                // An nft without the prerouting drop's parts (the fib expression): read through
                // the raw socket, which needs only the output rule.
                Err(e) if has_packet => {
                    tracing::debug!("no prerouting drop ({e}): reading IPv4 through the raw socket");
                    close_packets(&mut sockets).map_err(RawError::Socket)?;
                    Firewall::install(ports.clone(), false)
                }
                result => result,
            };
            Some(installed?)
        } else {
            // A table a killed run left would be harmless but confusing; ours is stale (we hold
            // the lock), so remove it when we can.
            if let Err(e) = Firewall::remove_leftover(&ports) {
                tracing::debug!("not removing a leftover nftables table: {e}");
            }
            None
        };
        let ipv6 = sockets.iter().all(RawSockets::has_ipv6);
        let stop = Arc::new(AtomicBool::new(false));
        let mut shards = Vec::with_capacity(sockets.len());
        for (i, (sockets, share)) in sockets.into_iter().zip(shares).enumerate() {
            let (wake, woken) = UnixDatagram::pair().map_err(RawError::Thread)?;
            wake.set_nonblocking(true).map_err(RawError::Thread)?;
            woken.set_nonblocking(true).map_err(RawError::Thread)?;
            let (commands, received) = std_mpsc::channel();
            let wake_pending = Arc::new(AtomicBool::new(false));
            let mut engine = EngineThread::new(
                Arc::new(sockets),
                received,
                woken,
                wake_pending.clone(),
                stop.clone(),
                share,
            );
            let name = if i == 0 { "raw-engine".to_string() } else { format!("raw-engine-{i}") };
            let spawned = std::thread::Builder::new().name(name).spawn(move || engine.run());
            let shard = |thread| Shard { commands, wake, wake_pending, thread: Mutex::new(thread) };
            match spawned {
                Ok(thread) => shards.push(shard(Some(thread))),
                Err(e) => {
                    // The threads already running stop with the driver that is never made.
                    stop_shards(&stop, &shards);
                    return Err(RawError::Thread(e));
                }
            }
        }
        Ok(Driver {
            options,
            ports,
            shards,
            ipv6,
            next_id: AtomicU64::new(0),
            routes: Mutex::new(HashMap::new()),
            sources: Mutex::new(HashSet::new()),
            stop,
            firewall,
            _lock: lock,
        })
    }

    /// Hands a command to the engine thread of the probe it names, waking it unless a wake-up is
    /// already on its way; false when the thread has stopped.
    fn submit(&self, command: Command) -> bool {
        let id = match &command {
            Command::Start(start) => start.id,
            Command::Cancel(id) | Command::Interrupt(id) => *id,
        };
        let shard = &self.shards[(id % self.shards.len() as u64) as usize];
        if shard.commands.send(command).is_err() {
            return false;
        }
        if !shard.wake_pending.swap(true, Ordering::AcqRel) {
            // A full buffer means wake-ups are queued already.
            let _ = shard.wake.send(&[1]);
        }
        true
    }

    fn shutdown(&self) {
        stop_shards(&self.stop, &self.shards);
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
}

/// Stops the engine threads and waits for them: each ends its flows first.
fn stop_shards(stop: &AtomicBool, shards: &[Shard]) {
    stop.store(true, Ordering::SeqCst);
    for shard in shards {
        let _ = shard.wake.send(&[1]);
    }
    for shard in shards {
        if let Some(thread) = shard.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl RawEngine {
    /// Hands a probe or a hold to the engine thread and waits for its observation (a hold's: once
    /// its banner is in). The id names the flow for a cancellation.
    async fn start(
        &self,
        request: ProbeRequest,
        purpose: Purpose,
        ended: Option<oneshot::Sender<HoldEnd>>,
    ) -> (Observation, Option<u64>) {
        let remote = request.remote;
        let order = request.order;
        let started = Instant::now();
        let local_error = |detail: String| {
            Observation::failed_connect(
                remote,
                None,
                order,
                Connect::LocalError { detail },
                started.elapsed().as_micros() as u64,
            )
        };
        if remote.is_ipv6() && !self.driver.ipv6 {
            return (local_error("no IPv6 raw sockets on this host".into()), None);
        }
        let source = match request.source {
            // With IP_HDRINCL the kernel would send from any address: check that it is ours, as
            // the connect engine's bind does.
            Some(ip) => match self.driver.check_source(ip) {
                Ok(()) => ip,
                Err(e) => return (local_error(e.to_string()), None),
            },
            None => match self.driver.source_for(remote.ip()) {
                Ok(ip) => ip,
                Err(e) => return (local_error(format!("no route to {}: {e}", remote.ip())), None),
            },
        };
        let (done, observation) = oneshot::channel();
        let request_interrupt = request.interrupt.clone();
        let id = self.driver.next_id.fetch_add(1, Ordering::Relaxed);
        let engine = request.config_on(&self.config);
        let mailbox = self.mailbox.current();
        let start = Start { id, source, request, engine, purpose, done, mailbox, ended };
        if !self.driver.submit(Command::Start(Box::new(start))) {
            return (local_error("the raw engine has stopped".into()), None);
        }
        // Dropping this future (a cancelled probe) cancels the flow: a held connection is released.
        let mut cancel = CancelOnDrop { driver: &self.driver, id: Some(id) };
        tokio::pin!(observation);
        let interrupted = async {
            match &request_interrupt {
                Some(i) => i.fired().await,
                None => std::future::pending().await,
            }
        };
        let result = tokio::select! {
            biased;
            result = &mut observation => result,
            () = interrupted => {
                // The flow ends on the engine thread with what it saw; its observation follows
                // (or came already, if the flow ended meanwhile).
                self.driver.submit(Command::Interrupt(id));
                observation.await
            }
        };
        cancel.id = None;
        match result {
            Ok(observation) => (observation, Some(id)),
            Err(_) => (local_error("the raw engine has stopped".into()), None),
        }
    }
}

impl Engine for RawEngine {
    type Held = HeldFlow;

    async fn probe(&self, request: ProbeRequest) -> Observation {
        self.start(request, Purpose::Probe, None).await.0
    }

    async fn hold(&self, request: ProbeRequest) -> Result<HeldFlow, Observation> {
        let (ended_tx, ended) = oneshot::channel();
        let (observation, id) = self.start(request, Purpose::Hold, Some(ended_tx)).await;
        // A hold that got its banner has no end yet; anything else ended before one came.
        match id {
            Some(id) if observation.end.is_none() && observation.connect == Connect::Established => {
                Ok(HeldFlow { observation, ended, driver: self.driver.clone(), id })
            }
            _ => Err(observation),
        }
    }
}

/// A connection the raw engine holds: a flow on the engine thread. Dropping it resets the
/// connection.
#[derive(Debug)]
pub struct HeldFlow {
    observation: Observation,
    ended: oneshot::Receiver<HoldEnd>,
    driver: Arc<Driver>,
    id: u64,
}

impl Held for HeldFlow {
    fn observation(&self) -> &Observation {
        &self.observation
    }

    async fn ended(&mut self) -> HoldEnd {
        let after = |obs: &Observation| {
            let t = obs.timings;
            Duration::from_micros(t.closed.unwrap_or(0).saturating_sub(t.connected.unwrap_or(0)))
        };
        match (&mut self.ended).await {
            Ok(end) => end,
            // The engine thread is gone: it stopped, and released the flow.
            Err(_) => HoldEnd { end: End::WeClosed, after: after(&self.observation) },
        }
    }
}

impl Drop for HeldFlow {
    fn drop(&mut self) {
        let _ = self.driver.submit(Command::Cancel(self.id));
    }
}

/// Tells the engine thread that a probe's future was dropped before its observation came.
struct CancelOnDrop<'a> {
    driver: &'a Driver,
    id: Option<u64>,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            let _ = self.driver.submit(Command::Cancel(id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ports_are_shared_out_whole_and_in_order() {
        assert_eq!(share_ports(&(61000..=65535), 1), vec![61000..=65535]);
        assert_eq!(share_ports(&(61000..=65535), 2), vec![61000..=63267, 63268..=65535]);
        let three = share_ports(&(1000..=1009), 3);
        assert_eq!(three, vec![1000..=1002, 1003..=1005, 1006..=1009]);
        // No thread without a port: at most one share a port.
        assert_eq!(share_ports(&(7..=8), 4), vec![7..=7, 8..=8]);
        assert_eq!(share_ports(&(65535..=65535), 0), vec![65535..=65535]);
    }

    fn letters(n: u16) -> (Vec<Letter>, Vec<oneshot::Receiver<Observation>>) {
        (0..n)
            .map(|port| {
                let (done, waiting) = oneshot::channel();
                let remote = SocketAddr::from(([127, 0, 0, 1], port));
                let observation = Observation::failed_connect(
                    remote,
                    None,
                    crate::evidence::ProbeOrder::WaitForBanner,
                    Connect::Refused,
                    0,
                );
                (Letter { done, observation }, waiting)
            })
            .unzip()
    }

    #[test]
    fn a_rounds_letters_reach_their_probes_through_one_wake_up() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let slot = MailboxSlot::default();
        runtime.block_on(async {
            let mailbox = slot.current().expect("inside a runtime");
            let again = slot.current().unwrap();
            assert!(Arc::ptr_eq(&mailbox, &again), "one mailbox a runtime");
            let (letters, waiting) = letters(100);
            // Posted from another thread, as the engine thread does.
            let poster = mailbox.clone();
            std::thread::spawn(move || poster.post(letters)).join().unwrap();
            for (port, waiting) in waiting.into_iter().enumerate() {
                let observation = waiting.await.expect("delivered");
                assert_eq!(observation.remote.port() as usize, port, "in order, to its own probe");
            }
            assert_eq!(mailbox.rounds.load(Ordering::Relaxed), 1, "one wake-up for the round's 100");
        });
        // The last engine gone, its collector ends: the mailbox closes.
        let mailbox = runtime.block_on(async { slot.current().unwrap() });
        drop(slot);
        for _ in 0..100 {
            if mailbox.is_closed() {
                break;
            }
            runtime.block_on(tokio::task::yield_now());
        }
        assert!(mailbox.is_closed(), "the collector outlived its engine");
    }

    #[test]
    fn letters_for_a_runtime_that_ended_are_delivered_directly() {
        let slot = MailboxSlot::default();
        let mailbox = {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let mailbox = runtime.block_on(async { slot.current().unwrap() });
            // Left in the mailbox while the collector has not run yet: delivered when it is dropped.
            let (pending, waiting) = letters(3);
            mailbox.post(pending);
            drop(runtime);
            for waiting in waiting {
                assert!(waiting.blocking_recv().is_ok(), "a pending letter was lost with its runtime");
            }
            mailbox
        };
        assert!(mailbox.is_closed());
        let (late, waiting) = letters(2);
        mailbox.post(late);
        for waiting in waiting {
            assert!(waiting.blocking_recv().is_ok(), "a letter posted after the runtime ended was lost");
        }
        // A probe on a new runtime gets a new mailbox, with a collector of its own.
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let fresh = runtime.block_on(async { slot.current().unwrap() });
        assert!(!Arc::ptr_eq(&fresh, &mailbox) && !fresh.is_closed());
        // Outside any runtime there is none: letters go directly.
        assert!(slot.current().is_none());
    }

    #[test]
    fn missing_capabilities_are_named_from_the_effective_set() {
        let needed = [(CAP_NET_ADMIN, "CAP_NET_ADMIN"), (CAP_NET_RAW, "CAP_NET_RAW")];
        let status =
            |cap_eff: &str| format!("Name:\tsshprobe\nCapPrm:\t000001ffffffffff\nCapEff:\t{cap_eff}\n");
        let missing = |cap_eff: &str| missing_in_status(&status(cap_eff), &needed);
        assert_eq!(missing("000001ffffffffff"), None, "root's full set");
        assert_eq!(missing("0000000000003000"), None, "bits 12 and 13 exactly");
        assert_eq!(missing("0000000000002000").as_deref(), Some("CAP_NET_ADMIN"), "CAP_NET_RAW alone");
        assert_eq!(missing("0000000000001000").as_deref(), Some("CAP_NET_RAW"), "CAP_NET_ADMIN alone");
        assert_eq!(missing("0000000000000000").as_deref(), Some("CAP_NET_ADMIN and CAP_NET_RAW"));
        // The permitted set does not count; a text that does not say, or garbles it, says nothing.
        assert_eq!(missing_in_status("CapPrm:\t000001ffffffffff\n", &needed), None);
        assert_eq!(missing("not hex"), None);
    }

    #[test]
    fn missing_capabilities_agree_with_what_the_kernel_allows() {
        // An independent oracle: opening a raw socket needs CAP_NET_RAW, whoever runs the test.
        let raw =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::RAW, Some(socket2::Protocol::TCP));
        let missing = missing_capabilities(&[(CAP_NET_RAW, "CAP_NET_RAW")]);
        assert_eq!(missing.is_none(), raw.is_ok(), "/proc says {missing:?}, socket(SOCK_RAW) says {raw:?}");
    }
}
