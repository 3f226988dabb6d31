//! Starting pipeline executions from a trigger: deterministic names, and a
//! StartExecution that treats "already exists" as already started, so a
//! redelivered webhook starts nothing twice.

use aws_sdk_sfn::error::DisplayErrorContext;
use aws_sdk_sfn::operation::start_execution::StartExecutionError;
use sha2::{Digest, Sha256};

/// Longest execution name Step Functions accepts.
pub const MAX_EXECUTION_NAME: usize = 80;

/// Hex digits of the commit kept in an execution name.
const COMMIT_DIGITS: usize = 12;

/// Errors starting an execution.
#[derive(Debug, thiserror::Error)]
pub enum ExecutionError {
    /// Step Functions refused or failed.
    #[error("StartExecution {name}: {message}")]
    Start {
        /// The execution name.
        name: String,
        /// What Step Functions said.
        message: String,
    },
}

/// How a start request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartOutcome {
    /// Started now, or the same name and input is already running (Step
    /// Functions answers both alike).
    Started {
        /// The execution ARN.
        arn: String,
    },
    /// An execution with this name exists (closed, or with another input):
    /// nothing was started.
    AlreadyExists {
        /// The ARN of the existing execution.
        arn: String,
    },
}

impl StartOutcome {
    /// The execution ARN either way.
    pub fn arn(&self) -> &str {
        match self {
            StartOutcome::Started { arn } | StartOutcome::AlreadyExists { arn } => arn,
        }
    }
}

/// Whether `c` may appear in an execution name (a conservative subset of
/// what Step Functions allows: letters, digits, `-`, `_`, `.`).
fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// The execution name for a build of `recipe` at `commit`:
/// `<recipe>-<first 12 digits of the commit>`, at most 80 characters of
/// `[A-Za-z0-9._-]`. A recipe name too long to fit is cut and suffixed with
/// 8 hex digits of its SHA-256, so different names stay different.
pub fn execution_name(recipe: &str, commit: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| if allowed(c) { c } else { '-' })
            .collect()
    };
    let mut commit: String = clean(&commit.to_ascii_lowercase());
    commit.truncate(COMMIT_DIGITS);
    if commit.is_empty() {
        commit.push_str("nocommit");
    }
    let room = MAX_EXECUTION_NAME - 1 - commit.len();
    let mut name = clean(recipe);
    if name.is_empty() {
        name.push_str("recipe");
    }
    if name.len() > room {
        let digest = hex::encode(Sha256::digest(recipe.as_bytes()));
        name.truncate(room - 9);
        name.push('-');
        name.push_str(&digest[..8]);
    }
    format!("{name}-{commit}")
}

/// The ARN an execution named `name` of `state_machine_arn` has.
pub fn execution_arn(state_machine_arn: &str, name: &str) -> String {
    format!(
        "{}:{name}",
        state_machine_arn.replacen(":stateMachine:", ":execution:", 1)
    )
}

/// Starts an execution named `name` with `input`; an existing execution of
/// that name counts as started (see [`StartOutcome`]).
pub async fn start(
    client: &aws_sdk_sfn::Client,
    state_machine_arn: &str,
    name: &str,
    input: &str,
) -> Result<StartOutcome, ExecutionError> {
    let result = client
        .start_execution()
        .state_machine_arn(state_machine_arn)
        .name(name)
        .input(input)
        .send()
        .await;
    match result {
        Ok(out) => Ok(StartOutcome::Started {
            arn: out.execution_arn,
        }),
        Err(e) => match e.into_service_error() {
            StartExecutionError::ExecutionAlreadyExists(_) => {
                tracing::info!(execution = %name, "execution already exists: not started again");
                Ok(StartOutcome::AlreadyExists {
                    arn: execution_arn(state_machine_arn, name),
                })
            }
            other => Err(ExecutionError::Start {
                name: name.to_string(),
                message: DisplayErrorContext(other).to_string(),
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_is_recipe_and_short_commit() {
        assert_eq!(
            execution_name("web", "9B2F4A61C0DE11223344556677889900AABBCCDD"),
            "web-9b2f4a61c0de"
        );
    }

    #[test]
    fn long_names_are_cut_with_a_digest_and_stay_distinct() {
        let a = "a".repeat(100);
        let b = format!("{}b", "a".repeat(99));
        let na = execution_name(&a, "0123456789abcdef");
        let nb = execution_name(&b, "0123456789abcdef");
        assert_eq!(na.len(), MAX_EXECUTION_NAME);
        assert_eq!(nb.len(), MAX_EXECUTION_NAME);
        assert_ne!(na, nb);
        assert!(na.ends_with("-0123456789ab"), "{na}");
    }

    #[test]
    fn odd_characters_are_replaced() {
        assert_eq!(execution_name("a b/c", "x:y"), "a-b-c-x-y");
        assert_eq!(execution_name("", ""), "recipe-nocommit");
    }

    #[test]
    fn arn_of_a_named_execution() {
        assert_eq!(
            execution_arn(
                "arn:aws:states:eu-west-1:123456789012:stateMachine:pipe",
                "web-1"
            ),
            "arn:aws:states:eu-west-1:123456789012:execution:pipe:web-1"
        );
    }
}
