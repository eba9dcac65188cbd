//! The bundled core service, end to end: the real binary on loopback. Each feature is shown
//! working on `config/core.yaml`, and each defect shown present on
//! `config/before-hardening.yaml`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

fn tick(id: &str, market: &str) -> Value {
    json!({"id": id, "venue": "v1", "market": market, "selection": "s1", "price": 2.5})
}

/// Sends only the headers of a POST announcing a `len`-byte JSON body, and returns what the
/// service answers before the body arrives (bounded to 10 s).
async fn announce_body(svc: &Service, path: &str, len: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = svc.url.trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) if !buf.is_empty() => break,
            Err(_) => {}
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn core(dir: &std::path::Path) -> Service {
    Service::start(&config("core.yaml"), dir)
}

fn before(dir: &std::path::Path) -> Service {
    Service::start(&config("before-hardening.yaml"), dir)
}

// ---- core.yaml ------------------------------------------------------------------------

#[tokio::test]
async fn ingest_is_idempotent_and_bad_input_gets_clear_4xx() {
    let dir = tempfile::tempdir().unwrap();
    let svc = core(dir.path());
    let c = svc.client();
    let batch = json!({"ticks": [tick("a-1", "mx"), tick("a-2", "mx")]});
    assert_eq!(
        post_json(&c, &svc.url("/v1/ticks"), &batch).await,
        (200, json!({"accepted": 2}))
    );
    // Re-sending is idempotent; a bare array is accepted too.
    let (s, _) = post_json(&c, &svc.url("/v1/ticks"), &json!([tick("a-1", "mx")])).await;
    assert_eq!(s, 200);
    let (s, v) = post_json(
        &c,
        &svc.url("/v1/ticks/lookup"),
        &json!({"ids": ["a-1", "a-2", "zz"]}),
    )
    .await;
    assert_eq!((s, v), (200, json!({"present": 2, "missing": ["zz"]})));

    let r = c
        .post(svc.url("/v1/ticks"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "malformed-json"
    );

    // An oversized body is refused from its Content-Length, before a byte of it is read.
    // (Sending the 2 MiB with an HTTP client races the early answer: the client may still be
    // writing when the service closes, and see a broken pipe instead of the 413.)
    let answer = announce_body(&svc, "/v1/ticks", 2 << 20).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"body-too-large\""), "{answer}");

    let many: Vec<Value> = (0..5001).map(|i| tick(&format!("b{i}"), "mx")).collect();
    let (s, v) = post_json(&c, &svc.url("/v1/ticks"), &json!(many)).await;
    assert_eq!((s, &v["error"]["code"]), (422, &json!("batch-too-large")));

    let bad = json!([{"venue": "v1", "market": "m1", "selection": "s1", "price": 0.5}]);
    let (s, v) = post_json(&c, &svc.url("/v1/ticks"), &bad).await;
    assert_eq!((s, &v["error"]["code"]), (422, &json!("invalid-tick")));

    let (s, v) = get_json(&c, &svc.url("/v1/correlations?market=nope")).await;
    assert_eq!((s, &v["error"]["code"]), (404, &json!("unknown-market")));
    let (s, v) = get_json(&c, &svc.url("/v1/correlations?market=m1&window=soon")).await;
    assert_eq!((s, &v["error"]["code"]), (400, &json!("bad-window")));
    // Still serving.
    let (s, v) = get_json(&c, &svc.url("/v1/correlations?market=m1&window=5m")).await;
    assert_eq!(s, 200, "{v}");
    assert!(!v["pairs"].as_array().unwrap().is_empty(), "{v}");
    let stored = svc.status().await["ticks"]["stored"].as_i64().unwrap();
    assert!(stored >= 542, "{stored}");
}

#[tokio::test]
async fn graph_builds_reuse_the_same_detectors() {
    let dir = tempfile::tempdir().unwrap();
    let svc = core(dir.path());
    let c = svc.client();
    for _ in 0..30 {
        let (s, v) = post_json(&c, &svc.url("/v1/graph/build"), &json!({"window": "5m"})).await;
        assert_eq!(s, 200, "{v}");
        assert!(v["nodes"].as_u64().unwrap() >= 27);
        assert!(v["layers"]["venue"].as_u64().unwrap() > 0);
        assert!(v["layers"]["market"].as_u64().unwrap() > 0);
    }
    assert_eq!(svc.metric("detector_instances").await, Some(4.0));
    assert_eq!(svc.metric("graph_builds_total").await, Some(30.0));
    let (_, d) = get_json(&c, &svc.url("/v1/detections")).await;
    let d = d["detections"].as_array().unwrap();
    assert!(d.iter().any(|x| x["detector"] == "steam_move"), "{d:?}");
    assert!(d.iter().any(|x| x["detector"] == "arbitrage"), "{d:?}");
}

#[tokio::test]
async fn slow_query_is_interrupted_at_the_budget() {
    let _timing = crate::support::timing();
    let dir = tempfile::tempdir().unwrap();
    // A heavy query of 4·10¹² steps runs for days unless interrupted: an answer at all shows
    // the interrupt, with no wall-clock threshold a loaded machine could break.
    let cfg = patched(
        "core.yaml",
        dir.path(),
        &[(
            "slow_query_rows: 4000000\n",
            "slow_query_rows: 4000000000000\n",
        )],
    );
    let svc = Service::start(&cfg, &dir.path().join("data"));
    let c = svc.client();
    let (s, _) = svc
        .admin("POST", "/admin/faults", json!({"slow_query": true}))
        .await;
    assert_eq!(s, 200);
    // Only a guard against hanging the suite: the interrupted query answers in ~50 ms.
    let (s, v) = tokio::time::timeout(
        Duration::from_secs(120),
        get_json(&c, &svc.url("/v1/correlations?market=m1")),
    )
    .await
    .expect("the heavy query was not interrupted");
    assert_eq!((s, &v["error"]["code"]), (503, &json!("HB-Q-TIMEOUT")));
    assert_eq!(svc.metric("query_timeouts_total").await, Some(1.0));
    let m = svc.metrics().await;
    assert!(
        m.contains("log_events_total{level=\"warn\",code=\"HB-Q-TIMEOUT\"} 1"),
        "{m}"
    );
    svc.admin("DELETE", "/admin/faults", Value::Null).await;
    let (s, _) = get_json(&c, &svc.url("/v1/correlations?market=m1")).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn rate_limit_burst_then_429_with_headers_per_address() {
    let _timing = crate::support::timing();
    let dir = tempfile::tempdir().unwrap();
    let svc = core(dir.path());
    let c = svc.client();
    let mut ok = 0;
    // Admitted answers without `RateLimit-*`: core.yaml advertises once half the burst is used.
    let mut quiet = 0;
    let mut limited = None;
    for _ in 0..140 {
        let r = c.get(svc.url("/v1/detections")).send().await.unwrap();
        match r.status().as_u16() {
            200 => {
                match r.headers().get("ratelimit-remaining") {
                    None => quiet += 1,
                    Some(left) => {
                        let left: u64 = left.to_str().unwrap().parse().unwrap();
                        assert!(left <= 50, "advertised with {left} of 100 left");
                        assert_eq!(r.headers()["ratelimit-limit"], "100");
                        assert!(r.headers().contains_key("ratelimit-reset"));
                    }
                }
                ok += 1;
            }
            429 => limited = Some(r),
            s => panic!("status {s}"),
        }
    }
    // 100 of burst plus what refilled at 10/s while the loop ran.
    assert!((100..=125).contains(&ok), "{ok} accepted");
    // 99 down to 51 left: silent; 50 down to 0: each said at least once.
    assert!((49..=ok - 51).contains(&quiet), "{quiet} of {ok} silent");
    let r = limited.expect("no 429");
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    assert_eq!(r.headers()["ratelimit-remaining"], "0");
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "rate-limited"
    );
    // Another address is unaffected; exempt paths are never limited.
    let (s, _) = get_json(&svc.client(), &svc.url("/v1/detections")).await;
    assert_eq!(s, 200);
    for _ in 0..20 {
        assert_eq!(
            c.get(svc.url("/healthz")).send().await.unwrap().status(),
            200
        );
    }
    assert!(svc.metric("ratelimit_rejections_total").await.unwrap() >= 15.0);
    // Refill: after a second or so this address is accepted again.
    eventually("refill", Duration::from_secs(10), || async {
        (c.get(svc.url("/v1/detections"))
            .send()
            .await
            .unwrap()
            .status()
            == 200)
            .then_some(())
    })
    .await;
}

/// Guards the limiter's memory bound over time: buckets of clients that went quiet are
/// dropped by the periodic cleanup (`ratelimit_tracked_clients` falls back to 0).
#[tokio::test]
async fn idle_rate_limit_clients_are_cleaned_up() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = patched(
        "core.yaml",
        dir.path(),
        &[(
            "  idle_timeout: 60s\n  cleanup_interval: 10s\n",
            "  idle_timeout: 1s\n  cleanup_interval: 200ms\n",
        )],
    );
    let svc = Service::start(&cfg, &dir.path().join("data"));
    // `/metrics` is exempt, so reading the gauge tracks no client of its own.
    let tracked = || async { svc.metric("ratelimit_tracked_clients").await };
    let clients: Vec<_> = (0..20).map(|_| svc.client()).collect();
    let started = Instant::now();
    for c in &clients {
        let (s, _) = get_json(c, &svc.url("/v1/detections")).await;
        assert_eq!(s, 200);
    }
    let seen = tracked().await.unwrap();
    // Each bucket is full again 100 ms after its one request and dropped 1 s later, so all
    // 20 are still there unless this box stalled for over a second.
    if started.elapsed() < Duration::from_millis(1000) {
        assert!(seen >= 20.0, "{seen} tracked right after 20 clients");
    }
    eventually("idle buckets dropped", Duration::from_secs(15), || async {
        (tracked().await == Some(0.0)).then_some(())
    })
    .await;
    // A client that comes back is served as a new one.
    let r = clients[0]
        .get(svc.url("/v1/detections"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_spray_of_forwarded_addresses_is_capped() {
    let _timing = crate::support::timing();
    let dir = tempfile::tempdir().unwrap();
    let cfg = patched(
        "core.yaml",
        dir.path(),
        &[
            ("trusted_proxies: []", "trusted_proxies: [127.0.0.1]"),
            ("max_clients: 100000", "max_clients: 5000"),
            // The subject is the cap, not idle cleanup: on a loaded machine the spray takes
            // longer than the shipped 60 s, and a cleanup would then drop the regular
            // client's (full, idle) bucket too and hand it the drained overflow bucket.
            ("idle_timeout: 60s", "idle_timeout: 1h"),
        ],
    );
    let svc = Service::start(&cfg, &dir.path().join("data"));
    let proxy = client_from("127.0.0.1".parse().unwrap());
    // A client seen before the spray keeps its own bucket once the store is full.
    let regular = svc.client();
    assert_eq!(get_json(&regular, &svc.url("/v1/detections")).await.0, 200);
    let rss_before = svc.metric("process_resident_memory_bytes").await.unwrap();
    let url = svc.url("/healthz-not-exempt");
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(48));
    let mut tasks = Vec::new();
    for i in 0..100_000u32 {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let proxy = proxy.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let [_, b, c, d] = (i + 1).to_be_bytes();
            let xff = format!("10.{b}.{c}.{d}");
            let r = proxy
                .get(&url)
                .header("x-forwarded-for", xff)
                .send()
                .await
                .unwrap();
            drop(permit);
            r.status().as_u16()
        }));
    }
    let mut by_status = std::collections::BTreeMap::new();
    for t in tasks {
        *by_status.entry(t.await.unwrap()).or_insert(0u32) += 1;
    }
    // Unknown route → 404 while tracked; 429 once the overflow bucket is empty.
    assert!(
        by_status.keys().all(|s| *s == 404 || *s == 429),
        "{by_status:?}"
    );
    assert!(
        by_status.get(&429).copied().unwrap_or(0) > 50_000,
        "{by_status:?}"
    );
    // Read /status as the regular client: it has its own bucket, while any address first
    // seen now (127.0.0.1 without a forwarded header included) shares the drained overflow one.
    let (code, st) = get_json(&regular, &svc.url("/status")).await;
    assert_eq!(code, 200, "{st}");
    let tracked = st["limiter"]["tracked_clients"].as_u64().unwrap();
    assert!(tracked <= 5000, "{tracked}");
    let rss_after = svc.metric("process_resident_memory_bytes").await.unwrap();
    assert!(
        rss_after - rss_before < 64e6,
        "RSS grew by {}",
        rss_after - rss_before
    );
    // The service keeps serving: a tracked client is unaffected; new clients share the
    // overflow bucket until idle entries are cleaned up; exempt paths always answer.
    let (s, _) = get_json(&regular, &svc.url("/v1/detections")).await;
    assert_eq!(s, 200);
    let (s, _) = get_json(&svc.client(), &svc.url("/healthz")).await;
    assert_eq!(s, 200);
}

/// What a flood saw: the accepted and shed counts, when the last refusal and the first
/// accepted answer arrived.
struct Flood {
    ok: usize,
    shed: usize,
    last_shed: Option<Instant>,
    first_ok: Option<Instant>,
}

async fn flood(svc: &Service, n: usize) -> Flood {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let c = svc.client();
        let url = svc.url("/v1/detections");
        tasks.push(tokio::spawn(async move {
            let s = c.get(url).send().await.unwrap().status().as_u16();
            (s, Instant::now())
        }));
    }
    let mut f = Flood {
        ok: 0,
        shed: 0,
        last_shed: None,
        first_ok: None,
    };
    for t in tasks {
        let (s, at) = t.await.unwrap();
        match s {
            200 => {
                f.ok += 1;
                f.first_ok = Some(f.first_ok.map_or(at, |t| t.min(at)));
            }
            503 => {
                f.shed += 1;
                f.last_shed = Some(f.last_shed.map_or(at, |t| t.max(at)));
            }
            s => panic!("status {s}"),
        }
    }
    f
}

#[tokio::test]
async fn load_is_shed_past_the_inflight_bound() {
    let _timing = crate::support::timing();
    let dir = tempfile::tempdir().unwrap();
    let svc = core(dir.path());
    let delay = json!({"request_delay": {"path_prefix": "/v1/detections", "delay_ms": 1500}});
    assert_eq!(svc.admin("POST", "/admin/faults", delay).await.0, 200);
    let Flood {
        ok,
        shed,
        last_shed,
        first_ok,
    } = flood(&svc, 160).await;
    assert!(shed > 0, "nothing shed ({ok} ok)");
    assert!(ok <= 100, "{ok} accepted with max_inflight 64");
    // Refused at once, not queued: every refusal is back while the accepted requests are
    // still held by the delay (an order of events, not a wall-clock threshold).
    let (last_shed, first_ok) = (last_shed.unwrap(), first_ok.expect("nothing accepted"));
    assert!(
        last_shed < first_ok,
        "a refusal came {:?} after the first accepted answer",
        last_shed - first_ok
    );
    assert!(svc.metric("load_shed_total").await.unwrap() >= shed as f64);
}

#[tokio::test]
async fn breaker_opens_fast_fails_half_opens_and_closes() {
    let _timing = crate::support::timing();
    let dir = tempfile::tempdir().unwrap();
    let cfg = patched(
        "core.yaml",
        dir.path(),
        &[("  interval: 10s\n", "  interval: 0s\n")],
    );
    let svc = Service::start(&cfg, &dir.path().join("data"));
    let poll = || async { svc.admin("POST", "/admin/feed/poll", Value::Null).await.1 };
    assert_eq!(poll().await["result"], "ok");
    svc.admin("POST", "/admin/faults", json!({"feed": {"mode": "fail"}}))
        .await;
    for i in 1..=4 {
        let v = poll().await;
        assert_eq!(
            (v["result"].as_str(), v["state"].as_str()),
            (Some("error"), Some("closed")),
            "{i}"
        );
    }
    let v = poll().await;
    assert_eq!(
        (v["result"].as_str(), v["state"].as_str()),
        (Some("error"), Some("open"))
    );
    // Fast-fail: the rejected poll never called the feed (its calls stay at 5 errors), with
    // no wall-clock threshold on the rejection.
    let v = poll().await;
    assert_eq!(v["result"], "rejected");
    assert_eq!(
        svc.metric("feed_calls_total{result=\"error\"}").await,
        Some(5.0)
    );
    assert_eq!(
        svc.metric("feed_calls_total{result=\"rejected\"}").await,
        Some(1.0)
    );
    assert_eq!(
        svc.metric("breaker_state{dependency=\"feed\"}").await,
        Some(1.0)
    );
    // After the reset timeout one trial goes through; it fails, so the breaker re-opens.
    let v = eventually("half-open trial", Duration::from_secs(10), || async {
        let v = poll().await;
        (v["result"] != "rejected").then_some(v)
    })
    .await;
    assert_eq!(
        (v["result"].as_str(), v["state"].as_str()),
        (Some("error"), Some("open"))
    );
    svc.admin("POST", "/admin/faults", json!({"feed": {"mode": "ok"}}))
        .await;
    let v = eventually("closing trial", Duration::from_secs(10), || async {
        let v = poll().await;
        (v["result"] != "rejected").then_some(v)
    })
    .await;
    assert_eq!(
        (v["result"].as_str(), v["state"].as_str()),
        (Some("ok"), Some("closed"))
    );
    let m = svc.metrics().await;
    for (from, to) in [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
        ("half_open", "closed"),
    ] {
        let series =
            format!("breaker_transitions_total{{dependency=\"feed\",from=\"{from}\",to=\"{to}\"}}");
        assert!(metric_value(&m, &series).is_some(), "{series}\n{m}");
    }
    assert!(metric_value(&m, "feed_calls_total{result=\"rejected\"}").unwrap() >= 1.0);
    // Breaker reset via admin.
    svc.admin("POST", "/admin/faults", json!({"feed": {"mode": "fail"}}))
        .await;
    for _ in 0..5 {
        poll().await;
    }
    assert_eq!(svc.status().await["breakers"]["feed"]["state"], "open");
    let (s, _) = svc
        .admin(
            "POST",
            "/admin/breaker/reset",
            json!({"dependency": "feed"}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(svc.status().await["breakers"]["feed"]["state"], "closed");
    let log = eventually(
        "HB-BRK-OPEN in the log file",
        Duration::from_secs(10),
        || async {
            let text = read_logs(&svc.data_dir.join("logs"));
            text.contains("HB-BRK-OPEN").then_some(text)
        },
    )
    .await;
    assert!(log.contains("HB-BRK-HALF-OPEN") && log.contains("HB-BRK-CLOSED"));
}

fn read_logs(dir: &std::path::Path) -> String {
    let mut s = String::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("core.log.")
        {
            s.push_str(&std::fs::read_to_string(p).unwrap_or_default());
        }
    }
    s
}

#[tokio::test]
async fn snapshot_written_on_demand_and_on_sigterm_then_restored() {
    let dir = tempfile::tempdir().unwrap();
    let mut svc = core(dir.path());
    let c = svc.client();
    post_json(&c, &svc.url("/v1/graph/build"), &json!({"window": "5m"})).await;
    let (s, v) = svc.admin("POST", "/admin/snapshot", Value::Null).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["generation"], 1);
    assert!(svc.metric("snapshot_age_seconds").await.unwrap() >= 0.0);
    assert!(svc.terminate().success());
    let snap: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("snapshots/graph.snapshot.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(snap["generation"], 2, "final snapshot on graceful shutdown");
    assert_eq!(snap["builds"], 1);
    let svc = core(dir.path());
    let st = svc.status().await;
    assert_eq!(st["snapshot"]["restored_generation"], 2);
    assert_eq!(st["detectors"]["builds"], 1);
    let (_, d) = get_json(&svc.client(), &svc.url("/v1/detections")).await;
    assert!(!d["detections"].as_array().unwrap().is_empty());
    let (s, _) = get_json(&svc.client(), &svc.url("/readyz")).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn acknowledged_ticks_survive_kill_9() {
    let _timing = crate::support::timing();
    let dir = tempfile::tempdir().unwrap();
    let mut acked: Vec<String> = Vec::new();
    for round in 0..3 {
        let mut svc = core(dir.path());
        let base = svc.status().await["ticks"]["stored"].as_i64().unwrap();
        let c = svc.client();
        let url = svc.url("/v1/ticks");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let writer = tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut n = 0;
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                let ids: Vec<String> = (0..20).map(|k| format!("r{round}-{n}-{k}")).collect();
                let batch: Vec<Value> = ids.iter().map(|id| tick(id, "mk")).collect();
                n += 1;
                match c.post(&url).json(&batch).send().await {
                    Ok(r) if r.status() == 200 => mine.extend(ids),
                    Ok(r) if r.status() == 429 => {
                        tokio::time::sleep(Duration::from_millis(20)).await
                    }
                    _ => break, // the process died mid-request: not acknowledged
                }
            }
            mine
        });
        // Let some batches commit, then kill -9 while the writer is still going.
        eventually(
            "some acknowledged ticks",
            Duration::from_secs(20),
            || async {
                let st = svc.status().await;
                (st["ticks"]["stored"].as_i64().unwrap_or(0) > base + 100).then_some(())
            },
        )
        .await;
        svc.kill9();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mine = writer.await.unwrap();
        assert!(!mine.is_empty());
        acked.extend(mine);
        let svc = core(dir.path());
        for chunk in acked.chunks(2000) {
            let (s, v) = post_json(
                &svc.client(),
                &svc.url("/v1/ticks/lookup"),
                &json!({"ids": chunk}),
            )
            .await;
            assert_eq!(s, 200);
            assert_eq!(
                v["missing"],
                json!([]),
                "round {round}: acknowledged ticks lost"
            );
        }
    }
}

#[tokio::test]
async fn logs_rotate_by_name_retention_sweeps_and_status_reads_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let today = chrono::Utc::now().date_naive();
    let recent = format!("core.log.{}", today - chrono::Days::new(3));
    for f in [
        "core.log.2020-01-01",
        "core.log.2020-01-01.gz",
        "notes.txt",
        recent.as_str(),
    ] {
        std::fs::write(logs.join(f), "x\n").unwrap();
    }
    let svc = core(dir.path());
    // A warning with a code lands in the JSON log and in SQLite.
    svc.admin("POST", "/admin/faults", json!({"slow_query": true}))
        .await;
    let (s, _) = get_json(&svc.client(), &svc.url("/v1/correlations?market=m1")).await;
    assert_eq!(s, 503);
    let (s, v) = svc
        .admin("POST", "/admin/retention/sweep", Value::Null)
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["deleted"], json!(["core.log.2020-01-01"]));
    let current = format!("core.log.{today}");
    assert!(logs.join(&current).exists());
    for f in ["core.log.2020-01-01.gz", "notes.txt", recent.as_str()] {
        assert!(logs.join(f).exists(), "{f} touched");
    }
    let line = eventually(
        "warning in the JSON log",
        Duration::from_secs(10),
        || async {
            let text = std::fs::read_to_string(logs.join(&current)).unwrap_or_default();
            text.lines()
                .find(|l| l.contains("HB-Q-TIMEOUT"))
                .map(str::to_string)
        },
    )
    .await;
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["level"], "WARN");
    assert_eq!(v["code"], "HB-Q-TIMEOUT");
    // Every warning or error in the file carries a code.
    let text = std::fs::read_to_string(logs.join(&current)).unwrap();
    for l in text.lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        if v["level"] == "WARN" || v["level"] == "ERROR" {
            assert!(v["code"].is_string(), "{l}");
        }
    }
    let status = |fmt: &'static str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_preflight"))
            .args(["status", "--format", fmt, "--data-dir"])
            .arg(&svc.data_dir)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let line = eventually(
        "warning counted by the trigger",
        Duration::from_secs(10),
        || async {
            let l = status("tmux");
            l.contains("warn 1").then_some(l)
        },
    )
    .await;
    assert!(line.starts_with("core ✔ up"), "{line}");
    assert!(line.contains("brk feed:closed"), "{line}");
    assert_eq!(line.trim().lines().count(), 1);
    let j: Value = serde_json::from_str(&status("json")).unwrap();
    assert_eq!(j["up"], true);
    assert!(j["warnings"].as_i64().unwrap() >= 1);
}

#[tokio::test]
async fn admin_needs_the_token_and_is_absent_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let svc = core(&dir.path().join("a"));
    let c = preflight::http_client::client();
    let r = c.post(svc.url("/admin/snapshot")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "unauthorized"
    );
    let r = c
        .post(svc.url("/admin/snapshot"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let text = eventually("HB-ADMIN logged", Duration::from_secs(10), || async {
        let t = read_logs(&svc.data_dir.join("logs"));
        t.contains("HB-ADMIN").then_some(t)
    })
    .await;
    assert!(text.contains("/admin/snapshot"));
    let no_admin = Service::start_with(&config("core.yaml"), &dir.path().join("b"), None);
    let r = c
        .post(no_admin.url("/admin/snapshot"))
        .bearer_auth("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn metrics_expose_every_documented_name() {
    let dir = tempfile::tempdir().unwrap();
    let svc = core(dir.path());
    get_json(&svc.client(), &svc.url("/v1/detections")).await;
    let m = svc.metrics().await;
    for name in [
        "http_requests_total{route=\"/v1/detections\",status=\"200\"}",
        "http_request_duration_seconds_bucket{route=\"/v1/detections\"",
        "ratelimit_rejections_total",
        "ratelimit_tracked_clients",
        "load_shed_total",
        "inflight_requests",
        "breaker_state{dependency=\"feed\"}",
        "breaker_transitions_total",
        "feed_calls_total{result=\"ok\"}",
        "query_timeouts_total",
        "log_events_total",
        "detector_instances 4",
        "graph_builds_total",
        "graph_build_seconds_bucket",
        "snapshot_age_seconds",
        "snapshots_total",
        "ticks_ingested_total",
        "process_resident_memory_bytes",
        "heap_live_bytes",
    ] {
        assert!(m.contains(name), "{name} missing");
    }
    assert!(svc.metric("process_resident_memory_bytes").await.unwrap() > 1e6);
    assert!(svc.metric("heap_live_bytes").await.unwrap() > 1e5);
}

#[test]
fn a_bad_config_value_is_reported_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = patched("core.yaml", dir.path(), &[("burst: 100", "burst: 0")]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_preflight"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("test-core.yaml:12:10: rate_limit.burst: expected a positive integer"),
        "{err}"
    );
}

// ---- before-hardening.yaml: every defect is really there ------------------------------

#[tokio::test]
async fn before_detectors_are_rebound_per_build_and_leak() {
    let _timing = crate::support::timing();
    let dir = tempfile::tempdir().unwrap();
    let svc = before(dir.path());
    let c = svc.client();
    assert_eq!(svc.metric("detector_instances").await, Some(4.0));
    let rss0 = svc.metric("process_resident_memory_bytes").await.unwrap();
    for _ in 0..400 {
        let (s, _) = post_json(&c, &svc.url("/v1/graph/build"), &json!({"window": "1m"})).await;
        assert_eq!(s, 200);
    }
    assert_eq!(
        svc.metric("detector_instances").await,
        Some(4.0 + 4.0 * 400.0)
    );
    let rss1 = svc.metric("process_resident_memory_bytes").await.unwrap();
    // 4 detectors × ≥4 KiB each per build, never freed.
    assert!(rss1 - rss0 > 4e6, "RSS grew only {} bytes", rss1 - rss0);
}

#[tokio::test]
async fn before_a_burst_is_never_limited() {
    let _timing = crate::support::timing();
    let dir = tempfile::tempdir().unwrap();
    let svc = before(dir.path());
    let c = svc.client();
    for _ in 0..300 {
        let r = c.get(svc.url("/v1/detections")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(!r.headers().contains_key("ratelimit-limit"));
    }
    assert_eq!(svc.status().await["limiter"]["enabled"], false);
}

#[tokio::test]
async fn before_a_slow_query_runs_to_completion_and_the_breaker_never_opens() {
    let _timing = crate::support::timing();
    let dir = tempfile::tempdir().unwrap();
    let cfg = patched(
        "before-hardening.yaml",
        dir.path(),
        &[(
            "extends: core.yaml\n",
            "extends: core.yaml\nfeed:\n  interval: 0s\n",
        )],
    );
    let svc = Service::start(&cfg, &dir.path().join("data"));
    svc.admin(
        "POST",
        "/admin/faults",
        json!({"slow_query": true, "feed": {"mode": "fail"}}),
    )
    .await;
    let started = Instant::now();
    // The query runs to completion: seconds on a quiet box, past the usual 30 s client
    // timeout with two busy loops beside a debug build. Wait for it (bounded, only so that
    // a hang cannot hold the suite).
    let patient = reqwest::Client::builder()
        .local_address(fresh_ip())
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap();
    let (s, v) = get_json(&patient, &svc.url("/v1/correlations?market=m1")).await;
    assert_eq!(s, 200, "{v}");
    assert!(
        started.elapsed() > Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(svc.metric("query_timeouts_total").await, Some(0.0));
    for _ in 0..10 {
        let (_, v) = svc.admin("POST", "/admin/feed/poll", Value::Null).await;
        assert_eq!(
            (v["result"].as_str(), v["state"].as_str()),
            (Some("error"), Some("closed"))
        );
    }
    assert_eq!(
        svc.status().await["breakers"]["feed"]["consecutive_failures"],
        10
    );
}

#[tokio::test]
async fn before_no_snapshots_no_shedding_no_retention() {
    let _timing = crate::support::timing();
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(logs.join("core.log.2020-01-01"), "old\n").unwrap();
    let mut svc = before(dir.path());
    let (s, v) = svc.admin("POST", "/admin/snapshot", Value::Null).await;
    assert_eq!(
        (s, &v["error"]["code"]),
        (409, &json!("snapshots-disabled"))
    );
    let (s, v) = svc
        .admin("POST", "/admin/retention/sweep", Value::Null)
        .await;
    assert_eq!(
        (s, &v["error"]["code"]),
        (409, &json!("retention-disabled"))
    );
    assert!(logs.join("core.log.2020-01-01").exists());
    let delay = json!({"request_delay": {"path_prefix": "/v1/detections", "delay_ms": 300}});
    svc.admin("POST", "/admin/faults", delay).await;
    let f = flood(&svc, 120).await;
    assert_eq!((f.ok, f.shed), (120, 0));
    assert!(svc.terminate().success());
    assert!(!dir.path().join("snapshots").exists());
    let svc = before(dir.path());
    assert_eq!(
        svc.status().await["snapshot"]["restored_generation"],
        Value::Null
    );
}
