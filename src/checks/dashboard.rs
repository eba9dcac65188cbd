//! `dashboard`: a Grafana dashboard is proven, not grepped. Every panel's Prometheus query
//! must be valid PromQL once the dashboard's variables are substituted, the metrics the
//! policy names must be charted (read from the queries' selectors, not from substrings), and
//! where a Prometheus server is configured every query is evaluated there and must return at
//! least one series.
//!
//! Measuring reads the file and asks Prometheus; [`judge`] is pure. Without a Prometheus the
//! static proof decides and the summary says what was not proven.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::checks::{Code, Exclusivity, Kind, KindSpec, Problems};
use crate::outcome::{CheckError, Observation, Outcome};
use crate::probe::promql::{PromClient, PromError, QueryResult};
use crate::target::Ctx;
use crate::units::Dur;

pub mod grafana;

use grafana::{Dashboard, Query, Unreadable};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The dashboard's JSON (as Grafana exports it). A relative path is relative to the
    /// directory of the policy file that declares the check (a built-in policy's to the
    /// working directory, as if it sat in the checkout).
    pub file: PathBuf,
    /// Base URL of a Prometheus server scraping the service (e.g. `http://127.0.0.1:9090`):
    /// every panel's query is evaluated there. Absent or empty (an unset
    /// `${env:PREFLIGHT_PROMETHEUS_URL:-}`): the queries are only parsed, and the summary says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<String>,
    /// Values of the dashboard's template variables (`job: core`), over the dashboard's own
    /// current values and Grafana's built-in intervals (`__rate_interval: 1m`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
    /// Metric names the dashboard must chart: each must be selected by some panel's query.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<String>,
    /// With a Prometheus: every query must return at least one series (default true); false
    /// asks only that Prometheus accepts each query.
    #[serde(default = "yes")]
    pub require_series: bool,
    /// Set by the loader when a built-in policy declares the check: a missing file is SKIP
    /// (the policy runs outside the checkout it describes), not FAIL.
    #[serde(skip)]
    pub from_builtin: bool,
}

fn yes() -> bool {
    true
}

impl Spec {
    /// The configured Prometheus URL; `""` (an unset variable's empty default) is none.
    pub fn prometheus_url(&self) -> Option<&str> {
        self.prometheus
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
    }

    fn check_fields(&self, p: &mut Problems) {
        if self.file.as_os_str().is_empty() {
            p.error(
                "/file",
                crate::checks::codes::BAD_PATH,
                "`file` is empty",
                "name the dashboard's JSON file, e.g. `../docs/dashboard.json`",
            );
        }
        // The URL may come from the environment: the message never quotes it.
        if let Some(url) = self.prometheus_url()
            && let Err(e) = crate::probe::promql::base_url(url)
        {
            let why = match e {
                PromError::BadUrl { reason, .. } => reason,
                other => other.to_string(),
            };
            p.error(
                "/prometheus",
                BAD_PROMETHEUS_URL,
                format!("`prometheus` is not a Prometheus base URL: {why}"),
                "write the server's base URL, e.g. `http://127.0.0.1:9090`",
            );
        }
        for name in self.variables.keys() {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                p.error(
                    &format!("/variables/{}", crate::yaml::escape_token(name)),
                    BAD_VARIABLE_NAME,
                    format!("`{name}` is not a Grafana variable name"),
                    "write the name without `$` (letters, digits, `_`), e.g. `job: core`",
                );
            }
        }
        for (i, m) in self.metrics.iter().enumerate() {
            let mut chars = m.chars();
            let first_ok = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
            if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
                p.error(
                    &format!("/metrics/{i}"),
                    BAD_METRIC_NAME,
                    format!("`{m}` is not a Prometheus metric name"),
                    "write a bare name such as `breaker_state` (no labels, no expression)",
                );
            }
        }
    }
}

/// What Prometheus answered for one query.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Not sent: the query has no expression, or a variable nothing defines.
    NotSent,
    /// The series returned (a scalar or a string counts as one), and how many have NaN as
    /// their value (a panel that draws nothing, e.g. a quantile of no requests).
    Series { n: usize, nan: usize },
    /// Prometheus refused the expression (`bad_data`, `execution`), with its message.
    Rejected(String),
}

/// What `run` measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurements {
    /// The file, as shown in the report.
    pub file: String,
    /// The dashboard's queries, or why it could not be read.
    pub dashboard: Result<Dashboard, Unreadable>,
    /// Prometheus's answer to each query (in the order of `dashboard.queries`); `None` when
    /// no Prometheus is configured.
    pub answers: Option<Vec<Answer>>,
}

pub async fn run(spec: &Spec, ctx: &Ctx) -> Result<Outcome, CheckError> {
    let shown = spec.file.display().to_string();
    let mut sent = vec![format!("read {shown}")];
    let text = match tokio::fs::read(&spec.file).await {
        Ok(bytes) => String::from_utf8(bytes).map_err(|_| "the file is not UTF-8 text".to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if spec.from_builtin {
                return Err(crate::checks::not_in_checkout(&shown));
            }
            Err("the file does not exist".to_string())
        }
        Err(e) => return Err(CheckError::Local(format!("reading {shown}: {e}"))),
    };
    let dashboard = text
        .map_err(|message| Unreadable { message, at: None })
        .and_then(|t| grafana::read(&t, &spec.variables));
    let answers = match (spec.prometheus_url(), &dashboard) {
        (Some(url), Ok(d)) => {
            sent.push(format!("{} PromQL queries to {url}", d.queries.len()));
            Some(evaluate(url, d, ctx).await?)
        }
        _ => None,
    };
    let mut out = judge(
        spec,
        &Measurements {
            file: shown,
            dashboard,
            answers,
        },
    );
    out.sent = sent;
    Ok(out)
}

/// The longest Prometheus may take over one query; the HTTP request waits a few seconds
/// more (`PromClient`), so an unresponsive server is an ERROR well inside the deadline.
const QUERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Asks Prometheus each query, at its own "now". A query Prometheus refuses is that query's
/// answer; any other failure (unreachable, timed out, not the API) means nothing can be
/// proven here: an error, not a FAIL.
async fn evaluate(url: &str, d: &Dashboard, ctx: &Ctx) -> Result<Vec<Answer>, CheckError> {
    let timeout = ctx.remaining()?.min(QUERY_TIMEOUT);
    let client = PromClient::builder(url)
        .timeout(timeout)
        .build()
        .map_err(|e| CheckError::Local(e.to_string()))?;
    let mut answers = Vec::with_capacity(d.queries.len());
    for q in &d.queries {
        let Ok(expr) = q.resolved.as_deref().map(str::trim) else {
            answers.push(Answer::NotSent);
            continue;
        };
        if expr.is_empty() {
            answers.push(Answer::NotSent);
            continue;
        }
        ctx.budget.take(1)?;
        let answer = match client.query(expr, None).await {
            Ok(r) => {
                let values: Vec<f64> = match &r.result {
                    QueryResult::Vector(v) => v
                        .iter()
                        .map(|s| s.point.map_or(0.0, |p| p.v))
                        .collect(),
                    QueryResult::Matrix(m) => m
                        .iter()
                        .map(|s| s.points.last().map_or(0.0, |p| p.v))
                        .collect(),
                    QueryResult::Scalar(p) => vec![p.v],
                    QueryResult::String(..) => vec![0.0],
                };
                Answer::Series {
                    n: values.len(),
                    nan: values.iter().filter(|v| v.is_nan()).count(),
                }
            }
            Err(PromError::BadData { error, .. } | PromError::Execution { error, .. }) => {
                Answer::Rejected(error)
            }
            Err(e) => return Err(CheckError::Local(e.to_string())),
        };
        answers.push(answer);
        ctx.progress(&format!("query {}/{}", answers.len(), d.queries.len()));
    }
    Ok(answers)
}

/// One problem found in the dashboard, with its stable code and where it is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub code: &'static str,
    /// The panel's title (none for a problem of the whole file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub panel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ref_id: Option<String>,
    /// `file:line:col` (or `file` and the JSON Pointer when the position is unknown).
    pub at: String,
    pub message: String,
}

/// `file:line:col`, or `file` with the JSON Pointer when the line is not known.
fn place(file: &str, at: Option<(usize, usize)>, pointer: &str) -> String {
    match at {
        Some((line, col)) => format!("{file}:{line}:{col}"),
        None if pointer.is_empty() => file.to_string(),
        None => format!("{file} at {pointer}"),
    }
}

/// One query's verdict: whether it holds, what was observed, and the finding when it fails.
fn query_verdict(
    q: &Query,
    answer: Option<&Answer>,
    require_series: bool,
) -> (bool, String, Option<(Code, String)>) {
    let quoted = |e: &str| format!("`{}`", e.trim());
    if q.expr.trim().is_empty() {
        let msg = "the target has no `expr`".to_string();
        return (false, msg.clone(), Some((EMPTY_EXPR, msg)));
    }
    let resolved = match &q.resolved {
        Err(unknown) => {
            let names: Vec<String> = unknown.iter().map(|n| format!("${n}")).collect();
            let msg = format!(
                "{} uses {} that nothing defines (give a value in `variables:`)",
                quoted(&q.expr),
                names.join(", ")
            );
            return (false, msg.clone(), Some((UNKNOWN_VARIABLE, msg)));
        }
        Ok(r) => r,
    };
    match (answer, &q.parsed) {
        (Some(Answer::Rejected(why)), _) => {
            let msg = format!("Prometheus refused {}: {why}", quoted(resolved));
            (false, msg.clone(), Some((BAD_PROMQL, msg)))
        }
        (Some(Answer::Series { n: 0, .. }), _) if require_series => {
            let msg = format!(
                "{} returned 0 series — is the metric's name right, are its labels there, and has the service produced it yet?",
                quoted(resolved)
            );
            (false, msg.clone(), Some((NO_SERIES, msg)))
        }
        (Some(Answer::Series { n, nan }), _) => {
            let nan = if *nan > 0 {
                format!(" ({nan} NaN)")
            } else {
                String::new()
            };
            (true, format!("{n} series{nan}"), None)
        }
        (_, Some(Err(e))) => {
            let msg = format!("{} does not parse as PromQL: {e}", quoted(resolved));
            (false, msg.clone(), Some((BAD_PROMQL, msg)))
        }
        _ => (true, "parses".to_string(), None),
    }
}

/// Judges what was measured. Pure: no I/O, no clock.
pub fn judge(spec: &Spec, m: &Measurements) -> Outcome {
    let mut out = Outcome::default();
    let file = &m.file;
    let d = match &m.dashboard {
        Ok(d) => d,
        Err(u) => {
            let at = place(file, u.at, "");
            out.observe(Observation::new(
                format!("{file} is a Grafana dashboard"),
                "JSON with panels",
                format!("[{UNREADABLE}] {at}: {}", u.message),
                false,
            ));
            out.summary = format!("{at}: {}", u.message);
            out.evidence = json!({
                "file": file,
                "findings": [Finding {
                    code: UNREADABLE.as_str(),
                    panel: None,
                    ref_id: None,
                    at,
                    message: u.message.clone(),
                }],
            });
            return out;
        }
    };
    let evaluated = m.answers.is_some();
    let expected = match (evaluated, spec.require_series) {
        (true, true) => "valid PromQL returning ≥1 series",
        (true, false) => "valid PromQL (Prometheus accepts it)",
        (false, _) => "valid PromQL",
    };
    let mut findings = Vec::new();
    let mut queries = Vec::new();
    let mut total_series = 0;
    for (i, q) in d.queries.iter().enumerate() {
        let answer = m.answers.as_ref().and_then(|a| a.get(i));
        let at = place(file, q.at, &q.pointer);
        let (ok, observed, finding) = query_verdict(q, answer, spec.require_series);
        let observed = match &finding {
            Some((code, _)) => format!("[{code}] {observed} ({at})"),
            None => observed,
        };
        out.observe(Observation::new(
            format!("panel \"{}\" query {}", q.panel, q.ref_id),
            expected,
            observed,
            ok,
        ));
        if let Some((code, message)) = finding {
            findings.push(Finding {
                code: code.as_str(),
                panel: Some(q.panel.clone()),
                ref_id: Some(q.ref_id.clone()),
                at: at.clone(),
                message,
            });
        }
        let (series, nan) = match answer {
            Some(Answer::Series { n, nan }) => (Some(*n), Some(*nan)),
            _ => (None, None),
        };
        total_series += series.unwrap_or(0);
        // Prometheus is the authority where it answered: a disagreement of the static
        // parser is kept as a note, not a failure.
        let parser_note = match (&q.parsed, answer) {
            (Some(Err(e)), Some(Answer::Series { .. })) => Some(format!(
                "preflight's PromQL parser refused what Prometheus accepted: {e}"
            )),
            _ => None,
        };
        queries.push(json!({
            "panel": q.panel,
            "ref_id": q.ref_id,
            "at": at,
            "pointer": q.pointer,
            "expr": q.expr,
            "resolved": q.resolved.as_ref().ok(),
            "metrics": q.parsed.as_ref().and_then(|p| p.as_ref().ok()),
            "series": series,
            "nan_series": nan,
            "parser_note": parser_note,
        }));
    }
    if d.queries.is_empty() {
        let msg = "no panel has a Prometheus query".to_string();
        out.observe(Observation::new(
            format!("{file} has panel queries"),
            "at least one",
            format!("[{NO_QUERIES}] {msg}"),
            false,
        ));
        findings.push(Finding {
            code: NO_QUERIES.as_str(),
            panel: None,
            ref_id: None,
            at: file.clone(),
            message: msg,
        });
    }
    let charted = charted_metrics(spec, &d.queries);
    for (metric, panels) in &charted {
        let ok = !panels.is_empty();
        let observed = if ok {
            format!("in {}", quoted_list(panels))
        } else {
            let msg = format!("no panel's query selects `{metric}`");
            findings.push(Finding {
                code: NOT_CHARTED.as_str(),
                panel: None,
                ref_id: None,
                at: file.clone(),
                message: msg.clone(),
            });
            format!("[{NOT_CHARTED}] {msg}")
        };
        out.observe(Observation::new(
            format!("charts {metric}"),
            "selected by a panel's query",
            observed,
            ok,
        ));
    }

    let panels: BTreeSet<&str> = d
        .queries
        .iter()
        .map(|q| q.pointer.split("/targets/").next().unwrap_or_default())
        .collect();
    let failed = out.observations.iter().filter(|o| !o.ok).count();
    let mut summary = format!(
        "{file}: {} panel(s), {} quer{}",
        panels.len(),
        d.queries.len(),
        if d.queries.len() == 1 { "y" } else { "ies" }
    );
    if failed == 0 {
        summary += match (evaluated, spec.require_series) {
            (true, true) => ", each valid PromQL returning ≥1 series in Prometheus",
            (true, false) => ", each accepted by Prometheus",
            (false, _) => ", each valid PromQL",
        };
        if evaluated {
            summary += &format!(" ({total_series} series in all)");
        }
        if !spec.metrics.is_empty() {
            summary += &format!("; charts the {} required metric(s)", spec.metrics.len());
        }
    } else {
        summary += &format!("; {failed} requirement(s) not met");
    }
    if !evaluated {
        summary += "; not evaluated: no Prometheus configured (`prometheus:`), so whether \
                    each panel returns series is not proven";
    }
    out.summary = summary;
    out.summarize_unmet();
    out.evidence = json!({
        "file": file,
        "title": d.title,
        "evaluated": evaluated,
        "prometheus": spec.prometheus_url(),
        "variables": d.variables,
        "queries": queries,
        "required_metrics": charted,
        "other_data_sources": d.other_sources,
        "findings": findings,
    });
    out
}

/// For each required metric, the panels whose queries select it.
fn charted_metrics(spec: &Spec, queries: &[Query]) -> BTreeMap<String, Vec<String>> {
    spec.metrics
        .iter()
        .map(|metric| {
            let mut panels: Vec<String> = Vec::new();
            for q in queries {
                let selects = matches!(&q.parsed, Some(Ok(names)) if names.contains(metric));
                if selects && !panels.contains(&q.panel) {
                    panels.push(q.panel.clone());
                }
            }
            (metric.clone(), panels)
        })
        .collect()
}

fn quoted_list(items: &[String]) -> String {
    items
        .iter()
        .map(|i| format!("\"{i}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

const BAD_PROMETHEUS_URL: Code = Code("dashboard/bad-prometheus-url");
const BAD_VARIABLE_NAME: Code = Code("dashboard/bad-variable-name");
const BAD_METRIC_NAME: Code = Code("dashboard/bad-metric-name");
const UNREADABLE: Code = Code("dashboard/unreadable");
const NO_QUERIES: Code = Code("dashboard/no-queries");
const EMPTY_EXPR: Code = Code("dashboard/empty-expr");
const UNKNOWN_VARIABLE: Code = Code("dashboard/unknown-variable");
const BAD_PROMQL: Code = Code("dashboard/bad-promql");
const NO_SERIES: Code = Code("dashboard/no-series");
const NOT_CHARTED: Code = Code("dashboard/metric-not-charted");

impl KindSpec for Spec {
    const KIND: Kind = Kind {
        name: "dashboard",
        namespace: "dashboard",
        exclusivity: Exclusivity::Shared,
        codes: &[
            BAD_PROMETHEUS_URL,
            BAD_VARIABLE_NAME,
            BAD_METRIC_NAME,
            UNREADABLE,
            NO_QUERIES,
            EMPTY_EXPR,
            UNKNOWN_VARIABLE,
            BAD_PROMQL,
            NO_SERIES,
            NOT_CHARTED,
        ],
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

    /// Three panels as a real dashboard writes them (recorded from docs/dashboard.json).
    const DASH: &str = r#"{
  "title": "Core",
  "templating": {"list": [{"name": "job", "type": "query", "current": {"value": "core"}}]},
  "panels": [
    {"id": 1, "title": "Rate limiter", "targets": [
      {"refId": "A", "expr": "rate(ratelimit_rejections_total{job=\"$job\"}[1m])"},
      {"refId": "B", "expr": "ratelimit_tracked_clients{job=\"$job\"}"}]},
    {"id": 5, "title": "Feed breaker state", "targets": [
      {"refId": "A", "expr": "breaker_state{job=\"$job\"}"}]},
    {"id": 8, "title": "Resident memory", "targets": [
      {"refId": "A", "expr": "process_resident_memory_bytes{job=\"$job\"}"}]}
  ]
}"#;

    fn measured(text: &str, answers: Option<Vec<Answer>>) -> Measurements {
        Measurements {
            file: "docs/dashboard.json".into(),
            dashboard: grafana::read(text, &BTreeMap::new()),
            answers,
        }
    }

    fn series(ns: &[usize]) -> Option<Vec<Answer>> {
        Some(ns.iter().map(|&n| Answer::Series { n, nan: 0 }).collect())
    }

    fn required() -> Spec {
        spec(json!({"file": "d.json", "metrics": [
            "ratelimit_rejections_total", "breaker_state", "process_resident_memory_bytes"]}))
    }

    #[test]
    fn static_proof_passes_and_says_what_it_did_not_prove() {
        let o = judge(&required(), &measured(DASH, None));
        assert_eq!(o.status(), Status::Pass, "{}", o.summary);
        assert_eq!(o.observations.len(), 4 + 3);
        assert!(
            o.summary.contains("3 panel(s), 4 queries, each valid PromQL")
                && o.summary.contains("charts the 3 required metric(s)")
                && o.summary.contains("not evaluated: no Prometheus configured (`prometheus:`)"),
            "{}",
            o.summary
        );
        assert_eq!(o.evidence["evaluated"], false);
        assert_eq!(
            o.evidence["required_metrics"]["breaker_state"],
            json!(["Feed breaker state"])
        );
    }

    #[test]
    fn evaluated_every_query_returns_series() {
        let o = judge(&required(), &measured(DASH, series(&[1, 1, 1, 1])));
        assert_eq!(o.status(), Status::Pass, "{}", o.summary);
        assert!(o.summary.contains("≥1 series in Prometheus (4 series in all)"), "{}", o.summary);
        assert!(!o.summary.contains("not evaluated"), "{}", o.summary);
        assert_eq!(o.evidence["queries"][1]["series"], 1);
    }

    #[test]
    fn a_query_with_no_series_fails_naming_the_panel_and_the_expr() {
        let o = judge(&required(), &measured(DASH, series(&[2, 1, 0, 1])));
        assert_eq!(o.status(), Status::Fail);
        assert!(
            o.summary.contains("panel \"Feed breaker state\" query A")
                && o.summary.contains("[dashboard/no-series]")
                && o.summary.contains("`breaker_state{job=\"core\"}` returned 0 series")
                && o.summary.contains("docs/dashboard.json:9:"),
            "{}",
            o.summary
        );
        assert_eq!(o.evidence["findings"][0]["code"], "dashboard/no-series");
        assert_eq!(o.evidence["findings"][0]["panel"], "Feed breaker state");
        // Boundary: 0 series is fine when only acceptance is asked.
        let mut lenient = required();
        lenient.require_series = false;
        let o = judge(&lenient, &measured(DASH, series(&[2, 1, 0, 1])));
        assert_eq!(o.status(), Status::Pass, "{}", o.summary);
    }

    #[test]
    fn prometheus_refusing_a_query_fails_it() {
        let mut answers = series(&[1, 1, 1, 1]).unwrap();
        answers[3] = Answer::Rejected("1:10: parse error: unexpected".into());
        let o = judge(&required(), &measured(DASH, Some(answers)));
        assert_eq!(o.status(), Status::Fail);
        assert!(
            o.summary.contains("panel \"Resident memory\" query A")
                && o.summary.contains("[dashboard/bad-promql] Prometheus refused"),
            "{}",
            o.summary
        );
    }

    #[test]
    fn a_syntax_error_fails_statically_with_its_position() {
        let broken = DASH.replace(
            r#"breaker_state{job=\"$job\"}"#,
            r#"sum(breaker_state{job=\"$job\"}"#,
        );
        let o = judge(&required(), &measured(&broken, None));
        assert_eq!(o.status(), Status::Fail);
        assert!(
            o.summary.contains("panel \"Feed breaker state\" query A")
                && o.summary.contains("[dashboard/bad-promql]")
                && o.summary.contains("does not parse as PromQL")
                && o.summary.contains("(docs/dashboard.json:9:30)"),
            "{}",
            o.summary
        );
        // …and the metric it charted is no longer seen as charted.
        assert!(
            o.observations
                .iter()
                .any(|x| x.what == "charts breaker_state" && !x.ok),
            "{:#?}",
            o.observations
        );
    }

    #[test]
    fn a_parser_disagreement_defers_to_prometheus() {
        let broken = DASH.replace("[1m]", "[1m] @ end()  offset 1m smoothed");
        let m = measured(&broken, series(&[1, 1, 1, 1]));
        let parsed = &m.dashboard.as_ref().unwrap().queries[0].parsed;
        assert!(matches!(parsed, Some(Err(_))), "{parsed:?}");
        let o = judge(&required(), &m);
        assert!(o.observations[0].ok, "{:#?}", o.observations);
        assert!(
            o.evidence["queries"][0]["parser_note"]
                .as_str()
                .unwrap()
                .contains("refused what Prometheus accepted"),
            "{:#}",
            o.evidence
        );
    }

    #[test]
    fn unknown_variables_empty_exprs_and_missing_metrics_fail() {
        let text = DASH
            .replace(r#"ratelimit_tracked_clients{job=\"$job\"}"#, r#"up{i=\"$instance\"}"#)
            .replace(
                r#""expr": "process_resident_memory_bytes{job=\"$job\"}""#,
                r#""expr": """#,
            );
        let o = judge(&required(), &measured(&text, None));
        assert_eq!(o.status(), Status::Fail);
        let codes: Vec<&str> = o.evidence["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["code"].as_str().unwrap())
            .collect();
        assert_eq!(
            codes,
            [
                "dashboard/unknown-variable",
                "dashboard/empty-expr",
                "dashboard/metric-not-charted",
            ]
        );
        assert!(o.summary.contains("$instance that nothing defines"), "{}", o.summary);
    }

    #[test]
    fn an_unreadable_file_fails_with_the_parser_position() {
        let o = judge(&required(), &measured("{\n  \"panels\": [\n", None));
        assert_eq!(o.status(), Status::Fail);
        assert!(
            o.summary.starts_with("docs/dashboard.json:3:") && o.summary.contains("not JSON"),
            "{}",
            o.summary
        );
        let o = judge(&required(), &measured(r#"{"panels": []}"#, None));
        assert_eq!(o.status(), Status::Fail);
        assert!(o.summary.contains("[dashboard/no-queries]"), "{}", o.summary);
    }

    #[test]
    fn validation_collects_every_problem() {
        let s = spec(json!({
            "file": "", "prometheus": "http://p:9090/api/v1/query",
            "variables": {"$job": "core", "ok_name": "x"},
            "metrics": ["breaker_state", "rate(x[1m])", "1abc"],
        }));
        let mut p = Problems::default();
        s.validate(&mut p);
        let got: Vec<(&str, &str)> = p.0.iter().map(|x| (x.field.as_str(), x.code.as_str())).collect();
        assert_eq!(
            got,
            [
                ("/file", "policy/bad-path"),
                ("/prometheus", "dashboard/bad-prometheus-url"),
                ("/variables/$job", "dashboard/bad-variable-name"),
                ("/metrics/1", "dashboard/bad-metric-name"),
                ("/metrics/2", "dashboard/bad-metric-name"),
            ]
        );
        // An empty URL (an unset `${env:X:-}`) is no Prometheus, and no problem.
        let s = spec(json!({"file": "d.json", "prometheus": " "}));
        assert_eq!(s.prometheus_url(), None);
        let mut p = Problems::default();
        s.validate(&mut p);
        assert!(p.0.is_empty(), "{:?}", p.0);
    }
}
