//! The exercising check kinds (issue #5): against servers written here (a third-party-style
//! rate limiter, a stalling server for the load generator) and against the bundled service
//! spawned on loopback with `config/core.yaml` (PASS) and `config/before-hardening.yaml`
//! (FAIL), and without the capabilities they need (SKIP).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::explain;
use crate::support::serve;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::routing::get;
use preflight::checks::CheckSpec;
use preflight::outcome::{Outcome, Status};
use preflight::probe::load::{self, Endpoint, LoadConfig, Request};
use preflight::target::Target;
use preflight::target::{Budget, Ctx};
use preflight::units::RequestLine;

fn ip(a: u8, b: u8, c: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, a, b, c))
}

/// A check context over `target` from `127.a.b.1` with 16 further addresses `127.a.b+1.N`.
fn ctx_for(target: Target, a: u8, b: u8) -> Ctx {
    let extra = (1..=16).map(|d| ip(a, b + 1, d)).collect();
    Ctx::standalone(
        Arc::new(target),
        ip(a, b, 1),
        extra,
        Duration::from_secs(90),
        100_000,
    )
}

fn spec(yaml_like: serde_json::Value) -> CheckSpec {
    serde_json::from_value(yaml_like).expect("valid spec")
}

/// Runs a check as the engine does: an error becomes ERROR or SKIP.
async fn run(spec: &CheckSpec, ctx: &Ctx) -> (Status, Outcome) {
    Outcome::settle(spec.run(ctx).await)
}

// ---------------------------------------------------------------------------------------
// A rate limiter preflight did not write: GCRA (continuous refill, also during a burst),
// keyed by peer address, rejecting with a bare 429 and no rate-limit headers.

struct Gcra {
    burst: f64,
    per_second: f64,
    tat: Mutex<HashMap<IpAddr, tokio::time::Instant>>,
    retry_after: RetryAfter,
}

/// What a rejection says about when to come back.
#[derive(Clone, Copy)]
enum RetryAfter {
    /// Nothing.
    Absent,
    /// The truth: the seconds until a request is admitted again, rounded up.
    Honest,
    /// Always these seconds, whatever the truth.
    Always(u32),
}

async fn gcra_handler(
    State(g): State<Arc<Gcra>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> (StatusCode, [(&'static str, String); 1], &'static str) {
    let now = tokio::time::Instant::now();
    let t = Duration::from_secs_f64(1.0 / g.per_second);
    let tau = t.mul_f64(g.burst);
    let mut map = g.tat.lock().unwrap();
    let tat = map.get(&peer.ip()).copied().unwrap_or(now).max(now);
    let new_tat = tat + t;
    if new_tat - now <= tau {
        map.insert(peer.ip(), new_tat);
        (StatusCode::OK, [("x-served", "1".into())], "served")
    } else {
        // Admitted again once new_tat - tau has passed.
        let wait = (new_tat - tau - now).as_secs_f64();
        let header = match g.retry_after {
            RetryAfter::Absent => ("x-no-retry-after", String::new()),
            RetryAfter::Honest => ("retry-after", (wait.ceil() as u64).to_string()),
            RetryAfter::Always(s) => ("retry-after", s.to_string()),
        };
        (StatusCode::TOO_MANY_REQUESTS, [header], "slow down")
    }
}

async fn gcra_server(burst: f64, per_second: f64) -> String {
    gcra_server_saying(burst, per_second, RetryAfter::Absent).await
}

async fn gcra_server_saying(burst: f64, per_second: f64, retry_after: RetryAfter) -> String {
    let g = Arc::new(Gcra {
        burst,
        per_second,
        tat: Mutex::new(HashMap::new()),
        retry_after,
    });
    serve(
        axum::Router::new()
            .route("/api", get(gcra_handler))
            .with_state(g),
    )
    .await
}

fn rate_limit_spec(burst: u32, refill: &str, headers: &[&str]) -> CheckSpec {
    spec(serde_json::json!({
        "kind": "rate_limit", "request": "GET /api", "burst": burst, "refill": refill,
        "wait": "1s", "require_headers": headers,
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_judges_a_third_party_gcra_limiter() {
    let url = gcra_server(20.0, 5.0).await;
    // The limiter's real parameters: PASS (it sends no headers, and none are required).
    let (st, o) = run(
        &rate_limit_spec(20, "5/s", &[]),
        &ctx_for(Target::remote(&url), 21, 1),
    )
    .await;
    assert_eq!(st, Status::Pass, "{}", explain(&o));
    assert_eq!(o.charts.len(), 1);

    // A wrong burst: FAIL on the first burst's count.
    let (st, o) = run(
        &rate_limit_spec(40, "5/s", &[]),
        &ctx_for(Target::remote(&url), 21, 3),
    )
    .await;
    assert_eq!(st, Status::Fail, "{}", explain(&o));
    assert!(!o.observations[0].ok, "{}", explain(&o));

    // A wrong refill: FAIL on the count after the wait.
    let (st, o) = run(
        &rate_limit_spec(20, "20/s", &[]),
        &ctx_for(Target::remote(&url), 21, 5),
    )
    .await;
    assert_eq!(st, Status::Fail, "{}", explain(&o));
    let refill = o
        .observations
        .iter()
        .find(|ob| ob.what.starts_with("accepted after"))
        .unwrap();
    assert!(!refill.ok, "{}", explain(&o));

    // Required headers it does not send: FAIL naming the header.
    let (st, o) = run(
        &rate_limit_spec(20, "5/s", &["Retry-After"]),
        &ctx_for(Target::remote(&url), 21, 7),
    )
    .await;
    assert_eq!(st, Status::Fail, "{}", explain(&o));
    assert!(
        o.observations
            .iter()
            .any(|ob| ob.what.contains("Retry-After") && !ob.ok),
        "{}",
        explain(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_retry_after_must_not_be_earlier_than_the_truth() {
    // A bucket of 10 refilled at 1/s: the truth is "come back in 1 s".
    let spec = || {
        spec(serde_json::json!({
            "kind": "rate_limit", "request": "GET /api", "burst": 10, "refill": "1/s",
            "wait": "3s",
        }))
    };
    let honest = gcra_server_saying(10.0, 1.0, RetryAfter::Honest).await;
    let lying = gcra_server_saying(10.0, 1.0, RetryAfter::Always(0)).await;
    let late = gcra_server_saying(10.0, 1.0, RetryAfter::Always(60)).await;
    let s = spec();
    let ctxs = [
        ctx_for(Target::remote(&honest), 23, 1),
        ctx_for(Target::remote(&lying), 23, 3),
        ctx_for(Target::remote(&late), 23, 5),
    ];
    let ((st_h, o_h), (st_l, o_l), (st_late, o_late)) =
        tokio::join!(run(&s, &ctxs[0]), run(&s, &ctxs[1]), run(&s, &ctxs[2]));
    let retry = |o: &Outcome| {
        o.observations
            .iter()
            .find(|x| x.what == "admitted again when the rejections said")
            .cloned()
    };
    assert_eq!(st_h, Status::Pass, "{}", explain(&o_h));
    assert!(retry(&o_h).is_some_and(|x| x.ok), "{}", explain(&o_h));
    // "Come back now" while nothing is admitted for a second: FAIL on that alone.
    assert_eq!(st_l, Status::Fail, "{}", explain(&o_l));
    let unmet = o_l.unmet();
    assert_eq!(
        unmet,
        ["admitted again when the rejections said"],
        "{}",
        explain(&o_l)
    );
    // "Come back in a minute" is conservative: not probed, and no failure.
    assert_eq!(st_late, Status::Pass, "{}", explain(&o_late));
    assert!(retry(&o_late).is_none(), "{}", explain(&o_late));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_fails_without_a_limiter() {
    let url = serve(axum::Router::new().route("/api", get(|| async { "ok" }))).await;
    let (st, o) = run(
        &rate_limit_spec(20, "5/s", &[]),
        &ctx_for(Target::remote(&url), 22, 1),
    )
    .await;
    assert_eq!(st, Status::Fail, "{}", explain(&o));
}

// ---------------------------------------------------------------------------------------
// The load generator.

async fn stalling_server(stall_at: u64, stall: Duration) -> String {
    let n = Arc::new(AtomicU64::new(0));
    serve(axum::Router::new().route(
        "/work",
        get(move || {
            let n = n.clone();
            async move {
                if n.fetch_add(1, Ordering::Relaxed) == stall_at {
                    tokio::time::sleep(stall).await;
                }
                "done"
            }
        }),
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_is_paced_and_bounded() {
    let url = stalling_server(u64::MAX, Duration::ZERO).await;
    let ep = Endpoint::from_url(&url).await.unwrap();
    let req = Request::new(&RequestLine::get("/work"), None).unwrap();
    let cfg = LoadConfig {
        rate: Some(200.0),
        duration: Duration::from_secs(1),
        connections: 4,
        sources: vec![ip(23, 1, 1), ip(23, 1, 2)],
        max_requests: 10_000,
        request_timeout: Duration::from_secs(5),
    };
    let r = load::run(&ep, &req, &cfg, None).await.unwrap();
    // Every request due in the second is sent, even one the generator picked up late (a
    // busy machine): 200 intended at 0, 5, …, 995 ms.
    assert_eq!(r.sent, 200);
    assert_eq!(r.missed, 0);
    assert_eq!(r.ok, r.sent);
    // Paced, not flooded: the last answer cannot come before the last request was due.
    // (A lower bound only; an upper one would measure the machine, not the generator.)
    assert!(r.elapsed >= Duration::from_millis(995), "{:?}", r.elapsed);
    // The request cap holds.
    let capped = LoadConfig {
        max_requests: 37,
        ..cfg.clone()
    };
    let r = load::run(&ep, &req, &capped, None).await.unwrap();
    assert_eq!(r.sent, 37);
    // And so does the budget.
    let budget = Budget::new(20);
    let r = load::run(&ep, &req, &cfg, Some(&budget)).await.unwrap();
    assert_eq!(r.sent, 20);
}

/// Regression guard: latency is measured from each request's intended send time, so a
/// stall of the target shows up in the percentiles (no coordinated omission).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_latency_includes_queueing_behind_a_stall() {
    let url = stalling_server(10, Duration::from_millis(500)).await;
    let ep = Endpoint::from_url(&url).await.unwrap();
    let req = Request::new(&RequestLine::get("/work"), None).unwrap();
    let cfg = LoadConfig {
        rate: Some(50.0),
        duration: Duration::from_secs(1),
        connections: 1,
        sources: vec![ip(24, 1, 1)],
        max_requests: 1_000,
        request_timeout: Duration::from_secs(5),
    };
    let r = load::run(&ep, &req, &cfg, None).await.unwrap();
    let p90_ms = r.latency_us.value_at_quantile(0.9) as f64 / 1e3;
    let max_ms = r.latency_us.max() as f64 / 1e3;
    assert!(max_ms >= 450.0, "max {max_ms} ms");
    assert!(p90_ms >= 150.0, "p90 {p90_ms} ms hides the stall");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_slo_passes_and_fails_on_thresholds() {
    let url = stalling_server(u64::MAX, Duration::ZERO).await;
    let ok = spec(serde_json::json!({
        "kind": "load_slo", "request": "GET /work", "rate": "100/s", "duration": "1s",
        "connections": 4, "thresholds": ["p99 < 500ms", "errors < 1%", "rps >= 80%"],
    }));
    let (st, o) = run(&ok, &ctx_for(Target::remote(&url), 25, 1)).await;
    assert_eq!(st, Status::Pass, "{}", explain(&o));
    assert_eq!(o.charts.len(), 2);
    let strict = spec(serde_json::json!({
        "kind": "load_slo", "request": "GET /missing", "rate": "100/s", "duration": "1s",
        "thresholds": ["errors < 1%", "rps >= 1000"],
    }));
    let (st, o) = run(&strict, &ctx_for(Target::remote(&url), 25, 3)).await;
    assert_eq!(st, Status::Fail, "{}", explain(&o));
    assert!(o.observations.iter().all(|ob| !ob.ok), "{}", explain(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_releases_all_requests_together() {
    let url = stalling_server(u64::MAX, Duration::ZERO).await;
    let ep = Endpoint::from_url(&url).await.unwrap();
    let req = Request::new(&RequestLine::get("/work"), None).unwrap();
    let conns: Vec<IpAddr> = (1..=50).map(|d| ip(26, 1, d)).collect();
    let b = load::burst(&ep, &req, &conns, 120, None, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(b.shots.len(), 120);
    assert!(b.shots.iter().all(|s| s.status() == Some(200)));
    assert!(b.duration < Duration::from_secs(2), "{:?}", b.duration);
}

// ---------------------------------------------------------------------------------------
// The circuit breaker while the service polls the feed itself.

/// The spawned service (real binary, loopback, port 0) as a check target with the admin API.
fn service_target(svc: &crate::support::Service) -> Target {
    Target {
        url: svc.url.clone(),
        admin_token: Some(preflight::secret::Secret(svc.token.clone())),
        process: None,
        log_dir: Some(svc.data_dir.join("logs")),
        sqlite: Some(svc.data_dir.join("core.db")),
        reach: Default::default(),
    }
}

fn breaker_spec(threshold: u32) -> CheckSpec {
    spec(serde_json::json!({
        "kind": "circuit_breaker", "threshold": threshold, "reset_timeout": "2s",
    }))
}

/// Regression guard: a periodic feed poll landing between the check's injected failures made
/// it report "opened at failure 3" for a breaker that correctly opened at 5 consecutive
/// failures. With `feed.interval: 2ms` the service's own polls interleave on every run; the
/// feed is a local server answering no ticks, so those polls cost no store writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_counts_the_services_own_polls() {
    // Timing-sensitive (fast-fail, reset timeout) and it loads the machine (a 2 ms feed).
    let _alone = crate::support::timing();
    let feed = serve(axum::Router::new().route("/feed", get(|| async { "[]" }))).await;
    let feed_url = format!("  url: {feed}/feed");
    let edits = [
        ("  interval: 10s\n", "  interval: 2ms\n"),
        ("  url: null", feed_url.as_str()),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let cfg = crate::support::patched("core.yaml", tmp.path(), &edits);
    let svc = crate::support::Service::start(&cfg, &tmp.path().join("data"));
    let mut interleaved = 0;
    for round in 0..3u8 {
        let (st, o) = run(
            &breaker_spec(5),
            &ctx_for(service_target(&svc), 29, 1 + 2 * round),
        )
        .await;
        assert_eq!(st, Status::Pass, "round {round}: {}", explain(&o));
        let opens = &o.observations[0].observed;
        assert!(
            opens.starts_with("open at 5 consecutive failures"),
            "{opens}"
        );
        interleaved += usize::from(opens.contains("interleaved"));
    }
    assert!(
        interleaved > 0,
        "the service's own polls never interleaved: the test proves nothing"
    );

    // A breaker that opens early (threshold 3 configured, 5 required): FAIL, still counted
    // right while the service polls.
    let tmp2 = tempfile::tempdir().unwrap();
    let cfg = crate::support::patched(
        "core.yaml",
        tmp2.path(),
        &[edits[0], edits[1], ("threshold: 5", "threshold: 3")],
    );
    let early = crate::support::Service::start(&cfg, &tmp2.path().join("data"));
    let (st, o) = run(&breaker_spec(5), &ctx_for(service_target(&early), 29, 21)).await;
    assert_eq!(st, Status::Fail, "{}", explain(&o));
    let opens = &o.observations[0];
    assert!(
        !opens.ok && opens.observed.starts_with("open at") && !opens.observed.contains('5'),
        "{}",
        explain(&o)
    );
    // And one that opens late (5 configured, 3 required): FAIL, still closed at 3.
    let (st, o) = run(&breaker_spec(3), &ctx_for(service_target(&svc), 29, 23)).await;
    assert_eq!(st, Status::Fail, "{}", explain(&o));
    assert!(!o.observations[0].ok, "{}", explain(&o));
}

// ---------------------------------------------------------------------------------------
// Without the capability a kind needs: SKIP (remote target known only by URL).

#[tokio::test]
async fn kinds_skip_without_capabilities() {
    let url = stalling_server(u64::MAX, Duration::ZERO).await;
    let cases = [
        serde_json::json!({"kind": "query_timeout", "budget": "50ms"}),
        serde_json::json!({"kind": "circuit_breaker", "threshold": 5, "reset_timeout": "2s"}),
        serde_json::json!({"kind": "load_shedding", "max_inflight": 64, "accepted_p99_below": "1s"}),
        serde_json::json!({"kind": "memory_growth", "request": "POST /work", "iterations": 100,
                           "max_growth_per_iteration": "256B", "source": "process"}),
        serde_json::json!({"kind": "log_retention", "max_age": "7d"}),
        serde_json::json!({"kind": "log_retention", "max_age": "7d", "trigger": "wait"}),
        serde_json::json!({"kind": "crash_recovery", "ready_within": "5s"}),
    ];
    for (i, c) in cases.into_iter().enumerate() {
        let s = spec(c.clone());
        let (st, o) = run(&s, &ctx_for(Target::remote(&url), 27, 1 + 2 * i as u8)).await;
        assert_eq!(st, Status::Skip, "{c}: {}", explain(&o));
        assert!(o.summary.contains("capability"), "{c}: {}", o.summary);
    }
}

#[tokio::test]
async fn kinds_error_when_the_target_is_down() {
    // Bind and drop: nothing listens there.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{addr}");
    let cases = [
        rate_limit_spec(10, "5/s", &[]),
        spec(
            serde_json::json!({"kind": "load_slo", "request": "GET /", "rate": "10/s",
            "duration": "1s", "thresholds": ["p99 < 1s"]}),
        ),
        spec(
            serde_json::json!({"kind": "memory_growth", "request": "GET /", "iterations": 20,
            "warmup": 0, "max_growth_per_iteration": "1KiB", "source": "metric"}),
        ),
    ];
    for (i, s) in cases.iter().enumerate() {
        let (st, o) = run(s, &ctx_for(Target::remote(&url), 28, 1 + 2 * i as u8)).await;
        assert_eq!(st, Status::Error, "{}: {}", s.kind(), explain(&o));
    }
}

// ---------------------------------------------------------------------------------------
// The default policy through the real binary, against the spawned bundled service.

fn check_json(config: &std::path::Path) -> (Option<i32>, serde_json::Value) {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_preflight"))
        .current_dir(root)
        .args(["check", "policies/production-hardening.yaml", "--config"])
        .arg(config)
        .args(["--format", "json"])
        .output()
        .expect("running preflight check");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), report)
}

fn not_passed(report: &serde_json::Value) -> std::collections::BTreeSet<String> {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] != "PASS")
        .map(|r| {
            format!(
                "{}={}",
                r["id"].as_str().unwrap(),
                r["status"].as_str().unwrap()
            )
        })
        .collect()
}

fn summaries(report: &serde_json::Value) -> String {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{} {}: {}\n", r["status"], r["id"], r["summary"]))
        .collect()
}

/// One test, run in sequence, so the timing-sensitive checks do not compete with each other.
#[test]
fn default_policy_go_on_core_and_no_go_naming_each_defect() {
    let _alone = crate::support::timing();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));

    let (code, report) = check_json(&root.join("config/core.yaml"));
    assert_eq!(report["verdict"], "GO", "{}", summaries(&report));
    assert_eq!(code, Some(0));
    assert!(
        report["duration_ms"].as_u64().unwrap() < 60_000,
        "default policy took {} ms",
        report["duration_ms"]
    );

    let (code, report) = check_json(&root.join("config/before-hardening.yaml"));
    assert_eq!(report["verdict"], "NO-GO");
    assert_eq!(code, Some(1));
    let expected: std::collections::BTreeSet<String> = crate::support::BEFORE_HARDENING_FAILS
        .iter()
        .map(|id| format!("{id}=FAIL"))
        .collect();
    assert_eq!(not_passed(&report), expected, "{}", summaries(&report));

    // A profile that breaks only the breaker threshold and the limiter's burst: exactly the
    // checks of those requirements fail (and /status shows the changed values).
    let tmp = tempfile::tempdir().unwrap();
    let cfg = std::fs::read_to_string(root.join("config/core.yaml"))
        .unwrap()
        .replace("threshold: 5", "threshold: 3")
        .replace("burst: 100", "burst: 60");
    let path = tmp.path().join("one-off.yaml");
    std::fs::write(&path, cfg).unwrap();
    let (_, report) = check_json(&path);
    let expected: std::collections::BTreeSet<String> =
        ["status-fields", "per-ip-rate-limit", "feed-breaker"]
            .iter()
            .map(|id| format!("{id}=FAIL"))
            .collect();
    assert_eq!(not_passed(&report), expected, "{}", summaries(&report));
}
