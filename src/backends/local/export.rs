//! A qcow2 disk shown as a raw file, so that e2fsprogs (which reads raw
//! images only) can work on a captured disk without converting it: QEMU's
//! `qemu-storage-daemon` exports the image over FUSE onto a regular file in
//! the build's work directory.
//!
//! Only images bakehouse wrote itself are exported (a captured artifact,
//! or a throwaway overlay over one), so the daemon, which runs on the host
//! as root, parses no qcow2 metadata from outside; the filesystem inside
//! is untrusted and is only read or written by tools in the tool sandbox.
//! The mount is recorded in the build's ledger before it is made
//! ([`crate::build::ResourceKind::Mount`]); teardown and `builds gc` detach
//! whatever a kill left ([`detach_mounts_below`]).

use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::build::ResourceKind;
use crate::pipeline::{BuildContext, StepError};

use super::cgroup::{self, BuildCgroup};
use super::fsutil::{blocking, io_error};
use super::idmap::give_to_sandbox;
use super::sandbox::{run_sandboxed, Layout, RunResult};

/// How long the daemon may take to show the export.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long it may take to flush and exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A running export of one image.
pub(crate) struct DiskExport {
    /// The raw view (a FUSE mount on a regular file).
    pub path: PathBuf,
    daemon: Option<std::process::Child>,
}

impl DiskExport {
    /// Exports `image` (qcow2) onto `path` (created empty), readable and,
    /// with `writable`, writable by the sandbox's ids.
    /// The daemon runs in the build's control group, so cancelling or
    /// collecting the build kills it.
    pub fn start(
        image: &Path,
        path: &Path,
        writable: bool,
        cgroup: &BuildCgroup,
    ) -> Result<DiskExport, StepError> {
        let what = format!("exporting {} as a raw file", image.display());
        fs::File::create(path).map_err(io_error(path.display()))?;
        let path = &path.canonicalize().map_err(io_error(path.display()))?;
        let groups = cgroup.procs_files().map_err(io_error(&what))?;
        let group_fds = cgroup::raw(&groups);
        let file_arg = format!(
            "driver=file,node-name=file,filename={},read-only={}",
            comma_escaped(image),
            if writable { "off" } else { "on" }
        );
        let export_arg = format!(
            "type=fuse,id=raw,node-name=disk,mountpoint={},writable={},allow-other=on",
            comma_escaped(path),
            if writable { "on" } else { "off" }
        );
        let mut daemon = std::process::Command::new("qemu-storage-daemon");
        daemon
            .arg("--blockdev")
            .arg(file_arg)
            .arg("--blockdev")
            .arg(format!(
                "driver=qcow2,node-name=disk,file=file,read-only={}",
                if writable { "off" } else { "on" }
            ))
            .arg("--export")
            .arg(export_arg)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        // SAFETY: async-signal-safe calls only (write) in the child. No
        // parent-death signal: it follows the forking *thread*, and a pool
        // thread may retire while the export is in use; a daemon the CLI
        // leaves behind dies with the build's cgroup (teardown, gc).
        unsafe {
            daemon.pre_exec(move || cgroup::enter(&group_fds));
        }
        let daemon = daemon.spawn().map_err(|e| {
            StepError::NonRetryable(format!(
                "{what}: cannot start qemu-storage-daemon (Debian package qemu-utils): {e}"
            ))
        })?;
        let mut export = DiskExport {
            path: path.to_path_buf(),
            daemon: Some(daemon),
        };
        let started = Instant::now();
        loop {
            if is_mounted(path).map_err(io_error("/proc/self/mountinfo"))? {
                break;
            }
            let exited = match export.daemon.as_mut().map(|d| d.try_wait()) {
                Some(Ok(Some(status))) => Some(status.to_string()),
                _ => None,
            };
            if exited.is_some() || started.elapsed() > START_TIMEOUT {
                let mut stderr = String::new();
                if let Some(mut d) = export.daemon.take() {
                    let _ = d.kill();
                    let _ = d.wait();
                    if let Some(mut err) = d.stderr.take() {
                        use std::io::Read;
                        let _ = (&mut err).take(4096).read_to_string(&mut stderr);
                    }
                }
                return Err(StepError::NonRetryable(format!(
                    "{what}: qemu-storage-daemon {}: {}",
                    exited.unwrap_or_else(|| format!("showed no export within {START_TIMEOUT:?}")),
                    super::tools::tail(&stderr, 5)
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        give_to_sandbox(path).map_err(io_error(path.display()))?;
        Ok(export)
    }

    /// Flushes the image and removes the export (SIGTERM: the daemon writes
    /// its caches back and unmounts); a daemon that does not exit in time
    /// is killed and its mount detached.
    pub fn stop(mut self) -> Result<(), StepError> {
        self.shut_down()
    }

    fn shut_down(&mut self) -> Result<(), StepError> {
        let Some(mut daemon) = self.daemon.take() else {
            return Ok(());
        };
        // SAFETY: a signal to our own child, which has not been reaped.
        unsafe {
            libc::kill(daemon.id() as libc::pid_t, libc::SIGTERM);
        }
        let started = Instant::now();
        let clean = loop {
            match daemon.try_wait() {
                Ok(Some(status)) => break status.success(),
                Ok(None) if started.elapsed() < STOP_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = daemon.kill();
                    let _ = daemon.wait();
                    break false;
                }
            }
        };
        detach(&self.path).map_err(io_error(self.path.display()))?;
        if !clean {
            return Err(StepError::NonRetryable(format!(
                "qemu-storage-daemon exporting {} did not exit cleanly: the image may be incomplete",
                self.path.display()
            )));
        }
        Ok(())
    }
}

impl Drop for DiskExport {
    fn drop(&mut self) {
        if let Err(e) = self.shut_down() {
            tracing::warn!("{e}");
        }
    }
}

/// `path` with commas doubled, as QEMU's option syntax wants.
/// A shell script [`edit_disk`] runs in the tool sandbox against an
/// exported disk.
pub(crate) struct DiskEdit<'a> {
    /// What runs, for errors and the log.
    pub label: &'a str,
    /// Host directories shown read-only, with their path in the sandbox.
    pub binds: Vec<(&'a Path, &'a str)>,
    /// The script (`/bin/sh`, `set -u`). The disk is at `/disk`; every
    /// `debugfs` in it appends its stderr to `/tmp/err`: debugfs exits 0 on
    /// most errors, so anything there but its version banner fails the
    /// script.
    pub script: String,
}

/// Exports `image` writable at `raw` (a mount recorded in the build's
/// ledger before it is made, and marked deleted once the export is
/// stopped), runs `edit` in the tool sandbox in the build's control group,
/// and stops the export. The inner `Err` is an export that could not start
/// (no FUSE on the host, say): nothing ran and nothing is left mounted.
pub(crate) async fn edit_disk(
    ctx: &BuildContext,
    image: &Path,
    raw: &Path,
    edit: DiskEdit<'_>,
    cgroup: &BuildCgroup,
    deadline: Option<Instant>,
) -> Result<Result<RunResult, StepError>, StepError> {
    let name = raw.display().to_string();
    ctx.plan(ResourceKind::Mount, &name, None).await?;
    let (i, r, c) = (image.to_path_buf(), raw.to_path_buf(), cgroup.clone());
    let export = match blocking(move || DiskExport::start(&i, &r, true, &c)).await {
        Ok(export) => export,
        Err(e) => {
            ctx.deleted(ResourceKind::Mount, &name).await?;
            return Ok(Err(e));
        }
    };
    ctx.created(ResourceKind::Mount, &name, &name).await?;
    let layout = edit
        .binds
        .iter()
        .fold(Layout::tools(), |layout, (host, inside)| {
            layout.dir(host, inside, false)
        })
        .writable_file(&export.path, "/disk");
    let script = format!(
        "set -u\n{}\nif grep -v '^debugfs [0-9]' /tmp/err >&2; then exit 1; fi\nexit 0\n",
        edit.script
    );
    let argv = ["/bin/sh".to_string(), "-c".to_string(), script];
    let result = run_sandboxed(&layout, edit.label, &argv, cgroup, deadline, &ctx.build_id).await;
    let stopped = blocking(move || export.stop()).await;
    let result = result?;
    stopped?;
    ctx.deleted(ResourceKind::Mount, &name).await?;
    Ok(Ok(result))
}

fn comma_escaped(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

/// Mount points as `/proc/self/mountinfo` lists them (octal escapes of
/// space, tab, newline and backslash undone).
fn mount_points() -> io::Result<Vec<PathBuf>> {
    // Bytes, not text: a mount point need not be UTF-8.
    let bytes = fs::read("/proc/self/mountinfo")?;
    Ok(bytes
        .split(|&b| b == b'\n')
        .filter_map(|l| l.split(|&b| b == b' ').nth(4))
        .map(|p| {
            use std::os::unix::ffi::OsStringExt;
            PathBuf::from(std::ffi::OsString::from_vec(unescape(p)))
        })
        .collect())
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' && i + 4 <= field.len() {
            let digits = &field[i + 1..i + 4];
            if let Some(n) = std::str::from_utf8(digits)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
            {
                out.push(n);
                i += 4;
                continue;
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

fn is_mounted(path: &Path) -> io::Result<bool> {
    Ok(mount_points()?.iter().any(|p| p == path))
}

/// Detaches the mount on `path`, if any.
fn detach(path: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    while is_mounted(path)? {
        let c = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: a plain system call on a NUL-terminated path.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Detaches every mount at or below `dir` (a FUSE export a killed build
/// left), deepest first, so the directory can be removed; returns how many.
pub(crate) fn detach_mounts_below(dir: &Path) -> io::Result<usize> {
    let Ok(dir) = dir.canonicalize() else {
        return Ok(0);
    };
    let mut below: Vec<PathBuf> = mount_points()?
        .into_iter()
        .filter(|p| p.starts_with(&dir))
        .collect();
    below.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    below.dedup();
    for point in &below {
        detach(point)?;
        tracing::info!(mount = %point.display(), "detached a leftover mount");
    }
    Ok(below.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(br"/a\040b/c\134d"), b"/a b/c\\d");
        assert_eq!(unescape(br"/plain"), b"/plain");
        assert_eq!(unescape(br"/odd\04"), br"/odd\04");
        assert_eq!(unescape(b"/\xff"), b"/\xff");
    }

    #[test]
    fn commas_are_doubled_for_qemu() {
        assert_eq!(comma_escaped(Path::new("/w/a,b")), "/w/a,,b");
    }
}
