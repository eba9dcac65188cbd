//! `memory_growth`: drives a workload request `iterations` times (after a warm-up), samples
//! the target's RSS, fits a robust Theil–Sen slope and fails when the growth per iteration
//! exceeds the limit (the whole 95 % interval above it). While the interval straddles the
//! limit it measures up to two more rounds; the later half's slope is reported too (a leak
//! keeps its rate, warm-up decays).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::units::Dur;
use crate::checks::{Code, Exclusivity, Kind, KindSpec, Problems};
use crate::outcome::{Capability, CheckError, Observation, Outcome};
use crate::outcome::{Chart, ChartKind, Series};
use crate::probe::http::Http;
use crate::probe::prom::{Sample, Selector};
use crate::probe::stats::{least_squares, theil_sen};
use crate::target::Ctx;
use crate::units::{RequestLine, Size};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The workload, e.g. `POST /v1/graph/build`.
    pub request: RequestLine,
    /// JSON body of the workload request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
    /// Measured iterations.
    pub iterations: u32,
    /// Iterations before measuring (allocator and caches settle).
    #[serde(default = "default_warmup")]
    pub warmup: u32,
    /// Take an RSS sample every this many iterations (default: iterations / 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_every: Option<u32>,
    /// Largest acceptable growth per iteration, e.g. `256B`.
    pub max_growth_per_iteration: Size,
    /// Where RSS comes from: `process` (local pid) or `metric`
    /// (`process_resident_memory_bytes`); default: process when available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<RssSource>,
    /// With `source: metric`, the series holding the RSS in bytes (default
    /// `process_resident_memory_bytes`). When the target exposes several series of it (one
    /// per worker), choose one with label matchers, e.g.
    /// `process_resident_memory_bytes{worker="1"}`: several matching series are an error
    /// naming them, never a silent pick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// Concurrent workload requests (default 1).
    #[serde(default = "one")]
    pub concurrency: u32,
}

/// The RSS series read from `/metrics` when `metric` is not given.
pub const DEFAULT_RSS_METRIC: &str = "process_resident_memory_bytes";

/// Source of RSS samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RssSource {
    Process,
    Metric,
}

/// Extra rounds of `iterations` measured while the slope's interval straddles the limit.
const MAX_EXTENSIONS: u32 = 2;

fn default_warmup() -> u32 {
    50
}
fn one() -> u32 {
    1
}

impl Spec {
    fn check_fields(&self, p: &mut Problems) {
        if self.iterations < 20 {
            p.error(
                "/iterations",
                TOO_FEW,
                format!("{} iterations are too few to fit a slope", self.iterations),
                "use at least 20 (hundreds or thousands to see small leaks)",
            );
        }
        if let Some(e) = self.sample_every {
            p.positive("/sample_every", e.into(), "sample_every");
            if e > 0 && self.iterations / e < 10 {
                p.error(
                    "/sample_every",
                    TOO_FEW_SAMPLES,
                    format!(
                        "sampling every {e} of {} iterations gives fewer than 10 samples",
                        self.iterations
                    ),
                    "sample more often",
                );
            }
        }
        p.positive("/concurrency", self.concurrency.into(), "concurrency");
        if let Some(m) = &self.metric {
            if let Err(e) = Selector::parse(m) {
                p.error(
                    "/metric",
                    BAD_METRIC,
                    e,
                    "write a series selector, e.g. `process_resident_memory_bytes{worker=\"1\"}`",
                );
            } else if self.source == Some(RssSource::Process) {
                p.warning(
                    "/metric",
                    METRIC_UNUSED,
                    "`metric` is read only with `source: metric`",
                    "remove it, or set `source: metric`",
                );
            }
        }
    }
}

/// The client addresses the workload may use, and when each may be used again after the
/// target rate-limited it.
struct Pool {
    clients: Vec<Http>,
    blocked_until: Vec<Option<Instant>>,
    next: usize,
}

impl Pool {
    /// The next usable client, or the instant when one becomes usable.
    fn pick(&mut self) -> Result<(usize, Http), Instant> {
        let now = Instant::now();
        let n = self.clients.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            if self.blocked_until[i].is_none_or(|t| t <= now) {
                self.blocked_until[i] = None;
                self.next = i;
                return Ok((i, self.clients[i].clone()));
            }
        }
        Err(self
            .blocked_until
            .iter()
            .flatten()
            .min()
            .copied()
            .unwrap_or(now))
    }

    fn block(&mut self, i: usize, for_: Duration) {
        self.blocked_until[i] = Some(Instant::now() + for_);
        self.next = (i + 1) % self.clients.len();
    }
}

/// Shared state of the workload drivers.
struct Workload {
    pool: Mutex<Pool>,
    spec: Spec,
    failures: Mutex<(u64, Option<String>)>,
    limited: std::sync::atomic::AtomicU64,
}

impl Workload {
    /// Sends the workload until one is served (2xx), moving to another client address when
    /// the target rate-limits the current one.
    async fn one(&self) -> Result<(), CheckError> {
        loop {
            let picked = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pick();
            let (i, http) = match picked {
                Ok(x) => x,
                Err(until) => {
                    tokio::time::sleep_until(until).await;
                    continue;
                }
            };
            let r = http
                .send(&self.spec.request, self.spec.body.as_ref(), &[])
                .await?;
            if (200..300).contains(&r.status) {
                return Ok(());
            }
            if r.status == 429 {
                self.limited
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let secs = r
                    .header("retry-after")
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .unwrap_or(1.0)
                    .clamp(0.1, 60.0);
                self.pool
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .block(i, Duration::from_secs_f64(secs));
                continue;
            }
            let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            f.0 += 1;
            f.1.get_or_insert_with(|| {
                format!(
                    "{} answered {}: {}",
                    self.spec.request,
                    r.status,
                    r.text().chars().take(200).collect::<String>()
                )
            });
            let allowed = (self.spec.iterations as u64 / 20).max(5);
            if f.0 > allowed {
                return Err(CheckError::Target(format!(
                    "the workload fails: {} failures, first: {}",
                    f.0,
                    f.1.clone().unwrap_or_default()
                )));
            }
            return Ok(());
        }
    }

    /// `n` served workloads over `concurrency` drivers.
    async fn run(self: &Arc<Self>, n: u32) -> Result<(), CheckError> {
        let c = self.spec.concurrency.max(1).min(n.max(1));
        let mut set = tokio::task::JoinSet::new();
        for w in 0..c {
            let me = self.clone();
            let share = n / c + u32::from(w < n % c);
            set.spawn(async move {
                for _ in 0..share {
                    me.one().await?;
                }
                Ok::<_, CheckError>(())
            });
        }
        while let Some(j) = set.join_next().await {
            j.map_err(|e| CheckError::Local(format!("workload task: {e}")))??;
        }
        Ok(())
    }
}

/// Where samples come from, resolved.
enum Sampler {
    Pid,
    Metric(Http, Selector),
}

impl Sampler {
    async fn rss(&self, ctx: &Ctx) -> Result<u64, CheckError> {
        match self {
            Sampler::Pid => crate::probe::process::rss_of_pid(ctx.target.pid()?),
            Sampler::Metric(http, sel) => {
                let samples = crate::probe::process::scrape(http).await?;
                select_rss(&samples, sel).map(|v| v as u64)
            }
        }
    }
}

/// The one series `sel` picks out of a scrape. Several matching series (one per worker, say)
/// are an error naming them: reading the first, as this kind once did, let a leaking second
/// series pass unseen, and summing them would judge a different quantity than the policy
/// names.
pub fn select_rss(samples: &[Sample], sel: &Selector) -> Result<f64, CheckError> {
    match sel.matching(samples).as_slice() {
        [] => Err(CheckError::NotApplicable(format!(
            "the target exports no `{sel}`"
        ))),
        [one] if one.value.is_finite() && one.value >= 0.0 => Ok(one.value),
        [one] => Err(CheckError::Target(format!(
            "`{}` is {}, not a size in bytes",
            one.series(),
            one.value
        ))),
        many => {
            let names: Vec<String> = many.iter().take(5).map(|s| s.series()).collect();
            Err(CheckError::Target(format!(
                "`{sel}` matches {} series at /metrics ({}{}): choose one with `metric:` and label matchers, e.g. `{}`",
                many.len(),
                names.join(", "),
                if many.len() > 5 { ", …" } else { "" },
                many[0].series()
            )))
        }
    }
}

/// What `run` measured, for [`judge`].
#[derive(Debug, Clone, PartialEq)]
pub struct Measurements {
    pub source: RssSource,
    /// (iterations done, RSS bytes), the first at 0 after the warm-up.
    pub samples: Vec<(f64, f64)>,
    pub iterations_measured: u32,
    /// Extra rounds measured because the interval straddled the limit.
    pub extensions: u32,
    /// Measuring stopped because the deadline left no room for another round (rather than
    /// because the extensions were used up or the interval stopped straddling).
    pub out_of_time: bool,
    pub workload_failures: u64,
    pub first_failure: Option<String>,
    pub rate_limited_retries: u64,
    pub measure_seconds: f64,
}

fn straddles(low: f64, high: f64, limit: f64) -> bool {
    low <= limit && limit < high
}

pub async fn run(spec: &Spec, ctx: &Ctx) -> Result<Outcome, CheckError> {
    let m = measure(spec, ctx).await?;
    let mut out = judge(spec, &m);
    out.sent.push(format!(
        "{} × {} warm-up, then {} × {} measured",
        spec.warmup, spec.request, spec.iterations, spec.request
    ));
    Ok(out)
}

async fn measure(spec: &Spec, ctx: &Ctx) -> Result<Measurements, CheckError> {
    let source = spec
        .source
        .unwrap_or(if ctx.target.has(Capability::Process) {
            RssSource::Process
        } else {
            RssSource::Metric
        });
    let sampler = match source {
        RssSource::Process => {
            ctx.require(Capability::Process)?;
            Sampler::Pid
        }
        RssSource::Metric => {
            let sel = Selector::parse(spec.metric.as_deref().unwrap_or(DEFAULT_RSS_METRIC))
                .map_err(CheckError::Local)?;
            Sampler::Metric(ctx.http()?, sel)
        }
    };
    let addrs: Vec<IpAddr> = std::iter::once(ctx.source)
        .chain(ctx.extra_sources.iter().copied())
        .collect();
    let clients = addrs
        .iter()
        .map(|a| ctx.http_from(*a))
        .collect::<Result<Vec<_>, _>>()?;
    let n = clients.len();
    let work = Arc::new(Workload {
        pool: Mutex::new(Pool {
            clients,
            blocked_until: vec![None; n],
            next: 0,
        }),
        spec: spec.clone(),
        failures: Mutex::new((0, None)),
        limited: Default::default(),
    });
    ctx.progress(&format!("warm-up: {} × {}", spec.warmup, spec.request));
    work.run(spec.warmup).await?;
    let every = spec
        .sample_every
        .unwrap_or((spec.iterations / 50).max(1))
        .max(1);
    let mut samples: Vec<(f64, f64)> = vec![(0.0, sampler.rss(ctx).await? as f64)];
    let mut done = 0u32;
    let started = Instant::now();
    let limit = spec.max_growth_per_iteration.0 as f64;
    // Measure `iterations`; while the slope's confidence interval straddles the limit, measure
    // up to MAX_EXTENSIONS more rounds of `iterations` (the interval narrows as samples
    // accumulate), as long as the deadline leaves room for another round.
    let mut target = spec.iterations;
    let mut extensions = 0u32;
    let mut out_of_time = false;
    loop {
        while done < target {
            let step = every.min(target - done);
            work.run(step).await?;
            done += step;
            samples.push((done as f64, sampler.rss(ctx).await? as f64));
            if done.is_multiple_of(every * 10) {
                ctx.progress(&format!("iteration {done}/{target}"));
            }
        }
        let Some(fit) = theil_sen(&samples, 1.96) else {
            break;
        };
        let round = started.elapsed().as_secs_f64() / f64::from(extensions + 1);
        let room = ctx
            .remaining()
            .is_ok_and(|r| r.as_secs_f64() > 2.0 * round + 5.0);
        if !straddles(fit.slope_low, fit.slope_high, limit) || extensions >= MAX_EXTENSIONS {
            break;
        }
        if !room {
            out_of_time = true;
            break;
        }
        extensions += 1;
        target = target.saturating_add(spec.iterations);
        ctx.progress(&format!(
            "slope {:.0} B, interval {:.0}..{:.0} straddles the limit: measuring {} more",
            fit.slope, fit.slope_low, fit.slope_high, spec.iterations
        ));
    }
    let (workload_failures, first_failure) = work
        .failures
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Ok(Measurements {
        source,
        samples,
        iterations_measured: done,
        extensions,
        out_of_time,
        workload_failures,
        first_failure,
        rate_limited_retries: work.limited.load(std::sync::atomic::Ordering::Relaxed),
        measure_seconds: started.elapsed().as_secs_f64(),
    })
}

/// Judges the RSS samples against the limit. Pure: no I/O, no clock.
///
/// FAIL only when the whole confidence interval is above the limit: RSS is noisy (the
/// allocator grows and returns arenas in steps), and a good service must not fail on noise.
/// PASS only when the whole interval is at or below it. An interval still straddling the
/// limit after the extensions shows neither a leak nor its absence: INCONCLUSIVE, with the
/// reason (it once gave PASS for a leak at 4× the limit under heavy noise).
pub fn judge(spec: &Spec, m: &Measurements) -> Outcome {
    let mut out = Outcome::default();
    let samples = &m.samples;
    let done = m.iterations_measured;
    let limit = spec.max_growth_per_iteration.0 as f64;
    let Some(fit) = theil_sen(samples, 1.96) else {
        out.summary = format!(
            "{} RSS sample(s) over {done} iterations; limit {}",
            samples.len(),
            spec.max_growth_per_iteration
        );
        out.undecided("too few RSS samples to fit a slope (at least 3 are needed)");
        return out;
    };
    let ols = least_squares(samples).map(|(s, _)| s);
    let first = samples.first().map_or(0.0, |p| p.1);
    let last = samples.last().map_or(0.0, |p| p.1);
    // The slope of the later half alone: a leak grows at the same rate throughout, while the
    // allocator's warm-up (heap high-water mark, caches) decays towards zero.
    let late = theil_sen(&samples[samples.len() / 2..], 1.96);
    let straddling = straddles(fit.slope_low, fit.slope_high, limit);
    let ok = fit.slope_low <= limit;
    out.observe(Observation::new(
        "RSS growth per iteration (Theil–Sen, 95% CI)",
        format!(
            "≤ {} (FAIL when the interval is above it)",
            spec.max_growth_per_iteration
        ),
        format!(
            "{:.0} B [{:.0}, {:.0}] over {} samples{}",
            fit.slope,
            fit.slope_low,
            fit.slope_high,
            fit.n,
            if straddling {
                " — the interval reaches the limit: not shown to exceed it"
            } else {
                ""
            }
        ),
        ok,
    ));
    let x_max = samples.last().map_or(0.0, |p| p.0);
    let mib = 1024.0 * 1024.0;
    out.charts.push(Chart {
        title: format!("RSS over {done} × {}", spec.request),
        kind: ChartKind::Scatter,
        x_label: "iteration".into(),
        y_label: "RSS (MiB)".into(),
        series: vec![
            Series {
                name: "RSS".into(),
                points: samples.iter().map(|(x, y)| (*x, y / mib)).collect(),
            },
            Series {
                name: format!("Theil–Sen fit: {:.0} B/iteration", fit.slope),
                points: vec![
                    (0.0, fit.intercept / mib),
                    (x_max, (fit.intercept + fit.slope * x_max) / mib),
                ],
            },
        ],
    });
    out.summary = format!(
        "{:.0} B/iteration (95% CI {:.0}..{:.0}) over {done} iterations{}; RSS {:.1} → {:.1} MiB; limit {}",
        fit.slope,
        fit.slope_low,
        fit.slope_high,
        late.map(|l| format!(", later half {:.0} B", l.slope))
            .unwrap_or_default(),
        first / mib,
        last / mib,
        spec.max_growth_per_iteration
    );
    if straddling {
        out.undecided(format!(
            "the interval {:.0}..{:.0} B still straddles the limit {} after {done} iterations ({} extension(s){}): the RSS is too noisy to show a leak or its absence; use more iterations or a quieter target",
            fit.slope_low,
            fit.slope_high,
            spec.max_growth_per_iteration,
            m.extensions,
            if m.out_of_time {
                "; the deadline left no room for another"
            } else {
                ""
            }
        ));
    }
    out.evidence = serde_json::json!({
        "source": match m.source { RssSource::Process => "process", RssSource::Metric => "metric" },
        "metric": match m.source {
            RssSource::Process => None,
            RssSource::Metric => Some(spec.metric.as_deref().unwrap_or(DEFAULT_RSS_METRIC)),
        },
        "samples": samples,
        "slope_bytes_per_iteration": fit.slope,
        "intercept_bytes": fit.intercept,
        "slope_ci": [fit.slope_low, fit.slope_high],
        "late_half_slope": late.map(|l| l.slope),
        "late_half_slope_ci": late.map(|l| [l.slope_low, l.slope_high]),
        "iterations_measured": done,
        "extensions": m.extensions,
        "confidence": fit.confidence,
        "ols_slope": ols,
        "limit_bytes": limit,
        "rss_first": first,
        "rss_last": last,
        "rate_limited_retries": m.rate_limited_retries,
        "workload_failures": m.workload_failures,
        "first_failure": m.first_failure,
        "measure_seconds": m.measure_seconds,
    });
    out
}

const TOO_FEW: Code = Code("memory-growth/too-few");
const TOO_FEW_SAMPLES: Code = Code("memory-growth/too-few-samples");
const BAD_METRIC: Code = Code("memory-growth/bad-metric");
const METRIC_UNUSED: Code = Code("memory-growth/metric-unused");

impl KindSpec for Spec {
    const KIND: Kind = Kind {
        name: "memory_growth",
        namespace: "memory-growth",
        exclusivity: Exclusivity::Exclusive,
        codes: &[TOO_FEW, TOO_FEW_SAMPLES, BAD_METRIC, METRIC_UNUSED],
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

    fn spec(limit: &str) -> Spec {
        serde_json::from_value(serde_json::json!({
            "request": "POST /w", "iterations": 200, "max_growth_per_iteration": limit,
        }))
        .unwrap()
    }

    /// RSS at `slope` bytes per iteration from 50 MiB, sampled every 10 iterations, plus a
    /// deterministic noise of up to ±`noise` bytes.
    fn measured(slope: f64, noise: f64, n: usize, extensions: u32) -> Measurements {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let samples = (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let u = (x % 2001) as f64 / 1000.0 - 1.0;
                let it = (i * 10) as f64;
                (it, 50.0 * 1024.0 * 1024.0 + slope * it + noise * u)
            })
            .collect();
        Measurements {
            source: RssSource::Process,
            samples,
            iterations_measured: (n.saturating_sub(1) * 10) as u32,
            extensions,
            out_of_time: false,
            workload_failures: 0,
            first_failure: None,
            rate_limited_retries: 0,
            measure_seconds: 1.0,
        }
    }

    #[test]
    fn judges_slopes_against_the_limit() {
        // (limit, slope, noise, samples, status)
        let cases = [
            ("256B", 0.0, 0.0, 21, Status::Pass),
            ("256B", 256.0, 0.0, 21, Status::Pass), // exactly at the limit
            ("256B", 257.0, 0.0, 21, Status::Fail), // one over
            ("256B", 4096.0, 4096.0, 61, Status::Fail),
            ("256B", 10.0, 1024.0, 61, Status::Pass),
            // #15: a leak at 4× the limit under heavy RSS noise, interval straddling the
            // limit after the extensions: not a PASS.
            ("1KiB", 4096.0, 2_000_000.0, 21, Status::Inconclusive),
            // Too few samples to fit anything.
            ("256B", 0.0, 0.0, 2, Status::Inconclusive),
            ("256B", 0.0, 0.0, 0, Status::Inconclusive),
        ];
        for (i, (limit, slope, noise, n, want)) in cases.into_iter().enumerate() {
            let o = judge(&spec(limit), &measured(slope, noise, n, MAX_EXTENSIONS));
            assert_eq!(o.status(), want, "case {i}: {}", o.summary);
        }
    }

    #[test]
    fn a_straddling_interval_says_why() {
        let mut m = measured(4096.0, 2_000_000.0, 21, 1);
        m.out_of_time = true;
        let o = judge(&spec("1KiB"), &m);
        assert_eq!(o.status(), Status::Inconclusive);
        let why = o.inconclusive.unwrap();
        assert!(why.contains("straddles the limit 1KiB"), "{why}");
        assert!(why.contains("1 extension(s); the deadline"), "{why}");
    }

    #[test]
    fn one_rss_series_or_an_error_naming_them() {
        let page = crate::probe::prom::parse(
            "process_resident_memory_bytes{worker=\"0\"} 1000\n\
             process_resident_memory_bytes{worker=\"1\"} 2000\n\
             other_bytes 5\n",
        );
        let sel = |s: &str| Selector::parse(s).unwrap();
        let e = select_rss(&page, &sel(DEFAULT_RSS_METRIC)).unwrap_err();
        assert_eq!(e.status(), Status::Error);
        let msg = e.to_string();
        assert!(msg.contains("matches 2 series"), "{msg}");
        assert!(msg.contains("worker=\"0\"") && msg.contains("worker=\"1\""), "{msg}");
        assert_eq!(
            select_rss(&page, &sel("process_resident_memory_bytes{worker=\"1\"}")).unwrap(),
            2000.0
        );
        let e = select_rss(&page, &sel("process_resident_memory_bytes{worker=\"9\"}"));
        assert_eq!(e.unwrap_err().status(), Status::Skip);
        let one = crate::probe::prom::parse("process_resident_memory_bytes 7e6\n");
        assert_eq!(select_rss(&one, &sel(DEFAULT_RSS_METRIC)).unwrap(), 7e6);
    }

    #[test]
    fn lint_checks_the_metric_selector() {
        let mut s = spec("1KiB");
        s.metric = Some("process_resident_memory_bytes{worker=\"1\"".into());
        let mut p = Problems::default();
        s.validate(&mut p);
        assert_eq!(p.0.len(), 1);
        assert_eq!(p.0[0].code, BAD_METRIC);
    }
}
