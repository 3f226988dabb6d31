//! Input and output processing, Pass/Task/Succeed/Fail, the context object.

use super::*;

#[tokio::test]
async fn spec_numbers_to_add_example() {
    // InputPath selects the numbers, ResultPath puts the sum next to them.
    let def = single(json!({
        "Type": "Task", "Resource": "arn:aws:lambda:us-east-1:123456789012:function:Add",
        "InputPath": "$.numbers", "ResultPath": "$.sum", "End": true
    }));
    let adder = FnInvoker(|_: &str, input: Value| {
        Ok(json!(
            input["val1"].as_i64().unwrap() + input["val2"].as_i64().unwrap()
        ))
    });
    let input = json!({"title": "Numbers to add", "numbers": {"val1": 3, "val2": 4}});
    let (exec, _) = run_with(def, input, Arc::new(adder)).await;
    assert_eq!(
        output(&exec),
        json!({"title": "Numbers to add", "numbers": {"val1": 3, "val2": 4}, "sum": 7})
    );
}

#[tokio::test]
async fn spec_master_detail_result_path() {
    let input = json!({"master": {"detail": [1, 2, 3]}});
    // An existing field is overwritten...
    let exec = run(
        single(json!({"Type": "Pass", "Result": 6, "ResultPath": "$.master.detail", "End": true})),
        input.clone(),
    )
    .await;
    assert_eq!(output(&exec), json!({"master": {"detail": 6}}));
    // ...a missing one is created with its intermediate objects.
    let exec = run(
        single(
            json!({"Type": "Pass", "Result": 6, "ResultPath": "$.master.result.sum", "End": true}),
        ),
        input.clone(),
    )
    .await;
    assert_eq!(
        output(&exec),
        json!({"master": {"detail": [1, 2, 3], "result": {"sum": 6}}})
    );
    // `$` (the default) replaces the input, null discards the result.
    let exec = run(
        single(json!({"Type": "Pass", "Result": 6, "End": true})),
        input.clone(),
    )
    .await;
    assert_eq!(output(&exec), json!(6));
    let exec = run(
        single(json!({"Type": "Pass", "Result": 6, "ResultPath": null, "End": true})),
        input.clone(),
    )
    .await;
    assert_eq!(output(&exec), input);
    // Array elements can be replaced in place.
    let exec = run(
        single(
            json!({"Type": "Pass", "Result": 6, "ResultPath": "$.master.detail[1]", "End": true}),
        ),
        input,
    )
    .await;
    assert_eq!(output(&exec), json!({"master": {"detail": [1, 6, 3]}}));
}

#[tokio::test]
async fn null_input_and_output_paths_give_empty_objects() {
    let exec = run(
        single(json!({"Type": "Pass", "InputPath": null, "End": true})),
        json!({"a": 1}),
    )
    .await;
    assert_eq!(output(&exec), json!({}));
    let exec = run(
        single(json!({"Type": "Pass", "OutputPath": null, "End": true})),
        json!({"a": 1}),
    )
    .await;
    assert_eq!(output(&exec), json!({}));
    // OutputPath selects from the combined result.
    let exec = run(
        single(json!({"Type": "Pass", "Result": {"x": 1}, "ResultPath": "$.r", "OutputPath": "$.r.x", "End": true})),
        json!({"a": 1}),
    )
    .await;
    assert_eq!(output(&exec), json!(1));
}

#[tokio::test]
async fn result_path_match_failure_is_catchable() {
    let def = json!({"StartAt": "S", "States": {
        "S": {"Type": "Task", "Resource": "r", "ResultPath": "$.x", "Next": "Done",
              "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}]},
        "Done": {"Type": "Succeed"},
        "Caught": {"Type": "Pass", "End": true}
    }});
    let exec = run(def.clone(), json!("just a string")).await;
    let out = output(&exec);
    assert_eq!(out["Error"], json!("States.ResultPathMatchFailure"));
    let mut uncaught = def;
    uncaught["States"]["S"]
        .as_object_mut()
        .unwrap()
        .remove("Catch");
    uncaught["States"].as_object_mut().unwrap().remove("Caught");
    let exec = run(uncaught, json!([1, 2])).await;
    assert_eq!(failed_error(&exec), "States.ResultPathMatchFailure");
}

#[tokio::test]
async fn spec_parameters_example() {
    // The specification's Parameters example (with the execution name in
    // place of its made-up `$$.DayOfWeek`).
    let def = single(json!({
        "Type": "Pass", "End": true,
        "Parameters": {
            "flagged": true,
            "parts": {"first.$": "$.vals[0]", "last3.$": "$.vals[-3:]"},
            "weekday.$": "$$.Execution.Name",
            "formattedOutput.$": "States.Format('Today is {}', $$.Execution.Name)",
            "list": [{"v.$": "$.vals[1]"}, "static"]
        }
    }));
    let exec = run(def, json!({"flagged": 7, "vals": [0, 10, 20, 30, 40, 50]})).await;
    assert_eq!(
        output(&exec),
        json!({
            "flagged": true,
            "parts": {"first": 0, "last3": [30, 40, 50]},
            "weekday": "test-exec",
            "formattedOutput": "Today is test-exec",
            "list": [{"v": 10}, "static"]
        })
    );
}

#[tokio::test]
async fn developer_guide_result_selector_example() {
    let def = single(json!({
        "Type": "Task", "Resource": "arn:aws:states:::elasticmapreduce:createCluster.sync",
        "ResultSelector": {"ClusterId.$": "$.output.ClusterId", "ResourceType.$": "$.resourceType"},
        "ResultPath": "$.EMROutput", "End": true
    }));
    let emr = FnInvoker(|_: &str, _| {
        Ok(json!({
            "resourceType": "elasticmapreduce", "resource": "createCluster.sync",
            "output": {"SdkHttpMetadata": {"HttpStatusCode": 200}, "ClusterId": "AKIAIOSFODNN7EXAMPLE"}
        }))
    });
    let (exec, _) = run_with(def, json!({"cluster": "c1"}), Arc::new(emr)).await;
    assert_eq!(
        output(&exec),
        json!({"cluster": "c1", "EMROutput": {"ClusterId": "AKIAIOSFODNN7EXAMPLE", "ResourceType": "elasticmapreduce"}})
    );
}

#[tokio::test]
async fn task_gets_resource_and_effective_input() {
    let echo = Arc::new(Echo::default());
    let def = single(json!({
        "Type": "Task", "Resource": "bakehouse:build", "InputPath": "$.recipe",
        "Parameters": {"name.$": "$.name", "arch": "arm64"}, "End": true
    }));
    let (exec, _) = run_with(
        def,
        json!({"recipe": {"name": "base"}, "other": 1}),
        echo.clone(),
    )
    .await;
    assert_eq!(output(&exec), json!({"name": "base", "arch": "arm64"}));
    assert_eq!(
        echo.calls(),
        vec![(
            "bakehouse:build".to_string(),
            json!({"name": "base", "arch": "arm64"})
        )]
    );
}

#[tokio::test]
async fn lambda_invoke_integration() {
    let echo = Arc::new(Echo::default());
    let def = single(json!({
        "Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
        "Parameters": {
            "FunctionName": "arn:aws:lambda:us-east-1:123456789012:function:build:$LATEST",
            "Payload": {"image.$": "$.image", "step": 1}
        },
        "ResultSelector": {"body.$": "$.Payload", "code.$": "$.StatusCode"},
        "ResultPath": "$.result", "End": true
    }));
    let (exec, _) = run_with(def, json!({"image": "ami-1"}), echo.clone()).await;
    assert_eq!(
        echo.calls(),
        vec![(
            "arn:aws:lambda:us-east-1:123456789012:function:build:$LATEST".to_string(),
            json!({"image": "ami-1", "step": 1})
        )]
    );
    assert_eq!(
        output(&exec),
        json!({"image": "ami-1", "result": {"body": {"image": "ami-1", "step": 1}, "code": 200}})
    );

    // Without ResultSelector the whole wrapper is the result.
    let def = single(json!({
        "Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
        "Parameters": {"FunctionName.$": "$.fn", "Payload.$": "$"}, "End": true
    }));
    let exec = run(def, json!({"fn": "f"})).await;
    assert_eq!(
        output(&exec),
        json!({"Payload": {"fn": "f"}, "StatusCode": 200})
    );
}

#[tokio::test]
async fn pass_result_wins_over_parameters() {
    let def = single(
        json!({"Type": "Pass", "Parameters": {"a.$": "$.x"}, "Result": {"r": 1}, "ResultPath": "$.out", "End": true}),
    );
    let exec = run(def, json!({"x": 5})).await;
    assert_eq!(output(&exec), json!({"x": 5, "out": {"r": 1}}));
    let def = single(
        json!({"Type": "Pass", "Parameters": {"a.$": "$.x"}, "ResultPath": "$.out", "End": true}),
    );
    let exec = run(def, json!({"x": 5})).await;
    assert_eq!(output(&exec), json!({"x": 5, "out": {"a": 5}}));
}

#[tokio::test]
async fn context_object() {
    let def = json!({"StartAt": "First", "States": {
        "First": {"Type": "Wait", "Seconds": 90, "Next": "Ctx"},
        "Ctx": {"Type": "Pass", "End": true, "Parameters": {
            "id.$": "$$.Execution.Id",
            "name.$": "$$.Execution.Name",
            "input.$": "$$.Execution.Input",
            "start.$": "$$.Execution.StartTime",
            "state.$": "$$.State.Name",
            "entered.$": "$$.State.EnteredTime",
            "retries.$": "$$.State.RetryCount",
            "smId.$": "$$.StateMachine.Id",
            "smName.$": "$$.StateMachine.Name"
        }}
    }});
    let clock = Arc::new(VirtualClock::new(t0()));
    let runner = Runner::new(
        machine(def).with_name("bake"),
        Arc::new(Echo::default()),
        clock,
    );
    let exec = runner.execute("build-42", json!({"recipe": "base"})).await;
    assert_eq!(
        output(&exec),
        json!({
            "id": "arn:aws:states:local:000000000000:execution:bake:build-42",
            "name": "build-42",
            "input": {"recipe": "base"},
            "start": "2024-01-01T00:00:00.000Z",
            "state": "Ctx",
            "entered": "2024-01-01T00:01:30.000Z",
            "retries": 0,
            "smId": "arn:aws:states:local:000000000000:stateMachine:bake",
            "smName": "bake"
        })
    );
}

#[tokio::test]
async fn missing_path_is_a_runtime_error_that_states_all_does_not_catch() {
    let def = json!({"StartAt": "S", "States": {
        "S": {"Type": "Task", "Resource": "r", "InputPath": "$.missing", "Next": "Done",
              "Retry": [{"ErrorEquals": ["States.ALL"]}],
              "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}]},
        "Done": {"Type": "Succeed"},
        "Caught": {"Type": "Succeed"}
    }});
    let (exec, clock) = run_with(def, json!({"present": 1}), Arc::new(Echo::default())).await;
    match &exec.status {
        ExecutionStatus::Failed { error, cause } => {
            let cause = cause.as_deref().unwrap_or_default();
            assert_eq!(error, "States.Runtime");
            assert!(cause.contains("$.missing"), "{cause}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        clock.sleeps().is_empty(),
        "States.Runtime must not be retried"
    );
    assert!(!kinds(&exec).contains(&"ErrorCaught".to_string()));

    // The same for a Parameters path.
    let exec = run(
        single(json!({"Type": "Pass", "Parameters": {"a.$": "$.nope"}, "End": true})),
        json!({}),
    )
    .await;
    match &exec.status {
        ExecutionStatus::Failed { error, cause } => {
            let cause = cause.as_deref().unwrap_or_default();
            assert_eq!(error, "States.Runtime");
            assert!(
                cause.contains("$.nope") && cause.contains("Parameters.a.$"),
                "{cause}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn fail_state_error_and_cause() {
    let exec = run(
        single(json!({"Type": "Fail", "Error": "BuildFailed", "Cause": "disk full"})),
        json!({}),
    )
    .await;
    assert_eq!(
        exec.status,
        ExecutionStatus::Failed {
            error: "BuildFailed".into(),
            cause: Some("disk full".into())
        }
    );
    let exec = run(
        single(json!({"Type": "Fail", "ErrorPath": "$.err", "CausePath": "States.Format('step {} failed', $.step)"})),
        json!({"err": "E1", "step": 3}),
    )
    .await;
    assert_eq!(
        exec.status,
        ExecutionStatus::Failed {
            error: "E1".into(),
            cause: Some("step 3 failed".into())
        }
    );
    let exec = run(
        single(json!({"Type": "Fail", "ErrorPath": "$.err"})),
        json!({"err": 5}),
    )
    .await;
    assert_eq!(failed_error(&exec), "States.Runtime");
}

#[tokio::test]
async fn fail_state_without_cause_has_no_cause() {
    // The specification (Fail State): "Fail States MAY have Error and Cause
    // fields". One without `Cause` (or `CausePath`) fails with no cause at
    // all, not an empty one: the execution, its history and a catcher's
    // error output leave `Cause` out.
    let exec = run(single(json!({"Type": "Fail", "Error": "E"})), json!({})).await;
    assert_eq!(
        exec.status,
        ExecutionStatus::Failed {
            error: "E".into(),
            cause: None
        }
    );
    let last = serde_json::to_value(&exec.history.last().unwrap().kind).unwrap();
    assert_eq!(last["type"], json!("ExecutionFailed"));
    assert!(last.get("cause").is_none(), "{last}");
    let status = serde_json::to_value(&exec.status).unwrap();
    assert_eq!(status, json!({"status": "Failed", "error": "E"}));

    // Inside a Parallel branch, caught by the Parallel state.
    let def = json!({"StartAt": "P", "States": {
        "P": {"Type": "Parallel", "Branches": [
                {"StartAt": "F", "States": {"F": {"Type": "Fail", "Error": "E"}}}
              ],
              "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Done"}],
              "Next": "Done"},
        "Done": {"Type": "Succeed"}
    }});
    let exec = run(def, json!({"x": 1})).await;
    assert_eq!(output(&exec), json!({"x": 1, "error": {"Error": "E"}}));

    // An empty Cause is a cause.
    let exec = run(
        single(json!({"Type": "Fail", "Error": "E", "Cause": ""})),
        json!({}),
    )
    .await;
    assert_eq!(
        exec.status,
        ExecutionStatus::Failed {
            error: "E".into(),
            cause: Some(String::new())
        }
    );
}

#[tokio::test]
async fn succeed_applies_input_and_output_paths() {
    let exec = run(
        single(json!({"Type": "Succeed", "InputPath": "$.a", "OutputPath": "$.b"})),
        json!({"a": {"b": [1]}}),
    )
    .await;
    assert_eq!(output(&exec), json!([1]));
}

#[tokio::test]
async fn dashed_member_names_work_in_paths() {
    let exec = run(
        single(json!({"Type": "Pass", "Parameters": {"t.$": "$.detail-type"}, "End": true})),
        json!({"detail-type": "EC2 Image State Change"}),
    )
    .await;
    assert_eq!(output(&exec), json!({"t": "EC2 Image State Change"}));
}
