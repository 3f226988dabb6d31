//! The clean step of a local build: the recipe's clean policy applied to
//! the tree from inside the sandbox (so absolute links in the tree resolve
//! inside it, never on the host), then a check that nothing it removes is
//! left in the tree; after capture the same check runs on the captured
//! archive ([`check_artifact`]).

use std::fs;

use crate::pipeline::{BuildContext, StepError};
use crate::recipe::{clean_script, verify_archive, verify_tree, OsKind};

use super::fsutil::blocking;
use super::sandbox::{Sandbox, Stage};

/// Where busybox is on the host, for trees without a shell of their own.
const HOST_BUSYBOX: &str = "/bin/busybox";

/// Applies the clean policy and verifies the tree.
pub(crate) async fn clean(ctx: &BuildContext, sandbox: &Sandbox) -> Result<(), StepError> {
    let recipe = &ctx.recipe()?.recipe;
    if recipe.os != OsKind::Linux {
        return Err(StepError::NonRetryable(super::WINDOWS_REFUSED.into()));
    }
    // What the policy finds before it runs is what it removes: the record
    // lists it.
    let (root, policy) = (sandbox.root.clone(), recipe.clean.clone());
    let present = blocking(move || Ok(verify_tree(&root, &policy))).await?;
    let script = clean_script(&recipe.clean, recipe.os);
    let stage = Stage::create(&sandbox.root, "clean")?;
    let result = async {
        let path = stage.write("clean.sh", script.as_bytes(), 0o700)?;
        let argv = if sandbox.has_shell() {
            vec!["/bin/sh".to_string(), path]
        } else {
            // No shell in the tree: bring a static busybox for the run, so
            // the script still runs chrooted (its applets are built in).
            let content = fs::read(HOST_BUSYBOX).map_err(|e| {
                StepError::NonRetryable(format!(
                    "the image has no /bin/sh and the host's {HOST_BUSYBOX} (busybox-static) cannot be read to clean it: {e}"
                ))
            })?;
            let busybox = stage.write("busybox", &content, 0o755)?;
            vec![busybox, "sh".to_string(), path]
        };
        sandbox.run("clean", &argv).await
    }
    .await;
    stage.remove()?;
    result?.record(ctx, "clean script").await?;
    let root = sandbox.root.clone();
    let policy = recipe.clean.clone();
    let leftovers = blocking(move || Ok(verify_tree(&root, &policy))).await?;
    if !leftovers.is_empty() {
        let list: Vec<String> = leftovers.iter().map(|l| l.to_string()).collect();
        return Err(StepError::BuildFailed(format!(
            "clean left {} item(s) the policy removes: {}",
            leftovers.len(),
            list.join("; ")
        )));
    }
    let mut removed: Vec<String> = present
        .iter()
        .map(|l| format!("{} ({})", l.path.display(), l.item))
        .collect();
    removed.dedup();
    ctx.note(format!(
        "clean removed {} item(s){}{}",
        removed.len(),
        if removed.is_empty() { "" } else { ": " },
        removed.join(", ")
    ))
    .await?;
    tracing::info!(build = %ctx.build_id, removed = removed.len(), "clean policy applied and verified on the tree");
    Ok(())
}

/// Checks the captured archive itself (not the work tree) for anything the
/// policy removes; a leftover fails the build naming each path.
pub(crate) async fn check_artifact(
    ctx: &BuildContext,
    archive: &std::path::Path,
) -> Result<(), StepError> {
    let policy = ctx.recipe()?.recipe.clean.clone();
    let path = archive.to_path_buf();
    let leftovers = blocking(move || {
        verify_archive(&path, &policy).map_err(|e| {
            StepError::NonRetryable(format!(
                "reading {} for the clean check: {e}",
                path.display()
            ))
        })
    })
    .await?;
    if !leftovers.is_empty() {
        let list: Vec<String> = leftovers.iter().map(|l| l.to_string()).collect();
        return Err(StepError::BuildFailed(format!(
            "the captured image {} still holds {} item(s) the clean policy removes: {}",
            archive.display(),
            leftovers.len(),
            list.join("; ")
        )));
    }
    tracing::info!(build = %ctx.build_id, artifact = %archive.display(), "clean policy verified on the artifact");
    Ok(())
}
