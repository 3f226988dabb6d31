//! What retention means for an AMI: deprecation through EC2's own
//! deprecation time, deletion as deregistration plus its snapshots (the
//! same removal teardown uses).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::lifecycle::{ImageStore, LifecycleError};
use crate::registry::{Artifact, Provider};

use super::error::aws;
use super::Ec2Backend;

impl Ec2Backend {
    fn artifact_region<'a>(&'a self, artifact: &'a Artifact) -> &'a str {
        artifact.region.as_deref().unwrap_or(&self.region)
    }
}

#[async_trait]
impl ImageStore for Ec2Backend {
    fn provider(&self) -> Provider {
        Provider::Aws
    }

    async fn deprecate(
        &self,
        artifact: &Artifact,
        at: DateTime<Utc>,
    ) -> Result<Vec<String>, LifecycleError> {
        let region = self.artifact_region(artifact);
        let id = &artifact.image_id;
        // EC2 wants a time at least a minute ahead, rounded to the minute.
        let when = at + chrono::Duration::minutes(2);
        self.ec2(region)
            .enable_image_deprecation()
            .image_id(id)
            .deprecate_at(aws_sdk_ec2::primitives::DateTime::from_secs(
                when.timestamp() / 60 * 60,
            ))
            .send()
            .await
            .map_err(|e| {
                LifecycleError::Provider(
                    aws(format!("EnableImageDeprecation {id} in {region}"), e).to_string(),
                )
            })?;
        Ok(vec![format!("image {id} in {region} deprecated")])
    }

    async fn delete(&self, artifact: &Artifact) -> Result<Vec<String>, LifecycleError> {
        let region = self.artifact_region(artifact);
        let removed = self
            .remove_images_in(region, std::slice::from_ref(&artifact.image_id), Vec::new())
            .await
            .map_err(|e| LifecycleError::Provider(e.to_string()))?;
        let mut done: Vec<String> = removed
            .images
            .iter()
            .map(|id| format!("image {id} in {region} deregistered"))
            .collect();
        if removed.images.is_empty() {
            done.push(format!(
                "image {} in {region} was already gone",
                artifact.image_id
            ));
        }
        done.extend(
            removed
                .snapshots
                .iter()
                .map(|id| format!("snapshot {id} in {region} deleted")),
        );
        Ok(done)
    }
}
