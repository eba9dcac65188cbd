//! `load_slo`: paced open-loop load at `rate` for `duration` (latency measured from each
//! request's intended start, so coordinated omission cannot hide stalls), then thresholds
//! such as `p99 < 50ms`, `errors < 0.1%`, `rps >= 95%` (of the rate).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::checks::{Problems, not_built};
use crate::engine::context::{CheckError, Ctx, Outcome};
use crate::units::{Dur, Rate, RequestLine};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub request: RequestLine,
    /// JSON body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
    /// Offered load, e.g. `200/s`.
    pub rate: Rate,
    /// How long, e.g. `10s`.
    pub duration: Dur,
    /// Connections (default 16).
    #[serde(default = "default_connections")]
    pub connections: u32,
    /// Spread the load over this many client addresses (default 1), e.g. to stay under a
    /// per-IP limit.
    #[serde(default = "one")]
    pub sources: u32,
    /// Thresholds: `p50|p90|p99|p999|max|mean < DURATION`, `errors < PERCENT`,
    /// `rps >= PERCENT` (of the offered rate) or `rps >= NUMBER`.
    pub thresholds: Vec<String>,
}

fn default_connections() -> u32 {
    16
}
fn one() -> u32 {
    1
}

impl Spec {
    pub fn validate(&self, p: &mut Problems) {
        if self.rate.per_second() <= 0.0 {
            p.error(
                "/rate",
                "load-slo/zero-rate",
                "the rate must be above zero",
                "e.g. `rate: 200/s`",
            );
        }
        if self.duration.0.is_zero() {
            p.error(
                "/duration",
                "load-slo/zero-duration",
                "the duration must be above zero",
                "e.g. `duration: 10s`",
            );
        }
        p.positive("/connections", self.connections.into(), "connections");
        p.positive("/sources", self.sources.into(), "sources");
        if self.thresholds.is_empty() {
            p.error(
                "/thresholds",
                "load-slo/no-thresholds",
                "give at least one threshold",
                "e.g. `thresholds: [\"p99 < 50ms\", \"errors < 0.1%\"]`",
            );
        }
    }
}

pub async fn run(_spec: &Spec, _ctx: &Ctx) -> Result<Outcome, CheckError> {
    Err(not_built("load_slo"))
}
