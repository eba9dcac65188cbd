//! Small statistics for probes: percentiles, medians, and the Theil–Sen robust slope with
//! Sen's distribution-free confidence interval. Pure functions; no I/O.

/// Nearest-rank percentile of `sorted` (ascending) for `q` in `0.0..=1.0`.
pub fn percentile_sorted(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let q = q.clamp(0.0, 1.0);
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Nearest-rank percentile of unsorted values.
pub fn percentile(values: &[f64], q: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    v.sort_by(f64::total_cmp);
    percentile_sorted(&v, q)
}

/// Median (mean of the two middle values for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Arithmetic mean.
pub fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// A robust straight-line fit `y = intercept + slope · x` with a confidence interval on the
/// slope.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Fit {
    pub slope: f64,
    pub intercept: f64,
    /// Lower bound of the slope's confidence interval.
    pub slope_low: f64,
    /// Upper bound of the slope's confidence interval.
    pub slope_high: f64,
    /// Confidence level of the interval (e.g. 0.95).
    pub confidence: f64,
    /// Number of points fitted.
    pub n: usize,
}

/// Most points fitted with all pairwise slopes (n² / 2 slopes); more are thinned evenly.
const MAX_POINTS: usize = 600;

/// Theil–Sen estimator: the median of all pairwise slopes, robust to outliers (up to ~29 %
/// of the points) such as a one-off allocator step. The interval is Sen's (1968), derived
/// from Kendall's S: distribution-free, so it needs no normality of the noise. `z` is the
/// two-sided normal quantile of the confidence (1.96 for 95 %).
pub fn theil_sen(points: &[(f64, f64)], z: f64) -> Option<Fit> {
    let pts: Vec<(f64, f64)> = if points.len() > MAX_POINTS {
        let step = points.len() as f64 / MAX_POINTS as f64;
        (0..MAX_POINTS)
            .map(|i| points[(i as f64 * step) as usize])
            .collect()
    } else {
        points.to_vec()
    };
    let n = pts.len();
    if n < 3 {
        return None;
    }
    let mut slopes = Vec::with_capacity(n * (n - 1) / 2);
    for i in 0..n {
        for j in i + 1..n {
            let dx = pts[j].0 - pts[i].0;
            if dx != 0.0 {
                slopes.push((pts[j].1 - pts[i].1) / dx);
            }
        }
    }
    if slopes.is_empty() {
        return None;
    }
    slopes.sort_by(f64::total_cmp);
    let slope = median_sorted(&slopes);
    let intercept = median(&pts.iter().map(|(x, y)| y - slope * x).collect::<Vec<_>>())?;
    let big_n = slopes.len() as f64;
    let nf = n as f64;
    let c = z * (nf * (nf - 1.0) * (2.0 * nf + 5.0) / 18.0).sqrt();
    let lo_rank = ((big_n - c) / 2.0).floor().max(0.0) as usize;
    let hi_rank = ((big_n + c) / 2.0).ceil() as usize;
    let last = slopes.len() - 1;
    Some(Fit {
        slope,
        intercept,
        slope_low: slopes[lo_rank.min(last)],
        slope_high: slopes[hi_rank.min(last)],
        confidence: normal_confidence(z),
        n,
    })
}

fn median_sorted(v: &[f64]) -> f64 {
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Two-sided confidence of a normal quantile (Abramowitz–Stegun erf approximation).
fn normal_confidence(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let y = 1.0
        - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736) * t
            + 0.254_829_592)
            * t
            * (-x * x).exp();
    (y * 10_000.0).round() / 10_000.0
}

/// Ordinary least squares, for comparison in evidence.
pub fn least_squares(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let slope = sxy / sxx;
    Some((slope, my - slope * mx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&v, 1.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(median(&[3.0, 1.0, 2.0, 10.0]), Some(2.5));
        assert_eq!(mean(&[1.0, 2.0, 3.0]), Some(2.0));
    }

    #[test]
    fn theil_sen_exact_line() {
        let pts: Vec<(f64, f64)> = (0..50).map(|i| (i as f64, 3.0 + 2.0 * i as f64)).collect();
        let f = theil_sen(&pts, 1.96).unwrap();
        assert_eq!(f.slope, 2.0);
        assert_eq!(f.intercept, 3.0);
        assert_eq!((f.slope_low, f.slope_high), (2.0, 2.0));
        assert!((f.confidence - 0.95).abs() < 0.001, "{}", f.confidence);
    }

    #[test]
    fn theil_sen_ignores_outliers_and_steps() {
        // A flat series with a few wild samples: the robust slope stays ~0, OLS does not.
        let mut pts: Vec<(f64, f64)> = (0..60)
            .map(|i| (i as f64, 1000.0 + ((i * 7919) % 13) as f64))
            .collect();
        pts[50].1 = 1e6;
        pts[55].1 = 2e6;
        pts[58].1 = 3e6;
        let f = theil_sen(&pts, 1.96).unwrap();
        assert!(f.slope.abs() < 1.0, "{f:?}");
        assert!(f.slope_low <= 0.0 && f.slope_high >= 0.0, "{f:?}");
        let (ols, _) = least_squares(&pts).unwrap();
        assert!(ols > 1000.0);
    }

    #[test]
    fn theil_sen_interval_covers_noisy_slope() {
        // Deterministic pseudo-noise of ±500 around a slope of 10.
        let mut state = 12345u64;
        let pts: Vec<(f64, f64)> = (0..80)
            .map(|i| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                let noise = ((state >> 33) % 1000) as f64 - 500.0;
                (i as f64, 10.0 * i as f64 + noise)
            })
            .collect();
        let f = theil_sen(&pts, 1.96).unwrap();
        assert!(f.slope_low < 10.0 && 10.0 < f.slope_high, "{f:?}");
        assert!(
            f.slope_low > 0.0,
            "a clear trend must be significant: {f:?}"
        );
    }

    #[test]
    fn theil_sen_needs_points() {
        assert!(theil_sen(&[(0.0, 1.0), (1.0, 2.0)], 1.96).is_none());
        assert!(theil_sen(&[(1.0, 1.0), (1.0, 2.0), (1.0, 3.0)], 1.96).is_none());
    }
}
