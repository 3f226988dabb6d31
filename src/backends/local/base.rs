//! The base of a local build: resolving it to a content digest, and
//! unpacking it into a work directory (a directory copy, a tar archive, or
//! an ext4 disk image read with debugfs).

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::pipeline::{ResolvedBase, StepError};
use crate::recipe::{Base, LoadedRecipe, LocalBaseKind, OsKind};
use crate::registry::{Provider, Reference, Registry};

use super::digest::{cached_file_digest, tree_digest};
use super::fsutil::{io_error, resolve_in_root};
use super::{tools, LocalBackend};

/// A local base file or directory with its kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BaseSource {
    /// Where it is.
    pub path: PathBuf,
    /// What it is.
    pub kind: LocalBaseKind,
}

impl BaseSource {
    /// The base at `path`, or an error saying what is wrong with it.
    pub fn at(path: PathBuf) -> Result<BaseSource, StepError> {
        if fs::metadata(&path).is_err() {
            return Err(StepError::NonRetryable(format!(
                "base {}: no such file or directory",
                path.display()
            )));
        }
        let kind = LocalBaseKind::from_path(&path).ok_or_else(|| {
            StepError::NonRetryable(format!(
                "base {}: neither a directory nor a .tar, .tar.gz, .tgz, .tar.zst, .raw, .img or .qcow2 file",
                path.display()
            ))
        })?;
        if kind == LocalBaseKind::Qcow2 {
            super::qcow2::check_self_contained(&path).map_err(|problem| {
                StepError::NonRetryable(format!("base {}: {problem}", path.display()))
            })?;
        }
        Ok(BaseSource { path, kind })
    }

    /// Its content digest (`sha256:...`).
    pub fn digest(&self, cache_dir: &Path) -> Result<String, StepError> {
        let result = match self.kind {
            LocalBaseKind::Directory => tree_digest(&self.path),
            _ => cached_file_digest(&self.path, cache_dir),
        };
        result.map_err(io_error(format!("base {}", self.path.display())))
    }
}

impl LocalBackend {
    /// Resolves the recipe's base (see [`crate::pipeline::BuilderBackend::resolve_base`]).
    pub(crate) async fn resolve(
        &self,
        recipe: &LoadedRecipe,
        registry: &Registry,
    ) -> Result<ResolvedBase, StepError> {
        if recipe.recipe.os != OsKind::Linux {
            return Err(StepError::NonRetryable(super::WINDOWS_REFUSED.into()));
        }
        match &recipe.recipe.base {
            Base::Path(_) => {
                let path = recipe
                    .base_path()
                    .ok_or_else(|| StepError::NonRetryable("base: no path".into()))?;
                let source = BaseSource::at(path)?;
                let cache = self.digest_cache();
                let id = super::fsutil::blocking(move || source.digest(&cache)).await?;
                Ok(ResolvedBase { id, parent: None })
            }
            Base::Registry(text) => {
                let reference = Reference::name_or_label(text)?;
                let resolution = registry
                    .resolve_name_or_label(&reference, Some(Provider::Local), None)
                    .await?;
                let package = resolution.package;
                let artifact = resolution.artifact.ok_or_else(|| {
                    StepError::NonRetryable(format!("base {text}: no local artifact"))
                })?;
                let path = artifact.path.clone().ok_or_else(|| {
                    StepError::NonRetryable(format!(
                        "base {text}: {}@{} artifact {} has no path",
                        package.name, package.version, artifact.name
                    ))
                })?;
                BaseSource::at(PathBuf::from(&path))?;
                self.remember_base(&artifact.image_id, Path::new(&path))?;
                Ok(ResolvedBase {
                    id: artifact.image_id,
                    parent: Some(format!("{}@{}", package.name, package.version)),
                })
            }
            Base::Image(_) | Base::Filter(_) => Err(StepError::NonRetryable(
                "local builds need a base path or a registry reference".into(),
            )),
        }
    }

    /// Where the base of a build is: the recipe's path, or the registry
    /// artifact remembered when the base was resolved.
    pub(crate) fn base_source(
        &self,
        recipe: &LoadedRecipe,
        base_id: &str,
    ) -> Result<BaseSource, StepError> {
        match &recipe.recipe.base {
            Base::Path(_) => {
                let path = recipe
                    .base_path()
                    .ok_or_else(|| StepError::NonRetryable("base: no path".into()))?;
                BaseSource::at(path)
            }
            Base::Registry(text) => {
                let memo = self.base_memo(base_id);
                let path = fs::read_to_string(&memo).map_err(|e| {
                    StepError::NonRetryable(format!(
                        "base {text} ({base_id}): resolved path not found in {}: {e}",
                        memo.display()
                    ))
                })?;
                BaseSource::at(PathBuf::from(path.trim_end_matches('\n')))
            }
            Base::Image(_) | Base::Filter(_) => Err(StepError::NonRetryable(
                "local builds need a base path or a registry reference".into(),
            )),
        }
    }

    /// Remembers where the registry base with digest `id` is, for launch.
    fn remember_base(&self, id: &str, path: &Path) -> Result<(), StepError> {
        let memo = self.base_memo(id);
        if let Some(dir) = memo.parent() {
            fs::create_dir_all(dir).map_err(io_error(dir.display()))?;
        }
        fs::write(&memo, format!("{}\n", path.display())).map_err(io_error(memo.display()))
    }

    /// The file remembering a registry base's path.
    fn base_memo(&self, id: &str) -> PathBuf {
        let name: String = id
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        self.settings.work_root.join(".cache/bases").join(name)
    }

    /// Where file digests are cached.
    pub(crate) fn digest_cache(&self) -> PathBuf {
        self.settings.work_root.join(".cache/digests")
    }
}

/// Unpacks a directory or archive `source` into the empty directory
/// `root` (disk images go through [`super::disk::unpack_disk`]).
pub(crate) fn unpack(source: &BaseSource, root: &Path) -> Result<(), StepError> {
    let what = format!("unpacking base {}", source.path.display());
    match source.kind {
        LocalBaseKind::Directory => copy_tree(&source.path, root),
        LocalBaseKind::Tar => {
            unpack_tar(fs::File::open(&source.path).map_err(io_error(&what))?, root)
                .map_err(io_error(&what))
        }
        LocalBaseKind::TarGz => {
            let file = fs::File::open(&source.path).map_err(io_error(&what))?;
            unpack_tar(
                flate2::read::MultiGzDecoder::new(io::BufReader::new(file)),
                root,
            )
            .map_err(io_error(&what))
        }
        LocalBaseKind::TarZst => {
            let file = fs::File::open(&source.path).map_err(io_error(&what))?;
            let decoder = zstd::stream::read::Decoder::new(file).map_err(io_error(&what))?;
            unpack_tar(decoder, root).map_err(io_error(&what))
        }
        LocalBaseKind::Raw | LocalBaseKind::Qcow2 => Err(StepError::NonRetryable(format!(
            "{what}: disk images are read in the tool sandbox (disk::unpack_disk)"
        ))),
    }
}

/// Copies a directory tree with `cp -a` (owners, modes, timestamps, links,
/// hard links, device nodes, FIFOs, extended attributes).
fn copy_tree(source: &Path, root: &Path) -> Result<(), StepError> {
    let mut cmd = Command::new("cp");
    cmd.arg("-a")
        .arg("--no-target-directory")
        .arg(format!("{}/.", source.display()))
        .arg(root);
    tools::run(&mut cmd, "cp -a")?;
    Ok(())
}

/// Unpacks a tar stream into `root`, keeping permissions, owners, times and
/// extended attributes. Entries that would land outside `root` (`..`,
/// through symlinks) are refused by the tar crate; FIFOs and device nodes
/// (which it would write as plain files) are made with `mknod`, their
/// parent resolved inside the tree. Directories are applied last, deepest
/// first, so their modes cannot block their contents.
fn unpack_tar(reader: impl Read, root: &Path) -> io::Result<()> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    let root = root.canonicalize()?;
    let mut directories = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            directories.push(entry);
        } else if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            make_special(&entry, &root)?;
        } else {
            entry.unpack_in(&root)?;
        }
    }
    directories.sort_by(|a, b| b.path_bytes().cmp(&a.path_bytes()));
    for mut dir in directories {
        dir.unpack_in(&root)?;
    }
    Ok(())
}

/// Makes a FIFO or device node entry of an archive with `mknod`.
fn make_special<R: Read>(entry: &tar::Entry<'_, R>, root: &Path) -> io::Result<()> {
    use std::path::Component;
    let header = entry.header();
    let path = entry.path()?;
    let mut rel = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => rel.push(n),
            Component::CurDir | Component::RootDir => {}
            _ => {
                tracing::warn!(path = %path.display(), "skipping archive entry outside the tree");
                return Ok(());
            }
        }
    }
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
        return Ok(());
    };
    let dir = resolve_in_root(root, &Path::new("/").join(parent), true)?;
    fs::create_dir_all(&dir)?;
    let target = dir.join(name);
    if fs::symlink_metadata(&target).is_ok() {
        fs::remove_file(&target)?;
    }
    let kind = header.entry_type();
    let mut cmd = Command::new("mknod");
    cmd.arg("-m")
        .arg(format!("{:o}", header.mode()? & 0o7777))
        .arg(&target);
    if kind.is_fifo() {
        cmd.arg("p");
    } else {
        let major = header.device_major()?.unwrap_or(0);
        let minor = header.device_minor()?.unwrap_or(0);
        cmd.arg(if kind.is_character_special() {
            "c"
        } else {
            "b"
        })
        .arg(major.to_string())
        .arg(minor.to_string());
    }
    tools::run(&mut cmd, "mknod").map_err(|e| io::Error::other(e.to_string()))?;
    let uid = u32::try_from(header.uid()?).map_err(io::Error::other)?;
    let gid = u32::try_from(header.gid()?).map_err(io::Error::other)?;
    std::os::unix::fs::lchown(&target, Some(uid), Some(gid))
}
