//! `sshprobe serve`: a Prometheus exporter that says why a server refuses, not just whether.
//!
//! It follows Prometheus' multi-target exporter pattern, as blackbox_exporter does: Prometheus
//! scrapes `/probe?target=HOST[:PORT][&module=NAME]`, the exporter makes one identification
//! exchange and answers with its classified outcome as metrics ([`metrics`]).
//!
//! | path | answer |
//! |---|---|
//! | `/probe?target=&module=` | one probe's metrics (OpenMetrics text) |
//! | `/diagnose?target=` | `diagnose`'s JSON for one server: the link a dashboard offers when a target goes red |
//! | `/metrics` | the exporter's own counters |
//! | `/-/healthy` | `Healthy` |
//! | `/` | a short page: the last probes, links |
//!
//! An exporter is a prober others can trigger, so it is safe by default:
//! - it probes only targets inside its allow list ([`allow`], loopback unless told otherwise),
//!   checking every address a name resolves to before any packet is sent (403 otherwise);
//! - it makes at most one probe per server and module per minimum interval, and concurrent scrapes
//!   of one server share one probe ([`cache`]): OpenSSH 9.8+ penalises an address that connects
//!   without authenticating about once a second (docs/facts.md §5);
//! - at most a fixed number of probes run at once; a scrape beyond that gets 503;
//! - a bad query gets 400 with one line ([`query`]); a slow client cannot hold a connection
//!   forever (10 s to send its request head), and connections are bounded.
//!
//! The probe's deadline comes from `X-Prometheus-Scrape-Timeout-Seconds`, less a margin
//! ([`query::probe_deadline`]); modules (engine, order, ident, source, timeouts) come from a TOML
//! file ([`config`]). The only calls into the engines and `diagnose` are in [`probe`].

pub mod allow;
pub mod cache;
pub mod config;
pub mod metrics;
pub mod probe;
pub mod query;

use self::allow::AllowList;
use self::cache::{Fetched, ResultCache};
use self::config::{Module, Modules, DEFAULT_MODULE};
use self::metrics::{ExporterMetrics, Probed, Refusal, Scrape};
use self::probe::{diagnosis_json, run_diagnose, run_probe, Engines};
use self::query::{parse_host, parse_query, probe_deadline, Host, QueryError};
use crate::record::ProbeRecord;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode, Uri};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// The default minimum interval between two probes of one server (docs/facts.md §5: OpenSSH's noauth
/// penalty does not build up below about one connection a second per source).
pub(crate) const DEFAULT_MIN_INTERVAL: Duration = Duration::from_secs(2);
/// The default bound on probes in flight.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;
/// The default listen address: loopback, and the port after blackbox_exporter's 9115 that no
/// exporter in Prometheus' list of default ports claims.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9722";
/// How long a diagnosis is reused for: each costs up to a dozen connections per source address.
pub(crate) const DIAGNOSE_INTERVAL: Duration = Duration::from_secs(60);
/// Diagnoses at once, over all servers (one at a time per server in any case).
pub(crate) const MAX_DIAGNOSES: usize = 2;
/// HTTP connections at once; beyond, new connections wait in the kernel's accept queue.
pub(crate) const MAX_CONNECTIONS: usize = 4096;
/// How long a client may take to send its request head.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a name lookup may take, when the scrape gives no shorter deadline.
pub(crate) const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long SIGTERM waits for scrapes in progress before dropping them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Probes listed on `/`.
const RECENT: usize = 20;

/// How the exporter runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The networks it may probe.
    pub allow: AllowList,
    /// Its modules.
    pub modules: Modules,
    /// At most one probe per server and module per this interval.
    pub min_interval: Duration,
    /// At most this many probes at once.
    pub max_in_flight: usize,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            allow: AllowList::default(),
            modules: Modules::default(),
            min_interval: DEFAULT_MIN_INTERVAL,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }
}

/// A probe made, for the page at `/`.
#[derive(Debug, Clone)]
struct Recent {
    at: SystemTime,
    target: String,
    module: String,
    /// None when the name did not resolve.
    remote: Option<SocketAddr>,
    /// The outcome's name, or `resolve_error`.
    outcome: &'static str,
    detail: String,
}

/// Why a probe was not made although the scrape was good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NotRun {
    /// Too many in flight (503).
    Busy,
    /// The diagnosis took too long (504).
    TimedOut,
}

/// What the allow list says of a target, once resolved.
#[derive(Debug)]
enum Admission {
    /// Every address is allowed: probe the first.
    Probe {
        /// The address to probe.
        remote: SocketAddr,
        /// How long resolving took.
        dns: Duration,
    },
    /// An address is outside the list: this 403, and no packet.
    Forbidden(Answer),
    /// The name gave no address.
    Unresolved {
        /// How long resolving took.
        dns: Duration,
    },
}

/// The exporter: its settings, engines, caches and counters. Shared by every connection.
#[derive(Debug)]
pub struct Exporter {
    settings: Settings,
    engines: Engines,
    results: ResultCache<(SocketAddr, String), Probed>,
    diagnoses: ResultCache<SocketAddr, Vec<u8>>,
    probe_slots: Semaphore,
    diagnose_slots: Semaphore,
    metrics: ExporterMetrics,
    recent: Mutex<VecDeque<Recent>>,
    /// True once the exporter stops: probes under way end at once as `interrupted`, so every
    /// scrape in flight is answered within the grace.
    stopping: tokio::sync::watch::Sender<bool>,
}

/// An HTTP answer.
type Answer = Response<Full<Bytes>>;

fn answer(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Answer {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// One line of text: every error answer.
fn line(status: StatusCode, text: &str) -> Answer {
    answer(status, "text/plain; charset=utf-8", format!("{text}\n"))
}

impl Exporter {
    /// An exporter with these settings, starting the engines its modules need.
    pub fn new(settings: Settings) -> Result<Exporter, crate::engine::raw::RawError> {
        let engines = Engines::start(&settings.modules)?;
        Ok(Exporter {
            results: ResultCache::new(settings.min_interval),
            diagnoses: ResultCache::new(DIAGNOSE_INTERVAL),
            probe_slots: Semaphore::new(settings.max_in_flight),
            diagnose_slots: Semaphore::new(MAX_DIAGNOSES),
            metrics: ExporterMetrics::default(),
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
            stopping: tokio::sync::watch::Sender::new(false),
            engines,
            settings,
        })
    }

    /// Ends every probe under way as `interrupted` (its scrape is answered), and every later one
    /// at once: called when the exporter stops.
    pub fn interrupt_probes(&self) {
        self.stopping.send_replace(true);
    }

    /// Returns once [`Exporter::interrupt_probes`] was called.
    async fn stopped(&self) {
        let mut stopping = self.stopping.subscribe();
        // An error means the sender is gone, which cannot happen while `self` lives.
        let _ = stopping.wait_for(|&stop| stop).await;
    }

    /// Stops what must not outlive the exporter (the raw engine's firewall rule).
    pub fn shutdown(&self) {
        self.engines.shutdown();
    }

    /// Answers one request.
    pub async fn handle(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Answer {
        if method != Method::GET && method != Method::HEAD {
            return line(StatusCode::METHOD_NOT_ALLOWED, "only GET is served");
        }
        match uri.path() {
            "/probe" => self.probe(uri, headers).await,
            "/diagnose" => self.diagnose(uri).await,
            "/metrics" => answer(StatusCode::OK, metrics::CONTENT_TYPE, self.metrics.render()),
            "/-/healthy" => line(StatusCode::OK, "Healthy"),
            "/" => answer(StatusCode::OK, "text/html; charset=utf-8", self.index_page()),
            _ => line(StatusCode::NOT_FOUND, "not found: try /, /probe?target=HOST, /metrics"),
        }
    }

    fn bad(&self, e: QueryError) -> Answer {
        self.metrics.refused(Refusal::BadRequest);
        line(StatusCode::BAD_REQUEST, &e.to_string())
    }

    /// Resolves a target and checks every address against the allow list.
    async fn admit(&self, target: &str, host: Host, deadline: Option<Duration>) -> Admission {
        let started = Instant::now();
        let addrs: Vec<SocketAddr> = match host {
            Host::Addr(a) => vec![a],
            Host::Name(name, port) => {
                let within = deadline.unwrap_or(RESOLVE_TIMEOUT).min(RESOLVE_TIMEOUT);
                crate::resolve::resolve_all(&name, port, Some(within)).await.unwrap_or_default()
            }
        };
        let dns = started.elapsed();
        if let Some(refused) = self.settings.allow.first_refused(addrs.iter().map(|a| a.ip())) {
            self.metrics.refused(Refusal::Forbidden);
            let text = format!("target {target:?}: {refused} is outside --allow; nothing was sent");
            return Admission::Forbidden(line(StatusCode::FORBIDDEN, &text));
        }
        match addrs.first() {
            Some(&remote) => Admission::Probe { remote, dns },
            None => Admission::Unresolved { dns },
        }
    }

    async fn probe(&self, uri: &Uri, headers: &HeaderMap) -> Answer {
        let q = match parse_query(uri.query()) {
            Ok(q) => q,
            Err(e) => return self.bad(e),
        };
        let module_name = q.module.as_deref().unwrap_or(DEFAULT_MODULE);
        let Some(module) = self.settings.modules.get(module_name) else {
            return self.bad(QueryError::Module(module_name.chars().take(64).collect()));
        };
        let header = headers.get("x-prometheus-scrape-timeout-seconds").map(|v| v.as_bytes());
        let deadline = match probe_deadline(header) {
            Ok(d) => d,
            Err(e) => return self.bad(e),
        };
        let host = match parse_host(&q.target) {
            Ok(h) => h,
            Err(e) => return self.bad(e),
        };
        let (remote, dns) = match self.admit(&q.target, host, deadline).await {
            Admission::Probe { remote, dns } => (remote, dns),
            Admission::Forbidden(answer) => return answer,
            Admission::Unresolved { dns } => {
                tracing::debug!(target = q.target, "name did not resolve");
                self.metrics.unresolved();
                self.remember(Recent {
                    at: SystemTime::now(),
                    target: q.target.clone(),
                    module: module.name.clone(),
                    remote: None,
                    outcome: metrics::RESOLVE_ERROR,
                    detail: format!("the name gave no address within {dns:.1?}"),
                });
                return answer(StatusCode::OK, metrics::CONTENT_TYPE, metrics::render_unresolved(dns));
            }
        };
        let deadline = deadline.map(|d| d.saturating_sub(dns));
        let key = (remote, module.name.clone());
        let fetched = self.results.get(key, || self.probe_now(&q.target, module, remote, deadline)).await;
        match fetched {
            Err(_) => {
                self.metrics.refused(Refusal::Busy);
                line(StatusCode::SERVICE_UNAVAILABLE, "too many probes in flight; try again")
            }
            Ok(fetched) => {
                let reused = match fetched {
                    Fetched::Fresh(_) => None,
                    Fetched::Reused { age, .. } => {
                        self.metrics.reused();
                        Some(age)
                    }
                };
                let text = metrics::render_probe(fetched.value(), Scrape { dns, reused });
                answer(StatusCode::OK, metrics::CONTENT_TYPE, text)
            }
        }
    }

    /// Makes a probe now, if there is room for one.
    async fn probe_now(
        &self,
        target: &str,
        module: &Module,
        remote: SocketAddr,
        deadline: Option<Duration>,
    ) -> Result<Probed, NotRun> {
        let _permit = self.probe_slots.try_acquire().map_err(|_| NotRun::Busy)?;
        let _in_flight = self.metrics.in_flight();
        let started = Instant::now();
        let observation = tokio::select! {
            observation = run_probe(&self.engines, module, remote, deadline) => observation,
            () = self.stopped() => crate::evidence::Observation::failed_connect(
                remote,
                None,
                module.request(remote, deadline).order,
                crate::evidence::Connect::Interrupted,
                u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            ),
        };
        let record = ProbeRecord::new(observation);
        let classification = &record.classification;
        self.metrics.probed(classification.outcome);
        self.remember(Recent {
            at: SystemTime::now(),
            target: target.to_string(),
            module: module.name.clone(),
            remote: Some(remote),
            outcome: classification.outcome.name(),
            detail: classification.detail(),
        });
        Ok(Probed { record, duration: started.elapsed() })
    }

    fn remember(&self, probe: Recent) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == RECENT {
            recent.pop_back();
        }
        recent.push_front(probe);
    }

    async fn diagnose(&self, uri: &Uri) -> Answer {
        let q = match parse_query(uri.query()) {
            Ok(q) => q,
            Err(e) => return self.bad(e),
        };
        let module_name = q.module.as_deref().unwrap_or(DEFAULT_MODULE);
        let Some(module) = self.settings.modules.get(module_name) else {
            return self.bad(QueryError::Module(module_name.chars().take(64).collect()));
        };
        let host = match parse_host(&q.target) {
            Ok(h) => h,
            Err(e) => return self.bad(e),
        };
        let remote = match self.admit(&q.target, host, None).await {
            Admission::Probe { remote, .. } => remote,
            Admission::Forbidden(answer) => return answer,
            Admission::Unresolved { .. } => {
                return line(StatusCode::BAD_GATEWAY, &format!("cannot resolve {:?}", q.target))
            }
        };
        let fetched = self
            .diagnoses
            .get(remote, || async {
                let _permit = self.diagnose_slots.try_acquire().map_err(|_| NotRun::Busy)?;
                self.metrics.diagnosed();
                let d =
                    run_diagnose(&self.engines, module, &q.target, remote).await.ok_or(NotRun::TimedOut)?;
                Ok(diagnosis_json(&d))
            })
            .await;
        match fetched {
            Ok(json) => answer(StatusCode::OK, "application/json", json.value().as_ref().clone()),
            Err(NotRun::Busy) => {
                self.metrics.refused(Refusal::Busy);
                line(StatusCode::SERVICE_UNAVAILABLE, "too many diagnoses running; try again")
            }
            Err(NotRun::TimedOut) => line(StatusCode::GATEWAY_TIMEOUT, "the diagnosis took too long"),
        }
    }

    /// The page at `/`: what the exporter is, its last probes, links.
    fn index_page(&self) -> String {
        let s = &self.settings;
        let allow: Vec<String> = s.allow.nets().iter().map(|n| n.to_string()).collect();
        let modules: Vec<String> = s.modules.iter().map(|m| html(&m.name)).collect();
        let mut page = format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>sshprobe exporter</title></head><body>\n\
             <h1>sshprobe exporter</h1>\n<p>Probes SSH identification exchanges for Prometheus: \
             <code>/probe?target=HOST[:PORT]&amp;module=NAME</code>. \
             <a href=\"/metrics\">Exporter metrics</a> · <a href=\"/-/healthy\">health</a></p>\n\
             <p>Allowed: {} · modules: {} · at most one probe per server and module every {:?} · \
             at most {} in flight</p>\n<h2>Last probes</h2>\n<table border=\"1\" cellpadding=\"3\">\n\
             <tr><th>when (UTC)</th><th>target</th><th>module</th><th>address</th><th>outcome</th>\
             <th>detail</th><th>links</th></tr>\n",
            html(&allow.join(", ")),
            modules.join(", "),
            s.min_interval,
            s.max_in_flight
        );
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for r in recent {
            let target = url(&r.target);
            page += &format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td><a href=\"/probe?target={target}&amp;module={}\">probe</a> \
                 <a href=\"/diagnose?target={target}\">diagnose</a></td></tr>\n",
                humantime::format_rfc3339_seconds(r.at),
                html(&r.target),
                html(&r.module),
                r.remote.map_or_else(|| "-".to_string(), |a| a.to_string()),
                r.outcome,
                html(&metrics::label_value(&r.detail)),
                url(&r.module),
            );
        }
        page + "</table>\n</body></html>\n"
    }
}

/// Text made safe inside HTML.
fn html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Text made safe as a query value.
fn url(text: &str) -> String {
    const QUERY_VALUE: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'.').remove(b'-').remove(b'_');
    percent_encoding::utf8_percent_encode(text, QUERY_VALUE).to_string()
}

/// Serves HTTP on `listener` until `shutdown` completes, then stops accepting, lets scrapes in
/// progress finish for up to [`SHUTDOWN_GRACE`], and returns.
pub async fn serve(listener: TcpListener, exporter: Arc<Exporter>, shutdown: impl Future<Output = ()>) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and the like: wait a moment instead of spinning.
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let exporter = exporter.clone();
        let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
            let exporter = exporter.clone();
            async move {
                let (parts, _body) = request.into_parts();
                Ok::<_, Infallible>(exporter.handle(&parts.method, &parts.uri, &parts.headers).await)
            }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .max_buf_size(16 * 1024)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("HTTP connection: {e}");
            }
            drop(permit);
        });
    }
    drop(listener);
    // Probes under way end now, as `interrupted`: their scrapes are answered within the grace.
    exporter.interrupt_probes();
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!("scrapes still in progress after {SHUTDOWN_GRACE:?}: dropped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_and_urls_are_escaped() {
        assert_eq!(html("<script>\"x\"&'"), "&lt;script&gt;&quot;x&quot;&amp;&#39;");
        assert_eq!(url("[::1]:22"), "%5B%3A%3A1%5D%3A22");
        assert_eq!(url("a.b-c_d:22&x"), "a.b-c_d%3A22%26x");
    }

    async fn get(exporter: &Exporter, uri: &str) -> (StatusCode, String) {
        use http_body_util::BodyExt;
        let response = exporter.handle(&Method::GET, &uri.parse().unwrap(), &HeaderMap::new()).await;
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn refusals_before_any_probe() {
        let exporter = Exporter::new(Settings::default()).unwrap();
        let (status, body) = get(&exporter, "/probe?target=192.0.2.1").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert!(body.contains("outside --allow"));
        for bad in [
            "/probe",
            "/probe?target=127.0.0.1:70000",
            "/probe?target=%FF",
            "/probe?target=10.0.0.0/8",
            "/probe?target=127.0.0.1&module=nope",
            "/diagnose",
        ] {
            let (status, body) = get(&exporter, bad).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
            assert_eq!(body.lines().count(), 1, "{bad}: {body}");
        }
        let (_, metrics) = get(&exporter, "/metrics").await;
        assert!(
            metrics.contains("sshprobe_exporter_scrapes_refused_total{reason=\"forbidden\"} 1\n"),
            "{metrics}"
        );
        assert!(
            metrics.contains("sshprobe_exporter_scrapes_refused_total{reason=\"bad_request\"} 6\n"),
            "{metrics}"
        );
        assert!(metrics.contains("sshprobe_exporter_probes_total{outcome=\"banner\"} 0\n"), "{metrics}");
        assert_eq!(get(&exporter, "/-/healthy").await, (StatusCode::OK, "Healthy\n".into()));
        assert_eq!(get(&exporter, "/nope").await.0, StatusCode::NOT_FOUND);
    }
}
