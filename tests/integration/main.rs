//! Integration tests: one binary.
mod exercise;
