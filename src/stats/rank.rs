//! Two-sample rank statistics: the Mann–Whitney U test and the Hodges–Lehmann shift with its
//! Moses confidence interval.
//!
//! Both sort each sample once and never build the m·n pairwise differences: U comes from the
//! midranks of the combined sample, and an order statistic of the differences is found by
//! bisecting on the value (in the total order of `f64`) while counting the differences at or
//! below it with two pointers, O((m + n) · 64) per order statistic.

use serde::Serialize;

use super::{Alternative, norm_cdf, norm_sf, valid_confidence, z_two_sided};

/// R's rule: the exact null distribution of U is used when both samples have fewer than this
/// many values and there are no ties; the normal approximation otherwise.
const EXACT_BELOW: usize = 50;

/// R's `qwilcox` fuzz: a cumulative probability within this of the target counts as reaching it.
const QUANTILE_FUZZ: f64 = 10.0 * f64::EPSILON;

/// How a p-value (or an interval's ranks) was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PMethod {
    /// The exact permutation distribution of U (no ties, both samples below 50).
    Exact,
    /// The normal approximation. `z` is the standardised statistic after the continuity
    /// correction (0 when the samples have no spread at all); `ties_corrected` tells that the
    /// variance was reduced for tied values.
    Normal {
        z: f64,
        ties_corrected: bool,
        continuity: bool,
    },
}

/// A Mann–Whitney U test of the canary sample x against the baseline sample y.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MannWhitney {
    pub n_x: usize,
    pub n_y: usize,
    /// U of x: the number of pairs with x > y plus half the tied pairs (R's `W`, scipy's `U1`).
    pub u: f64,
    /// The p-value for the requested alternative.
    pub p: f64,
    pub method: PMethod,
    /// Whether the combined sample has tied values.
    pub ties: bool,
    /// u / (n_x · n_y) = P(X > Y) + ½ P(X = Y): the common-language effect size (0.5 = no shift).
    pub auc: f64,
}

/// The Mann–Whitney U test (Wilcoxon rank-sum) of x (canary) against y (baseline).
///
/// The p-value is exact (the permutation distribution of U, counted exactly in integers) when
/// there are no ties and both samples have fewer than 50 values — R's `wilcox.test` default,
/// scipy's `mannwhitneyu(method='exact')`. Otherwise it is the normal approximation with the
/// tie-corrected variance and a continuity correction of ½ — R's `wilcox.test(correct=TRUE)`,
/// scipy's `mannwhitneyu(method='asymptotic', use_continuity=True)`.
///
/// When every value of both samples is the same, U sits at its mean with no variance: the
/// samples show no difference, so p = 1 and auc = 0.5 (R would give NaN).
///
/// `None` when either sample is empty or holds a NaN. Infinities are fine (only order matters).
/// O((m + n) log(m + n)); exact path O(m²n) at most (m, n < 50).
pub fn mann_whitney(x: &[f64], y: &[f64], alt: Alternative) -> Option<MannWhitney> {
    mann_whitney_by(x, y, alt, Path::Auto)
}

/// Which null distribution to use; tests force the normal path on data the default would
/// judge exactly, to compare with references that used it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Path {
    Auto,
    #[cfg(test)]
    Normal,
}

fn mann_whitney_by(x: &[f64], y: &[f64], alt: Alternative, path: Path) -> Option<MannWhitney> {
    if x.is_empty() || y.is_empty() || x.iter().chain(y).any(|v| v.is_nan()) {
        return None;
    }
    let r = Ranks::of(x, y);
    let (m, n) = (x.len(), y.len());
    let mn = m as f64 * n as f64;
    let exact = path == Path::Auto && use_exact(m, n, r.ties);
    let (p, method) = if exact {
        // Without ties U is a whole number.
        let u = r.u.round() as usize;
        let d = UDistribution::new(m, n);
        let p = match alt {
            Alternative::Greater => d.upper(u),
            Alternative::Less => d.lower(u),
            // R: the tail on the observed side, doubled.
            Alternative::TwoSided => {
                let tail = if r.u > mn / 2.0 {
                    d.upper(u)
                } else {
                    d.lower(u)
                };
                (2.0 * tail).min(1.0)
            }
        };
        (p, PMethod::Exact)
    } else {
        let dev = r.u - mn / 2.0;
        let sigma = r.sigma_u(m, n);
        let correction = match alt {
            Alternative::TwoSided => 0.5 * sign(dev),
            Alternative::Greater => 0.5,
            Alternative::Less => -0.5,
        };
        let (z, p) = if sigma > 0.0 {
            let z = (dev - correction) / sigma;
            let p = match alt {
                Alternative::Greater => norm_sf(z),
                Alternative::Less => norm_cdf(z),
                Alternative::TwoSided => (2.0 * norm_cdf(z).min(norm_sf(z))).min(1.0),
            };
            (z, p)
        } else {
            // Every value is the same: U = mn/2 exactly, and nothing tells the samples apart.
            (0.0, 1.0)
        };
        let method = PMethod::Normal {
            z,
            ties_corrected: r.ties,
            continuity: true,
        };
        (p, method)
    };
    Some(MannWhitney {
        n_x: m,
        n_y: n,
        u: r.u,
        p,
        method,
        ties: r.ties,
        auc: r.u / mn,
    })
}

fn use_exact(m: usize, n: usize, ties: bool) -> bool {
    !ties && m < EXACT_BELOW && n < EXACT_BELOW
}

fn sign(v: f64) -> f64 {
    if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// Midrank facts of the combined sample.
struct Ranks {
    /// U of x.
    u: f64,
    /// Σ (t³ − t) over groups of t tied values.
    tie_term: f64,
    ties: bool,
}

impl Ranks {
    fn of(x: &[f64], y: &[f64]) -> Ranks {
        let mut all: Vec<(f64, bool)> = x
            .iter()
            .map(|&v| (v, true))
            .chain(y.iter().map(|&v| (v, false)))
            .collect();
        all.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        let (mut rank_sum_x, mut tie_term) = (0.0f64, 0.0f64);
        let mut i = 0;
        while i < all.len() {
            // Equal values (−0.0 and 0.0 included) are adjacent in the total order.
            let mut j = i + 1;
            while j < all.len() && all[j].0 == all[i].0 {
                j += 1;
            }
            // Positions i..j hold ranks i+1..=j; each gets their mean.
            let midrank = (i + 1 + j) as f64 / 2.0;
            let in_x = all[i..j].iter().filter(|e| e.1).count();
            rank_sum_x += in_x as f64 * midrank;
            let t = (j - i) as f64;
            tie_term += t * t * t - t;
            i = j;
        }
        let m = x.len() as f64;
        Ranks {
            u: rank_sum_x - m * (m + 1.0) / 2.0,
            tie_term,
            ties: tie_term > 0.0,
        }
    }

    /// The standard deviation of U under the null, reduced for ties (R, scipy, SAS alike).
    fn sigma_u(&self, m: usize, n: usize) -> f64 {
        let (m, n) = (m as f64, n as f64);
        let big_n = m + n;
        let var = if big_n > 1.0 {
            m * n / 12.0 * ((big_n + 1.0) - self.tie_term / (big_n * (big_n - 1.0)))
        } else {
            0.0
        };
        var.max(0.0).sqrt()
    }
}

/// The exact null distribution of U for sample sizes m and n without ties: `counts[k]` is the
/// number of the C(m+n, m) equally likely arrangements with U = k. These are the coefficients
/// of the Gaussian binomial ∏_{i=1..m} (1 − q^(n+i)) / (1 − q^i), computed exactly in i128
/// (C(98, 49) ≈ 2.5e28 is far below i128's range).
struct UDistribution {
    counts: Vec<i128>,
    total: i128,
}

impl UDistribution {
    fn new(m: usize, n: usize) -> UDistribution {
        let len = m * n + 1;
        let mut c = vec![0i128; len];
        c[0] = 1;
        // Power series modulo q^len: terms past degree m·n cancel in the exact polynomial.
        for i in 1..=m {
            let up = n + i;
            for k in (up..len).rev() {
                c[k] -= c[k - up];
            }
            for k in i..len {
                c[k] += c[k - i];
            }
        }
        let total = c.iter().sum();
        UDistribution { counts: c, total }
    }

    fn prob(&self, count: i128) -> f64 {
        count as f64 / self.total as f64
    }

    /// P(U ≤ u).
    fn lower(&self, u: usize) -> f64 {
        let end = (u + 1).min(self.counts.len());
        self.prob(self.counts[..end].iter().sum())
    }

    /// P(U ≥ u).
    fn upper(&self, u: usize) -> f64 {
        let start = u.min(self.counts.len());
        self.prob(self.counts[start..].iter().sum())
    }

    /// R's `qwilcox(p, m, n)`: the smallest q with P(U ≤ q) ≥ p.
    fn quantile(&self, p: f64) -> usize {
        let target = p - QUANTILE_FUZZ;
        let mut cum = 0i128;
        for (q, &c) in self.counts.iter().enumerate() {
            cum += c;
            if self.prob(cum) >= target {
                return q;
            }
        }
        self.counts.len() - 1
    }
}

/// The Hodges–Lehmann estimate of the shift x − y and its confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Shift {
    /// The median of all m·n differences x_i − y_j (mean of the two middle ones for an even count).
    pub estimate: f64,
    pub lo: f64,
    pub hi: f64,
    /// The confidence level asked for.
    pub confidence: f64,
    /// The coverage the interval's ranks give: exact on the exact path, the normal
    /// approximation otherwise. Below `confidence` only when the samples are too small for it
    /// (the interval is then the whole range of differences, as R gives).
    pub achieved: f64,
    /// Whether the interval's ranks come from the exact distribution of U.
    pub exact: bool,
}

/// The Hodges–Lehmann estimate of the shift x − y (the median of all pairwise differences)
/// and its distribution-free (Moses) confidence interval [d_(k), d_(mn+1−k)], d the sorted
/// differences.
///
/// k is chosen as R's `wilcox.test(conf.int = TRUE)` does on its exact path — k = `qwilcox(α/2,
/// m, n)` (at least 1) — when there are no ties and both samples have fewer than 50 values.
/// Otherwise k = ⌊mn/2 − z_{α/2} σ_U⌋ (at least 1) with the tie-corrected σ_U: Moses'
/// normal-approximation ranks, as SAS PROC NPAR1WAY's asymptotic HL limits. (R's own
/// approximate interval instead root-finds the continuity-corrected statistic; it is not an
/// order statistic and is not used here.) The estimate is always the median of the
/// differences (R's approximate path root-finds that too).
///
/// `None` when a sample is empty, holds a non-finite value, a difference overflows, or
/// `confidence` is not in (0, 1). Never builds the m·n differences: O((m + n) log(m + n)) plus
/// O(64 (m + n)) per order statistic.
pub fn hodges_lehmann(x: &[f64], y: &[f64], confidence: f64) -> Option<Shift> {
    hodges_lehmann_by(x, y, confidence, Path::Auto)
}

fn hodges_lehmann_by(x: &[f64], y: &[f64], confidence: f64, path: Path) -> Option<Shift> {
    let confidence = valid_confidence(confidence)?;
    if x.is_empty() || y.is_empty() || x.iter().chain(y).any(|v| !v.is_finite()) {
        return None;
    }
    let d = Differences::new(x, y)?;
    let total = d.count();
    let estimate = if total % 2 == 1 {
        d.kth(total.div_ceil(2))
    } else {
        (d.kth(total / 2) + d.kth(total / 2 + 1)) / 2.0
    };
    let (m, n) = (x.len(), y.len());
    let alpha = 1.0 - confidence;
    let r = Ranks::of(x, y);
    let exact = path == Path::Auto && use_exact(m, n, r.ties);
    let (k, achieved) = if exact {
        let dist = UDistribution::new(m, n);
        // At most the middle rank, so that lo ≤ hi even for a tiny confidence.
        let k = dist
            .quantile(alpha / 2.0)
            .clamp(1, total.div_ceil(2) as usize);
        (k as u64, 1.0 - 2.0 * dist.lower(k - 1))
    } else {
        let mn = total as f64;
        let sigma = r.sigma_u(m, n);
        let w = mn / 2.0 - z_two_sided(confidence) * sigma;
        let k = (w.floor().max(1.0) as u64).min(total.div_ceil(2));
        let achieved = if sigma > 0.0 {
            // P(U ≤ k − 1) with a continuity correction, doubled.
            1.0 - 2.0 * norm_cdf((k as f64 - 0.5 - mn / 2.0) / sigma)
        } else {
            1.0 // every difference is the same value: the interval is that value, surely
        };
        (k, achieved)
    };
    Some(Shift {
        estimate,
        lo: d.kth(k),
        hi: d.kth(total + 1 - k),
        confidence,
        achieved: achieved.clamp(0.0, 1.0),
        exact,
    })
}

/// The implicit sorted matrix of differences x_i − y_j, with x and y sorted ascending.
struct Differences {
    x: Vec<f64>,
    y: Vec<f64>,
    min: f64,
    max: f64,
}

impl Differences {
    /// `None` when a difference overflows to ±∞.
    fn new(x: &[f64], y: &[f64]) -> Option<Differences> {
        let mut x = x.to_vec();
        let mut y = y.to_vec();
        x.sort_unstable_by(f64::total_cmp);
        y.sort_unstable_by(f64::total_cmp);
        // Rounding is monotone, so these are the smallest and largest computed differences.
        let min = x[0] - y[y.len() - 1];
        let max = x[x.len() - 1] - y[0];
        (min.is_finite() && max.is_finite()).then_some(Differences { x, y, min, max })
    }

    fn count(&self) -> u64 {
        self.x.len() as u64 * self.y.len() as u64
    }

    /// #{(i, j) : x_i − y_j ≤ v}. For each x_i (ascending) the differences at or below v are
    /// those with y_j from some index on, and that index only moves right as x_i grows.
    fn count_le(&self, v: f64) -> u64 {
        let n = self.y.len();
        let mut j = 0;
        let mut total = 0u64;
        for &xi in &self.x {
            while j < n && xi - self.y[j] > v {
                j += 1;
            }
            total += (n - j) as u64;
        }
        total
    }

    /// The k-th smallest difference (1-based, 1 ≤ k ≤ m·n): the least value v, in the total
    /// order of f64, with at least k differences ≤ v. Bisection over the 64-bit keys of that
    /// order finds it exactly in at most 64 counts.
    fn kth(&self, k: u64) -> f64 {
        debug_assert!((1..=self.count()).contains(&k));
        // count_le(min − one step) = 0 < k and count_le(max) = m·n ≥ k.
        let mut lo = i128::from(order_key(self.min)) - 1;
        let mut hi = i128::from(order_key(self.max));
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.count_le(from_order_key(mid as i64)) >= k {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        // `+ 0.0` turns a −0.0 into 0.0; they are the same difference.
        from_order_key(hi as i64) + 0.0
    }
}

/// A key whose integer order is f64's total order (the trick behind `f64::total_cmp`).
fn order_key(v: f64) -> i64 {
    let bits = v.to_bits() as i64;
    bits ^ ((((bits >> 63) as u64) >> 1) as i64)
}

/// The inverse of [`order_key`].
fn from_order_key(key: i64) -> f64 {
    let bits = key ^ ((((key >> 63) as u64) >> 1) as i64);
    f64::from_bits(bits as u64)
}

#[cfg(test)]
mod tests {
    use super::super::testing::close;
    use super::*;
    use Alternative::{Greater, Less, TwoSided};
    use rand::{RngExt, SeedableRng};

    /// Hollander & Wolfe (1973) p. 69, the two-sample data of R's `?wilcox.test` example:
    /// permeability at term (x) and at 12–26 weeks (y). No ties, exact path.
    const HW_X: [f64; 10] = [0.80, 0.83, 1.89, 1.04, 1.45, 1.38, 1.91, 1.64, 0.73, 1.46];
    const HW_Y: [f64; 5] = [1.15, 0.88, 0.90, 0.74, 1.21];

    #[test]
    fn exact_u_and_p_match_r_and_scipy() {
        // R ?wilcox.test: `wilcox.test(x, y, alternative = "g")` → W = 35, p-value = 0.1272.
        // scipy.stats.mannwhitneyu(x, y, alternative=ALT, method='exact') →
        //   greater 35.0 0.1272061272061272; two-sided 0.2544122544122544; less 0.8967698967698967
        // (SAS NPAR1WAY on the same data: exact Pr <= S 0.1272, Pr >= |S-Mean| 0.2544.)
        for (alt, p) in [
            (Greater, 0.1272061272061272),
            (TwoSided, 0.2544122544122544),
            (Less, 0.8967698967698967),
        ] {
            let r = mann_whitney(&HW_X, &HW_Y, alt).unwrap();
            assert_eq!((r.n_x, r.n_y, r.u, r.ties), (10, 5, 35.0, false));
            assert_eq!(r.method, PMethod::Exact);
            close(r.p, p, 1e-12);
            close(r.auc, 0.7, 1e-15);
        }
    }

    #[test]
    fn normal_path_without_ties_matches_scipy() {
        // scipy.stats.mannwhitneyu(x, y, alternative=ALT, method='asymptotic',
        // use_continuity=True) on Hollander & Wolfe's data → greater 0.12231180256349167,
        // two-sided 0.24462360512698333, less 0.9007753482039937
        for (alt, p) in [
            (Greater, 0.12231180256349167),
            (TwoSided, 0.24462360512698333),
            (Less, 0.9007753482039937),
        ] {
            let r = mann_whitney_by(&HW_X, &HW_Y, alt, Path::Normal).unwrap();
            close(r.p, p, 1e-12);
            assert!(matches!(
                r.method,
                PMethod::Normal {
                    ties_corrected: false,
                    continuity: true,
                    ..
                }
            ));
        }
    }

    #[test]
    fn exact_small_samples_both_tails() {
        // scipy.stats.mannwhitneyu([1.1,2.2,3.3,4.4], [5.5,6.6,7.7], alternative=ALT,
        // method='exact') → U=0: less 0.02857142857142857 (1/35), greater 1.0,
        // two-sided 0.05714285714285714; swapped (U=12): greater 0.02857142857142857, less 1.0
        let a = [1.1, 2.2, 3.3, 4.4];
        let b = [5.5, 6.6, 7.7];
        let r = |x: &[f64], y: &[f64], alt| mann_whitney(x, y, alt).unwrap();
        assert_eq!(r(&a, &b, Less).u, 0.0);
        close(r(&a, &b, Less).p, 1.0 / 35.0, 1e-14);
        close(r(&a, &b, Greater).p, 1.0, 1e-14);
        close(r(&a, &b, TwoSided).p, 0.05714285714285714, 1e-14);
        assert_eq!(r(&b, &a, Greater).u, 12.0);
        close(r(&b, &a, Greater).p, 0.02857142857142857, 1e-14);
        close(r(&b, &a, Less).p, 1.0, 1e-14);
        close(r(&b, &a, TwoSided).p, 0.05714285714285714, 1e-14);
        assert_eq!(r(&b, &a, Greater).auc, 1.0);
    }

    #[test]
    fn exact_path_at_its_largest_size() {
        // x_i = i + 0.5, y_j = 0.9 j + 3.25 (i, j = 0..48): no ties, 49 each, still exact.
        // scipy.stats.mannwhitneyu(x, y, alternative=ALT, method='exact') → U = 1183.0;
        // two-sided 0.9042980323585147, greater 0.5506511313839016, less 0.45214901617925735
        let x: Vec<f64> = (0..49).map(|i| i as f64 + 0.5).collect();
        let y: Vec<f64> = (0..49).map(|j| 0.9 * j as f64 + 3.25).collect();
        for (alt, p) in [
            (TwoSided, 0.9042980323585147),
            (Greater, 0.5506511313839016),
            (Less, 0.45214901617925735),
        ] {
            let r = mann_whitney(&x, &y, alt).unwrap();
            assert_eq!((r.u, r.method), (1183.0, PMethod::Exact));
            close(r.p, p, 1e-10);
        }
        // The null distribution is a distribution: its counts add up to C(98, 49).
        let d = UDistribution::new(49, 49);
        assert_eq!(d.total, 25_477_612_258_980_856_902_730_428_600);
        assert_eq!(d.counts.len(), 49 * 49 + 1);
        assert!(d.counts.iter().all(|&c| c > 0));
    }

    #[test]
    fn ties_take_the_normal_path_as_r_does() {
        // R: x <- c(1,5,9,24,56,21,3,7,21,4); y <- c(12,15,5,9,9,14,56,22,3,7,32,5);
        // wilcox.test(x, y) → "Wilcoxon rank sum test with continuity correction",
        // W = 51.5, p-value = 0.5966 (and with y <- c(1233,4356,987,39999,1111,200000):
        // W = 0, p-value = 0.001364) — documented output, endmemo.com/r/wilcoxon.php.
        // scipy.stats.mannwhitneyu(x, y, alternative=ALT, method='asymptotic') →
        //   two-sided 0.5965969026279817, greater 0.7242330662159162, less 0.29829845131399085;
        //   second y: two-sided 0.0013643929543816092, greater 0.999534560107345,
        //   less 0.0006821964771908046
        let x = [1.0, 5.0, 9.0, 24.0, 56.0, 21.0, 3.0, 7.0, 21.0, 4.0];
        let y = [
            12.0, 15.0, 5.0, 9.0, 9.0, 14.0, 56.0, 22.0, 3.0, 7.0, 32.0, 5.0,
        ];
        let y2 = [1233.0, 4356.0, 987.0, 39999.0, 1111.0, 200000.0];
        for (yy, u, alt, p) in [
            (&y[..], 51.5, TwoSided, 0.5965969026279817),
            (&y[..], 51.5, Greater, 0.7242330662159162),
            (&y[..], 51.5, Less, 0.29829845131399085),
            (&y2[..], 0.0, TwoSided, 0.0013643929543816092),
            (&y2[..], 0.0, Greater, 0.999534560107345),
            (&y2[..], 0.0, Less, 0.0006821964771908046),
        ] {
            let r = mann_whitney(&x, yy, alt).unwrap();
            assert_eq!((r.u, r.ties), (u, true));
            assert!(matches!(
                r.method,
                PMethod::Normal {
                    ties_corrected: true,
                    ..
                }
            ));
            close(r.p, p, 1e-11);
        }
    }

    #[test]
    fn large_samples_with_and_without_ties() {
        // x_i = (37 i mod 101)/10 (i < 300), y_j = (53 j mod 97)/10 + 0.3 (j < 250): ties.
        // scipy.stats.mannwhitneyu(x, y, alternative=ALT, method='asymptotic') → U = 37065.0;
        //   two-sided 0.814869546447513, greater 0.5927743871305466, less 0.4074347732237565
        let x: Vec<f64> = (0..300).map(|i| ((i * 37) % 101) as f64 / 10.0).collect();
        let y: Vec<f64> = (0..250)
            .map(|j| ((j * 53) % 97) as f64 / 10.0 + 0.3)
            .collect();
        for (alt, p) in [
            (TwoSided, 0.814869546447513),
            (Greater, 0.5927743871305466),
            (Less, 0.4074347732237565),
        ] {
            let r = mann_whitney(&x, &y, alt).unwrap();
            assert_eq!((r.u, r.ties), (37065.0, true));
            close(r.p, p, 1e-10);
        }
        // x_i = 1.7 √(i+1) (i < 80), y_j = 1.6 √(j+1) + 0.01 (j < 60): no ties, but 80 ≥ 50.
        // scipy (same call) → U = 3206.0; two-sided 0.0006944350129192854,
        //   greater 0.0003472175064596427, less 0.9996580802487183
        let x: Vec<f64> = (0..80).map(|i| ((i + 1) as f64).sqrt() * 1.7).collect();
        let y: Vec<f64> = (0..60)
            .map(|j| ((j + 1) as f64).sqrt() * 1.6 + 0.01)
            .collect();
        for (alt, p) in [
            (TwoSided, 0.0006944350129192854),
            (Greater, 0.0003472175064596427),
            (Less, 0.9996580802487183),
        ] {
            let r = mann_whitney(&x, &y, alt).unwrap();
            assert_eq!((r.u, r.ties), (3206.0, false));
            assert!(matches!(r.method, PMethod::Normal { .. }));
            close(r.p, p, 1e-9);
        }
    }

    #[test]
    fn identical_samples_show_no_difference() {
        let a = [1.0, 2.0, 3.0, 4.0, 5.0];
        for alt in [TwoSided, Greater, Less] {
            let r = mann_whitney(&a, &a, alt).unwrap();
            assert_eq!((r.u, r.auc), (12.5, 0.5));
            if alt == TwoSided {
                assert_eq!(r.p, 1.0);
            } else {
                assert!(r.p > 0.5, "{alt:?}: {}", r.p);
            }
        }
    }

    #[test]
    fn no_spread_at_all_is_p_one_not_nan() {
        for alt in [TwoSided, Greater, Less] {
            let r = mann_whitney(&[3.0, 3.0, 3.0], &[3.0, 3.0], alt).unwrap();
            assert_eq!((r.u, r.p, r.auc), (3.0, 1.0, 0.5));
            assert_eq!(
                r.method,
                PMethod::Normal {
                    z: 0.0,
                    ties_corrected: true,
                    continuity: true
                }
            );
        }
        let s = hodges_lehmann(&[3.0, 3.0, 3.0], &[3.0, 3.0], 0.95).unwrap();
        assert_eq!((s.estimate, s.lo, s.hi, s.achieved), (0.0, 0.0, 0.0, 1.0));
    }

    #[test]
    fn one_value_each() {
        // U is 0 or 1 with probability ½ each: P(U ≤ 0) = 0.5, two-sided min(1, 2·0.5) = 1.
        let r = mann_whitney(&[1.0], &[2.0], Less).unwrap();
        assert_eq!((r.u, r.p, r.method), (0.0, 0.5, PMethod::Exact));
        assert_eq!(mann_whitney(&[1.0], &[2.0], TwoSided).unwrap().p, 1.0);
        assert_eq!(mann_whitney(&[1.0], &[1.0], TwoSided).unwrap().p, 1.0);
        // A 95% interval from one difference cannot reach 95%: the whole range, and says so.
        let s = hodges_lehmann(&[1.0], &[2.0], 0.95).unwrap();
        assert_eq!((s.estimate, s.lo, s.hi), (-1.0, -1.0, -1.0));
        assert!(s.achieved < 0.95, "{}", s.achieved);
    }

    #[test]
    fn bad_input_is_none() {
        assert_eq!(mann_whitney(&[], &[1.0], TwoSided), None);
        assert_eq!(mann_whitney(&[1.0], &[], TwoSided), None);
        assert_eq!(mann_whitney(&[1.0, f64::NAN], &[1.0], TwoSided), None);
        assert_eq!(hodges_lehmann(&[], &[1.0], 0.95), None);
        assert_eq!(hodges_lehmann(&[1.0], &[f64::INFINITY], 0.95), None);
        assert_eq!(hodges_lehmann(&[1.0], &[f64::NAN], 0.95), None);
        assert_eq!(hodges_lehmann(&[f64::MAX], &[-f64::MAX], 0.95), None);
        for c in [0.0, 1.0, -0.5, 1.5, f64::NAN] {
            assert_eq!(hodges_lehmann(&[1.0], &[2.0], c), None, "{c}");
        }
        // Infinities are ordered values to a rank test.
        let r = mann_whitney(&[f64::INFINITY], &[1.0, 2.0], Greater).unwrap();
        assert_eq!(r.u, 2.0);
    }

    #[test]
    fn hodges_lehmann_exact_interval() {
        // Estimate: SAS PROC NPAR1WAY HL on this data (Trt = x, Ctrl = y) prints "Location
        // Shift (Ctrl - Trt) -0.3050" (DescrTab2's SAS comparison output); Geyer's Stat 5601
        // notes (H&W Example 4.3): "Point Estimate (sample median of pairwise differences):
        // -0.305" for y − x. So x − y: 0.305.
        // Interval: R's wilcox.test(x, y, conf.int = TRUE) exact path (stats/R/wilcox.test.R):
        //   qu <- qwilcox(alpha/2, n.x, n.y); if (qu == 0) qu <- 1; ql <- n.x*n.y - qu
        //   cint <- c(diffs[qu], diffs[ql + 1])
        // qwilcox(0.025, 10, 5) = 9 → [diffs[9], diffs[42]] = [-0.15, 0.76]; achieved level
        // 1 - 2*pwilcox(8, 10, 5) = 1 - 2*60/3003 = 0.96004 (counted over all C(15, 5)
        // arrangements below). No published R printout of this interval was found; both
        // ends are checked against the brute-force sorted differences instead.
        let s = hodges_lehmann(&HW_X, &HW_Y, 0.95).unwrap();
        assert!(s.exact);
        close(s.estimate, 0.305, 1e-12);
        close(s.lo, -0.15, 1e-12);
        close(s.hi, 0.76, 1e-12);
        let d = UDistribution::new(10, 5);
        assert_eq!(d.quantile(0.025), 9);
        close(d.lower(8), 60.0 / 3003.0, 1e-15);
        close(s.achieved, 1.0 - 2.0 * 60.0 / 3003.0, 1e-15);
        assert!(s.achieved >= 0.95, "{}", s.achieved);
        let brute = brute_diffs(&HW_X, &HW_Y);
        assert_eq!((s.lo, s.hi), (brute[8], brute[41]));
        // The enumerated distribution agrees with a direct count over all C(15, 5) subsets.
        assert_eq!(d.counts, enumerate_u(10, 5));
    }

    #[test]
    fn hodges_lehmann_normal_interval_matches_sas() {
        // SAS NPAR1WAY HL, alpha=0.05, on Hollander & Wolfe's data (shift Ctrl − Trt = y − x):
        // "-0.3050 … 95% Confidence Limits -0.7600 0.1700" (asymptotic). For x − y: [-0.17, 0.76].
        let s = hodges_lehmann_by(&HW_X, &HW_Y, 0.95, Path::Normal).unwrap();
        assert!(!s.exact);
        close(s.estimate, 0.305, 1e-12);
        close(s.lo, -0.17, 1e-12);
        close(s.hi, 0.76, 1e-12);
        // SAS/STAT User's Guide, PROC NPAR1WAY Example "Hodges-Lehmann Estimation" (data set
        // React: Stim 1 = 13 times, Stim 2 = 6, with ties), `proc npar1way hl alpha=.02`:
        // "Std Dev Under H0 11.004784 … Location Shift 0.3500 … Asymptotic (Moses) 0.0000
        // 0.8200". Stim 2 is SAS's class 1 (the smaller), so the shift is Stim 2 − Stim 1.
        let stim1 = [
            1.94, 1.94, 2.92, 2.92, 2.92, 2.92, 3.27, 3.27, 3.27, 3.27, 3.70, 3.70, 3.74,
        ];
        let stim2 = [3.27, 3.27, 3.27, 3.70, 3.70, 3.74];
        let s = hodges_lehmann(&stim2, &stim1, 0.98).unwrap();
        assert!(!s.exact, "ties force the normal ranks");
        close(s.estimate, 0.35, 1e-12);
        close(s.lo, 0.0, 1e-12);
        close(s.hi, 0.82, 1e-12);
        let r = Ranks::of(&stim2, &stim1);
        close(r.sigma_u(6, 13), 11.004784, 1e-7);
    }

    fn brute_diffs(x: &[f64], y: &[f64]) -> Vec<f64> {
        let mut d: Vec<f64> = x
            .iter()
            .flat_map(|a| y.iter().map(move |b| a - b))
            .collect();
        d.sort_by(f64::total_cmp);
        d
    }

    fn brute_median(d: &[f64]) -> f64 {
        let n = d.len();
        if n % 2 == 1 {
            d[n / 2]
        } else {
            (d[n / 2 - 1] + d[n / 2]) / 2.0
        }
    }

    /// Counts of U over every way to choose which m of the m+n ranks belong to x.
    fn enumerate_u(m: usize, n: usize) -> Vec<i128> {
        let mut counts = vec![0i128; m * n + 1];
        for mask in 0u32..(1 << (m + n)) {
            if mask.count_ones() as usize != m {
                continue;
            }
            // U = #pairs (x, y) with x above y = Σ over x positions of the y's below it.
            let mut u = 0;
            let mut ys_below = 0;
            for pos in 0..m + n {
                if mask & (1 << pos) != 0 {
                    u += ys_below;
                } else {
                    ys_below += 1;
                }
            }
            counts[u] += 1;
        }
        counts
    }

    #[test]
    fn exact_distribution_equals_enumeration() {
        for (m, n) in [(1, 1), (2, 3), (3, 2), (4, 4), (6, 5), (1, 9)] {
            assert_eq!(
                UDistribution::new(m, n).counts,
                enumerate_u(m, n),
                "{m}x{n}"
            );
        }
    }

    #[test]
    fn selection_equals_brute_force_on_random_samples() {
        // Deterministic: a fixed seed. Values rounded to 0.1 so ties and equal differences
        // are common; sizes chosen so that both odd and even pair counts occur.
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_0009);
        let mut even = 0;
        for round in 0..300 {
            let m = rng.random_range(1..=12usize);
            let n = rng.random_range(1..=12usize);
            let scale = if round % 3 == 0 { 1.0 } else { 10.0 };
            let gen_sample = |rng: &mut rand::rngs::StdRng, len: usize, shift: f64| -> Vec<f64> {
                (0..len)
                    .map(|_| (rng.random_range(-50.0..50.0f64) * scale).round() / 10.0 + shift)
                    .collect()
            };
            let x = gen_sample(&mut rng, m, 0.0);
            let shift = rng.random_range(-2.0..2.0);
            let y = gen_sample(&mut rng, n, shift);
            let brute = brute_diffs(&x, &y);
            let d = Differences::new(&x, &y).unwrap();
            for k in 1..=brute.len() {
                assert_eq!(d.kth(k as u64), brute[k - 1] + 0.0, "k={k} x={x:?} y={y:?}");
            }
            let s = hodges_lehmann(&x, &y, 0.9).unwrap();
            assert_eq!(s.estimate, brute_median(&brute), "x={x:?} y={y:?}");
            assert!(s.lo <= s.estimate && s.estimate <= s.hi);
            if brute.len().is_multiple_of(2) {
                even += 1;
            }
        }
        assert!(even > 50, "even pair counts exercised: {even}");
    }

    #[test]
    fn hodges_lehmann_even_count_takes_the_mean_of_the_middle_two() {
        // Differences of [1, 2] − [0, 10]: {1, 2, −9, −8} → sorted −9 −8 1 2 → (−8 + 1)/2.
        let s = hodges_lehmann(&[1.0, 2.0], &[0.0, 10.0], 0.5).unwrap();
        assert_eq!(s.estimate, -3.5);
    }

    #[test]
    fn order_keys_follow_total_order() {
        let vals = [
            f64::NEG_INFINITY,
            -f64::MAX,
            -1.5,
            -f64::MIN_POSITIVE,
            -0.0,
            0.0,
            f64::MIN_POSITIVE,
            1.5,
            f64::MAX,
            f64::INFINITY,
        ];
        for w in vals.windows(2) {
            assert!(order_key(w[0]) < order_key(w[1]), "{w:?}");
        }
        for v in vals {
            assert_eq!(from_order_key(order_key(v)).to_bits(), v.to_bits());
        }
    }

    #[test]
    fn large_samples_are_handled() {
        // 5 000 per side: the interval holds the estimate, the shift is found. (Speed is
        // measured by `cargo bench --bench stats`, not asserted here.)
        let x: Vec<f64> = (0..5000)
            .map(|i| ((i * 7919) % 5003) as f64 + 100.0)
            .collect();
        let y: Vec<f64> = (0..5000).map(|i| ((i * 104_729) % 5003) as f64).collect();
        let s = hodges_lehmann(&x, &y, 0.95).unwrap();
        assert!(!s.exact);
        assert!(s.lo <= s.estimate && s.estimate <= s.hi);
        assert!((s.estimate - 100.0).abs() <= 60.0, "{s:?}");
        let r = mann_whitney(&x, &y, Greater).unwrap();
        // Two near-uniform samples on [0, 5003), one shifted by 100: auc ≈ 0.52.
        assert!(r.p < 1e-3 && r.auc > 0.51, "{r:?}");
    }
}
