//! Reading an ext4 disk image (raw or qcow2) into a directory without
//! mounting it: `qemu-img convert -O raw`, `debugfs -R "rdump / DIR"`, and
//! FIFOs and device nodes (which rdump skips) recreated from `debugfs`
//! listings.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::pipeline::StepError;
use crate::recipe::LocalBaseKind;

use super::base::BaseSource;
use super::fsutil::io_error;
use super::tools;

/// File type bits of an inode mode.
const S_IFMT: u32 = 0o170000;
/// A FIFO.
const S_IFIFO: u32 = 0o010000;
/// A character device.
const S_IFCHR: u32 = 0o020000;
/// A block device.
const S_IFBLK: u32 = 0o060000;

/// A special file found in the image's listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SpecialFile {
    /// Path inside the image (absolute).
    pub path: String,
    /// Full inode mode (type and permission bits).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// Unpacks an ext4 image into `root` (an empty directory).
pub(crate) fn unpack_disk(
    source: &BaseSource,
    root: &Path,
    scratch: &Path,
) -> Result<(), StepError> {
    let raw = match source.kind {
        LocalBaseKind::Qcow2 => {
            let raw = scratch.join("base.raw");
            tools::run(
                Command::new("qemu-img")
                    .args(["convert", "-f", "qcow2", "-O", "raw"])
                    .arg(&source.path)
                    .arg(&raw),
                "qemu-img convert",
            )?;
            Some(raw)
        }
        _ => None,
    };
    let image = raw.as_deref().unwrap_or(&source.path);
    let result = read_image(image, root, scratch);
    if let Some(raw) = &raw {
        let _ = fs::remove_file(raw);
    }
    result.map_err(|e| match e {
        StepError::NonRetryable(m) => StepError::NonRetryable(format!(
            "base {} (an ext4 image is expected): {m}",
            source.path.display()
        )),
        other => other,
    })
}

/// Dumps the image into `root` and recreates its special files.
fn read_image(image: &Path, root: &Path, scratch: &Path) -> Result<(), StepError> {
    debugfs(
        image,
        &format!("rdump / {}", quote(&root.display().to_string())?),
    )?;
    let dirs = directories(root)?;
    let specials = special_files(image, &dirs, scratch)?;
    recreate(image, root, &specials, scratch)?;
    // mke2fs's lost+found is file system metadata, not content.
    let lost = root.join("lost+found");
    if fs::read_dir(&lost).is_ok_and(|mut d| d.next().is_none()) {
        let _ = fs::remove_dir(&lost);
    }
    Ok(())
}

/// Runs one debugfs request (`-R`) read-only; returns stdout. debugfs
/// exits 0 even when it fails, so anything on stderr but its banner is an
/// error.
fn debugfs(image: &Path, request: &str) -> Result<String, StepError> {
    let output = tools::run(
        Command::new("debugfs").arg("-R").arg(request).arg(image),
        "debugfs",
    )?;
    check_stderr(&output.stderr, request)?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs a debugfs command file (`-f`); returns stdout.
fn debugfs_file(image: &Path, commands: &str, scratch: &Path) -> Result<String, StepError> {
    let file = scratch.join(".bakehouse-debugfs-commands");
    fs::write(&file, commands).map_err(io_error(file.display()))?;
    let output = tools::run(
        Command::new("debugfs").arg("-f").arg(&file).arg(image),
        "debugfs",
    );
    let _ = fs::remove_file(&file);
    let output = output?;
    check_stderr(&output.stderr, "command file")?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// An error when debugfs printed anything but its banner.
fn check_stderr(stderr: &[u8], request: &str) -> Result<(), StepError> {
    let text = String::from_utf8_lossy(stderr);
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !is_banner(l))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(StepError::NonRetryable(format!(
            "debugfs {request}: {}",
            errors.join("; ")
        )))
    }
}

/// Whether a line is debugfs's version banner.
fn is_banner(line: &str) -> bool {
    line.strip_prefix("debugfs ")
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
}

/// A path quoted for a debugfs command line.
fn quote(path: &str) -> Result<String, StepError> {
    if path.contains(['"', '\n']) {
        return Err(StepError::NonRetryable(format!(
            "path {path:?} cannot be passed to debugfs"
        )));
    }
    Ok(format!("\"{path}\""))
}

/// Every directory of the dumped tree, as absolute image paths, sorted.
fn directories(root: &Path) -> Result<Vec<String>, StepError> {
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
    {
        let entry = entry
            .map_err(|e| StepError::NonRetryable(format!("reading {}: {e}", root.display())))?;
        if entry.file_type().is_dir() {
            let rel = entry.path().strip_prefix(root).unwrap_or(Path::new(""));
            out.push(format!("/{}", rel.display()));
        }
    }
    Ok(out)
}

/// Lists `dirs` in the image and returns its FIFOs and device nodes.
fn special_files(
    image: &Path,
    dirs: &[String],
    scratch: &Path,
) -> Result<Vec<SpecialFile>, StepError> {
    let mut commands = String::new();
    let mut listed = Vec::new();
    for dir in dirs {
        match quote(dir) {
            Ok(q) => {
                let _ = writeln!(commands, "ls -p {q}");
                listed.push(dir.clone());
            }
            Err(e) => tracing::warn!(%dir, "skipping special files: {e}"),
        }
    }
    if listed.is_empty() {
        return Ok(Vec::new());
    }
    let output = debugfs_file(image, &commands, scratch)?;
    Ok(parse_listings(&output, &listed))
}

/// Parses the output of `ls -p DIR` commands (each echoed as
/// `debugfs: ls -p ...`) run for `dirs` in order.
pub(crate) fn parse_listings(output: &str, dirs: &[String]) -> Vec<SpecialFile> {
    let mut out = Vec::new();
    let mut current: Option<&String> = None;
    let mut next = dirs.iter();
    for line in output.lines() {
        if line.starts_with("debugfs: ") {
            current = next.next();
            continue;
        }
        let Some(dir) = current else { continue };
        let Some(fields) = line.strip_prefix('/') else {
            continue;
        };
        let parts: Vec<&str> = fields.splitn(6, '/').collect();
        let [_ino, mode, uid, gid, name, _rest] = parts[..] else {
            continue;
        };
        let (Ok(mode), Ok(uid), Ok(gid)) = (
            u32::from_str_radix(mode, 8),
            uid.parse::<u32>(),
            gid.parse::<u32>(),
        ) else {
            continue;
        };
        if matches!(mode & S_IFMT, S_IFIFO | S_IFCHR | S_IFBLK) && !name.is_empty() {
            let path = if dir == "/" {
                format!("/{name}")
            } else {
                format!("{dir}/{name}")
            };
            out.push(SpecialFile {
                path,
                mode,
                uid,
                gid,
            });
        }
    }
    out
}

/// Device numbers from `stat` outputs (`Device major/minor number: 08:00`),
/// one per echoed `debugfs: stat` command.
pub(crate) fn parse_device_numbers(output: &str) -> Vec<Option<(u32, u32)>> {
    let mut out: Vec<Option<(u32, u32)>> = Vec::new();
    for line in output.lines() {
        if line.starts_with("debugfs: ") {
            out.push(None);
        } else if let Some(rest) = line.split("Device major/minor number:").nth(1) {
            let numbers = rest.split_whitespace().next().unwrap_or_default();
            if let (Some(last), Some((major, minor))) = (out.last_mut(), numbers.split_once(':')) {
                if let (Ok(major), Ok(minor)) = (major.parse(), minor.parse()) {
                    *last = Some((major, minor));
                }
            }
        }
    }
    out
}

/// Makes the FIFOs and device nodes debugfs listed.
fn recreate(
    image: &Path,
    root: &Path,
    specials: &[SpecialFile],
    scratch: &Path,
) -> Result<(), StepError> {
    if specials.is_empty() {
        return Ok(());
    }
    let devices: Vec<&SpecialFile> = specials
        .iter()
        .filter(|s| matches!(s.mode & S_IFMT, S_IFCHR | S_IFBLK))
        .collect();
    let mut numbers = Vec::new();
    if !devices.is_empty() {
        let mut commands = String::new();
        for d in &devices {
            let _ = writeln!(commands, "stat {}", quote(&d.path)?);
        }
        numbers = parse_device_numbers(&debugfs_file(image, &commands, scratch)?);
    }
    let mut device_numbers = devices
        .iter()
        .zip(numbers)
        .map(|(d, n)| (d.path.clone(), n));
    for special in specials {
        let host: PathBuf = root.join(special.path.trim_start_matches('/'));
        let mode = format!("{:o}", special.mode & 0o7777);
        let mut cmd = Command::new("mknod");
        cmd.arg("-m").arg(&mode).arg(&host);
        match special.mode & S_IFMT {
            S_IFIFO => {
                cmd.arg("p");
            }
            kind => {
                let numbers = device_numbers
                    .find(|(p, _)| *p == special.path)
                    .and_then(|(_, n)| n)
                    .ok_or_else(|| {
                        StepError::NonRetryable(format!(
                            "debugfs: no device numbers for {}",
                            special.path
                        ))
                    })?;
                cmd.arg(if kind == S_IFCHR { "c" } else { "b" })
                    .arg(numbers.0.to_string())
                    .arg(numbers.1.to_string());
            }
        }
        if fs::symlink_metadata(&host).is_ok() {
            fs::remove_file(&host).map_err(io_error(host.display()))?;
        }
        tools::run(&mut cmd, "mknod")?;
        std::os::unix::fs::lchown(&host, Some(special.uid), Some(special.gid))
            .map_err(io_error(host.display()))?;
    }
    tracing::debug!(count = specials.len(), "recreated FIFOs and device nodes");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_yield_fifos_and_devices_with_their_directory() {
        let out = "debugfs: ls -p \"/\"\n/2/040755/0/0/.//\n/12/100644/0/0/a/3/\n\
                   debugfs: ls -p \"/dev\"\n/15/040755/0/0/.//\n/16/020666/0/0/null/0/\n/17/060660/0/6/sda/0/\n\
                   debugfs: ls -p \"/etc\"\n/18/010600/1000/1000/fifo/0/\n";
        let dirs = vec!["/".to_string(), "/dev".to_string(), "/etc".to_string()];
        let found = parse_listings(out, &dirs);
        assert_eq!(
            found,
            vec![
                SpecialFile {
                    path: "/dev/null".into(),
                    mode: 0o020666,
                    uid: 0,
                    gid: 0
                },
                SpecialFile {
                    path: "/dev/sda".into(),
                    mode: 0o060660,
                    uid: 0,
                    gid: 6
                },
                SpecialFile {
                    path: "/etc/fifo".into(),
                    mode: 0o010600,
                    uid: 1000,
                    gid: 1000
                },
            ]
        );
    }

    #[test]
    fn device_numbers_follow_the_stat_commands() {
        let out = "debugfs: stat \"/dev/null\"\nInode: 16   Type: character special\n\
                   Device major/minor number: 01:03 (hex 01:03)\n\
                   debugfs: stat \"/dev/sda\"\nDevice major/minor number: 08:00 (hex 08:00)\n\
                   debugfs: stat \"/dev/odd\"\nno numbers here\n";
        assert_eq!(
            parse_device_numbers(out),
            vec![Some((1, 3)), Some((8, 0)), None]
        );
    }

    #[test]
    fn the_banner_is_not_an_error() {
        assert!(check_stderr(b"debugfs 1.47.0 (5-Feb-2023)\n", "x").is_ok());
        let err = check_stderr(
            b"debugfs 1.47.0 (5-Feb-2023)\ndebugfs: Bad magic number in super-block while trying to open x\n",
            "rdump",
        )
        .unwrap_err();
        assert!(err.to_string().contains("Bad magic number"), "{err}");
    }
}
