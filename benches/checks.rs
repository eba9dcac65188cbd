//! Benchmarks of the exercising checks, printed as ratios measured side by side in one run:
//!
//! 1. the load generator's throughput vs `wrk` on the same route (goal ≥ 0.8; skipped when
//!    `wrk` is not installed);
//! 2. the default policy's wall time vs the sum of its inherent waits (goal ≤ 1.3×, < 60 s);
//! 3. `memory_growth`, the default policy's two checks (exact heap gauge at 32 B, RSS at
//!    1 KiB) on the same fresh services: `config/regressions/leak-64b.yaml` (20 runs, FAIL on
//!    the heap within 2 000 builds), `leak-2kib.yaml` (5), `config/core.yaml` (50, no false
//!    FAIL); plus 10 000-build runs showing the good profile flat. `BENCH_LEAK_RUNS`,
//!    `BENCH_GOOD_RUNS` change the counts; `BENCH_VERBOSE=1` prints every run.
//!
//! 5. a fleet (issue 12): `policies/smoke.yaml` on 20 spawned core services at
//!    `fleet.concurrency` 1, 4 and 8, against one instance's time × 20 / concurrency
//!    (goal ≤ 1.3× at 4). `BENCH_ONLY=fleet`.
//!
//! 4. the same comparison over TLS: both through one TLS-terminating proxy (rustls, in this
//!    process) in front of the core service, certificate from a CA made here (goal ≥ 0.9).
//!
//! Run with `cargo bench --bench checks` (release build, loopback only, bounded loads).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use preflight::checks::CheckSpec;
use preflight::outcome::Status;
use preflight::probe::load::{self, Endpoint, LoadConfig, Request};
use preflight::secret::Secret;
use preflight::target::Ctx;
use preflight::target::spawn::{SpawnRequest, Spawned};
use preflight::target::{ProcessControl, Target};
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
        reach: Default::default(),
    }
}

fn ctx(target: Arc<Target>, second_octet: u8) -> Ctx {
    let ip = |c: u8, d: u8| IpAddr::V4(Ipv4Addr::new(127, second_octet, c, d));
    let extra = (1..=64).map(|d| ip(1, d)).collect();
    Ctx {
        policy_dir: root(),
        ..Ctx::standalone(
            target,
            ip(0, 1),
            extra,
            Duration::from_secs(300),
            10_000_000,
        )
    }
}

/// One closed-loop run of our load generator: requests per second.
async fn ours_rps(url: &str, secs: u64) -> f64 {
    let ep = Endpoint::from_url(url).await.unwrap();
    let req = Request::new(&RequestLine::get("/healthz"), None).unwrap();
    let cfg = LoadConfig {
        rate: None,
        duration: Duration::from_secs(secs),
        connections: 8,
        sources: vec![IpAddr::V4(Ipv4Addr::new(127, 90, 0, 1))],
        max_requests: 5_000_000,
        request_timeout: Duration::from_secs(5),
    };
    let r = load::run(&ep, &req, &cfg, None).await.unwrap();
    assert_eq!(r.sent, r.ok, "errors from /healthz");
    r.rps()
}

/// One `wrk -t2 -c8` run: requests per second, or None when wrk is absent.
fn wrk_rps(url: &str, secs: u64) -> Option<f64> {
    let out = std::process::Command::new("wrk")
        .args([
            "-t2",
            "-c8",
            &format!("-d{secs}s"),
            &format!("{url}/healthz"),
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

async fn bench_load_vs_wrk() {
    let target = spawn("config/core.yaml").await;
    const RUNS: usize = 5;
    const SECS: u64 = 3;
    if wrk_rps(&target.url, 1).is_none() {
        println!("wrk: not installed — load generator vs wrk skipped (apt-get install wrk)");
        return;
    }
    // Interleaved, so drift of the shared box hits both alike.
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        ours.push(ours_rps(&target.url, SECS).await);
        theirs.push(wrk_rps(&target.url, SECS).unwrap_or(f64::NAN));
    }
    let (o, t) = (median(&ours), median(&theirs));
    println!(
        "load generator vs wrk, GET /healthz, 8 connections, {RUNS} interleaved runs of {SECS} s:\n  ours {:?} req/s, median {o:.0}\n  wrk  {:?} req/s, median {t:.0}\n  ratio of medians {:.2} (goal ≥ 0.8)",
        ours.iter().map(|x| x.round()).collect::<Vec<_>>(),
        theirs.iter().map(|x| x.round()).collect::<Vec<_>>(),
        o / t
    );
}

/// One run of the default policy through the release binary: (wall s, inherent s, verdict).
fn default_policy_once() -> (f64, f64, String) {
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
    let secs = |id: &str| {
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
    let inherent = 2.0 + 2.0 + 0.3 + secs("detectors-leak-free");
    (
        wall,
        inherent,
        report["verdict"].as_str().unwrap_or("?").into(),
    )
}

fn bench_default_policy() {
    let runs: Vec<_> = (0..3).map(|_| default_policy_once()).collect();
    for (wall, inherent, verdict) in &runs {
        println!(
            "default policy: {verdict}, {wall:.1} s wall, inherent waits {inherent:.1} s → {:.2}×",
            wall / inherent
        );
    }
    let ratios: Vec<f64> = runs.iter().map(|(w, i, _)| w / i).collect();
    let walls: Vec<f64> = runs.iter().map(|(w, _, _)| *w).collect();
    println!(
        "default policy, median of 3: {:.1} s wall, {:.2}× its inherent waits (goal ≤ 1.3×, < 60 s)",
        median(&walls),
        median(&ratios)
    );
}

/// The default policy's memory checks with `iterations` measured builds: `detectors-leak-free`
/// (the exact heap gauge, limit 32 B) and `detectors-rss-bounded` (RSS, limit 1 KiB).
fn memory_spec(heap: bool, iterations: u32) -> CheckSpec {
    let (source, limit) = if heap {
        (serde_json::json!({"metric": "heap_live_bytes"}), "32B")
    } else {
        (serde_json::json!("process"), "1KiB")
    };
    serde_json::from_value(serde_json::json!({
        "kind": "memory_growth", "request": "POST /v1/graph/build", "body": {"window": "5m"},
        "warmup": 100, "iterations": iterations, "sample_every": (iterations / 50).max(1),
        "max_growth_per_iteration": limit, "source": source,
    }))
    .unwrap()
}

/// FAILs, PASSes and INCONCLUSIVEs of one instrument over the runs, the builds it needed, and
/// one line per run.
#[derive(Default)]
struct Tally {
    fail: usize,
    pass: usize,
    other: usize,
    most_builds: u64,
    lines: Vec<String>,
}

impl Tally {
    fn add(&mut self, o: &preflight::outcome::Outcome) {
        match o.status() {
            Status::Fail => self.fail += 1,
            Status::Pass => self.pass += 1,
            _ => self.other += 1,
        }
        let e = &o.evidence;
        let builds = e["iterations_measured"].as_u64().unwrap_or(0);
        self.most_builds = self.most_builds.max(builds);
        self.lines.push(format!(
            "{} {:.0} B [{:.0}, {:.0}], later half {:.0} B, {builds} builds",
            o.status().as_str(),
            e["slope_bytes_per_iteration"].as_f64().unwrap_or(f64::NAN),
            e["slope_ci"][0].as_f64().unwrap_or(f64::NAN),
            e["slope_ci"][1].as_f64().unwrap_or(f64::NAN),
            e["late_half_slope"].as_f64().unwrap_or(f64::NAN),
        ));
    }

    fn print(&self, what: &str, runs: usize) {
        println!(
            "  {what}: {}/{runs} FAIL, {}/{runs} PASS, {} other; at most {} builds measured",
            self.fail, self.pass, self.other, self.most_builds
        );
        if std::env::var_os("BENCH_VERBOSE").is_some() {
            for l in &self.lines {
                println!("    {l}");
            }
        }
    }
}

/// Both memory checks, heap then RSS, on each of `runs` freshly spawned services with
/// `config`: the same runs judged by both instruments.
async fn memory_runs(config: &str, runs: u8, octet: u8) {
    let (mut heap, mut rss) = (Tally::default(), Tally::default());
    for run in 0..runs {
        let target = Arc::new(spawn(config).await);
        let o = memory_spec(true, 1000)
            .run(&ctx(target.clone(), octet + run))
            .await
            .unwrap();
        heap.add(&o);
        // Other addresses: the heap check's may still be rate-limited.
        let o = memory_spec(false, 1000)
            .run(&ctx(target, octet + run + 100))
            .await
            .unwrap();
        rss.add(&o);
    }
    println!("memory_growth on {config}, {runs} fresh services × (heap check, RSS check):");
    heap.print("heap_live_bytes, limit 32B", runs.into());
    rss.print("RSS, limit 1KiB", runs.into());
}

async fn bench_memory_growth() {
    // The default policy's two checks (warm-up 100, 1 000 builds, up to two extensions).
    let runs = |var: &str, default: u8| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    memory_runs(
        "config/regressions/leak-64b.yaml",
        runs("BENCH_LEAK_RUNS", 20),
        60,
    )
    .await;
    memory_runs("config/regressions/leak-2kib.yaml", 5, 85).await;
    memory_runs("config/core.yaml", runs("BENCH_GOOD_RUNS", 50), 91).await;
    // Long run on one service: does the good profile's growth plateau?
    for heap in [true, false] {
        let target = Arc::new(spawn("config/core.yaml").await);
        let o = memory_spec(heap, 10_000)
            .run(&ctx(target, 145 + u8::from(heap)))
            .await
            .unwrap();
        let s: Vec<(f64, f64)> = serde_json::from_value(o.evidence["samples"].clone()).unwrap();
        let seg = |a: usize, b: usize| (s[b].1 - s[a].1) / (s[b].0 - s[a].0);
        println!(
            "memory_growth ({}) on config/core.yaml, 10 000 builds: {} — {}\n  B/build by segment: 0–2k {:.0}, 2k–4k {:.0}, 4k–6k {:.0}, 6k–8k {:.0}, 8k–10k {:.0}",
            if heap { "heap" } else { "RSS" },
            o.status().as_str(),
            o.summary,
            seg(0, 10),
            seg(10, 20),
            seg(20, 30),
            seg(30, 40),
            seg(40, 50)
        );
    }
    let bad = Arc::new(spawn("config/before-hardening.yaml").await);
    let o = memory_spec(true, 1000).run(&ctx(bad, 150)).await.unwrap();
    println!(
        "memory_growth (heap) on config/before-hardening.yaml: {} — {}",
        o.status().as_str(),
        o.summary
    );
}

/// A TLS-terminating proxy on 127.0.0.1 in front of `upstream`, presenting a certificate for
/// `localhost` from a CA made here; returns its port and the CA's PEM file.
fn tls_proxy(upstream: u16, dir: &Path) -> (u16, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, "bench CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = p.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let ca_pem = dir.join("ca.pem");
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    // Its own runtime on its own threads, as a separate server would be: sharing the
    // generator's runtime would charge the proxy's work to our side only (wrk is another
    // process).
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            // Bounded: the bench opens a few dozen connections in all.
            for _ in 0..10_000 {
                let Ok(Ok((tcp, _))) =
                    tokio::time::timeout(Duration::from_secs(120), listener.accept()).await
                else {
                    break;
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        return;
                    };
                    let _ = up.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                });
            }
        });
    });
    (port, ca_pem)
}

/// One closed-loop run of our load generator over TLS: requests per second.
async fn ours_tls_rps(target: &Target, secs: u64) -> f64 {
    let ep = Endpoint::for_target(target).await.unwrap();
    let req = Request::new(&RequestLine::get("/healthz"), None).unwrap();
    let cfg = LoadConfig {
        rate: None,
        duration: Duration::from_secs(secs),
        connections: 8,
        sources: vec![IpAddr::V4(Ipv4Addr::new(127, 91, 0, 1))],
        max_requests: 5_000_000,
        request_timeout: Duration::from_secs(5),
    };
    let r = load::run(&ep, &req, &cfg, None).await.unwrap();
    assert_eq!(r.sent, r.ok, "errors from /healthz: {:?}", r.first_error);
    r.rps()
}

async fn bench_load_vs_wrk_tls() {
    let service = spawn("config/core.yaml").await;
    let upstream: u16 = service.url.rsplit(':').next().unwrap().parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (port, ca) = tls_proxy(upstream, dir.path());
    let url = format!("https://localhost:{port}");
    if wrk_rps(&url, 1).is_none() {
        println!("wrk: not installed — TLS load generator vs wrk skipped (apt-get install wrk)");
        return;
    }
    let mut target = Target::remote(&url);
    target.reach.tls = Some(
        preflight::target::tls::Tls::new(&preflight::target::tls::TlsOptions {
            ca: Some(ca),
            ..Default::default()
        })
        .unwrap(),
    );
    const RUNS: usize = 5;
    const SECS: u64 = 3;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        ours.push(ours_tls_rps(&target, SECS).await);
        theirs.push(wrk_rps(&url, SECS).unwrap_or(f64::NAN));
    }
    let (o, t) = (median(&ours), median(&theirs));
    println!(
        "load generator vs wrk over TLS (same proxy), GET /healthz, 8 connections, {RUNS} interleaved runs of {SECS} s:\n  ours {:?} req/s, median {o:.0}\n  wrk  {:?} req/s, median {t:.0}\n  ratio of medians {:.2} (goal ≥ 0.9)",
        ours.iter().map(|x| x.round()).collect::<Vec<_>>(),
        theirs.iter().map(|x| x.round()).collect::<Vec<_>>(),
        o / t
    );
    drop(service);
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // BENCH_ONLY=wrk|wrk-tls|policy|memory runs one part.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let part = |name: &str| only.is_empty() || only == name;
    if part("wrk") {
        rt.block_on(bench_load_vs_wrk());
    }
    if part("wrk-tls") {
        rt.block_on(bench_load_vs_wrk_tls());
    }
    if part("policy") {
        bench_default_policy();
    }
    if part("memory") {
        rt.block_on(bench_memory_growth());
    }
    if part("fleet") {
        rt.block_on(bench_fleet());
    }
}

/// Section 5: a fleet's wall time against one instance's × 20 / concurrency, for two fleets of
/// 20 core services: on loopback as they are (each check a few hundred microseconds of CPU:
/// the two cores bound it), and with 20 ms added to every data request (`faults.latency`), as
/// a fleet across a network is, checked by four data requests in a row.
async fn bench_fleet() {
    let dir = tempfile::tempdir().unwrap();
    let slow = dir.path().join("core-20ms.yaml");
    std::fs::write(
        &slow,
        format!(
            "extends: {}\nfaults:\n  latency: 20ms\n",
            root().join("config/core.yaml").display()
        ),
    )
    .unwrap();
    let data = dir.path().join("data-policy.yaml");
    let mut policy = String::from("version: 1\nname: four-data-requests\nchecks:\n");
    for i in 0..4 {
        policy += &format!(
            "  - id: data-{i}\n    kind: http\n    severity: high\n{}    request: GET /v1/correlations?market=m1&window=1h\n    expect: {{ status: 200 }}\n",
            if i > 0 {
                format!("    depends_on: [data-{}]\n", i - 1)
            } else {
                String::new()
            }
        );
    }
    std::fs::write(&data, policy).unwrap();
    fleet_case(
        "policies/smoke.yaml on loopback",
        "config/core.yaml",
        &root().join("policies/smoke.yaml"),
    )
    .await;
    fleet_case(
        "four data requests in a row, 20 ms each (faults.latency)",
        slow.to_str().unwrap(),
        &data,
    )
    .await;
}

async fn fleet_case(what: &str, config: &str, file: &Path) {
    use preflight::engine::fleet::{Fleet, check_fleet};
    use preflight::engine::run::{CheckOptions, check};
    use preflight::policy::model::FleetSpec;
    use preflight::probe::discovery::Instance;
    const N: usize = 20;
    let mut targets = vec![];
    for _ in 0..N {
        targets.push(spawn(config).await);
    }
    let instances: Vec<Instance> = targets
        .iter()
        .map(|t| Instance {
            name: t.url.trim_start_matches("http://").to_string(),
            url: t.url.clone(),
            labels: Default::default(),
        })
        .collect();
    let loaded = preflight::policy::load::load(&[file.to_path_buf()]).unwrap();
    let opts = |concurrency: usize| {
        let mut policy = loaded.policy.clone();
        policy.fleet = Some(FleetSpec {
            concurrency,
            ..FleetSpec::default()
        });
        CheckOptions::new(policy, vec![file.to_path_buf()], exe())
    };
    let runs: usize = std::env::var("BENCH_FLEET_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let (mut one, mut fleet): (Vec<f64>, [Vec<f64>; 3]) = (vec![], Default::default());
    let levels = [1usize, 4, 8];
    for run in 0..runs {
        // One instance (a different one each run), then the fleet at each concurrency.
        let mut o = opts(1);
        o.target = Some(instances[run % N].url.clone());
        let t = Instant::now();
        let r = check(o).await.unwrap();
        one.push(t.elapsed().as_secs_f64());
        assert_eq!(
            r.verdict,
            preflight::report::Verdict::Go,
            "{}",
            r.verdict_reason
        );
        for (i, c) in levels.iter().enumerate() {
            let t = Instant::now();
            let r = check_fleet(
                opts(*c),
                Fleet {
                    instances: instances.clone(),
                    source: "bench".into(),
                    size: N,
                    shard: None,
                },
            )
            .await
            .unwrap();
            fleet[i].push(t.elapsed().as_secs_f64());
            assert_eq!(
                r.verdict,
                preflight::report::Verdict::Go,
                "{}",
                r.verdict_reason
            );
        }
    }
    let t1 = median(&one);
    println!(
        "fleet of {N} core services, {what}, {runs} interleaved runs (medians):\n  one instance {:.1} ms",
        t1 * 1000.0
    );
    for (i, c) in levels.iter().enumerate() {
        let tf = median(&fleet[i]);
        let ideal = t1 * N as f64 / *c as f64;
        println!(
            "  concurrency {c}: {:.1} ms, ideal {:.1} ms (one × {N} / {c}): ratio {:.2}{}",
            tf * 1000.0,
            ideal * 1000.0,
            tf / ideal,
            if *c == 4 { " (goal ≤ 1.3)" } else { "" }
        );
    }
    drop(targets);
}
