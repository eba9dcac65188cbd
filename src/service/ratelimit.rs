//! Per-client-IP token buckets on governor's keyed GCRA with its monotonic clock.
//!
//! The state store is ours ([`CappedStore`]): a DashMap of one `AtomicU64` per address, with a
//! hard cap on tracked addresses. When the cap is reached, addresses not already tracked share
//! one overflow bucket until idle entries are cleaned up, so a spray of addresses costs bounded
//! memory and cannot starve the clients already tracked. The rejection path allocates nothing
//! of its own, builds no clock and does not log (rejections are counted; a periodic summary is
//! logged by the cleanup task).

use std::net::{IpAddr, Ipv4Addr};
use std::num::{NonZeroU32, NonZeroU64};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::HeaderValue;
use dashmap::DashMap;
use governor::clock::{Clock, MonotonicClock};
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::{Quota, RateLimiter};

use super::config::{RateLimitConfig, parse_cidr};

/// The key every untracked address shares once the store is full.
pub const OVERFLOW_KEY: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

/// Keyed GCRA state with a cap on the number of keys.
pub struct CappedStore {
    map: DashMap<IpAddr, AtomicU64>,
    overflow: AtomicU64,
    cap: usize,
    pub overflow_hits: AtomicU64,
}

fn measure<T, E>(
    cell: &AtomicU64,
    f: impl Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
) -> Result<T, E> {
    // The same compare-and-swap loop as governor's own in-memory state.
    let mut prev = cell.load(Ordering::Acquire);
    let mut decision = f(NonZeroU64::new(prev).map(|n| n.get().into()));
    while let Ok((result, new)) = decision {
        match cell.compare_exchange_weak(prev, new.into(), Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return Ok(result),
            Err(next) => prev = next,
        }
        decision = f(NonZeroU64::new(prev).map(|n| n.get().into()));
    }
    decision.map(|(r, _)| r)
}

/// A shared handle, so the service can count and clean the store the limiter uses.
#[derive(Clone)]
pub struct StoreHandle(pub Arc<CappedStore>);

impl StateStore for StoreHandle {
    type Key = IpAddr;

    fn measure_and_replace<T, F, E>(&self, key: &IpAddr, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let s = &self.0;
        if let Some(cell) = s.map.get(key) {
            return measure(&cell, f);
        }
        if s.map.len() >= s.cap {
            s.overflow_hits.fetch_add(1, Ordering::Relaxed);
            return measure(&s.overflow, f);
        }
        let cell = s.map.entry(*key).or_insert_with(|| AtomicU64::new(0));
        measure(&cell, f)
    }
}

impl ShrinkableKeyedStateStore<IpAddr> for StoreHandle {
    fn retain_recent(&self, drop_below: Nanos) {
        let below: u64 = drop_below.into();
        self.0.map.retain(|_, v| v.load(Ordering::Relaxed) > below);
    }
    fn shrink_to_fit(&self) {
        self.0.map.shrink_to_fit();
    }
    fn len(&self) -> usize {
        self.0.map.len()
    }
    fn is_empty(&self) -> bool {
        self.0.map.is_empty()
    }
}

type Governor = RateLimiter<IpAddr, StoreHandle, MonotonicClock, StateInformationMiddleware>;

/// The outcome of one check, with the header values to send.
pub enum Decision {
    Allow {
        remaining: HeaderValue,
        reset: HeaderValue,
    },
    Deny {
        retry_after: HeaderValue,
    },
}

/// The limiter plus what the middleware needs: trusted proxies, exempt paths, pre-built
/// header values.
pub struct Limiter {
    governor: Governor,
    pub store: StoreHandle,
    trusted: Vec<ipnet::IpNet>,
    exempt: Vec<String>,
    pub burst: u32,
    pub per_second: u32,
    pub max_clients: usize,
    idle_timeout: Duration,
    start: std::time::Instant,
    pub limit_header: HeaderValue,
    /// `0..=MAX_PREBUILT` as header values, so common numbers never allocate.
    numbers: Vec<HeaderValue>,
    pub rejections: AtomicU64,
}

const MAX_PREBUILT: u64 = 4096;

impl Limiter {
    pub fn new(cfg: &RateLimitConfig) -> Limiter {
        let burst = NonZeroU32::new(cfg.burst).unwrap_or(NonZeroU32::MIN);
        let rate = NonZeroU32::new(cfg.per_second).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_second(rate).allow_burst(burst);
        let store = StoreHandle(Arc::new(CappedStore {
            map: DashMap::new(),
            overflow: AtomicU64::new(0),
            cap: cfg.max_clients,
            overflow_hits: AtomicU64::new(0),
        }));
        let start = MonotonicClock.now();
        let governor: Governor = RateLimiter::new(quota, store.clone(), MonotonicClock);
        Limiter {
            governor,
            store,
            trusted: cfg
                .trusted_proxies
                .iter()
                .filter_map(|p| parse_cidr(p))
                .collect(),
            exempt: cfg.exempt.clone(),
            burst: cfg.burst,
            per_second: cfg.per_second,
            max_clients: cfg.max_clients,
            idle_timeout: cfg.idle_timeout.get(),
            start,
            limit_header: HeaderValue::from(cfg.burst),
            numbers: (0..=MAX_PREBUILT).map(HeaderValue::from).collect(),
            rejections: AtomicU64::new(0),
        }
    }

    fn number(&self, n: u64) -> HeaderValue {
        match self.numbers.get(n as usize) {
            Some(v) => v.clone(),
            None => HeaderValue::from(n),
        }
    }

    pub fn is_exempt(&self, path: &str) -> bool {
        path.starts_with("/admin/") || self.exempt.iter().any(|e| e == path)
    }

    /// The client address: the peer, or the right-most untrusted `X-Forwarded-For` entry
    /// when the peer is a trusted proxy (entries appended by trusted proxies are skipped).
    pub fn client_ip(&self, peer: IpAddr, forwarded: Option<&[u8]>) -> IpAddr {
        if !self.is_trusted(peer) {
            return peer;
        }
        let Some(raw) = forwarded.and_then(|f| std::str::from_utf8(f).ok()) else {
            return peer;
        };
        let mut client = peer;
        for entry in raw.rsplit(',') {
            match entry.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip;
                    if !self.is_trusted(ip) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        client
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// One token for `ip`.
    pub fn check(&self, ip: IpAddr) -> Decision {
        match self.governor.check_key(&ip) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity() as u64;
                // Seconds until the bucket is full again.
                let missing = (self.burst as u64).saturating_sub(remaining);
                let reset = missing.div_ceil(self.per_second as u64);
                Decision::Allow {
                    remaining: self.number(remaining),
                    reset: self.number(reset),
                }
            }
            Err(not_until) => {
                self.rejections.fetch_add(1, Ordering::Relaxed);
                let wait = not_until.wait_time_from(MonotonicClock.now());
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                Decision::Deny {
                    retry_after: self.number(secs.max(1)),
                }
            }
        }
    }

    /// Drops idle buckets (older than `idle_timeout` beyond a full refill) and returns memory.
    pub fn cleanup(&self) {
        // A stored value is the bucket's theoretical arrival time, in nanoseconds since the
        // limiter started; at or before "now" the bucket is full again. Keep an entry until it
        // has been full for `idle_timeout`.
        let elapsed = MonotonicClock.now().duration_since(self.start);
        let below = elapsed.saturating_sub(self.idle_timeout);
        self.store.retain_recent(Nanos::from(below));
        self.overflow_reset(below);
        self.store.shrink_to_fit();
    }

    fn overflow_reset(&self, below: Duration) {
        let below = Nanos::from(below).as_u64();
        let o = &self.store.0.overflow;
        let v = o.load(Ordering::Relaxed);
        if v != 0 && v <= below {
            let _ = o.compare_exchange(v, 0, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    pub fn tracked(&self) -> usize {
        self.store.0.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(burst: u32, max_clients: usize) -> RateLimitConfig {
        RateLimitConfig {
            burst,
            per_second: 1,
            max_clients,
            trusted_proxies: vec!["127.0.0.1".into()],
            ..RateLimitConfig::default()
        }
    }

    #[test]
    fn burst_then_reject() {
        let l = Limiter::new(&cfg(3, 10));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert!(matches!(l.check(ip), Decision::Allow { .. }));
        }
        match l.check(ip) {
            Decision::Deny { retry_after } => assert_eq!(retry_after, "1"),
            Decision::Allow { .. } => panic!("fourth request allowed"),
        }
        assert!(matches!(
            l.check("10.0.0.2".parse().unwrap()),
            Decision::Allow { .. }
        ));
    }

    #[test]
    fn cap_sends_new_clients_to_the_overflow_bucket() {
        let l = Limiter::new(&cfg(2, 4));
        for i in 0..100u32 {
            l.check(IpAddr::from(i.to_be_bytes()));
        }
        assert_eq!(l.tracked(), 4);
        assert!(l.store.0.overflow_hits.load(Ordering::Relaxed) >= 96);
        // A tracked client keeps its own bucket.
        assert!(matches!(
            l.check(IpAddr::from(0u32.to_be_bytes())),
            Decision::Allow { .. }
        ));
    }

    #[test]
    fn forwarded_only_from_trusted_peers() {
        let l = Limiter::new(&cfg(2, 4));
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        let xff = b"1.2.3.4, 5.6.7.8".as_slice();
        assert_eq!(
            l.client_ip(proxy, Some(xff)),
            "5.6.7.8".parse::<IpAddr>().unwrap()
        );
        assert_eq!(l.client_ip(other, Some(xff)), other);
        assert_eq!(l.client_ip(proxy, Some(b"garbage")), proxy);
    }
}
