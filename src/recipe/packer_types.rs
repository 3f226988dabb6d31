//! The serde shape of the Packer JSON templates bakehouse accepts: unknown
//! keys anywhere are errors that name them and list the accepted ones. Some
//! fields are read only to be accepted (`ssh_username`, `vpc_id`, ...).
#![allow(dead_code)]

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Template {
    #[serde(default)]
    pub(crate) description: Option<String>,
    #[serde(default)]
    pub(crate) min_packer_version: Option<String>,
    #[serde(default)]
    pub(crate) variables: BTreeMap<String, Option<String>>,
    #[serde(default, rename = "sensitive-variables")]
    pub(crate) sensitive_variables: Vec<String>,
    /// Read as they are; the one builder a build uses is chosen (and its
    /// type checked) first, then read as [`AmazonEbs`] or [`Qemu`].
    pub(crate) builders: Vec<Value>,
    #[serde(default)]
    pub(crate) provisioners: Vec<PackerProvisioner>,
    #[serde(default, rename = "post-processors")]
    pub(crate) post_processors: Option<Value>,
}

/// Options not read into a field are collected in `other` and checked
/// against [`super::packer_ignored`] (accepted with a warning) by the
/// converter; anything else is an unknown field.
#[derive(Debug, Deserialize)]
pub(crate) struct AmazonEbs {
    /// `amazon-ebs` (checked when the builder is selected).
    #[serde(rename = "type", default)]
    pub(crate) kind: Option<String>,
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) region: Option<String>,
    #[serde(default)]
    pub(crate) source_ami: Option<String>,
    #[serde(default)]
    pub(crate) source_ami_filter: Option<SourceAmiFilter>,
    #[serde(default)]
    pub(crate) instance_type: Option<String>,
    pub(crate) ami_name: String,
    #[serde(default)]
    pub(crate) ami_description: Option<String>,
    #[serde(default)]
    pub(crate) ami_regions: Vec<String>,
    #[serde(default)]
    pub(crate) ami_users: Vec<String>,
    #[serde(default)]
    pub(crate) tags: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) run_tags: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) subnet_id: Option<String>,
    #[serde(default)]
    pub(crate) security_group_id: Option<String>,
    #[serde(default)]
    pub(crate) security_group_ids: Vec<String>,
    #[serde(default)]
    pub(crate) iam_instance_profile: Option<String>,
    #[serde(default)]
    pub(crate) kms_key_id: Option<String>,
    #[serde(default)]
    pub(crate) encrypt_boot: Option<bool>,
    #[serde(default)]
    pub(crate) launch_block_device_mappings: Vec<BlockDevice>,
    #[serde(default)]
    pub(crate) communicator: Option<String>,
    #[serde(flatten)]
    pub(crate) other: BTreeMap<String, Value>,
}

/// The qemu builder, as far as bakehouse maps it: `disk_image: true` on a
/// local disk (`iso_url`), which becomes a local build on that disk.
/// Options not read into a field are collected in `other` and checked
/// against [`super::packer_ignored::QEMU`].
#[derive(Debug, Deserialize)]
pub(crate) struct Qemu {
    /// `qemu` (checked when the builder is selected).
    #[serde(rename = "type", default)]
    pub(crate) kind: Option<String>,
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) disk_image: bool,
    #[serde(default)]
    pub(crate) iso_url: Option<String>,
    #[serde(default)]
    pub(crate) iso_urls: Vec<String>,
    #[serde(default)]
    pub(crate) iso_checksum: Option<String>,
    #[serde(default)]
    pub(crate) format: Option<String>,
    #[serde(default)]
    pub(crate) vm_name: Option<String>,
    #[serde(default)]
    pub(crate) memory: Option<NumberOrString>,
    #[serde(default)]
    pub(crate) cpus: Option<NumberOrString>,
    #[serde(default)]
    pub(crate) disk_size: Option<NumberOrString>,
    #[serde(default)]
    pub(crate) skip_resize_disk: bool,
    #[serde(flatten)]
    pub(crate) other: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SourceAmiFilter {
    #[serde(default)]
    pub(crate) filters: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) owners: Vec<String>,
    #[serde(default)]
    pub(crate) most_recent: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BlockDevice {
    #[serde(default)]
    pub(crate) device_name: Option<String>,
    #[serde(default)]
    pub(crate) volume_size: Option<NumberOrString>,
    #[serde(default)]
    pub(crate) volume_type: Option<String>,
    #[serde(default)]
    pub(crate) delete_on_termination: Option<bool>,
    /// Accepted as Packer documents them; the builder's volume takes only
    /// the size (and the recipe's encryption), the rest is EC2's default.
    #[serde(default)]
    pub(crate) encrypted: Option<bool>,
    #[serde(default)]
    pub(crate) iops: Option<NumberOrString>,
    #[serde(default)]
    pub(crate) throughput: Option<NumberOrString>,
    #[serde(default)]
    pub(crate) kms_key_id: Option<String>,
    #[serde(default)]
    pub(crate) snapshot_id: Option<String>,
    #[serde(default)]
    pub(crate) no_device: Option<bool>,
    #[serde(default)]
    pub(crate) virtual_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum NumberOrString {
    Number(u64),
    String(String),
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum PackerProvisioner {
    Shell(PackerShell),
    /// Windows: maps to the `powershell` provisioner.
    Powershell(PackerShell),
    File(PackerFile),
    #[serde(rename = "shell-local")]
    ShellLocal(PackerShellLocal),
    #[serde(rename = "salt-masterless")]
    SaltMasterless(PackerSalt),
    #[serde(rename = "ansible-local")]
    AnsibleLocal(PackerAnsibleLocal),
    /// Pauses an interactive Packer build: warned and ignored.
    Breakpoint(BTreeMap<String, Value>),
}

#[derive(Debug, Deserialize)]
pub(crate) struct PackerShell {
    #[serde(default)]
    pub(crate) inline: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) script: Option<String>,
    #[serde(default)]
    pub(crate) scripts: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) environment_vars: Vec<String>,
    #[serde(default)]
    pub(crate) env: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) only: Vec<String>,
    #[serde(default)]
    pub(crate) except: Vec<String>,
    #[serde(flatten)]
    pub(crate) other: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct PackerFile {
    #[serde(default)]
    pub(crate) source: Option<String>,
    #[serde(default)]
    pub(crate) content: Option<String>,
    pub(crate) destination: String,
    #[serde(default)]
    pub(crate) direction: Option<String>,
    #[serde(default)]
    pub(crate) only: Vec<String>,
    #[serde(default)]
    pub(crate) except: Vec<String>,
    #[serde(flatten)]
    pub(crate) other: BTreeMap<String, Value>,
}

/// The salt-masterless provisioner (Cloudbreak's layout: a local state
/// tree, pillar roots and a custom state).
#[derive(Debug, Deserialize)]
pub(crate) struct PackerSalt {
    #[serde(default)]
    pub(crate) local_state_tree: Option<String>,
    #[serde(default)]
    pub(crate) local_pillar_roots: Option<String>,
    #[serde(default)]
    pub(crate) custom_state: Option<String>,
    #[serde(default)]
    pub(crate) skip_bootstrap: bool,
    #[serde(default)]
    pub(crate) only: Vec<String>,
    #[serde(default)]
    pub(crate) except: Vec<String>,
    #[serde(flatten)]
    pub(crate) other: BTreeMap<String, Value>,
}

/// The ansible-local provisioner: a playbook run on the image itself.
#[derive(Debug, Deserialize)]
pub(crate) struct PackerAnsibleLocal {
    #[serde(default)]
    pub(crate) playbook_file: Option<String>,
    #[serde(default)]
    pub(crate) extra_arguments: Vec<String>,
    #[serde(default)]
    pub(crate) only: Vec<String>,
    #[serde(default)]
    pub(crate) except: Vec<String>,
    #[serde(flatten)]
    pub(crate) other: BTreeMap<String, Value>,
}

/// The shell-local provisioner: commands run on the machine running
/// bakehouse, in a sandbox, before the build.
#[derive(Debug, Deserialize)]
pub(crate) struct PackerShellLocal {
    #[serde(default)]
    pub(crate) command: Option<String>,
    /// Everything else is the shell provisioner's (`inline`, `script`,
    /// `scripts`, `environment_vars`, `env`, `only`, `except`).
    #[serde(flatten)]
    pub(crate) shell: PackerShell,
}
