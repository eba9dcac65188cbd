//! Probes: the means by which checks observe and drive a target (HTTP client, paced load,
//! process sampling, Prometheus text, PromQL through a Prometheus server, files). Probes
//! measure; they never decide pass/fail.

pub mod discovery;
pub mod http;
pub mod load;
pub mod process;
pub mod prom;
pub mod promql;
pub mod ratelimit;
pub mod stats;
