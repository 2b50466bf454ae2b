//! What real SSH servers do, as rules without I/O: sshd's `MaxStartups` rule and what a server's
//! identification line tells about the features it has (docs/facts.md §3–§5).

use crate::ident::IdentLine;
use crate::outcome::KnownRefusal;
use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// sshd's `MaxStartups start:rate:full` (docs/facts.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MaxStartups {
    /// Below this many unauthenticated connections, accept.
    pub start: u32,
    /// Drop probability in percent at `start`.
    pub rate: u32,
    /// At or above this many, drop always.
    pub full: u32,
}

impl MaxStartups {
    /// sshd's default since OpenSSH 6.2.
    pub const DEFAULT: MaxStartups = MaxStartups { start: 10, rate: 30, full: 100 };

    /// The drop probability in percent with `open` unauthenticated connections, as sshd computes it
    /// (integer arithmetic).
    pub(crate) fn drop_percent(self, open: u32) -> u32 {
        if open < self.start {
            0
        } else if open >= self.full {
            100
        } else {
            self.rate + (100 - self.rate) * (open - self.start) / (self.full - self.start)
        }
    }
}

impl fmt::Display for MaxStartups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.start, self.rate, self.full)
    }
}

/// A `MaxStartups` value that does not parse.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid MaxStartups {0:?}: expected start:rate:full with start <= full and rate <= 100, or one number"
)]
pub struct MaxStartupsError(String);

impl FromStr for MaxStartups {
    type Err = MaxStartupsError;

    /// Parses `start:rate:full`, or a single number (which sshd reads as `start` and `full`).
    fn from_str(s: &str) -> Result<MaxStartups, MaxStartupsError> {
        let err = || MaxStartupsError(s.to_string());
        let parts: Vec<u32> =
            s.split(':').map(|p| p.trim().parse().map_err(|_| err())).collect::<Result<_, _>>()?;
        let ms = match parts[..] {
            [n] => MaxStartups { start: n, rate: 100, full: n },
            [start, rate, full] => MaxStartups { start, rate, full },
            _ => return Err(err()),
        };
        if ms.start > ms.full || ms.rate > 100 {
            return Err(err());
        }
        Ok(ms)
    }
}

/// The server software an identification line names, as far as it matters to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "name")]
pub enum Software {
    /// OpenSSH, with its version.
    Openssh {
        /// Major version.
        major: u32,
        /// Minor version.
        minor: u32,
    },
    /// Dropbear.
    Dropbear,
    /// Anything else.
    Other,
}

impl Software {
    /// Reads the software from an identification line.
    pub fn of(ident: &IdentLine) -> Software {
        Software::parse(&ident.software)
    }

    /// Reads the software from an ident's `softwareversion` (`OpenSSH_9.2p1`, `dropbear_2022.83`).
    pub fn parse(sw: &str) -> Software {
        if let Some(v) = sw.strip_prefix("OpenSSH_") {
            let mut parts = v.split(|c: char| !c.is_ascii_digit());
            let major = parts.next().and_then(|p| p.parse().ok());
            let minor = parts.next().and_then(|p| p.parse().ok());
            if let (Some(major), Some(minor)) = (major, minor) {
                return Software::Openssh { major, minor };
            }
        }
        if sw.to_ascii_lowercase().starts_with("dropbear") {
            return Software::Dropbear;
        }
        Software::Other
    }

    /// OpenSSH at least `major.minor`.
    pub(crate) fn openssh_at_least(self, major: u32, minor: u32) -> bool {
        matches!(self, Software::Openssh { major: a, minor: b } if (a, b) >= (major, minor))
    }

    /// Whether the server has `PerSourcePenalties` (OpenSSH 9.8+, on by default).
    pub(crate) fn has_penalties(self) -> bool {
        self.openssh_at_least(9, 8)
    }

    /// The refusal this server sends when its listener drops a connection, if any (OpenSSH ≤ 8.1
    /// and dropbear close without a word).
    pub fn refusal(self) -> Option<KnownRefusal> {
        if self.has_penalties() {
            Some(KnownRefusal::NotAllowedAtThisTime)
        } else if self.openssh_at_least(8, 2) {
            Some(KnownRefusal::ExceededMaxStartups)
        } else {
            None
        }
    }
}

impl fmt::Display for Software {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Software::Openssh { major, minor } => write!(f, "OpenSSH {major}.{minor}"),
            Software::Dropbear => f.write_str("dropbear"),
            Software::Other => f.write_str("other"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maxstartups_rule_matches_sshd() {
        let ms = MaxStartups { start: 3, rate: 50, full: 10 };
        let got: Vec<u32> = (0..12).map(|n| ms.drop_percent(n)).collect();
        assert_eq!(got, [0, 0, 0, 50, 57, 64, 71, 78, 85, 92, 100, 100]);
        assert_eq!(MaxStartups::DEFAULT.drop_percent(9), 0);
        assert_eq!(MaxStartups::DEFAULT.drop_percent(10), 30);
    }

    #[test]
    fn maxstartups_parses() {
        assert_eq!("10:30:100".parse::<MaxStartups>().unwrap(), MaxStartups::DEFAULT);
        assert_eq!("4".parse::<MaxStartups>().unwrap(), MaxStartups { start: 4, rate: 100, full: 4 });
        for bad in ["", "1:2", "5:30:4", "1:101:5", "a:b:c", "1:2:3:4"] {
            assert!(bad.parse::<MaxStartups>().is_err(), "{bad}");
        }
    }

    fn software(line: &[u8]) -> Software {
        match crate::ident::scan(line) {
            crate::ident::Scan::Ident(l) => Software::of(&l),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn software_from_banners() {
        let s = software(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n");
        assert_eq!(s, Software::Openssh { major: 9, minor: 2 });
        assert!(!s.has_penalties());
        assert_eq!(s.refusal().map(KnownRefusal::line), Some("Exceeded MaxStartups"));
        let s = software(b"SSH-2.0-OpenSSH_10.0p2 Debian-7\r\n");
        assert!(s.has_penalties());
        assert_eq!(s.refusal().map(KnownRefusal::line), Some("Not allowed at this time"));
        assert!(software(b"SSH-2.0-OpenSSH_9.8\r\n").has_penalties());
        assert_eq!(software(b"SSH-2.0-OpenSSH_7.4\r\n").refusal(), None);
        assert_eq!(software(b"SSH-2.0-dropbear_2022.83\r\n"), Software::Dropbear);
        assert_eq!(software(b"SSH-2.0-Cisco-1.25\r\n"), Software::Other);
        assert_eq!(software(b"SSH-2.0-OpenSSH_x\r\n"), Software::Other);
    }
}
