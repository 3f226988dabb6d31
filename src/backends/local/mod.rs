//! The local builder backend: bakes a real disk image on this machine.
//!
//! - **resolve base**: a `path` (directory, `.tar`, `.tar.gz`/`.tgz`,
//!   `.tar.zst`, or a raw/qcow2 ext4 image) is identified by its content
//!   digest; a `registry:` reference resolves to the local artifact of an
//!   earlier build (its digest, with `name@version` as parent).
//! - **launch**: the work directory `<work_root>/<build id>` is recorded in
//!   the ledger, then the base is unpacked into its `root/` (a marker
//!   written after a complete unpack makes a retry a no-op; a partial one
//!   is redone).
//! - **provision**: each provisioner, then each test command, runs in new
//!   mount, PID, UTS and IPC namespaces (and a network namespace unless
//!   `builder.network`), chrooted into the tree with `/proc` and a minimal
//!   `/dev`; output is streamed to the log and its tail kept as a note.
//! - **clean**: the clean policy script, run chrooted, then
//!   [`crate::recipe::verify_tree`].
//! - **capture**: `<images_dir>/<recipe>/<build id>/<recipe>.qcow2` (ext4)
//!   and `<recipe>.tar.zst`, each with a `.sha256` sidecar, recorded in the
//!   ledger before they are written.
//! - **teardown**: removes the work directory, and on failure the outputs.
//!
//! Needs root, util-linux (`unshare`, `mount`, `chroot`), e2fsprogs
//! (`mke2fs`, `debugfs`) and qemu-utils (`qemu-img`); busybox-static is
//! used to clean trees that have no shell.

mod base;
mod capture;
mod chroot;
mod clean;
mod digest;
mod disk;
mod fsutil;
mod provision;
mod tools;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::build::ResourceKind;
use crate::pipeline::{sanitize, BuildContext, BuilderBackend, Progress, ResolvedBase, StepError};
use crate::recipe::{LoadedRecipe, LocalBaseKind};
use crate::registry::{Artifact, Provider, Registry};

pub use chroot::SANDBOX_HOSTNAME;

use chroot::Sandbox;
use fsutil::{blocking, io_error, is_below, remove_path};

/// Where the local backend works and writes its images.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalSettings {
    /// Work directories, one per build (default `.bakehouse/work`).
    pub work_root: PathBuf,
    /// Captured images, `<recipe>/<build id>/` (default `.bakehouse/images`).
    pub images_dir: PathBuf,
}

impl Default for LocalSettings {
    fn default() -> Self {
        LocalSettings {
            work_root: PathBuf::from(".bakehouse/work"),
            images_dir: PathBuf::from(".bakehouse/images"),
        }
    }
}

/// The local chroot builder (see the module documentation).
#[derive(Clone, Debug)]
pub struct LocalBackend {
    /// Paths, made absolute.
    settings: LocalSettings,
}

impl LocalBackend {
    /// A backend over `settings`; relative paths are made absolute against
    /// the current directory.
    pub fn new(settings: LocalSettings) -> LocalBackend {
        let absolute = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
        LocalBackend {
            settings: LocalSettings {
                work_root: absolute(settings.work_root),
                images_dir: absolute(settings.images_dir),
            },
        }
    }

    /// The settings, with absolute paths.
    pub fn settings(&self) -> &LocalSettings {
        &self.settings
    }

    /// The work directory of a build.
    pub fn work_dir(&self, build_id: &str) -> PathBuf {
        self.settings.work_root.join(sanitize(build_id))
    }

    /// The directory a build's images are written to.
    pub fn output_dir(&self, recipe_name: &str, build_id: &str) -> PathBuf {
        self.settings
            .images_dir
            .join(sanitize(recipe_name))
            .join(sanitize(build_id))
    }

    /// The sandbox over a build's unpacked tree.
    fn sandbox(&self, ctx: &BuildContext, network: bool) -> Result<Sandbox, StepError> {
        let work = self.work_dir(&ctx.build_id);
        let root = work.join("root");
        let unpacked = fs::read_to_string(work.join("state/unpacked")).ok();
        if unpacked.is_none() || !root.is_dir() {
            return Err(StepError::NonRetryable(format!(
                "build {}: no unpacked work tree at {} (launch did not complete)",
                ctx.build_id,
                root.display()
            )));
        }
        let limit = ctx.recipe()?.recipe.builder.time_limit_minutes;
        Ok(Sandbox {
            root,
            build_id: ctx.build_id.clone(),
            network,
            timeout: limit.map(|m| Duration::from_secs(u64::from(m) * 60)),
        })
    }

    /// The recipe's name.
    fn recipe_name(ctx: &BuildContext) -> Result<String, StepError> {
        Ok(ctx.recipe()?.recipe.name.clone())
    }

    /// Unpacks the base into a fresh work directory and marks it complete.
    async fn unpack_base(
        &self,
        ctx: &BuildContext,
        recipe: &LoadedRecipe,
        base_id: &str,
    ) -> Result<(), StepError> {
        let work = self.work_dir(&ctx.build_id);
        let source = self.base_source(recipe, base_id)?;
        let cache = self.digest_cache();
        let expected = base_id.to_string();
        let build = ctx.build_id.clone();
        blocking(move || {
            let started = Instant::now();
            remove_path(&work).map_err(io_error(work.display()))?;
            let (root, state, scratch) = (work.join("root"), work.join("state"), work.join("scratch"));
            for dir in [&root, &state, &scratch] {
                fs::create_dir_all(dir).map_err(io_error(dir.display()))?;
            }
            if source.kind != LocalBaseKind::Directory {
                let actual = source.digest(&cache)?;
                if actual != expected {
                    return Err(StepError::NonRetryable(format!(
                        "base {} changed since it was resolved: its digest is {actual}, the build was keyed on {expected}",
                        source.path.display()
                    )));
                }
            }
            base::unpack(&source, &root, &scratch)?;
            if source.kind == LocalBaseKind::Directory {
                let actual = digest::tree_digest(&root).map_err(io_error(root.display()))?;
                if actual != expected {
                    return Err(StepError::NonRetryable(format!(
                        "base {} changed since it was resolved: the copy's digest is {actual}, the build was keyed on {expected}",
                        source.path.display()
                    )));
                }
            }
            let marker = state.join("unpacked");
            fs::write(&marker, &expected).map_err(io_error(marker.display()))?;
            tracing::info!(
                build = %build,
                base = %source.path.display(),
                kind = ?source.kind,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "base unpacked"
            );
            Ok(())
        })
        .await
    }

    /// Removes a ledger path (only below `allowed`) and marks it deleted.
    async fn remove_resource(
        &self,
        ctx: &BuildContext,
        kind: ResourceKind,
        name: &str,
        path: &Path,
        allowed: &Path,
    ) -> Result<(), StepError> {
        if !is_below(path, allowed) {
            tracing::warn!(build = %ctx.build_id, path = %path.display(), "ledger path outside {}: not removed", allowed.display());
            return Ok(());
        }
        let owned = path.to_path_buf();
        blocking(move || {
            remove_path(&owned).map_err(io_error(owned.display()))?;
            if kind == ResourceKind::File {
                for extra in [capture::sidecar(&owned), capture::partial(&owned)] {
                    remove_path(&extra).map_err(io_error(extra.display()))?;
                }
            }
            Ok(())
        })
        .await?;
        ctx.deleted(kind, name).await
    }
}

#[async_trait]
impl BuilderBackend for LocalBackend {
    fn provider(&self) -> Provider {
        Provider::Local
    }

    async fn resolve_base(
        &self,
        recipe: &LoadedRecipe,
        registry: &Registry,
    ) -> Result<ResolvedBase, StepError> {
        self.resolve(recipe, registry).await
    }

    async fn launch(&self, ctx: &BuildContext) -> Result<Progress, StepError> {
        let recipe = ctx.recipe()?;
        let base_id = ctx.record.base_id.clone().ok_or_else(|| {
            StepError::NonRetryable(format!("build {}: base not resolved", ctx.build_id))
        })?;
        let work = self.work_dir(&ctx.build_id);
        let name = work.display().to_string();
        ctx.plan(ResourceKind::WorkDir, &name, None).await?;
        let marker = work.join("state/unpacked");
        let done =
            fs::read_to_string(&marker).is_ok_and(|m| m == base_id) && work.join("root").is_dir();
        if done {
            tracing::info!(build = %ctx.build_id, "launch retried: base already unpacked");
        } else {
            self.unpack_base(ctx, recipe, &base_id).await?;
        }
        ctx.created(ResourceKind::WorkDir, &name, &name).await?;
        Ok(Progress::Done(()))
    }

    async fn provision(&self, ctx: &BuildContext) -> Result<Progress, StepError> {
        let network = ctx.recipe()?.recipe.builder.network;
        let sandbox = self.sandbox(ctx, network)?;
        let state = self.work_dir(&ctx.build_id).join("state");
        let started = Instant::now();
        provision::provision(ctx, &sandbox, &state).await?;
        tracing::info!(build = %ctx.build_id, elapsed_ms = started.elapsed().as_millis() as u64, "provisioned");
        Ok(Progress::Done(()))
    }

    async fn clean(&self, ctx: &BuildContext) -> Result<Progress, StepError> {
        let sandbox = self.sandbox(ctx, false)?;
        let started = Instant::now();
        clean::clean(ctx, &sandbox).await?;
        tracing::info!(build = %ctx.build_id, elapsed_ms = started.elapsed().as_millis() as u64, "cleaned");
        Ok(Progress::Done(()))
    }

    async fn capture(&self, ctx: &BuildContext) -> Result<Progress<Vec<Artifact>>, StepError> {
        let sandbox = self.sandbox(ctx, false)?;
        let name = Self::recipe_name(ctx)?;
        let out_dir = self.output_dir(&name, &ctx.build_id);
        let file_base = sanitize(&name);
        let qcow2 = out_dir.join(format!("{file_base}.qcow2"));
        let tar_zst = out_dir.join(format!("{file_base}.tar.zst"));
        for path in [&qcow2, &tar_zst] {
            let key = path.display().to_string();
            ctx.plan(ResourceKind::File, &key, None).await?;
            ctx.keep_on_success(ResourceKind::File, &key).await?;
        }
        let raw = self.work_dir(&ctx.build_id).join("scratch/capture.raw");
        let (q, t, root, label) = (
            qcow2.clone(),
            tar_zst.clone(),
            sandbox.root.clone(),
            name.clone(),
        );
        let build = ctx.build_id.clone();
        let digests = blocking(move || {
            fs::create_dir_all(&out_dir).map_err(io_error(out_dir.display()))?;
            let started = Instant::now();
            let qd = match capture::complete(&q) {
                Some(d) => d,
                None => capture::make_qcow2(&root, &raw, &q, &label)?,
            };
            let qcow_ms = started.elapsed().as_millis() as u64;
            let started = Instant::now();
            let td = match capture::complete(&t) {
                Some(d) => d,
                None => capture::make_tar_zst(&root, &t)?,
            };
            tracing::info!(
                build = %build,
                qcow2_ms = qcow_ms,
                tar_zst_ms = started.elapsed().as_millis() as u64,
                "captured"
            );
            Ok([qd, td])
        })
        .await?;
        let mut artifacts = Vec::new();
        for (path, digest) in [qcow2, tar_zst].iter().zip(digests) {
            let key = path.display().to_string();
            ctx.created(ResourceKind::File, &key, &digest).await?;
            let file_name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            artifacts.push(Artifact {
                name: format!("local/{file_name}"),
                provider: Provider::Local,
                region: None,
                image_id: digest,
                account: None,
                path: Some(key),
            });
        }
        Ok(Progress::Done(artifacts))
    }

    async fn teardown(&self, ctx: &BuildContext, succeeded: bool) -> Result<(), StepError> {
        let record = ctx.current().await?;
        let work = self.work_dir(&ctx.build_id);
        for res in record.resources.iter().filter(|r| !r.deleted) {
            let path = PathBuf::from(res.id.clone().unwrap_or_else(|| res.name.clone()));
            match res.kind {
                ResourceKind::WorkDir => {
                    self.remove_resource(ctx, res.kind, &res.name, &path, &self.settings.work_root)
                        .await?
                }
                ResourceKind::File if !succeeded || !res.keep_on_success => {
                    let path = PathBuf::from(&res.name);
                    self.remove_resource(
                        ctx,
                        res.kind,
                        &res.name,
                        &path,
                        &self.settings.images_dir,
                    )
                    .await?;
                    if let Some(dir) = path.parent() {
                        // The build's output directory, once empty.
                        let _ = fs::remove_dir(dir);
                    }
                }
                _ => {}
            }
        }
        // Also whatever a launch that died before its ledger entry left.
        let leftover = work.clone();
        blocking(move || remove_path(&leftover).map_err(io_error(leftover.display()))).await?;
        tracing::info!(build = %ctx.build_id, succeeded, "local teardown done");
        Ok(())
    }
}
