//! Interrupting local builds through the real binary: SIGINT and SIGTERM
//! tear the build down and record it CANCELLED with the step it was in;
//! SIGKILL leaves no running provisioner, and `builds gc` cleans the rest;
//! a build id a live build holds is refused; the same recipe builds again
//! afterwards. On a whole-disk base the overlay a killed build leaves
//! mounted is detached by `builds gc` too.

mod local_support;

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use local_support::disks::{self, Fs};
use local_support::{busybox_rootfs, pack};
use serde_json::Value;

/// A home (registry, records, work and images) with a recipe whose only
/// provisioner waits in `sleep <marker>` until the script is changed.
struct World {
    dir: tempfile::TempDir,
    marker: String,
}

impl World {
    fn new(marker: u32) -> World {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        busybox_rootfs(&tree);
        fs::create_dir_all(dir.path().join("recipe")).unwrap();
        pack(&tree, &dir.path().join("recipe/base.tar.gz"));
        let world = World {
            dir,
            marker: marker.to_string(),
        };
        world.script(&format!("#!/bin/sh\necho waiting\nsleep {marker}\n"));
        fs::write(
            world.path("recipe/slow.yaml"),
            "name: slow\nbase: {path: base.tar.gz}\nprovisioners:\n  - type: shell\n    script: wait.sh\n",
        )
        .unwrap();
        world
    }

    /// The same, with the tree on an MBR disk (a kept base and an overlay).
    fn on_disk(marker: u32) -> World {
        let world = World::new(marker);
        let tree = world.path("tree");
        fs::write(tree.join("etc/fstab"), "LABEL=root / ext4 defaults 0 1\n").unwrap();
        let fs = Fs {
            tree: &tree,
            mib: 48,
            uuid: "0a1b2c3d-1111-4222-8333-444455556666",
            label: "root",
        };
        disks::make_disk(&world.path("recipe/base.raw"), "dos", "0x1a2b3c4d", &[fs]);
        fs::write(
            world.path("recipe/slow.yaml"),
            "name: slow\nbase: {path: base.raw}\nprovisioners:\n  - type: shell\n    script: wait.sh\n",
        )
        .unwrap();
        world
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn script(&self, text: &str) {
        fs::create_dir_all(self.path("recipe")).unwrap();
        fs::write(self.path("recipe/wait.sh"), text).unwrap();
    }

    fn command(&self) -> Command {
        local_support::cli(&self.path("home"))
    }

    fn start(&self, id: &str) -> Child {
        self.command()
            .args(["build", "--build-id", id])
            .arg(self.path("recipe/slow.yaml"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    fn record(&self, id: &str) -> Value {
        let out = self.run(&["--json", "builds", "show", id]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Processes whose command line is `sleep <marker>`.
    fn sleepers(&self) -> Vec<u32> {
        let wanted = format!("sleep\0{}\0", self.marker);
        fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.ends_with(wanted.as_bytes()))
            })
            .collect()
    }

    fn wait_for_sleeper(&self, cli: &mut Child) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.sleepers().is_empty() {
            if let Some(status) = cli.try_wait().unwrap() {
                let mut err = String::new();
                if let Some(mut pipe) = cli.stderr.take() {
                    std::io::Read::read_to_string(&mut pipe, &mut err).unwrap();
                }
                panic!("the build ended ({status}) before its provisioner ran:\n{err}");
            }
            assert!(Instant::now() < deadline, "the provisioner never started");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Nothing of the build is left: no sandbox process, no mount under the
    /// home, no work directory; the record is not RUNNING.
    fn assert_clean(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.sleepers().is_empty() {
            assert!(
                Instant::now() < deadline,
                "sandbox processes left: {:?}",
                self.sleepers()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let home = self.path("home").display().to_string();
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(&home), "mounts left:\n{mounts}");
        assert!(
            !self.path(&format!("home/work/{id}")).exists(),
            "work dir left"
        );
        let record = self.record(id);
        assert_eq!(record["status"], "CANCELLED", "{record:#}");
        assert_eq!(record["failure"]["step"], "provision", "{record:#}");
        assert_eq!(record["failure"]["error"], "Cancelled", "{record:#}");
    }

    /// The same recipe, no longer waiting, builds.
    fn assert_builds_again(&self) {
        self.script("#!/bin/sh\necho quick\n");
        let out = self.run(&["build", self.path("recipe/slow.yaml").to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the CLI did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn interrupted_by(sig: libc::c_int, code: i32, marker: u32) {
    let world = World::new(marker);
    let mut cli = world.start("stop-1");
    world.wait_for_sleeper(&mut cli);

    // The id of a live build is refused, and the live build goes on.
    let again = world.run(&[
        "build",
        "--build-id",
        "stop-1",
        world.path("recipe/slow.yaml").to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("in use by running process"), "{stderr}");
    assert!(!world.sleepers().is_empty());
    assert_eq!(world.record("stop-1")["status"], "RUNNING");

    signal(&cli, sig);
    let status = wait_exit(&mut cli, Duration::from_secs(5));
    assert_eq!(status.code(), Some(code), "{status:?}");
    world.assert_clean("stop-1");
    world.assert_builds_again();
}

#[test]
fn sigint_tears_the_build_down_and_records_it_cancelled() {
    interrupted_by(libc::SIGINT, 130, 607);
}

#[test]
fn sigterm_tears_the_build_down_and_records_it_cancelled() {
    interrupted_by(libc::SIGTERM, 143, 608);
}

#[test]
fn sigkill_leaves_no_provisioner_and_gc_cleans_the_rest() {
    sigkill_then_gc(World::new(609), false);
}

#[test]
fn sigkill_on_a_whole_disk_base_leaves_an_overlay_gc_detaches() {
    sigkill_then_gc(World::on_disk(611), true);
}

/// Kills a started `kill-1` build's CLI (running on its overlay when
/// `overlay`); `builds gc` collects what it left.
fn sigkill_then_gc(world: World, overlay: bool) {
    let mut cli = world.start("kill-1");
    world.wait_for_sleeper(&mut cli);
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = world.path("home/work/kill-1/root").display().to_string();
    assert_eq!(mounts.contains(&root), overlay, "{mounts}");
    cli.kill().unwrap();
    cli.wait().unwrap();
    // The provisioner dies with the CLI, before any gc.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !world.sleepers().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the provisioner outlived the CLI"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(world.record("kill-1")["status"], "RUNNING");
    let gc = world.run(&["builds", "gc"]);
    assert!(
        gc.status.success(),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
    let text = String::from_utf8_lossy(&gc.stdout);
    assert!(text.contains("cancelled kill-1"), "{text}");
    world.assert_clean("kill-1");
    let again = world.run(&["builds", "gc"]);
    assert_eq!(
        String::from_utf8_lossy(&again.stdout),
        "nothing to collect\n"
    );
    world.assert_builds_again();
}

#[test]
fn a_killed_build_is_collected_by_the_next_build() {
    let world = World::new(610);
    let mut cli = world.start("kill-2");
    world.wait_for_sleeper(&mut cli);
    cli.kill().unwrap();
    cli.wait().unwrap();
    world.assert_builds_again();
    world.assert_clean("kill-2");
}

#[test]
fn a_build_of_another_home_with_the_same_id_is_left_alone() {
    // Two homes (two clones, two users) may both name a build `shared`.
    // The second one's teardown and `builds gc` must not touch the first
    // one's processes.
    let running = World::new(612);
    let mut cli = running.start("shared");
    running.wait_for_sleeper(&mut cli);

    let other = World::new(613);
    other.script("#!/bin/sh\necho quick\n");
    let out = other.run(&[
        "build",
        "--build-id",
        "shared",
        other.path("recipe/slow.yaml").to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gc = other.run(&["builds", "gc"]);
    assert!(
        gc.status.success(),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );

    assert!(cli.try_wait().unwrap().is_none(), "the first build ended");
    assert!(
        !running.sleepers().is_empty(),
        "the first build's provisioner was killed"
    );
    signal(&cli, libc::SIGTERM);
    wait_exit(&mut cli, Duration::from_secs(5));
    running.assert_clean("shared");
}
