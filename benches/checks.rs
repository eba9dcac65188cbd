//! Benchmarks of the exercising checks, printed as ratios measured side by side in one run:
//!
//! 1. the load generator's throughput vs `wrk` on the same route (goal ≥ 0.8; skipped when
//!    `wrk` is not installed);
//! 2. the default policy's wall time vs the sum of its inherent waits (goal ≤ 1.3×, < 60 s);
//! 3. `memory_growth` detects a 1 KiB-per-request leak within 3 000 requests, and gives no
//!    false FAIL in 10 runs on the good profile.
//!
//! Run with `cargo bench --bench checks` (release build, loopback only, bounded loads).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use preflight::checks::CheckSpec;
use preflight::engine::context::{Budget, Ctx, Status};
use preflight::engine::spawn::{SpawnRequest, Spawned};
use preflight::engine::target::{ProcessControl, Target};
use preflight::policy::Secret;
use preflight::probe::load::{self, Endpoint, LoadConfig, Request};
use preflight::units::RequestLine;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn exe() -> PathBuf {
    // The bench binary lives in target/<profile>/deps; preflight is beside deps.
    let me = std::env::current_exe().expect("current exe");
    let dir = me.parent().and_then(Path::parent).expect("target dir");
    dir.join("preflight")
}

async fn spawn(config: &str) -> Target {
    let s = Spawned::start(&SpawnRequest {
        exe: exe(),
        config: root().join(config),
        start_timeout: Duration::from_secs(30),
    })
    .await
    .expect("spawning the core service (build it first: cargo build --release)");
    Target {
        url: s.url(),
        admin_token: Some(Secret(s.admin_token().to_string())),
        log_dir: Some(s.log_dir()),
        sqlite: Some(s.sqlite()),
        process: Some(ProcessControl::Spawned(Box::new(s))),
    }
}

fn ctx(target: Arc<Target>, second_octet: u8) -> Ctx {
    Ctx {
        target,
        source: IpAddr::V4(Ipv4Addr::new(127, second_octet, 0, 1)),
        extra_sources: (1..=64)
            .map(|d| IpAddr::V4(Ipv4Addr::new(127, second_octet, 1, d)))
            .collect(),
        deadline: tokio::time::Instant::now() + Duration::from_secs(300),
        budget: Budget::new(10_000_000),
        policy_dir: root(),
        progress: Arc::new(|_| {}),
    }
}

async fn bench_load_vs_wrk() {
    let target = spawn("config/core.yaml").await;
    let ep = Endpoint::from_url(&target.url).await.unwrap();
    let req = Request::new(&RequestLine::get("/healthz"), None).unwrap();
    let cfg = LoadConfig {
        rate: None,
        duration: Duration::from_secs(5),
        connections: 8,
        sources: vec![IpAddr::V4(Ipv4Addr::new(127, 90, 0, 1))],
        max_requests: 5_000_000,
        request_timeout: Duration::from_secs(5),
    };
    let r = load::run(&ep, &req, &cfg, None).await.unwrap();
    let ours = r.rps();
    println!(
        "load generator: {ours:.0} req/s on GET /healthz (8 connections, 5 s, {} errors)",
        r.sent - r.ok
    );
    let wrk = std::process::Command::new("wrk")
        .args(["-t2", "-c8", "-d5s", &format!("{}/healthz", target.url)])
        .output();
    match wrk {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let theirs: f64 = text
                .lines()
                .find_map(|l| l.strip_prefix("Requests/sec:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(f64::NAN);
            println!(
                "wrk:            {theirs:.0} req/s (2 threads, 8 connections, 5 s)\nratio load/wrk: {:.2} (goal ≥ 0.8)",
                ours / theirs
            );
        }
        _ => println!("wrk: not installed — ratio skipped (apt-get install wrk)"),
    }
}

fn bench_default_policy() {
    let start = Instant::now();
    let out = std::process::Command::new(exe())
        .current_dir(root())
        .args([
            "check",
            "policies/production-hardening.yaml",
            "--config",
            "config/core.yaml",
            "--format",
            "json",
        ])
        .output()
        .expect("running preflight check");
    let wall = start.elapsed().as_secs_f64();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let ms = |id: &str| {
        report["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .and_then(|r| r["duration_ms"].as_f64())
            .unwrap_or(0.0)
            / 1e3
    };
    // Inherent: the limiter's refill wait (2 s), the breaker's reset timeout (2 s), the
    // shedding delay (0.3 s) and the memory workload (warm-up + measured builds).
    let inherent = 2.0 + 2.0 + 0.3 + ms("detectors-leak-free");
    println!(
        "default policy: {wall:.1} s wall ({}), inherent waits {inherent:.1} s → ratio {:.2} (goal ≤ 1.3, < 60 s)",
        report["verdict"],
        wall / inherent
    );
}

fn memory_spec(iterations: u32) -> CheckSpec {
    serde_json::from_value(serde_json::json!({
        "kind": "memory_growth", "request": "POST /v1/graph/build", "body": {"window": "5m"},
        "warmup": 100, "iterations": iterations, "sample_every": iterations / 50,
        "max_growth_per_iteration": "512B",
    }))
    .unwrap()
}

/// A server in this process that leaks `leak` bytes per request; RSS sampled through a pid
/// file holding this process's own pid (the `Remote` process capability).
async fn leaky_target(leak: usize, pid_file: &Path) -> Target {
    let app = axum::Router::new().route(
        "/v1/graph/build",
        axum::routing::post(move || async move {
            if leak > 0 {
                let v: Vec<u8> = vec![1u8; leak];
                std::mem::forget(v);
            }
            "{}"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    std::fs::write(pid_file, std::process::id().to_string()).unwrap();
    let mut t = Target::remote(&format!("http://{addr}"));
    t.process = Some(ProcessControl::Remote {
        pid_file: pid_file.to_path_buf(),
        restart: vec![],
    });
    t
}

async fn bench_memory_growth() {
    let tmp = tempfile::tempdir().unwrap();
    for (leak, name) in [(1024usize, "1 KiB leak"), (0, "no leak")] {
        let t = Arc::new(leaky_target(leak, &tmp.path().join(format!("{leak}.pid"))).await);
        let o = memory_spec(3000).run(&ctx(t, 91)).await.unwrap();
        println!(
            "memory_growth, in-process server with {name}, 3000 requests: {} — {}",
            o.status().as_str(),
            o.summary
        );
    }
    let target = Arc::new(spawn("config/core.yaml").await);
    let mut fails = 0;
    let mut slopes = Vec::new();
    for run in 0..10u8 {
        let o = memory_spec(1000)
            .run(&ctx(target.clone(), 100 + run))
            .await
            .unwrap();
        if o.status() != Status::Pass {
            fails += 1;
        }
        slopes.push(
            o.evidence["slope_bytes_per_iteration"]
                .as_f64()
                .unwrap_or(f64::NAN),
        );
    }
    println!(
        "memory_growth on config/core.yaml, 10 runs × 1000 builds, limit 512B: {fails} false FAIL; slopes {:?} B/build",
        slopes.iter().map(|s| s.round()).collect::<Vec<_>>()
    );
    let bad = Arc::new(spawn("config/before-hardening.yaml").await);
    let o = memory_spec(1000).run(&ctx(bad, 120)).await.unwrap();
    println!(
        "memory_growth on config/before-hardening.yaml: {} — {}",
        o.status().as_str(),
        o.summary
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(bench_load_vs_wrk());
    bench_default_policy();
    rt.block_on(bench_memory_growth());
}
