//! The clean-up checklist applied before an image is captured (after the
//! CycleCloud custom-image guide), and the script that applies it.
//!
//! [`clean_script`] renders one POSIX `sh` script (dash and busybox sh) for
//! Linux. It works on the running system, or, with `ROOT=/some/tree`, on a
//! root filesystem tree: every path is prefixed with `$ROOT`, and passwords
//! are then locked by editing `$ROOT/etc/shadow` (prefixing hashes with `!`)
//! rather than with `passwd -l`. Symlinked home directories are skipped so a
//! tree cannot redirect removals onto the host. For Windows it renders a
//! PowerShell script covering the items that apply there (see
//! [`super::clean_windows`]). [`super::clean_verify::verify_tree`] checks a
//! tree for anything the policy should have removed.

use serde::{Deserialize, Serialize};

use super::model::{CleanPolicy, OsKind};

/// One item of the clean-up checklist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CleanItem {
    /// Lock every account that has a password (or an empty one).
    LockPasswords,
    /// Remove shell histories of root and every `/home/*` user.
    ShellHistory,
    /// Remove `/etc/ssh/ssh_host_*` (regenerated at first boot).
    SshHostKeys,
    /// Empty `/etc/machine-id`, remove `/var/lib/dbus/machine-id`.
    MachineId,
    /// Truncate files under `/var/log`, remove rotated and journal files.
    Logs,
    /// Remove cloud-init instance state and logs.
    CloudInit,
    /// Empty `/tmp` and `/var/tmp`.
    TempFiles,
    /// Remove the recipe's `extra_paths` and package-manager leftovers.
    Installers,
    /// Remove ephemeral-disk lines from `/etc/fstab`.
    EphemeralFstab,
    /// Remove `authorized_keys` of root and every user; always last.
    AuthorizedKeys,
}

impl CleanItem {
    /// Every item in execution order; `AuthorizedKeys` is last.
    pub const ALL: [CleanItem; 10] = [
        CleanItem::LockPasswords,
        CleanItem::ShellHistory,
        CleanItem::SshHostKeys,
        CleanItem::MachineId,
        CleanItem::Logs,
        CleanItem::CloudInit,
        CleanItem::TempFiles,
        CleanItem::Installers,
        CleanItem::EphemeralFstab,
        CleanItem::AuthorizedKeys,
    ];

    /// The snake_case name used in `clean.skip`.
    pub fn name(self) -> &'static str {
        match self {
            CleanItem::LockPasswords => "lock_passwords",
            CleanItem::ShellHistory => "shell_history",
            CleanItem::SshHostKeys => "ssh_host_keys",
            CleanItem::MachineId => "machine_id",
            CleanItem::Logs => "logs",
            CleanItem::CloudInit => "cloud_init",
            CleanItem::TempFiles => "temp_files",
            CleanItem::Installers => "installers",
            CleanItem::EphemeralFstab => "ephemeral_fstab",
            CleanItem::AuthorizedKeys => "authorized_keys",
        }
    }
}

impl std::fmt::Display for CleanItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Shell history file names removed from every home directory.
pub const HISTORY_FILES: [&str; 5] = [
    ".bash_history",
    ".zsh_history",
    ".ash_history",
    ".sh_history",
    ".history",
];

/// cloud-init state and logs, relative to the root.
pub const CLOUD_INIT_PATHS: [&str; 6] = [
    "var/lib/cloud/instances",
    "var/lib/cloud/instance",
    "var/lib/cloud/data",
    "var/lib/cloud/sem",
    "var/log/cloud-init.log",
    "var/log/cloud-init-output.log",
];

/// Installer leftovers removed with `extra_paths` (globs, relative to root).
pub const INSTALLER_GLOBS: [&str; 6] = [
    "var/cache/apt/archives/*.deb",
    "var/cache/apt/archives/partial/*",
    "var/cache/yum/*",
    "var/cache/dnf/*",
    "var/cache/apk/*",
    "tmp/jetpack*",
];

/// `authorized_keys` file names removed from every `.ssh` directory.
pub const AUTHORIZED_KEYS_FILES: [&str; 2] = ["authorized_keys", "authorized_keys2"];

/// Temporary directories emptied (relative to root).
pub const TEMP_DIRS: [&str; 2] = ["tmp", "var/tmp"];

/// `/etc/fstab` mount points of ephemeral (instance-store) disks.
pub const EPHEMERAL_MOUNTS: [&str; 4] = ["/mnt", "/mnt/", "/mnt/resource", "/mnt/resource/"];

/// Markers of cloud-init generated or ephemeral fstab lines.
pub const EPHEMERAL_MARKERS: [&str; 3] = ["ephemeral0", "x-systemd.makefs", "comment=cloudconfig"];

/// Whether an fstab line mounts an ephemeral disk (the awk filter in the
/// script uses the same rule).
pub fn is_ephemeral_fstab_line(line: &str) -> bool {
    let fields: Vec<&str> = line.split_whitespace().collect();
    match fields.first() {
        None => false,
        Some(first) if first.starts_with('#') => false,
        Some(_) => {
            fields.get(1).is_some_and(|m| EPHEMERAL_MOUNTS.contains(m))
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
    if [ -e "$p" ] || [ -L "$p" ]; then rm -rf -- "$p"; fi
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

fn linux_item(item: CleanItem, policy: &CleanPolicy) -> String {
    match item {
        CleanItem::LockPasswords => r#"if [ -f "$ROOT/etc/shadow" ]; then
  if [ -z "$ROOT" ] && command -v passwd >/dev/null 2>&1; then
    for user in $(awk -F: '$2 !~ /^[!*]/ {print $1}' /etc/shadow); do
      passwd -l "$user" >/dev/null 2>&1 || true
    done
  fi
  filter_file "$ROOT/etc/shadow" sed -e 's/^\([^:]*\)::/\1:!:/' -e 's/^\([^:]*\):\([^!*:][^:]*\):/\1:!\2:/'
fi
"#
        .to_string(),
        CleanItem::ShellHistory => format!(
            "for home in \"$ROOT/root\" \"$ROOT\"/home/*; do\n  [ -d \"$home\" ] && [ ! -L \"$home\" ] || continue\n  remove{}\ndone\n",
            HISTORY_FILES
                .iter()
                .map(|f| format!(" \"$home/{f}\""))
                .collect::<String>()
        ),
        CleanItem::SshHostKeys => "remove \"$ROOT\"/etc/ssh/ssh_host_*\n".to_string(),
        CleanItem::MachineId => r#"if [ -L "$ROOT/etc/machine-id" ]; then
  rm -f -- "$ROOT/etc/machine-id"
  : > "$ROOT/etc/machine-id"
elif [ -e "$ROOT/etc/machine-id" ]; then
  : > "$ROOT/etc/machine-id"
fi
remove "$ROOT/var/lib/dbus/machine-id"
"#
        .to_string(),
        CleanItem::Logs => r#"if [ -d "$ROOT/var/log" ] && [ ! -L "$ROOT/var/log" ]; then
  find "$ROOT/var/log" -type f | while IFS= read -r f; do
    case "$f" in
      */journal/*|*.gz|*.xz|*.bz2|*.zst|*.old|*.[0-9]) rm -f -- "$f" ;;
      *) : > "$f" ;;
    esac
  done
fi
"#
        .to_string(),
        CleanItem::CloudInit => format!("remove{}\n", rooted_list(&CLOUD_INIT_PATHS)),
        CleanItem::TempFiles => format!(
            "for d in{}; do\n  [ -d \"$d\" ] && [ ! -L \"$d\" ] || continue\n  remove \"$d\"/* \"$d\"/.[!.]* \"$d\"/..?*\ndone\n",
            rooted_list(&TEMP_DIRS)
        ),
        CleanItem::Installers => {
            let mut s = format!("remove{}\n", rooted_list(&INSTALLER_GLOBS));
            for path in &policy.extra_paths {
                s.push_str(&format!("remove \"$ROOT\"{}\n", sh_glob_quote(path)));
            }
            s
        }
        CleanItem::EphemeralFstab => format!(
            "if [ -f \"$ROOT/etc/fstab\" ]; then\n  filter_file \"$ROOT/etc/fstab\" awk '$1 ~ /^#/ {{print; next}} {} {{next}} /{}/ {{next}} {{print}}'\nfi\n",
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
        CleanItem::AuthorizedKeys => format!(
            "for home in \"$ROOT/root\" \"$ROOT\"/home/*; do\n  [ -d \"$home\" ] && [ ! -L \"$home\" ] || continue\n  remove{}\ndone\n",
            AUTHORIZED_KEYS_FILES
                .iter()
                .map(|f| format!(" \"$home/.ssh/{f}\""))
                .collect::<String>()
        ),
    }
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
