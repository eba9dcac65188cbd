//! `preflight watch`: continuous verification (docs/watch.md). The policy's read-only checks
//! run again every `--every` against each instance; a check with a `schedule:` runs on it,
//! and a check that disturbs the target runs only with one, holding its instance alone (the
//! exclusive side of a per-instance lock that every other run holds shared). Each run goes
//! through [`engine::run::check`](crate::engine::run::check) against a remote target, so
//! deadlines, budgets, isolation, redaction and the gate are the engine's; an instance that
//! goes away gives ERROR rows, never a crash. Only the last result of each check is kept
//! (plus a bounded ring of run times), so memory does not grow with the runs.
//!
//! Results are served over HTTP: `/metrics` ([`exporter`]), `/` (the last report per
//! instance as HTML) and `/report.json`. The plan (which checks run how) is [`plan`], pure;
//! when a scheduled check runs next is [`schedule`]. Nothing here prints: progress goes to
//! the `progress` callback, and the binary's `cli` prints it.

pub mod exporter;
pub mod schedule;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::RwLock;

use crate::checks::Exclusivity;
use crate::engine::run::{CheckFailure, CheckOptions};
use crate::outcome::Status;
use crate::policy::schedule::Schedule;
use crate::policy::{Check, Policy};
use crate::probe::discovery::{Instance, Source};
use crate::report::{CheckResult, Report};
use crate::secret::Secret;
use exporter::{CheckLabels, Exporter};

/// Runs of checks remembered per instance (`/report.json` `runs`): enough to see a schedule
/// and its neighbours, bounded whatever the uptime.
pub const RUNS_KEPT: usize = 256;

/// How a group of checks is paced.
#[derive(Debug, Clone, PartialEq)]
pub enum Cadence {
    /// `--every`: the read-only checks without a schedule of their own.
    Every(Duration),
    /// A check's own `schedule:`.
    Scheduled(Schedule),
}

/// Checks that run together: one `engine::run::check` per instance and run.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// `read-only` for the `--every` group, else the scheduled check's id.
    pub name: String,
    pub checks: Vec<String>,
    pub cadence: Cadence,
    /// Whether it holds its instance alone (a check that disturbs the target).
    pub exclusive: bool,
}

/// A check watch never runs, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NotRun {
    pub check: String,
    pub reason: String,
}

/// What watch runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub groups: Vec<Group>,
    pub not_run: Vec<NotRun>,
}

/// The name of the `--every` group.
pub const EVERY_GROUP: &str = "read-only";

/// Splits the policy's checks: read-only ones without a schedule run together every
/// `every`; each scheduled check runs alone on its schedule (exclusively when it disturbs
/// the target); a disturbing check without a schedule is not run.
pub fn plan(policy: &Policy, every: Duration) -> Plan {
    let mut shared = Vec::new();
    let mut groups = Vec::new();
    let mut not_run = Vec::new();
    for c in &policy.checks {
        let exclusive = c.spec.exclusivity() == Exclusivity::Exclusive;
        match (&c.schedule, exclusive) {
            (Some(s), _) => groups.push(Group {
                name: c.id.clone(),
                checks: vec![c.id.clone()],
                cadence: Cadence::Scheduled(*s),
                exclusive,
            }),
            (None, false) => shared.push(c.id.clone()),
            (None, true) => not_run.push(NotRun {
                check: c.id.clone(),
                reason: format!(
                    "not run by watch: a `{}` check disturbs the target, so watch runs it only \
                     on a `schedule:` of its own (e.g. `schedule: weekly on sun at 03:00`)",
                    c.spec.kind()
                ),
            }),
        }
    }
    if !shared.is_empty() {
        groups.insert(
            0,
            Group {
                name: EVERY_GROUP.into(),
                checks: shared,
                cadence: Cadence::Every(every),
                exclusive: false,
            },
        );
    }
    Plan { groups, not_run }
}

/// The policy one group runs: its checks, their `depends_on` kept only within the group (a
/// dependency in another group ran at another time: it is not waited for).
fn group_policy(policy: &Policy, group: &Group) -> Policy {
    let checks: Vec<Check> = policy
        .checks
        .iter()
        .filter(|c| group.checks.contains(&c.id))
        .cloned()
        .map(|mut c| {
            c.depends_on.retain(|d| group.checks.contains(d));
            c
        })
        .collect();
    Policy {
        checks,
        ..policy.clone()
    }
}

/// What `preflight watch` was asked to do.
pub struct Options {
    pub policy: Policy,
    pub policy_files: Vec<PathBuf>,
    /// The instances to watch (at least one), each a remote target.
    pub instances: Vec<Instance>,
    pub admin_token: Option<String>,
    /// How often the read-only checks run.
    pub every: Duration,
    /// Most read-only checks of one run at once, per instance.
    pub concurrency: usize,
    /// Where `/metrics`, `/` and `/report.json` are served (port 0: any free port).
    pub listen: SocketAddr,
    /// The `preflight` executable (`{exe}` in `command` checks; nothing is spawned).
    pub exe: PathBuf,
    /// Values no report may show.
    pub secrets: Vec<Secret>,
    /// Called once the HTTP listener is bound, with its address.
    pub on_listening: Box<dyn FnOnce(SocketAddr) + Send>,
    /// One line per event (a run started or ended, a check not run).
    pub progress: Arc<dyn Fn(&str) + Send + Sync>,
    /// Resolves when watch should stop: the runs under way finish, then it returns.
    pub shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// Where `instances` came from, listed again on an interval (`--targets`, `--refresh`).
    pub relist: Option<Relist>,
}

/// The instances' source, listed again every `every`: an instance that appears is watched
/// from then on; one that is gone is no longer (its runs under way finish, its series leave
/// `/metrics`); a listing that fails keeps the instances of the last one that did not.
#[derive(Debug, Clone)]
pub struct Relist {
    pub every: Duration,
    pub source: Source,
}

/// Why watch could not run.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// One run of a group on an instance, for `/report.json` (the evidence of schedules and
/// of exclusivity).
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub group: String,
    pub checks: Vec<String>,
    pub exclusive: bool,
    /// Unix times in seconds (millisecond resolution).
    pub started: f64,
    pub ended: f64,
    pub verdict: crate::report::Verdict,
}

/// What watch knows of one instance: the last result of each check, and recent runs.
struct Slot {
    instance: Instance,
    results: HashMap<String, CheckResult>,
    labels: HashMap<String, CheckLabels>,
    report: Option<Report>,
    runs: VecDeque<RunRecord>,
    /// The runs under way: group and start (Unix seconds).
    running: Vec<Running>,
    /// No longer listed: a run that ends now records nothing (its series are gone).
    retired: bool,
}

/// A run under way, for `/report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Running {
    pub group: String,
    pub started: f64,
}

/// The state the runners write and the HTTP handlers read.
struct Board {
    policy: Policy,
    every: Duration,
    not_run: Vec<NotRun>,
    /// The instances watched now, in the order they were listed.
    slots: Mutex<Vec<Arc<Mutex<Slot>>>>,
    exporter: Exporter,
}

/// A slot, whatever a panic while it was held left (its data is whole at every step).
fn lock(slot: &Mutex<Slot>) -> std::sync::MutexGuard<'_, Slot> {
    slot.lock().unwrap_or_else(|e| e.into_inner())
}

fn unix(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

impl Board {
    /// The instances watched now.
    fn slots(&self) -> Vec<Arc<Mutex<Slot>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Now watching these instances.
    fn set_slots(&self, slots: Vec<Arc<Mutex<Slot>>>) {
        *self.slots.lock().unwrap_or_else(|e| e.into_inner()) = slots;
    }

    /// A run of `group` on an instance has started (it holds the instance's lock).
    fn started(&self, slot: &Mutex<Slot>, group: &Group, started: DateTime<Utc>) {
        lock(slot).running.push(Running {
            group: group.name.clone(),
            started: unix(started),
        });
    }

    /// Takes a group's report into the instance's state, the combined report and the metrics.
    fn record(
        &self,
        slot: &Mutex<Slot>,
        group: &Group,
        run: Report,
        started: DateTime<Utc>,
        ended: DateTime<Utc>,
    ) {
        let today = chrono::Local::now().date_naive();
        let policy = &self.policy;
        let mut slot = lock(slot);
        slot.running.retain(|r| r.group != group.name);
        if slot.retired {
            return;
        }
        let instance = slot.instance.name.clone();
        for r in &run.results {
            let blocking =
                crate::engine::gate::blocks(Status::Fail, r.severity, &policy.gate.block_on)
                    && crate::engine::gate::active_waiver(&policy.waivers, &r.id, today).is_none();
            let labels = CheckLabels {
                policy: policy.name.clone(),
                instance: instance.clone(),
                check: r.id.clone(),
                kind: r.kind.clone(),
                severity: r.severity.as_str().into(),
                blocking: blocking.to_string(),
            };
            if let Some(old) = slot.labels.insert(r.id.clone(), labels.clone())
                && old != labels
            {
                self.exporter.forget(&old);
            }
            self.exporter.record_check(
                &labels,
                r.status,
                r.duration_ms as f64 / 1000.0,
                unix(ended),
            );
            slot.results.insert(r.id.clone(), r.clone());
        }
        // Policy order; a check not run yet is absent, one watch never runs is listed SKIP
        // (out of scope: it never blocks).
        let mut results: Vec<CheckResult> = Vec::new();
        for c in &policy.checks {
            if let Some(r) = slot.results.get(&c.id) {
                results.push(r.clone());
            } else if let Some(n) = self.not_run.iter().find(|n| n.check == c.id) {
                let mut r = crate::engine::run::bare_result(c, Status::Skip);
                r.out_of_scope = true;
                r.summary = n.reason.clone();
                results.push(r);
            }
        }
        let decision = crate::engine::gate::decide(
            &mut results,
            &policy.gate.block_on,
            &policy.waivers,
            today,
        );
        self.exporter
            .record_verdict(&policy.name, &instance, decision.verdict, unix(ended));
        slot.runs.push_back(RunRecord {
            group: group.name.clone(),
            checks: group.checks.clone(),
            exclusive: group.exclusive,
            started: unix(started),
            ended: unix(ended),
            verdict: run.verdict,
        });
        while slot.runs.len() > RUNS_KEPT {
            slot.runs.pop_front();
        }
        slot.report = Some(Report {
            started_at: started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            duration_ms: (ended - started).num_milliseconds().max(0) as u64,
            verdict: decision.verdict,
            verdict_reason: decision.reason,
            counts: decision.counts,
            waivers: decision.waivers,
            results,
            ..run
        });
    }
}

/// Runs watch until `shutdown` resolves; the runs under way finish first.
pub async fn run(opts: Options) -> Result<(), WatchError> {
    let Options {
        policy,
        policy_files,
        instances,
        admin_token,
        every,
        concurrency,
        listen,
        exe,
        secrets,
        on_listening,
        progress,
        shutdown,
        relist,
    } = opts;
    let plan = plan(&policy, every);
    for n in &plan.not_run {
        progress(&format!("{}: {}", n.check, n.reason));
    }
    let board = Arc::new(Board {
        every,
        not_run: plan.not_run.clone(),
        slots: Mutex::new(Vec::new()),
        exporter: Exporter::new(),
        policy: policy.clone(),
    });

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| WatchError::Listen {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| WatchError::Listen {
        addr: listen,
        source,
    })?;
    on_listening(addr);
    let (stop_tx, mut server_stop) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(
        axum::serve(listener, routes(board.clone()))
            .with_graceful_shutdown(async move {
                let _ = server_stop.wait_for(|s| *s).await;
            })
            .into_future(),
    );

    let runner = Arc::new(Runner {
        policy_files,
        exe,
        admin_token,
        concurrency,
        secrets,
        progress: progress.clone(),
        board: board.clone(),
        disturbing: Arc::new(tokio::sync::Semaphore::new(
            policy
                .fleet
                .clone()
                .unwrap_or_default()
                .max_disturbed
                .max(1),
        )),
    });
    let mut members = Members {
        runner,
        groups: plan.groups,
        tasks: tokio::task::JoinSet::new(),
        watched: Vec::new(),
    };
    members.update(instances);
    let mut relist = relist.map(|r| {
        let first = tokio::time::Instant::now() + r.every;
        (tokio::time::interval_at(first, r.every), r.source)
    });
    let mut shutdown = shutdown;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            source = next_listing(&mut relist) => {
                let n = members.watched.len();
                match source.load().await {
                    Ok(listed) => {
                        let (added, removed) = members.update(listed);
                        if added + removed > 0 {
                            progress(&format!(
                                "targets: {added} instance(s) added, {removed} removed: {} watched",
                                members.watched.len()
                            ));
                        }
                    }
                    Err(e) => progress(&format!(
                        "targets: listing failed ({e}); still watching the {n} instance(s) \
                         listed before"
                    )),
                }
            }
            // Reap the tasks of instances no longer listed.
            Some(_) = members.tasks.join_next(), if !members.tasks.is_empty() => {}
        }
    }
    progress("stopping: the runs under way finish first");
    for m in &members.watched {
        let _ = m.stop.send(true);
    }
    while members.tasks.join_next().await.is_some() {}
    let _ = stop_tx.send(true);
    let _ = server.await;
    Ok(())
}

/// The next time the source is to be listed again; never, without one.
async fn next_listing(relist: &mut Option<(tokio::time::Interval, Source)>) -> Source {
    match relist {
        Some((interval, source)) => {
            interval.tick().await;
            source.clone()
        }
        None => std::future::pending().await,
    }
}

/// The instances watched and their runners.
struct Members {
    runner: Arc<Runner>,
    groups: Vec<Group>,
    tasks: tokio::task::JoinSet<()>,
    watched: Vec<Member>,
}

/// One instance watched: its slot on the board and the switch that stops its runners.
struct Member {
    instance: Instance,
    slot: Arc<Mutex<Slot>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Members {
    /// Watches what `listed` names and nothing else: an instance is the same one while its
    /// name and URL are (its labels are updated in place). Returns (added, removed).
    fn update(&mut self, listed: Vec<Instance>) -> (usize, usize) {
        let same = |a: &Instance, b: &Instance| a.name == b.name && a.url == b.url;
        let progress = self.runner.progress.clone();
        let mut listed: Vec<Instance> = listed
            .into_iter()
            .filter(|i| {
                let ok = crate::target::is_http_url(&i.url);
                if !ok {
                    progress(&format!(
                        "targets: instance `{}` skipped: `{}` is not an http:// or https:// URL",
                        i.name, i.url
                    ));
                }
                ok
            })
            .collect();
        let before = self.watched.len();
        let board = self.runner.board.clone();
        let mut kept = Vec::new();
        for m in self.watched.drain(..) {
            match listed.iter().position(|i| same(i, &m.instance)) {
                Some(k) => {
                    let i = listed.remove(k);
                    lock(&m.slot).instance.labels = i.labels;
                    kept.push(m);
                }
                None => {
                    // Its runs under way finish; what they find is not recorded.
                    let _ = m.stop.send(true);
                    let mut slot = lock(&m.slot);
                    slot.retired = true;
                    board.exporter.forget_instance(
                        &board.policy.name,
                        &m.instance.name,
                        slot.labels.values(),
                    );
                }
            }
        }
        let removed = before - kept.len();
        self.watched = kept;
        let added = listed.len();
        for i in listed {
            let m = self.start(i);
            self.watched.push(m);
        }
        board.set_slots(self.watched.iter().map(|m| m.slot.clone()).collect());
        (added, removed)
    }

    /// Starts the runners of one instance.
    fn start(&mut self, instance: Instance) -> Member {
        let board = &self.runner.board;
        board.exporter.set_interval(
            &board.policy.name,
            &instance.name,
            board.every.as_secs_f64(),
        );
        let slot = Arc::new(Mutex::new(Slot {
            instance: instance.clone(),
            results: HashMap::new(),
            labels: HashMap::new(),
            report: None,
            runs: VecDeque::new(),
            running: Vec::new(),
            retired: false,
        }));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        // Every run on this instance holds its lock: read-only runs the shared side, a
        // disturbing check the exclusive side (tokio's RwLock is fair: a waiting writer
        // is not starved by readers that keep coming).
        let lock = Arc::new(RwLock::new(()));
        for group in &self.groups {
            let job = Job {
                slot: slot.clone(),
                url: instance.url.clone(),
                instance: instance.name.clone(),
                policy: group_policy(&board.policy, group),
                group: group.clone(),
                lock: lock.clone(),
            };
            self.tasks
                .spawn(self.runner.clone().repeat(job, stopped.clone()));
        }
        Member {
            instance,
            slot,
            stop,
        }
    }
}

/// What every runner shares.
struct Runner {
    policy_files: Vec<PathBuf>,
    exe: PathBuf,
    admin_token: Option<String>,
    concurrency: usize,
    secrets: Vec<Secret>,
    progress: Arc<dyn Fn(&str) + Send + Sync>,
    board: Arc<Board>,
    /// `fleet.max_disturbed` permits: a disturbing check holds one while it runs, so no more
    /// instances than that are disturbed at once.
    disturbing: Arc<tokio::sync::Semaphore>,
}

/// One group on one instance.
struct Job {
    slot: Arc<Mutex<Slot>>,
    url: String,
    instance: String,
    policy: Policy,
    group: Group,
    lock: Arc<RwLock<()>>,
}

/// A draw for the jitter in `[0, 1)`.
fn draw() -> f64 {
    rand::random::<f64>()
}

impl Runner {
    /// Runs `job` on its cadence until `stop` turns true; a run under way finishes.
    async fn repeat(self: Arc<Self>, job: Job, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut next = match &job.group.cadence {
            Cadence::Every(_) => Utc::now(),
            Cadence::Scheduled(s) => schedule::first_run(s, Utc::now(), draw()),
        };
        if let Cadence::Scheduled(s) = &job.group.cadence {
            (self.progress)(&format!(
                "{}: {} ({s}) first at {}",
                job.instance,
                job.group.name,
                next.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ));
        }
        loop {
            let wait = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            // Waiting for the lock ends with the stop too: nothing started is cut short.
            let guard = tokio::select! {
                g = lock_for(&job) => g,
                _ = stop.wait_for(|s| *s) => return,
            };
            let started = Utc::now();
            self.board.started(&job.slot, &job.group, started);
            let report = self.once(&job).await;
            let ended = Utc::now();
            drop(guard);
            (self.progress)(&format!(
                "{}: {} {} in {:.1} s ({})",
                job.instance,
                job.group.name,
                report.verdict.as_str(),
                (ended - started).num_milliseconds() as f64 / 1000.0,
                report
                    .results
                    .iter()
                    .map(|r| format!("{} {}", r.id, r.status.as_str()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            self.board
                .record(&job.slot, &job.group, report, started, ended);
            next = match &job.group.cadence {
                Cadence::Every(d) => {
                    started + chrono::Duration::from_std(*d).unwrap_or(chrono::Duration::MAX)
                }
                Cadence::Scheduled(s) => schedule::next_run(s, started, draw()),
            };
        }
    }

    /// One run of a group: the engine against the instance as a remote target.
    async fn once(&self, job: &Job) -> Report {
        let opts = CheckOptions {
            target: Some(job.url.clone()),
            admin_token: self.admin_token.clone(),
            concurrency: self.concurrency,
            secrets: self.secrets.clone(),
            disturbing: Some(self.disturbing.clone()),
            ..CheckOptions::new(
                job.policy.clone(),
                self.policy_files.clone(),
                self.exe.clone(),
            )
        };
        match crate::engine::run::check(opts).await {
            Ok(r) => r,
            Err(CheckFailure::Usage(msg)) => failed_run(&job.policy, &job.url, &msg),
        }
    }
}

async fn lock_for(job: &Job) -> Guard<'_> {
    if job.group.exclusive {
        Guard::Exclusive(job.lock.write().await)
    } else {
        Guard::Shared(job.lock.read().await)
    }
}

/// Whichever side of an instance's lock a run holds.
enum Guard<'a> {
    Shared(#[allow(dead_code)] tokio::sync::RwLockReadGuard<'a, ()>),
    Exclusive(#[allow(dead_code)] tokio::sync::RwLockWriteGuard<'a, ()>),
}

/// A run the engine refused (it cannot happen with a URL checked up front, but a report is
/// due anyway): every check ERROR with the reason.
fn failed_run(policy: &Policy, url: &str, msg: &str) -> Report {
    let mut results: Vec<CheckResult> = policy
        .checks
        .iter()
        .map(|c| {
            let mut r = crate::engine::run::bare_result(c, Status::Error);
            r.summary = msg.to_string();
            r
        })
        .collect();
    let today = chrono::Local::now().date_naive();
    let d =
        crate::engine::gate::decide(&mut results, &policy.gate.block_on, &policy.waivers, today);
    Report {
        schema_version: crate::report::SCHEMA_VERSION,
        tool: format!("preflight {}", env!("CARGO_PKG_VERSION")),
        policy: crate::report::PolicyInfo {
            name: policy.name.clone(),
            description: policy.description.clone(),
            files: vec![],
        },
        target: crate::report::TargetInfo {
            url: url.into(),
            ..Default::default()
        },
        started_at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        duration_ms: 0,
        verdict: d.verdict,
        verdict_reason: d.reason,
        block_on: policy.gate.block_on.clone(),
        counts: d.counts,
        waivers: d.waivers,
        results,
        canary: None,
        fleet: None,
    }
}

/// `/report.json`: the last report of each instance and its recent runs.
#[derive(Serialize)]
struct Document<'a> {
    policy: &'a str,
    every_seconds: f64,
    not_run: &'a [NotRun],
    instances: Vec<InstanceDoc>,
}

#[derive(Serialize)]
struct InstanceDoc {
    name: String,
    url: String,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    labels: std::collections::BTreeMap<String, String>,
    /// `null` until the first run ended.
    report: Option<Report>,
    runs: Vec<RunRecord>,
    running: Vec<Running>,
}

fn routes(board: Arc<Board>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/report.json", get(report_json))
        .route("/", get(index))
        .with_state(board)
}

async fn metrics(State(board): State<Arc<Board>>) -> Response {
    (
        [(header::CONTENT_TYPE, exporter::CONTENT_TYPE)],
        board.exporter.encode(),
    )
        .into_response()
}

async fn report_json(State(board): State<Arc<Board>>) -> Response {
    let instances = board
        .slots()
        .iter()
        .map(|s| {
            let s = lock(s);
            InstanceDoc {
                name: s.instance.name.clone(),
                url: s.instance.url.clone(),
                labels: s.instance.labels.clone(),
                report: s.report.clone(),
                runs: s.runs.iter().cloned().collect(),
                running: s.running.clone(),
            }
        })
        .collect();
    let doc = Document {
        policy: &board.policy.name,
        every_seconds: board.every.as_secs_f64(),
        not_run: &board.not_run,
        instances,
    };
    axum::Json(doc).into_response()
}

#[derive(serde::Deserialize)]
struct Which {
    instance: Option<String>,
}

/// The last report of `?instance=NAME` (or of the only instance) as HTML; with several
/// instances and none named, a list of them with their verdicts.
async fn index(State(board): State<Arc<Board>>, Query(which): Query<Which>) -> Response {
    let slots = board.slots();
    let chosen = match (&which.instance, slots.len()) {
        (Some(name), _) => slots.iter().find(|s| lock(s).instance.name == *name),
        (None, 1) => slots.first(),
        (None, _) => None,
    };
    let esc = crate::report::html::esc;
    if let Some(slot) = chosen {
        let s = lock(slot);
        return match &s.report {
            Some(r) => {
                let mut out = Vec::new();
                let _ =
                    crate::report::html::write(r, &mut out, &crate::report::RenderOpts::default());
                Html(String::from_utf8_lossy(&out).into_owned()).into_response()
            }
            None => Html(format!(
                "<!doctype html><title>preflight watch</title><p>{}: no run has ended yet.</p>",
                esc(&s.instance.name)
            ))
            .into_response(),
        };
    }
    if which.instance.is_some() {
        return (axum::http::StatusCode::NOT_FOUND, "no such instance").into_response();
    }
    let rows: String = slots
        .iter()
        .map(|s| {
            let s = lock(s);
            let verdict = s
                .report
                .as_ref()
                .map_or("(no run yet)", |r| r.verdict.as_str());
            let name = &s.instance.name;
            let q: String = url_component(name);
            format!(
                "<tr><td><a href=\"/?instance={q}\">{}</a></td><td>{}</td><td>{}</td></tr>",
                esc(name),
                esc(&s.instance.url),
                esc(verdict)
            )
        })
        .collect();
    Html(format!(
        "<!doctype html><meta charset=\"utf-8\"><title>preflight watch: {p}</title>\
         <h1>preflight watch: {p}</h1><table><tr><th>instance</th><th>url</th><th>verdict</th></tr>{rows}</table>\
         <p><a href=\"/metrics\">/metrics</a> · <a href=\"/report.json\">/report.json</a></p>",
        p = esc(&board.policy.name)
    ))
    .into_response()
}

/// Percent-encodes everything but unreserved characters, for a query value.
fn url_component(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> Policy {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.yaml");
        std::fs::write(&p, yaml).unwrap();
        crate::policy::load(&[p]).unwrap().policy
    }

    #[test]
    fn the_plan_groups_read_only_checks_and_schedules_the_rest() {
        let p = policy(
            "version: 1\nname: w\nchecks:\n\
             - {id: up, kind: http, request: GET /healthz}\n\
             - {id: ready, kind: http, request: GET /readyz, depends_on: [up]}\n\
             - {id: hourly-ready, kind: http, request: GET /readyz, schedule: hourly, depends_on: [up]}\n\
             - {id: slow, kind: query_timeout, budget: 50ms, margin: 150ms, depends_on: [up], schedule: every 3s}\n\
             - {id: breaker, kind: circuit_breaker, dependency: feed, threshold: 5, reset_timeout: 2s}\n",
        );
        let plan = plan(&p, Duration::from_secs(60));
        let names: Vec<(&str, bool)> = plan
            .groups
            .iter()
            .map(|g| (g.name.as_str(), g.exclusive))
            .collect();
        assert_eq!(
            names,
            [
                (EVERY_GROUP, false),
                ("hourly-ready", false),
                ("slow", true)
            ]
        );
        assert_eq!(plan.groups[0].checks, ["up", "ready"]);
        assert_eq!(
            plan.groups[0].cadence,
            Cadence::Every(Duration::from_secs(60))
        );
        assert_eq!(plan.not_run.len(), 1);
        assert_eq!(plan.not_run[0].check, "breaker");
        assert!(
            plan.not_run[0].reason.contains("schedule"),
            "{:?}",
            plan.not_run
        );
        // a dependency in another group is not waited for; one inside is kept
        let g = group_policy(&p, &plan.groups[2]);
        assert_eq!(g.checks.len(), 1);
        assert!(g.checks[0].depends_on.is_empty());
        let g = group_policy(&p, &plan.groups[0]);
        assert_eq!(g.checks[1].depends_on, ["up"]);
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(url_component("10.0.0.5:8080"), "10.0.0.5%3A8080");
        assert_eq!(url_component("a b&c"), "a%20b%26c");
    }
}
