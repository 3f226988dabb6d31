//! Build ids become directory names, so the CLI checks them against their
//! grammar before anything is touched: `..`, `.`, empty, `a/b`, 300
//! characters and non-ASCII ids are refused with an error naming
//! `--build-id`, and the registry, the images and other builds stay as
//! they were.

mod local_support;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Output;

use local_support::{busybox_rootfs, pack};

fn bakehouse(home: &Path, args: &[&str]) -> Output {
    local_support::cli(home).args(args).output().unwrap()
}

/// Every path of the home with its size and modification time.
fn snapshot(home: &Path) -> BTreeMap<String, (u64, i64, i64)> {
    walkdir::WalkDir::new(home)
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            let m = e.path().symlink_metadata().unwrap();
            (
                e.path().display().to_string(),
                (m.len(), m.mtime(), m.mtime_nsec()),
            )
        })
        .collect()
}

#[test]
fn ids_that_could_name_other_paths_are_refused_before_anything_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    busybox_rootfs(&tree);
    fs::create_dir_all(dir.path().join("recipe")).unwrap();
    pack(&tree, &dir.path().join("recipe/base.tar.gz"));
    let recipe = dir.path().join("recipe/ids.yaml");
    fs::write(
        &recipe,
        "name: ids\nbase: {path: base.tar.gz}\nprovisioners:\n  - type: shell\n    inline: [\"echo ok > /etc/ok\"]\n",
    )
    .unwrap();
    let recipe = recipe.to_str().unwrap();
    let home = dir.path().join("home");
    let first = bakehouse(&home, &["build", "--build-id", "good-1", recipe]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let builds = bakehouse(&home, &["--json", "builds", "list"]).stdout;
    let before = snapshot(&home);

    let long = "a".repeat(300);
    for (id, why) in [
        ("..", "must start with a letter or digit"),
        (".", "must start with a letter or digit"),
        ("", "is empty"),
        ("a/b", "character '/' is not allowed"),
        (long.as_str(), "300 bytes long"),
        ("bäckerei", "character 'ä' is not allowed"),
    ] {
        let out = bakehouse(&home, &["build", "--build-id", id, recipe]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{id:?}: {stderr}");
        assert!(
            stderr.contains("--build-id") && stderr.contains(why),
            "{id:?}: {stderr}"
        );
        assert_eq!(snapshot(&home), before, "{id:?} changed the home");
    }
    assert_eq!(
        bakehouse(&home, &["--json", "builds", "list"]).stdout,
        builds
    );
    assert!(home
        .join("work")
        .read_dir()
        .map_or(true, |mut d| d.all(|e| e.unwrap().file_name() == ".cache")));
}
