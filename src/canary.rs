//! `preflight canary`: the baseline against the canary, judged per request with honest
//! statistics (docs/canary.md).
//!
//! [`traffic`] sends one paced schedule to both versions alike and records every request;
//! [`judge`] compares one metric (pure); [`score`] turns the judged metrics into a 0–100
//! score and a verdict (pure); [`run`] reaches or spawns the versions, reads `/metrics` and
//! PromQL at each interval boundary, judges each interval as it ends and builds the report.

pub mod judge;
pub mod live;
pub mod proxy;
pub mod run;
pub mod score;
pub mod traffic;
