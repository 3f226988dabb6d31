//! Structural parsing: text to [`Recipe`], with serde errors turned into
//! [`Problem`]s that name the field path and its location.
//!
//! Before the typed parse, a "shape" pass over the generic document reports
//! the one-of mistakes (a base with zero or several kinds, a shell provisioner
//! with both or neither of `inline`/`script`, a version with both or neither
//! key) and repairs them in a copy, so the typed parse and the semantic checks
//! still run and every problem is reported together.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::Problem;
use super::locate::{field_index, field_key, locate, parse_path, Seg};
use super::model::Recipe;
use super::raw::{base_kind_message, shell_source_message, BASE_KINDS};
use super::Format;

/// Parses `text`; returns the recipe and the shape problems found on the
/// way, or the problems that prevented parsing.
pub(crate) fn parse_recipe(
    text: &str,
    format: Format,
    file: &Path,
) -> Result<(Recipe, Vec<Problem>), Vec<Problem>> {
    let generic: Option<Value> = match format {
        Format::Yaml => serde_yaml_ng::from_str(text).ok(),
        Format::Json => serde_json::from_str(text).ok(),
    };
    let mut shape = Vec::new();
    let mut doc = generic.map(|mut v| {
        shape_check(&mut v, &mut shape);
        v
    });
    let mut problems: Vec<Problem> = shape
        .into_iter()
        .map(|(field, message)| locate_problem(Problem::new(file, field, message), text, format))
        .collect();
    let first = match (&doc, problems.is_empty()) {
        (Some(value), false) => deserialize_value::<Recipe>(value.clone(), text, format, file),
        _ => deserialize_text::<Recipe>(text, format, file),
    };
    let mut problem = match first {
        Ok(recipe) => return Ok((recipe, problems)),
        Err(problem) => problem,
    };
    // Report every structural mistake in one run: drop the field a mistake
    // names from the generic document and parse again, until the rest
    // parses or a mistake cannot be dropped without changing what later
    // paths mean (a whole list item, a missing field, a syntax error).
    let mut removed = Vec::new();
    for _ in 0..MAX_STRUCTURAL_PROBLEMS {
        // A mistake about a dropped field or what held it (now missing a
        // required key, or empty) follows from the drop: not reported.
        let follows = removed
            .iter()
            .any(|gone: &String| is_same_or_parent(&problem.field, gone));
        if follows {
            return Err(problems);
        }
        let dropped = doc
            .as_mut()
            .is_some_and(|d| remove_field(d, &problem.field));
        removed.push(problem.field.clone());
        problems.push(problem);
        let Some(value) = doc.as_ref().filter(|_| dropped) else {
            return Err(problems);
        };
        problem = match deserialize_value::<Recipe>(value.clone(), text, format, file) {
            Ok(recipe) => return Ok((recipe, problems)),
            Err(next) => next,
        };
    }
    problems.push(problem);
    Err(problems)
}

/// Whether field path `field` is `other` or one of its parents.
fn is_same_or_parent(field: &str, other: &str) -> bool {
    field.is_empty()
        || other == field
        || other
            .strip_prefix(field)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

/// How many structural mistakes one file reports before giving up.
const MAX_STRUCTURAL_PROBLEMS: usize = 50;

/// Deserializes a generic document (already parsed, possibly repaired).
fn deserialize_value<T: DeserializeOwned>(
    value: Value,
    text: &str,
    format: Format,
    file: &Path,
) -> Result<T, Problem> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        structural_problem(file, text, format, &path, &message, None)
    })
}

/// Removes the map entry at `field` from `doc`; false when the path does
/// not end in a key of a map that holds it (nothing is changed then).
fn remove_field(doc: &mut Value, field: &str) -> bool {
    let mut segs = parse_path(field);
    let Some(Seg::Key(last)) = segs.pop() else {
        return false;
    };
    let mut node = doc;
    for seg in &segs {
        let next = match (seg, node) {
            (Seg::Key(k), Value::Object(map)) => map.get_mut(k),
            (Seg::Index(i), Value::Array(list)) => list.get_mut(*i),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => return false,
        }
    }
    match node {
        Value::Object(map) => map.remove(&last).is_some(),
        _ => false,
    }
}

/// Deserializes `text` as `T`, turning the first error into a problem.
pub(crate) fn deserialize_text<T: DeserializeOwned>(
    text: &str,
    format: Format,
    file: &Path,
) -> Result<T, Problem> {
    match format {
        Format::Yaml => {
            let de = serde_yaml_ng::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| {
                let loc = e.inner().location().map(|l| (l.line(), l.column()));
                let (path, message) = (e.path().to_string(), e.inner().to_string());
                structural_problem(file, text, format, &path, &message, loc)
            })
        }
        Format::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            serde_path_to_error::deserialize(&mut de).map_err(|e| {
                let inner = e.inner();
                let loc = (inner.line() > 0).then(|| (inner.line(), inner.column()));
                let (path, message) = (e.path().to_string(), inner.to_string());
                structural_problem(file, text, format, &path, &message, loc)
            })
        }
    }
}

/// Builds a problem from a serde error: cleans the message, completes the
/// field path for unknown and missing fields, and picks the best location.
pub(crate) fn structural_problem(
    file: &Path,
    text: &str,
    format: Format,
    path: &str,
    raw_message: &str,
    loc: Option<(usize, usize)>,
) -> Problem {
    let mut field = match path {
        "." | "?" => String::new(),
        p => p.to_string(),
    };
    let mut message = clean_message(raw_message, &field);
    let unknown_field = message.starts_with("unknown field `");
    if let Some(name) = quoted_after(&message, "unknown field `") {
        if field != name && !field.ends_with(&format!(".{name}")) {
            field = field_key(&field, &name);
        }
        let expected = expected_names(&message);
        if let Some(close) = expected.iter().find(|e| edit_distance(e, &name) <= 2) {
            message.push_str(&format!(" (did you mean `{close}`?)"));
        }
    } else if field.ends_with("version.version") && message.starts_with("invalid type:") {
        message.push_str(" (quote versions: \"2.0\")");
    } else if let Some(name) = quoted_after(&message, "missing field `") {
        field = field_key(&field, &name);
        message = format!("required field `{name}` is missing");
    }
    // Errors inside a provisioner come from buffered content and carry the
    // list's location; try_from errors carry the document start; an unknown
    // key is best pointed at where it starts.
    let trusted = loc.filter(|(l, c)| {
        !(unknown_field
            || field.contains("provisioners[")
            || (*l == 1 && *c == 1 && !field.is_empty()))
    });
    let mut problem = Problem::new(file, field, message);
    if let Some((line, column)) = trusted {
        problem = problem.at(line, column);
        return problem;
    }
    problem = locate_problem(problem, text, format);
    if problem.line.is_none() {
        if let Some((line, column)) = loc {
            problem = problem.at(line, column);
        }
    }
    problem
}

/// Fills in the location of `problem` from its field path, when found.
pub(crate) fn locate_problem(problem: Problem, text: &str, format: Format) -> Problem {
    match locate(text, format, &problem.field) {
        Some((line, column)) if problem.line.is_none() => problem.at(line, column),
        _ => problem,
    }
}

/// Strips serde_yaml_ng's own `path: ` prefix and ` at line L column C`.
fn clean_message(raw: &str, field: &str) -> String {
    let mut msg = raw;
    if let Some(pos) = msg.rfind(" at line ") {
        let tail = &msg[pos + " at line ".len()..];
        let looks_like_loc = tail
            .split(" column ")
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if looks_like_loc {
            msg = &msg[..pos];
        }
    }
    if let Some((prefix, rest)) = msg.split_once(": ") {
        let is_path = !prefix.contains(' ') && !prefix.is_empty();
        if is_path && (field.starts_with(prefix) || prefix == ".") {
            msg = rest;
        }
    }
    msg.to_string()
}

fn quoted_after(message: &str, marker: &str) -> Option<String> {
    let start = message.find(marker)? + marker.len();
    let end = message[start..].find('`')?;
    Some(message[start..start + end].to_string())
}

/// The backquoted names after "expected" in a serde message.
fn expected_names(message: &str) -> Vec<String> {
    let Some((_, tail)) = message.split_once("expected") else {
        return Vec::new();
    };
    tail.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Reports and repairs one-of mistakes in the generic document.
fn shape_check(doc: &mut Value, out: &mut Vec<(String, String)>) {
    let Some(root) = doc.as_object_mut() else {
        return;
    };
    if let Some(Value::Object(base)) = root.get_mut("base") {
        let present: Vec<&str> = BASE_KINDS
            .iter()
            .copied()
            .filter(|k| base.contains_key(*k))
            .collect();
        if present.len() > 1 {
            out.push(("base".to_string(), base_kind_message(&present)));
            for extra in &present[1..] {
                base.remove(*extra);
            }
        } else if base.is_empty() {
            out.push(("base".to_string(), base_kind_message(&[])));
            base.insert("image".into(), Value::String("ami-00000000".into()));
        }
    }
    if let Some(Value::Object(version)) = root.get_mut("version") {
        let both = version.contains_key("bump") && version.contains_key("version");
        if both || version.is_empty() {
            let msg = if both {
                "set either `bump` or `version`, not both"
            } else {
                "one of `bump` (major, minor, patch) or `version` (e.g. \"2.0\") is required"
            };
            out.push(("version".to_string(), msg.to_string()));
            version.clear();
            version.insert("bump".into(), Value::String("minor".into()));
        }
    }
    if let Some(Value::Array(list)) = root.get_mut("provisioners") {
        for (i, p) in list.iter_mut().enumerate() {
            let Value::Object(p) = p else { continue };
            if p.get("type").and_then(Value::as_str) != Some("shell") {
                continue;
            }
            let (inline, script) = (p.contains_key("inline"), p.contains_key("script"));
            // With unknown keys the typed parse names them instead.
            let known = p
                .keys()
                .all(|k| matches!(k.as_str(), "type" | "inline" | "script" | "env"));
            if inline == script && (inline || known) {
                out.push((field_index("provisioners", i), shell_source_message(inline)));
                p.remove("script");
                p.entry("inline").or_insert(Value::Array(Vec::new()));
            }
        }
    }
}
