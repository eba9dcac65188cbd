//! `log_retention`: plants back-dated files that match the rotation pattern plus one that
//! does not, triggers a sweep (admin API) or waits for one, then requires expired files
//! gone, recent ones kept, the foreign file untouched, and daily-rotated naming in use.

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
#[derive(Debug, Clone, serde::Serialize)]
struct Planted {
    name: String,
    age_days: i64,
    /// Must be deleted by the sweep.
    expired: bool,
    /// Matches the rotation pattern.
    rotated: bool,
    #[serde(skip)]
    path: PathBuf,
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
    let max_days = (spec.max_age.0.as_secs() / 86_400) as i64;
    let today = chrono::Utc::now().date_naive();
    let mut planted = Vec::new();
    let mut out = Outcome::default();
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
        let path = dir.join(&name);
        if path.exists() {
            // A real log of that day: never overwrite it, and judge it as it is.
            continue;
        }
        let path = plant(&dir, &name, age)?;
        planted.push(Planted {
            name,
            age_days: age,
            expired,
            rotated: true,
            path,
        });
    }
    let foreign = "notes.txt".to_string();
    if !dir.join(&foreign).exists() {
        let path = plant(&dir, &foreign, max_days + 30)?;
        planted.push(Planted {
            name: foreign,
            age_days: max_days + 30,
            expired: false,
            rotated: false,
            path,
        });
    }
    out.sent.push(format!(
        "planted {} in {}",
        planted
            .iter()
            .map(|p| format!("{} ({}d)", p.name, p.age_days))
            .collect::<Vec<_>>()
            .join(", "),
        dir.display()
    ));
    let result = sweep_and_judge(spec, ctx, &dir, &planted, &mut out).await;
    // Clean up whatever of ours is left (recent files, the foreign file, unswept ones).
    for p in &planted {
        let _ = std::fs::remove_file(&p.path);
    }
    result.map(|()| out)
}

async fn sweep_and_judge(
    spec: &Spec,
    ctx: &Ctx,
    dir: &Path,
    planted: &[Planted],
    out: &mut Outcome,
) -> Result<(), CheckError> {
    let mut sweep_answer = serde_json::Value::Null;
    match spec.trigger {
        Trigger::Admin => {
            let http = ctx.http()?;
            out.sent.push("POST /admin/retention/sweep".into());
            let r = http.admin("POST", "/admin/retention/sweep", None).await?;
            let body = r.json().unwrap_or(serde_json::Value::Null);
            if r.status != 200 {
                let code = body
                    .pointer("/error/code")
                    .and_then(|v| v.as_str())
                    .unwrap_or("?")
                    .to_string();
                out.observe(Observation::new(
                    "retention sweep",
                    "200 with the files deleted",
                    format!("{} {code}", r.status),
                    false,
                ));
            }
            sweep_answer = body;
        }
        Trigger::Wait => {
            let end = tokio::time::Instant::now() + spec.wait.0.min(ctx.remaining()?);
            while tokio::time::Instant::now() < end
                && planted.iter().any(|p| p.expired && p.path.exists())
            {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    let mut gone = Vec::new();
    let mut kept = Vec::new();
    for p in planted {
        let exists = p.path.exists();
        let ok = exists != p.expired;
        out.observe(Observation::new(
            format!(
                "{} ({} days old{})",
                p.name,
                p.age_days,
                if p.rotated { "" } else { ", not a rotated log" }
            ),
            if p.expired { "deleted" } else { "kept" },
            if exists { "present" } else { "deleted" },
            ok,
        ));
        if exists {
            kept.push(p.name.clone())
        } else {
            gone.push(p.name.clone())
        }
    }
    // Daily naming in use: today's file (UTC, or local time around midnight).
    let names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| CheckError::Local(format!("listing {}: {e}", dir.display())))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let today_utc = chrono::Utc::now()
        .date_naive()
        .format(&spec.file_format)
        .to_string();
    let today_local = chrono::Local::now()
        .date_naive()
        .format(&spec.file_format)
        .to_string();
    let present = names.iter().any(|n| *n == today_utc || *n == today_local);
    out.observe(Observation::new(
        "today's log file, daily naming",
        today_utc.clone(),
        if present {
            "present".to_string()
        } else {
            format!("absent; the directory holds {names:?}")
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
        "dir": dir.display().to_string(),
        "planted": planted,
        "deleted": gone,
        "kept": kept,
        "sweep": sweep_answer,
        "files_after": names,
    });
    Ok(())
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
