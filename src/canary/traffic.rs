//! The canary's traffic: one paced, open-loop schedule sent to both versions alike.
//!
//! Request `i` of the mix is intended at `start + i / rate` on *both* sides, so whatever the
//! machine does at that moment (a build, a GC pause, the other side's load) hits both; the
//! mix is a smooth weighted round-robin, the same sequence on each side. Every request is
//! recorded (side, intended time, latency from the intended time, status, bytes), so
//! coordinated omission cannot hide a stall. A request due before the end but still not sent
//! a grace after it (the side held every connection) is recorded as not sent: an error.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

use crate::outcome::CheckError;
use crate::probe::load::{Conn, Endpoint, Request};

/// Which version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Baseline,
    Canary,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Baseline => "baseline",
            Role::Canary => "canary",
        }
    }
}

/// One request as sent and answered.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub role: Role,
    /// Position in the schedule (the same on both sides).
    pub index: u64,
    /// Which request of the mix.
    pub request: usize,
    /// Intended start, seconds after the traffic began.
    pub intended_s: f64,
    /// From the intended start to the whole answer.
    pub latency_ms: f64,
    /// `None`: no answer (transport failure, timeout, or never sent).
    pub status: Option<u16>,
    pub bytes: u64,
    /// Why there is no status.
    pub error: Option<String>,
}

/// What to send.
#[derive(Debug, Clone)]
pub struct Plan {
    pub mix: Vec<(Request, u32)>,
    /// Requests per second per side.
    pub rate: f64,
    pub duration: Duration,
    /// Connections per side.
    pub connections: usize,
    pub request_timeout: Duration,
}

/// The mix's sequence: smooth weighted round-robin (nginx's), so every window of the
/// schedule holds the requests in their weights' proportions, deterministically.
pub fn sequence(weights: &[u32], n: usize) -> Vec<usize> {
    let total: i64 = weights.iter().map(|w| *w as i64).sum();
    if total == 0 {
        return vec![];
    }
    let mut current = vec![0i64; weights.len()];
    (0..n)
        .map(|_| {
            for (c, w) in current.iter_mut().zip(weights) {
                *c += *w as i64;
            }
            let best = (0..current.len())
                .max_by_key(|&k| (current[k], std::cmp::Reverse(k)))
                .unwrap_or(0);
            current[best] -= total;
            best
        })
        .collect()
}

/// Runs the schedule against both sides, each record sent on `tx` as it completes. Stops at
/// the duration (plus the grace for late requests), or as soon as `stop` is set.
pub async fn run(
    sides: [(Role, Endpoint, Vec<IpAddr>); 2],
    plan: &Plan,
    tx: UnboundedSender<Record>,
    stop: Arc<AtomicBool>,
) -> Result<(), CheckError> {
    let due = (plan.rate * plan.duration.as_secs_f64()).ceil() as usize;
    let weights: Vec<u32> = plan.mix.iter().map(|(_, w)| *w).collect();
    let seq = Arc::new(sequence(&weights, due));
    let mix: Arc<Vec<Request>> = Arc::new(plan.mix.iter().map(|(r, _)| r.clone()).collect());
    // Connect everything first so set-up is not charged to the first requests.
    let mut conns = Vec::new();
    for (role, ep, sources) in &sides {
        if sources.is_empty() {
            return Err(CheckError::Local(
                "no source address for the traffic".into(),
            ));
        }
        for c in 0..plan.connections {
            let src = sources[c % sources.len()];
            let conn = Conn::open(ep, src)
                .await
                .map_err(|e| CheckError::Target(format!("{}: {e}", role.as_str())))?;
            conns.push((*role, ep.clone(), conn));
        }
    }
    let start = Instant::now() + Duration::from_millis(5);
    let end = start + plan.duration;
    let grace = plan.request_timeout.min(Duration::from_secs(1));
    let counters = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
    let mut tasks = tokio::task::JoinSet::new();
    for (role, ep, mut conn) in conns {
        let next = counters[(role == Role::Canary) as usize].clone();
        let (seq, mix, tx, stop) = (seq.clone(), mix.clone(), tx.clone(), stop.clone());
        let (rate, timeout) = (plan.rate, plan.request_timeout);
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&which) = seq.get(i as usize) else {
                    break;
                };
                let offset = Duration::from_secs_f64(i as f64 / rate);
                let intended = start + offset;
                if intended >= end || stop.load(Ordering::Relaxed) {
                    break;
                }
                if intended > Instant::now() {
                    tokio::time::sleep_until(intended).await;
                }
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let mut rec = Record {
                    role,
                    index: i,
                    request: which,
                    intended_s: offset.as_secs_f64(),
                    latency_ms: 0.0,
                    status: None,
                    bytes: 0,
                    error: None,
                };
                if Instant::now() >= end + grace {
                    rec.latency_ms = (end + grace - intended).as_secs_f64() * 1e3;
                    rec.error = Some("not sent: every connection was busy".into());
                    let _ = tx.send(rec);
                    continue;
                }
                let res =
                    tokio::time::timeout(timeout, conn.exchange(&ep, &mix[which], false)).await;
                rec.latency_ms = intended.elapsed().as_secs_f64() * 1e3;
                match res {
                    Ok(Ok(a)) => {
                        rec.status = Some(a.status);
                        rec.bytes = a.size;
                    }
                    Ok(Err(e)) => rec.error = Some(e),
                    Err(_) => rec.error = Some(format!("no answer within {timeout:?}")),
                }
                if rec.status.is_none() {
                    conn.reset();
                }
                if tx.send(rec).is_err() {
                    break;
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.map_err(|e| CheckError::Local(format!("traffic task failed: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_follows_its_weights_in_every_window() {
        let s = sequence(&[3, 1], 8);
        assert_eq!(s, vec![0, 0, 1, 0, 0, 0, 1, 0]);
        let s = sequence(&[1, 1, 2], 400);
        assert_eq!(s.iter().filter(|k| **k == 2).count(), 200);
        assert_eq!(s.iter().filter(|k| **k == 0).count(), 100);
        assert!(sequence(&[0, 0], 5).is_empty());
        assert_eq!(sequence(&[5], 3), vec![0, 0, 0]);
    }
}
