//! `query_timeout`: makes the target run a query beyond its budget (admin slow-query
//! injection, or the request as given) and requires the answer within `budget + margin`
//! with the timeout status and code, and the timeout counter to rise. The allowance also
//! holds the same request's round trip without the fault, measured in the same run, so a
//! loaded machine's share of the time is not charged to the service. Measuring ([`run`])
//! records the answer; [`judge`] is pure.

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
    /// Allowed overhead on top of the budget (default `100ms`: the service's own), beyond
    /// the slowest round trip of the same request without the fault in the same run.
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

/// The answer to the slow query.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    /// The string at `/error/code` of the body, if any.
    pub code: Option<String>,
}

/// What the check measured: plain data, judged by [`judge`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Measurements {
    /// Round trips of the same request without the fault, just before it was injected (ms):
    /// this machine's time to answer it now. Empty without injection.
    pub baseline_ms: Vec<f64>,
    /// From sending the slow query to its answer, or to giving up waiting (ms).
    pub elapsed_ms: f64,
    /// The answer; `None` when none came within the check's patience.
    pub reply: Option<Reply>,
    /// The timeout counter before the query (`None`: no counter configured).
    pub counter_before: Option<f64>,
    /// The timeout counter after the answer (`None`: not read).
    pub counter_after: Option<f64>,
}

/// Round trips of the unfaulted request taken as the baseline.
const BASELINE_SAMPLES: usize = 3;

pub async fn run(spec: &Spec, ctx: &Ctx) -> Result<Outcome, CheckError> {
    if spec.inject {
        ctx.require(Capability::Admin)?;
    }
    let http = ctx.http()?;
    let mut sent = Vec::new();
    let mut m = Measurements::default();
    if spec.inject {
        // The same request, answered normally: the machine's own share of the answer time.
        sent.push(format!(
            "{BASELINE_SAMPLES} × {} without the fault (baseline)",
            spec.request
        ));
        for _ in 0..BASELINE_SAMPLES {
            let start = std::time::Instant::now();
            http.send(&spec.request, None, &[]).await?;
            m.baseline_ms.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    if !spec.counter.is_empty() {
        m.counter_before = Some(metric_value(&http, &spec.counter).await?.unwrap_or(0.0));
    }
    if spec.inject {
        let r = http
            .admin(
                "POST",
                "/admin/faults",
                Some(&serde_json::json!({"slow_query": true})),
            )
            .await?;
        sent.push("POST /admin/faults {\"slow_query\":true}".into());
        if r.status != 200 {
            return Err(CheckError::Target(format!(
                "injecting the slow query: POST /admin/faults answered {}: {}",
                r.status,
                r.text()
            )));
        }
    }
    // Whatever happens next, the fault is cleared before the check returns.
    let result = measure(spec, ctx, &http, &mut sent, &mut m).await;
    if spec.inject {
        sent.push("DELETE /admin/faults".into());
        let cleared = http.admin("DELETE", "/admin/faults", None).await;
        if result.is_ok() {
            cleared?;
        }
    }
    result?;
    let mut out = judge(spec, &m);
    out.sent = sent;
    Ok(out)
}

/// Sends the slow query and reads the counter after its answer.
async fn measure(
    spec: &Spec,
    ctx: &Ctx,
    http: &crate::probe::http::Http,
    sent: &mut Vec<String>,
    m: &mut Measurements,
) -> Result<(), CheckError> {
    let allowed = spec.budget.0 + spec.margin.0;
    // Give a query without a timeout a few times the allowance before calling it stuck.
    let patience = (allowed * 4)
        .max(Duration::from_secs(2))
        .min(ctx.remaining()?);
    sent.push(spec.request.to_string());
    let start = std::time::Instant::now();
    let resp = tokio::time::timeout(patience, http.send(&spec.request, None, &[])).await;
    m.elapsed_ms = start.elapsed().as_secs_f64() * 1e3;
    let Ok(resp) = resp else {
        return Ok(());
    };
    let resp = resp?;
    m.reply = Some(Reply {
        status: resp.status,
        code: resp
            .json()
            .ok()
            .and_then(|v| v.pointer("/error/code").cloned())
            .and_then(|v| v.as_str().map(str::to_string)),
    });
    if m.counter_before.is_some() {
        m.counter_after = Some(metric_value(http, &spec.counter).await?.unwrap_or(0.0));
    }
    Ok(())
}

/// Judges the slow query's answer (pure). The time allowed is `budget + margin` plus the
/// slowest baseline round trip of the same request in the same run: on a loaded machine
/// every answer takes longer, and that share is the machine's, not the service's.
pub fn judge(spec: &Spec, m: &Measurements) -> Outcome {
    let mut out = Outcome::default();
    let baseline = m.baseline_ms.iter().copied().max_by(f64::total_cmp);
    let allowed_ms = (spec.budget.0 + spec.margin.0).as_secs_f64() * 1e3 + baseline.unwrap_or(0.0);
    let expected = match baseline {
        Some(b) => format!(
            "≤ {:.1} ms ({} + {} + {b:.1} ms, the slowest baseline round trip)",
            allowed_ms, spec.budget, spec.margin
        ),
        None => format!("≤ {}", crate::units::Dur(spec.budget.0 + spec.margin.0)),
    };
    let Some(reply) = &m.reply else {
        out.observe(Observation::new(
            "answered within budget + margin",
            expected,
            format!("no answer after {} ms", m.elapsed_ms as u64),
            false,
        ));
        out.summary = format!(
            "the slow query was not cut off: no answer after {} ms (budget {})",
            m.elapsed_ms as u64, spec.budget
        );
        out.evidence = serde_json::json!({"elapsed_ms": m.elapsed_ms, "answered": false,
            "baseline_ms": m.baseline_ms});
        return out;
    };
    out.observe(Observation::new(
        "answered within budget + margin",
        expected,
        format!("{:.1} ms", m.elapsed_ms),
        m.elapsed_ms <= allowed_ms,
    ));
    out.observe(Observation::new(
        "status",
        spec.status.to_string(),
        reply.status.to_string(),
        reply.status == spec.status,
    ));
    out.observe(Observation::new(
        "/error/code",
        spec.code.clone(),
        reply.code.clone().unwrap_or_else(|| "absent".into()),
        reply.code.as_deref() == Some(spec.code.as_str()),
    ));
    if let Some(b) = m.counter_before {
        let a = m.counter_after.unwrap_or(b);
        out.observe(Observation::new(
            format!("`{}` rose", spec.counter),
            format!("> {b}"),
            a.to_string(),
            a > b,
        ));
    }
    out.summary = format!(
        "answered {} in {:.1} ms (budget {} + margin {}), code {}",
        reply.status,
        m.elapsed_ms,
        spec.budget,
        spec.margin,
        reply.code.as_deref().unwrap_or("absent")
    );
    out.evidence = serde_json::json!({
        "elapsed_ms": m.elapsed_ms,
        "baseline_ms": m.baseline_ms,
        "status": reply.status,
        "code": reply.code,
        "counter": {"name": spec.counter, "before": m.counter_before, "after": m.counter_after},
    });
    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Status;

    fn spec() -> Spec {
        serde_json::from_value(serde_json::json!({"budget": "50ms", "margin": "150ms"})).unwrap()
    }

    fn timed_out(baseline_ms: &[f64], elapsed_ms: f64) -> Measurements {
        Measurements {
            baseline_ms: baseline_ms.to_vec(),
            elapsed_ms,
            reply: Some(Reply {
                status: 503,
                code: Some("HB-Q-TIMEOUT".into()),
            }),
            counter_before: Some(3.0),
            counter_after: Some(4.0),
        }
    }

    #[test]
    fn judge_table() {
        let with = |f: &dyn Fn(&mut Measurements), m: Measurements| {
            let mut m = m;
            f(&mut m);
            m
        };
        let cases: Vec<(&str, Measurements, Status)> = vec![
            ("cut off at the budget", timed_out(&[2.0, 3.0, 2.5], 58.0), Status::Pass),
            (
                // Budget 50 + margin 150 = 200 ms; the baseline says this machine takes 90 ms
                // to answer the same request now, so 280 ms is the service's 190 ms.
                "loaded machine: the baseline is the machine's share",
                timed_out(&[40.0, 90.0, 60.0], 280.0),
                Status::Pass,
            ),
            (
                "exactly at budget + margin + baseline",
                timed_out(&[10.0], 210.0),
                Status::Pass,
            ),
            ("one over", timed_out(&[10.0], 210.1), Status::Fail),
            (
                "no baseline (nothing injected): exactly at budget + margin",
                timed_out(&[], 200.0),
                Status::Pass,
            ),
            (
                "no baseline, one over",
                timed_out(&[], 200.1),
                Status::Fail,
            ),
            (
                "no answer within the patience",
                with(&|m| m.reply = None, timed_out(&[2.0], 2000.0)),
                Status::Fail,
            ),
            (
                "ran to completion: the wrong status",
                with(
                    &|m| {
                        m.reply = Some(Reply {
                            status: 200,
                            code: None,
                        })
                    },
                    timed_out(&[2.0], 150.0),
                ),
                Status::Fail,
            ),
            (
                "the wrong error code",
                with(
                    &|m| m.reply.as_mut().unwrap().code = Some("E-OTHER".into()),
                    timed_out(&[2.0], 58.0),
                ),
                Status::Fail,
            ),
            (
                "the counter did not rise",
                with(&|m| m.counter_after = Some(3.0), timed_out(&[2.0], 58.0)),
                Status::Fail,
            ),
            (
                "no counter configured",
                with(
                    &|m| {
                        m.counter_before = None;
                        m.counter_after = None
                    },
                    timed_out(&[2.0], 58.0),
                ),
                Status::Pass,
            ),
        ];
        for (name, m, want) in &cases {
            let o = judge(&spec(), m);
            assert_eq!(o.status(), *want, "{name}: {:#?}", o.observations);
        }
    }

    #[test]
    fn judge_keeps_the_report_text() {
        let o = judge(&spec(), &timed_out(&[2.0], 58.0));
        assert_eq!(
            o.summary,
            "answered 503 in 58.0 ms (budget 50ms + margin 150ms), code HB-Q-TIMEOUT"
        );
        assert_eq!(o.observations.len(), 4);
        assert_eq!(o.observations[3].what, "`query_timeouts_total` rose");
        let mut none = timed_out(&[2.0], 2000.0);
        none.reply = None;
        let o = judge(&spec(), &none);
        assert_eq!(
            o.summary,
            "the slow query was not cut off: no answer after 2000 ms (budget 50ms)"
        );
    }
}
