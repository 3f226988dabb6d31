//! Event-driven waits: a step that must wait (an SSM command running, an
//! AMI being made) is parked on a Step Functions task token
//! (`.waitForTaskToken`) instead of a `Wait` + poll loop, and completed when
//! an event says its work ended.
//!
//! The protocol, with the build record as the meeting point:
//!
//! - **park** (the step's function, called by the `WaitFor<Step>` state with
//!   `task_token`): stores the token in the record, then wakes.
//! - **wake** (the step's function, called with `wake: true` by the events
//!   function on an EventBridge event, or by park): takes the token out of
//!   the record, polls the step, and completes the token with the step's
//!   result or error. If the step is still waiting, the token goes back —
//!   unless an event came meanwhile (`woken`), then it polls again.
//!
//! Taking the token out means at most one caller polls a build's step at a
//! time, and an event that finds no token is never lost: it sets `woken`,
//! which the token's holder sees before parking it again.

use async_trait::async_trait;
use serde_json::Value;

use crate::asl::TaskTokens;
use crate::build::{Awaiting, Step};

use super::StepError;

/// Completes task tokens: `SendTaskSuccess` and `SendTaskFailure` in AWS,
/// the local runner's [`TaskTokens`] on this machine.
#[async_trait]
pub trait TaskCallback: Send + Sync {
    /// The waiting state succeeds with `output`.
    async fn succeed(&self, token: &str, output: Value) -> Result<(), StepError>;
    /// The waiting state fails with `error` (what Retry and Catch match)
    /// and `cause`.
    async fn fail(&self, token: &str, error: &str, cause: &str) -> Result<(), StepError>;
}

/// Step Functions' `SendTaskSuccess` / `SendTaskFailure`.
pub struct SfnCallback {
    client: aws_sdk_sfn::Client,
}

impl SfnCallback {
    /// A callback over `client`.
    pub fn new(client: aws_sdk_sfn::Client) -> Self {
        SfnCallback { client }
    }
}

/// A token that is already completed or timed out is not an error of the
/// step: its state has moved on (a timeout re-parks with a new token).
fn token_gone<E: aws_sdk_sfn::error::ProvideErrorMetadata>(error: &E) -> bool {
    matches!(error.code(), Some("TaskTimedOut" | "TaskDoesNotExist"))
}

fn sfn_error<E>(what: &str, error: aws_sdk_sfn::error::SdkError<E>) -> StepError
where
    E: std::error::Error + Send + Sync + 'static,
    aws_sdk_sfn::error::SdkError<E>: std::error::Error,
{
    StepError::Retryable(format!(
        "{what}: {}",
        aws_sdk_sfn::error::DisplayErrorContext(error)
    ))
}

#[async_trait]
impl TaskCallback for SfnCallback {
    async fn succeed(&self, token: &str, output: Value) -> Result<(), StepError> {
        let sent = self
            .client
            .send_task_success()
            .task_token(token)
            .output(output.to_string())
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(token_gone) => {
                tracing::info!("SendTaskSuccess: the token's state has moved on");
                Ok(())
            }
            Err(e) => Err(sfn_error("SendTaskSuccess", e)),
        }
    }

    async fn fail(&self, token: &str, error: &str, cause: &str) -> Result<(), StepError> {
        // Step Functions caps the error at 256 and the cause at 32768 characters.
        let sent = self
            .client
            .send_task_failure()
            .task_token(token)
            .error(truncate(error, 256))
            .cause(truncate(cause, 32768))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(token_gone) => {
                tracing::info!("SendTaskFailure: the token's state has moved on");
                Ok(())
            }
            Err(e) => Err(sfn_error("SendTaskFailure", e)),
        }
    }
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

/// The local runner: the token is completed in this process.
#[async_trait]
impl TaskCallback for TaskTokens {
    async fn succeed(&self, token: &str, output: Value) -> Result<(), StepError> {
        self.send_task_success(token, output)
            .or_else(|e| gone_locally(&e))
    }

    async fn fail(&self, token: &str, error: &str, cause: &str) -> Result<(), StepError> {
        self.send_task_failure(token, error, cause)
            .or_else(|e| gone_locally(&e))
    }
}

fn gone_locally(error: &crate::asl::CallbackError) -> Result<(), StepError> {
    tracing::info!("{error}: the token's state has moved on");
    Ok(())
}

/// What to do after a poll that found the step still waiting.
pub(crate) enum AfterWait {
    /// The token is parked again: the next event wakes the step.
    Parked,
    /// An event came while polling: poll again now.
    PollAgain,
    /// A newer token replaced this one (its state timed out and re-parked).
    Superseded,
}

/// Takes the parked token out of the record (at most one poller), or notes
/// that an event came while none was parked.
pub(crate) fn take(record: &mut crate::build::BuildRecord) -> Option<Awaiting> {
    match record.awaiting.take() {
        Some(a) => {
            record.woken = false;
            Some(a)
        }
        None => {
            record.woken = true;
            None
        }
    }
}

/// Parks `awaiting` again after a poll, unless an event came meanwhile or
/// a newer token took its place.
pub(crate) fn put_back(record: &mut crate::build::BuildRecord, awaiting: &Awaiting) -> AfterWait {
    if record.awaiting.is_some() {
        AfterWait::Superseded
    } else if record.woken {
        record.woken = false;
        AfterWait::PollAgain
    } else {
        record.awaiting = Some(awaiting.clone());
        AfterWait::Parked
    }
}

/// Stores a new token for `step` (replacing one whose state timed out).
pub(crate) fn park(record: &mut crate::build::BuildRecord, step: Step, token: &str, polls: u32) {
    record.awaiting = Some(Awaiting {
        step,
        token: token.to_string(),
        polls,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{BuildRecord, RecipeBundle};
    use crate::registry::{Trigger, TriggerKind};

    fn record() -> BuildRecord {
        let bundle = RecipeBundle {
            recipe: serde_json::json!({}),
            files: Default::default(),
        };
        BuildRecord::new("b", "r", bundle, Trigger::of(TriggerKind::Console), false)
    }

    #[test]
    fn an_event_while_polling_makes_the_holder_poll_again() {
        let mut r = record();
        park(&mut r, Step::Provision, "t1", 0);
        let held = take(&mut r).unwrap();
        // the event's wake finds no token: it leaves a mark instead
        assert!(take(&mut r).is_none());
        assert!(r.woken);
        assert!(matches!(put_back(&mut r, &held), AfterWait::PollAgain));
        assert!(!r.woken && r.awaiting.is_none());
        assert!(matches!(put_back(&mut r, &held), AfterWait::Parked));
        assert_eq!(r.awaiting.as_ref().unwrap().token, "t1");
    }

    #[test]
    fn a_newer_token_is_not_overwritten() {
        let mut r = record();
        park(&mut r, Step::Capture, "old", 1);
        let held = take(&mut r).unwrap();
        park(&mut r, Step::Capture, "new", 2);
        assert!(matches!(put_back(&mut r, &held), AfterWait::Superseded));
        assert_eq!(r.awaiting.as_ref().unwrap().token, "new");
    }

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncate("ééé", 2), "éé");
        assert_eq!(truncate("ab", 5), "ab");
    }
}
