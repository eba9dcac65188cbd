//! The upstream feed, pulled through the circuit breaker. The source is `feed.url` (an HTTP
//! GET answering ticks JSON) or, without one, an in-process synthetic source; admin faults
//! make either fail or slow. Every call runs under `breaker.call_timeout`.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::breaker::{Admission, State, Transition};
use super::store::Tick;
use super::{Shared, lock, now_ms};

/// Whether the feed answers or fails (an admin fault).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedMode {
    #[default]
    Ok,
    Fail,
}

/// An injected feed fault (set through the admin API).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedFault {
    #[serde(default)]
    pub mode: FeedMode,
    #[serde(default)]
    pub latency_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PollResult {
    pub result: &'static str,
    pub state: &'static str,
    pub elapsed_ms: f64,
}

fn announce(state: &Shared, t: Transition) {
    let (from, to) = (t.from.as_str(), t.to.as_str());
    state.metrics.record_transition(from, to);
    if t.to == State::Open {
        tracing::warn!(
            code = t.to.code(),
            dependency = "feed",
            from,
            to,
            "circuit breaker opened"
        );
    } else {
        tracing::info!(
            code = t.to.code(),
            dependency = "feed",
            from,
            to,
            "circuit breaker state changed"
        );
    }
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || store.set_meta("breaker.feed", to));
}

/// One pull through the breaker.
pub async fn poll_once(state: &Shared) -> PollResult {
    let started = Instant::now();
    let admission = lock(&state.breaker).admit(Instant::now());
    let done = |result, st: State| PollResult {
        result,
        state: st.as_str(),
        elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
    };
    match admission {
        Admission::Rejected => {
            state.metrics.feed_rejected.fetch_add(1, Ordering::Relaxed);
            return done("rejected", lock(&state.breaker).state());
        }
        Admission::Proceed(Some(t)) => announce(state, t),
        Admission::Proceed(None) => {}
    }
    let timeout = state.cfg.breaker.call_timeout.get();
    let outcome = match tokio::time::timeout(timeout, fetch(state)).await {
        Ok(Ok(ticks)) => {
            let store = state.store.clone();
            match tokio::task::spawn_blocking(move || store.insert_ticks(&ticks, now_ms())).await {
                Ok(Ok(n)) => {
                    state
                        .metrics
                        .ticks_ingested
                        .fetch_add(n as u64, Ordering::Relaxed);
                    Ok(())
                }
                // The feed answered: a full store is not the feed's failure (its breaker
                // must not open for it); the batch is dropped and counted.
                Ok(Err(super::store::WriteError::Full(_))) => {
                    state
                        .metrics
                        .store_full_feed
                        .fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("timed out after {timeout:?}")),
    };
    let ok = outcome.is_ok();
    if let Err(e) = &outcome {
        state.metrics.feed_error.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(code = "HB-FEED-FAIL", error = %e, "feed call failed");
    } else {
        state.metrics.feed_ok.fetch_add(1, Ordering::Relaxed);
    }
    let (t, st) = {
        let mut b = lock(&state.breaker);
        (b.record(ok, Instant::now()), b.state())
    };
    if let Some(t) = t {
        announce(state, t);
    }
    done(if ok { "ok" } else { "error" }, st)
}

async fn fetch(state: &Shared) -> Result<Vec<Tick>, String> {
    let fault = state
        .faults
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .feed
        .clone();
    if fault.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(fault.latency_ms)).await;
    }
    if fault.mode == FeedMode::Fail {
        return Err("injected feed failure".into());
    }
    match &state.cfg.feed.url {
        None => Ok(super::synthetic_ticks(9)),
        Some(url) => {
            let resp = state
                .http
                .get(url)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !resp.status().is_success() {
                return Err(format!("upstream answered {}", resp.status()));
            }
            let v: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
            let list = match v {
                serde_json::Value::Object(mut o) => o.remove("ticks").unwrap_or_default(),
                other => other,
            };
            let ticks: Vec<Tick> = serde_json::from_value(list).map_err(|e| e.to_string())?;
            for t in &ticks {
                t.validate()?;
            }
            Ok(ticks)
        }
    }
}
