//! Untrusted bases: disk images built to make an unpacker act on host
//! paths. Each build fails with a clear error or keeps everything inside
//! its tree; nothing outside the build's own directories changes (a
//! listing of the test's temporary root is compared before and after).

mod local_support;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use local_support::{busybox_rootfs, run, Harness};

/// Every path below `root` with its type, mode, size and modification
/// time, except the build's own areas (work, images, scratch, registry).
fn listing(root: &Path) -> BTreeMap<String, String> {
    walkdir::WalkDir::new(root)
        .follow_links(false)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| {
            let name = e.file_name().to_string_lossy();
            !(e.depth() == 1
                && ["work", "images", "scratch", "registry.db"]
                    .iter()
                    .any(|n| name.starts_with(n)))
        })
        .map(|e| {
            let e = e.unwrap();
            let m = e.path().symlink_metadata().unwrap();
            (
                e.path().display().to_string(),
                format!(
                    "{:o} {} {} {}",
                    m.mode(),
                    m.len(),
                    m.mtime(),
                    m.mtime_nsec()
                ),
            )
        })
        .collect()
}

/// Fails naming what changed between two listings.
fn assert_unchanged(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) {
    let changed: Vec<String> = before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: {v} -> {:?}", after.get(k)))
        .chain(
            after
                .keys()
                .filter(|k| !before.contains_key(*k))
                .map(|k| format!("{k}: new")),
        )
        .collect();
    assert!(
        changed.is_empty(),
        "changed outside the build: {changed:#?}"
    );
}

/// An ext4 image of `tree` changed with debugfs `commands` (read-write),
/// then with every name `<x>Q` renamed to `<x>n` in place: debugfs will not
/// make two entries of one name, so the duplicates are made under a unique
/// name and patched (directory checksums and hashed directories are off,
/// so the patched blocks still read).
fn crafted_ext4(
    h: &Harness,
    tree: &Path,
    commands: &str,
    renames: &[(&str, &str)],
) -> std::path::PathBuf {
    let image = h.path("recipe/crafted.raw");
    fs::create_dir_all(image.parent().unwrap()).unwrap();
    run(Command::new("truncate").arg("-s").arg("64M").arg(&image));
    run(Command::new("mke2fs")
        .args([
            "-q",
            "-F",
            "-t",
            "ext4",
            "-O",
            "^metadata_csum,^dir_index",
            "-d",
        ])
        .arg(tree)
        .arg(&image));
    let script = h.write("crafted.debugfs", commands);
    run(Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&script)
        .arg(&image));
    let mut bytes = fs::read(&image).unwrap();
    for (from, to) in renames {
        let at = bytes
            .windows(from.len())
            .position(|w| w == from.as_bytes())
            .expect("the name to patch");
        bytes[at..at + to.len()].copy_from_slice(to.as_bytes());
    }
    fs::write(&image, bytes).unwrap();
    image
}

fn recipe(h: &Harness, base: &str) -> std::path::PathBuf {
    h.write(
        "recipe/crafted.yaml",
        &format!("name: crafted\nbase: {{path: {base}}}\nprovisioners:\n  - type: shell\n    inline: [\"echo provisioned > /etc/provisioned\"]\n"),
    )
}

#[tokio::test]
async fn an_ext4_base_cannot_make_the_unpacker_write_or_chmod_through_links() {
    let h = Harness::new(None);
    let tree = h.path("tree");
    busybox_rootfs(&tree);
    let outside = h.path("outside");
    fs::create_dir_all(&outside).unwrap();
    let victim = outside.join("victim");
    fs::write(&victim, "host data\n").unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
    let payload = h.write("payload", "written by the image\n");
    // Duplicate names: a symlink to a host path, then a regular file of the
    // same name, which an unpacker on the host opens (O_CREAT) and chmods
    // through the link. Plus an absolute link into the host's /etc.
    let image = crafted_ext4(
        &h,
        &tree,
        &format!(
            "symlink /pwn {outside}/pwned\n\
             write {payload} /pwnfile\n\
             link /pwnfile /pwQ\n\
             symlink /chm {victim}\n\
             write {payload} /chmfile\n\
             sif /chmfile mode 0104777\n\
             link /chmfile /chQ\n\
             symlink /etc/passwd-link /etc/passwd\n\
             mknod /etc/fifo p\n",
            outside = outside.display(),
            victim = victim.display(),
            payload = payload.display(),
        ),
        &[("pwQ", "pwn"), ("chQ", "chm")],
    );
    let names = run(Command::new("debugfs").arg("-R").arg("ls -l /").arg(&image));
    assert_eq!(
        names.matches(" pwn\n").count(),
        2,
        "duplicate names: {names}"
    );
    assert_eq!(
        names.matches(" chm\n").count(),
        2,
        "duplicate names: {names}"
    );
    let recipe = recipe(&h, "crafted.raw");
    let before = listing(h.dir.path());
    let out = h.build(&recipe, "crafted-1").await;

    assert_unchanged(&before, &listing(h.dir.path()));
    assert!(!outside.join("pwned").exists());
    assert_eq!(fs::read_to_string(&victim).unwrap(), "host data\n");
    assert_eq!(fs::metadata(&victim).unwrap().mode() & 0o7777, 0o600);
    // Either a clear error naming the base, or a build whose links stayed
    // links inside its own tree; nothing left behind either way.
    match out.error {
        Some((step, kind, cause)) => {
            assert_eq!(
                (step.to_string(), kind.as_str()),
                ("launch".to_string(), "NonRetryable")
            );
            assert!(cause.contains("crafted.raw"), "{cause}");
        }
        None => {
            let tree = h.path("captured");
            local_support::untar(&out.artifact(".tar.zst"), &tree);
            assert_eq!(
                fs::read_link(tree.join("pwn")).unwrap(),
                outside.join("pwned")
            );
            assert_eq!(
                fs::read_to_string(tree.join("etc/provisioned")).unwrap(),
                "provisioned\n"
            );
        }
    }
    assert!(h.work_dirs().is_empty(), "{:?}", h.work_dirs());
    assert!(h.our_mounts().is_empty());
}

#[tokio::test]
async fn qcow2_bases_that_name_other_files_are_refused_before_launch() {
    let h = Harness::new(None);
    let tree = h.path("tree");
    busybox_rootfs(&tree);
    fs::write(tree.join("etc/secret"), "host secret\n").unwrap();
    let secret = h.path("secret.raw");
    run(Command::new("truncate").arg("-s").arg("64M").arg(&secret));
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-d"])
        .arg(&tree)
        .arg(&secret));
    fs::create_dir_all(h.path("recipe")).unwrap();
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(&secret)
        .arg(h.path("recipe/backed.qcow2")));
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-o"])
        .arg(format!("data_file={}", h.path("data.raw").display()))
        .arg(h.path("recipe/external.qcow2"))
        .arg("64M"));
    let recipes: Vec<_> = ["backed", "external"]
        .iter()
        .map(|name| {
            h.write(
                &format!("recipe/{name}.yaml"),
                &format!("name: {name}\nbase: {{path: {name}.qcow2}}\n"),
            )
        })
        .collect();
    let before = listing(h.dir.path());
    for (recipe, (file, why)) in recipes.iter().zip([
        (
            "backed.qcow2",
            format!("backing file (\"{}\")", secret.display()),
        ),
        ("external.qcow2", "external data file".to_string()),
    ]) {
        let out = h.build(recipe, &format!("q-{}", &file[..4])).await;
        let (step, kind, cause) = out.error.expect("refused");
        assert_eq!(
            (step.to_string(), kind.as_str()),
            ("launch".to_string(), "NonRetryable")
        );
        assert!(cause.contains(file) && cause.contains(&why), "{cause}");
        assert!(
            out.record.resources.is_empty(),
            "{:?}",
            out.record.resources
        );
    }
    assert_unchanged(&before, &listing(h.dir.path()));
    assert!(h.work_dirs().is_empty(), "{:?}", h.work_dirs());
}
