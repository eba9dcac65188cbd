//! Human-written quantities used by policies and service configs: durations (`50ms`, `2s`,
//! `7d`), sizes (`256B`, `4KiB`), rates (`10/s`) and percentages (`5%`).
//!
//! Each type parses from a string (numbers are accepted where unambiguous), prints back in
//! the same notation, and describes itself in the JSON Schema. Parsing is pure.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// FNV-1a (64 bits) of `bytes`: the one stable hash that splits keys (the live canary's
/// sticky buckets, fleet shards). The same on every machine, process and release, unlike
/// std's `DefaultHasher`; not for anything an attacker chooses to collide.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Why a quantity did not parse; the message says what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnitError(pub String);

macro_rules! string_unit {
    ($ty:ident, $name:literal, $desc:literal, $pattern:literal, [$($ex:literal),*]) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let v = serde_json::Value::deserialize(d)?;
                let text = match &v {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Number(n) => n.to_string(),
                    other => {
                        return Err(serde::de::Error::custom(format!(
                            "expected a {} such as {}, found {other}",
                            $name, [$($ex),*].join(" or ")
                        )))
                    }
                };
                text.parse().map_err(|e: UnitError| serde::de::Error::custom(e.0))
            }
        }
        impl JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($ty).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({
                    "type": ["string", "number"],
                    "description": $desc,
                    "pattern": $pattern,
                    "examples": [$($ex),*]
                })
            }
        }
    };
}

/// A duration written with a unit: `250us`, `50ms`, `2s`, `1.5s`, `5m`, `1h`, `7d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn from_millis(ms: u64) -> Self {
        Dur(Duration::from_millis(ms))
    }
    pub const fn from_secs(s: u64) -> Self {
        Dur(Duration::from_secs(s))
    }
    pub fn get(self) -> Duration {
        self.0
    }
}

impl From<Duration> for Dur {
    fn from(d: Duration) -> Self {
        Dur(d)
    }
}

fn split_number(s: &str) -> Option<(f64, &str)> {
    let s = s.trim();
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(end);
    let n: f64 = num.parse().ok()?;
    n.is_finite().then_some((n, unit.trim()))
}

impl FromStr for Dur {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        let bad = || {
            UnitError(format!(
                "invalid duration `{s}`: write a number and a unit (us, ms, s, m, h, d), e.g. `50ms`, `2s`, `7d`"
            ))
        };
        let (n, unit) = split_number(s).ok_or_else(bad)?;
        let secs = match unit {
            "us" | "µs" => n / 1e6,
            "ms" => n / 1e3,
            "s" => n,
            "m" | "min" => n * 60.0,
            "h" => n * 3600.0,
            "d" => n * 86400.0,
            "" if n == 0.0 => 0.0,
            _ => return Err(bad()),
        };
        if secs > 1e9 {
            return Err(UnitError(format!("duration `{s}` is too long")));
        }
        Ok(Dur(Duration::from_secs_f64(secs)))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        let ns = d.as_nanos();
        let (v, u) = if ns == 0 {
            return f.write_str("0s");
        } else if ns.is_multiple_of(86_400_000_000_000) {
            (ns / 86_400_000_000_000, "d")
        } else if ns.is_multiple_of(3_600_000_000_000) {
            (ns / 3_600_000_000_000, "h")
        } else if ns.is_multiple_of(60_000_000_000) {
            (ns / 60_000_000_000, "m")
        } else if ns.is_multiple_of(1_000_000_000) {
            (ns / 1_000_000_000, "s")
        } else if ns.is_multiple_of(1_000_000) {
            (ns / 1_000_000, "ms")
        } else if ns.is_multiple_of(1_000) {
            (ns / 1_000, "us")
        } else {
            return write!(f, "{}ms", d.as_secs_f64() * 1e3);
        };
        write!(f, "{v}{u}")
    }
}

string_unit!(
    Dur,
    "duration",
    "A duration: a number and a unit (us, ms, s, m, h, d).",
    r"^\s*[0-9]+(\.[0-9]+)?\s*(us|µs|ms|s|m|min|h|d)?\s*$",
    ["50ms", "2s", "7d"]
);

/// A size in bytes: `256B`, `4KiB`, `1MiB`, `2GiB` (also `KB`/`MB`, decimal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Size(pub u64);

impl FromStr for Size {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        let bad = || {
            UnitError(format!(
                "invalid size `{s}`: write a number and a unit (B, KiB, MiB, GiB, KB, MB, GB), e.g. `4KiB`"
            ))
        };
        let (n, unit) = split_number(s).ok_or_else(bad)?;
        let mult: f64 = match unit {
            "" | "B" => 1.0,
            "KiB" => 1024.0,
            "MiB" => 1024.0 * 1024.0,
            "GiB" => 1024.0 * 1024.0 * 1024.0,
            "KB" | "kB" => 1e3,
            "MB" => 1e6,
            "GB" => 1e9,
            _ => return Err(bad()),
        };
        Ok(Size((n * mult).round() as u64))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (unit, m) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if b >= m && b.is_multiple_of(m) {
                return write!(f, "{}{unit}", b / m);
            }
        }
        write!(f, "{b}B")
    }
}

string_unit!(
    Size,
    "size",
    "A size: a number and a unit (B, KiB, MiB, GiB, KB, MB, GB).",
    r"^\s*[0-9]+(\.[0-9]+)?\s*(B|KiB|MiB|GiB|KB|kB|MB|GB)?\s*$",
    ["256B", "4KiB", "1MiB"]
);

/// A rate: `10/s`, `600/m`, `5/h`. Stored as events per second.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Rate(pub f64);

impl Rate {
    pub fn per_second(self) -> f64 {
        self.0
    }
}

impl FromStr for Rate {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        let bad = || {
            UnitError(format!(
                "invalid rate `{s}`: write a count per unit of time, e.g. `10/s`, `600/m`"
            ))
        };
        let (n, unit) = split_number(s).ok_or_else(bad)?;
        let per = match unit.trim_start_matches('/').trim() {
            "" | "s" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        if !unit.is_empty() && !unit.starts_with('/') {
            return Err(bad());
        }
        Ok(Rate(n / per))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/s", self.0)
    }
}

string_unit!(
    Rate,
    "rate",
    "A rate: a count per second, minute or hour.",
    r"^\s*[0-9]+(\.[0-9]+)?\s*(/\s*(s|m|min|h))?\s*$",
    ["10/s", "600/m"]
);

/// A percentage: `5%`, `0.1%`. Stored as a fraction (5% = 0.05).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Percent(pub f64);

impl Percent {
    pub fn fraction(self) -> f64 {
        self.0
    }
}

impl FromStr for Percent {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        let bad = || {
            UnitError(format!(
                "invalid percentage `{s}`: write e.g. `5%` or `0.1%`"
            ))
        };
        let (n, unit) = split_number(s).ok_or_else(bad)?;
        if unit != "%" {
            return Err(bad());
        }
        Ok(Percent(n / 100.0))
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", (self.0 * 100.0 * 1e6).round() / 1e6)
    }
}

string_unit!(
    Percent,
    "percentage",
    "A percentage, e.g. `5%`.",
    r"^\s*[0-9]+(\.[0-9]+)?\s*%\s*$",
    ["5%", "0.1%"]
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!("50ms".parse::<Dur>().unwrap().0, Duration::from_millis(50));
        assert_eq!(
            "1.5s".parse::<Dur>().unwrap().0,
            Duration::from_millis(1500)
        );
        assert_eq!(
            "7d".parse::<Dur>().unwrap().0,
            Duration::from_secs(7 * 86400)
        );
        assert_eq!("0".parse::<Dur>().unwrap().0, Duration::ZERO);
        assert!("5".parse::<Dur>().is_err());
        assert!("5 sec".parse::<Dur>().is_err());
        assert!("-1s".parse::<Dur>().is_err());
        for s in ["50ms", "2s", "7d", "5m", "1h", "250us"] {
            assert_eq!(s.parse::<Dur>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn sizes_rates_percents() {
        assert_eq!("4KiB".parse::<Size>().unwrap().0, 4096);
        assert_eq!("256B".parse::<Size>().unwrap().0, 256);
        assert_eq!("1MiB".parse::<Size>().unwrap().to_string(), "1MiB");
        assert!("4 KB/s".parse::<Size>().is_err());
        assert_eq!("10/s".parse::<Rate>().unwrap().0, 10.0);
        assert_eq!("600/m".parse::<Rate>().unwrap().0, 10.0);
        assert!("10s".parse::<Rate>().is_err());
        assert!((("5%".parse::<Percent>().unwrap().0) - 0.05).abs() < 1e-12);
        assert!("5".parse::<Percent>().is_err());
    }

    #[test]
    fn deserializes_from_numbers_and_strings() {
        let d: Dur = serde_json::from_value(serde_json::json!("2s")).unwrap();
        assert_eq!(d, Dur::from_secs(2));
        let s: Size = serde_json::from_value(serde_json::json!(512)).unwrap();
        assert_eq!(s.0, 512);
        let e = serde_json::from_value::<Dur>(serde_json::json!(true)).unwrap_err();
        assert!(e.to_string().contains("expected a duration"), "{e}");
    }
}

/// A request line: `GET /path?query` (method and a path that starts with `/`). The method
/// defaults to GET when only a path is written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestLine {
    pub method: String,
    pub path: String,
}

impl RequestLine {
    pub fn get(path: &str) -> Self {
        RequestLine {
            method: "GET".into(),
            path: path.into(),
        }
    }
    pub fn post(path: &str) -> Self {
        RequestLine {
            method: "POST".into(),
            path: path.into(),
        }
    }
}

const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

impl FromStr for RequestLine {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        let mut parts = s.split_whitespace();
        let (method, path) = match (parts.next(), parts.next(), parts.next()) {
            (Some(p), None, None) if p.starts_with('/') => ("GET", p),
            (Some(m), Some(p), None) => (m, p),
            _ => {
                return Err(UnitError(format!(
                    "invalid request `{s}`: write a method and a path, e.g. `GET /v1/correlations?market=m1`"
                )));
            }
        };
        if !METHODS.contains(&method) {
            return Err(UnitError(format!(
                "invalid request `{s}`: unknown method `{method}` (use one of {})",
                METHODS.join(", ")
            )));
        }
        if !path.starts_with('/') {
            return Err(UnitError(format!(
                "invalid request `{s}`: the path must start with `/` (the target's base URL is added)"
            )));
        }
        Ok(RequestLine {
            method: method.into(),
            path: path.into(),
        })
    }
}

impl fmt::Display for RequestLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

string_unit!(
    RequestLine,
    "request line",
    "A request: a method and a path, e.g. `GET /v1/correlations?market=m1`.",
    r"^\s*((GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS)\s+)?/\S*\s*$",
    ["GET /healthz", "POST /v1/graph/build"]
);
