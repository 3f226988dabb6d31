//! Semantic checks: one test per kind of mistake, plus all-at-once reporting.

use super::checks::{check_version, check_version_pattern, RegistryRef};
use super::test_support::{fixtures, messages, Tree, MINIMAL};
use super::*;

/// Loads `MINIMAL` + `extra` in a fresh tree and returns the problems.
fn problems_with(extra: &str) -> Vec<String> {
    let tree = Tree::new();
    messages(&tree, tree.load_yaml(&format!("{MINIMAL}{extra}")))
}

/// Loads `text` in a fresh tree and returns the problems.
fn problems_of(text: &str) -> Vec<String> {
    let tree = Tree::new();
    messages(&tree, tree.load_yaml(text))
}

#[test]
fn every_problem_of_a_recipe_is_reported_at_once() {
    let path = fixtures().join("invalid/many-problems.yaml");
    let err = load(&path).expect_err("invalid");
    assert!(matches!(err, RecipeError::Invalid(_)));
    let shown: Vec<String> = err
        .problems()
        .iter()
        .map(|p| {
            p.to_string().replace(
                &format!(
                    "{}/",
                    path.parent()
                        .map(|d| d.display().to_string())
                        .unwrap_or_default()
                ),
                "",
            )
        })
        .collect();
    assert_eq!(
        shown,
        vec![
            "many-problems.yaml:2:1: name: invalid name \"Many_Problems\": names are lowercase letters, digits, '.', '_' and '-', starting with a letter or digit",
            "many-problems.yaml:3:11: version.version: invalid version \"1..2\": part 2 is empty",
            "many-problems.yaml:5:3: base.registry: registry reference \"@1.x\": expected `name` or `name@version` (e.g. \"debian-base@1.x\")",
            "many-problems.yaml:7:3: builder.instance_type: \"large\" does not look like an EC2 instance type (such as \"t3.small\")",
            "many-problems.yaml:8:3: builder.volume_size_gb: volume size 0 GiB must be between 1 and 16384",
            "many-problems.yaml:13:5: provisioners[1].source: file or directory files/missing.txt does not exist",
            "many-problems.yaml:14:5: provisioners[1].destination: destination \"etc/motd\" must be an absolute path",
            "many-problems.yaml:16:5: provisioners[2].script: file scripts/missing.sh does not exist",
            "many-problems.yaml:18:5: provisioners[3].state_tree: directory salt/ does not exist",
            "many-problems.yaml:20:5: provisioners[4].playbook: file ansible/site.yml does not exist",
            "many-problems.yaml:22:3: clean.extra_paths[0]: \"relative/path\" must be an absolute path",
            "many-problems.yaml:24:3: publish.regions[1]: \"europe\" does not look like an AWS region (such as \"eu-west-1\")",
            "many-problems.yaml:25:3: publish.accounts[0]: account id \"12345\" must be exactly 12 digits",
            "many-problems.yaml:26:1: schedule: cron(0 4 * * MON *): one of day-of-month or day-of-week must be `?` (EventBridge does not allow both)",
            "many-problems.yaml:27:1: paths[0]: invalid glob \"files/[a\": unclosed character class; missing ']'",
        ]
    );
}

#[test]
fn missing_script_is_reported_relative_to_the_recipe() {
    let tree = Tree::new();
    tree.write("scripts/present.sh", "true\n");
    let text = format!(
        "{MINIMAL}provisioners:\n  - type: shell\n    script: scripts/present.sh\n  - type: shell\n    inline: [\"true\"]\n  - type: shell\n    script: scripts/missing.sh\n"
    );
    assert_eq!(
        messages(&tree, tree.load_yaml(&text)),
        vec!["recipe.yaml:10:5: provisioners[2].script: file scripts/missing.sh does not exist"]
    );
}

#[test]
fn script_that_is_a_directory() {
    let tree = Tree::new();
    tree.mkdir("scripts");
    let got = messages(
        &tree,
        tree.load_yaml(&format!(
            "{MINIMAL}provisioners:\n  - {{type: shell, script: scripts}}\n"
        )),
    );
    assert_eq!(
        got,
        vec!["recipe.yaml:5:19: provisioners[0].script: scripts is a directory, expected a file"]
    );
}

#[test]
fn state_tree_must_be_a_directory() {
    let tree = Tree::new();
    tree.write("salt", "not a dir");
    let got = messages(
        &tree,
        tree.load_yaml(&format!(
            "{MINIMAL}provisioners:\n  - type: salt\n    state_tree: salt\n"
        )),
    );
    assert_eq!(
        got,
        vec!["recipe.yaml:6:5: provisioners[0].state_tree: salt is not a directory"]
    );
}

#[test]
fn bad_names() {
    for (name, message) in [
        ("Demo", "invalid name \"Demo\": names are lowercase"),
        ("-demo", "invalid name \"-demo\": names are lowercase"),
        ("de mo", "invalid name \"de mo\": character ' ' not allowed"),
        ("\"\"", "name must not be empty"),
    ] {
        let got = problems_of(&format!(
            "name: {name}\nbase: {{image: ami-0123456789abcdef0}}\n"
        ));
        assert_eq!(got.len(), 1, "{name}: {got:?}");
        assert!(
            got[0].starts_with(&format!("recipe.yaml:1:1: name: {message}")),
            "{got:?}"
        );
    }
    let long = "a".repeat(129);
    let got = problems_of(&format!(
        "name: {long}\nbase: {{image: ami-0123456789abcdef0}}\n"
    ));
    assert_eq!(
        got,
        vec!["recipe.yaml:1:1: name: name is 129 characters long, at most 128 are allowed"]
    );
}

#[test]
fn base_with_several_kinds_is_reported_with_other_problems() {
    let got = problems_of("name: demo\nbase:\n  image: ami-0123456789abcdef0\n  path: base.tar\npublish: {accounts: [\"1\"]}\n");
    assert_eq!(
        got,
        vec![
            "recipe.yaml:2:1: base: exactly one of `image`, `filter`, `registry`, `path` is allowed, found `image` and `path`",
            "recipe.yaml:5:11: publish.accounts[0]: account id \"1\" must be exactly 12 digits",
        ]
    );
}

#[test]
fn base_with_no_kind() {
    let got = problems_of("name: demo\nbase: {}\n");
    assert_eq!(
        got,
        vec!["recipe.yaml:2:1: base: exactly one of `image`, `filter`, `registry`, `path` is required, found none"]
    );
}

#[test]
fn bad_registry_references() {
    for (reference, message) in [
        ("debian-base@1..2", "invalid version \"1..2\""),
        ("debian-base@x.1", "invalid version \"x.1\""),
        ("debian-base@", "invalid version \"\""),
        ("@1.x", "expected `name` or `name@version`"),
    ] {
        let got = problems_of(&format!("name: demo\nbase:\n  registry: \"{reference}\"\n"));
        assert_eq!(got.len(), 1, "{reference}: {got:?}");
        assert!(
            got[0].starts_with(&format!(
                "recipe.yaml:3:3: base.registry: registry reference \"{reference}\": {message}"
            )),
            "{got:?}"
        );
    }
}

#[test]
fn registry_references_parse() {
    assert_eq!(
        RegistryRef::parse("debian-base@1.x"),
        Ok(RegistryRef {
            name: "debian-base".into(),
            version: Some("1.x".into())
        })
    );
    let by_label = RegistryRef::parse("My Image").expect("label");
    assert_eq!(by_label.name, "My Image");
    assert_eq!(by_label.version, None);
    assert!(!by_label.is_wildcard());
    assert!(RegistryRef::parse("base@1.2.x")
        .expect("wildcard")
        .is_wildcard());
    assert!(!RegistryRef::parse("base@1.2")
        .expect("literal")
        .is_wildcard());
    assert!(check_version_pattern("1.x.2").is_err());
    assert!(check_version_pattern("").is_err());
    // What the registry would refuse at resolve time is refused here.
    assert!(check_version_pattern("1.X").is_err());
    assert_eq!(check_version_pattern("1.*"), Ok(()));
}

#[test]
fn base_image_and_path_kinds() {
    assert_eq!(
        problems_of("name: demo\nbase: {image: ubuntu}\n"),
        vec!["recipe.yaml:2:8: base.image: image id \"ubuntu\" must look like \"ami-0123456789abcdef0\""]
    );
    assert_eq!(
        problems_of("name: demo\nbase: {path: rootfs.zip}\n"),
        vec!["recipe.yaml:2:8: base.path: rootfs.zip is neither a directory nor a .tar, .tar.gz, .tgz, .tar.zst, .raw, .img or .qcow2 file"]
    );
    for ok in [
        "a.tar",
        "a.tar.gz",
        "a.tgz",
        "a.tar.zst",
        "a.raw",
        "a.img",
        "a.qcow2",
    ] {
        let tree = Tree::new();
        assert!(
            tree.load_yaml(&format!("name: demo\nbase: {{path: {ok}}}\n"))
                .is_ok(),
            "{ok}"
        );
    }
    let tree = Tree::new();
    tree.mkdir("rootfs");
    assert!(tree.load_yaml("name: demo\nbase: {path: rootfs}\n").is_ok());
}

#[test]
fn filter_owners_must_be_accounts_or_aliases() {
    let got = problems_of(
        "name: demo\nbase:\n  filter: {name: 'debian-*', owners: [amazon, '1234', self]}\n",
    );
    assert_eq!(
        got,
        vec!["recipe.yaml:3:30: base.filter.owners[1]: owner \"1234\" must be a 12-digit account id or an alias such as \"amazon\" or \"self\""]
    );
}

#[test]
fn file_destination_must_be_absolute_and_mode_octal() {
    let tree = Tree::new();
    tree.write("files/motd", "hi\n");
    let text = format!("{MINIMAL}provisioners:\n  - type: file\n    source: files/motd\n    destination: etc/motd\n    mode: \"0999\"\n");
    assert_eq!(
        messages(&tree, tree.load_yaml(&text)),
        vec![
            "recipe.yaml:7:5: provisioners[0].destination: destination \"etc/motd\" must be an absolute path",
            "recipe.yaml:8:5: provisioners[0].mode: mode \"0999\" must be 3 or 4 octal digits such as \"0644\"",
        ]
    );
}

#[test]
fn windows_destinations_may_use_drive_letters() {
    let tree = Tree::new();
    tree.write("files/motd", "hi\n");
    let text = format!("{MINIMAL}os: windows\nprovisioners:\n  - {{type: file, source: files/motd, destination: 'C:\\motd.txt'}}\n");
    assert!(tree.load_yaml(&text).is_ok());
}

#[test]
fn shell_with_both_inline_and_script() {
    let got =
        problems_with("provisioners:\n  - type: shell\n    inline: [\"true\"]\n    script: x.sh\n");
    assert_eq!(
        got,
        vec!["recipe.yaml:5:3: provisioners[0]: a shell provisioner takes `inline` or `script`, not both"]
    );
}

#[test]
fn shell_with_neither_inline_nor_script() {
    let got = problems_with("provisioners:\n  - type: shell\n    env: {A: b}\n");
    assert_eq!(
        got,
        vec!["recipe.yaml:5:3: provisioners[0]: a shell provisioner needs `inline` (a list of commands) or `script` (a file)"]
    );
}

#[test]
fn shell_env_names_must_be_identifiers() {
    let got = problems_with(
        "provisioners:\n  - type: shell\n    inline: [env]\n    env:\n      1BAD: x\n",
    );
    assert_eq!(
        got,
        vec!["recipe.yaml:8:7: provisioners[0].env.1BAD: \"1BAD\" is not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)"]
    );
}

#[test]
fn bad_schedules() {
    for (schedule, message) in [
        ("cron(0 4 ? * MON)", "cron(0 4 ? * MON): EventBridge cron needs 6 fields (minutes hours day-of-month month day-of-week year), found 5"),
        ("cron(61 4 ? * MON *)", "cron(61 4 ? * MON *): minutes field \"61\": 61 is out of range 0-59"),
        ("rate(1 days)", "rate(1 days): use the singular unit with 1 (e.g. rate(1 day))"),
        ("0 0 1 * 1", "\"0 0 1 * 1\": restricting both day-of-month and day-of-week cannot be expressed in EventBridge; write cron(...) with `?` in one of them"),
    ] {
        let got = problems_with(&format!("schedule: \"{schedule}\"\n"));
        assert_eq!(got, vec![format!("recipe.yaml:4:1: schedule: {message}")], "{schedule}");
    }
}

#[test]
fn bad_exact_versions() {
    for (v, why) in [
        ("1..2", "part 2 is empty"),
        ("a.b", "part 1 (\"a\") is not a non-negative number"),
        (
            "",
            "a version is one or more numbers separated by dots, e.g. 1.2",
        ),
        ("-1", "part 1 (\"-1\") is not a non-negative number"),
        ("1.", "part 2 is empty"),
        (".1", "part 1 is empty"),
        ("1.2a", "part 2 (\"2a\") is not a non-negative number"),
    ] {
        let got = problems_with(&format!("version: {{version: \"{v}\"}}\n"));
        assert_eq!(
            got,
            vec![format!(
                "recipe.yaml:4:11: version.version: invalid version \"{v}\": {why}"
            )],
            "{v}"
        );
    }
    for v in ["1", "2.0", "1.10.3", "0.0.1"] {
        assert_eq!(check_version(v), Ok(()), "{v}");
    }
}

#[test]
fn version_with_both_keys_and_with_none() {
    assert_eq!(
        problems_with("version: {bump: minor, version: \"2.0\"}\n"),
        vec!["recipe.yaml:4:1: version: set either `bump` or `version`, not both"]
    );
    assert_eq!(
        problems_with("version: {}\n"),
        vec!["recipe.yaml:4:1: version: one of `bump` (major, minor, patch) or `version` (e.g. \"2.0\") is required"]
    );
}

#[test]
fn regions_and_accounts() {
    let got = problems_with(
        "publish:\n  regions: [eu-west-1, us-gov-west-1, cn-north-1, EU-WEST-1, eu-west, eu-west-1]\n  accounts: ['123456789012', '12345678901a']\n",
    );
    assert_eq!(
        got,
        vec![
            "recipe.yaml:5:3: publish.regions[3]: \"EU-WEST-1\" does not look like an AWS region (such as \"eu-west-1\")",
            "recipe.yaml:5:3: publish.regions[4]: \"eu-west\" does not look like an AWS region (such as \"eu-west-1\")",
            "recipe.yaml:5:3: publish.regions[5]: region eu-west-1 is listed twice",
            "recipe.yaml:6:3: publish.accounts[1]: account id \"12345678901a\" must be exactly 12 digits",
        ]
    );
}

#[test]
fn reserved_tag_prefix() {
    let got = problems_with("publish:\n  tags: {\"aws:owner\": me}\n");
    assert_eq!(
        got,
        vec!["recipe.yaml:5:3: publish.tags[\"aws:owner\"]: tag key \"aws:owner\": the `aws:` prefix is reserved by AWS"]
    );
}

#[test]
fn bad_glob_in_paths() {
    let got = problems_with("paths:\n  - scripts/**\n  - \"files/{a,b\"\n");
    assert_eq!(got, vec!["recipe.yaml:6:3: paths[1]: invalid glob \"files/{a,b\": unclosed alternate group; missing '}' (maybe escape '{' with '[{]'?)"]);
}

#[test]
fn extra_paths_must_be_safe_absolute_paths() {
    let got = problems_with("clean:\n  extra_paths:\n    - /opt/installer\n    - opt/x\n    - /etc\n    - /opt/../etc\n");
    assert_eq!(
        got,
        vec![
            "recipe.yaml:7:5: clean.extra_paths[1]: \"opt/x\" must be an absolute path",
            "recipe.yaml:8:5: clean.extra_paths[2]: refusing to remove \"/etc\": it is a system directory",
            "recipe.yaml:9:5: clean.extra_paths[3]: \"/opt/../etc\" must not contain `..`",
        ]
    );
}

#[test]
fn builder_ids_and_limits() {
    let got = problems_with(
        "builder:\n  subnet_id: net-1\n  security_group_ids: [sg-ok1, group]\n  time_limit_minutes: 5000\n",
    );
    assert_eq!(
        got,
        vec![
            "recipe.yaml:5:3: builder.subnet_id: \"net-1\" must look like \"subnet-0123456789abcdef0\"",
            "recipe.yaml:6:3: builder.security_group_ids[1]: \"group\" must look like \"sg-0123456789abcdef0\"",
            "recipe.yaml:7:3: builder.time_limit_minutes: time limit 5000 must be between 1 and 1440 minutes",
        ]
    );
}

#[test]
fn empty_provisioner_list_and_empty_test_command() {
    let tree = Tree::new();
    assert!(tree
        .load_yaml(&format!("{MINIMAL}provisioners: []\n"))
        .is_ok());
    assert_eq!(
        problems_with("test: ['true', '  ']\n"),
        vec!["recipe.yaml:4:1: test[1]: test command must not be empty"]
    );
}

#[test]
fn linux_provisioners_in_a_windows_recipe_are_flagged() {
    let problems =
        problems_with("os: windows\nprovisioners:\n  - {type: shell, inline: [whoami]}\n");
    assert!(
        problems.iter().any(|p| p.contains(
            "provisioners[0].type: a shell provisioner runs on Linux images only; this recipe has `os: windows`"
        )),
        "{problems:?}"
    );
}

#[test]
fn powershell_provisioners_belong_to_windows_recipes() {
    let problems = problems_with("provisioners:\n  - {type: powershell, inline: [Get-Date]}\n");
    assert!(
        problems.iter().any(|p| p.contains(
            "provisioners[0].type: a powershell provisioner runs on Windows images only; this recipe has `os: linux` (use `type: shell`)"
        )),
        "{problems:?}"
    );
    let windows = problems_with(
        "os: windows\nprovisioners:\n  - {type: powershell, inline: [Get-Date], env: {'1X': y}}\n",
    );
    assert!(
        windows.iter().all(|p| !p.contains("runs on")),
        "{windows:?}"
    );
    assert!(
        windows.iter().any(|p| p.contains("provisioners[0].env.1X")),
        "the shell checks apply: {windows:?}"
    );
}
