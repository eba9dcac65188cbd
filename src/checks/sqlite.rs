//! `sqlite`: a read-only query against the target's SQLite database (opened read-only),
//! compared with an expected value or with a second query.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::checks::{Problems, not_built};
use crate::engine::context::{CheckError, Ctx, Outcome};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Database file (default: the target's `sqlite`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// A query returning one value (first column of the first row).
    pub query: String,
    /// The value it must return.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<serde_json::Value>,
    /// Or: a second query whose value it must equal (e.g. trigger-maintained counts vs a
    /// real count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals_query: Option<String>,
}

impl Spec {
    pub fn validate(&self, p: &mut Problems) {
        match (&self.equals, &self.equals_query) {
            (None, None) => p.error(
                "",
                "sqlite/no-expectation",
                "give `equals` or `equals_query`",
                "e.g. `equals: 0`",
            ),
            (Some(_), Some(_)) => p.error(
                "/equals_query",
                "sqlite/two-expectations",
                "give either `equals` or `equals_query`, not both",
                "",
            ),
            _ => {}
        }
        for (field, q) in [
            ("/query", Some(&self.query)),
            ("/equals_query", self.equals_query.as_ref()),
        ] {
            if let Some(q) = q {
                let head = q.trim_start().to_ascii_lowercase();
                if !(head.starts_with("select") || head.starts_with("with")) {
                    p.error(
                        field,
                        "sqlite/not-read-only",
                        "only SELECT (or WITH … SELECT) queries are allowed",
                        "the database is opened read-only",
                    );
                }
            }
        }
    }
}

pub async fn run(_spec: &Spec, _ctx: &Ctx) -> Result<Outcome, CheckError> {
    Err(not_built("sqlite"))
}
