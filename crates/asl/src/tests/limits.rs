//! Step Functions' payload quota and `States.DataLimitExceeded`.
//!
//! The developer guide ("Error names"): a `States.DataLimitExceeded` is
//! thrown "when the output of a connector is larger than payload size
//! quota", "when the output of a state is larger than payload size quota"
//! and "when, after Parameters processing, the input of a state is larger
//! than the payload size quota". Like `States.Runtime` it is terminal:
//! `States.ALL` does not catch it; a catcher that names it does.

use super::*;

/// A string that makes its JSON document just over the quota.
fn big() -> String {
    "x".repeat(PAYLOAD_LIMIT_BYTES)
}

/// The cause of a failed execution.
fn failed_cause(execution: &Execution) -> String {
    match &execution.status {
        ExecutionStatus::Failed { cause, .. } => cause.clone().unwrap_or_default(),
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// A task returning 60 % of the quota.
fn sixty_percent() -> Arc<dyn TaskInvoker> {
    Arc::new(FnInvoker(|_: &str, _: Value| {
        Ok(json!("x".repeat(PAYLOAD_LIMIT_BYTES * 6 / 10)))
    }))
}

#[tokio::test]
async fn a_state_output_over_the_quota_is_not_caught_by_states_all() {
    // Input and result each fit; the input with the result at `$.blob` does not.
    let def = json!({"StartAt": "P", "States": {
        "P": {"Type": "Task", "Resource": "r", "ResultPath": "$.blob", "Next": "Done",
              "Retry": [{"ErrorEquals": ["States.ALL"]}],
              "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}]},
        "Caught": {"Type": "Succeed"},
        "Done": {"Type": "Succeed"}
    }});
    let input = json!({"pad": "x".repeat(PAYLOAD_LIMIT_BYTES / 2)});
    let (exec, clock) = run_with(def, input, sixty_percent()).await;
    assert_eq!(failed_error(&exec), "States.DataLimitExceeded");
    assert!(
        failed_cause(&exec).contains("the output of state 'P'"),
        "{}",
        failed_cause(&exec)
    );
    assert!(clock.sleeps().is_empty(), "not retried by States.ALL");
    assert!(!kinds(&exec).contains(&"ErrorCaught".to_string()));
}

#[tokio::test]
async fn a_catcher_naming_the_error_catches_it() {
    let def = json!({"StartAt": "P", "States": {
        "P": {"Type": "Task", "Resource": "r", "ResultPath": "$.blob", "Next": "Done",
              "Catch": [{"ErrorEquals": ["States.DataLimitExceeded"], "ResultPath": "$.error", "Next": "Caught"},
                        {"ErrorEquals": ["States.ALL"], "Next": "Wrong"}]},
        "Caught": {"Type": "Pass", "InputPath": "$.error", "ResultPath": "$.error", "End": true},
        "Wrong": {"Type": "Fail", "Error": "Wrong"},
        "Done": {"Type": "Succeed"}
    }});
    let input = json!({"id": "b-1", "pad": "x".repeat(PAYLOAD_LIMIT_BYTES / 2)});
    let (exec, _) = run_with(def, input, sixty_percent()).await;
    let out = output(&exec);
    assert_eq!(out["id"], json!("b-1"));
    assert_eq!(out["error"]["Error"], json!("States.DataLimitExceeded"));
    assert!(out.get("blob").is_none(), "{out}");
}

#[tokio::test]
async fn a_task_result_over_the_quota_fails_the_task() {
    let def = json!({"StartAt": "T", "States": {
        "T": {"Type": "Task", "Resource": "r", "ResultSelector": {"small": 1}, "End": true,
              "Catch": [{"ErrorEquals": ["States.TaskFailed"], "Next": "Caught"}]},
        "Caught": {"Type": "Succeed"}
    }});
    let huge = FnInvoker(|_: &str, _: Value| Ok(json!({"log": big()})));
    let (exec, _) = run_with(def, json!({}), Arc::new(huge)).await;
    // Even though ResultSelector would have made it small.
    assert_eq!(failed_error(&exec), "States.DataLimitExceeded");
    assert!(failed_cause(&exec).contains("the result of task 'T'"));
    assert!(exec.history.iter().any(|e| matches!(
        &e.kind,
        EventKind::TaskFailed { error, .. } if error == "States.DataLimitExceeded"
    )));
}

#[tokio::test]
async fn a_state_input_over_the_quota_after_parameters() {
    let echo = Arc::new(Echo::default());
    let def = single(json!({"Type": "Task", "Resource": "r", "End": true,
        "Parameters": {"a.$": "$.half", "b.$": "$.half"}}));
    let half = "x".repeat(PAYLOAD_LIMIT_BYTES / 2);
    let (exec, _) = run_with(def, json!({"half": half}), echo.clone()).await;
    assert_eq!(failed_error(&exec), "States.DataLimitExceeded");
    assert!(failed_cause(&exec).contains("the input of state 'S'"));
    assert!(echo.calls().is_empty(), "the task is not called");

    // InputPath can bring an input under the quota.
    let def = single(json!({"Type": "Pass", "InputPath": "$.id", "End": true}));
    let exec = run(def, json!({"id": 1, "pad": big()})).await;
    assert_eq!(failed_error(&exec), "States.DataLimitExceeded");
    assert!(failed_cause(&exec).contains("the execution input"));
}

#[tokio::test]
async fn the_quota_is_on_utf8_bytes_and_exact() {
    // `{"s":"…"}` is 8 bytes around the string.
    let fits = "x".repeat(PAYLOAD_LIMIT_BYTES - 8);
    let exec = run(
        single(json!({"Type": "Pass", "End": true})),
        json!({"s": fits}),
    )
    .await;
    assert!(exec.succeeded());
    let over = "x".repeat(PAYLOAD_LIMIT_BYTES - 7);
    let exec = run(
        single(json!({"Type": "Pass", "End": true})),
        json!({"s": over}),
    )
    .await;
    assert_eq!(failed_error(&exec), "States.DataLimitExceeded");
    // 'é' is two bytes in UTF-8.
    let wide = "é".repeat(PAYLOAD_LIMIT_BYTES / 2);
    let exec = run(
        single(json!({"Type": "Pass", "End": true})),
        json!({"s": wide}),
    )
    .await;
    assert_eq!(failed_error(&exec), "States.DataLimitExceeded");
}
