//! `metric`: evaluates an expression over the target's Prometheus metrics, e.g.
//! `detector_instances == 4`, optionally after driving a workload and on the change of a
//! counter across it (`delta: true`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::checks::{Problems, not_built};
use crate::engine::context::{CheckError, Ctx, Outcome};
use crate::units::RequestLine;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// `selector op number`, e.g. `detector_instances == 4` or
    /// `http_requests_total{route="/healthz",status="200"} >= 1`. Ops: `== != < <= > >=`.
    pub expect: String,
    /// Where the metrics are (default `/metrics`).
    #[serde(default = "default_path")]
    pub path: String,
    /// Requests to send before reading the metric (e.g. 20 graph builds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<Workload>,
    /// Compare the change of the value across the workload instead of its value after it.
    #[serde(default)]
    pub delta: bool,
}

fn default_path() -> String {
    "/metrics".into()
}

/// Requests driven before a measurement.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// The request, e.g. `POST /v1/graph/build`.
    pub request: RequestLine,
    /// JSON body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
    /// How many times.
    pub count: u32,
}

impl Spec {
    pub fn validate(&self, p: &mut Problems) {
        if let Err(e) = crate::probe::prom::Expr::parse(&self.expect) {
            p.error(
                "/expect",
                "metric/bad-expression",
                e,
                "write `name{label=\"value\"} OP number`, e.g. `detector_instances == 4`",
            );
        }
        if !self.path.starts_with('/') {
            p.error(
                "/path",
                "policy/bad-path",
                format!("`{}` must start with `/`", self.path),
                "",
            );
        }
        if let Some(w) = &self.workload {
            p.positive("/workload/count", w.count.into(), "workload count");
        } else if self.delta {
            p.error(
                "/delta",
                "metric/delta-without-workload",
                "`delta: true` needs a `workload` to measure across",
                "add `workload: {request: ..., count: N}`",
            );
        }
    }
}

pub async fn run(_spec: &Spec, _ctx: &Ctx) -> Result<Outcome, CheckError> {
    Err(not_built("metric"))
}
