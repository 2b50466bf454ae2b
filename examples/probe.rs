//! Probe one target and print what it says: `cargo run --example probe [HOST:PORT]`.
//!
//! Without an argument it starts the embedded lab and probes a few of its endpoints (no server of
//! yours needed): a healthy server, a TCP-wrappers-style reset, a server that is not SSH.

use sshprobe::lab::{Behaviour, Lab, LabConfig};
use sshprobe::{probe_target, ProbeOptions};
use std::net::SocketAddr;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = ProbeOptions::default();
    if let Some(target) = std::env::args().nth(1) {
        let remote: SocketAddr = target.parse()?;
        let record = probe_target(remote, &options).await?;
        println!("{remote}: {}", record.outcome().name());
        return Ok(());
    }
    let lab = Lab::start(LabConfig::default()).await?;
    for behaviour in [Behaviour::Ok, Behaviour::DenyReset, Behaviour::NotSsh] {
        let record = probe_target(lab.addr(behaviour), &options).await?;
        // Server text is hostile input: escape it before a terminal sees it.
        let banner = record.banner().map(|b| sshprobe::escape::escape(&b.software)).unwrap_or_default();
        println!("{:<10} {:<22} {banner}", behaviour.name(), record.outcome().name());
    }
    Ok(())
}
