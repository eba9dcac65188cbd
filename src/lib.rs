//! preflight proves production-hardening requirements against a running service by
//! exercising the behaviour, then renders a GO / NO-GO / INCONCLUSIVE verdict with evidence.
//!
//! The architecture (DESIGN §2):
//! policy files → [`policy`] (load, validate) → [`engine`] (targets, run, gate) → [`checks`]
//! (one module per kind, driving the target through [`probe`]) → [`report`] (one renderer per
//! format). [`service`] is the bundled core service, which the rest sees only over HTTP,
//! signals and files.

pub mod checks;
pub mod cli;
pub mod engine;
pub mod http_client;
pub mod policy;
pub mod probe;
pub mod report;
pub mod service;
pub mod style;
pub mod units;
pub mod yaml;
