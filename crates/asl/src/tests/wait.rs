//! Wait states and the execution timeout.

use std::time::Duration;

use super::*;

#[tokio::test]
async fn wait_seconds_and_seconds_path() {
    let def = json!({"StartAt": "A", "States": {
        "A": {"Type": "Wait", "Seconds": 10, "Next": "B"},
        "B": {"Type": "Wait", "SecondsPath": "$.waitseconds", "Next": "C"},
        "C": {"Type": "Pass", "Parameters": {"now.$": "$$.State.EnteredTime"}, "End": true}
    }});
    let (exec, clock) = run_with(def, json!({"waitseconds": 30}), Arc::new(Echo::default())).await;
    assert_eq!(output(&exec), json!({"now": "2024-01-01T00:00:40.000Z"}));
    assert_eq!(
        clock.sleeps(),
        vec![Duration::from_secs(10), Duration::from_secs(30)]
    );
    let waits: Vec<f64> = exec
        .history
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Wait { seconds, .. } => Some(*seconds),
            _ => None,
        })
        .collect();
    assert_eq!(waits, vec![10.0, 30.0]);
}

#[tokio::test]
async fn wait_timestamp_and_timestamp_path() {
    let def = json!({"StartAt": "A", "States": {
        "A": {"Type": "Wait", "Timestamp": "2024-01-01T01:00:00Z", "Next": "B"},
        "B": {"Type": "Wait", "TimestampPath": "$.expirydate", "End": true}
    }});
    let input = json!({"expirydate": "2024-01-01T03:30:00+02:00"});
    let (exec, clock) = run_with(def, input.clone(), Arc::new(Echo::default())).await;
    // Wait passes its input through.
    assert_eq!(output(&exec), input);
    assert_eq!(
        clock.sleeps(),
        vec![Duration::from_secs(3600), Duration::from_secs(1800)]
    );
    assert_eq!(
        clock.now(),
        Utc.with_ymd_and_hms(2024, 1, 1, 1, 30, 0).unwrap()
    );
}

#[tokio::test]
async fn wait_until_a_past_timestamp_does_not_sleep() {
    let def = single(json!({"Type": "Wait", "Timestamp": "2016-03-14T01:59:00Z", "End": true}));
    let (exec, clock) = run_with(def, json!({}), Arc::new(Echo::default())).await;
    assert!(exec.succeeded());
    assert!(clock.sleeps().is_empty());
}

#[tokio::test]
async fn wait_paths_must_select_the_right_type() {
    let exec = run(
        single(json!({"Type": "Wait", "SecondsPath": "$.s", "End": true})),
        json!({"s": "ten"}),
    )
    .await;
    assert_eq!(failed_error(&exec), "States.Runtime");
    let exec = run(
        single(json!({"Type": "Wait", "SecondsPath": "$.s", "End": true})),
        json!({"s": -5}),
    )
    .await;
    assert_eq!(failed_error(&exec), "States.Runtime");
    let exec = run(
        single(json!({"Type": "Wait", "TimestampPath": "$.t", "End": true})),
        json!({"t": "tomorrow"}),
    )
    .await;
    assert_eq!(failed_error(&exec), "States.Runtime");
}

#[tokio::test]
async fn execution_timeout_stops_the_machine() {
    let def = json!({"TimeoutSeconds": 60, "StartAt": "A", "States": {
        "A": {"Type": "Wait", "Seconds": 45, "Next": "B"},
        "B": {"Type": "Wait", "Seconds": 45, "Next": "C"},
        "C": {"Type": "Task", "Resource": "never", "End": true}
    }});
    let echo = Arc::new(Echo::default());
    let (exec, _) = run_with(def, json!({}), echo.clone()).await;
    assert_eq!(exec.status, ExecutionStatus::TimedOut);
    assert_eq!(exec.output, None);
    assert!(echo.calls().is_empty(), "C must not run after the timeout");
    assert_eq!(
        kinds(&exec).last().map(String::as_str),
        Some("ExecutionTimedOut")
    );

    let def = json!({"TimeoutSeconds": 100, "StartAt": "A", "States": {
        "A": {"Type": "Wait", "Seconds": 45, "Next": "B"},
        "B": {"Type": "Wait", "Seconds": 45, "End": true}
    }});
    let exec = run(def, json!({})).await;
    assert!(exec.succeeded());
}

#[tokio::test]
async fn execution_timeout_interrupts_a_running_task() {
    struct Hang(Arc<VirtualClock>);
    #[async_trait]
    impl TaskInvoker for Hang {
        async fn invoke(&self, _resource: &str, _input: Value) -> Result<Value, TaskFailure> {
            self.0.advance(Duration::from_secs(3600));
            futures::future::pending().await
        }
    }
    let clock = Arc::new(VirtualClock::new(t0()));
    let def = json!({"TimeoutSeconds": 600, "StartAt": "Build", "States": {
        "Build": {"Type": "Task", "Resource": "r", "End": true,
                  "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}]},
        "Caught": {"Type": "Succeed"}
    }});
    let exec = Runner::new(machine(def), Arc::new(Hang(clock.clone())), clock.clone())
        .execute("t", json!({}))
        .await;
    // The execution timeout is not a state error: Catch does not see it.
    assert_eq!(exec.status, ExecutionStatus::TimedOut);
}
