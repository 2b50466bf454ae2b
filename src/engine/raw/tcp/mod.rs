//! One probe's TCP client as a pure state machine: a segment, an ICMP error or a timer tick goes in,
//! the segments to send come out. No I/O and no clock: times are microseconds from the probe's first
//! SYN, given by the caller, so every path is unit-tested with byte-exact segments.
//!
//! It is just enough TCP for an identification exchange, and follows what the kernel does where the
//! evidence depends on it, so that both engines report the same server behaviour alike:
//! - the SYN carries an MSS option and is retransmitted after 1 s, 2 s, 4 s... until the connect
//!   timeout; an RST answering it is `refused`, an ICMP error `unreachable`, silence `connect_timeout`;
//! - the server's bytes are reassembled in order (duplicates trimmed, out-of-order segments kept
//!   within the window) and every data segment is acknowledged at once;
//! - the exchange itself (when our ident goes out, when reading stops, how it ended) is the same
//!   I/O-free [`Exchange`] machine the connect engine drives: this flow only carries its bytes;
//! - a hold ([`Purpose::Hold`]) keeps the connection open after the banner, acknowledging and
//!   discarding whatever else the server sends, until the server closes it or the probe is dropped;
//! - we close with FIN (then wait, briefly, for the close to complete: a server that sends more after
//!   our close gets an RST, as a closed kernel socket would send) or with RST, as configured;
//! - acceptable RSTs (sequence in window) and FINs end the exchange.
//!
//! What it leaves out: congestion control, window scaling, SACK, timestamps, urgent data, and any
//! retransmission beyond a few tries of our ident and FIN.

mod record;
mod segment;

use self::segment::coalesce;
pub use self::segment::{Inbound, Outbound};
use super::wire::{IcmpKind, SeqNumber, TcpFlags, TcpOption};
use crate::engine::exchange::{Exchange, Purpose, Step};
use crate::engine::{EngineConfig, ProbeRequest};
use crate::evidence::{CloseMode, Connect, Direction, PacketKind, PacketRecord};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// The first SYN retransmission, as Linux's `TCP_TIMEOUT_INIT`; later ones double.
pub(crate) const SYN_RTO_US: u64 = 1_000_000;
/// The floor of the retransmission timeout for our ident and FIN (Linux's `TCP_RTO_MIN`).
pub(crate) const RTO_MIN_US: u64 = 200_000;
/// The ceiling of that timeout.
pub(crate) const RTO_MAX_US: u64 = 3_000_000;
/// Retransmissions of our ident or FIN before giving up on them.
pub(crate) const MAX_RETRANSMITS: u32 = 3;
/// How long a closed flow waits for the server to complete the close before it is forgotten.
pub(crate) const CLOSE_LINGER_US: u64 = 1_000_000;
/// The MSS assumed when the server announces none (RFC 9293).
pub(crate) const DEFAULT_PEER_MSS: u16 = 536;

/// What a flow needs to know about itself.
#[derive(Debug, Clone)]
pub struct FlowParams {
    /// Our address and (raw-engine) port.
    pub local: SocketAddr,
    /// The server.
    pub remote: SocketAddr,
    /// Our initial sequence number.
    pub iss: SeqNumber,
    /// The MSS we announce.
    pub mss: u16,
    /// The TTL (hop limit) our packets leave with, for the trace.
    pub ttl: u8,
    /// The probe: order, ident, deadlines.
    pub request: ProbeRequest,
    /// What every probe of the run shares: byte cap, close.
    pub engine: EngineConfig,
    /// A probe, or a hold.
    pub purpose: Purpose,
}

/// Where a flow is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Our SYN is out; no answer yet.
    SynSent,
    /// The handshake completed; the exchange is under way.
    Established,
    /// The exchange is over and we sent our FIN: waiting for the close to complete.
    Closing,
    /// Nothing more to do.
    Done,
}

/// One probe's TCP client.
#[derive(Debug)]
pub struct Flow {
    params: FlowParams,
    state: State,
    // Our side.
    snd_una: SeqNumber,
    snd_nxt: SeqNumber,
    /// Our ident once queued; its first byte has sequence number iss + 1.
    ident_queued: bool,
    /// The sequence number of our FIN, once sent.
    fin_seq: Option<SeqNumber>,
    peer_mss: u16,
    // Their side.
    irs: Option<SeqNumber>,
    rcv_nxt: SeqNumber,
    /// Out-of-order bytes, by sequence number.
    out_of_order: BTreeMap<u32, Bytes>,
    /// Where their FIN sits, when it came early.
    peer_fin: Option<SeqNumber>,
    peer_fin_received: bool,
    /// The identification exchange, once established.
    exchange: Option<Exchange>,
    // Timers, µs from the first SYN.
    syn_rto: u64,
    next_syn: u64,
    /// Whether a stale ACK was already answered with a reset and an immediate SYN.
    stale_reset_sent: bool,
    connect_deadline: u64,
    rtt: u64,
    rto_at: Option<u64>,
    retransmits: u32,
    linger_until: u64,
    // Evidence.
    connect: Option<Connect>,
    /// When a failed connect ended (an established flow's times are the exchange's).
    failed_at: Option<u64>,
    trace: Vec<PacketRecord>,
}

impl Flow {
    /// A flow that has not sent anything yet.
    pub fn new(params: FlowParams) -> Flow {
        let iss = params.iss;
        Flow {
            exchange: None,
            connect_deadline: params.request.connect_timeout.as_micros() as u64,
            state: State::SynSent,
            snd_una: iss,
            snd_nxt: iss,
            ident_queued: false,
            fin_seq: None,
            peer_mss: DEFAULT_PEER_MSS,
            irs: None,
            rcv_nxt: SeqNumber(0),
            out_of_order: BTreeMap::new(),
            peer_fin: None,
            peer_fin_received: false,
            syn_rto: SYN_RTO_US,
            next_syn: 0,
            stale_reset_sent: false,
            rtt: 0,
            rto_at: None,
            retransmits: 0,
            linger_until: u64::MAX,
            connect: None,
            failed_at: None,
            // A banner probe records 7 segments (S, SA, A, the banner, our FPA, the FIN, our A), a
            // few more with retransmissions or KEXINIT: room for them at once, not three growths.
            trace: Vec::with_capacity(12),
            params,
        }
    }

    /// Where the flow is.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether nothing more will happen: the observation is complete.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether the banner is in and the connection is being held open.
    pub(crate) fn is_holding(&self) -> bool {
        self.state == State::Established && self.exchange.as_ref().is_some_and(Exchange::is_holding)
    }

    /// The highest acknowledgement number a segment answering a flow that sends `ident` can carry:
    /// our SYN, our ident and our FIN. For stateless validation of replies.
    pub(crate) fn max_ack_offset(ident: &[u8]) -> u32 {
        1 + ident.len() as u32 + 1
    }

    /// Sends the first SYN.
    pub fn start(&mut self) -> Vec<Outbound> {
        self.snd_nxt = self.params.iss + 1;
        self.next_syn = self.syn_rto;
        vec![self.syn()]
    }

    fn syn(&self) -> Outbound {
        Outbound {
            flags: TcpFlags(TcpFlags::SYN),
            seq: self.params.iss,
            ack: SeqNumber(0),
            window: self.window(),
            options: vec![TcpOption::MaxSegmentSize(self.params.mss)],
            payload: Bytes::new(),
        }
    }

    /// Our receive window: what the byte cap still allows.
    fn window(&self) -> u16 {
        let room = match &self.exchange {
            Some(x) if x.is_holding() => usize::from(u16::MAX),
            Some(x) => x.room(),
            None => self.params.engine.byte_cap,
        };
        room.min(usize::from(u16::MAX)) as u16
    }

    fn segment(&self, flags: u8, seq: SeqNumber, payload: Bytes) -> Outbound {
        Outbound {
            flags: TcpFlags(flags | TcpFlags::ACK),
            seq,
            ack: self.rcv_nxt,
            window: self.window(),
            options: Vec::new(),
            payload,
        }
    }

    fn ack(&self) -> Outbound {
        self.segment(0, self.snd_nxt, Bytes::new())
    }

    /// When [`on_timer`](Self::on_timer) next has something to do.
    pub(crate) fn poll_at(&self) -> Option<u64> {
        match self.state {
            State::SynSent => Some(self.next_syn.min(self.connect_deadline)),
            State::Established => {
                let deadline = self.exchange.as_ref().map_or(u64::MAX, Exchange::deadline_us);
                let next = self.rto_at.map_or(deadline, |r| r.min(deadline));
                (next != u64::MAX).then_some(next)
            }
            State::Closing => Some(self.rto_at.map_or(self.linger_until, |r| r.min(self.linger_until))),
            State::Done => None,
        }
    }

    /// Timers: SYN retransmission and the connect timeout, the banner deadline, retransmission of
    /// our ident and FIN, the end of the close.
    pub fn on_timer(&mut self, now: u64) -> Vec<Outbound> {
        let mut out = Vec::new();
        match self.state {
            State::SynSent => {
                if now >= self.connect_deadline {
                    self.fail_connect(now, Connect::TimedOut);
                } else if now >= self.next_syn {
                    out.push(self.syn());
                    self.syn_rto *= 2;
                    self.next_syn = now + self.syn_rto;
                }
            }
            State::Established => {
                if let Some(step) = self.exchange.as_mut().map(|x| x.on_deadline(now)) {
                    self.follow(now, step, &mut out);
                }
            }
            State::Closing if now >= self.linger_until => self.state = State::Done,
            State::Closing | State::Done => {}
        }
        if matches!(self.state, State::Established | State::Closing) && self.rto_at.is_some_and(|t| now >= t)
        {
            self.retransmit(now, &mut out);
        }
        out
    }

    /// The connect attempt failed before establishment: an answer to the SYN, silence, or a local
    /// error sending it.
    pub(crate) fn fail_connect(&mut self, now: u64, connect: Connect) {
        if self.state == State::SynSent {
            self.connect = Some(connect);
            self.failed_at = Some(now);
            self.state = State::Done;
        }
    }

    /// An ICMP error quoting one of our segments. Before establishment it ends the connect, as it
    /// does for a kernel socket; afterwards it is only traced (a soft error).
    pub(crate) fn on_icmp(&mut self, now: u64, kind: IcmpKind, seq: SeqNumber) {
        self.trace.push(PacketRecord {
            t_us: now,
            dir: Direction::In,
            kind: PacketKind::Icmp(kind),
            seq: seq.diff(self.params.iss) as u32,
            ack: 0,
            window: 0,
            ttl: 0,
            len: 0,
        });
        match kind {
            // Fragmentation needed is path MTU discovery, not a failure.
            IcmpKind::FragmentationNeeded => {}
            // A port unreachable (a firewall's plain `reject`) is what the kernel reports as
            // ECONNREFUSED, like an RST: the same outcome as the connect engine's, the ICMP error
            // in the trace.
            IcmpKind::PortUnreachable => self.fail_connect(now, Connect::Refused),
            _ => self.fail_connect(now, Connect::Unreachable { detail: kind.to_string() }),
        }
    }

    /// Gives up on the flow now (the probe was cancelled, or the engine stops): a connection the
    /// server has accepted is reset, so it does not hold one of its slots until its own timeout.
    /// The observation then reads as [`into_observation`](Self::into_observation) says.
    pub fn abort(&mut self) -> Vec<Outbound> {
        let out = match self.state {
            State::Established | State::Closing => vec![self.reset()],
            State::SynSent | State::Done => Vec::new(),
        };
        self.state = State::Done;
        out
    }

    /// The run stopped (Ctrl-C, a time limit): the flow ends now with what it saw, as the connect
    /// engine's probes do. Still connecting, its connect reads `interrupted`; established, the
    /// exchange ends `interrupted` keeping its bytes and times. A connection the server accepted is
    /// reset rather than closed with a FIN, so the observation need not wait for the close and the
    /// server's slot is freed at once; a flow already closing keeps the end its exchange had.
    pub(crate) fn interrupt(&mut self, now: u64) -> Vec<Outbound> {
        match self.state {
            State::SynSent => {
                self.fail_connect(now, Connect::Interrupted);
                Vec::new()
            }
            State::Established => {
                if let Some(x) = self.exchange.as_mut() {
                    x.on_interrupt(now);
                }
                self.abort()
            }
            State::Closing => self.abort(),
            State::Done => Vec::new(),
        }
    }

    /// A segment for this flow arrived.
    pub(crate) fn on_segment(&mut self, seg: &Inbound) -> Vec<Outbound> {
        if self.state == State::Done {
            return Vec::new();
        }
        if self.state == State::SynSent {
            return self.on_segment_syn_sent(seg);
        }
        self.record_in(seg);
        let mut out = Vec::new();
        let now = seg.t_us;
        let flags = seg.flags;
        if flags.has(TcpFlags::RST) {
            // RFC 5961 §3.2, as Linux does it: a reset ends the connection only at exactly the
            // next sequence number we expect (or one before it, after their FIN). One elsewhere in
            // the window (it overtook data still on its way, or is forged) draws a challenge ACK,
            // and the data, when it comes, is read: the kernel client would read it too.
            let window = u32::from(self.window()).max(1) as usize;
            let exact = seg.seq == self.rcv_nxt || (self.peer_fin_received && seg.seq + 1 == self.rcv_nxt);
            if exact {
                if let (State::Established, Some(x)) = (self.state, self.exchange.as_mut()) {
                    x.on_reset(now);
                }
                self.state = State::Done;
            } else if seg.seq.in_range(self.rcv_nxt, self.rcv_nxt + window) {
                out.push(self.ack());
            }
            return out;
        }
        if flags.has(TcpFlags::SYN) {
            // Their SYN-ACK again: our ACK was lost.
            if Some(seg.seq) == self.irs {
                out.push(self.ack());
            }
            return out;
        }
        if !flags.has(TcpFlags::ACK) {
            return out;
        }
        // An acknowledgement of something never sent: answer with an ACK, drop the segment.
        if seg.ack.diff(self.snd_nxt) > 0 {
            out.push(self.ack());
            return out;
        }
        if seg.ack.diff(self.snd_una) > 0 {
            self.snd_una = seg.ack;
            self.retransmits = 0;
            self.rto_at = if self.snd_una == self.snd_nxt { None } else { Some(now + self.rto()) };
        }
        let fresh = if self.state == State::Established { self.take_payload(seg) } else { None };
        let data_after_close = self.state == State::Closing
            && !seg.payload.is_empty()
            && (seg.seq + seg.payload.len()).diff(self.rcv_nxt) > 0;
        if flags.has(TcpFlags::FIN) {
            // Only a FIN within what we can receive counts (not a stray from an old connection),
            // and the first such one stands.
            let fin = seg.seq + seg.payload.len();
            let room = u32::from(self.window()) as i32;
            if (0..=room).contains(&fin.diff(self.rcv_nxt)) {
                self.peer_fin.get_or_insert(fin);
            }
        }
        let fin_now = !self.peer_fin_received && self.peer_fin == Some(self.rcv_nxt);
        if fin_now {
            self.peer_fin_received = true;
            self.rcv_nxt = self.rcv_nxt + 1;
        }
        match self.state {
            State::Established => {
                // Every FIN is acknowledged: a new one, one that came early (a duplicate ACK asks
                // for the gap), one sent again because our ACK was lost.
                if fresh.is_some() || fin_now || !seg.payload.is_empty() || flags.has(TcpFlags::FIN) {
                    out.push(self.ack());
                }
                if let Some(step) = fresh {
                    self.follow(now, step, &mut out);
                }
                if self.state == State::Established && self.peer_fin_received {
                    if let Some(step) = self.exchange.as_mut().map(|x| x.on_eof(now)) {
                        self.follow(now, step, &mut out);
                    }
                }
                coalesce(&mut out);
            }
            State::Closing => {
                if data_after_close {
                    // Data after our close: a closed kernel socket answers with a reset whose
                    // sequence number is the segment's acknowledgement (RFC 9293 §3.10.7.1), and
                    // the bytes are never read.
                    out.push(Self::reset_at(seg.ack));
                    self.state = State::Done;
                } else {
                    if fin_now || !seg.payload.is_empty() || flags.has(TcpFlags::FIN) {
                        out.push(self.ack());
                    }
                    let fin_acked = self.fin_seq.is_some_and(|f| self.snd_una.diff(f) > 0);
                    if fin_acked && self.peer_fin_received {
                        self.state = State::Done;
                    }
                }
            }
            State::SynSent | State::Done => {}
        }
        out
    }

    fn on_segment_syn_sent(&mut self, seg: &Inbound) -> Vec<Outbound> {
        self.record_in(seg);
        let flags = seg.flags;
        let ack_ok = flags.has(TcpFlags::ACK) && seg.ack == self.params.iss + 1;
        if !ack_ok {
            if flags.has(TcpFlags::ACK) && !flags.has(TcpFlags::RST) {
                return self.on_stale_ack(seg);
            }
            // No acknowledgement of our SYN (a simultaneous open, an RST without ACK): not an answer.
            return Vec::new();
        }
        if flags.has(TcpFlags::RST) {
            self.fail_connect(seg.t_us, Connect::Refused);
            return Vec::new();
        }
        if !flags.has(TcpFlags::SYN) {
            return Vec::new();
        }
        let now = seg.t_us;
        self.irs = Some(seg.seq);
        self.rcv_nxt = seg.seq + 1;
        self.snd_una = seg.ack;
        // The SYN-ACK's own relative sequence number is now known: zero.
        if let Some(last) = self.trace.last_mut() {
            last.seq = 0;
        }
        for option in &seg.options {
            if let TcpOption::MaxSegmentSize(mss) = option {
                self.peer_mss = (*mss).max(64);
            }
        }
        self.connect = Some(Connect::Established);
        self.rtt = now.saturating_sub(self.last_syn_time());
        let mut exchange = Exchange::new(
            self.params.request.order,
            self.params.purpose,
            self.params.engine.byte_cap,
            now,
            self.params.request.banner_timeout.as_micros() as u64,
        )
        .with_kexinit(self.params.request.kex);
        let step = exchange.start();
        self.exchange = Some(exchange);
        self.state = State::Established;
        let mut out = vec![self.ack()];
        self.follow(now, step, &mut out);
        out
    }

    /// An ACK of something this flow never sent, while it waits for the SYN-ACK: the 4-tuple's
    /// previous incarnation. Typically the server still holds it in TIME_WAIT (it closed first, a
    /// few seconds ago, towards the same source port) and our SYN's sequence number is not above
    /// the old connection's, so it answers with the old acknowledgement instead of a SYN-ACK. A
    /// kernel client escapes this with timestamps; we send none. RFC 9293 §3.10.7.3: answer with
    /// `<SEQ=SEG.ACK><CTL=RST>`, which ends the TIME_WAIT, and send the SYN again: at once the
    /// first time, on the retransmission schedule after that (a server that ignores the reset
    /// cannot make us loop).
    fn on_stale_ack(&mut self, seg: &Inbound) -> Vec<Outbound> {
        let mut out = vec![Self::reset_at(seg.ack)];
        if !self.stale_reset_sent {
            self.stale_reset_sent = true;
            out.push(self.syn());
        }
        out
    }

    /// A bare RST with sequence number `seq`: the answer to a segment that belongs to no
    /// connection of ours, whose acknowledgement number `seq` is (RFC 9293 §3.10.7.1).
    fn reset_at(seq: SeqNumber) -> Outbound {
        Outbound {
            flags: TcpFlags(TcpFlags::RST),
            seq,
            ack: SeqNumber(0),
            window: 0,
            options: Vec::new(),
            payload: Bytes::new(),
        }
    }

    /// Takes the payload's new in-order bytes (and any out-of-order bytes they join up with) into
    /// the exchange; returns its step when any byte was taken.
    fn take_payload(&mut self, seg: &Inbound) -> Option<Step> {
        if seg.payload.is_empty() {
            return None;
        }
        let offset = seg.seq.diff(self.rcv_nxt);
        let end = offset.saturating_add(seg.payload.len() as i32);
        if end <= 0 {
            return None; // all old: the caller re-acknowledges
        }
        let window = i32::from(self.window());
        if offset >= window {
            return None; // beyond the window
        }
        if offset > 0 {
            // Out of order: keep it (within the window) until the gap fills.
            let keep = seg.payload.slice(..(window - offset).min(seg.payload.len() as i32) as usize);
            self.out_of_order.insert(seg.seq.0, keep);
            return None;
        }
        let now = seg.t_us;
        let mut progress = self.deliver(now, seg.payload.slice((-offset) as usize..));
        // Join up what was waiting.
        while progress == Some(Step::Read) || progress == Some(Step::Hold) || progress.is_none() {
            let next = self.out_of_order.iter().find_map(|(&seq, bytes)| {
                let off = SeqNumber(seq).diff(self.rcv_nxt);
                (off <= 0 && off.saturating_add(bytes.len() as i32) > 0).then_some((seq, off))
            });
            let Some((seq, off)) = next else { break };
            let Some(bytes) = self.out_of_order.remove(&seq) else { break };
            match self.deliver(now, bytes.slice((-off) as usize..)) {
                None => break,
                p => progress = p,
            }
        }
        let rcv_nxt = self.rcv_nxt;
        self.out_of_order.retain(|&seq, bytes| (SeqNumber(seq) + bytes.len()).diff(rcv_nxt) > 0);
        progress
    }

    /// Hands in-order bytes to the exchange, as far as its cap allows (a held connection takes, and
    /// discards, everything: what it does not take is not acknowledged).
    fn deliver(&mut self, now: u64, bytes: Bytes) -> Option<Step> {
        let exchange = self.exchange.as_mut()?;
        let taken = if exchange.is_holding() { bytes.len() } else { bytes.len().min(exchange.room()) };
        if taken == 0 {
            return None;
        }
        self.rcv_nxt = self.rcv_nxt + taken;
        Some(exchange.on_bytes(now, &bytes[..taken]))
    }

    /// Does what the exchange's step asks: send our ident, close, or nothing (read on, hold).
    fn follow(&mut self, now: u64, step: Step, out: &mut Vec<Outbound>) {
        match step {
            Step::Read | Step::Hold => {}
            Step::SendIdent => self.queue_ident(now, out),
            Step::Finish { send_ident } => {
                if send_ident {
                    self.queue_ident(now, out);
                }
                self.close(now, out);
            }
            Step::Gone => self.state = State::Done,
        }
    }

    /// Queues our ident and sends it in segments of at most the server's MSS.
    fn queue_ident(&mut self, now: u64, out: &mut Vec<Outbound>) {
        if self.ident_queued {
            return;
        }
        self.ident_queued = true;
        let start = self.snd_nxt;
        let ident = self.params.request.ident.clone();
        out.extend(self.data_segments(start, &ident));
        self.snd_nxt = start + ident.len();
        self.rto_at = Some(now + self.rto());
    }

    fn data_segments(&self, from: SeqNumber, bytes: &Bytes) -> Vec<Outbound> {
        let mss = usize::from(self.peer_mss).max(1);
        (0..bytes.len())
            .step_by(mss)
            .map(|at| self.segment(TcpFlags::PSH, from + at, bytes.slice(at..(at + mss).min(bytes.len()))))
            .collect()
    }

    /// Sequence number just after our ident.
    fn ident_end(&self) -> SeqNumber {
        self.params.iss + 1 + self.params.request.ident.len()
    }

    fn rto(&self) -> u64 {
        (RTO_MIN_US + 2 * self.rtt).min(RTO_MAX_US) << self.retransmits.min(4)
    }

    fn retransmit(&mut self, now: u64, out: &mut Vec<Outbound>) {
        if self.retransmits >= MAX_RETRANSMITS {
            self.rto_at = None;
            return;
        }
        self.retransmits += 1;
        if self.ident_queued && self.snd_una.diff(self.ident_end()) < 0 {
            let ident = self.params.request.ident.clone();
            let done = self.snd_una.diff(self.params.iss + 1).max(0) as usize;
            out.extend(self.data_segments(self.snd_una, &ident.slice(done.min(ident.len())..)));
        }
        if let Some(fin) = self.fin_seq {
            if self.snd_una.diff(fin) <= 0 {
                out.push(self.segment(TcpFlags::FIN, fin, Bytes::new()));
            }
        }
        self.rto_at = Some(now + self.rto());
    }

    fn reset(&self) -> Outbound {
        self.segment(TcpFlags::RST, self.snd_nxt, Bytes::new())
    }

    /// The exchange is over: close as configured.
    fn close(&mut self, now: u64, out: &mut Vec<Outbound>) {
        match self.params.engine.close {
            CloseMode::Rst => {
                out.push(self.reset());
                self.state = State::Done;
            }
            CloseMode::Fin => {
                let fin = self.snd_nxt;
                out.push(self.segment(TcpFlags::FIN, fin, Bytes::new()));
                self.fin_seq = Some(fin);
                self.snd_nxt = fin + 1;
                self.rto_at = Some(now + self.rto());
                self.linger_until = now + CLOSE_LINGER_US;
                self.state = State::Closing;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ident_line;
    use crate::evidence::ProbeOrder;
    use crate::evidence::{End, Observation};
    use std::time::Duration;

    const ISS: u32 = 1000;
    const IRS: u32 = 5000;
    const IDENT: &str = "SSH-2.0-t";

    fn params(order: ProbeOrder, close: CloseMode) -> FlowParams {
        FlowParams {
            local: "127.0.0.1:61000".parse().unwrap(),
            remote: "127.0.0.1:22".parse().unwrap(),
            iss: SeqNumber(ISS),
            mss: 1460,
            ttl: 64,
            request: ProbeRequest::new("127.0.0.1:22".parse().unwrap())
                .order(order)
                .ident(ident_line(IDENT))
                .timeouts(Duration::from_secs(5), Duration::from_secs(10)),
            engine: EngineConfig { byte_cap: 64, close, trace: true },
            purpose: Purpose::Probe,
        }
    }

    /// A flow driven by the test: every segment it emits counts as sent at the current time.
    struct Run {
        flow: Flow,
        now: u64,
        sent: Vec<Outbound>,
    }

    impl Run {
        fn new(order: ProbeOrder, close: CloseMode) -> Run {
            Run::with(params(order, close))
        }

        fn with(params: FlowParams) -> Run {
            let mut flow = Flow::new(params);
            let out = flow.start();
            let mut run = Run { flow, now: 0, sent: Vec::new() };
            run.emit(out);
            run
        }

        fn emit(&mut self, out: Vec<Outbound>) {
            for seg in out {
                self.flow.sent(self.now, &seg);
                self.sent.push(seg);
            }
        }

        /// A segment from the server acknowledging everything we sent.
        fn recv(&mut self, at: u64, flags: u8, seq: u32, payload: &'static [u8]) {
            let ack = self.flow.snd_nxt.0;
            self.recv_acking(at, flags, seq, ack, payload);
        }

        /// A segment from the server with the acknowledgement number `ack`.
        fn recv_acking(&mut self, at: u64, flags: u8, seq: u32, ack: u32, payload: &'static [u8]) {
            self.now = at;
            let seg = Inbound {
                t_us: at,
                flags: TcpFlags(flags),
                seq: SeqNumber(seq),
                ack: SeqNumber(ack),
                window: 65535,
                ttl: 64,
                options: if flags & TcpFlags::SYN != 0 {
                    vec![TcpOption::MaxSegmentSize(1460)]
                } else {
                    vec![]
                },
                payload: Bytes::from_static(payload),
            };
            let out = self.flow.on_segment(&seg);
            self.emit(out);
        }

        fn tick(&mut self, at: u64) {
            self.now = at;
            let out = self.flow.on_timer(at);
            self.emit(out);
        }

        fn handshake(&mut self) {
            self.recv(100, SA, IRS, b"");
        }

        /// The trace as `dir flags seq ack len` strings.
        fn trace(&self) -> Vec<String> {
            self.flow
                .trace
                .iter()
                .map(|p| {
                    let d = if p.dir == Direction::Out { ">" } else { "<" };
                    format!("{d}{} {} {} {}", p.kind, p.seq, p.ack, p.len)
                })
                .collect()
        }
    }

    const SA: u8 = TcpFlags::SYN | TcpFlags::ACK;
    const A: u8 = TcpFlags::ACK;
    const PA: u8 = TcpFlags::PSH | TcpFlags::ACK;
    const FA: u8 = TcpFlags::FIN | TcpFlags::ACK;
    const RA: u8 = TcpFlags::RST | TcpFlags::ACK;
    const R: u8 = TcpFlags::RST;

    #[test]
    fn banner_wait_then_send_then_fin() {
        let mut run = Run::new(ProbeOrder::WaitForBanner, CloseMode::Fin);
        assert_eq!(run.sent[0].options, [TcpOption::MaxSegmentSize(1460)]);
        run.handshake();
        run.recv(200, PA, IRS + 1, b"SSH-2.0-srv\r\n");
        assert_eq!(run.flow.state(), State::Closing);
        // The server acknowledges our ident and FIN, then closes too.
        run.recv(300, A, IRS + 14, b"");
        run.recv(310, FA, IRS + 14, b"");
        assert!(run.flow.is_done());
        assert_eq!(
            run.trace(),
            [
                ">S 0 0 0",
                "<SA 0 1 0",
                ">A 1 1 0",
                "<PA 1 1 13",
                // One segment: the ACK of the banner, our ident, our FIN.
                ">FPA 1 14 11",
                "<A 14 13 0",
                "<FA 14 13 0",
                ">A 13 15 0"
            ]
        );
        let obs = run.flow.into_observation();
        assert_eq!((obs.connect, obs.end, obs.sent_ident), (Connect::Established, Some(End::WeClosed), true));
        assert_eq!(&obs.received[..], b"SSH-2.0-srv\r\n");
        assert_eq!(
            (obs.timings.connected, obs.timings.first_byte, obs.timings.ident),
            (Some(100), Some(200), Some(200))
        );
        assert_eq!(obs.timings.closed, Some(200));
        assert_eq!(obs.local, Some("127.0.0.1:61000".parse().unwrap()));
    }

    #[test]
    fn without_a_trace_the_observation_comes_at_our_fin_and_the_close_goes_on() {
        for order in [ProbeOrder::WaitForBanner, ProbeOrder::SendFirst] {
            // The same exchange twice: with the trace (the observation at the close's end), and
            // without (at our FIN).
            let exchange = |run: &mut Run| {
                run.handshake();
                run.recv(200, PA, IRS + 1, b"SSH-2.0-srv\r\n");
            };
            let mut traced = Run::new(order, CloseMode::Fin);
            exchange(&mut traced);
            assert_eq!(traced.flow.closing_observation(), None, "{order:?}: a traced probe waits");
            traced.recv(300, A, IRS + 14, b"");
            traced.recv(310, FA, IRS + 14, b"");
            let full = traced.flow.into_observation();

            let mut untraced = params(order, CloseMode::Fin);
            untraced.engine.trace = false;
            let mut run = Run::with(untraced);
            exchange(&mut run);
            assert_eq!(run.flow.state(), State::Closing);
            let early = run.flow.closing_observation().expect("closing, no trace asked for");
            assert_eq!(early, Observation { packets: Vec::new(), ..full.clone() }, "{order:?}");
            assert!(!full.packets.is_empty());
            // The flow still completes the close: our FIN retransmitted, the server's FIN answered.
            let fin_at = run.flow.fin_seq.expect("our FIN");
            run.tick(run.flow.poll_at().expect("the FIN's timer"));
            assert_eq!(run.sent.last().map(|s| (s.seq, s.flags.has(TcpFlags::FIN))), Some((fin_at, true)));
            run.recv(900_000, A, IRS + 14, b"");
            run.recv(900_010, FA, IRS + 14, b"");
            assert_eq!(
                run.sent.last().map(|s| s.flags),
                Some(TcpFlags(A)),
                "the server's FIN is acknowledged"
            );
            assert!(run.flow.is_done());
            // The observation at the end carries no trace either.
            assert_eq!(run.flow.into_observation().packets, []);
        }
    }

    #[test]
    fn a_hold_has_no_early_observation() {
        let mut p = params(ProbeOrder::WaitForBanner, CloseMode::Fin);
        p.engine.trace = false;
        p.purpose = Purpose::Hold;
        let mut run = Run::with(p);
        run.handshake();
        run.recv(200, PA, IRS + 1, b"SSH-2.0-srv\r\n");
        run.recv(300, FA, IRS + 14, b"");
        assert_eq!(run.flow.state(), State::Closing);
        assert_eq!(run.flow.closing_observation(), None);
    }

    #[test]
    fn send_first_and_rst_close() {
        let mut run = Run::new(ProbeOrder::SendFirst, CloseMode::Rst);
        run.handshake();
        assert_eq!(run.trace()[2..], [">A 1 1 0", ">PA 1 1 11"]);
        run.recv(200, PA, IRS + 1, b"SSH-2.0-srv\r\n");
        assert!(run.flow.is_done());
        assert_eq!(run.trace()[4..], ["<PA 1 12 13", ">A 12 14 0", ">RA 12 14 0"]);
        let obs = run.flow.into_observation();
        assert_eq!((obs.end, obs.sent_ident), (Some(End::WeClosed), true));
    }

    #[test]
    fn rst_to_syn_is_refused_and_bad_acks_are_ignored() {
        let mut run = Run::new(ProbeOrder::WaitForBanner, CloseMode::Fin);
        // An RST whose ACK does not match our SYN is not an answer to it.
        run.recv_acking(50, RA, 0, ISS + 7, b"");
        assert_eq!(run.flow.state(), State::SynSent);
        run.recv(60, RA, 0, b"");
        assert!(run.flow.is_done());
        let obs = run.flow.into_observation();
        assert_eq!((obs.connect, obs.end, obs.timings.closed), (Connect::Refused, None, Some(60)));
        assert_eq!(obs.packets.len(), 3);
    }

    #[test]
    fn a_reset_that_overtook_the_banner_draws_a_challenge_ack_and_the_banner_is_read() {
        let mut run = Run::new(ProbeOrder::WaitForBanner, CloseMode::Fin);
        run.handshake();
        let line = b"Exceeded MaxStartups\r\n";
        // The reset that followed the line arrives first: in the window, not where we are.
        run.recv(200, R, IRS + 1 + line.len() as u32, b"");
        assert_eq!(run.flow.state(), State::Established);
        assert_eq!(run.trace().last().map(String::as_str), Some(">A 1 1 0"), "a challenge ACK");
        run.recv(210, PA, IRS + 1, line);
        // Now the reset at exactly the next sequence number ends it, the line kept.
        run.recv(220, R, IRS + 1 + line.len() as u32, b"");
        assert!(run.flow.is_done());
        let obs = run.flow.into_observation();
        assert_eq!((obs.end, &obs.received[..]), (Some(End::Rst), &line[..]));
    }

    #[test]
    fn a_fin_outside_the_window_is_not_their_close() {
        let mut run = Run::new(ProbeOrder::WaitForBanner, CloseMode::Fin);
        run.handshake();
        // A stray FIN (an old connection's, reordered): ignored, and the real one still counts.
        run.recv(200, FA, IRS.wrapping_sub(70_000), b"");
        assert_eq!(run.flow.state(), State::Established);
        run.recv(300, FA, IRS + 1, b"");
        let obs = run.flow.into_observation();
        assert_eq!((obs.end, obs.timings.closed), (Some(End::Fin), Some(300)));
    }

    #[test]
    fn an_icmp_port_unreachable_is_refused_as_the_kernel_says() {
        // IPv4's code 3 and IPv6's code 4 are both port unreachable.
        for kind in [IcmpKind::from_v4(3, 3), IcmpKind::from_v6(1, 4)].map(Option::unwrap) {
            let mut run = Run::new(ProbeOrder::WaitForBanner, CloseMode::Fin);
            run.flow.on_icmp(80, kind, SeqNumber(ISS));
            let obs = run.flow.into_observation();
            assert_eq!((obs.connect, obs.timings.closed), (Connect::Refused, Some(80)));
            assert_eq!(obs.packets[1].kind, PacketKind::Icmp(kind));
        }
    }

    #[test]
    fn coalescing_keeps_what_tcp_allows_and_only_that() {
        let seg = |flags: u8, seq: u32, ack: u32, payload: &'static [u8]| Outbound {
            flags: TcpFlags(flags),
            seq: SeqNumber(seq),
            ack: SeqNumber(ack),
            window: 100,
            options: vec![],
            payload: Bytes::from_static(payload),
        };
        let shape = |out: &[Outbound]| -> Vec<String> {
            out.iter().map(|s| format!("{} {} {} {}", s.flags, s.seq.0, s.ack.0, s.payload.len())).collect()
        };
        // ACK, two data segments (a small MSS), FIN: the ACK rides on the first, the FIN on the last.
        let mut out =
            vec![seg(A, 1, 9, b""), seg(PA, 1, 9, b"abc"), seg(PA, 4, 9, b"de"), seg(FA, 6, 9, b"")];
        coalesce(&mut out);
        assert_eq!(shape(&out), ["PA 1 9 3", "FPA 4 9 2"]);
        // A reset stays alone; an ACK before it is kept (the reset acknowledges nothing).
        let mut out = vec![seg(A, 1, 9, b""), seg(PA, 1, 9, b"abc"), seg(R, 4, 0, b"")];
        coalesce(&mut out);
        assert_eq!(shape(&out), ["PA 1 9 3", "R 4 0 0"]);
        let mut out = vec![seg(A, 1, 9, b""), seg(R, 1, 0, b"")];
        coalesce(&mut out);
        assert_eq!(shape(&out), ["A 1 9 0", "R 1 0 0"]);
        // A FIN that does not follow the data, or acknowledges more, is its own segment.
        let mut out = vec![seg(PA, 1, 9, b"abc"), seg(FA, 5, 9, b""), seg(FA, 4, 10, b"")];
        coalesce(&mut out);
        assert_eq!(shape(&out), ["PA 1 9 3", "FA 5 9 0", "FA 4 10 0"]);
    }

    #[test]
    fn a_stale_ack_to_our_syn_is_reset_and_the_syn_sent_again() {
        let mut run = Run::new(ProbeOrder::WaitForBanner, CloseMode::Fin);
        // A server's TIME_WAIT answers the SYN with the old connection's acknowledgement.
        let (old_seq, old_ack) = (IRS.wrapping_sub(500), ISS.wrapping_sub(9000));
        run.recv_acking(40, A, old_seq, old_ack, b"");
        // RFC 9293: <SEQ=SEG.ACK><CTL=RST>, then our SYN again at once.
        let (rst, syn) = (&run.sent[1], &run.sent[2]);
        assert_eq!(
            (rst.flags, rst.seq, rst.ack),
            (TcpFlags(R), SeqNumber(ISS.wrapping_sub(9000)), SeqNumber(0))
        );
        assert_eq!((syn.flags, syn.seq), (TcpFlags(TcpFlags::SYN), SeqNumber(ISS)));
        assert_eq!(run.flow.state(), State::SynSent);
        // A second stale ACK is reset, but the SYN waits for its retransmission time.
        run.recv_acking(60, A, old_seq, old_ack, b"");
        assert_eq!(run.sent.len(), 4);
        assert_eq!(run.sent[3].flags, TcpFlags(R));
        assert_eq!(run.flow.poll_at(), Some(1_000_000));
        // The SYN sent again is answered: connected, with the RTT measured from it.
        run.recv(100, SA, IRS, b"");
        assert_eq!(run.flow.state(), State::Established);
        let obs = run.flow.into_observation();
        assert_eq!((obs.connect, obs.timings.connected), (Connect::Established, Some(100)));
        let flags: Vec<String> = obs.packets.iter().map(|p| p.kind.to_string()).collect();
        assert_eq!(flags, ["S", "A", "R", "S", "A", "R", "SA", "A"]);
    }

    #[test]
    fn syn_is_retransmitted_on_the_kernel_schedule_until_the_connect_timeout() {
        let mut run = Run::new(ProbeOrder::WaitForBanner, CloseMode::Fin);
        let mut ticks = 0;
        while let Some(at) = run.flow.poll_at() {
            run.tick(at);
            ticks += 1;
            assert!(ticks < 20);
        }
        let syns: Vec<u64> = run.flow.trace.iter().map(|p| p.t_us / 1000).collect();
        assert_eq!(syns, [0, 1000, 3000]);
        let obs = run.flow.into_observation();
        assert_eq!((obs.connect, obs.timings.closed), (Connect::TimedOut, Some(5_000_000)));
    }

    #[test]
    fn icmp_before_establishment_is_unreachable() {
        let mut run = Run::new(ProbeOrder::WaitForBanner, CloseMode::Fin);
        run.flow.on_icmp(80, IcmpKind::FragmentationNeeded, SeqNumber(ISS));
        assert_eq!(run.flow.state(), State::SynSent);
        run.flow.on_icmp(90, IcmpKind::AdminProhibited, SeqNumber(ISS));
        let obs = run.flow.into_observation();
        assert_eq!(obs.connect, Connect::Unreachable { detail: "administratively prohibited".into() });
        assert_eq!(obs.packets[2].kind, PacketKind::Icmp(IcmpKind::AdminProhibited));
    }

    #[test]
    fn silent_close_reads_as_fin_and_we_close_too() {
        let mut run = Run::new(ProbeOrder::WaitForBanner, CloseMode::Fin);
        run.handshake();
        run.recv(5_000_000, FA, IRS + 1, b"");
        // The ACK of their FIN rides on ours.
        assert_eq!(run.trace()[3..], ["<FA 1 1 0", ">FA 1 2 0"]);
        run.recv(5_000_100, A, IRS + 2, b"");
        assert!(run.flow.is_done());
        let obs = run.flow.into_observation();
        assert_eq!((obs.end, obs.received.len(), obs.sent_ident), (Some(End::Fin), 0, false));
        assert_eq!(obs.timings.closed, Some(5_000_000));
    }

    #[test]
    fn refusal_text_then_reset_is_kept() {
        let mut run = Run::new(ProbeOrder::SendFirst, CloseMode::Fin);
        run.handshake();
        run.recv(300, PA, IRS + 1, b"Exceeded MaxStartups\r\n");
        assert_eq!(run.flow.state(), State::Established);
        run.recv(310, R, IRS + 23, b"");
        let obs = run.flow.into_observation();
        assert_eq!((obs.end, &obs.received[..]), (Some(End::Rst), &b"Exceeded MaxStartups\r\n"[..]));
    }

    #[test]
    fn out_of_window_rst_is_ignored() {
        let mut run = Run::new(ProbeOrder::WaitForBanner, CloseMode::Fin);
        run.handshake();
        run.recv(300, R, IRS + 1 + 100_000, b"");
        assert_eq!(run.flow.state(), State::Established);
        run.recv(301, R, IRS + 1, b"");
        assert_eq!(run.flow.into_observation().end, Some(End::Rst));
    }

    #[test]
    fn reassembles_out_of_order_and_duplicate_segments() {
        let mut run = Run::new(ProbeOrder::WaitForBanner, CloseMode::Rst);
        run.handshake();
        // "SSH-2.0-srv\r\n" in three pieces: the last first, then a duplicate, then an overlap.
        run.recv(200, PA, IRS + 1 + 8, b"srv\r\n");
        assert_eq!(run.flow.state(), State::Established);
        assert_eq!(run.sent.last().unwrap().ack, SeqNumber(IRS + 1)); // duplicate ACK
        run.recv(210, A, IRS + 1, b"SSH-");
        assert_eq!(run.flow.state(), State::Established);
        run.recv(220, A, IRS + 1, b"SSH-");
        run.recv(230, A, IRS + 1 + 2, b"H-2.0-");
        assert!(run.flow.is_done());
        let obs = run.flow.into_observation();
        assert_eq!(&obs.received[..], b"SSH-2.0-srv\r\n");
        assert_eq!(obs.timings.ident, Some(230));
    }

    #[test]
    fn early_fin_waits_for_the_gap() {
        let mut run = Run::new(ProbeOrder::WaitForBanner, CloseMode::Rst);
        run.handshake();
        run.recv(200, FA, IRS + 1 + 4, b"away\r\n");
        assert_eq!(run.flow.state(), State::Established);
        // A duplicate ACK asks for the gap.
        assert_eq!(run.trace().last().map(String::as_str), Some(">A 1 1 0"));
        run.recv(210, PA, IRS + 1, b"Go, ");
        let obs = run.flow.into_observation();
        assert_eq!((obs.end, &obs.received[..]), (Some(End::Fin), &b"Go, away\r\n"[..]));
    }

    #[test]
    fn a_fin_sent_again_is_acknowledged_again() {
        let mut run = Run::new(ProbeOrder::WaitForBanner, CloseMode::Fin);
        run.handshake();
        run.recv(200, PA, IRS + 1, b"SSH-2.0-srv\r\n");
        // Their FIN, acknowledging our ident but not our FIN; then the same FIN again (our ACK of
        // it was lost): acknowledged both times.
        for at in [300, 500] {
            run.recv_acking(at, FA, IRS + 14, ISS + 12, b"");
        }
        let t = run.trace();
        assert_eq!(t[t.len() - 4..], ["<FA 14 12 0", ">A 13 15 0", "<FA 14 12 0", ">A 13 15 0"], "{t:?}");
        assert_eq!(run.flow.state(), State::Closing);
    }

    #[test]
    fn byte_cap_ends_the_exchange() {
        let mut run = Run::new(ProbeOrder::WaitForBanner, CloseMode::Rst);
        run.handshake();
        assert_eq!(run.sent[1].window, 64);
        run.recv(200, PA, IRS + 1, &[b'x'; 100]);
        let obs = run.flow.into_observation();
        assert_eq!((obs.end, obs.received.len()), (Some(End::ByteCap), 64));
    }

    #[test]
    fn banner_deadline_closes() {
        let mut run = Run::new(ProbeOrder::WaitForBanner, CloseMode::Fin);
        run.handshake();
        run.recv(200, PA, IRS + 1, b"SSH-2.0-sl");
        assert_eq!(run.flow.poll_at(), Some(100 + 10_000_000));
        run.tick(100 + 10_000_000);
        assert_eq!(run.flow.state(), State::Closing);
        // Nobody answers: our FIN is retransmitted a few times, then the flow is forgotten.
        let mut ticks = 0;
        while let Some(at) = run.flow.poll_at() {
            run.tick(at);
            ticks += 1;
            assert!(ticks < 20);
        }
        let fins = run.flow.trace.iter().filter(|p| p.flags() == Some(TcpFlags(FA))).count();
        assert!((2..=4).contains(&fins), "{fins}");
        let obs = run.flow.into_observation();
        assert_eq!((obs.end, obs.timings.closed), (Some(End::Timeout), Some(10_000_100)));
    }

    #[test]
    fn data_after_our_close_is_reset() {
        let mut run = Run::new(ProbeOrder::WaitForBanner, CloseMode::Fin);
        run.handshake();
        run.recv(200, PA, IRS + 1, b"SSH-2.0-srv\r\n");
        run.recv(300, PA, IRS + 14, b"\x00\x00\x01\x0ckexinit");
        assert!(run.flow.is_done());
        assert_eq!(run.trace().last().unwrap(), ">R 13 0 0");
        assert_eq!(run.flow.into_observation().received.len(), 13);
    }

    #[test]
    fn the_trace_is_in_wire_order() {
        let mut run = Run::new(ProbeOrder::WaitForBanner, CloseMode::Fin);
        run.handshake();
        run.recv(300, PA, IRS + 1, b"Exceeded MaxStartups\r\n");
        // The FIN arrived at 250 µs, before our ACK of the line went out, but was handled after.
        run.recv(250, FA, IRS + 23, b"");
        let obs = run.flow.into_observation();
        let times: Vec<u64> = obs.packets.iter().map(|p| p.t_us).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
        assert_eq!(obs.end, Some(End::Fin));
    }

    #[test]
    fn lost_ident_is_retransmitted() {
        let mut run = Run::new(ProbeOrder::SendFirst, CloseMode::Fin);
        run.handshake();
        let at = run.flow.poll_at().unwrap();
        assert!(at < 1_000_000);
        run.tick(at);
        assert_eq!(run.trace().last().unwrap(), ">PA 1 1 11");
        run.recv(at + 10, A, IRS + 1, b"");
        assert_eq!(run.flow.poll_at(), Some(100 + 10_000_000));
    }

    #[test]
    fn an_interrupt_mid_banner_keeps_the_bytes_and_resets_the_connection() {
        let mut run = Run::new(ProbeOrder::WaitForBanner, CloseMode::Fin);
        run.handshake();
        run.recv(200, PA, IRS + 1, b"SSH-2.0-Open");
        run.now = 900;
        let out = run.flow.interrupt(900);
        run.emit(out);
        assert!(run.flow.is_done());
        // The server's slot is freed at once: a reset, not a FIN whose close we would wait for.
        assert_eq!(run.trace().last().unwrap(), ">RA 1 13 0");
        let obs = run.flow.into_observation();
        assert_eq!(
            (obs.connect, obs.end, obs.sent_ident),
            (Connect::Established, Some(End::Interrupted), false)
        );
        assert_eq!(&obs.received[..], b"SSH-2.0-Open");
        assert_eq!(
            (obs.timings.connected, obs.timings.first_byte, obs.timings.closed),
            (Some(100), Some(200), Some(900))
        );
        assert_eq!(obs.local, Some("127.0.0.1:61000".parse().unwrap()));
    }

    #[test]
    fn an_interrupt_while_connecting_is_an_interrupted_connect_and_sends_nothing() {
        let mut run = Run::new(ProbeOrder::WaitForBanner, CloseMode::Fin);
        assert!(run.flow.interrupt(700).is_empty());
        assert!(run.flow.is_done());
        assert_eq!(run.trace(), [">S 0 0 0"], "only the SYN");
        let obs = run.flow.into_observation();
        assert_eq!((obs.connect, obs.end, obs.timings.closed), (Connect::Interrupted, None, Some(700)));
        assert_eq!(obs.local, Some("127.0.0.1:61000".parse().unwrap()));
    }

    #[test]
    fn an_interrupt_after_the_exchange_ended_keeps_its_end() {
        let mut run = Run::new(ProbeOrder::WaitForBanner, CloseMode::Fin);
        run.handshake();
        run.recv(200, PA, IRS + 1, b"SSH-2.0-srv\r\n");
        assert_eq!(run.flow.state(), State::Closing);
        let out = run.flow.interrupt(300);
        assert_eq!(out.len(), 1, "a reset in place of the rest of the close");
        assert!(run.flow.is_done());
        assert_eq!(run.flow.into_observation().end, Some(End::WeClosed));
    }
}
