//! The loaded, validated form of a state machine definition. Build one with
//! [`StateMachine::load`](super::StateMachine::load) (see `load.rs`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::choice::ChoiceBranch;
use super::intrinsics::Intrinsic;
use super::path::{IoPath, Path, ResultPath};
use super::retry::{Catcher, Retrier};
use super::template::Template;

/// A validated state machine, ready to be run by a
/// [`Runner`](super::Runner).
#[derive(Debug, Clone)]
pub struct StateMachine {
    pub(crate) graph: Graph,
    pub(crate) timeout_seconds: Option<u64>,
    pub(crate) comment: Option<String>,
    pub(crate) name: String,
}

impl StateMachine {
    /// Sets the name used for `$$.StateMachine.Name` and the ids in the
    /// context object (default `"StateMachine"`).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The state machine's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The definition's top-level `Comment`.
    pub fn comment(&self) -> Option<&str> {
        self.comment.as_deref()
    }

    /// The first state.
    pub fn start_at(&self) -> &str {
        &self.graph.start_at
    }

    /// The machine-level `TimeoutSeconds`.
    pub fn timeout_seconds(&self) -> Option<u64> {
        self.timeout_seconds
    }

    /// The top-level states, by name.
    pub fn states(&self) -> impl Iterator<Item = &State> {
        self.graph.states.values()
    }

    /// A top-level state by name.
    pub fn state(&self, name: &str) -> Option<&State> {
        self.graph.states.get(name)
    }
}

/// A set of states with a start: the machine itself, a Parallel branch or a
/// Map's item processor.
#[derive(Debug, Clone)]
pub(crate) struct Graph {
    pub(crate) start_at: String,
    pub(crate) states: BTreeMap<String, State>,
}

/// One state of a definition.
#[derive(Debug, Clone)]
pub struct State {
    pub(crate) name: String,
    pub(crate) comment: Option<String>,
    pub(crate) input_path: IoPath,
    pub(crate) output_path: IoPath,
    /// `Parameters` (not used for Map, whose `ItemSelector` is in its kind).
    pub(crate) parameters: Option<Template>,
    pub(crate) result_selector: Option<Template>,
    pub(crate) result_path: ResultPath,
    /// `Next`; `None` for `End: true` and for Choice, Succeed and Fail.
    pub(crate) next: Option<String>,
    pub(crate) retry: Vec<Retrier>,
    pub(crate) catch: Vec<Catcher>,
    pub(crate) kind: StateKind,
}

impl State {
    /// The state's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The state's `Comment`.
    pub fn comment(&self) -> Option<&str> {
        self.comment.as_deref()
    }

    /// The state's `Type` (`"Task"`, `"Map"`, ...).
    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            StateKind::Task { .. } => "Task",
            StateKind::Pass { .. } => "Pass",
            StateKind::Choice { .. } => "Choice",
            StateKind::Wait(_) => "Wait",
            StateKind::Parallel { .. } => "Parallel",
            StateKind::Map { .. } => "Map",
            StateKind::Succeed => "Succeed",
            StateKind::Fail { .. } => "Fail",
        }
    }

    /// The Task's `Resource`, for Task states.
    pub fn resource(&self) -> Option<&str> {
        match &self.kind {
            StateKind::Task { resource, .. } => Some(match resource {
                Resource::LambdaInvoke => LAMBDA_INVOKE,
                Resource::Other(r) => r,
            }),
            _ => None,
        }
    }

    /// Every state name this state can transition to, with the field that
    /// names it.
    pub(crate) fn targets(&self) -> Vec<(String, &str)> {
        let mut out = Vec::new();
        if let Some(next) = &self.next {
            out.push(("Next".to_string(), next.as_str()));
        }
        if let StateKind::Choice { choices, default } = &self.kind {
            for (i, branch) in choices.iter().enumerate() {
                out.push((format!("Choices[{i}].Next"), branch.next()));
            }
            if let Some(d) = default {
                out.push(("Default".to_string(), d.as_str()));
            }
        }
        for (i, catcher) in self.catch.iter().enumerate() {
            out.push((format!("Catch[{i}].Next"), catcher.next.as_str()));
        }
        out
    }
}

/// The optimized Lambda integration.
pub(crate) const LAMBDA_INVOKE: &str = "arn:aws:states:::lambda:invoke";

/// What a Task state calls.
#[derive(Debug, Clone)]
pub(crate) enum Resource {
    /// `arn:aws:states:::lambda:invoke`: the invoker gets `FunctionName` and
    /// `Payload`, and the result is wrapped in `{"Payload", "StatusCode"}`.
    LambdaInvoke,
    /// Anything else, passed to the invoker as it is.
    Other(String),
}

/// Where a Wait state's duration comes from.
#[derive(Debug, Clone)]
pub(crate) enum WaitFor {
    Seconds(u64),
    SecondsPath(Path),
    Timestamp(DateTime<Utc>),
    TimestampPath(Path),
}

/// A Fail state's `Error`/`Cause` (literal, `...Path`, or an intrinsic in
/// the `...Path` field).
#[derive(Debug, Clone)]
pub(crate) enum TextSource {
    Literal(String),
    Path(Path),
    Call(Intrinsic),
}

/// The type-specific part of a state.
#[derive(Debug, Clone)]
pub(crate) enum StateKind {
    Task {
        resource: Resource,
        timeout_seconds: Option<u64>,
        /// Tracked for callback Tasks (a `SendTaskHeartbeat` restarts it);
        /// a Task that just runs its resource has no heartbeats to send.
        heartbeat_seconds: Option<u64>,
        /// `.waitForTaskToken`: wait for the token's callback after the call.
        callback: bool,
    },
    Pass {
        result: Option<Value>,
    },
    Choice {
        choices: Vec<ChoiceBranch>,
        default: Option<String>,
    },
    Wait(WaitFor),
    Parallel {
        branches: Vec<Graph>,
    },
    Map {
        items_path: Option<Path>,
        item_selector: Option<Template>,
        processor: Graph,
        /// 0 = unlimited.
        max_concurrency: u64,
    },
    Succeed,
    Fail {
        error: Option<TextSource>,
        cause: Option<TextSource>,
    },
}
