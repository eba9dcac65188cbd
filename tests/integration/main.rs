//! Integration tests: one binary (every extra test binary relinks tokio, axum and reqwest).

mod check;
mod exercise;
mod policy;
mod service;
mod support;
