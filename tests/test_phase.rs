//! The test step tests what was captured: a captured disk boots in qemu
//! (TCG) from a throwaway overlay and the recipe's tests run inside the
//! booted system; a filesystem output is tested in the sandbox over the
//! captured archive, read-only. A failing test fails the build at `Test`,
//! registers nothing and leaves no artifact, qemu process, mount or work
//! directory.

mod local_support;

use std::fs;
use std::path::Path;

use bakehouse::build::{BuildStatus, Step};
use sha2::{Digest, Sha256};

use local_support::disks::{self, demo_disk};
use local_support::{busybox_rootfs, pack, qcow2_to_raw, Harness};

/// The notes of one step, as one text.
fn step_notes(out: &local_support::Outcome, step: Step) -> String {
    out.record
        .steps
        .iter()
        .filter(|s| s.step == step)
        .flat_map(|s| s.notes.iter().cloned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Live processes (zombies aside) in a control group named after `build_id`.
fn processes_of(build_id: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let cgroup = entry.path().join("cgroup");
        if let Ok(text) = fs::read_to_string(&cgroup) {
            if text.contains(build_id) {
                let stat = fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
                // A zombie runs nothing and holds nothing: a sandbox's
                // inner process reparented to the host's init, which reaps
                // it when it gets round to it.
                let state = stat
                    .rsplit_once(") ")
                    .map(|(_, rest)| rest.split(' ').next());
                if state == Some(Some("Z")) {
                    continue;
                }
                let cmd = fs::read_to_string(entry.path().join("cmdline")).unwrap_or_default();
                found.push(format!("{} [{}]", cmd.replace('\0', " "), stat.trim()));
            }
        }
    }
    found
}

/// A recipe on a copy of the demo's bootable disk.
fn disk_recipe(h: &Harness, name: &str, tests: &[&str]) -> std::path::PathBuf {
    let base = h.path("recipe/bootable.qcow2");
    fs::create_dir_all(base.parent().unwrap()).unwrap();
    if !base.exists() {
        fs::copy(demo_disk(), &base).unwrap();
    }
    let tests: String = tests
        .iter()
        .map(|t| format!("  - {}\n", serde_json::to_string(t).unwrap()))
        .collect();
    h.write(
        &format!("recipe/{name}.yaml"),
        &format!(
            "name: {name}\nbase: {{path: bootable.qcow2}}\nprovisioners:\n  - type: shell\n    inline:\n      - mkdir -p /root/.ssh && echo 'ssh-ed25519 AAAA build-key' > /root/.ssh/authorized_keys\n      - echo 'cat /etc/shadow' > /root/.bash_history\ntest:\n{tests}"
        ),
    )
}

fn sha256(path: &Path) -> String {
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(fs::read(path).unwrap()))
    )
}

#[tokio::test]
async fn tests_run_inside_the_booted_captured_disk() {
    let h = Harness::new(None);
    let recipe = disk_recipe(
        &h,
        "booted",
        &[
            "test \"$(cat /proc/1/comm)\" = systemd",
            // Generated at this boot: the captured file is empty, and the
            // booted one is newer than the boot.
            "test -s /etc/machine-id && test \"$(stat -c %Y /etc/machine-id)\" -ge \"$(( $(date +%s) - $(cut -d. -f1 /proc/uptime) - 2 ))\" && echo machine-id=$(cat /etc/machine-id)",
            "! test -e /root/.ssh/authorized_keys && ! test -e /root/.bash_history",
            "echo booted-kernel=$(uname -r)",
        ],
    );
    let out = h.build(&recipe, "booted-1").await;
    assert_eq!(out.status(), "SUCCEEDED", "{:?}", out.error);
    let notes = step_notes(&out, Step::Test);
    for i in 0..4 {
        assert!(notes.contains(&format!("test[{i}] ")), "{notes}");
    }
    assert!(!notes.contains("did not finish"), "{notes}");
    let machine_id = notes
        .split("machine-id=")
        .nth(1)
        .map(|rest| {
            rest.chars()
                .take_while(char::is_ascii_hexdigit)
                .collect::<String>()
        })
        .unwrap_or_default();
    assert_eq!(machine_id.len(), 32, "{notes}");
    assert!(notes.contains("booted-kernel=6."), "{notes}");

    // The artifact is what capture wrote: same digest as recorded, and no
    // trace of the test unit, the script or the machine id of the boot.
    let qcow2 = out.artifact(".qcow2");
    let recorded = out
        .record
        .artifacts
        .iter()
        .find(|a| a.name.ends_with(".qcow2"))
        .unwrap()
        .image_id
        .clone();
    assert_eq!(sha256(&qcow2), recorded);
    let raw = qcow2_to_raw(&qcow2, h.dir.path());
    let root = disks::table(&raw)["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["start"].as_u64().unwrap() * 512)
        .find(|at| disks::blkid(&raw, *at).contains("ext4"))
        .expect("an ext4 root");
    for path in [
        "/.bakehouse-test",
        "/etc/systemd/system/bakehouse-test.service",
        "/etc/systemd/system/multi-user.target.wants/bakehouse-test.service",
    ] {
        let stat = std::process::Command::new("debugfs")
            .arg("-R")
            .arg(format!("stat {path}"))
            .arg(format!("{}?offset={root}", raw.display()))
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&stat.stderr).contains("not found"),
            "{path} is in the artifact"
        );
    }
    let machine = disks::debugfs_at(&raw, root, "cat /etc/machine-id");
    assert!(machine.trim().is_empty(), "captured machine-id {machine:?}");
    assert_eq!(processes_of("booted-1"), Vec::<String>::new());
    assert!(h.our_mounts().is_empty(), "{:?}", h.our_mounts());
    assert!(h.work_dirs().is_empty(), "{:?}", h.work_dirs());
}

#[tokio::test]
async fn a_failing_test_fails_at_test_and_leaves_nothing() {
    let h = Harness::new(None);
    let recipe = disk_recipe(&h, "failing", &["true", "echo about-to-fail; exit 3"]);
    let out = h.build(&recipe, "failing-1").await;
    assert_eq!(out.record.status, BuildStatus::Failed);
    let (step, kind, cause) = out.error.clone().expect("a failure");
    assert_eq!((step, kind.as_str()), (Step::Test, "BuildFailed"));
    assert!(
        cause.contains("test[1]")
            && cause.contains("exit code 3")
            && cause.contains("about-to-fail"),
        "{cause}"
    );
    assert_eq!(out.record.version, None);
    assert!(h.registry.list(Some("failing")).await.unwrap().is_empty());
    for a in &out.record.artifacts {
        let path = a.path.clone().unwrap();
        assert!(!Path::new(&path).exists(), "{path} left");
    }
    assert_eq!(processes_of("failing-1"), Vec::<String>::new());
    assert!(h.our_mounts().is_empty(), "{:?}", h.our_mounts());
    assert!(h.work_dirs().is_empty(), "{:?}", h.work_dirs());
}

#[tokio::test]
async fn filesystem_outputs_are_tested_read_only_over_the_captured_archive() {
    let h = Harness::new(None);
    busybox_rootfs(&h.path("base-root"));
    let base = h.path("recipe/base.tar.gz");
    fs::create_dir_all(base.parent().unwrap()).unwrap();
    pack(&h.path("base-root"), &base);
    let recipe = h.write(
        "recipe/tree.yaml",
        "name: tree\nbase: {path: base.tar.gz}\nprovisioners:\n  - type: shell\n    inline: [\"echo built > /etc/built\", \"echo key > /root/.ash_history\"]\ntest:\n  - grep -q built /etc/built\n  - \"! test -e /root/.ash_history\"\n  - touch /etc/written-by-a-test\n",
    );
    let out = h.build(&recipe, "tree-1").await;
    let (step, _, cause) = out.error.clone().expect("the write fails");
    assert_eq!(step, Step::Test);
    assert!(
        cause.contains("test[2]") && cause.contains("Read-only"),
        "{cause}"
    );
    let notes = step_notes(&out, Step::Test);
    assert!(
        notes.contains("test[0] `grep -q built /etc/built`: exit 0"),
        "{notes}"
    );
    assert!(
        notes.contains("test[1] `! test -e /root/.ash_history`: exit 0"),
        "{notes}"
    );
    assert!(h.work_dirs().is_empty(), "{:?}", h.work_dirs());
}
