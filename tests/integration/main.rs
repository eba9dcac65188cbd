//! Integration tests: one binary.

mod service;
mod support;
