//! `circuit_breaker`: through the admin API, makes a dependency fail; the breaker must open
//! at exactly `threshold` consecutive failures, fast-fail while open, move to half-open after
//! `reset_timeout`, and close after a successful trial; `/status` must report each state.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::checks::{Problems, not_built};
use crate::engine::context::{CheckError, Ctx, Outcome};
use crate::units::Dur;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The guarded dependency (default `feed`).
    #[serde(default = "default_dependency")]
    pub dependency: String,
    /// Consecutive failures that must open the breaker.
    pub threshold: u32,
    /// Time after which an open breaker lets one trial through.
    pub reset_timeout: Dur,
    /// A call while open must be rejected faster than this (default `50ms`).
    #[serde(default = "default_fast_fail")]
    pub fast_fail_below: Dur,
    /// Slack on the reset timeout (default `500ms`).
    #[serde(default = "default_slack")]
    pub reset_slack: Dur,
}

fn default_dependency() -> String {
    "feed".into()
}
fn default_fast_fail() -> Dur {
    Dur::from_millis(50)
}
fn default_slack() -> Dur {
    Dur::from_millis(500)
}

impl Spec {
    pub fn validate(&self, p: &mut Problems) {
        p.positive("/threshold", self.threshold.into(), "threshold");
        if self.threshold > 10_000 {
            p.warning(
                "/threshold",
                "circuit-breaker/huge-threshold",
                format!(
                    "a threshold of {} means the breaker practically never opens",
                    self.threshold
                ),
                "",
            );
        }
        if self.reset_timeout.0.is_zero() {
            p.error(
                "/reset_timeout",
                "circuit-breaker/zero-reset",
                "the reset timeout must be above zero",
                "e.g. `reset_timeout: 2s`",
            );
        }
    }
}

pub async fn run(_spec: &Spec, _ctx: &Ctx) -> Result<Outcome, CheckError> {
    Err(not_built("circuit_breaker"))
}
