//! `preflight init`: a commented starter policy, and with a target, checks for what a
//! read-only look at it found. [`probe`] sends a few GETs (and, when asked, one small burst
//! to find a rate limit); [`render`] turns what was found into policy text — pure, so the
//! text for any finding is unit-tested.

use std::time::{Duration, Instant};

use crate::probe::prom;

/// The paths looked at, in the order their checks are written.
const PATHS: &[&str] = &["/healthz", "/readyz", "/"];

/// One GET and what it answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub path: String,
    pub status: u16,
    pub latency: Duration,
    pub content_type: Option<String>,
}

/// What `/metrics` holds, by family.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsFound {
    /// `process_resident_memory_bytes`, when exported.
    pub rss_bytes: Option<f64>,
    /// Counter families whose name ends in `_requests_total` (or `_requests`).
    pub request_counters: Vec<String>,
    /// Histogram families (`NAME_bucket` with an `le` label).
    pub histograms: Vec<String>,
    /// How many samples the page held.
    pub samples: usize,
}

/// What `--probe-limits` found the limiter behaves like (`rate_limit` with `algorithm:
/// auto`, docs/policy-reference.md).
#[derive(Debug, Clone, PartialEq)]
pub struct LimitFound {
    pub path: String,
    /// The `rate_limit` fields that state it, in order (`burst: 100`, `refill: 10/s`, or
    /// `algorithm: fixed_window`, `limit`, `window`, …).
    pub lines: Vec<(String, String)>,
    /// How it was found: the measurement's one-line summary.
    pub how: String,
}

/// Everything the look at a target found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Found {
    /// 2xx answers among the probed paths (`PATHS`).
    pub answers: Vec<Answer>,
    pub metrics: Option<MetricsFound>,
    /// `Some` when `--probe-limits` ran: `Err` inside says why no check was written (no
    /// limit found, or none that could be told).
    pub limit: Option<Result<LimitFound, String>>,
}

/// How long `--probe-limits` may take (a window is waited out up to 30 s, then told fixed
/// from sliding).
const PROBE_LIMITS_FOR: Duration = Duration::from_secs(180);

/// Looks at `url` read-only: GET `/healthz`, `/readyz`, `/` and `/metrics`, each once.
/// `probe_limits`: then the bounded bursts of `rate_limit`'s `algorithm: auto` to the path
/// given (`None` inside: the first path that answered): which algorithm and parameters the
/// limiter behaves like. Errors when nothing answers at all.
pub async fn probe(url: &str, probe_limits: Option<Option<&str>>) -> Result<Found, String> {
    let base = url.trim_end_matches('/');
    let client = crate::http_client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let mut found = Found::default();
    let mut reached = false;
    for path in PATHS.iter().chain(std::iter::once(&"/metrics")) {
        let start = Instant::now();
        let Ok(resp) = client.get(format!("{base}{path}")).send().await else {
            continue;
        };
        reached = true;
        let latency = start.elapsed();
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if !(200..300).contains(&status) {
            continue;
        }
        if *path == "/metrics" {
            let text = resp.text().await.unwrap_or_default();
            found.metrics = Some(metrics_found(&text)).filter(|m| m.samples > 0);
        } else {
            found.answers.push(Answer {
                path: path.to_string(),
                status,
                latency,
                content_type,
            });
        }
    }
    if !reached {
        return Err(format!(
            "{url} does not answer (tried GET {} and /metrics); is it running, and is this its base URL?",
            PATHS.join(", ")
        ));
    }
    if let Some(path) = probe_limits {
        let path = path
            .map(str::to_string)
            .or_else(|| found.answers.first().map(|a| a.path.clone()));
        if let Some(path) = path {
            found.limit = Some(find_limit(base, &path).await);
        }
    }
    Ok(found)
}

/// `rate_limit` with `algorithm: auto` on `path`: from loopback addresses of its own on an
/// IPv4 loopback target (a fresh one to tell fixed from sliding windows), else from the OS's
/// choice (a window is then waited out once more before it is told fixed or sliding).
async fn find_limit(base: &str, path: &str) -> Result<LimitFound, String> {
    use crate::checks::rate_limit::{Spec, auto};
    use std::net::{IpAddr, Ipv4Addr};
    let spec: Spec = serde_json::from_value(serde_json::json!({
        "request": format!("GET {path}"), "algorithm": "auto",
    }))
    .map_err(|e| format!("`{path}` is not a request path: {e}"))?;
    let loopback = reqwest::Url::parse(base).ok().is_some_and(|u| {
        let host = u.host_str().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host.parse::<Ipv4Addr>().is_ok_and(|a| a.is_loopback())
    });
    let (source, extra) = if loopback {
        let ip = |c: u8, d: u8| IpAddr::V4(Ipv4Addr::new(127, 77, c, d));
        (ip(0, 1), (1..=8).map(|d| ip(1, d)).collect())
    } else {
        (IpAddr::V4(Ipv4Addr::UNSPECIFIED), Vec::new())
    };
    let ctx = crate::target::Ctx::standalone(
        std::sync::Arc::new(crate::target::Target::remote(base)),
        source,
        extra,
        PROBE_LIMITS_FOR,
        10_000,
    );
    let (outcome, found) = auto::find(&spec, &ctx)
        .await
        .map_err(|e| format!("the probe failed: {e}"))?;
    match found {
        Some(f) => Ok(LimitFound {
            path: path.to_string(),
            lines: f
                .lines()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            how: outcome.summary,
        }),
        None => Err(outcome.summary),
    }
}

/// Which families of interest a `/metrics` page holds.
pub fn metrics_found(text: &str) -> MetricsFound {
    let samples = prom::parse(text);
    let mut found = MetricsFound {
        samples: samples.len(),
        ..MetricsFound::default()
    };
    for s in &samples {
        if s.name == "process_resident_memory_bytes" && s.labels.is_empty() {
            found.rss_bytes = Some(s.value);
        }
        let counter = s.name.ends_with("_requests_total");
        if counter && !found.request_counters.contains(&s.name) {
            found.request_counters.push(s.name.clone());
        }
        if let Some(family) = s.name.strip_suffix("_bucket")
            && !s.label("le").is_empty()
            && !found.histograms.iter().any(|h| h == family)
        {
            found.histograms.push(family.to_string());
        }
    }
    found
}

/// A latency bound with room: ten times what was seen, at least 250 ms, in whole 50 ms.
fn latency_bound(seen: Duration) -> String {
    let ms = (seen.as_millis() as u64 * 10).max(250);
    format!("{}ms", ms.div_ceil(50) * 50)
}

/// A check id from a path: `/healthz` → `healthz`, `/` → `root`.
fn id_of(path: &str) -> String {
    let id: String = path
        .trim_matches('/')
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    if id.is_empty() { "root".into() } else { id }
}

/// The policy text: a commented starter, with a target the checks for what was found, each
/// marked for review with the value it was based on. `today` dates the findings.
pub fn render(url: Option<&str>, found: &Found, today: &str) -> String {
    let mut out = String::new();
    out.push_str(
        "# yaml-language-server: $schema=policy.schema.json\n\
         # Written by `preflight init`. Editors complete and check this file with the schema:\n\
         # `preflight schema > policy.schema.json`. Every field: docs/policy-reference.md;\n\
         # validate with `preflight lint`, run with `preflight check` (this file as argument).\n",
    );
    match url {
        Some(u) => out.push_str(&format!(
            "# The checks below come from a read-only look at {u} on {today}; each `review:`\n\
             # line says what it was based on. Tighten them to what the service must guarantee.\n"
        )),
        None => out.push_str(
            "# A starting point: point `target.url` at your service, or run\n\
             # `preflight init --target URL` to have the checks written from what it answers.\n",
        ),
    }
    out.push_str("version: 1\nname: my-service\n");
    out.push_str("description: Pre-deploy gate (written by preflight init; review every check).\n");
    out.push_str(&format!(
        "target:\n  url: {}\n",
        yaml_str(url.unwrap_or("http://127.0.0.1:8080"))
    ));
    out.push_str(
        "  # admin_token: ${env:ADMIN_TOKEN}   # fault-injection checks (see docs/policy-reference.md)\n\
         gate:\n  block_on: [critical, high]\nchecks:\n",
    );
    if url.is_none() {
        out.push_str(
            "  - id: healthz\n    kind: http\n    severity: critical\n    description: The service is alive.\n    request: GET /healthz\n    retry: { within: 10s, every: 500ms }\n    expect:\n      status: 200\n      latency_below: 250ms\n",
        );
        out.push_str(EXAMPLES);
        return out;
    }
    let mut first = true;
    for a in &found.answers {
        let id = id_of(&a.path);
        let severity = if first { "critical" } else { "high" };
        first = false;
        out.push_str(&format!(
            "  # review: GET {} answered {} in {:.1} ms{}\n",
            a.path,
            a.status,
            a.latency.as_secs_f64() * 1000.0,
            a.content_type
                .as_deref()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default()
        ));
        out.push_str(&format!(
            "  - id: {id}\n    kind: http\n    severity: {severity}\n    request: GET {}\n    retry: {{ within: 10s, every: 500ms }}\n    expect:\n      status: {}\n      latency_below: {}\n",
            a.path,
            a.status,
            latency_bound(a.latency)
        ));
        if let Some(ct) = &a.content_type {
            let media = ct.split(';').next().unwrap_or(ct).trim();
            out.push_str(&format!(
                "      headers: {{ content-type: {} }}\n",
                yaml_str(&format!("^{}", regex::escape(media)))
            ));
        }
    }
    if let Some(m) = &found.metrics {
        out.push_str(&format!(
            "  # review: /metrics exports {} samples\n  - id: metrics\n    kind: http\n    severity: medium\n    request: GET /metrics\n",
            m.samples
        ));
        if let Some(rss) = m.rss_bytes {
            let limit = (rss * 4.0 / 1_048_576.0).ceil() as u64;
            out.push_str(&format!(
                "  # review: resident memory was {:.1} MiB; the limit is four times that\n  - id: memory-bounded\n    kind: metric\n    severity: high\n    expect: process_resident_memory_bytes < {}\n",
                rss / 1_048_576.0,
                limit * 1_048_576
            ));
        }
        for c in &m.request_counters {
            out.push_str(&format!(
                "  # review: the request counter is exported; a counter never goes below 0, so this only\n  # proves it is there: bound an error series of it instead\n  - id: {}-exported\n    kind: metric\n    severity: medium\n    expect: {c} >= 0\n",
                id_of(c)
            ));
        }
        for h in &m.histograms {
            out.push_str(&format!(
                "  # histogram `{h}`: a `load_slo` check can bound latency under load (see EXAMPLES)\n"
            ));
        }
    }
    match &found.limit {
        Some(Ok(l)) => {
            out.push_str(&format!(
                "  # review: {}\n  # Tolerances: docs/policy-reference.md\n  - id: rate-limit\n    kind: rate_limit\n    severity: high\n    request: GET {}\n",
                l.how, l.path
            ));
            for (k, v) in &l.lines {
                out.push_str(&format!("    {k}: {v}\n"));
            }
        }
        Some(Err(why)) => out.push_str(&format!(
            "  # review: no rate_limit check written: {why}\n  # (health endpoints are often exempt: `--probe-limits PATH` names another)\n"
        )),
        None => {}
    }
    if found.answers.is_empty() && found.metrics.is_none() && !matches!(found.limit, Some(Ok(_))) {
        out.push_str("  # nothing answered 2xx: write the checks by hand (EXAMPLES below)\n  []\n");
    }
    out.push_str(EXAMPLES);
    out
}

/// Commented examples of the exercising kinds, to uncomment and adapt.
const EXAMPLES: &str = "
# EXAMPLES — checks that exercise the service (uncomment and adapt; docs/policy-reference.md):
#  - id: latency-under-load
#    kind: load_slo
#    request: GET /healthz
#    rate: 50/s
#    duration: 20s
#    thresholds: [\"p99 < 100ms\", \"errors < 0.1%\"]
#  - id: per-ip-rate-limit
#    kind: rate_limit
#    request: GET /api/items
#    burst: 100
#    refill: 10/s
#  - id: workers-leak-free
#    kind: memory_growth
#    workload: { request: POST /api/build, count: 1000 }
#    limit: 1KiB
";

/// A YAML double-quoted string.
fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn latency_bounds_have_room_and_a_floor() {
        assert_eq!(latency_bound(ms(1)), "250ms");
        assert_eq!(latency_bound(ms(26)), "300ms");
        assert_eq!(latency_bound(ms(40)), "400ms");
    }

    #[test]
    fn ids_from_paths() {
        assert_eq!(id_of("/healthz"), "healthz");
        assert_eq!(id_of("/"), "root");
        assert_eq!(id_of("/api/v1/items"), "api-v1-items");
        assert_eq!(id_of("http_requests_total"), "http-requests-total");
    }

    #[test]
    fn metrics_families_are_found() {
        let page = "# TYPE process_resident_memory_bytes gauge\n\
                    process_resident_memory_bytes 3.2e7\n\
                    http_requests_total{route=\"/x\",status=\"200\"} 5\n\
                    http_requests_total{route=\"/y\",status=\"200\"} 1\n\
                    req_seconds_bucket{le=\"0.1\"} 3\nreq_seconds_bucket{le=\"+Inf\"} 4\n\
                    req_seconds_count 4\n";
        let m = metrics_found(page);
        assert_eq!(m.rss_bytes, Some(3.2e7));
        assert_eq!(m.request_counters, vec!["http_requests_total"]);
        assert_eq!(m.histograms, vec!["req_seconds"]);
        assert_eq!(m.samples, 6);
    }

    #[test]
    fn what_was_found_becomes_checks_marked_for_review() {
        let found = Found {
            answers: vec![Answer {
                path: "/healthz".into(),
                status: 200,
                latency: ms(2),
                content_type: Some("application/json; charset=utf-8".into()),
            }],
            metrics: Some(MetricsFound {
                rss_bytes: Some(30.0 * 1_048_576.0),
                request_counters: vec!["http_requests_total".into()],
                histograms: vec![],
                samples: 12,
            }),
            limit: Some(Ok(LimitFound {
                path: "/healthz".into(),
                lines: vec![
                    ("burst".into(), "100".into()),
                    ("refill".into(), "10/s".into()),
                ],
                how: "behaves like a token bucket of 100 refilled at about 10/s".into(),
            })),
        };
        let text = render(Some("http://127.0.0.1:1"), &found, "2026-12-02");
        assert!(text.contains("  url: \"http://127.0.0.1:1\"\n"), "{text}");
        assert!(text.contains("    request: GET /healthz\n"), "{text}");
        assert!(text.contains("      latency_below: 250ms\n"), "{text}");
        assert!(
            text.contains("content-type: \"^application/json\""),
            "{text}"
        );
        assert!(
            text.contains("expect: process_resident_memory_bytes < 125829120"),
            "{text}"
        );
        assert!(text.contains("expect: http_requests_total >= 0"), "{text}");
        assert!(
            text.contains("# review: behaves like a token bucket of 100"),
            "{text}"
        );
        assert!(
            text.contains("    burst: 100\n    refill: 10/s\n"),
            "{text}"
        );
        assert_eq!(text.matches("# review:").count(), 5, "{text}");
    }
}
