//! What a Packer template's `shell-local` provisioners run: on the machine
//! running `bakehouse build`, before the build, in a sandbox that sees the
//! template's directory (read-write) and the host's `/usr` (read-only) and
//! nothing else: no network, no home, no `/etc`. What they write into the
//! template's directory is read when the build's inputs are read.

use std::collections::BTreeMap;

use super::ShellSource;

/// One shell-local command list or script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalStep {
    /// Where it came from (`provisioners[2]`), for output and errors.
    pub label: String,
    /// What runs: commands or a script (relative to the template's
    /// directory), with `sh -e`.
    pub run: ShellSource,
    /// Environment variables (`environment_vars`, `env`).
    pub env: BTreeMap<String, String>,
}
