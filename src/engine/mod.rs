//! Engines: the I/O that turns a target address into an [`Observation`].
//!
//! An engine is the only door to the network: every command and experiment (probe, scan, diagnose,
//! limits, the holder, the lab's checks) reaches servers through the [`Engine`] trait, so each runs on
//! either engine. An engine performs one identification exchange per [`ProbeRequest`] (or holds a
//! connection open, [`Engine::hold`]) and reports what it saw, nothing more: classification happens
//! later, in [`crate::outcome`], so every engine feeds the same classifier and must agree with the
//! others on the same server behaviour. The policy of the exchange itself (when our ident goes out,
//! when reading stops, how it ended) is one I/O-free machine, [`exchange::Exchange`], that both drive.
//!
//! - [`any`]: either engine behind one type, for commands that let the user choose.
//! - [`exchange`]: the identification exchange as a pure state machine. No I/O.
//! - [`connect`]: kernel sockets through tokio. Unprivileged, the default.
//! - [`raw`]: a user-space TCP client over raw sockets, with a packet trace. Needs CAP_NET_RAW (and
//!   CAP_NET_ADMIN for its firewall rule).

pub mod any;
pub mod connect;
pub mod exchange;
pub mod raw;
pub mod trace;

use crate::evidence::{CloseMode, End, Observation, ProbeOrder};
use crate::ident::{self, Scan};
use bytes::{Bytes, BytesMut};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Our identification line when the user does not choose one. Never starts with `Probe-` and never
/// mentions `SSH_Version_Mapper`: sshd treats those as scanners and closes silently (docs/facts.md §1).
pub const DEFAULT_IDENT: &str = concat!("SSH-2.0-sshprobe_", env!("CARGO_PKG_VERSION"));

/// The most bytes a probe reads from one connection.
pub const DEFAULT_BYTE_CAP: usize = 8 * 1024;

/// How long a TCP handshake may take in experiments and the exporter (`diagnose`, `limits`,
/// `serve`): a dropped SYN is retried at 1 and 2 s, so 3 s sees two retries.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long the server's ident may take in experiments and the exporter: longer than Debian's 5-s
/// TCP-wrappers delay (docs/facts.md §3), so that denial is seen as a close, not a timeout.
pub const DEFAULT_BANNER_TIMEOUT: Duration = Duration::from_secs(8);

/// The same two for `probe` and [`ProbeRequest::new`]: a scan waits longer, since it makes one
/// probe per target and no second try.
pub const SCAN_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The banner deadline for `probe` and [`ProbeRequest::new`].
pub const SCAN_BANNER_TIMEOUT: Duration = Duration::from_secs(10);

/// What is the same for every probe of a run: how much is read and how connections end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// The most bytes read from one connection.
    pub byte_cap: usize,
    /// How we close once done.
    pub close: CloseMode,
    /// Whether the raw engine's observations carry their packet trace (`packets`), to the end of
    /// the close: each probe then waits for the close to complete (the server's FIN and our last
    /// ACK are in the trace). Without it a probe's observation comes as soon as the exchange is
    /// over and our FIN or RST is out, with no trace, and the engine completes the close on its
    /// own; `end` and the timings are the same either way (the exchange sets them). The connect
    /// engine has no trace and ignores it.
    pub trace: bool,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig { byte_cap: DEFAULT_BYTE_CAP, close: CloseMode::Fin, trace: true }
    }
}

/// Our identification line with its CR LF.
pub fn ident_line(text: &str) -> Bytes {
    Bytes::from(format!("{text}\r\n"))
}

/// One probe to make: where to, from which local address, and how this exchange goes. Everything
/// that varies between the probes of one experiment is here (diagnose alternates the order, limits
/// spreads sources), so one engine serves every experiment.
///
/// ```
/// # use sshprobe::engine::ProbeRequest;
/// # use sshprobe::evidence::ProbeOrder;
/// # use std::time::Duration;
/// let request = ProbeRequest::new("127.0.0.1:22".parse().unwrap())
///     .order(ProbeOrder::SendFirst)
///     .timeouts(Duration::from_secs(3), Duration::from_secs(8));
/// assert_eq!(request.order, ProbeOrder::SendFirst);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeRequest {
    /// The server's address.
    pub remote: SocketAddr,
    /// The local address to bind, or `None` for the kernel's choice.
    pub source: Option<IpAddr>,
    /// Which side speaks first.
    pub order: ProbeOrder,
    /// Our identification line, CR LF included.
    pub ident: Bytes,
    /// How long the TCP handshake may take.
    pub connect_timeout: Duration,
    /// How long after connecting the server's ident may take to arrive in full: a total deadline,
    /// not a per-read one, so a server dribbling bytes cannot hold a probe forever.
    pub banner_timeout: Duration,
    /// The byte cap and close mode for this probe, when it differs from the engine's own
    /// ([`Engine`]s are opened with an [`EngineConfig`]; the exporter's modules each have theirs).
    pub config: Option<EngineConfig>,
    /// Whether to read on for the server's KEXINIT after the exchange (never sending ours): off by
    /// default, as it costs a round trip more with OpenSSH, which sends it only after our ident.
    pub kex: bool,
    /// Ends the probe early when it fires (Ctrl-C, a run's time limit), keeping what it saw so far.
    pub interrupt: Option<Interrupt>,
}

/// A signal that ends probes early, each with what it saw so far ([`End::Interrupted`]): the
/// receiving end of a run's stop switch.
///
/// [`End::Interrupted`]: crate::evidence::End::Interrupted
#[derive(Debug, Clone)]
pub struct Interrupt(tokio::sync::watch::Receiver<bool>);

impl Interrupt {
    /// An interrupt that fires once `rx` holds `true`.
    pub fn new(rx: tokio::sync::watch::Receiver<bool>) -> Interrupt {
        Interrupt(rx)
    }

    /// Returns once fired (at once if it has).
    pub async fn fired(&self) {
        let mut rx = self.0.clone();
        if rx.wait_for(|&fired| fired).await.is_err() {
            // The switch is gone without firing: it never will.
            std::future::pending::<()>().await;
        }
    }
}

impl PartialEq for Interrupt {
    fn eq(&self, other: &Interrupt) -> bool {
        self.0.same_channel(&other.0)
    }
}

impl Eq for Interrupt {}

impl ProbeRequest {
    /// A probe of `remote` from the kernel's choice of address, waiting for the banner, with our
    /// default ident and the scan's timeouts ([`SCAN_CONNECT_TIMEOUT`], [`SCAN_BANNER_TIMEOUT`]).
    pub fn new(remote: SocketAddr) -> ProbeRequest {
        ProbeRequest {
            remote,
            source: None,
            order: ProbeOrder::WaitForBanner,
            ident: ident_line(DEFAULT_IDENT),
            connect_timeout: SCAN_CONNECT_TIMEOUT,
            banner_timeout: SCAN_BANNER_TIMEOUT,
            config: None,
            kex: false,
            interrupt: None,
        }
    }

    /// With this byte cap and close mode instead of the engine's.
    pub fn config(mut self, config: EngineConfig) -> ProbeRequest {
        self.config = Some(config);
        self
    }

    /// The byte cap and close mode this probe uses on an engine opened with `engine`.
    pub(crate) fn config_on(&self, engine: &EngineConfig) -> EngineConfig {
        self.config.unwrap_or(*engine)
    }

    /// The same probe to `remote` from `source`: what a run changes between its probes.
    pub fn to(&self, remote: SocketAddr, source: Option<IpAddr>) -> ProbeRequest {
        ProbeRequest { remote, source, ..self.clone() }
    }

    /// From `source` (`None`: the kernel's choice).
    pub fn source(mut self, source: Option<IpAddr>) -> ProbeRequest {
        self.source = source;
        self
    }

    /// With this probe order.
    pub fn order(mut self, order: ProbeOrder) -> ProbeRequest {
        self.order = order;
        self
    }

    /// With this identification line (CR LF included: see [`ident_line`]).
    pub fn ident(mut self, ident: Bytes) -> ProbeRequest {
        self.ident = ident;
        self
    }

    /// Reading the server's KEXINIT after the exchange, or not.
    pub fn kex(mut self, yes: bool) -> ProbeRequest {
        self.kex = yes;
        self
    }

    /// Ended early, with what it saw, when `interrupt` fires.
    pub fn interrupt(mut self, interrupt: Interrupt) -> ProbeRequest {
        self.interrupt = Some(interrupt);
        self
    }

    /// With these connect and banner timeouts.
    pub fn timeouts(mut self, connect: Duration, banner: Duration) -> ProbeRequest {
        self.connect_timeout = connect;
        self.banner_timeout = banner;
        self
    }
}

/// Something that can perform identification exchanges: the only door to the network for every
/// command and experiment.
pub trait Engine: Send + Sync + 'static {
    /// A connection held open by [`hold`](Self::hold).
    type Held: Held;

    /// Performs one exchange and reports what it saw. Never fails: every failure is an observation.
    fn probe(&self, request: ProbeRequest) -> impl Future<Output = Observation> + Send;

    /// Opens a connection, reads the server's banner and keeps the connection open without sending
    /// a byte: an unauthenticated connection that counts against the server's MaxStartups until it
    /// is released (dropped) or the server ends it (LoginGraceTime). The request's order is ignored:
    /// a hold never speaks. When no banner came, the observation says what happened instead.
    fn hold(&self, request: ProbeRequest) -> impl Future<Output = Result<Self::Held, Observation>> + Send;

    /// For an engine of kernel sockets: its configuration, so that a scan can drive its probes in
    /// one event loop of its own ([`crate::scan`]) rather than through [`probe`](Self::probe) per
    /// target. `None` (the default): scans go through `probe`.
    fn kernel_sockets(&self) -> Option<EngineConfig> {
        None
    }
}

/// A connection an [`Engine`] holds open. Dropping it releases the connection at once (closed as the
/// engine's [`EngineConfig::close`] says; the raw engine resets it).
pub trait Held: Send + 'static {
    /// What the exchange saw up to the banner.
    fn observation(&self) -> &Observation;

    /// Waits until the server ends the connection (or the engine stops) and says how and when.
    fn ended(&mut self) -> impl Future<Output = HoldEnd> + Send;
}

/// How and when a held connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldEnd {
    /// How: `Fin` or `Rst` from the server, `WeClosed` when the engine stopped first.
    pub end: End,
    /// How long after the handshake.
    pub after: Duration,
}

/// The server's bytes as a probe collects them: capped at the byte cap, and scanned for the ident line
/// only when a line can have ended (a LF or a NUL arrived). Every engine feeds its bytes through one of
/// these, so all of them stop at the same byte for the same reason.
#[derive(Debug)]
pub struct BannerReader {
    received: BytesMut,
    cap: usize,
    /// The scan's answer once it is more than `NeedMore`: kept, since the answer for a prefix
    /// never changes with more bytes, and handed to the classifier so the bytes are parsed once.
    /// Boxed: a probe in flight carries a pointer, not the parsed line.
    scanned: Option<Box<Scan>>,
}

/// What the bytes received so far call for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// No verdict yet: keep reading, unless the cap is reached ([`BannerReader::is_full`]).
    NeedMore,
    /// The server's ident line (SSH-2 or SSH-1 only) is complete: send ours if we waited, then close.
    Ident,
    /// No SSH client would accept these bytes: close.
    NotSsh,
}

impl BannerReader {
    /// An empty reader keeping at most `cap` bytes.
    pub fn new(cap: usize) -> BannerReader {
        BannerReader { received: BytesMut::with_capacity(cap.min(512)), cap, scanned: None }
    }

    /// How many more bytes it takes.
    pub fn room(&self) -> usize {
        self.cap.saturating_sub(self.received.len())
    }

    /// Whether the cap is reached.
    pub fn is_full(&self) -> bool {
        self.room() == 0
    }

    /// The bytes kept so far.
    pub fn bytes(&self) -> &[u8] {
        &self.received
    }

    /// Appends the first [`room`](Self::room) bytes of `chunk` (the rest is dropped) and judges the
    /// whole.
    pub fn push(&mut self, chunk: &[u8]) -> Progress {
        let before = self.received.len();
        let taken = &chunk[..chunk.len().min(self.room())];
        self.received.extend_from_slice(taken);
        self.judge(before)
    }

    /// Reads once from `reader` straight into the kept bytes (at most [`room`](Self::room)), and
    /// judges the whole: `(0, NeedMore)` at end of stream. No scratch buffer, so none sits in the
    /// state of every probe in flight (docs/performance.md: 4 KiB of a probe's 5 KiB).
    pub(crate) async fn read_from<R: tokio::io::AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
    ) -> std::io::Result<(usize, Progress)> {
        use bytes::BufMut;
        use tokio::io::AsyncReadExt;
        let before = self.received.len();
        let room = self.room();
        let n = reader.read_buf(&mut (&mut self.received).limit(room)).await?;
        Ok((n, if n == 0 { Progress::NeedMore } else { self.judge(before) }))
    }

    /// Reads once from the non-blocking descriptor `fd` straight into the kept bytes (at most
    /// [`room`](Self::room), in steps of at most 512 bytes of spare capacity) and judges the whole:
    /// `(n, progress, filled)`, `filled` when the read took all it asked for (more may be queued),
    /// `(0, NeedMore, false)` at end of stream.
    pub(crate) fn read_fd(&mut self, fd: std::os::fd::RawFd) -> std::io::Result<(usize, Progress, bool)> {
        let before = self.received.len();
        let room = self.room();
        if self.received.capacity() == before {
            self.received.reserve(room.min(512));
        }
        let spare = self.received.spare_capacity_mut();
        let want = spare.len().min(room);
        // SAFETY: `want` bytes of spare capacity are writable; read(2) initialises the first `n`.
        let n = unsafe { libc::read(fd, spare.as_mut_ptr().cast(), want) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = n as usize;
        // SAFETY: read(2) initialised these `n` bytes, within the capacity.
        unsafe { self.received.set_len(before + n) };
        Ok((n, if n == 0 { Progress::NeedMore } else { self.judge(before) }, n > 0 && n == want))
    }

    /// Judges the bytes, scanning only when the ones from `new_from` on can have ended a line, and
    /// never again once the scan has said more than `NeedMore` (bytes after the ident, a KEXINIT,
    /// do not change it: [`ident::scan`]).
    fn judge(&mut self, new_from: usize) -> Progress {
        if self.scanned.is_none() {
            let new = &self.received[new_from..];
            if !new.contains(&b'\n') && !new.contains(&0) {
                return Progress::NeedMore;
            }
            match ident::scan(&self.received) {
                Scan::NeedMore => return Progress::NeedMore,
                scan => self.scanned = Some(Box::new(scan)),
            }
        }
        match self.scanned.as_deref() {
            Some(Scan::Ident(_) | Scan::Ssh1Only(_)) => Progress::Ident,
            Some(Scan::NotSsh(_)) => Progress::NotSsh,
            Some(Scan::NeedMore) | None => Progress::NeedMore,
        }
    }

    /// The scan's answer on the bytes kept, once it is more than `NeedMore`.
    pub fn scanned(&self) -> Option<&Scan> {
        self.scanned.as_deref()
    }

    /// Takes the scan's answer, for [`Observation::ident_scan`](crate::evidence::Observation).
    pub fn take_scanned(&mut self) -> Option<Scan> {
        self.scanned.take().map(|scan| *scan)
    }

    /// The bytes kept.
    pub fn into_bytes(self) -> Bytes {
        self.received.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banner_reader_scans_at_line_ends_and_caps() {
        let mut r = BannerReader::new(64);
        assert_eq!(r.push(b"SSH-2.0-Open"), Progress::NeedMore);
        assert_eq!(r.push(b"SSH_9.2\r\n"), Progress::Ident);
        let mut r = BannerReader::new(8);
        assert_eq!(r.push(b"0123456789"), Progress::NeedMore);
        assert!(r.is_full());
        assert_eq!(r.bytes(), b"01234567");
        let mut r = BannerReader::new(64);
        assert_eq!(r.push(b"HTTP/1.1 400\r\n"), Progress::NeedMore);
        assert_eq!(r.push(b"\0"), Progress::NotSsh);
    }

    #[tokio::test]
    async fn banner_reader_reads_in_place_within_the_cap() {
        let mut r = BannerReader::new(16);
        let mut src: &[u8] = b"SSH-2.0-x\r\nmore bytes than the cap";
        // One read takes what is there up to the cap, as a read into a scratch buffer did.
        assert_eq!(r.read_from(&mut src).await.unwrap(), (16, Progress::Ident));
        assert_eq!(r.bytes(), b"SSH-2.0-x\r\nmore ");
        let mut r = BannerReader::new(8);
        let mut src: &[u8] = b"0123456789";
        assert_eq!(r.read_from(&mut src).await.unwrap(), (8, Progress::NeedMore));
        assert!(r.is_full());
        assert_eq!(r.bytes(), b"01234567");
        let mut empty: &[u8] = b"";
        assert_eq!(BannerReader::new(8).read_from(&mut empty).await.unwrap(), (0, Progress::NeedMore));
    }

    proptest::proptest! {
        /// The scan the reader hands on classifies its bytes as a fresh scan of them does, however
        /// the bytes were cut into reads and whatever follows the ident line.
        #[test]
        fn the_readers_scan_classifies_as_a_fresh_one(
            lines in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n".to_vec()),
                    proptest::strategy::Just(b"SSH-1.5-Cisco-1.25\r\n".to_vec()),
                    proptest::strategy::Just(b"Exceeded MaxStartups\r\n".to_vec()),
                    proptest::collection::vec(proptest::num::u8::ANY, 0..40),
                ],
                0..5,
            ),
            cuts in proptest::collection::vec(1usize..60, 0..8),
            cap in 8usize..300,
        ) {
            let bytes: Vec<u8> = lines.concat();
            let mut reader = BannerReader::new(cap);
            let mut rest = &bytes[..];
            for cut in cuts.into_iter().chain([usize::MAX]) {
                let (chunk, after) = rest.split_at(cut.min(rest.len()));
                reader.push(chunk);
                rest = after;
            }
            let scanned = reader.take_scanned();
            let mut obs = crate::evidence::Observation::failed_connect(
                "127.0.0.1:22".parse().unwrap(),
                None,
                crate::evidence::ProbeOrder::WaitForBanner,
                crate::evidence::Connect::Established,
                0,
            );
            obs.end = Some(crate::evidence::End::Fin);
            obs.received = reader.into_bytes();
            proptest::prop_assert_eq!(
                crate::outcome::classify_scanned(&obs, scanned),
                crate::outcome::classify_scanned(&obs, None)
            );
        }
    }
}
