//! Value parsers shared by every command, so that the same kind of value is checked the same way
//! everywhere: a timeout is never zero, a port never 0, a count at least 1, and a duration may be
//! written `5` (seconds), `5s`, `250ms` or `2m`.
//!
//! clap reports a parser's error as one line naming the option and the value, exit status 2.

use std::time::Duration;

/// A duration: humantime's syntax (`250ms`, `5s`, `2m 30s`), or a bare number of seconds (`5`,
/// `0.5`), as `ssh -o ConnectTimeout=5` and `timeout 5` take it.
pub fn duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs)
            .map_err(|_| "not a duration: expected e.g. 5s, 250ms, 2m, or seconds".to_string());
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("not a duration ({e}): expected e.g. 5s, 250ms, 2m, or seconds"))
}

/// A timeout or deadline: a [`duration`] that is not zero (a zero timeout fails every probe).
pub fn timeout(s: &str) -> Result<Duration, String> {
    match duration(s)? {
        Duration::ZERO => Err("must be longer than zero".to_string()),
        d => Ok(d),
    }
}

/// A TCP port, 1 to 65535 (port 0 cannot be connected to).
pub fn port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err("expected a port from 1 to 65535".to_string()),
    }
}

/// A port list as `-p` takes it: `22`, `22,2222,8022`, `2200-2210` ([`sshprobe::target::parse_ports`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ports(pub Vec<u16>);

/// `-p PORTS` for commands that probe many targets.
pub fn ports(s: &str) -> Result<Ports, String> {
    sshprobe::target::parse_ports(s)
        .map(Ports)
        .map_err(|_| "expected ports from 1 to 65535, e.g. 22, 22,2222 or 2200-2210".to_string())
}

/// A count of things that must happen at least once (probes, connections, targets at once): a
/// whole number from 1 up.
pub fn count<T: std::str::FromStr + Default + PartialEq>(s: &str) -> Result<T, String> {
    match s.trim().parse::<T>() {
        Ok(n) if n != T::default() => Ok(n),
        _ => Err("expected a whole number of at least 1".to_string()),
    }
}

/// The most runtime threads `probe --threads` takes: far more than any machine has CPUs (and one is
/// the fastest on loopback: docs/performance.md), far fewer than the system's thread limit.
pub const MAX_THREADS: usize = 1024;

/// `probe --threads`: 0 (one per CPU) to [`MAX_THREADS`].
pub fn threads(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n <= MAX_THREADS => Ok(n),
        _ => Err(format!("expected a number of threads from 0 (one per CPU) to {MAX_THREADS}")),
    }
}

/// A default duration as its flag's help shows it (`3s`): the defaults are defined once, in the
/// library, and written here.
pub fn duration_text(d: std::time::Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_or_seconds() {
        assert_eq!(duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(duration("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration("0s"), Ok(Duration::ZERO));
        for bad in ["soon", "-1", "", "NaN", "1e400", "5 parsecs"] {
            assert!(duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timeouts_ports_and_counts_refuse_zero() {
        for zero in ["0", "0s", "0ms"] {
            assert!(timeout(zero).unwrap_err().contains("longer than zero"), "{zero}");
        }
        assert_eq!(timeout("5"), Ok(Duration::from_secs(5)));
        assert_eq!((port("22"), port("65535")), (Ok(22), Ok(65535)));
        for bad in ["0", "65536", "-1", "ssh"] {
            assert!(port(bad).is_err(), "{bad}");
        }
        assert_eq!(count::<u32>("1"), Ok(1));
        assert!(count::<u32>("0").unwrap_err().contains("at least 1"));
        assert!(count::<usize>("-1").is_err());
        assert_eq!(threads("0"), Ok(0));
        assert!(threads("100000").unwrap_err().contains("1024"));
    }
}
