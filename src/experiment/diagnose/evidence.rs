//! What a verdict rests on, typed: [`Evidence`] (one kind per fact [`super::decide()`] cites, with its
//! numbers) and [`Note`] (what limited the experiments).
//!
//! No English here: `report::diagnose` writes each for people and puts its fields in the JSON, so a
//! test or a script matches on the kind and reads the numbers instead of parsing a sentence.

use super::facts::{HostHolder, NotTestedReason, Tally};
use super::persource::Count;
use crate::experiment::sources::Source;
use crate::outcome::{KnownRefusal, Outcome};
use crate::server::Software;
use serde::Serialize;

/// One fact a verdict rests on. Durations in microseconds (`_us`) or milliseconds (`_ms`); `software`
/// is the server family from a banner, when any probe got one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Evidence {
    /// The server's KEXINIT, read after a working exchange: what it prefers and what it means.
    KexOffer {
        /// Its most preferred key exchange (pseudo-algorithms left out).
        kex: Option<String>,
        /// Its most preferred host-key algorithm.
        host_key: Option<String>,
        /// Whether it does strict key exchange.
        strict_kex: bool,
        /// Whether it is exposed to the Terrapin attack.
        terrapin_exposed: bool,
        /// Whether it offers a post-quantum key exchange.
        post_quantum: bool,
    },
    /// Some OpenSSH clients share nothing of one kind with the server's offer.
    ClientsCannotNegotiate {
        /// Which kind of algorithm.
        missing: crate::kexinit::openssh::Kind,
        /// The client versions that fail.
        clients: Vec<&'static str>,
        /// What the server offers for it.
        server_offers: Vec<String>,
        /// The client-side option that makes it work (weakening security).
        workaround: String,
    },
    /// No probe could be made at all.
    NoProbes {
        /// Why.
        reason: NotTestedReason,
    },
    /// Every probe with nothing held failed to connect in the same way (`refused`, `connect_timeout`,
    /// `unreachable`).
    ConnectFailed {
        /// How.
        outcome: Outcome,
        /// How many probes.
        probes: usize,
    },
    /// Every probe with nothing held met something that is not an SSH-2 server.
    NotSsh {
        /// Their outcomes.
        tally: Tally,
        /// What it said (a message, or an SSH-1 server's software).
        said: String,
    },
    /// What the probes with nothing held got (baseline and determinism).
    Unloaded {
        /// Their outcomes.
        tally: Tally,
    },
    /// What a second source address got with nothing held.
    SecondSource {
        /// The address.
        source: Source,
        /// Its probes' outcomes.
        tally: Tally,
    },
    /// Every probe with nothing held was refused with a line that names a limit.
    RefusalMessage {
        /// The line.
        message: String,
        /// What it is.
        refusal: KnownRefusal,
        /// Median time from connect to close.
        median_us: u64,
        /// How many refusals.
        probes: usize,
    },
    /// Another address is served while this one is refused with nothing held, by a server that has
    /// PerSourcePenalties (or sent its line): a penalty on this address.
    ServedElsewhereWithPenalties {
        /// The server family.
        software: Option<Software>,
    },
    /// Another address is served, by a server without penalties: a per-source limit.
    ServedElsewhereWithoutPenalties {
        /// The server family.
        software: Option<Software>,
    },
    /// OpenSSH 9.8+'s one line for three limits, and no second address to tell them apart.
    AmbiguousRefusalLine,
    /// Another address is refused too while we hold nothing: global MaxStartups, held full by others.
    RefusedEverywhere,
    /// Every refusal closed without sending a byte.
    ZeroByteClose {
        /// Median time from connect to close.
        median_us: u64,
        /// How many refusals had a close time.
        probes: usize,
        /// The source address they came from.
        source: Source,
        /// How long the server itself took (the close less the connect round trip), median; the
        /// close's own median when no probe measured its connect.
        server_delay_us: u64,
        /// The fastest and slowest of those; `None` when no probe measured its connect, so the
        /// round trip could not be taken out.
        #[serde(skip_serializing_if = "Option::is_none")]
        server_delay_range_us: Option<(u64, u64)>,
        /// The delay the class is decided by: the fastest close less twice the fastest connect
        /// (scheduling only adds time, so these are the closest to the server's own).
        fastest_delay_us: u64,
        /// Where in the server that delay places the close.
        class: DelayClass,
    },
    /// The zero-byte close came about 5 s after accept: Debian's TCP-wrappers delay.
    WrappersDelay {
        /// Median time from connect to close.
        median_us: u64,
    },
    /// Another address gets a banner: the access rule matches the probing address only.
    RuleMatchesThisAddressOnly,
    /// dropbear closing at once on one address while another is served: MAX_UNAUTH_PER_IP.
    DropbearPerSourceClose,
    /// A zero-byte close at the listener from every address, and nothing on this host holds
    /// connections to the server: a connection table filled by others on a server that sends no
    /// message (dropbear's MAX_UNAUTH_CLIENTS, OpenSSH before 8.2), or a forwarder with no backend.
    ListenerDropEverywhere {
        /// The server's median delay.
        server_delay_us: u64,
    },
    /// A zero-byte close at the listener on this address while another address is served: a
    /// per-address limit at the listener.
    ListenerDropThisAddress,
    /// The close came from a session process (milliseconds: fork, exec, then exit before the
    /// banner), from every address: the server cannot start sessions.
    SessionProcessDies {
        /// The server's median delay.
        server_delay_us: u64,
    },
    /// The close came from a session process for this address only, while another is served: an
    /// access rule that closes at once (TCP wrappers without Debian's delay, an ACL in a wrapper).
    SessionProcessRefusesThisAddress {
        /// The server's median delay.
        server_delay_us: u64,
    },
    /// This host holds established connections to the server besides diagnose's own: if
    /// unauthenticated, they fill its limits like anyone's.
    HostHoldsConnections {
        /// By owner and local address.
        holders: Vec<HostHolder>,
        /// How many in all.
        total: u32,
        /// How many from the probing address.
        from_probing_address: u32,
    },
    /// A line the server logged while we probed, that explains a refusal (a drop and its reason, a
    /// wrappers denial, a host key it cannot load, a fatal error).
    ServerLogged {
        /// The line, as cited (escaped).
        line: String,
        /// What it is (`drop`, `wrapper_refused_connect`, `banned`...).
        event: crate::serverlog::LogEventKind,
        /// Whether it names one of our probes' connections (by source port); `false`: it names no
        /// port, and was logged while we probed (or before, see `before_run`).
        ours: bool,
        /// Logged in the minutes before this run, about one of our addresses (a ban, a penalty).
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        before_run: bool,
    },
    /// Lines the server logged while we probed that diagnose does not know: shown, never dropped.
    ServerLoggedUnknown {
        /// The lines, as cited (escaped), at most a few.
        lines: Vec<String>,
        /// How many there were in all.
        count: usize,
    },
    /// dropbear's log has lines for other connections but none for our refused probes: its limits
    /// drop a connection without a word, which is itself its signature.
    DropbearSilentAboutDrops,
    /// Some SYNs were answered and others not, or connections were accepted whose banner never came:
    /// a server that has stopped accepting (its listen queue full), not a firewall.
    HungServer {
        /// Probes whose SYNs got no answer.
        syn_unanswered: usize,
        /// Probes accepted by the kernel that never got a banner.
        accepted_silent: usize,
    },
    /// A zero-byte close on every probe, neither fast nor at the wrappers delay.
    UnusualZeroByteClose {
        /// Median time from connect to close.
        median_us: u64,
    },
    /// Every probe was refused with a message no sshd limit sends.
    UnknownRefusal {
        /// The message.
        message: String,
    },
    /// The server accepts but never sends a (complete) banner.
    NoBanner {
        /// How many probes timed out.
        probes: usize,
        /// What it sent before stalling (`SSH-2.0-`), if anything.
        #[serde(skip_serializing_if = "Option::is_none")]
        partial: Option<String>,
    },
    /// Banners first, then only refusals, while another address is served: a penalty that began
    /// during the diagnosis.
    PenaltyBegan {
        /// Probes that got a banner before the first refusal.
        banners: usize,
    },
    /// Some probes refused with nothing held while another address is served: a per-source limit
    /// filled by others on this address.
    RefusedHereServedElsewhere {
        /// Refused probes.
        refused: usize,
        /// All probes with nothing held.
        probes: usize,
    },
    /// Some probes refused at random with nothing held: MaxStartups between `start` and `full`.
    RandomRefusals {
        /// Refused probes.
        refused: usize,
        /// All probes with nothing held.
        probes: usize,
    },
    /// Failures that fit no rule.
    NoPattern,
    /// Every probe with nothing held got a banner.
    UnloadedBanners {
        /// How many.
        probes: usize,
        /// The server family.
        software: Option<Software>,
    },
    /// Probes under load timed out waiting for the banner (nothing refused).
    LoadTimeouts {
        /// How many.
        timeouts: usize,
    },
    /// Every probe got a banner up to this many held connections.
    ServedUnderLoad {
        /// The most connections held.
        max_held: u32,
    },
    /// The first load at which something was refused, and what the probes got there.
    LoadRefusals {
        /// Connections held.
        held: u32,
        /// Whether they were held from the probing address.
        from_probing_source: bool,
        /// The probes' outcomes at that load.
        tally: Tally,
    },
    /// Our attempts to hold more connections were refused on the way to the load.
    HoldRefused {
        /// How many attempts.
        attempts: u32,
    },
    /// What the refusals under load said.
    RefusalsSaid {
        /// The line.
        message: String,
    },
    /// What a fresh address got at the same load.
    FreshAddressUnderLoad {
        /// Its probes' outcomes.
        tally: Tally,
    },
    /// What the probing address got after we released every held connection.
    AfterRelease {
        /// Its probes' outcomes.
        tally: Tally,
    },
    /// The probing address stayed refused after the release while a fresh address was served.
    PenaltyOutlivedLoad,
    /// Refusals began with connections held from the probing address, a fresh address was served,
    /// and they cleared on release: a per-source limit.
    PerSourceUnderLoad {
        /// Connections held when refusals began.
        held: u32,
    },
    /// Refusals began with this many connections held: MaxStartups `start` is at most that.
    MaxStartupsUnderLoad {
        /// Connections held when refusals began.
        held: u32,
        /// Whether they cleared once released.
        cleared: bool,
    },
    /// Polling showed the penalty lift.
    PenaltyLifted {
        /// After how long.
        after_ms: u64,
    },
    /// Nobody waited for the penalty to lift.
    PenaltyLiftsLater,
    /// Polling for this long did not see the penalty lift.
    PenaltyNotLifted {
        /// How long we polled.
        polled_ms: u64,
    },
    /// The probing address's SYNs were refused (RST or ICMP) or went unanswered: `blocked` of its
    /// `probes` probes, after `served_first` banners.
    SynsBlocked {
        /// How the connects failed, counted.
        tally: Tally,
        /// Probes from the probing address in all.
        probes: usize,
        /// Banners it got before the first blocked SYN.
        served_first: usize,
    },
    /// Another address was served while this one was blocked.
    ServedElsewhere {
        /// The other address.
        source: Source,
        /// Its banners.
        banners: usize,
        /// Its probes.
        probes: usize,
    },
    /// This address was served earlier in the run, then blocked: diagnose's own probes tripped a
    /// ban-after-failures rule (fail2ban, sshguard, `recent`); the user's ssh is blocked too.
    BanTripped {
        /// Banners before the block.
        banners: usize,
    },
    /// After waiting with nothing held, the address was still blocked: not a rate limit.
    BlockOutlivedWait {
        /// How long we waited.
        waited_ms: u64,
    },
    /// Blocked only while this address held connections to the server: a connection-count rule
    /// (connlimit, nft `ct count`).
    CountLimit {
        /// Connections this address held (this host's and ours) when its SYNs were refused.
        held_here: u32,
        /// Whether the block lifted once ours were released.
        lifted: bool,
    },
    /// Blocked after a burst of new connections with nothing held, and served again after a wait: a
    /// rate limit on new connections (nft `limit rate`, `recent`, hashlimit).
    RateLimit {
        /// Banners before the first blocked SYN.
        passed: usize,
        /// How long we waited before it let us in again.
        waited_ms: u64,
    },
    /// Zero bytes and a close within a listener's delay, for this address only, with nothing held
    /// from it here: a rule at the listener (a proxy ACL, an allow list), not sshd's wrappers (which
    /// close after 5 s); or a per-address limit held full by others behind the same address (NAT).
    AtTheListener {
        /// The server's own delay to the close (median).
        server_delay_us: u64,
    },
    /// Banners after a fixed wait when we waited, at once when we spoke first: a protocol
    /// multiplexer (sslh and the like) waits for the client before it picks a backend.
    Multiplexer {
        /// Median wait for the banner when we waited.
        waited_ms: u64,
        /// Median wait when we spoke first.
        spoke_first_ms: u64,
    },
    /// Per-source against global, by Fisher's exact test (one-sided) on the two addresses' counts at
    /// the same load: the probing address refused, the other never, and the chance of counts at
    /// least this lopsided under one shared drop rate (`p_per_mille`) is under the stated error rate.
    PerSourceShown {
        /// The probing address's probes at that load.
        here: Count,
        /// The other address's probes at that load.
        elsewhere: Count,
        /// The test's p-value, in per mille.
        p_per_mille: u32,
        /// The error rate a per-source verdict needs, in per mille.
        error_rate_per_mille: u32,
    },
    /// The same test left per-source against global undecided (the budget or the per-address cap
    /// allowed no more probes): a global limit dropping at random, or a per-source limit; both are
    /// named.
    PerSourceUntold {
        /// The probing address's probes at that load.
        here: Count,
        /// The other address's probes at that load.
        elsewhere: Count,
        /// The test's p-value, in per mille.
        p_per_mille: u32,
        /// The error rate a per-source verdict needs, in per mille.
        error_rate_per_mille: u32,
    },
    /// Every probe after the release got a banner: random drops of `ruled_out_pct` or more now would
    /// have refused one of them but for the stated error rate (lower rates are not ruled out).
    ServedAfterRelease {
        /// Banners after the release.
        banners: u32,
        /// The least drop rate they rule out, in per cent (rounded up).
        ruled_out_pct: u32,
        /// The error rate, in per mille.
        error_rate_per_mille: u32,
    },
    /// Every probe of the run got a banner: random drops of `ruled_out_pct` or more would have
    /// refused one of them but for the stated error rate.
    NoDropsSeen {
        /// Banners in all, from every address.
        banners: u32,
        /// The least drop rate they rule out, in per cent (rounded up).
        ruled_out_pct: u32,
        /// The error rate, in per mille.
        error_rate_per_mille: u32,
    },
    /// Refusals came only while diagnose itself held connections, and cleared when it let them go:
    /// nothing refuses anyone now, but the server starts refusing at about `held` unauthenticated
    /// connections.
    RefusalsBeginAt {
        /// Connections held when refusals began.
        held: u32,
    },
}

/// Where in the server a refusal's delay places it (docs/facts.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, strum::IntoStaticStr)]
#[serde(into = "&'static str")]
#[strum(serialize_all = "snake_case")]
pub enum DelayClass {
    /// Under [`LISTENER_MAX_US`]: the listening process itself, before any fork (MaxStartups drops,
    /// dropbear's limits, a forwarder with no backend).
    Listener,
    /// Milliseconds: a session process was started and ended before its banner (fork and exec, a
    /// session that cannot start, a wrappers `twist` command).
    SessionProcess,
    /// About 5 s: Debian's TCP-wrappers child sleeps 5 s before closing a denied connection.
    WrappersDelay,
    /// Anything else.
    Other,
}

/// The slowest a listener drop is taken to be, in µs, judged by the fastest of a run's refusals
/// (`DelayClass::of_fastest`): listener drops measure 0.02–1.1 ms here (one of 3.4 ms on a loaded
/// machine, which the fastest of several does not see), a session process that dies before its
/// banner 4.0 ms on a quiet machine and 7.5–18 ms under load (docs/facts.md §3).
pub const LISTENER_MAX_US: u64 = 2_500;
/// The slowest a session process's close is taken to be, in µs.
pub(crate) const SESSION_MAX_US: u64 = 2_000_000;
/// Debian's wrappers delay, in µs.
pub(crate) const WRAPPERS_DELAY_US: std::ops::RangeInclusive<u64> = 4_500_000..=6_500_000;

/// The server's own delay over a run of refusals, as the class is decided by (see
/// [`DelayClass::of_fastest`]): `min(closed) − 2 × min(connected)`, in µs.
pub(crate) fn fastest_delay_us(refusals: &[&super::facts::ExperimentProbe]) -> u64 {
    let closed = refusals.iter().filter_map(|p| p.closed_us()).min();
    let connected = refusals.iter().filter_map(|p| p.connect_us()).min();
    closed.map_or(0, |closed| closed.saturating_sub(2 * connected.unwrap_or(0)))
}

impl DelayClass {
    /// The class of a run of refusals, by the server's own delay as the run's fastest close and
    /// fastest connect show it: `min(closed) − 2 × min(connected)`. Scheduling only ever adds
    /// time, to a close and to a connect alike, so each minimum is the closest of its kind to
    /// the truth. (The fastest of the probes' own corrections would not do: a connect seen late
    /// makes its probe's `closed − 2 × connected` too small, even below zero.)
    pub(crate) fn of_fastest(refusals: &[&super::facts::ExperimentProbe]) -> DelayClass {
        DelayClass::of(fastest_delay_us(refusals))
    }

    /// The class of a server-side delay of `us` microseconds.
    pub fn of(us: u64) -> DelayClass {
        if us < LISTENER_MAX_US {
            DelayClass::Listener
        } else if us <= SESSION_MAX_US {
            DelayClass::SessionProcess
        } else if WRAPPERS_DELAY_US.contains(&us) {
            DelayClass::WrappersDelay
        } else {
            DelayClass::Other
        }
    }
}

/// A caveat: what limited the experiments or the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Note {
    /// The per-source budget cut experiments short.
    BudgetExhausted,
    /// No second source address: per-source limits cannot be told from global ones.
    NoSecondSource,
    /// A second source address would tell a penalty from MaxStartups.
    SecondSourceWouldTell,
    /// Our own probes may have pushed an address near the penalty threshold over it.
    OwnProbesNearPenaltyThreshold,
    /// The exchange worked before the load experiment: our own connections may have earned the penalty.
    OwnProbesDuringLoad,
    /// The load experiment stopped short of a confident `ok`.
    LoadNotConfident {
        /// The most connections held.
        max_held: u32,
    },
    /// Refusals persisted after we released our connections.
    RefusalsPersisted,
    /// With one address, a block cannot be told from a host that went down, nothing listening, or a
    /// path firewall: a second address (`--source`) would tell.
    OneAddressLookAlikes,
    /// The per-address cap (`--max-per-address`) kept an experiment from running.
    CapKeptExperimentFromRunning,
    /// Probing from the blocked address stopped at once, to keep the block from growing.
    StoppedProbingBlockedAddress,
    /// The server's KEXINIT could not be read (a malformation, or none came).
    KexinitUnreadable {
        /// The malformation's name (`kexinit::KexError::name`).
        error: &'static str,
    },
    /// Older OpenSSH clients of the table cannot negotiate, current ones can.
    OlderClientsCannotNegotiate {
        /// The newest client versions that cannot (every older one cannot either).
        up_to: &'static str,
    },
    /// The offer is exposed to the Terrapin prefix-truncation attack (CVE-2023-48795).
    TerrapinExposed,
    /// No post-quantum key exchange is offered (OpenSSH 10 warns its users about such servers).
    NoPostQuantumKex,
}
