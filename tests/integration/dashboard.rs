//! The Grafana dashboard is proven, not grepped (issue 11): a real Prometheus scrapes the
//! spawned service after traffic and faults have made every series the dashboard charts,
//! and the `dashboard` check of the default policy evaluates every panel's PromQL through
//! Prometheus's HTTP API — each must parse and return at least one series. Broken copies of
//! the dashboard must FAIL naming the panel, and a Prometheus that cannot be reached must be
//! an ERROR, not a FAIL and not a hang.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::prom_server::{self, PromServer};
use crate::support::{Service, by_id, config, post_json};

/// Scraping must start within this (Prometheus hands new targets to its scrapers every 5 s;
/// generous for a loaded 2-core machine).
const SCRAPED_DEADLINE: Duration = Duration::from_secs(60);

/// The environment variable the default policy reads the Prometheus URL from.
const PROM_ENV: &str = "PREFLIGHT_PROMETHEUS_URL";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every Prometheus query of a dashboard, as (panel title, expr), counted here without the
/// crate's reader: panels, and the panels of rows.
fn panel_queries(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push((
                    p["title"].as_str().unwrap().to_string(),
                    t["expr"].as_str().unwrap().to_string(),
                ));
            }
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Requests, a rate-limit burst, a query timeout, the feed breaker tripped, a snapshot and a
/// batch of ticks: every counter the dashboard charts exists (some only once their event
/// happened: `breaker_transitions_total`, warnings in `log_events_total`).
async fn drive_traffic_and_faults(svc: &Service) {
    let c = svc.client();
    drive_requests(svc, &c).await;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let ticks: Vec<Value> = (0..10)
        .map(|i| json!({"venue": "v1", "market": "m1", "selection": "s1", "price": 2.0 + f64::from(i) / 10.0, "ts_ms": now_ms + i as u64}))
        .collect();
    let (s, v) = post_json(&c, &svc.url("/v1/ticks"), &json!(ticks)).await;
    assert_eq!(s, 200, "{v}");

    // Past the per-IP burst from one address: 429s, counted as rejections.
    let burst = svc.client();
    let mut rejected = false;
    for _ in 0..1_000 {
        let r = burst.get(svc.url("/status")).send().await.unwrap();
        if r.status() == 429 {
            rejected = true;
            break;
        }
    }
    assert!(rejected, "no 429 in 1000 requests from one address");

    // A slow query: 503 HB-Q-TIMEOUT, a warning, a counted timeout.
    let (s, v) = svc
        .admin(
            "POST",
            "/admin/faults",
            json!({"slow_query": true, "feed": {"mode": "fail"}}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(correlations(svc, &c).await, 503);
    // Feed failures until the breaker opens: transitions, failed and rejected calls.
    let mut opened = false;
    for _ in 0..20 {
        let (s, v) = svc.admin("POST", "/admin/feed/poll", json!({})).await;
        assert_eq!(s, 200, "{v}");
        if v["state"] == "open" {
            opened = true;
            break;
        }
    }
    assert!(opened, "the feed breaker did not open");
    let (s, v) = svc.admin("DELETE", "/admin/faults", Value::Null).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = svc.admin("POST", "/admin/snapshot", json!({})).await;
    assert_eq!(s, 200, "{v}");
    for series in [
        "breaker_transitions_total{dependency=\"feed\",from=\"closed\",to=\"open\"}",
        "query_timeouts_total",
        "ratelimit_rejections_total",
    ] {
        assert!(
            svc.metric(series).await.is_some_and(|v| v >= 1.0),
            "{series} did not count"
        );
    }
}

/// The status of one analytics query.
async fn correlations(svc: &Service, c: &reqwest::Client) -> u16 {
    let url = svc.url("/v1/correlations?market=m1&window=1h");
    c.get(url).send().await.unwrap().status().as_u16()
}

/// Graph builds and analytics queries: the traffic whose rates and latency quantiles the
/// dashboard draws.
async fn drive_requests(svc: &Service, c: &reqwest::Client) {
    for _ in 0..3 {
        let (s, v) = post_json(c, &svc.url("/v1/graph/build"), &json!({"window": "5m"})).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(correlations(svc, c).await, 200);
    }
}

/// A spawned service, driven, scraped by a real Prometheus: every series exists from the
/// first scrape, and more requests after it make the rates non-zero, so every panel has a
/// value to draw (a latency quantile over no requests is NaN). `None` where Prometheus is
/// not installed (and not required).
async fn scraped_service(dir: &Path) -> Option<(Service, PromServer)> {
    let svc = Service::start(&config("core.yaml"), &dir.join("svc"));
    drive_traffic_and_faults(&svc).await;
    let prom = prom_server::start(&[("core", &svc.url)]).await?;
    prom.wait_for(
        "core",
        1,
        r#"breaker_transitions_total{job="core"}"#,
        SCRAPED_DEADLINE,
    )
    .await;
    drive_requests(&svc, &svc.client()).await;
    // A scrape after those requests: the builds' rate is above zero.
    prom.wait_for(
        "core",
        1,
        r#"rate(graph_build_seconds_count{job="core"}[1m]) > 0"#,
        SCRAPED_DEADLINE,
    )
    .await;
    Some((svc, prom))
}

/// `preflight check` through the built binary, from `cwd`, with the Prometheus URL in the
/// environment (or not): the exit code and the JSON report.
fn check(cwd: &Path, args: &[&str], prom_url: Option<&str>) -> (i32, Value) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_preflight"));
    cmd.current_dir(cwd)
        .env_remove("PREFLIGHT_ADMIN_TOKEN")
        .env_remove(PROM_ENV)
        .arg("check")
        .args(args)
        .args(["--format", "json", "--no-progress"]);
    if let Some(url) = prom_url {
        cmd.env(PROM_ENV, url);
    }
    let out = cmd.output().unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not a JSON report ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

#[tokio::test]
async fn every_panel_returns_series_through_a_real_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let Some((svc, prom)) = scraped_service(dir.path()).await else {
        return;
    };

    // The default policy's own check, on the committed dashboard.
    let (code, report) = check(
        &root(),
        &[
            "policies/production-hardening.yaml",
            "--only",
            "dashboard",
            "--target",
            &svc.url,
        ],
        Some(&prom.url),
    );
    let r = by_id(&report, "dashboard");
    assert_eq!(
        r["status"],
        "PASS",
        "{r:#}\nPrometheus targets: {}",
        prom.targets().await
    );
    assert_eq!(code, 0, "{report:#}");
    let evidence = &r["evidence"];
    assert_eq!(evidence["evaluated"], true, "{r:#}");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("docs/dashboard.json")).unwrap())
            .unwrap();
    let expected = panel_queries(&dashboard);
    let queries = evidence["queries"].as_array().unwrap();
    assert_eq!(queries.len(), expected.len(), "{evidence:#}");
    for ((panel, expr), q) in expected.iter().zip(queries) {
        assert_eq!(q["panel"], *panel);
        assert_eq!(q["expr"], *expr);
        assert!(
            q["series"].as_u64().is_some_and(|n| n >= 1),
            "panel {panel:?}, `{expr}`: {q:#}"
        );
        // More than the check asks: each query has a series with a value to draw.
        assert!(
            q["nan_series"].as_u64() < q["series"].as_u64(),
            "panel {panel:?}, `{expr}`: only NaN: {q:#}"
        );
    }
    for title in dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["title"])
    {
        assert!(
            queries.iter().any(|q| q["panel"] == *title),
            "panel {title} unchecked"
        );
    }
    assert!(
        r["summary"]
            .as_str()
            .unwrap()
            .contains("each valid PromQL returning ≥1 series in Prometheus"),
        "{r:#}"
    );

    // Broken copies, each checked through Prometheus and statically.
    let work = tempfile::tempdir().unwrap();
    std::fs::write(
        work.path().join("policy.yaml"),
        "version: 1\nname: dashboard-proof\ngate: {block_on: [high]}\nchecks:\n\
         \x20 - id: proven\n    kind: dashboard\n    severity: high\n    file: dashboard.json\n    prometheus: ${env:PREFLIGHT_PROMETHEUS_URL}\n\
         \x20 - id: static\n    kind: dashboard\n    severity: high\n    file: dashboard.json\n    metrics: [query_timeouts_total]\n",
    )
    .unwrap();
    let original = std::fs::read_to_string(root().join("docs/dashboard.json")).unwrap();
    let broken = |from: &str, to: &str| {
        assert!(original.contains(from), "{from}");
        std::fs::write(
            work.path().join("dashboard.json"),
            original.replacen(from, to, 1),
        )
        .unwrap();
    };
    let run = |prom_url: &str| {
        check(
            work.path(),
            &["policy.yaml", "--target", &svc.url],
            Some(prom_url),
        )
    };
    let summary =
        |report: &Value, id: &str| by_id(report, id)["summary"].as_str().unwrap().to_string();

    // A misspelt metric parses (and greps) fine: only Prometheus shows the panel empty.
    broken("query_timeouts_total{", "query_timeout_total{");
    let (code, report) = run(&prom.url);
    assert_eq!(code, 1, "{report:#}");
    let proven = by_id(&report, "proven");
    assert_eq!(proven["status"], "FAIL", "{proven:#}");
    let s = summary(&report, "proven");
    assert!(
        s.contains("panel \"Query timeouts\" query A: [dashboard/no-series]")
            && s.contains("`rate(query_timeout_total{job=\"core\"}[5m])` returned 0 series"),
        "{s}"
    );
    // Statically the metric it should chart is missing from every selector.
    let st = by_id(&report, "static");
    assert_eq!(st["status"], "FAIL", "{st:#}");
    assert!(
        summary(&report, "static").contains(
            "[dashboard/metric-not-charted] no panel's query selects `query_timeouts_total`"
        ),
        "{st:#}"
    );

    // A syntax error: FAIL naming the panel, with or without Prometheus.
    broken(
        "rate(ticks_ingested_total{job=\\\"$job\\\"}[1m])",
        "rate(ticks_ingested_total{job=\\\"$job\\\"}[1m]",
    );
    let (_, report) = run(&prom.url);
    for (id, why) in [
        ("proven", "[dashboard/bad-promql] Prometheus refused"),
        (
            "static",
            "[dashboard/bad-promql] `rate(ticks_ingested_total{job=\"core\"}[1m]` does not parse as PromQL",
        ),
    ] {
        let r = by_id(&report, id);
        assert_eq!(r["status"], "FAIL", "{r:#}");
        let s = summary(&report, id);
        assert!(
            s.contains("panel \"Ticks ingested\" query A: ")
                && s.contains(why)
                && s.contains("(dashboard.json:"),
            "{id}: {s}"
        );
    }

    // Prometheus at a closed loopback port: ERROR saying so, long before the deadline; the
    // static proof still passes beside it.
    std::fs::write(work.path().join("dashboard.json"), &original).unwrap();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://127.0.0.1:{}", l.local_addr().unwrap().port())
    };
    let (code, report) = run(&closed);
    assert_eq!(code, 1, "{report:#}");
    let r = by_id(&report, "proven");
    assert_eq!(r["status"], "ERROR", "{r:#}");
    assert!(
        summary(&report, "proven").contains("cannot connect to Prometheus"),
        "{r:#}"
    );
    let r = by_id(&report, "static");
    assert_eq!(r["status"], "PASS", "{r:#}");
    assert!(
        summary(&report, "static").contains("not evaluated: no Prometheus configured"),
        "{r:#}"
    );
}
