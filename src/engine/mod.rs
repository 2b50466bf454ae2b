//! Engines: the I/O that turns a target address into an [`Observation`].
//!
//! An engine performs one identification exchange per call and reports what it saw, nothing more:
//! classification happens later, in [`crate::outcome`], so every engine feeds the same classifier and
//! must agree with the others on the same server behaviour.
//!
//! - [`connect`]: kernel sockets through tokio. Unprivileged, the default.
//! - [`raw`]: a user-space TCP client over raw sockets, with a packet trace. Needs CAP_NET_RAW (and
//!   CAP_NET_ADMIN for its firewall rule).

pub mod connect;
pub mod raw;

use crate::evidence::{CloseMode, Observation, ProbeOrder};
use crate::ident::{self, Scan};
use bytes::{Bytes, BytesMut};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Our identification line when the user does not choose one. Never starts with `Probe-` and never
/// mentions `SSH_Version_Mapper`: sshd treats those as scanners and closes silently (FACTS §1).
pub const DEFAULT_IDENT: &str = concat!("SSH-2.0-sshprobe_", env!("CARGO_PKG_VERSION"));

/// The most bytes a probe reads from one connection.
pub const DEFAULT_BYTE_CAP: usize = 8 * 1024;

/// How every probe of a run behaves.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// Which side speaks first.
    pub order: ProbeOrder,
    /// Our identification line, CR LF included.
    pub ident: Bytes,
    /// How long the TCP handshake may take.
    pub connect_timeout: Duration,
    /// How long after connecting the server's ident may take to arrive in full: a total deadline,
    /// not a per-read one, so a server dribbling bytes cannot hold a probe forever.
    pub banner_timeout: Duration,
    /// The most bytes read from one connection.
    pub byte_cap: usize,
    /// How we close once done.
    pub close: CloseMode,
}

impl Default for ProbeConfig {
    fn default() -> ProbeConfig {
        ProbeConfig {
            order: ProbeOrder::WaitForBanner,
            ident: ident_line(DEFAULT_IDENT),
            connect_timeout: Duration::from_secs(5),
            banner_timeout: Duration::from_secs(10),
            byte_cap: DEFAULT_BYTE_CAP,
            close: CloseMode::Fin,
        }
    }
}

/// Our identification line with its CR LF.
pub fn ident_line(text: &str) -> Bytes {
    Bytes::from(format!("{text}\r\n"))
}

/// One probe to make: where to, and from which local address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeRequest {
    /// The server's address.
    pub remote: SocketAddr,
    /// The local address to bind, or `None` for the kernel's choice.
    pub source: Option<IpAddr>,
}

/// Something that can perform identification exchanges.
pub trait Engine: Send + Sync + 'static {
    /// Performs one exchange and reports what it saw. Never fails: every failure is an observation.
    fn probe(&self, request: ProbeRequest) -> impl Future<Output = Observation> + Send;
}

/// The server's bytes as a probe collects them: capped at the byte cap, and scanned for the ident line
/// only when a line can have ended (a LF or a NUL arrived). Every engine feeds its bytes through one of
/// these, so all of them stop at the same byte for the same reason.
#[derive(Debug)]
pub struct BannerReader {
    received: BytesMut,
    cap: usize,
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
        BannerReader { received: BytesMut::with_capacity(cap.min(512)), cap }
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
    pub async fn read_from<R: tokio::io::AsyncRead + Unpin>(
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

    /// Judges the bytes, scanning only when the ones from `new_from` on can have ended a line.
    fn judge(&self, new_from: usize) -> Progress {
        let new = &self.received[new_from..];
        if !new.contains(&b'\n') && !new.contains(&0) {
            return Progress::NeedMore;
        }
        match ident::scan(&self.received) {
            Scan::NeedMore => Progress::NeedMore,
            Scan::Ident(_) | Scan::Ssh1Only(_) => Progress::Ident,
            Scan::NotSsh(_) => Progress::NotSsh,
        }
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
}
