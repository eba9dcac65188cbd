//! Stage 2 of loading: `${env:NAME}` and `${env:NAME:-default}` in string scalars, `$${`
//! for a literal `${`. Every value taken from the environment is remembered, so that no
//! message quotes it and every report redacts it.

use std::collections::HashSet;

use serde_json::Value;

use super::Loader;
use crate::policy::codes;
use crate::policy::diag::{Diagnostic, Level};
use crate::secret::Secret;
use crate::yaml::{self, Document};

impl Loader<'_> {
    /// Replaces `${env:NAME}` and `${env:NAME:-default}` in every string scalar; returns the
    /// pointers whose value came from the environment and those naming an unset variable.
    /// Every value taken from the environment joins `self.secrets`.
    pub(super) fn interpolate(&mut self, file: usize, doc: &mut Document) -> Interpolated {
        let mut touched = HashSet::new();
        let mut unset = HashSet::new();
        let mut values = Vec::new();
        let mut problems = Vec::new();
        walk_strings(&mut doc.value, String::new(), &mut |ptr, s| {
            if !s.contains("${") {
                return;
            }
            match interpolate_str(s, &*self.opts.env) {
                Ok((out, used)) => {
                    *s = out;
                    if !used.is_empty() {
                        touched.insert(ptr.to_string());
                    }
                    values.extend(used);
                }
                Err(errs) => problems.extend(errs.into_iter().map(|e| (ptr.to_string(), e))),
            }
        });
        self.secrets.extend(values.into_iter().map(Secret));
        for (ptr, e) in problems {
            let pos = doc.locate(&ptr);
            let path = self.files[file].clone();
            let d = match e {
                InterpError::Missing(name) => {
                    unset.insert(ptr.clone());
                    let mut d = Diagnostic::error(
                        codes::MISSING_ENV,
                        path,
                        Some(pos),
                        format!("environment variable `{name}` is not set"),
                    )
                    .with_hint(format!(
                        "set {name}, or give a default: `${{env:{name}:-value}}`"
                    ));
                    if self.opts.missing_env_warns {
                        d.level = Level::Warning;
                    }
                    d
                }
                InterpError::Syntax(msg) => {
                    Diagnostic::error(codes::BAD_INTERPOLATION, path, Some(pos), msg).with_hint(
                        "write `${env:NAME}` or `${env:NAME:-default}`; `$${` is a literal `${`",
                    )
                }
            };
            self.diags.push(d);
        }
        Interpolated {
            from_env: touched,
            unset,
        }
    }
}

/// What interpolation did to a document, by JSON Pointer.
pub(super) struct Interpolated {
    /// Strings holding a value from the environment: never quoted in a message.
    pub(super) from_env: HashSet<String>,
    /// Strings naming an unset variable with no default: `policy/missing-env` is their one
    /// diagnostic (their text is not a value to judge).
    pub(super) unset: HashSet<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum InterpError {
    Missing(String),
    Syntax(String),
}

/// Calls `f(pointer, string)` on every string scalar.
pub(super) fn walk_strings(v: &mut Value, ptr: String, f: &mut dyn FnMut(&str, &mut String)) {
    match v {
        Value::String(s) => f(&ptr, s),
        Value::Array(a) => {
            for (i, x) in a.iter_mut().enumerate() {
                walk_strings(x, format!("{ptr}/{i}"), f);
            }
        }
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                walk_strings(x, format!("{ptr}/{}", yaml::escape_token(k)), f);
            }
        }
        _ => {}
    }
}

/// Expands `${env:NAME}`, `${env:NAME:-default}` (default when unset or empty) and `$${`
/// (a literal `${`). Other `${…}` text is left alone. Returns the text and the values taken
/// from the environment.
pub(super) fn interpolate_str(
    s: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, Vec<String>), Vec<InterpError>> {
    let mut out = String::with_capacity(s.len());
    let mut errs = Vec::new();
    let mut used = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(body) = tail.strip_prefix("${env:") {
            let Some(end) = body.find('}') else {
                errs.push(InterpError::Syntax(
                    "unterminated `${env:`: missing `}`".into(),
                ));
                return Err(errs);
            };
            let inner = &body[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            let valid = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                errs.push(InterpError::Syntax(format!(
                    "`{name}` is not an environment variable name"
                )));
            } else {
                match (
                    env(name).filter(|v| !(default.is_some() && v.is_empty())),
                    default,
                ) {
                    (Some(v), _) => {
                        out.push_str(&v);
                        used.push(v);
                    }
                    (None, Some(d)) => out.push_str(d),
                    (None, None) => errs.push(InterpError::Missing(name.to_string())),
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    if errs.is_empty() {
        Ok((out, used))
    } else {
        Err(errs)
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("s3cret".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn interpolation() {
        let ok = |s: &str| interpolate_str(s, &env).map(|(s, _)| s);
        assert_eq!(ok("a ${env:TOKEN} b").unwrap(), "a s3cret b");
        assert_eq!(ok("${env:NOPE:-x}").unwrap(), "x");
        assert_eq!(ok("${env:EMPTY:-d}").unwrap(), "d");
        assert_eq!(ok("${env:EMPTY}").unwrap(), "");
        assert_eq!(
            ok("$${env:TOKEN} $5 ${other}").unwrap(),
            "${env:TOKEN} $5 ${other}"
        );
        assert_eq!(
            ok("${env:NOPE}").unwrap_err(),
            vec![InterpError::Missing("NOPE".into())]
        );
        assert!(matches!(
            ok("${env:TOKEN").unwrap_err()[0],
            InterpError::Syntax(_)
        ));
        assert!(matches!(
            ok("${env:1X}").unwrap_err()[0],
            InterpError::Syntax(_)
        ));
        assert_eq!(
            interpolate_str("${env:TOKEN}", &env).unwrap().1,
            vec!["s3cret".to_string()]
        );
        assert!(
            interpolate_str("${env:NOPE:-d}", &env)
                .unwrap()
                .1
                .is_empty()
        );
    }
}
