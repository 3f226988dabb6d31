//! The recipe data model: what a `recipes/*.yaml` (or `.json`) file contains.
//!
//! Every struct denies unknown fields, names are snake_case. Mutually exclusive
//! choices (`base`, `version`, a shell provisioner's `inline`/`script`) are Rust
//! enums; on the wire they are single-key maps, read through small "raw" structs
//! (see [`super::raw`]) so a typo names the accepted keys.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::clean::CleanItem;
use super::raw::{RawBase, RawShell, RawVersion};

/// A recipe: which base image to start from, how to provision and clean it,
/// where to publish it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Package name in the registry, `[a-z0-9][a-z0-9._-]*`.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9._-]*$"))]
    pub name: String,
    /// Human-readable label; defaults to `name` (see [`Recipe::label`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Operating system family of the image.
    #[serde(default)]
    pub os: OsKind,
    /// How the registered version is chosen.
    #[serde(default)]
    pub version: VersionPolicy,
    /// The image the build starts from.
    pub base: Base,
    /// Builder instance / local build settings.
    #[serde(default)]
    pub builder: BuilderSettings,
    /// Provisioners, applied in order.
    #[serde(default)]
    pub provisioners: Vec<Provisioner>,
    /// Clean-up policy applied before capture.
    #[serde(default)]
    pub clean: CleanPolicy,
    /// Where the captured image is copied and who it is shared with.
    #[serde(default)]
    pub publish: Publish,
    /// Commands run against the captured image (the Test step: a captured
    /// disk is booted, a filesystem output mounted read-only); each must
    /// exit 0.
    #[serde(default)]
    pub test: Vec<String>,
    /// EventBridge schedule expression (`cron(...)`, `rate(...)`) or a standard
    /// 5-field cron line; see [`super::schedule::Schedule`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Repository path globs whose change triggers a rebuild on push.
    #[serde(default)]
    pub paths: Vec<String>,
    /// How long registered versions and their images are kept
    /// (`bakehouse image prune`, the lifecycle function).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain: Option<Retention>,
    /// Values shown as `<sensitive>` in build output, the build log, notes,
    /// failure causes and `builds show` (a Packer template's
    /// `sensitive-variables` fill it). The build still carries them to the
    /// provisioners that use them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sensitive: Vec<String>,
}

/// A retention policy: which versions of a package keep their images. The
/// newest version, a version that is the parent of an active version, and
/// one a running build starts from are never deleted; the newest is never
/// deprecated either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Keep the images of the newest N active versions; older active
    /// versions are deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub versions: Option<u32>,
    /// Deprecate active versions registered more than D days ago
    /// (resolution skips them; in AWS their AMIs get a deprecation time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecate_after_days: Option<u32>,
    /// Delete versions (any status) registered more than E days ago.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_after_days: Option<u32>,
    /// Delete revoked versions' images once they were registered more than
    /// this many days ago (default 7; the registry does not record when a
    /// version was revoked, so the grace counts from its registration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_grace_days: Option<u32>,
}

impl Recipe {
    /// The label, or the name when no label is set.
    pub fn label(&self) -> &str {
        self.label.as_deref().unwrap_or(&self.name)
    }

    /// The schedule in EventBridge form (`cron(6 fields)` or `rate(N unit)`),
    /// `None` when there is no schedule or it does not parse (a validated
    /// recipe always parses).
    pub fn eventbridge_schedule(&self) -> Option<String> {
        let text = self.schedule.as_deref()?;
        super::schedule::Schedule::parse(text)
            .ok()
            .map(|s| s.expression().to_string())
    }
}

/// Operating system family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OsKind {
    /// Linux (the default).
    #[default]
    Linux,
    /// Windows.
    Windows,
}

impl OsKind {
    /// `linux` or `windows`, as in the registry's `OS` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            OsKind::Linux => "linux",
            OsKind::Windows => "windows",
        }
    }
}

/// Which part of the version to increment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BumpPart {
    /// First part (`1.4` -> `2.0`).
    Major,
    /// Second part (`1.4` -> `1.5`).
    Minor,
    /// Third part (`1.4` -> `1.4.1`).
    Patch,
}

/// How the version of a new build is chosen. YAML: `{bump: minor}` or
/// `{version: "2.0"}`; the default is `{bump: minor}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "RawVersion", into = "RawVersion")]
pub enum VersionPolicy {
    /// Increment the latest registered version.
    Bump(BumpPart),
    /// Register exactly this dotted-number version (syntax checked at load;
    /// the registry owns the `Version` type).
    Exact(String),
}

impl Default for VersionPolicy {
    fn default() -> Self {
        VersionPolicy::Bump(BumpPart::Minor)
    }
}

/// The image a build starts from: exactly one kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "RawBase", into = "RawBase")]
pub enum Base {
    /// An image id (`ami-...`).
    Image(String),
    /// An EC2 image filter.
    Filter(BaseFilter),
    /// A registry reference `name[@version]`, version a literal or a wildcard
    /// (`1.x`); see [`super::checks::RegistryRef`].
    Registry(String),
    /// Local builds: a rootfs directory, tarball, raw or qcow2 image, relative
    /// to the recipe file.
    Path(String),
}

/// An EC2 `DescribeImages` filter choosing the base image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BaseFilter {
    /// Image name pattern (`*` wildcards), the `name` filter.
    pub name: String,
    /// Owner account ids or aliases (`amazon`, `self`, `aws-marketplace`).
    #[serde(default)]
    pub owners: Vec<String>,
    /// Pick the newest match; when false, several matches are an error.
    #[serde(default)]
    pub most_recent: bool,
    /// Further EC2 filters (`architecture: x86_64`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub filters: BTreeMap<String, String>,
}

/// Builder instance settings (AWS) and local build settings; all optional.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BuilderSettings {
    /// EC2 instance type, e.g. `t3.small`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// Subnet to launch the builder in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
    /// Security groups of the builder.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_group_ids: Vec<String>,
    /// Root volume size in GiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub volume_size_gb: Option<u32>,
    /// KMS key for the root volume and image snapshots (encrypts when set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    /// Instance profile of the builder (needs SSM permissions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_profile: Option<String>,
    /// Upper bound for the whole build, in minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_limit_minutes: Option<u32>,
    /// Local builds: give provisioners network access (default false).
    #[serde(default)]
    pub network: bool,
    /// Local builds: memory limit of the sandbox in MiB (default 4096).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u32>,
    /// Local builds: most processes and threads in the sandbox at once
    /// (default 4096).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_max: Option<u32>,
    /// Local builds: CPU time the sandbox may use, in whole cores (default:
    /// no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// Local builds: make the output a bootable whole disk (partition
    /// table, ext4 root, GRUB from the image's own `grub-pc-bin`) when the
    /// base is a tarball, a directory or a bare filesystem. Whole-disk bases
    /// always give whole disks of their own layout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskSettings>,
    /// Local builds on a whole-disk base: grow the disk to this many MiB
    /// (as Packer's qemu `disk_size`). The last partition takes the new
    /// space; it must hold an ext filesystem the image mounts (the root of
    /// cloud images), which capture makes at the new size. Partition and
    /// filesystem UUIDs and labels stay. A disk never shrinks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_size: Option<u32>,
    /// Extra tags on the builder instance and its volumes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

/// The bootable whole disk a local build makes from a tree
/// (`builder.disk`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiskSettings {
    /// Partition table: `gpt` (BIOS-boot, EFI system and root partitions)
    /// or `mbr` (one bootable root partition).
    pub table: DiskTable,
    /// Size of the disk in MiB (default: the tree plus a quarter, at least
    /// 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_mb: Option<u32>,
}

/// A partition table kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DiskTable {
    /// GUID partition table.
    Gpt,
    /// DOS/MBR partition table.
    Mbr,
}

/// One provisioning step, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Provisioner {
    /// Run shell commands or a script.
    Shell(ShellProvisioner),
    /// Run PowerShell commands or a script (Windows images; on EC2 through
    /// `AWS-RunPowerShellScript`). Same fields as `shell`.
    Powershell(ShellProvisioner),
    /// Upload a file or directory.
    File(FileProvisioner),
    /// Apply a Salt state tree masterless (`salt-call --local`).
    Salt(SaltProvisioner),
    /// Apply an Ansible playbook locally (`ansible-playbook -c local`).
    Ansible(AnsibleProvisioner),
}

impl Provisioner {
    /// `shell`, `powershell`, `file`, `salt` or `ansible`.
    pub fn kind(&self) -> &'static str {
        match self {
            Provisioner::Shell(_) => "shell",
            Provisioner::Powershell(_) => "powershell",
            Provisioner::File(_) => "file",
            Provisioner::Salt(_) => "salt",
            Provisioner::Ansible(_) => "ansible",
        }
    }

    /// The files and directories the provisioner reads, as written
    /// (relative to the recipe's directory): a script, a file source, a
    /// state tree and pillar tree, a playbook's directory.
    pub fn inputs(&self) -> Vec<String> {
        match self {
            Provisioner::Shell(s) | Provisioner::Powershell(s) => match &s.source {
                ShellSource::Script(path) => vec![path.clone()],
                ShellSource::Inline(_) => Vec::new(),
            },
            Provisioner::File(f) => vec![f.source.clone()],
            Provisioner::Salt(s) => std::iter::once(s.state_tree.clone())
                .chain(s.pillar_root.clone())
                .collect(),
            Provisioner::Ansible(a) => std::iter::once(a.playbook_dir())
                .chain(a.requirements.clone())
                .collect(),
        }
    }
}

/// A shell provisioner: `inline` commands xor a `script` file, plus `env`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "RawShell", into = "RawShell")]
pub struct ShellProvisioner {
    /// What to run.
    pub source: ShellSource,
    /// Environment variables for the commands.
    pub env: BTreeMap<String, String>,
}

/// What a shell provisioner runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShellSource {
    /// Commands run one after the other with `set -e` semantics.
    Inline(Vec<String>),
    /// A script file, relative to the recipe's directory.
    Script(String),
}

/// Upload a file (or a directory, recursively) into the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileProvisioner {
    /// Source path, relative to the recipe's directory.
    pub source: String,
    /// Absolute destination path in the image.
    pub destination: String,
    /// Octal file mode such as `"0644"`; default keeps the source mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// Apply a Salt state tree masterless.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SaltProvisioner {
    /// State tree directory, relative to the recipe's directory.
    pub state_tree: String,
    /// States to apply; empty applies the highstate (`top.sls`).
    #[serde(default)]
    pub states: Vec<String>,
    /// Pillar data passed on the command line.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pillar: BTreeMap<String, serde_json::Value>,
    /// Pillar tree directory (with its `top.sls`), relative to the
    /// recipe's directory: uploaded and passed as `--pillar-root`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pillar_root: Option<String>,
    /// Install Salt from PyPI into a virtualenv before the run (Debian
    /// does not package it); needs network (`builder.network: true` in a
    /// local build). Removed afterwards, with any package installed for
    /// it, unless `keep_salt`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub bootstrap: bool,
    /// Keep a bootstrapped Salt in the image (`/opt/bakehouse-salt`,
    /// `salt-call` in `/usr/local/bin`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub keep_salt: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Apply an Ansible playbook against the image itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnsibleProvisioner {
    /// Playbook file, relative to the recipe's directory; its directory
    /// (roles, vars) is uploaded with it.
    pub playbook: String,
    /// `--extra-vars`, passed as JSON.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_vars: BTreeMap<String, serde_json::Value>,
    /// A roles requirements file (`requirements.yml`), relative to the
    /// recipe's directory: its roles are installed with `ansible-galaxy`
    /// into the uploaded playbook directory's `roles/` before the run, and
    /// go with it afterwards (needs network: `builder.network: true` in a
    /// local build).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirements: Option<String>,
}

impl AnsibleProvisioner {
    /// The playbook's directory as written (`.` for a bare file name):
    /// what is uploaded and made the working directory.
    pub fn playbook_dir(&self) -> String {
        std::path::Path::new(&self.playbook)
            .parent()
            .map(|d| d.to_string_lossy().into_owned())
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| ".".to_string())
    }
}

/// The clean-up policy: the default hardening list minus `skip`, plus
/// `extra_paths` removed as installer leftovers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CleanPolicy {
    /// Items of the default list not to apply.
    #[serde(default)]
    pub skip: Vec<CleanItem>,
    /// Absolute paths (globs allowed in the last components) to remove.
    #[serde(default)]
    pub extra_paths: Vec<String>,
    /// What the `passwords` item does to password hashes.
    #[serde(default, skip_serializing_if = "PasswordMode::is_default")]
    pub passwords: PasswordMode,
}

/// What the clean policy does to the password hashes in `/etc/shadow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PasswordMode {
    /// Replace every hash with `!` (no password, login by password
    /// impossible): the image carries no hash to crack.
    #[default]
    Remove,
    /// Prefix hashes with `!` (the account is locked, the hash stays).
    Lock,
}

impl PasswordMode {
    /// Whether this is the default (not written out, so bake keys of
    /// recipes that do not set it do not change).
    pub fn is_default(&self) -> bool {
        *self == PasswordMode::Remove
    }
}

impl CleanPolicy {
    /// The items applied, in execution order (`authorized_keys` last).
    pub fn items(&self) -> Vec<CleanItem> {
        CleanItem::ALL
            .iter()
            .copied()
            .filter(|item| !self.skip.contains(item))
            .collect()
    }

    /// Whether `item` is applied.
    pub fn applies(&self, item: CleanItem) -> bool {
        !self.skip.contains(&item)
    }
}

/// Where the image goes after capture.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Publish {
    /// AWS regions to copy the image to.
    #[serde(default)]
    pub regions: Vec<String>,
    /// 12-digit AWS account ids to share the image with.
    #[serde(default)]
    pub accounts: Vec<String>,
    /// Tags on the image and its snapshots.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}
