//! The deployment files: the SAM template and the state machine
//! definitions pass their linters, every `${...}` of the pipeline has a
//! substitution naming a function of the template, and the table is the
//! one `DynamoStore::create_table` makes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use bakehouse::pipeline::local::function_placeholders;
use bakehouse::registry::DynamoStore;
use bakehouse::testing::moto;
use serde_yaml_ng::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A tool from `.venv` or `node_modules`; a clear failure when missing.
fn tool(rel: &str) -> PathBuf {
    let path = root().join(rel);
    assert!(
        path.exists(),
        "{} is missing: run `make setup` (installs cfn-lint into .venv and asl-validator into node_modules)",
        path.display()
    );
    path
}

fn template() -> Value {
    let text = std::fs::read_to_string(root().join("infra/template.yaml")).expect("template");
    serde_yaml_ng::from_str(&text).expect("template is YAML")
}

/// A CloudFormation value without its short-form tag (`!Ref X` -> `X`).
fn untag(v: &Value) -> &Value {
    match v {
        Value::Tagged(t) => &t.value,
        other => other,
    }
}

/// The tag of a short-form intrinsic (`GetAtt` for `!GetAtt`).
fn tag(v: &Value) -> Option<String> {
    match v {
        Value::Tagged(t) => Some(t.tag.to_string().trim_start_matches('!').to_string()),
        _ => None,
    }
}

fn resources(t: &Value) -> BTreeMap<String, Value> {
    t["Resources"]
        .as_mapping()
        .expect("Resources")
        .iter()
        .map(|(k, v)| (k.as_str().expect("name").to_string(), v.clone()))
        .collect()
}

#[test]
fn cfn_lint_reports_nothing() {
    let out = Command::new(tool(".venv/bin/cfn-lint"))
        .arg("infra/template.yaml")
        .current_dir(root())
        .output()
        .expect("run cfn-lint");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "cfn-lint failed:\n{text}");
    assert_eq!(text.trim(), "", "cfn-lint printed findings");
}

#[test]
fn asl_validator_accepts_every_definition() {
    let validator = tool("node_modules/.bin/asl-validator");
    let mut checked = 0;
    for entry in std::fs::read_dir(root().join("statemachines")).expect("statemachines") {
        let path = entry.expect("entry").path();
        if !path.to_string_lossy().ends_with(".asl.json") {
            continue;
        }
        let out = Command::new(&validator)
            .arg("--json-path")
            .arg(&path)
            .output()
            .expect("run asl-validator");
        assert!(
            out.status.success(),
            "{}: {}{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 1, "no .asl.json file checked");
}

fn placeholders(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let end = after.find('}').expect("closing brace");
        out.insert(after[..end].to_string());
        rest = &after[end + 1..];
    }
    out
}

#[test]
fn every_placeholder_has_a_substitution_naming_a_template_function() {
    let t = template();
    assert_eq!(t["Transform"], Value::from("AWS::Serverless-2016-10-31"));
    let res = resources(&t);
    let machines: Vec<(&String, &Value)> = res
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::Serverless::StateMachine")
        .collect();
    assert_eq!(machines.len(), 1, "one state machine");
    let props = &machines[0].1["Properties"];
    let uri = props["DefinitionUri"].as_str().expect("DefinitionUri");
    let definition = root().join("infra").join(uri);
    let text = std::fs::read_to_string(&definition).expect("definition");
    let used = placeholders(&text);
    let subs: BTreeMap<String, Value> = props["DefinitionSubstitutions"]
        .as_mapping()
        .expect("DefinitionSubstitutions")
        .iter()
        .map(|(k, v)| (k.as_str().expect("key").to_string(), v.clone()))
        .collect();
    let given: BTreeSet<String> = subs.keys().cloned().collect();
    assert_eq!(
        used,
        given,
        "placeholders of {} vs substitutions",
        definition.display()
    );
    let expected: BTreeSet<String> = function_placeholders()
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert_eq!(used, expected);

    for (placeholder, step) in function_placeholders() {
        let value = &subs[&placeholder];
        assert_eq!(tag(value).as_deref(), Some("GetAtt"), "{placeholder}");
        let target = untag(value).as_str().expect("GetAtt target");
        let (logical, attr) = target.split_once('.').expect("Resource.Attribute");
        assert_eq!(attr, "Arn");
        let function = res
            .get(logical)
            .unwrap_or_else(|| panic!("{placeholder}: no {logical}"));
        assert_eq!(function["Type"], Value::from("AWS::Serverless::Function"));
        let code = function["Properties"]["CodeUri"].as_str().expect("CodeUri");
        assert_eq!(code, format!("../functions/{}", step.name()));
        assert_eq!(
            function["Metadata"]["BuildMethod"],
            Value::from("rust-cargolambda")
        );
        // The state machine role may invoke it.
        let role =
            &res["StateMachineRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][0];
        let invokable: Vec<&str> = role["Resource"]
            .as_sequence()
            .expect("resources")
            .iter()
            .filter_map(|r| untag(r).as_str())
            .collect();
        assert!(invokable.contains(&target), "{target} not invokable");
    }
}

#[test]
fn trigger_functions_exist_and_use_the_lambda_conventions() {
    let t = template();
    let globals = &t["Globals"]["Function"];
    assert_eq!(globals["Runtime"], Value::from("provided.al2023"));
    assert_eq!(globals["Handler"], Value::from("bootstrap"));
    assert_eq!(
        untag(&globals["Architectures"][0]),
        &Value::from("Architecture")
    );
    let arch = &t["Parameters"]["Architecture"];
    assert_eq!(arch["Default"], Value::from("x86_64"));
    let res = resources(&t);
    for (logical, package) in [
        ("WebhookFunction", "webhook"),
        ("ReaperFunction", "reaper"),
        ("EventsFunction", "events"),
        ("LifecycleFunction", "lifecycle"),
    ] {
        let f = &res[logical];
        let code = f["Properties"]["CodeUri"].as_str().expect("CodeUri");
        assert_eq!(code, format!("../functions/{package}"));
        let manifest = root().join("infra").join(code).join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest).expect("function package");
        assert!(
            text.contains(&format!("name = \"{package}\"")),
            "{}",
            manifest.display()
        );
    }
    let url = &res["WebhookFunction"]["Properties"]["FunctionUrlConfig"];
    assert_eq!(url["AuthType"], Value::from("NONE"));
    let sweep = &res["ReaperFunction"]["Properties"]["Events"]["Sweep"];
    assert_eq!(sweep["Type"], Value::from("Schedule"));
    let retention = &res["LifecycleFunction"]["Properties"]["Events"]["Apply"];
    assert_eq!(retention["Type"], Value::from("Schedule"));
    // The events function gets the three kinds of event it reads, and may
    // invoke (wake) exactly the steps a WaitFor state parks.
    let rules = &res["EventsFunction"]["Properties"]["Events"];
    let mut kinds = BTreeSet::new();
    for (_, rule) in rules.as_mapping().expect("rules") {
        assert_eq!(rule["Type"], Value::from("EventBridgeRule"));
        let pattern = &rule["Properties"]["Pattern"];
        for kind in pattern["detail-type"].as_sequence().expect("detail-type") {
            let kind = kind.as_str().expect("detail-type").to_string();
            let event = serde_json::json!({"detail-type": kind,
                "detail": {"instance-id": "i-1", "ImageId": "ami-1"}});
            assert!(
                bakehouse::triggers::events::subject(&event)
                    .unwrap()
                    .is_some(),
                "{kind} is not read by the events function"
            );
            kinds.insert(kind);
        }
    }
    assert_eq!(kinds.len(), 3, "{kinds:?}");
    let events_role =
        &res["EventsRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"];
    let wake = events_role
        .as_sequence()
        .expect("statements")
        .iter()
        .find(|s| s["Action"] == "lambda:InvokeFunction")
        .expect("the events role wakes steps");
    let woken: BTreeSet<String> = wake["Resource"]
        .as_sequence()
        .expect("resources")
        .iter()
        .filter_map(|r| untag(r).as_str().map(str::to_string))
        .collect();
    let parked: BTreeSet<String> = bakehouse::triggers::events::PARKED_STEPS
        .iter()
        .map(|s| {
            let name = s.name();
            format!("{}{}Function.Arn", name[..1].to_uppercase(), &name[1..])
        })
        .collect();
    assert_eq!(woken, parked);
    // One role per function, none shared.
    let roles: Vec<String> = res
        .values()
        .filter(|r| r["Type"] == "AWS::Serverless::Function")
        .map(|f| {
            untag(&f["Properties"]["Role"])
                .as_str()
                .expect("Role")
                .to_string()
        })
        .collect();
    let distinct: BTreeSet<&String> = roles.iter().collect();
    assert_eq!(roles.len(), 11);
    assert_eq!(distinct.len(), roles.len(), "{roles:?}");
    // The scheduler's role may only start the pipeline.
    let scheduler =
        &res["SchedulerRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"];
    let statements = scheduler.as_sequence().expect("statements");
    assert_eq!(statements.len(), 1);
    assert_eq!(
        statements[0]["Action"],
        Value::from("states:StartExecution")
    );
    assert_eq!(
        untag(&statements[0]["Resource"]),
        &Value::from("PipelineStateMachine")
    );
}

/// Attribute definitions, key schema and indexes of a table, normalised.
type TableShape = (
    BTreeSet<(String, String)>,
    Vec<(String, String)>,
    BTreeMap<String, (Vec<(String, String)>, String)>,
);

fn template_table() -> TableShape {
    let t = template();
    let props = resources(&t)["Table"]["Properties"].clone();
    assert_eq!(props["BillingMode"], Value::from("PAY_PER_REQUEST"));
    assert_eq!(
        props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"],
        Value::from(true)
    );
    assert_eq!(props["SSESpecification"]["SSEEnabled"], Value::from(true));
    let s = |v: &Value| v.as_str().expect("string").to_string();
    let keys = |v: &Value| -> Vec<(String, String)> {
        v.as_sequence()
            .expect("keys")
            .iter()
            .map(|k| (s(&k["AttributeName"]), s(&k["KeyType"])))
            .collect()
    };
    let attrs = props["AttributeDefinitions"]
        .as_sequence()
        .expect("attributes")
        .iter()
        .map(|a| (s(&a["AttributeName"]), s(&a["AttributeType"])))
        .collect();
    let gsis = props["GlobalSecondaryIndexes"]
        .as_sequence()
        .expect("indexes")
        .iter()
        .map(|g| {
            (
                s(&g["IndexName"]),
                (keys(&g["KeySchema"]), s(&g["Projection"]["ProjectionType"])),
            )
        })
        .collect();
    (attrs, keys(&props["KeySchema"]), gsis)
}

#[tokio::test]
async fn the_template_table_is_the_one_create_table_makes() {
    let guard = moto().await.expect("moto server (run `make setup`)");
    let sdk = guard.sdk_config("us-east-1").await;
    DynamoStore::new(&sdk, "shape")
        .create_table()
        .await
        .expect("create table");
    let table = aws_sdk_dynamodb::Client::new(&sdk)
        .describe_table()
        .table_name("shape")
        .send()
        .await
        .expect("describe")
        .table
        .expect("table");
    let keys = |k: &[aws_sdk_dynamodb::types::KeySchemaElement]| -> Vec<(String, String)> {
        k.iter()
            .map(|e| {
                (
                    e.attribute_name().to_string(),
                    e.key_type().as_str().to_string(),
                )
            })
            .collect()
    };
    let attrs = table
        .attribute_definitions()
        .iter()
        .map(|a| {
            (
                a.attribute_name().to_string(),
                a.attribute_type().as_str().to_string(),
            )
        })
        .collect();
    let gsis = table
        .global_secondary_indexes()
        .iter()
        .map(|g| {
            (
                g.index_name().unwrap_or_default().to_string(),
                (
                    keys(g.key_schema()),
                    g.projection()
                        .and_then(|p| p.projection_type())
                        .map(|p| p.as_str().to_string())
                        .unwrap_or_default(),
                ),
            )
        })
        .collect();
    let made: TableShape = (attrs, keys(table.key_schema()), gsis);
    assert_eq!(template_table(), made);
}

#[test]
fn samconfig_sets_and_documents_every_template_parameter() {
    let config = std::fs::read_to_string(root().join("infra/samconfig.toml")).unwrap();
    let t = template();
    let params = t["Parameters"].as_mapping().expect("Parameters");
    assert!(!params.is_empty());
    for name in params.keys() {
        let name = name.as_str().unwrap();
        assert!(
            config.contains(&format!("\"{name}=")),
            "samconfig.toml parameter_overrides lacks {name}"
        );
        assert!(
            config.contains(&format!("#   {name} ")),
            "samconfig.toml does not document {name}"
        );
    }
}
