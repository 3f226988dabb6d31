//! Whole-disk bases unpacked once and kept, and the overlay a build
//! provisions on.
//!
//! The first build on a whole-disk base unpacks it as always (in the tool
//! sandbox) and keeps the result under `<work root>/.disks/<format>-<sha256
//! of the base>/`: the tree (owners already shifted to the sandbox's
//! range), the disk's layout, and `disk.qcow2`, the disk as a compressed
//! qcow2 that bakehouse wrote itself from the raw bytes (so the host-side
//! tools that later open it parse no qcow2 metadata from outside). Every
//! build on that base then mounts an overlay: the kept tree is the
//! read-only lower layer, the build's `upper/` takes what it changes, and
//! capture writes only those changes into a copy of `disk.qcow2`
//! ([`super::delta`]). Launch drops from unpacking the whole disk to one
//! mount; capture from rewriting and recompressing every filesystem to
//! copying a file and writing the change.
//!
//! The overlay is mounted by the host (root) over bakehouse's own
//! directories; the untrusted image is never mounted. It is recorded in the
//! build's ledger before it is made, and teardown, a retried launch and
//! `builds gc` detach it ([`super::export::detach_mounts_below`]). Options:
//! no redirects, no metacopy, no index, so the upper layer says every
//! change with plain files, whiteouts and opaque directories.
//!
//! An entry is published by renaming a complete directory into place, so
//! concurrent first builds on one base both succeed (one keeps its copy).
//! Entries not used for [`EVICT_AFTER`] are removed when a new one is made,
//! beyond the [`KEEP`] most recently used.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The directory of the kept bases, below the work root.
pub(crate) const CACHE_DIR: &str = ".disks";
/// Bumped when what an entry holds, or how it is made, changes.
const FORMAT: &str = "v1";
/// Entries kept whatever their age.
const KEEP: usize = 3;
/// Older entries beyond [`KEEP`] are removed.
const EVICT_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Marks a complete entry.
const COMPLETE: &str = "complete";

/// One kept base.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CachedDisk {
    /// Its directory.
    pub dir: PathBuf,
}

impl CachedDisk {
    /// The unpacked tree (the overlay's lower layer).
    pub fn tree(&self) -> PathBuf {
        self.dir.join("tree")
    }

    /// The disk as a qcow2 bakehouse wrote.
    pub fn disk(&self) -> PathBuf {
        self.dir.join("disk.qcow2")
    }

    /// The disk's layout (JSON of [`super::layout::DiskLayout`]).
    pub fn layout_file(&self) -> PathBuf {
        self.dir.join("layout.json")
    }
}

/// Where the entry of the base `base_id` (`sha256:<hex>`) lives.
pub(crate) fn entry_dir(work_root: &Path, base_id: &str) -> PathBuf {
    let hex = base_id.trim_start_matches("sha256:");
    work_root.join(CACHE_DIR).join(format!("{FORMAT}-{hex}"))
}

/// The complete entry of `base_id`, marked as just used; `None` if there
/// is none.
pub(crate) fn lookup(work_root: &Path, base_id: &str) -> Option<CachedDisk> {
    let dir = entry_dir(work_root, base_id);
    let marker = dir.join(COMPLETE);
    if !marker.is_file() {
        return None;
    }
    let _ = fs::File::options()
        .write(true)
        .open(&marker)
        .and_then(|f| f.set_modified(SystemTime::now()));
    Some(CachedDisk { dir })
}

/// Publishes `staged` (holding `tree/`, `disk.qcow2`, `layout.json`, on the
/// work root's filesystem) as the entry of `base_id`; removes older
/// entries. When another build published it first, `staged` is removed
/// and that entry is used.
pub(crate) fn publish(work_root: &Path, base_id: &str, staged: &Path) -> io::Result<CachedDisk> {
    let cache = work_root.join(CACHE_DIR);
    fs::create_dir_all(&cache)?;
    fs::set_permissions(&cache, fs::Permissions::from_mode(0o700))?;
    fs::write(staged.join(COMPLETE), base_id)?;
    let dir = entry_dir(work_root, base_id);
    if let Err(e) = fs::rename(staged, &dir) {
        if lookup(work_root, base_id).is_none() {
            return Err(e);
        }
        super::fsutil::remove_below(staged, work_root)?;
    }
    evict(&cache, &dir);
    Ok(CachedDisk { dir })
}

/// Removes entries (and half-made leftovers) beyond the [`KEEP`] most
/// recently used that were not used for [`EVICT_AFTER`]; never `current`.
fn evict(cache: &Path, current: &Path) {
    let Ok(entries) = fs::read_dir(cache) else {
        return;
    };
    let mut aged: Vec<(SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p != current)
        .map(|p| {
            let used = fs::metadata(p.join(COMPLETE))
                .or_else(|_| fs::symlink_metadata(&p))
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            (used, p)
        })
        .collect();
    aged.sort_by_key(|e| std::cmp::Reverse(e.0));
    let now = SystemTime::now();
    for (used, path) in aged.into_iter().skip(KEEP.saturating_sub(1)) {
        if now.duration_since(used).unwrap_or_default() < EVICT_AFTER {
            continue;
        }
        match super::fsutil::remove_below(&path, cache) {
            Ok(()) => tracing::info!(entry = %path.display(), "removed an unused kept base"),
            Err(e) => {
                tracing::warn!(entry = %path.display(), error = %e, "could not remove a kept base")
            }
        }
    }
}

/// Whether the kernel's overlay options can name `path` (they are split on
/// `,` and `:`).
pub(crate) fn nameable(path: &Path) -> bool {
    !path
        .as_os_str()
        .as_bytes()
        .iter()
        .any(|b| matches!(b, b',' | b':' | b'\\' | b'\n'))
}

/// Mounts the overlay of `lower` and `upper` (with `workdir`, same
/// filesystem as `upper`) on `target`. `upper` takes the owner and mode of
/// the lower root, which the merged root shows.
pub(crate) fn mount_overlay(
    lower: &Path,
    upper: &Path,
    workdir: &Path,
    target: &Path,
) -> io::Result<()> {
    for dir in [upper, workdir, target] {
        fs::create_dir_all(dir)?;
    }
    let root = fs::symlink_metadata(lower)?;
    std::os::unix::fs::lchown(upper, Some(root.uid()), Some(root.gid()))?;
    fs::set_permissions(upper, fs::Permissions::from_mode(root.mode() & 0o7777))?;
    for p in [lower, upper, workdir] {
        if !nameable(p) {
            return Err(io::Error::other(format!(
                "{}: the overlay's options cannot name a path with ',', ':' or '\\'",
                p.display()
            )));
        }
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={},redirect_dir=off,index=off,metacopy=off,xino=off",
        lower.display(),
        upper.display(),
        workdir.display()
    );
    let c = |s: &[u8]| CString::new(s).map_err(io::Error::other);
    let (source, fstype) = (c(b"bakehouse-overlay")?, c(b"overlay")?);
    let (target_c, data) = (c(target.as_os_str().as_bytes())?, c(options.as_bytes())?);
    // SAFETY: valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target_c.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("mounting the overlay on {}: {e}", target.display()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_found_once_complete_and_old_ones_go() {
        let dir = tempfile::tempdir().unwrap();
        let work_root = dir.path();
        let id = "sha256:abc";
        assert!(lookup(work_root, id).is_none());
        let staged = work_root.join("b1/stage");
        fs::create_dir_all(staged.join("tree")).unwrap();
        let entry = publish(work_root, id, &staged).unwrap();
        assert_eq!(entry.dir, entry_dir(work_root, id));
        assert_eq!(lookup(work_root, id), Some(entry.clone()));
        // A second build that made it too keeps the first one's.
        let staged2 = work_root.join("b2/stage");
        fs::create_dir_all(staged2.join("tree")).unwrap();
        fs::write(staged2.join("tree/mine"), "x").unwrap();
        fs::create_dir_all(entry.tree()).unwrap();
        fs::write(entry.tree().join("theirs"), "x").unwrap();
        let again = publish(work_root, id, &staged2).unwrap();
        assert_eq!(again, entry);
        assert!(!staged2.exists());
        assert!(entry.tree().join("theirs").exists());
        // Old entries beyond the kept ones are removed.
        let old = work_root.join(CACHE_DIR).join("v1-old");
        let older = work_root.join(CACHE_DIR).join("v1-older");
        for (p, age) in [(&old, 2), (&older, 3)] {
            fs::create_dir_all(p).unwrap();
            let f = fs::File::create(p.join(COMPLETE)).unwrap();
            f.set_modified(SystemTime::now() - EVICT_AFTER * age)
                .unwrap();
        }
        let staged3 = work_root.join("b3/stage");
        fs::create_dir_all(&staged3).unwrap();
        publish(work_root, "sha256:def", &staged3).unwrap();
        assert!(old.exists(), "the most recent other entry stays");
        assert!(!older.exists());
        assert!(entry.dir.exists(), "used within a day");
    }

    #[test]
    fn option_separators_cannot_be_named() {
        assert!(nameable(Path::new("/work/.bakehouse/work/b1/upper")));
        assert!(!nameable(Path::new("/work/a,b")));
        assert!(!nameable(Path::new("/work/a:b")));
    }
}
