//! The ansible provisioner's script, written once for both backends (the
//! local sandbox runs it with `sh`, EC2 sends it through SSM): in the
//! playbook's directory (so an `ansible.cfg` and roles next to the
//! playbook apply), `ansible-playbook -c local -i localhost,` without
//! colour, with the recipe's extra vars as JSON.

use crate::recipe::{sh_quote, AnsibleProvisioner};

/// The script for `ansible`; `dir` is a shell word naming the directory
/// the playbook's directory was copied to (`"$work/play"`, or a quoted
/// path).
pub fn ansible_script(ansible: &AnsibleProvisioner, dir: &str) -> Result<String, String> {
    let file = std::path::Path::new(&ansible.playbook)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| format!("playbook {:?} names no file", ansible.playbook))?;
    let mut s = format!(
        "set -eu\ncommand -v ansible-playbook >/dev/null 2>&1 || {{ echo \"bakehouse: ansible-playbook is not installed: install Ansible in the base or an earlier provisioner\" >&2; exit 127; }}\ncd {dir}\nexport ANSIBLE_NOCOLOR=1\nansible-playbook -c local -i localhost,"
    );
    if !ansible.extra_vars.is_empty() {
        let json = serde_json::to_string(&ansible.extra_vars).map_err(|e| e.to_string())?;
        s.push_str(&format!(" --extra-vars {}", sh_quote(&json)));
    }
    s.push(' ');
    s.push_str(&sh_quote(&file));
    s.push('\n');
    Ok(s)
}
