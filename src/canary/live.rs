//! The live canary (`preflight canary --listen`): real traffic through [`proxy`] to two
//! running versions, a share of clients on the canary that grows step by step, each interval
//! judged as it ends by the same judge and score as the synthetic comparison.
//!
//! - NO-GO in any interval (or the canary refusing connections): the weight goes to 0 at
//!   once, `on_rollback` runs, the verdict is NO-GO.
//! - GO in `step_intervals` intervals of a step: the next step's weight; after the last
//!   step, `on_promote` runs once and the verdict is GO.
//! - INCONCLUSIVE (too little traffic to judge): the step is extended, up to
//!   `max_inconclusive` such intervals; then the weight goes to 0 and the verdict is
//!   INCONCLUSIVE — never a promotion on no data.
//! - The shutdown future (SIGTERM) ends the run between intervals with a final report.
//!
//! Every decision is a line of progress and an entry of the report (`decisions`).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::proxy::{self, Routing, Sticky, Upstream};
use super::run::{
    MetricReader, Readings, drain, interval_observation, interval_score, judge_window, metric_check,
};
use super::score;
use super::traffic::Record;
use crate::engine::run::CheckFailure;
use crate::outcome::Status;
use crate::policy::canary::CanarySpec;
use crate::policy::model::Severity;
use crate::report::{
    CanarySummary, CheckResult, Counts, IntervalScore, PolicyInfo, Report, SCHEMA_VERSION,
    TargetInfo, Verdict,
};
use crate::target::Target;

/// After an interval ends, how long its last requests get to come back before it is judged.
const SETTLE: Duration = Duration::from_millis(300);

/// Everything a live canary needs.
pub struct Options {
    pub spec: CanarySpec,
    pub policy: PolicyInfo,
    /// Where the proxy listens (`127.0.0.1:0`: a free port, reported to `on_listening`).
    pub listen: SocketAddr,
    /// Where the proxy's own `/metrics` is served, if anywhere (reported to `progress`).
    pub metrics_listen: Option<SocketAddr>,
    pub baseline: String,
    pub canary: String,
    /// The canary's share at each step, in percent, increasing.
    pub steps: Vec<f64>,
    pub interval: Duration,
    /// GO intervals each step needs before the next.
    pub step_intervals: u32,
    /// INCONCLUSIVE intervals a step may add before the run ends INCONCLUSIVE.
    pub max_inconclusive: u32,
    /// Shell commands run once on the decision (`sh -c`), with `PREFLIGHT_VERDICT`,
    /// `PREFLIGHT_REASON` and `PREFLIGHT_WEIGHT` in their environment.
    pub on_promote: Option<String>,
    pub on_rollback: Option<String>,
    /// How long the proxy keeps serving at the final weight (100 % after a promotion, 0 %
    /// otherwise) after the decision, so the hooks can switch the real routing first.
    pub linger: Duration,
    pub sticky: Sticky,
    /// `Preflight-Canary-Side` on every answer.
    pub tag: bool,
    pub on_listening: Box<dyn FnOnce(SocketAddr) + Send>,
    pub progress: Arc<dyn Fn(&str) + Send + Sync>,
    /// Resolves when the run must stop (SIGTERM).
    pub shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
}

/// One decision of the run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Decision {
    /// Seconds after the proxy started.
    pub at_s: f64,
    pub step: usize,
    pub weight: f64,
    pub what: String,
}

/// How the steps ended.
enum End {
    Promoted,
    RolledBack(String),
    Undecided(String),
    Stopped(String),
}

/// Runs the live canary to its decision and returns the report (`canary.decisions` holds
/// every step, weight, score and verdict).
pub async fn run(mut opts: Options) -> Result<Report, CheckFailure> {
    let usage = |e: String| CheckFailure::Usage(e);
    let upstreams = [
        Upstream::parse(&opts.baseline).map_err(usage)?,
        Upstream::parse(&opts.canary).map_err(usage)?,
    ];
    let spec = opts.spec.clone();
    let targets = [Target::remote(&opts.baseline), Target::remote(&opts.canary)];
    let reader = MetricReader::new(&spec, &targets)?;
    let routing = Arc::new(Routing::new(opts.sticky.clone(), opts.tag));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Record>();
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let t0 = Instant::now();
    let proxy = proxy::start(opts.listen, upstreams, routing.clone(), tx, t0)
        .await
        .map_err(|e| usage(format!("listening on {}: {e}", opts.listen)))?;
    (std::mem::replace(&mut opts.on_listening, Box::new(|_| {})))(proxy.addr);
    let metrics = match opts.metrics_listen {
        Some(at) => {
            let (addr, stop) = proxy::serve_metrics(at, routing.clone())
                .await
                .map_err(|e| usage(format!("--metrics-listen {at}: {e}")))?;
            (opts.progress)(&format!("proxy metrics on http://{addr}/metrics"));
            Some(stop)
        }
        None => None,
    };

    let progress = opts.progress.clone();
    let mut decisions: Vec<Decision> = Vec::new();
    let mut decide = |step: usize, weight: f64, what: String| {
        progress(&format!("step {}: {weight}% — {what}", step + 1));
        decisions.push(Decision {
            at_s: t0.elapsed().as_secs_f64(),
            step: step + 1,
            weight,
            what,
        });
    };

    let mut readings: Readings = Default::default();
    reader.read(&mut readings).await;
    let planned = (opts.steps.len() as u32 * opts.step_intervals).max(1);
    // Interim judgements share the error rate out over the planned intervals (Bonferroni).
    let confidence = 1.0 - (1.0 - spec.confidence) / planned as f64;
    let mut records: [Vec<Record>; 2] = [Vec::new(), Vec::new()];
    let mut intervals: Vec<IntervalScore> = Vec::new();
    let mut last_results = Vec::new();
    let mut boundary = 0usize;
    let mut from = 0.0f64;
    let mut step = 0usize;
    let end = 'steps: loop {
        let Some(&weight) = opts.steps.get(step) else {
            break End::Promoted;
        };
        routing.set_weight(weight);
        routing.set_step(step + 1);
        decide(step, weight, format!("canary weight set to {weight}%"));
        let (mut good, mut undecided) = (0u32, 0u32);
        while good < opts.step_intervals {
            let due = t0 + Duration::from_secs_f64(from) + opts.interval;
            // Wake early when the canary stops answering: that is decided now.
            let stopped = loop {
                let next = (Instant::now() + Duration::from_millis(100)).min(due);
                tokio::select! {
                    _ = &mut opts.shutdown => break true,
                    _ = tokio::time::sleep_until(next) => {}
                }
                if Instant::now() >= due || routing.canary_down() {
                    break false;
                }
            };
            if stopped {
                break 'steps End::Stopped(format!(
                    "stopped (SIGTERM) during step {} at {weight}%",
                    step + 1
                ));
            }
            let to = t0.elapsed().as_secs_f64();
            tokio::time::sleep(SETTLE).await;
            reader.read(&mut readings).await;
            boundary += 1;
            drain(&mut rx, &mut records);
            if routing.canary_down() {
                routing.set_weight(0.0);
                break 'steps End::RolledBack(format!(
                    "the canary stopped answering (connection refused) in step {} at {weight}%: \
                     {} request(s) to it failed, {} were retried on the baseline",
                    step + 1,
                    routing.failures[1].load(std::sync::atomic::Ordering::Relaxed),
                    routing
                        .failed_over
                        .load(std::sync::atomic::Ordering::Relaxed)
                ));
            }
            let (results, sides) = judge_window(
                &spec,
                &records,
                &readings,
                (from, to),
                boundary - 1,
                boundary,
                confidence,
            );
            let s = score::score(&spec, &results);
            routing.set_score(s.value);
            let mut i = interval_score(intervals.len(), (from, to), &s, &results, &sides);
            i.step = Some(step + 1);
            i.weight = Some(weight);
            progress_interval(&*opts.progress, &i);
            let verdict = s.verdict;
            intervals.push(i);
            last_results = results;
            // Judged records are not needed again: memory stays bounded however long it runs.
            from = to;
            for r in records.iter_mut() {
                r.retain(|x| x.intended_s >= from);
            }
            match verdict {
                Verdict::NoGo => {
                    routing.set_weight(0.0);
                    break 'steps End::RolledBack(format!(
                        "interval {} (step {} at {weight}%) scored at or below marginal {}: {}",
                        intervals.len(),
                        step + 1,
                        spec.score.marginal,
                        s.reason
                    ));
                }
                Verdict::Go => good += 1,
                Verdict::Inconclusive => {
                    undecided += 1;
                    if undecided > opts.max_inconclusive {
                        routing.set_weight(0.0);
                        break 'steps End::Undecided(format!(
                            "step {} at {weight}% could not be judged in {undecided} intervals \
                             (limit {}): {}",
                            step + 1,
                            opts.max_inconclusive,
                            s.reason
                        ));
                    }
                }
            }
        }
        decide(step, weight, format!("{good} interval(s) GO: step passed"));
        step += 1;
    };

    let weight = routing.weight();
    let (verdict, reason, hook) = match &end {
        End::Promoted => {
            routing.set_weight(100.0);
            (
                Verdict::Go,
                format!("every step passed up to {weight}%: promoted"),
                opts.on_promote.clone(),
            )
        }
        End::RolledBack(why) => (
            Verdict::NoGo,
            format!("rolled back: {why}"),
            opts.on_rollback.clone(),
        ),
        End::Undecided(why) => (Verdict::Inconclusive, format!("not promoted: {why}"), None),
        End::Stopped(why) => (Verdict::Inconclusive, format!("not promoted: {why}"), None),
    };
    decide(
        step.min(opts.steps.len().saturating_sub(1)),
        routing.weight(),
        format!("{}: {reason}", verdict.as_str()),
    );
    // Requests routed before the weight changed have been counted within a few
    // microseconds; from here on the canary's count must not move unless it was promoted.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let canary_at_decision = routing.requests[1].load(std::sync::atomic::Ordering::SeqCst);
    if let Some(cmd) = hook {
        let what = match run_hook(&cmd, verdict, &reason, routing.weight()).await {
            Ok(code) => format!("ran `{cmd}`: exit {code}"),
            Err(e) => format!("could not run `{cmd}`: {e}"),
        };
        decide(
            step.min(opts.steps.len().saturating_sub(1)),
            routing.weight(),
            what,
        );
    }
    if !opts.linger.is_zero() {
        tokio::select! {
            _ = &mut opts.shutdown => {}
            _ = tokio::time::sleep(opts.linger) => {}
        }
    }
    proxy.stop(Duration::from_secs(10)).await;
    if let Some(stop) = metrics {
        let _ = stop.send(());
    }
    drain(&mut rx, &mut records);

    let requests = [
        routing.requests[0].load(std::sync::atomic::Ordering::Relaxed),
        routing.requests[1].load(std::sync::atomic::Ordering::Relaxed),
    ];
    let mut decision = CheckResult::new(
        "canary-live",
        "canary/live",
        Severity::Critical,
        match verdict {
            Verdict::Go => Status::Pass,
            Verdict::NoGo => Status::Fail,
            Verdict::Inconclusive => Status::Inconclusive,
        },
    );
    decision.blocking = verdict != Verdict::Go;
    decision.summary = reason.clone();
    decision.observations = intervals
        .iter()
        .map(|i| interval_observation(i, spec.score.marginal))
        .collect();
    decision.evidence = serde_json::json!({
        "decisions": decisions,
        "requests": requests,
        "canary_requests_at_decision": canary_at_decision,
        "failed_over": routing.failed_over.load(std::sync::atomic::Ordering::Relaxed),
        "upstream_failures": [
            routing.failures[0].load(std::sync::atomic::Ordering::Relaxed),
            routing.failures[1].load(std::sync::atomic::Ordering::Relaxed),
        ],
    });
    let mut results = vec![decision];
    results.extend(last_results.iter().map(metric_check));
    let mut counts = Counts::default();
    for r in &results {
        counts.add(r.status);
    }
    Ok(Report {
        schema_version: SCHEMA_VERSION,
        tool: format!("preflight {}", env!("CARGO_PKG_VERSION")),
        policy: opts.policy.clone(),
        target: TargetInfo {
            url: format!("live: baseline {} · canary {}", opts.baseline, opts.canary),
            sources: Some(format!(
                "real traffic through the proxy on {}",
                proxy_addr_text(opts.listen)
            )),
            ..TargetInfo::default()
        },
        started_at,
        duration_ms: t0.elapsed().as_millis() as u64,
        verdict,
        verdict_reason: reason.clone(),
        block_on: vec![Severity::Critical, Severity::High],
        counts,
        waivers: vec![],
        results,
        fleet: None,
        canary: Some(CanarySummary {
            baseline: opts.baseline.clone(),
            canary: opts.canary.clone(),
            score: intervals.last().and_then(|i| i.score),
            pass: spec.score.pass,
            marginal: spec.score.marginal,
            confidence: spec.confidence,
            requests,
            stopped_early: match &end {
                End::Promoted => None,
                _ => Some(reason),
            },
            intervals,
        }),
    })
}

fn proxy_addr_text(a: SocketAddr) -> String {
    a.to_string()
}

fn progress_interval(progress: &(dyn Fn(&str) + Send + Sync), i: &IntervalScore) {
    progress(&format!(
        "interval {} (step {} at {}%): {} — n = {} / {}; {}",
        i.index + 1,
        i.step.unwrap_or(0),
        i.weight.unwrap_or(0.0),
        i.score
            .map_or("not scored".into(), |v| format!("score {v:.0}")),
        i.n_baseline,
        i.n_canary,
        i.reason
    ));
}

/// Runs a hook with `sh -c`, bounded to five minutes; its exit code.
async fn run_hook(cmd: &str, verdict: Verdict, reason: &str, weight: f64) -> Result<i32, String> {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("PREFLIGHT_VERDICT", verdict.as_str())
        .env("PREFLIGHT_REASON", reason)
        .env("PREFLIGHT_WEIGHT", weight.to_string())
        .kill_on_drop(true)
        .status();
    match tokio::time::timeout(Duration::from_secs(300), child).await {
        Ok(Ok(s)) => Ok(s.code().unwrap_or(-1)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("still running after 5 minutes: killed".into()),
    }
}
