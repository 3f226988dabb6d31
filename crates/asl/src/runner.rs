//! The public entry point for running a loaded [`StateMachine`]: a
//! [`Runner`] holding the task invoker, the clock and the randomness, and the
//! [`Execution`] record it returns.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::callback::TaskTokens;
use super::clock::Clock;
use super::definition::StateMachine;
use super::error::{TaskFailure, STATES_TIMEOUT};
use super::exec::{add_seconds, check_size, Exec, Halt};
use super::history::{EventKind, HistoryEvent, Observer, Recorder};

/// Account and region used in the ARNs of the context object.
const LOCAL_ARN_PREFIX: &str = "arn:aws:states:local:000000000000";

/// The seam through which Task states do their work.
#[async_trait]
pub trait TaskInvoker: Send + Sync {
    /// Runs `resource` with `input`. For `arn:aws:states:::lambda:invoke`
    /// the resource is the `FunctionName` and the input the `Payload`; for
    /// any other Task it is the state's `Resource` and effective input. An
    /// `Err` is a task failure that Retry/Catch route on by its `error`.
    async fn invoke(&self, resource: &str, input: Value) -> Result<Value, TaskFailure>;
}

/// How an execution ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status")]
pub enum ExecutionStatus {
    /// A Succeed state or an `End` was reached.
    Succeeded,
    /// A Fail state was reached or an error was not caught.
    Failed {
        /// Error name.
        error: String,
        /// Cause; `None` where Step Functions gives none (a `Fail` state
        /// without `Cause`/`CausePath`, an uncaught Task `States.Timeout`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cause: Option<String>,
    },
    /// The machine's `TimeoutSeconds` elapsed.
    TimedOut,
}

/// The record of one run of a state machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    /// The execution name given to [`Runner::execute`].
    pub name: String,
    /// How it ended.
    pub status: ExecutionStatus,
    /// The final output, when it succeeded.
    pub output: Option<Value>,
    /// Everything that happened, in order.
    pub history: Vec<HistoryEvent>,
    /// States entered (at any nesting depth) plus retries, as Step Functions
    /// counts them for billing.
    pub state_transitions: u64,
    /// When it started, by the runner's clock.
    pub started_at: DateTime<Utc>,
    /// When it stopped, by the runner's clock.
    pub stopped_at: DateTime<Utc>,
}

impl Execution {
    /// Whether the execution succeeded.
    pub fn succeeded(&self) -> bool {
        self.status == ExecutionStatus::Succeeded
    }
}

/// Runs a [`StateMachine`] locally, calling a [`TaskInvoker`] for Task states
/// and a [`Clock`] for all waiting.
pub struct Runner {
    machine: Arc<StateMachine>,
    invoker: Arc<dyn TaskInvoker>,
    clock: Arc<dyn Clock>,
    observer: Option<Observer>,
    rng: Arc<Mutex<fastrand::Rng>>,
    tokens: TaskTokens,
}

impl Runner {
    /// A runner for `machine`, with randomness (retry jitter,
    /// `States.MathRandom`, `States.UUID`) seeded from the OS.
    pub fn new(
        machine: impl Into<Arc<StateMachine>>,
        invoker: Arc<dyn TaskInvoker>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Runner {
            machine: machine.into(),
            invoker,
            clock,
            observer: None,
            rng: Arc::new(Mutex::new(fastrand::Rng::new())),
            tokens: TaskTokens::default(),
        }
    }

    /// The task tokens its callback Tasks (`.waitForTaskToken`) wait on: a
    /// handle to complete them with, from anywhere.
    pub fn task_tokens(&self) -> TaskTokens {
        self.tokens.clone()
    }

    /// Uses `tokens` for its callback Tasks, so that whatever completes
    /// them can be given the handle before the runner exists (the invoker).
    pub fn with_task_tokens(mut self, tokens: TaskTokens) -> Self {
        self.tokens = tokens;
        self
    }

    /// Calls `observer` with each history event as it is recorded.
    pub fn with_observer(mut self, observer: Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Uses `rng` for all randomness (use `fastrand::Rng::with_seed` for
    /// reproducible runs).
    pub fn with_rng(mut self, rng: fastrand::Rng) -> Self {
        self.rng = Arc::new(Mutex::new(rng));
        self
    }

    /// The state machine this runner runs.
    pub fn machine(&self) -> &StateMachine {
        &self.machine
    }

    /// Runs the state machine to completion with `input`. Never panics on
    /// bad input: every problem ends the execution as
    /// [`ExecutionStatus::Failed`] with a Step Functions error name.
    ///
    /// Step Functions' payload quota ([`crate::PAYLOAD_LIMIT_BYTES`])
    /// applies as in AWS: a state input after `Parameters`, a task result or
    /// a state output over 256 KiB fails the state with
    /// `States.DataLimitExceeded`, which `States.ALL` and
    /// `States.TaskFailed` do not catch (only a retrier or catcher that names
    /// it does), so an uncaught one fails the execution. An execution input
    /// over the quota (which `StartExecution` refuses in AWS) fails the
    /// execution before its first state.
    pub async fn execute(&self, name: &str, input: Value) -> Execution {
        let machine = &*self.machine;
        let started_at = self.clock.now();
        let recorder = Recorder::new(self.clock.clone(), self.observer.clone());
        tracing::info!(execution = name, state_machine = %machine.name, "asl execution started");
        recorder.record(EventKind::ExecutionStarted {
            name: name.to_string(),
            input: input.clone(),
        });
        let deadline = machine.timeout_seconds.map(|s| add_seconds(started_at, s));
        let exec = Exec {
            invoker: &*self.invoker,
            tokens: &self.tokens,
            clock: &*self.clock,
            rng: &self.rng,
            recorder,
            base_context: base_context(machine, name, &input, started_at),
            deadline,
        };
        // Step Functions refuses to start an execution whose input is over
        // the payload quota; locally the execution fails at once instead.
        let run = async {
            check_size(&input, || "the execution input".to_string())?;
            exec.run_graph(&machine.graph, input).await
        };
        let result = match deadline {
            None => run.await,
            Some(deadline) => {
                tokio::select! {
                    biased;
                    result = run => result,
                    _ = self.clock.sleep_until(deadline) => Err(Halt::TimedOut),
                }
            }
        };
        let (status, output) = match result {
            Ok(output) => {
                exec.recorder.record(EventKind::ExecutionSucceeded {
                    output: output.clone(),
                });
                (ExecutionStatus::Succeeded, Some(output))
            }
            Err(Halt::Failed(failure)) => {
                exec.recorder.record(EventKind::ExecutionFailed {
                    error: failure.error.clone(),
                    cause: failure.cause.clone(),
                });
                (
                    ExecutionStatus::Failed {
                        error: failure.error,
                        cause: failure.cause,
                    },
                    None,
                )
            }
            Err(Halt::TimedOut) => {
                exec.recorder.record(EventKind::ExecutionTimedOut {
                    error: STATES_TIMEOUT.to_string(),
                    cause: Some(format!(
                        "The execution ran longer than the state machine's TimeoutSeconds ({}s)",
                        machine.timeout_seconds.unwrap_or_default()
                    )),
                });
                (ExecutionStatus::TimedOut, None)
            }
        };
        let (history, state_transitions) = exec.recorder.finish();
        tracing::info!(execution = name, status = ?status, state_transitions, "asl execution finished");
        Execution {
            name: name.to_string(),
            status,
            output,
            history,
            state_transitions,
            started_at,
            stopped_at: self.clock.now(),
        }
    }
}

/// Formats a time as Step Functions does in the context object.
pub(crate) fn context_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The `Execution` and `StateMachine` parts of the context object.
fn base_context(
    machine: &StateMachine,
    name: &str,
    input: &Value,
    started_at: DateTime<Utc>,
) -> Map<String, Value> {
    let mut ctx = Map::new();
    ctx.insert(
        "Execution".to_string(),
        json!({
            "Id": format!("{LOCAL_ARN_PREFIX}:execution:{}:{name}", machine.name),
            "Name": name,
            "Input": input,
            "StartTime": context_time(started_at),
            "RoleArn": "arn:aws:iam::000000000000:role/local",
        }),
    );
    ctx.insert(
        "StateMachine".to_string(),
        json!({
            "Id": format!("{LOCAL_ARN_PREFIX}:stateMachine:{}", machine.name),
            "Name": machine.name,
        }),
    );
    ctx
}
