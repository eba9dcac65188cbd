//! Fleets (issue 12): one policy against many spawned services listed in a `file_sd` file,
//! each instance's own verdict, the fleet's by `fleet.require`, shards merged back into the
//! same verdicts, and `fleet.max_disturbed` holding disturbing checks apart across instances.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Service, config, random_token, timing};

/// Read-only checks that tell each regression profile apart, and one disturbing check
/// (`query_timeout`, which injects slow queries through the admin API). Every check blocks.
fn policy(dir: &Path, fleet: &str) -> std::path::PathBuf {
    let p = dir.join("fleet-policy.yaml");
    std::fs::write(
        &p,
        format!(
            r#"version: 1
name: fleet-test
fleet: {fleet}
checks:
  - id: ready
    kind: http
    severity: critical
    request: GET /readyz
    retry: {{ within: 30s, every: 200ms }}
    expect: {{ status: 200 }}
  - id: hardening-enabled
    kind: http
    severity: high
    depends_on: [ready]
    request: GET /status
    expect:
      status: 200
      json:
        /limiter/enabled: true
        /shedding/enabled: true
        /snapshot/enabled: true
  - id: breaker-threshold
    kind: http
    severity: high
    depends_on: [ready]
    request: GET /status
    expect:
      json:
        /breakers/feed/threshold: 5
  - id: query-timeout
    kind: query_timeout
    severity: critical
    depends_on: [ready]
    budget: 50ms
    margin: 150ms
"#
        ),
    )
    .unwrap();
    p
}

/// The regression profiles in the fleet; each breaks a requirement this policy checks.
const BROKEN: &[&str] = &[
    "regressions/no-rate-limit.yaml",
    "regressions/no-shedding.yaml",
    "regressions/no-snapshots.yaml",
    "regressions/breaker-unreachable.yaml",
    "regressions/no-query-timeout.yaml",
];

/// `n_good` core services and one per broken profile, all with `token`, and their file_sd.
fn fleet(dir: &Path, n_good: usize, broken: &[&str], token: &str) -> (Vec<Service>, Value) {
    let mut services = vec![];
    let mut groups = vec![];
    let profiles = std::iter::repeat_n("core.yaml", n_good).chain(broken.iter().copied());
    for (i, profile) in profiles.enumerate() {
        let s = Service::start_with(&config(profile), &dir.join(format!("svc{i}")), Some(token));
        let address = s.url.trim_start_matches("http://").to_string();
        groups.push(json!({"targets": [address], "labels": {"profile": profile}}));
        services.push(s);
    }
    (services, Value::Array(groups))
}

fn preflight(args: &[&str], dir: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_preflight"))
        .args(args)
        .current_dir(dir)
        .env_remove("PREFLIGHT_ADMIN_TOKEN")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn read(dir: &Path, name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap()
}

/// Instance name → (profile label, verdict).
fn verdicts(report: &Value) -> BTreeMap<String, (String, String)> {
    report["fleet"]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_string(),
                (
                    i["labels"]["profile"].as_str().unwrap().to_string(),
                    i["verdict"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect()
}

#[test]
fn a_fleet_of_twenty_gets_right_verdicts_whole_and_sharded() {
    let _t = timing();
    let dir = tempfile::tempdir().unwrap();
    let token = random_token();
    let (services, sd) = fleet(dir.path(), 15, BROKEN, &token);
    std::fs::write(dir.path().join("fleet.json"), sd.to_string()).unwrap();
    // 15 of 20 is 75%: GO by this rule, where `all` would be NO-GO.
    policy(
        dir.path(),
        r#"{require: "75%", concurrency: 5, max_disturbed: 2}"#,
    );
    let common = [
        "check",
        "fleet-policy.yaml",
        "--targets",
        "fleet.json",
        "--admin-token",
        &token,
        "--format",
        "json",
        "--no-progress",
    ];
    let run = |extra: &[&str]| {
        let mut args = common.to_vec();
        args.extend_from_slice(extra);
        preflight(&args, dir.path())
    };

    let (code, err) = run(&["-o", "whole.json", "--report", "human:whole.txt"]);
    let whole = read(dir.path(), "whole.json");
    assert_eq!(code, 0, "fleet GO at 75%: {err}\n{:#}", whole["fleet"]);
    assert_eq!(whole["verdict"], "GO");
    let by_name = verdicts(&whole);
    assert_eq!(by_name.len(), 20);
    for (name, (profile, verdict)) in &by_name {
        let expected = if profile == "core.yaml" {
            "GO"
        } else {
            "NO-GO"
        };
        assert_eq!(
            verdict, expected,
            "{name} ({profile}): {:#}",
            whole["fleet"]
        );
    }
    // Each broken instance is NO-GO for its own defect, and only that one.
    let failed = |profile: &str| -> Vec<String> {
        let name = by_name.iter().find(|(_, (p, _))| p == profile).unwrap().0;
        whole["results"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["instance"] == name.as_str() && r["status"] != "PASS")
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    for (profile, check) in [
        ("regressions/no-rate-limit.yaml", "hardening-enabled"),
        ("regressions/no-shedding.yaml", "hardening-enabled"),
        ("regressions/no-snapshots.yaml", "hardening-enabled"),
        ("regressions/breaker-unreachable.yaml", "breaker-threshold"),
        ("regressions/no-query-timeout.yaml", "query-timeout"),
    ] {
        assert_eq!(failed(profile), [check], "{profile}");
    }
    let f = &whole["fleet"];
    assert_eq!((f["go"].as_u64(), f["no_go"].as_u64()), (Some(15), Some(5)));

    // The human report (of the same run) shows the odd ones out first.
    let text = std::fs::read_to_string(dir.path().join("whole.txt")).unwrap();
    let table: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.contains("VERDICT"))
        .skip(1)
        .take(20)
        .collect();
    assert!(
        table[..5]
            .iter()
            .all(|l| l.trim_start().starts_with("NO-GO")),
        "{text}"
    );
    assert!(
        table[5..].iter().all(|l| l.trim_start().starts_with("GO")),
        "{text}"
    );

    // Three shards: together exactly the fleet, merged into the same verdicts.
    let mut parts = vec![];
    for k in 1..=3 {
        let shard = format!("{k}/3");
        let out = format!("shard-{k}.json");
        let (code, err) = run(&["--shard", &shard, "-o", &out]);
        assert!([0, 1, 3].contains(&code), "shard {shard}: {err}");
        let r = read(dir.path(), &out);
        assert_eq!(r["fleet"]["shards"], json!([shard]));
        parts.push(out);
    }
    let shard_sizes: Vec<usize> = parts
        .iter()
        .map(|p| verdicts(&read(dir.path(), p)).len())
        .collect();
    assert_eq!(shard_sizes.iter().sum::<usize>(), 20, "{shard_sizes:?}");
    let mut merge = vec!["report", "merge", "--format", "json", "-o", "merged.json"];
    merge.extend(parts.iter().map(String::as_str));
    let (code, err) = preflight(&merge, dir.path());
    assert_eq!(code, 0, "{err}");
    let merged = read(dir.path(), "merged.json");
    assert_eq!(
        verdicts(&merged),
        by_name,
        "merged shards = the whole fleet"
    );
    assert_eq!(merged["verdict"], whole["verdict"]);
    assert_eq!(merged["fleet"]["shards"], json!(["1/3", "2/3", "3/3"]));

    // The same shard reports under the `all` rule: the merge recomputes the fleet's verdict.
    for p in &parts {
        let mut r = read(dir.path(), p);
        r["fleet"]["require"] = json!("all");
        std::fs::write(dir.path().join(format!("all-{p}")), r.to_string()).unwrap();
    }
    let mut merge_all = vec![
        "report",
        "merge",
        "--format",
        "json",
        "-o",
        "merged-all.json",
    ];
    let all_parts: Vec<String> = parts.iter().map(|p| format!("all-{p}")).collect();
    merge_all.extend(all_parts.iter().map(String::as_str));
    let (code, _) = preflight(&merge_all, dir.path());
    assert_eq!(code, 1, "all must be GO: NO-GO");
    assert_eq!(read(dir.path(), "merged-all.json")["verdict"], "NO-GO");

    // Two shards of three: what is missing is not GO.
    let (code, _) = preflight(
        &[
            "report", "merge", "--format", "json", "-o", "two.json", &parts[0], &parts[1],
        ],
        dir.path(),
    );
    let two = read(dir.path(), "two.json");
    assert_eq!(two["fleet"]["missing"], shard_sizes[2]);
    assert_ne!(two["verdict"], "GO", "{:#}", two["fleet"]);
    assert_eq!(code, if two["verdict"] == "NO-GO" { 1 } else { 3 });

    github_matrix_example_runs_as_written(dir.path());
    drop(services);
}

/// The `run:` lines of docs/fleets.md's GitHub Actions example, the matrix expanded, with
/// `preflight` on the PATH, in a checkout holding `fleet.json`: against the fleet above,
/// smoke.yaml (no `fleet:` section, so `all` must be GO) says NO-GO for the three instances
/// whose /status shows a hardening feature off, and the `verdict` job exits 1.
fn github_matrix_example_runs_as_written(dir: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/fleets.md")).unwrap();
    let block = doc
        .split("### GitHub Actions")
        .nth(1)
        .and_then(|rest| rest.split("```yaml\n").nth(1))
        .and_then(|b| b.split("```").next())
        .expect("a yaml block under ### GitHub Actions");
    let workflow = preflight::yaml::parse(block).unwrap().value;
    let shards: Vec<String> = workflow["jobs"]["shard"]["strategy"]["matrix"]["shard"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    let runs = |job: &str| -> Vec<String> {
        workflow["jobs"][job]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["run"].as_str().map(str::to_string))
            .collect()
    };
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    std::fs::copy(
        root.join("policies/smoke.yaml"),
        dir.join("policies/smoke.yaml"),
    )
    .unwrap();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_preflight")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let sh = |line: &str| {
        Command::new("sh")
            .args(["-c", line])
            .current_dir(dir)
            .env("PATH", &path)
            .env_remove("PREFLIGHT_ADMIN_TOKEN")
            .output()
            .unwrap()
    };
    for shard in &shards {
        for line in runs("shard") {
            let out = sh(&line.replace("${{ matrix.shard }}", shard));
            assert!(out.status.success(), "{line}: {out:?}");
        }
    }
    let lines = runs("verdict");
    assert_eq!(lines.len(), 1, "{lines:?}");
    let out = sh(&lines[0]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{}: {out:?}", lines[0]);
    // One annotation per instance with hardening off, and the fleet's verdict.
    assert_eq!(stdout.matches("::error ").count(), 4, "{stdout}");
    assert!(
        stdout.contains("::3 instances NO-GO: "),
        "the verdict names them:\n{stdout}"
    );
    let junit = std::fs::read_to_string(dir.join("fleet.xml")).unwrap();
    assert_eq!(
        junit.matches("<testcase ").count(),
        20 * 5,
        "the five smoke checks on each of the twenty instances"
    );
}

/// Records when each instance's checks start and finish (the progress of a fleet run names
/// them `instance: check`).
#[derive(Default)]
struct Timeline(Mutex<Vec<(Instant, bool, String)>>);

impl preflight::engine::run::Progress for Timeline {
    fn message(&self, _: &str) {}
    fn started(&self, id: &str) -> preflight::target::ProgressFn {
        self.0
            .lock()
            .unwrap()
            .push((Instant::now(), true, id.to_string()));
        Arc::new(|_| {})
    }
    fn finished(&self, id: &str, _: preflight::outcome::Status, _: &str) {
        self.0
            .lock()
            .unwrap()
            .push((Instant::now(), false, id.to_string()));
    }
}

/// The most checks named `…: <check>` running at one moment.
fn most_at_once(events: &[(Instant, bool, String)], check: &str) -> usize {
    let mut sorted: Vec<&(Instant, bool, String)> = events
        .iter()
        .filter(|e| e.2.ends_with(&format!(": {check}")))
        .collect();
    // At one instant, an end before a start: touching is not overlapping.
    sorted.sort_by_key(|e| (e.0, e.1));
    let (mut now, mut most) = (0usize, 0usize);
    for e in sorted {
        if e.1 {
            now += 1;
            most = most.max(now);
        } else {
            now -= 1;
        }
    }
    most
}

#[tokio::test]
async fn max_disturbed_keeps_disturbing_checks_apart_across_instances() {
    let _t = timing();
    let dir = tempfile::tempdir().unwrap();
    let token = random_token();
    let (services, _) = fleet(dir.path(), 4, &[], &token);
    for (max_disturbed, at_most) in [(1, 1), (4, 4)] {
        let path = policy(
            dir.path(),
            &format!("{{concurrency: 4, max_disturbed: {max_disturbed}}}"),
        );
        let loaded = preflight::policy::load::load(std::slice::from_ref(&path)).unwrap();
        let timeline = Arc::new(Timeline::default());
        let instances = services
            .iter()
            .map(|s| preflight::probe::discovery::Instance {
                name: s.url.trim_start_matches("http://").to_string(),
                url: s.url.clone(),
                labels: BTreeMap::new(),
            })
            .collect::<Vec<_>>();
        let opts = preflight::engine::run::CheckOptions {
            admin_token: Some(token.clone()),
            progress: timeline.clone(),
            ..preflight::engine::run::CheckOptions::new(
                loaded.policy,
                vec![path],
                env!("CARGO_BIN_EXE_preflight").into(),
            )
        };
        let report = tokio::time::timeout(
            Duration::from_secs(240),
            preflight::engine::fleet::check_fleet(
                opts,
                preflight::engine::fleet::Fleet {
                    size: instances.len(),
                    instances,
                    source: "test".into(),
                    shard: None,
                },
            ),
        )
        .await
        .expect("the fleet run ends")
        .unwrap();
        assert_eq!(
            report.verdict,
            preflight::report::Verdict::Go,
            "{}",
            report.verdict_reason
        );
        let events = timeline.0.lock().unwrap().clone();
        let disturbing = most_at_once(&events, "query-timeout");
        assert!(
            disturbing <= at_most,
            "max_disturbed {max_disturbed}: {disturbing} at once"
        );
        // The cap is what kept them apart: four instances at once, each query-timeout check
        // taking a second or more, run several together when allowed.
        if max_disturbed == 4 {
            assert!(disturbing >= 2, "no two ran together even when allowed");
        }
    }
    drop(services);
}

/// `--targets prometheus:URL?match=…` against a real Prometheus: the fleet is the active
/// targets of one job, the other job's target left out by the matcher; each instance named
/// as Prometheus names it, and checked.
#[tokio::test]
async fn a_fleet_from_a_real_prometheus_servers_active_targets() {
    let dir = tempfile::tempdir().unwrap();
    let token = random_token();
    let (services, _) = fleet(dir.path(), 3, &["regressions/no-shedding.yaml"], &token);
    let (fleet_urls, other) = services.split_at(3);
    let mut scrape: Vec<(&str, &str)> =
        fleet_urls.iter().map(|s| ("api", s.url.as_str())).collect();
    scrape.push(("other", other[0].url.as_str()));
    let Some(prom) = crate::prom_server::start(&scrape).await else {
        return;
    };
    prom.wait_for("api", 3, "up{job=\"api\"}", Duration::from_secs(60))
        .await;
    prom.wait_for("other", 1, "up{job=\"other\"}", Duration::from_secs(60))
        .await;
    policy(dir.path(), "{require: all}");
    let source = format!("prometheus:{}?match={{job=\"api\"}}", prom.url);
    let dir_path = dir.path().to_path_buf();
    let token2 = token.clone();
    let (code, err) = tokio::task::spawn_blocking(move || {
        preflight(
            &[
                "check",
                "fleet-policy.yaml",
                "--targets",
                &source,
                "--admin-token",
                &token2,
                "--format",
                "json",
                "--no-progress",
                "-o",
                "prom.json",
            ],
            &dir_path,
        )
    })
    .await
    .unwrap();
    let report = read(dir.path(), "prom.json");
    assert_eq!(code, 0, "{err}\n{:#}", report["fleet"]);
    let instances = report["fleet"]["instances"].as_array().unwrap();
    let mut names: Vec<&str> = instances
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    names.sort();
    let mut expected: Vec<String> = fleet_urls
        .iter()
        .map(|s| s.url.trim_start_matches("http://").to_string())
        .collect();
    expected.sort();
    assert_eq!(
        names, expected,
        "the api job only, named by its instance label"
    );
    for i in instances {
        assert_eq!(i["labels"]["job"], "api");
        assert_eq!(i["verdict"], "GO", "{i:#}");
    }
    assert_eq!(
        report["fleet"]["source"]
            .as_str()
            .unwrap()
            .split('?')
            .nth(1),
        Some("match={job=\"api\"}")
    );
    drop(services);
}
