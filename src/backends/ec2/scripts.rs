//! The shell scripts sent to the builder through SSM `AWS-RunShellScript`:
//! one per provisioner, per test command and for the clean policy. Content
//! (files, scripts, state trees) travels inline, base64 encoded, in a
//! here-document, and is unpacked into a private temporary directory that
//! is removed when the command ends.

use std::collections::BTreeMap;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use crate::pipeline::StepError;
use crate::recipe::{clean_script, LoadedRecipe, OsKind, Provisioner, ShellSource};

use super::scripts_windows;

use super::tar::{tar_dir, tar_dirs};

/// One command to run on the builder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct CommandSpec {
    /// Ledger name (unique within the build).
    pub(super) name: String,
    /// How messages and notes name it (`provisioner 2 (shell)`).
    pub(super) label: String,
    /// The script.
    pub(super) script: String,
    /// The SSM document that runs it.
    pub(super) document: Document,
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

fn windows(recipe: &LoadedRecipe) -> bool {
    recipe.recipe.os == OsKind::Windows
}

pub(super) use crate::recipe::sh_quote as quote;

pub(super) fn nonretryable(label: &str, message: impl std::fmt::Display) -> StepError {
    StepError::NonRetryable(format!("{label}: {message}"))
}

/// Refuses content over `max` bytes (SSM takes at most 97 KiB of
/// parameters), saying what to do instead.
pub(super) fn check_inline_size(
    label: &str,
    what: &str,
    payload: &[u8],
    max: usize,
    provisioner: &str,
) -> Result<(), StepError> {
    if payload.len() <= max {
        return Ok(());
    }
    Err(nonretryable(
        label,
        format!(
            "{what} is {} bytes, over the {max}-byte limit for content sent inline through SSM \
             (max_inline_file_bytes): keep large files in the base image or fetch them (e.g. from S3) in a {provisioner} provisioner",
            payload.len()
        ),
    ))
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

/// An environment variable name both shells accept (`[A-Za-z_][A-Za-z0-9_]*`).
pub(super) fn check_env_name(label: &str, name: &str) -> Result<(), StepError> {
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(nonretryable(
            label,
            format!("env: {name:?} is not a valid variable name"),
        ))
    }
}

/// A script that unpacks `payload` to `$work/payload` and then runs `action`.
fn with_payload(
    label: &str,
    what: &str,
    payload: &[u8],
    max: usize,
    env: &BTreeMap<String, String>,
    action: &str,
) -> Result<String, StepError> {
    check_inline_size(label, what, payload, max, "shell")?;
    let mut script = format!(
        "# bakehouse: {label}\nset -eu\nwork=$(mktemp -d)\ntrap 'rm -rf \"$work\"' EXIT\nbase64 -d > \"$work/payload\" <<'BAKEHOUSE_PAYLOAD'\n"
    );
    script.push_str(&base64_lines(payload));
    script.push_str("BAKEHOUSE_PAYLOAD\n");
    for (name, value) in env {
        check_env_name(label, name)?;
        script.push_str(&format!("export {name}={}\n", quote(value)));
    }
    script.push_str(action);
    if !action.ends_with('\n') {
        script.push('\n');
    }
    Ok(script)
}

fn read(recipe: &LoadedRecipe, label: &str, written: &str) -> Result<Vec<u8>, StepError> {
    let path = recipe.resolve(written);
    std::fs::read(&path).map_err(|e| nonretryable(label, format!("{written}: {e}")))
}

fn tar(
    recipe: &LoadedRecipe,
    label: &str,
    written: &str,
    mode: Option<u32>,
) -> Result<Vec<u8>, StepError> {
    tar_dir(&recipe.resolve(written), mode).map_err(|e| nonretryable(label, e))
}

/// How to run a script: its `#!` line's interpreter, else `sh`.
fn interpreter(content: &[u8]) -> Result<String, String> {
    let Some(rest) = content.strip_prefix(b"#!") else {
        return Ok("sh".into());
    };
    let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = std::str::from_utf8(line).map_err(|_| "the #! line is not UTF-8".to_string())?;
    let line = line.trim();
    if line.is_empty() || line.contains(['\'', '"', '`', '$', ';', '&', '|']) {
        return Err(format!("unsupported #! line {line:?}"));
    }
    Ok(line.to_string())
}

fn parse_mode(label: &str, mode: &str) -> Result<u32, StepError> {
    u32::from_str_radix(mode, 8)
        .ok()
        .filter(|m| *m <= 0o7777 && !mode.is_empty())
        .ok_or_else(|| nonretryable(label, format!("mode {mode:?} is not an octal file mode")))
}

/// The command of provisioner `index` (0-based) of the recipe: a shell
/// script, or PowerShell for Windows.
pub(super) fn provisioner_command(
    recipe: &LoadedRecipe,
    index: usize,
    max: usize,
) -> Result<CommandSpec, StepError> {
    let p = recipe
        .recipe
        .provisioners
        .get(index)
        .ok_or_else(|| StepError::NonRetryable(format!("no provisioner {}", index + 1)))?;
    let label = format!("provisioner {} ({})", index + 1, p.kind());
    let (script, document) = if windows(recipe) {
        let script = scripts_windows::provisioner_script(recipe, p, &label, max)?;
        (script, Document::PowerShell)
    } else {
        (shell_script(recipe, p, &label, max)?, Document::Shell)
    };
    Ok(CommandSpec {
        name: format!("provision/{}-{}", index + 1, p.kind()),
        label,
        script,
        document,
    })
}

/// A Linux provisioner's shell script.
fn shell_script(
    recipe: &LoadedRecipe,
    p: &Provisioner,
    label: &str,
    max: usize,
) -> Result<String, StepError> {
    let none = BTreeMap::new();
    let script = match p {
        Provisioner::Powershell(_) => {
            return Err(nonretryable(
                label,
                "runs on Windows images only; this recipe has `os: linux` (use `type: shell`)",
            ))
        }
        Provisioner::Shell(s) => match &s.source {
            ShellSource::Inline(commands) => {
                let body = format!("set -e\n{}\n", commands.join("\n"));
                with_payload(
                    label,
                    "the inline commands",
                    body.as_bytes(),
                    max,
                    &s.env,
                    "sh -e \"$work/payload\"",
                )?
            }
            ShellSource::Script(path) => {
                let content = read(recipe, label, path)?;
                let run = interpreter(&content)
                    .map_err(|e| nonretryable(label, format!("{path}: {e}")))?;
                with_payload(
                    label,
                    path,
                    &content,
                    max,
                    &s.env,
                    &format!("{run} \"$work/payload\""),
                )?
            }
        },
        Provisioner::File(f) => {
            let source = recipe.resolve(&f.source);
            let mode = f
                .mode
                .as_deref()
                .map(|m| parse_mode(label, m))
                .transpose()?;
            if source.is_dir() {
                let payload = tar(recipe, label, &f.source, mode)?;
                let dest = quote(&f.destination);
                let action = format!("mkdir -p -- {dest}\ntar -x -f \"$work/payload\" -C {dest}\n");
                with_payload(
                    label,
                    &format!("directory {} as tar", f.source),
                    &payload,
                    max,
                    &none,
                    &action,
                )?
            } else {
                let content = read(recipe, label, &f.source)?;
                let mode = match mode {
                    Some(m) => m,
                    None => {
                        use std::os::unix::fs::PermissionsExt;
                        let meta = std::fs::metadata(&source)
                            .map_err(|e| nonretryable(label, format!("{}: {e}", f.source)))?;
                        if meta.permissions().mode() & 0o111 != 0 {
                            0o755
                        } else {
                            0o644
                        }
                    }
                };
                let destination = if f.destination.ends_with('/') {
                    let file_name = Path::new(&f.source)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    format!("{}{file_name}", f.destination)
                } else {
                    f.destination.clone()
                };
                let parent = Path::new(&destination)
                    .parent()
                    .map(|p| p.to_string_lossy().into_owned())
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| "/".into());
                let dest = quote(&destination);
                let tmp = quote(&format!("{destination}.bakehouse-new"));
                let action = format!(
                    "mkdir -p -- {parent}\ncp -- \"$work/payload\" {tmp}\nchmod {mode:04o} {tmp}\nmv -f -- {tmp} {dest}\necho 'bakehouse: wrote' {dest} '({} bytes, mode {mode:04o})'\n",
                    content.len(),
                    parent = quote(&parent),
                );
                with_payload(label, &f.source, &content, max, &none, &action)?
            }
        }
        Provisioner::Salt(s) => {
            let mut trees = vec![(recipe.resolve(&s.state_tree), "tree/")];
            if let Some(pillar) = &s.pillar_root {
                trees.push((recipe.resolve(pillar), "pillar/"));
            }
            let payload = tar_dirs(&trees, None).map_err(|e| nonretryable(label, e))?;
            let mut action = String::from(
                "mkdir \"$work/tree\" \"$work/pillar\"\ntar -x -f \"$work/payload\" -C \"$work\"\n",
            );
            action.push_str(
                &crate::backends::salt::salt_script(s, "\"$work\"", None)
                    .map_err(|e| nonretryable(label, e))?,
            );
            with_payload(
                label,
                &format!("state tree {} as tar", s.state_tree),
                &payload,
                max,
                &none,
                &action,
            )?
        }
        Provisioner::Ansible(a) => {
            let dir = a.playbook_dir();
            let payload = tar(recipe, label, &dir, None)?;
            let mut action = String::from(
                "mkdir \"$work/play\"\ntar -x -f \"$work/payload\" -C \"$work/play\"\n",
            );
            action.push_str(
                &crate::backends::ansible::ansible_script(a, "\"$work/play\"")
                    .map_err(|e| nonretryable(label, e))?,
            );
            with_payload(
                label,
                &format!("playbook directory {dir} as tar"),
                &payload,
                max,
                &none,
                &action,
            )?
        }
    };
    Ok(script)
}

/// Every provisioner's command, in order (PowerShell for Windows).
pub(super) fn provisioner_commands(
    recipe: &LoadedRecipe,
    max: usize,
) -> Result<Vec<CommandSpec>, StepError> {
    (0..recipe.recipe.provisioners.len())
        .map(|i| provisioner_command(recipe, i, max))
        .collect()
}

/// The recipe's test commands, in order (PowerShell for Windows).
pub(super) fn test_commands(
    recipe: &LoadedRecipe,
    max: usize,
) -> Result<Vec<CommandSpec>, StepError> {
    let none = BTreeMap::new();
    recipe
        .recipe
        .test
        .iter()
        .enumerate()
        .map(|(i, command)| {
            let shown: String = command.chars().take(80).collect();
            let label = format!("test {} `{shown}`", i + 1);
            let (script, document) = if windows(recipe) {
                let script = scripts_windows::powershell(
                    &label,
                    "the command",
                    std::slice::from_ref(command),
                    max,
                    &none,
                )?;
                (script, Document::PowerShell)
            } else {
                let body = format!("set -e\n{command}\n");
                let run = "sh -e \"$work/payload\"";
                let script = with_payload(&label, "the command", body.as_bytes(), max, &none, run)?;
                (script, Document::Shell)
            };
            Ok(CommandSpec {
                name: format!("test/{}", i + 1),
                label,
                script,
                document,
            })
        })
        .collect()
}

/// The clean policy as one command (`authorized_keys` removal comes last
/// inside the generated script).
pub(super) fn clean_command(recipe: &LoadedRecipe) -> Result<CommandSpec, StepError> {
    if windows(recipe) {
        return scripts_windows::clean_command(recipe);
    }
    let body = clean_script(&recipe.recipe.clean, recipe.recipe.os);
    script_command("clean", "clean script", "the clean script", &body)
}

/// The clean check of the booted image (see
/// [`crate::recipe::clean::check_script`]), run first on the test instance;
/// none for Windows, whose generalized image Sysprep has reset.
pub(super) fn clean_check_command(recipe: &LoadedRecipe) -> Result<Option<CommandSpec>, StepError> {
    if windows(recipe) {
        return Ok(None);
    }
    let body = crate::recipe::clean::check_script(&recipe.recipe.clean);
    script_command(
        "test/clean-check",
        "clean check of the booted image",
        "the clean check",
        &body,
    )
    .map(Some)
}

/// A generated script (`what`, for messages) as one `sh` command.
fn script_command(
    name: &str,
    label: &str,
    what: &str,
    body: &str,
) -> Result<CommandSpec, StepError> {
    let script = with_payload(
        label,
        what,
        body.as_bytes(),
        usize::MAX,
        &BTreeMap::new(),
        "sh \"$work/payload\"",
    )?;
    Ok(CommandSpec {
        name: name.into(),
        label: label.to_string(),
        script,
        document: Document::Shell,
    })
}

#[cfg(test)]
#[path = "scripts_tests.rs"]
mod tests;
