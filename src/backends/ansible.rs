//! The ansible provisioner's script, written once for both backends (see
//! [`crate::communicator::jobs`]): it runs in the playbook's directory
//! (the job's working directory, so an `ansible.cfg` and roles next to the
//! playbook apply), installs the roles of an optional requirements file
//! with `ansible-galaxy` into the uploaded `roles/` (removed with the work
//! directory), then runs `ansible-playbook -c local -i localhost,` without
//! colour, with the recipe's extra vars as JSON.

use crate::recipe::{sh_quote, AnsibleProvisioner};

/// The script for `ansible`, run in the uploaded playbook directory; a
/// requirements file is at `$work/requirements.yml`.
pub fn ansible_script(ansible: &AnsibleProvisioner) -> Result<String, String> {
    let file = std::path::Path::new(&ansible.playbook)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| format!("playbook {:?} names no file", ansible.playbook))?;
    let mut s = String::from(
        "set -eu\ncommand -v ansible-playbook >/dev/null 2>&1 || { echo \"bakehouse: ansible-playbook is not installed: install Ansible in the base or an earlier provisioner\" >&2; exit 127; }\nexport ANSIBLE_NOCOLOR=1\n",
    );
    if ansible.requirements.is_some() {
        s.push_str("ansible-galaxy role install -r \"$work/requirements.yml\" -p roles\n");
    }
    s.push_str("ansible-playbook -c local -i localhost,");
    if !ansible.extra_vars.is_empty() {
        let json = serde_json::to_string(&ansible.extra_vars).map_err(|e| e.to_string())?;
        s.push_str(&format!(" --extra-vars {}", sh_quote(&json)));
    }
    s.push(' ');
    s.push_str(&sh_quote(&file));
    s.push('\n');
    Ok(s)
}
