//! `crash_recovery`: ingests ticks while recording every acknowledgement, takes a snapshot,
//! sends SIGKILL mid-ingest, restarts the target and times its readiness, then requires every
//! acknowledged tick and the last snapshot to be present. Measuring ([`run`]) does all of
//! that and records it; [`judge`] is pure.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::checks::{Exclusivity, Kind, KindSpec, Problems, ticks};
use crate::outcome::{Capability, CheckError, Observation, Outcome};
use crate::probe::http::{Http, Rotating};
use crate::target::Ctx;
use crate::units::Dur;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Ticks written before the kill (in batches, continuing until the kill).
    #[serde(default = "default_ticks")]
    pub ticks: u32,
    /// Ticks per ingest request.
    #[serde(default = "default_batch")]
    pub batch: u32,
    /// The restarted service must be ready within this.
    pub ready_within: Dur,
    /// Require the snapshot taken before the kill to be restored (default true).
    #[serde(default = "yes")]
    pub require_snapshot: bool,
}

fn default_ticks() -> u32 {
    2000
}
fn default_batch() -> u32 {
    50
}
fn yes() -> bool {
    true
}

impl Spec {
    fn check_fields(&self, p: &mut Problems) {
        p.positive("/ticks", self.ticks.into(), "ticks");
        p.positive("/batch", self.batch.into(), "batch");
        p.ordered("/batch", self.batch, self.ticks.max(1), "batch vs ticks");
    }
}

/// The answer to `POST /admin/snapshot` before the kill.
#[derive(Debug, Clone, PartialEq)]
pub enum Snapshot {
    /// 200, with the generation it reported.
    Taken { generation: Option<u64> },
    /// Another status, with the body's `/error/code`.
    Refused { status: u16, code: String },
    /// No answer: the transport error.
    Failed(String),
}

/// What the check measured: plain data, judged by [`judge`].
#[derive(Debug, Clone, PartialEq)]
pub struct Measurements {
    pub snapshot: Snapshot,
    /// Ticks acknowledged when the kill was sent.
    pub acked_at_kill: usize,
    /// Every tick acknowledged before the ingest stopped.
    pub acknowledged: usize,
    pub pid_killed: u32,
    pub ingest_errors: u64,
    pub first_ingest_error: Option<String>,
    /// From the kill to the first 200 of `/readyz`; `None`: never ready while polled.
    pub ready_after: Option<Duration>,
    /// How long readiness was polled for.
    pub polled_for: Duration,
    /// The pid answering after the restart, when the pid file showed a new one.
    pub pid_after: Option<u32>,
    /// Acknowledged ids the restarted target does not have (looked up once ready).
    pub missing: Vec<String>,
    /// `/snapshot/restored_generation` of `/status` after the restart.
    pub restored: Option<u64>,
}

/// What the ingest task reports when stopped.
struct Ingested {
    errors: u64,
    first_error: Option<String>,
}

/// Ingests batches until told to stop, recording every acknowledged id. Moves to another
/// client address when rate-limited.
async fn ingest(
    clients: Vec<Http>,
    prefix: String,
    batch: u32,
    total: u32,
    acked: Arc<Mutex<Vec<String>>>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Ingested {
    let mut seq = 0u32;
    let mut c = 0usize;
    let mut errors = 0u64;
    let mut first_error = None;
    while !*stop.borrow() && seq < total * 4 {
        let (ids, body) = ticks::batch(&prefix, seq, batch, "m1", None);
        match clients[c % clients.len()]
            .post(ticks::INGEST, Some(&body))
            .await
        {
            Ok(r) if r.status == 200 => {
                lock(&acked).extend(ids);
                seq += batch;
            }
            Ok(r) if r.status == 429 => c += 1,
            Ok(r) => {
                errors += 1;
                first_error.get_or_insert(format!("{} {}", r.status, r.text()));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => {
                // Expected once the target is killed.
                errors += 1;
                first_error.get_or_insert(e.to_string());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    Ingested {
        errors,
        first_error,
    }
}

fn lock(acked: &Mutex<Vec<String>>) -> std::sync::MutexGuard<'_, Vec<String>> {
    acked.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits until `n` ticks are acknowledged or the deadline passes.
async fn wait_acked(acked: &Mutex<Vec<String>>, n: usize, deadline: Instant) {
    while lock(acked).len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Measures: ingest, snapshot, SIGKILL mid-ingest, restart, readiness, then what survived.
pub async fn run(spec: &Spec, ctx: &Ctx) -> Result<Outcome, CheckError> {
    ctx.require(Capability::Process)?;
    ctx.target.require_restart()?;
    ctx.require(Capability::Admin)?;
    // The pid to kill, known before anything is written: a remote target's pid file that is
    // missing or stale is an ERROR here, not after ingesting.
    let pid_before = ctx.target.pid()?;
    if !crate::target::spawn::is_alive(pid_before) {
        return Err(CheckError::Target(format!(
            "pid {pid_before} (the target's pid) is not running: stale pid file?"
        )));
    }
    let mut sent = Vec::new();
    let (mut m, acked_ids) = ingest_snapshot_kill(spec, ctx, &mut sent).await?;
    let killed_at = Instant::now();
    sent.push("restart".into());
    ctx.target.restart().await?;
    m.ready_after = wait_ready(spec, ctx, killed_at).await?;
    m.polled_for = killed_at.elapsed();
    sent.push("GET /readyz until 200".into());
    if m.ready_after.is_some() {
        verify(spec, ctx, &acked_ids, &mut m, &mut sent).await?;
    }
    let mut out = judge(spec, &m);
    out.sent = sent;
    Ok(out)
}

/// Ingests, takes a snapshot early, and sends SIGKILL mid-ingest: the measurements so far
/// and every acknowledged id.
async fn ingest_snapshot_kill(
    spec: &Spec,
    ctx: &Ctx,
    sent: &mut Vec<String>,
) -> Result<(Measurements, Vec<String>), CheckError> {
    let http = ctx.http()?;
    let clients = std::iter::once(ctx.source)
        .chain(ctx.extra_sources.iter().copied())
        .map(|a| ctx.http_from(a))
        .collect::<Result<Vec<_>, _>>()?;
    let prefix = format!("cr-{:08x}", rand::random::<u32>());
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    sent.push(format!(
        "POST /v1/ticks in batches of {} (ids {prefix}-N) until the kill",
        spec.batch
    ));
    let writer = tokio::spawn(ingest(
        clients,
        prefix.clone(),
        spec.batch,
        spec.ticks,
        acked.clone(),
        stop_rx,
    ));
    let ingest_deadline = Instant::now() + Duration::from_secs(20).min(ctx.remaining()?);
    // A snapshot early in the ingest.
    wait_acked(
        &acked,
        (spec.ticks / 4).max(spec.batch) as usize,
        ingest_deadline,
    )
    .await;
    sent.push("POST /admin/snapshot".into());
    let snapshot = match http.admin("POST", "/admin/snapshot", None).await {
        Ok(r) if r.status == 200 => Snapshot::Taken {
            generation: r.json()?.get("generation").and_then(|g| g.as_u64()),
        },
        Ok(r) => Snapshot::Refused {
            status: r.status,
            code: r
                .json()
                .ok()
                .and_then(|v| {
                    v.pointer("/error/code")
                        .and_then(|c| c.as_str())
                        .map(str::to_string)
                })
                .unwrap_or_default(),
        },
        Err(e) => Snapshot::Failed(e.to_string()),
    };
    // SIGKILL mid-ingest.
    wait_acked(&acked, spec.ticks as usize / 2, ingest_deadline).await;
    let acked_at_kill = lock(&acked).len();
    let pid_killed = ctx.target.pid()?;
    sent.push(format!("SIGKILL pid {pid_killed}"));
    let kill = ctx.target.kill_hard().await;
    let _ = stop_tx.send(true);
    let ingested = writer
        .await
        .map_err(|e| CheckError::Local(format!("ingest task: {e}")))?;
    kill?;
    let acked_ids = lock(&acked).clone();
    if acked_ids.is_empty() {
        return Err(CheckError::Target(format!(
            "no tick was acknowledged before the kill: {}",
            ingested.first_error.unwrap_or_default()
        )));
    }
    let m = Measurements {
        snapshot,
        acked_at_kill,
        acknowledged: acked_ids.len(),
        pid_killed,
        ingest_errors: ingested.errors,
        first_ingest_error: ingested.first_error,
        ready_after: None,
        polled_for: Duration::ZERO,
        pid_after: None,
        missing: Vec::new(),
        restored: None,
    };
    Ok((m, acked_ids))
}

/// Polls `/readyz` until 200: the time from the kill, or `None` when the polling gave up
/// (at three times the limit, at least 10 s, within the check's deadline).
async fn wait_ready(
    spec: &Spec,
    ctx: &Ctx,
    killed_at: Instant,
) -> Result<Option<Duration>, CheckError> {
    let poll_until = killed_at
        + (spec.ready_within.0 * 3)
            .max(Duration::from_secs(10))
            .min(ctx.remaining()?);
    let probe = ctx.http()?;
    while Instant::now() < poll_until {
        if let Ok(r) = probe.get("/readyz").await
            && r.status == 200 {
                return Ok(Some(killed_at.elapsed()));
            }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(None)
}

/// Once ready: which pid answers, which acknowledged ticks are missing, which snapshot
/// generation was restored.
async fn verify(
    spec: &Spec,
    ctx: &Ctx,
    acked_ids: &[String],
    m: &mut Measurements,
    sent: &mut Vec<String>,
) -> Result<(), CheckError> {
    // A remote service may write its pid file a moment after it is ready; wait briefly for
    // a pid other than the killed one.
    let pid_end = Instant::now() + Duration::from_secs(2).min(ctx.remaining()?);
    m.pid_after = loop {
        match ctx.target.pid() {
            Ok(p) if p != m.pid_killed => break Some(p),
            _ if Instant::now() >= pid_end => break None,
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let probe = ctx.http()?;
    m.missing = ticks::missing(&mut Rotating::new(ctx)?, acked_ids).await?;
    sent.push(format!(
        "POST {} with {} ids",
        ticks::LOOKUP,
        acked_ids.len()
    ));
    if spec.require_snapshot {
        let r = probe.get("/status").await?;
        sent.push("GET /status".into());
        m.restored = r.json().ok().and_then(|v| {
            v.pointer("/snapshot/restored_generation")
                .and_then(|g| g.as_u64())
        });
    }
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

/// Judges the recovery (pure): the snapshot taken, ready within the limit, every
/// acknowledged tick present, the snapshot restored.
pub fn judge(spec: &Spec, m: &Measurements) -> Outcome {
    let mut out = Outcome::default();
    let generation = match m.snapshot {
        Snapshot::Taken { generation } => generation,
        _ => None,
    };
    if spec.require_snapshot {
        let (observed, ok) = match &m.snapshot {
            Snapshot::Taken { generation } => {
                (format!("generation {generation:?}"), generation.is_some())
            }
            Snapshot::Refused { status, code } => (format!("{status} {code}"), false),
            Snapshot::Failed(e) => (e.clone(), false),
        };
        out.observe(Observation::new(
            "snapshot before the kill",
            "200 with a generation",
            observed,
            ok,
        ));
    }
    out.observe(Observation::new(
        "ready after restart",
        format!("≤ {}", spec.ready_within),
        m.ready_after.map_or_else(
            || format!("not ready after {:.1} s", m.polled_for.as_secs_f64()),
            ms,
        ),
        m.ready_after.is_some_and(|d| d <= spec.ready_within.0),
    ));
    let Some(ready_after) = m.ready_after else {
        out.summary = "the restarted target never became ready".into();
        // What was done is evidence even when nothing past readiness can be judged.
        out.evidence = serde_json::json!({
            "acknowledged_at_kill": m.acked_at_kill,
            "pid_killed": m.pid_killed,
            "pid_after_restart": m.pid_after,
            "ready_ms": null,
            "polled_ms": m.polled_for.as_secs_f64() * 1e3,
            "snapshot_generation": generation,
        });
        return out;
    };
    out.observe(Observation::new(
        "acknowledged ticks after SIGKILL",
        format!("all {} present", m.acknowledged),
        format!(
            "{} missing{}",
            m.missing.len(),
            if m.missing.is_empty() {
                String::new()
            } else {
                format!(", e.g. {:?}", &m.missing[..m.missing.len().min(3)])
            }
        ),
        m.missing.is_empty(),
    ));
    if spec.require_snapshot {
        out.observe(Observation::new(
            "snapshot restored at start",
            match generation {
                Some(g) => format!("restored_generation ≥ {g}"),
                None => "a snapshot taken before the kill".into(),
            },
            m.restored
                .map_or("none".into(), |g| format!("restored_generation {g}")),
            matches!((generation, m.restored), (Some(g), Some(r)) if r >= g),
        ));
    }
    out.summary = format!(
        "SIGKILL pid {} after {} acknowledged ticks; ready in {} as pid {}; {} of {} acknowledged ticks missing; snapshot {} → restored {}",
        m.pid_killed,
        m.acked_at_kill,
        ms(ready_after),
        m.pid_after.map_or("?".into(), |p| p.to_string()),
        m.missing.len(),
        m.acknowledged,
        generation.map_or("none".into(), |g| g.to_string()),
        m.restored.map_or("none".into(), |g| g.to_string()),
    );
    out.evidence = serde_json::json!({
        "acknowledged": m.acknowledged,
        "acknowledged_at_kill": m.acked_at_kill,
        "pid_killed": m.pid_killed,
        "pid_after_restart": m.pid_after,
        "ingest_errors": m.ingest_errors,
        "first_ingest_error": m.first_ingest_error,
        "ready_ms": ready_after.as_secs_f64() * 1e3,
        "missing": m.missing,
        "snapshot_generation": generation,
        "restored_generation": m.restored,
    });
    out
}

impl KindSpec for Spec {
    const KIND: Kind = Kind {
        name: "crash_recovery",
        namespace: "crash-recovery",
        exclusivity: Exclusivity::Exclusive,
        codes: &[],
    };

    fn validate(&self, p: &mut Problems) {
        self.check_fields(p)
    }

    fn default_timeout(&self) -> Dur {
        Dur::from_secs(120)
    }

    fn default_budget(&self) -> u64 {
        1_000_000
    }

    fn run(&self, ctx: &Ctx) -> impl Future<Output = Result<Outcome, CheckError>> + Send {
        run(self, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Status;
    use crate::secret::Secret;
    use crate::target::{ProcessControl, Target};

    fn ctx(pid_file: &std::path::Path, restart: &[&str]) -> Ctx {
        let mut t = Target::remote("http://127.0.0.1:9");
        t.admin_token = Some(Secret("t".into()));
        t.process = Some(ProcessControl::Remote {
            pid_file: pid_file.to_path_buf(),
            restart: restart.iter().map(|s| s.to_string()).collect(),
        });
        let source = "127.0.0.1".parse().unwrap();
        Ctx::standalone(std::sync::Arc::new(t), source, vec![], Duration::from_secs(10), 1000)
    }

    fn spec() -> Spec {
        serde_json::from_value(serde_json::json!({"ready_within": "5s"})).unwrap()
    }

    /// A recovery that did everything right.
    fn recovered() -> Measurements {
        Measurements {
            snapshot: Snapshot::Taken {
                generation: Some(3),
            },
            acked_at_kill: 1000,
            acknowledged: 1050,
            pid_killed: 41,
            ingest_errors: 2,
            first_ingest_error: Some("connection reset".into()),
            ready_after: Some(Duration::from_millis(850)),
            polled_for: Duration::from_millis(860),
            pid_after: Some(42),
            missing: vec![],
            restored: Some(3),
        }
    }

    #[test]
    fn judge_table() {
        let with = |f: &dyn Fn(&mut Measurements)| {
            let mut m = recovered();
            f(&mut m);
            m
        };
        let cases: Vec<(&str, Spec, Measurements, Status)> = vec![
            ("recovered", spec(), recovered(), Status::Pass),
            (
                "ready exactly at the limit",
                spec(),
                with(&|m| m.ready_after = Some(Duration::from_secs(5))),
                Status::Pass,
            ),
            (
                "ready one millisecond over",
                spec(),
                with(&|m| m.ready_after = Some(Duration::from_millis(5001))),
                Status::Fail,
            ),
            (
                "never ready",
                spec(),
                with(&|m| {
                    m.ready_after = None;
                    m.polled_for = Duration::from_secs(15)
                }),
                Status::Fail,
            ),
            (
                "one acknowledged tick lost",
                spec(),
                with(&|m| m.missing = vec!["cr-1-7".into()]),
                Status::Fail,
            ),
            (
                // Snapshots off: the admin API answers 409 to the snapshot request.
                "the snapshot refused with the wrong status",
                spec(),
                with(&|m| {
                    m.snapshot = Snapshot::Refused {
                        status: 409,
                        code: "HB-SNAPSHOT-OFF".into(),
                    };
                    m.restored = None
                }),
                Status::Fail,
            ),
            (
                "the snapshot request failed",
                spec(),
                with(&|m| m.snapshot = Snapshot::Failed("connection refused".into())),
                Status::Fail,
            ),
            (
                "a 200 without a generation",
                spec(),
                with(&|m| m.snapshot = Snapshot::Taken { generation: None }),
                Status::Fail,
            ),
            (
                "an older snapshot restored",
                spec(),
                with(&|m| m.restored = Some(2)),
                Status::Fail,
            ),
            (
                "a newer snapshot restored (one taken at shutdown)",
                spec(),
                with(&|m| m.restored = Some(4)),
                Status::Pass,
            ),
            (
                "nothing restored",
                spec(),
                with(&|m| m.restored = None),
                Status::Fail,
            ),
            (
                "snapshots not required: only readiness and the ticks count",
                serde_json::from_value(
                    serde_json::json!({"ready_within": "5s", "require_snapshot": false}),
                )
                .unwrap(),
                with(&|m| {
                    m.snapshot = Snapshot::Refused {
                        status: 409,
                        code: "HB-SNAPSHOT-OFF".into(),
                    };
                    m.restored = None
                }),
                Status::Pass,
            ),
        ];
        for (name, s, m, want) in &cases {
            let o = judge(s, m);
            assert_eq!(o.status(), *want, "{name}: {:#?}", o.observations);
        }
    }

    #[test]
    fn judge_keeps_the_report_text() {
        let o = judge(&spec(), &recovered());
        assert_eq!(
            o.summary,
            "SIGKILL pid 41 after 1000 acknowledged ticks; ready in 850 ms as pid 42; 0 of 1050 acknowledged ticks missing; snapshot 3 → restored 3"
        );
        assert_eq!(o.evidence["ready_ms"], 850.0);
        let mut m = recovered();
        m.ready_after = None;
        m.polled_for = Duration::from_millis(15_040);
        let o = judge(&spec(), &m);
        assert_eq!(o.summary, "the restarted target never became ready");
        assert_eq!(o.observations[1].observed, "not ready after 15.0 s");
        assert_eq!(o.observations.len(), 2, "nothing judged past readiness");
        assert_eq!(o.evidence["pid_killed"], 41, "what was done is still evidence");
    }

    /// Regression: with a pid file but no restart command, the check killed the service and
    /// only then found it could not restart it (SKIP, with the service left down).
    #[tokio::test]
    async fn without_a_restart_command_nothing_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let mut victim = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid_file = dir.path().join("svc.pid");
        std::fs::write(&pid_file, format!("{}\n", victim.id())).unwrap();
        let e = run(&spec(), &ctx(&pid_file, &[])).await.unwrap_err();
        assert_eq!(e.status(), Status::Skip, "{e}");
        assert!(e.to_string().contains("target.process.restart"), "{e}");
        assert!(crate::target::spawn::is_alive(victim.id()), "killed anyway");
        let _ = victim.kill();
        let _ = victim.wait();
    }

    #[tokio::test]
    async fn a_stale_pid_file_is_an_error_before_any_traffic() {
        let dir = tempfile::tempdir().unwrap();
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let pid = gone.id();
        let _ = gone.wait();
        let pid_file = dir.path().join("svc.pid");
        std::fs::write(&pid_file, format!("{pid}\n")).unwrap();
        let c = ctx(&pid_file, &["true"]);
        let e = run(&spec(), &c).await.unwrap_err();
        assert_eq!(e.status(), Status::Error, "{e}");
        assert!(e.to_string().contains("stale pid file"), "{e}");
        assert_eq!(
            c.budget.used(),
            0,
            "no request before the pid is known good"
        );
    }
}
