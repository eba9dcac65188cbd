//! `memory_growth`: drives a workload request `iterations` times (after a warm-up), samples
//! the target's memory (the RSS of its pid, or any gauge it exports, such as an exact live-heap
//! figure), fits a robust Theil–Sen slope and fails when the growth per iteration exceeds the
//! limit (the whole 95 % interval above it, and the later half not clearly below it). While
//! that is undecided it measures up to two more rounds (a leak keeps its rate, warm-up decays).

use std::collections::BTreeMap;

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
use crate::probe::stats::{Fit, least_squares, theil_sen};
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
    /// Take a memory sample every this many iterations (default: iterations / 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_every: Option<u32>,
    /// Largest acceptable growth per iteration, e.g. `256B`.
    pub max_growth_per_iteration: Size,
    /// What is measured: `process` (the RSS of the local pid), `metric` (the RSS the target
    /// exports, `process_resident_memory_bytes`), or any gauge in bytes it exports:
    /// `{metric: heap_live_bytes}`, `{metric: jvm_memory_used_bytes, labels: {area: heap}}`,
    /// `{metric: go_memstats_heap_alloc_bytes}`. Default: `process` when the target is a
    /// local process, else `metric`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<MemorySource>,
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

/// Where the memory samples come from: the RSS (`process` or `metric`), or a named gauge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum MemorySource {
    Rss(RssSource),
    Gauge(Gauge),
}

/// A gauge in bytes on the target's `/metrics`, one series of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Gauge {
    /// The metric name, e.g. `heap_live_bytes`.
    pub metric: String,
    /// Label values the series must carry (equality), e.g. `{area: heap}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Gauge {
    /// The series selector `name{label="value",…}`.
    pub fn selector(&self) -> Result<Selector, String> {
        let esc = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"");
        let matchers: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", esc(v)))
            .collect();
        let text = if matchers.is_empty() {
            self.metric.clone()
        } else {
            format!("{}{{{}}}", self.metric, matchers.join(","))
        };
        Selector::parse(&text)
    }
}

/// The quantity judged, resolved from the spec and the target.
#[derive(Debug, Clone, PartialEq)]
pub enum Measured {
    /// The RSS of the local pid.
    Process,
    /// A series read from `/metrics`; `rss` when it is the RSS.
    Series { selector: String, rss: bool },
}

impl Measured {
    /// How reports name it: `RSS`, or the series.
    pub fn name(&self) -> String {
        match self {
            Measured::Process => "RSS".into(),
            Measured::Series { rss: true, .. } => "RSS".into(),
            Measured::Series { selector, .. } => format!("`{selector}`"),
        }
    }
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
            } else if self.source.as_ref().is_some_and(|s| *s != MemorySource::Rss(RssSource::Metric)) {
                p.warning(
                    "/metric",
                    METRIC_UNUSED,
                    "`metric` is read only with `source: metric` (the RSS series)",
                    "remove it, or set `source: metric`; a gauge of your own goes in `source: {metric: NAME, labels: {…}}`",
                );
            }
        }
        if let Some(MemorySource::Gauge(g)) = &self.source
            && let Err(e) = g.selector()
        {
            p.error(
                "/source/metric",
                BAD_METRIC,
                e,
                "name one gauge and its labels, e.g. `{metric: jvm_memory_used_bytes, labels: {area: heap}}`",
            );
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
            if self.send_from(i, &http).await? {
                return Ok(());
            }
        }
    }

    /// Sends the workload once from client `i`: true when served, false when rate-limited
    /// (the address is then rested for the Retry-After). Other answers count as failures and
    /// end the check once there are too many.
    async fn send_from(&self, i: usize, http: &Http) -> Result<bool, CheckError> {
        let r = http
            .send(&self.spec.request, self.spec.body.as_ref(), &[])
            .await?;
        if (200..300).contains(&r.status) {
            return Ok(true);
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
            return Ok(false);
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
        // A failed request counts as done: the workload moves on.
        Ok(true)
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
    /// What `spec` measures on this target, and how to sample it.
    fn resolve(spec: &Spec, ctx: &Ctx) -> Result<(Measured, Sampler), CheckError> {
        let series = |sel: Selector, rss: bool| -> Result<(Measured, Sampler), CheckError> {
            let selector = sel.to_string();
            Ok((Measured::Series { selector, rss }, Sampler::Metric(ctx.http()?, sel)))
        };
        let rss_series = || {
            Selector::parse(spec.metric.as_deref().unwrap_or(DEFAULT_RSS_METRIC))
                .map_err(CheckError::Local)
        };
        match &spec.source {
            Some(MemorySource::Rss(RssSource::Process)) => {
                ctx.require(Capability::Process)?;
                Ok((Measured::Process, Sampler::Pid))
            }
            None if ctx.target.has(Capability::Process) => Ok((Measured::Process, Sampler::Pid)),
            None | Some(MemorySource::Rss(RssSource::Metric)) => series(rss_series()?, true),
            Some(MemorySource::Gauge(g)) => series(g.selector().map_err(CheckError::Local)?, false),
        }
    }

    async fn sample(&self, ctx: &Ctx) -> Result<u64, CheckError> {
        match self {
            Sampler::Pid => crate::probe::process::rss_of_pid(ctx.target.pid()?),
            Sampler::Metric(http, sel) => {
                let samples = crate::probe::process::scrape(http).await?;
                select_series(&samples, sel).map(|v| v as u64)
            }
        }
    }
}

/// The one series `sel` picks out of a scrape. Several matching series (one per worker, say)
/// are an error naming them: reading the first, as this kind once did, let a leaking second
/// series pass unseen, and summing them would judge a different quantity than the policy
/// names.
pub fn select_series(samples: &[Sample], sel: &Selector) -> Result<f64, CheckError> {
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
    pub measured: Measured,
    /// (iterations done, bytes), the first at 0 after the warm-up.
    pub samples: Vec<(f64, f64)>,
    pub iterations_measured: u32,
    /// Extra rounds measured because the slope was undecided.
    pub extensions: u32,
    /// Measuring stopped because the deadline left no room for another round (rather than
    /// because the extensions were used up or the interval stopped straddling).
    pub out_of_time: bool,
    pub workload_failures: u64,
    pub first_failure: Option<String>,
    pub rate_limited_retries: u64,
    pub measure_seconds: f64,
}

/// The slope against the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slope {
    /// The whole interval at or below the limit.
    Within,
    /// The whole interval above it, and the later half not clearly below it: a leak.
    Above,
    /// The interval reaches both sides of the limit.
    Straddles,
    /// The whole interval above the limit but the later half's wholly below it: growth that
    /// decays (the allocator's arenas and caches settling), which a leak does not do. Seen
    /// under load: 1 288 B/iteration [1 120, 1 446] of RSS from a service without a leak.
    Settling,
}

/// `samples` judged against `limit`: the whole run's fit, its later half's, and the verdict.
fn decide(samples: &[(f64, f64)], limit: f64) -> Option<(Fit, Option<Fit>, Slope)> {
    let fit = theil_sen(samples, 1.96)?;
    // The slope of the later half alone: a leak grows at the same rate throughout, while the
    // allocator's warm-up (heap high-water mark, caches) decays towards zero.
    let late = theil_sen(&samples[samples.len() / 2..], 1.96);
    let slope = if fit.slope_high <= limit {
        Slope::Within
    } else if fit.slope_low <= limit {
        Slope::Straddles
    } else if late.is_some_and(|l| l.slope_high <= limit) {
        Slope::Settling
    } else {
        Slope::Above
    };
    Some((fit, late, slope))
}

pub async fn run(spec: &Spec, ctx: &Ctx) -> Result<Outcome, CheckError> {
    let m = measure(spec, ctx).await?;
    let mut out = judge(spec, &m);
    out.sent.push(format!(
        "{} × {} warm-up, then {} × {} measured, each on a connection of its own",
        spec.warmup, spec.request, m.iterations_measured, spec.request
    ));
    Ok(out)
}

async fn measure(spec: &Spec, ctx: &Ctx) -> Result<Measurements, CheckError> {
    let (measured, sampler) = Sampler::resolve(spec, ctx)?;
    let addrs: Vec<IpAddr> = std::iter::once(ctx.source)
        .chain(ctx.extra_sources.iter().copied())
        .collect();
    // Each workload request on a connection of its own. The target's per-connection state
    // (hyper sizes a connection's read buffer by its history) is not what an iteration leaves
    // behind, yet read as growth: +193 B/build of exact heap on the core service while the
    // workload moved to fresh addresses past the rate limiter (~19 KB per new connection),
    // −82 B/build with every connection opened beforehand (their buffers shrinking).
    let clients = addrs
        .iter()
        .map(|a| ctx.http_from_unpooled(*a))
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
    let mut samples: Vec<(f64, f64)> = vec![(0.0, sampler.sample(ctx).await? as f64)];
    let mut done = 0u32;
    let started = Instant::now();
    let limit = spec.max_growth_per_iteration.0 as f64;
    // Measure `iterations`; while the slope is undecided (its interval straddles the limit, or
    // the growth is settling), measure up to MAX_EXTENSIONS more rounds of `iterations` (the
    // interval narrows as samples accumulate, warm-up fades from the later half), as long as
    // the deadline leaves room for another round.
    let mut target = spec.iterations;
    let mut extensions = 0u32;
    let mut out_of_time = false;
    loop {
        while done < target {
            let step = every.min(target - done);
            work.run(step).await?;
            done += step;
            samples.push((done as f64, sampler.sample(ctx).await? as f64));
            if done.is_multiple_of(every * 10) {
                ctx.progress(&format!("iteration {done}/{target}"));
            }
        }
        let Some((fit, _, slope)) = decide(&samples, limit) else {
            break;
        };
        let round = started.elapsed().as_secs_f64() / f64::from(extensions + 1);
        let room = ctx
            .remaining()
            .is_ok_and(|r| r.as_secs_f64() > 2.0 * round + 5.0);
        if matches!(slope, Slope::Within | Slope::Above) || extensions >= MAX_EXTENSIONS {
            break;
        }
        if !room {
            out_of_time = true;
            break;
        }
        extensions += 1;
        target = target.saturating_add(spec.iterations);
        ctx.progress(&format!(
            "slope {:.0} B, interval {:.0}..{:.0}, {}: measuring {} more",
            fit.slope,
            fit.slope_low,
            fit.slope_high,
            if slope == Slope::Settling {
                "the later half settling below the limit"
            } else {
                "straddling the limit"
            },
            spec.iterations
        ));
    }
    let (workload_failures, first_failure) = work
        .failures
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Ok(Measurements {
        measured,
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

/// Judges the memory samples against the limit. Pure: no I/O, no clock.
///
/// FAIL only when the whole confidence interval is above the limit and the later half is not
/// clearly below it: RSS is noisy (the allocator grows and returns arenas in steps, and its
/// warm-up decays), and a good service must not fail on noise, while a leak keeps its rate.
/// PASS only when the whole interval is at or below it. An interval still straddling the
/// limit after the extensions, or growth still settling, shows neither a leak nor its
/// absence: INCONCLUSIVE, with the reason (a straddling interval once gave PASS for a leak at
/// 4× the limit under heavy noise).
pub fn judge(spec: &Spec, m: &Measurements) -> Outcome {
    let mut out = Outcome::default();
    let samples = &m.samples;
    let done = m.iterations_measured;
    let limit = spec.max_growth_per_iteration.0 as f64;
    let what = m.measured.name();
    let Some((fit, late, slope)) = decide(samples, limit) else {
        out.summary = format!(
            "{} {what} sample(s) over {done} iterations; limit {}",
            samples.len(),
            spec.max_growth_per_iteration
        );
        out.undecided(format!(
            "too few {what} samples to fit a slope (at least 3 are needed)"
        ));
        return out;
    };
    let ols = least_squares(samples).map(|(s, _)| s);
    let first = samples.first().map_or(0.0, |p| p.1);
    let last = samples.last().map_or(0.0, |p| p.1);
    out.observe(Observation::new(
        format!("{what} growth per iteration (Theil–Sen, 95% CI)"),
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
            match slope {
                Slope::Straddles => " — the interval reaches the limit: not shown to exceed it",
                Slope::Settling => " — the later half is below the limit: settling, not a leak's steady rate",
                Slope::Within | Slope::Above => "",
            }
        ),
        matches!(slope, Slope::Within | Slope::Straddles | Slope::Settling),
    ));
    let x_max = samples.last().map_or(0.0, |p| p.0);
    let mib = 1024.0 * 1024.0;
    out.charts.push(Chart {
        title: format!("{what} over {done} × {}", spec.request),
        kind: ChartKind::Scatter,
        x_label: "iteration".into(),
        y_label: format!("{what} (MiB)"),
        series: vec![
            Series {
                name: what.clone(),
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
    let size = |b: f64| {
        if b.abs() >= mib {
            format!("{:.1} MiB", b / mib)
        } else {
            format!("{:.1} KiB", b / 1024.0)
        }
    };
    out.summary = format!(
        "{:.0} B/iteration (95% CI {:.0}..{:.0}) over {done} iterations{}; {what} {} → {}; limit {}",
        fit.slope,
        fit.slope_low,
        fit.slope_high,
        late.map(|l| format!(", later half {:.0} B", l.slope))
            .unwrap_or_default(),
        size(first),
        size(last),
        spec.max_growth_per_iteration
    );
    let extensions = format!(
        "{} extension(s){}",
        m.extensions,
        if m.out_of_time {
            "; the deadline left no room for another"
        } else {
            ""
        }
    );
    match slope {
        Slope::Straddles => {
            out.undecided(format!(
            "the interval {:.0}..{:.0} B still straddles the limit {} after {done} iterations ({extensions}): {what} is too noisy to show a leak or its absence; use more iterations or a quieter target",
            fit.slope_low, fit.slope_high, spec.max_growth_per_iteration,
        ));
        }
        Slope::Settling => {
            out.undecided(format!(
            "{what} grew {:.0} B/iteration [{:.0}, {:.0}] over {done} iterations, but the later half only {:.0} B [{:.0}, {:.0}], below the limit {} ({extensions}): growth that decays is warm-up, not a leak's steady rate; use more warm-up or iterations",
            fit.slope,
            fit.slope_low,
            fit.slope_high,
            late.map_or(0.0, |l| l.slope),
            late.map_or(0.0, |l| l.slope_low),
            late.map_or(0.0, |l| l.slope_high),
            spec.max_growth_per_iteration,
        ));
        }
        Slope::Within | Slope::Above => (),
    }
    let (source, metric) = match &m.measured {
        Measured::Process => ("process", None),
        Measured::Series { selector, .. } => ("metric", Some(selector.as_str())),
    };
    out.evidence = serde_json::json!({
        "source": source,
        "metric": metric,
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
        "first_bytes": first,
        "last_bytes": last,
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
            measured: Measured::Process,
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

    /// RSS climbing `early` bytes per iteration for the first `knee` iterations, then
    /// `late` bytes per iteration: a settling allocator (early > late) or a leak (equal).
    fn two_rates(early: f64, late: f64, knee: f64, n: usize) -> Measurements {
        let mut m = measured(0.0, 0.0, n, MAX_EXTENSIONS);
        for (x, y) in &mut m.samples {
            *y += early * x.min(knee) + late * (*x - knee).max(0.0);
        }
        m
    }

    #[test]
    fn growth_that_decays_is_not_a_leak() {
        // The whole run reads above the limit, but the later half is flat: INCONCLUSIVE with
        // the reason, never FAIL (1 288 B [1 120, 1 446] of RSS without a leak, under load).
        let o = judge(&spec("1KiB"), &two_rates(4096.0, 0.0, 300.0, 61));
        assert_eq!(o.status(), Status::Inconclusive, "{}", o.summary);
        let why = o.inconclusive.unwrap();
        assert!(why.contains("later half only 0 B"), "{why}");
        assert!(why.contains("not a leak's steady rate"), "{why}");
        // A leak keeps its rate in both halves: FAIL.
        let o = judge(&spec("1KiB"), &two_rates(1300.0, 1300.0, 300.0, 61));
        assert_eq!(o.status(), Status::Fail, "{}", o.summary);
        // Settling towards a rate that is still over the limit: FAIL.
        let o = judge(&spec("1KiB"), &two_rates(4096.0, 1100.0, 300.0, 61));
        assert_eq!(o.status(), Status::Fail, "{}", o.summary);
        // The later half exactly at the limit is "not clearly above": settling.
        let o = judge(&spec("1KiB"), &two_rates(4096.0, 1024.0, 300.0, 61));
        assert_eq!(o.status(), Status::Inconclusive, "{}", o.summary);
    }

    #[test]
    fn a_gauge_names_itself_in_the_report() {
        let mut m = measured(100.0, 0.0, 21, 0);
        m.measured = Measured::Series {
            selector: "jvm_memory_used_bytes{area=\"heap\"}".into(),
            rss: false,
        };
        let o = judge(&spec("64B"), &m);
        assert_eq!(o.status(), Status::Fail, "{}", o.summary);
        assert!(o.summary.contains("`jvm_memory_used_bytes{area=\"heap\"}` 50.0 MiB"), "{}", o.summary);
        assert_eq!(o.evidence["source"], "metric");
        assert_eq!(o.evidence["metric"], "jvm_memory_used_bytes{area=\"heap\"}");
        assert!(o.observations[0].what.starts_with("`jvm_memory_used_bytes"));
    }

    #[test]
    fn source_is_a_name_or_a_gauge_with_labels() {
        let parse = |v: serde_json::Value| serde_json::from_value::<MemorySource>(v);
        assert_eq!(
            parse(serde_json::json!("process")).unwrap(),
            MemorySource::Rss(RssSource::Process)
        );
        let g = parse(serde_json::json!({"metric": "jvm_memory_used_bytes", "labels": {"area": "heap", "pool": "a\"b"}}))
            .unwrap();
        let MemorySource::Gauge(g) = g else {
            panic!("not a gauge: {g:?}")
        };
        let sel = g.selector().unwrap();
        let page = crate::probe::prom::parse(
            "jvm_memory_used_bytes{area=\"heap\",pool=\"a\\\"b\"} 10\n\
             jvm_memory_used_bytes{area=\"nonheap\",pool=\"a\\\"b\"} 20\n",
        );
        assert_eq!(select_series(&page, &sel).unwrap(), 10.0);
        assert!(parse(serde_json::json!("heap")).is_err());
        assert!(parse(serde_json::json!({"metric": "x", "label": {}})).is_err());
        let bad = Gauge {
            metric: "9lives".into(),
            labels: BTreeMap::new(),
        };
        assert!(bad.selector().is_err());
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
        let e = select_series(&page, &sel(DEFAULT_RSS_METRIC)).unwrap_err();
        assert_eq!(e.status(), Status::Error);
        let msg = e.to_string();
        assert!(msg.contains("matches 2 series"), "{msg}");
        assert!(msg.contains("worker=\"0\"") && msg.contains("worker=\"1\""), "{msg}");
        assert_eq!(
            select_series(&page, &sel("process_resident_memory_bytes{worker=\"1\"}")).unwrap(),
            2000.0
        );
        let e = select_series(&page, &sel("process_resident_memory_bytes{worker=\"9\"}"));
        assert_eq!(e.unwrap_err().status(), Status::Skip);
        let one = crate::probe::prom::parse("process_resident_memory_bytes 7e6\n");
        assert_eq!(select_series(&one, &sel(DEFAULT_RSS_METRIC)).unwrap(), 7e6);
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
