//! `store_full`: out of space, the service refuses writes clearly and honestly. Caps the
//! store at its current size (the admin API's `store_full` fault: the next write that needs a
//! page fails exactly as on a full disk), writes until refused, then requires the refusal to
//! be `507` with its stable code, `/readyz` not ready and `/status` naming the store
//! read-only, reads still answering, nothing of the refused write stored; lifts the fault and
//! requires the service writable again by itself within `recover_within`, with every
//! acknowledged write present. Measuring ([`run`]) does that; [`judge`] is pure.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::checks::{Exclusivity, Kind, KindSpec, Problems, ticks};
use crate::outcome::{Capability, CheckError, Observation, Outcome};
use crate::probe::http::Rotating;
use crate::target::Ctx;
use crate::units::Dur;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Ticks per write while filling (default 200).
    #[serde(default = "default_batch")]
    pub batch: u32,
    /// Writes sent at most to reach the cap (default 100).
    #[serde(default = "default_max_writes")]
    pub max_writes: u32,
    /// The refusal's status (default 507 Insufficient Storage).
    #[serde(default = "default_status")]
    pub status: u16,
    /// The refusal's `/error/code` (default `store-full`).
    #[serde(default = "default_code")]
    pub code: String,
    /// Once space returns, `/readyz` must answer 200 within this (default 10s).
    #[serde(default = "default_recover")]
    pub recover_within: Dur,
}

fn default_batch() -> u32 {
    200
}
fn default_max_writes() -> u32 {
    100
}
fn default_status() -> u16 {
    507
}
fn default_code() -> String {
    "store-full".into()
}
fn default_recover() -> Dur {
    Dur::from_secs(10)
}

const FAULTS: &str = "/admin/faults";
const MARKET: &str = "preflight-store-full";

/// One answer: status and `/error/code` (`?` when none).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub code: String,
}

/// What the check measured: plain data, judged by [`judge`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Measurements {
    /// Writes acknowledged (200) before the refusal: two before the fault, then any the
    /// cap still had room for.
    pub acked_writes: u32,
    /// The first write not acknowledged; `None`: all `max_writes` were.
    pub refusal: Option<Answer>,
    /// `/readyz` while full, and its `/store/state`.
    pub ready_while_full: Option<(u16, Option<String>)>,
    /// `/status` `/store/state` while full.
    pub status_state: Option<String>,
    /// A read (`GET /v1/correlations`) while full.
    pub read_while_full: Option<u16>,
    /// Ticks of the refused write that the service has anyway.
    pub refused_stored: usize,
    /// From lifting the fault to the first 200 of `/readyz`; `None`: not within the limit.
    pub recovered_after: Option<Duration>,
    /// A write after recovery.
    pub write_after: Option<Answer>,
    /// Acknowledged ticks missing at the end (looked up after recovery).
    pub acked_ticks: usize,
    pub missing: Vec<String>,
}

fn answer(r: &crate::probe::http::Response) -> Answer {
    Answer {
        status: r.status,
        code: ticks::error_code(&r.body),
    }
}

pub async fn run(spec: &Spec, ctx: &Ctx) -> Result<Outcome, CheckError> {
    ctx.require(Capability::Admin)?;
    let http = ctx.http()?;
    // Data requests through every address the check has: a per-address limiter must not be
    // read as the store's answer.
    let mut data = Rotating::new(ctx)?;
    let ready = data.get("/readyz").await?;
    if ready.status != 200 {
        return Err(CheckError::Target(format!(
            "not ready before the check (GET /readyz answered {}): the store may already be full",
            ready.status
        )));
    }
    let mut sent = vec!["GET /readyz".to_string()];
    let mut m = Measurements::default();
    let mut acked = Vec::new();
    // Writes acknowledged before the fault: none of them may be lost by what follows.
    let before = format!("{}-before", prefix());
    for w in 0..2 {
        let (ids, body) = ticks::batch(&before, w * spec.batch, spec.batch, MARKET, None);
        let r = data.post(ticks::INGEST, Some(&body)).await?;
        if r.status != 200 {
            return Err(CheckError::Target(format!(
                "a write before the fault answered {} {}: the store may already be full",
                r.status,
                ticks::error_code(&r.body)
            )));
        }
        m.acked_writes += 1;
        acked.extend(ids);
    }
    sent.push(format!("POST {} × 2 before the fault", ticks::INGEST));
    let r = http
        .admin("POST", FAULTS, Some(&serde_json::json!({"store_full": true})))
        .await?;
    sent.push(format!("POST {FAULTS} {{\"store_full\": true}}"));
    if r.status != 200 || r.json().ok().and_then(|v| v.get("store_full").cloned()) != Some(true.into())
    {
        return Err(CheckError::Target(format!(
            "the admin API did not take the `store_full` fault: {} {}",
            r.status,
            r.text().chars().take(200).collect::<String>()
        )));
    }
    // Whatever happens while full, the fault is lifted before returning.
    let full = while_full(spec, &mut data, &mut m, &mut acked, &mut sent).await;
    let lifted = http.admin("DELETE", FAULTS, None).await;
    sent.push(format!("DELETE {FAULTS}"));
    let lifted_at = Instant::now();
    full?;
    let lifted = lifted?;
    if lifted.status != 200 {
        return Err(CheckError::Target(format!(
            "lifting the fault: DELETE {FAULTS} answered {}",
            lifted.status
        )));
    }
    let end = lifted_at + spec.recover_within.get().min(ctx.remaining()?);
    loop {
        if data.get("/readyz").await?.status == 200 {
            m.recovered_after = Some(lifted_at.elapsed());
            break;
        }
        if Instant::now() >= end {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sent.push("GET /readyz until 200".into());
    if m.recovered_after.is_some() {
        let (ids, body) = ticks::batch(&format!("{}-after", prefix()), 0, spec.batch, MARKET, None);
        let r = data.post(ticks::INGEST, Some(&body)).await?;
        sent.push(format!("POST {} after recovery", ticks::INGEST));
        if r.status == 200 {
            acked.extend(ids);
        }
        m.write_after = Some(answer(&r));
    }
    m.acked_ticks = acked.len();
    m.missing = ticks::missing(&mut data, &acked).await?;
    sent.push(format!("POST {} with {} acknowledged ids", ticks::LOOKUP, acked.len()));
    let mut out = judge(spec, &m);
    out.sent = sent;
    Ok(out)
}

/// Ids of this run's ticks (short: the service takes ids of up to 64 characters).
fn prefix() -> String {
    format!("preflight-sf-{}", chrono::Utc::now().timestamp_millis())
}

/// Writes until refused, then reads what the service says about itself while full.
async fn while_full(
    spec: &Spec,
    http: &mut Rotating,
    m: &mut Measurements,
    acked: &mut Vec<String>,
    sent: &mut Vec<String>,
) -> Result<(), CheckError> {
    let prefix = prefix();
    let mut refused = Vec::new();
    for w in 0..spec.max_writes {
        let (ids, body) = ticks::batch(&prefix, w * spec.batch, spec.batch, MARKET, None);
        let r = http.post(ticks::INGEST, Some(&body)).await?;
        if r.status == 200 {
            m.acked_writes += 1;
            acked.extend(ids);
        } else {
            m.refusal = Some(answer(&r));
            refused = ids;
            break;
        }
    }
    sent.push(format!(
        "POST {} × {} ({} ticks each) until refused",
        ticks::INGEST,
        m.acked_writes - 2 + u32::from(m.refusal.is_some()),
        spec.batch
    ));
    if m.refusal.is_none() {
        return Ok(());
    }
    let r = http.get("/readyz").await?;
    let state = r
        .json()
        .ok()
        .and_then(|v| v.pointer("/store/state")?.as_str().map(str::to_string));
    m.ready_while_full = Some((r.status, state));
    let r = http.get("/status").await?;
    m.status_state = r
        .json()
        .ok()
        .and_then(|v| v.pointer("/store/state")?.as_str().map(str::to_string));
    m.read_while_full = Some(http.get("/v1/correlations?market=m1&window=1h").await?.status);
    m.refused_stored = refused.len() - ticks::missing(http, &refused).await?.len();
    sent.push("GET /readyz, GET /status, GET /v1/correlations, lookup of the refused ids".into());
    Ok(())
}

/// Judges the service out of space (pure).
pub fn judge(spec: &Spec, m: &Measurements) -> Outcome {
    let mut out = Outcome::default();
    let Some(refusal) = &m.refusal else {
        out.undecided(format!(
            "all {} writes of {} ticks were acknowledged under the cap: the store never \
             filled (raise max_writes)",
            m.acked_writes, spec.batch
        ));
        out.evidence = evidence(m);
        return out;
    };
    out.observe(Observation::new(
        "a write past the cap",
        format!("{} {}", spec.status, spec.code),
        format!("{} {}", refusal.status, refusal.code),
        refusal.status == spec.status && refusal.code == spec.code,
    ));
    out.observe(Observation::new(
        "ticks of the refused write stored",
        "0",
        m.refused_stored.to_string(),
        m.refused_stored == 0,
    ));
    let (ready_status, ready_state) = m.ready_while_full.clone().unwrap_or((0, None));
    out.observe(Observation::new(
        "/readyz while full",
        "503, store read_only",
        format!(
            "{ready_status}, store {}",
            ready_state.as_deref().unwrap_or("not reported")
        ),
        ready_status == 503 && ready_state.as_deref() == Some("read_only"),
    ));
    out.observe(Observation::new(
        "/status store while full",
        "read_only",
        m.status_state.as_deref().unwrap_or("not reported"),
        m.status_state.as_deref() == Some("read_only"),
    ));
    let read = m.read_while_full.unwrap_or(0);
    out.observe(Observation::new(
        "a read while full",
        "200",
        read.to_string(),
        read == 200,
    ));
    out.observe(Observation::new(
        "ready again after space returned",
        format!("within {}", spec.recover_within),
        m.recovered_after
            .map_or(format!("not within {}", spec.recover_within), |d| {
                format!("after {:.0} ms", d.as_secs_f64() * 1e3)
            }),
        m.recovered_after.is_some(),
    ));
    if let Some(w) = &m.write_after {
        out.observe(Observation::new(
            "a write once ready again",
            "200",
            format!("{} {}", w.status, w.code),
            w.status == 200,
        ));
    }
    out.observe(Observation::new(
        "acknowledged ticks present",
        format!("all {}", m.acked_ticks),
        format!("{} missing", m.missing.len()),
        m.missing.is_empty(),
    ));
    let failed = out.observations.iter().filter(|o| !o.ok).count();
    out.summary = if failed == 0 {
        format!(
            "{} writes acknowledged, then {} {}, not ready, reads served, writable again {}, \
             nothing acknowledged lost",
            m.acked_writes,
            refusal.status,
            refusal.code,
            m.recovered_after
                .map(|d| format!("after {:.0} ms", d.as_secs_f64() * 1e3))
                .unwrap_or_default()
        )
    } else {
        format!("{failed} out-of-space requirement(s) not met")
    };
    out.summarize_unmet();
    out.evidence = evidence(m);
    out
}

fn evidence(m: &Measurements) -> serde_json::Value {
    serde_json::json!({
        "acked_writes": m.acked_writes,
        "refusal": m.refusal.as_ref().map(|a| serde_json::json!({"status": a.status, "code": a.code})),
        "readyz_while_full": m.ready_while_full.as_ref().map(|(s, st)| serde_json::json!({"status": s, "store": st})),
        "status_store_state": m.status_state,
        "read_while_full": m.read_while_full,
        "refused_stored": m.refused_stored,
        "recovered_after_ms": m.recovered_after.map(|d| d.as_millis() as u64),
        "acked_ticks": m.acked_ticks,
        "missing": m.missing.iter().take(20).collect::<Vec<_>>(),
    })
}

impl KindSpec for Spec {
    const KIND: Kind = Kind {
        name: "store_full",
        namespace: "store-full",
        exclusivity: Exclusivity::Exclusive,
        codes: &[],
    };

    fn validate(&self, p: &mut Problems) {
        p.positive("/batch", self.batch.into(), "batch");
        p.positive("/max_writes", self.max_writes.into(), "max_writes");
    }

    fn default_timeout(&self) -> Dur {
        Dur(Duration::from_secs(60) + self.recover_within.get())
    }

    fn default_budget(&self) -> u64 {
        u64::from(self.max_writes) + 1_000
    }

    fn run(&self, ctx: &Ctx) -> impl Future<Output = Result<Outcome, CheckError>> + Send {
        run(self, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Status;

    fn spec() -> Spec {
        serde_json::from_value(serde_json::json!({})).unwrap()
    }

    fn a(status: u16, code: &str) -> Answer {
        Answer {
            status,
            code: code.into(),
        }
    }

    /// A service that handles a full store as it should.
    fn honest() -> Measurements {
        Measurements {
            acked_writes: 3,
            refusal: Some(a(507, "store-full")),
            ready_while_full: Some((503, Some("read_only".into()))),
            status_state: Some("read_only".into()),
            read_while_full: Some(200),
            refused_stored: 0,
            recovered_after: Some(Duration::from_millis(900)),
            write_after: Some(a(200, "?")),
            acked_ticks: 800,
            missing: vec![],
        }
    }

    #[test]
    fn judge_table() {
        let with = |f: &dyn Fn(&mut Measurements)| {
            let mut m = honest();
            f(&mut m);
            m
        };
        let cases: Vec<(&str, Measurements, Status)> = vec![
            ("507, not ready, reads, recovers", honest(), Status::Pass),
            (
                "the defect: 500 and still ready",
                with(&|m| {
                    m.refusal = Some(a(500, "internal"));
                    m.ready_while_full = Some((200, None));
                    m.status_state = Some("read_write".into());
                }),
                Status::Fail,
            ),
            (
                "507 with another code",
                with(&|m| m.refusal = Some(a(507, "internal"))),
                Status::Fail,
            ),
            (
                "not ready, but the state not named",
                with(&|m| m.ready_while_full = Some((503, None))),
                Status::Fail,
            ),
            (
                "reads refused too",
                with(&|m| m.read_while_full = Some(503)),
                Status::Fail,
            ),
            (
                "part of a refused write stored",
                with(&|m| m.refused_stored = 12),
                Status::Fail,
            ),
            (
                "never writable again",
                with(&|m| {
                    m.recovered_after = None;
                    m.write_after = None;
                }),
                Status::Fail,
            ),
            (
                "ready again but writes still refused",
                with(&|m| m.write_after = Some(a(507, "store-full"))),
                Status::Fail,
            ),
            (
                "an acknowledged tick lost",
                with(&|m| m.missing = vec!["preflight-sf-1".into()]),
                Status::Fail,
            ),
            (
                "the cap never reached: undecided, never a pass",
                with(&|m| {
                    *m = Measurements {
                        acked_writes: 100,
                        ..Measurements::default()
                    }
                }),
                Status::Inconclusive,
            ),
        ];
        for (name, m, want) in &cases {
            let o = judge(&spec(), m);
            assert_eq!(o.status(), *want, "{name}: {:#?}", o.observations);
        }
    }

    #[test]
    fn judge_keeps_the_report_text() {
        let o = judge(&spec(), &honest());
        assert_eq!(
            o.summary,
            "3 writes acknowledged, then 507 store-full, not ready, reads served, writable again after 900 ms, nothing acknowledged lost"
        );
        let mut m = honest();
        m.refusal = Some(a(500, "internal"));
        m.ready_while_full = Some((200, None));
        let o = judge(&spec(), &m);
        assert_eq!(
            o.summary,
            "2 out-of-space requirement(s) not met; not met: a write past the cap: 500 internal (expected 507 store-full); /readyz while full: 200, store not reported (expected 503, store read_only)"
        );
    }
}
