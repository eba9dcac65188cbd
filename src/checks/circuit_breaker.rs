//! `circuit_breaker`: through the admin API, makes a dependency fail; the breaker must open
//! at exactly `threshold` consecutive failures, fast-fail while open, move to half-open after
//! `reset_timeout`, and close after a successful trial; `/status` must report each state.
//! "Exactly `threshold`" is judged from the breaker's own `consecutive_failures` in `/status`
//! read after every poll, so the service's own periodic calls to the dependency, which fail
//! too while the fault is injected, are counted rather than mistaken for an early opening.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use std::time::Duration;

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
#[derive(Debug, Clone, serde::Serialize)]
struct Poll {
    /// Seconds since the check started.
    at_s: f64,
    result: String,
    state: String,
    /// Client-side round trip.
    elapsed_ms: f64,
    /// The breaker's own consecutive-failure count from `/status` right after this poll
    /// (opening phase only).
    #[serde(skip_serializing_if = "Option::is_none")]
    consecutive_failures: Option<u32>,
}

/// Attempts at pinning the opening count when the service's own polls interleave.
const MAX_ATTEMPTS: usize = 6;

/// 0 closed, 1 half-open, 2 open: the breaker timeline's y axis.
fn level(state: &str) -> f64 {
    match state {
        "closed" => 0.0,
        "half_open" => 1.0,
        "open" => 2.0,
        _ => -1.0,
    }
}

async fn poll(http: &Http, t0: std::time::Instant, out: &mut Outcome) -> Result<Poll, CheckError> {
    let start = std::time::Instant::now();
    let r = http.admin("POST", "/admin/feed/poll", None).await?;
    let elapsed_ms = start.elapsed().as_secs_f64() * 1e3;
    out.sent.push("POST /admin/feed/poll".into());
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
        consecutive_failures: None,
    })
}

async fn admin_ok(
    http: &Http,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    out: &mut Outcome,
) -> Result<(), CheckError> {
    out.sent.push(match body {
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
    let v = r.json()?;
    let b = v.pointer(&format!("/breakers/{dep}"));
    Ok(BreakerStatus {
        state: b
            .and_then(|b| b.get("state"))
            .and_then(|v| v.as_str())
            .map(str::to_string),
        consecutive_failures: b
            .and_then(|b| b.get("consecutive_failures"))
            .and_then(|v| v.as_u64())
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
    })
}

async fn status_state(http: &Http, dep: &str) -> Result<Option<String>, CheckError> {
    Ok(breaker_status(http, dep).await?.state)
}

pub async fn run(spec: &Spec, ctx: &Ctx) -> Result<Outcome, CheckError> {
    ctx.require(Capability::Admin)?;
    let http = ctx.http()?;
    let mut out = Outcome::default();
    let reset = serde_json::json!({"dependency": spec.dependency});
    admin_ok(&http, "DELETE", "/admin/faults", None, &mut out).await?;
    admin_ok(
        &http,
        "POST",
        "/admin/breaker/reset",
        Some(&reset),
        &mut out,
    )
    .await?;
    let mut polls = Vec::new();
    let mut notes = serde_json::Value::Null;
    let result = exercise(spec, &http, &mut out, &mut polls, &mut notes).await;
    // Restore: no fault, breaker closed, whatever happened.
    let c1 = admin_ok(&http, "DELETE", "/admin/faults", None, &mut out).await;
    let c2 = admin_ok(
        &http,
        "POST",
        "/admin/breaker/reset",
        Some(&reset),
        &mut out,
    )
    .await;
    result?;
    c1?;
    c2?;
    out.charts.push(Chart {
        title: format!("breaker `{}`: state per poll", spec.dependency),
        kind: ChartKind::Steps,
        x_label: "seconds".into(),
        y_label: "0 closed · 1 half-open · 2 open".into(),
        series: vec![Series {
            name: spec.dependency.clone(),
            points: polls.iter().map(|p| (p.at_s, level(&p.state))).collect(),
        }],
    });
    let sequence: Vec<String> = polls
        .iter()
        .map(|p| format!("{}/{}", p.result, p.state))
        .collect();
    out.evidence = serde_json::json!({"polls": polls, "sequence": sequence, "opening": notes});
    Ok(out)
}

async fn exercise(
    spec: &Spec,
    http: &Http,
    out: &mut Outcome,
    polls: &mut Vec<Poll>,
    notes: &mut serde_json::Value,
) -> Result<(), CheckError> {
    let t0 = std::time::Instant::now();
    let fail = serde_json::json!({ spec.dependency.as_str(): {"mode": "fail"} });
    admin_ok(http, "POST", "/admin/faults", Some(&fail), out).await?;

    // Drive failures until the breaker opens, judging from the breaker's own count in
    // `/status` after every poll: the service may call the dependency itself
    // (`feed.interval`) between our calls, and each of those failures counts too (our own
    // poll count alone said "opened at failure 3" for a breaker that opened at 5).
    //
    // A call admitted just before the breaker opens may record its failure just after, so
    // the count seen once open can overshoot the opening count F. Each attempt therefore
    // brackets F: last seen closed at `c` (F > c), seen open at `m` (F ≤ m). Attempts are
    // repeated (breaker reset, fault still on) and their brackets intersected until F is
    // pinned, or shown to differ from the threshold.
    let n = spec.threshold;
    let (mut lo, mut hi) = (1u32, u32::MAX);
    let mut attempts = Vec::new();
    let mut own_count = true;
    let mut interleaved = false;
    let mut opened_instant = None;
    let reset = serde_json::json!({"dependency": spec.dependency});
    for attempt in 1..=MAX_ATTEMPTS {
        if attempt > 1 {
            admin_ok(http, "POST", "/admin/breaker/reset", Some(&reset), out).await?;
        }
        let mut mine = 0u32;
        let mut closed_at = 0u32;
        let mut open_at = None;
        let cap = n.saturating_mul(2).saturating_add(10);
        for i in 1..=cap {
            let mut p = poll(http, t0, out).await?;
            let b = breaker_status(http, &spec.dependency).await?;
            out.sent.push("GET /status".into());
            p.consecutive_failures = b.consecutive_failures;
            let result = p.result.clone();
            let open = p.state == "open" || b.state.as_deref() == Some("open");
            polls.push(p);
            if result == "error" {
                mine += 1;
            }
            // Without the breaker's count, fall back to counting our own failures
            // (interleaved polls by the service then go unnoticed; the evidence says so).
            let count = b.consecutive_failures.unwrap_or_else(|| {
                own_count = false;
                mine
            });
            interleaved |= count > mine;
            if open {
                open_at = Some(count);
                opened_instant = Some(std::time::Instant::now());
                break;
            }
            if result != "error" {
                out.observe(Observation::new(
                    format!("poll {i} with the fault injected"),
                    "result `error`",
                    format!("result `{result}`, breaker closed"),
                    false,
                ));
                out.summary = format!("the injected fault did not make poll {i} fail");
                return Ok(());
            }
            closed_at = count;
            if count >= n {
                break;
            }
        }
        attempts.push(serde_json::json!({
            "last_closed_at": closed_at, "open_at": open_at, "failures_injected_by_check": mine,
        }));
        *notes = serde_json::json!({
            "attempts": attempts,
            "count_source": if own_count {
                "/status breakers.<dependency>.consecutive_failures"
            } else {
                "this check's own polls (the target reports no consecutive_failures)"
            },
        });
        let Some(m) = open_at else {
            // Closed with `threshold` failures recorded: it does not open at the threshold.
            out.observe(Observation::new(
                "state at the threshold",
                format!("open at exactly {n} consecutive failures"),
                format!(
                    "still closed at {closed_at} consecutive failures ({mine} injected by this check)"
                ),
                false,
            ));
            out.summary = format!(
                "the breaker did not open at {n} consecutive failures (still closed at {closed_at})"
            );
            return Ok(());
        };
        lo = lo.max(closed_at + 1);
        hi = hi.min(m);
        if lo == hi || !(lo..=hi).contains(&n) {
            break;
        }
    }
    let opened_instant = opened_instant.unwrap_or_else(std::time::Instant::now);
    let opened = if lo == hi {
        format!("open at {lo} consecutive failures")
    } else {
        format!("open at between {lo} and {hi} consecutive failures")
    };
    let opened_ok = lo == n && hi == n;
    out.observe(Observation::new(
        "opens at the threshold",
        format!("open at exactly {n} consecutive failures, closed before"),
        format!(
            "{opened}{}{}",
            if attempts.len() > 1 {
                format!(" ({} attempts)", attempts.len())
            } else {
                String::new()
            },
            if interleaved {
                "; the service's own polls interleaved and were counted"
            } else {
                ""
            }
        ),
        opened_ok,
    ));
    if !opened_ok && (lo..=hi).contains(&n) {
        // Never pinned: the requirement could not be evaluated, which is not a FAIL.
        return Err(CheckError::Target(format!(
            "could not pin the breaker's opening count: {opened} in {MAX_ATTEMPTS} attempts, the service's own polls interleaving every time"
        )));
    }

    // While open: rejected fast, and /status says open.
    let mut fast = Vec::new();
    for _ in 0..3 {
        let p = poll(http, t0, out).await?;
        fast.push((p.result.clone(), p.elapsed_ms));
        polls.push(p);
    }
    let all_rejected = fast.iter().all(|(r, _)| r == "rejected");
    let slowest = fast.iter().map(|(_, ms)| *ms).fold(0.0, f64::max);
    out.observe(Observation::new(
        "calls while open",
        format!("`rejected` in < {}", spec.fast_fail_below),
        format!(
            "{:?}, slowest {slowest:.1} ms",
            fast.iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>()
        ),
        all_rejected && slowest < spec.fast_fail_below.0.as_secs_f64() * 1e3,
    ));
    let st = status_state(http, &spec.dependency).await?;
    out.sent.push("GET /status".into());
    out.observe(Observation::new(
        "/status while open",
        format!("breakers.{}.state = open", spec.dependency),
        st.clone().unwrap_or_else(|| "absent".into()),
        st.as_deref() == Some("open"),
    ));

    // Halfway through the reset timeout it must still be open.
    tokio::time::sleep_until((opened_instant + spec.reset_timeout.0 / 2).into()).await;
    let mid = poll(http, t0, out).await?;
    let mid_ok = mid.result == "rejected" && mid.state == "open";
    out.observe(Observation::new(
        format!(
            "at half the reset timeout ({})",
            crate::units::Dur(spec.reset_timeout.0 / 2)
        ),
        "still open (`rejected`)",
        format!("`{}`, state `{}`", mid.result, mid.state),
        mid_ok,
    ));
    polls.push(mid);

    // Dependency healthy again; after the reset timeout a trial call closes the breaker.
    admin_ok(http, "DELETE", "/admin/faults", None, out).await?;
    let deadline = opened_instant + spec.reset_timeout.0 + spec.reset_slack.0;
    tokio::time::sleep_until((opened_instant + spec.reset_timeout.0).into()).await;
    let mut closed_after = None;
    loop {
        let p = poll(http, t0, out).await?;
        let done = p.result == "ok" && p.state == "closed";
        polls.push(p);
        if done {
            closed_after = Some(opened_instant.elapsed());
            break;
        }
        if std::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let last = polls.last().cloned();
    out.observe(Observation::new(
        "after the reset timeout, a successful trial",
        format!(
            "`ok` and closed within {} + {}",
            spec.reset_timeout, spec.reset_slack
        ),
        match (&closed_after, &last) {
            (Some(d), _) => format!("closed {:.2} s after opening", d.as_secs_f64()),
            (None, Some(p)) => format!(
                "`{}`, state `{}` at the end of the slack",
                p.result, p.state
            ),
            (None, None) => "no poll".into(),
        },
        closed_after.is_some(),
    ));
    let st = status_state(http, &spec.dependency).await?;
    out.sent.push("GET /status".into());
    out.observe(Observation::new(
        "/status after the trial",
        format!("breakers.{}.state = closed", spec.dependency),
        st.clone().unwrap_or_else(|| "absent".into()),
        st.as_deref() == Some("closed"),
    ));
    out.summary = format!(
        "{opened} (threshold {}), fast-failed (slowest {slowest:.1} ms), {}",
        spec.threshold,
        match closed_after {
            Some(d) => format!("closed again {:.2} s after opening", d.as_secs_f64()),
            None => "did not close after the reset timeout".into(),
        }
    );
    Ok(())
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
