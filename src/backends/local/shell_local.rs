//! Runs a Packer template's `shell-local` provisioners on this machine,
//! before the build, each in a bubblewrap sandbox that sees:
//!
//! - the host's `/usr` (and the `/bin`, `/lib`, ... links or directories
//!   into it) read-only, so the usual tools are there;
//! - the template's directory read-write at its own path, as the working
//!   directory (less `.git` and bakehouse's own state, hidden under empty
//!   tmpfs mounts), which is how its results reach the build;
//! - a private `/tmp`, `/proc` and minimal `/dev`;
//!
//! and nothing else: no `/etc`, no home, no network, no capabilities, its
//! own PID namespace, killed with its parent and after
//! [`SHELL_LOCAL_TIME_LIMIT`]. A template arriving by git push is
//! untrusted, and this keeps it from reading host secrets or changing
//! anything outside its own directory.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use super::lines::follow_output;
use crate::recipe::shell_local::LocalStep;
use crate::recipe::ShellSource;

/// The most one shell-local step may take.
pub const SHELL_LOCAL_TIME_LIMIT: Duration = Duration::from_secs(30 * 60);

/// Lines of output kept for the error message.
const TAIL_LINES: usize = 20;

/// Why a shell-local step did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ShellLocalError {
    /// The step exited non-zero (its last lines of output follow).
    #[error("{label} exited with {status}: {tail}; nothing was started")]
    Failed {
        /// Which step.
        label: String,
        /// Its exit status.
        status: i32,
        /// Its last lines of output, masked.
        tail: String,
    },
    /// The step ran past [`SHELL_LOCAL_TIME_LIMIT`] and was killed.
    #[error("{label} ran longer than {} minutes and was killed; nothing was started", SHELL_LOCAL_TIME_LIMIT.as_secs() / 60)]
    TimedOut {
        /// Which step.
        label: String,
    },
    /// The sandbox could not be started.
    #[error("{label}: cannot start the sandbox (bwrap): {reason}")]
    Sandbox {
        /// Which step.
        label: String,
        /// What went wrong.
        reason: String,
    },
}

/// Runs `steps` in order in `dir` (the template's directory), hiding the
/// paths in `hidden` that lie inside it; output lines are logged with
/// `sensitive` values masked.
pub async fn run_shell_local(
    steps: &[LocalStep],
    dir: &Path,
    hidden: &[PathBuf],
    sensitive: &[String],
) -> Result<(), ShellLocalError> {
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    // The directory is shown read-write: never `/` or one holding the
    // user's home (and with it their credentials).
    let home = std::env::var_os("HOME").map(PathBuf::from);
    if dir == Path::new("/") || home.is_some_and(|h| h.starts_with(&dir)) {
        return Err(ShellLocalError::Sandbox {
            label: steps.first().map(|s| s.label.clone()).unwrap_or_default(),
            reason: format!(
                "the template's directory {} is / or holds your home directory, and shell-local would see it read-write: put the template in a directory of its own",
                dir.display()
            ),
        });
    }
    for step in steps {
        run_step(step, &dir, hidden, sensitive).await?;
    }
    Ok(())
}

/// bwrap's arguments for a sandbox over `dir`.
fn sandbox_args(dir: &Path, hidden: &[PathBuf], env: &[(String, String)]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--clearenv",
        "--ro-bind",
        "/usr",
        "/usr",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for name in ["bin", "sbin", "lib", "lib64", "lib32", "libx32"] {
        let path = Path::new("/").join(name);
        match std::fs::read_link(&path) {
            Ok(target) => args.extend([
                "--symlink".into(),
                target.display().to_string(),
                path.display().to_string(),
            ]),
            Err(_) if path.is_dir() => args.extend([
                "--ro-bind".into(),
                path.display().to_string(),
                path.display().to_string(),
            ]),
            Err(_) => {}
        }
    }
    let shown = dir.display().to_string();
    args.extend(["--bind".into(), shown.clone(), shown.clone()]);
    let git = dir.join(".git");
    for path in hidden.iter().chain(std::iter::once(&git)) {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.clone());
        if path.starts_with(dir) && path != dir && path.is_dir() {
            args.extend(["--tmpfs".into(), path.display().to_string()]);
        }
    }
    args.extend(["--chdir".into(), shown]);
    let defaults = [
        (
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ),
        ("HOME", "/tmp"),
        ("LANG", "C"),
    ];
    for (k, v) in defaults {
        args.extend(["--setenv".into(), k.into(), v.into()]);
    }
    for (k, v) in env {
        args.extend(["--setenv".into(), k.clone(), v.clone()]);
    }
    args
}

async fn run_step(
    step: &LocalStep,
    dir: &Path,
    hidden: &[PathBuf],
    sensitive: &[String],
) -> Result<(), ShellLocalError> {
    let label = step.label.clone();
    let env: Vec<(String, String)> = step.env.clone().into_iter().collect();
    let mut command = Command::new("bwrap");
    command.args(sandbox_args(dir, hidden, &env));
    match &step.run {
        ShellSource::Inline(lines) => command.args(["/bin/sh", "-ec", &lines.join("\n")]),
        ShellSource::Script(script) => command.args(["/bin/sh", "-e", "--"]).arg(dir.join(script)),
    };
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    tracing::info!(step = %label, "running shell-local in a sandbox on this machine");
    let mut child = command.spawn().map_err(|e| ShellLocalError::Sandbox {
        label: label.clone(),
        reason: e.to_string(),
    })?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let mut tail = Vec::new();
    let run = async {
        tail = follow_output(stdout, stderr, sensitive, TAIL_LINES, |line, _| {
            tracing::info!(step = %label, "{line}");
        })
        .await;
        child.wait().await
    };
    let status = match tokio::time::timeout(SHELL_LOCAL_TIME_LIMIT, run).await {
        Ok(status) => status.map_err(|e| ShellLocalError::Sandbox {
            label: label.clone(),
            reason: e.to_string(),
        })?,
        Err(_) => return Err(ShellLocalError::TimedOut { label }),
    };
    if status.success() {
        Ok(())
    } else {
        Err(ShellLocalError::Failed {
            label,
            status: status.code().unwrap_or(-1),
            tail: tail.join(" | "),
        })
    }
}
