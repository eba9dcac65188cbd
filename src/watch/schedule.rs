//! When a scheduled check runs next: pure arithmetic on UTC times (no clock, no randomness:
//! the caller passes the time and the jitter's draw), so every boundary is unit-tested.

use chrono::{DateTime, Datelike, Duration as Span, NaiveTime, Timelike, Utc};

use crate::policy::schedule::{Schedule, When, Window};

/// The first run of `s` once watch starts at `now`: a fixed interval starts at once (inside
/// its window), a calendar schedule at its next occurrence after `now`. `draw` in `[0, 1)`
/// picks the jitter.
pub fn first_run(s: &Schedule, now: DateTime<Utc>, draw: f64) -> DateTime<Utc> {
    let base = match s.when {
        When::Every(_) => now,
        _ => occurrence_after(s.when, now),
    };
    settle(s, base, draw)
}

/// The run after one that started at `last` (a fixed interval counts from the start of the
/// previous run; a calendar schedule takes its next occurrence after it).
pub fn next_run(s: &Schedule, last: DateTime<Utc>, draw: f64) -> DateTime<Utc> {
    settle(s, occurrence_after(s.when, last), draw)
}

/// Jitter, then the window: a time outside the window waits for its next opening.
fn settle(s: &Schedule, base: DateTime<Utc>, draw: f64) -> DateTime<Utc> {
    let jitter = s.jitter.map_or(Span::zero(), |j| {
        let ms = j.get().as_millis() as f64 * draw.clamp(0.0, 1.0);
        // `draw` < 1 keeps it below the jitter; 1.0 itself is clamped just under.
        Span::milliseconds((ms as i64).min((j.get().as_millis() as i64 - 1).max(0)))
    });
    let t = base + jitter;
    s.window.map_or(t, |w| opening(&w, t))
}

/// `t` when the window is open then, else the window's next start.
pub fn opening(w: &Window, t: DateTime<Utc>) -> DateTime<Utc> {
    if w.contains(t.time()) {
        return t;
    }
    let today = at(t, w.start);
    if today > t {
        today
    } else {
        today + Span::days(1)
    }
}

/// `t`'s day at `time`.
fn at(t: DateTime<Utc>, time: NaiveTime) -> DateTime<Utc> {
    t.date_naive().and_time(time).and_utc()
}

/// The first occurrence of `when` strictly after `t`.
pub fn occurrence_after(when: When, t: DateTime<Utc>) -> DateTime<Utc> {
    match when {
        When::Every(d) => t + Span::from_std(d).unwrap_or(Span::MAX),
        When::Hourly => {
            let hour = at(
                t,
                NaiveTime::from_hms_opt(t.hour(), 0, 0).unwrap_or_default(),
            );
            hour + Span::hours(1)
        }
        When::Daily { at: time } => {
            let today = at(t, time);
            if today > t {
                today
            } else {
                today + Span::days(1)
            }
        }
        When::Weekly { day, at: time } => {
            let ahead = (day.num_days_from_monday() as i64
                - t.weekday().num_days_from_monday() as i64)
                .rem_euclid(7);
            let this = at(t, time) + Span::days(ahead);
            if this > t { this } else { this + Span::days(7) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::Dur;
    use chrono::TimeZone;

    /// `2026-12-03 08:30` (a Thursday) in UTC.
    fn utc(text: &str) -> DateTime<Utc> {
        let t = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").unwrap();
        Utc.from_utc_datetime(&t)
    }

    /// A schedule: the cadence, then optional `jitter=DUR` and `window=HH:MM-HH:MM`.
    fn sched(text: &str) -> Schedule {
        let mut parts = text.split(';');
        let mut s: Schedule = parts.next().unwrap().parse().unwrap();
        for p in parts {
            match p.trim().split_once('=').unwrap() {
                ("jitter", j) => s.jitter = Some(j.parse().unwrap()),
                ("window", w) => s.window = Some(w.parse().unwrap()),
                other => panic!("{other:?}"),
            }
        }
        s
    }

    /// `(schedule, first?, from, draw, expected)`: `first` asks [`first_run`] at `from`,
    /// otherwise [`next_run`] after a run started at `from`.
    const CASES: &[(&str, bool, &str, f64, &str)] = &[
        // every: at once, then from the start of the last run
        (
            "every 3s",
            true,
            "2026-12-03 08:00:00",
            0.9,
            "2026-12-03 08:00:00",
        ),
        (
            "every 3s",
            false,
            "2026-12-03 08:00:00",
            0.9,
            "2026-12-03 08:00:03",
        ),
        // hourly: the next hour; exactly on the hour, the one after (never the same instant twice)
        (
            "hourly",
            false,
            "2026-12-03 08:30:00",
            0.0,
            "2026-12-03 09:00:00",
        ),
        (
            "hourly",
            false,
            "2026-12-03 09:00:00",
            0.0,
            "2026-12-03 10:00:00",
        ),
        // daily: today before the time, tomorrow from it on, across the year's end
        (
            "daily at 03:00",
            false,
            "2026-12-03 08:30:00",
            0.0,
            "2026-12-04 03:00:00",
        ),
        (
            "daily at 03:00",
            true,
            "2026-12-03 02:59:59",
            0.0,
            "2026-12-03 03:00:00",
        ),
        (
            "daily at 03:00",
            false,
            "2026-12-03 03:00:00",
            0.0,
            "2026-12-04 03:00:00",
        ),
        (
            "daily at 03:00",
            false,
            "2026-12-31 04:00:00",
            0.0,
            "2027-01-01 03:00:00",
        ),
        // weekly: its day; on the day before the time that day, from it on a week later
        (
            "weekly on sun at 03:00",
            false,
            "2026-12-03 08:00:00",
            0.0,
            "2026-12-06 03:00:00",
        ),
        (
            "weekly on sun at 03:00",
            false,
            "2026-12-06 02:00:00",
            0.0,
            "2026-12-06 03:00:00",
        ),
        (
            "weekly on sun at 03:00",
            false,
            "2026-12-06 03:00:00",
            0.0,
            "2026-12-13 03:00:00",
        ),
        (
            "weekly on thu at 07:00",
            false,
            "2026-12-03 08:00:00",
            0.0,
            "2026-12-10 07:00:00",
        ),
        (
            "weekly",
            false,
            "2026-12-03 08:00:00",
            0.0,
            "2026-12-06 00:00:00",
        ),
        // jitter: the draw's share of it, below it whatever the draw
        (
            "daily at 03:00; jitter=10m",
            false,
            "2026-12-03 08:00:00",
            0.0,
            "2026-12-04 03:00:00",
        ),
        (
            "daily at 03:00; jitter=10m",
            false,
            "2026-12-03 08:00:00",
            0.5,
            "2026-12-04 03:05:00",
        ),
        (
            "daily at 03:00; jitter=10m",
            false,
            "2026-12-03 08:00:00",
            1.0,
            "2026-12-04 03:09:59.999",
        ),
        (
            "daily at 03:00; jitter=10m",
            false,
            "2026-12-03 08:00:00",
            7.0,
            "2026-12-04 03:09:59.999",
        ),
        (
            "daily at 03:00; jitter=10m",
            false,
            "2026-12-03 08:00:00",
            -1.0,
            "2026-12-04 03:00:00",
        ),
        // a window past midnight: inside before and after midnight at once; a run due at
        // 04:30 waits for 22:00; the end is excluded
        (
            "every 1h; window=22:00-04:00",
            true,
            "2026-12-03 23:00:00",
            0.0,
            "2026-12-03 23:00:00",
        ),
        (
            "every 1h; window=22:00-04:00",
            false,
            "2026-12-04 02:30:00",
            0.0,
            "2026-12-04 03:30:00",
        ),
        (
            "every 1h; window=22:00-04:00",
            false,
            "2026-12-04 03:30:00",
            0.0,
            "2026-12-04 22:00:00",
        ),
        (
            "every 1h; window=22:00-04:00",
            true,
            "2026-12-04 04:00:00",
            0.0,
            "2026-12-04 22:00:00",
        ),
        // a daytime window: after its end the next day's start, before it that day's
        (
            "hourly; window=02:00-05:00",
            false,
            "2026-12-03 05:10:00",
            0.0,
            "2026-12-04 02:00:00",
        ),
        (
            "hourly; window=02:00-05:00",
            false,
            "2026-12-03 01:10:00",
            0.0,
            "2026-12-03 02:00:00",
        ),
        // jitter that pushes a run past the window's end waits for the next opening
        (
            "daily at 04:55; jitter=10m; window=02:00-05:00",
            false,
            "2026-12-03 08:00:00",
            0.9,
            "2026-12-05 02:00:00",
        ),
    ];

    #[test]
    fn next_runs() {
        for (text, first, from, draw, want) in CASES {
            let s = sched(text);
            let got = if *first {
                first_run(&s, utc(from), *draw)
            } else {
                next_run(&s, utc(from), *draw)
            };
            assert_eq!(
                got,
                utc(want),
                "{text} from {from} (first: {first}, draw {draw})"
            );
        }
    }

    #[test]
    fn jitter_is_a_bound_for_any_draw() {
        let s = sched("hourly; jitter=90s");
        let base = utc("2026-12-03 09:00:00");
        for i in 0..=1000 {
            let r = next_run(&s, utc("2026-12-03 08:10:00"), i as f64 / 1000.0);
            assert!(r >= base && r < base + Span::seconds(90), "{i}: {r}");
        }
        assert_eq!(s.jitter, Some(Dur::from_secs(90)));
    }
}
