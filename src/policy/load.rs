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

mod interpolate;
mod merge;
mod read;
mod schema_check;
mod semantic;
mod typing;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::checks::Code;
use crate::policy::codes;
use crate::policy::diag::{Diagnostic, Level};
use crate::policy::model::{Check, Origin, Policy};
use crate::secret::Secret;
use crate::yaml::Pos;

use merge::{Layer, assemble, locate};
pub use read::{MdBlock, find_policy_files, markdown_blocks};
use schema_check::validate_schema;
use typing::{serde_pending, type_check, value_pending};

/// A loaded, valid policy (several files are merged in order).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub policy: Policy,
    /// Every file read, in order (includes too).
    pub files: Vec<PathBuf>,
    /// Warnings (a loaded policy has no errors).
    pub warnings: Vec<Diagnostic>,
    /// Every value interpolated from the environment, and the policy's admin token: what a
    /// report must never show (the engine redacts them, see [`crate::secret::Redactor`]).
    pub secrets: Vec<Secret>,
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
            codes::NO_FILES,
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

/// A problem found before positions are resolved: where (merged pointer) and what.
struct Pending {
    level: Level,
    code: Code,
    pointer: String,
    /// Point at the key of the node rather than its value.
    at_key: bool,
    message: String,
    hint: Option<String>,
}

impl Pending {
    fn error(code: Code, pointer: String, message: impl Into<String>) -> Self {
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
    /// Every value taken from the environment.
    secrets: Vec<Secret>,
}

impl<'o> Loader<'o> {
    fn new(opts: &'o Options) -> Self {
        Loader {
            opts,
            diags: Vec::new(),
            files: Vec::new(),
            stack: Vec::new(),
            seen: HashSet::new(),
            secrets: Vec::new(),
        }
    }

    fn file_diag(&mut self, code: Code, file: usize, pos: Option<Pos>, message: String) {
        let path = self.files.get(file).cloned().unwrap_or_default();
        self.diags.push(Diagnostic::error(code, path, pos, message));
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
                Ok(mut c) => {
                    self.place(&mut c, i, &locs);
                    typed.push(Some(c));
                }
                Err((rel, msg)) => {
                    let prefix = format!("/checks/{i}");
                    pending.push(value_pending(&prefix, rel, msg, &value, &locs));
                    typed.push(None);
                }
            }
        }

        semantic::semantic(&value, &raw_checks, &typed, self.opts.today, &mut pending);
        // A string naming an unset variable has one diagnostic, `policy/missing-env`: its
        // text is not the value it would have had, so nothing else judges it.
        pending.retain(|p| !locs.get(&p.pointer).is_some_and(|l| l.unset_env));

        for p in pending {
            let loc = locate(&locs, &p.pointer, p.at_key);
            let (file, pos) = match loc {
                Some((file, pos)) => (self.files.get(file).cloned().unwrap_or_default(), Some(pos)),
                None => (self.files.first().cloned().unwrap_or_default(), None),
            };
            self.diags.push(Diagnostic {
                level: p.level,
                code: p.code.as_str().to_string(),
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
        let mut secrets = self.secrets;
        if let Some(t) = policy.target.as_ref().and_then(|t| t.admin_token.clone()) {
            secrets.push(t);
        }
        Ok(Loaded {
            policy,
            files: self.files,
            warnings: diags,
            secrets,
        })
    }
}

impl Loader<'_> {
    /// Records where check `i` is declared and resolves its relative file paths against the
    /// directory of the file that declares them.
    fn place(
        &self,
        check: &mut Check,
        i: usize,
        locs: &std::collections::HashMap<String, merge::Loc>,
    ) {
        let file_of = |pointer: &str, at_key: bool| {
            locate(locs, pointer, at_key).and_then(|(f, pos)| Some((self.files.get(f)?, pos)))
        };
        if let Some((file, pos)) = file_of(&format!("/checks/{i}/id"), true) {
            check.origin = Some(Origin {
                file: file.clone(),
                line: pos.line,
                col: pos.col,
            });
        }
        if let Some((field, path, builtin_flag)) = check.spec.local_file_mut()
            && path.is_relative()
            && let Some((file, _)) = file_of(&format!("/checks/{i}/{field}"), false)
        {
            let (declaring, from_builtin) = match file
                .to_str()
                .and_then(|f| f.strip_prefix(crate::builtin::PREFIX))
            {
                Some(rest) => (Path::new(rest), true),
                None => (file.as_path(), false),
            };
            let dir = declaring.parent().unwrap_or(Path::new(""));
            *path = crate::builtin::normalize(&dir.join(&*path));
            *builtin_flag = from_builtin;
        }
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
            diags
                .iter()
                .any(|d| d.code == codes::DEPENDENCY_CYCLE.as_str()),
            "{diags:?}"
        );
    }

    /// Issue 15: `timeout` is the check's whole deadline, so a longer `retry.within` is
    /// retrying for nothing; lint says so.
    #[test]
    fn retry_beyond_timeout_warns() {
        let src = |retry: &str| {
            format!(
                "version: 1\nname: x\nchecks:\n  - id: a\n    kind: http\n    request: GET /x\n    timeout: 300ms\n    retry: {{within: {retry}}}\n"
            )
        };
        let loaded = load_str(Path::new("p.yaml"), &src("5s"), &opts()).unwrap();
        let w: Vec<_> = loaded
            .warnings
            .iter()
            .filter(|d| d.code == codes::RETRY_BEYOND_TIMEOUT.as_str())
            .collect();
        assert_eq!(w.len(), 1, "{:?}", loaded.warnings);
        assert_eq!(w[0].pos.map(|p| p.line), Some(8), "{w:?}");
        assert!(w[0].message.contains("300ms"), "{w:?}");
        // exactly at the timeout, and below it: nothing to say
        for ok in ["300ms", "200ms"] {
            let loaded = load_str(Path::new("p.yaml"), &src(ok), &opts()).unwrap();
            assert!(loaded.warnings.is_empty(), "{ok}: {:?}", loaded.warnings);
        }
    }

    /// Issue 15: an unset `${env:X}` in a request line is one diagnostic, `policy/missing-env`,
    /// at the same place for `lint` (a warning) and for a run (an error); its unexpanded text
    /// is not judged as a request line.
    #[test]
    fn unset_env_is_one_diagnostic_for_lint_and_check() {
        let src = "version: 1\nname: x\nchecks:\n  - id: a\n    kind: http\n    request: GET /x?t=${env:NOPE}\n";
        let run = load_str(Path::new("p.yaml"), src, &opts()).unwrap_err();
        assert_eq!(run.len(), 1, "{run:?}");
        assert!(run[0].is_error());
        let lint_opts = Options {
            missing_env_warns: true,
            ..opts()
        };
        let lint = load_str(Path::new("p.yaml"), src, &lint_opts).unwrap();
        assert_eq!(lint.warnings.len(), 1, "{:?}", lint.warnings);
        for d in [&run[0], &lint.warnings[0]] {
            assert_eq!(d.code, codes::MISSING_ENV.as_str());
            assert_eq!(d.pos.map(|p| p.line), Some(6));
        }
        // Other problems of the same check are still reported.
        let both = src.replace("kind: http", "kind: http\n    brust: 3");
        let d = load_str(Path::new("p.yaml"), &both, &opts()).unwrap_err();
        assert!(
            d.iter().any(|d| d.code == codes::UNKNOWN_FIELD.as_str()),
            "{d:?}"
        );
    }
}
