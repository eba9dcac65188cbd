//! Human report: a header, a summary table, every check that did not pass with its
//! observations expanded, the waivers, and the verdict last (where the eye lands). Colour
//! only when asked (the CLI asks when stdout is a terminal).

use std::io;

use crate::outcome::Status;
use crate::report::{RenderOpts, Report, Verdict, fmt_ms};
use crate::style::{self, AnsiColor, Style, fg};

/// Colour on or off for this report (see [`crate::style::paint`]).
struct Paint(bool);

impl Paint {
    fn paint(&self, style: Style, s: &str) -> String {
        style::paint(self.0, style, s).to_string()
    }
    fn status(&self, st: Status, padded: &str) -> String {
        let style = match st {
            Status::Pass => fg(AnsiColor::Green),
            Status::Fail => fg(AnsiColor::Red).bold(),
            Status::Error => fg(AnsiColor::Magenta).bold(),
            Status::Skip | Status::Inconclusive => fg(AnsiColor::Yellow),
        };
        self.paint(style, padded)
    }
    fn bold(&self, s: &str) -> String {
        self.paint(style::BOLD, s)
    }
    fn dim(&self, s: &str) -> String {
        self.paint(style::DIM, s)
    }
}

pub fn write(report: &Report, out: &mut dyn io::Write, opts: &RenderOpts) -> io::Result<()> {
    let p = Paint(opts.color);
    writeln!(
        out,
        "{} {} — policy {} ({})",
        p.bold("preflight"),
        report.tool.trim_start_matches("preflight "),
        p.bold(&report.policy.name),
        report.policy.files.join(", ")
    )?;
    let how = if report.target.spawned {
        match &report.target.config {
            Some(c) => format!("spawned with {c}"),
            None => "spawned".into(),
        }
    } else {
        "remote".into()
    };
    writeln!(
        out,
        "target {} ({how}); capabilities: {}",
        report.target.url,
        if report.target.capabilities.is_empty() {
            "none".into()
        } else {
            report.target.capabilities.join(", ")
        }
    )?;
    for w in &report.target.warnings {
        writeln!(out, "{} {w}", p.bold("warning:"))?;
    }
    writeln!(out)?;

    let rows: Vec<[String; 6]> = report
        .results
        .iter()
        .map(|r| {
            let mut sev = r.severity.as_str().to_string();
            if r.waived.is_some() {
                sev.push_str(" (waived)");
            } else if r.blocking {
                sev.push_str(" (blocking)");
            }
            [
                r.status.as_str().to_string(),
                r.id.clone(),
                r.kind.clone(),
                sev,
                fmt_ms(r.duration_ms),
                r.summary.clone(),
            ]
        })
        .collect();
    let header = ["STATUS", "CHECK", "KIND", "SEVERITY", "TIME", "SUMMARY"];
    let mut width = header.map(str::len);
    for row in &rows {
        for (w, cell) in width.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let pad = |s: &str, w: usize| format!("{s}{}", " ".repeat(w.saturating_sub(s.chars().count())));
    let head: Vec<String> = header
        .iter()
        .enumerate()
        .map(|(i, h)| {
            if i == 5 {
                h.to_string()
            } else {
                pad(h, width[i])
            }
        })
        .collect();
    writeln!(out, "  {}", p.dim(head.join("  ").trim_end()))?;
    for (row, r) in rows.iter().zip(&report.results) {
        writeln!(
            out,
            "  {}  {}  {}  {}  {}  {}",
            p.status(r.status, &pad(&row[0], width[0])),
            pad(&row[1], width[1]),
            pad(&row[2], width[2]),
            pad(&row[3], width[3]),
            pad(&row[4], width[4]),
            row[5]
        )?;
    }

    let not_passed: Vec<_> = report
        .results
        .iter()
        .filter(|r| r.status != Status::Pass)
        .collect();
    if !not_passed.is_empty() {
        writeln!(out)?;
        writeln!(out, "{}", p.bold("Not passed"))?;
        for r in not_passed {
            writeln!(out)?;
            writeln!(
                out,
                "  {} {} [{}, {}]{}",
                p.status(r.status, r.status.as_str()),
                p.bold(&r.id),
                r.kind,
                r.severity.as_str(),
                if r.blocking { " — blocking" } else { "" }
            )?;
            if let Some(d) = &r.description {
                writeln!(out, "    {}", p.dim(d))?;
            }
            writeln!(out, "    {}", r.summary)?;
            if let Some(w) = &r.waived {
                writeln!(out, "    waived: {w}")?;
            }
            for s in &r.sent {
                writeln!(out, "    sent: {s}")?;
            }
            for o in &r.observations {
                let mark = if o.ok {
                    p.paint(fg(AnsiColor::Green), "✓")
                } else {
                    p.paint(fg(AnsiColor::Red), "✗")
                };
                writeln!(
                    out,
                    "    {mark} {}: expected {}, observed {}",
                    o.what, o.expected, o.observed
                )?;
            }
        }
    }

    if !report.waivers.is_empty() {
        writeln!(out)?;
        writeln!(out, "{}", p.bold("Waivers"))?;
        for w in &report.waivers {
            let state = if w.state == "active" {
                w.state.clone()
            } else {
                p.paint(
                    fg(AnsiColor::Yellow),
                    &format!("{} — no longer applies", w.state),
                )
            };
            writeln!(
                out,
                "  {}: {} (expires {}, {state})",
                w.check, w.reason, w.expires
            )?;
        }
    }

    let c = &report.counts;
    writeln!(out)?;
    writeln!(
        out,
        "{}, in {}",
        c.line(report.results.len()),
        fmt_ms(report.duration_ms)
    )?;
    let verdict_style = match report.verdict {
        Verdict::Go => fg(AnsiColor::Green).bold(),
        Verdict::NoGo => fg(AnsiColor::Red).bold(),
        Verdict::Inconclusive => fg(AnsiColor::Yellow).bold(),
    };
    writeln!(
        out,
        "{} — {}",
        p.paint(verdict_style, report.verdict.as_str()),
        report.verdict_reason
    )
}
