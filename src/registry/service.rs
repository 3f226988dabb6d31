//! Registry rules on top of a store: version assignment, validation,
//! all-or-nothing adds and resolution.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::model::{validate_label, validate_name};
use super::{
    Artifact, BumpPart, Lookup, Os, PackageVersion, Provider, Reference, RegistryError,
    RegistryStore, Status, Trigger, Version, VersionPattern,
};

/// How an add picks its version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VersionChoice {
    /// The latest stored version (artifacts are added to it), or `1.0`.
    Latest,
    /// The latest stored version bumped (`1.0` when none is stored).
    Bump(BumpPart),
    /// Exactly this version, which must not exist yet.
    Exact(Version),
}

/// What to register.
#[derive(Clone, Debug)]
pub struct AddRequest {
    /// Package name.
    pub name: String,
    /// Label; `None` keeps the stored package's label (the name for a new
    /// package). A label that differs from the stored one is refused.
    pub label: Option<String>,
    /// Operating system family; `None` keeps the stored package's (linux
    /// for a new package). An OS that differs from the stored one is
    /// refused.
    pub os: Option<Os>,
    /// How the version is chosen.
    pub version: VersionChoice,
    /// The image's locations.
    pub artifacts: Vec<Artifact>,
    /// Content hash of the build inputs.
    pub bake_key: Option<String>,
    /// Parent image.
    pub parent: Option<String>,
    /// What started it.
    pub trigger: Option<Trigger>,
    /// Build id.
    pub build_id: Option<String>,
    /// Work out and return the result without storing anything.
    pub dry_run: bool,
}

impl AddRequest {
    /// A request with defaults: latest version, no lineage, not a dry run.
    pub fn new(name: impl Into<String>, os: Os, artifacts: Vec<Artifact>) -> AddRequest {
        AddRequest {
            name: name.into(),
            label: None,
            os: Some(os),
            version: VersionChoice::Latest,
            artifacts,
            bake_key: None,
            parent: None,
            trigger: None,
            build_id: None,
            dry_run: false,
        }
    }
}

/// What an add did.
#[derive(Clone, Debug, Serialize)]
pub struct AddOutcome {
    /// The version as stored (or as it would be stored, for a dry run).
    pub package: PackageVersion,
    /// Whether anything was written.
    pub stored: bool,
    /// The artifacts were added to an existing version.
    pub appended: bool,
    /// The bake key was already registered: this is that version, unchanged.
    pub reused: bool,
}

/// A resolution request.
#[derive(Clone, Debug)]
pub struct ResolveQuery {
    /// By name or label.
    pub lookup: Lookup,
    /// Which versions qualify.
    pub pattern: VersionPattern,
    /// Also consider deprecated and revoked versions.
    pub include_inactive: bool,
    /// Pick the artifact for this provider.
    pub provider: Option<Provider>,
    /// ... and this region.
    pub region: Option<String>,
}

/// The result of a resolution: the winning version and, if a provider was
/// asked for, its artifact there.
#[derive(Clone, Debug, Serialize)]
pub struct Resolution {
    /// The winning version.
    pub package: PackageVersion,
    /// The artifact for the requested location.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact: Option<Artifact>,
}

/// Attempts of the optimistic version assignment before giving up.
const MAX_ATTEMPTS: u32 = 500;

/// The image registry.
#[derive(Clone)]
pub struct Registry {
    store: Arc<dyn RegistryStore>,
}

impl Registry {
    /// A registry over the given store.
    pub fn new(store: Arc<dyn RegistryStore>) -> Registry {
        Registry { store }
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn RegistryStore> {
        &self.store
    }

    /// Registers an image version (or adds artifacts to the latest one).
    /// Validates everything first; stores nothing on any error.
    pub async fn add(&self, req: AddRequest) -> Result<AddOutcome, RegistryError> {
        validate_name("name", &req.name)?;
        if let Some(label) = &req.label {
            validate_label(label)?;
        }
        if req.artifacts.is_empty() {
            return Err(RegistryError::NoArtifacts);
        }
        let (label, os) = self.inherited(&req).await?;
        let req = AddRequest {
            os: Some(os),
            ..req
        };
        if let Some(key) = &req.bake_key {
            if let Some(existing) = self.store.find_by_bake_key(key).await? {
                return Ok(AddOutcome {
                    package: existing,
                    stored: false,
                    appended: false,
                    reused: true,
                });
            }
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let latest = self.store.latest_version(&req.name).await?;
            let version = match (&req.version, &latest) {
                (VersionChoice::Latest, Some(v)) => return self.append(&req, &label, v).await,
                (VersionChoice::Latest, None) => Version::initial(),
                (VersionChoice::Bump(part), Some(v)) => v.bump(*part),
                (VersionChoice::Bump(_), None) => Version::initial(),
                (VersionChoice::Exact(v), _) => v.clone(),
            };
            check_unique_names(&req.name, &version, &req.artifacts, &[])?;
            let package = PackageVersion {
                name: req.name.clone(),
                version,
                label: label.clone(),
                package_type: "image".into(),
                os,
                status: Status::Active,
                bake_key: req.bake_key.clone(),
                parent: req.parent.clone(),
                trigger: req.trigger.clone(),
                build_id: req.build_id.clone(),
                created_at: chrono::Utc::now(),
                artifacts: req.artifacts.clone(),
            };
            if req.dry_run {
                if let VersionChoice::Exact(v) = &req.version {
                    if self.store.get(&req.name, v).await?.is_some() {
                        return Err(RegistryError::VersionExists {
                            name: req.name.clone(),
                            version: v.to_string(),
                        });
                    }
                }
                return Ok(AddOutcome {
                    package,
                    stored: false,
                    appended: false,
                    reused: false,
                });
            }
            match self.store.insert(&package, latest.as_ref()).await {
                Ok(()) => {
                    tracing::info!(name = %package.name, version = %package.version, "registered image version");
                    return Ok(AddOutcome {
                        package,
                        stored: true,
                        appended: false,
                        reused: false,
                    });
                }
                // Under a bump, a taken version means a concurrent add won the
                // race for it: recompute like any other conflict.
                Err(RegistryError::VersionExists { .. })
                    if req.version != VersionChoice::Exact(package.version.clone())
                        && attempt < MAX_ATTEMPTS =>
                {
                    backoff(attempt).await;
                }
                Err(RegistryError::Conflict(_)) if attempt < MAX_ATTEMPTS => {
                    backoff(attempt).await;
                }
                Err(RegistryError::Conflict(name)) => {
                    return Err(RegistryError::TooMuchContention(name))
                }
                Err(RegistryError::BakeKeyExists { name, version, .. }) => {
                    let version: Version = version.parse()?;
                    let existing = self.store.get(&name, &version).await?.ok_or_else(|| {
                        RegistryError::Corrupt {
                            key: format!("{name}@{version}"),
                            message: "bake key points to a missing version".into(),
                        }
                    })?;
                    return Ok(AddOutcome {
                        package: existing,
                        stored: false,
                        appended: false,
                        reused: true,
                    });
                }
                Err(other) => return Err(other),
            }
        }
    }

    /// The label and OS an add stores: those given, else the latest stored
    /// version's, else the name and linux. A given value that differs from
    /// the stored one is refused: a package keeps its OS and label.
    async fn inherited(&self, req: &AddRequest) -> Result<(String, Os), RegistryError> {
        let stored = match self.store.latest_version(&req.name).await? {
            Some(v) => self.store.get(&req.name, &v).await?,
            None => None,
        };
        let Some(stored) = stored else {
            return Ok((
                req.label.clone().unwrap_or_else(|| req.name.clone()),
                req.os.unwrap_or(Os::Linux),
            ));
        };
        if let Some(label) = req.label.as_ref().filter(|l| **l != stored.label) {
            return Err(RegistryError::Mismatch {
                name: req.name.clone(),
                version: stored.version.to_string(),
                field: "label",
                stored: stored.label.clone(),
                given: label.clone(),
            });
        }
        if let Some(os) = req.os.filter(|o| *o != stored.os) {
            return Err(RegistryError::Mismatch {
                name: req.name.clone(),
                version: stored.version.to_string(),
                field: "os",
                stored: stored.os.to_string(),
                given: os.to_string(),
            });
        }
        Ok((stored.label, stored.os))
    }

    async fn append(
        &self,
        req: &AddRequest,
        label: &str,
        version: &Version,
    ) -> Result<AddOutcome, RegistryError> {
        let existing =
            self.store
                .get(&req.name, version)
                .await?
                .ok_or_else(|| RegistryError::Corrupt {
                    key: format!("{}@{version}", req.name),
                    message: "latest version is not stored".into(),
                })?;
        if existing.label != label {
            return Err(RegistryError::Mismatch {
                name: req.name.clone(),
                version: version.to_string(),
                field: "label",
                stored: existing.label,
                given: label.to_string(),
            });
        }
        check_unique_names(&req.name, version, &req.artifacts, &existing.artifacts)?;
        if req.dry_run {
            let mut package = existing;
            package.artifacts.extend(req.artifacts.iter().cloned());
            return Ok(AddOutcome {
                package,
                stored: false,
                appended: true,
                reused: false,
            });
        }
        let package = self
            .store
            .append_artifacts(&req.name, version, &req.artifacts)
            .await?;
        Ok(AddOutcome {
            package,
            stored: true,
            appended: true,
            reused: false,
        })
    }

    /// Resolves a recipe's registry base (see [`Reference::name_or_label`]):
    /// by name when it is one and a package of that name exists, else by
    /// label; active versions only.
    pub async fn resolve_name_or_label(
        &self,
        reference: &Reference,
        provider: Option<Provider>,
        region: Option<String>,
    ) -> Result<Resolution, RegistryError> {
        let query = |lookup| ResolveQuery {
            lookup,
            pattern: reference.pattern.clone(),
            include_inactive: false,
            provider,
            region: region.clone(),
        };
        if validate_name("name", &reference.name).is_ok() {
            match self
                .resolve(&query(Lookup::Name(reference.name.clone())))
                .await
            {
                Err(RegistryError::NotFound { .. }) => {}
                other => return other,
            }
        }
        self.resolve(&query(Lookup::Label(reference.name.clone())))
            .await
    }

    /// Picks the highest qualifying version and, if asked, its artifact for
    /// a provider and region.
    pub async fn resolve(&self, query: &ResolveQuery) -> Result<Resolution, RegistryError> {
        let package = self
            .store
            .resolve(&query.lookup, &query.pattern, query.include_inactive)
            .await?
            .ok_or_else(|| RegistryError::NotFound {
                what: if query.include_inactive {
                    "package version"
                } else {
                    "active package version"
                },
                query: format!("{} version {}", query.lookup, query.pattern),
            })?;
        let artifact = match query.provider {
            None => None,
            Some(provider) => Some(
                package
                    .artifacts
                    .iter()
                    .find(|a| a.serves(provider, query.region.as_deref()))
                    .cloned()
                    .ok_or_else(|| RegistryError::NoArtifactForLocation {
                        name: package.name.clone(),
                        version: package.version.to_string(),
                        provider: provider.to_string(),
                        region: query.region.clone(),
                    })?,
            ),
        };
        Ok(Resolution { package, artifact })
    }

    /// One stored version.
    pub async fn show(
        &self,
        name: &str,
        version: &Version,
    ) -> Result<PackageVersion, RegistryError> {
        self.store
            .get(name, version)
            .await?
            .ok_or_else(|| RegistryError::NotFound {
                what: "package version",
                query: format!("{name} {version}"),
            })
    }

    /// Every version of a package, or of every package.
    pub async fn list(&self, name: Option<&str>) -> Result<Vec<PackageVersion>, RegistryError> {
        self.store.list(name).await
    }

    /// The version registered with a bake key.
    pub async fn find_by_bake_key(
        &self,
        key: &str,
    ) -> Result<Option<PackageVersion>, RegistryError> {
        self.store.find_by_bake_key(key).await
    }

    /// Marks a version deprecated, revoked or active again (or deleted,
    /// once retention removed its images). A deleted version stays deleted:
    /// its images are gone.
    pub async fn set_status(
        &self,
        name: &str,
        version: &Version,
        status: Status,
    ) -> Result<PackageVersion, RegistryError> {
        if status != Status::Deleted {
            if let Some(current) = self.store.get(name, version).await? {
                if current.status == Status::Deleted {
                    return Err(RegistryError::InvalidField {
                        field: "status",
                        value: status.to_string(),
                        reason: format!(
                            "{name}@{version} was deleted by its retention policy (its images are gone); register a new version instead"
                        ),
                    });
                }
            }
        }
        self.store.set_status(name, version, status).await
    }
}

/// A short random pause that grows with the attempt number, so racing
/// writers spread out.
async fn backoff(attempt: u32) {
    let ms = fastrand::u64(1..=(2 + u64::from(attempt.min(20)) * 3));
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

fn check_unique_names(
    package: &str,
    version: &Version,
    new: &[Artifact],
    existing: &[Artifact],
) -> Result<(), RegistryError> {
    let mut seen: HashSet<&str> = existing.iter().map(|a| a.name.as_str()).collect();
    for a in new {
        if a.name.trim().is_empty() {
            return Err(RegistryError::InvalidField {
                field: "artifact name",
                value: a.name.clone(),
                reason: "must not be empty".into(),
            });
        }
        if a.image_id.trim().is_empty() {
            return Err(RegistryError::InvalidField {
                field: "image id",
                value: a.image_id.clone(),
                reason: "must not be empty".into(),
            });
        }
        if !seen.insert(a.name.as_str()) {
            return Err(RegistryError::DuplicateArtifactName {
                package: package.to_string(),
                version: version.to_string(),
                name: a.name.clone(),
            });
        }
    }
    Ok(())
}
