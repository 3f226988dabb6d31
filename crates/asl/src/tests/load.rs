//! Load-time validation: every error names the state and the field.

use super::*;

fn unsupported(err: AslError) -> (String, String) {
    match err {
        AslError::Unsupported { state, field, .. } => (state, field),
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

fn invalid(err: AslError) -> (String, String) {
    match err {
        AslError::InvalidField { state, field, .. } => (state, field),
        other => panic!("expected InvalidField, got {other:?}"),
    }
}

#[test]
fn substitutions_are_applied_and_missing_ones_named() {
    let text = r#"{"StartAt": "S", "States": {"S": {"Type": "Task", "Resource": "${BuildFn}", "End": true}}}"#;
    let subs = BTreeMap::from([(
        "BuildFn".to_string(),
        "arn:aws:lambda:us-east-1:1:function:build".to_string(),
    )]);
    let m = StateMachine::load(text, &subs).unwrap();
    assert_eq!(
        m.state("S").unwrap().resource(),
        Some("arn:aws:lambda:us-east-1:1:function:build")
    );

    let text = r#"{"Comment": "${A} ${B} ${A}", "StartAt": "S", "States": {"S": {"Type": "Pass", "End": true}}}"#;
    let err = StateMachine::load(text, &BTreeMap::new()).unwrap_err();
    assert_eq!(
        err,
        AslError::MissingSubstitution {
            names: vec!["A".into(), "B".into()]
        }
    );
    assert!(err.to_string().contains("A, B"));
}

#[test]
fn accessors_describe_the_machine() {
    let m = machine(json!({
        "Comment": "demo", "TimeoutSeconds": 60, "StartAt": "A",
        "States": {
            "A": {"Type": "Pass", "Comment": "first", "Next": "B"},
            "B": {"Type": "Succeed"}
        }
    }))
    .with_name("bake");
    assert_eq!(m.name(), "bake");
    assert_eq!(m.comment(), Some("demo"));
    assert_eq!(m.start_at(), "A");
    assert_eq!(m.timeout_seconds(), Some(60));
    let types: Vec<(&str, &str)> = m.states().map(|s| (s.name(), s.type_name())).collect();
    assert_eq!(types, vec![("A", "Pass"), ("B", "Succeed")]);
    assert_eq!(m.state("A").unwrap().comment(), Some("first"));
}

#[test]
fn invalid_json_is_reported() {
    let err = StateMachine::load("{not json", &BTreeMap::new()).unwrap_err();
    assert!(matches!(err, AslError::InvalidJson { .. }));
}

#[test]
fn jsonata_and_variables_are_unsupported() {
    let err = load_err(
        json!({"QueryLanguage": "JSONata", "StartAt": "S", "States": {"S": {"Type": "Pass", "End": true}}}),
    );
    assert_eq!(unsupported(err), ("".into(), "QueryLanguage".into()));

    let err = load_err(single(
        json!({"Type": "Pass", "QueryLanguage": "JSONata", "End": true}),
    ));
    assert_eq!(unsupported(err), ("S".into(), "QueryLanguage".into()));

    let err = load_err(single(
        json!({"Type": "Task", "Resource": "r", "Arguments": {}, "End": true}),
    ));
    assert_eq!(unsupported(err.clone()), ("S".into(), "Arguments".into()));
    assert!(err.to_string().contains("state `S`") && err.to_string().contains("`Arguments`"));

    let err = load_err(single(json!({"Type": "Pass", "Output": {}, "End": true})));
    assert_eq!(unsupported(err), ("S".into(), "Output".into()));

    let err = load_err(single(
        json!({"Type": "Pass", "Assign": {"x": 1}, "End": true}),
    ));
    assert_eq!(unsupported(err), ("S".into(), "Assign".into()));

    // JSONPath is fine.
    machine(
        json!({"QueryLanguage": "JSONPath", "StartAt": "S", "States": {"S": {"Type": "Pass", "End": true}}}),
    );
}

#[test]
fn distributed_map_features_are_unsupported() {
    let processor = json!({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": true}}});
    let mut distributed = processor.clone();
    distributed["ProcessorConfig"] = json!({"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"});
    let err = load_err(single(
        json!({"Type": "Map", "ItemProcessor": distributed, "End": true}),
    ));
    assert_eq!(
        unsupported(err),
        ("S".into(), "ItemProcessor.ProcessorConfig.Mode".into())
    );

    for field in [
        "ItemReader",
        "ResultWriter",
        "ItemBatcher",
        "ToleratedFailurePercentage",
        "ToleratedFailureCount",
    ] {
        let mut state = json!({"Type": "Map", "ItemProcessor": processor, "End": true});
        state[field] = json!({});
        let err = load_err(single(state));
        assert_eq!(unsupported(err), ("S".into(), field.to_string()), "{field}");
    }

    let mut inline = processor.clone();
    inline["ProcessorConfig"] = json!({"Mode": "INLINE"});
    machine(single(
        json!({"Type": "Map", "ItemProcessor": inline, "End": true}),
    ));
}

#[test]
fn lambda_invoke_needs_a_function_name() {
    let err = load_err(single(json!({
        "Type": "Task", "Resource": "arn:aws:states:::lambda:invoke", "Parameters": {"Payload": {}}, "End": true
    })));
    assert_eq!(
        err,
        AslError::MissingField {
            state: "S".into(),
            field: "Parameters.FunctionName".into()
        }
    );
}

#[test]
fn unknown_fields_are_named() {
    let err = load_err(single(
        json!({"Type": "Pass", "Colour": "red", "End": true}),
    ));
    assert_eq!(
        err,
        AslError::UnknownField {
            state: "S".into(),
            field: "Colour".into()
        }
    );
    assert_eq!(err.to_string(), "state `S`: unknown field `Colour`");

    // A field that exists, but not for this state type.
    let err = load_err(single(json!({"Type": "Succeed", "ResultPath": "$.x"})));
    assert_eq!(
        err,
        AslError::UnknownField {
            state: "S".into(),
            field: "ResultPath".into()
        }
    );
    let err = load_err(single(json!({"Type": "Fail", "InputPath": "$"})));
    assert_eq!(
        err,
        AslError::UnknownField {
            state: "S".into(),
            field: "InputPath".into()
        }
    );

    let err = load_err(
        json!({"StartAt": "S", "Bogus": 1, "States": {"S": {"Type": "Pass", "End": true}}}),
    );
    assert_eq!(
        err,
        AslError::UnknownField {
            state: "".into(),
            field: "Bogus".into()
        }
    );

    let err = load_err(single(json!({
        "Type": "Task", "Resource": "r", "End": true,
        "Retry": [{"ErrorEquals": ["X"], "Interval": 3}]
    })));
    assert_eq!(
        err,
        AslError::UnknownField {
            state: "S".into(),
            field: "Retry[0].Interval".into()
        }
    );
}

#[test]
fn transitions_are_checked() {
    let err = load_err(json!({"StartAt": "Nope", "States": {"S": {"Type": "Pass", "End": true}}}));
    assert_eq!(
        err,
        AslError::UnknownTarget {
            state: "".into(),
            field: "StartAt".into(),
            target: "Nope".into()
        }
    );

    let err = load_err(single(json!({"Type": "Pass", "Next": "Missing"})));
    assert_eq!(
        err,
        AslError::UnknownTarget {
            state: "S".into(),
            field: "Next".into(),
            target: "Missing".into()
        }
    );

    let err = load_err(single(json!({"Type": "Pass"})));
    assert_eq!(
        err,
        AslError::MissingField {
            state: "S".into(),
            field: "Next".into()
        }
    );

    let err = load_err(json!({"StartAt": "S", "States": {
        "S": {"Type": "Pass", "Next": "T", "End": true}, "T": {"Type": "Succeed"}
    }}));
    assert_eq!(invalid(err), ("S".into(), "End".into()));

    let err = load_err(json!({"StartAt": "S", "States": {
        "S": {"Type": "Task", "Resource": "r", "End": true, "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Gone"}]}
    }}));
    assert_eq!(
        err,
        AslError::UnknownTarget {
            state: "S".into(),
            field: "Catch[0].Next".into(),
            target: "Gone".into()
        }
    );

    let err = load_err(json!({"StartAt": "C", "States": {
        "C": {"Type": "Choice", "Choices": [{"Variable": "$.x", "IsNull": true, "Next": "A"}], "Default": "Z"},
        "A": {"Type": "Succeed"}
    }}));
    assert_eq!(
        err,
        AslError::UnknownTarget {
            state: "C".into(),
            field: "Default".into(),
            target: "Z".into()
        }
    );

    let err = load_err(json!({"StartAt": "S", "States": {
        "S": {"Type": "Succeed"}, "Orphan": {"Type": "Succeed"}
    }}));
    assert_eq!(
        err,
        AslError::Unreachable {
            state: "Orphan".into()
        }
    );
}

#[test]
fn nested_states_are_named_with_their_scope() {
    let err = load_err(single(json!({
        "Type": "Parallel", "End": true,
        "Branches": [
            {"StartAt": "Ok", "States": {"Ok": {"Type": "Succeed"}}},
            {"StartAt": "Inner", "States": {"Inner": {"Type": "Pass", "Next": "Elsewhere"}}}
        ]
    })));
    assert_eq!(
        err,
        AslError::UnknownTarget {
            state: "S/Branches[1]/Inner".into(),
            field: "Next".into(),
            target: "Elsewhere".into()
        }
    );

    let err = load_err(single(json!({
        "Type": "Map", "End": true,
        "ItemProcessor": {"StartAt": "P", "States": {"P": {"Type": "Wait", "End": true}}}
    })));
    assert_eq!(
        err,
        AslError::MissingField {
            state: "S/ItemProcessor/P".into(),
            field: "Seconds".into()
        }
    );

    let err = load_err(single(json!({
        "Type": "Parallel", "End": true, "Branches": [{"States": {"P": {"Type": "Succeed"}}}]
    })));
    assert_eq!(
        err,
        AslError::MissingField {
            state: "S".into(),
            field: "Branches[0].StartAt".into()
        }
    );
}

#[test]
fn states_all_must_be_alone_and_last() {
    let err = load_err(single(json!({
        "Type": "Task", "Resource": "r", "End": true,
        "Retry": [{"ErrorEquals": ["States.ALL"]}, {"ErrorEquals": ["X"]}]
    })));
    assert_eq!(invalid(err), ("S".into(), "Retry[0].ErrorEquals".into()));

    let err = load_err(json!({"StartAt": "S", "States": {
        "S": {"Type": "Task", "Resource": "r", "End": true,
              "Catch": [{"ErrorEquals": ["States.ALL", "X"], "Next": "F"}]},
        "F": {"Type": "Fail"}
    }}));
    assert_eq!(invalid(err), ("S".into(), "Catch[0].ErrorEquals".into()));

    machine(json!({"StartAt": "S", "States": {
        "S": {"Type": "Task", "Resource": "r", "End": true,
              "Retry": [{"ErrorEquals": ["X"]}, {"ErrorEquals": ["States.ALL"]}],
              "Catch": [{"ErrorEquals": ["X"], "Next": "F"}, {"ErrorEquals": ["States.ALL"], "Next": "F"}]},
        "F": {"Type": "Fail"}
    }}));
}

#[test]
fn field_values_are_validated() {
    let cases = [
        (
            json!({"Type": "Pass", "InputPath": "x", "End": true}),
            "InputPath",
        ),
        (
            json!({"Type": "Pass", "ResultPath": "$.a[*]", "End": true}),
            "ResultPath",
        ),
        (
            json!({"Type": "Pass", "Parameters": {"a.$": 3}, "End": true}),
            "Parameters.a.$",
        ),
        (
            json!({"Type": "Pass", "Parameters": {"n": {"a.$": "$.["}}, "End": true}),
            "Parameters.n.a.$",
        ),
        (
            json!({"Type": "Pass", "Parameters": {"a.$": "States.Nope()"}, "End": true}),
            "Parameters.a.$",
        ),
        (
            json!({"Type": "Pass", "Parameters": {"a.$": "States.ArrayLength(1, 2)"}, "End": true}),
            "Parameters.a.$",
        ),
        (
            json!({"Type": "Wait", "Seconds": 1, "Timestamp": "2024-01-01T00:00:00Z", "End": true}),
            "Timestamp",
        ),
        (
            json!({"Type": "Wait", "Timestamp": "yesterday", "End": true}),
            "Timestamp",
        ),
        (
            json!({"Type": "Wait", "Seconds": -1, "End": true}),
            "Seconds",
        ),
        (
            json!({"Type": "Task", "Resource": "r", "TimeoutSeconds": 0, "End": true}),
            "TimeoutSeconds",
        ),
        (
            json!({"Type": "Task", "Resource": "r", "TimeoutSeconds": 5, "HeartbeatSeconds": 5, "End": true}),
            "HeartbeatSeconds",
        ),
        (
            json!({"Type": "Task", "Resource": "r", "End": true, "Retry": [{"ErrorEquals": ["X"], "BackoffRate": 0.5}]}),
            "Retry[0].BackoffRate",
        ),
        (
            json!({"Type": "Task", "Resource": "r", "End": true, "Retry": [{"ErrorEquals": ["X"], "IntervalSeconds": 0}]}),
            "Retry[0].IntervalSeconds",
        ),
        (
            json!({"Type": "Task", "Resource": "r", "End": true, "Retry": [{"ErrorEquals": ["X"], "JitterStrategy": "SOME"}]}),
            "Retry[0].JitterStrategy",
        ),
        (
            json!({"Type": "Task", "Resource": "r", "End": true, "Retry": [{"ErrorEquals": []}]}),
            "Retry[0].ErrorEquals",
        ),
        (
            json!({"Type": "Choice", "Choices": [{"Variable": "$.x", "NumericEquals": "1", "Next": "S"}]}),
            "Choices[0].NumericEquals",
        ),
        (
            json!({"Type": "Choice", "Choices": [{"Variable": "$.x", "TimestampEquals": "noon", "Next": "S"}]}),
            "Choices[0].TimestampEquals",
        ),
        (
            json!({"Type": "Choice", "Choices": [{"Not": {"Variable": "$.x", "IsNull": "yes"}, "Next": "S"}]}),
            "Choices[0].Not.IsNull",
        ),
        (
            json!({"Type": "Choice", "Choices": [{"And": [], "Next": "S"}]}),
            "Choices[0].And",
        ),
        (
            json!({"Type": "Fail", "Error": "E", "ErrorPath": "$.e"}),
            "ErrorPath",
        ),
        (json!({"Type": "Frobnicate", "End": true}), "Type"),
    ];
    for (state, field) in cases {
        let err = load_err(single(state.clone()));
        let (s, f) = match &err {
            AslError::InvalidField { state, field, .. } => (state.clone(), field.clone()),
            other => panic!("{state}: expected InvalidField for {field}, got {other:?}"),
        };
        assert_eq!((s.as_str(), f.as_str()), ("S", field), "{state}");
    }
}

#[test]
fn choice_rules_need_an_operator_and_next() {
    let err = load_err(single(
        json!({"Type": "Choice", "Choices": [{"Variable": "$.x", "Next": "S"}]}),
    ));
    assert!(
        matches!(err, AslError::MissingField { ref state, ref field } if state == "S" && field.starts_with("Choices[0]."))
    );
    let err = load_err(single(
        json!({"Type": "Choice", "Choices": [{"Variable": "$.x", "StringEquals": "a", "IsNull": true, "Next": "S"}]}),
    ));
    let (state, field) = invalid(err);
    assert_eq!(state, "S");
    assert!(
        field == "Choices[0].StringEquals" || field == "Choices[0].IsNull",
        "{field}"
    );
    let err = load_err(single(
        json!({"Type": "Choice", "Choices": [{"Variable": "$.x", "IsNull": true}]}),
    ));
    assert_eq!(
        err,
        AslError::MissingField {
            state: "S".into(),
            field: "Choices[0].Next".into()
        }
    );
    let err = load_err(json!({"StartAt": "S", "States": {
        "S": {"Type": "Choice", "Choices": [{"Not": {"Variable": "$.x", "IsNull": true, "Next": "T"}, "Next": "T"}]},
        "T": {"Type": "Succeed"}
    }}));
    assert_eq!(
        err,
        AslError::UnknownField {
            state: "S".into(),
            field: "Choices[0].Not.Next".into()
        }
    );
}
