//! Which recipes a push touches. Pure: works on paths and recipe text.
//!
//! A recipe lives in the recipes directory (`recipes/*.yaml`, `.yml`,
//! `.json`, not in subdirectories). A push touches it when a changed file is
//! the recipe file itself, a file it uses (a shell `script`, a file
//! `source`, a salt `state_tree`, an ansible playbook's directory — the
//! same inputs the bake key hashes, see [`crate::recipe::bake_key`]), or
//! matches one of its `paths` globs (from the repository root, `*` within
//! one path segment, `**` across).

use std::collections::BTreeSet;
use std::path::Path;

use globset::{GlobBuilder, GlobMatcher};

use crate::recipe::{self, Base, Format, LoadOptions, Provisioner, Recipe};

/// Whether `path` (from the repository root) is a recipe file in
/// `recipes_dir`.
pub fn is_recipe_file(path: &str, recipes_dir: &str) -> bool {
    let dir = recipes_dir.trim_matches('/');
    let rest = if dir.is_empty() {
        Some(path)
    } else {
        path.strip_prefix(dir).and_then(|r| r.strip_prefix('/'))
    };
    rest.is_some_and(|name| {
        !name.is_empty()
            && !name.contains('/')
            && !name.starts_with('.')
            && Format::from_path(Path::new(name)).is_some()
    })
}

/// The directory part of a repository path (`""` at the root).
pub fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// `rel` (as written in a recipe in `dir`) as a path from the repository
/// root, with `.` and `..` resolved; `None` when it is absolute or leaves
/// the repository.
pub fn resolve(dir: &str, rel: &str) -> Option<String> {
    if rel.starts_with('/') || rel.contains('\\') {
        return None;
    }
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

/// Reads the structure of a recipe (a recipe file or a Packer template)
/// without the checks that need its files; the full check runs once the
/// files are fetched.
pub fn structure(path: &str, text: &str) -> Result<Recipe, String> {
    let origin = Path::new(path);
    let format = Format::from_path(origin).ok_or_else(|| format!("{path}: not a recipe file"))?;
    if format == Format::Json && recipe::packer::is_packer_template(text) {
        let dir = Path::new(parent(path));
        return recipe::packer::convert(text, origin, dir, &LoadOptions::default())
            .map(|c| c.recipe)
            .map_err(|problems| {
                problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            });
    }
    let parsed = match format {
        Format::Yaml => serde_yaml_ng::from_str::<Recipe>(text).map_err(|e| e.to_string()),
        Format::Json => serde_json::from_str::<Recipe>(text).map_err(|e| e.to_string()),
    };
    // Prefer the full parser's message (field path, line, hints).
    parsed.map_err(|fallback| match recipe::parse(text, format, origin) {
        Err(e) => e.to_string(),
        Ok(_) => fallback,
    })
}

/// Where a recipe's inputs are, from the repository root: files or
/// directories, in provisioner order, without duplicates.
pub fn referenced_paths(recipe_path: &str, recipe: &Recipe) -> Result<Vec<String>, String> {
    let dir = parent(recipe_path);
    let mut out: Vec<String> = Vec::new();
    for written in recipe.provisioners.iter().flat_map(Provisioner::inputs) {
        let resolved = resolve(dir, written.trim_end_matches('/'))
            .ok_or_else(|| format!("{written}: must be a relative path inside the repository"))?;
        if !out.contains(&resolved) {
            out.push(resolved);
        }
    }
    Ok(out)
}

/// Whether `recipe` has a local base (a path): such recipes are built on a
/// workstation, not by a push.
pub fn has_local_base(recipe: &Recipe) -> bool {
    matches!(recipe.base, Base::Path(_))
}

/// The compiled `paths` globs of a recipe (invalid ones are skipped: the
/// full check reports them).
pub fn path_matchers(recipe: &Recipe) -> Vec<GlobMatcher> {
    recipe
        .paths
        .iter()
        .filter_map(|p| {
            GlobBuilder::new(p.trim_start_matches("./"))
                .literal_separator(true)
                .build()
                .ok()
        })
        .map(|g| g.compile_matcher())
        .collect()
}

/// The changed files that concern the recipe at `recipe_path`; empty when
/// the push does not touch it.
pub fn touching<'a>(
    recipe_path: &str,
    recipe: &Recipe,
    referenced: &[String],
    changed: &'a BTreeSet<String>,
) -> Vec<&'a str> {
    let globs = path_matchers(recipe);
    changed
        .iter()
        .filter(|c| {
            c.as_str() == recipe_path
                || referenced
                    .iter()
                    .any(|r| r.is_empty() || c.as_str() == r || under(c, r))
                || globs.iter().any(|g| g.is_match(c.as_str()))
        })
        .map(String::as_str)
        .collect()
}

fn under(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: &str = r#"
name: web
base: {image: ami-0123456789abcdef0}
provisioners:
  - {type: shell, script: scripts/web-setup.sh}
  - {type: file, source: files/web/, destination: /var/www}
  - {type: ansible, playbook: ../ansible/site.yml}
paths: ["docs/web/*.md"]
"#;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn recipe_files_are_direct_children_with_a_recipe_extension() {
        assert!(is_recipe_file("recipes/web.yaml", "recipes"));
        assert!(is_recipe_file("recipes/web.yml", "recipes/"));
        assert!(is_recipe_file("recipes/p.json", "recipes"));
        assert!(!is_recipe_file("recipes/scripts/x.yaml", "recipes"));
        assert!(!is_recipe_file("recipes/readme.md", "recipes"));
        assert!(!is_recipe_file("other/web.yaml", "recipes"));
        assert!(!is_recipe_file("recipes/.hidden.yaml", "recipes"));
        assert!(is_recipe_file("web.yaml", ""));
    }

    #[test]
    fn relative_paths_resolve_from_the_recipe_directory() {
        assert_eq!(
            resolve("recipes", "scripts/a.sh").as_deref(),
            Some("recipes/scripts/a.sh")
        );
        assert_eq!(
            resolve("recipes", "../ansible/site.yml").as_deref(),
            Some("ansible/site.yml")
        );
        assert_eq!(
            resolve("recipes", "./x/./y").as_deref(),
            Some("recipes/x/y")
        );
        assert_eq!(resolve("recipes", "../../etc/passwd"), None);
        assert_eq!(resolve("recipes", "/etc/passwd"), None);
    }

    #[test]
    fn references_follow_the_provisioners() {
        let r = structure("recipes/web.yaml", WEB).unwrap();
        assert_eq!(
            referenced_paths("recipes/web.yaml", &r).unwrap(),
            [
                "recipes/scripts/web-setup.sh",
                "recipes/files/web",
                "ansible"
            ]
        );
    }

    #[test]
    fn a_push_touches_the_recipe_its_inputs_and_its_globs() {
        let r = structure("recipes/web.yaml", WEB).unwrap();
        let refs = referenced_paths("recipes/web.yaml", &r).unwrap();
        let touch = |files: &[&str]| {
            let changed = set(files);
            touching("recipes/web.yaml", &r, &refs, &changed)
                .into_iter()
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(touch(&["recipes/web.yaml"]), ["recipes/web.yaml"]);
        assert_eq!(
            touch(&["recipes/files/web/index.html"]),
            ["recipes/files/web/index.html"]
        );
        assert_eq!(
            touch(&["ansible/roles/x/tasks/main.yml"]),
            ["ansible/roles/x/tasks/main.yml"]
        );
        assert_eq!(touch(&["docs/web/intro.md"]), ["docs/web/intro.md"]);
        assert!(touch(&["docs/web/deeper/intro.md"]).is_empty());
        assert!(touch(&["recipes/files/webby/index.html", "README.md"]).is_empty());
        assert!(touch(&["recipes/scripts/web-setup.sh.bak"]).is_empty());
    }

    #[test]
    fn structure_reports_problems_with_their_field() {
        let err = structure(
            "recipes/bad.yaml",
            "name: bad\nbase: {image: ami-1}\nbogus: 1\n",
        )
        .unwrap_err();
        assert!(err.contains("bogus"), "{err}");
    }
}
