//! `http`: one request; status, headers, JSON Pointer values, body regex and latency as
//! expected. Combine with `retry` to wait until a condition is met.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::checks::{Problems, not_built};
use crate::engine::context::{CheckError, Ctx, Outcome};
use crate::units::{Dur, RequestLine};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The request, e.g. `GET /healthz`.
    pub request: RequestLine,
    /// Extra request headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// JSON request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
    /// What the response must look like.
    #[serde(default)]
    pub expect: Expect,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Expected status code, or a list of accepted codes (default 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusSet>,
    /// Response headers that must be present, each matching a regex (`""` = any value).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// JSON Pointer → expected value (e.g. `/detectors/instances: 4`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub json: BTreeMap<String, serde_json::Value>,
    /// Regex the body must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_matches: Option<String>,
    /// Maximum latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_below: Option<Dur>,
}

/// One status code or several.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum StatusSet {
    One(u16),
    Any(Vec<u16>),
}

impl StatusSet {
    pub fn contains(&self, s: u16) -> bool {
        match self {
            StatusSet::One(x) => *x == s,
            StatusSet::Any(v) => v.contains(&s),
        }
    }
}

impl Spec {
    pub fn validate(&self, p: &mut Problems) {
        for ptr in self.expect.json.keys() {
            if !(ptr.is_empty() || ptr.starts_with('/')) {
                p.error(
                    &format!("/expect/json/{}", crate::yaml::escape_token(ptr)),
                    "http/bad-json-pointer",
                    format!("`{ptr}` is not a JSON Pointer"),
                    "JSON Pointers start with `/`, e.g. `/detectors/instances`",
                );
            }
        }
        if let Some(re) = &self.expect.body_matches {
            if let Err(e) = regex::Regex::new(re) {
                p.error(
                    "/expect/body_matches",
                    "policy/bad-regex",
                    format!("invalid regex: {e}"),
                    "",
                );
            }
        }
        for (name, re) in &self.expect.headers {
            if let Err(e) = regex::Regex::new(re) {
                p.error(
                    &format!("/expect/headers/{}", crate::yaml::escape_token(name)),
                    "policy/bad-regex",
                    format!("invalid regex: {e}"),
                    "",
                );
            }
        }
        let codes: Vec<u16> = match &self.expect.status {
            Some(StatusSet::One(c)) => vec![*c],
            Some(StatusSet::Any(v)) => v.clone(),
            None => vec![],
        };
        for c in codes {
            if !(100..=599).contains(&c) {
                p.error(
                    "/expect/status",
                    "http/bad-status",
                    format!("{c} is not an HTTP status code"),
                    "use a code from 100 to 599",
                );
            }
        }
    }
}

pub async fn run(_spec: &Spec, _ctx: &Ctx) -> Result<Outcome, CheckError> {
    Err(not_built("http"))
}
