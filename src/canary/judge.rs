//! The canary judge, per metric: pure functions of recorded numbers (no I/O, no clock).
//!
//! Every result explains itself: both samples' n and location, the effect, its interval,
//! the p-value and the tolerance it was held against. A metric is `High` (or `Low`) only when
//! the change is both significant (p < 1 − confidence, one-sided in the bad direction) and
//! larger than its tolerance, judged on the interval's near end: a significant but tiny
//! shift between two healthy instances is not a regression. Too few samples is `NoData`,
//! never `Pass`.

use serde::Serialize;

use crate::policy::canary::{Direction, MetricSpec, Source};
use crate::stats::{self, Alternative};

/// What one version did in the judged window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Side {
    /// Latency in ms of every answered request that is not an error, from its intended start.
    pub latency_ms: Vec<f64>,
    /// Requests due in the window (answered, failed, or never sent).
    pub requests: u64,
    /// Requests answered with an error status, failed, or never sent.
    pub errors: u64,
}

/// The numbers one metric is judged on.
#[derive(Debug, Clone)]
pub enum Input<'a> {
    /// The traffic itself (`latency`, `tail`, `errors`).
    Traffic {
        baseline: &'a Side,
        canary: &'a Side,
    },
    /// A counter's increase over the window, and the requests sent meanwhile.
    Counter {
        baseline: f64,
        canary: f64,
        n_baseline: u64,
        n_canary: u64,
    },
    /// One reading per version (`gauge`, `promql`).
    Value { baseline: f64, canary: f64 },
    /// The numbers could not be read: why.
    Missing(String),
}

/// A metric's class, as Kayenta names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Pass,
    /// Worse upwards beyond the tolerance.
    High,
    /// Worse downwards beyond the tolerance.
    Low,
    /// Too few samples, or nothing could be read: undecided, never a pass.
    NoData,
}

/// One metric judged.
#[derive(Debug, Clone, Serialize)]
pub struct MetricResult {
    pub name: String,
    pub source: Source,
    pub group: String,
    pub critical: bool,
    pub class: Class,
    /// The requirement, e.g. `shift ≤ 1.0 ms (25% of the baseline median, at least 1 ms)`.
    pub expected: String,
    /// What was seen, with n, effect, interval and p.
    pub observed: String,
    /// Numbers for the JSON report.
    pub evidence: serde_json::Value,
}

impl MetricResult {
    /// Whether it decided (anything but `NoData`).
    pub fn decided(&self) -> bool {
        self.class != Class::NoData
    }

    /// Whether it is a regression.
    pub fn failed(&self) -> bool {
        matches!(self.class, Class::High | Class::Low)
    }
}

/// Judges one metric at `confidence` (tests reject at p < 1 − confidence; intervals are
/// two-sided at 1 − 2(1 − confidence), so their near end is the one-sided bound).
pub fn judge(spec: &MetricSpec, input: &Input, confidence: f64, min_samples: u64) -> MetricResult {
    let mut r = MetricResult {
        name: spec.name.clone(),
        source: spec.source,
        group: spec.group(),
        critical: spec.critical,
        class: Class::NoData,
        expected: String::new(),
        observed: String::new(),
        evidence: serde_json::Value::Null,
    };
    let alpha = 1.0 - confidence;
    let ci = 1.0 - 2.0 * alpha;
    match (spec.source, input) {
        (_, Input::Missing(why)) => {
            r.expected = "a reading from both versions".into();
            r.observed = why.clone();
        }
        (Source::Latency, Input::Traffic { baseline, canary }) => {
            latency(spec, &mut r, baseline, canary, alpha, ci, min_samples)
        }
        (Source::Tail, Input::Traffic { baseline, canary }) => {
            tail(spec, &mut r, baseline, canary, alpha, ci, min_samples)
        }
        (Source::Errors, Input::Traffic { baseline, canary }) => proportion(
            spec,
            &mut r,
            "errors",
            (canary.errors as f64, canary.requests),
            (baseline.errors as f64, baseline.requests),
            alpha,
            ci,
            min_samples,
        ),
        (
            Source::Counter,
            Input::Counter {
                baseline,
                canary,
                n_baseline,
                n_canary,
            },
        ) => {
            if *canary <= *n_canary as f64 && *baseline <= *n_baseline as f64 {
                proportion(
                    spec,
                    &mut r,
                    "increase per request",
                    (*canary, *n_canary),
                    (*baseline, *n_baseline),
                    alpha,
                    ci,
                    min_samples,
                )
            } else {
                // More increments than requests: not a per-request count; compared as a
                // ratio of the two increases, with the ratio's default tolerance.
                let tol = spec.tolerance.map_or(0.20, |p| p.fraction());
                value(spec, &mut r, *baseline, *canary, tol)
            }
        }
        (Source::Gauge | Source::Promql, Input::Value { baseline, canary }) => {
            value(spec, &mut r, *baseline, *canary, spec.tolerance())
        }
        (source, _) => {
            r.expected = format!("{source:?} numbers");
            r.observed = "the run gave this metric other numbers (a bug: please report)".into();
        }
    }
    r
}

fn alternative(d: Direction) -> Alternative {
    match d {
        Direction::Increase => Alternative::Greater,
        Direction::Decrease => Alternative::Less,
        Direction::Either => Alternative::TwoSided,
    }
}

fn too_few(r: &mut MetricResult, what: &str, nb: u64, nc: u64, min: u64) -> bool {
    if nb < min || nc < min {
        r.expected = format!("at least {min} {what} per version");
        r.observed = format!("baseline {nb}, canary {nc}: too few to judge");
        r.evidence = serde_json::json!({"n_baseline": nb, "n_canary": nc, "min_samples": min});
        true
    } else {
        false
    }
}

/// Classifies an effect `estimate` against `threshold` in `direction`: a regression when it
/// is significant (`p < alpha`, which bounds the false-alarm rate of two equal versions) and
/// its estimate is beyond the tolerance (a minimum effect worth blocking a deploy for).
///
/// The estimate, not the interval's near end: requiring the near end beyond the tolerance
/// passed a canary with 17 errors in 1 600 requests against none (p = 7e-6) in the
/// benchmark, because its interval's near end sat at exactly 0.50 points.
fn classify(direction: Direction, p: f64, alpha: f64, estimate: f64, threshold: f64) -> Class {
    if p >= alpha {
        return Class::Pass;
    }
    match direction {
        Direction::Increase | Direction::Either if estimate > threshold => Class::High,
        Direction::Decrease | Direction::Either if estimate < -threshold => Class::Low,
        _ => Class::Pass,
    }
}

fn sign(d: Direction) -> &'static str {
    match d {
        Direction::Increase => "+",
        Direction::Decrease => "−",
        Direction::Either => "±",
    }
}

fn latency(
    spec: &MetricSpec,
    r: &mut MetricResult,
    b: &Side,
    c: &Side,
    alpha: f64,
    ci: f64,
    min: u64,
) {
    let (nb, nc) = (b.latency_ms.len() as u64, c.latency_ms.len() as u64);
    if too_few(r, "answered requests", nb, nc, min) {
        return;
    }
    let (Some(sb), Some(sc)) = (stats::summary(&b.latency_ms), stats::summary(&c.latency_ms))
    else {
        r.observed = "a latency sample holds a NaN".into();
        return;
    };
    let mw = stats::mann_whitney(&c.latency_ms, &b.latency_ms, alternative(spec.direction));
    let hl = stats::hodges_lehmann(&c.latency_ms, &b.latency_ms, ci);
    let (Some(mw), Some(hl)) = (mw, hl) else {
        r.observed = "the samples could not be compared".into();
        return;
    };
    let threshold = (spec.tolerance() * sb.median).max(spec.min_effect_ms());
    r.class = classify(spec.direction, mw.p, alpha, hl.estimate, threshold);
    r.expected = format!(
        "shift {}≤ {threshold:.2} ms ({:.0}% of the baseline median, at least {:.1} ms), or p ≥ {alpha}",
        sign(spec.direction),
        spec.tolerance() * 100.0,
        spec.min_effect_ms()
    );
    r.observed = format!(
        "shift {:+.2} ms [{:+.2}, {:+.2}] ({:.0}% HL interval), Mann–Whitney p = {}, median {:.2} → {:.2} ms, p99 {:.2} → {:.2} ms, n = {nb} / {nc}",
        hl.estimate,
        hl.lo,
        hl.hi,
        ci * 100.0,
        fmt_p(mw.p),
        sb.median,
        sc.median,
        sb.p99,
        sc.p99
    );
    r.evidence = serde_json::json!({
        "baseline": sb, "canary": sc, "mann_whitney": mw, "hodges_lehmann": hl,
        "threshold_ms": threshold, "alpha": alpha,
    });
}

fn tail(
    spec: &MetricSpec,
    r: &mut MetricResult,
    b: &Side,
    c: &Side,
    alpha: f64,
    ci: f64,
    min: u64,
) {
    let q = spec.quantile();
    let (nb, nc) = (b.latency_ms.len() as u64, c.latency_ms.len() as u64);
    // The baseline's quantile must be estimable: at least two values expected beyond it.
    let need = min.max((2.0 / (1.0 - q)).ceil() as u64);
    if too_few(r, "answered requests", nb, nc, need) {
        return;
    }
    let Some(base_q) = stats::quantile(&b.latency_ms, q) else {
        r.observed = "the baseline sample holds a NaN".into();
        return;
    };
    let threshold = base_q + spec.min_effect_ms();
    let beyond = |s: &Side| s.latency_ms.iter().filter(|v| **v > threshold).count() as u64;
    let (xb, xc) = (beyond(b), beyond(c));
    let Some(pr) = compare_counts(spec, r, (xc, nc), (xb, nb), alpha, ci) else {
        return;
    };
    let tol = spec.tolerance();
    let qci = |s: &Side| stats::quantile_ci(&s.latency_ms, q, ci);
    let pct = |v: f64| v * 100.0;
    r.expected = format!(
        "share slower than the baseline's p{} + {:.1} ms ({threshold:.2} ms) {}≤ {:.1} points above the baseline's, or p ≥ {alpha}",
        fmt_q(q),
        spec.min_effect_ms(),
        sign(spec.direction),
        pct(tol)
    );
    r.observed = format!(
        "{xc}/{nc} ({:.2}%) vs {xb}/{nb} ({:.2}%): {:+.2} points [{:+.2}, {:+.2}], Fisher p = {}; p{} {:.2} → {:.2} ms",
        pct(pr.rate_x),
        pct(pr.rate_y),
        pct(pr.diff),
        pct(pr.diff_interval.lo),
        pct(pr.diff_interval.hi),
        fmt_p(pr.p),
        fmt_q(q),
        base_q,
        stats::quantile(&c.latency_ms, q).unwrap_or(f64::NAN),
    );
    r.evidence = serde_json::json!({
        "quantile": q, "threshold_ms": threshold, "proportions": pr,
        "baseline_quantile": qci(b), "canary_quantile": qci(c), "alpha": alpha,
    });
}

/// Compares the canary's count out of its n with the baseline's and classifies the
/// difference against the metric's tolerance (percentage points); `None` (said in
/// `r.observed`) when the counts cannot be compared.
fn compare_counts(
    spec: &MetricSpec,
    r: &mut MetricResult,
    (xc, nc): (u64, u64),
    (xb, nb): (u64, u64),
    alpha: f64,
    ci: f64,
) -> Option<stats::Proportions> {
    let Some(pr) = stats::compare_proportions(xc, nc, xb, nb, alternative(spec.direction), ci)
    else {
        r.observed = format!("counts {xc}/{nc} and {xb}/{nb} cannot be compared");
        return None;
    };
    r.class = classify(spec.direction, pr.p, alpha, pr.diff, spec.tolerance());
    Some(pr)
}

#[allow(clippy::too_many_arguments)]
fn proportion(
    spec: &MetricSpec,
    r: &mut MetricResult,
    what: &str,
    (xc, nc): (f64, u64),
    (xb, nb): (f64, u64),
    alpha: f64,
    ci: f64,
    min: u64,
) {
    if too_few(r, "requests", nb, nc, min) {
        return;
    }
    let (xc, xb) = (xc.round().max(0.0) as u64, xb.round().max(0.0) as u64);
    let Some(pr) = compare_counts(spec, r, (xc, nc), (xb, nb), alpha, ci) else {
        return;
    };
    let tol = spec.tolerance();
    let pct = |v: f64| v * 100.0;
    r.expected = format!(
        "{what} {}≤ {:.2} points above the baseline's, or p ≥ {alpha}",
        sign(spec.direction),
        pct(tol)
    );
    r.observed = format!(
        "{xc}/{nc} ({:.2}%, Wilson [{:.2}, {:.2}]) vs {xb}/{nb} ({:.2}%): {:+.2} points [{:+.2}, {:+.2}], Fisher p = {}",
        pct(pr.rate_x),
        pct(pr.x_interval.lo),
        pct(pr.x_interval.hi),
        pct(pr.rate_y),
        pct(pr.diff),
        pct(pr.diff_interval.lo),
        pct(pr.diff_interval.hi),
        fmt_p(pr.p)
    );
    r.evidence = serde_json::json!({"proportions": pr, "alpha": alpha, "tolerance": tol});
}

/// One reading per side: a threshold on the ratio, not a statistical test (one reading has
/// no variance to test).
fn value(spec: &MetricSpec, r: &mut MetricResult, b: f64, c: f64, tol: f64) {
    if !b.is_finite() || !c.is_finite() {
        r.expected = "finite readings".into();
        r.observed = format!("baseline {b}, canary {c}");
        return;
    }
    let change = if b == 0.0 {
        if c == 0.0 {
            0.0
        } else {
            f64::INFINITY * c.signum()
        }
    } else {
        (c - b) / b.abs()
    };
    r.class = match spec.direction {
        Direction::Increase if change > tol => Class::High,
        Direction::Decrease if change < -tol => Class::Low,
        Direction::Either if change > tol => Class::High,
        Direction::Either if change < -tol => Class::Low,
        _ => Class::Pass,
    };
    r.expected = format!(
        "canary within {}{:.1}% of the baseline (one reading each: a threshold, not a test)",
        sign(spec.direction),
        tol * 100.0
    );
    r.observed = format!("{} → {} ({:+.1}%)", fmt_v(b), fmt_v(c), change * 100.0);
    r.evidence =
        serde_json::json!({"baseline": b, "canary": c, "change": change, "tolerance": tol});
}

/// A p-value as people read it: 3 significant digits, `< 1e-12` below that.
pub fn fmt_p(p: f64) -> String {
    if p < 1e-12 {
        "< 1e-12".into()
    } else if p < 0.001 {
        format!("{p:.2e}")
    } else {
        format!("{p:.3}")
    }
}

fn fmt_q(q: f64) -> String {
    let s = format!("{}", q * 100.0);
    s.trim_end_matches(".0").to_string()
}

fn fmt_v(v: f64) -> String {
    if v.abs() >= 1e6 || (v != 0.0 && v.abs() < 1e-3) {
        format!("{v:.3e}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(source: Source) -> MetricSpec {
        MetricSpec::new("m", source, "g")
    }

    /// A deterministic latency sample: `n` values spread evenly over [lo, hi].
    fn spread(n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n)
            .map(|i| lo + (hi - lo) * (i as f64 + 0.5) / n as f64)
            .collect()
    }

    fn side(latency_ms: Vec<f64>, errors: u64) -> Side {
        Side {
            requests: latency_ms.len() as u64 + errors,
            latency_ms,
            errors,
        }
    }

    fn run(s: &MetricSpec, b: &Side, c: &Side) -> MetricResult {
        judge(
            s,
            &Input::Traffic {
                baseline: b,
                canary: c,
            },
            0.99,
            100,
        )
    }

    #[test]
    fn latency_table() {
        let base = side(spread(400, 1.0, 3.0), 0);
        let cases: &[(&str, Side, Class)] = &[
            ("identical", side(spread(400, 1.0, 3.0), 0), Class::Pass),
            // +20 ms on every request (candidate-slow).
            (
                "20 ms slower",
                side(spread(400, 21.0, 23.0), 0),
                Class::High,
            ),
            // Significant but below the 1 ms floor: two healthy instances differ a little.
            ("0.3 ms slower", side(spread(400, 1.3, 3.3), 0), Class::Pass),
            // Faster is not a regression of an `increase` metric.
            ("faster", side(spread(400, 0.1, 0.5), 0), Class::Pass),
            ("too few", side(spread(99, 21.0, 23.0), 0), Class::NoData),
        ];
        for (name, canary, want) in cases {
            let r = run(&spec(Source::Latency), &base, canary);
            assert_eq!(r.class, *want, "{name}: {} / {}", r.expected, r.observed);
        }
        // Exactly at the threshold is not beyond it; just over is; not significant is a pass.
        let s = spec(Source::Latency);
        assert_eq!(classify(s.direction, 0.0, 0.01, 1.0, 1.0), Class::Pass);
        assert_eq!(classify(s.direction, 0.0, 0.01, 1.0001, 1.0), Class::High);
        assert_eq!(classify(s.direction, 0.01, 0.01, 5.0, 1.0), Class::Pass);
        assert_eq!(
            classify(Direction::Either, 0.0, 0.01, -2.0, 1.0),
            Class::Low
        );
        assert_eq!(
            classify(Direction::Decrease, 0.0, 0.01, 2.0, 1.0),
            Class::Pass
        );
    }

    #[test]
    fn a_tail_regression_with_the_median_unchanged_is_caught_by_tail_only() {
        // candidate-tail: 5 % of requests 200 ms slower, the rest as the baseline.
        let base = side(spread(1000, 1.0, 3.0), 0);
        let mut c = spread(1000, 1.0, 3.0);
        for v in c.iter_mut().step_by(20) {
            *v += 200.0;
        }
        let canary = side(c, 0);
        assert_eq!(
            run(&spec(Source::Latency), &base, &canary).class,
            Class::Pass
        );
        let t = run(&spec(Source::Tail), &base, &canary);
        assert_eq!(t.class, Class::High, "{} / {}", t.expected, t.observed);
        // And the same tail test passes two identical samples.
        let same = run(&spec(Source::Tail), &base, &side(spread(1000, 1.0, 3.0), 0));
        assert_eq!(same.class, Class::Pass, "{}", same.observed);
        // Too few for the quantile: 199 < 2 / (1 − 0.99).
        let few = side(spread(199, 1.0, 3.0), 0);
        assert_eq!(run(&spec(Source::Tail), &few, &few).class, Class::NoData);
    }

    #[test]
    fn errors_are_proportions_not_ranks_of_zeros() {
        let base = side(spread(1000, 1.0, 3.0), 0);
        // Kayenta's known false pass: a few errors against none, as ranks, passes.
        let few = side(spread(994, 1.0, 3.0), 6);
        let r = run(&spec(Source::Errors), &base, &few);
        // 6 in 1000 against none: Fisher's one-sided p is the chance that all six errors fall
        // on the canary's side, C(1000,6)/C(2000,6) = 0.0155, not below 0.01: Pass, explained.
        assert_eq!(r.class, Class::Pass, "{}", r.observed);
        assert!(r.observed.contains("Fisher p = 0.016"), "{}", r.observed);
        // The benchmark's miss under the near-end rule: 17 in 1600 against none, p = 7.3e-6,
        // 1.06 points > the 0.5-point tolerance: a regression.
        let b1600 = side(spread(1600, 1.0, 3.0), 0);
        let r = run(
            &spec(Source::Errors),
            &b1600,
            &side(spread(1583, 1.0, 3.0), 17),
        );
        assert_eq!(r.class, Class::High, "{}", r.observed);
        // 2 % (candidate-errors) is beyond it.
        let two = side(spread(980, 1.0, 3.0), 20);
        let r = run(&spec(Source::Errors), &base, &two);
        assert_eq!(r.class, Class::High, "{}", r.observed);
        assert!(r.observed.contains("20/1000"), "{}", r.observed);
        // None on either side.
        assert_eq!(run(&spec(Source::Errors), &base, &base).class, Class::Pass);
    }

    #[test]
    fn values_are_thresholds_and_counters_are_per_request() {
        let mut s = spec(Source::Gauge);
        let v = |b, c| Input::Value {
            baseline: b,
            canary: c,
        };
        assert_eq!(judge(&s, &v(100.0, 120.0), 0.99, 1).class, Class::Pass);
        assert_eq!(judge(&s, &v(100.0, 120.1), 0.99, 1).class, Class::High);
        assert_eq!(judge(&s, &v(0.0, 0.0), 0.99, 1).class, Class::Pass);
        assert_eq!(judge(&s, &v(0.0, 1.0), 0.99, 1).class, Class::High);
        s.direction = Direction::Decrease;
        assert_eq!(judge(&s, &v(100.0, 79.0), 0.99, 1).class, Class::Low);
        let c = spec(Source::Counter);
        let counter = |b: f64, cn: f64| Input::Counter {
            baseline: b,
            canary: cn,
            n_baseline: 1000,
            n_canary: 1000,
        };
        assert_eq!(judge(&c, &counter(0.0, 0.0), 0.99, 100).class, Class::Pass);
        assert_eq!(judge(&c, &counter(0.0, 50.0), 0.99, 100).class, Class::High);
        // More increments than requests: a ratio.
        let r = judge(&c, &counter(5000.0, 5100.0), 0.99, 100);
        assert_eq!(r.class, Class::Pass, "{}", r.expected);
        let r = judge(
            &spec(Source::Gauge),
            &Input::Missing("scrape failed".into()),
            0.99,
            1,
        );
        assert_eq!(r.class, Class::NoData);
        assert_eq!(r.observed, "scrape failed");
    }
}
