//! `metric`: evaluates an expression over the target's Prometheus metrics, e.g.
//! `detector_instances == 4`, optionally after driving a workload and on the change of a
//! counter across it (`delta: true`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::Dur;
use crate::checks::{Code, Exclusivity, Kind, KindSpec, Problems};
use crate::outcome::{CheckError, Observation, Outcome};
use crate::probe::http::Http;
use crate::probe::prom::{self, Expr};
use crate::target::Ctx;
use crate::units::RequestLine;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// `selector op number`, e.g. `detector_instances == 4` or
    /// `http_requests_total{route="/healthz",status="200"} >= 1`. Ops: `== != < <= > >=`.
    /// Label matchers as in PromQL: `=`, `!=`, `=~`, `!~` (regexes match the whole value); a
    /// label a series lacks reads as `""`. Several matching series are summed.
    pub expect: String,
    /// Where the metrics are (default `/metrics`).
    #[serde(default = "default_path")]
    pub path: String,
    /// Requests to send before reading the metric (e.g. 20 graph builds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<Workload>,
    /// Compare the change of the value across the workload instead of its value after it.
    #[serde(default)]
    pub delta: bool,
}

fn default_path() -> String {
    "/metrics".into()
}

/// Requests driven before a measurement.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// The request, e.g. `POST /v1/graph/build`.
    pub request: RequestLine,
    /// JSON body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
    /// How many times.
    pub count: u32,
}

impl Spec {
    fn check_fields(&self, p: &mut Problems) {
        if let Err(e) = crate::probe::prom::Expr::parse(&self.expect) {
            p.error(
                "/expect",
                BAD_EXPRESSION,
                e,
                "write `name{label=\"value\"} OP number`, e.g. `detector_instances == 4`",
            );
        }
        if !self.path.starts_with('/') {
            p.error(
                "/path",
                crate::checks::codes::BAD_PATH,
                format!("`{}` must start with `/`", self.path),
                "",
            );
        }
        if let Some(w) = &self.workload {
            p.positive("/workload/count", w.count.into(), "workload count");
        } else if self.delta {
            p.error(
                "/delta",
                DELTA_WITHOUT_WORKLOAD,
                "`delta: true` needs a `workload` to measure across",
                "add `workload: {request: ..., count: N}`",
            );
        }
    }
}

/// One reading of the metrics page.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reading {
    /// The selector's value (the sum of the matching series), `None` when nothing matches.
    pub value: Option<f64>,
    /// How many series matched.
    pub series: usize,
    /// Lines of the page that could not be read (line number, reason).
    pub unreadable: Vec<(usize, String)>,
}

/// What the workload's requests were answered.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WorkloadRun {
    pub count: u32,
    /// Status → how many times.
    pub statuses: BTreeMap<u16, u32>,
}

/// What `run` measured: the readings before (for `delta`) and after the workload.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Measurements {
    pub before: Option<Reading>,
    pub workload: Option<WorkloadRun>,
    pub after: Reading,
}

pub async fn run(spec: &Spec, ctx: &Ctx) -> Result<Outcome, CheckError> {
    let expr = Expr::parse(&spec.expect).map_err(CheckError::Local)?;
    let (m, sent) = measure(spec, &expr, ctx).await?;
    let mut out = judge(spec, &m);
    out.sent = sent;
    Ok(out)
}

async fn measure(
    spec: &Spec,
    expr: &Expr,
    ctx: &Ctx,
) -> Result<(Measurements, Vec<String>), CheckError> {
    let http = ctx.http()?;
    let mut sent = Vec::new();
    let before = if spec.delta {
        sent.push(format!("GET {}", spec.path));
        Some(read(&http, &spec.path, expr).await?)
    } else {
        None
    };
    let mut workload = None;
    if let Some(w) = &spec.workload {
        let mut statuses = BTreeMap::<u16, u32>::new();
        for i in 0..w.count {
            let r = http.send(&w.request, w.body.as_ref(), &[]).await?;
            *statuses.entry(r.status).or_default() += 1;
            if (i + 1) % 10 == 0 || i + 1 == w.count {
                ctx.progress(&format!("workload {}/{}", i + 1, w.count));
            }
        }
        sent.push(format!(
            "{} {} ×{}",
            w.request.method, w.request.path, w.count
        ));
        workload = Some(WorkloadRun {
            count: w.count,
            statuses,
        });
    }
    sent.push(format!("GET {}", spec.path));
    let after = read(&http, &spec.path, expr).await?;
    Ok((
        Measurements {
            before,
            workload,
            after,
        },
        sent,
    ))
}

/// Judges the readings against the expression. Pure: no I/O, no clock.
pub fn judge(spec: &Spec, m: &Measurements) -> Outcome {
    let mut out = Outcome::default();
    let expr = match Expr::parse(&spec.expect) {
        Ok(e) => e,
        Err(e) => {
            out.observe(Observation::new("expression", "a valid expression", e, false));
            out.summary = format!("`{}` is not a valid expression", spec.expect);
            return out;
        }
    };
    let mut workload_ok = None;
    if let Some(w) = &m.workload {
        let ok: u32 = w
            .statuses
            .iter()
            .filter(|(s, _)| (200..300).contains(*s))
            .map(|(_, n)| n)
            .sum();
        let observed: Vec<String> = w
            .statuses
            .iter()
            .map(|(s, n)| format!("{n}× {s}"))
            .collect();
        out.observe(Observation::new(
            "workload answered 2xx",
            format!("{}/{}", w.count, w.count),
            observed.join(", "),
            ok == w.count,
        ));
        workload_ok = Some(ok);
    }
    let before = m.before.as_ref().map(|r| r.value);
    let after = m.after.value;
    let value = match (before, after) {
        (Some(Some(b)), Some(a)) => Some(a - b),
        (Some(None), Some(a)) => Some(a),
        (_, v) => v,
    };
    let what = if spec.delta {
        format!("change of {} across the workload", expr.selector)
    } else {
        expr.selector.to_string()
    };
    let expected = format!("{} {}", expr.op.as_str(), fmt_num(expr.value));
    match value {
        Some(v) => {
            let ok = expr.op.holds(v, expr.value);
            out.summary = if ok {
                format!("{what} = {}", fmt_num(v))
            } else {
                format!("{what} = {} (expected {expected})", fmt_num(v))
            };
            out.observe(Observation::new(what.clone(), expected, fmt_num(v), ok));
        }
        None => {
            out.observe(Observation::new(
                what.clone(),
                expected,
                format!("(no sample named {} in {})", expr.selector, spec.path),
                false,
            ));
            out.summary = format!("{} is not exposed at {}", expr.selector, spec.path);
            if let Some((line, why)) = m.after.unreadable.first() {
                out.summary += &format!(
                    " ({} line(s) of it could not be read; first: line {line}: {why})",
                    m.after.unreadable.len()
                );
            }
        }
    }
    out.evidence = serde_json::json!({
        "expression": expr.to_string(),
        "before": before.flatten(),
        "after": after,
        "value": value,
        "workload_ok": workload_ok,
        "series_matched": m.after.series,
        "unreadable_lines": m.after.unreadable.len(),
    });
    out
}

/// Reads the metrics page and evaluates the selector.
async fn read(http: &Http, path: &str, expr: &Expr) -> Result<Reading, CheckError> {
    let r = http.get(path).await?;
    if r.status != 200 {
        return Err(CheckError::Target(format!(
            "GET {path} answered {} instead of 200",
            r.status
        )));
    }
    let page = prom::parse_exposition(&r.text());
    Ok(Reading {
        value: expr.selector.eval(&page.samples),
        series: expr.selector.matching(&page.samples).len(),
        unreadable: page.unreadable,
    })
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

const BAD_EXPRESSION: Code = Code("metric/bad-expression");
const DELTA_WITHOUT_WORKLOAD: Code = Code("metric/delta-without-workload");

impl KindSpec for Spec {
    const KIND: Kind = Kind {
        name: "metric",
        namespace: "metric",
        exclusivity: Exclusivity::Shared,
        codes: &[BAD_EXPRESSION, DELTA_WITHOUT_WORKLOAD],
    };

    fn validate(&self, p: &mut Problems) {
        self.check_fields(p)
    }

    fn default_timeout(&self) -> Dur {
        Dur::from_secs(30)
    }

    fn default_budget(&self) -> u64 {
        100_000
    }

    fn run(&self, ctx: &Ctx) -> impl Future<Output = Result<Outcome, CheckError>> + Send {
        run(self, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(expect: &str, delta: bool, workload: bool) -> Spec {
        serde_json::from_value(serde_json::json!({
            "expect": expect,
            "delta": delta,
            "workload": workload.then(|| serde_json::json!({"request": "POST /w", "count": 20})),
        }))
        .unwrap()
    }

    fn reading(v: Option<f64>) -> Reading {
        Reading {
            value: v,
            series: usize::from(v.is_some()),
            unreadable: vec![],
        }
    }

    fn workload(statuses: &[(u16, u32)]) -> Option<WorkloadRun> {
        Some(WorkloadRun {
            count: statuses.iter().map(|(_, n)| n).sum(),
            statuses: statuses.iter().copied().collect(),
        })
    }

    /// (expect, delta, before, after, workload statuses, status)
    type Case<'a> = (
        &'a str,
        bool,
        Option<Option<f64>>,
        Option<f64>,
        &'a [(u16, u32)],
        crate::outcome::Status,
    );

    #[test]
    fn judges_value_boundaries_and_absence() {
        use crate::outcome::Status::{Fail, Pass};
        let cases: &[Case] = &[
            ("x == 4", false, None, Some(4.0), &[], Pass),
            ("x == 4", false, None, Some(5.0), &[], Fail),
            ("x <= 10", false, None, Some(10.0), &[], Pass), // exactly at the bound
            ("x <= 10", false, None, Some(11.0), &[], Fail), // one over
            ("x < 10", false, None, Some(10.0), &[], Fail),
            ("x >= 1", false, None, None, &[], Fail), // not exposed
            ("x{s=\"500\"} == 0", false, None, Some(42.0), &[], Fail),
            ("x == 20", true, Some(Some(5.0)), Some(25.0), &[(200, 20)], Pass),
            ("x == 20", true, Some(Some(5.0)), Some(26.0), &[(200, 20)], Fail),
            ("x == 20", true, Some(None), Some(20.0), &[(200, 20)], Pass), // appeared
            ("x == 20", true, Some(Some(5.0)), None, &[(200, 20)], Fail),
            // The workload answered the wrong status: FAIL even if the value holds.
            ("x == 20", true, Some(Some(0.0)), Some(20.0), &[(200, 19), (500, 1)], Fail),
            ("x >= 0", false, None, Some(f64::NAN), &[], Fail),
        ];
        for (i, (expect, delta, before, after, wl, want)) in cases.iter().enumerate() {
            let m = Measurements {
                before: before.map(reading),
                workload: if wl.is_empty() { None } else { workload(wl) },
                after: reading(*after),
            };
            let o = judge(&spec(expect, *delta, !wl.is_empty()), &m);
            assert_eq!(o.status(), *want, "case {i} `{expect}`: {}", o.summary);
        }
    }

    #[test]
    fn not_exposed_names_the_unreadable_lines() {
        let m = Measurements {
            after: Reading {
                value: None,
                series: 0,
                unreadable: vec![(3, "unterminated quoted string".into())],
            },
            ..Default::default()
        };
        let o = judge(&spec("x >= 1", false, false), &m);
        assert!(o.summary.contains("x is not exposed at /metrics"), "{}", o.summary);
        assert!(o.summary.contains("line 3"), "{}", o.summary);
    }

    #[test]
    fn lint_and_run_agree_on_matchers() {
        // Every matcher lint accepts is evaluated by the run (#15: `!=` passed lint and the
        // run said "not exposed").
        let page = crate::probe::prom::parse(
            "r{status=\"200\"} 5\nr{status=\"500\"}\t42\nr{path=\"/i/{id}\",status=\"503\"} 1\n",
        );
        for (expect, value) in [
            ("r{status!=\"200\"} == 43", 43.0),
            ("r{status=~\"5..\"} == 43", 43.0),
            ("r{status!~\"5..\"} == 5", 5.0),
            ("r{path=\"/i/{id}\"} == 1", 1.0),
        ] {
            let s = spec(expect, false, false);
            let mut p = Problems::default();
            s.validate(&mut p);
            assert!(p.0.is_empty(), "{expect}: lint said {:?}", p.0.len());
            let expr = Expr::parse(expect).unwrap();
            assert_eq!(expr.selector.eval(&page), Some(value), "{expect}");
        }
        let mut p = Problems::default();
        spec("r{status~=\"5\"} == 1", false, false).validate(&mut p);
        assert!(!p.0.is_empty());
    }
}
