//! JUnit XML: one testsuite for the policy, one testcase per check. FAIL is `<failure>`,
//! ERROR is `<error>`, SKIP is `<skipped>`, each with the explanation (summary and
//! observations). Everything is escaped, and characters XML cannot carry are replaced.

use std::fmt::Write as _;
use std::io;

use crate::outcome::Status;
use crate::report::{RenderOpts, Report};

pub fn write(report: &Report, out: &mut dyn io::Write, _opts: &RenderOpts) -> io::Result<()> {
    let c = &report.counts;
    let tests = report.results.len();
    let time = secs(report.duration_ms);
    let mut x = String::new();
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"preflight\" tests=\"{tests}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{time}\">",
        c.fail,
        c.error,
        c.skip + c.inconclusive
    );
    let _ = writeln!(
        x,
        "  <testsuite name=\"{}\" tests=\"{tests}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{time}\" timestamp=\"{}\">",
        esc(&report.policy.name),
        c.fail,
        c.error,
        c.skip + c.inconclusive,
        esc(&report.started_at)
    );
    x.push_str("    <properties>\n");
    for (k, v) in [
        ("verdict", report.verdict.as_str().to_string()),
        ("verdict_reason", report.verdict_reason.clone()),
        ("target", report.target.url.clone()),
        ("tool", report.tool.clone()),
    ]
    .into_iter()
    .chain(
        report
            .target
            .warnings
            .iter()
            .map(|w| ("warning", w.clone())),
    ) {
        let _ = writeln!(x, "      <property name=\"{k}\" value=\"{}\"/>", esc(&v));
    }
    for w in &report.waivers {
        let _ = writeln!(
            x,
            "      <property name=\"waiver:{}\" value=\"{} (expires {}, {})\"/>",
            esc(&w.check),
            esc(&w.reason),
            esc(&w.expires),
            esc(&w.state)
        );
    }
    x.push_str("    </properties>\n");
    for r in &report.results {
        let _ = write!(
            x,
            "    <testcase name=\"{}\" classname=\"{}.{}\" time=\"{}\"",
            esc(&r.label()),
            esc(&report.policy.name),
            esc(&r.kind),
            secs(r.duration_ms)
        );
        let mut detail = String::new();
        let _ = writeln!(detail, "severity: {}", r.severity.as_str());
        if let Some(w) = &r.waived {
            let _ = writeln!(detail, "waived: {w}");
        }
        for s in &r.sent {
            let _ = writeln!(detail, "sent: {s}");
        }
        for o in &r.observations {
            let _ = writeln!(
                detail,
                "[{}] {}: expected {}, observed {}",
                if o.ok { "ok" } else { "not met" },
                o.what,
                o.expected,
                o.observed
            );
        }
        let tag = match r.status {
            Status::Pass => None,
            Status::Fail => Some("failure"),
            Status::Error => Some("error"),
            Status::Skip | Status::Inconclusive => Some("skipped"),
        };
        match tag {
            None => x.push_str("/>\n"),
            Some("skipped") => {
                let _ = writeln!(
                    x,
                    ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                    esc(&r.summary)
                );
            }
            Some(tag) => {
                let _ = writeln!(
                    x,
                    ">\n      <{tag} message=\"{}\" type=\"{}\">{}</{tag}>\n    </testcase>",
                    esc(&r.summary),
                    r.status.as_str(),
                    esc(&detail).replace("&#10;", "\n")
                );
            }
        }
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    out.write_all(x.as_bytes())
}

fn secs(ms: u64) -> String {
    format!("{:.3}", ms as f64 / 1000.0)
}

/// Escapes text for an attribute or element; characters XML 1.0 forbids become U+FFFD.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\n' => o.push_str("&#10;"),
            '\t' | '\r' => o.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => o.push('\u{FFFD}'),
            c => o.push(c),
        }
    }
    o
}
