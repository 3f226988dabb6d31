//! Checks a Linux root filesystem tree for anything the clean policy should
//! have removed. Symlinks are never followed (a tree's absolute links point
//! at the host), and unreadable directories count as empty.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use super::clean::{
    is_ephemeral_fstab_line, CleanItem, AUTHORIZED_KEYS_FILES, CLOUD_INIT_PATHS, HISTORY_FILES,
    INSTALLER_GLOBS, TEMP_DIRS,
};
use super::model::CleanPolicy;

/// Something the clean policy should have removed but is still in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// Path inside the image, absolute (`/etc/ssh/ssh_host_rsa_key`).
    pub path: PathBuf,
    /// The checklist item that should have removed it.
    pub item: CleanItem,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for Leftover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.path.display(),
            self.item,
            self.reason
        )
    }
}

/// Every leftover of the items `policy` applies, in checklist order.
pub fn verify_tree(root: &Path, policy: &CleanPolicy) -> Vec<Leftover> {
    let mut out = Vec::new();
    for item in policy.items() {
        let mut found = Vec::new();
        check_item(root, item, policy, &mut found);
        out.extend(found.into_iter().map(|(rel, reason)| Leftover {
            path: Path::new("/").join(rel),
            item,
            reason,
        }));
    }
    out
}

type Found = Vec<(PathBuf, String)>;

fn check_item(root: &Path, item: CleanItem, policy: &CleanPolicy, found: &mut Found) {
    match item {
        CleanItem::LockPasswords => check_shadow(root, found),
        CleanItem::ShellHistory => {
            for home in homes(root) {
                for name in HISTORY_FILES {
                    present(root, &home.join(name), "shell history still present", found);
                }
            }
        }
        CleanItem::SshHostKeys => {
            for key in expand(root, "etc/ssh/ssh_host_*") {
                found.push((key, "SSH host key still present".to_string()));
            }
        }
        CleanItem::MachineId => {
            let id = Path::new("etc/machine-id");
            if let Ok(meta) = fs::symlink_metadata(root.join(id)) {
                if meta.is_file() && meta.len() > 0 {
                    found.push((id.to_path_buf(), "machine-id is not empty".to_string()));
                }
            }
            let dbus = Path::new("var/lib/dbus/machine-id");
            present(root, dbus, "D-Bus machine-id still present", found);
        }
        CleanItem::Logs => {
            for file in walk_files(root, Path::new("var/log")) {
                let size = fs::symlink_metadata(root.join(&file)).map(|m| m.len());
                if size.is_ok_and(|n| n > 0) {
                    found.push((file, "log file is not empty".to_string()));
                }
            }
        }
        CleanItem::CloudInit => {
            for rel in CLOUD_INIT_PATHS {
                present(
                    root,
                    Path::new(rel),
                    "cloud-init state still present",
                    found,
                );
            }
        }
        CleanItem::TempFiles => {
            for dir in TEMP_DIRS {
                for entry in list_dir(root, Path::new(dir)) {
                    found.push((entry, "temporary file still present".to_string()));
                }
            }
        }
        CleanItem::Installers => {
            let patterns = INSTALLER_GLOBS.iter().map(|g| g.to_string()).chain(
                policy
                    .extra_paths
                    .iter()
                    .map(|p| p.trim_start_matches('/').to_string()),
            );
            for pattern in patterns {
                for path in expand(root, &pattern) {
                    found.push((path, "installer leftover still present".to_string()));
                }
            }
        }
        CleanItem::EphemeralFstab => check_fstab(root, found),
        CleanItem::AuthorizedKeys => {
            for home in homes(root) {
                for name in AUTHORIZED_KEYS_FILES {
                    let rel = home.join(".ssh").join(name);
                    present(root, &rel, "authorized_keys still present", found);
                }
            }
        }
    }
}

fn check_shadow(root: &Path, found: &mut Found) {
    let rel = Path::new("etc/shadow");
    if !is_real_file(&root.join(rel)) {
        return;
    }
    let Ok(text) = fs::read_to_string(root.join(rel)) else {
        return;
    };
    for line in text.lines() {
        let mut fields = line.split(':');
        let (Some(user), Some(hash)) = (fields.next(), fields.next()) else {
            continue;
        };
        if hash.is_empty() {
            found.push((
                rel.into(),
                format!("account `{user}` has an empty password"),
            ));
        } else if !hash.starts_with('!') && !hash.starts_with('*') {
            found.push((
                rel.into(),
                format!("account `{user}` has an unlocked password"),
            ));
        }
    }
}

fn check_fstab(root: &Path, found: &mut Found) {
    let rel = Path::new("etc/fstab");
    if !is_real_file(&root.join(rel)) {
        return;
    }
    let Ok(text) = fs::read_to_string(root.join(rel)) else {
        return;
    };
    for (n, line) in text.lines().enumerate() {
        if is_ephemeral_fstab_line(line) {
            found.push((
                rel.into(),
                format!("line {}: ephemeral mount `{}`", n + 1, line.trim()),
            ));
        }
    }
}

fn is_real_file(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
}

fn is_real_dir(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

fn present(root: &Path, rel: &Path, reason: &str, found: &mut Found) {
    if fs::symlink_metadata(root.join(rel)).is_ok() {
        found.push((rel.to_path_buf(), reason.to_string()));
    }
}

/// `root` and every real directory under `home/`, relative to `root`.
fn homes(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![PathBuf::from("root")];
    out.extend(
        list_dir(root, Path::new("home"))
            .into_iter()
            .filter(|h| is_real_dir(&root.join(h))),
    );
    out
}

/// Entries of a real directory, relative to `root`, sorted.
fn list_dir(root: &Path, rel: &Path) -> Vec<PathBuf> {
    if !is_real_dir(&root.join(rel)) {
        return Vec::new();
    }
    let mut out: Vec<PathBuf> = fs::read_dir(root.join(rel))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| rel.join(e.file_name()))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Regular files below `rel`, recursively, relative to `root`.
fn walk_files(root: &Path, rel: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in list_dir(root, rel) {
        match fs::symlink_metadata(root.join(&entry)) {
            Ok(m) if m.is_dir() => out.extend(walk_files(root, &entry)),
            Ok(m) if m.is_file() => out.push(entry),
            _ => {}
        }
    }
    out
}

/// Expands a relative path whose components may hold `*`, `?`, `[...]`
/// (shell rules: a leading `.` must be matched explicitly).
fn expand(root: &Path, pattern: &str) -> Vec<PathBuf> {
    let mut current = vec![PathBuf::new()];
    for component in pattern.split('/').filter(|c| !c.is_empty()) {
        let mut next = Vec::new();
        if component.contains(['*', '?', '[']) {
            let Ok(glob) = globset::Glob::new(component) else {
                return Vec::new();
            };
            let matcher = glob.compile_matcher();
            for base in &current {
                for entry in list_dir(root, base) {
                    let name = entry.file_name().map(|n| n.to_string_lossy().into_owned());
                    let name = name.unwrap_or_default();
                    if (component.starts_with('.') || !name.starts_with('.'))
                        && matcher.is_match(&name)
                    {
                        next.push(entry);
                    }
                }
            }
        } else {
            next = current
                .iter()
                .map(|b| b.join(component))
                .filter(|p| fs::symlink_metadata(root.join(p)).is_ok())
                .collect();
        }
        current = next;
    }
    current.retain(|p| !p.as_os_str().is_empty());
    current
}
