//! The builder instance: launch (reusing one an earlier attempt made),
//! wait until it runs and SSM can reach it, stop it before capture.

use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, HttpTokensState, IamInstanceProfileSpecification,
    InstanceMetadataEndpointState, InstanceMetadataOptionsRequest, InstanceStateName, InstanceType,
    ResourceType, TagSpecification, VolumeType,
};
use aws_sdk_ssm::types::{InstanceInformationStringFilter, PingStatus};

use crate::build::{BuildRecord, ResourceKind};
use crate::pipeline::{BuildContext, Progress, StepError};

use super::error::aws;
use super::{build_tags, client_token, filter, tag, Ec2Backend, TAG_BUILD};

/// States of an instance that still exists as a builder.
pub(super) const LIVE_STATES: [&str; 4] = ["pending", "running", "stopping", "stopped"];

/// A builder instance and its state.
pub(super) struct Builder {
    /// Instance id.
    pub(super) id: String,
    /// Its state as last described.
    pub(super) state: Option<InstanceStateName>,
}

impl Ec2Backend {
    pub(super) async fn launch_builder(&self, ctx: &BuildContext) -> Result<Progress, StepError> {
        let record = ctx.current().await?;
        let builder = match self.existing_builder(ctx, &record).await? {
            Some(b) => b,
            None => self.run_builder(ctx, &record).await?,
        };
        match builder.state {
            None | Some(InstanceStateName::Pending) => {
                self.wait(ctx, &format!("builder instance {} to start", builder.id))
            }
            Some(InstanceStateName::Running) => {
                if !self.settings.ssm_online_check || self.ssm_online(&builder.id).await? {
                    tracing::info!(build = %ctx.build_id, instance = %builder.id, "builder ready");
                    Ok(Progress::Done(()))
                } else {
                    self.wait(ctx, &format!("the SSM agent on {} to come online", builder.id))
                }
            }
            Some(other) => Err(StepError::NonRetryable(format!(
                "builder instance {} is {} while launching: it was stopped or terminated outside the build",
                builder.id,
                other.as_str()
            ))),
        }
    }

    /// The builder an earlier attempt of this build launched: the one in the
    /// ledger, else a pending or running instance tagged with the build
    /// (which is then recorded).
    async fn existing_builder(
        &self,
        ctx: &BuildContext,
        record: &BuildRecord,
    ) -> Result<Option<Builder>, StepError> {
        if let Some(id) = ledger_builder(record) {
            let state = self.instance_state(&id).await?;
            return Ok(Some(Builder { id, state }));
        }
        let out = self
            .ec2(&self.region)
            .describe_instances()
            .filters(filter(&format!("tag:{TAG_BUILD}"), &[&ctx.build_id]))
            .filters(filter("instance-state-name", &["pending", "running"]))
            .send()
            .await
            .map_err(|e| aws(format!("DescribeInstances in {}", self.region), e))?;
        let mut found: Vec<_> = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter_map(|i| {
                Some((
                    i.launch_time().map(|t| t.secs()).unwrap_or(0),
                    i.instance_id()?.to_string(),
                    i.state().and_then(|s| s.name()).cloned(),
                ))
            })
            .collect();
        found.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let Some((_, id, state)) = found.into_iter().next() else {
            return Ok(None);
        };
        tracing::info!(build = %ctx.build_id, instance = %id, "found the builder of an earlier attempt");
        let token = client_token(&ctx.build_id, BUILDER);
        ctx.plan(ResourceKind::Instance, &token, Some(&self.region))
            .await?;
        ctx.created(ResourceKind::Instance, &token, &id).await?;
        Ok(Some(Builder { id, state }))
    }

    async fn run_builder(
        &self,
        ctx: &BuildContext,
        record: &BuildRecord,
    ) -> Result<Builder, StepError> {
        let base_id = record
            .base_id
            .clone()
            .ok_or_else(|| StepError::NonRetryable("launch: the base is not resolved".into()))?;
        let token = client_token(&ctx.build_id, BUILDER);
        self.run_instance(ctx, &base_id, "base image", &token, "builder")
            .await
    }

    /// Launches one instance of the build from `image_id` (`what` names the
    /// image in errors) with the builder's settings: IMDSv2 required, no
    /// key pair, the builder's instance profile, tagged with the build (so
    /// teardown and the reaper find it) and recorded in the ledger under
    /// `token` (also its client token) before it is created.
    pub(super) async fn run_instance(
        &self,
        ctx: &BuildContext,
        image_id: &str,
        what: &str,
        token: &str,
        role: &str,
    ) -> Result<Builder, StepError> {
        let recipe = &ctx.recipe()?.recipe;
        let base_id = image_id.to_string();
        let token = token.to_string();
        let base = self.available_image(&base_id, what).await?;
        let settings = &recipe.builder;
        let mut tags = build_tags(&ctx.build_id, &recipe.name);
        tags.push(tag(
            "Name",
            &format!("bakehouse {role} {} {}", recipe.name, ctx.build_id),
        ));
        for (k, v) in &settings.tags {
            tags.push(tag(k, v));
        }
        let tag_spec = |kind: ResourceType| {
            TagSpecification::builder()
                .resource_type(kind)
                .set_tags(Some(tags.clone()))
                .build()
        };
        let instance_type = settings
            .instance_type
            .clone()
            .unwrap_or_else(|| self.settings.instance_type.clone());
        let mut req = self
            .ec2(&self.region)
            .run_instances()
            .image_id(&base_id)
            .instance_type(InstanceType::from(instance_type.as_str()))
            .min_count(1)
            .max_count(1)
            .client_token(&token)
            .metadata_options(
                InstanceMetadataOptionsRequest::builder()
                    .http_tokens(HttpTokensState::Required)
                    .http_endpoint(InstanceMetadataEndpointState::Enabled)
                    .build(),
            )
            .instance_initiated_shutdown_behavior(aws_sdk_ec2::types::ShutdownBehavior::Stop)
            .tag_specifications(tag_spec(ResourceType::Instance))
            .tag_specifications(tag_spec(ResourceType::Volume));
        if let Some(profile) = settings
            .instance_profile
            .clone()
            .or_else(|| self.settings.instance_profile.clone())
        {
            req = req.iam_instance_profile(
                IamInstanceProfileSpecification::builder()
                    .name(profile)
                    .build(),
            );
        }
        if let Some(subnet) = settings
            .subnet_id
            .clone()
            .or_else(|| self.settings.subnet_id.clone())
        {
            req = req.subnet_id(subnet);
        }
        let groups = if settings.security_group_ids.is_empty() {
            self.settings.security_group_ids.clone()
        } else {
            settings.security_group_ids.clone()
        };
        if !groups.is_empty() {
            req = req.set_security_group_ids(Some(groups));
        }
        if settings.volume_size_gb.is_some() || settings.kms_key_id.is_some() {
            let device = base.root_device_name().unwrap_or("/dev/xvda").to_string();
            let mut ebs = EbsBlockDevice::builder()
                .delete_on_termination(true)
                .volume_type(VolumeType::Gp3);
            if let Some(size) = settings.volume_size_gb {
                ebs = ebs.volume_size(i32::try_from(size).unwrap_or(i32::MAX));
            }
            if let Some(key) = &settings.kms_key_id {
                ebs = ebs.encrypted(true).kms_key_id(key);
            }
            req = req.block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name(device)
                    .ebs(ebs.build())
                    .build(),
            );
        }
        ctx.plan(ResourceKind::Instance, &token, Some(&self.region))
            .await?;
        let out = req
            .send()
            .await
            .map_err(|e| aws(format!("RunInstances of {base_id} in {}", self.region), e))?;
        let instance = out
            .instances()
            .first()
            .ok_or_else(|| StepError::Retryable("RunInstances returned no instance".into()))?;
        let id = instance
            .instance_id()
            .ok_or_else(|| StepError::Retryable("RunInstances returned no instance id".into()))?
            .to_string();
        ctx.created(ResourceKind::Instance, &token, &id).await?;
        tracing::info!(build = %ctx.build_id, instance = %id, image = %base_id, %instance_type, role, "instance launched");
        Ok(Builder {
            id,
            state: instance.state().and_then(|s| s.name()).cloned(),
        })
    }

    /// The state of an instance in the build region (`None` when EC2 does
    /// not list it yet).
    pub(super) async fn instance_state(
        &self,
        id: &str,
    ) -> Result<Option<InstanceStateName>, StepError> {
        let out = self
            .ec2(&self.region)
            .describe_instances()
            .filters(filter("instance-id", &[id]))
            .send()
            .await
            .map_err(|e| aws(format!("DescribeInstances {id} in {}", self.region), e))?;
        Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find(|i| i.instance_id() == Some(id))
            .and_then(|i| i.state())
            .and_then(|s| s.name())
            .cloned())
    }

    /// Whether SSM reports the agent on `id` online.
    pub(super) async fn ssm_online(&self, id: &str) -> Result<bool, StepError> {
        let filter = InstanceInformationStringFilter::builder()
            .key("InstanceIds")
            .values(id)
            .build()
            .map_err(|e| StepError::NonRetryable(format!("SSM filter: {e}")))?;
        let out = self
            .ssm
            .describe_instance_information()
            .filters(filter)
            .send()
            .await
            .map_err(|e| aws(format!("SSM DescribeInstanceInformation {id} (turn ssm_online_check off where SSM lacks it, e.g. moto)"), e))?;
        Ok(out
            .instance_information_list()
            .iter()
            .any(|i| i.instance_id() == Some(id) && i.ping_status() == Some(&PingStatus::Online)))
    }

    /// Stops the builder; `Done` once it is stopped.
    pub(super) async fn stop_builder(
        &self,
        ctx: &BuildContext,
        id: &str,
    ) -> Result<Progress, StepError> {
        match self.instance_state(id).await? {
            Some(InstanceStateName::Stopped) => Ok(Progress::Done(())),
            Some(InstanceStateName::Stopping) | None => {
                self.wait(ctx, &format!("builder instance {id} to stop"))
            }
            Some(InstanceStateName::Running) | Some(InstanceStateName::Pending) => {
                let out = self
                    .ec2(&self.region)
                    .stop_instances()
                    .instance_ids(id)
                    .send()
                    .await
                    .map_err(|e| aws(format!("StopInstances {id}"), e))?;
                tracing::info!(build = %ctx.build_id, instance = %id, "stopping the builder");
                let now = out
                    .stopping_instances()
                    .iter()
                    .find(|c| c.instance_id() == Some(id))
                    .and_then(|c| c.current_state())
                    .and_then(|s| s.name());
                if now == Some(&InstanceStateName::Stopped) {
                    Ok(Progress::Done(()))
                } else {
                    self.wait(ctx, &format!("builder instance {id} to stop"))
                }
            }
            Some(other) => Err(StepError::NonRetryable(format!(
                "builder instance {id} is {}: it was terminated outside the build",
                other.as_str()
            ))),
        }
    }
}

/// The purpose of the builder instance in its client token.
const BUILDER: &str = "builder";

/// The builder instance id recorded in the ledger, if launched and not
/// torn down (the test instance is another entry).
pub(super) fn ledger_builder(record: &BuildRecord) -> Option<String> {
    record
        .resource(ResourceKind::Instance, &client_token(&record.id, BUILDER))
        .filter(|r| !r.deleted)
        .and_then(|r| r.id.clone())
}

/// The builder instance id, which later steps need.
pub(super) fn require_builder(record: &BuildRecord) -> Result<String, StepError> {
    ledger_builder(record).ok_or_else(|| {
        StepError::NonRetryable(format!(
            "build {}: no builder instance in the ledger (launch did not finish)",
            record.id
        ))
    })
}
