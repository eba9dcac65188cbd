//! Loading policies: read → YAML with positions → typed model → semantic validation, every
//! problem collected as a [`Diagnostic`] before reporting.

use std::path::{Path, PathBuf};

use crate::checks::Problems;
use crate::policy::diag::Diagnostic;
use crate::policy::model::Policy;

/// A loaded, valid policy (several files are merged in order).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub policy: Policy,
    /// Every file read, in order (includes too).
    pub files: Vec<PathBuf>,
    /// Warnings (a loaded policy has no errors).
    pub warnings: Vec<Diagnostic>,
}

/// Loads and validates policy files. `Err` holds every problem found (at least one error).
pub fn load(paths: &[PathBuf]) -> Result<Loaded, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let mut merged: Option<Policy> = None;
    for path in paths {
        if let Some(p) = load_one(path, &mut diags) {
            match &mut merged {
                None => merged = Some(p),
                Some(m) => m.checks.extend(p.checks),
            }
        }
    }
    if diags.iter().any(Diagnostic::is_error) {
        return Err(diags);
    }
    match merged {
        Some(policy) => Ok(Loaded {
            policy,
            files: paths.to_vec(),
            warnings: diags,
        }),
        None => Err(vec![Diagnostic::error(
            "policy/no-files",
            "",
            None,
            "no policy file given",
        )]),
    }
}

fn load_one(path: &Path, diags: &mut Vec<Diagnostic>) -> Option<Policy> {
    let src = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) => {
            diags.push(Diagnostic::error(
                "policy/unreadable",
                path,
                None,
                format!("cannot read: {e}"),
            ));
            return None;
        }
    };
    let doc = match crate::yaml::parse(&src) {
        Ok(d) => d,
        Err(e) => {
            diags.push(Diagnostic::error(
                "policy/yaml-syntax",
                path,
                Some(e.pos),
                e.message,
            ));
            return None;
        }
    };
    let policy: Policy = match serde_json::from_value(doc.value.clone()) {
        Ok(p) => p,
        Err(e) => {
            diags.push(Diagnostic::error(
                "policy/invalid",
                path,
                None,
                e.to_string(),
            ));
            return None;
        }
    };
    for (i, check) in policy.checks.iter().enumerate() {
        let mut problems = Problems::default();
        check.spec.validate(&mut problems);
        for pr in problems.0 {
            let pointer = format!("/checks/{i}{}", pr.field);
            let mut d = Diagnostic::error(pr.code, path, Some(doc.locate(&pointer)), pr.message);
            if pr.warning {
                d.level = crate::policy::diag::Level::Warning;
            }
            d.hint = pr.hint;
            diags.push(d);
        }
    }
    Some(policy)
}
