//! `load_shedding` and `query_timeout` through the library against small services written
//! here, each wrong in exactly one way (and a right one built differently from the core
//! service: a semaphore in the handler, not a middleware counter).

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::get;
use preflight::checks::CheckSpec;
use preflight::outcome::{Outcome, Status};
use preflight::target::{Ctx, Target};

/// How a fake treats a request past its bound of [`BOUND`] in flight.
#[derive(Clone, Copy)]
enum Excess {
    /// 503 at once (right).
    Refuse,
    /// Served like the rest: no shedding.
    Serve,
    /// 503, but only after holding it longer than a served request takes: a queued refusal.
    RefuseLate,
}

const BOUND: usize = 8;
/// How long a served request holds its slot.
const HOLD: Duration = Duration::from_millis(300);

async fn shedder(excess: Excess) -> String {
    let slots = Arc::new(tokio::sync::Semaphore::new(BOUND));
    let app = axum::Router::new().route(
        "/work",
        get(move || {
            let slots = slots.clone();
            async move {
                // Held (when acquired) until the answer is sent.
                let slot = slots.try_acquire_owned();
                match (&slot, excess) {
                    (Ok(_), _) | (Err(_), Excess::Serve) => {
                        tokio::time::sleep(HOLD).await;
                        (StatusCode::OK, "done")
                    }
                    (Err(_), Excess::Refuse) => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
                    (Err(_), Excess::RefuseLate) => {
                        tokio::time::sleep(HOLD * 3).await;
                        (StatusCode::SERVICE_UNAVAILABLE, "busy")
                    }
                }
            }
        }),
    );
    serve(app).await
}

/// A query endpoint: answers `status` with `code` at `/error/code` after `after`.
async fn query_service(status: u16, code: &'static str, after: Duration) -> String {
    let app = axum::Router::new().route(
        "/q",
        get(move || async move {
            tokio::time::sleep(after).await;
            (
                StatusCode::from_u16(status).unwrap(),
                axum::Json(serde_json::json!({"error": {"code": code}})),
            )
        }),
    );
    serve(app).await
}

/// Serves `app` on a port the OS hands over; the server ends with the test's runtime.
async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn ctx(url: &str, b: u8) -> Ctx {
    let ip = |c: u8, d: u8| std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 31, c, d));
    let extra = (1..=8).map(|d| ip(b + 1, d)).collect();
    let target = Arc::new(Target::remote(url));
    Ctx::standalone(target, ip(b, 1), extra, Duration::from_secs(60), 10_000)
}

async fn run(spec: serde_json::Value, ctx: &Ctx) -> (Status, Outcome) {
    let spec: CheckSpec = serde_json::from_value(spec).expect("valid spec");
    Outcome::settle(spec.run(ctx).await)
}

fn unmet(o: &Outcome) -> Vec<&str> {
    o.observations
        .iter()
        .filter(|o| !o.ok)
        .map(|o| o.what.as_str())
        .collect()
}

fn shedding() -> serde_json::Value {
    // Nothing injected: the fake holds each served request itself.
    serde_json::json!({"kind": "load_shedding", "request": "GET /work", "max_inflight": BOUND,
        "concurrency": 3 * BOUND, "delay": "0s", "accepted_p99_below": "2s"})
}

#[tokio::test]
async fn load_shedding_passes_a_shedder_and_fails_each_wrong_one() {
    let _timing = crate::support::timing();
    let (st, o) = run(shedding(), &ctx(&shedder(Excess::Refuse).await, 1)).await;
    assert_eq!(st, Status::Pass, "{o:#?}");

    let (st, o) = run(shedding(), &ctx(&shedder(Excess::Serve).await, 3)).await;
    assert_eq!(st, Status::Fail, "{o:#?}");
    assert!(unmet(&o).contains(&"shed with 503"), "{o:#?}");

    // The counts are right; only the timing of the refusals shows the queue.
    let (st, o) = run(shedding(), &ctx(&shedder(Excess::RefuseLate).await, 5)).await;
    assert_eq!(st, Status::Fail, "{o:#?}");
    assert_eq!(unmet(&o), ["median latency of shed answers"], "{o:#?}");
}

fn query_timeout() -> serde_json::Value {
    serde_json::json!({"kind": "query_timeout", "request": "GET /q", "budget": "50ms",
        "margin": "1s", "inject": false, "counter": ""})
}

#[tokio::test]
async fn query_timeout_passes_a_cut_off_and_fails_each_wrong_answer() {
    let _timing = crate::support::timing();
    let cut = Duration::from_millis(50);
    let url = query_service(503, "HB-Q-TIMEOUT", cut).await;
    let (st, o) = run(query_timeout(), &ctx(&url, 11)).await;
    assert_eq!(st, Status::Pass, "{o:#?}");

    // Ran to completion: the wrong status, and no code.
    let url = query_service(200, "", cut).await;
    let (st, o) = run(query_timeout(), &ctx(&url, 13)).await;
    assert_eq!(st, Status::Fail, "{o:#?}");
    assert_eq!(unmet(&o), ["status", "/error/code"], "{o:#?}");

    // Cut off, but far past budget + margin (1.05 s); within the check's patience (4.2 s).
    let url = query_service(503, "HB-Q-TIMEOUT", Duration::from_secs(3)).await;
    let (st, o) = run(query_timeout(), &ctx(&url, 15)).await;
    assert_eq!(st, Status::Fail, "{o:#?}");
    assert_eq!(unmet(&o), ["answered within budget + margin"], "{o:#?}");
}
