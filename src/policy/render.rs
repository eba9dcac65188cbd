//! Rendering diagnostics, for people (`file:line:col: error[code]: message`, the source line
//! with a caret under the column, `= hint: …`) and as JSON data. Deterministic: colour only
//! when asked (the CLI asks when stdout is a terminal). It never prints on its own: it writes
//! to the writer it is given.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::policy::diag::{Diagnostic, Level};

/// How to render.
#[derive(Debug, Clone, Copy, Default)]
pub struct RenderOpts {
    /// ANSI colour (terminals only).
    pub color: bool,
}

/// Source text of the files diagnostics point into, read once each.
#[derive(Debug, Default)]
pub struct Sources {
    cache: HashMap<PathBuf, Option<String>>,
}

impl Sources {
    /// Sources read from disk on demand.
    pub fn new() -> Self {
        Sources::default()
    }

    /// Registers text for a path (for in-memory policies).
    pub fn insert(&mut self, path: impl Into<PathBuf>, text: impl Into<String>) {
        self.cache.insert(path.into(), Some(text.into()));
    }

    fn line(&mut self, path: &Path, line: usize) -> Option<String> {
        let text = self
            .cache
            .entry(path.to_path_buf())
            .or_insert_with(|| std::fs::read_to_string(path).ok());
        text.as_deref()?
            .lines()
            .nth(line.checked_sub(1)?)
            .map(str::to_string)
    }
}

const RED: &str = "\x1b[1;31m";
const YELLOW: &str = "\x1b[1;33m";
const BLUE: &str = "\x1b[1;34m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

/// Keys whose values are secrets: shown as `***` in source excerpts.
const SECRET_KEYS: [&str; 4] = ["admin_token", "token", "password", "secret"];

/// Renders diagnostics for people.
pub fn human(
    diags: &[Diagnostic],
    sources: &mut Sources,
    out: &mut dyn Write,
    opts: &RenderOpts,
) -> io::Result<()> {
    let paint = |code: &'static str| if opts.color { code } else { "" };
    for d in diags {
        let (label, colour) = match d.level {
            Level::Error => ("error", paint(RED)),
            Level::Warning => ("warning", paint(YELLOW)),
        };
        let location = match d.pos {
            Some(p) => format!("{}:{}:{}", d.file.display(), p.line, p.col),
            None => d.file.display().to_string(),
        };
        writeln!(
            out,
            "{bold}{location}:{reset} {colour}{label}[{code}]{reset}{bold}: {msg}{reset}",
            bold = paint(BOLD),
            reset = paint(RESET),
            code = d.code,
            msg = d.message,
        )?;
        let blue = paint(BLUE);
        let reset = paint(RESET);
        let mut gutter_width = 1;
        if let Some(p) = d.pos
            && let Some(src) = sources.line(&d.file, p.line)
        {
            let src = redact(&src);
            let num = p.line.to_string();
            gutter_width = num.len();
            let pad = " ".repeat(gutter_width);
            // The caret goes under the column, counted in characters; tabs are kept so the
            // caret lines up in any terminal.
            let before: String = src
                .chars()
                .take(p.col.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let width = token_width(&src, p.col);
            writeln!(out, "{blue}{pad} |{reset}")?;
            writeln!(out, "{blue}{num} |{reset} {src}")?;
            writeln!(
                out,
                "{blue}{pad} |{reset} {before}{colour}{}{reset}",
                "^".repeat(width)
            )?;
        }
        if let Some(h) = &d.hint {
            writeln!(
                out,
                "{}{blue}={reset} hint: {h}",
                " ".repeat(gutter_width + 1)
            )?;
        }
        writeln!(out)?;
    }
    let errors = diags.iter().filter(|d| d.is_error()).count();
    let warnings = diags.len() - errors;
    if !diags.is_empty() {
        writeln!(out, "{errors} error(s), {warnings} warning(s)")?;
    }
    Ok(())
}

/// Width of the token starting at `col` (1-based, in characters): a quoted string, or up to
/// the next space, flow punctuation or `key:`.
fn token_width(line: &str, col: usize) -> usize {
    let rest: Vec<char> = line.chars().skip(col.saturating_sub(1)).collect();
    let Some(&first) = rest.first() else {
        return 1;
    };
    if first == '"' || first == '\'' {
        return rest
            .iter()
            .skip(1)
            .position(|c| *c == first)
            .map(|i| i + 2)
            .unwrap_or(rest.len());
    }
    // A plain scalar outside flow brackets runs to the end of the line (`2 sec`), less a
    // trailing comment.
    let text: String = rest.iter().collect();
    if !text.contains([',', ']', '}', '[', '{']) && !text.contains(": ") && !text.ends_with(':') {
        let body = text.split(" #").next().unwrap_or_default().trim_end();
        return body.chars().count().max(1);
    }
    let mut n = 0;
    for (i, c) in rest.iter().enumerate() {
        let key_colon = *c == ':' && rest.get(i + 1).is_none_or(|n| n.is_whitespace());
        if c.is_whitespace() || matches!(c, ',' | ']' | '}' | '#') || key_colon {
            break;
        }
        n += 1;
    }
    n.max(1)
}

/// Hides the value of secret keys in a source excerpt (unless it is an `${env:…}` reference).
fn redact(line: &str) -> String {
    for key in SECRET_KEYS {
        let Some(i) = line.find(&format!("{key}:")) else {
            continue;
        };
        let value_start = i + key.len() + 1;
        let value = line[value_start..].trim();
        if value.is_empty() || value.starts_with("${env:") {
            continue;
        }
        return format!("{} ***", &line[..value_start]);
    }
    line.to_string()
}

/// One diagnostic as data.
#[derive(Debug, Serialize)]
struct JsonDiag<'a> {
    level: Level,
    code: &'a str,
    message: &'a str,
    file: &'a Path,
    line: Option<usize>,
    col: Option<usize>,
    hint: Option<&'a str>,
}

/// The machine-readable form of `lint` output.
#[derive(Debug, Serialize)]
struct JsonOut<'a> {
    schema_version: u32,
    files: &'a [PathBuf],
    errors: usize,
    warnings: usize,
    diagnostics: Vec<JsonDiag<'a>>,
}

/// Renders diagnostics as one JSON document (`files` are the files linted).
pub fn json(diags: &[Diagnostic], files: &[PathBuf], out: &mut dyn Write) -> io::Result<()> {
    let errors = diags.iter().filter(|d| d.is_error()).count();
    let doc = JsonOut {
        schema_version: 1,
        files,
        errors,
        warnings: diags.len() - errors,
        diagnostics: diags
            .iter()
            .map(|d| JsonDiag {
                level: d.level,
                code: &d.code,
                message: &d.message,
                file: &d.file,
                line: d.pos.map(|p| p.line),
                col: d.pos.map(|p| p.col),
                hint: d.hint.as_deref(),
            })
            .collect(),
    };
    serde_json::to_writer_pretty(&mut *out, &doc)?;
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::Pos;

    #[test]
    fn caret_under_the_column() {
        let mut s = Sources::new();
        s.insert("p.yaml", "a: 1\n    burts: 100\n");
        let d = Diagnostic::error(
            crate::policy::codes::UNKNOWN_FIELD,
            "p.yaml",
            Some(Pos {
                line: 2,
                col: 5,
                offset: 9,
            }),
            "unknown field `burts`",
        )
        .with_hint("did you mean `burst`?");
        let mut out = Vec::new();
        human(&[d], &mut s, &mut out, &RenderOpts::default()).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "p.yaml:2:5: error[policy/unknown-field]: unknown field `burts`\n  |\n2 |     burts: 100\n  |     ^^^^^\n  = hint: did you mean `burst`?\n\n1 error(s), 0 warning(s)\n"
        );
    }

    #[test]
    fn secrets_are_redacted_and_tokens_measured() {
        assert_eq!(redact("  admin_token: hunter2"), "  admin_token: ***");
        assert_eq!(
            redact("  admin_token: ${env:TOKEN}"),
            "  admin_token: ${env:TOKEN}"
        );
        assert_eq!(token_width("  x: \"a b\" c", 6), 5);
        assert_eq!(token_width("  - {id: a, kind: x}", 18), 1);
        assert_eq!(token_width("    wait: 2 sec  # why", 11), 5);
        assert_eq!(token_width("  - id: limit", 5), 2);
    }
}
