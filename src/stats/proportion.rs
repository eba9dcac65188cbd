//! Proportions: the Wilson score interval, Newcombe's hybrid score interval for a difference
//! of two proportions, and Fisher's exact test — so that error counts are judged as counts
//! out of totals, never as ranks of mostly-zero series.

use serde::Serialize;

use super::{Alternative, Interval, valid_confidence, z_two_sided};

/// R's `fisher.test` tolerance: a table as likely as the observed one, within this relative
/// error, counts as "at least as extreme" for the two-sided p-value.
const FISHER_REL_ERR: f64 = 1e-7;

/// The Wilson score interval for a proportion `successes / n`, without continuity correction:
/// R's `prop.test(correct = FALSE)$conf.int`, statsmodels'
/// `proportion_confint(count, nobs, alpha, method='wilson')`. At 0 successes the lower end is
/// exactly 0, at n successes the upper end exactly 1.
///
/// `None` when `n` is 0, `successes > n`, or `confidence` is not in (0, 1).
pub fn wilson(successes: u64, n: u64, confidence: f64) -> Option<Interval> {
    let confidence = valid_confidence(confidence)?;
    if n == 0 || successes > n {
        return None;
    }
    Some(wilson_z(successes, n, z_two_sided(confidence)))
}

fn wilson_z(successes: u64, n: u64, z: f64) -> Interval {
    let nf = n as f64;
    let p = successes as f64 / nf;
    let z2 = z * z;
    let denom = 1.0 + z2 / nf;
    let center = (p + z2 / (2.0 * nf)) / denom;
    let half = z / denom * (p * (1.0 - p) / nf + z2 / (4.0 * nf * nf)).sqrt();
    Interval {
        lo: if successes == 0 {
            0.0
        } else {
            (center - half).max(0.0)
        },
        hi: if successes == n {
            1.0
        } else {
            (center + half).min(1.0)
        },
    }
}

/// Two proportions compared: the canary's `x / n_x` against the baseline's `y / n_y`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Proportions {
    pub x: u64,
    pub n_x: u64,
    pub y: u64,
    pub n_y: u64,
    /// x / n_x
    pub rate_x: f64,
    /// y / n_y
    pub rate_y: f64,
    /// The Wilson interval of each rate.
    pub x_interval: Interval,
    pub y_interval: Interval,
    /// x/n_x − y/n_y
    pub diff: f64,
    /// Newcombe's hybrid score interval for `diff` (his method 10), built from the two Wilson
    /// intervals: statsmodels' `confint_proportions_2indep(..., method='newcomb',
    /// compare='diff')`.
    pub diff_interval: Interval,
    /// Fisher's exact test p-value for the alternative (`Greater`: the canary's rate is higher).
    pub p: f64,
    pub confidence: f64,
}

/// Compares the canary's proportion `x / n_x` with the baseline's `y / n_y`: both Wilson
/// intervals, the difference with Newcombe's interval, and Fisher's exact p-value for `alt`.
///
/// `None` when a total is 0, a count exceeds its total, or `confidence` is not in (0, 1).
pub fn compare_proportions(
    x: u64,
    n_x: u64,
    y: u64,
    n_y: u64,
    alt: Alternative,
    confidence: f64,
) -> Option<Proportions> {
    let confidence = valid_confidence(confidence)?;
    let p = fisher_exact(x, n_x, y, n_y, alt)?;
    let z = z_two_sided(confidence);
    let (wx, wy) = (wilson_z(x, n_x, z), wilson_z(y, n_y, z));
    let (rate_x, rate_y) = (x as f64 / n_x as f64, y as f64 / n_y as f64);
    let diff = rate_x - rate_y;
    // Newcombe (1998), method 10: each end of the difference combines the two rates'
    // distances to the Wilson ends on the side that moves the difference that way.
    let below = ((rate_x - wx.lo).powi(2) + (wy.hi - rate_y).powi(2)).sqrt();
    let above = ((wx.hi - rate_x).powi(2) + (rate_y - wy.lo).powi(2)).sqrt();
    Some(Proportions {
        x,
        n_x,
        y,
        n_y,
        rate_x,
        rate_y,
        x_interval: wx,
        y_interval: wy,
        diff,
        diff_interval: Interval {
            lo: (diff - below).max(-1.0),
            hi: (diff + above).min(1.0),
        },
        p,
        confidence,
    })
}

/// Fisher's exact test on the 2×2 table `[[x, n_x − x], [y, n_y − y]]`, conditional on its
/// margins (the hypergeometric distribution of the top-left cell). `Greater`: the first row's
/// (the canary's) rate is higher — odds ratio > 1; `Less`: lower; `TwoSided`: the sum over
/// tables no more likely than the observed one (R's `fisher.test`, scipy's `fisher_exact`).
///
/// Works in log space through the ratio of successive hypergeometric probabilities, so totals
/// of hundreds of thousands neither overflow nor underflow. `None` when a total is 0 or a
/// count exceeds its total.
pub fn fisher_exact(x: u64, n_x: u64, y: u64, n_y: u64, alt: Alternative) -> Option<f64> {
    if n_x == 0 || n_y == 0 || x > n_x || y > n_y {
        return None;
    }
    let (k_tot, n_tot) = (x + y, n_x + n_y);
    let failures = n_tot - k_tot;
    // The top-left cell ranges over lo..=hi given the margins.
    let lo = n_x.saturating_sub(failures);
    let hi = n_x.min(k_tot);
    // ln P(k) − ln P(lo), by P(k+1)/P(k) = (K − k)(n_x − k) / ((k + 1)(F − n_x + k + 1)).
    let mut log_w = Vec::with_capacity((hi - lo + 1) as usize);
    let mut acc = 0.0f64;
    log_w.push(acc);
    for k in lo..hi {
        let kf = k as f64;
        acc += ((k_tot as f64 - kf) * (n_x as f64 - kf)).ln()
            - ((kf + 1.0) * ((failures + k + 1 - n_x) as f64)).ln();
        log_w.push(acc);
    }
    let top = log_w.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = log_w.iter().map(|l| (l - top).exp()).collect();
    let total: f64 = w.iter().sum();
    let at = (x - lo) as usize;
    let tail: f64 = match alt {
        Alternative::Greater => w[at..].iter().sum(),
        Alternative::Less => w[..=at].iter().sum(),
        Alternative::TwoSided => {
            let limit = w[at] * (1.0 + FISHER_REL_ERR);
            w.iter().filter(|&&v| v <= limit).sum()
        }
    };
    Some((tail / total).min(1.0))
}

#[cfg(test)]
mod tests {
    use super::super::testing::close;
    use super::*;
    use Alternative::{Greater, Less, TwoSided};

    #[test]
    fn wilson_matches_statsmodels() {
        // statsmodels.stats.proportion.proportion_confint(k, n, alpha=1-c, method='wilson')
        for (k, n, c, lo, hi) in [
            (0, 10, 0.95, 0.0, 0.2775327998628892),
            (10, 10, 0.95, 0.7224672001371107, 0.9999999999999999),
            (3, 10, 0.95, 0.10779126740630099, 0.6032218525388546),
            (1, 1000, 0.95, 0.00017654637062607809, 0.0056425585979579355),
            (45, 50, 0.99, 0.7402692104043159, 0.9660091162215817),
            (1, 1, 0.95, 0.20654931437723745, 1.0),
        ] {
            let i = wilson(k, n, c).unwrap();
            close(i.lo, lo, 1e-12);
            close(i.hi, hi, 1e-12);
        }
    }

    #[test]
    fn wilson_at_the_ends_is_exactly_zero_and_one() {
        assert_eq!(wilson(0, 7, 0.95).unwrap().lo, 0.0);
        assert_eq!(wilson(7, 7, 0.95).unwrap().hi, 1.0);
        assert!(wilson(0, 7, 0.95).unwrap().hi > 0.0);
        assert!(wilson(7, 7, 0.95).unwrap().lo < 1.0);
    }

    #[test]
    fn bad_counts_are_none() {
        assert_eq!(wilson(1, 0, 0.95), None);
        assert_eq!(wilson(0, 0, 0.95), None);
        assert_eq!(wilson(3, 2, 0.95), None);
        assert_eq!(wilson(1, 2, 1.0), None);
        assert_eq!(wilson(1, 2, f64::NAN), None);
        assert_eq!(fisher_exact(1, 0, 0, 1, TwoSided), None);
        assert_eq!(fisher_exact(0, 1, 2, 1, TwoSided), None);
        assert_eq!(compare_proportions(1, 2, 0, 0, Greater, 0.95), None);
        assert_eq!(compare_proportions(1, 2, 0, 3, Greater, 0.0), None);
    }

    #[test]
    fn newcombe_matches_statsmodels() {
        // statsmodels.stats.proportion.confint_proportions_2indep(a, na, b, nb,
        // method='newcomb', compare='diff', alpha=0.05) → (lo, hi). Small counts, zeros and
        // full counts, where the hybrid interval differs most from a Wald interval.
        for (a, na, b, nb, lo, hi) in [
            (56, 70, 48, 80, 0.05243147240236498, 0.33387265403690614),
            (9, 10, 3, 10, 0.1705227239345029, 0.809017973535488),
            (6, 7, 2, 7, 0.05822792748231209, 0.8062496375242278),
            (5, 56, 0, 29, -0.038137147903536936, 0.19256001385511165),
            (0, 10, 0, 20, -0.1611251580528194, 0.27753279986288926),
            (0, 10, 0, 10, -0.27753279986288926, 0.27753279986288926),
            (10, 10, 0, 20, 0.6790860371419145, 1.0),
            (10, 10, 0, 10, 0.6075093504305241, 1.0),
            (4, 600, 0, 600, -0.0008861889274281156, 0.01701471041533651),
        ] {
            let r = compare_proportions(a, na, b, nb, TwoSided, 0.95).unwrap();
            close(r.diff, a as f64 / na as f64 - b as f64 / nb as f64, 1e-15);
            close(r.diff_interval.lo, lo, 1e-12);
            close(r.diff_interval.hi, hi, 1e-12);
            assert!(r.diff_interval.lo <= r.diff && r.diff <= r.diff_interval.hi);
            assert!(r.diff_interval.lo >= -1.0 && r.diff_interval.hi <= 1.0);
        }
    }

    #[test]
    fn fisher_matches_scipy() {
        // scipy.stats.fisher_exact([[x, nx - x], [y, ny - y]], alternative=ALT).pvalue
        for (x, nx, y, ny, alt, p) in [
            // Kayenta's false pass: canary errors [0,1,2,1,0,0] (4 of 600) vs baseline zeros.
            (4, 600, 0, 600, TwoSided, 0.12437474001935617),
            (4, 600, 0, 600, Greater, 0.062187370009678083),
            (4, 600, 0, 600, Less, 1.0),
            // Fisher's tea tasting (R ?fisher.test: alternative = "greater" → p-value = 0.2429).
            (3, 4, 1, 4, Greater, 0.24285714285714283),
            (3, 4, 1, 4, TwoSided, 0.48571428571428565),
            (3, 4, 1, 4, Less, 0.9857142857142858),
            // No successes anywhere: nothing to tell apart.
            (0, 10, 0, 10, TwoSided, 1.0),
            (0, 10, 0, 10, Greater, 1.0),
            (0, 10, 0, 10, Less, 1.0),
            // Tens of thousands: 1.15% vs 0.85% errors.
            (230, 20000, 170, 20000, TwoSided, 0.0029817375118539337),
            (230, 20000, 170, 20000, Greater, 0.0014908687559269669),
            (230, 20000, 170, 20000, Less, 0.9989320855725022),
            (2, 30002, 0, 30000, TwoSided, 0.49999166736108097),
            (2, 30002, 0, 30000, Greater, 0.2500124997916701),
            (10, 10, 0, 10, TwoSided, 1.082508822446903e-05),
            (10, 10, 0, 10, Greater, 5.412544112234515e-06),
            (1, 10, 11, 14, TwoSided, 0.0027594561852200836),
            (1, 10, 11, 14, Greater, 0.9999663480953022),
            (1, 10, 11, 14, Less, 0.0013797280926100418),
        ] {
            let got = fisher_exact(x, nx, y, ny, alt).unwrap();
            close(got, p, 1e-9);
        }
    }

    #[test]
    fn compare_proportions_reports_both_rates() {
        let r = compare_proportions(4, 600, 0, 600, Greater, 0.95).unwrap();
        assert_eq!((r.x, r.n_x, r.y, r.n_y), (4, 600, 0, 600));
        close(r.rate_x, 4.0 / 600.0, 1e-15);
        assert_eq!(r.rate_y, 0.0);
        assert_eq!(r.y_interval.lo, 0.0);
        assert!(r.x_interval.lo > 0.0);
        close(r.p, 0.062187370009678083, 1e-9);
        assert_eq!(r.confidence, 0.95);
    }
}
