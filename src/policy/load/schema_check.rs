//! Stage 4 of loading: the merged document against the generated JSON Schema, each error
//! turned into a message a person can act on and mapped from its instance path back to a
//! position.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;

use super::merge::{Loc, is_sensitive, show};
use super::{Pending, check_index};
use crate::policy::codes;
use crate::policy::schema;
use crate::yaml;

pub(super) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing (null)",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

pub(super) fn describe_type(t: &Value) -> String {
    let one = |t: &str| match t {
        "integer" => "an integer",
        "number" => "a number",
        "string" => "a string",
        "boolean" => "true or false",
        "array" => "a list",
        "object" => "a mapping",
        "null" => "nothing",
        _ => "a value",
    };
    match t {
        Value::String(s) => one(s).to_string(),
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .map(one)
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "a value".into(),
    }
}

/// The schema node at `schema_path` (following `$ref`s), without the final keyword, and the
/// name of the last definition entered.
pub(super) fn schema_node(schema_path: &str) -> (Option<&'static Value>, Option<String>) {
    let root = schema::cached();
    let mut cur = root;
    let mut def = None;
    let segs: Vec<String> = schema_path
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect();
    let Some((_, parents)) = segs.split_last() else {
        return (Some(cur), def);
    };
    for seg in parents {
        if seg == "$ref" {
            let Some(r) = cur.get("$ref").and_then(Value::as_str) else {
                return (None, def);
            };
            let name = r.trim_start_matches("#/$defs/");
            def = Some(name.to_string());
            match root.pointer(r.trim_start_matches('#')) {
                Some(n) => cur = n,
                None => return (None, def),
            }
            continue;
        }
        let next = match cur {
            Value::Object(o) => o.get(seg.as_str()),
            Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        };
        match next {
            Some(n) => cur = n,
            None => return (None, def),
        }
    }
    (Some(cur), def)
}

/// Compiles the policy schema for validation. Compiled as draft 7 (which our schema also is,
/// keyword for keyword: no `$dynamicRef`, no `$ref` siblings that matter): jsonschema checks a
/// schema against its meta-schema first, and the 2020-12 meta-schema's `$dynamicRef`s made
/// that ~90 ms per process, most of `preflight lint`'s time. Patterns use `regex`, as they
/// need no look-around.
pub(super) fn validator() -> Option<&'static jsonschema::Validator> {
    static V: OnceLock<Option<jsonschema::Validator>> = OnceLock::new();
    V.get_or_init(|| schema::compile(schema::cached())).as_ref()
}

pub(super) fn validate_schema(value: &Value, locs: &HashMap<String, Loc>, out: &mut Vec<Pending>) {
    let Some(v) = validator() else {
        out.push(Pending::error(
            codes::SCHEMA_VIOLATION,
            String::new(),
            "internal: the policy schema does not compile",
        ));
        return;
    };
    use jsonschema::error::ValidationErrorKind as K;
    for err in v.iter_errors(value) {
        let ptr = err.instance_path().as_str().to_string();
        // The evaluation path, through each `$ref`: `schema_node` follows them to the node.
        let schema_path = err.evaluation_path().as_str().to_string();
        let (node, def) = schema_node(&schema_path);
        let instance: &Value = err.instance();
        match err.kind() {
            K::AdditionalProperties { unexpected } | K::UnevaluatedProperties { unexpected } => {
                let known: Vec<String> = node
                    .and_then(|n| n.get("properties"))
                    .and_then(Value::as_object)
                    .map(|o| o.keys().cloned().collect())
                    .unwrap_or_default();
                let whose = whose(value, &ptr);
                for field in unexpected {
                    let fptr = format!("{ptr}/{}", yaml::escape_token(field));
                    let hint = match did_you_mean(field, &known) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => format!("known fields here: {}", known.join(", ")),
                    };
                    out.push(
                        Pending::error(
                            codes::UNKNOWN_FIELD,
                            fptr,
                            format!("unknown field `{field}`{whose}"),
                        )
                        .at_key()
                        .hint(hint),
                    );
                }
            }
            K::Required { property } => {
                let name = property.as_str().unwrap_or_default().to_string();
                let about = node
                    .and_then(|n| n.pointer(&format!("/properties/{name}/description")))
                    .and_then(Value::as_str)
                    .map(|d| format!("`{name}`: {}", first_line(d)))
                    .unwrap_or_default();
                out.push(
                    Pending::error(
                        codes::MISSING_FIELD,
                        format!("{ptr}/{}", yaml::escape_token(&name)),
                        format!("missing required field `{name}`{}", whose(value, &ptr)),
                    )
                    .hint(about),
                );
            }
            K::Enum { options } => {
                let opts: Vec<String> = options
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|o| o.as_str().map(str::to_string).unwrap_or(o.to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                let given = instance.as_str().unwrap_or_default();
                let mean = did_you_mean(given, &opts)
                    .map(|s| format!("did you mean `{s}`? "))
                    .unwrap_or_default();
                let is_kind = ptr.ends_with("/kind") && check_index(&ptr).is_some();
                if is_kind {
                    out.push(
                        Pending::error(
                            codes::UNKNOWN_KIND,
                            ptr.clone(),
                            format!("unknown check kind {}", show(instance, &ptr, locs)),
                        )
                        .hint(format!("{mean}the kinds are: {}", opts.join(", "))),
                    );
                } else {
                    out.push(
                        Pending::error(
                            codes::INVALID_VALUE,
                            ptr.clone(),
                            format!(
                                "{} is not one of: {}",
                                show(instance, &ptr, locs),
                                opts.join(", ")
                            ),
                        )
                        .hint(mean.trim_end().to_string()),
                    );
                }
            }
            K::Type { .. } => {
                let expected = node
                    .and_then(|n| n.get("type"))
                    .map(describe_type)
                    .unwrap_or_else(|| "another type".into());
                let found = if is_sensitive(locs, &ptr) {
                    json_type(instance).to_string()
                } else {
                    format!("{} {}", json_type(instance), show(instance, &ptr, locs))
                };
                let hint = node
                    .and_then(|n| n.get("description"))
                    .and_then(Value::as_str)
                    .map(first_line)
                    .unwrap_or_default();
                let mut p = Pending::error(
                    codes::WRONG_TYPE,
                    ptr.clone(),
                    format!("expected {expected}, found {found}"),
                )
                .hint(hint);
                // A block mapping or list starts on the line after its key: point at the key.
                p.at_key = instance.is_object() || instance.is_array();
                out.push(p);
            }
            K::Pattern { .. } => {
                let text = instance.as_str().unwrap_or_default();
                let msg = unit_error(def.as_deref(), text).unwrap_or_else(|| {
                    format!(
                        "{} does not have the expected form",
                        show(instance, &ptr, locs)
                    )
                });
                let examples = node
                    .and_then(|n| n.get("examples"))
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(|e| format!("`{e}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .filter(|s| !s.is_empty())
                    .map(|s| format!("for example {s}"))
                    .unwrap_or_default();
                let msg = if is_sensitive(locs, &ptr) {
                    "the value does not have the expected form".to_string()
                } else {
                    msg
                };
                out.push(Pending::error(codes::INVALID_VALUE, ptr.clone(), msg).hint(examples));
            }
            K::Format { format } => {
                let what = if format == "date" {
                    "a date (YYYY-MM-DD)".to_string()
                } else {
                    format!("a valid {format}")
                };
                let hint = if ptr.ends_with("/expires") {
                    "write the last day the waiver applies as YYYY-MM-DD"
                } else {
                    ""
                };
                out.push(
                    Pending::error(
                        codes::INVALID_VALUE,
                        ptr.clone(),
                        format!("{} is not {what}", show(instance, &ptr, locs)),
                    )
                    .hint(hint),
                );
            }
            K::Minimum { limit } | K::ExclusiveMinimum { limit } => out.push(Pending::error(
                codes::INVALID_VALUE,
                ptr.clone(),
                format!(
                    "{} is below the minimum {limit}",
                    show(instance, &ptr, locs)
                ),
            )),
            K::Maximum { limit } | K::ExclusiveMaximum { limit } => out.push(Pending::error(
                codes::INVALID_VALUE,
                ptr.clone(),
                format!(
                    "{} is above the maximum {limit}",
                    show(instance, &ptr, locs)
                ),
            )),
            K::AnyOf { .. } | K::OneOfNotValid { .. } => {
                let about = node
                    .and_then(|n| n.get("description"))
                    .and_then(Value::as_str)
                    .map(first_line)
                    .unwrap_or_default();
                out.push(
                    Pending::error(
                        codes::INVALID_VALUE,
                        ptr.clone(),
                        format!("{} is not valid here", show(instance, &ptr, locs)),
                    )
                    .hint(about),
                );
            }
            _ => {
                let msg = if is_sensitive(locs, &ptr) {
                    "the value does not match the policy schema".to_string()
                } else {
                    err.to_string()
                };
                out.push(Pending::error(codes::SCHEMA_VIOLATION, ptr.clone(), msg));
            }
        }
    }
}

/// ` in check `id`` when `ptr` is inside a check with an id.
pub(super) fn whose(value: &Value, ptr: &str) -> String {
    check_index(ptr)
        .and_then(|i| value.pointer(&format!("/checks/{i}/id")))
        .and_then(Value::as_str)
        .map(|id| format!(" in check `{id}`"))
        .unwrap_or_default()
}

pub(super) fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

/// The unit type's own parse error for `text` (same message as the typed stage).
pub(super) fn unit_error(def: Option<&str>, text: &str) -> Option<String> {
    use crate::units::{Dur, Percent, Rate, RequestLine, Size};
    let r = match def? {
        "Dur" => text.parse::<Dur>().err(),
        "Size" => text.parse::<Size>().err(),
        "Rate" => text.parse::<Rate>().err(),
        "Percent" => text.parse::<Percent>().err(),
        "RequestLine" => text.parse::<RequestLine>().err(),
        _ => None,
    };
    r.map(|e| e.0)
}

/// The closest candidate within a small edit distance.
pub(super) fn did_you_mean<'a>(given: &str, candidates: &'a [String]) -> Option<&'a str> {
    let limit = (given.chars().count() / 3).max(1);
    candidates
        .iter()
        .map(|c| (strsim::levenshtein(given, c), c))
        .filter(|(d, _)| *d <= limit.max(2) && *d > 0)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.as_str())
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_you_mean_is_close_only() {
        let c: Vec<String> = ["burst", "refill", "tolerance"].map(String::from).into();
        assert_eq!(did_you_mean("burts", &c), Some("burst"));
        assert_eq!(did_you_mean("tolerence", &c), Some("tolerance"));
        assert_eq!(did_you_mean("zzzzzz", &c), None);
    }
}
