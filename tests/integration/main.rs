//! Integration tests: one binary.
mod check;
mod exercise;
