//! Service benchmarks, printed as ratios measured side by side in one run (variants
//! interleaved, medians quoted). `cargo bench --bench service`.
//!
//! 1. a cheap route with the rate limiter on (never limiting) vs off — goal ≤ 5 % loss;
//! 2. the rejection path (one address flooding, nearly all 429) vs the accepted path —
//!    goal ≥ 0.9×;
//! 3. limiter memory per tracked client at 1M clients, and after they go idle — goal ≤ 100 B;
//! 4. `preflight status --format tmux` with few vs many logged events, vs `grep -c` over
//!    log files — goal ≤ 5 ms and flat.
//!
//! `BENCH_EVENTS` sets the large event count (default 1000000; the goal quotes 10M).
#![allow(clippy::print_stdout)]

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use preflight::service::config::Config;
use preflight::service::ratelimit::Limiter;
use preflight::service::store::{LogEvent, Store};
use preflight::service::{AppState, app, status_line};

const RUNS: usize = 5;
const RUN_FOR: Duration = Duration::from_millis(1500);
const CONNS: usize = 16;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    s.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4096
}

/// Starts the app with `cfg` on a loopback port; returns its base URL.
async fn start(cfg: Config, dir: &std::path::Path) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let store = Arc::new(Store::open(&dir.join("core.db")).unwrap());
    let state = Arc::new(AppState::new(cfg, store));
    state.ready.store(true, Ordering::Relaxed);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = app(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, svc).await.unwrap() });
    format!("http://{addr}")
}

/// Requests per second against `url` over `RUN_FOR`, and the share answered 429.
async fn load(url: &str) -> (f64, f64) {
    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let stop = Arc::new(AtomicBool::new(false));
    let (done, limited) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let uri: hyper::Uri = url.parse().unwrap();
    let mut tasks = Vec::new();
    for _ in 0..CONNS {
        let (client, uri) = (client.clone(), uri.clone());
        let (stop, done, limited) = (stop.clone(), done.clone(), limited.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let res = client.get(uri.clone()).await.unwrap();
                if res.status() == 429 {
                    limited.fetch_add(1, Ordering::Relaxed);
                }
                let _ = res.into_body().collect().await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(RUN_FOR).await;
    stop.store(true, Ordering::Relaxed);
    let n = done.load(Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    for t in tasks {
        let _ = t.await;
    }
    let all = done.load(Ordering::Relaxed).max(1);
    (
        n as f64 / secs,
        limited.load(Ordering::Relaxed) as f64 / all as f64,
    )
}

fn base_cfg(dir: &std::path::Path) -> Config {
    let mut cfg = Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    cfg.rate_limit.exempt = vec![];
    cfg.shedding.enabled = false;
    cfg
}

async fn http_benches() {
    let dir = tempfile::tempdir().unwrap();
    let mut off = base_cfg(dir.path());
    off.rate_limit.enabled = false;
    let mut on = base_cfg(dir.path());
    on.rate_limit.burst = 1_000_000_000;
    on.rate_limit.per_second = 1_000_000_000;
    let mut reject = base_cfg(dir.path());
    reject.rate_limit.burst = 1;
    reject.rate_limit.per_second = 1;
    let urls = [
        start(off, &dir.path().join("off")).await,
        start(on, &dir.path().join("on")).await,
        start(reject, &dir.path().join("reject")).await,
    ];
    for u in &urls {
        let _ = load(&format!("{u}/healthz")).await; // warm-up
    }
    let mut rates: [Vec<f64>; 3] = Default::default();
    let mut reject_share = Vec::new();
    for _ in 0..RUNS {
        for (i, u) in urls.iter().enumerate() {
            let (r, share) = load(&format!("{u}/healthz")).await;
            rates[i].push(r);
            if i == 2 {
                reject_share.push(share);
            }
        }
    }
    let [off, on, rej] = rates.map(median);
    println!("## HTTP ({RUNS} interleaved runs of {RUN_FOR:?}, {CONNS} connections, medians)");
    println!("limiter off            {off:>10.0} req/s");
    println!(
        "limiter on (accepting) {on:>10.0} req/s   on/off = {:.3}  (loss {:.1}%)",
        on / off,
        (1.0 - on / off) * 100.0
    );
    println!(
        "one address flooding   {rej:>10.0} req/s   rejected/accepted = {:.3}  ({:.2}% answered 429)",
        rej / on,
        median(reject_share) * 100.0
    );
}

fn memory_bench() {
    const N: u32 = 1_000_000;
    let mut cfg = base_cfg(std::path::Path::new("."));
    cfg.rate_limit.max_clients = 2_000_000;
    cfg.rate_limit.idle_timeout = preflight::units::Dur::from_secs(0);
    cfg.rate_limit.per_second = 1000;
    cfg.rate_limit.burst = 10;
    let before = rss();
    let limiter = Limiter::new(&cfg.rate_limit);
    for i in 0..N {
        limiter.check(IpAddr::from((0x0a00_0000u32 + i).to_be_bytes()));
    }
    let full = rss();
    let tracked = limiter.tracked();
    // Buckets refill in 10 ms at 1000/s; then they are idle and dropped.
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    limiter.cleanup();
    let took = started.elapsed();
    let after = rss();
    println!("## Limiter memory");
    println!(
        "{tracked} tracked clients: RSS +{:.1} MiB = {:.1} bytes/client",
        (full - before) as f64 / 1048576.0,
        (full - before) as f64 / f64::from(N)
    );
    println!(
        "after idle cleanup ({took:?}): {} tracked, RSS +{:.1} MiB over the start",
        limiter.tracked(),
        after.saturating_sub(before) as f64 / 1048576.0
    );
}

fn status_bench() {
    let large: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    println!("## `preflight status --format tmux` vs `grep -c` (median of 21)");
    for n in [10_000usize, large] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("core.db")).unwrap();
        store.set_meta("started_at_ms", "0").unwrap();
        let mut batch = Vec::with_capacity(10_000);
        let mut done = 0;
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(logs.join("core.log.2025-01-01")).unwrap(),
        );
        while done < n {
            batch.clear();
            for k in 0..10_000.min(n - done) {
                let level = if k % 10 == 0 { "ERROR" } else { "WARN" };
                batch.push(LogEvent {
                    ts_ms: 0,
                    level,
                    code: "HB-Q-TIMEOUT".into(),
                    message: "query exceeded its budget".into(),
                });
                use std::io::Write;
                writeln!(file, r#"{{"timestamp":"2025-01-01T00:00:00Z","level":"{level}","code":"HB-Q-TIMEOUT","message":"query exceeded its budget"}}"#).unwrap();
            }
            store.insert_log_events(&batch).unwrap();
            done += batch.len();
        }
        drop(file);
        let mut times = Vec::new();
        let mut line = String::new();
        for _ in 0..21 {
            let t = Instant::now();
            line = status_line(dir.path(), "tmux").unwrap();
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let mut spawned = Vec::new();
        for _ in 0..11 {
            let t = Instant::now();
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_preflight"))
                .args(["status", "--format", "tmux", "--data-dir"])
                .arg(dir.path())
                .output()
                .unwrap();
            assert!(out.status.success());
            spawned.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let mut grep = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let out = std::process::Command::new("grep")
                .args(["-c", "\"level\":\"WARN\""])
                .arg(logs.join("core.log.2025-01-01"))
                .output()
                .unwrap();
            assert!(out.status.success());
            grep.push(t.elapsed().as_secs_f64() * 1e3);
        }
        println!(
            "{n:>10} events: status {:.3} ms in-process, {:.2} ms as `preflight status` process (`{line}`); grep -c {:.1} ms",
            median(times),
            median(spawned),
            median(grep)
        );
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(http_benches());
    drop(rt);
    memory_bench();
    status_bench();
}
