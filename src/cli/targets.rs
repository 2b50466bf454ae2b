//! Checks on targets as written, before anything is sent: a warning for a target that likely says
//! something else than the user meant, and a usage error for `--source` addresses of the wrong
//! family.

use super::pipe::say;
use anyhow::bail;
use sshprobe::target::{ambiguity_warning, parse_target, TargetSpec};
use std::net::{IpAddr, SocketAddr};

/// Warns once on stderr for each target like `::1:2901` (the IPv6 address ::1:2901 on the default
/// port, not port 2901 of ::1).
pub fn warn_ambiguous(targets: &[String], default_port: u16) {
    for text in targets {
        if let Some(warning) = ambiguity_warning(text, default_port) {
            say!("sshprobe: warning: {}", sshprobe::escape::escape(&warning));
        }
    }
}

/// A usage error when no `--source` address is of the family of `remote`: the kernel would pick
/// another source silently (or fail), and the run would not be from the address asked for.
pub fn check_source_family(sources: &[IpAddr], target: &str, remote: IpAddr) -> anyhow::Result<()> {
    if sources.is_empty() || sources.iter().any(|s| s.is_ipv4() == remote.is_ipv4()) {
        return Ok(());
    }
    let family = |ip: &IpAddr| if ip.is_ipv4() { "IPv4" } else { "IPv6" };
    let list: Vec<String> = sources.iter().map(IpAddr::to_string).collect();
    bail!(
        "--source {} is {} but target {target} ({remote}) is {}: give a --source of the target's family",
        list.join(" --source "),
        family(&sources[0]),
        family(&remote)
    )
}

/// [`check_source_family`] for every target argument that is an address or a network (names are
/// checked when resolved).
pub fn check_source_families(
    sources: &[IpAddr],
    targets: &[String],
    default_port: u16,
) -> anyhow::Result<()> {
    for text in targets {
        let ip = match parse_target(text, default_port) {
            Ok(TargetSpec::Addr(a)) => a.ip(),
            Ok(TargetSpec::Net { net, .. }) => net.addr(),
            _ => continue,
        };
        check_source_family(sources, text, ip)?;
    }
    Ok(())
}

/// The target's address, checked against `--source` (see [`check_source_family`]).
pub fn checked_remote(sources: &[IpAddr], target: &str, remote: SocketAddr) -> anyhow::Result<SocketAddr> {
    check_source_family(sources, target, remote.ip())?;
    Ok(remote)
}
