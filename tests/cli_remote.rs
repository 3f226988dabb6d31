//! `bakehouse build --remote`: the real binary starts a Step Functions
//! execution on a moto server and follows it until it ends. moto does not run
//! the state machine (its executions stay RUNNING), so the test stops the
//! execution itself once it exists and checks what the CLI sent and reported.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use bakehouse::pipeline::io::ExecutionInput;
use bakehouse::testing::moto;
use serde_json::Value;

const BUILD_ID: &str = "web-remote-test-1";

fn repo(path: &str) -> String {
    format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
}

async fn executions(
    sfn: &aws_sdk_sfn::Client,
    machine: &str,
) -> Vec<aws_sdk_sfn::types::ExecutionListItem> {
    sfn.list_executions()
        .state_machine_arn(machine)
        .send()
        .await
        .unwrap()
        .executions()
        .to_vec()
}

#[tokio::test]
async fn remote_build_starts_one_execution_with_the_documented_input_and_follows_it() {
    let moto = moto().await.unwrap();
    let sdk = moto.sdk_config("us-east-1").await;
    let sfn = aws_sdk_sfn::Client::new(&sdk);
    let definition = std::fs::read_to_string(repo("statemachines/pipeline.asl.json")).unwrap();
    let machine = sfn
        .create_state_machine()
        .name("bakehouse-pipeline")
        .definition(definition)
        .role_arn("arn:aws:iam::123456789012:role/bakehouse-pipeline")
        .send()
        .await
        .unwrap()
        .state_machine_arn()
        .to_string();

    let env = moto.process_env("us-east-1");
    let cli = {
        let machine = machine.clone();
        std::thread::spawn(move || {
            Command::new(env!("CARGO_BIN_EXE_bakehouse"))
                .args(["build", "--remote", "--state-machine", &machine])
                .args(["--build-id", BUILD_ID])
                .arg(repo("recipes/web-aws.yaml"))
                .env_remove("BAKEHOUSE_TABLE")
                .envs(env)
                .env("USER", "alice")
                .output()
                .unwrap()
        })
    };

    // The execution appears under the build id, running.
    let started = Instant::now();
    let execution = loop {
        if let Some(e) = executions(&sfn, &machine).await.first() {
            break e.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the CLI started no execution"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(execution.name(), BUILD_ID);
    let described = sfn
        .describe_execution()
        .execution_arn(execution.execution_arn())
        .send()
        .await
        .unwrap();
    assert_eq!(described.status().as_str(), "RUNNING");

    // Its input is what input.schema.json documents: the recipe inline, the
    // files it uses, a cli trigger with the user, the build id.
    let input: Value = serde_json::from_str(described.input().unwrap()).unwrap();
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(repo("statemachines/input.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&input)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{input}: {errors:?}");
    let parsed: ExecutionInput = serde_json::from_value(input.clone()).unwrap();
    assert_eq!(parsed.build_id.as_deref(), Some(BUILD_ID));
    assert!(!parsed.force);
    assert_eq!(input["recipe"]["name"], "web");
    assert_eq!(input["trigger"]["kind"], "cli");
    assert_eq!(input["trigger"]["actor"], "alice");

    // The CLI keeps following until the execution ends, then reports how.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !cli.is_finished(),
        "the CLI stopped following a running execution"
    );
    sfn.stop_execution()
        .execution_arn(execution.execution_arn())
        .error("Test.Stopped")
        .cause("stopped by the test")
        .send()
        .await
        .unwrap();
    let out = cli.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("started {}", execution.execution_arn())),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!("execution {BUILD_ID} ABORTED")),
        "{stderr}"
    );
    assert_eq!(
        executions(&sfn, &machine).await.len(),
        1,
        "one execution, not more"
    );
}

/// `bakehouse --table T builds list|show` read the build records the
/// pipeline writes to the DynamoDB table: newest first, with status, version,
/// failure and steps; an unknown id is a clear error.
#[tokio::test]
async fn builds_list_and_show_read_the_records_from_the_table() {
    use bakehouse::build::{BuildStatus, BuildStore, DynamoBuildStore, Failure, Step};
    use bakehouse::registry::{DynamoStore, TriggerKind};

    let moto = moto().await.unwrap();
    let sdk = moto.sdk_config("us-east-1").await;
    DynamoStore::new(&sdk, "builds-table")
        .create_table()
        .await
        .unwrap();
    let store = DynamoBuildStore::new(aws_sdk_dynamodb::Client::new(&sdk), "builds-table");
    let record = |id: &str, minutes_ago: i64, trigger: TriggerKind| {
        let recipe = serde_json::json!({"name": "web", "base": {"image": "ami-12c6146b"}});
        let mut r = support::build_record(id, recipe, trigger, minutes_ago);
        r.step_invoked(Step::Launch);
        r.step_finished(Step::Launch);
        r
    };
    let mut good = record("web-push-1", 30, TriggerKind::Push);
    good.status = BuildStatus::Succeeded;
    good.version = Some("web@1.4".into());
    store.create(&good).await.unwrap();
    let mut bad = record("web-sched-2", 5, TriggerKind::Schedule);
    bad.step_invoked(Step::Provision);
    bad.status = BuildStatus::Failed;
    bad.failure = Some(Failure {
        step: "provision".into(),
        error: "BuildFailed".into(),
        cause: "shell step 1: exit 3".into(),
    });
    store.create(&bad).await.unwrap();

    let env = moto.process_env("us-east-1");
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_bakehouse"))
            .args(["--table", "builds-table"])
            .args(args)
            .envs(env.clone())
            .env_remove("AWS_PROFILE")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (ok, out, err) = cli(&["--json", "builds", "list"]);
    assert!(ok, "{err}");
    let list: Vec<Value> = serde_json::from_str(&out).unwrap();
    let ids: Vec<&str> = list.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids, ["web-sched-2", "web-push-1"], "newest first");

    let (ok, out, err) = cli(&["builds", "list"]);
    assert!(ok, "{err}");
    let rows: Vec<&str> = out.lines().filter(|l| l.contains("web-")).collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert!(
        rows[0].contains("schedule") && rows[0].contains("FAILED"),
        "{out}"
    );
    assert!(
        rows[1].contains("push") && rows[1].contains("SUCCEEDED") && rows[1].contains("web@1.4"),
        "{out}"
    );

    let (ok, out, err) = cli(&["builds", "show", "web-sched-2"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("build web-sched-2 — recipe web — FAILED"),
        "{out}"
    );
    assert!(
        out.contains("failed at provision: BuildFailed: shell step 1: exit 3"),
        "{out}"
    );
    assert!(out.contains("launch") && out.contains("provision"), "{out}");

    let (ok, out, err) = cli(&["--json", "builds", "show", "web-push-1"]);
    assert!(ok, "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["version"], "web@1.4");

    let (ok, _, err) = cli(&["builds", "show", "nope"]);
    assert!(!ok);
    assert!(err.contains("no build nope"), "{err}");
}

/// `build --remote --json` prints exactly one JSON document on stdout (the
/// execution's outcome), nothing before it.
#[tokio::test]
async fn remote_build_with_json_prints_one_document() {
    let moto = moto().await.unwrap();
    let sdk = moto.sdk_config("us-east-1").await;
    let sfn = aws_sdk_sfn::Client::new(&sdk);
    let definition = std::fs::read_to_string(repo("statemachines/pipeline.asl.json")).unwrap();
    let machine = sfn
        .create_state_machine()
        .name("bakehouse-pipeline-json")
        .definition(definition)
        .role_arn("arn:aws:iam::123456789012:role/bakehouse-pipeline")
        .send()
        .await
        .unwrap()
        .state_machine_arn()
        .to_string();
    let env = moto.process_env("us-east-1");
    let cli = {
        let machine = machine.clone();
        std::thread::spawn(move || {
            Command::new(env!("CARGO_BIN_EXE_bakehouse"))
                .args(["--json", "build", "--remote", "--state-machine", &machine])
                .args(["--build-id", "json-build"])
                .arg(repo("recipes/web-aws.yaml"))
                .env_remove("BAKEHOUSE_TABLE")
                .envs(env)
                .output()
                .unwrap()
        })
    };
    let started = Instant::now();
    let execution = loop {
        if let Some(e) = executions(&sfn, &machine).await.first() {
            break e.clone();
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no execution");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    sfn.stop_execution()
        .execution_arn(execution.execution_arn())
        .error("Test.Stopped")
        .send()
        .await
        .unwrap();
    let out = cli.join().unwrap();
    assert!(!out.status.success());
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stdout));
    });
    assert_eq!(doc["status"], "ABORTED");
    assert_eq!(doc["build_id"], "json-build");
    assert_eq!(doc["execution_arn"], execution.execution_arn());
}
