//! The JSON Schema of a recipe (`bakehouse schema`), for editors and CI
//! checks. It is generated from the same serde types `validate` reads, so
//! it accepts every recipe `validate` parses; the semantic checks (names,
//! references, files, schedules, regions) are `validate`'s alone.

use schemars::generate::SchemaSettings;
use serde_json::Value;

use super::model::Recipe;

/// The `$id` of the recipe schema.
pub const SCHEMA_ID: &str = "https://bakehouse.dev/schemas/recipe.json";

/// The recipe's JSON Schema (draft 2020-12), as the deserializer sees it.
pub fn recipe_schema() -> Value {
    let generator = SchemaSettings::draft2020_12()
        .for_deserialize()
        .into_generator();
    let schema = generator.into_root_schema_for::<Recipe>();
    let mut value = schema.to_value();
    if let Value::Object(map) = &mut value {
        map.insert("$id".into(), Value::String(SCHEMA_ID.into()));
        map.insert(
            "title".into(),
            Value::String("bakehouse recipe (YAML or JSON)".into()),
        );
    }
    value
}
