//! Targets: the service under test, spawned by preflight or given by URL, the capabilities
//! that follow from what is known about it, and what a check runs with ([`Ctx`]).
//!
//! It sits below `probe` and `checks` (which drive a target) and above the contract
//! ([`crate::outcome`]); the engine builds targets and contexts, checks only use them.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

use crate::outcome::{Capability, CheckError};
use crate::secret::Secret;

pub mod spawn;

/// How preflight controls the target's process.
#[derive(Debug)]
pub enum ProcessControl {
    /// preflight spawned the bundled service and owns the child.
    Spawned(Box<spawn::Spawned>),
    /// A remote target with a pid file and an optional restart command.
    Remote {
        pid_file: PathBuf,
        restart: Vec<String>,
    },
}

/// The service under test.
#[derive(Debug)]
pub struct Target {
    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:40123`.
    pub url: String,
    pub admin_token: Option<Secret>,
    pub process: Option<ProcessControl>,
    pub log_dir: Option<PathBuf>,
    pub sqlite: Option<PathBuf>,
}

impl Target {
    /// A remote target known only by URL.
    pub fn remote(url: &str) -> Self {
        Target {
            url: url.trim_end_matches('/').to_string(),
            admin_token: None,
            process: None,
            log_dir: None,
            sqlite: None,
        }
    }

    pub fn has(&self, cap: Capability) -> bool {
        match cap {
            Capability::Http => true,
            Capability::Admin => self.admin_token.is_some(),
            Capability::Process => self.process.is_some(),
            Capability::LogDir => self.log_dir.is_some(),
            Capability::Sqlite => self.sqlite.is_some(),
        }
    }

    /// What the user can do to give the target `cap`.
    pub fn missing_hint(&self, cap: Capability) -> String {
        match cap {
            Capability::Http => "the target has no URL".into(),
            Capability::Admin => {
                "set `target.admin_token` (e.g. `${env:PREFLIGHT_ADMIN_TOKEN}`) or let preflight spawn the service".into()
            }
            Capability::Process => {
                "set `target.process.pid_file` (and `restart`) or let preflight spawn the service".into()
            }
            Capability::LogDir => "set `target.log_dir` or let preflight spawn the service".into(),
            Capability::Sqlite => "set `target.sqlite` or let preflight spawn the service".into(),
        }
    }

    /// The target's data directory on this machine: a spawned target's, else the directory
    /// of its SQLite database when one is configured.
    pub fn data_dir(&self) -> Option<PathBuf> {
        match &self.process {
            Some(ProcessControl::Spawned(s)) => Some(s.data_dir().to_path_buf()),
            _ => self
                .sqlite
                .as_ref()
                .and_then(|p| p.parent())
                .map(|p| p.to_path_buf()),
        }
    }

    /// Whether preflight spawned this target (and may restart it freely).
    pub fn is_spawned(&self) -> bool {
        matches!(self.process, Some(ProcessControl::Spawned(_)))
    }

    fn process(&self) -> Result<&ProcessControl, CheckError> {
        self.process.as_ref().ok_or_else(|| CheckError::Missing {
            capability: Capability::Process,
            hint: self.missing_hint(Capability::Process),
        })
    }

    /// Fails with SKIP unless the target can be started again after a kill: a spawned
    /// target always can; a remote one needs `target.process.restart`. Checked *before*
    /// anything is killed, so a crash test never leaves a target down that it cannot bring
    /// back.
    pub fn require_restart(&self) -> Result<(), CheckError> {
        match self.process()? {
            ProcessControl::Spawned(_) => Ok(()),
            ProcessControl::Remote { restart, .. } if !restart.is_empty() => Ok(()),
            ProcessControl::Remote { .. } => Err(CheckError::Missing {
                capability: Capability::Process,
                hint: "set `target.process.restart` to the command (argv) that starts the service again; \
                       without it a crash test would leave the service down"
                    .into(),
            }),
        }
    }

    /// The target's current pid.
    pub fn pid(&self) -> Result<u32, CheckError> {
        match self.process()? {
            ProcessControl::Spawned(s) => s.pid(),
            ProcessControl::Remote { pid_file, .. } => {
                let text = std::fs::read_to_string(pid_file).map_err(|e| {
                    CheckError::Local(format!("reading pid file {}: {e}", pid_file.display()))
                })?;
                text.trim().parse().map_err(|_| {
                    CheckError::Local(format!(
                        "pid file {} does not hold a pid: {:?}",
                        pid_file.display(),
                        text.trim()
                    ))
                })
            }
        }
    }

    /// Sends SIGKILL to the target and waits until it is gone.
    pub async fn kill_hard(&self) -> Result<(), CheckError> {
        match self.process()? {
            ProcessControl::Spawned(s) => s.kill_hard().await,
            ProcessControl::Remote { .. } => {
                let pid = self.pid()?;
                spawn::kill_pid_hard(pid).await
            }
        }
    }

    /// Starts the target again after a kill, on the same address. Returns once the process
    /// is started; the caller polls readiness.
    pub async fn restart(&self) -> Result<(), CheckError> {
        match self.process()? {
            ProcessControl::Spawned(s) => s.restart().await,
            ProcessControl::Remote { restart, .. } => spawn::run_restart_command(restart).await,
        }
    }
}

/// Counts requests against a check's budget; shared by all tasks of one check.
#[derive(Debug, Clone)]
pub struct Budget {
    limit: u64,
    used: Arc<AtomicU64>,
}

impl Budget {
    pub fn new(limit: u64) -> Self {
        Budget {
            limit,
            used: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Takes `n` requests from the budget, or fails when it would exceed it.
    pub fn take(&self, n: u64) -> Result<(), CheckError> {
        let before = self.used.fetch_add(n, Ordering::Relaxed);
        if before + n > self.limit {
            Err(CheckError::Budget(self.limit))
        } else {
            Ok(())
        }
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed).min(self.limit)
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }
}

/// A sink for progress messages of a long check (rendered by the CLI, e.g. with indicatif).
pub type ProgressFn = Arc<dyn Fn(&str) + Send + Sync>;

/// Everything a check runs with.
#[derive(Clone)]
pub struct Ctx {
    /// The service under test.
    pub target: Arc<Target>,
    /// This check's own client source address in 127.0.0.0/8 (per-check isolation).
    pub source: IpAddr,
    /// Further addresses this check may use (e.g. the rate-limit check's second client, a
    /// flood spread over many clients). Disjoint from every other check's.
    pub extra_sources: Vec<IpAddr>,
    /// When the check must have finished.
    pub deadline: Instant,
    /// Request budget.
    pub budget: Budget,
    /// Directory of the policy file, for relative paths.
    pub policy_dir: PathBuf,
    /// Progress reporting.
    pub progress: ProgressFn,
}

impl Ctx {
    /// Time left before the deadline; an error once it has passed.
    pub fn remaining(&self) -> Result<std::time::Duration, CheckError> {
        let now = Instant::now();
        if now >= self.deadline {
            Err(CheckError::Deadline(std::time::Duration::ZERO))
        } else {
            Ok(self.deadline - now)
        }
    }

    /// Reports progress (`"build 1200/3000"`).
    pub fn progress(&self, msg: &str) {
        (self.progress)(msg)
    }

    /// Fails with SKIP unless the target has `cap`.
    pub fn require(&self, cap: Capability) -> Result<(), CheckError> {
        if self.target.has(cap) {
            Ok(())
        } else {
            Err(CheckError::Missing {
                capability: cap,
                hint: self.target.missing_hint(cap),
            })
        }
    }
}
