//! JSONPath handling: query paths (`InputPath`, `ItemsPath`, `key.$`, Choice
//! `Variable`, ...), reference paths (`ResultPath`) and the input/output
//! filters built from them.
//!
//! Queries are evaluated with `serde_json_path` (RFC 9535). A path starting
//! with `$$` is evaluated on the context object instead of the input. As in
//! Step Functions, a *definite* path (only names and indexes) yields the
//! single value it selects, and an indefinite one (wildcards, slices, filters,
//! unions, `..`) yields the array of everything it selects.

use serde_json::{Map, Value};
use serde_json_path::JsonPath;

use super::error::{TaskFailure, STATES_RESULT_PATH_MATCH_FAILURE};

/// A compiled JSONPath query on the state input (`$...`) or on the context
/// object (`$$...`).
#[derive(Debug, Clone)]
pub struct Path {
    text: String,
    context: bool,
    definite: bool,
    compiled: JsonPath,
}

impl Path {
    /// Compiles `text`; the error message says what is wrong.
    pub fn parse(text: &str) -> Result<Path, String> {
        let (context, query) = if let Some(rest) = text.strip_prefix("$$") {
            (true, format!("${rest}"))
        } else if text.starts_with('$') {
            (false, text.to_string())
        } else {
            return Err(format!(
                "`{text}` is not a JSONPath (it must start with `$`)"
            ));
        };
        let query = normalize(&query);
        let compiled = JsonPath::parse(&query)
            .map_err(|e| format!("`{text}` is not a valid JSONPath: {e}"))?;
        Ok(Path {
            text: text.to_string(),
            context,
            definite: is_definite(&query),
            compiled,
        })
    }

    /// The path as written in the definition.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether the path can select at most one value.
    #[cfg(test)]
    pub fn is_definite(&self) -> bool {
        self.definite
    }

    /// Evaluates the path. A definite path that selects nothing gives `None`;
    /// an indefinite one always gives an array (possibly empty).
    pub fn select(&self, input: &Value, context: &Value) -> Option<Value> {
        let root = if self.context { context } else { input };
        let nodes = self.compiled.query(root);
        if self.definite {
            nodes.first().cloned()
        } else {
            Some(Value::Array(nodes.all().into_iter().cloned().collect()))
        }
    }

    /// Like [`Path::select`], but a path that selects nothing is a
    /// `States.Runtime` failure naming the path and `field`.
    pub fn require(
        &self,
        input: &Value,
        context: &Value,
        field: &str,
    ) -> Result<Value, TaskFailure> {
        self.select(input, context).ok_or_else(|| {
            let whose = if self.context {
                "context object"
            } else {
                "input"
            };
            TaskFailure::runtime(format!(
                "The JSONPath '{}' specified for the field '{}' could not be found in the {}",
                self.text, field, whose
            ))
        })
    }
}

/// Rewrites dot-notation member names that RFC 9535 only accepts in
/// brackets (`$.detail-type`, which Step Functions' JSONPath allows) into
/// bracket notation (`$['detail-type']`). Bracketed parts are left alone.
fn normalize(query: &str) -> String {
    let chars: Vec<char> = query.chars().collect();
    let mut out = String::with_capacity(query.len());
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if let Some(q) = quote {
            out.push(c);
            if c == '\\' {
                if let Some(&escaped) = chars.get(i + 1) {
                    out.push(escaped);
                    i += 1;
                }
            } else if c == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        match c {
            '\'' | '"' => quote = Some(c),
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            '.' if depth == 0 => {
                let descendant = chars.get(i + 1) == Some(&'.');
                let start = if descendant { i + 2 } else { i + 1 };
                let mut end = start;
                while end < chars.len() && chars[end] != '.' && chars[end] != '[' {
                    end += 1;
                }
                let name: String = chars[start..end].iter().collect();
                let shorthand = name == "*"
                    || name.chars().enumerate().all(|(k, ch)| {
                        ch == '_'
                            || !ch.is_ascii()
                            || ch.is_ascii_alphabetic()
                            || (k > 0 && ch.is_ascii_digit())
                    });
                if shorthand || name.is_empty() {
                    out.push_str(if descendant { ".." } else { "." });
                    out.push_str(&name);
                } else {
                    if descendant {
                        out.push_str("..");
                    }
                    out.push_str("['");
                    out.push_str(&name.replace('\\', "\\\\").replace('\'', "\\'"));
                    out.push_str("']");
                }
                i = end;
                continue;
            }
            _ => {}
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Whether an RFC 9535 query (starting with `$`) only uses name and index
/// selectors. Scans outside of string literals.
fn is_definite(query: &str) -> bool {
    let mut chars = query.chars().peekable();
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut prev = '\0';
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            if c == '\\' {
                chars.next();
                continue;
            }
            if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => quote = Some(c),
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            '*' | '?' => return false,
            ':' | ',' if depth > 0 => return false,
            '.' if prev == '.' => return false,
            _ => {}
        }
        prev = c;
    }
    true
}

/// One step of a reference path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// An object member.
    Field(String),
    /// An array element.
    Index(usize),
}

/// A reference path: `$` followed by member names (`.name`, `['name']`) and
/// array indexes (`[0]`), identifying a single node. Used by `ResultPath`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferencePath {
    text: String,
    segments: Vec<Segment>,
}

impl ReferencePath {
    /// Parses a reference path; the error message says what is wrong.
    pub fn parse(text: &str) -> Result<ReferencePath, String> {
        let bad = |why: &str| format!("`{text}` is not a reference path: {why}");
        let chars: Vec<char> = text.chars().collect();
        if chars.first() != Some(&'$') {
            return Err(bad("it must start with `$`"));
        }
        if chars.get(1) == Some(&'$') {
            return Err(bad("the context object cannot be written to"));
        }
        let mut segments = Vec::new();
        let mut i = 1;
        while i < chars.len() {
            match chars[i] {
                '.' => {
                    let start = i + 1;
                    let mut end = start;
                    while end < chars.len() && chars[end] != '.' && chars[end] != '[' {
                        end += 1;
                    }
                    let name: String = chars[start..end].iter().collect();
                    if name.is_empty() {
                        return Err(bad("empty member name (`..` is not allowed)"));
                    }
                    if name.contains(['*', '@', '?', ']', '(', ')', ',', ':', '\'', '"']) {
                        return Err(bad("only member names and indexes are allowed"));
                    }
                    segments.push(Segment::Field(name));
                    i = end;
                }
                '[' => {
                    let close = (i + 1..chars.len())
                        .find(|&j| chars[j] == ']' && !in_quotes(&chars[i + 1..j]))
                        .ok_or_else(|| bad("unclosed `[`"))?;
                    let inner: String = chars[i + 1..close].iter().collect();
                    let inner = inner.trim();
                    if let Some(name) = quoted(inner) {
                        segments.push(Segment::Field(name));
                    } else if let Ok(index) = inner.parse::<usize>() {
                        segments.push(Segment::Index(index));
                    } else {
                        return Err(bad(
                            "only member names and non-negative indexes are allowed",
                        ));
                    }
                    i = close + 1;
                }
                _ => return Err(bad("expected `.` or `[`")),
            }
        }
        Ok(ReferencePath {
            text: text.to_string(),
            segments,
        })
    }

    /// The steps after `$`.
    #[cfg(test)]
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Returns `target` with `value` placed at this path. Missing
    /// intermediate object members are created; a step through something that
    /// is not an object (for a name) or a long enough array (for an index) is
    /// a `States.ResultPathMatchFailure`.
    pub fn set(&self, mut target: Value, value: Value) -> Result<Value, TaskFailure> {
        let fail = |why: String| {
            TaskFailure::new(
                STATES_RESULT_PATH_MATCH_FAILURE,
                format!(
                    "Unable to apply ResultPath '{}' to the input: {why}",
                    self.text
                ),
            )
        };
        let Some((last, parents)) = self.segments.split_last() else {
            return Ok(value);
        };
        let mut cur = &mut target;
        for seg in parents {
            cur = match seg {
                Segment::Field(name) => match cur {
                    Value::Object(map) => map
                        .entry(name.clone())
                        .or_insert_with(|| Value::Object(Map::new())),
                    other => {
                        return Err(fail(format!(
                            "cannot set member '{name}' on a {}",
                            type_name(other)
                        )))
                    }
                },
                Segment::Index(index) => {
                    let kind = type_name(cur);
                    match cur.get_mut(*index) {
                        Some(item) => item,
                        None => {
                            return Err(fail(format!("index {index} does not exist in a {kind}")))
                        }
                    }
                }
            };
        }
        match (last, cur) {
            (Segment::Field(name), Value::Object(map)) => {
                map.insert(name.clone(), value);
            }
            (Segment::Index(index), Value::Array(items)) if *index < items.len() => {
                items[*index] = value;
            }
            (Segment::Field(name), other) => {
                return Err(fail(format!(
                    "cannot set member '{name}' on a {}",
                    type_name(other)
                )))
            }
            (Segment::Index(index), other) => {
                return Err(fail(format!(
                    "index {index} does not exist in a {}",
                    type_name(other)
                )))
            }
        }
        Ok(target)
    }
}

fn in_quotes(chars: &[char]) -> bool {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for &c in chars {
        if escaped {
            escaped = false;
            continue;
        }
        match quote {
            Some(_) if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            None if c == '\'' || c == '"' => quote = Some(c),
            _ => {}
        }
    }
    quote.is_some()
}

fn quoted(inner: &str) -> Option<String> {
    let first = inner.chars().next()?;
    if (first != '\'' && first != '"') || inner.len() < 2 || !inner.ends_with(first) {
        return None;
    }
    let body = &inner[1..inner.len() - 1];
    let mut out = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.push(chars.next()?);
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// The JSON type name of a value, for messages.
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `InputPath` / `OutputPath`: absent or `$` keeps the value, `null` gives
/// `{}`, a path selects part of it.
#[derive(Debug, Clone, Default)]
pub enum IoPath {
    /// Keep the whole value.
    #[default]
    Whole,
    /// `null`: the value becomes `{}`.
    Empty,
    /// Select with a path (a `States.Runtime` failure when nothing matches).
    Select(Path),
}

impl IoPath {
    /// Applies the filter; `field` names it in failures.
    pub fn apply(&self, value: Value, context: &Value, field: &str) -> Result<Value, TaskFailure> {
        match self {
            IoPath::Whole => Ok(value),
            IoPath::Empty => Ok(Value::Object(Map::new())),
            IoPath::Select(path) => path.require(&value, context, field),
        }
    }
}

/// `ResultPath`: where a state's result goes in its raw input.
#[derive(Debug, Clone, Default)]
pub enum ResultPath {
    /// Absent or `$`: the result replaces the input.
    #[default]
    Replace,
    /// `null`: the result is discarded and the input passes through.
    Discard,
    /// A reference path into the input.
    Set(ReferencePath),
}

impl ResultPath {
    /// Combines the state's raw input with its result.
    pub fn apply(&self, input: &Value, result: Value) -> Result<Value, TaskFailure> {
        match self {
            ResultPath::Replace => Ok(result),
            ResultPath::Discard => Ok(input.clone()),
            ResultPath::Set(path) => path.set(input.clone(), result),
        }
    }
}

#[cfg(test)]
mod unit {
    use super::*;
    use serde_json::json;

    #[test]
    fn definite_paths() {
        for p in ["$", "$.a.b", "$['a b'][0]", "$.a['x*y']"] {
            assert!(Path::parse(p).unwrap().is_definite(), "{p}");
        }
        for p in [
            "$.a[*]",
            "$..a",
            "$.a[0:2]",
            "$.a[0,1]",
            "$.a[?@.b == 1]",
            "$.*",
            "$..x-y",
        ] {
            assert!(!Path::parse(p).unwrap().is_definite(), "{p}");
        }
    }

    #[test]
    fn normalizes_dashed_names() {
        assert_eq!(
            normalize("$.detail.delivery-partner"),
            "$.detail['delivery-partner']"
        );
        assert_eq!(normalize("$..x-y.z"), "$..['x-y'].z");
        assert_eq!(normalize("$.a['b-c'].d"), "$.a['b-c'].d");
        assert_eq!(normalize("$.it's-1"), "$['it\\'s-1']");
        assert_eq!(
            normalize("$.a[?(@.b-c == 'x.y-z')]"),
            "$.a[?(@.b-c == 'x.y-z')]"
        );
        assert_eq!(normalize("$.*.a1"), "$.*.a1");
        let v = json!({"detail-type": "x", "a": {"b-c": [1, 2]}});
        assert_eq!(
            Path::parse("$.detail-type").unwrap().select(&v, &v),
            Some(json!("x"))
        );
        assert_eq!(
            Path::parse("$.a.b-c[1]").unwrap().select(&v, &v),
            Some(json!(2))
        );
    }

    #[test]
    fn select_definite_and_indefinite() {
        let v = json!({"a": [{"b": 1}, {"b": 2}]});
        let ctx = json!({"State": {"Name": "S"}});
        assert_eq!(
            Path::parse("$.a[1].b").unwrap().select(&v, &ctx),
            Some(json!(2))
        );
        assert_eq!(
            Path::parse("$.a[*].b").unwrap().select(&v, &ctx),
            Some(json!([1, 2]))
        );
        assert_eq!(Path::parse("$.zz").unwrap().select(&v, &ctx), None);
        assert_eq!(
            Path::parse("$$.State.Name").unwrap().select(&v, &ctx),
            Some(json!("S"))
        );
        let err = Path::parse("$.zz")
            .unwrap()
            .require(&v, &ctx, "InputPath")
            .unwrap_err();
        assert_eq!(err.error, "States.Runtime");
        let cause = err.cause_text();
        assert!(cause.contains("$.zz") && cause.contains("InputPath"));
        assert!(Path::parse("a.b").is_err());
        assert!(Path::parse("$.a[").is_err());
    }

    #[test]
    fn reference_paths() {
        let p = ReferencePath::parse("$.a['b c'][2].d").unwrap();
        assert_eq!(
            p.segments(),
            &[
                Segment::Field("a".into()),
                Segment::Field("b c".into()),
                Segment::Index(2),
                Segment::Field("d".into())
            ]
        );
        for bad in ["$.a[*]", "$..a", "a", "$$.x", "$.a[-1]", "$.a[0:1]"] {
            assert!(ReferencePath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn set_creates_and_fails() {
        let p = ReferencePath::parse("$.a.b").unwrap();
        assert_eq!(
            p.set(json!({"x": 1}), json!(5)).unwrap(),
            json!({"x": 1, "a": {"b": 5}})
        );
        let err = p.set(json!({"a": "str"}), json!(5)).unwrap_err();
        assert_eq!(err.error, "States.ResultPathMatchFailure");
        let err = p.set(json!("str"), json!(5)).unwrap_err();
        assert_eq!(err.error, "States.ResultPathMatchFailure");
        let idx = ReferencePath::parse("$.l[1]").unwrap();
        assert_eq!(
            idx.set(json!({"l": [0, 0]}), json!(9)).unwrap(),
            json!({"l": [0, 9]})
        );
        assert!(idx.set(json!({"l": [0]}), json!(9)).is_err());
    }
}
