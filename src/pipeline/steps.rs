//! The pipeline's step handlers — the code each Lambda function (and the
//! local runner) calls: launch, provision, clean, capture, test, register,
//! teardown. They own the build record, the bake key and the registry; the
//! [`BuilderBackend`] does the baking.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::build::{BuildRecord, BuildStatus, BuildStore, Failure, RecipeBundle, Step};
use crate::recipe::{self, LoadedRecipe, OsKind, VersionPolicy};
use crate::registry::{self, AddRequest, Registry, VersionChoice};

use super::callback::{self, AfterWait, TaskCallback};
use super::io::{
    wait_seconds, AwaitInput, ExecutionInput, LaunchInput, RecipeSpec, StepInput, StepOutput,
    TeardownInput, TeardownOutput, WakeInput,
};
use super::{bundle, BuildContext, BuilderBackend, Progress, StepError};

/// Settings of the pipeline, read once at start.
#[derive(Clone, Debug)]
pub struct PipelineSettings {
    /// Where recipes are unpacked for a step (`/tmp` in Lambda).
    pub scratch_dir: PathBuf,
    /// Fault injection for tests: this step fails after doing its work, to
    /// prove teardown cleans up after it. Only in builds with the `testing`
    /// feature (tests and benchmarks), never in the Lambda functions.
    #[cfg(feature = "testing")]
    pub fail_at: Option<Step>,
}

impl PipelineSettings {
    /// Settings with recipes unpacked under `scratch_dir` (and no fault
    /// injection).
    pub fn new(scratch_dir: PathBuf) -> Self {
        PipelineSettings {
            scratch_dir,
            #[cfg(feature = "testing")]
            fail_at: None,
        }
    }
}

impl Default for PipelineSettings {
    fn default() -> Self {
        PipelineSettings::new(std::env::temp_dir().join("bakehouse"))
    }
}

/// The pipeline: the step handlers over a registry, build records and a
/// builder backend.
#[derive(Clone)]
pub struct Pipeline {
    registry: Registry,
    builds: Arc<dyn BuildStore>,
    backend: Arc<dyn BuilderBackend>,
    settings: PipelineSettings,
    callback: Option<Arc<dyn TaskCallback>>,
}

fn parse<T: DeserializeOwned>(step: Step, input: Value) -> Result<T, StepError> {
    serde_json::from_value(input).map_err(|e| StepError::NonRetryable(format!("{step} input: {e}")))
}

fn to_value<T: serde::Serialize>(value: &T) -> Result<Value, StepError> {
    serde_json::to_value(value).map_err(|e| StepError::NonRetryable(e.to_string()))
}

impl Pipeline {
    /// A pipeline over the given parts.
    pub fn new(
        registry: Registry,
        builds: Arc<dyn BuildStore>,
        backend: Arc<dyn BuilderBackend>,
        settings: PipelineSettings,
    ) -> Pipeline {
        Pipeline {
            registry,
            builds,
            backend,
            settings,
            callback: None,
        }
    }

    /// Completes parked steps' task tokens through `callback` (Step
    /// Functions in AWS); without one, a parked step is refused.
    pub fn with_callback(mut self, callback: Arc<dyn TaskCallback>) -> Pipeline {
        self.callback = Some(callback);
        self
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The build records.
    pub fn builds(&self) -> &Arc<dyn BuildStore> {
        &self.builds
    }

    /// Runs a step on JSON input (what a Lambda receives) and returns its
    /// JSON output.
    pub async fn invoke(&self, step: Step, input: Value) -> Result<Value, StepError> {
        if input.get("task_token").is_some() {
            let input: AwaitInput = parse(step, input)?;
            return self.park(step, input).await;
        }
        if input.get("wake").is_some() {
            let input: WakeInput = parse(step, input)?;
            return self.wake(step, &input.build_id).await;
        }
        match step {
            Step::Launch => {
                if input.get("request").is_some() {
                    to_value(&self.launch(parse(step, input)?).await?)
                } else {
                    to_value(&self.launch_poll(parse(step, input)?).await?)
                }
            }
            Step::Teardown => to_value(&self.teardown(parse(step, input)?).await?),
            other => to_value(&self.run_step(other, parse(step, input)?).await?),
        }
    }

    /// One poll of a waiting step (what the `WaitFor<Step>` states wait on).
    pub async fn poll(&self, step: Step, input: StepInput) -> Result<StepOutput, StepError> {
        match step {
            Step::Launch => self.launch_poll(input).await,
            other => self.run_step(other, input).await,
        }
    }

    /// Parks `step` on the state's task token and polls it once (the work
    /// may have ended before the token was stored), unless another poller
    /// holds the step; see [`crate::pipeline::TaskCallback`].
    async fn park(&self, step: Step, input: AwaitInput) -> Result<Value, StepError> {
        build_path_component(&input.build_id)?;
        let callback = self.task_callback(step)?;
        let mut held = None;
        crate::build::update(self.builds.as_ref(), &input.build_id, |r| {
            held = callback::park(r, step, &input.task_token, input.polls, Utc::now());
        })
        .await?;
        match held {
            Some(held) => self.poll_parked(&input.build_id, held, callback).await,
            None => Ok(
                serde_json::json!({"build_id": input.build_id, "parked": "another poller holds the step"}),
            ),
        }
    }

    /// An event concerning the build came: polls `step` if it is parked
    /// (and no one else polls it) and completes its token when it is done
    /// or failed. Returns what happened, for the log.
    pub async fn wake(&self, step: Step, build_id: &str) -> Result<Value, StepError> {
        build_path_component(build_id)?;
        let callback = self.task_callback(step)?;
        let mut taken = None;
        crate::build::update(self.builds.as_ref(), build_id, |r| {
            taken = callback::take(r, step, Utc::now());
        })
        .await?;
        match taken {
            Some(held) => self.poll_parked(build_id, held, callback).await,
            None => {
                Ok(serde_json::json!({"build_id": build_id, "woke": "nothing to poll: marked"}))
            }
        }
    }

    fn task_callback(&self, step: Step) -> Result<Arc<dyn TaskCallback>, StepError> {
        self.callback.clone().ok_or_else(|| {
            StepError::NonRetryable(format!(
                "{step}: a task token was given but this function cannot complete tokens"
            ))
        })
    }

    /// Polls the held step until it is done, failed, or parked again.
    async fn poll_parked(
        &self,
        build_id: &str,
        mut held: crate::build::Awaiting,
        callback: Arc<dyn TaskCallback>,
    ) -> Result<Value, StepError> {
        loop {
            let input = StepInput {
                build_id: build_id.to_string(),
                polls: held.polls,
            };
            let result = match self.poll(held.step, input).await {
                Ok(out) if !out.done => {
                    held.polls = out.polls;
                    let mut after = None;
                    crate::build::update(self.builds.as_ref(), build_id, |r| {
                        after = Some(callback::put_back(r, &held, Utc::now()));
                    })
                    .await?;
                    match after {
                        Some(AfterWait::PollAgain(next)) => {
                            held = next;
                            continue;
                        }
                        _ => {
                            return Ok(serde_json::json!({"build_id": build_id, "woke": "waiting"}))
                        }
                    }
                }
                Ok(out) => Ok(to_value(&out)?),
                Err(e) => Err((e.name(), super::lambda_error_cause(&e))),
            };
            return self
                .complete(build_id, &held, &result, callback.as_ref())
                .await;
        }
    }

    /// Completes `held` (and a newer token parked meanwhile) with `result`;
    /// a token that could not be completed goes back into the record.
    async fn complete(
        &self,
        build_id: &str,
        held: &crate::build::Awaiting,
        result: &Result<Value, (&str, String)>,
        callback: &dyn TaskCallback,
    ) -> Result<Value, StepError> {
        let send = |token: String| async move {
            match result {
                Ok(out) => callback.succeed(&token, out.clone()).await,
                Err((error, cause)) => callback.fail(&token, error, cause).await,
            }
        };
        if let Err(e) = send(held.token.clone()).await {
            crate::build::update(self.builds.as_ref(), build_id, |r| {
                callback::release(r, held)
            })
            .await?;
            return Err(e);
        }
        let mut newer = None;
        crate::build::update(self.builds.as_ref(), build_id, |r| {
            newer = callback::finish(r);
        })
        .await?;
        if let Some(newer) = newer {
            if let Err(e) = send(newer.token.clone()).await {
                crate::build::update(self.builds.as_ref(), build_id, |r| {
                    callback::release(r, &newer)
                })
                .await?;
                return Err(e);
            }
        }
        let outcome = if result.is_ok() { "done" } else { "failed" };
        Ok(serde_json::json!({"build_id": build_id, "woke": outcome}))
    }

    fn scratch(&self, build_id: &str, step: Step) -> Result<PathBuf, StepError> {
        Ok(self
            .settings
            .scratch_dir
            .join(build_path_component(build_id)?)
            .join(format!("recipe-{step}")))
    }

    async fn record(&self, build_id: &str) -> Result<BuildRecord, StepError> {
        self.builds
            .get(build_id)
            .await?
            .ok_or_else(|| StepError::NonRetryable(format!("no build {build_id}")))
    }

    async fn context(
        &self,
        build_id: &str,
        step: Step,
        polls: u32,
    ) -> Result<BuildContext, StepError> {
        build_path_component(build_id)?;
        let record =
            crate::build::update(self.builds.as_ref(), build_id, |r| r.step_invoked(step)).await?;
        let recipe = bundle::materialize(&record.bundle, &self.scratch(build_id, step)?)?;
        Ok(BuildContext {
            build_id: build_id.to_string(),
            recipe: Some(recipe),
            polls,
            record,
            step,
            store: self.builds.clone(),
        })
    }

    #[cfg(feature = "testing")]
    fn injected(&self, step: Step) -> Result<(), StepError> {
        if self.settings.fail_at == Some(step) {
            return Err(StepError::BuildFailed(format!(
                "injected failure after {step} (fault injection)"
            )));
        }
        Ok(())
    }

    #[cfg(not(feature = "testing"))]
    fn injected(&self, _step: Step) -> Result<(), StepError> {
        Ok(())
    }

    async fn bundle_for(&self, request: &ExecutionInput) -> Result<RecipeBundle, StepError> {
        match &request.recipe {
            RecipeSpec::Inline(_) => request
                .inline_bundle()
                .ok_or_else(|| StepError::NonRetryable("recipe: missing".into())),
            RecipeSpec::Name(name) => self.builds.get_recipe(name).await?.ok_or_else(|| {
                StepError::NonRetryable(format!(
                    "recipe {name:?} is not stored: a recipe is stored when a push touches it (or pass the recipe inline)"
                ))
            }),
        }
    }

    /// First launch call: creates the build record (once), resolves the
    /// base, computes the bake key, answers a cache hit, or starts the builder.
    pub async fn launch(&self, input: LaunchInput) -> Result<StepOutput, StepError> {
        let build_id = input
            .request
            .build_id
            .clone()
            .unwrap_or_else(|| input.execution.clone());
        build_path_component(&build_id)?;
        let bundle = self.bundle_for(&input.request).await?;
        let name = bundle::bundle_name(&bundle).unwrap_or_else(|| "<unnamed>".into());
        let mut record = BuildRecord::new(
            &build_id,
            &name,
            bundle,
            input.request.trigger.to_trigger(),
            input.request.force,
        );
        if self.backend.runs_in_process() {
            record.owner = crate::build::Owner::current();
        }
        if !self.builds.create(&record).await? {
            let existing = self.record(&build_id).await?;
            if let Some(owner) = super::owned_by_another_live_process(&existing) {
                return Err(StepError::NonRetryable(format!(
                    "build id {build_id} is in use by running process {}",
                    owner.pid
                )));
            }
            tracing::info!(build = %build_id, "launch retried: build record exists");
        }
        self.launch_poll(StepInput { build_id, polls: 0 }).await
    }

    /// Later launch calls (and the body of the first): waits for the builder.
    pub async fn launch_poll(&self, input: StepInput) -> Result<StepOutput, StepError> {
        let ctx = self
            .context(&input.build_id, Step::Launch, input.polls)
            .await?;
        let recipe = ctx.recipe()?;
        if ctx.record.base_id.is_none() {
            let base = self.backend.resolve_base(recipe, &self.registry).await?;
            let key = recipe::bake_key(recipe, &base.id)?;
            tracing::info!(build = %ctx.build_id, base = %base.id, bake_key = %key, "resolved base");
            ctx.update(|r| {
                r.base_id = Some(base.id.clone());
                r.parent = base.parent.clone();
                r.bake_key = Some(key.clone());
            })
            .await?;
        }
        let record = ctx.current().await?;
        if record.cache_hit {
            return Ok(self.output(&record, true, 0));
        }
        if !record.force {
            if let Some(key) = &record.bake_key {
                // A deprecated or revoked version (e.g. revoked by the
                // teardown of a build that failed after registering) is not
                // served from the cache: bake again.
                let found = self.registry.find_by_bake_key(key).await?;
                if let Some(existing) = found.filter(|p| p.status == registry::Status::Active) {
                    let version = format!("{}@{}", existing.name, existing.version);
                    tracing::info!(build = %ctx.build_id, %version, "bake key registered: cache hit");
                    let record = ctx
                        .update(|r| {
                            r.cache_hit = true;
                            r.version = Some(version.clone());
                            r.status = BuildStatus::Succeeded;
                            r.step_finished(Step::Launch);
                        })
                        .await?;
                    return Ok(self.output(&record, true, 0));
                }
            }
        }
        let ctx = BuildContext { record, ..ctx };
        match self.backend.launch(&ctx).await? {
            Progress::Done(()) => self.finish(&ctx).await,
            Progress::Wait => Ok(self.output(&ctx.record, false, input.polls + 1)),
        }
    }

    async fn finish(&self, ctx: &BuildContext) -> Result<StepOutput, StepError> {
        let step = ctx.step;
        // An injected failure leaves the step unfinished, so teardown names
        // it as the step that failed.
        self.injected(step)?;
        let record = ctx.update(|r| r.step_finished(step)).await?;
        Ok(self.output(&record, true, 0))
    }

    fn output(&self, record: &BuildRecord, done: bool, polls: u32) -> StepOutput {
        StepOutput {
            build_id: record.id.clone(),
            done,
            wait_seconds: if done {
                0
            } else {
                wait_seconds(polls.saturating_sub(1))
            },
            polls,
            cache_hit: record.cache_hit,
            version: record.version.clone(),
        }
    }

    /// Provision, clean, capture, test and register.
    pub async fn run_step(&self, step: Step, input: StepInput) -> Result<StepOutput, StepError> {
        let ctx = self.context(&input.build_id, step, input.polls).await?;
        let progress = match step {
            Step::Provision => self.backend.provision(&ctx).await?,
            Step::Clean => self.backend.clean(&ctx).await?,
            Step::Capture => match self.backend.capture(&ctx).await? {
                Progress::Done(artifacts) => {
                    ctx.update(|r| r.artifacts = artifacts.clone()).await?;
                    Progress::Done(())
                }
                Progress::Wait => Progress::Wait,
            },
            Step::Test => self.backend.test(&ctx).await?,
            Step::Register => {
                self.register(&ctx).await?;
                Progress::Done(())
            }
            Step::Launch | Step::Teardown => {
                return Err(StepError::NonRetryable(format!(
                    "{step} is not a polled step"
                )))
            }
        };
        match progress {
            Progress::Done(()) => self.finish(&ctx).await,
            Progress::Wait => Ok(self.output(&ctx.record, false, input.polls + 1)),
        }
    }

    async fn register(&self, ctx: &BuildContext) -> Result<(), StepError> {
        let record = ctx.current().await?;
        if record.version.is_some() {
            return Ok(());
        }
        let recipe = &ctx.recipe()?.recipe;
        if record.artifacts.is_empty() {
            return Err(StepError::NonRetryable(
                "register: capture produced no artifacts".into(),
            ));
        }
        let mut req = AddRequest::new(
            recipe.name.clone(),
            match recipe.os {
                OsKind::Linux => registry::Os::Linux,
                OsKind::Windows => registry::Os::Windows,
            },
            record.artifacts.clone(),
        );
        req.label = Some(recipe.label().to_string());
        req.version = match &recipe.version {
            VersionPolicy::Bump(part) => VersionChoice::Bump(match part {
                recipe::BumpPart::Major => registry::BumpPart::Major,
                recipe::BumpPart::Minor => registry::BumpPart::Minor,
                recipe::BumpPart::Patch => registry::BumpPart::Patch,
            }),
            VersionPolicy::Exact(v) => VersionChoice::Exact(v.parse()?),
        };
        // A forced rebuild must get its own version, and a retried register
        // must not get a second one: the build id makes its key unique.
        req.bake_key = record.bake_key.as_ref().map(|k| {
            if record.force {
                format!("{k}+forced:{}", record.id)
            } else {
                k.clone()
            }
        });
        req.parent = record.parent.clone().or_else(|| record.base_id.clone());
        req.trigger = Some(record.trigger.clone());
        req.build_id = Some(record.id.clone());
        let outcome = self.registry.add(req).await?;
        let version = format!("{}@{}", outcome.package.name, outcome.package.version);
        tracing::info!(build = %ctx.build_id, %version, reused = outcome.reused, "registered");
        ctx.update(|r| r.version = Some(version.clone())).await?;
        Ok(())
    }

    /// Removes what a failed build kept for debugging (`on_error: abort`):
    /// its builder is torn down like any failed build's, and the record no
    /// longer says it is kept. Safe to run twice.
    pub async fn release_kept(&self, build_id: &str) -> Result<BuildRecord, StepError> {
        build_path_component(build_id)?;
        let record = self.record(build_id).await?;
        if record.kept.is_none() {
            return Ok(record);
        }
        let recipe = self
            .scratch(build_id, Step::Teardown)
            .and_then(|dir| bundle::materialize(&record.bundle, &dir))
            .ok();
        let ctx = BuildContext {
            build_id: build_id.to_string(),
            recipe,
            polls: 0,
            record,
            step: Step::Teardown,
            store: self.builds.clone(),
        };
        self.backend.teardown(&ctx, false).await?;
        tracing::info!(build = %build_id, "kept builder released");
        ctx.update(|r| r.kept = None).await
    }

    /// Tears the build down (on every path) and marks it SUCCEEDED or FAILED.
    pub async fn teardown(&self, input: TeardownInput) -> Result<TeardownOutput, StepError> {
        let state = &input.state;
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
        let build_id = text(state.pointer("/build/build_id"))
            .or_else(|| text(state.pointer("/request/build_id")))
            .or_else(|| text(state.pointer("/execution")))
            .ok_or_else(|| StepError::NonRetryable("teardown: no build id in the state".into()))?;
        // Nothing is looked up, written or removed for an id outside the grammar.
        build_path_component(&build_id)?;
        // `$.error` is a catcher's error output. Its cause is a Lambda error
        // payload (AWS and the local runner), a plain text, or absent (a
        // Task's States.Timeout): the record keeps the message alone.
        let error = state.get("error").map(|e| {
            let name = text(e.get("Error")).unwrap_or_else(|| "States.TaskFailed".into());
            let cause = super::failure_message(&name, text(e.get("Cause")).as_deref());
            (name, cause)
        });
        let mut record = match self.builds.get(&build_id).await? {
            Some(r) => {
                if let Some(owner) = super::owned_by_another_live_process(&r) {
                    return Err(StepError::NonRetryable(format!(
                        "build {build_id} belongs to running process {}: not torn down",
                        owner.pid
                    )));
                }
                r
            }
            None => {
                // The build failed before its record existed (e.g. a broken
                // recipe at launch): write one that says why.
                let request: Option<ExecutionInput> = state
                    .get("request")
                    .and_then(|r| serde_json::from_value(r.clone()).ok());
                let bundle = request
                    .as_ref()
                    .and_then(|r| r.inline_bundle())
                    .unwrap_or_default();
                let name = bundle::bundle_name(&bundle)
                    .or_else(|| match request.as_ref().map(|r| &r.recipe) {
                        Some(RecipeSpec::Name(n)) => Some(n.clone()),
                        _ => None,
                    })
                    .unwrap_or_else(|| "<unknown>".into());
                let trigger = request
                    .as_ref()
                    .map(|r| r.trigger.to_trigger())
                    .unwrap_or_else(|| registry::Trigger::of(registry::TriggerKind::Console));
                let mut r = BuildRecord::new(&build_id, &name, bundle, trigger, false);
                r.step_invoked(Step::Launch);
                self.builds.create(&r).await?;
                self.record(&build_id).await?
            }
        };
        record.step_invoked(Step::Teardown);
        self.builds.save(&mut record).await?;
        let recipe = self
            .scratch(&build_id, Step::Teardown)
            .and_then(|dir| bundle::materialize(&record.bundle, &dir))
            .ok();
        let ctx = BuildContext {
            build_id: build_id.clone(),
            recipe,
            polls: 0,
            record: record.clone(),
            step: Step::Teardown,
            store: self.builds.clone(),
        };
        let succeeded = error.is_none() && record.failure.is_none();
        let keep = !succeeded
            && state
                .pointer("/request/on_error")
                .and_then(|v| serde_json::from_value::<super::io::OnFailure>(v.clone()).ok())
                == Some(super::io::OnFailure::Abort);
        let mut outcome = if keep {
            match self.backend.teardown_keeping_builder(&ctx).await {
                Ok(Some(kept)) => {
                    tracing::info!(build = %build_id, %kept, "failed build's builder kept (on_error: abort)");
                    ctx.update(|r| r.kept = Some(kept.clone()))
                        .await
                        .map(|_| ())
                }
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            }
        } else {
            self.backend.teardown(&ctx, succeeded).await
        };
        if let (false, false, Some(version)) = (succeeded, record.cache_hit, &record.version) {
            // The build registered a version, then failed: its images are
            // gone, so the version must not be resolved or reused.
            outcome = outcome.and(self.revoke(version).await);
        }
        let failed_step = record.unfinished_step().unwrap_or(Step::Launch).to_string();
        let record = ctx
            .update(|r| {
                r.step_finished(Step::Teardown);
                match (&error, &outcome) {
                    (Some((err, cause)), _) => {
                        r.status = if err == super::CANCELLED {
                            BuildStatus::Cancelled
                        } else {
                            BuildStatus::Failed
                        };
                        let cause = r.masked(cause);
                        r.failure.get_or_insert(Failure {
                            step: failed_step.clone(),
                            error: err.clone(),
                            cause,
                        });
                    }
                    (None, Err(e)) => {
                        r.status = BuildStatus::Failed;
                        let cause = r.masked(&e.to_string());
                        r.failure.get_or_insert(Failure {
                            step: "teardown".into(),
                            error: e.name().into(),
                            cause,
                        });
                    }
                    (None, Ok(())) => r.status = BuildStatus::Succeeded,
                }
            })
            .await?;
        let _ = std::fs::remove_dir_all(self.settings.scratch_dir.join(&build_id));
        outcome?;
        tracing::info!(build = %build_id, status = %record.status, "teardown done");
        Ok(TeardownOutput {
            build_id,
            status: record.status.to_string(),
            version: record.version,
        })
    }
}

impl Pipeline {
    async fn revoke(&self, version: &str) -> Result<(), StepError> {
        let reference: registry::Reference = version.parse()?;
        let registry::VersionPattern::Exact(v) = reference.pattern else {
            return Err(StepError::NonRetryable(format!(
                "build record version {version:?} is not name@version"
            )));
        };
        self.registry
            .set_status(&reference.name, &v, registry::Status::Revoked)
            .await?;
        tracing::warn!(%version, "revoked the version registered by a failed build");
        Ok(())
    }
}

/// A build id checked against its grammar
/// ([`crate::build::check_build_id`]), ready to be one path component.
pub fn build_path_component(build_id: &str) -> Result<&str, StepError> {
    crate::build::check_build_id(build_id).map_err(|e| StepError::NonRetryable(e.to_string()))?;
    Ok(build_id)
}

/// Loads a recipe file for a build started from this machine: validated and
/// packed, ready to put in the execution input.
pub fn load_for_build(path: &std::path::Path) -> Result<(LoadedRecipe, RecipeBundle), StepError> {
    load_for_build_with(path, &recipe::LoadOptions::default())
}

/// [`load_for_build`] with Packer template variables and environment.
pub fn load_for_build_with(
    path: &std::path::Path,
    options: &recipe::LoadOptions,
) -> Result<(LoadedRecipe, RecipeBundle), StepError> {
    let loaded = recipe::load_with(path, options)?;
    let bundle = bundle::bundle(&loaded)?;
    Ok((loaded, bundle))
}
