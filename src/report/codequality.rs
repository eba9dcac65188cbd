//! GitLab Code Quality JSON (`artifacts:reports:codequality`): one issue per check that did
//! not pass, or per lint diagnostic, with a location in the policy and a fingerprint that
//! stays the same from run to run while the problem does (GitLab compares them across
//! pipelines).

use std::io::{self, Write};

use serde::Serialize;

use crate::outcome::Status;
use crate::policy::Severity;
use crate::policy::diag::{Diagnostic, Level};
use crate::report::{CheckResult, Report};

#[derive(Debug, Serialize)]
struct Issue {
    description: String,
    check_name: String,
    fingerprint: String,
    severity: &'static str,
    location: IssueLocation,
}

#[derive(Debug, Serialize)]
struct IssueLocation {
    path: String,
    lines: Lines,
}

#[derive(Debug, Serialize)]
struct Lines {
    begin: usize,
}

/// Code Quality's severity of a check result that did not pass.
fn severity(r: &CheckResult) -> &'static str {
    match r.status {
        Status::Fail | Status::Error if r.blocking => "blocker",
        Status::Fail | Status::Error if r.waived.is_none() => match r.severity {
            Severity::Critical => "critical",
            Severity::High => "major",
            Severity::Medium => "minor",
            Severity::Low | Severity::Info => "info",
        },
        _ if r.blocking => "major",
        _ => "info",
    }
}

/// Hex SHA-256 of the parts, separated so that `("ab", "c")` and `("a", "bc")` differ.
fn fingerprint(parts: &[&str]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(p.as_bytes());
        ctx.update(&[0]);
    }
    ctx.finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The repository path of a policy file (a built-in one without its `builtin:` prefix).
fn repo_path(file: &str) -> String {
    file.strip_prefix(crate::builtin::PREFIX)
        .unwrap_or(file)
        .to_string()
}

fn emit(issues: &[Issue], out: &mut dyn Write) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, issues)?;
    writeln!(out)
}

/// Writes the checks that did not pass. The fingerprint is the policy file, the check and
/// its status: measured numbers change between runs, the problem does not.
pub fn write(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    let policy_file = report.policy.files.first().cloned().unwrap_or_default();
    let issues: Vec<Issue> = report
        .results
        .iter()
        .filter(|r| r.status != Status::Pass)
        .map(|r| {
            let (path, line) = r.location.as_ref().map_or_else(
                || (repo_path(&policy_file), 1),
                |l| (repo_path(&l.file), l.line),
            );
            Issue {
                description: format!("{} {}: {}", r.label(), r.status.as_str(), r.summary),
                check_name: format!("preflight/{}", r.kind),
                fingerprint: fingerprint(&["check", &path, &r.label(), r.status.as_str()]),
                severity: severity(r),
                location: IssueLocation {
                    path,
                    lines: Lines { begin: line },
                },
            }
        })
        .collect();
    emit(&issues, out)
}

/// Writes lint diagnostics.
pub fn diagnostics(diags: &[Diagnostic], out: &mut dyn Write) -> io::Result<()> {
    let issues: Vec<Issue> = diags
        .iter()
        .map(|d| {
            let path = repo_path(&d.file.display().to_string());
            Issue {
                description: format!("{}: {}", d.code, d.message),
                check_name: d.code.clone(),
                fingerprint: fingerprint(&["lint", &path, &d.code, &d.message]),
                severity: match d.level {
                    Level::Error => "major",
                    Level::Warning => "minor",
                },
                location: IssueLocation {
                    path,
                    lines: Lines {
                        begin: d.pos.map_or(1, |p| p.line),
                    },
                },
            }
        })
        .collect();
    emit(&issues, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_sha256_and_separated() {
        // SHA-256 of "abc\0": a fixed value, so a change of algorithm shows here.
        assert_eq!(
            fingerprint(&["abc"]),
            "dc1114cd074914bd872cc1f9a23ec910ea2203bc79779ab2e17da25782a624fc"
        );
        assert_ne!(fingerprint(&["ab", "c"]), fingerprint(&["a", "bc"]));
    }

    #[test]
    fn severity_follows_blocking_then_the_checks_severity() {
        let mut r = CheckResult::new("a", "http", Severity::High, Status::Fail);
        assert_eq!(severity(&r), "major");
        r.blocking = true;
        assert_eq!(severity(&r), "blocker");
        r = CheckResult::new("a", "http", Severity::Critical, Status::Skip);
        assert_eq!(severity(&r), "info");
        r.blocking = true;
        assert_eq!(severity(&r), "major");
    }
}
