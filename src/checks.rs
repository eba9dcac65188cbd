//! Check kinds: one module per kind, each with its `Spec` (the policy fields), pure
//! validation, and `run` against a [`Ctx`]. The set of kinds is closed and dispatched by
//! `match`; the JSON Schema is generated from the same types.
//!
//! Checks never print, and never panic on what a target does.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::outcome::{CheckError, Outcome};
use crate::target::Ctx;
use crate::units::Dur;

/// A stable diagnostic code, `namespace/name` (kebab-case), documented in
/// `docs/diagnostics.md`. A kind declares its codes as private constants and lists them in
/// its [`Kind::codes`]: a code declared but not listed is dead code (a lint error), and the
/// registry tests check each listed code's namespace and documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Code(pub &'static str);

impl Code {
    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// Codes shared by several kinds (the `policy/` namespace).
pub mod codes {
    use super::Code;
    /// A minimum above its maximum.
    pub const MIN_ABOVE_MAX: Code = Code("policy/min-above-max");
    /// A count that must be positive is zero.
    pub const ZERO: Code = Code("policy/zero");
    /// A regular expression that does not compile.
    pub const BAD_REGEX: Code = Code("policy/bad-regex");
    /// A path that is not valid where it is used.
    pub const BAD_PATH: Code = Code("policy/bad-path");
    /// Every shared code.
    pub const ALL: &[Code] = &[MIN_ABOVE_MAX, ZERO, BAD_REGEX, BAD_PATH];
}

/// What the registry knows of a kind, declared in the kind's own file (`Spec::KIND`).
#[derive(Debug)]
pub struct Kind {
    /// The name written in policies (`kind: rate_limit`).
    pub name: &'static str,
    /// Its diagnostic code namespace (`rate-limit`).
    pub namespace: &'static str,
    /// Whether it disturbs the target.
    pub exclusivity: Exclusivity,
    /// Its own diagnostic codes (each in `namespace`).
    pub codes: &'static [Code],
}

/// A check kind's spec, implemented in the kind's own file: with one line in `registry!`
/// that is all a new kind needs. No method has a default, so the compiler asks for each.
pub trait KindSpec:
    Sized + Serialize + serde::de::DeserializeOwned + JsonSchema + Clone + std::fmt::Debug
{
    /// Name, namespace, exclusivity and codes.
    const KIND: Kind;
    /// Pure validation of the kind's fields.
    fn validate(&self, p: &mut Problems);
    /// Deadline when the policy gives none.
    fn default_timeout(&self) -> Dur;
    /// Request budget when the policy gives none.
    fn default_budget(&self) -> u64;
    /// Runs the check: measures through `ctx`, then judges.
    fn run(&self, ctx: &Ctx) -> impl Future<Output = Result<Outcome, CheckError>> + Send;
}

/// The one registration point: each line names a kind's variant and module. It generates the
/// [`CheckSpec`] enum (serde tag `kind`, the schema from the same types), its dispatch, the
/// [`KINDS`] table and [`type_spec`]; every arm is generated, so no kind gets a silent default.
macro_rules! registry {
    ($( $(#[$doc:meta])* $variant:ident($module:ident) ),* $(,)?) => {
        $( pub mod $module; )*

        /// The kind of a check and its fields.
        #[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
        #[serde(tag = "kind", rename_all = "snake_case")]
        pub enum CheckSpec {
            $( $(#[$doc])* $variant($module::Spec), )*
        }

        /// Every kind, in registry order.
        pub const KINDS: &[&Kind] = &[ $( &<$module::Spec as KindSpec>::KIND, )* ];

        impl CheckSpec {
            /// The registry entry of this check's kind.
            pub fn info(&self) -> &'static Kind {
                match self {
                    $( CheckSpec::$variant(_) => &<$module::Spec as KindSpec>::KIND, )*
                }
            }

            /// Pure validation of the kind's fields.
            pub fn validate(&self, p: &mut Problems) {
                match self {
                    $( CheckSpec::$variant(s) => s.validate(p), )*
                }
            }

            /// Deadline when the policy gives none.
            pub fn default_timeout(&self) -> Dur {
                match self {
                    $( CheckSpec::$variant(s) => s.default_timeout(), )*
                }
            }

            /// Request budget when the policy gives none.
            pub fn default_budget(&self) -> u64 {
                match self {
                    $( CheckSpec::$variant(s) => s.default_budget(), )*
                }
            }

            /// Runs the check.
            pub async fn run(&self, ctx: &Ctx) -> Result<Outcome, CheckError> {
                match self {
                    $( CheckSpec::$variant(s) => s.run(ctx).await, )*
                }
            }
        }

        /// Types one kind's own fields alone (`kind` and the common fields removed), so a type
        /// error keeps the exact path of the bad field (serde loses it through `flatten` and
        /// internally tagged enums). `None` for an unknown kind.
        pub fn type_spec(
            kind: &str,
            fields: serde_json::Value,
        ) -> Option<Result<CheckSpec, serde_path_to_error::Error<serde_json::Error>>> {
            $(
                if kind == <$module::Spec as KindSpec>::KIND.name {
                    return Some(
                        serde_path_to_error::deserialize::<_, $module::Spec>(fields)
                            .map(CheckSpec::$variant),
                    );
                }
            )*
            None
        }
    };
}
pub mod ticks;

registry! {
    /// One HTTP request; status, headers, JSON values, body and latency as expected.
    Http(http),
    /// A Prometheus metric from the target's `/metrics` (optionally the change across a workload).
    Metric(metric),
    /// A local file exists, has a mode, contains text.
    File(file),
    /// A local command exits as expected and prints what is expected.
    Command(command),
    /// A read-only SQLite query returns the expected value.
    Sqlite(sqlite),
    /// Every Grafana panel's query is valid PromQL and, through Prometheus, returns series.
    Dashboard(dashboard),
    /// Bursts from one address trip the per-IP limiter; refill and isolation hold.
    RateLimit(rate_limit),
    /// A query beyond its budget is cut off in time with the timeout status.
    QueryTimeout(query_timeout),
    /// Injected dependency failures open the breaker at the threshold; it recovers.
    CircuitBreaker(circuit_breaker),
    /// Concurrency past the bound is shed at once; accepted latency stays bounded.
    LoadShedding(load_shedding),
    /// RSS does not grow with repeated work (Theil–Sen slope per iteration).
    MemoryGrowth(memory_growth),
    /// Expired rotated logs are deleted, recent ones and foreign files kept.
    LogRetention(log_retention),
    /// Acknowledged writes and the last snapshot survive SIGKILL; restart is quick.
    CrashRecovery(crash_recovery),
    /// Back-dated rows are pruned past the retention age, recent ones kept.
    StoreRetention(store_retention),
    /// Out of space: 507 with a stable code, honest readiness, reads served, no loss.
    StoreFull(store_full),
    /// Paced open-loop load meets latency, error and throughput thresholds.
    LoadSlo(load_slo),
    /// A person looks and attests (y/n and a note); asked by `preflight audit`.
    Confirm(confirm),
}

/// A problem found by pure validation of one check's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// JSON Pointer of the offending field, relative to the check (e.g. `/burst`).
    pub field: String,
    /// Stable diagnostic code, e.g. `rate-limit/tolerance-too-wide`.
    pub code: Code,
    pub message: String,
    pub hint: Option<String>,
    /// Warnings do not make a policy invalid.
    pub warning: bool,
}

/// Collects every problem of one check (never stops at the first).
#[derive(Debug, Default)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn error(
        &mut self,
        field: &str,
        code: Code,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.0.push(Problem {
            field: field.to_string(),
            code,
            message: message.into(),
            hint: Some(hint.into()).filter(|h: &String| !h.is_empty()),
            warning: false,
        });
    }

    pub fn warning(
        &mut self,
        field: &str,
        code: Code,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.0.push(Problem {
            field: field.to_string(),
            code,
            message: message.into(),
            hint: Some(hint.into()).filter(|h: &String| !h.is_empty()),
            warning: true,
        });
    }

    /// Shared rule: `min` must not exceed `max`.
    pub fn ordered<T: PartialOrd + std::fmt::Display>(
        &mut self,
        field: &str,
        min: T,
        max: T,
        what: &str,
    ) {
        if min > max {
            self.error(
                field,
                codes::MIN_ABOVE_MAX,
                format!("{what}: minimum {min} is above maximum {max}"),
                "swap the two values",
            );
        }
    }

    /// Shared rule: a count must be positive.
    pub fn positive(&mut self, field: &str, value: u64, what: &str) {
        if value == 0 {
            self.error(field, codes::ZERO, format!("{what} must be at least 1"), "");
        }
    }
}

/// The SKIP of a check of a repository file (`shown`) that is not there when a built-in
/// policy runs outside the checkout it describes: out of scope, never blocking.
pub fn not_in_checkout(shown: &str) -> CheckError {
    CheckError::OutOfScope(format!(
        "{shown} is not here: the built-in policy runs outside the checkout it describes \
         (not blocking; run from the checkout to check it)"
    ))
}

/// How a kind is scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exclusivity {
    /// Read-only: may run concurrently with other independent checks.
    Shared,
    /// Disturbs the target (faults, floods, kills): runs alone.
    Exclusive,
}

impl CheckSpec {
    /// The local file a check reads, whose relative path the loader resolves against the
    /// policy file that declares it: the field's name, the path, and the flag saying a
    /// built-in policy declared it (a missing file is then SKIP, not FAIL).
    pub fn local_file_mut(&mut self) -> Option<(&'static str, &mut std::path::PathBuf, &mut bool)> {
        match self {
            CheckSpec::File(s) => Some(("path", &mut s.path, &mut s.from_builtin)),
            CheckSpec::Dashboard(s) => Some(("file", &mut s.file, &mut s.from_builtin)),
            // The other kinds read no file named in the policy.
            _ => None,
        }
    }

    /// The kind's name as written in policies.
    pub fn kind(&self) -> &'static str {
        self.info().name
    }

    /// Whether the check disturbs the target.
    pub fn exclusivity(&self) -> Exclusivity {
        self.info().exclusivity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_is_named_as_serde_names_it() {
        for k in KINDS {
            // An unknown variant would say so; a known one complains about its fields.
            let e = serde_json::from_value::<CheckSpec>(serde_json::json!({"kind": k.name}))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(!e.contains("unknown variant"), "{}: {e}", k.name);
            assert!(
                type_spec(k.name, serde_json::Value::Null).is_some(),
                "{}",
                k.name
            );
        }
        assert!(type_spec("no_such_kind", serde_json::Value::Null).is_none());
    }

    #[test]
    fn names_namespaces_and_codes_are_unique_and_well_formed() {
        let mut names = std::collections::BTreeSet::new();
        let mut spaces = std::collections::BTreeSet::new();
        let mut all = std::collections::BTreeSet::new();
        for k in KINDS {
            assert!(names.insert(k.name), "kind {} twice", k.name);
            assert!(
                spaces.insert(k.namespace),
                "namespace {} twice",
                k.namespace
            );
            assert_eq!(k.namespace, k.name.replace('_', "-"), "{}", k.name);
            for c in k.codes {
                let (ns, rest) = c.as_str().split_once('/').expect("namespace/name");
                assert_eq!(ns, k.namespace, "{c} is in {}'s list", k.name);
                assert!(
                    !rest.is_empty()
                        && rest.split('-').all(|w| !w.is_empty()
                            && w.chars()
                                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit())),
                    "{c} is not kebab-case"
                );
                assert!(all.insert(*c), "{c} twice");
            }
        }
        for c in codes::ALL {
            assert!(c.as_str().starts_with("policy/"), "{c}");
            assert!(all.insert(*c), "{c} twice");
        }
        assert!(KINDS.len() >= 13 && all.len() > KINDS.len());
    }

    #[test]
    fn only_read_only_kinds_share_the_target() {
        let shared: Vec<&str> = KINDS
            .iter()
            .filter(|k| k.exclusivity == Exclusivity::Shared)
            .map(|k| k.name)
            .collect();
        assert_eq!(
            shared,
            [
                "http",
                "metric",
                "file",
                "command",
                "sqlite",
                "dashboard",
                "confirm"
            ]
        );
    }
}
