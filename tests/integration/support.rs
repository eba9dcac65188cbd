//! Helpers to run the real `preflight serve` binary on a loopback port in a temporary data
//! directory, and to talk to it from distinct loopback source addresses.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn config(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(name)
}

/// A config derived from `base` by exact text replacements (each must apply), written into
/// `dir`.
pub fn patched(base: &str, dir: &Path, edits: &[(&str, &str)]) -> PathBuf {
    let mut text = std::fs::read_to_string(config(base)).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "`{from}` not in {base}");
        text = text.replacen(from, to, 1);
    }
    // The copy lives elsewhere: a relative `extends:` must still reach the shipped file.
    let parent = config(base).parent().unwrap().to_path_buf();
    let text: String = text
        .lines()
        .map(|l| match l.strip_prefix("extends: ") {
            Some(rel) => format!("extends: {}\n", parent.join(rel.trim()).display()),
            None => format!("{l}\n"),
        })
        .collect();
    let p = dir.join(format!("test-{}", base.replace('/', "-")));
    std::fs::write(&p, text).unwrap();
    p
}

/// A running service; killed on drop.
pub struct Service {
    pub child: Child,
    pub url: String,
    pub token: String,
    pub data_dir: PathBuf,
}

static NEXT_ADDR: AtomicU32 = AtomicU32::new(1);

/// A fresh loopback source address (127.x.y.z, never in 127.0.0.0/16), unique in this
/// process.
pub fn fresh_ip() -> IpAddr {
    // Regression: `d.max(2)` used to map the counter's low bytes 0, 1 and 2 to the same
    // address, so two "fresh" clients could share one rate-limit bucket.
    let n = NEXT_ADDR.fetch_add(1, Ordering::Relaxed);
    let d = 2 + (n % 250) as u8;
    let c = ((n / 250) % 256) as u8;
    let b = 1 + ((std::process::id() % 64 + n / (250 * 256)) % 250) as u8;
    IpAddr::V4(Ipv4Addr::new(127, b, c, d))
}

impl Service {
    pub fn start(config: &Path, data_dir: &Path) -> Service {
        Self::start_with(config, data_dir, Some(&random_token()))
    }

    pub fn start_with(config: &Path, data_dir: &Path, token: Option<&str>) -> Service {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_preflight"));
        cmd.arg("serve")
            .arg("--config")
            .arg(config)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env_remove("PREFLIGHT_ADMIN_TOKEN")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        std::fs::create_dir_all(data_dir).unwrap();
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.join("stderr.txt"))
            .unwrap();
        cmd.stderr(Stdio::from(err));
        if let Some(t) = token {
            cmd.args(["--admin-token", t]);
        }
        let mut child = cmd.spawn().expect("spawn preflight serve");
        let line = first_line(child.stdout.take().unwrap(), Duration::from_secs(60));
        let Some(url) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            let log = std::fs::read_to_string(data_dir.join("stderr.txt")).unwrap_or_default();
            panic!("service did not start: first line {line:?}\n{log}");
        };
        Service {
            child,
            url: url.to_string(),
            token: token.unwrap_or_default().to_string(),
            data_dir: data_dir.to_path_buf(),
        }
    }

    /// A client with its own source address (so rate limits do not spill between tests).
    pub fn client(&self) -> reqwest::Client {
        client_from(fresh_ip())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub async fn admin(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        let c = preflight::http_client::client();
        let req = match method {
            "DELETE" => c.delete(self.url(path)),
            _ => c.post(self.url(path)).json(&body),
        };
        let r = req.bearer_auth(&self.token).send().await.unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn status(&self) -> Value {
        get_json(&preflight::http_client::client(), &self.url("/status"))
            .await
            .1
    }

    pub async fn metrics(&self) -> String {
        get_text(&self.url("/metrics")).await
    }

    /// The value of one unlabelled or labelled series in `/metrics`.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = self.metrics().await;
        metric_value(&text, series)
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits (bounded) for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "service did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client_from(ip: IpAddr) -> reqwest::Client {
    preflight::http_client::builder()
        .local_address(ip)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub fn random_token() -> String {
    use rand::RngExt;
    let mut rng = rand::rng();
    (0..32)
        .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)]))
        .collect()
}

/// The body of `url` as text, whatever its status.
pub async fn get_text(url: &str) -> String {
    preflight::http_client::client()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

pub async fn get_json(c: &reqwest::Client, url: &str) -> (u16, Value) {
    let r = c.get(url).send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

pub async fn post_json(c: &reqwest::Client, url: &str, body: &Value) -> (u16, Value) {
    let r = c.post(url).json(body).send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The result of check `id` in a JSON report.
pub fn by_id<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no result {id} in {report:#}"))
}

/// Polls `f` until it returns `Some`, or panics at the deadline.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An outcome's summary and every observation, one per line, for assertion messages.
pub fn explain(o: &preflight::outcome::Outcome) -> String {
    let mut s = format!("{}\n", o.summary);
    for ob in &o.observations {
        s += &format!(
            "  [{}] {}: expected {}, observed {}\n",
            if ob.ok { "ok" } else { "NOT OK" },
            ob.what,
            ob.expected,
            ob.observed
        );
    }
    s
}

/// The first line a child process prints on `stdout` (its `listening on URL`), or "" after
/// `timeout`: read on a thread, so a child that never prints cannot hang the test.
pub fn first_line(stdout: std::process::ChildStdout, timeout: Duration) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    rx.recv_timeout(timeout).unwrap_or_default()
}

/// Serves `app` on a free port of 127.0.0.1 with each request's peer address
/// (`ConnectInfo`); returns its base URL. The server lives as long as the test's runtime.
pub async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await;
    });
    format!("http://{addr}")
}

/// Serializes the tests whose verdicts depend on timing or that load the machine (bursts,
/// floods, latency budgets, kill -9 loops): on a 2-core box two of them at once would measure
/// each other. Cheap tests still run in parallel. Poison-tolerant: one failed test must not
/// fail the rest.
pub fn timing() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// The checks of the default policy that FAIL on `config/before-hardening.yaml`: one or more
/// per defect the hardening fixed (the spawned and the remote runs must agree on this set).
pub const BEFORE_HARDENING_FAILS: &[&str] = &[
    "status-fields",
    "detectors-built-once",
    "detectors-leak-free",
    "detectors-rss-bounded",
    "per-ip-rate-limit",
    "query-timeout",
    "feed-breaker",
    "load-shedding",
    "log-retention",
    "store-retention",
    "store-full",
    "crash-recovery",
];

/// nginx, started by hand on its own loopback address, as root or not; stopped on drop.
pub struct Nginx {
    child: Child,
    pub ip: IpAddr,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// `http` directives added to the `http` block and `server` ones to the server block;
    /// `{dir}` in either is the server's own directory (with `www/index.html` in it).
    pub fn start(http: &str, server: &str) -> Nginx {
        let bin = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("nginx is not installed (.ci/run installs Debian's nginx-light)");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("www")).unwrap();
        std::fs::write(
            p.join("www/index.html"),
            "<!doctype html><title>static</title>\n",
        )
        .unwrap();
        let ip = fresh_ip();
        let conf = format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log stderr;\nevents {{}}\n\
             http {{\n  access_log off;\n  types {{ text/html html; }}\n  default_type application/octet-stream;\n\
             client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
             uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             {http}\n  server {{\n    listen {ip}:8080;\n    {server}\n  }}\n}}\n",
            d = p.display(),
            http = http.replace("{dir}", &p.display().to_string()),
            server = server.replace("{dir}", &p.display().to_string()),
        );
        std::fs::write(p.join("nginx.conf"), conf).unwrap();
        let child = Command::new(bin)
            .arg("-p")
            .arg(p)
            .arg("-c")
            .arg(p.join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let end = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect((ip, 8080)).is_err() {
            assert!(Instant::now() < end, "nginx did not listen on {ip}:8080");
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx {
            child,
            ip,
            _dir: dir,
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
