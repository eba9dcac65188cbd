//! Secrets (admin tokens, interpolated `${env:…}` values): carried as [`Secret`], never
//! printed in any output.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A secret string (admin tokens): never printed, in any output.
#[derive(Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Replaces every occurrence of known secret values with `***` in text a report shows.
///
/// Values are replaced longest first, so a secret that contains another is hidden whole.
/// Values shorter than [`Redactor::MIN_LEN`] are left alone: replacing every `1` or `on` in a
/// report would make it unreadable and hide nothing worth hiding (such a value is no secret:
/// it is guessed in a few tries).
#[derive(Clone, Default)]
pub struct Redactor {
    /// Distinct values, longest first.
    values: Vec<String>,
}

impl Redactor {
    /// The shortest value redacted.
    pub const MIN_LEN: usize = 4;
    /// What a redacted value becomes.
    pub const MASK: &'static str = "***";

    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a Secret>) -> Self {
        let mut values: Vec<String> = secrets
            .into_iter()
            .map(|s| s.expose().to_string())
            .filter(|v| v.chars().count() >= Self::MIN_LEN)
            .collect();
        values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        values.dedup();
        Redactor { values }
    }

    /// Whether there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `text` with every secret value replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        self.redact_in_place(&mut out);
        out
    }

    /// Redacts `text` in place (no allocation when it holds no secret).
    pub fn redact_in_place(&self, text: &mut String) {
        for v in &self.values {
            if text.contains(v.as_str()) {
                *text = text.replace(v.as_str(), Self::MASK);
            }
        }
    }

    /// Redacts every string (and object key) in a JSON value.
    pub fn redact_json(&self, value: &mut serde_json::Value) {
        use serde_json::Value;
        if self.is_empty() {
            return;
        }
        match value {
            Value::String(s) => self.redact_in_place(s),
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_json(v)),
            Value::Object(map) => {
                let entries = std::mem::take(map);
                for (mut k, mut v) in entries {
                    self.redact_in_place(&mut k);
                    self.redact_json(&mut v);
                    map.insert(k, v);
                }
            }
            _ => {}
        }
    }
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} values)", self.values.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_longest_first_and_skips_short_values() {
        let s = |v: &str| Secret(v.to_string());
        let r = Redactor::new(&[s("abcd"), s("abcdefgh"), s("xy"), s("abcd")]);
        assert_eq!(r.redact("k=abcdefgh; j=abcd; xy"), "k=***; j=***; xy");
        let mut v = serde_json::json!({"sent": ["GET /a?t=abcd"], "abcdefgh": 1, "n": 5});
        r.redact_json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"sent": ["GET /a?t=***"], "***": 1, "n": 5})
        );
        assert!(Redactor::new(&[s("no")]).is_empty());
        assert!(!format!("{r:?}").contains("abcd"));
    }
}
