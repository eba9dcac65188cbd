//! A canary run: reach (or spawn) both versions, send the traffic, read the metrics at each
//! interval boundary, judge each interval as it ends (an interim score at or below
//! `marginal` stops the run with NO-GO), then judge the whole window and build the report.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ipnet::IpNet;
use tokio::time::Instant;

use super::judge::{self, Class, Input, MetricResult, Side};
use super::score::{self, Score};
use super::traffic::{self, Plan, Record, Role};
use crate::engine::plan::SourcePlan;
use crate::engine::run::{CheckFailure, STOP_GRACE, spawn_ready};
use crate::outcome::{Chart, ChartKind, Observation, Series, Status};
use crate::policy::canary::{CanarySpec, MetricSpec, Source};
use crate::policy::model::Severity;
use crate::probe::load::{Endpoint, Request};
use crate::report::{
    CanarySummary, CheckResult, Counts, IntervalScore, PolicyInfo, Report, SCHEMA_VERSION,
    TargetInfo, Verdict,
};
use crate::target::{ProcessControl, Target};

/// How the two versions are reached.
#[derive(Debug, Clone)]
pub enum Versions {
    /// Two running services.
    Urls { baseline: String, canary: String },
    /// Two instances of the bundled service, spawned with these profiles.
    Configs { baseline: PathBuf, canary: PathBuf },
}

/// Everything a canary run needs.
pub struct Options {
    pub spec: CanarySpec,
    pub policy: PolicyInfo,
    pub versions: Versions,
    /// The `preflight` executable, to spawn the bundled service.
    pub exe: PathBuf,
    /// `target.source_addresses` / `--source-address`.
    pub declared_sources: Vec<IpNet>,
    /// Progress lines (`interval 2/4: score 100`).
    pub progress: Arc<dyn Fn(&str) + Send + Sync>,
}

/// After an interval ends, how long its last requests get to come back before the interim
/// judgement (they are all in the final one whatever happens).
const SETTLE: Duration = Duration::from_millis(500);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the comparison and returns its report.
pub async fn run(opts: Options) -> Result<Report, CheckFailure> {
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let begun = Instant::now();
    let spec = &opts.spec;
    let (targets, labels) = reach(&opts).await?;
    let result = compare(&opts, &targets).await;
    for t in &targets {
        if let Some(ProcessControl::Spawned(s)) = &t.process {
            s.stop(STOP_GRACE).await;
        }
    }
    let compared = result?;
    let final_score = score::score(spec, &compared.results);
    let mut results = vec![score_result(spec, &final_score, &compared)];
    results.extend(compared.results.iter().map(|m| metric_result(m, &compared)));
    let mut counts = Counts::default();
    for r in &results {
        counts.add(r.status);
    }
    let (verdict, reason) = match &compared.stopped_early {
        Some(why) => (Verdict::NoGo, why.clone()),
        None => (final_score.verdict, final_score.reason.clone()),
    };
    Ok(Report {
        schema_version: SCHEMA_VERSION,
        tool: format!("preflight {}", env!("CARGO_PKG_VERSION")),
        policy: opts.policy.clone(),
        target: TargetInfo {
            url: format!("baseline {} · canary {}", labels[0], labels[1]),
            spawned: matches!(opts.versions, Versions::Configs { .. }),
            config: None,
            capabilities: vec![],
            address: None,
            sources: Some(compared.sources.clone()),
            warnings: vec![],
            version: None,
        },
        started_at,
        duration_ms: begun.elapsed().as_millis() as u64,
        verdict,
        verdict_reason: reason,
        block_on: vec![Severity::Critical, Severity::High],
        counts,
        waivers: vec![],
        results,
        fleet: None,
        canary: Some(CanarySummary {
            baseline: labels[0].clone(),
            canary: labels[1].clone(),
            score: final_score.value,
            pass: spec.score.pass,
            marginal: spec.score.marginal,
            confidence: spec.confidence,
            requests: compared.requests,
            stopped_early: compared.stopped_early.clone(),
            intervals: compared.intervals.clone(),
        }),
    })
}

/// Both targets, ready, and how to name them.
async fn reach(opts: &Options) -> Result<(Vec<Target>, [String; 2]), CheckFailure> {
    match &opts.versions {
        Versions::Urls { baseline, canary } => {
            let mut out = Vec::new();
            for url in [baseline, canary] {
                let mut t = Target::remote(url);
                t.resolve_address(Duration::from_secs(5)).await;
                out.push(t);
            }
            Ok((out, [baseline.clone(), canary.clone()]))
        }
        Versions::Configs { baseline, canary } => {
            (opts.progress)("starting both versions of the core service");
            let (b, c) = tokio::join!(
                spawn_ready(&opts.exe, baseline),
                spawn_ready(&opts.exe, canary)
            );
            let label = |p: &PathBuf, t: &Target| format!("{} ({})", t.url, p.display());
            match (b, c) {
                (Ok(mut b), Ok(mut c)) => {
                    b.resolve_address(Duration::from_secs(5)).await;
                    c.resolve_address(Duration::from_secs(5)).await;
                    let labels = [label(baseline, &b), label(canary, &c)];
                    Ok((vec![b, c], labels))
                }
                (b, c) => {
                    let mut why = Vec::new();
                    for (name, r) in [("baseline", b), ("canary", c)] {
                        match r {
                            Ok(t) => {
                                if let Some(ProcessControl::Spawned(s)) = &t.process {
                                    s.stop(STOP_GRACE).await;
                                }
                            }
                            Err(e) => why.push(format!("{name}: {e}")),
                        }
                    }
                    Err(CheckFailure::Usage(format!(
                        "could not start the core service: {}",
                        why.join("; ")
                    )))
                }
            }
        }
    }
}

/// What the comparison produced.
struct Compared {
    results: Vec<MetricResult>,
    intervals: Vec<IntervalScore>,
    stopped_early: Option<String>,
    requests: [u64; 2],
    records: [Vec<Record>; 2],
    window: (f64, f64),
    sources: String,
}

/// Readings of one `/metrics`-or-PromQL metric at each boundary, per side.
pub(super) type Readings = BTreeMap<String, Vec<[Result<f64, String>; 2]>>;

async fn compare(opts: &Options, targets: &[Target]) -> Result<Compared, CheckFailure> {
    let spec = &opts.spec;
    let t = &spec.traffic;
    let mut eps = Vec::new();
    for target in targets {
        eps.push(
            Endpoint::for_target(target)
                .await
                .map_err(|e| CheckFailure::Usage(format!("{}: {e}", target.url)))?,
        );
    }
    let address = targets[0].reach.address.map(|a| a.ip());
    let plan = SourcePlan::new(address, &opts.declared_sources).map_err(CheckFailure::Usage)?;
    let conns = t.connections as usize;
    let sources_of = |i: usize| -> Vec<IpAddr> {
        let s = plan.assign(i, 2);
        std::iter::once(s.own).chain(s.extra).take(conns).collect()
    };
    let mut mix = Vec::new();
    for w in &t.requests {
        mix.push((
            Request::new(&w.request, None).map_err(|e| CheckFailure::Usage(e.to_string()))?,
            w.weight,
        ));
    }
    let traffic_plan = Plan {
        mix,
        rate: t.rate.per_second(),
        duration: t.duration.get(),
        connections: conns,
        request_timeout: REQUEST_TIMEOUT,
    };
    let warmup = t.warmup.get().as_secs_f64();
    let interval = t.interval.get().as_secs_f64();
    let duration = t.duration.get().as_secs_f64();
    let boundaries: Vec<f64> = {
        let mut b = vec![warmup];
        while b.last().is_some_and(|x| x + interval <= duration + 1e-9) {
            b.push(b.last().copied().unwrap_or(warmup) + interval);
        }
        b
    };
    let k = (boundaries.len() - 1).max(1);
    // Interim judgements share the error rate out over the intervals (Bonferroni).
    let interim_confidence = 1.0 - (1.0 - spec.confidence) / k as f64;

    let reader = MetricReader::new(spec, targets)?;
    let mut readings: Readings = BTreeMap::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stop = Arc::new(AtomicBool::new(false));
    let sides = [
        (Role::Baseline, eps[0].clone(), sources_of(0)),
        (Role::Canary, eps[1].clone(), sources_of(1)),
    ];
    let t0 = Instant::now();
    let traffic = tokio::spawn({
        let stop = stop.clone();
        async move { traffic::run(sides, &traffic_plan, tx, stop).await }
    });
    let mut records: [Vec<Record>; 2] = [Vec::new(), Vec::new()];
    let mut intervals = Vec::new();
    let mut stopped_early = None;
    let mut judged_until = warmup;
    let mut final_reading = 0;
    for (i, at) in boundaries.iter().enumerate() {
        tokio::time::sleep_until(t0 + Duration::from_secs_f64(*at)).await;
        if traffic.is_finished() && i + 1 < boundaries.len() {
            // It ended before its time: it failed (an unreachable version); say so below.
            break;
        }
        reader.read(&mut readings).await;
        final_reading = i;
        if i == 0 {
            (opts.progress)(&format!("warm-up done; judging {} intervals", k));
            continue;
        }
        tokio::time::sleep(SETTLE).await;
        drain(&mut rx, &mut records);
        let from = boundaries[i - 1];
        let (results, sides) = judge_window(
            spec,
            &records,
            &readings,
            (from, *at),
            i - 1,
            i,
            interim_confidence,
        );
        let s = score::score(spec, &results);
        (opts.progress)(&format!(
            "interval {i}/{k}: {}",
            s.value
                .map_or("not scored".into(), |v| format!("score {v:.0}"))
        ));
        judged_until = *at;
        let verdict = s.verdict;
        intervals.push(interval_score(i - 1, (from, *at), &s, &results, &sides));
        if verdict == Verdict::NoGo {
            stopped_early = Some(format!(
                "interval {i} of {k} ({from:.0}–{at:.0} s) scored at or below marginal {}: {}",
                spec.score.marginal, s.reason
            ));
            stop.store(true, Ordering::Relaxed);
            break;
        }
    }
    let sent = traffic
        .await
        .map_err(|e| CheckFailure::Usage(format!("the traffic task failed: {e}")))?;
    sent.map_err(|e| CheckFailure::Usage(e.to_string()))?;
    drain(&mut rx, &mut records);
    let end = if stopped_early.is_some() {
        judged_until
    } else {
        // The traffic ran past the last interval boundary: one more reading at its end, so
        // the whole-window judgement reads what the whole window did.
        if boundaries.last().is_some_and(|b| *b < duration - 1e-9) {
            reader.read(&mut readings).await;
            final_reading += 1;
        }
        duration
    };
    let (results, _) = judge_window(
        spec,
        &records,
        &readings,
        (warmup, end),
        0,
        final_reading.max(1),
        spec.confidence,
    );
    Ok(Compared {
        results,
        intervals,
        stopped_early,
        requests: [records[0].len() as u64, records[1].len() as u64],
        records,
        window: (warmup, end),
        sources: plan.describe(),
    })
}

pub(super) fn drain(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Record>,
    records: &mut [Vec<Record>; 2],
) {
    while let Ok(r) = rx.try_recv() {
        records[(r.role == Role::Canary) as usize].push(r);
    }
}

/// The traffic of both sides intended in `[from, to)` seconds.
fn sides(spec: &CanarySpec, records: &[Vec<Record>; 2], (from, to): (f64, f64)) -> [Side; 2] {
    let side = |rs: &Vec<Record>| {
        let mut s = Side::default();
        for r in rs
            .iter()
            .filter(|r| r.intended_s >= from && r.intended_s < to)
        {
            s.requests += 1;
            match r.status {
                Some(st) if !spec.traffic.is_error(st) => s.latency_ms.push(r.latency_ms),
                _ => s.errors += 1,
            }
        }
        s
    };
    [side(&records[0]), side(&records[1])]
}

/// Every metric judged over `[from, to)`: the traffic's, and the readings between boundary
/// `b_from` and `b_to`.
pub(super) fn judge_window(
    spec: &CanarySpec,
    records: &[Vec<Record>; 2],
    readings: &Readings,
    window: (f64, f64),
    b_from: usize,
    b_to: usize,
    confidence: f64,
) -> (Vec<MetricResult>, [Side; 2]) {
    let s = sides(spec, records, window);
    let results = spec
        .metrics
        .iter()
        .map(|m| {
            let input = match m.source {
                Source::Latency | Source::Tail | Source::Errors => Input::Traffic {
                    baseline: &s[0],
                    canary: &s[1],
                },
                Source::Counter => counter_input(readings.get(&m.name), b_from, b_to, &s),
                Source::Gauge | Source::Promql => value_input(readings.get(&m.name), b_to),
            };
            judge::judge(m, &input, confidence, spec.min_samples)
        })
        .collect();
    (results, s)
}

fn counter_input<'a>(
    r: Option<&Vec<[Result<f64, String>; 2]>>,
    from: usize,
    to: usize,
    s: &[Side; 2],
) -> Input<'a> {
    let Some(r) = r else {
        return Input::Missing("never read".into());
    };
    let at = |i: usize, side: usize| -> Result<f64, String> {
        r.get(i)
            .ok_or_else(|| format!("no reading at boundary {i}"))?[side]
            .clone()
    };
    let delta = |side: usize| -> Result<f64, String> { Ok(at(to, side)? - at(from, side)?) };
    match (delta(0), delta(1)) {
        (Ok(b), Ok(c)) => Input::Counter {
            baseline: b.max(0.0),
            canary: c.max(0.0),
            n_baseline: s[0].requests,
            n_canary: s[1].requests,
        },
        (Err(e), _) | (_, Err(e)) => Input::Missing(e),
    }
}

fn value_input<'a>(r: Option<&Vec<[Result<f64, String>; 2]>>, at: usize) -> Input<'a> {
    match r.and_then(|r| r.get(at)) {
        Some([Ok(b), Ok(c)]) => Input::Value {
            baseline: *b,
            canary: *c,
        },
        Some([Err(e), _]) | Some([_, Err(e)]) => Input::Missing(e.clone()),
        None => Input::Missing(format!("no reading at boundary {at}")),
    }
}

pub(super) fn interval_score(
    index: usize,
    (from, to): (f64, f64),
    s: &Score,
    results: &[MetricResult],
    sides: &[Side; 2],
) -> IntervalScore {
    IntervalScore {
        index,
        start_s: from,
        end_s: to,
        score: s.value,
        verdict: s.verdict,
        n_baseline: sides[0].requests,
        n_canary: sides[1].requests,
        regressed: results
            .iter()
            .filter(|r| r.failed())
            .map(|r| r.name.clone())
            .collect(),
        reason: s.reason.clone(),
        step: None,
        weight: None,
    }
}

/// One judged interval as an observation: its score against `marginal`, n per side, what
/// regressed; a live canary's step and weight when it has them.
pub(super) fn interval_observation(i: &IntervalScore, marginal: f64) -> Observation {
    let at = match (i.step, i.weight) {
        (Some(s), Some(w)) => format!("step {s} at {w}%, "),
        _ => String::new(),
    };
    Observation::new(
        format!(
            "interval {} ({at}{:.0}–{:.0} s)",
            i.index + 1,
            i.start_s,
            i.end_s
        ),
        format!("score > {marginal}"),
        format!(
            "{} (n = {} / {}){}",
            i.score.map_or("not scored".into(), |v| format!("{v:.0}")),
            i.n_baseline,
            i.n_canary,
            if i.regressed.is_empty() {
                String::new()
            } else {
                format!(", regressed: {}", i.regressed.join(", "))
            }
        ),
        i.verdict != Verdict::NoGo,
    )
}

/// Reads `/metrics` of both versions (counters, gauges) and PromQL, once per boundary.
pub(super) struct MetricReader {
    scraped: Vec<MetricSpec>,
    promql: Vec<MetricSpec>,
    urls: [String; 2],
    instances: [String; 2],
    client: reqwest::Client,
    prom: Option<crate::probe::promql::PromClient>,
}

impl MetricReader {
    pub(super) fn new(spec: &CanarySpec, targets: &[Target]) -> Result<Self, CheckFailure> {
        let of = |s: Source| -> Vec<MetricSpec> {
            spec.metrics
                .iter()
                .filter(|m| m.source == s)
                .cloned()
                .collect()
        };
        let mut scraped = of(Source::Counter);
        scraped.extend(of(Source::Gauge));
        let host = |t: &Target| {
            t.host_port()
                .map(|(h, p)| {
                    if h.contains(':') {
                        format!("[{h}]:{p}")
                    } else {
                        format!("{h}:{p}")
                    }
                })
                .unwrap_or_else(|_| t.url.clone())
        };
        let p = spec.prometheus.as_ref();
        let instances = [
            p.and_then(|p| p.baseline_instance.clone())
                .unwrap_or_else(|| host(&targets[0])),
            p.and_then(|p| p.canary_instance.clone())
                .unwrap_or_else(|| host(&targets[1])),
        ];
        let prom = match p {
            Some(p) => Some(
                crate::probe::promql::PromClient::new(&p.url)
                    .map_err(|e| CheckFailure::Usage(format!("canary.prometheus.url: {e}")))?,
            ),
            None => None,
        };
        let client = crate::http_client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| CheckFailure::Usage(format!("building the HTTP client: {e}")))?;
        Ok(MetricReader {
            scraped,
            promql: of(Source::Promql),
            urls: [targets[0].url.clone(), targets[1].url.clone()],
            instances,
            client,
            prom,
        })
    }

    pub(super) async fn read(&self, out: &mut Readings) {
        if !self.scraped.is_empty() {
            let (b, c) = tokio::join!(self.scrape(0), self.scrape(1));
            for m in &self.scraped {
                let value = |r: &Result<Vec<crate::probe::prom::Sample>, String>| {
                    r.clone().and_then(|samples| sum(m, &samples))
                };
                out.entry(m.name.clone())
                    .or_default()
                    .push([value(&b), value(&c)]);
            }
        }
        for m in &self.promql {
            let mut pair = [Err(String::new()), Err(String::new())];
            for (i, role) in [Role::Baseline, Role::Canary].into_iter().enumerate() {
                let q = m
                    .query
                    .clone()
                    .unwrap_or_default()
                    .replace("{{instance}}", &self.instances[i])
                    .replace("{{role}}", role.as_str());
                pair[i] = match &self.prom {
                    Some(p) => match p.query(&q, None).await {
                        Ok(r) => r.single_value().map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    },
                    None => Err("no `prometheus:` in the canary section".into()),
                };
            }
            out.entry(m.name.clone()).or_default().push(pair);
        }
    }

    async fn scrape(&self, side: usize) -> Result<Vec<crate::probe::prom::Sample>, String> {
        let url = format!("{}/metrics", self.urls[side]);
        let r = self
            .client
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if !r.status().is_success() {
            return Err(format!("GET {url}: status {}", r.status().as_u16()));
        }
        let text = r.text().await.map_err(|e| format!("GET {url}: {e}"))?;
        Ok(crate::probe::prom::parse(&text))
    }
}

/// The sum of the samples of `m.metric` that carry `m.labels`.
fn sum(m: &MetricSpec, samples: &[crate::probe::prom::Sample]) -> Result<f64, String> {
    let name = m.metric.as_deref().unwrap_or_default();
    let hits: Vec<f64> = samples
        .iter()
        .filter(|s| s.name == name && m.labels.iter().all(|(k, v)| s.label(k) == v))
        .map(|s| s.value)
        .collect();
    if hits.is_empty() {
        let labels: Vec<String> = m
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        // A counter not yet incremented is often not exposed at all: read as 0.
        if m.source == Source::Counter {
            return Ok(0.0);
        }
        return Err(format!(
            "no sample of {name}{{{}}} on /metrics",
            labels.join(",")
        ));
    }
    Ok(hits.iter().sum())
}

/// The score as the report's first result: one observation per interval, the score over time.
fn score_result(spec: &CanarySpec, s: &Score, c: &Compared) -> CheckResult {
    let status = match s.verdict {
        Verdict::Go => Status::Pass,
        Verdict::NoGo => Status::Fail,
        Verdict::Inconclusive => Status::Inconclusive,
    };
    let mut r = CheckResult::new("canary-score", "canary/score", Severity::Critical, status);
    r.blocking = status != Status::Pass;
    r.summary = match (&c.stopped_early, s.value) {
        (Some(why), _) => format!("stopped early: {why}"),
        (None, _) => s.reason.clone(),
    };
    if c.stopped_early.is_some() {
        r.status = Status::Fail;
    }
    r.observations = c
        .intervals
        .iter()
        .map(|i| interval_observation(i, spec.score.marginal))
        .collect();
    r.sent = vec![format!(
        "{} requests to the baseline, {} to the canary ({} per version, {} each way)",
        c.requests[0], c.requests[1], spec.traffic.rate, spec.traffic.duration
    )];
    r.requests = c.requests[0] + c.requests[1];
    r.charts = vec![Chart {
        title: "score per interval".into(),
        kind: ChartKind::Line,
        x_label: "s".into(),
        y_label: "score".into(),
        series: vec![Series {
            name: "score".into(),
            points: c
                .intervals
                .iter()
                .filter_map(|i| i.score.map(|v| (i.end_s, v)))
                .collect(),
        }],
    }];
    r.evidence = serde_json::json!({
        "score": s.value, "pass": spec.score.pass, "marginal": spec.score.marginal,
        "window_s": [c.window.0, c.window.1],
    });
    r
}

/// One metric's final judgement as a report result.
fn metric_result(m: &MetricResult, c: &Compared) -> CheckResult {
    let mut r = metric_check(m);
    if matches!(m.source, Source::Latency | Source::Tail) {
        r.charts = vec![ecdf_chart(c)];
    }
    r
}

/// One judged metric as a report row (no chart).
pub(super) fn metric_check(m: &MetricResult) -> CheckResult {
    let status = match m.class {
        Class::Pass => Status::Pass,
        Class::High | Class::Low => Status::Fail,
        Class::NoData => Status::Inconclusive,
    };
    let kind = format!(
        "canary/{}",
        serde_json::to_value(m.source)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    );
    let severity = if m.critical {
        Severity::Critical
    } else {
        Severity::High
    };
    let mut r = CheckResult::new(&m.name, &kind, severity, status);
    r.blocking = status != Status::Pass;
    r.summary = match m.class {
        Class::Pass => format!("no regression: {}", m.observed),
        Class::High => format!("regressed (higher): {}", m.observed),
        Class::Low => format!("regressed (lower): {}", m.observed),
        Class::NoData => format!("not judged: {}", m.observed),
    };
    r.observations = vec![Observation::new(
        format!("{} of the canary against the baseline", m.name),
        m.expected.clone(),
        m.observed.clone(),
        !m.failed(),
    )];
    r.evidence = m.evidence.clone();
    r
}

/// Both latency distributions over the judged window, as empirical CDFs (≤ 200 points each).
fn ecdf_chart(c: &Compared) -> Chart {
    let series = [Role::Baseline, Role::Canary]
        .iter()
        .enumerate()
        .map(|(i, role)| {
            let mut v: Vec<f64> = c.records[i]
                .iter()
                .filter(|r| {
                    r.status.is_some() && r.intended_s >= c.window.0 && r.intended_s < c.window.1
                })
                .map(|r| r.latency_ms)
                .collect();
            v.sort_by(f64::total_cmp);
            let n = v.len();
            let step = (n / 200).max(1);
            let mut points: Vec<(f64, f64)> = (0..n)
                .step_by(step)
                .map(|k| (v[k], (k + 1) as f64 / n as f64))
                .collect();
            if let Some(last) = v.last() {
                points.push((*last, 1.0));
            }
            Series {
                name: role.as_str().into(),
                points,
            }
        })
        .collect();
    Chart {
        title: "latency distribution (ECDF)".into(),
        kind: ChartKind::Steps,
        x_label: "ms".into(),
        y_label: "share of requests".into(),
        series,
    }
}
