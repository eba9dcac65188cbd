//! GitHub Actions workflow commands: one `::error` / `::warning` / `::notice` line per check
//! that did not pass (pointing at the check's line in the policy) or per lint diagnostic,
//! and the verdict. The Actions runner turns them into annotations on the pull request.
//!
//! Grammar: `::LEVEL file=F,line=L,col=C,title=T::MESSAGE`. In property values `%`, CR, LF,
//! `:` and `,` are percent-encoded; in the message `%`, CR and LF.

use std::io::{self, Write};

use crate::outcome::Status;
use crate::policy::diag::{Diagnostic, Level};
use crate::report::{CheckResult, Report, Verdict};

/// The annotation level of a check result, or `None` for a PASS.
fn level(r: &CheckResult) -> Option<&'static str> {
    match r.status {
        Status::Pass => None,
        _ if r.waived.is_some() || r.out_of_scope => Some("notice"),
        Status::Fail | Status::Error if r.blocking => Some("error"),
        _ => Some("warning"),
    }
}

/// Writes the report as workflow commands.
pub fn write(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    for r in &report.results {
        let Some(level) = level(r) else { continue };
        let mut props = Vec::new();
        if let Some(loc) = &r.location
            && let Some(path) = loc.repo_path()
        {
            props.push(("file", path.to_string()));
            props.push(("line", loc.line.to_string()));
            props.push(("col", loc.col.to_string()));
        }
        // Titles avoid `:` and `,`: the runner would show them percent-encoded.
        let blocking = if r.blocking { " · blocking" } else { "" };
        props.push((
            "title",
            format!(
                "preflight {} {} · {}{blocking}",
                r.id,
                r.status.as_str(),
                r.severity.as_str()
            ),
        ));
        // In a fleet, the instance leads the message (a title would show its `:` encoded).
        let mut message = match &r.instance {
            Some(i) => format!("{i}: {}", r.summary),
            None => r.summary.clone(),
        };
        if let Some(w) = &r.waived {
            message.push_str(&format!("\nwaived: {w}"));
        }
        for o in r.observations.iter().filter(|o| !o.ok) {
            message.push_str(&format!(
                "\n{}: expected {}, observed {}",
                o.what, o.expected, o.observed
            ));
        }
        command(out, level, &props, &message)?;
    }
    let level = match report.verdict {
        Verdict::Go => "notice",
        Verdict::NoGo => "error",
        Verdict::Inconclusive => "warning",
    };
    let title = format!(
        "preflight {} · {}",
        report.verdict.as_str(),
        report.policy.name
    );
    command(out, level, &[("title", title)], &report.verdict_reason)
}

/// Writes lint diagnostics as workflow commands.
pub fn diagnostics(diags: &[Diagnostic], out: &mut dyn Write) -> io::Result<()> {
    for d in diags {
        let level = match d.level {
            Level::Error => "error",
            Level::Warning => "warning",
        };
        let mut props = vec![("file", d.file.display().to_string())];
        if let Some(p) = d.pos {
            props.push(("line", p.line.to_string()));
            props.push(("col", p.col.to_string()));
        }
        props.push(("title", format!("preflight lint {}", d.code)));
        let message = match &d.hint {
            Some(h) => format!("{}\nhint: {h}", d.message),
            None => d.message.clone(),
        };
        command(out, level, &props, &message)?;
    }
    Ok(())
}

fn command(
    out: &mut dyn Write,
    level: &str,
    props: &[(&str, String)],
    message: &str,
) -> io::Result<()> {
    let props: Vec<String> = props
        .iter()
        .map(|(k, v)| format!("{k}={}", escape_property(v)))
        .collect();
    let sep = if props.is_empty() { "" } else { " " };
    writeln!(
        out,
        "::{level}{sep}{}::{}",
        props.join(","),
        escape_data(message)
    )
}

/// Percent-encodes what the runner would read as a line end.
pub fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// [`escape_data`], plus the property separators `:` and `,`.
pub fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_follow_the_runner() {
        assert_eq!(escape_data("50% of a\r\nb"), "50%25 of a%0D%0Ab");
        assert_eq!(escape_property("p99: 5ms, p50%"), "p99%3A 5ms%2C p50%25");
    }

    #[test]
    fn a_pass_has_no_annotation_and_a_waiver_is_a_notice() {
        let mut r = CheckResult::new("a", "http", crate::policy::Severity::High, Status::Pass);
        assert_eq!(level(&r), None);
        r.status = Status::Fail;
        assert_eq!(level(&r), Some("warning"));
        r.blocking = true;
        assert_eq!(level(&r), Some("error"));
        r.blocking = false;
        r.waived = Some("known".into());
        assert_eq!(level(&r), Some("notice"));
    }
}
