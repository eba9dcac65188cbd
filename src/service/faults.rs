//! Injected faults (`faults:` in the service config), for negative controls such as
//! `config/candidate-*.yaml`: latency added to every data request, a latency tail on a random
//! share of them, and a random share answered with an error status instead of running the
//! handler. All off by default; when none is configured the layer is not even installed.
//!
//! One middleware, on the data routes (`/v1/…`) only: probes (`/healthz`, `/readyz`), scrapes
//! (`/metrics`), `/status` and `/admin/…` stay honest, so a judge sees the faults as clients
//! do while the service's own reporting tells the truth about them (`injected_faults_total`,
//! `/status` `faults`, a `HB-FAULTS-ACTIVE` warning at start). It sits inside the rate limiter
//! and the shedding bound, like the handler it stands in front of: a rejected request is not
//! faulted, and a delayed one occupies its in-flight slot as a slow handler would.
//!
//! It must not block a worker (delays are `tokio::time::sleep`) and never holds its RNG across
//! an await (a per-thread `SmallRng`, drawn from before the first await).

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use rand::SeedableRng;
use rand::distr::{Bernoulli, Distribution};
use rand::rngs::SmallRng;
use serde_json::{Value, json};

use super::Shared;
use super::config::FaultsConfig;
use super::error::AppError;
use crate::units::Dur;

thread_local! {
    /// Fast and per thread: no lock on the request path; seeded once from the OS-seeded
    /// thread RNG.
    static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_rng(&mut rand::rng()));
}

/// A random share of the requests.
#[derive(Debug, Clone, Copy)]
struct Share {
    fraction: f64,
    draw: Bernoulli,
}

impl Share {
    /// `None` for a zero share, and for one outside 0..=1 (validation rejects those; a
    /// config built without it disables the fault rather than panic).
    fn new(fraction: f64) -> Option<Share> {
        let draw = Bernoulli::new(fraction).ok()?;
        (fraction > 0.0).then_some(Share { fraction, draw })
    }
}

/// What the config injects, ready to draw from.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    latency: Option<Duration>,
    tail: Option<(Share, Duration)>,
    errors: Option<(Share, StatusCode)>,
}

/// One request's lot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lot {
    tail: bool,
    error: Option<StatusCode>,
}

impl Plan {
    pub fn new(cfg: &FaultsConfig) -> Plan {
        let positive = |d: Dur| Some(d.get()).filter(|d| !d.is_zero());
        Plan {
            latency: positive(cfg.latency),
            tail: Share::new(cfg.tail.fraction).zip(positive(cfg.tail.latency)),
            errors: Share::new(cfg.errors.fraction).zip(
                StatusCode::from_u16(cfg.errors.status)
                    .ok()
                    .filter(|s| s.is_client_error() || s.is_server_error()),
            ),
        }
    }

    /// Whether any fault is injected.
    pub fn is_active(&self) -> bool {
        self.latency.is_some() || self.tail.is_some() || self.errors.is_some()
    }

    /// The active faults in the config's words, e.g. `faults.latency: 20ms`; empty when none.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(l) = self.latency {
            parts.push(format!("faults.latency: {}", Dur(l)));
        }
        if let Some((share, l)) = self.tail {
            parts.push(format!(
                "faults.tail: {{fraction: {}, latency: {}}}",
                share.fraction,
                Dur(l)
            ));
        }
        if let Some((share, status)) = self.errors {
            parts.push(format!(
                "faults.errors: {{fraction: {}, status: {}}}",
                share.fraction,
                status.as_u16()
            ));
        }
        parts.join("; ")
    }

    fn draw(&self, rng: &mut SmallRng) -> Lot {
        Lot {
            tail: self.tail.is_some_and(|(s, _)| s.draw.sample(rng)),
            error: self
                .errors
                .and_then(|(s, status)| s.draw.sample(rng).then_some(status)),
        }
    }
}

#[derive(Clone)]
struct Injector {
    state: Shared,
    plan: Arc<Plan>,
}

/// `data` with the fault layer on each of its routes when the config injects any fault;
/// `data` unchanged otherwise. Call it before the router's method-not-allowed fallback is
/// set, so that a 405 is answered as it is, not faulted.
pub fn apply(state: &Shared, data: Router<Shared>) -> Router<Shared> {
    let plan = Plan::new(&state.cfg.faults);
    if !plan.is_active() {
        return data;
    }
    let injector = Injector {
        state: state.clone(),
        plan: Arc::new(plan),
    };
    data.route_layer(from_fn_with_state(injector, inject))
}

async fn inject(State(inj): State<Injector>, req: Request, next: Next) -> Response {
    let lot = RNG.with_borrow_mut(|rng| inj.plan.draw(rng));
    let m = &inj.state.metrics;
    let tail = inj.plan.tail.filter(|_| lot.tail).map(|(_, d)| d);
    let delay = inj.plan.latency.unwrap_or_default() + tail.unwrap_or_default();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
        // Counted once served: a request dropped while it waits was not delayed in full.
        if inj.plan.latency.is_some() {
            m.fault_delayed.fetch_add(1, Relaxed);
        }
        if tail.is_some() {
            m.fault_tail_delayed.fetch_add(1, Relaxed);
        }
    }
    if let Some(status) = lot.error {
        m.fault_errors.fetch_add(1, Relaxed);
        return AppError::new(
            status,
            "injected-fault",
            "injected fault: `faults.errors` in the service config answers this share of the \
             data requests with this status",
        )
        .into_response();
    }
    next.run(req).await
}

/// Logs one warning naming the active faults (nothing when none): a profile that injects
/// faults must never run unnoticed.
pub fn announce(cfg: &FaultsConfig) {
    let plan = Plan::new(cfg);
    if plan.is_active() {
        tracing::warn!(
            code = "HB-FAULTS-ACTIVE",
            faults = %plan.describe(),
            "injected faults are active on the data routes: a negative control, not for production"
        );
    }
}

/// Whether the config injects any fault (`injected_faults_active`).
pub fn active(cfg: &FaultsConfig) -> bool {
    Plan::new(cfg).is_active()
}

/// The `faults` object of `/status`: what is configured (in effect) and what was injected.
pub fn status_json(state: &Shared) -> Value {
    let plan = Plan::new(&state.cfg.faults);
    let ms = |d: Option<Duration>| d.unwrap_or_default().as_secs_f64() * 1e3;
    let m = &state.metrics;
    json!({
        "active": plan.is_active(),
        "latency_ms": ms(plan.latency),
        "tail": {
            "fraction": plan.tail.map_or(0.0, |(s, _)| s.fraction),
            "latency_ms": ms(plan.tail.map(|(_, d)| d)),
        },
        "errors": {
            "fraction": plan.errors.map_or(0.0, |(s, _)| s.fraction),
            "status": plan.errors.map(|(_, s)| s.as_u16()),
        },
        "injected": {
            "latency": m.fault_delayed.load(Relaxed),
            "tail": m.fault_tail_delayed.load(Relaxed),
            "error": m.fault_errors.load(Relaxed),
        },
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Instant;

    use axum::body::{Body, to_bytes};
    use axum::http::{Request, header};
    use tower::ServiceExt as _;

    use super::*;
    use crate::service::config::Config;
    use crate::service::store::Store;
    use crate::service::{AppState, app};

    const TOKEN: &str = "faults-test-token";

    /// A ready service over a store in `dir`, with `faults_yaml` under `faults:`, the admin
    /// API mounted and the limiter off (the tests send many requests from one address).
    fn state(dir: &std::path::Path, faults_yaml: &str) -> Shared {
        let yaml = format!(
            "admin:\n  token: {TOKEN}\nrate_limit:\n  enabled: false\nseed: {{}}\nfaults:\n{faults_yaml}"
        );
        let mut cfg = Config::parse("test.yaml", &yaml).unwrap_or_else(|e| panic!("{e}"));
        cfg.data_dir = dir.to_path_buf();
        let store = Arc::new(Store::open(&dir.join("core.db")).unwrap());
        let s: Shared = Arc::new(AppState::new(cfg, store));
        s.seed().unwrap();
        s.ready.store(true, Ordering::Relaxed);
        s
    }

    async fn send(s: &Shared, method: &str, path: &str, body: &str) -> (u16, Value) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let res = app(s.clone()).oneshot(req).await.unwrap();
        let status = res.status().as_u16();
        let bytes = to_bytes(res.into_body(), 1 << 20).await.unwrap();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, v)
    }

    fn counts(s: &Shared) -> [u64; 3] {
        let m = &s.metrics;
        [
            m.fault_delayed.load(Relaxed),
            m.fault_tail_delayed.load(Relaxed),
            m.fault_errors.load(Relaxed),
        ]
    }

    #[tokio::test]
    async fn nothing_is_injected_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let s = state(dir.path(), "  {}\n");
        assert!(!active(&s.cfg.faults));
        assert_eq!(Plan::new(&s.cfg.faults).describe(), "");
        for _ in 0..50 {
            let (status, _) = send(&s, "GET", "/v1/detections", "").await;
            assert_eq!(status, 200);
        }
        assert_eq!(counts(&s), [0, 0, 0]);
        let (_, st) = send(&s, "GET", "/status", "").await;
        assert_eq!(st["faults"]["active"], false, "{st}");
        let (_, m) = send(&s, "GET", "/metrics", "").await;
        let m = m.as_str().unwrap_or_default().to_string();
        assert!(m.contains("\ninjected_faults_active 0\n"), "{m}");
        assert!(
            m.contains("injected_faults_total{fault=\"error\"} 0"),
            "{m}"
        );
    }

    /// Every data route answers the injected error with the service's JSON error body; the
    /// probes, the scrape, `/status`, the admin API, a 405 and a 404 never do.
    #[tokio::test]
    async fn errors_answer_on_the_data_routes_only() {
        let dir = tempfile::tempdir().unwrap();
        let s = state(dir.path(), "  errors: {fraction: 1, status: 503}\n");
        let data = [
            ("GET", "/v1/detections", ""),
            ("GET", "/v1/correlations?market=m1", ""),
            ("POST", "/v1/ticks/lookup", r#"{"ids":["a"]}"#),
            ("POST", "/v1/graph/build", ""),
            ("POST", "/v1/ticks", "[]"),
        ];
        for (method, path, body) in data {
            let (status, v) = send(&s, method, path, body).await;
            assert_eq!(status, 503, "{method} {path}: {v}");
            assert_eq!(v["error"]["code"], "injected-fault", "{method} {path}: {v}");
        }
        assert_eq!(counts(&s), [0, 0, 5]);
        let honest = [
            ("GET", "/healthz", "", 200),
            ("GET", "/readyz", "", 200),
            ("GET", "/metrics", "", 200),
            ("GET", "/status", "", 200),
            ("DELETE", "/admin/faults", "", 200),
            ("POST", "/v1/detections", "", 405),
            ("GET", "/v1/nowhere", "", 404),
        ];
        for (method, path, body, want) in honest {
            let (status, v) = send(&s, method, path, body).await;
            assert_eq!(status, want, "{method} {path}: {v}");
        }
        assert_eq!(counts(&s), [0, 0, 5], "only data requests are faulted");
        let (_, st) = send(&s, "GET", "/status", "").await;
        assert_eq!(st["faults"]["active"], true, "{st}");
        assert_eq!(st["faults"]["errors"]["status"], 503, "{st}");
        assert_eq!(st["faults"]["injected"]["error"], 5, "{st}");
        let (_, m) = send(&s, "GET", "/metrics", "").await;
        let m = m.as_str().unwrap_or_default().to_string();
        assert!(m.contains("\ninjected_faults_active 1\n"), "{m}");
        assert!(
            m.contains("injected_faults_total{fault=\"error\"} 5\n"),
            "{m}"
        );
        assert!(
            m.contains("http_requests_total{route=\"/v1/detections\",status=\"503\"} 1\n"),
            "the request metrics see the injected answer: {m}"
        );
    }

    #[tokio::test]
    async fn latency_and_tail_delay_every_data_request_and_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let s = state(
            dir.path(),
            "  latency: 20ms\n  tail: {fraction: 1, latency: 30ms}\n",
        );
        for _ in 0..3 {
            let started = Instant::now();
            let (status, _) = send(&s, "GET", "/v1/detections", "").await;
            assert_eq!(status, 200);
            // A lower bound: the delay can only add.
            assert!(started.elapsed() >= Duration::from_millis(50));
        }
        assert_eq!(counts(&s), [3, 3, 0]);
        for path in ["/healthz", "/readyz", "/metrics", "/status"] {
            send(&s, "GET", path, "").await;
        }
        assert_eq!(counts(&s), [3, 3, 0], "probes and scrapes are not delayed");
    }

    #[test]
    fn the_shipped_candidates_inject_faults_and_core_does_not() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let describe = |name: &str| {
            let c = Config::load(&root.join(name)).unwrap_or_else(|e| panic!("{e}"));
            Plan::new(&c.faults).describe()
        };
        assert_eq!(describe("core.yaml"), "");
        assert_eq!(describe("candidate-slow.yaml"), "faults.latency: 20ms");
        assert_eq!(
            describe("candidate-tail.yaml"),
            "faults.tail: {fraction: 0.05, latency: 200ms}"
        );
        assert_eq!(
            describe("candidate-errors.yaml"),
            "faults.errors: {fraction: 0.02, status: 500}"
        );
    }

    #[test]
    fn the_plan_follows_the_config() {
        let cfg = |yaml: &str| {
            Config::parse("t.yaml", &format!("faults:\n{yaml}"))
                .unwrap_or_else(|e| panic!("{e}"))
                .faults
        };
        let p = Plan::new(&cfg(
            "  latency: 20ms\n  tail: {fraction: 0.05, latency: 200ms}\n  errors: {fraction: 0.02, status: 500}\n",
        ));
        assert!(p.is_active());
        assert_eq!(
            p.describe(),
            "faults.latency: 20ms; faults.tail: {fraction: 0.05, latency: 200ms}; \
             faults.errors: {fraction: 0.02, status: 500}"
        );
        // A share without its latency, or a latency without a share, injects nothing.
        assert!(!Plan::new(&cfg("  tail: {fraction: 0.5}\n")).is_active());
        assert!(!Plan::new(&cfg("  tail: {latency: 1s}\n")).is_active());
        assert!(!Plan::new(&cfg("  errors: {status: 502}\n")).is_active());
        // Fractions 0 and 1 are never and always.
        let mut rng = SmallRng::seed_from_u64(1);
        let never = Plan::new(&cfg("  errors: {fraction: 0}\n  latency: 1ms\n"));
        let always = Plan::new(&cfg(
            "  errors: {fraction: 1, status: 418}\n  tail: {fraction: 1, latency: 1ms}\n",
        ));
        for _ in 0..1000 {
            assert_eq!(
                never.draw(&mut rng),
                Lot {
                    tail: false,
                    error: None
                }
            );
            assert_eq!(
                always.draw(&mut rng),
                Lot {
                    tail: true,
                    error: Some(StatusCode::IM_A_TEAPOT)
                }
            );
        }
        // Unvalidated out-of-range values disable the fault instead of panicking.
        let mut bad = FaultsConfig::default();
        bad.errors.fraction = 1.5;
        bad.errors.status = 200;
        bad.tail.fraction = f64::NAN;
        bad.tail.latency = Dur::from_millis(5);
        assert!(!Plan::new(&bad).is_active());
    }
}
