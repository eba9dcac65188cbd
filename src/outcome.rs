//! The contract: what a check (and later a canary metric or an audit step) gives back.
//!
//! [`Status`], [`Observation`], [`Outcome`], [`CheckError`], [`Capability`], [`Chart`] and an
//! audit step's [`Attestation`] (asked through an [`Attestor`]) are plain data at the bottom of the import graph: engine, checks, report, canary, audit and
//! watch depend on this module, and it depends on nothing else of the crate.
//!
//! A check never prints and never panics on what a target does: transport failures and
//! timeouts become [`CheckError`], which the engine turns into ERROR (or SKIP when a
//! capability is missing).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Result of one evaluated check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Pass,
    Fail,
    /// Could not be evaluated: target down, deadline, capability missing at run time.
    Error,
    /// Not applicable, with the reason.
    Skip,
    /// Measured, but the evidence cannot decide either way (too few samples, an interval
    /// that straddles the limit, a target not in the state the check needs), with the reason.
    /// Never a pass: at a blocking severity the verdict is INCONCLUSIVE.
    Inconclusive,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Error => "ERROR",
            Status::Skip => "SKIP",
            Status::Inconclusive => "INCONCLUSIVE",
        }
    }
}

/// What a target can be asked to do. A check needing one the target lacks is SKIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// Plain HTTP to the base URL (always present).
    Http,
    /// The admin API (a token is known).
    Admin,
    /// Process control: pid for RSS, kill and restart.
    Process,
    /// The target's log directory on this machine.
    LogDir,
    /// The target's SQLite database on this machine.
    Sqlite,
}

impl Capability {
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Http => "http",
            Capability::Admin => "admin",
            Capability::Process => "process",
            Capability::LogDir => "log_dir",
            Capability::Sqlite => "sqlite",
        }
    }
}

/// Why a check could not give PASS or FAIL.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CheckError {
    /// The target lacks something the check needs: SKIP.
    #[error("needs the `{}` capability: {hint}", capability.as_str())]
    Missing {
        capability: Capability,
        hint: String,
    },
    /// The check does not apply here: SKIP.
    #[error("{0}")]
    NotApplicable(String),
    /// The check is about something outside this run (a repository file, when a built-in
    /// policy runs outside the checkout it describes): SKIP that never blocks the verdict.
    #[error("{0}")]
    OutOfScope(String),
    /// The target misbehaved at the transport level (refused, reset, malformed): ERROR.
    #[error("target: {0}")]
    Target(String),
    /// The check's deadline passed: ERROR.
    #[error("deadline of {0:?} exceeded")]
    Deadline(std::time::Duration),
    /// The check's request budget ran out: ERROR.
    #[error("request budget of {0} exhausted")]
    Budget(u64),
    /// A local operation failed (file, command, database): ERROR.
    #[error("{0}")]
    Local(String),
    /// The check ran but could not decide, before it had evidence to show: INCONCLUSIVE.
    #[error("inconclusive: {0}")]
    Inconclusive(String),
}

impl CheckError {
    /// The status this error gives the check.
    pub fn status(&self) -> Status {
        match self {
            CheckError::Missing { .. }
            | CheckError::NotApplicable(_)
            | CheckError::OutOfScope(_) => Status::Skip,
            CheckError::Inconclusive(_) => Status::Inconclusive,
            _ => Status::Error,
        }
    }
}

/// One explained comparison: what was expected and what was observed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Observation {
    /// What was measured, e.g. `accepted in first burst`.
    pub what: String,
    /// The requirement, e.g. `100 ± 5%`.
    pub expected: String,
    /// What the target did, e.g. `100`.
    pub observed: String,
    /// Whether this observation meets the requirement.
    pub ok: bool,
}

impl Observation {
    pub fn new(
        what: impl Into<String>,
        expected: impl Into<String>,
        observed: impl Into<String>,
        ok: bool,
    ) -> Self {
        Observation {
            what: what.into(),
            expected: expected.into(),
            observed: observed.into(),
            ok,
        }
    }
}

/// What a check that ran to the end reports. `status` is PASS when every observation holds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcome {
    /// One line: the gist of what was found.
    pub summary: String,
    /// Each requirement compared with what was observed.
    pub observations: Vec<Observation>,
    /// What was sent to the target, in order (request lines, signals, admin calls).
    pub sent: Vec<String>,
    /// Charts for the HTML report.
    pub charts: Vec<Chart>,
    /// Kind-specific measured data (samples, fitted slope, timeline) for the JSON report.
    pub evidence: serde_json::Value,
    /// Why the evidence cannot decide (see [`Status::Inconclusive`]); `None` when it can.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inconclusive: Option<String>,
}

impl Outcome {
    /// What the observations that failed measured, in order.
    pub fn unmet(&self) -> Vec<&str> {
        self.observations
            .iter()
            .filter(|x| !x.ok)
            .map(|x| x.what.as_str())
            .collect()
    }

    /// A kind's result as the engine settles it: an outcome keeps its own status; an error
    /// becomes the status it gives (ERROR, SKIP, INCONCLUSIVE) with its message as summary.
    pub fn settle(res: Result<Outcome, CheckError>) -> (Status, Outcome) {
        match res {
            Ok(o) => (o.status(), o),
            Err(e) => (
                e.status(),
                Outcome {
                    summary: e.to_string(),
                    ..Outcome::default()
                },
            ),
        }
    }

    /// FAIL when an observation does not hold; otherwise INCONCLUSIVE when the judge said
    /// the evidence cannot decide; PASS when there is at least one observation and all hold.
    pub fn status(&self) -> Status {
        if self.observations.iter().any(|o| !o.ok) {
            Status::Fail
        } else if self.inconclusive.is_some() {
            Status::Inconclusive
        } else if self.observations.is_empty() {
            Status::Fail
        } else {
            Status::Pass
        }
    }

    /// Marks the outcome undecided, with the reason (kept in the summary).
    pub fn undecided(&mut self, reason: impl Into<String>) -> &mut Self {
        let reason = reason.into();
        if !self.summary.is_empty() {
            self.summary.push_str("; ");
        }
        self.summary.push_str("inconclusive: ");
        self.summary.push_str(&reason);
        self.inconclusive = Some(reason);
        self
    }

    /// Appends the unmet requirements (at most three) to the summary, so that a FAIL says
    /// why at a glance in every report format.
    pub fn summarize_unmet(&mut self) {
        let unmet: Vec<&Observation> = self.observations.iter().filter(|o| !o.ok).collect();
        if unmet.is_empty() {
            return;
        }
        let shown: Vec<String> = unmet
            .iter()
            .take(3)
            .map(|o| format!("{}: {} (expected {})", o.what, o.observed, o.expected))
            .collect();
        self.summary.push_str("; not met: ");
        self.summary.push_str(&shown.join("; "));
        if unmet.len() > 3 {
            self.summary
                .push_str(&format!("; and {} more", unmet.len() - 3));
        }
    }

    pub fn observe(&mut self, o: Observation) -> &mut Self {
        self.observations.push(o);
        self
    }
}

/// An operator's answer to a `confirm` step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// The operator looked and attests the statement holds.
    Yes,
    /// The operator looked and says it does not hold.
    No,
    /// Nobody answered (`--no-input`, or no terminal to ask on).
    Unanswered,
}

/// What a `confirm` step records: who answered what, how, and their note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Attestation {
    pub answer: Answer,
    /// Who answered (`--operator`, else the login name).
    pub operator: String,
    /// How: `terminal` (a person typed it), `--yes` (answered for CI: nobody looked),
    /// `--no-input`.
    pub via: String,
    /// The operator's note (the evidence the step asked for), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// When it was answered (RFC 3339, UTC).
    pub at: String,
}

/// Asks the person running an audit to confirm what a check cannot see. `question` is the
/// statement to attest; `evidence` what to attach as the note, if the step asks for any.
/// The future resolves when they have answered (a check's deadline bounds the wait).
pub trait Attestor: Send + Sync {
    fn ask(
        &self,
        question: &str,
        evidence: Option<&str>,
    ) -> std::pin::Pin<Box<dyn Future<Output = Attestation> + Send + '_>>;
}

/// A chart for the HTML report: generic series of (x, y) points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Chart {
    pub title: String,
    pub kind: ChartKind,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChartKind {
    Line,
    Scatter,
    Bars,
    Steps,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(b: bool) -> Observation {
        Observation::new("x", "1", "1", b)
    }

    #[test]
    fn status_follows_observations_and_a_failure_beats_undecided() {
        let mut o = Outcome::default();
        assert_eq!(o.status(), Status::Fail, "nothing observed is no pass");
        o.observe(ok(true));
        assert_eq!(o.status(), Status::Pass);
        o.undecided("interval straddles the limit");
        assert_eq!(o.status(), Status::Inconclusive);
        assert!(
            o.summary.contains("inconclusive: interval straddles"),
            "{}",
            o.summary
        );
        o.observe(ok(false));
        assert_eq!(o.status(), Status::Fail);
        assert_eq!(
            CheckError::Inconclusive("bucket not full".into()).status(),
            Status::Inconclusive
        );
    }
}
