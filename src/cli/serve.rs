//! `sshprobe serve`.

use super::EXIT_OK;
use anyhow::{bail, Context};
use clap::Args;
use ipnet::IpNet;
use sshprobe::serve::allow::AllowList;
use sshprobe::serve::config::Modules;
use sshprobe::serve::{serve, Exporter, Settings, DEFAULT_LISTEN, DEFAULT_MAX_IN_FLIGHT};
use sshprobe::shutdown::ShutdownSignals;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  sshprobe serve                                   loopback targets only, on 127.0.0.1:9722
  sshprobe serve --allow 10.0.0.0/8 --config sshprobe.toml
  curl '127.0.0.1:9722/probe?target=127.0.0.1:22'  one probe, as Prometheus scrapes it

Paths: /probe?target=HOST[:PORT][&module=NAME], /diagnose?target=HOST[:PORT], /metrics, /-/healthy, /.
The README has the Prometheus scrape config (relabelling) and a Grafana dashboard.

Safety: targets outside --allow get 403 and no packet; at most one probe per server and module per
--min-interval (later scrapes reuse it, marked sshprobe_cached 1); at most --max-in-flight probes
at once (503 beyond). SIGTERM or Ctrl-C stops it cleanly.")]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = DEFAULT_LISTEN, value_name = "ADDR:PORT")]
    listen: SocketAddr,

    /// A network the exporter may probe; repeat for several. Default: loopback only
    /// (127.0.0.0/8 and ::1). Names are resolved and every address they give is checked.
    #[arg(long = "allow", value_name = "CIDR", value_parser = parse_net)]
    allow: Vec<IpNet>,

    /// Modules (engine, order, ident, source, timeouts) from this TOML file; see the README.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// At most one probe per server and module per this interval; scrapes in between reuse the last
    /// result. Below about 1 s, OpenSSH 9.8+ penalises the exporter's address (PerSourcePenalties).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    min_interval: Duration,

    /// At most this many probes at once; scrapes beyond get 503.
    #[arg(long, default_value_t = DEFAULT_MAX_IN_FLIGHT, value_name = "N")]
    max_in_flight: usize,
}

/// A network, or one address as a /32 or /128.
fn parse_net(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("invalid network {s:?}: expected CIDR (10.0.0.0/8) or an address"))
}

pub async fn run(args: ServeArgs) -> anyhow::Result<u8> {
    if args.max_in_flight == 0 {
        bail!("--max-in-flight must be at least 1");
    }
    let modules = match &args.config {
        None => Modules::default(),
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            Modules::from_toml(&text).with_context(|| format!("in {}", path.display()))?
        }
    };
    let allow = if args.allow.is_empty() { AllowList::default() } else { AllowList::new(args.allow) };
    if args.min_interval < Duration::from_secs(1) {
        tracing::warn!(
            "--min-interval {:?}: OpenSSH 9.8+ penalises an address that connects more than about once a \
             second without authenticating; scrapes may then show the exporter's own penalty",
            args.min_interval
        );
    }
    // Caught from before the raw engine's rule exists, so no signal leaves it behind.
    let mut signals = ShutdownSignals::install().context("installing the SIGINT and SIGTERM handlers")?;
    let settings =
        Settings { allow, modules, min_interval: args.min_interval, max_in_flight: args.max_in_flight };
    let exporter = Arc::new(Exporter::new(settings).context("starting the raw engine a module needs")?);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let local = listener.local_addr().context("reading the listening address")?;
    // The one line on stdout: where it listens (a test or a script reads the port from it).
    println!("sshprobe serve: listening on http://{local}/");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<&'static str>();
    let shutdown = async move {
        let _ = stop_tx.send(signals.recv().await.name());
    };
    serve(listener, exporter.clone(), shutdown).await;
    exporter.shutdown();
    let name = stop_rx.await.unwrap_or("stopped");
    eprintln!("sshprobe serve: {name}: stopped cleanly");
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        assert_eq!(parse_net("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_net("192.0.2.7").unwrap().to_string(), "192.0.2.7/32");
        assert_eq!(parse_net("::1").unwrap().to_string(), "::1/128");
        assert!(parse_net("nope").is_err());
    }
}
