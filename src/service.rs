//! The bundled core service (`preflight serve`): a market price-correlation service that
//! implements every hardening feature for real. It is preflight's default target.
//!
//! It must not import anything from the rest of preflight except the leaf utilities
//! [`crate::units`], [`crate::yaml`] and [`crate::http_client`]: checks see it only over
//! HTTP, signals and files, as they see a user's service. It never prints: [`start`] returns
//! the bound address and the CLI announces it.

pub mod admin;
pub mod breaker;
pub mod config;
pub mod detectors;
pub mod error;
pub mod faults;
pub mod feed;
pub mod graph;
pub mod logs;
pub mod metrics;
pub mod pidfile;
pub mod ratelimit;
pub mod routes;
pub mod snapshot;
pub mod status;
pub mod store;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use rand::{RngExt, SeedableRng};
use tokio::sync::Semaphore;

pub use config::Config;
pub use status::{StatusError, status_line};

use self::admin::Faults;
use self::breaker::Breaker;
use self::detectors::Detectors;
use self::metrics::Metrics;
use self::ratelimit::Limiter;
use self::snapshot::{GraphSummary, SnapshotFile};
use self::store::{Store, Tick};

/// Options of `preflight serve`, each overriding the config file.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub config: PathBuf,
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    /// Where to write the pid once listening (relative to the working directory).
    pub pid_file: Option<PathBuf>,
    pub admin_token: Option<String>,
}

/// Why the service could not start, or stopped on an error. Each variant says what was being
/// done; the cause is its `source()`.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("creating {}", path.display())]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Logs(#[from] logs::LogInitError),
    #[error("opening the SQLite store {}{}", path.display(), store_hint(source))]
    Store {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("binding {listen}")]
    Bind {
        listen: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the snapshot")]
    Snapshot(#[source] std::io::Error),
    #[error(transparent)]
    PidFile(#[from] pidfile::PidFileError),
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Write(#[from] store::WriteError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Join(#[from] tokio::task::JoinError),
}

/// What to do about a store that does not open, when the cause says.
fn store_hint(e: &rusqlite::Error) -> &'static str {
    use rusqlite::ErrorCode::{CannotOpen, DatabaseCorrupt, NotADatabase, PermissionDenied};
    match e.sqlite_error_code() {
        Some(NotADatabase | DatabaseCorrupt) => {
            ": the file is not a SQLite database or is corrupt; restore it from a backup, or move \
             it aside to start with an empty store"
        }
        Some(CannotOpen | PermissionDenied) => {
            ": check that the data directory exists and this user may read and write it"
        }
        _ => "",
    }
}

/// Snapshot bookkeeping.
#[derive(Default)]
pub struct SnapshotInfo {
    pub generation: AtomicU64,
    pub last_at_ms: AtomicI64,
    pub restored_generation: Mutex<Option<u64>>,
}

/// Everything the handlers share.
pub struct AppState {
    pub cfg: Config,
    pub store: Arc<Store>,
    pub metrics: Metrics,
    pub limiter: Option<Limiter>,
    pub shed: Option<Arc<Semaphore>>,
    pub faults: RwLock<Faults>,
    pub breaker: Mutex<Breaker>,
    pub detectors: Mutex<Detectors>,
    pub graph: Mutex<Option<GraphSummary>>,
    pub snapshot: SnapshotInfo,
    /// The last store prune (`/status` `store.retention.last_prune`).
    pub last_prune: Mutex<Option<store::Pruned>>,
    pub started: Instant,
    pub ready: AtomicBool,
    pub http: reqwest::Client,
    /// Serialises snapshot writers.
    pub snapshot_lock: tokio::sync::Mutex<()>,
}

pub type Shared = Arc<AppState>;

impl AppState {
    /// Builds the state over an opened store. `cfg.data_dir` must exist.
    pub fn new(cfg: Config, store: Arc<Store>) -> AppState {
        let limiter = cfg
            .rate_limit
            .enabled
            .then(|| Limiter::new(&cfg.rate_limit));
        let shed = cfg
            .shedding
            .enabled
            .then(|| Arc::new(Semaphore::new(cfg.shedding.max_inflight)));
        AppState {
            breaker: Mutex::new(Breaker::new(
                cfg.breaker.threshold,
                cfg.breaker.reset_timeout.get(),
            )),
            detectors: Mutex::new(Detectors::new(cfg.detectors.clone())),
            metrics: Metrics::default(),
            limiter,
            shed,
            faults: RwLock::new(Faults::default()),
            graph: Mutex::new(None),
            snapshot: SnapshotInfo::default(),
            last_prune: Mutex::new(None),
            started: Instant::now(),
            ready: AtomicBool::new(false),
            http: crate::http_client::client(),
            snapshot_lock: tokio::sync::Mutex::new(()),
            store,
            cfg,
        }
    }

    pub fn snapshot_dir(&self) -> PathBuf {
        self.cfg.in_data_dir(&self.cfg.snapshot.dir)
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.cfg.in_data_dir(&self.cfg.logs.dir)
    }

    /// Restores the last snapshot, if any.
    pub fn restore_snapshot(&self) -> Result<(), ServeError> {
        if !self.cfg.snapshot.enabled {
            return Ok(());
        }
        if let Some(s) = snapshot::read(&self.snapshot_dir()).map_err(ServeError::Snapshot)? {
            let mut d = lock(&self.detectors);
            d.restore(&s.detectors);
            d.builds = s.builds;
            d.last = s.detections;
            *lock(&self.graph) = s.graph;
            self.snapshot
                .generation
                .store(s.generation, Ordering::Relaxed);
            self.snapshot
                .last_at_ms
                .store(s.saved_at_ms, Ordering::Relaxed);
            *lock(&self.snapshot.restored_generation) = Some(s.generation);
            tracing::info!(
                code = "HB-SNAP-RESTORED",
                generation = s.generation,
                "snapshot restored"
            );
        }
        Ok(())
    }

    /// Writes a snapshot now (blocking I/O: call from `spawn_blocking`).
    pub fn write_snapshot(&self) -> std::io::Result<(u64, PathBuf, u64)> {
        let generation = self.snapshot.generation.load(Ordering::Relaxed) + 1;
        let now = now_ms();
        let file = {
            let d = lock(&self.detectors);
            SnapshotFile {
                generation,
                saved_at_ms: now,
                builds: d.builds,
                graph: lock(&self.graph).clone(),
                detectors: d.save(),
                detections: d.last.clone(),
            }
        };
        let (path, bytes) = snapshot::write(&self.snapshot_dir(), &file)?;
        self.snapshot
            .generation
            .store(generation, Ordering::Relaxed);
        self.snapshot.last_at_ms.store(now, Ordering::Relaxed);
        self.metrics.snapshots.fetch_add(1, Ordering::Relaxed);
        Ok((generation, path, bytes))
    }

    /// Seeds synthetic ticks (markets m1..mN) ending now.
    pub fn seed(&self) -> Result<usize, store::WriteError> {
        let Some(seed) = &self.cfg.seed else {
            return Ok(0);
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let now = now_ms();
        let mut ticks = Vec::new();
        for m in 1..=seed.markets {
            for s in 1..=seed.selections {
                let base = 1.5 + f64::from(s) * 0.8;
                for v in 1..=seed.venues {
                    let mut price = base * (1.0 + 0.02 * f64::from(v));
                    for k in 0..seed.ticks {
                        let ts = now - i64::from(seed.ticks - k) * 1000;
                        // A shared drift per (market, tick) makes selections co-move.
                        let drift = ((f64::from(k) + f64::from(m)) * 0.7).sin() * 0.01;
                        price = (price * (1.0 + drift + rng.random_range(-0.004..0.004))).max(1.01);
                        // The last tick of s1 steams in at every venue.
                        let p = if s == 1 && k + 1 == seed.ticks {
                            price * 0.9
                        } else {
                            price
                        };
                        ticks.push(Tick {
                            id: None,
                            venue: format!("v{v}"),
                            market: format!("m{m}"),
                            selection: format!("s{s}"),
                            price: p.max(1.01),
                            ts_ms: Some(ts),
                        });
                    }
                }
            }
        }
        let n = self.store.insert_ticks(&ticks, now)?;
        Ok(n)
    }
}

/// Locks a std mutex, ignoring poisoning (the protected data stays usable).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The router with every route and layer; no socket, no background tasks.
pub fn app(state: Shared) -> Router {
    routes::router(state)
}

/// Loads the config and applies the command-line overrides.
pub fn load_config(opts: &ServeOptions) -> Result<Config, config::ConfigError> {
    let mut cfg = Config::load(&opts.config)?;
    if let Some(l) = &opts.listen {
        cfg.listen = l.clone();
    }
    if let Some(d) = &opts.data_dir {
        cfg.data_dir = d.clone();
    } else if cfg.data_dir.is_relative() {
        // Relative data dirs in a config file are relative to the file's directory.
        if let Some(parent) = opts.config.parent() {
            cfg.data_dir = parent.join(&cfg.data_dir);
        }
    }
    if let Some(t) = &opts.admin_token {
        cfg.admin.token = Some(t.clone()).filter(|t| !t.is_empty());
    }
    // The flag is relative to the working directory, the config field to `data_dir`; the
    // result is absolute either way when it matters (the service does not change directory).
    cfg.pid_file = match &opts.pid_file {
        Some(p) => Some(p.clone()),
        None => cfg.pid_file.as_ref().map(|p| cfg.in_data_dir(p)),
    };
    Ok(cfg)
}

/// A service that is bound and ready but not serving yet, from [`start`]. The caller
/// announces [`Started::local_addr`] (the CLI prints `listening on http://ADDR` as the first
/// stdout line: the library never prints), then calls [`Started::run`].
pub struct Started {
    state: Shared,
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    /// Synthetic ticks seeded at start (logged with `HB-START`).
    seeded: usize,
    // Field order is drop order: the socket goes before the runtime, and the runtime stops
    // before the log writer's last flush.
    rt: tokio::runtime::Runtime,
    guard: logs::LogGuard,
}

/// Loads the config, sets up logging, opens the store, binds the listen address, restores the
/// snapshot and seeds: everything before the first request. No request is answered until
/// [`Started::run`].
pub fn start(opts: ServeOptions) -> Result<Started, ServeError> {
    let cfg = load_config(&opts)?;
    std::fs::create_dir_all(&cfg.data_dir).map_err(|source| ServeError::DataDir {
        path: cfg.data_dir.clone(),
        source,
    })?;
    let mut guard = logs::init(&cfg.in_data_dir(&cfg.logs.dir), &cfg.logs.level)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (state, listener, addr, seeded) = rt.block_on(bind(cfg, &mut guard))?;
    Ok(Started {
        state,
        listener,
        addr,
        seeded,
        rt,
        guard,
    })
}

impl Started {
    /// The address the service is bound to (the actual port when the config said port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until SIGTERM or Ctrl-C, then drains and writes the final snapshot.
    pub fn run(self) -> Result<(), ServeError> {
        let Started {
            state,
            listener,
            addr,
            seeded,
            rt,
            guard,
        } = self;
        let result = rt.block_on(run(state, listener, addr, seeded));
        drop(rt);
        drop(guard);
        result
    }
}

async fn bind(
    cfg: Config,
    guard: &mut logs::LogGuard,
) -> Result<(Shared, tokio::net::TcpListener, SocketAddr, usize), ServeError> {
    let path = db_path(&cfg.data_dir);
    let opts = store::Options {
        max_db_bytes: cfg.store.max_db_bytes.map(|s| s.0),
        read_only_when_full: cfg.store.read_only_when_full,
    };
    let store = Arc::new(
        Store::open_with(&path, opts).map_err(|source| ServeError::Store { path, source })?,
    );
    guard.start_writer(store.clone());
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .map_err(|source| ServeError::Bind {
            listen: cfg.listen.clone(),
            source,
        })?;
    let addr = listener.local_addr()?;
    let state: Shared = Arc::new(AppState::new(cfg, store));
    state.restore_snapshot()?;
    // On a full disk the service starts read-only (reads, `/status` and `/metrics` serve;
    // `/readyz` says why) instead of refusing to start: under a supervisor that would be a
    // crash loop exactly when an operator needs the service's answers.
    // Whether there is space at all: a write that needs new pages (updates in place below
    // would succeed on a full disk and prove nothing).
    tolerate_full(state.store.probe_space())?;
    let seeded = tolerate_full(state.seed())?.unwrap_or(0);
    let started = now_ms().to_string();
    for (key, value) in [
        ("started_at_ms", started.as_str()),
        ("heartbeat_ms", &started),
        ("stopped_at_ms", ""),
        ("breaker.feed", "closed"),
    ] {
        tolerate_full(state.store.set_meta(key, value))?;
    }
    if state.store.is_read_only() {
        tracing::error!(
            code = "HB-STORE-FULL",
            db = %db_path(&state.cfg.data_dir).display(),
            "starting read-only: the store is full; writes get 507 until space returns"
        );
    }
    state.ready.store(true, Ordering::Relaxed);
    Ok((state, listener, addr, seeded))
}

async fn run(
    state: Shared,
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    seeded: usize,
) -> Result<(), ServeError> {
    // After the address line (the caller printed it before calling `run`, still the first
    // stdout line) and before serving: once `/readyz` answers, the pid file names this
    // process. Dropped (removed) on a graceful exit or an error below; a kill -9 leaves it.
    let _pid_file = match &state.cfg.pid_file {
        Some(p) => Some(pidfile::PidFile::write(p, std::process::id())?),
        None => None,
    };
    tracing::info!(code = "HB-START", %addr, seeded, "core service listening");
    faults::announce(&state.cfg.faults);
    let tasks = spawn_background(state.clone());
    let app = app(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    for t in tasks {
        t.abort();
    }
    tracing::info!(
        code = "HB-STOP",
        "draining done; writing the final snapshot"
    );
    if state.cfg.snapshot.enabled {
        let s = state.clone();
        match tokio::task::spawn_blocking(move || s.write_snapshot()).await? {
            Ok((generation, ..)) => {
                tracing::info!(code = "HB-SNAP", generation, "snapshot written")
            }
            Err(e) => tracing::error!(code = "HB-SNAP-FAIL", error = %e, "final snapshot failed"),
        }
    }
    tolerate_full(state.store.set_meta("stopped_at_ms", &now_ms().to_string()))?;
    Ok(())
}

/// A write at start that found the store full is not fatal (the store is read-only now and
/// says so); any other error is.
fn tolerate_full<T>(r: Result<T, store::WriteError>) -> Result<Option<T>, store::WriteError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(store::WriteError::Full(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn every(
    period: Duration,
    state: Shared,
    f: fn(Shared) -> futures_lite::BoxFuture,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            f(state.clone()).await;
        }
    })
}

/// A boxed future without pulling in the `futures` crate.
mod futures_lite {
    pub type BoxFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
}

fn spawn_background(state: Shared) -> Vec<tokio::task::JoinHandle<()>> {
    let cfg = &state.cfg;
    let mut tasks = Vec::new();
    if cfg.rate_limit.enabled {
        tasks.push(every(
            cfg.rate_limit.cleanup_interval.get(),
            state.clone(),
            |s| Box::pin(limiter_cleanup(s)),
        ));
    }
    if !cfg.feed.interval.get().is_zero() {
        tasks.push(every(cfg.feed.interval.get(), state.clone(), |s| {
            Box::pin(async move {
                feed::poll_once(&s).await;
            })
        }));
    }
    if cfg.snapshot.enabled {
        tasks.push(every(cfg.snapshot.interval.get(), state.clone(), |s| {
            Box::pin(async move {
                let _ = admin::snapshot_now(&s).await;
            })
        }));
    }
    if cfg.logs.retention && !cfg.logs.sweep_interval.get().is_zero() {
        tasks.push(every(cfg.logs.sweep_interval.get(), state.clone(), |s| {
            Box::pin(async move {
                let _ = admin::sweep_now(&s).await;
            })
        }));
    }
    if cfg.store.retention {
        tasks.push(every(cfg.store.prune_interval.get(), state.clone(), |s| {
            Box::pin(async move {
                let _ = admin::prune_now(&s).await;
            })
        }));
    }
    // A read-only store finds out by itself that space came back.
    tasks.push(every(Duration::from_secs(1), state.clone(), |s| {
        Box::pin(async move {
            if s.store.is_read_only() {
                let st = s.store.clone();
                let _ = tokio::task::spawn_blocking(move || st.probe_space()).await;
            }
        })
    }));
    tasks.push(every(Duration::from_secs(5), state, |s| {
        Box::pin(async move {
            let st = s.store.clone();
            let _ = tokio::task::spawn_blocking(move || {
                st.set_meta("heartbeat_ms", &now_ms().to_string())
            })
            .await;
        })
    }));
    tasks
}

/// Drops idle buckets and logs one summary of the rejections since the last run.
async fn limiter_cleanup(state: Shared) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let Some(l) = &state.limiter else { return };
    l.cleanup();
    let total = l.rejections.load(Ordering::Relaxed);
    let prev = LAST.swap(total, Ordering::Relaxed);
    if total > prev {
        tracing::warn!(
            code = "HB-RL-REJECT",
            rejected = total - prev,
            tracked = l.tracked(),
            "rate limiter rejected requests since the last summary"
        );
    }
}

/// Random-ish synthetic ticks for the in-process feed.
pub fn synthetic_ticks(n: usize) -> Vec<Tick> {
    let mut rng = rand::rng();
    let now = now_ms();
    (0..n)
        .map(|i| Tick {
            id: None,
            venue: format!("v{}", 1 + i % 3),
            market: "m1".into(),
            selection: format!("s{}", 1 + (i / 3) % 3),
            price: rng.random_range(1.8..4.5),
            ts_ms: Some(now),
        })
        .collect()
}

/// The data directory's SQLite file.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("core.db")
}
