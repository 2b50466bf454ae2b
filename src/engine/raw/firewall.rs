//! The host setup the raw engine needs, held by guards: a source-port range the kernel never uses,
//! an nftables rule that keeps the kernel from resetting our connections, and a lock so only one raw
//! engine per network namespace owns both.
//!
//! Why (docs/facts.md §7): the server's SYN-ACK reaches a kernel that owns no socket for the 4-tuple, and the
//! kernel answers it with an RST that kills the connection we are making in user space. So the
//! engine takes its source ports from outside `ip_local_port_range` (no kernel socket ever gets one
//! of those by accident) and, for the run, drops every RST leaving from those ports unless it carries
//! our mark, which only the engine's own socket sets:
//!
//! ```text
//! table inet sshprobe_raw {
//!     chain output {
//!         type filter hook output priority 0; policy accept;
//!         tcp sport 61000-65535 tcp flags & rst == rst meta mark != 0x53505257 drop
//!     }
//!     chain prerouting {
//!         type filter hook prerouting priority raw; policy accept;
//!         meta nfproto ipv4 tcp dport 61000-65535 fib daddr type local drop
//!     }
//! }
//! ```
//!
//! The prerouting chain is there when the engine reads IPv4 through a packet socket (which sees
//! each packet before the IP layer): our flows' inbound segments are then dropped before the
//! kernel's TCP looks for a socket, finds none and builds the reset the output rule would drop, as
//! masscan and zmap keep the kernel out of their flows. While the engine runs, its port range is
//! its own: nothing else on the host can be reached at those ports over IPv4.
//!
//! The table is created as "create it, delete it, create it" in one `nft -f` transaction, which
//! also replaces a table a killed run left behind; the [`Firewall`] guard deletes it on drop, and the
//! CLI drops it on Ctrl-C and SIGTERM too. A run killed with SIGKILL leaves the table; the next run
//! replaces it, and the [`RunLock`] (an `flock`, released by the kernel when its holder dies) tells
//! that run the table is stale rather than another live run's.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::ops::RangeInclusive;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The nftables table the engine owns (family `inet`: IPv4 and IPv6).
pub(crate) const TABLE: &str = "sshprobe_raw";

/// The packet mark (SO_MARK) on the engine's socket: its own RSTs pass the rule.
pub const MARK: u32 = 0x5350_5257;

/// Errors of the host setup.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// `nft` is not installed.
    #[error(
        "nft not found: install nftables, or pass --no-firewall and drop the kernel's RSTs from \
         ports {ports} yourself"
    )]
    NftMissing {
        /// The engine's port range, as `lo-hi`.
        ports: String,
    },
    /// `nft` refused the script.
    #[error("nft failed ({status}): {stderr}")]
    Nft {
        /// Its exit status.
        status: String,
        /// What it said.
        stderr: String,
    },
    /// `ip_local_port_range` leaves no room.
    #[error(
        "no source ports for the raw engine: ip_local_port_range is {lo}-{hi}, leaving fewer than \
         {min} ports above or below it"
    )]
    NoPorts {
        /// The kernel's range, low end.
        lo: u16,
        /// The kernel's range, high end.
        hi: u16,
        /// The fewest ports the engine accepts.
        min: u16,
    },
    /// The source ports asked for (`--source-ports`) overlap the kernel's ephemeral range.
    #[error(
        "source ports {ports} overlap ip_local_port_range {lo}-{hi}: the kernel could give those ports \
         to other connections, whose resets the engine's firewall rule would drop; choose ports outside it"
    )]
    PortsOverlap {
        /// The ports asked for, as `lo-hi`.
        ports: String,
        /// The kernel's range, low end.
        lo: u16,
        /// The kernel's range, high end.
        hi: u16,
    },
    /// Another raw engine holds this network namespace.
    #[error(
        "another sshprobe raw engine is running in this network namespace (pid {}, lock {path}); \
         two would share source ports and the firewall table",
        pid.map_or("unknown".to_string(), |p| p.to_string())
    )]
    Busy {
        /// Who holds it, as far as the lock file says.
        pid: Option<u32>,
        /// The lock file.
        path: PathBuf,
    },
    /// Some other I/O error, with what was being done.
    #[error("{what}: {source}")]
    Io {
        /// What failed.
        what: String,
        /// Why.
        source: io::Error,
    },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> SetupError {
    let what = what.into();
    move |source| SetupError::Io { what, source }
}

/// The fewest source ports the engine works with.
pub(crate) const MIN_PORTS: u16 = 256;

/// The source ports for the raw engine: those above the kernel's ephemeral range (or, when that
/// reaches 65535, below it, above 1024).
pub(crate) fn port_range() -> Result<RangeInclusive<u16>, SetupError> {
    let (lo, hi) = local_port_range()?;
    ports_outside(lo, hi)
}

/// Checks source ports the user chose: they must lie outside the kernel's ephemeral range.
pub(crate) fn check_ports(ports: &RangeInclusive<u16>) -> Result<(), SetupError> {
    let (lo, hi) = local_port_range()?;
    if *ports.end() < lo || *ports.start() > hi {
        Ok(())
    } else {
        Err(SetupError::PortsOverlap { ports: format!("{}-{}", ports.start(), ports.end()), lo, hi })
    }
}

fn local_port_range() -> Result<(u16, u16), SetupError> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .map_err(io_error("reading /proc/sys/net/ipv4/ip_local_port_range"))?;
    parse_local_port_range(&text).ok_or_else(|| SetupError::Io {
        what: "parsing /proc/sys/net/ipv4/ip_local_port_range".into(),
        source: io::Error::new(io::ErrorKind::InvalidData, text.trim().to_string()),
    })
}

fn parse_local_port_range(text: &str) -> Option<(u16, u16)> {
    let mut it = text.split_whitespace().map(str::parse::<u16>);
    match (it.next(), it.next()) {
        (Some(Ok(lo)), Some(Ok(hi))) if lo <= hi => Some((lo, hi)),
        _ => None,
    }
}

fn ports_outside(lo: u16, hi: u16) -> Result<RangeInclusive<u16>, SetupError> {
    if u32::from(u16::MAX - hi) >= u32::from(MIN_PORTS) {
        Ok(hi + 1..=u16::MAX)
    } else if lo > 1024 && lo - 1024 >= MIN_PORTS {
        Ok(1024..=lo - 1)
    } else {
        Err(SetupError::NoPorts { lo, hi, min: MIN_PORTS })
    }
}

/// The nftables script that (re)creates the table for `ports`. With `prerouting` (the engine reads
/// IPv4 through a packet socket, which sees packets before IP does) it also drops, before
/// connection tracking, the IPv4 TCP segments addressed to this host at those ports, so the kernel's
/// TCP never runs for them: no lookup, no reset built and then dropped on its way out.
pub(crate) fn rule_script(ports: &RangeInclusive<u16>, prerouting: bool) -> String {
    let (lo, hi) = (ports.start(), ports.end());
    let inbound = if prerouting {
        format!(
            "\tchain prerouting {{\n\
             \t\ttype filter hook prerouting priority raw; policy accept;\n\
             \t\tmeta nfproto ipv4 tcp dport {lo}-{hi} fib daddr type local drop\n\
             \t}}\n"
        )
    } else {
        String::new()
    };
    format!(
        "table inet {TABLE}\n\
         delete table inet {TABLE}\n\
         table inet {TABLE} {{\n\
         \tchain output {{\n\
         \t\ttype filter hook output priority 0; policy accept;\n\
         \t\ttcp sport {lo}-{hi} tcp flags & rst == rst meta mark != {MARK:#x} drop\n\
         \t}}\n\
         {inbound}\
         }}\n"
    )
}

/// The script that deletes the table whether or not it exists.
fn delete_script() -> String {
    format!("table inet {TABLE}\ndelete table inet {TABLE}\n")
}

fn nft(script: &str, ports: &RangeInclusive<u16>) -> Result<(), SetupError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => {
                SetupError::NftMissing { ports: format!("{}-{}", ports.start(), ports.end()) }
            }
            _ => SetupError::Io { what: "running nft".into(), source: e },
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).map_err(io_error("writing to nft"))?;
    }
    let output = child.wait_with_output().map_err(io_error("waiting for nft"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(SetupError::Nft {
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().replace('\n', " "),
        })
    }
}

/// The engine's nftables table, for as long as this guard lives.
#[derive(Debug)]
pub struct Firewall {
    ports: RangeInclusive<u16>,
    installed: std::sync::atomic::AtomicBool,
}

impl Firewall {
    /// Installs the rule for `ports` (and, with `prerouting`, the drop of their inbound IPv4
    /// segments: see `rule_script`), replacing any table a previous run left.
    pub fn install(ports: RangeInclusive<u16>, prerouting: bool) -> Result<Firewall, SetupError> {
        nft(&rule_script(&ports, prerouting), &ports)?;
        tracing::debug!(table = TABLE, ?ports, "nftables rule installed");
        Ok(Firewall { ports, installed: true.into() })
    }

    /// Deletes a table a previous run left, if any (for runs without the rule).
    pub(crate) fn remove_leftover(ports: &RangeInclusive<u16>) -> Result<(), SetupError> {
        nft(&delete_script(), ports)
    }

    /// Deletes the table now (idempotent; also done on drop).
    pub fn remove(&self) {
        if self.installed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            match nft(&delete_script(), &self.ports) {
                Ok(()) => tracing::debug!(table = TABLE, "nftables rule removed"),
                Err(e) => tracing::warn!("removing nftables table inet {TABLE}: {e}"),
            }
        }
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Whether `nft list tables` output names the engine's table.
pub fn tables_include_ours(listing: &str) -> bool {
    listing.lines().any(|l| l.trim() == format!("table inet {TABLE}"))
}

/// An exclusive lock on the raw engine for this network namespace, released when dropped or when
/// the process dies.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock for the current network namespace, or says who holds it. When the holder is
    /// this very process (an engine of ours still shutting down), waits for it a little.
    pub(crate) fn acquire() -> Result<RunLock, SetupError> {
        let mut tries = 0;
        loop {
            match Self::acquire_once() {
                Err(SetupError::Busy { pid: Some(pid), .. }) if pid == std::process::id() && tries < 500 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                result => return result,
            }
        }
    }

    fn acquire_once() -> Result<RunLock, SetupError> {
        let netns = std::fs::read_link("/proc/self/ns/net")
            .ok()
            .and_then(|p| p.to_str().map(|s| s.chars().filter(char::is_ascii_digit).collect::<String>()))
            .unwrap_or_default();
        let dir = ["/run/lock", "/run", "/tmp"].into_iter().map(Path::new).find(|d| d.is_dir());
        let path = dir.unwrap_or(Path::new("/tmp")).join(format!("sshprobe-raw-{netns}.lock"));
        Self::acquire_at(path)
    }

    fn acquire_at(path: PathBuf) -> Result<RunLock, SetupError> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_error(format!("opening {}", path.display())))?;
        // SAFETY: flock on a descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(SetupError::Busy { pid: holder.trim().parse().ok(), path });
            }
            return Err(SetupError::Io { what: format!("locking {}", path.display()), source: err });
        }
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = writeln!(file, "{}", std::process::id());
        Ok(RunLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_above_or_below_the_kernel_range() {
        assert_eq!(parse_local_port_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_local_port_range("9 3"), None);
        assert_eq!(ports_outside(32768, 60999).unwrap(), 61000..=65535);
        assert_eq!(ports_outside(32768, 65535).unwrap(), 1024..=32767);
        assert!(matches!(ports_outside(1024, 65535), Err(SetupError::NoPorts { .. })));
    }

    #[test]
    fn the_rule_is_narrow() {
        let script = rule_script(&(61000..=65535), false);
        assert!(script.starts_with("table inet sshprobe_raw\ndelete table inet sshprobe_raw\n"));
        assert!(script.contains("tcp sport 61000-65535 tcp flags & rst == rst meta mark != 0x53505257 drop"));
        assert!(!script.contains("prerouting"));
        // The inbound drop: IPv4 only (IPv6 still comes through the kernel), to this host only (not
        // what it forwards), the engine's ports only.
        let script = rule_script(&(61000..=65535), true);
        assert!(script.contains("tcp sport 61000-65535 tcp flags & rst == rst meta mark != 0x53505257 drop"));
        assert!(script.contains("hook prerouting priority raw;"));
        assert!(script.contains("meta nfproto ipv4 tcp dport 61000-65535 fib daddr type local drop"));
    }

    #[test]
    fn listing_is_recognised() {
        assert!(tables_include_ours("table inet filter\ntable inet sshprobe_raw\n"));
        assert!(!tables_include_ours("table inet sshprobe_raw_other\n"));
    }

    #[test]
    fn the_lock_is_exclusive_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.lock");
        let first = RunLock::acquire_at(path.clone()).unwrap();
        match RunLock::acquire_at(path.clone()) {
            Err(SetupError::Busy { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("{other:?}"),
        }
        drop(first);
        assert!(RunLock::acquire_at(path).is_ok());
    }
}
