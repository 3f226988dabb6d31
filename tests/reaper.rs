//! The reaper against moto: builders of finished or expired builds are
//! terminated, those of running builds kept, failed builds' images removed.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_sdk_ec2::types::{InstanceStateName, ResourceType, Tag, TagSpecification};
use bakehouse::build::{BuildRecord, BuildStatus, BuildStore, DynamoBuildStore, ResourceKind};
use bakehouse::registry::{DynamoStore, TriggerKind};
use bakehouse::testing::moto;
use bakehouse::triggers::reaper::{Reaper, ReaperSettings, Reason, BUILD_TAG};
use chrono::{Duration, Utc};
use serde_json::json;
use support::build_record;

const REGION: &str = "us-east-1";
const AMI: &str = "ami-12c6146b";

async fn launch(ec2: &aws_sdk_ec2::Client, build: Option<&str>) -> String {
    let mut req = ec2.run_instances().image_id(AMI).min_count(1).max_count(1);
    if let Some(b) = build {
        req = req.tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Instance)
                .tags(Tag::builder().key(BUILD_TAG).value(b).build())
                .build(),
        );
    }
    let out = req.send().await.expect("run instances");
    out.instances()[0].instance_id().expect("id").to_string()
}

fn record(id: &str, status: BuildStatus, minutes_ago: i64, limit: Option<u32>) -> BuildRecord {
    let mut recipe = json!({"name": id, "base": {"image": AMI}});
    if let Some(l) = limit {
        recipe["builder"] = json!({"time_limit_minutes": l});
    }
    let mut r = build_record(id, recipe, TriggerKind::Console, minutes_ago);
    r.status = status;
    r
}

async fn states(ec2: &aws_sdk_ec2::Client) -> BTreeMap<String, InstanceStateName> {
    let out = ec2.describe_instances().send().await.expect("describe");
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .map(|i| {
            (
                i.instance_id().unwrap_or_default().to_string(),
                i.state().and_then(|s| s.name()).cloned().expect("state"),
            )
        })
        .collect()
}

#[tokio::test]
async fn reaper_terminates_finished_and_expired_builders_and_keeps_running_ones() {
    let guard = moto().await.expect("moto server (run `make setup`)");
    let sdk = guard.sdk_config(REGION).await;
    DynamoStore::new(&sdk, "bakehouse")
        .create_table()
        .await
        .expect("table");
    let store = Arc::new(DynamoBuildStore::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        "bakehouse",
    ));
    let ec2 = aws_sdk_ec2::Client::new(&sdk);

    let done = launch(&ec2, Some("b-done")).await;
    let failed = launch(&ec2, Some("b-failed")).await;
    let running = launch(&ec2, Some("b-running")).await;
    let expired = launch(&ec2, Some("b-expired")).await;
    let orphan = launch(&ec2, Some("b-ghost")).await;
    let untagged = launch(&ec2, None).await;

    // The failed build left an image and a snapshot behind.
    let image = ec2
        .create_image()
        .instance_id(&failed)
        .name("bakehouse-b-failed")
        .send()
        .await
        .expect("create image")
        .image_id
        .expect("image id");
    let volume = ec2
        .create_volume()
        .availability_zone(format!("{REGION}a"))
        .size(8)
        .send()
        .await
        .expect("volume")
        .volume_id
        .expect("volume id");
    let snapshot = ec2
        .create_snapshot()
        .volume_id(&volume)
        .send()
        .await
        .expect("snapshot")
        .snapshot_id
        .expect("snapshot id");

    let mut r = record("b-done", BuildStatus::Succeeded, 30, None);
    r.plan(ResourceKind::Instance, "builder", Some(REGION));
    r.created(ResourceKind::Instance, "builder", &done);
    store.create(&r).await.expect("create");
    let mut r = record("b-failed", BuildStatus::Failed, 30, None);
    r.plan(ResourceKind::Image, "image", Some(REGION));
    r.created(ResourceKind::Image, "image", &image);
    r.plan(ResourceKind::Snapshot, "snapshot", Some(REGION));
    r.created(ResourceKind::Snapshot, "snapshot", &snapshot);
    store.create(&r).await.expect("create");
    store
        .create(&record("b-running", BuildStatus::Running, 10, Some(60)))
        .await
        .expect("create");
    store
        .create(&record("b-expired", BuildStatus::Running, 300, None))
        .await
        .expect("create");

    let reaper = Reaper::new(&sdk, store.clone(), ReaperSettings::default());
    let report = reaper.run(Utc::now()).await.expect("sweep");

    let terminated: BTreeMap<&str, &Reason> = report
        .terminated
        .iter()
        .map(|t| (t.build_id.as_str(), &t.reason))
        .collect();
    assert_eq!(
        terminated,
        BTreeMap::from([
            (
                "b-done",
                &Reason::Finished {
                    status: "SUCCEEDED".into()
                }
            ),
            ("b-expired", &Reason::Expired { limit_minutes: 240 }),
            (
                "b-failed",
                &Reason::Finished {
                    status: "FAILED".into()
                }
            ),
        ])
    );
    let mut kept = report.kept.clone();
    kept.sort();
    let mut want = vec![running.clone(), orphan.clone()];
    want.sort();
    assert_eq!(kept, want);
    assert_eq!(report.expired_builds, ["b-expired"]);
    assert_eq!(report.images_deregistered, vec![image.clone()]);
    assert!(report.snapshots_deleted.contains(&snapshot), "{report:?}");
    assert!(report.errors.is_empty(), "{:?}", report.errors);

    let s = states(&ec2).await;
    for id in [&done, &failed, &expired] {
        assert_eq!(s[id], InstanceStateName::Terminated, "{id}");
    }
    for id in [&running, &orphan, &untagged] {
        assert_eq!(s[id], InstanceStateName::Running, "{id}");
    }
    let images = ec2.describe_images().image_ids(&image).send().await;
    assert!(
        images.map(|o| o.images().is_empty()).unwrap_or(true),
        "image still registered"
    );
    let snaps = ec2
        .describe_snapshots()
        .owner_ids("self")
        .send()
        .await
        .expect("snapshots");
    assert!(!snaps
        .snapshots()
        .iter()
        .any(|s| s.snapshot_id() == Some(&snapshot)));

    // The records tell what happened.
    let done_record = store.get("b-done").await.expect("get").expect("record");
    assert!(done_record
        .resources_of(ResourceKind::Instance)
        .all(|r| r.deleted));
    let failed_record = store.get("b-failed").await.expect("get").expect("record");
    assert!(failed_record.resources.iter().all(|r| r.deleted));
    let expired_record = store.get("b-expired").await.expect("get").expect("record");
    assert_eq!(expired_record.status, BuildStatus::Failed);
    assert_eq!(
        expired_record.failure.as_ref().map(|f| f.error.as_str()),
        Some("TimedOut")
    );
    let running_record = store.get("b-running").await.expect("get").expect("record");
    assert_eq!(running_record.status, BuildStatus::Running);

    // A second sweep has nothing left to remove; five hours later the
    // running build and the orphan are past their limits too.
    let again = reaper.run(Utc::now()).await.expect("sweep");
    assert!(again.terminated.is_empty(), "{again:?}");
    assert!(again.images_deregistered.is_empty() && again.snapshots_deleted.is_empty());
    let later = reaper
        .run(Utc::now() + Duration::hours(5))
        .await
        .expect("sweep");
    let mut late: Vec<(&str, &str)> = later
        .terminated
        .iter()
        .map(|t| (t.build_id.as_str(), t.instance_id.as_str()))
        .collect();
    late.sort();
    assert_eq!(
        late,
        [
            ("b-ghost", orphan.as_str()),
            ("b-running", running.as_str())
        ]
    );
    assert_eq!(states(&ec2).await[&untagged], InstanceStateName::Running);
}
