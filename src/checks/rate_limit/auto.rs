//! `rate_limit` with `algorithm: auto`: from one bounded measurement, which algorithm and
//! parameters the limiter behaves like, as evidence and as the policy to write.
//!
//! 1. One request, whose advertised limit (if any) sizes the burst; then a burst: what a
//!    fresh client is admitted at once is the capacity `C` (a bucket, or a window's limit).
//! 2. One second later, `C` + extra again. Some but not all admitted: a token bucket, the
//!    refill read from how many came back; confirmed by a third burst a second after that.
//! 3. None admitted: a window (or a very slow refill). One request every 250 ms until one is
//!    admitted (at most `max_wait`): that is the window `W` (unless the limiter advertises
//!    it), and a burst then must find the whole limit back. Which window — fixed or sliding
//!    — is told by the window schedule ([`super::window`]) run from a fresh address, both
//!    models replayed over it: the one that fits every burst is the answer.

use std::time::Duration;

use super::window::{self, Phase};
use super::{Algorithm, Queueing, Spec, Tally, pace, tally};
use crate::outcome::{CheckError, Observation, Outcome};
use crate::probe::load::{self, Endpoint, Request};
use crate::target::Ctx;
use crate::units::Dur;

/// Most requests of the first burst when nothing sizes it.
const AUTO_BURST: u64 = 300;
/// Between two single requests while waiting for a window to end.
const TRICKLE: Duration = Duration::from_millis(250);

/// What the limiter behaves like.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Found {
    pub algorithm: Algorithm,
    /// The bucket, or the window's limit.
    pub capacity: u64,
    /// Tokens per second (token bucket).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refill: Option<f64>,
    /// Seconds (windows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_s: Option<f64>,
}

impl Found {
    /// The policy fields that state it, in order (`burst`, `refill`, …).
    pub fn lines(&self) -> Vec<(&'static str, String)> {
        let rate = |r: Option<f64>| format!("{}/s", round_rate(r.unwrap_or(0.0)));
        match self.algorithm {
            Algorithm::TokenBucket => vec![
                ("burst", self.capacity.to_string()),
                ("refill", rate(self.refill)),
            ],
            Algorithm::LeakyBucket => vec![
                ("algorithm", "leaky_bucket".into()),
                ("burst", self.capacity.to_string()),
                ("rate", rate(self.refill)),
            ],
            a => vec![
                (
                    "algorithm",
                    serde_json::to_value(a)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                ),
                ("limit", self.capacity.to_string()),
                (
                    "window",
                    Dur(Duration::from_secs_f64(self.window_s.unwrap_or(0.0))).to_string(),
                ),
            ],
        }
    }

    /// The policy lines that state it, on one line.
    pub fn policy(&self) -> String {
        self.lines()
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn describe(&self) -> String {
        match self.algorithm {
            Algorithm::TokenBucket => format!(
                "a token bucket of {} refilled at about {}/s",
                self.capacity,
                round_rate(self.refill.unwrap_or(0.0))
            ),
            Algorithm::LeakyBucket => format!(
                "a leaky bucket queueing {} and answering them at about {}/s",
                self.capacity,
                round_rate(self.refill.unwrap_or(0.0))
            ),
            a => format!(
                "a {} of {} per {}",
                a.name(),
                self.capacity,
                Dur(Duration::from_secs_f64(self.window_s.unwrap_or(0.0)))
            ),
        }
    }
}

/// A rate as people write it: whole numbers above 2/s, one decimal below.
fn round_rate(r: f64) -> f64 {
    if r >= 2.0 {
        r.round()
    } else {
        (r * 10.0).round() / 10.0
    }
}

/// A measured window as people write it: to the quarter second below 2 s, else to the
/// second (the trickle measures it to within half its step).
fn round_window(s: f64) -> f64 {
    if s < 2.0 {
        (s * 4.0).round() / 4.0
    } else {
        s.round()
    }
}

struct Sender<'a> {
    ctx: &'a Ctx,
    ep: Endpoint,
    req: Request,
    spec: &'a Spec,
    sent: Vec<String>,
    origin: tokio::time::Instant,
}

impl Sender<'_> {
    async fn burst(&mut self, what: &str, n: u64) -> Result<(f64, Tally), CheckError> {
        let conns = vec![self.ctx.source; (self.spec.concurrency as usize).clamp(1, n as usize)];
        let per_request = Duration::from_secs(10).min(self.ctx.remaining()?);
        let at = self.origin.elapsed().as_secs_f64();
        self.sent.push(format!(
            "{what} at +{at:.1} s: {n} × {} from {}",
            self.spec.request, self.ctx.source
        ));
        self.ctx.progress(&format!("{what}: {n} requests"));
        let b = load::burst(
            &self.ep,
            &self.req,
            &conns,
            n as usize,
            Some(&self.ctx.budget),
            per_request,
        )
        .await?;
        let t = tally(&b, self.spec);
        if t.accepted + t.rejected == 0 {
            return Err(CheckError::Target(format!(
                "no request of the {what} was answered ({} failed)",
                t.other
            )));
        }
        let at = b.released.saturating_duration_since(self.origin).as_secs_f64();
        Ok((at, t))
    }
}

/// Measures and says what the limiter behaves like.
pub async fn run(spec: &Spec, ctx: &Ctx) -> Result<Outcome, CheckError> {
    Ok(find(spec, ctx).await?.0)
}

/// [`run`], with what was found apart (`None` when nothing could be said: the outcome says
/// why) — for `preflight init --probe-limits`.
pub async fn find(spec: &Spec, ctx: &Ctx) -> Result<(Outcome, Option<Found>), CheckError> {
    let mut s = Sender {
        ctx,
        ep: Endpoint::for_target(&ctx.target).await?,
        req: Request::new(&spec.request, None)?,
        spec,
        sent: Vec::new(),
        origin: tokio::time::Instant::now(),
    };
    let extra = u64::from(spec.extra());
    let mut out = Outcome::default();
    let mut notes = Vec::new();

    // 1. One request, then a burst sized by what it advertised.
    let (_, first) = s.burst("first request", 1).await?;
    if first.accepted == 0 {
        s.sent.push("(the first request was refused)".into());
        out.sent = s.sent;
        out.summary = "the first request was refused".into();
        out.undecided(format!(
            "the first request from {} was refused ({:?}): its limit was already used (the \
             address used shortly before); run again from a fresh address",
            ctx.source, first.statuses
        ));
        return Ok((out, None));
    }
    let advertised = first.advertised.iter().find_map(|a| a.headers.quota());
    let advertised_window = first.advertised.iter().find_map(|a| a.headers.window_s());
    let n = advertised.map_or(AUTO_BURST, |q| q + extra).min(AUTO_BURST);
    let (b1_at, b1) = s.burst("burst", n).await?;
    // A limiter may advertise only near its limit (the core service's default): then the
    // burst's later answers say what the first did not.
    let advertised = advertised.or_else(|| b1.advertised.iter().find_map(|a| a.headers.quota()));
    let advertised_window =
        advertised_window.or_else(|| b1.advertised.iter().find_map(|a| a.headers.window_s()));
    let capacity = b1.accepted + 1;
    out.observe(Observation::new(
        "a limit",
        format!("requests refused with status {}", spec.status),
        format!("{} of {} admitted at once", capacity, n + 1),
        b1.rejected > 0,
    ));
    if b1.rejected == 0 {
        out.sent = s.sent;
        out.summary = format!("no limit: all {} requests admitted", n + 1);
        return Ok((out, None));
    }
    let b1_end = b1_at + b1.duration.as_secs_f64();
    let queued = Queueing::of(&[&b1]);

    // 2. One second later: a bucket gives some back, a window nothing.
    let found = if let (true, Some(rate)) = (queued.delayed >= 3, pace(&b1)) {
        // Held back and answered one by one: a queue drained at its rate.
        notes.push(format!(
            "{} of {} admitted requests were queued, the last answered {:.2} s after the first",
            queued.delayed,
            queued.admitted,
            queued.max_added_ms / 1e3
        ));
        Some(Found {
            algorithm: Algorithm::LeakyBucket,
            capacity: b1.accepted,
            refill: Some(rate),
            window_s: None,
        })
    } else {
        let origin = s.origin;
        let since = |x: f64| origin + Duration::from_secs_f64(x);
        tokio::time::sleep_until(since(b1_end + 1.0)).await;
        let (b2_at, b2) = s.burst("after 1 s", capacity + extra).await?;
        if b2.accepted > 0 {
            let gap = b2_at - b1_end;
            let b2_end = b2_at + b2.duration.as_secs_f64();
            tokio::time::sleep_until(since(b2_end + 1.0)).await;
            let (b3_at, b3) = s.burst("after 1 s more", capacity + extra).await?;
            let gap3 = b3_at - b2_end;
            let (r2, r3) = (b2.accepted as f64 / gap, b3.accepted as f64 / gap3);
            let full = b2.accepted + spec.tol(capacity as f64) as u64 >= capacity;
            if full {
                notes.push(format!(
                    "the whole bucket came back within {gap:.1} s: the refill is {:.0}/s or more",
                    capacity as f64 / gap
                ));
            }
            let agree = (r2 - r3).abs() <= (r2.max(r3) * 0.2).max(1.5);
            out.observe(Observation::new(
                "the refill is steady",
                "two one-second gaps give the same rate (± 20 %)",
                format!("{r2:.1}/s then {r3:.1}/s"),
                agree || full,
            ));
            Some(Found {
                algorithm: Algorithm::TokenBucket,
                capacity,
                refill: Some((r2 + r3) / 2.0),
                window_s: None,
            })
        } else {
            // 3. Nothing back: one request at a time until one is admitted.
            let limit_s = spec.max_wait.0.as_secs_f64();
            let mut back_at = None;
            let mut probes = 0;
            while s.origin.elapsed().as_secs_f64() - b1_end < limit_s {
                tokio::time::sleep(TRICKLE).await;
                let (at, t) = s.burst("single request", 1).await?;
                probes += 1;
                if t.accepted > 0 {
                    back_at = Some(at);
                    break;
                }
            }
            s.sent.push(format!(
                "{probes} single requests, one every {} ms",
                TRICKLE.as_millis()
            ));
            match back_at {
                None => {
                    out.sent = s.sent;
                    out.summary = format!(
                        "{capacity} admitted at once, then nothing for {}",
                        spec.max_wait
                    );
                    out.undecided(format!(
                        "nothing was admitted again within max_wait ({}): a window longer than \
                         that, or a refill slower than one per {}; raise max_wait to see which",
                        spec.max_wait, spec.max_wait
                    ));
                    return Ok((out, None));
                }
                Some(at) => {
                    // The window ran from the first request; the trickle's step blurs it.
                    let measured = at - TRICKLE.as_secs_f64() / 2.0;
                    let w = advertised_window.unwrap_or_else(|| round_window(measured));
                    // The first request came back after `at`; the burst's admissions, spread
                    // over its answers, come back as long after each: wait for the last.
                    let last = b1.accepted_at_ms.iter().copied().fold(0.0, f64::max) / 1e3;
                    tokio::time::sleep_until(since(b1_at + last + at + 0.1)).await;
                    let (_, back) = s.burst("a window later", capacity + extra).await?;
                    let whole = back.accepted + 1 + spec.tol(capacity as f64) as u64 >= capacity;
                    out.observe(Observation::new(
                        "the whole limit comes back at once",
                        format!("{} ± {}", capacity - 1, spec.tol(capacity as f64)),
                        format!("{} of {}", back.accepted, back.sent),
                        whole,
                    ));
                    if !whole {
                        out.sent = s.sent;
                        out.summary = format!(
                            "{capacity} admitted at once, one again after {measured:.1} s, then {} of {}: a refill of about {:.2}/s, too slow to measure within max_wait",
                            back.accepted,
                            back.sent,
                            1.0 / measured
                        );
                        return Ok((out, None));
                    }
                    let found =
                        classify_window(spec, ctx, capacity, w, &mut s.sent, &mut out).await?;
                    if found.is_none() {
                        out.sent = s.sent;
                        return Ok((out, None));
                    }
                    found
                }
            }
        }
    };
    out.sent = s.sent;
    if let Some(f) = &found {
        out.summary = format!("behaves like {}: `{}`", f.describe(), f.policy());
        for n in &notes {
            out.summary.push_str("; ");
            out.summary.push_str(n);
        }
        out.evidence = serde_json::json!({"found": f, "policy": f.policy(),
            "advertised_limit": advertised, "advertised_window_s": advertised_window});
    }
    Ok((out, found))
}

/// Fixed or sliding: the window schedule from a fresh address, both models replayed.
async fn classify_window(
    spec: &Spec,
    ctx: &Ctx,
    capacity: u64,
    window_s: f64,
    sent: &mut Vec<String>,
    out: &mut Outcome,
) -> Result<Option<Found>, CheckError> {
    let mut probe = spec.clone();
    probe.algorithm = Algorithm::FixedWindow;
    probe.limit = Some(capacity as u32);
    probe.window = Some(Dur(Duration::from_secs_f64(window_s)));
    let mut fresh = ctx.clone();
    let others = ctx.neighbour_sources();
    if let Some(a) = others.first() {
        fresh.source = *a;
        fresh.extra_sources = others[1..].to_vec();
    }
    let m = window::measure(&probe, &fresh).await?;
    sent.extend(m.sent.iter().cloned());
    let phases: &[Phase] = &m.phases;
    let fixed = window::fits(Algorithm::FixedWindow, &probe, &m);
    let sliding = window::fits(Algorithm::SlidingWindow, &probe, &m);
    let lines: Vec<String> = phases
        .iter()
        .map(|p| format!("{} +{:.1} s: {} of {}", p.name, p.at_s, p.tally.accepted, p.tally.sent))
        .collect();
    let algorithm = match (fixed, sliding, &m.not_proven, &m.not_fresh) {
        (true, false, None, None) => Some(Algorithm::FixedWindow),
        (false, true, None, None) => Some(Algorithm::SlidingWindow),
        _ => None,
    };
    let Some(algorithm) = algorithm else {
        out.summary = format!(
            "a window of {capacity} per {}, fixed or sliding not told apart ({})",
            Dur(Duration::from_secs_f64(window_s)),
            lines.join(", ")
        );
        let why = match (&m.not_proven, &m.not_fresh) {
            (Some(n), _) | (None, Some(n)) => n.clone(),
            _ if fixed => "the bursts fit both a fixed and a sliding window".to_string(),
            _ => "the bursts fit neither a fixed nor a sliding window of that size".to_string(),
        };
        out.undecided(why);
        return Ok(None);
    };
    out.observe(Observation::new(
        "fixed or sliding",
        "the bursts fit exactly one of the two",
        format!(
            "only a {} fits ({})",
            algorithm.name(),
            lines.join(", ")
        ),
        true,
    ));
    Ok(Some(Found {
        algorithm,
        capacity,
        refill: None,
        window_s: Some(window_s),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn found_limits_read_as_policy_lines() {
        let f = Found {
            algorithm: Algorithm::SlidingWindow,
            capacity: 20,
            refill: None,
            window_s: Some(4.0),
        };
        assert_eq!(f.policy(), "algorithm: sliding_window, limit: 20, window: 4s");
        assert_eq!(f.describe(), "a sliding window of 20 per 4s");
        let b = Found {
            algorithm: Algorithm::TokenBucket,
            capacity: 21,
            refill: Some(9.7),
            window_s: None,
        };
        assert_eq!(b.policy(), "burst: 21, refill: 10/s");
        assert_eq!(round_rate(0.44), 0.4);
        assert_eq!(round_window(4.2), 4.0);
        assert_eq!(round_window(3.8), 4.0);
        assert_eq!(round_window(1.2), 1.25);
        assert_eq!(round_window(14.6), 15.0);
    }
}
