//! The test step on EC2: one test instance launched from the new AMI (in
//! the build region, with the builder's settings: IMDSv2 required, no key
//! pair, the builder's instance profile, tagged with the build), the clean
//! check of the booted image (the policy's items a boot cannot make again:
//! hashes, keys, credentials, histories, installers) and the recipe's
//! `test` commands sent to it with `AWS-RunShellScript` one by one, and the instance terminated once they pass. A failing command
//! fails the build at `Test`; teardown then terminates the instance (it is
//! in the ledger and tagged, so the reaper finds it too) and deregisters
//! the AMI and its snapshots. A retried or polled step reuses the instance
//! (the ledger, and its idempotent client token).

use aws_sdk_ec2::types::InstanceStateName;

use crate::build::ResourceKind;
use crate::pipeline::{BuildContext, Progress, StepError};

use super::error::aws;
use super::ssm::passed;
use super::{client_token, Ec2Backend};
use crate::communicator::jobs::{clean_check_job, test_jobs};

/// The purpose of the test instance in its client token.
const TEST_INSTANCE: &str = "test";

impl Ec2Backend {
    pub(super) async fn test_image(&self, ctx: &BuildContext) -> Result<Progress, StepError> {
        let recipe = ctx.recipe()?;
        // The clean check first: it sees the AMI as booted, before the
        // tests change anything.
        let mut jobs: Vec<_> = clean_check_job(recipe).into_iter().collect();
        jobs.extend(test_jobs(recipe));
        let record = ctx.current().await?;
        let token = client_token(&ctx.build_id, TEST_INSTANCE);
        let recorded = record.resource(ResourceKind::Instance, &token);
        if recorded.is_some_and(|r| r.deleted) {
            // The tests passed and the instance was terminated.
            return Ok(Progress::Done(()));
        }
        if jobs.iter().all(|j| passed(ctx, &record, &j.label)) {
            // A retry after the tests passed: only the termination is left.
            if let Some(instance) = recorded.and_then(|r| r.id.clone()) {
                return self.finish_tests(ctx, &token, &instance).await;
            }
            return Ok(Progress::Done(()));
        }
        let instance = match recorded.and_then(|r| r.id.clone()) {
            Some(id) => id,
            None => {
                let image = record
                    .artifacts
                    .iter()
                    .find(|a| a.region.as_deref() == Some(self.region.as_str()))
                    .map(|a| a.image_id.clone())
                    .ok_or_else(|| {
                        StepError::NonRetryable(format!(
                            "test: the build captured no image in {} (capture did not finish)",
                            self.region
                        ))
                    })?;
                // The same client token gives the same instance if an
                // earlier attempt launched it before its id was recorded.
                self.run_instance(ctx, &image, "captured image", &token, "test")
                    .await?
                    .id
            }
        };
        match self.instance_state(&instance).await? {
            None | Some(InstanceStateName::Pending) => {
                return self.wait(ctx, &format!("test instance {instance} to start"))
            }
            Some(InstanceStateName::Running) => {}
            Some(other) => {
                return Err(StepError::BuildFailed(format!(
                    "test instance {instance} is {} before the tests ran: the captured image did not stay up",
                    other.as_str()
                )))
            }
        }
        if self.settings.ssm_online_check && !self.ssm_online(&instance).await? {
            return self.wait(
                ctx,
                &format!("the SSM agent on test instance {instance} to come online (does the image boot?)"),
            );
        }
        let record = ctx.current().await?;
        match self.run_jobs(ctx, &record, &instance, &jobs).await? {
            Progress::Wait => Ok(Progress::Wait),
            Progress::Done(()) => self.finish_tests(ctx, &token, &instance).await,
        }
    }

    /// Terminates the test instance after the tests passed (again, on a
    /// retry: terminating a terminated instance is a no-op).
    async fn finish_tests(
        &self,
        ctx: &BuildContext,
        token: &str,
        instance: &str,
    ) -> Result<Progress, StepError> {
        self.ec2(&self.region)
            .terminate_instances()
            .instance_ids(instance)
            .send()
            .await
            .map_err(|e| aws(format!("TerminateInstances {instance} (test instance)"), e))?;
        ctx.deleted(ResourceKind::Instance, token).await?;
        tracing::info!(build = %ctx.build_id, %instance, "tests passed; test instance terminated");
        Ok(Progress::Done(()))
    }
}
