//! Reports of `limits` runs: a table for people, JSON Lines (one object per level, then a
//! summary), and an SVG plot of the refused fraction against held connections with the fitted rule.

use super::probe::format_us;
use super::Format;
use crate::escape::{escape, write_json};
use crate::experiment::limits::LimitsReport;
use crate::server::MaxStartups;
use plotters::prelude::*;
use std::io::{self, Write};
use std::path::Path;

/// Writes a report in `format` (CSV: one row per level).
pub fn write_limits(out: &mut impl Write, r: &LimitsReport, format: Format) -> io::Result<()> {
    match format {
        Format::Jsonl => {
            for level in &r.levels {
                let mut v = serde_json::to_value(level)?;
                v["type"] = "level".into();
                v["target"] = r.target.clone().into();
                write_json(&mut *out, &v)?;
                writeln!(out)?;
            }
            let mut v = serde_json::to_value(r)?;
            if let Some(o) = v.as_object_mut() {
                o.remove("levels");
                o.insert("type".into(), "summary".into());
            }
            write_json(&mut *out, &v)?;
            writeln!(out)?;
        }
        Format::Csv => {
            writeln!(out, "target,held,probes,refused,fraction,ci_low,ci_high,latency_p50_us,latency_p90_us,latency_p99_us")?;
            for l in &r.levels {
                let lat = |i: usize| l.latency_us.map(|v| v[i].to_string()).unwrap_or_default();
                writeln!(
                    out,
                    "{},{},{},{},{:.4},{:.4},{:.4},{},{},{}",
                    super::csv_field(&r.target),
                    l.held,
                    l.probes,
                    l.refused,
                    l.fraction,
                    l.fraction_ci.0,
                    l.fraction_ci.1,
                    lat(0),
                    lat(1),
                    lat(2)
                )?;
            }
        }
        Format::Table => write_table(out, r)?,
    }
    out.flush()
}

fn write_table(out: &mut impl Write, r: &LimitsReport) -> io::Result<()> {
    writeln!(
        out,
        "limits of {} ({}) in {:.1} s",
        escape(&r.target),
        escape(r.server.as_deref().unwrap_or("?")),
        r.duration_ms as f64 / 1000.0
    )?;
    writeln!(
        out,
        "{:>5} {:>6} {:>7} {:>6}  {:<13} {:>6}  BANNER LATENCY p50 / p90 / p99",
        "HELD", "PROBES", "REFUSED", "FRAC", "95% CI", "MODEL"
    )?;
    let model = r.fit.map(|f| f.best);
    for l in &r.levels {
        let m =
            model.map(|m| format!("{:.2}", f64::from(m.drop_percent(l.held)) / 100.0)).unwrap_or_default();
        let lat = l
            .latency_us
            .map(|[a, b, c]| format!("{} / {} / {}", format_us(a), format_us(b), format_us(c)))
            .unwrap_or_else(|| "-".into());
        writeln!(
            out,
            "{:>5} {:>6} {:>7} {:>6.2}  {:<13} {:>6}  {lat}",
            l.held,
            l.probes,
            l.refused,
            l.fraction,
            format!("{:.2}-{:.2}", l.fraction_ci.0, l.fraction_ci.1),
            m
        )?;
    }
    match r.fit {
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
            if b.start < MaxStartups::DEFAULT.start {
                writeln!(
                    out,
                    "  others' unauthenticated connections count too: with sshd's default 10:30:100 this would mean \
                     about {} held by others; otherwise MaxStartups is configured lower",
                    MaxStartups::DEFAULT.start - b.start
                )?;
            }
        }
        None => writeln!(
            out,
            "MaxStartups: no refusal up to {} held connections (start is above that)",
            r.levels.last().map_or(0, |l| l.held)
        )?,
    }
    writeln!(out, "recheck with nothing held: {} refused of {}", r.recheck.1, r.recheck.0)?;
    if let Some(a) = &r.accept_rate {
        let lat = a
            .latency_us
            .map(|[p50, _, p99]| format!(", latency p50 {} p99 {}", format_us(p50), format_us(p99)))
            .unwrap_or_default();
        writeln!(
            out,
            "accept rate: {:.0} banners/s at concurrency {} over {:.1} s ({} probes, {} refused{lat})",
            a.banners_per_s,
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
    for w in &r.warnings {
        writeln!(out, "warning: {}", escape(w))?;
    }
    Ok(())
}

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
