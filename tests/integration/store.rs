//! The core service's disk, end to end: retention that bounds the store, and out of space
//! (`store.max_db_bytes`, the same `SQLITE_FULL` as a full disk) a clear 507, honest
//! readiness, reads that keep working, a start that does not crash-loop, and no acknowledged
//! tick lost.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

const DAY_MS: i64 = 86_400_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn batch(prefix: &str, n: usize, ts_ms: i64) -> (Vec<String>, Value) {
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    let ticks = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            json!({"id": id, "venue": "v1", "market": "disk", "selection": format!("s{}", i % 7),
                   "price": 2.0 + (i % 50) as f64 / 100.0, "ts_ms": ts_ms})
        })
        .collect();
    (ids, Value::Array(ticks))
}

/// How many of `ids` the service has (every lookup must answer 200).
async fn present(svc: &Service, ids: &[String]) -> usize {
    let mut n = 0;
    for chunk in ids.chunks(2000) {
        let (s, v) = post_json(
            &svc.client(),
            &svc.url("/v1/ticks/lookup"),
            &json!({ "ids": chunk }),
        )
        .await;
        assert_eq!(s, 200, "lookup: {v}");
        n += v["present"].as_u64().unwrap() as usize;
    }
    n
}

/// Ingests 200-tick batches until one is refused; returns the acknowledged ids and the
/// refusal (status, body, the refused ids). Bounded: panics if 400 batches all succeed.
async fn fill(svc: &Service, prefix: &str, ts_ms: i64) -> (Vec<String>, (u16, Value, Vec<String>)) {
    let c = svc.client();
    let mut acked = Vec::new();
    for b in 0..400 {
        let (ids, body) = batch(&format!("{prefix}{b}"), 200, ts_ms);
        let (s, v) = post_json(&c, &svc.url("/v1/ticks"), &body).await;
        match s {
            200 => acked.extend(ids),
            429 => panic!("rate-limited while filling: {v}"),
            _ => return (acked, (s, v, ids)),
        }
    }
    panic!("400 batches and no refusal: the cap did not hold")
}

async fn readyz(svc: &Service) -> (u16, Value) {
    get_json(&svc.client(), &svc.url("/readyz")).await
}

fn capped(dir: &std::path::Path, cap: &str, full: &str) -> std::path::PathBuf {
    patched(
        "core.yaml",
        dir,
        &[
            ("max_db_bytes: null", &format!("max_db_bytes: {cap}")),
            ("read_only_when_full: true", full),
        ],
    )
}

#[tokio::test]
async fn a_full_store_answers_507_reads_keep_serving_and_restarts_read_only_without_loss() {
    let _timing = timing();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let small = capped(dir.path(), "512KiB", "read_only_when_full: true");
    let mut svc = Service::start(&small, &data);
    assert_eq!(readyz(&svc).await.0, 200);

    // Old ticks first (retention will free them later), then recent ones until refused.
    let old_ts = now_ms() - 30 * DAY_MS;
    let mut old = Vec::new();
    for b in 0..4 {
        let (ids, body) = batch(&format!("old{b}"), 200, old_ts);
        let (s, v) = post_json(&svc.client(), &svc.url("/v1/ticks"), &body).await;
        assert_eq!(s, 200, "{v}");
        old.extend(ids);
    }
    let (recent, (status, body, refused)) = fill(&svc, "new", now_ms()).await;
    assert_eq!(status, 507, "{body}");
    assert_eq!(body["error"]["code"], "store-full", "{body}");
    assert!(!recent.is_empty());

    // Readiness tells the truth; /status and /metrics say why; reads answer.
    let (s, r) = readyz(&svc).await;
    assert_eq!(s, 503, "{r}");
    assert_eq!(r["store"]["state"], "read_only", "{r}");
    let st = svc.status().await;
    assert_eq!(st["store"]["state"], "read_only", "{st}");
    assert!(
        st["store"]["reason"].as_str().unwrap().contains("full"),
        "{st}"
    );
    assert_eq!(svc.metric("store_read_only").await, Some(1.0));
    assert!(
        svc.metric("store_full_rejections_total{writer=\"ingest\"}")
            .await
            .unwrap()
            >= 1.0
    );
    let (s, v) = get_json(
        &svc.client(),
        &svc.url("/v1/correlations?market=disk&window=1h"),
    )
    .await;
    assert_eq!(s, 200, "reads keep serving: {v}");
    assert_eq!(present(&svc, &recent).await, recent.len());
    assert_eq!(present(&svc, &old).await, old.len());
    assert_eq!(
        present(&svc, &refused).await,
        0,
        "a refused batch is not stored"
    );
    // Liveness stays up: a supervisor must not restart a read-only service.
    let h = svc.client().get(svc.url("/healthz")).send().await.unwrap();
    assert_eq!(h.status(), 200);
    let log = std::fs::read_to_string(data.join("stderr.txt")).unwrap();
    assert!(log.contains("HB-STORE-FULL"), "logged to stderr:\n{log}");

    // kill -9 while full: the restart starts read-only, and nothing acknowledged is missing.
    svc.kill9();
    let svc = Service::start(&small, &data);
    let (s, r) = readyz(&svc).await;
    assert_eq!((s, &r["store"]["state"]), (503, &json!("read_only")), "{r}");
    assert_eq!(present(&svc, &recent).await, recent.len());
    assert_eq!(present(&svc, &old).await, old.len());
    let (s, _) = post_json(
        &svc.client(),
        &svc.url("/v1/ticks"),
        &batch("x", 200, now_ms()).1,
    )
    .await;
    assert_eq!(s, 507);

    // Deleting old data gives space back: writable again by itself, no restart.
    let (s, p) = svc.admin("POST", "/admin/store/prune", Value::Null).await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["ticks"], old.len(), "{p}");
    eventually(
        "ready once space returned",
        Duration::from_secs(15),
        || async { (readyz(&svc).await.0 == 200).then_some(()) },
    )
    .await;
    let (_, body) = batch("again", 200, now_ms());
    let (s, v) = post_json(&svc.client(), &svc.url("/v1/ticks"), &body).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(present(&svc, &old).await, 0, "pruned by retention");
    assert_eq!(present(&svc, &recent).await, recent.len());
    assert_eq!(svc.metric("store_read_only").await, Some(0.0));
    drop(svc);

    // A higher cap (restart): the refused batch can be sent again and is stored.
    let big = capped(dir.path(), "8MiB", "read_only_when_full: true");
    let svc = Service::start(&big, &data);
    assert_eq!(readyz(&svc).await.0, 200);
    let (_, body) = batch(
        refused[0].rsplit_once('-').unwrap().0,
        refused.len(),
        now_ms(),
    );
    let (s, v) = post_json(&svc.client(), &svc.url("/v1/ticks"), &body).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(present(&svc, &refused).await, refused.len());
    assert_eq!(present(&svc, &recent).await, recent.len());
}

#[tokio::test]
async fn the_store_full_fault_is_refused_then_lifted() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start(&config("core.yaml"), dir.path());
    let (s, f) = svc
        .admin("POST", "/admin/faults", json!({"store_full": true}))
        .await;
    assert_eq!((s, &f["store_full"]), (200, &json!(true)), "{f}");
    let (acked, (status, body, refused)) = fill(&svc, "f", now_ms()).await;
    assert_eq!(status, 507, "{body}");
    assert_eq!(readyz(&svc).await.0, 503);
    let (s, f) = svc.admin("DELETE", "/admin/faults", Value::Null).await;
    assert_eq!((s, &f["store_full"]), (200, &json!(false)), "{f}");
    eventually(
        "ready once the fault is lifted",
        Duration::from_secs(15),
        || async { (readyz(&svc).await.0 == 200).then_some(()) },
    )
    .await;
    assert_eq!(present(&svc, &acked).await, acked.len());
    assert_eq!(present(&svc, &refused).await, 0);
}

#[tokio::test]
async fn without_the_hardening_a_full_store_is_a_500_and_still_ready() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = capped(dir.path(), "256KiB", "read_only_when_full: false");
    let svc = Service::start(&cfg, &dir.path().join("data"));
    let (_, (status, body, _)) = fill(&svc, "d", now_ms()).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (500, &json!("internal")),
        "{body}"
    );
    assert_eq!(
        readyz(&svc).await.0,
        200,
        "the defect: ready while no write succeeds"
    );
}

#[tokio::test]
async fn a_corrupt_database_is_a_startup_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("core.db"), vec![0x5a; 8192]).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_preflight"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config("core.yaml"))
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("core.db"), "{err}");
    assert!(err.contains("not a SQLite database or is corrupt"), "{err}");
}
