//! What a flow records: its packet trace, and the [`Observation`] it hands over at the end (or, for
//! a hold, once its banner is in).

use super::{Flow, Inbound, Outbound};
use crate::engine::raw::wire::TcpFlags;
use crate::evidence::{Connect, Direction, End, Observation, PacketKind, PacketRecord, Timings};
use bytes::Bytes;

impl Flow {
    /// Records a segment as sent (call after it went out).
    pub fn sent(&mut self, now: u64, seg: &Outbound) {
        if !seg.payload.is_empty() && seg.seq + seg.payload.len() == self.ident_end() {
            if let Some(x) = self.exchange.as_mut() {
                x.on_ident_sent();
            }
        }
        let ack = match self.irs {
            Some(irs) if seg.flags.has(TcpFlags::ACK) => seg.ack.diff(irs) as u32,
            _ => 0,
        };
        self.trace.push(PacketRecord {
            t_us: now,
            dir: Direction::Out,
            kind: PacketKind::Tcp { flags: seg.flags, options: seg.options.clone() },
            seq: seg.seq.diff(self.params.iss) as u32,
            ack,
            window: seg.window,
            ttl: self.params.ttl,
            len: seg.payload.len(),
        });
    }

    pub(super) fn record_in(&mut self, seg: &Inbound) {
        let seq = match self.irs {
            Some(irs) => seg.seq.diff(irs) as u32,
            None => seg.seq.0,
        };
        let ack = if seg.flags.has(TcpFlags::ACK) { seg.ack.diff(self.params.iss) as u32 } else { 0 };
        self.trace.push(PacketRecord {
            t_us: seg.t_us,
            dir: Direction::In,
            kind: PacketKind::Tcp {
                flags: seg.flags,
                options: seg.options.iter().filter(|o| !o.is_padding()).cloned().collect(),
            },
            seq,
            ack,
            window: seg.window,
            ttl: seg.ttl,
            len: seg.payload.len(),
        });
    }

    /// When the SYN that was answered went out: the last one before now (for the RTT).
    pub(super) fn last_syn_time(&self) -> u64 {
        self.trace
            .iter()
            .rev()
            .find(|p| p.dir == Direction::Out && p.flags() == Some(TcpFlags(TcpFlags::SYN)))
            .map_or(0, |p| p.t_us)
    }

    /// What the probe observed. Call once [`is_done`](Self::is_done) (or to give up early: a flow
    /// still connecting then reads as timed out, an established one as ended by our deadline).
    pub fn into_observation(self) -> Observation {
        let connect = self.connect.clone().unwrap_or(Connect::TimedOut);
        let last_packet = self.trace.last().map(|p| p.t_us);
        let kexinit = self.exchange.as_ref().and_then(|x| x.kexinit());
        let (end, mut timings, received, sent_ident, ident_scan) = match self.exchange {
            Some(mut x) => {
                let ident_scan = x.take_ident_scan();
                let (end, timings, received, sent_ident) = x.into_parts();
                (Some(end), timings, received, sent_ident, ident_scan)
            }
            None => {
                (None, Timings { closed: self.failed_at, ..Timings::default() }, Bytes::new(), false, None)
            }
        };
        if timings.closed.is_none() {
            timings.closed = last_packet;
        }
        // Wire order: a segment that arrived while we were answering the previous one is recorded
        // after our answer but carries its own (earlier) arrival time.
        let mut trace = if self.params.engine.trace { self.trace } else { Vec::new() };
        trace.sort_by_key(|p| p.t_us);
        Observation {
            remote: self.params.remote,
            local: Some(self.params.local),
            order: self.params.request.order,
            connect,
            end,
            timings,
            received,
            sent_ident,
            packets: trace,
            kexinit,
            ident_scan,
        }
    }

    /// What a probe saw, once its exchange is over and our close is out, while the flow goes on
    /// to complete the close: for a run that asked for no packet trace (see
    /// [`EngineConfig::trace`](crate::engine::EngineConfig::trace)), so its probe need not wait.
    /// `end` and the timings are final here (the exchange set them when it ended); the close
    /// that follows changes neither. `None` for a flow not closing, and for a hold (its end is
    /// the close's).
    pub(crate) fn closing_observation(&mut self) -> Option<Observation> {
        let probe = self.params.purpose == crate::engine::exchange::Purpose::Probe;
        if self.state != super::State::Closing || self.params.engine.trace || !probe {
            return None;
        }
        let x = self.exchange.as_mut()?;
        let end = x.end()?;
        let ident_scan = x.take_ident_scan();
        Some(Observation {
            remote: self.params.remote,
            local: Some(self.params.local),
            order: self.params.request.order,
            connect: Connect::Established,
            end: Some(end),
            timings: x.timings(),
            received: Bytes::copy_from_slice(x.received()),
            sent_ident: x.sent_ident(),
            packets: Vec::new(),
            kexinit: x.kexinit(),
            ident_scan,
        })
    }

    /// What a held flow saw up to its banner (the flow goes on): no end yet.
    pub(crate) fn held_observation(&self) -> Observation {
        let (timings, received, sent_ident) = match &self.exchange {
            Some(x) => (x.timings(), Bytes::copy_from_slice(x.received()), x.sent_ident()),
            None => (Timings::default(), Bytes::new(), false),
        };
        let mut trace = self.trace.clone();
        trace.sort_by_key(|p| p.t_us);
        Observation {
            remote: self.params.remote,
            local: Some(self.params.local),
            order: self.params.request.order,
            connect: Connect::Established,
            end: None,
            timings,
            received,
            sent_ident,
            packets: trace,
            kexinit: None,
            ident_scan: None,
        }
    }

    /// How and when (µs after the handshake) a held connection ended, once the flow is done.
    pub(crate) fn hold_end(&self) -> (End, u64) {
        match &self.exchange {
            Some(x) => {
                let t = x.timings();
                let after = t.closed.unwrap_or(0).saturating_sub(t.connected.unwrap_or(0));
                (x.end().unwrap_or(End::WeClosed), after)
            }
            None => (End::WeClosed, 0),
        }
    }
}
