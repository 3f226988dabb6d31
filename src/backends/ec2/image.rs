//! Capture: CreateImage from the stopped builder, wait until available,
//! copy to the other publish regions in parallel, share with the publish
//! accounts. Images are found again by their deterministic name (owner
//! `self`) before anything is created, so a retried capture makes nothing
//! twice even where EC2 accepts duplicate names (moto).

use aws_sdk_ec2::types::{Image, ImageState, ResourceType, Tag, TagSpecification};
use futures::future::join_all;

use crate::build::{BuildRecord, ResourceKind};
use crate::pipeline::{BuildContext, Progress, StepError};
use crate::recipe::Recipe;
use crate::registry::{Artifact, Provider};

use super::error::{aws, is_not_found};
use super::instance::require_builder;
use super::{build_tags, client_token, filter, image_name, tag, Ec2Backend};

/// The regions a recipe's image lives in: the build region first, then the
/// publish regions (without repeats).
pub(super) fn publish_regions(home: &str, publish: &[String]) -> Vec<String> {
    let mut out = vec![home.to_string()];
    for r in publish {
        if !out.contains(r) {
            out.push(r.clone());
        }
    }
    out
}

/// Ledger name of a build's image in a region.
pub(super) fn image_key(region: &str, name: &str) -> String {
    format!("{region}/{name}")
}

fn image_tags(build_id: &str, recipe: &Recipe, name: &str) -> Vec<Tag> {
    let mut tags = build_tags(build_id, &recipe.name);
    tags.push(tag("Name", name));
    for (k, v) in &recipe.publish.tags {
        tags.push(tag(k, v));
    }
    tags
}

/// How far an image is.
enum Readiness {
    Ready(Box<Image>),
    Pending,
}

impl Ec2Backend {
    pub(super) async fn capture_image(
        &self,
        ctx: &BuildContext,
    ) -> Result<Progress<Vec<Artifact>>, StepError> {
        let recipe = &ctx.recipe()?.recipe;
        let name = image_name(&recipe.name, &ctx.build_id);
        let regions = publish_regions(&self.region, &recipe.publish.regions);
        let tags = image_tags(&ctx.build_id, recipe, &name);
        let record = ctx.current().await?;

        let source_id = self
            .source_image(ctx, &record, recipe, &name, &tags)
            .await?;
        let source = match self.readiness(&self.region, &source_id).await? {
            Readiness::Ready(image) => *image,
            Readiness::Pending => {
                return self.wait(
                    ctx,
                    &format!("image {source_id} in {} to become available", self.region),
                )
            }
        };

        let record = ctx.current().await?;
        let copies = self
            .copies(ctx, &record, &source_id, &name, &tags, &regions[1..])
            .await?;
        let states = join_all(copies.iter().map(|(region, id)| self.readiness(region, id))).await;
        let mut images = vec![(self.region.clone(), source)];
        let mut pending = Vec::new();
        for ((region, id), state) in copies.iter().zip(states) {
            match state? {
                Readiness::Ready(image) => images.push((region.clone(), *image)),
                Readiness::Pending => pending.push(format!("{id} in {region}")),
            }
        }
        if !pending.is_empty() {
            return self.wait(
                ctx,
                &format!("image copies {} to become available", pending.join(", ")),
            );
        }

        self.finish_images(ctx, &images, &tags, &recipe.publish.accounts)
            .await?;
        let artifacts = images
            .iter()
            .map(|(region, image)| Artifact {
                name: format!("aws/{region}"),
                provider: Provider::Aws,
                region: Some(region.clone()),
                image_id: image.image_id().unwrap_or_default().to_string(),
                account: image.owner_id().map(str::to_string),
                path: None,
            })
            .collect();
        Ok(Progress::Done(artifacts))
    }

    /// The image in the build region: from the ledger, found by name, or
    /// created from the builder.
    async fn source_image(
        &self,
        ctx: &BuildContext,
        record: &BuildRecord,
        recipe: &Recipe,
        name: &str,
        tags: &[Tag],
    ) -> Result<String, StepError> {
        let key = image_key(&self.region, name);
        if let Some(id) = record
            .resource(ResourceKind::Image, &key)
            .and_then(|r| r.id.clone())
        {
            return Ok(id);
        }
        if let Some(id) = self.image_by_name(&self.region, name).await? {
            tracing::info!(build = %ctx.build_id, image = %id, "found the image of an earlier attempt");
            ctx.plan(ResourceKind::Image, &key, Some(&self.region))
                .await?;
            ctx.created(ResourceKind::Image, &key, &id).await?;
            return Ok(id);
        }
        let instance = require_builder(record)?;
        ctx.plan(ResourceKind::Image, &key, Some(&self.region))
            .await?;
        let description: String = format!("bakehouse build {} of {}", ctx.build_id, recipe.name)
            .chars()
            .take(255)
            .collect();
        let out = self
            .ec2(&self.region)
            .create_image()
            .instance_id(&instance)
            .name(name)
            .description(description)
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Image)
                    .set_tags(Some(tags.to_vec()))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| aws(format!("CreateImage {name} from {instance}"), e))?;
        let id = out
            .image_id()
            .ok_or_else(|| StepError::Retryable("CreateImage returned no image id".into()))?
            .to_string();
        ctx.created(ResourceKind::Image, &key, &id).await?;
        tracing::info!(build = %ctx.build_id, image = %id, %instance, "image created");
        Ok(id)
    }

    /// The copies in `targets`, as (region, image id): from the ledger,
    /// found by name, or started now (in parallel).
    async fn copies(
        &self,
        ctx: &BuildContext,
        record: &BuildRecord,
        source_id: &str,
        name: &str,
        tags: &[Tag],
        targets: &[String],
    ) -> Result<Vec<(String, String)>, StepError> {
        let mut known = Vec::new();
        let mut to_copy = Vec::new();
        for region in targets {
            let key = image_key(region, name);
            if let Some(id) = record
                .resource(ResourceKind::Image, &key)
                .and_then(|r| r.id.clone())
            {
                known.push((region.clone(), id));
            } else if let Some(id) = self.image_by_name(region, name).await? {
                self.tag(region, &id, tags).await?;
                ctx.plan(ResourceKind::Image, &key, Some(region)).await?;
                ctx.created(ResourceKind::Image, &key, &id).await?;
                known.push((region.clone(), id));
            } else {
                to_copy.push(region.clone());
            }
        }
        if to_copy.is_empty() {
            return Ok(known);
        }
        ctx.update(|r| {
            for region in &to_copy {
                r.plan(ResourceKind::Image, &image_key(region, name), Some(region));
            }
        })
        .await?;
        let started = join_all(to_copy.iter().map(|region| async move {
            let out = self
                .ec2(region)
                .copy_image()
                .source_image_id(source_id)
                .source_region(&self.region)
                .name(name)
                .description(format!(
                    "bakehouse build {} (copy of {source_id} in {})",
                    ctx.build_id, self.region
                ))
                .client_token(client_token(&ctx.build_id, &format!("copy/{region}")))
                .send()
                .await
                .map_err(|e| aws(format!("CopyImage {source_id} to {region}"), e))?;
            let id = out
                .image_id()
                .ok_or_else(|| {
                    StepError::Retryable(format!("CopyImage to {region} returned no image id"))
                })?
                .to_string();
            self.tag(region, &id, tags).await?;
            tracing::info!(build = %ctx.build_id, image = %id, %region, "image copy started");
            Ok::<_, StepError>((region.clone(), id))
        }))
        .await;
        let mut first_error = None;
        let mut ok = Vec::new();
        for result in started {
            match result {
                Ok(pair) => ok.push(pair),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        ctx.update(|r| {
            for (region, id) in &ok {
                r.created(ResourceKind::Image, &image_key(region, name), id);
            }
        })
        .await?;
        if let Some(e) = first_error {
            return Err(e);
        }
        known.extend(ok);
        Ok(known)
    }

    /// An image of this account named `name` in `region` (the oldest, if
    /// several).
    pub(super) async fn image_by_name(
        &self,
        region: &str,
        name: &str,
    ) -> Result<Option<String>, StepError> {
        let out = self
            .ec2(region)
            .describe_images()
            .owners("self")
            .filters(filter("name", &[name]))
            .send()
            .await
            .map_err(|e| aws(format!("DescribeImages named {name} in {region}"), e))?;
        let mut found: Vec<(String, String)> = out
            .images()
            .iter()
            .filter(|i| i.name() == Some(name))
            .filter_map(|i| {
                Some((
                    i.creation_date().unwrap_or_default().to_string(),
                    i.image_id()?.to_string(),
                ))
            })
            .collect();
        found.sort();
        Ok(found.into_iter().next().map(|(_, id)| id))
    }

    /// One image, `None` when EC2 does not (or no longer) know it.
    pub(super) async fn describe_image(
        &self,
        region: &str,
        id: &str,
    ) -> Result<Option<Image>, StepError> {
        match self
            .ec2(region)
            .describe_images()
            .image_ids(id)
            .send()
            .await
        {
            Ok(out) => Ok(out
                .images
                .unwrap_or_default()
                .into_iter()
                .find(|i| i.image_id() == Some(id))),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(aws(format!("DescribeImages {id} in {region}"), e)),
        }
    }

    async fn readiness(&self, region: &str, id: &str) -> Result<Readiness, StepError> {
        let Some(image) = self.describe_image(region, id).await? else {
            // Not visible yet right after CreateImage / CopyImage.
            return Ok(Readiness::Pending);
        };
        match image.state() {
            Some(ImageState::Available) => Ok(Readiness::Ready(Box::new(image))),
            Some(ImageState::Pending) | Some(ImageState::Transient) | None => {
                Ok(Readiness::Pending)
            }
            Some(other) => Err(StepError::BuildFailed(format!(
                "image {id} in {region} is {}{}",
                other.as_str(),
                image
                    .state_reason()
                    .and_then(|r| r.message())
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ))),
        }
    }
}

/// The EBS snapshots behind an image.
pub(super) fn snapshot_ids(image: &Image) -> Vec<String> {
    image
        .block_device_mappings()
        .iter()
        .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()).map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_region_comes_first_without_repeats() {
        let publish = vec![
            "eu-west-1".to_string(),
            "us-east-1".to_string(),
            "eu-west-1".to_string(),
        ];
        assert_eq!(
            publish_regions("us-east-1", &publish),
            ["us-east-1", "eu-west-1"]
        );
        assert_eq!(publish_regions("us-east-1", &[]), ["us-east-1"]);
    }
}
