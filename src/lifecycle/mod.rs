//! Image lifecycle: a recipe's `retain:` policy applied to the registry and
//! to the images themselves. `bakehouse image prune [--dry-run]` runs it on
//! this machine; the scheduled `lifecycle` function runs it in AWS.
//!
//! - The policy of a package is the `retain:` of the recipe that built its
//!   newest version (the build record keeps the recipe), else of the recipe
//!   the webhook stored under the package's name; a package with neither is
//!   left alone. `image prune --keep N` overrides it.
//! - [`plan`] decides (pure rules); [`Lifecycle::run`] applies: for a
//!   deletion, every artifact's image is removed through the [`ImageStore`]
//!   of its provider (AWS: deregister the AMI in its region, then delete
//!   its snapshots; local: remove the file), and only then is the version's
//!   status set to `deleted`. A version with an artifact no store here can
//!   reach keeps its status, and the report says why. Every step is
//!   idempotent: an image or snapshot already gone counts as removed, so a
//!   run cut short is finished by the next one.
//! - Every action is in the returned [`Report`] and in the log (`tracing`;
//!   the lifecycle function's log group in AWS).

pub mod plan;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::build::{BuildStatus, BuildStore, BuildStoreError};
use crate::recipe::Retention;
use crate::registry::{Artifact, PackageVersion, Provider, Registry, RegistryError, Status};

pub use plan::{Action, Decision};

/// How many recent build records are searched for running builds.
const RUNNING_BUILDS_SCAN: usize = 500;

/// A lifecycle failure.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// The registry could not be read or updated.
    #[error("registry: {0}")]
    Registry(#[from] RegistryError),
    /// Build records could not be read.
    #[error("build records: {0}")]
    Builds(#[from] BuildStoreError),
    /// A call to the provider failed (the message names the call, the image
    /// and the region).
    #[error("{0}")]
    Provider(String),
    /// A local artifact's path is not an image file under the images
    /// directory (registry records are data from outside, too).
    #[error("refusing to delete {path}: {reason}")]
    UnsafePath {
        /// The artifact's path.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Where one provider's images live: what deprecating and deleting an
/// artifact's image means there.
#[async_trait]
pub trait ImageStore: Send + Sync {
    /// The provider whose artifacts this store handles.
    fn provider(&self) -> Provider;

    /// Marks the artifact's image deprecated from `at` on; returns what it
    /// did, one line per action.
    async fn deprecate(
        &self,
        artifact: &Artifact,
        at: DateTime<Utc>,
    ) -> Result<Vec<String>, LifecycleError>;

    /// Removes the artifact's image and what holds its data; an image that
    /// is already gone is not an error. Returns what it did.
    async fn delete(&self, artifact: &Artifact) -> Result<Vec<String>, LifecycleError>;
}

/// What a run decided and did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Nothing was changed.
    pub dry_run: bool,
    /// Per package, the policy used (`None`: none found, package left alone).
    pub policies: BTreeMap<String, Option<Retention>>,
    /// The decisions, in package and version order.
    pub decisions: Vec<Decision>,
    /// What was done, one line per action (empty for a dry run).
    pub actions: Vec<String>,
    /// Decisions that could not be carried out, and why.
    pub skipped: Vec<String>,
}

/// Applies retention policies.
pub struct Lifecycle {
    registry: Registry,
    builds: Arc<dyn BuildStore>,
    stores: Vec<Arc<dyn ImageStore>>,
}

impl Lifecycle {
    /// A lifecycle over a registry, its build records and the image stores
    /// of the providers it may touch.
    pub fn new(
        registry: Registry,
        builds: Arc<dyn BuildStore>,
        stores: Vec<Arc<dyn ImageStore>>,
    ) -> Lifecycle {
        Lifecycle {
            registry,
            builds,
            stores,
        }
    }

    /// The lifecycle of a deployment: the registry and build records in
    /// `table`, AMIs through EC2 in the configuration's region and the
    /// regions artifacts name.
    pub fn with_table(config: &aws_config::SdkConfig, table: &str) -> Lifecycle {
        let store = crate::registry::DynamoStore::new(config, table);
        let builds = crate::build::DynamoBuildStore::new(store.client().clone(), table);
        let ec2 = crate::backends::ec2::Ec2Backend::new(
            config,
            crate::backends::ec2::Ec2Settings::default(),
        );
        Lifecycle::new(
            Registry::new(Arc::new(store)),
            Arc::new(builds),
            vec![Arc::new(ec2)],
        )
    }

    /// The policy of a package: see the module documentation.
    async fn policy_of(
        &self,
        versions: &[PackageVersion],
    ) -> Result<Option<Retention>, LifecycleError> {
        let newest = versions.iter().max_by(|a, b| a.version.cmp(&b.version));
        let Some(newest) = newest else {
            return Ok(None);
        };
        let from_build = match &newest.build_id {
            Some(id) => self.builds.get(id).await?.map(|r| r.bundle.recipe),
            None => None,
        };
        let recipe = match from_build {
            Some(r) => Some(r),
            None => self
                .builds
                .get_recipe(&newest.name)
                .await?
                .map(|b| b.recipe),
        };
        Ok(recipe
            .and_then(|r| r.get("retain").cloned())
            .and_then(|v| serde_json::from_value::<Retention>(v).ok()))
    }

    /// The bases of running builds (`name@version`).
    async fn in_use(&self) -> Result<Vec<String>, LifecycleError> {
        Ok(self
            .builds
            .list(RUNNING_BUILDS_SCAN)
            .await?
            .into_iter()
            .filter(|r| r.status == BuildStatus::Running)
            .filter_map(|r| r.parent)
            .collect())
    }

    /// Plans and (unless `dry_run`) applies the policies of one package
    /// (`name`) or of all; `keep` overrides every policy with
    /// `retain: {versions: keep}`.
    pub async fn run(
        &self,
        name: Option<&str>,
        keep: Option<u32>,
        dry_run: bool,
        now: DateTime<Utc>,
    ) -> Result<Report, LifecycleError> {
        let all = self.registry.list(None).await?;
        let protected = plan::protected(&all, &self.in_use().await?);
        let mut packages: BTreeMap<String, Vec<PackageVersion>> = BTreeMap::new();
        for p in all {
            if name.is_none_or(|n| n == p.name) {
                packages.entry(p.name.clone()).or_default().push(p);
            }
        }
        if let Some(n) = name {
            if !packages.contains_key(n) {
                return Err(RegistryError::NotFound {
                    what: "package",
                    query: n.to_string(),
                }
                .into());
            }
        }
        let mut report = Report {
            dry_run,
            ..Report::default()
        };
        for (package, versions) in &packages {
            let policy = match keep {
                Some(n) => Some(Retention {
                    versions: Some(n),
                    ..Retention::default()
                }),
                None => self.policy_of(versions).await?,
            };
            report.policies.insert(package.clone(), policy);
            let Some(policy) = policy else { continue };
            for decision in plan::plan(versions, &policy, &protected, now) {
                tracing::info!(version = %decision.version, action = ?decision.action, reason = %decision.reason, dry_run, "retention");
                if !dry_run {
                    self.carry_out(versions, &decision, now, &mut report)
                        .await?;
                }
                report.decisions.push(decision);
            }
        }
        Ok(report)
    }

    /// Applies one decision of `versions`' plan. A failure with one image
    /// (access denied, a hostile path) is reported as skipped and the
    /// version keeps its status; the run goes on. Losing the records stops
    /// it.
    async fn carry_out(
        &self,
        versions: &[PackageVersion],
        decision: &Decision,
        now: DateTime<Utc>,
        report: &mut Report,
    ) -> Result<(), LifecycleError> {
        let Some(action) = decision.action else {
            return Ok(());
        };
        let Some(version) = versions
            .iter()
            .find(|p| plan::reference(p) == decision.version)
        else {
            return Ok(());
        };
        match self.apply(version, action, now, report).await {
            Err(e @ (LifecycleError::Registry(_) | LifecycleError::Builds(_))) => Err(e),
            Err(e) => {
                tracing::warn!(version = %decision.version, "{e}");
                report.skipped.push(format!("{}: {e}", decision.version));
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }

    fn store_for(&self, provider: Provider) -> Option<&Arc<dyn ImageStore>> {
        self.stores.iter().find(|s| s.provider() == provider)
    }

    async fn apply(
        &self,
        version: &PackageVersion,
        action: Action,
        now: DateTime<Utc>,
        report: &mut Report,
    ) -> Result<(), LifecycleError> {
        let reference = plan::reference(version);
        let unreachable: Vec<String> = version
            .artifacts
            .iter()
            .filter(|a| self.store_for(a.provider).is_none())
            .map(|a| a.name.clone())
            .collect();
        if action == Action::Delete && !unreachable.is_empty() {
            report.skipped.push(format!(
                "{reference}: not deleted: no access to the images of artifacts {} from here",
                unreachable.join(", ")
            ));
            return Ok(());
        }
        for artifact in &version.artifacts {
            let Some(store) = self.store_for(artifact.provider) else {
                continue;
            };
            let done = match action {
                Action::Deprecate => store.deprecate(artifact, now).await?,
                Action::Delete => store.delete(artifact).await?,
            };
            for line in done {
                tracing::info!(version = %reference, "{line}");
                report.actions.push(format!("{reference}: {line}"));
            }
        }
        let status = match action {
            Action::Deprecate => Status::Deprecated,
            Action::Delete => Status::Deleted,
        };
        self.registry
            .set_status(&version.name, &version.version, status)
            .await?;
        let line = format!("{reference}: status {} -> {status}", version.status);
        tracing::info!("{line}");
        report.actions.push(line);
        Ok(())
    }
}
