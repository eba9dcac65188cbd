//! Running a policy: resolve the target (spawn the bundled service or use a URL), run every
//! check under its own deadline, budget and source address, apply the gate, and build the
//! [`Report`]. The CLI calls [`check`]; nothing here prints.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use tokio::time::Instant;

use crate::checks::{CheckSpec, Exclusivity};
use crate::engine::gate;
use crate::engine::plan::{self, BoxFuture, Executor, Item, Sched, SourcePlan};
use crate::outcome::{Capability, CheckError, Outcome, Status};
use crate::policy::model::AddressRange;
use crate::policy::{Check, Policy, Severity, Waiver};
use crate::report::{CheckResult, PolicyInfo, Report, TargetInfo};
use crate::secret::{Redactor, Secret};
use crate::target::spawn::{SpawnRequest, Spawned};
use crate::target::{Budget, Ctx, ProgressFn};
use crate::target::{ProcessControl, Target};

/// The service profile used when preflight spawns the bundled service.
pub const DEFAULT_CONFIG: &str = "config/core.yaml";
/// How long the spawned service may take to print its address and then to become ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Grace period between SIGTERM and SIGKILL when stopping the spawned service.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// Live progress of a run (the CLI renders it with indicatif; tests use [`NoProgress`]).
pub trait Progress: Send + Sync {
    /// A run-level step, e.g. "starting the core service".
    fn message(&self, msg: &str);
    /// Check `id` started; the returned sink receives its progress messages.
    fn started(&self, id: &str) -> ProgressFn;
    /// Check `id` finished.
    fn finished(&self, id: &str, status: Status, summary: &str);
}

/// Progress that goes nowhere.
#[derive(Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn message(&self, _: &str) {}
    fn started(&self, _: &str) -> ProgressFn {
        Arc::new(|_| {})
    }
    fn finished(&self, _: &str, _: Status, _: &str) {}
}

/// Progress whose lines are redacted (a summary can quote a request line).
struct Redacting(Arc<dyn Progress>, Arc<Redactor>);

impl Progress for Redacting {
    fn message(&self, msg: &str) {
        self.0.message(&self.1.redact(msg));
    }
    fn started(&self, id: &str) -> ProgressFn {
        let (sink, redactor) = (self.0.started(id), self.1.clone());
        Arc::new(move |m| sink(&redactor.redact(m)))
    }
    fn finished(&self, id: &str, status: Status, summary: &str) {
        self.0.finished(id, status, &self.1.redact(summary));
    }
}

/// Every text of a result that can quote what was sent or received.
fn redact_result(r: &mut CheckResult, redactor: &Redactor) {
    if redactor.is_empty() {
        return;
    }
    redactor.redact_in_place(&mut r.summary);
    for o in &mut r.observations {
        redactor.redact_in_place(&mut o.what);
        redactor.redact_in_place(&mut o.expected);
        redactor.redact_in_place(&mut o.observed);
    }
    r.sent.iter_mut().for_each(|s| redactor.redact_in_place(s));
    redactor.redact_json(&mut r.evidence);
}

/// What `preflight check` was asked to do.
#[derive(Clone)]
pub struct CheckOptions {
    /// The loaded policy (the CLI loads it and reports its diagnostics).
    pub policy: Policy,
    /// The files it was loaded from, in order; the first one's directory anchors relative
    /// paths in checks.
    pub policy_files: Vec<PathBuf>,
    /// Remote target URL (overrides the policy's).
    pub target: Option<String>,
    pub admin_token: Option<String>,
    /// Client addresses (`--source-address`), added to `target.source_addresses`.
    pub source_addresses: Vec<AddressRange>,
    /// Service profile for a spawned target.
    pub config: Option<PathBuf>,
    pub only: Vec<String>,
    pub skip: Vec<String>,
    pub fail_fast: bool,
    pub concurrency: usize,
    /// The `preflight` executable (spawned as `preflight serve`, and `{exe}` in commands).
    pub exe: PathBuf,
    /// Today, for waiver expiry.
    pub today: NaiveDate,
    pub progress: Arc<dyn Progress>,
    /// Values no report may show (`Loaded::secrets`: every `${env:…}` value, the admin token).
    pub secrets: Vec<Secret>,
    /// Who answers `confirm` steps (`preflight audit`); `None` makes them SKIP.
    pub attestor: Option<Arc<dyn crate::outcome::Attestor>>,
    /// Ask the target's `/status` for its version before the checks (`TargetInfo::version`):
    /// one GET from the address the OS chooses, which an audit records as the target's
    /// identity. Off for `check`, whose checks may count every request.
    pub identify: bool,
    /// Shared by the instances of a fleet (`fleet.max_disturbed` permits): a disturbing check
    /// holds one while it runs. `None` for one target.
    pub disturbing: Option<Arc<tokio::sync::Semaphore>>,
}

impl CheckOptions {
    /// A run of `policy` against its own target (or a spawned service) with the defaults of
    /// `preflight check`: every check, four at a time, no fail-fast, today's date, no progress
    /// shown, nothing redacted; set the other fields with struct update syntax.
    pub fn new(policy: Policy, policy_files: Vec<PathBuf>, exe: PathBuf) -> CheckOptions {
        CheckOptions {
            policy,
            policy_files,
            target: None,
            admin_token: None,
            source_addresses: vec![],
            config: None,
            only: vec![],
            skip: vec![],
            fail_fast: false,
            concurrency: 4,
            exe,
            today: chrono::Local::now().date_naive(),
            progress: Arc::new(NoProgress),
            secrets: vec![],
            attestor: None,
            identify: false,
            disturbing: None,
        }
    }
}

/// Why nothing ran.
#[derive(Debug)]
pub enum CheckFailure {
    /// The command line asks for something impossible.
    Usage(String),
}

/// Loads the policy, resolves the target, runs the checks and decides the verdict.
pub async fn check(opts: CheckOptions) -> Result<Report, CheckFailure> {
    let policy = &opts.policy;
    let checks = select(&policy.checks, &opts.only, &opts.skip).map_err(CheckFailure::Usage)?;
    let policy_dir = opts
        .policy_files
        .first()
        .and_then(|p| p.parent())
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);

    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let start = Instant::now();

    let plan = resolve_target(policy, &opts)?;
    let declared = declared_sources(policy, &opts);
    let (target, mut target_info, sources) = match plan {
        TargetPlan::Remote(mut t) => {
            opts.progress.message(&format!("resolving {}", t.url));
            let note = t.resolve_address(RESOLVE_TIMEOUT).await;
            let sources = SourcePlan::new(t.reach.address.map(|a| a.ip()), &declared)
                .map_err(CheckFailure::Usage)?;
            let mut info = target_info(&t, None, &sources);
            info.warnings.extend(note);
            (Ok(Arc::new(t)), info, sources)
        }
        TargetPlan::Spawn(config) => {
            opts.progress
                .message(&format!("starting the core service ({})", config.display()));
            match spawn_ready(&opts.exe, &config).await {
                Ok(mut t) => {
                    let note = t.resolve_address(RESOLVE_TIMEOUT).await;
                    let sources = SourcePlan::new(t.reach.address.map(|a| a.ip()), &declared)
                        .map_err(CheckFailure::Usage)?;
                    let mut info = target_info(&t, Some(&config), &sources);
                    info.warnings.extend(note);
                    (Ok(Arc::new(t)), info, sources)
                }
                Err(e) => {
                    let info = TargetInfo {
                        url: "(not started)".into(),
                        spawned: true,
                        config: Some(config.display().to_string()),
                        capabilities: vec![],
                        address: None,
                        sources: None,
                        warnings: vec![],
                        version: None,
                    };
                    (Err(e), info, SourcePlan::fresh_loopback())
                }
            }
        }
    };

    // Issue 15: no interpolated value or token reaches a report or a progress line, whatever
    // a check echoed (a request line, a header, an expected body).
    let cli_token = opts.admin_token.clone().map(Secret);
    let redactor = Arc::new(Redactor::new(opts.secrets.iter().chain(&cli_token)));
    if opts.identify
        && let Ok(t) = &target
    {
        target_info.version = target_version(t).await;
    }
    let mut results = match &target {
        Ok(t) => {
            let isolated = sources.isolates(checks.len());
            if !isolated && opts.concurrency > 1 && checks.len() > 1 {
                target_info.warnings.push(
                    "checks run one after another: the client addresses cannot keep them apart \
                     (declare at least two per check in `target.source_addresses` to run them concurrently)"
                        .into(),
                );
            }
            let exec = Engine(Arc::new(Inner {
                checks: checks.clone(),
                target: t.clone(),
                sources,
                policy_dir,
                progress: Arc::new(Redacting(opts.progress.clone(), redactor.clone())),
                block_on: policy.gate.block_on.clone(),
                waivers: policy.waivers.clone(),
                today: opts.today,
                attestor: opts.attestor.clone(),
                disturbing: opts.disturbing.clone(),
            }));
            let items: Vec<Item> = checks.iter().map(item_of).collect();
            let sched = Sched {
                // Checks sharing a client address share its rate-limit bucket: one at a time.
                concurrency: if isolated { opts.concurrency } else { 1 },
                fail_fast: opts.fail_fast,
            };
            plan::schedule(&items, &exec, sched).await
        }
        Err(e) => checks
            .iter()
            .map(|c| {
                let mut r = bare_result(c, Status::Error);
                r.summary = format!("the target could not be started: {e}");
                r
            })
            .collect(),
    };

    for r in &mut results {
        redact_result(r, &redactor);
    }

    if let Ok(t) = &target
        && let Some(ProcessControl::Spawned(s)) = &t.process
    {
        opts.progress.message("stopping the core service");
        s.stop(STOP_GRACE).await;
    }

    let decision = gate::decide(
        &mut results,
        &policy.gate.block_on,
        &policy.waivers,
        opts.today,
    );
    Ok(Report {
        schema_version: crate::report::SCHEMA_VERSION,
        tool: format!("preflight {}", env!("CARGO_PKG_VERSION")),
        policy: PolicyInfo {
            name: policy.name.clone(),
            description: policy.description.clone(),
            files: opts
                .policy_files
                .iter()
                .map(|f| f.display().to_string())
                .collect(),
        },
        target: target_info,
        started_at,
        duration_ms: start.elapsed().as_millis() as u64,
        verdict: decision.verdict,
        verdict_reason: decision.reason,
        block_on: policy.gate.block_on.clone(),
        counts: decision.counts,
        waivers: decision.waivers,
        results,
        canary: None,
        fleet: None,
    })
}

/// The `version` of the target's `/status` (the bundled service's, or any JSON object with
/// a string `version`), within two seconds; `None` when it does not say.
async fn target_version(t: &Target) -> Option<String> {
    let unspecified = match t.reach.address {
        Some(a) if a.is_ipv6() => std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        _ => std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    let http =
        crate::probe::http::Http::new(t, unspecified, crate::target::Budget::new(1), deadline)
            .ok()?;
    let r = tokio::time::timeout(Duration::from_secs(2), http.get("/status"))
        .await
        .ok()?
        .ok()?;
    let v = r.json().ok()?;
    v.get("version")?.as_str().map(str::to_string)
}

/// Applies `--only` and `--skip`; an id that names no check is a usage error.
pub fn select(checks: &[Check], only: &[String], skip: &[String]) -> Result<Vec<Check>, String> {
    for id in only.iter().chain(skip) {
        if !checks.iter().any(|c| &c.id == id) {
            let known: Vec<&str> = checks.iter().map(|c| c.id.as_str()).collect();
            return Err(format!(
                "no check has the id `{id}` (known: {})",
                known.join(", ")
            ));
        }
    }
    Ok(checks
        .iter()
        .filter(|c| only.is_empty() || only.contains(&c.id))
        .filter(|c| !skip.contains(&c.id))
        .cloned()
        .collect())
}

/// Where the checks will run.
#[derive(Debug)]
pub enum TargetPlan {
    Remote(Target),
    /// Spawn the bundled service with this profile.
    Spawn(PathBuf),
}

/// How long each resolved address of the target may take to accept a connection.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// The declared client addresses: the policy's, then the command line's.
fn declared_sources(policy: &Policy, opts: &CheckOptions) -> Vec<ipnet::IpNet> {
    policy
        .target
        .iter()
        .flat_map(|t| t.source_addresses.iter())
        .chain(opts.source_addresses.iter())
        .map(|r| r.0)
        .collect()
}

/// Decides the target from the command line and the policy: a URL (either) is used as
/// given, never spawned; otherwise the bundled service is spawned.
pub fn resolve_target(policy: &Policy, opts: &CheckOptions) -> Result<TargetPlan, CheckFailure> {
    let spec = policy.target.clone().unwrap_or_default();
    let url = opts.target.clone().or(spec.url.clone());
    if let Some(url) = url {
        if opts.config.is_some() {
            return Err(CheckFailure::Usage(
                "--config picks the profile of a spawned service; it cannot apply to a remote target".into(),
            ));
        }
        if !crate::target::is_http_url(&url) {
            return Err(CheckFailure::Usage(format!(
                "target `{url}` is not an http:// or https:// URL"
            )));
        }
        let mut t = Target::remote(&url);
        t.admin_token = opts
            .admin_token
            .clone()
            .filter(|s| !s.is_empty())
            .map(Secret)
            // `admin_token: ${env:TOKEN}` with TOKEN set but empty means no token, as the
            // flag does: a check must SKIP for want of it, not FAIL on 401.
            .or(spec.admin_token.filter(|s| !s.expose().is_empty()));
        t.process = spec.process.map(|p| ProcessControl::Remote {
            pid_file: p.pid_file,
            restart: p.restart,
        });
        t.log_dir = spec.log_dir;
        t.sqlite = spec.sqlite;
        t.reach.headers = spec.headers.into_iter().collect();
        if url.starts_with("https://") {
            let tls = spec.tls.unwrap_or_default();
            let opts = crate::target::tls::TlsOptions {
                ca: tls.ca,
                client_cert: tls.client_cert,
                client_key: tls.client_key,
                insecure_skip_verify: tls.insecure_skip_verify,
            };
            t.reach.tls = Some(crate::target::tls::Tls::new(&opts).map_err(CheckFailure::Usage)?);
        }
        return Ok(TargetPlan::Remote(t));
    }
    let config = opts
        .config
        .clone()
        .or(spec.spawn.map(|s| s.config))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    Ok(TargetPlan::Spawn(
        resolve_profile(&config).map_err(CheckFailure::Usage)?,
    ))
}

/// The service profile a spawned service starts with: a file on disk, else the built-in
/// profile of that name (`core`, `before-hardening`, `config/core.yaml` outside a checkout),
/// as the path `preflight serve --config` takes.
pub fn resolve_profile(config: &Path) -> Result<PathBuf, String> {
    match crate::builtin::resolve(config, crate::builtin::profile) {
        crate::builtin::Resolved::Disk(p) if !p.is_file() => Err(format!(
            "service profile `{}` not found: neither a file nor a built-in profile (the bundled \
             service is spawned with it when no target is given); pass --config FILE or a \
             built-in name (`preflight policies` lists them), or give --target URL",
            config.display()
        )),
        r => Ok(r.path()),
    }
}

/// Spawns the bundled service and waits (bounded) until `/readyz` answers 200.
pub async fn spawn_ready(exe: &Path, config: &Path) -> Result<Target, CheckError> {
    let spawned = Spawned::start(&SpawnRequest {
        exe: exe.to_path_buf(),
        config: config.to_path_buf(),
        start_timeout: START_TIMEOUT,
    })
    .await?;
    let url = spawned.url();
    let target = Target {
        url: url.clone(),
        admin_token: Some(Secret(spawned.admin_token().to_string())),
        log_dir: Some(spawned.log_dir()),
        sqlite: Some(spawned.sqlite()),
        process: Some(ProcessControl::Spawned(Box::new(spawned))),
        reach: Default::default(),
    };
    match wait_ready(&url, START_TIMEOUT).await {
        Ok(()) => Ok(target),
        Err(e) => {
            if let Some(ProcessControl::Spawned(s)) = &target.process {
                s.stop(STOP_GRACE).await;
            }
            Err(e)
        }
    }
}

/// Polls `GET {url}/readyz` until it answers 200 or `within` passes.
pub async fn wait_ready(url: &str, within: Duration) -> Result<(), CheckError> {
    let client = crate::http_client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| CheckError::Local(format!("building the HTTP client: {e}")))?;
    let end = Instant::now() + within;
    let mut last = String::from("no answer");
    while Instant::now() < end {
        match client.get(format!("{url}/readyz")).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => last = format!("status {}", r.status().as_u16()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(CheckError::Target(format!(
        "{url}/readyz not ready within {within:?} (last: {last})"
    )))
}

fn target_info(t: &Target, config: Option<&Path>, sources: &SourcePlan) -> TargetInfo {
    let mut warnings = Vec::new();
    if t.reach.tls.as_ref().is_some_and(|t| t.insecure) {
        warnings.push(
            "TLS certificate verification is OFF (`target.tls.insecure_skip_verify`): this run \
             cannot tell the real service from anyone answering at its address"
                .to_string(),
        );
    }
    TargetInfo {
        address: t.reach.address.map(|a| a.to_string()),
        sources: Some(sources.describe()),
        warnings,
        version: None,
        url: t.url.clone(),
        spawned: t.is_spawned(),
        config: config.map(|c| c.display().to_string()),
        capabilities: [
            Capability::Http,
            Capability::Admin,
            Capability::Process,
            Capability::LogDir,
            Capability::Sqlite,
        ]
        .into_iter()
        .filter(|c| t.has(*c))
        .map(|c| c.as_str().to_string())
        .collect(),
    }
}

fn item_of(c: &Check) -> Item {
    Item {
        id: c.id.clone(),
        exclusive: c.spec.exclusivity() == Exclusivity::Exclusive || !c.independent,
        depends_on: c.depends_on.clone(),
    }
}

/// A result with nothing measured yet.
pub fn bare_result(c: &Check, status: Status) -> CheckResult {
    CheckResult {
        description: c.description.clone(),
        location: c.origin.as_ref().map(|o| crate::report::Location {
            file: o.file.display().to_string(),
            line: o.line,
            col: o.col,
        }),
        ..CheckResult::new(&c.id, c.spec.kind(), c.severity, status)
    }
}

struct Inner {
    checks: Vec<Check>,
    target: Arc<Target>,
    sources: SourcePlan,
    policy_dir: PathBuf,
    progress: Arc<dyn Progress>,
    block_on: Vec<Severity>,
    waivers: Vec<Waiver>,
    today: NaiveDate,
    attestor: Option<Arc<dyn crate::outcome::Attestor>>,
    disturbing: Option<Arc<tokio::sync::Semaphore>>,
}

#[derive(Clone)]
struct Engine(Arc<Inner>);

impl Executor for Engine {
    type Out = CheckResult;

    fn start(&self, index: usize) -> BoxFuture<CheckResult> {
        let inner = self.0.clone();
        Box::pin(async move {
            let check = &inner.checks[index];
            // In a fleet, a disturbing check waits for one of the fleet's permits (never
            // closed: a failure to acquire would only let it run unbounded).
            let _permit = match &inner.disturbing {
                Some(s) if check.spec.exclusivity() == Exclusivity::Exclusive => {
                    s.clone().acquire_owned().await.ok()
                }
                _ => None,
            };
            let sink = inner.progress.started(&check.id);
            let sources = inner.sources.assign(index, inner.checks.len());
            let base = Base {
                target: inner.target.clone(),
                source: sources.own,
                extra_sources: sources.extra,
                shared_sources: !inner.sources.isolates(inner.checks.len()),
                policy_dir: inner.policy_dir.clone(),
                progress: sink,
                attestor: inner.attestor.clone(),
            };
            let r = run_check(check, &base).await;
            inner.progress.finished(&check.id, r.status, &r.summary);
            r
        })
    }

    fn skipped(&self, index: usize, reason: String) -> CheckResult {
        let c = &self.0.checks[index];
        let mut r = bare_result(c, Status::Skip);
        r.summary = reason;
        self.0.progress.finished(&c.id, Status::Skip, &r.summary);
        r
    }

    fn crashed(&self, index: usize, reason: String) -> CheckResult {
        let c = &self.0.checks[index];
        let mut r = bare_result(c, Status::Error);
        r.summary = reason;
        self.0.progress.finished(&c.id, Status::Error, &r.summary);
        r
    }

    fn status(&self, out: &CheckResult) -> Status {
        out.status
    }

    fn stops_run(&self, index: usize, out: &CheckResult) -> bool {
        let c = &self.0.checks[index];
        gate::is_blocking_failure(
            out.status,
            c.severity,
            &c.id,
            &self.0.block_on,
            &self.0.waivers,
            self.0.today,
        )
    }
}

/// What every attempt of one check shares.
#[derive(Clone)]
pub struct Base {
    pub target: Arc<Target>,
    pub source: std::net::IpAddr,
    pub extra_sources: Vec<std::net::IpAddr>,
    /// Other checks of the run use the same addresses (see `Ctx::shared_sources`).
    pub shared_sources: bool,
    pub policy_dir: PathBuf,
    pub progress: ProgressFn,
    pub attestor: Option<Arc<dyn crate::outcome::Attestor>>,
}

/// The deadline of a whole check, from its start: every attempt and every wait between
/// attempts fit in it. An explicit `timeout` is exactly that; without one, the kind's default
/// deadline, plus `retry.within` when the check retries (so that an attempt started at the
/// end of the retry window still has the kind's full deadline, as each attempt always had).
pub fn check_deadline(check: &Check) -> Duration {
    match check.timeout {
        Some(t) => t.get(),
        None => {
            let kind = check.spec.default_timeout().get();
            kind + check.retry.map_or(Duration::ZERO, |r| r.within.get())
        }
    }
}

/// Why the retries of a check stopped before it passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RetryEnd {
    /// No retry, or the outcome is final (PASS, SKIP, budget exhausted).
    Final,
    /// `retry.within` ran out.
    Within,
    /// The check's deadline (`timeout`) came first.
    Deadline,
}

/// Runs one check under its deadline ([`check_deadline`]): each attempt gets the time left
/// (enforced here around the kind's `run`, and by the HTTP probe), and a check with `retry`
/// is re-run until PASS while `retry.within` lasts and the deadline allows another attempt.
pub async fn run_check(check: &Check, base: &Base) -> CheckResult {
    let timeout = check_deadline(check);
    let budget = Budget::new(
        check
            .max_requests
            .unwrap_or_else(|| check.spec.default_budget()),
    );
    let started = Instant::now();
    let deadline = started + timeout;
    let retry_end = check.retry.map(|r| started + r.within.get());
    let mut attempts = 0u32;
    let (outcome, ended) = loop {
        attempts += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let res = match attempt(&check.spec, base, left, &budget).await {
            // The kind saw the time left; the report names the check's own deadline.
            Err(CheckError::Deadline(_)) => Err(CheckError::Deadline(timeout)),
            r => r,
        };
        let status = match &res {
            Ok(o) => o.status(),
            Err(e) => e.status(),
        };
        let (Some(end), Some(retry)) = (retry_end, check.retry) else {
            break (res, RetryEnd::Final);
        };
        // PASS ends it; so does SKIP (a missing capability does not appear by waiting).
        if matches!(status, Status::Pass | Status::Skip)
            || matches!(res, Err(CheckError::Budget(_)))
        {
            break (res, RetryEnd::Final);
        }
        let next = Instant::now() + retry.every.get();
        if next >= deadline {
            break (res, RetryEnd::Deadline);
        }
        if next >= end {
            break (res, RetryEnd::Within);
        }
        (base.progress)(&format!(
            "attempt {attempts}: {}, retrying",
            status.as_str()
        ));
        tokio::time::sleep(retry.every.get()).await;
    };
    let mut r = bare_result(check, Status::Pass);
    r.attempts = attempts;
    r.duration_ms = started.elapsed().as_millis() as u64;
    r.requests = budget.used();
    let deadline_hit = matches!(outcome, Err(CheckError::Deadline(_)));
    match outcome {
        Ok(o) => {
            r.status = o.status();
            r.summary = if o.summary.is_empty() {
                default_summary(&o)
            } else {
                o.summary.clone()
            };
            if r.status == Status::Fail && o.observations.is_empty() {
                r.summary = format!("{} (no observation was made)", r.summary);
            }
            r.observations = o.observations;
            r.sent = o.sent;
            r.charts = o.charts;
            r.evidence = o.evidence;
        }
        Err(e) => {
            r.status = e.status();
            r.out_of_scope = matches!(e, CheckError::OutOfScope(_));
            r.summary = e.to_string();
        }
    }
    let within = check.retry.map(|x| x.within);
    let note = match (ended, within) {
        // An attempt cut by the deadline already says so.
        (RetryEnd::Deadline, _) if !deadline_hit => Some(format!(
            "the check's {} deadline (`timeout`) ended the retries",
            crate::units::Dur(timeout)
        )),
        (RetryEnd::Within, Some(w)) => Some(format!("retried within {w}")),
        _ => None,
    };
    match (attempts > 1, note) {
        (true, Some(n)) => r.summary = format!("{} (after {attempts} attempts; {n})", r.summary),
        (true, None) => r.summary = format!("{} (after {attempts} attempts)", r.summary),
        (false, Some(n)) => r.summary = format!("{} ({n})", r.summary),
        (false, None) => {}
    }
    r
}

fn default_summary(o: &Outcome) -> String {
    let failed = o.unmet();
    if failed.is_empty() {
        format!("{} requirement(s) met", o.observations.len())
    } else {
        format!("not met: {}", failed.join(", "))
    }
}

async fn attempt(
    spec: &CheckSpec,
    base: &Base,
    timeout: Duration,
    budget: &Budget,
) -> Result<Outcome, CheckError> {
    let ctx = Ctx {
        target: base.target.clone(),
        source: base.source,
        extra_sources: base.extra_sources.clone(),
        shared_sources: base.shared_sources,
        deadline: Instant::now() + timeout,
        budget: budget.clone(),
        policy_dir: base.policy_dir.clone(),
        progress: base.progress.clone(),
        attestor: base.attestor.clone(),
    };
    match tokio::time::timeout(timeout, spec.run(&ctx)).await {
        Ok(r) => r,
        Err(_) => Err(CheckError::Deadline(timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(v: serde_json::Value) -> Check {
        serde_json::from_value(v).unwrap()
    }

    fn base() -> Base {
        let sources = SourcePlan::fresh_loopback().assign(0, 1);
        Base {
            target: Arc::new(Target::remote("http://127.0.0.1:9")),
            source: sources.own,
            extra_sources: sources.extra,
            shared_sources: false,
            policy_dir: PathBuf::from("."),
            progress: Arc::new(|_| {}),
            attestor: None,
        }
    }

    #[tokio::test]
    async fn retry_until_met_records_attempts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("appears-later");
        let p2 = path.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            std::fs::write(p2, "ready").unwrap();
        });
        let c = check(serde_json::json!({
            "id": "wait-for-file", "kind": "file", "path": path, "contains": ["ready"],
            "retry": {"within": "5s", "every": "50ms"}
        }));
        let r = run_check(&c, &base()).await;
        assert_eq!(r.status, Status::Pass, "{}", r.summary);
        assert!(r.attempts > 1, "attempts {}", r.attempts);
        assert!(r.summary.contains("attempts"), "{}", r.summary);
    }

    #[tokio::test]
    async fn retry_gives_up_after_within() {
        let c = check(serde_json::json!({
            "id": "never", "kind": "file", "path": "/nonexistent/preflight/never",
            "retry": {"within": "400ms", "every": "100ms"}
        }));
        let t = std::time::Instant::now();
        let r = run_check(&c, &base()).await;
        assert_eq!(r.status, Status::Fail);
        assert!(r.attempts >= 2, "attempts {}", r.attempts);
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    }

    #[tokio::test]
    async fn no_retry_means_one_attempt_and_skip_is_not_retried() {
        let c = check(serde_json::json!({
            "id": "once", "kind": "file", "path": "/nonexistent/preflight/once"
        }));
        assert_eq!(run_check(&c, &base()).await.attempts, 1);
        let c = check(serde_json::json!({
            "id": "no-db", "kind": "sqlite", "query": "SELECT 1", "equals": 1,
            "retry": {"within": "5s", "every": "50ms"}
        }));
        let r = run_check(&c, &base()).await;
        assert_eq!(r.status, Status::Skip);
        assert_eq!(r.attempts, 1);
    }

    /// Regression (issue 15): `timeout` bounded each attempt, not the check, so a check
    /// with `retry` ran 4.9 s under `timeout: 300ms`.
    #[tokio::test]
    async fn the_timeout_bounds_the_whole_check_including_retries() {
        let c = check(serde_json::json!({
            "id": "always-fails", "kind": "command", "argv": ["false"],
            "retry": {"within": "10s", "every": "50ms"}, "timeout": "300ms"
        }));
        let t = std::time::Instant::now();
        let r = run_check(&c, &base()).await;
        // A hang guard only: before the fix this ran for the whole 10 s retry window.
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert_ne!(r.status, Status::Pass);
        // Attempt k starts at least (k-1) × 50 ms after the first, and none starts at or
        // after the 300 ms deadline: at most 6 whatever the load.
        assert!((1..=6).contains(&r.attempts), "attempts {}", r.attempts);
        assert!(r.summary.contains("deadline"), "{}", r.summary);
        assert!(r.summary.contains("300ms"), "{}", r.summary);
        if r.attempts > 1 {
            assert!(
                r.summary
                    .contains(&format!("after {} attempts", r.attempts))
            );
        }
    }

    #[test]
    fn the_deadline_of_a_check_is_its_timeout_or_the_default_plus_the_retry_window() {
        let c = |v: serde_json::Value| {
            let mut base = serde_json::json!({"id": "c", "kind": "http", "request": "GET /"});
            base.as_object_mut()
                .unwrap()
                .extend(v.as_object().unwrap().clone());
            check(base)
        };
        let kind = c(serde_json::json!({})).spec.default_timeout().get();
        assert_eq!(check_deadline(&c(serde_json::json!({}))), kind);
        assert_eq!(
            check_deadline(&c(serde_json::json!({"timeout": "2s"}))),
            Duration::from_secs(2)
        );
        assert_eq!(
            check_deadline(&c(serde_json::json!({
                "timeout": "2s", "retry": {"within": "1m"}
            }))),
            Duration::from_secs(2)
        );
        assert_eq!(
            check_deadline(&c(serde_json::json!({"retry": {"within": "1m"}}))),
            kind + Duration::from_secs(60)
        );
    }

    #[tokio::test]
    async fn the_deadline_is_enforced_around_the_kind() {
        let c = check(serde_json::json!({
            "id": "slow", "kind": "command", "argv": ["sleep", "20"],
            "timeout": "300ms"
        }));
        let t = std::time::Instant::now();
        let r = run_check(&c, &base()).await;
        assert_ne!(r.status, Status::Pass);
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    }

    fn opts() -> CheckOptions {
        CheckOptions {
            concurrency: 1,
            today: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
            ..CheckOptions::new(
                policy(serde_json::json!(null)),
                vec![],
                PathBuf::from("preflight"),
            )
        }
    }

    fn policy(target: serde_json::Value) -> Policy {
        serde_json::from_value(serde_json::json!({
            "version": 1, "name": "t", "target": target, "checks": []
        }))
        .unwrap()
    }

    /// Regression: `admin_token: ${env:TOKEN}` with TOKEN set but empty gave the admin
    /// capability with an empty token, so admin checks FAILed on 401 instead of SKIPping.
    #[test]
    fn an_empty_policy_admin_token_is_no_admin_capability() {
        let p = policy(serde_json::json!({"url": "http://127.0.0.1:9", "admin_token": ""}));
        let Ok(TargetPlan::Remote(t)) = resolve_target(&p, &opts()) else {
            panic!("a remote plan")
        };
        assert!(!t.has(Capability::Admin));
        let p = policy(serde_json::json!({"url": "http://127.0.0.1:9", "admin_token": "s"}));
        let Ok(TargetPlan::Remote(t)) = resolve_target(&p, &opts()) else {
            panic!("a remote plan")
        };
        assert!(t.has(Capability::Admin));
    }

    #[test]
    fn a_remote_target_gets_exactly_the_capabilities_its_policy_gives() {
        let p = policy(serde_json::json!({
            "url": "http://127.0.0.1:9/",
            "process": {"pid_file": "/run/x.pid", "restart": ["true"]},
            "log_dir": "/var/log/x"
        }));
        let Ok(TargetPlan::Remote(t)) = resolve_target(&p, &opts()) else {
            panic!("a remote plan")
        };
        assert_eq!(t.url, "http://127.0.0.1:9");
        assert!(!t.is_spawned());
        let caps = target_info(&t, None, &SourcePlan::fresh_loopback()).capabilities;
        assert_eq!(caps, ["http", "process", "log_dir"]);
        assert!(t.require_restart().is_ok());
    }

    #[test]
    fn only_and_skip_select_and_reject_unknown_ids() {
        let cs: Vec<Check> = ["a", "b", "c"]
            .iter()
            .map(|id| check(serde_json::json!({"id": id, "kind": "file", "path": "x"})))
            .collect();
        let ids = |v: Vec<Check>| v.into_iter().map(|c| c.id).collect::<Vec<_>>();
        assert_eq!(ids(select(&cs, &[], &[]).unwrap()), ["a", "b", "c"]);
        assert_eq!(
            ids(select(&cs, &["c".into(), "a".into()], &[]).unwrap()),
            ["a", "c"]
        );
        assert_eq!(ids(select(&cs, &[], &["b".into()]).unwrap()), ["a", "c"]);
        assert!(
            select(&cs, &["zz".into()], &[])
                .unwrap_err()
                .contains("`zz`")
        );
    }
}
