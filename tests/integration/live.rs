//! The live canary (`preflight canary --listen`) through the binary: two spawned services
//! behind its proxy, a paced client of many loopback addresses in front of it.
//!
//! Each test bounds its traffic (requests and time) and stops the proxy itself.

use std::io::{BufRead as _, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Service, client_from, config};

/// A profile of `base` whose limiter trusts the proxy (127.0.0.1) for `X-Forwarded-For`.
fn behind_proxy(dir: &Path, base: &str) -> PathBuf {
    let p = dir.join(format!("proxied-{base}"));
    std::fs::write(
        &p,
        format!(
            "extends: {}\nrate_limit:\n  trusted_proxies: [127.0.0.1/32]\n",
            config(base).display()
        ),
    )
    .unwrap();
    p
}

/// The baseline (core.yaml) and the canary (`canary`), both behind the proxy.
fn pair(dir: &Path, canary: &str) -> (Service, Service) {
    let b = Service::start(&behind_proxy(dir, "core.yaml"), &dir.join("b"));
    let c = Service::start(&behind_proxy(dir, canary), &dir.join("c"));
    (b, c)
}

/// The judge's policy for these runs: the traffic's latency, tail and errors, 20 samples a
/// side at least (a few seconds of test traffic at a small share).
fn policy(dir: &Path) -> PathBuf {
    let p = dir.join("live.yaml");
    std::fs::write(
        &p,
        "version: 1\nname: live\ncanary:\n  traffic:\n    requests: [{request: GET /v1/correlations?market=m1&window=1h}]\n\
         \x20   interval: 3s\n  metrics:\n    - {name: latency, source: latency}\n    - {name: tail, source: tail}\n\
         \x20   - {name: errors, source: errors, critical: true}\n  min_samples: 20\n",
    )
    .unwrap();
    p
}

/// The proxy, started by `preflight canary --listen`; its stderr is read on a thread.
struct Live {
    child: Child,
    url: String,
    lines: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Live {
    fn start(policy: &Path, baseline: &Service, canary: &Service, extra: &[&str]) -> Live {
        let mut child = Command::new(env!("CARGO_BIN_EXE_preflight"))
            .arg("canary")
            .arg(policy)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--baseline",
                &baseline.url,
                "--canary",
                &canary.url,
            ])
            .args(["--tag-responses", "--format", "json"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let seen = lines.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = l.strip_prefix("canary: proxy listening on ") {
                    let _ = tx.send(url.to_string());
                }
                seen.lock().unwrap().push(l);
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("the proxy did not start: {:?}", lines.lock().unwrap()));
        Live { child, url, lines }
    }

    /// Drives the paced client through the proxy until the run ends (at most `within`), then
    /// stops it: the exit code, the report, the log and what the client saw.
    async fn with_traffic(
        self,
        clients: &[IpAddr],
        rounds: usize,
        rate: f64,
        within: Duration,
    ) -> (i32, Value, String, Vec<Seen>) {
        let stop = Arc::new(AtomicBool::new(false));
        let traffic = tokio::spawn({
            let (url, stop, clients) = (self.url.clone(), stop.clone(), clients.to_vec());
            async move { drive(&url, &clients, rounds, rate, stop).await }
        });
        let (code, report, log) = tokio::task::spawn_blocking(move || self.finish(within))
            .await
            .unwrap();
        stop.store(true, Ordering::Relaxed);
        (code, report, log, traffic.await.unwrap())
    }

    fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Waits for the run to end (at most `within`): its exit code and JSON report.
    fn finish(mut self, within: Duration) -> (i32, Value, String) {
        let end = Instant::now() + within;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                panic!(
                    "the live canary did not end within {within:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut out = String::new();
        std::io::Read::read_to_string(&mut self.child.stdout.take().unwrap(), &mut out).unwrap();
        let log = self.log();
        let report = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("not a JSON report ({e}): {out}\n{log}"));
        (status.code().unwrap_or(-1), report, log)
    }
}

/// One answered (or failed) request: the client, the side that served it, its status.
#[derive(Debug, Clone)]
struct Seen {
    client: IpAddr,
    side: Option<String>,
    status: Option<u16>,
    at: Instant,
}

/// `clients` distinct loopback addresses (127.200.x.y), the same for every run.
fn clients(n: u32) -> Vec<IpAddr> {
    (0..n)
        .map(|i| IpAddr::V4(Ipv4Addr::from(0x7fc8_0000 + 256 * (i / 250) + 2 + i % 250)))
        .collect()
}

/// Sends `rounds` requests from each client through `url`, round-robin over the clients, at
/// `rate` a second (open loop, at most 64 in flight), until done or `stop` is set.
async fn drive(
    url: &str,
    clients: &[IpAddr],
    rounds: usize,
    rate: f64,
    stop: Arc<AtomicBool>,
) -> Vec<Seen> {
    let http: Vec<reqwest::Client> = clients.iter().map(|ip| client_from(*ip)).collect();
    let limit = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = tokio::task::JoinSet::new();
    let start = tokio::time::Instant::now();
    let target = format!("{url}/v1/correlations?market=m1&window=1h");
    for i in 0..clients.len() * rounds {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
        let k = i % clients.len();
        let (c, ip, target) = (http[k].clone(), clients[k], target.clone());
        let permit = limit.clone().acquire_owned().await.unwrap();
        tasks.spawn(async move {
            let r = c.get(&target).timeout(Duration::from_secs(10)).send().await;
            drop(permit);
            let at = Instant::now();
            match r {
                Ok(r) => Seen {
                    client: ip,
                    side: r
                        .headers()
                        .get("preflight-canary-side")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string),
                    status: Some(r.status().as_u16()),
                    at,
                },
                Err(_) => Seen {
                    client: ip,
                    side: None,
                    status: None,
                    at,
                },
            }
        });
    }
    let mut seen = Vec::new();
    while let Some(r) = tasks.join_next().await {
        seen.push(r.unwrap());
    }
    seen
}

fn share(seen: &[Seen]) -> f64 {
    let canary = seen
        .iter()
        .filter(|s| s.side.as_deref() == Some("canary"))
        .count();
    canary as f64 / seen.len() as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_percent_of_clients_stick_to_the_canary_and_sigterm_ends_with_a_report() {
    let _t = crate::support::timing();
    let dir = tempfile::tempdir().unwrap();
    let (b, c) = pair(dir.path(), "core.yaml");
    let live = Live::start(
        &policy(dir.path()),
        &b,
        &c,
        &[
            "--weight",
            "5%",
            "--step-intervals",
            "1000",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    );
    let clients = clients(2000);
    let seen = drive(
        &live.url,
        &clients,
        2,
        250.0,
        Arc::new(AtomicBool::new(false)),
    )
    .await;

    assert_eq!(seen.len(), 4000);
    let failed: Vec<&Seen> = seen.iter().filter(|s| s.status != Some(200)).collect();
    assert!(
        failed.is_empty(),
        "{} requests failed, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    let measured = share(&seen);
    assert!(
        (measured - 0.05).abs() <= 0.01,
        "canary share {measured:.4}, expected 5 % ± 1 point"
    );
    // Every client on one side, every time.
    let mut side_of = std::collections::HashMap::new();
    for s in &seen {
        let before = side_of.insert(s.client, s.side.clone());
        assert!(
            before.is_none() || before == Some(s.side.clone()),
            "{} flipped sides",
            s.client
        );
    }
    // The services saw the real clients (X-Forwarded-For from a trusted proxy), not the proxy.
    let tracked = b.metric("ratelimit_tracked_clients").await.unwrap_or(0.0)
        + c.metric("ratelimit_tracked_clients").await.unwrap_or(0.0);
    assert!(
        tracked >= 1900.0,
        "the limiters tracked {tracked} clients, not the 2000 behind the proxy"
    );

    // The proxy's own /metrics counts what the client saw.
    let metrics_url = live
        .log()
        .lines()
        .find_map(|l| {
            l.strip_prefix("canary: proxy metrics on ")
                .map(str::to_string)
        })
        .expect("the metrics address is announced");
    let text = reqwest::get(&metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let canary_seen = seen
        .iter()
        .filter(|s| s.side.as_deref() == Some("canary"))
        .count() as f64;
    let value = |series: &str| crate::support::metric_value(&text, series);
    assert_eq!(
        value(r#"preflight_canary_requests_total{side="canary"}"#),
        Some(canary_seen),
        "{text}"
    );
    assert_eq!(
        value(r#"preflight_canary_requests_total{side="baseline"}"#),
        Some(4000.0 - canary_seen),
        "{text}"
    );
    assert_eq!(
        value("preflight_canary_weight_percent"),
        Some(5.0),
        "{text}"
    );
    assert_eq!(value("preflight_canary_step"), Some(1.0), "{text}");
    assert_eq!(value("preflight_canary_down"), Some(0.0), "{text}");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(live.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let (code, report, log) = live.finish(Duration::from_secs(30));
    assert_eq!(code, 3, "SIGTERM: not promoted, INCONCLUSIVE\n{log}");
    assert!(
        report["verdict_reason"]
            .as_str()
            .unwrap()
            .contains("stopped (SIGTERM)"),
        "{report:#}"
    );
    let requests = &report["canary"]["requests"];
    assert_eq!(
        requests[0].as_u64().unwrap() + requests[1].as_u64().unwrap(),
        4000,
        "{report:#}"
    );
    assert!(
        report["canary"]["intervals"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["weight"] == 5.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_serving_errors_is_rolled_back_within_two_intervals_and_then_gets_nothing() {
    let _t = crate::support::timing();
    let dir = tempfile::tempdir().unwrap();
    let (b, c) = pair(dir.path(), "candidate-errors.yaml");
    let trail = dir.path().join("trail.db");
    let hooks = dir.path().join("hooks.txt");
    let hook = |what: &str| format!("echo {what} $PREFLIGHT_VERDICT >> {}", hooks.display());
    let live = Live::start(
        &policy(dir.path()),
        &b,
        &c,
        &[
            "--weight",
            "50%",
            "--step-intervals",
            "3",
            "--interval",
            "5s",
            "--linger",
            "3s",
            "--trail",
            trail.to_str().unwrap(),
            "--on-rollback",
            &hook("rollback"),
            "--on-promote",
            &hook("promote"),
        ],
    );
    let (code, report, log, seen) = live
        .with_traffic(&clients(400), 20, 300.0, Duration::from_secs(60))
        .await;
    assert_eq!(code, 1, "NO-GO expected\n{log}");
    let intervals = report["canary"]["intervals"].as_array().unwrap();
    assert!(
        intervals.len() <= 2,
        "decided after {} intervals\n{log}",
        intervals.len()
    );
    assert!(
        report["verdict_reason"]
            .as_str()
            .unwrap()
            .contains("rolled back"),
        "{report:#}"
    );
    // Every interval and decision is in the evidence trail, which verifies.
    let out = Command::new(env!("CARGO_BIN_EXE_preflight"))
        .args(["audit", "verify", "--trail", trail.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let conn = rusqlite::Connection::open(&trail).unwrap();
    let rows: Vec<(String, String, String)> = conn
        .prepare("SELECT check_id, status, evidence FROM records WHERE kind = 'step' ORDER BY seq")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let intervals = rows.iter().filter(|r| r.0.starts_with("interval-")).count();
    assert_eq!(
        intervals,
        report["canary"]["intervals"].as_array().unwrap().len()
    );
    assert!(
        rows.iter()
            .any(|r| r.0.starts_with("decision-") && r.2.contains("NO-GO: rolled back")),
        "{rows:#?}"
    );
    let verdict: String = conn
        .query_row("SELECT status FROM records WHERE kind = 'end'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(verdict, "NO-GO");
    assert_eq!(
        std::fs::read_to_string(&hooks).unwrap(),
        "rollback NO-GO\n",
        "the rollback hook ran once"
    );
    // Nothing reached the canary after the rollback, though the client went on through the linger.
    let ev = &report["results"][0]["evidence"];
    assert_eq!(
        ev["canary_requests_at_decision"], report["canary"]["requests"][1],
        "{ev:#}"
    );
    let served_by_canary = c
        .metric(r#"http_requests_total{route="/v1/correlations",status="200"}"#)
        .await
        .unwrap_or(0.0)
        + c.metric(r#"http_requests_total{route="/v1/correlations",status="500"}"#)
            .await
            .unwrap_or(0.0);
    assert_eq!(
        served_by_canary,
        report["canary"]["requests"][1].as_f64().unwrap(),
        "the canary's own count"
    );
    let last_canary = seen
        .iter()
        .filter(|s| s.side.as_deref() == Some("canary"))
        .map(|s| s.at)
        .max()
        .unwrap();
    let after = seen
        .iter()
        .filter(|s| s.at > last_canary + Duration::from_millis(500))
        .count();
    assert!(
        after >= 100,
        "only {after} requests after the last one the canary served: the linger was not exercised"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_versions_are_promoted_step_by_step_and_the_hook_runs_once() {
    let _t = crate::support::timing();
    let dir = tempfile::tempdir().unwrap();
    let (b, c) = pair(dir.path(), "core.yaml");
    let hooks = dir.path().join("hooks.txt");
    let hook = |what: &str| {
        format!(
            "echo {what} $PREFLIGHT_VERDICT $PREFLIGHT_WEIGHT >> {}",
            hooks.display()
        )
    };
    let live = Live::start(
        &policy(dir.path()),
        &b,
        &c,
        &[
            "--steps",
            "25,50,100",
            "--step-intervals",
            "1",
            "--on-rollback",
            &hook("rollback"),
            "--on-promote",
            &hook("promote"),
        ],
    );
    let (code, report, log, _) = live
        .with_traffic(&clients(400), 20, 150.0, Duration::from_secs(90))
        .await;
    assert_eq!(code, 0, "GO expected\n{log}\n{report:#}");
    let weights: Vec<f64> = report["canary"]["intervals"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["verdict"] == "GO")
        .map(|i| i["weight"].as_f64().unwrap())
        .collect();
    assert_eq!(weights, [25.0, 50.0, 100.0], "{report:#}");
    assert_eq!(std::fs::read_to_string(&hooks).unwrap(), "promote GO 100\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_killed_mid_run_is_no_go_and_only_requests_in_flight_fail() {
    let _t = crate::support::timing();
    let dir = tempfile::tempdir().unwrap();
    let (b, mut c) = pair(dir.path(), "core.yaml");
    let live = Live::start(
        &policy(dir.path()),
        &b,
        &c,
        &[
            "--weight",
            "50%",
            "--step-intervals",
            "1000",
            "--linger",
            "4s",
        ],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = tokio::spawn({
        let (url, stop) = (live.url.clone(), stop.clone());
        async move { drive(&url, &clients(400), 20, 200.0, stop).await }
    });
    // Kill it once it has served some requests.
    crate::support::eventually("the canary serves", Duration::from_secs(30), || async {
        c.metric(r#"http_requests_total{route="/v1/correlations",status="200"}"#)
            .await
            .filter(|n| *n >= 100.0)
    })
    .await;
    c.kill9();
    let killed = Instant::now();
    crate::support::eventually("the rollback", Duration::from_secs(30), || async {
        live.log().contains("NO-GO").then_some(())
    })
    .await;
    // The client goes on through the proxy for a second of its linger, then stops before
    // the proxy does (what it sends after the proxy is gone is not the proxy's doing).
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let seen = traffic.await.unwrap();
    let (code, report, log) =
        tokio::task::spawn_blocking(move || live.finish(Duration::from_secs(60)))
            .await
            .unwrap();
    assert_eq!(code, 1, "NO-GO expected\n{log}");
    assert!(
        report["verdict_reason"]
            .as_str()
            .unwrap()
            .contains("the canary stopped answering"),
        "{report:#}"
    );
    // The client saw errors only for what was in flight when the canary died (at most the
    // 64 it keeps in flight); everything after went to the baseline.
    let errors = seen.iter().filter(|s| s.status != Some(200)).count();
    assert!(
        errors <= 64,
        "{errors} requests failed after the kill\n{log}"
    );
    let later = seen
        .iter()
        .filter(|s| s.at > killed + Duration::from_millis(300))
        .count();
    assert!(
        later >= 50,
        "only {later} requests after the kill: failover was not exercised"
    );
    let late: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.at > killed + Duration::from_millis(300) && s.status != Some(200))
        .collect();
    assert!(
        late.is_empty(),
        "{} failed after the failover, e.g. {:?}\n{log}",
        late.len(),
        &late[..late.len().min(5)]
    );
}
