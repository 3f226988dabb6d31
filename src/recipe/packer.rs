//! Packer JSON templates accepted as recipes.
//!
//! A `.json` recipe with a top-level `builders` key is read as a Packer
//! template whose one selected builder (all of them less `-only`/`-except`,
//! as Packer selects) is `amazon-ebs` or `qemu` with `disk_image: true`
//! (see `packer_map/qemu.rs`), with `shell`, `file`, `salt-masterless` and
//! `ansible-local` provisioners (see `packer_map/config_tools.rs`);
//! post-processors are warned about. It is mapped onto [`Recipe`]; for
//! `amazon-ebs`:
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
use super::packer_map::{Builder, Converter};
use super::packer_types::Template;
use super::parse::{deserialize_text, locate_problem, structural_problem};
use super::{Format, LoadOptions};

/// Whether `text` is a JSON object with a `builders` key.
pub(crate) fn is_packer_template(text: &str) -> bool {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v.as_object().map(|o| o.contains_key("builders")))
        .unwrap_or(false)
}

/// Whether the file or directory at `path` is a Packer template: JSON
/// with a `builders` key, a `.pkr.hcl` file, or a directory of them.
pub fn is_template_path(path: &Path) -> bool {
    super::packer_hcl::is_hcl_template(path)
        || std::fs::read_to_string(path).is_ok_and(|t| is_packer_template(&t))
}

/// The converted recipe and a map from recipe field prefixes to template
/// field paths, for reporting.
pub(crate) struct Converted {
    pub recipe: Recipe,
    /// What a `manifest` post-processor asks the CLI to write.
    pub manifest: Option<super::packer_manifest::ManifestRequest>,
    /// The `shell-local` provisioners.
    pub local: Vec<super::shell_local::LocalStep>,
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
    convert_placed(text, file, dir, options, &|p| {
        locate_problem(p, text, Format::Json)
    })
}

/// [`convert`], with `place` saying where each problem (and warning) is:
/// a line in the JSON text, or the HCL2 address a generated template came
/// from.
pub(crate) fn convert_placed(
    text: &str,
    file: &Path,
    dir: &Path,
    options: &LoadOptions,
    place: &dyn Fn(Problem) -> Problem,
) -> Result<Converted, Vec<Problem>> {
    let located = |field: String, message: String| place(Problem::new(file, field, message));
    let (selected, kind) = select_builder(text, options).map_err(|problems| -> Vec<Problem> {
        problems.into_iter().map(|(f, m)| located(f, m)).collect()
    })?;
    let template: Template =
        deserialize_text(text, Format::Json, file).map_err(|p| vec![place(p)])?;
    let mut conv = Converter {
        problems: Vec::new(),
        warnings: Vec::new(),
        fields: Vec::new(),
        vars: BTreeMap::new(),
        options,
        dir: dir.to_string_lossy().into_owned(),
        build_name: String::new(),
        builder_type: "amazon-ebs",
        now: options.now.unwrap_or_else(chrono::Utc::now),
        manifest: None,
        local: Vec::new(),
    };
    // The selected builder, read on its own: problems are reported at its
    // own index (the converter names it `builders[0]`, renamed below).
    let value = template.builders.get(selected).cloned().unwrap_or_default();
    let read_error = |e: serde_path_to_error::Error<serde_json::Error>| {
        let path = match e.path().to_string() {
            p if p == "." => String::new(),
            p => format!(".{p}"),
        };
        vec![place(structural_problem(
            file,
            text,
            Format::Json,
            &format!("builders[{selected}]{path}"),
            &e.inner().to_string(),
            None,
        ))]
    };
    let builder = match kind {
        BuilderKind::AmazonEbs => {
            Builder::AmazonEbs(serde_path_to_error::deserialize(value).map_err(read_error)?)
        }
        BuilderKind::Qemu => {
            Builder::Qemu(serde_path_to_error::deserialize(value).map_err(read_error)?)
        }
    };
    let recipe = conv.recipe(&template, &builder);
    for (field, message) in &conv.warnings {
        let warning = located(builder_field(field.clone(), selected), message.clone());
        tracing::warn!("{warning}");
    }
    if conv.problems.is_empty() {
        Ok(Converted {
            recipe,
            manifest: conv.manifest.take(),
            local: std::mem::take(&mut conv.local),
            fields: conv
                .fields
                .into_iter()
                .map(|(r, t)| (r, builder_field(t, selected)))
                .collect(),
        })
    } else {
        Err(conv
            .problems
            .into_iter()
            .map(|(f, m)| located(builder_field(f, selected), m))
            .collect())
    }
}

/// The builder types a template can build with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BuilderKind {
    /// `amazon-ebs`: an AWS build.
    AmazonEbs,
    /// `qemu` with `disk_image: true`: a local build on the disk.
    Qemu,
}

/// The builder a build uses: the one left after `-only`/`-except`
/// ([`LoadOptions::only`], [`LoadOptions::except`]), which must be exactly
/// one, of type `amazon-ebs` or `qemu`. Problems make the typed parse
/// pointless.
fn select_builder(
    text: &str,
    options: &LoadOptions,
) -> Result<(usize, BuilderKind), Vec<(String, String)>> {
    let Some(builders) = serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|doc| doc.get("builders").and_then(Value::as_array).cloned())
    else {
        // The typed parse names what is wrong with `builders`.
        return Ok((0, BuilderKind::AmazonEbs));
    };
    let mut problems = Vec::new();
    let mut names = Vec::new();
    for (i, b) in builders.iter().enumerate() {
        let kind = b.get("type").and_then(Value::as_str);
        if kind.is_none() {
            problems.push((
                field_index("builders", i),
                "required field `type` is missing".to_string(),
            ));
        }
        let name = b
            .get("name")
            .and_then(Value::as_str)
            .or(kind)
            .unwrap_or_default()
            .to_string();
        names.push(name);
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let for_unknown = |given: &[String], flag: &str| -> Vec<(String, String)> {
        given
            .iter()
            .filter(|n| !names.contains(n))
            .map(|n| {
                (
                    "builders".to_string(),
                    format!(
                        "{flag} {n}: no builder has that name (builders: {})",
                        names.join(", ")
                    ),
                )
            })
            .collect()
    };
    problems.extend(for_unknown(&options.only, "--only"));
    problems.extend(for_unknown(&options.except, "--except"));
    if !problems.is_empty() {
        return Err(problems);
    }
    let selected: Vec<usize> = (0..builders.len())
        .filter(|i| {
            (options.only.is_empty() || options.only.contains(&names[*i]))
                && !options.except.contains(&names[*i])
        })
        .collect();
    let &[i] = selected.as_slice() else {
        let picked: Vec<&str> = selected.iter().map(|i| names[*i].as_str()).collect();
        return Err(vec![(
            "builders".to_string(),
            if picked.is_empty() {
                format!(
                    "no builder is left to build (builders: {})",
                    names.join(", ")
                )
            } else {
                format!(
                    "a build makes one image, and {} builders are selected ({}): pick one with --only NAME or leave out the others with --except NAME",
                    picked.len(),
                    picked.join(", ")
                )
            },
        )]);
    };
    let field = field_key(&field_index("builders", i), "type");
    match builders[i].get("type").and_then(Value::as_str) {
        Some("amazon-ebs") | None => Ok((i, BuilderKind::AmazonEbs)),
        Some("qemu") => Ok((i, BuilderKind::Qemu)),
        Some("null") => Err(vec![(
            field,
            "the `null` builder makes no image, and a bakehouse build always captures one: select another builder with --only/--except, or run the provisioners in a recipe".to_string(),
        )]),
        Some(other) => Err(vec![(
            field,
            format!("builder type `{other}` is not supported (only `amazon-ebs`, and `qemu` with `disk_image: true`)"),
        )]),
    }
}

/// Renames `builders[0]` in a field path to the selected builder's index.
fn builder_field(field: String, selected: usize) -> String {
    match field.strip_prefix("builders[0]") {
        Some(rest) if selected != 0 => format!("builders[{selected}]{rest}"),
        _ => field,
    }
}
