//! Diagnostics: a user's mistake in a policy, with a stable code, `file:line:col`, the
//! message and a hint.

use std::path::PathBuf;

use serde::Serialize;

use crate::checks::Code;
use crate::yaml::Pos;

/// Error or warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Error,
    Warning,
}

/// One problem in a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub level: Level,
    /// Stable, kebab-case, namespaced (`policy/schema-violation`), documented in
    /// `docs/diagnostics.md`.
    pub code: String,
    pub message: String,
    pub file: PathBuf,
    /// Position in `file`; `None` when the problem is the file as a whole (unreadable).
    pub pos: Option<Pos>,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn error(
        code: Code,
        file: impl Into<PathBuf>,
        pos: Option<Pos>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            level: Level::Error,
            code: code.as_str().to_string(),
            message: message.into(),
            file: file.into(),
            pos,
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.level == Level::Error
    }
}
