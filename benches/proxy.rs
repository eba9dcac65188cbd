//! The live canary's proxy overhead (issue 10), side by side in one run: the bundled service
//! (release build, `GET /healthz`) reached directly, through `preflight canary --listen`
//! (baseline and canary both the same instance, 5 %), and through nginx as a reverse proxy
//! with upstream keep-alive — the anchor, measured the same way.
//!
//! 1. **Throughput**: closed loop, 32 connections, 4 s; requests per second. Goal: through
//!    the proxy ≥ 0.8× direct.
//! 2. **Latency added**: open loop paced at 50 % of the direct throughput, 4 s, latency from
//!    each request's intended start (no coordinated omission); p50 and p99. Goal: p99 added
//!    ≤ 1 ms.
//!
//! Three rounds, the three ways interleaved in each; medians. Everything shares the
//! machine's cores (load generator, proxy, service), as it would on one VM.
//!
//! Run with `cargo bench --bench proxy` (needs `/usr/sbin/nginx`; without it the anchor is
//! left out and said so).
#![allow(clippy::print_stdout)]

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

const CONNS: usize = 32;
const RUN_FOR: Duration = Duration::from_secs(4);
const ROUNDS: usize = 3;
/// The routes measured: the cheapest answer the service has (the proxy's overhead at its
/// largest share) and the data route the canary policy sends (real work per request).
const ROUTES: [(&str, &str); 2] = [
    ("/healthz", "trivial: no work behind it"),
    (
        "/v1/correlations?market=m1&window=1h",
        "the data route: a SQLite query per request",
    ),
];

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}

/// Starts `cmd`, returns it and the URL from the first line (on `stdout` or `stderr`)
/// starting with `prefix`.
fn start(mut cmd: Command, on_stderr: bool, prefix: &str) -> (Proc, String) {
    let mut child = if on_stderr {
        cmd.stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    } else {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let out: Box<dyn std::io::Read + Send> = if on_stderr {
        Box::new(child.stderr.take().unwrap())
    } else {
        Box::new(child.stdout.take().unwrap())
    };
    let mut lines = BufReader::new(out).lines();
    let url = loop {
        let l = lines
            .next()
            .expect("the process printed its address")
            .unwrap();
        if let Some(u) = l.strip_prefix(prefix) {
            break u.trim().to_string();
        }
    };
    // Keep draining, so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (Proc(child), url)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn nginx(dir: &Path, upstream: &str) -> Option<(Proc, String)> {
    let bin = Path::new("/usr/sbin/nginx");
    if !bin.exists() {
        return None;
    }
    let port = free_port();
    let upstream = upstream.trim_start_matches("http://");
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1;\nerror_log {d}/logs/error.log;\npid {d}/nginx.pid;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               upstream core {{ server {upstream}; keepalive 64; }}\n\
               server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://core;\n\
                   proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n\
                   proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n    }}\n  }}\n}}\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let child = Command::new(bin)
        .args([
            "-p",
            &dir.display().to_string(),
            "-c",
            &conf.display().to_string(),
        ])
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "nginx did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some((Proc(child), url))
}

type Http = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<bytes::Bytes>>;

fn client() -> Http {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build_http()
}

/// Closed loop: requests per second over `RUN_FOR`.
async fn throughput(http: &Http, url: &str) -> f64 {
    let uri: hyper::Uri = url.parse().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CONNS {
        let (http, uri, stop, done) = (http.clone(), uri.clone(), stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = http.get(uri.clone()).await.unwrap();
                assert_eq!(r.status(), 200);
                let _ = r.into_body().collect().await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(RUN_FOR).await;
    let n = done.load(Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    n as f64 / secs
}

/// Open loop at `rate`: (p50, p99) latency in ms from each request's intended start.
async fn paced(http: &Http, url: &str, rate: f64) -> (f64, f64) {
    let uri: hyper::Uri = url.parse().unwrap();
    let hist = Arc::new(std::sync::Mutex::new(
        hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap(),
    ));
    let n = (rate * RUN_FOR.as_secs_f64()) as usize;
    // At most 64 in flight (one pool's worth of connections); a request waiting for its turn
    // is still timed from its intended start.
    let turns = Arc::new(tokio::sync::Semaphore::new(64));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let intended = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(intended).await;
        let (http, uri, hist, turns) = (http.clone(), uri.clone(), hist.clone(), turns.clone());
        tasks.spawn(async move {
            let _turn = turns.acquire_owned().await.unwrap();
            let r = http.get(uri).await.unwrap();
            let _ = r.into_body().collect().await;
            let us = intended.elapsed().as_micros() as u64;
            hist.lock().unwrap().record(us.max(1)).unwrap();
        });
    }
    while tasks.join_next().await.is_some() {}
    let h = hist.lock().unwrap();
    (
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let exe = env!("CARGO_BIN_EXE_preflight");
    let dir = tempfile::tempdir().unwrap();
    // core.yaml without its per-client limiter: every request here comes from one address.
    let profile = dir.path().join("bench.yaml");
    std::fs::write(
        &profile,
        format!(
            "extends: {}/config/core.yaml\nrate_limit:\n  enabled: false\n",
            env!("CARGO_MANIFEST_DIR")
        ),
    )
    .unwrap();
    let mut serve = Command::new(exe);
    serve
        .args(["serve", "--config"])
        .arg(&profile)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env_remove("RUST_LOG");
    let (_svc, direct) = start(serve, false, "listening on ");
    let policy = dir.path().join("live.yaml");
    std::fs::write(
        &policy,
        "version: 1\nname: bench\ncanary:\n  metrics:\n    - {name: latency, source: latency}\n",
    )
    .unwrap();
    let mut live = Command::new(exe);
    live.arg("canary")
        .arg(&policy)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--baseline",
            &direct,
            "--canary",
            &direct,
        ])
        .args([
            "--weight",
            "5%",
            "--interval",
            "1h",
            "--step-intervals",
            "1000",
            "--no-progress",
        ]);
    let (_proxy, proxied) = start(live, true, "canary: proxy listening on ");
    let anchor = nginx(&dir.path().join("nginx"), &direct);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let http = client();
        let mut ways: Vec<(&str, String)> = vec![("direct", direct.clone()), ("preflight proxy", proxied.clone())];
        if let Some((_, url)) = &anchor {
            ways.push(("nginx", url.clone()));
        }
        for (route, what) in ROUTES {
            let urls: Vec<String> = ways.iter().map(|(_, base)| format!("{base}{route}")).collect();
            // Warm every path (connections, caches) before measuring.
            for url in &urls {
                let _ = paced(&http, url, 200.0).await;
            }
            let mut rps: Vec<Vec<f64>> = vec![vec![]; ways.len()];
            for _ in 0..ROUNDS {
                for (k, url) in urls.iter().enumerate() {
                    rps[k].push(throughput(&http, url).await);
                }
            }
            let rps: Vec<f64> = rps.into_iter().map(median).collect();
            let rate = rps[0] * 0.5;
            let mut lat: Vec<(Vec<f64>, Vec<f64>)> = vec![(vec![], vec![]); ways.len()];
            for _ in 0..ROUNDS {
                for (k, url) in urls.iter().enumerate() {
                    let (p50, p99) = paced(&http, url, rate).await;
                    lat[k].0.push(p50);
                    lat[k].1.push(p99);
                }
            }
            let lat: Vec<(f64, f64)> = lat.into_iter().map(|(a, b)| (median(a), median(b))).collect();
            println!("GET {route} ({what})");
            println!("  throughput, closed loop, {CONNS} connections, {RUN_FOR:?} (median of {ROUNDS}):");
            for (k, (name, _)) in ways.iter().enumerate() {
                println!("    {name:<16} {:9.0} req/s  ({:.2}x direct)", rps[k], rps[k] / rps[0]);
            }
            println!("  latency at 50 % of direct capacity ({rate:.0} req/s, open loop, median of {ROUNDS}):");
            for (k, (name, _)) in ways.iter().enumerate() {
                println!(
                    "    {name:<16} p50 {:8.3} ms  p99 {:8.3} ms  (p99 added {:+.3} ms)",
                    lat[k].0,
                    lat[k].1,
                    lat[k].1 - lat[0].1
                );
            }
            println!(
                "  goals: through the proxy >= 0.8x direct: {} ({:.2}x; nginx {}); p99 added <= 1 ms: {} ({:+.3} ms)",
                if rps[1] / rps[0] >= 0.8 { "met" } else { "NOT met" },
                rps[1] / rps[0],
                rps.get(2).map_or("not measured".to_string(), |n| format!("{:.2}x", n / rps[0])),
                if lat[1].1 - lat[0].1 <= 1.0 { "met" } else { "NOT met" },
                lat[1].1 - lat[0].1
            );
        }
        if anchor.is_none() {
            println!("(nginx not found at /usr/sbin/nginx: the anchor was not measured)");
        }
    });
}
