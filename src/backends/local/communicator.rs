//! The local sandbox as a [`Communicator`]: a job's work directory is a
//! stage in the tree (`/run/bakehouse-<name>`, removed on every path);
//! uploads are copied from the host resolving every path inside the tree
//! (so a link in the image never leads a write onto the host); the command
//! runs under bubblewrap, its output streamed to the build's log. A tree
//! without `/bin/sh` gets the host's static busybox for the run.

use std::collections::BTreeMap;
use std::fs;

use async_trait::async_trait;

use crate::communicator::{Communicator, Destination, Job, Run, Shell, Source};
use crate::pipeline::{Progress, StepError};

use super::fsutil::{blocking, sh_quote};
use super::provision::copy_into;
use super::sandbox::{RunResult, Sandbox, Stage};

/// Where busybox is on the host, for trees without a shell of their own.
const HOST_BUSYBOX: &str = "/bin/busybox";

/// What a job in the sandbox did.
#[derive(Debug)]
pub(crate) enum SandboxReport {
    /// Its command ran and ended so (a non-zero status is not an error).
    Ran(RunResult),
    /// It had no command and copied this many files.
    Copied(usize),
}

/// Runs jobs in one build's sandbox; `stage` names the work directory.
pub(crate) struct SandboxCommunicator<'a> {
    /// The sandbox over the build's tree.
    pub sandbox: &'a Sandbox,
    /// The stage's name (`p2`, `clean`).
    pub stage: String,
}

#[async_trait]
impl Communicator for SandboxCommunicator<'_> {
    type Report = SandboxReport;

    async fn execute(&self, job: &Job) -> Result<Progress<SandboxReport>, StepError> {
        if job.shell != Shell::Sh {
            return Err(StepError::NonRetryable(format!(
                "{}: {}",
                job.label,
                super::WINDOWS_REFUSED
            )));
        }
        let root = self.sandbox.root.clone();
        let stage = Stage::create(&root, &self.stage)?;
        let result = async {
            let mut copied = 0;
            for upload in &job.uploads {
                copied += self.upload(&stage, &upload.source, &upload.to).await?;
            }
            match &job.run {
                None => {
                    tracing::info!(job = %job.label, copied, "uploaded");
                    Ok(SandboxReport::Copied(copied))
                }
                Some(run) => self
                    .run(&stage, &job.label, run)
                    .await
                    .map(SandboxReport::Ran),
            }
        }
        .await;
        stage.remove()?;
        result.map(Progress::Done)
    }
}

impl SandboxCommunicator<'_> {
    /// Copies one upload; returns the number of files written.
    async fn upload(
        &self,
        stage: &Stage,
        source: &Source,
        to: &Destination,
    ) -> Result<usize, StepError> {
        let root = self.sandbox.root.clone();
        match (source, to) {
            (Source::Bytes(bytes), Destination::Work { name, mode }) => {
                stage.write(name, bytes, *mode)?;
                Ok(1)
            }
            (Source::File(path) | Source::Tree(path), Destination::Work { name, .. }) => {
                let (from, to) = (path.clone(), stage.image_path(name));
                blocking(move || copy_into(&root, &from, &to, None)).await
            }
            (Source::File(path) | Source::Tree(path), Destination::Machine { path: to, mode }) => {
                let (from, to, mode) = (path.clone(), to.clone(), *mode);
                blocking(move || copy_into(&root, &from, &to, mode)).await
            }
            (Source::Bytes(bytes), Destination::Machine { path: to, mode }) => {
                let staged = stage.host_path("upload");
                fs::write(&staged, bytes)
                    .map_err(|e| StepError::NonRetryable(format!("{}: {e}", staged.display())))?;
                let (to, mode) = (to.clone(), mode.or(Some(0o644)));
                blocking(move || copy_into(&root, &staged, &to, mode)).await
            }
        }
    }

    /// Runs the command: a wrapper in the stage sets `work`, the
    /// environment and the working directory, then runs the code.
    async fn run(&self, stage: &Stage, label: &str, run: &Run) -> Result<RunResult, StepError> {
        let script = wrapper(stage.image_dir(), &run.env, run.cwd.as_deref(), &run.code);
        let path = stage.write("job.sh", script.as_bytes(), 0o700)?;
        let argv = if self.sandbox.has_shell() {
            vec!["/bin/sh".to_string(), path]
        } else {
            // No shell in the tree: bring a static busybox for the run, so
            // the script still runs chrooted (its applets are built in).
            let content = fs::read(HOST_BUSYBOX).map_err(|e| {
                StepError::NonRetryable(format!(
                    "{label}: the image has no /bin/sh and the host's {HOST_BUSYBOX} (busybox-static) cannot be read: {e}"
                ))
            })?;
            let busybox = stage.write("busybox", &content, 0o755)?;
            vec![busybox, "sh".to_string(), path]
        };
        self.sandbox.run_within(label, &argv, run.timeout).await
    }
}

/// The `sh` script that runs `code` with `work` set to `work_dir`, `env`
/// exported and `cwd` (relative to the work directory) entered.
fn wrapper(
    work_dir: &str,
    env: &BTreeMap<String, String>,
    cwd: Option<&str>,
    code: &str,
) -> String {
    let mut s = format!("work={}\n", sh_quote(work_dir));
    for (name, value) in env {
        s.push_str(&format!("export {name}={}\n", sh_quote(value)));
    }
    if let Some(dir) = cwd {
        s.push_str(&format!("cd \"$work\"/{}\n", sh_quote(dir)));
    }
    s.push_str(code);
    if !code.ends_with('\n') {
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wrapper_sets_work_env_and_directory_before_the_code() {
        let env = BTreeMap::from([("SITE".to_string(), "it's $HOME".to_string())]);
        let script = wrapper("/run/bakehouse-p1", &env, Some("play"), "ls");
        assert_eq!(
            script,
            "work='/run/bakehouse-p1'\nexport SITE='it'\\''s $HOME'\ncd \"$work\"/'play'\nls\n"
        );
    }
}
