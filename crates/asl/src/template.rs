//! Payload templates: `Parameters`, `ResultSelector` and `ItemSelector`.
//! A key ending in `.$` takes its value from a path on the effective input,
//! a `$$.` path on the context object, or an intrinsic function call; the
//! `.$` is dropped from the output key. Other values are copied as they are,
//! with nested objects and arrays processed the same way.

use std::collections::BTreeSet;
use std::sync::Mutex;

use serde_json::{Map, Value};

use super::error::TaskFailure;
use super::intrinsics::{looks_like_call, Intrinsic};
use super::path::Path;

/// What templates, paths and intrinsics are evaluated against.
pub(crate) struct Env<'a> {
    /// The value `$` refers to.
    pub input: &'a Value,
    /// The value `$$` refers to.
    pub context: &'a Value,
    /// Randomness for `States.MathRandom` and `States.UUID`.
    pub rng: &'a Mutex<fastrand::Rng>,
}

impl Env<'_> {
    pub(crate) fn random_u8(&self) -> u8 {
        self.rng.lock().unwrap_or_else(|e| e.into_inner()).u8(..)
    }

    pub(crate) fn random_i64(&self, range: std::ops::RangeInclusive<i64>) -> i64 {
        self.rng
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .i64(range)
    }
}

/// A compiled payload template.
#[derive(Debug, Clone)]
pub enum Template {
    /// No dynamic part: the value is copied.
    Static(Value),
    /// An object with at least one dynamic member.
    Object(Vec<(String, Template)>),
    /// An array with at least one dynamic element.
    Array(Vec<Template>),
    /// `key.$: "$.path"` (or `$$.path`).
    Path {
        /// The field, for messages (`Parameters.key.$`).
        field: String,
        /// The path.
        path: Path,
    },
    /// `key.$: "States.Fn(...)"`.
    Call {
        /// The field, for messages.
        field: String,
        /// The call.
        call: Intrinsic,
    },
}

impl Template {
    /// Compiles `value` found at `field` (e.g. `Parameters`). On error returns
    /// the full name of the offending field and the reason.
    pub fn compile(value: &Value, field: &str) -> Result<Template, (String, String)> {
        match value {
            Value::Object(map) => {
                let mut members = Vec::with_capacity(map.len());
                let mut names = BTreeSet::new();
                let mut dynamic = false;
                for (key, v) in map {
                    let child_field = format!("{field}.{key}");
                    let (name, template) = if let Some(name) = key.strip_suffix(".$") {
                        dynamic = true;
                        let Some(text) = v.as_str() else {
                            return Err((
                                child_field,
                                "a `.$` field must be a string holding a path or an intrinsic function call"
                                    .to_string(),
                            ));
                        };
                        let template = if looks_like_call(text) {
                            Intrinsic::parse(text)
                                .map(|call| Template::Call {
                                    field: child_field.clone(),
                                    call,
                                })
                                .map_err(|e| (child_field.clone(), e))?
                        } else {
                            Path::parse(text)
                                .map(|path| Template::Path {
                                    field: child_field.clone(),
                                    path,
                                })
                                .map_err(|e| (child_field.clone(), e))?
                        };
                        (name.to_string(), template)
                    } else {
                        let template = Template::compile(v, &child_field)?;
                        dynamic |= !matches!(template, Template::Static(_));
                        (key.clone(), template)
                    };
                    if !names.insert(name.clone()) {
                        return Err((
                            child_field,
                            format!("the output key `{name}` is produced twice"),
                        ));
                    }
                    members.push((name, template));
                }
                Ok(if dynamic {
                    Template::Object(members)
                } else {
                    Template::Static(value.clone())
                })
            }
            Value::Array(items) => {
                let compiled = items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| Template::compile(v, &format!("{field}[{i}]")))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(
                    if compiled.iter().all(|t| matches!(t, Template::Static(_))) {
                        Template::Static(value.clone())
                    } else {
                        Template::Array(compiled)
                    },
                )
            }
            other => Ok(Template::Static(other.clone())),
        }
    }

    /// Builds the value. A path that matches nothing is `States.Runtime`;
    /// a failing intrinsic is `States.IntrinsicFailure`.
    pub(crate) fn render(&self, env: &Env<'_>) -> Result<Value, TaskFailure> {
        match self {
            Template::Static(v) => Ok(v.clone()),
            Template::Object(members) => {
                let mut out = Map::new();
                for (name, template) in members {
                    out.insert(name.clone(), template.render(env)?);
                }
                Ok(Value::Object(out))
            }
            Template::Array(items) => items
                .iter()
                .map(|t| t.render(env))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            Template::Path { field, path } => path.require(env.input, env.context, field),
            Template::Call { field, call } => call.eval(env).map_err(|mut f| {
                f.cause = Some(format!("{} (in field '{field}')", f.cause_text()));
                f
            }),
        }
    }
}
