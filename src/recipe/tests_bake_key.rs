//! Bake keys: what changes them, what does not, and a pinned digest.

use std::fs;
use std::path::Path;

use super::bake_key::canonical_recipe;
use super::test_support::{fixtures, Tree};
use super::*;

/// The key of `tests/fixtures/recipes/bake` on `ami-0123456789abcdef0`.
/// It changes when the encoding, the fixture, the model's serialization or
/// the generated clean script changes; update it deliberately.
const FIXTURE_KEY: &str = "94ac901954b1e753cd06ebf4214339781d29beb59035b36be7da4c7084bde741";

const BASE: &str = "ami-0123456789abcdef0";

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for entry in fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// A private copy of the bake fixture.
fn fixture_copy() -> (Tree, LoadedRecipe) {
    let tree = Tree::new();
    copy_dir(&fixtures().join("bake"), tree.dir.path());
    let loaded = load(&tree.path("recipe.yaml")).expect("valid fixture");
    (tree, loaded)
}

fn key(r: &LoadedRecipe) -> String {
    bake_key(r, BASE).expect("bake key")
}

#[test]
fn fixture_key_is_pinned_and_independent_of_location() {
    let loaded = load(&fixtures().join("bake/recipe.yaml")).expect("valid fixture");
    assert_eq!(key(&loaded), FIXTURE_KEY);
    let (_tree, copy) = fixture_copy();
    assert_eq!(key(&copy), FIXTURE_KEY);
    assert_eq!(FIXTURE_KEY.len(), 64);
}

#[test]
fn canonical_recipe_is_sorted_and_leaves_out_scheduling() {
    let (_tree, loaded) = fixture_copy();
    let json = canonical_recipe(&loaded).expect("encode");
    assert!(
        json.starts_with(r#"{"base":{"image":"ami-0123456789abcdef0"},"builder":{"network":false},"clean":{"extra_paths":[],"skip":[]},"name":"bake-fixture","os":"linux","paths":[],"provisioners":[{"inline":["echo first"],"type":"shell"},"#),
        "{json}"
    );
    assert!(!json.contains("schedule") && !json.contains("Bake key fixture"));
}

#[test]
fn script_content_changes_the_key() {
    let (tree, loaded) = fixture_copy();
    let before = key(&loaded);
    tree.write(
        "scripts/setup.sh",
        "#!/bin/sh\nset -eu\necho \"setting up!\"\n",
    );
    assert_ne!(key(&loaded), before);
}

#[test]
fn directory_source_content_and_modes_change_the_key() {
    let (tree, loaded) = fixture_copy();
    let before = key(&loaded);
    tree.write("files/etc/hosts", "127.0.0.1 localhost\n");
    let added = key(&loaded);
    assert_ne!(added, before);
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(
        tree.path("files/etc/hosts"),
        fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    assert_ne!(key(&loaded), added);
}

#[test]
fn base_changes_the_key() {
    let (_tree, loaded) = fixture_copy();
    assert_ne!(
        bake_key(&loaded, "ami-0fedcba9876543210").expect("key"),
        key(&loaded)
    );
}

#[test]
fn provisioner_order_changes_the_key() {
    let (_tree, mut loaded) = fixture_copy();
    let before = key(&loaded);
    loaded.recipe.provisioners.swap(0, 1);
    assert_ne!(key(&loaded), before);
}

#[test]
fn clean_policy_changes_the_key() {
    let (_tree, mut loaded) = fixture_copy();
    let before = key(&loaded);
    loaded.recipe.clean.skip.push(CleanItem::Logs);
    assert_ne!(key(&loaded), before);
}

#[test]
fn schedule_paths_and_label_do_not_change_the_key() {
    let (_tree, mut loaded) = fixture_copy();
    let before = key(&loaded);
    loaded.recipe.schedule = Some("rate(1 day)".into());
    loaded.recipe.paths = vec!["elsewhere/**".into()];
    loaded.recipe.label = Some("Another label".into());
    assert_eq!(key(&loaded), before);
}

#[test]
fn input_files_list_the_recipe_and_what_it_uploads() {
    let (tree, loaded) = fixture_copy();
    let files = input_files(&loaded).expect("inputs");
    let rel: Vec<String> = files
        .iter()
        .map(|p| {
            p.strip_prefix(tree.dir.path())
                .map(|r| r.display().to_string())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(
        rel,
        vec![
            "recipe.yaml",
            "scripts/setup.sh",
            "files/etc/issue",
            "files/etc/motd"
        ]
    );
    let names: Vec<(String, &str)> = bake_key::input_entries(&loaded)
        .expect("entries")
        .into_iter()
        .map(|i| (i.name, i.mode))
        .collect();
    assert_eq!(
        names,
        vec![
            ("scripts/setup.sh".to_string(), "644"),
            ("files/etc/issue".to_string(), "644"),
            ("files/etc/motd".to_string(), "644"),
        ]
    );
}

#[test]
fn ansible_and_salt_inputs_cover_their_directories() {
    let loaded = load(&fixtures().join("full/recipe.yaml")).expect("valid");
    let names: Vec<String> = bake_key::input_entries(&loaded)
        .expect("entries")
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(
        names,
        vec![
            "scripts/setup.sh",
            "files/site/index.html",
            "salt/custom/init.sls",
            "salt/top.sls",
            "ansible/roles/base/tasks/main.yml",
            "ansible/site.yml",
        ]
    );
}

#[test]
fn missing_input_is_an_io_error_naming_the_file() {
    let (tree, loaded) = fixture_copy();
    fs::remove_file(tree.path("scripts/setup.sh")).expect("rm");
    let err = bake_key(&loaded, BASE).expect_err("missing file");
    assert!(
        matches!(err, RecipeError::Io { ref path, .. } if path.ends_with("scripts/setup.sh")),
        "{err}"
    );
}
