//! Capture of a whole disk: the tree is written back into a copy of
//! the base disk, one ext filesystem per partition it came from, so the
//! output has the base's partition table, partition and filesystem UUIDs
//! and labels, feature sets, and every byte outside those filesystems
//! (MBR boot code, BIOS-boot partition, EFI system partition, swap) as the
//! base had them. It boots as the base did.
//!
//! No loop device, mount or nbd device is used: `mke2fs -d DIR -E offset=`
//! writes each filesystem straight into its byte range of the raw copy, so
//! there is nothing to record in the ledger beyond the work dir, and
//! nothing an interruption can leave attached to the host.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::pipeline::StepError;

use super::bootable;
use super::capture::{compress, ensure_room_for_tree, finish, tree_usage};
use super::fsutil::{ensure_plain_file, io_error};
use super::layout::{DiskLayout, Mounted};
use super::tools;

/// Writes `qcow2` from the tree: rewrites each mounted filesystem of the
/// disk from its directory, converts to a compressed qcow2 and checks it
/// with `qemu-img check`. A whole-disk base is rewritten in place in the
/// build's raw copy (`DiskSource::Base`, made at launch): every filesystem
/// written is recreated whole and nothing else is touched, so a retried
/// capture starts over safely; the copy is removed once the qcow2 is made.
/// A new disk is made at `raw`, removed on every path.
pub(crate) fn make_disk_qcow2(
    layout: &DiskLayout,
    root: &Path,
    source: &DiskSource,
    raw: &Path,
    qcow2: &Path,
) -> Result<String, StepError> {
    let disk = match source {
        DiskSource::Base(base_raw) => {
            // The tool sandbox wrote it at launch.
            ensure_plain_file(base_raw)?;
            *base_raw
        }
        DiskSource::New { boot_img, core_img } => {
            let _ = fs::remove_file(raw);
            if let Err(e) = new_disk(layout, raw, boot_img, core_img) {
                let _ = fs::remove_file(raw);
                return Err(e);
            }
            raw
        }
    };
    let result = (|| -> Result<(), StepError> {
        let aside = raw.with_extension("aside");
        for m in &layout.mounted {
            write_filesystem(m, layout, root, disk, &aside)?;
        }
        for m in &layout.fat {
            write_fat(m, root, disk)?;
        }
        compress(disk, qcow2)
    })();
    if result.is_ok() || disk == raw {
        let _ = fs::remove_file(disk);
    }
    result?;
    tracing::info!(image = %qcow2.display(), table = %layout.table.label, filesystems = layout.mounted.len(), "whole disk written");
    finish(qcow2)
}

/// What the disk is made from.
pub(crate) enum DiskSource<'a> {
    /// The build's raw copy of the whole-disk base (its table and boot
    /// areas kept), rewritten in place.
    Base(&'a Path),
    /// A new disk of the planned layout (`builder.disk`), with GRUB's
    /// `boot.img` and `core.img` from the image.
    New {
        /// GRUB's MBR boot code.
        boot_img: Vec<u8>,
        /// GRUB's core image.
        core_img: Vec<u8>,
    },
}

/// Makes the sparse raw file of a planned disk: its partition table and
/// GRUB embedded. The root and EFI system partitions are written
/// afterwards like those of any disk.
fn new_disk(
    layout: &DiskLayout,
    raw: &Path,
    boot_img: &[u8],
    core_img: &[u8],
) -> Result<(), StepError> {
    use std::io::{Seek, SeekFrom, Write};
    let file = fs::File::create(raw).map_err(io_error(raw.display()))?;
    file.set_len(bootable::disk_size(layout))
        .map_err(io_error(raw.display()))?;
    drop(file);
    let mut child = Command::new("sfdisk")
        .args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(raw)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| StepError::NonRetryable(format!("sfdisk (package fdisk): {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(bootable::sfdisk_script(layout).as_bytes())
            .map_err(io_error("sfdisk"))?;
    }
    let out = child.wait_with_output().map_err(io_error("sfdisk"))?;
    if !out.status.success() {
        return Err(StepError::NonRetryable(format!(
            "sfdisk failed: {}",
            tools::tail(&String::from_utf8_lossy(&out.stderr), 5)
        )));
    }
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(raw)
        .map_err(io_error(raw.display()))?;
    let mut mbr = [0u8; 512];
    std::io::Read::read_exact(&mut f, &mut mbr).map_err(io_error(raw.display()))?;
    let at = bootable::core_offset(layout);
    let (mbr, core) = bootable::embed_grub(&mbr, boot_img, core_img, at / 512)
        .map_err(|e| StepError::NonRetryable(format!("installing GRUB: {e}")))?;
    let mut write_at = |offset: u64, bytes: &[u8]| -> std::io::Result<()> {
        f.seek(SeekFrom::Start(offset))?;
        f.write_all(bytes)
    };
    write_at(0, &mbr).map_err(io_error(raw.display()))?;
    write_at(at, &core).map_err(io_error(raw.display()))?;
    f.sync_all().map_err(io_error(raw.display()))?;
    Ok(())
}

/// The directory of a mount point in the tree; every component must be a
/// real directory (a provisioner may have replaced `/boot` with a link).
fn mount_dir(root: &Path, mountpoint: &str) -> Result<PathBuf, StepError> {
    let mut dir = root.to_path_buf();
    for part in mountpoint.split('/').filter(|p| !p.is_empty()) {
        dir.push(part);
        let real = dir.symlink_metadata().is_ok_and(|m| m.is_dir());
        if !real || part == ".." || part == "." {
            return Err(StepError::NonRetryable(format!(
                "mount point {mountpoint} is no longer a directory in the image (a provisioner replaced {}); the disk cannot be written back",
                dir.strip_prefix(root).unwrap_or(&dir).display()
            )));
        }
    }
    Ok(dir)
}

/// Mount points below `m`'s that belong to other filesystems, outermost
/// only (moving `/var` aside moves `/var/log` with it).
fn nested<'a>(m: &Mounted, layout: &'a DiskLayout) -> Vec<&'a Mounted> {
    let below = |outer: &str, inner: &str| {
        inner != outer && (outer == "/" || inner.starts_with(&format!("{outer}/")))
    };
    let inner: Vec<&Mounted> = layout
        .mounted
        .iter()
        .chain(&layout.fat)
        .filter(|n| below(&m.mountpoint, &n.mountpoint))
        .collect();
    inner
        .iter()
        .filter(|n| !inner.iter().any(|o| below(&o.mountpoint, &n.mountpoint)))
        .copied()
        .collect()
}

/// Directories moved out of the tree while a filesystem is written, each
/// replaced by an empty directory of the same mode and owner; put back
/// when dropped, whatever happened.
struct Aside {
    moved: Vec<(PathBuf, PathBuf)>,
}

impl Aside {
    fn new() -> Self {
        Aside { moved: Vec::new() }
    }

    fn move_out(&mut self, dir: &Path, to: &Path) -> Result<(), StepError> {
        let meta = dir.symlink_metadata().map_err(io_error(dir.display()))?;
        fs::rename(dir, to).map_err(io_error(dir.display()))?;
        self.moved.push((dir.to_path_buf(), to.to_path_buf()));
        fs::create_dir(dir).map_err(io_error(dir.display()))?;
        std::os::unix::fs::lchown(dir, Some(meta.uid()), Some(meta.gid()))
            .map_err(io_error(dir.display()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(io_error(dir.display()))
    }
}

impl Drop for Aside {
    fn drop(&mut self) {
        for (dir, to) in self.moved.drain(..).rev() {
            let _ = fs::remove_dir(&dir);
            if let Err(e) = fs::rename(&to, &dir) {
                tracing::error!(dir = %dir.display(), aside = %to.display(), error = %e, "could not put a mount point's files back");
            }
        }
    }
}

/// Zeroes (deallocates) `len` bytes at `offset` of `file`, so nothing of
/// the base's filesystem survives in the free blocks of the new one.
fn punch_hole(file: &Path, offset: u64, len: u64) -> Result<(), StepError> {
    let f = fs::OpenOptions::new()
        .write(true)
        .open(file)
        .map_err(io_error(file.display()))?;
    let (Ok(off), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Err(StepError::NonRetryable(format!(
            "partition range {offset}+{len} is out of range"
        )));
    };
    // SAFETY: fallocate on an open descriptor with plain integer arguments.
    let rc = unsafe {
        libc::fallocate(
            f.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off,
            len,
        )
    };
    if rc != 0 {
        return Err(io_error(format!(
            "clearing partition bytes of {}",
            file.display()
        ))(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Recreates the FAT filesystem of `m` (the EFI system partition) with
/// `mkfs.fat` (same FAT size, volume id and label) and copies the tree's
/// directory into it with `mcopy`. FAT holds only directories and regular
/// files; anything else below the mount point is refused, so `mcopy`
/// (which follows links) never reads outside the tree.
fn write_fat(m: &Mounted, root: &Path, raw: &Path) -> Result<(), StepError> {
    let p = &m.partition;
    let dir = mount_dir(root, &m.mountpoint)?;
    let mut entries = Vec::new();
    for entry in walkdir::WalkDir::new(&dir).follow_links(false).min_depth(1) {
        let entry =
            entry.map_err(|e| StepError::NonRetryable(format!("{}: {e}", dir.display())))?;
        let ft = entry.file_type();
        if !(ft.is_dir() || ft.is_file()) {
            return Err(StepError::NonRetryable(format!(
                "{}/{} is not a regular file or directory: the FAT filesystem at {} cannot hold it",
                m.mountpoint,
                entry
                    .path()
                    .strip_prefix(&dir)
                    .unwrap_or(entry.path())
                    .display(),
                m.mountpoint
            )));
        }
        if entry.depth() == 1 {
            entries.push(entry.path().to_path_buf());
        }
    }
    punch_hole(raw, p.offset, p.size)?;
    let bits = p.version.trim_start_matches("FAT");
    let bits = if ["12", "16", "32"].contains(&bits) {
        bits
    } else {
        "32"
    };
    let mut mkfs = Command::new("mkfs.fat");
    mkfs.args([
        "-F",
        bits,
        "-s",
        &fat_cluster_sectors(bits, p.size / 512).to_string(),
        "-i",
    ])
    .arg(p.uuid.replace('-', ""))
    .arg(format!("--offset={}", p.offset / 512));
    if !p.label.is_empty() {
        mkfs.arg("-n").arg(&p.label);
    }
    tools::run(
        mkfs.arg(raw).arg((p.size / 1024).to_string()),
        &format!("mkfs.fat of {} ({})", m.mountpoint, p.describe()),
    )?;
    if !entries.is_empty() {
        tools::run(
            Command::new("mcopy")
                .env("MTOOLS_SKIP_CHECK", "1")
                .args(["-s", "-m", "-n", "-i"])
                .arg(format!("{}@@{}", raw.display(), p.offset))
                .args(&entries)
                .arg("::/"),
            &format!("mcopy into {} ({})", m.mountpoint, p.describe()),
        )?;
    }
    tracing::info!(mountpoint = %m.mountpoint, partition = p.number, "FAT filesystem written back");
    Ok(())
}

/// Sectors per cluster for a FAT of `bits` on `sectors`: mkfs.fat sizes
/// clusters by the whole file when given an offset, which can leave a
/// FAT32 with fewer clusters than FAT32 allows (readers then take it for a
/// FAT16), so the size is chosen here from the partition: the largest
/// cluster keeping FAT32 above 65,525 clusters, the smallest keeping FAT16
/// and FAT12 under their limits.
fn fat_cluster_sectors(bits: &str, sectors: u64) -> u64 {
    let clusters = |spc: u64| sectors / spc;
    let sizes = [1u64, 2, 4, 8, 16, 32, 64, 128];
    match bits {
        "32" => sizes
            .iter()
            .rev()
            .copied()
            .find(|&spc| clusters(spc) >= 70_000 && spc <= 8)
            .unwrap_or(1),
        "16" => sizes
            .iter()
            .copied()
            .find(|&spc| clusters(spc) < 65_000)
            .unwrap_or(128),
        _ => sizes
            .iter()
            .copied()
            .find(|&spc| clusters(spc) < 4_000)
            .unwrap_or(128),
    }
}

/// Recreates `m`'s filesystem in its partition from the tree.
fn write_filesystem(
    m: &Mounted,
    layout: &DiskLayout,
    root: &Path,
    raw: &Path,
    aside_dir: &Path,
) -> Result<(), StepError> {
    let p = &m.partition;
    let dir = mount_dir(root, &m.mountpoint)?;
    let mut aside = Aside::new();
    for (i, n) in nested(m, layout).into_iter().enumerate() {
        let inner = mount_dir(root, &n.mountpoint)?;
        fs::create_dir_all(aside_dir).map_err(io_error(aside_dir.display()))?;
        aside.move_out(
            &inner,
            &aside_dir.join(format!("{}-{i}", n.partition.number)),
        )?;
    }
    let (bytes, inodes) = tree_usage(&dir).map_err(io_error(dir.display()))?;
    // Journal, group descriptors and inode tables take about 5%.
    let usable = p.size - p.size / 20;
    if bytes > usable {
        return Err(StepError::NonRetryable(format!(
            "the files under {} ({} MiB) do not fit in {} ({} MiB): a whole-disk base keeps its partition sizes, so give the base a larger partition (or, for a disk bakehouse makes, a larger builder.disk.size_mb)",
            m.mountpoint,
            bytes >> 20,
            p.describe(),
            p.size >> 20
        )));
    }
    ensure_room_for_tree(raw, bytes, &format!("writing {}", m.mountpoint))?;
    let ext = &m.ext;
    let inode_count = ext.inode_count.max(inodes + inodes / 4 + 1024);
    punch_hole(raw, p.offset, p.size)?;
    let size_k = p.size / 1024;
    tools::run(
        Command::new("mke2fs")
            .args(["-q", "-F", "-t", &p.fs_type])
            .arg("-O")
            .arg(ext.feature_arg())
            .arg("-b")
            .arg(ext.block_size.to_string())
            .arg("-I")
            .arg(ext.inode_size.max(128).to_string())
            .arg("-N")
            .arg(inode_count.to_string())
            .arg("-E")
            .arg(format!("offset={},root_owner=0:0,nodiscard", p.offset))
            .arg("-U")
            .arg(&p.uuid)
            .arg("-L")
            .arg(&p.label)
            .arg("-d")
            .arg(&dir)
            .arg(raw)
            .arg(format!("{size_k}k")),
        &format!("mke2fs of {} ({})", m.mountpoint, p.describe()),
    )?;
    drop(aside);
    tracing::info!(mountpoint = %m.mountpoint, partition = p.number, used_mib = bytes >> 20, size_mib = p.size >> 20, "filesystem written back");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::layout::{ExtParams, Partition, Table};
    use super::*;

    fn mounted(number: usize, mountpoint: &str) -> Mounted {
        Mounted {
            partition: Partition {
                number,
                offset: 0,
                size: 0,
                kind: String::new(),
                partuuid: String::new(),
                fs_type: "ext4".into(),
                uuid: String::new(),
                label: String::new(),
                version: String::new(),
            },
            mountpoint: mountpoint.into(),
            ext: ExtParams::default(),
        }
    }

    #[test]
    fn only_the_outermost_nested_mounts_are_moved_aside() {
        let layout = DiskLayout {
            table: Table {
                label: "gpt".into(),
                sector_size: 512,
                partitions: Vec::new(),
            },
            mounted: vec![
                mounted(1, "/"),
                mounted(2, "/boot"),
                mounted(3, "/var"),
                mounted(4, "/var/log"),
                mounted(5, "/variable"),
            ],
            fat: vec![mounted(6, "/boot/efi")],
        };
        let names = |m: &Mounted| -> Vec<String> {
            nested(m, &layout)
                .iter()
                .map(|n| n.mountpoint.clone())
                .collect()
        };
        assert_eq!(names(&layout.mounted[0]), ["/boot", "/var", "/variable"]);
        assert_eq!(names(&layout.mounted[1]), ["/boot/efi"]);
        assert_eq!(names(&layout.mounted[2]), ["/var/log"]);
    }

    #[test]
    fn fat_clusters_keep_each_fat_size_within_its_limits() {
        // 64 MiB: FAT32 needs one-sector clusters to stay above 65,525.
        assert_eq!(fat_cluster_sectors("32", 131_072), 1);
        assert_eq!(fat_cluster_sectors("32", 1 << 22), 8);
        assert_eq!(fat_cluster_sectors("16", 131_072), 4);
        assert_eq!(fat_cluster_sectors("12", 8_192), 4);
    }

    #[test]
    fn a_mount_point_replaced_by_a_link_is_refused_and_aside_restores() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("var/log")).unwrap();
        fs::write(root.join("var/log/x"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("boot")).unwrap();
        let err = mount_dir(&root, "/boot").unwrap_err().to_string();
        assert!(
            err.contains("/boot") && err.contains("no longer a directory"),
            "{err}"
        );
        {
            let mut aside = Aside::new();
            aside
                .move_out(&root.join("var/log"), &dir.path().join("a"))
                .unwrap();
            assert!(fs::read_dir(root.join("var/log")).unwrap().next().is_none());
        }
        assert_eq!(fs::read(root.join("var/log/x")).unwrap(), b"x");
    }
}
