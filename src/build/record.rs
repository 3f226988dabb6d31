//! The build record and its parts.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::registry::{Artifact, Trigger};

/// A pipeline step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    /// Resolve the base, compute the bake key, start the builder.
    Launch,
    /// Run the provisioners.
    Provision,
    /// Apply the clean policy.
    Clean,
    /// Capture and publish the image.
    Capture,
    /// Boot the captured image and run the recipe's tests inside it.
    Test,
    /// Record the version in the registry.
    Register,
    /// Remove the builder and temporary resources, mark the build.
    Teardown,
}

impl Step {
    /// Every step in pipeline order.
    pub const ALL: [Step; 7] = [
        Step::Launch,
        Step::Provision,
        Step::Clean,
        Step::Capture,
        Step::Test,
        Step::Register,
        Step::Teardown,
    ];

    /// The lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Step::Launch => "launch",
            Step::Provision => "provision",
            Step::Clean => "clean",
            Step::Capture => "capture",
            Step::Test => "test",
            Step::Register => "register",
            Step::Teardown => "teardown",
        }
    }

    /// Parses a lowercase step name.
    pub fn from_name(name: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a build stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BuildStatus {
    /// Steps are still running.
    Running,
    /// Registered (or a bake-key cache hit) and torn down.
    Succeeded,
    /// A step failed; torn down.
    Failed,
    /// Stopped by a signal (or found with its process gone by
    /// `builds gc`); torn down.
    Cancelled,
}

impl fmt::Display for BuildStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BuildStatus::Running => "RUNNING",
            BuildStatus::Succeeded => "SUCCEEDED",
            BuildStatus::Failed => "FAILED",
            BuildStatus::Cancelled => "CANCELLED",
        })
    }
}

/// Timing of one step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Which step.
    pub step: Step,
    /// When its first invocation started.
    pub started_at: DateTime<Utc>,
    /// When it completed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Invocations (first call plus polls and retries).
    pub invocations: u32,
    /// Notes: output tails of provisioners, what was checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Kinds of resources a build creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceKind {
    /// An EC2 builder instance.
    Instance,
    /// An AMI (the captured image or a regional copy).
    Image,
    /// An EBS snapshot behind an AMI.
    Snapshot,
    /// An SSM command.
    Command,
    /// A local work directory.
    WorkDir,
    /// A local output file (disk image, archive).
    File,
    /// The control group of a local build's sandbox.
    Cgroup,
    /// A mount of a local build (the overlay of a kept whole-disk base, or
    /// a disk image exported as a raw file by `qemu-storage-daemon` over
    /// FUSE), unmounted by teardown and `builds gc`.
    Mount,
}

/// One resource in a build's ledger. Recorded (with `id` unset) before it
/// is created, so teardown and the reaper can always find it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    /// What it is.
    pub kind: ResourceKind,
    /// Deterministic name or client token the build uses for it.
    pub name: String,
    /// Provider id once created (instance id, AMI id, path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Region, for AWS resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Keep after a successful build (published images, output files).
    #[serde(default)]
    pub keep_on_success: bool,
    /// Removed by teardown.
    #[serde(default)]
    pub deleted: bool,
}

/// Why a build failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The step that failed.
    pub step: String,
    /// Error type name (what the state machine routed on).
    pub error: String,
    /// Human explanation.
    pub cause: String,
}

/// A recipe as carried by an execution: the recipe document (JSON) and the
/// content of every file its provisioners use, so a step can run anywhere.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RecipeBundle {
    /// The recipe (the same fields as a recipe file).
    pub recipe: serde_json::Value,
    /// Files by path relative to the recipe.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, BundledFile>,
}

/// One file of a [`RecipeBundle`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundledFile {
    /// The content, base64 encoded (empty for a link).
    #[serde(default)]
    pub content: String,
    /// Whether it is executable.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub executable: bool,
    /// Target, if the file is a symbolic link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

/// Everything known about one build.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BuildRecord {
    /// Build id (the execution name by default).
    pub id: String,
    /// Recipe name.
    pub recipe_name: String,
    /// The recipe as built.
    pub bundle: RecipeBundle,
    /// What started it.
    pub trigger: Trigger,
    /// Bake even on a bake-key hit.
    #[serde(default)]
    pub force: bool,
    /// Where it stands.
    pub status: BuildStatus,
    /// Resolved base image id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_id: Option<String>,
    /// Registry reference of the base, when it came from the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Bake key of the inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake_key: Option<String>,
    /// The bake key was registered already: nothing was baked.
    #[serde(default)]
    pub cache_hit: bool,
    /// Step timings, in order of first start.
    #[serde(default)]
    pub steps: Vec<StepRecord>,
    /// Every resource created for the build.
    #[serde(default)]
    pub resources: Vec<Resource>,
    /// Artifacts produced by capture.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<Artifact>,
    /// `name@version` registered (or found by the cache hit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last written.
    pub updated_at: DateTime<Utc>,
    /// Execution history (state entered/exited, task failed/retried), as
    /// recorded by the local runner or read from Step Functions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<serde_json::Value>,
    /// State transitions of the execution.
    #[serde(default)]
    pub state_transitions: u64,
    /// Optimistic-concurrency revision.
    #[serde(default)]
    pub revision: u64,
    /// The process running a local build (absent for builds in AWS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<super::Owner>,
    /// Where a failed local build's sandbox was kept for debugging
    /// (`build --on-error=abort`); `builds shell` runs in it, `builds
    /// cleanup` removes it, and nothing else does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept: Option<String>,
    /// Where the build's full output is kept (a local build's log file);
    /// `builds logs` prints it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// The step parked on a Step Functions task token, waiting for an
    /// event to wake it (see `Pipeline::park`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awaiting: Option<Awaiting>,
    /// An event came while no token was parked (the step was being polled,
    /// or not parked yet): whoever holds the token polls once more.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub woken: bool,
    /// How many tokens were parked so far (each `Awaiting` carries its own
    /// number, so a poller can tell a newer token from its own).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub park_generation: u64,
    /// Until when a poller holds the parked step: no second poll starts
    /// before, so a step is never polled twice at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_lease: Option<DateTime<Utc>>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A step parked on a task token (`.waitForTaskToken`): the token to
/// complete and the step to poll when an event for the build comes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Awaiting {
    /// The step waiting.
    pub step: Step,
    /// The task token its state waits on.
    pub token: String,
    /// Polls of the step so far.
    pub polls: u32,
    /// Its number among the build's parked tokens (`park_generation`).
    #[serde(default)]
    pub generation: u64,
}

impl BuildRecord {
    /// A new running build.
    pub fn new(
        id: &str,
        recipe_name: &str,
        bundle: RecipeBundle,
        trigger: Trigger,
        force: bool,
    ) -> Self {
        let now = Utc::now();
        BuildRecord {
            id: id.to_string(),
            recipe_name: recipe_name.to_string(),
            bundle,
            trigger,
            force,
            status: BuildStatus::Running,
            base_id: None,
            parent: None,
            bake_key: None,
            cache_hit: false,
            steps: Vec::new(),
            resources: Vec::new(),
            artifacts: Vec::new(),
            version: None,
            failure: None,
            history: Vec::new(),
            state_transitions: 0,
            created_at: now,
            updated_at: now,
            revision: 0,
            owner: None,
            kept: None,
            log: None,
            awaiting: None,
            woken: false,
            park_generation: 0,
            poll_lease: None,
        }
    }

    /// Notes that a step was invoked (started, polled or retried).
    pub fn step_invoked(&mut self, step: Step) {
        match self.steps.iter_mut().find(|s| s.step == step) {
            Some(s) => s.invocations += 1,
            None => self.steps.push(StepRecord {
                step,
                started_at: Utc::now(),
                finished_at: None,
                invocations: 1,
                notes: Vec::new(),
            }),
        }
    }

    /// Notes that a step completed.
    pub fn step_finished(&mut self, step: Step) {
        if let Some(s) = self.steps.iter_mut().find(|s| s.step == step) {
            s.finished_at.get_or_insert_with(Utc::now);
        }
    }

    /// The recipe's sensitive values (see [`crate::recipe::mask`]).
    pub fn sensitive(&self) -> Vec<String> {
        crate::recipe::mask::of_recipe_json(&self.bundle.recipe)
    }

    /// `text` with the recipe's sensitive values masked.
    pub fn masked(&self, text: &str) -> String {
        crate::recipe::mask::text(text, &self.sensitive())
    }

    /// The record as shown to people (`builds show`, `--json` output):
    /// every string with the recipe's sensitive values masked, the
    /// recipe's own copy included.
    pub fn for_display(&self) -> BuildRecord {
        let values = self.sensitive();
        if values.is_empty() {
            return self.clone();
        }
        let Ok(mut doc) = serde_json::to_value(self) else {
            return self.clone();
        };
        crate::recipe::mask::json(&mut doc, &values);
        serde_json::from_value(doc).unwrap_or_else(|_| self.clone())
    }

    /// Adds a note to a step (kept short: the last 4 KiB), sensitive
    /// values masked.
    pub fn note(&mut self, step: Step, note: impl Into<String>) {
        let mut note = self.masked(&note.into());
        if note.len() > 4096 {
            let cut = note.len() - 4096;
            let start = (cut..note.len())
                .find(|i| note.is_char_boundary(*i))
                .unwrap_or(cut);
            note = format!("…{}", &note[start..]);
        }
        if let Some(s) = self.steps.iter_mut().find(|s| s.step == step) {
            s.notes.push(note);
        }
    }

    /// The step that started last and did not finish (where a failure happened).
    pub fn unfinished_step(&self) -> Option<Step> {
        self.steps
            .iter()
            .rev()
            .find(|s| s.finished_at.is_none() && s.step != Step::Teardown)
            .map(|s| s.step)
    }

    /// Records a resource before it is created; a no-op if one with the same
    /// kind and name is already recorded (a retried step).
    pub fn plan(&mut self, kind: ResourceKind, name: &str, region: Option<&str>) {
        if !self
            .resources
            .iter()
            .any(|r| r.kind == kind && r.name == name)
        {
            self.resources.push(Resource {
                kind,
                name: name.to_string(),
                id: None,
                region: region.map(str::to_string),
                keep_on_success: false,
                deleted: false,
            });
        }
    }

    /// Sets the provider id of a planned resource.
    pub fn created(&mut self, kind: ResourceKind, name: &str, id: &str) {
        if let Some(r) = self
            .resources
            .iter_mut()
            .find(|r| r.kind == kind && r.name == name)
        {
            r.id = Some(id.to_string());
        }
    }

    /// The planned or created resource of a kind and name.
    pub fn resource(&self, kind: ResourceKind, name: &str) -> Option<&Resource> {
        self.resources
            .iter()
            .find(|r| r.kind == kind && r.name == name)
    }

    /// Resources of a kind, in the order they were planned.
    pub fn resources_of(&self, kind: ResourceKind) -> impl Iterator<Item = &Resource> {
        self.resources.iter().filter(move |r| r.kind == kind)
    }
}
