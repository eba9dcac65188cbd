//! The results of `preflight watch` as Prometheus metrics (the `prometheus-client` crate,
//! OpenMetrics text). Names follow Prometheus's conventions: base units (`_seconds`),
//! `_total` for counters, `_timestamp_seconds` for Unix times. A status or a verdict is a
//! state set: one series per possible value, 1 for the current one and 0 for the others, so
//! an alert matches on `== 1` and a dashboard can count. Labels are bounded: policy,
//! instance, check id, kind, severity, whether it blocks, and the state; never free text.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::outcome::Status;
use crate::report::Verdict;

/// The `Content-Type` of [`Exporter::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

const STATUSES: [Status; 5] = [
    Status::Pass,
    Status::Fail,
    Status::Error,
    Status::Skip,
    Status::Inconclusive,
];
const VERDICTS: [Verdict; 3] = [Verdict::Go, Verdict::NoGo, Verdict::Inconclusive];

/// Which check on which instance.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    pub policy: String,
    pub instance: String,
    pub check: String,
    pub kind: String,
    pub severity: String,
    /// `true` when a FAIL or ERROR of this check makes the verdict NO-GO (its severity is
    /// in `gate.block_on` and no waiver applies).
    pub blocking: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    policy: String,
    instance: String,
    check: String,
    kind: String,
    severity: String,
    blocking: String,
    status: &'static str,
}

impl StatusLabels {
    fn of(c: &CheckLabels, status: Status) -> Self {
        StatusLabels {
            policy: c.policy.clone(),
            instance: c.instance.clone(),
            check: c.check.clone(),
            kind: c.kind.clone(),
            severity: c.severity.clone(),
            blocking: c.blocking.clone(),
            status: status.as_str(),
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    policy: String,
    instance: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    policy: String,
    instance: String,
    verdict: &'static str,
}

type F64 = Gauge<f64, AtomicU64>;

/// Every metric watch exports, and the registry that encodes them.
pub struct Exporter {
    registry: Registry,
    status: Family<StatusLabels, Gauge>,
    duration: Family<CheckLabels, F64>,
    last_run: Family<CheckLabels, F64>,
    runs: Family<StatusLabels, Counter>,
    verdict: Family<VerdictLabels, Gauge>,
    watch_last_run: Family<InstanceLabels, F64>,
    interval: Family<InstanceLabels, F64>,
}

impl Default for Exporter {
    fn default() -> Self {
        Self::new()
    }
}

impl Exporter {
    pub fn new() -> Exporter {
        let mut registry = Registry::default();
        let e = Exporter {
            status: Family::default(),
            duration: Family::default(),
            last_run: Family::default(),
            runs: Family::default(),
            verdict: Family::default(),
            watch_last_run: Family::default(),
            interval: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "preflight_check_status",
            "The check's last status (state set: 1 for the current status, 0 for the others)",
            e.status.clone(),
        );
        registry.register(
            "preflight_check_duration_seconds",
            "How long the check's last run took",
            e.duration.clone(),
        );
        registry.register(
            "preflight_check_last_run_timestamp_seconds",
            "When the check's last run ended (Unix time)",
            e.last_run.clone(),
        );
        registry.register(
            "preflight_check_runs",
            "Runs of the check, by status",
            e.runs.clone(),
        );
        registry.register(
            "preflight_verdict",
            "The verdict over each check's last result (state set: 1 for the current verdict)",
            e.verdict.clone(),
        );
        registry.register(
            "preflight_watch_last_run_timestamp_seconds",
            "When watch last finished a run of checks on the instance (Unix time)",
            e.watch_last_run.clone(),
        );
        registry.register(
            "preflight_watch_interval_seconds",
            "How often watch runs the read-only checks (--every)",
            e.interval.clone(),
        );
        Exporter { registry, ..e }
    }

    /// `--every` of an instance, for the "no run for 3 intervals" alert (labelled like
    /// the last-run time, so that the rule divides one by the other series by series).
    pub fn set_interval(&self, policy: &str, instance: &str, seconds: f64) {
        self.interval
            .get_or_create(&InstanceLabels {
                policy: policy.into(),
                instance: instance.into(),
            })
            .set(seconds);
    }

    /// One finished run of a check.
    pub fn record_check(&self, c: &CheckLabels, status: Status, seconds: f64, ended_unix: f64) {
        for s in STATUSES {
            let labels = StatusLabels::of(c, s);
            self.status
                .get_or_create(&labels)
                .set(i64::from(s == status));
            // Every status's counter exists from the first run, so `increase()` sees its 0.
            let runs = self.runs.get_or_create(&labels);
            if s == status {
                runs.inc();
            }
        }
        self.duration.get_or_create(c).set(seconds);
        self.last_run.get_or_create(c).set(ended_unix);
    }

    /// Drops every series of a check's label set (its labels changed: a waiver expired).
    pub fn forget(&self, c: &CheckLabels) {
        for s in STATUSES {
            self.status.remove(&StatusLabels::of(c, s));
            self.runs.remove(&StatusLabels::of(c, s));
        }
        self.duration.remove(c);
        self.last_run.remove(c);
    }

    /// Drops every series of an instance no longer watched: those of its `checks`, its
    /// verdict, last run and interval.
    pub fn forget_instance<'a>(
        &self,
        policy: &str,
        instance: &str,
        checks: impl IntoIterator<Item = &'a CheckLabels>,
    ) {
        for c in checks {
            self.forget(c);
        }
        for v in VERDICTS {
            self.verdict.remove(&VerdictLabels {
                policy: policy.into(),
                instance: instance.into(),
                verdict: v.as_str(),
            });
        }
        let labels = InstanceLabels {
            policy: policy.into(),
            instance: instance.into(),
        };
        self.watch_last_run.remove(&labels);
        self.interval.remove(&labels);
    }

    /// The verdict of an instance and when watch last finished a run on it.
    pub fn record_verdict(&self, policy: &str, instance: &str, verdict: Verdict, ended_unix: f64) {
        for v in VERDICTS {
            self.verdict
                .get_or_create(&VerdictLabels {
                    policy: policy.into(),
                    instance: instance.into(),
                    verdict: v.as_str(),
                })
                .set(i64::from(v == verdict));
        }
        self.watch_last_run
            .get_or_create(&InstanceLabels {
                policy: policy.into(),
                instance: instance.into(),
            })
            .set(ended_unix);
    }

    /// The OpenMetrics text of every series ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> CheckLabels {
        CheckLabels {
            policy: "smoke".into(),
            instance: "127.0.0.1:8080".into(),
            check: "readyz".into(),
            kind: "http".into(),
            severity: "critical".into(),
            blocking: "true".into(),
        }
    }

    /// The sample lines of `name`, sorted (a family's series come out in hash order).
    fn series(text: &str, name: &str) -> Vec<String> {
        let mut v: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
            .map(str::to_string)
            .collect();
        v.sort();
        v
    }

    fn sorted(v: Vec<String>) -> Vec<String> {
        let mut v = v;
        v.sort();
        v
    }

    #[test]
    fn exposition_text() {
        let e = Exporter::new();
        e.set_interval("smoke", "127.0.0.1:8080", 300.0);
        e.record_check(&labels(), Status::Pass, 0.25, 1_764_748_800.5);
        e.record_check(&labels(), Status::Fail, 0.5, 1_764_749_100.0);
        e.record_verdict("smoke", "127.0.0.1:8080", Verdict::NoGo, 1_764_749_100.0);
        let text = e.encode();
        let l = r#"policy="smoke",instance="127.0.0.1:8080",check="readyz",kind="http",severity="critical",blocking="true""#;
        let states = |name: &str, values: [(&str, &str); 5]| {
            sorted(
                values
                    .iter()
                    .map(|(s, v)| format!("{name}{{{l},status=\"{s}\"}} {v}"))
                    .collect(),
            )
        };
        assert_eq!(
            series(&text, "preflight_check_status"),
            states(
                "preflight_check_status",
                [
                    ("PASS", "0"),
                    ("FAIL", "1"),
                    ("ERROR", "0"),
                    ("SKIP", "0"),
                    ("INCONCLUSIVE", "0")
                ]
            )
        );
        assert_eq!(
            series(&text, "preflight_check_runs_total"),
            states(
                "preflight_check_runs_total",
                [
                    ("PASS", "1"),
                    ("FAIL", "1"),
                    ("ERROR", "0"),
                    ("SKIP", "0"),
                    ("INCONCLUSIVE", "0")
                ]
            )
        );
        assert_eq!(
            series(&text, "preflight_check_duration_seconds"),
            [format!("preflight_check_duration_seconds{{{l}}} 0.5")]
        );
        assert_eq!(
            series(&text, "preflight_check_last_run_timestamp_seconds"),
            [format!(
                "preflight_check_last_run_timestamp_seconds{{{l}}} 1764749100.0"
            )]
        );
        let i = r#"policy="smoke",instance="127.0.0.1:8080""#;
        assert_eq!(
            series(&text, "preflight_verdict"),
            sorted(vec![
                format!("preflight_verdict{{{i},verdict=\"GO\"}} 0"),
                format!("preflight_verdict{{{i},verdict=\"NO-GO\"}} 1"),
                format!("preflight_verdict{{{i},verdict=\"INCONCLUSIVE\"}} 0"),
            ])
        );
        assert_eq!(
            series(&text, "preflight_watch_last_run_timestamp_seconds"),
            [format!(
                "preflight_watch_last_run_timestamp_seconds{{{i}}} 1764749100.0"
            )]
        );
        assert_eq!(
            series(&text, "preflight_watch_interval_seconds"),
            [format!("preflight_watch_interval_seconds{{{i}}} 300.0")]
        );
        for line in [
            "# TYPE preflight_check_status gauge",
            "# TYPE preflight_check_runs counter",
            "# HELP preflight_check_duration_seconds How long the check's last run took.",
        ] {
            assert!(text.lines().any(|t| t == line), "{line} not in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn forgetting_a_label_set_drops_its_series() {
        let e = Exporter::new();
        e.record_check(&labels(), Status::Pass, 0.25, 1.0);
        e.forget(&labels());
        let text = e.encode();
        assert!(series(&text, "preflight_check_status").is_empty(), "{text}");
        assert!(
            series(&text, "preflight_check_runs_total").is_empty(),
            "{text}"
        );
    }
}
