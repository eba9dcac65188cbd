//! Policy loading speed: generates a 1 000-check policy (a mix of kinds, dependencies and
//! waivers), then times the library loader and the `preflight lint` binary on it.
//!
//! Run: `cargo bench --bench lint` (release build). Goal: `preflight lint` under 100 ms.
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const CHECKS: usize = 1_000;

fn generate() -> String {
    let mut s = String::from(
        "# yaml-language-server: $schema=../docs/policy.schema.json\nversion: 1\nname: bench\n",
    );
    s.push_str("target:\n  url: http://127.0.0.1:8080\nwaivers:\n");
    for i in (0..CHECKS).step_by(100) {
        let _ = writeln!(
            s,
            "  - check: c{i}\n    reason: generated\n    expires: 2099-01-01"
        );
    }
    s.push_str("checks:\n");
    for i in 0..CHECKS {
        let dep = if i > 0 && i % 10 != 0 {
            format!("\n    depends_on: [c{}]", i - 1)
        } else {
            String::new()
        };
        let body = match i % 5 {
            0 => "kind: http\n    request: GET /healthz\n    expect:\n      status: 200\n      latency_below: 50ms".to_string(),
            1 => "kind: metric\n    expect: detector_instances == 4".to_string(),
            2 => "kind: rate_limit\n    request: GET /v1/correlations?market=m1\n    burst: 100\n    refill: 10/s\n    tolerance: 5%".to_string(),
            3 => "kind: query_timeout\n    budget: 50ms\n    retry: {within: 2s, every: 100ms}".to_string(),
            _ => "kind: memory_growth\n    request: POST /v1/graph/build\n    iterations: 500\n    max_growth_per_iteration: 256B".to_string(),
        };
        let _ = writeln!(s, "  - id: c{i}\n    severity: high{dep}\n    {body}");
    }
    s
}

fn time<F: FnMut()>(runs: u32, mut f: F) -> (Duration, Duration) {
    f(); // warm-up (schema compilation happens once per process)
    let mut best = Duration::MAX;
    let start = Instant::now();
    for _ in 0..runs {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed());
    }
    (start.elapsed() / runs, best)
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("bench.yaml");
    let text = generate();
    std::fs::write(&path, &text).unwrap();
    let lines = text.lines().count();

    let loaded = preflight::policy::load(std::slice::from_ref(&path)).unwrap();
    assert_eq!(loaded.policy.checks.len(), CHECKS);

    let (mean, best) = time(20, || {
        preflight::policy::load(std::slice::from_ref(&path)).unwrap();
    });
    println!(
        "library load: {CHECKS} checks, {lines} lines: mean {:.2} ms, best {:.2} ms, {:.1} µs/check",
        mean.as_secs_f64() * 1e3,
        best.as_secs_f64() * 1e3,
        mean.as_secs_f64() * 1e6 / CHECKS as f64
    );

    let bin = env!("CARGO_BIN_EXE_preflight");
    let (mean, best) = time(10, || {
        let out = std::process::Command::new(bin)
            .arg("lint")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    });
    println!(
        "`preflight lint` (process): mean {:.2} ms, best {:.2} ms, {:.1} µs/check (goal < 100 ms)",
        mean.as_secs_f64() * 1e3,
        best.as_secs_f64() * 1e3,
        mean.as_secs_f64() * 1e6 / CHECKS as f64
    );
}
