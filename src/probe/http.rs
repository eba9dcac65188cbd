//! HTTP client for checks: bound to the check's own source address (or the OS's choice),
//! connecting to the address the run checks, sending the target's headers, charged against
//! its request budget, and never waiting past its deadline.

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::HeaderMap;
use tokio::time::Instant;

use crate::outcome::{Capability, CheckError};
use crate::secret::Secret;
use crate::target::{Budget, Ctx, Target};
use crate::units::RequestLine;

/// A received response with its timing.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// From sending the request to the end of the body.
    pub elapsed: Duration,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Result<serde_json::Value, CheckError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            CheckError::Target(format!(
                "expected a JSON body (status {}): {e}; body starts {:?}",
                self.status,
                self.text().chars().take(120).collect::<String>()
            ))
        })
    }
}

/// An HTTP client for one check and one source address.
#[derive(Debug, Clone)]
pub struct Http {
    client: reqwest::Client,
    base: String,
    budget: Budget,
    deadline: Instant,
    admin: Option<Secret>,
    source: IpAddr,
}

/// Per-request cap, so one stuck request cannot eat a long check's whole deadline.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl Http {
    /// A client for `target` from `source` (the unspecified address: the OS chooses).
    pub fn new(
        target: &Target,
        source: IpAddr,
        budget: Budget,
        deadline: Instant,
    ) -> Result<Self, CheckError> {
        Self::with_pool(target, source, budget, deadline, 64)
    }

    fn with_pool(
        target: &Target,
        source: IpAddr,
        budget: Budget,
        deadline: Instant,
        idle_per_host: usize,
    ) -> Result<Self, CheckError> {
        let client = client_builder(target, source)?
            .pool_max_idle_per_host(idle_per_host)
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| CheckError::Local(format!("building the HTTP client: {e}")))?;
        Ok(Http {
            client,
            base: target.url.trim_end_matches('/').to_string(),
            budget,
            deadline,
            admin: target.admin_token.clone(),
            source,
        })
    }

    pub fn source(&self) -> IpAddr {
        self.source
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends `req` (with an optional JSON body and extra headers).
    pub async fn send(
        &self,
        req: &RequestLine,
        body: Option<&serde_json::Value>,
        headers: &[(String, String)],
    ) -> Result<Response, CheckError> {
        self.execute(&req.method, &req.path, body, headers, false)
            .await
    }

    pub async fn get(&self, path: &str) -> Result<Response, CheckError> {
        self.execute("GET", path, None, &[], false).await
    }

    pub async fn post(
        &self,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Response, CheckError> {
        self.execute("POST", path, body, &[], false).await
    }

    /// A call to the admin API with the bearer token; SKIP-worthy error when none is known.
    pub async fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Response, CheckError> {
        self.execute(method, path, body, &[], true).await
    }

    async fn execute(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        headers: &[(String, String)],
        admin: bool,
    ) -> Result<Response, CheckError> {
        self.budget.take(1)?;
        let now = Instant::now();
        if now >= self.deadline {
            return Err(CheckError::Deadline(Duration::ZERO));
        }
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| CheckError::Local(format!("invalid method {method}")))?;
        let url = format!("{}{}", self.base, path);
        let left = self.deadline - now;
        let timeout = REQUEST_TIMEOUT.min(left);
        let mut rb = self.client.request(method, &url).timeout(timeout);
        for (k, v) in headers {
            rb = rb.header(k, v);
        }
        if let Some(b) = body {
            rb = rb.json(b);
        }
        if admin {
            let token = self.admin.as_ref().ok_or_else(|| CheckError::Missing {
                capability: Capability::Admin,
                hint: "set `target.admin_token` or let preflight spawn the service".into(),
            })?;
            rb = rb.bearer_auth(token.expose());
        }
        let start = std::time::Instant::now();
        let by_deadline = left <= REQUEST_TIMEOUT;
        let resp = rb
            .send()
            .await
            .map_err(|e| transport_error(&url, e, timeout, by_deadline))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .bytes()
            .await
            .map_err(|e| transport_error(&url, e, timeout, by_deadline))?;
        Ok(Response {
            status,
            headers,
            body,
            elapsed: start.elapsed(),
        })
    }
}

/// Clients over every address a check has, for requests that must get through a per-address
/// rate limiter rather than measure it: a 429 moves to the next address, and once every
/// address has been refused in a row, waits the `Retry-After` (at most 5 s) before going on.
/// Bounded by the check's deadline and budget like every request.
#[derive(Debug, Clone)]
pub struct Rotating {
    clients: Vec<Http>,
    at: usize,
}

/// Longest wait for a `Retry-After` before trying again.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);

impl Rotating {
    /// The check's own address first, then its neighbours.
    pub fn new(ctx: &Ctx) -> Result<Self, CheckError> {
        let mut clients = vec![ctx.http()?];
        for a in ctx.neighbour_sources() {
            clients.push(ctx.http_from(a)?);
        }
        Ok(Rotating { clients, at: 0 })
    }

    pub async fn get(&mut self, path: &str) -> Result<Response, CheckError> {
        self.call("GET", path, None).await
    }

    pub async fn post(
        &mut self,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Response, CheckError> {
        self.call("POST", path, body).await
    }

    async fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Response, CheckError> {
        let mut refused = 0;
        loop {
            let http = &self.clients[self.at % self.clients.len()];
            let r = http.execute(method, path, body, &[], false).await?;
            if r.status != 429 {
                return Ok(r);
            }
            self.at += 1;
            refused += 1;
            if refused % self.clients.len() == 0 {
                let wait = r
                    .header("retry-after")
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .map_or(Duration::from_millis(100), Duration::from_secs_f64)
                    .clamp(Duration::from_millis(10), MAX_RETRY_AFTER);
                let left = http.deadline.saturating_duration_since(Instant::now());
                tokio::time::sleep(wait.min(left)).await;
            }
        }
    }
}

/// A client builder that reaches `target` as every client of the run does: from `source`
/// (no bind for the unspecified address), to the address the run checks (a host name keeps
/// its `Host` header and TLS server name), with the target's headers.
pub fn client_builder(
    target: &Target,
    source: IpAddr,
) -> Result<reqwest::ClientBuilder, CheckError> {
    let mut b = crate::http_client::builder();
    if !source.is_unspecified() {
        b = b.local_address(source);
    }
    if let Some(addr) = target.reach.address {
        let (host, _) = target.host_port()?;
        if host.parse::<IpAddr>().is_err() {
            b = b.resolve(&host, addr);
        }
    }
    b = b.default_headers(default_headers(target)?);
    if let Some(tls) = &target.reach.tls {
        b = b.use_preconfigured_tls((*tls.config).clone());
    } else if target.url.starts_with("https://") {
        // No `target.tls`: the system's roots, as the load generator does.
        let tls = crate::target::tls::Tls::new(&Default::default()).map_err(CheckError::Local)?;
        b = b.use_preconfigured_tls((*tls.config).clone());
    }
    Ok(b)
}

/// The target's headers (`target.headers`), marked sensitive so that no debug output of
/// the client shows them.
fn default_headers(target: &Target) -> Result<HeaderMap, CheckError> {
    let mut map = HeaderMap::new();
    for (name, value) in &target.reach.headers {
        let n = reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            CheckError::Local(format!("`target.headers`: `{name}` is not a header name"))
        })?;
        let mut v = reqwest::header::HeaderValue::from_str(value.expose()).map_err(|_| {
            CheckError::Local(format!(
                "`target.headers.{name}`: the value is not a valid header value (control characters?)"
            ))
        })?;
        v.set_sensitive(true);
        map.append(n, v);
    }
    Ok(map)
}

fn transport_error(
    url: &str,
    e: reqwest::Error,
    timeout: Duration,
    by_deadline: bool,
) -> CheckError {
    if e.is_timeout() {
        let why = if by_deadline {
            "the check's deadline"
        } else {
            "the per-request limit"
        };
        CheckError::Target(format!(
            "{url}: no answer within {:.1} s ({why})",
            timeout.as_secs_f64()
        ))
    } else if let Some(t) = crate::target::tls::find_rustls_error(&e) {
        let host = reqwest::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        CheckError::Target(format!("{url}: {}", crate::target::tls::explain(t, &host)))
    } else if e.is_connect() {
        CheckError::Target(format!("{url}: cannot connect ({})", root_cause(&e)))
    } else {
        CheckError::Target(format!("{url}: {}", root_cause(&e)))
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

impl Ctx {
    /// An HTTP client from this check's own source address.
    pub fn http(&self) -> Result<Http, CheckError> {
        self.http_from(self.source)
    }

    /// An HTTP client from another address of this check (see [`Ctx::extra_sources`]).
    pub fn http_from(&self, source: IpAddr) -> Result<Http, CheckError> {
        Http::new(&self.target, source, self.budget.clone(), self.deadline)
    }

    /// Like [`Ctx::http_from`], but every request on a connection of its own, closed after
    /// the answer: nothing of one request's connection outlives it on the target.
    pub fn http_from_unpooled(&self, source: IpAddr) -> Result<Http, CheckError> {
        Http::with_pool(&self.target, source, self.budget.clone(), self.deadline, 0)
    }
}
