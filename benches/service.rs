//! Service benchmarks, printed as ratios measured side by side in one run (variants
//! interleaved, medians quoted). `cargo bench --bench service`.
//!
//! 1. a cheap route with the rate limiter on (never limiting) vs off — goal ≤ 3 % loss
//!    (issue 14); and the limiter off but its three headers added, to split that loss between
//!    the headers and the limiter;
//! 2. the rejection path (one address flooding, nearly all 429) vs the accepted path —
//!    goal ≥ 0.9×;
//! 3. one limiter check in-process (no HTTP), accepting and rejecting, on one and two threads:
//!    the part of (1) and (2) the limiter owns, without the load generator's noise;
//! 4. limiter memory per tracked client at 1M IPv4 and at 1M IPv6 clients, and after they go
//!    idle — goal ≤ 40 B (IPv4; issue 14);
//! 5. `preflight status --format tmux` with few vs many logged events, vs `grep -c` over
//!    log files — goal ≤ 5 ms and flat;
//! 6. ingest latency (50-tick batches, one writer) while the store's retention prunes old
//!    rows in batches, vs no prune, vs the same prune as one transaction (the long write lock
//!    batching avoids) — goal: p99 unchanged (issue 16).
//! 7. the shipped server as a process (`preflight serve` of this build, `config/core.yaml`
//!    with shedding and snapshots off): the server's CPU time per request (every thread's,
//!    from `/proc/PID/stat`, so the load generator's CPU is not in the figure)
//!    and its throughput, for the limiter off, on (accepting, as shipped: jemalloc with the
//!    live-heap counter, `RateLimit-*` only near the limit, so none here), on with
//!    `headers: always` (three headers on every answer), and on in a binary with the system allocator and no heap statistics
//!    (`BENCH_BASELINE_BIN`: a `preflight` built with `--no-default-features`;
//!    scripts/bench-heap-cost builds it) — goals: the limiter ≤ 3 %, the heap statistics
//!    ≤ 1 point (issue 14) — and, with `BENCH_OTHER_BIN`, another build (the script's: the
//!    system allocator wrapped in counters) against the baseline. `BENCH_ONLY=cpu`;
//!    `BENCH_RUNS` as above.
//!
//! `BENCH_RUNS` sets the interleaved HTTP runs (default 5); `BENCH_PIN=CPU` runs (7)'s servers on
//! that CPU alone (`taskset`; run the bench itself under `taskset -c` another). `BENCH_EVENTS` sets the large event count (default 1000000; the goal quotes 10M).
//! `BENCH_ONLY=limiter` runs only (3) and (4), e.g. under `perf record`; `BENCH_ONLY=http`
//! only (1) and (2); `BENCH_ONLY=prune` only (6) (`BENCH_PRUNE_ROWS` old rows, default 200000;
//! `BENCH_PRUNE_BATCH` rows per batch, default 250 as `store.prune_batch`).
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
use preflight::service::store::{LogEvent, Store, Tick};
use preflight::service::{AppState, app, status_line};

const RUNS: usize = 5;
const RUN_FOR: Duration = Duration::from_millis(1500);
const CONNS: usize = 16;
/// One run of the process benchmark (7): long enough for the CPU clock's 10 ms ticks.
const CPU_RUN: Duration = Duration::from_secs(4);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    s.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4096
}

/// Starts the app with `cfg` on a loopback port; returns its base URL. With `headers`, every
/// response also carries the accepting limiter's three `RateLimit-*` headers, built once.
async fn start(cfg: Config, dir: &std::path::Path, headers: bool) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let store = Arc::new(Store::open(&dir.join("core.db")).unwrap());
    let state = Arc::new(AppState::new(cfg, store));
    state.ready.store(true, Ordering::Relaxed);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut router = app(state);
    if headers {
        router = router.layer(axum::middleware::map_response(ratelimit_headers));
    }
    let svc = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, svc).await.unwrap() });
    format!("http://{addr}")
}

/// The headers the accepting limiter of `http_benches` sends, same names and lengths.
async fn ratelimit_headers(mut res: axum::response::Response) -> axum::response::Response {
    use axum::http::{HeaderName, HeaderValue};
    let h = res.headers_mut();
    for (name, value) in [
        ("ratelimit-limit", "1000000000"),
        ("ratelimit-remaining", "999999999"),
        ("ratelimit-reset", "1"),
    ] {
        h.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    res
}

/// Requests per second against `url` over `RUN_FOR`, the share answered 429, and every
/// request answered (those in flight at the end included).
async fn load(url: &str) -> (f64, f64, u64) {
    load_for(url, RUN_FOR).await
}

/// [`load`] for `run_for`.
async fn load_for(url: &str, run_for: Duration) -> (f64, f64, u64) {
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
    tokio::time::sleep(run_for).await;
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
        all,
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
    // 0 off, 1 on (accepting), 2 one address flooding, 3 off with the three headers added:
    // the part of the loss that is the headers themselves (inserted, encoded, and parsed by
    // the in-process client), not the limiter.
    let urls = [
        start(off.clone(), &dir.path().join("off"), false).await,
        start(on, &dir.path().join("on"), false).await,
        start(reject, &dir.path().join("reject"), false).await,
        start(off, &dir.path().join("headers"), true).await,
    ];
    for u in &urls {
        let _ = load(&format!("{u}/healthz")).await; // warm-up
    }
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(RUNS);
    let mut rates: [Vec<f64>; 4] = Default::default();
    let mut reject_share = Vec::new();
    for run in 0..runs {
        // The order rotates, so no variant always runs first after another's load.
        for k in 0..urls.len() {
            let i = (run + k) % urls.len();
            let (r, share, _) = load(&format!("{}/healthz", urls[i])).await;
            rates[i].push(r);
            if i == 2 {
                reject_share.push(share);
            }
        }
    }
    let ratio =
        |a: usize, b: usize| -> Vec<f64> { (0..runs).map(|r| rates[a][r] / rates[b][r]).collect() };
    let list = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.3}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let (on_off, rej_on, hdr_off, on_hdr) = (ratio(1, 0), ratio(2, 1), ratio(3, 0), ratio(1, 3));
    println!("## HTTP ({runs} interleaved runs of {RUN_FOR:?}, {CONNS} connections)");
    let kilo: Vec<f64> = rates[0].iter().map(|x| x / 1000.0).collect();
    println!("off, k req/s per run:       {}", list(&kilo));
    println!("on/off per run:             {}", list(&on_off));
    println!("rejected/accepted per run:  {}", list(&rej_on));
    println!("off+headers/off per run:    {}", list(&hdr_off));
    let [off, on, rej, hdr] = rates.map(median);
    println!("medians:");
    println!("limiter off            {off:>10.0} req/s");
    println!(
        "limiter on (accepting) {on:>10.0} req/s   on/off = {:.3}  (loss {:.1}%; median of run ratios {:.3})",
        on / off,
        (1.0 - on / off) * 100.0,
        median(on_off)
    );
    println!(
        "one address flooding   {rej:>10.0} req/s   rejected/accepted = {:.3}  ({:.2}% answered 429; median of run ratios {:.3})",
        rej / on,
        median(reject_share) * 100.0,
        median(rej_on)
    );
    println!(
        "off + the 3 headers    {hdr:>10.0} req/s   off+headers/off = {:.3}, on/(off+headers) = {:.3} (medians of run ratios)",
        median(hdr_off),
        median(on_hdr)
    );
}

/// Nanoseconds per `Limiter::check` of one address on `threads` threads (median of 5
/// interleaved runs), for an accepting and a rejecting limiter, decisions dropped as the
/// middleware drops them (header values included).
fn check_bench() {
    const RUN: Duration = Duration::from_millis(300);
    let mut accept = base_cfg(std::path::Path::new("."));
    accept.rate_limit.burst = 1_000_000_000;
    accept.rate_limit.per_second = 1_000_000_000;
    let mut reject = base_cfg(std::path::Path::new("."));
    reject.rate_limit.burst = 1;
    reject.rate_limit.per_second = 1;
    let limiters = [
        Limiter::new(&accept.rate_limit),
        Limiter::new(&reject.rate_limit),
    ];
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    println!("## Limiter check in-process (one address, median of 5 runs of {RUN:?})");
    for threads in [1usize, 2] {
        let mut ns: [Vec<f64>; 2] = Default::default();
        for _ in 0..5 {
            for (k, limiter) in limiters.iter().enumerate() {
                let stop = AtomicBool::new(false);
                let calls = AtomicU64::new(0);
                let started = Instant::now();
                std::thread::scope(|s| {
                    for _ in 0..threads {
                        s.spawn(|| {
                            let mut n = 0u64;
                            while !stop.load(Ordering::Relaxed) {
                                for _ in 0..256 {
                                    std::hint::black_box(limiter.check(std::hint::black_box(ip)));
                                }
                                n += 256;
                            }
                            calls.fetch_add(n, Ordering::Relaxed);
                        });
                    }
                    std::thread::sleep(RUN);
                    stop.store(true, Ordering::Relaxed);
                });
                let per_thread = calls.load(Ordering::Relaxed) as f64 / threads as f64;
                ns[k].push(started.elapsed().as_secs_f64() * 1e9 / per_thread);
            }
        }
        let [acc, rej] = ns.map(median);
        println!(
            "{threads} thread(s): accepted {acc:.1} ns/check, rejected {rej:.1} ns/check (rejected/accepted time = {:.3})",
            rej / acc
        );
    }
}

/// Each address family in a fresh process of this binary: glibc raises its mmap threshold
/// after freeing a large block, so a second run in one process kept freed tables in the heap
/// and read up to 17 B/client more.
fn memory_bench() {
    for family in ["IPv4", "IPv6"] {
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .arg("--bench")
            .env("BENCH_ONLY", format!("memory-{family}"))
            .status()
            .unwrap();
        assert!(status.success());
    }
}

fn memory_family(family: &str) {
    match family {
        "IPv4" => memory_run(family, |i| IpAddr::from((0x0a00_0000u32 + i).to_be_bytes())),
        _ => memory_run(family, |i| {
            IpAddr::from((0x2001_0db8u128 << 96 | u128::from(i)).to_be_bytes())
        }),
    }
}

fn memory_run(family: &str, addr: impl Fn(u32) -> IpAddr) {
    const N: u32 = 1_000_000;
    let mut cfg = base_cfg(std::path::Path::new("."));
    cfg.rate_limit.max_clients = 2_000_000;
    cfg.rate_limit.idle_timeout = preflight::units::Dur::from_secs(0);
    cfg.rate_limit.per_second = 1000;
    cfg.rate_limit.burst = 10;
    let before = rss();
    let limiter = Limiter::new(&cfg.rate_limit);
    for i in 0..N {
        limiter.check(addr(i));
    }
    let full = rss();
    let tracked = limiter.tracked();
    // Buckets refill in 10 ms at 1000/s; then they are idle and dropped.
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    limiter.cleanup();
    let took = started.elapsed();
    let after = rss();
    println!("## Limiter memory, {family}");
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

fn ticks(prefix: &str, from: usize, n: usize, ts_ms: i64) -> Vec<Tick> {
    (from..from + n)
        .map(|i| Tick {
            id: Some(format!("{prefix}{i}")),
            venue: format!("v{}", i % 3),
            market: format!("m{}", i % 5),
            selection: format!("s{}", i % 7),
            price: 2.0 + (i % 100) as f64 / 100.0,
            ts_ms: Some(ts_ms),
        })
        .collect()
}

/// Ingest latencies (µs) of one writer sending 50-tick batches over a store holding
/// `old_rows` expired ticks, while `prune` (a batch size) runs — or, with `None`, for a fixed
/// 2 s. Returns (p50, p99, max, batches, prune ms).
fn prune_run(old_rows: usize, prune: Option<usize>) -> (f64, f64, f64, usize, f64) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("core.db")).unwrap());
    for from in (0..old_rows).step_by(10_000) {
        store
            .insert_ticks(&ticks("old", from, 10_000.min(old_rows - from), 1_000), 0)
            .unwrap();
    }
    store
        .insert_ticks(&ticks("recent", 0, 10_000, 9_000), 0)
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop, measuring) = (store.clone(), stop.clone(), measuring.clone());
        std::thread::spawn(move || {
            let mut lat = Vec::new();
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) {
                let batch = ticks("w", k * 50, 50, 9_500);
                k += 1;
                let t = Instant::now();
                store.insert_ticks(&batch, 0).unwrap();
                if measuring.load(Ordering::Relaxed) {
                    lat.push(t.elapsed().as_secs_f64() * 1e6);
                }
            }
            lat
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    measuring.store(true, Ordering::Relaxed);
    let t = Instant::now();
    match prune {
        Some(batch) => {
            let p = store.prune(5_000, batch).unwrap();
            assert_eq!(p.ticks as usize, old_rows);
        }
        None => std::thread::sleep(Duration::from_secs(2)),
    }
    let took = t.elapsed().as_secs_f64() * 1e3;
    measuring.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let mut lat = writer.join().unwrap();
    lat.sort_by(f64::total_cmp);
    let q = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize];
    (q(0.5), q(0.99), q(1.0), lat.len(), took)
}

fn prune_bench() {
    let old_rows: usize = std::env::var("BENCH_PRUNE_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    println!(
        "## ingest (50-tick batches) while pruning {old_rows} old ticks, vs no prune (3 interleaved runs)"
    );
    let batch: usize = std::env::var("BENCH_PRUNE_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(250);
    let batched = format!("prune, batches of {batch}");
    let variants: [(&str, Option<usize>); 3] = [
        ("no prune", None),
        (&batched, Some(batch)),
        ("prune, one transaction", Some(usize::MAX)),
    ];
    let mut p99 = vec![Vec::new(); variants.len()];
    for run in 1..=3 {
        for (i, (name, prune)) in variants.iter().enumerate() {
            let (p50, q99, max, n, took) = prune_run(old_rows, *prune);
            println!(
                "run {run} {name:<24} ingest p50 {p50:>7.0} µs  p99 {q99:>8.0} µs  max {max:>8.0} µs  ({n} batches in {took:.0} ms)"
            );
            p99[i].push(q99);
        }
    }
    let base = median(p99[0].clone());
    for (i, (name, _)) in variants.iter().enumerate().skip(1) {
        println!(
            "{name}: ingest p99 {:.0} µs = {:.2}× no prune ({base:.0} µs), medians of 3",
            median(p99[i].clone()),
            median(p99[i].clone()) / base
        );
    }
}

/// A `preflight serve` process of this build, killed on drop.
struct Server {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `bin serve` on `config/core.yaml` with `overrides` (YAML lines) appended.
    fn start(bin: &std::path::Path, overrides: &str) -> Server {
        use std::io::BufRead as _;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("bench.yaml");
        let core = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/core.yaml");
        std::fs::write(&config, format!("extends: {}\n{overrides}", core.display())).unwrap();
        // `BENCH_PIN=CPU`: the server runs on that CPU alone (taskset), apart from the load
        // generator (run the bench itself under `taskset -c OTHER`), so the two do not trade
        // places on the cores between runs.
        let mut command = match std::env::var("BENCH_PIN") {
            Ok(cpu) => {
                let mut c = std::process::Command::new("taskset");
                c.args(["-c", &cpu]).arg(bin);
                c
            }
            Err(_) => std::process::Command::new(bin),
        };
        let mut child = command
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap()
            .to_string();
        Server {
            child,
            url,
            _dir: dir,
        }
    }

    /// CPU time (user + system) of the server, threads that ended included, in nanoseconds
    /// (`/proc/PID/stat`, counted in clock ticks of 10 ms: runs of `CPU_RUN` keep that
    /// under 0.5 % of a run).
    fn cpu_ns(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // The fields after the command name, which is in parentheses and may hold spaces.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
        let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
        ticks * 10_000_000
    }
}

/// Quartiles (25 %, 50 %, 75 %) of `v`.
fn quartiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.25), at(0.5), at(0.75))
}

/// A variant's name in the figures: `var` if set (`BENCH_BASELINE_NAME`, `BENCH_OTHER_NAME`),
/// else `default`.
fn label(var: &str, default: &'static str) -> &'static str {
    std::env::var(var).map_or(default, |v| Box::leak(v.into_boxed_str()))
}

async fn cpu_bench() {
    const ACCEPTING: &str = "enabled: true, burst: 1000000000, per_second: 1000000000, exempt: []";
    let base = "shedding: {enabled: false}\nsnapshot: {enabled: false}\n";
    let off = format!("{base}rate_limit: {{enabled: false, exempt: []}}\n");
    let on = format!("{base}rate_limit: {{{ACCEPTING}}}\n");
    let always = format!("{base}rate_limit: {{{ACCEPTING}, headers: always}}\n");
    let shipped = std::path::Path::new(env!("CARGO_BIN_EXE_preflight"));
    let mut servers = vec![
        ("limiter off", Server::start(shipped, &off)),
        ("limiter on (shipped)", Server::start(shipped, &on)),
        (
            "limiter on, headers: always",
            Server::start(shipped, &always),
        ),
    ];
    // (what, numerator, denominator), indices into `servers`.
    let mut pairs = vec![
        ("limiter on / off".to_string(), 1, 0),
        ("on, headers: always / off".to_string(), 2, 0),
    ];
    match std::env::var_os("BENCH_BASELINE_BIN") {
        Some(bin) => {
            let name = label("BENCH_BASELINE_NAME", "limiter on, system, no heap stats");
            pairs.push((format!("shipped / {name}"), 1, servers.len()));
            servers.push((name, Server::start(bin.as_ref(), &on)));
        }
        None => println!(
            "(BENCH_BASELINE_BIN unset: the heap statistics' cost is not measured; scripts/bench-heap-cost)"
        ),
    }
    if let Some(bin) = std::env::var_os("BENCH_OTHER_BIN") {
        let name = label("BENCH_OTHER_NAME", "limiter on, BENCH_OTHER_BIN");
        if let Some(&(_, _, baseline)) = pairs.get(2) {
            pairs.push((
                format!("{name} / {}", servers[baseline].0),
                servers.len(),
                baseline,
            ));
        }
        servers.push((name, Server::start(bin.as_ref(), &on)));
    }
    for (_, s) in &servers {
        let _ = load(&format!("{}/healthz", s.url)).await; // warm-up
    }
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(RUNS);
    let mut cpu = vec![Vec::new(); servers.len()];
    let mut rate = vec![Vec::new(); servers.len()];
    for run in 0..runs {
        for k in 0..servers.len() {
            let i = (run + k) % servers.len();
            let s = &servers[i].1;
            let url = format!("{}/healthz", s.url);
            let before = s.cpu_ns();
            let (r, _, requests) = load_for(&url, CPU_RUN).await;
            let after = s.cpu_ns();
            cpu[i].push((after - before) as f64 / requests as f64);
            rate[i].push(r);
        }
    }
    println!(
        "## The server as a process ({runs} interleaved runs of {CPU_RUN:?}, {CONNS} connections, /healthz)"
    );
    for (i, (name, _)) in servers.iter().enumerate() {
        println!(
            "{name:<32} {:>8.0} req/s  {:>6.2} µs CPU/request (medians)",
            median(rate[i].clone()),
            median(cpu[i].clone()) / 1000.0
        );
    }
    let ratio = |v: &[Vec<f64>], a: usize, b: usize| -> Vec<f64> {
        (0..runs).map(|r| v[a][r] / v[b][r]).collect()
    };
    for (what, a, b) in &pairs {
        let (c25, c50, c75) = quartiles(ratio(&cpu, *a, *b));
        let (t25, t50, t75) = quartiles(ratio(&rate, *a, *b));
        println!(
            "{what:<32} CPU/request {c50:.3} (IQR {c25:.3}–{c75:.3}), throughput {t50:.3} (IQR {t25:.3}–{t75:.3})"
        );
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    match std::env::var("BENCH_ONLY").as_deref() {
        Ok("cpu") => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(cpu_bench());
            return;
        }
        Ok("prune") => {
            prune_bench();
            return;
        }
        Ok("http") => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(http_benches());
            return;
        }
        Ok("limiter") => {
            check_bench();
            memory_bench();
            return;
        }
        Ok(only) if only.starts_with("memory-") => {
            memory_family(&only["memory-".len()..]);
            return;
        }
        _ => {}
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(http_benches());
    drop(rt);
    check_bench();
    memory_bench();
    status_bench();
    prune_bench();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(cpu_bench());
}
