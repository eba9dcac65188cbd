//! The service's router in process: `service::app(state)` driven with `oneshot`, no socket
//! and no background tasks (axum's testing pattern). Fast checks of routing and middleware;
//! everything with timing or processes is in `service.rs` against the real binary.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use preflight::service::store::Store;
use preflight::service::{AppState, Config, Shared, app};
use tower::ServiceExt as _;

/// A state over a store in `dir`, from config text (`extends` not needed here).
fn state(dir: &std::path::Path, yaml: &str) -> Shared {
    let mut cfg = Config::parse("test.yaml", yaml).unwrap();
    cfg.data_dir = dir.to_path_buf();
    let store = Arc::new(Store::open(&dir.join("core.db")).unwrap());
    Arc::new(AppState::new(cfg, store))
}

/// A GET as if from `peer` (the extension `into_make_service_with_connect_info` adds).
fn get(path: &str, peer: &str) -> Request<Body> {
    let mut req = Request::get(path).body(Body::empty()).unwrap();
    let peer: SocketAddr = peer.parse().unwrap();
    req.extensions_mut().insert(ConnectInfo(peer));
    req
}

/// `router`'s answer to a GET of `path` from `peer`.
async fn call(router: &axum::Router, path: &str, peer: &str) -> axum::response::Response {
    router.clone().oneshot(get(path, peer)).await.unwrap()
}

async fn body_json(res: axum::response::Response) -> serde_json::Value {
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn health_readiness_and_unknown_routes() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path(), "");
    let res = app(s.clone())
        .oneshot(get("/healthz", "127.0.0.1:1"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // Not ready until the service has restored its state and seeded.
    let res = app(s.clone())
        .oneshot(get("/readyz", "127.0.0.1:1"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    s.ready.store(true, Ordering::Relaxed);
    let res = app(s.clone())
        .oneshot(get("/readyz", "127.0.0.1:1"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body_json(res).await["ready"], true);
    let res = app(s.clone())
        .oneshot(get("/nope", "127.0.0.1:1"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    // No admin token configured: the admin API is not mounted.
    let res = app(s)
        .oneshot(get("/admin/faults", "127.0.0.1:1"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_limiter_keys_on_the_peer_address_and_answers_429_with_headers() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path(), "rate_limit:\n  burst: 2\n  per_second: 1\n");
    let router = app(s.clone());
    for _ in 0..2 {
        let res = call(&router, "/v1/detections", "127.0.9.1:5000").await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["ratelimit-limit"], "2");
    }
    let res = call(&router, "/v1/detections", "127.0.9.1:5001").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(res.headers()["ratelimit-remaining"], "0");
    // Another address is unaffected, and exempt paths are never limited.
    let res = call(&router, "/v1/detections", "127.0.9.2:5000").await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = call(&router, "/metrics", "127.0.9.1:5000").await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = router
        .oneshot(get("/status", "127.0.9.3:5000"))
        .await
        .unwrap();
    let status = body_json(res).await;
    assert_eq!(status["limiter"]["tracked_clients"], 3, "{status:#}");
    assert_eq!(status["limiter"]["rejections"], 1, "{status:#}");
}

/// `RateLimit-Remaining` on each of `n` requests from one address (`None`: no header);
/// every answer that carries it carries `RateLimit-Limit: 8` and `RateLimit-Reset` too.
async fn remaining_advertised(yaml: &str, n: usize) -> Vec<Option<String>> {
    let dir = tempfile::tempdir().unwrap();
    let router = app(state(dir.path(), yaml));
    let mut out = Vec::new();
    for _ in 0..n {
        let res = call(&router, "/v1/detections", "127.0.9.1:5000").await;
        assert_eq!(res.status(), StatusCode::OK);
        let h = res.headers();
        let remaining = h
            .get("ratelimit-remaining")
            .map(|v| v.to_str().unwrap().to_owned());
        let limit = h
            .get("ratelimit-limit")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(limit.is_some(), remaining.is_some(), "{h:?}");
        assert_eq!(
            h.contains_key("ratelimit-reset"),
            remaining.is_some(),
            "{h:?}"
        );
        if let Some(l) = limit {
            assert_eq!(l, "8");
        }
        out.push(remaining);
    }
    out
}

#[tokio::test]
async fn accepted_answers_advertise_near_the_limit_by_default_or_always_when_configured() {
    let cfg = "rate_limit:\n  burst: 8\n  per_second: 1\n";
    let near = remaining_advertised(cfg, 8).await;
    let said: Vec<_> = near.iter().flatten().map(String::as_str).collect();
    // 7, 6 and 5 left: nothing said; from 4 (half the burst) down, every answer.
    assert_eq!(near[..3], [None, None, None], "{near:?}");
    assert_eq!(said, ["4", "3", "2", "1", "0"]);
    let always = remaining_advertised(&format!("{cfg}  headers: always\n"), 8).await;
    let said: Vec<_> = always.iter().flatten().map(String::as_str).collect();
    assert_eq!(said, ["7", "6", "5", "4", "3", "2", "1", "0"]);
}
