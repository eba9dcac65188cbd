//! YAML with positions: parses a YAML document into a `serde_json::Value` and, in the same
//! walk, a map from each node's JSON Pointer to where it stands in the source.
//!
//! Policies and service configs both go through here, so that every later stage (JSON
//! Schema validation, typed deserialization, semantic checks) can point at `file:line:col`.
//! This module only parses; it knows nothing of policies or configs.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A position in the source: 1-based line and column, and the byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
    pub offset: usize,
}

/// Where a node stands: its value and, for a mapping entry, its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeSpan {
    pub value: Pos,
    pub key: Option<Pos>,
}

/// A parsed document: the value and the position of every node by JSON Pointer
/// (`""` is the root, `/checks/0/burst` a nested field).
#[derive(Debug, Clone, Default)]
pub struct Document {
    pub value: Value,
    pub spans: BTreeMap<String, NodeSpan>,
}

impl Document {
    /// The position of `pointer`, or of its nearest ancestor that exists (a missing field is
    /// reported where its parent object is).
    pub fn locate(&self, pointer: &str) -> Pos {
        let mut p = pointer;
        loop {
            if let Some(span) = self.spans.get(p) {
                return span.value;
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => {
                    return Pos {
                        line: 1,
                        col: 1,
                        offset: 0,
                    };
                }
            }
        }
    }

    /// The position of the key of `pointer` when it is a mapping entry, else of its value.
    pub fn locate_key(&self, pointer: &str) -> Pos {
        match self.spans.get(pointer) {
            Some(NodeSpan { key: Some(k), .. }) => *k,
            _ => self.locate(pointer),
        }
    }
}

/// A YAML syntax error or a construct preflight does not accept (duplicate keys,
/// non-string keys, several documents).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct YamlError {
    pub pos: Pos,
    pub message: String,
}

/// Where a node of a merged document (several files layered) was written: the index of its
/// file (in a list the caller keeps) and its span there.
pub type Origin = (usize, NodeSpan);

/// The position of `pointer` in a merged document: its own (its key when `at_key` and it has
/// one), or else that of its nearest existing ancestor, at the ancestor's key when it has
/// one (a missing field is reported where its parent is named). `origin` reads the file and
/// span of an entry. Policies (with includes) and service configs (with `extends:`) share it.
pub fn locate_merged<T>(
    map: &HashMap<String, T>,
    pointer: &str,
    at_key: bool,
    origin: impl Fn(&T) -> Origin,
) -> Option<(usize, Pos)> {
    if let Some((file, span)) = map.get(pointer).map(&origin) {
        let pos = if at_key {
            span.key.unwrap_or(span.value)
        } else {
            span.value
        };
        return Some((file, pos));
    }
    let mut p = pointer;
    while let Some(i) = p.rfind('/') {
        p = &p[..i];
        if let Some((file, span)) = map.get(p).map(&origin) {
            return Some((file, span.key.unwrap_or(span.value)));
        }
    }
    None
}

/// Lays the positions of `doc` (file index `file`) over `map` as a deep merge lays its value
/// over the one below: a mapping is merged key by key (it keeps the nodes below that it does
/// not set), anything else replaces the node and all it held.
pub fn overlay(map: &mut HashMap<String, Origin>, doc: &Document, file: usize) {
    for (ptr, span) in &doc.spans {
        let replaces = !doc.value.pointer(ptr).is_some_and(Value::is_object);
        if replaces && !ptr.is_empty() {
            let prefix = format!("{ptr}/");
            map.retain(|p, _| !p.starts_with(&prefix));
        }
        map.insert(ptr.clone(), (file, *span));
    }
}

/// The JSON Pointer of the path where serde stopped (`serde_path_to_error`).
pub fn pointer_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("/{index}")),
            Segment::Map { key } => {
                out.push('/');
                out.push_str(&escape_token(key));
            }
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    out
}

/// Escapes one JSON Pointer reference token (RFC 6901).
pub fn escape_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Parses one YAML document.
pub fn parse(src: &str) -> Result<Document, YamlError> {
    let mut builder = Builder::new(src);
    let mut parser = Parser::new_from_str(src);
    if let Err(e) = parser.load(&mut builder, true) {
        let m = e.marker();
        return Err(YamlError {
            pos: builder.pos(m),
            message: e.info().to_string(),
        });
    }
    if let Some(err) = builder.error {
        return Err(err);
    }
    if builder.documents > 1 {
        return Err(YamlError {
            pos: builder.second_doc.unwrap_or_default(),
            message: "expected one YAML document, found several (`---`)".into(),
        });
    }
    let value = builder.root.take().unwrap_or(Value::Null);
    Ok(Document {
        value,
        spans: builder.spans,
    })
}

enum Frame {
    Seq {
        items: Vec<Value>,
        pointer: String,
        anchor: usize,
    },
    Map {
        map: Map<String, Value>,
        pointer: String,
        anchor: usize,
        pending_key: Option<(String, Pos)>,
    },
}

struct Builder<'a> {
    src: &'a str,
    /// Whether `src` is ASCII (char index = byte offset), computed once.
    ascii: bool,
    /// Byte offset of each char index, built lazily: yaml-rust2 markers count chars.
    char_offsets: Option<Vec<usize>>,
    stack: Vec<Frame>,
    root: Option<Value>,
    spans: BTreeMap<String, NodeSpan>,
    anchors: HashMap<usize, Value>,
    error: Option<YamlError>,
    documents: usize,
    second_doc: Option<Pos>,
}

impl<'a> Builder<'a> {
    fn new(src: &'a str) -> Self {
        Builder {
            src,
            ascii: src.is_ascii(),
            char_offsets: None,
            stack: Vec::new(),
            root: None,
            spans: BTreeMap::new(),
            anchors: HashMap::new(),
            error: None,
            documents: 0,
            second_doc: None,
        }
    }

    fn pos(&mut self, m: &Marker) -> Pos {
        let offset = if self.ascii {
            m.index()
        } else {
            let offsets = self.char_offsets.get_or_insert_with(|| {
                self.src
                    .char_indices()
                    .map(|(i, _)| i)
                    .chain(std::iter::once(self.src.len()))
                    .collect()
            });
            offsets.get(m.index()).copied().unwrap_or(self.src.len())
        };
        // yaml-rust2 lines are 1-based and columns 0-based.
        Pos {
            line: m.line(),
            col: m.col() + 1,
            offset,
        }
    }

    fn fail(&mut self, pos: Pos, message: impl Into<String>) {
        if self.error.is_none() {
            self.error = Some(YamlError {
                pos,
                message: message.into(),
            });
        }
    }

    /// The pointer the next value will have, and the key position if it is a map entry.
    fn next_pointer(&self) -> (String, Option<Pos>) {
        match self.stack.last() {
            None => (String::new(), None),
            Some(Frame::Seq { items, pointer, .. }) => (format!("{pointer}/{}", items.len()), None),
            Some(Frame::Map {
                pointer,
                pending_key: Some((k, kpos)),
                ..
            }) => (format!("{pointer}/{}", escape_token(k)), Some(*kpos)),
            Some(Frame::Map { pointer, .. }) => (pointer.clone(), None),
        }
    }

    /// Whether the next scalar is a mapping key.
    fn expecting_key(&self) -> bool {
        matches!(
            self.stack.last(),
            Some(Frame::Map {
                pending_key: None,
                ..
            })
        )
    }

    fn push_value(&mut self, value: Value, pos: Pos) {
        match self.stack.last_mut() {
            None => self.root = Some(value),
            Some(Frame::Seq { items, .. }) => items.push(value),
            Some(Frame::Map {
                map, pending_key, ..
            }) => {
                if let Some((k, _)) = pending_key.take() {
                    map.insert(k, value);
                }
            }
        }
        let _ = pos;
    }
}

fn scalar_value(s: &str, style: TScalarStyle) -> Value {
    if style != TScalarStyle::Plain {
        return Value::String(s.to_string());
    }
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(i) = s.parse::<i64>() {
        return Value::Number(i.into());
    }
    if let Ok(u) = s.parse::<u64>() {
        return Value::Number(u.into());
    }
    let looks_numeric = s
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
        && s.chars().any(|c| c.is_ascii_digit());
    if looks_numeric && let Some(n) = s.parse::<f64>().ok().and_then(Number::from_f64) {
        return Value::Number(n);
    }
    Value::String(s.to_string())
}

impl MarkedEventReceiver for Builder<'_> {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let pos = self.pos(&mark);
        match ev {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents == 2 {
                    self.second_doc = Some(pos);
                }
            }
            Event::Scalar(s, style, anchor, _tag) => {
                if self.expecting_key() {
                    let Some(Frame::Map {
                        map, pending_key, ..
                    }) = self.stack.last_mut()
                    else {
                        return;
                    };
                    if map.contains_key(&s) {
                        let msg = format!("duplicate key `{s}`");
                        self.fail(pos, msg);
                        return;
                    }
                    let first_key = map.is_empty();
                    *pending_key = Some((s, pos));
                    // A block mapping's start mark is at its first `:`; the mapping starts at
                    // its first key, which is where a person looks.
                    if first_key {
                        let (pointer, _) = self.next_pointer();
                        let parent = pointer.rsplit_once('/').map_or("", |(p, _)| p);
                        if let Some(span) = self.spans.get_mut(parent)
                            && pos.offset < span.value.offset
                        {
                            span.value = pos;
                        }
                    }
                    return;
                }
                let value = scalar_value(&s, style);
                let (pointer, key) = self.next_pointer();
                self.spans.insert(pointer, NodeSpan { value: pos, key });
                if anchor > 0 {
                    self.anchors.insert(anchor, value.clone());
                }
                self.push_value(value, pos);
            }
            Event::Alias(id) => {
                if self.expecting_key() {
                    self.fail(pos, "aliases are not supported as mapping keys");
                    return;
                }
                let Some(value) = self.anchors.get(&id).cloned() else {
                    self.fail(pos, "alias refers to an unknown anchor");
                    return;
                };
                let (pointer, key) = self.next_pointer();
                self.spans.insert(pointer, NodeSpan { value: pos, key });
                self.push_value(value, pos);
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if self.expecting_key() {
                    self.fail(pos, "mapping keys must be plain strings");
                    return;
                }
                let (pointer, key) = self.next_pointer();
                self.spans
                    .insert(pointer.clone(), NodeSpan { value: pos, key });
                let frame = if matches!(ev, Event::SequenceStart(..)) {
                    Frame::Seq {
                        items: Vec::new(),
                        pointer,
                        anchor,
                    }
                } else {
                    Frame::Map {
                        map: Map::new(),
                        pointer,
                        anchor,
                        pending_key: None,
                    }
                };
                self.stack.push(frame);
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = self.stack.pop() else {
                    return;
                };
                let (value, anchor) = match frame {
                    Frame::Seq { items, anchor, .. } => (Value::Array(items), anchor),
                    Frame::Map { map, anchor, .. } => (Value::Object(map), anchor),
                };
                if anchor > 0 {
                    self.anchors.insert(anchor, value.clone());
                }
                self.push_value(value, pos);
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_and_positions() {
        let src = "a: 1\nb:\n  - x\n  - \"2\"\n  - {c: true}\nd: 1.5\ne: ~\n";
        let doc = parse(src).unwrap();
        assert_eq!(
            doc.value,
            json!({"a": 1, "b": ["x", "2", {"c": true}], "d": 1.5, "e": null})
        );
        assert_eq!(
            doc.locate("/a"),
            Pos {
                line: 1,
                col: 4,
                offset: 3
            }
        );
        assert_eq!(doc.locate_key("/a").col, 1);
        assert_eq!(doc.locate("/b/1").line, 4);
        assert_eq!(doc.locate("/b/1").col, 5);
        assert_eq!(doc.locate("/b/2/c").line, 5);
        // a block mapping starts at its first key (not at the first `:`)
        let doc = parse("items:\n  - id: a\n    x: 1\n").unwrap();
        assert_eq!(
            (doc.locate("/items/0").line, doc.locate("/items/0").col),
            (2, 5)
        );
        // a missing node is located at its nearest ancestor
        assert_eq!(doc.locate("/b/2/missing"), doc.locate("/b/2"));
    }

    #[test]
    fn overlay_merges_mappings_and_replaces_the_rest() {
        let base = parse("a:\n  x: 1\n  y: [1, 2]\nb: {c: 1}\n").unwrap();
        let over = parse("a:\n  y: 3\nb: 5\n").unwrap();
        let mut map = HashMap::new();
        overlay(&mut map, &base, 0);
        overlay(&mut map, &over, 1);
        let at = |p: &str| locate_merged(&map, p, false, |o| *o).map(|(f, pos)| (f, pos.line));
        assert_eq!(at("/a/x"), Some((0, 2)), "kept from the base");
        assert_eq!(at("/a/y"), Some((1, 2)), "overridden");
        assert_eq!(at("/a/y/0"), Some((1, 2)), "the base's list is gone");
        assert_eq!(at("/b/c"), Some((1, 3)), "a scalar replaced the mapping");
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let err = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(err.pos.line, 3);
        assert!(err.message.contains("duplicate key `a`"));
    }

    #[test]
    fn syntax_error_has_position() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.pos.line >= 1, "{err:?}");
    }

    #[test]
    fn anchors_and_escaped_keys() {
        let doc = parse("base: &b {x: 1}\nother: *b\n\"a/b\": 2\n").unwrap();
        assert_eq!(doc.value["other"], json!({"x": 1}));
        assert_eq!(doc.locate("/a~1b").line, 3);
    }

    #[test]
    fn non_ascii_offsets_are_bytes() {
        let src = "name: \"é\"\nx: 1\n";
        let doc = parse(src).unwrap();
        let p = doc.locate("/x");
        assert_eq!(&src[p.offset..p.offset + 1], "1");
    }
}
