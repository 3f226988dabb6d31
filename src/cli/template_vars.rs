//! `--var` and `--var-file` for Packer templates, as `packer build -var`
//! and `-var-file` take them, plus `PKR_VAR_<name>` from the environment.
//!
//! Precedence, lowest first (as Packer's): `PKR_VAR_*`, then each
//! `--var-file` in order, then each `--var` in order. `{{env}}` in a
//! template's `variables` section reads this process's environment. Plain
//! recipes ignore all of it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;

use super::CliError;
use crate::recipe::LoadOptions;

/// Template variable flags of `validate` and `build`.
#[derive(Debug, Args, Default, Clone)]
pub struct TemplateVars {
    /// A Packer template variable, `NAME=VALUE` (repeatable; like `packer
    /// -var`).
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
    /// A file of Packer template variables: JSON `{"name": "value"}`, or
    /// HCL `name = "value"` for a `.hcl` file such as `x.pkrvars.hcl`
    /// (repeatable; like `packer -var-file`).
    #[arg(long = "var-file", value_name = "FILE")]
    pub var_files: Vec<PathBuf>,
    /// Use only the template builders with these names (comma-separated or
    /// repeated; like `packer build -only`). A build uses exactly one.
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    pub only: Vec<String>,
    /// Use every template builder but these (like `packer build -except`).
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    pub except: Vec<String>,
}

fn parse_var(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("{text:?}: expected NAME=VALUE")),
    }
}

impl TemplateVars {
    /// The load options: variables by precedence and the environment.
    pub fn load_options(&self) -> Result<LoadOptions, CliError> {
        let env: BTreeMap<String, String> = std::env::vars().collect();
        let mut vars: BTreeMap<String, String> = env
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("PKR_VAR_")?.to_string(), v.clone())))
            .collect();
        for file in &self.var_files {
            let text = std::fs::read_to_string(file).map_err(|e| CliError::VarFile {
                file: file.clone(),
                reason: e.to_string(),
            })?;
            let is_hcl = file.to_string_lossy().ends_with(".hcl");
            let values: BTreeMap<String, serde_json::Value> = if is_hcl {
                hcl::from_str(&text).map_err(|e| CliError::VarFile {
                    file: file.clone(),
                    reason: format!("expected HCL `name = value` lines: {e}"),
                })?
            } else {
                serde_json::from_str(&text).map_err(|e| CliError::VarFile {
                    file: file.clone(),
                    reason: format!("expected a JSON object of variables: {e}"),
                })?
            };
            for (name, value) in values {
                let value = match value {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                vars.insert(name, value);
            }
        }
        vars.extend(self.vars.iter().cloned());
        Ok(LoadOptions {
            vars,
            env,
            now: None,
            only: self.only.clone(),
            except: self.except.clone(),
        })
    }
}
