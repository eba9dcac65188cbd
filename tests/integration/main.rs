//! Integration tests: one binary (every extra test binary relinks tokio, axum and reqwest).

mod app;
mod check;
mod exercise;
mod matrix;
mod policy;
mod service;
mod support;
