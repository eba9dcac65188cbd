//! `log_retention`: plants back-dated files that match the rotation pattern plus one that
//! does not, triggers a sweep (admin API) or waits for one, then requires expired files
//! gone, recent ones kept, the foreign file untouched, and daily-rotated naming in use.
//! Measuring ([`run`]) plants, sweeps and lists; [`judge`] is pure.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::checks::{Code, Exclusivity, Kind, KindSpec, Problems};
use crate::outcome::{Capability, CheckError, Observation, Outcome};
use crate::target::Ctx;
use crate::units::Dur;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Files older than this must be deleted (e.g. `7d`).
    pub max_age: Dur,
    /// Name of a rotated file as a chrono format (default `core.log.%Y-%m-%d`).
    #[serde(default = "default_format")]
    pub file_format: String,
    /// How the sweep happens: `admin` (trigger it now) or `wait` (wait up to `wait`).
    #[serde(default)]
    pub trigger: Trigger,
    /// With `trigger: wait`, how long to wait for the service's own sweep.
    #[serde(default = "default_wait")]
    pub wait: Dur,
}

/// How a retention sweep is caused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    #[default]
    Admin,
    Wait,
}

fn default_format() -> String {
    "core.log.%Y-%m-%d".into()
}
fn default_wait() -> Dur {
    Dur::from_secs(60)
}

impl Spec {
    fn check_fields(&self, p: &mut Problems) {
        if self.max_age.0 < std::time::Duration::from_secs(86_400) {
            p.error(
                "/max_age",
                UNDER_A_DAY,
                format!("{} is shorter than the daily rotation", self.max_age),
                "use whole days, e.g. `7d`",
            );
        }
        let has_date = ["%Y", "%m", "%d"]
            .iter()
            .all(|f| self.file_format.contains(f));
        if !has_date || self.file_format.contains('/') {
            p.error(
                "/file_format",
                BAD_FORMAT,
                format!("`{}` is not a daily file name format", self.file_format),
                "include %Y, %m and %d and no directory, e.g. `core.log.%Y-%m-%d`",
            );
        }
    }
}

/// A file the check put in the log directory.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Planted {
    pub name: String,
    pub age_days: i64,
    /// Must be deleted by the sweep.
    pub expired: bool,
    /// Matches the rotation pattern.
    pub rotated: bool,
    /// Still there after the sweep.
    #[serde(skip)]
    pub present_after: bool,
    #[serde(skip)]
    pub path: PathBuf,
}

/// The answer to `POST /admin/retention/sweep`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    pub status: u16,
    /// The JSON body (`null` when not JSON).
    pub body: serde_json::Value,
}

/// What the check measured: plain data, judged by [`judge`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Measurements {
    /// The log directory.
    pub dir: String,
    /// The files planted, and whether each survived the sweep.
    pub planted: Vec<Planted>,
    /// The sweep's answer (`trigger: admin`).
    pub sweep: Option<Sweep>,
    /// Names in the log directory after the sweep.
    pub files_after: Vec<String>,
    /// Today's rotated file name in UTC and in local time (they differ around midnight).
    pub today: [String; 2],
}

const DAY: Duration = Duration::from_secs(86_400);

fn plant(dir: &Path, name: &str, age_days: i64) -> Result<PathBuf, CheckError> {
    let path = dir.join(name);
    let mtime = SystemTime::now() - DAY * age_days.max(0) as u32;
    let f = std::fs::File::create(&path)
        .map_err(|e| CheckError::Local(format!("planting {}: {e}", path.display())))?;
    use std::io::Write;
    let mut w = std::io::BufWriter::new(&f);
    let _ = writeln!(
        w,
        "{{\"level\":\"INFO\",\"message\":\"planted by preflight log_retention\"}}"
    );
    drop(w);
    f.set_modified(mtime)
        .map_err(|e| CheckError::Local(format!("back-dating {}: {e}", path.display())))?;
    Ok(path)
}

pub async fn run(spec: &Spec, ctx: &Ctx) -> Result<Outcome, CheckError> {
    ctx.require(Capability::LogDir)?;
    if spec.trigger == Trigger::Admin {
        ctx.require(Capability::Admin)?;
    }
    let dir = ctx
        .target
        .log_dir
        .clone()
        .ok_or_else(|| CheckError::Local("no log directory".into()))?;
    if !dir.is_dir() {
        return Err(CheckError::Target(format!(
            "the log directory {} does not exist",
            dir.display()
        )));
    }
    let mut sent = Vec::new();
    let mut m = Measurements {
        dir: dir.display().to_string(),
        ..Measurements::default()
    };
    let planting = plant_all(spec, &dir, &mut m.planted);
    sent.push(format!(
        "planted {} in {}",
        m.planted
            .iter()
            .map(|p| format!("{} ({}d)", p.name, p.age_days))
            .collect::<Vec<_>>()
            .join(", "),
        dir.display()
    ));
    let result = match planting {
        Ok(()) => sweep(spec, ctx, &dir, &mut m, &mut sent).await,
        Err(e) => Err(e),
    };
    // Clean up whatever of ours is left (recent files, the foreign file, unswept ones).
    for p in &m.planted {
        let _ = std::fs::remove_file(&p.path);
    }
    result?;
    let mut out = judge(spec, &m);
    out.sent = sent;
    Ok(out)
}

/// Plants back-dated rotated files (two expired, two recent) and one foreign file, never
/// over a file that is already there.
fn plant_all(spec: &Spec, dir: &Path, planted: &mut Vec<Planted>) -> Result<(), CheckError> {
    let max_days = (spec.max_age.0.as_secs() / 86_400) as i64;
    let today = chrono::Utc::now().date_naive();
    for (age, expired) in [
        (max_days + 2, true),
        (max_days + 30, true),
        (1, false),
        (max_days - 1, false),
    ] {
        let date = today - chrono::Days::new(age as u64);
        let name = date.format(&spec.file_format).to_string();
        if planted.iter().any(|p: &Planted| p.name == name) {
            continue;
        }
        if dir.join(&name).exists() {
            // A real log of that day: never overwrite it, and judge it as it is.
            continue;
        }
        let path = plant(dir, &name, age)?;
        planted.push(Planted {
            name,
            age_days: age,
            expired,
            rotated: true,
            present_after: true,
            path,
        });
    }
    let foreign = "notes.txt".to_string();
    if !dir.join(&foreign).exists() {
        let path = plant(dir, &foreign, max_days + 30)?;
        planted.push(Planted {
            name: foreign,
            age_days: max_days + 30,
            expired: false,
            rotated: false,
            present_after: true,
            path,
        });
    }
    Ok(())
}

/// Causes (or waits for) a sweep, then records what is left.
async fn sweep(
    spec: &Spec,
    ctx: &Ctx,
    dir: &Path,
    m: &mut Measurements,
    sent: &mut Vec<String>,
) -> Result<(), CheckError> {
    match spec.trigger {
        Trigger::Admin => {
            let http = ctx.http()?;
            sent.push("POST /admin/retention/sweep".into());
            let r = http.admin("POST", "/admin/retention/sweep", None).await?;
            m.sweep = Some(Sweep {
                status: r.status,
                body: r.json().unwrap_or(serde_json::Value::Null),
            });
        }
        Trigger::Wait => {
            let end = tokio::time::Instant::now() + spec.wait.0.min(ctx.remaining()?);
            while tokio::time::Instant::now() < end
                && m.planted.iter().any(|p| p.expired && p.path.exists())
            {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    for p in &mut m.planted {
        p.present_after = p.path.exists();
    }
    m.files_after = std::fs::read_dir(dir)
        .map_err(|e| CheckError::Local(format!("listing {}: {e}", dir.display())))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    m.today = [
        chrono::Utc::now().date_naive(),
        chrono::Local::now().date_naive(),
    ]
    .map(|d| d.format(&spec.file_format).to_string());
    Ok(())
}

/// Judges what the sweep left (pure): expired rotated files deleted, recent ones and the
/// foreign file kept, today's file present under the daily name.
pub fn judge(spec: &Spec, m: &Measurements) -> Outcome {
    let mut out = Outcome::default();
    if let Some(s) = m.sweep.as_ref().filter(|s| s.status != 200) {
        let code = s
            .body
            .pointer("/error/code")
            .and_then(|v| v.as_str())
            .unwrap_or("?");
        out.observe(Observation::new(
            "retention sweep",
            "200 with the files deleted",
            format!("{} {code}", s.status),
            false,
        ));
    }
    let mut gone = Vec::new();
    let mut kept = Vec::new();
    for p in &m.planted {
        out.observe(Observation::new(
            format!(
                "{} ({} days old{})",
                p.name,
                p.age_days,
                if p.rotated { "" } else { ", not a rotated log" }
            ),
            if p.expired { "deleted" } else { "kept" },
            if p.present_after { "present" } else { "deleted" },
            p.present_after != p.expired,
        ));
        if p.present_after {
            kept.push(p.name.clone())
        } else {
            gone.push(p.name.clone())
        }
    }
    // Daily naming in use: today's file (UTC, or local time around midnight).
    let [today_utc, today_local] = &m.today;
    let present = m
        .files_after
        .iter()
        .any(|n| n == today_utc || n == today_local);
    out.observe(Observation::new(
        "today's log file, daily naming",
        today_utc.clone(),
        if present {
            "present".to_string()
        } else {
            format!("absent; the directory holds {:?}", m.files_after)
        },
        present,
    ));
    let failed = out.observations.iter().filter(|o| !o.ok).count();
    out.summary = if failed == 0 {
        format!(
            "expired files deleted, recent and foreign files kept, {today_utc} present (max age {})",
            spec.max_age
        )
    } else {
        format!(
            "{failed} retention requirement(s) not met (max age {})",
            spec.max_age
        )
    };
    out.evidence = serde_json::json!({
        "dir": m.dir,
        "planted": m.planted,
        "deleted": gone,
        "kept": kept,
        "sweep": m.sweep.as_ref().map_or(serde_json::Value::Null, |s| s.body.clone()),
        "files_after": m.files_after,
    });
    out
}

const BAD_FORMAT: Code = Code("log-retention/bad-format");
const UNDER_A_DAY: Code = Code("log-retention/under-a-day");

impl KindSpec for Spec {
    const KIND: Kind = Kind {
        name: "log_retention",
        namespace: "log-retention",
        exclusivity: Exclusivity::Exclusive,
        codes: &[BAD_FORMAT, UNDER_A_DAY],
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

    fn spec() -> Spec {
        serde_json::from_value(serde_json::json!({"max_age": "7d"})).unwrap()
    }

    fn planted(name: &str, age_days: i64, expired: bool, present_after: bool) -> Planted {
        Planted {
            name: name.into(),
            age_days,
            expired,
            rotated: name.starts_with("core.log."),
            present_after,
            path: PathBuf::from(name),
        }
    }

    /// A sweep that did its job on 2026-12-02 (max age 7 days).
    fn swept() -> Measurements {
        Measurements {
            dir: "/logs".into(),
            planted: vec![
                planted("core.log.2026-11-23", 9, true, false),
                planted("core.log.2026-11-02", 37, true, false),
                planted("core.log.2026-12-01", 1, false, true),
                planted("core.log.2026-11-26", 6, false, true),
                planted("notes.txt", 37, false, true),
            ],
            sweep: Some(Sweep {
                status: 200,
                body: serde_json::json!({"deleted": 2}),
            }),
            files_after: [
                "core.log.2026-12-02",
                "core.log.2026-12-01",
                "core.log.2026-11-26",
                "notes.txt",
            ]
            .map(String::from)
            .to_vec(),
            today: ["core.log.2026-12-02".into(), "core.log.2026-12-02".into()],
        }
    }

    #[test]
    fn judge_table() {
        let with = |f: &dyn Fn(&mut Measurements)| {
            let mut m = swept();
            f(&mut m);
            m
        };
        let cases: Vec<(&str, Measurements, Status)> = vec![
            ("expired gone, the rest kept", swept(), Status::Pass),
            (
                // The boundary: a file one day inside the age (6 of 7 days) is kept.
                "the file just inside the age deleted",
                with(&|m| m.planted[3].present_after = false),
                Status::Fail,
            ),
            (
                "the file just past the age kept (no retention)",
                with(&|m| m.planted[0].present_after = true),
                Status::Fail,
            ),
            (
                "a file outside the pattern deleted",
                with(&|m| m.planted[4].present_after = false),
                Status::Fail,
            ),
            (
                "the sweep answered the wrong status",
                with(&|m| {
                    m.sweep = Some(Sweep {
                        status: 404,
                        body: serde_json::json!({"error": {"code": "HB-NOT-FOUND"}}),
                    })
                }),
                Status::Fail,
            ),
            (
                "no daily file for today",
                with(&|m| m.files_after.retain(|n| n != "core.log.2026-12-02")),
                Status::Fail,
            ),
            (
                "around midnight: today's local name counts",
                with(&|m| m.today[0] = "core.log.2026-12-03".into()),
                Status::Pass,
            ),
            (
                // Every planted name was a real log already: judged on today's file alone.
                "nothing planted, today's file present",
                with(&|m| m.planted.clear()),
                Status::Pass,
            ),
            (
                "empty directory, nothing planted",
                with(&|m| {
                    m.planted.clear();
                    m.files_after.clear()
                }),
                Status::Fail,
            ),
            (
                "waited for the service's own sweep (no answer to judge)",
                with(&|m| m.sweep = None),
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
        let o = judge(&spec(), &swept());
        assert_eq!(
            o.summary,
            "expired files deleted, recent and foreign files kept, core.log.2026-12-02 present (max age 7d)"
        );
        assert_eq!(o.observations[4].what, "notes.txt (37 days old, not a rotated log)");
        assert_eq!(o.evidence["deleted"], serde_json::json!(["core.log.2026-11-23", "core.log.2026-11-02"]));
        let mut m = swept();
        m.sweep = Some(Sweep {
            status: 403,
            body: serde_json::json!({"error": {"code": "HB-ADMIN-DENIED"}}),
        });
        m.planted[0].present_after = true;
        let o = judge(&spec(), &m);
        assert_eq!(o.summary, "2 retention requirement(s) not met (max age 7d)");
        assert_eq!(o.observations[0].observed, "403 HB-ADMIN-DENIED");
    }
}
