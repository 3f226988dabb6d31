//! The seam between registry rules and record keeping.

use async_trait::async_trait;

use super::{Artifact, Lookup, PackageVersion, RegistryError, Status, Version, VersionPattern};

/// Keeps registry records. Implementations must make [`RegistryStore::insert`]
/// atomic: the version, its artifacts and its bake key are stored together or
/// not at all, and only if the package's highest version is still the one the
/// caller saw.
#[async_trait]
pub trait RegistryStore: Send + Sync {
    /// The highest stored version of a package, whatever its status.
    async fn latest_version(&self, name: &str) -> Result<Option<Version>, RegistryError>;

    /// Stores a new version with its artifacts. Fails with
    /// [`RegistryError::Conflict`] if the package's highest version is no
    /// longer `seen_latest`, [`RegistryError::VersionExists`] if the version
    /// is taken, [`RegistryError::BakeKeyExists`] if the bake key is.
    async fn insert(
        &self,
        package: &PackageVersion,
        seen_latest: Option<&Version>,
    ) -> Result<(), RegistryError>;

    /// Adds artifacts to a stored version; fails with
    /// [`RegistryError::DuplicateArtifactName`] (storing none) if a name is taken.
    async fn append_artifacts(
        &self,
        name: &str,
        version: &Version,
        artifacts: &[Artifact],
    ) -> Result<PackageVersion, RegistryError>;

    /// One version, if stored.
    async fn get(
        &self,
        name: &str,
        version: &Version,
    ) -> Result<Option<PackageVersion>, RegistryError>;

    /// The highest version matching the lookup and pattern; skips deprecated
    /// and revoked versions unless `include_inactive`.
    async fn resolve(
        &self,
        lookup: &Lookup,
        pattern: &VersionPattern,
        include_inactive: bool,
    ) -> Result<Option<PackageVersion>, RegistryError>;

    /// Every version of one package (or of all packages), highest first
    /// within a package.
    async fn list(&self, name: Option<&str>) -> Result<Vec<PackageVersion>, RegistryError>;

    /// The version registered with this bake key.
    async fn find_by_bake_key(&self, key: &str) -> Result<Option<PackageVersion>, RegistryError>;

    /// Changes the status of a stored version.
    async fn set_status(
        &self,
        name: &str,
        version: &Version,
        status: Status,
    ) -> Result<PackageVersion, RegistryError>;
}
