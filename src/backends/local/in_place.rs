//! Builds on a kept whole-disk base ([`super::disk_cache`]): launch mounts
//! the overlay, capture writes the build's changes into a copy of the kept
//! disk ([`super::delta`]) and checks each changed filesystem with
//! `e2fsck -fn`. When the change cannot be written in place (see
//! [`super::delta`]) or any tool reports a problem, capture falls back to
//! rewriting the filesystems whole from a plain copy of the merged tree.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::build::ResourceKind;
use crate::pipeline::{BuildContext, StepError};

use super::base::BaseSource;
use super::capture;
use super::cgroup::BuildCgroup;
use super::delta::{self, IN_UPPER, IN_VALUES};
use super::disk::{self, Tools, BASE_RAW};
use super::disk_cache::{self, CachedDisk};
use super::export::{edit_disk, DiskEdit};
use super::fsutil::{blocking, ensure_plain_file, io_error};
use super::idmap::{self, Shift};
use super::layout::DiskLayout;
use super::tools;

/// The build's state file naming the kept base its overlay uses.
pub(crate) const OVERLAY_FILE: &str = "overlay";
/// The overlay's upper layer in the work directory.
const UPPER: &str = "upper";
/// The overlay's work directory (same filesystem as the upper layer).
const OVERLAY_WORK: &str = "overlay-work";

/// The work directory's parts a launch on a kept base uses.
pub(crate) struct Launch<'a> {
    /// The work root (the kept bases live below it).
    pub work_root: &'a Path,
    /// The build's work directory.
    pub work: &'a Path,
    /// The base's digest.
    pub base_id: &'a str,
}

/// What [`launch`] made of a raw or qcow2 base.
pub(crate) enum Launched {
    /// A whole disk with this layout: the build's overlay is mounted over
    /// the kept base.
    Overlay(DiskLayout),
    /// A bare filesystem image: unpacked into `work/root` as before,
    /// nothing kept.
    Unpacked,
}

/// Unpacks a whole-disk base into the kept bases unless it is there, and
/// mounts the build's overlay on `work/root`.
pub(crate) async fn launch(
    ctx: &BuildContext,
    at: &Launch<'_>,
    source: &BaseSource,
    tools: &Tools<'_>,
) -> Result<Launched, StepError> {
    let root = at.work.join("root");
    let entry = match disk_cache::lookup(at.work_root, at.base_id) {
        Some(entry) => entry,
        None => {
            let Some(layout) = disk::unpack_disk(source, tools).await? else {
                return Ok(Launched::Unpacked);
            };
            let started = Instant::now();
            let stage = at.work.join("kept-base");
            let raw = tools.scratch.join(BASE_RAW);
            let (r, st, wr, id) = (
                root.clone(),
                stage.clone(),
                at.work_root.to_path_buf(),
                at.base_id.to_string(),
            );
            let entry = blocking(move || {
                idmap::shift_tree(&r, Shift::In).map_err(io_error(r.display()))?;
                fs::create_dir_all(&st).map_err(io_error(st.display()))?;
                let json = serde_json::to_vec_pretty(&layout)
                    .map_err(|e| StepError::NonRetryable(e.to_string()))?;
                fs::write(st.join("layout.json"), json).map_err(io_error(st.display()))?;
                // The raw bytes are data here: this qcow2's metadata is
                // QEMU's own, never the base's.
                ensure_plain_file(&raw)?;
                tools::run(
                    Command::new("qemu-img")
                        .args(["convert", "-c", "-W", "-f", "raw", "-O", "qcow2"])
                        .arg(&raw)
                        .arg(st.join("disk.qcow2")),
                    "qemu-img convert of the kept base",
                )?;
                let _ = fs::remove_file(&raw);
                fs::rename(&r, st.join("tree")).map_err(io_error(r.display()))?;
                fs::create_dir(&r).map_err(io_error(r.display()))?;
                disk_cache::publish(&wr, &id, &st).map_err(io_error(st.display()))
            })
            .await?;
            tracing::info!(build = %ctx.build_id, entry = %entry.dir.display(), elapsed_ms = started.elapsed().as_millis() as u64, "whole-disk base kept");
            entry
        }
    };
    let layout: DiskLayout = {
        let file = entry.layout_file();
        let bytes = fs::read(&file).map_err(io_error(file.display()))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| StepError::NonRetryable(format!("{}: {e}", file.display())))?
    };
    let name = root.display().to_string();
    ctx.plan(ResourceKind::Mount, &name, None).await?;
    let (tree, upper, ow, r) = (
        entry.tree(),
        at.work.join(UPPER),
        at.work.join(OVERLAY_WORK),
        root.clone(),
    );
    blocking(move || {
        disk_cache::mount_overlay(&tree, &upper, &ow, &r).map_err(io_error("overlay"))
    })
    .await?;
    ctx.created(ResourceKind::Mount, &name, &name).await?;
    let file = at.work.join("state").join(OVERLAY_FILE);
    fs::write(&file, entry.dir.as_os_str().as_encoded_bytes()).map_err(io_error(file.display()))?;
    Ok(Launched::Overlay(layout))
}

/// The kept base a build's overlay uses, if it has one.
pub(crate) fn kept_base(work: &Path) -> Option<CachedDisk> {
    let bytes = fs::read(work.join("state").join(OVERLAY_FILE)).ok()?;
    let dir = PathBuf::from(String::from_utf8(bytes).ok()?);
    dir.is_dir().then_some(CachedDisk { dir })
}

/// What capture in place works with.
pub(crate) struct InPlace<'a> {
    /// The kept base.
    pub entry: &'a CachedDisk,
    /// The disk's layout.
    pub layout: &'a DiskLayout,
    /// The build's work directory.
    pub work: &'a Path,
    /// The build's control group.
    pub cgroup: &'a BuildCgroup,
    /// When the build's time runs out.
    pub deadline: Option<Instant>,
}

/// Writes `qcow2` as a copy of the kept disk with the build's changes and
/// returns its digest; `None` (nothing written) when the change must be
/// written whole.
pub(crate) async fn capture(
    ctx: &BuildContext,
    at: &InPlace<'_>,
    qcow2: &Path,
) -> Result<Option<String>, StepError> {
    let started = Instant::now();
    let (upper, lower, layout) = (at.work.join(UPPER), at.entry.tree(), at.layout.clone());
    let planned = blocking(move || {
        delta::plan(&upper, &lower, &layout).map_err(io_error("reading the build's changes"))
    })
    .await?;
    let delta = match planned {
        Ok(delta) => delta,
        Err(reason) => {
            ctx.note(format!(
                "capture: the disk's filesystems are written whole ({reason})"
            ))
            .await?;
            return Ok(None);
        }
    };
    let partial = capture::partial(qcow2);
    if let Some(dir) = qcow2.parent() {
        fs::create_dir_all(dir).map_err(io_error(dir.display()))?;
    }
    let (from, to) = (at.entry.disk(), partial.clone());
    blocking(move || {
        fs::copy(&from, &to)
            .map(drop)
            .map_err(io_error(to.display()))
    })
    .await?;
    let applied = apply(ctx, at, &delta, &partial).await;
    match applied {
        Ok(None) => {}
        Ok(Some(problem)) => {
            let _ = fs::remove_file(&partial);
            ctx.note(format!(
                "capture: writing the change in place failed, the disk's filesystems are written whole: {problem}"
            ))
            .await?;
            return Ok(None);
        }
        Err(e) => {
            let _ = fs::remove_file(&partial);
            return Err(e);
        }
    }
    let (p, kept, again) = (
        partial.clone(),
        at.entry.disk(),
        at.work.join("scratch/recompressed.qcow2"),
    );
    let recompressed = blocking(move || {
        tools::run(
            Command::new("qemu-img")
                .args(["check", "-q", "-f", "qcow2"])
                .arg(&p),
            "qemu-img check of the captured image",
        )?;
        recompress_if_grown(&kept, &p, &again)
    })
    .await?;
    let q = qcow2.to_path_buf();
    let digest = blocking(move || capture::finish(&q)).await?;
    let compressed = match recompressed {
        Some((before, after)) => format!(
            "; its rewritten clusters made it {} MiB, compressed again to {} MiB",
            before >> 20,
            after >> 20
        ),
        None => String::new(),
    };
    ctx.note(format!(
        "capture: {} changes written in place into the kept base disk ({} filesystems, e2fsck clean{compressed})",
        delta.changes,
        delta.filesystems.len()
    ))
    .await?;
    tracing::info!(
        build = %ctx.build_id,
        changes = delta.changes,
        filesystems = delta.filesystems.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "whole disk written in place"
    );
    Ok(Some(digest))
}

/// Clusters the in-place capture rewrites are stored uncompressed (QEMU
/// cannot compress a write to an allocated cluster). Past this much growth
/// over the kept disk the written disk is compressed again as a whole
/// (`qemu-img convert -c`): some seconds for a change like a package
/// install, which is worth a smaller image; a small change (a few
/// configuration files) is not worth it.
const RECOMPRESS_OVER_BYTES: u64 = 16 << 20;

/// Compresses `disk` again (through `scratch`) when it has grown more than
/// [`RECOMPRESS_OVER_BYTES`] over `kept`; its sizes before and after when
/// it did. Both are bakehouse's own qcow2 files (see [`super::export`]).
fn recompress_if_grown(
    kept: &Path,
    disk: &Path,
    scratch: &Path,
) -> Result<Option<(u64, u64)>, StepError> {
    let size = |p: &Path| {
        fs::metadata(p)
            .map(|m| m.len())
            .map_err(io_error(p.display()))
    };
    let before = size(disk)?;
    if before <= size(kept)?.saturating_add(RECOMPRESS_OVER_BYTES) {
        return Ok(None);
    }
    let _ = fs::remove_file(scratch);
    tools::run(
        Command::new("qemu-img")
            .args([
                "convert", "-c", "-W", "-m", "8", "-f", "qcow2", "-O", "qcow2",
            ])
            .arg(disk)
            .arg(scratch),
        "qemu-img convert compressing the captured image again",
    )?;
    let after = size(scratch)?;
    if fs::rename(scratch, disk).is_err() {
        // Another filesystem: copied instead.
        fs::copy(scratch, disk).map_err(io_error(disk.display()))?;
        let _ = fs::remove_file(scratch);
    }
    Ok(Some((before, after)))
}

/// Runs the delta's commands over the exported copy, then `e2fsck -fn` on
/// each changed filesystem; `Some(problem)` when either complained.
async fn apply(
    ctx: &BuildContext,
    at: &InPlace<'_>,
    delta: &delta::Delta,
    disk: &Path,
) -> Result<Option<String>, StepError> {
    if delta.filesystems.is_empty() {
        return Ok(None);
    }
    let values = at.work.join("scratch/delta");
    let _ = fs::remove_dir_all(&values);
    fs::create_dir_all(&values).map_err(io_error(values.display()))?;
    let mut script = String::new();
    for (i, f) in delta.filesystems.iter().enumerate() {
        let file = values.join(format!("commands-{i}"));
        fs::write(&file, &f.commands).map_err(io_error(file.display()))?;
        script.push_str(&format!(
            "debugfs -w -f {IN_VALUES}/commands-{i} '/disk?offset={o}' 2>>/tmp/err >/dev/null\n\
             e2fsck -fn '/disk?offset={o}' >/tmp/fsck 2>&1 || {{ echo 'e2fsck of {mp}:' >&2; tail -n 20 /tmp/fsck >&2; exit 1; }}\n",
            o = f.offset,
            mp = f.mountpoint,
        ));
    }
    for (name, value) in &delta.values {
        let file = values.join(name);
        fs::write(&file, value).map_err(io_error(file.display()))?;
    }
    idmap::shift_tree(&values, Shift::In).map_err(io_error(values.display()))?;
    let upper = at.work.join(UPPER);
    let edit = DiskEdit {
        label: "capture: writing the change into the disk",
        binds: vec![(&values, IN_VALUES), (&upper, IN_UPPER)],
        script,
    };
    let raw = at.work.join("scratch/out.raw");
    let result = match edit_disk(ctx, disk, &raw, edit, at.cgroup, at.deadline).await? {
        Ok(result) => result,
        // No FUSE here, say: the whole capture needs none.
        Err(e) => return Ok(Some(e.to_string())),
    };
    let _ = fs::remove_dir_all(&values);
    Ok((result.status != 0).then(|| result.short_tail(10)))
}

/// The fallback's tree: a plain copy of the merged overlay (owners shifted
/// back to the image's), which the whole-disk capture may rearrange.
pub(crate) fn flatten(root: &Path, flat: &Path) -> Result<(), StepError> {
    let done = flat.with_extension("complete");
    if done.exists() {
        return Ok(());
    }
    let _ = fs::remove_dir_all(flat);
    fs::create_dir_all(flat).map_err(io_error(flat.display()))?;
    let mut from = root.as_os_str().to_owned();
    from.push("/.");
    tools::run(
        Command::new("cp")
            .args(["-a", "--reflink=auto", "--"])
            .arg(from)
            .arg(flat),
        "copying the work tree for a whole capture",
    )?;
    idmap::shift_tree(flat, Shift::Out).map_err(io_error(flat.display()))?;
    fs::write(&done, "").map_err(io_error(done.display()))
}

/// The raw base the whole capture rewrites, made from the kept disk.
pub(crate) fn base_raw(entry: &CachedDisk, raw: &Path) -> Result<(), StepError> {
    if raw.exists() {
        return Ok(());
    }
    let partial = raw.with_extension("partial");
    tools::run(
        Command::new("qemu-img")
            .args(["convert", "-f", "qcow2", "-O", "raw"])
            .arg(entry.disk())
            .arg(&partial),
        "qemu-img convert of the kept base",
    )?;
    fs::rename(&partial, raw).map_err(io_error(raw.display()))
}
