//! Checks an image for anything the clean policy should have removed: a
//! root tree ([`verify_tree`]) or a captured archive ([`verify_archive`]),
//! both through an [`ImageView`]. Homes are those of `/root`, `/home/*`
//! and every account in the image's `/etc/passwd`; links (a home, `/var/log`)
//! are followed inside the image only, never on the host.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use super::clean::{is_ephemeral_fstab_line, CleanItem, TEMP_DIRS};
use super::image_view::{join, resolve, DirView, Entry, ImageView, TarView};
use super::model::{CleanPolicy, PasswordMode};

/// Something the clean policy should have removed but is still in the image.
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

/// Every leftover in the tree at `root`, in checklist order.
pub fn verify_tree(root: &Path, policy: &CleanPolicy) -> Vec<Leftover> {
    verify(&DirView::new(root), policy)
}

/// Every leftover in a captured `.tar.zst` (or `.tar`), read in one pass
/// without unpacking it.
pub fn verify_archive(archive: &Path, policy: &CleanPolicy) -> io::Result<Vec<Leftover>> {
    Ok(verify(&TarView::open(archive)?, policy))
}

/// Every leftover of the items `policy` applies, in checklist order.
pub fn verify(view: &dyn ImageView, policy: &CleanPolicy) -> Vec<Leftover> {
    let homes = homes(view);
    let mut out = Vec::new();
    for item in policy.items() {
        let mut found: Vec<(String, String)> = Vec::new();
        check_item(view, item, policy, &mut found);
        for pattern in item.system_paths() {
            for path in expand(view, "/", pattern) {
                found.push((path, "still present".into()));
            }
        }
        if item == CleanItem::Installers {
            for pattern in &policy.extra_paths {
                for path in expand(view, "/", pattern) {
                    found.push((path, "extra path still present".into()));
                }
            }
        }
        for home in &homes {
            for pattern in item.home_paths() {
                for path in expand(view, home, pattern) {
                    found.push((path, format!("still present in the home {home}")));
                }
            }
        }
        out.extend(found.into_iter().map(|(path, reason)| Leftover {
            path: PathBuf::from(path),
            item,
            reason,
        }));
    }
    out
}

fn check_item(
    view: &dyn ImageView,
    item: CleanItem,
    policy: &CleanPolicy,
    found: &mut Vec<(String, String)>,
) {
    match item {
        CleanItem::Passwords => check_shadow(view, policy.passwords, found),
        CleanItem::MachineId => {
            if let Some(Entry::File(n)) = view.entry("/etc/machine-id") {
                if n > 0 {
                    found.push(("/etc/machine-id".into(), "machine-id is not empty".into()));
                }
            }
        }
        CleanItem::Logs => {
            if let Some(logs) = resolve(view, "/var/log") {
                for (file, size) in walk_files(view, &logs) {
                    if size > 0 {
                        found.push((file, "log file is not empty".into()));
                    }
                }
                let journal = join(&logs, "journal");
                for name in view.list(&journal) {
                    found.push((
                        join(&journal, &name),
                        "journal directory still present".into(),
                    ));
                }
            }
        }
        CleanItem::TempFiles => {
            for dir in TEMP_DIRS {
                if let Some(real) = resolve(view, dir) {
                    for name in view.list(&real) {
                        found.push((join(&real, &name), "temporary file still present".into()));
                    }
                }
            }
        }
        CleanItem::EphemeralFstab => check_fstab(view, found),
        _ => {}
    }
}

fn check_shadow(view: &dyn ImageView, mode: PasswordMode, found: &mut Vec<(String, String)>) {
    let Some(bytes) = view.read("/etc/shadow") else {
        if view.entry("/etc/shadow").is_some() {
            // A link or something else where the hashes should be.
            found.push((
                "/etc/shadow".into(),
                "is not a regular file: its hashes cannot be checked".into(),
            ));
        }
        return;
    };
    for line in String::from_utf8_lossy(&bytes).lines() {
        let mut fields = line.split(':');
        let (Some(user), Some(hash)) = (fields.next(), fields.next()) else {
            continue;
        };
        let problem = if hash.is_empty() {
            Some("has an empty password")
        } else if !hash.starts_with(['!', '*']) {
            Some("has an unlocked password")
        } else if mode == PasswordMode::Remove && !hash.chars().all(|c| c == '!' || c == '*') {
            Some("still has a password hash (locked)")
        } else {
            None
        };
        if let Some(problem) = problem {
            found.push(("/etc/shadow".into(), format!("account `{user}` {problem}")));
        }
    }
}

fn check_fstab(view: &dyn ImageView, found: &mut Vec<(String, String)>) {
    let Some(bytes) = view.read("/etc/fstab") else {
        return;
    };
    for (n, line) in String::from_utf8_lossy(&bytes).lines().enumerate() {
        if is_ephemeral_fstab_line(line) {
            found.push((
                "/etc/fstab".into(),
                format!("line {}: ephemeral mount `{}`", n + 1, line.trim()),
            ));
        }
    }
}

/// Home directories (resolved inside the image, each once): `/root`,
/// `/home/*`, then the homes of `/etc/passwd` in file order.
pub fn homes(view: &dyn ImageView) -> Vec<String> {
    let mut candidates = vec!["/root".to_string()];
    candidates.extend(view.list("/home").into_iter().map(|n| join("/home", &n)));
    if let Some(passwd) = view.read("/etc/passwd") {
        for line in String::from_utf8_lossy(&passwd).lines() {
            if let Some(home) = line.split(':').nth(5) {
                if home.starts_with('/') {
                    candidates.push(home.to_string());
                }
            }
        }
    }
    let mut out: Vec<String> = Vec::new();
    for c in candidates {
        if let Some(real) = resolve(view, &c) {
            if view.entry(&real) == Some(Entry::Dir) && !out.contains(&real) {
                out.push(real);
            }
        }
    }
    out
}

/// Regular files below `dir` (links not followed) with their sizes.
fn walk_files(view: &dyn ImageView, dir: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_string()];
    while let Some(dir) = pending.pop() {
        for name in view.list(&dir) {
            let path = join(&dir, &name);
            match view.entry(&path) {
                Some(Entry::Dir) => pending.push(path),
                Some(Entry::File(n)) => out.push((path, n)),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// Expands `pattern` (relative to `base`; `*`, `?`, `[...]` in any
/// component, a leading `.` matched only explicitly) to existing paths,
/// following links on the way inside the image.
pub fn expand(view: &dyn ImageView, base: &str, pattern: &str) -> Vec<String> {
    let components: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
    let mut current = vec![join("/", base)];
    for (i, component) in components.iter().enumerate() {
        let last = i + 1 == components.len();
        let mut next = Vec::new();
        for at in &current {
            // Directories on the way are followed; the last name is not.
            let Some(dir) = resolve(view, at) else {
                continue;
            };
            if component.contains(['*', '?', '[']) {
                let Ok(glob) = globset::Glob::new(component) else {
                    return Vec::new();
                };
                let matcher = glob.compile_matcher();
                for name in view.list(&dir) {
                    if (component.starts_with('.') || !name.starts_with('.'))
                        && matcher.is_match(&name)
                    {
                        next.push(join(&dir, &name));
                    }
                }
            } else {
                let path = join(&dir, component);
                if last || view.entry(&path).is_some() {
                    next.push(path);
                }
            }
        }
        current = next;
    }
    current.retain(|p| p != "/" && view.entry(p).is_some());
    current
}
