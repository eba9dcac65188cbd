//! `load_slo`: paced open-loop load at `rate` for `duration` (latency measured from each
//! request's intended start, so coordinated omission cannot hide stalls), then thresholds
//! such as `p99 < 50ms`, `errors < 0.1%`, `rps >= 95%` (of the rate).
//!
//! [`measure`] runs the load and returns plain [`Measurements`]; [`judge`] decides from them
//! alone. Every request due before the end of the run counts: answered with a success status,
//! or an error. A request picked up late is still sent (up to `load::late_grace` after the
//! end) with its latency from its intended start; one never sent (the target held every
//! connection past that) is an error and has the latency from its intended start to the
//! run's end.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use std::time::Duration;

use crate::checks::{Code, Exclusivity, Kind, KindSpec, Problems};
use crate::outcome::{Chart, ChartKind, Series};
use crate::outcome::{CheckError, Observation, Outcome};
use crate::probe::load::{self, Endpoint, LoadConfig, Request};
use crate::target::Ctx;
use crate::units::{Dur, Rate, RequestLine};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub request: RequestLine,
    /// JSON body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
    /// Offered load, e.g. `200/s`.
    pub rate: Rate,
    /// How long, e.g. `10s`.
    pub duration: Dur,
    /// Connections (default 16).
    #[serde(default = "default_connections")]
    pub connections: u32,
    /// Spread the load over this many client addresses (default 1), e.g. to stay under a
    /// per-IP limit.
    #[serde(default = "one")]
    pub sources: u32,
    /// Thresholds: `p50|p90|p99|p999|max|mean < DURATION`, `errors < PERCENT`,
    /// `rps >= PERCENT` (of the offered rate) or `rps >= NUMBER`.
    pub thresholds: Vec<String>,
    /// Statuses that count as success: codes (`204`) or classes (`"2xx"`); every other
    /// answer is an error (default: `["2xx"]`, so a redirect is an error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_statuses: Option<Vec<StatusMatch>>,
}

/// A status code (`204`) or a class of them (`"2xx"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum StatusMatch {
    Code(u16),
    Class(String),
}

impl StatusMatch {
    /// The class digit of `"2xx"` (1 to 5).
    fn class(s: &str) -> Option<u16> {
        let b = s.as_bytes();
        (b.len() == 3 && (b'1'..=b'5').contains(&b[0]) && b[1..].eq_ignore_ascii_case(b"xx"))
            .then(|| u16::from(b[0] - b'0'))
    }

    pub fn matches(&self, status: u16) -> bool {
        match self {
            StatusMatch::Code(c) => *c == status,
            StatusMatch::Class(s) => Self::class(s).is_some_and(|c| status / 100 == c),
        }
    }
}

impl std::fmt::Display for StatusMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StatusMatch::Code(c) => write!(f, "{c}"),
            StatusMatch::Class(s) => f.write_str(&s.to_ascii_lowercase()),
        }
    }
}

impl Spec {
    fn success(&self) -> Vec<StatusMatch> {
        self.success_statuses
            .clone()
            .unwrap_or_else(|| vec![StatusMatch::Class("2xx".into())])
    }

    fn is_success(&self, status: u16) -> bool {
        self.success().iter().any(|m| m.matches(status))
    }

    /// The success statuses as the report names them, e.g. `2xx` or `200, 204`.
    fn success_text(&self) -> String {
        self.success()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn default_connections() -> u32 {
    16
}
fn one() -> u32 {
    1
}

impl Spec {
    fn check_fields(&self, p: &mut Problems) {
        if self.rate.per_second() <= 0.0 {
            p.error(
                "/rate",
                ZERO_RATE,
                "the rate must be above zero",
                "e.g. `rate: 200/s`",
            );
        }
        if self.duration.0.is_zero() {
            p.error(
                "/duration",
                ZERO_DURATION,
                "the duration must be above zero",
                "e.g. `duration: 10s`",
            );
        }
        p.positive("/connections", self.connections.into(), "connections");
        p.positive("/sources", self.sources.into(), "sources");
        for (i, t) in self.thresholds.iter().enumerate() {
            if let Err(e) = Threshold::parse(t) {
                p.error(
                    &format!("/thresholds/{i}"),
                    BAD_THRESHOLD,
                    e,
                    "write `p99 < 50ms`, `errors < 0.1%`, `rps >= 95%` or `rps >= 190`",
                );
            }
        }
        for (i, m) in self.success_statuses.iter().flatten().enumerate() {
            let bad = match m {
                StatusMatch::Code(c) => !(100..=599).contains(c),
                StatusMatch::Class(s) => StatusMatch::class(s).is_none(),
            };
            if bad {
                p.error(
                    &format!("/success_statuses/{i}"),
                    BAD_SUCCESS_STATUS,
                    format!("`{m}` is neither a status code nor a class such as `2xx`"),
                    "e.g. `success_statuses: [\"2xx\"]` or `[200, 204]`",
                );
            }
        }
        if self.success_statuses.as_ref().is_some_and(Vec::is_empty) {
            p.error(
                "/success_statuses",
                BAD_SUCCESS_STATUS,
                "with no success status every request is an error",
                "leave it out for every 2xx, or list e.g. `[200, 204]`",
            );
        }
        if self.thresholds.is_empty() {
            p.error(
                "/thresholds",
                NO_THRESHOLDS,
                "give at least one threshold",
                "e.g. `thresholds: [\"p99 < 50ms\", \"errors < 0.1%\"]`",
            );
        }
    }
}

/// A latency statistic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    P50,
    P90,
    P99,
    P999,
    Max,
    Mean,
}

impl Stat {
    pub fn name(self) -> &'static str {
        match self {
            Stat::P50 => "p50",
            Stat::P90 => "p90",
            Stat::P99 => "p99",
            Stat::P999 => "p999",
            Stat::Max => "max",
            Stat::Mean => "mean",
        }
    }
}

/// A parsed threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    /// `p99 < 50ms` (also `<=`).
    Latency {
        stat: Stat,
        below: Duration,
        inclusive: bool,
    },
    /// `errors < 0.1%` (fraction; also `<=`).
    Errors { below: f64, inclusive: bool },
    /// `rps >= 95%`: fraction of the offered rate.
    RpsFraction(f64),
    /// `rps >= 190`.
    RpsAbsolute(f64),
}

impl Threshold {
    pub fn parse(s: &str) -> Result<Threshold, String> {
        let s = s.trim();
        let (lhs, op, rhs) = ["<=", ">=", "<", ">"]
            .iter()
            .find_map(|op| {
                s.find(op)
                    .map(|i| (s[..i].trim(), *op, s[i + op.len()..].trim()))
            })
            .ok_or_else(|| format!("`{s}` has no comparison (`<`, `<=`, `>=`)"))?;
        let inclusive = op.len() == 2;
        let stat = match lhs {
            "p50" => Some(Stat::P50),
            "p90" => Some(Stat::P90),
            "p99" => Some(Stat::P99),
            "p999" => Some(Stat::P999),
            "max" => Some(Stat::Max),
            "mean" => Some(Stat::Mean),
            _ => None,
        };
        match (lhs, stat) {
            (_, Some(stat)) => {
                if !op.starts_with('<') {
                    return Err(format!(
                        "latency thresholds are upper bounds: write `{lhs} < {rhs}`"
                    ));
                }
                let below: crate::units::Dur =
                    rhs.parse().map_err(|e: crate::units::UnitError| e.0)?;
                Ok(Threshold::Latency {
                    stat,
                    below: below.0,
                    inclusive,
                })
            }
            ("errors", None) => {
                if !op.starts_with('<') {
                    return Err(format!(
                        "the error threshold is an upper bound: write `errors < {rhs}`"
                    ));
                }
                let p: crate::units::Percent =
                    rhs.parse().map_err(|e: crate::units::UnitError| e.0)?;
                Ok(Threshold::Errors {
                    below: p.fraction(),
                    inclusive,
                })
            }
            ("rps", None) => {
                if op != ">=" && op != ">" {
                    return Err(format!(
                        "the throughput threshold is a lower bound: write `rps >= {rhs}`"
                    ));
                }
                if rhs.ends_with('%') {
                    let p: crate::units::Percent =
                        rhs.parse().map_err(|e: crate::units::UnitError| e.0)?;
                    Ok(Threshold::RpsFraction(p.fraction()))
                } else {
                    rhs.parse::<f64>()
                        .ok()
                        .filter(|v| v.is_finite() && *v >= 0.0)
                        .map(Threshold::RpsAbsolute)
                        .ok_or_else(|| format!("`{rhs}` is neither a percentage nor a number of requests per second"))
                }
            }
            _ => Err(format!(
                "unknown quantity `{lhs}`: use p50, p90, p99, p999, max, mean, errors or rps"
            )),
        }
    }

    /// Evaluates against what was measured: (measured, holds).
    fn judge(&self, v: &Tallied) -> (String, bool) {
        match *self {
            Threshold::Latency {
                stat,
                below,
                inclusive,
            } => {
                if v.latency_us.is_empty() {
                    return ("no answers".into(), false);
                }
                let h = &v.latency_us;
                let us = match stat {
                    Stat::P50 => h.value_at_quantile(0.5) as f64,
                    Stat::P90 => h.value_at_quantile(0.9) as f64,
                    Stat::P99 => h.value_at_quantile(0.99) as f64,
                    Stat::P999 => h.value_at_quantile(0.999) as f64,
                    Stat::Max => h.max() as f64,
                    Stat::Mean => h.mean(),
                };
                let lim = below.as_secs_f64() * 1e6;
                (
                    format!("{:.2} ms", us / 1e3),
                    if inclusive { us <= lim } else { us < lim },
                )
            }
            Threshold::Errors { below, inclusive } => {
                let e = v.error_rate();
                (
                    format!("{:.3}%", e * 100.0),
                    if inclusive { e <= below } else { e < below },
                )
            }
            Threshold::RpsFraction(f) => (
                format!("{:.1}/s of {}/s offered", v.rps, v.offered),
                v.rps >= f * v.offered,
            ),
            Threshold::RpsAbsolute(n) => (format!("{:.1}/s", v.rps), v.rps >= n),
        }
    }
}

/// What a `load_slo` run measured: plain data for [`judge`].
#[derive(Debug, Clone)]
pub struct Measurements {
    /// Offered requests per second.
    pub offered: f64,
    /// How long the load ran (the policy's duration, or less when the deadline was near).
    pub duration: Duration,
    /// Requests due before the end of the run (intended at `start + i / rate < end`).
    pub due: u64,
    pub sources: usize,
    pub load: load::LoadReport,
}

/// Requests due before the end, paced at `rate` for `duration` and capped at `cap`: the
/// same arithmetic as the load generator's schedule.
fn due_requests(rate: f64, duration: Duration, cap: u64) -> u64 {
    if rate <= 0.0 {
        return 0;
    }
    let intended = |i: u64| Duration::from_secs_f64(i as f64 / rate);
    let mut n = ((rate * duration.as_secs_f64()).ceil() as u64).min(cap);
    while n > 0 && intended(n - 1) >= duration {
        n -= 1;
    }
    while n < cap && intended(n) < duration {
        n += 1;
    }
    n
}

/// The measurements as the thresholds read them.
struct Tallied {
    /// Every due request (and any sent past them).
    due: u64,
    /// Answered with a success status.
    ok: u64,
    /// Due but never sent before the end.
    unsent: u64,
    /// Answered requests from their intended start, and unsent ones to the run's end.
    latency_us: hdrhistogram::Histogram<u64>,
    rps: f64,
    offered: f64,
}

impl Tallied {
    fn new(spec: &Spec, m: &Measurements) -> Self {
        let r = &m.load;
        let due = m.due.max(r.sent);
        let unsent = due - r.sent;
        let ok = r
            .statuses
            .iter()
            .filter(|(s, _)| spec.is_success(**s))
            .map(|(_, n)| n)
            .sum();
        let mut latency_us = r.latency_us.clone();
        // The unsent are the last due requests (the generator hands them out in order).
        let end = r.elapsed.max(m.duration).as_secs_f64();
        for i in (due - unsent)..due {
            let intended = i as f64 / m.offered.max(1e-9);
            let us = ((end - intended).max(0.0) * 1e6) as u64;
            let _ = latency_us.record(us.max(1));
        }
        Tallied {
            due,
            ok,
            unsent,
            latency_us,
            rps: r.rps(),
            offered: m.offered,
        }
    }

    /// Fraction of due requests not answered with a success status.
    fn error_rate(&self) -> f64 {
        if self.due == 0 {
            return 0.0;
        }
        (self.due - self.ok.min(self.due)) as f64 / self.due as f64
    }
}

/// Runs the load.
pub async fn measure(spec: &Spec, ctx: &Ctx) -> Result<Measurements, CheckError> {
    let ep = Endpoint::for_target(&ctx.target).await?;
    let req = Request::new(&spec.request, spec.body.as_ref())?;
    let sources: Vec<std::net::IpAddr> = std::iter::once(ctx.source)
        .chain(ctx.extra_sources.iter().copied())
        .take(spec.sources as usize)
        .collect();
    let offered = spec.rate.per_second();
    let cfg = LoadConfig {
        rate: Some(offered),
        duration: spec.duration.0.min(ctx.remaining()?),
        connections: spec.connections as usize,
        sources: sources.clone(),
        max_requests: (offered * spec.duration.0.as_secs_f64()).ceil() as u64,
        request_timeout: Duration::from_secs(10),
    };
    ctx.progress(&format!(
        "{} at {} for {}",
        spec.request, spec.rate, spec.duration
    ));
    let load = load::run(&ep, &req, &cfg, Some(&ctx.budget)).await?;
    Ok(Measurements {
        offered,
        duration: cfg.duration,
        due: due_requests(offered, cfg.duration, cfg.max_requests),
        sources: sources.len(),
        load,
    })
}

/// Measures, then judges.
pub async fn run(spec: &Spec, ctx: &Ctx) -> Result<Outcome, CheckError> {
    // Parsed before any load is sent: a bad threshold is the policy's fault, not the target's.
    for t in &spec.thresholds {
        Threshold::parse(t).map_err(CheckError::Local)?;
    }
    let m = measure(spec, ctx).await?;
    Ok(judge(spec, &m))
}

/// Judges a run from its measurements alone: pure, no I/O, no clock.
pub fn judge(spec: &Spec, m: &Measurements) -> Outcome {
    let r = &m.load;
    let v = Tallied::new(spec, m);
    let mut out = Outcome::default();
    out.sent.push(format!(
        "{} at {} for {} over {} connections from {} addresses",
        spec.request, spec.rate, spec.duration, spec.connections, m.sources
    ));
    for text in &spec.thresholds {
        let (measured, ok) = match Threshold::parse(text) {
            Ok(t) => t.judge(&v),
            Err(e) => (format!("not a threshold: {e}"), false),
        };
        out.observe(Observation::new(text.to_string(), text.to_string(), measured, ok));
    }
    let summary = load::summary_ms(&v.latency_us);
    // Latency histogram: count per log-spaced bucket.
    let mut bars = Vec::new();
    if !v.latency_us.is_empty() {
        let mut lo = 100u64;
        while lo <= v.latency_us.max() {
            let hi = lo * 2;
            let n = v.latency_us.count_between(lo, hi - 1);
            if n > 0 || !bars.is_empty() {
                bars.push((lo as f64 / 1000.0, n as f64));
            }
            lo = hi;
        }
        let below = v.latency_us.count_between(0, 99);
        if below > 0 {
            bars.insert(0, (0.0, below as f64));
        }
    }
    out.charts.push(Chart {
        title: format!(
            "{} at {}: latency (from intended send)",
            spec.request, spec.rate
        ),
        kind: ChartKind::Bars,
        x_label: "latency ≥ ms (log₂ buckets)".into(),
        y_label: "requests".into(),
        series: vec![Series {
            name: "latency".into(),
            points: bars,
        }],
    });
    let per_bin = |f: fn(&(u64, u64)) -> u64| -> Vec<(f64, f64)> {
        r.timeline
            .iter()
            .enumerate()
            .map(|(i, b)| (i as f64 / 10.0, f(b) as f64))
            .collect()
    };
    out.charts.push(Chart {
        title: format!("{}: answers per 100 ms", spec.request),
        kind: ChartKind::Line,
        x_label: "seconds".into(),
        y_label: "answers".into(),
        series: vec![
            Series {
                name: "ok".into(),
                points: per_bin(|b| b.0),
            },
            Series {
                name: "errors".into(),
                points: per_bin(|b| b.1),
            },
        ],
    });
    out.summary = format!(
        "{} sent at {}: {:.1}/s answered, p50 {:.2} ms, p99 {:.2} ms, errors {:.3}% (success: {})",
        r.sent,
        spec.rate,
        v.rps,
        summary.get("p50").copied().unwrap_or(0.0),
        summary.get("p99").copied().unwrap_or(0.0),
        v.error_rate() * 100.0,
        spec.success_text(),
    );
    if v.unsent > 0 {
        out.summary.push_str(&format!(
            "; {} of {} due requests were not sent by the end of the run and its grace (the target held every connection): \
             counted as errors, with their latency to the run's end",
            v.unsent, v.due
        ));
    }
    out.evidence = serde_json::json!({
        "sent": r.sent, "due": v.due, "unsent": v.unsent, "ok": v.ok,
        "success_statuses": spec.success_text(), "statuses": r.statuses,
        "transport_errors": r.transport_errors, "missed": r.missed,
        "elapsed_s": r.elapsed.as_secs_f64(), "rps": v.rps,
        "error_rate": v.error_rate(), "latency_ms": summary, "first_error": r.first_error,
    });
    out
}

const BAD_THRESHOLD: Code = Code("load-slo/bad-threshold");
const BAD_SUCCESS_STATUS: Code = Code("load-slo/bad-success-status");
const NO_THRESHOLDS: Code = Code("load-slo/no-thresholds");
const ZERO_DURATION: Code = Code("load-slo/zero-duration");
const ZERO_RATE: Code = Code("load-slo/zero-rate");

impl KindSpec for Spec {
    const KIND: Kind = Kind {
        name: "load_slo",
        namespace: "load-slo",
        exclusivity: Exclusivity::Exclusive,
        codes: &[
            BAD_THRESHOLD,
            NO_THRESHOLDS,
            ZERO_DURATION,
            ZERO_RATE,
            BAD_SUCCESS_STATUS,
        ],
    };

    fn validate(&self, p: &mut Problems) {
        self.check_fields(p)
    }

    fn default_timeout(&self) -> Dur {
        Dur(self.duration.0 * 2 + std::time::Duration::from_secs(30))
    }

    fn default_budget(&self) -> u64 {
        (self.rate.per_second() * self.duration.0.as_secs_f64() * 1.2) as u64 + 1_000
    }

    fn run(&self, ctx: &Ctx) -> impl Future<Output = Result<Outcome, CheckError>> + Send {
        run(self, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_thresholds() {
        assert_eq!(
            Threshold::parse("p99 < 50ms").unwrap(),
            Threshold::Latency {
                stat: Stat::P99,
                below: Duration::from_millis(50),
                inclusive: false
            }
        );
        assert_eq!(
            Threshold::parse(" mean<=2s ").unwrap(),
            Threshold::Latency {
                stat: Stat::Mean,
                below: Duration::from_secs(2),
                inclusive: true
            }
        );
        match Threshold::parse("errors < 0.1%").unwrap() {
            Threshold::Errors {
                below,
                inclusive: false,
            } => assert!((below - 0.001).abs() < 1e-12),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            Threshold::parse("rps >= 95%").unwrap(),
            Threshold::RpsFraction(0.95)
        );
        assert_eq!(
            Threshold::parse("rps >= 190").unwrap(),
            Threshold::RpsAbsolute(190.0)
        );
        assert_eq!(Stat::P999.name(), "p999");
    }

    #[test]
    fn rejects_bad_thresholds() {
        for bad in [
            "p98 < 5ms",
            "p99 > 5ms",
            "p99 < 5",
            "errors < 1",
            "rps < 5",
            "rps >= x",
            "latency",
            "errors >= 1%",
        ] {
            assert!(Threshold::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn validate_reports_each_bad_threshold() {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "request": "GET /healthz", "rate": "10/s", "duration": "1s",
            "thresholds": ["p99 < 5ms", "p98 < 1ms", "rps >= lots"]
        }))
        .unwrap();
        let mut p = Problems::default();
        spec.validate(&mut p);
        let fields: Vec<&str> = p.0.iter().map(|x| x.field.as_str()).collect();
        assert_eq!(fields, ["/thresholds/1", "/thresholds/2"]);
        assert!(p.0.iter().all(|x| x.code == BAD_THRESHOLD));
    }

    fn spec(thresholds: &[&str], extra: serde_json::Value) -> Spec {
        let mut v = serde_json::json!({"request": "GET /work", "rate": "100/s", "duration": "2s",
            "thresholds": thresholds});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    /// A recorded run at 100/s for 2 s: `answered` requests of `latency_ms` each with
    /// `status`, the rest of the 200 due never sent, the last answer at `elapsed_s`.
    fn run_of(answered: u64, status: u16, latency_ms: u64, elapsed_s: f64) -> Measurements {
        let mut latency_us = hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for _ in 0..answered {
            latency_us.record(latency_ms * 1000).unwrap();
        }
        Measurements {
            offered: 100.0,
            duration: Duration::from_secs(2),
            due: 200,
            sources: 1,
            load: load::LoadReport {
                sent: answered,
                ok: answered,
                statuses: [(status, answered)].into_iter().filter(|x| x.1 > 0).collect(),
                transport_errors: 0,
                latency_us,
                elapsed: Duration::from_secs_f64(elapsed_s),
                missed: 200 - answered,
                timeline: vec![],
                first_error: None,
            },
        }
    }

    #[test]
    fn due_requests_follow_the_schedule() {
        assert_eq!(due_requests(100.0, Duration::from_secs(2), 10_000), 200);
        assert_eq!(due_requests(100.0, Duration::from_secs(2), 37), 37);
        assert_eq!(due_requests(3.0, Duration::from_secs(1), 100), 3);
        assert_eq!(due_requests(3.0, Duration::from_millis(1001), 100), 4);
        assert_eq!(due_requests(0.0, Duration::from_secs(1), 100), 0);
    }

    #[test]
    fn judge_thresholds_at_and_past_the_limit() {
        use crate::outcome::Status;
        for (threshold, m, want) in [
            // 1 ms is recorded exactly (below 2048 µs the histogram's unit is 1 µs).
            ("p99 < 2ms", run_of(200, 200, 1, 2.0), Status::Pass),
            ("p99 < 1ms", run_of(200, 200, 1, 2.0), Status::Fail),
            ("p99 <= 1ms", run_of(200, 200, 1, 2.0), Status::Pass),
            ("errors < 1%", run_of(200, 200, 10, 2.0), Status::Pass),
            ("errors < 1%", run_of(198, 200, 10, 2.0), Status::Fail),
            ("errors <= 1%", run_of(198, 200, 10, 2.0), Status::Pass),
            ("rps >= 100%", run_of(200, 200, 10, 2.0), Status::Pass),
            ("rps >= 100", run_of(199, 200, 10, 2.0), Status::Fail),
            // Empty: nothing answered.
            ("p99 < 1s", run_of(0, 200, 10, 2.0), Status::Fail),
            ("errors < 50%", run_of(0, 200, 10, 2.0), Status::Fail),
            // The wrong status: every answer an error.
            ("errors < 1%", run_of(200, 503, 10, 2.0), Status::Fail),
        ] {
            let o = judge(&spec(&[threshold], serde_json::json!({})), &m);
            assert_eq!(o.status(), want, "{threshold}: {}", o.summary);
        }
    }

    #[test]
    fn requests_never_sent_before_the_end_count() {
        use crate::outcome::Status;
        // A stall in the last half-second: 50 due requests never left, the last answer came
        // 1.5 s after the end (#15: judged on the 150 answered alone, this PASSed).
        let m = run_of(150, 200, 5, 3.5);
        let o = judge(&spec(&["errors < 1%"], serde_json::json!({})), &m);
        assert_eq!(o.status(), Status::Fail);
        assert_eq!(o.observations[0].observed, "25.000%");
        assert!(o.summary.contains("50 of 200 due requests"), "{}", o.summary);
        let o = judge(&spec(&["p90 < 100ms"], serde_json::json!({})), &m);
        assert_eq!(o.status(), Status::Fail, "{:#?}", o.observations);
        // Latency to the run's end: at least 3.5 s - 1.99 s for the last one.
        let o = judge(&spec(&["max < 1500ms"], serde_json::json!({})), &m);
        assert_eq!(o.status(), Status::Fail, "{:#?}", o.observations);
        let o = judge(&spec(&["max < 2100ms"], serde_json::json!({})), &m);
        assert_eq!(o.status(), Status::Pass, "{:#?}", o.observations);
    }

    #[test]
    fn success_statuses_default_to_2xx_and_are_named() {
        use crate::outcome::Status;
        let redirects = run_of(200, 302, 5, 2.0);
        let o = judge(&spec(&["errors < 1%"], serde_json::json!({})), &redirects);
        assert_eq!(o.status(), Status::Fail, "3xx is no success by default");
        assert!(o.summary.contains("(success: 2xx)"), "{}", o.summary);
        let s = spec(&["errors < 1%"], serde_json::json!({"success_statuses": ["2xx", 302]}));
        let o = judge(&s, &redirects);
        assert_eq!(o.status(), Status::Pass);
        assert!(o.summary.contains("(success: 2xx, 302)"), "{}", o.summary);
        let s = spec(&["errors < 1%"], serde_json::json!({"success_statuses": [204]}));
        assert_eq!(judge(&s, &run_of(200, 200, 5, 2.0)).status(), Status::Fail);
    }

    #[test]
    fn validate_rejects_bad_success_statuses() {
        for (bad, field) in [
            (serde_json::json!(["6xx"]), "/success_statuses/0"),
            (serde_json::json!([200, 99]), "/success_statuses/1"),
            (serde_json::json!(["2XX", "ok"]), "/success_statuses/1"),
            (serde_json::json!([]), "/success_statuses"),
        ] {
            let mut p = Problems::default();
            spec(&["p99 < 5ms"], serde_json::json!({"success_statuses": bad})).validate(&mut p);
            assert_eq!(p.0.len(), 1, "{bad}: {:?}", p.0);
            assert_eq!(p.0[0].field, field);
            assert_eq!(p.0[0].code, BAD_SUCCESS_STATUS);
        }
    }
}
