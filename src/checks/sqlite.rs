//! `sqlite`: a read-only query against the target's SQLite database (opened read-only),
//! compared with an expected value or with a second query.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::Dur;
use crate::checks::{Code, Exclusivity, Kind, KindSpec, Problems};
use crate::outcome::{Capability, CheckError, Observation, Outcome};
use crate::target::Ctx;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Database file (default: the target's `sqlite`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// A query returning one value (first column of the first row).
    pub query: String,
    /// The value it must return.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<serde_json::Value>,
    /// Or: a second query whose value it must equal (e.g. trigger-maintained counts vs a
    /// real count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals_query: Option<String>,
}

impl Spec {
    fn check_fields(&self, p: &mut Problems) {
        match (&self.equals, &self.equals_query) {
            (None, None) => p.error(
                "",
                NO_EXPECTATION,
                "give `equals` or `equals_query`",
                "e.g. `equals: 0`",
            ),
            (Some(_), Some(_)) => p.error(
                "/equals_query",
                TWO_EXPECTATIONS,
                "give either `equals` or `equals_query`, not both",
                "",
            ),
            _ => {}
        }
        for (field, q) in [
            ("/query", Some(&self.query)),
            ("/equals_query", self.equals_query.as_ref()),
        ] {
            if let Some(q) = q {
                let head = q.trim_start().to_ascii_lowercase();
                if !(head.starts_with("select") || head.starts_with("with")) {
                    p.error(
                        field,
                        NOT_READ_ONLY,
                        "only SELECT (or WITH … SELECT) queries are allowed",
                        "the database is opened read-only",
                    );
                }
            }
        }
    }
}

pub async fn run(spec: &Spec, ctx: &Ctx) -> Result<Outcome, CheckError> {
    let path = match (&spec.path, &ctx.target.sqlite) {
        (Some(p), _) => p.clone(),
        (None, Some(p)) => p.clone(),
        (None, None) => {
            return Err(CheckError::Missing {
                capability: Capability::Sqlite,
                hint: ctx.target.missing_hint(Capability::Sqlite),
            });
        }
    };
    let spec = spec.clone();
    let deadline = std::time::Instant::now() + ctx.remaining()?;
    tokio::task::spawn_blocking(move || evaluate(&spec, &path, deadline))
        .await
        .map_err(|e| CheckError::Local(format!("sqlite check task: {e}")))?
}

/// Opens `path` read-only and compares the query's value with the expectation. SQLite is
/// interrupted at `deadline`.
pub fn evaluate(
    spec: &Spec,
    path: &std::path::Path,
    deadline: std::time::Instant,
) -> Result<Outcome, CheckError> {
    use rusqlite::OpenFlags;
    if !path.exists() {
        return Err(CheckError::Local(format!(
            "database {} does not exist",
            path.display()
        )));
    }
    let mut conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| CheckError::Local(format!("opening {} read-only: {e}", path.display())))?;
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    let _ = conn.busy_timeout(left.min(std::time::Duration::from_secs(5)));
    conn.progress_handler(1000, Some(move || std::time::Instant::now() >= deadline))
        .map_err(|e| CheckError::Local(format!("setting the query deadline: {e}")))?;
    let mut out = Outcome {
        sent: vec![format!("{} on {}", spec.query.trim(), path.display())],
        ..Outcome::default()
    };
    let value = query_value(&conn, &spec.query)?;
    let (expected, want) = match (&spec.equals, &spec.equals_query) {
        (Some(v), _) => (v.to_string(), v.clone()),
        (None, Some(q)) => {
            out.sent.push(q.trim().to_string());
            let v = query_value(&conn, q)?;
            (format!("{v} (from `{}`)", q.trim()), v)
        }
        (None, None) => {
            return Err(CheckError::Local(
                "no `equals` or `equals_query` to compare with".into(),
            ));
        }
    };
    let ok = json_equal(&value, &want);
    out.observe(Observation::new(
        format!("`{}`", spec.query.trim()),
        expected,
        value.to_string(),
        ok,
    ));
    out.summary = if ok {
        format!("query returned {value}")
    } else {
        format!("query returned {value}, expected {want}")
    };
    out.evidence = serde_json::json!({"database": path.display().to_string(), "value": value});
    Ok(out)
}

/// The first column of the first row as JSON (`null` when there is no row).
fn query_value(conn: &rusqlite::Connection, query: &str) -> Result<serde_json::Value, CheckError> {
    use rusqlite::types::ValueRef;
    let mut stmt = conn
        .prepare(query)
        .map_err(|e| CheckError::Local(format!("preparing `{}`: {e}", query.trim())))?;
    if !stmt.readonly() {
        return Err(CheckError::Local(format!(
            "`{}` is not read-only",
            query.trim()
        )));
    }
    let mut rows = stmt
        .query([])
        .map_err(|e| CheckError::Local(format!("running `{}`: {e}", query.trim())))?;
    let row = rows
        .next()
        .map_err(|e| CheckError::Local(format!("running `{}`: {e}", query.trim())))?;
    let Some(row) = row else {
        return Ok(serde_json::Value::Null);
    };
    let v = row
        .get_ref(0)
        .map_err(|e| CheckError::Local(format!("reading `{}`: {e}", query.trim())))?;
    Ok(match v {
        ValueRef::Null => serde_json::Value::Null,
        ValueRef::Integer(i) => i.into(),
        ValueRef::Real(f) => serde_json::Number::from_f64(f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned().into(),
        ValueRef::Blob(b) => format!("<{} bytes>", b.len()).into(),
    })
}

fn json_equal(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}


const NO_EXPECTATION: Code = Code("sqlite/no-expectation");
const NOT_READ_ONLY: Code = Code("sqlite/not-read-only");
const TWO_EXPECTATIONS: Code = Code("sqlite/two-expectations");

impl KindSpec for Spec {
    const KIND: Kind = Kind {
        name: "sqlite",
        namespace: "sqlite",
        exclusivity: Exclusivity::Shared,
        codes: &[NO_EXPECTATION, NOT_READ_ONLY, TWO_EXPECTATIONS],
    };

    fn validate(&self, p: &mut Problems) {
        self.check_fields(p)
    }

    fn default_timeout(&self) -> Dur {
        Dur::from_secs(30)
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
    use std::time::{Duration, Instant};

    fn spec(v: serde_json::Value) -> Spec {
        serde_json::from_value(v).unwrap()
    }

    fn db() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("core.db");
        let c = rusqlite::Connection::open(&p).unwrap();
        c.execute_batch(
            "CREATE TABLE t(x INTEGER); INSERT INTO t VALUES (1),(2),(3);
             CREATE TABLE counts(n INTEGER); INSERT INTO counts VALUES (3);",
        )
        .unwrap();
        (dir, p)
    }

    #[test]
    fn equals_and_equals_query() {
        let (_d, p) = db();
        let soon = Instant::now() + Duration::from_secs(5);
        let o = evaluate(
            &spec(serde_json::json!({"query": "SELECT count(*) FROM t", "equals": 3})),
            &p,
            soon,
        )
        .unwrap();
        assert_eq!(o.status(), Status::Pass);
        let o = evaluate(
            &spec(serde_json::json!({"query": "SELECT n FROM counts", "equals_query": "SELECT sum(x) FROM t"})),
            &p,
            soon,
        )
        .unwrap();
        assert_eq!(o.status(), Status::Fail);
        assert_eq!(o.observations[0].observed, "3");
        assert!(o.observations[0].expected.starts_with("6 "));
    }

    #[test]
    fn writes_are_refused() {
        let (_d, p) = db();
        let soon = Instant::now() + Duration::from_secs(5);
        // Validation rejects this too; the read-only connection is the real guard.
        let e = evaluate(
            &spec(serde_json::json!({"query": "WITH a AS (SELECT 1) DELETE FROM t", "equals": 0})),
            &p,
            soon,
        )
        .unwrap_err();
        assert_eq!(e.status(), Status::Error);
        let c = rusqlite::Connection::open(&p).unwrap();
        let n: i64 = c
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 3);
    }
}
