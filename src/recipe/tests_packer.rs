//! Packer JSON templates as recipes, and the template engine.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};

use super::go_time;
use super::packer_template::clean_resource_name;
use super::test_support::{fixtures, messages, Tree};
use super::*;

fn at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 3, 5, 6, 7, 8)
        .single()
        .expect("valid time")
}

fn options(vars: &[(&str, &str)], env: &[(&str, &str)]) -> LoadOptions {
    let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    LoadOptions {
        vars: map(vars),
        env: map(env),
        now: Some(at()),
        ..LoadOptions::default()
    }
}

/// A template with one amazon-ebs builder; `builder` and `rest` are spliced
/// into the builder object and the top-level object.
fn template(builder: &str, rest: &str) -> String {
    format!(
        r#"{{
  "builders": [{{
    "type": "amazon-ebs",
    "ami_name": "app-{{{{timestamp}}}}",
    "source_ami": "ami-0123456789abcdef0"{builder}
  }}]{rest}
}}"#
    )
}

fn load_template(tree: &Tree, text: &str, opts: &LoadOptions) -> Result<LoadedRecipe, RecipeError> {
    load_with(&tree.write("packer.json", text), opts)
}

#[test]
fn seed_template_maps_onto_a_recipe() {
    let loaded =
        load_with(&fixtures().join("packer/seed-004.json"), &options(&[], &[])).expect("valid");
    let r = &loaded.recipe;
    assert_eq!(r.name, "training-amazon-linux");
    assert_eq!(r.label(), "Linux-AMI");
    assert_eq!(r.os, OsKind::Linux);
    let mut filters = BTreeMap::new();
    for (k, v) in [
        ("architecture", "x86_64"),
        ("block-device-mapping.volume-type", "gp2"),
        ("root-device-type", "ebs"),
        ("virtualization-type", "hvm"),
    ] {
        filters.insert(k.to_string(), v.to_string());
    }
    assert_eq!(
        r.base,
        Base::Filter(BaseFilter {
            name: "*amzn-ami-hvm-*".into(),
            owners: vec!["amazon".into()],
            most_recent: true,
            filters,
        })
    );
    assert_eq!(r.builder.instance_type.as_deref(), Some("t2.micro"));
    assert_eq!(r.publish.regions, vec!["us-east-1"]);
    assert_eq!(r.provisioners.len(), 3);
    assert_eq!(
        r.provisioners[0],
        Provisioner::Shell(ShellProvisioner {
            source: ShellSource::Inline(vec![
                "sudo mkdir -p /opt/packer".into(),
                "sudo mkdir -p /opt/packer/nginx".into(),
                "sudo chown -R ec2-user:ec2-user /opt".into(),
            ]),
            env: BTreeMap::new(),
        })
    );
    assert_eq!(
        r.provisioners[1],
        Provisioner::File(FileProvisioner {
            source: "wordpress-nginx.sh".into(),
            destination: "/opt/packer/wordpress-nginx.sh".into(),
            mode: None,
        })
    );
    assert!(loaded.resolve("wordpress-nginx.sh").is_file());
}

#[test]
fn var_overrides_replace_defaults() {
    let loaded = load_with(
        &fixtures().join("packer/seed-004.json"),
        &options(&[("aws_region", "eu-west-1")], &[]),
    )
    .expect("valid");
    assert_eq!(loaded.recipe.publish.regions, vec!["eu-west-1"]);
}

#[test]
fn undeclared_and_required_variables() {
    let tree = Tree::new();
    let text = template("", r#", "variables": {"needed": null}"#);
    let got = messages(
        &tree,
        load_template(&tree, &text, &options(&[("stray", "1")], &[])),
    );
    assert_eq!(
        got,
        vec![
            "packer.json:6:7: variables: variable `stray` is set but not declared in `variables`",
            "packer.json:6:21: variables.needed: variable `needed` is required (its default is null) but was not set",
        ]
    );
}

#[test]
fn a_required_variable_that_is_used_is_reported_once() {
    let tree = Tree::new();
    let text = template(
        r#", "region": "{{user `needed`}}""#,
        r#", "variables": {"needed": null}"#,
    );
    let got = messages(&tree, load_template(&tree, &text, &options(&[], &[])));
    assert_eq!(
        got,
        vec!["packer.json:6:21: variables.needed: variable `needed` is required (its default is null) but was not set"]
    );
}

#[test]
fn template_functions_in_builder_fields() {
    let tree = Tree::new();
    let builder = r#",
    "region": "{{user `region`}}",
    "ami_regions": ["us-east-1", "eu-west-1"],
    "ami_users": ["123456789012"],
    "tags": {"built": "{{isotime \"2006-01-02\"}}", "stamp": "{{timestamp}}", "name": "{{isotime | clean_resource_name}}", "owner": "{{user `owner`}}"},
    "run_tags": {"purpose": "{{ lower \"BUILD\" }}"},
    "encrypt_boot": true,
    "launch_block_device_mappings": [{"device_name": "/dev/xvda", "volume_size": "{{user `size`}}", "volume_type": "gp3"}],
    "security_group_id": "sg-0abc1234",
    "iam_instance_profile": "builder",
    "ssh_username": "ec2-user",
    "communicator": "ssh""#;
    let rest = r#", "variables": {"region": "eu-west-1", "size": "12", "owner": "{{env `TEAM`}}"}"#;
    let loaded = load_template(
        &tree,
        &template(builder, rest),
        &options(&[], &[("TEAM", "platform")]),
    )
    .expect("valid");
    let r = &loaded.recipe;
    assert_eq!(r.name, "app");
    assert_eq!(r.publish.regions, vec!["eu-west-1", "us-east-1"]);
    assert_eq!(r.publish.accounts, vec!["123456789012"]);
    let tag = |k: &str| r.publish.tags.get(k).cloned().unwrap_or_default();
    assert_eq!(tag("built"), "2024-03-05");
    assert_eq!(tag("stamp"), "1709618828");
    assert_eq!(tag("name"), "2024-03-05T06-07-08Z");
    assert_eq!(tag("owner"), "platform");
    assert_eq!(
        r.builder.tags.get("purpose").map(String::as_str),
        Some("build")
    );
    assert_eq!(r.builder.volume_size_gb, Some(12));
    assert_eq!(r.builder.kms_key_id.as_deref(), Some("alias/aws/ebs"));
    assert_eq!(r.builder.security_group_ids, vec!["sg-0abc1234"]);
    assert_eq!(r.builder.instance_profile.as_deref(), Some("builder"));
}

#[test]
fn bakehouse_variables_set_name_label_and_version() {
    let tree = Tree::new();
    let rest = r#", "variables": {"bakehouse_name": "base-image", "bakehouse_label": "Base", "bakehouse_version": "3.1"}"#;
    let r = load_template(&tree, &template("", rest), &options(&[], &[]))
        .expect("valid")
        .recipe;
    assert_eq!((r.name.as_str(), r.label()), ("base-image", "Base"));
    assert_eq!(r.version, VersionPolicy::Exact("3.1".into()));
}

#[test]
fn env_outside_variables_is_rejected() {
    let tree = Tree::new();
    let text = template(r#", "instance_type": "{{env `TYPE`}}""#, "");
    let got = messages(
        &tree,
        load_template(&tree, &text, &options(&[], &[("TYPE", "t3.small")])),
    );
    assert_eq!(
        got,
        vec!["packer.json:5:44: builders[0].instance_type: `env` may only be used in the `variables` section"]
    );
}

#[test]
fn unknown_template_function() {
    let tree = Tree::new();
    let text = template(r#", "instance_type": "{{ sha256 `x` }}""#, "");
    let got = messages(&tree, load_template(&tree, &text, &options(&[], &[])));
    assert_eq!(got.len(), 1);
    assert!(
        got[0].starts_with("packer.json:5:44: builders[0].instance_type: unknown template function `sha256` (supported: user, env, isotime"),
        "{got:?}"
    );
}

#[test]
fn unknown_top_level_field() {
    let tree = Tree::new();
    let got = messages(
        &tree,
        load_template(
            &tree,
            &template("", r#", "pipelines": []"#),
            &options(&[], &[]),
        ),
    );
    assert_eq!(got.len(), 1);
    assert!(
        got[0].starts_with("packer.json:6:7: pipelines: unknown field `pipelines`, expected one of `description`, `min_packer_version`, `variables`"),
        "{got:?}"
    );
}

#[test]
fn unknown_builder_field() {
    let tree = Tree::new();
    let text = template(r#", "spot_prize": "auto", "colour": "red""#, "");
    let got = messages(&tree, load_template(&tree, &text, &options(&[], &[])));
    assert_eq!(got.len(), 2, "every unknown field in one run: {got:?}");
    assert!(
        got[0].starts_with("packer.json:5:66: builders[0].colour: unknown field `colour`: not an amazon-ebs option bakehouse knows"),
        "{got:?}"
    );
    assert!(
        got[1].contains("builders[0].spot_prize: unknown field `spot_prize`"),
        "{got:?}"
    );
}

#[test]
fn unknown_provisioner_field() {
    let tree = Tree::new();
    let rest = r#", "provisioners": [{"type": "shell", "inline": ["true"], "pause_befor": "10s"}]"#;
    let got = messages(
        &tree,
        load_template(&tree, &template("", rest), &options(&[], &[])),
    );
    assert_eq!(got.len(), 1);
    assert!(
        got[0].starts_with("packer.json:6:62: provisioners[0].pause_befor: unknown field `pause_befor`: not a shell provisioner option bakehouse knows"),
        "{got:?}"
    );
}

/// The options of ordinary amazon-ebs templates that do not apply to
/// bakehouse are accepted (each with an "ignored: why" warning); the
/// shell provisioner's `env` map is mapped.
#[test]
fn ordinary_amazon_ebs_options_are_accepted() {
    let tree = Tree::new();
    let builder = r#", "custom_endpoint_ec2": "https://ec2.example", "skip_region_validation": true,
        "skip_metadata_api_check": true, "ssh_keypair_name": "ops", "ssh_private_key_file": "k.pem",
        "spot_price": "auto", "associate_public_ip_address": true, "vpc_id": "vpc-1", "ena_support": true,
        "force_deregister": true, "snapshot_tags": {"a": "b"}, "metadata_options": {"http_tokens": "required"}"#;
    let rest = r#", "provisioners": [
        {"type": "shell", "inline": ["reboot"], "expect_disconnect": true, "start_retry_timeout": "5m",
         "pause_before": "10s", "execute_command": "sudo -S sh -c '{{ .Vars }} {{ .Path }}'", "env": {"A": "1"}},
        {"type": "file", "source": "files/motd", "destination": "/etc/motd", "timeout": "1m"}]"#;
    tree.write("files/motd", "hi\n");
    let loaded =
        load_template(&tree, &template(builder, rest), &options(&[], &[])).expect("accepted");
    match &loaded.recipe.provisioners[0] {
        crate::recipe::Provisioner::Shell(s) => {
            assert_eq!(s.env.get("A").map(String::as_str), Some("1"))
        }
        other => panic!("{other:?}"),
    }
    for (option, _) in crate::recipe::packer_ignored::AMAZON_EBS {
        assert!(
            !option.is_empty()
                && option
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit()),
            "{option}"
        );
    }
}

#[test]
fn unsupported_builder_type_and_provisioner_type() {
    let tree = Tree::new();
    let text = r#"{"builders": [{"type": "googlecompute", "image_name": "x"}]}"#;
    let got = messages(&tree, load_template(&tree, text, &options(&[], &[])));
    assert_eq!(
        got,
        vec!["packer.json:1:16: builders[0].type: builder type `googlecompute` is not supported (only `amazon-ebs`, and `qemu` with `disk_image: true`)"]
    );
    let rest = r#", "provisioners": [{"type": "puppet-masterless", "manifest_file": "x.pp"}]"#;
    let got = messages(
        &tree,
        load_template(&tree, &template("", rest), &options(&[], &[])),
    );
    assert_eq!(
        got,
        vec!["packer.json:6:25: provisioners[0].type: unknown variant `puppet-masterless`, expected one of `shell`, `powershell`, `file`, `shell-local`, `salt-masterless`, `ansible-local`, `breakpoint`"]
    );
}

/// Several builders: `-only`/`-except` pick the one a build uses, as
/// Packer selects by name (the type where no name is given); the others
/// are not read at all, whatever their type.
#[test]
fn only_and_except_select_one_of_several_builders() {
    let tree = Tree::new();
    let text = r#"{
  "builders": [
    {"type": "null", "name": "smoke"},
    {"type": "amazon-ebs", "name": "east", "region": "us-east-1", "ami_name": "east-app", "source_ami": "ami-0123456789abcdef0"},
    {"type": "amazon-ebs", "name": "west", "region": "us-west-2", "ami_name": "west-app", "source_ami": "ami-0123456789abcdef0", "instance_type": 5},
    {"type": "googlecompute", "image_name": "x"}
  ],
  "provisioners": [
    {"type": "shell", "inline": ["echo east"], "only": ["east"]},
    {"type": "shell", "inline": ["echo not-east"], "except": ["east"]}
  ]
}"#;
    let pick = |only: &[&str], except: &[&str]| {
        let mut o = options(&[], &[]);
        o.only = only.iter().map(|s| s.to_string()).collect();
        o.except = except.iter().map(|s| s.to_string()).collect();
        load_template(&tree, text, &o)
    };
    let east = pick(&["east"], &[]).expect("east");
    assert_eq!(east.recipe.name, "east-app");
    assert_eq!(east.recipe.publish.regions, ["us-east-1"]);
    assert_eq!(east.recipe.provisioners.len(), 1);
    // Problems of the selected builder name its own index.
    let got = messages(&tree, pick(&["west"], &[]));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].contains("builders[2].instance_type"), "{got:?}");
    let got = messages(&tree, pick(&[], &[]));
    assert!(
        got[0].contains("a build makes one image, and 4 builders are selected (smoke, east, west, googlecompute)"),
        "{got:?}"
    );
    let got = messages(&tree, pick(&["smoke"], &[]));
    assert!(
        got[0].contains("builders[0].type: the `null` builder makes no image"),
        "{got:?}"
    );
    let by_except = pick(&[], &["smoke", "west", "googlecompute"]).expect("east by --except");
    assert_eq!(by_except.recipe, east.recipe);
    let got = messages(&tree, pick(&["north"], &[]));
    assert!(
        got[0].contains(
            "--only north: no builder has that name (builders: smoke, east, west, googlecompute)"
        ),
        "{got:?}"
    );
}

/// Post-processors and breakpoints do not run; the template loads (each
/// is a warning naming it, see tests/cli_validate.rs).
#[test]
fn post_processors_and_breakpoints_are_ignored() {
    let tree = Tree::new();
    let rest = r#", "provisioners": [{"type": "breakpoint", "note": "look"}, {"type": "shell", "inline": ["true"]}],
      "post-processors": [{"type": "manifest", "output": "m.json"}, [{"type": "amazon-import"}, "compress"]]"#;
    let loaded = load_template(&tree, &template("", rest), &options(&[], &[])).expect("loads");
    assert_eq!(loaded.recipe.provisioners.len(), 1);
    let rest = r#", "post-processors": {"type": "manifest"}"#;
    let got = messages(
        &tree,
        load_template(&tree, &template("", rest), &options(&[], &[])),
    );
    assert_eq!(got.len(), 1);
    assert!(
        got[0].contains("post-processors: expected a list of post-processors"),
        "{got:?}"
    );
}

#[test]
fn scripts_environment_and_only() {
    let tree = Tree::new();
    tree.write("a.sh", "echo a\n");
    tree.write("b.sh", "echo b\n");
    let rest = r#", "provisioners": [
      {"type": "shell", "scripts": ["a.sh", "b.sh"], "environment_vars": ["A=1", "B=x=y"]},
      {"type": "shell", "inline": ["skipped"], "only": ["other-builder"]},
      {"type": "shell", "inline": ["kept"], "except": ["other-builder"]}
    ]"#;
    let r = load_template(&tree, &template("", rest), &options(&[], &[]))
        .expect("valid")
        .recipe;
    let mut env = BTreeMap::new();
    env.insert("A".to_string(), "1".to_string());
    env.insert("B".to_string(), "x=y".to_string());
    assert_eq!(
        r.provisioners,
        vec![
            Provisioner::Shell(ShellProvisioner {
                source: ShellSource::Script("a.sh".into()),
                env: env.clone()
            }),
            Provisioner::Shell(ShellProvisioner {
                source: ShellSource::Script("b.sh".into()),
                env
            }),
            Provisioner::Shell(ShellProvisioner {
                source: ShellSource::Inline(vec!["kept".into()]),
                env: BTreeMap::new()
            }),
        ]
    );
}

#[test]
fn a_winrm_template_with_powershell_is_a_windows_recipe() {
    let tree = Tree::new();
    tree.write("setup.ps1", "Get-Date\n");
    let text = r#"{"builders": [{"type": "amazon-ebs", "region": "us-east-1",
        "source_ami": "ami-0abcdef1234567890", "instance_type": "t3.large",
        "communicator": "winrm", "winrm_username": "Administrator", "ami_name": "win"}],
      "provisioners": [
        {"type": "powershell", "inline": ["Install-WindowsFeature Web-Server"],
         "environment_vars": ["SITE=a"], "elevated_user": "Administrator"},
        {"type": "powershell", "script": "setup.ps1"}
      ]}"#;
    let r = load_template(&tree, text, &options(&[], &[]))
        .expect("valid")
        .recipe;
    assert_eq!(r.os, crate::recipe::OsKind::Windows);
    let env: BTreeMap<String, String> = [("SITE".to_string(), "a".to_string())].into();
    assert_eq!(
        r.provisioners,
        vec![
            Provisioner::Powershell(ShellProvisioner {
                source: ShellSource::Inline(vec!["Install-WindowsFeature Web-Server".into()]),
                env
            }),
            Provisioner::Powershell(ShellProvisioner {
                source: ShellSource::Script("setup.ps1".into()),
                env: BTreeMap::new()
            }),
        ]
    );
    // A Linux shell provisioner in a WinRM template is named at its
    // template path.
    let text = text.replace(
        r#""type": "powershell", "script""#,
        r#""type": "shell", "script""#,
    );
    let got = messages(&tree, load_template(&tree, &text, &options(&[], &[])));
    assert!(
        got.iter()
            .any(|m| m
                .contains("provisioners[1].type: a shell provisioner runs on Linux images only")),
        "{got:?}"
    );
}

#[test]
fn recipe_problems_are_reported_at_template_paths() {
    let tree = Tree::new();
    tree.write("a.sh", "echo a\n");
    let builder = r#",
    "region": "us-east-1",
    "ami_regions": ["mars-north-9x"],
    "ami_users": ["42"]"#;
    let rest = r#", "provisioners": [
      {"type": "shell", "scripts": ["a.sh", "missing.sh"]},
      {"type": "file", "source": "nothere.txt", "destination": "relative"}
    ]"#;
    let got = messages(
        &tree,
        load_template(&tree, &template(builder, rest), &options(&[], &[])),
    );
    assert_eq!(
        got,
        vec![
            "packer.json:7:21: builders[0].ami_regions[0]: \"mars-north-9x\" does not look like an AWS region (such as \"eu-west-1\")",
            "packer.json:8:19: builders[0].ami_users[0]: account id \"42\" must be exactly 12 digits",
            "packer.json:10:45: provisioners[0].scripts[1]: file missing.sh does not exist",
            "packer.json:11:24: provisioners[1].source: file or directory nothere.txt does not exist",
            "packer.json:11:49: provisioners[1].destination: destination \"relative\" must be an absolute path",
        ]
    );
}

#[test]
fn base_needs_exactly_one_source() {
    let tree = Tree::new();
    let text = r#"{"builders": [{"type": "amazon-ebs", "ami_name": "x"}]}"#;
    let got = messages(&tree, load_template(&tree, text, &options(&[], &[])));
    assert_eq!(
        got,
        vec!["packer.json:1:15: builders[0]: set `source_ami` or `source_ami_filter` (one is required)"]
    );
}

#[test]
fn name_cannot_be_derived_from_expressions_only() {
    let tree = Tree::new();
    let text = r#"{"builders": [{"type": "amazon-ebs", "ami_name": "{{timestamp}}", "source_ami": "ami-0123456789abcdef0"}]}"#;
    let got = messages(&tree, load_template(&tree, text, &options(&[], &[])));
    assert_eq!(
        got,
        vec!["packer.json:1:38: builders[0].ami_name: cannot derive a recipe name from ami_name; declare a `bakehouse_name` variable"]
    );
}

#[test]
fn clean_resource_name_follows_the_amazon_rule() {
    assert_eq!(
        clean_resource_name("2017-10-18T02:06:30Z"),
        "2017-10-18T02-06-30Z"
    );
    assert_eq!(
        clean_resource_name("My App (v1) [x] ./-'@_"),
        "My App (v1) [x] ./-'@_"
    );
    assert_eq!(clean_resource_name("a:b*c#d+é"), "a-b-c-d--");
}

#[test]
fn go_time_layouts() {
    let t = at();
    assert_eq!(
        go_time::format(&t, go_time::RFC3339),
        "2024-03-05T06:07:08Z"
    );
    assert_eq!(go_time::format(&t, "2006-01-02"), "2024-03-05");
    assert_eq!(go_time::format(&t, "20060102150405"), "20240305060708");
    assert_eq!(
        go_time::format(&t, "Mon Jan _2 15:04:05 MST 2006"),
        "Tue Mar  5 06:07:08 UTC 2024"
    );
    assert_eq!(
        go_time::format(&t, "Monday, January 2, 06 3:04PM -07:00"),
        "Tuesday, March 5, 24 6:07AM +00:00"
    );
    assert_eq!(go_time::format(&t, "002 .000 .999"), "065 .000 ");
    assert_eq!(go_time::format(&t, "Month: Monkey"), "Month: Monkey");
}
