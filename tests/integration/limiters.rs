//! `rate_limit` with windows, judged on limiters no one here wrote: express +
//! express-rate-limit from npm (a fixed window per client, IETF draft headers) and Python's
//! `limits` package from PyPI (a moving window, i.e. a sliding log) behind the standard
//! library's HTTP server; `.ci/run` installs both. Each passes with its true parameters and
//! fails with a wrong limit, a wrong window and a wrong algorithm; a limiter whose headers
//! lie fails the header observation. The cases of one test run at once, each from its own
//! client addresses (the limiters key by address), against one limiter process.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::support::explain;
use preflight::checks::CheckSpec;
use preflight::outcome::{Outcome, Status};
use preflight::target::{Ctx, Target};

/// A limiter process on 127.0.0.1, killed on drop.
struct Limiter {
    child: Child,
    url: String,
}

impl Drop for Limiter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Limiter {
    fn start(mut cmd: Command) -> Limiter {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the limiter");
        let line =
            crate::support::first_line(child.stdout.take().unwrap(), Duration::from_secs(30));
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("the limiter did not start: {line:?}"))
            .to_string();
        Limiter { child, url }
    }

    /// express + express-rate-limit: `limit` per `window_ms`, fixed window, draft-7 headers.
    fn express(limit: u32, window_ms: u64) -> Limiter {
        let dir = fixtures().join("express");
        assert!(
            dir.join("node_modules/express-rate-limit").exists(),
            "express-rate-limit is not installed (.ci/run runs `npm ci` in {})",
            dir.display()
        );
        let mut cmd = Command::new("node");
        cmd.current_dir(&dir).args([
            "server.js",
            "127.0.0.1",
            &limit.to_string(),
            &window_ms.to_string(),
            "draft-7",
        ]);
        Limiter::start(cmd)
    }

    /// Python's `limits`: `limit` per `window_s` with `strategy`, optionally advertising a
    /// false limit.
    fn python(limit: u32, window_s: u64, strategy: &str, advertise: Option<u32>) -> Limiter {
        let advertise = advertise.map(|n| n.to_string());
        let flags: Vec<&str> = match &advertise {
            Some(n) => vec!["--advertise", n],
            None => vec![],
        };
        Limiter::python_with(limit, window_s, strategy, &flags)
    }

    /// Python's `limits` with more of the fixture's flags (`--advertise N`, `--near-limit`,
    /// `--remaining-offset K`).
    fn python_with(limit: u32, window_s: u64, strategy: &str, flags: &[&str]) -> Limiter {
        let python = std::env::var("PREFLIGHT_LIMITS_PYTHON")
            .unwrap_or_else(|_| "/opt/limits/bin/python".into());
        assert!(
            Path::new(&python).exists(),
            "{python} is missing (.ci/run makes a venv there with Python's `limits` package)"
        );
        let mut cmd = Command::new(python);
        cmd.arg(fixtures().join("moving_window.py")).args([
            "127.0.0.1",
            &limit.to_string(),
            &window_s.to_string(),
            "--strategy",
            strategy,
        ]);
        cmd.args(flags);
        Limiter::start(cmd)
    }
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/limiters")
}

/// A check context from `127.a.b.1`, with 8 more addresses `127.a.b+1.N` for the other
/// clients.
fn ctx(url: &str, a: u8, b: u8) -> Ctx {
    let ip = |c: u8, d: u8| IpAddr::V4(Ipv4Addr::new(127, a, c, d));
    Ctx::standalone(
        Arc::new(Target::remote(url)),
        ip(b, 1),
        (1..=8).map(|d| ip(b + 1, d)).collect(),
        Duration::from_secs(90),
        100_000,
    )
}

fn window(algorithm: &str, limit: u32, window: &str) -> CheckSpec {
    serde_json::from_value(serde_json::json!({
        "kind": "rate_limit", "request": "GET /api", "algorithm": algorithm,
        "limit": limit, "window": window,
    }))
    .expect("valid spec")
}

async fn run(spec: CheckSpec, ctx: Ctx) -> (Status, Outcome) {
    Outcome::settle(spec.run(&ctx).await)
}

fn failed(o: &Outcome, what: &str) -> bool {
    o.observations
        .iter()
        .any(|x| !x.ok && x.what.starts_with(what))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn express_rate_limit_fixed_window_passes_as_itself_and_fails_each_wrong_parameter() {
    let l = Limiter::express(20, 4000);
    let token_bucket: CheckSpec = serde_json::from_value(serde_json::json!({
        "kind": "rate_limit", "request": "GET /api", "burst": 20, "refill": "5/s", "wait": "1s",
    }))
    .unwrap();
    let (right, limit, win, sliding, bucket) = tokio::join!(
        run(window("fixed_window", 20, "4s"), ctx(&l.url, 41, 1)),
        run(window("fixed_window", 30, "4s"), ctx(&l.url, 41, 3)),
        run(window("fixed_window", 20, "8s"), ctx(&l.url, 41, 5)),
        run(window("sliding_window", 20, "4s"), ctx(&l.url, 41, 7)),
        run(token_bucket, ctx(&l.url, 41, 9)),
    );

    let (st, o) = &right;
    assert_eq!(*st, Status::Pass, "{}", explain(o));
    // Its draft-7 headers were read and found true.
    for what in [
        "advertised limit",
        "advertised window",
        "advertised `remaining`",
    ] {
        assert!(
            o.observations
                .iter()
                .any(|x| x.ok && x.what.starts_with(what)),
            "{what}: {}",
            explain(o)
        );
    }
    assert!(
        o.observations.iter().any(|x| x.ok
            && x.what
                .starts_with("admitted again when the rejections said")),
        "{}",
        explain(o)
    );

    let (st, o) = &limit;
    assert_eq!(*st, Status::Fail, "{}", explain(o));
    assert!(failed(o, "burst B"), "{}", explain(o));
    assert!(failed(o, "advertised limit"), "{}", explain(o));

    let (st, o) = &win;
    assert_eq!(*st, Status::Fail, "{}", explain(o));
    assert!(failed(o, "advertised window"), "{}", explain(o));

    let (st, o) = &sliding;
    assert_eq!(*st, Status::Fail, "{}", explain(o));
    assert!(failed(o, "burst C"), "{}", explain(o));
    assert!(
        o.summary
            .contains("the admissions fit a fixed window of 20 per 4s instead"),
        "{}",
        explain(o)
    );

    // The report: a token bucket written for a fixed window fails after the wait.
    let (st, o) = &bucket;
    assert_eq!(*st, Status::Fail, "{}", explain(o));
    assert!(failed(o, "accepted after waiting"), "{}", explain(o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_limits_moving_window_passes_as_itself_and_fails_each_wrong_parameter() {
    let l = Limiter::python(20, 4, "moving", None);
    let (right, limit, win, fixed) = tokio::join!(
        run(window("sliding_window", 20, "4s"), ctx(&l.url, 42, 1)),
        run(window("sliding_window", 30, "4s"), ctx(&l.url, 42, 3)),
        run(window("sliding_window", 20, "2s"), ctx(&l.url, 42, 5)),
        run(window("fixed_window", 20, "4s"), ctx(&l.url, 42, 7)),
    );
    let (st, o) = &right;
    assert_eq!(*st, Status::Pass, "{}", explain(o));
    assert!(
        !o.observations
            .iter()
            .any(|x| x.what.starts_with("advertised")),
        "it advertises nothing: {}",
        explain(o)
    );
    let (st, o) = &limit;
    assert_eq!(*st, Status::Fail, "{}", explain(o));
    assert!(failed(o, "burst B"), "{}", explain(o));
    let (st, o) = &win;
    assert_eq!(*st, Status::Fail, "{}", explain(o));
    let (st, o) = &fixed;
    assert_eq!(*st, Status::Fail, "{}", explain(o));
    assert!(failed(o, "burst C"), "{}", explain(o));
    assert!(
        o.summary
            .contains("fit a sliding window of 20 per 4s instead"),
        "{}",
        explain(o)
    );
}

/// Python's `limits` sending its `RateLimit` headers only on 429s and once at most half its
/// limit remains: the check judges the answers that carried them, and passes; the same
/// limiter saying 5 more remain than do fails exactly the `remaining` observation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limiter_advertising_only_near_its_limit_is_judged_on_what_it_said() {
    let near = ["--advertise", "20", "--near-limit"];
    let right = Limiter::python_with(20, 4, "moving", &near);
    let lying = Limiter::python_with(
        20,
        4,
        "moving",
        &[&near[..], &["--remaining-offset", "5"]].concat(),
    );
    let ((st, o), (lst, lo)) = tokio::join!(
        run(window("sliding_window", 20, "4s"), ctx(&right.url, 44, 1)),
        run(window("sliding_window", 20, "4s"), ctx(&lying.url, 44, 3)),
    );
    assert_eq!(st, Status::Pass, "{}", explain(&o));
    let remaining = o
        .observations
        .iter()
        .find(|x| x.what.starts_with("advertised `remaining`"))
        .unwrap_or_else(|| panic!("no `remaining` observation: {}", explain(&o)));
    // 10 down to 0: 11 of the admissions said it.
    assert!(
        remaining.ok && remaining.observed.starts_with("10 down to 0 over 11 of "),
        "{}",
        explain(&o)
    );
    assert_eq!(lst, Status::Fail, "{}", explain(&lo));
    let failed_what = lo.unmet();
    assert_eq!(
        failed_what,
        ["advertised `remaining` counts down"],
        "{}",
        explain(&lo)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limiter_whose_headers_lie_fails_the_header_observation() {
    // Enforces 20 per 4 s, advertises 40.
    let l = Limiter::python(20, 4, "moving", Some(40));
    let (st, o) = run(window("sliding_window", 20, "4s"), ctx(&l.url, 43, 1)).await;
    assert_eq!(st, Status::Fail, "{}", explain(&o));
    assert!(failed(&o, "advertised limit"), "{}", explain(&o));
    // Every burst itself is as the policy says: only the headers are wrong.
    assert!(
        o.observations
            .iter()
            .filter(|x| x.what.starts_with("burst"))
            .all(|x| x.ok),
        "{}",
        explain(&o)
    );
}

/// nginx `limit_req` (Debian's nginx-light): `rate=10r/s burst=20`, with or without `nodelay`.
fn nginx_limit_req(nodelay: bool) -> crate::support::Nginx {
    crate::support::Nginx::start(
        "limit_req_zone $binary_remote_addr zone=per_ip:1m rate=10r/s;\n  limit_req_status 429;",
        &format!(
            // A static file: `return` would answer before limit_req's phase runs.
            "location = /api {{ limit_req zone=per_ip burst=20{}; alias {{dir}}/www/index.html; }}",
            if nodelay { " nodelay" } else { "" }
        ),
    )
}

fn token_bucket(queue: Option<&str>) -> CheckSpec {
    let mut v = serde_json::json!({
        "kind": "rate_limit", "request": "GET /api", "burst": 20, "refill": "10/s",
    });
    if let Some(q) = queue {
        v["queue"] = q.into();
    }
    serde_json::from_value(v).expect("valid spec")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_limit_req_with_and_without_nodelay_and_its_queueing() {
    let (fast, queued) = (nginx_limit_req(true), nginx_limit_req(false));
    let url = |n: &crate::support::Nginx| format!("http://{}:8080", n.ip);
    let (fast_any, fast_none, queued_any, queued_none, queued_bound) = tokio::join!(
        run(token_bucket(None), ctx(&url(&fast), 44, 1)),
        run(token_bucket(Some("none")), ctx(&url(&fast), 44, 3)),
        run(token_bucket(None), ctx(&url(&queued), 44, 5)),
        run(token_bucket(Some("none")), ctx(&url(&queued), 44, 7)),
        run(token_bucket(Some("500ms")), ctx(&url(&queued), 44, 9)),
    );
    // nodelay answers at once: PASS, also when no queueing is allowed.
    for (st, o) in [&fast_any, &fast_none] {
        assert_eq!(*st, Status::Pass, "{}", explain(o));
        assert!(!o.summary.contains("queued"), "{}", explain(o));
    }
    // Without nodelay, nginx holds the burst back and paces it at 10/s: the same counts PASS,
    // and the report says how many were queued and by how much.
    let (st, o) = &queued_any;
    assert_eq!(*st, Status::Pass, "{}", explain(o));
    assert!(
        o.summary.contains("admitted requests were queued"),
        "{}",
        explain(o)
    );
    assert!(
        o.evidence["queueing"]["delayed"].as_u64().unwrap() >= 10,
        "{}",
        o.evidence
    );
    assert!(o.evidence["queueing"]["max_added_ms"].as_f64().unwrap() >= 1500.0);
    // `queue: none` or a 500 ms bound FAILs it, on the queueing alone.
    for (st, o) in [&queued_none, &queued_bound] {
        assert_eq!(*st, Status::Fail, "{}", explain(o));
        let unmet = o.unmet();
        assert_eq!(unmet, ["queueing"], "{}", explain(o));
    }

    // As a leaky bucket of 20 at 10/s: the queueing nginx PASSes, paced at the rate; the
    // nodelay one FAILs the pacing; a wrong rate FAILs it too. `auto` names the queue.
    let leaky = |rate: &str| -> CheckSpec {
        serde_json::from_value(serde_json::json!({
            "kind": "rate_limit", "request": "GET /api", "algorithm": "leaky_bucket",
            "burst": 20, "rate": rate,
        }))
        .unwrap()
    };
    let (right, no_queue, wrong_rate, found) = tokio::join!(
        run(leaky("10/s"), ctx(&url(&queued), 44, 11)),
        run(leaky("10/s"), ctx(&url(&fast), 44, 13)),
        run(leaky("4/s"), ctx(&url(&queued), 44, 15)),
        run(auto(), ctx(&url(&queued), 44, 17)),
    );
    let (st, o) = &right;
    assert_eq!(*st, Status::Pass, "{}", explain(o));
    for (st, o) in [&no_queue, &wrong_rate] {
        assert_eq!(*st, Status::Fail, "{}", explain(o));
        assert!(
            failed(o, "queued requests answered at the rate"),
            "{}",
            explain(o)
        );
    }
    let (st, o) = &found;
    assert_eq!(*st, Status::Pass, "{}", explain(o));
    let f = &o.evidence["found"];
    assert_eq!(f["algorithm"], "leaky_bucket", "{}", explain(o));
    assert!(
        (19..=21).contains(&f["capacity"].as_u64().unwrap()),
        "{}",
        explain(o)
    );
    assert!(
        (8.5..=11.5).contains(&f["refill"].as_f64().unwrap()),
        "{}",
        explain(o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_longer_than_max_wait_is_proven_as_far_as_it_can_be_and_no_further() {
    // express-rate-limit with a 15-minute window: the limit, the rejections and the headers
    // are proven at once; the reset is not waited for.
    let l = Limiter::express(20, 900_000);
    let (st, o) = run(window("fixed_window", 20, "15m"), ctx(&l.url, 45, 1)).await;
    assert_eq!(st, Status::Pass, "{}", explain(&o));
    assert!(
        o.summary.contains("not proven: half the window"),
        "{}",
        explain(&o)
    );
    assert_eq!(
        o.observations
            .iter()
            .filter(|x| x.what.starts_with("burst"))
            .count(),
        2,
        "A and B only: {}",
        explain(&o)
    );
    assert!(
        o.observations
            .iter()
            .any(|x| x.ok && x.what.starts_with("advertised window")),
        "{}",
        explain(&o)
    );
    // The same limiter declared with a 10-minute window: its headers give it away.
    let (st, o) = run(window("fixed_window", 20, "10m"), ctx(&l.url, 45, 3)).await;
    assert_eq!(st, Status::Fail, "{}", explain(&o));
    assert!(failed(&o, "advertised window"), "{}", explain(&o));
}

fn auto() -> CheckSpec {
    serde_json::from_value(serde_json::json!({
        "kind": "rate_limit", "request": "GET /api", "algorithm": "auto",
    }))
    .expect("valid spec")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_names_the_algorithm_and_parameters_of_each_limiter() {
    let (express, python, nginx) = (
        Limiter::express(20, 4000),
        Limiter::python(20, 4, "moving", None),
        nginx_limit_req(true),
    );
    let nginx_url = format!("http://{}:8080", nginx.ip);
    let (e, p, n) = tokio::join!(
        run(auto(), ctx(&express.url, 46, 1)),
        run(auto(), ctx(&python.url, 46, 3)),
        run(auto(), ctx(&nginx_url, 46, 5)),
    );
    let (st, o) = &e;
    assert_eq!(*st, Status::Pass, "{}", explain(o));
    assert_eq!(
        o.evidence["policy"],
        "algorithm: fixed_window, limit: 20, window: 4s",
        "{}",
        explain(o)
    );
    let (st, o) = &p;
    assert_eq!(*st, Status::Pass, "{}", explain(o));
    assert_eq!(
        o.evidence["policy"],
        "algorithm: sliding_window, limit: 20, window: 4s",
        "{}",
        explain(o)
    );
    // nginx `rate=10r/s burst=20 nodelay`: a bucket of 20 (+ the request in hand), 10/s.
    let (st, o) = &n;
    assert_eq!(*st, Status::Pass, "{}", explain(o));
    let found = &o.evidence["found"];
    assert_eq!(found["algorithm"], "token_bucket", "{}", explain(o));
    let (cap, refill) = (
        found["capacity"].as_u64().unwrap(),
        found["refill"].as_f64().unwrap(),
    );
    assert!((19..=22).contains(&cap), "{}", explain(o));
    assert!((8.5..=11.5).contains(&refill), "{}", explain(o));
}

/// A fixed window aligned to the clock, as a limiter keyed by `now / window` is (many Redis
/// recipes): `limit` per client address per window of `window_s` since the Unix epoch, a bare
/// 429 past it and no headers, so the alignment has to be found from what it admits.
async fn clock_window_server(limit: u32, window_s: u64) -> String {
    use axum::extract::{ConnectInfo, State};
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::sync::Mutex;
    type Counts = Arc<Mutex<HashMap<(IpAddr, u64), u32>>>;
    async fn handler(
        State((counts, limit, window_s)): State<(Counts, u32, u64)>,
        ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ) -> axum::http::StatusCode {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let key = (peer.ip(), (now / window_s as f64).floor() as u64);
        let mut c = counts.lock().unwrap();
        let n = c.entry(key).or_default();
        *n += 1;
        if *n <= limit {
            axum::http::StatusCode::OK
        } else {
            axum::http::StatusCode::TOO_MANY_REQUESTS
        }
    }
    let counts: Counts = Arc::default();
    let app = axum::Router::new()
        .route("/api", axum::routing::get(handler))
        .with_state((counts, limit, window_s));
    crate::support::serve(app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_window_aligned_to_the_clock_is_found_from_what_it_admits() {
    let url = clock_window_server(20, 4).await;
    // Start 3.0-3.3 s into a clock window, so the next one opens between bursts A and B:
    // B finds a whole new limit, which a window started by the first request would not give.
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        if (3.0..3.3).contains(&(now % 4.0)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (fixed, sliding) = tokio::join!(
        run(window("fixed_window", 20, "4s"), ctx(&url, 47, 1)),
        run(window("sliding_window", 20, "4s"), ctx(&url, 47, 3)),
    );
    let (st, o) = &fixed;
    assert_eq!(*st, Status::Pass, "{}", explain(o));
    assert!(o.summary.contains("aligned to the clock"), "{}", explain(o));
    let (st, o) = &sliding;
    assert_eq!(*st, Status::Fail, "{}", explain(o));
}
