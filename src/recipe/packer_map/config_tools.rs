//! The salt-masterless and ansible-local provisioners, mapped onto the
//! recipe's `salt` and `ansible` provisioners.
//!
//! - salt-masterless: `local_state_tree` is the state tree, `local_pillar_roots`
//!   the pillar root, `custom_state` the one state applied (else the
//!   highstate). Without `skip_bootstrap: true` Salt is bootstrapped (from
//!   PyPI, see [`crate::backends::salt`]) and removed after the run.
//! - ansible-local: `playbook_file` is the playbook (its directory is
//!   uploaded with it); `extra_arguments` may only carry `--extra-vars`/`-e`
//!   (`k=v ...` or a JSON object), which become `extra_vars`.

use std::collections::BTreeMap;

use serde_json::Value;

use super::Converter;
use crate::recipe::locate::{field_index, field_key};
use crate::recipe::model::{AnsibleProvisioner, Provisioner, SaltProvisioner};
use crate::recipe::packer_ignored::{ANSIBLE_LOCAL, SALT_MASTERLESS};
use crate::recipe::packer_types::{PackerAnsibleLocal, PackerSalt};

impl Converter<'_> {
    pub(super) fn salt(&mut self, field: &str, s: &PackerSalt, out: &mut Vec<Provisioner>) {
        self.extra(field, "a salt-masterless", &s.other, SALT_MASTERLESS);
        let state_field = field_key(field, "local_state_tree");
        let Some(tree) = &s.local_state_tree else {
            self.problems.push((
                field.to_string(),
                "`local_state_tree` is required: bakehouse uploads the state tree".to_string(),
            ));
            return;
        };
        let index = field_index("provisioners", out.len());
        self.map(&index, field);
        self.map(&field_key(&index, "state_tree"), &state_field);
        self.map(
            &field_key(&index, "pillar_root"),
            &field_key(field, "local_pillar_roots"),
        );
        self.map(
            &field_key(&index, "states"),
            &field_key(field, "custom_state"),
        );
        let state_tree = self.render(&state_field, tree);
        let pillar_root = s
            .local_pillar_roots
            .as_ref()
            .map(|p| self.render(&field_key(field, "local_pillar_roots"), p));
        let states = s
            .custom_state
            .as_ref()
            .map(|c| vec![self.render(&field_key(field, "custom_state"), c)])
            .unwrap_or_default();
        out.push(Provisioner::Salt(SaltProvisioner {
            state_tree,
            states,
            pillar: BTreeMap::new(),
            pillar_root,
            // Packer bootstraps Salt unless told not to.
            bootstrap: !s.skip_bootstrap,
            keep_salt: false,
        }));
    }

    pub(super) fn ansible_local(
        &mut self,
        field: &str,
        a: &PackerAnsibleLocal,
        out: &mut Vec<Provisioner>,
    ) {
        self.extra(field, "an ansible-local", &a.other, ANSIBLE_LOCAL);
        let Some(playbook) = &a.playbook_file else {
            self.problems
                .push((field.to_string(), "`playbook_file` is required".to_string()));
            return;
        };
        let index = field_index("provisioners", out.len());
        self.map(&index, field);
        self.map(
            &field_key(&index, "playbook"),
            &field_key(field, "playbook_file"),
        );
        self.map(
            &field_key(&index, "extra_vars"),
            &field_key(field, "extra_arguments"),
        );
        let playbook = self.render(&field_key(field, "playbook_file"), playbook);
        let args = self.render_list(&field_key(field, "extra_arguments"), &a.extra_arguments);
        let extra_vars = match extra_vars(&args) {
            Ok(vars) => vars,
            Err(m) => {
                self.problems.push((field_key(field, "extra_arguments"), m));
                BTreeMap::new()
            }
        };
        out.push(Provisioner::Ansible(AnsibleProvisioner {
            playbook,
            extra_vars,
            requirements: None,
        }));
    }
}

/// The extra vars in ansible-playbook arguments: `--extra-vars VALUE`,
/// `--extra-vars=VALUE`, `-e VALUE` (also as one string, `"-e 'k=v'"`),
/// VALUE being `k=v ...` or a JSON object. Anything else is refused.
fn extra_vars(args: &[String]) -> Result<BTreeMap<String, Value>, String> {
    let mut vars = BTreeMap::new();
    let mut args = args.iter().map(|a| a.trim());
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once(['=', ' ']) {
            Some((flag, value)) if matches!(flag, "--extra-vars" | "-e") => (flag, Some(value)),
            _ => (arg, None),
        };
        if !matches!(flag, "--extra-vars" | "-e") {
            return Err(format!(
                "{arg:?}: only --extra-vars/-e arguments are supported (the play runs against the image with -c local)"
            ));
        }
        let value = match inline.or_else(|| args.next()) {
            Some(v) => unquote(v.trim()),
            None => return Err(format!("{flag} needs a value")),
        };
        if value.starts_with('{') {
            let object: BTreeMap<String, Value> = serde_json::from_str(value)
                .map_err(|e| format!("{flag} {value}: not a JSON object: {e}"))?;
            vars.extend(object);
        } else if value.starts_with('@') {
            return Err(format!(
                "{flag} {value}: vars files are not read; give the variables as k=v or JSON"
            ));
        } else {
            for pair in value.split_whitespace() {
                let (k, v) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("{flag} {value}: {pair:?} is not k=v"))?;
                vars.insert(k.to_string(), Value::String(unquote(v).to_string()));
            }
        }
    }
    Ok(vars)
}

/// `s` without one pair of surrounding quotes.
fn unquote(s: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = s.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return inner;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn extra_vars_are_read_in_the_forms_templates_use() {
        let got = extra_vars(&args(&[
            "--extra-vars",
            "a=1 b=two",
            "-e 'c=3'",
            "--extra-vars={\"d\": [1]}",
        ]))
        .expect("valid");
        assert_eq!(got["a"], "1");
        assert_eq!(got["b"], "two");
        assert_eq!(got["c"], "3");
        assert_eq!(got["d"], serde_json::json!([1]));
    }

    #[test]
    fn other_arguments_and_vars_files_are_refused() {
        for bad in [
            &["--become"][..],
            &["-e"][..],
            &["-e", "@vars.yml"][..],
            &["-e", "novalue"][..],
            &["-e", "{not json"][..],
        ] {
            assert!(extra_vars(&args(bad)).is_err(), "{bad:?}");
        }
    }
}
