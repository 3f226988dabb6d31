//! The generated scripts, run here with `sh` against a temporary directory
//! (moto runs nothing, so this is where their behaviour is checked).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use super::*;
use crate::communicator::jobs::Machine;
use crate::recipe::{clean_script, parse, Format, LoadedRecipe};

/// The command of provisioner `index` (0-based) of the recipe.
pub(in crate::backends::ec2) fn provisioner_command(
    recipe: &LoadedRecipe,
    index: usize,
    max: usize,
) -> Result<CommandSpec, StepError> {
    render(
        &jobs::provisioner_job(recipe, index, &Machine::default())?,
        max,
    )
}

/// Every provisioner's command, in order.
pub(in crate::backends::ec2) fn provisioner_commands(
    recipe: &LoadedRecipe,
    max: usize,
) -> Result<Vec<CommandSpec>, StepError> {
    jobs::provisioner_jobs(recipe, &Machine::default())?
        .iter()
        .map(|job| render(job, max))
        .collect()
}

/// The recipe's test commands, in order.
pub(in crate::backends::ec2) fn test_commands(
    recipe: &LoadedRecipe,
    max: usize,
) -> Result<Vec<CommandSpec>, StepError> {
    jobs::test_jobs(recipe)
        .iter()
        .map(|job| render(job, max))
        .collect()
}

/// The clean policy as one command (`authorized_keys` removal comes last
/// inside the generated script; Sysprep follows on Windows).
pub(in crate::backends::ec2) fn clean_command(
    recipe: &LoadedRecipe,
) -> Result<CommandSpec, StepError> {
    render(&jobs::clean_job(recipe), usize::MAX)
}

fn recipe(dir: &Path, yaml: &str) -> LoadedRecipe {
    let path = dir.join("recipe.yaml");
    fs::write(&path, yaml).unwrap();
    parse(yaml, Format::Yaml, &path).unwrap()
}

/// Runs a script with `sh`; returns (exit code, stdout, stderr).
fn run(script: &str) -> (i32, String, String) {
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn shell_inline_exports_env_verbatim_and_stops_at_the_first_failure() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.txt");
    let yaml = format!(
        r#"name: t
base: {{image: ami-12345678}}
provisioners:
  - type: shell
    inline:
      - printf '%s' "$GREETING" > {out}
      - exit 7
      - echo never >> {out}
    env:
      GREETING: "it's \"quoted\" $HOME `x`"
"#,
        out = out.display()
    );
    let r = recipe(dir.path(), &yaml);
    let cmd = provisioner_command(&r, 0, 48 * 1024).unwrap();
    assert_eq!(cmd.name, "provision/1-shell");
    assert_eq!(cmd.label, "provisioners[0] (shell inline)");
    let (code, _, _) = run(&cmd.script);
    assert_eq!(code, 7);
    assert_eq!(
        fs::read_to_string(&out).unwrap(),
        "it's \"quoted\" $HOME `x`"
    );
}

#[test]
fn shell_script_runs_with_its_interpreter() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("scripts")).unwrap();
    let marker = dir.path().join("marker");
    fs::write(
        dir.path().join("scripts/setup.sh"),
        format!(
            "#!/bin/sh\necho \"$ROLE\" > {}\necho done\nexit 3\n",
            marker.display()
        ),
    )
    .unwrap();
    let r = recipe(
        dir.path(),
        "name: t\nbase: {image: ami-12345678}\nprovisioners:\n  - type: shell\n    script: scripts/setup.sh\n    env: {ROLE: web}\n",
    );
    let cmd = provisioner_command(&r, 0, 48 * 1024).unwrap();
    let (code, stdout, _) = run(&cmd.script);
    assert_eq!((code, stdout.as_str()), (3, "done\n"));
    assert_eq!(fs::read_to_string(&marker).unwrap(), "web\n");
}

#[test]
fn file_provisioner_writes_content_and_mode() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("files/tree/sub")).unwrap();
    let content: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    fs::write(dir.path().join("files/blob.bin"), &content).unwrap();
    fs::write(dir.path().join("files/tree/sub/a.conf"), "a=1\n").unwrap();
    let target = dir.path().join("target");
    let yaml = format!(
        "name: t\nbase: {{image: ami-12345678}}\nprovisioners:\n  - type: file\n    source: files/blob.bin\n    destination: {t}/etc/app/blob.bin\n    mode: \"0600\"\n  - type: file\n    source: files/tree\n    destination: {t}/opt/tree\n",
        t = target.display()
    );
    let r = recipe(dir.path(), &yaml);
    let cmds = provisioner_commands(&r, 48 * 1024).unwrap();
    assert_eq!(cmds.len(), 2);
    for cmd in &cmds {
        let (code, _, stderr) = run(&cmd.script);
        assert_eq!(code, 0, "{}: {stderr}", cmd.label);
    }
    let written = target.join("etc/app/blob.bin");
    assert_eq!(fs::read(&written).unwrap(), content);
    assert_eq!(
        fs::metadata(&written).unwrap().permissions().mode() & 0o7777,
        0o600
    );
    assert_eq!(
        fs::read_to_string(target.join("opt/tree/sub/a.conf")).unwrap(),
        "a=1\n"
    );
    assert!(!target.join("etc/app/blob.bin.bakehouse-new").exists());
}

#[test]
fn file_over_the_inline_limit_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("big"), vec![b'x'; 2000]).unwrap();
    let r = recipe(
        dir.path(),
        "name: t\nbase: {image: ami-12345678}\nprovisioners:\n  - type: shell\n    inline: [\"true\"]\n  - type: file\n    source: big\n    destination: /etc/big\n",
    );
    let err = provisioner_command(&r, 1, 1024).unwrap_err();
    assert_eq!(err.name(), "NonRetryable");
    assert!(
        err.message().starts_with(
            "provisioners[1] (file big -> /etc/big): big is 2000 bytes, over the 1024-byte limit"
        ),
        "{err}"
    );
    assert!(provisioner_command(&r, 1, 2000).is_ok());
}

#[test]
fn salt_and_ansible_unpack_their_trees_and_need_their_tools() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("salt/web")).unwrap();
    fs::write(dir.path().join("salt/top.sls"), "base: {'*': [web]}\n").unwrap();
    fs::write(
        dir.path().join("salt/web/init.sls"),
        "nginx: {pkg.installed: []}\n",
    )
    .unwrap();
    fs::create_dir_all(dir.path().join("pillar")).unwrap();
    fs::write(dir.path().join("pillar/top.sls"), "base: {'*': [app]}\n").unwrap();
    fs::create_dir_all(dir.path().join("ansible")).unwrap();
    fs::write(dir.path().join("ansible/site.yml"), "- hosts: all\n").unwrap();
    let r = recipe(
        dir.path(),
        "name: t\nbase: {image: ami-12345678}\nprovisioners:\n  - type: salt\n    state_tree: salt\n    pillar_root: pillar\n    states: [web, base]\n    pillar: {role: web}\n  - type: ansible\n    playbook: ansible/site.yml\n    extra_vars: {port: 80}\n",
    );
    let cmds = provisioner_commands(&r, 48 * 1024).unwrap();
    assert!(cmds[0].script.contains(
        "\"$salt_call\" --config-dir \"$W/conf\" --local --retcode-passthrough --file-root \"$W/tree\" --pillar-root \"$W/pillar\" state.apply 'web,base' 'pillar={\"role\":\"web\"}'"
    ));
    assert!(cmds[1].script.contains(
        "ansible-playbook -c local -i localhost, --extra-vars '{\"port\":80}' 'site.yml'"
    ));
    // Neither tool is installed here: the scripts stop with 127 and say why.
    let (code, _, stderr) = run(&cmds[0].script);
    assert_eq!(code, 127);
    assert!(stderr.contains("salt-call is not installed"), "{stderr}");
    let (code, _, stderr) = run(&cmds[1].script);
    assert_eq!(code, 127);
    assert!(
        stderr.contains("ansible-playbook is not installed"),
        "{stderr}"
    );
    // With a stand-in tool on PATH the tree is unpacked where it is pointed.
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).unwrap();
    let seen = dir.path().join("seen");
    fs::write(
        bin.join("salt-call"),
        format!("#!/bin/sh\nwhile [ $# -gt 0 ]; do case $1 in --file-root) cat \"$2/web/init.sls\" >> {seen};; --pillar-root) cat \"$2/top.sls\" >> {seen};; esac; shift; done\n", seen = seen.display()),
    )
    .unwrap();
    fs::set_permissions(bin.join("salt-call"), fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let status = Command::new("sh")
        .arg("-c")
        .arg(&cmds[0].script)
        .env("PATH", path)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        fs::read_to_string(&seen).unwrap(),
        "nginx: {pkg.installed: []}\nbase: {'*': [app]}\n"
    );
}

#[test]
fn tests_and_clean_are_commands_too() {
    let dir = tempfile::tempdir().unwrap();
    let r = recipe(
        dir.path(),
        "name: t\nbase: {image: ami-12345678}\ntest:\n  - test 1 -eq 1\n  - exit 4\n",
    );
    let tests = test_commands(&r, 48 * 1024).unwrap();
    assert_eq!(
        tests.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["test/1", "test/2"]
    );
    assert_eq!(tests[1].label, "test[1] `exit 4`");
    assert_eq!(run(&tests[0].script).0, 0);
    assert_eq!(run(&tests[1].script).0, 4);
    let clean = clean_command(&r).unwrap();
    assert_eq!(clean.name, "clean");
    let decoded: String = clean
        .script
        .lines()
        .skip_while(|l| !l.starts_with("base64 -d"))
        .skip(1)
        .take_while(|l| *l != "BAKEHOUSE_PAYLOAD")
        .collect();
    let body = String::from_utf8(BASE64.decode(decoded).unwrap()).unwrap();
    assert_eq!(body, clean_script(&r.recipe.clean, r.recipe.os));
}
