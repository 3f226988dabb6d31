//! Helpers shared by this module's tests.

use std::fs;
use std::path::{Path, PathBuf};

use super::{load, LoadedRecipe, RecipeError};

/// The crate root, found from this file's path (works whether `file!()` is
/// relative to the package or absolute).
fn crate_root() -> PathBuf {
    Path::new(file!())
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// `tests/fixtures/recipes` of the crate.
pub fn fixtures() -> PathBuf {
    let root = crate_root();
    let root = if root.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        root
    };
    root.join("tests/fixtures/recipes")
}

/// `recipes/` (the example recipes) of the crate.
pub fn examples() -> PathBuf {
    let root = crate_root();
    let root = if root.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        root
    };
    root.join("recipes")
}

/// A temporary directory to write recipes and their files into.
pub struct Tree {
    pub dir: tempfile::TempDir,
}

impl Tree {
    pub fn new() -> Tree {
        Tree {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes `content` to `rel`, creating parent directories.
    pub fn write(&self, rel: &str, content: &str) -> PathBuf {
        let path = self.path(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("mkdir");
        }
        fs::write(&path, content).expect("write");
        path
    }

    pub fn mkdir(&self, rel: &str) -> PathBuf {
        let path = self.path(rel);
        fs::create_dir_all(&path).expect("mkdir");
        path
    }

    /// Writes `recipe.yaml` and loads it.
    pub fn load_yaml(&self, text: &str) -> Result<LoadedRecipe, RecipeError> {
        load(&self.write("recipe.yaml", text))
    }
}

/// The problems of a failed load, displayed with the file name relative to
/// the tree (`recipe.yaml:3:1: field: message`).
pub fn messages(tree: &Tree, result: Result<LoadedRecipe, RecipeError>) -> Vec<String> {
    match result {
        Ok(r) => panic!("expected problems, loaded {:?}", r.recipe),
        Err(e) => {
            let prefix = format!("{}/", tree.dir.path().display());
            e.problems()
                .iter()
                .map(|p| p.to_string().replace(&prefix, ""))
                .collect()
        }
    }
}

/// A minimal valid recipe body, for tests to extend.
pub const MINIMAL: &str = "name: demo\nbase:\n  image: ami-0123456789abcdef0\n";
