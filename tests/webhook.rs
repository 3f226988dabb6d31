//! The push webhook against moto (SSM, DynamoDB, Step Functions, Scheduler)
//! and a fixture repository served through the GitHub and GitLab APIs.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_lambda_events::lambda_function_urls::LambdaFunctionUrlRequest;
use aws_sdk_scheduler::operation::get_schedule::GetScheduleError;
use aws_sdk_ssm::types::ParameterType;
use bakehouse::build::{BuildStore, DynamoBuildStore};
use bakehouse::pipeline::io::{ExecutionInput, RecipeSpec, TriggerSpec};
use bakehouse::registry::{DynamoStore, TriggerKind};
use bakehouse::testing::{moto, MotoGuard};
use bakehouse::triggers::webhook::{Webhook, WebhookSettings};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use support::gitserver::{GitServer, C2, C3};

const SECRET: &str = "It's a Secret to Everybody";
const TOKEN: &str = "glpat-or-ghp-token-123";
const REGION: &str = "us-east-1";
const GROUP: &str = "bakehouse-recipes";
const SCHEDULER_ROLE: &str = "arn:aws:iam::123456789012:role/bakehouse-scheduler";

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/webhook/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn sign(key: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes()).expect("key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A function URL event (payload format 2.0) as Lambda delivers it.
fn request(headers: &[(&str, &str)], body: &str, base64: bool) -> LambdaFunctionUrlRequest {
    let headers: BTreeMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect();
    let body = if base64 {
        BASE64.encode(body)
    } else {
        body.to_string()
    };
    serde_json::from_value(json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/",
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "abcdefghij",
            "domainName": "abcdefghij.lambda-url.us-east-1.on.aws",
            "domainPrefix": "abcdefghij",
            "http": {"method": "POST", "path": "/", "protocol": "HTTP/1.1", "sourceIp": "140.82.115.1", "userAgent": "GitHub-Hookshot/044aadd"},
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "routeKey": "$default",
            "stage": "$default",
            "time": "12/Mar/2024:19:03:58 +0000",
            "timeEpoch": 1710270238000u64
        },
        "body": body,
        "isBase64Encoded": base64
    }))
    .expect("function URL event")
}

fn github(event: &str, signature: Option<&str>, body: &str) -> LambdaFunctionUrlRequest {
    let mut headers = vec![
        ("Content-Type", "application/json"),
        ("User-Agent", "GitHub-Hookshot/044aadd"),
        ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ("X-GitHub-Event", event),
        ("X-GitHub-Hook-ID", "292430182"),
    ];
    if let Some(s) = signature {
        headers.push(("X-Hub-Signature-256", s));
    }
    request(&headers, body, false)
}

fn signed_github(event: &str, body: &str) -> LambdaFunctionUrlRequest {
    github(event, Some(&sign(SECRET, body.as_bytes())), body)
}

fn gitlab(event: &str, token: Option<&str>, body: &str) -> LambdaFunctionUrlRequest {
    let mut headers = vec![
        ("Content-Type", "application/json"),
        ("User-Agent", "GitLab/16.11.0"),
        ("X-Gitlab-Event", event),
        (
            "X-Gitlab-Event-UUID",
            "13792a34-cac6-4fda-95a8-c58e00a3954e",
        ),
        ("X-Gitlab-Instance", "https://gitlab.example.com"),
    ];
    if let Some(t) = token {
        headers.push(("X-Gitlab-Token", t));
    }
    request(&headers, body, false)
}

struct Env {
    _guard: MotoGuard,
    _scratch: tempfile::TempDir,
    sfn: aws_sdk_sfn::Client,
    scheduler: aws_sdk_scheduler::Client,
    store: Arc<DynamoBuildStore>,
    machine: String,
    git: GitServer,
    webhook: Webhook,
}

async fn setup(provider: &str) -> Env {
    let guard = moto().await.expect("moto server (run `make setup`)");
    let sdk = guard.sdk_config(REGION).await;
    let ssm = aws_sdk_ssm::Client::new(&sdk);
    for (name, value) in [
        ("/bakehouse/webhook-secret", SECRET),
        ("/bakehouse/git-token", TOKEN),
    ] {
        ssm.put_parameter()
            .name(name)
            .value(value)
            .r#type(ParameterType::SecureString)
            .send()
            .await
            .expect("put parameter");
    }
    DynamoStore::new(&sdk, "bakehouse")
        .create_table()
        .await
        .expect("table");
    let sfn = aws_sdk_sfn::Client::new(&sdk);
    let machine = sfn
        .create_state_machine()
        .name("bakehouse-pipeline")
        .role_arn("arn:aws:iam::123456789012:role/bakehouse-pipeline")
        .definition(r#"{"StartAt":"Build","States":{"Build":{"Type":"Pass","End":true}}}"#)
        .send()
        .await
        .expect("state machine")
        .state_machine_arn;
    let scheduler = aws_sdk_scheduler::Client::new(&sdk);
    scheduler
        .create_schedule_group()
        .name(GROUP)
        .send()
        .await
        .expect("schedule group");
    let git = GitServer::start(Some(TOKEN));
    let scratch = tempfile::tempdir().expect("scratch");
    let api = if provider == "gitlab" {
        git.gitlab_url()
    } else {
        git.github_url()
    };
    let vars: BTreeMap<String, String> = [
        ("BAKEHOUSE_TABLE", "bakehouse".to_string()),
        ("BAKEHOUSE_STATE_MACHINE_ARN", machine.clone()),
        (
            "BAKEHOUSE_WEBHOOK_SECRET_PARAMETER",
            "/bakehouse/webhook-secret".into(),
        ),
        (
            "BAKEHOUSE_GIT_TOKEN_PARAMETER",
            "/bakehouse/git-token".into(),
        ),
        ("BAKEHOUSE_SCHEDULER_ROLE_ARN", SCHEDULER_ROLE.into()),
        ("BAKEHOUSE_SCHEDULE_GROUP", GROUP.into()),
        ("BAKEHOUSE_GIT_PROVIDER", provider.into()),
        ("BAKEHOUSE_GIT_API_URL", api),
        (
            "BAKEHOUSE_SCRATCH_DIR",
            scratch.path().display().to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let settings =
        WebhookSettings::from_vars(&bakehouse::config::EnvVars::from_map(vars)).expect("settings");
    assert_eq!(settings.screen.branch, "main");
    assert_eq!(settings.recipes_dir, "recipes");
    let webhook = Webhook::from_settings(&sdk, settings)
        .await
        .expect("webhook");
    let store = Arc::new(DynamoBuildStore::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        "bakehouse",
    ));
    Env {
        _guard: guard,
        _scratch: scratch,
        sfn,
        scheduler,
        store,
        machine,
        git,
        webhook,
    }
}

impl Env {
    /// Execution names, sorted, and their ARNs.
    async fn executions(&self) -> BTreeMap<String, String> {
        self.sfn
            .list_executions()
            .state_machine_arn(&self.machine)
            .send()
            .await
            .expect("list executions")
            .executions
            .into_iter()
            .map(|e| (e.name, e.execution_arn))
            .collect()
    }

    /// The input of an execution, checked against the documented schema.
    async fn input_of(&self, arn: &str) -> ExecutionInput {
        let out = self
            .sfn
            .describe_execution()
            .execution_arn(arn)
            .send()
            .await
            .expect("describe execution");
        let input: Value =
            serde_json::from_str(out.input.as_deref().unwrap_or_default()).expect("json");
        let schema_path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/statemachines/input.schema.json"
        );
        let schema: Value =
            serde_json::from_str(&std::fs::read_to_string(schema_path).expect("schema"))
                .expect("schema json");
        let validator = jsonschema::draft202012::new(&schema).expect("schema compiles");
        let errors: Vec<String> = validator
            .iter_errors(&input)
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "input does not match the schema: {errors:?}"
        );
        serde_json::from_value(input).expect("execution input")
    }

    /// (expression, target input, role) of a recipe's schedule, if any.
    async fn schedule(&self, recipe: &str) -> Option<(String, String, String)> {
        match self
            .scheduler
            .get_schedule()
            .name(recipe)
            .group_name(GROUP)
            .send()
            .await
        {
            Ok(out) => {
                let target = out.target.expect("target");
                Some((
                    out.schedule_expression.unwrap_or_default(),
                    target.input.unwrap_or_default(),
                    target.role_arn,
                ))
            }
            Err(e) => match e.into_service_error() {
                GetScheduleError::ResourceNotFoundException(_) => None,
                other => panic!("get schedule: {other}"),
            },
        }
    }
}

fn names(map: &BTreeMap<String, String>) -> Vec<&str> {
    map.keys().map(String::as_str).collect()
}

#[tokio::test]
async fn github_push_starts_exactly_the_affected_recipes() {
    let env = setup("github").await;
    let body = fixture("github-push.json");
    let answer = env.webhook.answer(&signed_github("push", &body)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    let short = &C2[..12];
    let started = env.executions().await;
    assert_eq!(
        names(&started),
        [format!("api-{short}"), format!("web-{short}")]
    );

    // The report says why, and names the invalid recipe it skipped.
    let recipes: Vec<(&str, &str)> = answer.body["recipes"]
        .as_array()
        .expect("recipes")
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or(""),
                r["schedule"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(recipes, [("api", "none"), ("web", "created")]);
    assert_eq!(
        answer.body["recipes"][1]["because"],
        json!([
            "recipes/files/web/home.html",
            "recipes/files/web/index.html"
        ])
    );
    assert_eq!(answer.body["invalid"][0]["path"], "recipes/broken.yaml");
    assert!(answer.body["invalid"][0]["reason"]
        .as_str()
        .unwrap_or("")
        .contains("provisoners"));
    assert_eq!(answer.body["errors"], json!([]));

    // The build is of exactly the pushed commit, inline, with its trigger.
    let input = env.input_of(&started[&format!("web-{short}")]).await;
    let RecipeSpec::Inline(recipe) = &input.recipe else {
        panic!("recipe not inline")
    };
    assert_eq!(recipe["name"], "web");
    let html = input
        .files
        .get("files/web/index.html")
        .expect("index.html bundled");
    assert_eq!(
        BASE64.decode(&html.content).expect("base64"),
        b"<h1>v2</h1>\n"
    );
    assert!(input.files["scripts/web-setup.sh"].executable);
    let link = &input.files["files/web/home.html"];
    assert_eq!(link.link.as_deref(), Some("index.html"));
    assert_eq!(link.content, "");
    let TriggerSpec::Full(trigger) = &input.trigger else {
        panic!("trigger kind only")
    };
    assert_eq!(trigger.kind, TriggerKind::Push);
    assert_eq!(trigger.commit.as_deref(), Some(C2));
    assert_eq!(
        trigger.repository.as_deref(),
        Some("octo-org/golden-images")
    );
    assert_eq!(trigger.git_ref.as_deref(), Some("refs/heads/main"));
    assert_eq!(trigger.actor.as_deref(), Some("octocat"));
    assert!(!input.force);

    // Stored for schedules; a schedule for the recipe that has one.
    let stored = env
        .store
        .get_recipe("web")
        .await
        .expect("store")
        .expect("web stored");
    assert_eq!(stored.recipe["schedule"], "cron(0 4 ? * MON *)");
    assert!(env.store.get_recipe("api").await.expect("store").is_some());
    assert!(env
        .store
        .get_recipe("nightly")
        .await
        .expect("store")
        .is_none());
    assert!(env
        .store
        .get_recipe("broken")
        .await
        .expect("store")
        .is_none());
    let (expression, target_input, role) = env.schedule("web").await.expect("web schedule");
    assert_eq!(expression, "cron(0 4 ? * MON *)");
    assert_eq!(
        serde_json::from_str::<Value>(&target_input).expect("json"),
        json!({"recipe": "web", "trigger": "schedule"})
    );
    assert_eq!(role, SCHEDULER_ROLE);
    assert_eq!(env.schedule("api").await, None);

    // Everything was read at the pushed commit, with the token from SSM.
    let seen = env.git.seen();
    assert!(seen.iter().all(|s| s.status != 401), "{seen:?}");
    assert!(seen
        .iter()
        .any(|s| s.path.contains(&format!("git/trees/{C2}"))));
    assert!(seen
        .iter()
        .filter(|s| s.path.contains("/contents/"))
        .all(|s| s.path.ends_with(&format!("ref={C2}"))));
}

#[tokio::test]
async fn a_redelivered_push_starts_nothing_new() {
    let env = setup("github").await;
    let body = fixture("github-push.json");
    let first = env.webhook.answer(&signed_github("push", &body)).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let before = env.executions().await;
    assert_eq!(before.len(), 2);

    // GitHub's "Redeliver": the same body and signature (here base64-encoded
    // by the function URL).
    let mut again = signed_github("push", &body);
    again.body = Some(BASE64.encode(&body));
    again.is_base64_encoded = true;
    let second = env.webhook.answer(&again).await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(env.executions().await, before);
    let arns: Vec<&str> = second.body["recipes"]
        .as_array()
        .expect("recipes")
        .iter()
        .map(|r| r["execution_arn"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        arns,
        before.values().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(second.body["recipes"][1]["schedule"], "unchanged");
}

#[tokio::test]
async fn removing_a_recipe_deletes_its_schedule_and_stored_recipe() {
    let env = setup("github").await;
    let first = env
        .webhook
        .answer(&signed_github("push", &fixture("github-push.json")))
        .await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert!(env.schedule("web").await.is_some());

    env.git.set_head(C3);
    let second = env
        .webhook
        .answer(&signed_github("push", &fixture("github-push-remove.json")))
        .await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(second.body["stale"], false);
    assert_eq!(second.body["removed"], json!(["web"]));
    assert_eq!(env.schedule("web").await, None);
    assert!(env.store.get_recipe("web").await.expect("store").is_none());

    // nightly was modified to gain a schedule: built and scheduled.
    let (expression, _, _) = env.schedule("nightly").await.expect("nightly schedule");
    assert_eq!(expression, "rate(1 day)");
    let started = env.executions().await;
    let short2 = &C2[..12];
    let short3 = &C3[..12];
    assert_eq!(
        names(&started),
        [
            format!("api-{short2}"),
            format!("nightly-{short3}"),
            format!("web-{short2}")
        ]
    );

    // The first push redelivered now, with main at C3: it starts nothing
    // new and brings back neither the stored web recipe nor its schedule.
    let late = env
        .webhook
        .answer(&signed_github("push", &fixture("github-push.json")))
        .await;
    assert_eq!(late.status, 200, "{}", late.body);
    assert_eq!(late.body["stale"], true);
    assert_eq!(late.body["recipes"][1]["schedule"], "stale");
    assert_eq!(env.executions().await, started);
    assert_eq!(env.schedule("web").await, None);
    assert!(env.store.get_recipe("web").await.expect("store").is_none());
}

#[tokio::test]
async fn rejected_and_ignored_deliveries_start_nothing() {
    let env = setup("github").await;
    let body = fixture("github-push.json");
    let good = sign(SECRET, body.as_bytes());
    let other_body = sign(SECRET, b"{}");
    let wrong_secret = sign("not the secret", body.as_bytes());
    let truncated = good[..good.len() - 8].to_string();
    let big = format!("{}{}", body, " ".repeat(1024 * 1024));
    let big_signature = sign(SECRET, big.as_bytes());
    let ping = fixture("github-ping.json");
    let branch = fixture("github-push-other-branch.json");

    let cases: Vec<(&str, LambdaFunctionUrlRequest, u16)> = vec![
        (
            "bad signature",
            github("push", Some(&other_body), &body),
            401,
        ),
        (
            "wrong secret",
            github("push", Some(&wrong_secret), &body),
            401,
        ),
        (
            "truncated signature",
            github("push", Some(&truncated), &body),
            401,
        ),
        ("missing signature", github("push", None, &body), 401),
        ("ping", signed_github("ping", &ping), 202),
        ("other branch", signed_github("push", &branch), 202),
        (
            "oversized body",
            github("push", Some(&big_signature), &big),
            413,
        ),
    ];
    for (what, req, status) in cases {
        let answer = env.webhook.answer(&req).await;
        assert_eq!(answer.status, status, "{what}: {}", answer.body);
        let reason = answer.body["reason"].as_str().unwrap_or_default();
        assert!(!reason.is_empty(), "{what}: no reason");
    }
    assert!(env.executions().await.is_empty());
    assert_eq!(env.schedule("web").await, None);
    assert!(env.store.get_recipe("web").await.expect("store").is_none());
    assert!(
        env.git.seen().is_empty(),
        "nothing was read: {:?}",
        env.git.seen()
    );
}

#[tokio::test]
async fn gitlab_push_starts_the_affected_recipes() {
    let env = setup("gitlab").await;
    let body = fixture("gitlab-push.json");

    let wrong = env
        .webhook
        .answer(&gitlab("Push Hook", Some("guess"), &body))
        .await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    let missing = env.webhook.answer(&gitlab("Push Hook", None, &body)).await;
    assert_eq!(missing.status, 401, "{}", missing.body);
    let tag = env
        .webhook
        .answer(&gitlab(
            "Tag Push Hook",
            Some(SECRET),
            &fixture("gitlab-tag-push.json"),
        ))
        .await;
    assert_eq!(tag.status, 202, "{}", tag.body);
    assert!(env.executions().await.is_empty());

    let answer = env
        .webhook
        .answer(&gitlab("Push Hook", Some(SECRET), &body))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let short = &C2[..12];
    let started = env.executions().await;
    assert_eq!(
        names(&started),
        [format!("api-{short}"), format!("web-{short}")]
    );
    let input = env.input_of(&started[&format!("api-{short}")]).await;
    let TriggerSpec::Full(trigger) = &input.trigger else {
        panic!("trigger kind only")
    };
    assert_eq!(
        trigger.repository.as_deref(),
        Some("platform/golden-images")
    );
    assert_eq!(trigger.actor.as_deref(), Some("jsmith"));
    assert!(!input.files["scripts/api.sh"].executable);
    let web = env.input_of(&started[&format!("web-{short}")]).await;
    assert_eq!(
        web.files["files/web/home.html"].link.as_deref(),
        Some("index.html")
    );
    assert!(web.files["scripts/web-setup.sh"].executable);
    assert_eq!(
        env.schedule("web").await.map(|s| s.0).as_deref(),
        Some("cron(0 4 ? * MON *)")
    );
    // The tree was read page by page.
    assert!(env.git.seen().iter().any(|s| s.path.contains("page=2")));
}
