//! Resolving a recipe's base to an AMI in the build region.

use aws_sdk_ec2::types::{Image, ImageState};

use crate::pipeline::{ResolvedBase, StepError};
use crate::recipe::{Base, BaseFilter, LoadedRecipe};
use crate::registry::{Provider, Reference, Registry};

use super::error::{aws, is_not_found};
use super::{filter, Ec2Backend};

impl Ec2Backend {
    pub(super) async fn resolve(
        &self,
        recipe: &LoadedRecipe,
        registry: &Registry,
    ) -> Result<ResolvedBase, StepError> {
        match &recipe.recipe.base {
            Base::Image(id) => {
                self.available_image(id, "base image").await?;
                Ok(ResolvedBase {
                    id: id.clone(),
                    parent: None,
                })
            }
            Base::Filter(f) => Ok(ResolvedBase {
                id: self.filter_image(f).await?,
                parent: None,
            }),
            Base::Registry(text) => {
                let reference = Reference::name_or_label(text)?;
                let resolution = registry
                    .resolve_name_or_label(
                        &reference,
                        Some(Provider::Aws),
                        Some(self.region.clone()),
                    )
                    .await?;
                let parent = format!("{}@{}", resolution.package.name, resolution.package.version);
                let artifact = resolution.artifact.ok_or_else(|| {
                    StepError::NonRetryable(format!(
                        "base registry:{text}: {parent} has no artifact in {}",
                        self.region
                    ))
                })?;
                self.available_image(
                    &artifact.image_id,
                    &format!("base registry:{text} ({parent})"),
                )
                .await?;
                Ok(ResolvedBase {
                    id: artifact.image_id,
                    parent: Some(parent),
                })
            }
            Base::Path(p) => Err(StepError::NonRetryable(format!(
                "base path {p:?}: a local path base can only be built locally (the local builder); \
                 the EC2 builder needs an image id, an image filter or a registry reference"
            ))),
        }
    }

    /// The image `id` in the build region, which must exist and be available.
    pub(super) async fn available_image(&self, id: &str, what: &str) -> Result<Image, StepError> {
        let missing = || {
            StepError::NonRetryable(format!(
                "{what}: image {id} does not exist in {} (or is not visible to this account)",
                self.region
            ))
        };
        let out = match self
            .ec2(&self.region)
            .describe_images()
            .image_ids(id)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e)
                if is_not_found(&e) || super::error::code(&e) == Some("InvalidAMIID.Malformed") =>
            {
                return Err(missing())
            }
            Err(e) => return Err(aws(format!("DescribeImages {id} in {}", self.region), e)),
        };
        let image = out
            .images
            .unwrap_or_default()
            .into_iter()
            .next()
            .ok_or_else(missing)?;
        match image.state() {
            Some(ImageState::Available) => Ok(image),
            other => Err(StepError::NonRetryable(format!(
                "{what}: image {id} in {} is {}, not available",
                self.region,
                other.map(|s| s.as_str()).unwrap_or("in an unknown state")
            ))),
        }
    }

    async fn filter_image(&self, f: &BaseFilter) -> Result<String, StepError> {
        let mut req = self
            .ec2(&self.region)
            .describe_images()
            .filters(filter("name", &[&f.name]))
            .filters(filter("state", &["available"]));
        for (name, value) in &f.filters {
            req = req.filters(filter(name, &[value]));
        }
        if !f.owners.is_empty() {
            req = req.set_owners(Some(f.owners.clone()));
        }
        let out = req.send().await.map_err(|e| {
            aws(
                format!("DescribeImages in {} for the base filter", self.region),
                e,
            )
        })?;
        let mut images: Vec<(String, String)> = out
            .images()
            .iter()
            .filter_map(|i| {
                Some((
                    i.creation_date().unwrap_or_default().to_string(),
                    i.image_id()?.to_string(),
                ))
            })
            .collect();
        // Newest first; ties broken by id so the choice is stable.
        images.sort_by(|a, b| b.cmp(a));
        let describe = || {
            let mut text = format!("base filter name={:?}", f.name);
            if !f.owners.is_empty() {
                text.push_str(&format!(" owners={:?}", f.owners));
            }
            for (k, v) in &f.filters {
                text.push_str(&format!(" {k}={v:?}"));
            }
            text
        };
        match images.as_slice() {
            [] => Err(StepError::NonRetryable(format!(
                "{} matches no available image in {}",
                describe(),
                self.region
            ))),
            [(_, only)] => Ok(only.clone()),
            [(_, newest), ..] if f.most_recent => Ok(newest.clone()),
            many => Err(StepError::NonRetryable(format!(
                "{} matches {} images in {} ({}{}): set most_recent: true or narrow the filter",
                describe(),
                many.len(),
                self.region,
                many.iter()
                    .take(5)
                    .map(|(_, id)| id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                if many.len() > 5 { ", ..." } else { "" }
            ))),
        }
    }
}
