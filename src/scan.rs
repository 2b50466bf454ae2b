//! Running many probes: targets streamed in, results streamed out, with bounded concurrency and an
//! exact global rate.
//!
//! Targets arrive through a bounded channel from a reader thread ([`spawn_target_reader`]), so a list
//! of millions streams in constant memory and the first probe starts at once. Each target gets
//! `count` probes `interval` apart; at most `concurrency` targets are in progress; new connections
//! are paced to `rate` per second across the whole run. Results leave through another channel in the
//! order they finish.

mod epoll;

use crate::engine::{Engine, ProbeRequest};
use crate::evidence::{Connect, Observation};
use crate::record::ProbeRecord;
use crate::target::{net_addrs, net_addrs_shuffled, parse_target_ports, Exclusions, TargetError, TargetSpec};
use std::io::{BufRead, Read};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

/// Where targets come from, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSource {
    /// One target written on the command line.
    Arg(String),
    /// A file of targets, one per line (`#` starts a comment); `-` for standard input.
    File(PathBuf),
}

/// One address to probe, with the label it is reported under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The target as reported: the user's text, or the address for a network's members.
    pub label: String,
    /// What to connect to.
    pub dest: Dest,
}

/// An address, or a name still to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// Ready to probe.
    Addr(SocketAddr),
    /// Resolved just before probing.
    Host {
        /// The name.
        name: String,
        /// The port.
        port: u16,
    },
}

/// In which order the members of a network are probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetOrder {
    /// Networks of more than [`SHUFFLE_ABOVE`] addresses in a pseudo-random order, smaller ones in
    /// address order.
    Auto,
    /// Every network in a pseudo-random order.
    Shuffled,
    /// Every network in address order.
    Sequential,
}

/// Networks that walk more addresses than this (a /24 walks 254, a /23 510) are shuffled by
/// [`NetOrder::Auto`].
pub const SHUFFLE_ABOVE: u128 = 256;

/// How targets are read.
#[derive(Debug, Clone)]
pub struct TargetReaderOptions {
    /// The ports for targets that name none (`-p 22,2222`): each target on each port, in order.
    pub default_ports: Vec<u16>,
    /// Keep only shard `index` of `count` (0-based): every target whose position in the stream is
    /// `index` modulo `count`. Positions are counted after shuffling, so shards that share a seed are
    /// disjoint and together cover every target.
    pub shard: Option<(u64, u64)>,
    /// The order of a network's members.
    pub order: NetOrder,
    /// Fixes the pseudo-random order of shuffled networks.
    pub seed: u64,
    /// Addresses never to probe: a network's members in them are skipped, an address named in
    /// them comes out as [`TargetError::Excluded`].
    pub exclusions: Arc<Exclusions>,
}

impl TargetReaderOptions {
    /// Targets on `default_port`, every one, networks in [`NetOrder::Auto`] order with seed 0.
    pub fn new(default_port: u16) -> TargetReaderOptions {
        TargetReaderOptions {
            default_ports: vec![default_port],
            shard: None,
            order: NetOrder::Auto,
            seed: 0,
            exclusions: Arc::default(),
        }
    }
}

/// Targets, or errors in their place, as the reader thread produces them.
type TargetItem = Result<Target, TargetError>;

/// Most targets sent through the channel at once. Batches keep the reader thread and the runner from
/// waking each other once per target (a futex round trip each way costs more than the probe's own
/// work on loopback).
const BATCH: usize = 256;
/// Batches in the channel: with [`BATCH`], at most 1024 targets wait between reader and runner.
const BATCHES_QUEUED: usize = 4;

/// The receiving end of [`spawn_target_reader`]: targets one at a time, in order.
#[derive(Debug)]
pub struct TargetStream {
    rx: mpsc::Receiver<Vec<TargetItem>>,
    batch: std::vec::IntoIter<TargetItem>,
}

impl TargetStream {
    /// The next target (or error), or `None` after the last.
    pub async fn recv(&mut self) -> Option<TargetItem> {
        loop {
            if let Some(item) = self.batch.next() {
                return Some(item);
            }
            self.batch = self.rx.recv().await?.into_iter();
        }
    }

    /// The next target if one is waiting, without waiting.
    fn try_recv(&mut self) -> TryRecv {
        loop {
            if let Some(item) = self.batch.next() {
                return TryRecv::Item(item);
            }
            match self.rx.try_recv() {
                Ok(batch) => self.batch = batch.into_iter(),
                Err(mpsc::error::TryRecvError::Empty) => return TryRecv::Empty,
                Err(mpsc::error::TryRecvError::Disconnected) => return TryRecv::Closed,
            }
        }
    }

    /// The same, for code outside the runtime.
    pub fn blocking_recv(&mut self) -> Option<TargetItem> {
        loop {
            if let Some(item) = self.batch.next() {
                return Some(item);
            }
            self.batch = self.rx.blocking_recv()?.into_iter();
        }
    }
}

/// What [`TargetStream::try_recv`] found.
enum TryRecv {
    Item(TargetItem),
    Empty,
    Closed,
}

/// Collects targets into batches for the channel.
struct Batcher {
    tx: mpsc::Sender<Vec<TargetItem>>,
    batch: Vec<TargetItem>,
}

impl Batcher {
    /// Queues one item; sends the batch when it is full or when the runner has nothing left to do
    /// (so the first target, and every target of a slow stream, goes out at once). False when the
    /// receiver is gone.
    fn push(&mut self, item: TargetItem) -> bool {
        self.batch.push(item);
        if self.batch.len() >= BATCH || self.tx.capacity() == self.tx.max_capacity() {
            return self.flush();
        }
        true
    }

    /// Sends what is queued. False when the receiver is gone.
    fn flush(&mut self) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        self.tx.blocking_send(batch).is_ok()
    }
}

/// Reads, parses and expands targets on a thread of their own, sending them into a bounded channel
/// in order. Errors are sent in place of the target they concern, and reading goes on.
pub fn spawn_target_reader(sources: Vec<TargetSource>, options: TargetReaderOptions) -> TargetStream {
    let (tx, rx) = mpsc::channel(BATCHES_QUEUED);
    std::thread::Builder::new()
        .name("targets".into())
        .spawn(move || {
            let mut out = Batcher { tx, batch: Vec::with_capacity(BATCH) };
            let mut position = 0u64;
            let mut emit = |item: Option<TargetItem>| -> bool {
                let Some(item) = item else { return out.flush() };
                let keep = match (&item, options.shard) {
                    (Ok(_), Some((index, count))) => position % count == index,
                    _ => true,
                };
                if item.is_ok() {
                    position += 1;
                }
                !keep || out.push(item)
            };
            for source in sources {
                let more = match source {
                    TargetSource::Arg(text) => emit_spec(&text, &options, &mut emit),
                    TargetSource::File(path) => read_file(&path, &options, &mut emit),
                };
                if !more {
                    return;
                }
            }
            emit(None);
        })
        .expect("spawning the target reader thread");
    TargetStream { rx, batch: Vec::new().into_iter() }
}

/// Sends the targets of one line; false when the receiver is gone. `emit(None)` sends what is
/// batched.
fn emit_spec(
    text: &str,
    options: &TargetReaderOptions,
    emit: &mut impl FnMut(Option<TargetItem>) -> bool,
) -> bool {
    let specs = match parse_target_ports(text, &options.default_ports) {
        Ok(specs) => specs,
        Err(e) => return emit(Some(Err(e))),
    };
    // One spec keeps the user's text as its label; several (a port list) are told apart by port.
    let several = specs.len() > 1;
    specs.into_iter().all(|spec| {
        // `::1:2901` is shown as `[::1:2901]:22`: the port it is probed on, not the one it seems to name.
        let shown = several || crate::target::hides_its_port(text);
        let label = if shown { spec.to_string() } else { text.trim().to_string() };
        emit_one_spec(spec, label, options, emit)
    })
}

/// Sends the targets of one spec, labelled `label` (a network's members by their address).
fn emit_one_spec(
    spec: TargetSpec,
    label: String,
    options: &TargetReaderOptions,
    emit: &mut impl FnMut(Option<TargetItem>) -> bool,
) -> bool {
    let member = |addr: SocketAddr| Target { label: addr.to_string(), dest: Dest::Addr(addr) };
    match spec {
        TargetSpec::Addr(addr) if options.exclusions.contains(addr.ip()) => {
            emit(Some(Err(TargetError::Excluded { target: label, addr: addr.ip() })))
        }
        TargetSpec::Addr(addr) => emit(Some(Ok(Target { label, dest: Dest::Addr(addr) }))),
        TargetSpec::Host { name, port } => emit(Some(Ok(Target { label, dest: Dest::Host { name, port } }))),
        spec @ TargetSpec::Net { net, port } => {
            let shuffle = match options.order {
                NetOrder::Auto => spec.address_count() > SHUFFLE_ABOVE,
                NetOrder::Shuffled => true,
                NetOrder::Sequential => false,
            };
            // Excluded members are left out before they take a place in the stream (so shards
            // that share the exclusions stay disjoint).
            let excluded = |a: &SocketAddr| options.exclusions.contains(a.ip());
            if shuffle {
                net_addrs_shuffled(net, port, options.seed)
                    .filter(|a| !excluded(a))
                    .all(|a| emit(Some(Ok(member(a)))))
            } else {
                net_addrs(net, port).filter(|a| !excluded(a)).all(|a| emit(Some(Ok(member(a)))))
            }
        }
    }
}

fn read_file(
    path: &PathBuf,
    options: &TargetReaderOptions,
    emit: &mut impl FnMut(Option<TargetItem>) -> bool,
) -> bool {
    let from_stdin = path.as_os_str() == "-";
    let name = if from_stdin { "<stdin>".to_string() } else { path.display().to_string() };
    let read_error =
        |e: std::io::Error| TargetError::Read { source_name: name.clone(), reason: e.to_string() };
    let file: Box<dyn Read> = if from_stdin {
        Box::new(std::io::stdin().lock())
    } else {
        match std::fs::File::open(path) {
            Ok(f) => Box::new(f),
            Err(e) => return emit(Some(Err(read_error(e)))),
        }
    };
    let mut reader = std::io::BufReader::with_capacity(64 * 1024, file);
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        // About to read from the file or pipe, which may block (a slow stdin): send what is batched
        // first, so no target waits for the next line to arrive.
        if !reader.buffer().contains(&b'\n') && !emit(None) {
            return false;
        }
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => return true,
            Ok(_) => number += 1,
            Err(e) => return emit(Some(Err(read_error(e)))),
        }
        // Every error on this line names it as FILE:LINE.
        let mut emit_here =
            |item: Option<TargetItem>| emit(item.map(|r| r.map_err(|e| e.at_line(&name, number))));
        // A line that is not text is skipped, and named; the lines after it are still read.
        let text = match std::str::from_utf8(&line) {
            Ok(text) => text,
            Err(_) => {
                let shown = crate::escape::text_of_bytes(&line).trim().to_string();
                if !emit_here(Some(Err(TargetError::NotText(shown)))) {
                    return false;
                }
                continue;
            }
        };
        let text = target_text(text);
        if !text.is_empty() && !emit_spec(text, options, &mut emit_here) {
            return false;
        }
    }
}

/// A target file line's target: the text before any `#` comment, trimmed.
fn target_text(line: &str) -> &str {
    line.split('#').next().unwrap_or("").trim()
}

/// How many addresses `sources` name, as the target reader will send them (networks by their
/// member count, each with its ports), reading target files to the end; `None` when one is
/// standard input, which can be read only once. Lines that do not parse (and files that cannot be
/// read) count nothing, as they probe nothing; exclusions are not subtracted. For a progress line's
/// total: a large file is read twice, on a thread of its own, while the run starts.
pub fn count_addresses(sources: &[TargetSource], default_ports: &[u16]) -> Option<u128> {
    let of_text = |text: &str| -> u128 {
        crate::target::parse_target_ports(text, default_ports)
            .map_or(0, |specs| specs.iter().map(TargetSpec::address_count).fold(0u128, u128::saturating_add))
    };
    let mut total = 0u128;
    for source in sources {
        let n = match source {
            TargetSource::Arg(text) => of_text(text),
            TargetSource::File(path) if path.as_os_str() == "-" => return None,
            TargetSource::File(path) => {
                let Ok(file) = std::fs::File::open(path) else { continue };
                let mut reader = std::io::BufReader::with_capacity(64 * 1024, file);
                let (mut line, mut n) = (Vec::new(), 0u128);
                while matches!(reader.read_until(b'\n', &mut line), Ok(1..)) {
                    if let Ok(text) = std::str::from_utf8(&line) {
                        let text = target_text(text);
                        if !text.is_empty() {
                            n = n.saturating_add(of_text(text));
                        }
                    }
                    line.clear();
                }
                n
            }
        };
        total = total.saturating_add(n);
    }
    Some(total)
}

/// How a run paces its probes.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Targets in progress at once.
    pub concurrency: usize,
    /// New connections per second across the run; `None` for as fast as concurrency allows.
    pub rate: Option<f64>,
    /// Probes per target.
    pub count: u32,
    /// Gap between a target's probes.
    pub interval: Duration,
    /// Local addresses to probe from, used round-robin (per address family).
    pub sources: Vec<IpAddr>,
    /// The probe every target gets (order, ident, timeouts); its remote and source are each
    /// probe's own ([`ProbeRequest::to`]).
    pub probe: ProbeRequest,
    /// Stops the run early (Ctrl-C): no probe starts after it, and those under way end at once as
    /// `interrupted`.
    pub stop: Stop,
    /// Addresses never to probe: a name that resolves into them is reported as excluded.
    pub exclusions: Arc<Exclusions>,
    /// Probes under way now, counted by the run (for a progress line).
    pub in_flight: Arc<std::sync::atomic::AtomicUsize>,
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions {
            concurrency: 64,
            rate: None,
            count: 1,
            interval: Duration::from_secs(1),
            sources: Vec::new(),
            probe: ProbeRequest::new(SocketAddr::from(([0, 0, 0, 0], 0))),
            stop: Stop::default(),
            exclusions: Arc::default(),
            in_flight: Arc::default(),
        }
    }
}

/// A switch that stops a run: [`Stop::stop`] from anywhere (a signal handler), and every task of
/// the run sees it. Clones share the switch.
#[derive(Debug, Clone)]
pub struct Stop(Arc<tokio::sync::watch::Sender<bool>>);

impl Default for Stop {
    fn default() -> Stop {
        Stop(Arc::new(tokio::sync::watch::channel(false).0))
    }
}

impl Stop {
    /// Stops the run.
    pub fn stop(&self) {
        self.0.send_replace(true);
    }

    /// Whether [`Stop::stop`] was called.
    pub(crate) fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }

    /// The interrupt a probe of this run ends by, with what it saw, when the run stops.
    pub fn interrupt(&self) -> crate::engine::Interrupt {
        crate::engine::Interrupt::new(self.0.subscribe())
    }

    /// Returns once [`Stop::stop`] is called (at once if it was).
    pub async fn stopped(&self) {
        let mut rx = self.0.subscribe();
        // The sender lives in `self`, so waiting cannot fail.
        let _ = rx.wait_for(|&stopped| stopped).await;
    }
}

/// One probe's report: what was probed, what was seen, what it means.
#[derive(Debug, Clone)]
pub struct ProbeResult {
    /// The target's label.
    pub target: String,
    /// Which of the target's probes this is (0-based).
    pub seq: u32,
    /// When the probe started, by the system clock: the absolute time beside the observation's
    /// relative timings.
    pub time: SystemTime,
    /// What the engine observed, and what it means.
    pub record: ProbeRecord,
}

/// What a run reports, as it happens.
#[derive(Debug)]
pub enum Event {
    /// A probe finished.
    Probe(Box<ProbeResult>),
    /// A target could not be read, parsed or resolved.
    BadTarget(TargetError),
    /// A target named an excluded address ([`TargetError::Excluded`]): not probed.
    Excluded(TargetError),
}

/// Probes every target from `targets` and sends every result to `events`; returns when all are done.
///
/// With an engine of kernel sockets ([`Engine::kernel_sockets`]) the probes run in one event loop on
/// a thread of its own (`scan/epoll.rs`: no task, waker or timer entry per probe), one loop per thread
/// of the runtime (`probe --threads N`: N loops, targets shared out as each has room); otherwise each
/// target is a task calling [`Engine::probe`]. `SSHPROBE_SCAN_CORE=tokio` in the environment makes
/// the kernel-socket engine take the task path too, for comparing the two (docs/performance.md).
pub async fn run<E: Engine>(
    engine: Arc<E>,
    targets: TargetStream,
    options: RunOptions,
    events: mpsc::Sender<Event>,
) {
    let tasks = std::env::var_os("SSHPROBE_SCAN_CORE").is_some_and(|v| v == "tokio");
    match engine.kernel_sockets() {
        Some(config) if !tasks => {
            // As many loops as the runtime has threads (`probe --threads`): one by default.
            let loops = tokio::runtime::Handle::current().metrics().num_workers();
            match epoll::run(config, targets, options, events, loops) {
                Ok(threads) => {
                    // Waited for off the runtime's threads, which the output needs.
                    let _ = tokio::task::spawn_blocking(move || {
                        for thread in threads {
                            let _ = thread.join();
                        }
                    })
                    .await;
                }
                Err(e) => tracing::error!(error = %e, "spawning the probe loops' threads"),
            }
        }
        _ => run_tasks(engine, targets, options, events).await,
    }
}

/// [`run`] with a task per target, each probing through [`Engine::probe`].
async fn run_tasks<E: Engine>(
    engine: Arc<E>,
    mut targets: TargetStream,
    options: RunOptions,
    events: mpsc::Sender<Event>,
) {
    let concurrency = options.concurrency.max(1);
    let slots = Arc::new(Semaphore::new(concurrency));
    let shared = Arc::new(Shared {
        pacer: options.rate.map(Pacer::new),
        sources: SourceRotation::new(options.sources.clone()),
        options,
    });
    let stop = shared.options.stop.clone();
    loop {
        let item = tokio::select! {
            item = targets.recv() => item,
            () = stop.stopped() => None,
        };
        let Some(item) = item else { break };
        let target = match item {
            Ok(t) => t,
            Err(e) => {
                let event = match e {
                    TargetError::Excluded { .. } => Event::Excluded(e),
                    e => Event::BadTarget(e),
                };
                if events.send(event).await.is_err() {
                    break;
                }
                continue;
            }
        };
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            () = stop.stopped() => break,
        };
        let Ok(slot) = slot else { break };
        let (engine, shared, events) = (engine.clone(), shared.clone(), events.clone());
        tokio::spawn(async move {
            probe_target(&*engine, &shared, target, &events).await;
            drop(slot);
        });
    }
    // Every slot back means every target is done.
    let _ = slots.acquire_many(concurrency as u32).await;
}

struct Shared {
    pacer: Option<Pacer>,
    sources: SourceRotation,
    options: RunOptions,
}

async fn probe_target<E: Engine>(engine: &E, shared: &Shared, target: Target, events: &mpsc::Sender<Event>) {
    let remote = match resolve(&target).await {
        Ok(addr) => addr,
        Err(e) => {
            let _ = events.send(Event::BadTarget(e)).await;
            return;
        }
    };
    // A name can resolve into an excluded network: checked before the first packet.
    if shared.options.exclusions.contains(remote.ip()) {
        let _ = events
            .send(Event::Excluded(TargetError::Excluded { target: target.label, addr: remote.ip() }))
            .await;
        return;
    }
    let stop = &shared.options.stop;
    for seq in 0..shared.options.count {
        // Waits end early when the run stops; probes not yet started are not reported.
        let wait = async {
            if seq > 0 {
                tokio::time::sleep(shared.options.interval).await;
            }
            if let Some(pacer) = &shared.pacer {
                pacer.wait().await;
            }
        };
        tokio::select! {
            () = wait => {}
            () = stop.stopped() => return,
        }
        let source = shared.sources.next_for(remote.ip());
        let started = Instant::now();
        let time = SystemTime::now();
        // A probe under way when the run stops is reported as interrupted, not dropped: an engine
        // that honours the interrupt ends it with what it saw (polled first, so it gets to); the
        // other branch covers one that does not.
        let request = shared.options.probe.to(remote, source).interrupt(stop.interrupt());
        let in_flight = InFlight::count(&shared.options.in_flight);
        let observation = tokio::select! {
            biased;
            observation = engine.probe(request) => observation,
            () = stop.stopped() => Observation::failed_connect(
                remote,
                None,
                shared.options.probe.order,
                Connect::Interrupted,
                u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            ),
        };
        drop(in_flight);
        let result =
            ProbeResult { target: target.label.clone(), seq, time, record: ProbeRecord::new(observation) };
        if events.send(Event::Probe(Box::new(result))).await.is_err() {
            return;
        }
    }
}

/// One probe counted in [`RunOptions::in_flight`] while it lives.
struct InFlight<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> InFlight<'a> {
    fn count(counter: &'a std::sync::atomic::AtomicUsize) -> InFlight<'a> {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        InFlight(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

async fn resolve(target: &Target) -> Result<SocketAddr, TargetError> {
    match &target.dest {
        Dest::Addr(a) => Ok(*a),
        Dest::Host { name, port } => crate::resolve::resolve_one(name, *port, None)
            .await
            .map_err(|e| TargetError::Resolve { target: target.label.clone(), reason: e.reason() }),
    }
}

/// Spaces events exactly `1/rate` apart over the whole run, without bursts.
#[derive(Debug)]
pub struct Pacer {
    gap: Duration,
    next: Mutex<Option<Instant>>,
}

impl Pacer {
    /// How late a run may be on its schedule and still catch up: the timer's 1 ms resolution, and a
    /// process descheduled on a busy machine (measured: with 5 ms, a loaded 2-core machine lost 10–20%
    /// of a 2 000/s or 5 000/s rate; with 100 ms, under 1%). The catch-up burst is at most this much
    /// of the schedule and at most `--concurrency` probes.
    pub const SLACK: Duration = Duration::from_millis(100);

    /// A pacer for `rate` events per second (at least one per hour).
    pub fn new(rate: f64) -> Pacer {
        let gap = Duration::from_secs_f64(1.0 / rate.max(1.0 / 3600.0));
        Pacer { gap, next: Mutex::new(None) }
    }

    /// Waits for the next free slot.
    ///
    /// Slots are handed out `gap` apart whatever the timer's resolution (tokio's is 1 ms): at 20 000/s
    /// the waiters of one millisecond wake together, but the count per second stays exact. A waiter
    /// that wakes late does not cost the run its slots: up to [`Pacer::SLACK`] of lateness is made up
    /// by letting the overdue slots go at once; a run that fell further behind (it could not keep up)
    /// starts afresh from now instead of bursting. A slot already due returns without the timer.
    pub async fn wait(&self) {
        let (slot, now) = {
            let mut next = self.next.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let now = Instant::now();
            let slot = match *next {
                Some(n) if n + Self::SLACK >= now => n,
                _ => now,
            };
            *next = Some(slot + self.gap);
            (slot, now)
        };
        if slot > now {
            tokio::time::sleep_until(slot).await;
        }
    }
}

/// The open-files limit, after [`raise_open_files_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The limit in force.
    pub soft: u64,
    /// The most it can be raised to.
    pub hard: u64,
}

/// Raises this process's open-files limit (RLIMIT_NOFILE) to its hard limit: every probe in flight
/// holds a socket, and the usual soft limit of 1024 is far below a scan's concurrency.
pub fn raise_open_files_limit() -> std::io::Result<OpenFiles> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: a valid pointer to an rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // An unlimited hard limit cannot be the soft one past fs.nr_open: try that next.
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|s| s.trim().parse().ok());
    for want in [Some(lim.rlim_max), nr_open.map(|n: libc::rlim_t| n.min(lim.rlim_max))].into_iter().flatten()
    {
        if lim.rlim_cur >= want {
            break;
        }
        let raised = libc::rlimit { rlim_cur: want, rlim_max: lim.rlim_max };
        // SAFETY: a valid pointer to an rlimit. Failure leaves the old limit, reported below.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    Ok(OpenFiles { soft: lim.rlim_cur, hard: lim.rlim_max })
}

/// Hands out local source addresses round-robin, matching the remote's address family.
#[derive(Debug)]
struct SourceRotation {
    v4: Vec<IpAddr>,
    v6: Vec<IpAddr>,
    turn: AtomicUsize,
}

impl SourceRotation {
    fn new(sources: Vec<IpAddr>) -> SourceRotation {
        let (v4, v6) = sources.into_iter().partition(IpAddr::is_ipv4);
        SourceRotation { v4, v6, turn: AtomicUsize::new(0) }
    }

    fn next_for(&self, remote: IpAddr) -> Option<IpAddr> {
        let pool = if remote.is_ipv4() { &self.v4 } else { &self.v6 };
        if pool.is_empty() {
            return None;
        }
        Some(pool[self.turn.fetch_add(1, Ordering::Relaxed) % pool.len()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(sources: Vec<TargetSource>, shard: Option<(u64, u64)>) -> Vec<String> {
        labels_with(sources, TargetReaderOptions { shard, ..TargetReaderOptions::new(22) })
    }

    fn labels_with(sources: Vec<TargetSource>, options: TargetReaderOptions) -> Vec<String> {
        let mut rx = spawn_target_reader(sources, options);
        let mut out = Vec::new();
        while let Some(item) = rx.blocking_recv() {
            out.push(match item {
                Ok(t) => t.label,
                Err(e) => format!("error: {e}"),
            });
        }
        out
    }

    #[test]
    fn reader_expands_networks_and_keeps_going_after_errors() {
        let got = labels(
            vec![
                TargetSource::Arg("127.0.0.0/30".into()),
                TargetSource::Arg("bad host".into()),
                TargetSource::Arg("localhost:2222".into()),
            ],
            None,
        );
        assert_eq!(
            got,
            ["127.0.0.1:22", "127.0.0.2:22", "error: invalid host name \"bad host\"", "localhost:2222"]
        );
    }

    #[test]
    fn reader_reads_files_with_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("targets.txt");
        std::fs::write(
            &path,
            b"# lab\n127.0.0.1:2201\n\n  127.0.0.2  # second\nbad\xff\xfe\nbad host\n127.0.0.3",
        )
        .unwrap();
        let got =
            labels(vec![TargetSource::File(path.clone()), TargetSource::File("/nonexistent/x".into())], None);
        let file = path.display();
        assert_eq!(
            got[..5],
            [
                "127.0.0.1:2201".to_string(),
                "127.0.0.2".to_string(),
                format!("error: {file}:5: not UTF-8 text: \"bad\\xff\\xfe\""),
                format!("error: {file}:6: invalid host name \"bad host\""),
                "127.0.0.3".to_string(),
            ]
        );
        assert!(got[5].starts_with("error: reading targets from /nonexistent/x"), "{got:?}");
    }

    #[test]
    fn shards_are_disjoint_and_cover_everything() {
        // A small network in order, and one large enough to be shuffled: shards share the seed.
        for (net, order) in [("127.0.0.0/27", NetOrder::Auto), ("127.0.0.0/22", NetOrder::Auto)] {
            let options =
                |shard| TargetReaderOptions { shard, order, seed: 42, ..TargetReaderOptions::new(22) };
            let source = || vec![TargetSource::Arg(net.into()), TargetSource::Arg("127.1.0.1".into())];
            let all = labels_with(source(), options(None));
            let shards: Vec<Vec<String>> =
                (0..3).map(|i| labels_with(source(), options(Some((i, 3))))).collect();
            let mut union: Vec<String> = shards.concat();
            assert_eq!(union.len(), all.len(), "{net}: shards are disjoint");
            union.sort();
            let mut sorted = all.clone();
            sorted.sort();
            assert_eq!(union, sorted, "{net}: shards cover everything");
            // Each shard is the unsharded stream's every third target, in the same order.
            for (i, shard) in shards.iter().enumerate() {
                let want: Vec<&String> = all.iter().skip(i).step_by(3).collect();
                assert_eq!(shard.iter().collect::<Vec<_>>(), want, "{net} shard {i}");
            }
        }
    }

    #[test]
    fn large_networks_are_shuffled_reproducibly_and_small_ones_kept_in_order() {
        let run = |net: &str, order, seed| {
            labels_with(
                vec![TargetSource::Arg(net.into())],
                TargetReaderOptions { order, seed, ..TargetReaderOptions::new(22) },
            )
        };
        let in_order = run("127.0.0.0/23", NetOrder::Sequential, 1);
        let shuffled = run("127.0.0.0/23", NetOrder::Auto, 1);
        assert_eq!(in_order.len(), 510);
        assert_ne!(shuffled, in_order);
        assert_eq!(shuffled, run("127.0.0.0/23", NetOrder::Shuffled, 1));
        assert_ne!(shuffled, run("127.0.0.0/23", NetOrder::Auto, 2));
        let mut sorted = shuffled.clone();
        sorted.sort_by_key(|l| l.parse::<SocketAddr>().unwrap());
        assert_eq!(sorted, in_order);
        // A /24 is small: in order unless asked.
        let small = run("127.0.0.0/24", NetOrder::Auto, 1);
        assert_eq!(small, run("127.0.0.0/24", NetOrder::Sequential, 1));
        assert_ne!(small, run("127.0.0.0/24", NetOrder::Shuffled, 1));
    }

    #[test]
    fn a_slow_stream_is_not_held_back_by_batching() {
        // The writer sends the next line only after the previous target came out: if the reader
        // waited to fill a batch, this would never finish (bounded by the timeout below).
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("targets");
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let (got_tx, got_rx) = std::sync::mpsc::channel();
        let (ack_tx, ack_rx) = std::sync::mpsc::channel::<()>();
        let writer_path = fifo.clone();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            let mut w = std::fs::OpenOptions::new().write(true).open(writer_path).unwrap();
            for i in 1..=3 {
                writeln!(w, "127.0.0.{i}").unwrap();
                w.flush().unwrap();
                if ack_rx.recv_timeout(Duration::from_secs(10)).is_err() {
                    return;
                }
            }
        });
        let mut rx = spawn_target_reader(vec![TargetSource::File(fifo)], TargetReaderOptions::new(22));
        std::thread::spawn(move || {
            while let Some(item) = rx.blocking_recv() {
                let _ = got_tx.send(item.map(|t| t.label));
            }
        });
        for i in 1..=3 {
            let got = got_rx.recv_timeout(Duration::from_secs(10)).expect("a target held back by batching");
            assert_eq!(got.unwrap(), format!("127.0.0.{i}"));
            ack_tx.send(()).unwrap();
        }
        writer.join().unwrap();
    }

    #[test]
    fn sources_rotate_within_a_family() {
        let rot = SourceRotation::new(vec![
            "127.0.0.2".parse().unwrap(),
            "::1".parse().unwrap(),
            "127.0.0.3".parse().unwrap(),
        ]);
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        let got: Vec<_> = (0..3).map(|_| rot.next_for(v4).unwrap().to_string()).collect();
        assert_eq!(got, ["127.0.0.2", "127.0.0.3", "127.0.0.2"]);
        assert_eq!(rot.next_for("::1".parse().unwrap()), Some("::1".parse().unwrap()));
        assert_eq!(SourceRotation::new(vec![]).next_for(v4), None);
    }

    #[tokio::test(start_paused = true)]
    async fn pacer_holds_high_rates_exactly() {
        // 20 000/s is a 50 µs gap, far below the timer's 1 ms resolution: the count per second must
        // still be exact (virtual time: this asserts the arithmetic, not the machine's speed).
        let pacer = Pacer::new(20_000.0);
        let start = Instant::now();
        for _ in 0..20_001 {
            pacer.wait().await;
        }
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_secs(1) && elapsed <= Duration::from_millis(1001), "{elapsed:?}");
    }

    #[test]
    fn open_files_limit_is_raised_to_the_hard_limit() {
        // The process's limit as the kernel has it, read independently of the function under test.
        let current = || {
            let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            // SAFETY: a valid pointer to an rlimit.
            assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
            (lim.rlim_cur, lim.rlim_max)
        };
        // Start where a login shell starts: a soft limit well below the hard one. (Lowering the soft
        // limit needs no privilege; the hard one is left alone.)
        let (_, hard) = current();
        let low = hard.min(256);
        let lowered = libc::rlimit { rlim_cur: low, rlim_max: hard };
        // SAFETY: a valid pointer to an rlimit.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) }, 0);
        assert_eq!(current(), (low, hard));

        let lim = raise_open_files_limit().unwrap();
        // As far as the kernel allows: the hard limit, or fs.nr_open when the hard one is beyond it
        // (unlimited).
        let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open").unwrap().trim().parse().unwrap();
        let expected = hard.min(nr_open);
        assert_eq!(lim, OpenFiles { soft: expected, hard });
        assert_eq!(current(), (expected, hard), "the limit reported is the limit in force");
        assert!(hard == low || lim.soft > low, "{lim:?}");
        // A second call finds nothing left to raise.
        assert_eq!(raise_open_files_limit().unwrap(), lim);
    }

    #[tokio::test(start_paused = true)]
    async fn pacer_spaces_events_exactly() {
        let pacer = Pacer::new(4.0);
        let start = Instant::now();
        for _ in 0..9 {
            pacer.wait().await;
        }
        assert_eq!(start.elapsed(), Duration::from_millis(2000));
    }
}
