//! Publishing captured images: their snapshots recorded and tagged, launch
//! permissions on the images and create-volume permissions on their
//! snapshots for the publish accounts in every region, everything marked to
//! be kept when the build succeeds.

use aws_sdk_ec2::types::{
    Image, LaunchPermission, LaunchPermissionModifications, OperationType, SnapshotAttributeName,
    Tag,
};
use futures::future::join_all;

use crate::build::ResourceKind;
use crate::pipeline::{BuildContext, StepError};

use super::error::aws;
use super::image::snapshot_ids;
use super::Ec2Backend;

impl Ec2Backend {
    /// Records and tags the snapshots, shares the images, and marks all of
    /// them to be kept.
    pub(super) async fn finish_images(
        &self,
        ctx: &BuildContext,
        images: &[(String, Image)],
        tags: &[Tag],
        accounts: &[String],
    ) -> Result<(), StepError> {
        let snapshots: Vec<(String, Vec<String>)> = images
            .iter()
            .map(|(region, image)| (region.clone(), snapshot_ids(image)))
            .collect();
        let image_ids: Vec<(String, String)> = images
            .iter()
            .map(|(region, image)| {
                (
                    region.clone(),
                    image.image_id().unwrap_or_default().to_string(),
                )
            })
            .collect();
        ctx.update(|r| {
            for (region, snaps) in &snapshots {
                for snap in snaps {
                    let key = format!("{region}/{snap}");
                    r.plan(ResourceKind::Snapshot, &key, Some(region));
                    r.created(ResourceKind::Snapshot, &key, snap);
                }
            }
            for res in r.resources.iter_mut() {
                let ours = match res.kind {
                    ResourceKind::Image => image_ids
                        .iter()
                        .any(|(_, id)| res.id.as_deref() == Some(id)),
                    ResourceKind::Snapshot => snapshots
                        .iter()
                        .any(|(_, s)| s.iter().any(|id| res.id.as_deref() == Some(id))),
                    _ => false,
                };
                if ours {
                    res.keep_on_success = true;
                }
            }
        })
        .await?;
        let tagging = join_all(snapshots.iter().filter(|(_, s)| !s.is_empty()).map(
            |(region, snaps)| async move {
                self.ec2(region)
                    .create_tags()
                    .set_resources(Some(snaps.clone()))
                    .set_tags(Some(tags.to_vec()))
                    .send()
                    .await
                    .map_err(|e| aws(format!("CreateTags on snapshots in {region}"), e))
            },
        ))
        .await;
        tagging.into_iter().collect::<Result<Vec<_>, _>>()?;
        if !accounts.is_empty() {
            let sharing = join_all(image_ids.iter().map(|(region, id)| async move {
                let permissions = accounts
                    .iter()
                    .map(|a| LaunchPermission::builder().user_id(a).build())
                    .collect();
                self.ec2(region)
                    .modify_image_attribute()
                    .image_id(id)
                    .launch_permission(
                        LaunchPermissionModifications::builder()
                            .set_add(Some(permissions))
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(|e| aws(format!("ModifyImageAttribute (share {id} in {region})"), e))
            }))
            .await;
            sharing.into_iter().collect::<Result<Vec<_>, _>>()?;
            // The accounts also get create-volume permission on the
            // snapshots, so they can copy the image into their own account.
            let snapshot_sharing = join_all(snapshots.iter().flat_map(|(region, snaps)| {
                snaps.iter().map(move |snap| async move {
                    self.ec2(region)
                        .modify_snapshot_attribute()
                        .snapshot_id(snap)
                        .attribute(SnapshotAttributeName::CreateVolumePermission)
                        .operation_type(OperationType::Add)
                        .set_user_ids(Some(accounts.to_vec()))
                        .send()
                        .await
                        .map_err(|e| {
                            aws(
                                format!("ModifySnapshotAttribute (share {snap} in {region})"),
                                e,
                            )
                        })
                })
            }))
            .await;
            snapshot_sharing
                .into_iter()
                .collect::<Result<Vec<_>, _>>()?;
            tracing::info!(build = %ctx.build_id, accounts = ?accounts, "images and snapshots shared");
        }
        Ok(())
    }

    pub(super) async fn tag(&self, region: &str, id: &str, tags: &[Tag]) -> Result<(), StepError> {
        self.ec2(region)
            .create_tags()
            .resources(id)
            .set_tags(Some(tags.to_vec()))
            .send()
            .await
            .map_err(|e| aws(format!("CreateTags on {id} in {region}"), e))?;
        Ok(())
    }
}
