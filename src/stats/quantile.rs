//! Quantiles: the point estimate by linear interpolation and a distribution-free confidence
//! interval from order statistics, so that a tail (p99) can be compared where a rank test of
//! the whole sample is blind to it.

use serde::Serialize;
use statrs::distribution::{Binomial, DiscreteCDF};

use super::{sorted_clean, valid_confidence};

/// The q-quantile of `sample` by linear interpolation between order statistics: R's
/// `quantile(type = 7)`, numpy's `percentile` default. `None` when the sample is empty, holds a
/// NaN, or q is not in [0, 1].
pub fn quantile(sample: &[f64], q: f64) -> Option<f64> {
    if !(0.0..=1.0).contains(&q) {
        return None;
    }
    Some(type7(&sorted_clean(sample)?, q))
}

/// Type-7 quantile of a sorted, non-empty sample; q in [0, 1].
pub(super) fn type7(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    let frac = h - lo as f64;
    if frac == 0.0 {
        sorted[lo]
    } else {
        sorted[lo] + frac * (sorted[hi] - sorted[lo])
    }
}

/// A confidence interval for the q-quantile of the population a sample came from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct QuantileCi {
    pub q: f64,
    /// The sample's q-quantile ([`quantile`], type 7).
    pub estimate: f64,
    /// The order statistic x_(lo_rank).
    pub lo: f64,
    /// The order statistic x_(hi_rank).
    pub hi: f64,
    pub n: usize,
    /// 1-based ranks of the interval's ends in the sorted sample.
    pub lo_rank: usize,
    pub hi_rank: usize,
    /// The confidence level asked for.
    pub confidence: f64,
    /// The interval's exact coverage for a continuous population: P(lo_rank ≤ B < hi_rank),
    /// B ~ Binomial(n, q). At least `confidence`.
    pub coverage: f64,
}

/// A distribution-free confidence interval [x_(l), x_(u)] for the q-quantile, from order
/// statistics: the number B of sample values below the true quantile is Binomial(n, q), so
/// the interval covers it with probability P(l ≤ B < u) whatever the distribution (continuous).
/// The tails are kept apart, each missing with probability at most (1 − confidence)/2: l is the
/// largest rank with P(B < l) ≤ α/2 and u the smallest with P(B ≥ u) ≤ α/2 — the interval of
/// scipy's `quantile_test(x, q=…, p=q).confidence_interval(confidence)`.
///
/// `None` when the sample is empty, holds a NaN, q is not in (0, 1), `confidence` is not in
/// (0, 1), or the sample is too small: with n values even the extreme order statistics miss a
/// tail too often — the minimum itself lies above the q-quantile with probability (1 − q)ⁿ, the
/// maximum below it with probability qⁿ, and both must be at most α/2. For p99 at 95 % that
/// takes 368 values; [`quantile_ci_min_n`] tells the minimum for any (q, confidence).
pub fn quantile_ci(sample: &[f64], q: f64, confidence: f64) -> Option<QuantileCi> {
    let confidence = valid_confidence(confidence)?;
    if !(q > 0.0 && q < 1.0) {
        return None;
    }
    let sorted = sorted_clean(sample)?;
    let n = sorted.len();
    if n < quantile_ci_min_n(q, confidence) {
        return None;
    }
    let half = (1.0 - confidence) / 2.0;
    let b = Binomial::new(q, n as u64).ok()?;
    // P(B < l) = cdf(l − 1) rises with l: the largest l in 1..=n with cdf(l − 1) ≤ α/2.
    // l = 1 qualifies (n ≥ the minimum: (1 − q)ⁿ ≤ α/2), whatever rounding says.
    let lo_rank = last_true(1, n, |l| l == 1 || b.cdf(l as u64 - 1) <= half);
    // P(B ≥ u) = sf(u − 1) falls with u: the smallest u in 1..=n with sf(u − 1) ≤ α/2;
    // u = n qualifies (qⁿ ≤ α/2).
    let hi_rank = first_true(1, n, |u| u == n || b.sf(u as u64 - 1) <= half);
    let coverage = b.cdf(hi_rank as u64 - 1) - b.cdf(lo_rank as u64 - 1);
    Some(QuantileCi {
        q,
        estimate: type7(&sorted, q),
        lo: sorted[lo_rank - 1],
        hi: sorted[hi_rank - 1],
        n,
        lo_rank,
        hi_rank,
        confidence,
        coverage,
    })
}

/// The smallest sample for which [`quantile_ci`] gives an interval: the least n with both
/// (1 − q)ⁿ ≤ α/2 and qⁿ ≤ α/2, α = 1 − confidence (6 for the median at 95 %, 72 for p95,
/// 368 for p99, 3 688 for p99.9). `usize::MAX` when q or confidence is not in (0, 1) (no
/// sample is enough).
pub fn quantile_ci_min_n(q: f64, confidence: f64) -> usize {
    if valid_confidence(confidence).is_none() || !(q > 0.0 && q < 1.0) {
        return usize::MAX;
    }
    let half = (1.0 - confidence) / 2.0;
    let worse = q.max(1.0 - q);
    // worseⁿ ≤ half ⇔ n ≥ ln(half) / ln(worse); check the neighbours of the float estimate
    // against the powers themselves so the boundary is exact.
    let ok = |n: usize| n > 0 && (n as f64 * worse.ln()).exp() <= half;
    let guess = (half.ln() / worse.ln()).ceil();
    if !guess.is_finite() || guess > 1e15 {
        return usize::MAX;
    }
    let mut n = (guess as usize).max(1);
    while n > 1 && ok(n - 1) {
        n -= 1;
    }
    while !ok(n) {
        n += 1;
    }
    n
}

/// The largest i in lo..=hi with `pred(i)`, for a predicate true then false; `pred(lo)` holds.
fn last_true(lo: usize, hi: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut good, mut bad) = (lo, hi + 1);
    while bad - good > 1 {
        let mid = good + (bad - good) / 2;
        if pred(mid) {
            good = mid;
        } else {
            bad = mid;
        }
    }
    good
}

/// The smallest i in lo..=hi with `pred(i)`, for a predicate false then true; `pred(hi)` holds.
fn first_true(lo: usize, hi: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut bad, mut good) = (lo - 1, hi);
    while good - bad > 1 {
        let mid = bad + (good - bad) / 2;
        if pred(mid) {
            good = mid;
        } else {
            bad = mid;
        }
    }
    good
}

#[cfg(test)]
mod tests {
    use super::super::testing::close;
    use super::*;

    /// The test samples: ((7919 i) mod 1009) / 7 for i < n — many distinct values, some ties.
    fn sample(n: u64) -> Vec<f64> {
        (0..n).map(|i| ((i * 7919) % 1009) as f64 / 7.0).collect()
    }

    #[test]
    fn intervals_match_scipy_quantile_test() {
        // x = sample(n); scipy.stats.quantile_test(x, q=np.percentile(x, 100*q), p=q)
        //   .confidence_interval(0.95) → (low, high); np.percentile(x, 100*q) → estimate;
        // ranks and coverage binom.cdf(u-1, n, q) - binom.cdf(l-1, n, q) from the same rule.
        for (q, n, est, lo, hi, l, u, cov) in [
            (
                0.5,
                6,
                67.64285714285714,
                0.0,
                122.28571428571429,
                1,
                6,
                0.96875,
            ),
            (
                0.99,
                368,
                142.71285714285713,
                140.71428571428572,
                143.71428571428572,
                360,
                368,
                0.9624158204108587,
            ),
            (
                0.95,
                100,
                138.31428571428572,
                130.0,
                143.57142857142858,
                90,
                100,
                0.9826070607121812,
            ),
            (
                0.5,
                1000,
                72.21428571428572,
                67.71428571428571,
                76.71428571428571,
                469,
                532,
                0.9537088026395018,
            ),
            (
                0.99,
                2000,
                142.57285714285715,
                142.0,
                143.28571428571428,
                1971,
                1989,
                0.9578313970989479,
            ),
            (
                0.9,
                57,
                128.0857142857143,
                117.57142857142857,
                139.42857142857142,
                47,
                56,
                0.9576846742668155,
            ),
        ] {
            let ci = quantile_ci(&sample(n), q, 0.95).unwrap();
            assert_eq!(
                (ci.n, ci.lo_rank, ci.hi_rank),
                (n as usize, l, u),
                "q={q} n={n}"
            );
            close(ci.estimate, est, 1e-12);
            assert_eq!((ci.lo, ci.hi), (lo, hi), "q={q} n={n}");
            close(ci.coverage, cov, 1e-9);
            assert!(ci.coverage >= 0.95);
            assert!(ci.lo <= ci.estimate && ci.estimate <= ci.hi);
        }
    }

    #[test]
    fn coverage_boundary_at_the_minimum_sample() {
        // scipy.stats.binom: 0.5**6 = 0.015625 ≤ 0.025 < 0.5**5 = 0.03125;
        // 0.99**368 = 0.024760055390093627 ≤ 0.025 < 0.99**367 = 0.025010156959690534.
        // (scipy's quantile_test on 367 values gives high = nan: no upper order statistic.)
        for (q, min) in [
            (0.5, 6),
            (0.99, 368),
            (0.01, 368),
            (0.95, 72),
            (0.999, 3688),
        ] {
            assert_eq!(quantile_ci_min_n(q, 0.95), min, "q={q}");
            let at = sample(min as u64);
            assert!(quantile_ci(&at, q, 0.95).is_some(), "q={q} n={min}");
            assert!(
                quantile_ci(&at[..min - 1], q, 0.95).is_none(),
                "q={q} n={}",
                min - 1
            );
        }
    }

    #[test]
    fn bad_input_is_none() {
        let s = sample(500);
        assert_eq!(quantile_ci(&[], 0.5, 0.95), None);
        assert_eq!(quantile_ci(&[1.0, f64::NAN], 0.5, 0.5), None);
        for q in [0.0, 1.0, -0.1, 1.1, f64::NAN] {
            assert_eq!(quantile_ci(&s, q, 0.95), None, "q={q}");
            assert_eq!(quantile_ci_min_n(q, 0.95), usize::MAX, "q={q}");
        }
        for c in [0.0, 1.0, f64::NAN] {
            assert_eq!(quantile_ci(&s, 0.5, c), None, "c={c}");
            assert_eq!(quantile_ci_min_n(0.5, c), usize::MAX, "c={c}");
        }
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[1.0], 1.5), None);
    }

    #[test]
    fn quantile_interpolates_like_numpy() {
        // np.percentile([1, 2, 3, 4], [0, 25, 50, 90, 100]) → [1.0, 1.75, 2.5, 3.7, 4.0]
        let s = [4.0, 1.0, 3.0, 2.0];
        for (q, v) in [(0.0, 1.0), (0.25, 1.75), (0.5, 2.5), (0.9, 3.7), (1.0, 4.0)] {
            close(quantile(&s, q).unwrap(), v, 1e-15);
        }
        assert_eq!(quantile(&[7.0], 0.99), Some(7.0));
    }
}
