//! A check's `schedule:`: when `preflight watch` runs it (`every 30s`, `hourly`, `daily at
//! 03:00`, `weekly on sun at 03:00`, with an optional `jitter` and an allowed `window`, in
//! UTC). This module owns the syntax, its parsing and its JSON Schema; it is pure. When the
//! next run falls is `watch::schedule`. `preflight check` ignores schedules.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{NaiveTime, Timelike, Weekday};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::Dur;

/// When a check runs under `preflight watch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub when: When,
    /// A random delay of up to this much is added to each run (so that a fleet does not
    /// run a disturbing check at the same second everywhere).
    pub jitter: Option<Dur>,
    /// The time of day (UTC) runs may start in; a run that would fall outside waits for it.
    pub window: Option<Window>,
}

/// The cadence of a [`Schedule`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// `every 30s`: from the start of one run to the start of the next.
    Every(Duration),
    /// `hourly`: at the start of every hour.
    Hourly,
    /// `daily` (00:00) or `daily at HH:MM`.
    Daily { at: NaiveTime },
    /// `weekly` (Sunday 00:00, as cron's `@weekly`) or `weekly on DAY [at HH:MM]`.
    Weekly { day: Weekday, at: NaiveTime },
}

/// `HH:MM-HH:MM`, UTC; an end before the start wraps past midnight (`22:00-04:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

impl Window {
    /// Whether a run may start at `t` (start included, end excluded).
    pub fn contains(&self, t: NaiveTime) -> bool {
        if self.start < self.end {
            self.start <= t && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }
}

const SYNTAX: &str = "write `every DURATION` (e.g. `every 30s`), `hourly`, `daily [at HH:MM]` or `weekly [on DAY] [at HH:MM]` (UTC)";

fn time_of(s: &str) -> Result<NaiveTime, String> {
    let (h, m) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}` is not a time of day: write HH:MM (UTC), e.g. `03:00`"))?;
    let (h, m) = (h.parse::<u32>(), m.parse::<u32>());
    match (h, m) {
        (Ok(h), Ok(m)) if h < 24 && m < 60 => {
            Ok(NaiveTime::from_hms_opt(h, m, 0).unwrap_or_default())
        }
        _ => Err(format!(
            "`{s}` is not a time of day: write HH:MM from 00:00 to 23:59 (UTC)"
        )),
    }
}

fn day_of(s: &str) -> Result<Weekday, String> {
    match s.to_ascii_lowercase().as_str() {
        "mon" | "monday" => Ok(Weekday::Mon),
        "tue" | "tuesday" => Ok(Weekday::Tue),
        "wed" | "wednesday" => Ok(Weekday::Wed),
        "thu" | "thursday" => Ok(Weekday::Thu),
        "fri" | "friday" => Ok(Weekday::Fri),
        "sat" | "saturday" => Ok(Weekday::Sat),
        "sun" | "sunday" => Ok(Weekday::Sun),
        _ => Err(format!(
            "`{s}` is not a day of the week: write mon, tue, wed, thu, fri, sat or sun"
        )),
    }
}

impl FromStr for When {
    type Err = String;
    fn from_str(s: &str) -> Result<When, String> {
        let words: Vec<&str> = s.split_whitespace().collect();
        let midnight = NaiveTime::MIN;
        let bad = || format!("`{s}` is not a schedule: {SYNTAX}");
        match words.as_slice() {
            ["every", rest @ ..] if !rest.is_empty() => {
                let d: Dur = rest
                    .join("")
                    .parse()
                    .map_err(|e: crate::units::UnitError| e.0)?;
                if d.get().is_zero() {
                    return Err(format!("`{s}`: the interval must be above 0"));
                }
                Ok(When::Every(d.get()))
            }
            ["hourly"] => Ok(When::Hourly),
            ["daily"] => Ok(When::Daily { at: midnight }),
            ["daily", "at", t] => Ok(When::Daily { at: time_of(t)? }),
            ["weekly"] => Ok(When::Weekly {
                day: Weekday::Sun,
                at: midnight,
            }),
            ["weekly", "at", t] => Ok(When::Weekly {
                day: Weekday::Sun,
                at: time_of(t)?,
            }),
            ["weekly", "on", d] => Ok(When::Weekly {
                day: day_of(d)?,
                at: midnight,
            }),
            ["weekly", "on", d, "at", t] => Ok(When::Weekly {
                day: day_of(d)?,
                at: time_of(t)?,
            }),
            _ => Err(bad()),
        }
    }
}

impl FromStr for Window {
    type Err = String;
    fn from_str(s: &str) -> Result<Window, String> {
        let (a, b) = s.split_once('-').ok_or_else(|| {
            format!("`{s}` is not a window: write HH:MM-HH:MM (UTC), e.g. `02:00-05:00`")
        })?;
        let w = Window {
            start: time_of(a.trim())?,
            end: time_of(b.trim())?,
        };
        if w.start == w.end {
            return Err(format!("`{s}`: the window is empty (its start is its end)"));
        }
        Ok(w)
    }
}

impl FromStr for Schedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Schedule, String> {
        Ok(Schedule {
            when: s.parse()?,
            jitter: None,
            window: None,
        })
    }
}

fn hhmm(t: NaiveTime) -> String {
    format!("{:02}:{:02}", t.hour(), t.minute())
}

impl fmt::Display for When {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            When::Every(d) => write!(f, "every {}", Dur(*d)),
            When::Hourly => f.write_str("hourly"),
            When::Daily { at } => write!(f, "daily at {}", hhmm(*at)),
            When::Weekly { day, at } => {
                write!(
                    f,
                    "weekly on {} at {}",
                    day.to_string().to_ascii_lowercase(),
                    hhmm(*at)
                )
            }
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", hhmm(self.start), hhmm(self.end))
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.when)?;
        if let Some(j) = self.jitter {
            write!(f, ", jitter {j}")?;
        }
        if let Some(w) = self.window {
            write!(f, ", window {w} UTC")?;
        }
        Ok(())
    }
}

/// A string parsed with `FromStr` (its error message as serde's), so that a bad `when` or
/// `window` of the long form is reported at that field.
macro_rules! from_str_de {
    ($ty:ty) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
from_str_de!(When);
from_str_de!(Window);

/// The long form, `{when, jitter, window}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Full {
    when: When,
    #[serde(default)]
    jitter: Option<Dur>,
    #[serde(default)]
    window: Option<Window>,
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Schedule;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a schedule such as `every 30s` or `{when: daily at 03:00, jitter: 10m, window: \"02:00-05:00\"}`")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Schedule, E> {
                s.parse().map_err(E::custom)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Schedule, A::Error> {
                let full = Full::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(Schedule {
                    when: full.when,
                    jitter: full.jitter,
                    window: full.window,
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Schedule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        if self.jitter.is_none() && self.window.is_none() {
            return s.collect_str(&self.when);
        }
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("when", &self.when.to_string())?;
        if let Some(j) = self.jitter {
            m.serialize_entry("jitter", &j.to_string())?;
        }
        if let Some(w) = self.window {
            m.serialize_entry("window", &w.to_string())?;
        }
        m.end()
    }
}

impl JsonSchema for Schedule {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Schedule".into()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let dur = g.subschema_for::<Dur>();
        let when = serde_json::json!({
            "type": "string",
            "description": "`every DURATION`, `hourly`, `daily [at HH:MM]` or `weekly [on DAY] [at HH:MM]` (UTC).",
            "examples": ["every 30s", "hourly", "daily at 03:00", "weekly on sun at 03:00"]
        });
        schemars::json_schema!({
            "description": "When `preflight watch` runs this check (`preflight check` ignores it): a cadence, or `{when, jitter, window}`. A check that disturbs the target runs under watch only with a schedule, alone on its instance.",
            "anyOf": [
                when,
                {
                    "type": "object",
                    "properties": {
                        "when": when,
                        "jitter": dur,
                        "window": {
                            "type": "string",
                            "description": "Times of day (UTC) a run may start in, `HH:MM-HH:MM`; past midnight wraps (`22:00-04:00`).",
                            "examples": ["02:00-05:00"]
                        }
                    },
                    "required": ["when"],
                    "additionalProperties": false
                }
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    #[test]
    fn cadences_parse() {
        let cases = [
            ("every 30s", When::Every(Duration::from_secs(30))),
            ("every 1.5 s", When::Every(Duration::from_millis(1500))),
            ("hourly", When::Hourly),
            ("daily", When::Daily { at: t(0, 0) }),
            ("daily at 03:00", When::Daily { at: t(3, 0) }),
            (
                "weekly",
                When::Weekly {
                    day: Weekday::Sun,
                    at: t(0, 0),
                },
            ),
            (
                "weekly on sun at 03:00",
                When::Weekly {
                    day: Weekday::Sun,
                    at: t(3, 0),
                },
            ),
            (
                "weekly on Wednesday",
                When::Weekly {
                    day: Weekday::Wed,
                    at: t(0, 0),
                },
            ),
            (
                "weekly at 23:59",
                When::Weekly {
                    day: Weekday::Sun,
                    at: t(23, 59),
                },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<When>(), Ok(want), "{text}");
            // Display round-trips
            assert_eq!(want.to_string().parse::<When>(), Ok(want), "{text}");
        }
    }

    #[test]
    fn bad_cadences_say_what_to_write() {
        for (text, says) in [
            ("every", "not a schedule"),
            ("every 0s", "above 0"),
            ("every soon", "invalid duration"),
            ("daily at 24:00", "not a time of day"),
            ("daily at 3", "HH:MM"),
            ("weekly on funday", "not a day of the week"),
            ("monthly", "not a schedule"),
        ] {
            let e = text.parse::<When>().unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn windows_wrap_past_midnight() {
        let w: Window = "22:00-04:00".parse().unwrap();
        assert!(w.contains(t(22, 0)) && w.contains(t(23, 59)) && w.contains(t(0, 0)));
        assert!(w.contains(t(3, 59)) && !w.contains(t(4, 0)) && !w.contains(t(21, 59)));
        let w: Window = "02:00-05:00".parse().unwrap();
        assert!(w.contains(t(2, 0)) && !w.contains(t(5, 0)) && !w.contains(t(1, 59)));
        assert!(
            "05:00-05:00"
                .parse::<Window>()
                .unwrap_err()
                .contains("empty")
        );
        assert!("0500".parse::<Window>().is_err());
    }

    #[test]
    fn both_forms_deserialize() {
        let s: Schedule = serde_json::from_value(serde_json::json!("every 3s")).unwrap();
        assert_eq!(s.when, When::Every(Duration::from_secs(3)));
        let s: Schedule = serde_json::from_value(serde_json::json!({
            "when": "daily at 03:00", "jitter": "10m", "window": "02:00-05:00"
        }))
        .unwrap();
        assert_eq!(s.jitter, Some(Dur::from_secs(600)));
        assert_eq!(s.window.unwrap().to_string(), "02:00-05:00");
        let back = serde_json::to_value(s).unwrap();
        assert_eq!(back["when"], "daily at 03:00");
        let e =
            serde_json::from_value::<Schedule>(serde_json::json!({"when": "daily", "jiter": "1m"}))
                .unwrap_err();
        assert!(e.to_string().contains("jiter"), "{e}");
    }
}
