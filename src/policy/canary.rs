//! The `canary:` section of a policy: what `preflight canary` sends to both versions, which
//! metrics it compares, and how the comparisons become a score and a verdict.
//!
//! Plain data (serde + schema); the judge lives in `crate::canary`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::{Dur, Percent, Rate, RequestLine};

/// Baseline against canary: traffic, metrics, groups and score thresholds.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CanarySpec {
    /// The request mix sent to both versions alike.
    #[serde(default)]
    pub traffic: TrafficSpec,
    /// What is compared. Default: `latency`, `tail` and `errors` of the traffic itself.
    #[serde(default = "default_metrics")]
    pub metrics: Vec<MetricSpec>,
    /// Weight of each metric group in the score (a group not named here weighs 1).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, f64>,
    /// Score thresholds: at or above `pass` is GO, at or below `marginal` NO-GO, between
    /// them INCONCLUSIVE (marginal). An interim interval score at or below `marginal` ends
    /// the run early with NO-GO.
    #[serde(default)]
    pub score: ScoreSpec,
    /// Confidence of every interval and test (default 0.99: a one-sided test rejects at
    /// p < 0.01).
    #[serde(default = "default_confidence")]
    pub confidence: f64,
    /// Fewest samples per side a metric needs in a judgement; fewer is INCONCLUSIVE with
    /// the counts (default 100).
    #[serde(default = "default_min_samples")]
    pub min_samples: u64,
    /// A Prometheus server for `source: promql` metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusSpec>,
}

impl Default for CanarySpec {
    fn default() -> Self {
        CanarySpec {
            traffic: TrafficSpec::default(),
            metrics: default_metrics(),
            groups: BTreeMap::new(),
            score: ScoreSpec::default(),
            confidence: default_confidence(),
            min_samples: default_min_samples(),
            prometheus: None,
        }
    }
}

fn default_confidence() -> f64 {
    0.99
}

fn default_min_samples() -> u64 {
    100
}

fn default_metrics() -> Vec<MetricSpec> {
    vec![
        MetricSpec::new("latency", Source::Latency, "traffic"),
        MetricSpec::new("tail", Source::Tail, "traffic"),
        MetricSpec {
            critical: true,
            ..MetricSpec::new("errors", Source::Errors, "traffic")
        },
    ]
}

/// The request mix, its rate and how the run is cut into intervals.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrafficSpec {
    /// Requests and their weights. Default: `GET /v1/correlations?market=m1&window=1h` (3)
    /// and `GET /v1/detections` (1), routes of the bundled service.
    #[serde(default = "default_requests")]
    pub requests: Vec<WeightedRequest>,
    /// Requests per second sent to *each* version (default `40/s`).
    #[serde(default = "default_rate")]
    pub rate: Rate,
    /// How long the traffic runs, warm-up included (default `45s`).
    #[serde(default = "default_duration")]
    pub duration: Dur,
    /// Length of one judged interval (default `10s`).
    #[serde(default = "default_interval")]
    pub interval: Dur,
    /// Traffic at the start that is sent but not judged (default `5s`).
    #[serde(default = "default_warmup")]
    pub warmup: Dur,
    /// Connections per version (default 8).
    #[serde(default = "default_connections")]
    pub connections: u32,
    /// Statuses counted as errors besides transport failures (default: 500–599).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_statuses: Option<Vec<u16>>,
}

impl Default for TrafficSpec {
    fn default() -> Self {
        TrafficSpec {
            requests: default_requests(),
            rate: default_rate(),
            duration: default_duration(),
            interval: default_interval(),
            warmup: default_warmup(),
            connections: default_connections(),
            error_statuses: None,
        }
    }
}

impl TrafficSpec {
    /// Whether an answer with `status` is an error.
    pub fn is_error(&self, status: u16) -> bool {
        match &self.error_statuses {
            Some(list) => list.contains(&status),
            None => (500..600).contains(&status),
        }
    }
}

fn default_requests() -> Vec<WeightedRequest> {
    vec![
        WeightedRequest {
            request: RequestLine::get("/v1/correlations?market=m1&window=1h"),
            weight: 3,
        },
        WeightedRequest {
            request: RequestLine::get("/v1/detections"),
            weight: 1,
        },
    ]
}

fn default_rate() -> Rate {
    Rate(40.0)
}

fn default_duration() -> Dur {
    Dur(std::time::Duration::from_secs(45))
}

fn default_interval() -> Dur {
    Dur(std::time::Duration::from_secs(10))
}

fn default_warmup() -> Dur {
    Dur(std::time::Duration::from_secs(5))
}

fn default_connections() -> u32 {
    8
}

/// One request of the mix.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WeightedRequest {
    /// `METHOD /path`.
    pub request: RequestLine,
    /// Relative share of the mix (default 1).
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// Where a metric's numbers come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Client-side latency of every answered, non-error request: Mann–Whitney U and the
    /// Hodges–Lehmann shift with its interval.
    Latency,
    /// Share of requests slower than the baseline's `quantile` (default p99), compared as
    /// proportions: catches a tail or variance regression the median test is blind to.
    Tail,
    /// Share of requests answered with an error status or not at all, compared as
    /// proportions (Fisher's exact test, Newcombe's interval) — never ranks of zeros.
    Errors,
    /// A counter on each instance's `/metrics` (`metric`, `labels`): its increase per
    /// request sent, compared as proportions.
    Counter,
    /// A gauge on each instance's `/metrics`: the canary's last reading against the
    /// baseline's, as a ratio (one reading per side: a threshold, not a statistical test).
    Gauge,
    /// A PromQL `query` evaluated per instance (`{{instance}}`, `{{role}}` substituted):
    /// compared as a ratio like `gauge`.
    Promql,
}

/// Which way a change is bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Larger is worse (latency, errors, memory).
    #[default]
    Increase,
    /// Smaller is worse (throughput, cache hits).
    Decrease,
    /// Any change beyond the tolerance is bad.
    Either,
}

/// One compared metric.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricSpec {
    /// Name shown in reports (unique).
    pub name: String,
    /// Where the numbers come from.
    pub source: Source,
    /// `counter` / `gauge`: the metric name on `/metrics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// `counter` / `gauge`: labels the series must have (summed over the rest).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `promql`: the query, with `{{instance}}` (host:port) and `{{role}}` (`baseline` or
    /// `canary`) substituted per version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// `tail`: the baseline quantile the canary's share beyond it is compared at (default 0.99).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantile: Option<f64>,
    /// Which way a change is bad (default `increase`).
    #[serde(default)]
    pub direction: Direction,
    /// How large a change may be before it counts, even when significant. `latency`: the
    /// shift relative to the baseline's median (default 25%); `tail`, `errors`, `counter`:
    /// percentage points of the proportion (defaults 1%, 0.5%, 0.5%); `gauge`, `promql`:
    /// relative to the baseline's value (default 20%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<Percent>,
    /// `latency`, `tail`: a shift smaller than this never counts (default `1ms`): loopback
    /// scheduling noise is not a regression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_effect: Option<Dur>,
    /// A critical metric that is not Pass makes the whole score 0.
    #[serde(default)]
    pub critical: bool,
    /// The group it scores in (default: its source's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl MetricSpec {
    /// A metric of `source` in `group`, every option at its default.
    pub fn new(name: &str, source: Source, group: &str) -> Self {
        MetricSpec {
            name: name.into(),
            source,
            metric: None,
            labels: BTreeMap::new(),
            query: None,
            quantile: None,
            direction: Direction::Increase,
            tolerance: None,
            min_effect: None,
            critical: false,
            group: Some(group.into()),
        }
    }

    /// The tolerance as a fraction, with the source's default.
    pub fn tolerance(&self) -> f64 {
        self.tolerance
            .map(|p| p.fraction())
            .unwrap_or(match self.source {
                Source::Latency => 0.25,
                Source::Tail => 0.01,
                Source::Errors | Source::Counter => 0.005,
                Source::Gauge | Source::Promql => 0.20,
            })
    }

    /// The smallest shift that may count, in milliseconds.
    pub fn min_effect_ms(&self) -> f64 {
        self.min_effect
            .map(|d| d.get().as_secs_f64() * 1e3)
            .unwrap_or(1.0)
    }

    /// The tail quantile.
    pub fn quantile(&self) -> f64 {
        self.quantile.unwrap_or(0.99)
    }

    /// Its group's name.
    pub fn group(&self) -> String {
        self.group.clone().unwrap_or_else(|| {
            serde_json::to_value(self.source)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        })
    }
}

/// Score thresholds (0–100).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScoreSpec {
    /// At or above: GO (default 95).
    #[serde(default = "default_pass")]
    pub pass: f64,
    /// At or below: NO-GO (default 75).
    #[serde(default = "default_marginal")]
    pub marginal: f64,
}

impl Default for ScoreSpec {
    fn default() -> Self {
        ScoreSpec {
            pass: default_pass(),
            marginal: default_marginal(),
        }
    }
}

fn default_pass() -> f64 {
    95.0
}

fn default_marginal() -> f64 {
    75.0
}

/// A Prometheus server holding the instances' metrics.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PrometheusSpec {
    /// Base URL, e.g. `http://127.0.0.1:9090`.
    pub url: String,
    /// `{{instance}}` of the baseline (default: its URL's host:port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_instance: Option<String>,
    /// `{{instance}}` of the canary (default: its URL's host:port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_instance: Option<String>,
}

/// Problems a schema cannot see, as (JSON pointer below `/canary`, message, hint).
pub fn problems(spec: &CanarySpec) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut p = |ptr: String, msg: String, hint: &str| out.push((ptr, msg, hint.to_string()));
    let t = &spec.traffic;
    if t.requests.is_empty() {
        p(
            "/traffic/requests".into(),
            "no request to send".into(),
            "name at least one `request: GET /path`",
        );
    }
    if t.requests.iter().all(|r| r.weight == 0) && !t.requests.is_empty() {
        p(
            "/traffic/requests".into(),
            "every weight is 0".into(),
            "give a request a weight of 1 or more",
        );
    }
    if t.rate.per_second() <= 0.0 || t.rate.per_second() > 5_000.0 {
        p(
            "/traffic/rate".into(),
            format!("rate {} is outside 0–5000/s per version", t.rate),
            "e.g. `rate: 40/s`",
        );
    }
    if t.interval.get().is_zero() || t.interval.get() > t.duration.get() {
        p(
            "/traffic/interval".into(),
            format!(
                "interval {} must be above 0 and at most the duration {}",
                t.interval, t.duration
            ),
            "e.g. `interval: 10s` with `duration: 45s`",
        );
    }
    if t.warmup.get() >= t.duration.get() {
        p(
            "/traffic/warmup".into(),
            format!(
                "warm-up {} leaves nothing of the duration {} to judge",
                t.warmup, t.duration
            ),
            "make the warm-up shorter than the duration",
        );
    }
    if t.connections == 0 || t.connections > 256 {
        p(
            "/traffic/connections".into(),
            format!("{} connections per version", t.connections),
            "use 1–256",
        );
    }
    if !(0.5..1.0).contains(&spec.confidence) {
        p(
            "/confidence".into(),
            format!("confidence {} is outside [0.5, 1)", spec.confidence),
            "e.g. `confidence: 0.99`",
        );
    }
    let s = spec.score;
    if !(0.0..=100.0).contains(&s.pass)
        || !(0.0..=100.0).contains(&s.marginal)
        || s.marginal >= s.pass
    {
        p(
            "/score".into(),
            format!(
                "pass {} and marginal {} must be 0–100 with marginal below pass",
                s.pass, s.marginal
            ),
            "e.g. `score: {pass: 95, marginal: 75}`",
        );
    }
    for (g, w) in &spec.groups {
        if !(*w >= 0.0 && w.is_finite()) {
            p(
                format!("/groups/{g}"),
                format!("weight {w} of group `{g}`"),
                "weights are 0 or more",
            );
        }
    }
    let mut names = std::collections::HashSet::new();
    for (i, m) in spec.metrics.iter().enumerate() {
        let at = |f: &str| format!("/metrics/{i}{f}");
        if !names.insert(m.name.clone()) {
            p(
                at("/name"),
                format!("metric `{}` is named twice", m.name),
                "give each metric its own name",
            );
        }
        match m.source {
            Source::Counter | Source::Gauge if m.metric.is_none() => p(
                at(""),
                format!(
                    "metric `{}` reads `/metrics` but names no `metric:`",
                    m.name
                ),
                "add e.g. `metric: http_requests_total`",
            ),
            Source::Promql if m.query.is_none() => p(
                at(""),
                format!("metric `{}` is `promql` without a `query:`", m.name),
                "add e.g. `query: 'process_resident_memory_bytes{instance=\"{{instance}}\"}'`",
            ),
            Source::Promql if spec.prometheus.is_none() => p(
                at("/source"),
                format!(
                    "metric `{}` is `promql` but the section has no `prometheus:`",
                    m.name
                ),
                "add `prometheus: {url: http://127.0.0.1:9090}`",
            ),
            _ => {}
        }
        if let Some(q) = m.quantile
            && !(q > 0.5 && q < 1.0)
        {
            p(
                at("/quantile"),
                format!("quantile {q} is outside (0.5, 1)"),
                "e.g. `quantile: 0.99`",
            );
        }
    }
    out
}
