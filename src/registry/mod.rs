//! The image registry: versioned image packages and their artifacts, with
//! the semantics of the CycleCloud image registry (see DESIGN.md), plus bake
//! keys, lineage, triggers and status.
//!
//! [`Registry`] holds the rules; a [`RegistryStore`] keeps the records. Two
//! stores implement it: [`DynamoStore`] (one DynamoDB table) and
//! [`SqliteStore`] (the embedded default at `.bakehouse/registry.db`).

mod dynamo;
mod error;
pub mod locate;
mod model;
mod service;
mod sqlite;
mod store;
mod version;

pub use dynamo::{DynamoStore, RequestCounter};
pub use error::RegistryError;
pub use model::{
    validate_label, validate_name, Artifact, Lookup, Os, PackageVersion, Provider, Reference,
    Status, Trigger, TriggerKind,
};
pub use service::{AddOutcome, AddRequest, Registry, Resolution, ResolveQuery, VersionChoice};
pub use sqlite::SqliteStore;
pub use store::RegistryStore;
pub use version::{BumpPart, Version, VersionPattern};

/// Checks a package name and optional label before anything is looked up.
pub fn model_checks(name: &str, label: Option<&str>) -> Result<(), RegistryError> {
    validate_name("name", name)?;
    if let Some(label) = label {
        validate_label(label)?;
    }
    Ok(())
}
