//! Reports: the plain-data [`Report`] (a documented JSON contract with a `schema_version`)
//! and one renderer per format, each writing to any `io::Write`. Renderers present; they
//! never compute verdicts.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
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
    /// A fleet run's instances and their verdicts (`check --targets`, `report merge`); every
    /// result then names its `instance`. Absent for one target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetSummary>,
}

impl Report {
    /// A fleet's instances, the odd ones out first: those whose verdict differs from the
    /// most common one (NO-GO before INCONCLUSIVE), then the rest, each part by name.
    pub fn instances_odd_first(&self) -> Vec<&InstanceVerdict> {
        let Some(f) = &self.fleet else {
            return vec![];
        };
        let rank = |v: Verdict| match v {
            Verdict::NoGo => 0,
            Verdict::Inconclusive => 1,
            Verdict::Go => 2,
        };
        let count = |v: Verdict| f.instances.iter().filter(|i| i.verdict == v).count();
        let common = [Verdict::Go, Verdict::NoGo, Verdict::Inconclusive]
            .into_iter()
            .max_by_key(|v| (count(*v), rank(*v)))
            .unwrap_or(Verdict::Go);
        let mut out: Vec<&InstanceVerdict> = f.instances.iter().collect();
        out.sort_by_key(|i| (i.verdict == common, rank(i.verdict), i.name.clone()));
        out
    }

    /// The results in the order a reader takes them: for a fleet, instance by instance, odd
    /// ones out first (each in policy order); else as they are.
    pub fn results_by_instance(&self) -> Vec<&CheckResult> {
        if self.fleet.is_none() {
            return self.results.iter().collect();
        }
        self.instances_odd_first()
            .into_iter()
            .flat_map(|i| {
                self.results
                    .iter()
                    .filter(move |r| r.instance.as_deref() == Some(i.name.as_str()))
            })
            .collect()
    }
}

/// The instances a fleet report covers, each with its own verdict; the report's verdict is
/// the fleet's, by `require`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct FleetSummary {
    /// `all`, or the share of instances that must be GO (`95%`).
    pub require: String,
    /// Instances in the whole fleet, before any sharding.
    pub size: usize,
    /// Where the fleet was listed (`--targets`).
    pub source: String,
    /// The shards this report covers (`2/3`); empty when it covers the fleet unsharded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<String>,
    /// GO, NO-GO and INCONCLUSIVE instances, and those of the fleet not in this report.
    pub go: usize,
    pub no_go: usize,
    pub inconclusive: usize,
    pub missing: usize,
    /// By name.
    pub instances: Vec<InstanceVerdict>,
}

impl FleetSummary {
    /// `17 of 20 instances GO, 2 NO-GO, 1 INCONCLUSIVE; required: 95%`, shared by the text
    /// formats.
    pub fn line(&self) -> String {
        let missing = if self.missing > 0 {
            format!(", {} not in this report", self.missing)
        } else {
            String::new()
        };
        format!(
            "{} of {} instances GO, {} NO-GO, {} INCONCLUSIVE{missing}; required: {}",
            self.go, self.size, self.no_go, self.inconclusive, self.require
        )
    }
}

/// One instance of a fleet and its own verdict.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct InstanceVerdict {
    pub name: String,
    pub url: String,
    /// The labels its source gave it.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    pub verdict: Verdict,
    pub verdict_reason: String,
    pub counts: Counts,
    pub duration_ms: u64,
    /// Warnings about reaching it (as `target.warnings` of a one-target report).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// What `preflight canary` compared and how each interval scored. Each metric is also a
/// result in `results` (kind `canary/<source>`), with its observation and evidence.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
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

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PolicyInfo {
    pub name: String,
    pub description: Option<String>,
    pub files: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
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

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
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
    /// Results counted (waived ones are also counted as FAIL or ERROR).
    pub fn total(&self) -> usize {
        self.pass + self.fail + self.error + self.skip + self.inconclusive
    }

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
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct WaiverInfo {
    pub check: String,
    pub reason: String,
    /// `YYYY-MM-DD`.
    pub expires: String,
    /// `active`, or `expired` (no longer applies).
    pub state: String,
}

/// One check's result with its evidence.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
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
    /// The fleet instance it ran against (a fleet report only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

/// A position in a policy file: `file` as given to preflight, or `builtin:…` for a policy
/// built into the binary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
    /// The check's id, after its instance's name in a fleet report (`10.0.0.5:8080 › ready`):
    /// what every renderer shows where one report holds the same check many times.
    pub fn label(&self) -> String {
        match &self.instance {
            Some(i) => format!("{i} › {}", self.id),
            None => self.id.clone(),
        }
    }

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
            instance: None,
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
