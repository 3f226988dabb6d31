//! Packer builders other than amazon-ebs: qemu `disk_image` templates
//! become local builds on the disk.

use super::test_support::{messages, Tree};
use super::*;

/// A qemu `disk_image` template on `base.qcow2`, with `extra` spliced into
/// the builder object.
fn qemu(extra: &str) -> String {
    format!(
        r#"{{"builders": [{{"type": "qemu", "disk_image": true, "iso_url": "base.qcow2", "iso_checksum": "none", "headless": true{extra}}}],
  "provisioners": [{{"type": "shell", "inline": ["echo hi"]}}]}}"#
    )
}

fn tree_with_base() -> Tree {
    let tree = Tree::new();
    tree.write("base.qcow2", "QFI\u{fb}not really a disk");
    tree
}

#[test]
fn a_qemu_disk_image_template_is_a_local_build_on_its_disk() {
    let tree = tree_with_base();
    let path = tree.write(
        "t.json",
        &qemu(r#", "vm_name": "overcloud-full.qcow2", "memory": 2048, "cpus": "2", "format": "qcow2""#),
    );
    let loaded = load(&path).expect("valid");
    let r = &loaded.recipe;
    assert_eq!(r.name, "overcloud-full");
    assert_eq!(r.base, Base::Path("base.qcow2".into()));
    assert_eq!(r.builder.memory_mb, Some(2048));
    assert_eq!(r.builder.cpus, Some(2));
    assert!(r.publish.regions.is_empty());
    assert_eq!(r.provisioners.len(), 1);
    assert_eq!(loaded.resolve("base.qcow2"), tree.path("base.qcow2"));
}

#[test]
fn disk_size_grows_the_disk_in_packers_units_unless_resizing_is_skipped() {
    let tree = tree_with_base();
    let size = |extra: &str| {
        load(&tree.write("t.json", &qemu(extra)))
            .map(|l| l.recipe.builder.disk_size)
            .map_err(|e| messages(&tree, Err(e)))
    };
    assert_eq!(size(""), Ok(None));
    assert_eq!(size(r#", "disk_size": 4096"#), Ok(Some(4096)));
    assert_eq!(size(r#", "disk_size": "3G""#), Ok(Some(3072)));
    assert_eq!(size(r#", "disk_size": "2048M""#), Ok(Some(2048)));
    assert_eq!(size(r#", "disk_size": "1048577K""#), Ok(Some(1025)));
    assert_eq!(
        size(r#", "disk_size": "3G", "skip_resize_disk": true"#),
        Ok(None)
    );
    let got = size(r#", "disk_size": "big""#).unwrap_err();
    assert!(
        got.iter()
            .any(|m| m.contains("builders[0].disk_size: \"big\" is not a size")),
        "{got:#?}"
    );
    let got = size(r#", "disk_size": 100"#).unwrap_err();
    assert!(
        got.iter()
            .any(|m| m.contains("builders[0].disk_size: 100 must be between 256 and 2097152")),
        "{got:#?}"
    );
}

#[test]
fn without_vm_name_the_name_is_packers_disk_name_and_file_urls_are_paths() {
    let tree = tree_with_base();
    let abs = tree.path("base.qcow2");
    let text = qemu("").replace(
        r#""iso_url": "base.qcow2""#,
        &format!(r#""iso_url": "file://{}""#, abs.display()),
    );
    let loaded = load(&tree.write("t.json", &text)).expect("valid");
    assert_eq!(loaded.recipe.name, "packer-qemu");
    assert_eq!(loaded.recipe.base, Base::Path(abs.display().to_string()));
}

#[test]
fn qemu_problems_are_all_reported_with_their_fields() {
    let tree = tree_with_base();
    let text = r#"{"builders": [{"type": "qemu", "iso_url": "https://example.com/x.qcow2", "format": "raw", "memory": "lots", "net_device": "virtio-net", "floppy_everything": 1}]}"#;
    let got = messages(&tree, load(&tree.write("t.json", text)));
    for wanted in [
        "builders[0].disk_image: bakehouse builds on an existing disk",
        "builders[0].iso_url: https://example.com/x.qcow2: bakehouse reads the base disk from this machine",
        "builders[0].format: format \"raw\": a local build writes a compressed qcow2",
        "builders[0].memory: \"lots\" is not a whole number",
        "builders[0].floppy_everything: unknown field `floppy_everything`",
    ] {
        assert!(
            got.iter().any(|m| m.contains(wanted)),
            "{wanted:?} not in {got:#?}"
        );
    }
    assert!(!got.iter().any(|m| m.contains("net_device")), "{got:#?}");
}

#[test]
fn a_sha256_iso_checksum_is_checked_against_the_disk() {
    let tree = tree_with_base();
    let digest = crate::registry::locate::file_digest(&tree.path("base.qcow2")).expect("hash");
    let with = |checksum: &str| {
        let text = qemu("").replace(
            r#""iso_checksum": "none""#,
            &format!(r#""iso_checksum": "{checksum}""#),
        );
        load(&tree.write("t.json", &text))
    };
    assert!(with(&digest).is_ok());
    assert!(with(digest.trim_start_matches("sha256:")).is_ok());
    let wrong = format!("sha256:{}", "0".repeat(64));
    let got = messages(&tree, with(&wrong));
    assert!(
        got.iter()
            .any(|m| m.contains("iso_checksum: base.qcow2 has sha256:")
                && m.contains("not the sha256:000")),
        "{got:#?}"
    );
    let got = messages(&tree, with("md5:d41d8cd98f00b204e9800998ecf8427e"));
    assert!(
        got.iter().any(|m| m.contains("give `none` or a sha256")),
        "{got:#?}"
    );
}

#[test]
fn an_hcl_qemu_source_maps_the_same_way() {
    let tree = tree_with_base();
    let path = tree.write(
        "t.pkr.hcl",
        "source \"qemu\" \"overcloud\" {\n  disk_image = true\n  iso_url = \"base.qcow2\"\n  iso_checksum = \"none\"\n  vm_name = \"overcloud.qcow2\"\n}\nbuild {\n  sources = [\"source.qemu.overcloud\"]\n}\n",
    );
    let loaded = load(&path).expect("valid");
    assert_eq!(loaded.recipe.name, "overcloud");
    assert_eq!(loaded.recipe.base, Base::Path("base.qcow2".into()));
}

#[test]
fn cloudbreak_salt_masterless_maps_onto_a_salt_provisioner() {
    let loaded = load(&super::test_support::fixtures().join("../packer/cloudbreak-salt.json"));
    let loaded = match loaded {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    };
    let salt = loaded
        .recipe
        .provisioners
        .iter()
        .find_map(|p| match p {
            Provisioner::Salt(s) => Some(s.clone()),
            _ => None,
        })
        .expect("a salt provisioner");
    assert_eq!(salt.state_tree, "saltstack/salt");
    assert_eq!(salt.pillar_root.as_deref(), Some("saltstack/pillar"));
    assert_eq!(salt.states, ["custom"]);
    let inputs = loaded.recipe.provisioners[1].inputs();
    assert_eq!(inputs, ["saltstack/salt", "saltstack/pillar"]);
}

#[test]
fn ansible_local_maps_its_playbook_and_extra_vars() {
    let loaded = load_with(
        &super::test_support::fixtures().join("../packer/ansible-local.json"),
        &LoadOptions {
            vars: [("greeting".to_string(), "howdy".to_string())].into(),
            ..LoadOptions::default()
        },
    )
    .expect("valid");
    match &loaded.recipe.provisioners[1] {
        Provisioner::Ansible(a) => {
            assert_eq!(a.playbook, "ansible/site.yml");
            assert_eq!(a.playbook_dir(), "ansible");
            assert_eq!(a.extra_vars["greeting"], "howdy");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn salt_and_ansible_problems_name_their_fields() {
    let tree = Tree::new();
    let text = r#"{"builders": [{"type": "amazon-ebs", "ami_name": "x", "source_ami": "ami-0123456789abcdef0"}],
  "provisioners": [
    {"type": "salt-masterless", "remote_state_tree": "/srv/salt", "skip_bootstrap": true},
    {"type": "ansible-local", "playbook_file": "missing.yml", "extra_arguments": ["--become"], "galaxy_file": "req.yml"}
  ]}"#;
    let got = messages(&tree, load(&tree.write("t.json", text)));
    for wanted in [
        "provisioners[0]: `local_state_tree` is required",
        "provisioners[1].extra_arguments: \"--become\": only --extra-vars/-e",
        "provisioners[1].galaxy_file: unknown field `galaxy_file`",
    ] {
        assert!(
            got.iter().any(|m| m.contains(wanted)),
            "{wanted:?} not in {got:#?}"
        );
    }
}

#[test]
fn file_content_is_written_byte_for_byte_by_a_shell_step() {
    let tree = Tree::new();
    let target = tree.path("out/etc/motd");
    let content = "it's \"quoted\" $HOME `x`\nno newline at the end";
    let text = serde_json::json!({
        "builders": [{"type": "amazon-ebs", "ami_name": "x", "source_ami": "ami-0123456789abcdef0"}],
        "provisioners": [{"type": "file", "content": content, "destination": target.display().to_string()}]
    })
    .to_string();
    let loaded = load(&tree.write("t.json", &text)).expect("valid");
    let Provisioner::Shell(ShellProvisioner {
        source: ShellSource::Inline(lines),
        ..
    }) = &loaded.recipe.provisioners[0]
    else {
        panic!("{:?}", loaded.recipe.provisioners)
    };
    let status = std::process::Command::new("sh")
        .arg("-ec")
        .arg(lines.join("\n"))
        .status()
        .expect("sh");
    assert!(status.success());
    assert_eq!(std::fs::read_to_string(&target).expect("written"), content);

    let both = text.replace("\"content\"", "\"source\": \"t.json\", \"content\"");
    let got = messages(&tree, load(&tree.write("t.json", &both)));
    assert!(
        got.iter()
            .any(|m| m.contains("exactly one of `source` or `content` (not both)")),
        "{got:#?}"
    );
}

#[test]
fn uuid_and_build_type_render_and_four_unknown_fields_are_reported_together() {
    let tree = tree_with_base();
    let text = qemu(r#", "vm_name": "img-{{uuid}}""#).replace(
        r#"{"type": "shell", "inline": ["echo hi"]}"#,
        r#"{"type": "shell", "inline": ["echo hi"], "environment_vars": ["ID={{uuid}}", "KIND={{build_type}}"]}"#,
    );
    let loaded = load(&tree.write("t.json", &text)).expect("valid");
    assert_eq!(
        loaded.recipe.name, "img",
        "the uuid is left out of the name"
    );
    let Provisioner::Shell(shell) = &loaded.recipe.provisioners[0] else {
        panic!()
    };
    assert_eq!(shell.env["KIND"], "qemu");
    assert!(
        uuid::Uuid::parse_str(&shell.env["ID"]).is_ok(),
        "{:?}",
        shell.env
    );

    let text = qemu(r#", "colour": 1, "flavour": 2"#).replace(
        r#""inline": ["echo hi"]}"#,
        r#""inline": ["echo hi"], "pause_befor": "1s"}, {"type": "file", "source": "base.qcow2", "destination": "/x", "directon": "up"}"#,
    );
    let got = messages(&tree, load(&tree.write("t.json", &text)));
    let unknown: Vec<&String> = got.iter().filter(|m| m.contains("unknown field")).collect();
    assert_eq!(unknown.len(), 4, "{got:#?}");
    for field in ["colour", "flavour", "pause_befor", "directon"] {
        assert!(
            unknown.iter().any(|m| m.contains(&format!("`{field}`"))),
            "{field} in {got:#?}"
        );
    }
}

#[test]
fn a_salt_bootstrap_in_a_local_build_needs_network() {
    let tree = tree_with_base();
    tree.write("salt/top.sls", "base: {}\n");
    let recipe = |network: bool| {
        format!("name: s\nbase: {{path: base.qcow2}}\nbuilder: {{network: {network}}}\nprovisioners:\n  - type: salt\n    state_tree: salt\n    bootstrap: true\n")
    };
    let got = messages(&tree, tree.load_yaml(&recipe(false)));
    assert_eq!(
        got,
        ["recipe.yaml:7:5: provisioners[0].bootstrap: bootstrap installs Salt from PyPI: a local build needs `builder.network: true`"]
    );
    assert!(tree.load_yaml(&recipe(true)).is_ok());
}
