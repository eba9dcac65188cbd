//! The SQLite store: ticks, log events with their trigger-maintained counts, and a small
//! key/value `meta` table read by `preflight status`. WAL with `synchronous=FULL`, so a commit
//! that returned is on disk (an acknowledged tick survives `kill -9`).
//!
//! Growth is bounded: [`Store::prune`] deletes ticks and log events older than the retention
//! age in batches (the writer is released between them) and gives the pages back to the file
//! system (incremental auto-vacuum). `log_counts` counts the log events the store holds: its
//! triggers add on insert and subtract on delete, so a prune lowers it.
//!
//! Out of space (a full disk, or the `max_page_count` cap of `store.max_db_bytes`), a write
//! fails as a whole — nothing of it is stored — with [`WriteError::Full`], and the store
//! reads as read-only ([`Store::health`]) until a write that needs new pages succeeds again
//! (a client's, or [`Store::probe_space`]). Reads are not affected.
//!
//! Every function here blocks: async callers go through `spawn_blocking`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
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

/// Why a write did not happen. In both cases nothing of it was stored.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Out of space: the disk is full or the database reached `store.max_db_bytes`.
    #[error("the store is full: {0}")]
    Full(String),
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
}

/// Whether SQLite refused to grow the database or its WAL (`SQLITE_FULL`).
pub fn is_full(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull)
}

/// Whether the store can take writes, as last seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// `read_write` or `read_only`.
    pub state: &'static str,
    /// Why it is read-only (SQLite's message).
    pub reason: Option<String>,
    /// Since when it is read-only (ms since the epoch).
    pub since_ms: Option<i64>,
}

/// The read-only state, shared by every writer.
#[derive(Default)]
struct FullState {
    full: AtomicBool,
    since_ms: AtomicI64,
    reason: Mutex<Option<String>>,
    /// Writes refused since the last `HB-STORE-FULL` log line, and when that was.
    refused: AtomicU64,
    logged_ms: AtomicI64,
}

/// How often a store that stays full is logged (`HB-STORE-FULL`).
const FULL_LOG_EVERY_MS: i64 = 10_000;

impl FullState {
    fn mark_full(&self, reason: String, now_ms: i64) {
        self.refused.fetch_add(1, Relaxed);
        if !self.full.swap(true, Relaxed) {
            self.since_ms.store(now_ms, Relaxed);
            *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.clone());
            self.logged_ms.store(now_ms, Relaxed);
            self.refused.store(0, Relaxed);
            tracing::error!(
                code = "HB-STORE-FULL",
                reason,
                "the store is full: writes are refused with 507 and /readyz is not ready until \
                 space returns; reads keep serving"
            );
            return;
        }
        let last = self.logged_ms.load(Relaxed);
        if now_ms - last >= FULL_LOG_EVERY_MS
            && self
                .logged_ms
                .compare_exchange(last, now_ms, Relaxed, Relaxed)
                .is_ok()
        {
            let refused = self.refused.swap(0, Relaxed);
            tracing::error!(
                code = "HB-STORE-FULL",
                refused,
                since_ms = self.since_ms.load(Relaxed),
                "the store is still full"
            );
        }
    }

    fn mark_writable(&self) {
        if self.full.swap(false, Relaxed) {
            let since = self.since_ms.swap(0, Relaxed);
            *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = None;
            tracing::info!(
                code = "HB-STORE-WRITABLE",
                read_only_ms = super::now_ms() - since,
                "the store takes writes again"
            );
        }
    }
}

/// The longest rest between two prune batches.
const MAX_PRUNE_REST: Duration = Duration::from_millis(100);

/// What a prune did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Pruned {
    /// Rows with `ts_ms` below this were deleted.
    pub cutoff_ms: i64,
    pub ticks: u64,
    pub log_events: u64,
    /// Transactions used (each at most `prune_batch` rows).
    pub batches: u64,
    /// Pages given back to the file system.
    pub freed_pages: u64,
    pub took_ms: u64,
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
CREATE INDEX IF NOT EXISTS log_events_ts ON log_events(ts_ms);
CREATE TRIGGER IF NOT EXISTS log_events_count AFTER INSERT ON log_events
BEGIN
    INSERT INTO log_counts(level, code, n) VALUES (NEW.level, NEW.code, 1)
    ON CONFLICT(level, code) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS log_events_uncount AFTER DELETE ON log_events
BEGIN
    UPDATE log_counts SET n = n - 1 WHERE level = OLD.level AND code = OLD.code;
    DELETE FROM log_counts WHERE level = OLD.level AND code = OLD.code AND n <= 0;
END;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
"#;

/// A pragma's integer value (SQLite's are never negative).
fn pragma_u64(conn: &Connection, name: &str) -> rusqlite::Result<u64> {
    conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0))
        .map(|v| v.max(0) as u64)
}

fn set_max_pages(conn: &Connection, pages: u64) -> rusqlite::Result<()> {
    // The pragma answers with the cap it set (never below the current size); not a row-less
    // statement, so it is read rather than executed.
    conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
}

/// Opens a reader connection with the store's pragmas.
pub fn open_conn(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

/// How the store is opened (from the `store:` section of the config).
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Cap on the database's size (`store.max_db_bytes`).
    pub max_db_bytes: Option<u64>,
    /// Out of space: [`WriteError::Full`] and a read-only [`Health`] (false: the defect, a
    /// plain SQL error and a store that never reads as read-only).
    pub read_only_when_full: bool,
}

/// The store: one writer connection and a small pool of readers.
pub struct Store {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    opts: Options,
    /// The writer's page cap without the `store_full` fault.
    max_pages: u64,
    page_size: u64,
    full: FullState,
}

impl Store {
    /// Opens (or creates) the store at `path` with the default options.
    pub fn open(path: &Path) -> rusqlite::Result<Store> {
        Store::open_with(
            path,
            Options {
                read_only_when_full: true,
                ..Options::default()
            },
        )
    }

    /// Opens (or creates) the store. Creating the schema on an existing file writes nothing,
    /// so a full disk does not stop an existing store from opening.
    pub fn open_with(path: &Path, opts: Options) -> rusqlite::Result<Store> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let pages = pragma_u64(&conn, "page_count")?;
        if pages == 0 {
            // Only a new file can choose: pruned pages go back to the file system.
            conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        }
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let page_size = pragma_u64(&conn, "page_size")?;
        let default_max = pragma_u64(&conn, "max_page_count")?;
        let max_pages = opts
            .max_db_bytes
            .map_or(default_max, |b| (b / page_size.max(1)).max(1));
        set_max_pages(&conn, max_pages)?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store {
            path: path.to_path_buf(),
            writer: Mutex::new(conn),
            readers: Mutex::new(Vec::new()),
            opts,
            max_pages,
            page_size,
            full: FullState::default(),
        })
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs one write on the writer connection; out of space marks the store read-only. Only
    /// [`Store::probe_space`] marks it writable again: a small write that fits in a page
    /// already allocated proves nothing about space (a log event would flip readiness back
    /// while every batch of ticks is still refused).
    fn write<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, WriteError> {
        let out = f(&mut self.writer());
        match out {
            Ok(v) => Ok(v),
            Err(e) if self.opts.read_only_when_full && is_full(&e) => {
                let reason = e.to_string();
                self.full.mark_full(reason.clone(), super::now_ms());
                Err(WriteError::Full(reason))
            }
            Err(e) => Err(WriteError::Sql(e)),
        }
    }

    /// Whether the store takes writes, as last seen.
    pub fn health(&self) -> Health {
        if self.full.full.load(Relaxed) {
            Health {
                state: "read_only",
                reason: self
                    .full
                    .reason
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
                since_ms: Some(self.full.since_ms.load(Relaxed)),
            }
        } else {
            Health {
                state: "read_write",
                reason: None,
                since_ms: None,
            }
        }
    }

    /// True when the last write that needed space did not get it.
    pub fn is_read_only(&self) -> bool {
        self.full.full.load(Relaxed)
    }

    /// Tries a write that needs new pages (two pages' worth, committed, then deleted) and
    /// marks the store writable when it succeeds: the way a read-only store finds out that
    /// space came back (run every second while read-only, and at start).
    pub fn probe_space(&self) -> Result<(), WriteError> {
        let filler = "x".repeat(self.page_size as usize * 2);
        self.write(|c| {
            c.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('space_probe', ?1)",
                [&filler],
            )?;
            c.execute("DELETE FROM meta WHERE key = 'space_probe'", [])?;
            Ok(())
        })?;
        self.full.mark_writable();
        Ok(())
    }

    /// The `store_full` fault: caps the database at its current size (on) so that the next
    /// write needing a page fails as on a full disk, or restores the configured cap (off).
    pub fn set_full_fault(&self, on: bool) -> rusqlite::Result<()> {
        let conn = self.writer();
        let cap = if on {
            pragma_u64(&conn, "page_count")?
        } else {
            self.max_pages
        };
        set_max_pages(&conn, cap)
    }

    /// The database's size and cap, in bytes (`max` is `None` without `store.max_db_bytes`).
    pub fn size(&self) -> Result<(u64, Option<u64>), QueryError> {
        self.with_reader(|conn| {
            let pages = pragma_u64(conn, "page_count")?;
            Ok((pages * self.page_size, self.opts.max_db_bytes))
        })
    }

    /// Deletes ticks and log events with `ts_ms` below `cutoff_ms`, `batch` rows per
    /// transaction, then gives the freed pages back to the file system.
    pub fn prune(&self, cutoff_ms: i64, batch: usize) -> Result<Pruned, WriteError> {
        let started = Instant::now();
        let mut out = Pruned {
            cutoff_ms,
            ..Pruned::default()
        };
        for (table, key, count) in [
            ("ticks", "seq", &mut out.ticks),
            ("log_events", "id", &mut out.log_events),
        ] {
            let sql = format!(
                "DELETE FROM {table} WHERE {key} IN \
                 (SELECT {key} FROM {table} WHERE ts_ms < ?1 LIMIT ?2)"
            );
            loop {
                let t = Instant::now();
                let n = self.write(|c| {
                    c.prepare_cached(&sql)?
                        .execute(params![cutoff_ms, batch as i64])
                })?;
                out.batches += 1;
                *count += n as u64;
                if n < batch {
                    break;
                }
                // Rest as long as the batch held the writer: waiting ingests get it (a mutex
                // handed straight back would starve them), and the prune takes at most half
                // the writer's time and one batch of an ingest's latency.
                std::thread::sleep(t.elapsed().min(MAX_PRUNE_REST));
            }
        }
        loop {
            let freed = self.write(|c| {
                let free = pragma_u64(c, "freelist_count")?;
                if free > 0 {
                    c.execute_batch(&format!("PRAGMA incremental_vacuum({})", free.min(1000)))?;
                }
                Ok(free.min(1000))
            })?;
            out.freed_pages += freed;
            if freed < 1000 {
                break;
            }
            std::thread::yield_now();
        }
        out.took_ms = started.elapsed().as_millis() as u64;
        Ok(out)
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
    pub fn insert_ticks(&self, ticks: &[Tick], now_ms: i64) -> Result<usize, WriteError> {
        self.write(|conn| insert_ticks(conn, ticks, now_ms))
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
    pub fn insert_log_events(&self, events: &[LogEvent]) -> Result<(), WriteError> {
        self.write(|conn| {
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
        })
    }

    /// Sets a `meta` value (in place when the key exists: proves nothing about space).
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), WriteError> {
        self.write(|conn| {
            conn.execute(
                "INSERT INTO meta(key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map(drop)
        })
    }

    /// Warning and error totals from `log_counts`.
    pub fn log_counts(&self) -> Result<(i64, i64), QueryError> {
        self.with_reader(|conn| Ok(read_log_counts(conn)?))
    }
}

fn insert_ticks(conn: &mut Connection, ticks: &[Tick], now_ms: i64) -> rusqlite::Result<usize> {
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

    fn batch(prefix: &str, n: usize, ts_ms: i64) -> Vec<Tick> {
        (0..n)
            .map(|i| Tick {
                ts_ms: Some(ts_ms),
                ..tick(&format!("{prefix}-{i}"), 2.0 + i as f64 / 1000.0)
            })
            .collect()
    }

    fn ids(ticks: &[Tick]) -> Vec<String> {
        ticks.iter().filter_map(|t| t.id.clone()).collect()
    }

    /// Writes batches until one is refused; returns the acknowledged ticks and the refused
    /// batch.
    fn fill(store: &Store, prefix: &str) -> (Vec<Tick>, Vec<Tick>) {
        let mut acked = Vec::new();
        for b in 0..10_000 {
            let ticks = batch(&format!("{prefix}{b}"), 200, 5_000);
            match store.insert_ticks(&ticks, 0) {
                Ok(n) => {
                    assert_eq!(n, ticks.len());
                    acked.extend(ticks);
                }
                Err(WriteError::Full(_)) => return (acked, ticks),
                Err(e) => panic!("batch {b}: {e}"),
            }
        }
        panic!("the cap was never reached")
    }

    fn capped(path: &Path, bytes: u64) -> Store {
        Store::open_with(
            path,
            Options {
                max_db_bytes: Some(bytes),
                read_only_when_full: true,
            },
        )
        .unwrap()
    }

    #[test]
    fn past_the_cap_writes_are_refused_whole_and_reads_keep_working() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("core.db");
        let store = capped(&path, 256 * 1024);
        assert_eq!(store.health().state, "read_write");
        let (acked, refused) = fill(&store, "a");
        assert!(!acked.is_empty());
        let h = store.health();
        assert_eq!(h.state, "read_only");
        assert!(h.reason.unwrap().contains("full"), "reason names the cause");
        // Reads answer; every acknowledged tick is there and nothing of the refused batch.
        assert_eq!(store.lookup(&ids(&acked)).unwrap().0, acked.len());
        assert_eq!(store.lookup(&ids(&refused)).unwrap().0, 0);
        assert!(store.correlations("m1", 0, 1000, None, None).is_ok());
        // No space yet: the probe says so and the store stays read-only.
        assert!(matches!(store.probe_space(), Err(WriteError::Full(_))));
        assert!(store.is_read_only());
        // Small writes (stored or not: they may fit an allocated page) do not flip the state
        // back.
        let _ = store.set_meta("heartbeat_ms", "1");
        let _ = store.set_meta("heartbeat_ms", "2");
        assert!(store.is_read_only());
        // Nor does a log event (stored or not) does not flip the state back.
        let _ = store.insert_log_events(&[LogEvent {
            ts_ms: 0,
            level: "ERROR",
            code: "HB-STORE-FULL".into(),
            message: String::new(),
        }]);
        assert!(store.is_read_only());
        drop(store);
        // A higher cap (a restart): the probe finds space.
        let store = capped(&path, 1024 * 1024);
        assert_eq!(store.lookup(&ids(&acked)).unwrap().0, acked.len());
        store.probe_space().unwrap();
        assert!(!store.is_read_only());
        store.insert_ticks(&refused, 0).unwrap();
    }

    #[test]
    fn the_defect_reports_a_full_store_as_an_ordinary_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with(
            &dir.path().join("core.db"),
            Options {
                max_db_bytes: Some(128 * 1024),
                read_only_when_full: false,
            },
        )
        .unwrap();
        let err = (0..1000)
            .find_map(|b| {
                store
                    .insert_ticks(&batch(&format!("b{b}"), 200, 0), 0)
                    .err()
            })
            .expect("the cap is reached");
        assert!(matches!(&err, WriteError::Sql(e) if is_full(e)), "{err:?}");
        assert!(!store.is_read_only());
    }

    #[test]
    fn the_full_fault_caps_at_the_current_size_and_lifting_it_restores_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("core.db")).unwrap();
        store.insert_ticks(&batch("x", 50, 0), 0).unwrap();
        store.set_full_fault(true).unwrap();
        let (_, refused) = fill(&store, "f");
        assert!(store.is_read_only());
        store.set_full_fault(false).unwrap();
        store.probe_space().unwrap();
        assert!(!store.is_read_only());
        assert_eq!(store.insert_ticks(&refused, 0).unwrap(), refused.len());
    }

    #[test]
    fn prune_deletes_old_rows_in_batches_keeps_recent_ones_and_gives_pages_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("core.db")).unwrap();
        let old = batch("old", 2_500, 1_000);
        let recent = batch("new", 300, 9_000);
        store.insert_ticks(&old, 0).unwrap();
        store.insert_ticks(&recent, 0).unwrap();
        let ev = |ts_ms, level| LogEvent {
            ts_ms,
            level,
            code: "HB-X".into(),
            message: "m".repeat(200),
        };
        let mut events: Vec<LogEvent> = (0..1500).map(|_| ev(1_000, "WARN")).collect();
        events.extend([ev(9_000, "WARN"), ev(9_000, "ERROR"), ev(1_000, "ERROR")]);
        store.insert_log_events(&events).unwrap();
        assert_eq!(store.log_counts().unwrap(), (1501, 2));
        let (before, _) = store.size().unwrap();
        let p = store.prune(5_000, 1_000).unwrap();
        assert_eq!((p.ticks, p.log_events), (2_500, 1_501));
        // 1 000 + 1 000 + 500 ticks, 1 000 + 501 log events: a short batch ends each table.
        assert_eq!(p.batches, 5);
        assert!(p.freed_pages > 0, "{p:?}");
        let (after, _) = store.size().unwrap();
        assert!(after < before, "{after} < {before}");
        assert_eq!(store.lookup(&ids(&old)).unwrap().0, 0);
        assert_eq!(store.lookup(&ids(&recent)).unwrap().0, recent.len());
        // `log_counts` counts what the store holds: the triggers subtract on delete, and a
        // level/code pair that reached zero is gone (as a GROUP BY of log_events would be).
        assert_eq!(store.log_counts().unwrap(), (1, 1));
        let again = store.prune(5_000, 1_000).unwrap();
        assert_eq!((again.ticks, again.log_events), (0, 0));
    }

    #[test]
    fn a_file_that_is_not_a_database_does_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("core.db");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let err = Store::open(&path).err().expect("not a database");
        assert_eq!(
            err.sqlite_error_code(),
            Some(rusqlite::ErrorCode::NotADatabase)
        );
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
