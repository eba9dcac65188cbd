//! `http`: one request; status, headers, JSON Pointer values, body regex and latency as
//! expected. Combine with `retry` to wait until a condition is met.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::checks::{Code, Exclusivity, Kind, KindSpec, Problems};
use crate::outcome::{CheckError, Observation, Outcome};
use crate::probe::http::Response;
use crate::target::Ctx;
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
    fn check_fields(&self, p: &mut Problems) {
        for ptr in self.expect.json.keys() {
            if !(ptr.is_empty() || ptr.starts_with('/')) {
                p.error(
                    &format!("/expect/json/{}", crate::yaml::escape_token(ptr)),
                    BAD_JSON_POINTER,
                    format!("`{ptr}` is not a JSON Pointer"),
                    "JSON Pointers start with `/`, e.g. `/detectors/instances`",
                );
            }
        }
        if let Some(re) = &self.expect.body_matches {
            if let Err(e) = regex::Regex::new(re) {
                p.error(
                    "/expect/body_matches",
                    crate::checks::codes::BAD_REGEX,
                    format!("invalid regex: {e}"),
                    "",
                );
            }
        }
        for (name, re) in &self.expect.headers {
            if let Err(e) = regex::Regex::new(re) {
                p.error(
                    &format!("/expect/headers/{}", crate::yaml::escape_token(name)),
                    crate::checks::codes::BAD_REGEX,
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
                    BAD_STATUS,
                    format!("{c} is not an HTTP status code"),
                    "use a code from 100 to 599",
                );
            }
        }
    }
}

pub async fn run(spec: &Spec, ctx: &Ctx) -> Result<Outcome, CheckError> {
    let http = ctx.http()?;
    let headers: Vec<(String, String)> = spec
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let resp = http
        .send(&spec.request, spec.body.as_ref(), &headers)
        .await?;
    let mut out = Outcome {
        sent: vec![format!(
            "{} {} from {}",
            spec.request.method,
            spec.request.path,
            http.source()
        )],
        ..Outcome::default()
    };
    evaluate(&spec.expect, &resp, &mut out);
    out.summary = format!(
        "{} {} answered {} in {:.1} ms",
        spec.request.method,
        spec.request.path,
        resp.status,
        resp.elapsed.as_secs_f64() * 1e3
    );
    out.summarize_unmet();
    out.evidence = serde_json::json!({
        "status": resp.status,
        "latency_ms": resp.elapsed.as_secs_f64() * 1e3,
        "body_bytes": resp.body.len(),
    });
    Ok(out)
}

/// Compares a response with the expectations, one observation per requirement.
pub fn evaluate(expect: &Expect, resp: &Response, out: &mut Outcome) {
    let status_expected = match &expect.status {
        None => "200".to_string(),
        Some(StatusSet::One(c)) => c.to_string(),
        Some(StatusSet::Any(v)) => format!(
            "one of {}",
            v.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
        ),
    };
    let status_ok = expect
        .status
        .as_ref()
        .map_or(resp.status == 200, |s| s.contains(resp.status));
    out.observe(Observation::new(
        "status",
        status_expected,
        resp.status.to_string(),
        status_ok,
    ));
    for (name, pattern) in &expect.headers {
        let value = resp.header(name);
        let (expected, ok) = if pattern.is_empty() {
            ("present".to_string(), value.is_some())
        } else {
            let ok = match (regex::Regex::new(pattern), value) {
                (Ok(re), Some(v)) => re.is_match(v),
                _ => false,
            };
            (format!("matches /{pattern}/"), ok)
        };
        out.observe(Observation::new(
            format!("header {name}"),
            expected,
            value.map_or_else(|| "(absent)".to_string(), |v| format!("{v:?}")),
            ok,
        ));
    }
    if !expect.json.is_empty() {
        match serde_json::from_slice::<serde_json::Value>(&resp.body) {
            Ok(doc) => {
                for (ptr, want) in &expect.json {
                    let got = doc.pointer(ptr);
                    out.observe(Observation::new(
                        format!("JSON {ptr}"),
                        want.to_string(),
                        got.map_or_else(|| "(absent)".to_string(), |v| v.to_string()),
                        got.is_some_and(|g| json_equal(g, want)),
                    ));
                }
            }
            Err(e) => {
                out.observe(Observation::new(
                    "JSON body",
                    "a JSON document",
                    format!("not JSON ({e}): {}", snippet(&resp.text())),
                    false,
                ));
            }
        }
    }
    if let Some(pattern) = &expect.body_matches {
        let text = resp.text();
        let ok = regex::Regex::new(pattern).is_ok_and(|re| re.is_match(&text));
        out.observe(Observation::new(
            "body",
            format!("matches /{pattern}/"),
            snippet(&text),
            ok,
        ));
    }
    if let Some(limit) = expect.latency_below {
        out.observe(Observation::new(
            "latency",
            format!("< {limit}"),
            format!("{:.1} ms", resp.elapsed.as_secs_f64() * 1e3),
            resp.elapsed < limit.get(),
        ));
    }
}

/// Numbers compare by value (`4` equals `4.0`); everything else structurally.
fn json_equal(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn snippet(text: &str) -> String {
    const MAX: usize = 200;
    let mut s: String = text.chars().take(MAX).collect();
    if text.chars().count() > MAX {
        s.push('…');
    }
    format!("{s:?}")
}


const BAD_JSON_POINTER: Code = Code("http/bad-json-pointer");
const BAD_STATUS: Code = Code("http/bad-status");

impl KindSpec for Spec {
    const KIND: Kind = Kind {
        name: "http",
        namespace: "http",
        exclusivity: Exclusivity::Shared,
        codes: &[BAD_JSON_POINTER, BAD_STATUS],
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
    use std::time::Duration;

    fn resp(status: u16, headers: &[(&'static str, &'static str)], body: &str) -> Response {
        let mut h = reqwest::header::HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, v.parse().unwrap());
        }
        Response {
            status,
            headers: h,
            body: bytes::Bytes::from(body.to_string()),
            elapsed: Duration::from_millis(12),
        }
    }

    fn expect(yaml: serde_json::Value) -> Expect {
        serde_json::from_value(yaml).unwrap()
    }

    #[test]
    fn all_expectations_met() {
        let e = expect(serde_json::json!({
            "status": [200, 204],
            "headers": {"content-type": "json", "x-id": ""},
            "json": {"/detectors/instances": 4, "/ready": true},
            "body_matches": "instances",
            "latency_below": "50ms"
        }));
        let r = resp(
            200,
            &[("content-type", "application/json"), ("x-id", "7")],
            r#"{"detectors":{"instances":4.0},"ready":true}"#,
        );
        let mut out = Outcome::default();
        evaluate(&e, &r, &mut out);
        assert_eq!(out.observations.len(), 7);
        assert!(
            out.observations.iter().all(|o| o.ok),
            "{:#?}",
            out.observations
        );
    }

    #[test]
    fn each_miss_is_explained() {
        let e = expect(serde_json::json!({
            "headers": {"retry-after": ""},
            "json": {"/detectors/instances": 4},
            "latency_below": "5ms"
        }));
        let r = resp(503, &[], r#"{"detectors":{"instances":9}}"#);
        let mut out = Outcome::default();
        evaluate(&e, &r, &mut out);
        let bad: Vec<_> = out.observations.iter().filter(|o| !o.ok).collect();
        assert_eq!(bad.len(), 4, "{bad:#?}");
        assert_eq!(bad[0].expected, "200");
        assert_eq!(bad[0].observed, "503");
        assert_eq!(bad[1].observed, "(absent)");
        assert_eq!(bad[2].observed, "9");
        assert_eq!(out.status(), crate::outcome::Status::Fail);
    }

    #[test]
    fn a_non_json_body_fails_json_expectations() {
        let e = expect(serde_json::json!({"json": {"/a": 1}}));
        let mut out = Outcome::default();
        evaluate(&e, &resp(200, &[], "<html>"), &mut out);
        assert!(!out.observations[1].ok);
        assert!(out.observations[1].observed.contains("not JSON"));
    }
}
