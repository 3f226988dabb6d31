//! The bake key: a content hash of everything that determines an image.
//!
//! Hex SHA-256 over this length-prefixed encoding (`<n>:` is the byte
//! length of the value that follows):
//!
//! ```text
//! bakehouse-bake-key/v1\n
//! base <n>:<resolved base image id>\n
//! recipe <n>:<canonical JSON of the recipe>\n
//! clean <n>:<the generated clean script>\n
//! file <n>:<name> <mode> <sha256 of content>\n      one per input file
//! ```
//!
//! - The canonical JSON has object keys sorted and no whitespace; it leaves
//!   out `label`, `schedule`, `paths` and `retain`, which say when and how an
//!   image is listed, rebuilt or removed, not what is in it. Everything else counts, including
//!   `publish` (a cache hit returns the registered version with its
//!   artifacts, so the set of regions and accounts must match) and `test`.
//! - The generated clean script counts, so a change in what cleaning does
//!   changes every key.
//! - Input files are, per provisioner in order: a shell `script`; a file
//!   `source` (a directory: every file below it in sorted order); a salt
//!   `state_tree` (every file); an ansible `playbook` and everything in its
//!   directory. A file's name is the path as written in the recipe joined
//!   with its path inside the directory (`/` separated); its mode is `755`
//!   when any execute bit is set, else `644` (what git keeps); a symlink is
//!   `link` with the hash of its target path.
//! - For a local `base.path`, pass the base's content digest as
//!   `resolved_base`, not its path.
//!
//! Bump [`BAKE_KEY_VERSION`] whenever this encoding changes.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::clean::clean_script;
use super::error::RecipeError;

use super::LoadedRecipe;

/// Version tag at the start of the encoding.
pub const BAKE_KEY_VERSION: &str = "bakehouse-bake-key/v1";

/// One file hashed into the bake key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFile {
    /// Where the file is on disk.
    pub path: PathBuf,
    /// Its name in the encoding: as written in the recipe, plus the path
    /// inside a directory source.
    pub name: String,
    /// `644`, `755` or `link`.
    pub mode: &'static str,
}

/// The bake key of `recipe` built on `resolved_base`, as 64 hex digits.
pub fn bake_key(recipe: &LoadedRecipe, resolved_base: &str) -> Result<String, RecipeError> {
    let mut hasher = Sha256::new();
    hasher.update(BAKE_KEY_VERSION.as_bytes());
    hasher.update(b"\n");
    field(&mut hasher, "base", resolved_base);
    field(&mut hasher, "recipe", &canonical_recipe(recipe)?);
    field(
        &mut hasher,
        "clean",
        &clean_script(&recipe.recipe.clean, recipe.recipe.os),
    );
    for input in input_entries(recipe)? {
        let digest = file_digest(&input)?;
        field(
            &mut hasher,
            "file",
            &format!("{} {} {digest}", input.name, input.mode),
        );
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The files a build of `recipe` reads: the recipe file itself, then every
/// provisioner input (see the module documentation), without duplicates.
/// A push touching any of them concerns the recipe.
pub fn input_files(recipe: &LoadedRecipe) -> Result<Vec<PathBuf>, RecipeError> {
    let mut out = vec![recipe.path.clone()];
    for input in input_entries(recipe)? {
        if !out.contains(&input.path) {
            out.push(input.path);
        }
    }
    Ok(out)
}

fn field(hasher: &mut Sha256, tag: &str, value: &str) {
    hasher.update(format!("{tag} {}:", value.len()).as_bytes());
    hasher.update(value.as_bytes());
    hasher.update(b"\n");
}

/// The recipe as canonical JSON, without the fields that do not shape the
/// image.
pub fn canonical_recipe(recipe: &LoadedRecipe) -> Result<String, RecipeError> {
    let mut r = recipe.recipe.clone();
    r.label = None;
    r.schedule = None;
    r.paths.clear();
    r.retain = None;
    let value = serde_json::to_value(&r).map_err(|e| {
        RecipeError::Invalid(vec![super::error::Problem::new(
            &recipe.path,
            "",
            format!("cannot encode recipe: {e}"),
        )])
    })?;
    let mut out = String::new();
    write_canonical(&value, &mut out);
    Ok(out)
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                if let Some(v) = map.get(key) {
                    write_canonical(v, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Every provisioner input, in encoding order.
pub fn input_entries(recipe: &LoadedRecipe) -> Result<Vec<InputFile>, RecipeError> {
    let mut out = Vec::new();
    for p in &recipe.recipe.provisioners {
        for input in p.inputs() {
            collect(&recipe.dir, &input, &mut out)?;
        }
    }
    Ok(out)
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> RecipeError + '_ {
    move |source| RecipeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Adds `written` (a file or directory below `dir`) to `out`.
fn collect(dir: &Path, written: &str, out: &mut Vec<InputFile>) -> Result<(), RecipeError> {
    let path = dir.join(written);
    let name = written.trim_end_matches('/').to_string();
    walk(&path, &name, out)
}

fn walk(path: &Path, name: &str, out: &mut Vec<InputFile>) -> Result<(), RecipeError> {
    let meta = fs::symlink_metadata(path).map_err(io_error(path))?;
    if meta.file_type().is_symlink() {
        out.push(InputFile {
            path: path.to_path_buf(),
            name: name.to_string(),
            mode: "link",
        });
    } else if meta.is_dir() {
        let mut entries: Vec<(String, PathBuf)> = fs::read_dir(path)
            .map_err(io_error(path))?
            .map(|e| e.map(|e| (e.file_name().to_string_lossy().into_owned(), e.path())))
            .collect::<Result<_, _>>()
            .map_err(io_error(path))?;
        entries.sort();
        for (child_name, child) in entries {
            walk(&child, &format!("{name}/{child_name}"), out)?;
        }
    } else if meta.is_file() {
        out.push(InputFile {
            path: path.to_path_buf(),
            name: name.to_string(),
            mode: if executable(&meta) { "755" } else { "644" },
        });
    }
    Ok(())
}

#[cfg(unix)]
fn executable(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn executable(_meta: &fs::Metadata) -> bool {
    false
}

fn file_digest(input: &InputFile) -> Result<String, RecipeError> {
    let mut hasher = Sha256::new();
    if input.mode == "link" {
        let target = fs::read_link(&input.path).map_err(io_error(&input.path))?;
        hasher.update(target.to_string_lossy().as_bytes());
    } else {
        let mut file = fs::File::open(&input.path).map_err(io_error(&input.path))?;
        io::copy(&mut file, &mut hasher).map_err(io_error(&input.path))?;
    }
    Ok(hex::encode(hasher.finalize()))
}
