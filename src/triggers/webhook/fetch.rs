//! Fetching a recipe and the files it uses at a commit into a scratch
//! directory laid out like the repository, then loading it with the full
//! checks and packing it as a [`RecipeBundle`] — the same bundle a build
//! started from a checkout would carry.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use crate::build::RecipeBundle;
use crate::pipeline::bundle;
use crate::recipe::{self, LoadedRecipe};

use super::plan::parent;
use super::repo::{EntryKind, RepoError, Repository, TreeEntry};

/// Most files fetched for one recipe.
pub const MAX_RECIPE_FILES: usize = 500;

/// Why a recipe could not be fetched and loaded.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The repository could not be read (worth a redelivery).
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// The recipe is not valid at this commit (a redelivery won't help).
    #[error("{0}")]
    Invalid(String),
    /// The scratch directory could not be written.
    #[error("scratch {path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A repository path as a safe relative path below the scratch root.
fn local(root: &Path, repo_path: &str) -> Result<PathBuf, FetchError> {
    let rel = Path::new(repo_path);
    let safe = !repo_path.is_empty() && rel.components().all(|c| matches!(c, Component::Normal(_)));
    if !safe {
        return Err(FetchError::Invalid(format!(
            "{repo_path:?} is not a path inside the repository"
        )));
    }
    Ok(root.join(rel))
}

/// The tree entries (files and links) a recipe input at `path` stands for:
/// the file itself, or everything below the directory.
pub fn entries_for<'a>(tree: &'a [TreeEntry], path: &str) -> Vec<&'a TreeEntry> {
    tree.iter()
        .filter(|e| matches!(e.kind, EntryKind::File { .. } | EntryKind::Link))
        .filter(|e| {
            path.is_empty()
                || e.path == path
                || e.path
                    .strip_prefix(path)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
        .collect()
}

/// Fetches the recipe at `recipe_path` (whose `text` is already read) and
/// every file below `referenced` at `commit` into `root`, then loads and
/// bundles it.
pub async fn fetch_recipe(
    repo: &dyn Repository,
    commit: &str,
    recipe_path: &str,
    text: &str,
    referenced: &[String],
    root: &Path,
) -> Result<(LoadedRecipe, RecipeBundle), FetchError> {
    // One listing per parent directory of each input covers it whether it
    // is a file or a directory.
    let mut trees: BTreeMap<String, Vec<TreeEntry>> = BTreeMap::new();
    let mut wanted: BTreeMap<String, TreeEntry> = BTreeMap::new();
    for r in referenced {
        let dir = parent(r).to_string();
        if !trees
            .keys()
            .any(|d| d.is_empty() || *d == dir || dir.starts_with(&format!("{d}/")))
        {
            let tree = repo.tree(commit, &dir).await?;
            trees.insert(dir.clone(), tree);
        }
        for tree in trees.values() {
            for e in entries_for(tree, r) {
                wanted.insert(e.path.clone(), e.clone());
            }
        }
        if wanted.len() > MAX_RECIPE_FILES {
            return Err(FetchError::Invalid(format!(
                "{recipe_path}: uses more than {MAX_RECIPE_FILES} files"
            )));
        }
    }
    // Regular files first, links last, so no file is written through a link.
    let mut links = Vec::new();
    for (path, entry) in &wanted {
        let target = local(root, path)?;
        match entry.kind {
            EntryKind::Link => links.push((target, repo.read_link(commit, entry).await?)),
            EntryKind::File { executable } => {
                let content = repo.read(commit, path).await?.ok_or_else(|| {
                    FetchError::Invalid(format!("{path} is listed but cannot be read"))
                })?;
                write(&target, &content)?;
                if executable {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
                        .map_err(io(&target))?;
                }
            }
            EntryKind::Dir | EntryKind::Other => {}
        }
    }
    for (target, link) in links {
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        std::os::unix::fs::symlink(&link, &target).map_err(io(&target))?;
    }
    let path = local(root, recipe_path)?;
    write(&path, text.as_bytes())?;
    let loaded = recipe::load(&path).map_err(|e| {
        FetchError::Invalid(e.to_string().replace(&format!("{}/", root.display()), ""))
    })?;
    if let Some(step) = loaded.shell_local.first() {
        return Err(FetchError::Invalid(format!(
            "{recipe_path}: {}: shell-local runs only in builds started with `bakehouse build` on the machine running it, not in builds started by a push",
            step.label
        )));
    }
    let packed = bundle::bundle(&loaded).map_err(|e| {
        FetchError::Invalid(e.to_string().replace(&format!("{}/", root.display()), ""))
    })?;
    Ok((loaded, packed))
}

fn write(path: &Path, content: &[u8]) -> Result<(), FetchError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    std::fs::write(path, content).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: EntryKind) -> TreeEntry {
        TreeEntry {
            path: path.into(),
            kind,
            id: None,
        }
    }

    #[test]
    fn entries_for_a_file_or_a_directory() {
        let f = EntryKind::File { executable: false };
        let tree = vec![
            entry("recipes/files", EntryKind::Dir),
            entry("recipes/files/a", f),
            entry("recipes/files/b/c", f),
            entry("recipes/filesx", f),
            entry("recipes/x.sh", EntryKind::File { executable: true }),
        ];
        let paths = |p: &str| {
            entries_for(&tree, p)
                .iter()
                .map(|e| e.path.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            paths("recipes/files"),
            ["recipes/files/a", "recipes/files/b/c"]
        );
        assert_eq!(paths("recipes/x.sh"), ["recipes/x.sh"]);
        assert!(paths("recipes/none").is_empty());
    }

    #[test]
    fn local_paths_stay_inside_the_root() {
        let root = Path::new("/scratch");
        assert_eq!(local(root, "a/b").unwrap(), Path::new("/scratch/a/b"));
        assert!(local(root, "../a").is_err());
        assert!(local(root, "/etc/passwd").is_err());
        assert!(local(root, "a/./b").is_ok());
        assert!(local(root, "").is_err());
    }

    /// A repository with nothing in it: the templates below reference no
    /// files, so nothing is listed or read.
    struct Empty;

    #[async_trait::async_trait]
    impl Repository for Empty {
        async fn tree(
            &self,
            _: &str,
            _: &str,
        ) -> Result<Vec<TreeEntry>, super::super::repo::RepoError> {
            Ok(Vec::new())
        }
        async fn read(
            &self,
            _: &str,
            _: &str,
        ) -> Result<Option<Vec<u8>>, super::super::repo::RepoError> {
            Ok(None)
        }
        async fn branch_head(
            &self,
            _: &str,
        ) -> Result<Option<String>, super::super::repo::RepoError> {
            Ok(None)
        }
    }

    #[tokio::test]
    async fn a_pushed_template_with_shell_local_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let template = r#"{"builders": [{"type": "amazon-ebs", "ami_name": "x", "source_ami": "ami-0123456789abcdef0"}],
          "provisioners": [{"type": "shell-local", "inline": ["cat /etc/shadow > leak"]}]}"#;
        let refused = fetch_recipe(&Empty, "c1", "recipes/t.json", template, &[], root.path())
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            refused.contains("recipes/t.json: provisioners[0] (shell-local): shell-local runs only in builds started with `bakehouse build`"),
            "{refused}"
        );
        assert!(!root.path().join("recipes/leak").exists());
        let plain = template.replace("shell-local", "shell");
        assert!(
            fetch_recipe(&Empty, "c1", "recipes/t.json", &plain, &[], root.path())
                .await
                .is_ok()
        );
    }
}
