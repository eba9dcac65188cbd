//! The policy language: the typed model, loading YAML with exact positions, the JSON Schema
//! generated from the model, and diagnostics that point at `file:line:col`.
//!
//! It does no I/O beyond reading policy files, and never talks to a target.

pub mod canary;
pub mod codes;
pub mod diag;
pub mod load;
pub mod model;
pub mod render;
pub mod schedule;
pub mod schema;

pub use diag::Diagnostic;
pub use load::{Loaded, Options, find_policy_files, load, load_str, load_with};
pub use model::{Check, GateSpec, Policy, ProcessSpec, Severity, TargetSpec, Waiver};
