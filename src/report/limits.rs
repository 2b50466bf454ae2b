//! Reports of `limits` runs: a table for people, JSON Lines (one object per level, then a
//! summary), CSV (one row per level), and an SVG plot of the refused fraction against held
//! connections with the fitted rule. Levels are written one at a time, as the ramp measures them
//! ([`write_level`]), then the summary ([`write_summary`]), partial if the run was interrupted.

use super::Format;
use crate::escape::{escape, write_json};
use crate::experiment::limits::{HardLimit, Level, LimitsReport, LimitsWarning, Phase};
use crate::experiment::stats::MaxStartupsFit;
use crate::server::{MaxStartups, Software};
use plotters::prelude::*;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::SystemTime;

/// The CSV header of [`write_level`]'s rows.
pub const CSV_HEADER: &str =
    "target,held,probes,refused,fraction,ci_low,ci_high,latency_p50_us,latency_p90_us,latency_p99_us,time";

/// Writes one level of the ramp as it is measured: a JSON line (`"type": "level"`), a CSV row, or a
/// table row. `first` adds the CSV header or the table's title and column heads before it; `time`
/// is when the level was measured.
pub fn write_level(
    out: &mut impl Write,
    target: &str,
    remote: SocketAddr,
    level: &Level,
    time: SystemTime,
    format: Format,
    first: bool,
) -> io::Result<()> {
    match format {
        Format::Jsonl => {
            let mut v = serde_json::to_value(level)?;
            v["type"] = "level".into();
            v["target"] = target.into();
            v["time"] = humantime::format_rfc3339_micros(time).to_string().into();
            write_json(&mut *out, &v)?;
            writeln!(out)?;
        }
        Format::Csv => {
            if first {
                writeln!(out, "{CSV_HEADER}")?;
            }
            let lat = |i: usize| level.latency_us.map(|v| v[i].to_string()).unwrap_or_default();
            writeln!(
                out,
                "{},{},{},{},{:.4},{:.4},{:.4},{},{},{},{}",
                super::csv_field(target),
                level.held,
                level.probes,
                level.refused,
                level.fraction,
                level.fraction_ci.0,
                level.fraction_ci.1,
                lat(0),
                lat(1),
                lat(2),
                humantime::format_rfc3339_micros(time),
            )?;
        }
        Format::Table => {
            if first {
                writeln!(out, "limits of {} ({remote})", escape(target))?;
                writeln!(
                    out,
                    "{:>5} {:>6} {:>7} {:>6}  {:<11}  BANNER LATENCY ms p50 / p90 / p99",
                    "HELD", "PROBES", "REFUSED", "FRAC", "95% CI"
                )?;
            }
            // One unit for the whole column: milliseconds.
            let lat = level
                .latency_us
                .map(|[a, b, c]| format!("{} / {} / {}", ms(a), ms(b), ms(c)))
                .unwrap_or_else(|| "-".into());
            writeln!(
                out,
                "{:>5} {:>6} {:>7} {:>6.2}  {:<11}  {lat}",
                level.held,
                level.probes,
                level.refused,
                level.fraction,
                format!("{:.2}-{:.2}", level.fraction_ci.0, level.fraction_ci.1),
            )?;
        }
    }
    out.flush()
}

/// A warning in words, for stderr and the JSON summary.
pub fn describe_warning(w: &LimitsWarning) -> String {
    match *w {
        LimitsWarning::Penalties { software, spread } => format!(
            "{software} has PerSourcePenalties (on by default): every probe that does not authenticate costs its \
             source address 1 s and a held connection that times out 10 s; with penalties on, refusals from \
             penalties mix with MaxStartups refusals. For a clean curve set `PerSourcePenalties no` (or \
             `PerSourcePenaltyExemptList` for the probing addresses) on the server{}",
            if spread { "; probes and holders are spread over many loopback addresses to dilute them" } else { "" }
        ),
        LimitsWarning::OneSource => {
            "one source address: a PerSourceMaxStartups limit on it would look like MaxStartups (give several --source)"
                .into()
        }
        LimitsWarning::AllTimedOut { held } => {
            format!("every probe timed out at {held} held connections: the server stopped answering")
        }
        LimitsWarning::MaxDuration { held } => {
            format!("stopped at {held} held connections: --max-duration reached")
        }
        LimitsWarning::RefusedAfterRelease { refused, probes, penalty_lines } => format!(
            "{refused} of {probes} probes were refused after every held connection was released{}: the curve is distorted",
            if penalty_lines {
                " with 'Not allowed at this time' (a PerSourcePenalties block on our addresses, or others' load)"
            } else {
                " (others' unauthenticated connections)"
            }
        ),
    }
}

/// A phase's name on the progress line.
pub fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Ramp => "ramp",
        Phase::Bisect => "bisect",
        Phase::Recheck => "recheck",
        Phase::AcceptRate => "accept rate",
        Phase::Grace => "grace",
    }
}

/// Microseconds as milliseconds, three decimals, without the unit (the column head says it).
fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

/// A rate with about four significant digits: `17531`, `812.4`, `6.463`, `0.5210` (per second).
pub(crate) fn format_rate(per_s: f64) -> String {
    let decimals = match per_s.abs() {
        r if r >= 1000.0 => 0,
        r if r >= 100.0 => 1,
        r if r >= 10.0 => 2,
        r if r >= 1.0 => 3,
        _ => 4,
    };
    format!("{per_s:.decimals$}")
}

/// Writes what follows the levels: the JSON summary (`"type": "summary"`, without the levels, with
/// `partial` and the run's start `time`), or the table's fit, recheck, accept rate and grace. CSV
/// has only levels. `partial`: the run was interrupted after these levels (no recheck, accept rate
/// or grace). Warnings are not in the table: the command prints each once, on stderr.
pub fn write_summary(
    out: &mut impl Write,
    r: &LimitsReport,
    started: SystemTime,
    format: Format,
    partial: bool,
) -> io::Result<()> {
    match format {
        Format::Jsonl => {
            let mut v = serde_json::to_value(r)?;
            if let Some(o) = v.as_object_mut() {
                o.remove("levels");
                // The warnings in words, as stderr has them.
                let words: Vec<String> = r.warnings.iter().map(describe_warning).collect();
                o.insert("warnings".into(), words.into());
                o.insert("type".into(), "summary".into());
                o.insert("partial".into(), partial.into());
                o.insert("levels_measured".into(), r.levels.len().into());
                o.insert("time".into(), humantime::format_rfc3339_micros(started).to_string().into());
            }
            write_json(&mut *out, &v)?;
            writeln!(out)?;
        }
        Format::Csv => {}
        Format::Table => write_table_summary(out, r, partial)?,
    }
    out.flush()
}

fn write_table_summary(out: &mut impl Write, r: &LimitsReport, partial: bool) -> io::Result<()> {
    if r.levels.is_empty() {
        writeln!(out, "limits of {} ({})", escape(&r.target), r.remote)?;
    }
    let server = r.server.as_deref().map(escape).unwrap_or_else(|| "?".into());
    writeln!(out, "server {server}, {:.1} s", r.duration_ms as f64 / 1000.0)?;
    if partial {
        writeln!(
            out,
            "PARTIAL: interrupted after {} levels; no recheck, accept rate or LoginGraceTime measured",
            r.levels.len()
        )?;
    }
    match r.fit {
        _ if r.hard_limit.is_some() => {
            if let Some(h) = r.hard_limit {
                write_hard_limit(out, r, h)?;
            }
        }
        Some(f) => {
            let b = f.best;
            let full = if f.full_beyond_observed {
                format!("{} (beyond the levels measured)", b.full)
            } else {
                b.full.to_string()
            };
            writeln!(
                out,
                "MaxStartups as seen from here: {}:{}:{}  (95% intervals: start {}-{}, rate {}-{}, full {}-{})",
                b.start, b.rate, full, f.start_ci.0, f.start_ci.1, f.rate_ci.0, f.rate_ci.1, f.full_ci.0, f.full_ci.1
            )?;
            write_others_claim(out, &f)?;
        }
        None if r.levels.is_empty() => writeln!(out, "MaxStartups: not measured (no level finished)")?,
        None => writeln!(
            out,
            "MaxStartups: no refusal up to {} held connections (start is above that)",
            r.levels.last().map_or(0, |l| l.held)
        )?,
    }
    if partial {
        return Ok(());
    }
    writeln!(out, "recheck with nothing held: {} refused of {}", r.recheck.1, r.recheck.0)?;
    if let Some(a) = &r.accept_rate {
        let lat = a
            .latency_us
            .map(|[p50, _, p99]| format!(", latency p50 {} ms, p99 {} ms", ms(p50), ms(p99)))
            .unwrap_or_default();
        writeln!(
            out,
            "accept rate: {} banners/s at concurrency {} over {:.1} s ({} probes, {} refused{lat})",
            format_rate(a.banners_per_s),
            a.concurrency,
            a.duration_ms as f64 / 1000.0,
            a.probes,
            a.refused
        )?;
    }
    match &r.grace {
        Some(g) => match g.estimate_s {
            Some(s) => writeln!(
                out,
                "LoginGraceTime: about {s:.1} s (connections lived {:?} ms; OpenSSH 9.9+ adds 0-4 s jitter)",
                g.lifetimes_ms
            )?,
            None => writeln!(
                out,
                "LoginGraceTime: longer than the wait ({} connections still open)",
                g.still_open
            )?,
        },
        None => writeln!(out, "LoginGraceTime: not measured (--grace)")?,
    }
    Ok(())
}

/// Whether others' connections could explain a `start` below sshd's default: only when `full` is
/// shifted alike (others' connections move both by the same count), or was not reached.
fn write_others_claim(out: &mut impl Write, f: &MaxStartupsFit) -> io::Result<()> {
    let (b, default) = (f.best, MaxStartups::DEFAULT);
    if b.start >= default.start {
        return Ok(());
    }
    let others = default.start - b.start;
    let shifted_full = default.full.saturating_sub(others);
    if f.full_beyond_observed {
        writeln!(
            out,
            "  others' unauthenticated connections count too: with sshd's default 10:30:100 this would mean about \
             {others} held by others (full, about {shifted_full} then, was not reached to check); otherwise \
             MaxStartups is configured lower"
        )
    } else if (f.full_ci.0..=f.full_ci.1).contains(&shifted_full) {
        writeln!(
            out,
            "  others' unauthenticated connections count too: start and full are both shifted from sshd's default \
             10:30:100 as about {others} held by others would shift them; or MaxStartups is configured so"
        )
    } else {
        writeln!(
            out,
            "  MaxStartups is configured lower than sshd's default 10:30:100: others' connections would shift start \
             and full alike (full about {shifted_full} for this start), and full is {}",
            b.full
        )
    }
}

/// The table's line for a hard limit: named for the server that has one.
fn write_hard_limit(out: &mut impl Write, r: &LimitsReport, h: HardLimit) -> io::Result<()> {
    let at = if h.is_exact() {
        format!("every probe refused with {} held, none with {}", h.refused_at, h.accepted_at)
    } else {
        format!(
            "none refused with {} held, every probe with {} (not bisected further)",
            h.accepted_at, h.refused_at
        )
    };
    writeln!(out, "a hard limit, not sshd's random early drop: {at}")?;
    let software = r.server.as_deref().map(Software::parse).unwrap_or(Software::Other);
    match software {
        Software::Dropbear => {
            write!(
                out,
                "  dropbear's MAX_UNAUTH_CLIENTS ({DROPBEAR_MAX_UNAUTH_CLIENTS} unauthenticated connections by \
                 default; a build-time constant, in localoptions.h), and per address MAX_UNAUTH_PER_IP \
                 ({DROPBEAR_MAX_UNAUTH_PER_IP}), which limits keeps out of this curve by spreading over many source \
                 addresses"
            )?;
            if h.is_exact() && h.refused_at < DROPBEAR_MAX_UNAUTH_CLIENTS {
                write!(
                    out,
                    "; a limit of {} means about {} held by others, or a build with a lower MAX_UNAUTH_CLIENTS",
                    h.refused_at,
                    DROPBEAR_MAX_UNAUTH_CLIENTS - h.refused_at
                )?;
            }
            writeln!(out)
        }
        Software::Openssh { .. } if h.is_exact() => writeln!(
            out,
            "  sshd's `MaxStartups {n}` (= {n}:100:{n}) as seen from here (others' unauthenticated connections count too)",
            n = h.refused_at
        ),
        _ => writeln!(out, "  a fixed cap on unauthenticated connections, as seen from here"),
    }
}

/// Dropbear's default `MAX_UNAUTH_CLIENTS` (default_options.h; docs/facts.md §3).
const DROPBEAR_MAX_UNAUTH_CLIENTS: u32 = 30;
/// Dropbear's default `MAX_UNAUTH_PER_IP` (default_options.h; docs/facts.md §3).
const DROPBEAR_MAX_UNAUTH_PER_IP: u32 = 5;

/// Draws the refused fraction against held connections, with 95 % intervals and the fitted rule.
pub fn plot_svg(r: &LimitsReport, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let max_x = r.levels.iter().map(|l| l.held).max().unwrap_or(1).max(1) + 1;
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = match r.fit {
        Some(f) => format!(
            "{} ({}): MaxStartups {} as seen from here",
            escape(&r.target),
            escape(r.server.as_deref().unwrap_or("?")),
            f.best
        ),
        None => format!("{} ({})", escape(&r.target), escape(r.server.as_deref().unwrap_or("?"))),
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..f64::from(max_x), 0f64..1.05f64)?;
    chart
        .configure_mesh()
        .x_desc("unauthenticated connections held")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc("refused fraction")
        .draw()?;
    for l in &r.levels {
        let x = f64::from(l.held);
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(x, l.fraction_ci.0), (x, l.fraction_ci.1)],
            BLUE.mix(0.4).stroke_width(2),
        )))?;
    }
    chart
        .draw_series(r.levels.iter().map(|l| Circle::new((f64::from(l.held), l.fraction), 4, BLUE.filled())))?
        .label("measured (95% interval)")
        .legend(|(x, y)| Circle::new((x + 10, y), 4, BLUE.filled()));
    if let Some(f) = r.fit {
        let curve: Vec<(f64, f64)> = (0..max_x)
            .flat_map(|n| {
                let p = f64::from(f.best.drop_percent(n)) / 100.0;
                [(f64::from(n), p), (f64::from(n + 1), p)]
            })
            .collect();
        chart
            .draw_series(LineSeries::new(curve, RED.stroke_width(2)))?
            .label(format!("sshd rule, fitted {}", f.best))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    }
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_keep_about_four_significant_digits() {
        let cases = [
            (17531.4, "17531"),
            (812.44, "812.4"),
            (64.631, "64.63"),
            (6.46312, "6.463"),
            (0.52104, "0.5210"),
        ];
        for (rate, want) in cases {
            assert_eq!(format_rate(rate), want);
        }
    }
}
