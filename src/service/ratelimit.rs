//! Per-client-IP token buckets on governor's keyed GCRA with its monotonic clock.
//!
//! The state store is ours ([`CappedStore`]): 8 bytes of GCRA state (an `AtomicU64`) per
//! address in sharded tables keyed compactly — IPv4 as a `u32`, IPv6 apart as its 16 octets,
//! an IPv4-mapped IPv6 address as the IPv4 address it carries — with a hard cap on tracked
//! addresses across both. When the cap is reached, addresses not already tracked share one
//! overflow bucket until idle entries are cleaned up, so a spray of addresses costs bounded
//! memory and cannot starve the clients already tracked. The rejection path allocates nothing
//! of its own, reads no clock beyond the check's own (its `Retry-After` is known from the rate)
//! and does not log (rejections are counted once, here; a periodic summary is logged by the
//! cleanup task).

use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr};
use std::num::{NonZeroU32, NonZeroU64};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::HeaderValue;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use governor::clock::{Clock, MonotonicClock};
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::{Quota, RateLimiter};

use super::config::{Advertise, RateLimitConfig, parse_cidr};

/// The key every untracked address shares once the store is full.
pub const OVERFLOW_KEY: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

/// Hashes a key in a few instructions; the std default (SipHash) was 5–7 % of a check's time.
/// Not a keyed cryptographic hash, but seeded per table (stack and heap addresses, the clock),
/// so colliding addresses cannot be listed in advance; and the `max_clients` cap bounds what a
/// spray of addresses can make the tables hold.
type Hasher = foldhash::fast::RandomState;

/// One table: a 16-byte slot per IPv4 client (`u32` + `AtomicU64`), 24 bytes per IPv6 client
/// (`[u8; 16]` + `AtomicU64`), plus hashbrown's control byte; an `IpAddr` key (17 bytes) made
/// every slot 32 bytes.
type Table<K> = DashMap<K, AtomicU64, Hasher>;

/// Keyed GCRA state with a cap on the number of keys.
pub struct CappedStore {
    v4: Table<u32>,
    v6: Table<[u8; 16]>,
    /// Entries in both tables, reserved before an insert so that concurrent new clients
    /// cannot take the count past `cap` (and the cap check costs one load, not a walk of the
    /// shards).
    count: AtomicUsize,
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

impl CappedStore {
    fn new(cap: usize) -> CappedStore {
        CappedStore {
            v4: Table::with_hasher(Hasher::default()),
            v6: Table::with_hasher(Hasher::default()),
            count: AtomicUsize::new(0),
            overflow: AtomicU64::new(0),
            cap,
            overflow_hits: AtomicU64::new(0),
        }
    }

    fn measure_in<K: Eq + Hash, T, E>(
        &self,
        table: &Table<K>,
        key: K,
        f: impl Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    ) -> Result<T, E> {
        if let Some(cell) = table.get(&key) {
            return measure(&cell, f);
        }
        if !self.reserve() {
            self.overflow_hits.fetch_add(1, Ordering::Relaxed);
            return measure(&self.overflow, f);
        }
        match table.entry(key) {
            Entry::Occupied(cell) => {
                // Another request inserted it since the lookup: give the reservation back.
                self.count.fetch_sub(1, Ordering::Relaxed);
                measure(cell.get(), f)
            }
            Entry::Vacant(slot) => measure(&slot.insert(AtomicU64::new(0)), f),
        }
    }

    /// Takes one place under the cap, if one is left.
    fn reserve(&self) -> bool {
        self.count
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.cap).then_some(n + 1)
            })
            .is_ok()
    }

    /// Drops the entries whose state is at or below `below` (nanoseconds since the start).
    fn retain_recent(&self, below: u64) {
        let mut dropped = 0;
        let mut recent = |v: &mut AtomicU64| {
            let keep = *v.get_mut() > below;
            dropped += usize::from(!keep);
            keep
        };
        self.v4.retain(|_, v| recent(v));
        self.v6.retain(|_, v| recent(v));
        self.count.fetch_sub(dropped, Ordering::Relaxed);
    }

    fn shrink_to_fit(&self) {
        self.v4.shrink_to_fit();
        self.v6.shrink_to_fit();
    }

    /// Tracked addresses (IPv4, IPv6), counted in the tables.
    pub fn len(&self) -> (usize, usize) {
        (self.v4.len(), self.v6.len())
    }
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
        // `::ffff:a.b.c.d` is how a dual-stack socket shows an IPv4 peer: the same client.
        match key.to_canonical() {
            IpAddr::V4(a) => s.measure_in(&s.v4, a.to_bits(), f),
            IpAddr::V6(a) => s.measure_in(&s.v6, a.octets(), f),
        }
    }
}

type Governor = RateLimiter<IpAddr, StoreHandle, MonotonicClock, StateInformationMiddleware>;

/// The outcome of one check, with the header values to send.
pub enum Decision {
    /// Admitted; `advertise` holds `RateLimit-Remaining` and `RateLimit-Reset` when this
    /// answer is to carry the headers (see [`Advertise`]).
    Allow {
        advertise: Option<(HeaderValue, HeaderValue)>,
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
    /// An admitted answer carries the headers when at most this many tokens remain.
    advertise_at_most: u64,
    pub limit_header: HeaderValue,
    /// `Retry-After` of every rejection (see [`Limiter::new`]).
    retry_after: HeaderValue,
    pub rejections: AtomicU64,
}

const MAX_PREBUILT: u64 = 4096;

/// `0..=MAX_PREBUILT` as header values over one static string, built once per process: common
/// numbers never allocate, and cloning or dropping one touches no reference count (a shared
/// count was a cache line that both cores wrote on every response).
fn prebuilt() -> &'static [HeaderValue] {
    static TEXT: OnceLock<String> = OnceLock::new();
    static VALUES: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    VALUES.get_or_init(|| {
        let text: &'static str =
            TEXT.get_or_init(|| (0..=MAX_PREBUILT).map(|n| n.to_string()).collect());
        let mut at = 0;
        (0..=MAX_PREBUILT)
            .map(|n| {
                let len = n.checked_ilog10().map_or(1, |d| d as usize + 1);
                at += len;
                HeaderValue::from_static(&text[at - len..at])
            })
            .collect()
    })
}

fn number(n: u64) -> HeaderValue {
    match prebuilt().get(n as usize) {
        Some(v) => v.clone(),
        None => HeaderValue::from(n),
    }
}

impl Limiter {
    pub fn new(cfg: &RateLimitConfig) -> Limiter {
        let burst = NonZeroU32::new(cfg.burst).unwrap_or(NonZeroU32::MIN);
        let rate = NonZeroU32::new(cfg.per_second).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_second(rate).allow_burst(burst);
        let store = StoreHandle(Arc::new(CappedStore::new(cfg.max_clients)));
        // A request is refused only when its bucket is empty, and the last admission put the
        // next token at most one emission interval (1 / per_second) after it: the wait is
        // never longer than an interval, so in whole seconds it is that interval rounded up
        // (1 s for any rate of at least 1/s), known here rather than read from the clock on
        // every rejection.
        let interval = Duration::from_secs(1) / rate.get();
        let retry_after = interval.as_secs() + u64::from(interval.subsec_nanos() > 0);
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
            advertise_at_most: match cfg.headers {
                Advertise::Always => u64::MAX,
                Advertise::NearLimit => u64::from(cfg.burst / 2),
            },
            limit_header: number(cfg.burst.into()),
            retry_after: number(retry_after.max(1)),
            rejections: AtomicU64::new(0),
        }
    }

    pub fn is_exempt(&self, path: &str) -> bool {
        path.starts_with("/admin/") || self.exempt.iter().any(|e| e == path)
    }

    /// The client address: the peer, or the right-most untrusted `X-Forwarded-For` entry
    /// when the peer is a trusted proxy (entries appended by trusted proxies are skipped).
    pub fn client_ip(&self, peer: IpAddr, forwarded: Option<&[u8]>) -> IpAddr {
        if !self.trusts(peer) {
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
                    if !self.trusts(ip) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        client
    }

    /// Whether `ip` is a configured trusted proxy, whose `X-Forwarded-For` names the client.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// One token for `ip`.
    pub fn check(&self, ip: IpAddr) -> Decision {
        match self.governor.check_key(&ip) {
            Ok(snapshot) => {
                let remaining = u64::from(snapshot.remaining_burst_capacity());
                if remaining > self.advertise_at_most {
                    return Decision::Allow { advertise: None };
                }
                // Seconds until the bucket is full again.
                let missing = u64::from(self.burst).saturating_sub(remaining);
                let reset = missing.div_ceil(u64::from(self.per_second));
                Decision::Allow {
                    advertise: Some((number(remaining), number(reset))),
                }
            }
            Err(_) => {
                self.rejections.fetch_add(1, Ordering::Relaxed);
                Decision::Deny {
                    retry_after: self.retry_after.clone(),
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
        self.store.0.retain_recent(Nanos::from(below).as_u64());
        self.overflow_reset(below);
        self.store.0.shrink_to_fit();
    }

    fn overflow_reset(&self, below: Duration) {
        let below = Nanos::from(below).as_u64();
        let o = &self.store.0.overflow;
        let v = o.load(Ordering::Relaxed);
        if v != 0 && v <= below {
            let _ = o.compare_exchange(v, 0, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// Tracked client addresses, IPv4 and IPv6 together.
    pub fn tracked(&self) -> usize {
        let (v4, v6) = self.store.0.len();
        v4 + v6
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
    fn a_refused_client_is_admitted_again_within_one_interval() {
        // One token every 50 ms: `Retry-After: 1` is the interval rounded up, and holds.
        let mut c = cfg(3, 10);
        c.per_second = 20;
        let l = Limiter::new(&c);
        for _ in 0..3 {
            assert!(allowed(&l, "10.0.0.1"));
        }
        match l.check(ip("10.0.0.1")) {
            Decision::Deny { retry_after } => assert_eq!(retry_after, "1"),
            Decision::Allow { .. } => panic!("allowed past the burst"),
        }
        // At least one interval after the refusal, so after the last admission.
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            allowed(&l, "10.0.0.1"),
            "no token one interval after the refusal"
        );
        assert_eq!(l.rejections.load(Ordering::Relaxed), 1);
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

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn allowed(l: &Limiter, s: &str) -> bool {
        matches!(l.check(ip(s)), Decision::Allow { .. })
    }

    #[test]
    fn ipv4_ipv6_and_mapped_keys() {
        let l = Limiter::new(&cfg(1, 10));
        assert!(allowed(&l, "10.0.0.1"));
        // The IPv4-mapped form is the same client, in the same bucket.
        assert!(!allowed(&l, "::ffff:10.0.0.1"));
        assert!(allowed(&l, "2001:db8::1"));
        assert!(!allowed(&l, "2001:db8::1"));
        // A mapped address first seen in its IPv6 form is stored as IPv4.
        assert!(allowed(&l, "::ffff:10.0.0.2"));
        assert!(!allowed(&l, "10.0.0.2"));
        // Not mapped: the deprecated IPv4-compatible form and an address in another /96.
        assert!(allowed(&l, "::10.0.0.1"));
        assert!(allowed(&l, "2001:db8::10.0.0.1"));
        assert_eq!(l.store.0.len(), (2, 3));
        assert_eq!(l.tracked(), 5);
    }

    #[test]
    fn the_cap_spans_both_tables() {
        let l = Limiter::new(&cfg(1, 4));
        for a in ["10.0.0.1", "10.0.0.2", "2001:db8::1", "2001:db8::2"] {
            assert!(allowed(&l, a));
        }
        // Full: a new client of either family shares the overflow bucket (one token).
        assert!(allowed(&l, "2001:db8::3"));
        assert!(!allowed(&l, "10.0.0.3"));
        assert_eq!(l.store.0.overflow_hits.load(Ordering::Relaxed), 2);
        assert_eq!(l.store.0.len(), (2, 2));
        // Tracked clients keep their own (drained) buckets.
        assert!(!allowed(&l, "2001:db8::1"));
        assert_eq!(l.store.0.overflow_hits.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn concurrent_new_clients_never_pass_the_cap() {
        let l = Limiter::new(&cfg(1, 100));
        std::thread::scope(|s| {
            for t in 0..4u32 {
                let l = &l;
                s.spawn(move || {
                    for i in 0..1000u32 {
                        l.check(IpAddr::from((t << 16 | i).to_be_bytes()));
                        l.check(IpAddr::from(
                            (u128::from(t) << 64 | u128::from(i)).to_be_bytes(),
                        ));
                    }
                });
            }
        });
        assert_eq!(l.tracked(), 100);
    }

    #[test]
    fn cleanup_drops_idle_entries_of_both_tables_and_shrinks() {
        let mut c = cfg(1, 10_000);
        c.per_second = 1000;
        c.idle_timeout = crate::units::Dur::from_secs(0);
        let l = Limiter::new(&c);
        for i in 0..3000u32 {
            l.check(IpAddr::from((0x0a00_0000 | i).to_be_bytes()));
            l.check(IpAddr::from(
                (0x2001_0db8u128 << 96 | u128::from(i)).to_be_bytes(),
            ));
        }
        assert_eq!(l.store.0.len(), (3000, 3000));
        assert!(l.store.0.v4.capacity() >= 3000 && l.store.0.v6.capacity() >= 3000);
        // One token refills in 1 ms; after that every bucket is full, so idle.
        std::thread::sleep(Duration::from_millis(20));
        l.cleanup();
        assert_eq!(l.store.0.len(), (0, 0));
        assert_eq!(l.store.0.v4.capacity(), 0);
        assert_eq!(l.store.0.v6.capacity(), 0);
        // The places under the cap came back with the entries.
        assert_eq!(l.store.0.count.load(Ordering::Relaxed), 0);
        assert!(allowed(&l, "10.0.0.1"));
        assert_eq!(l.store.0.overflow_hits.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn cleanup_keeps_a_recent_client() {
        let mut c = cfg(2, 10);
        c.idle_timeout = crate::units::Dur::from_secs(3600);
        let l = Limiter::new(&c);
        assert!(allowed(&l, "10.0.0.1"));
        assert!(allowed(&l, "2001:db8::1"));
        l.cleanup();
        assert_eq!(l.store.0.len(), (1, 1));
        assert_eq!(l.store.0.count.load(Ordering::Relaxed), 2);
    }

    /// The `RateLimit-Remaining` value each of `n` admissions from one address advertises,
    /// `None` where the answer is to carry no headers.
    fn advertised(l: &Limiter, n: usize) -> Vec<Option<String>> {
        (0..n)
            .map(|_| match l.check(ip("10.0.0.1")) {
                Decision::Allow { advertise } => {
                    advertise.map(|(r, _)| r.to_str().unwrap().to_owned())
                }
                Decision::Deny { .. } => panic!("denied within the burst"),
            })
            .collect()
    }

    #[test]
    fn near_limit_advertises_once_half_the_burst_is_used() {
        let l = Limiter::new(&cfg(6, 10));
        let got = advertised(&l, 6);
        // 5 and 4 remain: nothing said; from 3 (half of 6) down, every answer says it.
        assert_eq!(got[..2], [None, None], "{got:?}");
        let tail: Vec<_> = got[2..].iter().flatten().map(String::as_str).collect();
        assert_eq!(tail, ["3", "2", "1", "0"]);
        // A burst of one: its only admission is already at the limit.
        assert_eq!(
            advertised(&Limiter::new(&cfg(1, 10)), 1),
            [Some("0".into())]
        );
    }

    #[test]
    fn always_advertises_on_every_admission() {
        let mut c = cfg(4, 10);
        c.headers = Advertise::Always;
        let got = advertised(&Limiter::new(&c), 4);
        let all: Vec<_> = got.iter().flatten().map(String::as_str).collect();
        assert_eq!(all, ["3", "2", "1", "0"]);
    }

    #[test]
    fn prebuilt_header_values_read_as_their_numbers() {
        for n in [
            0u64,
            1,
            9,
            10,
            99,
            100,
            999,
            1000,
            4095,
            4096,
            4097,
            1_000_000_000,
        ] {
            assert_eq!(number(n).to_str().unwrap(), n.to_string());
        }
        assert_eq!(Limiter::new(&cfg(100, 10)).limit_header, "100");
    }
}
