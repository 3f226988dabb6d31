//! The builder backend seam: where an image is baked (EC2 + SSM, or a local
//! chroot). The pipeline owns ordering, records and the registry; a backend
//! only does the work of each step, idempotently.

use std::sync::Arc;

use async_trait::async_trait;

use crate::build::{self, BuildRecord, BuildStore, ResourceKind, Step};
use crate::recipe::LoadedRecipe;
use crate::registry::{Artifact, Provider, Registry};

use super::StepError;

/// The base image a build starts from, resolved to something concrete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedBase {
    /// What the bake key hashes: an AMI id, or a local base's content digest.
    pub id: String,
    /// `name@version` when the base came from the registry (lineage).
    pub parent: Option<String>,
}

/// Whether a step finished or wants to be called again after a wait.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress<T = ()> {
    /// Finished, with its result.
    Done(T),
    /// Not yet: call again after a wait (the pipeline picks the interval).
    Wait,
}

/// What a step's backend call sees: the build, its recipe, and the ledger.
pub struct BuildContext {
    /// The build id.
    pub build_id: String,
    /// The recipe, unpacked into the step's scratch directory (absent only
    /// in a teardown whose recipe could not be read).
    pub recipe: Option<LoadedRecipe>,
    /// How often this step was polled before this call.
    pub polls: u32,
    /// The record as it was when the step was invoked.
    pub record: BuildRecord,
    /// The step being run.
    pub step: Step,
    /// Test-only: fail this step after its work, to exercise teardown.
    pub(crate) store: Arc<dyn BuildStore>,
}

impl BuildContext {
    /// The recipe, or an error saying it could not be loaded.
    pub fn recipe(&self) -> Result<&LoadedRecipe, StepError> {
        self.recipe.as_ref().ok_or_else(|| {
            StepError::NonRetryable(format!("build {}: recipe unavailable", self.build_id))
        })
    }

    /// The current record, read again.
    pub async fn current(&self) -> Result<BuildRecord, StepError> {
        self.store
            .get(&self.build_id)
            .await?
            .ok_or_else(|| StepError::NonRetryable(format!("no build {}", self.build_id)))
    }

    /// Changes and saves the record (retrying on concurrent updates).
    pub async fn update<F>(&self, change: F) -> Result<BuildRecord, StepError>
    where
        F: FnMut(&mut BuildRecord) + Send,
    {
        Ok(build::update(self.store.as_ref(), &self.build_id, change).await?)
    }

    /// Records a resource in the ledger before it is created. Call this,
    /// then create the resource, then [`BuildContext::created`].
    pub async fn plan(
        &self,
        kind: ResourceKind,
        name: &str,
        region: Option<&str>,
    ) -> Result<BuildRecord, StepError> {
        self.update(|r| r.plan(kind, name, region)).await
    }

    /// Records the provider id of a planned resource.
    pub async fn created(&self, kind: ResourceKind, name: &str, id: &str) -> Result<(), StepError> {
        self.update(|r| r.created(kind, name, id)).await.map(drop)
    }

    /// Marks a resource removed.
    pub async fn deleted(&self, kind: ResourceKind, name: &str) -> Result<(), StepError> {
        self.update(|r| {
            if let Some(res) = r
                .resources
                .iter_mut()
                .find(|x| x.kind == kind && x.name == name)
            {
                res.deleted = true;
            }
        })
        .await
        .map(drop)
    }

    /// Marks a resource to be kept when the build succeeds.
    pub async fn keep_on_success(&self, kind: ResourceKind, name: &str) -> Result<(), StepError> {
        self.update(|r| {
            if let Some(res) = r
                .resources
                .iter_mut()
                .find(|x| x.kind == kind && x.name == name)
            {
                res.keep_on_success = true;
            }
        })
        .await
        .map(drop)
    }

    /// Adds a note (e.g. a provisioner's output tail) to this step.
    pub async fn note(&self, text: impl Into<String>) -> Result<(), StepError> {
        let text = text.into();
        let step = self.step;
        self.update(|r| r.note(step, text.clone())).await.map(drop)
    }
}

/// Where images are baked. Every method must be idempotent: Lambda and Step
/// Functions retry, so a second call with the same build must not create a
/// second instance, image or file. Record resources with
/// [`BuildContext::plan`] before creating them.
#[async_trait]
pub trait BuilderBackend: Send + Sync {
    /// The provider of the artifacts this backend produces.
    fn provider(&self) -> Provider;

    /// Whether builds run in this process (the local backend): their
    /// records name it as owner, so a build whose process is gone can be
    /// found ([`crate::build::Owner`]).
    fn runs_in_process(&self) -> bool {
        false
    }

    /// Resolves the recipe's base (an image id, a filter, a registry
    /// reference, a local path) to a concrete id.
    async fn resolve_base(
        &self,
        recipe: &LoadedRecipe,
        registry: &Registry,
    ) -> Result<ResolvedBase, StepError>;

    /// Starts the builder (instance or work directory) from the base.
    async fn launch(&self, ctx: &BuildContext) -> Result<Progress, StepError>;

    /// Runs the provisioners in order; a failing one is
    /// [`StepError::BuildFailed`] naming it.
    async fn provision(&self, ctx: &BuildContext) -> Result<Progress, StepError>;

    /// Applies the clean policy (and stops the builder where that applies).
    async fn clean(&self, ctx: &BuildContext) -> Result<Progress, StepError>;

    /// Captures the image and publishes it; returns one artifact per location.
    async fn capture(&self, ctx: &BuildContext) -> Result<Progress<Vec<Artifact>>, StepError>;

    /// Proves the captured image: boots it (a throwaway overlay locally, a
    /// test instance from the new AMI on EC2) and runs the recipe's `test`
    /// commands inside; a failing command is [`StepError::BuildFailed`]
    /// naming it, with its output in the step's notes.
    async fn test(&self, ctx: &BuildContext) -> Result<Progress, StepError>;

    /// Removes the builder and every temporary resource in the ledger; on a
    /// failed build also the images it made. Must succeed when run twice and
    /// when nothing was created.
    async fn teardown(&self, ctx: &BuildContext, succeeded: bool) -> Result<(), StepError>;

    /// Tears a failed build down but keeps its builder running for
    /// debugging (`on_error: abort` in the execution input); returns where
    /// it is (e.g. `instance i-0123 in eu-west-1`), or `None` when nothing
    /// was kept. Backends that keep nothing this way (the local one keeps
    /// its sandbox by its own setting) tear down as usual.
    async fn teardown_keeping_builder(
        &self,
        ctx: &BuildContext,
    ) -> Result<Option<String>, StepError> {
        self.teardown(ctx, false).await.map(|()| None)
    }
}
