//! The engine: resolves the target (spawned or remote) and its capabilities, runs checks
//! under deadlines and request budgets (concurrently where they are independent), applies
//! the gate, and produces a [`crate::report::Report`].
//!
//! [`fleet`] runs one policy against many instances and merges shards of a fleet.
//!
//! It knows no check's internals: it calls [`crate::checks::CheckSpec`]'s dispatch.

pub mod fleet;
pub mod gate;
pub mod plan;
pub mod run;
