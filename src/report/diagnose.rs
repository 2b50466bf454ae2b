//! Reports of diagnoses: a block of text per target for people, one JSON object per target otherwise.

use super::{Format, Palette};
use crate::escape::escape;
use crate::experiment::diagnose::{Confidence, Diagnosis, Verdict};
use std::io::{self, Write};

/// Writes one diagnosis in `format`.
pub fn write_diagnosis(out: &mut impl Write, d: &Diagnosis, format: Format, colour: bool) -> io::Result<()> {
    match format {
        Format::Jsonl => {
            crate::escape::write_json(&mut *out, d)?;
            writeln!(out)?;
        }
        Format::Csv => {
            let f = &d.finding;
            writeln!(
                out,
                "{},{},{},{},{}",
                super::csv_field(&d.target),
                f.verdict,
                serde_json::to_value(f.confidence)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                super::csv_field(&f.evidence.join(" | ")),
                super::csv_field(&f.remedy.join(" | "))
            )?;
        }
        Format::Table => write_text(out, d, Palette::new(colour))?,
    }
    out.flush()
}

/// The CSV header for [`write_diagnosis`].
pub const CSV_HEADER: &str = "target,verdict,confidence,evidence,remedy";

fn write_text(out: &mut impl Write, d: &Diagnosis, palette: Palette) -> io::Result<()> {
    let f = &d.finding;
    let colour = match f.verdict {
        Verdict::Ok => "32",
        Verdict::Intermittent | Verdict::Overloaded => "33",
        _ => "31",
    };
    let confidence = match f.confidence {
        Confidence::High => "high",
        Confidence::Medium => "medium",
        Confidence::Low => "low",
    };
    writeln!(
        out,
        "{}  {}  (confidence: {confidence}, {:.1} s)",
        escape(&d.target),
        palette.paint(colour, f.verdict.name(), 0),
        d.duration_ms as f64 / 1000.0
    )?;
    if let Some(server) = &d.server {
        writeln!(out, "  server:   {}", escape(server))?;
    }
    // Evidence and notes quote what servers said: escaped like everything from the network.
    writeln!(out, "  evidence:")?;
    for e in &f.evidence {
        writeln!(out, "    - {}", escape(e))?;
    }
    writeln!(out, "  remedy:")?;
    for r in &f.remedy {
        writeln!(out, "    - {}", escape(r))?;
    }
    for n in &f.notes {
        writeln!(out, "  note:     {}", escape(n))?;
    }
    writeln!(out, "  experiments:")?;
    for e in &d.experiments {
        let kind =
            serde_json::to_value(e.kind).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        let source = e.probes.first().map(|p| p.source.as_str()).unwrap_or("-");
        writeln!(out, "    {kind:<12} held {:>3}  from {source:<12} {}", e.held, e.tally())?;
    }
    let spent: Vec<String> = d.budget.spent.iter().map(|(s, n)| format!("{n} from {s}")).collect();
    writeln!(out, "  budget:   {} (at most {} per source address)", spent.join(", "), d.budget.per_source)?;
    writeln!(out)
}
