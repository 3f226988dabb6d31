//! The user namespace mapping of the sandbox, and keeping the work tree's
//! owners in step with it.
//!
//! Inside the sandbox, ids `0..ID_RANGE` map to host ids
//! `ID_OFFSET..ID_OFFSET + ID_RANGE`: root in a build is host uid
//! [`ID_OFFSET`], an unprivileged id no host file belongs to, holding
//! capabilities only inside its own user namespace. So that root in the
//! sandbox owns the tree, the tree is *shifted* after unpacking (every
//! owner `n < ID_RANGE` becomes `ID_OFFSET + n`) and *unshifted* before
//! capture, so the image keeps the image's own ids (a package's system user
//! owns its files under its uid). Both walks are idempotent: they only
//! touch ids in their source range, so a retried step can run them again.
//! Ids at or above `ID_RANGE` in a base are left as they are (inside they
//! show as the overflow id 65534). `chown` clears set-user-ID and
//! set-group-ID bits and file capabilities, so both are put back.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// First host id of the sandbox's range (host uid and gid of root inside).
pub const ID_OFFSET: u32 = 1_600_000_000;

/// Number of ids mapped (inside: `0..ID_RANGE`).
pub const ID_RANGE: u32 = 65_536;

/// The extended attribute holding file capabilities.
const CAPS_XATTR: &str = "security.capability";

/// `VFS_CAP_REVISION_MASK` and the revisions of `security.capability`.
const CAP_REVISION_MASK: u32 = 0xFF00_0000;
const CAP_REVISION_2: u32 = 0x0200_0000;
const CAP_REVISION_3: u32 = 0x0300_0000;

/// Which way a walk moves owners.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shift {
    /// Image ids to host ids of the sandbox range.
    In,
    /// Host ids of the sandbox range back to image ids.
    Out,
}

impl Shift {
    /// The new id for `id`, or `None` when this walk leaves it.
    pub fn map(self, id: u32) -> Option<u32> {
        match self {
            Shift::In => (id < ID_RANGE).then(|| id + ID_OFFSET),
            Shift::Out => (ID_OFFSET..ID_OFFSET + ID_RANGE)
                .contains(&id)
                .then(|| id - ID_OFFSET),
        }
    }
}

/// The line written to `/proc/PID/uid_map` and `gid_map`.
pub(crate) fn map_line() -> String {
    format!("0 {ID_OFFSET} {ID_RANGE}\n")
}

/// Moves the owners of `path` and everything below it (never following
/// symlinks); returns how many entries changed.
pub(crate) fn shift_tree(path: &Path, shift: Shift) -> io::Result<u64> {
    let mut changed = 0;
    for entry in walkdir::WalkDir::new(path).follow_links(false) {
        let entry = entry.map_err(io::Error::other)?;
        if shift_one(entry.path(), shift)? {
            changed += 1;
        }
    }
    Ok(changed)
}

/// Moves the owner of one entry; whether it changed.
pub(crate) fn shift_one(path: &Path, shift: Shift) -> io::Result<bool> {
    let meta = fs::symlink_metadata(path)?;
    let (uid, gid) = (shift.map(meta.uid()), shift.map(meta.gid()));
    if uid.is_none() && gid.is_none() {
        return Ok(false);
    }
    let caps = if meta.is_file() {
        xattr::get(path, CAPS_XATTR).ok().flatten()
    } else {
        None
    };
    std::os::unix::fs::lchown(path, uid, gid)?;
    if meta.is_file() && meta.mode() & 0o6000 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    if let Some(caps) = caps {
        xattr::set(path, CAPS_XATTR, &portable_caps(&caps, shift))?;
    }
    Ok(true)
}

/// File capabilities as they must be written back after a shift: a
/// revision 3 entry (namespaced, with a root id) that the sandbox wrote
/// becomes revision 2 in the image (valid for the booted system's root).
pub(crate) fn portable_caps(raw: &[u8], shift: Shift) -> Vec<u8> {
    let magic = raw
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_le_bytes);
    match magic {
        Some(m)
            if shift == Shift::Out
                && m & CAP_REVISION_MASK == CAP_REVISION_3
                && raw.len() >= 20 =>
        {
            let mut v2 = raw[..20].to_vec();
            let m2 = (m & !CAP_REVISION_MASK) | CAP_REVISION_2;
            v2[..4].copy_from_slice(&m2.to_le_bytes());
            v2
        }
        _ => raw.to_vec(),
    }
}

/// Makes `path` (one entry the host just wrote into the tree) owned by
/// root of the sandbox.
pub(crate) fn give_to_sandbox(path: &Path) -> io::Result<()> {
    shift_one(path, Shift::In).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_move_only_within_their_range() {
        assert_eq!(Shift::In.map(0), Some(ID_OFFSET));
        assert_eq!(Shift::In.map(65_535), Some(ID_OFFSET + 65_535));
        assert_eq!(Shift::In.map(65_536), None);
        assert_eq!(Shift::In.map(ID_OFFSET), None);
        assert_eq!(Shift::Out.map(ID_OFFSET + 42), Some(42));
        assert_eq!(Shift::Out.map(42), None);
        assert_eq!(Shift::Out.map(ID_OFFSET + ID_RANGE), None);
    }

    #[test]
    fn namespaced_capabilities_become_plain_ones_on_the_way_out() {
        let mut v3 = (CAP_REVISION_3 | 1).to_le_bytes().to_vec();
        v3.extend([0x00, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        v3.extend(ID_OFFSET.to_le_bytes());
        let v2 = portable_caps(&v3, Shift::Out);
        assert_eq!(v2.len(), 20);
        assert_eq!(
            u32::from_le_bytes([v2[0], v2[1], v2[2], v2[3]]),
            CAP_REVISION_2 | 1
        );
        assert_eq!(&v2[4..], &v3[4..20]);
        assert_eq!(portable_caps(&v3, Shift::In), v3);
        assert_eq!(portable_caps(b"xy", Shift::Out), b"xy");
    }

    #[test]
    fn a_shifted_tree_comes_back_with_its_owners_and_setuid_bits() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("d")).unwrap();
        fs::write(root.join("d/su"), "x").unwrap();
        std::os::unix::fs::lchown(root.join("d/su"), Some(0), Some(0)).unwrap();
        fs::set_permissions(root.join("d/su"), fs::Permissions::from_mode(0o4755)).unwrap();
        fs::write(root.join("d/user"), "x").unwrap();
        std::os::unix::fs::lchown(root.join("d/user"), Some(105), Some(110)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("link2")).unwrap();
        let n = shift_tree(root, Shift::In).unwrap();
        assert!(n >= 4, "{n}");
        let m = fs::symlink_metadata(root.join("d/user")).unwrap();
        assert_eq!((m.uid(), m.gid()), (ID_OFFSET + 105, ID_OFFSET + 110));
        let su = fs::symlink_metadata(root.join("d/su")).unwrap();
        assert_eq!((su.uid(), su.mode() & 0o7777), (ID_OFFSET, 0o4755));
        // the link itself moved, its target did not
        assert_eq!(
            fs::symlink_metadata(root.join("link2")).unwrap().uid(),
            ID_OFFSET
        );
        assert_eq!(fs::metadata("/etc/passwd").unwrap().uid(), 0);
        assert_eq!(shift_tree(root, Shift::In).unwrap(), 0, "idempotent");
        shift_tree(root, Shift::Out).unwrap();
        let m = fs::symlink_metadata(root.join("d/user")).unwrap();
        assert_eq!((m.uid(), m.gid()), (105, 110));
        let su = fs::symlink_metadata(root.join("d/su")).unwrap();
        assert_eq!((su.uid(), su.mode() & 0o7777), (0, 0o4755));
    }
}
