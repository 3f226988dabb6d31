//! `bakehouse build RECIPE`: runs the pipeline state machine — locally (the
//! local ASL runner, the local chroot backend, the embedded registry) or,
//! with `--remote`, as a Step Functions execution it follows to the end.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::output::{self, Format};
use super::progress::StepProgress;
use super::{CliError, StoreArgs};
use crate::asl::{EventKind, ExecutionStatus, HistoryEvent, SystemClock};
use crate::backends::local::{LocalBackend, LocalSettings, OnError};
use crate::build::{BuildRecord, BuildStatus};
use crate::pipeline::io::{ExecutionInput, OnFailure, RecipeSpec, TriggerSpec};
use crate::pipeline::{self, Pipeline, PipelineSettings};
use crate::recipe::packer_manifest::ManifestRequest;
use crate::registry::{PackageVersion, Trigger, TriggerKind};
use tokio::signal::unix::{signal, Signal, SignalKind};

/// Arguments of `bakehouse build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The recipe file (YAML, JSON or a Packer template).
    pub recipe: PathBuf,
    /// Bake even if the bake key is already registered.
    #[arg(long)]
    pub force: bool,
    /// Build id (default: recipe name, time and a random suffix): a letter
    /// or digit, then letters, digits, '.', '_', '-'; at most 80 bytes.
    #[arg(long, value_parser = parse_build_id)]
    pub build_id: Option<String>,
    /// Start a Step Functions execution instead of building here.
    #[arg(long)]
    pub remote: bool,
    /// State machine ARN for --remote.
    #[arg(long, env = "BAKEHOUSE_STATE_MACHINE_ARN")]
    pub state_machine: Option<String>,
    /// Where local builds keep work directories, images and scratch files.
    #[arg(long, env = "BAKEHOUSE_HOME", default_value = ".bakehouse")]
    pub home: PathBuf,
    /// What a failed local build leaves (Packer's `-on-error`): `cleanup`
    /// everything, `abort` keeps the sandbox for `builds shell` (until
    /// `builds cleanup`), `ask` asks on the terminal.
    #[arg(long, value_enum, default_value_t = OnError::Cleanup)]
    pub on_error: OnError,
    /// Packer template variables.
    #[command(flatten)]
    pub vars: super::TemplateVars,
}

/// Checks a `--build-id` before anything is touched.
fn parse_build_id(text: &str) -> Result<String, String> {
    crate::build::check_build_id(text)
        .map(|()| text.to_string())
        .map_err(|e| e.reason)
}

/// A build id: recipe name, UTC time and a random suffix (a valid
/// Step Functions execution name).
pub fn new_build_id(recipe: &str) -> String {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let suffix: String = (0..4)
        .map(|_| fastrand::alphanumeric().to_ascii_lowercase())
        .collect();
    let mut id = format!("{recipe}-{stamp}-{suffix}");
    id.truncate(80);
    id
}

/// `--on-error` as the execution input carries it: a remote build keeps
/// its builder instance with `abort`; `ask` needs a terminal at the
/// failure, which a remote build does not have. A local build keeps its
/// sandbox through the local backend's own setting.
fn remote_on_error(args: &BuildArgs) -> Result<OnFailure, CliError> {
    match (args.remote, args.on_error) {
        (false, _) | (true, OnError::Cleanup) => Ok(OnFailure::Cleanup),
        (true, OnError::Abort) => Ok(OnFailure::Abort),
        (true, OnError::Ask) => Err(CliError::AskNeedsTerminal),
    }
}

/// A recipe file loaded for a build started from this machine.
struct Prepared {
    /// The recipe's name.
    name: String,
    /// The execution input (`build_id` and `on_error` still to set).
    input: ExecutionInput,
    /// A Packer template's manifest post-processor.
    manifest: Option<ManifestRequest>,
}

/// Loads `recipe` and makes its execution input; its sensitive values are
/// masked in this process's logs from now on. A template's shell-local
/// provisioners run first (sandboxed, in the template's directory, with
/// `home` hidden), and the template is read again after them, so what
/// they wrote is what the build uses.
async fn prepare(
    recipe: &Path,
    vars: &super::TemplateVars,
    force: bool,
    home: &Path,
) -> Result<Prepared, CliError> {
    let options = vars.load_options()?;
    let (mut loaded, mut bundle) = pipeline::load_for_build_with(recipe, &options)?;
    super::log_mask::mask_in_logs(&loaded.recipe.sensitive);
    // A bad base is reported before anything runs, shell-local included.
    if let Some(problem) = crate::recipe::check_local_base(&loaded) {
        return Err(CliError::LocalBase(problem));
    }
    if !loaded.shell_local.is_empty() {
        crate::backends::local::shell_local::run_shell_local(
            &loaded.shell_local,
            &loaded.dir,
            &[home.to_path_buf()],
            &loaded.recipe.sensitive,
        )
        .await?;
        (loaded, bundle) = pipeline::load_for_build_with(recipe, &options)?;
        // Read again: shell-local may have changed the base's files.
        if let Some(problem) = crate::recipe::check_local_base(&loaded) {
            return Err(CliError::LocalBase(problem));
        }
    }
    let mut trigger = Trigger::of(TriggerKind::Cli);
    trigger.actor = std::env::var("USER").ok();
    Ok(Prepared {
        name: loaded.recipe.name.clone(),
        input: ExecutionInput {
            recipe: RecipeSpec::Inline(bundle.recipe),
            files: bundle.files,
            trigger: TriggerSpec::Full(trigger),
            force,
            build_id: None,
            on_error: OnFailure::Cleanup,
        },
        manifest: loaded.packer_manifest,
    })
}

/// Prepares `args.recipe` and picks the build id (`--build-id`, else a
/// new one from the recipe's name).
async fn prepare_build(args: &BuildArgs) -> Result<(String, Prepared), CliError> {
    let mut prepared = prepare(&args.recipe, &args.vars, args.force, &args.home).await?;
    let build_id = args
        .build_id
        .clone()
        .unwrap_or_else(|| new_build_id(&prepared.name));
    prepared.input.build_id = Some(build_id.clone());
    prepared.input.on_error = remote_on_error(args)?;
    Ok((build_id, prepared))
}

/// Concludes a finished build: reads the version it registered (once),
/// writes the Packer manifest the template asked for, then prints the
/// outcome and fails if the build failed.
async fn conclude(
    record: &BuildRecord,
    manifest: Option<&ManifestRequest>,
    store: &StoreArgs,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let registered = record.version.as_deref().and_then(|v| v.split_once('@'));
    let package = match (&record.status, registered) {
        (BuildStatus::Succeeded, Some((name, v))) => {
            Some(store.registry().await?.show(name, &v.parse()?).await?)
        }
        _ => None,
    };
    if let (Some(manifest), Some(package)) = (manifest, &package) {
        let run_uuid = uuid::Uuid::new_v4().to_string();
        let path = manifest
            .append(Path::new("."), package, &run_uuid)
            .map_err(CliError::PackerManifest)?;
        tracing::info!(manifest = %path.display(), "wrote the Packer manifest");
    }
    report(record, package.as_ref(), format, out)
}

const PIPELINE_STATES: [(&str, &str); 7] = [
    ("Launch", "launch"),
    ("Provision", "provision"),
    ("Clean", "clean"),
    ("Capture", "capture"),
    ("Test", "test"),
    ("Register", "register"),
    ("Teardown", "teardown"),
];

/// Feeds history events to the step display.
fn observe(progress: &StepProgress, event: &HistoryEvent) {
    match &event.kind {
        EventKind::StateEntered { state, .. } => {
            if let Some((_, step)) = PIPELINE_STATES.iter().find(|(s, _)| s == state) {
                progress.step(step);
            }
        }
        EventKind::TaskRetried {
            state,
            error,
            attempt,
            ..
        } => progress.line(&format!(
            "    retrying {state} (attempt {attempt}) after {error}"
        )),
        _ => {}
    }
}

/// The local backend and pipeline over the embedded stores, with `home`
/// for work directories, images and scratch files.
pub(crate) fn local_pipeline(
    store: &StoreArgs,
    home: &Path,
    on_error: OnError,
) -> Result<(Pipeline, LocalBackend), CliError> {
    let backend = LocalBackend::new(LocalSettings {
        work_root: home.join("work"),
        images_dir: home.join("images"),
        on_error,
    });
    let (registry, builds) = store.local_stores()?;
    let settings = PipelineSettings::new(home.join("scratch"));
    let pipeline = Pipeline::new(registry, builds, Arc::new(backend.clone()), settings);
    Ok((pipeline, backend))
}

/// Cleans what killed builds left: builds whose process is gone are torn
/// down and marked `CANCELLED`, leftover work directories removed.
pub(crate) async fn collect_garbage(
    pipeline: &Pipeline,
    backend: &LocalBackend,
) -> Result<(Vec<pipeline::Collected>, Vec<String>), CliError> {
    let collected = pipeline.collect_abandoned().await?;
    let swept = backend.sweep_work_dirs(pipeline.builds().as_ref()).await?;
    Ok((collected, swept))
}

/// The signals that stop a local build, and the exit status each gives.
const STOP_SIGNALS: [(SignalKind, &str, u8); 2] = [
    (SignalKind::interrupt(), "SIGINT", 130),
    (SignalKind::terminate(), "SIGTERM", 143),
];

/// Waits for SIGINT or SIGTERM; the name and exit status of the first.
async fn stop_signal(streams: &mut [(Signal, &'static str, u8)]) -> (&'static str, u8) {
    let waits = streams.iter_mut().map(|(s, name, code)| {
        let (name, code) = (*name, *code);
        Box::pin(async move {
            s.recv().await;
            (name, code)
        })
    });
    futures::future::select_all(waits).await.0
}

/// Runs a local build of `args.recipe` with `backend`. SIGINT or SIGTERM
/// tears the build down and records it `CANCELLED` (exit 130 or 143); a
/// second one stops at once, leaving the record accurate and the rest to
/// `builds gc`. Builds abandoned by killed processes are collected first.
pub async fn run_local(
    args: &BuildArgs,
    store: &StoreArgs,
    format: Format,
    shown: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    if let Some(table) = &store.table {
        return Err(CliError::TableWithLocalBuild(table.clone()));
    }
    let (build_id, prepared) = prepare_build(args).await?;
    let input = &prepared.input;
    let (pipeline, backend) = local_pipeline(store, &args.home, args.on_error)?;
    let builds = pipeline.builds().clone();
    collect_garbage(&pipeline, &backend).await?;
    if let Some(existing) = builds.get(&build_id).await? {
        if let Some(owner) = pipeline::owned_by_another_live_process(&existing) {
            return Err(CliError::BuildIdInUse {
                build_id: build_id.clone(),
                pid: owner.pid,
            });
        }
    }
    let mut signals = Vec::new();
    for (kind, name, code) in STOP_SIGNALS {
        let stream = signal(kind).map_err(|e| CliError::Signal {
            signal: name,
            reason: e.to_string(),
        })?;
        signals.push((stream, name, code));
    }
    tracing::info!(build = %build_id, recipe = %args.recipe.display(), "building locally");
    let progress = StepProgress::new(shown, PIPELINE_STATES.len());
    let observer = {
        let progress = progress.clone();
        Arc::new(move |e: &HistoryEvent| observe(&progress, e))
    };
    let execution = pipeline::local::execute(
        pipeline.clone(),
        input,
        &build_id,
        Arc::new(SystemClock),
        Some(observer),
    );
    let execution = tokio::select! {
        execution = execution => execution?,
        (name, code) = stop_signal(&mut signals) => {
            // The execution (and with it the running command, whose sandbox
            // dies with it) is dropped here.
            progress.finish(false);
            tracing::warn!(build = %build_id, "{name}: tearing the build down (again to stop at once)");
            let reason = format!("interrupted by {name}");
            tokio::select! {
                torn = pipeline.cancel(&build_id, &reason) => {
                    if let Err(e) = torn {
                        tracing::error!(build = %build_id, "teardown after {name}: {e}");
                    }
                }
                (again, _) = stop_signal(&mut signals) => {
                    tracing::warn!(build = %build_id, "{again}: stopping without teardown; `bakehouse builds gc` removes what is left");
                    let _ = pipeline.mark_cancelled(&build_id, &reason).await;
                }
            }
            return Err(CliError::Interrupted { signal: name, code });
        }
    };
    progress.finish(execution.status == ExecutionStatus::Succeeded);
    let history: Vec<serde_json::Value> = execution
        .history
        .iter()
        .filter_map(|e| serde_json::to_value(e).ok())
        .collect();
    let transitions = execution.state_transitions;
    let record = crate::build::update(builds.as_ref(), &build_id, |r| {
        r.history = history.clone();
        r.state_transitions = transitions;
    })
    .await?;
    conclude(&record, prepared.manifest.as_ref(), store, format, out).await
}

/// Prints the outcome of a build (with the version it registered) and
/// fails if it failed.
fn report(
    record: &BuildRecord,
    package: Option<&PackageVersion>,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    if format == Format::Json {
        output::json(out, &record.for_display())?;
    } else if record.status == BuildStatus::Succeeded {
        let version = record.version.clone().unwrap_or_default();
        if record.cache_hit {
            writeln!(
                out,
                "cache hit: bake key {} is registered as {version}; nothing was baked",
                record.bake_key.as_deref().unwrap_or("-")
            )?;
        } else {
            writeln!(out, "built {version} (build {})", record.id)?;
        }
        if let Some(package) = package {
            output::version_detail(out, package)?;
        }
    }
    match (&record.status, &record.failure) {
        (BuildStatus::Succeeded, _) => Ok(()),
        (_, Some(f)) => Err(CliError::BuildFailed(format!(
            "build {} failed at {}: {}: {}",
            record.id, f.step, f.error, f.cause
        ))),
        (status, None) => Err(CliError::BuildFailed(format!(
            "build {} ended {status}",
            record.id
        ))),
    }
}

/// Starts a Step Functions execution for `args.recipe` and follows its
/// history until it ends; then reports the build record when `--table` is set.
pub async fn run_remote(
    args: &BuildArgs,
    store: &StoreArgs,
    format: Format,
    shown: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let machine = args
        .state_machine
        .clone()
        .ok_or_else(|| CliError::NoStateMachine)?;
    let (build_id, prepared) = prepare_build(args).await?;
    let input = &prepared.input;
    let config = crate::aws::from_env(None).await;
    let sfn = aws_sdk_sfn::Client::new(&config);
    let aws = CliError::StepFunctions;
    let body = serde_json::to_string(input)?;
    let started = sfn
        .start_execution()
        .state_machine_arn(&machine)
        .name(&build_id)
        .input(body)
        .send()
        .await
        .map_err(|e| aws(aws_sdk_sfn::error::DisplayErrorContext(e).to_string()))?;
    let arn = started.execution_arn().to_string();
    if format == Format::Json {
        tracing::info!(execution = %arn, "started");
    } else {
        writeln!(out, "started {arn}")?;
    }
    let progress = StepProgress::new(shown, PIPELINE_STATES.len());
    let mut seen = 0usize;
    let status = loop {
        let mut events = Vec::new();
        let mut pages = sfn
            .get_execution_history()
            .execution_arn(&arn)
            .into_paginator()
            .items()
            .send();
        while let Some(event) = pages.next().await {
            events.push(
                event.map_err(|e| aws(aws_sdk_sfn::error::DisplayErrorContext(e).to_string()))?,
            );
        }
        for event in events.iter().skip(seen) {
            let entered = event.state_entered_event_details().map(|d| d.name());
            if let Some((_, step)) = PIPELINE_STATES.iter().find(|(s, _)| Some(*s) == entered) {
                progress.step(step);
            }
        }
        seen = events.len();
        let described = sfn
            .describe_execution()
            .execution_arn(&arn)
            .send()
            .await
            .map_err(|e| aws(aws_sdk_sfn::error::DisplayErrorContext(e).to_string()))?;
        let status = described.status().as_str().to_string();
        if status != "RUNNING" {
            break (
                status,
                described.error().map(str::to_string),
                // In AWS a Lambda error's cause is its JSON payload: show the
                // message, as the build record does.
                described.cause().map(|cause| {
                    crate::pipeline::failure_message(described.error().unwrap_or(""), Some(cause))
                }),
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    progress.finish(status.0 == "SUCCEEDED");
    if store.table.is_some() {
        if let Ok(Some(record)) = store.builds().await?.get(&build_id).await {
            return conclude(&record, prepared.manifest.as_ref(), store, format, out).await;
        }
    }
    if format == Format::Json {
        output::json(
            out,
            &serde_json::json!({
                "build_id": build_id,
                "execution_arn": arn,
                "status": status.0,
                "error": status.1,
                "cause": status.2,
            }),
        )?;
    } else {
        writeln!(out, "execution {build_id} {}", status.0)?;
    }
    match status.0.as_str() {
        "SUCCEEDED" => Ok(()),
        other => Err(CliError::BuildFailed(format!(
            "execution {build_id} {other}: {} {}",
            status.1.unwrap_or_default(),
            status.2.unwrap_or_default()
        ))),
    }
}
