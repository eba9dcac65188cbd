//! `preflight check`: the real binary against real targets on loopback (spawned core
//! service, a closed port, a socket that never answers, a tiny fixed-answer server), and
//! the renderers on a fixed report.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use preflight::outcome::{Observation, Status};
use preflight::policy::Severity;
use preflight::report::{
    self, CheckResult, Counts, Format, PolicyInfo, RenderOpts, Report, TargetInfo, Verdict,
    WaiverInfo,
};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/policies/engine").join(name)
}

fn preflight() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_preflight"));
    c.current_dir(root()).env_remove("PREFLIGHT_ADMIN_TOKEN");
    c
}

struct Run {
    code: i32,
    json: serde_json::Value,
    stderr: String,
}

fn check_json(args: &[&str]) -> Run {
    let out: Output = preflight()
        .arg("check")
        .args(args)
        .args(["--format", "json", "--no-progress"])
        .output()
        .expect("running preflight");
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

fn result<'a>(run: &'a Run, id: &str) -> &'a serde_json::Value {
    run.json["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no result {id} in {:#}", run.json))
}

/// A port on 127.0.0.1 that nothing listens on, held (bound, never listening) while the
/// value lives: no other process can take it between choosing it and using it, as one could
/// after a bind-then-drop.
pub(crate) struct ClosedPort {
    _socket: tokio::net::TcpSocket,
    pub(crate) port: u16,
}

pub(crate) fn closed_port() -> ClosedPort {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    ClosedPort {
        _socket: socket,
        port,
    }
}

/// Accepts connections on a thread until `for_how_long` has passed, handing each to `f`.
fn serve_for(for_how_long: Duration, f: fn(TcpStream, &mut Vec<TcpStream>)) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let end = Instant::now() + for_how_long;
        let mut held = Vec::new();
        while Instant::now() < end {
            match l.accept() {
                Ok((s, _)) => {
                    let _ = s.set_nonblocking(false);
                    f(s, &mut held);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    port
}

#[test]
fn remote_target_that_answers_is_go() {
    let port = serve_for(Duration::from_secs(20), |mut s, _| {
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut buf = [0u8; 2048];
        let _ = s.read(&mut buf);
        let _ = s.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
        );
    });
    let url = format!("http://127.0.0.1:{port}");
    let run = check_json(&[
        fixture("remote-http.yaml").to_str().unwrap(),
        "--target",
        &url,
    ]);
    assert_eq!(run.code, 0, "{:#} {}", run.json, run.stderr);
    assert_eq!(run.json["verdict"], "GO");
    assert_eq!(run.json["target"]["spawned"], false);
    assert_eq!(
        run.json["target"]["capabilities"],
        serde_json::json!(["http"])
    );
    let r = result(&run, "healthz");
    assert_eq!(r["status"], "PASS");
    // The check came from its own source address: a fresh 127.x.y.z per run, outside
    // 127.0.0.0/16.
    let from: std::net::Ipv4Addr = r["sent"][0]
        .as_str()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let o = from.octets();
    assert!(o[0] == 127 && o[1] != 0, "{r:#}");
}

#[test]
fn target_down_is_error_and_no_go_quickly() {
    let closed = closed_port();
    let url = format!("http://127.0.0.1:{}", closed.port);
    let run = check_json(&[
        fixture("remote-http.yaml").to_str().unwrap(),
        "--target",
        &url,
    ]);
    assert_eq!(run.code, 1, "{:#}", run.json);
    assert_eq!(run.json["verdict"], "NO-GO");
    let r = result(&run, "healthz");
    assert_eq!(r["status"], "ERROR");
    assert!(
        r["summary"].as_str().unwrap().contains("cannot connect"),
        "{r:#}"
    );
    assert!(
        run.json["verdict_reason"]
            .as_str()
            .unwrap()
            .contains("healthz (ERROR)"),
        "{:#}",
        run.json
    );
    // Refused at once, not retried until the deadline.
    assert!(
        !r["summary"].as_str().unwrap().contains("deadline"),
        "{r:#}"
    );
}

/// Regression: a target that accepts connections but never answers must not hang the run;
/// the check's `timeout: 2s` cuts it off. The server holds the connections for 30 s: a check
/// not cut off by its deadline would end when they close, with a transport error instead.
#[test]
fn a_silent_target_is_cut_off_at_the_deadline() {
    let _timing = crate::support::timing();
    let port = serve_for(Duration::from_secs(30), |s, held| held.push(s));
    let url = format!("http://127.0.0.1:{port}");
    let run = check_json(&[
        fixture("remote-http.yaml").to_str().unwrap(),
        "--target",
        &url,
    ]);
    assert_eq!(run.code, 1, "{:#}", run.json);
    let r = result(&run, "healthz");
    assert_eq!(r["status"], "ERROR", "{r:#}");
    // The probe's own cut-off or the engine's, whichever fires first at the same deadline.
    assert!(r["summary"].as_str().unwrap().contains("deadline"), "{r:#}");
    // Not cut short either: it waited for the whole deadline.
    let ms = r["duration_ms"].as_u64().unwrap();
    assert!(ms >= 2000, "deadline 2s, cut off after {ms} ms");
}

#[test]
fn missing_capabilities_skip_and_make_it_inconclusive() {
    let closed = closed_port();
    let url = format!("http://127.0.0.1:{}", closed.port);
    let run = check_json(&[
        fixture("needs-local.yaml").to_str().unwrap(),
        "--target",
        &url,
    ]);
    assert_eq!(run.code, 3, "{:#} {}", run.json, run.stderr);
    assert_eq!(run.json["verdict"], "INCONCLUSIVE");
    for id in ["store-counts", "status-line"] {
        let r = result(&run, id);
        assert_eq!(r["status"], "SKIP", "{r:#}");
        assert!(
            r["summary"]
                .as_str()
                .unwrap()
                .contains("needs the `sqlite` capability"),
            "{r:#}"
        );
        // …and says which policy field gives it.
        assert!(
            r["summary"].as_str().unwrap().contains("`target.sqlite`"),
            "{r:#}"
        );
        assert_eq!(r["blocking"], true);
    }
}

#[test]
fn an_invalid_policy_is_exit_2_and_nothing_runs() {
    let out = preflight()
        .args(["check", "--no-progress", "--target", "http://127.0.0.1:9"])
        .arg(fixture("invalid.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "no report when nothing ran");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("policy/bad-regex"), "{err}");
    assert!(err.contains("sqlite/no-expectation"), "{err}");
    assert!(err.contains("invalid.yaml:"), "{err}");
}

#[test]
fn usage_errors_are_exit_2() {
    let p = fixture("remote-http.yaml");
    let p = p.to_str().unwrap();
    for args in [
        vec![p, "--target", "http://127.0.0.1:9", "--only", "nope"],
        vec![p, "--target", "127.0.0.1:9"],
    ] {
        let out = preflight().arg("check").args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty());
    }
}

// ---- against the spawned core service ----

#[test]
fn smoke_policy_is_go_on_the_spawned_service() {
    let _timing = crate::support::timing();
    let run = check_json(&[fixture("smoke.yaml").to_str().unwrap()]);
    assert_eq!(run.code, 0, "{:#} {}", run.json, run.stderr);
    assert_eq!(run.json["target"]["spawned"], true);
    assert_eq!(
        run.json["target"]["capabilities"],
        serde_json::json!(["http", "admin", "process", "log_dir", "sqlite"])
    );
    for r in run.json["results"].as_array().unwrap() {
        assert_eq!(r["status"], "PASS", "{r:#}");
    }
    // The spawned service was stopped: its address no longer accepts connections.
    let addr = run.json["target"]["url"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .to_string();
    let end = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(&addr).is_ok() {
        assert!(Instant::now() < end, "{addr} still accepts after the run");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn leaking_detectors_are_no_go_before_hardening() {
    let _timing = crate::support::timing();
    let run = check_json(&[
        fixture("leak.yaml").to_str().unwrap(),
        "--config",
        "config/before-hardening.yaml",
    ]);
    assert_eq!(run.code, 1, "{:#} {}", run.json, run.stderr);
    let r = result(&run, "detectors-built-once");
    assert_eq!(r["status"], "FAIL", "{r:#}");
    let obs = r["observations"].as_array().unwrap();
    let last = obs.last().unwrap();
    assert_eq!(last["expected"], "== 4");
    assert_ne!(last["observed"], "4");
    // Same policy on the hardened profile: GO.
    let run = check_json(&[fixture("leak.yaml").to_str().unwrap()]);
    assert_eq!(run.code, 0, "{:#} {}", run.json, run.stderr);
}

// ---- renderers on a fixed report ----

fn obs(what: &str, expected: &str, observed: &str, ok: bool) -> Observation {
    Observation::new(what, expected, observed, ok)
}

fn res(id: &str, kind: &str, severity: Severity, status: Status) -> CheckResult {
    CheckResult {
        attempts: 1,
        duration_ms: 12,
        requests: 1,
        ..CheckResult::new(id, kind, severity, status)
    }
}

/// A report with every status, for the renderers' snapshots (here and in `annotations`).
pub(crate) fn fixed_report() -> Report {
    let mut pass = res("healthz", "http", Severity::High, Status::Pass);
    pass.summary = "GET /healthz answered 200 in 1.2 ms".into();
    pass.sent = vec!["GET /healthz from 127.0.1.1".into()];
    pass.observations = vec![obs("status", "200", "200", true)];

    let mut fail = res(
        "detectors-built-once",
        "metric",
        Severity::Critical,
        Status::Fail,
    );
    fail.description = Some("Detectors are built once & reused <not per build>.".into());
    fail.blocking = true;
    fail.duration_ms = 2345;
    fail.requests = 22;
    fail.summary = "detector_instances = 84".into();
    fail.sent = vec!["POST /v1/graph/build ×20".into(), "GET /metrics".into()];
    fail.observations = vec![
        obs("workload answered 2xx", "20/20", "20× 200", true),
        obs("detector_instances", "== 4", "84", false),
    ];
    fail.evidence = serde_json::json!({"before": null, "after": 84.0});
    fail.location = Some(report::Location {
        file: "policies/production-hardening.yaml".into(),
        line: 88,
        col: 9,
    });

    let mut err = res("correlations", "http", Severity::High, Status::Error);
    err.blocking = true;
    err.duration_ms = 2001;
    err.summary =
        "http://127.0.0.1:PORT/v1/correlations?market=m1&window=5m: no answer in time".into();
    // A check of a built-in policy: annotations name no file for it.
    err.location = Some(report::Location {
        file: "builtin:policies/smoke.yaml".into(),
        line: 20,
        col: 9,
    });

    let mut skip = res("store-counts", "sqlite", Severity::High, Status::Skip);
    skip.blocking = true;
    skip.attempts = 0;
    skip.requests = 0;
    skip.duration_ms = 0;
    skip.summary =
        "needs the `sqlite` capability: set `target.sqlite` or let preflight spawn the service"
            .into();

    let mut waived = res("log-retention", "file", Severity::High, Status::Fail);
    waived.waived = Some("logs ship to remote syslog | since 2026-10".into());
    waived.summary = "logs/core.log.2020-01-01 exists".into();
    waived.observations = vec![obs("logs/core.log.2020-01-01 exists", "no", "yes", false)];

    let mut low = res("status-line", "command", Severity::Low, Status::Fail);
    low.summary = "`preflight` exited 1 in 3.0 ms".into();
    low.observations = vec![
        obs("exit code", "0", "1", false),
        obs(
            "stdout",
            "matches /^ok/",
            "\"<b>\\\"quoted\\\"</b>\\u{1}\"",
            false,
        ),
    ];

    Report {
        schema_version: report::SCHEMA_VERSION,
        tool: "preflight 0.1.0".into(),
        policy: PolicyInfo {
            name: "production-hardening".into(),
            description: Some("Pre-deploy gate for the core service.".into()),
            files: vec!["policies/production-hardening.yaml".into()],
        },
        target: TargetInfo {
            url: "http://127.0.0.1:PORT".into(),
            spawned: true,
            config: Some("config/core.yaml".into()),
            capabilities: ["http", "admin", "process", "log_dir", "sqlite"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        },
        started_at: "2026-01-01T00:00:00Z".into(),
        duration_ms: 4567,
        verdict: Verdict::NoGo,
        verdict_reason: "2 checks at a blocking severity did not pass: detectors-built-once (FAIL), correlations (ERROR) (1 failure waived: log-retention).".into(),
        block_on: vec![Severity::Critical, Severity::High],
        counts: Counts {
            pass: 1,
            fail: 3,
            error: 1,
            skip: 1,
            inconclusive: 0,
            waived: 1,
        },
        waivers: vec![
            WaiverInfo {
                check: "log-retention".into(),
                reason: "logs ship to remote syslog | since 2026-10".into(),
                expires: "2027-01-31".into(),
                state: "active".into(),
            },
            WaiverInfo {
                check: "old-thing".into(),
                reason: "was fine last year".into(),
                expires: "2025-01-31".into(),
                state: "expired".into(),
            },
        ],
        results: vec![pass, fail, err, skip, waived, low],
        canary: None,
        fleet: None,
    }
}

fn render(format: Format, color: bool) -> String {
    let mut buf = Vec::new();
    report::write(format, &fixed_report(), &mut buf, &RenderOpts { color }).unwrap();
    String::from_utf8(buf).unwrap()
}

#[test]
fn human_report_snapshot() {
    let text = render(Format::Human, false);
    assert!(
        text.trim_end()
            .lines()
            .last()
            .unwrap()
            .starts_with("NO-GO — "),
        "verdict last"
    );
    assert!(!text.contains('\x1b'), "no colour unless asked");
    assert!(render(Format::Human, true).contains("\x1b[1m\x1b[31mNO-GO\x1b[0m"));
    insta::assert_snapshot!("human", text);
}

#[test]
fn json_report_snapshot_and_schema() {
    let text = render(Format::Json, false);
    insta::assert_snapshot!("json", text);
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("docs/report.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    // And a document that breaks the contract is caught.
    let mut bad = value.clone();
    bad["verdict"] = "MAYBE".into();
    assert!(!validator.is_valid(&bad));
}

#[test]
fn report_schema_is_up_to_date() {
    let path = root().join("docs/report.schema.json");
    let generated = report::json::schema_text();
    if std::env::var_os("PREFLIGHT_WRITE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/report.schema.json is stale: run `PREFLIGHT_WRITE_SCHEMA=1 cargo test report_schema_is_up_to_date` and commit it"
    );
}

#[test]
fn junit_report_snapshot_parses_as_xml() {
    let text = render(Format::Junit, false);
    insta::assert_snapshot!("junit", text);
    let doc = roxmltree::Document::parse(&text).expect("well-formed XML");
    let suites: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("testsuite"))
        .collect();
    assert_eq!(suites.len(), 1);
    let cases: Vec<_> = suites[0]
        .children()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    assert_eq!(cases.len(), 6);
    let child = |i: usize| {
        cases[i]
            .children()
            .find(|n| n.is_element())
            .map(|n| n.tag_name().name().to_string())
    };
    assert_eq!(child(0), None);
    assert_eq!(child(1).as_deref(), Some("failure"));
    assert_eq!(child(2).as_deref(), Some("error"));
    assert_eq!(child(3).as_deref(), Some("skipped"));
    // Escaped text comes back intact.
    let failure = cases[1].children().find(|n| n.is_element()).unwrap();
    assert!(
        failure
            .text()
            .unwrap()
            .contains("detector_instances: expected == 4, observed 84")
    );
    let err = cases[2].children().find(|n| n.is_element()).unwrap();
    assert!(
        err.attribute("message")
            .unwrap()
            .contains("market=m1&window=5m")
    );
}

#[test]
fn markdown_report_snapshot() {
    let text = render(Format::Markdown, false);
    assert!(text.starts_with("### ❌ **NO-GO**"));
    assert_eq!(text.matches("<details>").count(), 5);
    insta::assert_snapshot!("markdown", text);
}
