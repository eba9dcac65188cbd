//! `file`: a local file exists (or not), has a mode, contains text or matches a regex.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::checks::{Problems, not_built};
use crate::engine::context::{CheckError, Ctx, Outcome};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Path, relative to the policy file's directory's parent project when relative
    /// (resolved against the working directory first).
    pub path: PathBuf,
    /// Whether the file must exist (default true) or must not.
    #[serde(default = "yes")]
    pub exists: bool,
    /// Required permission bits in octal, e.g. `"0600"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Texts the file must contain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contains: Vec<String>,
    /// Regexes the file must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<String>,
}

fn yes() -> bool {
    true
}

impl Spec {
    pub fn validate(&self, p: &mut Problems) {
        if let Some(m) = &self.mode {
            if u32::from_str_radix(m.trim_start_matches("0o"), 8).is_err() {
                p.error(
                    "/mode",
                    "file/bad-mode",
                    format!("`{m}` is not an octal mode"),
                    "write e.g. \"0644\"",
                );
            }
        }
        for (i, re) in self.matches.iter().enumerate() {
            if let Err(e) = regex::Regex::new(re) {
                p.error(
                    &format!("/matches/{i}"),
                    "policy/bad-regex",
                    format!("invalid regex: {e}"),
                    "",
                );
            }
        }
        if !self.exists
            && (!self.contains.is_empty() || !self.matches.is_empty() || self.mode.is_some())
        {
            p.error(
                "/exists",
                "file/contradiction",
                "a file that must not exist cannot have contents or a mode",
                "remove `contains`, `matches` and `mode`, or set `exists: true`",
            );
        }
    }
}

pub async fn run(_spec: &Spec, _ctx: &Ctx) -> Result<Outcome, CheckError> {
    Err(not_built("file"))
}
