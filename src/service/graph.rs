//! The multi-layer correlation graph built from the ticks of a window. Nodes are
//! (market, selection, venue) quotes; three layers of edges:
//!
//! - venue layer: the same selection quoted by two venues;
//! - market layer: two selections of one market at one venue (their implied probabilities sum
//!   to the market's book);
//! - temporal layer: two selections of one market whose bucketed prices co-move (|r| ≥ 0.5).
//!
//! Pure computation over a slice of ticks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::store::{Tick, pearson};

/// Time bucket → (sum of prices, count).
type Buckets = BTreeMap<i64, (f64, u32)>;

/// One quote: a selection's prices at one venue over the window.
#[derive(Debug, Clone)]
pub struct Quote {
    pub market: String,
    pub selection: String,
    pub venue: String,
    pub first: f64,
    pub first_ts: i64,
    pub last: f64,
    pub last_ts: i64,
}

/// A temporal-layer pair.
#[derive(Debug, Clone)]
pub struct CoMove {
    pub market: String,
    pub a: String,
    pub b: String,
    pub r: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Layers {
    pub venue: usize,
    pub market: usize,
    pub temporal: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Graph {
    pub quotes: Vec<Quote>,
    pub pairs: Vec<CoMove>,
    pub layers: Layers,
    /// Newest tick time in the window.
    pub newest_ts: i64,
}

impl Graph {
    pub fn nodes(&self) -> usize {
        self.quotes.len()
    }
    pub fn edges(&self) -> usize {
        self.layers.venue + self.layers.market + self.layers.temporal
    }

    /// Builds the graph; `bucket_ms` is the time bucket of the temporal layer.
    pub fn build(ticks: &[Tick], bucket_ms: i64) -> Graph {
        let mut quotes: BTreeMap<(&str, &str, &str), Quote> = BTreeMap::new();
        // (market, selection) → bucket → (sum, n)
        let mut series: BTreeMap<(&str, &str), Buckets> = BTreeMap::new();
        let mut newest_ts = i64::MIN;
        for t in ticks {
            let ts = t.ts_ms.unwrap_or(0);
            newest_ts = newest_ts.max(ts);
            quotes
                .entry((&t.market, &t.selection, &t.venue))
                .and_modify(|q| {
                    if ts >= q.last_ts {
                        q.last = t.price;
                        q.last_ts = ts;
                    }
                    if ts < q.first_ts {
                        q.first = t.price;
                        q.first_ts = ts;
                    }
                })
                .or_insert_with(|| Quote {
                    market: t.market.clone(),
                    selection: t.selection.clone(),
                    venue: t.venue.clone(),
                    first: t.price,
                    first_ts: ts,
                    last: t.price,
                    last_ts: ts,
                });
            let e = series
                .entry((&t.market, &t.selection))
                .or_default()
                .entry(ts / bucket_ms.max(1))
                .or_insert((0.0, 0));
            e.0 += t.price;
            e.1 += 1;
        }
        let quotes: Vec<Quote> = quotes.into_values().collect();
        let mut layers = Layers::default();
        let mut per_selection: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        let mut per_venue: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for q in &quotes {
            *per_selection.entry((&q.market, &q.selection)).or_default() += 1;
            *per_venue.entry((&q.market, &q.venue)).or_default() += 1;
        }
        layers.venue = per_selection.values().map(|k| k * (k - 1) / 2).sum();
        layers.market = per_venue.values().map(|k| k * (k - 1) / 2).sum();
        let keys: Vec<_> = series.keys().copied().collect();
        let mut pairs = Vec::new();
        for i in 0..keys.len() {
            for j in i + 1..keys.len() {
                let ((ma, sa), (mb, sb)) = (keys[i], keys[j]);
                if ma != mb {
                    continue;
                }
                let (xa, xb) = (&series[&keys[i]], &series[&keys[j]]);
                let (xs, ys): (Vec<f64>, Vec<f64>) = xa
                    .iter()
                    .filter_map(|(b, (s, n))| {
                        xb.get(b)
                            .map(|(s2, n2)| (s / f64::from(*n), s2 / f64::from(*n2)))
                    })
                    .unzip();
                let r = pearson(&xs, &ys);
                if r.abs() >= 0.5 {
                    layers.temporal += 1;
                }
                pairs.push(CoMove {
                    market: ma.to_string(),
                    a: sa.to_string(),
                    b: sb.to_string(),
                    r,
                });
            }
        }
        Graph {
            quotes,
            pairs,
            layers,
            newest_ts: if newest_ts == i64::MIN { 0 } else { newest_ts },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(m: &str, s: &str, v: &str, price: f64, ts: i64) -> Tick {
        Tick::at(m, s, v, price, ts)
    }

    #[test]
    fn layers_are_counted() {
        let ticks = vec![
            t("m1", "s1", "v1", 2.0, 0),
            t("m1", "s1", "v2", 2.1, 0),
            t("m1", "s2", "v1", 3.0, 0),
            t("m1", "s2", "v2", 3.1, 0),
            t("m1", "s1", "v1", 2.2, 1000),
            t("m1", "s2", "v1", 3.3, 1000),
        ];
        let g = Graph::build(&ticks, 1000);
        assert_eq!(g.nodes(), 4);
        assert_eq!(g.layers.venue, 2);
        assert_eq!(g.layers.market, 2);
        assert_eq!(g.layers.temporal, 1);
        let q = &g.quotes[0];
        assert_eq!((q.first, q.last), (2.0, 2.2));
    }
}
