//! Routes, handlers and the middlewares, composed once: metrics (outermost, labelled by
//! the matched route template) → per-IP rate limit → load shedding (with the injected request
//! delay inside the bound) → handler. `/admin/` is exempt from the last two. The data routes
//! (`/v1/…`) get one more, innermost, when the config injects faults (`faults.rs`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, MatchedPath, Query, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::AppError;
use super::graph::Graph;
use super::metrics::{resident_memory_bytes, route_index, sample};
use super::ratelimit::Decision;
use super::snapshot::GraphSummary;
use super::store::{QueryError, Tick, WriteError};
use super::{Shared, admin, detectors, faults, lock, logs, now_ms};
use crate::units::Dur;
use tower_http::catch_panic::CatchPanicLayer;

static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const RATE_LIMITED_BODY: &str =
    r#"{"error":{"code":"rate-limited","message":"too many requests from this address"}}"#;
const OVERLOADED_BODY: &str =
    r#"{"error":{"code":"overloaded","message":"too many requests in flight; retry later"}}"#;

pub fn router(state: Shared) -> Router {
    // The data routes, where the config's injected faults (if any) apply: never to the
    // probes, the scrape, `/status` or `/admin/` (see `faults`).
    let data = Router::new()
        .route("/v1/ticks", post(ingest))
        .route("/v1/ticks/lookup", post(lookup))
        .route("/v1/graph/build", post(build))
        .route("/v1/detections", get(detections))
        .route("/v1/correlations", get(correlations));
    let mut r = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .merge(faults::apply(&state, data));
    if state.cfg.admin.token.is_some() {
        r = r.merge(admin::router(state.clone()));
    }
    // After every route is added: the 405 fallback applies to the routes present.
    r.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn_with_state(state.clone(), shed))
        .layer(from_fn_with_state(state.clone(), rate_limit))
        .layer(from_fn_with_state(state.clone(), record))
        // Outermost: a panic anywhere inside is answered (and counted by `record`'s caller,
        // the client) as a JSON 500 instead of a dropped connection.
        .layer(CatchPanicLayer::custom(panicked))
        .with_state(state)
}

/// A handler panicked: logged with the panic message, answered as an internal error.
fn panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let msg = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    AppError::internal(format_args!("handler panicked: {msg}")).into_response()
}

async fn not_found() -> AppError {
    AppError::new(StatusCode::NOT_FOUND, "not-found", "no such route")
}

/// A known path with another method: JSON like every error; axum adds the `Allow` header.
async fn method_not_allowed(method: Method, uri: Uri) -> AppError {
    AppError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        format!(
            "{method} is not allowed on {}; the Allow header lists the methods that are",
            uri.path()
        ),
    )
}

// ---- middleware -------------------------------------------------------------------------

async fn record(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = route_index(req.extensions().get::<MatchedPath>().map(|m| m.as_str()));
    state.metrics.inflight.fetch_add(1, Ordering::Relaxed);
    let res = next.run(req).await;
    state.metrics.inflight.fetch_sub(1, Ordering::Relaxed);
    state.metrics.record_request(
        route,
        res.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    res
}

async fn rate_limit(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let Some(limiter) = &state.limiter else {
        return next.run(req).await;
    };
    if limiter.is_exempt(req.uri().path()) {
        return next.run(req).await;
    }
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    // Only a trusted proxy's `X-Forwarded-For` counts, so only then is it looked up: a lookup
    // by name string cost a sixth of the limiter's instructions per request (callgrind,
    // docs/benchmarks.md).
    let xff = if limiter.trusts(peer) {
        req.headers()
            .get(&X_FORWARDED_FOR)
            .map(HeaderValue::as_bytes)
    } else {
        None
    };
    let ip = limiter.client_ip(peer, xff);
    match limiter.check(ip) {
        Decision::Allow { advertise } => {
            let mut res = next.run(req).await;
            if let Some((remaining, reset)) = advertise {
                let h = res.headers_mut();
                h.insert(RATELIMIT_LIMIT.clone(), limiter.limit_header.clone());
                h.insert(RATELIMIT_REMAINING.clone(), remaining);
                h.insert(RATELIMIT_RESET.clone(), reset);
            }
            res
        }
        Decision::Deny { retry_after } => {
            let mut res = Response::new(Body::from(RATE_LIMITED_BODY));
            *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
            let h = res.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            h.insert(RATELIMIT_LIMIT.clone(), limiter.limit_header.clone());
            h.insert(RATELIMIT_REMAINING.clone(), HeaderValue::from_static("0"));
            h.insert(RATELIMIT_RESET.clone(), retry_after.clone());
            h.insert(header::RETRY_AFTER, retry_after);
            res
        }
    }
}

async fn shed(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let exempt =
        path.starts_with("/admin/") || state.cfg.rate_limit.exempt.iter().any(|e| e == path);
    if exempt {
        return next.run(req).await;
    }
    let delay = admin::delay_for(&state, path);
    let _permit = match &state.shed {
        Some(sem) => match sem.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                state.metrics.load_shed.fetch_add(1, Ordering::Relaxed);
                let mut res = Response::new(Body::from(OVERLOADED_BODY));
                *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                res.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                return res;
            }
        },
        None => None,
    };
    // The injected delay occupies the slot, as a slow dependency would.
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    next.run(req).await
}

// ---- public routes ------------------------------------------------------------------------

async fn healthz() -> &'static str {
    "ok"
}

/// Ready: started, and the store takes writes. A full store answers 503 with the reason
/// (the service still serves reads; `/healthz` stays 200, so a supervisor does not restart it).
async fn readyz(State(state): State<Shared>) -> Response {
    if state.store.is_read_only() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "store": state.store.health()})),
        )
            .into_response()
    } else if state.ready.load(Ordering::Relaxed) {
        Json(json!({"ready": true})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false})),
        )
            .into_response()
    }
}

/// Reads a request body under the configured limit.
async fn read_body(state: &Shared, body: Body) -> Result<Bytes, AppError> {
    let max = state.cfg.limits.max_body.0 as usize;
    let too_large = || {
        AppError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            format!("the body exceeds {}", state.cfg.limits.max_body),
        )
    };
    match http_body_util::Limited::new(body, max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "bad-body",
            format!("could not read the body: {e}"),
        )),
    }
}

fn parse_json(bytes: &[u8]) -> Result<Value, AppError> {
    serde_json::from_slice(bytes)
        .map_err(|e| AppError::new(StatusCode::BAD_REQUEST, "malformed-json", e.to_string()))
}

async fn ingest(State(state): State<Shared>, req: Request) -> Result<Json<Value>, AppError> {
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > state.cfg.limits.max_body.0
    {
        return Err(AppError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            format!("the body exceeds {}", state.cfg.limits.max_body),
        ));
    }
    let bytes = read_body(&state, req.into_body()).await?;
    let list = match parse_json(&bytes)? {
        Value::Array(a) => a,
        Value::Object(mut o) => match o.remove("ticks") {
            Some(Value::Array(a)) => a,
            _ => {
                return Err(AppError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid-tick",
                    "expected an array of ticks or {\"ticks\":[...]}",
                ));
            }
        },
        _ => {
            return Err(AppError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-tick",
                "expected an array of ticks or {\"ticks\":[...]}",
            ));
        }
    };
    if list.len() > state.cfg.limits.max_batch {
        return Err(AppError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "batch-too-large",
            format!(
                "{} ticks in one batch; at most {}",
                list.len(),
                state.cfg.limits.max_batch
            ),
        ));
    }
    let mut ticks = Vec::with_capacity(list.len());
    for (i, v) in list.into_iter().enumerate() {
        let t: Tick = serde_json::from_value(v).map_err(|e| {
            AppError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-tick",
                format!("ticks[{i}]: {e}"),
            )
        })?;
        t.validate().map_err(|e| {
            AppError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-tick",
                format!("ticks[{i}]: {e}"),
            )
        })?;
        ticks.push(t);
    }
    let n = ticks.len();
    let store = state.store.clone();
    let added =
        match tokio::task::spawn_blocking(move || store.insert_ticks(&ticks, now_ms())).await? {
            Ok(added) => added,
            Err(e @ WriteError::Full(_)) => {
                state
                    .metrics
                    .store_full_ingest
                    .fetch_add(1, Ordering::Relaxed);
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
    state
        .metrics
        .ticks_ingested
        .fetch_add(added as u64, Ordering::Relaxed);
    Ok(Json(json!({"accepted": n})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LookupBody {
    ids: Vec<String>,
}

async fn lookup(State(state): State<Shared>, req: Request) -> Result<Json<Value>, AppError> {
    let bytes = read_body(&state, req.into_body()).await?;
    let body: LookupBody = serde_json::from_value(parse_json(&bytes)?).map_err(|e| {
        AppError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-request",
            e.to_string(),
        )
    })?;
    let store = state.store.clone();
    let (present, missing) = tokio::task::spawn_blocking(move || store.lookup(&body.ids)).await??;
    Ok(Json(json!({"present": present, "missing": missing})))
}

fn parse_window(w: Option<&str>) -> Result<Duration, AppError> {
    let w = w.unwrap_or("5m");
    match w.parse::<Dur>() {
        Ok(d) if !d.get().is_zero() => Ok(d.get()),
        _ => Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "bad-window",
            format!("invalid window `{w}`: write a positive duration such as 5m or 30s"),
        )),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct BuildBody {
    window: Option<String>,
    market: Option<String>,
}

async fn build(State(state): State<Shared>, req: Request) -> Result<Json<Value>, AppError> {
    let bytes = read_body(&state, req.into_body()).await?;
    let body: BuildBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        BuildBody::default()
    } else {
        serde_json::from_value(parse_json(&bytes)?).map_err(|e| {
            AppError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-request",
                e.to_string(),
            )
        })?
    };
    let window = parse_window(body.window.as_deref())?;
    let s = state.clone();
    let out = tokio::task::spawn_blocking(move || -> Result<Value, AppError> {
        let started = Instant::now();
        let now = now_ms();
        let window_ms = window.as_millis() as i64;
        let ticks = s
            .store
            .ticks_since(now - window_ms, body.market.as_deref())?;
        let bucket = (window_ms / 30).max(1000);
        let g = Graph::build(&ticks, bucket);
        let detections = lock(&s.detectors).run(&g);
        let build_secs = started.elapsed().as_secs_f64();
        s.metrics.graph_builds.fetch_add(1, Ordering::Relaxed);
        s.metrics.graph_build.observe(build_secs);
        *lock(&s.graph) = Some(GraphSummary {
            nodes: g.nodes(),
            edges: g.edges(),
            layers: g.layers.clone(),
            window_ms,
            built_at_ms: now,
        });
        Ok(json!({
            "nodes": g.nodes(),
            "edges": g.edges(),
            "layers": g.layers,
            "detections": detections,
            "build_ms": build_secs * 1e3,
        }))
    })
    .await??;
    Ok(Json(out))
}

async fn detections(State(state): State<Shared>) -> Json<Value> {
    let d = lock(&state.detectors);
    Json(json!({"detections": d.last}))
}

#[derive(Deserialize)]
struct CorrelationParams {
    market: Option<String>,
    window: Option<String>,
}

async fn correlations(
    State(state): State<Shared>,
    query: Result<Query<CorrelationParams>, QueryRejection>,
) -> Result<Json<Value>, AppError> {
    // axum's own rejection is plain text; every error body here is JSON.
    let Query(p) = query.map_err(|e| {
        AppError::new(
            StatusCode::BAD_REQUEST,
            "bad-query",
            format!("invalid query string: {}", e.body_text()),
        )
    })?;
    let Some(market) = p.market.filter(|m| !m.is_empty()) else {
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "missing-market",
            "the `market` query parameter is required",
        ));
    };
    let window = parse_window(p.window.as_deref())?;
    let window_text = p.window.unwrap_or_else(|| "5m".into());
    let timeout = Some(state.cfg.query.timeout.get()).filter(|d| !d.is_zero());
    let heavy = state
        .faults
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .slow_query
        .then_some(state.cfg.query.slow_query_rows);
    let s = state.clone();
    let m = market.clone();
    let started = Instant::now();
    let result = tokio::task::spawn_blocking(move || {
        if !s.store.market_exists(&m)? {
            return Ok(None);
        }
        let window_ms = window.as_millis() as i64;
        let since = now_ms() - window_ms;
        s.store
            .correlations(&m, since, (window_ms / 30).max(1000), timeout, heavy)
            .map(Some)
    })
    .await?;
    match result {
        Ok(Some(pairs)) => Ok(Json(
            json!({"market": market, "window": window_text, "pairs": pairs}),
        )),
        Ok(None) => Err(AppError::new(
            StatusCode::NOT_FOUND,
            "unknown-market",
            format!("no ticks for market `{market}`"),
        )),
        Err(QueryError::Timeout(budget)) => {
            state.metrics.query_timeouts.fetch_add(1, Ordering::Relaxed);
            let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
            tracing::warn!(
                code = "HB-Q-TIMEOUT",
                market,
                elapsed_ms,
                budget_ms = budget.as_millis() as u64,
                "query exceeded its budget"
            );
            Err(AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "HB-Q-TIMEOUT",
                format!("the query exceeded its {} ms budget", budget.as_millis()),
            ))
        }
        Err(e) => Err(e.into()),
    }
}

// ---- status and metrics -----------------------------------------------------------------

fn status_json(state: &Shared) -> Value {
    let cfg = &state.cfg;
    let (b_state, b_fail, b_trans) = {
        let b = lock(&state.breaker);
        (b.state(), b.consecutive_failures(), b.transitions)
    };
    let (builds, _) = {
        let d = lock(&state.detectors);
        (d.builds, d.last.len())
    };
    let last_at = state.snapshot.last_at_ms.load(Ordering::Relaxed);
    let age = snapshot_age(state);
    let counts = logs::counts();
    let sum = |lvl: &str| -> u64 {
        counts
            .iter()
            .filter(|((l, _), _)| *l == lvl)
            .map(|(_, n)| n)
            .sum()
    };
    let limiter = match &state.limiter {
        Some(l) => json!({
            "enabled": true, "burst": l.burst, "per_second": l.per_second,
            "tracked_clients": l.tracked(), "max_clients": l.max_clients,
            "rejections": l.rejections.load(Ordering::Relaxed),
        }),
        None => json!({
            "enabled": false, "burst": cfg.rate_limit.burst,
            "per_second": cfg.rate_limit.per_second, "tracked_clients": 0,
            "max_clients": cfg.rate_limit.max_clients, "rejections": 0,
        }),
    };
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs_f64(),
        "breakers": {"feed": {
            "state": b_state.as_str(), "consecutive_failures": b_fail,
            "threshold": cfg.breaker.threshold,
            "reset_timeout_ms": cfg.breaker.reset_timeout.get().as_millis() as u64,
            "transitions": b_trans,
        }},
        "limiter": limiter,
        "shedding": {
            "enabled": cfg.shedding.enabled, "max_inflight": cfg.shedding.max_inflight,
            "inflight": state.metrics.inflight.load(Ordering::Relaxed),
            "shed": state.metrics.load_shed.load(Ordering::Relaxed),
        },
        "query": {
            "timeout_ms": cfg.query.timeout.get().as_millis() as u64,
            "timeouts": state.metrics.query_timeouts.load(Ordering::Relaxed),
        },
        "snapshot": {
            "enabled": cfg.snapshot.enabled,
            "generation": state.snapshot.generation.load(Ordering::Relaxed),
            "last_at_ms": last_at,
            "age_seconds": age,
            "restored_generation": *lock(&state.snapshot.restored_generation),
        },
        "detectors": {"instances": detectors::instances(), "builds": builds},
        "logs": {"dir": state.logs_dir(), "warnings": sum("WARN"), "errors": sum("ERROR")},
        "ticks": {"stored": state.store.tick_count().unwrap_or(-1)},
        "store": store_json(state),
        "faults": faults::status_json(state),
    })
}

/// `/status` `store`: read-write or read-only (and why), size and cap, retention.
fn store_json(state: &Shared) -> Value {
    let cfg = &state.cfg.store;
    let (bytes, max) = state
        .store
        .size()
        .map_or((None, None), |(b, m)| (Some(b), m));
    let mut v = serde_json::to_value(state.store.health()).unwrap_or(Value::Null);
    if let Value::Object(o) = &mut v {
        o.insert("db_bytes".into(), json!(bytes));
        o.insert("max_db_bytes".into(), json!(max));
        o.insert(
            "full_rejections".into(),
            json!(state.metrics.store_full_ingest.load(Ordering::Relaxed)),
        );
        o.insert(
            "retention".into(),
            json!({
                "enabled": cfg.retention,
                "max_age_seconds": cfg.max_age.get().as_secs(),
                "last_prune": *lock(&state.last_prune),
            }),
        );
    }
    v
}

fn snapshot_age(state: &Shared) -> Option<f64> {
    let last = state.snapshot.last_at_ms.load(Ordering::Relaxed);
    (last > 0).then(|| ((now_ms() - last).max(0)) as f64 / 1e3)
}

async fn status(State(state): State<Shared>) -> Result<Json<Value>, AppError> {
    let s = state.clone();
    Ok(Json(
        tokio::task::spawn_blocking(move || status_json(&s)).await?,
    ))
}

async fn metrics(State(state): State<Shared>) -> Response {
    use std::fmt::Write as _;
    let m = &state.metrics;
    // Read before this page allocates anything, so a scrape does not count itself.
    let heap = super::metrics::heap();
    let mut out = String::with_capacity(16 * 1024);
    m.render_http(&mut out);
    let c = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    sample(
        &mut out,
        "ratelimit_rejections_total",
        "counter",
        "Requests rejected by the per-IP rate limiter.",
        state
            .limiter
            .as_ref()
            .map_or(0, |l| l.rejections.load(Ordering::Relaxed)),
    );
    sample(
        &mut out,
        "ratelimit_tracked_clients",
        "gauge",
        "Client addresses the rate limiter tracks.",
        state.limiter.as_ref().map_or(0, |l| l.tracked()),
    );
    sample(
        &mut out,
        "load_shed_total",
        "counter",
        "Requests shed past the in-flight bound.",
        c(&m.load_shed),
    );
    sample(
        &mut out,
        "inflight_requests",
        "gauge",
        "Requests in flight.",
        m.inflight.load(Ordering::Relaxed),
    );
    let b = lock(&state.breaker).state();
    out.push_str("# HELP breaker_state Circuit breaker state: 0 closed, 1 open, 2 half-open.\n# TYPE breaker_state gauge\n");
    let _ = writeln!(out, "breaker_state{{dependency=\"feed\"}} {}", b.gauge());
    out.push_str("# HELP breaker_transitions_total Circuit breaker state changes.\n# TYPE breaker_transitions_total counter\n");
    for ((from, to), n) in lock(&m.breaker_transitions).iter() {
        let _ = writeln!(
            out,
            "breaker_transitions_total{{dependency=\"feed\",from=\"{from}\",to=\"{to}\"}} {n}"
        );
    }
    out.push_str(
        "# HELP feed_calls_total Feed pulls by result.\n# TYPE feed_calls_total counter\n",
    );
    for (r, v) in [
        ("ok", &m.feed_ok),
        ("error", &m.feed_error),
        ("rejected", &m.feed_rejected),
    ] {
        let _ = writeln!(out, "feed_calls_total{{result=\"{r}\"}} {}", c(v));
    }
    sample(
        &mut out,
        "query_timeouts_total",
        "counter",
        "Analytics queries interrupted at their budget.",
        c(&m.query_timeouts),
    );
    out.push_str("# HELP log_events_total Log events carrying a code, by level and code.\n# TYPE log_events_total counter\n");
    for ((level, code), n) in logs::counts() {
        let _ = writeln!(
            out,
            "log_events_total{{level=\"{}\",code=\"{code}\"}} {n}",
            level.to_ascii_lowercase()
        );
    }
    sample(
        &mut out,
        "detector_instances",
        "gauge",
        "Live detector objects.",
        detectors::instances(),
    );
    sample(
        &mut out,
        "graph_builds_total",
        "counter",
        "Graph builds.",
        c(&m.graph_builds),
    );
    m.render_graph_build(&mut out);
    sample(
        &mut out,
        "snapshot_age_seconds",
        "gauge",
        "Seconds since the last snapshot (-1: none yet).",
        snapshot_age(&state).unwrap_or(-1.0),
    );
    sample(
        &mut out,
        "snapshots_total",
        "counter",
        "Snapshots written.",
        c(&m.snapshots),
    );
    sample(
        &mut out,
        "ticks_ingested_total",
        "counter",
        "Ticks stored (ingest and feed).",
        c(&m.ticks_ingested),
    );
    m.render_store(&mut out, state.store.is_read_only());
    m.render_faults(&mut out, faults::active(&state.cfg.faults));
    sample(
        &mut out,
        "process_resident_memory_bytes",
        "gauge",
        "Resident set size.",
        resident_memory_bytes(),
    );
    if let Some(h) = heap {
        h.render(&mut out);
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        out,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::{Body, to_bytes};
    use tower::ServiceExt;

    async fn boom() -> &'static str {
        panic!("kaboom")
    }

    #[tokio::test]
    async fn a_panicking_handler_is_a_json_500_not_a_dropped_connection() {
        let app: axum::Router = axum::Router::new()
            .route("/boom", axum::routing::get(boom))
            .layer(super::CatchPanicLayer::custom(super::panicked));
        let req = axum::http::Request::get("/boom")
            .body(Body::empty())
            .unwrap();
        let res = app.oneshot(req).await.unwrap();
        assert_eq!(res.status(), 500);
        let body = to_bytes(res.into_body(), 1 << 16).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "internal", "{v}");
        let text = String::from_utf8_lossy(&body);
        assert!(
            !text.contains("kaboom"),
            "the cause is logged, not sent: {text}"
        );
    }
}
