//! The evidence report of an audit: what was audited (runbook and its SHA-256, target URL,
//! version and host, operator, run id), each section with its steps, the attestations, the
//! trail record range and chain head, then the full check report (observations, evidence,
//! charts) as `preflight check` renders it.

use std::io;

use crate::outcome::Status;
use crate::report::{CheckResult, Format, RenderOpts, html::esc, markdown::cell, markdown::icon};

use super::Audit;

/// The facts of the header, as (label, value) pairs, in the order every format shows them.
fn facts(a: &Audit) -> Vec<(&'static str, String)> {
    let t = &a.target;
    let mut v = vec![
        ("Run", a.run_id.clone()),
        (
            "Runbook",
            format!("{} (SHA-256 {})", a.runbook.path, a.runbook.sha256),
        ),
        ("Operator", a.operator.clone()),
        ("Target", t.url.clone()),
        (
            "Version",
            t.version
                .clone()
                .unwrap_or_else(|| "(not reported by /status)".into()),
        ),
        (
            "Host",
            match &t.address {
                Some(addr) => format!("{} ({addr})", t.host),
                None => t.host.clone(),
            },
        ),
        ("Audited from", t.auditor_host.clone()),
        (
            "Trail",
            format!(
                "{} records {}–{}, head {}",
                a.trail.file, a.trail.first_seq, a.trail.last_seq, a.trail.head
            ),
        ),
    ];
    v.push((
        "Signed",
        a.trail
            .signed_by
            .clone()
            .unwrap_or_else(|| "no (`--sign KEY` signs the run's chain head)".into()),
    ));
    v
}

fn result<'a>(a: &'a Audit, id: &str) -> Option<&'a CheckResult> {
    a.report.results.iter().find(|r| r.id == id)
}

/// The attestations of the run: (result, the operator's answer as recorded).
fn attestations(a: &Audit) -> Vec<&CheckResult> {
    a.report
        .results
        .iter()
        .filter(|r| r.kind == "confirm" && r.status != Status::Skip)
        .collect()
}

/// Writes the audit in `format` (human, json, markdown or html; the others are for checks).
pub fn write(
    format: Format,
    a: &Audit,
    out: &mut dyn io::Write,
    opts: &RenderOpts,
) -> io::Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, a)?;
            writeln!(out)
        }
        Format::Markdown => markdown(a, out, opts),
        Format::Html => html(a, out, opts),
        _ => human(a, out),
    }
}

/// The closing lines of an audit at a terminal (the sections were shown as they ran).
fn human(a: &Audit, out: &mut dyn io::Write) -> io::Result<()> {
    writeln!(out)?;
    for (k, v) in facts(a) {
        writeln!(out, "{k:>13}: {v}")?;
    }
    writeln!(
        out,
        "\n{}: {}",
        a.report.verdict.as_str(),
        a.report.verdict_reason
    )
}

fn markdown(a: &Audit, out: &mut dyn io::Write, opts: &RenderOpts) -> io::Result<()> {
    writeln!(out, "## Audit of `{}`\n", a.runbook.path.replace('`', "'"))?;
    writeln!(out, "| | |\n|---|---|")?;
    for (k, v) in facts(a) {
        writeln!(out, "| {k} | {} |", cell(&v))?;
    }
    writeln!(out)?;
    for s in &a.sections {
        writeln!(
            out,
            "### {}\n",
            cell(if s.title.is_empty() {
                "(no section)"
            } else {
                &s.title
            })
        )?;
        writeln!(
            out,
            "| | Step | Kind | Result | Summary |\n|---|---|---|---|---|"
        )?;
        for r in s.steps.iter().filter_map(|id| result(a, id)) {
            writeln!(
                out,
                "| {} | `{}` | {} | {} | {} |",
                icon(r.status),
                r.id,
                r.kind,
                r.status.as_str(),
                cell(&r.summary)
            )?;
        }
        writeln!(out)?;
    }
    let attested = attestations(a);
    if !attested.is_empty() {
        writeln!(out, "### Attestations\n")?;
        for r in attested {
            writeln!(
                out,
                "- `{}`: {} — {}",
                r.id,
                r.status.as_str(),
                cell(&r.summary)
            )?;
        }
        writeln!(out)?;
    }
    crate::report::write(Format::Markdown, &a.report, out, opts)
}

fn html(a: &Audit, out: &mut dyn io::Write, opts: &RenderOpts) -> io::Result<()> {
    let mut page = Vec::new();
    crate::report::write(Format::Html, &a.report, &mut page, opts)?;
    let page = String::from_utf8_lossy(&page);
    let mut head = format!("<h1>Audit of {}</h1><table>", esc(&a.runbook.path));
    for (k, v) in facts(a) {
        head.push_str(&format!(
            "<tr><th>{k}</th><td><code>{}</code></td></tr>",
            esc(&v)
        ));
    }
    head.push_str("</table>");
    for s in &a.sections {
        head.push_str(&format!(
            "<section><h2>{}</h2><table><tr><th>Step</th><th>Kind</th><th>Result</th><th>Summary</th></tr>",
            esc(if s.title.is_empty() { "(no section)" } else { &s.title })
        ));
        for r in s.steps.iter().filter_map(|id| result(a, id)) {
            let st = r.status.as_str();
            head.push_str(&format!(
                "<tr><td><code>{}</code></td><td>{}</td><td><span class=\"badge {}\">{st}</span></td><td>{}</td></tr>",
                esc(&r.id),
                esc(&r.kind),
                st.to_lowercase(),
                esc(&r.summary)
            ));
        }
        head.push_str("</table></section>");
    }
    head.push_str("<section><h2>The check report</h2></section>");
    // The audit's own header goes first in the check report's page (same style, charts).
    let page = match page.split_once("<body>") {
        Some((before, after)) => format!("{before}<body>{head}{after}"),
        None => format!("{head}{page}"),
    };
    out.write_all(page.as_bytes())
}
