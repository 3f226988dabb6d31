//! How every function reads its configuration: typed settings built once at
//! cold start from environment variables through [`EnvVars`], with a
//! [`ConfigError`] naming the variable that is missing or malformed. The
//! step functions ([`crate::lambda::StepConfig`]), the webhook
//! ([`crate::triggers::webhook::WebhookSettings`]), the reaper
//! ([`crate::triggers::reaper::ReaperSettings`]) and the lifecycle function
//! ([`TableConfig`]) all read theirs this way.

use std::collections::BTreeMap;

/// A configuration problem found at cold start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is not set.
    #[error("environment variable {name} is not set: {purpose}")]
    Missing {
        /// The variable.
        name: &'static str,
        /// What it is for.
        purpose: &'static str,
    },
    /// A variable has a value that cannot be used.
    #[error("environment variable {name}={value:?}: {reason}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: String,
    },
}

/// The variables a configuration is read from: the process environment, or
/// a map in tests. A variable set to blanks counts as unset.
#[derive(Clone, Debug, Default)]
pub struct EnvVars(BTreeMap<String, String>);

impl EnvVars {
    /// The process environment.
    pub fn from_process() -> EnvVars {
        EnvVars(std::env::vars().collect())
    }

    /// Given variables.
    pub fn from_map(vars: BTreeMap<String, String>) -> EnvVars {
        EnvVars(vars)
    }

    /// A variable's trimmed value, if set and not blank.
    pub fn optional(&self, name: &str) -> Option<String> {
        self.0
            .get(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    /// A variable that must be set; `purpose` says what it is for.
    pub fn required(
        &self,
        name: &'static str,
        purpose: &'static str,
    ) -> Result<String, ConfigError> {
        self.optional(name)
            .ok_or(ConfigError::Missing { name, purpose })
    }

    /// A variable parsed by `parse` (whose error says what is expected), or
    /// `default` when unset.
    pub fn parsed<T>(
        &self,
        name: &'static str,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        match self.optional(name) {
            None => Ok(default),
            Some(value) => parse(&value).map_err(|reason| ConfigError::Invalid {
                name,
                value,
                reason,
            }),
        }
    }

    /// A `true`/`false` (or `1`/`0`) variable.
    pub fn flag(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        self.parsed(name, default, |v| match v {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err("expected true or false".into()),
        })
    }
}

/// The configuration of a function that only needs the table
/// (`BAKEHOUSE_TABLE`): the lifecycle function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableConfig {
    /// The DynamoDB table of the registry and build records.
    pub table: String,
}

impl TableConfig {
    /// Reads it from `vars`.
    pub fn from_vars(vars: &EnvVars) -> Result<TableConfig, ConfigError> {
        Ok(TableConfig {
            table: vars.required(
                "BAKEHOUSE_TABLE",
                "the DynamoDB table of the registry and build records",
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> EnvVars {
        EnvVars::from_map(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn errors_name_the_variable_and_what_is_wrong() {
        let e = TableConfig::from_vars(&vars(&[("BAKEHOUSE_TABLE", "  ")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "environment variable BAKEHOUSE_TABLE is not set: the DynamoDB table of the registry and build records"
        );
        let e = vars(&[("X_FLAG", "yes")]).flag("X_FLAG", true).unwrap_err();
        assert_eq!(
            e.to_string(),
            "environment variable X_FLAG=\"yes\": expected true or false"
        );
        assert!(!vars(&[("X_FLAG", "0")]).flag("X_FLAG", true).unwrap());
        assert!(vars(&[]).flag("X_FLAG", true).unwrap());
        assert_eq!(
            TableConfig::from_vars(&vars(&[("BAKEHOUSE_TABLE", " t ")]))
                .unwrap()
                .table,
            "t"
        );
    }
}
