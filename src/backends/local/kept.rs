//! Failed builds kept for debugging (`build --on-error=abort|ask`): a
//! shell or a command in the kept sandbox, and the cleanup that removes it.

use std::path::PathBuf;
use std::sync::Arc;

use crate::build::{BuildRecord, BuildStore, Step};
use crate::pipeline::{BuildContext, BuilderBackend, StepError};

use super::cgroup::Limits;
use super::fsutil::ensure_real_dir;
use super::sandbox::{run_sandboxed, Layout};
use super::{LocalBackend, LocalSettings, OnError};

impl LocalBackend {
    /// The kept sandbox of `record`: its work tree, checked to be this
    /// work root's (and, unless `gone_ok`, still there: a cleanup that
    /// failed half-way may be run again).
    fn kept_root(&self, record: &BuildRecord, gone_ok: bool) -> Result<PathBuf, StepError> {
        let expected = self.work_dir(&record.id)?.join("root");
        match &record.kept {
            Some(kept)
                if std::path::Path::new(kept) == expected && (gone_ok || expected.is_dir()) =>
            {
                Ok(expected)
            }
            Some(kept) => Err(StepError::NonRetryable(format!(
                "build {}: its sandbox was kept at {kept}, not under this --home ({})",
                record.id,
                self.settings.work_root.display()
            ))),
            None => Err(StepError::NonRetryable(format!(
                "build {} kept no sandbox (build with --on-error=abort to keep a failed one)",
                record.id
            ))),
        }
    }

    /// Runs `argv` (a shell when empty) in the kept sandbox of `record`,
    /// attached to this terminal, with the build's limits and no network;
    /// returns its exit status.
    pub async fn shell(&self, record: &BuildRecord, argv: &[String]) -> Result<i32, StepError> {
        let root = self.kept_root(record, false)?;
        ensure_real_dir(&root, "proc", 0o555)?;
        ensure_real_dir(&root, "dev", 0o755)?;
        let cgroup = self.build_cgroup(&record.id);
        cgroup
            .create(&Limits::default())
            .map_err(|e| StepError::NonRetryable(format!("build {}: cgroup: {e}", record.id)))?;
        let argv = if argv.is_empty() {
            vec!["/bin/sh".to_string()]
        } else {
            argv.to_vec()
        };
        let layout = Layout::image(&root, false).attached();
        let result = run_sandboxed(&layout, "builds shell", &argv, &cgroup, None, &record.id).await;
        let _ = cgroup.remove();
        Ok(result?.status)
    }

    /// Tears a kept build down: its work tree, cgroup and whatever else its
    /// ledger still holds.
    pub async fn cleanup_kept(
        &self,
        builds: Arc<dyn BuildStore>,
        record: BuildRecord,
    ) -> Result<(), StepError> {
        self.kept_root(&record, true)?;
        let backend = LocalBackend::new(LocalSettings {
            on_error: OnError::Cleanup,
            ..self.settings.clone()
        });
        let ctx = BuildContext {
            build_id: record.id.clone(),
            recipe: None,
            polls: 0,
            record,
            step: Step::Teardown,
            store: builds,
        };
        backend.teardown(&ctx, false).await
    }
}
