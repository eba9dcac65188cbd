//! Reaching a target the way a deployment is reached: fresh client addresses per run, a
//! server that closes every connection, IPv6 and host names, headers, and (when the machine
//! allows network namespaces) a target on another host's address.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::support;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// One `preflight check … --format json` run.
pub struct Run {
    pub code: i32,
    pub json: Value,
    pub stderr: String,
}

impl Run {
    pub fn result(&self, id: &str) -> &Value {
        self.json["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("no result {id} in {:#}", self.json))
    }

    /// `id → status` of every result.
    pub fn statuses(&self) -> std::collections::BTreeMap<String, String> {
        self.json["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["id"].as_str().unwrap().to_string(),
                    r["status"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }
}

/// Runs `preflight check ARGS --format json` with `env` set (and nothing inherited that
/// would change the target), from the project root.
pub fn check_json(args: &[&str], env: &[(&str, &str)]) -> Run {
    check_json_with(Command::new(env!("CARGO_BIN_EXE_preflight")), args, env)
}

/// As [`check_json`], with the command to start from (e.g. `ip netns exec … preflight`).
pub fn check_json_with(mut cmd: Command, args: &[&str], env: &[(&str, &str)]) -> Run {
    cmd.current_dir(root())
        .arg("check")
        .args(args)
        .args(["--format", "json", "--no-progress"])
        .env_remove("PREFLIGHT_ADMIN_TOKEN")
        .env_remove("PREFLIGHT_TARGET_URL")
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out: Output = cmd.output().expect("running preflight");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not a JSON report ({e}); stderr: {stderr}\nstdout: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    Run {
        code: out.status.code().unwrap_or(-1),
        json,
        stderr,
    }
}

/// Regression (issue 15, "a false NO-GO on a second run"): the second of two back-to-back
/// runs of the remote example FAILed `rate_limit` ("21 of 120 accepted"), because both runs
/// sent from the same 127.0.x.y addresses and the first run's bucket had not refilled.
#[test]
fn two_back_to_back_runs_against_one_service_are_both_go() {
    let _t = support::timing();
    let dir = tempfile::tempdir().unwrap();
    let svc = support::Service::start(&support::config("core.yaml"), dir.path());
    let env = [
        ("PREFLIGHT_TARGET_URL", svc.url.as_str()),
        ("PREFLIGHT_ADMIN_TOKEN", svc.token.as_str()),
    ];
    let policy = "policies/examples/remote-target.yaml";
    let first = check_json(&[policy], &env);
    let second = check_json(&[policy], &env);
    for (n, run) in [("first", &first), ("second", &second)] {
        assert_eq!(
            run.json["verdict"],
            "GO",
            "{n} run: {:?}\n{:#}\n{}",
            run.statuses(),
            run.result("per-ip-rate-limit"),
            run.stderr
        );
        assert_eq!(run.code, 0);
    }
    // The two runs sent from different addresses.
    let from = |run: &Run| -> String {
        let sent = run.result("per-ip-rate-limit")["sent"][0].as_str().unwrap();
        sent.split(" from ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_string()
    };
    assert_ne!(from(&first), from(&second));
}
