//! Retention in AWS: `bakehouse --table T image prune` (the same
//! `Lifecycle::run` the lifecycle function calls) against a moto server,
//! with real SDK clients: AMIs in two regions with their snapshots, the
//! registry and build records on one DynamoDB table.

mod support;

use std::process::Command;

use bakehouse::build::{BuildStore, DynamoBuildStore};
use bakehouse::registry::{
    AddRequest, Artifact, DynamoStore, Lookup, Os, Provider, Registry, ResolveQuery, Status,
    VersionChoice, VersionPattern,
};
use bakehouse::testing::moto;
use serde_json::{json, Value};

const TABLE: &str = "lifecycle-test";
const REGIONS: [&str; 2] = ["us-east-1", "eu-west-1"];

/// An AMI made from an instance in `region` and its snapshot.
async fn make_image(sdk: &aws_config::SdkConfig, region: &str, name: &str) -> (String, String) {
    let ec2 = aws_sdk_ec2::Client::new(&bakehouse::aws::in_region(sdk, region));
    let image = support::image_from_instance(&ec2, name).await;
    let described = ec2
        .describe_images()
        .image_ids(&image)
        .send()
        .await
        .unwrap();
    let snapshot = described.images()[0].block_device_mappings()[0]
        .ebs()
        .and_then(|e| e.snapshot_id())
        .unwrap()
        .to_string();
    (image, snapshot)
}

async fn exists(
    sdk: &aws_config::SdkConfig,
    region: &str,
    image: &str,
    snapshot: &str,
) -> (bool, bool) {
    let ec2 = aws_sdk_ec2::Client::new(&bakehouse::aws::in_region(sdk, region));
    let image = ec2
        .describe_images()
        .image_ids(image)
        .send()
        .await
        .is_ok_and(|o| !o.images().is_empty());
    let snapshot = ec2
        .describe_snapshots()
        .snapshot_ids(snapshot)
        .send()
        .await
        .is_ok_and(|o| !o.snapshots().is_empty());
    (image, snapshot)
}

/// Registers one version of `name` with an AMI in each region, built by
/// `build_id` from `parent`; returns `(region, image, snapshot)` for each.
async fn register(
    sdk: &aws_config::SdkConfig,
    registry: &Registry,
    name: &str,
    build_id: &str,
    parent: Option<&str>,
) -> Vec<(String, String, String)> {
    let mut artifacts = Vec::new();
    let mut made = Vec::new();
    for region in REGIONS {
        let (image, snapshot) = make_image(sdk, region, &format!("{name}-{build_id}")).await;
        artifacts.push(Artifact {
            name: format!("aws/{region}"),
            provider: Provider::Aws,
            region: Some(region.into()),
            image_id: image.clone(),
            account: None,
            path: None,
        });
        made.push((region.to_string(), image, snapshot));
    }
    let mut req = AddRequest::new(name, Os::Linux, artifacts);
    req.version = VersionChoice::Bump(bakehouse::registry::BumpPart::Minor);
    req.build_id = Some(build_id.into());
    req.parent = parent.map(str::to_string);
    registry.add(req).await.unwrap();
    made
}

#[tokio::test]
async fn retain_deregisters_old_amis_in_every_region_and_deletes_their_snapshots() {
    let moto = moto().await.unwrap();
    let sdk = moto.sdk_config("us-east-1").await;
    let store = DynamoStore::new(&sdk, TABLE);
    store.create_table().await.unwrap();
    let builds = DynamoBuildStore::new(store.client().clone(), TABLE);
    let registry = Registry::new(std::sync::Arc::new(store));

    // base: three versions, keep one; web@1.4 is built from base@1.1.
    let mut base = Vec::new();
    for i in 0..3 {
        base.push(register(&sdk, &registry, "base", &format!("base-b{i}"), None).await);
    }
    let base_recipe =
        json!({"name": "base", "base": {"image": "ami-12345678"}, "retain": {"versions": 1}});
    builds
        .create(&support::build_record(
            "base-b2",
            base_recipe,
            bakehouse::registry::TriggerKind::Push,
            5,
        ))
        .await
        .unwrap();
    // web: five versions (1.0 .. 1.4), keep two.
    let mut web = Vec::new();
    for i in 0..5 {
        let parent = (i == 4).then_some("base@1.1");
        web.push(register(&sdk, &registry, "web", &format!("web-b{i}"), parent).await);
    }
    let web_recipe =
        json!({"name": "web", "base": {"registry": "base"}, "retain": {"versions": 2}});
    builds
        .create(&support::build_record(
            "web-b4",
            web_recipe,
            bakehouse::registry::TriggerKind::Push,
            1,
        ))
        .await
        .unwrap();

    let env = moto.process_env("us-east-1");
    let prune = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_bakehouse"))
            .args(["--table", TABLE, "--json", "image", "prune"])
            .args(args)
            .envs(env.clone())
            .env_remove("AWS_PROFILE")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let statuses = || async {
        let mut s = Vec::new();
        for p in registry.list(None).await.unwrap() {
            s.push(format!("{}@{} {}", p.name, p.version, p.status));
        }
        s.sort();
        s
    };
    let all_present = || async {
        let mut n = 0;
        for (region, image, snapshot) in base.iter().chain(&web).flatten() {
            if exists(&sdk, region, image, snapshot).await == (true, true) {
                n += 1;
            }
        }
        n
    };
    let before = statuses().await;
    assert_eq!(all_present().await, 16);

    // --dry-run decides and changes nothing.
    let dry = prune(&["--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    let deleting: Vec<&str> = dry["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["action"] == "delete")
        .filter_map(|d| d["version"].as_str())
        .collect();
    assert_eq!(deleting, ["base@1.0", "web@1.2", "web@1.1", "web@1.0"]);
    assert_eq!(dry["actions"], json!([]));
    assert_eq!(statuses().await, before);
    assert_eq!(all_present().await, 16);

    // The run: the three old web versions lose their AMIs and snapshots in
    // both regions; base@1.1 stays as web@1.4's parent.
    let report = prune(&[]);
    assert_eq!(report["skipped"], json!([]), "{report:#}");
    let kept = report["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["version"] == "base@1.1")
        .unwrap();
    assert_eq!(kept["action"], Value::Null);
    for (versions, gone) in [(&web, 0..3), (&base, 0..1)] {
        for made in &versions[gone] {
            for (region, image, snapshot) in made {
                assert_eq!(
                    exists(&sdk, region, image, snapshot).await,
                    (false, false),
                    "{image} in {region}"
                );
            }
        }
    }
    for made in web[3..].iter().chain(&base[1..]) {
        for (region, image, snapshot) in made {
            assert_eq!(
                exists(&sdk, region, image, snapshot).await,
                (true, true),
                "{image} in {region}"
            );
        }
    }
    let actions = report["actions"].as_array().unwrap();
    // per deleted version: 2 images, 2 snapshots, 1 status change
    assert_eq!(actions.len(), 4 * 5, "{report:#}");
    assert_eq!(
        statuses().await,
        [
            "base@1.0 deleted",
            "base@1.1 active",
            "base@1.2 active",
            "web@1.0 deleted",
            "web@1.1 deleted",
            "web@1.2 deleted",
            "web@1.3 active",
            "web@1.4 active",
        ]
    );
    // A deleted version is never resolved, even when asked for inactive
    // ones, and cannot be made active again.
    let query = ResolveQuery {
        lookup: Lookup::Name("web".into()),
        pattern: VersionPattern::Exact("1.1".parse().unwrap()),
        include_inactive: true,
        provider: None,
        region: None,
    };
    assert!(registry.resolve(&query).await.is_err());
    let again = registry
        .set_status("web", &"1.1".parse().unwrap(), Status::Active)
        .await
        .unwrap_err();
    assert!(
        again
            .to_string()
            .contains("deleted by its retention policy"),
        "{again}"
    );

    // A second run changes nothing.
    let second = prune(&[]);
    assert_eq!(second["actions"], json!([]), "{second:#}");
    assert_eq!(statuses().await.len(), 8);
}
