//! Stopping builds: a build interrupted by a signal is torn down and marked
//! `CANCELLED` with the step it was in; a build whose owning process is
//! gone (killed, or its machine rebooted) is found and cleaned the same way
//! by [`Pipeline::collect_abandoned`] (`bakehouse builds gc`, and before
//! every local build).

use serde_json::json;

use crate::build::{BuildRecord, BuildStatus, Failure, Owner};

use super::io::{TeardownInput, TeardownOutput};
use super::{Pipeline, StepError};

/// The error name a cancelled build records (and teardown routes on).
pub const CANCELLED: &str = "Cancelled";

/// How many records `collect_abandoned` looks at (newest first).
const GC_SCAN: usize = 10_000;

/// A build `collect_abandoned` cleaned.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Collected {
    /// The build.
    pub build_id: String,
    /// Its owner, which is gone.
    pub pid: u32,
    /// The step it was in.
    pub step: String,
}

/// Whether a record is owned by a process other than this one that is
/// still running.
pub fn owned_by_another_live_process(record: &BuildRecord) -> Option<&Owner> {
    let me = Owner::current();
    record
        .owner
        .as_ref()
        .filter(|o| Some(*o) != me.as_ref() && o.is_alive())
}

/// Whether a record was left behind: its owner is gone, and it is still
/// running or holds resources teardown removes.
fn abandoned(record: &BuildRecord) -> bool {
    let Some(owner) = &record.owner else {
        return false;
    };
    if record.kept.is_some() && record.status != BuildStatus::Running {
        // Kept for debugging (`--on-error=abort`): `builds cleanup` only.
        return false;
    }
    let kept =
        |r: &crate::build::Resource| record.status == BuildStatus::Succeeded && r.keep_on_success;
    let holds = record.resources.iter().any(|r| !r.deleted && !kept(r));
    (record.status == BuildStatus::Running || holds) && !owner.is_alive()
}

impl Pipeline {
    /// Tears `build_id` down as cancelled: the failure names the step it
    /// was in, with `reason` as its cause; the status is `CANCELLED`.
    pub async fn cancel(&self, build_id: &str, reason: &str) -> Result<TeardownOutput, StepError> {
        self.teardown(TeardownInput {
            state: json!({
                "build": {"build_id": build_id},
                "error": {"Error": CANCELLED, "Cause": reason},
            }),
        })
        .await
    }

    /// Marks `build_id` cancelled without tearing it down (a second
    /// interrupt stops at once); what it left stays in its ledger for
    /// [`Pipeline::collect_abandoned`].
    pub async fn mark_cancelled(&self, build_id: &str, reason: &str) -> Result<(), StepError> {
        crate::build::update(self.builds().as_ref(), build_id, |r| {
            let step = r
                .unfinished_step()
                .map(|s| s.to_string())
                .unwrap_or_else(|| "launch".into());
            r.status = BuildStatus::Cancelled;
            r.failure.get_or_insert(Failure {
                step,
                error: CANCELLED.into(),
                cause: format!("{reason}; teardown was interrupted: `bakehouse builds gc` removes what is left"),
            });
        })
        .await?;
        Ok(())
    }

    /// Finds the builds whose owning process is gone and that are still
    /// running or hold resources, and tears each down as cancelled.
    pub async fn collect_abandoned(&self) -> Result<Vec<Collected>, StepError> {
        let mut collected = Vec::new();
        for record in self.builds().list(GC_SCAN).await? {
            if !abandoned(&record) {
                continue;
            }
            let pid = record.owner.as_ref().map(|o| o.pid).unwrap_or_default();
            let step = record
                .failure
                .as_ref()
                .map(|f| f.step.clone())
                .or_else(|| record.unfinished_step().map(|s| s.to_string()))
                .unwrap_or_else(|| "launch".into());
            tracing::warn!(build = %record.id, pid, %step, "build abandoned by its process: tearing it down");
            self.cancel(
                &record.id,
                &format!("its process {pid} is gone (killed); found by builds gc"),
            )
            .await?;
            collected.push(Collected {
                build_id: record.id,
                pid,
                step,
            });
        }
        Ok(collected)
    }
}
