//! The callback pattern: `.waitForTaskToken` Tasks get `$$.Task.Token`, wait
//! for `SendTaskSuccess`/`SendTaskFailure`, and time out by `TimeoutSeconds`
//! or `HeartbeatSeconds` (developer guide, "Wait for a Callback with Task
//! Token").

use super::*;

/// A callback Task passing its token in the payload, with `extra` fields.
fn callback_task(extra: Value) -> Value {
    let mut state = json!({
        "Type": "Task",
        "Resource": "arn:aws:states:::lambda:invoke.waitForTaskToken",
        "Parameters": {"FunctionName": "notify", "Payload": {"token.$": "$$.Task.Token", "job.$": "$.job"}},
        "End": true
    });
    if let (Value::Object(s), Value::Object(e)) = (&mut state, extra) {
        s.extend(e);
    }
    single(state)
}

/// An invoker that, like a worker, completes each token it is sent with
/// `complete` (or leaves it waiting when `complete` is `None`), and records
/// every payload.
struct Worker {
    tokens: Mutex<Option<TaskTokens>>,
    complete: Option<fn(&TaskTokens, &str)>,
    payloads: Mutex<Vec<Value>>,
}

#[async_trait]
impl TaskInvoker for Worker {
    async fn invoke(&self, _resource: &str, input: Value) -> Result<Value, TaskFailure> {
        self.payloads.lock().unwrap().push(input.clone());
        let token = input["token"].as_str().unwrap_or_default().to_string();
        if let (Some(tokens), Some(complete)) = (self.tokens.lock().unwrap().clone(), self.complete)
        {
            // Completed later, from elsewhere, as an EventBridge rule would.
            tokio::spawn(async move {
                tokio::task::yield_now().await;
                complete(&tokens, &token);
            });
        }
        Ok(json!({"ignored": "a callback Task's own result is not its output"}))
    }
}

async fn run_callback(
    definition: Value,
    complete: Option<fn(&TaskTokens, &str)>,
) -> (Execution, Arc<Worker>, TaskTokens) {
    let worker = Arc::new(Worker {
        tokens: Mutex::new(None),
        complete,
        payloads: Mutex::new(Vec::new()),
    });
    let clock = Arc::new(VirtualClock::new(t0()));
    let runner = Runner::new(machine(definition), worker.clone(), clock.clone())
        .with_rng(fastrand::Rng::with_seed(7));
    let tokens = runner.task_tokens();
    *worker.tokens.lock().unwrap() = Some(tokens.clone());
    if complete.is_none() {
        // Nobody completes the token: let virtual time pass.
        let clock = clock.clone();
        tokio::spawn(async move {
            for _ in 0..1000 {
                tokio::task::yield_now().await;
                clock.advance(std::time::Duration::from_secs(1));
            }
        });
    }
    let execution = runner.execute("callback", json!({"job": 42})).await;
    (execution, worker, tokens)
}

#[tokio::test]
async fn send_task_success_gives_the_task_its_output() {
    let (execution, worker, tokens) = run_callback(
        callback_task(json!({})),
        Some(|t, token| {
            t.send_task_success(token, json!({"image": "ami-1"}))
                .unwrap();
        }),
    )
    .await;
    assert_eq!(output(&execution), json!({"image": "ami-1"}));
    let payloads = worker.payloads.lock().unwrap().clone();
    assert_eq!(payloads.len(), 1);
    assert_eq!(payloads[0]["job"], 42);
    let token = payloads[0]["token"].as_str().unwrap();
    assert_eq!(token.len(), 64, "{token}");
    // Completed tokens are forgotten: a second callback is refused.
    assert!(tokens.waiting().is_empty());
    let err = tokens.send_task_success(token, json!({})).unwrap_err();
    assert!(err.to_string().starts_with("TaskTimedOut"), "{err}");
}

#[tokio::test]
async fn send_task_failure_fails_the_task_with_its_error_for_catch() {
    let definition = json!({
        "StartAt": "S",
        "States": {
            "S": {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke.waitForTaskToken",
                "Parameters": {"FunctionName": "notify", "Payload": {"token.$": "$$.Task.Token"}},
                "Catch": [{"ErrorEquals": ["AmiFailed"], "ResultPath": "$.error", "Next": "Handled"}],
                "End": true
            },
            "Handled": {"Type": "Pass", "End": true}
        }
    });
    let (execution, _, _) = run_callback(
        definition,
        Some(|t, token| {
            t.send_task_failure(token, "AmiFailed", "image ami-1 failed")
                .unwrap();
        }),
    )
    .await;
    assert_eq!(
        output(&execution)["error"],
        json!({"Error": "AmiFailed", "Cause": "image ami-1 failed"})
    );
}

#[tokio::test]
async fn without_a_callback_the_heartbeat_or_the_timeout_ends_the_task() {
    let (execution, _, tokens) = run_callback(
        callback_task(json!({"HeartbeatSeconds": 30, "TimeoutSeconds": 600})),
        None,
    )
    .await;
    assert_eq!(failed_error(&execution), "States.HeartbeatTimeout");
    assert!(
        tokens.waiting().is_empty(),
        "a timed-out token is forgotten"
    );

    let (execution, _, _) = run_callback(callback_task(json!({"TimeoutSeconds": 60})), None).await;
    assert_eq!(failed_error(&execution), "States.Timeout");
}

#[tokio::test]
async fn heartbeats_keep_a_callback_task_alive_past_its_heartbeat_seconds() {
    let worker = Arc::new(Echo::default());
    let clock = Arc::new(VirtualClock::new(t0()));
    let definition = single(json!({
        "Type": "Task",
        "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
        "Parameters": {"token.$": "$$.Task.Token"},
        "HeartbeatSeconds": 30,
        "End": true
    }));
    let runner = Runner::new(machine(definition), worker.clone(), clock.clone());
    let tokens = runner.task_tokens();
    let driver = {
        let (tokens, clock) = (tokens.clone(), clock.clone());
        tokio::spawn(async move {
            // 100 s of 20 s heartbeats, then the result.
            let token = loop {
                if let Some(t) = tokens.waiting().pop() {
                    break t;
                }
                tokio::task::yield_now().await;
            };
            for _ in 0..5 {
                clock.advance(std::time::Duration::from_secs(20));
                tokens.send_task_heartbeat(&token).unwrap();
                for _ in 0..10 {
                    tokio::task::yield_now().await;
                }
            }
            tokens.send_task_success(&token, json!("done")).unwrap();
        })
    };
    let execution = runner.execute("beats", json!({})).await;
    driver.await.unwrap();
    assert_eq!(output(&execution), json!("done"));
    assert_eq!(worker.calls()[0].0, "arn:aws:states:::sqs:sendMessage");
}
