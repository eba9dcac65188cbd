//! From judged metrics to a 0–100 score and a verdict (pure).
//!
//! Per group: 100 × Pass / decided metrics. The score is the groups' weighted mean over the
//! groups with a decided metric. A critical metric that is High or Low makes it 0. Unlike
//! Kayenta, missing data never scores: a critical metric without data, or fewer than half of
//! the metrics decided, is INCONCLUSIVE with the counts — neither a pass nor a 0.

use std::collections::BTreeMap;

use serde::Serialize;

use super::judge::MetricResult;
use crate::policy::canary::CanarySpec;
use crate::report::Verdict;

/// A judgement's score.
#[derive(Debug, Clone, Serialize)]
pub struct Score {
    /// 0–100; `None` when too little was decided to score.
    pub value: Option<f64>,
    pub verdict: Verdict,
    /// Why, in one line.
    pub reason: String,
}

/// Scores `results` with the section's groups and thresholds.
pub fn score(spec: &CanarySpec, results: &[MetricResult]) -> Score {
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| r.failed())
        .map(|r| r.name.as_str())
        .collect();
    if let Some(c) = results.iter().find(|r| r.critical && r.failed()) {
        return Score {
            value: Some(0.0),
            verdict: Verdict::NoGo,
            reason: format!("critical metric `{}` regressed: {}", c.name, c.observed),
        };
    }
    let undecided: Vec<&str> = results
        .iter()
        .filter(|r| !r.decided())
        .map(|r| r.name.as_str())
        .collect();
    if let Some(c) = results.iter().find(|r| r.critical && !r.decided()) {
        return Score {
            value: None,
            verdict: Verdict::Inconclusive,
            reason: format!(
                "critical metric `{}` has no judgement: {} ({})",
                c.name, c.observed, c.expected
            ),
        };
    }
    if results.is_empty() || undecided.len() * 2 > results.len() {
        return Score {
            value: None,
            verdict: Verdict::Inconclusive,
            reason: format!(
                "{} of {} metrics could not be judged ({})",
                undecided.len(),
                results.len(),
                undecided.join(", ")
            ),
        };
    }
    let mut groups: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
    for r in results.iter().filter(|r| r.decided()) {
        let g = groups.entry(r.group.as_str()).or_default();
        g.1 += 1;
        if !r.failed() {
            g.0 += 1;
        }
    }
    let (mut sum, mut weights) = (0.0, 0.0);
    for (g, (pass, decided)) in &groups {
        let w = spec.groups.get(*g).copied().unwrap_or(1.0);
        sum += w * 100.0 * *pass as f64 / *decided as f64;
        weights += w;
    }
    let value = if weights > 0.0 { sum / weights } else { 100.0 };
    let verdict = if value >= spec.score.pass {
        Verdict::Go
    } else if value <= spec.score.marginal {
        Verdict::NoGo
    } else {
        Verdict::Inconclusive
    };
    let mut reason = match verdict {
        Verdict::Go => format!("score {value:.0} ≥ pass {}", spec.score.pass),
        Verdict::NoGo => format!("score {value:.0} ≤ marginal {}", spec.score.marginal),
        Verdict::Inconclusive => format!(
            "score {value:.0} is marginal (between {} and {})",
            spec.score.marginal, spec.score.pass
        ),
    };
    if !failed.is_empty() {
        reason.push_str(&format!("; regressed: {}", failed.join(", ")));
    }
    if !undecided.is_empty() {
        reason.push_str(&format!("; not judged: {}", undecided.join(", ")));
    }
    Score {
        value: Some(value),
        verdict,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canary::judge::Class;
    use crate::policy::canary::Source;

    fn m(name: &str, group: &str, critical: bool, class: Class) -> MetricResult {
        MetricResult {
            name: name.into(),
            source: Source::Latency,
            group: group.into(),
            critical,
            class,
            expected: "e".into(),
            observed: "o".into(),
            evidence: serde_json::Value::Null,
        }
    }

    #[test]
    fn score_table() {
        let spec = CanarySpec::default();
        use Class::*;
        let cases: &[(&str, Vec<MetricResult>, Option<f64>, Verdict)] = &[
            (
                "all pass",
                vec![
                    m("a", "t", false, Pass),
                    m("b", "t", false, Pass),
                    m("e", "t", true, Pass),
                ],
                Some(100.0),
                Verdict::Go,
            ),
            (
                "one of three regressed",
                vec![
                    m("a", "t", false, High),
                    m("b", "t", false, Pass),
                    m("e", "t", true, Pass),
                ],
                Some(200.0 / 3.0),
                Verdict::NoGo,
            ),
            (
                "critical regressed",
                vec![m("a", "t", false, Pass), m("e", "t", true, High)],
                Some(0.0),
                Verdict::NoGo,
            ),
            (
                "critical without data",
                vec![m("a", "t", false, Pass), m("e", "t", true, NoData)],
                None,
                Verdict::Inconclusive,
            ),
            (
                "most without data",
                vec![
                    m("a", "t", false, NoData),
                    m("b", "t", false, NoData),
                    m("c", "t", false, Pass),
                ],
                None,
                Verdict::Inconclusive,
            ),
            (
                "one of five regressed: marginal",
                vec![
                    m("a", "t", false, High),
                    m("b", "t", false, Pass),
                    m("c", "t", false, Pass),
                    m("d", "t", false, Pass),
                    m("e", "t", false, Pass),
                ],
                Some(80.0),
                Verdict::Inconclusive,
            ),
            ("nothing", vec![], None, Verdict::Inconclusive),
        ];
        for (name, results, value, verdict) in cases {
            let s = score(&spec, results);
            assert_eq!(s.verdict, *verdict, "{name}: {}", s.reason);
            match (s.value, value) {
                (Some(a), Some(b)) => assert!((a - b).abs() < 1e-9, "{name}: {a} vs {b}"),
                (a, b) => assert_eq!(a, *b, "{name}"),
            }
        }
    }

    #[test]
    fn groups_are_weighted() {
        let mut spec = CanarySpec::default();
        spec.groups.insert("perf".into(), 3.0);
        spec.groups.insert("mem".into(), 1.0);
        let r = vec![
            m("a", "perf", false, Class::Pass),
            m("b", "mem", false, Class::High),
        ];
        let s = score(&spec, &r);
        assert_eq!(s.value, Some(75.0));
        assert_eq!(s.verdict, Verdict::NoGo, "at marginal is NO-GO");
        assert!(s.reason.contains("regressed: b"), "{}", s.reason);
    }
}
