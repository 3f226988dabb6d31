//! Running the host tools a local build uses (`cp`, `qemu-img`, `mke2fs`,
//! `debugfs`, `mknod`).

use std::io;
use std::process::{Command, Output};

use crate::pipeline::StepError;

/// Runs `cmd` to completion; a missing tool or a non-zero exit is a
/// `NonRetryable` error naming `what` with the tail of its stderr.
pub(crate) fn run(cmd: &mut Command, what: &str) -> Result<Output, StepError> {
    tracing::debug!(command = ?cmd, "running");
    let output = cmd.output().map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            StepError::NonRetryable(format!(
                "{what}: {:?} is not installed (local builds need qemu-utils, e2fsprogs, coreutils, and for whole disks fdisk, dosfstools and mtools)",
                cmd.get_program()
            ))
        } else {
            StepError::NonRetryable(format!("{what}: {e}"))
        }
    })?;
    if !output.status.success() {
        return Err(StepError::NonRetryable(format!(
            "{what} failed ({}): {}",
            output.status,
            tail(&String::from_utf8_lossy(&output.stderr), 10)
        )));
    }
    Ok(output)
}

/// The last `n` non-empty lines of `text`, joined with `; `.
pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("; ")
}
