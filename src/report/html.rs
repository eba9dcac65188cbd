//! HTML report: one self-contained file (no scripts, no external assets) with the verdict,
//! every result with its observations, and each result's charts drawn as inline SVG — RSS
//! over iterations with the fitted slope, rate-limit acceptance over time, latency
//! histograms, the breaker's state timeline. Presents; never computes verdicts.

use std::fmt::Write as _;
use std::io;

use crate::outcome::{Chart, ChartKind};
use crate::report::{CheckResult, RenderOpts, Report, Verdict};

const COLORS: [&str; 6] = [
    "#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2",
];

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// A result's anchor and link text: its id, after its instance in a fleet (`host:port/id`;
/// an HTML id holds no spaces).
fn anchor(r: &CheckResult) -> String {
    esc(&match &r.instance {
        Some(i) => format!("{i}/{}", r.id),
        None => r.id.clone(),
    })
}

fn status_class(s: &str) -> &'static str {
    match s {
        "PASS" | "GO" => "pass",
        "FAIL" | "NO-GO" => "fail",
        "ERROR" => "error",
        _ => "skip",
    }
}

/// A tick label precise enough that ticks `step` apart read differently (a narrow RSS range
/// printed `16.7, 16.7, 16.6` otherwise).
fn tick_at(v: f64, step: f64) -> String {
    let step = step.abs();
    if step >= 1.0 || !step.is_finite() || step == 0.0 {
        return tick(v);
    }
    let decimals = ((-step.log10()).ceil() as usize).min(4);
    format!("{v:.decimals$}")
}

/// A short tick label.
fn tick(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Named levels from a y label of the form `0 closed · 1 half-open · 2 open`; empty when the
/// label is a plain axis title.
fn named_levels(label: &str) -> Vec<(f64, String)> {
    let parts: Vec<&str> = label.split(" · ").collect();
    if parts.len() < 2 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for p in parts {
        let Some((n, name)) = p.trim().split_once(' ') else {
            return Vec::new();
        };
        let Ok(v) = n.parse::<f64>() else {
            return Vec::new();
        };
        out.push((v, name.trim().to_string()));
    }
    out
}

/// One chart as an SVG element.
pub fn svg(chart: &Chart) -> String {
    let (w, h) = (640.0, 300.0);
    // The top margin holds the title and, under it, the legend (never over the data).
    let (ml, mr, mt, mb) = (64.0, 16.0, 48.0, 44.0);
    let pts: Vec<(f64, f64)> = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{t}"><title>{t}</title><rect width="100%" height="100%" fill="#fff"/><text x="{ml}" y="18" font-size="13" font-weight="bold">{t}</text>"##,
        t = esc(&chart.title)
    );
    if pts.is_empty() {
        let _ = write!(
            s,
            r##"<text x="{}" y="{}" font-size="12" fill="#666">no data</text></svg>"##,
            w / 2.0 - 20.0,
            h / 2.0
        );
        return s;
    }
    let bars = chart.kind == ChartKind::Bars;
    let (mut x0, mut x1) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (mut y0, mut y1) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    if bars || y0 > 0.0 && chart.kind == ChartKind::Steps {
        y0 = y0.min(0.0);
    }
    // Named levels (the breaker's states) are all on the axis, whichever were visited.
    let named = named_levels(&chart.y_label);
    for (level, _) in &named {
        y0 = y0.min(*level);
        y1 = y1.max(*level);
    }
    let non_negative = y0 >= 0.0;
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        y1 = y0 + 1.0;
    }
    let pad = (y1 - y0) * 0.05;
    if !bars {
        y1 += pad;
        if y0 != 0.0 {
            y0 -= pad;
        }
        // Latencies, counts and bytes are never negative: no axis below zero for them.
        if non_negative {
            y0 = y0.max(0.0);
        }
    }
    let n_bars = chart.series.first().map_or(0, |s| s.points.len()).max(1) as f64;
    if bars {
        x1 += (x1 - x0) / n_bars;
        x0 = x0.min(x0);
    }
    let pw = w - ml - mr;
    let ph = h - mt - mb;
    let sx = |x: f64| ml + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f64| mt + ph - (y - y0) / (y1 - y0) * ph;
    // Axes and grid. A y label such as `0 closed · 1 half-open · 2 open` names the levels:
    // the y ticks are then those levels, labelled by name.
    let y_ticks: Vec<(f64, String)> = if named.is_empty() {
        (0..=4)
            .map(|i| {
                let fy = y0 + (y1 - y0) * i as f64 / 4.0;
                (fy, tick_at(fy, (y1 - y0) / 4.0))
            })
            .collect()
    } else {
        named.clone()
    };
    for (fy, label) in &y_ticks {
        let py = sy(*fy);
        let _ = write!(
            s,
            r##"<line x1="{ml}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#e5e7eb"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end" fill="#444">{}</text>"##,
            ml + pw,
            ml - 4.0,
            py + 3.0,
            esc(label)
        );
    }
    for i in 0..=4 {
        let fx = x0 + (x1 - x0) * i as f64 / 4.0;
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle" fill="#444">{}</text>"##,
            sx(fx),
            mt + ph + 14.0,
            tick_at(fx, (x1 - x0) / 4.0)
        );
    }
    let _ = write!(
        s,
        r##"<line x1="{ml}" y1="{b:.1}" x2="{:.1}" y2="{b:.1}" stroke="#333"/><line x1="{ml}" y1="{mt}" x2="{ml}" y2="{b:.1}" stroke="#333"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text><text x="12" y="{:.1}" font-size="11" text-anchor="middle" transform="rotate(-90 12 {:.1})">{}</text>"##,
        ml + pw,
        ml + pw / 2.0,
        h - 6.0,
        esc(&chart.x_label),
        mt + ph / 2.0,
        mt + ph / 2.0,
        esc(if named.is_empty() {
            &chart.y_label
        } else {
            "state"
        }),
        b = mt + ph
    );
    let mut legend_x = ml;
    // Series.
    for (i, series) in chart.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let p: Vec<(f64, f64)> = series
            .points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        match chart.kind {
            ChartKind::Bars => {
                let bw = pw / n_bars * 0.8 / chart.series.len() as f64;
                for (x, y) in &p {
                    let _ = write!(
                        s,
                        r#"<rect x="{:.1}" y="{:.1}" width="{bw:.1}" height="{:.1}" fill="{color}"><title>{}: {}</title></rect>"#,
                        sx(*x) + bw * i as f64,
                        sy(*y),
                        (sy(y0) - sy(*y)).max(0.0),
                        tick(*x),
                        tick(*y)
                    );
                }
            }
            // A two-point series among scatter points is a fitted line.
            ChartKind::Scatter if !(p.len() == 2 && i > 0) => {
                for (x, y) in &p {
                    let _ = write!(
                        s,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{color}"/>"#,
                        sx(*x),
                        sy(*y)
                    );
                }
            }
            kind => {
                let mut d = String::new();
                for (j, (x, y)) in p.iter().enumerate() {
                    if j == 0 {
                        let _ = write!(d, "M{:.1},{:.1}", sx(*x), sy(*y));
                    } else {
                        if kind == ChartKind::Steps {
                            let _ = write!(d, " H{:.1}", sx(*x));
                        }
                        let _ = write!(d, " L{:.1},{:.1}", sx(*x), sy(*y));
                    }
                }
                let (dash, width) = if kind == ChartKind::Scatter {
                    (r#" stroke-dasharray="6 3""#, 2.5)
                } else {
                    ("", 2.0)
                };
                let _ = write!(
                    s,
                    r#"<path d="{d}" fill="none" stroke="{color}" stroke-width="{width}"{dash}/>"#
                );
            }
        }
        // Legend entry: a dot for sampled points, a (dashed) line for lines and fits.
        let ly = 34.0;
        let key = match chart.kind {
            ChartKind::Scatter if p.len() == 2 && i > 0 => format!(
                r#"<line x1="{:.1}" y1="{ly}" x2="{:.1}" y2="{ly}" stroke="{color}" stroke-width="2.5" stroke-dasharray="6 3"/>"#,
                legend_x,
                legend_x + 18.0
            ),
            ChartKind::Scatter => format!(
                r#"<circle cx="{:.1}" cy="{ly}" r="3" fill="{color}"/>"#,
                legend_x + 9.0
            ),
            ChartKind::Bars => format!(
                r#"<rect x="{:.1}" y="{:.1}" width="12" height="10" fill="{color}"/>"#,
                legend_x + 3.0,
                ly - 5.0
            ),
            _ => format!(
                r#"<line x1="{:.1}" y1="{ly}" x2="{:.1}" y2="{ly}" stroke="{color}" stroke-width="2"/>"#,
                legend_x,
                legend_x + 18.0
            ),
        };
        let _ = write!(
            s,
            r#"<g class="legend">{key}<text x="{:.1}" y="{:.1}" font-size="11">{}</text></g>"#,
            legend_x + 22.0,
            ly + 4.0,
            esc(&series.name)
        );
        legend_x += 22.0 + 6.5 * series.name.chars().count() as f64 + 16.0;
    }
    s.push_str("</svg>");
    s
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#111;max-width:1100px}\
h1{margin-bottom:.2rem}\
.banner{font-size:1.1rem;padding:.8rem 1rem;border-radius:8px;margin:1rem 0;border:2px solid}\
.banner .verdict{font-size:2.2rem;font-weight:800;display:block;letter-spacing:.02em}\
.banner.pass{border-color:#16a34a}.banner.fail{border-color:#dc2626}.banner.error,.banner.skip{border-color:#ea580c}\
.pass{background:#dcfce7;color:#166534}.fail{background:#fee2e2;color:#991b1b}.error{background:#ffedd5;color:#9a3412}\
.skip{background:#f3f4f6;color:#374151}table{border-collapse:collapse;margin:.6rem 0}td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;font-size:.9rem;vertical-align:top}\
tr.bad td{background:#fef2f2}tr.bad td:first-child{border-left:4px solid #dc2626}\
.badge{padding:0 .4rem;border-radius:4px;font-weight:bold;font-size:.85rem}section{border-top:1px solid #ddd;margin-top:1.2rem;padding-top:.6rem}\
section.bad{border-left:4px solid #dc2626;padding-left:.8rem}\
.attention{border:1px solid #fca5a5;background:#fff7f7;border-radius:6px;padding:.4rem 1rem}.attention li{margin:.2rem 0}\
details pre{background:#f8fafc;padding:.5rem;overflow:auto;font-size:.8rem;max-height:24rem}svg{margin:.4rem .4rem 0 0;border:1px solid #eee}";

/// A result a reader must look at: it did not pass and is not waived.
fn needs_attention(r: &crate::report::CheckResult) -> bool {
    r.waived.is_none() && matches!(r.status.as_str(), "FAIL" | "ERROR")
}

/// Writes the report as one self-contained HTML page.
pub fn write(report: &Report, out: &mut dyn io::Write, _opts: &RenderOpts) -> io::Result<()> {
    let mut h = String::new();
    let verdict = report.verdict.as_str();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>preflight: {} — {}</title><style>{STYLE}</style></head><body>",
        esc(&report.policy.name),
        verdict
    );
    let _ = write!(
        h,
        "<h1>{}</h1><p>{}</p><div class=\"banner {cls}\" id=\"verdict\"><span class=\"verdict\">{}</span>{}</div>",
        esc(&report.policy.name),
        esc(report.policy.description.as_deref().unwrap_or("")),
        verdict,
        esc(&report.verdict_reason),
        cls = status_class(verdict),
    );
    let c = &report.counts;
    let _ = write!(
        h,
        "<p>Target <code>{}</code>{} · started {} · {} ms · {} · {}</p>",
        esc(&report.target.url),
        report
            .target
            .config
            .as_deref()
            .map(|c| format!(" (spawned with <code>{}</code>)", esc(c)))
            .unwrap_or_default(),
        esc(&report.started_at),
        report.duration_ms,
        esc(&report.tool),
        esc(c
            .line(report.results.len())
            .split_once(": ")
            .map_or("", |(_, l)| l)),
    );
    for w in &report.target.warnings {
        let _ = write!(
            h,
            "<p class=\"warning\"><strong>Warning:</strong> {}</p>",
            esc(w)
        );
    }
    // What did not pass, first, so a reader of a NO-GO sees why without scrolling. The
    // results below stay in policy order.
    let ordered = report.results_by_instance();
    if let Some(f) = &report.fleet {
        let _ = write!(
            h,
            "<h2>Fleet</h2><p>{}.</p><table><tr><th>verdict</th><th>instance</th><th>checks</th><th>why</th></tr>",
            esc(&f.line())
        );
        for i in report.instances_odd_first() {
            let v = i.verdict.as_str();
            let class = match i.verdict {
                Verdict::Go => "PASS",
                Verdict::NoGo => "FAIL",
                Verdict::Inconclusive => "SKIP",
            };
            let _ = write!(
                h,
                "<tr><td><span class=\"badge {}\">{v}</span></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                status_class(class),
                esc(&i.name),
                esc(&i.counts.line(i.counts.total())),
                esc(&i.verdict_reason)
            );
        }
        h.push_str("</table>");
    }
    let attention: Vec<_> = ordered
        .iter()
        .copied()
        .filter(|r| needs_attention(r))
        .collect();
    if !attention.is_empty() {
        let _ = write!(
            h,
            "<div class=\"attention\"><h2>Did not pass ({})</h2><ul>",
            attention.len()
        );
        for r in attention {
            let st = r.status.as_str();
            let _ = write!(
                h,
                "<li><span class=\"badge {}\">{st}</span> <a href=\"#{id}\">{id}</a> <small>({:?}{})</small> — {}</li>",
                status_class(st),
                r.severity,
                if r.blocking { ", blocking" } else { "" },
                esc(&r.summary),
                id = anchor(r)
            );
        }
        h.push_str("</ul></div>");
    }
    if !report.waivers.is_empty() {
        h.push_str("<h2>Waivers</h2><table><tr><th>check</th><th>reason</th><th>expires</th><th>state</th></tr>");
        for w in &report.waivers {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&w.check),
                esc(&w.reason),
                esc(&w.expires),
                esc(&w.state)
            );
        }
        h.push_str("</table>");
    }
    h.push_str("<h2>Results</h2><table><tr><th>status</th><th>check</th><th>kind</th><th>severity</th><th>time</th><th>summary</th></tr>");
    for r in &ordered {
        let st = r.status.as_str();
        let _ = write!(
            h,
            "<tr{}><td><span class=\"badge {}\">{st}</span></td><td><a href=\"#{id}\">{id}</a></td><td>{}</td><td>{:?}{}</td><td>{} ms</td><td>{}</td></tr>",
            if needs_attention(r) {
                " class=\"bad\""
            } else {
                ""
            },
            status_class(st),
            esc(&r.kind),
            r.severity,
            if r.blocking { " (blocking)" } else { "" },
            r.duration_ms,
            esc(&r.summary),
            id = anchor(r)
        );
    }
    h.push_str("</table>");
    for r in &ordered {
        let st = r.status.as_str();
        let _ = write!(
            h,
            "<section id=\"{id}\"{}><h3><span class=\"badge {}\">{st}</span> {id} <small>({}, {} requests, {} attempt(s))</small></h3><p>{}</p>",
            if needs_attention(r) {
                " class=\"bad\""
            } else {
                ""
            },
            status_class(st),
            esc(&r.kind),
            r.requests,
            r.attempts,
            esc(r.description.as_deref().unwrap_or(&r.summary)),
            id = anchor(r)
        );
        if r.description.is_some() {
            let _ = write!(h, "<p><strong>Found:</strong> {}</p>", esc(&r.summary));
        }
        if let Some(w) = &r.waived {
            let _ = write!(h, "<p><em>Waived: {}</em></p>", esc(w));
        }
        if !r.observations.is_empty() {
            h.push_str("<table><tr><th></th><th>what</th><th>expected</th><th>observed</th></tr>");
            for o in &r.observations {
                let _ = write!(
                    h,
                    "<tr><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    if o.ok { "pass" } else { "fail" },
                    if o.ok { "✓" } else { "✗" },
                    esc(&o.what),
                    esc(&o.expected),
                    esc(&o.observed)
                );
            }
            h.push_str("</table>");
        }
        for chart in &r.charts {
            h.push_str(&svg(chart));
        }
        if !r.sent.is_empty() || !r.evidence.is_null() {
            let _ = write!(
                h,
                "<details><summary>What was sent, and the evidence</summary><pre>{}</pre><pre>{}</pre></details>",
                esc(&r.sent.join("\n")),
                esc(&serde_json::to_string_pretty(&r.evidence).unwrap_or_default())
            );
        }
        h.push_str("</section>");
    }
    h.push_str("</body></html>\n");
    out.write_all(h.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Series;
    use crate::report::CheckResult;

    fn chart(kind: ChartKind) -> Chart {
        Chart {
            title: "RSS <over> iterations".into(),
            kind,
            x_label: "iteration".into(),
            y_label: "MiB".into(),
            series: vec![
                Series {
                    name: "RSS".into(),
                    points: (0..20).map(|i| (i as f64, 10.0 + i as f64)).collect(),
                },
                Series {
                    name: "fit".into(),
                    points: vec![(0.0, 10.0), (19.0, 29.0)],
                },
            ],
        }
    }

    #[test]
    fn charts_are_escaped_svg_of_each_kind() {
        for kind in [
            ChartKind::Line,
            ChartKind::Scatter,
            ChartKind::Bars,
            ChartKind::Steps,
        ] {
            let s = svg(&chart(kind));
            assert!(s.starts_with("<svg") && s.ends_with("</svg>"), "{kind:?}");
            assert!(s.contains("RSS &lt;over&gt; iterations"));
            assert!(!s.contains("<over>"));
        }
        let scatter = svg(&chart(ChartKind::Scatter));
        // 20 samples and the legend's dot.
        assert_eq!(scatter.matches("<circle").count(), 21);
        assert!(
            scatter.contains("stroke-dasharray"),
            "the fit is drawn as a line"
        );
        let empty = Chart {
            series: vec![],
            ..chart(ChartKind::Line)
        };
        assert!(svg(&empty).contains("no data"));
    }

    fn result(id: &str, status: crate::outcome::Status, charts: Vec<Chart>) -> CheckResult {
        CheckResult {
            id: id.into(),
            kind: "memory_growth".into(),
            severity: crate::policy::Severity::Critical,
            description: Some(format!("{id} <described>")),
            status,
            blocking: true,
            out_of_scope: false,
            location: None,
            instance: None,
            waived: None,
            attempts: 1,
            duration_ms: 12,
            summary: format!("{id} summary"),
            observations: vec![crate::outcome::Observation::new(
                "RSS growth",
                "≤ 1KiB",
                "17766 B",
                status == crate::outcome::Status::Pass,
            )],
            sent: vec!["POST /v1/graph/build".into()],
            requests: 3,
            evidence: serde_json::json!({"samples": [[0, 1]]}),
            charts,
        }
    }

    fn report() -> Report {
        use crate::outcome::Status;
        use crate::report::{Counts, PolicyInfo, TargetInfo, Verdict};
        Report {
            schema_version: crate::report::SCHEMA_VERSION,
            tool: "preflight 0.1.0".into(),
            policy: PolicyInfo {
                name: "production-hardening".into(),
                description: Some("Pre-deploy gate.".into()),
                files: vec![],
            },
            target: TargetInfo {
                url: "http://127.0.0.1:PORT".into(),
                spawned: true,
                config: Some("config/before-hardening.yaml".into()),
                capabilities: vec![],
                ..Default::default()
            },
            started_at: "2026-01-01T00:00:00Z".into(),
            duration_ms: 4567,
            verdict: Verdict::NoGo,
            verdict_reason: "1 check at a blocking severity did not pass: leaky (FAIL).".into(),
            block_on: vec![],
            counts: Counts {
                pass: 1,
                fail: 1,
                error: 0,
                skip: 0,
                inconclusive: 0,
                waived: 0,
            },
            waivers: vec![],
            results: vec![
                result(
                    "fine",
                    Status::Pass,
                    vec![chart(ChartKind::Steps), chart(ChartKind::Bars)],
                ),
                result("leaky", Status::Fail, vec![chart(ChartKind::Scatter)]),
            ],
            canary: None,
            fleet: None,
        }
    }

    /// The page is one self-contained document: no scripts, no external resources, one
    /// `<svg>` per chart, the verdict in the banner before any result, failures listed first
    /// and marked.
    #[test]
    fn page_is_self_contained_with_verdict_first_and_failures_marked() {
        let mut buf = Vec::new();
        write(&report(), &mut buf, &RenderOpts { color: false }).unwrap();
        let page = String::from_utf8(buf).unwrap();
        assert!(page.starts_with("<!DOCTYPE html>") && page.trim_end().ends_with("</html>"));
        for banned in [
            "<script",
            "<link",
            "<img",
            "<iframe",
            "@import",
            "url(",
            "src=",
            "href=\"http",
            "href=\"//",
        ] {
            assert!(!page.contains(banned), "external resource `{banned}`");
        }
        // Only in-page anchors.
        assert!(
            page.match_indices("href=\"")
                .all(|(i, _)| page[i + 6..].starts_with('#')),
            "every link is an in-page anchor"
        );
        assert_eq!(page.matches("<svg").count(), 3, "one <svg> per chart");
        assert_eq!(page.matches("</svg>").count(), 3);
        let banner = page.find("class=\"banner fail\"").expect("verdict banner");
        assert!(page[banner..].contains("NO-GO"));
        let first_result = page.find("<h2>Results</h2>").unwrap();
        assert!(banner < first_result, "verdict before the results");
        let attention = page.find("Did not pass (1)").expect("failures listed");
        assert!(attention < first_result);
        assert!(page[attention..first_result].contains("href=\"#leaky\""));
        assert!(!page[attention..first_result].contains("href=\"#fine\""));
        assert!(page.contains("<section id=\"leaky\" class=\"bad\">"));
        assert!(page.contains("<section id=\"fine\">"));
        // Escaped, and the summary shown beside the description.
        assert!(page.contains("leaky &lt;described&gt;") && page.contains("leaky summary"));
        // The fitted line and axis labels are drawn.
        assert!(page.contains("stroke-dasharray") && page.contains(">iteration</text>"));
    }

    #[test]
    fn ticks_are_distinct_on_a_narrow_range() {
        let labels: Vec<String> = (0..=4)
            .map(|i| tick_at(16.5 + 0.05 * f64::from(i), 0.05))
            .collect();
        assert_eq!(labels, ["16.50", "16.55", "16.60", "16.65", "16.70"]);
        assert_eq!(tick_at(1500.0, 500.0), "1500");
        // A latency axis never goes below zero.
        let c = Chart {
            title: "latency".into(),
            kind: ChartKind::Scatter,
            x_label: "answer".into(),
            y_label: "ms".into(),
            series: vec![Series {
                name: "accepted".into(),
                points: vec![(0.0, 1.0), (1.0, 300.0)],
            }],
        };
        assert!(!svg(&c).contains(">-"), "negative tick");
    }

    #[test]
    fn named_levels_label_the_breaker_axis() {
        assert_eq!(
            named_levels("0 closed · 1 half-open · 2 open"),
            vec![
                (0.0, "closed".to_string()),
                (1.0, "half-open".to_string()),
                (2.0, "open".to_string())
            ]
        );
        assert!(named_levels("RSS (MiB)").is_empty());
        let mut c = chart(ChartKind::Steps);
        c.y_label = "0 closed · 1 half-open · 2 open".into();
        let s = svg(&c);
        assert!(s.contains(">half-open</text>") && s.contains(">state</text>"));
    }
}
