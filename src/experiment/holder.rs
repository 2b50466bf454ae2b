//! Unauthenticated connections held open on purpose, to load a server's MaxStartups count.
//!
//! A held connection is one the server accepted (its ident line arrived) and that never sends
//! anything: to sshd it is a pre-authentication session, counted against `MaxStartups` and
//! `PerSourceMaxStartups` until it ends or `LoginGraceTime` expires. The engine holds it
//! ([`Engine::hold`]: either engine can); a task per connection waits for the server to end it, so
//! the holder knows how many are really still open and, for `limits --grace`, how long each lived.
//!
//! Dropping the [`Holder`] closes every connection at once: the tasks are aborted and the held
//! connections dropped, which releases them. Process exit closes them too, so they are released
//! on every path.

use super::budget::Budget;
use crate::engine::{Engine, Held, ProbeRequest};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// How long after our held connections close before the server no longer counts them: sshd's
/// listener learns of a child's end through a pipe, and its MaxStartups count drops about 0.5 s
/// later (docs/facts.md §3). Experiments wait this long after a release before measuring again.
pub const SETTLE_AFTER_RELEASE: Duration = Duration::from_millis(1500);

/// Connections held open against one server, through one engine.
#[derive(Debug)]
pub struct Holder<'e, E: Engine> {
    engine: &'e E,
    /// The connection every hold opens (remote, timeouts); its source is each hold's own.
    request: ProbeRequest,
    tasks: JoinSet<()>,
    alive: Arc<AtomicU32>,
    /// How long each connection the server closed had been open (from its handshake), in closing
    /// order.
    lifetimes: Arc<Mutex<Vec<Duration>>>,
    /// Attempts the server refused while we tried to hold.
    refused: u32,
    /// Where the round-robin over source addresses stands: it goes on across calls, so holders
    /// spread over every address (a per-address limit or penalty would otherwise shape the load).
    turn: usize,
    /// No new attempt starts after this.
    deadline: Option<Instant>,
    /// Refusals in a row after which `fill_to` gives up (`None`: it goes on to `max_attempts`).
    give_up_after: Option<u32>,
}

/// Why one attempt to hold a connection failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HoldFailure {
    /// The source's budget is spent.
    Budget,
    /// The server refused or closed it before a banner, or the connect failed.
    Refused,
}

impl<'e, E: Engine> Holder<'e, E> {
    /// An empty holder that opens connections as `request` says (its order is ignored: a held
    /// connection never speaks) through `engine`.
    pub fn new(engine: &'e E, request: ProbeRequest) -> Holder<'e, E> {
        Holder {
            engine,
            request,
            tasks: JoinSet::new(),
            alive: Arc::new(AtomicU32::new(0)),
            lifetimes: Arc::new(Mutex::new(Vec::new())),
            refused: 0,
            turn: 0,
            deadline: None,
            give_up_after: None,
        }
    }

    /// Makes [`fill_to`](Self::fill_to) give up after this many refusals in a row. diagnose wants
    /// it (two refusals in a row are a firewall blocking the address or a full table, and more
    /// attempts would only wait or trip a ban); limits does not (near `full` the server drops most
    /// of the holder's own attempts, and measuring that is the point).
    pub fn give_up_after(&mut self, refusals_in_a_row: u32) {
        self.give_up_after = Some(refusals_in_a_row);
    }

    /// Makes [`fill_to`](Self::fill_to) start no attempt after `deadline` (one under way may
    /// take up to its timeouts).
    pub(crate) fn set_deadline(&mut self, deadline: Option<Instant>) {
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
    pub(crate) fn lifetimes(&self) -> Vec<Duration> {
        self.lifetimes.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Opens one connection from `source` and holds it once its banner arrived.
    pub(crate) async fn hold_one(
        &mut self,
        source: Option<IpAddr>,
        budget: &Budget,
    ) -> Result<(), HoldFailure> {
        if !budget.try_take(source) {
            return Err(HoldFailure::Budget);
        }
        let Ok(mut held) = self.engine.hold(self.request.clone().source(source)).await else {
            self.refused += 1;
            return Err(HoldFailure::Refused);
        };
        let alive = self.alive.clone();
        let lifetimes = self.lifetimes.clone();
        alive.fetch_add(1, Ordering::SeqCst);
        self.tasks.spawn(async move {
            let end = held.ended().await;
            alive.fetch_sub(1, Ordering::SeqCst);
            if let Ok(mut l) = lifetimes.lock() {
                l.push(end.after);
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
        max_attempts: u32,
    ) -> u32 {
        let mut attempts = 0;
        let mut spent_sources = 0;
        let mut failures_in_a_row = 0;
        let in_time = |deadline: Option<Instant>| deadline.is_none_or(|d| Instant::now() < d);
        while self.alive() < target
            && attempts < max_attempts
            && !sources.is_empty()
            && in_time(self.deadline)
        {
            let source = sources[self.turn % sources.len()];
            self.turn = self.turn.wrapping_add(1);
            match self.hold_one(source, budget).await {
                Err(HoldFailure::Budget) => {
                    spent_sources += 1;
                    if spent_sources >= sources.len() {
                        break;
                    }
                }
                Ok(()) => {
                    spent_sources = 0;
                    attempts += 1;
                    failures_in_a_row = 0;
                }
                Err(HoldFailure::Refused) => {
                    spent_sources = 0;
                    attempts += 1;
                    failures_in_a_row += 1;
                    if self.give_up_after.is_some_and(|n| failures_in_a_row >= n) {
                        break;
                    }
                }
            }
        }
        self.alive()
    }

    /// Closes every held connection now.
    pub async fn release(mut self) {
        self.tasks.shutdown().await;
    }

    /// Closes every held connection, then waits until the server no longer counts them
    /// ([`SETTLE_AFTER_RELEASE`]).
    pub(crate) async fn release_and_settle(self) {
        self.release().await;
        tokio::time::sleep(SETTLE_AFTER_RELEASE).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::connect::ConnectEngine;
    use std::net::SocketAddr;

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
        let engine = ConnectEngine::default();
        let mut holder = Holder::new(&engine, ProbeRequest::new(addr));
        // One connection per call: the round-robin goes on where it stopped.
        for target in 1..=4 {
            assert_eq!(holder.fill_to(target, &sources, &budget, 10).await, target);
        }
        let spent = budget.usage().spent;
        let at = |ip: &str| spent[&crate::experiment::sources::Source::Address(ip.parse().unwrap())];
        assert_eq!((at("127.0.0.1"), at("127.0.0.2")), (2, 2), "{spent:?}");
        // Past the deadline no attempt starts.
        holder.set_deadline(Some(Instant::now()));
        assert_eq!(holder.fill_to(8, &sources, &budget, 10).await, 4);
        assert_eq!(budget.usage().spent.values().sum::<u32>(), 4);
        holder.release().await;
        server.abort();
    }

    /// A server that ends each held connection itself (as at LoginGraceTime): the holder counts it
    /// gone and records how long it lived; one it refuses before the banner is counted refused.
    #[tokio::test]
    async fn a_connection_the_server_ends_is_counted_gone_with_its_lifetime() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            // The first: a banner, then closed 200 ms later. The second: closed at once, no banner.
            let (mut first, _) = listener.accept().await.unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut first, b"SSH-2.0-test\r\n").await.unwrap();
            let (second, _) = listener.accept().await.unwrap();
            drop(second);
            tokio::time::sleep(Duration::from_millis(200)).await;
            drop(first);
        });
        let engine = ConnectEngine::default();
        let budget = Budget::new(10);
        let mut holder = Holder::new(&engine, ProbeRequest::new(addr));
        assert_eq!(holder.hold_one(None, &budget).await, Ok(()));
        assert_eq!(holder.alive(), 1);
        assert_eq!(holder.hold_one(None, &budget).await, Err(HoldFailure::Refused));
        assert_eq!(holder.refused(), 1);
        server.await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while holder.alive() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(holder.alive(), 0);
        let lifetimes = holder.lifetimes();
        assert_eq!(lifetimes.len(), 1);
        assert!(lifetimes[0] >= Duration::from_millis(150), "{lifetimes:?}");
        assert_eq!(budget.usage().spent[&crate::experiment::sources::Source::KernelChoice], 2);
    }
}
