//! Build records: one per state machine execution, with its recipe, trigger,
//! status, per-step timings and the ledger of every resource it created.
//! Kept in the registry's DynamoDB table (or the embedded SQLite file).

mod dynamo;
mod id;
mod owner;
mod record;
mod sqlite;

use async_trait::async_trait;

pub use dynamo::DynamoBuildStore;
pub use id::{check_build_id, InvalidBuildId, MAX_BUILD_ID_LEN};
pub use owner::Owner;
pub use record::{
    Awaiting, BuildRecord, BuildStatus, BundledFile, Failure, RecipeBundle, Resource, ResourceKind,
    Step, StepRecord,
};
pub use sqlite::SqliteBuildStore;

/// Errors of the build record store.
#[derive(Debug, thiserror::Error)]
pub enum BuildStoreError {
    /// The record changed since it was read (another attempt of a step).
    #[error("build {0} was updated concurrently")]
    Conflict(String),
    /// No such build.
    #[error("no build {0}")]
    NotFound(String),
    /// DynamoDB failed.
    #[error("DynamoDB: {0}")]
    Dynamo(String),
    /// SQLite failed.
    #[error("SQLite builds: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored record could not be read.
    #[error("corrupt build record {id}: {message}")]
    Corrupt {
        /// Build id.
        id: String,
        /// What is wrong.
        message: String,
    },
}

/// Keeps build records and the recipes stored at their last push.
#[async_trait]
pub trait BuildStore: Send + Sync {
    /// Stores a new record unless one with its id exists; returns whether
    /// it was created (a retried launch finds the first one).
    async fn create(&self, record: &BuildRecord) -> Result<bool, BuildStoreError>;
    /// One record.
    async fn get(&self, id: &str) -> Result<Option<BuildRecord>, BuildStoreError>;
    /// Writes the record if its revision is still `record.revision`, and
    /// increments the revision.
    async fn save(&self, record: &mut BuildRecord) -> Result<(), BuildStoreError>;
    /// Records, newest first.
    async fn list(&self, limit: usize) -> Result<Vec<BuildRecord>, BuildStoreError>;
    /// Stores a recipe (bundle) under its name, as of a push.
    async fn put_recipe(&self, name: &str, bundle: &RecipeBundle) -> Result<(), BuildStoreError>;
    /// The recipe stored under a name.
    async fn get_recipe(&self, name: &str) -> Result<Option<RecipeBundle>, BuildStoreError>;
    /// Removes a stored recipe.
    async fn delete_recipe(&self, name: &str) -> Result<(), BuildStoreError>;
}

/// Reads, changes and saves a record, retrying on concurrent updates.
pub async fn update<F>(
    store: &dyn BuildStore,
    id: &str,
    mut change: F,
) -> Result<BuildRecord, BuildStoreError>
where
    F: FnMut(&mut BuildRecord) + Send,
{
    for _ in 0..20 {
        let mut record = store
            .get(id)
            .await?
            .ok_or_else(|| BuildStoreError::NotFound(id.to_string()))?;
        change(&mut record);
        record.updated_at = chrono::Utc::now();
        match store.save(&mut record).await {
            Ok(()) => return Ok(record),
            Err(BuildStoreError::Conflict(_)) => {
                tokio::time::sleep(std::time::Duration::from_millis(fastrand::u64(1..20))).await
            }
            Err(e) => return Err(e),
        }
    }
    Err(BuildStoreError::Conflict(id.to_string()))
}
