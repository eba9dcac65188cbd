//! preflight proves production-hardening requirements against a running service by
//! exercising the behaviour, then renders a GO / NO-GO / INCONCLUSIVE verdict with evidence.
//!
//! The architecture (DESIGN §2, `docs/architecture.md`), bottom to top — each module imports
//! only modules listed before it:
//! [`outcome`] (the contract: what a check gives back) · [`secret`], [`units`], [`yaml`],
//! [`builtin`] (the policies and profiles compiled in) ·
//! [`target`] (the service under test, spawned or remote, and a check's [`target::Ctx`]) ·
//! [`probe`] (HTTP, paced load, processes, Prometheus text; measures, never decides) ·
//! [`checks`] (one file per kind: spec, measuring, a pure judge; one registry) ·
//! [`policy`] (load, validate, schema) · [`report`] (plain data and one renderer per format) ·
//! [`engine`] (plan, run, gate) · [`canary`], [`init`], [`audit`], [`watch`] (the commands
//! built on the engine; `watch` re-runs policies on schedules and exports Prometheus metrics) ·
//! and above them the binary's `cli` (`src/cli.rs`, arguments and output: the only code that
//! prints).
//! [`service`] is the bundled core service, which the rest sees only over HTTP, signals and
//! files; it imports nothing above [`units`], [`yaml`] and [`builtin`].

pub mod audit;
pub mod builtin;
pub mod canary;
pub mod checks;
pub mod engine;
pub mod http_client;
pub mod init;
pub mod outcome;
pub mod policy;
pub mod probe;
pub mod report;
pub mod secret;
pub mod service;
pub mod stats;
pub mod style;
pub mod target;
pub mod units;
pub mod watch;
pub mod yaml;
