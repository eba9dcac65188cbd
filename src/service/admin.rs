//! The admin API (`/admin/…`): fault injection and operations. Mounted only when a token is
//! configured; every call needs the bearer token (compared in constant time) and is logged
//! with code `HB-ADMIN`.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::error::AppError;
use super::feed::FeedFault;
use super::{Shared, lock};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestDelay {
    pub path_prefix: String,
    pub delay_ms: u64,
}

/// The active faults.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Faults {
    pub feed: FeedFault,
    pub slow_query: bool,
    pub request_delay: Option<RequestDelay>,
    /// The store is capped at its current size: the next write that needs a page fails as on
    /// a full disk (clearing it restores the configured cap).
    pub store_full: bool,
}

/// `POST /admin/faults`: every field optional; given fields replace the active ones.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsPatch {
    feed: Option<FeedFault>,
    slow_query: Option<bool>,
    request_delay: Option<Option<RequestDelay>>,
    store_full: Option<bool>,
}

pub fn router(state: Shared) -> Router<Shared> {
    Router::new()
        .route("/admin/faults", post(set_faults).delete(clear_faults))
        .route("/admin/feed/poll", post(feed_poll))
        .route("/admin/breaker/reset", post(breaker_reset))
        .route("/admin/snapshot", post(snapshot))
        .route("/admin/retention/sweep", post(sweep))
        .route("/admin/store/prune", post(prune))
        .route_layer(axum::middleware::from_fn_with_state(state, authorize))
}

async fn authorize(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let Some(token) = state.cfg.admin.token.as_deref() else {
        return AppError::new(StatusCode::NOT_FOUND, "not-found", "no such route").into_response();
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let ok: bool = given.as_bytes().ct_eq(token.as_bytes()).into();
    let action = format!("{} {}", req.method(), req.uri().path());
    if !ok {
        tracing::warn!(
            code = "HB-ADMIN",
            action,
            "admin call refused: bad or missing token"
        );
        return AppError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required",
        )
        .into_response();
    }
    let res = next.run(req).await;
    tracing::info!(
        code = "HB-ADMIN",
        action,
        status = res.status().as_u16(),
        "admin action"
    );
    res
}

fn faults_write(state: &Shared) -> std::sync::RwLockWriteGuard<'_, Faults> {
    state.faults.write().unwrap_or_else(|e| e.into_inner())
}

/// Reads an admin body; axum's own rejection (e.g. past its 2 MB limit) is plain text, and
/// every error body here is JSON.
fn admin_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, AppError> {
    body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => AppError::new(e.status(), "body-too-large", e.body_text()),
        status => AppError::new(status, "bad-body", e.body_text()),
    })
}

async fn set_faults(
    State(state): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Faults>, AppError> {
    let body = admin_body(body)?;
    let patch: FaultsPatch = if body.iter().all(u8::is_ascii_whitespace) {
        FaultsPatch {
            feed: None,
            slow_query: None,
            request_delay: None,
            store_full: None,
        }
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| AppError::new(StatusCode::BAD_REQUEST, "malformed-json", e.to_string()))?
    };
    let (out, store_full) = {
        let mut f = faults_write(&state);
        if let Some(feed) = patch.feed {
            f.feed = feed;
        }
        if let Some(s) = patch.slow_query {
            f.slow_query = s;
        }
        if let Some(d) = patch.request_delay {
            f.request_delay = d;
        }
        (f.clone(), patch.store_full.filter(|on| *on != f.store_full))
    };
    if let Some(on) = store_full {
        set_store_full(&state, on).await?;
    }
    Ok(Json(Faults {
        store_full: store_full.unwrap_or(out.store_full),
        ..out
    }))
}

/// Applies the `store_full` fault to the store's writer and records it.
async fn set_store_full(state: &Shared, on: bool) -> Result<(), AppError> {
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || store.set_full_fault(on)).await??;
    faults_write(state).store_full = on;
    Ok(())
}

async fn clear_faults(State(state): State<Shared>) -> Result<Json<Faults>, AppError> {
    let store_full = {
        let mut f = faults_write(&state);
        let was = f.store_full;
        *f = Faults {
            store_full: was,
            ..Faults::default()
        };
        was
    };
    if store_full {
        set_store_full(&state, false).await?;
    }
    Ok(Json(faults_write(&state).clone()))
}

async fn feed_poll(State(state): State<Shared>) -> Json<super::feed::PollResult> {
    Json(super::feed::poll_once(&state).await)
}

#[derive(Deserialize)]
struct ResetBody {
    #[serde(default = "feed_name")]
    dependency: String,
}

fn feed_name() -> String {
    "feed".into()
}

async fn breaker_reset(
    State(state): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, AppError> {
    let body = admin_body(body)?;
    let dep = if body.iter().all(u8::is_ascii_whitespace) {
        feed_name()
    } else {
        serde_json::from_slice::<ResetBody>(&body)
            .map_err(|e| AppError::new(StatusCode::BAD_REQUEST, "malformed-json", e.to_string()))?
            .dependency
    };
    if dep != "feed" {
        return Err(AppError::new(
            StatusCode::NOT_FOUND,
            "unknown-dependency",
            format!("no breaker for `{dep}` (known: feed)"),
        ));
    }
    let t = lock(&state.breaker).reset(Instant::now());
    if let Some(t) = t {
        let (from, to) = (t.from.as_str(), t.to.as_str());
        state.metrics.record_transition(from, to);
        tracing::info!(
            code = "HB-BRK-CLOSED",
            dependency = "feed",
            from,
            to,
            "circuit breaker reset"
        );
        let store = state.store.clone();
        tokio::task::spawn_blocking(move || store.set_meta("breaker.feed", "closed"));
    }
    Ok(Json(
        serde_json::json!({"dependency": "feed", "state": "closed"}),
    ))
}

/// Writes a snapshot (used by the admin route and the periodic task).
pub async fn snapshot_now(state: &Shared) -> Result<serde_json::Value, AppError> {
    if !state.cfg.snapshot.enabled {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            "snapshots-disabled",
            "snapshots are disabled in the configuration",
        ));
    }
    let _one_at_a_time = state.snapshot_lock.lock().await;
    let s = state.clone();
    match tokio::task::spawn_blocking(move || s.write_snapshot()).await? {
        Ok((generation, path, bytes)) => {
            tracing::info!(code = "HB-SNAP", generation, bytes, "snapshot written");
            Ok(serde_json::json!({"generation": generation, "path": path, "bytes": bytes}))
        }
        Err(e) => {
            tracing::error!(code = "HB-SNAP-FAIL", error = %e, "snapshot failed");
            Err(AppError::internal(e))
        }
    }
}

async fn snapshot(State(state): State<Shared>) -> Result<Json<serde_json::Value>, AppError> {
    snapshot_now(&state).await.map(Json)
}

/// Runs the retention sweep (admin route and periodic task).
pub async fn sweep_now(state: &Shared) -> Result<super::logs::Sweep, AppError> {
    let cfg = &state.cfg.logs;
    if !cfg.retention {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            "retention-disabled",
            "log retention is disabled in the configuration",
        ));
    }
    let dir = state.logs_dir();
    let (age, max) = (cfg.max_age.get(), cfg.max_files);
    let result = tokio::task::spawn_blocking(move || super::logs::sweep(&dir, age, max)).await?;
    match result {
        Ok(s) => {
            tracing::info!(
                code = "HB-RETENTION",
                deleted = s.deleted.len(),
                kept = s.kept.len(),
                "log retention sweep"
            );
            Ok(s)
        }
        Err(e) => {
            tracing::error!(code = "HB-RETENTION-FAIL", error = %e, "log retention sweep failed");
            Err(AppError::internal(e))
        }
    }
}

async fn sweep(State(state): State<Shared>) -> Result<Json<super::logs::Sweep>, AppError> {
    sweep_now(&state).await.map(Json)
}

/// Prunes the store (admin route and periodic task).
pub async fn prune_now(state: &Shared) -> Result<super::store::Pruned, AppError> {
    let cfg = &state.cfg.store;
    if !cfg.retention {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            "retention-disabled",
            "store retention is disabled in the configuration",
        ));
    }
    let cutoff = super::now_ms() - cfg.max_age.get().as_millis() as i64;
    let (store, batch) = (state.store.clone(), cfg.prune_batch);
    match tokio::task::spawn_blocking(move || store.prune(cutoff, batch)).await? {
        Ok(p) => {
            use std::sync::atomic::Ordering::Relaxed;
            state.metrics.pruned_ticks.fetch_add(p.ticks, Relaxed);
            state
                .metrics
                .pruned_log_events
                .fetch_add(p.log_events, Relaxed);
            tracing::info!(
                code = "HB-STORE-PRUNE",
                ticks = p.ticks,
                log_events = p.log_events,
                batches = p.batches,
                freed_pages = p.freed_pages,
                took_ms = p.took_ms,
                "store retention prune"
            );
            *lock(&state.last_prune) = Some(p.clone());
            Ok(p)
        }
        Err(e) => {
            tracing::error!(code = "HB-STORE-PRUNE-FAIL", error = %e, "store prune failed");
            Err(e.into())
        }
    }
}

async fn prune(State(state): State<Shared>) -> Result<Json<super::store::Pruned>, AppError> {
    prune_now(&state).await.map(Json)
}

/// Reads the request-delay fault for `path` (used by the shedding layer).
pub fn delay_for(state: &Shared, path: &str) -> Option<std::time::Duration> {
    let f = state.faults.read().unwrap_or_else(|e| e.into_inner());
    f.request_delay
        .as_ref()
        .filter(|d| path.starts_with(&d.path_prefix) && d.delay_ms > 0)
        .map(|d| std::time::Duration::from_millis(d.delay_ms))
}
