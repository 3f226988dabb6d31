//! The communicator seam, as Packer has one: what a provisioner, the clean
//! script or a test asks of the machine being baked, said once as a
//! [`Job`] (files and trees to upload, then one command to run with its
//! environment, working directory and timeout), and carried out by a
//! [`Communicator`]:
//!
//! - the local sandbox ([`crate::backends::local`]) copies the uploads into
//!   the tree (resolving every path inside it) and runs the command under
//!   bubblewrap, streaming its output to the build's log;
//! - SSM ([`crate::backends::ec2`]) renders the job as one
//!   `AWS-RunShellScript` or `AWS-RunPowerShellScript` command: uploads
//!   travel inline, base64 encoded, into a private directory removed when
//!   the command ends; the output streams to the command log group. The
//!   command's completion arrives later as an event (the pipeline parks
//!   on a task token), so an SSM job is *started* by one step invocation
//!   and *finished* by a later one: [`Communicator::execute`] returns
//!   [`Progress::Wait`] until then.
//!
//! The jobs themselves are built in [`jobs`], once for both backends.
//!
//! Download (Packer's `direction: download`) is not part of the seam: no
//! recipe field asks for it, and over SSM it would need an S3 bucket.

pub mod jobs;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;

use crate::pipeline::{Progress, StepError};

/// The language a job's command is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shell {
    /// POSIX `sh` (Linux).
    Sh,
    /// Windows PowerShell 5.1 (Windows).
    PowerShell,
}

/// One unit of work on the machine: uploads, then a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    /// Ledger name, unique within the build (`provision/2-salt`, `clean`).
    pub name: String,
    /// How messages and notes name it (`provisioner 2 (salt)`).
    pub label: String,
    /// The language of [`Run::code`].
    pub shell: Shell,
    /// What is uploaded first, in order.
    pub uploads: Vec<Upload>,
    /// The command run after the uploads (none for a file upload).
    pub run: Option<Run>,
}

/// One file or tree sent to the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    /// What it is, for messages (`scripts/setup.sh`, `state tree salt`).
    pub what: String,
    /// Where the content comes from.
    pub source: Source,
    /// Where it goes.
    pub to: Destination,
}

/// The content of an upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Bytes made by bakehouse (a generated script).
    Bytes(Vec<u8>),
    /// A file on the machine running bakehouse.
    File(PathBuf),
    /// A directory on the machine running bakehouse, recursively.
    Tree(PathBuf),
}

/// Where an upload goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// `name` in the job's private work directory (`$work/name`), which is
    /// removed when the job ends, with `mode` for a file (a tree's files
    /// keep theirs).
    Work {
        /// A plain name (no `/`).
        name: String,
        /// File mode.
        mode: u32,
    },
    /// An absolute path on the machine (the `file` provisioner): a file
    /// goes to `path`, or into it when it ends in `/` (or `\` on Windows);
    /// a tree's contents go into `path`.
    Machine {
        /// Absolute path.
        path: String,
        /// Mode of every file written (default: the source's).
        mode: Option<u32>,
    },
}

/// The command of a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// Code in the job's [`Shell`]; `$work` names the work directory.
    pub code: String,
    /// Environment variables, set literally.
    pub env: BTreeMap<String, String>,
    /// Working directory, relative to the work directory (default: the
    /// work directory).
    pub cwd: Option<String>,
    /// At most this long; the build's time left always applies too.
    pub timeout: Option<Duration>,
}

/// Carries out jobs on one machine.
#[async_trait]
pub trait Communicator: Send + Sync {
    /// What a finished job reports (the local sandbox: the exit status and
    /// the output's tail; SSM: nothing, its outcome is in the record).
    type Report: Send;

    /// Runs `job`, or starts it and says to wait ([`Progress::Wait`]) when
    /// the transport is asynchronous; calling again with the same job
    /// after a wait polls it rather than starting it twice.
    async fn execute(&self, job: &Job) -> Result<Progress<Self::Report>, StepError>;
}
