//! The live canary's reverse proxy: every request goes to the baseline or the canary by the
//! current weight, a client staying on the side it was first given, and becomes a sample for
//! the judge ([`Record`]).
//!
//! - **Stickiness**: the client's key (its address, or a header or cookie named in the run)
//!   hashes to a bucket in 0–9 999; buckets below the weight in basis points go to the canary.
//!   At one weight a client never flips; a weight that grows only moves clients forward, and
//!   a rollback (weight 0) sends everyone to the baseline.
//! - **Forwarding**: streaming bodies both ways; hop-by-hop headers dropped; the client added
//!   to `X-Forwarded-For` and `Forwarded` (RFC 7239), `X-Forwarded-Proto` set when absent, so
//!   a service trusting the proxy sees the real client.
//! - **Failover**: a canary that refuses connections is marked down at once and gets no
//!   more requests. A request the canary failed is retried on the baseline when that is safe
//!   — it has no body, and either the connection was refused (nothing was sent) or its method
//!   is safe (GET, HEAD, OPTIONS, TRACE) — so only requests in flight when it died fail (502).
//! - **Samples**: time from the request's arrival to the upstream's response head (a
//!   streaming answer's body is not held back to time it), its status, or no status when the
//!   upstream failed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

use super::traffic::{Record, Role};

/// Buckets a weight is counted in: basis points.
pub const BUCKETS: u32 = 10_000;

/// What keeps a client on its side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sticky {
    /// The connecting address (the default).
    ClientAddress,
    /// A request header's value (e.g. `X-User-Id`); requests without it use the address.
    Header(HeaderName),
    /// A cookie's value; requests without it use the address.
    Cookie(String),
}

impl std::str::FromStr for Sticky {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            None if s == "address" => Ok(Sticky::ClientAddress),
            Some(("header", h)) => HeaderName::try_from(h.trim())
                .map(Sticky::Header)
                .map_err(|_| format!("`{h}` is not a header name")),
            Some(("cookie", c)) if !c.trim().is_empty() => Ok(Sticky::Cookie(c.trim().into())),
            _ => Err(format!(
                "`{s}`: write `address`, `header:NAME` or `cookie:NAME`"
            )),
        }
    }
}

/// A key's bucket: FNV-1a (64 bits) of its bytes, modulo [`BUCKETS`]. Stable across runs,
/// processes and versions, so a client keeps its side through a restart of the proxy.
pub fn bucket(key: &[u8]) -> u32 {
    (crate::units::fnv1a(key) % BUCKETS as u64) as u32
}

/// The routing state the controller turns and the proxy reads.
#[derive(Debug)]
pub struct Routing {
    /// Share of clients sent to the canary, in basis points.
    weight: AtomicU32,
    /// Set when the canary refused a connection: nothing more goes to it.
    canary_down: AtomicBool,
    /// Requests per side, and upstream failures per side.
    pub requests: [AtomicU64; 2],
    pub failures: [AtomicU64; 2],
    /// Requests sent to the baseline because the canary was down.
    pub failed_over: AtomicU64,
    /// The current step (1-based; 0 before the first) and the last interval's score
    /// (`f64` bits; NaN until one is scored), for the proxy's own `/metrics`.
    step: AtomicU32,
    last_score: AtomicU64,
    sticky: Sticky,
    /// Add `Preflight-Canary-Side: baseline|canary` to every answer (off by default).
    tag: bool,
}

impl Routing {
    pub fn new(sticky: Sticky, tag: bool) -> Self {
        Routing {
            weight: AtomicU32::new(0),
            canary_down: AtomicBool::new(false),
            requests: Default::default(),
            failures: Default::default(),
            failed_over: AtomicU64::new(0),
            step: AtomicU32::new(0),
            last_score: AtomicU64::new(f64::NAN.to_bits()),
            sticky,
            tag,
        }
    }

    /// Sets the canary's share, in percent (0–100).
    pub fn set_weight(&self, percent: f64) {
        let bp = (percent.clamp(0.0, 100.0) * 100.0).round() as u32;
        self.weight.store(bp, Ordering::SeqCst);
    }

    /// The canary's share in percent.
    pub fn weight(&self) -> f64 {
        self.weight.load(Ordering::SeqCst) as f64 / 100.0
    }

    /// Records the step (1-based) for `/metrics`.
    pub fn set_step(&self, step: usize) {
        self.step.store(step as u32, Ordering::SeqCst);
    }

    /// Records the last interval's score for `/metrics` (`None`: not scored).
    pub fn set_score(&self, score: Option<f64>) {
        self.last_score
            .store(score.unwrap_or(f64::NAN).to_bits(), Ordering::SeqCst);
    }

    /// The proxy's own metrics in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let score = f64::from_bits(self.last_score.load(Ordering::SeqCst));
        let mut s = String::new();
        s.push_str("# HELP preflight_canary_requests_total Requests proxied, by side.\n");
        s.push_str("# TYPE preflight_canary_requests_total counter\n");
        for (i, side) in ["baseline", "canary"].iter().enumerate() {
            s.push_str(&format!(
                "preflight_canary_requests_total{{side=\"{side}\"}} {}\n",
                load(&self.requests[i])
            ));
        }
        s.push_str("# HELP preflight_canary_upstream_failures_total Requests an upstream did not answer, by side.\n");
        s.push_str("# TYPE preflight_canary_upstream_failures_total counter\n");
        for (i, side) in ["baseline", "canary"].iter().enumerate() {
            s.push_str(&format!(
                "preflight_canary_upstream_failures_total{{side=\"{side}\"}} {}\n",
                load(&self.failures[i])
            ));
        }
        s.push_str(&format!(
            "# HELP preflight_canary_failed_over_total Requests retried on the baseline after the canary failed them.\n\
             # TYPE preflight_canary_failed_over_total counter\npreflight_canary_failed_over_total {}\n\
             # HELP preflight_canary_weight_percent The canary's share of clients.\n\
             # TYPE preflight_canary_weight_percent gauge\npreflight_canary_weight_percent {}\n\
             # HELP preflight_canary_step The current step (1-based; 0 before the first).\n\
             # TYPE preflight_canary_step gauge\npreflight_canary_step {}\n\
             # HELP preflight_canary_last_score The last interval's score, 0-100 (NaN: not scored).\n\
             # TYPE preflight_canary_last_score gauge\npreflight_canary_last_score {}\n\
             # HELP preflight_canary_down Whether the canary stopped answering.\n\
             # TYPE preflight_canary_down gauge\npreflight_canary_down {}\n",
            load(&self.failed_over),
            self.weight(),
            self.step.load(Ordering::SeqCst),
            if score.is_nan() { "NaN".to_string() } else { score.to_string() },
            u8::from(self.canary_down()),
        ));
        s
    }

    /// Names the side in an answer, when asked to (`Preflight-Canary-Side`).
    fn tag(&self, h: &mut HeaderMap, role: Role) {
        if self.tag {
            h.insert(
                "preflight-canary-side",
                HeaderValue::from_static(role.as_str()),
            );
        }
    }

    /// Whether the canary stopped answering.
    pub fn canary_down(&self) -> bool {
        self.canary_down.load(Ordering::SeqCst)
    }

    /// The side for a request from `peer` with `headers`.
    pub fn side(&self, peer: IpAddr, headers: &HeaderMap) -> Role {
        if self.canary_down() {
            return Role::Baseline;
        }
        let key = match &self.sticky {
            Sticky::ClientAddress => None,
            Sticky::Header(h) => headers.get(h).map(|v| v.as_bytes().to_vec()),
            Sticky::Cookie(name) => cookie(headers, name).map(String::into_bytes),
        }
        .unwrap_or_else(|| peer.to_string().into_bytes());
        if bucket(&key) < self.weight.load(Ordering::SeqCst) {
            Role::Canary
        } else {
            Role::Baseline
        }
    }
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// An upstream: `http://host:port` (a path prefix is kept).
#[derive(Debug, Clone)]
pub struct Upstream {
    scheme: axum::http::uri::Scheme,
    authority: axum::http::uri::Authority,
    prefix: String,
}

impl Upstream {
    pub fn parse(url: &str) -> Result<Upstream, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| format!("`{url}` has no scheme: write http://HOST:PORT"))?;
        if scheme != axum::http::uri::Scheme::HTTP {
            return Err(format!(
                "`{url}`: the live canary proxies to http:// upstreams only (terminate TLS in front of the proxy, or reach the instances over http on their private address)"
            ));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("`{url}` has no host"))?;
        Ok(Upstream {
            scheme,
            authority,
            prefix: uri.path().trim_end_matches('/').to_string(),
        })
    }

    fn uri(&self, path_and_query: &str) -> Result<Uri, axum::http::Error> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(format!("{}{path_and_query}", self.prefix))
            .build()
    }
}

/// What the proxy's handlers share.
struct Shared {
    routing: Arc<Routing>,
    upstreams: [Upstream; 2],
    client: Client<HttpConnector, Body>,
    tx: UnboundedSender<Record>,
    t0: Instant,
    index: AtomicU64,
}

/// A running proxy; dropping it does not stop it (call [`Proxy::stop`]).
pub struct Proxy {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Stops accepting, lets requests in flight finish (up to `grace`), and returns.
    pub async fn stop(mut self, grace: std::time::Duration) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if tokio::time::timeout(grace, &mut self.task).await.is_err() {
            self.task.abort();
        }
    }
}

/// Binds `listen` and proxies to `[baseline, canary]` by `routing`; every request's sample
/// goes to `tx`, timed from `t0`.
pub async fn start(
    listen: SocketAddr,
    upstreams: [Upstream; 2],
    routing: Arc<Routing>,
    tx: UnboundedSender<Record>,
    t0: Instant,
) -> std::io::Result<Proxy> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(std::time::Duration::from_secs(5)));
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(30))
        .build(connector);
    let shared = Arc::new(Shared {
        routing,
        upstreams,
        client,
        tx,
        t0,
        index: AtomicU64::new(0),
    });
    let app = axum::Router::new().fallback(forward).with_state(shared);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            let _ = stopped.await;
        })
        .await;
    });
    Ok(Proxy {
        addr,
        stop: Some(stop),
        task,
    })
}

/// Serves the proxy's own `/metrics` ([`Routing::metrics_text`]) on `listen`, until `stop`.
pub async fn serve_metrics(
    listen: SocketAddr,
    routing: Arc<Routing>,
) -> std::io::Result<(SocketAddr, tokio::sync::oneshot::Sender<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let routing = routing.clone();
            async move {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    routing.metrics_text(),
                )
            }
        }),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
    });
    Ok((addr, stop))
}

/// Headers that belong to one connection, not to the request (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::try_from(n.trim()).ok())
        .collect();
    for n in HOP_BY_HOP.iter().chain(&named) {
        h.remove(n);
    }
}

/// Adds the client to `X-Forwarded-For` and `Forwarded`, and `X-Forwarded-Proto` when absent.
pub fn add_forwarded(h: &mut HeaderMap, peer: IpAddr) {
    let xff = match h.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.trim().is_empty() => format!("{prev}, {peer}"),
        _ => peer.to_string(),
    };
    let node = match peer {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("\"[{a}]\""),
    };
    let fwd = match h.get(header::FORWARDED).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.trim().is_empty() => format!("{prev}, for={node};proto=http"),
        _ => format!("for={node};proto=http"),
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        h.insert("x-forwarded-for", v);
    }
    if let Ok(v) = HeaderValue::from_str(&fwd) {
        h.insert(header::FORWARDED, v);
    }
    if !h.contains_key("x-forwarded-proto") {
        h.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    }
}

async fn forward(
    State(s): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let arrived = Instant::now();
    let intended_s = (arrived - s.t0).as_secs_f64();
    let index = s.index.fetch_add(1, Ordering::Relaxed);
    let (mut parts, body) = req.into_parts();
    let mut role = s.routing.side(peer.ip(), &parts.headers);
    strip_hop_by_hop(&mut parts.headers);
    add_forwarded(&mut parts.headers, peer.ip());
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    // Only a canary request without a body may be sent again (to the baseline): only then
    // is a copy of its head kept.
    let bodiless = axum::body::HttpBody::size_hint(&body).exact() == Some(0);
    let safe = parts.method.is_safe();
    let mut spare = (role == Role::Canary && bodiless).then(|| parts.clone());
    let mut next = Some((parts, body));
    let result = loop {
        let Some((parts, body)) = next.take() else {
            break Err((StatusCode::BAD_GATEWAY, "no request to send".to_string()));
        };
        let Ok(uri) = s.upstreams[role as usize].uri(&path) else {
            break Err((StatusCode::BAD_REQUEST, "bad request target".to_string()));
        };
        let mut out = axum::http::Request::from_parts(parts, body);
        *out.uri_mut() = uri;
        s.routing.requests[role as usize].fetch_add(1, Ordering::Relaxed);
        match s.client.request(out).await {
            Ok(r) => break Ok(r),
            Err(e) => {
                s.routing.failures[role as usize].fetch_add(1, Ordering::Relaxed);
                let refused = e.is_connect();
                send(
                    &s,
                    role,
                    index,
                    intended_s,
                    arrived,
                    None,
                    Some(e.to_string()),
                );
                if role == Role::Canary {
                    if refused {
                        s.routing.canary_down.store(true, Ordering::SeqCst);
                    }
                    // Safe to send again: nothing reached the canary (refused), or the
                    // request has no body and a method that changes nothing (a kept-alive
                    // connection the dead canary left behind fails this way).
                    if let Some(head) = spare.take().filter(|_| refused || safe) {
                        s.routing.failed_over.fetch_add(1, Ordering::Relaxed);
                        role = Role::Baseline;
                        next = Some((head, Body::empty()));
                        continue;
                    }
                }
                break Err((
                    StatusCode::BAD_GATEWAY,
                    format!("the {} did not answer: {e}", role.as_str()),
                ));
            }
        }
    };
    match result {
        Ok(r) => {
            let (mut parts, incoming) = r.into_parts();
            send(
                &s,
                role,
                index,
                intended_s,
                arrived,
                Some(parts.status.as_u16()),
                None,
            );
            strip_hop_by_hop(&mut parts.headers);
            s.routing.tag(&mut parts.headers, role);
            Response::from_parts(parts, Body::new(incoming))
        }
        Err((status, why)) => {
            let mut r = (
                status,
                [(header::CONTENT_TYPE, "application/json")],
                serde_json::json!({"error": {"code": "upstream-failed", "message": why}})
                    .to_string(),
            )
                .into_response();
            s.routing.tag(r.headers_mut(), role);
            r
        }
    }
}

fn send(
    s: &Shared,
    role: Role,
    index: u64,
    intended_s: f64,
    arrived: Instant,
    status: Option<u16>,
    error: Option<String>,
) {
    let _ = s.tx.send(Record {
        role,
        index,
        request: 0,
        intended_s,
        latency_ms: arrived.elapsed().as_secs_f64() * 1000.0,
        status,
        bytes: 0,
        error,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_stable_and_spread() {
        // FNV-1a of "a" is 0xaf63dc4c8601ec8c (the published test vector).
        assert_eq!(bucket(b"a"), (0xaf63_dc4c_8601_ec8c_u64 % 10_000) as u32);
        let mut counts = [0u32; 10];
        for i in 0..20_000u32 {
            let ip = std::net::Ipv4Addr::from(0x7f00_0000 + i);
            counts[(bucket(ip.to_string().as_bytes()) / 1000) as usize] += 1;
        }
        for c in counts {
            assert!((1_700..=2_300).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn a_client_keeps_its_side_and_a_growing_weight_only_moves_clients_forward() {
        let r = Routing::new(Sticky::ClientAddress, false);
        let h = HeaderMap::new();
        let ips: Vec<IpAddr> = (0..2_000u32)
            .map(|i| IpAddr::V4(std::net::Ipv4Addr::from(0x7f01_0000 + i)))
            .collect();
        r.set_weight(5.0);
        let at5: Vec<Role> = ips.iter().map(|ip| r.side(*ip, &h)).collect();
        assert_eq!(
            at5,
            ips.iter().map(|ip| r.side(*ip, &h)).collect::<Vec<_>>()
        );
        r.set_weight(25.0);
        for (ip, before) in ips.iter().zip(&at5) {
            if *before == Role::Canary {
                assert_eq!(r.side(*ip, &h), Role::Canary, "{ip} moved back");
            }
        }
        r.set_weight(0.0);
        assert!(ips.iter().all(|ip| r.side(*ip, &h) == Role::Baseline));
    }

    #[test]
    fn a_header_or_cookie_keys_the_client_when_present() {
        let r = Routing::new("header:x-user".parse().unwrap(), false);
        r.set_weight(50.0);
        let mut h = HeaderMap::new();
        h.insert("x-user", HeaderValue::from_static("u-17"));
        let side = r.side("127.0.0.1".parse().unwrap(), &h);
        for i in 0..50u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x7f00_0001 + i));
            assert_eq!(r.side(ip, &h), side, "the user moved with its address");
        }
        let c = Routing::new("cookie:uid".parse().unwrap(), false);
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; uid=42"));
        assert_eq!(cookie(&h, "uid").as_deref(), Some("42"));
        c.set_weight(100.0);
        assert_eq!(c.side("127.0.0.1".parse().unwrap(), &h), Role::Canary);
        assert!("nonsense".parse::<Sticky>().is_err());
    }

    #[test]
    fn forwarded_headers_name_the_client_after_earlier_proxies() {
        let mut h = HeaderMap::new();
        add_forwarded(&mut h, "127.0.0.9".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "127.0.0.9");
        assert_eq!(h["forwarded"], "for=127.0.0.9;proto=http");
        assert_eq!(h["x-forwarded-proto"], "http");
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        add_forwarded(&mut h, "::1".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "127.0.0.9, ::1");
        assert_eq!(
            h["forwarded"],
            "for=127.0.0.9;proto=http, for=\"[::1]\";proto=http"
        );
        assert_eq!(h["x-forwarded-proto"], "https");
    }

    #[test]
    fn only_plain_http_upstreams() {
        assert!(Upstream::parse("http://127.0.0.1:8080").is_ok());
        let e = Upstream::parse("https://127.0.0.1:8443").unwrap_err();
        assert!(e.contains("http:// upstreams only"), "{e}");
        let u = Upstream::parse("http://127.0.0.1:8080/app/").unwrap();
        assert_eq!(
            u.uri("/v1/x?y=1").unwrap().to_string(),
            "http://127.0.0.1:8080/app/v1/x?y=1"
        );
    }
}
