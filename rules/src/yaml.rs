//! A YAML document as a tree of nodes that all keep their position.
//!
//! serde-saphyr parses the text and gives each value's line and column through `Spanned`;
//! the config and rule layers then read this tree by hand, so they can report every unknown
//! key, wrong type and bad value at once instead of failing on the first, as a derived
//! `Deserialize` would.

use std::fmt;
use std::sync::Arc;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::diagnostic::{Code, Diagnostic, Diagnostics, Pos, Source};

/// A value with its position.
#[derive(Debug, Clone)]
pub struct Node {
    /// The value.
    pub kind: Kind,
    /// Where it starts.
    pub pos: Pos,
}

/// The shape of a value.
#[derive(Debug, Clone)]
pub enum Kind {
    /// `~` / `null` / empty.
    Null,
    /// Boolean.
    Bool(bool),
    /// Integer.
    Int(i64),
    /// Float.
    Float(f64),
    /// String.
    Str(String),
    /// Sequence.
    Seq(Vec<Node>),
    /// Mapping, in document order.
    Map(Vec<(Node, Node)>),
}

impl Kind {
    /// What to call this shape in an error.
    pub fn describe(&self) -> &'static str {
        match self {
            Kind::Null => "nothing",
            Kind::Bool(_) => "a boolean",
            Kind::Int(_) => "an integer",
            Kind::Float(_) => "a number",
            Kind::Str(_) => "a string",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        let s = Spanned::<Kind>::deserialize(d)?;
        let pos = Pos { line: s.referenced.line() as u32, col: s.referenced.column() as u32 };
        Ok(Node { kind: s.value, pos })
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Kind, D::Error> {
        d.deserialize_any(KindVisitor)
    }
}

struct KindVisitor;

impl<'de> Visitor<'de> for KindVisitor {
    type Value = Kind;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Kind, D::Error> {
        Kind::deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Kind, E> {
        Ok(Kind::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Kind, E> {
        Ok(Kind::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Kind, E> {
        Ok(i64::try_from(v).map_or(Kind::Float(v as f64), Kind::Int))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Kind, E> {
        Ok(Kind::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Kind, E> {
        Ok(Kind::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Kind, E> {
        Ok(Kind::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Kind, A::Error> {
        let mut items = Vec::new();
        while let Some(n) = seq.next_element::<Node>()? {
            items.push(n);
        }
        Ok(Kind::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kind, A::Error> {
        let mut entries = Vec::new();
        while let Some(k) = map.next_key::<Node>()? {
            let v = map.next_value::<Node>()?;
            entries.push((k, v));
        }
        Ok(Kind::Map(entries))
    }
}

/// Parses a YAML document; a syntax error becomes a located diagnostic.
pub fn parse(source: &Arc<Source>) -> Result<Node, Diagnostic> {
    serde_saphyr::from_str::<Node>(&source.text).map_err(|e| {
        let pos = e
            .location()
            .map(|l| Pos { line: l.line() as u32, col: l.column() as u32 })
            .unwrap_or(Pos { line: 1, col: 1 });
        let message = first_line(&e.to_string());
        // The position is reported separately; drop serde-saphyr's own prefix.
        let message = match message.split_once(": ") {
            Some((head, rest)) if head.starts_with("error") => {
                rest.split_once(": ").filter(|(h, _)| h.starts_with("line ")).map_or(rest, |(_, m)| m).to_string()
            }
            _ => message,
        };
        Diagnostic::new(Code::Syntax, format!("invalid YAML: {message}"), source, pos, 1)
            .with_hint("check indentation and that every `key: value` pair has a space after the colon")
    })
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).trim().to_string()
}

/// The node as JSON (positions dropped), for values handed to JSON-shaped parsers.
pub fn to_json(node: &Node) -> serde_json::Value {
    use serde_json::Value;
    match &node.kind {
        Kind::Null => Value::Null,
        Kind::Bool(b) => Value::from(*b),
        Kind::Int(i) => Value::from(*i),
        Kind::Float(f) => Value::from(*f),
        Kind::Str(s) => Value::from(s.as_str()),
        Kind::Seq(items) => Value::Array(items.iter().map(to_json).collect()),
        Kind::Map(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| {
                    let key = match &k.kind {
                        Kind::Str(s) => s.clone(),
                        _ => to_json(k).to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
    }
}

/// Reads nodes of one file, reporting into shared diagnostics.
#[derive(Debug, Clone)]
pub struct Reader {
    /// The file.
    pub source: Arc<Source>,
}

impl Reader {
    /// Length in characters of the scalar at `node` as written (for carets).
    pub fn width(&self, node: &Node) -> u32 {
        match &node.kind {
            Kind::Str(s) => s.chars().count() as u32 + u32::from(self.is_quoted(node)) * 2,
            Kind::Int(i) => i.to_string().len() as u32,
            Kind::Float(f) => f.to_string().len() as u32,
            Kind::Bool(b) => {
                if *b {
                    4
                } else {
                    5
                }
            }
            _ => 1,
        }
    }

    /// True when the scalar at `node` is written in quotes.
    pub fn is_quoted(&self, node: &Node) -> bool {
        self.source
            .line(node.pos.line)
            .and_then(|l| l.chars().nth(node.pos.col.saturating_sub(1) as usize))
            .is_some_and(|c| c == '"' || c == '\'')
    }

    /// `file:line:column` of `node`, for warnings.
    pub fn location(&self, node: &Node) -> String {
        format!("{}:{}:{}", self.source.path.display(), node.pos.line, node.pos.col)
    }

    /// A diagnostic spanning `node`.
    pub fn error(&self, code: Code, node: &Node, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(code, message, &self.source, node.pos, self.width(node))
    }

    /// A diagnostic at a position with a width.
    pub fn error_at(&self, code: Code, pos: Pos, len: u32, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(code, message, &self.source, pos, len)
    }

    /// Reads `node` as a mapping with only `allowed` keys; unknown keys are reported with a
    /// suggestion. `what` names the mapping in messages.
    pub fn map<'a>(&self, node: &'a Node, what: &str, allowed: &[&str], diags: &mut Diagnostics) -> Option<Fields<'a>> {
        let Kind::Map(entries) = &node.kind else {
            diags.push(self.error(
                Code::WrongType,
                node,
                format!("{what} must be a mapping, found {}", node.kind.describe()),
            ));
            return None;
        };
        let mut fields = Fields { entries: Vec::new(), pos: node.pos };
        for (k, v) in entries {
            let Kind::Str(name) = &k.kind else {
                diags.push(self.error(Code::WrongType, k, format!("keys of {what} must be strings")));
                continue;
            };
            if !allowed.is_empty() && !allowed.contains(&name.as_str()) {
                let mut d = self.error(Code::UnknownKey, k, format!("unknown key `{name}` in {what}"));
                d = d.suggest(name, allowed, "allowed keys");
                diags.push(d);
                continue;
            }
            fields.entries.push((name.as_str(), k, v));
        }
        Some(fields)
    }

    /// A string value.
    pub fn string(&self, node: &Node, what: &str, diags: &mut Diagnostics) -> Option<String> {
        match &node.kind {
            Kind::Str(s) => Some(s.clone()),
            Kind::Int(i) => Some(i.to_string()),
            Kind::Float(f) => Some(f.to_string()),
            Kind::Bool(b) => Some(b.to_string()),
            other => {
                diags.push(self.error(
                    Code::WrongType,
                    node,
                    format!("`{what}` must be a string, found {}", other.describe()),
                ));
                None
            }
        }
    }

    /// A list of strings; a single string counts as a list of one.
    pub fn string_list(&self, node: &Node, what: &str, diags: &mut Diagnostics) -> Option<Vec<(String, Node)>> {
        match &node.kind {
            Kind::Seq(items) => {
                let mut out = Vec::new();
                for item in items {
                    if let Some(s) = self.string(item, what, diags) {
                        out.push((s, item.clone()));
                    }
                }
                Some(out)
            }
            Kind::Str(s) => Some(vec![(s.clone(), node.clone())]),
            other => {
                diags.push(self.error(
                    Code::WrongType,
                    node,
                    format!("`{what}` must be a list of strings, found {}", other.describe()),
                ));
                None
            }
        }
    }

    /// A duration in milliseconds.
    pub fn duration(&self, node: &Node, what: &str, diags: &mut Diagnostics) -> Option<i64> {
        let text = match &node.kind {
            Kind::Str(s) => s.clone(),
            Kind::Int(i) => i.to_string(),
            other => {
                diags.push(self.error(
                    Code::BadDuration,
                    node,
                    format!("`{what}` must be a duration, found {}", other.describe()),
                ));
                return None;
            }
        };
        match crate::duration::parse_duration(&text) {
            Ok(ms) => Some(ms),
            Err(why) => {
                let d = self.error(Code::BadDuration, node, format!("invalid duration `{text}` for `{what}`: {why}"));
                diags.push(d.with_hint(crate::duration::duration_hint(&text)));
                None
            }
        }
    }

    /// A non-negative integer.
    pub fn uint(&self, node: &Node, what: &str, diags: &mut Diagnostics) -> Option<u64> {
        match &node.kind {
            Kind::Int(i) if *i >= 0 => Some(*i as u64),
            Kind::Int(i) => {
                diags.push(self.error(
                    Code::BadValue,
                    node,
                    format!("`{what}` must be a non-negative integer, found {i}"),
                ));
                None
            }
            other => {
                diags.push(self.error(
                    Code::WrongType,
                    node,
                    format!("`{what}` must be a non-negative integer, found {}", other.describe()),
                ));
                None
            }
        }
    }

    /// A boolean.
    pub fn boolean(&self, node: &Node, what: &str, diags: &mut Diagnostics) -> Option<bool> {
        match &node.kind {
            Kind::Bool(b) => Some(*b),
            other => {
                diags.push(self.error(
                    Code::WrongType,
                    node,
                    format!("`{what}` must be true or false, found {}", other.describe()),
                ));
                None
            }
        }
    }
}

/// The allowed keys of a mapping, in order.
#[derive(Debug)]
pub struct Fields<'a> {
    entries: Vec<(&'a str, &'a Node, &'a Node)>,
    /// Position of the mapping.
    pub pos: Pos,
}

impl<'a> Fields<'a> {
    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&'a Node> {
        self.entries.iter().find(|(k, _, _)| *k == key).map(|(_, _, v)| *v)
    }

    /// The value of `key`, or a missing-key diagnostic at the mapping.
    pub fn require(&self, key: &str, what: &str, reader: &Reader, diags: &mut Diagnostics) -> Option<&'a Node> {
        let v = self.get(key);
        if v.is_none() {
            diags.push(reader.error_at(
                Code::MissingKey,
                self.pos,
                1,
                format!("{what} is missing required key `{key}`"),
            ));
        }
        v
    }

    /// All entries (key, key node, value node).
    pub fn entries(&self) -> &[(&'a str, &'a Node, &'a Node)] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_positions_of_nested_values() {
        let src = Arc::new(Source::new("t.yaml", "rules:\n  - id: a\n    where: value > 1\n"));
        let root = parse(&src).unwrap();
        let Kind::Map(top) = &root.kind else { panic!("map") };
        let Kind::Seq(rules) = &top[0].1.kind else { panic!("seq") };
        let Kind::Map(rule) = &rules[0].kind else { panic!("map") };
        assert_eq!(rule[1].0.pos, Pos { line: 3, col: 5 });
        assert_eq!(rule[1].1.pos, Pos { line: 3, col: 12 });
        assert!(matches!(&rule[1].1.kind, Kind::Str(s) if s == "value > 1"));
    }

    #[test]
    fn syntax_errors_are_located() {
        let src = Arc::new(Source::new("t.yaml", "rules:\n  - id: a\n   bad: [1,\n"));
        let d = parse(&src).unwrap_err();
        assert_eq!(d.code, Code::Syntax);
        assert!(d.pos.line >= 2, "{d}");
    }
}
