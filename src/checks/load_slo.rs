//! `load_slo`: paced open-loop load at `rate` for `duration` (latency measured from each
//! request's intended start, so coordinated omission cannot hide stalls), then thresholds
//! such as `p99 < 50ms`, `errors < 0.1%`, `rps >= 95%` (of the rate).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use std::time::Duration;

use crate::checks::Problems;
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
}

fn default_connections() -> u32 {
    16
}
fn one() -> u32 {
    1
}

impl Spec {
    pub fn validate(&self, p: &mut Problems) {
        if self.rate.per_second() <= 0.0 {
            p.error(
                "/rate",
                "load-slo/zero-rate",
                "the rate must be above zero",
                "e.g. `rate: 200/s`",
            );
        }
        if self.duration.0.is_zero() {
            p.error(
                "/duration",
                "load-slo/zero-duration",
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
                    "load-slo/bad-threshold",
                    e,
                    "write `p99 < 50ms`, `errors < 0.1%`, `rps >= 95%` or `rps >= 190`",
                );
            }
        }
        if self.thresholds.is_empty() {
            p.error(
                "/thresholds",
                "load-slo/no-thresholds",
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

    /// Evaluates against a load report: (measured, holds).
    fn judge(&self, r: &load::LoadReport, offered: f64) -> (String, bool) {
        match *self {
            Threshold::Latency {
                stat,
                below,
                inclusive,
            } => {
                if r.latency_us.is_empty() {
                    return ("no answers".into(), false);
                }
                let h = &r.latency_us;
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
                let e = r.error_rate();
                (
                    format!("{:.3}%", e * 100.0),
                    if inclusive { e <= below } else { e < below },
                )
            }
            Threshold::RpsFraction(f) => {
                let rps = r.rps();
                (
                    format!("{rps:.1}/s of {offered}/s offered"),
                    rps >= f * offered,
                )
            }
            Threshold::RpsAbsolute(n) => {
                let rps = r.rps();
                (format!("{rps:.1}/s"), rps >= n)
            }
        }
    }
}

pub async fn run(spec: &Spec, ctx: &Ctx) -> Result<Outcome, CheckError> {
    let thresholds = spec
        .thresholds
        .iter()
        .map(|t| Threshold::parse(t).map(|p| (t, p)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(CheckError::Local)?;
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
    let mut out = Outcome::default();
    out.sent.push(format!(
        "{} at {} for {} over {} connections from {} addresses",
        spec.request,
        spec.rate,
        spec.duration,
        spec.connections,
        sources.len()
    ));
    let r = load::run(&ep, &req, &cfg, Some(&ctx.budget)).await?;
    for (text, t) in &thresholds {
        let (measured, ok) = t.judge(&r, offered);
        out.observe(Observation::new(
            text.to_string(),
            text.to_string(),
            measured,
            ok,
        ));
    }
    let summary = load::summary_ms(&r.latency_us);
    // Latency histogram: count per log-spaced bucket.
    let mut bars = Vec::new();
    if !r.latency_us.is_empty() {
        let mut lo = 100u64;
        while lo <= r.latency_us.max() {
            let hi = lo * 2;
            let n = r.latency_us.count_between(lo, hi - 1);
            if n > 0 || !bars.is_empty() {
                bars.push((lo as f64 / 1000.0, n as f64));
            }
            lo = hi;
        }
        let below = r.latency_us.count_between(0, 99);
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
    out.charts.push(Chart {
        title: format!("{}: answers per 100 ms", spec.request),
        kind: ChartKind::Line,
        x_label: "seconds".into(),
        y_label: "answers".into(),
        series: vec![
            Series {
                name: "ok".into(),
                points: r
                    .timeline
                    .iter()
                    .enumerate()
                    .map(|(i, (ok, _))| (i as f64 / 10.0, *ok as f64))
                    .collect(),
            },
            Series {
                name: "errors".into(),
                points: r
                    .timeline
                    .iter()
                    .enumerate()
                    .map(|(i, (_, e))| (i as f64 / 10.0, *e as f64))
                    .collect(),
            },
        ],
    });
    out.summary = format!(
        "{} sent at {}: {:.1}/s answered, p50 {:.2} ms, p99 {:.2} ms, errors {:.3}%",
        r.sent,
        spec.rate,
        r.rps(),
        summary.get("p50").copied().unwrap_or(0.0),
        summary.get("p99").copied().unwrap_or(0.0),
        r.error_rate() * 100.0
    );
    out.evidence = serde_json::json!({
        "sent": r.sent, "ok": r.ok, "statuses": r.statuses, "transport_errors": r.transport_errors,
        "missed": r.missed, "elapsed_s": r.elapsed.as_secs_f64(), "rps": r.rps(),
        "error_rate": r.error_rate(), "latency_ms": summary, "first_error": r.first_error,
    });
    Ok(out)
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
        assert!(p.0.iter().all(|x| x.code == "load-slo/bad-threshold"));
    }
}
