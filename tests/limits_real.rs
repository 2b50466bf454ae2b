//! `limits` against a real sshd with a known MaxStartups. In a test binary of its own, so that no
//! other test loads the machine while it measures (Cargo runs test binaries one at a time).

mod common;

use common::{have, jsonl, root_or_skip, Sshd};

/// One raw-engine run at a time in this process: a second would find the first's run lock (it
/// owns the network namespace's raw source ports and firewall table) and refuse to start.
static RAW_ENGINE: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn limits_estimates_maxstartups_4_30_12() {
    if !root_or_skip("limits_estimate") || !have("limits_estimate", &["sshd"]) {
        return;
    }
    // Debian 12's sshd (9.2) has no penalties to turn off.
    let sshd = Sshd::new().option("MaxStartups 4:30:12").start();
    let dir = tempfile::tempdir().unwrap();
    let plot = dir.path().join("limits.svg");
    let (lines, out) = jsonl(&[
        "limits",
        &sshd.addr.to_string(),
        "--max-duration",
        "50s",
        "--rate-duration",
        "1s",
        // 40 probes per level (the default is 20): the rate's 95 % interval narrows from ±10-17
        // points to ±7-14 (measured), so an estimate misses the ±15 asked below far more rarely
        // (with 20, a clean-clone CI run once fitted 4:50:12). About 12 s.
        "--probes",
        "40",
        "--plot",
        plot.to_str().unwrap(),
        "-o",
        "jsonl",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary = lines.iter().find(|l| l["type"] == "summary").expect("a summary line");
    let fit = &summary["fit"]["best"];
    let (start, rate, full) =
        (fit["start"].as_i64().unwrap(), fit["rate"].as_i64().unwrap(), fit["full"].as_i64().unwrap());
    assert!(
        (start - 4).abs() <= 1 && (full - 12).abs() <= 1 && (rate - 30).abs() <= 15,
        "fitted {start}:{rate}:{full}\n{summary:#}"
    );
    assert!(summary["duration_ms"].as_u64().unwrap() < 60_000);
    assert!(summary["accept_rate"]["banners_per_s"].as_f64().unwrap() > 0.0);
    let levels = lines.iter().filter(|l| l["type"] == "level").count();
    assert!(levels >= 12, "{levels} levels");
    let svg = std::fs::read_to_string(&plot).expect("the plot");
    assert!(svg.starts_with("<svg") && svg.contains("refused fraction"));
}

#[test]
fn limits_measures_login_grace_time() {
    if !root_or_skip("limits_grace") || !have("limits_grace", &["sshd"]) {
        return;
    }
    let sshd = Sshd::new().option("LoginGraceTime 2").start();
    // Both engines hold: the raw one sees the server's FIN on a flow of its own.
    for engine in ["connect", "raw"] {
        let _one_at_a_time = (engine == "raw").then(|| RAW_ENGINE.lock().unwrap_or_else(|p| p.into_inner()));
        let (lines, out) = jsonl(&[
            "limits",
            &sshd.addr.to_string(),
            "--engine",
            engine,
            "--max-held",
            "2",
            "--probes",
            "2",
            "--rate-duration",
            "0s",
            "--grace",
            "15s",
            "-o",
            "jsonl",
        ]);
        assert!(out.status.success(), "--engine {engine}: {}", String::from_utf8_lossy(&out.stderr));
        let summary = lines.iter().find(|l| l["type"] == "summary").expect("a summary line");
        let grace = &summary["grace"];
        // sshd 9.2 closes at LoginGraceTime exactly (9.9+ adds up to 4 s of jitter).
        let estimate = grace["estimate_s"].as_f64().expect("an estimate");
        assert!((1.9..3.0).contains(&estimate), "--engine {engine}: {grace}");
        assert_eq!(grace["still_open"], 0, "--engine {engine}: {grace}");
        assert_eq!(grace["lifetimes_ms"].as_array().map(Vec::len), Some(3), "--engine {engine}: {grace}");
    }
}

/// The raw engine holds and probes as the connect engine does: the same server's MaxStartups
/// `3:50:6` is fitted within ±1 on `start` and `full`.
#[test]
fn limits_with_the_raw_engine_fits_maxstartups_3_50_6() {
    if !root_or_skip("limits_raw") || !have("limits_raw", &["sshd", "nft"]) {
        return;
    }
    let sshd = Sshd::new().option("MaxStartups 3:50:6").start();
    let _one_at_a_time = RAW_ENGINE.lock().unwrap_or_else(|p| p.into_inner());
    let (lines, out) = jsonl(&[
        "limits",
        &sshd.addr.to_string(),
        "--engine",
        "raw",
        "--max-duration",
        "40s",
        "--rate-duration",
        "1s",
        "--probes",
        "30",
        "-o",
        "jsonl",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary = lines.iter().find(|l| l["type"] == "summary").expect("a summary line");
    let fit = &summary["fit"]["best"];
    let (start, full) = (fit["start"].as_i64().unwrap(), fit["full"].as_i64().unwrap());
    assert!(
        (start - 3).abs() <= 1 && (full - 6).abs() <= 1,
        "fitted {start}:{}:{full}\n{summary:#}",
        fit["rate"]
    );
    assert_eq!(summary["recheck"][1], 0, "refusals after the release: {summary:#}");
}

/// Dropbear refuses nothing up to MAX_UNAUTH_CLIENTS (30) and everything past it: limits bisects
/// the jump, names dropbear's constants, and prints no sshd rule for it.
#[test]
fn limits_bisects_dropbears_hard_limit_and_names_its_constants() {
    if !root_or_skip("limits_dropbear") || !have("limits_dropbear", &["dropbear"]) {
        return;
    }
    let server = common::dropbear();
    let out = common::sshprobe()
        .args([
            "limits",
            &server.addr.to_string(),
            "--probes",
            "5",
            "--rate-duration",
            "0s",
            "--max-held",
            "40",
        ])
        .output()
        .expect("sshprobe");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("every probe refused with 30 held, none with 29"), "{text}");
    assert!(text.contains("MAX_UNAUTH_CLIENTS (30") && text.contains("MAX_UNAUTH_PER_IP (5)"), "{text}");
    assert!(!text.contains("MaxStartups as seen from here"), "{text}");
    assert!(!text.contains("server ?"), "{text}");
}

/// With `MaxStartups 4:30:12`, start is below the default but full is far from what others'
/// connections would make of 10:30:100: limits must not suggest six are held by others.
#[test]
fn limits_offers_others_only_when_start_and_full_shift_alike() {
    if !root_or_skip("limits_others") || !have("limits_others", &["sshd"]) {
        return;
    }
    let sshd = Sshd::new().option("MaxStartups 4:30:12").start();
    let out = common::sshprobe()
        .args(["limits", &sshd.addr.to_string(), "--probes", "20", "--rate-duration", "0s"])
        .output()
        .expect("sshprobe");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains("held by others"), "{text}");
    assert!(text.contains("configured lower than sshd's default"), "{text}");
}
