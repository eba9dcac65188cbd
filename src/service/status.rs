//! `preflight status`: one line for a tmux status bar, read from the service's SQLite store
//! (the trigger-maintained `log_counts` and the `meta` table) — no log files are scanned.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

/// Why the status line could not be read; the cause is the `source()`.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("unknown status format `{0}` (expected tmux or json)")]
    Format(String),
    #[error("opening {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

/// A service whose heartbeat is older than this is shown as down.
const STALE_MS: i64 = 15_000;

/// Everything the line shows, in one statement: two range reads of `log_counts` on its
/// primary key (level, code) and four primary-key reads of `meta`.
const STATUS_SQL: &str = "SELECT
    (SELECT COALESCE(SUM(n), 0) FROM log_counts WHERE level = 'WARN'),
    (SELECT COALESCE(SUM(n), 0) FROM log_counts WHERE level = 'ERROR'),
    (SELECT value FROM meta WHERE key = 'started_at_ms'),
    (SELECT value FROM meta WHERE key = 'heartbeat_ms'),
    (SELECT value FROM meta WHERE key = 'stopped_at_ms'),
    (SELECT value FROM meta WHERE key = 'breaker.feed')";

/// The status line. Runs as its own short-lived process every few seconds (tmux), so it is
/// kept lean: no async runtime, no logging set up, a read-only connection with no pragmas
/// beyond a short busy timeout, and one prepared statement.
pub fn status_line(data_dir: &Path, format: &str) -> Result<String, StatusError> {
    if !matches!(format, "json" | "tmux") {
        return Err(StatusError::Format(format.to_string()));
    }
    let db = super::db_path(data_dir);
    let conn = Connection::open_with_flags(
        &db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| StatusError::Open {
        path: db.clone(),
        source,
    })?;
    conn.busy_timeout(std::time::Duration::from_millis(200))?;
    type Row = (
        i64,
        i64,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let (warn, err, started, heartbeat, stopped, breaker): Row = conn
        .query_row(STATUS_SQL, [], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .map_err(|source| StatusError::Read {
            path: db.clone(),
            source,
        })?;
    let num = |v: Option<String>| v.and_then(|s| s.parse::<i64>().ok());
    let started = num(started);
    let heartbeat = num(heartbeat);
    let stopped = num(stopped);
    let breaker = breaker.unwrap_or_else(|| "unknown".into());
    let now = super::now_ms();
    let up = stopped.is_none() && heartbeat.is_some_and(|h| now - h < STALE_MS);
    let uptime_s = started.map(|s| (now - s).max(0) / 1000).unwrap_or(0);
    match format {
        "json" => Ok(serde_json::json!({
            "up": up,
            "uptime_seconds": if up { uptime_s } else { 0 },
            "warnings": warn,
            "errors": err,
            "breakers": {"feed": breaker},
        })
        .to_string()),
        "tmux" => {
            let state = if up {
                format!("✔ up {}", human(uptime_s))
            } else {
                "✘ down".to_string()
            };
            Ok(format!(
                "core {state} | warn {warn} err {err} | brk feed:{breaker}"
            ))
        }
        other => Err(StatusError::Format(other.to_string())),
    }
}

fn human(s: i64) -> String {
    match s {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_durations() {
        assert_eq!(super::human(5), "5s");
        assert_eq!(super::human(3 * 3600 + 5), "3h");
        assert_eq!(super::human(2 * 86_400), "2d");
    }
}
