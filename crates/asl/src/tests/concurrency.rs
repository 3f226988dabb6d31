//! Map and Parallel states.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// Counts calls in flight and remembers the most seen at once. Each call
/// yields to the scheduler a few times so that others can start.
#[derive(Default)]
struct InFlight {
    now: AtomicUsize,
    max: AtomicUsize,
    total: AtomicUsize,
    fail_on: Option<i64>,
}

#[async_trait]
impl TaskInvoker for InFlight {
    async fn invoke(&self, _resource: &str, input: Value) -> Result<Value, TaskFailure> {
        let current = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(current, Ordering::SeqCst);
        self.total.fetch_add(1, Ordering::SeqCst);
        for _ in 0..5 {
            tokio::task::yield_now().await;
        }
        self.now.fetch_sub(1, Ordering::SeqCst);
        if self.fail_on.is_some() && input["n"].as_i64() == self.fail_on {
            return Err(TaskFailure::new(
                "ItemFailed",
                format!("item {} failed", input["n"]),
            ));
        }
        Ok(json!({"double": input["n"].as_i64().unwrap_or_default() * 2}))
    }
}

fn map_def(max_concurrency: u64) -> Value {
    single(json!({
        "Type": "Map", "ItemsPath": "$.items", "MaxConcurrency": max_concurrency,
        "ItemSelector": {"n.$": "$$.Map.Item.Value", "i.$": "$$.Map.Item.Index"},
        "ItemProcessor": {
            "ProcessorConfig": {"Mode": "INLINE"},
            "StartAt": "Work",
            "States": {"Work": {"Type": "Task", "Resource": "r", "End": true}}
        },
        "ResultPath": "$.results",
        "End": true
    }))
}

#[tokio::test]
async fn map_honours_max_concurrency() {
    let items: Vec<i64> = (1..=10).collect();
    let invoker = Arc::new(InFlight::default());
    let (exec, _) = run_with(map_def(3), json!({"items": items}), invoker.clone()).await;
    let out = output(&exec);
    let doubled: Vec<Value> = (1..=10).map(|n| json!({"double": n * 2})).collect();
    assert_eq!(out["results"], Value::Array(doubled));
    assert_eq!(invoker.total.load(Ordering::SeqCst), 10);
    assert_eq!(invoker.max.load(Ordering::SeqCst), 3);

    // 0 means no limit.
    let invoker = Arc::new(InFlight::default());
    let (exec, _) = run_with(map_def(0), json!({"items": items}), invoker.clone()).await;
    assert!(exec.succeeded());
    assert_eq!(invoker.max.load(Ordering::SeqCst), 10);

    // 1 runs the items one after another.
    let invoker = Arc::new(InFlight::default());
    let (exec, _) = run_with(map_def(1), json!({"items": items}), invoker.clone()).await;
    assert!(exec.succeeded());
    assert_eq!(invoker.max.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn developer_guide_map_context_example() {
    // ItemSelector with $$.Map.Item.Index/Value and the legacy Iterator.
    let def = single(json!({
        "Type": "Map", "End": true,
        "Parameters": {"ContextIndex.$": "$$.Map.Item.Index", "ContextValue.$": "$$.Map.Item.Value"},
        "Iterator": {"StartAt": "TaskState", "States": {"TaskState": {"Type": "Pass", "End": true}}}
    }));
    let exec = run(def, json!([{"who": "bob"}, {"who": "meg"}, {"who": "joe"}])).await;
    assert_eq!(
        output(&exec),
        json!([
            {"ContextIndex": 0, "ContextValue": {"who": "bob"}},
            {"ContextIndex": 1, "ContextValue": {"who": "meg"}},
            {"ContextIndex": 2, "ContextValue": {"who": "joe"}}
        ])
    );
}

#[tokio::test]
async fn developer_guide_item_selector_example() {
    // ItemSelector sees the Map's effective input as `$`.
    let def = single(json!({
        "Type": "Map", "ItemsPath": "$.detail.shipped", "End": true,
        "ItemSelector": {"parcel.$": "$$.Map.Item.Value", "courier.$": "$.detail.delivery-partner"},
        "ItemProcessor": {"StartAt": "Ship", "States": {"Ship": {"Type": "Pass", "End": true}}}
    }));
    let input = json!({
        "ship-date": "2016-03-14T01:59:00Z",
        "detail": {
            "delivery-partner": "UQS",
            "shipped": [
                {"prod": "R31", "dest-code": 9511, "quantity": 1344},
                {"prod": "S39", "dest-code": 9511, "quantity": 40}
            ]
        }
    });
    let exec = run(def, input).await;
    assert_eq!(
        output(&exec),
        json!([
            {"parcel": {"prod": "R31", "dest-code": 9511, "quantity": 1344}, "courier": "UQS"},
            {"parcel": {"prod": "S39", "dest-code": 9511, "quantity": 40}, "courier": "UQS"}
        ])
    );
}

#[tokio::test]
async fn map_iteration_failure_fails_the_map_and_is_catchable() {
    let invoker = Arc::new(InFlight {
        fail_on: Some(3),
        ..InFlight::default()
    });
    let mut def = map_def(2);
    def["States"]["S"]["Catch"] =
        json!([{"ErrorEquals": ["ItemFailed"], "ResultPath": "$.error", "Next": "Recover"}]);
    def["States"]["S"].as_object_mut().unwrap().remove("End");
    def["States"]["S"]["Next"] = json!("Done");
    def["States"]["Done"] = json!({"Type": "Succeed"});
    def["States"]["Recover"] = json!({"Type": "Pass", "End": true});
    let (exec, _) = run_with(def, json!({"items": [1, 2, 3, 4, 5]}), invoker).await;
    let out = output(&exec);
    assert_eq!(
        out["error"],
        json!({"Error": "ItemFailed", "Cause": "item 3 failed"})
    );
    assert!(exec.history.iter().any(|e| matches!(&e.kind, EventKind::MapIterationFailed { index: 2, error, .. } if error == "ItemFailed")));
}

#[tokio::test]
async fn map_items_must_be_an_array() {
    let exec = run(map_def(0), json!({"items": {"not": "an array"}})).await;
    assert_eq!(failed_error(&exec), "States.Runtime");
    let exec = run(map_def(0), json!({"items": []})).await;
    assert_eq!(output(&exec), json!({"items": [], "results": []}));
}

#[tokio::test]
async fn parallel_output_is_the_array_of_branch_outputs() {
    let def = single(json!({
        "Type": "Parallel", "End": true,
        "Parameters": {"id.$": "$.id"},
        "ResultSelector": {"address.$": "$[0].address", "phone.$": "$[1]"},
        "ResultPath": "$.customer",
        "Branches": [
            {"StartAt": "LookupAddress", "States": {"LookupAddress": {"Type": "Pass", "Result": {"address": "1 Main St"}, "End": true}}},
            {"StartAt": "LookupPhone", "States": {
                "LookupPhone": {"Type": "Task", "Resource": "phone", "Next": "Format"},
                "Format": {"Type": "Pass", "Parameters": {"number": "555-0100", "for.$": "$.id"}, "End": true}
            }}
        ]
    }));
    let echo = Arc::new(Echo::default());
    let (exec, _) = run_with(def, json!({"id": "c-1"}), echo.clone()).await;
    assert_eq!(
        output(&exec),
        json!({"id": "c-1", "customer": {"address": "1 Main St", "phone": {"number": "555-0100", "for": "c-1"}}})
    );
    assert_eq!(
        echo.calls(),
        vec![("phone".to_string(), json!({"id": "c-1"}))]
    );
    let started = exec
        .history
        .iter()
        .filter(|e| matches!(e.kind, EventKind::ParallelBranchStarted { .. }))
        .count();
    let succeeded = exec
        .history
        .iter()
        .filter(|e| matches!(e.kind, EventKind::ParallelBranchSucceeded { .. }))
        .count();
    assert_eq!((started, succeeded), (2, 2));
}

#[tokio::test]
async fn parallel_branches_run_concurrently() {
    let invoker = Arc::new(InFlight::default());
    let branch = |n: i64| json!({"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "r", "Parameters": {"n": n}, "End": true}}});
    let def = single(
        json!({"Type": "Parallel", "End": true, "Branches": [branch(1), branch(2), branch(3)]}),
    );
    let (exec, _) = run_with(def, json!({}), invoker.clone()).await;
    assert_eq!(
        output(&exec),
        json!([{"double": 2}, {"double": 4}, {"double": 6}])
    );
    assert_eq!(invoker.max.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn parallel_branch_failure_fails_the_state_with_the_branch_error() {
    let def = json!({"StartAt": "P", "States": {
        "P": {"Type": "Parallel", "Next": "Done",
              "Catch": [{"ErrorEquals": ["BuildFailed"], "Next": "Caught"}],
              "Branches": [
                  {"StartAt": "Ok", "States": {"Ok": {"Type": "Pass", "End": true}}},
                  {"StartAt": "Bad", "States": {"Bad": {"Type": "Fail", "Error": "BuildFailed", "Cause": "no space"}}}
              ]},
        "Done": {"Type": "Succeed"},
        "Caught": {"Type": "Pass", "End": true}
    }});
    let exec = run(def.clone(), json!({})).await;
    assert_eq!(
        output(&exec),
        json!({"Error": "BuildFailed", "Cause": "no space"})
    );
    assert!(exec.history.iter().any(|e| matches!(&e.kind, EventKind::ParallelBranchFailed { branch: 1, error, .. } if error == "BuildFailed")));

    let mut uncaught = def;
    uncaught["States"]["P"]
        .as_object_mut()
        .unwrap()
        .remove("Catch");
    uncaught["States"].as_object_mut().unwrap().remove("Caught");
    let exec = run(uncaught, json!({})).await;
    assert_eq!(
        exec.status,
        ExecutionStatus::Failed {
            error: "BuildFailed".into(),
            cause: Some("no space".into())
        }
    );
}

#[tokio::test]
async fn nested_states_report_into_the_same_history() {
    let def = single(json!({
        "Type": "Map", "End": true, "MaxConcurrency": 1,
        "ItemProcessor": {"StartAt": "Inner", "States": {"Inner": {"Type": "Pass", "End": true}}}
    }));
    let exec = run(def, json!([10, 20])).await;
    assert_eq!(
        kinds(&exec),
        vec![
            "ExecutionStarted",
            "StateEntered",
            "MapStarted",
            "MapIterationStarted",
            "StateEntered",
            "StateExited",
            "MapIterationSucceeded",
            "MapIterationStarted",
            "StateEntered",
            "StateExited",
            "MapIterationSucceeded",
            "StateExited",
            "ExecutionSucceeded"
        ]
    );
    // S, Inner twice.
    assert_eq!(exec.state_transitions, 3);
}
