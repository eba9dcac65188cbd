//! Runbook audits (`preflight audit`): walk a runbook's ```` ```preflight ```` steps in
//! document order against a target, ask the operator to attest its `confirm` steps, and
//! append every result and attestation to the evidence trail ([`trail`]), the run's last
//! record signed when a key is given ([`sign`]).
//!
//! Nothing here prints: the CLI shows sections and results as they come (through the
//! engine's `Progress`) and asks through an [`crate::outcome::Attestor`].

pub mod render;
pub mod runbook;
pub mod sign;
pub mod trail;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::engine::run::{CheckFailure, CheckOptions};
use crate::outcome::Status;
use crate::report::{Report, Verdict};
use sign::Signer;
use trail::{Appended, Entry, Kind, Trail, TrailError};

/// What `preflight audit` was asked to do.
pub struct Options {
    /// The runbook, as loaded into `check.policy`.
    pub runbook: PathBuf,
    /// The run itself: policy from the runbook, target, attestor, progress. The audit runs
    /// it one step at a time in document order and asks for the target's identity.
    pub check: CheckOptions,
    pub trail: PathBuf,
    pub operator: String,
    pub signer: Option<Signer>,
}

/// Why the audit did not run or was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{0}")]
    Usage(String),
    #[error("reading the runbook {path}: {source}")]
    Runbook {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Trail(#[from] TrailError),
}

/// The runbook an audit walked.
#[derive(Debug, Clone, Serialize)]
pub struct RunbookInfo {
    pub path: String,
    /// Of the file's bytes as read for this run.
    pub sha256: String,
}

/// Who and what was audited.
#[derive(Debug, Clone, Serialize)]
pub struct Identity {
    pub url: String,
    /// From the target's `/status`, when it says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The host in the URL, and the address it was reached at.
    pub host: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The machine the audit ran on.
    pub auditor_host: String,
}

/// One section of the runbook and the steps in it, in document order.
#[derive(Debug, Clone, Serialize)]
pub struct Section {
    pub title: String,
    /// Ids of its steps (results in [`Audit::report`]).
    pub steps: Vec<String>,
}

/// Where the run went in the trail.
#[derive(Debug, Clone, Serialize)]
pub struct TrailInfo {
    pub file: String,
    pub first_seq: i64,
    pub last_seq: i64,
    /// The chain head after this run (the hash of its last record).
    pub head: String,
    /// The signing key's fingerprint, when signed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
}

/// A finished audit: the evidence report.
#[derive(Debug, Clone, Serialize)]
pub struct Audit {
    pub run_id: String,
    pub runbook: RunbookInfo,
    pub operator: String,
    pub target: Identity,
    pub sections: Vec<Section>,
    pub trail: TrailInfo,
    /// Every step's result, the verdict and its reason (as `preflight check` reports them).
    pub report: Report,
}

impl Audit {
    pub fn verdict(&self) -> Verdict {
        self.report.verdict
    }
}

/// The section of each check of the runbook (by the line its step starts on).
pub fn sections_by_check(
    runbook_text: &str,
    policy: &crate::policy::Policy,
) -> Vec<(String, String)> {
    let heads = runbook::headings(runbook_text);
    policy
        .checks
        .iter()
        .map(|c| {
            let line = c.origin.as_ref().map_or(0, |o| o.line);
            (c.id.clone(), runbook::section_of(&heads, line))
        })
        .collect()
}

/// A run id: the UTC time and 48 random bits (`20261203T101500Z-3f9a0c12d4e1`).
fn run_id() -> String {
    format!(
        "{}-{:012x}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
        rand::random::<u64>() & 0xffff_ffff_ffff
    )
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// This machine's host name.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}

/// What a report says of its target, and this machine's name.
fn identity(report: &Report) -> Identity {
    Identity {
        url: report.target.url.clone(),
        version: report.target.version.clone(),
        host: crate::target::host_port(&report.target.url)
            .map(|(h, _)| h)
            .unwrap_or_default(),
        address: report.target.address.clone(),
        auditor_host: hostname(),
    }
}

/// Runs the audit and appends it to the trail (whole, in one transaction).
pub async fn run(opts: Options) -> Result<Audit, AuditError> {
    let text = std::fs::read(&opts.runbook).map_err(|source| AuditError::Runbook {
        path: opts.runbook.clone(),
        source,
    })?;
    let runbook = RunbookInfo {
        path: opts.runbook.display().to_string(),
        sha256: sign::sha256_hex(&text),
    };
    let by_check = sections_by_check(&String::from_utf8_lossy(&text), &opts.check.policy);
    // Opened first: a trail that cannot be written fails before the run, not after it.
    let mut trail = Trail::open(&opts.trail)?;
    let mut check = opts.check;
    check.concurrency = 1;
    check.identify = true;
    let report = match crate::engine::run::check(check).await {
        Ok(r) => r,
        Err(CheckFailure::Usage(m)) => return Err(AuditError::Usage(m)),
    };
    let target = identity(&report);
    let mut sections: Vec<Section> = Vec::new();
    for r in &report.results {
        let title = by_check
            .iter()
            .find(|(id, _)| *id == r.id)
            .map(|(_, s)| s.clone())
            .unwrap_or_default();
        match sections.last_mut() {
            Some(s) if s.title == title => s.steps.push(r.id.clone()),
            _ => sections.push(Section {
                title,
                steps: vec![r.id.clone()],
            }),
        }
    }
    let run_id = run_id();
    let entries = entries(
        &run_id,
        &runbook,
        &opts.operator,
        &target,
        &report,
        &by_check,
        opts.signer.as_ref(),
    );
    let Appended {
        first,
        last,
        head,
        signed,
    } = trail.append_run(&entries, opts.signer.as_ref())?;
    Ok(Audit {
        run_id,
        runbook,
        operator: opts.operator,
        target,
        sections,
        trail: TrailInfo {
            file: opts.trail.display().to_string(),
            first_seq: first,
            last_seq: last,
            head,
            signed_by: opts
                .signer
                .as_ref()
                .filter(|_| signed)
                .map(|s| s.public().fingerprint()),
        },
        report,
    })
}

/// The run's records: start, one per step, end.
fn entries(
    run_id: &str,
    runbook: &RunbookInfo,
    operator: &str,
    target: &Identity,
    report: &Report,
    by_check: &[(String, String)],
    signer: Option<&Signer>,
) -> Vec<Entry> {
    let target_json = serde_json::to_string(target).expect("plain data");
    let base = Entry {
        run_id: run_id.to_string(),
        runbook: runbook.path.clone(),
        runbook_sha256: runbook.sha256.clone(),
        operator: operator.to_string(),
        target: target_json,
        ..Entry::default()
    };
    let signer_json = signer.map(|s| {
        let k = s.public();
        serde_json::json!({"fingerprint": k.fingerprint(), "public_key": k.to_hex()})
    });
    let mut out = vec![Entry {
        kind: Kind::Start.as_str().into(),
        time: report.started_at.clone(),
        evidence: serde_json::json!({
            "tool": report.tool,
            "policy": report.policy.name,
            "signer": signer_json,
        })
        .to_string(),
        ..base.clone()
    }];
    for r in &report.results {
        let mut evidence = serde_json::to_value(r).expect("plain data");
        if let Some(o) = evidence.as_object_mut() {
            o.remove("charts");
        }
        out.push(Entry {
            kind: Kind::Step.as_str().into(),
            time: now(),
            section: by_check
                .iter()
                .find(|(id, _)| *id == r.id)
                .map(|(_, s)| s.clone())
                .unwrap_or_default(),
            check_id: r.id.clone(),
            status: r.status.as_str().into(),
            evidence: evidence.to_string(),
            ..base.clone()
        });
    }
    if let Some(c) = &report.canary {
        let at = |step: Option<usize>, weight: Option<f64>| match (step, weight) {
            (Some(s), Some(w)) => format!("step {s} at {w}%"),
            _ => String::new(),
        };
        for i in &c.intervals {
            out.push(Entry {
                kind: Kind::Step.as_str().into(),
                time: now(),
                section: at(i.step, i.weight),
                check_id: format!("interval-{}", i.index + 1),
                status: match i.verdict {
                    crate::report::Verdict::Go => "PASS",
                    crate::report::Verdict::NoGo => "FAIL",
                    crate::report::Verdict::Inconclusive => "INCONCLUSIVE",
                }
                .into(),
                evidence: serde_json::to_string(i).expect("plain data"),
                ..base.clone()
            });
        }
        // The live canary's decisions (step, weight, what), in order.
        let decisions = report
            .results
            .first()
            .and_then(|r| r.evidence.get("decisions"))
            .and_then(|d| d.as_array())
            .cloned()
            .unwrap_or_default();
        for (n, d) in decisions.iter().enumerate() {
            out.push(Entry {
                kind: Kind::Step.as_str().into(),
                time: now(),
                section: at(d["step"].as_u64().map(|s| s as usize), d["weight"].as_f64()),
                check_id: format!("decision-{}", n + 1),
                evidence: d.to_string(),
                ..base.clone()
            });
        }
    }
    out.push(Entry {
        kind: Kind::End.as_str().into(),
        time: now(),
        status: report.verdict.as_str().into(),
        evidence: serde_json::json!({
            "verdict_reason": report.verdict_reason,
            "counts": report.counts,
            "steps": report.results.len(),
            "attested": report.results.iter().filter(|r| r.kind == "confirm" && r.status != Status::Skip).count(),
        })
        .to_string(),
        ..base
    });
    out
}

/// Appends any finished run's report (a live canary's, say) to the trail at `trail`, as one
/// run: start (the policy file's path and SHA-256 in place of a runbook), one step per
/// result, per judged interval and per decision, end (the verdict).
pub fn record(
    trail: &Path,
    report: &Report,
    policy_file: &Path,
    operator: &str,
    signer: Option<&Signer>,
) -> Result<TrailInfo, AuditError> {
    let text = std::fs::read(policy_file).map_err(|source| AuditError::Runbook {
        path: policy_file.to_path_buf(),
        source,
    })?;
    let runbook = RunbookInfo {
        path: policy_file.display().to_string(),
        sha256: sign::sha256_hex(&text),
    };
    let target = identity(report);
    let mut t = Trail::open(trail)?;
    let run_id = run_id();
    let entries = entries(&run_id, &runbook, operator, &target, report, &[], signer);
    let a = t.append_run(&entries, signer)?;
    Ok(TrailInfo {
        file: trail.display().to_string(),
        first_seq: a.first,
        last_seq: a.last,
        head: a.head,
        signed_by: signer.map(|s| s.public().fingerprint()),
    })
}

/// One run as `preflight audit log` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub run_id: String,
    pub runbook: String,
    pub operator: String,
    /// The verdict of its end record; `None` for a run without one.
    pub verdict: Option<String>,
    pub started: String,
    pub steps: usize,
    pub signed: bool,
}

/// The runs of a trail, oldest first, as stored (verification is `verify`'s job).
pub fn runs(records: &[trail::Record]) -> Vec<RunSummary> {
    let mut out: Vec<RunSummary> = Vec::new();
    for r in records {
        let e = &r.entry;
        if out.last().is_none_or(|s| s.run_id != e.run_id) {
            out.push(RunSummary {
                run_id: e.run_id.clone(),
                runbook: e.runbook.clone(),
                operator: e.operator.clone(),
                verdict: None,
                started: e.time.clone(),
                steps: 0,
                signed: false,
            });
        }
        let s = out.last_mut().expect("pushed above");
        match e.kind.as_str() {
            "step" => s.steps += 1,
            "end" => {
                s.verdict = Some(e.status.clone());
                s.signed = r.signature.is_some();
            }
            _ => {}
        }
    }
    out
}

/// The default trail file, beside the runbook's working directory.
pub const DEFAULT_TRAIL: &str = "preflight-audit.db";

/// `path` or the default trail.
pub fn trail_path(path: Option<&Path>) -> PathBuf {
    path.map_or_else(|| PathBuf::from(DEFAULT_TRAIL), Path::to_path_buf)
}
