//! This host's own connections to a server: which processes here hold established TCP connections
//! to a given address and port, and from which local addresses.
//!
//! A server's connection limits count every unauthenticated connection, including those other
//! programs on *this* machine hold: a jump host running Ansible with 50 forks fills `MaxStartups`
//! (or dropbear's `MAX_UNAUTH_CLIENTS`) by itself, and the refusals it then gets look like an access
//! rule or a penalty from the outside. Before blaming the server, `diagnose` asks the kernel what
//! this host holds:
//!
//! - [`parse_tcp_table`] reads the text of `/proc/net/tcp` or `/proc/net/tcp6` (pure: tested on
//!   captured tables) into [`Socket`]s: addresses, state, owning uid and socket inode;
//! - [`socket_owners`] maps socket inodes to processes through the `/proc/PID/fd/*` links
//!   (`socket:[INODE]`) and `/proc/PID/comm`, tolerating processes that exit meanwhile and fds it
//!   may not read;
//! - [`HostConnections::gather`] puts the two together for one remote address, leaving out the
//!   local ports the caller names (its own probes), and [`HostConnections::from_sockets`] is the
//!   pure grouping behind it.
//!
//! `/proc/net/tcp*` shows the network namespace of the reading process, which is the one whose
//! connections the server sees from this host. The kernel's netlink `sock_diag` interface would give
//! the same table without text parsing, but its Rust crates (`netlink-packet-sock-diag`) bring a
//! family of netlink crates for one query, and the owners still have to come from `/proc/*/fd`;
//! the text format has been stable since Linux 2.6.

use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

/// A TCP socket's state, as `/proc/net/tcp` numbers it (`include/net/tcp_states.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TcpState {
    /// `01`: the three-way handshake is done; data may flow.
    Established,
    /// `02`: our SYN is out, no answer yet.
    SynSent,
    /// `03`: a listener's half-open connection.
    SynRecv,
    /// `0A`: a listening socket.
    Listen,
    /// Any other state (the closing ones), with its number.
    Other(u8),
}

impl TcpState {
    fn from_code(code: u8) -> TcpState {
        match code {
            0x01 => TcpState::Established,
            0x02 => TcpState::SynSent,
            0x03 => TcpState::SynRecv,
            0x0A => TcpState::Listen,
            other => TcpState::Other(other),
        }
    }
}

/// One line of `/proc/net/tcp` or `tcp6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Socket {
    /// The local address and port.
    pub local: SocketAddr,
    /// The remote address and port (`0.0.0.0:0` for a listener).
    pub remote: SocketAddr,
    /// Its state.
    pub state: TcpState,
    /// The owning user.
    pub uid: u32,
    /// The socket's inode: what `/proc/PID/fd/N` links to as `socket:[INODE]`. Zero for a socket no
    /// file refers to any more (closed by its process, still in the kernel's table).
    pub inode: u64,
}

/// A line of a `/proc/net/tcp*` table that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line} of the TCP table does not parse: {text:?}")]
pub struct TableError {
    /// The line number, from 1 (the header is line 1).
    pub line: usize,
    /// The line, cut to 200 characters.
    pub text: String,
}

/// Parses the text of `/proc/net/tcp` or `/proc/net/tcp6` (the header line is skipped). Every line
/// after the header must parse: the format is the kernel's, and a line that does not parse means
/// this is not such a table.
///
/// Addresses are printed by the kernel as the hexadecimal of 32-bit words in the machine's byte
/// order (`0100007F:0016` is 127.0.0.1 port 22 on a little-endian machine); IPv4-mapped IPv6
/// addresses (`::ffff:a.b.c.d`, a dual-stack socket talking IPv4) are returned as IPv4, so that one
/// comparison finds a connection in either table.
pub fn parse_tcp_table(text: &str) -> Result<Vec<Socket>, TableError> {
    text.lines()
        .enumerate()
        .skip(1)
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            parse_line(line).ok_or_else(|| TableError { line: i + 1, text: line.chars().take(200).collect() })
        })
        .collect()
}

/// `sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...`
fn parse_line(line: &str) -> Option<Socket> {
    let mut fields = line.split_whitespace();
    let _slot = fields.next()?.strip_suffix(':')?;
    let local = parse_endpoint(fields.next()?)?;
    let remote = parse_endpoint(fields.next()?)?;
    let state = TcpState::from_code(u8::from_str_radix(fields.next()?, 16).ok()?);
    let _queues = fields.next()?;
    let _timer = fields.next()?;
    let _retransmits = fields.next()?;
    let uid = fields.next()?.parse().ok()?;
    let _timeout = fields.next()?;
    let inode = fields.next()?.parse().ok()?;
    Some(Socket { local, remote, state, uid, inode })
}

/// `0100007F:0016` or `00000000000000000000000001000000:0016`.
fn parse_endpoint(text: &str) -> Option<SocketAddr> {
    let (address, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    // The kernel prints each 32-bit word of the address as a number in host byte order.
    let word = |hex: &str| u32::from_str_radix(hex, 16).ok().map(u32::to_ne_bytes);
    let ip = match address.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(address)?)),
        32 => {
            let mut octets = [0u8; 16];
            for (i, chunk) in octets.chunks_exact_mut(4).enumerate() {
                chunk.copy_from_slice(&word(address.get(8 * i..8 * i + 8)?)?);
            }
            Ipv6Addr::from(octets).to_canonical()
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// A process that holds sockets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Process {
    /// Its pid.
    pub pid: u32,
    /// Its command name (`/proc/PID/comm`: at most 15 bytes, what `ps` shows).
    pub name: String,
}

/// Which process holds each socket inode in `wanted`, from the `/proc/PID/fd/*` links under `proc`
/// (normally `/proc`). Processes that exit while we look, and fd directories we may not read (other
/// users' processes, without root), are skipped: their sockets stay unowned. A socket shared by
/// several processes (inherited over `fork`) goes to the lowest pid, usually the parent. Stops
/// looking once every wanted inode is found.
pub fn socket_owners(proc: &Path, wanted: &HashSet<u64>) -> HashMap<u64, Process> {
    let mut owners: HashMap<u64, Process> = HashMap::new();
    if wanted.is_empty() {
        return owners;
    }
    let Ok(entries) = std::fs::read_dir(proc) else { return owners };
    let mut pids: Vec<u32> =
        entries.flatten().filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok())).collect();
    pids.sort_unstable();
    for pid in pids {
        if owners.len() == wanted.len() {
            break;
        }
        let dir = proc.join(pid.to_string());
        let Ok(fds) = std::fs::read_dir(dir.join("fd")) else { continue };
        let mut name = None;
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else { continue };
            let Some(inode) = socket_inode(&target.to_string_lossy()) else { continue };
            if !wanted.contains(&inode) || owners.contains_key(&inode) {
                continue;
            }
            let name = name.get_or_insert_with(|| command_name(&dir));
            owners.insert(inode, Process { pid, name: name.clone() });
        }
    }
    owners
}

/// `socket:[12345]` → 12345.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// `/proc/PID/comm` without its newline, escaped for a terminal (a process names itself), or `?`
/// when it has gone.
fn command_name(dir: &Path) -> String {
    match std::fs::read(dir.join("comm")) {
        Ok(bytes) => bytes.trim_ascii_end().escape_ascii().to_string(),
        Err(_) => "?".into(),
    }
}

/// Connections from one process (or from no process found) and one local address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Owner {
    /// The process, when one was found (a socket of another user's process is not, without root).
    pub process: Option<Process>,
    /// The owning user (from the socket table: known even when the process is not).
    pub uid: u32,
    /// The local address the connections come from.
    pub local: IpAddr,
    /// How many.
    pub count: u32,
}

impl fmt::Display for Owner {
    /// `python3 (pid 4242) holds 5 from 10.0.0.5`, or `a process of uid 1000 holds 5 from ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.process {
            Some(p) => write!(f, "{} (pid {})", p.name, p.pid)?,
            None => write!(f, "a process of uid {}", self.uid)?,
        }
        write!(f, " holds {} from {}", self.count, self.local)
    }
}

/// The established TCP connections from this host to one server, by owner and local address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HostConnections {
    /// The server.
    pub remote: Option<SocketAddr>,
    /// Who holds them, most connections first.
    pub by_owner: Vec<Owner>,
}

/// Why the connections could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum HostConnectionsError {
    /// A table could not be read (no `/proc`, not Linux).
    #[error("reading {path}: {source}")]
    Read {
        /// The table.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A table did not parse.
    #[error("{path}: {source}")]
    Parse {
        /// The table.
        path: String,
        /// The line.
        source: TableError,
    },
}

impl HostConnections {
    /// Reads `/proc/net/tcp` and `/proc/net/tcp6` and the owners of the established connections to
    /// `remote`, leaving out those whose local port is in `exclude_local_ports` (the caller's own).
    /// A missing `tcp6` (IPv6 disabled) is no error.
    pub fn gather(
        remote: SocketAddr,
        exclude_local_ports: &HashSet<u16>,
    ) -> Result<HostConnections, HostConnectionsError> {
        Self::gather_from(Path::new("/proc"), remote, exclude_local_ports)
    }

    /// [`HostConnections::gather`] with another `/proc`.
    pub(crate) fn gather_from(
        proc: &Path,
        remote: SocketAddr,
        exclude_local_ports: &HashSet<u16>,
    ) -> Result<HostConnections, HostConnectionsError> {
        let mut sockets = Vec::new();
        for (table, required) in [("net/tcp", true), ("net/tcp6", false)] {
            let path = proc.join(table);
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(HostConnectionsError::Read { path: path.display().to_string(), source })
                }
            };
            let parsed = parse_tcp_table(&text)
                .map_err(|source| HostConnectionsError::Parse { path: path.display().to_string(), source })?;
            sockets.extend(parsed);
        }
        let wanted: HashSet<u64> = matching(&sockets, remote, exclude_local_ports).map(|s| s.inode).collect();
        let owners = socket_owners(proc, &wanted);
        Ok(HostConnections::from_sockets(&sockets, remote, exclude_local_ports, &owners))
    }

    /// The pure grouping: the established `sockets` to `remote` not from an excluded local port,
    /// counted by owner (from `owners`, by inode) and local address.
    pub fn from_sockets(
        sockets: &[Socket],
        remote: SocketAddr,
        exclude_local_ports: &HashSet<u16>,
        owners: &HashMap<u64, Process>,
    ) -> HostConnections {
        let mut groups: BTreeMap<(Option<u32>, u32, IpAddr), Owner> = BTreeMap::new();
        for s in matching(sockets, remote, exclude_local_ports) {
            let process = owners.get(&s.inode).cloned();
            let key = (process.as_ref().map(|p| p.pid), s.uid, s.local.ip());
            groups
                .entry(key)
                .or_insert_with(|| Owner { process, uid: s.uid, local: s.local.ip(), count: 0 })
                .count += 1;
        }
        let mut by_owner: Vec<Owner> = groups.into_values().collect();
        by_owner.sort_by_key(|o| std::cmp::Reverse(o.count));
        HostConnections { remote: Some(remote), by_owner }
    }

    /// All the connections counted.
    pub fn total(&self) -> u32 {
        self.by_owner.iter().map(|o| o.count).sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_owner.is_empty()
    }
}

/// The established sockets to `remote` (IPv4-mapped addresses compared as IPv4) from a port not in
/// `exclude`.
fn matching<'a>(
    sockets: &'a [Socket],
    remote: SocketAddr,
    exclude: &'a HashSet<u16>,
) -> impl Iterator<Item = &'a Socket> + 'a {
    let remote = SocketAddr::new(remote.ip().to_canonical(), remote.port());
    sockets.iter().filter(move |s| {
        s.state == TcpState::Established && s.remote == remote && !exclude.contains(&s.local.port())
    })
}

impl fmt::Display for HostConnections {
    /// One owner per line; `no connections from this host` when there are none.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.by_owner.is_empty() {
            return write!(f, "no connections from this host");
        }
        for (i, owner) in self.by_owner.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{owner}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = include_str!("../tests/fixtures/hostconns/tcp");
    const TCP6: &str = include_str!("../tests/fixtures/hostconns/tcp6");

    fn sockets() -> Vec<Socket> {
        let mut all = parse_tcp_table(TCP).expect("tcp parses");
        all.extend(parse_tcp_table(TCP6).expect("tcp6 parses"));
        all
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_captured_tables() {
        // Captured here: listeners on 127.0.0.1:55799 and [::]:55613 (dual stack), two connections
        // from 127.0.0.2 to the first, one from ::1 and one IPv4 one to the second, and an IPv6
        // socket connected to the IPv4 listener through a mapped address.
        let v4 = parse_tcp_table(TCP).unwrap();
        assert_eq!(v4.len(), 7);
        assert_eq!(v4[0].local, addr("127.0.0.1:55799"));
        assert_eq!(v4[0].state, TcpState::Listen);
        assert_eq!(v4[0].inode, 922078);
        let from_two: Vec<&Socket> = v4.iter().filter(|s| s.local.ip() == addr("127.0.0.2:0").ip()).collect();
        assert_eq!(from_two.len(), 2);
        assert!(from_two
            .iter()
            .all(|s| s.remote == addr("127.0.0.1:55799") && s.state == TcpState::Established));
        assert_eq!(from_two[0].local.port(), 0x817B);

        let v6 = parse_tcp_table(TCP6).unwrap();
        assert_eq!(v6.len(), 5);
        assert_eq!(v6[0].local, addr("[::]:55613"));
        assert_eq!(v6[1].local, addr("[::1]:55613"));
        assert_eq!(v6[1].remote, addr("[::1]:44188"));
        // ::ffff:127.0.0.1 reads as 127.0.0.1.
        assert_eq!(v6[3].local, addr("127.0.0.1:60258"));
        assert_eq!(v6[3].remote, addr("127.0.0.1:55799"));
        assert_eq!((v6[3].uid, v6[3].inode), (0, 922084));
    }

    #[test]
    fn garbage_is_an_error_with_its_line() {
        let err = parse_tcp_table("header\n   0: 0100007F:0016 zz\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(parse_tcp_table("header\n   0: 01007F:0016 00000000:0000 0A 0:0 0:0 0 0 0 1\n").is_err());
        assert_eq!(parse_tcp_table("header only\n").unwrap(), vec![]);
    }

    #[test]
    fn groups_by_owner_and_local_address_and_leaves_out_excluded_ports() {
        let all = sockets();
        let owners = HashMap::from([
            (922080, Process { pid: 4242, name: "python3".into() }),
            (922081, Process { pid: 4242, name: "python3".into() }),
        ]);
        let remote = addr("127.0.0.1:55799");
        let c = HostConnections::from_sockets(&all, remote, &HashSet::new(), &owners);
        // Two from python3 at 127.0.0.2, and the mapped IPv6 socket (no owner known) from 127.0.0.1.
        assert_eq!(c.total(), 3, "{c:?}");
        assert_eq!(c.by_owner[0].to_string(), "python3 (pid 4242) holds 2 from 127.0.0.2");
        assert_eq!(c.by_owner[1].to_string(), "a process of uid 0 holds 1 from 127.0.0.1");
        assert_eq!(
            c.to_string(),
            "python3 (pid 4242) holds 2 from 127.0.0.2\na process of uid 0 holds 1 from 127.0.0.1"
        );
        // Our own probes' ports are not counted; nor are the server side's sockets (remote differs).
        let c = HostConnections::from_sockets(&all, remote, &HashSet::from([0x817B, 60258]), &owners);
        assert_eq!(c.total(), 1);
        // The dual-stack listener: one IPv6 client and one IPv4 client (seen by the server as mapped).
        let c = HostConnections::from_sockets(&all, addr("[::1]:55613"), &HashSet::new(), &HashMap::new());
        assert_eq!(c.total(), 1);
        let c =
            HostConnections::from_sockets(&all, addr("127.0.0.1:55613"), &HashSet::new(), &HashMap::new());
        assert_eq!(c.total(), 1);
        assert_eq!(c.by_owner[0].local, addr("127.0.0.1:0").ip());
        let none = HostConnections::from_sockets(&all, addr("127.0.0.1:22"), &HashSet::new(), &owners);
        assert!(none.is_empty());
        assert_eq!(none.to_string(), "no connections from this host");
    }

    #[test]
    fn socket_links_and_names() {
        assert_eq!(socket_inode("socket:[922080]"), Some(922080));
        assert_eq!(socket_inode("pipe:[1]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
        // A fake /proc: one process with a socket, one gone, one with a hostile name.
        let proc = tempfile::tempdir().unwrap();
        for (pid, name, inode) in [(10, "a\x1b[31m\n", 5u64), (11, "b\n", 6)] {
            let dir = proc.path().join(pid.to_string());
            std::fs::create_dir_all(dir.join("fd")).unwrap();
            std::fs::write(dir.join("comm"), name).unwrap();
            std::os::unix::fs::symlink(format!("socket:[{inode}]"), dir.join("fd/3")).unwrap();
            std::os::unix::fs::symlink("/dev/null", dir.join("fd/0")).unwrap();
        }
        std::fs::create_dir_all(proc.path().join("12")).unwrap(); // exited: no fd directory
        std::fs::create_dir_all(proc.path().join("self")).unwrap();
        let owners = socket_owners(proc.path(), &HashSet::from([5, 6, 7]));
        assert_eq!(owners[&5], Process { pid: 10, name: "a\\x1b[31m".into() });
        assert_eq!(owners[&6].pid, 11);
        assert!(!owners.contains_key(&7));
        assert!(socket_owners(proc.path(), &HashSet::new()).is_empty());
    }
}
