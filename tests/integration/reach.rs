//! Reaching a target the way a deployment is reached: fresh client addresses per run, a
//! server that closes every connection, IPv6 and host names, headers, and (when the machine
//! allows network namespaces) a target on another host's address.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::support;

/// Says clearly, on the test's output, that a test could not run on this machine and why
/// (the suite's only print: a silent early return would look like a pass).
#[allow(clippy::print_stderr)]
pub fn not_run_here(why: &str) {
    eprintln!("NOT RUN HERE: {why}");
}

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

// ---------------------------------------------------------------------------------------
// A server that closes every connection (issue 15, "a right service judged wrong" 1).

/// How the fake server answers.
#[derive(Debug, Clone, Copy)]
pub enum Style {
    /// `HTTP/1.0 200 OK`, no `Connection` header, then close (Python's http.server).
    Http10,
    /// `HTTP/1.1 200 OK` with `Connection: close`, then close.
    Http11Close,
}

/// A small HTTP server that answers one request per connection and closes it. `/limited`
/// has a per-client-address token bucket (`burst`, `refill`/s; 429 with `Retry-After`);
/// every other path answers 200. With `drop_every: n`, every n-th connection is closed
/// without an answer (a real failure). With `auth`, a request without exactly that
/// `Authorization` value is answered 401. Stops after `max_conns` connections or `lifetime`.
pub struct ClosingServer {
    pub port: u16,
    pub served: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

pub fn closing_server(
    style: Style,
    burst: f64,
    refill: f64,
    drop_every: Option<u64>,
    max_conns: u64,
    lifetime: std::time::Duration,
    auth: Option<&str>,
) -> ClosingServer {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = Arc::new(AtomicU64::new(0));
    let served2 = served.clone();
    let auth: Option<String> = auth.map(str::to_string);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let buckets: Arc<Mutex<HashMap<std::net::IpAddr, (f64, std::time::Instant)>>> =
                Arc::default();
            let end = tokio::time::Instant::now() + lifetime;
            let mut n = 0u64;
            while n < max_conns {
                let Ok(Ok((mut s, peer))) = tokio::time::timeout_at(end, listener.accept()).await
                else {
                    break;
                };
                n += 1;
                let nth = n;
                let buckets = buckets.clone();
                let served = served2.clone();
                let auth = auth.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::with_capacity(1024);
                    let mut chunk = [0u8; 1024];
                    let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16384 {
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return false,
                                Ok(k) => buf.extend_from_slice(&chunk[..k]),
                            }
                        }
                        true
                    })
                    .await;
                    if read != Ok(true) {
                        return;
                    }
                    if drop_every.is_some_and(|d| nth.is_multiple_of(d)) {
                        return; // closed without an answer
                    }
                    let head = String::from_utf8_lossy(&buf);
                    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                    let authorized = auth.as_ref().is_none_or(|want| {
                        head.lines().any(|l| {
                            l.split_once(':').is_some_and(|(k, v)| {
                                k.eq_ignore_ascii_case("authorization") && v.trim() == want
                            })
                        })
                    });
                    let allowed = if !authorized {
                        false
                    } else if path.starts_with("/limited") {
                        let mut b = buckets.lock().unwrap();
                        let now = std::time::Instant::now();
                        let e = b.entry(peer.ip()).or_insert((burst, now));
                        e.0 = (e.0 + refill * now.duration_since(e.1).as_secs_f64()).min(burst);
                        e.1 = now;
                        if e.0 >= 1.0 {
                            e.0 -= 1.0;
                            true
                        } else {
                            false
                        }
                    } else {
                        true
                    };
                    let (status, extra) = if !authorized {
                        ("401 Unauthorized", "")
                    } else if allowed {
                        ("200 OK", "")
                    } else {
                        ("429 Too Many Requests", "Retry-After: 1\r\n")
                    };
                    let resp = match style {
                        Style::Http10 => format!(
                            "HTTP/1.0 {status}\r\nServer: fake\r\n{extra}Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
                        ),
                        Style::Http11Close => format!(
                            "HTTP/1.1 {status}\r\n{extra}Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                        ),
                    };
                    if s.write_all(resp.as_bytes()).await.is_ok() {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = s.shutdown().await;
                });
            }
        });
    });
    ClosingServer { port, served }
}

const CLOSING_POLICY: &str = "\
version: 1
name: closing-server
checks:
  - id: slo
    kind: load_slo
    request: GET /ok
    rate: 200/s
    duration: 3s
    connections: 8
    thresholds: [\"errors < 1%\"]
  - id: limit
    kind: rate_limit
    request: GET /limited
    burst: 100
    refill: 10/s
    tolerance: 5%
    require_headers: [Retry-After]
";

fn run_closing(server: &ClosingServer) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("closing.yaml");
    std::fs::write(&policy, CLOSING_POLICY).unwrap();
    let url = format!("http://127.0.0.1:{}", server.port);
    check_json(&[policy.to_str().unwrap(), "--target", &url], &[])
}

/// A correct service that closes every connection after its answer (HTTP/1.0 style, and
/// HTTP/1.1 with `Connection: close`): `load_slo` saw 49.6 % errors and `rate_limit` got 75
/// of 120 requests through, because requests written to connections the server had already
/// closed counted as sent and failed. Both must PASS.
#[test]
fn a_server_closing_every_connection_is_judged_right() {
    let _t = support::timing();
    for style in [Style::Http10, Style::Http11Close] {
        let server = closing_server(
            style,
            100.0,
            10.0,
            None,
            5_000,
            std::time::Duration::from_secs(60),
            None,
        );
        let run = run_closing(&server);
        let slo = run.result("slo");
        assert_eq!(slo["status"], "PASS", "{style:?}: {slo:#}");
        let limit = run.result("limit");
        assert_eq!(limit["status"], "PASS", "{style:?}: {limit:#}");
        assert_eq!(run.json["verdict"], "GO", "{style:?}");
    }
}

/// The other side: a server that closes every fifth connection without answering fails
/// `load_slo` on errors — a retry must never hide a real failure.
#[test]
fn a_server_dropping_requests_still_fails_load_slo() {
    let _t = support::timing();
    let server = closing_server(
        Style::Http10,
        100.0,
        10.0,
        Some(5),
        5_000,
        std::time::Duration::from_secs(60),
        None,
    );
    let run = run_closing(&server);
    let slo = run.result("slo");
    assert_eq!(slo["status"], "FAIL", "{slo:#}");
    let errors = slo["observations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["what"].as_str().unwrap_or("").contains("error"))
        .unwrap_or_else(|| panic!("no error observation: {slo:#}"));
    assert_eq!(errors["ok"], false, "{slo:#}");
}

/// The checks' HTTP client (reqwest) on the same server: no request of a series fails
/// because the previous answer closed its connection.
#[tokio::test]
async fn the_check_client_survives_a_server_closing_every_connection() {
    use preflight::target::{Ctx, Target};
    for style in [Style::Http10, Style::Http11Close] {
        let server = closing_server(
            style,
            1000.0,
            10.0,
            None,
            200,
            std::time::Duration::from_secs(60),
            None,
        );
        let target = Target::remote(&format!("http://127.0.0.1:{}", server.port));
        let ctx = Ctx::standalone(
            std::sync::Arc::new(target),
            support::fresh_ip(),
            vec![],
            std::time::Duration::from_secs(60),
            1000,
        );
        let http = ctx.http().unwrap();
        for i in 0..50 {
            let r = http.get("/ok").await;
            assert!(
                r.as_ref().is_ok_and(|r| r.status == 200),
                "{style:?} request {i}: {r:?}"
            );
        }
        // The server counts an answer once written; poll (bounded) until it has counted all.
        let served = || server.served.load(std::sync::atomic::Ordering::Relaxed);
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while served() < 50 && std::time::Instant::now() < end {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(served(), 50, "{style:?}: one answer per request, none lost");
    }
}

// ---------------------------------------------------------------------------------------
// IPv6, host names, headers.

/// `preflight serve --config core.yaml --listen LISTEN` in `dir`; killed on drop.
pub struct Served {
    pub child: std::process::Child,
    pub url: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the core service on `listen` (prefixing the command with `prefix`, e.g.
/// `ip netns exec NS`), with `token` as its admin token; waits (bounded) for its address.
pub fn serve_on(prefix: &[&str], listen: &str, dir: &Path, token: &str) -> Served {
    use std::io::BufRead;
    let exe = env!("CARGO_BIN_EXE_preflight");
    let mut cmd = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    std::fs::create_dir_all(dir).unwrap();
    cmd.arg("serve")
        .arg("--config")
        .arg(support::config("core.yaml"))
        .args(["--listen", listen, "--admin-token", token, "--data-dir"])
        .arg(dir)
        .env_remove("RUST_LOG")
        .env_remove("PREFLIGHT_ADMIN_TOKEN")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::from(
            std::fs::File::create(dir.join("stderr.txt")).unwrap(),
        ));
    let mut child = cmd.spawn().expect("spawning preflight serve");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .unwrap_or_default();
    let Some(url) = line.trim().strip_prefix("listening on ") else {
        let _ = child.kill();
        let log = std::fs::read_to_string(dir.join("stderr.txt")).unwrap_or_default();
        panic!("service on {listen} did not start: {line:?}\n{log}");
    };
    Served {
        child,
        url: url.to_string(),
    }
}

fn port_of(url: &str) -> String {
    url.rsplit(':').next().unwrap().to_string()
}

/// Regression (issue 17): `--target http://[::1]:PORT` was "has no IPv4 address", ERROR.
#[test]
fn an_ipv6_literal_target_is_checked() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        not_run_here("this machine has no IPv6 loopback (::1)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let svc = serve_on(&[], "[::1]:0", dir.path(), &support::random_token());
    let url = format!("http://[::1]:{}", port_of(&svc.url));
    let run = check_json(&["policies/smoke.yaml", "--target", &url], &[]);
    assert_eq!(
        run.json["verdict"],
        "GO",
        "{:?} {:#}",
        run.statuses(),
        run.json["results"]
    );
    assert_eq!(
        run.json["target"]["address"],
        format!("[::1]:{}", port_of(&svc.url))
    );
}

/// A host name: the first of its addresses that accepts a connection is checked and named.
#[test]
fn a_host_name_target_reports_the_address_checked() {
    let dir = tempfile::tempdir().unwrap();
    let svc = serve_on(&[], "127.0.0.1:0", dir.path(), &support::random_token());
    let port = port_of(&svc.url);
    let url = format!("http://localhost:{port}");
    let run = check_json(&["policies/smoke.yaml", "--target", &url], &[]);
    assert_eq!(run.json["verdict"], "GO", "{:?}", run.statuses());
    assert_eq!(run.json["target"]["address"], format!("127.0.0.1:{port}"));
    assert_eq!(run.json["target"]["url"], url);
}

/// `target.headers` reach the target on every request (the checks' client and the load
/// generator), and the interpolated value is printed nowhere.
#[test]
fn target_headers_are_sent_and_never_printed() {
    let _t = support::timing();
    let secret = format!("Bearer gw-{}", support::random_token());
    let server = closing_server(
        Style::Http11Close,
        1000.0,
        1000.0,
        None,
        2_000,
        std::time::Duration::from_secs(60),
        Some(&secret),
    );
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("gw.yaml");
    std::fs::write(
        &policy,
        format!(
            "version: 1\nname: gateway\ntarget:\n  url: http://127.0.0.1:{}\n  headers:\n    \
             Authorization: ${{env:GW_TOKEN}}\nchecks:\n  - id: ok\n    kind: http\n    \
             request: GET /ok\n    expect: {{ status: 200 }}\n  - id: slo\n    kind: load_slo\n    \
             request: GET /ok\n    rate: 50/s\n    duration: 1s\n    connections: 2\n    \
             thresholds: [\"errors < 1%\"]\n",
            server.port
        ),
    )
    .unwrap();
    let p = policy.to_str().unwrap();
    let run = check_json(&[p], &[("GW_TOKEN", &secret)]);
    assert_eq!(run.json["verdict"], "GO", "{:#}", run.json["results"]);
    let json = run.json.to_string();
    assert!(!json.contains(&secret[7..]), "the token leaked: {json}");
    // Every other format too.
    for format in ["human", "markdown", "junit", "html"] {
        let out = Command::new(env!("CARGO_BIN_EXE_preflight"))
            .current_dir(root())
            .args(["check", p, "--no-progress", "--format", format])
            .env("GW_TOKEN", &secret)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(!text.contains(&secret[7..]), "{format}: the token leaked");
        assert_eq!(out.status.code(), Some(0), "{format}: {text}");
    }
    // Without the header, the gateway answers 401: the checks FAIL.
    let run = check_json(&[p], &[("GW_TOKEN", "Bearer wrong")]);
    assert_eq!(run.result("ok")["status"], "FAIL");
}

// ---------------------------------------------------------------------------------------
// Another host: the core service in a network namespace (issue 17 "Must show").
//
// The rig uses only TEST-NET-2 and a ULA prefix, inside a namespace it creates: the host end
// of a veth pair has 198.51.100.1/24 (aliases .11–.13) and fd00:7::1/64 (aliases ::11–::13),
// the namespace end 198.51.100.2/24 and fd00:7::2/64. Everything is removed on drop.

/// Serializes the namespace tests: they use the same addresses.
static NETNS: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub struct Netns {
    pub name: String,
    host_if: String,
    // Declared last: released after the rig is removed (fields drop in order).
    _lock: MachineLock,
}

/// A machine-wide lock: a directory created atomically, holding its owner's pid; taken over
/// when the owner is gone, waited for (bounded) otherwise.
struct MachineLock(std::path::PathBuf);

impl MachineLock {
    fn take() -> Result<MachineLock, String> {
        let dir = std::env::temp_dir().join("preflight-netns-rig.lock");
        let end = std::time::Instant::now() + std::time::Duration::from_secs(600);
        loop {
            match std::fs::create_dir(&dir) {
                Ok(()) => {
                    let _ = std::fs::write(dir.join("pid"), std::process::id().to_string());
                    return Ok(MachineLock(dir));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let owner = std::fs::read_to_string(dir.join("pid")).unwrap_or_default();
                    let owner = owner.trim();
                    if !owner.is_empty() && !Path::new(&format!("/proc/{owner}")).exists() {
                        let _ = std::fs::remove_dir_all(&dir);
                        continue;
                    }
                    if std::time::Instant::now() > end {
                        return Err(format!(
                            "{} held by pid {owner} for 10 minutes",
                            dir.display()
                        ));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                Err(e) => return Err(format!("{}: {e}", dir.display())),
            }
        }
    }
}

impl Drop for MachineLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("`ip` not runnable ({e}); install iproute2"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}`: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    /// Creates the rig, or says why this machine does not allow it.
    pub fn create() -> Result<Netns, String> {
        let tag = format!("{}", std::process::id());
        let name = format!("pfreach{tag}");
        let host_if = format!("pfh{tag}");
        let ns_if = format!("pfn{tag}");
        // The addresses are fixed, so one rig at a time on the machine, across processes
        // (other worktrees run this test too): a lock directory naming its owner's pid.
        let lock = MachineLock::take()?;
        // A rig left by a killed run of this test (same interface prefix, owner process
        // gone) holds the addresses: remove it first. A live process's rig is never touched.
        if let Ok(out) = Command::new("ip").args(["-o", "link", "show"]).output() {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some(old) = line.split(": ").nth(1).and_then(|n| n.split('@').next()) {
                    let owner = old.strip_prefix("pfh").unwrap_or("");
                    if !owner.is_empty()
                        && owner.chars().all(|c| c.is_ascii_digit())
                        && !Path::new(&format!("/proc/{owner}")).exists()
                    {
                        let _ = ip(&["link", "del", old]);
                        let _ = ip(&["netns", "del", &format!("pfreach{owner}")]);
                    }
                }
            }
        }
        ip(&["netns", "add", &name])?;
        let ns = Netns {
            name: name.clone(),
            host_if: host_if.clone(),
            _lock: lock,
        };
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ])?;
        ip(&["link", "set", &ns_if, "netns", &name])?;
        for a in [
            "198.51.100.1/24",
            "198.51.100.11/24",
            "198.51.100.12/24",
            "198.51.100.13/24",
        ] {
            ip(&["addr", "add", a, "dev", &host_if])?;
        }
        for a in [
            "fd00:7::1/64",
            "fd00:7::11/64",
            "fd00:7::12/64",
            "fd00:7::13/64",
        ] {
            ip(&["-6", "addr", "add", a, "dev", &host_if, "nodad"])?;
        }
        ip(&["link", "set", &host_if, "up"])?;
        let exec = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &name, "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        exec(&["addr", "add", "198.51.100.2/24", "dev", &ns_if])?;
        exec(&["-6", "addr", "add", "fd00:7::2/64", "dev", &ns_if, "nodad"])?;
        exec(&["link", "set", &ns_if, "up"])?;
        exec(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `preflight serve` inside the namespace on `listen`.
    pub fn serve(&self, listen: &str, dir: &Path, token: &str) -> Served {
        serve_on(&["ip", "netns", "exec", &self.name], listen, dir, token)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// The `rate_limit` result of a run of the default policy's `per-ip-rate-limit` alone.
fn rate_limit_only(url: &str, token: &str, sources: &[&str]) -> Value {
    let mut args = vec![
        "policies/production-hardening.yaml",
        "--target",
        url,
        "--admin-token",
        token,
        "--only",
        "ready,per-ip-rate-limit",
    ];
    for s in sources {
        args.extend(["--source-address", s]);
    }
    let run = check_json(&args, &[]);
    run.result("per-ip-rate-limit").clone()
}

fn neighbour_observation(r: &Value) -> Option<&Value> {
    r["observations"].as_array()?.iter().find(|o| {
        let what = o["what"].as_str().unwrap_or("");
        what.starts_with("other clients") || what.contains("another client")
    })
}

/// Everything the rig must show for one address family: `smoke.yaml` GO, the default policy
/// with URL and admin token as against a loopback remote target, and `rate_limit` with one
/// and with two declared client addresses.
fn prove_rig(listen: &str, url_host: &str, one: &str, two: &str, baseline: &Run) {
    let dir = tempfile::tempdir().unwrap();
    let ns = match Netns::create() {
        Ok(ns) => ns,
        Err(why) => {
            not_run_here(&format!(
                "network namespaces are not available ({why}); run as root with iproute2"
            ));
            return;
        }
    };
    let token = support::random_token();
    let svc = ns.serve(listen, &dir.path().join("data"), &token);
    let url = format!("http://{url_host}:{}", port_of(&svc.url));

    let smoke = check_json(&["policies/smoke.yaml", "--target", &url], &[]);
    assert_eq!(
        smoke.json["verdict"],
        "GO",
        "smoke on {url}: {:?}\n{:#}",
        smoke.statuses(),
        smoke.json["results"]
    );

    // One declared address: the rate limit itself is proven; the neighbour part cannot be.
    let r = rate_limit_only(&url, &token, &[one]);
    let failing: Vec<&Value> = r["observations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["ok"] == false)
        .collect();
    assert!(
        failing.iter().all(|o| {
            let what = o["what"].as_str().unwrap_or("");
            what.starts_with("other clients") || what.contains("another client")
        }),
        "with one address only the neighbour part may be unproven: {r:#}"
    );
    assert!(r["status"] == "PASS" || r["status"] == "FAIL", "{r:#}");
    let first = r["observations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["what"] == "accepted in the first burst")
        .unwrap_or_else(|| panic!("no first burst: {r:#}"));
    assert_eq!(first["ok"], true, "{r:#}");
    // Two: the neighbour is proven from the second.
    let r = rate_limit_only(&url, &token, &[one, two]);
    assert_eq!(r["status"], "PASS", "{r:#}");
    let n = neighbour_observation(&r).expect("a neighbour observation");
    let what = n["what"].as_str().unwrap();
    assert!(
        n["ok"] == true
            && (what.contains(&format!("({one})")) || what.contains(&format!("({two})"))),
        "the neighbour is the other declared address: {n:#}"
    );

    // The default policy with URL and admin token: the loopback remote target's verdicts.
    // The rate-limit runs above ended with both addresses' buckets drained; the loopback
    // run starts every check on a fresh address. Let them refill first: core.yaml's bucket
    // holds 100 and refills 10 a second, so 10 s fills it whatever state it was left in (CI
    // saw `status-fields` answered 429 when the run started right after the last burst).
    std::thread::sleep(CORE_BUCKET_REFILL);
    let mut args = vec![
        "policies/production-hardening.yaml",
        "--target",
        &url,
        "--admin-token",
        &token,
    ];
    let declared = [one, two];
    for s in &declared {
        args.extend(["--source-address", s]);
    }
    let run = check_json(&args, &[]);
    let (mut got, mut want) = (run.statuses(), baseline.statuses());
    // With two addresses for fifteen checks, the checks share the service's per-client
    // buckets, which the loopback run (a block of addresses per check) does not. The checks
    // that measure through those buckets wait (bounded) for them to refill; what they still
    // cannot prove is INCONCLUSIVE or SKIP naming `target.source_addresses` — never a false
    // FAIL, and never an ERROR.
    for id in SHARED_BUCKET_CHECKS {
        let status = got.remove(*id).unwrap_or_default();
        let reference = want.remove(*id).unwrap_or_default();
        assert_ne!(status, "ERROR", "{id} on {url}: {:#}", run.result(id));
        if !id.starts_with("detectors-") && reference == "PASS" {
            assert!(
                ["PASS", "INCONCLUSIVE", "SKIP"].contains(&status.as_str()),
                "{id} on {url}: {status} where the loopback run PASSed: {:#}",
                run.result(id)
            );
        }
    }
    assert_eq!(got, want, "{url} vs loopback:\n{:#}", run.json["results"]);
    drop(svc);
}

/// How long core.yaml's per-client bucket takes to fill from empty (`burst: 100` at
/// `per_second: 10`), with a margin for a loaded machine's timers.
const CORE_BUCKET_REFILL: std::time::Duration = std::time::Duration::from_millis(10_500);

/// Checks of the default policy whose verdict depends on fresh per-client rate-limit buckets
/// (held to "never a false FAIL" here) — and the two memory checks, whose 1 000 builds from
/// shared addresses go at the limiter's refill rate and may not finish in time (only "not
/// ERROR"; the RSS one also FAILed the *loopback baseline* once on this loaded 2-core
/// machine, issue 15 #7).
const SHARED_BUCKET_CHECKS: &[&str] = &[
    "per-ip-rate-limit",
    "load-shedding",
    "feed-breaker",
    "detectors-leak-free",
    "detectors-rss-bounded",
];

/// The default policy against a loopback remote target, with URL and admin token.
fn loopback_baseline() -> Run {
    let dir = tempfile::tempdir().unwrap();
    let token = support::random_token();
    let svc = serve_on(&[], "127.0.0.1:0", dir.path(), &token);
    check_json(
        &[
            "policies/production-hardening.yaml",
            "--target",
            &svc.url,
            "--admin-token",
            &token,
        ],
        &[],
    )
}

#[test]
fn another_host_over_ipv4() {
    let _n = NETNS.lock().unwrap_or_else(|p| p.into_inner());
    let _t = support::timing();
    let baseline = loopback_baseline();
    prove_rig(
        "198.51.100.2:0",
        "198.51.100.2",
        "198.51.100.11",
        "198.51.100.12",
        &baseline,
    );
}

#[test]
fn another_host_over_ipv6() {
    let _n = NETNS.lock().unwrap_or_else(|p| p.into_inner());
    let _t = support::timing();
    let baseline = loopback_baseline();
    prove_rig(
        "[fd00:7::2]:0",
        "[fd00:7::2]",
        "fd00:7::11",
        "fd00:7::12",
        &baseline,
    );
}
