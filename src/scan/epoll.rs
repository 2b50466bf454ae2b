//! The connect engine's scan core: one thread, one epoll, a slab of probes.
//!
//! [`run`](super::run) with the connect engine lands here. Where the tokio engine gives every probe a
//! task, a waker, a socket registration (added and removed: two `epoll_ctl`) and two timer entries,
//! this loop owns its probes outright, as a hand-written C client does:
//!
//! - a **slab** of probe states, indexed by the epoll event's data (slot and generation, so an event
//!   or timer for a slot since reused is ignored);
//! - **one registration per socket**, edge-triggered for reading and writing at once
//!   (`EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET`), added once and removed by the close itself;
//! - **one timer heap** for every deadline (connect, banner, the gap between a target's probes);
//! - the **same exchange machine** as the tokio engine ([`Exchange`]): the loop only does what each
//!   [`Step`] says (send our ident, keep reading, close), so both engines stop at the same byte for
//!   the same reason, and a new step of the machine is a new arm here, not a new policy.
//!
//! Reads go straight into the probe's [`BannerReader`](crate::engine::BannerReader) (no scratch
//! buffer); a read is repeated only when it filled what it asked for (edge-triggered: a short read
//! means the socket's queue was empty, and later data raises a new edge). Data queued before an
//! error is read first: the kernel hands it out before the reset, so a refusal line that precedes
//! an RST is kept (docs/facts.md §2).
//!
//! Results leave through the run's channel as they finish, like [`run`](super::run)'s. The loop runs
//! on a thread of its own; the runtime's thread formats and writes the output.

use super::{Dest, Event, ProbeResult, RunOptions, SourceRotation, Target, TargetStream, TryRecv};
use crate::engine::connect::{connect_error, new_socket};
use crate::engine::exchange::{Exchange, Purpose, Step};
use crate::engine::EngineConfig;
use crate::evidence::{CloseMode, Connect, End, Observation};
use crate::record::ProbeRecord;
use crate::target::TargetError;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

/// Events taken per `epoll_wait`.
const EVENTS: usize = 1024;
/// The longest the loop sleeps when targets may still arrive while probes are in flight (it cannot
/// wait on the target channel and epoll at once): the most a slow target stream's next target waits.
const POLL_TARGETS: Duration = Duration::from_millis(2);
/// The longest any wait lasts, so a stop is seen promptly.
const POLL_STOP: Duration = Duration::from_millis(50);
/// Results are handed to the output in bursts of at most this many...
const BURST: usize = 128;
/// ...or after at most this long: a result sent alone wakes the output's thread, which writes it
/// alone (measured: 0.6 wake-ups and 0.6 `write`s a probe at 20 000 probes/s when each result went
/// out at once; a burst costs one of each). A person watching sees no difference.
const BURST_WAIT: Duration = Duration::from_millis(5);

/// Runs the scan of `targets` with kernel sockets configured by `config` in `loops` event loops,
/// each on a thread of its own, until every target is done, the run is stopped, or nobody takes the
/// results any more.
///
/// With several loops, each takes targets from the one stream as it has room (so a target and all
/// its probes stay in one loop), and gets an equal share of the concurrency and of the rate.
pub(super) fn run(
    config: EngineConfig,
    targets: TargetStream,
    options: RunOptions,
    events: mpsc::Sender<Event>,
    loops: usize,
) -> io::Result<Vec<std::thread::JoinHandle<()>>> {
    let loops = loops.clamp(1, options.concurrency.max(1));
    let targets = Arc::new(Mutex::new(targets));
    (0..loops)
        .map(|i| {
            let mut options = options.clone();
            // Shares that add up to the whole: the first loops take the remainder.
            let total = options.concurrency.max(1);
            options.concurrency = total / loops + usize::from(i < total % loops);
            options.rate = options.rate.map(|r| r / loops as f64);
            let (targets, events) = (targets.clone(), events.clone());
            std::thread::Builder::new().name(format!("probes-{i}")).spawn(move || {
                let mut core = match Core::new(config, options, events) {
                    Ok(core) => core,
                    Err(e) => {
                        tracing::error!(error = %e, "creating the epoll instance");
                        return;
                    }
                };
                core.run(&targets);
            })
        })
        .collect()
}

/// A target between its probes, or waiting for its first: what is needed to start the next probe.
struct Next {
    label: Box<str>,
    remote: SocketAddr,
    seq: u32,
}

/// Where a probe is.
enum Phase {
    /// The SYN is out; the connect's deadline is pending.
    Connecting,
    /// The exchange is under way.
    Exchanging(Exchange),
}

/// One probe in flight.
struct Probe {
    fd: RawFd,
    generation: u32,
    next: Next,
    /// Our address, when known (a bound source before the handshake; every probe after it).
    local: Option<SocketAddr>,
    time: SystemTime,
    started: Instant,
    phase: Phase,
}

impl Probe {
    fn us(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.started).as_micros()).unwrap_or(u64::MAX)
    }
}

/// What a timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// The probe in this slot (of this generation) is due for its connect deadline.
    Connect { slot: u32, generation: u32 },
    /// The probe in this slot (of this generation) is due for its banner deadline.
    Banner { slot: u32, generation: u32 },
    /// A target's gap between probes ends (the target itself waits in `waiting`).
    Interval,
}

struct Core {
    config: EngineConfig,
    options: RunOptions,
    sources: SourceRotation,
    events: mpsc::Sender<Event>,
    epoll: RawFd,
    slab: Vec<Option<Probe>>,
    free: Vec<u32>,
    generation: u32,
    /// Deadlines of probes, and of targets between probes, earliest first.
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    /// Targets between two of their probes, in the order their gaps end.
    waiting: VecDeque<(Instant, Next)>,
    /// Targets ready for a probe, waiting only for the rate.
    ready: VecDeque<Next>,
    /// Targets in progress (in flight, ready, or between probes): bounded by the concurrency.
    in_progress: usize,
    /// The next free slot of the rate's schedule.
    next_slot: Option<Instant>,
    gap: Option<Duration>,
    /// Whether the target stream has ended.
    targets_done: bool,
    /// Whether nobody takes results any more.
    closed: bool,
    /// Results not yet handed over, and since when the oldest waits.
    burst: Vec<Event>,
    burst_since: Option<Instant>,
    /// Whether any result has been handed over yet.
    handed_over: bool,
    /// Whether probes close with a FIN (not an RST): then our ident and the FIN share a segment.
    fin_close: bool,
}

impl Drop for Core {
    fn drop(&mut self) {
        for probe in self.slab.iter().flatten() {
            // SAFETY: a descriptor this loop opened and has not closed.
            unsafe { libc::close(probe.fd) };
        }
        // SAFETY: the epoll descriptor this loop created.
        unsafe { libc::close(self.epoll) };
    }
}

impl Core {
    fn new(config: EngineConfig, options: RunOptions, events: mpsc::Sender<Event>) -> io::Result<Core> {
        // SAFETY: no pointers involved.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll < 0 {
            return Err(io::Error::last_os_error());
        }
        let gap = options.rate.map(|rate| Duration::from_secs_f64(1.0 / rate.max(1.0 / 3600.0)));
        let fin_close = options.probe.config_on(&config).close == CloseMode::Fin;
        Ok(Core {
            config,
            sources: SourceRotation::new(options.sources.clone()),
            options,
            events,
            epoll,
            slab: Vec::new(),
            free: Vec::new(),
            generation: 0,
            timers: BinaryHeap::new(),
            waiting: VecDeque::new(),
            ready: VecDeque::new(),
            in_progress: 0,
            next_slot: None,
            gap,
            targets_done: false,
            closed: false,
            burst: Vec::with_capacity(BURST),
            burst_since: None,
            handed_over: false,
            fin_close,
        })
    }

    fn run(&mut self, targets: &Mutex<TargetStream>) {
        self.drive(targets);
        self.hand_over();
    }

    fn drive(&mut self, targets: &Mutex<TargetStream>) {
        let mut ready_events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        let concurrency = self.options.concurrency.max(1);
        let mut quiet = true;
        loop {
            if self.options.stop.is_stopped() {
                self.interrupt_all();
                return;
            }
            if self.closed {
                return;
            }
            // New targets while there is room.
            while !self.targets_done && self.in_progress < concurrency {
                let next = targets.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).try_recv();
                match next {
                    TryRecv::Item(item) => self.admit(item),
                    TryRecv::Empty => break,
                    TryRecv::Closed => self.targets_done = true,
                }
            }
            let now = Instant::now();
            // Targets whose gap between probes is over join the ready ones.
            while self.waiting.front().is_some_and(|(due, _)| *due <= now) {
                if let Some((_, next)) = self.waiting.pop_front() {
                    self.ready.push_back(next);
                }
            }
            // Start what the rate allows.
            let mut rate_wait = None;
            while let Some(next) = self.ready.pop_front() {
                match self.take_slot(Instant::now()) {
                    Ok(()) => self.start(next),
                    Err(until) => {
                        self.ready.push_front(next);
                        rate_wait = Some(until);
                        break;
                    }
                }
            }
            if self.in_progress == 0 && self.targets_done {
                return;
            }
            // Expired deadlines.
            let now = Instant::now();
            while let Some(&Reverse((due, timer))) = self.timers.peek() {
                if due > now {
                    break;
                }
                self.timers.pop();
                match timer {
                    Timer::Connect { slot, generation } => self.on_connect_deadline(slot, generation, now),
                    Timer::Banner { slot, generation } => self.on_banner_deadline(slot, generation, now),
                    Timer::Interval => {}
                }
            }
            // How long to sleep: until the next deadline, the next rate slot, the next end of a
            // gap, at most briefly while targets may arrive, and never long (a stop).
            let now = Instant::now();
            let mut wait = POLL_STOP;
            if let Some(Reverse((due, _))) = self.timers.peek() {
                wait = wait.min(due.saturating_duration_since(now));
            }
            if let Some((due, _)) = self.waiting.front() {
                wait = wait.min(due.saturating_duration_since(now));
            }
            if let Some(until) = rate_wait {
                wait = wait.min(until.saturating_duration_since(now));
            }
            if !self.targets_done && self.in_progress < concurrency {
                wait = wait.min(POLL_TARGETS);
            }
            if let Some(since) = self.burst_since {
                let due = since + BURST_WAIT;
                // A quiet loop (its last wait found nothing) has no burst coming: hand over now.
                if due <= now || quiet {
                    self.hand_over();
                } else {
                    wait = wait.min(due - now);
                }
            }
            // Round up: a deadline in 0.3 ms must not spin at a 0 ms timeout.
            let timeout_ms = i32::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
            // SAFETY: the buffer outlives the call and holds the number of events given.
            let n =
                unsafe { libc::epoll_wait(self.epoll, ready_events.as_mut_ptr(), EVENTS as i32, timeout_ms) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINTR) {
                    tracing::error!(error = %e, "epoll_wait");
                    self.interrupt_all();
                    return;
                }
                continue;
            }
            quiet = n == 0;
            for ev in &ready_events[..n as usize] {
                let (slot, generation) = ((ev.u64 & 0xffff_ffff) as u32, (ev.u64 >> 32) as u32);
                self.on_event(slot, generation, ev.events);
            }
        }
    }

    /// A target (or an error in its place) from the stream.
    fn admit(&mut self, item: Result<Target, TargetError>) {
        let target = match item {
            Ok(t) => t,
            Err(e @ TargetError::Excluded { .. }) => return self.emit(Event::Excluded(e)),
            Err(e) => return self.emit(Event::BadTarget(e)),
        };
        let remote = match resolve(&target) {
            Ok(addr) => addr,
            Err(e) => return self.emit(Event::BadTarget(e)),
        };
        // A name can resolve into an excluded network: checked before the first packet.
        if self.options.exclusions.contains(remote.ip()) {
            let e = TargetError::Excluded { target: target.label, addr: remote.ip() };
            return self.emit(Event::Excluded(e));
        }
        if self.options.count == 0 {
            return;
        }
        self.in_progress += 1;
        self.ready.push_back(Next { label: target.label.into_boxed_str(), remote, seq: 0 });
    }

    /// Takes the next slot of the rate's schedule if it is due, or says when it will be. Same rule
    /// as [`Pacer`](super::Pacer): slots `1/rate` apart whatever the timer's resolution, up to
    /// [`Pacer::SLACK`](super::Pacer::SLACK) of lateness made up, a run further behind starting
    /// afresh.
    fn take_slot(&mut self, now: Instant) -> Result<(), Instant> {
        let Some(gap) = self.gap else { return Ok(()) };
        let slot = match self.next_slot {
            Some(n) if n + super::Pacer::SLACK >= now => n,
            _ => now,
        };
        if slot > now {
            return Err(slot);
        }
        self.next_slot = Some(slot + gap);
        Ok(())
    }

    /// Starts one probe: socket, connect, one registration.
    fn start(&mut self, next: Next) {
        let source = self.sources.next_for(next.remote.ip());
        let started = Instant::now();
        let time = SystemTime::now();
        let order = self.options.probe.order;
        let fail = |this: &mut Core, next: Next, local, connect| {
            let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            let obs = Observation::failed_connect(next.remote, local, order, connect, us);
            this.finish(next, time, obs);
        };
        let socket = match new_socket(next.remote, source) {
            Ok(s) => s,
            Err(e) => return fail(self, next, None, Connect::LocalError { detail: e.to_string() }),
        };
        // Only a bound source has an address before the connect.
        let bound = match source {
            Some(_) => {
                socket.local_addr().ok().and_then(|a| a.as_socket()).filter(|a| !a.ip().is_unspecified())
            }
            None => None,
        };
        match socket.connect(&next.remote.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => {
                let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                let mut obs =
                    Observation::failed_connect(next.remote, bound, order, Connect::Established, us);
                obs.end = Some(End::Rst);
                return self.finish(next, time, obs);
            }
            Err(e) => return fail(self, next, bound, connect_error(&e)),
        }
        let fd = socket.into_raw_fd();
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slab.push(None);
                (self.slab.len() - 1) as u32
            }
        };
        self.generation = self.generation.wrapping_add(1);
        let generation = self.generation;
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: u64::from(slot) | (u64::from(generation) << 32),
        };
        // SAFETY: a descriptor we own, and a valid event.
        if unsafe { libc::epoll_ctl(self.epoll, libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
            let e = io::Error::last_os_error();
            // SAFETY: our descriptor, closed once.
            unsafe { libc::close(fd) };
            self.free.push(slot);
            return fail(self, next, bound, Connect::LocalError { detail: e.to_string() });
        }
        self.timers.push(Reverse((
            started + self.options.probe.connect_timeout,
            Timer::Connect { slot, generation },
        )));
        self.slab[slot as usize] =
            Some(Probe { fd, generation, next, local: bound, time, started, phase: Phase::Connecting });
    }

    fn probe_mut(&mut self, slot: u32, generation: u32) -> Option<&mut Probe> {
        self.slab.get_mut(slot as usize)?.as_mut().filter(|p| p.generation == generation)
    }

    /// The connect's deadline passed: a probe still connecting has timed out.
    fn on_connect_deadline(&mut self, slot: u32, generation: u32, now: Instant) {
        let order = self.options.probe.order;
        let Some(probe) = self.probe_mut(slot, generation) else { return };
        if !matches!(probe.phase, Phase::Connecting) {
            return;
        }
        let obs = Observation::failed_connect(
            probe.next.remote,
            probe.local,
            order,
            Connect::TimedOut,
            probe.us(now),
        );
        self.close(slot, Some(obs));
    }

    /// The banner's deadline passed (the timer fires at or after it, so the machine's clock is
    /// told no earlier; were the machine's deadline ever later, the timer is set again).
    fn on_banner_deadline(&mut self, slot: u32, generation: u32, now: Instant) {
        let Some(probe) = self.probe_mut(slot, generation) else { return };
        let us = probe.us(now);
        let started = probe.started;
        let Phase::Exchanging(machine) = &mut probe.phase else { return };
        let step = machine.on_deadline(us);
        if step == Step::Read && machine.deadline_us() != u64::MAX {
            let due = started + Duration::from_micros(machine.deadline_us());
            self.timers.push(Reverse((due.max(now), Timer::Banner { slot, generation })));
        }
        self.act(slot, step);
    }

    fn on_event(&mut self, slot: u32, generation: u32, flags: u32) {
        let Some(probe) = self.probe_mut(slot, generation) else { return };
        let readable =
            flags & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0;
        if matches!(probe.phase, Phase::Connecting) {
            let failed = flags & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0;
            let writable = flags & libc::EPOLLOUT as u32 != 0;
            if !failed && !writable {
                // Not possible before the handshake completes; wait for it.
                return;
            }
            if failed {
                if let Some(e) = socket_error(probe.fd) {
                    let us = probe.us(Instant::now());
                    let (remote, local, order) = (probe.next.remote, probe.local, self.options.probe.order);
                    let obs = if e.raw_os_error() == Some(libc::ECONNRESET) {
                        // The handshake completed and the server reset the connection before we
                        // saw it complete: an accepted connection, reset with no bytes.
                        let mut obs =
                            Observation::failed_connect(remote, local, order, Connect::Established, us);
                        obs.end = Some(End::Rst);
                        obs
                    } else {
                        Observation::failed_connect(remote, local, order, connect_error(&e), us)
                    };
                    return self.close(slot, Some(obs));
                }
            }
            // The request's own byte cap and close mode when it carries them, else the engine's.
            let config = self.options.probe.config_on(&self.config);
            let (order, byte_cap, rst) =
                (self.options.probe.order, config.byte_cap, config.close == CloseMode::Rst);
            let kex = self.options.probe.kex;
            let banner_timeout =
                u64::try_from(self.options.probe.banner_timeout.as_micros()).unwrap_or(u64::MAX);
            let Some(probe) = self.probe_mut(slot, generation) else { return };
            let connected_us = probe.us(Instant::now());
            probe.local = local_addr(probe.fd);
            if rst {
                set_linger_zero(probe.fd);
            }
            let mut machine = Exchange::new(order, Purpose::Probe, byte_cap, connected_us, banner_timeout)
                .with_kexinit(kex);
            let step = machine.start();
            let deadline = probe.started + Duration::from_micros(machine.deadline_us());
            probe.phase = Phase::Exchanging(machine);
            self.timers.push(Reverse((deadline, Timer::Banner { slot, generation })));
            if !self.act(slot, step) {
                return;
            }
            if !readable {
                return;
            }
        } else if !readable {
            return;
        }
        // The server's close or reset already came with this edge: read on to it, since no
        // further edge will say so.
        let closing = flags & (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0;
        self.read(slot, generation, closing);
    }

    /// Reads what the socket has into the machine, until it would block or the machine is done: a
    /// short read means the socket's queue is empty (later bytes raise a new edge), unless the edge
    /// also said the server is `closing`, which only a read to the end finds.
    fn read(&mut self, slot: u32, generation: u32, closing: bool) {
        loop {
            let Some(probe) = self.probe_mut(slot, generation) else { return };
            let fd = probe.fd;
            let Phase::Exchanging(machine) = &mut probe.phase else { return };
            let read = machine.reader().read_fd(fd);
            let now_us = probe.us(Instant::now());
            let Phase::Exchanging(machine) = &mut probe.phase else { return };
            let (step, again) = match read {
                Ok((0, _, _)) => (machine.on_eof(now_us), false),
                Ok((_, progress, filled)) => (machine.on_progress(now_us, progress), filled || closing),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "read error");
                    (machine.on_reset(now_us), false)
                }
            };
            if !self.act(slot, step) || !again || step != Step::Read {
                return;
            }
        }
    }

    /// Does what the machine says. False when the probe is over.
    fn act(&mut self, slot: u32, step: Step) -> bool {
        match step {
            Step::Read => true,
            Step::SendIdent => {
                self.send_ident(slot, false);
                true
            }
            Step::Finish { send_ident } => {
                if send_ident {
                    // The close follows at once: with a FIN close, our ident and the FIN leave
                    // in one segment (see `send_ident`).
                    self.send_ident(slot, self.fin_close);
                }
                self.close(slot, None);
                false
            }
            // A scan only probes; a machine that holds or is gone ends the probe here.
            Step::Hold | Step::Gone => {
                self.close(slot, None);
                false
            }
        }
    }

    /// Sends our ident in one `send` and tells the machine how that went. Our line (at most 255
    /// bytes) goes out whole into a fresh connection's empty send buffer; a short send, which the
    /// kernel does not make there, counts as a failed one.
    ///
    /// `then_fin`: the socket is closed right after, with a FIN. The line is then sent with
    /// `MSG_MORE`, which keeps it queued, and the close sets FIN on that queued segment
    /// (`tcp_send_fin`) and pushes it: ident and FIN in one segment, as the raw engine sends them,
    /// where a plain send and close make two. The server reads the same bytes and the same end,
    /// with one segment and one wake-up less. Never with an RST close, which would discard the
    /// queued line.
    fn send_ident(&mut self, slot: u32, then_fin: bool) {
        let ident = self.options.probe.ident.clone();
        let Some(Some(probe)) = self.slab.get_mut(slot as usize) else { return };
        let Phase::Exchanging(machine) = &mut probe.phase else { return };
        // SAFETY: our descriptor, and a buffer of the length given.
        let flags = if then_fin { libc::MSG_NOSIGNAL | libc::MSG_MORE } else { libc::MSG_NOSIGNAL };
        let sent = unsafe { libc::send(probe.fd, ident.as_ptr().cast(), ident.len(), flags) };
        if sent >= 0 && sent as usize == ident.len() {
            machine.on_ident_sent();
        } else {
            let e = io::Error::last_os_error();
            tracing::debug!(error = %e, sent, "sending our ident failed");
            machine.on_ident_failed(sent < 0 && e.raw_os_error() == Some(libc::ECONNRESET));
        }
    }

    /// Closes the probe in `slot` and reports it: `failed` when it never connected, else what its
    /// machine saw.
    fn close(&mut self, slot: u32, failed: Option<Observation>) {
        let Some(probe) = self.slab.get_mut(slot as usize).and_then(Option::take) else { return };
        self.free.push(slot);
        // SAFETY: our descriptor, closed once; closing removes it from the epoll set.
        unsafe { libc::close(probe.fd) };
        let observation = match failed {
            Some(obs) => obs,
            None => {
                let now_us = probe.us(Instant::now());
                self.observation(probe.phase, probe.next.remote, probe.local, now_us)
            }
        };
        self.finish(probe.next, probe.time, observation);
    }

    /// What a probe saw, once its machine has ended (or, still connecting, as interrupted).
    fn observation(
        &self,
        phase: Phase,
        remote: SocketAddr,
        local: Option<SocketAddr>,
        now_us: u64,
    ) -> Observation {
        match phase {
            Phase::Exchanging(mut machine) => {
                let kexinit = machine.kexinit();
                let ident_scan = machine.take_ident_scan();
                let (end, timings, received, sent_ident) = machine.into_parts();
                Observation {
                    remote,
                    local,
                    order: self.options.probe.order,
                    connect: Connect::Established,
                    end: Some(end),
                    timings,
                    received,
                    sent_ident,
                    packets: Vec::new(),
                    kexinit,
                    ident_scan,
                }
            }
            Phase::Connecting => Observation::failed_connect(
                remote,
                local,
                self.options.probe.order,
                Connect::Interrupted,
                now_us,
            ),
        }
    }

    /// Reports a probe's result, and queues the target's next probe or frees its place.
    fn finish(&mut self, next: Next, time: SystemTime, observation: Observation) {
        // `-vv`: the per-connection trace every engine writes (`engine::trace`).
        crate::engine::trace::connection("probe", &observation, self.options.probe.ident.len());
        let result = ProbeResult {
            target: next.label.to_string(),
            seq: next.seq,
            time,
            record: ProbeRecord::new(observation),
        };
        self.emit(Event::Probe(Box::new(result)));
        if next.seq + 1 < self.options.count {
            let due = Instant::now() + self.options.interval;
            self.waiting.push_back((due, Next { seq: next.seq + 1, ..next }));
            self.timers.push(Reverse((due, Timer::Interval)));
        } else {
            self.in_progress -= 1;
        }
    }

    /// Queues a result (or a target's error) for the output; see [`BURST`].
    fn emit(&mut self, event: Event) {
        self.burst.push(event);
        self.burst_since.get_or_insert_with(Instant::now);
        // The run's first result goes at once (a user waits for it).
        if self.burst.len() >= BURST || !self.handed_over {
            self.hand_over();
        }
    }

    /// Hands the queued results to the output, back to back.
    fn hand_over(&mut self) {
        self.burst_since = None;
        self.handed_over = true;
        let mut burst = std::mem::take(&mut self.burst);
        for event in burst.drain(..) {
            if !self.closed && self.events.blocking_send(event).is_err() {
                self.closed = true;
            }
        }
        self.burst = burst;
    }

    /// The run stopped: every probe under way is reported as interrupted; those not yet started
    /// are not reported.
    fn interrupt_all(&mut self) {
        for slot in 0..self.slab.len() {
            let Some(probe) = self.slab[slot].take() else { continue };
            // SAFETY: our descriptor, closed once.
            unsafe { libc::close(probe.fd) };
            // An exchange under way keeps what it saw, ending `interrupted`.
            let now_us = probe.us(Instant::now());
            let phase = match probe.phase {
                Phase::Exchanging(mut machine) => {
                    machine.on_interrupt(now_us);
                    Phase::Exchanging(machine)
                }
                connecting => connecting,
            };
            let obs = self.observation(phase, probe.next.remote, probe.local, now_us);
            crate::engine::trace::connection("probe", &obs, self.options.probe.ident.len());
            let result = ProbeResult {
                target: probe.next.label.to_string(),
                seq: probe.next.seq,
                time: probe.time,
                record: ProbeRecord::new(obs),
            };
            self.emit(Event::Probe(Box::new(result)));
        }
    }
}

/// The target's address; a name is resolved here, on the loop's thread (names are rare in scans;
/// a slow resolver holds up the loop while it answers).
fn resolve(target: &Target) -> Result<SocketAddr, TargetError> {
    match &target.dest {
        Dest::Addr(a) => Ok(*a),
        Dest::Host { name, port } => crate::resolve::resolve_one_blocking(name, *port)
            .map_err(|e| TargetError::Resolve { target: target.label.clone(), reason: e.reason() }),
    }
}

/// The socket's pending error (SO_ERROR), if any.
fn socket_error(fd: RawFd) -> Option<io::Error> {
    let raw = BorrowedRaw(fd);
    match socket2::SockRef::from(&raw).take_error() {
        Ok(e) => e,
        Err(e) => Some(e),
    }
}

/// Our address on a connected socket.
fn local_addr(fd: RawFd) -> Option<SocketAddr> {
    let raw = BorrowedRaw(fd);
    let addr = socket2::SockRef::from(&raw).local_addr();
    addr.ok().and_then(|a| a.as_socket())
}

/// SO_LINGER 0: the close sends an RST and leaves no TIME_WAIT. Best effort: without it the close
/// is an ordinary FIN.
fn set_linger_zero(fd: RawFd) {
    let raw = BorrowedRaw(fd);
    let _ = socket2::SockRef::from(&raw).set_linger(Some(Duration::ZERO));
}

/// A raw descriptor lent to socket2 for one call.
struct BorrowedRaw(RawFd);

impl std::os::fd::AsFd for BorrowedRaw {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: the descriptor stays open for the borrow (the probe owns it until `close`).
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.0) }
    }
}

impl AsRawFd for BorrowedRaw {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::super::{spawn_target_reader, TargetReaderOptions, TargetSource};
    use super::*;
    use crate::engine::{ident_line, ProbeRequest};
    use crate::evidence::ProbeOrder;
    use crate::outcome::Outcome;
    use std::io::{Read, Write};

    /// A server on loopback that answers each connection as `answer` says, on a thread per
    /// connection; ends with the test process.
    fn server(answer: fn(std::net::TcpStream)) -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || answer(stream));
            }
        });
        addr
    }

    fn scan(
        addr: SocketAddr,
        options: RunOptions,
        loops: usize,
        stop_after: Option<Duration>,
    ) -> Vec<ProbeResult> {
        let targets = spawn_target_reader(
            vec![TargetSource::Arg(addr.to_string()), TargetSource::Arg(addr.to_string())],
            TargetReaderOptions::new(22),
        );
        let (tx, mut rx) = mpsc::channel(16);
        let stop = options.stop.clone();
        let threads = run(EngineConfig::default(), targets, options, tx, loops).unwrap();
        if let Some(after) = stop_after {
            std::thread::sleep(after);
            stop.stop();
        }
        let mut results = Vec::new();
        while let Some(event) = rx.blocking_recv() {
            match event {
                Event::Probe(r) => results.push(*r),
                other => panic!("{other:?}"),
            }
        }
        threads.into_iter().for_each(|t| t.join().unwrap());
        results
    }

    #[test]
    fn every_probe_of_every_target_is_driven_to_its_banner_in_order_of_seq() {
        let addr = server(|mut s| {
            let _ = s.write_all(b"SSH-2.0-OpenSSH_9.2p1\r\n");
            let mut ident = [0u8; 64];
            let _ = s.read(&mut ident);
        });
        for (loops, order) in [(1, ProbeOrder::WaitForBanner), (2, ProbeOrder::SendFirst)] {
            let probe = ProbeRequest::new(addr).order(order).ident(ident_line("SSH-2.0-t"));
            let options = RunOptions {
                concurrency: 4,
                count: 3,
                interval: Duration::from_millis(20),
                rate: Some(1000.0),
                probe,
                ..RunOptions::default()
            };
            let results = scan(addr, options, loops, None);
            assert_eq!(results.len(), 6, "two targets, three probes each");
            for r in &results {
                let obs = &r.record.observation;
                assert_eq!(r.record.outcome(), Outcome::Banner, "{r:?}");
                assert!(obs.sent_ident && obs.local.is_some(), "{r:?}");
                assert_eq!(obs.order, order);
                let t = obs.timings;
                assert!(t.connected <= t.first_byte && t.first_byte <= t.ident, "{t:?}");
            }
            let mut seqs: Vec<u32> = results.iter().map(|r| r.seq).collect();
            seqs.sort_unstable();
            assert_eq!(seqs, [0, 0, 1, 1, 2, 2]);
        }
    }

    #[test]
    fn a_refusal_line_and_the_close_in_one_edge_are_both_seen() {
        let addr = server(|mut s| {
            let _ = s.write_all(b"Exceeded MaxStartups\r\n");
        });
        let options = RunOptions { probe: ProbeRequest::new(addr), ..RunOptions::default() };
        for r in scan(addr, options, 1, None) {
            let obs = &r.record.observation;
            assert_eq!(&obs.received[..], b"Exceeded MaxStartups\r\n");
            assert_eq!(obs.end, Some(End::Fin), "{r:?}");
        }
    }

    /// Segments the server's end of a connection has received (`tcpi_segs_in`).
    fn segments_in(stream: &std::net::TcpStream) -> u32 {
        use std::os::fd::AsRawFd;
        // SAFETY: a zeroed plain C struct, filled by the kernel up to the length it reports.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: the buffer and its length are ours and match.
        let rc = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        info.tcpi_segs_in
    }

    #[test]
    fn with_a_fin_close_our_ident_and_the_fin_share_one_segment() {
        // The server reads to the end, then reports what it read and how many segments came.
        let (tx, rx) = std::sync::mpsc::channel::<(Vec<u8>, u32)>();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.9\r\n");
                let mut read = Vec::new();
                let _ = stream.read_to_end(&mut read);
                let _ = tx.send((read, segments_in(&stream)));
            }
        });
        let ours = ident_line("SSH-2.0-t");
        let seen = || rx.recv_timeout(Duration::from_secs(10)).expect("the server saw the connection end");
        // A client as any would write it: read the banner, write the ident, close (two segments).
        let mut reference = std::net::TcpStream::connect(addr).unwrap();
        let mut banner = [0u8; 64];
        let _ = reference.read(&mut banner).unwrap();
        reference.write_all(&ours).unwrap();
        drop(reference);
        let (read, plain) = seen();
        assert_eq!(read, ours.to_vec());
        // The scan core: the same bytes and the same end, one segment less. Only its probe runs.
        let targets =
            spawn_target_reader(vec![TargetSource::Arg(addr.to_string())], TargetReaderOptions::new(22));
        let (events, mut results) = mpsc::channel(4);
        let options =
            RunOptions { probe: ProbeRequest::new(addr).ident(ours.clone()), ..RunOptions::default() };
        let threads = run(EngineConfig::default(), targets, options, events, 1).unwrap();
        let Some(Event::Probe(result)) = results.blocking_recv() else { panic!("no result") };
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(result.record.outcome(), Outcome::Banner, "{result:?}");
        let (read, coalesced) = seen();
        assert_eq!(read, ours.to_vec(), "the server read our whole ident, then the end");
        assert_eq!(
            coalesced + 1,
            plain,
            "segments in: {coalesced} (scan core) against {plain} (plain client)"
        );
    }

    #[test]
    fn a_stopped_run_reports_the_probes_under_way_as_interrupted() {
        let addr = server(|s| {
            std::thread::sleep(Duration::from_secs(5));
            drop(s);
        });
        let options = RunOptions { probe: ProbeRequest::new(addr), ..RunOptions::default() };
        let results = scan(addr, options, 1, Some(Duration::from_millis(200)));
        assert_eq!(results.len(), 2);
        assert!(results.iter().all(|r| r.record.outcome() == Outcome::Interrupted), "{results:?}");
    }
}
