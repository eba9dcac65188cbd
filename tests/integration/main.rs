//! Integration tests: one binary.
mod check;
