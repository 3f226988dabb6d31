//! Typed, validating access to the JSON objects of a definition, used by
//! the loader: every error names the state and the field.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::error::AslError;

/// A JSON object being parsed: typed field access that remembers which
/// fields were read, so [`Obj::finish`] can report unknown ones. Errors name
/// the state and the field (with `prefix`, e.g. `Retry[0].`).
pub(crate) struct Obj<'a> {
    pub(crate) state: &'a str,
    prefix: String,
    map: &'a Map<String, Value>,
    used: BTreeSet<&'a str>,
}

impl<'a> Obj<'a> {
    pub(crate) fn new(
        state: &'a str,
        prefix: impl Into<String>,
        value: &'a Value,
    ) -> Result<Self, AslError> {
        let prefix = prefix.into();
        let Some(map) = value.as_object() else {
            return Err(AslError::InvalidField {
                state: state.to_string(),
                field: if prefix.is_empty() {
                    "(definition)".to_string()
                } else {
                    prefix
                },
                reason: "must be a JSON object".to_string(),
            });
        };
        Ok(Obj {
            state,
            prefix,
            map,
            used: BTreeSet::new(),
        })
    }

    /// The full name of `name` for messages.
    pub(crate) fn field(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &'a str> {
        self.map.keys().map(String::as_str)
    }

    /// Reads a field and marks it as known.
    pub(crate) fn get(&mut self, name: &str) -> Option<&'a Value> {
        let (key, value) = self.map.get_key_value(name)?;
        self.used.insert(key.as_str());
        Some(value)
    }

    /// Reads a field without marking it.
    pub(crate) fn get_unmarked(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name)
    }

    pub(crate) fn string(&mut self, name: &str) -> Result<Option<&'a str>, AslError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(self.invalid(name, "must be a string")),
        }
    }

    pub(crate) fn req_string(&mut self, name: &str) -> Result<&'a str, AslError> {
        self.string(name)?.ok_or_else(|| self.missing(name))
    }

    /// A non-negative integer.
    pub(crate) fn uint(&mut self, name: &str) -> Result<Option<u64>, AslError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.invalid(name, "must be a non-negative integer")),
        }
    }

    pub(crate) fn number(&mut self, name: &str) -> Result<Option<f64>, AslError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.invalid(name, "must be a number")),
        }
    }

    pub(crate) fn boolean(&mut self, name: &str) -> Result<Option<bool>, AslError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.invalid(name, "must be true or false")),
        }
    }

    pub(crate) fn array(&mut self, name: &str) -> Result<Option<&'a Vec<Value>>, AslError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Array(items)) => Ok(Some(items)),
            Some(_) => Err(self.invalid(name, "must be an array")),
        }
    }

    /// The object in field `name`.
    pub(crate) fn child(&mut self, name: &str) -> Result<Obj<'a>, AslError> {
        let value = self.get(name).ok_or_else(|| self.missing(name))?;
        Obj::new(self.state, self.field(name), value)
    }

    /// The object at `name[index]` (the field must be an array).
    pub(crate) fn element(&mut self, name: &str, index: usize) -> Result<Obj<'a>, AslError> {
        let items = self.array(name)?.ok_or_else(|| self.missing(name))?;
        let value = items.get(index).ok_or_else(|| self.missing(name))?;
        Obj::new(self.state, format!("{}[{index}]", self.field(name)), value)
    }

    pub(crate) fn invalid(&self, name: &str, reason: impl Into<String>) -> AslError {
        AslError::InvalidField {
            state: self.state.to_string(),
            field: self.field(name),
            reason: reason.into(),
        }
    }

    pub(crate) fn missing(&self, name: &str) -> AslError {
        AslError::MissingField {
            state: self.state.to_string(),
            field: self.field(name),
        }
    }

    pub(crate) fn unsupported(&self, name: &str, reason: impl Into<String>) -> AslError {
        AslError::Unsupported {
            state: self.state.to_string(),
            field: self.field(name),
            reason: reason.into(),
        }
    }

    /// Fails on the first present field of `list` (field, reason).
    pub(crate) fn reject_unsupported(&self, list: &[(&str, &str)]) -> Result<(), AslError> {
        match list.iter().find(|(field, _)| self.has(field)) {
            Some((field, reason)) => Err(self.unsupported(field, *reason)),
            None => Ok(()),
        }
    }

    /// Fails on the first field that was never read.
    pub(crate) fn finish(self) -> Result<(), AslError> {
        match self.map.keys().find(|k| !self.used.contains(k.as_str())) {
            Some(unknown) => Err(AslError::UnknownField {
                state: self.state.to_string(),
                field: self.field(unknown),
            }),
            None => Ok(()),
        }
    }
}
