//! `query_timeout`: makes the target run a query beyond its budget (admin slow-query
//! injection, or the request as given) and requires the answer within `budget + margin`
//! with the timeout status and code, and the timeout counter to rise.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use std::time::Duration;

use crate::checks::{Code, Exclusivity, Kind, KindSpec, Problems};
use crate::outcome::{Capability, CheckError, Observation, Outcome};
use crate::probe::process::metric_value;
use crate::target::Ctx;
use crate::units::{Dur, RequestLine};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The query request (default `GET /v1/correlations?market=m1&window=1h`).
    #[serde(default = "default_request")]
    pub request: RequestLine,
    /// The service's query budget, e.g. `50ms`.
    pub budget: Dur,
    /// Allowed overhead on top of the budget (default `100ms`: HTTP and scheduling).
    #[serde(default = "default_margin")]
    pub margin: Dur,
    /// Status of a timed-out query (default 503).
    #[serde(default = "default_status")]
    pub status: u16,
    /// Stable error code expected at `/error/code` of the body (default `HB-Q-TIMEOUT`).
    #[serde(default = "default_code")]
    pub code: String,
    /// Make the query slow through the admin API (`slow_query` fault; default true).
    #[serde(default = "yes")]
    pub inject: bool,
    /// Counter that must rise (default `query_timeouts_total`; empty to skip).
    #[serde(default = "default_counter")]
    pub counter: String,
}

fn default_request() -> RequestLine {
    RequestLine::get("/v1/correlations?market=m1&window=1h")
}
fn default_margin() -> Dur {
    Dur::from_millis(100)
}
fn default_status() -> u16 {
    503
}
fn default_code() -> String {
    "HB-Q-TIMEOUT".into()
}
fn yes() -> bool {
    true
}
fn default_counter() -> String {
    "query_timeouts_total".into()
}

impl Spec {
    fn check_fields(&self, p: &mut Problems) {
        if self.budget.0.is_zero() {
            p.error(
                "/budget",
                ZERO_BUDGET,
                "the budget must be above zero",
                "e.g. `budget: 50ms`",
            );
        }
        if self.margin.0 > self.budget.0 * 20 && !self.budget.0.is_zero() {
            p.warning(
                "/margin",
                WIDE_MARGIN,
                format!(
                    "a margin of {} dwarfs the {} budget",
                    self.margin, self.budget
                ),
                "a margin of 2× the budget is usually enough",
            );
        }
    }
}

pub async fn run(spec: &Spec, ctx: &Ctx) -> Result<Outcome, CheckError> {
    if spec.inject {
        ctx.require(Capability::Admin)?;
    }
    let http = ctx.http()?;
    let mut out = Outcome::default();
    let before = if spec.counter.is_empty() {
        None
    } else {
        Some(metric_value(&http, &spec.counter).await?.unwrap_or(0.0))
    };
    if spec.inject {
        let r = http
            .admin(
                "POST",
                "/admin/faults",
                Some(&serde_json::json!({"slow_query": true})),
            )
            .await?;
        out.sent
            .push("POST /admin/faults {\"slow_query\":true}".into());
        if r.status != 200 {
            return Err(CheckError::Target(format!(
                "injecting the slow query: POST /admin/faults answered {}: {}",
                r.status,
                r.text()
            )));
        }
    }
    // Whatever happens next, the fault is cleared before the check returns.
    let result = measure(spec, ctx, &http, &mut out, before).await;
    if spec.inject {
        out.sent.push("DELETE /admin/faults".into());
        let cleared = http.admin("DELETE", "/admin/faults", None).await;
        if result.is_ok() {
            cleared?;
        }
    }
    result.map(|()| out)
}

async fn measure(
    spec: &Spec,
    ctx: &Ctx,
    http: &crate::probe::http::Http,
    out: &mut Outcome,
    before: Option<f64>,
) -> Result<(), CheckError> {
    let allowed = spec.budget.0 + spec.margin.0;
    // Give a query without a timeout a few times the allowance before calling it stuck.
    let patience = (allowed * 4)
        .max(Duration::from_secs(2))
        .min(ctx.remaining()?);
    out.sent.push(spec.request.to_string());
    let start = std::time::Instant::now();
    let resp = tokio::time::timeout(patience, http.send(&spec.request, None, &[])).await;
    let elapsed = start.elapsed();
    let resp = match resp {
        Ok(r) => r?,
        Err(_) => {
            out.observe(Observation::new(
                "answered within budget + margin",
                format!("≤ {}", crate::units::Dur(allowed)),
                format!("no answer after {} ms", elapsed.as_millis()),
                false,
            ));
            out.summary = format!(
                "the slow query was not cut off: no answer after {} ms (budget {})",
                elapsed.as_millis(),
                spec.budget
            );
            out.evidence = serde_json::json!({"elapsed_ms": elapsed.as_secs_f64() * 1e3,
                "answered": false});
            return Ok(());
        }
    };
    let code = resp
        .json()
        .ok()
        .and_then(|v| v.pointer("/error/code").cloned())
        .and_then(|v| v.as_str().map(str::to_string));
    out.observe(Observation::new(
        "answered within budget + margin",
        format!("≤ {}", crate::units::Dur(allowed)),
        format!("{:.1} ms", elapsed.as_secs_f64() * 1e3),
        elapsed <= allowed,
    ));
    out.observe(Observation::new(
        "status",
        spec.status.to_string(),
        resp.status.to_string(),
        resp.status == spec.status,
    ));
    out.observe(Observation::new(
        "/error/code",
        spec.code.clone(),
        code.clone().unwrap_or_else(|| "absent".into()),
        code.as_deref() == Some(spec.code.as_str()),
    ));
    let mut after = None;
    if let Some(b) = before {
        let a = metric_value(http, &spec.counter).await?.unwrap_or(0.0);
        after = Some(a);
        out.observe(Observation::new(
            format!("`{}` rose", spec.counter),
            format!("> {b}"),
            a.to_string(),
            a > b,
        ));
    }
    out.summary = format!(
        "answered {} in {:.1} ms (budget {} + margin {}), code {}",
        resp.status,
        elapsed.as_secs_f64() * 1e3,
        spec.budget,
        spec.margin,
        code.as_deref().unwrap_or("absent")
    );
    out.evidence = serde_json::json!({
        "elapsed_ms": elapsed.as_secs_f64() * 1e3,
        "status": resp.status,
        "code": code,
        "counter": {"name": spec.counter, "before": before, "after": after},
    });
    Ok(())
}

const WIDE_MARGIN: Code = Code("query-timeout/wide-margin");
const ZERO_BUDGET: Code = Code("query-timeout/zero-budget");

impl KindSpec for Spec {
    const KIND: Kind = Kind {
        name: "query_timeout",
        namespace: "query-timeout",
        exclusivity: Exclusivity::Exclusive,
        codes: &[WIDE_MARGIN, ZERO_BUDGET],
    };

    fn validate(&self, p: &mut Problems) {
        self.check_fields(p)
    }

    fn default_timeout(&self) -> Dur {
        Dur::from_secs(120)
    }

    fn default_budget(&self) -> u64 {
        1_000_000
    }

    fn run(&self, ctx: &Ctx) -> impl Future<Output = Result<Outcome, CheckError>> + Send {
        run(self, ctx)
    }
}
