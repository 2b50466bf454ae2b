//! The segments a flow takes in and gives out, and how what one event sends is merged.

use super::super::wire::{SeqNumber, TcpFlags, TcpOption};
use bytes::Bytes;

/// A segment that arrived for this flow, already matched to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// When it arrived, µs from the first SYN.
    pub t_us: u64,
    /// Control bits.
    pub flags: TcpFlags,
    /// Sequence number.
    pub seq: SeqNumber,
    /// Acknowledgement number.
    pub ack: SeqNumber,
    /// Window.
    pub window: u16,
    /// TTL or hop limit it arrived with (0 when unknown).
    pub ttl: u8,
    /// Options.
    pub options: Vec<TcpOption>,
    /// Payload.
    pub payload: Bytes,
}

/// A segment the flow wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    /// Control bits.
    pub flags: TcpFlags,
    /// Sequence number.
    pub seq: SeqNumber,
    /// Acknowledgement number (zero without ACK).
    pub ack: SeqNumber,
    /// Window.
    pub window: u16,
    /// Options.
    pub options: Vec<TcpOption>,
    /// Payload.
    pub payload: Bytes,
}

/// Merges what one event made us send into as few segments as TCP allows: a bare ACK into the
/// data segment after it (which carries the same acknowledgement), and a FIN into the data segment
/// it follows. After a banner that is one segment (`FPA`: the ACK of the banner, our ident, our
/// close) instead of three, as a kernel client's delayed ACK and corked close would send; each
/// segment saved is a trip through both TCP stacks.
pub(super) fn coalesce(out: &mut Vec<Outbound>) {
    let mut merged: Vec<Outbound> = Vec::with_capacity(out.len());
    for seg in out.drain(..) {
        if let Some(last) = merged.last_mut() {
            let last_is_bare_ack = last.flags == TcpFlags(TcpFlags::ACK) && last.payload.is_empty();
            if last_is_bare_ack
                && seg.flags.has(TcpFlags::ACK)
                && seg.ack == last.ack
                && !seg.flags.has(TcpFlags::RST)
            {
                *last = seg;
                continue;
            }
            let fin_follows_data = seg.flags == TcpFlags(TcpFlags::FIN | TcpFlags::ACK)
                && seg.payload.is_empty()
                && !last.payload.is_empty()
                && !last.flags.has(TcpFlags::FIN)
                && last.seq + last.payload.len() == seg.seq
                && last.ack == seg.ack;
            if fin_follows_data {
                last.flags = TcpFlags(last.flags.0 | TcpFlags::FIN);
                continue;
            }
        }
        merged.push(seg);
    }
    *out = merged;
}
