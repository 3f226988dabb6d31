//! A Packer template built locally through the CLI, as a Packer user
//! would: `-var`, `-var-file`, `PKR_VAR_*` and `{{env}}` each set a value
//! that reaches the image, and a `sensitive-variables` value never shows in
//! the build's output, its log, `builds show` or its failure cause; the
//! `manifest` post-processor writes Packer's manifest after a success.

mod local_support;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use local_support::{busybox_rootfs, file_ending, pack, untar};

const SECRET: &str = "hunter2-bakehouse-secret";

const TEMPLATE: &str = r#"{
  "variables": {
    "from_var": "", "from_file": "", "from_pkr": "",
    "from_env": "{{env `BH_TEST_FROM_ENV`}}",
    "secret": "", "fail": ""
  },
  "sensitive-variables": ["secret"],
  "builders": [{"type": "qemu", "disk_image": true, "iso_url": "base.tar.gz",
                "iso_checksum": "none", "vm_name": "vars.qcow2", "headless": true}],
  "provisioners": [{
    "type": "shell",
    "environment_vars": ["A={{user `from_var`}}", "B={{user `from_file`}}", "C={{user `from_pkr`}}",
                         "D={{user `from_env`}}", "S={{user `secret`}}", "F={{user `fail`}}"],
    "inline": [
      "echo \"$A $B $C $D\" > /etc/vars",
      "echo \"the secret is $S\"",
      "if [ -n \"$F\" ]; then echo \"failing with $S\"; exit 3; fi"
    ]
  }],
  "post-processors": [{"type": "manifest", "output": "manifest.json", "strip_path": true,
                       "custom_data": {"owner": "{{user `from_var`}}"}}]
}"#;

fn bakehouse(dir: &Path) -> Command {
    let mut cmd = local_support::cli(&dir.join("home"));
    cmd.current_dir(dir).env_remove("PKR_VAR_from_pkr");
    cmd
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// What `builds logs` and `--json builds show` print for `id`.
fn shown(dir: &Path, id: &str) -> String {
    let logs = bakehouse(dir)
        .args(["builds", "logs", id])
        .output()
        .unwrap();
    let show = bakehouse(dir)
        .args(["--json", "builds", "show", id])
        .output()
        .unwrap();
    assert!(show.status.success(), "{}", text(&show));
    format!("{}{}", text(&logs), text(&show))
}

#[test]
fn template_variables_reach_the_build_and_sensitive_values_never_show() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    busybox_rootfs(&tree);
    fs::create_dir_all(dir.path().join("t")).unwrap();
    pack(&tree, &dir.path().join("t/base.tar.gz"));
    fs::write(dir.path().join("t/vars.json"), TEMPLATE).unwrap();
    fs::write(dir.path().join("t/file.json"), r#"{"from_file": "two"}"#).unwrap();
    let build = |id: &str, extra: &[&str]| {
        bakehouse(dir.path())
            .args(["-v", "build", "--build-id", id])
            .args(["--var", "from_var=one", "--var-file", "t/file.json"])
            .args(["--var", &format!("secret={SECRET}")])
            .args(extra)
            .arg("t/vars.json")
            .env("PKR_VAR_from_pkr", "three")
            .env("BH_TEST_FROM_ENV", "four")
            .output()
            .unwrap()
    };

    let out = build("vars-1", &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains(SECRET), "{}", text(&out));
    let artifact = file_ending(&dir.path().join("home/images/vars/vars-1"), ".tar.zst");
    let root = dir.path().join("out");
    untar(&artifact, &root);
    assert_eq!(
        fs::read_to_string(root.join("etc/vars")).unwrap(),
        "one two three four\n"
    );
    let seen = shown(dir.path(), "vars-1");
    assert!(seen.contains("the secret is <sensitive>"), "{seen}");
    assert!(!seen.contains(SECRET), "{seen}");
    let manifest = || -> serde_json::Value {
        serde_json::from_str(&fs::read_to_string(dir.path().join("manifest.json")).unwrap())
            .unwrap()
    };
    let m = manifest();
    let entry = &m["builds"][0];
    assert_eq!(entry["name"], "qemu");
    assert_eq!(entry["builder_type"], "qemu");
    assert_eq!(entry["custom_data"]["owner"], "one");
    assert_eq!(entry["packer_run_uuid"], m["last_run_uuid"]);
    let file = artifact.file_name().unwrap().to_string_lossy().into_owned();
    let ids: Vec<&str> = entry["artifact_id"].as_str().unwrap().split(',').collect();
    assert!(ids.contains(&file.as_str()), "{ids:?}");
    let listed = entry["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == file.as_str())
        .expect("the image is listed");
    assert_eq!(listed["size"], fs::metadata(&artifact).unwrap().len());
    assert!(entry["build_time"].as_i64().unwrap() > 1_700_000_000);

    let out = build("vars-2", &["--var", "fail=yes"]);
    assert!(!out.status.success());
    let all = text(&out);
    assert!(all.contains("failing with <sensitive>"), "{all}");
    assert!(!all.contains(SECRET), "{all}");
    let seen = shown(dir.path(), "vars-2");
    assert!(seen.contains("failing with <sensitive>"), "{seen}");
    assert!(!seen.contains(SECRET), "{seen}");
    assert_eq!(
        manifest()["builds"].as_array().map(Vec::len),
        Some(1),
        "a failed build adds nothing to the manifest"
    );
}

/// `shell-local` runs before the build on this machine, in a sandbox: what
/// it writes into the template's directory reaches the image; host files,
/// the CLI's home, the environment and the network do not reach it, and
/// it cannot write outside its directory.
#[test]
fn shell_local_runs_sandboxed_before_the_build_and_its_output_reaches_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    busybox_rootfs(&tree);
    pack(&tree, &dir.path().join("base.tar.gz"));
    fs::write(dir.path().join("gen.txt"), "placeholder\n").unwrap();
    let escape = dir.path().parent().unwrap().join(format!(
        "{}-escape",
        dir.path().file_name().unwrap().to_string_lossy()
    ));
    let template = r#"{
  "builders": [{"type": "qemu", "disk_image": true, "iso_url": "base.tar.gz", "vm_name": "local"}],
  "provisioners": [
    {"type": "shell-local", "environment_vars": ["WHAT=generated-by-shell-local"], "inline": [
      "echo \"$WHAT\" > gen.txt",
      "if cat /etc/shadow >/dev/null 2>&1; then echo shadow-readable; else echo shadow-hidden; fi > probes.txt",
      "if ls /root >/dev/null 2>&1; then echo root-visible; else echo root-hidden; fi >> probes.txt",
      "if [ -e home/registry.db ]; then echo home-visible; else echo home-hidden; fi >> probes.txt",
      "echo \"interfaces=$(grep -c : /proc/net/dev)\" >> probes.txt",
      "echo \"aws=${AWS_SECRET_ACCESS_KEY:-unset}\" >> probes.txt",
      "touch \"../$(basename \"$PWD\")-escape\" 2>/dev/null || true"
    ]},
    {"type": "file", "source": "gen.txt", "destination": "/etc/gen.txt"}
  ]
}"#;
    fs::write(dir.path().join("local.json"), template).unwrap();
    // A first build makes the registry database under home/ exist.
    fs::create_dir_all(dir.path().join("home")).unwrap();
    fs::write(dir.path().join("home/registry.db"), "").unwrap();
    let out = bakehouse(dir.path())
        .args(["build", "--build-id", "local-1", "local.json"])
        .env("AWS_SECRET_ACCESS_KEY", "leak")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        fs::read_to_string(dir.path().join("probes.txt")).unwrap(),
        "shadow-hidden\nroot-hidden\nhome-hidden\ninterfaces=1\naws=unset\n"
    );
    assert!(!escape.exists(), "wrote outside its directory");
    let artifact = file_ending(&dir.path().join("home/images/local/local-1"), ".tar.zst");
    let root = dir.path().join("out");
    untar(&artifact, &root);
    assert_eq!(
        fs::read_to_string(root.join("etc/gen.txt")).unwrap(),
        "generated-by-shell-local\n"
    );

    // A failing step stops everything before the build starts.
    fs::write(
        dir.path().join("local.json"),
        template.replace(
            "\"echo \\\"$WHAT\\\" > gen.txt\",",
            "\"echo broken; exit 4\",",
        ),
    )
    .unwrap();
    let out = bakehouse(dir.path())
        .args(["build", "--build-id", "local-2", "local.json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out)
            .contains("provisioners[0] (shell-local) exited with 4: broken; nothing was started"),
        "{}",
        text(&out)
    );
    assert!(!dir.path().join("home/images/local/local-2").exists());

    // A template directory holding the user's home is never shown.
    let out = bakehouse(dir.path())
        .args(["build", "--build-id", "local-3", "local.json"])
        .env("HOME", dir.path().join("home"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("holds your home directory"),
        "{}",
        text(&out)
    );
}
