//! `load_shedding`: holds more requests in flight than the bound (slowed by an injected
//! delay); the excess must get the shed status quickly, and the accepted requests' p99 stay
//! under the bound.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::checks::{Problems, not_built};
use crate::engine::context::{CheckError, Ctx, Outcome};
use crate::units::{Dur, RequestLine};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The flooded request (default `GET /v1/correlations?market=m1&window=1h`).
    #[serde(default = "default_request")]
    pub request: RequestLine,
    /// The service's concurrency bound.
    pub max_inflight: u32,
    /// Concurrent requests sent (default 3 × max_inflight).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Delay injected on the route through the admin API so requests stay in flight
    /// (default `300ms`; `0s` to inject nothing).
    #[serde(default = "default_delay")]
    pub delay: Dur,
    /// Status of a shed request (default 503).
    #[serde(default = "default_status")]
    pub status: u16,
    /// A shed request must be answered faster than this (default `100ms`).
    #[serde(default = "default_shed_latency")]
    pub shed_latency_below: Dur,
    /// The accepted requests' p99 must stay under this.
    pub accepted_p99_below: Dur,
}

fn default_request() -> RequestLine {
    RequestLine::get("/v1/correlations?market=m1&window=1h")
}
fn default_delay() -> Dur {
    Dur::from_millis(300)
}
fn default_status() -> u16 {
    503
}
fn default_shed_latency() -> Dur {
    Dur::from_millis(100)
}

impl Spec {
    pub fn validate(&self, p: &mut Problems) {
        p.positive("/max_inflight", self.max_inflight.into(), "max_inflight");
        if let Some(c) = self.concurrency {
            if c <= self.max_inflight {
                p.error(
                    "/concurrency",
                    "load-shedding/no-excess",
                    format!(
                        "concurrency {c} does not exceed the bound {}",
                        self.max_inflight
                    ),
                    "send more requests than the bound, e.g. 3×",
                );
            }
            if c > 4096 {
                p.error(
                    "/concurrency",
                    "load-shedding/too-many",
                    format!("concurrency {c} is above preflight's limit of 4096"),
                    "",
                );
            }
        }
    }
}

pub async fn run(_spec: &Spec, _ctx: &Ctx) -> Result<Outcome, CheckError> {
    Err(not_built("load_shedding"))
}
