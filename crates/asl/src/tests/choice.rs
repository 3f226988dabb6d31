//! Choice state rules.

use super::*;

/// Whether `rule` matches `input` (the rule's branch leads to `true`, the
/// Default to `false`).
async fn decide(rule: Value, input: Value) -> bool {
    let mut rule = rule;
    rule["Next"] = json!("Yes");
    let def = json!({"StartAt": "C", "States": {
        "C": {"Type": "Choice", "Choices": [rule], "Default": "No"},
        "Yes": {"Type": "Pass", "Result": true, "End": true},
        "No": {"Type": "Pass", "Result": false, "End": true}
    }});
    output(&run(def, input).await) == json!(true)
}

#[tokio::test]
async fn spec_compound_rule_example() {
    let def = json!({"StartAt": "ChoiceStateX", "States": {
        "ChoiceStateX": {"Type": "Choice", "Choices": [
            {"Not": {"Variable": "$.type", "StringEquals": "Private"}, "Next": "Public"},
            {"And": [
                {"Variable": "$.value", "NumericGreaterThanEquals": 20},
                {"Variable": "$.value", "NumericLessThan": 30}
            ], "Next": "ValueInTwenties"}
        ], "Default": "DefaultState"},
        "Public": {"Type": "Pass", "Result": "Public", "End": true},
        "ValueInTwenties": {"Type": "Pass", "Result": "ValueInTwenties", "End": true},
        "DefaultState": {"Type": "Pass", "Result": "DefaultState", "End": true}
    }});
    for (input, expected) in [
        (json!({"type": "Public", "value": 22}), "Public"),
        (json!({"type": "Private", "value": 22}), "ValueInTwenties"),
        (json!({"type": "Private", "value": 35}), "DefaultState"),
        (json!({"type": "Private", "value": 20}), "ValueInTwenties"),
        (json!({"type": "Private", "value": 30}), "DefaultState"),
    ] {
        assert_eq!(
            output(&run(def.clone(), input.clone()).await),
            json!(expected),
            "{input}"
        );
    }
}

#[tokio::test]
async fn comparison_operators() {
    let input = json!({
        "s": "banana", "n": 5, "f": 2.5, "b": true,
        "t": "2016-03-14T01:59:00Z", "t2": "2016-03-14T03:59:00+02:00",
        "s2": "cherry", "n2": 5.0, "b2": false, "big": 10
    });
    let cases = [
        (json!({"Variable": "$.s", "StringEquals": "banana"}), true),
        (json!({"Variable": "$.s", "StringEquals": "Banana"}), false),
        (json!({"Variable": "$.s", "StringLessThan": "cherry"}), true),
        (json!({"Variable": "$.s", "StringLessThan": "apple"}), false),
        (
            json!({"Variable": "$.s", "StringGreaterThan": "apple"}),
            true,
        ),
        (
            json!({"Variable": "$.s", "StringLessThanEquals": "banana"}),
            true,
        ),
        (
            json!({"Variable": "$.s", "StringGreaterThanEquals": "banana"}),
            true,
        ),
        (
            json!({"Variable": "$.s", "StringGreaterThanEquals": "c"}),
            false,
        ),
        (json!({"Variable": "$.n", "NumericEquals": 5}), true),
        (json!({"Variable": "$.n", "NumericEquals": 5.0}), true),
        (json!({"Variable": "$.f", "NumericLessThan": 3}), true),
        (json!({"Variable": "$.f", "NumericGreaterThan": 2.4}), true),
        (json!({"Variable": "$.n", "NumericLessThanEquals": 5}), true),
        (
            json!({"Variable": "$.n", "NumericGreaterThanEquals": 6}),
            false,
        ),
        (json!({"Variable": "$.b", "BooleanEquals": true}), true),
        (json!({"Variable": "$.b", "BooleanEquals": false}), false),
        (
            json!({"Variable": "$.t", "TimestampEquals": "2016-03-14T01:59:00Z"}),
            true,
        ),
        // Same instant in another offset.
        (
            json!({"Variable": "$.t2", "TimestampEquals": "2016-03-14T01:59:00Z"}),
            true,
        ),
        (
            json!({"Variable": "$.t", "TimestampLessThan": "2016-03-14T02:00:00Z"}),
            true,
        ),
        (
            json!({"Variable": "$.t", "TimestampGreaterThan": "2016-03-14T02:00:00Z"}),
            false,
        ),
        (
            json!({"Variable": "$.t", "TimestampLessThanEquals": "2016-03-14T01:59:00Z"}),
            true,
        ),
        (
            json!({"Variable": "$.t", "TimestampGreaterThanEquals": "2016-03-15T00:00:00Z"}),
            false,
        ),
        // Wrong types compare false rather than failing.
        (json!({"Variable": "$.n", "StringEquals": "5"}), false),
        (json!({"Variable": "$.s", "NumericEquals": 5}), false),
        (
            json!({"Variable": "$.s", "TimestampEquals": "2016-03-14T01:59:00Z"}),
            false,
        ),
        (json!({"Variable": "$.n", "BooleanEquals": true}), false),
        // Path variants compare with another part of the input.
        (json!({"Variable": "$.s", "StringEqualsPath": "$.s"}), true),
        (
            json!({"Variable": "$.s", "StringLessThanPath": "$.s2"}),
            true,
        ),
        (
            json!({"Variable": "$.s", "StringGreaterThanPath": "$.s2"}),
            false,
        ),
        (
            json!({"Variable": "$.s", "StringLessThanEqualsPath": "$.s2"}),
            true,
        ),
        (
            json!({"Variable": "$.s2", "StringGreaterThanEqualsPath": "$.s"}),
            true,
        ),
        (
            json!({"Variable": "$.n", "NumericEqualsPath": "$.n2"}),
            true,
        ),
        (
            json!({"Variable": "$.n", "NumericLessThanPath": "$.big"}),
            true,
        ),
        (
            json!({"Variable": "$.n", "NumericGreaterThanPath": "$.big"}),
            false,
        ),
        (
            json!({"Variable": "$.n", "NumericLessThanEqualsPath": "$.n2"}),
            true,
        ),
        (
            json!({"Variable": "$.big", "NumericGreaterThanEqualsPath": "$.n"}),
            true,
        ),
        (
            json!({"Variable": "$.b", "BooleanEqualsPath": "$.b2"}),
            false,
        ),
        (json!({"Variable": "$.b", "BooleanEqualsPath": "$.b"}), true),
        (
            json!({"Variable": "$.t", "TimestampEqualsPath": "$.t2"}),
            true,
        ),
        (
            json!({"Variable": "$.t", "TimestampLessThanPath": "$.t2"}),
            false,
        ),
        (
            json!({"Variable": "$.t", "TimestampGreaterThanPath": "$.t2"}),
            false,
        ),
        (
            json!({"Variable": "$.t", "TimestampLessThanEqualsPath": "$.t2"}),
            true,
        ),
        (
            json!({"Variable": "$.t", "TimestampGreaterThanEqualsPath": "$.t2"}),
            true,
        ),
        // Context-object variables.
        (
            json!({"Variable": "$$.Execution.Name", "StringEquals": "test-exec"}),
            true,
        ),
    ];
    for (rule, expected) in cases {
        assert_eq!(
            decide(rule.clone(), input.clone()).await,
            expected,
            "{rule}"
        );
    }
}

#[tokio::test]
async fn boolean_combinators() {
    let input = json!({"a": 1, "b": 2});
    let a1 = json!({"Variable": "$.a", "NumericEquals": 1});
    let b3 = json!({"Variable": "$.b", "NumericEquals": 3});
    assert!(!decide(json!({"And": [a1, b3]}), input.clone()).await);
    assert!(decide(json!({"Or": [a1, b3]}), input.clone()).await);
    assert!(decide(json!({"Not": b3}), input.clone()).await);
    assert!(!decide(json!({"Not": {"Or": [a1, b3]}}), input.clone()).await);
    assert!(decide(json!({"And": [{"Not": b3}, {"Or": [b3, a1]}]}), input).await);
}

#[tokio::test]
async fn type_tests() {
    let input =
        json!({"nul": null, "s": "x", "n": 1.5, "b": false, "t": "2024-01-01T00:00:00Z", "o": {}});
    let cases = [
        (json!({"Variable": "$.s", "IsPresent": true}), true),
        (json!({"Variable": "$.missing", "IsPresent": true}), false),
        (json!({"Variable": "$.missing", "IsPresent": false}), true),
        (json!({"Variable": "$.nul", "IsPresent": true}), true),
        (json!({"Variable": "$.nul", "IsNull": true}), true),
        (json!({"Variable": "$.s", "IsNull": true}), false),
        (json!({"Variable": "$.s", "IsNull": false}), true),
        (json!({"Variable": "$.s", "IsString": true}), true),
        (json!({"Variable": "$.n", "IsString": true}), false),
        (json!({"Variable": "$.n", "IsNumeric": true}), true),
        (json!({"Variable": "$.s", "IsNumeric": false}), true),
        (json!({"Variable": "$.b", "IsBoolean": true}), true),
        (json!({"Variable": "$.o", "IsBoolean": true}), false),
        (json!({"Variable": "$.t", "IsTimestamp": true}), true),
        (json!({"Variable": "$.s", "IsTimestamp": true}), false),
        (json!({"Variable": "$.s", "IsTimestamp": false}), true),
    ];
    for (rule, expected) in cases {
        assert_eq!(
            decide(rule.clone(), input.clone()).await,
            expected,
            "{rule}"
        );
    }
}

#[tokio::test]
async fn string_matches_with_wildcards_and_escapes() {
    let cases = [
        ("log-*.txt", "log-2024-01-01.txt", true),
        ("log-*.txt", "log-.txt", true),
        ("log-*.txt", "log-1.txt.gz", false),
        ("*", "", true),
        ("a*b*c", "abc", true),
        ("a*b*c", "acb", false),
        (r"foo\*", "foo*", true),
        (r"foo\*", "foobar", false),
        (r"*\**", "with*star", true),
        (r"*\**", "no star", false),
        (r"back\\slash", r"back\slash", true),
    ];
    for (pattern, text, expected) in cases {
        let rule = json!({"Variable": "$.v", "StringMatches": pattern});
        assert_eq!(
            decide(rule, json!({"v": text})).await,
            expected,
            "{pattern} vs {text}"
        );
    }
    // Non-strings never match.
    assert!(
        !decide(
            json!({"Variable": "$.v", "StringMatches": "*"}),
            json!({"v": 1})
        )
        .await
    );
}

#[tokio::test]
async fn no_match_without_default_fails() {
    let def = json!({"StartAt": "C", "States": {
        "C": {"Type": "Choice", "Choices": [{"Variable": "$.x", "NumericEquals": 1, "Next": "Y"}]},
        "Y": {"Type": "Succeed"}
    }});
    let exec = run(def.clone(), json!({"x": 2})).await;
    assert_eq!(failed_error(&exec), "States.NoChoiceMatched");
    assert_eq!(output(&run(def, json!({"x": 1})).await), json!({"x": 1}));
}

#[tokio::test]
async fn missing_variable_is_a_runtime_error() {
    let def = json!({"StartAt": "C", "States": {
        "C": {"Type": "Choice", "Choices": [{"Variable": "$.x", "NumericEquals": 1, "Next": "Y"}], "Default": "Y"},
        "Y": {"Type": "Succeed"}
    }});
    let exec = run(def, json!({})).await;
    assert_eq!(failed_error(&exec), "States.Runtime");
    let exec = run(
        single(json!({"Type": "Choice", "Choices": [{"Variable": "$.a", "NumericEqualsPath": "$.b", "Next": "S"}], "Default": "S"})),
        json!({"a": 1}),
    )
    .await;
    assert_eq!(failed_error(&exec), "States.Runtime");
}

#[tokio::test]
async fn choice_output_uses_input_and_output_paths() {
    let def = json!({"StartAt": "C", "States": {
        "C": {"Type": "Choice", "InputPath": "$.in", "OutputPath": "$.keep",
              "Choices": [{"Variable": "$.go", "BooleanEquals": true, "Next": "Y"}]},
        "Y": {"Type": "Succeed"}
    }});
    let exec = run(def, json!({"in": {"go": true, "keep": [1]}})).await;
    assert_eq!(output(&exec), json!([1]));
}

#[tokio::test]
async fn timestamps_follow_the_specification_profile() {
    // The specification (Timestamps): strings "MUST conform to the RFC3339
    // profile of ISO 8601, with the further restrictions that an uppercase T
    // must separate the date and time portions, and an uppercase Z must
    // denote that a numeric time zone offset is not present, for example
    // 2016-08-18T17:33:00Z".
    let cases = [
        ("2016-08-18T17:33:00Z", true),
        ("2016-08-18T17:33:00.123Z", true),
        ("2016-08-18T17:33:00+02:00", true),
        ("2016-08-18T17:33:00-00:00", true),
        // no time zone
        ("2016-08-18T17:33:00", false),
        // lowercase separator or zone designator, or a space (RFC 3339 allows them)
        ("2016-08-18t17:33:00Z", false),
        ("2016-08-18T17:33:00z", false),
        ("2016-08-18 17:33:00Z", false),
        // not RFC 3339 at all
        ("2016-08-18", false),
        ("2016-8-18T17:33:00Z", false),
        ("2016-08-18T17:33Z", false),
        ("2016-08-18T17:33:00+0200", false),
        ("2016-13-18T17:33:00Z", false),
        ("", false),
    ];
    for (text, valid) in cases {
        let input = json!({"t": text});
        assert_eq!(
            decide(
                json!({"Variable": "$.t", "IsTimestamp": true}),
                input.clone()
            )
            .await,
            valid,
            "IsTimestamp {text:?}"
        );
        // A comparison with a string that is not a timestamp is false.
        assert_eq!(
            decide(
                json!({"Variable": "$.t", "TimestampLessThanEquals": "2100-01-01T00:00:00Z"}),
                input
            )
            .await,
            valid,
            "TimestampLessThanEquals {text:?}"
        );
    }
    // The same profile applies to a rule's own timestamp and to a Wait state.
    for bad in [
        "2016-08-18t17:33:00Z",
        "2016-08-18T17:33:00",
        "2016-08-18 17:33:00Z",
    ] {
        load_err(json!({"StartAt": "C", "States": {
            "C": {"Type": "Choice", "Choices": [{"Variable": "$.t", "TimestampEquals": bad, "Next": "S"}]},
            "S": {"Type": "Succeed"}
        }}));
        load_err(single(
            json!({"Type": "Wait", "Timestamp": bad, "End": true}),
        ));
        let exec = run(
            single(json!({"Type": "Wait", "TimestampPath": "$.t", "End": true})),
            json!({"t": bad}),
        )
        .await;
        assert_eq!(failed_error(&exec), "States.Runtime", "{bad}");
    }
}
