//! Which local addresses an experiment connects from.
//!
//! Per-source limits (PerSourceMaxStartups, dropbear's MAX_UNAUTH_PER_IP) and OpenSSH 9.8+ penalties
//! count per client address, so experiments want more than one: `diagnose` compares a second address
//! with the probing one, `limits` spreads its probes and holders over many so that no single address
//! shapes the curve. The user names them with `--source`; on IPv4 loopback, where every 127.0.0.0/8
//! address is local without configuration, the planner makes its own from 127.77.0.0/16.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Where one connection comes from: an address asked for, or the kernel's choice (what a user's
/// `ssh` gets). Reports write the kernel's choice as `default`; addresses sort before it, in numeric
/// order (`127.77.0.2` before `127.77.0.10`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// An address asked for: `--source`, or an automatic loopback alias.
    Address(IpAddr),
    /// No address asked for: the kernel chooses, from the route to the server.
    KernelChoice,
}

impl Source {
    /// The address to bind, if one was asked for.
    pub fn ip(self) -> Option<IpAddr> {
        match self {
            Source::Address(ip) => Some(ip),
            Source::KernelChoice => None,
        }
    }
}

impl From<Option<IpAddr>> for Source {
    fn from(ip: Option<IpAddr>) -> Source {
        ip.map_or(Source::KernelChoice, Source::Address)
    }
}

impl From<IpAddr> for Source {
    fn from(ip: IpAddr) -> Source {
        Source::Address(ip)
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Address(ip) => ip.fmt(f),
            Source::KernelChoice => f.write_str("default"),
        }
    }
}

impl serde::Serialize for Source {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A block of automatic loopback addresses: `count` of them from `127.77.first_subnet.1`, 250 per
/// /24 (`.1` to `.250`), so that each command keeps to its own subnets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopbackAliases {
    /// The third octet of the first address.
    pub first_subnet: u8,
    /// How many addresses.
    pub count: u16,
}

/// Addresses per /24 of a [`LoopbackAliases`] block.
const PER_SUBNET: u16 = 250;

impl LoopbackAliases {
    /// The addresses, in order.
    pub fn addresses(self) -> impl Iterator<Item = IpAddr> {
        (0..self.count).map(move |i| {
            let subnet = u16::from(self.first_subnet) + i / PER_SUBNET;
            let host = i % PER_SUBNET + 1;
            // Saturates at 127.77.255.250 rather than wrap: no block is that large.
            IpAddr::V4(Ipv4Addr::new(127, 77, subnet.min(255) as u8, host as u8))
        })
    }
}

/// Where an experiment's connections come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sources {
    /// The addresses the user gave (those of the remote's family), in their order.
    Given(Vec<IpAddr>),
    /// None given, the remote on IPv4 loopback: automatic aliases.
    LoopbackAliases(Vec<IpAddr>),
    /// None given and none to make: the kernel chooses.
    KernelOnly,
}

impl Sources {
    /// Plans the sources for `remote`: the `given` ones of its family, else `aliases` on IPv4
    /// loopback, else the kernel's choice.
    pub fn plan(remote: SocketAddr, given: &[IpAddr], aliases: LoopbackAliases) -> Sources {
        let same_family: Vec<IpAddr> =
            given.iter().copied().filter(|ip| ip.is_ipv4() == remote.is_ipv4()).collect();
        if !same_family.is_empty() {
            return Sources::Given(same_family);
        }
        match remote.ip() {
            IpAddr::V4(v4) if v4.is_loopback() => Sources::LoopbackAliases(aliases.addresses().collect()),
            _ => Sources::KernelOnly,
        }
    }

    /// The address that probes (`diagnose`): the first given one, else the kernel's choice, which is
    /// what a user's `ssh` gets too.
    pub fn probing(&self) -> Option<IpAddr> {
        match self {
            Sources::Given(given) => given.first().copied(),
            Sources::LoopbackAliases(_) | Sources::KernelOnly => None,
        }
    }

    /// The addresses besides [`Sources::probing`]: second sources and holders (`diagnose`).
    pub fn others(&self) -> Vec<Option<IpAddr>> {
        match self {
            Sources::Given(given) => given.iter().skip(1).copied().map(Some).collect(),
            Sources::LoopbackAliases(aliases) => aliases.iter().copied().map(Some).collect(),
            Sources::KernelOnly => Vec::new(),
        }
    }

    /// Every address to spread connections over (`limits`); never empty.
    pub fn spread(&self) -> Vec<Option<IpAddr>> {
        match self {
            Sources::Given(all) | Sources::LoopbackAliases(all) => all.iter().copied().map(Some).collect(),
            Sources::KernelOnly => vec![None],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FEW: LoopbackAliases = LoopbackAliases { first_subnet: 0, count: 3 };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn sources_print_as_reports_write_them_and_sort_addresses_first() {
        let mut all: Vec<Source> =
            vec![Source::KernelChoice, ip("127.77.0.10").into(), ip("127.77.0.2").into(), ip("::1").into()];
        all.sort();
        let text: Vec<String> = all.iter().map(Source::to_string).collect();
        assert_eq!(text, ["127.77.0.2", "127.77.0.10", "::1", "default"]);
        assert_eq!(serde_json::to_string(&Source::KernelChoice).unwrap(), "\"default\"");
        assert_eq!(Source::from(None), Source::KernelChoice);
        assert_eq!(Source::from(Some(ip("127.0.0.2"))).ip(), Some(ip("127.0.0.2")));
    }

    #[test]
    fn aliases_fill_each_subnet_from_1_to_250() {
        let block = LoopbackAliases { first_subnet: 1, count: 1000 };
        let all: Vec<IpAddr> = block.addresses().collect();
        assert_eq!(all.len(), 1000);
        assert_eq!((all[0], all[249], all[250]), (ip("127.77.1.1"), ip("127.77.1.250"), ip("127.77.2.1")));
        assert_eq!(all[999], ip("127.77.4.250"));
    }

    #[test]
    fn given_addresses_of_the_remote_family_win() {
        let remote: SocketAddr = "127.0.0.1:22".parse().unwrap();
        let s = Sources::plan(remote, &[ip("::1"), ip("10.0.0.5"), ip("10.0.0.6")], FEW);
        assert_eq!(s, Sources::Given(vec![ip("10.0.0.5"), ip("10.0.0.6")]));
        assert_eq!((s.probing(), s.others()), (Some(ip("10.0.0.5")), vec![Some(ip("10.0.0.6"))]));
        assert_eq!(s.spread(), [Some(ip("10.0.0.5")), Some(ip("10.0.0.6"))]);
    }

    #[test]
    fn loopback_gets_aliases_and_probes_from_the_kernel_choice() {
        let s = Sources::plan("127.0.0.1:22".parse().unwrap(), &[ip("::1")], FEW);
        assert_eq!(s.probing(), None);
        let aliases = [Some(ip("127.77.0.1")), Some(ip("127.77.0.2")), Some(ip("127.77.0.3"))];
        assert_eq!(s.others(), aliases);
        assert_eq!(s.spread(), aliases);
    }

    #[test]
    fn elsewhere_only_the_kernel_chooses() {
        for remote in ["192.0.2.1:22", "[::1]:22"] {
            let s = Sources::plan(remote.parse().unwrap(), &[], FEW);
            assert_eq!(s, Sources::KernelOnly);
            assert_eq!((s.probing(), s.others(), s.spread()), (None, vec![], vec![None]));
        }
    }
}
