//! What a build changed in a whole-disk base, as `debugfs` commands that
//! make the same changes in the base's filesystems in place.
//!
//! A whole-disk base is provisioned on an overlay ([`super::disk_cache`]):
//! the unpacked base is the read-only lower layer and the build's upper
//! directory receives exactly what changed: new and modified entries (a
//! modified file is copied up whole), whiteouts (character devices 0/0) for
//! removed ones, and opaque directories (`trusted.overlay.opaque=y`) for
//! directories replaced whole. [`plan`] walks the upper directory and turns
//! it into one command file per ext filesystem of the disk: each removed or
//! replaced entry is removed (recursively, listing the lower layer), each
//! new one written with its mode, owners (shifted back to the image's ids),
//! times and extended attributes, hard links kept among the new files.
//!
//! The plan gives up (the caller then rewrites the filesystems whole, as
//! for any other base) when it cannot say the change exactly: a change in
//! a FAT filesystem (the EFI system partition), a removed mount point, a
//! name debugfs cannot take (`"`, a newline, a leading `-`, not UTF-8), or
//! an overlay feature bakehouse does not enable (redirects, metacopy).
//!
//! Blocks freed in the image by a removal keep the base's old bytes (the
//! base carries them already); nothing the build wrote and removed again
//! reaches the image, since only the upper layer's final state is written.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::idmap::{self, Shift};
use super::layout::DiskLayout;

/// The overlay's private extended attributes (never copied to the image).
const OVERLAY_XATTRS: &str = "trusted.overlay.";
/// Marks an upper directory that hides the lower one whole.
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// The commands for one ext filesystem of the disk.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct FsCommands {
    /// Byte offset of its partition in the disk.
    pub offset: u64,
    /// Where the image mounts it.
    pub mountpoint: String,
    /// The debugfs command file (`debugfs -w -f`).
    pub commands: String,
}

/// The whole change, ready to run.
#[derive(Debug, Default)]
pub(crate) struct Delta {
    /// One command file per filesystem with changes.
    pub filesystems: Vec<FsCommands>,
    /// Extended attribute values the commands read (`ea_set -f`): file
    /// name in the commands' directory and the value.
    pub values: Vec<(String, Vec<u8>)>,
    /// Entries written or removed.
    pub changes: usize,
}

/// Where the upper directory is inside the tool sandbox.
pub(crate) const IN_UPPER: &str = "/upper";
/// Where the attribute values are inside the tool sandbox.
pub(crate) const IN_VALUES: &str = "/values";

/// Plans the change of `upper` over `lower` on the disk `layout`:
/// `Ok(Err(reason))` when it must be rewritten whole instead.
pub(crate) fn plan(
    upper: &Path,
    lower: &Path,
    layout: &DiskLayout,
) -> io::Result<Result<Delta, String>> {
    let mut planner = Planner {
        lower,
        layout,
        delta: Delta::default(),
        by_fs: HashMap::new(),
        links: HashMap::new(),
        give_up: None,
    };
    for entry in walkdir::WalkDir::new(upper)
        .follow_links(false)
        .sort_by_file_name()
    {
        let entry = entry.map_err(io::Error::other)?;
        let Ok(rel) = entry.path().strip_prefix(upper) else {
            continue;
        };
        let Some(rel) = rel.to_str() else {
            return Ok(Err(format!("{} is not UTF-8", rel.display())));
        };
        let rel = format!("/{rel}");
        let rel = if rel == "/" {
            rel
        } else {
            rel.trim_end_matches('/').to_string()
        };
        if let Err(reason) = planner.entry(entry.path(), &rel)? {
            return Ok(Err(reason));
        }
        if let Some(reason) = planner.give_up.take() {
            return Ok(Err(reason));
        }
    }
    planner.finish();
    Ok(Ok(planner.delta))
}

/// Which filesystem a path is on.
enum On {
    /// An ext filesystem of the layout (index in `mounted`), and the path
    /// inside it.
    Ext(usize, String),
    /// A FAT filesystem.
    Fat(String),
}

struct Planner<'a> {
    lower: &'a Path,
    layout: &'a DiskLayout,
    delta: Delta,
    by_fs: HashMap<usize, String>,
    /// Hard-linked new files: (dev, ino) → (filesystem, path, names).
    links: HashMap<(u64, u64), (usize, String, u32)>,
    /// Why a removal cannot be said.
    give_up: Option<String>,
}

impl Planner<'_> {
    fn on(&self, rel: &str) -> On {
        let within = |mp: &str| mp == "/" || rel == mp || rel.starts_with(&format!("{mp}/"));
        let inner = |mp: &str| {
            if mp == "/" {
                rel.to_string()
            } else {
                let rest = &rel[mp.len()..];
                if rest.is_empty() {
                    "/".to_string()
                } else {
                    rest.to_string()
                }
            }
        };
        let ext = self
            .layout
            .mounted
            .iter()
            .enumerate()
            .filter(|(_, m)| within(&m.mountpoint))
            .max_by_key(|(_, m)| m.mountpoint.len());
        let fat = self
            .layout
            .fat
            .iter()
            .filter(|m| within(&m.mountpoint))
            .max_by_key(|m| m.mountpoint.len());
        match (ext, fat) {
            (Some((_, e)), Some(f)) if f.mountpoint.len() > e.mountpoint.len() => {
                On::Fat(f.mountpoint.clone())
            }
            (Some((i, e)), _) => On::Ext(i, inner(&e.mountpoint)),
            (None, Some(f)) => On::Fat(f.mountpoint.clone()),
            (None, None) => On::Fat(String::new()),
        }
    }

    fn push(&mut self, fs: usize, line: &str) {
        let text = self.by_fs.entry(fs).or_default();
        text.push_str(line);
        text.push('\n');
    }

    /// Mount points at or below `rel` (other than the root).
    fn mounts_below(&self, rel: &str) -> bool {
        let below = |mp: &str| mp != "/" && (mp == rel || mp.starts_with(&format!("{rel}/")));
        self.layout.mounted.iter().any(|m| below(&m.mountpoint))
            || self.layout.fat.iter().any(|m| below(&m.mountpoint))
    }

    fn entry(&mut self, path: &Path, rel: &str) -> io::Result<Result<(), String>> {
        let meta = fs::symlink_metadata(path)?;
        let ft = meta.file_type();
        let (fs_index, inner) = match self.on(rel) {
            On::Ext(i, inner) => (i, inner),
            On::Fat(mp) if mp.is_empty() => {
                return Ok(Err(format!("{rel} is on no filesystem of the disk")))
            }
            On::Fat(mp) => return Ok(Err(format!("{rel} changed on the FAT filesystem at {mp}"))),
        };
        if let Some(reason) = unsayable(&inner) {
            return Ok(Err(format!("{rel}: {reason}")));
        }
        for name in xattr::list(path)?.filter_map(|n| n.into_string().ok()) {
            if name.starts_with("trusted.overlay.")
                && name != OPAQUE_XATTR
                && (name.ends_with(".redirect") || name.ends_with(".metacopy"))
            {
                return Ok(Err(format!("{rel}: overlay {name}")));
            }
        }
        let is_fs_root = inner == "/";
        if is_fs_root {
            if !ft.is_dir() {
                return Ok(Err(format!(
                    "mount point {rel} replaced by a non-directory"
                )));
            }
            self.metadata(fs_index, &inner, &meta, Some(path))?;
            return Ok(Ok(()));
        }
        let lower = lower_entry(self.lower, rel)?;
        let whiteout = ft.is_char_device() && meta.rdev() == 0;
        let opaque = ft.is_dir() && xattr::get(path, OPAQUE_XATTR)?.is_some_and(|v| v == b"y");
        // A lower directory removed or hidden whole (not one that merely
        // has changes below it, like /boot over the ESP at /boot/efi).
        let drops_lower_dir =
            lower.as_ref().is_some_and(|l| l.is_dir()) && (whiteout || opaque || !ft.is_dir());
        if drops_lower_dir && self.mounts_below(rel) {
            return Ok(Err(format!("{rel} holds a mount point and was replaced")));
        }
        let (parent, name) = split(&inner);
        if whiteout {
            if let Some(l) = lower {
                self.remove(fs_index, rel, &inner, &l)?;
                self.delta.changes += 1;
            }
            return Ok(Ok(()));
        }
        let cd = format!("cd {}", quote(parent));
        if ft.is_dir() {
            match &lower {
                Some(l) if l.is_dir() => {
                    if opaque {
                        self.remove_children(fs_index, rel, &inner)?;
                    }
                }
                Some(l) => {
                    self.remove(fs_index, rel, &inner, l)?;
                    self.push(fs_index, &format!("{cd}\nmkdir {}", quote(name)));
                }
                None => self.push(fs_index, &format!("{cd}\nmkdir {}", quote(name))),
            }
        } else if ft.is_socket() {
            // Not archived either (see capture::make_tar_zst).
            return Ok(Ok(()));
        } else {
            if let Some(l) = &lower {
                self.remove(fs_index, rel, &inner, l)?;
            }
            if ft.is_file() {
                let key = (meta.dev(), meta.ino());
                let first = (meta.nlink() > 1)
                    .then(|| self.links.get(&key).cloned())
                    .flatten()
                    .filter(|(fs, _, _)| *fs == fs_index);
                if let Some((_, target, _)) = first {
                    self.push(
                        fs_index,
                        &format!("{cd}\nln {} {}", quote(&target), quote(name)),
                    );
                    if let Some(link) = self.links.get_mut(&key) {
                        link.2 += 1;
                    }
                    self.delta.changes += 1;
                    return Ok(Ok(()));
                }
                if meta.nlink() > 1 {
                    self.links.insert(key, (fs_index, inner.clone(), 1));
                }
                self.push(
                    fs_index,
                    &format!(
                        "{cd}\nwrite {} {}",
                        quote(&format!("{IN_UPPER}{rel}")),
                        quote(name)
                    ),
                );
            } else if ft.is_symlink() {
                let target = fs::read_link(path)?;
                let Some(target) = target.to_str() else {
                    return Ok(Err(format!("{rel}: link target is not UTF-8")));
                };
                if let Some(reason) = unsayable(target) {
                    return Ok(Err(format!("{rel}: link target: {reason}")));
                }
                self.push(
                    fs_index,
                    &format!("{cd}\nsymlink {} {}", quote(name), quote(target)),
                );
            } else {
                let kind = if ft.is_fifo() {
                    "p".to_string()
                } else {
                    let dev = meta.rdev();
                    let (major, minor) = (libc::major(dev), libc::minor(dev));
                    format!(
                        "{} {major} {minor}",
                        if ft.is_char_device() { "c" } else { "b" }
                    )
                };
                self.push(fs_index, &format!("{cd}\nmknod {} {kind}", quote(name)));
            }
        }
        self.delta.changes += 1;
        let attrs = (!ft.is_symlink()).then_some(path);
        self.metadata(fs_index, &inner, &meta, attrs)?;
        Ok(Ok(()))
    }

    /// Mode, owners, times and extended attributes of `inner`.
    fn metadata(
        &mut self,
        fs: usize,
        inner: &str,
        meta: &fs::Metadata,
        attrs_of: Option<&Path>,
    ) -> io::Result<()> {
        let q = quote(inner);
        let id = |n: u32| Shift::Out.map(n).unwrap_or(n);
        let mut lines = Vec::new();
        if !meta.file_type().is_symlink() {
            lines.push(format!("sif {q} mode 0{:o}", meta.mode()));
        }
        lines.push(format!("sif {q} uid {}", id(meta.uid())));
        lines.push(format!("sif {q} gid {}", id(meta.gid())));
        for (field, secs) in [
            ("mtime", meta.mtime()),
            ("atime", meta.atime()),
            ("ctime", meta.ctime()),
        ] {
            lines.push(format!("sif {q} {field} @{}", secs.max(0)));
        }
        if let Some(path) = attrs_of {
            for name in xattr::list(path)? {
                let Some(name) = name.to_str() else {
                    self.give_up = Some(format!("{inner}: an attribute name is not UTF-8"));
                    continue;
                };
                if name.starts_with(OVERLAY_XATTRS) {
                    continue;
                }
                if let Some(reason) = unsayable(name) {
                    self.give_up = Some(format!("{inner}: attribute {name:?}: {reason}"));
                    continue;
                }
                let Some(value) = xattr::get(path, name)? else {
                    continue;
                };
                let value = if name == "security.capability" {
                    idmap::portable_caps(&value, Shift::Out)
                } else {
                    value
                };
                let file = format!("v{}", self.delta.values.len());
                lines.push(format!("ea_set -f {IN_VALUES}/{file} {q} {name}"));
                self.delta.values.push((file, value));
            }
        }
        for line in lines {
            self.push(fs, &line);
        }
        Ok(())
    }

    /// Removes the lower entry at `rel` (`inner` in its filesystem), a
    /// directory with everything below it.
    fn remove(
        &mut self,
        fs: usize,
        rel: &str,
        inner: &str,
        lower: &fs::Metadata,
    ) -> io::Result<()> {
        if lower.is_dir() {
            self.remove_children(fs, rel, inner)?;
            self.push(fs, &format!("rmdir {}", quote(inner)));
        } else {
            self.push(fs, &format!("rm {}", quote(inner)));
        }
        Ok(())
    }

    /// Removes what the lower directory at `rel` holds.
    fn remove_children(&mut self, fs: usize, rel: &str, inner: &str) -> io::Result<()> {
        let dir = self.lower.join(rel.trim_start_matches('/'));
        let mut lines = Vec::new();
        for entry in walkdir::WalkDir::new(&dir)
            .follow_links(false)
            .min_depth(1)
            .contents_first(true)
        {
            let entry = entry.map_err(io::Error::other)?;
            let sub = entry.path().strip_prefix(&dir).map_err(io::Error::other)?;
            let Some(sub) = sub.to_str() else {
                self.give_up = Some(format!("{}: not UTF-8", entry.path().display()));
                return Ok(());
            };
            let path = format!("{}/{sub}", inner.trim_end_matches('/'));
            if let Some(reason) = unsayable(&path) {
                self.give_up = Some(format!("{path}: {reason}"));
                return Ok(());
            }
            let verb = if entry.file_type().is_dir() {
                "rmdir"
            } else {
                "rm"
            };
            lines.push(format!("{verb} {}", quote(&path)));
        }
        for line in lines {
            self.push(fs, &line);
        }
        Ok(())
    }

    /// Link counts of hard-linked new files, then the command files.
    fn finish(&mut self) {
        let links: Vec<_> = self.links.values().cloned().collect();
        for (fs, path, count) in links {
            if count > 1 {
                self.push(fs, &format!("sif {} links_count {count}", quote(&path)));
            }
        }
        let mut indexes: Vec<usize> = self.by_fs.keys().copied().collect();
        indexes.sort_unstable();
        for i in indexes {
            let m = &self.layout.mounted[i];
            self.delta.filesystems.push(FsCommands {
                offset: m.partition.offset,
                mountpoint: m.mountpoint.clone(),
                commands: self.by_fs.remove(&i).unwrap_or_default(),
            });
        }
    }
}

/// The lower layer's entry at `rel`, without following any link of the
/// image on the way (`None` if a component is missing or not a directory).
fn lower_entry(lower: &Path, rel: &str) -> io::Result<Option<fs::Metadata>> {
    let mut at = PathBuf::from(lower);
    let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
    for (i, part) in parts.iter().enumerate() {
        at.push(part);
        let meta = match fs::symlink_metadata(&at) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if i + 1 == parts.len() {
            return Ok(Some(meta));
        }
        if !meta.is_dir() {
            return Ok(None);
        }
    }
    Ok(fs::symlink_metadata(lower).ok())
}

/// `(parent, name)` of an absolute path inside a filesystem.
fn split(inner: &str) -> (&str, &str) {
    match inner.rsplit_once('/') {
        Some(("", name)) => ("/", name),
        Some((parent, name)) => (parent, name),
        None => ("/", inner),
    }
}

/// Why debugfs could not be given `s` as one argument, if it cannot.
fn unsayable(s: &str) -> Option<&'static str> {
    if s.contains('"') {
        Some("a name with a double quote")
    } else if s.chars().any(char::is_control) {
        Some("a name with a control character")
    } else if s.split('/').any(|c| c.starts_with('-')) {
        Some("a name starting with '-'")
    } else {
        None
    }
}

/// One debugfs argument.
fn quote(s: &str) -> String {
    format!("\"{s}\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::local::layout::{ExtParams, Mounted, Partition, Table};

    fn mounted(mountpoint: &str, offset: u64) -> Mounted {
        Mounted {
            partition: Partition {
                offset,
                ..Partition::default()
            },
            mountpoint: mountpoint.into(),
            ext: ExtParams::default(),
        }
    }

    fn layout() -> DiskLayout {
        DiskLayout {
            table: Table {
                label: "gpt".into(),
                sector_size: 512,
                partitions: Vec::new(),
            },
            mounted: vec![mounted("/", 1 << 20), mounted("/boot", 2 << 20)],
            fat: vec![mounted("/boot/efi", 3 << 20)],
        }
    }

    #[test]
    fn names_debugfs_cannot_take_are_refused() {
        assert!(unsayable("/etc/a b").is_none());
        assert!(unsayable("/etc/a\"b").is_some());
        assert!(unsayable("/etc/a\nb").is_some());
        assert!(unsayable("/etc/-x").is_some());
        assert_eq!(split("/a"), ("/", "a"));
        assert_eq!(split("/a/b/c"), ("/a/b", "c"));
    }

    #[test]
    fn the_change_of_an_overlay_becomes_commands_per_filesystem() {
        use std::os::unix::fs::{symlink, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let (lower, upper) = (dir.path().join("lower"), dir.path().join("upper"));
        for d in ["etc/old", "boot/grub", "boot/efi", "var/gone/deep"] {
            fs::create_dir_all(lower.join(d)).unwrap();
        }
        fs::write(lower.join("etc/passwd"), "root\n").unwrap();
        fs::write(lower.join("var/gone/deep/f"), "x").unwrap();
        fs::write(lower.join("etc/old/a"), "x").unwrap();
        for d in ["etc/old", "boot/grub", "var", "opt/app"] {
            fs::create_dir_all(upper.join(d)).unwrap();
        }
        fs::write(upper.join("etc/passwd"), "root\napp\n").unwrap();
        fs::set_permissions(upper.join("etc/passwd"), fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::lchown(
            upper.join("etc/passwd"),
            Some(idmap::ID_OFFSET),
            Some(idmap::ID_OFFSET + 42),
        )
        .unwrap();
        xattr::set(upper.join("etc/old"), OPAQUE_XATTR, b"y").unwrap();
        fs::write(upper.join("etc/old/b"), "new").unwrap();
        fs::write(upper.join("boot/grub/grub.cfg"), "menuentry").unwrap();
        fs::write(upper.join("opt/app/one"), "1").unwrap();
        fs::hard_link(upper.join("opt/app/one"), upper.join("opt/app/two")).unwrap();
        symlink("/opt/app/one", upper.join("opt/app/link")).unwrap();
        let whiteout = std::ffi::CString::new(upper.join("var/gone").to_str().unwrap()).unwrap();
        // SAFETY: a plain mknod of a path we own.
        assert_eq!(
            unsafe { libc::mknod(whiteout.as_ptr(), libc::S_IFCHR, 0) },
            0
        );

        let delta = plan(&upper, &lower, &layout()).unwrap().unwrap();
        let root = &delta.filesystems[0];
        let boot = &delta.filesystems[1];
        assert_eq!((root.offset, boot.offset), (1 << 20, 2 << 20));
        let c = &root.commands;
        assert!(c.contains("rm \"/etc/passwd\"\ncd \"/etc\"\nwrite \"/upper/etc/passwd\" \"passwd\"\nsif \"/etc/passwd\" mode 0100644\nsif \"/etc/passwd\" uid 0\nsif \"/etc/passwd\" gid 42\n"), "{c}");
        // The opaque directory loses its lower content, the new file comes.
        let gone = c.find("rm \"/etc/old/a\"").unwrap();
        assert!(
            gone < c.find("write \"/upper/etc/old/b\" \"b\"").unwrap(),
            "{c}"
        );
        // The whiteout removes the lower directory, deepest first.
        let f = c.find("rm \"/var/gone/deep/f\"").unwrap();
        let deep = c.find("rmdir \"/var/gone/deep\"").unwrap();
        assert!(
            f < deep && deep < c.find("rmdir \"/var/gone\"\n").unwrap(),
            "{c}"
        );
        assert!(
            c.contains("cd \"/opt/app\"\nln \"/opt/app/one\" \"two\"\n"),
            "{c}"
        );
        assert!(c.contains("sif \"/opt/app/one\" links_count 2\n"), "{c}");
        assert!(
            c.contains("cd \"/opt/app\"\nsymlink \"link\" \"/opt/app/one\"\n"),
            "{c}"
        );
        assert!(c.contains("cd \"/opt\"\nmkdir \"app\"\n"), "{c}");
        assert!(!c.contains("grub.cfg"), "{c}");
        // /boot is its own filesystem: paths inside it, its root's metadata.
        assert!(
            boot.commands.contains("sif \"/\" mode"),
            "{}",
            boot.commands
        );
        assert!(
            boot.commands
                .contains("cd \"/grub\"\nwrite \"/upper/boot/grub/grub.cfg\" \"grub.cfg\"\n"),
            "{}",
            boot.commands
        );
        assert!(
            !delta.values.iter().any(|(_, v)| v == b"y"),
            "overlay attributes stay out"
        );
    }

    #[test]
    fn a_directory_over_a_mount_point_may_change_below() {
        let dir = tempfile::tempdir().unwrap();
        let (lower, upper) = (dir.path().join("lower"), dir.path().join("upper"));
        fs::create_dir_all(lower.join("boot/efi/EFI")).unwrap();
        fs::create_dir_all(upper.join("boot")).unwrap();
        fs::write(upper.join("boot/vmlinuz-new"), "k").unwrap();
        let cloud = DiskLayout {
            mounted: vec![mounted("/", 1 << 20)],
            fat: vec![mounted("/boot/efi", 2 << 20)],
            ..layout()
        };
        let delta = plan(&upper, &lower, &cloud).unwrap().unwrap();
        let c = &delta.filesystems[0].commands;
        assert!(
            c.contains("cd \"/boot\"\nwrite \"/upper/boot/vmlinuz-new\" \"vmlinuz-new\"\n"),
            "{c}"
        );
        // Hiding /boot whole would take the ESP's mount point with it.
        xattr::set(upper.join("boot"), OPAQUE_XATTR, b"y").unwrap();
        let why = plan(&upper, &lower, &cloud).unwrap().unwrap_err();
        assert!(why.contains("mount point"), "{why}");
    }

    #[test]
    fn changes_the_commands_cannot_say_are_given_up() {
        let dir = tempfile::tempdir().unwrap();
        let (lower, upper) = (dir.path().join("lower"), dir.path().join("upper"));
        fs::create_dir_all(lower.join("boot/efi/EFI")).unwrap();
        fs::create_dir_all(upper.join("boot/efi/EFI")).unwrap();
        fs::write(upper.join("boot/efi/EFI/x"), "x").unwrap();
        let why = plan(&upper, &lower, &layout()).unwrap().unwrap_err();
        assert!(why.contains("FAT"), "{why}");

        let upper2 = dir.path().join("upper2");
        fs::create_dir_all(upper2.join("etc")).unwrap();
        fs::write(upper2.join("etc/a\"b"), "x").unwrap();
        let why = plan(&upper2, &lower, &layout()).unwrap().unwrap_err();
        assert!(why.contains("double quote"), "{why}");

        let upper3 = dir.path().join("upper3");
        fs::create_dir_all(&upper3).unwrap();
        let whiteout = std::ffi::CString::new(upper3.join("boot").to_str().unwrap()).unwrap();
        // SAFETY: a plain mknod of a path we own.
        assert_eq!(
            unsafe { libc::mknod(whiteout.as_ptr(), libc::S_IFCHR, 0) },
            0
        );
        let why = plan(&upper3, &lower, &layout()).unwrap().unwrap_err();
        assert!(why.contains("mount point"), "{why}");
    }
}
