//! HTML report: one self-contained file (no scripts, no external assets) with the verdict,
//! every result with its observations, and each result's charts drawn as inline SVG — RSS
//! over iterations with the fitted slope, rate-limit acceptance over time, latency
//! histograms, the breaker's state timeline. Presents; never computes verdicts.

use std::fmt::Write as _;
use std::io;

use crate::report::{Chart, ChartKind, RenderOpts, Report};

const COLORS: [&str; 6] = [
    "#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2",
];

/// Escapes text for HTML element content and attribute values.
fn esc(s: &str) -> String {
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

fn status_class(s: &str) -> &'static str {
    match s {
        "PASS" | "GO" => "pass",
        "FAIL" | "NO-GO" => "fail",
        "ERROR" => "error",
        _ => "skip",
    }
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

/// One chart as an SVG element.
pub fn svg(chart: &Chart) -> String {
    let (w, h) = (640.0, 280.0);
    let (ml, mr, mt, mb) = (60.0, 16.0, 28.0, 44.0);
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
    // Axes and grid.
    for i in 0..=4 {
        let fy = y0 + (y1 - y0) * i as f64 / 4.0;
        let py = sy(fy);
        let _ = write!(
            s,
            r##"<line x1="{ml}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#e5e7eb"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end" fill="#444">{}</text>"##,
            ml + pw,
            ml - 4.0,
            py + 3.0,
            tick(fy)
        );
        let fx = x0 + (x1 - x0) * i as f64 / 4.0;
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle" fill="#444">{}</text>"##,
            sx(fx),
            mt + ph + 14.0,
            tick(fx)
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
        esc(&chart.y_label),
        b = mt + ph
    );
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
                let dash = if kind == ChartKind::Scatter {
                    r#" stroke-dasharray="6 3""#
                } else {
                    ""
                };
                let _ = write!(
                    s,
                    r#"<path d="{d}" fill="none" stroke="{color}" stroke-width="2"{dash}/>"#
                );
            }
        }
        let _ = write!(
            s,
            r#"<rect x="{:.1}" y="{:.1}" width="10" height="10" fill="{color}"/><text x="{:.1}" y="{:.1}" font-size="11">{}</text>"#,
            ml + pw - 220.0,
            mt + 6.0 + 14.0 * i as f64,
            ml + pw - 206.0,
            mt + 15.0 + 14.0 * i as f64,
            esc(&series.name)
        );
    }
    s.push_str("</svg>");
    s
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#111;max-width:1100px}\
h1{margin-bottom:.2rem}.verdict{font-size:1.6rem;font-weight:bold;padding:.3rem .8rem;border-radius:6px;display:inline-block}\
.pass{background:#dcfce7;color:#166534}.fail{background:#fee2e2;color:#991b1b}.error{background:#ffedd5;color:#9a3412}\
.skip{background:#f3f4f6;color:#374151}table{border-collapse:collapse;margin:.6rem 0}td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;font-size:.9rem;vertical-align:top}\
.badge{padding:0 .4rem;border-radius:4px;font-weight:bold;font-size:.85rem}section{border-top:1px solid #ddd;margin-top:1.2rem;padding-top:.6rem}\
details pre{background:#f8fafc;padding:.5rem;overflow:auto;font-size:.8rem;max-height:24rem}svg{margin:.4rem .4rem 0 0;border:1px solid #eee}";

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
        "<h1>{}</h1><p>{}</p><p><span class=\"verdict {}\">{}</span> {}</p>",
        esc(&report.policy.name),
        esc(report.policy.description.as_deref().unwrap_or("")),
        status_class(verdict),
        verdict,
        esc(&report.verdict_reason)
    );
    let c = &report.counts;
    let _ = write!(
        h,
        "<p>Target <code>{}</code>{} · started {} · {} ms · {} · {} pass, {} fail, {} error, {} skip, {} waived</p>",
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
        c.pass,
        c.fail,
        c.error,
        c.skip,
        c.waived
    );
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
    for r in &report.results {
        let st = r.status.as_str();
        let _ = write!(
            h,
            "<tr><td><span class=\"badge {}\">{st}</span></td><td><a href=\"#{id}\">{id}</a></td><td>{}</td><td>{:?}{}</td><td>{} ms</td><td>{}</td></tr>",
            status_class(st),
            esc(&r.kind),
            r.severity,
            if r.blocking { " (blocking)" } else { "" },
            r.duration_ms,
            esc(&r.summary),
            id = esc(&r.id)
        );
    }
    h.push_str("</table>");
    for r in &report.results {
        let st = r.status.as_str();
        let _ = write!(
            h,
            "<section id=\"{id}\"><h3><span class=\"badge {}\">{st}</span> {id} <small>({}, {} requests, {} attempt(s))</small></h3><p>{}</p>",
            status_class(st),
            esc(&r.kind),
            r.requests,
            r.attempts,
            esc(r.description.as_deref().unwrap_or(&r.summary)),
            id = esc(&r.id)
        );
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
    use crate::report::Series;

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
        assert_eq!(scatter.matches("<circle").count(), 20);
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
}
