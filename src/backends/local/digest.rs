//! Content digests of local bases: a file's sha256 (cached by size, mtime
//! and inode, so a big base is hashed once), and a digest of a directory
//! tree (sorted paths, types, modes, owners, link targets, device numbers,
//! file contents).

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::registry::locate::file_digest;

/// Version tag of the tree digest encoding.
const TREE_DIGEST_VERSION: &[u8] = b"bakehouse-tree/v1\n";

/// `sha256:<hex>` of a file, using (and updating) a cache entry in
/// `cache_dir` keyed by the file's canonical path and checked against its
/// size, modification time and inode.
pub(crate) fn cached_file_digest(path: &Path, cache_dir: &Path) -> io::Result<String> {
    let canonical = fs::canonicalize(path)?;
    let meta = fs::metadata(&canonical)?;
    let stamp = format!(
        "{} {}.{} {} {}",
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.dev(),
        meta.ino()
    );
    let key = hex::encode(Sha256::digest(canonical.as_os_str().as_bytes()));
    let entry = cache_dir.join(key);
    if let Ok(text) = fs::read_to_string(&entry) {
        if let Some((cached_stamp, digest)) = text.trim_end().rsplit_once(' ') {
            if cached_stamp == stamp && digest.starts_with("sha256:") {
                return Ok(digest.to_string());
            }
        }
    }
    let digest = file_digest(&canonical)?;
    // The cache is an optimisation: failing to write it is not an error.
    if fs::create_dir_all(cache_dir).is_ok() {
        let tmp = entry.with_extension(format!("tmp{}", std::process::id()));
        if fs::write(&tmp, format!("{stamp} {digest}\n")).is_ok() {
            let _ = fs::rename(&tmp, &entry);
        }
    }
    Ok(digest)
}

/// `sha256:<hex>` over a directory tree, not following symlinks: for every
/// entry in sorted path order its relative path, type, permission bits,
/// owner and group, and its content (sha256 of a file, a link's target, a
/// device's numbers). Timestamps are left out.
pub(crate) fn tree_digest(root: &Path) -> io::Result<String> {
    let mut hasher = Sha256::new();
    hasher.update(TREE_DIGEST_VERSION);
    let walker = walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name();
    for entry in walker {
        let entry = entry.map_err(io::Error::other)?;
        let rel = entry.path().strip_prefix(root).map_err(io::Error::other)?;
        let meta = entry.path().symlink_metadata()?;
        let ft = meta.file_type();
        let (kind, content) = if ft.is_symlink() {
            (
                'l',
                fs::read_link(entry.path())?.as_os_str().as_bytes().to_vec(),
            )
        } else if ft.is_file() {
            let mut file = fs::File::open(entry.path())?;
            let mut h = Sha256::new();
            io::copy(&mut file, &mut h)?;
            ('f', hex::encode(h.finalize()).into_bytes())
        } else if ft.is_dir() {
            ('d', Vec::new())
        } else if ft.is_char_device() {
            ('c', meta.rdev().to_string().into_bytes())
        } else if ft.is_block_device() {
            ('b', meta.rdev().to_string().into_bytes())
        } else if ft.is_fifo() {
            ('p', Vec::new())
        } else {
            ('s', Vec::new())
        };
        let path = rel.as_os_str().as_bytes();
        hasher.update((path.len() as u64).to_le_bytes());
        hasher.update(path);
        hasher.update(
            format!(
                "\0{kind} {:o} {} {}\0",
                meta.mode() & 0o7777,
                meta.uid(),
                meta.gid()
            )
            .as_bytes(),
        );
        hasher.update((content.len() as u64).to_le_bytes());
        hasher.update(&content);
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("etc")).unwrap();
        fs::write(dir.path().join("etc/hostname"), "box\n").unwrap();
        symlink("/etc/hostname", dir.path().join("name")).unwrap();
        dir
    }

    #[test]
    fn tree_digest_sees_content_modes_and_links() {
        let dir = tree();
        let first = tree_digest(dir.path()).unwrap();
        assert!(first.starts_with("sha256:") && first.len() == 71, "{first}");
        assert_eq!(tree_digest(dir.path()).unwrap(), first);
        let other = tree();
        assert_eq!(
            tree_digest(other.path()).unwrap(),
            first,
            "same tree, same digest"
        );

        fs::set_permissions(
            dir.path().join("etc/hostname"),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let moded = tree_digest(dir.path()).unwrap();
        assert_ne!(moded, first);

        fs::remove_file(dir.path().join("name")).unwrap();
        symlink("/etc/other", dir.path().join("name")).unwrap();
        let relinked = tree_digest(dir.path()).unwrap();
        assert_ne!(relinked, moded);

        fs::write(dir.path().join("etc/hostname"), "box2\n").unwrap();
        assert_ne!(tree_digest(dir.path()).unwrap(), relinked);
    }

    #[test]
    fn file_digest_cache_is_used_and_invalidated() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("base.tar");
        let cache = dir.path().join("cache");
        fs::write(&file, "one").unwrap();
        let d1 = cached_file_digest(&file, &cache).unwrap();
        assert_eq!(d1, file_digest(&file).unwrap());
        assert_eq!(fs::read_dir(&cache).unwrap().count(), 1);
        // A forged cache entry with the right stamp is believed ...
        let entry = fs::read_dir(&cache)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let text = fs::read_to_string(&entry).unwrap();
        let (stamp, _) = text.trim_end().rsplit_once(' ').unwrap();
        fs::write(&entry, format!("{stamp} sha256:forged\n")).unwrap();
        assert_eq!(cached_file_digest(&file, &cache).unwrap(), "sha256:forged");
        // ... and a change of size or mtime invalidates it.
        fs::write(&file, "three").unwrap();
        let d2 = cached_file_digest(&file, &cache).unwrap();
        assert_eq!(d2, file_digest(&file).unwrap());
        assert_ne!(d2, d1);
    }
}
