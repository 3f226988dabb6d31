//! Packer JSON templates accepted as recipes.
//!
//! A `.json` recipe with a top-level `builders` key is read as a Packer
//! template with exactly one `amazon-ebs` builder, `shell` and `file`
//! provisioners and no post-processors, then mapped onto [`Recipe`]:
//!
//! - `name`: the `bakehouse_name` variable when declared; otherwise derived
//!   from `ami_name` with `{{user ...}}` substituted and every other template
//!   expression (`isotime`, `timestamp`, ...) removed, lowercased, characters
//!   outside `[a-z0-9._-]` turned into `-`, runs of `-` collapsed and
//!   separators trimmed (`training-amazon-linux-{{isotime | clean_resource_name}}`
//!   gives `training-amazon-linux`). `label`: the `bakehouse_label` variable,
//!   else `ami_description`. `version`: the `bakehouse_version` variable as an
//!   exact version, else `bump: minor`.
//! - `source_ami` / `source_ami_filter` become `base.image` / `base.filter`
//!   (`filters.name` is required, other filters are kept).
//! - `region` plus `ami_regions` become `publish.regions`, `ami_users`
//!   `publish.accounts`, `tags` `publish.tags`; `run_tags` the builder tags.
//! - `encrypt_boot: true` without `kms_key_id` uses `alias/aws/ebs`.
//! - `ssh_username`, other `communicator` settings and `vpc_id` are accepted
//!   and ignored (bakehouse talks to the builder through SSM); `communicator:
//!   winrm` marks the image as Windows.
//! - a shell provisioner's `scripts` become one shell provisioner each;
//!   `environment_vars` (`K=V`) become `env`; `only`/`except` are applied
//!   against the builder's name.
//! - file paths are relative to the template's directory.
//! - `-var` overrides, `env` values and the build time come from
//!   [`LoadOptions`]; `env` is only allowed in variable defaults, as in Packer.
//!
//! Problems found in the mapped recipe are reported against the template's
//! own field paths where a mapping is known.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::error::Problem;
use super::locate::{field_index, field_key};
use super::model::Recipe;
use super::packer_map::Converter;
use super::packer_types::Template;
use super::parse::{deserialize_text, locate_problem};
use super::{Format, LoadOptions};

/// Whether `text` is a JSON object with a `builders` key.
pub(crate) fn is_packer_template(text: &str) -> bool {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v.as_object().map(|o| o.contains_key("builders")))
        .unwrap_or(false)
}

/// The converted recipe and a map from recipe field prefixes to template
/// field paths, for reporting.
pub(crate) struct Converted {
    pub recipe: Recipe,
    pub fields: Vec<(String, String)>,
}

impl Converted {
    /// Rewrites a recipe field path to the template path it came from.
    pub fn template_field(&self, field: &str) -> String {
        let best = self
            .fields
            .iter()
            .filter(|(recipe, _)| {
                field == recipe
                    || field.starts_with(&format!("{recipe}."))
                    || field.starts_with(&format!("{recipe}["))
            })
            .max_by_key(|(recipe, _)| recipe.len());
        match best {
            Some((recipe, template)) => format!("{template}{}", &field[recipe.len()..]),
            None => field.to_string(),
        }
    }
}

/// Reads the template in `text` and maps it onto a recipe.
pub(crate) fn convert(
    text: &str,
    file: &Path,
    dir: &Path,
    options: &LoadOptions,
) -> Result<Converted, Vec<Problem>> {
    let located = |field: String, message: String| {
        locate_problem(Problem::new(file, field, message), text, Format::Json)
    };
    if let Some(problems) = check_builder_types(text) {
        return Err(problems.into_iter().map(|(f, m)| located(f, m)).collect());
    }
    let template: Template = deserialize_text(text, Format::Json, file).map_err(|p| vec![p])?;
    let mut conv = Converter {
        problems: Vec::new(),
        warnings: Vec::new(),
        fields: Vec::new(),
        vars: BTreeMap::new(),
        options,
        dir: dir.to_string_lossy().into_owned(),
        build_name: String::new(),
        now: options.now.unwrap_or_else(chrono::Utc::now),
    };
    let recipe = conv.recipe(&template);
    for (field, message) in &conv.warnings {
        let warning = located(field.clone(), message.clone());
        tracing::warn!("{warning}");
    }
    if conv.problems.is_empty() {
        Ok(Converted {
            recipe,
            fields: conv.fields,
        })
    } else {
        Err(conv
            .problems
            .into_iter()
            .map(|(f, m)| located(f, m))
            .collect())
    }
}

/// Problems with the builder list that make the typed parse pointless.
fn check_builder_types(text: &str) -> Option<Vec<(String, String)>> {
    let doc: Value = serde_json::from_str(text).ok()?;
    let builders = doc.get("builders")?.as_array()?;
    let mut problems = Vec::new();
    if builders.len() != 1 {
        problems.push((
            "builders".to_string(),
            format!("exactly one builder is supported, found {}", builders.len()),
        ));
    }
    for (i, b) in builders.iter().enumerate() {
        match b.get("type").and_then(Value::as_str) {
            Some("amazon-ebs") => {}
            Some(other) => problems.push((
                field_key(&field_index("builders", i), "type"),
                format!("builder type `{other}` is not supported (only `amazon-ebs`)"),
            )),
            None => problems.push((
                field_index("builders", i),
                "required field `type` is missing".to_string(),
            )),
        }
    }
    (!problems.is_empty()).then_some(problems)
}
