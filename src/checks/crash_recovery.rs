//! `crash_recovery`: ingests ticks while recording every acknowledgement, takes a snapshot,
//! sends SIGKILL mid-ingest, restarts the target and times its readiness, then requires every
//! acknowledged tick and the last snapshot to be present.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::checks::{Problems, not_built};
use crate::engine::context::{CheckError, Ctx, Outcome};
use crate::units::Dur;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Ticks written before the kill (in batches, continuing until the kill).
    #[serde(default = "default_ticks")]
    pub ticks: u32,
    /// Ticks per ingest request.
    #[serde(default = "default_batch")]
    pub batch: u32,
    /// The restarted service must be ready within this.
    pub ready_within: Dur,
    /// Require the snapshot taken before the kill to be restored (default true).
    #[serde(default = "yes")]
    pub require_snapshot: bool,
}

fn default_ticks() -> u32 {
    2000
}
fn default_batch() -> u32 {
    50
}
fn yes() -> bool {
    true
}

impl Spec {
    pub fn validate(&self, p: &mut Problems) {
        p.positive("/ticks", self.ticks.into(), "ticks");
        p.positive("/batch", self.batch.into(), "batch");
        p.ordered("/batch", self.batch, self.ticks.max(1), "batch vs ticks");
    }
}

pub async fn run(_spec: &Spec, _ctx: &Ctx) -> Result<Outcome, CheckError> {
    Err(not_built("crash_recovery"))
}
