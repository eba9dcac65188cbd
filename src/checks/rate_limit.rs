//! `rate_limit`: a burst of `burst + extra` requests from one source address; the accepted
//! count must be within tolerance of `burst`, the rest rejected with `status` (and the
//! headers the policy lists); after `wait`, about `refill × wait` more are accepted; a second
//! address is served throughout. Judges any HTTP limiter from the stated parameters.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use std::time::Duration;

use crate::checks::Problems;
use crate::outcome::{Chart, ChartKind, Series};
use crate::outcome::{CheckError, Observation, Outcome};
use crate::probe::load::{self, BurstReport, Endpoint, Request};
use crate::target::Ctx;
use crate::units::{Dur, Percent, Rate, RequestLine};

/// Most requests in one burst.
const MAX_BURST: u64 = 20_000;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The limited request.
    pub request: RequestLine,
    /// Bucket size: requests accepted at once from a fresh client.
    pub burst: u32,
    /// Refill rate, e.g. `10/s`.
    pub refill: Rate,
    /// Allowed deviation of accepted counts (default `5%`, at least ±1 request).
    #[serde(default = "default_tolerance")]
    pub tolerance: Percent,
    /// Extra requests past the burst (default: max(10, burst/5)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<u32>,
    /// Pause before the second burst to measure refill (default `2s`).
    #[serde(default = "default_wait")]
    pub wait: Dur,
    /// Status of a rejection (default 429).
    #[serde(default = "default_status")]
    pub status: u16,
    /// Headers every rejection must carry, e.g. `[Retry-After, RateLimit-Remaining]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub require_headers: Vec<String>,
    /// Connections a burst is sent over (default 32): enough to beat the refill, few enough
    /// that a concurrency bound (load shedding) does not answer in the limiter's place.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Optionally: idle clients are forgotten (the gauge falls) within this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_cleanup: Option<IdleCleanup>,
}

/// Idle-client cleanup, observed through a gauge.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdleCleanup {
    /// Gauge of tracked clients (default `ratelimit_tracked_clients`).
    #[serde(default = "default_gauge")]
    pub metric: String,
    /// How long to wait for it to fall.
    pub within: Dur,
}

fn default_tolerance() -> Percent {
    Percent(0.05)
}
fn default_wait() -> Dur {
    Dur::from_secs(2)
}
fn default_status() -> u16 {
    429
}
fn default_concurrency() -> u32 {
    32
}
fn default_gauge() -> String {
    "ratelimit_tracked_clients".into()
}

impl Spec {
    pub fn validate(&self, p: &mut Problems) {
        p.positive("/burst", self.burst.into(), "burst");
        if self.refill.per_second() <= 0.0 {
            p.error(
                "/refill",
                "rate-limit/zero-refill",
                "refill must be above zero",
                "e.g. `refill: 10/s`",
            );
        }
        if self.tolerance.fraction() > 0.5 {
            p.error(
                "/tolerance",
                "rate-limit/tolerance-too-wide",
                format!(
                    "a tolerance of {} cannot tell a working limiter from a broken one",
                    self.tolerance
                ),
                "use 50% or less (5% is typical)",
            );
        }
        if !(400..=599).contains(&self.status) {
            p.error(
                "/status",
                "rate-limit/bad-status",
                format!("{} is not an error status", self.status),
                "rejections are usually 429",
            );
        }
        p.positive("/concurrency", self.concurrency.into(), "concurrency");
        if self.burst as u64 + self.extra() as u64 > MAX_BURST {
            p.error(
                "/burst",
                "rate-limit/burst-too-large",
                format!(
                    "a burst of {} plus {} extra is above preflight's limit of {MAX_BURST} requests",
                    self.burst,
                    self.extra()
                ),
                "check a smaller limit, or the same limiter configured smaller in staging",
            );
        }
        if self.wait.0.is_zero() {
            p.error(
                "/wait",
                "rate-limit/zero-wait",
                "`wait` must be above zero to measure the refill",
                "e.g. `wait: 2s`",
            );
        }
    }
}

impl Spec {
    /// Requests past the burst.
    pub fn extra(&self) -> u32 {
        self.extra.unwrap_or((self.burst / 5).max(10))
    }

    /// ± requests allowed around `expected` (at least 1).
    fn tol(&self, expected: f64) -> f64 {
        (self.tolerance.fraction() * expected).ceil().max(1.0)
    }
}

/// How a burst's answers split.
#[derive(Debug, Default, serde::Serialize)]
struct Tally {
    accepted: u64,
    rejected: u64,
    /// Server errors or transport failures: neither served nor limited.
    other: u64,
    statuses: std::collections::BTreeMap<u16, u64>,
}

fn tally(b: &BurstReport, reject_status: u16) -> Tally {
    let mut t = Tally::default();
    for s in &b.shots {
        match s.status() {
            Some(st) => {
                *t.statuses.entry(st).or_default() += 1;
                if st == reject_status {
                    t.rejected += 1;
                } else if st < 500 {
                    t.accepted += 1;
                } else {
                    t.other += 1;
                }
            }
            None => t.other += 1,
        }
    }
    t
}

/// Cumulative accepted answers over time (ms from `origin`).
fn accepted_steps(b: &BurstReport, reject_status: u16, offset_ms: f64) -> Vec<(f64, f64)> {
    let mut pts = vec![(offset_ms, 0.0)];
    let mut n = 0.0;
    for s in &b.shots {
        if s.status().is_some_and(|st| st != reject_status && st < 500) {
            n += 1.0;
            pts.push((offset_ms + s.done_at.as_secs_f64() * 1e3, n));
        }
    }
    pts
}

fn fmt_range(lo: f64, hi: f64) -> String {
    format!("{}..={}", lo.max(0.0).floor(), hi.floor())
}

pub async fn run(spec: &Spec, ctx: &Ctx) -> Result<Outcome, CheckError> {
    let ep = Endpoint::for_target(&ctx.target).await?;
    let req = Request::new(&spec.request, None)?;
    let refill = spec.refill.per_second();
    let burst = spec.burst as f64;
    let n1 = (spec.burst + spec.extra()) as usize;
    let conns = vec![ctx.source; (spec.concurrency as usize).clamp(1, n1)];
    let per_request = Duration::from_secs(10).min(ctx.remaining()?);
    let mut out = Outcome::default();

    // 1. The first burst from a fresh client address.
    out.sent.push(format!(
        "{n1} × {} from {} over {} connections",
        spec.request,
        ctx.source,
        conns.len()
    ));
    ctx.progress(&format!("burst of {n1} from {}", ctx.source));
    let b1 = load::burst(&ep, &req, &conns, n1, Some(&ctx.budget), per_request).await?;
    let t1 = tally(&b1, spec.status);
    let d1 = b1.duration.as_secs_f64();
    let tol1 = spec.tol(burst);
    let lo1 = burst - tol1;
    let hi1 = burst + tol1 + (refill * d1).ceil();
    if t1.accepted + t1.rejected == 0 {
        return Err(CheckError::Target(format!(
            "no request of the burst was answered ({} failed)",
            t1.other
        )));
    }
    out.observe(Observation::new(
        "accepted in the first burst",
        format!(
            "{} ± {} (+{:.1} refilled during the {:.0} ms burst): {}",
            spec.burst,
            tol1,
            refill * d1,
            d1 * 1e3,
            fmt_range(lo1, hi1)
        ),
        format!("{} of {n1}", t1.accepted),
        (t1.accepted as f64) >= lo1 && (t1.accepted as f64) <= hi1,
    ));
    out.observe(Observation::new(
        format!("rejections with status {}", spec.status),
        "the requests past the burst",
        format!("{} (statuses {:?})", t1.rejected, t1.statuses),
        t1.rejected > 0,
    ));
    if !spec.require_headers.is_empty() {
        let rejections: Vec<&load::Answer> = b1
            .shots
            .iter()
            .filter_map(|s| s.answer.as_ref().ok())
            .filter(|a| a.status == spec.status)
            .collect();
        for h in &spec.require_headers {
            let missing = rejections
                .iter()
                .filter(|a| a.headers.get(h.as_str()).is_none())
                .count();
            let sample = rejections
                .iter()
                .find_map(|a| a.headers.get(h.as_str()))
                .and_then(|v| v.to_str().ok())
                .map_or_else(|| "absent".to_string(), |v| format!("e.g. `{v}`"));
            out.observe(Observation::new(
                format!("`{h}` on every rejection"),
                "present",
                if rejections.is_empty() {
                    "no rejection to inspect".to_string()
                } else {
                    format!("missing on {missing} of {}; {sample}", rejections.len())
                },
                !rejections.is_empty() && missing == 0,
            ));
        }
    }

    // 2. Another client address is served while the first is limited.
    let mut isolation = Vec::new();
    let other = ctx.extra_sources.first().copied();
    if let Some(src) = other {
        let http = ctx.http_from(src)?;
        let r = http.send(&spec.request, None, &[]).await?;
        out.sent.push(format!("{} from {src}", spec.request));
        isolation.push(r.status);
    }

    // 3. Wait, then burst again: about refill × wait more are accepted.
    let b1_end = b1.released + b1.duration;
    tokio::time::sleep_until(b1_end + spec.wait.0).await;
    if let Some(src) = other {
        let http = ctx.http_from(src)?;
        let r = http.send(&spec.request, None, &[]).await?;
        out.sent.push(format!("{} from {src}", spec.request));
        isolation.push(r.status);
    }
    let expected2 = (refill * spec.wait.0.as_secs_f64()).min(burst);
    let n2 = (expected2.ceil() as usize + spec.extra() as usize).max(1);
    out.sent.push(format!(
        "after {}: {n2} × {} from {}",
        spec.wait, spec.request, ctx.source
    ));
    ctx.progress(&format!("second burst of {n2} after {}", spec.wait));
    let conns2 = vec![ctx.source; (spec.concurrency as usize).clamp(1, n2)];
    let b2 = load::burst(&ep, &req, &conns2, n2, Some(&ctx.budget), per_request).await?;
    let t2 = tally(&b2, spec.status);
    let gap_min = b2.released.saturating_duration_since(b1_end).as_secs_f64();
    let gap_max = (b2.released + b2.duration)
        .saturating_duration_since(b1.released)
        .as_secs_f64();
    let tol2 = spec.tol(expected2);
    let lo2 = (refill * gap_min).min(burst) - tol2;
    let hi2 = (refill * gap_max).min(burst) + tol2;
    out.observe(Observation::new(
        format!("accepted after waiting {}", spec.wait),
        format!(
            "{}/s × {:.2}..{:.2} s ± {tol2}: {}",
            refill,
            gap_min,
            gap_max,
            fmt_range(lo2, hi2)
        ),
        format!("{} of {n2}", t2.accepted),
        (t2.accepted as f64) >= lo2 && (t2.accepted as f64) <= hi2,
    ));
    match other {
        Some(src) => out.observe(Observation::new(
            format!("another client ({src}) while the first is limited"),
            format!("not {}", spec.status),
            format!("{isolation:?}"),
            !isolation.is_empty() && isolation.iter().all(|s| *s != spec.status && *s < 500),
        )),
        None => out.observe(Observation::new(
            "another client while the first is limited",
            "a second source address",
            "none given to this check",
            false,
        )),
    };

    // 4. Optionally: the idle clients are forgotten.
    let mut cleanup = serde_json::Value::Null;
    if let Some(idle) = &spec.idle_cleanup {
        let http = ctx.http()?;
        let start = tokio::time::Instant::now();
        let first = crate::probe::process::metric_value(&http, &idle.metric).await?;
        let mut last = first;
        let mut fell = false;
        if let Some(v0) = first {
            while start.elapsed() < idle.within.0 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                last = crate::probe::process::metric_value(&http, &idle.metric).await?;
                if last.is_some_and(|v| v < v0) {
                    fell = true;
                    break;
                }
            }
        }
        out.observe(Observation::new(
            format!("`{}` falls once clients are idle", idle.metric),
            format!("below {first:?} within {}", idle.within),
            format!("{last:?} after {:.1} s", start.elapsed().as_secs_f64()),
            fell,
        ));
        cleanup = serde_json::json!({"metric": idle.metric, "before": first, "after": last,
            "waited_ms": start.elapsed().as_millis() as u64});
    }

    let offset2 = b2
        .released
        .saturating_duration_since(b1.released)
        .as_secs_f64()
        * 1e3;
    out.charts.push(Chart {
        title: format!("{}: accepted requests over time", spec.request),
        kind: ChartKind::Steps,
        x_label: "ms since the first burst".into(),
        y_label: "accepted (cumulative per burst)".into(),
        series: vec![
            Series {
                name: "first burst".into(),
                points: accepted_steps(&b1, spec.status, 0.0),
            },
            Series {
                name: format!("after {}", spec.wait),
                points: accepted_steps(&b2, spec.status, offset2),
            },
        ],
    });
    out.evidence = serde_json::json!({
        "first_burst": {"sent": n1, "duration_ms": d1 * 1e3, "tally": t1,
                        "expected": [lo1.max(0.0), hi1]},
        "second_burst": {"sent": n2, "duration_ms": b2.duration.as_secs_f64() * 1e3,
                         "gap_s": [gap_min, gap_max], "tally": t2,
                         "expected": [lo2.max(0.0), hi2]},
        "other_client_statuses": isolation,
        "idle_cleanup": cleanup,
    });
    out.summary = format!(
        "first burst: {} of {n1} accepted (expected {}), {} rejected; after {}: {} accepted (expected {})",
        t1.accepted,
        fmt_range(lo1, hi1),
        t1.rejected,
        spec.wait,
        t2.accepted,
        fmt_range(lo2, hi2)
    );
    Ok(out)
}
