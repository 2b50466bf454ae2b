//! Which targets the exporter may probe: `--allow` networks, loopback only by default.
//!
//! An exporter reachable by others must not become their port scanner, nor their way to earn a
//! server's penalties for you. Every address a target gives is checked before any packet is sent:
//! a name is resolved first and refused when any one of its addresses lies outside the list, so
//! a name cannot smuggle an outside address in beside an allowed one.

use ipnet::IpNet;
use std::net::IpAddr;

/// The networks the exporter may probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList {
    nets: Vec<IpNet>,
}

impl Default for AllowList {
    /// Loopback only: 127.0.0.0/8 and ::1.
    fn default() -> AllowList {
        AllowList::new(vec![
            "127.0.0.0/8".parse().expect("a valid network"),
            "::1/128".parse().expect("a valid network"),
        ])
    }
}

impl AllowList {
    /// Exactly these networks.
    pub fn new(nets: Vec<IpNet>) -> AllowList {
        AllowList { nets }
    }

    /// The networks.
    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }

    /// Whether `ip` may be probed. An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) is judged as
    /// the IPv4 address it reaches.
    pub(crate) fn permits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The first of `addrs` that may not be probed, if any.
    pub(crate) fn first_refused(&self, addrs: impl IntoIterator<Item = IpAddr>) -> Option<IpAddr> {
        addrs.into_iter().find(|&ip| !self.permits(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn loopback_only_by_default() {
        let allow = AllowList::default();
        for ok in ["127.0.0.1", "127.255.0.9", "::1", "::ffff:127.0.0.1"] {
            assert!(allow.permits(ip(ok)), "{ok}");
        }
        for no in ["10.0.0.1", "0.0.0.0", "::", "::ffff:10.0.0.1", "fe80::1", "192.0.2.1"] {
            assert!(!allow.permits(ip(no)), "{no}");
        }
    }

    #[test]
    fn every_address_is_checked() {
        let allow = AllowList::new(vec!["192.0.2.0/24".parse().unwrap()]);
        assert_eq!(allow.first_refused([ip("192.0.2.1"), ip("192.0.2.200")]), None);
        assert_eq!(allow.first_refused([ip("192.0.2.1"), ip("198.51.100.1")]), Some(ip("198.51.100.1")));
        assert_eq!(allow.first_refused([ip("127.0.0.1")]), Some(ip("127.0.0.1")));
    }
}
