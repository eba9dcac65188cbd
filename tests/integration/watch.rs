//! `preflight watch` (issue 12), the real binary against real services: a real Prometheus
//! scraping it sees a blocking check flip to FAIL and the alert rule of docs/alerts.yaml
//! turn pending; a scheduled disturbing check runs on its schedule and never beside another
//! check of its instance; SIGTERM ends watch with 0, and a killed instance turns to ERROR
//! rows while watch keeps serving. Every wait polls against a deadline.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use preflight::probe::promql::QueryResult;
use serde_json::{Value, json};

use crate::prom_server::{self, Extra};
use crate::reach::not_run_here;
use crate::support::*;

/// How long a state may take to show on a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(90);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A running `preflight watch`; killed on drop.
struct Watch {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    url: String,
    stderr: PathBuf,
}

impl Watch {
    /// Starts `preflight watch ARGS --listen 127.0.0.1:0` and waits for its listening line.
    fn start(dir: &Path, args: &[&str]) -> Watch {
        let stderr = dir.join("watch.stderr");
        let err = std::fs::File::create(&stderr).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_preflight"))
            .arg("watch")
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .env_remove("PREFLIGHT_ADMIN_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawn preflight watch");
        let mut w = Watch {
            child,
            url: String::new(),
            stderr,
        };
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let log = w.log();
            if let Some(url) = log.lines().find_map(|l| {
                l.strip_prefix("watch: listening on ")
                    .and_then(|r| r.split_whitespace().next())
            }) {
                w.url = url.to_string();
                return w;
            }
            assert!(
                w.child.try_wait().unwrap().is_none(),
                "watch exited before listening:\n{log}"
            );
            assert!(Instant::now() < end, "watch did not listen:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    async fn get(&self, path: &str) -> String {
        crate::support::get_text(&format!("{}{path}", self.url)).await
    }

    async fn document(&self) -> Value {
        serde_json::from_str(&self.get("/report.json").await).unwrap()
    }

    /// Polls `/report.json` until `ok` holds, or panics at the deadline with the last one.
    async fn wait_for(&self, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let end = Instant::now() + DEADLINE;
        loop {
            let doc = self.document().await;
            if ok(&doc) {
                return doc;
            }
            assert!(
                Instant::now() < end,
                "{what}: not within {DEADLINE:?}\n/report.json: {doc:#}\nstderr:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGTERM, then the exit status within `within`.
    fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let end = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < end,
                "watch did not exit within {within:?} of SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status of check `id` in instance `i`'s last report.
fn status_of(doc: &Value, i: usize, id: &str) -> Option<String> {
    doc["instances"][i]["report"]["results"]
        .as_array()?
        .iter()
        .find(|r| r["id"] == id)
        .and_then(|r| r["status"].as_str())
        .map(str::to_string)
}

/// Where instance `name` is in `/report.json`'s `instances`.
fn instance_index(doc: &Value, name: &str) -> usize {
    doc["instances"]
        .as_array()
        .unwrap()
        .iter()
        .position(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("no instance {name} in {doc:#}"))
}

fn write_policy(dir: &Path, text: &str) -> String {
    let p = dir.join("watch.yaml");
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// `/readyz` must answer 200.
const READY_POLICY: &str = "\
version: 1
name: watched
checks:
  - id: ready
    kind: http
    severity: critical
    request: GET /readyz
    expect:
      status: 200
";

/// The analytics query must answer 200. The admin fault `slow_query` makes every query run
/// past the 50 ms budget, answered 503 `HB-Q-TIMEOUT`, so this read-only check flips to FAIL
/// at its next run.
const QUERY_POLICY: &str = "\
version: 1
name: watched
checks:
  - id: query
    kind: http
    severity: critical
    request: GET /v1/correlations?market=m1&window=1h
    expect:
      status: 200
";

/// The rules in docs/alerts.yaml are valid and pass their unit tests (the same commands as
/// .ci/run), so `cargo test` fails when a rule breaks.
#[test]
fn promtool_checks_and_tests_the_alert_rules() {
    let docs = root().join("docs");
    for args in [
        ["check", "rules", "alerts.yaml"],
        ["test", "rules", "alerts.test.yaml"],
    ] {
        let out = match Command::new("promtool")
            .args(args)
            .current_dir(&docs)
            .output()
        {
            Ok(o) => o,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                assert!(
                    std::env::var(prom_server::REQUIRE_ENV).as_deref() != Ok("1"),
                    "promtool is not on PATH, and {}=1 requires it",
                    prom_server::REQUIRE_ENV
                );
                not_run_here(
                    "the `promtool` binary is not on PATH (Debian: apt-get install prometheus)",
                );
                return;
            }
            Err(e) => panic!("promtool: {e}"),
        };
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "promtool {}: {text}", args.join(" "));
        assert!(
            text.contains("SUCCESS"),
            "promtool {}: {text}",
            args.join(" ")
        );
    }
}

/// The Must-show of issue 12: Prometheus scrapes watch, sees the check PASS, then, after
/// the fault, the blocking-check rule's expression holds (its alert pending or firing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_alerts_when_a_watched_check_fails() {
    let _t = timing();
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start(&config("core.yaml"), &dir.path().join("svc"));
    let policy = write_policy(dir.path(), QUERY_POLICY);
    let watch = Watch::start(
        dir.path(),
        &[&policy, "--target", &svc.url, "--every", "1s"],
    );
    let Some(prom) = prom_server::start_with(
        &[("preflight-watch", &format!("{}/metrics", watch.url))],
        &Extra {
            rule_files: vec![root().join("docs/alerts.yaml")],
            honor_labels: true,
        },
    )
    .await
    else {
        return;
    };
    let instance = svc.url.trim_start_matches("http://").to_string();
    let pass = format!(
        "preflight_check_status{{check=\"query\",instance=\"{instance}\",blocking=\"true\",status=\"PASS\"}} == 1"
    );
    prom.wait_for("preflight-watch", 1, &pass, DEADLINE).await;

    let (code, body) = svc
        .admin("POST", "/admin/faults", json!({"slow_query": true}))
        .await;
    assert_eq!(code, 200, "{body}");

    let alert = format!(
        "ALERTS{{alertname=\"PreflightBlockingCheckFailing\",check=\"query\",instance=\"{instance}\",status=\"FAIL\"}}"
    );
    let client = prom.client();
    let end = Instant::now() + DEADLINE;
    loop {
        if let Ok(r) = client.query(&alert, None).await
            && let QueryResult::Vector(v) = &r.result
            && let Some(s) = v.first()
        {
            let state = s.labels.get("alertstate").cloned().unwrap_or_default();
            assert!(
                state == "pending" || state == "firing",
                "alertstate {state:?}"
            );
            assert_eq!(s.labels.get("policy").map(String::as_str), Some("watched"));
            break;
        }
        assert!(
            Instant::now() < end,
            "no {alert} within {DEADLINE:?}\nwatch:\n{}\n/metrics:\n{}\nprometheus targets: {}\nlog:\n{}",
            watch.log(),
            watch.get("/metrics").await,
            prom.targets().await,
            prom.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // watch's own view agrees: the check FAILs and the verdict is NO-GO.
    let doc = watch.document().await;
    assert_eq!(
        status_of(&doc, 0, "query").as_deref(),
        Some("FAIL"),
        "{doc:#}"
    );
    assert_eq!(doc["instances"][0]["report"]["verdict"], "NO-GO", "{doc:#}");
}

/// A disturbing check (`query_timeout` injects a slow query through the admin API) with
/// `schedule: every 3s` beside read-only checks every second: at least three runs, started
/// about 3 s apart, none overlapping any other run on the instance (watch's own start and
/// end times, taken inside the instance's lock); the not-scheduled disturbing check is
/// listed as not run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_disturbing_check_runs_alone_on_its_schedule() {
    let _t = timing();
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start(&config("core.yaml"), &dir.path().join("svc"));
    let policy = write_policy(
        dir.path(),
        "\
version: 1
name: scheduled
checks:
  - id: up
    kind: http
    request: GET /healthz
    expect: { status: 200 }
  - id: ready
    kind: http
    request: GET /readyz
    expect: { status: 200 }
  - id: slow-query
    kind: query_timeout
    budget: 50ms
    margin: 150ms
    schedule: every 3s
  - id: feed-breaker
    kind: circuit_breaker
    dependency: feed
    threshold: 5
    reset_timeout: 2s
",
    );
    let watch = Watch::start(
        dir.path(),
        &[
            &policy,
            "--target",
            &svc.url,
            "--every",
            "1s",
            "--admin-token",
            &svc.token,
        ],
    );
    let runs_of = |doc: &Value, group: &str| -> Vec<(f64, f64)> {
        doc["instances"][0]["runs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["group"] == group)
            .map(|r| (r["started"].as_f64().unwrap(), r["ended"].as_f64().unwrap()))
            .collect()
    };
    let doc = watch
        .wait_for("three runs of the scheduled check", |d| {
            runs_of(d, "slow-query").len() >= 3 && runs_of(d, "read-only").len() >= 3
        })
        .await;
    let slow = runs_of(&doc, "slow-query");
    for w in slow.windows(2) {
        let gap = w[1].0 - w[0].0;
        // From one start to the next: the schedule's 3 s, plus at most the wait for a
        // read-only run to let go of the instance.
        assert!(
            (2.95..=6.0).contains(&gap),
            "starts {gap:.3} s apart: {slow:?}"
        );
    }
    let all: Vec<(String, f64, f64)> = doc["instances"][0]["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["group"].as_str().unwrap().to_string(),
                r["started"].as_f64().unwrap(),
                r["ended"].as_f64().unwrap(),
            )
        })
        .collect();
    for (s, e) in &slow {
        for (g, s2, e2) in all.iter().filter(|r| r.0 != "slow-query") {
            assert!(
                e2 <= s || s2 >= e,
                "{g} [{s2}, {e2}] overlaps slow-query [{s}, {e}]"
            );
        }
    }
    assert_eq!(
        status_of(&doc, 0, "slow-query").as_deref(),
        Some("PASS"),
        "{doc:#}"
    );
    assert_eq!(
        status_of(&doc, 0, "ready").as_deref(),
        Some("PASS"),
        "{doc:#}"
    );
    assert_eq!(doc["not_run"][0]["check"], "feed-breaker", "{doc:#}");
    assert_eq!(
        status_of(&doc, 0, "feed-breaker").as_deref(),
        Some("SKIP"),
        "{doc:#}"
    );
    assert_eq!(doc["instances"][0]["report"]["verdict"], "GO", "{doc:#}");
    let metrics = watch.get("/metrics").await;
    let runs = metrics
        .lines()
        .find(|l| {
            l.starts_with("preflight_check_runs_total{")
                && l.contains("check=\"slow-query\"")
                && l.contains("status=\"PASS\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert!(runs.is_some_and(|n| n >= 3.0), "{metrics}");
}

/// An instance killed mid-watch turns to ERROR rows while the other stays PASS and
/// `/metrics` keeps answering; SIGTERM then ends watch with 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_instance_is_error_and_sigterm_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let a = Service::start(&config("core.yaml"), &dir.path().join("a"));
    let mut b = Service::start(&config("core.yaml"), &dir.path().join("b"));
    let host = |s: &Service| s.url.trim_start_matches("http://").to_string();
    let fleet = dir.path().join("fleet.json");
    std::fs::write(
        &fleet,
        json!([{ "targets": [host(&a), host(&b)], "labels": { "env": "test" } }]).to_string(),
    )
    .unwrap();
    let policy = write_policy(dir.path(), READY_POLICY);
    let mut watch = Watch::start(
        dir.path(),
        &[
            &policy,
            "--targets",
            &fleet.display().to_string(),
            "--every",
            "500ms",
        ],
    );
    let index = instance_index;
    let both_pass = |d: &Value| {
        status_of(d, index(d, &host(&a)), "ready").as_deref() == Some("PASS")
            && status_of(d, index(d, &host(&b)), "ready").as_deref() == Some("PASS")
    };
    watch.wait_for("both instances PASS", both_pass).await;
    b.kill9();
    let doc = watch
        .wait_for("the killed instance ERROR", |d| {
            status_of(d, index(d, &host(&b)), "ready").as_deref() == Some("ERROR")
        })
        .await;
    let ib = index(&doc, &host(&b));
    assert_eq!(
        doc["instances"][ib]["report"]["verdict"], "NO-GO",
        "{doc:#}"
    );
    assert_eq!(doc["instances"][ib]["labels"]["env"], "test", "{doc:#}");
    // the other instance is still watched, and still PASS
    let doc = watch
        .wait_for("the live instance still PASS after the kill", |d| {
            let ia = index(d, &host(&a));
            let runs = d["instances"][ia]["runs"].as_array().unwrap();
            let last = runs
                .last()
                .and_then(|r| r["started"].as_f64())
                .unwrap_or(0.0);
            let killed = d["instances"][index(d, &host(&b))]["runs"]
                .as_array()
                .unwrap()
                .last()
                .and_then(|r| r["ended"].as_f64())
                .unwrap_or(f64::MAX);
            last > killed && status_of(d, ia, "ready").as_deref() == Some("PASS")
        })
        .await;
    assert!(doc["instances"].as_array().unwrap().len() == 2);
    let metrics = watch.get("/metrics").await;
    let line = |inst: &str, status: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("preflight_check_status{")
                    && l.contains(&format!("instance=\"{inst}\""))
                    && l.contains(&format!("status=\"{status}\""))
            })
            .map(|l| l.ends_with(" 1"))
    };
    assert_eq!(line(&host(&b), "ERROR"), Some(true), "{metrics}");
    assert_eq!(line(&host(&a), "PASS"), Some(true), "{metrics}");

    // `/`: the instances with their verdicts; `/?instance=NAME`: that one's HTML report.
    let index = watch.get("/").await;
    assert!(
        index.contains(&host(&a)) && index.contains(&host(&b)) && index.contains("NO-GO"),
        "{index}"
    );
    let html = watch
        .get(&format!("/?instance={}", host(&b).replace(':', "%3A")))
        .await;
    assert!(html.contains("<html") && html.contains("ready"), "{html}");

    let status = watch.terminate(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", watch.log());
    assert!(watch.log().contains("watch: stopped"), "{}", watch.log());
}

/// `--targets` is listed again every `--refresh`: an instance added to the file is watched
/// from then on; one removed is no longer, in `/report.json` and in `/metrics`; a file that
/// cannot be read keeps the instances of the last listing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_targets_are_listed_again_and_followed() {
    let dir = tempfile::tempdir().unwrap();
    let a = Service::start(&config("core.yaml"), &dir.path().join("a"));
    let b = Service::start(&config("core.yaml"), &dir.path().join("b"));
    let (ha, hb) = (
        a.url.trim_start_matches("http://").to_string(),
        b.url.trim_start_matches("http://").to_string(),
    );
    let fleet = dir.path().join("fleet.json");
    // Replaced whole (written aside, renamed), as a discovery job writes a file_sd file.
    let list = |text: String| {
        let tmp = dir.path().join("fleet.json.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &fleet).unwrap();
    };
    let hosts = |h: &[&str]| json!([{ "targets": h }]).to_string();
    list(hosts(&[&ha]));
    let policy = write_policy(dir.path(), READY_POLICY);
    let watch = Watch::start(
        dir.path(),
        &[
            &policy,
            "--targets",
            &fleet.display().to_string(),
            "--every",
            "500ms",
            "--refresh",
            "300ms",
        ],
    );
    let names = |d: &Value| -> Vec<String> {
        d["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_string())
            .collect()
    };
    let passes = |d: &Value, h: &str| {
        names(d)
            .iter()
            .position(|n| n == h)
            .is_some_and(|i| status_of(d, i, "ready").as_deref() == Some("PASS"))
    };
    watch
        .wait_for("the first instance PASS", |d| passes(d, &ha))
        .await;

    list(hosts(&[&ha, &hb]));
    let doc = watch
        .wait_for("the instance added to the file PASS", |d| passes(d, &hb))
        .await;
    assert_eq!(names(&doc), [ha.as_str(), hb.as_str()]);

    // A listing that fails changes nothing.
    std::fs::write(&fleet, "[{\"targets\": [").unwrap();
    let end = Instant::now() + DEADLINE;
    while !watch.log().contains("targets: listing failed") {
        assert!(Instant::now() < end, "no failed listing:\n{}", watch.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(names(&watch.document().await), [ha.as_str(), hb.as_str()]);

    list(hosts(&[&hb]));
    watch
        .wait_for("the instance removed from the file gone", |d| {
            names(d) == [hb.as_str()]
        })
        .await;
    let removed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    // Still gone once the runs under way on it have ended, and the other is still run.
    let doc = watch
        .wait_for("a run of the remaining instance after the removal", |d| {
            d["instances"][0]["runs"]
                .as_array()
                .and_then(|r| r.last())
                .and_then(|r| r["started"].as_f64())
                .is_some_and(|t| t > removed_at + 1.0)
        })
        .await;
    assert_eq!(names(&doc), [hb.as_str()]);
    let metrics = watch.get("/metrics").await;
    assert!(
        !metrics.contains(&format!("instance=\"{ha}\"")),
        "series of the removed instance left:\n{metrics}"
    );
    assert!(metrics.contains(&format!("instance=\"{hb}\"")), "{metrics}");
    let log = watch.log();
    assert!(
        log.contains("1 instance(s) added, 0 removed: 2 watched"),
        "{log}"
    );
    assert!(
        log.contains("0 instance(s) added, 1 removed: 1 watched"),
        "{log}"
    );
}

/// An instance whose check hangs (it accepts connections and never answers) holds up
/// nothing but itself: while its run waits for the check's deadline, the other instance is
/// checked again and again; then the hung check is an ERROR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_instance_does_not_stall_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start(&config("core.yaml"), &dir.path().join("svc"));
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_addr = hang.local_addr().unwrap().to_string();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = hang.accept().await {
            held.push(conn);
        }
    });
    let live = svc.url.trim_start_matches("http://").to_string();
    let fleet = dir.path().join("fleet.json");
    std::fs::write(
        &fleet,
        json!([{ "targets": [&live, &hang_addr] }]).to_string(),
    )
    .unwrap();
    let policy = write_policy(
        dir.path(),
        "\
version: 1
name: hang
checks:
  - id: ready
    kind: http
    severity: critical
    request: GET /readyz
    timeout: 6s
    expect: { status: 200 }
",
    );
    let watch = Watch::start(
        dir.path(),
        &[
            &policy,
            "--targets",
            &fleet.display().to_string(),
            "--every",
            "300ms",
        ],
    );
    let index = instance_index;
    // Runs of the live instance that began while the hung one's first run was under way.
    let doc = watch
        .wait_for("three runs of the live instance during the hang", |d| {
            let hung = &d["instances"][index(d, &hang_addr)];
            let Some(since) = hung["running"][0]["started"].as_f64() else {
                return false;
            };
            d["instances"][index(d, &live)]["runs"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["started"].as_f64().unwrap() > since)
                .count()
                >= 3
        })
        .await;
    assert_eq!(
        status_of(&doc, index(&doc, &live), "ready").as_deref(),
        Some("PASS"),
        "{doc:#}"
    );
    let doc = watch
        .wait_for("the hung check ERROR at its deadline", |d| {
            status_of(d, index(d, &hang_addr), "ready").as_deref() == Some("ERROR")
        })
        .await;
    let r = &doc["instances"][index(&doc, &hang_addr)]["report"]["results"][0];
    assert!(r["summary"].as_str().unwrap().contains("deadline"), "{r:#}");
    holder.abort();
}

/// SIGTERM while a run is under way (each takes 3 s: the admin fault `request_delay` holds
/// the checked route): the run finishes and is reported after the stop was announced, then
/// watch exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_run_under_way_finish() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start(&config("core.yaml"), &dir.path().join("svc"));
    let delay = json!({"request_delay": {"path_prefix": "/v1/detections", "delay_ms": 3000}});
    assert_eq!(svc.admin("POST", "/admin/faults", delay).await.0, 200);
    let policy = write_policy(
        dir.path(),
        "\
version: 1
name: slow
checks:
  - id: detections
    kind: http
    request: GET /v1/detections
    timeout: 30s
    expect: { status: 200 }
",
    );
    let mut watch = Watch::start(
        dir.path(),
        &[&policy, "--target", &svc.url, "--every", "500ms"],
    );
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    // A run has ended (so the check takes its 3 s), and the one under way began under 1.5 s ago.
    watch
        .wait_for("a run under way with time left", |d| {
            let i = &d["instances"][0];
            !i["runs"].as_array().unwrap().is_empty()
                && i["running"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| now() - r["started"].as_f64().unwrap() < 1.5)
        })
        .await;
    let status = watch.terminate(Duration::from_secs(30));
    let log = watch.log();
    assert_eq!(status.code(), Some(0), "{log}");
    let after = log
        .split("stopping: the runs under way finish first")
        .nth(1)
        .unwrap_or_else(|| panic!("no stop announced:\n{log}"));
    assert!(
        after.contains("read-only GO") && after.contains("detections PASS"),
        "the run under way did not finish:\n{log}"
    );
    assert!(after.trim_end().ends_with("watch: stopped"), "{log}");
}

/// watch never spawns the bundled service: no target is a usage error (exit 2), and so is
/// a bad `schedule:`, reported at its file:line:col.
#[test]
fn no_target_or_a_bad_schedule_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write_policy(dir.path(), READY_POLICY);
    let out = Command::new(env!("CARGO_BIN_EXE_preflight"))
        .args(["watch", &policy])
        .env_remove("PREFLIGHT_ADMIN_TOKEN")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("never spawns"), "{err}");

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "version: 1\nname: bad\nchecks:\n  - id: ready\n    kind: http\n    request: GET /readyz\n    schedule: fortnightly\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_preflight"))
        .args([
            "watch",
            &bad.display().to_string(),
            "--target",
            "http://127.0.0.1:9",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("bad.yaml:7:15"), "{err}");
    assert!(err.contains("fortnightly"), "{err}");
}
