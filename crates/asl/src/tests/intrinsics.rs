//! Intrinsic functions, with the developer guide's examples.

use super::*;

/// Evaluates `call` as `Parameters: {"r.$": call}` on `input`; returns the
/// value or the failed execution's (error, cause).
async fn eval(call: &str, input: Value) -> Result<Value, (String, String)> {
    let def = single(json!({"Type": "Pass", "Parameters": {"r.$": call}, "End": true}));
    let exec = run(def, input).await;
    match exec.status {
        ExecutionStatus::Succeeded => Ok(exec.output.unwrap()["r"].clone()),
        ExecutionStatus::Failed { error, cause } => Err((error, cause.unwrap_or_default())),
        ExecutionStatus::TimedOut => panic!("timed out"),
    }
}

async fn ok(call: &str, input: Value) -> Value {
    match eval(call, input).await {
        Ok(v) => v,
        Err(e) => panic!("{call}: {e:?}"),
    }
}

async fn err(call: &str, input: Value) -> String {
    match eval(call, input).await {
        Ok(v) => panic!("{call}: expected a failure, got {v}"),
        Err((error, _)) => error,
    }
}

#[tokio::test]
async fn format() {
    let input = json!({"name": "Arnav", "template": "Hello, my name is {}."});
    assert_eq!(
        ok(
            "States.Format('Hello, my name is {}.', $.name)",
            input.clone()
        )
        .await,
        json!("Hello, my name is Arnav.")
    );
    assert_eq!(
        ok("States.Format($.template, $.name)", input.clone()).await,
        json!("Hello, my name is Arnav.")
    );
    assert_eq!(
        ok(
            r"States.Format('{} {} {} \{\} it\'s {}', 1, true, null, States.Array(1, 'a'))",
            json!({})
        )
        .await,
        json!("1 true null {} it's [1, a]")
    );
    assert_eq!(
        err("States.Format('{} {}', $.name)", input.clone()).await,
        "States.IntrinsicFailure"
    );
    assert_eq!(
        err("States.Format('{}', 1, 2)", input).await,
        "States.IntrinsicFailure"
    );
}

#[tokio::test]
async fn json_conversions() {
    assert_eq!(
        ok(
            "States.StringToJson($.escapedJsonString)",
            json!({"escapedJsonString": "{\"foo\": \"bar\"}"})
        )
        .await,
        json!({"foo": "bar"})
    );
    assert_eq!(
        ok(
            "States.JsonToString($.unescapedJson)",
            json!({"unescapedJson": {"foo": "bar"}})
        )
        .await,
        json!("{\"foo\":\"bar\"}")
    );
    // "States.JsonToString ... takes one argument, the Path of the JSON
    // data to be returned as an unescaped string" (ASL spec, Intrinsic
    // functions): Step Functions writes the members in the order of the
    // input document, as its JSON printer does, not sorted.
    let input: serde_json::Value = serde_json::from_str(
        r#"{"doc": {"zebra": 1, "apple": {"y": 2, "b": 3}, "mango": [ {"z": 0, "a": 1} ]}}"#,
    )
    .unwrap();
    assert_eq!(
        ok("States.JsonToString($.doc)", input).await,
        json!(r#"{"zebra":1,"apple":{"y":2,"b":3},"mango":[{"z":0,"a":1}]}"#)
    );
    assert_eq!(
        err("States.StringToJson($.s)", json!({"s": "{nope"})).await,
        "States.IntrinsicFailure"
    );
    assert_eq!(
        err("States.StringToJson($.s)", json!({"s": 3})).await,
        "States.IntrinsicFailure"
    );
}

#[tokio::test]
async fn arrays() {
    let nine = json!({"inputArray": [1, 2, 3, 4, 5, 6, 7, 8, 9], "lookingFor": 5, "index": 5, "Id": 123456});
    assert_eq!(
        ok("States.Array($.Id)", nine.clone()).await,
        json!([123456])
    );
    assert_eq!(ok("States.Array()", nine.clone()).await, json!([]));
    assert_eq!(
        ok("States.ArrayPartition($.inputArray, 4)", nine.clone()).await,
        json!([[1, 2, 3, 4], [5, 6, 7, 8], [9]])
    );
    assert_eq!(
        ok(
            "States.ArrayContains($.inputArray, $.lookingFor)",
            nine.clone()
        )
        .await,
        json!(true)
    );
    assert_eq!(
        ok("States.ArrayContains($.inputArray, 10)", nine.clone()).await,
        json!(false)
    );
    assert_eq!(
        ok("States.ArrayRange(1, 9, 2)", nine.clone()).await,
        json!([1, 3, 5, 7, 9])
    );
    assert_eq!(
        ok("States.ArrayRange(10, 1, -4)", nine.clone()).await,
        json!([10, 6, 2])
    );
    assert_eq!(
        ok("States.ArrayRange(1, 5, -1)", nine.clone()).await,
        json!([])
    );
    assert_eq!(
        ok("States.ArrayGetItem($.inputArray, $.index)", nine.clone()).await,
        json!(6)
    );
    assert_eq!(
        ok("States.ArrayLength($.inputArray)", nine.clone()).await,
        json!(9)
    );
    assert_eq!(
        ok(
            "States.ArrayUnique($.a)",
            json!({"a": [1, 2, 3, 3, 3, 3, 3, 3, 4]})
        )
        .await,
        json!([1, 2, 3, 4])
    );
    assert_eq!(
        err("States.ArrayRange(0, 1000, 1)", nine.clone()).await,
        "States.IntrinsicFailure"
    );
    assert_eq!(
        err("States.ArrayRange(0, 10, 0)", nine.clone()).await,
        "States.IntrinsicFailure"
    );
    assert_eq!(
        err("States.ArrayGetItem($.inputArray, 9)", nine.clone()).await,
        "States.IntrinsicFailure"
    );
    assert_eq!(
        err("States.ArrayPartition($.inputArray, 0)", nine.clone()).await,
        "States.IntrinsicFailure"
    );
    assert_eq!(
        err("States.ArrayLength($.Id)", nine).await,
        "States.IntrinsicFailure"
    );
}

#[tokio::test]
async fn base64() {
    assert_eq!(
        ok(
            "States.Base64Encode($.input)",
            json!({"input": "Data to encode"})
        )
        .await,
        json!("RGF0YSB0byBlbmNvZGU=")
    );
    assert_eq!(
        ok(
            "States.Base64Decode($.base64)",
            json!({"base64": "RGF0YSB0byBlbmNvZGU="})
        )
        .await,
        json!("Data to encode")
    );
    assert_eq!(
        err("States.Base64Decode('***')", json!({})).await,
        "States.IntrinsicFailure"
    );
}

#[tokio::test]
async fn hash() {
    let input = json!({"Data": "input data"});
    assert_eq!(
        ok("States.Hash($.Data, 'SHA-256')", input.clone()).await,
        json!("b4a697a057313163aee33cd8d40c66e9f0f177e00cac2de32475ffff6169c3e3")
    );
    assert_eq!(
        ok("States.Hash($.Data, 'SHA-384')", input.clone()).await,
        json!("d28a7d5cf25a74f11a50a18452b75e04bb3d70c9dd0510d6123aa008c756511b87525bdc835ebb27e1fb9e9374a15562")
    );
    assert_eq!(
        ok("States.Hash($.Data, 'SHA-512')", input.clone()).await,
        json!("6ce4adb348546d4f449c4d25aad9a7c9cb711d9e91982d3f0b29ca2f3f47d4ce2deba23bf2954f0f1d593fc50283731a533d30d425402d4f91316d871303aac4")
    );
    // The developer guide (States.Hash): "The hashing algorithm can be any
    // of the following: MD5, SHA-1, SHA-256, SHA-384, SHA-512".
    assert_eq!(
        ok("States.Hash($.Data, 'MD5')", input.clone()).await,
        json!("812f45842bc6d66ee14572ce20db8e86")
    );
    assert_eq!(
        ok("States.Hash($.Data, 'SHA-1')", input.clone()).await,
        json!("aaff4a450a104cd177d28d18d74485e8cae074b7")
    );
    // Anything else is refused, lowercase spellings included.
    for other in ["SHA-224", "sha-256", "md5"] {
        match eval(&format!("States.Hash($.Data, '{other}')"), input.clone()).await {
            Err((error, cause)) => {
                assert_eq!(error, "States.Runtime");
                assert!(cause.contains(&format!("'{other}'")), "{cause}");
            }
            Ok(v) => panic!("{other}: {v}"),
        }
    }
}

#[tokio::test]
async fn json_merge_is_shallow() {
    let input = json!({"json1": {"a": {"a1": 1, "a2": 2}, "b": 2}, "json2": {"a": {"a3": 1, "a4": 2}, "c": 3}});
    assert_eq!(
        ok("States.JsonMerge($.json1, $.json2, false)", input.clone()).await,
        json!({"a": {"a3": 1, "a4": 2}, "b": 2, "c": 3})
    );
    assert_eq!(
        err("States.JsonMerge($.json1, $.json2, true)", input.clone()).await,
        "States.IntrinsicFailure"
    );
    assert_eq!(
        err("States.JsonMerge($.json1, 1, false)", input).await,
        "States.IntrinsicFailure"
    );
}

#[tokio::test]
async fn math() {
    assert_eq!(
        ok(
            "States.MathAdd($.value1, $.step)",
            json!({"value1": 111, "step": -1})
        )
        .await,
        json!(110)
    );
    assert_eq!(ok("States.MathAdd(1.5, 2.4)", json!({})).await, json!(4));
    for _ in 0..20 {
        let n = ok(
            "States.MathRandom($.start, $.end)",
            json!({"start": 1, "end": 999}),
        )
        .await;
        let n = n.as_i64().unwrap();
        assert!((1..=999).contains(&n), "{n}");
    }
    let seeded = ok("States.MathRandom(1, 1000000, 7)", json!({})).await;
    assert_eq!(
        ok("States.MathRandom(1, 1000000, 7)", json!({})).await,
        seeded
    );
    assert_eq!(
        err("States.MathRandom(5, 1)", json!({})).await,
        "States.IntrinsicFailure"
    );
    assert_eq!(
        err("States.MathAdd('1', 2)", json!({})).await,
        "States.IntrinsicFailure"
    );
}

#[tokio::test]
async fn string_split() {
    assert_eq!(
        ok(
            "States.StringSplit($.inputString, $.splitter)",
            json!({"inputString": "1,2,3,4,5", "splitter": ","})
        )
        .await,
        json!(["1", "2", "3", "4", "5"])
    );
    assert_eq!(
        ok(
            "States.StringSplit($.inputString, $.splitter)",
            json!({"inputString": "This.is+a,test=string", "splitter": ".+,="})
        )
        .await,
        json!(["This", "is", "a", "test", "string"])
    );
    assert_eq!(
        ok("States.StringSplit('a,,b', ',')", json!({})).await,
        json!(["a", "b"])
    );
}

#[tokio::test]
async fn uuid_is_a_v4_uuid() {
    let id = ok("States.UUID()", json!({})).await;
    let id = id.as_str().unwrap();
    assert_eq!(id.len(), 36);
    assert_eq!(&id[14..15], "4");
    assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
    let other = ok("States.UUID()", json!({})).await;
    // The same seed gives the same UUID; two calls in one run differ.
    assert_eq!(other.as_str().unwrap(), id);
    let two = ok("States.Array(States.UUID(), States.UUID())", json!({})).await;
    assert_ne!(two[0], two[1]);
}

#[tokio::test]
async fn nested_calls_like_the_developer_guide_arn_example() {
    let input = json!({"ImageRecipe": {"Arn": "arn:aws:imagebuilder:us-east-1:123456789012:image-recipe/my-recipe/1.2.3"}});
    // Split on '/' gives [arn..., "my-recipe", "1.2.3"]; item 2 split on
    // '.' gives ["1", "2", "3"].
    let call = "States.Format('{}.{}', States.ArrayGetItem(States.StringSplit(States.ArrayGetItem(States.StringSplit($.ImageRecipe.Arn, '/'), 2), '.'), 0), States.ArrayGetItem(States.StringSplit(States.ArrayGetItem(States.StringSplit($.ImageRecipe.Arn, '/'), 2), '.'), 1))";
    assert_eq!(ok(call, input).await, json!("1.2"));
}

#[tokio::test]
async fn path_argument_that_matches_nothing_is_a_runtime_error() {
    assert_eq!(
        err("States.ArrayLength($.nothing)", json!({})).await,
        "States.Runtime"
    );
}

#[tokio::test]
async fn intrinsics_can_read_the_context_object() {
    assert_eq!(
        ok(
            "States.Format('{}/{}', $$.StateMachine.Name, $$.Execution.Name)",
            json!({})
        )
        .await,
        json!("StateMachine/test-exec")
    );
}

#[tokio::test]
async fn intrinsic_failures_are_catchable() {
    let def = json!({"StartAt": "S", "States": {
        "S": {"Type": "Task", "Resource": "r", "Parameters": {"x.$": "States.StringToJson($.bad)"}, "End": true,
              "Catch": [{"ErrorEquals": ["States.IntrinsicFailure"], "Next": "C"}]},
        "C": {"Type": "Pass", "End": true}
    }});
    let exec = run(def, json!({"bad": "{"})).await;
    assert_eq!(output(&exec)["Error"], json!("States.IntrinsicFailure"));
}
