//! Stage 5 of loading: typing the policy and each check separately
//! (`serde_path_to_error`), so that one bad check does not hide the others; a failure is
//! reported at the field serde stopped at.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;

use super::Pending;
use super::merge::{Loc, is_sensitive, show};
use crate::policy::codes;
use crate::policy::model::Check;
use crate::yaml::pointer_of;

/// A typing error at `prefix` + the serde path.
pub(super) fn value_pending(
    prefix: &str,
    rel: String,
    msg: String,
    value: &Value,
    locs: &HashMap<String, Loc>,
) -> Pending {
    let ptr = format!("{prefix}{rel}");
    let (message, hint) = if is_sensitive(locs, &ptr) {
        ("the value is not valid here".to_string(), String::new())
    } else if ptr.ends_with("/expires") {
        let given = value
            .pointer(&ptr)
            .map(|v| show(v, &ptr, locs))
            .unwrap_or_default();
        (
            format!("{given} is not a date: {msg}"),
            "write the last day the waiver applies as YYYY-MM-DD".to_string(),
        )
    } else {
        (msg, String::new())
    };
    Pending::error(codes::INVALID_VALUE, ptr, message).hint(hint)
}

pub(super) fn serde_pending(
    prefix: String,
    e: &serde_path_to_error::Error<serde_json::Error>,
    value: &Value,
    locs: &HashMap<String, Loc>,
) -> Pending {
    value_pending(
        &prefix,
        pointer_of(e.path()),
        e.inner().to_string(),
        value,
        locs,
    )
}

/// The common fields of a check (everything else belongs to its kind), read from the
/// schema of [`Check`] itself so that a field added there is known here at once.
pub(super) fn common_fields() -> &'static [String] {
    static COMMON: OnceLock<Vec<String>> = OnceLock::new();
    COMMON.get_or_init(|| {
        let schema = serde_json::to_value(schemars::schema_for!(Check)).unwrap_or(Value::Null);
        schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().filter(|k| *k != "kind").cloned().collect())
            .unwrap_or_default()
    })
}

/// Types one check; on failure, the pointer (relative to the check) and the message.
pub(super) fn type_check(raw: &Value) -> Result<Check, (String, String)> {
    match serde_path_to_error::deserialize::<_, Check>(raw.clone()) {
        Ok(c) => Ok(c),
        Err(e) => {
            let whole = (pointer_of(e.path()), e.inner().to_string());
            // The path stops at `flatten`: retype the kind's fields alone to find the field.
            let kind = raw.get("kind").and_then(Value::as_str).unwrap_or_default();
            let mut fields = raw.as_object().cloned().unwrap_or_default();
            fields.retain(|k, _| k != "kind" && !common_fields().contains(k));
            match crate::checks::type_spec(kind, Value::Object(fields)) {
                Some(Err(e)) => Err((pointer_of(e.path()), e.inner().to_string())),
                _ => Err(whole),
            }
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::schema;

    #[test]
    fn every_schema_kind_is_in_the_registry() {
        for k in schema::kinds() {
            assert!(
                crate::checks::type_spec(&k, Value::Null).is_some(),
                "the registry lacks {k}"
            );
        }
    }

    #[test]
    fn common_fields_come_from_the_check_model() {
        let common = common_fields();
        for f in [
            "id",
            "severity",
            "timeout",
            "retry",
            "depends_on",
            "max_requests",
        ] {
            assert!(common.iter().any(|c| c == f), "{f} missing from {common:?}");
        }
        for f in ["kind", "burst", "path", "request"] {
            assert!(
                !common.iter().any(|c| c == f),
                "{f} is not common: {common:?}"
            );
        }
    }
}
