//! `preflight canary` end to end: two spawned instances of the core service judged GO, each
//! negative-control profile judged NO-GO naming the metric it breaks, too little traffic
//! INCONCLUSIVE, and a metric read through a real Prometheus.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::prom_server;
use crate::support::{self, Service};

/// A quicker traffic than the default policy's (1 600 judged requests per side in 24 s):
/// 80/s per version over 16 addresses each, below core.yaml's 10/s per address.
fn fast_policy(dir: &Path, extra_metrics: &str, prometheus: &str) -> PathBuf {
    let p = dir.join("canary-test.yaml");
    std::fs::write(
        &p,
        format!(
            "version: 1\nname: canary-test\ncanary:\n  traffic:\n    rate: 80/s\n    duration: 24s\n    \
             interval: 10s\n    warmup: 4s\n    connections: 16\n  metrics:\n    \
             - {{name: latency, source: latency}}\n    - {{name: tail, source: tail}}\n    \
             - {{name: errors, source: errors, critical: true}}\n{extra_metrics}{prometheus}"
        ),
    )
    .unwrap();
    p
}

struct Run {
    code: i32,
    json: Value,
    stderr: String,
}

impl Run {
    fn status(&self, id: &str) -> String {
        self.json["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("no result {id}: {:#}", self.json))["status"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn explain(&self) -> String {
        let mut s = format!(
            "exit {} — {} {}\n",
            self.code, self.json["verdict"], self.json["verdict_reason"]
        );
        for r in self.json["results"].as_array().into_iter().flatten() {
            s += &format!("  {} {}: {}\n", r["status"], r["id"], r["summary"]);
        }
        s + &self.stderr
    }
}

fn canary(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_preflight"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("canary")
        .args(args)
        .args(["--format", "json", "--no-progress"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let json =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stderr}"));
    Run {
        code: out.status.code().unwrap_or(-1),
        json,
        stderr,
    }
}

#[test]
fn two_instances_of_core_are_go() {
    let _timing = support::timing();
    let dir = tempfile::tempdir().unwrap();
    let policy = fast_policy(dir.path(), "", "");
    let r = canary(&[policy.to_str().unwrap()]);
    assert_eq!(
        (r.code, r.json["verdict"].as_str()),
        (0, Some("GO")),
        "{}",
        r.explain()
    );
    let c = &r.json["canary"];
    assert_eq!(c["score"], 100.0, "{}", r.explain());
    assert_eq!(c["intervals"].as_array().unwrap().len(), 2, "{c:#}");
    // Every judged request is counted, none lost: 80/s for 24 s per side.
    assert_eq!(c["requests"], serde_json::json!([1920, 1920]), "{c:#}");
    // The judgement explains itself: n, effect, interval, p.
    let latency = &r.json["results"][1];
    assert_eq!(latency["id"], "latency");
    for part in ["n = 1600 / 1600", "HL interval", "Mann–Whitney p"] {
        assert!(
            latency["summary"].as_str().unwrap().contains(part),
            "{latency:#}"
        );
    }
}

#[test]
fn each_negative_control_is_no_go_naming_its_metric() {
    let _timing = support::timing();
    let dir = tempfile::tempdir().unwrap();
    let policy = fast_policy(dir.path(), "", "");
    let policy = policy.to_str().unwrap();
    // (profile, the metric that must fail, metrics that must not)
    let cases = [
        ("candidate-slow.yaml", "latency", vec!["errors"]),
        ("candidate-tail.yaml", "tail", vec!["latency", "errors"]),
        ("candidate-errors.yaml", "errors", vec!["latency"]),
    ];
    for (profile, failing, passing) in cases {
        let config = support::config(profile);
        let r = canary(&[policy, "--canary-config", config.to_str().unwrap()]);
        assert_eq!(
            (r.code, r.json["verdict"].as_str()),
            (1, Some("NO-GO")),
            "{profile}: {}",
            r.explain()
        );
        assert_eq!(r.status(failing), "FAIL", "{profile}: {}", r.explain());
        for p in passing {
            assert_eq!(r.status(p), "PASS", "{profile}, {p}: {}", r.explain());
        }
        assert!(
            r.json["verdict_reason"].as_str().unwrap().contains(failing),
            "{profile}: {}",
            r.explain()
        );
    }
}

#[test]
fn too_little_traffic_is_inconclusive_with_the_counts() {
    let r = canary(&[
        "--rate",
        "5/s",
        "--duration",
        "6s",
        "--interval",
        "3s",
        "--warmup",
        "1s",
    ]);
    assert_eq!(
        (r.code, r.json["verdict"].as_str()),
        (3, Some("INCONCLUSIVE")),
        "{}",
        r.explain()
    );
    assert_eq!(r.status("latency"), "INCONCLUSIVE", "{}", r.explain());
    let summary = r.json["results"][1]["summary"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(summary.contains("too few"), "{summary}");
    assert!(summary.contains("baseline 25, canary 25"), "{summary}");
}

#[test]
fn bad_canary_settings_are_usage_errors() {
    let out = Command::new(env!("CARGO_BIN_EXE_preflight"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["canary", "--duration", "5s", "--warmup", "5s"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("canary/traffic/warmup"), "{stderr}");
}

/// A metric read through a real Prometheus scraping both instances: `injected_faults_active`
/// is 0 on core and 1 on a candidate, so the PromQL metric (critical here) must say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promql_metric_is_read_through_a_real_prometheus() {
    let _timing = support::timing();
    let dir = tempfile::tempdir().unwrap();
    let base = Service::start(&support::config("core.yaml"), &dir.path().join("b"));
    let cand = Service::start(
        &support::config("candidate-slow.yaml"),
        &dir.path().join("c"),
    );
    let Some(prom) = prom_server::start(&[("canary", &base.url), ("canary", &cand.url)]).await
    else {
        return;
    };
    prom.wait_for(
        "canary",
        2,
        r#"injected_faults_active{job="canary"}"#,
        std::time::Duration::from_secs(60),
    )
    .await;
    let policy = fast_policy(
        dir.path(),
        "    - name: faults-active\n      source: promql\n      critical: true\n      \
         query: 'injected_faults_active{job=\"canary\",instance=\"{{instance}}\"}'\n",
        &format!("  prometheus: {{url: \"{}\"}}\n", prom.url),
    );
    let (b, c) = (base.url.clone(), cand.url.clone());
    let r = tokio::task::spawn_blocking(move || {
        canary(&[policy.to_str().unwrap(), "--baseline", &b, "--canary", &c])
    })
    .await
    .unwrap();
    assert_eq!(r.code, 1, "{}", r.explain());
    assert_eq!(r.status("faults-active"), "FAIL", "{}", r.explain());
    let faults = r.json["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == "faults-active")
        .unwrap();
    assert_eq!(faults["evidence"]["baseline"], 0.0, "{faults:#}");
    assert_eq!(faults["evidence"]["canary"], 1.0, "{faults:#}");
    assert_eq!(faults["kind"], "canary/promql");
}

#[test]
fn an_unreachable_version_is_a_clear_error_not_a_hang() {
    let out = Command::new(env!("CARGO_BIN_EXE_preflight"))
        .args([
            "canary",
            "--baseline",
            "http://127.0.0.1:9",
            "--canary",
            "http://127.0.0.1:9",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("baseline: connecting to 127.0.0.1:9"),
        "{stderr}"
    );
}
