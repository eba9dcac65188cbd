//! `crash_recovery`: ingests ticks while recording every acknowledgement, takes a snapshot,
//! sends SIGKILL mid-ingest, restarts the target and times its readiness, then requires every
//! acknowledged tick and the last snapshot to be present.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::checks::{Exclusivity, Kind, KindSpec, Problems};
use crate::outcome::{Capability, CheckError, Observation, Outcome};
use crate::probe::http::Http;
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

fn tick(id: &str, seq: u32) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "venue": format!("v{}", 1 + seq % 3),
        "market": "m1",
        "selection": format!("s{}", 1 + (seq / 3) % 3),
        "price": 1.5 + f64::from(seq % 97) / 40.0,
    })
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
) -> (u64, Option<String>) {
    let mut seq = 0u32;
    let mut c = 0usize;
    let mut errors = 0u64;
    let mut first_error = None;
    while !*stop.borrow() && seq < total * 4 {
        let ids: Vec<String> = (seq..seq + batch)
            .map(|i| format!("{prefix}-{i}"))
            .collect();
        let ticks: Vec<serde_json::Value> =
            ids.iter().zip(seq..).map(|(id, i)| tick(id, i)).collect();
        let body = serde_json::Value::Array(ticks);
        match clients[c % clients.len()]
            .post("/v1/ticks", Some(&body))
            .await
        {
            Ok(r) if r.status == 200 => {
                acked.lock().unwrap_or_else(|p| p.into_inner()).extend(ids);
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
    (errors, first_error)
}

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
    let mut out = Outcome::default();
    let http = ctx.http()?;
    let clients = std::iter::once(ctx.source)
        .chain(ctx.extra_sources.iter().copied())
        .map(|a| ctx.http_from(a))
        .collect::<Result<Vec<_>, _>>()?;
    let prefix = format!("cr-{:08x}", rand::random::<u32>());
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let acked_count = || acked.lock().unwrap_or_else(|p| p.into_inner()).len();
    out.sent.push(format!(
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
    let wait_acked = |n: usize| {
        let acked = acked.clone();
        async move {
            while acked.lock().unwrap_or_else(|p| p.into_inner()).len() < n
                && Instant::now() < ingest_deadline
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    // A snapshot early in the ingest.
    wait_acked((spec.ticks / 4).max(spec.batch) as usize).await;
    out.sent.push("POST /admin/snapshot".into());
    let snap = http.admin("POST", "/admin/snapshot", None).await;
    let generation = match &snap {
        Ok(r) if r.status == 200 => r.json()?.get("generation").and_then(|g| g.as_u64()),
        _ => None,
    };
    if spec.require_snapshot {
        let (observed, ok) = match &snap {
            Ok(r) if r.status == 200 => {
                (format!("generation {generation:?}"), generation.is_some())
            }
            Ok(r) => {
                let code = r
                    .json()
                    .ok()
                    .and_then(|v| {
                        v.pointer("/error/code")
                            .and_then(|c| c.as_str())
                            .map(str::to_string)
                    })
                    .unwrap_or_default();
                (format!("{} {code}", r.status), false)
            }
            Err(e) => (e.to_string(), false),
        };
        out.observe(Observation::new(
            "snapshot before the kill",
            "200 with a generation",
            observed,
            ok,
        ));
    }
    // SIGKILL mid-ingest.
    wait_acked(spec.ticks as usize / 2).await;
    let acked_at_kill = acked_count();
    let pid_killed = ctx.target.pid()?;
    out.sent.push(format!("SIGKILL pid {pid_killed}"));
    let kill = ctx.target.kill_hard().await;
    let _ = stop_tx.send(true);
    let (errors, first_error) = writer
        .await
        .map_err(|e| CheckError::Local(format!("ingest task: {e}")))?;
    kill?;
    let acked_ids = acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if acked_ids.is_empty() {
        return Err(CheckError::Target(format!(
            "no tick was acknowledged before the kill: {}",
            first_error.unwrap_or_default()
        )));
    }
    // Restart and time readiness.
    let killed_at = Instant::now();
    out.sent.push("restart".into());
    ctx.target.restart().await?;
    let limit = spec.ready_within.0;
    let poll_until = killed_at
        + (limit * 3)
            .max(Duration::from_secs(10))
            .min(ctx.remaining()?);
    let probe = ctx.http()?;
    let mut ready_after = None;
    while Instant::now() < poll_until {
        if let Ok(r) = probe.get("/readyz").await {
            if r.status == 200 {
                ready_after = Some(killed_at.elapsed());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    out.sent.push("GET /readyz until 200".into());
    out.observe(Observation::new(
        "ready after restart",
        format!("≤ {}", spec.ready_within),
        ready_after.map_or_else(
            || format!("not ready after {:.1} s", killed_at.elapsed().as_secs_f64()),
            |d| format!("{:.0} ms", d.as_secs_f64() * 1e3),
        ),
        ready_after.is_some_and(|d| d <= limit),
    ));
    if ready_after.is_none() {
        out.summary = "the restarted target never became ready".into();
        return Ok(out);
    }
    // Which process answers now. A remote service may write its pid file a moment after it
    // is ready; wait briefly for a pid other than the killed one.
    let pid_end = Instant::now() + Duration::from_secs(2).min(ctx.remaining()?);
    let pid_after = loop {
        match ctx.target.pid() {
            Ok(p) if p != pid_killed => break Some(p),
            _ if Instant::now() >= pid_end => break None,
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    // Every acknowledged tick is there.
    let mut missing = Vec::new();
    for chunk in acked_ids.chunks(500) {
        let body = serde_json::json!({"ids": chunk});
        let r = probe.post("/v1/ticks/lookup", Some(&body)).await?;
        if r.status != 200 {
            return Err(CheckError::Target(format!(
                "POST /v1/ticks/lookup answered {}: {}",
                r.status,
                r.text()
            )));
        }
        if let Some(m) = r.json()?.get("missing").and_then(|m| m.as_array()) {
            missing.extend(m.iter().filter_map(|v| v.as_str().map(str::to_string)));
        }
    }
    out.sent.push(format!(
        "POST /v1/ticks/lookup with {} ids",
        acked_ids.len()
    ));
    out.observe(Observation::new(
        "acknowledged ticks after SIGKILL",
        format!("all {} present", acked_ids.len()),
        format!(
            "{} missing{}",
            missing.len(),
            if missing.is_empty() {
                String::new()
            } else {
                format!(", e.g. {:?}", &missing[..missing.len().min(3)])
            }
        ),
        missing.is_empty(),
    ));
    let mut restored = None;
    if spec.require_snapshot {
        let r = probe.get("/status").await?;
        out.sent.push("GET /status".into());
        restored = r.json().ok().and_then(|v| {
            v.pointer("/snapshot/restored_generation")
                .and_then(|g| g.as_u64())
        });
        out.observe(Observation::new(
            "snapshot restored at start",
            match generation {
                Some(g) => format!("restored_generation ≥ {g}"),
                None => "a snapshot taken before the kill".into(),
            },
            restored.map_or("none".into(), |g| format!("restored_generation {g}")),
            matches!((generation, restored), (Some(g), Some(r)) if r >= g),
        ));
    }
    out.summary = format!(
        "SIGKILL pid {pid_killed} after {acked_at_kill} acknowledged ticks; ready in {} as pid {}; {} of {} acknowledged ticks missing; snapshot {} → restored {}",
        ready_after.map_or("-".into(), |d| format!("{:.0} ms", d.as_secs_f64() * 1e3)),
        pid_after.map_or("?".into(), |p| p.to_string()),
        missing.len(),
        acked_ids.len(),
        generation.map_or("none".into(), |g| g.to_string()),
        restored.map_or("none".into(), |g| g.to_string()),
    );
    out.evidence = serde_json::json!({
        "acknowledged": acked_ids.len(),
        "acknowledged_at_kill": acked_at_kill,
        "pid_killed": pid_killed,
        "pid_after_restart": pid_after,
        "ingest_errors": errors,
        "first_ingest_error": first_error,
        "ready_ms": ready_after.map(|d| d.as_secs_f64() * 1e3),
        "missing": missing,
        "snapshot_generation": generation,
        "restored_generation": restored,
    });
    Ok(out)
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
    use crate::target::Budget;
    use crate::target::{ProcessControl, Target};

    fn ctx(pid_file: &std::path::Path, restart: &[&str]) -> Ctx {
        let mut t = Target::remote("http://127.0.0.1:9");
        t.admin_token = Some(Secret("t".into()));
        t.process = Some(ProcessControl::Remote {
            pid_file: pid_file.to_path_buf(),
            restart: restart.iter().map(|s| s.to_string()).collect(),
        });
        Ctx {
            target: std::sync::Arc::new(t),
            source: "127.0.0.1".parse().unwrap(),
            extra_sources: vec![],
            deadline: Instant::now() + Duration::from_secs(10),
            budget: Budget::new(1000),
            policy_dir: ".".into(),
            progress: std::sync::Arc::new(|_| {}),
        }
    }

    fn spec() -> Spec {
        serde_json::from_value(serde_json::json!({"ready_within": "5s"})).unwrap()
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
