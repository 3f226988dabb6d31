//! What the state machine passes to and gets from each step (see
//! `statemachines/pipeline.asl.json` and `statemachines/input.schema.json`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::build::RecipeBundle;
use crate::registry::{Trigger, TriggerKind};

/// The execution input, the same from every trigger.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutionInput {
    /// The recipe inline (an object with the fields of a recipe file), or
    /// the name of a recipe stored at its last push.
    pub recipe: RecipeSpec,
    /// Files the inline recipe's provisioners use, by path relative to the
    /// recipe, base64 encoded.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, crate::build::BundledFile>,
    /// What started the build: an object, or just the kind.
    #[serde(default = "console")]
    pub trigger: TriggerSpec,
    /// Bake even if the bake key is registered.
    #[serde(default)]
    pub force: bool,
    /// Build id; defaults to the execution name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
    /// What a failed build leaves (Packer's `-on-error`).
    #[serde(default, skip_serializing_if = "OnFailure::is_cleanup")]
    pub on_error: OnFailure,
}

/// What a failed build leaves: everything torn down, or (AWS) the builder
/// instance kept running for debugging until `builds cleanup` or the reaper.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Tear everything down (the default).
    #[default]
    Cleanup,
    /// Keep the builder; its images are removed all the same.
    Abort,
}

impl OnFailure {
    fn is_cleanup(&self) -> bool {
        *self == OnFailure::Cleanup
    }
}

fn console() -> TriggerSpec {
    TriggerSpec::Kind(TriggerKind::Console)
}

/// A recipe inline or by name.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RecipeSpec {
    /// Stored recipe name.
    Name(String),
    /// The recipe document.
    Inline(serde_json::Value),
}

/// A trigger as an object or just its kind (`"schedule"`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TriggerSpec {
    /// Only the kind.
    Kind(TriggerKind),
    /// Kind with details.
    Full(Trigger),
}

impl TriggerSpec {
    /// As a full trigger.
    pub fn to_trigger(&self) -> Trigger {
        match self {
            TriggerSpec::Kind(k) => Trigger::of(*k),
            TriggerSpec::Full(t) => t.clone(),
        }
    }
}

impl ExecutionInput {
    /// The bundle for an inline recipe.
    pub fn inline_bundle(&self) -> Option<RecipeBundle> {
        match &self.recipe {
            RecipeSpec::Inline(recipe) => Some(RecipeBundle {
                recipe: recipe.clone(),
                files: self.files.clone(),
            }),
            RecipeSpec::Name(_) => None,
        }
    }
}

/// Input of the first launch call: the execution input and name.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LaunchInput {
    /// The execution input.
    pub request: ExecutionInput,
    /// The execution name (`$$.Execution.Name`).
    pub execution: String,
}

/// Input of every later call (and of launch polls).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepInput {
    /// The build.
    pub build_id: String,
    /// How many times this step has been polled so far.
    #[serde(default)]
    pub polls: u32,
}

/// Input of a `WaitFor<Step>` state: park the step on `task_token` until
/// its work ends (see [`crate::pipeline::TaskCallback`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwaitInput {
    /// The build.
    pub build_id: String,
    /// Polls so far.
    #[serde(default)]
    pub polls: u32,
    /// The state's task token (`$$.Task.Token`).
    pub task_token: String,
}

/// Input from the events function: an event concerning this build came;
/// poll the parked step.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WakeInput {
    /// The build.
    pub build_id: String,
    /// Always true.
    pub wake: bool,
}

/// What a step returns; the state machine keeps it at `$.build`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepOutput {
    /// The build.
    pub build_id: String,
    /// The step finished; otherwise wait `wait_seconds` and call again.
    pub done: bool,
    /// How long to wait before the next poll (grows with `polls`).
    pub wait_seconds: u64,
    /// Polls so far (pass back on the next call).
    pub polls: u32,
    /// Launch found the bake key registered: nothing to bake.
    pub cache_hit: bool,
    /// `name@version`, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Teardown input: the whole state, including `$.error` on failure paths.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TeardownInput {
    /// The state machine state at the point of teardown.
    pub state: serde_json::Value,
}

/// What teardown did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TeardownOutput {
    /// The build.
    pub build_id: String,
    /// `SUCCEEDED` or `FAILED`.
    pub status: String,
    /// `name@version` registered, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// The poll interval for the `polls`-th wait: 5 s doubling to at most 60 s.
pub fn wait_seconds(polls: u32) -> u64 {
    (5u64 << polls.min(4)).min(60)
}
