//! The capture step of a local build: an ext4 image of the tree (made with
//! `mke2fs -d` in a sparse raw file, then compressed to qcow2) and a
//! `.tar.zst` of the tree, each with a `<file>.sha256` sidecar
//! (`sha256sum -c` format). Existing complete outputs are reused.

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::pipeline::StepError;
use crate::registry::locate::file_digest;

use super::fsutil::{self, io_error};
use super::idmap::Shift;
use super::tools;

/// Space left free in the ext4 image beyond the tree's own blocks: a fifth
/// of the data plus this (journal and metadata).
const EXT4_HEADROOM: u64 = 64 << 20;

/// The sidecar of an output file.
pub(crate) fn sidecar(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".sha256");
    PathBuf::from(name)
}

/// Where an output is written before it is complete.
pub(crate) fn partial(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// The digest of a complete output: the file and its sidecar exist and
/// agree. `None` when it must be (re)made.
pub(crate) fn complete(path: &Path) -> Option<String> {
    let recorded = fs::read_to_string(sidecar(path)).ok()?;
    let hex = recorded.split_whitespace().next()?.to_string();
    let digest = file_digest(path).ok()?;
    (digest == format!("sha256:{hex}")).then_some(digest)
}

/// Renames the finished `partial` into place and writes the sidecar;
/// returns `sha256:<hex>`.
pub(crate) fn finish(path: &Path) -> Result<String, StepError> {
    let tmp = partial(path);
    let digest = file_digest(&tmp).map_err(io_error(tmp.display()))?;
    fs::rename(&tmp, path).map_err(io_error(path.display()))?;
    let hex = digest.trim_start_matches("sha256:");
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let side = sidecar(path);
    fs::write(&side, format!("{hex}  {name}\n")).map_err(io_error(side.display()))?;
    Ok(digest)
}

/// Blocks and inodes a tree needs.
pub(crate) fn tree_usage(root: &Path) -> io::Result<(u64, u64)> {
    let (mut bytes, mut inodes) = (0u64, 0u64);
    for entry in walkdir::WalkDir::new(root).follow_links(false) {
        let entry = entry.map_err(io::Error::other)?;
        let meta = entry.path().symlink_metadata()?;
        inodes += 1;
        bytes += if meta.is_file() || meta.file_type().is_symlink() {
            meta.len().div_ceil(4096) * 4096
        } else {
            4096
        };
    }
    Ok((bytes, inodes))
}

/// Refuses to write a filesystem of `bytes` of files into the sparse file
/// `raw` when the host file system lacks the room: the files plus a tenth
/// and [`EXT4_HEADROOM`] for metadata (the compressed qcow2 made from it
/// afterwards takes less again).
pub(crate) fn ensure_room_for_tree(raw: &Path, bytes: u64, what: &str) -> Result<(), StepError> {
    fsutil::ensure_free_space(raw, bytes + bytes / 10 + EXT4_HEADROOM, what)
}

/// Makes `qcow2` from the tree: `mke2fs -d` into the sparse `raw` scratch
/// file, then `qemu-img convert -c -O qcow2`. The raw file is removed.
pub(crate) fn make_qcow2(
    root: &Path,
    raw: &Path,
    qcow2: &Path,
    label: &str,
) -> Result<String, StepError> {
    let (bytes, inodes) = tree_usage(root).map_err(io_error(root.display()))?;
    let size = (bytes + bytes / 5 + inodes * 256 + EXT4_HEADROOM).div_ceil(1 << 20) << 20;
    let inode_count = inodes + inodes / 4 + 1024;
    let _ = fs::remove_file(raw);
    ensure_room_for_tree(raw, bytes, "the ext4 image")?;
    let file = fs::File::create(raw).map_err(io_error(raw.display()))?;
    file.set_len(size).map_err(io_error(raw.display()))?;
    drop(file);
    let label: String = label.chars().take(16).collect();
    let result = (|| -> Result<(), StepError> {
        tools::run(
            Command::new("mke2fs")
                .args([
                    "-q",
                    "-F",
                    "-t",
                    "ext4",
                    "-b",
                    "4096",
                    "-E",
                    "root_owner=0:0",
                ])
                .arg("-N")
                .arg(inode_count.to_string())
                .arg("-L")
                .arg(&label)
                .arg("-d")
                .arg(root)
                .arg(raw),
            "mke2fs",
        )?;
        compress(raw, qcow2)
    })();
    let _ = fs::remove_file(raw);
    result?;
    tracing::info!(image = %qcow2.display(), size_mib = size >> 20, inodes = inode_count, "ext4 image written");
    finish(qcow2)
}

/// Converts `raw` to a compressed qcow2 at `partial(qcow2)` and checks it
/// with `qemu-img check`.
pub(crate) fn compress(raw: &Path, qcow2: &Path) -> Result<(), StepError> {
    tools::run(
        Command::new("qemu-img")
            // -W: out-of-order writes let the compression use every core.
            .args(["convert", "-c", "-W", "-f", "raw", "-O", "qcow2"])
            .arg(raw)
            .arg(partial(qcow2)),
        "qemu-img convert",
    )?;
    tools::run(
        Command::new("qemu-img")
            .args(["check", "-q", "-f", "qcow2"])
            .arg(partial(qcow2)),
        "qemu-img check of the captured image",
    )?;
    Ok(())
}

/// zstd level of the archive when it is the build's only image.
pub(crate) const TREE_ARCHIVE_LEVEL: i32 = 3;
/// zstd level of the archive beside a whole disk: the secondary artifact,
/// made while the disk is written; level 3 made it the slowest part of a
/// build on a kept base (1.6 s against 1.0 s for the disk; level 3's
/// archive of the demo's tree is 12% smaller).
pub(crate) const DISK_ARCHIVE_LEVEL: i32 = 1;

/// Makes a zstd-compressed tar of the tree (sorted, numeric owners, links
/// kept as links, hard links as hard links, FIFOs and device nodes).
pub(crate) fn make_tar_zst(root: &Path, out: &Path, level: i32) -> Result<String, StepError> {
    let tmp = partial(out);
    let file = fs::File::create(&tmp).map_err(io_error(tmp.display()))?;
    let mut encoder = zstd::stream::write::Encoder::new(BufWriter::new(file), level)
        .map_err(io_error(tmp.display()))?;
    let workers = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    encoder
        .multithread(workers)
        .map_err(io_error("zstd workers"))?;
    let mut builder = tar::Builder::new(encoder);
    write_tree(&mut builder, root).map_err(io_error(format!("archiving {}", root.display())))?;
    let encoder = builder.into_inner().map_err(io_error(tmp.display()))?;
    let mut writer = encoder.finish().map_err(io_error(tmp.display()))?;
    writer.flush().map_err(io_error(tmp.display()))?;
    writer
        .into_inner()
        .map_err(|e| io_error(tmp.display())(e.into_error()))?
        .sync_all()
        .map_err(io_error(tmp.display()))?;
    finish(out)
}

/// Appends every entry below `root` to the archive, sorted.
fn write_tree<W: Write>(builder: &mut tar::Builder<W>, root: &Path) -> io::Result<()> {
    let mut hard_links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    for entry in walkdir::WalkDir::new(root)
        .follow_links(false)
        .min_depth(1)
        .sort_by_file_name()
    {
        let entry = entry.map_err(io::Error::other)?;
        let rel = entry
            .path()
            .strip_prefix(root)
            .map_err(io::Error::other)?
            .to_path_buf();
        let meta = entry.path().symlink_metadata()?;
        let ft = meta.file_type();
        if ft.is_socket() {
            continue;
        }
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
        // An overlay's tree still has the sandbox's ids: the image's own.
        let id = |n: u32| Shift::Out.map(n).unwrap_or(n);
        header.set_uid(u64::from(id(meta.uid())));
        header.set_gid(u64::from(id(meta.gid())));
        header.set_size(0);
        if ft.is_file() {
            if meta.nlink() > 1 {
                if let Some(first) = hard_links.get(&(meta.dev(), meta.ino())) {
                    header.set_entry_type(tar::EntryType::Link);
                    builder.append_link(&mut header, &rel, first)?;
                    continue;
                }
                hard_links.insert((meta.dev(), meta.ino()), rel.clone());
            }
            header.set_size(meta.len());
            builder.append_data(&mut header, &rel, fs::File::open(entry.path())?)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(entry.path())?;
            builder.append_link(&mut header, &rel, target)?;
        } else {
            if ft.is_char_device() || ft.is_block_device() {
                let rdev = meta.rdev();
                header.set_device_major(major(rdev))?;
                header.set_device_minor(minor(rdev))?;
            }
            builder.append_data(&mut header, &rel, io::empty())?;
        }
    }
    Ok(())
}

/// The major number of a Linux device id.
fn major(dev: u64) -> u32 {
    (((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff)) as u32
}

/// The minor number of a Linux device id.
fn minor(dev: u64) -> u32 {
    (((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_split_like_glibc() {
        // makedev(8, 1) and makedev(259, 65536)
        assert_eq!((major(0x801), minor(0x801)), (8, 1));
        let (ma, mi): (u64, u64) = (259, 65536);
        let big = ((ma & 0xfff) << 8) | ((ma & !0xfff) << 32) | (mi & 0xff) | ((mi & !0xff) << 12);
        assert_eq!((major(big), minor(big)), (259, 65536));
    }

    #[test]
    fn a_sidecar_that_disagrees_means_incomplete() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("x.tar.zst");
        fs::write(partial(&out), b"data").unwrap();
        let digest = finish(&out).unwrap();
        assert_eq!(complete(&out), Some(digest.clone()));
        let text = fs::read_to_string(sidecar(&out)).unwrap();
        assert_eq!(
            text,
            format!("{}  x.tar.zst\n", digest.trim_start_matches("sha256:"))
        );
        fs::write(&out, b"changed").unwrap();
        assert_eq!(complete(&out), None);
    }
}
