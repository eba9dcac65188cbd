//! Logging: JSON lines to `logs.dir/core.log.YYYY-MM-DD` (daily rotation), human-readable
//! lines on stderr, and every warning or error forwarded — off the hot path, through a
//! bounded channel — to the SQLite `log_events` table whose triggers maintain `log_counts`.
//! Also the retention sweep, whose file selection is a pure function.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::NaiveDate;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use super::store::{LogEvent, Store};

/// File name prefix; rotated files are `core.log.YYYY-MM-DD`.
pub const PREFIX: &str = "core.log";

static EVENTS: OnceLock<SyncSender<LogEvent>> = OnceLock::new();
static COUNTS: Mutex<BTreeMap<(&'static str, String), u64>> = Mutex::new(BTreeMap::new());

/// `log_events_total{level,code}` values.
pub fn counts() -> Vec<((&'static str, String), u64)> {
    COUNTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

#[derive(Default)]
struct Fields {
    code: Option<String>,
    message: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "code" => self.code = Some(value.to_string()),
            "message" => self.message = value.to_string(),
            _ => {}
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "code" => self.code = Some(format!("{value:?}").trim_matches('"').to_string()),
            "message" => self.message = format!("{value:?}"),
            _ => {}
        }
    }
}

/// Counts coded events and forwards warnings and errors to the store writer.
struct CountingLayer;

impl<S: Subscriber> Layer<S> for CountingLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        let severe = level <= Level::WARN;
        let mut f = Fields::default();
        event.record(&mut f);
        let Some(code) = f.code.or_else(|| severe.then(|| "HB-UNCODED".to_string())) else {
            return;
        };
        let level_str = match level {
            Level::ERROR => "ERROR",
            Level::WARN => "WARN",
            Level::INFO => "INFO",
            Level::DEBUG => "DEBUG",
            Level::TRACE => "TRACE",
        };
        *COUNTS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((level_str, code.clone()))
            .or_default() += 1;
        if severe && let Some(tx) = EVENTS.get() {
            let ev = LogEvent {
                ts_ms: chrono::Utc::now().timestamp_millis(),
                level: level_str,
                code,
                message: f.message,
            };
            // Never block the caller: a full queue drops the row (the counter above stays).
            if let Err(TrySendError::Full(_)) = tx.try_send(ev) {}
        }
    }
}

/// Keeps the file writer flushing until dropped.
pub struct LogGuard {
    _file: tracing_appender::non_blocking::WorkerGuard,
    rx: Option<Receiver<LogEvent>>,
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogInitError {
    #[error(transparent)]
    Dir(#[from] std::io::Error),
    #[error(transparent)]
    Appender(#[from] tracing_appender::rolling::InitError),
    #[error(transparent)]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    #[error(transparent)]
    Subscriber(#[from] tracing_subscriber::util::TryInitError),
}

/// Installs the global subscriber. Call once per process.
pub fn init(dir: &Path, level: &str) -> Result<LogGuard, LogInitError> {
    std::fs::create_dir_all(dir)?;
    let appender = tracing_appender::rolling::RollingFileAppender::builder()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix(PREFIX)
        .build(dir)?;
    let (writer, guard) = tracing_appender::non_blocking(appender);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))?;
    let (tx, rx) = sync_channel(10_000);
    let _ = EVENTS.set(tx);
    tracing_subscriber::registry()
        .with(filter)
        .with(CountingLayer)
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_writer(writer),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_writer(std::io::stderr),
        )
        .try_init()?;
    Ok(LogGuard {
        _file: guard,
        rx: Some(rx),
    })
}

impl LogGuard {
    /// Starts the thread that batches warnings/errors into SQLite.
    pub fn start_writer(&mut self, store: Arc<Store>) {
        let Some(rx) = self.rx.take() else { return };
        std::thread::Builder::new()
            .name("log-events".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while batch.len() < 512 {
                        match rx.recv_timeout(Duration::from_millis(5)) {
                            Ok(e) => batch.push(e),
                            Err(_) => break,
                        }
                    }
                    // A failure here cannot be logged as a warning (it would loop back).
                    let _ = store.insert_log_events(&batch);
                }
            })
            .ok();
    }
}

/// What a sweep did.
#[derive(Debug, Default, serde::Serialize, PartialEq)]
pub struct Sweep {
    pub deleted: Vec<String>,
    pub kept: Vec<String>,
}

/// The date in a rotated log file name, when the name matches `^core\.log\.\d{4}-\d{2}-\d{2}$`.
pub fn file_date(name: &str) -> Option<NaiveDate> {
    let date = name.strip_prefix("core.log.")?;
    let b = date.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape {
        return None;
    }
    NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()
}

/// Chooses which rotated files to delete: older than `max_age` (by the date in the name), then
/// the oldest beyond `max_files`. Today's file is always kept; other names are never touched.
pub fn select(names: &[String], today: NaiveDate, max_age: Duration, max_files: usize) -> Sweep {
    let max_age_days = (max_age.as_secs() / 86_400) as i64;
    let mut dated: Vec<(NaiveDate, &String)> = names
        .iter()
        .filter_map(|n| file_date(n).map(|d| (d, n)))
        .collect();
    dated.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(a.1)));
    let mut sweep = Sweep::default();
    let mut kept = 0;
    for (date, name) in dated {
        let age = (today - date).num_days();
        let current = date >= today;
        if current || (age <= max_age_days && kept < max_files) {
            kept += 1;
            sweep.kept.push(name.clone());
        } else {
            sweep.deleted.push(name.clone());
        }
    }
    sweep.deleted.sort();
    sweep.kept.sort();
    sweep
}

/// Runs the sweep over `dir`.
pub fn sweep(dir: &Path, max_age: Duration, max_files: usize) -> std::io::Result<Sweep> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file()
            && let Some(n) = entry.file_name().to_str()
        {
            names.push(n.to_string());
        }
    }
    let today = chrono::Utc::now().date_naive();
    let plan = select(&names, today, max_age, max_files);
    for name in &plan.deleted {
        let p: PathBuf = dir.join(name);
        std::fs::remove_file(&p)?;
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn only_matching_names_are_considered() {
        assert!(file_date("core.log.2025-01-02").is_some());
        for bad in [
            "core.log",
            "core.log.2025-1-02",
            "core.log.2025-01-02.gz",
            "xcore.log.2025-01-02",
            "core.log.2025-13-02",
            "other.log.2025-01-02",
        ] {
            assert!(file_date(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn age_and_count() {
        let names: Vec<String> = [
            "core.log.2025-01-10",
            "core.log.2025-01-09",
            "core.log.2025-01-03",
            "core.log.2025-01-02",
            "core.log.2024-12-01",
            "notes.txt",
            "core.log.2024-12-01.bak",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let week = Duration::from_secs(7 * 86400);
        let s = select(&names, d("2025-01-10"), week, 30);
        assert_eq!(s.deleted, ["core.log.2024-12-01", "core.log.2025-01-02"]);
        assert_eq!(
            s.kept,
            [
                "core.log.2025-01-03",
                "core.log.2025-01-09",
                "core.log.2025-01-10"
            ]
        );
        let s = select(&names, d("2025-01-10"), week, 2);
        assert_eq!(s.kept, ["core.log.2025-01-09", "core.log.2025-01-10"]);
        // Today's file is kept even with max_files 1 and a zero age.
        let s = select(&names, d("2025-01-10"), Duration::ZERO, 1);
        assert_eq!(s.kept, ["core.log.2025-01-10"]);
    }
}
