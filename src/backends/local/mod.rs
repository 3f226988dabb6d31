//! The local builder backend: bakes a real disk image on this machine.
//!
//! - **resolve base**: a `path` (directory, `.tar`, `.tar.gz`/`.tgz`,
//!   `.tar.zst`, or a raw/qcow2 ext4 image) is identified by its content
//!   digest; a `registry:` reference resolves to the local artifact of an
//!   earlier build (its digest, with `name@version` as parent).
//!   A qcow2 base must be self-contained (module `qcow2`).
//! - **launch**: the work directory `<work_root>/<build id>` and the
//!   build's cgroup are recorded in the ledger, then the base is unpacked
//!   into its `root/` (disk images by tools in the tool sandbox, see
//!   module `disk`) and handed to the sandbox's ids (module `idmap`); a marker written
//!   after a complete unpack makes a retry a no-op.
//! - **provision**: each provisioner runs in the bubblewrap sandbox
//!   (module `sandbox`); output is streamed to the log in bounded lines and
//!   its tail kept as a note.
//! - **clean**: the clean policy script, run in the sandbox, then
//!   [`crate::recipe::verify_tree`].
//! - **capture**: the tree back to the image's ids, then
//!   `<images_dir>/<recipe>/<build id>/<recipe>.qcow2` (ext4) and
//!   `<recipe>.tar.zst`, each with a `.sha256` sidecar, recorded in the
//!   ledger before they are written.
//! - **test**: the recipe's `test` commands against the captured image: a
//!   captured disk boots in QEMU from a throwaway overlay, a filesystem
//!   output is unpacked and tested read-only (module `test_phase`).
//! - **teardown**: kills the build's cgroup, removes the work directory,
//!   and on failure the outputs.
//!
//! Needs Linux, root, bubblewrap, e2fsprogs (`mke2fs`, `debugfs`) and
//! qemu-utils (`qemu-img`); busybox-static is used to clean trees that
//! have no shell.

mod base;
mod bootable;
mod capture;
mod capture_disk;
mod cgroup;
mod clean;
mod communicator;
mod delta;
mod digest;
mod disk;
mod disk_cache;
mod export;
mod fsutil;
mod idmap;
mod in_place;
mod kept;
mod layout;
mod lines;
mod provision;
mod qcow2;
mod retention;
pub use retention::LocalImages;
mod sandbox;
mod seccomp;
pub mod shell_local;
mod test_phase;
mod test_script;
mod tools;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::build::{BuildRecord, BuildStatus, BuildStore, ResourceKind};
use crate::pipeline::{
    build_path_component, BuildContext, BuilderBackend, Progress, ResolvedBase, StepError,
};
use crate::recipe::{LoadedRecipe, LocalBaseKind};
use crate::registry::{Artifact, Provider, Registry};

pub use sandbox::SANDBOX_HOSTNAME;

use cgroup::{BuildCgroup, Limits};
use fsutil::{blocking, io_error, remove_below};
use idmap::Shift;
use sandbox::Sandbox;

/// Runs `argv` in the sandbox over the unpacked tree `root`, as a
/// provisioner runs (no network, default limits), in the control group of
/// `build_id` (made if missing; remove it with [`remove_sandbox_cgroup`]);
/// returns the exit status. The tree is handed to the sandbox's ids first
/// (idempotent). Builds go through [`LocalBackend`]'s steps; this is for
/// benchmarks and debugging.
pub async fn run_in_sandbox(
    build_id: &str,
    root: &Path,
    argv: &[String],
) -> Result<i32, StepError> {
    let cgroup = BuildCgroup::of_build(root, build_path_component(build_id)?);
    cgroup
        .create(&Limits::default())
        .map_err(io_error("creating the sandbox's cgroup"))?;
    let tree = root.to_path_buf();
    blocking(move || idmap::shift_tree(&tree, Shift::In).map_err(io_error(tree.display()))).await?;
    let sandbox = Sandbox {
        root: root.to_path_buf(),
        build_id: build_id.to_string(),
        network: false,
        deadline: None,
        cgroup,
        log: None,
        sensitive: Vec::new(),
    };
    Ok(sandbox.run("run", argv).await?.status)
}

/// Removes the control group [`run_in_sandbox`] made for `build_id` over
/// `root`.
pub fn remove_sandbox_cgroup(build_id: &str, root: &Path) -> Result<(), StepError> {
    BuildCgroup::of_build(root, build_path_component(build_id)?)
        .remove()
        .map_err(io_error("removing the sandbox's cgroup"))
}

/// The whole-disk layout of a build's base, in its `state/` directory
/// (absent for filesystem, archive and directory bases).
const LAYOUT_FILE: &str = "disk-layout.json";

impl LocalBackend {
    /// The whole-disk layout launch recorded for the build, if its base is
    /// a whole disk.
    fn disk_layout(&self, ctx: &BuildContext) -> Result<Option<layout::DiskLayout>, StepError> {
        self.state_layout(ctx, LAYOUT_FILE)
    }

    /// A disk layout the build saved as `state/<name>` (launch: the base's;
    /// capture: the output's), `None` when it saved none.
    fn state_layout(
        &self,
        ctx: &BuildContext,
        name: &str,
    ) -> Result<Option<layout::DiskLayout>, StepError> {
        let file = self.work_dir(&ctx.build_id)?.join("state").join(name);
        match fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StepError::NonRetryable(format!("{}: {e}", file.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(file.display())(e)),
        }
    }
}

/// Where the local backend works and writes its images.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalSettings {
    /// Work directories, one per build (default `.bakehouse/work`).
    pub work_root: PathBuf,
    /// Captured images, `<recipe>/<build id>/` (default `.bakehouse/images`).
    pub images_dir: PathBuf,
    /// What teardown does with a failed build's sandbox.
    pub on_error: OnError,
}

impl Default for LocalSettings {
    fn default() -> Self {
        LocalSettings {
            work_root: PathBuf::from(".bakehouse/work"),
            images_dir: PathBuf::from(".bakehouse/images"),
            on_error: OnError::Cleanup,
        }
    }
}

/// Why a local build refuses an `os: windows` recipe (at launch and, should
/// one get that far, at clean).
pub(crate) const WINDOWS_REFUSED: &str =
    "os: windows: local builds bake Linux images only; build Windows images on EC2 \
     (`bakehouse build --remote`, PowerShell over SSM), or register Windows images made \
     elsewhere with `bakehouse image add --os windows`";

/// `build --on-error` (Packer's `-on-error`): what happens to a failed
/// local build's sandbox (its work tree and ledger entry).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OnError {
    /// Tear everything down (the default).
    #[default]
    Cleanup,
    /// Keep the work tree for `builds shell`; `builds cleanup` removes it.
    /// Processes, FUSE exports and the failed outputs are removed all the
    /// same; the overlay of a whole-disk base stays mounted with the tree.
    Abort,
    /// Ask on the terminal whether to keep it (cleanup when stdin is not a
    /// terminal).
    Ask,
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
                on_error: settings.on_error,
            },
        }
    }

    /// Whether teardown keeps this failed build's work tree (`--on-error`):
    /// only a build whose tree was unpacked, and for `ask` only when the
    /// user says so on the terminal.
    async fn keeps_failed(&self, ctx: &BuildContext, record: &BuildRecord, work: &Path) -> bool {
        if !work.join("root").is_dir() {
            return false;
        }
        match self.settings.on_error {
            OnError::Cleanup => false,
            OnError::Abort => true,
            OnError::Ask => {
                let question = format!(
                    "build {} failed{}: keep its sandbox for `bakehouse builds shell`? [y/N] ",
                    ctx.build_id,
                    record
                        .unfinished_step()
                        .map(|s| format!(" at {s}"))
                        .unwrap_or_default()
                );
                tokio::task::spawn_blocking(move || {
                    use std::io::{BufRead, IsTerminal, Write};
                    if !std::io::stdin().is_terminal() {
                        return false;
                    }
                    let _ = write!(std::io::stderr(), "{question}");
                    let mut answer = String::new();
                    let _ = std::io::stdin().lock().read_line(&mut answer);
                    matches!(answer.trim(), "y" | "Y" | "yes")
                })
                .await
                .unwrap_or(false)
            }
        }
    }

    /// The settings, with absolute paths.
    pub fn settings(&self) -> &LocalSettings {
        &self.settings
    }

    /// The work directory of a build; an id outside the build id grammar
    /// is refused before any path is formed.
    pub fn work_dir(&self, build_id: &str) -> Result<PathBuf, StepError> {
        Ok(self
            .settings
            .work_root
            .join(build_path_component(build_id)?))
    }

    /// The control group of a build of this work root (see [`cgroup`]).
    fn build_cgroup(&self, build_id: &str) -> BuildCgroup {
        BuildCgroup::of_build(&self.settings.work_root, build_id)
    }

    /// The full log of a build: every output line of its commands, kept
    /// after the build in `<home>/logs/<build id>.log` (the home is the
    /// work root's parent); `builds logs` prints it.
    pub fn log_file(&self, build_id: &str) -> Result<PathBuf, StepError> {
        let home = self
            .settings
            .work_root
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.settings.work_root.clone());
        Ok(home
            .join("logs")
            .join(format!("{}.log", build_path_component(build_id)?)))
    }

    /// The directory a build's images are written to (recipe names follow
    /// the registry's name grammar, build ids theirs).
    pub fn output_dir(&self, recipe_name: &str, build_id: &str) -> Result<PathBuf, StepError> {
        crate::registry::validate_name("name", recipe_name)?;
        Ok(self
            .settings
            .images_dir
            .join(recipe_name)
            .join(build_path_component(build_id)?))
    }

    /// Removes the work directories of this work root whose build is over
    /// (its record is not `RUNNING`, or its owner is gone): what a killed
    /// build left that no ledger entry covers. Directories with no record
    /// and names outside the build id grammar are left alone. Returns the
    /// ids removed.
    pub async fn sweep_work_dirs(&self, builds: &dyn BuildStore) -> Result<Vec<String>, StepError> {
        let root = self.settings.work_root.clone();
        let names: Vec<String> = match fs::read_dir(&root) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| crate::build::check_build_id(n).is_ok())
                .collect(),
            Err(_) => return Ok(Vec::new()),
        };
        let mut removed = Vec::new();
        for name in names {
            let Some(record) = builds.get(&name).await? else {
                continue;
            };
            if record.kept.is_some() {
                // Kept for debugging: only `builds cleanup` removes it.
                continue;
            }
            let live = record.status == BuildStatus::Running
                && record.owner.as_ref().is_none_or(|o| o.is_alive());
            if live {
                continue;
            }
            let (dir, base) = (root.join(&name), root.clone());
            let cgroup = self.build_cgroup(&name);
            blocking(move || {
                cgroup
                    .remove()
                    .map_err(io_error("removing a build's cgroup"))?;
                remove_below(&dir, &base).map_err(io_error(dir.display()))
            })
            .await?;
            tracing::info!(build = %name, "removed a leftover work directory");
            removed.push(name);
        }
        Ok(removed)
    }

    /// The sandbox over a build's unpacked tree.
    fn sandbox(&self, ctx: &BuildContext, network: bool) -> Result<Sandbox, StepError> {
        let work = self.work_dir(&ctx.build_id)?;
        let root = work.join("root");
        let unpacked = fs::read_to_string(work.join("state/unpacked")).ok();
        if unpacked.is_none() || !root.is_dir() {
            return Err(StepError::NonRetryable(format!(
                "build {}: no unpacked work tree at {} (launch did not complete)",
                ctx.build_id,
                root.display()
            )));
        }
        Ok(Sandbox {
            root,
            build_id: ctx.build_id.clone(),
            network,
            deadline: Self::time_left(ctx)?.map(|left| Instant::now() + left),
            cgroup: self.cgroup(ctx)?,
            log: Some(self.log_file(&ctx.build_id)?),
            sensitive: ctx.recipe()?.recipe.sensitive.clone(),
        })
    }

    /// The build's control group with the recipe's limits, made (again:
    /// a retried step may follow a `builds gc`) by every step that runs
    /// something in a sandbox.
    fn cgroup(&self, ctx: &BuildContext) -> Result<BuildCgroup, StepError> {
        let builder = &ctx.recipe()?.recipe.builder;
        let cgroup = self.build_cgroup(build_path_component(&ctx.build_id)?);
        let limits = Limits {
            memory_mb: builder.memory_mb.unwrap_or(cgroup::DEFAULT_MEMORY_MB),
            pids_max: builder.pids_max.unwrap_or(cgroup::DEFAULT_PIDS_MAX),
            cpus: builder.cpus,
        };
        cgroup
            .create(&limits)
            .map_err(|e| StepError::NonRetryable(format!("build {}: cgroup: {e}", ctx.build_id)))?;
        Ok(cgroup)
    }

    /// Time left before `builder.time_limit_minutes` (counted from the
    /// build's start) runs out; `None` without a limit. A build already past
    /// it fails, naming the step it was about to run.
    fn time_left(ctx: &BuildContext) -> Result<Option<Duration>, StepError> {
        let Some(minutes) = ctx.recipe()?.recipe.builder.time_limit_minutes else {
            return Ok(None);
        };
        let deadline = ctx.record.created_at + chrono::Duration::minutes(i64::from(minutes));
        match (deadline - chrono::Utc::now()).to_std() {
            Ok(left) if !left.is_zero() => Ok(Some(left)),
            _ => Err(StepError::BuildFailed(format!(
                "{}: the build ran out of its time ({minutes} min, builder.time_limit_minutes)",
                ctx.step
            ))),
        }
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
        let started = Instant::now();
        let work = self.work_dir(&ctx.build_id)?;
        let source = self.base_source(recipe, base_id)?;
        let (root, state, scratch) = (work.join("root"), work.join("state"), work.join("scratch"));
        let cache = self.digest_cache();
        let expected = base_id.to_string();
        let (w, r, s, t, base_root) = (
            work.clone(),
            root.clone(),
            scratch.clone(),
            state.clone(),
            self.settings.work_root.clone(),
        );
        let (src, want) = (source.clone(), expected.clone());
        blocking(move || {
            remove_below(&w, &base_root).map_err(io_error(w.display()))?;
            fs::create_dir_all(&w).map_err(io_error(w.display()))?;
            // Only host root can reach the tree.
            fs::set_permissions(&w, std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .map_err(io_error(w.display()))?;
            for dir in [&r, &t, &s] {
                fs::create_dir_all(dir).map_err(io_error(dir.display()))?;
            }
            if src.kind != LocalBaseKind::Directory {
                let actual = src.digest(&cache)?;
                if actual != want {
                    return Err(StepError::NonRetryable(format!(
                        "base {} changed since it was resolved: its digest is {actual}, the build was keyed on {want}",
                        src.path.display()
                    )));
                }
            }
            Ok(())
        })
        .await?;
        let mut on_overlay = false;
        let whole_disk = match source.kind {
            LocalBaseKind::Raw | LocalBaseKind::Qcow2 => {
                let cgroup = self.cgroup(ctx)?;
                let tools = disk::Tools {
                    cgroup: &cgroup,
                    deadline: Self::time_left(ctx)?.map(|left| Instant::now() + left),
                    build_id: &ctx.build_id,
                    base: &source.path,
                    scratch: &scratch,
                    root: &root,
                };
                let builder = &recipe.recipe.builder;
                // A base kept from an earlier build (or kept now) and an
                // overlay; a disk that grows is rewritten whole as before.
                let launched = if builder.disk.is_none()
                    && builder.disk_size.is_none()
                    && disk_cache::nameable(&work)
                {
                    let at = in_place::Launch {
                        work_root: &self.settings.work_root,
                        work: &work,
                        base_id,
                    };
                    Some(in_place::launch(ctx, &at, &source, &tools).await?)
                } else {
                    None
                };
                let layout = match launched {
                    Some(in_place::Launched::Overlay(layout)) => {
                        on_overlay = true;
                        Some(layout)
                    }
                    Some(in_place::Launched::Unpacked) => None,
                    None => match disk::unpack_disk(&source, &tools).await? {
                        Some(mut layout) => {
                            if builder.disk.is_some() {
                                return Err(StepError::NonRetryable(format!(
                                    "builder.disk makes a bootable disk from a tarball, directory or filesystem base; base {} is already a whole disk, whose own layout the output keeps: remove builder.disk",
                                    source.path.display()
                                )));
                            }
                            if let Some(mib) = builder.disk_size {
                                disk::grow(&mut layout, u64::from(mib) << 20, &tools).await?;
                            }
                            Some(layout)
                        }
                        None => None,
                    },
                };
                if let Some(layout) = &layout {
                    let file = state.join(LAYOUT_FILE);
                    let json = serde_json::to_vec_pretty(layout)
                        .map_err(|e| StepError::NonRetryable(e.to_string()))?;
                    fs::write(&file, json).map_err(io_error(file.display()))?;
                }
                layout.is_some()
            }
            _ => {
                let (src, r) = (source.clone(), root.clone());
                blocking(move || base::unpack(&src, &r)).await?;
                false
            }
        };
        if !whole_disk && recipe.recipe.builder.disk_size.is_some() {
            return Err(StepError::NonRetryable(format!(
                "builder.disk_size grows a whole-disk base; base {} has no partition table (for a disk made from a tree, set builder.disk.size_mb)",
                source.path.display()
            )));
        }
        let src = source.clone();
        blocking(move || {
            if src.kind == LocalBaseKind::Directory {
                let actual = digest::tree_digest(&root).map_err(io_error(root.display()))?;
                if actual != expected {
                    return Err(StepError::NonRetryable(format!(
                        "base {} changed since it was resolved: the copy's digest is {actual}, the build was keyed on {expected}",
                        src.path.display()
                    )));
                }
            }
            // Root of the sandbox owns the tree (a kept base's already does).
            if !on_overlay {
                idmap::shift_tree(&root, Shift::In).map_err(io_error(root.display()))?;
            }
            let marker = state.join("unpacked");
            fs::write(&marker, &expected).map_err(io_error(marker.display()))
        })
        .await?;
        tracing::info!(
            build = %ctx.build_id,
            base = %source.path.display(),
            kind = ?source.kind,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "base unpacked"
        );
        Ok(())
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
        let (owned, dir) = (path.to_path_buf(), allowed.to_path_buf());
        let removed = blocking(move || {
            let mut paths = vec![owned.clone()];
            if kind == ResourceKind::File {
                paths.extend([capture::sidecar(&owned), capture::partial(&owned)]);
            }
            for path in paths {
                match remove_below(&path, &dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                        tracing::warn!(path = %path.display(), "ledger path not removed: {e}");
                        return Ok(false);
                    }
                    Err(e) => return Err(io_error(path.display())(e)),
                }
            }
            Ok(true)
        })
        .await?;
        if removed {
            ctx.deleted(kind, name).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl BuilderBackend for LocalBackend {
    fn provider(&self) -> Provider {
        Provider::Local
    }

    fn runs_in_process(&self) -> bool {
        true
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
        let work = self.work_dir(&ctx.build_id)?;
        let log = self.log_file(&ctx.build_id)?.display().to_string();
        if ctx.record.log.as_deref() != Some(log.as_str()) {
            ctx.update(|r| r.log = Some(log.clone())).await?;
        }
        let name = work.display().to_string();
        ctx.plan(ResourceKind::WorkDir, &name, None).await?;
        let cgroup = self.build_cgroup(&ctx.build_id).name();
        ctx.plan(ResourceKind::Cgroup, &cgroup, None).await?;
        let marker = work.join("state/unpacked");
        let done =
            fs::read_to_string(&marker).is_ok_and(|m| m == base_id) && work.join("root").is_dir();
        if done {
            tracing::info!(build = %ctx.build_id, "launch retried: base already unpacked");
        } else {
            self.unpack_base(ctx, recipe, &base_id).await?;
        }
        ctx.created(ResourceKind::WorkDir, &name, &name).await?;
        // The group itself is made (again) by every step that runs commands.
        ctx.created(ResourceKind::Cgroup, &cgroup, &cgroup).await?;
        Ok(Progress::Done(()))
    }

    async fn provision(&self, ctx: &BuildContext) -> Result<Progress, StepError> {
        let network = ctx.recipe()?.recipe.builder.network;
        let sandbox = self.sandbox(ctx, network)?;
        let state = self.work_dir(&ctx.build_id)?.join("state");
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
        let out_dir = self.output_dir(&name, &ctx.build_id)?;
        let file_base = name.clone();
        let qcow2 = out_dir.join(format!("{file_base}.qcow2"));
        let tar_zst = out_dir.join(format!("{file_base}.tar.zst"));
        for path in [&qcow2, &tar_zst] {
            let key = path.display().to_string();
            ctx.plan(ResourceKind::File, &key, None).await?;
            ctx.keep_on_success(ResourceKind::File, &key).await?;
        }
        let raw = self.work_dir(&ctx.build_id)?.join("scratch/capture.raw");
        let (q, t, root, label) = (
            qcow2.clone(),
            tar_zst.clone(),
            sandbox.root.clone(),
            name.clone(),
        );
        let build = ctx.build_id.clone();
        // A whole-disk base gives a disk of its layout; `builder.disk` makes
        // one for a tree (GRUB installed from inside the sandbox first).
        let disk = match (self.disk_layout(ctx)?, &ctx.recipe()?.recipe.builder.disk) {
            (Some(layout), _) => Some((layout, false)),
            (None, Some(settings)) if capture::complete(&qcow2).is_none() => {
                Some((bootable::install(ctx, &sandbox, settings).await?, true))
            }
            (None, _) => None,
        };
        if let Some((layout, _)) = &disk {
            // What the test step boots (a retried capture of a finished
            // disk finds it from the first attempt).
            let file = self
                .work_dir(&ctx.build_id)?
                .join("state")
                .join(test_phase::OUTPUT_LAYOUT_FILE);
            let json = serde_json::to_vec_pretty(layout)
                .map_err(|e| StepError::NonRetryable(e.to_string()))?;
            fs::write(&file, json).map_err(io_error(file.display()))?;
        }
        // On a kept base's overlay the change is written into a copy of
        // the kept disk when it can be; meanwhile the archive of the merged
        // tree is made and checked against the clean policy. Digests known
        // then are not computed again.
        let work = self.work_dir(&ctx.build_id)?;
        let kept = in_place::kept_base(&work);
        let (mut known_q, mut known_t) = (None, None);
        if let (Some(entry), Some((layout, false))) = (&kept, &disk) {
            let archive = capture::complete(&tar_zst).is_none().then(|| {
                let (r, t, o) = (root.clone(), tar_zst.clone(), out_dir.clone());
                async {
                    let digest = blocking(move || {
                        fs::create_dir_all(&o).map_err(io_error(o.display()))?;
                        capture::make_tar_zst(&r, &t, capture::DISK_ARCHIVE_LEVEL)
                    })
                    .await?;
                    clean::check_artifact(ctx, &tar_zst).await?;
                    Ok::<String, StepError>(digest)
                }
            });
            let disk_in_place = async {
                // A retried capture: the disk is written already.
                if let Some(digest) = capture::complete(&qcow2) {
                    return Ok(Some(digest));
                }
                let at = in_place::InPlace {
                    entry,
                    layout,
                    work: &work,
                    cgroup: &self.cgroup(ctx)?,
                    deadline: Self::time_left(ctx)?.map(|left| Instant::now() + left),
                };
                in_place::capture(ctx, &at, &qcow2).await
            };
            let (written, archived) = match archive {
                Some(archive) => {
                    let (w, a) = tokio::join!(disk_in_place, archive);
                    (w, a.map(Some))
                }
                None => (disk_in_place.await, Ok(None)),
            };
            known_q = written?;
            known_t = archived?;
        }
        let flat = work.join("flat");
        let archive_checked = known_t.is_some();
        let digests = blocking(move || {
            let done_q = known_q.or_else(|| capture::complete(&q));
            let root = match &kept {
                // Written whole: from a plain copy of the merged tree.
                Some(entry) if done_q.is_none() => {
                    in_place::flatten(&root, &flat)?;
                    in_place::base_raw(entry, &raw.with_file_name(disk::BASE_RAW))?;
                    flat
                }
                Some(_) if flat.with_extension("complete").exists() => flat,
                // The archive maps the sandbox's ids back itself.
                Some(_) => root,
                None => {
                    // The image keeps its own ids (see idmap).
                    idmap::shift_tree(&root, Shift::Out).map_err(io_error(root.display()))?;
                    root
                }
            };
            fs::create_dir_all(&out_dir).map_err(io_error(out_dir.display()))?;
            let started = Instant::now();
            let qd = match (done_q, &disk) {
                (Some(d), _) => d,
                (None, Some((layout, new))) => {
                    let base_raw = raw.with_file_name(disk::BASE_RAW);
                    let source = if *new {
                        capture_disk::DiskSource::New {
                            boot_img: bootable::read_grub_file(&root, "boot.img", 512)?,
                            core_img: bootable::read_grub_file(&root, "core.img", 1 << 20)?,
                        }
                    } else {
                        capture_disk::DiskSource::Base(&base_raw)
                    };
                    capture_disk::make_disk_qcow2(layout, &root, &source, &raw, &q)?
                }
                (None, None) => capture::make_qcow2(&root, &raw, &q, &label)?,
            };
            let qcow_ms = started.elapsed().as_millis() as u64;
            let started = Instant::now();
            let td = match known_t.or_else(|| capture::complete(&t)) {
                Some(d) => d,
                None => capture::make_tar_zst(
                    &root,
                    &t,
                    if disk.is_some() {
                        capture::DISK_ARCHIVE_LEVEL
                    } else {
                        capture::TREE_ARCHIVE_LEVEL
                    },
                )?,
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
        if !archive_checked {
            clean::check_artifact(ctx, &tar_zst).await?;
        }
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

    async fn test(&self, ctx: &BuildContext) -> Result<Progress, StepError> {
        self.test_captured(ctx).await
    }

    async fn teardown(&self, ctx: &BuildContext, succeeded: bool) -> Result<(), StepError> {
        let record = ctx.current().await?;
        let work = self.work_dir(&ctx.build_id)?;
        let keep = !succeeded && self.keeps_failed(ctx, &record, &work).await;
        for res in record.resources.iter().filter(|r| !r.deleted) {
            let path = PathBuf::from(res.id.clone().unwrap_or_else(|| res.name.clone()));
            match res.kind {
                ResourceKind::Cgroup => {
                    let cgroup = self.build_cgroup(&ctx.build_id);
                    blocking(move || {
                        cgroup
                            .remove()
                            .map_err(io_error("removing the build's cgroup"))
                    })
                    .await?;
                    ctx.deleted(res.kind, &res.name).await?;
                }
                // A kept sandbox's overlay stays for `builds shell`.
                ResourceKind::Mount if keep && path == work.join("root") => {}
                ResourceKind::Mount => {
                    let mount = path.clone();
                    blocking(move || {
                        export::detach_mounts_below(&mount).map_err(io_error(mount.display()))
                    })
                    .await?;
                    ctx.deleted(res.kind, &res.name).await?;
                }
                ResourceKind::WorkDir if keep => {}
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
        // Also whatever a launch that died before its ledger entry left:
        // first every process of the build, then its files.
        let cgroup = self.build_cgroup(&ctx.build_id);
        blocking(move || {
            cgroup
                .remove()
                .map_err(io_error("removing the build's cgroup"))
        })
        .await?;
        let (leftover, root) = (work.clone(), self.settings.work_root.clone());
        if keep {
            let root_dir = work.join("root");
            ctx.update(|r| r.kept = Some(root_dir.display().to_string()))
                .await?;
            tracing::warn!(build = %ctx.build_id, sandbox = %root_dir.display(), "kept the failed build's sandbox: `bakehouse builds shell {0}` runs in it, `bakehouse builds cleanup {0}` removes it", ctx.build_id);
        } else {
            blocking(move || {
                export::detach_mounts_below(&leftover).map_err(io_error(leftover.display()))?;
                remove_below(&leftover, &root).map_err(io_error(leftover.display()))
            })
            .await?;
            if record.kept.is_some() {
                ctx.update(|r| r.kept = None).await?;
            }
        }
        tracing::info!(build = %ctx.build_id, succeeded, kept = keep, "local teardown done");
        Ok(())
    }
}
