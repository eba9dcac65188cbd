//! Policies and service profiles built into the binary, so an installed `preflight` (or the
//! release binary copied alone) runs `preflight check` in an empty directory.
//!
//! A file on disk always wins: a name is looked up here only when no file of that name
//! exists. A built-in file has the path `builtin:<its path in the repository>` (for example
//! `builtin:policies/smoke.yaml`); diagnostics and reports name it so, and includes or
//! `extends:` from a built-in file resolve among the built-ins. Nothing here touches the
//! file system.

use std::path::{Component, Path, PathBuf};

/// The prefix of a built-in file's path.
pub const PREFIX: &str = "builtin:";

/// A policy or a service profile compiled into the binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Builtin {
    /// Its path in the repository, e.g. `policies/smoke.yaml`.
    pub path: &'static str,
    /// The text.
    pub text: &'static str,
}

impl Builtin {
    /// The short name: the path without the top directory and the extension
    /// (`smoke`, `regressions/leak-64b`).
    pub fn name(&self) -> &'static str {
        let rest = self.path.split_once('/').map_or(self.path, |(_, r)| r);
        rest.strip_suffix(".yaml").unwrap_or(rest)
    }

    /// `builtin:<path>`, the path the loaders read it under.
    pub fn virtual_path(&self) -> PathBuf {
        PathBuf::from(format!("{PREFIX}{}", self.path))
    }

    /// The one-line summary: a policy's `description:`, else the first sentence of the
    /// leading comment.
    pub fn summary(&self) -> String {
        if let Some(d) = self
            .text
            .lines()
            .find_map(|l| l.strip_prefix("description:"))
        {
            return shorten(d.trim(), 100);
        }
        let comment: Vec<&str> = self
            .text
            .lines()
            .map_while(|l| l.strip_prefix('#'))
            .map(str::trim)
            .filter(|l| !l.starts_with("yaml-language-server"))
            .collect();
        let text = comment.join(" ");
        // The regression profiles all open with the same sentence; the next one says what
        // is broken.
        let sentence = text
            .split(". ")
            .find(|s| !s.starts_with("Regression profile:"))
            .unwrap_or("");
        shorten(sentence.trim_end_matches('.'), 100)
    }
}

/// At most `max` characters, cut at a word with `…`.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let cut: String = text.chars().take(max).collect();
    let at = cut.rfind(' ').unwrap_or(cut.len());
    format!("{}…", cut[..at].trim_end_matches([',', ':', ';']))
}

macro_rules! builtins {
    ($($path:literal),* $(,)?) => {
        &[$(Builtin { path: $path, text: include_str!(concat!("../", $path)) }),*]
    };
}

/// Built-in policies (`preflight policies`), the default first.
pub const POLICIES: &[Builtin] = builtins![
    "policies/production-hardening.yaml",
    "policies/smoke.yaml",
    "policies/canary.yaml",
    "policies/examples/features.yaml",
    "policies/examples/remote-target.yaml",
    "policies/examples/watch.yaml",
];

/// Built-in service profiles for the spawned core service, the default first.
pub const PROFILES: &[Builtin] = builtins![
    "config/core.yaml",
    "config/before-hardening.yaml",
    "config/candidate-errors.yaml",
    "config/candidate-slow.yaml",
    "config/candidate-tail.yaml",
    "config/regressions/breaker-unreachable.yaml",
    "config/regressions/detectors-rebuilt.yaml",
    "config/regressions/leak-2kib.yaml",
    "config/regressions/leak-64b.yaml",
    "config/regressions/no-query-timeout.yaml",
    "config/regressions/no-rate-limit.yaml",
    "config/regressions/no-retention.yaml",
    "config/regressions/no-shedding.yaml",
    "config/regressions/no-snapshots.yaml",
    "config/regressions/no-store-retention.yaml",
    "config/regressions/store-full-ignored.yaml",
];

/// Whether `path` names a built-in file (`builtin:…`).
pub fn is_builtin(path: &Path) -> bool {
    path.to_str().is_some_and(|s| s.starts_with(PREFIX))
}

/// The built-in file at `builtin:<path>` (`..` and `.` resolved lexically), if any.
pub fn read(path: &Path) -> Option<&'static Builtin> {
    let rest = path.to_str()?.strip_prefix(PREFIX)?;
    let want = normalize(Path::new(rest));
    POLICIES
        .iter()
        .chain(PROFILES)
        .find(|b| Path::new(b.path) == want)
}

/// The built-in policy that `arg` names when no file `arg` exists: its repository path
/// (`policies/smoke.yaml`), its name (`smoke`, `examples/features`) or `builtin:` path.
pub fn policy(arg: &Path) -> Option<&'static Builtin> {
    find(POLICIES, arg)
}

/// The built-in service profile that `arg` names (`core`, `before-hardening`,
/// `regressions/leak-64b`, `config/core.yaml`, …).
pub fn profile(arg: &Path) -> Option<&'static Builtin> {
    find(PROFILES, arg)
}

fn find(set: &'static [Builtin], arg: &Path) -> Option<&'static Builtin> {
    if let Some(b) = read(arg) {
        return set.iter().find(|x| *x == b);
    }
    let s = arg.to_str()?;
    let s = s.strip_prefix("./").unwrap_or(s);
    let bare = s.strip_suffix(".yaml").unwrap_or(s);
    set.iter().find(|b| b.path == s || b.name() == bare)
}

/// Where a file named by a policy is: a disk path as given, or the built-in file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    Disk(PathBuf),
    Builtin(&'static Builtin),
}

impl Resolved {
    /// The path the loaders take: the disk path, or `builtin:…`.
    pub fn path(&self) -> PathBuf {
        match self {
            Resolved::Disk(p) => p.clone(),
            Resolved::Builtin(b) => b.virtual_path(),
        }
    }
}

/// A file on disk wins; otherwise the built-in of `lookup`; otherwise the path as given (its
/// reader reports it missing).
pub fn resolve(arg: &Path, lookup: fn(&Path) -> Option<&'static Builtin>) -> Resolved {
    if !is_builtin(arg) && arg.exists() {
        return Resolved::Disk(arg.to_path_buf());
    }
    match lookup(arg) {
        Some(b) => Resolved::Builtin(b),
        None => Resolved::Disk(arg.to_path_buf()),
    }
}

/// Reads a file for a loader: `builtin:…` from the binary, anything else from disk.
pub fn read_to_string(path: &Path) -> std::io::Result<String> {
    if is_builtin(path) {
        return read(path).map(|b| b.text.to_string()).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such built-in file (`preflight policies` lists them)",
            )
        });
    }
    std::fs::read_to_string(path)
}

/// `a/./b/../c` → `a/c`, without touching the file system (a leading `..` is kept).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out: Vec<Component<'_>> = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => out.push(c),
            },
            other => out.push(other),
        }
    }
    out.iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_paths_and_virtual_paths_find_the_same_file() {
        let smoke = policy(Path::new("smoke")).unwrap();
        assert_eq!(smoke.path, "policies/smoke.yaml");
        for arg in [
            "policies/smoke.yaml",
            "./policies/smoke.yaml",
            "smoke.yaml",
            "builtin:policies/smoke.yaml",
        ] {
            assert_eq!(policy(Path::new(arg)), Some(smoke), "{arg}");
        }
        let leak = profile(Path::new("regressions/leak-64b")).unwrap();
        assert_eq!(leak.path, "config/regressions/leak-64b.yaml");
        assert_eq!(profile(Path::new("core")).unwrap().path, "config/core.yaml");
        // a policy name is not a profile and the other way round
        assert_eq!(profile(Path::new("smoke")), None);
        assert_eq!(policy(Path::new("core")), None);
        assert_eq!(policy(Path::new("nope")), None);
    }

    #[test]
    fn extends_and_includes_resolve_among_builtins() {
        // config/regressions/leak-64b.yaml says `extends: ../core.yaml`
        let p = Path::new("builtin:config/regressions").join("../core.yaml");
        assert_eq!(read(&p).unwrap().path, "config/core.yaml");
        let text = read_to_string(Path::new("builtin:config/before-hardening.yaml")).unwrap();
        assert!(text.contains("extends: core.yaml"));
        let missing = read_to_string(Path::new("builtin:config/nope.yaml")).unwrap_err();
        assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn normalize_is_lexical() {
        assert_eq!(
            normalize(Path::new("policies/../runbooks/a.md")),
            Path::new("runbooks/a.md")
        );
        assert_eq!(normalize(Path::new("./a/./b")), Path::new("a/b"));
        assert_eq!(normalize(Path::new("../x")), Path::new("../x"));
        assert_eq!(normalize(Path::new("/../x")), Path::new("/x"));
    }

    #[test]
    fn every_builtin_has_a_summary_and_a_unique_name() {
        let mut names = std::collections::HashSet::new();
        for b in POLICIES.iter().chain(PROFILES) {
            assert!(!b.summary().is_empty(), "{}", b.path);
            assert!(names.insert(b.name()), "duplicate name {}", b.name());
        }
    }

    #[test]
    fn disk_wins_over_builtin() {
        // Unit tests run in the crate root, where policies/smoke.yaml is a file.
        let on_disk = Path::new("policies/smoke.yaml");
        assert_eq!(
            resolve(on_disk, policy),
            Resolved::Disk(on_disk.to_path_buf())
        );
        let by_name = resolve(Path::new("smoke"), policy);
        assert_eq!(by_name.path(), Path::new("builtin:policies/smoke.yaml"));
        // a path elsewhere is never taken for a built-in name
        let elsewhere = Path::new("/nonexistent/smoke.yaml");
        assert_eq!(
            resolve(elsewhere, policy),
            Resolved::Disk(elsewhere.to_path_buf())
        );
    }
}
