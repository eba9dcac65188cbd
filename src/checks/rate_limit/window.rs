//! `rate_limit` with `algorithm: fixed_window` or `sliding_window`: at most `limit`
//! requests per `window`.
//!
//! One client sends four bursts, timed so the two algorithms part ways (W the window, L the
//! limit, A at 0):
//!
//! | burst | when | fixed window (starting at A) | sliding window |
//! |---|---|---|---|
//! | A: ⌈L/4⌉ | 0 | all | all |
//! | B: the rest + extra | W/2 | L − A | L − A |
//! | C: L + extra | when B's rejections say (else W) | L (a new window) | A's count (A aged out) |
//! | D: L + extra | B + W | 0 (C filled the window) | L − A (B aged out) |
//!
//! The judge does not assume that table: it replays the algorithm over the admissions it saw
//! ([`expected`]), so a late burst or a window aligned elsewhere still has the right
//! expectation. A window starts at the client's first request after the previous one ended
//! (express-rate-limit), unless the limiter announces its reset, which then places it, or
//! only windows aligned to the clock fit what was admitted ([`alignment`]). A
//! FAIL says which algorithm the admissions fit instead. A wait longer than `max_wait` is not
//! made: what it would prove is reported as not proven.

use std::time::Duration;

use super::{
    Neighbour, Neighbours, Queueing, Spec, Tally, advertised_observations,
    burst_with_neighbours, neighbour_observation, required_headers, tally,
};
use crate::checks::rate_limit::Algorithm;
use crate::outcome::{Chart, ChartKind, CheckError, Observation, Outcome, Series};
use crate::probe::load::{self, Endpoint, Request};
use crate::target::Ctx;
use crate::units::Dur;

/// After an announced or expected window end, so a limiter's own clock granularity has
/// passed too.
const MARGIN_S: f64 = 0.25;
/// Admissions this close to an ageing boundary may fall either side of it.
const SLACK_S: f64 = 0.1;
/// A reset in whole seconds places the window start only to within a second.
const RESET_ROUNDING_S: f64 = 1.0;

/// One burst of the run.
#[derive(Debug, Clone)]
pub struct Phase {
    pub name: &'static str,
    /// The release, in seconds after A's release.
    pub at_s: f64,
    pub tally: Tally,
}

impl Phase {
    /// Admission times, in seconds after A's release.
    fn admissions(&self) -> impl Iterator<Item = f64> + '_ {
        self.tally
            .accepted_at_ms
            .iter()
            .map(move |ms| self.at_s + ms / 1e3)
    }

    /// For each admission, the span it happened in, seconds after A's release: from the
    /// request's send to its answer's arrival (the limiter admitted it somewhere in between).
    fn admission_spans(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.tally
            .accepted_at_ms
            .iter()
            .enumerate()
            .map(move |(i, ms)| {
                let latency = self.tally.accepted_latency_ms.get(i).copied().unwrap_or(0.0);
                (self.at_s + (ms - latency) / 1e3, self.at_s + ms / 1e3)
            })
    }

    fn end_s(&self) -> f64 {
        self.at_s + self.tally.duration.as_secs_f64()
    }

    /// Where this burst's own answers place the window: the first announced reset, as the
    /// window's start in seconds after A's release.
    fn announced_start(&self, window_s: f64) -> Option<f64> {
        self.tally.advertised.iter().find_map(|a| {
            let reset = a.headers.reset_s?;
            (reset <= window_s + RESET_ROUNDING_S)
                .then(|| self.at_s + a.at_ms / 1e3 + reset - window_s)
        })
    }
}

/// What a window run measured: plain data for [`judge`].
#[derive(Debug, Clone)]
pub struct Measurements {
    pub sent: Vec<String>,
    pub phases: Vec<Phase>,
    /// When B's rejections said a request would be admitted again (seconds after A), and
    /// whether C was sent then.
    pub announced_s: Option<f64>,
    pub neighbours: Option<Vec<Neighbour>>,
    /// The Unix time of A's release, seconds: where a window aligned to the clock starts.
    pub origin_unix_s: f64,
    /// A fresh window could not be had for A: the reason.
    pub not_fresh: Option<String>,
    /// What was not waited for (beyond `max_wait` or the check's time), and why.
    pub not_proven: Option<String>,
}

fn limit(spec: &Spec) -> u64 {
    u64::from(spec.limit.unwrap_or(0))
}

fn window_s(spec: &Spec) -> f64 {
    spec.window.map_or(0.0, |w| w.0.as_secs_f64())
}

/// Requests in A: a quarter of the limit, at least one.
fn a_size(spec: &Spec) -> u64 {
    limit(spec).div_ceil(4).max(1)
}

/// Sends the bursts of the module's table; a wait beyond `max_wait` or the check's time
/// ends the run early with the reason.
pub async fn measure(spec: &Spec, ctx: &Ctx) -> Result<Measurements, CheckError> {
    let ep = Endpoint::for_target(&ctx.target).await?;
    let req = Request::new(&spec.request, None)?;
    let (l, w) = (limit(spec), window_s(spec));
    let extra = u64::from(spec.extra());
    let max_wait = spec.max_wait.0;
    let mut neighbours = Neighbours::new(ctx, spec);
    let mut m = Measurements {
        sent: Vec::new(),
        phases: Vec::new(),
        announced_s: None,
        neighbours: None,
        origin_unix_s: 0.0,
        not_fresh: None,
        not_proven: None,
    };
    let conns = |n: u64| vec![ctx.source; (spec.concurrency as usize).clamp(1, n.max(1) as usize)];
    let a = a_size(spec);

    // A: a quarter of the limit from a fresh client; again after a window when not fresh.
    let mut sent_a = 0;
    let (origin, ta) = loop {
        ctx.progress(&format!("{a} requests from {}", ctx.source));
        m.sent
            .push(format!("A: {a} × {} from {}", spec.request, ctx.source));
        let per_request = Duration::from_secs(10).min(ctx.remaining()?);
        let b = load::burst(&ep, &req, &conns(a), a as usize, Some(&ctx.budget), per_request).await?;
        let t = tally(&b, spec);
        sent_a += 1;
        if t.accepted + t.rejected == 0 {
            return Err(CheckError::Target(format!(
                "no request of the first burst was answered ({} failed)",
                t.other
            )));
        }
        if t.accepted >= a {
            let ago = b.released.elapsed().as_secs_f64();
            m.origin_unix_s = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64()
                - ago;
            break (b.released, t);
        }
        let wait = spec.window.map_or(Duration::ZERO, |w| w.0);
        if sent_a > 1 || wait > max_wait || ctx.remaining()? < wait * 3 {
            m.not_fresh = Some(format!(
                "{} of the first {a} requests were admitted: the window of {} was not fresh \
                 (the address used shortly before), and there is no time to wait {} for it to end",
                t.accepted,
                ctx.source,
                Dur(wait)
            ));
            m.phases.push(Phase {
                name: "A",
                at_s: 0.0,
                tally: t,
            });
            return Ok(m);
        }
        ctx.progress(&format!("window not fresh: waiting {}", Dur(wait)));
        tokio::time::sleep(wait + Duration::from_secs_f64(MARGIN_S)).await;
    };
    let since = |s: f64| origin + Duration::from_secs_f64(s.max(0.0));
    let now_s = || origin.elapsed().as_secs_f64();
    let a_phase = Phase {
        name: "A",
        at_s: 0.0,
        tally: ta,
    };
    let start = a_phase.announced_start(w).map_or(0.0, |s| s.min(0.0));
    let a_end = a_phase.end_s();
    m.phases.push(a_phase);

    // B: the rest of the limit and some extra, half a window into it.
    let mut at = (start + w / 2.0).max(a_end + 0.01);
    if at - now_s() > max_wait.as_secs_f64() {
        m.not_proven = Some(format!(
            "half the window ({}) is beyond max_wait ({}): the limit was tested right after \
             the first requests, and what the limiter admits after the window is not proven",
            Dur(Duration::from_secs_f64(w / 2.0)),
            spec.max_wait
        ));
        at = a_end + 0.01;
    }
    tokio::time::sleep_until(since(at)).await;
    let nb = (l.saturating_sub(a) + extra).max(1);
    m.sent.push(format!(
        "B at +{at:.1} s: {nb} × {} from {}",
        spec.request, ctx.source
    ));
    ctx.progress(&format!("burst of {nb} from {}", ctx.source));
    let (b, probes) =
        burst_with_neighbours(spec, ctx, &ep, &req, nb as usize, &mut neighbours).await?;
    let b_at = b.released.saturating_duration_since(origin).as_secs_f64();
    let b_phase = Phase {
        name: "B",
        at_s: b_at,
        tally: tally(&b, spec),
    };
    m.neighbours = probes;
    // When the rejections said to come back: the latest of them.
    m.announced_s = b_phase
        .tally
        .advertised
        .iter()
        .filter(|x| !x.accepted)
        .filter_map(|x| Some(b_at + x.at_ms / 1e3 + x.headers.retry_s()?))
        .reduce(f64::max);
    let b_end = b_phase.end_s();
    m.phases.push(b_phase);
    if m.not_proven.is_some() {
        return Ok(m);
    }

    // C at the announced moment (else the window's end); D once B has aged by a window.
    let c_at = m.announced_s.unwrap_or(start + w) + MARGIN_S;
    let d_at = b_at + w + MARGIN_S;
    for (name, wanted) in [("C", c_at), ("D", d_at)] {
        let prev_end = m.phases.last().map_or(b_end, Phase::end_s);
        let at = wanted.max(prev_end + MARGIN_S);
        let wait = at - now_s();
        let left = ctx.remaining()?.as_secs_f64();
        if wait > max_wait.as_secs_f64() || wait + 10.0 > left {
            m.not_proven = Some(format!(
                "burst {name} would wait {:.1} s, beyond {} (what the limiter admits then is not proven)",
                wait,
                if wait > max_wait.as_secs_f64() {
                    format!("max_wait ({})", spec.max_wait)
                } else {
                    format!("the check's time left ({left:.0} s)")
                }
            ));
            return Ok(m);
        }
        tokio::time::sleep_until(since(at)).await;
        let n = l + extra;
        m.sent.push(format!(
            "{name} at +{at:.1} s: {n} × {} from {}",
            spec.request, ctx.source
        ));
        ctx.progress(&format!("burst {name} of {n} from {}", ctx.source));
        let per_request = Duration::from_secs(10).min(ctx.remaining()?);
        let r = load::burst(&ep, &req, &conns(n), n as usize, Some(&ctx.budget), per_request).await?;
        m.phases.push(Phase {
            name,
            at_s: r.released.saturating_duration_since(origin).as_secs_f64(),
            tally: tally(&r, spec),
        });
    }
    Ok(m)
}

/// Admissions a burst may show under `algorithm`, given the admissions before it: the
/// bounds before the tolerance, and one line saying why.
///
/// A fixed window starts at the client's first request after the previous window ended (or
/// where an announced reset places it); with `clock` (the Unix time of A's release, seconds)
/// it starts instead at a multiple of `window` since the epoch, as a limiter keyed by
/// `now / window` does.
pub fn expected(
    algorithm: Algorithm,
    clock: Option<f64>,
    spec: &Spec,
    phases: &[Phase],
    k: usize,
) -> (u64, u64, String) {
    let (l, w) = (limit(spec), window_s(spec));
    let p = &phases[k];
    let (t, end) = (p.at_s, p.end_s());
    let sent = p.tally.sent;
    let before: Vec<f64> = phases[..k].iter().flat_map(Phase::admissions).collect();
    let count = |from: f64, to: f64| before.iter().filter(|x| **x > from && **x <= to).count() as u64;
    match algorithm {
        Algorithm::SlidingWindow => {
            // Requests count until they are a window old; some may age out during the burst.
            // Each was admitted somewhere between its send and its answer: at most, those
            // that may still count at the release; at least, those sure to count at the end.
            let spans: Vec<(f64, f64)> =
                phases[..k].iter().flat_map(Phase::admission_spans).collect();
            let used_hi = spans.iter().filter(|(_, late)| *late > t - w - SLACK_S).count() as u64;
            let used_lo = spans
                .iter()
                .filter(|(early, _)| *early > end - w + SLACK_S)
                .count() as u64;
            (
                l.saturating_sub(used_hi).min(sent),
                l.saturating_sub(used_lo).min(sent),
                format!(
                    "{l} less the {used_lo}..={used_hi} admitted in the {} before",
                    Dur(Duration::from_secs_f64(w))
                ),
            )
        }
        _ if clock.is_some() => {
            let origin = clock.unwrap_or_default();
            let start = ((origin + t) / w).floor() * w - origin;
            let used = count(start - SLACK_S, t);
            let lo = l.saturating_sub(used);
            let hi = if end >= start + w { lo + l } else { lo };
            (
                lo.min(sent),
                hi.min(sent),
                format!("{l} less the {used} admitted since the clock's window opened at +{start:.1} s"),
            )
        }
        _ => {
            // The window this burst falls in: placed by this burst's own announced reset, else
            // the one the previous bursts opened, else a new one starting with this burst.
            let mut start = phases[0]
                .announced_start(w)
                .map_or(0.0, |s| s.min(0.0));
            let mut slack = 0.0;
            for q in &phases[1..=k] {
                if let Some(s) = q.announced_start(w) {
                    (start, slack) = (s, RESET_ROUNDING_S);
                } else if q.at_s >= start + w {
                    (start, slack) = (q.at_s, 0.0);
                }
            }
            let used = count(start - slack - SLACK_S, t);
            let lo = l.saturating_sub(used);
            // A window ending during the burst gives a whole new limit.
            let hi = if end >= start + w { lo + l } else { lo };
            (
                lo.min(sent),
                hi.min(sent),
                format!("{l} less the {used} admitted since the window opened at +{start:.1} s"),
            )
        }
    }
}

/// Whether every burst of a run admitted what `algorithm` would have (± the tolerance), its
/// windows aligned as [`expected`] says for `clock`.
pub fn fits_aligned(algorithm: Algorithm, clock: Option<f64>, spec: &Spec, phases: &[Phase]) -> bool {
    let tol = spec.tol(limit(spec) as f64) as u64;
    (0..phases.len()).all(|k| {
        let (lo, hi, _) = expected(algorithm, clock, spec, phases, k);
        let t = &phases[k].tally;
        t.accepted + tol >= lo && t.accepted <= hi + tol
    })
}

/// How a run's fixed windows are aligned: from the first request (`None`) unless only the
/// clock's alignment fits it.
pub fn alignment(spec: &Spec, m: &Measurements) -> Option<f64> {
    let clock = Some(m.origin_unix_s);
    (!fits_aligned(Algorithm::FixedWindow, None, spec, &m.phases)
        && fits_aligned(Algorithm::FixedWindow, clock, spec, &m.phases))
    .then_some(m.origin_unix_s)
}

/// Whether every burst fits `algorithm`, a fixed window under either alignment.
pub fn fits(algorithm: Algorithm, spec: &Spec, m: &Measurements) -> bool {
    let clock = (algorithm == Algorithm::FixedWindow).then(|| alignment(spec, m)).flatten();
    fits_aligned(algorithm, clock, spec, &m.phases)
}

/// Judges a window run from its measurements alone: pure, no I/O, no clock.
pub fn judge(spec: &Spec, m: &Measurements) -> Outcome {
    let mut out = Outcome {
        sent: m.sent.clone(),
        ..Outcome::default()
    };
    let (l, w) = (limit(spec), window_s(spec));
    if let Some(reason) = &m.not_fresh {
        let a = m.phases.first().map_or(0, |p| p.tally.accepted);
        out.summary = format!(
            "{} of {l} per {}: the first requests found the window partly used ({a} admitted)",
            spec.algorithm.name(),
            Dur(Duration::from_secs_f64(w))
        );
        out.undecided(reason.clone());
        return out;
    }
    let tol = spec.tol(l as f64) as u64;
    let fits = |alg: Algorithm| fits(alg, spec, m);
    let clock = (spec.algorithm == Algorithm::FixedWindow)
        .then(|| alignment(spec, m))
        .flatten();
    let mut lines = Vec::new();
    for k in 0..m.phases.len() {
        let p = &m.phases[k];
        let (lo, hi, why) = expected(spec.algorithm, clock, spec, &m.phases, k);
        let (lo, hi) = (lo.saturating_sub(tol), (hi + tol).min(p.tally.sent));
        out.observe(Observation::new(
            format!("burst {} at +{:.1} s: admitted", p.name, p.at_s),
            format!("{why} ± {tol}: {lo}..={hi}"),
            format!("{} of {}", p.tally.accepted, p.tally.sent),
            (lo..=hi).contains(&p.tally.accepted),
        ));
        lines.push(format!(
            "{} +{:.1} s: {} of {} (expected {lo}..={hi})",
            p.name, p.at_s, p.tally.accepted, p.tally.sent
        ));
    }
    if let Some(b) = m.phases.iter().find(|p| p.name == "B") {
        out.observe(Observation::new(
            format!("rejections with status {}", spec.status),
            "the requests past the limit",
            format!("{} (statuses {:?})", b.tally.rejected, b.tally.statuses),
            b.tally.rejected > 0,
        ));
        for o in required_headers(spec, &b.tally) {
            out.observe(o);
        }
    }
    let fresh: Vec<&Tally> = m
        .phases
        .iter()
        .take_while(|p| p.name != "C")
        .map(|p| &p.tally)
        .collect();
    let enforced = fresh.iter().map(|t| t.accepted).sum();
    let (advertised, advertised_evidence) = advertised_observations(spec, &fresh, enforced);
    for o in advertised {
        out.observe(o);
    }
    let all: Vec<&Tally> = m.phases.iter().map(|p| &p.tally).collect();
    let queueing = Queueing::of(&all);
    if let Some(q) = spec.queue {
        out.observe(queueing.observe(q));
    }
    if let (Some(at), Some(c)) = (m.announced_s, m.phases.iter().find(|p| p.name == "C")) {
        out.observe(Observation::new(
            "admitted again when the rejections said",
            format!("at least one of burst C, sent at +{:.1} s (announced +{at:.1} s)", c.at_s),
            format!("{} of {}", c.tally.accepted, c.tally.sent),
            c.tally.accepted > 0,
        ));
    }
    let (neighbour_obs, unproven) = neighbour_observation(spec, &m.neighbours);
    if let Some(o) = neighbour_obs {
        out.observe(o);
    }

    let mut series = Vec::new();
    for p in &m.phases {
        let mut pts = vec![(p.at_s * 1e3, 0.0)];
        pts.extend(
            p.admissions()
                .enumerate()
                .map(|(i, s)| (s * 1e3, (i + 1) as f64)),
        );
        series.push(Series {
            name: format!("burst {}", p.name),
            points: pts,
        });
    }
    out.charts.push(Chart {
        title: format!("{}: admitted requests over time", spec.request),
        kind: ChartKind::Steps,
        x_label: "ms since the first request".into(),
        y_label: "admitted (cumulative per burst)".into(),
        series,
    });
    out.evidence = serde_json::json!({
        "algorithm": spec.algorithm,
        "limit": l,
        "window_s": w,
        "bursts": m.phases.iter().map(|p| serde_json::json!({
            "name": p.name, "at_s": p.at_s, "sent": p.tally.sent,
            "duration_ms": p.tally.duration.as_secs_f64() * 1e3, "tally": p.tally,
        })).collect::<Vec<_>>(),
        "announced_s": m.announced_s,
        "other_clients": m.neighbours,
        "advertised": advertised_evidence,
        "queueing": queueing,
        "not_proven": m.not_proven,
    });
    out.summary = format!(
        "{} of {l} per {}: {}",
        spec.algorithm.name(),
        Dur(Duration::from_secs_f64(w)),
        lines.join(", ")
    );
    if !fits(spec.algorithm) {
        let other = [
            Algorithm::FixedWindow,
            Algorithm::SlidingWindow,
        ]
        .into_iter()
        .find(|a| *a != spec.algorithm && fits(*a));
        if let Some(a) = other {
            out.summary.push_str(&format!(
                "; the admissions fit a {} of {l} per {} instead",
                a.name(),
                Dur(Duration::from_secs_f64(w))
            ));
        }
    }
    if clock.is_some() {
        out.summary
            .push_str("; its windows are aligned to the clock (each starts at a multiple of the window since the Unix epoch)");
    }
    if let Some(note) = queueing.note() {
        out.summary.push_str("; ");
        out.summary.push_str(&note);
    }
    if let Some(note) = &m.not_proven {
        out.summary.push_str("; not proven: ");
        out.summary.push_str(note);
    }
    if let Some(note) = unproven {
        out.summary.push_str("; ");
        out.summary.push_str(note);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Status;

    fn spec(alg: &str, limit: u32, window: &str) -> Spec {
        serde_json::from_value(serde_json::json!({
            "request": "GET /api", "algorithm": alg, "limit": limit, "window": window,
        }))
        .unwrap()
    }

    /// A burst at `at_s` admitting `accepted` of `sent` over 20 ms.
    fn phase(name: &'static str, at_s: f64, accepted: u64, sent: u64) -> Phase {
        Phase {
            name,
            at_s,
            tally: Tally {
                sent,
                accepted,
                rejected: sent - accepted,
                duration: Duration::from_millis(20),
                accepted_at_ms: (0..accepted).map(|i| 1.0 + i as f64 * 0.1).collect(),
                ..Tally::default()
            },
        }
    }

    fn run(phases: Vec<Phase>) -> Measurements {
        Measurements {
            sent: vec![],
            phases,
            announced_s: None,
            neighbours: None,
            origin_unix_s: 1_000_000.0,
            not_fresh: None,
            not_proven: None,
        }
    }

    /// What a fixed window of 50 per 10 s starting at A admits on the module's schedule.
    fn fixed_50() -> Measurements {
        run(vec![
            phase("A", 0.0, 13, 13),
            phase("B", 5.0, 37, 47),
            phase("C", 10.25, 50, 60),
            phase("D", 15.25, 0, 60),
        ])
    }

    /// What a sliding window of 50 per 10 s admits on the same schedule.
    fn sliding_50() -> Measurements {
        run(vec![
            phase("A", 0.0, 13, 13),
            phase("B", 5.0, 37, 47),
            phase("C", 10.25, 13, 60),
            phase("D", 15.25, 37, 60),
        ])
    }

    #[test]
    fn each_algorithm_passes_its_own_pattern_and_fails_the_others() {
        let fixed = spec("fixed_window", 50, "10s");
        let sliding = spec("sliding_window", 50, "10s");
        let o = judge(&fixed, &fixed_50());
        assert_eq!(o.status(), Status::Pass, "{}", o.summary);
        let o = judge(&sliding, &sliding_50());
        assert_eq!(o.status(), Status::Pass, "{}", o.summary);
        let o = judge(&sliding, &fixed_50());
        assert_eq!(o.status(), Status::Fail, "{}", o.summary);
        assert!(
            o.summary.contains("fit a fixed window of 50 per 10s instead"),
            "{}",
            o.summary
        );
        let o = judge(&fixed, &sliding_50());
        assert_eq!(o.status(), Status::Fail);
        assert!(o.summary.contains("fit a sliding window"), "{}", o.summary);
    }

    #[test]
    fn a_wrong_limit_or_window_fails() {
        // Limit 40 declared, 50 enforced: B admits 37 where 30 ± 2 were allowed.
        let o = judge(&spec("fixed_window", 40, "10s"), &fixed_50());
        assert_eq!(o.status(), Status::Fail, "{}", o.summary);
        // Window 20 s declared: C, at +10.25 s, is inside the first window: 0 expected.
        let o = judge(&spec("fixed_window", 50, "20s"), &fixed_50());
        assert_eq!(o.status(), Status::Fail, "{}", o.summary);
        assert!(
            o.observations
                .iter()
                .any(|x| !x.ok && x.what.starts_with("burst C")),
            "{:#?}",
            o.observations
        );
    }

    #[test]
    fn bounds_at_and_one_past_the_tolerance() {
        let s = spec("fixed_window", 50, "10s");
        // 50 ± 3 (5 % of 50, rounded up).
        for (b, want) in [(37, Status::Pass), (40, Status::Pass), (41, Status::Fail), (34, Status::Pass), (33, Status::Fail)] {
            let mut m = fixed_50();
            m.phases[1] = phase("B", 5.0, b, 47);
            assert_eq!(judge(&s, &m).status(), want, "B admitted {b}");
        }
    }

    #[test]
    fn a_late_burst_gets_the_expectation_of_when_it_was_sent() {
        // A sliding window whose C went out at +15.5 s (a slow announcement): A and B have
        // both aged out, so the whole limit is due.
        let mut m = sliding_50();
        m.phases[2] = phase("C", 15.5, 50, 60);
        m.phases.truncate(3);
        let o = judge(&spec("sliding_window", 50, "10s"), &m);
        assert_eq!(o.status(), Status::Pass, "{}", o.summary);
    }

    #[test]
    fn no_fresh_window_is_inconclusive_and_a_short_run_names_what_it_did_not_prove() {
        let s = spec("fixed_window", 50, "10s");
        let mut m = run(vec![phase("A", 0.0, 2, 13)]);
        m.not_fresh = Some("2 of the first 13 requests were admitted".into());
        let o = judge(&s, &m);
        assert_eq!(o.status(), Status::Inconclusive, "{}", o.summary);
        assert!(o.summary.contains("2 admitted"), "{}", o.summary);
        let mut m = fixed_50();
        m.phases.truncate(2);
        m.not_proven = Some("burst C would wait 900 s, beyond max_wait (30s)".into());
        let o = judge(&s, &m);
        assert_eq!(o.status(), Status::Pass);
        assert!(o.summary.contains("not proven: burst C"), "{}", o.summary);
    }
}
