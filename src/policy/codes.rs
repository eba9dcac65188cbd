//! The loader's diagnostic codes (the `policy/` namespace), typed: a diagnostic is raised with
//! one of these constants, never a string literal, and [`ALL`] lists them for the
//! documented-codes test. Codes shared with the check kinds' own validation (`policy/zero`,
//! …) live in [`crate::checks::codes`].

use crate::checks::Code;

/// No policy file was given.
pub const NO_FILES: Code = Code("policy/no-files");
/// A policy file cannot be read.
pub const UNREADABLE: Code = Code("policy/unreadable");
/// An `include:` entry names a file that cannot be read.
pub const INCLUDE_NOT_FOUND: Code = Code("policy/include-not-found");
/// Files include each other in a loop.
pub const INCLUDE_CYCLE: Code = Code("policy/include-cycle");
/// The YAML does not parse.
pub const YAML_SYNTAX: Code = Code("policy/yaml-syntax");
/// A Markdown file has no ```` ```preflight ```` block.
pub const NO_BLOCKS: Code = Code("policy/no-blocks");
/// `version:` is not 1.
pub const UNSUPPORTED_VERSION: Code = Code("policy/unsupported-version");
/// The file is empty.
pub const EMPTY: Code = Code("policy/empty");
/// `${env:NAME}` names an unset variable and gives no default.
pub const MISSING_ENV: Code = Code("policy/missing-env");
/// A malformed `${env:…}`.
pub const BAD_INTERPOLATION: Code = Code("policy/bad-interpolation");
/// A schema error with no more specific code.
pub const SCHEMA_VIOLATION: Code = Code("policy/schema-violation");
/// A field the schema does not know.
pub const UNKNOWN_FIELD: Code = Code("policy/unknown-field");
/// A required field is missing.
pub const MISSING_FIELD: Code = Code("policy/missing-field");
/// `kind:` names no check kind.
pub const UNKNOWN_KIND: Code = Code("policy/unknown-kind");
/// A value of the right type that is not allowed.
pub const INVALID_VALUE: Code = Code("policy/invalid-value");
/// A value of the wrong type.
pub const WRONG_TYPE: Code = Code("policy/wrong-type");
/// Two checks share an id.
pub const DUPLICATE_ID: Code = Code("policy/duplicate-id");
/// `depends_on` names no check.
pub const UNKNOWN_DEPENDENCY: Code = Code("policy/unknown-dependency");
/// `depends_on` entries form a loop.
pub const DEPENDENCY_CYCLE: Code = Code("policy/dependency-cycle");
/// A waiver names no check.
pub const WAIVER_UNKNOWN_CHECK: Code = Code("policy/waiver-unknown-check");
/// A waiver's `expires` date has passed (warning).
pub const WAIVER_EXPIRED: Code = Code("policy/waiver-expired");
/// `gate.block_on` is empty (warning).
pub const GATE_NEVER_BLOCKS: Code = Code("policy/gate-never-blocks");
/// The policy has no checks (warning).
pub const NO_CHECKS: Code = Code("policy/no-checks");
/// The `canary:` section asks for something that cannot be run or judged.
pub const CANARY_INVALID: Code = Code("policy/canary-invalid");
/// `retry.within` is longer than `timeout`, the check's whole deadline (warning).
pub const RETRY_BEYOND_TIMEOUT: Code = Code("policy/retry-beyond-timeout");

/// Every code of the loader.
pub const ALL: &[Code] = &[
    NO_FILES,
    UNREADABLE,
    INCLUDE_NOT_FOUND,
    INCLUDE_CYCLE,
    YAML_SYNTAX,
    NO_BLOCKS,
    UNSUPPORTED_VERSION,
    EMPTY,
    MISSING_ENV,
    BAD_INTERPOLATION,
    SCHEMA_VIOLATION,
    UNKNOWN_FIELD,
    MISSING_FIELD,
    UNKNOWN_KIND,
    INVALID_VALUE,
    WRONG_TYPE,
    DUPLICATE_ID,
    UNKNOWN_DEPENDENCY,
    DEPENDENCY_CYCLE,
    WAIVER_UNKNOWN_CHECK,
    WAIVER_EXPIRED,
    GATE_NEVER_BLOCKS,
    CANARY_INVALID,
    NO_CHECKS,
    RETRY_BEYOND_TIMEOUT,
];

#[cfg(test)]
mod tests {
    #[test]
    fn codes_are_unique_and_namespaced() {
        let mut seen = std::collections::BTreeSet::new();
        for c in super::ALL {
            assert!(c.as_str().starts_with("policy/"), "{c}");
            assert!(seen.insert(c.as_str()), "{c} listed twice");
        }
    }
}
