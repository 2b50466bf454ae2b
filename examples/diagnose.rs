//! Diagnose one target: `cargo run --example diagnose`. Starts the embedded lab with a MaxStartups
//! table that is always full, asks why the exchange fails there, and prints the verdict with its
//! evidence and remedies as `sshprobe diagnose -o jsonl` would.

use sshprobe::lab::{Behaviour, Lab, LabConfig};
use sshprobe::server::MaxStartups;
use sshprobe::{diagnose_target, DiagnoseOptions, EngineKind};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let full = MaxStartups { start: 0, rate: 100, full: 1 };
    let lab = Lab::start(LabConfig { maxstartups: full, ..LabConfig::default() }).await?;
    let remote = lab.addr(Behaviour::Maxstartups);
    let diagnosis =
        diagnose_target("lab-maxstartups", remote, EngineKind::Connect, &DiagnoseOptions::default()).await?;
    println!("verdict: {} ({:?})", diagnosis.finding.verdict.name(), diagnosis.finding.confidence);
    let started = std::time::SystemTime::now();
    let mut out = std::io::stdout().lock();
    sshprobe::report::diagnose::write_diagnosis(
        &mut out,
        &diagnosis,
        started,
        sshprobe::report::Format::Table,
        false,
    )?;
    Ok(())
}
