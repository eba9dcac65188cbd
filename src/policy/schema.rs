//! The policy JSON Schema, generated from the typed model with schemars and post-processed
//! so that editors and the loader reject what serde would reject.
//!
//! schemars renders `Check` (common fields + `#[serde(flatten)]` of the internally tagged
//! [`CheckSpec`](crate::checks::CheckSpec)) as an object with a `oneOf` of kinds. A `oneOf`
//! failure says only "no branch matched", and the branches do not close over the common
//! fields, so here each kind becomes its own closed definition (`HttpCheck`, …: the common
//! properties plus the kind's, `additionalProperties: false`), selected by
//! `if: {kind: const} then: {$ref}`. Errors then come from the one branch that applies, at
//! the exact field. `null` is also dropped from optional fields: leaving a field out is the
//! way to say "none".
//!
//! This module only builds the schema; validation and error mapping live in `load`.

use std::sync::OnceLock;

use serde_json::{Map, Value, json};

use crate::policy::model::Policy;

/// The `$id`-less schema, draft 2020-12. Committed as `docs/policy.schema.json`.
pub fn schema() -> Value {
    cached().clone()
}

/// The schema, built once per process.
pub(crate) fn cached() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(build)
}

/// The check kinds, as written in policies, in schema order.
pub fn kinds() -> Vec<String> {
    cached()["$defs"]["Check"]["properties"]["kind"]["enum"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn build() -> Value {
    let mut root = serde_json::to_value(schemars::schema_for!(Policy)).unwrap_or(Value::Null);
    strip_null(&mut root);
    if let Some(obj) = root.as_object_mut() {
        obj.insert(
            "title".into(),
            Value::String("preflight policy (version 1)".into()),
        );
    }
    let Some(defs) = root.get_mut("$defs").and_then(Value::as_object_mut) else {
        return root;
    };
    let Some(Value::Object(check)) = defs.remove("Check") else {
        return root;
    };
    let common_props = check
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let common_required: Vec<Value> = check
        .get("required")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let branches = check
        .get("oneOf")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();

    let mut kinds = Vec::new();
    let mut all_of = Vec::new();
    let mut kind_defs = Vec::new();
    for branch in branches {
        let Some(kind) = branch
            .pointer("/properties/kind/const")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            continue;
        };
        let def_name = format!("{}Check", pascal(&kind));
        let mut props = common_props.clone();
        // `kind` right after `id`, then the kind's own fields.
        let mut ordered = Map::new();
        if let Some(id) = props.remove("id") {
            ordered.insert("id".into(), id);
        }
        ordered.insert(
            "kind".into(),
            json!({"description": "The check kind.", "const": kind}),
        );
        ordered.extend(props);
        if let Some(own) = branch.get("properties").and_then(Value::as_object) {
            for (k, v) in own {
                if k != "kind" {
                    ordered.insert(k.clone(), v.clone());
                }
            }
        }
        let mut required = common_required.clone();
        for r in branch
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !required.contains(r) {
                required.push(r.clone());
            }
        }
        let mut def = Map::new();
        if let Some(d) = branch.get("description") {
            def.insert("description".into(), d.clone());
        }
        def.insert("type".into(), json!("object"));
        def.insert("properties".into(), Value::Object(ordered));
        def.insert("required".into(), Value::Array(required));
        def.insert("additionalProperties".into(), Value::Bool(false));
        all_of.push(json!({
            "if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]},
            "then": {"$ref": format!("#/$defs/{def_name}")}
        }));
        kinds.push(Value::String(kind));
        kind_defs.push((def_name, Value::Object(def)));
    }

    let mut check_props = Map::new();
    if let Some(id) = common_props.get("id") {
        check_props.insert("id".into(), id.clone());
    }
    check_props.insert(
        "kind".into(),
        json!({"description": "The check kind; decides the other fields.", "enum": kinds}),
    );
    let mut required = vec![json!("id"), json!("kind")];
    for r in common_required {
        if !required.contains(&r) {
            required.push(r);
        }
    }
    let mut new_check = Map::new();
    if let Some(d) = check.get("description") {
        new_check.insert("description".into(), d.clone());
    }
    new_check.insert("type".into(), json!("object"));
    new_check.insert("properties".into(), Value::Object(check_props));
    new_check.insert("required".into(), Value::Array(required));
    new_check.insert("allOf".into(), Value::Array(all_of));
    defs.insert("Check".into(), Value::Object(new_check));
    for (name, def) in kind_defs {
        defs.insert(name, def);
    }
    root
}

/// `rate_limit` → `RateLimit`.
fn pascal(kind: &str) -> String {
    kind.split('_')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

/// Drops `null` alternatives: `type: [string, null]` → `type: string`, and
/// `anyOf: [X, {type: null}]` → X (keeping the field's description).
fn strip_null(v: &mut Value) {
    match v {
        Value::Object(obj) => {
            if let Some(Value::Array(types)) = obj.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let t = types.remove(0);
                    obj.insert("type".into(), t);
                }
            }
            if let Some(Value::Array(alts)) = obj.get("anyOf") {
                let rest: Vec<&Value> = alts
                    .iter()
                    .filter(|a| a.get("type") != Some(&json!("null")))
                    .collect();
                if rest.len() == 1
                    && alts.len() == 2
                    && let Value::Object(inner) = rest[0].clone()
                {
                    obj.remove("anyOf");
                    for (k, val) in inner {
                        obj.entry(k).or_insert(val);
                    }
                }
            }
            for child in obj.values_mut() {
                strip_null(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip_null),
        _ => {}
    }
}

/// Compiles a policy schema into a validator (draft 7, with the `regex` crate for patterns).
pub(crate) fn compile(schema: &serde_json::Value) -> Option<jsonschema::Validator> {
    let mut schema = schema.clone();
    if let Some(o) = schema.as_object_mut() {
        o.remove("$schema");
    }
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft7)
        .with_pattern_options(jsonschema::PatternOptions::regex())
        .build(&schema)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validator() -> jsonschema::Validator {
        compile(&schema()).expect("the schema compiles")
    }

    #[test]
    fn every_kind_has_a_closed_definition() {
        let s = schema();
        let kinds = kinds();
        let registered: Vec<&str> = crate::checks::KINDS.iter().map(|k| k.name).collect();
        assert_eq!(
            kinds, registered,
            "the schema's kinds are the registry's, in order"
        );
        for k in &kinds {
            let def = &s["$defs"][format!("{}Check", pascal(k))];
            assert_eq!(def["additionalProperties"], json!(false), "{k}");
            assert!(def["properties"]["severity"].is_object(), "{k}");
        }
        assert!(!s.to_string().contains("\"null\""));
    }

    #[test]
    fn valid_policies_validate_and_unknown_fields_fail() {
        let v = validator();
        let ok = json!({"version": 1, "name": "x", "checks": [
            {"id": "a", "kind": "http", "request": "GET /healthz", "severity": "low",
             "timeout": "2s", "expect": {"status": 200}},
            {"id": "b", "kind": "rate_limit", "request": "GET /x", "burst": 10, "refill": "10/s"}
        ]});
        let errs: Vec<String> = v.iter_errors(&ok).map(|e| e.to_string()).collect();
        assert!(errs.is_empty(), "{errs:?}");
        let bad = json!({"version": 1, "name": "x", "checks": [
            {"id": "a", "kind": "http", "request": "GET /healthz", "burst": 3}
        ]});
        assert!(!v.is_valid(&bad));
        let bad_kind = json!({"version": 1, "name": "x", "checks": [{"id": "a", "kind": "htp"}]});
        assert!(!v.is_valid(&bad_kind));
    }
}
