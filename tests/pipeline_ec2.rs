//! The pipeline with the EC2 + SSM backend, end to end against a moto
//! server (real SDK clients over HTTP): registry and build records on one
//! DynamoDB table, builders in EC2, commands through SSM, images copied to
//! a second region.
//!
//! Every build runs the deployed definition, statemachines/pipeline.asl.json,
//! through the local ASL runner (waits and retry delays on a virtual clock),
//! with each Task mapped to the step handler the Lambda function calls.
//!
//! moto is more lenient than AWS in ways that matter here: it ignores
//! RunInstances' ClientToken and accepts duplicate AMI names, so the
//! idempotency tests below only pass because the backend looks up what the
//! build already made; SendCommand "succeeds" at once with empty output
//! (the generated scripts are run for real in the backend's unit tests);
//! DescribeInstanceInformation is missing, so the SSM online check is off.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use aws_sdk_ec2::types::{Filter, Image};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{json, Value};

use bakehouse::asl::{ExecutionStatus, VirtualClock};
use bakehouse::backends::ec2::{image_name, Ec2Backend, Ec2Settings, TAG_BUILD, TAG_RECIPE};
use bakehouse::build::{
    BuildRecord, BuildStatus, BuildStore, DynamoBuildStore, ResourceKind, Step,
};
use bakehouse::pipeline::io::ExecutionInput;
use bakehouse::pipeline::{BuilderBackend, Pipeline, PipelineSettings, StepError};
use bakehouse::recipe::{parse, Format};
use bakehouse::registry::{DynamoStore, Registry, Version};
use bakehouse::testing::{moto, MotoGuard};

const HOME: &str = "us-east-1";
const OTHER: &str = "eu-west-1";
const TABLE: &str = "bakehouse-test";
const ACCOUNT: &str = "111122223333";
const MOTD: &str = "Welcome to the web image\n";

struct Env {
    _guard: MotoGuard,
    config: aws_config::SdkConfig,
    registry: Registry,
    builds: Arc<DynamoBuildStore>,
    base_ami: String,
    scratch: tempfile::TempDir,
}

impl Env {
    fn ec2(&self, region: &str) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::new(&bakehouse::aws::in_region(&self.config, region))
    }

    fn settings(&self) -> Ec2Settings {
        Ec2Settings {
            region: Some(HOME.into()),
            // moto has no DescribeInstanceInformation (HTTP 500).
            ssm_online_check: false,
            ..Ec2Settings::default()
        }
    }

    fn backend(&self) -> Ec2Backend {
        Ec2Backend::new(&self.config, self.settings())
    }

    fn pipeline(&self, fail_at: Option<Step>) -> Pipeline {
        self.pipeline_on(self.backend(), fail_at)
    }

    fn pipeline_on(&self, backend: Ec2Backend, fail_at: Option<Step>) -> Pipeline {
        Pipeline::new(
            self.registry.clone(),
            self.builds.clone(),
            Arc::new(backend),
            PipelineSettings {
                scratch_dir: self.scratch.path().to_path_buf(),
                fail_at,
            },
        )
    }

    async fn record(&self, id: &str) -> BuildRecord {
        self.builds.get(id).await.unwrap().expect("build record")
    }

    /// Instances in pending/running/stopping/stopped, optionally only those
    /// tagged with a build.
    async fn live_instances(&self, region: &str, build: Option<&str>) -> Vec<String> {
        let mut req = self.ec2(region).describe_instances().filters(filter(
            "instance-state-name",
            &["pending", "running", "stopping", "stopped"],
        ));
        if let Some(b) = build {
            req = req.filters(filter(&format!("tag:{TAG_BUILD}"), &[b]));
        }
        instance_ids(req.send().await.unwrap())
    }

    /// Every instance in any state.
    async fn all_instances(&self, region: &str) -> Vec<String> {
        instance_ids(self.ec2(region).describe_instances().send().await.unwrap())
    }

    /// Images of this account tagged with the build or carrying its name.
    async fn build_images(&self, region: &str, build: &str, recipe: &str) -> Vec<Image> {
        let mut out = Vec::new();
        for f in [
            filter(&format!("tag:{TAG_BUILD}"), &[build]),
            filter("name", &[&image_name(recipe, build)]),
        ] {
            let images = self
                .ec2(region)
                .describe_images()
                .owners("self")
                .filters(f)
                .send()
                .await
                .unwrap();
            for image in images.images() {
                if !out.iter().any(|i: &Image| i.image_id() == image.image_id()) {
                    out.push(image.clone());
                }
            }
        }
        out
    }

    /// Every image of this account.
    async fn own_images(&self, region: &str) -> Vec<String> {
        let out = self
            .ec2(region)
            .describe_images()
            .owners("self")
            .send()
            .await
            .unwrap();
        let mut ids: Vec<String> = out
            .images()
            .iter()
            .filter_map(|i| i.image_id().map(str::to_string))
            .collect();
        ids.sort();
        ids
    }

    async fn snapshots(&self, region: &str) -> Vec<String> {
        let out = self
            .ec2(region)
            .describe_snapshots()
            .owner_ids("self")
            .send()
            .await
            .unwrap();
        let mut ids: Vec<String> = out
            .snapshots()
            .iter()
            .filter_map(|s| s.snapshot_id().map(str::to_string))
            .collect();
        ids.sort();
        ids
    }

    /// Makes an image of this account named `name` (a base for builds).
    async fn make_base(&self, name: &str) -> String {
        support::image_from_instance(&self.ec2(HOME), name).await
    }
}

fn filter(name: &str, values: &[&str]) -> Filter {
    Filter::builder()
        .name(name)
        .set_values(Some(values.iter().map(|v| v.to_string()).collect()))
        .build()
}

fn instance_ids(
    out: aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput,
) -> Vec<String> {
    let mut ids: Vec<String> = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect();
    ids.sort();
    ids
}

/// Creates an IAM instance profile in moto (no IAM SDK in the crate): a
/// query request whose credential scope names the service.
fn create_instance_profile(guard: &MotoGuard, name: &str) {
    let endpoint = guard.server().endpoint();
    let addr = endpoint.trim_start_matches("http://");
    let body =
        format!("Action=CreateInstanceProfile&InstanceProfileName={name}&Version=2010-05-08");
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

async fn env() -> Env {
    let guard = moto().await.expect("moto server (run `make setup`)");
    let config = guard.sdk_config(HOME).await;
    let store = Arc::new(DynamoStore::new(&config, TABLE));
    store.create_table().await.unwrap();
    let builds = Arc::new(DynamoBuildStore::new(
        aws_sdk_dynamodb::Client::new(&config),
        TABLE,
    ));
    create_instance_profile(&guard, "bakehouse-builder");
    let mut env = Env {
        _guard: guard,
        config,
        registry: Registry::new(store),
        builds,
        base_ami: String::new(),
        scratch: tempfile::tempdir().unwrap(),
    };
    env.base_ami = env.make_base("test-base-2024.01").await;
    env
}

/// The web recipe: a filter base, a shell and a file provisioner, a test,
/// two publish regions, one account to share with.
fn web_recipe() -> Value {
    json!({
        "name": "web",
        "label": "Web server",
        "os": "linux",
        "version": {"bump": "minor"},
        "base": {"filter": {"name": "test-base-*", "owners": ["self"], "most_recent": true}},
        "builder": {"instance_type": "t3.micro", "volume_size_gb": 12, "tags": {"cost-center": "42"}},
        "provisioners": [
            {"type": "shell", "inline": ["echo installing", "touch /etc/web"], "env": {"DEBIAN_FRONTEND": "noninteractive"}},
            {"type": "file", "source": "files/motd", "destination": "/etc/motd", "mode": "0644"}
        ],
        "publish": {"regions": [HOME, OTHER], "accounts": [ACCOUNT], "tags": {"team": "platform"}},
        "test": ["test -s /etc/motd"]
    })
}

fn request(build_id: &str, recipe: Value) -> Value {
    json!({
        "recipe": recipe,
        "files": {"files/motd": {"content": BASE64.encode(MOTD)}},
        "trigger": "cli",
        "build_id": build_id,
    })
}

/// What a build run did.
struct Run {
    /// The error that sent the build to teardown, if any.
    error: Option<StepError>,
    /// Teardown's output (from the build record on the failure path, where
    /// the execution ends in a Fail state).
    teardown: Value,
    /// The execution.
    execution: bakehouse::asl::Execution,
}

/// Calls a step until it reports done (the state machine's Wait loop), for
/// the tests that call handlers directly.
async fn poll(p: &Pipeline, step: Step, mut out: Value) -> Result<Value, StepError> {
    for _ in 0..20 {
        if out["done"] == json!(true) {
            return Ok(out);
        }
        let input = json!({"build_id": out["build_id"], "polls": out["polls"]});
        out = p.invoke(step, input).await?;
    }
    panic!("{step} never finished: {out}");
}

/// Runs a whole build through the state machine definition, as an
/// execution named by the request's `build_id`.
async fn run(p: &Pipeline, request: Value) -> Run {
    let name = request["build_id"].as_str().unwrap().to_string();
    run_as(p, request, &name).await
}

/// Runs a whole build as the execution `name` (the build id when the
/// request has none, as with a schedule's input).
async fn run_as(p: &Pipeline, request: Value, name: &str) -> Run {
    let input: ExecutionInput = serde_json::from_value(request).unwrap();
    let clock = Arc::new(VirtualClock::new(chrono::Utc::now()));
    let execution = bakehouse::pipeline::local::execute(p.clone(), &input, name, clock, None)
        .await
        .unwrap();
    let record = p.builds().get(name).await.unwrap().unwrap();
    let summary = json!({"build_id": record.id, "status": record.status.to_string(), "version": record.version});
    match &execution.status {
        ExecutionStatus::Succeeded => {
            let output = execution.output.clone().unwrap();
            // a cache hit ends before teardown, with the launch result
            let teardown = if output.get("status").is_some() {
                output
            } else {
                summary
            };
            Run {
                error: None,
                teardown,
                execution,
            }
        }
        ExecutionStatus::Failed { error, cause } => {
            // The cause is the Lambda error payload, as in AWS.
            let message = bakehouse::pipeline::failure_message(error, cause.as_deref());
            let error = match error.as_str() {
                "BuildFailed" => StepError::BuildFailed(message),
                "Retryable" => StepError::Retryable(message),
                _ => StepError::NonRetryable(message),
            };
            Run {
                error: Some(error),
                teardown: summary,
                execution,
            }
        }
        other => panic!("execution ended {other:?}"),
    }
}

fn step_record(record: &BuildRecord, step: Step) -> &bakehouse::build::StepRecord {
    record
        .steps
        .iter()
        .find(|s| s.step == step)
        .unwrap_or_else(|| panic!("no {step} in {:?}", record.steps))
}

#[tokio::test]
async fn happy_path_publishes_to_two_regions_and_leaves_no_builder() {
    let env = env().await;
    let snapshots_before = env.snapshots(HOME).await;
    let p = env.pipeline(None);
    let run = run(&p, request("web-1", web_recipe())).await;
    assert!(run.error.is_none(), "{:?}", run.error);
    // the deployed definition's path, in order
    let entered: Vec<String> = run
        .execution
        .history
        .iter()
        .filter_map(|e| match &e.kind {
            bakehouse::asl::EventKind::StateEntered { state, .. } => Some(state.clone()),
            _ => None,
        })
        .filter(|s| {
            !s.starts_with("WaitFor")
                && !s.starts_with("Check")
                && !s.ends_with("Done")
                && s != "LaunchReady"
        })
        .collect();
    assert_eq!(
        entered,
        [
            "Start",
            "Launch",
            "Provision",
            "Clean",
            "Capture",
            "Test",
            "Register",
            "Teardown",
            "Built"
        ]
    );
    assert_eq!(
        run.teardown,
        json!({"build_id": "web-1", "status": "SUCCEEDED", "version": "web@1.0"})
    );

    // The registry: one version, one artifact per region, source first.
    let package = env
        .registry
        .show("web", &"1.0".parse::<Version>().unwrap())
        .await
        .unwrap();
    let names: Vec<&str> = package.artifacts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["aws/us-east-1", "aws/eu-west-1"]);
    assert_eq!(package.parent.as_deref(), Some(env.base_ami.as_str()));
    assert_eq!(package.build_id.as_deref(), Some("web-1"));
    assert_eq!(package.label, "Web server");

    // Each artifact is an available image in its region, named, tagged and
    // shared; the copy is a different image than the source.
    for artifact in &package.artifacts {
        let region = artifact.region.as_deref().unwrap();
        assert_eq!(artifact.account.as_deref(), Some("123456789012"));
        let ec2 = env.ec2(region);
        let images = ec2
            .describe_images()
            .image_ids(&artifact.image_id)
            .send()
            .await
            .unwrap();
        let image = &images.images()[0];
        assert_eq!(
            image.state().map(|s| s.as_str()),
            Some("available"),
            "{region}"
        );
        assert_eq!(image.name(), Some("bakehouse-web-web-1"));
        let tags: Vec<(String, String)> = image
            .tags()
            .iter()
            .map(|t| (t.key().unwrap().to_string(), t.value().unwrap().to_string()))
            .collect();
        for expected in [
            (TAG_BUILD, "web-1"),
            (TAG_RECIPE, "web"),
            ("team", "platform"),
        ] {
            assert!(
                tags.contains(&(expected.0.to_string(), expected.1.to_string())),
                "{region}: {tags:?}"
            );
        }
        let perms = ec2
            .describe_image_attribute()
            .image_id(&artifact.image_id)
            .attribute(aws_sdk_ec2::types::ImageAttributeName::LaunchPermission)
            .send()
            .await
            .unwrap();
        let users: Vec<&str> = perms
            .launch_permissions()
            .iter()
            .filter_map(|l| l.user_id())
            .collect();
        assert_eq!(users, [ACCOUNT], "{region}");
        // Its snapshots too, so the account can copy the image.
        let snapshots: Vec<String> = image
            .block_device_mappings()
            .iter()
            .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()).map(str::to_string))
            .collect();
        assert!(!snapshots.is_empty(), "{region}");
        for snap in &snapshots {
            let perms = ec2
                .describe_snapshot_attribute()
                .snapshot_id(snap)
                .attribute(aws_sdk_ec2::types::SnapshotAttributeName::CreateVolumePermission)
                .send()
                .await
                .unwrap();
            let users: Vec<&str> = perms
                .create_volume_permissions()
                .iter()
                .filter_map(|p| p.user_id())
                .collect();
            assert_eq!(users, [ACCOUNT], "{region} {snap}");
        }
        assert_eq!(
            env.build_images(region, "web-1", "web").await.len(),
            1,
            "exactly one image in {region}"
        );
    }
    assert_ne!(package.artifacts[0].image_id, package.artifacts[1].image_id);

    // The build record: succeeded, every step timed, the ledger complete.
    let record = env.record("web-1").await;
    assert_eq!(record.status, BuildStatus::Succeeded);
    assert_eq!(record.version.as_deref(), Some("web@1.0"));
    assert_eq!(record.base_id.as_deref(), Some(env.base_ami.as_str()));
    assert!(record.failure.is_none());
    let timed: Vec<Step> = record.steps.iter().map(|s| s.step).collect();
    assert_eq!(
        timed,
        [
            Step::Launch,
            Step::Provision,
            Step::Clean,
            Step::Capture,
            Step::Test,
            Step::Register,
            Step::Teardown
        ]
    );
    for s in &record.steps {
        let finished = s
            .finished_at
            .unwrap_or_else(|| panic!("{} not finished", s.step));
        assert!(finished >= s.started_at);
    }
    let notes = &step_record(&record, Step::Provision).notes;
    let heads: Vec<&str> = notes.iter().map(|n| n.lines().next().unwrap()).collect();
    assert_eq!(
        heads,
        [
            "provisioners[0] (shell inline): ok (exit 0)",
            "provisioners[1] (file files/motd -> /etc/motd): ok (exit 0)",
        ]
    );
    let heads: Vec<&str> = step_record(&record, Step::Test)
        .notes
        .iter()
        .map(|n| n.lines().next().unwrap())
        .collect();
    assert_eq!(
        heads,
        [
            "clean check of the booted image: ok (exit 0)",
            "test[0] `test -s /etc/motd`: ok (exit 0)"
        ]
    );
    assert_eq!(
        step_record(&record, Step::Clean).notes,
        ["clean: ok (exit 0)"]
    );
    let kinds = |kind: ResourceKind| record.resources_of(kind).count();
    assert_eq!(
        kinds(ResourceKind::Instance),
        2,
        "the builder, the test instance"
    );
    assert_eq!(
        kinds(ResourceKind::Command),
        5,
        "two provisioners, the clean script, the clean check, one test"
    );
    assert_eq!(kinds(ResourceKind::Image), 2);
    assert_eq!(kinds(ResourceKind::Snapshot), 2);
    let instance = record.resources_of(ResourceKind::Instance).next().unwrap();
    for i in record.resources_of(ResourceKind::Instance) {
        assert!(i.deleted && !i.keep_on_success, "{i:?}");
    }
    for r in record
        .resources
        .iter()
        .filter(|r| matches!(r.kind, ResourceKind::Image | ResourceKind::Snapshot))
    {
        assert!(r.keep_on_success && !r.deleted && r.id.is_some(), "{r:?}");
    }
    for r in record.resources_of(ResourceKind::Command) {
        assert!(r.id.is_some() && r.deleted, "{r:?}");
    }
    let snapshots_after = env.snapshots(HOME).await;
    assert_eq!(
        snapshots_after.len(),
        snapshots_before.len() + 1,
        "the image's snapshot is kept"
    );

    // The builder: launched as asked, terminated now, nothing else alive.
    let instance_id = instance.id.clone().unwrap();
    let described = env
        .ec2(HOME)
        .describe_instances()
        .instance_ids(&instance_id)
        .send()
        .await
        .unwrap();
    let builder = &described.reservations()[0].instances()[0];
    assert_eq!(
        builder.state().and_then(|s| s.name()).map(|n| n.as_str()),
        Some("terminated")
    );
    assert_eq!(builder.image_id(), Some(env.base_ami.as_str()));
    assert_eq!(
        builder.instance_type().map(|t| t.as_str()),
        Some("t3.micro")
    );
    assert_eq!(builder.key_name(), None);
    assert_eq!(
        builder
            .metadata_options()
            .and_then(|m| m.http_tokens())
            .map(|t| t.as_str()),
        Some("required")
    );
    let tags: Vec<(&str, &str)> = builder
        .tags()
        .iter()
        .map(|t| (t.key().unwrap(), t.value().unwrap()))
        .collect();
    assert!(
        tags.contains(&(TAG_BUILD, "web-1"))
            && tags.contains(&(TAG_RECIPE, "web"))
            && tags.contains(&("cost-center", "42")),
        "{tags:?}"
    );
    assert_eq!(env.live_instances(HOME, None).await, Vec::<String>::new());

    // SSM got each command exactly once, in order, the file's content inline.
    let ssm = aws_sdk_ssm::Client::new(&env.config);
    let commands = ssm
        .list_commands()
        .instance_id(&instance_id)
        .send()
        .await
        .unwrap();
    // (moto lists every command whatever the instance filter, and its
    // InstanceIds grow with every instance sent to: which instance got the
    // test is checked through the ledger below)
    let mut sent: Vec<_> = commands.commands().to_vec();
    sent.sort_by_key(|c| c.requested_date_time().map(|t| t.as_nanos()));
    assert_eq!(sent.len(), 5);
    let comments: Vec<String> = sent
        .iter()
        .map(|c| c.comment().unwrap().rsplit(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(
        comments,
        [
            "provision/1-shell",
            "provision/2-file",
            "clean",
            "test/clean-check",
            "test/1"
        ]
    );

    // The tests ran on a test instance launched from the new AMI (same
    // settings as the builder), terminated after they passed.
    let test_instance = record
        .resources_of(ResourceKind::Instance)
        .nth(1)
        .and_then(|r| r.id.clone())
        .expect("test instance id");
    let described = env
        .ec2(HOME)
        .describe_instances()
        .instance_ids(&test_instance)
        .send()
        .await
        .unwrap();
    let tested = &described.reservations()[0].instances()[0];
    assert_eq!(
        tested.state().and_then(|s| s.name()).map(|n| n.as_str()),
        Some("terminated")
    );
    let home_image = package
        .artifacts
        .iter()
        .find(|a| a.region.as_deref() == Some(HOME))
        .unwrap();
    assert_eq!(tested.image_id(), Some(home_image.image_id.as_str()));
    assert_eq!(tested.key_name(), None);
    assert_eq!(
        tested
            .metadata_options()
            .and_then(|m| m.http_tokens())
            .map(|t| t.as_str()),
        Some("required")
    );
    assert!(tested
        .tags()
        .iter()
        .any(|t| t.key() == Some(TAG_BUILD) && t.value() == Some("web-1")));
    let test_command = record
        .resource(ResourceKind::Command, "test/1")
        .and_then(|r| r.id.clone())
        .expect("test command in the ledger");
    let invocation = ssm
        .get_command_invocation()
        .command_id(&test_command)
        .instance_id(&test_instance)
        .send()
        .await
        .unwrap();
    assert_eq!(invocation.instance_id(), Some(test_instance.as_str()));
    for c in &sent {
        assert_eq!(c.document_name(), Some("AWS-RunShellScript"));
    }
    let file_script = &sent[1].parameters().unwrap()["commands"][0];
    assert!(file_script.contains(&BASE64.encode(MOTD)), "{file_script}");
    assert!(
        file_script.contains("chmod 0644 '/etc/motd.bakehouse-new'"),
        "{file_script}"
    );
}

/// A failure injected after `step` ends in a FAILED record naming the step,
/// no live builder, no image of the build in any region and no snapshot
/// left; a second teardown changes nothing.
async fn failure_cleans_up(step: Step) {
    failure_of_recipe_cleans_up(step, web_recipe()).await;
}

/// A failure injected after `step`'s work, in a build of `recipe`: teardown
/// removes everything the build made.
async fn failure_of_recipe_cleans_up(step: Step, recipe: Value) {
    let env = env().await;
    let snapshots_before = (env.snapshots(HOME).await, env.snapshots(OTHER).await);
    let p = env.pipeline(Some(step));
    let name = recipe["name"].as_str().unwrap().to_string();
    let id = format!("fail-{name}-{step}");
    let run = run(&p, request(&id, recipe)).await;
    let error = run.error.expect("the injected failure");
    assert_eq!(error.name(), "BuildFailed");
    assert_eq!(
        error.message(),
        format!("injected failure after {step} (fault injection)")
    );
    assert_eq!(run.teardown["status"], json!("FAILED"));

    let record = env.record(&id).await;
    assert_eq!(record.status, BuildStatus::Failed);
    let failure = record.failure.clone().expect("failure recorded");
    assert_eq!(failure.step, step.name());
    assert_eq!(failure.error, "BuildFailed");
    assert_eq!(
        failure.cause,
        format!("injected failure after {step} (fault injection)")
    );

    // The step's work really happened before the failure...
    let launched = record.resources_of(ResourceKind::Instance).count();
    assert_eq!(
        launched,
        if matches!(step, Step::Test | Step::Register) {
            2
        } else {
            1
        },
        "the builder, and the test instance from Test on"
    );
    let images_made = record.resources_of(ResourceKind::Image).count();
    assert_eq!(
        images_made,
        if matches!(step, Step::Capture | Step::Test | Step::Register) {
            2
        } else {
            0
        }
    );
    // ... and teardown removed all of it.
    for region in [HOME, OTHER] {
        assert_eq!(
            env.live_instances(region, Some(&id)).await,
            Vec::<String>::new(),
            "{region}"
        );
        assert_eq!(
            env.build_images(region, &id, &name).await.len(),
            0,
            "images left in {region}"
        );
    }
    assert_eq!(
        (env.snapshots(HOME).await, env.snapshots(OTHER).await),
        snapshots_before
    );
    assert!(
        record.resources.iter().all(|r| r.deleted),
        "{:?}",
        record.resources
    );

    // A version registered before the failure is revoked: its images are gone.
    if step == Step::Register {
        let v = env
            .registry
            .show(&name, &"1.0".parse::<Version>().unwrap())
            .await
            .unwrap();
        assert_eq!(v.status, bakehouse::registry::Status::Revoked);
    }

    // Teardown again (a retried Lambda): still fine, nothing changes.
    let state = json!({"state": {"build": {"build_id": id}, "error": {"Error": "BuildFailed", "Cause": "again"}}});
    let again = p.invoke(Step::Teardown, state).await.unwrap();
    assert_eq!(again["status"], json!("FAILED"));
    assert_eq!(env.record(&id).await.failure, Some(failure));
    assert_eq!(
        env.live_instances(HOME, Some(&id)).await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn failure_at_launch_cleans_up() {
    failure_cleans_up(Step::Launch).await;
}

#[tokio::test]
async fn failure_at_provision_cleans_up() {
    failure_cleans_up(Step::Provision).await;
}

#[tokio::test]
async fn failure_at_clean_cleans_up() {
    failure_cleans_up(Step::Clean).await;
}

#[tokio::test]
async fn failure_at_capture_cleans_up() {
    failure_cleans_up(Step::Capture).await;
}

#[tokio::test]
async fn failure_at_test_cleans_up() {
    failure_cleans_up(Step::Test).await;
}

#[tokio::test]
async fn failure_at_register_cleans_up() {
    failure_cleans_up(Step::Register).await;
}

#[tokio::test]
async fn base_filter_matching_nothing_fails_launch_and_leaves_nothing() {
    let env = env().await;
    let instances_before = env.all_instances(HOME).await;
    let mut recipe = web_recipe();
    recipe["base"] =
        json!({"filter": {"name": "no-such-base-*", "owners": ["self"], "most_recent": true}});
    let run = run(&env.pipeline(None), request("bad-base", recipe)).await;
    let error = run.error.expect("launch fails");
    assert_eq!(error.name(), "NonRetryable");
    assert_eq!(
        error.message(),
        "base filter name=\"no-such-base-*\" owners=[\"self\"] matches no available image in us-east-1"
    );
    assert_eq!(run.teardown["status"], json!("FAILED"));
    let record = env.record("bad-base").await;
    let failure = record.failure.expect("failure recorded");
    assert_eq!(
        (failure.step.as_str(), failure.error.as_str()),
        ("launch", "NonRetryable")
    );
    assert_eq!(failure.cause, error.message());
    assert_eq!(record.base_id, None);
    assert!(record.resources.is_empty(), "{:?}", record.resources);
    assert_eq!(
        env.all_instances(HOME).await,
        instances_before,
        "nothing launched"
    );
    assert_eq!(env.registry.list(Some("web")).await.unwrap().len(), 0);
}

#[tokio::test]
async fn launch_capture_and_register_twice_create_nothing_twice() {
    let env = env().await;
    let p = env.pipeline(None);
    let req = request("twice", web_recipe());
    let first_call = json!({"request": req, "execution": "twice"});

    // Launch twice with the same input, then once more after "losing" the
    // instance id from the ledger (a crash between RunInstances and the
    // record): still one instance, found again by its tag.
    let a = p.invoke(Step::Launch, first_call.clone()).await.unwrap();
    let b = p.invoke(Step::Launch, first_call.clone()).await.unwrap();
    assert_eq!(a["build_id"], b["build_id"]);
    let launched = env.live_instances(HOME, Some("twice")).await;
    assert_eq!(launched.len(), 1);
    // The default instance profile (moto drops it on termination, so it is
    // checked here while the builder runs).
    let described = env
        .ec2(HOME)
        .describe_instances()
        .instance_ids(&launched[0])
        .send()
        .await
        .unwrap();
    let profile = described.reservations()[0].instances()[0]
        .iam_instance_profile()
        .and_then(|p| p.arn());
    assert!(
        profile
            .unwrap_or_default()
            .ends_with("instance-profile/bakehouse-builder"),
        "{profile:?}"
    );
    poll(&p, Step::Launch, b).await.unwrap();
    bakehouse::build::update(env.builds.as_ref(), "twice", |r| {
        for res in r.resources.iter_mut() {
            res.id = None;
        }
    })
    .await
    .unwrap();
    let again = p
        .invoke(Step::Launch, json!({"build_id": "twice", "polls": 3}))
        .await
        .unwrap();
    assert_eq!(again["done"], json!(true));
    assert_eq!(env.live_instances(HOME, Some("twice")).await, launched);
    let record = env.record("twice").await;
    let ids: Vec<Option<String>> = record
        .resources_of(ResourceKind::Instance)
        .map(|r| r.id.clone())
        .collect();
    assert_eq!(ids, [Some(launched[0].clone())]);

    for step in [Step::Provision, Step::Clean] {
        let out = p
            .invoke(step, json!({"build_id": "twice", "polls": 0}))
            .await
            .unwrap();
        poll(&p, step, out).await.unwrap();
    }
    // Provision again: every command is known finished, nothing is resent.
    let out = p
        .invoke(Step::Provision, json!({"build_id": "twice", "polls": 0}))
        .await
        .unwrap();
    assert_eq!(out["done"], json!(true));
    let ssm = aws_sdk_ssm::Client::new(&env.config);
    let sent = ssm
        .list_commands()
        .instance_id(&launched[0])
        .send()
        .await
        .unwrap();
    assert_eq!(sent.commands().len(), 3);

    // Capture twice, then again with the image ids lost from the ledger.
    let capture =
        |polls: u32| p.invoke(Step::Capture, json!({"build_id": "twice", "polls": polls}));
    let out = capture(0).await.unwrap();
    poll(&p, Step::Capture, out).await.unwrap();
    let artifacts = env.record("twice").await.artifacts;
    assert_eq!(artifacts.len(), 2);
    let out = capture(0).await.unwrap();
    assert_eq!(
        poll(&p, Step::Capture, out).await.unwrap()["done"],
        json!(true)
    );
    bakehouse::build::update(env.builds.as_ref(), "twice", |r| {
        for res in r
            .resources
            .iter_mut()
            .filter(|r| r.kind == ResourceKind::Image)
        {
            res.id = None;
        }
    })
    .await
    .unwrap();
    let out = capture(0).await.unwrap();
    poll(&p, Step::Capture, out).await.unwrap();
    assert_eq!(env.record("twice").await.artifacts, artifacts);
    for region in [HOME, OTHER] {
        let images = env.build_images(region, "twice", "web").await;
        assert_eq!(images.len(), 1, "one image in {region}");
    }

    // Test, then again as a retry that lost the instance's termination
    // from the ledger, then once more: one test instance, the test command
    // sent once.
    let test = |polls: u32| p.invoke(Step::Test, json!({"build_id": "twice", "polls": polls}));
    let out = test(0).await.unwrap();
    poll(&p, Step::Test, out).await.unwrap();
    bakehouse::build::update(env.builds.as_ref(), "twice", |r| {
        if let Some(res) = r
            .resources
            .iter_mut()
            .filter(|x| x.kind == ResourceKind::Instance)
            .nth(1)
        {
            res.deleted = false;
        }
    })
    .await
    .unwrap();
    let out = test(0).await.unwrap();
    poll(&p, Step::Test, out).await.unwrap();
    let out = test(0).await.unwrap();
    assert_eq!(
        poll(&p, Step::Test, out).await.unwrap()["done"],
        json!(true)
    );
    let record = env.record("twice").await;
    let tested: Vec<_> = record.resources_of(ResourceKind::Instance).collect();
    assert_eq!(tested.len(), 2, "{tested:?}");
    let test_id = tested[1].id.clone().expect("test instance recorded");
    assert!(tested[1].deleted);
    let sent = ssm.list_commands().send().await.unwrap();
    assert_eq!(
        sent.commands().len(),
        5,
        "the clean check and the test command were sent once"
    );
    assert_ne!(Some(test_id.as_str()), launched.first().map(String::as_str));
    let tagged = instance_ids(
        env.ec2(HOME)
            .describe_instances()
            .filters(filter(&format!("tag:{TAG_BUILD}"), &["twice"]))
            .send()
            .await
            .unwrap(),
    );
    assert_eq!(
        tagged.len(),
        2,
        "the builder and one test instance: {tagged:?}"
    );

    // Register twice, and once more with the version lost from the record
    // (the bake key finds the same version).
    let register = || p.invoke(Step::Register, json!({"build_id": "twice", "polls": 0}));
    assert_eq!(register().await.unwrap()["version"], json!("web@1.0"));
    assert_eq!(register().await.unwrap()["version"], json!("web@1.0"));
    bakehouse::build::update(env.builds.as_ref(), "twice", |r| r.version = None)
        .await
        .unwrap();
    assert_eq!(register().await.unwrap()["version"], json!("web@1.0"));
    let versions = env.registry.list(Some("web")).await.unwrap();
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0].artifacts, artifacts);

    let done = p
        .invoke(
            Step::Teardown,
            json!({"state": {"build": {"build_id": "twice"}}}),
        )
        .await
        .unwrap();
    assert_eq!(done["status"], json!("SUCCEEDED"));
    assert_eq!(env.live_instances(HOME, None).await, Vec::<String>::new());
}

#[tokio::test]
async fn unchanged_recipe_is_a_cache_hit_that_launches_nothing() {
    let env = env().await;
    let p = env.pipeline(None);
    let first = run(&p, request("cache-1", web_recipe())).await;
    assert_eq!(first.teardown["version"], json!("web@1.0"));
    let instances = env.all_instances(HOME).await;
    let images = (env.own_images(HOME).await, env.snapshots(HOME).await);

    let second = run(&p, request("cache-2", web_recipe())).await;
    assert!(second.error.is_none(), "{:?}", second.error);
    assert_eq!(
        second.teardown,
        json!({"build_id": "cache-2", "status": "SUCCEEDED", "version": "web@1.0"})
    );
    let record = env.record("cache-2").await;
    assert!(record.cache_hit);
    assert_eq!(record.bake_key, env.record("cache-1").await.bake_key);
    assert!(record.resources.is_empty(), "{:?}", record.resources);
    assert_eq!(
        env.all_instances(HOME).await,
        instances,
        "no instance launched"
    );
    assert_eq!(
        (env.own_images(HOME).await, env.snapshots(HOME).await),
        images,
        "no image made"
    );
    assert_eq!(env.registry.list(Some("web")).await.unwrap().len(), 1);

    // A changed recipe is not a hit.
    let mut changed = web_recipe();
    changed["test"] = json!(["test -s /etc/motd", "test -f /etc/web"]);
    let third = run(&p, request("cache-3", changed)).await;
    assert_eq!(third.teardown["version"], json!("web@1.1"));
    assert!(!env.record("cache-3").await.cache_hit);
}

/// A schedule starts the state machine with only `{"recipe": NAME,
/// "trigger": "schedule"}`: launch builds the recipe as stored at its last
/// push, and an unchanged bake key makes the rebuild a cache hit. Before any
/// push stored it, the build fails at launch with a record that says why.
#[tokio::test]
async fn scheduled_rebuild_uses_the_stored_recipe_and_is_a_cache_hit() {
    let env = env().await;
    let p = env.pipeline(None);
    let scheduled = || json!({"recipe": "web", "trigger": "schedule"});

    let early = run_as(&p, scheduled(), "sched-0").await;
    match &early.error {
        Some(StepError::NonRetryable(cause)) => {
            assert!(cause.contains("recipe \"web\" is not stored"), "{cause}")
        }
        other => panic!("expected a NonRetryable launch failure, got {other:?}"),
    }
    let record = env.record("sched-0").await;
    assert_eq!(record.status, BuildStatus::Failed);
    let failure = record.failure.expect("failure recorded");
    assert_eq!(failure.step, "launch");
    assert!(failure.cause.contains("not stored"), "{failure:?}");
    assert_eq!(env.live_instances(HOME, None).await, Vec::<String>::new());

    // What a push stores: the recipe document and its files.
    let pushed = request("push-1", web_recipe());
    let bundle = serde_json::from_value::<ExecutionInput>(pushed)
        .unwrap()
        .inline_bundle()
        .unwrap();
    env.builds.put_recipe("web", &bundle).await.unwrap();

    let first = run_as(&p, scheduled(), "sched-1").await;
    assert!(first.error.is_none(), "{:?}", first.error);
    assert_eq!(first.teardown["version"], json!("web@1.0"));
    let built = env.record("sched-1").await;
    assert_eq!(
        built.trigger.kind,
        bakehouse::registry::TriggerKind::Schedule
    );
    assert_eq!(built.bundle, bundle, "built from the stored recipe");
    assert!(!built.cache_hit);
    let instances = env.all_instances(HOME).await;

    let again = run_as(&p, scheduled(), "sched-2").await;
    assert!(again.error.is_none(), "{:?}", again.error);
    assert_eq!(again.teardown["version"], json!("web@1.0"));
    let hit = env.record("sched-2").await;
    assert!(hit.cache_hit);
    assert_eq!(hit.bake_key, built.bake_key);
    assert_eq!(
        env.all_instances(HOME).await,
        instances,
        "no instance launched"
    );
    assert_eq!(env.registry.list(Some("web")).await.unwrap().len(), 1);
}

#[tokio::test]
async fn registry_base_resolves_to_the_registered_image_with_lineage() {
    let env = env().await;
    let p = env.pipeline(None);
    let web = run(&p, request("web-base", web_recipe())).await;
    assert_eq!(web.teardown["version"], json!("web@1.0"));
    let web_image = env.record("web-base").await.artifacts[0].image_id.clone();

    let app = json!({
        "name": "app",
        "base": {"registry": "web@1.x"},
        "provisioners": [{"type": "shell", "inline": ["echo app"]}],
        "publish": {"regions": [HOME]}
    });
    let run = run(&p, request("app-1", app)).await;
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(run.teardown["version"], json!("app@1.0"));
    let record = env.record("app-1").await;
    assert_eq!(record.parent.as_deref(), Some("web@1.0"));
    assert_eq!(record.base_id.as_deref(), Some(web_image.as_str()));
    let package = env
        .registry
        .show("app", &"1.0".parse::<Version>().unwrap())
        .await
        .unwrap();
    assert_eq!(package.parent.as_deref(), Some("web@1.0"));
    assert_eq!(package.artifacts.len(), 1);
    assert_eq!(package.artifacts[0].region.as_deref(), Some(HOME));
    let instance = record
        .resources_of(ResourceKind::Instance)
        .next()
        .unwrap()
        .id
        .clone()
        .unwrap();
    let described = env
        .ec2(HOME)
        .describe_instances()
        .instance_ids(instance)
        .send()
        .await
        .unwrap();
    assert_eq!(
        described.reservations()[0].instances()[0].image_id(),
        Some(web_image.as_str())
    );
}

#[tokio::test]
async fn base_resolution_picks_the_newest_and_explains_what_it_cannot_use() {
    let env = env().await;
    // Image creation dates have one-second resolution in moto.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let newer = env.make_base("test-base-2024.02").await;
    let backend = env.backend();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rootfs.tar"), b"").unwrap();
    let resolve = |base: &str| {
        let yaml = format!("name: t\nbase: {base}\n");
        let recipe = parse(&yaml, Format::Yaml, &dir.path().join("t.yaml")).unwrap();
        let backend = &backend;
        let registry = &env.registry;
        async move { backend.resolve_base(&recipe, registry).await }
    };

    let found = resolve("{filter: {name: 'test-base-*', owners: [self], most_recent: true}}")
        .await
        .unwrap();
    assert_eq!(
        (found.id.as_str(), found.parent.as_deref()),
        (newer.as_str(), None)
    );
    let exact = resolve(&format!("{{image: {}}}", env.base_ami))
        .await
        .unwrap();
    assert_eq!(exact.id, env.base_ami);
    let single = resolve("{filter: {name: 'test-base-2024.01', owners: [self]}}")
        .await
        .unwrap();
    assert_eq!(single.id, env.base_ami);

    let several = resolve("{filter: {name: 'test-base-*', owners: [self]}}")
        .await
        .unwrap_err();
    assert_eq!(several.name(), "NonRetryable");
    assert!(
        several.message().starts_with(
            "base filter name=\"test-base-*\" owners=[\"self\"] matches 2 images in us-east-1 ("
        ),
        "{several}"
    );
    assert!(
        several
            .message()
            .ends_with("): set most_recent: true or narrow the filter"),
        "{several}"
    );

    let missing = resolve("{image: ami-0123456789abcdef0}").await.unwrap_err();
    assert_eq!(missing.name(), "NonRetryable");
    assert!(
        missing
            .message()
            .contains("image ami-0123456789abcdef0 does not exist in us-east-1"),
        "{missing}"
    );

    let path = resolve("{path: rootfs.tar}").await.unwrap_err();
    assert_eq!(path.name(), "NonRetryable");
    assert!(
        path.message()
            .contains("a local path base can only be built locally"),
        "{path}"
    );

    let unregistered = resolve("{registry: nothing@1.x}").await.unwrap_err();
    assert_eq!(unregistered.name(), "NonRetryable");
    assert!(unregistered.message().contains("nothing"), "{unregistered}");
}

/// `on_error: abort` (`build --remote --on-error=abort`): the failed build's
/// builder stays running and the record says where; its images are removed
/// all the same; releasing it (what `builds cleanup` runs) terminates it.
#[tokio::test]
async fn on_error_abort_keeps_the_builder_until_released() {
    let env = env().await;
    let p = env.pipeline(Some(Step::Capture));
    let id = "abort-capture";
    let mut req = request(id, web_recipe());
    req["on_error"] = json!("abort");
    let run = run(&p, req).await;
    assert_eq!(
        run.error.expect("the injected failure").name(),
        "BuildFailed"
    );
    let record = env.record(id).await;
    assert_eq!(record.status, BuildStatus::Failed);
    let live = env.live_instances(HOME, Some(id)).await;
    assert_eq!(live.len(), 1, "the builder is kept");
    assert_eq!(record.kept, Some(format!("instance {} in {HOME}", live[0])));
    assert!(record
        .resources_of(ResourceKind::Instance)
        .any(|r| !r.deleted && r.id.as_deref() == Some(live[0].as_str())));
    for region in [HOME, OTHER] {
        assert_eq!(
            env.build_images(region, id, "web").await.len(),
            0,
            "{region}"
        );
    }

    let released = p.release_kept(id).await.unwrap();
    assert_eq!(released.kept, None);
    assert_eq!(
        env.live_instances(HOME, Some(id)).await,
        Vec::<String>::new()
    );
    assert!(
        released.resources.iter().all(|r| r.deleted),
        "{:?}",
        released.resources
    );
    // Again: nothing to do.
    p.release_kept(id).await.unwrap();
}

/// With a command log group (the SAM template's), the record names it
/// before any command is sent, and `bakehouse builds logs` prints every line
/// of the streams SSM writes there: `<command id>/<instance>/<plugin>/
/// stdout|stderr`. moto's SSM neither runs commands nor writes their
/// output, so the test writes the streams as the SSM agent does, with the
/// real CloudWatch Logs API, and the real binary reads them.
#[tokio::test]
async fn remote_command_output_is_read_back_from_the_log_group() {
    const GROUP: &str = "/bakehouse/test/commands";
    let env = env().await;
    let logs = aws_sdk_cloudwatchlogs::Client::new(&env.config);
    logs.create_log_group()
        .log_group_name(GROUP)
        .send()
        .await
        .unwrap();
    let settings = Ec2Settings {
        command_log_group: Some(GROUP.into()),
        ..env.settings()
    };
    let p = env.pipeline_on(Ec2Backend::new(&env.config, settings), None);
    let run = run(&p, request("logs-1", web_recipe())).await;
    assert!(run.error.is_none(), "{:?}", run.error);
    let record = env.record("logs-1").await;
    assert_eq!(
        record.log.as_deref(),
        Some("cloudwatch-logs:us-east-1:/bakehouse/test/commands")
    );
    let builder = record
        .resources
        .iter()
        .find(|r| r.kind == ResourceKind::Instance)
        .and_then(|r| r.id.clone())
        .expect("builder instance");
    let commands: Vec<_> = record
        .resources
        .iter()
        .filter(|r| r.kind == ResourceKind::Command)
        .collect();
    assert!(commands.len() >= 2, "{:?}", record.resources);

    // The first provisioner prints 10,000 lines (the agent sends them in
    // events of 100 lines) and one line on stderr; the next command one line.
    let first = commands[0].id.clone().unwrap();
    let stream =
        |command: &str, name: &str| format!("{command}/{builder}/aws-runShellScript/{name}");
    let now = chrono::Utc::now().timestamp_millis();
    let put = |stream: String, messages: Vec<String>, at: i64| {
        let logs = logs.clone();
        async move {
            logs.create_log_stream()
                .log_group_name(GROUP)
                .log_stream_name(&stream)
                .send()
                .await
                .unwrap();
            for (i, chunk) in messages.chunks(1000).enumerate() {
                let events = chunk.iter().map(|m| {
                    aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                        .timestamp(at + i as i64)
                        .message(m)
                        .build()
                        .unwrap()
                });
                logs.put_log_events()
                    .log_group_name(GROUP)
                    .log_stream_name(&stream)
                    .set_log_events(Some(events.collect()))
                    .send()
                    .await
                    .unwrap();
            }
        }
    };
    let lines: Vec<String> = (1..=10_000).map(|i| format!("line-{i}")).collect();
    let events: Vec<String> = lines.chunks(100).map(|c| c.join("\n")).collect();
    put(stream(&first, "stdout"), events, now).await;
    put(
        stream(&first, "stderr"),
        vec!["warning: disk 91% full".into()],
        now + 500,
    )
    .await;
    let second = commands[1].id.clone().unwrap();
    put(
        stream(&second, "stdout"),
        vec!["copied /etc/motd".into()],
        now + 1000,
    )
    .await;

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bakehouse"))
        .args(["--table", TABLE, "builds", "logs", "logs-1"])
        .envs(env._guard.process_env(HOME))
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let prefix = format!("[{}] ", commands[0].name);
    let printed: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter(|l| l.starts_with("line-"))
        .collect();
    assert_eq!(printed.len(), 10_000);
    assert_eq!(printed[0], "line-1");
    assert_eq!(printed[9_999], "line-10000");
    assert!(
        text.contains(&format!("{prefix}warning: disk 91% full")),
        "stderr is printed too"
    );
    assert!(
        text.contains(&format!("[{}] copied /etc/motd", commands[1].name)),
        "every command of the build"
    );
    let order = |needle: &str| text.find(needle).unwrap();
    assert!(
        order("line-10000") < order("copied /etc/motd"),
        "in the order sent"
    );
}

/// Step Functions' side of a parked step: what `SendTaskSuccess` and
/// `SendTaskFailure` were called with.
#[derive(Default)]
struct Completions(std::sync::Mutex<Vec<(String, Result<Value, String>)>>);

#[async_trait::async_trait]
impl bakehouse::pipeline::TaskCallback for Completions {
    async fn succeed(&self, token: &str, output: Value) -> Result<(), StepError> {
        self.0.lock().unwrap().push((token.into(), Ok(output)));
        Ok(())
    }
    async fn fail(&self, token: &str, error: &str, cause: &str) -> Result<(), StepError> {
        self.0
            .lock()
            .unwrap()
            .push((token.into(), Err(format!("{error}: {cause}"))));
        Ok(())
    }
}

impl Completions {
    fn of(&self, token: &str) -> Vec<Result<Value, String>> {
        let all = self.0.lock().unwrap();
        all.iter()
            .filter(|(t, _)| t == token)
            .map(|(_, r)| r.clone())
            .collect()
    }
}

/// What invoking a step's function with `{"build_id", "wake": true}`
/// reaches: the step handler, in this process.
struct InProcess(Pipeline);

#[async_trait::async_trait]
impl bakehouse::triggers::events::StepWaker for InProcess {
    async fn wake(
        &self,
        step: Step,
        build_id: &str,
    ) -> Result<(), bakehouse::triggers::events::EventError> {
        self.0
            .invoke(step, json!({"build_id": build_id, "wake": true}))
            .await
            .map(drop)
            .map_err(|e| bakehouse::triggers::events::EventError::Wake {
                step,
                build_id: build_id.into(),
                message: e.to_string(),
            })
    }
}

fn command_event(instance: &str) -> Value {
    json!({
        "source": "aws.ssm", "region": HOME,
        "detail-type": "EC2 Command Invocation Status-change Notification",
        "detail": {"command-id": "c-1", "document-name": "AWS-RunShellScript",
                   "instance-id": instance, "status": "Success"}
    })
}

#[tokio::test]
async fn a_parked_step_is_completed_by_itself_or_by_the_event_that_wakes_it() {
    use bakehouse::triggers::events::{Events, Outcome};
    let env = env().await;
    let completions = Arc::new(Completions::default());
    let p = env.pipeline(None).with_callback(completions.clone());
    let events = Events::new(
        env.config.clone(),
        env.builds.clone(),
        Arc::new(InProcess(p.clone())),
    );
    let req = request("parked", web_recipe());
    let out = p
        .invoke(Step::Launch, json!({"request": req, "execution": "parked"}))
        .await
        .unwrap();
    assert_eq!(out["done"], json!(false), "moto's instance starts pending");
    let builder = env.live_instances(HOME, Some("parked")).await[0].clone();

    // An event while nothing is parked marks the build.
    let outcome = events.handle(&command_event(&builder)).await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Marked {
            build_id: "parked".into()
        }
    );
    assert!(env.record("parked").await.woken);

    // WaitForBuilder parked launch while the instance was pending; the
    // instance-running event wakes it, and the woken poll completes the
    // token with launch's result.
    bakehouse::build::update(env.builds.as_ref(), "parked", |r| {
        r.park_generation += 1;
        r.awaiting = Some(bakehouse::build::Awaiting {
            step: Step::Launch,
            token: "t-launch".into(),
            polls: 1,
            generation: r.park_generation,
        })
    })
    .await
    .unwrap();
    let running = json!({"source": "aws.ec2", "region": HOME,
        "detail-type": "EC2 Instance State-change Notification",
        "detail": {"instance-id": builder, "state": "running"}});
    for _ in 0..5 {
        if !completions.of("t-launch").is_empty() {
            break;
        }
        let outcome = events.handle(&running).await.unwrap();
        assert_eq!(
            outcome,
            Outcome::Woken {
                build_id: "parked".into(),
                step: Step::Launch
            }
        );
    }
    let done = completions.of("t-launch");
    assert_eq!(done.len(), 1, "completed once");
    assert_eq!(done[0].as_ref().unwrap()["done"], json!(true));
    let record = env.record("parked").await;
    assert!(record.awaiting.is_none() && !record.woken, "{record:?}");

    // WaitForProvision parks provision: moto runs commands at once, so
    // parking polls once and completes the token itself.
    let parked = p
        .invoke(
            Step::Provision,
            json!({"build_id": "parked", "polls": 0, "task_token": "t-provision"}),
        )
        .await
        .unwrap();
    assert_eq!(parked["woke"], "done", "{parked}");
    let done = completions.of("t-provision");
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].as_ref().unwrap()["done"], json!(true));
    assert!(env.record("parked").await.awaiting.is_none());

    // A token for a build that has no record: the function itself fails
    // (the state's Retry and Catch take it from there).
    let failed = p
        .invoke(
            Step::Launch,
            json!({"build_id": "no-such-build", "polls": 0, "task_token": "t-x"}),
        )
        .await;
    assert!(failed.is_err(), "no record to park on: the function fails");

    // Events about resources no build owns are ignored.
    let base = json!({"source": "aws.ec2", "region": HOME,
        "detail-type": "EC2 AMI State Change",
        "detail": {"ImageId": env.base_ami, "State": "available"}});
    assert!(matches!(
        events.handle(&base).await.unwrap(),
        Outcome::Ignored { .. }
    ));
    // ... and so are those about ids EC2 does not know (gone, or hybrid nodes)
    assert!(matches!(
        events
            .handle(&command_event("i-0123456789abcdef0"))
            .await
            .unwrap(),
        Outcome::Ignored { .. }
    ));
    let e = events
        .handle(&json!({"detail-type": "EC2 AMI State Change", "detail": {}}))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("detail.ImageId"), "{e}");
}

/// A Windows recipe: PowerShell and a file upload, a PowerShell test, two
/// publish regions (moto's base is not Windows, but EC2 and SSM see the
/// same calls as for a Windows AMI).
fn windows_recipe() -> Value {
    json!({
        "name": "win",
        "os": "windows",
        "version": {"bump": "minor"},
        "base": {"filter": {"name": "test-base-*", "owners": ["self"], "most_recent": true}},
        "builder": {"instance_type": "t3.large"},
        "provisioners": [
            {"type": "powershell", "inline": ["Install-WindowsFeature Web-Server"], "env": {"SITE": "default"}},
            {"type": "file", "source": "files/motd", "destination": "C:\\ProgramData\\motd.txt"}
        ],
        "publish": {"regions": [HOME, OTHER]},
        "test": ["if (-not (Test-Path C:\\ProgramData\\motd.txt)) { exit 1 }"]
    })
}

/// The PowerShell a command runs: the base64 here-string of the script
/// sent, decoded.
fn powershell_body(script: &str) -> String {
    let encoded: String = script
        .split("@'\n")
        .nth(1)
        .and_then(|rest| rest.split("\n'@").next())
        .expect("a payload here-string")
        .replace('\n', "");
    String::from_utf8(BASE64.decode(encoded).unwrap()).unwrap()
}

#[tokio::test]
async fn a_windows_recipe_is_provisioned_with_powershell_syspreped_captured_and_tested() {
    let env = env().await;
    let p = env.pipeline(None);
    let run = run(&p, request("win-1", windows_recipe())).await;
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(run.teardown["status"], json!("SUCCEEDED"));

    // Every command went through AWS-RunPowerShellScript, in order: the two
    // provisioners, clean + sysprep on the builder, the test on the test
    // instance (no Linux clean check).
    let ssm = aws_sdk_ssm::Client::new(&env.config);
    let listed = ssm.list_commands().send().await.unwrap();
    let mut commands: Vec<_> = listed.commands().to_vec();
    commands.sort_by_key(|c| c.requested_date_time().map(|t| t.as_nanos()));
    let documents: Vec<&str> = commands.iter().filter_map(|c| c.document_name()).collect();
    assert_eq!(documents, ["AWS-RunPowerShellScript"; 4]);
    let bodies: Vec<String> = commands
        .iter()
        .map(|c| {
            let script = &c.parameters().unwrap()["commands"][0];
            powershell_body(script)
        })
        .collect();
    assert!(
        bodies[0].contains("Install-WindowsFeature Web-Server"),
        "{}",
        bodies[0]
    );
    assert_eq!(bodies[1], MOTD, "the file's content");
    assert!(bodies[2].contains("bakehouse-clean: done"), "{}", bodies[2]);
    assert!(
        bodies[2].contains("sysprep --clean=true --shutdown=false"),
        "{}",
        bodies[2]
    );
    assert!(bodies[3].contains("Test-Path C:\\ProgramData\\motd.txt"));
    // (moto's ListCommands ignores its instance filter; the ledger says
    // which command ran where)
    let record = env.record("win-1").await;
    let ledger: Vec<&str> = record
        .resources_of(ResourceKind::Command)
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(
        ledger,
        [
            "provision/1-powershell",
            "provision/2-file",
            "clean",
            "test/1"
        ]
    );

    // Captured, copied and registered as a Windows image; nothing left running.
    let package = env
        .registry
        .show("win", &"1.0".parse::<Version>().unwrap())
        .await
        .unwrap();
    assert_eq!(package.os, bakehouse::registry::Os::Windows);
    assert_eq!(package.artifacts.len(), 2);
    for region in [HOME, OTHER] {
        assert_eq!(env.build_images(region, "win-1", "win").await.len(), 1);
        assert!(env.live_instances(region, Some("win-1")).await.is_empty());
    }
}

#[tokio::test]
async fn windows_failure_at_launch_cleans_up() {
    failure_of_recipe_cleans_up(Step::Launch, windows_recipe()).await;
}

#[tokio::test]
async fn windows_failure_at_provision_cleans_up() {
    failure_of_recipe_cleans_up(Step::Provision, windows_recipe()).await;
}

#[tokio::test]
async fn windows_failure_at_clean_cleans_up() {
    failure_of_recipe_cleans_up(Step::Clean, windows_recipe()).await;
}

#[tokio::test]
async fn windows_failure_at_capture_cleans_up() {
    failure_of_recipe_cleans_up(Step::Capture, windows_recipe()).await;
}

#[tokio::test]
async fn windows_failure_at_test_cleans_up() {
    failure_of_recipe_cleans_up(Step::Test, windows_recipe()).await;
}

#[tokio::test]
async fn windows_failure_at_register_cleans_up() {
    failure_of_recipe_cleans_up(Step::Register, windows_recipe()).await;
}

/// Passes every Task to the step handlers, but changes the first result of
/// one resource: a step that returns something the definition cannot route
/// (the States.Runtime and quota hazards of the deployed definition).
struct Corrupting {
    inner: bakehouse::pipeline::local::StepInvoker,
    resource: &'static str,
    corrupt: fn(Value) -> Value,
    done: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl bakehouse::asl::TaskInvoker for Corrupting {
    async fn invoke(
        &self,
        resource: &str,
        input: Value,
    ) -> Result<Value, bakehouse::asl::TaskFailure> {
        let out = self.inner.invoke(resource, input).await?;
        if resource == self.resource && !self.done.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Ok((self.corrupt)(out));
        }
        Ok(out)
    }
}

/// Runs a build whose `resource` returns `corrupt(result)` once; returns the
/// execution.
async fn run_corrupted(
    env: &Env,
    id: &str,
    resource: &'static str,
    corrupt: fn(Value) -> Value,
) -> bakehouse::asl::Execution {
    let p = env.pipeline(None);
    let clock = Arc::new(VirtualClock::new(chrono::Utc::now()));
    let tokens = bakehouse::asl::TaskTokens::default();
    let inner = bakehouse::pipeline::local::StepInvoker::new(p, clock.clone(), tokens.clone());
    let invoker = Corrupting {
        inner,
        resource,
        corrupt,
        done: Default::default(),
    };
    let machine = bakehouse::pipeline::local::load_definition().unwrap();
    bakehouse::asl::Runner::new(machine, Arc::new(invoker), clock)
        .with_task_tokens(tokens)
        .execute(id, json!({"recipe": web_recipe(), "files": {"files/motd": {"content": BASE64.encode(MOTD)}}, "build_id": id}))
        .await
}

#[tokio::test]
async fn results_the_definition_cannot_route_still_tear_the_builder_down() {
    let env = env().await;
    // (build id, resource, corruption, error, part of the cause)
    type Hazard = (
        &'static str,
        &'static str,
        fn(Value) -> Value,
        &'static str,
        &'static str,
    );
    let hazards: [Hazard; 3] = [
        (
            "no-cache-hit",
            "bakehouse:launch",
            |mut v| {
                v.as_object_mut().unwrap().remove("cache_hit");
                v
            },
            "MalformedStepResult",
            "without build_id, done",
        ),
        (
            "no-done",
            "bakehouse:provision",
            |mut v| {
                v.as_object_mut().unwrap().remove("done");
                v
            },
            "MalformedStepResult",
            "without build_id, done",
        ),
        (
            "over-quota",
            "bakehouse:provision",
            |mut v| {
                v["log"] = Value::String("x".repeat(bakehouse::asl::PAYLOAD_LIMIT_BYTES));
                v
            },
            "States.DataLimitExceeded",
            "'Provision'",
        ),
    ];
    for (id, resource, corrupt, error, cause) in hazards {
        let execution = run_corrupted(&env, id, resource, corrupt).await;
        assert!(!execution.succeeded(), "{id}");
        // The state machine itself tore down: no builder left, the record
        // FAILED and naming the cause (the reaper is not needed).
        assert_eq!(
            env.live_instances(HOME, Some(id)).await,
            Vec::<String>::new(),
            "{id}"
        );
        let record = env.record(id).await;
        assert_eq!(record.status, BuildStatus::Failed, "{id}");
        assert!(
            record.resources_of(ResourceKind::Instance).count() >= 1,
            "{id}: the builder was launched"
        );
        let failure = record.failure.expect("failure recorded");
        assert_eq!(failure.error, error, "{id}");
        assert!(failure.cause.contains(cause), "{id}: {}", failure.cause);
    }
}
