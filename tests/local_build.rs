//! Local builds, end to end: a busybox root filesystem made by the test is
//! baked through the pipeline state machine (`statemachines/pipeline.asl.json`
//! on the local ASL runner: launch, provision, clean, capture, register,
//! teardown) with the local chroot backend, and the images it produces are
//! opened with the host's own tools to check what is inside. Needs root, busybox-static, e2fsprogs and qemu-utils
//! (`make setup`).

mod local_support;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use bakehouse::asl::ExecutionStatus;
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
    assert_eq!(
        fs::read_to_string(tree.join("etc/greeting")).unwrap(),
        "hello from bakehouse\n"
    );
    assert_eq!(
        fs::read_to_string(tree.join("etc/motd")).unwrap(),
        "Welcome to a bakehouse image\n"
    );
    assert_eq!(
        fs::metadata(tree.join("etc/motd")).unwrap().mode() & 0o7777,
        0o600
    );
    assert_eq!(
        fs::read_to_string(tree.join("opt/app/env")).unwrap(),
        "production\n"
    );
    assert_eq!(
        fs::read_to_string(tree.join("opt/app/setup-ran")).unwrap(),
        "setup-ran\n"
    );
    assert_eq!(
        fs::read_to_string(tree.join("opt/app/config.ini")).unwrap(),
        "[app]\nport = 8080\n"
    );
    assert_eq!(
        fs::metadata(tree.join("opt/app/bin/run")).unwrap().mode() & 0o777,
        0o755
    );
    // Owners and the base's own files survive.
    assert_eq!(
        fs::metadata(tree.join("home/alice/notes.txt"))
            .unwrap()
            .uid(),
        1000
    );
    assert_eq!(
        fs::read_to_string(tree.join("etc/resolv.conf")).unwrap(),
        "nameserver 192.0.2.53\n"
    );
    assert_eq!(
        fs::read_link(tree.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
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
    assert!(out.execution.succeeded());
    let expected = serde_json::json!({"build_id": "e2e-1", "status": "SUCCEEDED", "version": "busybox-e2e@1.0"});
    assert_eq!(out.execution.output.as_ref(), Some(&expected));
    assert_eq!(out.teardown.as_ref(), Some(&expected));
    assert_eq!(out.status(), "SUCCEEDED");
    assert_eq!(out.version(), Some("busybox-e2e@1.0"));
    assert_eq!(out.launch["cache_hit"], false);
    assert_eq!(out.record.status, BuildStatus::Succeeded);
    let base_digest = file_digest(&base).unwrap();
    assert_eq!(out.record.base_id.as_deref(), Some(base_digest.as_str()));

    // Two artifacts, provider local, id = the file's sha256, path recorded.
    let out_dir = h.path("images/busybox-e2e/e2e-1");
    let names: Vec<&str> = out
        .record
        .artifacts
        .iter()
        .map(|a| a.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["local/busybox-e2e.qcow2", "local/busybox-e2e.tar.zst"]
    );
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
    assert_eq!(
        resolved.package.parent.as_deref(),
        Some(base_digest.as_str())
    );
    assert_eq!(resolved.package.build_id.as_deref(), Some("e2e-1"));

    // The work dir is gone; the outputs are kept; the ledger says so.
    assert!(!h.backend.work_dir("e2e-1").unwrap().exists());
    assert_eq!(h.work_dirs(), Vec::<String>::new());
    let work: Vec<_> = out.record.resources_of(ResourceKind::WorkDir).collect();
    assert_eq!(work.len(), 1);
    assert!(work[0].deleted);
    let files: Vec<_> = out.record.resources_of(ResourceKind::File).collect();
    assert_eq!(files.len(), 2);
    assert!(files.iter().all(|f| f.keep_on_success && !f.deleted));
    assert!(h.our_mounts().is_empty(), "{:?}", h.our_mounts());

    // Provisioner output was kept as notes.
    let provision = out
        .record
        .steps
        .iter()
        .find(|s| s.step == Step::Provision)
        .unwrap();
    let notes = provision.notes.join("\n");
    assert!(notes.contains("setup: running as uid 0"), "{notes}");
    assert!(notes.contains("setup: done"), "{notes}");
    assert!(
        notes.contains("provisioners[3] (file files/app -> /opt/app): copied 2 file(s)"),
        "{notes}"
    );

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
    assert!(fs::symlink_metadata(from_tar.join("etc/bakehouse.fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    let null = fs::symlink_metadata(from_tar.join("etc/bakehouse-null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), fs::metadata("/dev/null").unwrap().rdev());
}

fn names_of(dir: &Path) -> Vec<String> {
    names(dir).into_iter().collect()
}

/// A busybox base packed as `.tar.gz` next to a recipe directory.
fn tar_gz_base(h: &Harness) -> std::path::PathBuf {
    busybox_rootfs(&h.path("base-root"));
    let base = h.path("recipe/base.tar.gz");
    fs::create_dir_all(base.parent().unwrap()).unwrap();
    pack(&h.path("base-root"), &base);
    base
}

#[tokio::test]
async fn a_failing_provisioner_fails_the_build_and_tears_everything_down() {
    let h = Harness::new(None);
    tar_gz_base(&h);
    h.write(
        "recipe/scripts/fail.sh",
        "#!/bin/sh\necho 'about to fail' >&2\nexit 3\n",
    );
    let recipe = h.write(
        "recipe/failing.yaml",
        r#"name: failing
base: {path: base.tar.gz}
provisioners:
  - type: shell
    inline: ["echo first-ok > /first"]
  - type: shell
    script: scripts/fail.sh
  - type: shell
    inline: ["echo never > /never"]
"#,
    );

    let out = h.build(&recipe, "fail-1").await;

    let (step, kind, message) = out.error.clone().expect("the build fails");
    assert_eq!(step, Step::Provision);
    assert_eq!(kind, "BuildFailed");
    assert!(
        message.contains("provisioners[1] (shell script scripts/fail.sh) failed with exit code 3"),
        "{message}"
    );
    assert!(message.contains("about to fail"), "{message}");
    assert!(matches!(
        &out.execution.status,
        ExecutionStatus::Failed { error, cause } if error == "BuildFailed"
            && bakehouse::pipeline::failure_message(error, cause.as_deref()) == message
    ));
    assert_eq!(out.teardown.as_ref().unwrap()["status"], "FAILED");
    assert_eq!(out.status(), "FAILED");
    assert_eq!(out.version(), None);
    assert_eq!(out.record.status, BuildStatus::Failed);
    let failure = out.record.failure.clone().expect("failure recorded");
    assert_eq!(failure.step, "provision");
    assert_eq!(failure.error, "BuildFailed");
    assert!(
        failure.cause.contains("scripts/fail.sh"),
        "{}",
        failure.cause
    );

    // Teardown ran: no work dir, no output, nothing mounted, nothing registered.
    assert!(!h.backend.work_dir("fail-1").unwrap().exists());
    assert_eq!(h.work_dirs(), Vec::<String>::new());
    assert!(!h.path("images/failing").exists());
    assert!(
        out.record.resources.iter().all(|r| r.deleted),
        "{:?}",
        out.record.resources
    );
    assert!(h.our_mounts().is_empty(), "{:?}", h.our_mounts());
    assert!(h.registry.list(Some("failing")).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_failure_after_capture_removes_the_outputs() {
    let h = Harness::new(Some(Step::Capture));
    tar_gz_base(&h);
    let recipe = h.write(
        "recipe/late.yaml",
        "name: late\nbase: {path: base.tar.gz}\nprovisioners:\n  - type: shell\n    inline: [\"echo x > /x\"]\n",
    );

    let out = h.build(&recipe, "late-1").await;

    let (step, kind, message) = out.error.clone().expect("injected failure");
    assert_eq!((step, kind.as_str()), (Step::Capture, "BuildFailed"));
    assert!(
        message.contains("injected failure after capture"),
        "{message}"
    );
    assert_eq!(out.status(), "FAILED");
    // Capture had written both files (they are in the ledger) ...
    let files: Vec<_> = out.record.resources_of(ResourceKind::File).collect();
    assert_eq!(files.len(), 2);
    assert!(files
        .iter()
        .all(|f| f.id.as_deref().is_some_and(|d| d.starts_with("sha256:"))));
    // ... and teardown removed them, their sidecars and the build's directory.
    assert!(files.iter().all(|f| f.deleted));
    for f in &files {
        assert!(!Path::new(&f.name).exists(), "{}", f.name);
        assert!(!Path::new(&format!("{}.sha256", f.name)).exists());
    }
    assert!(!h.path("images/late/late-1").exists());
    assert_eq!(h.work_dirs(), Vec::<String>::new());
    assert!(h.registry.list(Some("late")).await.unwrap().is_empty());
}

/// Interface names in a `/proc/net/dev` listing.
fn interfaces(text: &str) -> Vec<String> {
    let mut out: Vec<String> = text
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|n| n.trim().to_string())
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn provisioners_run_isolated_with_network_only_when_asked() {
    let h = Harness::new(None);
    tar_gz_base(&h);
    let probe = r#"
provisioners:
  - type: shell
    inline:
      - hostname > /probe-hostname
      - echo $$ > /probe-pid
      - tr '\0' ' ' < /proc/1/cmdline > /probe-pid1
      - ps -o pid= | wc -l > /probe-processes
      - cat /proc/net/dev > /probe-net
      - cat /etc/resolv.conf > /probe-resolv
      - ls /dev > /probe-dev
      - head -c 16 /dev/urandom | wc -c > /probe-urandom
      - echo discarded > /dev/null
"#;
    let closed = h.write(
        "recipe/closed.yaml",
        &format!("name: closed\nbase: {{path: base.tar.gz}}\n{probe}"),
    );
    let open = h.write(
        "recipe/open.yaml",
        &format!("name: open\nbase: {{path: base.tar.gz}}\nbuilder: {{network: true}}\n{probe}"),
    );
    let host_name = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();

    let out = h.build(&closed, "closed-1").await;
    assert_eq!(out.error, None);
    let tree = h.path("closed-tree");
    untar(&out.artifact(".tar.zst"), &tree);
    let read = |name: &str| fs::read_to_string(tree.join(name)).unwrap();
    // UTS: its own host name; the host's is untouched.
    assert_eq!(read("probe-hostname"), "bakehouse-build\n");
    assert_ne!(host_name.trim(), "bakehouse-build");
    assert_eq!(
        fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        host_name
    );
    // PID: its own namespace, whose PID 1 is bubblewrap's reaper, PID 2
    // the job's wrapper and PID 3 the provisioner's shell.
    assert_eq!(read("probe-pid"), "3\n");
    assert!(
        read("probe-pid1").starts_with("bwrap "),
        "{}",
        read("probe-pid1")
    );
    // Only the sandbox's processes are visible (bwrap, sh, ps, wc).
    let processes: usize = read("probe-processes").trim().parse().unwrap();
    assert!(
        (3..=5).contains(&processes),
        "{processes} processes visible"
    );
    // Network: only the loopback interface.
    assert_eq!(interfaces(&read("probe-net")), ["lo"]);
    assert_eq!(read("probe-resolv"), "nameserver 192.0.2.53\n");
    // A minimal /dev that works.
    let dev_listing = read("probe-dev");
    let dev: Vec<&str> = dev_listing.lines().collect();
    for d in ["full", "null", "random", "tty", "urandom", "zero"] {
        assert!(dev.contains(&d), "{dev:?}");
    }
    assert!(!dev.contains(&"sda") && !dev.contains(&"mem"), "{dev:?}");
    assert_eq!(read("probe-urandom").trim(), "16");
    // Nothing the run mounted is left, and the tree's own /dev is unchanged.
    assert!(h.our_mounts().is_empty(), "{:?}", h.our_mounts());
    assert_eq!(names(&tree.join("dev")), Default::default());

    let out = h.build(&open, "open-1").await;
    assert_eq!(out.error, None);
    let tree = h.path("open-tree");
    untar(&out.artifact(".tar.zst"), &tree);
    let read = |name: &str| fs::read_to_string(tree.join(name)).unwrap();
    // network: true shares the host's interfaces and resolver for the run ...
    let host_net = interfaces(&fs::read_to_string("/proc/net/dev").unwrap());
    assert_eq!(interfaces(&read("probe-net")), host_net);
    assert!(
        host_net.len() > 1,
        "the host has only {host_net:?}: cannot tell"
    );
    assert_eq!(
        read("probe-resolv"),
        fs::read_to_string("/etc/resolv.conf").unwrap()
    );
    // ... and the image keeps its own resolv.conf afterwards.
    assert_eq!(read("etc/resolv.conf"), "nameserver 192.0.2.53\n");
    assert_eq!(read("probe-hostname"), "bakehouse-build\n");
    assert!(h.our_mounts().is_empty(), "{:?}", h.our_mounts());
}

#[tokio::test]
async fn directory_tar_zst_qcow2_raw_and_registry_bases_all_unpack() {
    let h = Harness::new(None);
    busybox_rootfs(&h.path("recipe/base-dir"));
    let layer_a = h.write(
        "recipe/layer-a.yaml",
        "name: layer-a\nbase: {path: base-dir}\nprovisioners:\n  - type: shell\n    inline: [\"echo a > /layer-a\"]\n",
    );
    let a = h.build(&layer_a, "a-1").await;
    assert_eq!(a.error, None);
    assert_eq!(a.version(), Some("layer-a@1.0"));
    assert!(a.record.base_id.as_deref().unwrap().starts_with("sha256:"));
    let (a_qcow2, a_tar) = (a.artifact(".qcow2"), a.artifact(".tar.zst"));

    // Each later build checks what it got from layer A, FIFO and device
    // node included, and adds its own file.
    let check = |name: &str| {
        format!(
            "provisioners:\n  - type: shell\n    inline:\n      - test \"$(cat /layer-a)\" = a\n      - test -p /etc/bakehouse.fifo\n      - test -c /etc/bakehouse-null\n      - test \"$(stat -c %u /home/alice/notes.txt)\" = 1000\n      - echo {name} > /layer-{name}\n"
        )
    };
    // A raw ext4 image too (what qemu-img makes of the qcow2).
    let a_raw = h.path("a.raw");
    local_support::run(
        std::process::Command::new("qemu-img")
            .args(["convert", "-f", "qcow2", "-O", "raw"])
            .arg(&a_qcow2)
            .arg(&a_raw),
    );
    let bases = [
        ("b", "registry: \"layer-a@1.x\"".to_string()),
        ("c", format!("path: {}", a_tar.display())),
        ("d", format!("path: {}", a_qcow2.display())),
        ("e", format!("path: {}", a_raw.display())),
    ];
    for (name, base) in bases {
        let recipe = h.write(
            &format!("recipe/layer-{name}.yaml"),
            &format!("name: layer-{name}\nbase: {{{base}}}\n{}", check(name)),
        );
        let out = h.build(&recipe, &format!("{name}-1")).await;
        assert_eq!(out.error, None, "layer {name}");
        assert_eq!(out.status(), "SUCCEEDED", "layer {name}");
        let tree = h.path(&format!("tree-{name}"));
        untar(&out.artifact(".tar.zst"), &tree);
        assert_eq!(fs::read_to_string(tree.join("layer-a")).unwrap(), "a\n");
        assert_eq!(
            fs::read_to_string(tree.join(format!("layer-{name}"))).unwrap(),
            format!("{name}\n")
        );
        let expected_base = match name {
            "c" => file_digest(&a_tar).unwrap(),
            "e" => file_digest(&a_raw).unwrap(),
            _ => file_digest(&a_qcow2).unwrap(),
        };
        assert_eq!(
            out.record.base_id.as_deref(),
            Some(expected_base.as_str()),
            "layer {name}"
        );
        if name == "b" {
            // The registry base resolved to A's qcow2, with A as parent.
            assert_eq!(out.record.parent.as_deref(), Some("layer-a@1.0"));
            let b = h.resolve("layer-b").await;
            assert_eq!(b.package.parent.as_deref(), Some("layer-a@1.0"));
        } else {
            assert_eq!(out.record.parent, None);
        }
    }
    assert_eq!(h.work_dirs(), Vec::<String>::new());
}

#[tokio::test]
async fn building_the_same_recipe_again_is_a_cache_hit() {
    let h = Harness::new(None);
    tar_gz_base(&h);
    let recipe = h.write(
        "recipe/cached.yaml",
        "name: cached\nbase: {path: base.tar.gz}\nprovisioners:\n  - type: shell\n    inline: [\"echo once > /once\"]\n",
    );
    let first = h.build(&recipe, "cache-1").await;
    assert_eq!(first.error, None);
    assert_eq!(first.version(), Some("cached@1.0"));

    let second = h.build(&recipe, "cache-2").await;

    assert_eq!(second.error, None);
    assert!(second.execution.succeeded());
    assert_eq!(
        second.teardown, None,
        "a cache hit launches nothing to tear down"
    );
    assert_eq!(second.launch["cache_hit"], true);
    assert_eq!(second.launch["version"], "cached@1.0");
    assert_eq!(second.status(), "SUCCEEDED");
    assert_eq!(second.version(), Some("cached@1.0"));
    assert!(second.record.cache_hit);
    assert_eq!(second.record.bake_key, first.record.bake_key);
    // Nothing was made for the second build: no ledger entry, no work
    // dir, no images.
    assert_eq!(second.record.resources, Vec::new());
    assert!(!h.backend.work_dir("cache-2").unwrap().exists());
    assert!(!h.path("images/cached/cache-2").exists());
    assert_eq!(names_of(&h.path("images/cached")), ["cache-1"]);
    assert_eq!(h.registry.list(Some("cached")).await.unwrap().len(), 1);
}

#[tokio::test]
async fn tree_links_never_lead_clean_or_uploads_onto_the_host() {
    let h = Harness::new(None);
    let root = h.path("recipe/base-links");
    busybox_rootfs(&root);
    // Host files that absolute links in the tree point at.
    let canary = h.path("host-canary");
    let host_files = [
        ("ssh/ssh_host_rsa_key", "HOST KEY\n"),
        ("home-bob/.bash_history", "host history\n"),
        ("home-bob/.ssh/authorized_keys", "host key\n"),
        ("log/syslog", "host log\n"),
        ("tmp/keep", "host temp\n"),
        ("machine-id", "host machine id\n"),
    ];
    for (rel, content) in host_files {
        h.write(&format!("host-canary/{rel}"), content);
    }
    let link = |in_tree: &str, target: &str| {
        let path = root.join(in_tree);
        if path.is_dir() {
            fs::remove_dir_all(&path).unwrap();
        }
        std::os::unix::fs::symlink(canary.join(target), &path).unwrap();
    };
    fs::create_dir_all(root.join("home")).unwrap();
    link("etc/ssh", "ssh");
    link("home/bob", "home-bob");
    link("var/log", "log");
    link("var/tmp", "tmp");
    fs::remove_file(root.join("etc/machine-id")).unwrap();
    link("etc/machine-id", "machine-id");
    h.write("recipe/files/sshd_config", "PasswordAuthentication no\n");
    let recipe = h.write(
        "recipe/links.yaml",
        r#"name: links
base: {path: base-links}
provisioners:
  - type: file
    source: files/sshd_config
    destination: /etc/ssh/sshd_config
  - type: shell
    inline: ["echo from-shell > /etc/ssh/from-shell"]
"#,
    );

    let out = h.build(&recipe, "links-1").await;

    assert_eq!(out.error, None);
    for (rel, content) in host_files {
        assert_eq!(
            fs::read_to_string(canary.join(rel)).unwrap(),
            content,
            "{rel}"
        );
    }
    assert_eq!(
        names(&canary.join("ssh")),
        ["ssh_host_rsa_key".to_string()].into_iter().collect()
    );
    // The image keeps its links as links.
    let tree = h.path("links-tree");
    untar(&out.artifact(".tar.zst"), &tree);
    assert_eq!(
        fs::read_link(tree.join("etc/ssh")).unwrap(),
        canary.join("ssh")
    );
    // ... except machine-id, which the policy replaces with an empty file.
    let machine_id = fs::symlink_metadata(tree.join("etc/machine-id")).unwrap();
    assert!(machine_id.is_file() && machine_id.len() == 0);
}

#[tokio::test]
async fn salt_and_ansible_run_when_installed_and_fail_clearly_when_not() {
    let h = Harness::new(None);
    let root = h.path("recipe/base-tools");
    busybox_rootfs(&root);
    let fake = |name: &str, body: &str| {
        let path = root.join("usr/bin").join(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    };
    fake(
        "salt-call",
        "echo \"$@\" > /salt-args\ncp -r \"$6\" /salt-tree\ncp -r \"$8\" /salt-pillar",
    );
    fake(
        "ansible-playbook",
        "echo \"$@\" > /ansible-args\npwd > /ansible-cwd\ncp -r \"$PWD\" /ansible-tree",
    );
    h.write("recipe/salt/top.sls", "base:\n  '*':\n    - web\n");
    h.write("recipe/salt/web.sls", "nginx: {pkg.installed: []}\n");
    h.write("recipe/pillar/top.sls", "base: {'*': [app]}\n");
    h.write("recipe/ansible/site.yml", "- hosts: all\n  tasks: []\n");
    let tools = r#"  - type: salt
    state_tree: salt
    pillar_root: pillar
    states: [web]
    pillar: {role: web}
  - type: ansible
    playbook: ansible/site.yml
    extra_vars: {env: prod}
"#;
    let ok = h.write(
        "recipe/tools.yaml",
        &format!("name: tools\nbase: {{path: base-tools}}\nprovisioners:\n{tools}"),
    );
    let out = h.build(&ok, "tools-1").await;
    assert_eq!(out.error, None);
    let tree = h.path("tools-tree");
    untar(&out.artifact(".tar.zst"), &tree);
    assert_eq!(
        fs::read_to_string(tree.join("salt-args")).unwrap(),
        "--config-dir /run/bakehouse-p0/conf --local --retcode-passthrough --file-root /run/bakehouse-p0/tree --pillar-root /run/bakehouse-p0/pillar state.apply web pillar={\"role\":\"web\"}\n"
    );
    assert_eq!(
        fs::read_to_string(tree.join("salt-pillar/top.sls")).unwrap(),
        "base: {'*': [app]}\n"
    );
    assert_eq!(
        fs::read_to_string(tree.join("salt-tree/web.sls")).unwrap(),
        "nginx: {pkg.installed: []}\n"
    );
    assert_eq!(
        fs::read_to_string(tree.join("ansible-args")).unwrap(),
        "-c local -i localhost, --extra-vars {\"env\":\"prod\"} site.yml\n"
    );
    assert_eq!(
        fs::read_to_string(tree.join("ansible-cwd")).unwrap(),
        "/run/bakehouse-p1/play\n"
    );
    assert!(tree.join("ansible-tree/site.yml").is_file());

    let missing = h.write(
        "recipe/no-ansible.yaml",
        &format!(
            "name: no-ansible\nbase: {{path: base-tools}}\nprovisioners:\n  - type: shell\n    inline: [\"rm /usr/bin/ansible-playbook\"]\n{tools}"
        ),
    );
    let out = h.build(&missing, "tools-2").await;
    let (step, kind, message) = out.error.clone().expect("ansible is missing");
    assert_eq!((step, kind.as_str()), (Step::Provision, "BuildFailed"));
    assert_eq!(
        message,
        "provisioners[2] (ansible playbook ansible/site.yml) failed with exit code 127: bakehouse: ansible-playbook is not installed: install Ansible in the base or an earlier provisioner"
    );
    assert_eq!(out.status(), "FAILED");
}

#[tokio::test]
async fn steps_are_idempotent_when_retried() {
    use serde_json::json;
    let h = Harness::new(None);
    tar_gz_base(&h);
    let recipe = h.write(
        "recipe/retried.yaml",
        "name: retried\nbase: {path: base.tar.gz}\nprovisioners:\n  - type: shell\n    inline: [\"echo run >> /opt/runs\"]\n",
    );
    let (_, bundle) = bakehouse::pipeline::load_for_build(&recipe).unwrap();
    let request = json!({"recipe": bundle.recipe, "files": bundle.files, "build_id": "retry-1"});
    let p = &h.pipeline;
    let id = json!({"build_id": "retry-1"});

    p.invoke(
        Step::Launch,
        json!({"request": request, "execution": "retry-1"}),
    )
    .await
    .unwrap();
    let root = h.backend.work_dir("retry-1").unwrap().join("root");
    fs::write(root.join("sentinel"), "kept").unwrap();
    // A retried launch keeps the complete unpack ...
    p.invoke(
        Step::Launch,
        json!({"request": request, "execution": "retry-1"}),
    )
    .await
    .unwrap();
    assert_eq!(fs::read_to_string(root.join("sentinel")).unwrap(), "kept");
    // ... and redoes a partial one (no completion marker).
    fs::remove_file(
        h.backend
            .work_dir("retry-1")
            .unwrap()
            .join("state/unpacked"),
    )
    .unwrap();
    p.invoke(Step::Launch, id.clone()).await.unwrap();
    assert!(!root.join("sentinel").exists());
    assert!(root.join("bin/busybox").is_file());

    for _ in 0..2 {
        p.invoke(Step::Provision, id.clone()).await.unwrap();
    }
    assert_eq!(fs::read_to_string(root.join("opt/runs")).unwrap(), "run\n");
    for _ in 0..2 {
        p.invoke(Step::Clean, id.clone()).await.unwrap();
    }
    p.invoke(Step::Capture, id.clone()).await.unwrap();
    let first = h.builds.get("retry-1").await.unwrap().unwrap().artifacts;
    let qcow2 = Path::new(first[0].path.as_deref().unwrap()).to_path_buf();
    let written = fs::metadata(&qcow2).unwrap().modified().unwrap();
    p.invoke(Step::Capture, id.clone()).await.unwrap();
    let second = h.builds.get("retry-1").await.unwrap().unwrap().artifacts;
    assert_eq!(first, second);
    assert_eq!(
        fs::metadata(&qcow2).unwrap().modified().unwrap(),
        written,
        "reused, not rewritten"
    );
    let record = h.builds.get("retry-1").await.unwrap().unwrap();
    assert_eq!(record.resources_of(ResourceKind::File).count(), 2);
    assert_eq!(record.resources_of(ResourceKind::WorkDir).count(), 1);
    p.invoke(Step::Register, id.clone()).await.unwrap();
    p.invoke(Step::Register, id.clone()).await.unwrap();
    assert_eq!(h.registry.list(Some("retried")).await.unwrap().len(), 1);
    let state = json!({"state": {"build": {"build_id": "retry-1"}}});
    for _ in 0..2 {
        let out = p.invoke(Step::Teardown, state.clone()).await.unwrap();
        assert_eq!(out["status"], "SUCCEEDED");
        assert_eq!(out["version"], "retried@1.0");
    }
    assert!(!h.backend.work_dir("retry-1").unwrap().exists());
    assert!(qcow2.is_file());
}

#[tokio::test]
async fn a_tree_without_a_shell_is_cleaned_with_the_hosts_busybox() {
    let h = Harness::new(None);
    let root = h.path("recipe/base-noshell");
    busybox_rootfs(&root);
    fs::remove_dir_all(root.join("bin")).unwrap();
    h.write("recipe/files/config", "setting=1\n");
    let recipe = h.write(
        "recipe/noshell.yaml",
        "name: noshell\nbase: {path: base-noshell}\nprovisioners:\n  - type: file\n    source: files/config\n    destination: /etc/app.conf\n",
    );

    let out = h.build(&recipe, "noshell-1").await;

    assert_eq!(out.error, None);
    let tree = h.path("noshell-tree");
    untar(&out.artifact(".tar.zst"), &tree);
    assert_cleaned(&tree);
    assert_eq!(
        fs::read_to_string(tree.join("etc/app.conf")).unwrap(),
        "setting=1\n"
    );
    assert!(!tree.join("bin").exists());
    assert_eq!(names(&tree.join("run")), Default::default());
}

#[tokio::test]
async fn an_ami_base_is_refused_by_local_builds() {
    let h = Harness::new(None);
    let recipe = h.write(
        "recipe/ami.yaml",
        "name: ami\nbase: {image: ami-0123456789abcdef0}\nprovisioners:\n  - type: shell\n    inline: [\"true\"]\n",
    );

    let out = h.build(&recipe, "ami-1").await;

    let (step, kind, message) = out.error.clone().expect("refused");
    assert_eq!((step, kind.as_str()), (Step::Launch, "NonRetryable"));
    assert_eq!(
        message,
        "local builds need a base path or a registry reference"
    );
    assert_eq!(out.status(), "FAILED");
    assert_eq!(out.record.resources, Vec::new());
    assert_eq!(h.work_dirs(), Vec::<String>::new());
}
