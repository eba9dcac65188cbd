//! The service configuration: YAML (with positions) → typed [`Config`], every field with a
//! default, unknown fields rejected, and every bad value reported as `file:line:col: field:
//! message`. Loading is pure apart from reading the file.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::units::{Dur, Percent, Size};

/// The whole configuration. Every field is documented in `docs/configuration.md`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub listen: String,
    pub data_dir: PathBuf,
    pub admin: AdminConfig,
    pub limits: LimitsConfig,
    pub rate_limit: RateLimitConfig,
    pub shedding: SheddingConfig,
    pub query: QueryConfig,
    pub breaker: BreakerConfig,
    pub feed: FeedConfig,
    pub snapshot: SnapshotConfig,
    pub logs: LogsConfig,
    pub detectors: DetectorsConfig,
    pub seed: Option<SeedConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("data"),
            admin: AdminConfig::default(),
            limits: LimitsConfig::default(),
            rate_limit: RateLimitConfig::default(),
            shedding: SheddingConfig::default(),
            query: QueryConfig::default(),
            breaker: BreakerConfig::default(),
            feed: FeedConfig::default(),
            snapshot: SnapshotConfig::default(),
            logs: LogsConfig::default(),
            detectors: DetectorsConfig::default(),
            seed: None,
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorsConfig {
    /// The defect: re-create detectors on every build and keep the old ones.
    pub rebuild_per_build: bool,
    pub stale_after: Dur,
    pub steam_span: Dur,
    pub steam_min_move: Percent,
    pub correlation_break: f64,
}

impl Default for DetectorsConfig {
    fn default() -> Self {
        DetectorsConfig {
            rebuild_per_build: false,
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

/// A configuration problem located in the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}:{line}:{col}: {field}{sep}{message}", sep = if field.is_empty() { "" } else { ": " })]
    Invalid {
        file: String,
        line: usize,
        col: usize,
        field: String,
        message: String,
    },
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let src = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Self::parse(&file, &src)
    }

    /// Parses config text; `file` is only used in messages.
    pub fn parse(file: &str, src: &str) -> Result<Config, ConfigError> {
        let doc = crate::yaml::parse(src).map_err(|e| ConfigError::Invalid {
            file: file.into(),
            line: e.pos.line,
            col: e.pos.col,
            field: String::new(),
            message: e.message,
        })?;
        let value = match doc.value {
            serde_json::Value::Null => serde_json::json!({}),
            ref v => v.clone(),
        };
        let invalid = |field: &str, message: String| {
            let pointer = if field.is_empty() || field == "." {
                String::new()
            } else {
                format!("/{}", field.replace('.', "/"))
            };
            let pos = doc.locate(&pointer);
            ConfigError::Invalid {
                file: file.into(),
                line: pos.line,
                col: pos.col,
                field: field.trim_start_matches('.').to_string(),
                message,
            }
        };
        let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let field = e.path().to_string();
            let mut message = e.inner().to_string();
            // serde_json appends nothing positional here, but keep messages short.
            if let Some(i) = message.find(" at line ") {
                message.truncate(i);
            }
            invalid(&field, message)
        })?;
        if let Err((field, message)) = config.validate() {
            return Err(invalid(field, message.to_string()));
        }
        Ok(config)
    }

    /// Semantic checks serde cannot express. Returns the dotted field and the problem.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        let positive = "expected a positive integer";
        if self.rate_limit.burst == 0 {
            return Err(("rate_limit.burst", positive));
        }
        if self.rate_limit.per_second == 0 {
            return Err(("rate_limit.per_second", positive));
        }
        if self.rate_limit.max_clients == 0 {
            return Err(("rate_limit.max_clients", positive));
        }
        if self.rate_limit.enabled && self.rate_limit.cleanup_interval.get().is_zero() {
            return Err((
                "rate_limit.cleanup_interval",
                "expected a positive duration",
            ));
        }
        for p in &self.rate_limit.trusted_proxies {
            if parse_cidr(p).is_none() {
                return Err((
                    "rate_limit.trusted_proxies",
                    "expected IP addresses or CIDR blocks such as 10.0.0.0/8",
                ));
            }
        }
        if self.shedding.max_inflight == 0 {
            return Err(("shedding.max_inflight", positive));
        }
        if self.breaker.threshold == 0 {
            return Err(("breaker.threshold", positive));
        }
        if self.breaker.call_timeout.get().is_zero() {
            return Err(("breaker.call_timeout", "expected a positive duration"));
        }
        if self.limits.max_batch == 0 {
            return Err(("limits.max_batch", positive));
        }
        if self.limits.max_body.0 == 0 {
            return Err(("limits.max_body", "expected a positive size"));
        }
        if self.snapshot.enabled && self.snapshot.interval.get().is_zero() {
            return Err(("snapshot.interval", "expected a positive duration"));
        }
        if self.logs.max_files == 0 {
            return Err(("logs.max_files", positive));
        }
        if !(0.0..=2.0).contains(&self.detectors.correlation_break) {
            return Err(("detectors.correlation_break", "expected a number in 0..2"));
        }
        if let Some(seed) = &self.seed
            && (seed.markets == 0 || seed.selections < 2 || seed.venues == 0 || seed.ticks < 2)
        {
            return Err((
                "seed",
                "expected markets ≥ 1, selections ≥ 2, venues ≥ 1, ticks ≥ 2",
            ));
        }
        Ok(())
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

/// Parses `10.0.0.1` or `10.0.0.0/8` into (network, prefix length).
pub fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a.trim(), Some(l.trim().parse::<u8>().ok()?)),
        None => (s.trim(), None),
    };
    let ip: IpAddr = addr.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = len.unwrap_or(max);
    (len <= max).then_some((ip, len))
}

/// Whether `ip` lies in the block `(net, len)`.
pub fn cidr_contains((net, len): (IpAddr, u8), ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn unknown_fields_are_rejected() {
        let e = Config::parse("c.yaml", "rate_limit:\n  brust: 5\n").unwrap_err();
        let s = e.to_string();
        assert!(s.contains("rate_limit") && s.contains("brust"), "{s}");
    }

    #[test]
    fn cidr() {
        let net = parse_cidr("10.0.0.0/8").unwrap();
        assert!(cidr_contains(net, "10.2.3.4".parse().unwrap()));
        assert!(!cidr_contains(net, "11.2.3.4".parse().unwrap()));
        assert!(cidr_contains(
            parse_cidr("127.0.0.1").unwrap(),
            "127.0.0.1".parse().unwrap()
        ));
        assert!(parse_cidr("10.0.0.0/33").is_none());
        assert!(parse_cidr("nope").is_none());
    }
}
