//! The identification exchange as an I/O-free machine: the one policy both engines follow.
//!
//! An engine owns the transport (a kernel socket, or the raw engine's user-space TCP) and feeds this
//! machine what happened on it: the handshake completed, bytes arrived, the server closed or reset,
//! the deadline passed, our ident went out. The machine answers with a [`Step`]: keep reading, send
//! our ident, finish (and whether our ident goes out first), or hold the connection open. At the end
//! it yields the facts of the exchange for the [`Observation`](crate::evidence::Observation).
//!
//! What it decides, and so what the two engines can no longer disagree on:
//! - **when our ident goes out**: right after the handshake ([`ProbeOrder::SendFirst`], as OpenSSH's
//!   `ssh` does) or once the server's line is complete ([`ProbeOrder::WaitForBanner`]); never for a
//!   hold, which must not look like a client that speaks;
//! - **when reading stops**: the server's ident line complete, bytes no SSH client would accept, the
//!   byte cap, the server's close or reset, or the banner deadline (a total one, counted from the
//!   handshake, so a server dribbling bytes cannot hold a probe);
//! - **how the exchange ended** ([`End`]): a reset found while sending our ident is the end even
//!   when the read that follows sees only an end of stream (the send took the error);
//! - **whether to read on for the server's KEXINIT** ([`Exchange::with_kexinit`]): once the ident is
//!   in (and ours sent), until one whole binary packet follows it, or its length shows it never can
//!   (a length that lies, more than the byte cap), or the server closes, or the same deadline. We
//!   never send a KEXINIT of ours, so no key exchange starts; dropbear's KEXINIT may come in the
//!   same read as its ident, and counts (docs/facts.md §1, §12).
//!
//! Times are microseconds on the engine's clock (from the start of the connect); the machine reads
//! no clock itself, so every path is a unit test over byte arrays.

use super::{BannerReader, Progress};
use crate::evidence::{End, ProbeOrder, Timings};
use crate::ident::Scan;
use crate::kexinit::{self, Frame, KexRead};

/// How long after the server's ident its KEXINIT is waited for, at most: OpenSSH sends it within
/// milliseconds of our ident (4.8 ms for 9.2, 25 ms for 10.0 on loopback: docs/facts.md §12), and
/// dropbear with its ident, so 2 s leaves room for any round trip.
pub(crate) const KEXINIT_WAIT_US: u64 = 2_000_000;
use bytes::Bytes;

/// What the engine should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Keep reading, until [`Exchange::deadline_us`] at the latest.
    Read,
    /// Send our ident, then keep reading.
    SendIdent,
    /// The exchange is over: send our ident first when `send_ident`, then close the connection as
    /// the run says (FIN or RST). [`Exchange::end`] says how it ended.
    Finish {
        /// Whether our ident is still to go out before the close.
        send_ident: bool,
    },
    /// The banner is in and the connection is to be held: send nothing, keep it open, and report
    /// when the server ends it ([`Exchange::on_eof`], [`Exchange::on_reset`]).
    Hold,
    /// Nothing more to do: the connection is gone (the server reset it).
    Gone,
}

/// Whether the exchange probes (and closes) or holds the connection once the banner is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// One exchange, then close.
    Probe,
    /// Read the banner, then keep the connection open without a word (a held unauthenticated
    /// connection, which counts against the server's MaxStartups).
    Hold,
}

/// One identification exchange on an established connection.
#[derive(Debug)]
pub struct Exchange {
    order: ProbeOrder,
    purpose: Purpose,
    banner: BannerReader,
    deadline_us: u64,
    timings: Timings,
    end: Option<End>,
    ident_queued: bool,
    sent_ident: bool,
    /// Sending our ident found the connection reset (the kernel engine's send took the error).
    reset_on_send: bool,
    holding: bool,
    /// Read on for the server's KEXINIT after its ident.
    want_kexinit: bool,
    /// Where the bytes after the server's ident start, once it is in (reading for the KEXINIT).
    kexinit_from: Option<usize>,
}

impl Exchange {
    /// A machine for a connection whose handshake completed at `connected_us`; the banner must be
    /// complete `banner_timeout_us` after that.
    pub fn new(
        order: ProbeOrder,
        purpose: Purpose,
        byte_cap: usize,
        connected_us: u64,
        banner_timeout_us: u64,
    ) -> Exchange {
        Exchange {
            order,
            purpose,
            banner: BannerReader::new(byte_cap),
            deadline_us: connected_us.saturating_add(banner_timeout_us),
            timings: Timings { connected: Some(connected_us), ..Timings::default() },
            end: None,
            ident_queued: false,
            sent_ident: false,
            reset_on_send: false,
            holding: false,
            want_kexinit: false,
            kexinit_from: None,
        }
    }

    /// The same machine, reading on for the server's KEXINIT after its ident when `yes` (a probe
    /// only: a hold never reads past the banner).
    pub fn with_kexinit(mut self, yes: bool) -> Exchange {
        self.want_kexinit = yes && self.purpose == Purpose::Probe;
        self
    }

    /// The first step, right after the handshake.
    pub fn start(&mut self) -> Step {
        if self.order == ProbeOrder::SendFirst && self.purpose == Purpose::Probe {
            self.ident_queued = true;
            Step::SendIdent
        } else {
            Step::Read
        }
    }

    /// When the banner must be complete, on the engine's clock. Not a limit while holding.
    pub fn deadline_us(&self) -> u64 {
        if self.holding {
            u64::MAX
        } else {
            self.deadline_us
        }
    }

    /// How many more bytes the machine takes: the rest of the byte cap. An engine that reads into
    /// its own buffer hands over no more than this (the raw engine acknowledges only what it took).
    pub fn room(&self) -> usize {
        self.banner.room()
    }

    /// The reader the server's bytes go into, for an engine that reads in place (no scratch
    /// buffer); call [`on_progress`](Self::on_progress) with what its read returned.
    pub fn reader(&mut self) -> &mut BannerReader {
        &mut self.banner
    }

    /// Bytes from the server, in order, at `now_us`.
    pub(crate) fn on_bytes(&mut self, now_us: u64, bytes: &[u8]) -> Step {
        if bytes.is_empty() || self.is_over() {
            return self.current();
        }
        if self.holding {
            // A held connection's later bytes (dropbear's KEXINIT) are not evidence: discard.
            return Step::Hold;
        }
        let progress = self.banner.push(bytes);
        self.on_progress(now_us, progress)
    }

    /// What a read straight into [`reader`](Self::reader) found (a read of at least one byte).
    pub fn on_progress(&mut self, now_us: u64, progress: Progress) -> Step {
        if self.is_over() {
            return self.current();
        }
        self.timings.first_byte.get_or_insert(now_us);
        if let Some(from) = self.kexinit_from {
            return self.on_kexinit_bytes(now_us, from, false);
        }
        match progress {
            Progress::Ident if self.want_kexinit => self.on_ident_then_kexinit(now_us),
            Progress::Ident => {
                self.timings.ident = Some(now_us);
                match self.purpose {
                    Purpose::Hold => {
                        self.holding = true;
                        Step::Hold
                    }
                    Purpose::Probe => {
                        let send_ident = self.order == ProbeOrder::WaitForBanner && !self.ident_queued;
                        self.ident_queued |= send_ident;
                        self.finish(now_us, End::WeClosed, send_ident)
                    }
                }
            }
            Progress::NotSsh => self.finish(now_us, End::WeClosed, false),
            Progress::NeedMore if self.banner.is_full() => self.finish(now_us, End::ByteCap, false),
            Progress::NeedMore => Step::Read,
        }
    }

    /// The ident is in and the KEXINIT is wanted: send ours if it is still to go out, and read on
    /// (the packet may already be here, in the ident's read).
    fn on_ident_then_kexinit(&mut self, now_us: u64) -> Step {
        self.timings.ident = Some(now_us);
        let from = match self.banner.scanned() {
            Some(Scan::Ident(line)) => line.end_offset,
            // An SSH-1 server has no binary packet for us: done, as without the KEXINIT.
            _ => return self.finish(now_us, End::WeClosed, false),
        };
        self.kexinit_from = Some(from);
        // A server that will send its KEXINIT sends it at once (after our ident for OpenSSH); one that
        // never will (an old or odd server, a multiplexer, the lab) must not hold the probe until
        // the banner deadline.
        self.deadline_us = self.deadline_us.min(now_us.saturating_add(KEXINIT_WAIT_US));
        let send_ident = self.order == ProbeOrder::WaitForBanner && !self.ident_queued;
        self.ident_queued |= send_ident;
        match self.on_kexinit_bytes(now_us, from, send_ident) {
            Step::Read if send_ident => Step::SendIdent,
            step => step,
        }
    }

    /// Bytes after the ident: finish once one whole packet is in or cannot be.
    fn on_kexinit_bytes(&mut self, now_us: u64, from: usize, send_ident: bool) -> Step {
        let after = &self.banner.bytes()[from..];
        match kexinit::frame(after, self.kexinit_room(from)) {
            Frame::Whole { .. } | Frame::Invalid(_) => self.finish(now_us, End::WeClosed, send_ident),
            Frame::NeedMore { .. } if self.banner.is_full() => self.finish(now_us, End::ByteCap, send_ident),
            Frame::NeedMore { .. } => Step::Read,
        }
    }

    /// How many bytes after the ident the byte cap leaves.
    fn kexinit_room(&self, from: usize) -> usize {
        (self.banner.bytes().len() + self.banner.room()).saturating_sub(from)
    }

    /// The server's KEXINIT, or why there is none, when it was wanted and the server's ident came
    /// (`None` otherwise). Judged on the bytes as they are: call once the exchange is over.
    pub fn kexinit(&self) -> Option<KexRead> {
        let from = self.kexinit_from?;
        let after = &self.banner.bytes()[from..];
        Some(KexRead::from_result(kexinit::parse_after_ident(after, self.kexinit_room(from))))
    }

    /// The server closed its side (end of stream) at `now_us`.
    pub fn on_eof(&mut self, now_us: u64) -> Step {
        let end = if self.reset_on_send { End::Rst } else { End::Fin };
        self.finish(now_us, end, false)
    }

    /// The server reset the connection at `now_us`. Every byte that arrived before it must have
    /// been handed over first: a refusal line can precede the reset (docs/facts.md §2).
    pub fn on_reset(&mut self, now_us: u64) -> Step {
        if self.end.is_none() {
            self.end = Some(End::Rst);
            self.timings.closed = Some(now_us);
        }
        Step::Gone
    }

    /// The deadline passed at `now_us` (ignored while holding, or before the deadline).
    pub(crate) fn on_deadline(&mut self, now_us: u64) -> Step {
        if self.holding || self.is_over() || now_us < self.deadline_us {
            return self.current();
        }
        self.finish(now_us, End::Timeout, false)
    }

    /// The run was stopped at `now_us`: the exchange ends with what came so far (a held
    /// connection too: its holder is going away).
    pub(crate) fn on_interrupt(&mut self, now_us: u64) -> Step {
        self.finish(now_us, End::Interrupted, false)
    }

    /// Our ident went out in full.
    pub(crate) fn on_ident_sent(&mut self) {
        self.sent_ident = true;
    }

    /// Sending our ident failed; `reset` when the error was the server's reset (ECONNRESET).
    pub(crate) fn on_ident_failed(&mut self, reset: bool) {
        self.reset_on_send |= reset;
    }

    /// Whether the exchange has ended.
    pub(crate) fn is_over(&self) -> bool {
        self.end.is_some()
    }

    /// Whether the banner is in and the connection is being held.
    pub(crate) fn is_holding(&self) -> bool {
        self.holding && self.end.is_none()
    }

    /// How it ended, once it has.
    pub fn end(&self) -> Option<End> {
        self.end
    }

    /// The milestones so far.
    pub fn timings(&self) -> Timings {
        self.timings
    }

    /// Whether our ident went out in full.
    pub fn sent_ident(&self) -> bool {
        self.sent_ident
    }

    /// The bytes kept so far.
    pub fn received(&self) -> &[u8] {
        self.banner.bytes()
    }

    /// Takes the ident scan the reader made of the bytes (`None` when it found no more than a
    /// partial line), for [`Observation::ident_scan`](crate::evidence::Observation): the classifier
    /// then parses nothing again.
    pub(crate) fn take_ident_scan(&mut self) -> Option<Scan> {
        self.banner.take_scanned()
    }

    /// The facts: how it ended (`Timeout` if it had not: an engine giving up), the milestones and
    /// the bytes kept.
    pub(crate) fn into_parts(self) -> (End, Timings, Bytes, bool) {
        (self.end.unwrap_or(End::Timeout), self.timings, self.banner.into_bytes(), self.sent_ident)
    }

    fn finish(&mut self, now_us: u64, end: End, send_ident: bool) -> Step {
        if self.end.is_some() {
            return self.current();
        }
        self.end = Some(end);
        self.timings.closed = Some(now_us);
        self.holding = false;
        Step::Finish { send_ident }
    }

    fn current(&self) -> Step {
        match self.end {
            Some(End::Rst) => Step::Gone,
            Some(_) => Step::Finish { send_ident: false },
            None if self.holding => Step::Hold,
            None => Step::Read,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: usize = 64;

    fn probe(order: ProbeOrder) -> Exchange {
        Exchange::new(order, Purpose::Probe, CAP, 100, 5_000)
    }

    #[test]
    fn wait_for_banner_sends_our_ident_once_the_line_is_complete() {
        let mut x = probe(ProbeOrder::WaitForBanner);
        assert_eq!(x.start(), Step::Read);
        assert_eq!(x.on_bytes(200, b"SSH-2.0-Open"), Step::Read);
        assert_eq!(x.on_bytes(300, b"SSH_9.2\r\n"), Step::Finish { send_ident: true });
        x.on_ident_sent();
        let (end, t, bytes, sent) = x.into_parts();
        assert_eq!((end, sent), (End::WeClosed, true));
        assert_eq!(
            (t.connected, t.first_byte, t.ident, t.closed),
            (Some(100), Some(200), Some(300), Some(300))
        );
        assert_eq!(&bytes[..], b"SSH-2.0-OpenSSH_9.2\r\n");
    }

    #[test]
    fn send_first_speaks_at_once_and_not_again() {
        let mut x = probe(ProbeOrder::SendFirst);
        assert_eq!(x.start(), Step::SendIdent);
        x.on_ident_sent();
        assert_eq!(x.on_bytes(400, b"SSH-2.0-x\r\n"), Step::Finish { send_ident: false });
        assert_eq!(x.into_parts().0, End::WeClosed);
    }

    #[test]
    fn a_silent_close_is_a_fin_and_a_reset_found_by_sending_is_a_reset() {
        let mut x = probe(ProbeOrder::WaitForBanner);
        x.start();
        assert_eq!(x.on_eof(5_000_100), Step::Finish { send_ident: false });
        assert_eq!(x.into_parts().0, End::Fin);

        let mut x = probe(ProbeOrder::SendFirst);
        x.start();
        x.on_ident_failed(true);
        assert_eq!(x.on_eof(200), Step::Finish { send_ident: false });
        let (end, _, bytes, sent) = x.into_parts();
        assert_eq!((end, bytes.len(), sent), (End::Rst, 0, false));
    }

    #[test]
    fn a_refusal_line_before_the_reset_is_kept() {
        let mut x = probe(ProbeOrder::SendFirst);
        x.start();
        assert_eq!(x.on_bytes(150, b"Exceeded MaxStartups\r\n"), Step::Read);
        assert_eq!(x.on_reset(160), Step::Gone);
        let (end, t, bytes, _) = x.into_parts();
        assert_eq!((end, t.closed), (End::Rst, Some(160)));
        assert_eq!(&bytes[..], b"Exceeded MaxStartups\r\n");
    }

    #[test]
    fn not_ssh_and_the_byte_cap_end_the_read() {
        let mut x = probe(ProbeOrder::WaitForBanner);
        x.start();
        assert_eq!(x.on_bytes(200, b"HTTP/1.1 400 Bad Request\r\n\0"), Step::Finish { send_ident: false });
        assert_eq!(x.end(), Some(End::WeClosed));

        let mut x = probe(ProbeOrder::WaitForBanner);
        x.start();
        assert_eq!(x.on_bytes(200, &[b'A'; 100]), Step::Finish { send_ident: false });
        assert_eq!(x.end(), Some(End::ByteCap));
        assert_eq!(x.received().len(), CAP);
    }

    #[test]
    fn the_deadline_counts_from_the_handshake_and_is_total() {
        let mut x = probe(ProbeOrder::WaitForBanner);
        x.start();
        assert_eq!(x.deadline_us(), 5_100);
        assert_eq!(x.on_bytes(1_000, b"SSH-"), Step::Read);
        assert_eq!(x.on_deadline(5_099), Step::Read);
        assert_eq!(x.on_deadline(5_100), Step::Finish { send_ident: false });
        let (end, t, bytes, _) = x.into_parts();
        assert_eq!(
            (end, t.first_byte, t.closed, &bytes[..]),
            (End::Timeout, Some(1_000), Some(5_100), &b"SSH-"[..])
        );
    }

    #[test]
    fn a_hold_reads_the_banner_says_nothing_and_reports_the_servers_end() {
        let mut x = Exchange::new(ProbeOrder::SendFirst, Purpose::Hold, CAP, 100, 5_000);
        // Even with send-first configured, a hold never speaks.
        assert_eq!(x.start(), Step::Read);
        assert_eq!(x.on_bytes(900, b"SSH-2.0-dropbear\r\n"), Step::Hold);
        assert!(x.is_holding());
        assert_eq!(x.deadline_us(), u64::MAX);
        assert_eq!(x.on_deadline(10_000_000), Step::Hold);
        // Dropbear's KEXINIT after its line: not kept.
        assert_eq!(x.on_bytes(950, b"\0\0\x01\x2c binary"), Step::Hold);
        assert_eq!(x.on_eof(120_000_000), Step::Finish { send_ident: false });
        let (end, t, bytes, sent) = x.into_parts();
        assert_eq!((end, t.ident, t.closed, sent), (End::Fin, Some(900), Some(120_000_000), false));
        assert_eq!(&bytes[..], b"SSH-2.0-dropbear\r\n");
    }

    #[test]
    fn a_hold_refused_before_its_banner_ends_like_a_probe() {
        let mut x = Exchange::new(ProbeOrder::WaitForBanner, Purpose::Hold, CAP, 100, 5_000);
        x.start();
        assert_eq!(x.on_bytes(150, b"Not allowed at this time\r\n"), Step::Read);
        assert_eq!(x.on_eof(160), Step::Finish { send_ident: false });
        assert!(!x.is_holding());
        assert_eq!(x.end(), Some(End::Fin));
    }

    const KEXINIT: &[u8] = include_bytes!("../../tests/fixtures/kexinit/openssh10.bin");
    const DROPBEAR: &[u8] = include_bytes!("../../tests/fixtures/kexinit/dropbear.bin");

    fn kex_probe(order: ProbeOrder, cap: usize) -> Exchange {
        Exchange::new(order, Purpose::Probe, cap, 100, 5_000).with_kexinit(true)
    }

    fn split_ident(capture: &[u8]) -> (&[u8], &[u8]) {
        capture.split_at(capture.iter().position(|&b| b == b'\n').unwrap() + 1)
    }

    #[test]
    fn with_kexinit_our_ident_goes_out_then_one_whole_packet_is_read() {
        let (ident, packet) = split_ident(KEXINIT);
        let mut x = kex_probe(ProbeOrder::WaitForBanner, 8192);
        assert_eq!(x.start(), Step::Read);
        assert_eq!(x.on_bytes(200, ident), Step::SendIdent);
        x.on_ident_sent();
        // Split across segments: the length, then the rest in two pieces.
        assert_eq!(x.on_bytes(300, &packet[..3]), Step::Read);
        assert_eq!(x.on_bytes(310, &packet[3..500]), Step::Read);
        assert_eq!(x.on_bytes(320, &packet[500..]), Step::Finish { send_ident: false });
        let k = x.kexinit().unwrap();
        assert_eq!(k.kexinit().unwrap().preferred_kex(), Some("mlkem768x25519-sha256"));
        let (end, t, bytes, sent) = x.into_parts();
        assert_eq!(
            (end, t.ident, t.closed, bytes.len(), sent),
            (End::WeClosed, Some(200), Some(320), KEXINIT.len(), true)
        );
    }

    #[test]
    fn a_kexinit_that_never_comes_is_waited_for_briefly_not_until_the_banner_deadline() {
        let (ident, _) = split_ident(KEXINIT);
        let mut x =
            Exchange::new(ProbeOrder::SendFirst, Purpose::Probe, 8192, 100, 30_000_000).with_kexinit(true);
        assert_eq!(x.deadline_us(), 30_000_100);
        x.start();
        x.on_ident_sent();
        assert_eq!(x.on_bytes(1_000, ident), Step::Read);
        assert_eq!(x.deadline_us(), 1_000 + KEXINIT_WAIT_US);
        assert_eq!(x.on_deadline(1_000 + KEXINIT_WAIT_US), Step::Finish { send_ident: false });
        assert!(x.kexinit().is_some(), "the missing packet is a detail of its own");
        // A banner deadline nearer than the wait stays.
        let mut x = Exchange::new(ProbeOrder::SendFirst, Purpose::Probe, 8192, 100, 1_500).with_kexinit(true);
        x.start();
        x.on_ident_sent();
        x.on_bytes(1_000, ident);
        assert_eq!(x.deadline_us(), 1_600);
    }

    #[test]
    fn dropbears_kexinit_in_the_idents_read_finishes_at_once() {
        let mut x = kex_probe(ProbeOrder::WaitForBanner, 8192);
        x.start();
        // Our ident still goes out before the close, as without the KEXINIT.
        assert_eq!(x.on_bytes(200, DROPBEAR), Step::Finish { send_ident: true });
        assert!(x.kexinit().unwrap().kexinit().unwrap().strict_kex());
        let mut x = kex_probe(ProbeOrder::SendFirst, 8192);
        assert_eq!(x.start(), Step::SendIdent);
        assert_eq!(x.on_bytes(200, DROPBEAR), Step::Finish { send_ident: false });
    }

    #[test]
    fn with_kexinit_a_close_a_timeout_or_a_lying_length_end_it_with_a_detail() {
        let (ident, packet) = split_ident(KEXINIT);
        let mut x = kex_probe(ProbeOrder::SendFirst, 8192);
        x.start();
        assert_eq!(x.on_bytes(200, ident), Step::Read);
        assert_eq!(x.on_eof(300), Step::Finish { send_ident: false });
        assert_eq!(x.kexinit(), Some(KexRead::Failed(kexinit::KexError::NoPacket)));
        assert_eq!(x.end(), Some(End::Fin));

        let mut x = kex_probe(ProbeOrder::SendFirst, 8192);
        x.start();
        x.on_bytes(200, ident);
        x.on_bytes(300, &packet[..40]);
        assert_eq!(x.on_deadline(5_100), Step::Finish { send_ident: false });
        assert!(matches!(x.kexinit(), Some(KexRead::Failed(kexinit::KexError::Truncated { have: 40, .. }))));

        // A length that lies ends the read at once.
        let mut x = kex_probe(ProbeOrder::SendFirst, 8192);
        x.start();
        x.on_bytes(200, ident);
        assert_eq!(x.on_bytes(300, &[0x7f, 0xff, 0xff, 0xf8, 4, 20]), Step::Finish { send_ident: false });
        assert!(matches!(x.kexinit(), Some(KexRead::Failed(kexinit::KexError::LengthTooLarge { .. }))));
        assert_eq!(x.end(), Some(End::WeClosed));

        // 35,000 bytes against a cap of 8 KiB: named from the length, nothing more read.
        let mut x = kex_probe(ProbeOrder::SendFirst, 8192);
        x.start();
        x.on_bytes(200, ident);
        assert_eq!(x.on_bytes(300, &34_996u32.to_be_bytes()), Step::Finish { send_ident: false });
        let room = 8192 - ident.len();
        assert_eq!(x.kexinit(), Some(KexRead::Failed(kexinit::KexError::ExceedsCap { bytes: 35_000, room })));
    }

    #[test]
    fn without_kexinit_or_for_a_hold_nothing_changes() {
        let mut x = probe(ProbeOrder::WaitForBanner);
        x.start();
        assert_eq!(x.on_bytes(200, &DROPBEAR[..26]), Step::Finish { send_ident: true });
        assert_eq!(x.kexinit(), None);
        let mut x =
            Exchange::new(ProbeOrder::WaitForBanner, Purpose::Hold, 8192, 100, 5_000).with_kexinit(true);
        x.start();
        assert_eq!(x.on_bytes(200, DROPBEAR), Step::Hold);
        assert_eq!(x.kexinit(), None);
    }

    proptest::proptest! {
        /// However the server's bytes are cut into segments, the exchange stops at the same byte
        /// with the same KEXINIT (the engine hands over what arrived, up to the machine's room).
        #[test]
        fn any_segmentation_reads_the_same_kexinit(cuts in proptest::collection::vec(1usize..1200, 0..12), send_first: bool) {
            let order = if send_first { ProbeOrder::SendFirst } else { ProbeOrder::WaitForBanner };
            for capture in [KEXINIT, DROPBEAR] {
                let mut whole = kex_probe(order, 8192);
                whole.start();
                whole.on_bytes(200, capture);
                let mut x = kex_probe(order, 8192);
                x.start();
                let mut cuts = cuts.clone();
                cuts.sort_unstable();
                let mut at = 0;
                for cut in cuts.into_iter().chain([capture.len()]) {
                    let cut = cut.min(capture.len());
                    if cut > at && !x.is_over() {
                        let take = (cut - at).min(x.room());
                        x.on_bytes(300, &capture[at..at + take]);
                        at += take;
                    }
                }
                proptest::prop_assert!(x.is_over());
                proptest::prop_assert_eq!(x.kexinit(), whole.kexinit());
                proptest::prop_assert_eq!(x.received(), capture);
            }
        }
    }

    #[test]
    fn an_interrupt_keeps_what_came_so_far() {
        let mut x = probe(ProbeOrder::WaitForBanner);
        x.start();
        assert_eq!(x.on_bytes(300, b"SSH-2.0-Open"), Step::Read);
        assert_eq!(x.on_interrupt(900), Step::Finish { send_ident: false });
        assert_eq!(x.on_deadline(6_000), Step::Finish { send_ident: false });
        let (end, t, bytes, sent) = x.into_parts();
        assert_eq!(
            (end, t.connected, t.first_byte, t.closed, sent),
            (End::Interrupted, Some(100), Some(300), Some(900), false)
        );
        assert_eq!(&bytes[..], b"SSH-2.0-Open");
    }

    #[test]
    fn events_after_the_end_change_nothing() {
        let mut x = probe(ProbeOrder::WaitForBanner);
        x.start();
        x.on_eof(200);
        assert_eq!(x.on_bytes(300, b"late"), Step::Finish { send_ident: false });
        assert_eq!(x.on_reset(400), Step::Gone);
        let (end, t, bytes, _) = x.into_parts();
        assert_eq!((end, t.closed, bytes.len()), (End::Fin, Some(200), 0));
    }
}
