//! Targets as users write them, parsed without I/O.
//!
//! `host`, `host:port`, `1.2.3.4`, `1.2.3.4:2222`, `::1`, `[::1]:2222`, `10.0.0.0/24`,
//! `10.0.0.0/24:2222`, `[fd00::/120]:22`. A name is resolved later, by the runner, so that a list of
//! thousands of names streams instead of stalling on DNS up front.

use ipnet::IpNet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// One target as written: an address, a name to resolve, or a network to walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    /// An address and port.
    Addr(SocketAddr),
    /// A host name and port.
    Host {
        /// The name.
        name: String,
        /// The port.
        port: u16,
    },
    /// Every host address of a network, on one port.
    Net {
        /// The network.
        net: IpNet,
        /// The port.
        port: u16,
    },
}

impl fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetSpec::Addr(a) => write!(f, "{a}"),
            TargetSpec::Host { name, port } => write!(f, "{name}:{port}"),
            TargetSpec::Net { net: IpNet::V6(n), port } => write!(f, "[{n}]:{port}"),
            TargetSpec::Net { net, port } => write!(f, "{net}:{port}"),
        }
    }
}

impl TargetSpec {
    /// How many addresses a run probes for this spec: one for an address or a name; for a network,
    /// the addresses [`net_addrs`] walks (an IPv4 network larger than a /31 without its network and
    /// broadcast addresses, so a /30 gives 2 and a /24 254), saturating at `u128::MAX` for a /0.
    pub fn address_count(&self) -> u128 {
        match self {
            TargetSpec::Net { net: IpNet::V4(n), .. } => {
                let all = 1u128 << (32 - n.prefix_len());
                if n.prefix_len() < 31 {
                    all - 2
                } else {
                    all
                }
            }
            TargetSpec::Net { net: IpNet::V6(n), .. } => {
                1u128.checked_shl(128 - u32::from(n.prefix_len())).unwrap_or(u128::MAX)
            }
            _ => 1,
        }
    }
}

/// A target that cannot be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Empty text.
    #[error("empty target")]
    Empty,
    /// A port that is not a number from 1 to 65535.
    #[error("invalid port {} in target {}", crate::escape::quoted(port), crate::escape::quoted(target))]
    Port {
        /// The target as written.
        target: String,
        /// The port text.
        port: String,
    },
    /// A network that does not parse.
    #[error("invalid network {}: {reason}", crate::escape::quoted(target))]
    Net {
        /// The target as written.
        target: String,
        /// What is wrong.
        reason: String,
    },
    /// A host name with characters no host name has.
    #[error("invalid host name {}", crate::escape::quoted(.0))]
    Host(String),
    /// Numbers and dots that are not an IPv4 address (`999.1.1.1`, `10.1`): no host name ends in
    /// an all-numeric label (RFC 1123 §2.1, RFC 3696 §2), so this is a typo, never a name for DNS.
    #[error("invalid IPv4 address {}: expected four numbers from 0 to 255, e.g. 192.0.2.10", crate::escape::quoted(.0))]
    Ipv4(String),
    /// A name that did not resolve.
    #[error("cannot resolve {}: {reason}", crate::escape::quoted(target))]
    Resolve {
        /// The target as written.
        target: String,
        /// The resolver's answer.
        reason: String,
    },
    /// A line of a target file that could not be read.
    #[error("reading targets from {source_name}: {reason}")]
    Read {
        /// The file.
        source_name: String,
        /// What went wrong.
        reason: String,
    },
    /// A line of a target file that is not UTF-8 text (skipped; the lines after it are read).
    #[error("not UTF-8 text: {}", crate::escape::quoted(.0))]
    NotText(String),
    /// A target inside an excluded network (`--exclude`, `--exclude-file`): not probed.
    #[error("{target} ({addr}) is excluded ({}): not probed", exclusion_reason(*addr))]
    Excluded {
        /// The target as written.
        target: String,
        /// Its address.
        addr: IpAddr,
    },
    /// An error on one line of a target file, which it names as `FILE:LINE`.
    #[error("{file}:{line}: {error}")]
    AtLine {
        /// The file (`<stdin>` for `-`).
        file: String,
        /// The line number, from 1.
        line: u64,
        /// What is wrong with the line.
        error: Box<TargetError>,
    },
}

/// Why `addr` is excluded: a user's `--exclude`, or the default of [`never_unicast`].
fn exclusion_reason(addr: IpAddr) -> &'static str {
    if never_unicast().iter().any(|n| n.contains(&addr)) {
        "never a unicast host; --include-special probes it"
    } else {
        "--exclude"
    }
}

impl TargetError {
    /// This error, as found on `line` of `file`.
    pub(crate) fn at_line(self, file: &str, line: u64) -> TargetError {
        TargetError::AtLine { file: file.to_string(), line, error: Box::new(self) }
    }
}

/// Parses one target, with `default_port` where it names none. A target with a port list or range
/// (`host:22,2222`) is an error here: see [`parse_target_ports`].
pub fn parse_target(text: &str, default_port: u16) -> Result<TargetSpec, TargetError> {
    let text = text.trim();
    let (host, port) = split_port(text)?;
    let port = match port {
        None => default_port,
        Some(p) => p.parse::<u16>().ok().filter(|&p| p > 0).ok_or_else(|| port_error(text, p))?,
    };
    host_or_net(text, host, port)
}

/// Parses one target whose port may be a list or a range (`host:22,2222`, `10.0.0.0/24:2200-2210`),
/// with `default_ports` where it names none: one spec per port, in the order written.
pub fn parse_target_ports(text: &str, default_ports: &[u16]) -> Result<Vec<TargetSpec>, TargetError> {
    let text = text.trim();
    let (host, ports) = split_port(text)?;
    let ports = match ports {
        None => default_ports.to_vec(),
        Some(p) => parse_ports(p).map_err(|_| port_error(text, p))?,
    };
    ports.into_iter().map(|port| host_or_net(text, host, port)).collect()
}

/// Parses a port list: ports and ranges separated by commas (`22`, `22,2222,8022`, `2200-2210`,
/// `22,2200-2210`), each port from 1 to 65535, in the order written, without repeats.
pub fn parse_ports(text: &str) -> Result<Vec<u16>, String> {
    let bad =
        || format!("invalid port list {text:?}: expected ports from 1 to 65535, e.g. 22,2222 or 2200-2210");
    let port = |p: &str| p.trim().parse::<u16>().ok().filter(|&p| p > 0).ok_or_else(bad);
    let mut ports = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for part in text.split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (port(lo)?, port(hi)?),
            None => (port(part)?, port(part)?),
        };
        if lo > hi {
            return Err(bad());
        }
        ports.extend((lo..=hi).filter(|p| seen.insert(*p)));
    }
    Ok(ports)
}

fn port_error(text: &str, port: &str) -> TargetError {
    TargetError::Port { target: text.to_string(), port: port.to_string() }
}

/// Splits a target into its host (an address, a name or a network) and its port text, if any.
fn split_port(text: &str) -> Result<(&str, Option<&str>), TargetError> {
    if text.is_empty() {
        return Err(TargetError::Empty);
    }
    // [v6addr]:port, [v6net]:port, [v6addr]
    if let Some(rest) = text.strip_prefix('[') {
        let Some((inner, after)) = rest.split_once(']') else {
            return Err(TargetError::Host(text.to_string()));
        };
        return match after {
            "" => Ok((inner, None)),
            p => Ok((inner, Some(p.strip_prefix(':').ok_or_else(|| TargetError::Host(text.to_string()))?))),
        };
    }
    // A bare IPv6 address or network has several colons and no port.
    if text.matches(':').count() > 1 {
        return Ok((text, None));
    }
    Ok(match text.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (text, None),
    })
}

fn host_or_net(text: &str, host: &str, port: u16) -> Result<TargetSpec, TargetError> {
    if host.contains('/') {
        let net: IpNet = host.parse().map_err(|e: ipnet::AddrParseError| TargetError::Net {
            target: text.to_string(),
            reason: e.to_string(),
        })?;
        if net.prefix_len() == net.max_prefix_len() {
            return Ok(TargetSpec::Addr(SocketAddr::new(net.addr(), port)));
        }
        return Ok(TargetSpec::Net { net: net.trunc(), port });
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(TargetSpec::Addr(SocketAddr::new(ip, port)));
    }
    // The resolver would take `10.1` for 10.0.0.1 and send `999.1.1.1` to DNS: neither is a name.
    let last_label = host.strip_suffix('.').unwrap_or(host).rsplit('.').next().unwrap_or("");
    if !last_label.is_empty() && last_label.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TargetError::Ipv4(host.to_string()));
    }
    if !is_host_name(host) {
        return Err(TargetError::Host(host.to_string()));
    }
    Ok(TargetSpec::Host { name: host.to_string(), port })
}

/// Whether `name` is a host name as RFC 1123 §2.1 writes them (at most 253 characters, one
/// trailing dot allowed; labels of 1 to 63 letters, digits and hyphens, neither first nor last a
/// hyphen; `_` allowed as DNS service names use it). Only such a name goes to the resolver: `-5`
/// from a target file would reach getaddrinfo as an option-like word, `a..b` as nonsense.
pub(crate) fn is_host_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A warning for a target that means something else than it likely says: `::1:2901` is the IPv6
/// address `::1:2901` on the default port, not port 2901 of `::1` (that is `[::1]:2901`). Given
/// when a bare IPv6 address ends in a group of digits that would still leave an address without
/// it.
pub fn ambiguity_warning(text: &str, default_port: u16) -> Option<String> {
    let text = text.trim();
    if text.starts_with('[') || text.contains('/') {
        return None;
    }
    let ip: std::net::Ipv6Addr = text.parse().ok()?;
    let (head, last) = text.rsplit_once(':')?;
    let port: u16 = last.parse().ok().filter(|p| *p > 0 && last.bytes().all(|b| b.is_ascii_digit()))?;
    let addr: std::net::Ipv6Addr = head.parse().ok()?;
    Some(format!(
        "{text} is the IPv6 address {ip}, port {default_port}; for port {port} of {addr}, write [{addr}]:{port}"
    ))
}

/// Whether a target's text shows no port of its own although it could be read as one
/// ([`ambiguity_warning`]): reports then show it with its port, `[::1:2901]:22`.
pub(crate) fn hides_its_port(text: &str) -> bool {
    ambiguity_warning(text, 22).is_some()
}

/// Networks never to probe (`--exclude`, `--exclude-file`, a blocklist as zmap and masscan have),
/// checked for every address before a packet leaves. Kept as sorted, merged ranges, so a lookup is a
/// binary search however long the list (a /8 scan against a blocklist of thousands of networks).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exclusions {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl Exclusions {
    /// The exclusions of these networks (overlaps and neighbours merged).
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Exclusions {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for net in nets {
            match net {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
            }
        }
        Exclusions { v4: merged(v4), v6: merged(v6) }
    }

    /// Whether nothing is excluded.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Whether `ip` lies in an excluded network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => in_ranges(&self.v4, u32::from(a)),
            IpAddr::V6(a) => in_ranges(&self.v6, u128::from(a)),
        }
    }
}

/// Networks whose addresses are never a unicast host, from IANA's special-purpose address
/// registries (RFC 6890): "this network" 0.0.0.0/8 (RFC 791; a connection to 0.0.0.0 reaches the
/// local host on Linux), multicast 224.0.0.0/4 (RFC 5771), reserved 240.0.0.0/4 with the limited
/// broadcast 255.255.255.255 (RFC 1112, RFC 919), the unspecified `::` and multicast ff00::/8
/// (RFC 4291). A scan leaves them out unless asked (`probe --include-special`); private and
/// documentation ranges are hosts and stay in.
pub fn never_unicast() -> Vec<IpNet> {
    ["0.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4", "::/128", "ff00::/8"]
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// Whether a target written as `spec` reaches into [`never_unicast`] networks.
pub fn touches_never_unicast(spec: &TargetSpec) -> bool {
    let special = never_unicast();
    match spec {
        TargetSpec::Addr(a) => special.iter().any(|n| n.contains(&a.ip())),
        TargetSpec::Net { net, .. } => special.iter().any(|n| n.contains(net) || net.contains(n)),
        TargetSpec::Host { .. } => false,
    }
}

/// Parses one exclusion: a network (`10.0.0.0/8`, `fd00::/8`) or an address.
pub fn parse_exclusion(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .map(|n| n.trunc())
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("invalid network {text:?}: expected an address or CIDR, e.g. 10.0.0.0/8"))
}

fn merged<T: Ord + Copy + num_like::Successor>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match out.last_mut() {
            Some(last) if last.1.successor().is_none_or(|next| lo <= next) => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

fn in_ranges<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
    let i = ranges.partition_point(|&(lo, _)| lo <= x);
    i > 0 && x <= ranges[i - 1].1
}

mod num_like {
    /// The next integer, if any: for merging ranges that touch.
    pub(crate) trait Successor: Sized {
        fn successor(self) -> Option<Self>;
    }
    impl Successor for u32 {
        fn successor(self) -> Option<u32> {
            self.checked_add(1)
        }
    }
    impl Successor for u128 {
        fn successor(self) -> Option<u128> {
            self.checked_add(1)
        }
    }
}

/// Every address of a network in order: all of them for a /31 or /32 (/127, /128) and for IPv6,
/// the hosts (no network or broadcast address) for a larger IPv4 network.
pub fn net_addrs(net: IpNet, port: u16) -> impl Iterator<Item = SocketAddr> {
    net.hosts().map(move |ip| SocketAddr::new(ip, port))
}

/// The same addresses as [`net_addrs`], in a pseudo-random order fixed by `seed` (and the network):
/// the same seed gives the same order on every machine, so shards of one scan agree. Constant
/// memory, whatever the size of the network (a /8, a /64).
pub(crate) fn net_addrs_shuffled(net: IpNet, port: u16, seed: u64) -> impl Iterator<Item = SocketAddr> {
    let (base, bits, v4) = match net {
        IpNet::V4(n) => (u128::from(u32::from(n.network())), 32 - u32::from(n.prefix_len()), true),
        IpNet::V6(n) => (u128::from(n.network()), 128 - u32::from(n.prefix_len()), false),
    };
    // Offsets of the hosts within the network: skip the network and broadcast addresses of an IPv4
    // network larger than a /31, as `net_addrs` does.
    let first = u128::from(v4 && bits > 1);
    let last = match bits {
        128 => u128::MAX,
        b => (1u128 << b) - 1 - 2 * first,
    };
    let perm = Permutation::new(last, seed ^ mix(base as u64 ^ (base >> 64) as u64 ^ u64::from(bits)));
    (0..=last).map(move |i| {
        let offset = base + first + perm.apply(i);
        let ip = if v4 {
            IpAddr::from(std::net::Ipv4Addr::from(offset as u32))
        } else {
            IpAddr::from(std::net::Ipv6Addr::from(offset))
        };
        SocketAddr::new(ip, port)
    })
}

/// A pseudo-random permutation of `0..=last` in constant memory (a format-preserving shuffle): a
/// four-round Feistel network on the smallest even number of bits that holds `last`, cycle-walking
/// past values above `last`. The domain is less than four times the range, so a value takes fewer
/// than four rounds of walking on average. Spreads a scan across subnets the way zmap's cyclic group
/// does; not cryptographic.
#[derive(Debug, Clone)]
pub(crate) struct Permutation {
    last: u128,
    half_bits: u32,
    keys: [u64; 4],
}

impl Permutation {
    /// The permutation of `0..=last` chosen by `seed`.
    pub fn new(last: u128, seed: u64) -> Permutation {
        let bits = 128 - last.leading_zeros();
        let mut state = seed;
        let keys = [(); 4].map(|()| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            mix(state)
        });
        Permutation { last, half_bits: bits.div_ceil(2), keys }
    }

    /// Where position `i` (at most `last`) goes.
    pub fn apply(&self, i: u128) -> u128 {
        if self.last == 0 {
            return 0;
        }
        let mut x = self.encrypt(i);
        // Terminates: `i` is on the cycle, and every value on it that is at most `last` stops the walk.
        while x > self.last {
            x = self.encrypt(x);
        }
        x
    }

    fn encrypt(&self, x: u128) -> u128 {
        let h = self.half_bits;
        let mask = if h >= 64 { u64::MAX } else { (1u64 << h) - 1 };
        let (mut l, mut r) = ((x >> h) as u64 & mask, x as u64 & mask);
        for key in self.keys {
            (l, r) = (r, l ^ (mix(r ^ key) & mask));
        }
        (u128::from(l) << h) | u128::from(r)
    }
}

/// The splitmix64 finaliser: a cheap, well-spread 64-bit mix.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {

    #[test]
    fn only_rfc_1123_names_are_names() {
        for good in ["localhost", "a-b.example", "x1.example.", "_ssh._tcp.example", "a"] {
            assert!(is_host_name(good), "{good}");
        }
        for bad in ["-5", "a-", "a..b", "-rf", ".", "", &"a".repeat(64), "a b", "a/b"] {
            assert!(!is_host_name(bad), "{bad}");
            assert!(parse_target(bad, 22).is_err() || bad.contains('/'), "{bad}");
        }
    }

    #[test]
    fn a_port_written_without_brackets_is_warned_about() {
        let w = ambiguity_warning("::1:2901", 22).expect("a warning");
        assert!(w.contains("IPv6 address ::1:2901, port 22") && w.contains("[::1]:2901"), "{w}");
        assert!(ambiguity_warning("fe80::1:22", 22).is_some_and(|w| w.contains("[fe80::1]:22")));
        for plain in
            ["::1", "[::1]:2901", "1:2:3:4:5:6:7:8", "::1:abcd", "127.0.0.1:22", "host:22", "fd00::/120"]
        {
            assert_eq!(ambiguity_warning(plain, 22), None, "{plain}");
        }
        assert!(hides_its_port("::1:2901") && !hides_its_port("[::1]:2901"));
    }
    use super::*;

    fn addr(s: &str) -> TargetSpec {
        TargetSpec::Addr(s.parse().unwrap())
    }

    #[test]
    fn forms() {
        assert_eq!(parse_target("127.0.0.1", 22).unwrap(), addr("127.0.0.1:22"));
        assert_eq!(parse_target("127.0.0.1:2222", 22).unwrap(), addr("127.0.0.1:2222"));
        assert_eq!(parse_target("::1", 22).unwrap(), addr("[::1]:22"));
        assert_eq!(parse_target("[::1]:2222", 22).unwrap(), addr("[::1]:2222"));
        assert_eq!(parse_target("[::1]", 2200).unwrap(), addr("[::1]:2200"));
        assert_eq!(
            parse_target("example.org", 22).unwrap(),
            TargetSpec::Host { name: "example.org".into(), port: 22 }
        );
        assert_eq!(
            parse_target(" gw-1.lan:830 ", 22).unwrap(),
            TargetSpec::Host { name: "gw-1.lan".into(), port: 830 }
        );
        assert_eq!(parse_target("127.0.0.5/32", 22).unwrap(), addr("127.0.0.5:22"));
        // Digits are fine in a name, as long as the last label is not all digits.
        assert_eq!(
            parse_target("10.0.0.1.nip.io", 22).unwrap(),
            TargetSpec::Host { name: "10.0.0.1.nip.io".into(), port: 22 }
        );
        assert_eq!(
            parse_target("example.org.", 22).unwrap(),
            TargetSpec::Host { name: "example.org.".into(), port: 22 }
        );
        let net = parse_target("127.0.0.9/30:2222", 22).unwrap();
        assert_eq!(net, TargetSpec::Net { net: "127.0.0.8/30".parse().unwrap(), port: 2222 });
        assert_eq!(net.to_string(), "127.0.0.8/30:2222");
        // A /30 has 4 addresses, of which 2 are hosts: what is walked is what is counted.
        assert_eq!(net.address_count(), 2);
        let TargetSpec::Net { net: n, port } = net else { unreachable!() };
        assert_eq!(net_addrs(n, port).count(), 2);
        assert_eq!(net_addrs_shuffled(n, port, 7).count(), 2);
        let slash31 = parse_target("127.0.0.8/31", 22).unwrap();
        assert_eq!(slash31.address_count(), 2);
        let v6 = parse_target("[fd00::/120]:22", 1).unwrap();
        assert_eq!(v6.to_string(), "[fd00::/120]:22");
        assert_eq!(v6.address_count(), 256);
        assert_eq!(parse_target("fd00::/64", 22).unwrap().address_count(), 1u128 << 64);
    }

    #[test]
    fn errors_name_the_input() {
        let cases = [
            ("", "empty target"),
            ("host:0", "invalid port \"0\""),
            ("host:99999", "invalid port \"99999\""),
            ("host:", "invalid port \"\""),
            ("10.0.0.0/33", "invalid network \"10.0.0.0/33\""),
            ("bad host", "invalid host name \"bad host\""),
            ("[::1", "invalid host name"),
            ("[::1]x", "invalid host name"),
            ("999.1.1.1", "invalid IPv4 address \"999.1.1.1\""),
            ("256.0.0.1:22", "invalid IPv4 address \"256.0.0.1\""),
            ("10.1", "invalid IPv4 address"),
            ("1.2.3.4.5", "invalid IPv4 address"),
            ("1.2.3.", "invalid IPv4 address"),
            ("2222", "invalid IPv4 address"),
        ];
        for (text, want) in cases {
            let err = parse_target(text, 22).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?} gave {err:?}");
        }
    }

    #[test]
    fn port_lists_and_ranges() {
        assert_eq!(parse_ports("22"), Ok(vec![22]));
        assert_eq!(parse_ports("22,2222,8022"), Ok(vec![22, 2222, 8022]));
        assert_eq!(parse_ports("2200-2203"), Ok(vec![2200, 2201, 2202, 2203]));
        assert_eq!(parse_ports("22, 2200-2201,22"), Ok(vec![22, 2200, 2201]));
        assert_eq!(parse_ports("1-65535").map(|p| p.len()), Ok(65535));
        for bad in ["0", "22,", "2210-2200", "1-65536", "a", "", "22-", "-22"] {
            assert!(parse_ports(bad).is_err(), "{bad}");
        }
        let specs = parse_target_ports("127.0.0.1:2200-2201", &[22]).unwrap();
        assert_eq!(specs, [addr("127.0.0.1:2200"), addr("127.0.0.1:2201")]);
        assert_eq!(
            parse_target_ports("[::1]:22,2222", &[1]).unwrap(),
            [addr("[::1]:22"), addr("[::1]:2222")]
        );
        assert_eq!(parse_target_ports("::1", &[22, 2222]).unwrap(), [addr("[::1]:22"), addr("[::1]:2222")]);
        let nets = parse_target_ports("10.0.0.0/24:22,2222", &[1]).unwrap();
        assert_eq!(
            nets.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["10.0.0.0/24:22", "10.0.0.0/24:2222"]
        );
        assert!(parse_target_ports("host:2210-2200", &[22])
            .unwrap_err()
            .to_string()
            .contains("invalid port \"2210-2200\""));
        // One port only where one server is meant.
        assert!(parse_target("host:22,2222", 22).is_err());
    }

    #[test]
    fn exclusions_are_networks_merged_and_searched() {
        let nets =
            ["10.0.0.0/8", "127.77.0.5", "192.168.1.0/25", "192.168.1.128/25", "fd00::/16", "11.0.0.0/8"];
        let ex = Exclusions::new(nets.iter().map(|n| parse_exclusion(n).unwrap()));
        assert_eq!(ex.v4.len(), 3, "10/8 and 11/8 touch, so do the two /25s: {ex:?}");
        for (ip, want) in [
            ("10.0.0.0", true),
            ("11.255.255.255", true),
            ("12.0.0.0", false),
            ("9.255.255.255", false),
            ("127.77.0.5", true),
            ("127.77.0.6", false),
            ("192.168.1.200", true),
            ("192.168.2.0", false),
            ("fd00::1", true),
            ("fd01::1", false),
            ("::1", false),
        ] {
            assert_eq!(ex.contains(ip.parse().unwrap()), want, "{ip}");
        }
        let everything =
            Exclusions::new(["0.0.0.0/0".parse().unwrap(), "255.255.255.255/32".parse().unwrap()]);
        assert!(
            everything.contains("255.255.255.255".parse().unwrap())
                && everything.contains("0.0.0.0".parse().unwrap())
        );
        assert!(
            Exclusions::default().is_empty() && !Exclusions::default().contains("10.0.0.1".parse().unwrap())
        );
        assert!(parse_exclusion("10.0.0.0/33").is_err() && parse_exclusion("host").is_err());
        assert_eq!(parse_exclusion("10.1.2.3/8"), Ok("10.0.0.0/8".parse().unwrap()));
    }

    #[test]
    fn networks_walk_their_hosts() {
        let got: Vec<_> = net_addrs("127.0.0.0/30".parse().unwrap(), 22).collect();
        assert_eq!(got, vec!["127.0.0.1:22".parse().unwrap(), "127.0.0.2:22".parse().unwrap()]);
        assert_eq!(net_addrs("127.0.0.0/31".parse().unwrap(), 22).count(), 2);
    }

    #[test]
    fn permutations_are_bijections() {
        for last in [0u128, 1, 2, 3, 4, 5, 254, 255, 256, 1000, 4095, 65_533] {
            for seed in [0, 1, 0xdead_beef] {
                let p = Permutation::new(last, seed);
                let mut got: Vec<u128> = (0..=last).map(|i| p.apply(i)).collect();
                got.sort_unstable();
                assert!(got.iter().copied().eq(0..=last), "last {last} seed {seed}");
            }
        }
        // Large domains: values stay in range.
        let p = Permutation::new(u128::MAX, 7);
        assert_ne!(p.apply(0), p.apply(1));
        let p = Permutation::new((1 << 24) - 3, 7);
        assert!((0..10_000).all(|i| p.apply(i) <= (1 << 24) - 3));
    }

    #[test]
    fn shuffled_networks_have_the_same_members_in_another_order() {
        for (net, seed) in [("127.0.0.0/24", 1), ("127.0.0.0/31", 2), ("127.0.0.7/32", 3), ("fd00::/120", 4)]
        {
            let net: IpNet = net.parse().unwrap();
            let ordered: Vec<_> = net_addrs(net, 22).collect();
            let shuffled: Vec<_> = net_addrs_shuffled(net, 22, seed).collect();
            let again: Vec<_> = net_addrs_shuffled(net, 22, seed).collect();
            assert_eq!(shuffled, again, "{net}: the seed fixes the order");
            let mut sorted = shuffled.clone();
            sorted.sort();
            assert_eq!(sorted, ordered, "{net}");
            if ordered.len() > 16 {
                assert_ne!(shuffled, ordered, "{net}");
                assert_ne!(shuffled, net_addrs_shuffled(net, 22, seed + 1).collect::<Vec<_>>());
            }
        }
        // A /8 starts at once (constant memory, no collection up front).
        let first = net_addrs_shuffled("10.0.0.0/8".parse().unwrap(), 22, 9).next().unwrap();
        assert!(matches!(first.ip(), IpAddr::V4(a) if a.octets()[0] == 10));
    }
}
