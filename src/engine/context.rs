//! What a check gets to run with ([`Ctx`]) and what it gives back ([`Outcome`]).
//!
//! A check never prints and never panics on what a target does: transport failures and
//! timeouts become [`CheckError`], which the engine turns into ERROR (or SKIP when a
//! capability is missing).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use tokio::time::Instant;

use crate::engine::target::Target;
use crate::report::Chart;

/// Result of one evaluated check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Pass,
    Fail,
    /// Could not be evaluated: target down, deadline, capability missing at run time.
    Error,
    /// Not applicable, with the reason.
    Skip,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Error => "ERROR",
            Status::Skip => "SKIP",
        }
    }
}

/// What a target can be asked to do. A check needing one the target lacks is SKIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema)]
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
}

impl CheckError {
    /// The status this error gives the check.
    pub fn status(&self) -> Status {
        match self {
            CheckError::Missing { .. } | CheckError::NotApplicable(_) => Status::Skip,
            _ => Status::Error,
        }
    }
}

/// One explained comparison: what was expected and what was observed.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
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
}

impl Outcome {
    /// PASS when there is at least one observation and all hold; FAIL otherwise.
    pub fn status(&self) -> Status {
        if !self.observations.is_empty() && self.observations.iter().all(|o| o.ok) {
            Status::Pass
        } else {
            Status::Fail
        }
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

/// Counts requests against a check's budget; shared by all tasks of one check.
#[derive(Debug, Clone)]
pub struct Budget {
    limit: u64,
    used: Arc<AtomicU64>,
}

impl Budget {
    pub fn new(limit: u64) -> Self {
        Budget {
            limit,
            used: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Takes `n` requests from the budget, or fails when it would exceed it.
    pub fn take(&self, n: u64) -> Result<(), CheckError> {
        let before = self.used.fetch_add(n, Ordering::Relaxed);
        if before + n > self.limit {
            Err(CheckError::Budget(self.limit))
        } else {
            Ok(())
        }
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed).min(self.limit)
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }
}

/// A sink for progress messages of a long check (rendered by the CLI, e.g. with indicatif).
pub type ProgressFn = Arc<dyn Fn(&str) + Send + Sync>;

/// Everything a check runs with.
#[derive(Clone)]
pub struct Ctx {
    /// The service under test.
    pub target: Arc<Target>,
    /// This check's own client source address in 127.0.0.0/8 (per-check isolation).
    pub source: IpAddr,
    /// Further addresses this check may use (e.g. the rate-limit check's second client, a
    /// flood spread over many clients). Disjoint from every other check's.
    pub extra_sources: Vec<IpAddr>,
    /// When the check must have finished.
    pub deadline: Instant,
    /// Request budget.
    pub budget: Budget,
    /// Directory of the policy file, for relative paths.
    pub policy_dir: PathBuf,
    /// Progress reporting.
    pub progress: ProgressFn,
}

impl Ctx {
    /// Time left before the deadline; an error once it has passed.
    pub fn remaining(&self) -> Result<std::time::Duration, CheckError> {
        let now = Instant::now();
        if now >= self.deadline {
            Err(CheckError::Deadline(std::time::Duration::ZERO))
        } else {
            Ok(self.deadline - now)
        }
    }

    /// Reports progress (`"build 1200/3000"`).
    pub fn progress(&self, msg: &str) {
        (self.progress)(msg)
    }

    /// Fails with SKIP unless the target has `cap`.
    pub fn require(&self, cap: Capability) -> Result<(), CheckError> {
        if self.target.has(cap) {
            Ok(())
        } else {
            Err(CheckError::Missing {
                capability: cap,
                hint: self.target.missing_hint(cap),
            })
        }
    }
}
