//! Spawning the bundled core service (`preflight serve`, the same executable) on a free
//! loopback port in a temporary directory, restarting it on the same address after a crash
//! test, and stopping it cleanly.
//!
//! The port is chosen outside the kernel's ephemeral range ([`stable_port`]): a port from
//! that range (what `:0` gives) can be taken as the source port of any outgoing connection
//! while the killed service is down, and the restart then finds it in use. The checks
//! themselves open thousands of connections (`memory_growth` one per request).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::outcome::CheckError;

/// The lowest port [`stable_port`] picks from.
const STABLE_FLOOR: u16 = 10_000;

/// A loopback port below the kernel's ephemeral range (`ip_local_port_range`) that is free
/// now. The kernel never hands such a port to an outgoing connection, so it stays free for a
/// service that is stopped and started again on it. `None` when the range leaves no room
/// (or cannot be read) or no free port turned up.
pub fn stable_port() -> Option<u16> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let low: u16 = range.split_whitespace().next()?.parse().ok()?;
    if low <= STABLE_FLOOR + 1_000 {
        return None;
    }
    (0..64).find_map(|_| {
        let port = rand::random_range(STABLE_FLOOR..low);
        std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port))
            .is_ok()
            .then_some(port)
    })
}

/// A spawned core service. Dropping it kills the child.
#[derive(Debug)]
pub struct Spawned {
    exe: PathBuf,
    config: PathBuf,
    data_dir: PathBuf,
    token: String,
    addr: String,
    child: Mutex<Option<Child>>,
    /// Keeps the temporary directory alive as long as the target.
    _tmp: Option<tempfile::TempDir>,
}

/// What `spawn` was asked for.
#[derive(Debug, Clone)]
pub struct SpawnRequest {
    /// The `preflight` executable to run as `preflight serve`.
    pub exe: PathBuf,
    /// Service config profile.
    pub config: PathBuf,
    /// How long to wait for the `listening on` line.
    pub start_timeout: Duration,
}

impl Spawned {
    /// Starts the service on `127.0.0.1:0` in a fresh temporary directory with a random admin
    /// token, and waits for it to print its address.
    pub async fn start(req: &SpawnRequest) -> Result<Self, CheckError> {
        let tmp = tempfile::Builder::new()
            .prefix("preflight-target-")
            .tempdir()
            .map_err(|e| CheckError::Local(format!("creating a temporary directory: {e}")))?;
        let data_dir = tmp.path().join("data");
        let token = random_token();
        let mut s = Spawned {
            exe: req.exe.clone(),
            config: req.config.clone(),
            data_dir,
            token,
            addr: String::new(),
            child: Mutex::new(None),
            _tmp: Some(tmp),
        };
        // A stable port; another process may bind it between the probe and the service's own
        // bind, so a few more, then whatever the kernel gives.
        let mut tries = 0;
        let (child, addr) = loop {
            tries += 1;
            let port = if tries <= 3 { stable_port() } else { None };
            s.addr = format!("127.0.0.1:{}", port.unwrap_or(0));
            match s.launch(req.start_timeout).await {
                Err(_) if port.is_some() => continue,
                other => break other?,
            }
        };
        s.addr = addr;
        *s.child.lock().unwrap_or_else(|p| p.into_inner()) = Some(child);
        Ok(s)
    }

    async fn launch(&self, timeout: Duration) -> Result<(Child, String), CheckError> {
        let mut child = Command::new(&self.exe)
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .arg("--listen")
            .arg(&self.addr)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env("PREFLIGHT_ADMIN_TOKEN", &self.token)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                CheckError::Local(format!("starting `{} serve`: {e}", self.exe.display()))
            })?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| CheckError::Local("no stdout from the spawned service".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(timeout, lines.next_line()).await;
        let line = match first {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) | Ok(Err(_)) => {
                let status = child.wait().await.ok();
                return Err(CheckError::Target(format!(
                    "the spawned service exited before listening ({}); run `preflight serve --config {}` to see why",
                    status.map_or_else(|| "unknown status".into(), |s| s.to_string()),
                    self.config.display()
                )));
            }
            Err(_) => {
                return Err(CheckError::Target(format!(
                    "the spawned service did not print its address within {timeout:?}"
                )));
            }
        };
        let addr = line
            .strip_prefix("listening on http://")
            .ok_or_else(|| {
                CheckError::Target(format!("unexpected first line from the service: {line:?}"))
            })?
            .trim()
            .to_string();
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok((child, addr))
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn admin_token(&self) -> &str {
        &self.token
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn log_dir(&self) -> PathBuf {
        self.data_dir.join("logs")
    }

    pub fn sqlite(&self) -> PathBuf {
        self.data_dir.join("core.db")
    }

    pub fn config(&self) -> &Path {
        &self.config
    }

    pub fn pid(&self) -> Result<u32, CheckError> {
        self.child
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|c| c.id())
            .ok_or_else(|| CheckError::Target("the spawned service is not running".into()))
    }

    /// SIGKILL, then reap.
    pub async fn kill_hard(&self) -> Result<(), CheckError> {
        let child = self.child.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(mut child) = child else {
            return Err(CheckError::Target(
                "the spawned service is not running".into(),
            ));
        };
        child
            .start_kill()
            .map_err(|e| CheckError::Local(format!("SIGKILL: {e}")))?;
        let _ = child.wait().await;
        Ok(())
    }

    /// Starts the service again on the same address and data directory.
    pub async fn restart(&self) -> Result<(), CheckError> {
        // The port was just released by the killed process; retry briefly if still bound.
        let mut last = None;
        for _ in 0..20 {
            match self.launch(Duration::from_secs(20)).await {
                Ok((child, _)) => {
                    *self.child.lock().unwrap_or_else(|p| p.into_inner()) = Some(child);
                    return Ok(());
                }
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        Err(last.unwrap_or_else(|| CheckError::Target("restart failed".into())))
    }

    /// Graceful stop: SIGTERM, wait up to `grace`, then SIGKILL.
    pub async fn stop(&self, grace: Duration) {
        let child = self.child.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(mut child) = child else { return };
        if let Some(pid) = child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(grace, child.wait()).await.is_err() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}

/// SIGKILL a process by pid and wait (bounded) until it is gone.
///
/// Gone means no such process *or a zombie*: a remote target is usually not our child, and
/// when its parent does not reap it (an init that reaps nothing, as in many containers) it
/// stays a zombie, holding its pid but nothing else — no socket, no memory, no files.
pub async fn kill_pid_hard(pid: u32) -> Result<(), CheckError> {
    let p = nix::unistd::Pid::from_raw(pid as i32);
    nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| CheckError::Local(format!("SIGKILL {pid}: {e}")))?;
    for _ in 0..100 {
        if !is_alive(pid) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(CheckError::Target(format!(
        "process {pid} survived SIGKILL for 5 s"
    )))
}

/// Whether `pid` is a live process (not exited, not a zombie).
pub fn is_alive(pid: u32) -> bool {
    let p = nix::unistd::Pid::from_raw(pid as i32);
    if nix::sys::signal::kill(p, None).is_err() {
        return false;
    }
    // `/proc/<pid>/stat`: "pid (comm) S …"; comm may hold spaces and parentheses, so the
    // state is the first field after the last ')'.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next()),
            Some("Z" | "X")
        ),
        // No procfs (not Linux): signal 0 reached it, so it exists.
        Err(_) => true,
    }
}

/// How long a remote target's restart command may run.
pub const RESTART_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs a remote target's restart command (argv), bounded to [`RESTART_COMMAND_TIMEOUT`].
///
/// Done when the command exits, not when its output closes: a restart command typically
/// starts the service in the background, and that service inherits the command's stdout and
/// stderr. Waiting for end-of-file on pipes would wait for the *service* to exit. So the
/// output goes to an unnamed temporary file, read back for the error message.
pub async fn run_restart_command(argv: &[String]) -> Result<(), CheckError> {
    let Some((prog, args)) = argv.split_first() else {
        return Err(CheckError::Missing {
            capability: crate::outcome::Capability::Process,
            hint: "set `target.process.restart` to the command that starts the service".into(),
        });
    };
    let out = tempfile::tempfile()
        .map_err(|e| CheckError::Local(format!("restart command output file: {e}")))?;
    let clone = |f: &std::fs::File| {
        f.try_clone()
            .map(Stdio::from)
            .map_err(|e| CheckError::Local(format!("restart command output file: {e}")))
    };
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(clone(&out)?)
        .stderr(clone(&out)?)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| CheckError::Local(format!("restart command `{prog}`: {e}")))?;
    let status = tokio::time::timeout(RESTART_COMMAND_TIMEOUT, child.wait())
        .await
        .map_err(|_| {
            CheckError::Local(format!(
                "restart command `{prog}` ran over {RESTART_COMMAND_TIMEOUT:?}"
            ))
        })?
        .map_err(|e| CheckError::Local(format!("restart command `{prog}`: {e}")))?;
    if status.success() {
        return Ok(());
    }
    let text = {
        use std::io::{Read, Seek};
        let mut f = out;
        let mut buf = Vec::new();
        let _ = f.rewind();
        let _ = f.take(4096).read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).trim().to_string()
    };
    Err(CheckError::Local(format!(
        "restart command `{prog}` failed ({status}): {text}"
    )))
}

fn random_token() -> String {
    // The thread RNG is a CSPRNG seeded from the OS.
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a remote target that is not reaped stays a zombie after SIGKILL; it used
    /// to count as alive, so every crash test of such a target failed with "survived SIGKILL
    /// for 5 s". (Our un-waited child is a zombie after the kill, exactly like that.)
    #[tokio::test]
    async fn a_killed_zombie_counts_as_gone() {
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(is_alive(pid));
        let t = std::time::Instant::now();
        kill_pid_hard(pid).await.unwrap();
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert!(!is_alive(pid));
        // Reap it (it is a zombie of this test process until now).
        let mut child = child;
        let _ = child.wait();
    }

    /// Regression: the restart command's output used to be captured with pipes, and the
    /// service it starts in the background inherits them, so the restart "ran" until the
    /// service exited (60 s, then an error).
    #[tokio::test]
    async fn restart_returns_when_the_command_exits_not_when_its_daemon_does() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("daemon.pid");
        let script = format!("sleep 20 & echo $! > {}; echo started", pid_file.display());
        let t = std::time::Instant::now();
        run_restart_command(&["sh".into(), "-c".into(), script])
            .await
            .unwrap();
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        let pid: u32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(is_alive(pid), "the daemon runs on");
        kill_pid_hard(pid).await.unwrap();
    }

    #[tokio::test]
    async fn a_failing_restart_command_says_why() {
        let e = run_restart_command(&[
            "sh".into(),
            "-c".into(),
            "echo no such unit >&2; exit 5".into(),
        ])
        .await
        .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("no such unit"), "{msg}");
        assert!(msg.contains('5'), "{msg}");
        let e = run_restart_command(&[]).await.unwrap_err();
        assert_eq!(e.status(), crate::outcome::Status::Skip);
    }

    #[test]
    fn stable_ports_lie_below_the_ephemeral_range_and_are_free() {
        let Ok(range) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range") else {
            assert_eq!(stable_port(), None);
            return;
        };
        let low: u16 = range.split_whitespace().next().unwrap().parse().unwrap();
        match stable_port() {
            Some(p) => {
                assert!((STABLE_FLOOR..low).contains(&p), "{p} not below {low}");
                std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, p)).unwrap();
            }
            None => assert!(low <= STABLE_FLOOR + 1_000, "no stable port below {low}"),
        }
    }
}
