//! Choice state rules: comparison operators (and their `...Path` forms),
//! `And`/`Or`/`Not`, the `Is...` type tests and `StringMatches`.
//!
//! As in Step Functions, a comparison whose operands have the wrong types is
//! simply false, while a `Variable` (or `...Path` operand) that selects
//! nothing is a `States.Runtime` failure, except for `IsPresent`.

use std::cmp::Ordering;

use chrono::{DateTime, FixedOffset};
use serde_json::{Number, Value};

use super::error::{AslError, TaskFailure};
use super::fields::Obj;
use super::path::Path;

/// One entry of a Choice state's `Choices`: a rule and where to go when it
/// matches.
#[derive(Debug, Clone)]
pub struct ChoiceBranch {
    pub(crate) rule: Rule,
    pub(crate) next: String,
}

impl ChoiceBranch {
    /// The state this branch transitions to.
    pub fn next(&self) -> &str {
        &self.next
    }
}

/// A (possibly compound) Choice rule.
#[derive(Debug, Clone)]
pub(crate) enum Rule {
    And(Vec<Rule>),
    Or(Vec<Rule>),
    Not(Box<Rule>),
    Test { variable: Path, test: Test },
}

#[derive(Debug, Clone)]
pub(crate) enum Test {
    Compare {
        kind: Kind,
        op: Op,
        operand: Operand,
    },
    Matches(Vec<Glob>),
    Is {
        check: TypeCheck,
        expected: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    String,
    Numeric,
    Timestamp,
    Boolean,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Lt,
    Gt,
    Le,
    Ge,
}

#[derive(Debug, Clone)]
pub(crate) enum Operand {
    Literal(Value),
    Path(Path),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TypeCheck {
    Present,
    Null,
    String,
    Numeric,
    Boolean,
    Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Glob {
    Char(char),
    Star,
}

const KINDS: &[(&str, Kind)] = &[
    ("String", Kind::String),
    ("Numeric", Kind::Numeric),
    ("Timestamp", Kind::Timestamp),
    ("Boolean", Kind::Boolean),
];
const OPS: &[(&str, Op)] = &[
    ("Equals", Op::Eq),
    ("LessThan", Op::Lt),
    ("GreaterThan", Op::Gt),
    ("LessThanEquals", Op::Le),
    ("GreaterThanEquals", Op::Ge),
];
const CHECKS: &[(&str, TypeCheck)] = &[
    ("IsPresent", TypeCheck::Present),
    ("IsNull", TypeCheck::Null),
    ("IsString", TypeCheck::String),
    ("IsNumeric", TypeCheck::Numeric),
    ("IsBoolean", TypeCheck::Boolean),
    ("IsTimestamp", TypeCheck::Timestamp),
];

enum OperatorName {
    Compare(Kind, Op, bool),
    Matches,
    Is(TypeCheck),
}

fn operator(name: &str) -> Option<OperatorName> {
    if name == "StringMatches" {
        return Some(OperatorName::Matches);
    }
    if let Some((_, check)) = CHECKS.iter().find(|(n, _)| *n == name) {
        return Some(OperatorName::Is(*check));
    }
    let (base, is_path) = match name.strip_suffix("Path") {
        Some(base) => (base, true),
        None => (name, false),
    };
    for (kind_name, kind) in KINDS {
        let Some(op_name) = base.strip_prefix(kind_name) else {
            continue;
        };
        let op = OPS.iter().find(|(n, _)| *n == op_name).map(|(_, op)| *op)?;
        if *kind == Kind::Boolean && op != Op::Eq {
            return None;
        }
        return Some(OperatorName::Compare(*kind, op, is_path));
    }
    None
}

/// Parses one entry of `Choices` (`top`) or a nested rule.
pub(crate) fn parse_rule(obj: &mut Obj<'_>, top: bool) -> Result<(Rule, Option<String>), AslError> {
    let next = if top {
        Some(obj.req_string("Next")?.to_string())
    } else {
        None
    };
    obj.string("Comment")?;
    let boolean: Vec<&str> = ["And", "Or", "Not"]
        .into_iter()
        .filter(|k| obj.has(k))
        .collect();
    let rule = if let Some(&op) = boolean.first() {
        if boolean.len() > 1 || obj.has("Variable") {
            return Err(obj.invalid(
                op,
                "a rule with And/Or/Not cannot have another operator or a Variable",
            ));
        }
        if op == "Not" {
            let mut inner = obj.child("Not")?;
            let (rule, _) = parse_rule(&mut inner, false)?;
            inner.finish()?;
            Rule::Not(Box::new(rule))
        } else {
            let items = obj.array(op)?.map(Vec::as_slice).unwrap_or(&[]);
            if items.is_empty() {
                return Err(obj.invalid(op, "must be a non-empty array of rules"));
            }
            let mut rules = Vec::with_capacity(items.len());
            for i in 0..items.len() {
                let mut inner = obj.element(op, i)?;
                let (rule, _) = parse_rule(&mut inner, false)?;
                inner.finish()?;
                rules.push(rule);
            }
            if op == "And" {
                Rule::And(rules)
            } else {
                Rule::Or(rules)
            }
        }
    } else {
        let variable_text = obj.req_string("Variable")?;
        let variable = Path::parse(variable_text).map_err(|e| obj.invalid("Variable", e))?;
        let operators: Vec<(String, OperatorName)> = obj
            .keys()
            .filter_map(|k| operator(k).map(|op| (k.to_string(), op)))
            .collect();
        let mut operators = operators.into_iter();
        let Some((name, op)) = operators.next() else {
            return Err(obj.missing("a comparison operator (e.g. StringEquals)"));
        };
        if let Some((other, _)) = operators.next() {
            return Err(obj.invalid(
                &other,
                format!("a rule can have only one operator, it already has {name}"),
            ));
        }
        let value = obj.get(&name).unwrap_or(&Value::Null);
        let test = match op {
            OperatorName::Matches => {
                let pattern = value
                    .as_str()
                    .ok_or_else(|| obj.invalid(&name, "must be a string"))?;
                Test::Matches(compile_glob(pattern))
            }
            OperatorName::Is(check) => Test::Is {
                check,
                expected: value
                    .as_bool()
                    .ok_or_else(|| obj.invalid(&name, "must be true or false"))?,
            },
            OperatorName::Compare(kind, op, true) => {
                let text = value
                    .as_str()
                    .ok_or_else(|| obj.invalid(&name, "must be a path string"))?;
                let path = Path::parse(text).map_err(|e| obj.invalid(&name, e))?;
                Test::Compare {
                    kind,
                    op,
                    operand: Operand::Path(path),
                }
            }
            OperatorName::Compare(kind, op, false) => {
                let ok = match kind {
                    Kind::String => value.is_string(),
                    Kind::Numeric => value.is_number(),
                    Kind::Boolean => value.is_boolean(),
                    Kind::Timestamp => value.as_str().and_then(timestamp).is_some(),
                };
                if !ok {
                    let expected = match kind {
                        Kind::String => "a string",
                        Kind::Numeric => "a number",
                        Kind::Boolean => "true or false",
                        Kind::Timestamp => "an RFC 3339 timestamp string",
                    };
                    return Err(obj.invalid(&name, format!("must be {expected}")));
                }
                Test::Compare {
                    kind,
                    op,
                    operand: Operand::Literal(value.clone()),
                }
            }
        };
        Rule::Test { variable, test }
    };
    Ok((rule, next))
}

impl Rule {
    /// Evaluates the rule on the Choice state's effective input.
    pub(crate) fn eval(&self, input: &Value, context: &Value) -> Result<bool, TaskFailure> {
        match self {
            Rule::And(rules) => {
                for rule in rules {
                    if !rule.eval(input, context)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Rule::Or(rules) => {
                for rule in rules {
                    if rule.eval(input, context)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Rule::Not(rule) => Ok(!rule.eval(input, context)?),
            Rule::Test { variable, test } => {
                let value = variable.select(input, context);
                if let Test::Is {
                    check: TypeCheck::Present,
                    expected,
                } = test
                {
                    return Ok(value.is_some() == *expected);
                }
                let value = value.ok_or_else(|| {
                    TaskFailure::runtime(format!(
                        "Invalid path '{}': The choice state's condition path references an invalid value.",
                        variable.text()
                    ))
                })?;
                test.eval(&value, input, context)
            }
        }
    }
}

impl Test {
    fn eval(&self, value: &Value, input: &Value, context: &Value) -> Result<bool, TaskFailure> {
        Ok(match self {
            Test::Is { check, expected } => {
                let is = match check {
                    TypeCheck::Present => true,
                    TypeCheck::Null => value.is_null(),
                    TypeCheck::String => value.is_string(),
                    TypeCheck::Numeric => value.is_number(),
                    TypeCheck::Boolean => value.is_boolean(),
                    TypeCheck::Timestamp => value.as_str().and_then(timestamp).is_some(),
                };
                is == *expected
            }
            Test::Matches(glob) => value.as_str().is_some_and(|s| glob_matches(glob, s)),
            Test::Compare { kind, op, operand } => {
                let rhs = match operand {
                    Operand::Literal(v) => v.clone(),
                    Operand::Path(p) => p.select(input, context).ok_or_else(|| {
                        TaskFailure::runtime(format!(
                            "Invalid path '{}': The choice state's condition path references an invalid value.",
                            p.text()
                        ))
                    })?,
                };
                let ordering = match (kind, value, &rhs) {
                    (Kind::String, Value::String(a), Value::String(b)) => Some(a.cmp(b)),
                    (Kind::Numeric, Value::Number(a), Value::Number(b)) => compare_numbers(a, b),
                    (Kind::Boolean, Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
                    (Kind::Timestamp, Value::String(a), Value::String(b)) => {
                        match (timestamp(a), timestamp(b)) {
                            (Some(a), Some(b)) => Some(a.cmp(&b)),
                            _ => None,
                        }
                    }
                    _ => None,
                };
                ordering.is_some_and(|o| match op {
                    Op::Eq => o == Ordering::Equal,
                    Op::Lt => o == Ordering::Less,
                    Op::Gt => o == Ordering::Greater,
                    Op::Le => o != Ordering::Greater,
                    Op::Ge => o != Ordering::Less,
                })
            }
        })
    }
}

/// Parses a timestamp as the States Language defines it (Timestamps): "The
/// Choice Rule and Wait State fields that compare or wait until timestamps
/// accept strings which MUST conform to the RFC3339 profile of ISO 8601, with
/// the further restrictions that an uppercase T must separate the date and
/// time portions, and an uppercase Z must denote that a numeric time zone
/// offset is not present, for example 2016-08-18T17:33:00Z."
///
/// So a time zone (`Z` or `+hh:mm`) is required, and the lowercase `t`/`z`
/// and the space separator that RFC 3339 (and chrono) also allow are refused.
pub(crate) fn timestamp(text: &str) -> Option<DateTime<FixedOffset>> {
    // `YYYY-MM-DD` then the separator: byte 10 of an ASCII timestamp.
    if text.as_bytes().get(10) != Some(&b'T') || text.contains(['t', 'z', ' ']) {
        return None;
    }
    DateTime::parse_from_rfc3339(text).ok()
}

fn compare_numbers(a: &Number, b: &Number) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return Some(x.cmp(&y));
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return Some(x.cmp(&y));
    }
    a.as_f64()?.partial_cmp(&b.as_f64()?)
}

/// `*` matches any run of characters; `\*` is a literal `*` and `\\` a
/// literal backslash.
fn compile_glob(pattern: &str) -> Vec<Glob> {
    let mut out = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(Glob::Char(chars.next().unwrap_or('\\'))),
            '*' => out.push(Glob::Star),
            c => out.push(Glob::Char(c)),
        }
    }
    out
}

fn glob_matches(glob: &[Glob], text: &str) -> bool {
    let text: Vec<char> = text.chars().collect();
    let (mut g, mut t) = (0usize, 0usize);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match glob.get(g) {
            Some(Glob::Star) => {
                backtrack = Some((g, t));
                g += 1;
            }
            Some(Glob::Char(c)) if *c == text[t] => {
                g += 1;
                t += 1;
            }
            _ => match backtrack {
                Some((star, matched)) => {
                    g = star + 1;
                    t = matched + 1;
                    backtrack = Some((star, matched + 1));
                }
                None => return false,
            },
        }
    }
    glob[g..].iter().all(|x| *x == Glob::Star)
}

#[cfg(test)]
mod unit {
    use super::*;

    fn m(pattern: &str, text: &str) -> bool {
        glob_matches(&compile_glob(pattern), text)
    }

    #[test]
    fn glob() {
        assert!(m("log-*.txt", "log-2024.txt"));
        assert!(m("*.log", "a.log"));
        assert!(!m("*.log", "a.log.gz"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(m("*", ""));
        assert!(!m("a", ""));
        assert!(m(r"foo\*", "foo*"));
        assert!(!m(r"foo\*", "foobar"));
        assert!(m(r"a\\b", r"a\b"));
        assert!(m("**x", "abcx"));
    }

    #[test]
    fn operator_names() {
        assert!(matches!(
            operator("NumericLessThanEqualsPath"),
            Some(OperatorName::Compare(Kind::Numeric, Op::Le, true))
        ));
        assert!(matches!(
            operator("TimestampGreaterThan"),
            Some(OperatorName::Compare(Kind::Timestamp, Op::Gt, false))
        ));
        assert!(matches!(
            operator("BooleanEqualsPath"),
            Some(OperatorName::Compare(Kind::Boolean, Op::Eq, true))
        ));
        assert!(operator("BooleanLessThan").is_none());
        assert!(operator("StringMatchesPath").is_none());
        assert!(operator("Variable").is_none());
    }
}
