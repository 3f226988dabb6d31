//! The error a step returns. Its variant name is the Lambda error type that
//! the state machine's `Retry` and `Catch` clauses match on.

use serde::{Deserialize, Serialize};

use crate::asl::STATES_TIMEOUT;
use crate::build::BuildStoreError;
use crate::recipe::RecipeError;
use crate::registry::RegistryError;

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// Transient (throttling, a conflict, a service hiccup): retry the step.
    #[error("{0}")]
    Retryable(String),
    /// Bad input or configuration: retrying won't help.
    #[error("{0}")]
    NonRetryable(String),
    /// The build itself failed (a provisioner exited non-zero, the clean
    /// check found leftovers, a test command failed).
    #[error("{0}")]
    BuildFailed(String),
}

impl StepError {
    /// The error type name (`Retryable`, `NonRetryable`, `BuildFailed`).
    pub fn name(&self) -> &'static str {
        match self {
            StepError::Retryable(_) => "Retryable",
            StepError::NonRetryable(_) => "NonRetryable",
            StepError::BuildFailed(_) => "BuildFailed",
        }
    }

    /// The message without the type.
    pub fn message(&self) -> &str {
        match self {
            StepError::Retryable(m) | StepError::NonRetryable(m) | StepError::BuildFailed(m) => m,
        }
    }
}

impl From<RegistryError> for StepError {
    fn from(e: RegistryError) -> StepError {
        match e.kind() {
            "Retryable" => StepError::Retryable(e.to_string()),
            _ => StepError::NonRetryable(e.to_string()),
        }
    }
}

impl From<BuildStoreError> for StepError {
    fn from(e: BuildStoreError) -> StepError {
        match e {
            BuildStoreError::Conflict(_) | BuildStoreError::Dynamo(_) => {
                StepError::Retryable(e.to_string())
            }
            _ => StepError::NonRetryable(e.to_string()),
        }
    }
}

impl From<RecipeError> for StepError {
    fn from(e: RecipeError) -> StepError {
        StepError::NonRetryable(e.to_string())
    }
}

/// A Lambda function's error payload as the Rust runtime sends it
/// (`lambda_runtime::Diagnostic`): in AWS, Step Functions gives a failed
/// Lambda Task the error `errorType` and, as its cause, this object as a
/// JSON string. Other runtimes add members (`trace`, `stackTrace`,
/// `requestId`), which [`failure_message`] ignores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LambdaErrorPayload {
    error_type: String,
    error_message: String,
}

/// The `Cause` Step Functions gives a Lambda Task that failed with `error`:
/// the function's error payload, `{"errorType":"…","errorMessage":"…"}`.
/// The local runner uses it so a build fails with the same bindings as in
/// AWS.
pub fn lambda_error_cause(error: &StepError) -> String {
    let payload = LambdaErrorPayload {
        error_type: error.name().to_string(),
        error_message: error.message().to_string(),
    };
    // Two strings always serialize; fall back to the bare message anyway.
    serde_json::to_string(&payload).unwrap_or_else(|_| error.message().to_string())
}

/// The human-readable message of a Step Functions error, whatever its
/// shape: the `errorMessage` of a Lambda error payload (AWS, and the local
/// runner), a plain cause as it is (the state machine's own Fail states, an
/// older local runner), and for a `States.Timeout` without a cause (AWS
/// gives none) a sentence saying so. The build record and `builds show`
/// carry this message.
pub fn failure_message(error: &str, cause: Option<&str>) -> String {
    match cause.map(str::trim) {
        Some(text) if text.starts_with('{') => {
            match serde_json::from_str::<serde_json::Value>(text) {
                Ok(payload) => match payload.get("errorMessage").and_then(|m| m.as_str()) {
                    Some(message) => message.to_string(),
                    None => text.to_string(),
                },
                Err(_) => text.to_string(),
            }
        }
        Some(text) if !text.is_empty() => text.to_string(),
        _ if error == STATES_TIMEOUT => {
            "the step did not finish within its TimeoutSeconds (States.Timeout)".to_string()
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_shapes_of_a_lambda_error_give_the_same_message() {
        let error = StepError::BuildFailed("provisioner 1 exited 3: \"disk full\"".into());
        let aws = lambda_error_cause(&error);
        assert_eq!(
            aws,
            r#"{"errorType":"BuildFailed","errorMessage":"provisioner 1 exited 3: \"disk full\""}"#
        );
        let local = error.message();
        assert_eq!(failure_message("BuildFailed", Some(&aws)), local);
        assert_eq!(failure_message("BuildFailed", Some(local)), local);
        // Other runtimes' payloads carry more members.
        let node = r#"{"errorType":"Error","errorMessage":"boom","trace":["Error: boom","    at x.js:1"]}"#;
        assert_eq!(failure_message("Error", Some(node)), "boom");
        let python = r#"{"errorMessage": "boom", "errorType": "Exception", "requestId": "r", "stackTrace": []}"#;
        assert_eq!(failure_message("Exception", Some(python)), "boom");
    }

    #[test]
    fn causes_that_are_not_payloads_are_kept() {
        assert_eq!(failure_message("E", Some("{not json")), "{not json");
        assert_eq!(failure_message("E", Some(r#"{"a":1}"#)), r#"{"a":1}"#);
        assert_eq!(failure_message("E", None), "");
        assert_eq!(failure_message("E", Some("")), "");
    }

    #[test]
    fn a_timeout_without_a_cause_says_so() {
        let message = failure_message("States.Timeout", None);
        assert!(message.contains("TimeoutSeconds"), "{message}");
        assert_eq!(failure_message("States.Timeout", Some("")), message);
    }
}
