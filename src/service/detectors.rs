//! Detectors run over each built graph: arbitrage, steam move, stale venue, correlation
//! break. They are constructed once and reused by every build; each live detector object is
//! counted (constructor increments, `Drop` decrements) so `detector_instances` is honest.
//!
//! `rebuild_per_build` reproduces the defect the hardening fixed: a fresh set per build,
//! and the old sets pushed onto a list nobody clears. `leak_bytes_per_build` is a leak of a
//! chosen size with the detectors otherwise correct (for calibrating memory checks).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};

use serde::{Deserialize, Serialize};

use super::config::DetectorsConfig;
use super::graph::Graph;

static INSTANCES: AtomicI64 = AtomicI64::new(0);

/// Live detector objects in this process.
pub fn instances() -> i64 {
    INSTANCES.load(Ordering::Relaxed)
}

/// One finding.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Detection {
    pub detector: String,
    pub market: String,
    pub selection: String,
    pub detail: String,
}

/// Saved detector state (for snapshots).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DetectorState {
    pub name: String,
    pub runs: u64,
    pub hits: u64,
    #[serde(default)]
    pub memory: BTreeMap<String, f64>,
}

/// Per-detector working state. The scratch window (4 KiB) is what a real detector keeps
/// between runs; it is why a leaked detector costs real memory.
struct Core {
    name: &'static str,
    runs: u64,
    hits: u64,
    scratch: Vec<f64>,
    memory: BTreeMap<String, f64>,
}

impl Core {
    fn new(name: &'static str) -> Core {
        INSTANCES.fetch_add(1, Ordering::Relaxed);
        Core {
            name,
            runs: 0,
            hits: 0,
            scratch: vec![0.0; 512],
            memory: BTreeMap::new(),
        }
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        INSTANCES.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Arbitrage,
    Steam,
    Stale,
    CorrelationBreak,
}

/// One detector.
pub struct Detector {
    kind: Kind,
    core: Core,
}

impl Detector {
    fn new(kind: Kind) -> Detector {
        let name = match kind {
            Kind::Arbitrage => "arbitrage",
            Kind::Steam => "steam_move",
            Kind::Stale => "stale_venue",
            Kind::CorrelationBreak => "correlation_break",
        };
        Detector {
            kind,
            core: Core::new(name),
        }
    }

    fn run(&mut self, g: &Graph, cfg: &DetectorsConfig, out: &mut Vec<Detection>) {
        let before = out.len();
        let name = self.core.name;
        let push = |out: &mut Vec<Detection>, market: &str, selection: &str, detail: String| {
            out.push(Detection {
                detector: name.into(),
                market: market.into(),
                selection: selection.into(),
                detail,
            })
        };
        match self.kind {
            Kind::Arbitrage => {
                // Best (highest) odds per selection across venues; implied sum below 1.
                let mut best: BTreeMap<(&str, &str), f64> = BTreeMap::new();
                for q in &g.quotes {
                    let b = best.entry((&q.market, &q.selection)).or_insert(0.0);
                    *b = b.max(q.last);
                }
                let mut book: BTreeMap<&str, (f64, usize)> = BTreeMap::new();
                for ((m, _), odds) in &best {
                    let e = book.entry(m).or_insert((0.0, 0));
                    e.0 += 1.0 / odds;
                    e.1 += 1;
                }
                for (m, (sum, n)) in book {
                    if n >= 2 && sum < 1.0 {
                        push(
                            out,
                            m,
                            "",
                            format!("best implied probabilities sum to {sum:.4}"),
                        );
                    }
                }
            }
            Kind::Steam => {
                let span = cfg.steam_span.get().as_millis() as i64;
                let mut moves: BTreeMap<(&str, &str), Vec<(f64, i64)>> = BTreeMap::new();
                for q in &g.quotes {
                    let mv = (q.last - q.first) / q.first;
                    if mv.abs() >= cfg.steam_min_move.fraction() {
                        moves
                            .entry((&q.market, &q.selection))
                            .or_default()
                            .push((mv, q.last_ts));
                    }
                }
                for ((m, s), v) in moves {
                    let (min_ts, max_ts) = v.iter().fold((i64::MAX, i64::MIN), |(a, b), (_, t)| {
                        (a.min(*t), b.max(*t))
                    });
                    let same_dir = v.iter().all(|(mv, _)| mv.signum() == v[0].0.signum());
                    if v.len() >= 2 && same_dir && max_ts - min_ts <= span {
                        push(
                            out,
                            m,
                            s,
                            format!("{} venues moved {:+.1}%", v.len(), v[0].0 * 100.0),
                        );
                    }
                }
            }
            Kind::Stale => {
                let stale = cfg.stale_after.get().as_millis() as i64;
                let mut last: BTreeMap<&str, i64> = BTreeMap::new();
                for q in &g.quotes {
                    let e = last.entry(&q.venue).or_insert(i64::MIN);
                    *e = (*e).max(q.last_ts);
                }
                for (v, ts) in last {
                    if g.newest_ts - ts > stale {
                        push(
                            out,
                            "",
                            "",
                            format!("venue {v} silent for {} ms", g.newest_ts - ts),
                        );
                    }
                }
            }
            Kind::CorrelationBreak => {
                for p in &g.pairs {
                    let key = format!("{}/{}/{}", p.market, p.a, p.b);
                    if let Some(prev) = self.core.memory.insert(key, p.r)
                        && (p.r - prev).abs() > cfg.correlation_break
                    {
                        push(
                            out,
                            &p.market,
                            &p.a,
                            format!("{}~{} r {prev:.2} → {:.2}", p.a, p.b, p.r),
                        );
                    }
                }
            }
        }
        // Keep a rolling window of recent results in the scratch buffer.
        let slot = (self.core.runs as usize) % self.core.scratch.len();
        self.core.scratch[slot] = (out.len() - before) as f64;
        self.core.runs += 1;
        self.core.hits += (out.len() - before) as u64;
    }

    fn save(&self) -> DetectorState {
        DetectorState {
            name: self.core.name.into(),
            runs: self.core.runs,
            hits: self.core.hits,
            memory: self.core.memory.clone(),
        }
    }

    fn restore(&mut self, s: &DetectorState) {
        self.core.runs = s.runs;
        self.core.hits = s.hits;
        self.core.memory = s.memory.clone();
    }
}

fn new_set() -> Vec<Detector> {
    [
        Kind::Arbitrage,
        Kind::Steam,
        Kind::Stale,
        Kind::CorrelationBreak,
    ]
    .into_iter()
    .map(Detector::new)
    .collect()
}

/// The detectors and the result of the last build.
pub struct Detectors {
    cfg: DetectorsConfig,
    set: Vec<Detector>,
    /// The defect: every set ever built, never cleared (only with `rebuild_per_build`).
    retired: Vec<Vec<Detector>>,
    /// The tunable defect: `leak_bytes_per_build` bytes per build, kept for good.
    leaked: Vec<Box<[u8]>>,
    pub builds: u64,
    pub last: Vec<Detection>,
}

impl Detectors {
    pub fn new(cfg: DetectorsConfig) -> Detectors {
        Detectors {
            cfg,
            set: new_set(),
            retired: Vec::new(),
            leaked: Vec::new(),
            builds: 0,
            last: Vec::new(),
        }
    }

    /// Runs every detector over `g`; returns the number of detections.
    pub fn run(&mut self, g: &Graph) -> usize {
        if self.cfg.rebuild_per_build {
            let mut fresh = new_set();
            for (new, old) in fresh.iter_mut().zip(&self.set) {
                new.restore(&old.save());
            }
            let old = std::mem::replace(&mut self.set, fresh);
            self.retired.push(old);
        }
        let leak = self.cfg.leak_bytes_per_build.0 as usize;
        if leak > 0 {
            // Every byte written (a pattern, not zeros, so no page is left untouched or
            // shared with the zero page): the leak is resident, as a real one is.
            let pattern = (self.builds as u8) | 0x5a;
            self.leaked.push(vec![pattern; leak].into_boxed_slice());
        }
        let mut out = Vec::new();
        for d in &mut self.set {
            d.run(g, &self.cfg, &mut out);
        }
        self.builds += 1;
        self.last = out;
        self.last.len()
    }

    pub fn save(&self) -> Vec<DetectorState> {
        self.set.iter().map(Detector::save).collect()
    }

    pub fn restore(&mut self, states: &[DetectorState]) {
        for d in &mut self.set {
            if let Some(s) = states.iter().find(|s| s.name == d.core.name) {
                d.restore(s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::store::Tick;

    fn t(m: &str, s: &str, v: &str, price: f64, ts: i64) -> Tick {
        Tick::at(m, s, v, price, ts)
    }

    #[test]
    fn arbitrage_steam_and_reuse() {
        let ticks = vec![
            t("m1", "s1", "v1", 2.1, 0),
            t("m1", "s2", "v2", 2.2, 0),
            t("m2", "a", "v1", 3.0, 0),
            t("m2", "a", "v2", 3.0, 0),
            t("m2", "a", "v1", 2.7, 1000),
            t("m2", "a", "v2", 2.7, 2000),
            t("m2", "b", "v1", 1.5, 0),
        ];
        let g = Graph::build(&ticks, 1000);
        let mut d = Detectors::new(DetectorsConfig::default());
        d.run(&g);
        assert!(
            d.last
                .iter()
                .any(|x| x.detector == "arbitrage" && x.market == "m1")
        );
        assert!(
            d.last
                .iter()
                .any(|x| x.detector == "steam_move" && x.market == "m2")
        );
        for _ in 0..10 {
            d.run(&g);
        }
        // Reused, not re-created (the global instance gauge is checked end to end).
        assert_eq!(d.set.len(), 4);
        assert!(d.retired.is_empty());
    }

    #[test]
    fn rebuild_per_build_leaks() {
        let g = Graph::default();
        let cfg = DetectorsConfig {
            rebuild_per_build: true,
            ..DetectorsConfig::default()
        };
        let mut d = Detectors::new(cfg);
        for _ in 0..5 {
            d.run(&g);
        }
        assert_eq!(d.retired.len(), 5);
        assert_eq!(d.retired.iter().map(Vec::len).sum::<usize>(), 20);
        assert!(d.leaked.is_empty());
    }

    #[test]
    fn leak_bytes_per_build_keeps_filled_blocks() {
        let g = Graph::default();
        let cfg = DetectorsConfig {
            leak_bytes_per_build: crate::units::Size(1024),
            ..DetectorsConfig::default()
        };
        let mut d = Detectors::new(cfg);
        for _ in 0..3 {
            d.run(&g);
        }
        // The detectors themselves are still reused; only the blocks accumulate.
        assert_eq!((d.set.len(), d.retired.len()), (4, 0));
        assert_eq!(d.leaked.len(), 3);
        assert!(
            d.leaked
                .iter()
                .all(|b| b.len() == 1024 && b.iter().all(|&x| x != 0))
        );
    }
}
