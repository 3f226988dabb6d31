//! Wiring shared by the Lambda functions: typed configuration read once from
//! the environment (a clear error names a missing variable), JSON tracing,
//! clients built once at cold start, and the adapter from a Lambda event to
//! a step handler whose error type is what the state machine routes on.

use std::path::PathBuf;
use std::sync::Arc;

use lambda_runtime::{Diagnostic, LambdaEvent};
use serde_json::Value;

use crate::backends::ec2::{Ec2Backend, Ec2Settings};
use crate::build::{DynamoBuildStore, Step};
use crate::pipeline::{Pipeline, PipelineSettings, StepError};
use crate::registry::{DynamoStore, Registry};

pub use crate::config::ConfigError;
use crate::config::EnvVars;

/// Configuration of the step functions.
#[derive(Clone, Debug)]
pub struct StepConfig {
    /// `BAKEHOUSE_TABLE`: the registry and build table.
    pub table: String,
    /// `BAKEHOUSE_INSTANCE_PROFILE`: builder instance profile name.
    pub instance_profile: Option<String>,
    /// `BAKEHOUSE_SUBNET_ID`: default builder subnet.
    pub subnet_id: Option<String>,
    /// `BAKEHOUSE_SSM_ONLINE_CHECK` (default true): wait for the SSM agent.
    pub ssm_online_check: bool,
    /// `BAKEHOUSE_SCRATCH_DIR` (default `/tmp/bakehouse`).
    pub scratch_dir: PathBuf,
    /// `BAKEHOUSE_COMMAND_LOG_GROUP`: CloudWatch Logs group that SSM sends
    /// the full output of builder commands to (none: output stays in SSM).
    pub command_log_group: Option<String>,
}

impl StepConfig {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<StepConfig, ConfigError> {
        StepConfig::from_vars(&EnvVars::from_process())
    }

    /// Reads the configuration from `vars`.
    pub fn from_vars(vars: &EnvVars) -> Result<StepConfig, ConfigError> {
        Ok(StepConfig {
            table: crate::config::TableConfig::from_vars(vars)?.table,
            instance_profile: vars.optional("BAKEHOUSE_INSTANCE_PROFILE"),
            subnet_id: vars.optional("BAKEHOUSE_SUBNET_ID"),
            ssm_online_check: vars.flag("BAKEHOUSE_SSM_ONLINE_CHECK", true)?,
            scratch_dir: vars
                .optional("BAKEHOUSE_SCRATCH_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/tmp/bakehouse")),
            command_log_group: vars.optional("BAKEHOUSE_COMMAND_LOG_GROUP"),
        })
    }
}

/// Sets up `tracing` for a Lambda function with lambda_runtime's own
/// subscriber: level from `AWS_LAMBDA_LOG_LEVEL` (the function's
/// `LoggingConfig`), else `RUST_LOG`, else info; JSON lines when
/// `AWS_LAMBDA_LOG_FORMAT` is `JSON` (the template sets it for every
/// function); no time (CloudWatch adds it).
pub fn init_tracing() {
    lambda_runtime::tracing::init_default_subscriber();
}

/// The AWS pipeline (DynamoDB registry and builds, EC2 + SSM backend) from
/// a configuration; the SDK configuration comes from the standard
/// environment of the function.
pub async fn aws_pipeline(config: &StepConfig) -> Pipeline {
    let sdk = crate::aws::from_env(None).await;
    let registry_store = DynamoStore::new(&sdk, &config.table);
    let builds = DynamoBuildStore::new(registry_store.client().clone(), &config.table);
    let mut settings = Ec2Settings::default();
    if let Some(p) = &config.instance_profile {
        settings.instance_profile = Some(p.clone());
    }
    if let Some(s) = &config.subnet_id {
        settings.subnet_id = Some(s.clone());
    }
    settings.ssm_online_check = config.ssm_online_check;
    settings.command_log_group = config.command_log_group.clone();
    Pipeline::new(
        Registry::new(Arc::new(registry_store)),
        Arc::new(builds),
        Arc::new(Ec2Backend::new(&sdk, settings)),
        PipelineSettings::new(config.scratch_dir.clone()),
    )
    .with_callback(Arc::new(crate::pipeline::SfnCallback::new(
        aws_sdk_sfn::Client::new(&sdk),
    )))
}

/// Cold start of a step function: tracing, configuration, clients.
pub async fn cold_start() -> Result<Pipeline, ConfigError> {
    init_tracing();
    let config = StepConfig::from_env()?;
    Ok(aws_pipeline(&config).await)
}

/// Runs one step on a Lambda event. The error's type is `Retryable`,
/// `NonRetryable` or `BuildFailed`, which the ASL `Retry`/`Catch` match.
pub async fn handle(
    pipeline: &Pipeline,
    step: Step,
    event: LambdaEvent<Value>,
) -> Result<Value, Diagnostic> {
    pipeline
        .invoke(step, event.payload)
        .await
        .map_err(|e: StepError| {
            tracing::error!(step = %step, error = e.name(), message = e.message(), "step failed");
            Diagnostic {
                error_type: e.name().to_string(),
                error_message: e.message().to_string(),
            }
        })
}
