//! A target preflight did not spawn, as an operator checks their own deployment: the core
//! service started detached by a start script (`setsid nohup preflight serve … --pid-file`),
//! and a policy whose `target:` gives every capability (URL, admin token, pid file and the
//! same script as restart command, log directory, SQLite) and includes the default policy.
//! The proof must be the spawned case's: GO on `core.yaml`, NO-GO with the same failing ids
//! on `before-hardening.yaml`, and with only a URL the capability checks SKIP → INCONCLUSIVE.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use preflight::target::spawn::is_alive;
use serde_json::{Value, json};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// How long a whole `preflight check` of the default policy may take before the test kills it
/// (a debug build takes ~10 s; this only stops a hung run from hanging the suite).
const RUN_DEADLINE: Duration = Duration::from_secs(180);

/// A core service started the way an operator starts one: detached, by a script. Every
/// process it ever ran is killed on drop, found through the pid file (and any pid seen), and
/// only if its command line names this operator's own temporary directory.
struct Operator {
    dir: tempfile::TempDir,
    port: u16,
    token: String,
    seen: Vec<u32>,
}

impl Operator {
    /// Writes `start.sh` for `config` on a free port and runs it; returns once `/readyz`
    /// answers and the pid file names a live process.
    fn start(config: &str) -> Operator {
        let dir = tempfile::Builder::new()
            .prefix("preflight-remote-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let mut op = Operator {
            dir,
            port,
            token: crate::support::random_token(),
            seen: vec![],
        };
        // The token is not in the script: it comes from the environment, which preflight's
        // restart command inherits (as an operator's init script reads it from theirs).
        let script = format!(
            "#!/bin/sh\n\
             # Starts the core service detached, as an operator's init script would.\n\
             setsid nohup '{exe}' serve --config '{config}' --listen 127.0.0.1:{port} \\\n\
             \x20 --data-dir '{data}' --pid-file '{pid}' >>'{out}' 2>&1 </dev/null &\n\
             exit 0\n",
            exe = env!("CARGO_BIN_EXE_preflight"),
            config = root().join("config").join(config).display(),
            data = op.data_dir().display(),
            pid = op.pid_file().display(),
            out = op.dir.path().join("serve.out").display(),
        );
        std::fs::write(op.script(), script).unwrap();
        op.run_script();
        op.wait_ready(None);
        op
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    fn pid_file(&self) -> PathBuf {
        self.dir.path().join("run/core.pid")
    }
    fn script(&self) -> PathBuf {
        self.dir.path().join("start.sh")
    }
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn run_script(&self) {
        let st = Command::new("sh")
            .arg(self.script())
            .env("PREFLIGHT_ADMIN_TOKEN", &self.token)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "start script: {st}");
    }

    /// The pid in the pid file, if any (recorded for the cleanup).
    fn pid(&mut self) -> Option<u32> {
        let pid = read_pid(&self.pid_file())?;
        if !self.seen.contains(&pid) {
            self.seen.push(pid);
        }
        Some(pid)
    }

    /// Until `/readyz` answers 200 and the pid file names a live process other than `not`.
    fn wait_ready(&mut self, not: Option<u32>) -> u32 {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(pid) = self.pid().filter(|p| Some(*p) != not && is_alive(*p))
                && http(self.port, "GET", "/readyz", None).0 == 200
            {
                return pid;
            }
            if Instant::now() > end {
                let out = std::fs::read_to_string(self.dir.path().join("serve.out"));
                panic!("the service on {} never got ready: {out:?}", self.url());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether `pid` is one of this operator's services (guards against a recycled pid).
    fn owns(&self, pid: u32) -> bool {
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
            String::from_utf8_lossy(&c).contains(&*self.dir.path().to_string_lossy())
        })
    }

    /// The policy of an operator with every capability, including the default policy.
    fn policy(&self) -> PathBuf {
        let text = format!(
            "# yaml-language-server: $schema={schema}\n\
             version: 1\n\
             name: remote-every-capability\n\
             include: ['{default}']\n\
             target:\n\
             \x20 url: {url}\n\
             \x20 admin_token: ${{env:PREFLIGHT_ADMIN_TOKEN}}\n\
             \x20 process: {{ pid_file: '{pid}', restart: [sh, '{script}'] }}\n\
             \x20 log_dir: '{logs}'\n\
             \x20 sqlite: '{db}'\n",
            schema = root().join("docs/policy.schema.json").display(),
            default = root().join("policies/production-hardening.yaml").display(),
            url = self.url(),
            pid = self.pid_file().display(),
            script = self.script().display(),
            logs = self.data_dir().join("logs").display(),
            db = self.data_dir().join("core.db").display(),
        );
        let p = self.dir.path().join("policy.yaml");
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.pid();
        for &pid in &self.seen {
            if is_alive(pid) && self.owns(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let end = Instant::now() + Duration::from_secs(5);
        while self.seen.iter().any(|p| is_alive(*p) && self.owns(*p)) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A port the service is started on, stopped and started again: outside the ephemeral range,
/// where no outgoing connection can take it in between (a restart that never got ready, with
/// thousands of connections opened by other tests beside it).
fn free_port() -> u16 {
    preflight::target::spawn::stable_port().unwrap_or_else(|| {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    })
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// One HTTP/1.0 request to 127.0.0.1:`port` (status, body); status 0 when nothing answers.
fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
    let Ok(mut s) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500))
    else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.0\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut text = String::new();
    if s.write_all(req.as_bytes()).is_err() || s.read_to_string(&mut text).is_err() {
        return (0, String::new());
    }
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// `preflight check ARGS --format json --no-progress` from the project root: (exit code,
/// report, seconds).
fn check(args: &[&str], token: Option<&str>) -> (i32, Value, f64) {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("report.json");
    let err_path = dir.path().join("stderr.txt");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_preflight"));
    cmd.current_dir(root())
        .env_remove("PREFLIGHT_ADMIN_TOKEN")
        .env_remove("RUST_LOG")
        .arg("check")
        .args(args)
        .args(["--format", "json", "--no-progress"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    if let Some(t) = token {
        cmd.env("PREFLIGHT_ADMIN_TOKEN", t);
    }
    let started = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > RUN_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("preflight check still running after {RUN_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let secs = started.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    let report = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}); stderr: {}",
            std::fs::read_to_string(&err_path).unwrap_or_default()
        )
    });
    (status.code().unwrap_or(-1), report, secs)
}

fn results(report: &Value) -> &Vec<Value> {
    report["results"].as_array().unwrap()
}

fn result<'a>(report: &'a Value, id: &str) -> &'a Value {
    results(report)
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no result {id}"))
}

fn with_status(report: &Value, status: &str) -> BTreeSet<String> {
    results(report)
        .iter()
        .filter(|r| r["status"] == status)
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

fn summaries(report: &Value) -> String {
    results(report)
        .iter()
        .map(|r| format!("{} {}: {}\n", r["status"], r["id"], r["summary"]))
        .collect()
}

/// The crash test really killed the pid in the pid file and restarted through the command:
/// the killed pid is gone, the pid file names the restarted one, which answers.
fn assert_killed_and_restarted(op: &mut Operator, report: &Value, pid_before: u32) -> u32 {
    let cr = result(report, "crash-recovery");
    let ev = &cr["evidence"];
    assert_eq!(ev["pid_killed"], pid_before, "{cr:#}");
    assert!(
        cr["sent"]
            .as_array()
            .unwrap()
            .contains(&json!(format!("SIGKILL pid {pid_before}"))),
        "{cr:#}"
    );
    assert!(
        !is_alive(pid_before),
        "the killed service {pid_before} lives"
    );
    let pid_after = op.wait_ready(Some(pid_before));
    assert_eq!(ev["pid_after_restart"], pid_after, "{cr:#}");
    pid_after
}

#[test]
fn every_capability_remote_target_is_go_on_core() {
    let _timing = crate::support::timing();
    let mut op = Operator::start("core.yaml");
    let pid_before = op.pid().unwrap();
    let policy = op.policy();
    let (code, report, secs) = check(&[policy.to_str().unwrap()], Some(&op.token.clone()));
    // The default policy's wall-time goal holds remotely too (spawned: same assertion).
    assert!(
        report["duration_ms"].as_u64().unwrap() < 60_000,
        "remote run took {secs:.1} s"
    );
    assert_eq!(report["verdict"], "GO", "{}", summaries(&report));
    assert_eq!(code, 0);
    assert_eq!(report["target"]["spawned"], false);
    assert_eq!(report["target"]["url"], op.url());
    assert_eq!(
        report["target"]["capabilities"],
        json!(["http", "admin", "process", "log_dir", "sqlite"])
    );
    // Every check of the included default policy ran and passed; none was skipped.
    assert_eq!(results(&report).len(), 18, "{}", summaries(&report));
    assert_eq!(
        with_status(&report, "PASS").len(),
        18,
        "{}",
        summaries(&report)
    );

    // RSS came from the remote pid (not the metric); the heap from the service's gauge.
    let mg = result(&report, "detectors-rss-bounded");
    assert_eq!(mg["evidence"]["source"], "process", "{mg:#}");
    let heap = result(&report, "detectors-leak-free");
    assert_eq!(heap["evidence"]["metric"], "heap_live_bytes", "{heap:#}");

    let pid_after = assert_killed_and_restarted(&mut op, &report, pid_before);
    assert_ne!(pid_after, pid_before);
    // The restarted service holds every acknowledged tick: ask it ourselves. The check
    // acknowledged `acknowledged` ticks with ids PREFIX-0 … PREFIX-(n-1) (whole batches).
    let cr = result(&report, "crash-recovery");
    let n = cr["evidence"]["acknowledged"].as_u64().unwrap();
    assert!(n >= 1000, "{cr:#}");
    let sent = cr["sent"][0].as_str().unwrap();
    let prefix = sent
        .split("(ids ")
        .nth(1)
        .and_then(|s| s.split("-N)").next())
        .unwrap_or_else(|| panic!("no id prefix in {sent:?}"));
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    let (status, body) = http(
        op.port,
        "POST",
        "/v1/ticks/lookup",
        Some(&json!({ "ids": ids })),
    );
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["present"], n, "{body:#}");
    assert_eq!(body["missing"], json!([]));
    // And it restored the snapshot taken before the kill.
    let restored = cr["evidence"]["restored_generation"].as_u64().unwrap();
    assert!(restored >= cr["evidence"]["snapshot_generation"].as_u64().unwrap());
}

#[test]
fn every_capability_remote_target_is_no_go_before_hardening_like_spawned() {
    let _timing = crate::support::timing();
    let mut op = Operator::start("before-hardening.yaml");
    let pid_before = op.pid().unwrap();
    let policy = op.policy();
    let (code, report, secs) = check(&[policy.to_str().unwrap()], Some(&op.token.clone()));
    assert!(secs < 120.0, "remote run took {secs:.1} s");
    assert_eq!(report["verdict"], "NO-GO", "{}", summaries(&report));
    assert_eq!(code, 1);
    let expected: BTreeSet<String> = crate::support::BEFORE_HARDENING_FAILS
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        with_status(&report, "FAIL"),
        expected,
        "{}",
        summaries(&report)
    );
    let not_failed = results(&report).len() - expected.len();
    assert_eq!(
        with_status(&report, "PASS").len(),
        not_failed,
        "{}",
        summaries(&report)
    );
    // It failed for the right reason (no snapshot), not because the restart went wrong.
    let pid_after = assert_killed_and_restarted(&mut op, &report, pid_before);
    assert_ne!(pid_after, pid_before);
    let cr = result(&report, "crash-recovery");
    assert_eq!(cr["evidence"]["missing"], json!([]), "{cr:#}");
}

/// With only `--target URL`, the checks that need a capability the URL does not give SKIP,
/// each naming the policy field that would give it, and the verdict is INCONCLUSIVE; the
/// rest (HTTP only, including memory growth read from `/metrics`) still run and pass.
#[test]
fn url_only_remote_target_skips_what_it_cannot_prove_and_is_inconclusive() {
    let _timing = crate::support::timing();
    let op = Operator::start("core.yaml");
    // No token anywhere: the service has one, the check does not.
    let (code, report, secs) = check(&["--target", &op.url()], None);
    assert!(secs < 120.0, "remote run took {secs:.1} s");
    assert_eq!(report["verdict"], "INCONCLUSIVE", "{}", summaries(&report));
    assert_eq!(code, 3);
    assert_eq!(report["target"]["capabilities"], json!(["http"]));
    let hints = [
        ("tmux-status-fast", "target.sqlite"),
        ("query-timeout", "target.admin_token"),
        ("feed-breaker", "target.admin_token"),
        ("load-shedding", "target.admin_token"),
        ("log-retention", "target.log_dir"),
        ("store-retention", "target.admin_token"),
        ("store-full", "target.admin_token"),
        ("crash-recovery", "target.process.pid_file"),
        ("log-counts-consistent", "target.sqlite"),
    ];
    let expected: BTreeSet<String> = hints.iter().map(|(id, _)| id.to_string()).collect();
    assert_eq!(
        with_status(&report, "SKIP"),
        expected,
        "{}",
        summaries(&report)
    );
    for (id, field) in hints {
        let r = result(&report, id);
        let summary = r["summary"].as_str().unwrap();
        assert!(summary.contains(field), "{id}: {summary}");
        assert_eq!(r["blocking"], r["severity"] != "medium", "{r:#}");
    }
    let ran = results(&report).len() - expected.len();
    assert_eq!(
        with_status(&report, "PASS").len(),
        ran,
        "{}",
        summaries(&report)
    );
    let mg = result(&report, "detectors-rss-bounded");
    assert_eq!(mg["evidence"]["source"], "metric", "{mg:#}");
    assert!(
        report["verdict_reason"]
            .as_str()
            .unwrap()
            .contains("crash-recovery"),
        "{}",
        report["verdict_reason"]
    );
}

/// `serve --pid-file`: written (whole) by the time the address is printed and the service
/// answers; removed on SIGTERM; left behind by kill -9; overwritten by the next start.
#[test]
fn pid_file_lifecycle() {
    let mut op = Operator::start("core.yaml");
    let first = op.pid().unwrap();
    let out = std::fs::read_to_string(op.dir.path().join("serve.out")).unwrap();
    assert!(
        out.starts_with(&format!("listening on {}\n", op.url())),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(op.pid_file()).unwrap(),
        format!("{first}\n")
    );

    // Graceful: SIGTERM → the process exits and its pid file is gone.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    while is_alive(first) || op.pid_file().exists() {
        assert!(
            Instant::now() < end,
            "after SIGTERM: alive {}, pid file {}",
            is_alive(first),
            op.pid_file().exists()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // kill -9 leaves the pid file behind, naming the dead process…
    op.run_script();
    let second = op.wait_ready(Some(first));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(second as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    while is_alive(second) {
        assert!(Instant::now() < end, "{second} survived SIGKILL");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        read_pid(&op.pid_file()),
        Some(second),
        "stale pid file kept"
    );

    // …and the next start overwrites it.
    op.run_script();
    let third = op.wait_ready(Some(second));
    assert_ne!(third, second);
    assert_eq!(read_pid(&op.pid_file()), Some(third));
}
