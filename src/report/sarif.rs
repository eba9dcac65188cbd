//! SARIF 2.1.0 for `preflight lint --format sarif` (GitHub code scanning, editors): one rule
//! per diagnostic code, with its description and fix from `docs/diagnostics.md` (compiled
//! in), and one result per diagnostic at its `file:line:col`.

use std::io::{self, Write};
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::policy::diag::{Diagnostic, Level};

/// `docs/diagnostics.md`, the rules' text.
const CATALOGUE: &str = include_str!("../../docs/diagnostics.md");

/// One documented diagnostic code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub code: String,
    /// `error` or `warning`: the level the code is reported at by default.
    pub level: &'static str,
    /// What the code means.
    pub description: String,
    /// What to do about it.
    pub fix: String,
}

/// Every `### \`code\`` section of the catalogue, in its order.
pub fn rules() -> Vec<Rule> {
    parse(CATALOGUE)
}

/// Reads `### \`code\`` sections: the first paragraph is `*level.* description`, a
/// paragraph starting `**Fix:**` is the fix.
fn parse(text: &str) -> Vec<Rule> {
    let mut rules = Vec::new();
    for section in text.split("\n### ").skip(1) {
        let (head, body) = section.split_once('\n').unwrap_or((section, ""));
        let Some(code) = head
            .trim()
            .strip_prefix('`')
            .and_then(|h| h.strip_suffix('`'))
        else {
            continue;
        };
        let body = body.split("\n## ").next().unwrap_or("");
        let paragraphs: Vec<String> = body
            .split("\n\n")
            .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|p| !p.is_empty())
            .collect();
        let (level, description) = paragraphs
            .iter()
            .find_map(|p| {
                let rest = p.strip_prefix('*')?;
                let (marker, text) = rest.split_once(".* ")?;
                let level = if marker.starts_with("warning") {
                    "warning"
                } else {
                    "error"
                };
                Some((level, text.to_string()))
            })
            .unwrap_or(("error", String::new()));
        let fix = paragraphs
            .iter()
            .find_map(|p| p.strip_prefix("**Fix:** "))
            .unwrap_or("")
            .to_string();
        rules.push(Rule {
            code: code.to_string(),
            level,
            description,
            fix,
        });
    }
    rules
}

/// The whole SARIF log for one lint run.
pub fn log(diags: &[Diagnostic], files: &[PathBuf]) -> Value {
    let rules = rules();
    let rule_index = |code: &str| rules.iter().position(|r| r.code == code);
    let results: Vec<Value> = diags
        .iter()
        .map(|d| {
            let mut region = serde_json::Map::new();
            if let Some(p) = d.pos {
                region.insert("startLine".into(), json!(p.line));
                region.insert("startColumn".into(), json!(p.col));
            }
            let mut location = json!({
                "physicalLocation": {
                    "artifactLocation": { "uri": uri(&d.file) },
                }
            });
            if !region.is_empty() {
                location["physicalLocation"]["region"] = Value::Object(region);
            }
            let text = match &d.hint {
                Some(h) => format!("{} (hint: {h})", d.message),
                None => d.message.clone(),
            };
            let mut result = json!({
                "ruleId": d.code,
                "level": match d.level { Level::Error => "error", Level::Warning => "warning" },
                "message": { "text": text },
                "locations": [location],
            });
            if let Some(i) = rule_index(&d.code) {
                result["ruleIndex"] = json!(i);
            }
            result
        })
        .collect();
    let rules: Vec<Value> = rules
        .iter()
        .map(|r| {
            json!({
                "id": r.code,
                "shortDescription": { "text": first_sentence(&r.description) },
                "fullDescription": { "text": r.description },
                "help": { "text": format!("Fix: {} (docs/diagnostics.md, `{}`)", r.fix, r.code) },
                "defaultConfiguration": { "level": r.level },
            })
        })
        .collect();
    let artifacts: Vec<Value> = files
        .iter()
        .map(|f| json!({ "location": { "uri": uri(f) } }))
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {
                "driver": {
                    "name": "preflight",
                    "version": env!("CARGO_PKG_VERSION"),
                    "rules": rules,
                }
            },
            "artifacts": artifacts,
            "results": results,
        }]
    })
}

/// Writes [`log`] as pretty JSON.
pub fn write(diags: &[Diagnostic], files: &[PathBuf], out: &mut dyn Write) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, &log(diags, files))?;
    writeln!(out)
}

/// A relative path as a relative URI reference (`/` separators, spaces and `%` escaped).
fn uri(path: &std::path::Path) -> String {
    let s = path.display().to_string();
    let s = s.strip_prefix(crate::builtin::PREFIX).unwrap_or(&s);
    s.replace('\\', "/").replace('%', "%25").replace(' ', "%20")
}

fn first_sentence(text: &str) -> &str {
    text.find(". ").map_or(text, |i| &text[..=i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalogue_parses_into_rules_with_text() {
        let rules = rules();
        assert!(rules.len() > 50, "{}", rules.len());
        let r = rules.iter().find(|r| r.code == "file/bad-mode").unwrap();
        assert_eq!(r.level, "error");
        assert_eq!(r.description, "`mode` is not an octal permission string.");
        assert_eq!(r.fix, "Write e.g. `\"0644\"` (quoted).");
        let env = rules
            .iter()
            .find(|r| r.code == "policy/missing-env")
            .unwrap();
        assert_eq!(env.level, "error");
        for r in &rules {
            assert!(!r.description.is_empty(), "{} has no description", r.code);
            assert!(!r.fix.is_empty(), "{} has no fix", r.code);
        }
    }
}
