//! Event-driven waits: a step that must wait (an SSM command running, an
//! AMI being made) is parked on a Step Functions task token
//! (`.waitForTaskToken`) instead of a `Wait` + poll loop, and completed when
//! an event says its work ended.
//!
//! The protocol, with the build record as the meeting point:
//!
//! - **park** (the step's function, called by the `WaitFor<Step>` state with
//!   `task_token`): stores the token, numbered (`park_generation`), and
//!   polls the step once, unless another poller holds the step's lease.
//! - **wake** (the step's function, called with `wake: true` by the events
//!   function on an EventBridge event): takes the token of *its* step out of
//!   the record and polls.
//! - A poller holds a lease (`poll_lease`, [`POLL_LEASE`]) while it polls:
//!   nobody else starts a poll then, so a step is never polled twice at
//!   once. An event or a new token that comes meanwhile sets `woken`, and
//!   the poller polls again (with the newest token) before it lets go.
//! - A finished step completes the token it holds and any newer one parked
//!   meanwhile; a still-waiting step puts its token back. If completing
//!   fails, the token goes back too, for the next wake or timeout.
//!
//! An event that finds no token is never lost: it sets `woken`, which the
//! token's holder sees before parking it again.

use async_trait::async_trait;
use serde_json::Value;

use crate::asl::TaskTokens;
use chrono::{DateTime, Utc};

use crate::build::{Awaiting, BuildRecord, Step};

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

/// How long a poller holds a parked step: the longest a step function may
/// run (the capture function's 900 s). A poller that dies holds it that
/// long at most.
pub(crate) const POLL_LEASE: chrono::Duration = chrono::Duration::seconds(900);

fn lease_active(record: &BuildRecord, now: DateTime<Utc>) -> bool {
    record.poll_lease.is_some_and(|until| until > now)
}

fn hold(record: &mut BuildRecord, now: DateTime<Utc>) {
    record.woken = false;
    record.poll_lease = Some(now + POLL_LEASE);
}

/// What to do after a poll that found the step still waiting.
#[derive(Debug)]
pub(crate) enum AfterWait {
    /// The token is parked again: the next event wakes the step.
    Parked,
    /// An event or a newer token came while polling: poll again with this
    /// token.
    PollAgain(Awaiting),
}

/// Stores a new token for `step` (replacing one whose state timed out);
/// returns it when the caller should poll now (no poller holds the lease).
pub(crate) fn park(
    record: &mut BuildRecord,
    step: Step,
    token: &str,
    polls: u32,
    now: DateTime<Utc>,
) -> Option<Awaiting> {
    record.park_generation += 1;
    let awaiting = Awaiting {
        step,
        token: token.to_string(),
        polls,
        generation: record.park_generation,
    };
    if lease_active(record, now) {
        record.awaiting = Some(awaiting);
        record.woken = true;
        None
    } else {
        record.awaiting = None;
        hold(record, now);
        Some(awaiting)
    }
}

/// Takes `step`'s parked token out of the record (one poller at a time),
/// or notes that an event came while it could not be taken.
pub(crate) fn take(record: &mut BuildRecord, step: Step, now: DateTime<Utc>) -> Option<Awaiting> {
    let parked = record.awaiting.as_ref().is_some_and(|a| a.step == step);
    if lease_active(record, now) || !parked {
        record.woken = true;
        return None;
    }
    let taken = record.awaiting.take();
    hold(record, now);
    taken
}

/// After a poll that found the step still waiting: parks `held` again,
/// unless a newer token or an event came meanwhile.
pub(crate) fn put_back(record: &mut BuildRecord, held: &Awaiting, now: DateTime<Utc>) -> AfterWait {
    if let Some(newer) = record.awaiting.take() {
        hold(record, now);
        return AfterWait::PollAgain(Awaiting {
            polls: newer.polls.max(held.polls),
            ..newer
        });
    }
    if record.woken {
        hold(record, now);
        return AfterWait::PollAgain(held.clone());
    }
    record.awaiting = Some(held.clone());
    record.poll_lease = None;
    AfterWait::Parked
}

/// After the step finished (or failed): lets go of the lease and returns a
/// newer token parked meanwhile, which gets the same result.
pub(crate) fn finish(record: &mut BuildRecord) -> Option<Awaiting> {
    record.poll_lease = None;
    record.woken = false;
    record.awaiting.take()
}

/// Completing `held` failed: it goes back for the next wake or timeout.
pub(crate) fn release(record: &mut BuildRecord, held: &Awaiting) {
    record.poll_lease = None;
    if record.awaiting.is_none() {
        record.awaiting = Some(held.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::RecipeBundle;
    use crate::registry::{Trigger, TriggerKind};

    fn record() -> BuildRecord {
        let bundle = RecipeBundle {
            recipe: serde_json::json!({}),
            files: Default::default(),
        };
        BuildRecord::new("b", "r", bundle, Trigger::of(TriggerKind::Console), false)
    }

    fn now() -> DateTime<Utc> {
        Utc::now()
    }

    #[test]
    fn an_event_while_polling_makes_the_holder_poll_again() {
        let mut r = record();
        let held = park(&mut r, Step::Provision, "t1", 0, now()).expect("poll now");
        // the event's wake cannot take it: it leaves a mark instead
        assert!(take(&mut r, Step::Provision, now()).is_none());
        assert!(r.woken);
        let AfterWait::PollAgain(again) = put_back(&mut r, &held, now()) else {
            panic!("poll again")
        };
        assert_eq!(again, held);
        assert!(!r.woken && r.awaiting.is_none());
        assert!(matches!(put_back(&mut r, &held, now()), AfterWait::Parked));
        assert_eq!(r.awaiting.as_ref().unwrap().token, "t1");
        assert!(r.poll_lease.is_none());
        // now an event's wake takes it
        assert_eq!(take(&mut r, Step::Provision, now()), Some(held));
    }

    #[test]
    fn a_token_parked_while_polling_is_polled_next_and_never_overwritten() {
        let mut r = record();
        let old = park(&mut r, Step::Capture, "old", 1, now()).unwrap();
        // the state timed out and parked a new token while `old` is polled:
        // no second poll starts
        assert!(park(&mut r, Step::Capture, "new", 2, now()).is_none());
        let AfterWait::PollAgain(next) = put_back(&mut r, &old, now()) else {
            panic!("poll again with the new token")
        };
        assert_eq!((next.token.as_str(), next.generation), ("new", 2));
        assert!(r.awaiting.is_none());
        // and if the step finishes while yet another was parked, that one
        // gets the result too
        assert!(park(&mut r, Step::Capture, "newest", 3, now()).is_none());
        assert_eq!(finish(&mut r).unwrap().token, "newest");
        assert!(r.poll_lease.is_none() && r.awaiting.is_none());
    }

    #[test]
    fn a_wake_for_another_step_takes_nothing() {
        let mut r = record();
        let held = park(&mut r, Step::Clean, "t", 0, now()).unwrap();
        assert!(matches!(put_back(&mut r, &held, now()), AfterWait::Parked));
        // a late wake of provision (Lambda retries async invokes)
        assert!(take(&mut r, Step::Provision, now()).is_none());
        assert_eq!(r.awaiting.as_ref().unwrap().token, "t");
    }

    #[test]
    fn an_expired_lease_lets_the_next_poller_in_and_a_failed_completion_puts_back() {
        let mut r = record();
        let held = park(&mut r, Step::Test, "t", 0, now()).unwrap();
        // the poller died; its token is lost with it, the state times out
        let later = now() + POLL_LEASE + chrono::Duration::seconds(1);
        let again = park(&mut r, Step::Test, "t2", 0, later).expect("lease expired");
        release(&mut r, &again);
        assert_eq!(r.awaiting.as_ref().unwrap().token, "t2");
        assert!(r.poll_lease.is_none());
        let _ = held;
    }

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncate("ééé", 2), "éé");
        assert_eq!(truncate("ab", 5), "ab");
    }
}
