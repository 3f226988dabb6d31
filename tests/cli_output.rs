//! What the binary writes, driven as a script would: a build piped to
//! `head -1` succeeds and is registered; piped output carries no ANSI
//! codes; a closed stderr does not panic; `--json` gives one document;
//! read-only commands create no files; `--table` with a local build is
//! refused before anything starts.

mod local_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use local_support::{busybox_rootfs, names, pack};

/// A home with a quick busybox recipe.
fn world() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    busybox_rootfs(&tree);
    fs::create_dir_all(dir.path().join("recipe")).unwrap();
    pack(&tree, &dir.path().join("recipe/base.tar.gz"));
    fs::write(
        dir.path().join("recipe/quick.yaml"),
        "name: quick\nbase: {path: base.tar.gz}\nprovisioners:\n  - type: shell\n    inline: [\"echo hello > /etc/hello\"]\ntest:\n  - grep -q hello /etc/hello\n",
    )
    .unwrap();
    dir
}

fn bakehouse(dir: &Path) -> Command {
    let mut cmd = local_support::cli(&dir.join("home"));
    cmd.current_dir(dir);
    cmd
}

fn registered(dir: &Path) -> serde_json::Value {
    let out = bakehouse(dir)
        .args(["--json", "image", "list"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}

#[test]
fn a_build_piped_to_head_succeeds_and_is_registered() {
    let dir = world();
    let mut child = bakehouse(dir.path())
        .args(["build", "--home"])
        .arg(dir.path().join("home"))
        .arg(dir.path().join("recipe/quick.yaml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A reader that went away before the result was written (`head -1`
    // after its line, or sooner): every write to stdout fails with EPIPE.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("Broken pipe") && !stderr.contains("panicked"),
        "{stderr}"
    );
    // Piped: the log lines are plain text.
    assert!(
        !stderr.contains('\u{1b}'),
        "ANSI codes in piped output: {stderr:?}"
    );
    assert!(stderr.contains("registered"), "{stderr}");
    assert_eq!(registered(dir.path())[0]["name"], "quick");
}

#[test]
fn a_closed_stderr_does_not_fail_or_panic_a_build() {
    let dir = world();
    let status = Command::new("sh")
        .arg("-c")
        .arg("exec 2>&-; exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_bakehouse"))
        .arg("--db")
        .arg(dir.path().join("home/registry.db"))
        .args(["build", "--home"])
        .arg(dir.path().join("home"))
        .arg(dir.path().join("recipe/quick.yaml"))
        .current_dir(dir.path())
        .env_remove("BAKEHOUSE_TABLE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(registered(dir.path())[0]["name"], "quick");
}

#[test]
fn json_output_is_one_document_and_quiet_is_quiet() {
    let dir = world();
    let out = bakehouse(dir.path())
        .args(["--json", "-q", "build", "--home"])
        .arg(dir.path().join("home"))
        .arg(dir.path().join("recipe/quick.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one document");
    assert_eq!(record["status"], "SUCCEEDED");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "-q prints nothing"
    );
}

#[test]
fn read_only_commands_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["image", "list"][..],
        &["--json", "image", "list"],
        &["builds", "list"],
        &["image", "resolve", "nothing@1.x"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_bakehouse"))
            .args(args)
            .current_dir(dir.path())
            .env_remove("BAKEHOUSE_TABLE")
            .env_remove("BAKEHOUSE_DB")
            .output()
            .unwrap();
        let _ = out;
        let left: Vec<PathBuf> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(left.is_empty(), "{args:?} created {left:?}");
    }
}

#[test]
fn a_local_build_with_a_table_is_refused_before_anything_starts() {
    let dir = world();
    let out = bakehouse(dir.path())
        .args(["--table", "images", "build", "--home"])
        .arg(dir.path().join("home"))
        .arg(dir.path().join("recipe/quick.yaml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--table images") && stderr.contains("--remote"),
        "{stderr}"
    );
    assert!(!dir.path().join("home").exists(), "something was made");
}

#[test]
fn on_error_abort_keeps_the_sandbox_for_builds_shell_until_cleanup() {
    let dir = world();
    abort_keeps_until_cleanup(&dir, "base.tar.gz");
}

#[test]
fn on_error_abort_on_a_whole_disk_base_keeps_its_overlay_until_cleanup() {
    let dir = world();
    let tree = dir.path().join("tree");
    fs::write(tree.join("etc/fstab"), "LABEL=root / ext4 defaults 0 1\n").unwrap();
    let fs = local_support::disks::Fs {
        tree: &tree,
        mib: 48,
        uuid: "0a1b2c3d-1111-4222-8333-444455556666",
        label: "root",
    };
    local_support::disks::make_disk(
        &dir.path().join("recipe/base.raw"),
        "dos",
        "0x1a2b3c4d",
        &[fs],
    );
    abort_keeps_until_cleanup(&dir, "base.raw");
    let home = dir.path().join("home").display().to_string();
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&home), "{mounts}");
}

/// A failing build on `base` with `--on-error=abort`: kept, a shell runs
/// in it, cleanup removes it.
fn abort_keeps_until_cleanup(dir: &tempfile::TempDir, base: &str) {
    fs::write(
        dir.path().join("recipe/failing.yaml"),
        format!("name: failing\nbase: {{path: {base}}}\nprovisioners:\n  - type: shell\n    inline: [\"echo 'debug me' > /etc/motd\", \"exit 7\"]\n"),
    )
    .unwrap();
    let home = dir.path().join("home");
    let out = bakehouse(dir.path())
        .args([
            "build",
            "--on-error=abort",
            "--build-id",
            "kept-1",
            "--home",
        ])
        .arg(&home)
        .arg(dir.path().join("recipe/failing.yaml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let show = bakehouse(dir.path())
        .args(["--json", "builds", "show", "kept-1"])
        .output()
        .unwrap();
    let record: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(record["status"], "FAILED");
    let kept = record["kept"]
        .as_str()
        .expect("the record says where")
        .to_string();
    assert!(Path::new(&kept).join("etc/motd").exists(), "{kept}");

    // A later gc leaves it alone; a command runs in it.
    let gc = bakehouse(dir.path())
        .args(["builds", "gc", "--home"])
        .arg(&home)
        .output()
        .unwrap();
    assert!(gc.status.success());
    let shell = bakehouse(dir.path())
        .args(["builds", "shell", "kept-1", "--home"])
        .arg(&home)
        .args(["--", "cat", "/etc/motd"])
        .output()
        .unwrap();
    assert!(
        shell.status.success(),
        "{}",
        String::from_utf8_lossy(&shell.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&shell.stdout), "debug me\n");

    // Cleanup removes it; the shell has nowhere to run then.
    let cleanup = bakehouse(dir.path())
        .args(["builds", "cleanup", "kept-1", "--home"])
        .arg(&home)
        .output()
        .unwrap();
    assert!(
        cleanup.status.success(),
        "{}",
        String::from_utf8_lossy(&cleanup.stderr)
    );
    assert!(!Path::new(&kept).exists());
    let again = bakehouse(dir.path())
        .args(["builds", "shell", "kept-1", "--home"])
        .arg(&home)
        .args(["--", "true"])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("kept no sandbox"));
}

#[test]
fn builds_logs_prints_every_line_of_a_chatty_provisioner() {
    let dir = world();
    fs::write(
        dir.path().join("recipe/chatty.yaml"),
        "name: chatty\nbase: {path: base.tar.gz}\nprovisioners:\n  - type: shell\n    inline: [\"i=1; while [ $i -le 10000 ]; do echo line-$i; i=$((i+1)); done\"]\n",
    )
    .unwrap();
    let home = dir.path().join("home");
    let out = bakehouse(dir.path())
        .args(["build", "--build-id", "chatty-1", "--home"])
        .arg(&home)
        .arg(dir.path().join("recipe/chatty.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let logs = bakehouse(dir.path())
        .args(["builds", "logs", "chatty-1"])
        .output()
        .unwrap();
    assert!(
        logs.status.success(),
        "{}",
        String::from_utf8_lossy(&logs.stderr)
    );
    let text = String::from_utf8_lossy(&logs.stdout);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("[provisioners[0] (shell inline)] line-"))
        .collect();
    assert_eq!(lines.len(), 10_000);
    assert!(lines[9_999].ends_with("line-10000"));
    assert!(
        text.contains("[clean] bakehouse-clean: done"),
        "the clean script is logged too"
    );
}

/// On a terminal (a pseudo-terminal made by util-linux `script`) the step
/// display is drawn: each finished step with its time, in colour; the same
/// build piped shows neither (see the tests above).
#[test]
fn a_terminal_gets_the_step_display() {
    let dir = world();
    // A provisioner that prints a line and then takes a second, so the bar
    // is redrawn while its last line is current.
    fs::write(
        dir.path().join("recipe/slow.yaml"),
        "name: slow\nbase: {path: base.tar.gz}\nprovisioners:\n  - type: shell\n    inline: [\"echo hello > /etc/hello\", \"echo compiling-widgets\", \"sleep 1\"]\ntest:\n  - grep -q hello /etc/hello\n",
    )
    .unwrap();
    let command = format!(
        "{} --db {} build --home {} {}",
        env!("CARGO_BIN_EXE_bakehouse"),
        dir.path().join("home/registry.db").display(),
        dir.path().join("home").display(),
        dir.path().join("recipe/slow.yaml").display()
    );
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .current_dir(dir.path())
        .env_remove("BAKEHOUSE_TABLE")
        .env_remove("BAKEHOUSE_LOG")
        .env_remove("NO_COLOR")
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for step in [
        "launch",
        "provision",
        "clean",
        "capture",
        "test",
        "register",
    ] {
        assert!(
            text.lines()
                .any(|l| l.contains('✓') && l.contains(step) && l.trim_end().ends_with(" s")),
            "no finished {step} in the display:\n{text}"
        );
    }
    // The bar: steps done of 7, and the provisioner with its last line.
    assert!(
        text.contains("/7 "),
        "no step count in the display:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("provision … provisioners[0] (shell inline): compiling-widgets")),
        "no provisioner line on the bar:\n{text}"
    );
    // Warnings only on a terminal: no INFO lines under the display.
    assert!(!text.contains(" INFO "), "{text}");
}

/// `--log-format json`: stderr is JSON lines only — steps started and
/// finished, and every output line of the provisioner.
#[test]
fn json_logs_are_one_event_per_line() {
    let dir = world();
    let out = bakehouse(dir.path())
        .args(["--log-format", "json", "build", "--home"])
        .arg(dir.path().join("home"))
        .arg(dir.path().join("recipe/quick.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let finished: Vec<&str> = events
        .iter()
        .filter(|e| e["message"] == "step finished")
        .filter_map(|e| e["step"].as_str())
        .collect();
    assert_eq!(
        finished,
        [
            "launch",
            "provision",
            "clean",
            "capture",
            "test",
            "register",
            "teardown"
        ]
    );
    // Output lines of the commands: the clean script's, one event each.
    assert!(events
        .iter()
        .any(|e| e["provisioner"] == "clean" && e["message"] == "bakehouse-clean: done"));
}

/// Bytes under `dir`, as `du -sb` counts them.
fn du(dir: &Path) -> u64 {
    let out = Command::new("du").arg("-sb").arg(dir).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap()
}

/// A recipe's `retain: {versions: 1}` applied by `image prune`: the older
/// versions' image files go, the images directory shrinks by their size,
/// `--dry-run` and a second run change nothing.
#[test]
fn image_prune_removes_the_files_of_versions_the_recipe_does_not_retain() {
    let dir = world();
    let home = dir.path().join("home");
    let images = home.join("images");
    let mut files_of = Vec::new();
    for i in 1..=3 {
        // Each build writes different (incompressible) content, so each is
        // a new version with images of a few MB.
        fs::write(
            dir.path().join("recipe/kept.yaml"),
            format!("name: kept\nbase: {{path: base.tar.gz}}\nretain: {{versions: 1}}\nprovisioners:\n  - type: shell\n    inline: [\"head -c 3000000 /dev/urandom > /opt-blob-{i}\"]\n"),
        )
        .unwrap();
        let out = bakehouse(dir.path())
            .args(["--json", "build", "--build-id", &format!("kept-{i}")])
            .arg(dir.path().join("recipe/kept.yaml"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        files_of.push(images.join("kept").join(format!("kept-{i}")));
    }
    let sizes: Vec<u64> = files_of.iter().map(|d| du(d)).collect();
    assert!(sizes.iter().all(|s| *s > 1_000_000), "{sizes:?}");
    let before = du(&images);

    let prune = |extra: &[&str]| {
        let out = bakehouse(dir.path())
            .args(["image", "prune"])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dry = prune(&["--dry-run"]);
    assert!(
        dry.contains("kept@1.1: would delete (beyond the newest 1 active versions)"),
        "{dry}"
    );
    assert!(dry.contains("kept@1.0: would delete"), "{dry}");
    assert_eq!(du(&images), before);

    let done = prune(&[]);
    assert!(
        done.contains("kept@1.0: status active -> deleted"),
        "{done}"
    );
    for gone in &files_of[..2] {
        assert!(!gone.exists(), "{done}{:?}", names(gone));
    }
    assert!(files_of[2].exists());
    let after = du(&images);
    assert!(
        before - after >= sizes[0] + sizes[1] - 8192,
        "{before} - {after} vs {sizes:?}"
    );
    let statuses: Vec<String> = registered(dir.path())
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}@{} {}",
                p["name"].as_str().unwrap(),
                p["version"].as_str().unwrap(),
                p["status"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        statuses,
        ["kept@1.2 active", "kept@1.1 deleted", "kept@1.0 deleted"]
    );
    assert!(prune(&[]).contains("nothing to prune"));
    assert_eq!(du(&images), after);
}
