//! `preflight init --target`: the policy it writes lints clean and says GO against the
//! service it looked at — the core service (with `--probe-limits`, a rate limit found), and a
//! service no one here wrote: Debian's nginx serving a static file.

use std::path::Path;
use std::process::Command;

use crate::support::{Nginx, Service, config};

fn preflight(cwd: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_preflight"))
        .current_dir(cwd)
        .env_remove("PREFLIGHT_ADMIN_TOKEN")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// init, then lint and check what it wrote: the policy text and the JSON report.
fn init_lint_check(url: &str, extra: &[&str]) -> (String, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["init", "--target", url];
    args.extend_from_slice(extra);
    let (code, _, err) = preflight(dir.path(), &args);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("wrote preflight.yaml"), "{err}");
    let text = std::fs::read_to_string(dir.path().join("preflight.yaml")).unwrap();
    let (code, out, err) = preflight(dir.path(), &["lint", "preflight.yaml"]);
    assert_eq!(code, 0, "lint: {out}{err}\n{text}");
    assert!(out.contains("no problems"), "{out}\n{text}");
    let (code, out, err) = preflight(
        dir.path(),
        &[
            "check",
            "preflight.yaml",
            "--format",
            "json",
            "--no-progress",
        ],
    );
    let report: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {err}"));
    assert_eq!(code, 0, "{report:#}\n{text}");
    assert_eq!(report["verdict"], "GO");
    for r in report["results"].as_array().unwrap() {
        assert_eq!(r["status"], "PASS", "{r:#}\n{text}");
    }
    // Running init again without --force keeps the reviewed file.
    let (code, _, err) = preflight(dir.path(), &["init", "--target", url]);
    assert_eq!(code, 2);
    assert!(err.contains("exists; pass --force"), "{err}");
    (text, report)
}

fn ids(report: &serde_json::Value) -> Vec<String> {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn init_against_the_core_service_writes_a_policy_that_says_go() {
    let _timing = crate::support::timing();
    let data = tempfile::tempdir().unwrap();
    let svc = Service::start(&config("core.yaml"), data.path());
    let (text, report) = init_lint_check(
        &svc.url,
        &["--probe-limits", "/v1/correlations?market=m1&window=1h"],
    );
    assert_eq!(
        ids(&report),
        [
            "healthz",
            "readyz",
            "metrics",
            "memory-bounded",
            "http-requests-total-exported",
            "rate-limit"
        ]
    );
    // The limit it found is the configured one (burst 100, 10/s), within what a loaded
    // machine lets a burst measure.
    let burst: u32 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("burst: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!((85..=115).contains(&burst), "burst {burst}\n{text}");
    assert!(
        text.contains("refill: 10/s")
            || text.contains("refill: 9/s")
            || text.contains("refill: 11/s"),
        "{text}"
    );
    assert!(text.contains("# review:"), "{text}");
}

#[test]
fn init_against_nginx_serving_a_static_file_writes_a_policy_that_says_go() {
    let nginx = Nginx::start("", "root {dir}/www;");
    let url = format!("http://{}:8080", nginx.ip);
    let (text, report) = init_lint_check(&url, &[]);
    // Only `/` answers 2xx: one check, for the page and its content type.
    assert_eq!(ids(&report), ["root"], "{text}");
    assert!(text.contains("content-type: \"^text/html\""), "{text}");
}

#[test]
fn init_probe_limits_writes_the_algorithm_it_found_on_express_rate_limit() {
    // express + express-rate-limit (npm): a fixed window of 20 per 4 s on /api, nothing else.
    let dir = crate::limiters::fixtures().join("express");
    assert!(
        dir.join("node_modules/express-rate-limit").exists(),
        "express-rate-limit is not installed (.ci/run runs `npm ci` in {})",
        dir.display()
    );
    let mut cmd = Command::new("node");
    cmd.current_dir(&dir)
        .args(["server.js", "127.0.0.1", "20", "4000", "draft-7"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let line = crate::support::first_line(
        child.stdout.take().unwrap(),
        std::time::Duration::from_secs(30),
    );
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();
    let result = std::panic::catch_unwind(|| init_lint_check(&url, &["--probe-limits", "/api"]));
    let _ = child.kill();
    let _ = child.wait();
    let (text, report) = result.unwrap();
    assert_eq!(ids(&report), ["rate-limit"], "{text}");
    assert!(
        text.contains("    algorithm: fixed_window\n    limit: 20\n    window: 4s\n"),
        "{text}"
    );
}
