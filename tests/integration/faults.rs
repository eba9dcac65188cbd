//! Injected faults (issue 9): the canary's negative-control profiles, `config/candidate-*.yaml`,
//! on the real binary. Each is judged by behaviour with bounded requests: counts inside an
//! exact binomial band, counters equal to what clients saw, latencies only as lower bounds
//! (an upper bound would flake on a loaded machine). Probes and scrapes are never faulted.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

/// The central interval holding at least `conf` of Binomial(n, p): `lo` is the least k with
/// P(X ≤ k) > α and `hi` the least k with P(X ≤ k) ≥ 1 − α, α = (1 − conf)/2, so that
/// P(X < lo) ≤ α and P(X > hi) ≤ α. The pmf by its recurrence (no factorials).
fn binomial_band(n: u64, p: f64, conf: f64) -> (u64, u64) {
    let alpha = (1.0 - conf) / 2.0;
    let mut pmf = (1.0 - p).powf(n as f64);
    let mut cdf = 0.0;
    let mut lo = None;
    for k in 0..=n {
        cdf += pmf;
        if lo.is_none() && cdf > alpha {
            lo = Some(k);
        }
        if cdf >= 1.0 - alpha {
            return (lo.unwrap_or(k), k);
        }
        pmf *= (n - k) as f64 / (k + 1) as f64 * p / (1.0 - p);
    }
    (lo.unwrap_or(n), n)
}

/// Reference values: the same definition summed exactly over rationals (Python
/// `fractions.Fraction` and `math.comb`).
#[test]
fn binomial_band_matches_exact_sums() {
    assert_eq!(binomial_band(2000, 0.02, 0.999), (21, 62));
    assert_eq!(binomial_band(2000, 0.05, 0.999), (69, 133));
    assert_eq!(binomial_band(100, 0.5, 0.999), (34, 66));
}

/// The most requests sent from one source address: the profiles keep core.yaml's rate limit
/// (a burst of 100 per address), and a rate-limited request never reaches the fault layer.
const PER_ADDRESS: usize = 50;
/// Concurrent senders: well under `shedding.max_inflight` (64).
const WORKERS: usize = 8;

#[derive(Clone, Copy)]
struct Call {
    method: &'static str,
    path: &'static str,
    body: &'static str,
}

const DETECTIONS: Call = Call {
    method: "GET",
    path: "/v1/detections",
    body: "",
};

struct Answer {
    path: &'static str,
    status: u16,
    /// `error.code` of a JSON error body.
    code: Option<String>,
    elapsed: Duration,
}

/// Sends every call, `WORKERS` at a time, each address sending at most `PER_ADDRESS`.
async fn send_all(svc: &Service, calls: Vec<Call>) -> Vec<Answer> {
    let chunks: Vec<Vec<Call>> = calls.chunks(PER_ADDRESS).map(<[Call]>::to_vec).collect();
    let queue = Arc::new(Mutex::new(chunks.into_iter()));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..WORKERS {
        let queue = queue.clone();
        let base = svc.url.clone();
        workers.spawn(async move {
            let mut out = Vec::new();
            loop {
                let Some(chunk) = queue.lock().unwrap().next() else {
                    return out;
                };
                let c = client_from(fresh_ip());
                for call in chunk {
                    let url = format!("{base}{}", call.path);
                    let req = match call.method {
                        "POST" => c
                            .post(&url)
                            .header("content-type", "application/json")
                            .body(call.body),
                        _ => c.get(&url),
                    };
                    let started = Instant::now();
                    let r = req.send().await.unwrap();
                    let status = r.status().as_u16();
                    let body: Value = r.json().await.unwrap_or(Value::Null);
                    let elapsed = started.elapsed();
                    let code = body["error"]["code"].as_str().map(str::to_string);
                    out.push(Answer {
                        path: call.path,
                        status,
                        code,
                        elapsed,
                    });
                }
            }
        });
    }
    let mut all = Vec::new();
    while let Some(r) = workers.join_next().await {
        all.extend(r.unwrap());
    }
    all
}

/// The probes and the scrape, `n` times each: every answer 200.
async fn probe(svc: &Service, n: usize) {
    let c = svc.client();
    for _ in 0..n {
        for path in ["/healthz", "/readyz", "/metrics", "/status"] {
            let s = c.get(svc.url(path)).send().await.unwrap().status().as_u16();
            assert_eq!(s, 200, "{path} must never be faulted");
        }
    }
}

async fn injected(svc: &Service, fault: &str) -> u64 {
    svc.metric(&format!("injected_faults_total{{fault=\"{fault}\"}}"))
        .await
        .unwrap_or_else(|| panic!("injected_faults_total{{fault=\"{fault}\"}} not exported"))
        as u64
}

/// The service says, at start and on every read, that it injects faults.
async fn assert_announced(svc: &Service, key: &str) {
    assert_eq!(
        svc.metric("log_events_total{level=\"warn\",code=\"HB-FAULTS-ACTIVE\"}")
            .await,
        Some(1.0),
        "one HB-FAULTS-ACTIVE warning at start"
    );
    assert_eq!(svc.metric("injected_faults_active").await, Some(1.0));
    let st = svc.status().await;
    assert_eq!(st["faults"]["active"], true, "{st}");
    assert!(st["faults"].get(key).is_some(), "{st}");
}

/// `candidate-errors.yaml`: 2 % of the data requests answer `500 injected-fault`.
#[tokio::test]
async fn candidate_errors_fails_two_percent_of_data_requests_and_counts_them() {
    let _timing = timing();
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start(&config("candidate-errors.yaml"), dir.path());
    assert_announced(&svc, "errors").await;
    const N: usize = 2000;
    let answers = send_all(&svc, vec![DETECTIONS; N]).await;
    assert_eq!(answers.len(), N);
    let mut faulted = 0u64;
    for a in &answers {
        match (a.status, a.code.as_deref()) {
            (200, None) => {}
            (500, Some("injected-fault")) => faulted += 1,
            (s, c) => panic!("{} answered {s} {c:?}", a.path),
        }
    }
    let (lo, hi) = binomial_band(N as u64, 0.02, 0.999);
    assert!(
        (lo..=hi).contains(&faulted),
        "{faulted} of {N} injected errors, outside the 99.9 % band [{lo}, {hi}] around 2 %"
    );
    assert_eq!(injected(&svc, "error").await, faulted);
    assert_eq!(
        svc.metric("http_requests_total{route=\"/v1/detections\",status=\"500\"}")
            .await,
        Some(faulted as f64),
        "the request metrics see the injected answers"
    );
    // 400 probe answers: were they faulted at 2 %, all 200 would have probability 0.98^400 ≈ 3e-4.
    probe(&svc, 100).await;
    assert_eq!(
        injected(&svc, "error").await,
        faulted,
        "probes never faulted"
    );
    assert_eq!(injected(&svc, "latency").await, 0);
    assert_eq!(injected(&svc, "tail").await, 0);
}

/// `candidate-tail.yaml`: 5 % of the data requests get 200 ms more.
#[tokio::test]
async fn candidate_tail_delays_five_percent_of_data_requests() {
    let _timing = timing();
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start(&config("candidate-tail.yaml"), dir.path());
    assert_announced(&svc, "tail").await;
    const N: usize = 2000;
    let answers = send_all(&svc, vec![DETECTIONS; N]).await;
    for a in &answers {
        assert_eq!((a.status, a.code.as_deref()), (200, None), "{}", a.path);
    }
    let tail = injected(&svc, "tail").await;
    let (lo, hi) = binomial_band(N as u64, 0.05, 0.999);
    assert!(
        (lo..=hi).contains(&tail),
        "{tail} of {N} tail-delayed, outside the 99.9 % band [{lo}, {hi}] around 5 %"
    );
    // Latency can only add: at least as many requests took 200 ms as were given it, as the
    // clients saw them and as the service's own histogram did (buckets above 100 ms).
    let slow = answers
        .iter()
        .filter(|a| a.elapsed >= Duration::from_millis(200))
        .count() as u64;
    assert!(
        slow >= tail,
        "{slow} requests took ≥ 200 ms, {tail} were delayed"
    );
    let m = svc.metrics().await;
    let series = |s: &str| metric_value(&m, s).unwrap_or_else(|| panic!("{s} missing"));
    let over_100ms = series("http_request_duration_seconds_count{route=\"/v1/detections\"}")
        - series("http_request_duration_seconds_bucket{route=\"/v1/detections\",le=\"0.1\"}");
    assert!(
        over_100ms >= tail as f64,
        "{over_100ms} over 100 ms < {tail}"
    );
    assert_eq!(injected(&svc, "latency").await, 0);
    assert_eq!(injected(&svc, "error").await, 0);
    probe(&svc, 50).await;
    assert_eq!(injected(&svc, "tail").await, tail, "probes never delayed");
}

/// `candidate-slow.yaml`: every data request, on every data route, takes at least 20 ms
/// more; the probes are not delayed at all.
#[tokio::test]
async fn candidate_slow_delays_every_data_request_and_no_probe() {
    let _timing = timing();
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start(&config("candidate-slow.yaml"), dir.path());
    assert_announced(&svc, "latency_ms").await;
    let routes = [
        DETECTIONS,
        Call {
            method: "GET",
            path: "/v1/correlations?market=m1",
            body: "",
        },
        Call {
            method: "POST",
            path: "/v1/ticks/lookup",
            body: r#"{"ids":["a","b"]}"#,
        },
        Call {
            method: "POST",
            path: "/v1/graph/build",
            body: r#"{"window":"1m"}"#,
        },
    ];
    let calls: Vec<Call> = (0..240).map(|i| routes[i % routes.len()]).collect();
    let answers = send_all(&svc, calls).await;
    for a in &answers {
        // Rejected before the fault layer, a request would not be delayed: there must be none.
        assert!(
            !matches!(a.code.as_deref(), Some("rate-limited" | "overloaded")),
            "{} answered {} {:?}",
            a.path,
            a.status,
            a.code
        );
        assert!(
            a.elapsed >= Duration::from_millis(20),
            "{} took {:?} < 20 ms",
            a.path,
            a.elapsed
        );
    }
    assert_eq!(injected(&svc, "latency").await, answers.len() as u64);
    // The service's own histogram agrees: no data request under 10 ms.
    let m = svc.metrics().await;
    for r in routes {
        let fast = format!(
            "http_request_duration_seconds_bucket{{route=\"{}\",le=\"0.01\"}}",
            r.path.split('?').next().unwrap_or_default()
        );
        assert_eq!(metric_value(&m, &fast), Some(0.0), "{fast}");
    }
    probe(&svc, 50).await;
    assert_eq!(
        injected(&svc, "latency").await,
        answers.len() as u64,
        "probes never delayed"
    );
    assert_eq!(injected(&svc, "tail").await, 0);
    assert_eq!(injected(&svc, "error").await, 0);
}

/// Runs `preflight serve` on `cfg`, which must be refused: returns stderr.
fn refused(cfg: &std::path::Path, data_dir: &std::path::Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_preflight"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(cfg)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    err
}

/// A bad `faults` value stops the service before it starts, at its line with what to write.
#[test]
fn a_bad_fault_is_refused_at_its_line_with_a_fix() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = patched(
        "candidate-tail.yaml",
        dir.path(),
        &[("fraction: 0.05", "fraction: 1.5")],
    );
    let line = std::fs::read_to_string(&cfg)
        .unwrap()
        .lines()
        .position(|l| l.contains("fraction: 1.5"))
        .unwrap()
        + 1;
    let err = refused(&cfg, dir.path());
    let want = format!(
        "{}:{line}:15: faults.tail.fraction: expected a fraction from 0 to 1, e.g. 0.05",
        cfg.display()
    );
    assert!(err.contains(&want), "{want} not in:\n{err}");

    let cfg = patched(
        "candidate-slow.yaml",
        dir.path(),
        &[("latency: 20ms", "latncy: 20ms")],
    );
    let err = refused(&cfg, dir.path());
    assert!(
        err.contains("faults.latncy: unknown field `latncy`"),
        "{err}"
    );
}
