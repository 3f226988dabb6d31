//! Reading an ext4 disk image (raw or qcow2) into a directory without
//! mounting it, and without letting the image act on host paths: every
//! tool that reads the untrusted image runs in the tool sandbox
//! ([`Layout::tools`]: the same namespaces, uid map and seccomp filters as
//! provisioners, the host's programs read-only, and only the base, the
//! build's scratch directory and the output tree bound in). So
//! `qemu-img convert -O raw` can open no backing file at a host path, and
//! `debugfs -R "rdump / DIR"`, steered by a crafted image through
//! symlinks, absolute paths or duplicate names, writes nowhere but the
//! sandbox. FIFOs and device nodes, which rdump skips, are made afterwards
//! from debugfs listings, each below its parent resolved inside the tree.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::pipeline::StepError;
use crate::recipe::LocalBaseKind;

use super::base::BaseSource;
use super::cgroup::BuildCgroup;
use super::fsutil::{io_error, resolve_in_root};
use super::idmap::give_to_sandbox;
use super::layout::{self, DiskLayout};
use super::sandbox::{run_sandboxed, Layout};
use super::tools;

/// File type bits of an inode mode.
const S_IFMT: u32 = 0o170000;
/// A FIFO.
const S_IFIFO: u32 = 0o010000;
/// A character device.
const S_IFCHR: u32 = 0o020000;
/// A block device.
const S_IFBLK: u32 = 0o060000;

/// Where the base is inside the tool sandbox.
const IN_BASE: &str = "/in/base";
/// Where the build's scratch directory is inside the tool sandbox.
const IN_WORK: &str = "/work";
/// Where the output tree is inside the tool sandbox.
const IN_OUT: &str = "/out";
/// The raw copy of a whole-disk base in the build's scratch directory,
/// kept from launch to capture.
pub(crate) const BASE_RAW: &str = "base.raw";

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

/// Runs host tools over the base in the tool sandbox of a build.
pub(crate) struct Tools<'a> {
    /// The build's control group.
    pub cgroup: &'a BuildCgroup,
    /// When the build's time runs out.
    pub deadline: Option<Instant>,
    /// The build, for logs.
    pub build_id: &'a str,
    /// The base file.
    pub base: &'a Path,
    /// The build's scratch directory (`/work` inside).
    pub scratch: &'a Path,
    /// The output tree (`/out` inside).
    pub root: &'a Path,
}

impl Tools<'_> {
    /// Runs `script` with `sh -c`, its stdout and stderr sent to files in
    /// the scratch directory; returns (stdout, stderr). A non-zero exit is
    /// an error naming `label`.
    async fn sh(&self, label: &str, script: &str) -> Result<(String, String), StepError> {
        let layout = Layout::tools()
            .file(self.base, IN_BASE)
            .dir(self.scratch, IN_WORK, true)
            .dir(self.root, IN_OUT, true);
        let argv = [
            "/bin/sh".to_string(),
            "-c".to_string(),
            format!(
                "{{ {script}
}} >{IN_WORK}/.stdout 2>{IN_WORK}/.stderr"
            ),
        ];
        let result = run_sandboxed(
            &layout,
            label,
            &argv,
            self.cgroup,
            self.deadline,
            self.build_id,
        )
        .await?;
        let stdout = read_plain(&self.scratch.join(".stdout"))?;
        let stderr = read_plain(&self.scratch.join(".stderr"))?;
        if result.status != 0 {
            return Err(StepError::NonRetryable(format!(
                "{label} failed (exit {}): {}",
                result.status,
                tools::tail(&stderr, 10)
            )));
        }
        Ok((stdout, stderr))
    }

    /// Runs one debugfs request over `image` (a path inside the sandbox)
    /// read-only; returns stdout. debugfs exits 0 even when it fails, so
    /// anything on stderr but its banner is an error.
    async fn debugfs(&self, image: &str, request: &str) -> Result<String, StepError> {
        let (stdout, stderr) = self
            .sh(
                "debugfs",
                &format!("debugfs -R {} {image}", sh_word(request)),
            )
            .await?;
        check_stderr(stderr.as_bytes(), request)?;
        Ok(stdout)
    }

    /// Runs a debugfs command file over `image`; returns stdout.
    async fn debugfs_file(&self, image: &str, commands: &str) -> Result<String, StepError> {
        let file = self.scratch.join(".debugfs-commands");
        fs::write(&file, commands).map_err(io_error(file.display()))?;
        let out = self
            .sh(
                "debugfs",
                &format!("debugfs -f {IN_WORK}/.debugfs-commands {image}"),
            )
            .await;
        let _ = fs::remove_file(&file);
        let (stdout, stderr) = out?;
        check_stderr(stderr.as_bytes(), "command file")?;
        Ok(stdout)
    }
}

/// A file the sandbox wrote, read without following a link it may have
/// put there instead.
fn read_plain(path: &Path) -> Result<String, StepError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io_error(path.display()))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(io_error(path.display()))?;
    let _ = fs::remove_file(path);
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// A word quoted for `sh`.
fn sh_word(s: &str) -> String {
    super::fsutil::sh_quote(s)
}

/// Unpacks a disk image into `root` (an empty directory): a bare ext
/// filesystem, or a whole disk (MBR or GPT) whose ext filesystems are read
/// into their mount points (see [`super::layout`]); returns the disk's
/// layout for capture in the second case. The raw copy of a qcow2 whole
/// disk stays in the scratch directory (`base.raw`) for capture.
pub(crate) async fn unpack_disk(
    source: &BaseSource,
    tools: &Tools<'_>,
) -> Result<Option<DiskLayout>, StepError> {
    for dir in [tools.scratch, tools.root] {
        give_to_sandbox(dir).map_err(io_error(dir.display()))?;
    }
    let image = match source.kind {
        LocalBaseKind::Qcow2 => {
            tools
                .sh(
                    "qemu-img convert",
                    &format!("qemu-img convert -f qcow2 -O raw {IN_BASE} {IN_WORK}/base.raw"),
                )
                .await?;
            format!("{IN_WORK}/base.raw")
        }
        _ => IN_BASE.to_string(),
    };
    let result = async {
        match probe_layout(&image, tools).await? {
            None => {
                read_image(&image, "/", tools).await?;
                Ok(None)
            }
            Some(layout) => {
                for m in &layout.mounted {
                    let spec = format!("{image}?offset={}", m.partition.offset);
                    read_image(&spec, &m.mountpoint, tools).await?;
                }
                for m in &layout.fat {
                    read_fat(&image, m, tools).await?;
                }
                Ok(Some(layout))
            }
        }
    }
    .await;
    let kept = tools.scratch.join(BASE_RAW);
    match &result {
        // Capture writes the tree back into a copy of the base disk.
        Ok(Some(_)) if source.kind == LocalBaseKind::Raw => {
            tools::run(
                Command::new("cp")
                    .args(["--sparse=always", "--reflink=auto", "--"])
                    .arg(&source.path)
                    .arg(&kept),
                "copying the base disk",
            )?;
        }
        Ok(Some(_)) => {}
        _ => {
            let _ = fs::remove_file(&kept);
        }
    }
    result.map_err(|e| match e {
        StepError::NonRetryable(m) => {
            StepError::NonRetryable(format!("base {}: {m}", source.path.display()))
        }
        other => other,
    })
}

/// Grows the build's raw copy of a whole-disk base to `size` bytes
/// (`builder.disk_size`): the end of the table moves (GPT's backup header
/// relocated to the new end) and the last partition takes the new space,
/// with its number, type and UUID kept. That partition must hold an ext
/// filesystem the image mounts, which capture makes again at the new size;
/// anything else after it, or a smaller size, is refused. The table tools
/// read the untrusted image in the tool sandbox, like everything at launch.
pub(crate) async fn grow(
    layout: &mut DiskLayout,
    size: u64,
    tools: &Tools<'_>,
) -> Result<(), StepError> {
    let raw = tools.scratch.join(BASE_RAW);
    let current = fs::metadata(&raw).map_err(io_error(raw.display()))?.len();
    let refuse = |why: String| {
        StepError::NonRetryable(format!(
            "builder.disk_size: {why} (base {})",
            tools.base.display()
        ))
    };
    if size < current {
        return Err(refuse(format!(
            "{} MiB is smaller than the base disk ({} MiB): a disk only grows",
            size >> 20,
            current >> 20
        )));
    }
    if size == current {
        return Ok(());
    }
    let last = layout
        .table
        .partitions
        .iter()
        .max_by_key(|p| p.offset + p.size)
        .ok_or_else(|| refuse("the base disk has no partitions".to_string()))?
        .clone();
    let Some(index) = layout
        .mounted
        .iter()
        .position(|m| m.partition.number == last.number)
    else {
        return Err(refuse(format!(
            "the last partition, {}, is not an ext filesystem the image mounts, so it cannot take the new space",
            last.describe()
        )));
    };
    if layout.table.label == "dos" && last.number > 4 {
        return Err(refuse(format!(
            "the last partition, {}, is a logical partition: only primary ones grow",
            last.describe()
        )));
    }
    let file = fs::OpenOptions::new()
        .write(true)
        .open(&raw)
        .map_err(io_error(raw.display()))?;
    file.set_len(size).map_err(io_error(raw.display()))?;
    drop(file);
    // The copy of a raw base was made by the host; sfdisk runs as the
    // sandbox's root.
    give_to_sandbox(&raw).map_err(io_error(raw.display()))?;
    let image = format!("{IN_WORK}/{BASE_RAW}");
    let relocate = if layout.table.label == "gpt" {
        format!("sfdisk --quiet --relocate gpt-bak-std {image} && ")
    } else {
        String::new()
    };
    let (json, _) = tools
        .sh(
            "growing the disk",
            &format!(
                "{relocate}echo ', +' | sfdisk --quiet --no-reread --no-tell-kernel -N {} {image} >/dev/null && sfdisk --json {image}",
                last.number
            ),
        )
        .await?;
    let grown = layout::parse_sfdisk(&json)
        .ok()
        .and_then(|t| t.partitions.into_iter().find(|p| p.number == last.number))
        .filter(|p| p.offset == last.offset && p.size > last.size)
        .ok_or_else(|| refuse(format!("{} did not grow", last.describe())))?;
    tracing::info!(
        partition = last.number,
        from_mib = last.size >> 20,
        to_mib = grown.size >> 20,
        disk_mib = size >> 20,
        "disk grown"
    );
    layout.mounted[index].partition.size = grown.size;
    for p in layout
        .table
        .partitions
        .iter_mut()
        .filter(|p| p.number == last.number)
    {
        p.size = grown.size;
    }
    Ok(())
}

/// The whole-disk layout of `image`, or `None` when it has no partition
/// table (a bare filesystem).
async fn probe_layout(image: &str, tools: &Tools<'_>) -> Result<Option<DiskLayout>, StepError> {
    let (json, _) = tools
        .sh(
            "sfdisk",
            &format!("sfdisk --json {image} 2>/dev/null || true"),
        )
        .await?;
    if json.trim().is_empty() {
        return Ok(None);
    }
    let mut table = layout::parse_sfdisk(&json).map_err(StepError::NonRetryable)?;
    let mut script = String::new();
    for p in &table.partitions {
        let _ = write!(
            script,
            "echo '@@ {}'; blkid -p -O {} -o export {image} || true; ",
            p.number, p.offset
        );
    }
    let (found, _) = tools.sh("blkid", &script).await?;
    layout::apply_blkid(&mut table, &found);
    let mut script = String::new();
    for p in table.partitions.iter().filter(|p| p.is_ext()) {
        let spec = sh_word(&format!("{image}?offset={}", p.offset));
        let _ = write!(
            script,
            "echo '@@ {}'; debugfs -R 'cat /etc/fstab' {spec} 2>/dev/null; ",
            p.number
        );
    }
    let (fstabs, _) = tools.sh("debugfs cat /etc/fstab", &script).await?;
    let by_number = layout::sections(&fstabs);
    let mut layout = layout::resolve_mounts(&table, |p| {
        by_number
            .iter()
            .find(|(n, t)| *n == p.number && !t.trim().is_empty())
            .map(|(_, t)| t.clone())
    })
    .map_err(StepError::NonRetryable)?;
    for m in &mut layout.mounted {
        let spec = format!("{image}?offset={}", m.partition.offset);
        let stats = tools.debugfs(&spec, "stats").await?;
        m.ext = layout::ExtParams::parse_stats(&stats);
        if m.ext.block_size == 0 || m.ext.features.is_empty() {
            return Err(StepError::NonRetryable(format!(
                "{} (mounted at {}): debugfs reports no block size or features",
                m.partition.describe(),
                m.mountpoint
            )));
        }
    }
    tracing::info!(table = %layout.table.label, mounts = ?layout::mount_map(&layout), "whole-disk base");
    Ok(Some(layout))
}

/// Copies the FAT filesystem of `m` (the EFI system partition) into the
/// tree at its mount point with mtools, in the tool sandbox. FAT has no
/// owners, links or special files: everything becomes root's.
async fn read_fat(image: &str, m: &layout::Mounted, tools: &Tools<'_>) -> Result<(), StepError> {
    let inside = sh_word(&format!("{IN_OUT}{}", m.mountpoint));
    let spec = sh_word(&format!("{image}@@{}", m.partition.offset));
    tools
        .sh(
            "mcopy",
            &format!(
                "export MTOOLS_SKIP_CHECK=1; mkdir -p {inside} && \
                 if [ -n \"$(mdir -b -i {spec} ::/)\" ]; then mcopy -s -m -n -i {spec} '::/*' {inside}/; fi"
            ),
        )
        .await?;
    Ok(())
}

/// Dumps the filesystem `image` (a path inside the tool sandbox, with an
/// `?offset=` for a partition) into the tree at `mountpoint`, and recreates
/// its special files.
async fn read_image(image: &str, mountpoint: &str, tools: &Tools<'_>) -> Result<(), StepError> {
    let inside = format!("{IN_OUT}{}", mountpoint.trim_end_matches('/'));
    if mountpoint != "/" {
        tools
            .sh("mkdir", &format!("mkdir -p {}", sh_word(&inside)))
            .await?;
    }
    tools.debugfs(image, &format!("rdump / {inside}")).await?;
    let sub = tools.root.join(mountpoint.trim_start_matches('/'));
    if !super::fsutil::is_real_dir(&sub) {
        return Err(StepError::NonRetryable(format!(
            "mount point {mountpoint} in the image is not a directory"
        )));
    }
    let dirs = directories(&sub)?;
    let specials = special_files(image, &dirs, tools).await?;
    recreate(image, mountpoint, &specials, tools).await?;
    // mke2fs's lost+found is file system metadata, not content.
    let lost = sub.join("lost+found");
    if fs::read_dir(&lost).is_ok_and(|mut d| d.next().is_none()) {
        let _ = fs::remove_dir(&lost);
    }
    Ok(())
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
async fn special_files(
    image: &str,
    dirs: &[String],
    tools: &Tools<'_>,
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
    let output = tools.debugfs_file(image, &commands).await?;
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

/// Makes the FIFOs and device nodes debugfs listed, each in its parent
/// directory resolved inside the tree (a link in the tree never leads the
/// node onto the host).
async fn recreate(
    image: &str,
    mountpoint: &str,
    specials: &[SpecialFile],
    tools: &Tools<'_>,
) -> Result<(), StepError> {
    let root = tools.root;
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
        numbers = parse_device_numbers(&tools.debugfs_file(image, &commands).await?);
    }
    let mut device_numbers = devices
        .iter()
        .zip(numbers)
        .map(|(d, n)| (d.path.clone(), n));
    for special in specials {
        let in_image = Path::new(mountpoint).join(special.path.trim_start_matches('/'));
        let (Some(parent), Some(name)) = (in_image.parent(), in_image.file_name()) else {
            continue;
        };
        let dir = resolve_in_root(root, parent, true).map_err(io_error(&special.path))?;
        if !dir.starts_with(root) || !super::fsutil::is_real_dir(&dir) {
            tracing::warn!(path = %special.path, "skipping a special file whose directory is not in the tree");
            continue;
        }
        let host = dir.join(name);
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
            super::fsutil::remove_path(&host).map_err(io_error(host.display()))?;
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
