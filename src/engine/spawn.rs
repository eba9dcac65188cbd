//! Spawning the bundled core service (`preflight serve`, the same executable) on a free
//! loopback port in a temporary directory, restarting it on the same address after a crash
//! test, and stopping it cleanly.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::engine::context::CheckError;

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
            addr: "127.0.0.1:0".into(),
            child: Mutex::new(None),
            _tmp: Some(tmp),
        };
        let (child, addr) = s.launch(req.start_timeout).await?;
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
pub async fn kill_pid_hard(pid: u32) -> Result<(), CheckError> {
    let p = nix::unistd::Pid::from_raw(pid as i32);
    nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| CheckError::Local(format!("SIGKILL {pid}: {e}")))?;
    for _ in 0..100 {
        if nix::sys::signal::kill(p, None).is_err() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(CheckError::Target(format!(
        "process {pid} survived SIGKILL for 5 s"
    )))
}

/// Runs a remote target's restart command (argv), bounded to 60 s.
pub async fn run_restart_command(argv: &[String]) -> Result<(), CheckError> {
    let Some((prog, args)) = argv.split_first() else {
        return Err(CheckError::Missing {
            capability: crate::engine::Capability::Process,
            hint: "set `target.process.restart` to the command that starts the service".into(),
        });
    };
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(prog).args(args).stdin(Stdio::null()).output(),
    )
    .await
    .map_err(|_| CheckError::Local(format!("restart command `{prog}` ran over 60 s")))?
    .map_err(|e| CheckError::Local(format!("restart command `{prog}`: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(CheckError::Local(format!(
            "restart command `{prog}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn random_token() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..32)
        .map(|_| format!("{:02x}", rng.r#gen::<u8>()))
        .collect()
}
