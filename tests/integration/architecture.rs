//! The import graph of `src/` (DESIGN §2, docs/architecture.md): every top-level module
//! imports only modules below it, the bundled service nothing of the tool, and no two
//! modules anywhere import each other (directly or around a loop). A child using its own
//! parent's items (`super::Shared`) is the module tree, not a cycle, and is not counted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top: a module may import only modules of a lower rank.
const LAYERS: &[&[&str]] = &[
    &[
        "outcome",
        "secret",
        "units",
        "yaml",
        "http_client",
        "style",
        "stats",
        "builtin",
    ],
    &["target"],
    &["probe"],
    &["checks"],
    &["policy"],
    &["report"],
    &["engine"],
    &["canary", "init", "audit", "watch"],
    &["cli"],
];
/// The bundled service sees the rest only over HTTP, signals and files (it shares the leaf
/// that builds every reqwest client).
const SERVICE_MAY_USE: &[&str] = &["units", "yaml", "http_client", "builtin"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every module file as (`a::b`, text).
fn modules() -> Vec<(String, String)> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, String)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let stem = p.file_stem().unwrap().to_str().unwrap().to_string();
            let name = if prefix.is_empty() {
                stem.clone()
            } else {
                format!("{prefix}::{stem}")
            };
            if p.is_dir() {
                walk(&p, &name, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                if ["lib", "main"].contains(&stem.as_str()) && prefix.is_empty() {
                    continue;
                }
                out.push((name, std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    let mut out = vec![];
    walk(&src(), "", &mut out);
    out
}

/// Module paths referenced by `crate::…` and `super::…` in `text` (code only, not comments),
/// resolved to the deepest module that exists.
fn references(module: &str, text: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let parent: Vec<&str> = module.split("::").collect();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        for (start, base) in [
            ("crate::", vec![]),
            // the binary's modules (`cli`) name the library by its crate name
            ("preflight::", vec![]),
            ("super::", parent[..parent.len() - 1].to_vec()),
        ] {
            let mut rest = code;
            while let Some(i) = rest.find(start) {
                // `crate::` inside an identifier like `my_crate::` is not ours.
                let before = rest[..i].chars().last();
                let tail = &rest[i + start.len()..];
                rest = tail;
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                    continue;
                }
                let path: Vec<&str> = tail
                    .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .next()
                    .unwrap_or("")
                    .split("::")
                    .filter(|s| !s.is_empty())
                    .collect();
                let mut full: Vec<&str> = base.clone();
                full.extend(path);
                while !full.is_empty() && !known.contains(&full.join("::")) {
                    full.pop();
                }
                if !full.is_empty() {
                    out.insert(full.join("::"));
                }
            }
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules();
    let known: BTreeSet<String> = mods.iter().map(|(m, _)| m.clone()).collect();
    mods.iter()
        .map(|(m, text)| {
            let refs = references(m, text, &known)
                .into_iter()
                // itself, and its own ancestors (the module tree) are not edges
                .filter(|r| r != m && !m.starts_with(&format!("{r}::")))
                .collect();
            (m.clone(), refs)
        })
        .collect()
}

fn top(m: &str) -> &str {
    m.split("::").next().unwrap()
}

fn rank(m: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&top(m)))
        .unwrap_or_else(|| panic!("module `{}` is in no layer of this test: add it", top(m)))
}

#[test]
fn every_module_imports_only_modules_below_it() {
    let mut wrong = vec![];
    for (m, refs) in graph() {
        for r in refs {
            if top(&r) == top(&m) {
                continue;
            }
            let ok = if top(&m) == "service" {
                SERVICE_MAY_USE.contains(&top(&r))
            } else {
                top(&r) != "service" && rank(&r) < rank(&m)
                    || top(&r) == "service" && top(&m) == "cli"
            };
            if !ok {
                wrong.push(format!("{m} → {r}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layering:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_import_cycles_anywhere_in_src() {
    let g = graph();
    // Depth-first search for a back edge; report the loop it closes.
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
        found: &mut Vec<String>,
    ) {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for r in g.get(n).into_iter().flatten() {
            match state.get(r.as_str()).copied().unwrap_or(0) {
                0 => visit(r, g, state, stack, found),
                1 => {
                    let i = stack.iter().position(|s| s == r).unwrap();
                    found.push(format!("{} → {r}", stack[i..].join(" → ")));
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
    }
    let mut state = BTreeMap::new();
    let mut found = vec![];
    for n in g.keys() {
        if !state.contains_key(n) {
            visit(n, &g, &mut state, &mut vec![], &mut found);
        }
    }
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

#[test]
fn the_graph_sees_real_edges() {
    // Guards the scanner itself: if it found nothing, the two tests above would pass vacuously.
    let g = graph();
    assert!(
        g["checks::rate_limit"].contains("outcome"),
        "{:?}",
        g["checks::rate_limit"]
    );
    assert!(
        g["engine::run"].contains("checks"),
        "{:?}",
        g["engine::run"]
    );
    assert!(
        g["service::admin"].contains("service::feed"),
        "{:?}",
        g["service::admin"]
    );
}
