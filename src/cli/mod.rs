//! The `bakehouse` command line: argument definitions and dispatch. Output
//! goes to the writer passed in (tables by default, JSON with `--json`);
//! diagnostics go through `tracing`.

mod build;
mod builds;
mod image;
mod log_mask;
mod output;
mod packer;
mod progress;
mod template_vars;

pub use progress::init_logging;
pub use template_vars::TemplateVars;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::build::{BuildStore, DynamoBuildStore, SqliteBuildStore};
use crate::registry::{Registry, RegistryError, SqliteStore};

pub use output::Format;

/// Errors of the command line (each wraps the error of one area).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A registry error.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Writing output failed.
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
    /// Serialising JSON output failed.
    #[error("writing JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A recipe or template could not be loaded (every problem named).
    #[error(transparent)]
    Recipe(#[from] crate::recipe::RecipeError),
    /// One problem of a recipe or template.
    #[error("{0}")]
    Problem(crate::recipe::Problem),
    /// Build records could not be read or written.
    #[error(transparent)]
    Builds(#[from] crate::build::BuildStoreError),
    /// A pipeline step (or a kept build's shell or clean-up) failed.
    #[error(transparent)]
    Step(#[from] crate::pipeline::StepError),
    /// Retention could not be applied.
    #[error(transparent)]
    Lifecycle(#[from] crate::lifecycle::LifecycleError),
    /// A remote build's command output could not be read.
    #[error(transparent)]
    CommandLogs(#[from] crate::backends::ec2::logs::CommandLogsError),
    /// A template's shell-local provisioner failed before the build.
    #[error(transparent)]
    ShellLocal(#[from] crate::backends::local::shell_local::ShellLocalError),
    /// A build ran and did not succeed (the message says where and why).
    #[error("{0}")]
    BuildFailed(String),
    /// A Step Functions call of a remote build failed.
    #[error("Step Functions: {0}")]
    StepFunctions(String),
    /// The command `builds shell` ran in a kept sandbox failed.
    #[error("the command in build {id}'s sandbox exited with {status}")]
    ShellExited {
        /// The build.
        id: String,
        /// Its exit status.
        status: i32,
    },
    /// No build record has this id.
    #[error("no build {0}")]
    NoBuild(String),
    /// A file named on the command line could not be read or written.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A `--var-file` could not be read as variables.
    #[error("--var-file {}: {reason}", file.display())]
    VarFile {
        /// The file.
        file: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An image reference is not `NAME@VERSION`.
    #[error("{0:?}: expected NAME@VERSION, e.g. base@1.2")]
    NotAReference(String),
    /// `image resolve` was given neither a reference nor a label.
    #[error("image resolve: give a REFERENCE or --label LABEL")]
    NothingToResolve,
    /// `--on-error=ask` with `--remote`.
    #[error(
        "--on-error=ask needs a terminal when the build fails; with --remote use --on-error=abort"
    )]
    AskNeedsTerminal,
    /// A local build's base is missing or not what its name says.
    #[error("{0}; nothing was started")]
    LocalBase(crate::recipe::Problem),
    /// `--table` given to a local build.
    #[error("--table {0} (or BAKEHOUSE_TABLE) selects the DynamoDB registry, but a local build records into the embedded registry (--db): build with --remote, or drop --table; nothing was started")]
    TableWithLocalBuild(String),
    /// `--build-id` names a build another live process runs.
    #[error("--build-id {build_id}: in use by running process {pid}")]
    BuildIdInUse {
        /// The build id.
        build_id: String,
        /// The process running it.
        pid: u32,
    },
    /// A stop signal's handler could not be installed.
    #[error("{signal}: {reason}")]
    Signal {
        /// The signal's name.
        signal: &'static str,
        /// Why.
        reason: String,
    },
    /// `--remote` without a state machine.
    #[error("--remote needs --state-machine ARN (or BAKEHOUSE_STATE_MACHINE_ARN)")]
    NoStateMachine,
    /// `packer convert`/`inspect` given something that is not a template.
    #[error("{}: not a Packer template (JSON with a `builders` list, a .pkr.hcl file or a directory of them); recipes need no conversion", .0.display())]
    NotATemplate(PathBuf),
    /// The converted recipe could not be written as YAML.
    #[error("cannot write the recipe: {0}")]
    ConvertedRecipe(String),
    /// `builds logs` of a build that keeps no log.
    #[error("build {0} keeps no log (a remote build deployed without a command log group keeps its output in SSM; the record's notes hold the tails: `builds show {0}`)")]
    NoLog(String),
    /// The Packer manifest a template asked for could not be written.
    #[error("packer manifest: {0}")]
    PackerManifest(String),
    /// `validate` found problems (already printed).
    #[error("{0} problem(s) found; nothing was launched")]
    Invalid(usize),
    /// A signal stopped a local build (which was torn down).
    #[error("interrupted by {signal}: the build was cancelled")]
    Interrupted {
        /// The signal's name.
        signal: &'static str,
        /// The exit status it gives (128 + its number).
        code: u8,
    },
}

impl CliError {
    /// The process exit status for this error: 128 + the signal for an
    /// interrupted build, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Interrupted { code, .. } => *code,
            _ => 1,
        }
    }

    /// Whether writing the output failed only because its reader closed
    /// the pipe.
    pub fn is_broken_pipe(&self) -> bool {
        match self {
            CliError::Output(e) => e.kind() == std::io::ErrorKind::BrokenPipe,
            CliError::Json(e) => e.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe),
            _ => false,
        }
    }
}

/// The `bakehouse` command.
#[derive(Debug, Parser)]
#[command(name = "bakehouse", version, about = "Golden machine image factory")]
pub struct Cli {
    /// Where the registry lives.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print exactly one JSON document on stdout instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Every log line (debug level), not only warnings and the progress
    /// display. `BAKEHOUSE_LOG` (an `EnvFilter`, e.g. `bakehouse=debug`)
    /// overrides both flags.
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    pub verbose: bool,
    /// Errors only: no progress display, no log lines.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Colours and the progress display: `auto` (on a terminal, unless
    /// `NO_COLOR` is set), `always` or `never`.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// Log lines on stderr as text, or as JSON lines (one event per line:
    /// steps started and finished, every output line of a provisioner,
    /// test or clean script); JSON turns the step display off.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `--color`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless `NO_COLOR` is set.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

impl ColorChoice {
    /// Whether to colour (and animate) output written to stderr.
    pub fn enabled(self) -> bool {
        use std::io::IsTerminal;
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::io::stderr().is_terminal()
                    && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            }
        }
    }
}

impl Cli {
    /// The log filter: `BAKEHOUSE_LOG` if set; else errors with `-q`,
    /// debug with `-v`, warnings while a progress display is shown (a
    /// terminal), info otherwise (logs of CI runs).
    pub fn log_filter(&self) -> String {
        if let Ok(filter) = std::env::var("BAKEHOUSE_LOG") {
            return filter;
        }
        if self.quiet {
            "error".into()
        } else if self.verbose {
            "warn,bakehouse=debug".into()
        } else if self.color.enabled() && self.log_format == LogFormat::Text {
            "warn".into()
        } else {
            "warn,bakehouse=info".into()
        }
    }

    /// Whether the build's step display is drawn.
    pub fn progress(&self) -> bool {
        !self.quiet && self.color.enabled() && self.log_format == LogFormat::Text
    }
}

/// Registry store selection.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// DynamoDB table of the registry (uses the standard AWS environment:
    /// AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL). Without it the embedded
    /// registry is used.
    #[arg(long, global = true, env = "BAKEHOUSE_TABLE")]
    pub table: Option<String>,
    /// The embedded registry database.
    #[arg(
        long,
        global = true,
        env = "BAKEHOUSE_DB",
        default_value = ".bakehouse/registry.db"
    )]
    pub db: PathBuf,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage the image registry.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Build a recipe: locally (the pipeline state machine on this machine,
    /// a chroot, the embedded registry) or with --remote in Step Functions.
    Build(build::BuildArgs),
    /// Past builds with their step history.
    #[command(subcommand)]
    Builds(builds::BuildsCommand),
    /// Check recipes (YAML, JSON or Packer templates) and report every
    /// problem with file, line, field and what is wrong. Launches nothing.
    Validate {
        /// Recipe files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Packer template variables.
        #[command(flatten)]
        vars: TemplateVars,
    },
    /// Print the JSON Schema of a recipe (draft 2020-12), for editors and
    /// CI checks; `validate` remains the complete check.
    Schema,
    /// Packer templates: convert one to a recipe, inspect one.
    #[command(subcommand)]
    Packer(packer::PackerCommand),
}

impl StoreArgs {
    /// Opens the configured registry.
    pub async fn registry(&self) -> Result<Registry, CliError> {
        match &self.table {
            Some(table) => {
                let config = crate::aws::from_env(None).await;
                Ok(Registry::new(Arc::new(crate::registry::DynamoStore::new(
                    &config, table,
                ))))
            }
            None => Ok(Registry::new(Arc::new(SqliteStore::open(&self.db)?))),
        }
    }
}

impl StoreArgs {
    /// The registry for a command that only reads: an embedded database
    /// that does not exist yet reads as empty and is not created.
    pub async fn registry_for_reading(&self) -> Result<Registry, CliError> {
        if self.table.is_none() && !self.db.exists() {
            return Ok(Registry::new(Arc::new(SqliteStore::in_memory()?)));
        }
        self.registry().await
    }

    /// Build records for a command that only reads (see
    /// [`StoreArgs::registry_for_reading`]).
    pub async fn builds_for_reading(&self) -> Result<Arc<dyn BuildStore>, CliError> {
        if self.table.is_none() && !self.db.exists() {
            let sqlite = SqliteStore::in_memory()?;
            let builds = SqliteBuildStore::new(sqlite.connection())?;
            return Ok(Arc::new(builds));
        }
        self.builds().await
    }

    /// The embedded registry and build records (one SQLite file).
    pub fn local_stores(&self) -> Result<(Registry, Arc<dyn BuildStore>), CliError> {
        let sqlite = SqliteStore::open(&self.db)?;
        let builds = SqliteBuildStore::new(sqlite.connection())?;
        Ok((Registry::new(Arc::new(sqlite)), Arc::new(builds)))
    }

    /// Build records: the DynamoDB table with `--table`, else the embedded file.
    pub async fn builds(&self) -> Result<Arc<dyn BuildStore>, CliError> {
        match &self.table {
            Some(table) => {
                let config = crate::aws::from_env(None).await;
                let client = aws_sdk_dynamodb::Client::new(&config);
                Ok(Arc::new(DynamoBuildStore::new(client, table)))
            }
            None => Ok(self.local_stores()?.1),
        }
    }
}

/// Runs a parsed command, writing its output to `out`.
pub async fn run(cli: Cli, out: &mut dyn Write) -> Result<(), CliError> {
    let format = if cli.json {
        Format::Json
    } else {
        Format::Table
    };
    let shown = cli.progress();
    match cli.command {
        Command::Image(cmd) => image::run(cmd, &cli.store, format, out).await,
        Command::Validate { files, vars } => validate(&files, &vars, format, out),
        Command::Schema => Ok(output::json(out, &crate::recipe::schema::recipe_schema())?),
        Command::Packer(cmd) => packer::run(cmd, format, out),
        Command::Builds(cmd) => builds::run(cmd, &cli.store, format, out).await,
        Command::Build(args) if args.remote => {
            build::run_remote(&args, &cli.store, format, shown, out).await
        }
        Command::Build(args) => build::run_local(&args, &cli.store, format, shown, out).await,
    }
}

fn validate(
    files: &[PathBuf],
    vars: &TemplateVars,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let problems = crate::recipe::validate_files_with(files, &vars.load_options()?);
    match format {
        Format::Json => {
            let list: Vec<serde_json::Value> = problems
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "file": p.file.display().to_string(),
                        "line": p.line,
                        "column": p.column,
                        "field": p.field,
                        "message": p.message,
                    })
                })
                .collect();
            output::json(out, &list)?;
        }
        Format::Table => {
            for p in &problems {
                writeln!(out, "{p}")?;
            }
            if problems.is_empty() {
                writeln!(out, "{} recipe(s) valid", files.len())?;
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CliError::Invalid(problems.len()))
    }
}
