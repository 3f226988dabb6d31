//! The git push webhook, behind a Lambda function URL.
//!
//! A delivery is screened first ([`screen`]: POST only, at most 1 MiB, the
//! provider's signature checked in constant time, then other events, refs
//! and repositories answered 2xx and ignored). For a push to the configured
//! branch, [`Webhook::process`]:
//!
//! 1. lists the recipe files (`recipes/*.yaml|yml|json`) at the pushed
//!    commit and reads each through the provider's contents API;
//! 2. picks those the push touches ([`plan::touching`]), or all of them when
//!    the provider's commit list is not the whole change (forced push, new
//!    branch, list cut short);
//! 3. for each: fetches the files it uses at the commit, loads it with the
//!    full checks, stores it (`put_recipe`), creates, updates or deletes its
//!    schedule, and starts one execution named `<recipe>-<commit>` with the
//!    recipe inline (so the build is of exactly that commit, however many
//!    pushes follow) — a redelivery starts nothing new;
//! 4. for recipe files removed (or renamed to another recipe name), deletes
//!    the schedule and the stored recipe of the name they had before.
//!
//! Stored recipes and schedules follow the branch: when the branch has
//! moved past the pushed commit (a redelivery of an old push, or deliveries
//! handled out of order), the push still starts its builds but changes
//! neither (the report says `stale`).
//!
//! Invalid recipes are reported in the answer and skipped; failures to read
//! the repository or to reach AWS answer 5xx so the provider can redeliver.

pub mod fetch;
pub mod plan;
pub mod repo;
pub mod request;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use aws_lambda_events::lambda_function_urls::{
    LambdaFunctionUrlRequest, LambdaFunctionUrlResponse,
};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use futures::stream::{self, StreamExt};
use http::HeaderMap;
use serde::Serialize;

use crate::build::{BuildStore, BuildStoreError, DynamoBuildStore};
use crate::pipeline::io::{ExecutionInput, RecipeSpec, TriggerSpec};
use crate::recipe::Recipe;

use super::execution::{self, ExecutionError, StartOutcome};
use super::schedules::{ScheduleChange, ScheduleError, ScheduleSettings, Schedules};
use fetch::FetchError;
use repo::{ApiClient, EntryKind, RepoError, Repository};
pub use request::{
    screen, Provider, PushEvent, Rejection, ScreenSettings, Screened, Secret, MAX_BODY_BYTES,
};

/// Recipe files read at once.
const CONCURRENT_READS: usize = 8;

/// Errors of the webhook outside a single delivery's answer.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// A setting is missing or malformed.
    #[error(transparent)]
    Settings(#[from] crate::config::ConfigError),
    /// Something the webhook was configured with does not work.
    #[error("configuration: {0}")]
    Config(String),
    /// An SSM parameter could not be read.
    #[error("SSM parameter {name}: {message}")]
    Parameter {
        /// The parameter name.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// The repository could not be read.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// The recipe store failed.
    #[error(transparent)]
    Store(#[from] BuildStoreError),
    /// A schedule could not be changed.
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    /// An execution could not be started.
    #[error(transparent)]
    Execution(#[from] ExecutionError),
    /// The scratch directory could not be used.
    #[error("scratch directory {path}: {source}")]
    Scratch {
        /// Where.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

/// The webhook's settings, read from the environment once at cold start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookSettings {
    /// Provider, branch and optional repository pin.
    pub screen: ScreenSettings,
    /// The provider's API base URL.
    pub api_url: String,
    /// Where recipes live in the repository (`recipes`).
    pub recipes_dir: String,
    /// The DynamoDB table (recipes are stored there).
    pub table: String,
    /// The pipeline state machine.
    pub state_machine_arn: String,
    /// Schedule group, scheduler role and time zone.
    pub schedules: ScheduleSettings,
    /// SSM parameter (SecureString) holding the webhook secret.
    pub secret_parameter: String,
    /// SSM parameter (SecureString) holding an API token, if the repository
    /// is not public.
    pub token_parameter: Option<String>,
    /// Where recipes are fetched to (`/tmp` in Lambda).
    pub scratch_dir: PathBuf,
}

impl WebhookSettings {
    /// Reads the settings from the process environment (see
    /// [`WebhookSettings::from_vars`]).
    pub fn from_env() -> Result<WebhookSettings, WebhookError> {
        WebhookSettings::from_vars(&crate::config::EnvVars::from_process())
    }

    /// Reads the settings from variables: `BAKEHOUSE_TABLE`,
    /// `BAKEHOUSE_STATE_MACHINE_ARN`, `BAKEHOUSE_WEBHOOK_SECRET_PARAMETER`,
    /// `BAKEHOUSE_SCHEDULER_ROLE_ARN` (required); `BAKEHOUSE_GIT_PROVIDER`
    /// (`github`), `BAKEHOUSE_GIT_API_URL` (the provider's public API),
    /// `BAKEHOUSE_GIT_BRANCH` (`main`), `BAKEHOUSE_GIT_REPOSITORY` (any),
    /// `BAKEHOUSE_GIT_TOKEN_PARAMETER` (none), `BAKEHOUSE_RECIPES_DIR`
    /// (`recipes`), `BAKEHOUSE_SCHEDULE_GROUP` (`default`),
    /// `BAKEHOUSE_SCHEDULE_TIMEZONE` (`UTC`), `BAKEHOUSE_SCRATCH_DIR`
    /// (the temporary directory).
    pub fn from_vars(vars: &crate::config::EnvVars) -> Result<WebhookSettings, WebhookError> {
        let provider: Provider =
            vars.parsed("BAKEHOUSE_GIT_PROVIDER", Provider::GitHub, |v| v.parse())?;
        let state_machine_arn = vars.required(
            "BAKEHOUSE_STATE_MACHINE_ARN",
            "the pipeline state machine pushes start",
        )?;
        Ok(WebhookSettings {
            screen: ScreenSettings {
                provider,
                branch: vars
                    .optional("BAKEHOUSE_GIT_BRANCH")
                    .unwrap_or_else(|| "main".into()),
                repository: vars.optional("BAKEHOUSE_GIT_REPOSITORY"),
            },
            api_url: vars
                .optional("BAKEHOUSE_GIT_API_URL")
                .unwrap_or_else(|| provider.default_api_url().to_string()),
            recipes_dir: vars
                .optional("BAKEHOUSE_RECIPES_DIR")
                .map(|d| d.trim_matches('/').to_string())
                .unwrap_or_else(|| "recipes".into()),
            table: vars.required(
                "BAKEHOUSE_TABLE",
                "the DynamoDB table recipes are stored in",
            )?,
            schedules: ScheduleSettings {
                group: vars
                    .optional("BAKEHOUSE_SCHEDULE_GROUP")
                    .unwrap_or_else(|| "default".into()),
                state_machine_arn: state_machine_arn.clone(),
                role_arn: vars.required(
                    "BAKEHOUSE_SCHEDULER_ROLE_ARN",
                    "the role EventBridge Scheduler starts scheduled builds with",
                )?,
                timezone: vars
                    .optional("BAKEHOUSE_SCHEDULE_TIMEZONE")
                    .unwrap_or_else(|| "UTC".into()),
            },
            state_machine_arn,
            secret_parameter: vars.required(
                "BAKEHOUSE_WEBHOOK_SECRET_PARAMETER",
                "the SSM parameter holding the webhook secret",
            )?,
            token_parameter: vars.optional("BAKEHOUSE_GIT_TOKEN_PARAMETER"),
            scratch_dir: vars
                .optional("BAKEHOUSE_SCRATCH_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| std::env::temp_dir().join("bakehouse-webhook")),
        })
    }
}

/// Reads a SecureString (or String) parameter, decrypted.
pub async fn read_parameter(ssm: &aws_sdk_ssm::Client, name: &str) -> Result<String, WebhookError> {
    let err = |message: String| WebhookError::Parameter {
        name: name.to_string(),
        message,
    };
    let out = ssm
        .get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
        .map_err(|e| err(aws_sdk_ssm::error::DisplayErrorContext(e).to_string()))?;
    out.parameter
        .and_then(|p| p.value)
        .ok_or_else(|| err("no value".into()))
}

/// What happened to one recipe of a push.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecipeOutcome {
    /// Recipe name.
    pub name: String,
    /// Recipe file.
    pub path: String,
    /// Changed files that concern it (empty when every recipe counted).
    pub because: Vec<String>,
    /// The execution name.
    pub execution: String,
    /// `started`, or `already_started` when the name was taken.
    pub outcome: String,
    /// The execution ARN.
    pub execution_arn: String,
    /// `created`, `updated`, `unchanged`, `deleted`, `none`, or `stale`
    /// (the branch has moved on: neither stored nor scheduled).
    pub schedule: String,
}

/// A recipe file that was not built, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// Recipe file.
    pub path: String,
    /// Why.
    pub reason: String,
}

/// The answer to a push.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PushReport {
    /// The pushed commit.
    pub commit: String,
    /// Recipes built.
    pub recipes: Vec<RecipeOutcome>,
    /// Recipes the push touches that are invalid at the commit.
    pub invalid: Vec<Skipped>,
    /// Recipes the push touches that are not built by a push.
    pub skipped: Vec<Skipped>,
    /// Names of recipes removed: schedule and stored recipe deleted.
    pub removed: Vec<String>,
    /// The branch has moved past this commit: builds started, stored
    /// recipes and schedules left as the newer push made them.
    pub stale: bool,
    /// Failures (the answer is then 500, so the provider may redeliver).
    pub errors: Vec<String>,
}

/// An HTTP answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// JSON body.
    pub body: serde_json::Value,
}

impl Answer {
    fn new(status: u16, body: serde_json::Value) -> Answer {
        Answer { status, body }
    }

    /// As a function URL response.
    pub fn into_response(self) -> LambdaFunctionUrlResponse {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        let mut response = LambdaFunctionUrlResponse::default();
        response.status_code = i64::from(self.status);
        response.headers = headers;
        response.body = Some(self.body.to_string());
        response
    }
}

/// The body of a function URL request as bytes; 413 past the limit, 400
/// when it claims base64 and is not.
pub fn request_body(request: &LambdaFunctionUrlRequest) -> Result<Vec<u8>, Rejection> {
    let text = request.body.as_deref().unwrap_or_default();
    let limit = if request.is_base64_encoded {
        MAX_BODY_BYTES.div_ceil(3) * 4
    } else {
        MAX_BODY_BYTES
    };
    let too_large = |len: usize| Rejection {
        status: 413,
        reason: format!("body of {len} bytes is over the {MAX_BODY_BYTES}-byte limit"),
    };
    if text.len() > limit {
        return Err(too_large(text.len()));
    }
    let bytes = if request.is_base64_encoded {
        BASE64.decode(text.trim()).map_err(|_| Rejection {
            status: 400,
            reason: "body is marked base64 but is not".into(),
        })?
    } else {
        text.as_bytes().to_vec()
    };
    if bytes.len() > MAX_BODY_BYTES {
        return Err(too_large(bytes.len()));
    }
    Ok(bytes)
}

/// Screens a function URL request (body, method, signature, event, ref):
/// the push to process, or the answer to give at once.
pub fn screen_request(
    settings: &ScreenSettings,
    secret: &Secret,
    request: &LambdaFunctionUrlRequest,
) -> Result<PushEvent, Answer> {
    let rejected = |r: Rejection| {
        Answer::new(
            r.status,
            serde_json::json!({"status": "rejected", "reason": r.reason}),
        )
    };
    let body = request_body(request).map_err(rejected)?;
    let method = request.request_context.http.method.as_deref();
    match screen(settings, secret, method, &request.headers, &body) {
        Err(r) => Err(rejected(r)),
        Ok(Screened::Ignored(reason)) => Err(Answer::new(
            202,
            serde_json::json!({"status": "ignored", "reason": reason}),
        )),
        Ok(Screened::Push(push)) => Ok(*push),
    }
}

/// The webhook: settings, secret and clients, made once per cold start.
pub struct Webhook {
    settings: WebhookSettings,
    secret: Secret,
    api: ApiClient,
    sfn: aws_sdk_sfn::Client,
    schedules: Schedules,
    store: Arc<dyn BuildStore>,
}

/// One recipe file at the pushed commit.
struct RecipeDoc {
    path: String,
    text: String,
    recipe: Result<Recipe, String>,
}

impl Webhook {
    /// A webhook over explicit parts (the token is the provider API token).
    pub fn new(
        settings: WebhookSettings,
        secret: Secret,
        token: Option<&str>,
        sdk: &aws_config::SdkConfig,
        store: Arc<dyn BuildStore>,
    ) -> Result<Webhook, WebhookError> {
        let api = ApiClient::new(settings.screen.provider, &settings.api_url, token)?;
        let schedules = Schedules::new(
            aws_sdk_scheduler::Client::new(sdk),
            settings.schedules.clone(),
        );
        Ok(Webhook {
            secret,
            api,
            sfn: aws_sdk_sfn::Client::new(sdk),
            schedules,
            store,
            settings,
        })
    }

    /// The webhook as the Lambda function makes it: the secret (and token)
    /// read from SSM Parameter Store with decryption, recipes stored in
    /// DynamoDB.
    pub async fn from_settings(
        sdk: &aws_config::SdkConfig,
        settings: WebhookSettings,
    ) -> Result<Webhook, WebhookError> {
        let ssm = aws_sdk_ssm::Client::new(sdk);
        let secret = Secret::new(read_parameter(&ssm, &settings.secret_parameter).await?)
            .map_err(|e| WebhookError::Config(format!("{}: {e}", settings.secret_parameter)))?;
        let token = match &settings.token_parameter {
            Some(name) => Some(read_parameter(&ssm, name).await?),
            None => None,
        };
        let store = Arc::new(DynamoBuildStore::new(
            aws_sdk_dynamodb::Client::new(sdk),
            settings.table.clone(),
        ));
        Webhook::new(settings, secret, token.as_deref(), sdk, store)
    }

    /// The settings.
    pub fn settings(&self) -> &WebhookSettings {
        &self.settings
    }

    /// Answers one function URL request.
    pub async fn handle(&self, request: LambdaFunctionUrlRequest) -> LambdaFunctionUrlResponse {
        self.answer(&request).await.into_response()
    }

    /// Answers one function URL request, as status and JSON body.
    pub async fn answer(&self, request: &LambdaFunctionUrlRequest) -> Answer {
        let push = match screen_request(&self.settings.screen, &self.secret, request) {
            Ok(push) => push,
            Err(answer) => {
                let reason = answer.body.get("reason").cloned().unwrap_or_default();
                if answer.status >= 400 {
                    tracing::warn!(status = answer.status, %reason, "delivery rejected");
                } else {
                    tracing::info!(status = answer.status, %reason, "delivery ignored");
                }
                return answer;
            }
        };
        tracing::info!(
            repository = %push.repository,
            commit = %push.after,
            delivery = push.delivery.as_deref().unwrap_or("-"),
            "push received"
        );
        match self.process(&push).await {
            Ok(report) => {
                let status = if report.errors.is_empty() { 200 } else { 500 };
                let body = serde_json::to_value(&report).unwrap_or_default();
                Answer::new(status, body)
            }
            Err(e) => {
                tracing::error!(error = %e, "push not processed");
                Answer::new(
                    502,
                    serde_json::json!({"status": "error", "reason": e.to_string()}),
                )
            }
        }
    }

    /// Works out what a push touches and starts its builds (see the module
    /// documentation).
    pub async fn process(&self, push: &PushEvent) -> Result<PushReport, WebhookError> {
        let mut report = PushReport {
            commit: push.after.clone(),
            ..PushReport::default()
        };
        let changed = push.changed();
        if push.complete && changed.is_empty() {
            return Ok(report);
        }
        let repo = self.api.repository(&push.api_project);
        let head = repo.branch_head(&self.settings.screen.branch).await?;
        report.stale = head.as_deref().is_some_and(|h| h != push.after);
        if report.stale {
            tracing::warn!(
                commit = %push.after,
                head = head.as_deref().unwrap_or("-"),
                "the branch has moved on: stored recipes and schedules are left as they are"
            );
        }
        let docs = self.recipe_docs(repo.as_ref(), &push.after).await?;
        let mut names: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for doc in &docs {
            if let Ok(r) = &doc.recipe {
                names
                    .entry(r.name.clone())
                    .or_default()
                    .push(doc.path.clone());
            }
        }
        let scratch = self
            .settings
            .scratch_dir
            .join(format!("push-{}", uuid::Uuid::new_v4().simple()));
        for doc in &docs {
            self.consider(
                repo.as_ref(),
                push,
                &changed,
                doc,
                &names,
                &scratch,
                &mut report,
            )
            .await;
        }
        if scratch.exists() {
            if let Err(e) = std::fs::remove_dir_all(&scratch) {
                tracing::warn!(path = %scratch.display(), error = %e, "scratch not removed");
            }
        }
        if !report.stale {
            self.removals(repo.as_ref(), push, &docs, &names, &mut report)
                .await;
        }
        tracing::info!(
            commit = %push.after,
            built = report.recipes.len(),
            invalid = report.invalid.len(),
            removed = report.removed.len(),
            errors = report.errors.len(),
            "push processed"
        );
        Ok(report)
    }

    /// Every recipe file at `commit`, read and structurally parsed.
    async fn recipe_docs(
        &self,
        repo: &dyn Repository,
        commit: &str,
    ) -> Result<Vec<RecipeDoc>, WebhookError> {
        let dir = &self.settings.recipes_dir;
        let paths: Vec<String> = repo
            .tree(commit, dir)
            .await?
            .into_iter()
            .filter(|e| matches!(e.kind, EntryKind::File { .. }))
            .map(|e| e.path)
            .filter(|p| plan::is_recipe_file(p, dir))
            .collect();
        let reads = stream::iter(paths.into_iter().map(|path| async move {
            let text = repo.read(commit, &path).await;
            (path, text)
        }))
        .buffered(CONCURRENT_READS)
        .collect::<Vec<_>>()
        .await;
        let mut docs = Vec::new();
        for (path, text) in reads {
            let Some(bytes) = text? else { continue };
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let recipe = plan::structure(&path, &text);
            docs.push(RecipeDoc { path, text, recipe });
        }
        Ok(docs)
    }

    /// Builds one recipe file if the push touches it.
    #[allow(clippy::too_many_arguments)]
    async fn consider(
        &self,
        repo: &dyn Repository,
        push: &PushEvent,
        changed: &BTreeSet<String>,
        doc: &RecipeDoc,
        names: &BTreeMap<String, Vec<String>>,
        scratch: &std::path::Path,
        report: &mut PushReport,
    ) {
        let invalid = |reason: String| Skipped {
            path: doc.path.clone(),
            reason,
        };
        let recipe = match &doc.recipe {
            Ok(r) => r,
            Err(e) => {
                if !push.complete || changed.contains(&doc.path) {
                    tracing::warn!(path = %doc.path, problem = %e, "invalid recipe");
                    report.invalid.push(invalid(e.clone()));
                }
                return;
            }
        };
        let referenced = match plan::referenced_paths(&doc.path, recipe) {
            Ok(r) => r,
            Err(e) => {
                report.invalid.push(invalid(e));
                return;
            }
        };
        let because: Vec<String> = if push.complete {
            plan::touching(&doc.path, recipe, &referenced, changed)
                .into_iter()
                .map(str::to_string)
                .collect()
        } else {
            Vec::new()
        };
        if push.complete && because.is_empty() {
            return;
        }
        if let Some(paths) = names.get(&recipe.name).filter(|p| p.len() > 1) {
            report.invalid.push(invalid(format!(
                "recipe name {:?} is used by several files: {}",
                recipe.name,
                paths.join(", ")
            )));
            return;
        }
        if plan::has_local_base(recipe) {
            report.skipped.push(Skipped {
                path: doc.path.clone(),
                reason: "the base is a local path: build it with the CLI".into(),
            });
            return;
        }
        let root = scratch.join(uuid::Uuid::new_v4().simple().to_string());
        let fetched =
            fetch::fetch_recipe(repo, &push.after, &doc.path, &doc.text, &referenced, &root).await;
        let (loaded, bundle) = match fetched {
            Ok(f) => f,
            Err(FetchError::Invalid(e)) => {
                tracing::warn!(path = %doc.path, problem = %e, "invalid recipe");
                report.invalid.push(invalid(e));
                return;
            }
            Err(e) => {
                report.errors.push(format!("{}: {e}", doc.path));
                return;
            }
        };
        let stale = report.stale;
        match self
            .build(push, &doc.path, because, &loaded.recipe, bundle, stale)
            .await
        {
            Ok(outcome) => report.recipes.push(outcome),
            Err(e) => {
                tracing::error!(path = %doc.path, error = %e, "recipe not started");
                report.errors.push(format!("{}: {e}", doc.path));
            }
        }
    }

    /// Stores the recipe, sets its schedule and starts its execution.
    async fn build(
        &self,
        push: &PushEvent,
        path: &str,
        because: Vec<String>,
        recipe: &Recipe,
        bundle: crate::build::RecipeBundle,
        stale: bool,
    ) -> Result<RecipeOutcome, WebhookError> {
        let name = recipe.name.clone();
        let schedule = if stale {
            "stale"
        } else {
            self.store.put_recipe(&name, &bundle).await?;
            match recipe.eventbridge_schedule() {
                Some(expression) => match self.schedules.put(&name, &expression).await? {
                    ScheduleChange::Created => "created",
                    ScheduleChange::Updated => "updated",
                    ScheduleChange::Unchanged => "unchanged",
                },
                None => {
                    if self.schedules.delete(&name).await? {
                        "deleted"
                    } else {
                        "none"
                    }
                }
            }
        };
        let input = ExecutionInput {
            recipe: RecipeSpec::Inline(bundle.recipe),
            files: bundle.files,
            trigger: TriggerSpec::Full(push.trigger()),
            force: false,
            build_id: None,
            on_error: Default::default(),
        };
        let input = serde_json::to_string(&input)
            .map_err(|e| WebhookError::Config(format!("execution input: {e}")))?;
        let execution = execution::execution_name(&name, &push.after);
        let outcome = execution::start(
            &self.sfn,
            &self.settings.state_machine_arn,
            &execution,
            &input,
        )
        .await?;
        tracing::info!(
            recipe = %name,
            %execution,
            arn = outcome.arn(),
            new = matches!(outcome, StartOutcome::Started { .. }),
            "build started"
        );
        Ok(RecipeOutcome {
            name,
            path: path.to_string(),
            because,
            execution,
            outcome: match outcome {
                StartOutcome::Started { .. } => "started",
                StartOutcome::AlreadyExists { .. } => "already_started",
            }
            .to_string(),
            execution_arn: outcome.arn().to_string(),
            schedule: schedule.to_string(),
        })
    }

    /// Deletes the schedule and stored recipe of recipes the push removed
    /// (or renamed): names recipe files had before the push that no recipe
    /// file has after it.
    async fn removals(
        &self,
        repo: &dyn Repository,
        push: &PushEvent,
        docs: &[RecipeDoc],
        names: &BTreeMap<String, Vec<String>>,
        report: &mut PushReport,
    ) {
        if !push.has_before() {
            return;
        }
        let dir = &self.settings.recipes_dir;
        let candidates: BTreeSet<&String> = push
            .removed
            .iter()
            .chain(&push.modified)
            .filter(|p| plan::is_recipe_file(p, dir))
            .collect();
        let mut gone: BTreeSet<String> = BTreeSet::new();
        for path in candidates {
            match docs.iter().find(|d| &d.path == path) {
                // Invalid now: keep what was there until it is fixed.
                Some(doc) if doc.recipe.is_err() => continue,
                _ => {}
            }
            let before = match repo.read(&push.before, path).await {
                Ok(Some(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
                Ok(None) => continue,
                Err(e) => {
                    report.errors.push(format!("{path} before the push: {e}"));
                    continue;
                }
            };
            if let Ok(old) = plan::structure(path, &before) {
                if !names.contains_key(&old.name) {
                    gone.insert(old.name);
                }
            }
        }
        for name in gone {
            let result: Result<(), WebhookError> = async {
                self.schedules.delete(&name).await?;
                self.store.delete_recipe(&name).await?;
                Ok(())
            }
            .await;
            match result {
                Ok(()) => {
                    tracing::info!(recipe = %name, "recipe removed: schedule and stored recipe deleted");
                    report.removed.push(name);
                }
                Err(e) => report.errors.push(format!("removing {name}: {e}")),
            }
        }
    }
}
