//! The reaper: a scheduled sweep that makes sure no build leaks.
//!
//! 1. Every builder instance (tag `bakehouse:build` = build id, not yet
//!    terminated) is judged ([`judge`]): terminated when its build is
//!    finished (record `SUCCEEDED` or `FAILED`), when its build is still
//!    `RUNNING` past the recipe's `builder.time_limit_minutes` (default
//!    240), or when it has no build record and was launched longer ago than
//!    the default limit. Others are kept, and so is the builder of a failed
//!    build run with `on_error: abort` until its time limit has passed
//!    since it failed (or `bakehouse builds cleanup` removes it).
//! 2. A `RUNNING` build past its limit is marked `FAILED` (its execution
//!    timed out, so no teardown ran), and terminated instances are marked
//!    deleted in their build's ledger.
//! 3. For every `FAILED` build, images and snapshots its ledger records and
//!    that are not deleted yet are deregistered and deleted (with the
//!    snapshots behind each image).
//!
//! Every action is logged with `tracing` and listed in the [`ReapReport`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_ec2::types::Filter;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::build::{
    self, BuildRecord, BuildStatus, BuildStore, BuildStoreError, Failure, ResourceKind,
};

/// The tag every builder instance carries; its value is the build id.
pub use crate::backends::ec2::TAG_BUILD as BUILD_TAG;

/// Time limit of a build whose recipe sets none, in minutes (the state
/// machine's own timeout is 4 hours).
pub const DEFAULT_TIME_LIMIT_MINUTES: u32 = 240;

/// Errors that stop a sweep (single failed actions are only reported).
#[derive(Debug, thiserror::Error)]
pub enum ReaperError {
    /// Builder instances could not be listed.
    #[error("DescribeInstances: {0}")]
    List(String),
    /// Build records could not be read.
    #[error(transparent)]
    Store(#[from] BuildStoreError),
}

/// Settings of the reaper.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReaperSettings {
    /// Limit for builds whose recipe sets none, and for instances without a
    /// build record.
    pub default_time_limit_minutes: u32,
}

impl Default for ReaperSettings {
    fn default() -> Self {
        ReaperSettings {
            default_time_limit_minutes: DEFAULT_TIME_LIMIT_MINUTES,
        }
    }
}

impl ReaperSettings {
    /// From `BAKEHOUSE_DEFAULT_TIME_LIMIT_MINUTES` (default 240).
    pub fn from_vars(
        vars: &crate::config::EnvVars,
    ) -> Result<ReaperSettings, crate::config::ConfigError> {
        let minutes = vars.parsed(
            "BAKEHOUSE_DEFAULT_TIME_LIMIT_MINUTES",
            DEFAULT_TIME_LIMIT_MINUTES,
            |v| {
                v.parse()
                    .ok()
                    .filter(|m| *m > 0)
                    .ok_or_else(|| "expected a positive number of minutes".to_string())
            },
        )?;
        Ok(ReaperSettings {
            default_time_limit_minutes: minutes,
        })
    }
}

/// Why an instance is terminated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    /// Its build finished (teardown did not get to it).
    Finished {
        /// `SUCCEEDED` or `FAILED`.
        status: String,
    },
    /// Its build is still marked running past its time limit.
    Expired {
        /// The limit, in minutes.
        limit_minutes: u32,
    },
    /// No build record, and launched longer ago than the default limit.
    Orphaned {
        /// The limit, in minutes.
        limit_minutes: u32,
    },
}

/// What to do with one builder instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Leave it: its build is running within its limit (or it is young).
    Keep,
    /// Terminate it.
    Terminate(Reason),
}

/// The time limit of a build: its recipe's `builder.time_limit_minutes`,
/// or `default`.
pub fn time_limit(record: &BuildRecord, default: u32) -> u32 {
    record
        .bundle
        .recipe
        .pointer("/builder/time_limit_minutes")
        .and_then(serde_json::Value::as_u64)
        .and_then(|m| u32::try_from(m).ok())
        .filter(|m| *m > 0)
        .unwrap_or(default)
}

/// Judges one builder instance from its build record (if any) and launch
/// time (if known) at `now`.
pub fn judge(
    record: Option<&BuildRecord>,
    launched: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    default_limit: u32,
) -> Verdict {
    match record {
        // Kept for debugging (`on_error: abort`): until `builds cleanup`, or
        // the build's time limit after it failed.
        Some(r) if r.status != BuildStatus::Running && r.kept.is_some() => {
            let limit = time_limit(r, default_limit);
            // The record's last write is its teardown's.
            if now - r.updated_at > Duration::minutes(i64::from(limit)) {
                Verdict::Terminate(Reason::Expired {
                    limit_minutes: limit,
                })
            } else {
                Verdict::Keep
            }
        }
        Some(r) if r.status != BuildStatus::Running => Verdict::Terminate(Reason::Finished {
            status: r.status.to_string(),
        }),
        Some(r) => {
            let limit = time_limit(r, default_limit);
            if now - r.created_at > Duration::minutes(i64::from(limit)) {
                Verdict::Terminate(Reason::Expired {
                    limit_minutes: limit,
                })
            } else {
                Verdict::Keep
            }
        }
        None => match launched {
            Some(at) if now - at > Duration::minutes(i64::from(default_limit)) => {
                Verdict::Terminate(Reason::Orphaned {
                    limit_minutes: default_limit,
                })
            }
            _ => Verdict::Keep,
        },
    }
}

/// One terminated instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Terminated {
    /// Instance id.
    pub instance_id: String,
    /// Its build.
    pub build_id: String,
    /// Why.
    #[serde(flatten)]
    pub reason: Reason,
}

/// What a sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReapReport {
    /// Instances terminated.
    pub terminated: Vec<Terminated>,
    /// Instances left running (their builds are within their limits).
    pub kept: Vec<String>,
    /// Builds marked failed because they ran past their limit.
    pub expired_builds: Vec<String>,
    /// Images deregistered (left by failed builds).
    pub images_deregistered: Vec<String>,
    /// Snapshots deleted (left by failed builds).
    pub snapshots_deleted: Vec<String>,
    /// Actions that failed (retried on the next sweep).
    pub errors: Vec<String>,
}

/// The reaper: EC2 clients per region and the build records.
pub struct Reaper {
    sdk: aws_config::SdkConfig,
    home: String,
    clients: Mutex<HashMap<String, aws_sdk_ec2::Client>>,
    store: Arc<dyn BuildStore>,
    settings: ReaperSettings,
}

struct Builder {
    instance_id: String,
    build_id: String,
    launched: Option<DateTime<Utc>>,
}

fn ec2_message<E>(e: E) -> String
where
    E: std::error::Error + 'static,
{
    DisplayErrorContext(e).to_string()
}

impl Reaper {
    /// A reaper whose home region (where builders run) is the one of `sdk`.
    pub fn new(
        sdk: &aws_config::SdkConfig,
        store: Arc<dyn BuildStore>,
        settings: ReaperSettings,
    ) -> Reaper {
        let home = sdk
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "us-east-1".to_string());
        Reaper {
            sdk: sdk.clone(),
            home,
            clients: Mutex::new(HashMap::new()),
            store,
            settings,
        }
    }

    /// A reaper over the build records in DynamoDB `table`.
    pub fn with_table(
        sdk: &aws_config::SdkConfig,
        table: &str,
        settings: ReaperSettings,
    ) -> Reaper {
        let store = Arc::new(crate::build::DynamoBuildStore::new(
            aws_sdk_dynamodb::Client::new(sdk),
            table,
        ));
        Reaper::new(sdk, store, settings)
    }

    /// One sweep now.
    pub async fn sweep(&self) -> Result<ReapReport, ReaperError> {
        self.run(Utc::now()).await
    }

    fn ec2(&self, region: Option<&str>) -> aws_sdk_ec2::Client {
        let region = region.unwrap_or(&self.home).to_string();
        let mut clients = match self.clients.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        clients
            .entry(region.clone())
            .or_insert_with(|| aws_sdk_ec2::Client::new(&crate::aws::in_region(&self.sdk, &region)))
            .clone()
    }

    /// One sweep at `now` (a parameter so tests can look into the future).
    pub async fn run(&self, now: DateTime<Utc>) -> Result<ReapReport, ReaperError> {
        let mut report = ReapReport::default();
        let builders = self.builders().await?;
        let mut by_build: BTreeMap<String, Vec<&Builder>> = BTreeMap::new();
        for b in &builders {
            by_build.entry(b.build_id.clone()).or_default().push(b);
        }
        for (build_id, instances) in by_build {
            let record = self.store.get(&build_id).await?;
            let mut doomed: Vec<(&Builder, Reason)> = Vec::new();
            for b in instances {
                match judge(
                    record.as_ref(),
                    b.launched,
                    now,
                    self.settings.default_time_limit_minutes,
                ) {
                    Verdict::Keep => {
                        tracing::info!(instance = %b.instance_id, build = %build_id, "builder kept: build running within its limit");
                        report.kept.push(b.instance_id.clone());
                    }
                    Verdict::Terminate(reason) => doomed.push((b, reason)),
                }
            }
            if doomed.is_empty() {
                continue;
            }
            let ids: Vec<String> = doomed.iter().map(|(b, _)| b.instance_id.clone()).collect();
            match self
                .ec2(None)
                .terminate_instances()
                .set_instance_ids(Some(ids.clone()))
                .send()
                .await
            {
                Ok(_) => {
                    for (b, reason) in doomed {
                        tracing::info!(instance = %b.instance_id, build = %build_id, reason = ?reason, "builder terminated");
                        report.terminated.push(Terminated {
                            instance_id: b.instance_id.clone(),
                            build_id: build_id.clone(),
                            reason,
                        });
                    }
                }
                Err(e) => {
                    let message = ec2_message(e);
                    tracing::error!(build = %build_id, instances = ?ids, error = %message, "terminate failed");
                    report
                        .errors
                        .push(format!("terminate {ids:?} of build {build_id}: {message}"));
                    continue;
                }
            }
            if let Some(record) = &record {
                self.after_termination(record, &ids, now, &mut report).await;
            }
        }
        self.clean_failed(&mut report).await?;
        Ok(report)
    }

    /// Builder instances that are not terminated yet.
    async fn builders(&self) -> Result<Vec<Builder>, ReaperError> {
        let mut pages = self
            .ec2(None)
            .describe_instances()
            .filters(Filter::builder().name("tag-key").values(BUILD_TAG).build())
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .values("pending")
                    .values("running")
                    .values("stopping")
                    .values("stopped")
                    .build(),
            )
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| ReaperError::List(ec2_message(e)))?;
            for instance in page.reservations().iter().flat_map(|r| r.instances()) {
                let Some(id) = instance.instance_id() else {
                    continue;
                };
                let Some(build_id) = instance
                    .tags()
                    .iter()
                    .find(|t| t.key() == Some(BUILD_TAG))
                    .and_then(|t| t.value())
                else {
                    continue;
                };
                let launched = instance
                    .launch_time()
                    .and_then(|t| DateTime::<Utc>::from_timestamp(t.secs(), t.subsec_nanos()));
                out.push(Builder {
                    instance_id: id.to_string(),
                    build_id: build_id.to_string(),
                    launched,
                });
            }
        }
        Ok(out)
    }

    /// Marks terminated instances deleted in the ledger, and an expired
    /// running build failed.
    async fn after_termination(
        &self,
        record: &BuildRecord,
        ids: &[String],
        now: DateTime<Utc>,
        report: &mut ReapReport,
    ) {
        let limit = time_limit(record, self.settings.default_time_limit_minutes);
        let expired = record.status == BuildStatus::Running;
        let result = build::update(self.store.as_ref(), &record.id, |r| {
            for res in r.resources.iter_mut() {
                if res.kind == ResourceKind::Instance
                    && res.id.as_ref().is_some_and(|id| ids.contains(id))
                {
                    res.deleted = true;
                }
            }
            if r.status == BuildStatus::Running && now - r.created_at > Duration::minutes(i64::from(limit)) {
                r.status = BuildStatus::Failed;
                r.failure = Some(Failure {
                    step: r
                        .unfinished_step()
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "launch".to_string()),
                    error: "TimedOut".to_string(),
                    cause: format!(
                        "still running after its time limit of {limit} minutes: builder terminated by the reaper"
                    ),
                });
            }
        })
        .await;
        match result {
            Ok(updated) => {
                if expired && updated.status == BuildStatus::Failed {
                    tracing::warn!(build = %record.id, limit_minutes = limit, "build past its time limit marked failed");
                    report.expired_builds.push(record.id.clone());
                }
            }
            Err(e) => {
                tracing::error!(build = %record.id, error = %e, "ledger not updated");
                report.errors.push(format!("build {}: {e}", record.id));
            }
        }
    }

    /// Deregisters images and deletes snapshots that failed builds left.
    async fn clean_failed(&self, report: &mut ReapReport) -> Result<(), ReaperError> {
        let records = self.store.list(usize::MAX).await?;
        for record in records.iter().filter(|r| r.status == BuildStatus::Failed) {
            let leftover = |kind: ResourceKind| -> Vec<(String, Option<String>)> {
                record
                    .resources_of(kind)
                    .filter(|r| !r.deleted)
                    .filter_map(|r| r.id.clone().map(|id| (id, r.region.clone())))
                    .collect()
            };
            let images = leftover(ResourceKind::Image);
            let mut snapshots: Vec<(String, Option<String>)> = leftover(ResourceKind::Snapshot);
            if images.is_empty() && snapshots.is_empty() {
                continue;
            }
            let mut done: BTreeSet<String> = BTreeSet::new();
            for (image, region) in &images {
                let ec2 = self.ec2(region.as_deref());
                // The snapshots behind the image go too, ledger or not.
                if let Ok(out) = ec2.describe_images().image_ids(image).send().await {
                    for snap in out
                        .images()
                        .iter()
                        .flat_map(|i| i.block_device_mappings())
                        .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()))
                    {
                        if !snapshots.iter().any(|(s, _)| s == snap) {
                            snapshots.push((snap.to_string(), region.clone()));
                        }
                    }
                }
                match ec2.deregister_image().image_id(image).send().await {
                    Ok(_) => {
                        tracing::info!(build = %record.id, image = %image, region = region.as_deref().unwrap_or(&self.home), "image of failed build deregistered");
                        report.images_deregistered.push(image.clone());
                        done.insert(image.clone());
                    }
                    Err(e) if e.code().is_some_and(|c| c.starts_with("InvalidAMIID")) => {
                        done.insert(image.clone());
                    }
                    Err(e) => {
                        let message = ec2_message(e);
                        tracing::error!(build = %record.id, image = %image, error = %message, "deregister failed");
                        report.errors.push(format!("deregister {image}: {message}"));
                    }
                }
            }
            for (snapshot, region) in &snapshots {
                let ec2 = self.ec2(region.as_deref());
                match ec2.delete_snapshot().snapshot_id(snapshot).send().await {
                    Ok(_) => {
                        tracing::info!(build = %record.id, snapshot = %snapshot, "snapshot of failed build deleted");
                        report.snapshots_deleted.push(snapshot.clone());
                        done.insert(snapshot.clone());
                    }
                    Err(e) if e.code() == Some("InvalidSnapshot.NotFound") => {
                        done.insert(snapshot.clone());
                    }
                    Err(e) => {
                        let message = ec2_message(e);
                        tracing::error!(build = %record.id, snapshot = %snapshot, error = %message, "delete snapshot failed");
                        report.errors.push(format!("delete {snapshot}: {message}"));
                    }
                }
            }
            if done.is_empty() {
                continue;
            }
            let result = build::update(self.store.as_ref(), &record.id, |r| {
                for res in r.resources.iter_mut() {
                    if matches!(res.kind, ResourceKind::Image | ResourceKind::Snapshot)
                        && res.id.as_ref().is_some_and(|id| done.contains(id))
                    {
                        res.deleted = true;
                    }
                }
            })
            .await;
            if let Err(e) = result {
                report.errors.push(format!("build {}: {e}", record.id));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::RecipeBundle;
    use crate::registry::{Trigger, TriggerKind};

    fn record(status: BuildStatus, minutes_ago: i64, limit: Option<u32>) -> BuildRecord {
        let mut recipe = serde_json::json!({"name": "web", "base": {"image": "ami-1"}});
        if let Some(l) = limit {
            recipe["builder"] = serde_json::json!({"time_limit_minutes": l});
        }
        let mut r = BuildRecord::new(
            "b",
            "web",
            RecipeBundle {
                recipe,
                files: Default::default(),
            },
            Trigger::of(TriggerKind::Console),
            false,
        );
        r.status = status;
        r.created_at = Utc::now() - Duration::minutes(minutes_ago);
        r
    }

    #[test]
    fn finished_builds_lose_their_builders() {
        let now = Utc::now();
        for status in [BuildStatus::Succeeded, BuildStatus::Failed] {
            let r = record(status, 1, None);
            assert_eq!(
                judge(Some(&r), Some(now), now, 240),
                Verdict::Terminate(Reason::Finished {
                    status: status.to_string()
                })
            );
        }
    }

    #[test]
    fn kept_builders_of_failed_builds_stay_until_their_limit() {
        let now = Utc::now();
        let mut r = record(BuildStatus::Failed, 100, Some(60));
        r.kept = Some("instance i-0123 in eu-west-1".into());
        r.updated_at = now - Duration::minutes(59);
        assert_eq!(judge(Some(&r), None, now, 240), Verdict::Keep);
        r.updated_at = now - Duration::minutes(61);
        assert_eq!(
            judge(Some(&r), None, now, 240),
            Verdict::Terminate(Reason::Expired { limit_minutes: 60 })
        );
    }

    #[test]
    fn running_builds_are_kept_until_their_limit() {
        let now = Utc::now();
        assert_eq!(
            judge(
                Some(&record(BuildStatus::Running, 59, Some(60))),
                None,
                now,
                240
            ),
            Verdict::Keep
        );
        assert_eq!(
            judge(
                Some(&record(BuildStatus::Running, 61, Some(60))),
                None,
                now,
                240
            ),
            Verdict::Terminate(Reason::Expired { limit_minutes: 60 })
        );
        assert_eq!(
            judge(
                Some(&record(BuildStatus::Running, 200, None)),
                None,
                now,
                240
            ),
            Verdict::Keep
        );
    }

    #[test]
    fn orphans_go_after_the_default_limit() {
        let now = Utc::now();
        assert_eq!(
            judge(None, Some(now - Duration::minutes(10)), now, 240),
            Verdict::Keep
        );
        assert_eq!(
            judge(None, Some(now - Duration::minutes(241)), now, 240),
            Verdict::Terminate(Reason::Orphaned { limit_minutes: 240 })
        );
        assert_eq!(judge(None, None, now, 240), Verdict::Keep);
    }
}
