//! Stage 3 of loading: merging layers (included files first; a check of the including
//! file with an included check's id overrides the fields it sets) at the JSON level while
//! every node keeps its own `file:line:col`, then assembling the merged value and its
//! pointer → location map.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};

use crate::yaml::{self, NodeSpan, Pos};

/// Where a merged node comes from.
#[derive(Debug, Clone, Copy)]
pub(super) struct Loc {
    pub(super) file: usize,
    pub(super) span: NodeSpan,
    /// The value came (partly) from the environment: never echo it.
    pub(super) from_env: bool,
    /// The value names an unset variable: reported once, as `policy/missing-env`.
    pub(super) unset_env: bool,
}

/// A subtree: its value and the positions of its nodes, relative to its own root (`""`).
#[derive(Debug, Clone, Default)]
pub(super) struct Item {
    pub(super) value: Value,
    pub(super) spans: Vec<(String, Loc)>,
    /// Came from an included file and was not overridden yet.
    pub(super) included: bool,
}

/// A file (with its includes) on its way to becoming a policy.
#[derive(Debug, Default)]
pub(super) struct Layer {
    /// Top-level fields other than `checks` and `waivers`.
    pub(super) root: Vec<(String, Item)>,
    pub(super) root_loc: Option<Loc>,
    pub(super) checks: Vec<Item>,
    pub(super) waivers: Vec<Item>,
}

impl Layer {
    /// Merges `other` into `self`. `own`: `other` is the including file's own content (its
    /// fields win, its checks override included ones with the same id); otherwise it is one
    /// more included file (first definition wins, checks are appended).
    pub(super) fn absorb(&mut self, other: Layer, own: bool) {
        if self.root_loc.is_none() || own {
            self.root_loc = other.root_loc.or(self.root_loc);
        }
        for (k, item) in other.root {
            match self.root.iter_mut().find(|(key, _)| *key == k) {
                Some(slot) if own => slot.1 = item,
                Some(_) => {}
                None => self.root.push((k, item)),
            }
        }
        self.waivers.extend(other.waivers);
        for mut check in other.checks {
            let id = check.value.get("id").and_then(Value::as_str);
            let base = match (own, id) {
                (true, Some(id)) => self
                    .checks
                    .iter_mut()
                    .find(|c| c.included && c.value.get("id").and_then(Value::as_str) == Some(id)),
                _ => None,
            };
            match base {
                Some(base) => override_fields(base, check),
                None => {
                    check.included = !own && check.included;
                    self.checks.push(check)
                }
            }
        }
    }

    pub(super) fn mark_included(&mut self) {
        for c in &mut self.checks {
            c.included = true;
        }
    }
}

/// A check overriding an included one: the fields it sets replace the included ones.
pub(super) fn override_fields(base: &mut Item, over: Item) {
    base.included = false;
    let (Value::Object(b), Value::Object(o)) = (&mut base.value, over.value) else {
        return;
    };
    for (k, v) in o {
        let prefix = format!("/{}", yaml::escape_token(&k));
        base.spans
            .retain(|(p, _)| !(p == &prefix || p.starts_with(&format!("{prefix}/"))));
        base.spans.extend(
            over.spans
                .iter()
                .filter(|(p, _)| p == &prefix || p.starts_with(&format!("{prefix}/")))
                .cloned(),
        );
        b.insert(k, v);
    }
}

/// Spans of the subtree at `prefix`, relative to it.
pub(super) fn subtree(
    spans: &BTreeMap<String, NodeSpan>,
    prefix: &str,
    file: usize,
) -> Vec<(String, Loc)> {
    spans
        .range(prefix.to_string()..)
        .take_while(|(p, _)| p.starts_with(prefix))
        .filter(|(p, _)| p.len() == prefix.len() || p.as_bytes()[prefix.len()] == b'/')
        .map(|(p, span)| {
            (
                p[prefix.len()..].to_string(),
                Loc {
                    file,
                    span: *span,
                    from_env: false,
                    unset_env: false,
                },
            )
        })
        .collect()
}

/// Builds the merged JSON value and the pointer → location map.
pub(super) fn assemble(acc: Layer) -> (Value, HashMap<String, Loc>) {
    let mut locs = HashMap::new();
    if let Some(l) = acc.root_loc {
        locs.insert(String::new(), l);
    }
    let mut map = Map::new();
    let mut root_value = None;
    for (k, item) in acc.root {
        if k.is_empty() {
            // The document was not a mapping.
            for (rel, l) in item.spans {
                locs.insert(rel, l);
            }
            root_value = Some(item.value);
            continue;
        }
        let ptr = format!("/{}", yaml::escape_token(&k));
        for (rel, l) in item.spans {
            locs.insert(format!("{ptr}{rel}"), l);
        }
        map.insert(k, item.value);
    }
    for (name, items) in [("waivers", acc.waivers), ("checks", acc.checks)] {
        if items.is_empty() {
            continue;
        }
        let mut arr = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            for (rel, l) in item.spans {
                locs.insert(format!("/{name}/{i}{rel}"), l);
            }
            arr.push(item.value);
        }
        map.insert(name.to_string(), Value::Array(arr));
    }
    (root_value.unwrap_or(Value::Object(map)), locs)
}

/// The position of `pointer` (its key when `at_key` and it has one), or of its nearest
/// existing ancestor.
pub(super) fn locate(
    locs: &HashMap<String, Loc>,
    pointer: &str,
    at_key: bool,
) -> Option<(usize, Pos)> {
    yaml::locate_merged(locs, pointer, at_key, |l| (l.file, l.span))
}

pub(super) fn is_sensitive(locs: &HashMap<String, Loc>, pointer: &str) -> bool {
    pointer.ends_with("/admin_token") || locs.get(pointer).is_some_and(|l| l.from_env)
}

/// A value as quoted in a message, never a secret or an environment value.
pub(super) fn show(value: &Value, pointer: &str, locs: &HashMap<String, Loc>) -> String {
    if is_sensitive(locs, pointer) {
        return "the value".into();
    }
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let short: String = text.chars().take(60).collect();
    if short.len() < text.len() {
        format!("`{short}…`")
    } else {
        format!("`{short}`")
    }
}
