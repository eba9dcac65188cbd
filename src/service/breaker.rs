//! A circuit breaker as a pure state machine: the caller passes the time in, so the
//! transitions are unit-tested without sleeping. Closed → Open after `threshold` consecutive
//! failures; Open fast-fails until `reset_timeout` has passed, then lets one trial call
//! through (HalfOpen); the trial's success closes the breaker, its failure re-opens it.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
    /// The `breaker_state` gauge value: 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> u8 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
        }
    }
    /// The log code announcing a move into this state.
    pub fn code(self) -> &'static str {
        match self {
            State::Closed => "HB-BRK-CLOSED",
            State::Open => "HB-BRK-OPEN",
            State::HalfOpen => "HB-BRK-HALF-OPEN",
        }
    }
}

/// A change of state, for logging and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: State,
    pub to: State,
}

#[derive(Debug)]
pub struct Breaker {
    pub threshold: u32,
    pub reset_timeout: Duration,
    state: State,
    failures: u32,
    opened_at: Option<Instant>,
    trial_in_flight: bool,
    pub transitions: u64,
}

/// Whether a call may go ahead.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Call the dependency; report the result with [`Breaker::record`].
    Proceed(Option<Transition>),
    /// Fast-fail: the breaker is open (or a half-open trial is already running).
    Rejected,
}

impl Breaker {
    pub fn new(threshold: u32, reset_timeout: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            reset_timeout,
            state: State::Closed,
            failures: 0,
            opened_at: None,
            trial_in_flight: false,
            transitions: 0,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    fn move_to(&mut self, to: State, now: Instant) -> Option<Transition> {
        if self.state == to {
            return None;
        }
        let t = Transition {
            from: self.state,
            to,
        };
        self.state = to;
        self.transitions += 1;
        match to {
            State::Open => self.opened_at = Some(now),
            State::Closed => {
                self.failures = 0;
                self.opened_at = None;
            }
            State::HalfOpen => {}
        }
        Some(t)
    }

    /// Asks to make one call at `now`.
    pub fn admit(&mut self, now: Instant) -> Admission {
        match self.state {
            State::Closed => Admission::Proceed(None),
            State::Open => {
                let since = self.opened_at.unwrap_or(now);
                if now.saturating_duration_since(since) >= self.reset_timeout {
                    self.trial_in_flight = true;
                    Admission::Proceed(self.move_to(State::HalfOpen, now))
                } else {
                    Admission::Rejected
                }
            }
            State::HalfOpen if self.trial_in_flight => Admission::Rejected,
            State::HalfOpen => {
                self.trial_in_flight = true;
                Admission::Proceed(None)
            }
        }
    }

    /// Reports the result of an admitted call.
    pub fn record(&mut self, ok: bool, now: Instant) -> Option<Transition> {
        self.trial_in_flight = false;
        if ok {
            self.failures = 0;
            return self.move_to(State::Closed, now);
        }
        self.failures = self.failures.saturating_add(1);
        match self.state {
            State::HalfOpen => self.move_to(State::Open, now),
            State::Closed if self.failures >= self.threshold => self.move_to(State::Open, now),
            _ => None,
        }
    }

    /// Forces the breaker closed (admin reset).
    pub fn reset(&mut self, now: Instant) -> Option<Transition> {
        self.trial_in_flight = false;
        self.failures = 0;
        self.move_to(State::Closed, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_at_threshold_fast_fails_half_opens_and_closes() {
        let t0 = Instant::now();
        let mut b = Breaker::new(3, Duration::from_secs(2));
        for i in 0..2 {
            assert_eq!(b.admit(t0), Admission::Proceed(None));
            assert_eq!(b.record(false, t0), None, "failure {i}");
        }
        assert_eq!(b.admit(t0), Admission::Proceed(None));
        let t = b.record(false, t0).unwrap();
        assert_eq!((t.from, t.to), (State::Closed, State::Open));
        assert_eq!(b.admit(t0 + Duration::from_secs(1)), Admission::Rejected);
        let later = t0 + Duration::from_secs(2);
        match b.admit(later) {
            Admission::Proceed(Some(t)) => assert_eq!(t.to, State::HalfOpen),
            other => panic!("{other:?}"),
        }
        // Only one trial at a time.
        assert_eq!(b.admit(later), Admission::Rejected);
        let t = b.record(true, later).unwrap();
        assert_eq!((t.from, t.to), (State::HalfOpen, State::Closed));
        assert_eq!(b.consecutive_failures(), 0);
        assert_eq!(b.transitions, 3);
    }

    #[test]
    fn failed_trial_reopens_and_success_resets_the_count() {
        let t0 = Instant::now();
        let mut b = Breaker::new(2, Duration::from_millis(10));
        b.admit(t0);
        b.record(false, t0);
        b.admit(t0);
        b.record(true, t0);
        assert_eq!(b.consecutive_failures(), 0);
        assert_eq!(b.state(), State::Closed);
        b.record(false, t0);
        b.record(false, t0);
        assert_eq!(b.state(), State::Open);
        let t1 = t0 + Duration::from_millis(10);
        assert!(matches!(b.admit(t1), Admission::Proceed(Some(_))));
        let t = b.record(false, t1).unwrap();
        assert_eq!((t.from, t.to), (State::HalfOpen, State::Open));
        assert_eq!(b.admit(t1), Admission::Rejected);
        assert_eq!(b.reset(t1).unwrap().to, State::Closed);
    }
}
