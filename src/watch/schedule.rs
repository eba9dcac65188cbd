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

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    fn sched(text: &str) -> Schedule {
        text.parse().unwrap()
    }

    #[test]
    fn every_counts_from_the_last_start_and_starts_at_once() {
        let s = sched("every 3s");
        let t = utc(2026, 12, 3, 8, 0, 0);
        assert_eq!(first_run(&s, t, 0.9), t);
        assert_eq!(next_run(&s, t, 0.9), t + Span::seconds(3));
    }

    #[test]
    fn hourly_and_daily_take_the_next_occurrence() {
        let t = utc(2026, 12, 3, 8, 30, 0);
        assert_eq!(
            next_run(&sched("hourly"), t, 0.0),
            utc(2026, 12, 3, 9, 0, 0)
        );
        // exactly on the hour: the next one, never the same instant twice
        let on = utc(2026, 12, 3, 9, 0, 0);
        assert_eq!(
            next_run(&sched("hourly"), on, 0.0),
            utc(2026, 12, 3, 10, 0, 0)
        );
        let daily = sched("daily at 03:00");
        assert_eq!(next_run(&daily, t, 0.0), utc(2026, 12, 4, 3, 0, 0));
        assert_eq!(
            first_run(&daily, utc(2026, 12, 3, 2, 59, 59), 0.0),
            utc(2026, 12, 3, 3, 0, 0)
        );
        assert_eq!(
            next_run(&daily, utc(2026, 12, 3, 3, 0, 0), 0.0),
            utc(2026, 12, 4, 3, 0, 0)
        );
        // the last day of the year rolls into the next
        assert_eq!(
            next_run(&daily, utc(2026, 12, 31, 4, 0, 0), 0.0),
            utc(2027, 1, 1, 3, 0, 0)
        );
    }

    #[test]
    fn weekly_lands_on_its_day() {
        // 2026-12-03 is a Thursday
        let t = utc(2026, 12, 3, 8, 0, 0);
        let sun = sched("weekly on sun at 03:00");
        assert_eq!(next_run(&sun, t, 0.0), utc(2026, 12, 6, 3, 0, 0));
        // on the day, before the time: that day; after it: a week later
        assert_eq!(
            next_run(&sun, utc(2026, 12, 6, 2, 0, 0), 0.0),
            utc(2026, 12, 6, 3, 0, 0)
        );
        assert_eq!(
            next_run(&sun, utc(2026, 12, 6, 3, 0, 0), 0.0),
            utc(2026, 12, 13, 3, 0, 0)
        );
        let thu = sched("weekly on thu at 07:00");
        assert_eq!(next_run(&thu, t, 0.0), utc(2026, 12, 10, 7, 0, 0));
        // bare `weekly`: Sunday midnight, as cron's @weekly
        assert_eq!(
            next_run(&sched("weekly"), t, 0.0),
            utc(2026, 12, 6, 0, 0, 0)
        );
    }

    #[test]
    fn jitter_stays_within_its_bound() {
        let mut s = sched("daily at 03:00");
        s.jitter = Some(Dur::from_secs(600));
        let t = utc(2026, 12, 3, 8, 0, 0);
        let base = utc(2026, 12, 4, 3, 0, 0);
        assert_eq!(next_run(&s, t, 0.0), base);
        assert_eq!(next_run(&s, t, 0.5), base + Span::seconds(300));
        for draw in [0.999_999, 1.0, 7.0] {
            let r = next_run(&s, t, draw);
            assert!(r < base + Span::seconds(600) && r >= base, "{draw}: {r}");
        }
        assert_eq!(next_run(&s, t, -1.0), base);
    }

    #[test]
    fn a_run_outside_its_window_waits_for_it() {
        let mut s = sched("every 1h");
        s.window = Some("22:00-04:00".parse().unwrap());
        // inside, before midnight and after it: at once
        assert_eq!(
            first_run(&s, utc(2026, 12, 3, 23, 0, 0), 0.0),
            utc(2026, 12, 3, 23, 0, 0)
        );
        assert_eq!(
            next_run(&s, utc(2026, 12, 4, 2, 30, 0), 0.0),
            utc(2026, 12, 4, 3, 30, 0)
        );
        // the run that would fall at 04:30 waits for 22:00 that day
        assert_eq!(
            next_run(&s, utc(2026, 12, 4, 3, 30, 0), 0.0),
            utc(2026, 12, 4, 22, 0, 0)
        );
        // the end is excluded
        assert_eq!(
            first_run(&s, utc(2026, 12, 4, 4, 0, 0), 0.0),
            utc(2026, 12, 4, 22, 0, 0)
        );
        // a daytime window: after its end, the next day's start
        let mut d = sched("hourly");
        d.window = Some("02:00-05:00".parse().unwrap());
        assert_eq!(
            next_run(&d, utc(2026, 12, 3, 5, 10, 0), 0.0),
            utc(2026, 12, 4, 2, 0, 0)
        );
        assert_eq!(
            next_run(&d, utc(2026, 12, 3, 1, 10, 0), 0.0),
            utc(2026, 12, 3, 2, 0, 0)
        );
        // jitter that pushes a run past the window's end waits for the next opening
        let mut j = sched("daily at 04:55");
        j.window = Some("02:00-05:00".parse().unwrap());
        j.jitter = Some(Dur::from_secs(600));
        assert_eq!(
            next_run(&j, utc(2026, 12, 3, 8, 0, 0), 0.9),
            utc(2026, 12, 5, 2, 0, 0)
        );
    }
}
