//! File system helpers for working on a root filesystem tree from the host
//! without ever letting a path inside the tree resolve onto the host.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::pipeline::StepError;

/// Most symlinks followed while resolving one path (as the kernel allows).
const MAX_LINKS: usize = 40;

/// A `NonRetryable` error about `what` (a path or an action) from an I/O error.
pub(crate) fn io_error(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> StepError {
    move |e| StepError::NonRetryable(format!("{what}: {e}"))
}

/// Refuses to write about `needed` bytes into the directory holding `file`
/// when its file system has less free: a host disk filling up mid-write
/// otherwise fails deep in a tool (`mke2fs: No space left on device`),
/// which reads like the image's partition being too small.
pub(crate) fn ensure_free_space(file: &Path, needed: u64, what: &str) -> Result<(), StepError> {
    let dir = file.parent().unwrap_or(Path::new("."));
    let stat = rustix::fs::statvfs(dir)
        .map_err(|e| StepError::NonRetryable(format!("free space of {}: {e}", dir.display())))?;
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    if free < needed {
        return Err(StepError::NonRetryable(format!(
            "{what} needs about {} MiB in {}, whose file system has {} MiB free: free some space on the host or set BAKEHOUSE_HOME to a larger file system",
            needed >> 20,
            dir.display(),
            free >> 20
        )));
    }
    Ok(())
}

/// Resolves `path` (absolute inside the image) to a host path below `root`
/// the way a process chrooted into `root` would see it: absolute symlinks
/// restart at `root`, `..` never climbs above it. The last component is
/// followed only when `follow_last` is set. Components that do not exist
/// are kept as they are (so the result can be created).
pub(crate) fn resolve_in_root(root: &Path, path: &Path, follow_last: bool) -> io::Result<PathBuf> {
    let mut pending: Vec<PathBuf> = components(path);
    pending.reverse();
    let mut resolved = PathBuf::new();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part.as_os_str() == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&part);
        let is_last = pending.is_empty();
        let host = root.join(&candidate);
        match fs::symlink_metadata(&host) {
            Ok(meta) if meta.file_type().is_symlink() && (follow_last || !is_last) => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(io::Error::other(format!(
                        "too many levels of symbolic links resolving {}",
                        path.display()
                    )));
                }
                let target = fs::read_link(&host)?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                let mut more = components(&target);
                more.reverse();
                pending.extend(more);
            }
            _ => resolved = candidate,
        }
    }
    Ok(root.join(resolved))
}

/// The normal and `..` components of a path, as single-component paths.
fn components(path: &Path) -> Vec<PathBuf> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(PathBuf::from(n)),
            Component::ParentDir => Some(PathBuf::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// Whether `path` is a directory itself (not a symlink to one).
pub(crate) fn is_real_dir(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// Refuses `path` unless it is a regular file itself, with one link: a file
/// the tool sandbox wrote, which a host tool is about to read, must not be
/// a link the sandbox planted to a host file.
pub(crate) fn ensure_plain_file(path: &Path) -> Result<(), StepError> {
    use std::os::unix::fs::MetadataExt;
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_file() && m.nlink() == 1 => Ok(()),
        Ok(_) => Err(StepError::NonRetryable(format!(
            "{} is not a plain file: refusing to read it on the host",
            path.display()
        ))),
        Err(e) => Err(io_error(path.display())(e)),
    }
}

/// Makes sure `root/<name>` is a real directory (creating it with `mode`,
/// owned by root of the sandbox, when missing). A symlink or another kind of file there is an error: the
/// caller would otherwise act on wherever it points.
pub(crate) fn ensure_real_dir(root: &Path, name: &str, mode: u32) -> Result<PathBuf, StepError> {
    use std::os::unix::fs::PermissionsExt;
    let path = root.join(name);
    match fs::symlink_metadata(&path) {
        Ok(m) if m.is_dir() => Ok(path),
        Ok(m) if m.file_type().is_symlink() => Err(StepError::BuildFailed(format!(
            "/{name} in the image is a symlink; refusing to use it as a mount point"
        ))),
        Ok(_) => Err(StepError::BuildFailed(format!(
            "/{name} in the image is not a directory"
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir(&path).map_err(io_error(path.display()))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .map_err(io_error(path.display()))?;
            super::idmap::give_to_sandbox(&path).map_err(io_error(path.display()))?;
            Ok(path)
        }
        Err(e) => Err(io_error(path.display())(e)),
    }
}

/// Removes a file, symlink or directory tree (never following symlinks);
/// a missing path is fine.
pub(crate) fn remove_path(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes `path` (as [`remove_path`], never following its last
/// component) only when it lies strictly below `dir` once both are made
/// canonical; anything else is refused with an error naming both. A path
/// whose parent does not exist is already gone.
pub(crate) fn remove_below(path: &Path, dir: &Path) -> io::Result<()> {
    let refuse = || {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "refusing to remove {}: not below {}",
                path.display(),
                dir.display()
            ),
        )
    };
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(refuse());
    };
    let parent = match parent.canonicalize() {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let dir = dir.canonicalize().map_err(|_| refuse())?;
    let real = parent.join(name);
    if real == dir || !real.starts_with(&dir) {
        return Err(refuse());
    }
    // A mount a killed build left below it (a FUSE export) goes first.
    super::export::detach_mounts_below(&real)?;
    remove_path(&real)
}

/// Runs blocking work on the blocking thread pool.
pub(crate) async fn blocking<T, F>(work: F) -> Result<T, StepError>
where
    F: FnOnce() -> Result<T, StepError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StepError::Retryable(format!("background task failed: {e}")))?
}

pub(crate) use crate::recipe::sh_quote;

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn only_plain_files_are_read_on_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("base.raw");
        fs::write(&file, "x").unwrap();
        assert!(ensure_plain_file(&file).is_ok());
        let link = dir.path().join("link.raw");
        symlink("/etc/passwd", &link).unwrap();
        assert!(ensure_plain_file(&link).is_err());
        fs::hard_link(&file, dir.path().join("second")).unwrap();
        assert!(ensure_plain_file(&file).is_err());
        assert!(ensure_plain_file(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn more_than_the_free_space_is_refused_naming_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("disk.raw");
        ensure_free_space(&file, 0, "writing /").unwrap();
        let err = ensure_free_space(&file, u64::MAX, "writing /")
            .unwrap_err()
            .to_string();
        assert!(err.contains("writing / needs about"), "{err}");
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        assert!(err.contains("MiB free"), "{err}");
    }

    #[test]
    fn absolute_links_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("real/etc")).unwrap();
        symlink("/real/etc", root.join("etc")).unwrap();
        symlink("/", root.join("up")).unwrap();
        symlink("../../../../..", root.join("real/escape")).unwrap();
        assert_eq!(
            resolve_in_root(root, Path::new("/etc/passwd"), true).unwrap(),
            root.join("real/etc/passwd")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("/up/up/etc"), true).unwrap(),
            root.join("real/etc")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("/real/escape/tmp/x"), true).unwrap(),
            root.join("tmp/x")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("/etc"), false).unwrap(),
            root.join("etc")
        );
    }

    #[test]
    fn link_loops_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        symlink("/b", dir.path().join("a")).unwrap();
        symlink("/a", dir.path().join("b")).unwrap();
        let err = resolve_in_root(dir.path(), Path::new("/a/x"), true).unwrap_err();
        assert!(err.to_string().contains("too many levels"), "{err}");
    }

    #[test]
    fn removal_is_confined_below_the_canonical_directory() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        fs::create_dir_all(work.join("b1/root")).unwrap();
        fs::create_dir_all(dir.path().join("keep")).unwrap();
        symlink(dir.path().join("keep"), work.join("link")).unwrap();
        for bad in [
            work.clone(),
            work.join(".."),
            work.join("."),
            work.join("b1/../.."),
            work.join("link/x"),
            dir.path().join("keep"),
        ] {
            let err = remove_below(&bad, &work).unwrap_err();
            assert!(
                err.to_string().contains("refusing"),
                "{}: {err}",
                bad.display()
            );
        }
        assert!(dir.path().join("keep").is_dir() && work.is_dir());
        // the link itself is below: removed, not followed
        remove_below(&work.join("link"), &work).unwrap();
        assert!(dir.path().join("keep").is_dir());
        remove_below(&work.join("b1"), &work).unwrap();
        assert!(!work.join("b1").exists());
        remove_below(&work.join("gone/x"), &work).unwrap();
    }

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(sh_quote("it's"), r#"'it'\''s'"#);
    }
}
