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

/// A table: a dim header, the first column coloured by the status `status_of` gives its row,
/// the last column unpadded.
fn table(
    out: &mut dyn io::Write,
    p: &Paint,
    header: &[&str],
    rows: &[Vec<String>],
    status_of: impl Fn(&[String]) -> Option<Status>,
) -> io::Result<()> {
    let last = header.len() - 1;
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in width.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let pad = |s: &str, w: usize| format!("{s}{}", " ".repeat(w.saturating_sub(s.chars().count())));
    let head: Vec<String> = header
        .iter()
        .enumerate()
        .map(|(i, h)| {
            if i == last {
                h.to_string()
            } else {
                pad(h, width[i])
            }
        })
        .collect();
    writeln!(out, "  {}", p.dim(head.join("  ").trim_end()))?;
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    c.clone()
                } else if i == 0 {
                    match status_of(row) {
                        Some(st) => p.status(st, &pad(c, width[0])),
                        None => pad(c, width[0]),
                    }
                } else {
                    pad(c, width[i])
                }
            })
            .collect();
        writeln!(out, "  {}", cells.join("  "))?;
    }
    Ok(())
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

    if let Some(f) = &report.fleet {
        writeln!(out, "{}: {}", p.bold("fleet"), f.line())?;
        let rows: Vec<Vec<String>> = report
            .instances_odd_first()
            .iter()
            .map(|i| {
                vec![
                    i.verdict.as_str().to_string(),
                    i.name.clone(),
                    i.counts.line(i.counts.total()),
                    i.verdict_reason.clone(),
                ]
            })
            .collect();
        table(
            out,
            &p,
            &["VERDICT", "INSTANCE", "CHECKS", "WHY"],
            &rows,
            |row| {
                Some(match row[0].as_str() {
                    "GO" => Status::Pass,
                    "NO-GO" => Status::Fail,
                    _ => Status::Inconclusive,
                })
            },
        )?;
        writeln!(out)?;
    }

    let fleet = report.fleet.is_some();
    let ordered = report.results_by_instance();
    let rows: Vec<Vec<String>> = ordered
        .iter()
        .map(|r| {
            let mut sev = r.severity.as_str().to_string();
            if r.waived.is_some() {
                sev.push_str(" (waived)");
            } else if r.blocking {
                sev.push_str(" (blocking)");
            }
            let mut row = vec![r.status.as_str().to_string()];
            if fleet {
                row.push(r.instance.clone().unwrap_or_default());
            }
            row.extend([
                r.id.clone(),
                r.kind.clone(),
                sev,
                fmt_ms(r.duration_ms),
                r.summary.clone(),
            ]);
            row
        })
        .collect();
    let header: &[&str] = if fleet {
        &[
            "STATUS", "INSTANCE", "CHECK", "KIND", "SEVERITY", "TIME", "SUMMARY",
        ]
    } else {
        &["STATUS", "CHECK", "KIND", "SEVERITY", "TIME", "SUMMARY"]
    };
    table(out, &p, header, &rows, |row| {
        ordered
            .iter()
            .find(|r| r.status.as_str() == row[0])
            .map(|r| r.status)
    })?;

    let not_passed: Vec<_> = ordered
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
                p.bold(&match &r.instance {
                    Some(i) => format!("{i} › {}", r.id),
                    None => r.id.clone(),
                }),
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
