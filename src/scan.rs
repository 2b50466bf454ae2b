//! Running many probes: targets streamed in, results streamed out, with bounded concurrency and an
//! exact global rate.
//!
//! Targets arrive through a bounded channel from a reader thread ([`spawn_target_reader`]), so a list
//! of millions streams in constant memory and the first probe starts at once. Each target gets
//! `count` probes `interval` apart; at most `concurrency` targets are in progress; new connections
//! are paced to `rate` per second across the whole run. Results leave through another channel in the
//! order they finish.

use crate::engine::{Engine, ProbeRequest};
use crate::evidence::Observation;
use crate::outcome::{classify, Classification};
use crate::target::{net_addrs, parse_target, TargetError, TargetSpec};
use std::io::BufRead;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

/// Where targets come from, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSource {
    /// One target written on the command line.
    Arg(String),
    /// A file of targets, one per line (`#` starts a comment); `-` for standard input.
    File(PathBuf),
}

/// One address to probe, with the label it is reported under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The target as reported: the user's text, or the address for a network's members.
    pub label: String,
    /// What to connect to.
    pub dest: Dest,
}

/// An address, or a name still to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// Ready to probe.
    Addr(SocketAddr),
    /// Resolved just before probing.
    Host {
        /// The name.
        name: String,
        /// The port.
        port: u16,
    },
}

/// How targets are read.
#[derive(Debug, Clone, Copy)]
pub struct TargetReaderOptions {
    /// The port for targets that name none.
    pub default_port: u16,
    /// Keep only shard `index` of `count` (0-based): every target whose position in the stream is
    /// `index` modulo `count`.
    pub shard: Option<(u64, u64)>,
}

/// Reads, parses and expands targets on a thread of their own, sending them into a bounded channel
/// in order. Errors are sent in place of the target they concern, and reading goes on.
pub fn spawn_target_reader(
    sources: Vec<TargetSource>,
    options: TargetReaderOptions,
) -> mpsc::Receiver<Result<Target, TargetError>> {
    let (tx, rx) = mpsc::channel(1024);
    std::thread::Builder::new()
        .name("targets".into())
        .spawn(move || {
            let mut position = 0u64;
            let mut emit = |item: Result<Target, TargetError>| -> bool {
                let keep = match (&item, options.shard) {
                    (Ok(_), Some((index, count))) => position % count == index,
                    _ => true,
                };
                if item.is_ok() {
                    position += 1;
                }
                !keep || tx.blocking_send(item).is_ok()
            };
            for source in sources {
                let more = match source {
                    TargetSource::Arg(text) => emit_spec(&text, options.default_port, &mut emit),
                    TargetSource::File(path) => read_file(&path, options.default_port, &mut emit),
                };
                if !more {
                    return;
                }
            }
        })
        .expect("spawning the target reader thread");
    rx
}

/// Sends the targets of one line; false when the receiver is gone.
fn emit_spec(
    text: &str,
    default_port: u16,
    emit: &mut impl FnMut(Result<Target, TargetError>) -> bool,
) -> bool {
    match parse_target(text, default_port) {
        Err(e) => emit(Err(e)),
        Ok(TargetSpec::Addr(addr)) => {
            emit(Ok(Target { label: text.trim().to_string(), dest: Dest::Addr(addr) }))
        }
        Ok(TargetSpec::Host { name, port }) => {
            emit(Ok(Target { label: text.trim().to_string(), dest: Dest::Host { name, port } }))
        }
        Ok(TargetSpec::Net { net, port }) => net_addrs(net, port)
            .all(|addr| emit(Ok(Target { label: addr.to_string(), dest: Dest::Addr(addr) }))),
    }
}

fn read_file(
    path: &PathBuf,
    default_port: u16,
    emit: &mut impl FnMut(Result<Target, TargetError>) -> bool,
) -> bool {
    let name = path.display().to_string();
    let read_error =
        |e: std::io::Error| TargetError::Read { source_name: name.clone(), reason: e.to_string() };
    let reader: Box<dyn BufRead> = if name == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        match std::fs::File::open(path) {
            Ok(f) => Box::new(std::io::BufReader::new(f)),
            Err(e) => return emit(Err(read_error(e))),
        }
    };
    for line in reader.lines() {
        let line = match line {
            Ok(line) => line,
            Err(e) => return emit(Err(read_error(e))),
        };
        let text = line.split('#').next().unwrap_or("").trim();
        if !text.is_empty() && !emit_spec(text, default_port, emit) {
            return false;
        }
    }
    true
}

/// How a run paces its probes.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Targets in progress at once.
    pub concurrency: usize,
    /// New connections per second across the run; `None` for as fast as concurrency allows.
    pub rate: Option<f64>,
    /// Probes per target.
    pub count: u32,
    /// Gap between a target's probes.
    pub interval: Duration,
    /// Local addresses to probe from, used round-robin (per address family).
    pub sources: Vec<IpAddr>,
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions {
            concurrency: 64,
            rate: None,
            count: 1,
            interval: Duration::from_secs(1),
            sources: Vec::new(),
        }
    }
}

/// One probe's report: what was probed, what was seen, what it means.
#[derive(Debug, Clone)]
pub struct ProbeResult {
    /// The target's label.
    pub target: String,
    /// Which of the target's probes this is (0-based).
    pub seq: u32,
    /// What the engine observed.
    pub observation: Observation,
    /// What it means.
    pub classification: Classification,
}

/// What a run reports, as it happens.
#[derive(Debug)]
pub enum Event {
    /// A probe finished.
    Probe(Box<ProbeResult>),
    /// A target could not be read, parsed or resolved.
    BadTarget(TargetError),
}

/// Probes every target from `targets` and sends every result to `events`; returns when all are done.
pub async fn run<E: Engine>(
    engine: Arc<E>,
    mut targets: mpsc::Receiver<Result<Target, TargetError>>,
    options: RunOptions,
    events: mpsc::Sender<Event>,
) {
    let concurrency = options.concurrency.max(1);
    let slots = Arc::new(Semaphore::new(concurrency));
    let shared = Arc::new(Shared {
        pacer: options.rate.map(Pacer::new),
        sources: SourceRotation::new(options.sources.clone()),
        options,
    });
    while let Some(item) = targets.recv().await {
        let target = match item {
            Ok(t) => t,
            Err(e) => {
                if events.send(Event::BadTarget(e)).await.is_err() {
                    break;
                }
                continue;
            }
        };
        let Ok(slot) = slots.clone().acquire_owned().await else { break };
        let (engine, shared, events) = (engine.clone(), shared.clone(), events.clone());
        tokio::spawn(async move {
            probe_target(&*engine, &shared, target, &events).await;
            drop(slot);
        });
    }
    // Every slot back means every target is done.
    let _ = slots.acquire_many(concurrency as u32).await;
}

struct Shared {
    pacer: Option<Pacer>,
    sources: SourceRotation,
    options: RunOptions,
}

async fn probe_target<E: Engine>(engine: &E, shared: &Shared, target: Target, events: &mpsc::Sender<Event>) {
    let remote = match resolve(&target).await {
        Ok(addr) => addr,
        Err(e) => {
            let _ = events.send(Event::BadTarget(e)).await;
            return;
        }
    };
    for seq in 0..shared.options.count {
        if seq > 0 {
            tokio::time::sleep(shared.options.interval).await;
        }
        if let Some(pacer) = &shared.pacer {
            pacer.wait().await;
        }
        let source = shared.sources.next_for(remote.ip());
        let observation = engine.probe(ProbeRequest { remote, source }).await;
        let classification = classify(&observation);
        let result = ProbeResult { target: target.label.clone(), seq, observation, classification };
        if events.send(Event::Probe(Box::new(result))).await.is_err() {
            return;
        }
    }
}

async fn resolve(target: &Target) -> Result<SocketAddr, TargetError> {
    match &target.dest {
        Dest::Addr(a) => Ok(*a),
        Dest::Host { name, port } => {
            let fail = |reason: String| TargetError::Resolve { target: target.label.clone(), reason };
            let mut addrs =
                tokio::net::lookup_host((name.as_str(), *port)).await.map_err(|e| fail(e.to_string()))?;
            addrs.next().ok_or_else(|| fail("no addresses".into()))
        }
    }
}

/// Spaces events exactly `1/rate` apart over the whole run, without bursts.
#[derive(Debug)]
pub struct Pacer {
    gap: Duration,
    next: Mutex<Option<Instant>>,
}

impl Pacer {
    /// A pacer for `rate` events per second (at least one per hour).
    pub fn new(rate: f64) -> Pacer {
        let gap = Duration::from_secs_f64(1.0 / rate.max(1.0 / 3600.0));
        Pacer { gap, next: Mutex::new(None) }
    }

    /// Waits for the next free slot.
    pub async fn wait(&self) {
        let slot = {
            let mut next = self.next.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let now = Instant::now();
            let slot = next.map_or(now, |n| n.max(now));
            *next = Some(slot + self.gap);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

/// Hands out local source addresses round-robin, matching the remote's address family.
#[derive(Debug)]
struct SourceRotation {
    v4: Vec<IpAddr>,
    v6: Vec<IpAddr>,
    turn: AtomicUsize,
}

impl SourceRotation {
    fn new(sources: Vec<IpAddr>) -> SourceRotation {
        let (v4, v6) = sources.into_iter().partition(IpAddr::is_ipv4);
        SourceRotation { v4, v6, turn: AtomicUsize::new(0) }
    }

    fn next_for(&self, remote: IpAddr) -> Option<IpAddr> {
        let pool = if remote.is_ipv4() { &self.v4 } else { &self.v6 };
        if pool.is_empty() {
            return None;
        }
        Some(pool[self.turn.fetch_add(1, Ordering::Relaxed) % pool.len()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(sources: Vec<TargetSource>, shard: Option<(u64, u64)>) -> Vec<String> {
        let mut rx = spawn_target_reader(sources, TargetReaderOptions { default_port: 22, shard });
        let mut out = Vec::new();
        while let Some(item) = rx.blocking_recv() {
            out.push(match item {
                Ok(t) => t.label,
                Err(e) => format!("error: {e}"),
            });
        }
        out
    }

    #[test]
    fn reader_expands_networks_and_keeps_going_after_errors() {
        let got = labels(
            vec![
                TargetSource::Arg("127.0.0.0/30".into()),
                TargetSource::Arg("bad host".into()),
                TargetSource::Arg("localhost:2222".into()),
            ],
            None,
        );
        assert_eq!(
            got,
            ["127.0.0.1:22", "127.0.0.2:22", "error: invalid host name \"bad host\"", "localhost:2222"]
        );
    }

    #[test]
    fn reader_reads_files_with_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("targets.txt");
        std::fs::write(&path, "# lab\n127.0.0.1:2201\n\n  127.0.0.2  # second\n").unwrap();
        let got = labels(vec![TargetSource::File(path), TargetSource::File("/nonexistent/x".into())], None);
        assert_eq!(got[..2], ["127.0.0.1:2201", "127.0.0.2"]);
        assert!(got[2].starts_with("error: reading targets from /nonexistent/x"), "{got:?}");
    }

    #[test]
    fn shards_are_disjoint_and_cover_everything() {
        let all = labels(vec![TargetSource::Arg("127.0.0.0/27".into())], None);
        let mut union: Vec<String> = (0..3)
            .flat_map(|i| labels(vec![TargetSource::Arg("127.0.0.0/27".into())], Some((i, 3))))
            .collect();
        assert_eq!(union.len(), all.len());
        union.sort();
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(union, sorted);
    }

    #[test]
    fn sources_rotate_within_a_family() {
        let rot = SourceRotation::new(vec![
            "127.0.0.2".parse().unwrap(),
            "::1".parse().unwrap(),
            "127.0.0.3".parse().unwrap(),
        ]);
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        let got: Vec<_> = (0..3).map(|_| rot.next_for(v4).unwrap().to_string()).collect();
        assert_eq!(got, ["127.0.0.2", "127.0.0.3", "127.0.0.2"]);
        assert_eq!(rot.next_for("::1".parse().unwrap()), Some("::1".parse().unwrap()));
        assert_eq!(SourceRotation::new(vec![]).next_for(v4), None);
    }

    #[tokio::test(start_paused = true)]
    async fn pacer_spaces_events_exactly() {
        let pacer = Pacer::new(4.0);
        let start = Instant::now();
        for _ in 0..9 {
            pacer.wait().await;
        }
        assert_eq!(start.elapsed(), Duration::from_millis(2000));
    }
}
