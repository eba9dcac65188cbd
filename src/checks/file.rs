//! `file`: a local file exists (or not), has a mode, contains text or matches a regex.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::Dur;
use crate::checks::{Code, Exclusivity, Kind, KindSpec, Problems};
use crate::outcome::{CheckError, Observation, Outcome};
use crate::target::Ctx;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Path; a relative one is relative to the directory of the policy file that declares
    /// the check (a built-in policy's to the working directory, as if it sat in the checkout).
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
    /// Set by the loader when a built-in policy declares the check: a missing file is SKIP
    /// (the policy runs outside the checkout it describes), not FAIL.
    #[serde(skip)]
    pub from_builtin: bool,
}

fn yes() -> bool {
    true
}

impl Spec {
    fn check_fields(&self, p: &mut Problems) {
        if let Some(m) = &self.mode
            && u32::from_str_radix(m.trim_start_matches("0o"), 8).is_err() {
                p.error(
                    "/mode",
                    BAD_MODE,
                    format!("`{m}` is not an octal mode"),
                    "write e.g. \"0644\"",
                );
            }
        for (i, re) in self.matches.iter().enumerate() {
            if let Err(e) = regex::Regex::new(re) {
                p.error(
                    &format!("/matches/{i}"),
                    crate::checks::codes::BAD_REGEX,
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
                CONTRADICTION,
                "a file that must not exist cannot have contents or a mode",
                "remove `contains`, `matches` and `mode`, or set `exists: true`",
            );
        }
    }
}

pub async fn run(spec: &Spec, _ctx: &Ctx) -> Result<Outcome, CheckError> {
    let spec = spec.clone();
    tokio::task::spawn_blocking(move || evaluate(&spec))
        .await
        .map_err(|e| CheckError::Local(format!("file check task: {e}")))?
}

/// Reads the file (relative paths against the working directory) and compares.
pub fn evaluate(spec: &Spec) -> Result<Outcome, CheckError> {
    let path = if spec.path.is_absolute() {
        spec.path.clone()
    } else {
        std::env::current_dir()
            .map_err(|e| CheckError::Local(format!("current directory: {e}")))?
            .join(&spec.path)
    };
    let shown = spec.path.display().to_string();
    let mut out = Outcome {
        sent: vec![format!("stat {}", path.display())],
        ..Outcome::default()
    };
    let meta = match std::fs::metadata(&path) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(CheckError::Local(format!("{}: {e}", path.display()))),
    };
    out.observe(Observation::new(
        format!("{shown} exists"),
        if spec.exists { "yes" } else { "no" },
        if meta.is_some() { "yes" } else { "no" },
        meta.is_some() == spec.exists,
    ));
    let Some(meta) = meta else {
        if spec.from_builtin && spec.exists {
            return Err(crate::checks::not_in_checkout(&shown));
        }
        out.summary = format!("{shown} does not exist");
        return Ok(out);
    };
    if !spec.exists {
        out.summary = format!("{shown} exists");
        return Ok(out);
    }
    if let Some(mode) = &spec.mode {
        let want = u32::from_str_radix(mode.trim_start_matches("0o"), 8)
            .map_err(|_| CheckError::Local(format!("`{mode}` is not an octal mode")))?;
        let got = file_mode(&meta);
        out.observe(Observation::new(
            "mode",
            format!("{want:04o}"),
            got.map_or_else(|| "(unknown)".into(), |m| format!("{m:04o}")),
            got == Some(want),
        ));
    }
    if !spec.contains.is_empty() || !spec.matches.is_empty() {
        let bytes = std::fs::read(&path)
            .map_err(|e| CheckError::Local(format!("reading {}: {e}", path.display())))?;
        let text = String::from_utf8_lossy(&bytes);
        for needle in &spec.contains {
            let ok = text.contains(needle.as_str());
            out.observe(Observation::new(
                format!("contains {needle:?}"),
                "yes",
                if ok { "yes" } else { "no" },
                ok,
            ));
        }
        for pattern in &spec.matches {
            let re = regex::Regex::new(pattern)
                .map_err(|e| CheckError::Local(format!("invalid regex {pattern:?}: {e}")))?;
            let found = re.find(&text).map(|m| m.as_str().to_string());
            out.observe(Observation::new(
                format!("matches /{pattern}/"),
                "a match",
                found
                    .clone()
                    .map_or_else(|| "no match".into(), |m| format!("{m:?}")),
                found.is_some(),
            ));
        }
    }
    out.summary = format!(
        "{shown}: {} of {} requirement(s) met",
        out.observations.iter().filter(|o| o.ok).count(),
        out.observations.len()
    );
    out.summarize_unmet();
    Ok(out)
}

#[cfg(unix)]
fn file_mode(meta: &std::fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    Some(meta.permissions().mode() & 0o7777)
}

#[cfg(not(unix))]
fn file_mode(_: &std::fs::Metadata) -> Option<u32> {
    None
}


const BAD_MODE: Code = Code("file/bad-mode");
const CONTRADICTION: Code = Code("file/contradiction");

impl KindSpec for Spec {
    const KIND: Kind = Kind {
        name: "file",
        namespace: "file",
        exclusivity: Exclusivity::Shared,
        codes: &[BAD_MODE, CONTRADICTION],
    };

    fn validate(&self, p: &mut Problems) {
        self.check_fields(p)
    }

    fn default_timeout(&self) -> Dur {
        Dur::from_secs(30)
    }

    fn default_budget(&self) -> u64 {
        1_000
    }

    fn run(&self, ctx: &Ctx) -> impl Future<Output = Result<Outcome, CheckError>> + Send {
        run(self, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Status;

    fn spec(v: serde_json::Value) -> Spec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn exists_mode_contains_matches() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.conf");
        std::fs::write(&p, "retention: 7d\nmax_files: 10\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        }
        let ok = evaluate(&spec(serde_json::json!({
            "path": p, "mode": "0640", "contains": ["retention"], "matches": ["max_files: \\d+"]
        })))
        .unwrap();
        assert_eq!(ok.status(), Status::Pass, "{:#?}", ok.observations);
        let bad = evaluate(&spec(serde_json::json!({
            "path": p, "mode": "0600", "contains": ["nope"]
        })))
        .unwrap();
        assert_eq!(bad.status(), Status::Fail);
        assert_eq!(bad.observations[1].observed, "0640");
    }

    #[test]
    fn must_not_exist() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("absent");
        let o = evaluate(&spec(serde_json::json!({"path": p, "exists": false}))).unwrap();
        assert_eq!(o.status(), Status::Pass);
        let o = evaluate(&spec(serde_json::json!({"path": p}))).unwrap();
        assert_eq!(o.status(), Status::Fail);
        assert_eq!(o.observations[0].observed, "no");
    }
}
