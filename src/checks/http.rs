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
        if let Some(re) = &self.expect.body_matches
            && let Err(e) = regex::Regex::new(re) {
                p.error(
                    "/expect/body_matches",
                    crate::checks::codes::BAD_REGEX,
                    format!("invalid regex: {e}"),
                    "",
                );
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

/// What an `http` run measured: the one response, and the address it was sent from.
#[derive(Debug, Clone)]
pub struct Measurements {
    pub source: std::net::IpAddr,
    pub response: Response,
}

/// Talks to the target: sends the request once.
pub async fn measure(spec: &Spec, ctx: &Ctx) -> Result<Measurements, CheckError> {
    let http = ctx.http()?;
    let headers: Vec<(String, String)> = spec
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let response = http
        .send(&spec.request, spec.body.as_ref(), &headers)
        .await?;
    Ok(Measurements {
        source: http.source(),
        response,
    })
}

/// Judges the response from the measurements alone: pure, no I/O, no clock.
pub fn judge(spec: &Spec, m: &Measurements) -> Outcome {
    let resp = &m.response;
    let mut out = Outcome {
        sent: vec![format!(
            "{} {} from {}",
            spec.request.method, spec.request.path, m.source
        )],
        ..Outcome::default()
    };
    evaluate(&spec.expect, resp, &mut out);
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
    out
}

/// Measures, then judges.
pub async fn run(spec: &Spec, ctx: &Ctx) -> Result<Outcome, CheckError> {
    let m = measure(spec, ctx).await?;
    Ok(judge(spec, &m))
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
        // Every value of a repeated header must meet the requirement, not only the first.
        let values: Vec<String> = resp
            .headers
            .get_all(name.as_str())
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        let syntax = crate::checks::rate_limit::header_syntax(name);
        let re = if pattern.is_empty() {
            None
        } else {
            regex::Regex::new(pattern).ok()
        };
        let value_ok = |v: &String| {
            (pattern.is_empty() || re.as_ref().is_some_and(|re| re.is_match(v)))
                && syntax.is_none_or(|(_, valid)| valid(v))
        };
        let mut expected = if pattern.is_empty() {
            "present".to_string()
        } else {
            format!("matches /{pattern}/")
        };
        if let Some((what, _)) = syntax {
            expected.push_str(&format!(", {what}"));
        }
        if values.len() > 1 {
            expected.push_str(" (every value)");
        }
        let observed = match values.as_slice() {
            [] => "(absent)".to_string(),
            [one] => format!("{one:?}"),
            many => format!("{many:?}"),
        };
        out.observe(Observation::new(
            format!("header {name}"),
            expected,
            observed,
            !values.is_empty() && values.iter().all(value_ok),
        ));
    }
    if !expect.json.is_empty() {
        match json::Doc::parse(&resp.body) {
            Ok(doc) => {
                for (ptr, want) in &expect.json {
                    let got = doc.pointer(ptr);
                    out.observe(Observation::new(
                        format!("JSON {ptr}"),
                        want.to_string(),
                        got.map_or_else(|| "(absent)".to_string(), |v| v.to_string()),
                        got.is_some_and(|g| g.equals(want)),
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

/// A JSON document whose numbers keep their text, so that integers compare exactly
/// (`9007199254740993` is not `…992`, as it would be through `f64`), numbers compare by value
/// at any depth (`[1.0, 5.0]` equals `[1, 5]`), and a number out of `f64`'s range (`1e400`)
/// is one value like any other instead of making the whole body "not JSON".
mod json {
    use serde_json::value::RawValue;

    #[derive(Debug, Clone)]
    pub enum Doc {
        Null,
        Bool(bool),
        /// The number's text as sent.
        Number(String),
        String(String),
        Array(Vec<Doc>),
        /// Members in document order (a repeated key: the last wins, as in `serde_json`).
        Object(Vec<(String, Doc)>),
    }

    impl Doc {
        /// Parses a body. serde_json's raw values skip over numbers without converting them.
        pub fn parse(body: &[u8]) -> Result<Doc, serde_json::Error> {
            let raw: &RawValue = serde_json::from_slice(body)?;
            Doc::from_raw(raw)
        }

        fn from_raw(raw: &RawValue) -> Result<Doc, serde_json::Error> {
            let text = raw.get().trim();
            Ok(match text.as_bytes().first() {
                Some(b'{') => {
                    let members: Members = serde_json::from_str(text)?;
                    Doc::Object(
                        members
                            .0
                            .into_iter()
                            .map(|(k, v)| Ok((k, Doc::from_raw(v)?)))
                            .collect::<Result<_, serde_json::Error>>()?,
                    )
                }
                Some(b'[') => {
                    let items: Vec<&RawValue> = serde_json::from_str(text)?;
                    Doc::Array(
                        items
                            .into_iter()
                            .map(Doc::from_raw)
                            .collect::<Result<_, _>>()?,
                    )
                }
                Some(b'"') => Doc::String(serde_json::from_str(text)?),
                Some(b't') => Doc::Bool(true),
                Some(b'f') => Doc::Bool(false),
                Some(b'n') => Doc::Null,
                _ => Doc::Number(text.to_string()),
            })
        }

        /// From a policy's expected value.
        pub fn from_value(v: &serde_json::Value) -> Doc {
            match v {
                serde_json::Value::Null => Doc::Null,
                serde_json::Value::Bool(b) => Doc::Bool(*b),
                serde_json::Value::Number(n) => Doc::Number(n.to_string()),
                serde_json::Value::String(s) => Doc::String(s.clone()),
                serde_json::Value::Array(a) => Doc::Array(a.iter().map(Doc::from_value).collect()),
                serde_json::Value::Object(o) => Doc::Object(
                    o.iter()
                        .map(|(k, v)| (k.clone(), Doc::from_value(v)))
                        .collect(),
                ),
            }
        }

        /// RFC 6901 JSON Pointer.
        pub fn pointer(&self, ptr: &str) -> Option<&Doc> {
            if ptr.is_empty() {
                return Some(self);
            }
            let rest = ptr.strip_prefix('/')?;
            rest.split('/')
                .map(|t| t.replace("~1", "/").replace("~0", "~"))
                .try_fold(self, |cur, token| match cur {
                    Doc::Object(members) => members
                        .iter()
                        .rev()
                        .find(|(k, _)| *k == token)
                        .map(|(_, v)| v),
                    Doc::Array(items) => {
                        if token.len() > 1 && token.starts_with('0') {
                            return None;
                        }
                        token.parse::<usize>().ok().and_then(|i| items.get(i))
                    }
                    _ => None,
                })
        }

        /// Numbers by value (integers exactly), objects regardless of member order, the rest
        /// structurally.
        pub fn equals(&self, want: &serde_json::Value) -> bool {
            self.same(&Doc::from_value(want))
        }

        fn same(&self, other: &Doc) -> bool {
            match (self, other) {
                (Doc::Null, Doc::Null) => true,
                (Doc::Bool(a), Doc::Bool(b)) => a == b,
                (Doc::String(a), Doc::String(b)) => a == b,
                (Doc::Number(a), Doc::Number(b)) => numbers_equal(a, b),
                (Doc::Array(a), Doc::Array(b)) => {
                    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same(y))
                }
                (Doc::Object(a), Doc::Object(b)) => {
                    let a = dedup(a);
                    let b = dedup(b);
                    a.len() == b.len()
                        && a.iter().all(|(k, v)| {
                            b.iter().find(|(k2, _)| k2 == k).is_some_and(|(_, w)| v.same(w))
                        })
                }
                _ => false,
            }
        }
    }

    /// An object's members in document order, values still raw.
    struct Members<'de>(Vec<(String, &'de RawValue)>);

    impl<'de> serde::Deserialize<'de> for Members<'de> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visit;
            impl<'de> serde::de::Visitor<'de> for Visit {
                type Value = Members<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Self::Value, A::Error> {
                    let mut members = Vec::new();
                    while let Some(entry) = map.next_entry::<String, &'de RawValue>()? {
                        members.push(entry);
                    }
                    Ok(Members(members))
                }
            }
            d.deserialize_map(Visit)
        }
    }

    /// Members with a repeated key reduced to the last (what `pointer` sees).
    fn dedup(members: &[(String, Doc)]) -> Vec<(&String, &Doc)> {
        let mut out: Vec<(&String, &Doc)> = Vec::new();
        for (k, v) in members.iter().rev() {
            if !out.iter().any(|(k2, _)| *k2 == k) {
                out.push((k, v));
            }
        }
        out
    }

    /// A JSON number's exact decimal value: sign, significant digits (no leading or trailing
    /// zeros; empty for zero) and the power of ten of the last digit.
    fn decimal(text: &str) -> Option<(bool, String, i64)> {
        let (neg, rest) = match text.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, text),
        };
        let (mantissa, exp) = match rest.find(['e', 'E']) {
            Some(i) => (&rest[..i], rest[i + 1..].parse::<i64>().ok()?),
            None => (rest, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if int.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let digits = format!("{int}{frac}");
        let mut exp = exp.checked_sub(frac.len() as i64)?;
        let trimmed = digits.trim_start_matches('0');
        let significant = trimmed.trim_end_matches('0');
        exp = exp.checked_add((trimmed.len() - significant.len()) as i64)?;
        if significant.is_empty() {
            return Some((false, String::new(), 0));
        }
        Some((neg, significant.to_string(), exp))
    }

    /// Equal values: exact when both are integers (any size), else exact decimals or, failing
    /// that, the same finite non-zero `f64` (a policy's `0.1` is the double nearest 0.1).
    pub(super) fn numbers_equal(a: &str, b: &str) -> bool {
        let (Some(x), Some(y)) = (decimal(a), decimal(b)) else {
            return a == b;
        };
        if x == y {
            return true;
        }
        let integer = |d: &(bool, String, i64)| d.2 >= 0;
        if integer(&x) && integer(&y) {
            return false;
        }
        match (a.parse::<f64>(), b.parse::<f64>()) {
            (Ok(f), Ok(g)) => f.is_finite() && f != 0.0 && f == g,
            _ => false,
        }
    }

    impl std::fmt::Display for Doc {
        /// Compact, as `serde_json` prints a value; numbers as sent.
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                Doc::Null => f.write_str("null"),
                Doc::Bool(b) => write!(f, "{b}"),
                Doc::Number(n) => f.write_str(n),
                Doc::String(s) => write!(f, "{}", serde_json::Value::String(s.clone())),
                Doc::Array(items) => {
                    f.write_str("[")?;
                    for (i, x) in items.iter().enumerate() {
                        if i > 0 {
                            f.write_str(",")?;
                        }
                        write!(f, "{x}")?;
                    }
                    f.write_str("]")
                }
                Doc::Object(members) => {
                    f.write_str("{")?;
                    for (i, (k, v)) in members.iter().enumerate() {
                        if i > 0 {
                            f.write_str(",")?;
                        }
                        write!(f, "{}:{v}", serde_json::Value::String(k.clone()))?;
                    }
                    f.write_str("}")
                }
            }
        }
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

    fn judged(expect_json: serde_json::Value, r: Response) -> Outcome {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "request": "GET /x", "expect": expect_json
        }))
        .unwrap();
        judge(
            &spec,
            &Measurements {
                source: std::net::IpAddr::from([127, 0, 1, 1]),
                response: r,
            },
        )
    }

    #[test]
    fn judge_reports_status_and_summary() {
        use crate::outcome::Status;
        for (status, want) in [(200, Status::Pass), (503, Status::Fail), (204, Status::Fail)] {
            let o = judged(serde_json::json!({}), resp(status, &[], ""));
            assert_eq!(o.status(), want, "{status}");
            assert!(o.summary.starts_with(&format!("GET /x answered {status}")));
            assert_eq!(o.sent, ["GET /x from 127.0.1.1"]);
        }
    }

    #[test]
    fn json_numbers_compare_by_value_and_integers_exactly() {
        use crate::outcome::Status;
        let body = r#"{"id": 9007199254740993, "pair": [1.0, 5.0], "big": 1e400,
            "nested": {"x": 2.50, "y": [0.1]}, "ok": true, "neg": -0.0}"#;
        for (ptr, want, pass) in [
            ("/id", serde_json::json!(9007199254740993u64), true),
            ("/id", serde_json::json!(9007199254740992u64), false),
            ("/id", serde_json::json!(9007199254740992.0), false),
            ("/pair", serde_json::json!([1, 5]), true),
            ("/pair", serde_json::json!([1, 5, 6]), false),
            ("/nested", serde_json::json!({"y": [0.1], "x": 2.5}), true),
            ("/nested/x", serde_json::json!(2.5), true),
            ("/nested/x", serde_json::json!(2), false),
            ("/ok", serde_json::json!(true), true),
            ("/big", serde_json::json!(1), false),
            ("/neg", serde_json::json!(0), true),
            ("/missing", serde_json::json!(1), false),
        ] {
            let mut expect = serde_json::Map::new();
            expect.insert(ptr.to_string(), want.clone());
            let o = judged(serde_json::json!({"json": expect}), resp(200, &[], body));
            assert_eq!(
                o.status() == Status::Pass,
                pass,
                "{ptr} = {want}: {:#?}",
                o.observations
            );
        }
        let o = judged(
            serde_json::json!({"json": {"/big": 1}}),
            resp(200, &[], body),
        );
        assert_eq!(o.observations[1].observed, "1e400");
        let o = judged(
            serde_json::json!({"json": {"/pair": [1, 5]}}),
            resp(200, &[], body),
        );
        assert_eq!(o.observations[1].observed, "[1.0,5.0]");
    }

    #[test]
    fn number_text_equality() {
        for (a, b, eq) in [
            ("4", "4.0", true),
            ("4", "4e0", true),
            ("400", "4E2", true),
            ("0.1", "0.10", true),
            ("-0", "0", true),
            ("1e400", "1e400", true),
            ("1e400", "1e401", false),
            ("9007199254740993", "9007199254740992", false),
            ("0.1", "0.1000000000000000055511151231257827", true),
            ("1e-400", "0", false),
            ("-1", "1", false),
            ("123456789012345678901234567890", "123456789012345678901234567890.000", true),
        ] {
            assert_eq!(json::numbers_equal(a, b), eq, "{a} vs {b}");
            assert_eq!(json::numbers_equal(b, a), eq, "{b} vs {a}");
        }
    }

    #[test]
    fn every_value_of_a_repeated_header_is_checked() {
        use crate::outcome::Status;
        let two = |a: &'static str, b: &'static str| {
            let mut h = reqwest::header::HeaderMap::new();
            h.append("retry-after", a.parse().unwrap());
            h.append("retry-after", b.parse().unwrap());
            h.append("x-mode", a.parse().unwrap());
            h.append("x-mode", b.parse().unwrap());
            Response {
                status: 200,
                headers: h,
                body: bytes::Bytes::new(),
                elapsed: Duration::from_millis(1),
            }
        };
        for (expect, r, pass) in [
            (serde_json::json!({"retry-after": ""}), resp(200, &[("retry-after", "5")], ""), true),
            (
                serde_json::json!({"retry-after": ""}),
                resp(200, &[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")], ""),
                true,
            ),
            (serde_json::json!({"retry-after": ""}), resp(200, &[("retry-after", "banana")], ""), false),
            (serde_json::json!({"retry-after": ""}), two("5", "banana"), false),
            (serde_json::json!({"retry-after": "^[0-9]+$"}), two("5", "7"), true),
            (serde_json::json!({"x-mode": "^[0-9]$"}), two("5", "77"), false),
            (serde_json::json!({"x-mode": ""}), two("5", "banana"), true),
        ] {
            let o = judged(serde_json::json!({"headers": expect}), r);
            assert_eq!(o.status() == Status::Pass, pass, "{expect}: {:#?}", o.observations);
        }
    }
}
