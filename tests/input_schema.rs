//! `statemachines/input.schema.json`: its examples are valid, deserialise
//! as the execution input, and bad inputs are refused.

use bakehouse::pipeline::bundle;
use bakehouse::pipeline::io::{ExecutionInput, RecipeSpec, TriggerSpec};
use bakehouse::registry::TriggerKind;
use serde_json::{json, Value};

fn schema() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/statemachines/input.schema.json"
    );
    let text = std::fs::read_to_string(path).expect("schema file");
    serde_json::from_str(&text).expect("schema is JSON")
}

fn validator() -> jsonschema::Validator {
    let schema = schema();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    jsonschema::draft202012::new(&schema).expect("schema compiles")
}

#[test]
fn examples_are_valid_and_deserialise_as_the_execution_input() {
    let v = validator();
    let examples = schema()["examples"].as_array().cloned().expect("examples");
    assert_eq!(examples.len(), 3);
    for example in &examples {
        let errors: Vec<String> = v.iter_errors(example).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{example}: {errors:?}");
        let input: ExecutionInput =
            serde_json::from_value(example.clone()).unwrap_or_else(|e| panic!("{example}: {e}"));
        let kind = input.trigger.to_trigger().kind;
        assert_eq!(kind, TriggerKind::Console);
    }
    let first: ExecutionInput = serde_json::from_value(examples[0].clone()).expect("first");
    assert!(matches!(&first.recipe, RecipeSpec::Name(n) if n == "web"));
    let second: ExecutionInput = serde_json::from_value(examples[1].clone()).expect("second");
    assert!(second.force);
    assert_eq!(second.build_id.as_deref(), Some("web-manual-2024-06-01"));
    assert!(matches!(&second.trigger, TriggerSpec::Full(t) if t.actor.as_deref() == Some("alice")));
}

#[test]
fn the_inline_example_is_a_valid_recipe() {
    let third: ExecutionInput =
        serde_json::from_value(schema()["examples"][2].clone()).expect("third");
    let packed = third.inline_bundle().expect("inline");
    let dir = tempfile::tempdir().expect("tempdir");
    let loaded = bundle::materialize(&packed, &dir.path().join("r")).expect("recipe loads");
    assert_eq!(loaded.recipe.name, "hello");
    let script = std::fs::read_to_string(dir.path().join("r/setup.sh")).expect("script");
    assert!(script.starts_with("#!/bin/sh"));
}

#[test]
fn the_schedule_input_is_valid() {
    let input: Value =
        serde_json::from_str(&bakehouse::triggers::schedules::schedule_input("web")).expect("json");
    assert!(validator().is_valid(&input), "{input}");
    let parsed: ExecutionInput = serde_json::from_value(input).expect("execution input");
    assert!(matches!(&parsed.recipe, RecipeSpec::Name(n) if n == "web"));
    assert_eq!(parsed.trigger.to_trigger().kind, TriggerKind::Schedule);
}

#[test]
fn bad_inputs_are_refused() {
    let v = validator();
    let bad = [
        ("no recipe", json!({"trigger": "console"})),
        ("unknown field", json!({"recipe": "web", "forse": true})),
        ("bad recipe name", json!({"recipe": "Web Server"})),
        (
            "unknown trigger kind",
            json!({"recipe": "web", "trigger": "cron"}),
        ),
        (
            "trigger without kind",
            json!({"recipe": "web", "trigger": {"actor": "alice"}}),
        ),
        (
            "force not boolean",
            json!({"recipe": "web", "force": "yes"}),
        ),
        (
            "inline recipe without base",
            json!({"recipe": {"name": "x"}}),
        ),
        (
            "two base kinds",
            json!({"recipe": {"name": "x", "base": {"image": "ami-12345678", "registry": "y"}}}),
        ),
        (
            "shell with both",
            json!({"recipe": {"name": "x", "base": {"image": "ami-12345678"},
            "provisioners": [{"type": "shell", "inline": ["true"], "script": "a.sh"}]}}),
        ),
        (
            "unknown recipe field",
            json!({"recipe": {"name": "x", "base": {"image": "ami-12345678"}, "bogus": 1}}),
        ),
        (
            "files escape",
            json!({"recipe": {"name": "x", "base": {"image": "ami-12345678"}},
            "files": {"../etc/passwd": {"content": ""}}}),
        ),
        (
            "files with a named recipe",
            json!({"recipe": "web", "files": {"a.sh": {"content": "YQ=="}}}),
        ),
        ("not an object", json!(["web"])),
    ];
    for (what, input) in bad {
        assert!(!v.is_valid(&input), "{what}: accepted {input}");
    }
}
