//! History order, timestamps, the observer, serialization and transition
//! counts.

use std::time::Duration;

use super::*;

fn pipeline() -> Value {
    json!({"StartAt": "Prepare", "States": {
        "Prepare": {"Type": "Pass", "Result": {"image": "ami-1"}, "Next": "Pause"},
        "Pause": {"Type": "Wait", "Seconds": 5, "Next": "Build"},
        "Build": {"Type": "Task", "Resource": "bakehouse:build", "Next": "Done"},
        "Done": {"Type": "Succeed"}
    }})
}

#[tokio::test]
async fn history_is_ordered_and_timestamped() {
    let seen: Arc<Mutex<Vec<HistoryEvent>>> = Arc::default();
    let sink = seen.clone();
    let clock = Arc::new(VirtualClock::new(t0()));
    let runner = Runner::new(
        machine(pipeline()),
        Arc::new(Echo::default()),
        clock.clone(),
    )
    .with_observer(Arc::new(move |e: &HistoryEvent| {
        sink.lock().unwrap().push(e.clone())
    }));
    let exec = runner.execute("run-1", json!({"recipe": "base"})).await;
    let later = t0() + chrono::Duration::seconds(5);
    let expected = vec![
        (
            t0(),
            EventKind::ExecutionStarted {
                name: "run-1".into(),
                input: json!({"recipe": "base"}),
            },
        ),
        (
            t0(),
            EventKind::StateEntered {
                state: "Prepare".into(),
                input: json!({"recipe": "base"}),
            },
        ),
        (
            t0(),
            EventKind::StateExited {
                state: "Prepare".into(),
                output: json!({"image": "ami-1"}),
            },
        ),
        (
            t0(),
            EventKind::StateEntered {
                state: "Pause".into(),
                input: json!({"image": "ami-1"}),
            },
        ),
        (
            t0(),
            EventKind::Wait {
                state: "Pause".into(),
                seconds: 5.0,
                until: later,
            },
        ),
        (
            later,
            EventKind::StateExited {
                state: "Pause".into(),
                output: json!({"image": "ami-1"}),
            },
        ),
        (
            later,
            EventKind::StateEntered {
                state: "Build".into(),
                input: json!({"image": "ami-1"}),
            },
        ),
        (
            later,
            EventKind::TaskScheduled {
                state: "Build".into(),
                resource: "bakehouse:build".into(),
                input: json!({"image": "ami-1"}),
            },
        ),
        (
            later,
            EventKind::TaskSucceeded {
                state: "Build".into(),
                resource: "bakehouse:build".into(),
                output: json!({"image": "ami-1"}),
            },
        ),
        (
            later,
            EventKind::StateExited {
                state: "Build".into(),
                output: json!({"image": "ami-1"}),
            },
        ),
        (
            later,
            EventKind::StateEntered {
                state: "Done".into(),
                input: json!({"image": "ami-1"}),
            },
        ),
        (
            later,
            EventKind::StateExited {
                state: "Done".into(),
                output: json!({"image": "ami-1"}),
            },
        ),
        (
            later,
            EventKind::ExecutionSucceeded {
                output: json!({"image": "ami-1"}),
            },
        ),
    ];
    let got: Vec<(DateTime<Utc>, EventKind)> = exec
        .history
        .iter()
        .map(|e| (e.timestamp, e.kind.clone()))
        .collect();
    assert_eq!(got, expected);
    let ids: Vec<u64> = exec.history.iter().map(|e| e.id).collect();
    assert_eq!(ids, (1..=13).collect::<Vec<_>>());
    assert_eq!(*seen.lock().unwrap(), exec.history);
    assert_eq!(exec.state_transitions, 4);
    assert_eq!(exec.started_at, t0());
    assert_eq!(exec.stopped_at, later);
    assert_eq!(exec.name, "run-1");
}

#[tokio::test]
async fn failed_execution_history() {
    let fail = FnInvoker(|_: &str, _| Err(TaskFailure::new("BuildFailed", "packer exited 1")));
    let (exec, _) = run_with(pipeline(), json!({}), Arc::new(fail)).await;
    assert_eq!(
        exec.status,
        ExecutionStatus::Failed {
            error: "BuildFailed".into(),
            cause: Some("packer exited 1".into())
        }
    );
    assert_eq!(exec.output, None);
    let tail: Vec<EventKind> = exec
        .history
        .iter()
        .rev()
        .take(2)
        .rev()
        .map(|e| e.kind.clone())
        .collect();
    assert_eq!(
        tail,
        vec![
            EventKind::TaskFailed {
                state: "Build".into(),
                resource: "bakehouse:build".into(),
                error: "BuildFailed".into(),
                cause: Some("packer exited 1".into())
            },
            EventKind::ExecutionFailed {
                error: "BuildFailed".into(),
                cause: Some("packer exited 1".into())
            },
        ]
    );
    assert_eq!(exec.state_transitions, 3);
}

#[tokio::test]
async fn events_and_executions_serialize_with_a_type_tag() {
    let event = HistoryEvent {
        id: 7,
        timestamp: t0(),
        kind: EventKind::TaskRetried {
            state: "Build".into(),
            error: "Retryable".into(),
            attempt: 2,
            delay_ms: 4000,
        },
    };
    let value = serde_json::to_value(&event).unwrap();
    assert_eq!(
        value,
        json!({"id": 7, "timestamp": "2024-01-01T00:00:00Z", "type": "TaskRetried",
               "state": "Build", "error": "Retryable", "attempt": 2, "delay_ms": 4000})
    );
    let back: HistoryEvent = serde_json::from_value(value).unwrap();
    assert_eq!(back, event);

    let exec = run(pipeline(), json!({})).await;
    let text = serde_json::to_string(&exec).unwrap();
    let back: Execution = serde_json::from_str(&text).unwrap();
    assert_eq!(back, exec);
    let failed = serde_json::to_value(ExecutionStatus::Failed {
        error: "E".into(),
        cause: Some("C".into()),
    })
    .unwrap();
    assert_eq!(
        failed,
        json!({"status": "Failed", "error": "E", "cause": "C"})
    );
}

#[tokio::test]
async fn transitions_count_nested_states_and_retries() {
    let attempts = Arc::new(Mutex::new(0));
    let counter = attempts.clone();
    let flaky = FnInvoker(move |_: &str, input: Value| {
        let mut n = counter.lock().unwrap();
        *n += 1;
        if *n == 1 {
            Err(TaskFailure::new("Retryable", "first try"))
        } else {
            Ok(input)
        }
    });
    let def = json!({"StartAt": "P", "States": {
        "P": {"Type": "Parallel", "Next": "M", "Branches": [
            {"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "B"}, "B": {"Type": "Pass", "End": true}}},
            {"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "r", "End": true,
                "Retry": [{"ErrorEquals": ["Retryable"], "IntervalSeconds": 1}]}}}
        ]},
        "M": {"Type": "Map", "End": true, "ItemProcessor": {"StartAt": "I", "States": {"I": {"Type": "Pass", "End": true}}}}
    }});
    let (exec, clock) = run_with(def, json!({"x": 1}), Arc::new(flaky)).await;
    // Parallel output is an array of 2, so M runs 2 iterations.
    assert_eq!(output(&exec), json!([{"x": 1}, {"x": 1}]));
    // P, A, B, T, 1 retry, M, I, I.
    assert_eq!(exec.state_transitions, 8);
    assert_eq!(clock.sleeps(), vec![Duration::from_secs(1)]);
}

#[tokio::test]
async fn runner_can_be_reused() {
    let clock = Arc::new(VirtualClock::new(t0()));
    let runner = Runner::new(
        machine(pipeline()),
        Arc::new(Echo::default()),
        clock.clone(),
    );
    let first = runner.execute("a", json!({})).await;
    let second = runner.execute("b", json!({})).await;
    assert!(first.succeeded() && second.succeeded());
    assert_eq!(second.started_at, t0() + chrono::Duration::seconds(5));
    assert_eq!(second.history.first().map(|e| e.id), Some(1));
    assert_eq!(runner.machine().start_at(), "Prepare");
}
