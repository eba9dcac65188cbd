//! `memory_growth`: drives a workload request `iterations` times (after a warm-up), samples
//! the target's RSS, fits a robust Theil–Sen slope and fails when the growth per iteration
//! exceeds the limit.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::checks::{Problems, not_built};
use crate::engine::context::{CheckError, Ctx, Outcome};
use crate::units::{RequestLine, Size};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The workload, e.g. `POST /v1/graph/build`.
    pub request: RequestLine,
    /// JSON body of the workload request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
    /// Measured iterations.
    pub iterations: u32,
    /// Iterations before measuring (allocator and caches settle).
    #[serde(default = "default_warmup")]
    pub warmup: u32,
    /// Take an RSS sample every this many iterations (default: iterations / 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_every: Option<u32>,
    /// Largest acceptable growth per iteration, e.g. `256B`.
    pub max_growth_per_iteration: Size,
    /// Where RSS comes from: `process` (local pid) or `metric`
    /// (`process_resident_memory_bytes`); default: process when available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<RssSource>,
    /// Concurrent workload requests (default 1).
    #[serde(default = "one")]
    pub concurrency: u32,
}

/// Source of RSS samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RssSource {
    Process,
    Metric,
}

fn default_warmup() -> u32 {
    50
}
fn one() -> u32 {
    1
}

impl Spec {
    pub fn validate(&self, p: &mut Problems) {
        if self.iterations < 20 {
            p.error(
                "/iterations",
                "memory-growth/too-few",
                format!("{} iterations are too few to fit a slope", self.iterations),
                "use at least 20 (hundreds or thousands to see small leaks)",
            );
        }
        if let Some(e) = self.sample_every {
            p.positive("/sample_every", e.into(), "sample_every");
            if e > 0 && self.iterations / e < 10 {
                p.error(
                    "/sample_every",
                    "memory-growth/too-few-samples",
                    format!(
                        "sampling every {e} of {} iterations gives fewer than 10 samples",
                        self.iterations
                    ),
                    "sample more often",
                );
            }
        }
        p.positive("/concurrency", self.concurrency.into(), "concurrency");
    }
}

pub async fn run(_spec: &Spec, _ctx: &Ctx) -> Result<Outcome, CheckError> {
    Err(not_built("memory_growth"))
}
