//! Teardown: terminate every builder of the build (ledger and tag), and on
//! a failed build deregister every image it made in every region and delete
//! their snapshots. Safe to run twice and when nothing was created.

use std::collections::BTreeSet;

use futures::future::join_all;
use tracing::Instrument;

use crate::build::{BuildRecord, ResourceKind};
use crate::pipeline::{BuildContext, StepError};

use super::error::{aws, is_not_found};
use super::image::{publish_regions, snapshot_ids};
use super::instance::LIVE_STATES;
use super::{filter, image_name, Ec2Backend, TAG_BUILD};

/// What one [`Ec2Backend::remove_images_in`] call deregistered and deleted.
pub(super) struct RemovedIds {
    /// Images deregistered.
    pub(super) images: Vec<String>,
    /// Snapshots deleted (and those found gone).
    pub(super) snapshots: Vec<String>,
}

/// What was removed in one region.
#[derive(Default)]
struct Removed {
    region: String,
    images: Vec<String>,
    snapshots: Vec<String>,
}

impl Ec2Backend {
    /// Tears the build down; with `keep_builders` (a failed build run with
    /// `on_error: abort`) its live instances are left running and returned
    /// as `(region, instance id)`, everything else is removed all the same.
    pub(super) async fn teardown_build(
        &self,
        ctx: &BuildContext,
        succeeded: bool,
        keep_builders: bool,
    ) -> Result<Vec<(String, String)>, StepError> {
        let record = ctx.current().await?;
        let live = self.live_builders(ctx, &record).await?;
        let (terminated, kept) = if keep_builders {
            (0, live)
        } else {
            (self.terminate(ctx, &live).await?, Vec::new())
        };
        let removed = self.remove_images(ctx, &record, succeeded).await?;
        let regions: BTreeSet<String> = removed.iter().map(|r| r.region.clone()).collect();
        ctx.update(|r| {
            for res in r.resources.iter_mut() {
                let gone = match res.kind {
                    ResourceKind::Instance => !res
                        .id
                        .as_ref()
                        .is_some_and(|id| kept.iter().any(|(_, k)| k == id)),
                    ResourceKind::Command => true,
                    ResourceKind::Image | ResourceKind::Snapshot if !succeeded => {
                        // Everything of the build in a region swept clean,
                        // including planned resources that never got an id.
                        res.region.as_ref().is_some_and(|g| regions.contains(g))
                    }
                    ResourceKind::Image => res
                        .id
                        .as_ref()
                        .is_some_and(|id| removed.iter().any(|x| x.images.contains(id))),
                    ResourceKind::Snapshot => res
                        .id
                        .as_ref()
                        .is_some_and(|id| removed.iter().any(|x| x.snapshots.contains(id))),
                    ResourceKind::WorkDir
                    | ResourceKind::File
                    | ResourceKind::Cgroup
                    | ResourceKind::Mount => false,
                };
                if gone {
                    res.deleted = true;
                }
            }
        })
        .await?;
        let images: usize = removed.iter().map(|r| r.images.len()).sum();
        let snapshots: usize = removed.iter().map(|r| r.snapshots.len()).sum();
        tracing::info!(build = %ctx.build_id, succeeded, terminated, kept = kept.len(), images, snapshots, "EC2 teardown done");
        Ok(kept)
    }

    /// Terminates `instances` (region, id); how many.
    async fn terminate(
        &self,
        ctx: &BuildContext,
        instances: &[(String, String)],
    ) -> Result<usize, StepError> {
        let regions: BTreeSet<&str> = instances.iter().map(|(r, _)| r.as_str()).collect();
        for region in regions {
            let live: Vec<String> = instances
                .iter()
                .filter(|(r, _)| r == region)
                .map(|(_, id)| id.clone())
                .collect();
            self.ec2(region)
                .terminate_instances()
                .set_instance_ids(Some(live.clone()))
                .send()
                .await
                .map_err(|e| {
                    aws(
                        format!("TerminateInstances {} in {region}", live.join(", ")),
                        e,
                    )
                })?;
            tracing::info!(build = %ctx.build_id, instances = ?live, %region, "builders terminated");
        }
        Ok(instances.len())
    }

    /// The build's instances that are not terminated yet, as (region, id):
    /// those in the ledger and those tagged with the build.
    async fn live_builders(
        &self,
        ctx: &BuildContext,
        record: &BuildRecord,
    ) -> Result<Vec<(String, String)>, StepError> {
        let mut regions = BTreeSet::from([self.region.clone()]);
        regions.extend(
            record
                .resources_of(ResourceKind::Instance)
                .filter_map(|r| r.region.clone()),
        );
        let mut found = Vec::new();
        for region in regions {
            let ledger: Vec<String> = record
                .resources_of(ResourceKind::Instance)
                .filter(|r| r.region.as_deref().unwrap_or(&self.region) == region)
                .filter_map(|r| r.id.clone())
                .collect();
            let mut live = self
                .live_instances(
                    &region,
                    filter(&format!("tag:{TAG_BUILD}"), &[&ctx.build_id]),
                )
                .await?;
            if !ledger.is_empty() {
                let ids: Vec<&str> = ledger.iter().map(String::as_str).collect();
                live.extend(
                    self.live_instances(&region, filter("instance-id", &ids))
                        .await?,
                );
            }
            live.sort();
            live.dedup();
            found.extend(live.into_iter().map(|id| (region.clone(), id)));
        }
        Ok(found)
    }

    async fn live_instances(
        &self,
        region: &str,
        which: aws_sdk_ec2::types::Filter,
    ) -> Result<Vec<String>, StepError> {
        let mut ids = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .ec2(region)
                .describe_instances()
                .filters(which.clone())
                .filters(filter("instance-state-name", &LIVE_STATES))
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| aws(format!("DescribeInstances in {region}"), e))?;
            ids.extend(
                out.reservations()
                    .iter()
                    .flat_map(|r| r.instances())
                    .filter_map(|i| i.instance_id().map(str::to_string)),
            );
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        Ok(ids)
    }

    /// On a failed build: every image of the build in every region it may
    /// have reached, with its snapshots. On a successful one: only images
    /// and snapshots in the ledger that are not marked to be kept.
    async fn remove_images(
        &self,
        ctx: &BuildContext,
        record: &BuildRecord,
        succeeded: bool,
    ) -> Result<Vec<Removed>, StepError> {
        let recipe_name = ctx
            .recipe
            .as_ref()
            .map(|r| r.recipe.name.clone())
            .unwrap_or_else(|| record.recipe_name.clone());
        let name = image_name(&recipe_name, &ctx.build_id);
        let publish: Vec<String> = ctx
            .recipe
            .as_ref()
            .map(|r| r.recipe.publish.regions.clone())
            .unwrap_or_default();
        let mut regions: BTreeSet<String> = publish_regions(&self.region, &publish)
            .into_iter()
            .collect();
        regions.extend(
            record
                .resources
                .iter()
                .filter(|r| matches!(r.kind, ResourceKind::Image | ResourceKind::Snapshot))
                .filter_map(|r| r.region.clone()),
        );
        let results = join_all(regions.iter().map(|region| {
            let name = name.clone();
            async move {
                let in_region = |kind: ResourceKind| -> Vec<String> {
                    record
                        .resources_of(kind)
                        .filter(|r| r.region.as_deref() == Some(region.as_str()) && !r.deleted)
                        .filter(|r| !succeeded || !r.keep_on_success)
                        .filter_map(|r| r.id.clone())
                        .collect()
                };
                let mut images = in_region(ResourceKind::Image);
                let mut snapshots = in_region(ResourceKind::Snapshot);
                if !succeeded {
                    images.extend(self.build_images(ctx, region, &name).await?);
                    snapshots.extend(self.build_snapshots(ctx, region).await?);
                }
                images.sort();
                images.dedup();
                self.remove_region(ctx, region, images, snapshots).await
            }
        }))
        .await;
        results.into_iter().collect()
    }

    /// Images of the build in a region: tagged with it or carrying its name.
    async fn build_images(
        &self,
        ctx: &BuildContext,
        region: &str,
        name: &str,
    ) -> Result<Vec<String>, StepError> {
        let mut ids = Vec::new();
        for which in [
            filter(&format!("tag:{TAG_BUILD}"), &[&ctx.build_id]),
            filter("name", &[name]),
        ] {
            let out = self
                .ec2(region)
                .describe_images()
                .owners("self")
                .filters(which)
                .send()
                .await
                .map_err(|e| {
                    aws(
                        format!("DescribeImages of build {} in {region}", ctx.build_id),
                        e,
                    )
                })?;
            ids.extend(
                out.images()
                    .iter()
                    .filter_map(|i| i.image_id().map(str::to_string)),
            );
        }
        Ok(ids)
    }

    /// Snapshots in a region tagged with the build.
    async fn build_snapshots(
        &self,
        ctx: &BuildContext,
        region: &str,
    ) -> Result<Vec<String>, StepError> {
        self.snapshots_matching(
            region,
            filter(&format!("tag:{TAG_BUILD}"), &[&ctx.build_id]),
        )
        .await
    }

    async fn snapshots_matching(
        &self,
        region: &str,
        which: aws_sdk_ec2::types::Filter,
    ) -> Result<Vec<String>, StepError> {
        let out = self
            .ec2(region)
            .describe_snapshots()
            .owner_ids("self")
            .filters(which)
            .send()
            .await
            .map_err(|e| aws(format!("DescribeSnapshots in {region}"), e))?;
        Ok(out
            .snapshots()
            .iter()
            .filter_map(|s| s.snapshot_id().map(str::to_string))
            .collect())
    }

    /// Deregisters `images` and deletes their snapshots and `snapshots`.
    async fn remove_region(
        &self,
        ctx: &BuildContext,
        region: &str,
        images: Vec<String>,
        snapshots: Vec<String>,
    ) -> Result<Removed, StepError> {
        let gone = self
            .remove_images_in(region, &images, snapshots)
            .instrument(tracing::info_span!("teardown", build = %ctx.build_id))
            .await?;
        Ok(Removed {
            region: region.to_string(),
            images,
            snapshots: gone.snapshots,
        })
    }

    /// Deregisters `images` in `region` and deletes their snapshots (those
    /// their block device mappings name and those whose description names
    /// them, as EC2 writes it) and `snapshots`. What is already gone is
    /// skipped; returns what this call removed or found gone.
    pub(super) async fn remove_images_in(
        &self,
        region: &str,
        images: &[String],
        mut snapshots: Vec<String>,
    ) -> Result<RemovedIds, StepError> {
        let ec2 = self.ec2(region);
        let mut deregistered = Vec::new();
        for id in images {
            if let Some(image) = self.describe_image(region, id).await? {
                snapshots.extend(snapshot_ids(&image));
            }
            // Snapshots EC2 made for the image (also while it was still
            // pending, when its block device mappings may not show them) say
            // so in their description.
            snapshots.extend(
                self.snapshots_matching(region, filter("description", &[&format!("*{id}*")]))
                    .await?,
            );
            match ec2.deregister_image().image_id(id).send().await {
                Ok(_) => {
                    tracing::info!(image = %id, %region, "image deregistered");
                    deregistered.push(id.clone());
                }
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(aws(format!("DeregisterImage {id} in {region}"), e)),
            }
        }
        snapshots.sort();
        snapshots.dedup();
        let mut deleted = Vec::new();
        for id in &snapshots {
            match ec2.delete_snapshot().snapshot_id(id).send().await {
                Ok(_) => {
                    tracing::info!(snapshot = %id, %region, "snapshot deleted");
                    deleted.push(id.clone());
                }
                Err(e) if is_not_found(&e) => deleted.push(id.clone()),
                Err(e) => return Err(aws(format!("DeleteSnapshot {id} in {region}"), e)),
            }
        }
        Ok(RemovedIds {
            images: deregistered,
            snapshots: deleted,
        })
    }
}
