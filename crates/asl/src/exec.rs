//! Running states: the per-state input/output processing in the
//! specification's order (InputPath, Parameters, the work, ResultSelector,
//! ResultPath, OutputPath), Retry/Catch, and the nested graphs of Parallel
//! and Map states.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::{try_join_all, BoxFuture};
use futures::{StreamExt as _, TryStreamExt as _};
use serde_json::{json, Map, Value};

use super::callback::{Registered, TaskTokens};
use super::clock::Clock;
use super::definition::{Graph, Resource, State, StateKind, TextSource, WaitFor};
use super::error::{
    TaskFailure, PAYLOAD_LIMIT_BYTES, STATES_HEARTBEAT_TIMEOUT, STATES_NO_CHOICE_MATCHED,
};
use super::history::{EventKind, Recorder};
use super::path::type_name;
use super::retry::error_output;
use super::runner::{context_time, TaskInvoker};
use super::template::{Env, Template};

/// Why a state (or graph) stopped without an output.
pub(crate) enum Halt {
    /// A Step Functions error, which Retry/Catch may handle.
    Failed(TaskFailure),
    /// The execution's own timeout; nothing handles it.
    TimedOut,
}

impl From<TaskFailure> for Halt {
    fn from(f: TaskFailure) -> Self {
        Halt::Failed(f)
    }
}

/// Where to go after a state.
pub(crate) enum Step<'a> {
    Next(&'a str, Value),
    End(Value),
}

/// `t + seconds`, saturating at the latest representable time.
pub(crate) fn add_seconds(t: DateTime<Utc>, seconds: u64) -> DateTime<Utc> {
    i64::try_from(seconds)
        .ok()
        .and_then(chrono::Duration::try_seconds)
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// A Task's time limits.
#[derive(Clone, Copy)]
struct TaskLimits {
    timeout_seconds: Option<u64>,
    heartbeat_seconds: Option<u64>,
}

/// Forgets a task token when dropped.
struct Forget<'a>(&'a TaskTokens, &'a str);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.forget(self.1);
    }
}

/// The context object with `Task.Token` set, for a callback Task.
fn with_task_token(ctx: &Value, token: &str) -> Value {
    let mut ctx = ctx.clone();
    if let Value::Object(map) = &mut ctx {
        map.insert("Task".to_string(), json!({ "Token": token }));
    }
    ctx
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until_some(clock: &dyn Clock, deadline: Option<DateTime<Utc>>) {
    match deadline {
        Some(deadline) => clock.sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// One running execution.
pub(crate) struct Exec<'r> {
    pub(crate) invoker: &'r dyn TaskInvoker,
    /// Tokens of callback Tasks waiting for completion.
    pub(crate) tokens: &'r TaskTokens,
    pub(crate) clock: &'r dyn Clock,
    pub(crate) rng: &'r Mutex<fastrand::Rng>,
    pub(crate) recorder: Recorder,
    /// `Execution` and `StateMachine` members of the context object.
    pub(crate) base_context: Map<String, Value>,
    pub(crate) deadline: Option<DateTime<Utc>>,
}

impl Exec<'_> {
    fn check_deadline(&self) -> Result<(), Halt> {
        match self.deadline {
            Some(deadline) if self.clock.now() >= deadline => Err(Halt::TimedOut),
            _ => Ok(()),
        }
    }

    fn env<'v>(&'v self, input: &'v Value, context: &'v Value) -> Env<'v> {
        Env {
            input,
            context,
            rng: self.rng,
        }
    }

    /// Runs a graph from its `StartAt` to an end, returning the last output.
    pub(crate) fn run_graph<'a>(
        &'a self,
        graph: &'a Graph,
        input: Value,
    ) -> BoxFuture<'a, Result<Value, Halt>> {
        Box::pin(async move {
            let mut name = graph.start_at.as_str();
            let mut input = input;
            loop {
                self.check_deadline()?;
                let state = graph.states.get(name).ok_or_else(|| {
                    TaskFailure::runtime(format!("state `{name}` does not exist"))
                })?;
                match self.run_state(state, input).await? {
                    Step::Next(next, output) => {
                        name = next;
                        input = output;
                    }
                    Step::End(output) => return Ok(output),
                }
            }
        })
    }

    /// Runs one state with its Retry and Catch handling.
    async fn run_state<'a>(&'a self, state: &'a State, input: Value) -> Result<Step<'a>, Halt> {
        let entered = self.clock.now();
        self.recorder.transition();
        tracing::debug!(state = %state.name, "asl state entered");
        self.recorder.record(EventKind::StateEntered {
            state: state.name.clone(),
            input: input.clone(),
        });
        let mut retries_by_retrier = vec![0u64; state.retry.len()];
        let mut retry_count = 0u64;
        loop {
            let context = self.context(state, entered, retry_count);
            let attempt = self.attempt(state, &input, &context).await;
            let failure = match attempt.and_then(|step| within_limit(state, step)) {
                Ok(step) => {
                    let output = match &step {
                        Step::Next(_, v) | Step::End(v) => v.clone(),
                    };
                    self.recorder.record(EventKind::StateExited {
                        state: state.name.clone(),
                        output,
                    });
                    return Ok(step);
                }
                Err(Halt::TimedOut) => return Err(Halt::TimedOut),
                Err(Halt::Failed(failure)) => failure,
            };
            tracing::debug!(state = %state.name, error = %failure.error, "asl state failed");
            if let Some(index) = state.retry.iter().position(|r| r.matches(&failure.error)) {
                let retrier = &state.retry[index];
                if retries_by_retrier[index] < retrier.max_attempts {
                    let delay = {
                        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
                        retrier.delay(retries_by_retrier[index], &mut rng)
                    };
                    retries_by_retrier[index] += 1;
                    retry_count += 1;
                    self.recorder.transition();
                    self.recorder.record(EventKind::TaskRetried {
                        state: state.name.clone(),
                        error: failure.error.clone(),
                        attempt: u32::try_from(retry_count).unwrap_or(u32::MAX),
                        delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    });
                    if !delay.is_zero() {
                        self.clock.sleep(delay).await;
                    }
                    self.check_deadline()?;
                    continue;
                }
            }
            if let Some(catcher) = state.catch.iter().find(|c| c.matches(&failure.error)) {
                let output = catcher.result_path.apply(
                    &input,
                    error_output(&failure.error, failure.cause.as_deref()),
                )?;
                self.recorder.record(EventKind::ErrorCaught {
                    state: state.name.clone(),
                    error: failure.error,
                    cause: failure.cause,
                    next: catcher.next.clone(),
                });
                return Ok(Step::Next(&catcher.next, output));
            }
            return Err(Halt::Failed(failure));
        }
    }

    /// The context object (`$$`) for a state.
    fn context(&self, state: &State, entered: DateTime<Utc>, retry_count: u64) -> Value {
        let mut ctx = self.base_context.clone();
        ctx.insert(
            "State".to_string(),
            json!({
                "Name": state.name,
                "EnteredTime": context_time(entered),
                "RetryCount": retry_count,
            }),
        );
        Value::Object(ctx)
    }

    /// One attempt at a state's work, from raw input to the transition.
    async fn attempt<'a>(
        &'a self,
        state: &'a State,
        raw: &Value,
        ctx: &Value,
    ) -> Result<Step<'a>, Halt> {
        match &state.kind {
            StateKind::Pass { result } => {
                let effective = self.effective_input(state, raw, ctx)?;
                let result = result.clone().unwrap_or(effective);
                self.finish(state, raw, result, ctx)
            }
            StateKind::Task {
                resource,
                timeout_seconds,
                heartbeat_seconds,
                callback,
            } => {
                let token = callback.then(|| self.new_token());
                let task_ctx = match &token {
                    Some(token) => with_task_token(ctx, token),
                    None => ctx.clone(),
                };
                let effective = self.effective_input(state, raw, &task_ctx)?;
                let limits = TaskLimits {
                    timeout_seconds: *timeout_seconds,
                    heartbeat_seconds: *heartbeat_seconds,
                };
                let result = self
                    .invoke(state, resource, effective, limits, token.as_deref())
                    .await?;
                self.finish(state, raw, result, &task_ctx)
            }
            StateKind::Choice { choices, default } => {
                let effective = state.input_path.apply(raw.clone(), ctx, "InputPath")?;
                let mut target = None;
                for branch in choices {
                    if branch.rule.eval(&effective, ctx)? {
                        target = Some(branch.next.as_str());
                        break;
                    }
                }
                let target = target.or(default.as_deref()).ok_or_else(|| {
                    TaskFailure::new(
                        STATES_NO_CHOICE_MATCHED,
                        format!(
                            "No Choice rule of state '{}' matched and there is no Default",
                            state.name
                        ),
                    )
                })?;
                let output = state.output_path.apply(effective, ctx, "OutputPath")?;
                Ok(Step::Next(target, output))
            }
            StateKind::Wait(wait_for) => {
                let effective = state.input_path.apply(raw.clone(), ctx, "InputPath")?;
                self.wait(state, wait_for, &effective, ctx).await?;
                let output = state.output_path.apply(effective, ctx, "OutputPath")?;
                Ok(transition(state, output))
            }
            StateKind::Succeed => {
                let effective = state.input_path.apply(raw.clone(), ctx, "InputPath")?;
                Ok(Step::End(state.output_path.apply(
                    effective,
                    ctx,
                    "OutputPath",
                )?))
            }
            StateKind::Fail { error, cause } => {
                // The specification (Fail State): "Fail States MAY have
                // Error and Cause fields". Step Functions leaves out what
                // the state leaves out: no cause is not an empty cause.
                let error = self.text(error.as_ref(), raw, ctx, "ErrorPath")?;
                let cause = self.text(cause.as_ref(), raw, ctx, "CausePath")?;
                Err(Halt::Failed(TaskFailure {
                    error: error.unwrap_or_default(),
                    cause,
                }))
            }
            StateKind::Parallel { branches } => {
                let effective = self.effective_input(state, raw, ctx)?;
                let runs = branches
                    .iter()
                    .enumerate()
                    .map(|(i, graph)| self.run_branch(state, i, graph, effective.clone()));
                let results = try_join_all(runs).await?;
                self.finish(state, raw, Value::Array(results), ctx)
            }
            StateKind::Map {
                items_path,
                item_selector,
                processor,
                max_concurrency,
            } => {
                let effective = state.input_path.apply(raw.clone(), ctx, "InputPath")?;
                let items = match items_path {
                    Some(path) => path.require(&effective, ctx, "ItemsPath")?,
                    None => effective.clone(),
                };
                let Value::Array(items) = items else {
                    return Err(TaskFailure::runtime(format!(
                        "The ItemsPath of Map state '{}' must select an array, not a {}",
                        state.name,
                        type_name(&items)
                    ))
                    .into());
                };
                self.recorder.record(EventKind::MapStarted {
                    state: state.name.clone(),
                    items: items.len(),
                });
                let limit = match usize::try_from(*max_concurrency) {
                    Ok(0) | Err(_) => items.len().max(1),
                    Ok(n) => n,
                };
                let selector = item_selector.as_ref();
                let results: Vec<Value> = futures::stream::iter(items.into_iter().enumerate())
                    .map(|(index, item)| {
                        self.run_iteration(state, index, item, selector, processor, &effective, ctx)
                    })
                    .buffered(limit)
                    .try_collect()
                    .await?;
                self.finish(state, raw, Value::Array(results), ctx)
            }
        }
    }

    /// InputPath, then Parameters.
    fn effective_input(
        &self,
        state: &State,
        raw: &Value,
        ctx: &Value,
    ) -> Result<Value, TaskFailure> {
        let selected = state.input_path.apply(raw.clone(), ctx, "InputPath")?;
        let effective = match &state.parameters {
            Some(template) => template.render(&self.env(&selected, ctx))?,
            None => selected,
        };
        check_size(&effective, || {
            format!("the input of state '{}' (after Parameters)", state.name)
        })?;
        Ok(effective)
    }

    /// ResultSelector, ResultPath, OutputPath, then the transition.
    fn finish<'a>(
        &self,
        state: &'a State,
        raw: &Value,
        result: Value,
        ctx: &Value,
    ) -> Result<Step<'a>, Halt> {
        let result = match &state.result_selector {
            Some(template) => template.render(&self.env(&result, ctx))?,
            None => result,
        };
        let combined = state.result_path.apply(raw, result)?;
        let output = state.output_path.apply(combined, ctx, "OutputPath")?;
        Ok(transition(state, output))
    }

    /// A new task token for a callback Task (random, like Step Functions'
    /// opaque tokens).
    fn new_token(&self) -> String {
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        (0..4).map(|_| format!("{:016x}", rng.u64(..))).collect()
    }

    async fn invoke(
        &self,
        state: &State,
        resource: &Resource,
        effective: Value,
        limits: TaskLimits,
        token: Option<&str>,
    ) -> Result<Value, Halt> {
        let (target, payload) = match resource {
            Resource::LambdaInvoke => {
                let Value::Object(mut params) = effective else {
                    return Err(
                        TaskFailure::runtime("lambda:invoke Parameters must be an object").into(),
                    );
                };
                let function = match params.get("FunctionName") {
                    Some(Value::String(name)) => name.clone(),
                    _ => {
                        return Err(TaskFailure::runtime(
                            "lambda:invoke needs a string FunctionName",
                        )
                        .into())
                    }
                };
                let payload = params
                    .remove("Payload")
                    .unwrap_or_else(|| Value::Object(Map::new()));
                (function, payload)
            }
            Resource::Other(resource) => (resource.clone(), effective),
        };
        self.recorder.record(EventKind::TaskScheduled {
            state: state.name.clone(),
            resource: target.clone(),
            input: payload.clone(),
        });
        let call = self.invoker.invoke(&target, payload);
        let outcome = match token {
            Some(token) => self.wait_for_callback(token, call, limits).await,
            None => self.within_timeout(call, limits.timeout_seconds).await,
        };
        let outcome = outcome.and_then(|result| {
            check_size(&result, || format!("the result of task '{}'", state.name))?;
            Ok(result)
        });
        match outcome {
            Ok(result) => {
                self.recorder.record(EventKind::TaskSucceeded {
                    state: state.name.clone(),
                    resource: target,
                    output: result.clone(),
                });
                // A callback's result is what SendTaskSuccess gave, as is.
                Ok(match resource {
                    Resource::LambdaInvoke if token.is_none() => {
                        json!({ "Payload": result, "StatusCode": 200 })
                    }
                    _ => result,
                })
            }
            Err(failure) => {
                self.recorder.record(EventKind::TaskFailed {
                    state: state.name.clone(),
                    resource: target,
                    error: failure.error.clone(),
                    cause: failure.cause.clone(),
                });
                Err(Halt::Failed(failure))
            }
        }
    }

    /// A task call bounded by its `TimeoutSeconds`.
    async fn within_timeout(
        &self,
        call: impl std::future::Future<Output = Result<Value, TaskFailure>>,
        timeout_seconds: Option<u64>,
    ) -> Result<Value, TaskFailure> {
        match timeout_seconds {
            None => call.await,
            Some(seconds) => {
                let deadline = add_seconds(self.clock.now(), seconds);
                // Step Functions' TaskTimedOut gives only the error, no cause.
                let timed_out = TaskFailure::timeout;
                tokio::select! {
                    biased;
                    result = call => {
                        if self.clock.now() >= deadline { Err(timed_out()) } else { result }
                    }
                    _ = self.clock.sleep_until(deadline) => Err(timed_out()),
                }
            }
        }
    }

    /// A callback Task: registers `token`, makes the call (an error fails
    /// the Task, a result is ignored), then waits for the token's
    /// completion within `TimeoutSeconds` (from the start) and
    /// `HeartbeatSeconds` (from the start or the last heartbeat). The token
    /// is forgotten on every path.
    async fn wait_for_callback(
        &self,
        token: &str,
        call: impl std::future::Future<Output = Result<Value, TaskFailure>>,
        limits: TaskLimits,
    ) -> Result<Value, TaskFailure> {
        let Registered {
            mut done,
            mut heartbeats,
        } = self.tokens.register(token);
        let started = self.clock.now();
        let deadline = limits.timeout_seconds.map(|s| add_seconds(started, s));
        let waited = async {
            let mut call = std::pin::pin!(call);
            let mut called = false;
            let mut last_beat = started;
            loop {
                let beat_deadline = limits.heartbeat_seconds.map(|s| add_seconds(last_beat, s));
                tokio::select! {
                    biased;
                    completion = &mut done => {
                        return completion.unwrap_or_else(|_| Err(TaskFailure::runtime("the task token was dropped")));
                    }
                    result = &mut call, if !called => {
                        called = true;
                        result?;
                    }
                    changed = heartbeats.changed() => {
                        if changed.is_ok() {
                            last_beat = self.clock.now();
                        }
                    }
                    _ = sleep_until_some(self.clock, beat_deadline) => {
                        return Err(TaskFailure::without_cause(STATES_HEARTBEAT_TIMEOUT));
                    }
                    _ = sleep_until_some(self.clock, deadline) => {
                        return Err(TaskFailure::timeout());
                    }
                }
            }
        };
        // Forgotten also when the wait is dropped (an execution timeout).
        let _forget = Forget(self.tokens, token);
        waited.await
    }

    async fn wait(
        &self,
        state: &State,
        wait_for: &WaitFor,
        effective: &Value,
        ctx: &Value,
    ) -> Result<(), Halt> {
        let now = self.clock.now();
        let (duration, until) = match wait_for {
            WaitFor::Seconds(seconds) => {
                (Duration::from_secs(*seconds), add_seconds(now, *seconds))
            }
            WaitFor::SecondsPath(path) => {
                let value = path.require(effective, ctx, "SecondsPath")?;
                let seconds = value.as_u64().ok_or_else(|| {
                    TaskFailure::runtime(format!(
                        "The SecondsPath '{}' must select a non-negative integer, got {value}",
                        path.text()
                    ))
                })?;
                (Duration::from_secs(seconds), add_seconds(now, seconds))
            }
            WaitFor::Timestamp(until) => (until_duration(now, *until), *until),
            WaitFor::TimestampPath(path) => {
                let value = path.require(effective, ctx, "TimestampPath")?;
                let until = value
                    .as_str()
                    .and_then(super::choice::timestamp)
                    .ok_or_else(|| {
                        TaskFailure::runtime(format!(
                            "The TimestampPath '{}' must select an RFC 3339 timestamp, got {value}",
                            path.text()
                        ))
                    })?
                    .with_timezone(&Utc);
                (until_duration(now, until), until)
            }
        };
        self.recorder.record(EventKind::Wait {
            state: state.name.clone(),
            seconds: duration.as_secs_f64(),
            until,
        });
        if !duration.is_zero() {
            self.clock.sleep(duration).await;
        }
        Ok(())
    }

    /// A Fail state's error or cause (`None` when the state has neither the
    /// field nor its `...Path`).
    fn text(
        &self,
        source: Option<&TextSource>,
        raw: &Value,
        ctx: &Value,
        field: &str,
    ) -> Result<Option<String>, Halt> {
        let value = match source {
            None => return Ok(None),
            Some(TextSource::Literal(s)) => return Ok(Some(s.clone())),
            Some(TextSource::Path(path)) => path.require(raw, ctx, field)?,
            Some(TextSource::Call(call)) => call.eval(&self.env(raw, ctx))?,
        };
        match value {
            Value::String(s) => Ok(Some(s)),
            other => Err(TaskFailure::runtime(format!(
                "{field} must select a string, got {other}"
            ))
            .into()),
        }
    }

    async fn run_branch(
        &self,
        state: &State,
        branch: usize,
        graph: &Graph,
        input: Value,
    ) -> Result<Value, Halt> {
        self.recorder.record(EventKind::ParallelBranchStarted {
            state: state.name.clone(),
            branch,
        });
        let result = self.run_graph(graph, input).await;
        match &result {
            Ok(_) => self.recorder.record(EventKind::ParallelBranchSucceeded {
                state: state.name.clone(),
                branch,
            }),
            Err(Halt::Failed(f)) => self.recorder.record(EventKind::ParallelBranchFailed {
                state: state.name.clone(),
                branch,
                error: f.error.clone(),
                cause: f.cause.clone(),
            }),
            Err(Halt::TimedOut) => {}
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_iteration(
        &self,
        state: &State,
        index: usize,
        item: Value,
        selector: Option<&Template>,
        processor: &Graph,
        effective: &Value,
        ctx: &Value,
    ) -> Result<Value, Halt> {
        let input = match selector {
            Some(template) => {
                let mut item_ctx = ctx.clone();
                if let Value::Object(map) = &mut item_ctx {
                    map.insert(
                        "Map".to_string(),
                        json!({ "Item": { "Index": index, "Value": item } }),
                    );
                }
                template.render(&self.env(effective, &item_ctx))?
            }
            None => item,
        };
        self.recorder.record(EventKind::MapIterationStarted {
            state: state.name.clone(),
            index,
        });
        let result = self.run_graph(processor, input).await;
        match &result {
            Ok(_) => self.recorder.record(EventKind::MapIterationSucceeded {
                state: state.name.clone(),
                index,
            }),
            Err(Halt::Failed(f)) => self.recorder.record(EventKind::MapIterationFailed {
                state: state.name.clone(),
                index,
                error: f.error.clone(),
                cause: f.cause.clone(),
            }),
            Err(Halt::TimedOut) => {}
        }
        result
    }
}

/// Fails with `States.DataLimitExceeded` when `value`, encoded as JSON, is
/// larger than [`PAYLOAD_LIMIT_BYTES`]; `what` names it in the cause.
pub(crate) fn check_size(value: &Value, what: impl FnOnce() -> String) -> Result<(), TaskFailure> {
    if json_size(value) > PAYLOAD_LIMIT_BYTES {
        return Err(TaskFailure::data_limit(format!(
            "{} is larger than the payload quota of {PAYLOAD_LIMIT_BYTES} bytes",
            what()
        )));
    }
    Ok(())
}

/// A state's output within the payload quota, or `States.DataLimitExceeded`.
fn within_limit<'a>(state: &State, step: Step<'a>) -> Result<Step<'a>, Halt> {
    let (Step::Next(_, output) | Step::End(output)) = &step;
    check_size(output, || format!("the output of state '{}'", state.name))?;
    Ok(step)
}

/// The length of `value` encoded as JSON (UTF-8), counted without building
/// the text; counting stops once past the quota.
fn json_size(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            if self.0 > PAYLOAD_LIMIT_BYTES {
                // Stop serializing: the size is known to be too large.
                return Err(std::io::Error::other("over the quota"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

fn transition(state: &State, output: Value) -> Step<'_> {
    match &state.next {
        Some(next) => Step::Next(next, output),
        None => Step::End(output),
    }
}

fn until_duration(now: DateTime<Utc>, until: DateTime<Utc>) -> Duration {
    (until - now).to_std().unwrap_or(Duration::ZERO)
}
