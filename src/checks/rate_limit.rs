//! `rate_limit`: a burst of `burst + extra` requests from one source address; the accepted
//! count must be within tolerance of `burst`, the rest rejected with `status` (and the
//! headers the policy lists); after `wait`, about `refill × wait` more are accepted; a second
//! address is served throughout. Judges any HTTP limiter from the stated parameters.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::checks::{Problems, not_built};
use crate::engine::context::{CheckError, Ctx, Outcome};
use crate::units::{Dur, Percent, Rate, RequestLine};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The limited request.
    pub request: RequestLine,
    /// Bucket size: requests accepted at once from a fresh client.
    pub burst: u32,
    /// Refill rate, e.g. `10/s`.
    pub refill: Rate,
    /// Allowed deviation of accepted counts (default `5%`, at least ±1 request).
    #[serde(default = "default_tolerance")]
    pub tolerance: Percent,
    /// Extra requests past the burst (default: max(10, burst/5)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<u32>,
    /// Pause before the second burst to measure refill (default `2s`).
    #[serde(default = "default_wait")]
    pub wait: Dur,
    /// Status of a rejection (default 429).
    #[serde(default = "default_status")]
    pub status: u16,
    /// Headers every rejection must carry, e.g. `[Retry-After, RateLimit-Remaining]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub require_headers: Vec<String>,
    /// Optionally: idle clients are forgotten (the gauge falls) within this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_cleanup: Option<IdleCleanup>,
}

/// Idle-client cleanup, observed through a gauge.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdleCleanup {
    /// Gauge of tracked clients (default `ratelimit_tracked_clients`).
    #[serde(default = "default_gauge")]
    pub metric: String,
    /// How long to wait for it to fall.
    pub within: Dur,
}

fn default_tolerance() -> Percent {
    Percent(0.05)
}
fn default_wait() -> Dur {
    Dur::from_secs(2)
}
fn default_status() -> u16 {
    429
}
fn default_gauge() -> String {
    "ratelimit_tracked_clients".into()
}

impl Spec {
    pub fn validate(&self, p: &mut Problems) {
        p.positive("/burst", self.burst.into(), "burst");
        if self.refill.per_second() <= 0.0 {
            p.error(
                "/refill",
                "rate-limit/zero-refill",
                "refill must be above zero",
                "e.g. `refill: 10/s`",
            );
        }
        if self.tolerance.fraction() > 0.5 {
            p.error(
                "/tolerance",
                "rate-limit/tolerance-too-wide",
                format!(
                    "a tolerance of {} cannot tell a working limiter from a broken one",
                    self.tolerance
                ),
                "use 50% or less (5% is typical)",
            );
        }
        if !(400..=599).contains(&self.status) {
            p.error(
                "/status",
                "rate-limit/bad-status",
                format!("{} is not an error status", self.status),
                "rejections are usually 429",
            );
        }
        if self.wait.0.is_zero() {
            p.error(
                "/wait",
                "rate-limit/zero-wait",
                "`wait` must be above zero to measure the refill",
                "e.g. `wait: 2s`",
            );
        }
    }
}

pub async fn run(_spec: &Spec, _ctx: &Ctx) -> Result<Outcome, CheckError> {
    Err(not_built("rate_limit"))
}
