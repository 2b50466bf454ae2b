//! Unauthenticated connections held open on purpose, to load a server's MaxStartups count.
//!
//! A held connection is one the server accepted (its ident line arrived) and that never sends
//! anything: to sshd it is a pre-authentication session, counted against `MaxStartups` and
//! `PerSourceMaxStartups` until it ends or `LoginGraceTime` expires. Each lives in a task that notes
//! when the server closes it, so the holder knows how many are really still open (and, for
//! `limits --grace`, when the server gave up on them).
//!
//! Dropping the [`Holder`] closes every connection at once: the tasks are aborted and their sockets
//! dropped. Process exit closes them too, so they are released on every path.

use super::budget::Budget;
use crate::engine::{BannerReader, Progress as ReadProgress};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// Connections held open against one server.
#[derive(Debug)]
pub struct Holder {
    remote: SocketAddr,
    tasks: JoinSet<()>,
    alive: Arc<AtomicU32>,
    /// When each held connection was opened and (once it happened) closed by the server.
    lifetimes: Arc<Mutex<Vec<Duration>>>,
    /// Attempts the server refused while we tried to hold.
    refused: u32,
    /// Where the round-robin over source addresses stands: it goes on across calls, so holders
    /// spread over every address (a per-address limit or penalty would otherwise shape the load).
    turn: usize,
    /// No new attempt starts after this.
    deadline: Option<Instant>,
}

/// Why one attempt to hold a connection failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldFailure {
    /// The source's budget is spent.
    Budget,
    /// The server refused or closed it before a banner, or the connect failed.
    Refused,
}

impl Holder {
    /// An empty holder for `remote`.
    pub fn new(remote: SocketAddr) -> Holder {
        Holder {
            remote,
            tasks: JoinSet::new(),
            alive: Arc::new(AtomicU32::new(0)),
            lifetimes: Arc::new(Mutex::new(Vec::new())),
            refused: 0,
            turn: 0,
            deadline: None,
        }
    }

    /// Makes [`fill_to`](Self::fill_to) start no attempt after `deadline` (one under way may
    /// take up to its timeout).
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    /// How many held connections the server has not closed.
    pub fn alive(&self) -> u32 {
        self.alive.load(Ordering::SeqCst)
    }

    /// How many hold attempts the server refused.
    pub fn refused(&self) -> u32 {
        self.refused
    }

    /// How long each connection the server closed had been open, in closing order.
    pub fn lifetimes(&self) -> Vec<Duration> {
        self.lifetimes.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Opens one connection from `source` and holds it once its banner arrived.
    pub async fn hold_one(
        &mut self,
        source: Option<IpAddr>,
        budget: &Budget,
        timeout: Duration,
    ) -> Result<(), HoldFailure> {
        if !budget.try_take(source) {
            return Err(HoldFailure::Budget);
        }
        let opened = Instant::now();
        let attempt = tokio::time::timeout(timeout, connect_for_banner(self.remote, source)).await;
        let Ok(Some(mut stream)) = attempt else {
            self.refused += 1;
            return Err(HoldFailure::Refused);
        };
        let alive = self.alive.clone();
        let lifetimes = self.lifetimes.clone();
        alive.fetch_add(1, Ordering::SeqCst);
        self.tasks.spawn(async move {
            // Nothing more arrives until we speak; a read returning means the server closed.
            let mut sink = [0u8; 512];
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            alive.fetch_sub(1, Ordering::SeqCst);
            if let Ok(mut l) = lifetimes.lock() {
                l.push(opened.elapsed());
            }
        });
        Ok(())
    }

    /// Holds until `target` connections are alive, taking sources round-robin from `sources`, with at
    /// most `max_attempts` attempts; returns how many are alive.
    pub async fn fill_to(
        &mut self,
        target: u32,
        sources: &[Option<IpAddr>],
        budget: &Budget,
        timeout: Duration,
        max_attempts: u32,
    ) -> u32 {
        let mut attempts = 0;
        let mut spent_sources = 0;
        let in_time = |deadline: Option<Instant>| deadline.is_none_or(|d| Instant::now() < d);
        while self.alive() < target
            && attempts < max_attempts
            && !sources.is_empty()
            && in_time(self.deadline)
        {
            let source = sources[self.turn % sources.len()];
            self.turn = self.turn.wrapping_add(1);
            match self.hold_one(source, budget, timeout).await {
                Err(HoldFailure::Budget) => {
                    spent_sources += 1;
                    if spent_sources >= sources.len() {
                        break;
                    }
                }
                Ok(()) | Err(HoldFailure::Refused) => {
                    spent_sources = 0;
                    attempts += 1;
                }
            }
        }
        self.alive()
    }

    /// Closes every held connection now.
    pub async fn release(mut self) {
        self.tasks.shutdown().await;
    }
}

/// Connects and reads until the server's ident line; the stream if one arrived.
async fn connect_for_banner(remote: SocketAddr, source: Option<IpAddr>) -> Option<TcpStream> {
    let socket = match remote {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .ok()?;
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0)).ok()?;
    }
    let mut stream = socket.connect(remote).await.ok()?;
    let mut reader = BannerReader::new(crate::engine::DEFAULT_BYTE_CAP);
    let mut chunk = [0u8; 512];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || reader.is_full() {
            return None;
        }
        match reader.push(&chunk[..n]) {
            ReadProgress::NeedMore => continue,
            ReadProgress::Ident => return Some(stream),
            ReadProgress::NotSsh => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that answers every connection with a banner and then keeps it open.
    async fn banner_server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((mut s, _)) = listener.accept().await {
                let _ = tokio::io::AsyncWriteExt::write_all(&mut s, b"SSH-2.0-test\r\n").await;
                open.push(s);
            }
        });
        (addr, task)
    }

    #[tokio::test]
    async fn fill_to_stops_at_its_deadline_and_spreads_over_sources_across_calls() {
        let (addr, server) = banner_server().await;
        let budget = Budget::new(100);
        let sources = [Some(IpAddr::from([127, 0, 0, 1])), Some(IpAddr::from([127, 0, 0, 2]))];
        let mut holder = Holder::new(addr);
        // One connection per call: the round-robin goes on where it stopped.
        for target in 1..=4 {
            assert_eq!(holder.fill_to(target, &sources, &budget, Duration::from_secs(5), 10).await, target);
        }
        let spent = budget.usage().spent;
        assert_eq!((spent["127.0.0.1"], spent["127.0.0.2"]), (2, 2), "{spent:?}");
        // Past the deadline no attempt starts.
        holder.set_deadline(Some(Instant::now()));
        assert_eq!(holder.fill_to(8, &sources, &budget, Duration::from_secs(5), 10).await, 4);
        assert_eq!(budget.usage().spent.values().sum::<u32>(), 4);
        holder.release().await;
        server.abort();
    }
}
