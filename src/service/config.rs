//! The service configuration: YAML (with positions) → typed [`Config`], every field with a
//! default, unknown fields rejected, and every bad value reported as `file:line:col: field:
//! message`. Loading is pure apart from reading the file.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::units::{Dur, Percent, Size};
use crate::yaml::{self, Pos};

/// The whole configuration. Every field is documented in `docs/configuration.md`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub listen: String,
    pub data_dir: PathBuf,
    /// Where to write the pid once listening (relative to `data_dir`); none by default.
    pub pid_file: Option<PathBuf>,
    pub admin: AdminConfig,
    pub limits: LimitsConfig,
    pub rate_limit: RateLimitConfig,
    pub shedding: SheddingConfig,
    pub query: QueryConfig,
    pub breaker: BreakerConfig,
    pub feed: FeedConfig,
    pub snapshot: SnapshotConfig,
    pub logs: LogsConfig,
    pub store: StoreConfig,
    pub detectors: DetectorsConfig,
    pub seed: Option<SeedConfig>,
    pub faults: FaultsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("data"),
            pid_file: None,
            admin: AdminConfig::default(),
            limits: LimitsConfig::default(),
            rate_limit: RateLimitConfig::default(),
            shedding: SheddingConfig::default(),
            query: QueryConfig::default(),
            breaker: BreakerConfig::default(),
            feed: FeedConfig::default(),
            snapshot: SnapshotConfig::default(),
            logs: LogsConfig::default(),
            store: StoreConfig::default(),
            detectors: DetectorsConfig::default(),
            seed: None,
            faults: FaultsConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Bearer token; the admin API is mounted only when set.
    pub token: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_body: Size,
    pub max_batch: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_body: Size(1 << 20),
            max_batch: 5000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub enabled: bool,
    pub burst: u32,
    pub per_second: u32,
    pub max_clients: usize,
    pub idle_timeout: Dur,
    pub cleanup_interval: Dur,
    /// Peers whose `X-Forwarded-For` is honoured: addresses or CIDR blocks.
    pub trusted_proxies: Vec<String>,
    /// Exact paths that are never limited (`/admin/` is always exempt).
    pub exempt: Vec<String>,
    /// Which accepted answers carry the `RateLimit-*` headers (every 429 does).
    pub headers: Advertise,
}

/// Which accepted answers carry `RateLimit-Limit`, `RateLimit-Remaining` and
/// `RateLimit-Reset`. Every `429` carries them, with `Retry-After`, in both modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Advertise {
    /// Only once at most half the burst remains: a client far from its limit has nothing to
    /// pace, and three headers on every answer cost more than the check itself (the IETF
    /// draft's "Performance Considerations" names this option).
    #[default]
    NearLimit,
    /// On every accepted answer, as GitHub and express-rate-limit send them.
    Always,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            enabled: true,
            burst: 100,
            per_second: 10,
            max_clients: 100_000,
            idle_timeout: Dur::from_secs(60),
            cleanup_interval: Dur::from_secs(10),
            trusted_proxies: Vec::new(),
            exempt: vec!["/healthz".into(), "/readyz".into(), "/metrics".into()],
            headers: Advertise::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SheddingConfig {
    pub enabled: bool,
    pub max_inflight: usize,
}

impl Default for SheddingConfig {
    fn default() -> Self {
        SheddingConfig {
            enabled: true,
            max_inflight: 64,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// `0s` disables the timeout.
    pub timeout: Dur,
    /// Iterations of the deliberately heavy SQL run under the `slow_query` fault.
    pub slow_query_rows: u64,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            timeout: Dur::from_millis(50),
            slow_query_rows: 4_000_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    pub threshold: u32,
    pub reset_timeout: Dur,
    pub call_timeout: Dur,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            threshold: 5,
            reset_timeout: Dur::from_secs(2),
            call_timeout: Dur::from_millis(500),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedConfig {
    /// Upstream URL answering ticks JSON; absent = in-process synthetic source.
    pub url: Option<String>,
    /// `0s` disables periodic polling.
    pub interval: Dur,
}

impl Default for FeedConfig {
    fn default() -> Self {
        FeedConfig {
            url: None,
            interval: Dur::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotConfig {
    pub enabled: bool,
    pub interval: Dur,
    pub dir: PathBuf,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            enabled: true,
            interval: Dur::from_secs(30),
            dir: PathBuf::from("snapshots"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    pub dir: PathBuf,
    /// `info`, `debug`, ... (an `EnvFilter` directive).
    pub level: String,
    pub retention: bool,
    pub max_age: Dur,
    pub max_files: usize,
    pub sweep_interval: Dur,
}

impl Default for LogsConfig {
    fn default() -> Self {
        LogsConfig {
            dir: PathBuf::from("logs"),
            level: "info".into(),
            retention: true,
            max_age: Dur::from_secs(7 * 86400),
            max_files: 30,
            sweep_interval: Dur::from_secs(3600),
        }
    }
}

/// The SQLite store's growth and what happens when it cannot grow.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Prune ticks and log events older than `max_age` (false: the store only grows).
    pub retention: bool,
    pub max_age: Dur,
    /// How often the prune runs (it also runs on `POST /admin/store/prune`).
    pub prune_interval: Dur,
    /// Rows deleted per transaction: the writer is released between batches, so ingest
    /// waits at most one batch.
    pub prune_batch: usize,
    /// A cap on the database's size (SQLite `max_page_count`); none by default. A write past
    /// it is refused exactly as on a full disk.
    pub max_db_bytes: Option<Size>,
    /// Out of space: refuse writes with 507 `store-full` and report the store read-only in
    /// `/readyz` and `/status` (false: the defect — 500 `internal` and still ready).
    pub read_only_when_full: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            retention: true,
            max_age: Dur::from_secs(7 * 86400),
            prune_interval: Dur::from_secs(3600),
            prune_batch: 250,
            max_db_bytes: None,
            read_only_when_full: true,
        }
    }
}

/// The smallest `store.max_db_bytes`: the schema and a little data.
pub const MIN_DB_BYTES: u64 = 64 * 1024;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorsConfig {
    /// The defect: re-create detectors on every build and keep the old ones.
    pub rebuild_per_build: bool,
    /// A second, tunable defect: bytes each graph build allocates, fills and keeps forever
    /// (reachable, resident). `0` = none.
    pub leak_bytes_per_build: Size,
    pub stale_after: Dur,
    pub steam_span: Dur,
    pub steam_min_move: Percent,
    pub correlation_break: f64,
}

impl Default for DetectorsConfig {
    fn default() -> Self {
        DetectorsConfig {
            rebuild_per_build: false,
            leak_bytes_per_build: Size(0),
            stale_after: Dur::from_secs(120),
            steam_span: Dur::from_secs(30),
            steam_min_move: Percent(0.02),
            correlation_break: 0.5,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SeedConfig {
    pub markets: u32,
    pub selections: u32,
    pub venues: u32,
    /// Ticks per (market, selection, venue).
    pub ticks: u32,
}

impl Default for SeedConfig {
    fn default() -> Self {
        SeedConfig {
            markets: 3,
            selections: 3,
            venues: 3,
            ticks: 20,
        }
    }
}

/// Injected faults, for negative controls such as `config/candidate-*.yaml`: all off by
/// default. Applied to the data routes (`/v1/…`) only (see `service::faults`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultsConfig {
    /// Added to every data request; `0s` = none.
    pub latency: Dur,
    pub tail: TailFault,
    pub errors: ErrorFault,
}

/// Extra latency on a random share of the data requests (a tail; the median is unchanged).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TailFault {
    /// Share of the data requests, `0..=1`.
    pub fraction: f64,
    pub latency: Dur,
}

/// A random share of the data requests answered with `status` instead of running the handler.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ErrorFault {
    /// Share of the data requests, `0..=1`.
    pub fraction: f64,
    pub status: u16,
}

impl Default for ErrorFault {
    fn default() -> Self {
        ErrorFault {
            fraction: 0.0,
            status: 500,
        }
    }
}

/// The longest injected latency the config accepts: a fault is a slow service, not a hung one.
pub const MAX_FAULT_LATENCY: Dur = Dur::from_secs(60);

/// One problem in a config, located where the value was written (in the file of an
/// `extends:` chain that wrote it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: usize,
    pub col: usize,
    /// The dotted field (`rate_limit.burst`); empty for the file as a whole.
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sep = if self.field.is_empty() { "" } else { ": " };
        write!(
            f,
            "{}:{}:{}: {}{sep}{}",
            self.file, self.line, self.col, self.field, self.message
        )
    }
}

/// Why a config did not load.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    /// Every problem found, one per line as `file:line:col: field: message`, in file order.
    #[error("{}", .problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid { problems: Vec<Problem> },
}

impl ConfigError {
    fn one(file: &str, pos: Pos, field: &str, message: String) -> Self {
        ConfigError::Invalid {
            problems: vec![Problem {
                file: file.to_string(),
                line: pos.line,
                col: pos.col,
                field: field.to_string(),
                message,
            }],
        }
    }
}

/// The most typing passes `parse` makes (each removes one bad node): a bound, not a limit any
/// real config reaches.
const MAX_PASSES: usize = 200;

impl Config {
    /// Reads and validates a config file, following `extends:` to the files it builds on.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let src = crate::builtin::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Self::parse(&file, &src)
    }

    /// Parses config text. `file` names it in messages and is where a relative `extends:`
    /// is resolved from (the extended files are read from disk). Every problem is reported
    /// at once: a bad value is set aside (its default stands in) and typing goes on, then the
    /// semantic rules run on what remains.
    pub fn parse(file: &str, src: &str) -> Result<Config, ConfigError> {
        let mut layers = Vec::new();
        let mut value = resolve(Path::new(file), src, &mut Vec::new(), &mut layers)?;
        // The layers come extending file first; positions are laid base first, as values are.
        let mut origins = HashMap::new();
        for (i, layer) in layers.iter().enumerate().rev() {
            yaml::overlay(&mut origins, &layer.doc, i);
        }
        let problem = |pointer: &str, field: &str, message: String| {
            let (i, pos) = yaml::locate_merged(&origins, pointer, false, |o| *o).unwrap_or((
                0,
                Pos {
                    line: 1,
                    col: 1,
                    offset: 0,
                },
            ));
            Problem {
                file: layers.get(i).map(|l| l.file.clone()).unwrap_or_default(),
                line: pos.line,
                col: pos.col,
                field: field.trim_start_matches('.').to_string(),
                message,
            }
        };
        let mut problems = Vec::new();
        let mut config = None;
        for _ in 0..MAX_PASSES {
            let e = match serde_path_to_error::deserialize::<_, Config>(value.clone()) {
                Ok(c) => {
                    config = Some(c);
                    break;
                }
                Err(e) => e,
            };
            let mut field = e.path().to_string();
            let mut pointer = yaml::pointer_of(e.path());
            let mut message = e.inner().to_string();
            // serde_json appends nothing positional here, but keep messages short.
            if let Some(i) = message.find(" at line ") {
                message.truncate(i);
            }
            // An unknown field is reported (and set aside) at the field itself.
            if let Some(name) = message
                .strip_prefix("unknown field `")
                .and_then(|m| m.split_once('`'))
                .map(|(n, _)| n.to_string())
            {
                let own = format!("/{}", yaml::escape_token(&name));
                if !pointer.ends_with(&own) {
                    pointer.push_str(&own);
                    field = if field.is_empty() || field == "." {
                        name
                    } else {
                        format!("{field}.{name}")
                    };
                }
            }
            problems.push(problem(&pointer, &field, message));
            if !set_aside(&mut value, &pointer) {
                break;
            }
        }
        if let Some(c) = &config {
            for (field, message) in c.validate() {
                problems.push(problem(&field_pointer(field), field, message.to_string()));
            }
        }
        match config {
            Some(c) if problems.is_empty() => Ok(c),
            _ => {
                problems.sort_by(|a, b| (&a.file, a.line, a.col).cmp(&(&b.file, b.line, b.col)));
                problems.dedup();
                Err(ConfigError::Invalid { problems })
            }
        }
    }

    /// Semantic checks serde cannot express: every problem, as the dotted field and what is
    /// wrong with it.
    pub fn validate(&self) -> Vec<(&'static str, &'static str)> {
        let mut out = Vec::new();
        let positive = "expected a positive integer";
        if self.rate_limit.burst == 0 {
            out.push(("rate_limit.burst", positive));
        }
        if self.rate_limit.per_second == 0 {
            out.push(("rate_limit.per_second", positive));
        }
        if self.rate_limit.max_clients == 0 {
            out.push(("rate_limit.max_clients", positive));
        }
        if self.rate_limit.enabled && self.rate_limit.cleanup_interval.get().is_zero() {
            out.push((
                "rate_limit.cleanup_interval",
                "expected a positive duration",
            ));
        }
        for p in &self.rate_limit.trusted_proxies {
            if parse_cidr(p).is_none() {
                out.push((
                    "rate_limit.trusted_proxies",
                    "expected IP addresses or CIDR blocks such as 10.0.0.0/8",
                ));
            }
        }
        if self.shedding.max_inflight == 0 {
            out.push(("shedding.max_inflight", positive));
        }
        if self.breaker.threshold == 0 {
            out.push(("breaker.threshold", positive));
        }
        if self.breaker.call_timeout.get().is_zero() {
            out.push(("breaker.call_timeout", "expected a positive duration"));
        }
        if self.limits.max_batch == 0 {
            out.push(("limits.max_batch", positive));
        }
        if self.limits.max_body.0 == 0 {
            out.push(("limits.max_body", "expected a positive size"));
        }
        if self.snapshot.enabled && self.snapshot.interval.get().is_zero() {
            out.push(("snapshot.interval", "expected a positive duration"));
        }
        if self.logs.max_files == 0 {
            out.push(("logs.max_files", positive));
        }
        if self.store.retention {
            if self.store.max_age.get() < Duration::from_secs(60) {
                out.push(("store.max_age", "expected at least 1m, e.g. 7d"));
            }
            if self.store.prune_interval.get().is_zero() {
                out.push(("store.prune_interval", "expected a positive duration"));
            }
        }
        if self.store.prune_batch == 0 {
            out.push(("store.prune_batch", positive));
        }
        if self.store.max_db_bytes.is_some_and(|s| s.0 < MIN_DB_BYTES) {
            out.push((
                "store.max_db_bytes",
                "expected at least 64KiB (the schema alone takes a few pages), or null for no cap",
            ));
        }
        if !(0.0..=2.0).contains(&self.detectors.correlation_break) {
            out.push(("detectors.correlation_break", "expected a number in 0..2"));
        }
        let latency = "expected a duration from 0s to 60s, e.g. 20ms";
        let fraction = "expected a fraction from 0 to 1, e.g. 0.05 for 5 % of the data requests";
        let f = &self.faults;
        if f.latency > MAX_FAULT_LATENCY {
            out.push(("faults.latency", latency));
        }
        if f.tail.latency > MAX_FAULT_LATENCY {
            out.push(("faults.tail.latency", latency));
        }
        // `contains` is false for NaN too.
        if !(0.0..=1.0).contains(&f.tail.fraction) {
            out.push(("faults.tail.fraction", fraction));
        }
        if !(0.0..=1.0).contains(&f.errors.fraction) {
            out.push(("faults.errors.fraction", fraction));
        }
        if !(400..=599).contains(&f.errors.status) {
            out.push((
                "faults.errors.status",
                "expected an HTTP error status from 400 to 599, e.g. 500",
            ));
        }
        if let Some(seed) = &self.seed
            && (seed.markets == 0 || seed.selections < 2 || seed.venues == 0 || seed.ticks < 2)
        {
            out.push((
                "seed",
                "expected markets ≥ 1, selections ≥ 2, venues ≥ 1, ticks ≥ 2",
            ));
        }
        out
    }

    /// Resolves a path relative to the data directory.
    pub fn in_data_dir(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.data_dir.join(p)
        }
    }
}

/// One file of an `extends:` chain: its name (as shown in messages) and its positions.
struct Layer {
    file: String,
    doc: yaml::Document,
}

/// Parses `src` (the text of `path`) and, when it has `extends: <file>`, the chain of files it
/// builds on; returns their deep merge (mappings merged key by key, anything else replaced
/// by the extending file) with `extends` removed. `layers` receives every file, the
/// extending one first; `chain` holds the files being resolved, to report cycles.
fn resolve(
    path: &Path,
    src: &str,
    chain: &mut Vec<PathBuf>,
    layers: &mut Vec<Layer>,
) -> Result<serde_json::Value, ConfigError> {
    use serde_json::Value;
    let file = path.display().to_string();
    let doc = yaml::parse(src).map_err(|e| ConfigError::one(&file, e.pos, "", e.message))?;
    let mut value = match &doc.value {
        Value::Null => Value::Object(Default::default()),
        v => v.clone(),
    };
    let extends = value.as_object_mut().and_then(|m| m.remove("extends"));
    let at = doc.locate("/extends");
    layers.push(Layer {
        file: file.clone(),
        doc,
    });
    let Some(extends) = extends else {
        return Ok(value);
    };
    let invalid = |message: String| ConfigError::one(&file, at, "extends", message);
    let rel = match extends {
        Value::String(s) if !s.trim().is_empty() => s,
        _ => return Err(invalid("expected the path of a config file".into())),
    };
    let base = path.parent().unwrap_or(Path::new("")).join(&rel);
    // Cycles are found on canonical paths, so `a.yaml` and `./x/../a.yaml` are the same file.
    let canonical =
        |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| crate::builtin::normalize(p));
    let me = canonical(path);
    let them = canonical(&base);
    chain.push(me);
    if let Some(i) = chain.iter().position(|p| *p == them) {
        let names: Vec<String> = chain[i..]
            .iter()
            .chain(std::iter::once(&them))
            .map(|p| p.display().to_string())
            .collect();
        return Err(invalid(format!("`extends` cycle: {}", names.join(" → "))));
    }
    let base_src = crate::builtin::read_to_string(&base).map_err(|e| {
        invalid(format!(
            "cannot read the extended file `{rel}` ({}): {e}",
            base.display()
        ))
    })?;
    let mut merged = resolve(&base, &base_src, chain, layers)?;
    chain.pop();
    merge(&mut merged, value);
    Ok(merged)
}

/// Deep merge at the JSON level: mappings key by key; sequences and scalars replaced.
fn merge(base: &mut serde_json::Value, over: serde_json::Value) {
    use serde_json::Value;
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// A dotted field of [`Config::validate`] as a JSON Pointer: `rate_limit.exempt[1]` →
/// `/rate_limit/exempt/1`.
fn field_pointer(field: &str) -> String {
    if field.is_empty() || field == "." {
        return String::new();
    }
    let mut out = String::new();
    for part in field.split('.') {
        let (name, rest) = part.split_once('[').unwrap_or((part, ""));
        out.push('/');
        out.push_str(&crate::yaml::escape_token(name));
        for idx in rest.split('[') {
            let idx = idx.trim_end_matches(']');
            if !idx.is_empty() {
                out.push('/');
                out.push_str(idx);
            }
        }
    }
    out
}

/// Removes the node at `pointer` so that typing can go on past it (the field's default stands
/// in). An element of a list takes the whole list with it, so that the indices of the other
/// elements stay as written. Returns whether anything was removed.
fn set_aside(value: &mut serde_json::Value, pointer: &str) -> bool {
    use serde_json::Value;
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return false; // the root itself: nothing to go on with
    };
    match value.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            let key = last.replace("~1", "/").replace("~0", "~");
            map.shift_remove(&key).is_some()
        }
        Some(Value::Array(_)) => set_aside(value, parent),
        _ => false,
    }
}

/// Parses `10.0.0.1` (one address) or a CIDR block such as `10.0.0.0/8` or `fd00::/8`.
/// Spaces around the address and the prefix length are allowed.
pub fn parse_cidr(s: &str) -> Option<IpNet> {
    match s.split_once('/') {
        Some((addr, len)) => format!("{}/{}", addr.trim(), len.trim()).parse().ok(),
        None => s.trim().parse::<IpAddr>().ok().map(IpNet::from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn defaults_and_partial_files() {
        let c = Config::parse("t.yaml", "rate_limit:\n  burst: 7\n").unwrap();
        assert_eq!(c.rate_limit.burst, 7);
        assert_eq!(c.rate_limit.per_second, 10);
        assert_eq!(c.query.timeout, Dur::from_millis(50));
        assert!(Config::parse("t.yaml", "").is_ok());
    }

    #[test]
    fn bad_value_names_field_and_position() {
        let e = Config::parse("c.yaml", "listen: x\nrate_limit:\n  burst: 0\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "c.yaml:3:10: rate_limit.burst: expected a positive integer"
        );
        let e = Config::parse("c.yaml", "rate_limit:\n  burst: lots\n").unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("c.yaml:2:10: rate_limit.burst: "), "{s}");
        let e = Config::parse("c.yaml", "query:\n  timeout: 5 parsecs\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("c.yaml:2:12: query.timeout: invalid duration"),
            "{e}"
        );
    }

    /// Issue 8: the service config meets the policy bar, every problem at once with its
    /// position (it used to stop at the first).
    #[test]
    fn every_problem_is_reported_at_once() {
        let src = "rate_limit:\n  burst: 0\n  brust: 5\nquery:\n  timeout: 5 parsecs\nshedding:\n  max_inflight: 8\n";
        let e = Config::parse("c.yaml", src).unwrap_err();
        let ConfigError::Invalid { problems } = &e else {
            panic!("{e}")
        };
        let got: Vec<(usize, usize, &str)> = problems
            .iter()
            .map(|p| (p.line, p.col, p.field.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (2, 10, "rate_limit.burst"),
                (3, 10, "rate_limit.brust"),
                (5, 12, "query.timeout"),
            ],
            "{e}"
        );
        let text = e.to_string();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(
            text.lines()
                .nth(1)
                .is_some_and(|l| l.contains("unknown field `brust`")),
            "{text}"
        );
        assert!(
            text.lines()
                .nth(2)
                .is_some_and(|l| l.contains("invalid duration")),
            "{text}"
        );
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let e = Config::parse("c.yaml", "rate_limit:\n  brust: 5\n").unwrap_err();
        let s = e.to_string();
        assert!(s.contains("rate_limit") && s.contains("brust"), "{s}");
    }

    /// Writes `files` (name, text) into a fresh directory.
    fn files(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let p = dir.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        dir
    }

    const BASE: &str = "listen: 127.0.0.1:9\nrate_limit:\n  burst: 7\n  per_second: 3\n  exempt: [/a, /b]\nseed:\n  markets: 2\n";

    #[test]
    fn extends_deep_merges_mappings_and_replaces_the_rest() {
        let dir = files(&[
            ("base.yaml", BASE),
            (
                "sub/child.yaml",
                "extends: ../base.yaml\nrate_limit:\n  burst: 9\n  exempt: [/c]\nshedding:\n  enabled: false\n",
            ),
        ]);
        let c = Config::load(&dir.path().join("sub/child.yaml")).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9", "inherited scalar");
        assert_eq!(c.rate_limit.burst, 9, "overridden inside a merged mapping");
        assert_eq!(c.rate_limit.per_second, 3, "sibling kept by the deep merge");
        assert_eq!(
            c.rate_limit.exempt,
            vec!["/c".to_string()],
            "sequence replaced"
        );
        assert!(!c.shedding.enabled);
        assert_eq!(c.seed.unwrap().markets, 2);
        // Chains: a grandchild sees both.
        std::fs::write(
            dir.path().join("sub/grand.yaml"),
            "extends: child.yaml\nlisten: 127.0.0.1:10\n",
        )
        .unwrap();
        let c = Config::load(&dir.path().join("sub/grand.yaml")).unwrap();
        assert_eq!(
            (
                c.listen.as_str(),
                c.rate_limit.burst,
                c.rate_limit.per_second
            ),
            ("127.0.0.1:10", 9, 3)
        );
    }

    #[test]
    fn extends_errors_point_at_the_file_that_wrote_the_value() {
        let dir = files(&[
            ("base.yaml", "rate_limit:\n  burst: 0\n  per_second: 2\n"),
            (
                "child.yaml",
                "extends: base.yaml\n\nrate_limit:\n  enabled: true\n",
            ),
            (
                "fixed.yaml",
                "extends: base.yaml\nrate_limit:\n  burst: 5\n  per_second: 0\n",
            ),
            (
                "typo.yaml",
                "extends: base.yaml\nrate_limit:\n  burst: 3\n  brust: 4\n",
            ),
        ]);
        let base = dir.path().join("base.yaml").display().to_string();
        // The bad value is inherited: reported in the base file.
        let e = Config::load(&dir.path().join("child.yaml")).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{base}:2:10: rate_limit.burst: expected a positive integer")
        );
        // The bad value is the child's own.
        let fixed = dir.path().join("fixed.yaml");
        let e = Config::load(&fixed).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}:4:15: rate_limit.per_second: expected a positive integer",
                fixed.display()
            )
        );
        // An unknown field is located at the field itself.
        let typo = dir.path().join("typo.yaml");
        let e = Config::load(&typo).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}:4:10: ", typo.display())), "{e}");
        assert!(e.contains("brust"), "{e}");
    }

    #[test]
    fn extends_missing_file_and_cycles_are_clear_errors() {
        let dir = files(&[
            ("a.yaml", "# a\nextends: b.yaml\n"),
            ("b.yaml", "extends: ./a.yaml\n"),
            ("self.yaml", "extends: self.yaml\n"),
            ("lost.yaml", "listen: x\nextends: nowhere.yaml\n"),
            ("num.yaml", "extends: 3\n"),
        ]);
        let at = |n: &str| dir.path().join(n).display().to_string();
        let e = Config::load(&dir.path().join("a.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!(
                "{}:1:10: extends: `extends` cycle: ",
                at("b.yaml")
            )),
            "{e}"
        );
        assert!(e.contains("a.yaml → ") && e.ends_with("a.yaml"), "{e}");
        let e = Config::load(&dir.path().join("self.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`extends` cycle"), "{e}");
        let e = Config::load(&dir.path().join("lost.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!(
                "{}:2:10: extends: cannot read the extended file `nowhere.yaml`",
                at("lost.yaml")
            )),
            "{e}"
        );
        let e = Config::load(&dir.path().join("num.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("extends: expected the path of a config file"),
            "{e}"
        );
    }

    #[test]
    fn shipped_profiles_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut paths = vec![root.join("core.yaml"), root.join("before-hardening.yaml")];
        paths.extend(candidates());
        for e in std::fs::read_dir(root.join("regressions")).unwrap() {
            paths.push(e.unwrap().path());
        }
        for p in &paths {
            Config::load(p).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// Every leaf (JSON Pointer → value) of a profile after `extends` is resolved.
    fn leaves(path: &Path) -> BTreeMap<String, serde_json::Value> {
        fn walk(v: &serde_json::Value, at: String, out: &mut BTreeMap<String, serde_json::Value>) {
            match v {
                serde_json::Value::Object(m) => {
                    for (k, v) in m {
                        walk(v, format!("{at}/{k}"), out);
                    }
                }
                v => {
                    out.insert(at, v.clone());
                }
            }
        }
        let src = std::fs::read_to_string(path).unwrap();
        let v = resolve(path, &src, &mut Vec::new(), &mut Vec::new()).unwrap();
        let mut out = BTreeMap::new();
        walk(&v, String::new(), &mut out);
        out
    }

    /// Guards the regression matrix: each profile in `config/regressions/` differs from
    /// `core.yaml` in exactly one field (its defect).
    #[test]
    fn each_regression_profile_changes_exactly_one_field() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let core = leaves(&root.join("core.yaml"));
        for e in std::fs::read_dir(root.join("regressions")).unwrap() {
            let p = e.unwrap().path();
            let prof = leaves(&p);
            let changed: Vec<&String> = prof
                .keys()
                .chain(core.keys())
                .filter(|k| prof.get(*k) != core.get(*k))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            assert_eq!(changed.len(), 1, "{}: {changed:?}", p.display());
        }
    }

    /// The canary's negative controls, `config/candidate-*.yaml`.
    fn candidates() -> Vec<PathBuf> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut out: Vec<PathBuf> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("candidate-") && n.ends_with(".yaml"))
            })
            .collect();
        out.sort();
        out
    }

    /// Guards the canary's negative controls (issue 9): each candidate profile is `core.yaml`
    /// plus injected faults and nothing else, and injects some.
    #[test]
    fn each_candidate_profile_is_core_plus_faults_only() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let core = leaves(&root.join("core.yaml"));
        let paths = candidates();
        let names: Vec<_> = paths
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "candidate-errors.yaml",
                "candidate-slow.yaml",
                "candidate-tail.yaml"
            ]
        );
        for p in &paths {
            let prof = leaves(p);
            let changed: std::collections::BTreeSet<&String> = prof
                .keys()
                .chain(core.keys())
                .filter(|k| prof.get(*k) != core.get(*k))
                .collect();
            assert!(!changed.is_empty(), "{}", p.display());
            assert!(
                changed.iter().all(|k| k.starts_with("/faults/")),
                "{}: {changed:?}",
                p.display()
            );
        }
        let load = |n: &str| Config::load(&root.join(n)).unwrap().faults;
        assert_eq!(load("candidate-slow.yaml").latency, Dur::from_millis(20));
        let tail = load("candidate-tail.yaml").tail;
        assert_eq!((tail.fraction, tail.latency), (0.05, Dur::from_millis(200)));
        let errors = load("candidate-errors.yaml").errors;
        assert_eq!((errors.fraction, errors.status), (0.02, 500));
    }

    /// Every bad `faults` value at once, each at its position with what to write instead.
    #[test]
    fn faults_are_validated_with_positions_and_fixes() {
        let src = "faults:\n  latency: 61s\n  tail:\n    fraction: 1.5\n    latency: 2m\n  errors:\n    fraction: -0.1\n    status: 200\n";
        let e = Config::parse("c.yaml", src).unwrap_err().to_string();
        let fraction = "expected a fraction from 0 to 1, e.g. 0.05 for 5 % of the data requests";
        let latency = "expected a duration from 0s to 60s, e.g. 20ms";
        assert_eq!(
            e.lines().collect::<Vec<_>>(),
            [
                format!("c.yaml:2:12: faults.latency: {latency}"),
                format!("c.yaml:4:15: faults.tail.fraction: {fraction}"),
                format!("c.yaml:5:14: faults.tail.latency: {latency}"),
                format!("c.yaml:7:15: faults.errors.fraction: {fraction}"),
                "c.yaml:8:13: faults.errors.status: expected an HTTP error status from 400 to 599, e.g. 500".to_string(),
            ],
            "{e}"
        );
        // The bounds themselves are allowed.
        let ok = "faults:\n  latency: 60s\n  tail: {fraction: 1, latency: 0s}\n  errors: {fraction: 0, status: 599}\n";
        Config::parse("c.yaml", ok).unwrap_or_else(|e| panic!("{e}"));
        Config::parse("c.yaml", "faults:\n  errors: {fraction: 1, status: 400}\n")
            .unwrap_or_else(|e| panic!("{e}"));
        // Unknown keys and wrong types are typing errors, at the key.
        let e = Config::parse("c.yaml", "faults:\n  tail:\n    fractoin: 0.1\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("c.yaml:3:15: faults.tail.fractoin: unknown field `fractoin`"),
            "{e}"
        );
        let e = Config::parse("c.yaml", "faults:\n  errors:\n    status: oops\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("c.yaml:3:13: faults.errors.status: "), "{e}");
    }

    #[test]
    fn field_paths_become_pointers() {
        assert_eq!(field_pointer(""), "");
        assert_eq!(field_pointer("rate_limit.burst"), "/rate_limit/burst");
        assert_eq!(
            field_pointer("rate_limit.exempt[1]"),
            "/rate_limit/exempt/1"
        );
    }

    #[test]
    fn cidr() {
        let net = parse_cidr("10.0.0.0/8").unwrap();
        assert!(net.contains(&"10.2.3.4".parse::<IpAddr>().unwrap()));
        assert!(!net.contains(&"11.2.3.4".parse::<IpAddr>().unwrap()));
        let one = parse_cidr(" 127.0.0.1 ").unwrap();
        assert!(one.contains(&"127.0.0.1".parse::<IpAddr>().unwrap()));
        assert!(!one.contains(&"127.0.0.2".parse::<IpAddr>().unwrap()));
        // Host bits set: the block is still the /8.
        assert_eq!(parse_cidr("10.1.2.3 / 8").unwrap().trunc(), net);
        let v6 = parse_cidr("fd00::/8").unwrap();
        assert!(v6.contains(&"fd12::1".parse::<IpAddr>().unwrap()));
        assert!(!v6.contains(&"10.2.3.4".parse::<IpAddr>().unwrap()));
        assert!(parse_cidr("10.0.0.0/33").is_none());
        assert!(parse_cidr("nope").is_none());
        assert!(parse_cidr("10.0.0.0/").is_none());
    }
}
