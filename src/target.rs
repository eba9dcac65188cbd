//! Targets: the service under test, spawned by preflight or given by URL, the capabilities
//! that follow from what is known about it, and what a check runs with ([`Ctx`]).
//!
//! It sits below `probe` and `checks` (which drive a target) and above the contract
//! ([`crate::outcome`]); the engine builds targets and contexts, checks only use them.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

use crate::outcome::{Capability, CheckError};
use crate::secret::Secret;

pub mod spawn;
pub mod tls;

/// Whether `url` is one preflight can reach: `http://` or `https://`.
pub fn is_http_url(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

/// The host and port of a base URL: IPv6 literals without brackets, the scheme's default
/// port when none is given.
pub fn host_port(url: &str) -> Result<(String, u16), CheckError> {
    let u = reqwest::Url::parse(url)
        .map_err(|e| CheckError::Local(format!("target `{url}` is not a URL: {e}")))?;
    let host = u
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| CheckError::Local(format!("target `{url}` has no host")))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = u
        .port_or_known_default()
        .ok_or_else(|| CheckError::Local(format!("target `{url}` has no port")))?;
    Ok((host, port))
}

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
    /// How clients reach it: the address checked, TLS, headers.
    pub reach: Reach,
}

/// How every client of a run reaches the target.
#[derive(Debug, Clone, Default)]
pub struct Reach {
    /// The address connections go to: for a host name, the first of its addresses that
    /// accepted a connection when the run began. `None`: not resolved (clients resolve the
    /// URL's host themselves).
    pub address: Option<SocketAddr>,
    /// Headers sent on every request (`target.headers`); values never printed.
    pub headers: Vec<(String, Secret)>,
    /// TLS of an `https://` target.
    pub tls: Option<tls::Tls>,
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
            reach: Reach::default(),
        }
    }

    /// Resolves the URL's host and keeps the first address that accepts a TCP connection
    /// (each tried for at most `per_try`) as the address every client of the run connects
    /// to. When none does, the first address is kept, so that checks fail with the
    /// connection error; the returned note says what happened, for the report.
    pub async fn resolve_address(&mut self, per_try: std::time::Duration) -> Option<String> {
        let (host, port) = match self.host_port() {
            Ok(hp) => hp,
            Err(e) => return Some(e.to_string()),
        };
        let addrs: Vec<SocketAddr> = match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(a) => a.collect(),
            Err(e) => return Some(format!("cannot resolve {host}: {e}")),
        };
        let mut last = None;
        for a in &addrs {
            match tokio::time::timeout(per_try, tokio::net::TcpStream::connect(a)).await {
                Ok(Ok(_)) => {
                    self.reach.address = Some(*a);
                    return None;
                }
                Ok(Err(e)) => last = Some(format!("{a}: {e}")),
                Err(_) => last = Some(format!("{a}: no answer within {per_try:?}")),
            }
        }
        self.reach.address = addrs.first().copied();
        Some(format!(
            "no address of {host} accepted a connection ({} tried; last: {})",
            addrs.len(),
            last.unwrap_or_else(|| "none resolved".into())
        ))
    }

    /// The URL's host (a name, an IPv4 literal, or an IPv6 literal without brackets) and
    /// port (the scheme's default when absent).
    pub fn host_port(&self) -> Result<(String, u16), CheckError> {
        host_port(&self.url)
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

/// The policy field that declares client addresses, for SKIP reasons and hints.
pub const SOURCE_ADDRESSES_FIELD: &str = "target.source_addresses";

/// A sink for progress messages of a long check (rendered by the CLI, e.g. with indicatif).
pub type ProgressFn = Arc<dyn Fn(&str) + Send + Sync>;

/// Everything a check runs with.
#[derive(Clone)]
pub struct Ctx {
    /// The service under test.
    pub target: Arc<Target>,
    /// This check's own client source address: on a loopback target a 127.x.y.z of its
    /// own (per-check isolation); elsewhere one of `target.source_addresses`, or the
    /// unspecified address (`0.0.0.0`, `::`) for "the OS chooses" (clients do not bind).
    pub source: IpAddr,
    /// Further addresses this check may use (e.g. the rate-limit check's second client, a
    /// flood spread over many clients), each distinct from `source`. Empty when the run
    /// has no distinct address to give (see [`Ctx::neighbour_sources`]).
    pub extra_sources: Vec<IpAddr>,
    /// Whether other checks of this run send from these addresses too (declared addresses
    /// fewer than the plan needs; the checks then run one after another): a per-address
    /// bucket may not be full when this check starts.
    pub shared_sources: bool,
    /// When the check must have finished.
    pub deadline: Instant,
    /// Request budget.
    pub budget: Budget,
    /// Directory of the policy file, for relative paths.
    pub policy_dir: PathBuf,
    /// Progress reporting.
    pub progress: ProgressFn,
    /// Who answers `confirm` steps: set by `preflight audit`; `None` in a plain `check`
    /// (a confirm step is then SKIP: no one is there to look).
    pub attestor: Option<Arc<dyn crate::outcome::Attestor>>,
}

impl Ctx {
    /// A context for one check run on its own, outside a planned run (tests, benchmarks, a
    /// tool embedding one check): from `source` plus `extra_sources`, `time` to finish,
    /// `requests` of budget, relative paths from the current directory, no progress output.
    pub fn standalone(
        target: Arc<Target>,
        source: IpAddr,
        extra_sources: Vec<IpAddr>,
        time: std::time::Duration,
        requests: u64,
    ) -> Ctx {
        Ctx {
            target,
            source,
            extra_sources,
            shared_sources: false,
            deadline: Instant::now() + time,
            budget: Budget::new(requests),
            policy_dir: ".".into(),
            progress: Arc::new(|_| {}),
            attestor: None,
        }
    }

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

    /// How many distinct client addresses this check really has (at least 1: its own, which
    /// may be the OS's choice).
    pub fn distinct_sources(&self) -> usize {
        1 + self
            .extra_sources
            .iter()
            .filter(|a| **a != self.source && !a.is_unspecified())
            .count()
    }

    /// Addresses other than [`Ctx::source`] this check may send from, for a second client
    /// (the rate-limit neighbour probe). Empty when the run has none: a check then SKIPs
    /// that part with [`Ctx::no_neighbour`] instead of failing.
    pub fn neighbour_sources(&self) -> Vec<IpAddr> {
        self.extra_sources
            .iter()
            .copied()
            .filter(|a| *a != self.source && !a.is_unspecified())
            .collect()
    }

    /// The SKIP for a part of a check that needs `what` (e.g. "a second client address")
    /// when [`Ctx::neighbour_sources`] is empty: names the field that gives addresses.
    pub fn no_neighbour(&self, what: &str) -> CheckError {
        CheckError::NotApplicable(format!(
            "{what} needs a second client address; this run has one ({}): declare more in \
             `{SOURCE_ADDRESSES_FIELD}` (or `--source-address`)",
            if self.source.is_unspecified() {
                "the OS's choice".to_string()
            } else {
                self.source.to_string()
            }
        ))
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
