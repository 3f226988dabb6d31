//! Load-time errors ([`AslError`]) and run-time failures ([`TaskFailure`]).
//!
//! Load problems are Rust errors that name the offending state and field.
//! Run-time problems are Step Functions errors: a name the definition can
//! route on (`States.Runtime`, `States.Timeout`, or a task's own error such as
//! `BuildFailed`) and a human-readable cause.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Name that matches every error except `States.Runtime` and
/// `States.DataLimitExceeded`.
pub const STATES_ALL: &str = "States.ALL";
/// Matches every error except `States.Timeout` (and the terminal ones that
/// `States.ALL` does not match either).
pub const STATES_TASK_FAILED: &str = "States.TaskFailed";
/// A Task ran longer than its `TimeoutSeconds`, or the execution ran longer
/// than the machine's `TimeoutSeconds`.
pub const STATES_TIMEOUT: &str = "States.Timeout";
/// A callback Task got no heartbeat within its `HeartbeatSeconds`.
pub const STATES_HEARTBEAT_TIMEOUT: &str = "States.HeartbeatTimeout";
/// Unrecoverable run-time problem (a path that matches nothing, a wrong type).
/// Never retried and never caught by `States.ALL`.
pub const STATES_RUNTIME: &str = "States.Runtime";
/// A `ResultPath` cannot be applied to the state's input.
pub const STATES_RESULT_PATH_MATCH_FAILURE: &str = "States.ResultPathMatchFailure";
/// A `Parameters`-style field could not be built.
pub const STATES_PARAMETER_PATH_FAILURE: &str = "States.ParameterPathFailure";
/// An intrinsic function failed (bad argument type or value).
pub const STATES_INTRINSIC_FAILURE: &str = "States.IntrinsicFailure";
/// A Choice state had no matching rule and no `Default`.
pub const STATES_NO_CHOICE_MATCHED: &str = "States.NoChoiceMatched";
/// A branch of a Parallel state failed (used only when a branch error has no name).
pub const STATES_BRANCH_FAILED: &str = "States.BranchFailed";
/// A state's input (after `Parameters`), a task's result or a state's output
/// is larger than Step Functions' payload quota
/// ([`PAYLOAD_LIMIT_BYTES`]). Terminal like `States.Runtime`: `States.ALL`
/// and `States.TaskFailed` do not match it; only a retrier or catcher that
/// names it does.
pub const STATES_DATA_LIMIT_EXCEEDED: &str = "States.DataLimitExceeded";

/// Step Functions' quota on the size of a state's input or output and of a
/// task's result: 256 KiB of UTF-8 encoded JSON. The developer guide
/// ("Error names", `States.DataLimitExceeded`): thrown "when the output of a
/// connector is larger than payload size quota", "when the output of a state
/// is larger than payload size quota" and "when, after Parameters
/// processing, the input of a state is larger than the payload size quota".
pub const PAYLOAD_LIMIT_BYTES: usize = 256 * 1024;

/// A problem found while loading a definition. Every variant that concerns a
/// state names the state (nested states as `Outer/Branches[0]/Inner`; an
/// empty name means the top level of the state machine) and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AslError {
    /// `${Name}` placeholders in the definition text had no substitution.
    #[error("definition placeholders without a substitution: {}", names.join(", "))]
    MissingSubstitution {
        /// The placeholder names, in order of first appearance.
        names: Vec<String>,
    },
    /// The definition (after substitution) is not JSON.
    #[error("definition is not valid JSON: {message}")]
    InvalidJson {
        /// The parser's message.
        message: String,
    },
    /// A required field is absent.
    #[error("{}: field `{field}` is required", at(state))]
    MissingField {
        /// State name (empty for the top level).
        state: String,
        /// Field name, with its position for nested fields (`Retry[0].ErrorEquals`).
        field: String,
    },
    /// A field that the States Language does not define for this state type.
    #[error("{}: unknown field `{field}`", at(state))]
    UnknownField {
        /// State name (empty for the top level).
        state: String,
        /// The unknown field.
        field: String,
    },
    /// A valid Step Functions feature this local interpreter does not run.
    #[error(
        "{}: field `{field}` is not supported by the local interpreter: {reason}",
        at(state)
    )]
    Unsupported {
        /// State name (empty for the top level).
        state: String,
        /// The unsupported field.
        field: String,
        /// Why, or what is supported instead.
        reason: String,
    },
    /// A field has a wrong type or value.
    #[error("{}: field `{field}` is invalid: {reason}", at(state))]
    InvalidField {
        /// State name (empty for the top level).
        state: String,
        /// The field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `StartAt`, `Next`, `Default` or a Catch `Next` names a state that does
    /// not exist in the same scope.
    #[error("{}: field `{field}` names unknown state `{target}`", at(state))]
    UnknownTarget {
        /// State name (empty for the top level).
        state: String,
        /// The field holding the name.
        field: String,
        /// The missing state.
        target: String,
    },
    /// A state that no transition reaches (Step Functions rejects these).
    #[error("{}: field `Type`: state is not reachable from StartAt", at(state))]
    Unreachable {
        /// The unreachable state.
        state: String,
    },
}

fn at(state: &str) -> String {
    if state.is_empty() {
        "state machine".to_string()
    } else {
        format!("state `{state}`")
    }
}

/// A run-time error as Step Functions reports it: the error name the
/// definition routes on (Retry/Catch `ErrorEquals`) and a cause, which Step
/// Functions leaves out for some errors (a `Fail` state without `Cause`, a
/// Task's `States.Timeout`).
///
/// Task invokers return it for a failed task (e.g. `Retryable`,
/// `BuildFailed`); the interpreter uses it for its own errors
/// (`States.Runtime`, `States.Timeout`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFailure {
    /// The error name (`ErrorEquals` matches on it).
    pub error: String,
    /// Human-readable details; `None` where Step Functions gives no cause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

impl TaskFailure {
    /// A failure with the given error name and cause.
    pub fn new(error: impl Into<String>, cause: impl Into<String>) -> Self {
        TaskFailure {
            error: error.into(),
            cause: Some(cause.into()),
        }
    }

    /// A failure with an error name and no cause.
    pub fn without_cause(error: impl Into<String>) -> Self {
        TaskFailure {
            error: error.into(),
            cause: None,
        }
    }

    /// The cause, or `""` when there is none.
    pub fn cause_text(&self) -> &str {
        self.cause.as_deref().unwrap_or_default()
    }

    /// A `States.Runtime` failure.
    pub fn runtime(cause: impl Into<String>) -> Self {
        Self::new(STATES_RUNTIME, cause)
    }

    /// A `States.IntrinsicFailure` failure.
    pub fn intrinsic(cause: impl Into<String>) -> Self {
        Self::new(STATES_INTRINSIC_FAILURE, cause)
    }

    /// A Task's `States.Timeout` failure. Step Functions gives it no cause
    /// (its `TaskTimedOut` event has only the error), so neither does this.
    pub fn timeout() -> Self {
        Self::without_cause(STATES_TIMEOUT)
    }

    /// A `States.DataLimitExceeded` failure.
    pub fn data_limit(cause: impl Into<String>) -> Self {
        Self::new(STATES_DATA_LIMIT_EXCEEDED, cause)
    }
}

impl fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.cause.as_deref() {
            None | Some("") => write!(f, "{}", self.error),
            Some(cause) => write!(f, "{}: {}", self.error, cause),
        }
    }
}

impl std::error::Error for TaskFailure {}
