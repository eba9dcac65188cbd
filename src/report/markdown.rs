//! Markdown for a pull-request comment: the verdict line, a table of every check, and each
//! check that did not pass in a `<details>` block with its observations.

use std::io;

use crate::outcome::Status;
use crate::report::{RenderOpts, Report, Verdict, fmt_ms};

pub fn icon(s: Status) -> &'static str {
    match s {
        Status::Pass => "✅",
        Status::Fail => "❌",
        Status::Error => "💥",
        Status::Skip => "⏭️",
        Status::Inconclusive => "❔",
    }
}

/// Escapes a table cell: pipes, newlines, and HTML-significant characters.
pub fn cell(s: &str) -> String {
    html(s).replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub fn write(report: &Report, out: &mut dyn io::Write, _opts: &RenderOpts) -> io::Result<()> {
    let v = match report.verdict {
        Verdict::Go => "✅ **GO**",
        Verdict::NoGo => "❌ **NO-GO**",
        Verdict::Inconclusive => "⚠️ **INCONCLUSIVE**",
    };
    writeln!(
        out,
        "### {v} — preflight `{}`\n",
        report.policy.name.replace('`', "'")
    )?;
    writeln!(out, "{}\n", cell(&report.verdict_reason))?;
    let c = &report.counts;
    writeln!(
        out,
        "{} · target `{}`{} · {}\n",
        c.line(report.results.len()),
        report.target.url,
        if report.target.spawned {
            " (spawned)"
        } else {
            ""
        },
        fmt_ms(report.duration_ms)
    )?;
    for w in &report.target.warnings {
        writeln!(out, "> **Warning:** {}\n", cell(w))?;
    }
    if let Some(f) = &report.fleet {
        writeln!(out, "**Fleet:** {}.\n", f.line())?;
        writeln!(out, "| Verdict | Instance | Checks | Why |")?;
        writeln!(out, "|---|---|---|---|")?;
        for i in report.instances_odd_first() {
            writeln!(
                out,
                "| {} | `{}` | {} | {} |",
                i.verdict.as_str(),
                i.name,
                i.counts.line(i.counts.total()),
                cell(&i.verdict_reason)
            )?;
        }
        writeln!(out)?;
    }
    let ordered = report.results_by_instance();
    writeln!(out, "| | Check | Kind | Severity | Result | Summary |")?;
    writeln!(out, "|---|---|---|---|---|---|")?;
    for r in &ordered {
        let mut sev = r.severity.as_str().to_string();
        if r.waived.is_some() {
            sev.push_str(" (waived)");
        } else if r.blocking {
            sev.push_str(" **(blocking)**");
        }
        writeln!(
            out,
            "| {} | `{}` | {} | {} | {} | {} |",
            icon(r.status),
            r.label(),
            r.kind,
            sev,
            r.status.as_str(),
            cell(&r.summary)
        )?;
    }
    for r in ordered.iter().filter(|r| r.status != Status::Pass) {
        writeln!(out)?;
        writeln!(
            out,
            "<details><summary>{} <code>{}</code> — {}: {}</summary>\n",
            icon(r.status),
            html(&r.label()),
            r.status.as_str(),
            html(&r.summary)
        )?;
        if let Some(d) = &r.description {
            writeln!(out, "{}\n", cell(d))?;
        }
        if let Some(w) = &r.waived {
            writeln!(out, "Waived: {}\n", cell(w))?;
        }
        if !r.sent.is_empty() {
            writeln!(out, "Sent:\n")?;
            for s in &r.sent {
                writeln!(out, "- `{}`", s.replace('`', "'"))?;
            }
            writeln!(out)?;
        }
        if !r.observations.is_empty() {
            writeln!(out, "| | What | Expected | Observed |")?;
            writeln!(out, "|---|---|---|---|")?;
            for o in &r.observations {
                writeln!(
                    out,
                    "| {} | {} | {} | {} |",
                    if o.ok { "✅" } else { "❌" },
                    cell(&o.what),
                    cell(&o.expected),
                    cell(&o.observed)
                )?;
            }
            writeln!(out)?;
        }
        writeln!(out, "</details>")?;
    }
    if !report.waivers.is_empty() {
        writeln!(out, "\n**Waivers**\n")?;
        for w in &report.waivers {
            writeln!(
                out,
                "- `{}`: {} (expires {}, {})",
                w.check,
                cell(&w.reason),
                w.expires,
                w.state
            )?;
        }
    }
    Ok(())
}
