//! The callback pattern (`.waitForTaskToken`): a Task whose resource ends
//! with `.waitForTaskToken` gets a task token in the context object
//! (`$$.Task.Token`), calls its resource (whose own result is ignored, as in
//! Step Functions) and then waits until someone completes the token through
//! [`TaskTokens`] (the local `SendTaskSuccess`, `SendTaskFailure` and
//! `SendTaskHeartbeat`), or until its `TimeoutSeconds` or `HeartbeatSeconds`
//! run out (`States.Timeout`, `States.HeartbeatTimeout`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::{oneshot, watch};

use super::error::TaskFailure;

/// What the waiting Task gets: the output of `SendTaskSuccess` or the
/// failure of `SendTaskFailure`.
pub(crate) type Completion = Result<Value, TaskFailure>;

/// A token being waited on.
struct Waiting {
    done: oneshot::Sender<Completion>,
    heartbeat: watch::Sender<u64>,
}

/// The task tokens of a [`crate::Runner`]'s executions that are waiting for
/// their callback. Cloning gives another handle on the same tokens, to hand
/// to whatever completes them (in bakehouse, the local backend when its
/// work ends).
#[derive(Clone, Default)]
pub struct TaskTokens {
    waiting: Arc<Mutex<HashMap<String, Waiting>>>,
}

/// Why a callback was refused: the token is unknown, already completed, or
/// its Task has timed out (Step Functions' `TaskTimedOut`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("TaskTimedOut: task token {token:?} is not waiting (unknown, completed or timed out)")]
pub struct CallbackError {
    /// The token given.
    pub token: String,
}

/// The receiving side of one token, held by the waiting Task.
pub(crate) struct Registered {
    pub(crate) done: oneshot::Receiver<Completion>,
    pub(crate) heartbeats: watch::Receiver<u64>,
}

impl TaskTokens {
    /// Completes `token` with `output` (`SendTaskSuccess`).
    pub fn send_task_success(&self, token: &str, output: Value) -> Result<(), CallbackError> {
        self.complete(token, Ok(output))
    }

    /// Fails `token` with `error` and `cause` (`SendTaskFailure`); the Task
    /// fails with that error, which Retry and Catch route on.
    pub fn send_task_failure(
        &self,
        token: &str,
        error: &str,
        cause: &str,
    ) -> Result<(), CallbackError> {
        self.complete(token, Err(TaskFailure::new(error, cause)))
    }

    /// Restarts the `HeartbeatSeconds` of `token`'s Task
    /// (`SendTaskHeartbeat`).
    pub fn send_task_heartbeat(&self, token: &str) -> Result<(), CallbackError> {
        match self.lock().get(token) {
            Some(w) => {
                w.heartbeat.send_modify(|n| *n += 1);
                Ok(())
            }
            None => Err(refused(token)),
        }
    }

    /// The tokens waiting now.
    pub fn waiting(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    pub(crate) fn register(&self, token: &str) -> Registered {
        let (done, done_rx) = oneshot::channel();
        let (heartbeat, heartbeats) = watch::channel(0);
        self.lock()
            .insert(token.to_string(), Waiting { done, heartbeat });
        Registered {
            done: done_rx,
            heartbeats,
        }
    }

    /// Stops waiting on `token` (its Task ended one way or another).
    pub(crate) fn forget(&self, token: &str) {
        self.lock().remove(token);
    }

    fn complete(&self, token: &str, completion: Completion) -> Result<(), CallbackError> {
        let waiting = self.lock().remove(token).ok_or_else(|| refused(token))?;
        waiting.done.send(completion).map_err(|_| refused(token))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Waiting>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn refused(token: &str) -> CallbackError {
    CallbackError {
        token: token.to_string(),
    }
}
