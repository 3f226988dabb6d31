//! Conformance tests for the local ASL interpreter. Expected values come from
//! the examples of the States Language specification and the Step Functions
//! developer guide. Everything runs on a [`VirtualClock`]: nothing sleeps.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{json, Value};

use super::*;

mod callback;
mod choice;
mod concurrency;
mod history;
mod intrinsics;
mod io;
mod limits;
mod load;
mod retry;
mod wait;

/// The virtual clock's start: 2024-01-01T00:00:00Z.
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()
}

fn machine(definition: Value) -> StateMachine {
    StateMachine::load(&definition.to_string(), &BTreeMap::new()).unwrap()
}

fn load_err(definition: Value) -> AslError {
    StateMachine::load(&definition.to_string(), &BTreeMap::new()).unwrap_err()
}

/// An invoker made of a closure `(resource, input) -> result`.
struct FnInvoker<F>(F);

#[async_trait]
impl<F> TaskInvoker for FnInvoker<F>
where
    F: Fn(&str, Value) -> Result<Value, TaskFailure> + Send + Sync,
{
    async fn invoke(&self, resource: &str, input: Value) -> Result<Value, TaskFailure> {
        (self.0)(resource, input)
    }
}

/// Returns its input and records every call.
#[derive(Default)]
struct Echo {
    calls: Mutex<Vec<(String, Value)>>,
}

impl Echo {
    fn calls(&self) -> Vec<(String, Value)> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait]
impl TaskInvoker for Echo {
    async fn invoke(&self, resource: &str, input: Value) -> Result<Value, TaskFailure> {
        self.calls
            .lock()
            .unwrap()
            .push((resource.to_string(), input.clone()));
        Ok(input)
    }
}

/// Runs `definition` on `input` with `invoker` and a fresh virtual clock.
async fn run_with(
    definition: Value,
    input: Value,
    invoker: Arc<dyn TaskInvoker>,
) -> (Execution, Arc<VirtualClock>) {
    let clock = Arc::new(VirtualClock::new(t0()));
    let runner = Runner::new(machine(definition), invoker, clock.clone())
        .with_rng(fastrand::Rng::with_seed(42));
    (runner.execute("test-exec", input).await, clock)
}

/// Runs with an [`Echo`] invoker and returns the execution.
async fn run(definition: Value, input: Value) -> Execution {
    run_with(definition, input, Arc::new(Echo::default()))
        .await
        .0
}

/// The output of a successful execution (panics with the status otherwise).
fn output(execution: &Execution) -> Value {
    assert_eq!(
        execution.status,
        ExecutionStatus::Succeeded,
        "history: {:#?}",
        execution.history
    );
    execution.output.clone().unwrap()
}

/// The error name of a failed execution.
fn failed_error(execution: &Execution) -> String {
    match &execution.status {
        ExecutionStatus::Failed { error, .. } => error.clone(),
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// A one-state machine around `state` (named "S").
fn single(state: Value) -> Value {
    json!({"StartAt": "S", "States": {"S": state}})
}

/// The `type` tags of the history, in order.
fn kinds(execution: &Execution) -> Vec<String> {
    execution
        .history
        .iter()
        .map(|e| {
            serde_json::to_value(&e.kind).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn execute_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let runner = Runner::new(
        machine(single(json!({"Type": "Succeed"}))),
        Arc::new(Echo::default()),
        Arc::new(SystemClock),
    );
    let future = runner.execute("x", json!({}));
    assert_send(&future);
}
