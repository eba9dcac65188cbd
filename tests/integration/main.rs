//! Integration tests: one binary (every extra test binary relinks tokio, axum and reqwest).

// `support::timing()` is a std mutex held across awaits on purpose: it serializes whole
// tests, and every #[tokio::test] has its own runtime on its own thread, so a waiting test
// blocks only itself.
#![allow(clippy::await_holding_lock)]

mod annotations;
mod app;
mod architecture;
mod audit;
mod canary;
mod check;
mod cli;
mod dashboard;
mod docs;
mod exercise;
mod fakes_a;
mod fakes_b;
mod faults;
mod fleet;
mod init;
mod install;
mod limiters;
mod live;
mod matrix;
mod policy;
mod prom_server;
mod promql;
mod reach;
mod remote;
mod secrets;
mod service;
mod shedding;
mod store;
mod support;
mod tls;
mod watch;
