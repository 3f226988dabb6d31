//! What a Packer template's `shell-local` provisioners run: on the machine
//! running `bakehouse build`, before the build, in a sandbox that sees the
//! template's directory (read-write) and the host's `/usr` (read-only) and
//! nothing else: no network, no home, no `/etc`. What they write into the
//! template's directory is read when the build's inputs are read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One shell-local command list or script.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalStep {
    /// Where it came from (`provisioners[2]`), for output and errors.
    pub label: String,
    /// What runs.
    pub run: LocalRun,
    /// Environment variables (`environment_vars`, `env`).
    pub env: BTreeMap<String, String>,
}

/// What a [`LocalStep`] runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LocalRun {
    /// Commands run with `sh -e`, one after the other.
    Inline(Vec<String>),
    /// A script file, relative to the template's directory, run with `sh -e`.
    Script(String),
}
