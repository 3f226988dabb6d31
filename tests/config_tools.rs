//! Real configuration tools in local builds, no stand-ins: ansible-core
//! from Debian, installed by an earlier provisioner of the same build,
//! applies a playbook with a role (found through the `ansible.cfg` next to
//! the playbook, so the playbook's directory is the working directory), a
//! template and a handler, plus a role its requirements file names
//! (installed by ansible-galaxy from a role archive); a Packer template's salt-masterless provisioner
//! bootstraps Salt from PyPI and applies Cloudbreak's layout
//! (`saltstack/salt/custom/init.sls` including `custom.sls`, which copies
//! and runs `custom.sh`, plus pillar), leaving neither Salt nor its minion
//! id, cache or bootstrap packages in the image.

mod local_support;

use std::fs;

use local_support::{debian_base, untar, Harness};

#[tokio::test]
async fn real_ansible_applies_a_role_a_template_and_a_handler() {
    let h = Harness::new(None);
    fs::copy(debian_base(), h.path("bookworm.tar.zst")).unwrap();
    h.write(
        "recipe/play/ansible.cfg",
        "[defaults]\nroles_path = ./my-roles\n",
    );
    h.write(
        "recipe/play/site.yml",
        "- hosts: all\n  roles:\n    - motd\n    - greeting\n",
    );
    // A role archive as ansible-galaxy installs it (no network needed).
    h.write(
        "role-src/greeting/meta/main.yml",
        "galaxy_info: {author: bakehouse, description: test role, license: MIT, min_ansible_version: '2.14'}\ndependencies: []\n",
    );
    h.write(
        "role-src/greeting/tasks/main.yml",
        "- ansible.builtin.copy:\n    content: \"from a requirements role\\n\"\n    dest: /etc/greeting\n",
    );
    fs::create_dir_all(h.path("recipe/play/vendor")).unwrap();
    let tarred = std::process::Command::new("tar")
        .arg("-czf")
        .arg(h.path("recipe/play/vendor/greeting.tar.gz"))
        .arg("-C")
        .arg(h.path("role-src"))
        .arg("greeting")
        .status()
        .unwrap();
    assert!(tarred.success());
    h.write(
        "recipe/requirements.yml",
        "- src: vendor/greeting.tar.gz\n  name: greeting\n",
    );
    h.write(
        "recipe/play/my-roles/motd/tasks/main.yml",
        "- name: write the message of the day\n  ansible.builtin.template:\n    src: motd.j2\n    dest: /etc/motd\n  notify: motd written\n",
    );
    h.write(
        "recipe/play/my-roles/motd/templates/motd.j2",
        "{{ greeting }} from {{ ansible_facts['distribution'] }} {{ ansible_facts['distribution_major_version'] }}\n",
    );
    h.write(
        "recipe/play/my-roles/motd/handlers/main.yml",
        "- name: motd written\n  ansible.builtin.copy:\n    content: \"handler ran\\n\"\n    dest: /etc/motd-handler\n",
    );
    let recipe = h.write(
        "recipe/ansible.yaml",
        "name: ansible-real\nbase: {path: ../bookworm.tar.zst}\nbuilder: {network: true}\nprovisioners:\n  - type: shell\n    env: {DEBIAN_FRONTEND: noninteractive}\n    inline:\n      - apt-get update -qq\n      - apt-get install -y -qq --no-install-recommends ansible-core >/dev/null\n  - type: ansible\n    playbook: play/site.yml\n    requirements: requirements.yml\n    extra_vars: {greeting: Hello}\n",
    );
    let out = h.build(&recipe, "ansible-real").await;
    assert_eq!(out.status(), "SUCCEEDED", "{:?}", out.error);
    let tree = h.path("out");
    untar(&out.artifact(".tar.zst"), &tree);
    assert_eq!(
        fs::read_to_string(tree.join("etc/motd")).unwrap(),
        "Hello from Debian 12\n"
    );
    assert_eq!(
        fs::read_to_string(tree.join("etc/motd-handler")).unwrap(),
        "handler ran\n"
    );
    assert_eq!(
        fs::read_to_string(tree.join("etc/greeting")).unwrap(),
        "from a requirements role\n"
    );
    // The real tool ran: the image has ansible-core from Debian.
    let status = fs::read_to_string(tree.join("var/lib/dpkg/status")).unwrap();
    let block = status
        .split("\n\n")
        .find(|b| b.starts_with("Package: ansible-core\n"))
        .expect("ansible-core is installed");
    assert!(block.contains("\nVersion: 2.14"), "{block}");
}

/// The paths of installed packages' names in a tree's dpkg status.
fn installed(tree: &std::path::Path) -> Vec<String> {
    fs::read_to_string(tree.join("var/lib/dpkg/status"))
        .unwrap()
        .split("\n\n")
        .filter(|b| b.contains("\nStatus: install ok installed"))
        .filter_map(|b| b.strip_prefix("Package: "))
        .filter_map(|b| b.lines().next())
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn a_salt_masterless_template_bootstraps_salt_and_applies_cloudbreaks_layout() {
    let h = Harness::new(None);
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/packer");
    h.write("recipe/bookworm.tar.zst", "");
    fs::copy(debian_base(), h.path("recipe/bookworm.tar.zst")).unwrap();
    for file in [
        "salt/top.sls",
        "salt/custom/init.sls",
        "salt/custom/custom.sls",
    ] {
        let text = fs::read_to_string(fixtures.join("saltstack").join(file)).unwrap();
        h.write(&format!("recipe/saltstack/{file}"), &text);
    }
    // Cloudbreak's placeholder script, doing something the test can see.
    h.write(
        "recipe/saltstack/salt/custom/custom.sh",
        "#!/bin/sh\necho custom-ran > /etc/cloudbreak-custom\n",
    );
    h.write(
        "recipe/saltstack/salt/custom/init.sls",
        "include:\n  - custom.custom\n/etc/cloudbreak-role:\n  file.managed:\n    - contents_pillar: role\n",
    );
    h.write(
        "recipe/saltstack/pillar/top.sls",
        "base:\n  '*':\n    - cluster\n",
    );
    h.write("recipe/saltstack/pillar/cluster.sls", "role: worker\n");
    let template = h.write(
        "recipe/cloudbreak.json",
        r#"{
  "builders": [{"type": "qemu", "disk_image": true, "iso_url": "bookworm.tar.zst", "vm_name": "cloudbreak"}],
  "provisioners": [{
    "type": "salt-masterless",
    "local_state_tree": "saltstack/salt",
    "local_pillar_roots": "saltstack/pillar",
    "custom_state": "custom"
  }]
}"#,
    );
    let before = {
        let tree = h.path("before");
        untar(&debian_base(), &tree);
        installed(&tree)
    };
    let out = h.build(&template, "cloudbreak").await;
    assert_eq!(out.status(), "SUCCEEDED", "{:?}", out.error);
    let tree = h.path("out");
    untar(&out.artifact(".tar.zst"), &tree);
    assert_eq!(
        fs::read_to_string(tree.join("etc/cloudbreak-custom")).unwrap(),
        "custom-ran\n"
    );
    assert_eq!(
        fs::read_to_string(tree.join("etc/cloudbreak-role"))
            .unwrap()
            .trim(),
        "worker"
    );
    for left in [
        "etc/salt/minion_id",
        "etc/salt/pki",
        "var/cache/salt",
        "opt/bakehouse-salt",
        "usr/local/bin/salt-call",
    ] {
        assert!(!tree.join(left).exists(), "{left} is left in the image");
    }
    assert_eq!(
        installed(&tree),
        before,
        "the bootstrap's packages are gone"
    );
}
