//! The clean step of a local build: the recipe's clean policy applied to
//! the tree from inside the sandbox (so absolute links in the tree resolve
//! inside it, never on the host), then a check that nothing it removes is
//! left in the tree; after capture the same check runs on the captured
//! archive ([`check_artifact`]).

use crate::communicator::jobs::clean_job;
use crate::communicator::Communicator;
use crate::pipeline::{BuildContext, Progress, StepError};
use crate::recipe::{verify_archive, verify_tree, OsKind};

use super::communicator::{SandboxCommunicator, SandboxReport};
use super::fsutil::blocking;
use super::sandbox::Sandbox;

/// Applies the clean policy and verifies the tree.
pub(crate) async fn clean(ctx: &BuildContext, sandbox: &Sandbox) -> Result<(), StepError> {
    let loaded = ctx.recipe()?;
    let recipe = &loaded.recipe;
    if recipe.os != OsKind::Linux {
        return Err(StepError::NonRetryable(super::WINDOWS_REFUSED.into()));
    }
    // What the policy finds before it runs is what it removes: the record
    // lists it.
    let (root, policy) = (sandbox.root.clone(), recipe.clean.clone());
    let present = blocking(move || Ok(verify_tree(&root, &policy))).await?;
    let job = clean_job(loaded);
    let communicator = SandboxCommunicator {
        sandbox,
        stage: "clean".into(),
    };
    match communicator.execute(&job).await? {
        Progress::Done(SandboxReport::Ran(result)) => result.record(ctx, &job.label).await?,
        _ => {
            return Err(StepError::NonRetryable(
                "the clean job ran no command".into(),
            ))
        }
    }
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
