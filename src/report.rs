//! Reports: the plain-data [`Report`] (a documented JSON contract with a `schema_version`)
//! and one renderer per format, each writing to any `io::Write`. Renderers present; they
//! never compute verdicts.

use schemars::JsonSchema;
use serde::Serialize;

use crate::outcome::{Chart, Observation, Status};
use crate::policy::Severity;

pub mod codequality;
pub mod github;
pub mod html;
pub mod human;
pub mod json;
pub mod junit;
pub mod markdown;
pub mod sarif;

/// How a renderer presents (never what it presents).
#[derive(Debug, Clone, Copy, Default)]
pub struct RenderOpts {
    /// ANSI colour (only when writing to a terminal).
    pub color: bool,
}

/// Output formats of `preflight check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Human,
    Json,
    Junit,
    Markdown,
    Html,
    /// GitHub Actions workflow commands (`::error file=…,line=…::…`).
    Github,
    /// GitLab Code Quality JSON.
    Codequality,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Human => "human",
            Format::Json => "json",
            Format::Junit => "junit",
            Format::Markdown => "markdown",
            Format::Html => "html",
            Format::Github => "github",
            Format::Codequality => "codequality",
        }
    }
}

/// Renders `report` in `format`. `Err` with `Unsupported` when the format is not built.
pub fn write(
    format: Format,
    report: &Report,
    out: &mut dyn std::io::Write,
    opts: &RenderOpts,
) -> std::io::Result<()> {
    match format {
        Format::Human => human::write(report, out, opts),
        Format::Json => json::write(report, out, opts),
        Format::Junit => junit::write(report, out, opts),
        Format::Markdown => markdown::write(report, out, opts),
        Format::Html => html::write(report, out, opts),
        Format::Github => github::write(report, out),
        Format::Codequality => codequality::write(report, out),
    }
}

/// `1234` ms as `1.2 s`, `56` ms as `56 ms`.
pub(crate) fn fmt_ms(ms: u64) -> String {
    if ms >= 1000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{ms} ms")
    }
}

/// Version of the JSON report contract (`docs/report-format.md`).
pub const SCHEMA_VERSION: u32 = 1;

/// The overall decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "SCREAMING-KEBAB-CASE")]
pub enum Verdict {
    Go,
    NoGo,
    Inconclusive,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Go => "GO",
            Verdict::NoGo => "NO-GO",
            Verdict::Inconclusive => "INCONCLUSIVE",
        }
    }
}

/// A whole run.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Report {
    pub schema_version: u32,
    /// `preflight <version>`.
    pub tool: String,
    pub policy: PolicyInfo,
    pub target: TargetInfo,
    /// RFC 3339.
    pub started_at: String,
    pub duration_ms: u64,
    pub verdict: Verdict,
    /// Why the verdict is what it is, in one sentence.
    pub verdict_reason: String,
    /// Severities that block.
    pub block_on: Vec<Severity>,
    pub counts: Counts,
    pub waivers: Vec<WaiverInfo>,
    /// In policy order, whatever order they ran in.
    pub results: Vec<CheckResult>,
    /// A canary run's scores (`preflight canary`); absent from a `check` report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanarySummary>,
}

/// What `preflight canary` compared and how each interval scored. Each metric is also a
/// result in `results` (kind `canary/<source>`), with its observation and evidence.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CanarySummary {
    /// Base URLs (or spawned profiles) of the two versions.
    pub baseline: String,
    pub canary: String,
    /// The final score, 0–100; `null` when too little was judged to score.
    pub score: Option<f64>,
    /// Thresholds: at or above `pass` GO, at or below `marginal` NO-GO.
    pub pass: f64,
    pub marginal: f64,
    pub confidence: f64,
    /// Requests sent per side.
    pub requests: [u64; 2],
    /// Why the run ended before its duration, when it did.
    pub stopped_early: Option<String>,
    /// One judgement per interval after the warm-up.
    pub intervals: Vec<IntervalScore>,
}

/// One interval judged on its own requests.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct IntervalScore {
    pub index: usize,
    /// Seconds after the traffic began.
    pub start_s: f64,
    pub end_s: f64,
    pub score: Option<f64>,
    pub verdict: Verdict,
    /// Requests judged per side.
    pub n_baseline: u64,
    pub n_canary: u64,
    /// Metrics that regressed in it.
    pub regressed: Vec<String>,
    pub reason: String,
    /// The live canary's step (1-based) and the canary's share in percent then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PolicyInfo {
    pub name: String,
    pub description: Option<String>,
    pub files: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct TargetInfo {
    pub url: String,
    /// Whether preflight spawned the bundled service for this run.
    pub spawned: bool,
    /// The service config profile when spawned.
    pub config: Option<String>,
    /// Capabilities available for this run.
    pub capabilities: Vec<String>,
    /// The address the run checked (for a host name: the first that accepted a connection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Where the checks' client addresses came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<String>,
    /// Warnings about how the target was reached (e.g. TLS verification off); every
    /// renderer shows them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The version the target's `/status` reports (`preflight audit` asks for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct Counts {
    pub pass: usize,
    pub fail: usize,
    pub error: usize,
    pub skip: usize,
    /// Checks whose evidence could not decide (never a pass).
    #[serde(default)]
    pub inconclusive: usize,
    /// Failures or errors not blocking because a waiver applies.
    pub waived: usize,
}

impl Counts {
    /// Counts one result of `status`.
    pub fn add(&mut self, status: Status) {
        match status {
            Status::Pass => self.pass += 1,
            Status::Fail => self.fail += 1,
            Status::Error => self.error += 1,
            Status::Skip => self.skip += 1,
            Status::Inconclusive => self.inconclusive += 1,
        }
    }
}

/// A waiver and whether it applies.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct WaiverInfo {
    pub check: String,
    pub reason: String,
    /// `YYYY-MM-DD`.
    pub expires: String,
    /// `active`, or `expired` (no longer applies).
    pub state: String,
}

/// One check's result with its evidence.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CheckResult {
    pub id: String,
    pub kind: String,
    pub severity: Severity,
    pub description: Option<String>,
    pub status: Status,
    /// Whether this result makes the verdict NO-GO (or INCONCLUSIVE for SKIP).
    pub blocking: bool,
    /// A SKIP about something outside this run (a repository file when a built-in policy
    /// runs outside its checkout): it never blocks, whatever the severity.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub out_of_scope: bool,
    /// The reason of the waiver that applies, if any.
    pub waived: Option<String>,
    pub attempts: u32,
    pub duration_ms: u64,
    /// One line: what was found (or why it was skipped / errored).
    pub summary: String,
    pub observations: Vec<Observation>,
    /// What was sent to the target.
    pub sent: Vec<String>,
    pub requests: u64,
    #[schemars(with = "serde_json::Value")]
    pub evidence: serde_json::Value,
    pub charts: Vec<Chart>,
    /// Where the check is declared in the policy (CI annotations point there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
}

/// A position in a policy file: `file` as given to preflight, or `builtin:…` for a policy
/// built into the binary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Location {
    pub file: String,
    pub line: usize,
    pub col: usize,
}

impl Location {
    /// The repository path for tools that link into a checkout: `None` for a built-in file.
    pub fn repo_path(&self) -> Option<&str> {
        (!self.file.starts_with(crate::builtin::PREFIX)).then_some(self.file.as_str())
    }
}

impl CheckResult {
    /// A result with nothing measured yet: the engine fills in the rest as the check runs.
    pub fn new(id: &str, kind: &str, severity: Severity, status: Status) -> Self {
        CheckResult {
            id: id.to_string(),
            kind: kind.to_string(),
            severity,
            description: None,
            status,
            blocking: false,
            out_of_scope: false,
            waived: None,
            attempts: 0,
            duration_ms: 0,
            summary: String::new(),
            observations: vec![],
            sent: vec![],
            requests: 0,
            evidence: serde_json::Value::Null,
            charts: vec![],
            location: None,
        }
    }
}

impl Counts {
    /// `N checks: a pass, b fail, c error, d skip, e waived`, shared by the text formats.
    pub fn line(&self, checks: usize) -> String {
        let undecided = if self.inconclusive > 0 {
            format!(", {} inconclusive", self.inconclusive)
        } else {
            String::new()
        };
        format!(
            "{checks} checks: {} pass, {} fail, {} error, {} skip{undecided}, {} waived",
            self.pass, self.fail, self.error, self.skip, self.waived
        )
    }
}
