//! The engine thread: every flow's state, timers and packets, on one thread, with no lock and no
//! hand-off per packet (see the parent module's documentation for why).

use super::socket::{RawSockets, Received, RecvBatch, BATCH};
use super::tcp::{Flow, FlowParams, Inbound, Outbound};
use super::wire::{self, IcmpErrorRepr, Ipv4Packet, SeqNumber, TcpFlags, TcpOptions, TcpPacket, TcpRepr};
use super::{socket, Command, FlowKey, Letter, Mailbox, Start};
use crate::engine::HoldEnd;
use crate::evidence::{Connect, Observation};
use bytes::Bytes;
use std::cmp::Reverse;
use std::collections::hash_map::RandomState;
use std::collections::{BinaryHeap, HashMap};
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The longest the engine thread sleeps before checking whether it should stop.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// A bound on the batches read from one socket per wake-up, so none starves the others or the timers.
const RECV_ROUNDS: usize = 4;

/// One probe in flight, as the engine thread keeps it.
struct Probe {
    id: u64,
    flow: Flow,
    remote: SocketAddr,
    /// When its first SYN went out: the flow's clock starts there.
    start: Instant,
    iss: SeqNumber,
    /// The highest acknowledgement, relative to `iss`, a reset answering it can carry.
    max_ack: u32,
    /// The earliest of its deadlines queued in the timer heap.
    queued: Option<Instant>,
    /// Where its observation goes; taken when sent (a hold's, once its banner is in).
    done: Option<oneshot::Sender<Observation>>,
    /// Through which collector.
    mailbox: Option<Arc<Mailbox>>,
    /// A hold's: where the end of the held connection goes.
    ended: Option<oneshot::Sender<HoldEnd>>,
}

/// zmap-style: a reset's acknowledgement must cover our SYN (`iss`) and at most what we can have
/// sent (`max_ack` past it).
fn acknowledges_ours(iss: SeqNumber, max_ack: u32, ack: SeqNumber) -> bool {
    (1..=max_ack).contains(&ack.0.wrapping_sub(iss.0))
}

impl Probe {
    fn ack_ok(&self, ack: SeqNumber) -> bool {
        acknowledges_ours(self.iss, self.max_ack, ack)
    }

    /// Whether nobody waits for this flow any more: its probe's future, or its hold, was dropped.
    fn abandoned(&self) -> bool {
        match (&self.done, &self.ended) {
            (Some(done), _) => done.is_closed(),
            (None, Some(ended)) => ended.is_closed(),
            (None, None) => false,
        }
    }

    /// Hands over what the flow saw: its observation (posted with the round's), and a hold's end.
    fn finish(mut self, outgoing: &mut Outgoing) {
        let (end, after_us) = self.flow.hold_end();
        if let Some(ended) = self.ended.take() {
            let _ = ended.send(HoldEnd { end, after: Duration::from_micros(after_us) });
        }
        if let Some(done) = self.done.take() {
            outgoing.push((self.mailbox.take(), Letter { done, observation: self.flow.into_observation() }));
        }
    }

    /// Hands over an observation now due (the flow stays), with the round's.
    fn hand_over(&mut self, observation: Observation, outgoing: &mut Outgoing) {
        if let Some(done) = self.done.take() {
            outgoing.push((self.mailbox.clone(), Letter { done, observation }));
        }
    }

    fn now_us(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.start).as_micros() as u64
    }

    /// Gives up on the flow now: the reset for a connection the server accepted (see
    /// [`Flow::abort`]), to be sent.
    fn abort(&mut self) -> Vec<Outbound> {
        if self.flow.is_done() {
            Vec::new()
        } else {
            self.flow.abort()
        }
    }
}

/// Observations due this round, each with the mailbox it goes through.
type Outgoing = Vec<(Option<Arc<Mailbox>>, Letter)>;

/// Posts a round's observations: the letters for each mailbox in one post (one wake-up of its
/// collector), those with none directly. Usually every letter goes to the same mailbox (one
/// runtime): they then go as they are, with no sorting.
fn post(outgoing: &mut Outgoing) {
    let key = |m: &Option<Arc<Mailbox>>| m.as_ref().map(Arc::as_ptr);
    let deliver = |mailbox: Option<Arc<Mailbox>>, letters: &mut dyn Iterator<Item = Letter>| match mailbox {
        Some(mailbox) => mailbox.post(letters),
        None => letters.for_each(Letter::deliver),
    };
    while let Some((first, _)) = outgoing.first() {
        let mailbox = first.clone();
        if outgoing.iter().all(|(m, _)| key(m) == key(&mailbox)) {
            // Drained in place: the vector keeps its room for the next round.
            deliver(mailbox, &mut outgoing.drain(..).map(|(_, letter)| letter));
            return;
        }
        let (mine, rest): (Outgoing, Outgoing) =
            std::mem::take(outgoing).into_iter().partition(|(m, _)| key(m) == key(&mailbox));
        *outgoing = rest;
        deliver(mailbox, &mut mine.into_iter().map(|(_, letter)| letter));
    }
}

/// The engine thread: every flow's state, timers and packets, on one thread, with no lock and no
/// hand-off per packet.
pub(super) struct EngineThread {
    sockets: Arc<RawSockets>,
    commands: std_mpsc::Receiver<Command>,
    /// Each probe's flow, by the probe's id.
    ids: HashMap<u64, FlowKey>,
    woken: UnixDatagram,
    wake_pending: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    probes: HashMap<FlowKey, Probe>,
    /// Deadlines, earliest first; stale entries (a deadline that moved, a flow that ended) are
    /// skipped when they come up.
    timers: BinaryHeap<Reverse<(Instant, FlowKey)>>,
    ports: RangeInclusive<u16>,
    cursor: u32,
    secret: RandomState,
    /// Segments to send at the next [`flush`](Self::flush), each with its flow.
    outbox: Vec<(FlowKey, Outbound)>,
    /// Flows something happened to since the last flush: settled once their segments are out.
    touched: Vec<FlowKey>,
    /// Observations settled since the last flush, posted at its end.
    outgoing: Outgoing,
}

impl EngineThread {
    /// A thread's state, before it runs: nothing in flight.
    pub(super) fn new(
        sockets: Arc<RawSockets>,
        commands: std_mpsc::Receiver<Command>,
        woken: UnixDatagram,
        wake_pending: Arc<AtomicBool>,
        stop: Arc<AtomicBool>,
        ports: RangeInclusive<u16>,
    ) -> EngineThread {
        EngineThread {
            sockets,
            commands,
            ids: HashMap::new(),
            woken,
            wake_pending,
            stop,
            probes: HashMap::new(),
            timers: BinaryHeap::new(),
            ports,
            cursor: rand::random::<u32>(),
            secret: RandomState::new(),
            outbox: Vec::new(),
            touched: Vec::new(),
            outgoing: Vec::new(),
        }
    }

    /// Runs until the driver says stop; every flow still in flight then ends with what it saw.
    pub(super) fn run(&mut self) {
        let mut batch = RecvBatch::default();
        while !self.stop.load(Ordering::SeqCst) {
            self.take_commands();
            self.fire_timers(Instant::now());
            self.flush();
            let timeout = self.timers.peek().map_or(POLL_INTERVAL, |Reverse((at, _))| {
                // Rounded up to the next millisecond (poll's unit), so a deadline is never early.
                let left = at.saturating_duration_since(Instant::now());
                POLL_INTERVAL.min(Duration::from_millis(left.as_micros().div_ceil(1000) as u64))
            });
            let ready = match self.sockets.wait(self.woken.as_raw_fd(), timeout) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("raw engine: poll failed: {e}");
                    std::thread::sleep(POLL_INTERVAL);
                    continue;
                }
            };
            if ready.wake {
                let mut drain = [0u8; 64];
                while self.woken.recv(&mut drain).is_ok() {}
            }
            for (which, _) in ready.sockets.iter().enumerate().filter(|(_, r)| **r) {
                for _ in 0..RECV_ROUNDS {
                    let n = match self.sockets.recv_batch(which, &mut batch) {
                        Ok(n) => n,
                        Err(e) => {
                            tracing::debug!("raw engine: receive failed: {e}");
                            break;
                        }
                    };
                    // The batch was queued by the time it was read: one clock reading for all.
                    let at = Instant::now();
                    for (buf, received) in batch.packets() {
                        self.dispatch(buf, received, at);
                    }
                    // The answers to the whole batch go out together.
                    self.flush();
                    if n < BATCH {
                        break;
                    }
                }
            }
        }
        // Stopping: every probe still in flight ends now with what it saw; connections the
        // servers accepted are reset so they do not hold a slot.
        let keys: Vec<FlowKey> = self.probes.keys().copied().collect();
        for key in keys {
            if let Some(probe) = self.probes.get_mut(&key) {
                let out = probe.abort();
                self.outbox.extend(out.into_iter().map(|seg| (key, seg)));
            }
        }
        self.touched.clear();
        self.flush();
        self.ids.clear();
        for (_, probe) in self.probes.drain() {
            probe.finish(&mut self.outgoing);
        }
        post(&mut self.outgoing);
    }

    /// Sends every queued segment (IPv4 ones a batch to a system call) and records each in its
    /// flow's trace as it went out, then settles the flows something happened to. Settling may
    /// queue more (the reset of an abandoned flow): those go out in the next round.
    fn flush(&mut self) {
        loop {
            if !self.outbox.is_empty() {
                let outbox = std::mem::take(&mut self.outbox);
                let segments: Vec<_> = outbox
                    .iter()
                    .map(|(key, seg)| {
                        let repr = TcpRepr {
                            src_port: key.1,
                            dst_port: key.3,
                            flags: seg.flags,
                            seq: seg.seq,
                            ack: seg.ack,
                            window: seg.window,
                            options: seg.options.clone(),
                            payload: &seg.payload,
                        };
                        (key.0, key.2, repr)
                    })
                    .collect();
                let results = self.sockets.send_batch(&segments);
                drop(segments);
                for ((key, seg), result) in outbox.iter().zip(results) {
                    let Some(probe) = self.probes.get_mut(key) else { continue };
                    let now = probe.start.elapsed().as_micros() as u64;
                    match result {
                        Ok(()) => probe.flow.sent(now, seg),
                        Err(e) => {
                            if send_failed(&mut probe.flow, probe.remote, now, seg, &e) {
                                self.touched.push(*key);
                            }
                        }
                    }
                }
            }
            if self.touched.is_empty() {
                post(&mut self.outgoing);
                return;
            }
            for key in std::mem::take(&mut self.touched) {
                self.settle(key);
            }
        }
    }

    /// Queues a flow's segments for the next flush, and marks it to be settled then.
    fn queue(&mut self, key: FlowKey, out: Vec<Outbound>) {
        self.outbox.extend(out.into_iter().map(|seg| (key, seg)));
        self.touched.push(key);
    }

    /// Starts and cancels the probes handed over since the last look.
    fn take_commands(&mut self) {
        // Clear the flag before looking, so a command handed over after the look wakes us again.
        self.wake_pending.swap(false, Ordering::AcqRel);
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Start(start) => self.begin(*start),
                Command::Cancel(id) => {
                    let Some(key) = self.ids.get(&id).copied() else { continue };
                    let out = self.probes.get_mut(&key).map(Probe::abort).unwrap_or_default();
                    self.queue(key, out);
                }
                Command::Interrupt(id) => {
                    let Some(key) = self.ids.get(&id).copied() else { continue };
                    let out = match self.probes.get_mut(&key) {
                        Some(probe) => probe.flow.interrupt(probe.now_us(Instant::now())),
                        None => Vec::new(),
                    };
                    self.queue(key, out);
                }
            }
        }
    }

    /// Registers a probe on a free source port and sends its SYN.
    fn begin(&mut self, start: Start) {
        let Start { id, source, request, engine, purpose, done, mailbox, ended } = start;
        let remote = request.remote;
        let span = u32::from(self.ports.end() - self.ports.start()) + 1;
        let mut key = None;
        for _ in 0..span {
            let port = self.ports.start() + (self.cursor % span) as u16;
            self.cursor = self.cursor.wrapping_add(1);
            let candidate = (source, port, remote.ip(), remote.port());
            if !self.probes.contains_key(&candidate) {
                key = Some(candidate);
                break;
            }
        }
        let Some(key) = key else {
            let detail = format!(
                "all {span} raw-engine source ports ({}-{}) are in use towards {remote}",
                self.ports.start(),
                self.ports.end()
            );
            let _ = done.send(Observation::failed_connect(
                remote,
                None,
                request.order,
                Connect::LocalError { detail },
                0,
            ));
            return;
        };
        let iss = self.iss(&key);
        let local = SocketAddr::new(source, key.1);
        let max_ack = Flow::max_ack_offset(&request.ident);
        let mss = if remote.is_ipv4() { 1460 } else { 1440 };
        let params = FlowParams { local, remote, iss, mss, ttl: socket::TTL, request, engine, purpose };
        let mut flow = Flow::new(params);
        let first = flow.start();
        let start = Instant::now();
        let probe =
            Probe { id, flow, remote, start, iss, max_ack, queued: None, done: Some(done), mailbox, ended };
        self.probes.insert(key, probe);
        self.ids.insert(id, key);
        self.queue(key, first);
    }

    /// RFC 6528's initial sequence number: a 4 µs clock plus a keyed hash of the 4-tuple, so a
    /// reused 4-tuple starts above its previous incarnation in this process, and replies cannot be
    /// forged by anyone who does not see our SYN.
    fn iss(&self, key: &FlowKey) -> SeqNumber {
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| (d.as_micros() / 4) as u32);
        SeqNumber(clock.wrapping_add(self.secret.hash_one(key) as u32))
    }

    /// After something happened to a flow, its segments sent: hands over its observation when it
    /// is done, else queues its next deadline. One nobody waits for any more (cancelled, dropped)
    /// is aborted, and settled again once its reset is out.
    fn settle(&mut self, key: FlowKey) {
        let Some(probe) = self.probes.get_mut(&key) else { return };
        if probe.abandoned() && !probe.flow.is_done() {
            let out = probe.abort();
            self.queue(key, out);
            return;
        }
        if probe.flow.is_done() {
            if let Some(probe) = self.probes.remove(&key) {
                self.ids.remove(&probe.id);
                probe.finish(&mut self.outgoing);
            }
            return;
        }
        if probe.done.is_some() {
            // No trace asked for: the probe has what it needs once our close is out; the flow
            // stays to complete the close (our FIN retransmitted, the server's FIN answered, the
            // 4-tuple kept from reuse until then).
            if let Some(observation) = probe.flow.closing_observation() {
                probe.hand_over(observation, &mut self.outgoing);
            }
        }
        if probe.flow.is_holding() && probe.done.is_some() {
            // The banner is in: the hold's observation goes now, the flow stays.
            let observation = probe.flow.held_observation();
            probe.hand_over(observation, &mut self.outgoing);
        }
        let Some(at) = probe.flow.poll_at() else { return };
        let deadline = probe.start + Duration::from_micros(at);
        if probe.queued.is_none_or(|q| deadline < q) {
            probe.queued = Some(deadline);
            self.timers.push(Reverse((deadline, key)));
        }
    }

    /// Runs every deadline that has come.
    fn fire_timers(&mut self, now: Instant) {
        while let Some(&Reverse((at, key))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(probe) = self.probes.get_mut(&key) else { continue };
            if probe.queued == Some(at) {
                probe.queued = None;
            }
            let now_us = probe.now_us(now);
            let out = match probe.flow.poll_at() {
                Some(due) if due <= now_us => probe.flow.on_timer(now_us),
                _ => Vec::new(),
            };
            let settle = probe.queued.is_none() || probe.abandoned();
            self.outbox.extend(out.into_iter().map(|seg| (key, seg)));
            if settle {
                self.touched.push(key);
            }
        }
    }

    /// Finds the flow a packet answers, validates it, and hands it to the flow.
    fn dispatch(&mut self, buf: &[u8], received: Received, at: Instant) {
        match received {
            Received::Tcp4 { len } => {
                let Ok(ip) = Ipv4Packet::new_checked(&buf[..len]) else { return };
                if ip.protocol() != wire::PROTO_TCP || ip.is_fragment() {
                    return;
                }
                let Ok(tcp) = TcpPacket::new_checked(ip.payload()) else { return };
                let (local, remote) = (IpAddr::V4(ip.dst_addr()), IpAddr::V4(ip.src_addr()));
                self.deliver_segment(local, remote, &tcp, ip.ttl(), at);
            }
            Received::Tcp6 { len, src, dst, hop_limit } => {
                let Some(dst) = dst else { return };
                let Ok(tcp) = TcpPacket::new_checked(&buf[..len]) else { return };
                let ttl = hop_limit.unwrap_or(0);
                self.deliver_segment(IpAddr::V6(dst), IpAddr::V6(src), &tcp, ttl, at);
            }
            Received::Icmp4 { len } => {
                let Ok(ip) = Ipv4Packet::new_checked(&buf[..len]) else { return };
                if let Ok(icmp) = IcmpErrorRepr::parse_v4(ip.payload()) {
                    self.deliver_icmp(&icmp, at);
                }
            }
            Received::Icmp6 { len } => {
                if let Ok(icmp) = IcmpErrorRepr::parse_v6(&buf[..len]) {
                    self.deliver_icmp(&icmp, at);
                }
            }
        }
    }

    fn deliver_segment(
        &mut self,
        local: IpAddr,
        remote: IpAddr,
        tcp: &TcpPacket<&[u8]>,
        ttl: u8,
        at: Instant,
    ) {
        let key = (local, tcp.dst_port(), remote, tcp.src_port());
        let Some(probe) = self.probes.get_mut(&key) else { return };
        let flags = tcp.flags();
        // An RST must acknowledge something we can have sent (or nothing); any other ACK goes to
        // the flow, which answers a stale one (a server's TIME_WAIT) with a reset.
        let answers = match (flags.has(TcpFlags::ACK), flags.has(TcpFlags::RST)) {
            (true, true) => probe.ack_ok(tcp.ack_number()),
            (true, false) => true,
            (false, rst) => rst,
        };
        if !answers {
            return;
        }
        let t_us = probe.now_us(at);
        let segment = Inbound {
            t_us,
            flags,
            seq: tcp.seq_number(),
            ack: tcp.ack_number(),
            window: tcp.window_len(),
            ttl,
            options: TcpOptions::new(tcp.options()).filter_map(Result::ok).collect(),
            payload: Bytes::copy_from_slice(tcp.payload()),
        };
        let out = probe.flow.on_segment(&segment);
        self.queue(key, out);
    }

    fn deliver_icmp(&mut self, icmp: &IcmpErrorRepr, at: Instant) {
        let key = (icmp.src, icmp.src_port, icmp.dst, icmp.dst_port);
        let Some(probe) = self.probes.get_mut(&key) else { return };
        // The quoted segment is one of ours: its sequence number lies in what we can have sent.
        if icmp.seq.0.wrapping_sub(probe.iss.0) >= probe.max_ack {
            return;
        }
        let t_us = probe.now_us(at);
        probe.flow.on_icmp(t_us, icmp.kind, icmp.seq);
        self.touched.push(key);
    }
}

/// A segment the kernel would not send. A failure to send the SYN that the kernel explains (a local
/// firewall's reject, no route) ends the connect as the connect engine would report it; others are
/// losses, left to retransmission. Returns whether the flow changed.
fn send_failed(flow: &mut Flow, remote: SocketAddr, now: u64, seg: &Outbound, e: &std::io::Error) -> bool {
    tracing::debug!(%remote, error = %e, flags = %seg.flags, "raw send failed");
    if !seg.flags.has(TcpFlags::SYN) {
        return false;
    }
    match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES | libc::EHOSTUNREACH | libc::ENETUNREACH) => {
            flow.fail_connect(now, Connect::Unreachable { detail: e.to_string() })
        }
        Some(libc::ENOBUFS | libc::EAGAIN) => return false,
        _ => flow.fail_connect(now, Connect::LocalError { detail: e.to_string() }),
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_are_validated_against_what_we_can_have_sent() {
        let ok = |ack| acknowledges_ours(SeqNumber(u32::MAX - 2), 13, SeqNumber(ack));
        assert!(!ok(u32::MAX - 2));
        assert!(ok(u32::MAX - 1));
        assert!(ok(10));
        assert!(!ok(11));
    }
}
