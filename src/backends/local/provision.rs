//! The provision step of a local build: each provisioner's job (see
//! [`crate::communicator::jobs`]) carried out in the sandbox by the
//! [`SandboxCommunicator`]. (The recipe's `test` commands run later,
//! against the captured image: `test_phase`.)

use std::fs;
use std::path::{Path, PathBuf};

use crate::communicator::jobs::{provisioner_job, Machine};
use crate::communicator::Communicator;
use crate::pipeline::{BuildContext, Progress, StepError};

use super::communicator::{SandboxCommunicator, SandboxReport};
use super::fsutil::{io_error, remove_path, resolve_in_root};
use super::idmap::{self, Shift};
use super::sandbox::Sandbox;

/// Runs the provisioners not run yet (a retried step skips the ones that
/// finished: `state/provisioned` counts them).
pub(crate) async fn provision(
    ctx: &BuildContext,
    sandbox: &Sandbox,
    state_dir: &Path,
) -> Result<(), StepError> {
    let loaded = ctx.recipe()?;
    let done_file = state_dir.join("provisioned");
    let done: usize = fs::read_to_string(&done_file)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    // pip in the image trusts what this machine trusts (a proxy that
    // inspects TLS included) for a Salt bootstrap.
    let machine = Machine {
        host_ca: fs::read(HOST_CA_BUNDLE).ok(),
    };
    for index in done..loaded.recipe.provisioners.len() {
        let job = provisioner_job(loaded, index, &machine)?;
        tracing::info!(build = %ctx.build_id, provisioner = %job.label, "running");
        let started = std::time::Instant::now();
        let communicator = SandboxCommunicator {
            sandbox,
            stage: format!("p{index}"),
        };
        match communicator.execute(&job).await? {
            Progress::Done(SandboxReport::Ran(result)) => result.record(ctx, &job.label).await?,
            Progress::Done(SandboxReport::Copied(files)) => {
                let _ = ctx
                    .note(format!("{}: copied {files} file(s)", job.label))
                    .await;
            }
            Progress::Wait => {
                return Err(StepError::NonRetryable(format!(
                    "{}: the sandbox does not run jobs in the background",
                    job.label
                )))
            }
        }
        tracing::info!(
            build = %ctx.build_id,
            provisioner = %job.label,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "done"
        );
        fs::write(&done_file, (index + 1).to_string()).map_err(io_error(done_file.display()))?;
    }
    Ok(())
}

/// The build machine's CA certificates (Debian's bundle).
const HOST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Copies `source` (a file, or a directory recursively) to `destination`
/// inside the tree at `root`, resolving every path as the chrooted image
/// would, so links in the tree never lead onto the host. A file goes to
/// `destination`, or into it when it ends in `/` or is a directory; a
/// directory's contents go into `destination`. `mode` applies to every
/// file copied (default: the source's mode). Returns the number of files.
pub(crate) fn copy_into(
    root: &Path,
    source: &Path,
    destination: &str,
    mode: Option<u32>,
) -> Result<usize, StepError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::metadata(source).map_err(io_error(source.display()))?;
    let dest = PathBuf::from(destination);
    if meta.is_file() {
        let mut target = resolve_in_root(root, &dest, true).map_err(io_error(destination))?;
        if destination.ends_with('/') || target.is_dir() {
            let name = source.file_name().unwrap_or_default();
            target =
                resolve_in_root(root, &dest.join(name), true).map_err(io_error(destination))?;
        }
        copy_file(
            source,
            &target,
            mode.unwrap_or(meta.permissions().mode() & 0o7777),
        )?;
        hand_over(root, &target)?;
        return Ok(1);
    }
    let mut count = 0;
    for entry in walkdir::WalkDir::new(source)
        .follow_links(false)
        .sort_by_file_name()
    {
        let entry =
            entry.map_err(|e| StepError::NonRetryable(format!("{}: {e}", source.display())))?;
        let rel = entry.path().strip_prefix(source).unwrap_or(Path::new(""));
        let in_image = dest.join(rel);
        let ft = entry.file_type();
        let target = resolve_in_root(root, &in_image, !ft.is_symlink())
            .map_err(io_error(in_image.display()))?;
        if ft.is_dir() {
            if !target.is_dir() {
                remove_path(&target).map_err(io_error(target.display()))?;
                fs::create_dir_all(&target).map_err(io_error(target.display()))?;
            }
        } else if ft.is_symlink() {
            let link = fs::read_link(entry.path()).map_err(io_error(entry.path().display()))?;
            remove_path(&target).map_err(io_error(target.display()))?;
            std::os::unix::fs::symlink(&link, &target).map_err(io_error(target.display()))?;
        } else if ft.is_file() {
            let source_mode = entry
                .metadata()
                .map(|m| m.permissions().mode() & 0o7777)
                .unwrap_or(0o644);
            copy_file(entry.path(), &target, mode.unwrap_or(source_mode))?;
            count += 1;
        }
    }
    let top = resolve_in_root(root, &dest, true).map_err(io_error(destination))?;
    hand_over(root, &top)?;
    Ok(count)
}

/// Gives what the host just wrote at `target` (a file or a tree) and the
/// directories it may have created above it to root of the sandbox (see
/// [`super::idmap`]); entries the image already had keep their owners.
fn hand_over(root: &Path, target: &Path) -> Result<(), StepError> {
    idmap::shift_tree(target, Shift::In).map_err(io_error(target.display()))?;
    let mut dir = target.parent();
    while let Some(d) = dir.filter(|d| d.starts_with(root) && *d != root) {
        idmap::shift_one(d, Shift::In).map_err(io_error(d.display()))?;
        dir = d.parent();
    }
    Ok(())
}

/// Copies one file to a resolved target, creating its directory.
fn copy_file(source: &Path, target: &Path, mode: u32) -> Result<(), StepError> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(io_error(parent.display()))?;
    }
    if fs::symlink_metadata(target).is_ok_and(|m| !m.is_file()) {
        remove_path(target).map_err(io_error(target.display()))?;
    }
    fs::copy(source, target).map_err(io_error(format!(
        "copying {} to {}",
        source.display(),
        target.display()
    )))?;
    fs::set_permissions(target, fs::Permissions::from_mode(mode))
        .map_err(io_error(target.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    #[test]
    fn uploads_follow_tree_links_inside_the_tree() {
        let host = tempfile::tempdir().unwrap();
        let root = host.path().join("root");
        fs::create_dir_all(root.join("srv/etc")).unwrap();
        // An absolute link that would point at the host's /etc outside a chroot.
        symlink("/srv/etc", root.join("etc")).unwrap();
        let src = host.path().join("motd");
        fs::write(&src, "hello\n").unwrap();
        assert_eq!(copy_into(&root, &src, "/etc/motd", Some(0o600)).unwrap(), 1);
        let landed = root.join("srv/etc/motd");
        assert_eq!(fs::read_to_string(&landed).unwrap(), "hello\n");
        assert_eq!(
            fs::metadata(&landed).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Into an existing directory (trailing slash): keeps the file name.
        assert_eq!(copy_into(&root, &src, "/opt/", None).unwrap(), 1);
        assert!(root.join("opt/motd").is_file());
    }

    #[test]
    fn directories_are_copied_recursively_with_links() {
        let host = tempfile::tempdir().unwrap();
        let root = host.path().join("root");
        fs::create_dir_all(&root).unwrap();
        let src = host.path().join("app");
        fs::create_dir_all(src.join("bin")).unwrap();
        fs::write(src.join("bin/run"), "#!/bin/sh\n").unwrap();
        fs::write(src.join("README"), "x").unwrap();
        symlink("bin/run", src.join("start")).unwrap();
        assert_eq!(copy_into(&root, &src, "/opt/app", Some(0o750)).unwrap(), 2);
        assert_eq!(
            fs::read_to_string(root.join("opt/app/bin/run")).unwrap(),
            "#!/bin/sh\n"
        );
        assert_eq!(
            fs::metadata(root.join("opt/app/README"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o750
        );
        assert_eq!(
            fs::read_link(root.join("opt/app/start")).unwrap(),
            PathBuf::from("bin/run")
        );
    }
}
