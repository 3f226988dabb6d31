//! The clean-up checklist applied before an image is captured (after the
//! CycleCloud custom-image guide), and the script that applies it.
//!
//! [`clean_script`] renders one POSIX `sh` script (dash and busybox sh) for
//! Linux. It works on the running system, or, with `ROOT=/some/tree`, on a
//! root filesystem tree: every path is prefixed with `$ROOT`. `ROOT=` mode
//! is for trusted trees only (the unit tests): a link anywhere in an
//! untrusted tree would redirect removals and edits onto the host, and the
//! script checks only a home's last component. bakehouse itself never uses
//! it: locally the script runs inside the build's sandbox, whose `/` is the
//! image (links resolve inside it), and on EC2 on the builder itself. For Windows it renders a
//! PowerShell script covering the items that apply there (see
//! [`super::clean_windows`]). [`super::clean_verify::verify_tree`] checks a
//! tree for anything the policy should have removed.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::model::{CleanPolicy, OsKind, PasswordMode};

/// One item of the clean-up checklist.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CleanItem {
    /// Remove every password hash from `/etc/shadow` (or only lock them,
    /// with `clean.passwords: lock`), and the backups `/etc/shadow-`,
    /// `/etc/gshadow-`, `/etc/passwd-`, `/etc/group-`.
    #[serde(alias = "lock_passwords")]
    Passwords,
    /// Remove shell and REPL histories of every user (see
    /// [`HISTORY_FILES`]).
    ShellHistory,
    /// Remove users' SSH keys (`~/.ssh/id_*`, private and public) and
    /// `known_hosts`.
    UserSshKeys,
    /// Remove users' credentials of common tools (see [`CREDENTIAL_PATHS`]).
    Credentials,
    /// Remove `/etc/ssh/ssh_host_*` (regenerated at first boot).
    SshHostKeys,
    /// Empty `/etc/machine-id`, remove `/var/lib/dbus/machine-id`.
    MachineId,
    /// Remove the saved random seed (see [`RANDOM_SEEDS`]).
    RandomSeed,
    /// Truncate files under `/var/log`, remove rotated files and journal
    /// directories.
    Logs,
    /// Remove cloud-init instance state, logs and its sudoers drop.
    CloudInit,
    /// Remove DHCP leases of dhclient, NetworkManager and systemd-networkd.
    DhcpLeases,
    /// Remove Salt and Ansible leftovers (minion id and keys, caches).
    ConfigManagement,
    /// Empty `/tmp` and `/var/tmp`.
    TempFiles,
    /// Remove the recipe's `extra_paths` and package-manager and installer
    /// leftovers (see [`INSTALLER_GLOBS`]).
    Installers,
    /// Remove ephemeral-disk lines from `/etc/fstab`.
    EphemeralFstab,
    /// Remove `authorized_keys` of root and every user; always last.
    AuthorizedKeys,
}

impl CleanItem {
    /// Every item in execution order; `AuthorizedKeys` is last.
    pub const ALL: [CleanItem; 15] = [
        CleanItem::Passwords,
        CleanItem::ShellHistory,
        CleanItem::UserSshKeys,
        CleanItem::Credentials,
        CleanItem::SshHostKeys,
        CleanItem::MachineId,
        CleanItem::RandomSeed,
        CleanItem::Logs,
        CleanItem::CloudInit,
        CleanItem::DhcpLeases,
        CleanItem::ConfigManagement,
        CleanItem::TempFiles,
        CleanItem::Installers,
        CleanItem::EphemeralFstab,
        CleanItem::AuthorizedKeys,
    ];

    /// The snake_case name used in `clean.skip`.
    pub fn name(self) -> &'static str {
        match self {
            CleanItem::Passwords => "passwords",
            CleanItem::ShellHistory => "shell_history",
            CleanItem::UserSshKeys => "user_ssh_keys",
            CleanItem::Credentials => "credentials",
            CleanItem::SshHostKeys => "ssh_host_keys",
            CleanItem::MachineId => "machine_id",
            CleanItem::RandomSeed => "random_seed",
            CleanItem::Logs => "logs",
            CleanItem::CloudInit => "cloud_init",
            CleanItem::DhcpLeases => "dhcp_leases",
            CleanItem::ConfigManagement => "config_management",
            CleanItem::TempFiles => "temp_files",
            CleanItem::Installers => "installers",
            CleanItem::EphemeralFstab => "ephemeral_fstab",
            CleanItem::AuthorizedKeys => "authorized_keys",
        }
    }

    /// What the item removes below every home directory (globs allowed in
    /// the last component), empty for system-wide items.
    pub fn home_paths(self) -> &'static [&'static str] {
        match self {
            CleanItem::ShellHistory => &HISTORY_FILES,
            CleanItem::UserSshKeys => &USER_SSH_FILES,
            CleanItem::Credentials => &CREDENTIAL_PATHS,
            CleanItem::ConfigManagement => &[".ansible"],
            CleanItem::AuthorizedKeys => &AUTHORIZED_KEYS_FILES,
            _ => &[],
        }
    }

    /// What the item removes system-wide (relative to the root, globs
    /// allowed), besides what its own check covers (shadow, logs, fstab,
    /// machine id, temp directories).
    pub fn system_paths(self) -> &'static [&'static str] {
        match self {
            CleanItem::Passwords => &SHADOW_BACKUPS,
            CleanItem::SshHostKeys => &["etc/ssh/ssh_host_*"],
            CleanItem::MachineId => &["var/lib/dbus/machine-id"],
            CleanItem::RandomSeed => &RANDOM_SEEDS,
            CleanItem::CloudInit => &CLOUD_INIT_PATHS,
            CleanItem::DhcpLeases => &DHCP_LEASES,
            CleanItem::ConfigManagement => &CONFIG_MANAGEMENT_PATHS,
            CleanItem::Installers => &INSTALLER_GLOBS,
            _ => &[],
        }
    }
}

impl std::fmt::Display for CleanItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Shell and REPL history files removed from every home directory.
pub const HISTORY_FILES: [&str; 14] = [
    ".bash_history",
    ".zsh_history",
    ".ash_history",
    ".sh_history",
    ".history",
    ".local/share/fish/fish_history",
    ".python_history",
    ".lesshst",
    ".viminfo",
    ".mysql_history",
    ".psql_history",
    ".sqlite_history",
    ".node_repl_history",
    ".rediscli_history",
];

/// Users' SSH keys and known hosts, relative to each home.
pub const USER_SSH_FILES: [&str; 3] = [".ssh/id_*", ".ssh/known_hosts", ".ssh/known_hosts.old"];

/// Credentials of common tools, relative to each home.
pub const CREDENTIAL_PATHS: [&str; 9] = [
    ".aws",
    ".config/gcloud",
    ".azure",
    ".docker/config.json",
    ".kube/config",
    ".netrc",
    ".git-credentials",
    ".pypirc",
    ".npmrc",
];

/// Backups of the account files (they keep the old hashes).
pub const SHADOW_BACKUPS: [&str; 4] = ["etc/shadow-", "etc/gshadow-", "etc/passwd-", "etc/group-"];

/// Saved random seeds.
pub const RANDOM_SEEDS: [&str; 2] = ["var/lib/systemd/random-seed", "var/lib/urandom/random-seed"];

/// cloud-init state, logs and its sudoers drop, relative to the root.
pub const CLOUD_INIT_PATHS: [&str; 7] = [
    "var/lib/cloud/instances",
    "var/lib/cloud/instance",
    "var/lib/cloud/data",
    "var/lib/cloud/sem",
    "var/log/cloud-init.log",
    "var/log/cloud-init-output.log",
    "etc/sudoers.d/90-cloud-init-users",
];

/// DHCP leases of dhclient, NetworkManager and systemd-networkd.
pub const DHCP_LEASES: [&str; 4] = [
    "var/lib/dhcp/*",
    "var/lib/dhclient/*",
    "var/lib/NetworkManager/*lease*",
    "var/lib/systemd/network/*lease*",
];

/// Salt and Ansible leftovers (the minion's id and keys, cached states).
pub const CONFIG_MANAGEMENT_PATHS: [&str; 4] = [
    "etc/salt/minion_id",
    "etc/salt/pki/minion",
    "var/cache/salt",
    "var/lib/ansible",
];

/// Installer leftovers removed with `extra_paths` (globs, relative to root):
/// package caches and the CycleCloud `jetpack*` / `*.run` installers.
pub const INSTALLER_GLOBS: [&str; 9] = [
    "var/cache/apt/archives/*.deb",
    "var/cache/apt/archives/partial/*",
    "var/cache/yum/*",
    "var/cache/dnf/*",
    "var/cache/apk/*",
    "tmp/jetpack*",
    "root/jetpack*",
    "root/*.run",
    "opt/cycle/jetpack/installer*",
];

/// `authorized_keys` file names removed from every `.ssh` directory.
pub const AUTHORIZED_KEYS_FILES: [&str; 2] = [".ssh/authorized_keys", ".ssh/authorized_keys2"];

/// Temporary directories emptied (relative to root).
pub const TEMP_DIRS: [&str; 2] = ["tmp", "var/tmp"];

/// `/etc/fstab` mount points of ephemeral (instance-store) disks.
pub const EPHEMERAL_MOUNTS: [&str; 4] = ["/mnt", "/mnt/", "/mnt/resource", "/mnt/resource/"];

/// Markers of cloud-init generated or ephemeral fstab lines.
pub const EPHEMERAL_MARKERS: [&str; 4] = [
    "ephemeral0",
    "x-systemd.makefs",
    "comment=cloudconfig",
    "x-systemd.requires=cloud-init",
];

/// Whether an fstab line mounts an ephemeral disk (the awk filter in the
/// script uses the same rule).
pub fn is_ephemeral_fstab_line(line: &str) -> bool {
    let fields: Vec<&str> = line.split_whitespace().collect();
    match fields.first() {
        None => false,
        Some(first) if first.starts_with('#') => false,
        Some(_) => {
            let mount = fields.get(1).copied().unwrap_or_default();
            let nofail_under_mnt = (mount == "/mnt" || mount.starts_with("/mnt/"))
                && fields
                    .get(3)
                    .is_some_and(|o| o.split(',').any(|x| x == "nofail"));
            EPHEMERAL_MOUNTS.contains(&mount)
                || nofail_under_mnt
                || EPHEMERAL_MARKERS.iter().any(|m| line.contains(m))
        }
    }
}

/// Renders the script applying `policy`: POSIX sh for Linux, PowerShell for
/// Windows. `authorized_keys` removal always comes last.
pub fn clean_script(policy: &CleanPolicy, os: OsKind) -> String {
    match os {
        OsKind::Linux => linux_script(policy),
        OsKind::Windows => super::clean_windows::powershell_script(policy),
    }
}

const PRELUDE: &str = r#"set -eu
ROOT=${ROOT:-}
ROOT=${ROOT%/}
if [ -n "$ROOT" ] && [ ! -d "$ROOT" ]; then
  echo "bakehouse-clean: ROOT=$ROOT is not a directory" >&2
  exit 1
fi
say() { echo "bakehouse-clean: $*" >&2; }
remove() {
  for p in "$@"; do
    if [ -e "$p" ] || [ -L "$p" ]; then rm -rf -- "$p"; say "removed ${p#"$ROOT"}"; fi
  done
}
# Every home directory: /root, /home/*, and each home in /etc/passwd. On the
# running system (and in bakehouse's sandbox, whose / is the image) links
# resolve inside the image; with ROOT set, only real directories are used.
homes() {
  {
    echo /root
    for h in "$ROOT"/home/*; do echo "${h#"$ROOT"}"; done
    if [ -f "$ROOT/etc/passwd" ]; then cut -d: -f6 "$ROOT/etc/passwd"; fi
  } | sort -u | while IFS= read -r h; do
    case "$h" in /*) ;; *) continue ;; esac
    if [ -n "$ROOT" ]; then
      case "$h" in */..|*/../*) continue ;; esac
      [ ! -L "$ROOT$h" ] || continue
    fi
    if [ -d "$ROOT$h" ]; then printf '%s\n' "$ROOT$h"; fi
  done
}
filter_file() {
  f=$1
  shift
  (umask 077 && "$@" < "$f" > "$f.bakehouse-new")
  cat "$f.bakehouse-new" > "$f"
  rm -f -- "$f.bakehouse-new"
}
"#;

fn linux_script(policy: &CleanPolicy) -> String {
    let items = policy.items();
    let names: Vec<&str> = items.iter().map(|i| i.name()).collect();
    let mut out = String::from("#!/bin/sh\n");
    out.push_str("# bakehouse clean script (generated, do not edit).\n");
    out.push_str(&format!("# Items: {}\n", names.join(", ")));
    out.push_str("# ROOT=/path/to/tree applies it to a tree instead of the running system.\n");
    out.push_str(PRELUDE);
    for item in items {
        out.push_str(&format!("\nsay {}\n", item.name()));
        out.push_str(&linux_item(item, policy));
    }
    out.push_str("\nsync\nsay done\n");
    out
}

/// Items whose leftovers a booted image cannot have made again itself: a
/// booted system writes logs, a machine id, a random seed, DHCP leases, SSH
/// host keys, temporary files, cloud-init state and fstab lines at boot.
pub const BOOT_STABLE: [CleanItem; 7] = [
    CleanItem::Passwords,
    CleanItem::ShellHistory,
    CleanItem::UserSshKeys,
    CleanItem::Credentials,
    CleanItem::ConfigManagement,
    CleanItem::Installers,
    CleanItem::AuthorizedKeys,
];

/// A POSIX `sh` script checking a booted image (EC2's test instance, or a
/// tree with `ROOT=`) for leftovers of the policy's [`BOOT_STABLE`] items:
/// prints `leftover: <path> (<item>)` for each and exits 1 if there is any.
pub fn check_script(policy: &CleanPolicy) -> String {
    let mut out = String::from("#!/bin/sh\n# bakehouse clean check (generated, do not edit).\n");
    out.push_str(PRELUDE);
    out.push_str("found=$(mktemp)\nleft() { for p in \"$@\"; do if [ -e \"$p\" ] || [ -L \"$p\" ]; then echo \"leftover: ${p#\"$ROOT\"} ($item)\" >> \"$found\"; fi; done; }\n");
    for item in policy
        .items()
        .into_iter()
        .filter(|i| BOOT_STABLE.contains(i))
    {
        out.push_str(&format!("item={}\n", item.name()));
        if item == CleanItem::Passwords && policy.passwords == PasswordMode::Remove {
            out.push_str("if [ -f \"$ROOT/etc/shadow\" ]; then awk -F: 'NF > 1 && ($2 == \"\" || $2 !~ /^[!*]+$/) {print \"leftover: /etc/shadow (passwords): account \" $1 \" has a password hash\"}' \"$ROOT/etc/shadow\" >> \"$found\"; fi\n");
        } else if item == CleanItem::Passwords {
            out.push_str("if [ -f \"$ROOT/etc/shadow\" ]; then awk -F: 'NF > 1 && $2 !~ /^[!*]/ {print \"leftover: /etc/shadow (passwords): account \" $1 \" is not locked\"}' \"$ROOT/etc/shadow\" >> \"$found\"; fi\n");
        }
        let system = item.system_paths();
        if !system.is_empty() {
            out.push_str(&format!("left{}\n", rooted_list(system)));
        }
        if item == CleanItem::Installers {
            for path in &policy.extra_paths {
                out.push_str(&format!("left \"$ROOT\"{}\n", sh_glob_quote(path)));
            }
        }
        let home = item.home_paths();
        if !home.is_empty() {
            out.push_str(&format!(
                "homes > \"$found.homes\"\nwhile IFS= read -r home; do\n  left{}\ndone < \"$found.homes\"\n",
                home.iter()
                    .map(|p| format!(" \"$home\"/{}", sh_glob_quote(p)))
                    .collect::<String>()
            ));
        }
    }
    out.push_str("rm -f -- \"$found.homes\"\ncat \"$found\"\nif [ -s \"$found\" ]; then rm -f -- \"$found\"; exit 1; fi\nrm -f -- \"$found\"\necho 'bakehouse-clean-check: nothing left'\n");
    out
}

fn linux_item(item: CleanItem, policy: &CleanPolicy) -> String {
    let mut out = match item {
        CleanItem::Passwords => {
            let edit = match policy.passwords {
                PasswordMode::Remove => {
                    r"sed -e 's/^\([^:]*\):[!*]*[^!*:][^:]*:/\1:!:/' -e 's/^\([^:]*\)::/\1:!:/'"
                }
                PasswordMode::Lock => {
                    r"sed -e 's/^\([^:]*\)::/\1:!:/' -e 's/^\([^:]*\):\([^!*:][^:]*\):/\1:!\2:/'"
                }
            };
            format!("if [ -f \"$ROOT/etc/shadow\" ]; then\n  filter_file \"$ROOT/etc/shadow\" {edit}\nfi\n")
        }
        CleanItem::MachineId => r#"if [ -L "$ROOT/etc/machine-id" ]; then
  rm -f -- "$ROOT/etc/machine-id"
  : > "$ROOT/etc/machine-id"
elif [ -e "$ROOT/etc/machine-id" ]; then
  : > "$ROOT/etc/machine-id"
fi
"#
        .to_string(),
        CleanItem::Logs => r#"# A linked /var/log is followed on the running system (inside the image).
logs="$ROOT/var/log"
if [ -n "$ROOT" ] && [ -L "$logs" ]; then logs=""; fi
if [ -n "$logs" ] && [ -d "$logs" ]; then
  find "$logs/" -type f | while IFS= read -r f; do
    case "$f" in
      */journal/*|*.gz|*.xz|*.bz2|*.zst|*.old|*.[0-9]) rm -f -- "$f" ;;
      *) : > "$f" ;;
    esac
  done
  remove "$logs"/journal/*
fi
"#
        .to_string(),
        CleanItem::TempFiles => format!(
            "for d in{}; do\n  if [ -n \"$ROOT\" ] && [ -L \"$d\" ]; then continue; fi\n  [ -d \"$d\" ] || continue\n  remove \"$d\"/* \"$d\"/.[!.]* \"$d\"/..?*\ndone\n",
            rooted_list(&TEMP_DIRS)
        ),
        CleanItem::EphemeralFstab => format!(
            "if [ -f \"$ROOT/etc/fstab\" ]; then\n  filter_file \"$ROOT/etc/fstab\" awk '$1 ~ /^#/ {{print; next}} {} {{next}} ($2 ~ /^\\/mnt(\\/|$)/ && (\",\" $4 \",\") ~ /,nofail,/) {{next}} /{}/ {{next}} {{print}}'\nfi\n",
            EPHEMERAL_MOUNTS
                .iter()
                .map(|m| format!("$2 == \"{m}\""))
                .collect::<Vec<_>>()
                .join(" || "),
            EPHEMERAL_MARKERS
                .iter()
                .map(|m| m.replace('.', "\\."))
                .collect::<Vec<_>>()
                .join("|")
        ),
        _ => String::new(),
    };
    let system = item.system_paths();
    if !system.is_empty() {
        out.push_str(&format!("remove{}\n", rooted_list(system)));
    }
    if item == CleanItem::Installers {
        for path in &policy.extra_paths {
            out.push_str(&format!("remove \"$ROOT\"{}\n", sh_glob_quote(path)));
        }
    }
    let home = item.home_paths();
    if !home.is_empty() {
        out.push_str(&format!(
            "homes | while IFS= read -r home; do\n  remove{}\ndone\n",
            home.iter()
                .map(|p| format!(" \"$home\"/{}", sh_glob_quote(p)))
                .collect::<String>()
        ));
    }
    out
}

/// ` "$ROOT"/a "$ROOT"/b/*` for constant paths (no quoting needed).
fn rooted_list(paths: &[&str]) -> String {
    paths.iter().map(|p| format!(" \"$ROOT\"/{p}")).collect()
}

/// Quotes `path` for sh, leaving glob characters (`*`, `?`, `[`, `]`) active.
pub(crate) fn sh_glob_quote(path: &str) -> String {
    let mut out = String::new();
    let mut quoted = false;
    for c in path.chars() {
        let glob = matches!(c, '*' | '?' | '[' | ']');
        if glob && quoted {
            out.push('\'');
            quoted = false;
        } else if !glob && !quoted {
            out.push('\'');
            quoted = true;
        }
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    if quoted {
        out.push('\'');
    }
    out
}
