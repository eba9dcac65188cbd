//! The paced open-loop load generator and the simultaneous burst.
//!
//! Both speak HTTP/1.1 (over TLS for an `https://` target) through hyper's connection API,
//! over connections bound to the check's own source addresses, one task per connection, no
//! pool in the way. A connection the server closes is replaced (see `Conn`).
//!
//! [`run`] sends at a fixed rate (or as fast as the connections allow when no rate is given).
//! Request `i` is *intended* at `start + i / rate`; its latency is measured from that
//! intended time, not from when a connection became free, so a stalled server shows up as
//! latency instead of being hidden by the generator slowing down (coordinated omission).
//!
//! [`burst`] opens one connection per request first, then releases every request at once:
//! what a rate limiter or a load shedder sees is then as close to simultaneous as loopback
//! allows, and the measured burst duration bounds what any refill could add.
//!
//! Every load is bounded in requests (the check's budget) and in time. Probes measure; they
//! never decide pass/fail.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpSocket;
use tokio::time::Instant;

use crate::outcome::CheckError;
use crate::target::Budget;

/// Where requests go: the target's socket address, its `Host`, TLS and headers.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub host: String,
    /// Path prefix of the base URL (usually empty).
    pub prefix: String,
    /// TLS for an `https://` target: the configuration and the server name (SNI).
    pub tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    /// Headers on every request (`target.headers`), marked sensitive.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Endpoint {
    /// From a base URL such as `http://127.0.0.1:40123` or `http://[::1]:8080`: the host is
    /// resolved and the first address taken; `https://` verifies against the system's
    /// roots. Checks use [`Endpoint::for_target`], which reaches the target as the run does.
    pub async fn from_url(url: &str) -> Result<Self, CheckError> {
        let target = crate::target::Target::remote(url);
        Self::for_target(&target).await
    }

    /// How the run reaches `target`: its checked address (resolved now when the run did
    /// not), its TLS settings and its headers.
    pub async fn for_target(target: &crate::target::Target) -> Result<Self, CheckError> {
        let url = &target.url;
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| CheckError::Local(format!("target `{url}` is not a URL: {e}")))?;
        let https = match parsed.scheme() {
            "http" => false,
            "https" => true,
            other => {
                return Err(CheckError::NotApplicable(format!(
                    "the load generator speaks http and https; the target is {other}: {url}"
                )));
            }
        };
        let (host, port) = target.host_port()?;
        let addr = match target.reach.address {
            Some(a) => a,
            None => tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|e| CheckError::Target(format!("resolving {host}: {e}")))?
                .next()
                .ok_or_else(|| CheckError::Target(format!("{host} has no address")))?,
        };
        let authority = match parsed.port() {
            Some(p) => format!("{}:{p}", parsed.host_str().unwrap_or(&host)),
            None => parsed.host_str().unwrap_or(&host).to_string(),
        };
        let tls = if https {
            let tls = match &target.reach.tls {
                Some(t) => t.clone(),
                None => {
                    crate::target::tls::Tls::new(&Default::default()).map_err(CheckError::Local)?
                }
            };
            let name = crate::target::tls::Tls::server_name(&host).map_err(CheckError::Local)?;
            Some((tls.config, name))
        } else {
            None
        };
        let mut headers = Vec::new();
        for (name, value) in &target.reach.headers {
            let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                CheckError::Local(format!("`target.headers`: `{name}` is not a header name"))
            })?;
            let mut v = HeaderValue::from_str(value.expose()).map_err(|_| {
                CheckError::Local(format!(
                    "`target.headers.{name}`: the value is not a valid header value"
                ))
            })?;
            v.set_sensitive(true);
            headers.push((n, v));
        }
        Ok(Endpoint {
            addr,
            host: authority,
            prefix: parsed.path().trim_end_matches('/').to_string(),
            tls,
            headers,
        })
    }
}

impl crate::target::Ctx {
    /// Where this check's load goes: the target as the run reaches it.
    pub async fn endpoint(&self) -> Result<Endpoint, CheckError> {
        Endpoint::for_target(&self.target).await
    }
}

/// One request to repeat.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: hyper::Method,
    pub path: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Option<Bytes>,
}

impl Request {
    /// From a policy request line and an optional JSON body.
    pub fn new(
        line: &crate::units::RequestLine,
        json: Option<&serde_json::Value>,
    ) -> Result<Self, CheckError> {
        let method = hyper::Method::from_bytes(line.method.as_bytes())
            .map_err(|_| CheckError::Local(format!("invalid method {}", line.method)))?;
        let mut headers = Vec::new();
        let body = json.map(|v| Bytes::from(v.to_string()));
        if body.is_some() {
            headers.push((
                hyper::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ));
        }
        Ok(Request {
            method,
            path: line.path.clone(),
            headers,
            body,
        })
    }

    fn build(&self, ep: &Endpoint) -> Result<hyper::Request<Full<Bytes>>, CheckError> {
        let mut b = hyper::Request::builder()
            .method(self.method.clone())
            .uri(format!("{}{}", ep.prefix, self.path))
            .header(hyper::header::HOST, ep.host.as_str());
        for (k, v) in &ep.headers {
            b = b.header(k, v);
        }
        for (k, v) in &self.headers {
            b = b.header(k, v);
        }
        b.body(Full::new(self.body.clone().unwrap_or_default()))
            .map_err(|e| CheckError::Local(format!("building request {}: {e}", self.path)))
    }
}

/// Opens one HTTP/1.1 connection from `source` (the unspecified address: no bind).
async fn connect(ep: &Endpoint, source: IpAddr) -> Result<SendRequest<Full<Bytes>>, String> {
    let sock = if ep.addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| format!("socket: {e}"))?;
    // The unspecified address means "the OS chooses": no bind.
    if !source.is_unspecified() {
        sock.bind(SocketAddr::new(source, 0))
            .map_err(|e| format!("binding {source}: {e}"))?;
    }
    let stream = sock
        .connect(ep.addr)
        .await
        .map_err(|e| format!("connecting to {} from {source}: {e}", ep.addr))?;
    let _ = stream.set_nodelay(true);
    match &ep.tls {
        None => handshake(stream).await,
        Some((config, name)) => {
            let tls = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name.clone(), stream)
                .await
                .map_err(|e| match crate::target::tls::find_rustls_error(&e) {
                    Some(t) => crate::target::tls::explain(t, &ep.host),
                    None => format!("TLS handshake with {}: {e}", ep.addr),
                })?;
            handshake(tls).await
        }
    }
}

/// The HTTP/1.1 handshake over an open stream; the connection is driven by its own task.
async fn handshake<S>(stream: S) -> Result<SendRequest<Full<Bytes>>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One client connection that is replaced when the server closes it.
///
/// A server may close after any answer (`Connection: close`, HTTP/1.0, an idle timeout). A
/// request is never written to a connection known to be closed: it goes on a fresh one. A
/// request that never left (hyper hands it back unsent), or that a *reused* connection
/// dropped before any answer (the server closed it as the request went out), is sent once
/// more on a fresh connection. Only what fails after that, or on a fresh connection, is a
/// failure of the target.
pub(crate) struct Conn {
    sender: Option<SendRequest<Full<Bytes>>>,
    source: IpAddr,
    /// The connection has answered a request (a drop before an answer may be the
    /// keep-alive race, not the target failing).
    reused: bool,
}

impl Conn {
    pub(crate) async fn open(ep: &Endpoint, source: IpAddr) -> Result<Self, String> {
        Ok(Conn {
            sender: Some(connect(ep, source).await?),
            source,
            reused: false,
        })
    }

    /// Forgets the connection (it may be dead): the next request opens a fresh one.
    pub(crate) fn reset(&mut self) {
        self.sender = None;
    }

    /// Makes the sender ready: the current one when it is still open, else a fresh
    /// connection.
    async fn ready(&mut self, ep: &Endpoint) -> Result<(), String> {
        let open = match &mut self.sender {
            Some(s) if !s.is_closed() => s.ready().await.is_ok(),
            _ => false,
        };
        if !open {
            self.sender = None;
            self.reused = false;
            self.sender = Some(connect(ep, self.source).await?);
        }
        Ok(())
    }

    /// Sends `req` and reads the whole answer (headers and body kept when `keep_body`).
    pub(crate) async fn exchange(
        &mut self,
        ep: &Endpoint,
        req: &Request,
        keep_body: bool,
    ) -> Result<Answer, String> {
        let mut retried = false;
        let mut msg = req.build(ep).map_err(|e| e.to_string())?;
        let resp = loop {
            self.ready(ep).await?;
            // Whether *this* connection (perhaps just opened) has answered before.
            let reused = self.reused;
            let sender = self.sender.as_mut().expect("ready() set a sender");
            match sender.try_send_request(msg).await {
                Ok(r) => break r,
                Err(mut e) => {
                    let unsent = e.take_message();
                    let raced = reused && e.error().is_incomplete_message();
                    self.sender = None;
                    if retried || !(unsent.is_some() || raced) {
                        return Err(e.into_error().to_string());
                    }
                    retried = true;
                    msg = match unsent {
                        Some(m) => m,
                        None => req.build(ep).map_err(|e| e.to_string())?,
                    };
                }
            }
        };
        let (parts, body) = resp.into_parts();
        // The server says it closes after this answer: do not offer it another request.
        if closes_after(&parts) {
            self.sender = None;
        }
        let bytes = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                self.sender = None;
                return Err(e.to_string());
            }
        };
        self.reused = true;
        Ok(Answer {
            size: bytes.len() as u64,
            status: parts.status.as_u16(),
            headers: if keep_body {
                parts.headers
            } else {
                HeaderMap::new()
            },
            body: if keep_body { bytes } else { Bytes::new() },
        })
    }
}

/// Whether the server closes the connection after this response: `Connection: close`, or
/// HTTP/1.0 without `Connection: keep-alive`.
fn closes_after(parts: &hyper::http::response::Parts) -> bool {
    let has = |token: &str| {
        parts
            .headers
            .get_all(hyper::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    has("close") || (parts.version == hyper::Version::HTTP_10 && !has("keep-alive"))
}

/// One answered (or failed) request.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// Body bytes received (kept or not).
    pub size: u64,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A paced load.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Offered requests per second; `None` sends as fast as the connections allow
    /// (closed loop, for throughput measurements).
    pub rate: Option<f64>,
    pub duration: Duration,
    /// Concurrent connections (tasks).
    pub connections: usize,
    /// Source addresses, used round-robin by connection.
    pub sources: Vec<IpAddr>,
    /// Hard cap on requests sent.
    pub max_requests: u64,
    /// Per-request cap.
    pub request_timeout: Duration,
}

/// What a paced load measured.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Requests started.
    pub sent: u64,
    /// Requests answered with 2xx or 3xx.
    pub ok: u64,
    /// Answers by status.
    pub statuses: BTreeMap<u16, u64>,
    /// Transport failures and timeouts (no status).
    pub transport_errors: u64,
    /// Latency of every answered request in microseconds, from its intended send time.
    pub latency_us: Histogram<u64>,
    /// From the first intended send to the last answer.
    pub elapsed: Duration,
    /// Requests due before the end but not sent by the end plus [`late_grace`] (the target
    /// held every connection that long). A request only a little late is sent, not missed.
    pub missed: u64,
    /// Completions per 100 ms bin: (ok, not ok).
    pub timeline: Vec<(u64, u64)>,
    /// First transport error, for the evidence.
    pub first_error: Option<String>,
}

impl LoadReport {
    /// Answered requests per second.
    pub fn rps(&self) -> f64 {
        let answered = self.statuses.values().sum::<u64>();
        answered as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Fraction of sent requests that failed (non-2xx/3xx or transport).
    pub fn error_rate(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        (self.sent - self.ok.min(self.sent)) as f64 / self.sent as f64
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

const BIN: Duration = Duration::from_millis(100);

/// How long after the end a request that was due before it may still be sent: a second,
/// or the request timeout when shorter. Past it, a due request counts as `missed` (the
/// target held every connection for that long, which is the target's doing).
pub fn late_grace(cfg: &LoadConfig) -> Duration {
    cfg.request_timeout.min(Duration::from_secs(1))
}

/// Runs a paced load of `req` against `ep`. Stops at `duration`, at `max_requests`, or
/// when the budget runs out.
pub async fn run(
    ep: &Endpoint,
    req: &Request,
    cfg: &LoadConfig,
    budget: Option<&Budget>,
) -> Result<LoadReport, CheckError> {
    if cfg.sources.is_empty() || cfg.connections == 0 {
        return Err(CheckError::Local(
            "a load needs at least one source and connection".into(),
        ));
    }
    // Connect first, so connection set-up is not charged to the first requests.
    let mut senders = Vec::with_capacity(cfg.connections);
    for c in 0..cfg.connections {
        let src = cfg.sources[c % cfg.sources.len()];
        senders.push(Conn::open(ep, src).await.map_err(CheckError::Target)?);
    }
    let next = Arc::new(AtomicU64::new(0));
    let missed = Arc::new(AtomicU64::new(0));
    let start = Instant::now() + Duration::from_millis(5);
    let end = start + cfg.duration;
    let grace = late_grace(cfg);
    let mut tasks = tokio::task::JoinSet::new();
    for mut conn in senders {
        let ep = ep.clone();
        let req = req.clone();
        let cfg = cfg.clone();
        let next = next.clone();
        let missed = missed.clone();
        let budget = budget.cloned();
        tasks.spawn(async move {
            let mut hist = new_histogram();
            let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
            let mut timeline: Vec<(u64, u64)> = Vec::new();
            let (mut sent, mut ok, mut terr) = (0u64, 0u64, 0u64);
            let mut first_error = None;
            let mut last_done = start;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= cfg.max_requests {
                    break;
                }
                let intended = match cfg.rate {
                    Some(r) => start + Duration::from_secs_f64(i as f64 / r),
                    None => Instant::now().max(start),
                };
                if intended >= end {
                    break;
                }
                // Only sleep when ahead of schedule: the timer wheel's 1 ms granularity made
                // a sleep until "now" cost up to 1 ms per request, which capped the closed
                // loop at ~1 000 req/s per connection (0.08× wrk).
                if intended > Instant::now() {
                    tokio::time::sleep_until(intended).await;
                }
                // Due before the end but picked up late (this connection was busy, or the
                // generator itself was starved of CPU): still sent, up to the grace, with its
                // latency counted from the intended time. Lateness then shows as latency,
                // never as a request the target supposedly refused.
                if Instant::now() >= end + grace {
                    missed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if let Some(b) = &budget
                    && b.take(1).is_err()
                {
                    break;
                }
                sent += 1;
                let res =
                    tokio::time::timeout(cfg.request_timeout, conn.exchange(&ep, &req, false))
                        .await;
                let done = Instant::now();
                last_done = last_done.max(done);
                let bin = ((done.saturating_duration_since(start)).as_millis() / BIN.as_millis())
                    as usize;
                if timeline.len() <= bin {
                    timeline.resize(bin + 1, (0, 0));
                }
                match res {
                    Ok(Ok(a)) => {
                        let us = done.saturating_duration_since(intended).as_micros() as u64;
                        let _ = hist.record(us.max(1));
                        *statuses.entry(a.status).or_default() += 1;
                        if (200..400).contains(&a.status) {
                            ok += 1;
                            timeline[bin].0 += 1;
                        } else {
                            timeline[bin].1 += 1;
                        }
                    }
                    other => {
                        terr += 1;
                        timeline[bin].1 += 1;
                        if first_error.is_none() {
                            first_error = Some(match other {
                                Ok(Err(e)) => e,
                                _ => format!("no answer within {:?}", cfg.request_timeout),
                            });
                        }
                        // The connection may be dead: the next request opens a new one.
                        conn.sender = None;
                    }
                }
            }
            Ok::<_, CheckError>((
                hist,
                statuses,
                timeline,
                sent,
                ok,
                terr,
                first_error,
                last_done,
            ))
        });
    }
    let mut report = LoadReport {
        sent: 0,
        ok: 0,
        statuses: BTreeMap::new(),
        transport_errors: 0,
        latency_us: new_histogram(),
        elapsed: Duration::ZERO,
        missed: 0,
        timeline: Vec::new(),
        first_error: None,
    };
    let mut last = start;
    while let Some(joined) = tasks.join_next().await {
        let (hist, statuses, timeline, sent, ok, terr, first_error, last_done) =
            joined.map_err(|e| CheckError::Local(format!("load task failed: {e}")))??;
        let _ = report.latency_us.add(&hist);
        for (k, v) in statuses {
            *report.statuses.entry(k).or_default() += v;
        }
        if report.timeline.len() < timeline.len() {
            report.timeline.resize(timeline.len(), (0, 0));
        }
        for (i, (a, b)) in timeline.into_iter().enumerate() {
            report.timeline[i].0 += a;
            report.timeline[i].1 += b;
        }
        report.sent += sent;
        report.ok += ok;
        report.transport_errors += terr;
        if report.first_error.is_none() {
            report.first_error = first_error;
        }
        last = last.max(last_done);
    }
    report.missed = missed.load(Ordering::Relaxed);
    report.elapsed = last
        .saturating_duration_since(start)
        .max(Duration::from_millis(1));
    Ok(report)
}

/// One request of a burst.
#[derive(Debug, Clone)]
pub struct Shot {
    pub source: IpAddr,
    /// The answer, or the transport error.
    pub answer: Result<Answer, String>,
    /// When the answer arrived, from the release of the burst.
    pub done_at: Duration,
    /// From this request's send to its answer.
    pub latency: Duration,
}

impl Shot {
    pub fn status(&self) -> Option<u16> {
        self.answer.as_ref().ok().map(|a| a.status)
    }
}

/// What a burst measured.
#[derive(Debug, Clone)]
pub struct BurstReport {
    /// In order of completion.
    pub shots: Vec<Shot>,
    /// From the release to the last answer.
    pub duration: Duration,
    /// Wall-clock instant of the release.
    pub released: Instant,
}

/// Sends `total` copies of `req` at once over one pre-opened connection per entry of
/// `conns` (its source address); with fewer connections than requests, each connection
/// sends its share back to back. Connection set-up happens before the release.
pub async fn burst(
    ep: &Endpoint,
    req: &Request,
    conns: &[IpAddr],
    total: usize,
    budget: Option<&Budget>,
    timeout: Duration,
) -> Result<BurstReport, CheckError> {
    if conns.is_empty() {
        return Err(CheckError::Local("a burst needs a connection".into()));
    }
    if let Some(b) = budget {
        b.take(total as u64)?;
    }
    let mut opening = tokio::task::JoinSet::new();
    for (i, &src) in conns.iter().enumerate() {
        let ep = ep.clone();
        opening.spawn(async move { (i, Conn::open(&ep, src).await) });
    }
    let mut senders: Vec<Option<Conn>> = (0..conns.len()).map(|_| None).collect();
    while let Some(j) = opening.join_next().await {
        let (i, c) = j.map_err(|e| CheckError::Local(format!("connect task: {e}")))?;
        senders[i] = Some(c.map_err(CheckError::Target)?);
    }
    let next = Arc::new(AtomicU64::new(0));
    let (go_tx, go_rx) = tokio::sync::watch::channel(None::<Instant>);
    let mut tasks = tokio::task::JoinSet::new();
    for mut conn in senders.into_iter().flatten() {
        let src = conn.source;
        let mut go = go_rx.clone();
        let next = next.clone();
        let req = req.clone();
        let ep = ep.clone();
        tasks.spawn(async move {
            let released = loop {
                if let Some(t) = *go.borrow_and_update() {
                    break t;
                }
                if go.changed().await.is_err() {
                    return Ok(Vec::new());
                }
            };
            let mut shots = Vec::new();
            let mut alive = true;
            while (next.fetch_add(1, Ordering::Relaxed) as usize) < total {
                let sent = Instant::now();
                let answer = if alive {
                    match tokio::time::timeout(timeout, conn.exchange(&ep, &req, true)).await {
                        Ok(a) => a,
                        Err(_) => Err(format!("no answer within {timeout:?}")),
                    }
                } else {
                    Err("connection closed by the target".to_string())
                };
                if answer.is_err() {
                    // A failed connection (some limiters close on rejection): reopen once;
                    // when even that fails, the rest of this connection's share fails.
                    conn.sender = None;
                    match conn.ready(&ep).await {
                        Ok(_) => {}
                        Err(_) => alive = false,
                    }
                }
                let done = Instant::now();
                shots.push(Shot {
                    source: src,
                    answer,
                    done_at: done - released,
                    latency: done - sent,
                });
            }
            Ok::<_, CheckError>(shots)
        });
    }
    // Let every task reach its wait before the release.
    tokio::task::yield_now().await;
    let released = Instant::now();
    let _ = go_tx.send(Some(released));
    let mut shots = Vec::with_capacity(total);
    while let Some(j) = tasks.join_next().await {
        shots.extend(j.map_err(|e| CheckError::Local(format!("burst task: {e}")))??);
    }
    shots.sort_by_key(|s| s.done_at);
    let duration = shots.last().map_or(Duration::ZERO, |s| s.done_at);
    Ok(BurstReport {
        shots,
        duration,
        released,
    })
}

/// Latency summary in milliseconds: (p50, p90, p99, p999, max, mean).
pub fn summary_ms(h: &Histogram<u64>) -> BTreeMap<&'static str, f64> {
    let ms = |v: u64| v as f64 / 1000.0;
    let mut m = BTreeMap::new();
    if h.is_empty() {
        return m;
    }
    m.insert("p50", ms(h.value_at_quantile(0.5)));
    m.insert("p90", ms(h.value_at_quantile(0.9)));
    m.insert("p99", ms(h.value_at_quantile(0.99)));
    m.insert("p999", ms(h.value_at_quantile(0.999)));
    m.insert("max", ms(h.max()));
    m.insert("mean", h.mean() / 1000.0);
    m
}
