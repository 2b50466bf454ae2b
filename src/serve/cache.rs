//! Penalty-safe probing: at most one probe per key (a server and module) per minimum interval, and
//! one probe shared by every scrape that arrives while it runs.
//!
//! OpenSSH 9.8+ charges every connection that leaves without authenticating to its source address
//! and refuses the address once about 15 are outstanding (docs/facts.md §5): a monitor scraped by two
//! Prometheus servers, or by one with a short interval, would penalise itself and then report the
//! penalty as the server's fault. So each key has a slot holding its last result behind an async
//! mutex: the first scrape probes while holding it; scrapes that queue behind it find a result
//! that is recent, or that finished while they waited, and take that instead of probing again.
//!
//! Slots of results older than the interval are swept when the map has doubled since the last
//! sweep, so memory follows the number of targets scraped recently, not the number ever scraped.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Where a scrape's result came from.
#[derive(Debug)]
pub(crate) enum Fetched<V> {
    /// This scrape's own probe.
    Fresh(Arc<V>),
    /// Another scrape's probe, which started `age` ago: within the minimum interval, or it finished
    /// while this scrape waited for it.
    Reused {
        /// The result.
        value: Arc<V>,
        /// How long ago its probe started.
        age: Duration,
    },
}

impl<V> Fetched<V> {
    /// The result, wherever it came from.
    pub fn value(&self) -> &Arc<V> {
        match self {
            Fetched::Fresh(v) | Fetched::Reused { value: v, .. } => v,
        }
    }
}

/// The last result of one key.
#[derive(Debug)]
struct Slot<V> {
    /// When its probe started, and the result. Held across the probe: the single flight.
    last: tokio::sync::Mutex<Option<(Instant, Arc<V>)>>,
    /// Probes completed, so a scrape can tell that one finished while it waited.
    completed: AtomicU64,
    /// When the last probe started, readable without the async lock (for sweeping).
    started: Mutex<Option<Instant>>,
}

#[derive(Debug)]
struct Slots<K, V> {
    map: HashMap<K, Arc<Slot<V>>>,
    sweep_at: usize,
}

/// The fewest slots before the first sweep.
const FIRST_SWEEP: usize = 1024;

/// Results by key, each reused for `min_interval` after its probe started.
#[derive(Debug)]
pub(crate) struct ResultCache<K, V> {
    slots: Mutex<Slots<K, V>>,
    min_interval: Duration,
}

impl<K: Hash + Eq + Clone, V> ResultCache<K, V> {
    /// A cache reusing each result for `min_interval` (zero: results are shared only by scrapes
    /// that arrive while the probe runs).
    pub fn new(min_interval: Duration) -> ResultCache<K, V> {
        ResultCache { slots: Mutex::new(Slots { map: HashMap::new(), sweep_at: FIRST_SWEEP }), min_interval }
    }

    /// How many keys have a slot now (the tests check that sweeping bounds it).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().map.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots<K, V>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn slot(&self, key: K) -> Arc<Slot<V>> {
        let mut slots = self.lock();
        if let Some(slot) = slots.map.get(&key) {
            return slot.clone();
        }
        if slots.map.len() >= slots.sweep_at {
            let now = Instant::now();
            let keep_for = self.min_interval;
            slots.map.retain(|_, slot| {
                // In use by a scrape (a clone exists), or still fresh.
                Arc::strong_count(slot) > 1
                    || slot
                        .started
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .is_some_and(|at| now.duration_since(at) < keep_for)
            });
            slots.sweep_at = (slots.map.len() * 2).max(FIRST_SWEEP);
        }
        let slot = Arc::new(Slot {
            last: tokio::sync::Mutex::new(None),
            completed: AtomicU64::new(0),
            started: Mutex::new(None),
        });
        slots.map.insert(key, slot.clone());
        slot
    }

    /// The result for `key`: reused when its probe started less than the minimum interval ago or
    /// finished while this call waited for it, otherwise from `probe`, run now while every other
    /// caller for `key` waits. An error from `probe` (no room to probe) is returned and nothing is
    /// stored.
    pub async fn get<F, Fut, E>(&self, key: K, probe: F) -> Result<Fetched<V>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let slot = self.slot(key);
        let completed_before = slot.completed.load(Ordering::Acquire);
        let mut last = slot.last.lock().await;
        let now = Instant::now();
        if let Some((started, value)) = &*last {
            let age = now.duration_since(*started);
            if age < self.min_interval || slot.completed.load(Ordering::Acquire) != completed_before {
                return Ok(Fetched::Reused { value: value.clone(), age });
            }
        }
        let value = Arc::new(probe().await?);
        *last = Some((now, value.clone()));
        *slot.started.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
        slot.completed.fetch_add(1, Ordering::Release);
        Ok(Fetched::Fresh(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test(start_paused = true)]
    async fn one_probe_per_interval() {
        let cache: ResultCache<u16, usize> = ResultCache::new(Duration::from_secs(2));
        let probes = AtomicUsize::new(0);
        let probe = || async { Ok::<_, ()>(probes.fetch_add(1, Ordering::SeqCst)) };
        assert!(matches!(cache.get(22, probe).await, Ok(Fetched::Fresh(v)) if *v == 0));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        match cache.get(22, probe).await {
            Ok(Fetched::Reused { value, age }) => assert_eq!((*value, age), (0, Duration::from_millis(1500))),
            other => panic!("{other:?}"),
        }
        // Another key is another server.
        assert!(matches!(cache.get(2222, probe).await, Ok(Fetched::Fresh(v)) if *v == 1));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(matches!(cache.get(22, probe).await, Ok(Fetched::Fresh(v)) if *v == 2));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_scrapes_share_one_probe_even_without_an_interval() {
        let cache: Arc<ResultCache<u16, usize>> = Arc::new(ResultCache::new(Duration::ZERO));
        let probes = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (cache, probes) = (cache.clone(), probes.clone());
            tasks.push(tokio::spawn(async move {
                let fetched = cache
                    .get(22, || async {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Ok::<_, ()>(probes.fetch_add(1, Ordering::SeqCst))
                    })
                    .await
                    .unwrap();
                matches!(fetched, Fetched::Fresh(_))
            }));
        }
        let mut fresh = 0;
        for t in tasks {
            fresh += usize::from(t.await.unwrap());
        }
        assert_eq!((fresh, probes.load(Ordering::SeqCst)), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn errors_store_nothing_and_old_slots_are_swept() {
        let cache: ResultCache<u32, u32> = ResultCache::new(Duration::from_secs(1));
        assert_eq!(cache.get(1, || async { Err::<u32, _>("busy") }).await.unwrap_err(), "busy");
        assert!(matches!(cache.get(1, || async { Ok::<_, ()>(7) }).await, Ok(Fetched::Fresh(_))));
        for key in 0..FIRST_SWEEP as u32 * 4 {
            cache.get(key, || async { Ok::<_, ()>(key) }).await.unwrap();
            if key % 512 == 0 {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
        assert!(cache.len() <= FIRST_SWEEP * 2, "{} slots", cache.len());
    }
}
