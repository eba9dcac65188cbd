//! `circuit_breaker`: through the admin API, makes a dependency fail; the breaker must open
//! at exactly `threshold` consecutive failures, fast-fail while open, move to half-open after
//! `reset_timeout`, and close after a successful trial; `/status` must report each state.
//! "Exactly `threshold`" is judged from the breaker's own `consecutive_failures` in `/status`,
//! sampled continuously while the breaker opens, so the service's own periodic calls to the
//! dependency, which fail too while the fault is injected, are counted rather than mistaken
//! for an early opening. The check measures ([`Measurements`]); [`judge`] decides, purely.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::checks::{Code, Exclusivity, Kind, KindSpec, Problems};
use crate::outcome::{Capability, CheckError, Observation, Outcome};
use crate::outcome::{Chart, ChartKind, Series};
use crate::probe::http::Http;
use crate::target::Ctx;
use crate::units::Dur;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The guarded dependency (default `feed`).
    #[serde(default = "default_dependency")]
    pub dependency: String,
    /// Consecutive failures that must open the breaker.
    pub threshold: u32,
    /// Time after which an open breaker lets one trial through.
    pub reset_timeout: Dur,
    /// A call while open must be rejected faster than this (default `50ms`).
    #[serde(default = "default_fast_fail")]
    pub fast_fail_below: Dur,
    /// Slack on the reset timeout (default `500ms`).
    #[serde(default = "default_slack")]
    pub reset_slack: Dur,
}

fn default_dependency() -> String {
    "feed".into()
}
fn default_fast_fail() -> Dur {
    Dur::from_millis(50)
}
fn default_slack() -> Dur {
    Dur::from_millis(500)
}

impl Spec {
    fn check_fields(&self, p: &mut Problems) {
        p.positive("/threshold", self.threshold.into(), "threshold");
        if self.threshold > 10_000 {
            p.warning(
                "/threshold",
                HUGE_THRESHOLD,
                format!(
                    "a threshold of {} means the breaker practically never opens",
                    self.threshold
                ),
                "",
            );
        }
        if self.reset_timeout.0.is_zero() {
            p.error(
                "/reset_timeout",
                ZERO_RESET,
                "the reset timeout must be above zero",
                "e.g. `reset_timeout: 2s`",
            );
        }
    }
}

/// One poll of the dependency through the breaker, as the admin API reported it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Poll {
    /// Seconds since the check started.
    pub at_s: f64,
    pub result: String,
    pub state: String,
    /// Client-side round trip.
    pub elapsed_ms: f64,
    /// The call's duration as the service timed it (`elapsed_ms` of its answer), when it
    /// reports one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_ms: Option<f64>,
}

impl Poll {
    /// How long the call through the breaker took: the service's own timing when it reports
    /// one (the client's round trip adds the network and, on a loaded machine, tens of ms of
    /// scheduling that say nothing about the breaker), else the round trip.
    pub fn call_ms(&self) -> f64 {
        self.service_ms.unwrap_or(self.elapsed_ms)
    }
}

/// One `/status` reading of the breaker while it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Reading {
    pub open: bool,
    /// `consecutive_failures` from `/status` (or, when the target does not report it, the
    /// failures of this check's own polls).
    pub count: u32,
}

/// One attempt at seeing the breaker open: from a reset, with the fault on, until a reading
/// shows it open (or closed at the threshold, or the attempt's bound).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct Attempt {
    pub readings: Vec<Reading>,
    /// Failed polls this check made itself; the rest of the count came from the service's
    /// own calls to the dependency.
    pub polls_by_check: u32,
}

impl Attempt {
    /// The opening count F is above this: the highest count read while closed.
    pub fn last_closed(&self) -> Option<u32> {
        self.readings
            .iter()
            .filter(|r| !r.open)
            .map(|r| r.count)
            .max()
    }

    /// F is at most this: the count only grows once open (a call admitted just before the
    /// opening may record its failure just after), so the lowest count read open.
    pub fn first_open(&self) -> Option<u32> {
        self.readings
            .iter()
            .filter(|r| r.open)
            .map(|r| r.count)
            .min()
    }

    /// Failures counted that this check's polls do not explain.
    pub fn interleaved(&self) -> bool {
        self.readings.iter().any(|r| r.count > self.polls_by_check)
    }
}

/// What `run` measured, for [`judge`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Measurements {
    pub attempts: Vec<Attempt>,
    /// Whether `/status` reports `breakers.<dependency>.consecutive_failures`.
    pub count_reported: bool,
    /// A poll of this check that did not fail with the fault injected: (poll number, result).
    pub fault_ineffective: Option<(u32, String)>,
    /// Polls right after the opening.
    pub while_open: Vec<Poll>,
    /// `/status` state right after those polls.
    pub status_while_open: StatusReading,
    /// The poll at half the reset timeout.
    pub mid: Option<Poll>,
    /// Seconds from the opening to a successful trial that closed the breaker.
    pub closed_after_s: Option<f64>,
    /// The last poll after the reset timeout.
    pub last_trial: Option<Poll>,
    /// `/status` state after the trial.
    pub status_after: StatusReading,
    /// Every poll, for the timeline chart.
    pub timeline: Vec<Poll>,
}

/// Most attempts at pinning the opening count.
const MAX_ATTEMPTS: usize = 6;
/// Concurrent `/status` readers while the breaker opens.
const SAMPLERS: usize = 2;
/// Pause of each reader between two reads: the readers together read about every 5 ms, ten
/// times per failure at the injected latency, without flooding the target.
const SAMPLE_EVERY: Duration = Duration::from_millis(10);
/// Latency of the injected failure. It spaces the failures the service's own calls record
/// (one caller, one call at a time) far enough apart for every count to be read: without it
/// a service polling its dependency every 2 ms went from 0 to open between two reads of a
/// loaded machine, and the opening count could never be pinned (issue 8).
const FAULT_LATENCY_MS: u64 = 50;
/// The check polls the dependency itself only after the count has not moved on its own for
/// this long: while the service drives the breaker, a second caller would only add calls in
/// flight at the opening.
const QUIET: Duration = Duration::from_millis(100);

/// 0 closed, 1 half-open, 2 open: the breaker timeline's y axis.
fn level(state: &str) -> f64 {
    match state {
        "closed" => 0.0,
        "half_open" => 1.0,
        "open" => 2.0,
        _ => -1.0,
    }
}

async fn poll(http: &Http, t0: Instant, sent: &mut Vec<String>) -> Result<Poll, CheckError> {
    let start = Instant::now();
    let r = http.admin("POST", "/admin/feed/poll", None).await?;
    let elapsed_ms = start.elapsed().as_secs_f64() * 1e3;
    sent.push("POST /admin/feed/poll".into());
    if r.status != 200 {
        return Err(CheckError::Target(format!(
            "POST /admin/feed/poll answered {}: {}",
            r.status,
            r.text()
        )));
    }
    let v = r.json()?;
    let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("?").to_string();
    Ok(Poll {
        at_s: start.duration_since(t0).as_secs_f64(),
        result: field("result"),
        state: field("state"),
        elapsed_ms,
        service_ms: v.get("elapsed_ms").and_then(|x| x.as_f64()),
    })
}

async fn admin_ok(
    http: &Http,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    sent: &mut Vec<String>,
) -> Result<(), CheckError> {
    sent.push(match body {
        Some(b) => format!("{method} {path} {b}"),
        None => format!("{method} {path}"),
    });
    let r = http.admin(method, path, body).await?;
    if r.status != 200 {
        return Err(CheckError::Target(format!(
            "{method} {path} answered {}: {}",
            r.status,
            r.text()
        )));
    }
    Ok(())
}

/// The breaker as `/status` reports it.
struct BreakerStatus {
    state: Option<String>,
    consecutive_failures: Option<u32>,
}

async fn breaker_status(http: &Http, dep: &str) -> Result<BreakerStatus, CheckError> {
    let r = http.get("/status").await?;
    if r.status != 200 {
        return Ok(BreakerStatus {
            state: None,
            consecutive_failures: None,
        });
    }
    Ok(parse_status(&r.json()?, dep))
}

/// The breaker `dep` as a `/status` body shows it.
fn parse_status(v: &serde_json::Value, dep: &str) -> BreakerStatus {
    let b = v.pointer(&format!("/breakers/{dep}"));
    BreakerStatus {
        state: b
            .and_then(|b| b.get("state"))
            .and_then(|v| v.as_str())
            .map(str::to_string),
        consecutive_failures: b
            .and_then(|b| b.get("consecutive_failures"))
            .and_then(|v| v.as_u64())
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
    }
}

async fn status_state(http: &Http, dep: &str) -> Result<Option<String>, CheckError> {
    Ok(breaker_status(http, dep).await?.state)
}

/// One read of a breaker's state from `/status`, for the judge.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum StatusReading {
    /// Not read (the phase was not reached).
    #[default]
    NotRead,
    /// `/status` answered 200: the state, or `None` when it does not show this breaker.
    Read(Option<String>),
    /// `/status` answered this status, not 200, from every client address tried (a
    /// rate limiter shared with the rest of the run, say): no reading, not a wrong one.
    Unreadable(u16),
}

impl StatusReading {
    fn is(&self, state: &str) -> bool {
        matches!(self, StatusReading::Read(Some(s)) if s == state)
    }

    fn shown(&self) -> String {
        match self {
            StatusReading::NotRead => "not read".into(),
            StatusReading::Read(Some(s)) => s.clone(),
            StatusReading::Read(None) => "absent".into(),
            StatusReading::Unreadable(code) => format!("unreadable: /status answered {code}"),
        }
    }
}

/// The breaker's state from `/status`, from each client address in turn until one is
/// answered 200 (no waiting: the phase being read is short).
async fn read_state(clients: &[Http], dep: &str) -> Result<StatusReading, CheckError> {
    let mut last = 0;
    for http in clients {
        let r = http.get("/status").await?;
        if r.status == 200 {
            return Ok(StatusReading::Read(parse_status(&r.json()?, dep).state));
        }
        last = r.status;
    }
    Ok(StatusReading::Unreadable(last))
}

pub async fn run(spec: &Spec, ctx: &Ctx) -> Result<Outcome, CheckError> {
    ctx.require(Capability::Admin)?;
    let http = ctx.http()?;
    let mut sent = Vec::new();
    let reset = serde_json::json!({"dependency": spec.dependency});
    admin_ok(&http, "DELETE", "/admin/faults", None, &mut sent).await?;
    admin_ok(
        &http,
        "POST",
        "/admin/breaker/reset",
        Some(&reset),
        &mut sent,
    )
    .await?;
    let mut m = Measurements::default();
    let status_clients = std::iter::once(ctx.source)
        .chain(ctx.extra_sources.iter().copied())
        .map(|a| ctx.http_from(a))
        .collect::<Result<Vec<_>, _>>()?;
    let result = measure(spec, &http, &status_clients, &mut sent, &mut m).await;
    // Restore: no fault, breaker closed, whatever happened.
    let c1 = admin_ok(&http, "DELETE", "/admin/faults", None, &mut sent).await;
    let c2 = admin_ok(
        &http,
        "POST",
        "/admin/breaker/reset",
        Some(&reset),
        &mut sent,
    )
    .await;
    result?;
    c1?;
    c2?;
    let mut out = judge(spec, &m);
    out.sent = sent;
    Ok(out)
}

/// Readings shared with the `/status` samplers: (sent at, reading or error).
type Shared = Arc<Mutex<Vec<(Instant, Result<(Option<String>, Option<u32>), CheckError>)>>>;

/// Reads `/status` every [`SAMPLE_EVERY`] until `stop` is set, rotating over the check's
/// client addresses (the target may rate-limit `/status` per address). An answer other than
/// 200 (a 429, say) is no reading: the sampler waits (`Retry-After`, capped) and goes on.
fn spawn_sampler(
    clients: Vec<Http>,
    first: usize,
    dep: String,
    readings: Shared,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut k = first;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let http = &clients[k % clients.len()];
            k += SAMPLERS;
            let at = Instant::now();
            let r = match http.get("/status").await {
                Ok(r) if r.status == 200 => r.json().map(|v| {
                    let b = v.pointer(&format!("/breakers/{dep}"));
                    (
                        b.and_then(|b| b.get("state"))
                            .and_then(|v| v.as_str())
                            .map(str::to_string),
                        b.and_then(|b| b.get("consecutive_failures"))
                            .and_then(|v| v.as_u64())
                            .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
                    )
                }),
                Ok(r) => {
                    let wait = r
                        .header("retry-after")
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .unwrap_or(0.1)
                        .clamp(0.01, 1.0);
                    tokio::time::sleep(Duration::from_secs_f64(wait)).await;
                    continue;
                }
                Err(e) => Err(e),
            };
            let failed = r.is_err();
            readings
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((at, r));
            if failed {
                return;
            }
            tokio::time::sleep(SAMPLE_EVERY).await;
        }
    })
}

/// The `/status` samplers of one attempt, stopped when dropped (also when the check's future
/// is dropped at its deadline, so no sampler outlives the check).
struct Samplers {
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Samplers {
    async fn finish(mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
    }
}

impl Drop for Samplers {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// How one attempt ended.
enum AttemptEnd {
    Open,
    ClosedAtThreshold,
    FaultIneffective,
    Bounded,
}

/// One attempt: the fault is on and the breaker was just reset. `/status` is sampled
/// continuously; the check polls the dependency itself only while the count stands still
/// (the service is not calling it) and only once the count after its previous poll has been
/// read, so that with the check alone driving, every count is read before the next failure.
async fn attempt(
    spec: &Spec,
    http: &Http,
    status_clients: &[Http],
    t0: Instant,
    sent: &mut Vec<String>,
    m: &mut Measurements,
) -> Result<(Attempt, AttemptEnd), CheckError> {
    let n = spec.threshold;
    let readings: Shared = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let samplers = Samplers {
        tasks: (0..SAMPLERS)
            .map(|i| {
                spawn_sampler(
                    status_clients.to_vec(),
                    i,
                    spec.dependency.clone(),
                    readings.clone(),
                    stop.clone(),
                )
            })
            .collect(),
        stop,
    };
    let cap = n.saturating_mul(2).saturating_add(10);
    let bound = Duration::from_secs(5)
        + (QUIET + Duration::from_millis(FAULT_LATENCY_MS) * 2) * cap;
    let started = Instant::now();
    let mut a = Attempt::default();
    let mut seen = 0usize;
    let mut unexplained = 0u32;
    let mut last_activity = started;
    let mut last_poll_done: Option<Instant> = None;
    let mut fresh = false;
    let end = loop {
        // Take the new readings.
        let new: Vec<_> = {
            let all = readings.lock().unwrap_or_else(|p| p.into_inner());
            all[seen..]
                .iter()
                .map(|(at, r)| (*at, r.clone()))
                .collect()
        };
        seen += new.len();
        let mut errors = None;
        for (at, r) in new {
            match r {
                Err(e) => errors = Some(e),
                Ok((state, count)) => {
                    let open = state.as_deref() == Some("open");
                    let count = match count {
                        Some(c) => c,
                        None => {
                            m.count_reported = false;
                            continue;
                        }
                    };
                    a.readings.push(Reading { open, count });
                    if count.saturating_sub(a.polls_by_check) > unexplained {
                        unexplained = count.saturating_sub(a.polls_by_check);
                        last_activity = Instant::now();
                    }
                    if last_poll_done.is_none_or(|d| at >= d) {
                        fresh = true;
                    }
                }
            }
        }
        if let Some(e) = errors {
            return Err(e);
        }
        if a.readings.iter().any(|r| r.open) {
            break AttemptEnd::Open;
        }
        if a.last_closed().is_some_and(|c| c >= n) {
            break AttemptEnd::ClosedAtThreshold;
        }
        if !m.count_reported || a.polls_by_check >= cap || started.elapsed() > bound {
            break AttemptEnd::Bounded;
        }
        if fresh && last_activity.elapsed() >= QUIET {
            let p = poll(http, t0, sent).await?;
            last_poll_done = Some(Instant::now());
            fresh = false;
            let result = p.result.clone();
            let state = p.state.clone();
            m.timeline.push(p);
            if result == "error" {
                a.polls_by_check += 1;
            } else if state != "open" {
                m.fault_ineffective = Some((a.polls_by_check + 1, result));
                break AttemptEnd::FaultIneffective;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    samplers.finish().await;
    sent.push(format!(
        "GET /status ×{} (sampled while the breaker opened)",
        readings.lock().unwrap_or_else(|p| p.into_inner()).len()
    ));
    Ok((a, end))
}

/// When `/status` does not report the count: the check's own polls alone, each followed by
/// its own count (interleaved calls by the service then go unnoticed; the evidence says so).
async fn attempt_own_count(
    spec: &Spec,
    http: &Http,
    t0: Instant,
    sent: &mut Vec<String>,
    m: &mut Measurements,
) -> Result<(Attempt, AttemptEnd), CheckError> {
    let n = spec.threshold;
    let mut a = Attempt::default();
    let cap = n.saturating_mul(2).saturating_add(10);
    for _ in 0..cap {
        let p = poll(http, t0, sent).await?;
        let st = status_state(http, &spec.dependency).await?;
        sent.push("GET /status".into());
        let (result, state) = (p.result.clone(), p.state.clone());
        m.timeline.push(p);
        let open = state == "open" || st.as_deref() == Some("open");
        if result == "error" {
            a.polls_by_check += 1;
        } else if !open {
            m.fault_ineffective = Some((a.polls_by_check + 1, result));
            return Ok((a, AttemptEnd::FaultIneffective));
        }
        a.readings.push(Reading {
            open,
            count: a.polls_by_check,
        });
        if open {
            return Ok((a, AttemptEnd::Open));
        }
        if a.polls_by_check >= n {
            return Ok((a, AttemptEnd::ClosedAtThreshold));
        }
    }
    Ok((a, AttemptEnd::Bounded))
}

/// The opening count's bounds over the attempts: F in `lo..=hi`.
fn bracket(attempts: &[Attempt]) -> (u32, u32) {
    let lo = attempts
        .iter()
        .filter_map(Attempt::last_closed)
        .map(|c| c.saturating_add(1))
        .max()
        .unwrap_or(1)
        .max(1);
    let hi = attempts
        .iter()
        .filter_map(Attempt::first_open)
        .min()
        .unwrap_or(u32::MAX);
    (lo, hi)
}

async fn measure(
    spec: &Spec,
    http: &Http,
    status_clients: &[Http],
    sent: &mut Vec<String>,
    m: &mut Measurements,
) -> Result<(), CheckError> {
    let t0 = Instant::now();
    let fail = serde_json::json!({
        spec.dependency.as_str(): {"mode": "fail", "latency_ms": FAULT_LATENCY_MS}
    });
    admin_ok(http, "POST", "/admin/faults", Some(&fail), sent).await?;
    m.count_reported = breaker_status(http, &spec.dependency)
        .await?
        .consecutive_failures
        .is_some();
    sent.push("GET /status".into());

    // Attempts are repeated (breaker reset, fault still on) and their brackets intersected
    // until the opening count F is pinned, or shown to differ from the threshold.
    let n = spec.threshold;
    let reset = serde_json::json!({"dependency": spec.dependency});
    let mut opened_at = None;
    for k in 1..=MAX_ATTEMPTS {
        if k > 1 {
            admin_ok(http, "POST", "/admin/breaker/reset", Some(&reset), sent).await?;
        }
        let (a, end) = if m.count_reported {
            attempt(spec, http, status_clients, t0, sent, m).await?
        } else {
            attempt_own_count(spec, http, t0, sent, m).await?
        };
        m.attempts.push(a);
        match end {
            AttemptEnd::Open => opened_at = Some(Instant::now()),
            AttemptEnd::ClosedAtThreshold | AttemptEnd::FaultIneffective => return Ok(()),
            // Neither open nor at the threshold within the bound: another attempt would only
            // repeat it (unless the count just turned out to be unreported).
            AttemptEnd::Bounded if m.count_reported => break,
            AttemptEnd::Bounded => {}
        }
        let (lo, hi) = bracket(&m.attempts);
        if lo == hi || !(lo..=hi).contains(&n) {
            break;
        }
    }
    // The later phases need the breaker open, as the last attempt left it.
    let Some(opened_at) = opened_at.filter(|_| {
        m.attempts
            .last()
            .is_some_and(|a| a.first_open().is_some())
    }) else {
        return Ok(());
    };

    // While open: rejected fast, and /status says open.
    for _ in 0..3 {
        let p = poll(http, t0, sent).await?;
        m.while_open.push(p.clone());
        m.timeline.push(p);
    }
    m.status_while_open = read_state(status_clients, &spec.dependency).await?;
    sent.push("GET /status".into());

    // Halfway through the reset timeout it must still be open.
    tokio::time::sleep_until((opened_at + spec.reset_timeout.0 / 2).into()).await;
    let mid = poll(http, t0, sent).await?;
    m.mid = Some(mid.clone());
    m.timeline.push(mid);

    // Dependency healthy again; after the reset timeout a trial call closes the breaker.
    admin_ok(http, "DELETE", "/admin/faults", None, sent).await?;
    let deadline = opened_at + spec.reset_timeout.0 + spec.reset_slack.0;
    tokio::time::sleep_until((opened_at + spec.reset_timeout.0).into()).await;
    loop {
        let p = poll(http, t0, sent).await?;
        let done = p.result == "ok" && p.state == "closed";
        m.last_trial = Some(p.clone());
        m.timeline.push(p);
        if done {
            m.closed_after_s = Some(opened_at.elapsed().as_secs_f64());
            break;
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    m.status_after = read_state(status_clients, &spec.dependency).await?;
    sent.push("GET /status".into());
    Ok(())
}

/// Judges the measurements. Pure: no I/O, no clock.
pub fn judge(spec: &Spec, m: &Measurements) -> Outcome {
    let mut out = Outcome::default();
    judge_into(spec, m, &mut out);
    out.charts.push(Chart {
        title: format!("breaker `{}`: state per poll", spec.dependency),
        kind: ChartKind::Steps,
        x_label: "seconds".into(),
        y_label: "0 closed · 1 half-open · 2 open".into(),
        series: vec![Series {
            name: spec.dependency.clone(),
            points: m.timeline.iter().map(|p| (p.at_s, level(&p.state))).collect(),
        }],
    });
    let sequence: Vec<String> = m
        .timeline
        .iter()
        .map(|p| format!("{}/{}", p.result, p.state))
        .collect();
    let attempts: Vec<serde_json::Value> = m
        .attempts
        .iter()
        .map(|a| {
            serde_json::json!({
                "last_closed_at": a.last_closed(), "open_at": a.first_open(),
                "failures_injected_by_check": a.polls_by_check,
                "readings": a.readings.len(),
            })
        })
        .collect();
    out.evidence = serde_json::json!({
        "polls": m.timeline,
        "sequence": sequence,
        "opening": {
            "attempts": attempts,
            "count_source": if m.count_reported {
                "/status breakers.<dependency>.consecutive_failures"
            } else {
                "this check's own polls (the target reports no consecutive_failures)"
            },
            "fault_latency_ms": FAULT_LATENCY_MS,
        },
    });
    out
}

fn judge_into(spec: &Spec, m: &Measurements, out: &mut Outcome) {
    let n = spec.threshold;
    if let Some((i, result)) = &m.fault_ineffective {
        out.observe(Observation::new(
            format!("poll {i} with the fault injected"),
            "result `error`",
            format!("result `{result}`, breaker closed"),
            false,
        ));
        out.summary = format!("the injected fault did not make poll {i} fail");
        return;
    }
    if m.attempts.is_empty() {
        out.summary = "the breaker's opening was not observed".into();
        out.undecided("no attempt at opening the breaker was measured");
        return;
    }
    if let Some((a, c)) = m
        .attempts
        .iter()
        .find_map(|a| a.last_closed().filter(|c| *c >= n).map(|c| (a, c)))
    {
        // Closed with `threshold` failures recorded: it does not open at the threshold.
        out.observe(Observation::new(
            "state at the threshold",
            format!("open at exactly {n} consecutive failures"),
            format!(
                "still closed at {c} consecutive failures ({} injected by this check)",
                a.polls_by_check
            ),
            false,
        ));
        out.summary = format!(
            "the breaker did not open at {n} consecutive failures (still closed at {c})"
        );
        return;
    }
    let (lo, hi) = bracket(&m.attempts);
    if hi == u32::MAX {
        out.summary = format!(
            "the breaker was seen neither open nor closed at {n} consecutive failures"
        );
        out.undecided(format!(
            "in {} attempt(s) the breaker neither opened nor reached {n} consecutive failures within the attempt's bound",
            m.attempts.len()
        ));
        return;
    }
    if lo > hi {
        // Closed at a count above one read open: the count was reset between readings (a call
        // started before the fault succeeded, or a reset by someone else). No bound holds.
        out.summary = format!(
            "the breaker's readings contradict each other (closed at {}, open at {hi})",
            lo - 1
        );
        out.undecided(format!(
            "the consecutive-failure count went back during the opening (closed at {}, open at {hi} consecutive failures)",
            lo - 1
        ));
        return;
    }
    let opened = if lo == hi {
        format!("open at {lo} consecutive failures")
    } else {
        format!("open at between {lo} and {hi} consecutive failures")
    };
    let opened_ok = lo == n && hi == n;
    let interleaved = m.attempts.iter().any(Attempt::interleaved);
    out.observe(Observation::new(
        "opens at the threshold",
        format!("open at exactly {n} consecutive failures, closed before"),
        format!(
            "{opened}{}{}",
            if m.attempts.len() > 1 {
                format!(" ({} attempts)", m.attempts.len())
            } else {
                String::new()
            },
            if interleaved {
                "; the service's own polls interleaved and were counted"
            } else {
                ""
            }
        ),
        // Not pinned but possibly right is not a failed requirement: it is undecided below.
        (lo..=hi).contains(&n),
    ));
    let undecided = (!opened_ok && (lo..=hi).contains(&n)).then(|| {
        // Never pinned: the requirement could not be evaluated, which is not a FAIL.
        format!(
            "could not pin the breaker's opening count: {opened} in {} attempts",
            m.attempts.len()
        )
    });

    let mut slowest = 0.0;
    if !m.while_open.is_empty() {
        let all_rejected = m.while_open.iter().all(|p| p.result == "rejected");
        slowest = m.while_open.iter().map(Poll::call_ms).fold(0.0, f64::max);
        let round_trip = m.while_open.iter().map(|p| p.elapsed_ms).fold(0.0, f64::max);
        let timed_by_service = m.while_open.iter().all(|p| p.service_ms.is_some());
        out.observe(Observation::new(
            "calls while open",
            format!("`rejected` in < {}", spec.fast_fail_below),
            format!(
                "{:?}, slowest {slowest:.1} ms{}",
                m.while_open
                    .iter()
                    .map(|p| p.result.as_str())
                    .collect::<Vec<_>>(),
                if timed_by_service {
                    format!(" as the service timed it (round trip {round_trip:.1} ms)")
                } else {
                    String::new()
                }
            ),
            all_rejected && slowest < spec.fast_fail_below.0.as_secs_f64() * 1e3,
        ));
        out.observe(Observation::new(
            "/status while open",
            format!("breakers.{}.state = open", spec.dependency),
            m.status_while_open.shown(),
            m.status_while_open.is("open")
                || matches!(m.status_while_open, StatusReading::Unreadable(_)),
        ));
    }
    if let Some(mid) = &m.mid {
        out.observe(Observation::new(
            format!(
                "at half the reset timeout ({})",
                Dur(spec.reset_timeout.0 / 2)
            ),
            "still open (`rejected`)",
            format!("`{}`, state `{}`", mid.result, mid.state),
            mid.result == "rejected" && mid.state == "open",
        ));
        out.observe(Observation::new(
            "after the reset timeout, a successful trial",
            format!(
                "`ok` and closed within {} + {}",
                spec.reset_timeout, spec.reset_slack
            ),
            match (&m.closed_after_s, &m.last_trial) {
                (Some(d), _) => format!("closed {d:.2} s after opening"),
                (None, Some(p)) => format!(
                    "`{}`, state `{}` at the end of the slack",
                    p.result, p.state
                ),
                (None, None) => "no poll".into(),
            },
            m.closed_after_s.is_some(),
        ));
        out.observe(Observation::new(
            "/status after the trial",
            format!("breakers.{}.state = closed", spec.dependency),
            m.status_after.shown(),
            m.status_after.is("closed") || matches!(m.status_after, StatusReading::Unreadable(_)),
        ));
        for (when, r) in [("while open", &m.status_while_open), ("after the trial", &m.status_after)] {
            if let StatusReading::Unreadable(code) = r {
                out.undecided(format!(
                    "/status {when} answered {code} from every client address tried: the state it shows was not read (with a shared limiter, give more addresses in `target.source_addresses`)"
                ));
            }
        }
        out.summary = format!(
            "{opened} (threshold {n}), fast-failed (slowest {slowest:.1} ms), {}",
            match m.closed_after_s {
                Some(d) => format!("closed again {d:.2} s after opening"),
                None => "did not close after the reset timeout".into(),
            }
        );
    } else {
        out.summary = format!("{opened} (threshold {n})");
    }
    if let Some(reason) = undecided {
        out.undecided(reason);
    }
}

const HUGE_THRESHOLD: Code = Code("circuit-breaker/huge-threshold");
const ZERO_RESET: Code = Code("circuit-breaker/zero-reset");

impl KindSpec for Spec {
    const KIND: Kind = Kind {
        name: "circuit_breaker",
        namespace: "circuit-breaker",
        exclusivity: Exclusivity::Exclusive,
        codes: &[HUGE_THRESHOLD, ZERO_RESET],
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

    fn spec(threshold: u32) -> Spec {
        serde_json::from_value(serde_json::json!({"threshold": threshold, "reset_timeout": "2s"}))
            .unwrap()
    }

    fn p(result: &str, state: &str, ms: f64) -> Poll {
        Poll {
            at_s: 0.0,
            result: result.into(),
            state: state.into(),
            elapsed_ms: ms,
            service_ms: None,
        }
    }

    /// An attempt from `(open, count)` readings, with `mine` failures of the check's own.
    fn attempt(readings: &[(bool, u32)], mine: u32) -> Attempt {
        Attempt {
            readings: readings
                .iter()
                .map(|&(open, count)| Reading { open, count })
                .collect(),
            polls_by_check: mine,
        }
    }

    /// A breaker that behaves after the opening.
    fn healthy(attempts: Vec<Attempt>) -> Measurements {
        Measurements {
            attempts,
            count_reported: true,
            while_open: vec![p("rejected", "open", 1.0); 3],
            status_while_open: StatusReading::Read(Some("open".into())),
            mid: Some(p("rejected", "open", 1.0)),
            closed_after_s: Some(2.1),
            last_trial: Some(p("ok", "closed", 2.0)),
            status_after: StatusReading::Read(Some("closed".into())),
            ..Measurements::default()
        }
    }

    #[test]
    fn judges_the_opening_count() {
        let closed = |c| (false, c);
        let open = |c| (true, c);
        // (threshold, attempts, status, observed starts with)
        let cases: Vec<(u32, Vec<Attempt>, Status, &str)> = vec![
            // The check alone: every count read.
            (5, vec![attempt(&[closed(0), closed(1), closed(2), closed(3), closed(4), open(5)], 5)], Status::Pass, "open at 5 consecutive failures"),
            // The service's own polls interleave (counts beyond the check's): still 5.
            (5, vec![attempt(&[closed(0), closed(2), closed(4), open(5)], 0)], Status::Pass, "open at 5 consecutive failures; the service's own polls"),
            // A call admitted before the opening recorded after it: read open at 6. A second
            // attempt pins it.
            (5, vec![attempt(&[closed(2), open(6)], 1), attempt(&[closed(4), open(5)], 1)], Status::Pass, "open at 5 consecutive failures (2 attempts)"),
            // The interleaving feed poll hid count 4 in every attempt: never pinned, which is
            // not a PASS and not a FAIL.
            (5, vec![attempt(&[closed(2), open(5)], 0); MAX_ATTEMPTS], Status::Inconclusive, "open at between 3 and 5"),
            // Opens early: one under the threshold.
            (5, vec![attempt(&[closed(3), open(4)], 4)], Status::Fail, "open at 4 consecutive failures"),
            (5, vec![attempt(&[closed(0), open(3)], 0)], Status::Fail, "open at between 1 and 3"),
            // Opens late: still closed at the threshold.
            (3, vec![attempt(&[closed(1), closed(3)], 3)], Status::Fail, "still closed at 3"),
            (3, vec![attempt(&[closed(2), closed(4)], 1)], Status::Fail, "still closed at 4"),
            // Exactly at a threshold of 1.
            (1, vec![attempt(&[closed(0), open(1)], 1)], Status::Pass, "open at 1 consecutive"),
            // Contradictory readings (the count went back): neither PASS nor FAIL.
            (5, vec![attempt(&[closed(4), open(5)], 0), attempt(&[closed(1), open(3)], 3)], Status::Inconclusive, ""),
            // Nothing seen within the bound.
            (5, vec![attempt(&[closed(0), closed(1)], 1)], Status::Inconclusive, ""),
            (5, vec![], Status::Inconclusive, ""),
        ];
        for (i, (n, attempts, want, observed)) in cases.into_iter().enumerate() {
            let o = judge(&spec(n), &healthy(attempts));
            assert_eq!(o.status(), want, "case {i}: {}", o.summary);
            if !observed.is_empty() {
                assert!(
                    o.observations[0].observed.starts_with(observed),
                    "case {i}: {}",
                    o.observations[0].observed
                );
            }
        }
    }

    #[test]
    fn judges_the_open_phase() {
        let pinned = || vec![attempt(&[(false, 4), (true, 5)], 5)];
        let ok = judge(&spec(5), &healthy(pinned()));
        assert_eq!(ok.status(), Status::Pass, "{}", ok.summary);
        assert_eq!(ok.observations.len(), 6);
        let mut slow = healthy(pinned());
        slow.while_open[1].elapsed_ms = 50.0; // exactly at fast_fail_below: not below it
        assert_eq!(judge(&spec(5), &slow).status(), Status::Fail);
        slow.while_open[1].elapsed_ms = 49.9;
        assert_eq!(judge(&spec(5), &slow).status(), Status::Pass);
        // The service's own timing, when it reports one, decides: a slow round trip on a
        // loaded machine is not a slow rejection.
        let mut loaded = healthy(pinned());
        for p in &mut loaded.while_open {
            p.elapsed_ms = 85.0;
            p.service_ms = Some(0.05);
        }
        let o = judge(&spec(5), &loaded);
        assert_eq!(o.status(), Status::Pass, "{}", o.summary);
        loaded.while_open[2].service_ms = Some(50.0);
        assert_eq!(judge(&spec(5), &loaded).status(), Status::Fail);
        let mut passing = healthy(pinned());
        passing.while_open[0] = p("error", "open", 1.0);
        assert_eq!(judge(&spec(5), &passing).status(), Status::Fail);
        let mut early_close = healthy(pinned());
        early_close.mid = Some(p("ok", "closed", 1.0));
        assert_eq!(judge(&spec(5), &early_close).status(), Status::Fail);
        let mut stuck = healthy(pinned());
        stuck.closed_after_s = None;
        stuck.last_trial = Some(p("rejected", "open", 1.0));
        let o = judge(&spec(5), &stuck);
        assert_eq!(o.status(), Status::Fail);
        assert!(o.summary.contains("did not close"), "{}", o.summary);
        let mut no_status = healthy(pinned());
        no_status.status_after = StatusReading::Read(None);
        assert_eq!(judge(&spec(5), &no_status).status(), Status::Fail);
        // /status rate-limited from every address (the netns rig, one shared address): no
        // reading, so INCONCLUSIVE naming it — it once read as "absent", a false FAIL.
        let mut limited = healthy(pinned());
        limited.status_while_open = StatusReading::Unreadable(429);
        let o = judge(&spec(5), &limited);
        assert_eq!(o.status(), Status::Inconclusive, "{}", o.summary);
        assert!(o.inconclusive.unwrap().contains("/status while open answered 429"));
        // …but a wrong state elsewhere still FAILs.
        limited.status_after = StatusReading::Read(Some("open".into()));
        assert_eq!(judge(&spec(5), &limited).status(), Status::Fail);
    }

    #[test]
    fn a_fault_that_does_not_fail_is_a_fail() {
        let m = Measurements {
            fault_ineffective: Some((1, "ok".into())),
            attempts: vec![attempt(&[(false, 0)], 0)],
            ..Measurements::default()
        };
        let o = judge(&spec(5), &m);
        assert_eq!(o.status(), Status::Fail);
        assert_eq!(o.summary, "the injected fault did not make poll 1 fail");
    }
}
