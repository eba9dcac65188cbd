//! What a rate limiter advertises in one response's headers, whichever convention it speaks:
//! the IETF draft's structured `RateLimit` and `RateLimit-Policy` fields (draft 7: a
//! dictionary `limit=50, remaining=0, reset=10` and `50;w=10`; drafts 8 and later: named
//! items `"default";r=0;t=10` and `"default";q=50;w=10`), the older `RateLimit-Limit`,
//! `RateLimit-Remaining`, `RateLimit-Reset`, the common `X-RateLimit-*`, and `Retry-After`
//! (delta-seconds or an HTTP date). Parsing only: the `rate_limit` check compares what is
//! advertised with what the limiter does.

use std::time::{Duration, SystemTime};

use hyper::header::HeaderMap;
use serde::Serialize;
use sfv::{BareItem, Dictionary, List, ListEntry, Parameters, Parser};

/// The header family a value was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Convention {
    /// `RateLimit: limit=…, remaining=…, reset=…` (IETF draft 7 and earlier structured form).
    Draft7,
    /// `RateLimit: "name";r=…;t=…` and `RateLimit-Policy: "name";q=…;w=…` (drafts 8 and later).
    Draft8,
    /// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (drafts up to 6).
    Split,
    /// `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset`.
    Legacy,
}

/// One advertised policy: `quota` requests per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Policy {
    pub quota: u64,
    /// Seconds; `None` when the policy names no window.
    pub window_s: Option<f64>,
}

/// Everything one response says about the limit. Absent fields were not advertised.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Advertised {
    /// Where the limit, remaining and reset were read from (the first family present, in the
    /// order of [`Convention`]).
    pub convention: Option<Convention>,
    /// The advertised limit (the quota of the window, or a bucket's size).
    pub limit: Option<u64>,
    /// Requests left.
    pub remaining: Option<u64>,
    /// Seconds until the quota resets (a legacy epoch timestamp is converted).
    pub reset_s: Option<f64>,
    /// `RateLimit-Policy`, every policy listed.
    pub policies: Vec<Policy>,
    /// `Retry-After`, in seconds from the response.
    pub retry_after_s: Option<f64>,
    /// Values that were present but could not be read, with the reason.
    pub malformed: Vec<String>,
}

impl Advertised {
    /// Whether the response advertised anything about the limit.
    pub fn any(&self) -> bool {
        self.convention.is_some() || !self.policies.is_empty() || self.retry_after_s.is_some()
    }

    /// The limit a client should assume: the advertised limit, else the first policy's quota.
    pub fn quota(&self) -> Option<u64> {
        self.limit.or(self.policies.first().map(|p| p.quota))
    }

    /// The first policy's window, in seconds.
    pub fn window_s(&self) -> Option<f64> {
        self.policies.iter().find_map(|p| p.window_s)
    }

    /// When the client may send again: `Retry-After`, else the reset.
    pub fn retry_s(&self) -> Option<f64> {
        self.retry_after_s.or(self.reset_s)
    }
}

/// Reads `headers` as received at `now` (for HTTP dates and epoch timestamps).
pub fn read(headers: &HeaderMap, now: SystemTime) -> Advertised {
    let mut a = Advertised::default();
    let get = |name: &str| -> Option<String> {
        let values: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    };

    if let Some(v) = get("ratelimit-policy") {
        match policies(&v) {
            Ok(p) => a.policies = p,
            Err(e) => a.malformed.push(format!("RateLimit-Policy `{v}`: {e}")),
        }
    }
    if let Some(v) = get("ratelimit") {
        match structured(&v) {
            Ok((convention, limit, remaining, reset)) => {
                a.convention = Some(convention);
                a.limit = limit;
                a.remaining = remaining;
                a.reset_s = reset;
            }
            Err(e) => a.malformed.push(format!("RateLimit `{v}`: {e}")),
        }
    }
    for (convention, prefix) in [
        (Convention::Split, "ratelimit-"),
        (Convention::Legacy, "x-ratelimit-"),
    ] {
        if a.convention.is_some() {
            break;
        }
        let field = |suffix: &str, a: &mut Advertised| -> Option<f64> {
            let name = format!("{prefix}{suffix}");
            let v = get(&name)?;
            match leading_number(&v) {
                Some(n) => Some(n),
                None => {
                    a.malformed.push(format!("{name} `{v}`: not a number"));
                    None
                }
            }
        };
        let limit = field("limit", &mut a);
        let remaining = field("remaining", &mut a);
        let reset = field("reset", &mut a);
        if limit.is_some() || remaining.is_some() || reset.is_some() {
            a.convention = Some(convention);
            a.limit = limit.map(|n| n as u64);
            a.remaining = remaining.map(|n| n as u64);
            a.reset_s = reset.map(|r| reset_delta(r, now));
        }
    }
    if let Some(v) = get("retry-after") {
        match retry_after(&v, headers, now) {
            Some(s) => a.retry_after_s = Some(s),
            None => a.malformed.push(format!(
                "Retry-After `{v}`: neither delta-seconds nor an HTTP date"
            )),
        }
    }
    a
}

/// A non-negative integer or decimal at the start of `v` (`100`, `100;w=60`, `1.5`).
fn leading_number(v: &str) -> Option<f64> {
    let v = v.trim();
    let end = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    v[..end].parse::<f64>().ok().filter(|n| n.is_finite())
}

/// A reset given as seconds, or as a Unix timestamp (seconds, or milliseconds) as several
/// legacy limiters send it: seconds from `now`, never negative.
fn reset_delta(value: f64, now: SystemTime) -> f64 {
    let epoch = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let as_epoch = if value > 1e12 {
        Some(value / 1e3)
    } else if value > 1e9 {
        Some(value)
    } else {
        None
    };
    match as_epoch {
        Some(at) => (at - epoch).max(0.0),
        None => value,
    }
}

/// Delta-seconds, or an HTTP date taken relative to the response's own `Date` when it has
/// one (so a skewed server clock does not skew the delay), else to `now`.
fn retry_after(v: &str, headers: &HeaderMap, now: SystemTime) -> Option<f64> {
    let v = v.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return v.parse::<f64>().ok();
    }
    let at = httpdate::parse_http_date(v).ok()?;
    let base = headers
        .get(hyper::header::DATE)
        .and_then(|d| d.to_str().ok())
        .and_then(|d| httpdate::parse_http_date(d).ok())
        .unwrap_or(now);
    Some(
        at.duration_since(base)
            .unwrap_or(Duration::ZERO)
            .as_secs_f64(),
    )
}

fn number(item: &BareItem) -> Option<f64> {
    if let Some(i) = item.as_integer() {
        return Some(i64::from(i) as f64);
    }
    item.as_decimal().map(f64::from)
}

fn param(params: &Parameters, key: &str) -> Option<f64> {
    params
        .iter()
        .find(|(k, _)| k.as_str() == key)
        .and_then(|(_, v)| number(v))
}

fn non_negative(n: Option<f64>, what: &str) -> Result<Option<f64>, String> {
    match n {
        Some(n) if n < 0.0 => Err(format!("{what} is negative ({n})")),
        n => Ok(n),
    }
}

/// `RateLimit`: the draft-7 dictionary, else the draft-8 list. Returns the convention, the
/// limit, remaining and reset.
#[allow(clippy::type_complexity)]
fn structured(v: &str) -> Result<(Convention, Option<u64>, Option<u64>, Option<f64>), String> {
    if let Ok(d) = Parser::new(v).parse::<Dictionary>() {
        let member = |key: &str| -> Option<f64> {
            d.iter()
                .find(|(k, _)| k.as_str() == key)
                .and_then(|(_, e)| match e {
                    ListEntry::Item(i) => number(&i.bare_item),
                    ListEntry::InnerList(_) => None,
                })
        };
        let (limit, remaining, reset) = (member("limit"), member("remaining"), member("reset"));
        if limit.is_some() || remaining.is_some() || reset.is_some() {
            return Ok((
                Convention::Draft7,
                non_negative(limit, "limit")?.map(|n| n as u64),
                non_negative(remaining, "remaining")?.map(|n| n as u64),
                non_negative(reset, "reset")?,
            ));
        }
    }
    let list: List = Parser::new(v)
        .parse()
        .map_err(|e| format!("not a structured field ({e})"))?;
    let first = list
        .iter()
        .find_map(|e| match e {
            ListEntry::Item(i) => Some(i),
            ListEntry::InnerList(_) => None,
        })
        .ok_or("no item")?;
    let (remaining, reset) = (param(&first.params, "r"), param(&first.params, "t"));
    if remaining.is_none() && reset.is_none() {
        return Err("neither `limit`/`remaining`/`reset` (draft 7) nor `r`/`t` (draft 8)".into());
    }
    Ok((
        Convention::Draft8,
        None,
        non_negative(remaining, "r")?.map(|n| n as u64),
        non_negative(reset, "t")?,
    ))
}

/// `RateLimit-Policy`: `50;w=10` (draft 7) or `"name";q=50;w=10` (drafts 8 and later),
/// comma-separated.
fn policies(v: &str) -> Result<Vec<Policy>, String> {
    let list: List = Parser::new(v)
        .parse()
        .map_err(|e| format!("not a structured list ({e})"))?;
    let mut out = Vec::new();
    for e in &list {
        let ListEntry::Item(i) = e else {
            return Err("an inner list is not a policy".into());
        };
        let quota = number(&i.bare_item)
            .or_else(|| param(&i.params, "q"))
            .ok_or("a policy without a quota (an integer item or `q`)")?;
        let quota = non_negative(Some(quota), "quota")?.unwrap_or_default();
        let window_s = non_negative(param(&i.params, "w"), "w")?;
        out.push(Policy {
            quota: quota as u64,
            window_s,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn draft_7_as_express_rate_limit_sends_it() {
        let a = read(
            &headers(&[
                ("RateLimit-Policy", "50;w=10"),
                ("RateLimit", "limit=50, remaining=0, reset=7"),
                ("Retry-After", "7"),
            ]),
            at(1_700_000_000),
        );
        assert_eq!(a.convention, Some(Convention::Draft7));
        assert_eq!(
            (a.limit, a.remaining, a.reset_s),
            (Some(50), Some(0), Some(7.0))
        );
        assert_eq!(
            a.policies,
            [Policy {
                quota: 50,
                window_s: Some(10.0)
            }]
        );
        assert_eq!(
            (a.quota(), a.window_s(), a.retry_s()),
            (Some(50), Some(10.0), Some(7.0))
        );
        assert!(a.malformed.is_empty());
    }

    #[test]
    fn draft_8_named_items_and_a_partition_key() {
        let a = read(
            &headers(&[
                (
                    "RateLimit-Policy",
                    r#""50-in-10sec"; q=50; w=10; pk=:ZjAxYjI3:"#,
                ),
                ("RateLimit", r#""50-in-10sec"; r=12; t=4"#),
            ]),
            at(0),
        );
        assert_eq!(a.convention, Some(Convention::Draft8));
        assert_eq!(
            (a.limit, a.remaining, a.reset_s),
            (None, Some(12), Some(4.0))
        );
        assert_eq!(a.quota(), Some(50), "the quota comes from the policy");
        assert_eq!(a.window_s(), Some(10.0));
    }

    #[test]
    fn several_policies_are_all_kept() {
        let a = read(
            &headers(&[(
                "RateLimit-Policy",
                r#""burst";q=100;w=1, "daily";q=1000;w=86400"#,
            )]),
            at(0),
        );
        assert_eq!(a.policies.len(), 2);
        assert_eq!(a.policies[1].quota, 1000);
        assert_eq!(a.policies[1].window_s, Some(86400.0));
    }

    #[test]
    fn split_headers_of_the_older_drafts() {
        let a = read(
            &headers(&[
                ("RateLimit-Limit", "100"),
                ("RateLimit-Remaining", "99"),
                ("RateLimit-Reset", "1"),
            ]),
            at(0),
        );
        assert_eq!(a.convention, Some(Convention::Split));
        assert_eq!(
            (a.limit, a.remaining, a.reset_s),
            (Some(100), Some(99), Some(1.0))
        );
        // An older draft's `limit, policy` form keeps its leading number.
        let a = read(&headers(&[("RateLimit-Limit", "100, 100;w=60")]), at(0));
        assert_eq!(a.limit, Some(100));
    }

    #[test]
    fn legacy_reset_as_an_epoch_timestamp_is_converted_to_seconds() {
        let now = 1_700_000_000;
        let a = read(
            &headers(&[
                ("X-RateLimit-Limit", "60"),
                ("X-RateLimit-Remaining", "0"),
                ("X-RateLimit-Reset", "1700000042"),
            ]),
            at(now),
        );
        assert_eq!(a.convention, Some(Convention::Legacy));
        assert_eq!(a.reset_s, Some(42.0));
        let ms = read(&headers(&[("X-RateLimit-Reset", "1700000042500")]), at(now));
        assert_eq!(ms.reset_s, Some(42.5));
        let delta = read(&headers(&[("X-RateLimit-Reset", "30")]), at(now));
        assert_eq!(delta.reset_s, Some(30.0));
        let past = read(&headers(&[("X-RateLimit-Reset", "1699999999")]), at(now));
        assert_eq!(past.reset_s, Some(0.0), "a reset in the past is now");
    }

    #[test]
    fn the_structured_field_wins_over_the_split_and_legacy_headers() {
        let a = read(
            &headers(&[
                ("RateLimit", "limit=10, remaining=3, reset=2"),
                ("RateLimit-Limit", "99"),
                ("X-RateLimit-Limit", "98"),
            ]),
            at(0),
        );
        assert_eq!(
            (a.convention, a.limit),
            (Some(Convention::Draft7), Some(10))
        );
        let b = read(
            &headers(&[("RateLimit-Limit", "99"), ("X-RateLimit-Limit", "98")]),
            at(0),
        );
        assert_eq!((b.convention, b.limit), (Some(Convention::Split), Some(99)));
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date_relative_to_the_responses_date() {
        let a = read(&headers(&[("Retry-After", "120")]), at(0));
        assert_eq!(a.retry_after_s, Some(120.0));
        let b = read(
            &headers(&[
                ("Date", "Wed, 21 Oct 2015 07:28:00 GMT"),
                ("Retry-After", "Wed, 21 Oct 2015 07:28:30 GMT"),
            ]),
            at(0),
        );
        assert_eq!(b.retry_after_s, Some(30.0));
        assert_eq!(b.retry_s(), Some(30.0));
        assert!(b.any());
    }

    #[test]
    fn malformed_values_are_named_not_guessed() {
        let a = read(
            &headers(&[
                ("RateLimit", "limit=ten"),
                ("RateLimit-Policy", "(1 2);w=3"),
                ("Retry-After", "soon"),
            ]),
            at(0),
        );
        assert_eq!(a.convention, None);
        assert_eq!(a.retry_after_s, None);
        assert_eq!(a.malformed.len(), 3, "{:?}", a.malformed);
        assert!(
            a.malformed[0].contains("RateLimit-Policy"),
            "{:?}",
            a.malformed
        );
        assert!(
            a.malformed[2].contains("Retry-After `soon`"),
            "{:?}",
            a.malformed
        );
        let neg = read(&headers(&[("RateLimit", "limit=5, remaining=-1")]), at(0));
        assert!(neg.malformed[0].contains("negative"), "{:?}", neg.malformed);
        let none = read(&HeaderMap::new(), at(0));
        assert!(!none.any());
        assert_eq!(none, Advertised::default());
    }
}
