//! SSM Run Command as a [`Communicator`]: a job rendered as one command
//! ([`super::scripts::render`]), run on the builder one at a time, in
//! order. Each command is recorded in the ledger before it is sent; a poll
//! continues from the ledger (and the step's notes, which mark the
//! commands that finished) instead of sending anything again.

use async_trait::async_trait;
use aws_sdk_ssm::types::{CloudWatchOutputConfig, CommandInvocationStatus};
use sha2::{Digest, Sha256};

use crate::build::{BuildRecord, ResourceKind};
use crate::communicator::jobs::{clean_job, provisioner_jobs, Machine};
use crate::communicator::{Communicator, Job};
use crate::pipeline::{BuildContext, Progress, StepError};

use super::error::{aws, code};
use super::instance::require_builder;
use super::logs::CommandLogs;
use super::scripts::{render, CommandSpec};
use super::Ec2Backend;

/// How much of each output stream a note keeps (notes are cut at 4 KiB).
const TAIL_BYTES: usize = 1500;

/// Where a command stands.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Not finished.
    Running,
    /// Exit 0.
    Succeeded,
    /// Anything else; the message names the command and the exit code.
    Failed(String),
}

/// Interprets an invocation's status and exit code.
pub(super) fn outcome(label: &str, status: &str, exit_code: i32, stderr: &str) -> Outcome {
    let last_line = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| format!(": {}", l.trim()))
        .unwrap_or_default();
    match status {
        "Pending" | "InProgress" | "Delayed" | "Cancelling" => Outcome::Running,
        "Success" if exit_code <= 0 => Outcome::Succeeded,
        "Success" | "Failed" => Outcome::Failed(format!(
            "{label} failed with exit code {exit_code}{last_line}"
        )),
        "TimedOut" => Outcome::Failed(format!(
            "{label} timed out (SSM status TimedOut, exit code {exit_code}){last_line}"
        )),
        "Cancelled" => Outcome::Failed(format!("{label} was cancelled (exit code {exit_code})")),
        other => Outcome::Failed(format!(
            "{label} ended with SSM status {other} (exit code {exit_code}){last_line}"
        )),
    }
}

/// The last `max` bytes of `text`, cut at a character boundary.
pub(super) fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

fn note_text(label: &str, result: &str, exit_code: i32, stdout: &str, stderr: &str) -> String {
    let mut note = format!("{label}: {result} (exit {exit_code})");
    for (name, text) in [("stdout", stdout), ("stderr", stderr)] {
        if !text.trim().is_empty() {
            note.push_str(&format!("\n--- {name} (tail)\n{}", tail(text, TAIL_BYTES)));
        }
    }
    note
}

/// SSM as the communicator for one builder during one step invocation.
pub(super) struct SsmCommunicator<'a> {
    /// The backend (its clients and settings).
    pub(super) backend: &'a Ec2Backend,
    /// The build and step.
    pub(super) ctx: &'a BuildContext,
    /// The build's record as the step found it.
    pub(super) record: &'a BuildRecord,
    /// The instance the commands run on.
    pub(super) instance: &'a str,
}

#[async_trait]
impl Communicator for SsmCommunicator<'_> {
    type Report = ();

    /// Sends the job's command (unless the ledger shows it was sent) and
    /// reads its invocation: `Wait` until it ends, `Done` when it
    /// succeeded, `BuildFailed` naming it and its exit code otherwise.
    async fn execute(&self, job: &Job) -> Result<Progress, StepError> {
        let command = render(job, self.backend.settings.max_inline_file_bytes)?;
        self.backend
            .run_command(self.ctx, self.record, self.instance, &command)
            .await
    }
}

impl Ec2Backend {
    pub(super) async fn provision_builder(
        &self,
        ctx: &BuildContext,
    ) -> Result<Progress, StepError> {
        let jobs = provisioner_jobs(ctx.recipe()?, &Machine::default())?;
        let record = ctx.current().await?;
        let instance = require_builder(&record)?;
        self.run_jobs(ctx, &record, &instance, &jobs).await
    }

    pub(super) async fn clean_builder(&self, ctx: &BuildContext) -> Result<Progress, StepError> {
        let job = clean_job(ctx.recipe()?);
        let record = ctx.current().await?;
        let instance = require_builder(&record)?;
        match self.run_jobs(ctx, &record, &instance, &[job]).await? {
            Progress::Wait => Ok(Progress::Wait),
            Progress::Done(()) => self.stop_builder(ctx, &instance).await,
        }
    }

    /// Runs `jobs` in order on `instance`; `Done` when all succeeded.
    /// Every job not yet passed renders (its content within the inline
    /// limit) before the first is sent; passed ones are skipped unrendered.
    pub(super) async fn run_jobs(
        &self,
        ctx: &BuildContext,
        record: &BuildRecord,
        instance: &str,
        jobs: &[Job],
    ) -> Result<Progress, StepError> {
        let pending: Vec<&Job> = jobs
            .iter()
            .filter(|job| !passed(ctx, record, &job.label))
            .collect();
        for job in &pending {
            render(job, self.settings.max_inline_file_bytes)?;
        }
        let ssm = SsmCommunicator {
            backend: self,
            ctx,
            record,
            instance,
        };
        for job in pending {
            if let Progress::Wait = ssm.execute(job).await? {
                return Ok(Progress::Wait);
            }
        }
        Ok(Progress::Done(()))
    }

    /// Runs one command: sent once, then polled.
    async fn run_command(
        &self,
        ctx: &BuildContext,
        record: &BuildRecord,
        instance: &str,
        command: &CommandSpec,
    ) -> Result<Progress, StepError> {
        if passed(ctx, record, &command.label) {
            return Ok(Progress::Done(()));
        }
        let comment = command_comment(&ctx.build_id, &command.name);
        let recorded = record.resource(ResourceKind::Command, &command.name);
        let command_id = match recorded.and_then(|r| r.id.clone()) {
            Some(id) => id,
            None => {
                // Planned but not recorded as sent: an earlier attempt
                // may have sent it before failing.
                let earlier = match recorded {
                    Some(_) => self.find_command(instance, &comment).await?,
                    None => None,
                };
                match earlier {
                    Some(id) => {
                        ctx.created(ResourceKind::Command, &command.name, &id)
                            .await?;
                        id
                    }
                    None => self.send(ctx, record, instance, command, &comment).await?,
                }
            }
        };
        let invocation = match self
            .ssm
            .get_command_invocation()
            .command_id(&command_id)
            .instance_id(instance)
            .send()
            .await
        {
            Ok(out) => out,
            // Not visible yet right after SendCommand.
            Err(e) if code(&e) == Some("InvocationDoesNotExist") => {
                return self.wait(ctx, &format!("{} to start", command.label))
            }
            Err(e) => return Err(aws(format!("SSM GetCommandInvocation {command_id}"), e)),
        };
        let status = invocation
            .status()
            .map(CommandInvocationStatus::as_str)
            .unwrap_or("Pending");
        let exit_code = invocation.response_code();
        let stdout = invocation.standard_output_content().unwrap_or_default();
        let stderr = invocation.standard_error_content().unwrap_or_default();
        match outcome(&command.label, status, exit_code, stderr) {
            Outcome::Running => self.wait(ctx, &format!("{} to finish", command.label)),
            Outcome::Succeeded => {
                tracing::info!(build = %ctx.build_id, command = %command.name, id = %command_id, "command succeeded");
                ctx.note(note_text(&command.label, "ok", exit_code, stdout, stderr))
                    .await?;
                Ok(Progress::Done(()))
            }
            Outcome::Failed(message) => {
                tracing::warn!(build = %ctx.build_id, command = %command.name, id = %command_id, "{message}");
                ctx.note(note_text(
                    &command.label,
                    &format!("failed, {status}"),
                    exit_code,
                    stdout,
                    stderr,
                ))
                .await?;
                Err(StepError::BuildFailed(message))
            }
        }
    }

    async fn send(
        &self,
        ctx: &BuildContext,
        record: &BuildRecord,
        instance: &str,
        command: &CommandSpec,
        comment: &str,
    ) -> Result<String, StepError> {
        let left = self.time_left(ctx);
        let limit = command.timeout.map_or(left, |t| t.min(left));
        let timeout = limit.as_secs().clamp(60, 48 * 3600);
        if let Some(group) = &self.settings.command_log_group {
            // Where the full output goes, in the record before any is sent.
            let location = CommandLogs {
                region: self.region.clone(),
                group: group.clone(),
            }
            .location();
            if record.log.as_deref() != Some(location.as_str()) {
                ctx.update(|r| r.log = Some(location.clone())).await?;
            }
        }
        ctx.plan(ResourceKind::Command, &command.name, Some(&self.region))
            .await?;
        let out = self
            .send_command_request(instance, command, comment, timeout)
            .send()
            .await
            .map_err(|e| {
                aws(
                    format!("SSM SendCommand ({}) to {instance}", command.label),
                    e,
                )
            })?;
        let id = out
            .command()
            .and_then(|c| c.command_id())
            .ok_or_else(|| StepError::Retryable("SSM SendCommand returned no command id".into()))?
            .to_string();
        ctx.created(ResourceKind::Command, &command.name, &id)
            .await?;
        tracing::info!(build = %ctx.build_id, command = %command.name, %id, "command sent");
        Ok(id)
    }

    /// The SendCommand request for one command: its document
    /// (`AWS-RunShellScript` or `AWS-RunPowerShellScript`) with the script and an execution timeout of `timeout_secs`, its output
    /// sent to the command log group when one is configured.
    pub(super) fn send_command_request(
        &self,
        instance: &str,
        command: &CommandSpec,
        comment: &str,
        timeout_secs: u64,
    ) -> aws_sdk_ssm::operation::send_command::builders::SendCommandFluentBuilder {
        let output = self.settings.command_log_group.as_ref().map(|group| {
            CloudWatchOutputConfig::builder()
                .cloud_watch_log_group_name(group)
                .cloud_watch_output_enabled(true)
                .build()
        });
        self.ssm
            .send_command()
            .document_name(command.document.name())
            .instance_ids(instance)
            .comment(comment)
            .timeout_seconds(600)
            .parameters("commands", vec![command.script.clone()])
            .parameters("executionTimeout", vec![timeout_secs.to_string()])
            .set_cloud_watch_output_config(output)
    }

    /// A command sent to `instance` with `comment`, newest first.
    async fn find_command(
        &self,
        instance: &str,
        comment: &str,
    ) -> Result<Option<String>, StepError> {
        let mut token = None;
        let mut found: Option<(i64, String)> = None;
        loop {
            let out = self
                .ssm
                .list_commands()
                .instance_id(instance)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| aws(format!("SSM ListCommands for {instance}"), e))?;
            for c in out.commands() {
                if c.comment() == Some(comment) {
                    let when = c.requested_date_time().map(|t| t.secs()).unwrap_or(0);
                    if let Some(id) = c.command_id() {
                        if found.as_ref().is_none_or(|(t, _)| when >= *t) {
                            found = Some((when, id.to_string()));
                        }
                    }
                }
            }
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        Ok(found.map(|(_, id)| id))
    }
}

/// Whether `command` is noted as passed in the current step (a poll or a
/// retry does not send it again).
pub(super) fn passed(ctx: &BuildContext, record: &BuildRecord, label: &str) -> bool {
    let finished = format!("{label}: ok (");
    record
        .steps
        .iter()
        .find(|s| s.step == ctx.step)
        .is_some_and(|s| s.notes.iter().any(|n| n.starts_with(&finished)))
}

/// The SSM comment identifying one command of one build (at most 100
/// characters, as SSM requires).
fn command_comment(build_id: &str, name: &str) -> String {
    let digest = hex::encode(Sha256::digest(build_id.as_bytes()));
    let text = format!("bakehouse {} {name}", &digest[..16]);
    text.chars().take(100).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_name_the_command_and_exit_code() {
        assert_eq!(
            outcome("provisioner 2 (shell)", "InProgress", -1, ""),
            Outcome::Running
        );
        assert_eq!(
            outcome("provisioner 2 (shell)", "Success", 0, ""),
            Outcome::Succeeded
        );
        assert_eq!(
            outcome(
                "provisioner 2 (shell)",
                "Failed",
                3,
                "E: unable to locate package nginx\n\n"
            ),
            Outcome::Failed(
                "provisioner 2 (shell) failed with exit code 3: E: unable to locate package nginx"
                    .into()
            )
        );
        assert_eq!(
            outcome("test 1 `false`", "Failed", 1, ""),
            Outcome::Failed("test 1 `false` failed with exit code 1".into())
        );
        assert_eq!(
            outcome("clean script", "TimedOut", -1, ""),
            Outcome::Failed("clean script timed out (SSM status TimedOut, exit code -1)".into())
        );
        assert!(
            matches!(outcome("x", "Cancelled", -1, ""), Outcome::Failed(m) if m == "x was cancelled (exit code -1)")
        );
    }

    #[test]
    fn notes_keep_a_short_tail_that_survives_the_record_limit() {
        let long = format!("{}é{}", "a".repeat(5000), "end");
        let note = note_text("provisioner 1 (shell)", "ok", 0, &long, "");
        assert!(note.starts_with("provisioner 1 (shell): ok (exit 0)\n--- stdout (tail)\n"));
        assert!(note.ends_with("aaéend"), "{note}");
        assert!(note.len() < 4096);
        assert_eq!(tail("héllo", 4), "llo");
    }

    #[test]
    fn comments_fit_ssm() {
        let c = command_comment(&"b".repeat(300), "provision/12-shell");
        assert!(c.len() <= 100);
        assert!(c.ends_with(" provision/12-shell"));
        assert_ne!(c, command_comment("other", "provision/12-shell"));
    }

    #[tokio::test]
    async fn commands_send_their_output_to_the_log_group_when_one_is_set() {
        let sdk = crate::aws::for_endpoint("http://127.0.0.1:9", "us-east-1").await;
        let command = CommandSpec {
            name: "provision/1-shell".into(),
            label: "provisioner 1 (shell)".into(),
            script: "echo hi".into(),
            document: super::super::scripts::Document::Shell,
            timeout: None,
        };
        let plain = Ec2Backend::new(&sdk, super::super::Ec2Settings::default());
        let req = plain.send_command_request("i-1", &command, "c", 120);
        assert!(req.as_input().get_cloud_watch_output_config().is_none());

        let settings = super::super::Ec2Settings {
            command_log_group: Some("/bakehouse/test/commands".into()),
            ..Default::default()
        };
        let logged = Ec2Backend::new(&sdk, settings);
        let req = logged.send_command_request("i-1", &command, "c", 120);
        let output = req
            .as_input()
            .get_cloud_watch_output_config()
            .clone()
            .expect("output config");
        assert_eq!(
            output.cloud_watch_log_group_name(),
            Some("/bakehouse/test/commands")
        );
        assert!(output.cloud_watch_output_enabled());
        assert_eq!(
            req.as_input()
                .get_parameters()
                .as_ref()
                .and_then(|p| p.get("executionTimeout")),
            Some(&vec!["120".to_string()])
        );
    }
}
