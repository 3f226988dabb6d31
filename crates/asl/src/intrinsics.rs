//! Intrinsic functions (`States.Format(...)` and friends) usable as the value
//! of a `key.$` field. Calls are parsed at load time (unknown functions and
//! wrong argument counts are load errors) and evaluated against the state's
//! effective input and context object. Failures at run time are
//! `States.IntrinsicFailure`, except a path argument that matches nothing and
//! an unsupported hash algorithm, which are `States.Runtime`.

use base64::Engine as _;
use serde_json::{Map, Number, Value};
use sha2::Digest as _;

use super::error::TaskFailure;
use super::path::{type_name, Path};
use super::template::Env;

/// Step Functions allows at most this many nested calls in one field.
const MAX_NESTING: usize = 10;
/// Largest array `States.ArrayRange` may build.
const MAX_RANGE_ITEMS: i64 = 1000;

/// A parsed intrinsic function call.
#[derive(Debug, Clone)]
pub struct Intrinsic {
    func: Func,
    args: Vec<Arg>,
}

#[derive(Debug, Clone)]
enum Arg {
    Literal(Value),
    Path(Path),
    Call(Intrinsic),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Func {
    Format,
    StringToJson,
    JsonToString,
    Array,
    ArrayPartition,
    ArrayContains,
    ArrayRange,
    ArrayGetItem,
    ArrayLength,
    ArrayUnique,
    Base64Encode,
    Base64Decode,
    Hash,
    JsonMerge,
    MathRandom,
    MathAdd,
    StringSplit,
    Uuid,
}

const FUNCS: &[(&str, Func, usize, usize)] = &[
    ("States.Format", Func::Format, 1, usize::MAX),
    ("States.StringToJson", Func::StringToJson, 1, 1),
    ("States.JsonToString", Func::JsonToString, 1, 1),
    ("States.Array", Func::Array, 0, usize::MAX),
    ("States.ArrayPartition", Func::ArrayPartition, 2, 2),
    ("States.ArrayContains", Func::ArrayContains, 2, 2),
    ("States.ArrayRange", Func::ArrayRange, 3, 3),
    ("States.ArrayGetItem", Func::ArrayGetItem, 2, 2),
    ("States.ArrayLength", Func::ArrayLength, 1, 1),
    ("States.ArrayUnique", Func::ArrayUnique, 1, 1),
    ("States.Base64Encode", Func::Base64Encode, 1, 1),
    ("States.Base64Decode", Func::Base64Decode, 1, 1),
    ("States.Hash", Func::Hash, 2, 2),
    ("States.JsonMerge", Func::JsonMerge, 3, 3),
    ("States.MathRandom", Func::MathRandom, 2, 3),
    ("States.MathAdd", Func::MathAdd, 2, 2),
    ("States.StringSplit", Func::StringSplit, 2, 2),
    ("States.UUID", Func::Uuid, 0, 0),
];

impl Func {
    fn name(self) -> &'static str {
        FUNCS
            .iter()
            .find(|(_, f, _, _)| *f == self)
            .map_or("States.?", |(n, _, _, _)| n)
    }
}

/// Whether a `key.$` value is an intrinsic call rather than a path.
pub fn looks_like_call(text: &str) -> bool {
    text.trim_start().starts_with("States.")
}

impl Intrinsic {
    /// Parses a call such as `States.Format('{} {}', $.a, States.UUID())`.
    pub fn parse(text: &str) -> Result<Intrinsic, String> {
        let mut parser = Parser {
            chars: text.chars().collect(),
            pos: 0,
        };
        parser.skip_ws();
        let call = parser.call(1)?;
        parser.skip_ws();
        if parser.pos != parser.chars.len() {
            return Err(format!(
                "unexpected text after the call at position {}",
                parser.pos
            ));
        }
        Ok(call)
    }

    /// Evaluates the call.
    pub(crate) fn eval(&self, env: &Env<'_>) -> Result<Value, TaskFailure> {
        let name = self.func.name();
        let mut args = Vec::with_capacity(self.args.len());
        for arg in &self.args {
            args.push(match arg {
                Arg::Literal(v) => v.clone(),
                Arg::Path(p) => p.require(env.input, env.context, name)?,
                Arg::Call(c) => c.eval(env)?,
            });
        }
        let a = Args { name, args: &args };
        match self.func {
            Func::Format => format(&a),
            Func::StringToJson => serde_json::from_str(a.string(0)?)
                .map_err(|e| a.fail(format!("the argument is not JSON text: {e}"))),
            Func::JsonToString => serde_json::to_string(a.any(0))
                .map(Value::String)
                .map_err(|e| a.fail(e.to_string())),
            Func::Array => Ok(Value::Array(args.clone())),
            Func::ArrayPartition => {
                let items = a.array(0)?;
                let size = a.int(1)?;
                if size <= 0 {
                    return Err(a.fail("the chunk size must be a positive integer"));
                }
                let size = usize::try_from(size).unwrap_or(usize::MAX);
                Ok(Value::Array(
                    items
                        .chunks(size)
                        .map(|c| Value::Array(c.to_vec()))
                        .collect(),
                ))
            }
            Func::ArrayContains => Ok(Value::Bool(a.array(0)?.contains(a.any(1)))),
            Func::ArrayRange => array_range(&a),
            Func::ArrayGetItem => {
                let items = a.array(0)?;
                let index = a.int(1)?;
                usize::try_from(index)
                    .ok()
                    .and_then(|i| items.get(i))
                    .cloned()
                    .ok_or_else(|| {
                        a.fail(format!(
                            "index {index} is out of bounds for an array of {} items",
                            items.len()
                        ))
                    })
            }
            Func::ArrayLength => Ok(Value::from(a.array(0)?.len())),
            Func::ArrayUnique => {
                let mut unique: Vec<Value> = Vec::new();
                for item in a.array(0)? {
                    if !unique.contains(item) {
                        unique.push(item.clone());
                    }
                }
                Ok(Value::Array(unique))
            }
            Func::Base64Encode => Ok(Value::String(
                base64::engine::general_purpose::STANDARD.encode(a.string(0)?),
            )),
            Func::Base64Decode => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(a.string(0)?)
                    .map_err(|e| a.fail(format!("the argument is not base64: {e}")))?;
                String::from_utf8(bytes)
                    .map(Value::String)
                    .map_err(|_| a.fail("the decoded data is not UTF-8 text"))
            }
            Func::Hash => hash(&a),
            Func::JsonMerge => {
                let mut merged = a.object(0)?.clone();
                let second = a.object(1)?;
                if a.boolean(2)? {
                    return Err(a.fail(
                        "deep merge is not supported by Step Functions; the third argument must be false",
                    ));
                }
                for (k, v) in second {
                    merged.insert(k.clone(), v.clone());
                }
                Ok(Value::Object(merged))
            }
            Func::MathRandom => math_random(&a, env),
            Func::MathAdd => {
                let sum = a.rounded(0)?.checked_add(a.rounded(1)?);
                sum.map(Value::from)
                    .ok_or_else(|| a.fail("the sum is out of range"))
            }
            Func::StringSplit => {
                let text = a.string(0)?;
                let delimiters: Vec<char> = a.string(1)?.chars().collect();
                Ok(Value::Array(
                    text.split(|c| delimiters.contains(&c))
                        .filter(|part| !part.is_empty())
                        .map(|part| Value::String(part.to_string()))
                        .collect(),
                ))
            }
            Func::Uuid => {
                let bytes: [u8; 16] = std::array::from_fn(|_| env.random_u8());
                Ok(Value::String(
                    uuid::Builder::from_random_bytes(bytes)
                        .into_uuid()
                        .to_string(),
                ))
            }
        }
    }
}

/// Typed access to evaluated arguments, with `States.IntrinsicFailure`s
/// that name the function and the argument.
struct Args<'a> {
    name: &'static str,
    args: &'a [Value],
}

impl<'a> Args<'a> {
    fn fail(&self, why: impl std::fmt::Display) -> TaskFailure {
        TaskFailure::intrinsic(format!("{}: {why}", self.name))
    }

    fn wrong(&self, i: usize, expected: &str) -> TaskFailure {
        let got = self.args.get(i).map_or("nothing", type_name);
        self.fail(format!("argument {} must be {expected}, got {got}", i + 1))
    }

    /// Any value (`null` when absent; arity is checked at load time).
    fn any(&self, i: usize) -> &'a Value {
        self.args.get(i).unwrap_or(&Value::Null)
    }

    fn string(&self, i: usize) -> Result<&'a str, TaskFailure> {
        self.args
            .get(i)
            .and_then(Value::as_str)
            .ok_or_else(|| self.wrong(i, "a string"))
    }

    fn array(&self, i: usize) -> Result<&'a Vec<Value>, TaskFailure> {
        self.args
            .get(i)
            .and_then(Value::as_array)
            .ok_or_else(|| self.wrong(i, "an array"))
    }

    fn object(&self, i: usize) -> Result<&'a Map<String, Value>, TaskFailure> {
        self.args
            .get(i)
            .and_then(Value::as_object)
            .ok_or_else(|| self.wrong(i, "an object"))
    }

    fn boolean(&self, i: usize) -> Result<bool, TaskFailure> {
        self.args
            .get(i)
            .and_then(Value::as_bool)
            .ok_or_else(|| self.wrong(i, "a boolean"))
    }

    /// An integer (a number with no fractional part).
    fn int(&self, i: usize) -> Result<i64, TaskFailure> {
        let n = self.args.get(i).and_then(Value::as_number);
        n.and_then(number_to_i64)
            .ok_or_else(|| self.wrong(i, "an integer"))
    }

    /// Any number, rounded to the nearest integer (halves towards +inf, as
    /// Java's `Math.round`, which Step Functions uses).
    fn rounded(&self, i: usize) -> Result<i64, TaskFailure> {
        let n = self
            .args
            .get(i)
            .and_then(Value::as_number)
            .ok_or_else(|| self.wrong(i, "a number"))?;
        if let Some(v) = n.as_i64() {
            return Ok(v);
        }
        let f = n.as_f64().unwrap_or(f64::NAN);
        let r = (f + 0.5).floor();
        if r.is_finite() && r >= i64::MIN as f64 && r <= i64::MAX as f64 {
            Ok(r as i64)
        } else {
            Err(self.fail(format!("argument {} is out of range", i + 1)))
        }
    }
}

fn number_to_i64(n: &Number) -> Option<i64> {
    if let Some(v) = n.as_i64() {
        return Some(v);
    }
    let f = n.as_f64()?;
    (f.fract() == 0.0 && f >= i64::MIN as f64 && f <= i64::MAX as f64).then_some(f as i64)
}

fn format(a: &Args<'_>) -> Result<Value, TaskFailure> {
    let template: Vec<char> = a.string(0)?.chars().collect();
    let values = a.args.get(1..).unwrap_or_default();
    let mut out = String::new();
    let mut used = 0usize;
    let mut i = 0;
    while i < template.len() {
        let c = template[i];
        let next = template.get(i + 1).copied();
        if c == '\\' && matches!(next, Some('{') | Some('}') | Some('\\')) {
            out.push(next.unwrap_or(c));
            i += 2;
        } else if c == '{' && next == Some('}') {
            let value = values.get(used).ok_or_else(|| {
                a.fail(format!(
                    "the template has more {{}} placeholders than the {} values given",
                    values.len()
                ))
            })?;
            out.push_str(&format_value(value));
            used += 1;
            i += 2;
        } else {
            out.push(c);
            i += 1;
        }
    }
    if used != values.len() {
        return Err(a.fail(format!(
            "the template has {used} {{}} placeholders but {} values were given",
            values.len()
        )));
    }
    Ok(Value::String(out))
}

/// How `States.Format` renders a value: strings as they are, other scalars as
/// JSON, arrays as `[a, b]` and objects as `{k=v}` (Step Functions' Java-style
/// rendering).
fn format_value(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(format_value).collect();
            format!("[{}]", parts.join(", "))
        }
        Value::Object(map) => {
            let parts: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{k}={}", format_value(v)))
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
        other => other.to_string(),
    }
}

fn array_range(a: &Args<'_>) -> Result<Value, TaskFailure> {
    let (start, end, step) = (a.int(0)?, a.int(1)?, a.int(2)?);
    if step == 0 {
        return Err(a.fail("the step must not be 0"));
    }
    let span = i128::from(end) - i128::from(start);
    let step_wide = i128::from(step);
    if (span < 0) != (step_wide < 0) && span != 0 {
        return Ok(Value::Array(Vec::new()));
    }
    let count = span / step_wide + 1;
    if count > i128::from(MAX_RANGE_ITEMS) {
        return Err(a.fail(format!(
            "the range would have {count} items; at most {MAX_RANGE_ITEMS} are allowed"
        )));
    }
    Ok(Value::Array(
        (0..count)
            .map(|k| Value::from((i128::from(start) + k * step_wide) as i64))
            .collect(),
    ))
}

fn hash(a: &Args<'_>) -> Result<Value, TaskFailure> {
    let data = a.string(0)?.as_bytes();
    let algorithm = a.string(1)?;
    // The developer guide (States.Hash): "The hashing algorithm can be any
    // of the following: MD5, SHA-1, SHA-256, SHA-384, SHA-512".
    let digest = match algorithm {
        "MD5" => hex::encode(md5::Md5::digest(data)),
        "SHA-1" => hex::encode(sha1::Sha1::digest(data)),
        "SHA-256" => hex::encode(sha2::Sha256::digest(data)),
        "SHA-384" => hex::encode(sha2::Sha384::digest(data)),
        "SHA-512" => hex::encode(sha2::Sha512::digest(data)),
        other => {
            return Err(TaskFailure::runtime(format!(
                "{}: hash algorithm '{other}' is not one of MD5, SHA-1, SHA-256, SHA-384, SHA-512",
                a.name
            )))
        }
    };
    Ok(Value::String(digest))
}

fn math_random(a: &Args<'_>, env: &Env<'_>) -> Result<Value, TaskFailure> {
    let start = a.rounded(0)?;
    let end = a.rounded(1)?;
    if start > end {
        return Err(a.fail(format!(
            "the start ({start}) must not be greater than the end ({end})"
        )));
    }
    let value = if a.args.len() > 2 {
        let seed = a.rounded(2)?;
        fastrand::Rng::with_seed(seed as u64).i64(start..=end)
    } else {
        env.random_i64(start..=end)
    };
    Ok(Value::from(value))
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn rest_starts_with(&self, s: &str) -> bool {
        s.chars()
            .enumerate()
            .all(|(i, c)| self.chars.get(self.pos + i) == Some(&c))
    }

    fn call(&mut self, depth: usize) -> Result<Intrinsic, String> {
        if depth > MAX_NESTING {
            return Err(format!(
                "intrinsic functions can be nested at most {MAX_NESTING} deep"
            ));
        }
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '.')
        {
            self.pos += 1;
        }
        let name: String = self.chars[start..self.pos].iter().collect();
        let (_, func, min, max) = FUNCS
            .iter()
            .find(|(n, _, _, _)| *n == name)
            .copied()
            .ok_or_else(|| format!("unknown intrinsic function `{name}`"))?;
        self.skip_ws();
        if self.peek() != Some('(') {
            return Err(format!("expected `(` after `{name}`"));
        }
        self.pos += 1;
        let mut args = Vec::new();
        self.skip_ws();
        if self.peek() == Some(')') {
            self.pos += 1;
        } else {
            loop {
                self.skip_ws();
                args.push(self.arg(depth)?);
                self.skip_ws();
                match self.peek() {
                    Some(',') => self.pos += 1,
                    Some(')') => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(format!("expected `,` or `)` in the arguments of `{name}`")),
                }
            }
        }
        if args.len() < min || args.len() > max {
            let expected = if min == max {
                format!("{min}")
            } else if max == usize::MAX {
                format!("at least {min}")
            } else {
                format!("{min} to {max}")
            };
            return Err(format!(
                "`{name}` takes {expected} arguments, got {}",
                args.len()
            ));
        }
        Ok(Intrinsic { func, args })
    }

    fn arg(&mut self, depth: usize) -> Result<Arg, String> {
        match self.peek() {
            Some('\'') => self
                .string_literal()
                .map(|s| Arg::Literal(Value::String(s))),
            Some('$') => {
                let text = self.until_arg_end();
                Path::parse(text.trim()).map(Arg::Path)
            }
            _ if self.rest_starts_with("States.") => self.call(depth + 1).map(Arg::Call),
            Some(_) => {
                let text = self.until_arg_end();
                let text = text.trim();
                match serde_json::from_str::<Value>(text) {
                    Ok(v @ (Value::Number(_) | Value::Bool(_) | Value::Null)) => Ok(Arg::Literal(v)),
                    _ => Err(format!(
                        "`{text}` is not a valid argument (expected 'string', number, true, false, null, a path or a call)"
                    )),
                }
            }
            None => Err("unexpected end of the call".to_string()),
        }
    }

    /// A single-quoted string; `\'` is a quote and `\\` a backslash. Other
    /// escapes (`\{`, `\}`) are kept for `States.Format`.
    fn string_literal(&mut self) -> Result<String, String> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err("unterminated string literal".to_string()),
                Some('\'') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some('\\') => {
                    match self.chars.get(self.pos + 1).copied() {
                        Some('\'') => out.push('\''),
                        Some('\\') => out.push('\\'),
                        Some(other) => {
                            out.push('\\');
                            out.push(other);
                        }
                        None => return Err("unterminated string literal".to_string()),
                    }
                    self.pos += 2;
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    /// Text up to the next `,` or `)` outside brackets and quotes.
    fn until_arg_end(&mut self) -> String {
        let start = self.pos;
        let mut depth = 0usize;
        let mut quote: Option<char> = None;
        while let Some(c) = self.peek() {
            if let Some(q) = quote {
                if c == '\\' {
                    self.pos += 1;
                } else if c == q {
                    quote = None;
                }
            } else {
                match c {
                    '\'' | '"' => quote = Some(c),
                    '[' => depth += 1,
                    ']' => depth = depth.saturating_sub(1),
                    ',' | ')' if depth == 0 => break,
                    _ => {}
                }
            }
            self.pos += 1;
        }
        self.chars[start..self.pos.min(self.chars.len())]
            .iter()
            .collect()
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn parse_errors_are_reported() {
        assert!(Intrinsic::parse("States.Nope(1)")
            .unwrap_err()
            .contains("unknown"));
        assert!(Intrinsic::parse("States.ArrayLength()")
            .unwrap_err()
            .contains("takes 1"));
        assert!(Intrinsic::parse("States.Format('x'").is_err());
        assert!(Intrinsic::parse("States.Format('x) ").is_err());
        assert!(Intrinsic::parse("States.Array(foo)").is_err());
        assert!(Intrinsic::parse("States.UUID() x").is_err());
        let deep = format!("{}1{}", "States.Array(".repeat(11), ")".repeat(11));
        assert!(Intrinsic::parse(&deep).unwrap_err().contains("nested"));
        let ok = format!("{}1{}", "States.Array(".repeat(10), ")".repeat(10));
        assert!(Intrinsic::parse(&ok).is_ok());
    }

    #[test]
    fn parses_paths_with_commas_and_parens() {
        let call =
            Intrinsic::parse("States.Array($.a['x,y'], $.b[?(@.c > 1)], -1.5, null)").unwrap();
        assert_eq!(call.args.len(), 4);
        assert!(matches!(&call.args[0], Arg::Path(p) if p.text() == "$.a['x,y']"));
        assert!(matches!(&call.args[1], Arg::Path(p) if p.text() == "$.b[?(@.c > 1)]"));
        assert!(matches!(&call.args[2], Arg::Literal(v) if *v == serde_json::json!(-1.5)));
        assert!(matches!(&call.args[3], Arg::Literal(Value::Null)));
    }
}
