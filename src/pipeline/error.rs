//! The error a step returns. Its variant name is the Lambda error type that
//! the state machine's `Retry` and `Catch` clauses match on.

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
