//! A small hand-written Prometheus registry: fixed sets of atomics, so recording a request
//! never allocates or locks. Rendering (on `/metrics`) is the only place that formats text.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// The route templates the service exposes (label values of `route`).
pub const ROUTES: &[&str] = &[
    "/healthz",
    "/readyz",
    "/metrics",
    "/status",
    "/v1/ticks",
    "/v1/ticks/lookup",
    "/v1/graph/build",
    "/v1/detections",
    "/v1/correlations",
    "/admin/faults",
    "/admin/feed/poll",
    "/admin/breaker/reset",
    "/admin/snapshot",
    "/admin/retention/sweep",
    "/admin/store/prune",
    "unmatched",
];

const STATUSES: &[u16] = &[
    200, 400, 401, 404, 405, 409, 413, 415, 422, 429, 500, 503, 504, 507,
];
const OTHER_STATUS: usize = STATUSES.len();

const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram with fixed buckets; sum kept in microseconds.
pub struct Histogram {
    buckets: [AtomicU64; 13],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, secs: f64) {
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add((secs * 1e6) as u64, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cum = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cum += self.buckets[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cum}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(
            out,
            "{name}_sum{braces} {}",
            self.sum_us.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// Every metric of docs/api.md that is a plain counter or gauge lives here; the rest
/// (breaker, limiter and its rejections, detectors, snapshot age, RSS) are read from their
/// owners at render time.
pub struct Metrics {
    requests: Vec<[AtomicU64; STATUSES.len() + 1]>,
    latency: Vec<Histogram>,
    pub load_shed: AtomicU64,
    pub inflight: AtomicI64,
    pub feed_ok: AtomicU64,
    pub feed_error: AtomicU64,
    pub feed_rejected: AtomicU64,
    pub query_timeouts: AtomicU64,
    pub graph_builds: AtomicU64,
    pub graph_build: Histogram,
    pub snapshots: AtomicU64,
    pub ticks_ingested: AtomicU64,
    /// Writes refused because the store is full: ingest requests answered 507, feed batches
    /// dropped (`store_full_rejections_total{writer}`).
    pub store_full_ingest: AtomicU64,
    pub store_full_feed: AtomicU64,
    /// Rows deleted by the store's retention (`store_pruned_rows_total{table}`).
    pub pruned_ticks: AtomicU64,
    pub pruned_log_events: AtomicU64,
    /// Injected faults (`faults:` in the config), for `injected_faults_total{fault}`: data
    /// requests delayed by `faults.latency`, given the `faults.tail` latency, answered with
    /// the `faults.errors` status.
    pub fault_delayed: AtomicU64,
    pub fault_tail_delayed: AtomicU64,
    pub fault_errors: AtomicU64,
    /// `(from, to)` → count, for `breaker_transitions_total`.
    pub breaker_transitions: Mutex<Vec<((&'static str, &'static str), u64)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: ROUTES
                .iter()
                .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
                .collect(),
            latency: ROUTES.iter().map(|_| Histogram::default()).collect(),
            load_shed: AtomicU64::new(0),
            inflight: AtomicI64::new(0),
            feed_ok: AtomicU64::new(0),
            feed_error: AtomicU64::new(0),
            feed_rejected: AtomicU64::new(0),
            query_timeouts: AtomicU64::new(0),
            graph_builds: AtomicU64::new(0),
            graph_build: Histogram::default(),
            snapshots: AtomicU64::new(0),
            ticks_ingested: AtomicU64::new(0),
            store_full_ingest: AtomicU64::new(0),
            store_full_feed: AtomicU64::new(0),
            pruned_ticks: AtomicU64::new(0),
            pruned_log_events: AtomicU64::new(0),
            fault_delayed: AtomicU64::new(0),
            fault_tail_delayed: AtomicU64::new(0),
            fault_errors: AtomicU64::new(0),
            breaker_transitions: Mutex::new(Vec::new()),
        }
    }
}

/// Index of a route template in [`ROUTES`] (`unmatched` when unknown).
pub fn route_index(template: Option<&str>) -> usize {
    template
        .and_then(|t| ROUTES.iter().position(|r| *r == t))
        .unwrap_or(ROUTES.len() - 1)
}

impl Metrics {
    pub fn record_request(&self, route: usize, status: u16, secs: f64) {
        let s = STATUSES
            .iter()
            .position(|x| *x == status)
            .unwrap_or(OTHER_STATUS);
        self.requests[route][s].fetch_add(1, Relaxed);
        self.latency[route].observe(secs);
    }

    pub fn record_transition(&self, from: &'static str, to: &'static str) {
        let mut t = self
            .breaker_transitions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match t.iter_mut().find(|(k, _)| *k == (from, to)) {
            Some((_, n)) => *n += 1,
            None => t.push(((from, to), 1)),
        }
    }

    /// Renders the request counters and histograms.
    pub fn render_http(&self, out: &mut String) {
        out.push_str("# HELP http_requests_total HTTP requests by route template and status.\n# TYPE http_requests_total counter\n");
        for (ri, route) in ROUTES.iter().enumerate() {
            for (si, n) in self.requests[ri].iter().enumerate() {
                let n = n.load(Relaxed);
                if n == 0 {
                    continue;
                }
                let status = STATUSES
                    .get(si)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "other".into());
                let _ = writeln!(
                    out,
                    "http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP http_request_duration_seconds Request latency by route template.\n# TYPE http_request_duration_seconds histogram\n");
        for (ri, route) in ROUTES.iter().enumerate() {
            if self.latency[ri].count.load(Relaxed) == 0 {
                continue;
            }
            self.latency[ri].render(
                out,
                "http_request_duration_seconds",
                &format!("route=\"{route}\""),
            );
        }
    }

    /// Renders `store_read_only`, `store_full_rejections_total{writer}` and
    /// `store_pruned_rows_total{table}`, every series even at zero.
    pub fn render_store(&self, out: &mut String, read_only: bool) {
        let _ = writeln!(
            out,
            "# HELP store_read_only 1 while the store is full and refuses writes.\n# TYPE store_read_only gauge\nstore_read_only {}",
            u8::from(read_only)
        );
        out.push_str("# HELP store_full_rejections_total Writes refused because the store is full.\n# TYPE store_full_rejections_total counter\n");
        for (w, v) in [
            ("ingest", &self.store_full_ingest),
            ("feed", &self.store_full_feed),
        ] {
            let _ = writeln!(
                out,
                "store_full_rejections_total{{writer=\"{w}\"}} {}",
                v.load(Relaxed)
            );
        }
        out.push_str("# HELP store_pruned_rows_total Rows deleted by the store's retention.\n# TYPE store_pruned_rows_total counter\n");
        for (t, v) in [
            ("ticks", &self.pruned_ticks),
            ("log_events", &self.pruned_log_events),
        ] {
            let _ = writeln!(
                out,
                "store_pruned_rows_total{{table=\"{t}\"}} {}",
                v.load(Relaxed)
            );
        }
    }

    /// Renders `injected_faults_active` (1 when the config injects any fault) and
    /// `injected_faults_total{fault}`, every series even at zero so that a scraper can tell
    /// "no faults injected" from "not exported".
    pub fn render_faults(&self, out: &mut String, active: bool) {
        sample(
            out,
            "injected_faults_active",
            "gauge",
            "1 when the config injects faults (a negative control, not for production).",
            u8::from(active),
        );
        out.push_str(
            "# HELP injected_faults_total Data requests given an injected fault, by fault.
# TYPE injected_faults_total counter
",
        );
        for (fault, n) in [
            ("latency", &self.fault_delayed),
            ("tail", &self.fault_tail_delayed),
            ("error", &self.fault_errors),
        ] {
            let _ = writeln!(
                out,
                "injected_faults_total{{fault=\"{fault}\"}} {}",
                n.load(Relaxed)
            );
        }
    }

    pub fn render_graph_build(&self, out: &mut String) {
        out.push_str("# HELP graph_build_seconds Time to build the correlation graph.\n# TYPE graph_build_seconds histogram\n");
        self.graph_build.render(out, "graph_build_seconds", "");
    }
}

/// Appends one sample with its HELP/TYPE header.
pub fn sample(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// The Rust heap as the binary's allocator counts it (`main.rs`): exact, unlike the RSS, which
/// moves with the allocator's arenas and page reuse. SQLite's own page cache is C `malloc` and
/// is not in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heap {
    /// Bytes allocated and not yet freed.
    pub live_bytes: u64,
}

/// The live-heap counter of the binary's global allocator, installed by the binary
/// (`main.rs`): the library alone cannot name the allocator a program links it with.
static LIVE_HEAP: std::sync::OnceLock<fn() -> u64> = std::sync::OnceLock::new();

/// Called by a binary whose global allocator counts its live bytes, before anything reads
/// [`heap`]. A second call is ignored.
pub fn count_heap_with(live_bytes: fn() -> u64) {
    let _ = LIVE_HEAP.set(live_bytes);
}

/// The live heap, or `None` where no counting allocator is installed (a build without the
/// `heap-stats` feature, or this library linked into a test or a benchmark): an absent series
/// rather than a zero that would read as "the heap is empty".
pub fn heap() -> Option<Heap> {
    LIVE_HEAP.get().map(|read| Heap { live_bytes: read() })
}

impl Heap {
    /// `heap_live_bytes`.
    pub fn render(&self, out: &mut String) {
        sample(
            out,
            "heap_live_bytes",
            "gauge",
            "Bytes allocated on the heap and not yet freed (exact, counted by the allocator).",
            self.live_bytes,
        );
    }
}

/// Resident set size of this process, from /proc/self/statm (falls back to sysinfo).
pub fn resident_memory_bytes() -> u64 {
    if let Ok(s) = std::fs::read_to_string("/proc/self/statm")
        && let Some(pages) = s
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u64>().ok())
    {
        return pages * 4096;
    }
    let pid = sysinfo::Pid::from_u32(std::process::id());
    let mut sys = sysinfo::System::new();
    sys.refresh_processes(sysinfo::ProcessesToUpdate::Some(&[pid]), true);
    sys.process(pid).map(|p| p.memory()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unit tests run without a counting allocator: the series stays absent, and the page
    /// shows an installed figure as is.
    #[test]
    fn the_heap_series_is_absent_until_an_allocator_counts() {
        assert_eq!(heap(), None);
        let mut page = String::new();
        Heap { live_bytes: 700 }.render(&mut page);
        assert!(
            page.ends_with("# TYPE heap_live_bytes gauge\nheap_live_bytes 700\n"),
            "{page}"
        );
    }
}
