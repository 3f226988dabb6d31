//! Helpers shared by integration tests.
#![allow(dead_code)]

pub mod gitserver;

use bakehouse::build::{BuildRecord, RecipeBundle};
use bakehouse::registry::{Trigger, TriggerKind};

/// A new build record `id` of `recipe` (a recipe document without files),
/// started `minutes_ago`, as launch would first write it.
pub fn build_record(
    id: &str,
    recipe: serde_json::Value,
    trigger: TriggerKind,
    minutes_ago: i64,
) -> BuildRecord {
    let name = recipe["name"].as_str().unwrap_or(id).to_string();
    let mut r = BuildRecord::new(
        id,
        &name,
        RecipeBundle {
            recipe,
            files: Default::default(),
        },
        Trigger::of(trigger),
        false,
    );
    r.created_at = chrono::Utc::now() - chrono::Duration::minutes(minutes_ago);
    r
}

/// An AMI made the way a build makes one: an instance from an Amazon image,
/// CreateImage, the instance terminated (moto gives the image a snapshot of
/// the instance's volume). Returns the image id.
pub async fn image_from_instance(ec2: &aws_sdk_ec2::Client, name: &str) -> String {
    let amazon = ec2.describe_images().owners("amazon").send().await.unwrap();
    let source = amazon.images()[0].image_id().unwrap().to_string();
    let run = ec2
        .run_instances()
        .image_id(source)
        .min_count(1)
        .max_count(1)
        .send()
        .await
        .unwrap();
    let instance = run.instances()[0].instance_id().unwrap().to_string();
    let image = ec2
        .create_image()
        .instance_id(&instance)
        .name(name)
        .send()
        .await
        .unwrap();
    ec2.terminate_instances()
        .instance_ids(instance)
        .send()
        .await
        .unwrap();
    image.image_id().unwrap().to_string()
}
