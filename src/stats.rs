//! The statistics the canary judge stands on: two-sample rank tests (Mann–Whitney U with an
//! exact small-sample path, the Hodges–Lehmann shift and its distribution-free interval),
//! proportions (Wilson intervals, Newcombe's interval for a difference, Fisher's exact test)
//! and order-statistic intervals for quantiles.
//!
//! A leaf: pure functions of the numbers they are given, no I/O, no clock, no randomness, and
//! nothing else of the crate (the judge decides; this module only computes). Bad input (an
//! empty sample, a NaN, a count above its total, a confidence outside (0, 1)) gives `None`,
//! never a panic. Each function names the reference implementation it agrees with (R, scipy,
//! statsmodels, SAS); the unit tests quote their outputs.
//!
//! The normal quantile and the binomial distribution come from `statrs`, erfc from `libm`; the
//! rest is here because no maintained crate has it (exact U distribution, Moses interval,
//! Newcombe's interval).

mod proportion;
mod quantile;
mod rank;

pub use proportion::{Proportions, compare_proportions, fisher_exact, wilson};
pub use quantile::{QuantileCi, quantile, quantile_ci, quantile_ci_min_n};
pub use rank::{MannWhitney, PMethod, Shift, hodges_lehmann, mann_whitney};

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};

/// Which way the canary (x) is compared with the baseline (y).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Alternative {
    /// x and y differ, either way.
    TwoSided,
    /// x is stochastically larger than y (for proportions: x's rate is higher).
    Greater,
    /// x is stochastically smaller than y (for proportions: x's rate is lower).
    Less,
}

/// A closed interval `[lo, hi]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    pub lo: f64,
    pub hi: f64,
}

/// Location and tail of one sample; quantiles by linear interpolation (R type 7, numpy's
/// default), as [`quantile`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    pub median: f64,
    pub p95: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
}

/// n, mean, median, p95, p99, min and max of `sample`; `None` when it is empty or holds a NaN.
pub fn summary(sample: &[f64]) -> Option<Summary> {
    let sorted = sorted_clean(sample)?;
    let n = sorted.len();
    Some(Summary {
        n,
        mean: sorted.iter().sum::<f64>() / n as f64,
        median: quantile::type7(&sorted, 0.5),
        p95: quantile::type7(&sorted, 0.95),
        p99: quantile::type7(&sorted, 0.99),
        min: sorted[0],
        max: sorted[n - 1],
    })
}

/// `sample` sorted ascending; `None` when it is empty or holds a NaN.
fn sorted_clean(sample: &[f64]) -> Option<Vec<f64>> {
    if sample.is_empty() || sample.iter().any(|v| v.is_nan()) {
        return None;
    }
    let mut v = sample.to_vec();
    v.sort_unstable_by(f64::total_cmp);
    Some(v)
}

/// `confidence` when it is a usable confidence level: strictly between 0 and 1.
fn valid_confidence(confidence: f64) -> Option<f64> {
    (confidence > 0.0 && confidence < 1.0).then_some(confidence)
}

/// The two-sided standard normal quantile for `confidence`: Φ⁻¹(1 − (1 − confidence)/2),
/// 1.959963984540054 for 0.95. `confidence` must be in (0, 1).
///
/// statrs' inverse (rational approximations) is refined by one Newton step on the upper tail
/// with libm's erfc, which takes it from ~1e-12 to ~1e-16 relative at high confidence.
fn z_two_sided(confidence: f64) -> f64 {
    let tail = (1.0 - confidence) / 2.0;
    let z = Normal::standard().inverse_cdf(1.0 - tail);
    let density = (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt();
    if density > 0.0 {
        z + (norm_sf(z) - tail) / density
    } else {
        z
    }
}

/// Φ(z), accurate in the lower tail (through erfc, not 1 − erf).
fn norm_cdf(z: f64) -> f64 {
    0.5 * libm::erfc(-z / std::f64::consts::SQRT_2)
}

/// 1 − Φ(z), accurate in the upper tail.
fn norm_sf(z: f64) -> f64 {
    0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
}

#[cfg(test)]
pub(crate) mod testing {
    /// `a` and `b` agree to a relative tolerance `rel` (absolute near zero).
    #[track_caller]
    pub fn close(a: f64, b: f64, rel: f64) {
        let scale = a.abs().max(b.abs()).max(1e-300);
        assert!(
            a == b || (a - b).abs() <= rel * scale || (a - b).abs() <= rel * 1e-3,
            "{a} != {b} (rel {rel})"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::testing::close;
    use super::*;

    #[test]
    fn normal_quantiles_and_tails() {
        // scipy.stats.norm.ppf(0.975) → 1.959963984540054; norm.ppf(0.99) → 2.3263478740408408
        close(z_two_sided(0.95), 1.959963984540054, 1e-12);
        close(z_two_sided(0.98), 2.3263478740408408, 1e-12);
        // scipy.stats.norm.isf((1 - 0.999999) / 2) → 4.8916384756929325 (the tail in f64 is
        // 5.000000000143778e-07, not 5e-7; statrs alone is 1e-12 off here)
        close(z_two_sided(0.999999), 4.8916384756929325, 1e-14);
        // scipy.stats.norm.sf(8) → 6.22096057427174e-16 (1 − cdf would give 0)
        close(norm_sf(8.0), 6.22096057427174e-16, 1e-12);
        close(norm_cdf(-8.0), 6.22096057427174e-16, 1e-12);
        close(norm_cdf(0.0), 0.5, 1e-15);
    }

    #[test]
    fn summary_matches_numpy() {
        // s = [((i*7919) % 1009)/7 for i in range(1000)]
        // np.mean(s), np.median(s), np.percentile(s, 95), np.percentile(s, 99), min, max →
        // 72.09685714285715 72.21428571428572 136.8642857142857 142.57285714285715 0.0 144.0
        let s: Vec<f64> = (0..1000u64)
            .map(|i| ((i * 7919) % 1009) as f64 / 7.0)
            .collect();
        let m = summary(&s).unwrap();
        assert_eq!(m.n, 1000);
        close(m.mean, 72.09685714285715, 1e-12);
        close(m.median, 72.21428571428572, 1e-12);
        close(m.p95, 136.8642857142857, 1e-12);
        close(m.p99, 142.57285714285715, 1e-12);
        assert_eq!((m.min, m.max), (0.0, 144.0));
    }

    #[test]
    fn summary_edges() {
        assert_eq!(summary(&[]), None);
        assert_eq!(summary(&[1.0, f64::NAN]), None);
        let one = summary(&[4.5]).unwrap();
        assert_eq!(
            (
                one.n, one.mean, one.median, one.p95, one.p99, one.min, one.max
            ),
            (1, 4.5, 4.5, 4.5, 4.5, 4.5, 4.5)
        );
    }
}
