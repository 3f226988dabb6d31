//! `bakehouse build --remote`: the real binary starts a Step Functions
//! execution on a moto server and follows it until it ends. moto does not run
//! the state machine (its executions stay RUNNING), so the test stops the
//! execution itself once it exists and checks what the CLI sent and reported.

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

    let endpoint = moto.server().endpoint();
    let cli = {
        let machine = machine.clone();
        std::thread::spawn(move || {
            Command::new(env!("CARGO_BIN_EXE_bakehouse"))
                .args(["build", "--remote", "--state-machine", &machine])
                .args(["--build-id", BUILD_ID])
                .arg(repo("recipes/web-aws.yaml"))
                .env_remove("BAKEHOUSE_TABLE")
                .env("AWS_ENDPOINT_URL", endpoint)
                .env("AWS_REGION", "us-east-1")
                .env("AWS_ACCESS_KEY_ID", "testing")
                .env("AWS_SECRET_ACCESS_KEY", "testing")
                .env("AWS_EC2_METADATA_DISABLED", "true")
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
