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

/// A configuration problem found at cold start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is not set.
    #[error("environment variable {name} is not set: {purpose}")]
    Missing {
        /// The variable.
        name: &'static str,
        /// What it is for.
        purpose: &'static str,
    },
    /// A variable has a value that cannot be used.
    #[error("environment variable {name}={value:?}: {reason}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: String,
    },
}

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
    /// `BAKEHOUSE_FAIL_AT`: test-only failure point (a step name).
    pub fail_at: Option<Step>,
    /// `BAKEHOUSE_SCRATCH_DIR` (default `/tmp/bakehouse`).
    pub scratch_dir: PathBuf,
    /// `BAKEHOUSE_COMMAND_LOG_GROUP`: CloudWatch Logs group that SSM sends
    /// the full output of builder commands to (none: output stays in SSM).
    pub command_log_group: Option<String>,
}

fn optional(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl StepConfig {
    /// Reads the configuration from the environment.
    pub fn from_env() -> Result<StepConfig, ConfigError> {
        let table = optional("BAKEHOUSE_TABLE").ok_or(ConfigError::Missing {
            name: "BAKEHOUSE_TABLE",
            purpose: "the DynamoDB table of the registry and build records",
        })?;
        let fail_at = match optional("BAKEHOUSE_FAIL_AT") {
            None => None,
            Some(v) => Some(Step::from_name(&v).ok_or_else(|| ConfigError::Invalid {
                name: "BAKEHOUSE_FAIL_AT",
                value: v.clone(),
                reason: "expected a step: launch, provision, clean, capture, register".into(),
            })?),
        };
        let ssm_online_check = match optional("BAKEHOUSE_SSM_ONLINE_CHECK").as_deref() {
            None | Some("true") | Some("1") => true,
            Some("false") | Some("0") => false,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "BAKEHOUSE_SSM_ONLINE_CHECK",
                    value: other.to_string(),
                    reason: "expected true or false".into(),
                })
            }
        };
        Ok(StepConfig {
            table,
            instance_profile: optional("BAKEHOUSE_INSTANCE_PROFILE"),
            subnet_id: optional("BAKEHOUSE_SUBNET_ID"),
            ssm_online_check,
            fail_at,
            scratch_dir: optional("BAKEHOUSE_SCRATCH_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/tmp/bakehouse")),
            command_log_group: optional("BAKEHOUSE_COMMAND_LOG_GROUP"),
        })
    }
}

/// Sets up `tracing` for a Lambda function: JSON lines on stdout (which
/// Lambda sends to CloudWatch Logs), level from `RUST_LOG` (default
/// `info`), without ANSI colours or the time (CloudWatch adds it).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .try_init();
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
        PipelineSettings {
            scratch_dir: config.scratch_dir.clone(),
            fail_at: config.fail_at,
        },
    )
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
