//! Probes: the means by which checks observe and drive a target (HTTP client, paced load,
//! process sampling, Prometheus text, files). Probes measure; they never decide pass/fail.

pub mod http;
pub mod load;
pub mod process;
pub mod prom;
pub mod stats;
