//! Small fake services, each wrong in exactly one way (and a right one built differently
//! from the core service), for the `metric` and `memory_growth` judges (issue 15): the
//! wrong service must not PASS, the right one must.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::support::serve;
use axum::extract::State;
use axum::routing::{get, post};
use preflight::checks::CheckSpec;
use preflight::outcome::{Outcome, Status};
use preflight::target::{Ctx, Target};

/// A check context over the server at `url` from `127.45.b.1` (plus 4 more addresses).
fn ctx(url: &str, b: u8) -> Ctx {
    let ip = |c: u8, d: u8| IpAddr::V4(Ipv4Addr::new(127, 45, c, d));
    let extra = (2..=5).map(|d| ip(b, d)).collect();
    let target = Arc::new(Target::remote(url));
    Ctx::standalone(target, ip(b, 1), extra, Duration::from_secs(60), 100_000)
}

async fn run(spec: serde_json::Value, url: &str, b: u8) -> (Status, Outcome) {
    let spec: CheckSpec = serde_json::from_value(spec).expect("valid spec");
    Outcome::settle(spec.run(&ctx(url, b)).await)
}

/// A server answering `/metrics` with a fixed page.
async fn metrics_page(page: &'static str) -> String {
    serve(axum::Router::new().route("/metrics", get(move || async move { page }))).await
}

fn metric(expect: &str) -> serde_json::Value {
    serde_json::json!({"kind": "metric", "expect": expect})
}

// ---------------------------------------------------------------------------------------
// `metric`: label values holding `}` (false PASS 1), tabs and route templates (false FAIL 3),
// `!=` accepted by lint but not by the run (false FAIL 5).

#[tokio::test]
async fn metric_label_value_with_a_brace_does_not_hide_errors() {
    // Wrong: 42 server errors on a templated route. The old parser ended the label set at
    // the `}` of `{id}` and the selector matched nothing, or the wrong series.
    let wrong = metrics_page(
        "# TYPE http_requests_total counter\n\
         http_requests_total{path=\"/items/{id}\",status=\"500\"} 42\n\
         http_requests_total{path=\"/health\",status=\"200\"} 7\n",
    )
    .await;
    let (st, o) = run(
        metric("http_requests_total{status=\"500\"} == 0"),
        &wrong,
        1,
    )
    .await;
    assert_eq!(st, Status::Fail, "{}", o.summary);
    assert!(o.summary.contains("= 42"), "{}", o.summary);

    // Right, and written unlike the core service: tabs between tokens, timestamps, an
    // exemplar, escaped quotes and route templates.
    let right = metrics_page(
        "# HELP http_requests_total Requests.\n\
         http_requests_total{path=\"/items/{id}\",status=\"500\"}\t0\t1700000000000\n\
         http_requests_total{path=\"/items/{id}\",status=\"200\"}\t12 # {trace_id=\"abc\"} 1.0\n\
         http_requests_total{path=\"/q/\\\"x\\\"\",status=\"200\"}\t3\n",
    )
    .await;
    let (st, o) = run(
        metric("http_requests_total{status=\"500\"} == 0"),
        &right,
        2,
    )
    .await;
    assert_eq!(st, Status::Pass, "{}", o.summary);
    let (st, o) = run(
        metric("http_requests_total{path=\"/items/{id}\"} >= 12"),
        &right,
        3,
    )
    .await;
    assert_eq!(st, Status::Pass, "{}", o.summary);
    let (st, o) = run(
        metric("http_requests_total{status=\"200\"} == 15"),
        &right,
        4,
    )
    .await;
    assert_eq!(st, Status::Pass, "{}", o.summary);
}

#[tokio::test]
async fn metric_negative_and_regex_matchers_are_evaluated() {
    let expect = "http_requests_total{status!=\"200\"} == 0";
    // Lint accepts it…
    let check: CheckSpec = serde_json::from_value(metric(expect)).unwrap();
    let mut problems = preflight::checks::Problems::default();
    check.validate(&mut problems);
    assert!(problems.0.is_empty(), "lint: {:?}", problems.0);
    // …and the run evaluates it: a service with 3 errors FAILs, one without PASSes.
    let wrong = metrics_page(
        "http_requests_total{status=\"200\"} 10\nhttp_requests_total{status=\"503\"} 3\n",
    )
    .await;
    let (st, o) = run(metric(expect), &wrong, 5).await;
    assert_eq!(st, Status::Fail, "{}", o.summary);
    assert!(o.summary.contains("= 3"), "{}", o.summary);
    let right = metrics_page(
        "http_requests_total{status=\"200\"}\t10\nhttp_requests_total{status=\"503\"}\t0\n",
    )
    .await;
    let (st, o) = run(metric(expect), &right, 6).await;
    assert_eq!(st, Status::Pass, "{}", o.summary);
    let (st, o) = run(
        metric("http_requests_total{status=~\"5..\"} == 0"),
        &right,
        7,
    )
    .await;
    assert_eq!(st, Status::Pass, "{}", o.summary);
    let (st, o) = run(
        metric("http_requests_total{status=~\"5..\"} == 0"),
        &wrong,
        8,
    )
    .await;
    assert_eq!(st, Status::Fail, "{}", o.summary);
}

// ---------------------------------------------------------------------------------------
// `memory_growth` from `/metrics`: a second, leaking series (false PASS 6) and a leak under
// heavy RSS noise (false PASS 7).

/// A service whose `/metrics` reports RSS series computed from the number of `POST /work`
/// requests served: `page(n)` renders the page after `n` requests.
async fn rss_service(page: fn(u64) -> String) -> String {
    let n = Arc::new(AtomicU64::new(0));
    let app =
        axum::Router::new()
            .route(
                "/work",
                post(|State(n): State<Arc<AtomicU64>>| async move {
                    n.fetch_add(1, Ordering::Relaxed);
                    "done"
                }),
            )
            .route(
                "/metrics",
                get(move |State(n): State<Arc<AtomicU64>>| async move {
                    page(n.load(Ordering::Relaxed))
                }),
            )
            .with_state(n);
    serve(app).await
}

fn memory(extra: serde_json::Value) -> serde_json::Value {
    let mut v = serde_json::json!({
        "kind": "memory_growth", "request": "POST /work", "iterations": 100, "warmup": 5,
        "sample_every": 5, "max_growth_per_iteration": "1KiB", "source": "metric",
    });
    v.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    v
}

/// Worker 0 is flat; worker 1 leaks 4 KiB per request.
fn two_workers(n: u64) -> String {
    format!(
        "process_resident_memory_bytes{{worker=\"0\"}} 50000000\n\
         process_resident_memory_bytes{{worker=\"1\"}} {}\n",
        60_000_000 + 4096 * n
    )
}

/// One series, flat but for a few bytes of jitter.
fn one_flat(n: u64) -> String {
    format!(
        "process_resident_memory_bytes\t{}\n",
        50_000_000 + (n * 7919) % 200
    )
}

#[tokio::test]
async fn memory_growth_does_not_read_only_the_first_of_several_series() {
    let url = rss_service(two_workers).await;
    // Several series without a selector: an ERROR naming them, never the first one read.
    let (st, o) = run(memory(serde_json::json!({})), &url, 10).await;
    assert_eq!(st, Status::Error, "{}", o.summary);
    assert!(
        o.summary.contains("worker=\"0\"") && o.summary.contains("worker=\"1\""),
        "{}",
        o.summary
    );
    // Selected by label: the leaking worker FAILs, the flat one PASSes.
    let leaking = serde_json::json!({"metric": "process_resident_memory_bytes{worker=\"1\"}"});
    let (st, o) = run(memory(leaking), &url, 11).await;
    assert_eq!(st, Status::Fail, "{}", o.summary);
    let flat = serde_json::json!({"metric": "process_resident_memory_bytes{worker=\"0\"}"});
    let (st, o) = run(memory(flat), &url, 12).await;
    assert_eq!(st, Status::Pass, "{}", o.summary);

    // A right service built differently: one series, tab-separated.
    let right = rss_service(one_flat).await;
    let (st, o) = run(memory(serde_json::json!({})), &right, 13).await;
    assert_eq!(st, Status::Pass, "{}", o.summary);
}

/// A leak of 4 KiB per request (4× the limit) under ±40 MB of RSS noise that depends only on
/// the request count (deterministic).
fn noisy_leak(n: u64) -> String {
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    x ^= x >> 29;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 32;
    let noise = (x % 80_000_001) as i64 - 40_000_000;
    format!(
        "process_resident_memory_bytes {}\n",
        200_000_000 + 4096 * n as i64 + noise
    )
}

#[tokio::test]
async fn memory_growth_under_heavy_noise_is_inconclusive_not_pass() {
    let url = rss_service(noisy_leak).await;
    let (st, o) = run(memory(serde_json::json!({})), &url, 14).await;
    assert_eq!(st, Status::Inconclusive, "{}", o.summary);
    assert!(
        o.inconclusive
            .as_deref()
            .is_some_and(|r| r.contains("straddles the limit")),
        "{:?}",
        o.inconclusive
    );
    // The same leak without the noise is a FAIL (the fake's leak is real).
    let (st, o) = run(
        memory(serde_json::json!({})),
        &rss_service(|n| format!("process_resident_memory_bytes {}\n", 200_000_000 + 4096 * n))
            .await,
        15,
    )
    .await;
    assert_eq!(st, Status::Fail, "{}", o.summary);
}

/// A JVM-like page: the heap pool leaks 200 bytes per request, the non-heap pool is flat.
fn jvm_pools(n: u64) -> String {
    format!(
        "# TYPE jvm_memory_used_bytes gauge\n\
         jvm_memory_used_bytes{{area=\"heap\",id=\"G1 Eden Space\"}} {}\n\
         jvm_memory_used_bytes{{area=\"nonheap\",id=\"Metaspace\"}} 30000000\n",
        80_000_000 + 200 * n
    )
}

#[tokio::test]
async fn memory_growth_reads_any_gauge_named_with_its_labels() {
    let url = rss_service(jvm_pools).await;
    let gauge = |labels: serde_json::Value| {
        serde_json::json!({
            "source": {"metric": "jvm_memory_used_bytes", "labels": labels},
            "max_growth_per_iteration": "64B",
        })
    };
    // The leaking pool FAILs, and the report names the series it read.
    let (st, o) = run(memory(gauge(serde_json::json!({"area": "heap"}))), &url, 16).await;
    assert_eq!(st, Status::Fail, "{}", o.summary);
    assert!(
        o.summary.contains("jvm_memory_used_bytes{area=\"heap\"}"),
        "{}",
        o.summary
    );
    assert!((o.evidence["slope_bytes_per_iteration"].as_f64().unwrap() - 200.0).abs() < 1.0);
    // The flat one PASSes.
    let (st, o) = run(
        memory(gauge(serde_json::json!({"area": "nonheap"}))),
        &url,
        17,
    )
    .await;
    assert_eq!(st, Status::Pass, "{}", o.summary);
    // Two series match without labels: an ERROR naming both, never a pick.
    let (st, o) = run(memory(gauge(serde_json::json!({}))), &url, 18).await;
    assert_eq!(st, Status::Error, "{}", o.summary);
    // A gauge the target does not export: SKIP naming it.
    let (st, o) = run(
        memory(serde_json::json!({"source": {"metric": "go_memstats_heap_alloc_bytes"}})),
        &url,
        19,
    )
    .await;
    assert_eq!(st, Status::Skip, "{}", o.summary);
    assert!(
        o.summary.contains("go_memstats_heap_alloc_bytes"),
        "{}",
        o.summary
    );
}

/// RSS that climbs 8 KiB per request for the first 60 requests, then stays flat: an allocator
/// settling, not a leak.
fn settling(n: u64) -> String {
    format!(
        "process_resident_memory_bytes {}\n",
        50_000_000 + 8192 * n.min(60)
    )
}

#[tokio::test]
async fn memory_growth_that_settles_is_not_a_leak() {
    let url = rss_service(settling).await;
    let (st, o) = run(memory(serde_json::json!({})), &url, 20).await;
    // Measured past the settling (two more rounds): PASS; never FAIL.
    assert_ne!(st, Status::Fail, "{}", o.summary);
    assert!(
        o.evidence["extensions"].as_u64().unwrap() >= 1,
        "{}",
        o.evidence
    );
}
