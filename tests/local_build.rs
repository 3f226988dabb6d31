//! Local builds, end to end: a busybox root filesystem made by the test is
//! baked through the pipeline's step handlers (launch, provision, clean,
//! capture, register, teardown) with the local chroot backend, and the
//! images it produces are opened with the host's own tools to check what
//! is inside. Needs root, busybox-static, e2fsprogs and qemu-utils
//! (`make setup`).

mod local_support;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use bakehouse::build::{BuildStatus, ResourceKind, Step};
use bakehouse::registry::locate::file_digest;
use bakehouse::registry::Provider;
use local_support::{
    assert_cleaned, busybox_rootfs, debugfs, dump, names, pack, qcow2_to_raw, untar, Harness,
};

/// The provisioner files of the end-to-end recipe.
fn e2e_recipe(h: &Harness, name: &str, base: &str) -> std::path::PathBuf {
    h.write(
        "recipe/scripts/setup.sh",
        "#!/bin/sh\nset -e\necho \"setup: running as uid $(id -u)\"\nmkdir -p /opt/app\n\
         echo \"$APP_ENV\" > /opt/app/env\necho setup-ran > /opt/app/setup-ran\n\
         echo junk > /tmp/setup-junk\necho 'setup: done'\n",
    );
    h.write("recipe/files/motd", "Welcome to a bakehouse image\n");
    h.write("recipe/files/app/config.ini", "[app]\nport = 8080\n");
    let run = h.write("recipe/files/app/bin/run", "#!/bin/sh\necho run\n");
    fs::set_permissions(&run, fs::Permissions::from_mode(0o755)).unwrap();
    h.write(
        &format!("recipe/{name}.yaml"),
        &format!(
            r#"name: {name}
os: linux
base:
  path: {base}
provisioners:
  - type: shell
    inline:
      - echo "$GREETING" > /etc/greeting
      - echo 'cat /etc/shadow' >> /root/.ash_history
    env: {{GREETING: "hello from bakehouse"}}
  - type: shell
    script: scripts/setup.sh
    env: {{APP_ENV: production}}
  - type: file
    source: files/motd
    destination: /etc/motd
    mode: "0600"
  - type: file
    source: files/app
    destination: /opt/app
test:
  - grep -q 'hello from bakehouse' /etc/greeting
  - test -x /opt/app/bin/run
"#
        ),
    )
}

/// The tree of the end-to-end build, wherever it was read from.
fn assert_provisioned(tree: &Path) {
    assert_eq!(fs::read_to_string(tree.join("etc/greeting")).unwrap(), "hello from bakehouse\n");
    assert_eq!(fs::read_to_string(tree.join("etc/motd")).unwrap(), "Welcome to a bakehouse image\n");
    assert_eq!(fs::metadata(tree.join("etc/motd")).unwrap().mode() & 0o7777, 0o600);
    assert_eq!(fs::read_to_string(tree.join("opt/app/env")).unwrap(), "production\n");
    assert_eq!(fs::read_to_string(tree.join("opt/app/setup-ran")).unwrap(), "setup-ran\n");
    assert_eq!(fs::read_to_string(tree.join("opt/app/config.ini")).unwrap(), "[app]\nport = 8080\n");
    assert_eq!(fs::metadata(tree.join("opt/app/bin/run")).unwrap().mode() & 0o777, 0o755);
    // Owners and the base's own files survive.
    assert_eq!(fs::metadata(tree.join("home/alice/notes.txt")).unwrap().uid(), 1000);
    assert_eq!(fs::read_to_string(tree.join("etc/resolv.conf")).unwrap(), "nameserver 192.0.2.53\n");
    assert_eq!(fs::read_link(tree.join("bin/sh")).unwrap(), Path::new("busybox"));
    // Provisioner staging is gone.
    assert_eq!(names(&tree.join("run")), Default::default());
}

#[tokio::test]
async fn end_to_end_busybox_build_is_provisioned_cleaned_captured_and_registered() {
    let h = Harness::new(None);
    busybox_rootfs(&h.path("base-root"));
    let base = h.path("recipe/base.tar.gz");
    fs::create_dir_all(base.parent().unwrap()).unwrap();
    pack(&h.path("base-root"), &base);
    let recipe = e2e_recipe(&h, "busybox-e2e", "base.tar.gz");

    let out = h.build(&recipe, "e2e-1").await;

    assert_eq!(out.error, None);
    assert_eq!(out.status(), "SUCCEEDED");
    assert_eq!(out.version(), Some("busybox-e2e@1.0"));
    assert_eq!(out.launch["cache_hit"], false);
    assert_eq!(out.record.status, BuildStatus::Succeeded);
    let base_digest = file_digest(&base).unwrap();
    assert_eq!(out.record.base_id.as_deref(), Some(base_digest.as_str()));

    // Two artifacts, provider local, id = the file's sha256, path recorded.
    let out_dir = h.path("images/busybox-e2e/e2e-1");
    let names: Vec<&str> = out.record.artifacts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["local/busybox-e2e.qcow2", "local/busybox-e2e.tar.zst"]);
    for a in &out.record.artifacts {
        let path = Path::new(a.path.as_deref().unwrap());
        assert_eq!(a.provider, Provider::Local);
        assert_eq!(a.region, None);
        assert_eq!(path.parent().unwrap(), out_dir);
        assert_eq!(a.image_id, file_digest(path).unwrap());
        let hex = a.image_id.strip_prefix("sha256:").unwrap();
        assert_eq!(hex.len(), 64);
        let sidecar = fs::read_to_string(format!("{}.sha256", path.display())).unwrap();
        let file_name = path.file_name().unwrap().to_string_lossy();
        assert_eq!(sidecar, format!("{hex}  {file_name}\n"));
    }
    assert_eq!(
        names_of(&out_dir),
        [
            "busybox-e2e.qcow2",
            "busybox-e2e.qcow2.sha256",
            "busybox-e2e.tar.zst",
            "busybox-e2e.tar.zst.sha256"
        ]
    );

    // The registry has the version, with the same artifacts and lineage.
    let resolved = h.resolve("busybox-e2e").await;
    assert_eq!(resolved.package.version.to_string(), "1.0");
    assert_eq!(resolved.package.artifacts, out.record.artifacts);
    assert_eq!(resolved.artifact.as_ref(), out.record.artifacts.first());
    assert_eq!(resolved.package.bake_key, out.record.bake_key);
    assert_eq!(resolved.package.parent.as_deref(), Some(base_digest.as_str()));
    assert_eq!(resolved.package.build_id.as_deref(), Some("e2e-1"));

    // The work dir is gone; the outputs are kept; the ledger says so.
    assert!(!h.backend.work_dir("e2e-1").exists());
    assert_eq!(h.work_dirs(), Vec::<String>::new());
    let work: Vec<_> = out.record.resources_of(ResourceKind::WorkDir).collect();
    assert_eq!(work.len(), 1);
    assert!(work[0].deleted);
    let files: Vec<_> = out.record.resources_of(ResourceKind::File).collect();
    assert_eq!(files.len(), 2);
    assert!(files.iter().all(|f| f.keep_on_success && !f.deleted));
    assert!(h.our_mounts().is_empty(), "{:?}", h.our_mounts());

    // Provisioner output was kept as notes.
    let provision = out.record.steps.iter().find(|s| s.step == Step::Provision).unwrap();
    let notes = provision.notes.join("\n");
    assert!(notes.contains("setup: running as uid 0"), "{notes}");
    assert!(notes.contains("setup: done"), "{notes}");
    assert!(notes.contains("provisioners[3] (file files/app -> /opt/app): copied 2 file(s)"), "{notes}");

    // Inside the qcow2: an ext4 file system with the provisioned, cleaned tree.
    let scratch = h.path("inspect");
    fs::create_dir_all(&scratch).unwrap();
    let raw = qcow2_to_raw(&out.artifact(".qcow2"), &scratch);
    assert_eq!(debugfs(&raw, "cat /etc/greeting"), "hello from bakehouse\n");
    assert!(debugfs(&raw, "stat /etc/motd").contains("Mode:  0600"));
    let listing = debugfs(&raw, "ls -p /etc");
    let mode_of = |name: &str| {
        listing
            .lines()
            .find(|l| l.contains(&format!("/{name}/")))
            .and_then(|l| l.split('/').nth(2).map(str::to_string))
            .unwrap_or_default()
    };
    assert!(mode_of("bakehouse.fifo").starts_with("010"), "{listing}");
    assert!(mode_of("bakehouse-null").starts_with("020"), "{listing}");
    let from_qcow2 = scratch.join("qcow2-tree");
    dump(&raw, &from_qcow2);
    assert_provisioned(&from_qcow2);
    assert_cleaned(&from_qcow2);

    // Inside the tar.zst: the same tree, with the FIFO and the device node.
    let from_tar = scratch.join("tar-tree");
    untar(&out.artifact(".tar.zst"), &from_tar);
    assert_provisioned(&from_tar);
    assert_cleaned(&from_tar);
    assert!(fs::symlink_metadata(from_tar.join("etc/bakehouse.fifo")).unwrap().file_type().is_fifo());
    let null = fs::symlink_metadata(from_tar.join("etc/bakehouse-null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), fs::metadata("/dev/null").unwrap().rdev());
}

fn names_of(dir: &Path) -> Vec<String> {
    names(dir).into_iter().collect()
}
