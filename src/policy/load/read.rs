//! Stage 1 of loading: reading files (YAML, or the ```` ```preflight ```` blocks of a
//! Markdown file) into a [`Document`], following `include:` relative to the including file
//! (cycles reported, a file included twice merged once), and turning each document into a
//! [`Layer`] of the merge stage.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::Loader;
use super::merge::{Item, Layer, Loc, subtree};
use crate::policy::codes;
use crate::policy::diag::Diagnostic;
use crate::yaml::{self, Document, NodeSpan, Pos};

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

impl Loader<'_> {
    /// Reads and resolves one file. `from`: the include entry that names it (file, pointer).
    pub(super) fn load_path(&mut self, path: &Path, from: Option<(usize, Pos)>) -> Option<Layer> {
        match crate::builtin::read_to_string(path) {
            Ok(text) => self.load_text(path, text, from),
            Err(e) => {
                let d = match from {
                    Some((file, pos)) => Diagnostic::error(
                        codes::INCLUDE_NOT_FOUND,
                        self.files[file].clone(),
                        Some(pos),
                        format!("cannot read included file `{}`: {e}", path.display()),
                    )
                    .with_hint("include paths are relative to the including file"),
                    None => Diagnostic::error(
                        codes::UNREADABLE,
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

    pub(super) fn load_text(
        &mut self,
        path: &Path,
        text: String,
        from: Option<(usize, Pos)>,
    ) -> Option<Layer> {
        let canonical =
            std::fs::canonicalize(path).unwrap_or_else(|_| crate::builtin::normalize(path));
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
                    codes::INCLUDE_CYCLE,
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

    pub(super) fn resolve_file(&mut self, file: usize, path: &Path, text: &str) -> Option<Layer> {
        let is_md = path.extension().and_then(|e| e.to_str()) == Some("md");
        if !is_md {
            let doc = match yaml::parse(text) {
                Ok(d) => d,
                Err(e) => {
                    self.file_diag(codes::YAML_SYNTAX, file, Some(e.pos), e.message);
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
                    self.file_diag(codes::YAML_SYNTAX, file, Some(e.pos), e.message);
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
                    codes::NO_BLOCKS,
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
            unset_env: false,
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
    pub(super) fn resolve_doc(
        &mut self,
        file: usize,
        path: &Path,
        mut doc: Document,
    ) -> Option<Layer> {
        let interp = self.interpolate(file, &mut doc);
        if let Some(v) = doc.value.get("version")
            && v.as_u64() != Some(1)
            && (v.is_number())
        {
            let pos = doc.locate("/version");
            self.file_diag(
                codes::UNSUPPORTED_VERSION,
                file,
                Some(pos),
                format!("policy language version {v} is not supported"),
            );
            if let Some(d) = self.diags.last_mut() {
                d.hint = Some("this preflight reads `version: 1`".into());
            }
        }
        let loc_of = |p: &str, span: NodeSpan| Loc {
            file,
            span,
            from_env: interp.from_env.contains(p),
            unset_env: interp.unset.contains(p),
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
                    codes::EMPTY,
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

pub(super) fn shift_pos(p: Pos, b: &MdBlock<'_>) -> Pos {
    Pos {
        line: p.line + b.line - 1,
        col: p.col,
        offset: p.offset + b.offset,
    }
}

pub(super) fn shift(mut doc: Document, b: &MdBlock<'_>) -> Document {
    for span in doc.spans.values_mut() {
        span.value = shift_pos(span.value, b);
        span.key = span.key.map(|k| shift_pos(k, b));
    }
    doc
}

/// A block that is a list of checks becomes `{checks: [...]}`.
pub(super) fn wrap_checks(doc: Document) -> Document {
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
}
