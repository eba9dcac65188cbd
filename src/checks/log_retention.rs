//! `log_retention`: plants back-dated files that match the rotation pattern plus one that
//! does not, triggers a sweep (admin API) or waits for one, then requires expired files
//! gone, recent ones kept, the foreign file untouched, and daily-rotated naming in use.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::checks::{Problems, not_built};
use crate::engine::context::{CheckError, Ctx, Outcome};
use crate::units::Dur;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Files older than this must be deleted (e.g. `7d`).
    pub max_age: Dur,
    /// Name of a rotated file as a chrono format (default `core.log.%Y-%m-%d`).
    #[serde(default = "default_format")]
    pub file_format: String,
    /// How the sweep happens: `admin` (trigger it now) or `wait` (wait up to `wait`).
    #[serde(default)]
    pub trigger: Trigger,
    /// With `trigger: wait`, how long to wait for the service's own sweep.
    #[serde(default = "default_wait")]
    pub wait: Dur,
}

/// How a retention sweep is caused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    #[default]
    Admin,
    Wait,
}

fn default_format() -> String {
    "core.log.%Y-%m-%d".into()
}
fn default_wait() -> Dur {
    Dur::from_secs(60)
}

impl Spec {
    pub fn validate(&self, p: &mut Problems) {
        if self.max_age.0 < std::time::Duration::from_secs(86_400) {
            p.error(
                "/max_age",
                "log-retention/under-a-day",
                format!("{} is shorter than the daily rotation", self.max_age),
                "use whole days, e.g. `7d`",
            );
        }
        let has_date = ["%Y", "%m", "%d"]
            .iter()
            .all(|f| self.file_format.contains(f));
        if !has_date || self.file_format.contains('/') {
            p.error(
                "/file_format",
                "log-retention/bad-format",
                format!("`{}` is not a daily file name format", self.file_format),
                "include %Y, %m and %d and no directory, e.g. `core.log.%Y-%m-%d`",
            );
        }
    }
}

pub async fn run(_spec: &Spec, _ctx: &Ctx) -> Result<Outcome, CheckError> {
    Err(not_built("log_retention"))
}
