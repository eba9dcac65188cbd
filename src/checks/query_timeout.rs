//! `query_timeout`: makes the target run a query beyond its budget (admin slow-query
//! injection, or the request as given) and requires the answer within `budget + margin`
//! with the timeout status and code, and the timeout counter to rise.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::checks::{Problems, not_built};
use crate::engine::context::{CheckError, Ctx, Outcome};
use crate::units::{Dur, RequestLine};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The query request (default `GET /v1/correlations?market=m1&window=1h`).
    #[serde(default = "default_request")]
    pub request: RequestLine,
    /// The service's query budget, e.g. `50ms`.
    pub budget: Dur,
    /// Allowed overhead on top of the budget (default `100ms`: HTTP and scheduling).
    #[serde(default = "default_margin")]
    pub margin: Dur,
    /// Status of a timed-out query (default 503).
    #[serde(default = "default_status")]
    pub status: u16,
    /// Stable error code expected at `/error/code` of the body (default `HB-Q-TIMEOUT`).
    #[serde(default = "default_code")]
    pub code: String,
    /// Make the query slow through the admin API (`slow_query` fault; default true).
    #[serde(default = "yes")]
    pub inject: bool,
    /// Counter that must rise (default `query_timeouts_total`; empty to skip).
    #[serde(default = "default_counter")]
    pub counter: String,
}

fn default_request() -> RequestLine {
    RequestLine::get("/v1/correlations?market=m1&window=1h")
}
fn default_margin() -> Dur {
    Dur::from_millis(100)
}
fn default_status() -> u16 {
    503
}
fn default_code() -> String {
    "HB-Q-TIMEOUT".into()
}
fn yes() -> bool {
    true
}
fn default_counter() -> String {
    "query_timeouts_total".into()
}

impl Spec {
    pub fn validate(&self, p: &mut Problems) {
        if self.budget.0.is_zero() {
            p.error(
                "/budget",
                "query-timeout/zero-budget",
                "the budget must be above zero",
                "e.g. `budget: 50ms`",
            );
        }
        if self.margin.0 > self.budget.0 * 20 && !self.budget.0.is_zero() {
            p.warning(
                "/margin",
                "query-timeout/wide-margin",
                format!(
                    "a margin of {} dwarfs the {} budget",
                    self.margin, self.budget
                ),
                "a margin of 2× the budget is usually enough",
            );
        }
    }
}

pub async fn run(_spec: &Spec, _ctx: &Ctx) -> Result<Outcome, CheckError> {
    Err(not_built("query_timeout"))
}
