//! The SQLite store: ticks, log events with their trigger-maintained counts, and a small
//! key/value `meta` table read by `preflight status`. WAL with `synchronous=FULL`, so a commit
//! that returned is on disk (an acknowledged tick survives `kill -9`).
//!
//! Every function here blocks: async callers go through `spawn_blocking`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

/// One price tick.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Tick {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub venue: String,
    pub market: String,
    pub selection: String,
    pub price: f64,
    #[serde(default)]
    pub ts_ms: Option<i64>,
}

impl Tick {
    /// A tick without a client id, for tests of the graph and detectors.
    #[cfg(test)]
    pub fn at(market: &str, selection: &str, venue: &str, price: f64, ts_ms: i64) -> Tick {
        Tick {
            id: None,
            venue: venue.into(),
            market: market.into(),
            selection: selection.into(),
            price,
            ts_ms: Some(ts_ms),
        }
    }

    /// Checks one tick; the message names the problem.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(id) = &self.id
            && (id.is_empty() || id.len() > 64)
        {
            return Err("id must be 1 to 64 characters".into());
        }
        for (name, v) in [
            ("venue", &self.venue),
            ("market", &self.market),
            ("selection", &self.selection),
        ] {
            if v.is_empty() || v.len() > 64 {
                return Err(format!("{name} must be 1 to 64 characters"));
            }
        }
        if !(self.price.is_finite() && self.price > 1.0) {
            return Err("price must be decimal odds greater than 1.0".into());
        }
        Ok(())
    }
}

/// Why the analytics query did not answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("query exceeded its {0:?} budget")]
    Timeout(Duration),
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
}

/// One correlated pair of selections.
#[derive(Debug, Clone, Serialize)]
pub struct Pair {
    pub a: String,
    pub b: String,
    pub r: f64,
    pub n: usize,
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS ticks (
    seq INTEGER PRIMARY KEY,
    id TEXT UNIQUE,
    venue TEXT NOT NULL,
    market TEXT NOT NULL,
    selection TEXT NOT NULL,
    price REAL NOT NULL,
    ts_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ticks_market_ts ON ticks(market, ts_ms);
CREATE INDEX IF NOT EXISTS ticks_ts ON ticks(ts_ms);
CREATE TABLE IF NOT EXISTS log_events (
    id INTEGER PRIMARY KEY,
    ts_ms INTEGER NOT NULL,
    level TEXT NOT NULL,
    code TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS log_counts (
    level TEXT NOT NULL,
    code TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (level, code)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS log_events_count AFTER INSERT ON log_events
BEGIN
    INSERT INTO log_counts(level, code, n) VALUES (NEW.level, NEW.code, 1)
    ON CONFLICT(level, code) DO UPDATE SET n = n + 1;
END;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
"#;

/// Opens a connection with the store's pragmas and schema.
pub fn open_conn(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

/// The store: one writer connection and a small pool of readers.
pub struct Store {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

impl Store {
    pub fn open(path: &Path) -> rusqlite::Result<Store> {
        let conn = open_conn(path)?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store {
            path: path.to_path_buf(),
            writer: Mutex::new(conn),
            readers: Mutex::new(Vec::new()),
        })
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with_reader<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, QueryError>,
    ) -> Result<T, QueryError> {
        let conn = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut conn = match conn {
            Some(c) => c,
            None => open_conn(&self.path)?,
        };
        let out = f(&mut conn);
        let mut pool = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < 8 {
            pool.push(conn);
        }
        out
    }

    /// Inserts a batch in one transaction; returns when it is committed. Re-sent ids are
    /// ignored (idempotent). Returns the number of new rows.
    pub fn insert_ticks(&self, ticks: &[Tick], now_ms: i64) -> rusqlite::Result<usize> {
        let mut conn = self.writer();
        let tx = conn.transaction()?;
        let mut added = 0;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO ticks(id, venue, market, selection, price, ts_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(id) DO NOTHING",
            )?;
            for t in ticks {
                added += stmt.execute(params![
                    t.id,
                    t.venue,
                    t.market,
                    t.selection,
                    t.price,
                    t.ts_ms.unwrap_or(now_ms)
                ])?;
            }
        }
        tx.commit()?;
        Ok(added)
    }

    /// Which of `ids` are stored.
    pub fn lookup(&self, ids: &[String]) -> Result<(usize, Vec<String>), QueryError> {
        self.with_reader(|conn| {
            let mut stmt = conn.prepare_cached("SELECT 1 FROM ticks WHERE id = ?1")?;
            let mut present = 0;
            let mut missing = Vec::new();
            for id in ids {
                if stmt.exists([id])? {
                    present += 1;
                } else {
                    missing.push(id.clone());
                }
            }
            Ok((present, missing))
        })
    }

    pub fn market_exists(&self, market: &str) -> Result<bool, QueryError> {
        self.with_reader(|conn| {
            Ok(conn
                .prepare_cached("SELECT 1 FROM ticks WHERE market = ?1 LIMIT 1")?
                .exists([market])?)
        })
    }

    pub fn tick_count(&self) -> Result<i64, QueryError> {
        self.with_reader(|conn| {
            Ok(conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM ticks", [], |r| r.get(0))?)
        })
    }

    /// Ticks since `since_ms`, optionally of one market, oldest first.
    pub fn ticks_since(
        &self,
        since_ms: i64,
        market: Option<&str>,
    ) -> Result<Vec<Tick>, QueryError> {
        self.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT venue, market, selection, price, ts_ms FROM ticks
                 WHERE ts_ms >= ?1 AND (?2 IS NULL OR market = ?2) ORDER BY ts_ms",
            )?;
            let rows = stmt.query_map(params![since_ms, market], |r| {
                Ok(Tick {
                    id: None,
                    venue: r.get(0)?,
                    market: r.get(1)?,
                    selection: r.get(2)?,
                    price: r.get(3)?,
                    ts_ms: Some(r.get(4)?),
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// The analytics query: per-selection average prices in time buckets, correlated pairwise.
    /// `timeout` (if any) is enforced inside SQLite by a progress handler that interrupts the
    /// statement; `heavy` adds a deliberately expensive recursive CTE of `heavy_rows` steps.
    pub fn correlations(
        &self,
        market: &str,
        since_ms: i64,
        bucket_ms: i64,
        timeout: Option<Duration>,
        heavy_rows: Option<u64>,
    ) -> Result<Vec<Pair>, QueryError> {
        self.with_reader(|conn| {
            let started = Instant::now();
            if let Some(budget) = timeout {
                let deadline = started + budget;
                // Without the handler the budget would not hold: fail rather than run unbounded.
                conn.progress_handler(1000, Some(move || Instant::now() >= deadline))?;
            }
            let result = correlations_sql(conn, market, since_ms, bucket_ms, heavy_rows);
            // A handler left behind would interrupt the next query on this pooled connection.
            conn.progress_handler(0, None::<fn() -> bool>)?;
            match result {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::OperationInterrupted =>
                {
                    Err(QueryError::Timeout(timeout.unwrap_or_default()))
                }
                other => other.map_err(QueryError::from),
            }
        })
    }

    /// Appends log events (the trigger maintains `log_counts`).
    pub fn insert_log_events(&self, events: &[LogEvent]) -> rusqlite::Result<()> {
        let mut conn = self.writer();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO log_events(ts_ms, level, code, message) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for e in events {
                stmt.execute(params![e.ts_ms, e.level, e.code, e.message])?;
            }
        }
        tx.commit()
    }

    pub fn set_meta(&self, key: &str, value: &str) -> rusqlite::Result<()> {
        self.writer().execute(
            "INSERT INTO meta(key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// Warning and error totals from `log_counts`.
    pub fn log_counts(&self) -> Result<(i64, i64), QueryError> {
        self.with_reader(|conn| Ok(read_log_counts(conn)?))
    }
}

/// One warning or error, as written by the logging layer.
#[derive(Debug, Clone)]
pub struct LogEvent {
    pub ts_ms: i64,
    pub level: &'static str,
    pub code: String,
    pub message: String,
}

pub fn read_log_counts(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    let mut stmt = conn.prepare_cached(
        "SELECT COALESCE(SUM(CASE WHEN level = 'WARN' THEN n END), 0),
                COALESCE(SUM(CASE WHEN level = 'ERROR' THEN n END), 0) FROM log_counts",
    )?;
    stmt.query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
}

pub fn read_meta(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
}

fn correlations_sql(
    conn: &Connection,
    market: &str,
    since_ms: i64,
    bucket_ms: i64,
    heavy_rows: Option<u64>,
) -> rusqlite::Result<Vec<Pair>> {
    if let Some(rows) = heavy_rows {
        // The `slow_query` fault: a CTE that SQLite must walk step by step.
        conn.query_row(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?1)
             SELECT COUNT(*) FROM c",
            [rows as i64],
            |r| r.get::<_, i64>(0),
        )?;
    }
    let mut stmt = conn.prepare_cached(
        "SELECT selection, ts_ms / ?3 AS b, AVG(price) FROM ticks
         WHERE market = ?1 AND ts_ms >= ?2 GROUP BY selection, b ORDER BY selection, b",
    )?;
    let mut series: Vec<(String, std::collections::BTreeMap<i64, f64>)> = Vec::new();
    let mut rows = stmt.query(params![market, since_ms, bucket_ms.max(1)])?;
    while let Some(r) = rows.next()? {
        let sel: String = r.get(0)?;
        let b: i64 = r.get(1)?;
        let p: f64 = r.get(2)?;
        match series.last_mut() {
            Some((s, m)) if *s == sel => {
                m.insert(b, p);
            }
            _ => series.push((sel, [(b, p)].into_iter().collect())),
        }
    }
    let mut pairs = Vec::new();
    for i in 0..series.len() {
        for j in i + 1..series.len() {
            let (a, sa) = &series[i];
            let (b, sb) = &series[j];
            let (xs, ys): (Vec<f64>, Vec<f64>) = sa
                .iter()
                .filter_map(|(k, x)| sb.get(k).map(|y| (*x, *y)))
                .unzip();
            pairs.push(Pair {
                a: a.clone(),
                b: b.clone(),
                r: pearson(&xs, &ys),
                n: xs.len(),
            });
        }
    }
    Ok(pairs)
}

/// Pearson correlation; 0 when undefined (fewer than two points or no variance).
pub fn pearson(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len().min(ys.len());
    if n < 2 {
        return 0.0;
    }
    let mx = xs.iter().sum::<f64>() / n as f64;
    let my = ys.iter().sum::<f64>() / n as f64;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for k in 0..n {
        let (dx, dy) = (xs[k] - mx, ys[k] - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if sxx <= 0.0 || syy <= 0.0 {
        0.0
    } else {
        (sxy / (sxx * syy).sqrt()).clamp(-1.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(id: &str, price: f64) -> Tick {
        Tick {
            id: Some(id.into()),
            venue: "v1".into(),
            market: "m1".into(),
            selection: "s1".into(),
            price,
            ts_ms: Some(1000),
        }
    }

    #[test]
    fn ids_are_idempotent_and_counts_come_from_triggers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("core.db")).unwrap();
        assert_eq!(
            store
                .insert_ticks(&[tick("a", 2.0), tick("b", 2.1)], 0)
                .unwrap(),
            2
        );
        assert_eq!(store.insert_ticks(&[tick("a", 2.0)], 0).unwrap(), 0);
        let (present, missing) = store.lookup(&["a".into(), "zz".into()]).unwrap();
        assert_eq!((present, missing), (1, vec!["zz".to_string()]));
        let ev = |level| LogEvent {
            ts_ms: 0,
            level,
            code: "HB-X".into(),
            message: String::new(),
        };
        store
            .insert_log_events(&[ev("WARN"), ev("WARN"), ev("ERROR")])
            .unwrap();
        assert_eq!(store.log_counts().unwrap(), (2, 1));
    }

    #[test]
    fn heavy_query_is_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("core.db")).unwrap();
        let started = Instant::now();
        let r = store.correlations(
            "m1",
            0,
            1000,
            Some(Duration::from_millis(20)),
            Some(1_000_000_000),
        );
        assert!(matches!(r, Err(QueryError::Timeout(_))), "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        // The connection is reusable afterwards.
        assert!(store.correlations("m1", 0, 1000, None, None).is_ok());
    }

    #[test]
    fn pearson_basics() {
        assert!((pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]) - 1.0).abs() < 1e-9);
        assert!((pearson(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-9);
        assert_eq!(pearson(&[1.0], &[1.0]), 0.0);
    }
}
