//! Host names to addresses: the one resolver every wing uses (`probe`'s targets, `diagnose`, the
//! exporter's scrapes).
//!
//! Only names that [`crate::target`] accepted reach it (RFC 1123 host names; addresses are never
//! looked up). It asks the system's resolver (getaddrinfo, through tokio), within a deadline when
//! one is given, and says why a name gave nothing in a typed error.

use std::net::SocketAddr;
use std::time::Duration;

/// Why a name gave no address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The resolver failed (no such name, no server reachable, ...).
    #[error("cannot resolve {name:?}: {reason}")]
    Failed {
        /// The name.
        name: String,
        /// What the resolver said.
        reason: String,
    },
    /// The resolver answered with no address.
    #[error("cannot resolve {name:?}: no addresses")]
    NoAddresses {
        /// The name.
        name: String,
    },
    /// No answer within the deadline.
    #[error("cannot resolve {name:?}: no answer within {within:?}")]
    TimedOut {
        /// The name.
        name: String,
        /// The deadline.
        within: Duration,
    },
}

impl ResolveError {
    /// What went wrong, without the name (for messages that name the target as the user wrote it).
    pub fn reason(&self) -> String {
        match self {
            ResolveError::Failed { reason, .. } => reason.clone(),
            ResolveError::NoAddresses { .. } => "no addresses".into(),
            ResolveError::TimedOut { within, .. } => format!("no answer within {within:?}"),
        }
    }
}

/// Every address `name` resolves to, with `port`, in the resolver's order; within `within` when
/// given.
pub(crate) async fn resolve_all(
    name: &str,
    port: u16,
    within: Option<Duration>,
) -> Result<Vec<SocketAddr>, ResolveError> {
    let lookup = tokio::net::lookup_host((name, port));
    let found = match within {
        Some(within) => tokio::time::timeout(within, lookup)
            .await
            .map_err(|_| ResolveError::TimedOut { name: name.to_string(), within })?,
        None => lookup.await,
    };
    let addrs: Vec<SocketAddr> =
        found.map_err(|e| ResolveError::Failed { name: name.to_string(), reason: e.to_string() })?.collect();
    if addrs.is_empty() {
        return Err(ResolveError::NoAddresses { name: name.to_string() });
    }
    Ok(addrs)
}

/// The first address `name` resolves to, with `port`: what one probe of a name connects to.
pub async fn resolve_one(
    name: &str,
    port: u16,
    within: Option<Duration>,
) -> Result<SocketAddr, ResolveError> {
    resolve_all(name, port, within).await.map(|addrs| addrs[0])
}

/// [`resolve_one`] for a thread outside the async runtime (the scan core's event loop): the
/// system's resolver called directly, blocking the calling thread while it answers.
pub fn resolve_one_blocking(name: &str, port: u16) -> Result<SocketAddr, ResolveError> {
    use std::net::ToSocketAddrs;
    let mut addrs = (name, port)
        .to_socket_addrs()
        .map_err(|e| ResolveError::Failed { name: name.to_string(), reason: e.to_string() })?;
    addrs.next().ok_or_else(|| ResolveError::NoAddresses { name: name.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn localhost_resolves_from_etc_hosts() {
        // `localhost` is in /etc/hosts: no DNS query leaves the machine.
        let addrs = resolve_all("localhost", 2222, Some(Duration::from_secs(5))).await.expect("localhost");
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 2222), "{addrs:?}");
    }

    #[test]
    fn the_blocking_resolver_agrees() {
        let addr = resolve_one_blocking("localhost", 22).expect("localhost");
        assert!(addr.ip().is_loopback() && addr.port() == 22);
    }

    #[test]
    fn errors_name_the_host() {
        let e = ResolveError::NoAddresses { name: "db1".into() };
        assert_eq!(e.to_string(), "cannot resolve \"db1\": no addresses");
    }
}
