//! A real Prometheus server for the tests (Debian's `prometheus` package): [`start`] writes
//! a configuration scraping the given targets every second into a temporary directory,
//! starts the binary on a loopback port with its TSDB in that directory, and waits for
//! `/-/ready`. Dropping the [`PromServer`] kills the process; the directory goes with it.
//!
//! When the binary is missing, the test says so and does not run ("NOT RUN HERE"), unless
//! `PREFLIGHT_REQUIRE_PROMETHEUS=1` (set by `.ci/run`, which installs the package): then it
//! fails, so CI cannot pass by skipping.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use preflight::probe::promql::{PromClient, QueryResult};
use serde_json::{Value, json};

use crate::reach::not_run_here;

/// Set to `1` to make a missing `prometheus` binary a test failure.
pub const REQUIRE_ENV: &str = "PREFLIGHT_REQUIRE_PROMETHEUS";

/// How long Prometheus may take to start and to answer ready, on a loaded 2-core machine
/// (about a second when idle).
const READY_DEADLINE: Duration = Duration::from_secs(60);

/// Ports tried before giving up (see [`start`] on why a port can be taken).
const PORT_ATTEMPTS: usize = 5;

/// A running Prometheus; killed on drop.
pub struct PromServer {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    dir: tempfile::TempDir,
}

impl PromServer {
    /// Prometheus's own log (stdout and stderr), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(log_path(self.dir.path())).unwrap_or_default()
    }

    /// A client of this server.
    pub fn client(&self) -> PromClient {
        PromClient::new(&self.url).unwrap()
    }

    /// What Prometheus says about its scrape targets (`/api/v1/targets`: health, last
    /// error), for failure messages.
    pub async fn targets(&self) -> String {
        let url = format!("{}/api/v1/targets", self.url);
        let answer = async {
            let v: Value = preflight::http_client::client()
                .get(&url)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let targets = v["data"]["activeTargets"].as_array()?.iter();
            Some(
                targets
                    .map(|t| {
                        format!(
                            "{} {}: {} {}",
                            t["labels"]["job"], t["scrapeUrl"], t["health"], t["lastError"]
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        };
        answer
            .await
            .unwrap_or_else(|| "(no answer from /api/v1/targets)".into())
    }

    /// Polls until every instance of `job` has been scraped (`up == 1`) and `query` returns
    /// at least one series, or panics at `deadline` naming the targets' state and the last
    /// answer.
    pub async fn wait_for(&self, job: &str, instances: usize, query: &str, deadline: Duration) {
        let client = self.client();
        let up = format!("up{{job={job:?}}} == 1");
        let end = Instant::now() + deadline;
        loop {
            let ups = client.query(&up, None).await;
            let found = client.query(query, None).await;
            let last = match (&ups, &found) {
                (Ok(u), Ok(f)) => {
                    let n = |r: &QueryResult| match r {
                        QueryResult::Vector(v) => v.len(),
                        _ => 0,
                    };
                    if n(&u.result) >= instances && n(&f.result) > 0 {
                        return;
                    }
                    format!(
                        "{} of {instances} instances up, {} series of `{query}`",
                        n(&u.result),
                        n(&f.result)
                    )
                }
                (Err(e), _) | (_, Err(e)) => e.to_string(),
            };
            assert!(
                Instant::now() < end,
                "Prometheus did not scrape job {job:?} within {deadline:?}: {last}\ntargets: {}\nlog:\n{}",
                self.targets().await,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for PromServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("prometheus.log")
}

/// What a test's Prometheus has beyond its scrape targets.
#[derive(Debug, Clone, Default)]
pub struct Extra {
    /// Alerting and recording rule files, evaluated every second.
    pub rule_files: Vec<PathBuf>,
    /// Labels of the scraped series win over the target's (`honor_labels`), as for an
    /// exporter such as `preflight watch` whose `instance` names the instance it checked.
    pub honor_labels: bool,
}

/// The configuration (JSON is YAML): one scrape job per distinct job name, every second,
/// each `(job, instance URL)` a static target (`http://127.0.0.1:PORT`, the metrics path
/// `/metrics` unless the URL has another).
fn config(scrape_targets: &[(&str, &str)], extra: &Extra) -> Value {
    let mut jobs: Vec<(String, String, String, Vec<String>)> = Vec::new();
    for (job, url) in scrape_targets {
        let u = reqwest::Url::parse(url).unwrap_or_else(|e| panic!("scrape target {url}: {e}"));
        let host = u.host_str().unwrap_or_else(|| panic!("{url}: no host"));
        let port = u
            .port_or_known_default()
            .unwrap_or_else(|| panic!("{url}: no port"));
        let path = match u.path() {
            "" | "/" => "/metrics",
            p => p,
        };
        let target = format!("{host}:{port}");
        match jobs.iter_mut().find(|j| j.0 == *job) {
            Some(j) => {
                assert!(
                    j.1 == u.scheme() && j.2 == path,
                    "job {job}: every instance needs the same scheme and metrics path"
                );
                j.3.push(target);
            }
            None => jobs.push((
                job.to_string(),
                u.scheme().to_string(),
                path.to_string(),
                vec![target],
            )),
        }
    }
    json!({
        "global": { "scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s" },
        "rule_files": extra.rule_files,
        "scrape_configs": jobs.iter().map(|(job, scheme, path, targets)| json!({
            "job_name": job,
            "scheme": scheme,
            "metrics_path": path,
            "honor_labels": extra.honor_labels,
            "static_configs": [{ "targets": targets }],
        })).collect::<Vec<_>>(),
    })
}

/// A port that was free a moment ago. Prometheus takes no `:0` with a way to learn the port
/// it got (its log names the address as given), so the port is chosen here: bind
/// `127.0.0.1:0`, read the port, release it. Another process may take it in between, so
/// [`start`] retries with a new port when Prometheus cannot bind.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Starts Prometheus scraping `scrape_targets` (`(job, instance URL)`), or returns `None`
/// after saying why the test does not run here (no `prometheus` binary and
/// `PREFLIGHT_REQUIRE_PROMETHEUS` is not `1`).
pub async fn start(scrape_targets: &[(&str, &str)]) -> Option<PromServer> {
    start_on(scrape_targets, &Extra::default(), free_port).await
}

/// [`start`] with rule files or `honor_labels`.
pub async fn start_with(scrape_targets: &[(&str, &str)], extra: &Extra) -> Option<PromServer> {
    start_on(scrape_targets, extra, free_port).await
}

/// [`start`] on the ports `next_port` gives, one per attempt.
async fn start_on(
    scrape_targets: &[(&str, &str)],
    extra: &Extra,
    mut next_port: impl FnMut() -> u16,
) -> Option<PromServer> {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("prometheus.yml");
    std::fs::write(
        &config_path,
        serde_json::to_string_pretty(&config(scrape_targets, extra)).unwrap(),
    )
    .unwrap();
    let tsdb = dir.path().join("data");
    let log_file = log_path(dir.path());
    let spawn = |port: u16| {
        let log = std::fs::File::create(&log_file).unwrap();
        Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", tsdb.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
    };
    let mut port = next_port();
    let child = match spawn(port) {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let why = "the `prometheus` binary is not on PATH (Debian: apt-get install prometheus; .ci/run installs it)";
            assert!(
                std::env::var(REQUIRE_ENV).as_deref() != Ok("1"),
                "{why}, and {REQUIRE_ENV}=1 requires it"
            );
            not_run_here(why);
            return None;
        }
        Err(e) => panic!("starting prometheus: {e}"),
    };
    let mut failures = Vec::new();
    let mut server = PromServer {
        child,
        url: format!("http://127.0.0.1:{port}"),
        dir,
    };
    loop {
        match ready(&mut server, &tsdb).await {
            Ok(()) => return Some(server),
            Err(Retry(why)) => {
                failures.push(format!("port {port}: {why}"));
                let _ = server.child.kill();
                let _ = server.child.wait();
                assert!(
                    failures.len() < PORT_ATTEMPTS,
                    "Prometheus could not get a port in {PORT_ATTEMPTS} attempts: {}",
                    failures.join("; ")
                );
                port = next_port();
                server.child = spawn(port).expect("starting prometheus again");
                server.url = format!("http://127.0.0.1:{port}");
            }
        }
    }
}

/// The port was taken: try another.
struct Retry(String);

/// Waits for this server to answer ready. The server answering must be ours (its TSDB path
/// is ours): with a port taken by another Prometheus, ours exits and the other one answers.
async fn ready(server: &mut PromServer, tsdb: &Path) -> Result<(), Retry> {
    let client = preflight::http_client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let end = Instant::now() + READY_DEADLINE;
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            let log = server.log();
            if log.contains("address already in use") {
                return Err(Retry("address already in use".into()));
            }
            panic!("prometheus exited ({status}) before it was ready; its log:\n{log}");
        }
        let ready = client
            .get(format!("{}/-/ready", server.url))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            let flags: Option<Value> = async {
                client
                    .get(format!("{}/api/v1/status/flags", server.url))
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()
            }
            .await;
            let theirs = flags
                .as_ref()
                .and_then(|f| f["data"]["storage.tsdb.path"].as_str())
                .map(str::to_string);
            if theirs.as_deref() == Some(&tsdb.display().to_string()) {
                return Ok(());
            }
            if theirs.is_some() {
                return Err(Retry(format!(
                    "another Prometheus answers there (TSDB {theirs:?})"
                )));
            }
        }
        assert!(
            Instant::now() < end,
            "prometheus was not ready within {READY_DEADLINE:?}; its log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The port race of [`free_port`]: a port taken by someone else is given up for another.
#[tokio::test]
async fn a_taken_port_is_retried() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let mut ports = vec![taken_port];
    let next = move || ports.pop().unwrap_or_else(free_port);
    let Some(prom) = start_on(&[], &Extra::default(), next).await else {
        return;
    };
    assert_ne!(prom.url, format!("http://127.0.0.1:{taken_port}"));
    let r = prom.client().query("1+1", None).await.unwrap();
    assert_eq!(r.single_value().unwrap(), 2.0);
    drop(taken);
}
