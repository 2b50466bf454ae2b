//! The probe budget: how many connections an experiment may open from each source address, and how
//! fast.
//!
//! OpenSSH 9.8+ charges every connection that leaves without authenticating (1 s each by default)
//! to its source address, lets the charge decay in real time, and refuses the address once more than
//! 15 s are outstanding (docs/facts.md §5). A prober that ignores this measures its own penalty. So every
//! connection an experiment opens, probe or held, is taken from a per-source budget first, and the
//! report says what was spent.
//!
//! Two kinds of budget:
//! - [`Budget::new`]: a plain cap per source address (benchmarks that spread over many addresses,
//!   tests);
//! - [`Budget::penalty_safe`]: sshd's own arithmetic. Each address has an estimate of the penalty it
//!   owes the server, decaying one second per second; a connection may be made while the estimate
//!   stays at or under the limit (10 by default, well under sshd's 15). That is a first burst of
//!   about ten connections, then about one a second, and [`Budget::take`] waits for its turn instead
//!   of giving up. Once a banner shows a server without penalties (OpenSSH before 9.8, dropbear),
//!   [`Budget::server_has_no_penalties`] lifts the pacing.
//!
//! A penalty outlives the process, so the estimates can be kept in a [`Ledger`] file between runs:
//! two diagnoses back to back then share one account per server (address and port) and source
//! address. The ledger also remembers the software each server's banner named, so a server known to
//! have no penalties (OpenSSH before 9.8, dropbear: docs/facts.md §5) is not paced from the first
//! connection of the next run, and another server on the same host keeps its own account.

use super::sources::Source;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
// tokio's clock, so tests can pause it; the same as std's outside tests.
use tokio::time::Instant;

/// The default for a penalty-safe budget: the most penalty seconds a source address may owe a server
/// before it waits (sshd blocks past 15).
pub const DEFAULT_PER_SOURCE: u32 = 10;

/// How a budget meters connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pace {
    /// At most `per_source` connections per source address, ever.
    Cap,
    /// sshd's penalty arithmetic: at most `per_source` seconds owed, decaying in real time.
    PenaltySafe,
}

/// Connections allowed per source address, and those spent.
pub struct Budget {
    per_source: u32,
    pace: Pace,
    /// Whether the server may penalise (true until a banner says otherwise).
    penalties: AtomicBool,
    accounts: Mutex<BTreeMap<Source, Account>>,
    /// At most this many connections from one address in all, whatever the pace
    /// ([`Budget::max_per_address`]); `None`: no such cap.
    max_per_address: Option<u32>,
    /// Whether the per-address cap refused a connection.
    capped: AtomicBool,
    /// Told when a probe waits for the budget, and how long: progress for people.
    on_wait: Option<WaitReport>,
}

/// What [`Budget::on_wait`] calls: the source that waits, and for how long.
type WaitReport = Box<dyn Fn(Source, Duration) + Send + Sync>;

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget")
            .field("per_source", &self.per_source)
            .field("pace", &self.pace)
            .field("accounts", &self.accounts)
            .finish_non_exhaustive()
    }
}

/// One source address's account.
#[derive(Debug, Clone, Copy)]
struct Account {
    spent: u32,
    /// Penalty seconds estimated outstanding at `at`.
    owed: f64,
    at: Instant,
    waited: Duration,
}

impl Account {
    fn new(owed: f64) -> Account {
        Account { spent: 0, owed, at: Instant::now(), waited: Duration::ZERO }
    }

    /// The estimate now: what was owed, less the time since.
    fn owed_now(&self, now: Instant) -> f64 {
        (self.owed - now.saturating_duration_since(self.at).as_secs_f64()).max(0.0)
    }
}

/// What a run spent, for the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BudgetUse {
    /// Connections allowed per source address ([`Pace::Cap`]), or penalty seconds it may owe
    /// ([`Pace::PenaltySafe`]).
    pub per_source: u32,
    /// How the budget metered.
    pub pace: Pace,
    /// Connections opened from each source.
    pub spent: BTreeMap<Source, u32>,
    /// How long the run waited for the budget: the longest any one address waited (addresses wait
    /// side by side).
    #[serde(skip_serializing_if = "is_zero")]
    pub waited_ms: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Budget {
    /// A cap of `per_source` connections for each source address.
    pub fn new(per_source: u32) -> Budget {
        Budget::with(per_source, Pace::Cap)
    }

    /// sshd's penalty arithmetic, at most `per_source` seconds owed per source address.
    pub fn penalty_safe(per_source: u32) -> Budget {
        Budget::with(per_source, Pace::PenaltySafe)
    }

    fn with(per_source: u32, pace: Pace) -> Budget {
        Budget {
            per_source,
            pace,
            penalties: AtomicBool::new(true),
            accounts: Mutex::new(BTreeMap::new()),
            max_per_address: None,
            capped: AtomicBool::new(false),
            on_wait: None,
        }
    }

    /// Caps the connections one source address may open in all, whatever the pace: a ban-safe
    /// budget for servers behind a ban-after-failures daemon (fail2ban counts every
    /// identification-only connection as a failure in its aggressive mode).
    pub fn max_per_address(mut self, cap: u32) -> Budget {
        self.max_per_address = Some(cap);
        self
    }

    /// Connections `source` may still open under the per-address cap; `None`: no cap.
    pub(crate) fn cap_remaining(&self, source: impl Into<Source>) -> Option<u32> {
        let source = source.into();
        let spent = self.accounts().get(&source).map_or(0, |a| a.spent);
        self.max_per_address.map(|cap| cap.saturating_sub(spent))
    }

    /// Whether the per-address cap ([`Budget::max_per_address`]) refused a connection.
    pub fn capped(&self) -> bool {
        self.capped.load(Ordering::Relaxed)
    }

    /// Calls `report` whenever a probe has to wait for the budget, with the source and the wait.
    pub fn on_wait(mut self, report: impl Fn(Source, Duration) + Send + Sync + 'static) -> Budget {
        self.on_wait = Some(Box::new(report));
        self
    }

    fn accounts(&self) -> std::sync::MutexGuard<'_, BTreeMap<Source, Account>> {
        self.accounts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A banner showed a server that does not penalise (OpenSSH before 9.8, dropbear): connections
    /// are no longer paced (a [`Pace::Cap`] budget keeps its cap).
    pub fn server_has_no_penalties(&self) {
        self.penalties.store(false, Ordering::Relaxed);
    }

    /// A banner showed a server that penalises (OpenSSH 9.8+): pacing resumes, whatever an earlier
    /// run remembered of the software there (it may have been upgraded since).
    pub fn server_has_penalties(&self) {
        self.penalties.store(true, Ordering::Relaxed);
    }

    /// Whether connections are paced by the penalty arithmetic now.
    fn paced(&self) -> bool {
        self.pace == Pace::PenaltySafe && self.penalties.load(Ordering::Relaxed)
    }

    /// Takes one connection from `source`'s budget now; false when it is spent (a cap) or would
    /// push the address's estimated penalty over the limit.
    pub(crate) fn try_take(&self, source: impl Into<Source>) -> bool {
        self.wait_for(source.into(), Instant::now()).is_none()
    }

    /// Takes one connection from `source`'s budget, waiting for it until `until` (forever without
    /// one); false when the budget will never allow it (a spent cap) or `until` comes first.
    pub async fn take(&self, source: impl Into<Source>, until: Option<Instant>) -> bool {
        let source = source.into();
        let started = Instant::now();
        loop {
            let now = Instant::now();
            let Some(wait) = self.wait_for(source, now) else {
                let waited = started.elapsed();
                if let Some(a) = self.accounts().get_mut(&source) {
                    a.waited += waited;
                }
                return true;
            };
            if wait == Duration::MAX || until.is_some_and(|u| now + wait > u) {
                return false;
            }
            if let Some(report) = &self.on_wait {
                report(source, wait);
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes a connection from `source` if the budget allows it at `now` (`None`), or says how long
    /// until it will (`Duration::MAX`: never).
    fn wait_for(&self, source: Source, now: Instant) -> Option<Duration> {
        let paced = self.paced();
        let mut accounts = self.accounts();
        let account = accounts.entry(source).or_insert_with(|| Account::new(0.0));
        if self.max_per_address.is_some_and(|cap| account.spent >= cap) {
            self.capped.store(true, Ordering::Relaxed);
            return Some(Duration::MAX);
        }
        match self.pace {
            Pace::Cap if account.spent >= self.per_source => return Some(Duration::MAX),
            Pace::PenaltySafe if paced => {
                let owed = account.owed_now(now);
                let over = owed + 1.0 - f64::from(self.per_source);
                if over > 0.0 {
                    // A little more than the excess, so the next look finds room.
                    return Some(Duration::from_secs_f64(over + 0.01));
                }
            }
            _ => {}
        }
        account.owed = account.owed_now(now) + 1.0;
        account.at = now;
        account.spent += 1;
        None
    }

    /// Counts a connection from `source` that was made whatever the budget said (polling for a
    /// penalty to lift): what was spent stays honest.
    pub fn charge(&self, source: impl Into<Source>) {
        let source = source.into();
        let now = Instant::now();
        let mut accounts = self.accounts();
        let account = accounts.entry(source).or_insert_with(|| Account::new(0.0));
        account.owed = account.owed_now(now) + 1.0;
        account.at = now;
        account.spent += 1;
    }

    /// Connections `source` may still open now.
    pub fn remaining(&self, source: impl Into<Source>) -> u32 {
        let source = source.into();
        let accounts = self.accounts();
        let account = accounts.get(&source).copied().unwrap_or_else(|| Account::new(0.0));
        let paced = match self.pace {
            Pace::Cap => self.per_source.saturating_sub(account.spent),
            Pace::PenaltySafe if self.paced() => {
                (f64::from(self.per_source) - account.owed_now(Instant::now())).floor().max(0.0) as u32
            }
            Pace::PenaltySafe => u32::MAX,
        };
        self.max_per_address.map_or(paced, |cap| paced.min(cap.saturating_sub(account.spent)))
    }

    /// What was spent so far.
    pub fn usage(&self) -> BudgetUse {
        let accounts = self.accounts();
        BudgetUse {
            per_source: self.per_source,
            pace: self.pace,
            spent: accounts
                .iter()
                .filter(|(_, a)| a.spent > 0)
                .map(|(source, a)| (*source, a.spent))
                .collect(),
            // Addresses wait side by side: the longest wait, never more than the run lasted.
            waited_ms: accounts.values().map(|a| a.waited.as_millis() as u64).max().unwrap_or(0),
        }
    }

    /// Starts the accounts of `server` from what `ledger` says they owe now, and lifts the pacing
    /// when the ledger remembers a banner there from a server without penalties. What an older
    /// ledger kept per address only (no port) counts against every port of that address.
    pub fn load(&self, ledger: &Ledger, server: SocketAddr) {
        if ledger.software(server).is_some_and(|sw| !crate::server::Software::parse(sw).has_penalties()) {
            self.server_has_no_penalties();
        }
        let now_unix = unix_ms();
        let now = Instant::now();
        let mut accounts = self.accounts();
        for (source, entry) in ledger.entries.iter().filter(|(k, _)| k.is_of(server)) {
            let age = now_unix.saturating_sub(entry.at_unix_ms) as f64 / 1000.0;
            let owed = (entry.owed - age).max(0.0);
            if owed > 0.0 {
                let account = accounts.entry(source.source.into()).or_insert_with(|| Account::new(0.0));
                account.owed = account.owed_now(now) + owed;
                account.at = now;
            }
        }
    }

    /// Writes what `server`'s accounts owe now into `ledger`. Entries an older ledger kept for the
    /// address alone were loaded into these accounts, so they are replaced (migrated) here.
    pub fn store(&self, ledger: &mut Ledger, server: SocketAddr) {
        let now = Instant::now();
        let at_unix_ms = unix_ms();
        ledger.entries.retain(|k, _| !(k.server == server.ip() && k.port.is_none()));
        for (source, account) in self.accounts().iter() {
            let owed = account.owed_now(now);
            let key = LedgerKey { server: server.ip(), port: Some(server.port()), source: source.ip() };
            if owed > 0.0 {
                ledger.entries.insert(key, LedgerEntry { owed, at_unix_ms });
            } else {
                ledger.entries.remove(&key);
            }
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Penalty estimates kept between runs: per server (address and port) and source address, what is
/// owed and when that was written; and per server, the software its banner named. A file in the
/// state directory ([`Ledger::default_path`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ledger {
    entries: BTreeMap<LedgerKey, LedgerEntry>,
    /// The software each server's banner named (`OpenSSH_9.2p1`), and when it was seen.
    software: BTreeMap<SocketAddr, (String, u64)>,
}

/// How long a banner's software is remembered: long enough for a day's repeated diagnoses, short
/// enough that an upgrade to a penalising sshd is not assumed away for long (a banner that shows
/// penalties resumes the pacing at once anyway).
const SOFTWARE_KEPT_MS: u64 = 7 * 24 * 3600 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct LedgerKey {
    server: IpAddr,
    /// `None`: written by an older sshprobe that kept the address only.
    port: Option<u16>,
    source: Option<IpAddr>,
}

impl LedgerKey {
    /// Whether this entry counts against `server`.
    fn is_of(&self, server: SocketAddr) -> bool {
        self.server == server.ip() && self.port.is_none_or(|p| p == server.port())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct LedgerEntry {
    owed: f64,
    at_unix_ms: u64,
}

/// A ledger entry as the file holds it: a penalty owed (`software` absent), or the software a
/// server's banner named (`software` present, nothing owed).
#[derive(Serialize, Deserialize)]
struct LedgerLine {
    server: IpAddr,
    /// Absent in files from before the ledger kept ports: the address's every port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<IpAddr>,
    #[serde(default)]
    owed: f64,
    at_unix_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    software: Option<String>,
}

impl Ledger {
    /// Remembers the software `server`'s banner named (an ident's `softwareversion`).
    pub fn saw(&mut self, server: SocketAddr, software: &str) {
        self.software.insert(server, (software.to_string(), unix_ms()));
    }

    /// The software a banner from `server` named in this run or an earlier one, if remembered.
    pub fn software(&self, server: SocketAddr) -> Option<&str> {
        self.software
            .get(&server)
            .filter(|(_, at)| unix_ms().saturating_sub(*at) < SOFTWARE_KEPT_MS)
            .map(|(sw, _)| sw.as_str())
    }

    /// Where the ledger lives: `$SSHPROBE_STATE_DIR` (empty: nowhere, no ledger), else
    /// `$XDG_STATE_HOME/sshprobe`, else `~/.local/state/sshprobe`.
    pub fn default_path() -> Option<PathBuf> {
        let dir = match std::env::var_os("SSHPROBE_STATE_DIR") {
            Some(d) if d.is_empty() => return None,
            Some(d) => PathBuf::from(d),
            None => match std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
                Some(d) => PathBuf::from(d).join("sshprobe"),
                None => PathBuf::from(std::env::var_os("HOME")?).join(".local/state/sshprobe"),
            },
        };
        Some(dir.join("penalty-ledger.json"))
    }

    /// Takes from `other` every entry this ledger lacks or holds in an older version (by when it was
    /// written): how a long-running process (`serve`) folds in what other runs wrote to the file
    /// since it read it, before it paces and before it writes.
    pub fn merge_newer(&mut self, other: Ledger) {
        for (key, entry) in other.entries {
            match self.entries.get(&key) {
                Some(mine) if mine.at_unix_ms >= entry.at_unix_ms => {}
                _ => {
                    self.entries.insert(key, entry);
                }
            }
        }
        for (server, (software, at)) in other.software {
            match self.software.get(&server) {
                Some((_, mine)) if *mine >= at => {}
                _ => {
                    self.software.insert(server, (software, at));
                }
            }
        }
    }

    /// Reads the ledger at `path`; an absent or unreadable file is an empty ledger (logged).
    pub fn read(path: &Path) -> Ledger {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!("reading the penalty ledger {}: {e}", path.display());
                }
                return Ledger::default();
            }
        };
        let lines: Vec<LedgerLine> = serde_json::from_str(&text).unwrap_or_else(|e| {
            tracing::warn!("the penalty ledger {} is not valid ({e}): starting afresh", path.display());
            Vec::new()
        });
        let mut ledger = Ledger::default();
        for l in lines {
            match (l.software, l.port) {
                (Some(sw), Some(port)) => {
                    ledger.software.insert(SocketAddr::new(l.server, port), (sw, l.at_unix_ms));
                }
                (Some(_), None) => {}
                (None, port) => {
                    ledger.entries.insert(
                        LedgerKey { server: l.server, port, source: l.source },
                        LedgerEntry { owed: l.owed, at_unix_ms: l.at_unix_ms },
                    );
                }
            }
        }
        ledger
    }

    /// Writes the ledger to `path` (whole, through a temporary file), dropping what is paid off.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let now = unix_ms();
        let mut lines: Vec<LedgerLine> = self
            .entries
            .iter()
            .filter(|(_, e)| e.owed - now.saturating_sub(e.at_unix_ms) as f64 / 1000.0 > 0.0)
            .map(|(k, e)| LedgerLine {
                server: k.server,
                port: k.port,
                source: k.source,
                owed: e.owed,
                at_unix_ms: e.at_unix_ms,
                software: None,
            })
            .collect();
        lines.extend(
            self.software.iter().filter(|(_, (_, at))| now.saturating_sub(*at) < SOFTWARE_KEPT_MS).map(
                |(server, (sw, at))| LedgerLine {
                    server: server.ip(),
                    port: Some(server.port()),
                    source: None,
                    owed: 0.0,
                    at_unix_ms: *at,
                    software: Some(sw.clone()),
                },
            ),
        );
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&lines).map_err(std::io::Error::other)?)?;
        std::fs::rename(&tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cap_is_per_source() {
        let b = Budget::new(2);
        let a: Option<IpAddr> = Some("127.0.0.2".parse().unwrap());
        assert!(b.try_take(None) && b.try_take(None) && !b.try_take(None));
        assert!(b.try_take(a));
        assert_eq!(b.remaining(a), 1);
        assert_eq!(b.remaining(None), 0);
        let u = b.usage();
        assert_eq!(u.spent[&Source::KernelChoice], 2);
        assert_eq!(u.spent[&Source::Address("127.0.0.2".parse().unwrap())], 1);
        b.charge(None);
        assert_eq!(b.usage().spent[&Source::KernelChoice], 3);
        assert_eq!(b.remaining(None), 0);
    }

    /// sshd's arithmetic: a burst up to the limit, then one connection per second of decay.
    #[tokio::test(start_paused = true)]
    async fn a_penalty_safe_budget_bursts_then_paces_at_one_a_second() {
        let b = Budget::penalty_safe(10);
        for _ in 0..10 {
            assert!(b.try_take(None));
        }
        assert!(!b.try_take(None), "an 11th at once would owe 11 s");
        // Waiting is allowed: the 11th comes about a second later, the 12th a second after that.
        let started = tokio::time::Instant::now();
        assert!(b.take(None, None).await);
        let first = started.elapsed();
        assert!(b.take(None, None).await);
        let second = started.elapsed();
        assert!(first >= Duration::from_millis(990) && first < Duration::from_millis(1100), "{first:?}");
        assert!(second - first >= Duration::from_millis(990), "{second:?}");
        // With a deadline too close, it gives up instead.
        let until = Some(Instant::now() + Duration::from_millis(100));
        assert!(!b.take(None, until).await);
        // Another address has its own account.
        assert!(b.try_take(Some("127.77.0.1".parse().unwrap())));
        // A server without penalties lifts the pacing.
        b.server_has_no_penalties();
        for _ in 0..20 {
            assert!(b.try_take(None));
        }
        assert_eq!(b.usage().spent[&Source::KernelChoice], 32);
    }

    #[test]
    fn a_ledger_carries_what_is_owed_to_the_next_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/penalty-ledger.json");
        let server: SocketAddr = "127.0.0.1:22".parse().unwrap();
        let first = Budget::penalty_safe(10);
        for _ in 0..8 {
            assert!(first.try_take(None));
        }
        let mut ledger = Ledger::read(&path);
        first.store(&mut ledger, server);
        ledger.write(&path).unwrap();
        // The next run, at once: about 8 s owed, so 2 more now and then it must wait.
        let second = Budget::penalty_safe(10);
        second.load(&Ledger::read(&path), server);
        assert!(second.try_take(None) && second.try_take(None));
        assert!(!second.try_take(None), "the ledger's 8 s were forgotten");
        // Another server's accounts are untouched.
        let other = Budget::penalty_safe(10);
        other.load(&Ledger::read(&path), "127.0.0.2:22".parse().unwrap());
        assert_eq!(other.remaining(None), 10);
        // So are another port's on the same host (dropbear beside sshd).
        let port = Budget::penalty_safe(10);
        port.load(&Ledger::read(&path), "127.0.0.1:2222".parse().unwrap());
        assert_eq!(port.remaining(None), 10);
        // A broken file is an empty ledger.
        std::fs::write(&path, b"not json").unwrap();
        assert_eq!(Ledger::read(&path), Ledger::default());
    }

    /// A banner remembered from a server without penalties lifts the pacing from the first
    /// connection of the next run; OpenSSH 9.8+ remembered keeps it.
    #[test]
    fn a_ledger_remembers_the_software_per_address_and_port() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("penalty-ledger.json");
        let old: SocketAddr = "127.0.0.1:22".parse().unwrap();
        let new: SocketAddr = "127.0.0.1:2200".parse().unwrap();
        let bear: SocketAddr = "127.0.0.1:2222".parse().unwrap();
        let mut ledger = Ledger::default();
        for (server, sw) in [(old, "OpenSSH_9.2p1"), (new, "OpenSSH_9.9"), (bear, "dropbear_2022.83")] {
            let b = Budget::penalty_safe(10);
            for _ in 0..10 {
                assert!(b.try_take(None));
            }
            b.store(&mut ledger, server);
            ledger.saw(server, sw);
        }
        ledger.write(&path).unwrap();
        let ledger = Ledger::read(&path);
        assert_eq!(ledger.software(old), Some("OpenSSH_9.2p1"));
        assert_eq!(ledger.software("127.0.0.1:2".parse().unwrap()), None);
        for (server, paced) in [(old, false), (new, true), (bear, false)] {
            let b = Budget::penalty_safe(10);
            b.load(&ledger, server);
            assert_eq!(!b.try_take(None), paced, "{server}: 10 s owed, paced {paced}");
        }
        // A banner that shows penalties resumes the pacing (the server was upgraded).
        let b = Budget::penalty_safe(10);
        b.load(&ledger, old);
        b.server_has_penalties();
        assert!(!b.try_take(None));
    }

    /// A long-running exporter folds in what a CLI run wrote to the file after it read it: the newer
    /// of two entries wins, and entries only one side has are kept.
    #[test]
    fn merging_keeps_the_newer_entry_and_every_other() {
        let (a, b): (SocketAddr, SocketAddr) =
            ("127.0.0.1:22".parse().unwrap(), "127.0.0.1:2200".parse().unwrap());
        let owing = |server: SocketAddr, n: u32| {
            let mut ledger = Ledger::default();
            let budget = Budget::penalty_safe(10);
            for _ in 0..n {
                budget.charge(None);
            }
            budget.store(&mut ledger, server);
            ledger
        };
        let mut serve = owing(a, 2);
        std::thread::sleep(Duration::from_millis(5));
        let mut cli = owing(a, 9);
        cli.merge_newer(owing(b, 4));
        cli.saw(b, "OpenSSH_9.9");
        serve.merge_newer(cli);
        assert_eq!(serve.software(b), Some("OpenSSH_9.9"));
        for (server, n) in [(a, 9), (b, 4)] {
            let budget = Budget::penalty_safe(10);
            budget.load(&serve, server);
            assert_eq!(budget.remaining(None), 10 - n, "{server}");
        }
    }

    /// A ledger written before it kept ports (address only) still reads: its debt counts against
    /// every port of the address, software unknown, and is migrated to the port on store.
    #[test]
    fn an_address_only_ledger_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("penalty-ledger.json");
        let at = unix_ms();
        std::fs::write(
            &path,
            format!(r#"[{{"server":"127.0.0.1","owed":8.0,"at_unix_ms":{at}}},{{"server":"127.0.0.1","source":"127.77.0.1","owed":3.0,"at_unix_ms":{at}}}]"#),
        )
        .unwrap();
        let mut ledger = Ledger::read(&path);
        let server: SocketAddr = "127.0.0.1:2222".parse().unwrap();
        assert_eq!(ledger.software(server), None);
        let b = Budget::penalty_safe(10);
        b.load(&ledger, server);
        assert!(b.try_take(None) && b.try_take(None) && !b.try_take(None), "the old 8 s were forgotten");
        assert_eq!(b.remaining(Some("127.77.0.1".parse().unwrap())), 7);
        b.store(&mut ledger, server);
        assert!(ledger.entries.keys().all(|k| k.port == Some(2222)), "{:?}", ledger.entries);
        ledger.write(&path).unwrap();
        let again = Budget::penalty_safe(10);
        again.load(&Ledger::read(&path), server);
        assert!(!again.try_take(None), "the migrated debt was lost");
    }
}
