//! What to change, chosen in one table by verdict and server family ([`remedies`]).
//!
//! A [`Remedy`] names the setting or file to change; `report::diagnose` writes it for people.

use super::decide::Verdict;
use super::evidence::Evidence;
use super::facts::NotTestedReason;
use crate::server::Software;
use std::net::IpAddr;

/// One thing to change or check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remedy {
    /// Start sshd or fix its `ListenAddress`/`Port`; else a firewall rejecting with a reset.
    StartServer,
    /// Allow TCP to the port in the firewall on the path, or check the host is up.
    AllowInFirewall,
    /// Fix routing, or the firewall rule that rejects with ICMP.
    FixRouting,
    /// Check the port number and what listens there.
    CheckPort,
    /// Allow the client in `/etc/hosts.allow`.
    AllowInHostsAllow {
        /// Our address as the server saw it.
        client: Option<IpAddr>,
    },
    /// Read the server's log (`sshd -d` on a spare port).
    CheckServerLog,
    /// Raise `MaxStartups`, lower `LoginGraceTime`, find who holds connections.
    RaiseMaxStartups,
    /// The same, for when every address is refused.
    RaiseMaxStartupsIfEveryAddressRefused,
    /// Raise or remove `PerSourceMaxStartups` (OpenSSH 8.5+).
    RaisePerSourceMaxStartups,
    /// dropbear's compile-time `MAX_UNAUTH_PER_IP`.
    DropbearMaxUnauthPerIp,
    /// Wait, or exempt the address: `PerSourcePenaltyExemptList`, `PerSourcePenalties`.
    ExemptFromPenalties,
    /// Check sshd is alive and not overloaded; restart it if hung.
    RestartHungServer,
    /// Check CPU, `MaxStartups` and `LoginGraceTime` of a server that slows under load.
    CheckServerUnderLoad,
    /// Collect more probes and check the path.
    CollectMore,
    /// Check the server's configuration and install: `sshd -t`, its log, a reinstall.
    RepairServer,
    /// Tell a full connection table from a forwarder with no backend: the server's log, `ss -tn`
    /// there, a retry after LoginGraceTime.
    TellListenerDropsApart,
    /// dropbear's compile-time `MAX_UNAUTH_CLIENTS` (30), a server-wide table.
    DropbearMaxUnauthClients,
    /// Close or limit the unauthenticated connections this host holds to the server.
    ReleaseThisHostsConnections,
    /// Run again with a longer time limit (the probe budget refills at about one a second).
    AllowMoreTime,
    /// Run again with a time limit longer than the banner timeout: the server held the probes
    /// without a word until the limit cut them.
    AllowTheServerMoreTime,
    /// The exchange works: look past it with `ssh -vvv`.
    LookPastTheExchange,
    /// A ban-after-failures daemon banned the client: its ignore list (fail2ban `ignoreip`, sshguard's
    /// whitelist), an unban, or waiting out its ban time.
    UnbanOrExempt {
        /// Our address as the server saw it.
        client: Option<IpAddr>,
    },
    /// A firewall rule refuses or drops the client: find it and allow the address.
    AllowSourceInFirewall {
        /// Our address as the server saw it.
        client: Option<IpAddr>,
    },
    /// Raise the per-address connection count rule (connlimit, nft `ct count`), or hold fewer.
    RaiseFirewallCountLimit,
    /// Raise the per-address rate rule (nft `limit rate`, `recent --hitcount`, hashlimit), or open
    /// connections more slowly (ControlMaster, fewer forks).
    RaiseFirewallRateLimit,
    /// An access rule at the listener (a proxy's ACL, an allow list): allow the client there.
    AllowAtTheListener {
        /// Our address as the server saw it.
        client: Option<IpAddr>,
    },
    /// Enable current algorithms on the server (or upgrade it); a client-side `-o ...=+NAME` works
    /// meanwhile, weakening security.
    EnableCurrentAlgorithms,
}

/// The remedies for `verdict` on a server of `software`, refined by what the evidence showed;
/// `client` is our address as the server saw it (for an access rule to name).
pub fn remedies(
    verdict: Verdict,
    software: Option<Software>,
    evidence: &[Evidence],
    client: Option<IpAddr>,
) -> Vec<Remedy> {
    let shows = |wanted: fn(&Evidence) -> bool| evidence.iter().any(wanted);
    let host_holds = shows(|e| matches!(e, Evidence::HostHoldsConnections { .. }));
    match verdict {
        Verdict::Ok => vec![Remedy::LookPastTheExchange],
        Verdict::NotListening => vec![Remedy::StartServer],
        Verdict::Filtered => vec![Remedy::AllowInFirewall],
        Verdict::Unreachable => vec![Remedy::FixRouting],
        Verdict::NotSsh => vec![Remedy::CheckPort],
        Verdict::AccessDenied if shows(|e| matches!(e, Evidence::AtTheListener { .. })) => {
            vec![Remedy::AllowAtTheListener { client }]
        }
        Verdict::SourceBlocked => {
            if shows(|e| matches!(e, Evidence::BanTripped { .. })) {
                vec![Remedy::UnbanOrExempt { client }]
            } else {
                vec![Remedy::AllowSourceInFirewall { client }, Remedy::UnbanOrExempt { client }]
            }
        }
        Verdict::FirewallLimit => {
            let mut r = if shows(|e| matches!(e, Evidence::RateLimit { .. })) {
                vec![Remedy::RaiseFirewallRateLimit]
            } else {
                vec![Remedy::RaiseFirewallCountLimit]
            };
            if host_holds {
                r.insert(0, Remedy::ReleaseThisHostsConnections);
            }
            r
        }
        Verdict::AccessDenied => {
            let unexplained_close = shows(|e| matches!(e, Evidence::SessionProcessRefusesThisAddress { .. }));
            let mut r = vec![Remedy::AllowInHostsAllow { client }];
            if unexplained_close {
                r.push(Remedy::CheckServerLog);
            }
            r
        }
        Verdict::Maxstartups => {
            let silent = shows(|e| matches!(e, Evidence::ZeroByteClose { .. }));
            let mut r = match software {
                Some(Software::Dropbear) => vec![Remedy::DropbearMaxUnauthClients],
                // No banner to tell, and no message: dropbear, or an OpenSSH before 8.2.
                None if silent => vec![Remedy::RaiseMaxStartups, Remedy::DropbearMaxUnauthClients],
                _ => vec![Remedy::RaiseMaxStartups],
            };
            if host_holds {
                r.insert(0, Remedy::ReleaseThisHostsConnections);
            }
            r
        }
        Verdict::PerSourceLimit => {
            let mut r = match software {
                Some(Software::Dropbear) => vec![Remedy::DropbearMaxUnauthPerIp],
                _ => vec![Remedy::RaisePerSourceMaxStartups],
            };
            if host_holds {
                r.insert(0, Remedy::ReleaseThisHostsConnections);
            }
            r
        }
        Verdict::ServerError => vec![Remedy::RepairServer],
        Verdict::ListenerDrop => vec![Remedy::TellListenerDropsApart],
        Verdict::NotTested => {
            if shows(|e| matches!(e, Evidence::NoProbes { reason: NotTestedReason::TimeLimitCut })) {
                vec![Remedy::AllowTheServerMoreTime]
            } else {
                vec![Remedy::AllowMoreTime]
            }
        }
        Verdict::Penalized => {
            if shows(|e| matches!(e, Evidence::AmbiguousRefusalLine)) {
                vec![Remedy::ExemptFromPenalties, Remedy::RaiseMaxStartupsIfEveryAddressRefused]
            } else {
                vec![Remedy::ExemptFromPenalties]
            }
        }
        Verdict::Overloaded if host_holds => {
            vec![Remedy::ReleaseThisHostsConnections, Remedy::RestartHungServer]
        }
        Verdict::Overloaded => {
            if shows(|e| matches!(e, Evidence::LoadTimeouts { .. })) {
                vec![Remedy::CheckServerUnderLoad]
            } else {
                vec![Remedy::RestartHungServer]
            }
        }
        Verdict::Intermittent => vec![Remedy::CollectMore],
        Verdict::LegacyAlgorithms => vec![Remedy::EnableCurrentAlgorithms],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_source_limits_name_the_server_family_setting() {
        let openssh = Some(Software::Openssh { major: 9, minor: 2 });
        let r = remedies(Verdict::PerSourceLimit, openssh, &[], None);
        assert_eq!(r, [Remedy::RaisePerSourceMaxStartups]);
        let r = remedies(Verdict::PerSourceLimit, Some(Software::Dropbear), &[], None);
        assert_eq!(r, [Remedy::DropbearMaxUnauthPerIp]);
    }

    #[test]
    fn an_unexplained_close_adds_the_server_log() {
        let client = Some("127.0.0.1".parse().unwrap());
        let wrappers = [Evidence::WrappersDelay { median_us: 5_000_000 }];
        let r = remedies(Verdict::AccessDenied, None, &wrappers, client);
        assert_eq!(r, [Remedy::AllowInHostsAllow { client }]);
        let fast = [Evidence::SessionProcessRefusesThisAddress { server_delay_us: 7_000 }];
        let r = remedies(Verdict::AccessDenied, None, &fast, client);
        assert_eq!(r, [Remedy::AllowInHostsAllow { client }, Remedy::CheckServerLog]);
    }
}
