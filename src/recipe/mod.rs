//! Recipes: what to build, and how to check it.
//!
//! A recipe (`recipes/*.yaml`, `.yml` or `.json`) names a base image, the
//! provisioners that turn it into the wanted image, the clean-up applied
//! before capture and where the result is published. A `.json` file with a
//! top-level `builders` key is a Packer template and is mapped onto the same
//! model ([`packer`]).
//!
//! - [`load`] / [`parse()`] read and check a recipe; every problem found is
//!   returned at once as [`Problem`]s (`file:line:column: field: message`).
//!   Structural mistakes (unknown or mistyped fields) are reported together:
//!   the field a mistake names is dropped and the rest parsed again, so the
//!   semantic checks (names, references, missing files, schedules, regions,
//!   ...) still run. Only a syntax error, a missing required field or a
//!   mistake that names a whole list item stops the structural pass there.
//! - [`clean_script`] renders the clean policy; [`verify_tree`] checks a tree.
//! - [`bake_key()`] hashes everything that determines the image;
//!   [`input_files`] lists the files it reads.
//!
//! Relative paths in a recipe (scripts, file sources, state trees, playbooks,
//! a local base) are relative to the recipe file's directory.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

pub mod bake_key;
pub mod checks;
pub mod clean;
pub mod clean_verify;
pub mod clean_windows;
mod error;
pub mod go_time;
pub mod image_view;
pub mod limits;
mod locate;
pub mod mask;
mod model;
pub mod packer;
mod packer_hcl;
mod packer_hcl_funcs;
pub(crate) mod packer_ignored;
pub mod packer_inspect;
pub mod packer_manifest;
mod packer_map;
pub mod packer_template;
mod packer_types;
mod parse;
mod raw;
pub mod schedule;
pub mod schema;
pub mod shell_local;
mod validate;

pub use bake_key::{bake_key, input_files, InputFile, BAKE_KEY_VERSION};
pub use checks::{LocalBaseKind, RegistryRef};
pub use clean::{clean_script, CleanItem};
pub use clean_verify::{verify, verify_archive, verify_tree, Leftover};
pub use error::{Problem, RecipeError};
pub use model::{
    AnsibleProvisioner, Base, BaseFilter, BuilderSettings, BumpPart, CleanPolicy, DiskSettings,
    DiskTable, FileProvisioner, OsKind, PasswordMode, Provisioner, Publish, Recipe, Retention,
    SaltProvisioner, ShellProvisioner, ShellSource, VersionPolicy,
};
pub use schedule::Schedule;

/// The directory a recipe's relative paths start from: a template
/// directory itself, else the file's directory (`.` for a bare name).
pub(crate) fn base_dir(path: &Path) -> PathBuf {
    if path.is_dir() {
        return path.to_path_buf();
    }
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Quotes a string for POSIX sh (single quotes, `'` as `'\''`).
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The syntax a recipe file is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.yaml` or `.yml`.
    Yaml,
    /// `.json` (a recipe, or a Packer template when it has `builders`).
    Json,
}

impl Format {
    /// The format named by the file extension, if any.
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "yaml" | "yml" => Some(Format::Yaml),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

/// Inputs for Packer templates: `-var` overrides, the environment `{{env}}`
/// may read (explicit, so loading stays reproducible), and the build time
/// for `{{isotime}}`/`{{timestamp}}` (default: now). Plain recipes ignore
/// them.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Variable overrides, like `packer build -var name=value`.
    pub vars: BTreeMap<String, String>,
    /// Environment visible to `{{env `NAME`}}`; unset names are empty.
    pub env: BTreeMap<String, String>,
    /// The build time; `None` means the current time.
    pub now: Option<DateTime<Utc>>,
    /// Build only the builders with these names (`packer build -only`; a
    /// builder's name is its `name`, else its `type`).
    pub only: Vec<String>,
    /// Build all builders but these (`packer build -except`).
    pub except: Vec<String>,
}

/// A checked recipe and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedRecipe {
    /// The recipe.
    pub recipe: Recipe,
    /// The file it was read from.
    pub path: PathBuf,
    /// The directory relative paths in the recipe start from.
    pub dir: PathBuf,
    /// A Packer template's `manifest` post-processor: the file the CLI
    /// writes after a successful build.
    pub packer_manifest: Option<packer_manifest::ManifestRequest>,
    /// A Packer template's `shell-local` provisioners: run by `bakehouse
    /// build` on its own machine, sandboxed, before the build.
    pub shell_local: Vec<shell_local::LocalStep>,
}

impl LoadedRecipe {
    /// A path written in the recipe, resolved against [`Self::dir`].
    pub fn resolve(&self, written: &str) -> PathBuf {
        self.dir.join(written)
    }

    /// The local base file or directory, when the base is a `path`.
    pub fn base_path(&self) -> Option<PathBuf> {
        match &self.recipe.base {
            Base::Path(p) => Some(self.resolve(p)),
            _ => None,
        }
    }
}

/// Reads and checks the recipe at `path` (format from its extension).
pub fn load(path: &Path) -> Result<LoadedRecipe, RecipeError> {
    load_with(path, &LoadOptions::default())
}

/// [`load`] with Packer template options.
pub fn load_with(path: &Path, options: &LoadOptions) -> Result<LoadedRecipe, RecipeError> {
    if packer_hcl::is_hcl_template(path) {
        return load_hcl(path, options);
    }
    let format = Format::from_path(path).ok_or_else(|| RecipeError::UnsupportedFormat {
        path: path.to_path_buf(),
    })?;
    let text = fs::read_to_string(path).map_err(|source| RecipeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_with(&text, format, path, options)
}

/// Parses and checks recipe `text` that was read from `origin` (used for
/// messages and to resolve relative paths).
pub fn parse(text: &str, format: Format, origin: &Path) -> Result<LoadedRecipe, RecipeError> {
    parse_with(text, format, origin, &LoadOptions::default())
}

/// [`parse()`] with Packer template options.
pub fn parse_with(
    text: &str,
    format: Format,
    origin: &Path,
    options: &LoadOptions,
) -> Result<LoadedRecipe, RecipeError> {
    if let Some(problem) = limits::check(text, format, origin) {
        return Err(RecipeError::Parse(vec![problem]));
    }
    let dir = base_dir(origin);
    let (recipe, problems) = if format == Format::Json && packer::is_packer_template(text) {
        let converted = packer::convert(text, origin, &dir, options).map_err(RecipeError::Parse)?;
        let problems = validate::check(&converted.recipe, origin, &dir)
            .into_iter()
            .map(|mut p| {
                p.field = converted.template_field(&p.field);
                parse::locate_problem(p, text, format)
            })
            .collect();
        (
            (converted.recipe, converted.manifest, converted.local),
            problems,
        )
    } else {
        let (recipe, mut problems) =
            parse::parse_recipe(text, format, origin).map_err(RecipeError::Parse)?;
        problems.extend(
            validate::check(&recipe, origin, &dir)
                .into_iter()
                .map(|p| parse::locate_problem(p, text, format)),
        );
        ((recipe, None, Vec::new()), problems)
    };
    finish(recipe, problems, origin, dir)
}

/// A Packer HCL2 template (a `.pkr.hcl` file or a directory of them): read
/// as its equivalent JSON template, problems named by HCL address.
fn load_hcl(path: &Path, options: &LoadOptions) -> Result<LoadedRecipe, RecipeError> {
    let template = packer_hcl::to_json_template(path, options).map_err(RecipeError::Parse)?;
    let text = serde_json::to_string_pretty(&template.json).unwrap_or_default();
    let dir = base_dir(path);
    // Variables are evaluated already; the JSON converter must not apply
    // the text overrides again.
    let json_options = LoadOptions {
        vars: BTreeMap::new(),
        ..options.clone()
    };
    let place = |p| template.place(p);
    let converted = packer::convert_placed(&text, path, &dir, &json_options, &place)
        .map_err(RecipeError::Parse)?;
    let problems = validate::check(&converted.recipe, path, &dir)
        .into_iter()
        .map(|mut p| {
            p.field = converted.template_field(&p.field);
            template.place(p)
        })
        .collect();
    finish(
        (converted.recipe, converted.manifest, converted.local),
        problems,
        path,
        dir,
    )
}

/// A recipe with what only a Packer template has: its manifest
/// post-processor and shell-local provisioners.
type TemplateParts = (
    Recipe,
    Option<packer_manifest::ManifestRequest>,
    Vec<shell_local::LocalStep>,
);

/// The loaded recipe, or every problem in file order.
fn finish(
    (recipe, packer_manifest, shell_local): TemplateParts,
    mut problems: Vec<Problem>,
    origin: &Path,
    dir: PathBuf,
) -> Result<LoadedRecipe, RecipeError> {
    if problems.is_empty() {
        Ok(LoadedRecipe {
            recipe,
            path: origin.to_path_buf(),
            dir,
            packer_manifest,
            shell_local,
        })
    } else {
        problems.sort_by_key(|p| (p.line.unwrap_or(usize::MAX), p.column.unwrap_or(0)));
        problems.dedup();
        Err(RecipeError::Invalid(problems))
    }
}

/// Loads every file in `paths` and returns all their problems (empty when
/// every recipe is valid).
pub fn validate_files<I, P>(paths: I) -> Vec<Problem>
where
    I: IntoIterator<Item = P>,
    P: AsRef<Path>,
{
    validate_files_with(paths, &LoadOptions::default())
}

/// [`validate_files`] with Packer template variables and environment.
pub fn validate_files_with<I, P>(paths: I, options: &LoadOptions) -> Vec<Problem>
where
    I: IntoIterator<Item = P>,
    P: AsRef<Path>,
{
    paths
        .into_iter()
        .flat_map(|p| match load_with(p.as_ref(), options) {
            Ok(loaded) => check_local_base(&loaded).into_iter().collect(),
            Err(e) => e.problems(),
        })
        .collect()
}

/// The local base of a loaded recipe checked read-only, as `validate` and
/// a local build do before anything starts: it exists, and a file's
/// content is of the kind its name says (qcow2 magic, gzip, zstd, tar
/// header, a raw image of whole 512-byte sectors). `None` when fine or
/// not a local base.
pub fn check_local_base(loaded: &LoadedRecipe) -> Option<Problem> {
    let Base::Path(written) = &loaded.recipe.base else {
        return None;
    };
    let path = loaded.resolve(written);
    let problem = |message: String| {
        let text = fs::read_to_string(&loaded.path).unwrap_or_default();
        let format = Format::from_path(&loaded.path).unwrap_or(Format::Yaml);
        Some(parse::locate_problem(
            Problem::new(&loaded.path, "base.path", message),
            &text,
            format,
        ))
    };
    let meta = match fs::metadata(&path) {
        Ok(m) => m,
        Err(e) => return problem(format!("{written}: {} ({e})", path.display())),
    };
    if meta.is_dir() {
        return None;
    }
    let mut head = [0u8; 512];
    let read = fs::File::open(&path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .unwrap_or(0);
    let head = &head[..read];
    let ok = match LocalBaseKind::from_path(&path) {
        Some(LocalBaseKind::Qcow2) => head.starts_with(b"QFI\xfb"),
        Some(LocalBaseKind::TarGz) => head.starts_with(&[0x1f, 0x8b]),
        Some(LocalBaseKind::TarZst) => head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]),
        Some(LocalBaseKind::Tar) => head.len() == 512 && &head[257..262] == b"ustar",
        Some(LocalBaseKind::Raw) => meta.len() >= 64 * 1024 && meta.len() % 512 == 0,
        Some(LocalBaseKind::Directory) | None => false,
    };
    if ok {
        None
    } else {
        problem(format!(
            "{written}: {} is not a {} (its content does not match its name)",
            path.display(),
            match LocalBaseKind::from_path(&path) {
                Some(LocalBaseKind::Qcow2) => "qcow2 image",
                Some(LocalBaseKind::TarGz) => "gzip-compressed tar",
                Some(LocalBaseKind::TarZst) => "zstd-compressed tar",
                Some(LocalBaseKind::Tar) => "tar archive",
                Some(LocalBaseKind::Raw) =>
                    "raw disk or filesystem image (whole 512-byte sectors, at least 64 KiB)",
                _ => "directory or image",
            }
        ))
    }
}

#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests_bake_key;
#[cfg(test)]
mod tests_clean;
#[cfg(test)]
mod tests_load;
#[cfg(test)]
mod tests_packer;
#[cfg(test)]
mod tests_packer_builders;
#[cfg(test)]
mod tests_props;
#[cfg(test)]
mod tests_schedule;
#[cfg(test)]
mod tests_validate;
