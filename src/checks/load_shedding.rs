//! `load_shedding`: holds more requests in flight than the bound (slowed by an injected
//! delay); the excess must get the shed status quickly, and the accepted requests' p99 stay
//! under the bound.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use std::time::Duration;

use crate::checks::{Code, Exclusivity, Kind, KindSpec, Problems};
use crate::outcome::{Capability, CheckError, Observation, Outcome};
use crate::outcome::{Chart, ChartKind, Series};
use crate::probe::load::{self, Endpoint, Request};
use crate::probe::stats::percentile;
use crate::target::Ctx;
use crate::units::{Dur, RequestLine};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The flooded request (default `GET /v1/correlations?market=m1&window=1h`).
    #[serde(default = "default_request")]
    pub request: RequestLine,
    /// The service's concurrency bound.
    pub max_inflight: u32,
    /// Concurrent requests sent (default 3 × max_inflight).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Delay injected on the route through the admin API so requests stay in flight
    /// (default `300ms`; `0s` to inject nothing).
    #[serde(default = "default_delay")]
    pub delay: Dur,
    /// Status of a shed request (default 503).
    #[serde(default = "default_status")]
    pub status: u16,
    /// A shed request must be answered faster than this (default `100ms`).
    #[serde(default = "default_shed_latency")]
    pub shed_latency_below: Dur,
    /// The accepted requests' p99 must stay under this.
    pub accepted_p99_below: Dur,
    /// Allowed deviation of the shed and accepted counts (default max(2, 5% of the bound)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<u32>,
}

fn default_request() -> RequestLine {
    RequestLine::get("/v1/correlations?market=m1&window=1h")
}
fn default_delay() -> Dur {
    Dur::from_millis(300)
}
fn default_status() -> u16 {
    503
}
fn default_shed_latency() -> Dur {
    Dur::from_millis(100)
}

impl Spec {
    fn check_fields(&self, p: &mut Problems) {
        p.positive("/max_inflight", self.max_inflight.into(), "max_inflight");
        if let Some(c) = self.concurrency {
            if c <= self.max_inflight {
                p.error(
                    "/concurrency",
                    NO_EXCESS,
                    format!(
                        "concurrency {c} does not exceed the bound {}",
                        self.max_inflight
                    ),
                    "send more requests than the bound, e.g. 3×",
                );
            }
            if c > 4096 {
                p.error(
                    "/concurrency",
                    TOO_MANY,
                    format!("concurrency {c} is above preflight's limit of 4096"),
                    "",
                );
            }
        }
    }
}

impl Spec {
    pub fn concurrency(&self) -> u32 {
        self.concurrency
            .unwrap_or(self.max_inflight.saturating_mul(3))
    }

    pub fn tolerance(&self) -> u32 {
        self.tolerance
            .unwrap_or_else(|| (self.max_inflight.div_ceil(20)).max(2))
    }
}

pub async fn run(spec: &Spec, ctx: &Ctx) -> Result<Outcome, CheckError> {
    let inject = !spec.delay.0.is_zero();
    if inject {
        ctx.require(Capability::Admin)?;
    }
    let http = ctx.http()?;
    let mut out = Outcome::default();
    if inject {
        let prefix = spec
            .request
            .path
            .split('?')
            .next()
            .unwrap_or("/")
            .to_string();
        let body = serde_json::json!({"request_delay": {"path_prefix": prefix,
            "delay_ms": spec.delay.0.as_millis() as u64}});
        out.sent.push(format!("POST /admin/faults {body}"));
        let r = http.admin("POST", "/admin/faults", Some(&body)).await?;
        if r.status != 200 {
            return Err(CheckError::Target(format!(
                "injecting the request delay: POST /admin/faults answered {}: {}",
                r.status,
                r.text()
            )));
        }
    }
    let result = flood(spec, ctx, &mut out).await;
    if inject {
        out.sent.push("DELETE /admin/faults".into());
        let cleared = http.admin("DELETE", "/admin/faults", None).await;
        if result.is_ok() {
            cleared?;
        }
    }
    result.map(|()| out)
}

async fn flood(spec: &Spec, ctx: &Ctx, out: &mut Outcome) -> Result<(), CheckError> {
    let ep = Endpoint::for_target(&ctx.target).await?;
    let req = Request::new(&spec.request, None)?;
    let n = spec.concurrency() as usize;
    // Spread over many client addresses so a per-IP limiter does not answer instead.
    let sources: Vec<std::net::IpAddr> = if ctx.extra_sources.is_empty() {
        vec![ctx.source]
    } else {
        ctx.extra_sources.clone()
    };
    let conns: Vec<_> = (0..n).map(|i| sources[i % sources.len()]).collect();
    let timeout = (spec.delay.0 * 4 + Duration::from_secs(10)).min(ctx.remaining()?);
    out.sent.push(format!(
        "{n} × {} at once from {} addresses",
        spec.request,
        sources.len().min(n)
    ));
    ctx.progress(&format!("{n} simultaneous requests"));
    let b = load::burst(&ep, &req, &conns, n, Some(&ctx.budget), timeout).await?;
    let (mut shed_ms, mut ok_ms) = (Vec::new(), Vec::new());
    let mut statuses = std::collections::BTreeMap::<String, u64>::new();
    let mut failed = 0u64;
    for s in &b.shots {
        let ms = s.latency.as_secs_f64() * 1e3;
        match s.status() {
            Some(st) => {
                *statuses.entry(st.to_string()).or_default() += 1;
                if st == spec.status {
                    shed_ms.push(ms);
                } else if (200..400).contains(&st) {
                    ok_ms.push(ms);
                }
            }
            None => failed += 1,
        }
    }
    let tol = spec.tolerance() as u64;
    let bound = spec.max_inflight as u64;
    let min_shed = (n as u64).saturating_sub(bound + tol);
    let shed = shed_ms.len() as u64;
    let accepted = ok_ms.len() as u64;
    out.observe(Observation::new(
        format!("shed with {}", spec.status),
        format!("≥ {min_shed} ({n} − {bound} − {tol})"),
        format!("{shed} (statuses {statuses:?}, {failed} failed)"),
        shed >= min_shed,
    ));
    out.observe(Observation::new(
        "accepted",
        format!("≤ {} ({bound} + {tol})", bound + tol),
        accepted.to_string(),
        accepted <= bound + tol,
    ));
    let shed_p99 = percentile(&shed_ms, 0.99);
    out.observe(Observation::new(
        "p99 latency of shed answers",
        format!("< {}", spec.shed_latency_below),
        shed_p99.map_or("none shed".into(), |v| format!("{v:.1} ms")),
        shed_p99.is_some_and(|v| v < spec.shed_latency_below.0.as_secs_f64() * 1e3),
    ));
    let ok_p99 = percentile(&ok_ms, 0.99);
    out.observe(Observation::new(
        "p99 latency of accepted answers",
        format!("< {}", spec.accepted_p99_below),
        ok_p99.map_or("none accepted".into(), |v| format!("{v:.1} ms")),
        ok_p99.is_some_and(|v| v < spec.accepted_p99_below.0.as_secs_f64() * 1e3),
    ));
    let mut sorted_shed = shed_ms.clone();
    sorted_shed.sort_by(f64::total_cmp);
    out.charts.push(Chart {
        title: format!("{n} simultaneous {}: latency by answer", spec.request),
        kind: ChartKind::Scatter,
        x_label: "answer order".into(),
        y_label: "latency (ms)".into(),
        series: vec![
            Series {
                name: format!("shed ({})", spec.status),
                points: b
                    .shots
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.status() == Some(spec.status))
                    .map(|(i, s)| (i as f64, s.latency.as_secs_f64() * 1e3))
                    .collect(),
            },
            Series {
                name: "accepted".into(),
                points: b
                    .shots
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.status().is_some_and(|st| (200..400).contains(&st)))
                    .map(|(i, s)| (i as f64, s.latency.as_secs_f64() * 1e3))
                    .collect(),
            },
        ],
    });
    out.summary = format!(
        "{n} at once: {shed} shed (p99 {}), {accepted} accepted (p99 {}); bound {bound}",
        shed_p99.map_or("-".into(), |v| format!("{v:.1} ms")),
        ok_p99.map_or("-".into(), |v| format!("{v:.1} ms")),
    );
    out.evidence = serde_json::json!({
        "concurrency": n, "max_inflight": bound, "tolerance": tol,
        "shed": shed, "accepted": accepted, "failed": failed, "statuses": statuses,
        "shed_p99_ms": shed_p99, "shed_max_ms": sorted_shed.last(),
        "accepted_p99_ms": ok_p99, "duration_ms": b.duration.as_secs_f64() * 1e3,
        "delay_ms": spec.delay.0.as_millis() as u64,
    });
    Ok(())
}

const NO_EXCESS: Code = Code("load-shedding/no-excess");
const TOO_MANY: Code = Code("load-shedding/too-many");

impl KindSpec for Spec {
    const KIND: Kind = Kind {
        name: "load_shedding",
        namespace: "load-shedding",
        exclusivity: Exclusivity::Exclusive,
        codes: &[NO_EXCESS, TOO_MANY],
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
