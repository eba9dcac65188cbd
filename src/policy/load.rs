//! Loading policies, every problem collected as a [`Diagnostic`] before reporting:
//!
//! 1. read each file (YAML, or the ```` ```preflight ```` blocks of a Markdown file) into a
//!    JSON value and a JSON Pointer → position map ([`crate::yaml`]);
//! 2. interpolate `${env:NAME}` / `${env:NAME:-default}` in string scalars;
//! 3. resolve `include:` (relative to the including file; included checks first; a check
//!    here with an included check's id overrides the fields it sets), merging at the JSON
//!    level while every node keeps its own `file:line:col`;
//! 4. validate the merged document against the generated JSON Schema ([`super::schema`]),
//!    each error mapped from its instance path back to a position;
//! 5. type the policy and each check separately (`serde_path_to_error`), so one bad check
//!    does not hide the others;
//! 6. semantic validation: ids, dependencies, waivers, and each kind's own `validate`.
//!
//! The loader reads files and the environment and nothing else; it never panics on any input.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::{Map, Value};

use crate::checks::Problems;
use crate::policy::diag::{Diagnostic, Level};
use crate::policy::model::{Check, Policy};
use crate::policy::schema;
use crate::yaml::{self, Document, NodeSpan, Pos};

/// A loaded, valid policy (several files are merged in order).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub policy: Policy,
    /// Every file read, in order (includes too).
    pub files: Vec<PathBuf>,
    /// Warnings (a loaded policy has no errors).
    pub warnings: Vec<Diagnostic>,
}

/// Looks up an environment variable.
pub type EnvLookup = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// What the loader takes from the outside world, replaceable in tests.
pub struct Options {
    /// Looks up an environment variable for `${env:NAME}`.
    pub env: EnvLookup,
    /// Today, for waiver expiry.
    pub today: chrono::NaiveDate,
    /// Report an unset `${env:NAME}` as a warning, not an error: `preflight lint` runs where
    /// secrets are not set (CI), a run cannot.
    pub missing_env_warns: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            env: Box::new(|name| std::env::var(name).ok()),
            today: chrono::Local::now().date_naive(),
            missing_env_warns: false,
        }
    }
}

/// Loads and validates policy files. `Err` holds every problem found (at least one error).
/// Several files merge as if one root file included them all.
pub fn load(paths: &[PathBuf]) -> Result<Loaded, Vec<Diagnostic>> {
    load_with(paths, &Options::default())
}

/// [`load`] with explicit environment and date.
pub fn load_with(paths: &[PathBuf], opts: &Options) -> Result<Loaded, Vec<Diagnostic>> {
    let mut l = Loader::new(opts);
    if paths.is_empty() {
        l.diags.push(Diagnostic::error(
            "policy/no-files",
            "",
            None,
            "no policy file given",
        ));
        return Err(l.diags);
    }
    let mut acc = Layer::default();
    for path in paths {
        if let Some(layer) = l.load_path(path, None) {
            acc.absorb(layer, false);
        }
    }
    l.finish(acc)
}

/// Loads one policy from text in memory, as if it were the file `path` (includes are read
/// relative to it). Used by tests and benchmarks.
pub fn load_str(path: &Path, text: &str, opts: &Options) -> Result<Loaded, Vec<Diagnostic>> {
    let mut l = Loader::new(opts);
    let layer = l.load_text(path, text.to_string(), None);
    let mut acc = Layer::default();
    if let Some(layer) = layer {
        acc.absorb(layer, false);
    }
    l.finish(acc)
}

/// Policy files under `paths`: files as given; directories recursively (`*.yaml`, `*.yml`,
/// and `*.md` files that contain a ```` ```preflight ```` block), sorted.
pub fn find_policy_files(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out)?;
            } else {
                match p.extension().and_then(|e| e.to_str()) {
                    Some("yaml" | "yml") => out.push(p),
                    Some("md") => {
                        let text = std::fs::read_to_string(&p).unwrap_or_default();
                        if !markdown_blocks(&text).is_empty() {
                            out.push(p);
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut out)?;
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

const YAML_HINT: &str =
    "the parser noticed here; check the indentation, quotes and brackets on this line and above";

/// Where a merged node comes from.
#[derive(Debug, Clone, Copy)]
struct Loc {
    file: usize,
    span: NodeSpan,
    /// The value came (partly) from the environment: never echo it.
    from_env: bool,
}

/// A subtree: its value and the positions of its nodes, relative to its own root (`""`).
#[derive(Debug, Clone, Default)]
struct Item {
    value: Value,
    spans: Vec<(String, Loc)>,
    /// Came from an included file and was not overridden yet.
    included: bool,
}

/// A file (with its includes) on its way to becoming a policy.
#[derive(Debug, Default)]
struct Layer {
    /// Top-level fields other than `checks` and `waivers`.
    root: Vec<(String, Item)>,
    root_loc: Option<Loc>,
    checks: Vec<Item>,
    waivers: Vec<Item>,
}

impl Layer {
    /// Merges `other` into `self`. `own`: `other` is the including file's own content (its
    /// fields win, its checks override included ones with the same id); otherwise it is one
    /// more included file (first definition wins, checks are appended).
    fn absorb(&mut self, other: Layer, own: bool) {
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

    fn mark_included(&mut self) {
        for c in &mut self.checks {
            c.included = true;
        }
    }
}

/// A check overriding an included one: the fields it sets replace the included ones.
fn override_fields(base: &mut Item, over: Item) {
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
fn subtree(spans: &BTreeMap<String, NodeSpan>, prefix: &str, file: usize) -> Vec<(String, Loc)> {
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
                },
            )
        })
        .collect()
}

/// A problem found before positions are resolved: where (merged pointer) and what.
struct Pending {
    level: Level,
    code: &'static str,
    pointer: String,
    /// Point at the key of the node rather than its value.
    at_key: bool,
    message: String,
    hint: Option<String>,
}

impl Pending {
    fn error(code: &'static str, pointer: String, message: impl Into<String>) -> Self {
        Pending {
            level: Level::Error,
            code,
            pointer,
            at_key: false,
            message: message.into(),
            hint: None,
        }
    }
    fn hint(mut self, hint: impl Into<String>) -> Self {
        let h = hint.into();
        self.hint = (!h.is_empty()).then_some(h);
        self
    }
    fn at_key(mut self) -> Self {
        self.at_key = true;
        self
    }
}

struct Loader<'o> {
    opts: &'o Options,
    diags: Vec<Diagnostic>,
    files: Vec<PathBuf>,
    /// Canonical paths of the files being resolved (include chain), for cycles.
    stack: Vec<PathBuf>,
    /// Canonical paths already loaded: a file included twice is merged once.
    seen: HashSet<PathBuf>,
}

impl<'o> Loader<'o> {
    fn new(opts: &'o Options) -> Self {
        Loader {
            opts,
            diags: Vec::new(),
            files: Vec::new(),
            stack: Vec::new(),
            seen: HashSet::new(),
        }
    }

    fn file_diag(&mut self, code: &str, file: usize, pos: Option<Pos>, message: String) {
        let path = self.files.get(file).cloned().unwrap_or_default();
        self.diags.push(Diagnostic::error(code, path, pos, message));
    }

    /// Reads and resolves one file. `from`: the include entry that names it (file, pointer).
    fn load_path(&mut self, path: &Path, from: Option<(usize, Pos)>) -> Option<Layer> {
        match std::fs::read_to_string(path) {
            Ok(text) => self.load_text(path, text, from),
            Err(e) => {
                let d = match from {
                    Some((file, pos)) => Diagnostic::error(
                        "policy/include-not-found",
                        self.files[file].clone(),
                        Some(pos),
                        format!("cannot read included file `{}`: {e}", path.display()),
                    )
                    .with_hint("include paths are relative to the including file"),
                    None => Diagnostic::error(
                        "policy/unreadable",
                        path,
                        None,
                        format!("cannot read `{}`: {e}", path.display()),
                    ),
                };
                self.diags.push(d);
                None
            }
        }
    }

    fn load_text(
        &mut self,
        path: &Path,
        text: String,
        from: Option<(usize, Pos)>,
    ) -> Option<Layer> {
        let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        if self.stack.contains(&canonical) {
            if let Some((file, pos)) = from {
                let chain: Vec<String> = self
                    .stack
                    .iter()
                    .skip_while(|p| **p != canonical)
                    .chain(std::iter::once(&canonical))
                    .map(|p| {
                        p.file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default()
                    })
                    .collect();
                let d = Diagnostic::error(
                    "policy/include-cycle",
                    self.files[file].clone(),
                    Some(pos),
                    format!("include cycle: {}", chain.join(" → ")),
                )
                .with_hint("remove one of the includes; shared checks belong in a file that includes nothing");
                self.diags.push(d);
            }
            return None;
        }
        if !self.seen.insert(canonical.clone()) {
            return None; // already merged once (diamond includes)
        }
        let file = self.files.len();
        self.files.push(path.to_path_buf());
        self.stack.push(canonical);
        let layer = self.resolve_file(file, path, &text);
        self.stack.pop();
        layer
    }

    fn resolve_file(&mut self, file: usize, path: &Path, text: &str) -> Option<Layer> {
        let is_md = path.extension().and_then(|e| e.to_str()) == Some("md");
        if !is_md {
            let doc = match yaml::parse(text) {
                Ok(d) => d,
                Err(e) => {
                    self.file_diag("policy/yaml-syntax", file, Some(e.pos), e.message);
                    if let Some(d) = self.diags.last_mut() {
                        d.hint = Some(YAML_HINT.into());
                    }
                    return None;
                }
            };
            return self.resolve_doc(file, path, doc);
        }
        // Markdown: every ```preflight block is a fragment; a list is a list of checks, a
        // mapping is merged like an included file. The file is a policy named after itself.
        let mut acc = Layer::default();
        let mut any = false;
        for block in markdown_blocks(text) {
            let doc = match yaml::parse(block.text) {
                Ok(d) => shift(d, &block),
                Err(mut e) => {
                    e.pos = shift_pos(e.pos, &block);
                    self.file_diag("policy/yaml-syntax", file, Some(e.pos), e.message);
                    continue;
                }
            };
            any = true;
            let doc = if doc.value.is_array() {
                wrap_checks(doc)
            } else {
                doc
            };
            if let Some(layer) = self.resolve_doc(file, path, doc) {
                acc.absorb(layer, false);
            }
        }
        if !any && self.diags.is_empty() {
            self.diags.push(
                Diagnostic::error(
                    "policy/no-blocks",
                    path,
                    None,
                    "this Markdown file has no ```preflight block",
                )
                .with_hint("fence policy YAML with ```preflight … ```"),
            );
        }
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let loc = Loc {
            file,
            span: NodeSpan {
                value: Pos {
                    line: 1,
                    col: 1,
                    offset: 0,
                },
                key: None,
            },
            from_env: false,
        };
        let virt = Layer {
            root: vec![
                (
                    "version".into(),
                    Item {
                        value: Value::from(1),
                        spans: vec![(String::new(), loc)],
                        included: false,
                    },
                ),
                (
                    "name".into(),
                    Item {
                        value: Value::String(name),
                        spans: vec![(String::new(), loc)],
                        included: false,
                    },
                ),
            ],
            root_loc: Some(loc),
            ..Layer::default()
        };
        acc.absorb(virt, false);
        Some(acc)
    }

    /// Interpolates, checks the version, resolves includes, and returns the merged layer.
    fn resolve_doc(&mut self, file: usize, path: &Path, mut doc: Document) -> Option<Layer> {
        let from_env = self.interpolate(file, &mut doc);
        if let Some(v) = doc.value.get("version") {
            if v.as_u64() != Some(1) && (v.is_number()) {
                let pos = doc.locate("/version");
                self.file_diag(
                    "policy/unsupported-version",
                    file,
                    Some(pos),
                    format!("policy language version {v} is not supported"),
                );
                if let Some(d) = self.diags.last_mut() {
                    d.hint = Some("this preflight reads `version: 1`".into());
                }
            }
        }
        let loc_of = |p: &str, span: NodeSpan| Loc {
            file,
            span,
            from_env: from_env.contains(p),
        };
        let item_at = |ptr: &str, value: Value| Item {
            value,
            spans: subtree(&doc.spans, ptr, file)
                .into_iter()
                .map(|(rel, l)| {
                    let abs = format!("{ptr}{rel}");
                    (rel, loc_of(&abs, l.span))
                })
                .collect(),
            included: false,
        };

        let mut acc = Layer::default();
        // Includes first.
        if let Some(Value::Array(incs)) = doc.value.get("include") {
            let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
            for (i, inc) in incs.iter().enumerate() {
                let Some(rel) = inc.as_str() else { continue };
                let pos = doc.locate(&format!("/include/{i}"));
                let child = dir.join(rel);
                if let Some(mut layer) = self.load_path(&child, Some((file, pos))) {
                    layer.mark_included();
                    acc.absorb(layer, false);
                }
            }
        }
        // Then this file's own content.
        let mut own = Layer {
            root_loc: doc.spans.get("").map(|s| loc_of("", *s)),
            ..Layer::default()
        };
        match &doc.value {
            Value::Object(map) => {
                for (k, v) in map {
                    let ptr = format!("/{}", yaml::escape_token(k));
                    match (k.as_str(), v) {
                        ("checks", Value::Array(items)) => {
                            for (i, c) in items.iter().enumerate() {
                                own.checks.push(item_at(&format!("/checks/{i}"), c.clone()));
                            }
                        }
                        ("waivers", Value::Array(items)) => {
                            for (i, w) in items.iter().enumerate() {
                                own.waivers
                                    .push(item_at(&format!("/waivers/{i}"), w.clone()));
                            }
                        }
                        _ => own.root.push((k.clone(), item_at(&ptr, v.clone()))),
                    }
                }
            }
            Value::Null => {
                self.file_diag(
                    "policy/empty",
                    file,
                    Some(Pos {
                        line: 1,
                        col: 1,
                        offset: 0,
                    }),
                    "the policy file is empty".into(),
                );
                return None;
            }
            _ => {
                // Not a mapping: let the schema say so, at the right place.
                own.root.push(("".into(), item_at("", doc.value.clone())));
            }
        }
        acc.absorb(own, true);
        Some(acc)
    }

    /// Replaces `${env:NAME}` and `${env:NAME:-default}` in every string scalar; returns the
    /// pointers whose value came from the environment.
    fn interpolate(&mut self, file: usize, doc: &mut Document) -> HashSet<String> {
        let mut touched = HashSet::new();
        let mut problems = Vec::new();
        walk_strings(&mut doc.value, String::new(), &mut |ptr, s| {
            if !s.contains("${") {
                return;
            }
            match interpolate_str(s, &*self.opts.env) {
                Ok((out, used_env)) => {
                    *s = out;
                    if used_env {
                        touched.insert(ptr.to_string());
                    }
                }
                Err(errs) => problems.extend(errs.into_iter().map(|e| (ptr.to_string(), e))),
            }
        });
        for (ptr, e) in problems {
            let pos = doc.locate(&ptr);
            let path = self.files[file].clone();
            let d = match e {
                InterpError::Missing(name) => {
                    let mut d = Diagnostic::error(
                        "policy/missing-env",
                        path,
                        Some(pos),
                        format!("environment variable `{name}` is not set"),
                    )
                    .with_hint(format!(
                        "set {name}, or give a default: `${{env:{name}:-value}}`"
                    ));
                    if self.opts.missing_env_warns {
                        d.level = Level::Warning;
                    }
                    d
                }
                InterpError::Syntax(msg) => {
                    Diagnostic::error("policy/bad-interpolation", path, Some(pos), msg).with_hint(
                        "write `${env:NAME}` or `${env:NAME:-default}`; `$${` is a literal `${`",
                    )
                }
            };
            self.diags.push(d);
        }
        touched
    }

    /// Schema, typing and semantic validation of the merged layers.
    fn finish(mut self, acc: Layer) -> Result<Loaded, Vec<Diagnostic>> {
        let nothing = acc.root.is_empty() && acc.checks.is_empty() && acc.waivers.is_empty();
        if nothing && self.diags.iter().any(Diagnostic::is_error) {
            return Err(sorted(self.diags));
        }
        let (value, locs) = assemble(acc);
        let mut pending = Vec::new();
        validate_schema(&value, &locs, &mut pending);
        let bad_checks: HashSet<usize> = pending
            .iter()
            .filter_map(|p: &Pending| check_index(&p.pointer))
            .collect();
        let bad_rest = pending.iter().any(|p| check_index(&p.pointer).is_none());

        // Typing: the policy without its checks, then each check on its own.
        let raw_checks: Vec<Value> = value
            .get("checks")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut policy: Option<Policy> = None;
        if !bad_rest {
            let mut rest = value.clone();
            if let Some(o) = rest.as_object_mut() {
                o.remove("checks");
            }
            match serde_path_to_error::deserialize::<_, Policy>(rest) {
                Ok(p) => policy = Some(p),
                Err(e) => pending.push(serde_pending(String::new(), &e, &value, &locs)),
            }
        }
        let mut typed: Vec<Option<Check>> = Vec::with_capacity(raw_checks.len());
        for (i, raw) in raw_checks.iter().enumerate() {
            if bad_checks.contains(&i) {
                typed.push(None);
                continue;
            }
            match type_check(raw) {
                Ok(c) => typed.push(Some(c)),
                Err((rel, msg)) => {
                    let prefix = format!("/checks/{i}");
                    pending.push(value_pending(&prefix, rel, msg, &value, &locs));
                    typed.push(None);
                }
            }
        }

        semantic(&value, &raw_checks, &typed, self.opts.today, &mut pending);

        for p in pending {
            let loc = locate(&locs, &p.pointer, p.at_key);
            let (file, pos) = match loc {
                Some((file, pos)) => (self.files.get(file).cloned().unwrap_or_default(), Some(pos)),
                None => (self.files.first().cloned().unwrap_or_default(), None),
            };
            self.diags.push(Diagnostic {
                level: p.level,
                code: p.code.to_string(),
                message: one_line(&p.message),
                file,
                pos,
                hint: p.hint,
            });
        }
        let diags = sorted(self.diags);
        if diags.iter().any(Diagnostic::is_error) {
            return Err(diags);
        }
        let Some(mut policy) = policy else {
            return Err(diags);
        };
        policy.checks = typed.into_iter().flatten().collect();
        Ok(Loaded {
            policy,
            files: self.files,
            warnings: diags,
        })
    }
}

fn sorted(mut diags: Vec<Diagnostic>) -> Vec<Diagnostic> {
    diags.sort_by(|a, b| {
        let ka = (a.pos.map(|p| (p.line, p.col)), &a.code, &a.message);
        let kb = (b.pos.map(|p| (p.line, p.col)), &b.code, &b.message);
        a.file.cmp(&b.file).then(ka.cmp(&kb))
    });
    diags.dedup();
    diags
}

/// The index `i` of a pointer under `/checks/i`.
fn check_index(pointer: &str) -> Option<usize> {
    let rest = pointer.strip_prefix("/checks/")?;
    rest.split('/').next()?.parse().ok()
}

/// Builds the merged JSON value and the pointer → location map.
fn assemble(acc: Layer) -> (Value, HashMap<String, Loc>) {
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
fn locate(locs: &HashMap<String, Loc>, pointer: &str, at_key: bool) -> Option<(usize, Pos)> {
    if let Some(l) = locs.get(pointer) {
        let pos = if at_key {
            l.span.key.unwrap_or(l.span.value)
        } else {
            l.span.value
        };
        return Some((l.file, pos));
    }
    let mut p = pointer;
    while let Some(i) = p.rfind('/') {
        p = &p[..i];
        if let Some(l) = locs.get(p) {
            // A missing field is reported at its parent, at the parent's key when it has one.
            return Some((l.file, l.span.key.unwrap_or(l.span.value)));
        }
    }
    None
}

fn is_sensitive(locs: &HashMap<String, Loc>, pointer: &str) -> bool {
    pointer.ends_with("/admin_token") || locs.get(pointer).is_some_and(|l| l.from_env)
}

/// A value as quoted in a message, never a secret or an environment value.
fn show(value: &Value, pointer: &str, locs: &HashMap<String, Loc>) -> String {
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

fn json_type(v: &Value) -> &'static str {
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

fn describe_type(t: &Value) -> String {
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
fn schema_node(schema_path: &str) -> (Option<&'static Value>, Option<String>) {
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
fn validator() -> Option<&'static jsonschema::Validator> {
    static V: OnceLock<Option<jsonschema::Validator>> = OnceLock::new();
    V.get_or_init(|| schema::compile(schema::cached())).as_ref()
}

fn validate_schema(value: &Value, locs: &HashMap<String, Loc>, out: &mut Vec<Pending>) {
    let Some(v) = validator() else {
        out.push(Pending::error(
            "policy/schema-violation",
            String::new(),
            "internal: the policy schema does not compile",
        ));
        return;
    };
    use jsonschema::error::ValidationErrorKind as K;
    for err in v.iter_errors(value) {
        let ptr = err.instance_path.as_str().to_string();
        let schema_path = err.schema_path.as_str().to_string();
        let (node, def) = schema_node(&schema_path);
        let instance: &Value = &err.instance;
        match &err.kind {
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
                            "policy/unknown-field",
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
                        "policy/missing-field",
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
                            "policy/unknown-kind",
                            ptr.clone(),
                            format!("unknown check kind {}", show(instance, &ptr, locs)),
                        )
                        .hint(format!("{mean}the kinds are: {}", opts.join(", "))),
                    );
                } else {
                    out.push(
                        Pending::error(
                            "policy/invalid-value",
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
                    "policy/wrong-type",
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
                out.push(Pending::error("policy/invalid-value", ptr.clone(), msg).hint(examples));
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
                        "policy/invalid-value",
                        ptr.clone(),
                        format!("{} is not {what}", show(instance, &ptr, locs)),
                    )
                    .hint(hint),
                );
            }
            K::Minimum { limit } | K::ExclusiveMinimum { limit } => out.push(Pending::error(
                "policy/invalid-value",
                ptr.clone(),
                format!(
                    "{} is below the minimum {limit}",
                    show(instance, &ptr, locs)
                ),
            )),
            K::Maximum { limit } | K::ExclusiveMaximum { limit } => out.push(Pending::error(
                "policy/invalid-value",
                ptr.clone(),
                format!(
                    "{} is above the maximum {limit}",
                    show(instance, &ptr, locs)
                ),
            )),
            K::AnyOf | K::OneOfNotValid => {
                let about = node
                    .and_then(|n| n.get("description"))
                    .and_then(Value::as_str)
                    .map(first_line)
                    .unwrap_or_default();
                out.push(
                    Pending::error(
                        "policy/invalid-value",
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
                out.push(Pending::error("policy/schema-violation", ptr.clone(), msg));
            }
        }
    }
}

/// ` in check `id`` when `ptr` is inside a check with an id.
fn whose(value: &Value, ptr: &str) -> String {
    check_index(ptr)
        .and_then(|i| value.pointer(&format!("/checks/{i}/id")))
        .and_then(Value::as_str)
        .map(|id| format!(" in check `{id}`"))
        .unwrap_or_default()
}

/// Messages are one line: a multi-line library error (regex) keeps its first and last lines.
fn one_line(msg: &str) -> String {
    let lines: Vec<&str> = msg
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    match lines.as_slice() {
        [] => String::new(),
        [one] => one.to_string(),
        [first, .., last] => format!("{first} {}", last.trim_start_matches("error: ")),
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

/// The unit type's own parse error for `text` (same message as the typed stage).
fn unit_error(def: Option<&str>, text: &str) -> Option<String> {
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
pub(crate) fn did_you_mean<'a>(given: &str, candidates: &'a [String]) -> Option<&'a str> {
    let limit = (given.chars().count() / 3).max(1);
    candidates
        .iter()
        .map(|c| (levenshtein(given, c), c))
        .filter(|(d, _)| *d <= limit.max(2) && *d > 0)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.as_str())
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A typing error at `prefix` + the serde path.
fn value_pending(
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
    Pending::error("policy/invalid-value", ptr, message).hint(hint)
}

fn serde_pending(
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

fn pointer_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("/{index}")),
            Segment::Map { key } => {
                out.push('/');
                out.push_str(&yaml::escape_token(key));
            }
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    out
}

/// The common fields of a check (everything else belongs to its kind), read from the
/// schema of [`Check`] itself so that a field added there is known here at once.
fn common_fields() -> &'static [String] {
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
fn type_check(raw: &Value) -> Result<Check, (String, String)> {
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

/// Cross-check rules: ids, dependencies, waivers, common fields, and each kind's own rules.
fn semantic(
    value: &Value,
    raw_checks: &[Value],
    typed: &[Option<Check>],
    today: chrono::NaiveDate,
    out: &mut Vec<Pending>,
) {
    let ids: Vec<Option<&str>> = raw_checks
        .iter()
        .map(|c| c.get("id").and_then(Value::as_str))
        .collect();
    let known: Vec<String> = ids.iter().flatten().map(|s| s.to_string()).collect();
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (i, id) in ids.iter().enumerate() {
        let Some(id) = id else { continue };
        if let Some(prev) = first.get(id) {
            out.push(
                Pending::error(
                    "policy/duplicate-id",
                    format!("/checks/{i}/id"),
                    format!("duplicate check id `{id}` (first used by check #{})", prev + 1),
                )
                .hint("ids must be unique; to change an included check, override it from the including file"),
            );
        } else {
            first.insert(id, i);
        }
    }
    // depends_on: known ids, no cycles.
    let mut deps: Vec<Vec<(usize, usize)>> = vec![Vec::new(); raw_checks.len()];
    for (i, c) in raw_checks.iter().enumerate() {
        let Some(list) = c.get("depends_on").and_then(Value::as_array) else {
            continue;
        };
        for (j, d) in list.iter().enumerate() {
            let Some(d) = d.as_str() else { continue };
            match first.get(d) {
                Some(&k) => deps[i].push((k, j)),
                None => {
                    let hint = did_you_mean(d, &known)
                        .map(|s| format!("did you mean `{s}`?"))
                        .unwrap_or_else(|| "depend on the id of a check in this policy".into());
                    out.push(
                        Pending::error(
                            "policy/unknown-dependency",
                            format!("/checks/{i}/depends_on/{j}"),
                            format!("`{d}` is not the id of a check in this policy"),
                        )
                        .hint(hint),
                    );
                }
            }
        }
    }
    dependency_cycles(&deps, &ids, out);
    // Waivers.
    if let Some(ws) = value.get("waivers").and_then(Value::as_array) {
        for (k, w) in ws.iter().enumerate() {
            if let Some(id) = w.get("check").and_then(Value::as_str) {
                if !first.contains_key(id) {
                    let hint = did_you_mean(id, &known)
                        .map(|s| format!("did you mean `{s}`?"))
                        .unwrap_or_else(|| "remove the waiver, or fix the check id".into());
                    out.push(
                        Pending::error(
                            "policy/waiver-unknown-check",
                            format!("/waivers/{k}/check"),
                            format!("waiver for `{id}`, which is not a check in this policy"),
                        )
                        .hint(hint),
                    );
                }
            }
            let expires = w
                .get("expires")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<chrono::NaiveDate>().ok());
            if let Some(date) = expires {
                if date < today {
                    let id = w.get("check").and_then(Value::as_str).unwrap_or("?");
                    out.push(Pending {
                        level: Level::Warning,
                        code: "policy/waiver-expired",
                        pointer: format!("/waivers/{k}/expires"),
                        at_key: false,
                        message: format!(
                            "the waiver for `{id}` expired on {date}: the check blocks again"
                        ),
                        hint: Some("renew it with a current reason and date, or remove it".into()),
                    });
                }
            }
        }
    }
    if let Some(Value::Array(b)) = value.pointer("/gate/block_on") {
        if b.is_empty() {
            out.push(Pending {
                level: Level::Warning,
                code: "policy/gate-never-blocks",
                pointer: "/gate/block_on".into(),
                at_key: false,
                message: "`block_on` is empty: the verdict is GO whatever fails".into(),
                hint: Some("e.g. `block_on: [critical, high]`".into()),
            });
        }
    }
    if raw_checks.is_empty() && value.is_object() && !out.iter().any(|p| p.level == Level::Error) {
        out.push(Pending {
            level: Level::Warning,
            code: "policy/no-checks",
            pointer: String::new(),
            at_key: false,
            message: "this policy has no checks".into(),
            hint: Some("add checks under `checks:`, or include a file that has some".into()),
        });
    }
    // Common fields and each kind's rules.
    for (i, check) in typed.iter().enumerate() {
        let Some(check) = check else { continue };
        let mut p = Problems::default();
        if let Some(n) = check.max_requests {
            p.positive("/max_requests", n, "max_requests");
        }
        if check.timeout.is_some_and(|t| t.0.is_zero()) {
            p.error(
                "/timeout",
                crate::checks::codes::ZERO,
                "timeout must be above zero",
                "leave it out for the kind's default",
            );
        }
        if let Some(r) = &check.retry {
            if r.within.0.is_zero() {
                p.error(
                    "/retry/within",
                    crate::checks::codes::ZERO,
                    "retry.within must be above zero",
                    "",
                );
            }
            if r.every.0.is_zero() {
                p.error(
                    "/retry/every",
                    crate::checks::codes::ZERO,
                    "retry.every must be above zero",
                    "",
                );
            }
        }
        check.spec.validate(&mut p);
        for pr in p.0 {
            out.push(Pending {
                level: if pr.warning {
                    Level::Warning
                } else {
                    Level::Error
                },
                code: pr.code.as_str(),
                pointer: format!("/checks/{i}{}", pr.field),
                at_key: false,
                message: pr.message,
                hint: pr.hint,
            });
        }
    }
}

/// Reports each `depends_on` entry that closes a cycle.
fn dependency_cycles(deps: &[Vec<(usize, usize)>], ids: &[Option<&str>], out: &mut Vec<Pending>) {
    // 0 unvisited, 1 on the stack, 2 done. Iterative DFS: no recursion limit on big policies.
    let mut state = vec![0u8; deps.len()];
    for start in 0..deps.len() {
        if state[start] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        state[start] = 1;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&(to, entry)) = deps[node].get(*next) {
                *next += 1;
                match state[to] {
                    0 => {
                        state[to] = 1;
                        stack.push((to, 0));
                    }
                    1 => {
                        let mut chain: Vec<&str> = stack
                            .iter()
                            .skip_while(|(n, _)| *n != to)
                            .map(|(n, _)| ids[*n].unwrap_or("?"))
                            .collect();
                        chain.push(ids[to].unwrap_or("?"));
                        out.push(
                            Pending::error(
                                "policy/dependency-cycle",
                                format!("/checks/{node}/depends_on/{entry}"),
                                format!("dependency cycle: {}", chain.join(" → ")),
                            )
                            .hint("a check cannot (indirectly) depend on itself; remove one `depends_on` entry"),
                        );
                    }
                    _ => {}
                }
            } else {
                state[node] = 2;
                stack.pop();
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum InterpError {
    Missing(String),
    Syntax(String),
}

/// Calls `f(pointer, string)` on every string scalar.
fn walk_strings(v: &mut Value, ptr: String, f: &mut dyn FnMut(&str, &mut String)) {
    match v {
        Value::String(s) => f(&ptr, s),
        Value::Array(a) => {
            for (i, x) in a.iter_mut().enumerate() {
                walk_strings(x, format!("{ptr}/{i}"), f);
            }
        }
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                walk_strings(x, format!("{ptr}/{}", yaml::escape_token(k)), f);
            }
        }
        _ => {}
    }
}

/// Expands `${env:NAME}`, `${env:NAME:-default}` (default when unset or empty) and `$${`
/// (a literal `${`). Other `${…}` text is left alone. Returns the text and whether the
/// environment was used.
fn interpolate_str(
    s: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, bool), Vec<InterpError>> {
    let mut out = String::with_capacity(s.len());
    let mut errs = Vec::new();
    let mut used = false;
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(body) = tail.strip_prefix("${env:") {
            let Some(end) = body.find('}') else {
                errs.push(InterpError::Syntax(
                    "unterminated `${env:`: missing `}`".into(),
                ));
                return Err(errs);
            };
            let inner = &body[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            let valid = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                errs.push(InterpError::Syntax(format!(
                    "`{name}` is not an environment variable name"
                )));
            } else {
                match (
                    env(name).filter(|v| !(default.is_some() && v.is_empty())),
                    default,
                ) {
                    (Some(v), _) => {
                        used = true;
                        out.push_str(&v);
                    }
                    (None, Some(d)) => out.push_str(d),
                    (None, None) => errs.push(InterpError::Missing(name.to_string())),
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    if errs.is_empty() {
        Ok((out, used))
    } else {
        Err(errs)
    }
}

/// A ```` ```preflight ```` block of a Markdown file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MdBlock<'a> {
    pub text: &'a str,
    /// 1-based line of the block's first content line.
    pub line: usize,
    /// Byte offset of the block's first content line.
    pub offset: usize,
}

/// The fenced blocks whose info string is `preflight` (CommonMark fences of ``` or ~~~;
/// an unclosed fence runs to the end of the file).
pub fn markdown_blocks(text: &str) -> Vec<MdBlock<'_>> {
    let mut blocks = Vec::new();
    let mut offset = 0;
    let mut open: Option<(char, usize, bool, usize, usize)> = None; // fence, len, ours, line, start
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_start_matches(' ');
        let indent = line.len() - trimmed.len();
        let fence_char = trimmed.chars().next().filter(|c| *c == '`' || *c == '~');
        let fence_len = fence_char
            .map(|c| trimmed.chars().take_while(|x| *x == c).count())
            .unwrap_or(0);
        match open {
            None => {
                if indent <= 3 && fence_len >= 3 {
                    let c = fence_char.unwrap_or('`');
                    let info = trimmed[fence_len..].trim();
                    let ours = info.split_whitespace().next() == Some("preflight");
                    open = Some((c, fence_len, ours, n + 2, offset + line.len()));
                }
            }
            Some((c, len, ours, first_line, start)) => {
                let closes = indent <= 3
                    && fence_char == Some(c)
                    && fence_len >= len
                    && trimmed[fence_len..].trim().is_empty();
                if closes {
                    if ours {
                        blocks.push(MdBlock {
                            text: &text[start..offset],
                            line: first_line,
                            offset: start,
                        });
                    }
                    open = None;
                }
            }
        }
        offset += line.len();
    }
    if let Some((_, _, true, first_line, start)) = open {
        blocks.push(MdBlock {
            text: &text[start.min(text.len())..],
            line: first_line,
            offset: start.min(text.len()),
        });
    }
    blocks
}

fn shift_pos(p: Pos, b: &MdBlock<'_>) -> Pos {
    Pos {
        line: p.line + b.line - 1,
        col: p.col,
        offset: p.offset + b.offset,
    }
}

fn shift(mut doc: Document, b: &MdBlock<'_>) -> Document {
    for span in doc.spans.values_mut() {
        span.value = shift_pos(span.value, b);
        span.key = span.key.map(|k| shift_pos(k, b));
    }
    doc
}

/// A block that is a list of checks becomes `{checks: [...]}`.
fn wrap_checks(doc: Document) -> Document {
    let spans = doc
        .spans
        .into_iter()
        .map(|(p, s)| (format!("/checks{p}"), s))
        .collect();
    let mut map = Map::new();
    map.insert("checks".into(), doc.value);
    Document {
        value: Value::Object(map),
        spans,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("s3cret".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn interpolation() {
        let ok = |s: &str| interpolate_str(s, &env).map(|(s, _)| s);
        assert_eq!(ok("a ${env:TOKEN} b").unwrap(), "a s3cret b");
        assert_eq!(ok("${env:NOPE:-x}").unwrap(), "x");
        assert_eq!(ok("${env:EMPTY:-d}").unwrap(), "d");
        assert_eq!(ok("${env:EMPTY}").unwrap(), "");
        assert_eq!(
            ok("$${env:TOKEN} $5 ${other}").unwrap(),
            "${env:TOKEN} $5 ${other}"
        );
        assert_eq!(
            ok("${env:NOPE}").unwrap_err(),
            vec![InterpError::Missing("NOPE".into())]
        );
        assert!(matches!(
            ok("${env:TOKEN").unwrap_err()[0],
            InterpError::Syntax(_)
        ));
        assert!(matches!(
            ok("${env:1X}").unwrap_err()[0],
            InterpError::Syntax(_)
        ));
        assert!(interpolate_str("${env:TOKEN}", &env).unwrap().1);
        assert!(!interpolate_str("${env:NOPE:-d}", &env).unwrap().1);
    }

    #[test]
    fn markdown_blocks_map_lines() {
        let md = "# T\n\n```preflight\n- id: a\n```\n\n```yaml\nx: 1\n```\n~~~~ preflight extra\nb: 2\n~~~~\n";
        let b = markdown_blocks(md);
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].text, "- id: a\n");
        assert_eq!(b[0].line, 4);
        assert_eq!(&md[b[0].offset..b[0].offset + 4], "- id");
        assert_eq!(b[1].text, "b: 2\n");
        assert_eq!(b[1].line, 11);
    }

    #[test]
    fn did_you_mean_is_close_only() {
        let c: Vec<String> = ["burst", "refill", "tolerance"].map(String::from).into();
        assert_eq!(did_you_mean("burts", &c), Some("burst"));
        assert_eq!(did_you_mean("tolerence", &c), Some("tolerance"));
        assert_eq!(did_you_mean("zzzzzz", &c), None);
    }

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

    fn opts() -> Options {
        Options {
            env: Box::new(env),
            today: chrono::NaiveDate::from_ymd_opt(2026, 6, 1).unwrap_or_default(),
            missing_env_warns: false,
        }
    }

    #[test]
    fn secrets_never_echoed() {
        let src =
            "version: 1\nname: x\ntarget:\n  admin_token: ${env:TOKEN}\n  url: 5\nchecks: []\n";
        let diags = load_str(Path::new("p.yaml"), src, &opts()).unwrap_err();
        let all = format!("{diags:?}");
        assert!(!all.contains("s3cret"), "{all}");
        let loaded = load_str(
            Path::new("p.yaml"),
            "version: 1\nname: x\ntarget:\n  admin_token: ${env:TOKEN}\nchecks: [{id: a, kind: http, request: GET /x}]\n",
            &opts(),
        )
        .unwrap();
        let t = loaded.policy.target.unwrap().admin_token.unwrap();
        assert_eq!(t.expose(), "s3cret");
        assert!(!format!("{t:?}").contains("s3cret"));
    }

    #[test]
    fn typing_errors_point_at_the_field() {
        let src = "version: 1\nname: x\nchecks:\n  - id: a\n    kind: rate_limit\n    request: GET /x\n    burst: 5000000000\n    refill: 10/s\n";
        let diags = load_str(Path::new("p.yaml"), src, &opts()).unwrap_err();
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!(diags[0].pos.map(|p| p.line), Some(7), "{diags:?}");
    }

    #[test]
    fn dependency_cycles_are_found() {
        let src = "version: 1\nname: x\nchecks:\n  - {id: a, kind: http, request: /a, depends_on: [b]}\n  - {id: b, kind: http, request: /b, depends_on: [a]}\n";
        let diags = load_str(Path::new("p.yaml"), src, &opts()).unwrap_err();
        assert!(
            diags.iter().any(|d| d.code == "policy/dependency-cycle"),
            "{diags:?}"
        );
    }
}
