//! Stream a scan: `cargo run --example scan`. Probes every endpoint of the embedded lab, twice over
//! (so several targets are in flight at once), and prints each result as it arrives.

use sshprobe::lab::{Lab, LabConfig};
use sshprobe::{scan_targets, ScanEvent, ScanOptions};
use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A short wrappers delay and banner deadline, so the whole lab answers in about a second.
    let lab =
        Lab::start(LabConfig { deny_delay: Duration::from_millis(300), ..LabConfig::default() }).await?;
    let targets: Vec<String> = lab.endpoints().iter().map(|(_, addr)| addr.to_string()).collect();
    let mut options = ScanOptions { concurrency: 8, ..ScanOptions::default() };
    options.probe.banner_timeout = Duration::from_secs(1);
    let mut scan = scan_targets(targets.iter().chain(&targets).cloned(), &options)?;
    let mut counts = std::collections::BTreeMap::new();
    while let Some(event) = scan.next().await {
        match event {
            ScanEvent::Probe(result) => {
                let outcome = result.record.outcome().name();
                println!("{:<22} {outcome}", result.target);
                *counts.entry(outcome).or_insert(0) += 1;
            }
            ScanEvent::BadTarget(e) | ScanEvent::Excluded(e) => eprintln!("{e}"),
        }
    }
    println!("{counts:?}");
    Ok(())
}
