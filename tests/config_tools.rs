//! Real configuration tools in local builds, no stand-ins: ansible-core
//! from Debian, installed by an earlier provisioner of the same build,
//! applies a playbook with a role (found through the `ansible.cfg` next to
//! the playbook, so the playbook's directory is the working directory), a
//! template and a handler.

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
        "- hosts: all\n  roles:\n    - motd\n",
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
        "name: ansible-real\nbase: {path: ../bookworm.tar.zst}\nbuilder: {network: true}\nprovisioners:\n  - type: shell\n    env: {DEBIAN_FRONTEND: noninteractive}\n    inline:\n      - apt-get update -qq\n      - apt-get install -y -qq --no-install-recommends ansible-core >/dev/null\n  - type: ansible\n    playbook: play/site.yml\n    extra_vars: {greeting: Hello}\n",
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
    // The real tool ran: the image has ansible-core from Debian.
    let status = fs::read_to_string(tree.join("var/lib/dpkg/status")).unwrap();
    let block = status
        .split("\n\n")
        .find(|b| b.starts_with("Package: ansible-core\n"))
        .expect("ansible-core is installed");
    assert!(block.contains("\nVersion: 2.14"), "{block}");
}
