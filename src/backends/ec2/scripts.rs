//! The SSM side of the communicator seam (see [`crate::communicator`]): a
//! [`Job`] rendered as one command for `AWS-RunShellScript` (here) or
//! `AWS-RunPowerShellScript` ([`super::scripts_windows`]). Uploads travel
//! inline, base64 encoded, in here-documents, and are unpacked into a
//! private temporary directory (`$work`) that is removed when the command
//! ends; the command then runs with its environment, in its working
//! directory, within its timeout (SSM's `executionTimeout`).

use std::path::Path;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use crate::communicator::jobs;
use crate::communicator::{Destination, Job, Shell, Source};
use crate::pipeline::StepError;

use super::scripts_windows;
use super::tar::tar_dir;

/// One command to run on the builder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct CommandSpec {
    /// Ledger name (unique within the build).
    pub(super) name: String,
    /// How messages and notes name it (`provisioners[1] (shell inline)`).
    pub(super) label: String,
    /// The script.
    pub(super) script: String,
    /// The SSM document that runs it.
    pub(super) document: Document,
    /// Its own time limit (SSM's `executionTimeout`; the build's time
    /// left applies too).
    pub(super) timeout: Option<std::time::Duration>,
}

/// The SSM document a command is sent with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Document {
    /// `AWS-RunShellScript` (Linux).
    Shell,
    /// `AWS-RunPowerShellScript` (Windows).
    PowerShell,
}

impl Document {
    /// The document's name.
    pub(super) fn name(self) -> &'static str {
        match self {
            Document::Shell => "AWS-RunShellScript",
            Document::PowerShell => "AWS-RunPowerShellScript",
        }
    }
}

pub(super) use crate::recipe::sh_quote as quote;

pub(super) fn nonretryable(label: &str, message: impl std::fmt::Display) -> StepError {
    StepError::NonRetryable(format!("{label}: {message}"))
}

/// `payload` in base64, 76 characters a line, each line ended.
pub(super) fn base64_lines(payload: &[u8]) -> String {
    let encoded = BASE64.encode(payload);
    let mut out = String::with_capacity(encoded.len() + encoded.len() / 76 + 1);
    for chunk in encoded.as_bytes().chunks(76) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out
}

/// What one upload sends: its bytes (a tree as a tar), whether it is a
/// tree, and its mode where it has one.
pub(super) struct Payload {
    /// The bytes sent.
    pub(super) bytes: Vec<u8>,
    /// A tar of a directory.
    pub(super) tree: bool,
    /// The mode of a file: the upload's, else 0755/0644 from the source's
    /// executable bit.
    pub(super) mode: u32,
}

/// The payloads of a job's uploads, refusing content over `max` bytes in
/// all (SSM takes at most 97 KiB of parameters) and saying what to do
/// instead.
pub(super) fn payloads(job: &Job, max: usize) -> Result<Vec<Payload>, StepError> {
    let mut total = 0usize;
    let mut out = Vec::with_capacity(job.uploads.len());
    for upload in &job.uploads {
        let mode = match &upload.to {
            Destination::Work { mode, .. } => Some(*mode),
            Destination::Machine { mode, .. } => *mode,
        };
        let payload = match &upload.source {
            Source::Bytes(bytes) => Payload {
                bytes: bytes.clone(),
                tree: false,
                mode: mode.unwrap_or(0o644),
            },
            Source::File(path) => {
                use std::os::unix::fs::PermissionsExt;
                let read =
                    |e: std::io::Error| nonretryable(&job.label, format!("{}: {e}", upload.what));
                let meta = std::fs::metadata(path).map_err(read)?;
                let bytes = std::fs::read(path).map_err(read)?;
                let executable = meta.permissions().mode() & 0o111 != 0;
                Payload {
                    bytes,
                    tree: false,
                    mode: mode.unwrap_or(if executable { 0o755 } else { 0o644 }),
                }
            }
            Source::Tree(path) => {
                let tree_mode = match &upload.to {
                    Destination::Machine { mode, .. } => *mode,
                    Destination::Work { .. } => None,
                };
                Payload {
                    bytes: tar_dir(path, tree_mode).map_err(|e| nonretryable(&job.label, e))?,
                    tree: true,
                    mode: 0o755,
                }
            }
        };
        total += payload.bytes.len();
        if total > max {
            let tool = match job.shell {
                Shell::Sh => "shell",
                Shell::PowerShell => "powershell",
            };
            let what = if payload.tree {
                format!("{} as tar", upload.what)
            } else {
                upload.what.clone()
            };
            return Err(nonretryable(
                &job.label,
                format!(
                    "{what} is {} bytes, over the {max}-byte limit for content sent inline through SSM \
                     (max_inline_file_bytes): keep large files in the base image or fetch them (e.g. from S3) in a {tool} provisioner",
                    payload.bytes.len()
                ),
            ));
        }
        out.push(payload);
    }
    Ok(out)
}

/// A job as one SSM command, content up to `max` bytes inline.
pub(super) fn render(job: &Job, max: usize) -> Result<CommandSpec, StepError> {
    let (script, document) = match job.shell {
        Shell::Sh => (render_sh(job, max)?, Document::Shell),
        Shell::PowerShell => (scripts_windows::render(job, max)?, Document::PowerShell),
    };
    Ok(CommandSpec {
        name: job.name.clone(),
        label: job.label.clone(),
        script,
        document,
        timeout: job.run.as_ref().and_then(|r| r.timeout),
    })
}

/// A job as an `sh` script.
fn render_sh(job: &Job, max: usize) -> Result<String, StepError> {
    let label = &job.label;
    let mut script =
        format!("# bakehouse: {label}\nset -eu\nwork=$(mktemp -d)\ntrap 'rm -rf \"$work\"' EXIT\n");
    for (i, (upload, payload)) in job.uploads.iter().zip(payloads(job, max)?).enumerate() {
        let staged = match &upload.to {
            Destination::Work { name, .. } => format!("\"$work\"/{}", quote(name)),
            // A tree unpacks straight into its destination.
            Destination::Machine { path, .. } if payload.tree => quote(path),
            Destination::Machine { .. } => format!("\"$work/upload-{i}\""),
        };
        let decode = if payload.tree {
            format!(
                "mkdir -p -- {staged}\nbase64 -d <<'BAKEHOUSE_PAYLOAD' | tar -x -f - -C {staged}\n"
            )
        } else {
            format!("base64 -d > {staged} <<'BAKEHOUSE_PAYLOAD'\n")
        };
        script.push_str(&decode);
        script.push_str(&base64_lines(&payload.bytes));
        script.push_str("BAKEHOUSE_PAYLOAD\n");
        match &upload.to {
            Destination::Work { .. } if !payload.tree => {
                script.push_str(&format!("chmod {:04o} {staged}\n", payload.mode));
            }
            Destination::Work { .. } => {}
            Destination::Machine { path, .. } if payload.tree => {
                script.push_str(&format!(
                    "echo 'bakehouse: unpacked into' {}\n",
                    quote(path)
                ));
            }
            Destination::Machine { path, .. } => {
                let destination = if path.ends_with('/') {
                    let name = match &upload.source {
                        Source::File(p) => jobs::file_name(p),
                        _ => String::new(),
                    };
                    format!("{path}{name}")
                } else {
                    path.clone()
                };
                let parent = Path::new(&destination)
                    .parent()
                    .map(|p| p.to_string_lossy().into_owned())
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| "/".into());
                let (dest, tmp) = (
                    quote(&destination),
                    quote(&format!("{destination}.bakehouse-new")),
                );
                script.push_str(&format!(
                    "mkdir -p -- {parent}\ncp -- {staged} {tmp}\nchmod {mode:04o} {tmp}\nmv -f -- {tmp} {dest}\necho 'bakehouse: wrote' {dest} '({} bytes, mode {mode:04o})'\n",
                    payload.bytes.len(),
                    parent = quote(&parent),
                    mode = payload.mode,
                ));
            }
        }
    }
    if let Some(run) = &job.run {
        for (name, value) in &run.env {
            script.push_str(&format!("export {name}={}\n", quote(value)));
        }
        if let Some(dir) = &run.cwd {
            script.push_str(&format!("cd \"$work\"/{}\n", quote(dir)));
        }
        script.push_str(&run.code);
        if !run.code.ends_with('\n') {
            script.push('\n');
        }
    }
    Ok(script)
}

#[cfg(test)]
#[path = "scripts_tests.rs"]
pub(super) mod tests;
