//! Moving recipes between machines: a loaded recipe becomes a
//! [`RecipeBundle`] (recipe document + provisioner files) that travels in the
//! execution input and the build record, and is written back to a directory
//! wherever a step runs.

use std::collections::BTreeMap;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use crate::build::{BundledFile, RecipeBundle};
use crate::recipe::{self, Base, LoadedRecipe, RecipeError};

use super::StepError;

/// Largest bundle (encoded) accepted: what fits a Step Functions input and
/// a DynamoDB item with room to spare.
pub const MAX_BUNDLE_BYTES: usize = 200 * 1024;

/// Name of the recipe document inside a materialised bundle.
pub const RECIPE_FILE: &str = "recipe.json";

/// Packs a loaded recipe and every file its provisioners use. A relative
/// local base path is made absolute so the bundle can be unpacked elsewhere
/// on the same machine.
pub fn bundle(loaded: &LoadedRecipe) -> Result<RecipeBundle, StepError> {
    let mut recipe = loaded.recipe.clone();
    if let Base::Path(p) = &recipe.base {
        let path = loaded.resolve(p);
        let path = std::path::absolute(&path).map_err(|e| io(&path, e))?;
        recipe.base = Base::Path(path.display().to_string());
    }
    let mut files = BTreeMap::new();
    for input in recipe::bake_key::input_entries(loaded)? {
        let file = if input.mode == "link" {
            let target = std::fs::read_link(&input.path).map_err(|e| io(&input.path, e))?;
            BundledFile {
                content: String::new(),
                executable: false,
                link: Some(target.display().to_string()),
            }
        } else {
            let bytes = std::fs::read(&input.path).map_err(|e| io(&input.path, e))?;
            BundledFile {
                content: BASE64.encode(bytes),
                executable: input.mode == "755",
                link: None,
            }
        };
        files.insert(input.name, file);
    }
    let recipe = serde_json::to_value(&recipe)
        .map_err(|e| StepError::NonRetryable(format!("cannot encode recipe: {e}")))?;
    let bundle = RecipeBundle { recipe, files };
    let size = serde_json::to_vec(&bundle)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_BUNDLE_BYTES {
        return Err(StepError::NonRetryable(format!(
            "recipe {} with its files is {size} bytes encoded, over the {MAX_BUNDLE_BYTES}-byte limit: keep large files in the base image or fetch them in a provisioner",
            loaded.path.display()
        )));
    }
    Ok(bundle)
}

fn io(path: &Path, e: std::io::Error) -> StepError {
    StepError::NonRetryable(format!("{}: {e}", path.display()))
}

/// The recipe name of a bundle, without validating the rest.
pub fn bundle_name(bundle: &RecipeBundle) -> Option<String> {
    bundle
        .recipe
        .get("name")
        .and_then(|n| n.as_str())
        .map(str::to_string)
}

/// Writes a bundle into `dir` (replacing what was there) and loads it with
/// full validation, so a broken inline recipe is reported like a broken file.
pub fn materialize(bundle: &RecipeBundle, dir: &Path) -> Result<LoadedRecipe, StepError> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| io(dir, e))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    for (name, file) in &bundle.files {
        let rel = Path::new(name);
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(StepError::NonRetryable(format!(
                "files: {name:?} must be a relative path inside the recipe directory"
            )));
        }
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        match &file.link {
            Some(target) => {
                std::os::unix::fs::symlink(target, &path).map_err(|e| io(&path, e))?;
            }
            None => {
                let bytes = BASE64.decode(&file.content).map_err(|e| {
                    StepError::NonRetryable(format!("files: {name:?} is not valid base64: {e}"))
                })?;
                std::fs::write(&path, bytes).map_err(|e| io(&path, e))?;
                if file.executable {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                        .map_err(|e| io(&path, e))?;
                }
            }
        }
    }
    let text = serde_json::to_string_pretty(&bundle.recipe)
        .map_err(|e| StepError::NonRetryable(format!("recipe: {e}")))?;
    let path = dir.join(RECIPE_FILE);
    std::fs::write(&path, text).map_err(|e| io(&path, e))?;
    recipe::load(&path).map_err(|e: RecipeError| StepError::NonRetryable(e.to_string()))
}
