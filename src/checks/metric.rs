//! `metric`: evaluates an expression over the target's Prometheus metrics, e.g.
//! `detector_instances == 4`, optionally after driving a workload and on the change of a
//! counter across it (`delta: true`).

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

pub async fn run(spec: &Spec, ctx: &Ctx) -> Result<Outcome, CheckError> {
    let expr = Expr::parse(&spec.expect).map_err(CheckError::Local)?;
    let http = ctx.http()?;
    let mut out = Outcome::default();
    let before = if spec.delta {
        out.sent.push(format!("GET {}", spec.path));
        Some(read(&http, &spec.path, &expr).await?)
    } else {
        None
    };
    let mut workload_ok = None;
    if let Some(w) = &spec.workload {
        let mut ok = 0u32;
        let mut statuses = std::collections::BTreeMap::<u16, u32>::new();
        for i in 0..w.count {
            let r = http.send(&w.request, w.body.as_ref(), &[]).await?;
            *statuses.entry(r.status).or_default() += 1;
            if (200..300).contains(&r.status) {
                ok += 1;
            }
            if (i + 1) % 10 == 0 || i + 1 == w.count {
                ctx.progress(&format!("workload {}/{}", i + 1, w.count));
            }
        }
        out.sent.push(format!(
            "{} {} ×{}",
            w.request.method, w.request.path, w.count
        ));
        let observed: Vec<String> = statuses.iter().map(|(s, n)| format!("{n}× {s}")).collect();
        out.observe(Observation::new(
            "workload answered 2xx",
            format!("{}/{}", w.count, w.count),
            observed.join(", "),
            ok == w.count,
        ));
        workload_ok = Some(ok);
    }
    out.sent.push(format!("GET {}", spec.path));
    let after = read(&http, &spec.path, &expr).await?;
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
        }
    }
    out.evidence = serde_json::json!({
        "expression": expr.to_string(),
        "before": before.flatten(),
        "after": after,
        "value": value,
        "workload_ok": workload_ok,
    });
    Ok(out)
}

/// Reads the metrics page and evaluates the selector (`None`: no matching sample).
async fn read(http: &Http, path: &str, expr: &Expr) -> Result<Option<f64>, CheckError> {
    let r = http.get(path).await?;
    if r.status != 200 {
        return Err(CheckError::Target(format!(
            "GET {path} answered {} instead of 200",
            r.status
        )));
    }
    Ok(expr.selector.eval(&prom::parse(&r.text())))
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
