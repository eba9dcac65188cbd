//! `store_retention`: the store's growth is bounded. Plants ticks back-dated past the
//! retention age and inside it (through the service's own ingest, ids of its own), and — when
//! preflight can reach the target's SQLite file — log events the same way; triggers a prune
//! (admin API) or waits for the service's own; then requires the expired rows gone and the
//! recent ones kept. Measuring ([`run`]) plants, prunes and looks up; [`judge`] is pure.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::checks::log_retention::Trigger;
use crate::checks::{Code, Exclusivity, Kind, KindSpec, Problems, ticks};
use crate::outcome::{Capability, CheckError, Observation, Outcome};
use crate::probe::http::Rotating;
use crate::target::Ctx;
use crate::units::Dur;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Ticks and log events older than this must be deleted (e.g. `7d`).
    pub max_age: Dur,
    /// Ticks planted at each age (default 20).
    #[serde(default = "default_ticks")]
    pub ticks: u32,
    /// How the prune happens: `admin` (`POST /admin/store/prune` now) or `wait` (up to `wait`
    /// for the service's own).
    #[serde(default)]
    pub trigger: Trigger,
    /// With `trigger: wait`, how long to wait.
    #[serde(default = "default_wait")]
    pub wait: Dur,
}

fn default_ticks() -> u32 {
    20
}
fn default_wait() -> Dur {
    Dur::from_secs(60)
}

const PRUNE: &str = "/admin/store/prune";
/// The market planted ticks go to (kept apart from the service's own data).
const MARKET: &str = "preflight-retention";
/// The code of planted log events.
const PLANTED_CODE: &str = "PREFLIGHT-PLANTED";

impl Spec {
    /// The ages planted, each with whether it must be deleted: one day (or half the age, if
    /// shorter) on each side of the boundary, and far past it.
    fn ages(&self) -> [(Duration, bool); 3] {
        let age = self.max_age.get();
        let step = (age / 2).min(Duration::from_secs(86_400));
        [(age - step, false), (age + step, true), (age * 2 + step, true)]
    }
}

/// Rows planted at one age, and how many of them are still there after the prune.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Planted {
    /// `ticks` or `log_events`.
    pub table: &'static str,
    pub age_seconds: u64,
    pub expired: bool,
    pub planted: usize,
    pub present_after: usize,
}

/// The answer to `POST /admin/store/prune`.
#[derive(Debug, Clone, PartialEq)]
pub struct Prune {
    pub status: u16,
    /// The JSON body (`null` when not JSON).
    pub body: serde_json::Value,
}

/// What the check measured: plain data, judged by [`judge`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Measurements {
    pub planted: Vec<Planted>,
    /// The prune's answer (`trigger: admin`).
    pub prune: Option<Prune>,
    /// Why log events were not planted (no SQLite file reachable), if so.
    pub events_skipped: Option<String>,
}

fn human(d: Duration) -> String {
    Dur(d).to_string()
}

pub async fn run(spec: &Spec, ctx: &Ctx) -> Result<Outcome, CheckError> {
    if spec.trigger == Trigger::Admin {
        ctx.require(Capability::Admin)?;
    }
    let http = ctx.http()?;
    let mut data = Rotating::new(ctx)?;
    let now = chrono::Utc::now().timestamp_millis();
    let run_id = format!("preflight-sr-{now}");
    let mut sent = Vec::new();
    let mut m = Measurements::default();
    let mut planted_ids = Vec::new();
    for (i, (age, expired)) in spec.ages().into_iter().enumerate() {
        let ts = now - age.as_millis() as i64;
        let (ids, body) = ticks::batch(&format!("{run_id}-{i}"), 0, spec.ticks, MARKET, Some(ts));
        let r = data.post(ticks::INGEST, Some(&body)).await?;
        sent.push(format!(
            "POST {} with {} ticks stamped {} ago",
            ticks::INGEST,
            spec.ticks,
            human(age)
        ));
        if r.status != 200 {
            return Err(CheckError::Target(format!(
                "planting ticks: POST {} answered {} {}",
                ticks::INGEST,
                r.status,
                r.text().chars().take(200).collect::<String>()
            )));
        }
        m.planted.push(Planted {
            table: "ticks",
            age_seconds: age.as_secs(),
            expired,
            planted: ids.len(),
            present_after: ids.len(),
        });
        planted_ids.push(ids);
    }
    let events = plant_events(spec, ctx, now, &mut m, &mut sent).await?;
    match spec.trigger {
        Trigger::Admin => {
            sent.push(format!("POST {PRUNE}"));
            let r = http.admin("POST", PRUNE, None).await?;
            m.prune = Some(Prune {
                status: r.status,
                body: r.json().unwrap_or(serde_json::Value::Null),
            });
        }
        Trigger::Wait => {
            let end = tokio::time::Instant::now() + spec.wait.get().min(ctx.remaining()?);
            let expired: Vec<String> = planted_ids
                .iter()
                .zip(&m.planted)
                .filter(|(_, p)| p.expired)
                .flat_map(|(ids, _)| ids.clone())
                .collect();
            while tokio::time::Instant::now() < end
                && ticks::missing(&mut data, &expired).await?.len() < expired.len()
            {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    for (ids, p) in planted_ids.iter().zip(m.planted.iter_mut()) {
        p.present_after = ids.len() - ticks::missing(&mut data, ids).await?.len();
    }
    sent.push(format!("POST {} for the planted ids", ticks::LOOKUP));
    if let Some((db, rows)) = events {
        let counted = tokio::task::spawn_blocking(move || count_events(&db, &rows))
            .await
            .map_err(|e| CheckError::Local(e.to_string()))??;
        for (p, n) in m
            .planted
            .iter_mut()
            .filter(|p| p.table == "log_events")
            .zip(counted)
        {
            p.present_after = n;
        }
    }
    let mut out = judge(spec, &m);
    out.sent = sent;
    Ok(out)
}

/// Plants one back-dated log event per age straight into the target's SQLite file (there is
/// no API that writes them), each with a message of its own to find it by. Returns the file
/// and the messages, or notes why none were planted.
async fn plant_events(
    spec: &Spec,
    ctx: &Ctx,
    now: i64,
    m: &mut Measurements,
    sent: &mut Vec<String>,
) -> Result<Option<(std::path::PathBuf, Vec<String>)>, CheckError> {
    let Some(db) = ctx
        .target
        .sqlite
        .clone()
        .filter(|_| ctx.target.has(Capability::Sqlite))
    else {
        m.events_skipped = Some(format!(
            "log events not planted: {}",
            ctx.target.missing_hint(Capability::Sqlite)
        ));
        return Ok(None);
    };
    let rows: Vec<(i64, String, bool, Duration)> = spec
        .ages()
        .into_iter()
        .enumerate()
        .map(|(i, (age, expired))| {
            (
                now - age.as_millis() as i64,
                format!("planted by preflight store_retention {now}-{i}"),
                expired,
                age,
            )
        })
        .collect();
    let inserts: Vec<(i64, String)> = rows.iter().map(|(t, msg, ..)| (*t, msg.clone())).collect();
    let path = db.clone();
    tokio::task::spawn_blocking(move || -> rusqlite::Result<()> {
        let conn = rusqlite::Connection::open(&path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let mut stmt = conn.prepare(
            "INSERT INTO log_events(ts_ms, level, code, message) VALUES (?1, 'INFO', ?2, ?3)",
        )?;
        for (ts, msg) in &inserts {
            stmt.execute(rusqlite::params![ts, PLANTED_CODE, msg])?;
        }
        Ok(())
    })
    .await
    .map_err(|e| CheckError::Local(e.to_string()))?
    .map_err(|e| CheckError::Local(format!("planting log events in {}: {e}", db.display())))?;
    sent.push(format!(
        "INSERT {} back-dated log events into {}",
        rows.len(),
        db.display()
    ));
    for (_, _, expired, age) in &rows {
        m.planted.push(Planted {
            table: "log_events",
            age_seconds: age.as_secs(),
            expired: *expired,
            planted: 1,
            present_after: 1,
        });
    }
    Ok(Some((db, rows.into_iter().map(|r| r.1).collect())))
}

/// How many of the planted log events are still there; deletes the ones that are (the
/// recent one is ours, not the service's).
fn count_events(db: &std::path::Path, messages: &[String]) -> Result<Vec<usize>, CheckError> {
    let local = |e: rusqlite::Error| CheckError::Local(format!("reading {}: {e}", db.display()));
    let conn = rusqlite::Connection::open(db).map_err(local)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(local)?;
    let mut counts = Vec::new();
    for msg in messages {
        let n: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM log_events WHERE code = ?1 AND message = ?2",
                [PLANTED_CODE, msg],
                |r| r.get(0),
            )
            .map_err(local)?;
        counts.push(n.max(0) as usize);
        conn.execute(
            "DELETE FROM log_events WHERE code = ?1 AND message = ?2",
            [PLANTED_CODE, msg],
        )
        .map_err(local)?;
    }
    Ok(counts)
}

/// Judges what the prune left (pure): expired rows gone, recent ones kept, the prune
/// answered 200.
pub fn judge(spec: &Spec, m: &Measurements) -> Outcome {
    let mut out = Outcome::default();
    if let Some(p) = &m.prune {
        let code = p
            .body
            .pointer("/error/code")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        out.observe(Observation::new(
            format!("POST {PRUNE}"),
            "200",
            format!("{} {code}", p.status).trim_end().to_string(),
            p.status == 200,
        ));
    }
    for p in &m.planted {
        let age = human(Duration::from_secs(p.age_seconds));
        let (expected, ok) = if p.expired {
            ("deleted".to_string(), p.present_after == 0)
        } else {
            (format!("all {} kept", p.planted), p.present_after == p.planted)
        };
        out.observe(Observation::new(
            format!("{} {} {age} old", p.planted, p.table),
            expected,
            format!("{} of {} present", p.present_after, p.planted),
            ok,
        ));
    }
    let failed = out.observations.iter().filter(|o| !o.ok).count();
    out.summary = if failed == 0 {
        format!(
            "rows past {} deleted, recent ones kept{}",
            spec.max_age,
            if m.events_skipped.is_some() {
                " (ticks only: no SQLite file for log events)"
            } else {
                ""
            }
        )
    } else {
        let mut s = format!(
            "{failed} store retention requirement(s) not met (max age {})",
            spec.max_age
        );
        if m.prune.is_none() && m.planted.iter().any(|p| p.expired && p.present_after > 0) {
            s.push_str(&format!("; nothing pruned within {}", spec.wait));
        }
        s
    };
    out.summarize_unmet();
    out.evidence = serde_json::json!({
        "planted": m.planted,
        "prune": m.prune.as_ref().map_or(serde_json::Value::Null, |p| p.body.clone()),
        "log_events": m.events_skipped.as_deref().unwrap_or("planted"),
    });
    out
}

const SHORT_AGE: Code = Code("store-retention/short-age");

impl KindSpec for Spec {
    const KIND: Kind = Kind {
        name: "store_retention",
        namespace: "store-retention",
        exclusivity: Exclusivity::Exclusive,
        codes: &[SHORT_AGE],
    };

    fn validate(&self, p: &mut Problems) {
        if self.max_age.get() < Duration::from_secs(60) {
            p.error(
                "/max_age",
                SHORT_AGE,
                format!("{} is shorter than a minute", self.max_age),
                "use the service's retention age, e.g. `7d`",
            );
        }
        p.positive("/ticks", self.ticks.into(), "ticks");
    }

    fn default_timeout(&self) -> Dur {
        Dur::from_secs(30).max(Dur(self.wait.get() + Duration::from_secs(30)))
    }

    fn default_budget(&self) -> u64 {
        1_000
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
        serde_json::from_value(serde_json::json!({"max_age": "7d"})).unwrap()
    }

    fn planted(table: &'static str, days: u64, expired: bool, n: usize, after: usize) -> Planted {
        Planted {
            table,
            age_seconds: days * 86_400,
            expired,
            planted: n,
            present_after: after,
        }
    }

    /// A prune that did its job (max age 7 days).
    fn pruned() -> Measurements {
        Measurements {
            planted: vec![
                planted("ticks", 6, false, 20, 20),
                planted("ticks", 8, true, 20, 0),
                planted("ticks", 15, true, 20, 0),
                planted("log_events", 6, false, 1, 1),
                planted("log_events", 8, true, 1, 0),
                planted("log_events", 15, true, 1, 0),
            ],
            prune: Some(Prune {
                status: 200,
                body: serde_json::json!({"ticks": 40, "log_events": 2}),
            }),
            events_skipped: None,
        }
    }

    #[test]
    fn ages_straddle_the_boundary() {
        let days = |d: u64| Duration::from_secs(d * 86_400);
        assert_eq!(
            spec().ages(),
            [(days(6), false), (days(8), true), (days(15), true)]
        );
        let short: Spec = serde_json::from_value(serde_json::json!({"max_age": "1h"})).unwrap();
        let m = |s: u64| Duration::from_secs(s * 60);
        assert_eq!(short.ages(), [(m(30), false), (m(90), true), (m(150), true)]);
    }

    #[test]
    fn judge_table() {
        let with = |f: &dyn Fn(&mut Measurements)| {
            let mut m = pruned();
            f(&mut m);
            m
        };
        let cases: Vec<(&str, Measurements, Status)> = vec![
            ("expired gone, recent kept", pruned(), Status::Pass),
            (
                "no retention: everything kept",
                with(&|m| m.planted.iter_mut().for_each(|p| p.present_after = p.planted)),
                Status::Fail,
            ),
            (
                // The boundary: one day past the age must go.
                "one day past the age kept",
                with(&|m| m.planted[1].present_after = 1),
                Status::Fail,
            ),
            (
                "a recent tick deleted (the age is too short)",
                with(&|m| m.planted[0].present_after = 19),
                Status::Fail,
            ),
            (
                "ticks pruned, log events not",
                with(&|m| m.planted[5].present_after = 1),
                Status::Fail,
            ),
            (
                "the prune refused (retention disabled)",
                with(&|m| {
                    m.prune = Some(Prune {
                        status: 409,
                        body: serde_json::json!({"error": {"code": "retention-disabled"}}),
                    })
                }),
                Status::Fail,
            ),
            (
                "waited for the service's own prune",
                with(&|m| m.prune = None),
                Status::Pass,
            ),
            (
                "no SQLite file: ticks alone",
                with(&|m| {
                    m.planted.retain(|p| p.table == "ticks");
                    m.events_skipped = Some("no sqlite".into());
                }),
                Status::Pass,
            ),
        ];
        for (name, m, want) in &cases {
            let o = judge(&spec(), m);
            assert_eq!(o.status(), *want, "{name}: {:#?}", o.observations);
        }
    }

    #[test]
    fn judge_keeps_the_report_text() {
        let o = judge(&spec(), &pruned());
        assert_eq!(o.summary, "rows past 7d deleted, recent ones kept");
        assert_eq!(o.observations[2].what, "20 ticks 8d old");
        let mut m = pruned();
        m.prune = Some(Prune {
            status: 409,
            body: serde_json::json!({"error": {"code": "retention-disabled"}}),
        });
        m.planted[1].present_after = 20;
        let o = judge(&spec(), &m);
        assert_eq!(
            o.summary,
            "2 store retention requirement(s) not met (max age 7d); not met: POST /admin/store/prune: 409 retention-disabled (expected 200); 20 ticks 8d old: 20 of 20 present (expected deleted)"
        );
    }
}
