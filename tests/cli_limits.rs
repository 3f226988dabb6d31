//! Limits of a local build through the real binary: memory stays bounded
//! whatever a provisioner prints, and `builder.time_limit_minutes` bounds
//! the whole build (not each command), naming the step it stopped.

mod local_support;

use std::fs;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use local_support::{busybox_rootfs, pack};
use serde_json::Value;

fn world(recipe: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    busybox_rootfs(&tree);
    fs::create_dir_all(dir.path().join("recipe")).unwrap();
    pack(&tree, &dir.path().join("recipe/base.tar.gz"));
    fs::write(dir.path().join("recipe/r.yaml"), recipe).unwrap();
    dir
}

fn bakehouse(dir: &Path, args: &[&str]) -> Output {
    local_support::cli(&dir.join("home"))
        .args(args)
        .output()
        .unwrap()
}

fn record(dir: &Path, id: &str) -> Value {
    serde_json::from_slice(&bakehouse(dir, &["--json", "builds", "show", id]).stdout).unwrap()
}

/// The largest resident set of the children this process has waited for, in KiB.
fn children_max_rss_kib() -> i64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct.
    unsafe {
        assert_eq!(
            libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr()),
            0
        );
        usage.assume_init().ru_maxrss
    }
}

#[test]
fn a_200_mb_line_without_a_newline_keeps_memory_bounded() {
    let dir = world(
        "name: loud\nbase: {path: base.tar.gz}\nprovisioners:\n  - type: shell\n    inline:\n      - head -c 200000000 /dev/zero | tr '\\0' x\n      - echo\n      - echo after\n",
    );
    let out = bakehouse(
        dir.path(),
        &[
            "build",
            "--build-id",
            "loud-1",
            dir.path().join("recipe/r.yaml").to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rss_mib = children_max_rss_kib() / 1024;
    assert!(
        rss_mib < 150,
        "the CLI (or a child) peaked at {rss_mib} MiB"
    );
    let record = record(dir.path(), "loud-1");
    let note = record["steps"][1]["notes"][0].as_str().unwrap_or_default();
    assert!(
        note.contains("bytes cut]") && note.ends_with("after"),
        "{}",
        &note[note.len().saturating_sub(300)..]
    );
}

#[test]
fn the_time_limit_bounds_the_whole_build_and_names_the_step() {
    let dir = world(
        "name: slowpoke\nbase: {path: base.tar.gz}\nbuilder: {time_limit_minutes: 1}\nprovisioners:\n  - type: shell\n    inline: [\"sleep 35\"]\n  - type: shell\n    inline: [\"sleep 35\"]\n",
    );
    let started = Instant::now();
    let out = bakehouse(
        dir.path(),
        &[
            "build",
            "--build-id",
            "slow-1",
            dir.path().join("recipe/r.yaml").to_str().unwrap(),
        ],
    );
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1));
    // Each command alone is within the limit; together they are not.
    assert!(took < Duration::from_secs(68), "took {took:?}");
    let record = record(dir.path(), "slow-1");
    assert_eq!(record["status"], "FAILED", "{record:#}");
    assert_eq!(record["failure"]["step"], "provision");
    let cause = record["failure"]["cause"].as_str().unwrap();
    assert!(
        cause.contains("provisioners[1]") && cause.contains("time_limit_minutes"),
        "{cause}"
    );
    assert!(!dir.path().join("home/work/slow-1").exists());
}

#[test]
fn memory_and_process_limits_hold_in_the_sandbox() {
    let dir = world(
        "name: greedy\nbase: {path: base.tar.gz}\nbuilder: {memory_mb: 64, pids_max: 32}\nprovisioners:\n  - type: shell\n    script: greedy.sh\n",
    );
    fs::write(
        dir.path().join("recipe/greedy.sh"),
        r#"#!/bin/sh
# Only shell builtins once the sleeps run: at the process limit nothing
# can fork (the subshell dies of it), so the pids go to a file and the
# outer shell kills them with its builtin kill and waits until they are gone.
(n=0; while [ $n -lt 64 ]; do sleep 30 & echo $! >>/tmp/pids; n=$((n+1)); echo $n >/tmp/started; done) 2>/dev/null
read started </tmp/started
echo "sleeps started: $started"
while read pid; do
  kill $pid
  spins=0
  while kill -0 $pid 2>/dev/null && [ $spins -lt 200000 ]; do spins=$((spins+1)); done
done </tmp/pids
head -c 300000000 /dev/zero | tr '\0' a | fold -w 100 | sort >/dev/null
"#,
    )
    .unwrap();
    let out = bakehouse(
        dir.path(),
        &[
            "build",
            "--build-id",
            "greedy-1",
            dir.path().join("recipe/r.yaml").to_str().unwrap(),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record = record(dir.path(), "greedy-1");
    let note = record["steps"][1]["notes"].to_string();
    // The process limit stopped the 64 background sleeps early...
    let started: u32 = note
        .split("sleeps started: ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{note}"));
    assert!(started < 32, "{started} sleeps started: {note}");
    // ... and the memory limit killed the sort that holds 300 MB.
    assert_eq!(record["failure"]["step"], "provision", "{record:#}");
    assert!(
        record["failure"]["cause"]
            .as_str()
            .unwrap()
            .contains("exit code 137"),
        "{record:#}"
    );
}
