//! Integration tests: one binary.
mod policy;
