//! `command`: runs a local command (argv, no shell) with a timeout; checks its exit code and
//! output patterns.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::checks::{Problems, not_built};
use crate::engine::context::{CheckError, Ctx, Outcome};
use crate::units::Dur;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Program and arguments. `{target}` is replaced by the target's base URL, `{data_dir}`
    /// by a spawned target's data directory.
    pub argv: Vec<String>,
    /// Expected exit code (default 0).
    #[serde(default)]
    pub exit_code: i32,
    /// Regex stdout must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_matches: Option<String>,
    /// Regex stderr must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_matches: Option<String>,
    /// Kill the command after this long (default 10s).
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    /// Extra environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Maximum run time to pass (e.g. `5ms` for a status-bar command).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_below: Option<Dur>,
}

fn default_timeout() -> Dur {
    Dur::from_secs(10)
}

impl Spec {
    pub fn validate(&self, p: &mut Problems) {
        if self.argv.is_empty() || self.argv[0].is_empty() {
            p.error(
                "/argv",
                "command/empty-argv",
                "`argv` needs at least the program",
                "e.g. `argv: [preflight, status, --format, tmux]`",
            );
        }
        for (field, re) in [
            ("/stdout_matches", &self.stdout_matches),
            ("/stderr_matches", &self.stderr_matches),
        ] {
            if let Some(re) = re {
                if let Err(e) = regex::Regex::new(re) {
                    p.error(field, "policy/bad-regex", format!("invalid regex: {e}"), "");
                }
            }
        }
    }
}

pub async fn run(_spec: &Spec, _ctx: &Ctx) -> Result<Outcome, CheckError> {
    Err(not_built("command"))
}
