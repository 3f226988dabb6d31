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
