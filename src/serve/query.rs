//! What a scrape asks for, parsed without I/O: the query string of `/probe` and `/diagnose`, and
//! Prometheus' scrape-timeout header.
//!
//! Every problem is a [`QueryError`], answered with 400 and its one-line message; nothing a client
//! sends can make the exporter panic or probe something it did not clearly name.

use crate::target::{parse_target, TargetError, TargetSpec};
use percent_encoding::percent_decode_str;
use std::time::Duration;

/// The longest query string accepted, in bytes. A target is at most a 253-byte name and a port;
/// anything much longer is a mistake or an attack.
pub const MAX_QUERY: usize = 1024;

/// The port of a target that names none.
pub(crate) const DEFAULT_PORT: u16 = 22;

/// What `/probe?...` or `/diagnose?...` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Query {
    /// The target as written (`host`, `host:port`, `[v6]:port`).
    pub target: String,
    /// The module, when `module=` is given.
    pub module: Option<String>,
}

/// A scrape the exporter will not serve (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// No `target=`.
    #[error("missing target: use /probe?target=HOST[:PORT][&module=NAME]")]
    NoTarget,
    /// The query string is over [`MAX_QUERY`].
    #[error("query string of {0} bytes: at most {MAX_QUERY} accepted")]
    TooLong(usize),
    /// A parameter whose bytes, once percent-decoded, are not UTF-8.
    #[error("parameter {0:?} is not UTF-8 once percent-decoded")]
    NotUtf8(String),
    /// A parameter given twice.
    #[error("parameter {0:?} given more than once")]
    Repeated(String),
    /// A target that does not parse.
    #[error("{0}")]
    Target(#[from] TargetError),
    /// A network instead of one host.
    #[error("target {0:?} is a network: scrape one host per target")]
    Network(String),
    /// No such module.
    #[error("unknown module {0:?}")]
    Module(String),
    /// A bad `X-Prometheus-Scrape-Timeout-Seconds`.
    #[error("X-Prometheus-Scrape-Timeout-Seconds {0:?}: expected a positive number of seconds")]
    ScrapeTimeout(String),
}

/// Parses a query string (without the `?`). Unknown parameters are ignored, as blackbox_exporter
/// ignores them; `target` and `module` may appear once each.
pub(crate) fn parse_query(query: Option<&str>) -> Result<Query, QueryError> {
    let query = query.unwrap_or("");
    if query.len() > MAX_QUERY {
        return Err(QueryError::TooLong(query.len()));
    }
    let mut target = None;
    let mut module = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(key)?;
        let slot = match key.as_str() {
            "target" => &mut target,
            "module" => &mut module,
            _ => continue,
        };
        if slot.is_some() {
            return Err(QueryError::Repeated(key));
        }
        *slot = Some(decode(value)?);
    }
    let target = target.filter(|t| !t.trim().is_empty()).ok_or(QueryError::NoTarget)?;
    Ok(Query { target, module })
}

/// Percent-decodes one component of a query (`+` is a space, as in a form).
fn decode(component: &str) -> Result<String, QueryError> {
    let plus_as_space = component.replace('+', " ");
    percent_decode_str(&plus_as_space)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| QueryError::NotUtf8(component.chars().take(64).collect()))
}

/// What a target names once parsed: one address, or one name to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// An address and port.
    Addr(std::net::SocketAddr),
    /// A name still to resolve, and the port.
    Name(String, u16),
}

/// Parses a scrape's target: one host, port 22 unless it names one.
pub(crate) fn parse_host(target: &str) -> Result<Host, QueryError> {
    match parse_target(target, DEFAULT_PORT)? {
        TargetSpec::Addr(a) => Ok(Host::Addr(a)),
        TargetSpec::Host { name, port } => Ok(Host::Name(name, port)),
        TargetSpec::Net { .. } => Err(QueryError::Network(target.to_string())),
    }
}

/// The most of a scrape timeout kept back for the exporter's own work and the answer's way back
/// (blackbox_exporter's `--timeout-offset` default).
pub const TIMEOUT_MARGIN: Duration = Duration::from_millis(500);

/// The probe deadline from `X-Prometheus-Scrape-Timeout-Seconds`: the scrape timeout less
/// [`TIMEOUT_MARGIN`], or less a quarter of it when it is under 2 s (a 1 s scrape timeout leaves a
/// 0.75 s probe). `None` without the header.
pub fn probe_deadline(header: Option<&[u8]>) -> Result<Option<Duration>, QueryError> {
    let Some(raw) = header else { return Ok(None) };
    let bad = || QueryError::ScrapeTimeout(String::from_utf8_lossy(raw).chars().take(32).collect());
    let text = std::str::from_utf8(raw).map_err(|_| bad())?;
    let seconds: f64 = text.trim().parse().map_err(|_| bad())?;
    if !(seconds.is_finite() && seconds > 0.0 && seconds < 1e6) {
        return Err(bad());
    }
    let timeout = Duration::from_secs_f64(seconds);
    Ok(Some(timeout - TIMEOUT_MARGIN.min(timeout / 4)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_modules() {
        let q = parse_query(Some("target=127.0.0.1:2222&module=first")).unwrap();
        assert_eq!(q, Query { target: "127.0.0.1:2222".into(), module: Some("first".into()) });
        let q = parse_query(Some("target=%5B%3A%3A1%5D%3A22&debug=true")).unwrap();
        assert_eq!(q, Query { target: "[::1]:22".into(), module: None });
    }

    #[test]
    fn bad_queries_are_errors() {
        assert_eq!(parse_query(None), Err(QueryError::NoTarget));
        assert_eq!(parse_query(Some("module=x")), Err(QueryError::NoTarget));
        assert_eq!(parse_query(Some("target=")), Err(QueryError::NoTarget));
        assert_eq!(parse_query(Some("target=%FF%FE")), Err(QueryError::NotUtf8("%FF%FE".into())));
        assert_eq!(parse_query(Some("target=a&target=b")), Err(QueryError::Repeated("target".into())));
        let long = format!("target={}", "a".repeat(MAX_QUERY));
        assert_eq!(parse_query(Some(&long)), Err(QueryError::TooLong(long.len())));
    }

    #[test]
    fn hosts() {
        assert_eq!(parse_host("127.0.0.1"), Ok(Host::Addr("127.0.0.1:22".parse().unwrap())));
        assert_eq!(parse_host("localhost:2222"), Ok(Host::Name("localhost".into(), 2222)));
        assert!(matches!(parse_host("127.0.0.1:99999"), Err(QueryError::Target(TargetError::Port { .. }))));
        assert!(matches!(parse_host("127.0.0.1:0"), Err(QueryError::Target(_))));
        assert!(matches!(parse_host("10.0.0.0/8"), Err(QueryError::Network(_))));
        assert!(matches!(parse_host("bad host"), Err(QueryError::Target(TargetError::Host(_)))));
    }

    #[test]
    fn scrape_timeouts() {
        assert_eq!(probe_deadline(None), Ok(None));
        assert_eq!(probe_deadline(Some(b"10")), Ok(Some(Duration::from_millis(9500))));
        assert_eq!(probe_deadline(Some(b"1")), Ok(Some(Duration::from_millis(750))));
        for bad in [&b"-1"[..], b"0", b"NaN", b"inf", b"soon", b"\xff"] {
            assert!(probe_deadline(Some(bad)).is_err(), "{bad:?}");
        }
    }
}
