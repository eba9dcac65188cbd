//! Check kinds: one module per kind, each with its `Spec` (the policy fields), pure
//! validation, and `run` against a [`Ctx`]. The set of kinds is closed and dispatched by
//! `match`; the JSON Schema is generated from the same types.
//!
//! Checks never print, and never panic on what a target does.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::outcome::{CheckError, Outcome};
use crate::target::Ctx;
use crate::units::Dur;

pub mod circuit_breaker;
pub mod command;
pub mod crash_recovery;
pub mod file;
pub mod http;
pub mod load_shedding;
pub mod load_slo;
pub mod log_retention;
pub mod memory_growth;
pub mod metric;
pub mod query_timeout;
pub mod rate_limit;
pub mod sqlite;

/// The kind of a check and its fields.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CheckSpec {
    /// One HTTP request; status, headers, JSON values, body and latency as expected.
    Http(http::Spec),
    /// A Prometheus metric from the target's `/metrics` (optionally the change across a workload).
    Metric(metric::Spec),
    /// A local file exists, has a mode, contains text.
    File(file::Spec),
    /// A local command exits as expected and prints what is expected.
    Command(command::Spec),
    /// A read-only SQLite query returns the expected value.
    Sqlite(sqlite::Spec),
    /// Bursts from one address trip the per-IP limiter; refill and isolation hold.
    RateLimit(rate_limit::Spec),
    /// A query beyond its budget is cut off in time with the timeout status.
    QueryTimeout(query_timeout::Spec),
    /// Injected dependency failures open the breaker at the threshold; it recovers.
    CircuitBreaker(circuit_breaker::Spec),
    /// Concurrency past the bound is shed at once; accepted latency stays bounded.
    LoadShedding(load_shedding::Spec),
    /// RSS does not grow with repeated work (Theil–Sen slope per iteration).
    MemoryGrowth(memory_growth::Spec),
    /// Expired rotated logs are deleted, recent ones and foreign files kept.
    LogRetention(log_retention::Spec),
    /// Acknowledged writes and the last snapshot survive SIGKILL; restart is quick.
    CrashRecovery(crash_recovery::Spec),
    /// Paced open-loop load meets latency, error and throughput thresholds.
    LoadSlo(load_slo::Spec),
}

/// A problem found by pure validation of one check's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// JSON Pointer of the offending field, relative to the check (e.g. `/burst`).
    pub field: String,
    /// Stable diagnostic code, e.g. `rate-limit/tolerance-too-wide`.
    pub code: &'static str,
    pub message: String,
    pub hint: Option<String>,
    /// Warnings do not make a policy invalid.
    pub warning: bool,
}

/// Collects every problem of one check (never stops at the first).
#[derive(Debug, Default)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn error(
        &mut self,
        field: &str,
        code: &'static str,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.0.push(Problem {
            field: field.to_string(),
            code,
            message: message.into(),
            hint: Some(hint.into()).filter(|h: &String| !h.is_empty()),
            warning: false,
        });
    }

    pub fn warning(
        &mut self,
        field: &str,
        code: &'static str,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.0.push(Problem {
            field: field.to_string(),
            code,
            message: message.into(),
            hint: Some(hint.into()).filter(|h: &String| !h.is_empty()),
            warning: true,
        });
    }

    /// Shared rule: `min` must not exceed `max`.
    pub fn ordered<T: PartialOrd + std::fmt::Display>(
        &mut self,
        field: &str,
        min: T,
        max: T,
        what: &str,
    ) {
        if min > max {
            self.error(
                field,
                "policy/min-above-max",
                format!("{what}: minimum {min} is above maximum {max}"),
                "swap the two values",
            );
        }
    }

    /// Shared rule: a count must be positive.
    pub fn positive(&mut self, field: &str, value: u64, what: &str) {
        if value == 0 {
            self.error(
                field,
                "policy/zero",
                format!("{what} must be at least 1"),
                "",
            );
        }
    }
}

/// How a kind is scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exclusivity {
    /// Read-only: may run concurrently with other independent checks.
    Shared,
    /// Disturbs the target (faults, floods, kills): runs alone.
    Exclusive,
}

impl CheckSpec {
    /// The kind's name as written in policies.
    pub fn kind(&self) -> &'static str {
        match self {
            CheckSpec::Http(_) => "http",
            CheckSpec::Metric(_) => "metric",
            CheckSpec::File(_) => "file",
            CheckSpec::Command(_) => "command",
            CheckSpec::Sqlite(_) => "sqlite",
            CheckSpec::RateLimit(_) => "rate_limit",
            CheckSpec::QueryTimeout(_) => "query_timeout",
            CheckSpec::CircuitBreaker(_) => "circuit_breaker",
            CheckSpec::LoadShedding(_) => "load_shedding",
            CheckSpec::MemoryGrowth(_) => "memory_growth",
            CheckSpec::LogRetention(_) => "log_retention",
            CheckSpec::CrashRecovery(_) => "crash_recovery",
            CheckSpec::LoadSlo(_) => "load_slo",
        }
    }

    /// Pure validation of the kind's fields.
    pub fn validate(&self, p: &mut Problems) {
        match self {
            CheckSpec::Http(s) => s.validate(p),
            CheckSpec::Metric(s) => s.validate(p),
            CheckSpec::File(s) => s.validate(p),
            CheckSpec::Command(s) => s.validate(p),
            CheckSpec::Sqlite(s) => s.validate(p),
            CheckSpec::RateLimit(s) => s.validate(p),
            CheckSpec::QueryTimeout(s) => s.validate(p),
            CheckSpec::CircuitBreaker(s) => s.validate(p),
            CheckSpec::LoadShedding(s) => s.validate(p),
            CheckSpec::MemoryGrowth(s) => s.validate(p),
            CheckSpec::LogRetention(s) => s.validate(p),
            CheckSpec::CrashRecovery(s) => s.validate(p),
            CheckSpec::LoadSlo(s) => s.validate(p),
        }
    }

    /// Whether the check disturbs the target.
    pub fn exclusivity(&self) -> Exclusivity {
        match self {
            CheckSpec::Http(_)
            | CheckSpec::Metric(_)
            | CheckSpec::File(_)
            | CheckSpec::Command(_)
            | CheckSpec::Sqlite(_) => Exclusivity::Shared,
            _ => Exclusivity::Exclusive,
        }
    }

    /// Deadline when the policy gives none.
    pub fn default_timeout(&self) -> Dur {
        match self {
            CheckSpec::Http(_)
            | CheckSpec::Metric(_)
            | CheckSpec::File(_)
            | CheckSpec::Sqlite(_) => Dur::from_secs(30),
            CheckSpec::Command(s) => Dur(s.timeout.0 + std::time::Duration::from_secs(5)),
            CheckSpec::LoadSlo(s) => Dur(s.duration.0 * 2 + std::time::Duration::from_secs(30)),
            _ => Dur::from_secs(120),
        }
    }

    /// Request budget when the policy gives none.
    pub fn default_budget(&self) -> u64 {
        match self {
            CheckSpec::Http(_)
            | CheckSpec::File(_)
            | CheckSpec::Command(_)
            | CheckSpec::Sqlite(_) => 1_000,
            CheckSpec::Metric(_) => 100_000,
            CheckSpec::LoadSlo(s) => {
                (s.rate.per_second() * s.duration.0.as_secs_f64() * 1.2) as u64 + 1_000
            }
            _ => 1_000_000,
        }
    }

    /// Runs the check.
    pub async fn run(&self, ctx: &Ctx) -> Result<Outcome, CheckError> {
        match self {
            CheckSpec::Http(s) => http::run(s, ctx).await,
            CheckSpec::Metric(s) => metric::run(s, ctx).await,
            CheckSpec::File(s) => file::run(s, ctx).await,
            CheckSpec::Command(s) => command::run(s, ctx).await,
            CheckSpec::Sqlite(s) => sqlite::run(s, ctx).await,
            CheckSpec::RateLimit(s) => rate_limit::run(s, ctx).await,
            CheckSpec::QueryTimeout(s) => query_timeout::run(s, ctx).await,
            CheckSpec::CircuitBreaker(s) => circuit_breaker::run(s, ctx).await,
            CheckSpec::LoadShedding(s) => load_shedding::run(s, ctx).await,
            CheckSpec::MemoryGrowth(s) => memory_growth::run(s, ctx).await,
            CheckSpec::LogRetention(s) => log_retention::run(s, ctx).await,
            CheckSpec::CrashRecovery(s) => crash_recovery::run(s, ctx).await,
            CheckSpec::LoadSlo(s) => load_slo::run(s, ctx).await,
        }
    }
}
