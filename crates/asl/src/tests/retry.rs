//! Retry and Catch.

use std::collections::VecDeque;
use std::time::Duration;

use super::*;

/// Fails with the scripted errors in order, then returns the input (with
/// the retry count it saw, when given).
struct Script {
    errors: Mutex<VecDeque<&'static str>>,
    calls: Mutex<Vec<Value>>,
}

impl Script {
    fn new(errors: &[&'static str]) -> Arc<Self> {
        Arc::new(Script {
            errors: Mutex::new(errors.iter().copied().collect()),
            calls: Mutex::new(Vec::new()),
        })
    }

    fn calls(&self) -> Vec<Value> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait]
impl TaskInvoker for Script {
    async fn invoke(&self, _resource: &str, input: Value) -> Result<Value, TaskFailure> {
        self.calls.lock().unwrap().push(input.clone());
        match self.errors.lock().unwrap().pop_front() {
            Some(error) => Err(TaskFailure::new(error, format!("{error} happened"))),
            None => Ok(json!({"done": true})),
        }
    }
}

fn task(extra: Value) -> Value {
    let mut state = json!({
        "Type": "Task", "Resource": "bakehouse:step",
        "Parameters": {"retry.$": "$$.State.RetryCount"},
        "Next": "Done"
    });
    for (k, v) in extra.as_object().unwrap() {
        state[k] = v.clone();
    }
    let mut def = json!({"StartAt": "Work", "States": {
        "Work": state,
        "Done": {"Type": "Succeed"},
        "Recover": {"Type": "Pass", "End": true}
    }});
    if !extra.to_string().contains("Recover") {
        // Step Functions rejects unreachable states.
        def["States"].as_object_mut().unwrap().remove("Recover");
    }
    def
}

fn secs(values: &[f64]) -> Vec<Duration> {
    values.iter().map(|s| Duration::from_secs_f64(*s)).collect()
}

#[tokio::test]
async fn interval_and_backoff_delays_are_exact() {
    let script = Script::new(&["Retryable", "Retryable", "Retryable"]);
    let def = task(
        json!({"Retry": [{"ErrorEquals": ["Retryable"], "IntervalSeconds": 2, "MaxAttempts": 3, "BackoffRate": 3.0}]}),
    );
    let (exec, clock) = run_with(def, json!({}), script.clone()).await;
    assert_eq!(output(&exec), json!({"done": true}));
    assert_eq!(clock.sleeps(), secs(&[2.0, 6.0, 18.0]));
    assert_eq!(clock.now(), t0() + chrono::Duration::seconds(26));
    // $$.State.RetryCount counts the retries.
    let seen: Vec<Value> = script.calls().iter().map(|c| c["retry"].clone()).collect();
    assert_eq!(seen, vec![json!(0), json!(1), json!(2), json!(3)]);
    // Each retry is a state transition: Work, 3 retries, Done.
    assert_eq!(exec.state_transitions, 5);
    let retried: Vec<(u32, u64)> = exec
        .history
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::TaskRetried {
                attempt,
                delay_ms,
                error,
                ..
            } => {
                assert_eq!(error, "Retryable");
                Some((*attempt, *delay_ms))
            }
            _ => None,
        })
        .collect();
    assert_eq!(retried, vec![(1, 2000), (2, 6000), (3, 18000)]);
}

#[tokio::test]
async fn spec_retrier_example_and_defaults() {
    // The specification's example: States.Timeout retried twice after 3s
    // and 4.5s; everything else with the defaults (1s, 2s, 4s).
    let retry = json!({"Retry": [
        {"ErrorEquals": ["States.Timeout"], "IntervalSeconds": 3, "MaxAttempts": 2, "BackoffRate": 1.5},
        {"ErrorEquals": ["States.ALL"]}
    ]});
    let (exec, clock) = run_with(
        task(retry.clone()),
        json!({}),
        Script::new(&["States.Timeout", "States.Timeout"]),
    )
    .await;
    assert!(exec.succeeded());
    assert_eq!(clock.sleeps(), secs(&[3.0, 4.5]));

    let (exec, clock) = run_with(
        task(retry),
        json!({}),
        Script::new(&["Boom", "Boom", "Boom", "Boom"]),
    )
    .await;
    assert_eq!(failed_error(&exec), "Boom");
    assert_eq!(clock.sleeps(), secs(&[1.0, 2.0, 4.0]));
}

#[tokio::test]
async fn max_delay_seconds_caps_the_delay() {
    let def = task(
        json!({"Retry": [{"ErrorEquals": ["X"], "IntervalSeconds": 1, "BackoffRate": 10, "MaxAttempts": 4, "MaxDelaySeconds": 30}]}),
    );
    let (exec, clock) = run_with(def, json!({}), Script::new(&["X"; 5])).await;
    assert_eq!(failed_error(&exec), "X");
    assert_eq!(clock.sleeps(), secs(&[1.0, 10.0, 30.0, 30.0]));
}

#[tokio::test]
async fn max_attempts_zero_never_retries() {
    let def = task(
        json!({"Retry": [{"ErrorEquals": ["X"], "MaxAttempts": 0}, {"ErrorEquals": ["States.ALL"], "IntervalSeconds": 9}]}),
    );
    let script = Script::new(&["X"]);
    let (exec, clock) = run_with(def, json!({}), script.clone()).await;
    // The first matching retrier decides, even when it allows no retry.
    assert_eq!(failed_error(&exec), "X");
    assert!(clock.sleeps().is_empty());
    assert_eq!(script.calls().len(), 1);
}

#[tokio::test]
async fn each_retrier_counts_its_own_attempts() {
    let def = task(json!({"Retry": [
        {"ErrorEquals": ["A"], "IntervalSeconds": 1, "MaxAttempts": 1},
        {"ErrorEquals": ["B"], "IntervalSeconds": 5, "MaxAttempts": 2, "BackoffRate": 1}
    ]}));
    let script = Script::new(&["A", "B", "B", "A"]);
    let (exec, clock) = run_with(def, json!({}), script.clone()).await;
    assert_eq!(failed_error(&exec), "A");
    assert_eq!(clock.sleeps(), secs(&[1.0, 5.0, 5.0]));
    assert_eq!(script.calls().len(), 4);
}

#[tokio::test]
async fn full_jitter_stays_within_bounds() {
    let def = task(
        json!({"Retry": [{"ErrorEquals": ["X"], "IntervalSeconds": 4, "BackoffRate": 2, "MaxAttempts": 5, "JitterStrategy": "FULL"}]}),
    );
    let (exec, clock) = run_with(def, json!({}), Script::new(&["X"; 5])).await;
    assert!(exec.succeeded());
    let sleeps = clock.sleeps();
    let bounds = secs(&[4.0, 8.0, 16.0, 32.0, 64.0]);
    assert_eq!(sleeps.len(), 5);
    for (sleep, bound) in sleeps.iter().zip(&bounds) {
        assert!(sleep <= bound, "{sleep:?} > {bound:?}");
    }
    assert_ne!(sleeps, bounds, "FULL jitter must randomize the delays");

    // The same seed gives the same delays.
    let def = task(
        json!({"Retry": [{"ErrorEquals": ["X"], "IntervalSeconds": 4, "BackoffRate": 2, "MaxAttempts": 5, "JitterStrategy": "FULL"}]}),
    );
    let (_, again) = run_with(def, json!({}), Script::new(&["X"; 5])).await;
    assert_eq!(again.sleeps(), sleeps);
}

#[tokio::test]
async fn catch_with_result_path_keeps_the_input() {
    // The specification's catcher example: the error goes to $.error-info.
    let def = task(json!({"Catch": [
        {"ErrorEquals": ["java.lang.Exception"], "ResultPath": "$.error-info", "Next": "Recover"},
        {"ErrorEquals": ["States.ALL"], "Next": "Done"}
    ]}));
    let (exec, _) = run_with(
        def,
        json!({"build": 7}),
        Script::new(&["java.lang.Exception"]),
    )
    .await;
    assert_eq!(
        output(&exec),
        json!({"build": 7, "error-info": {"Error": "java.lang.Exception", "Cause": "java.lang.Exception happened"}})
    );
    let caught: Vec<&EventKind> = exec
        .history
        .iter()
        .map(|e| &e.kind)
        .filter(|k| matches!(k, EventKind::ErrorCaught { .. }))
        .collect();
    assert_eq!(
        caught,
        vec![&EventKind::ErrorCaught {
            state: "Work".into(),
            error: "java.lang.Exception".into(),
            cause: Some("java.lang.Exception happened".into()),
            next: "Recover".into()
        }]
    );
}

#[tokio::test]
async fn catch_default_result_path_replaces_input_and_order_matters() {
    let def = task(json!({"Catch": [
        {"ErrorEquals": ["Other"], "Next": "Done"},
        {"ErrorEquals": ["BuildFailed", "Retryable"], "Next": "Recover"}
    ]}));
    let (exec, _) = run_with(def, json!({"build": 7}), Script::new(&["Retryable"])).await;
    assert_eq!(
        output(&exec),
        json!({"Error": "Retryable", "Cause": "Retryable happened"})
    );
    assert_eq!(
        exec.history
            .iter()
            .filter(
                |e| matches!(&e.kind, EventKind::StateEntered { state, .. } if state == "Recover")
            )
            .count(),
        1
    );

    let def = task(json!({"Catch": [{"ErrorEquals": ["Other"], "Next": "Done"}]}));
    let (exec, _) = run_with(def, json!({}), Script::new(&["Retryable"])).await;
    assert_eq!(
        exec.status,
        ExecutionStatus::Failed {
            error: "Retryable".into(),
            cause: Some("Retryable happened".into())
        }
    );
}

#[tokio::test]
async fn retry_then_catch() {
    let def = task(json!({
        "Retry": [{"ErrorEquals": ["States.TaskFailed"], "IntervalSeconds": 1, "MaxAttempts": 2, "BackoffRate": 1}],
        "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.err", "Next": "Recover"}]
    }));
    let (exec, clock) = run_with(def, json!({"x": 1}), Script::new(&["BuildFailed"; 3])).await;
    assert_eq!(
        output(&exec),
        json!({"x": 1, "err": {"Error": "BuildFailed", "Cause": "BuildFailed happened"}})
    );
    assert_eq!(clock.sleeps(), secs(&[1.0, 1.0]));
    // Work + 2 retries + Recover.
    assert_eq!(exec.state_transitions, 4);
}

#[tokio::test]
async fn task_timeout_is_states_timeout_not_task_failed() {
    // The invoker simulates a 400 s task; TimeoutSeconds is 300.
    let clock = Arc::new(VirtualClock::new(t0()));
    let slow_clock = clock.clone();
    let slow = FnInvoker(move |_: &str, input: Value| {
        slow_clock.advance(Duration::from_secs(400));
        Ok(input)
    });
    let def = json!({"StartAt": "Build", "States": {
        "Build": {"Type": "Task", "Resource": "r", "TimeoutSeconds": 300, "HeartbeatSeconds": 60, "Next": "Done",
                  "Catch": [{"ErrorEquals": ["States.TaskFailed"], "Next": "Wrong"},
                            {"ErrorEquals": ["States.Timeout"], "ResultPath": "$.timeout", "Next": "Done"}]},
        "Wrong": {"Type": "Fail", "Error": "Wrong"},
        "Done": {"Type": "Succeed"}
    }});
    let runner = Runner::new(machine(def), Arc::new(slow), clock.clone());
    let exec = runner.execute("t", json!({})).await;
    let out = output(&exec);
    // Step Functions gives a Task timeout the error and no cause: its
    // TaskTimedOut event has only `error`, and so has the error output.
    assert_eq!(out["timeout"], json!({"Error": "States.Timeout"}));
    assert!(exec.history.iter().any(|e| matches!(
        &e.kind,
        EventKind::TaskFailed { error, cause: None, .. } if error == "States.Timeout"
    )));

    // A task that finishes in time is fine.
    let quick_clock = clock.clone();
    let quick = FnInvoker(move |_: &str, input: Value| {
        quick_clock.advance(Duration::from_secs(299));
        Ok(input)
    });
    let def = single(json!({"Type": "Task", "Resource": "r", "TimeoutSeconds": 300, "End": true}));
    let exec = Runner::new(machine(def), Arc::new(quick), clock.clone())
        .execute("t2", json!({"ok": 1}))
        .await;
    assert_eq!(output(&exec), json!({"ok": 1}));
}

/// Never finishes, after moving the clock by the given amount.
struct Hang(Arc<VirtualClock>, Duration);

#[async_trait]
impl TaskInvoker for Hang {
    async fn invoke(&self, _resource: &str, _input: Value) -> Result<Value, TaskFailure> {
        self.0.advance(self.1);
        futures::future::pending().await
    }
}

#[tokio::test]
async fn hanging_task_times_out_through_the_clock() {
    let clock = Arc::new(VirtualClock::new(t0()));
    let def = single(json!({"Type": "Task", "Resource": "r", "TimeoutSeconds": 10, "End": true}));
    let hang = Hang(clock.clone(), Duration::from_secs(11));
    let exec = Runner::new(machine(def), Arc::new(hang), clock.clone())
        .execute("t", json!({}))
        .await;
    assert_eq!(
        exec.status,
        ExecutionStatus::Failed {
            error: "States.Timeout".into(),
            cause: None
        }
    );
}
