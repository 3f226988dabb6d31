//! The events function: EventBridge events about builders, test instances
//! and images wake the build step parked on them (the `WaitFor<Step>`
//! states of the pipeline, see [`crate::pipeline::TaskCallback`]).
//!
//! Three rules feed it (`infra/template.yaml`):
//!
//! - `EC2 Command Invocation Status-change Notification` with a final
//!   status: a provisioner, clean or test command ended;
//! - `EC2 AMI State Change` to `available` or `failed`: a captured image
//!   (in the stack's region) is ready or failed;
//! - `EC2 Instance State-change Notification` to `running` or `stopped`: a
//!   builder or test instance came up, a builder stopped before capture.
//!
//! Events carry an instance or image id; its `bakehouse:build` tag names the
//! build. The step parked on the build is woken by invoking its function
//! asynchronously with `{"build_id", "wake": true}`, so the function polls
//! with its own permissions and completes the task token itself. An event
//! for a build with nothing parked only marks it (`woken`), so a step being
//! polled at that moment polls once more.
//!
//! Where no event exists the state's `TimeoutSeconds` is the poll interval:
//! the SSM agent coming online (no event at all), and AMI copies in other
//! regions (their events stay in those regions' buses).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_config::SdkConfig;
use serde::Serialize;
use serde_json::Value;

use crate::backends::ec2::TAG_BUILD;
use crate::build::{self, BuildStatus, BuildStore, BuildStoreError, Step};
use crate::config::{ConfigError, EnvVars};

/// Why an event could not be handled.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The event is not the EventBridge shape the rules deliver.
    #[error("event: {0}")]
    Malformed(String),
    /// Looking up the instance or image failed.
    #[error("{0}")]
    Aws(String),
    /// Reading or marking the build record failed.
    #[error(transparent)]
    Store(#[from] BuildStoreError),
    /// Invoking the step function failed.
    #[error("waking the {step} step of build {build_id}: {message}")]
    Wake {
        /// The parked step.
        step: Step,
        /// The build.
        build_id: String,
        /// What failed.
        message: String,
    },
}

/// What an event is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// An instance (command invocations and instance state changes).
    Instance(String),
    /// An image.
    Image(String),
}

/// What the function did with an event (its result, and the log line).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Outcome {
    /// Not an event the rules send, or about a resource no build owns.
    Ignored {
        /// Why.
        reason: String,
    },
    /// The parked step was woken.
    Woken {
        /// The build.
        build_id: String,
        /// The step.
        step: Step,
    },
    /// Nothing was parked: the build was marked so its poller polls again.
    Marked {
        /// The build.
        build_id: String,
    },
}

/// Reads what an event is about; `None` for detail types the rules do not
/// send (they are ignored, not errors).
pub fn subject(event: &Value) -> Result<Option<Subject>, EventError> {
    let kind = event
        .get("detail-type")
        .and_then(Value::as_str)
        .ok_or_else(|| EventError::Malformed("no detail-type".into()))?;
    let detail = event
        .get("detail")
        .ok_or_else(|| EventError::Malformed(format!("{kind}: no detail")))?;
    let field = |name: &str| {
        detail
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| EventError::Malformed(format!("{kind}: no detail.{name}")))
    };
    Ok(match kind {
        "EC2 Command Invocation Status-change Notification"
        | "EC2 Instance State-change Notification" => {
            Some(Subject::Instance(field("instance-id")?))
        }
        "EC2 AMI State Change" => Some(Subject::Image(field("ImageId")?)),
        _ => None,
    })
}

/// What an event does to its build.
enum Decision {
    NotRunning(BuildStatus),
    Wake(Step),
    Marked,
}

/// Wakes a build's parked step: invokes its function (AWS), or calls the
/// step handler in this process (tests and the local runner).
#[async_trait]
pub trait StepWaker: Send + Sync {
    /// Wakes `step` of `build_id`.
    async fn wake(&self, step: Step, build_id: &str) -> Result<(), EventError>;
}

/// The step functions' names, by step (`BAKEHOUSE_<STEP>_FUNCTION`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventSettings {
    /// Function name or ARN of each step that can be parked.
    pub functions: BTreeMap<Step, String>,
}

/// The steps a `WaitFor<Step>` state parks.
pub const PARKED_STEPS: [Step; 5] = [
    Step::Launch,
    Step::Provision,
    Step::Clean,
    Step::Capture,
    Step::Test,
];

impl EventSettings {
    /// Reads `BAKEHOUSE_LAUNCH_FUNCTION`, `..._PROVISION_...`, `..._CLEAN_...`,
    /// `..._CAPTURE_...` and `..._TEST_FUNCTION`.
    pub fn from_vars(vars: &EnvVars) -> Result<EventSettings, ConfigError> {
        const NAMES: [&str; 5] = [
            "BAKEHOUSE_LAUNCH_FUNCTION",
            "BAKEHOUSE_PROVISION_FUNCTION",
            "BAKEHOUSE_CLEAN_FUNCTION",
            "BAKEHOUSE_CAPTURE_FUNCTION",
            "BAKEHOUSE_TEST_FUNCTION",
        ];
        let mut functions = BTreeMap::new();
        for (step, name) in PARKED_STEPS.into_iter().zip(NAMES) {
            let value = vars.required(name, "the step function woken by events")?;
            functions.insert(step, value);
        }
        Ok(EventSettings { functions })
    }
}

/// Invokes the step's function asynchronously (`InvocationType=Event`).
pub struct LambdaWaker {
    client: aws_sdk_lambda::Client,
    settings: EventSettings,
}

impl LambdaWaker {
    /// A waker over `client`.
    pub fn new(client: aws_sdk_lambda::Client, settings: EventSettings) -> Self {
        LambdaWaker { client, settings }
    }
}

#[async_trait]
impl StepWaker for LambdaWaker {
    async fn wake(&self, step: Step, build_id: &str) -> Result<(), EventError> {
        let failed = |message: String| EventError::Wake {
            step,
            build_id: build_id.to_string(),
            message,
        };
        let function = self
            .settings
            .functions
            .get(&step)
            .ok_or_else(|| failed("no function is configured for this step".into()))?;
        let payload = serde_json::json!({"build_id": build_id, "wake": true});
        self.client
            .invoke()
            .function_name(function)
            .invocation_type(aws_sdk_lambda::types::InvocationType::Event)
            .payload(aws_sdk_lambda::primitives::Blob::new(payload.to_string()))
            .send()
            .await
            .map_err(|e| failed(aws_sdk_lambda::error::DisplayErrorContext(e).to_string()))?;
        Ok(())
    }
}

/// The events handler: finds the build an event is about and wakes it.
pub struct Events {
    sdk: SdkConfig,
    builds: Arc<dyn BuildStore>,
    waker: Arc<dyn StepWaker>,
}

impl Events {
    /// A handler looking instances and images up with `sdk` (in the
    /// event's region), reading `builds`, waking through `waker`.
    pub fn new(sdk: SdkConfig, builds: Arc<dyn BuildStore>, waker: Arc<dyn StepWaker>) -> Self {
        Events { sdk, builds, waker }
    }

    /// The AWS handler: builds in DynamoDB `table`, steps woken by
    /// invoking their functions.
    pub fn with_table(sdk: &SdkConfig, table: &str, settings: EventSettings) -> Self {
        let builds = Arc::new(crate::build::DynamoBuildStore::new(
            aws_sdk_dynamodb::Client::new(sdk),
            table,
        ));
        let waker = Arc::new(LambdaWaker::new(aws_sdk_lambda::Client::new(sdk), settings));
        Events::new(sdk.clone(), builds, waker)
    }

    /// Handles one EventBridge event.
    pub async fn handle(&self, event: &Value) -> Result<Outcome, EventError> {
        let ignored = |reason: String| Ok(Outcome::Ignored { reason });
        let Some(subject) = subject(event)? else {
            return ignored("not an event the rules send".into());
        };
        let region = event.get("region").and_then(Value::as_str);
        let Some(build_id) = self.build_of(&subject, region).await? else {
            return ignored(format!("{subject:?} has no {TAG_BUILD} tag"));
        };
        if let Err(e) = build::check_build_id(&build_id) {
            return ignored(format!("{subject:?}: {e}"));
        }
        if self.builds.get(&build_id).await?.is_none() {
            return ignored(format!("no build {build_id}"));
        }
        // Decided inside the update, so a poller putting its token back at
        // the same moment cannot miss the mark.
        let mut decision = Decision::NotRunning(BuildStatus::Running);
        build::update(self.builds.as_ref(), &build_id, |r| {
            decision = if r.status != BuildStatus::Running {
                Decision::NotRunning(r.status)
            } else if let Some(parked) = &r.awaiting {
                Decision::Wake(parked.step)
            } else {
                r.woken = true;
                Decision::Marked
            };
        })
        .await?;
        match decision {
            Decision::NotRunning(status) => ignored(format!("build {build_id} is {status}")),
            Decision::Wake(step) => {
                self.waker.wake(step, &build_id).await?;
                tracing::info!(build = %build_id, step = %step, "woke the parked step");
                Ok(Outcome::Woken { build_id, step })
            }
            Decision::Marked => Ok(Outcome::Marked { build_id }),
        }
    }

    /// The build id tag of the instance or image.
    async fn build_of(
        &self,
        subject: &Subject,
        region: Option<&str>,
    ) -> Result<Option<String>, EventError> {
        let config = match region {
            Some(r) => crate::aws::in_region(&self.sdk, r),
            None => self.sdk.clone(),
        };
        let ec2 = aws_sdk_ec2::Client::new(&config);
        let aws = |e: String| EventError::Aws(format!("{subject:?}: {e}"));
        // An id EC2 does not know (a hybrid `mi-` node's command, an
        // instance or image already gone) belongs to no build.
        let unknown = |code: Option<&str>| {
            code.is_some_and(|c| {
                c.starts_with("InvalidInstanceID") || c.starts_with("InvalidAMIID")
            })
        };
        let tags: Vec<aws_sdk_ec2::types::Tag> = match subject {
            Subject::Instance(id) => match ec2.describe_instances().instance_ids(id).send().await {
                Ok(out) => out,
                Err(e) if unknown(e.as_service_error().and_then(|s| s.meta().code())) => {
                    return Ok(None)
                }
                Err(e) => return Err(aws(aws_sdk_ec2::error::DisplayErrorContext(e).to_string())),
            }
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .flat_map(|i| i.tags().to_vec())
            .collect(),
            Subject::Image(id) => match ec2.describe_images().image_ids(id).send().await {
                Ok(out) => out,
                Err(e) if unknown(e.as_service_error().and_then(|s| s.meta().code())) => {
                    return Ok(None)
                }
                Err(e) => return Err(aws(aws_sdk_ec2::error::DisplayErrorContext(e).to_string())),
            }
            .images()
            .iter()
            .flat_map(|i| i.tags().to_vec())
            .collect(),
        };
        Ok(tags
            .into_iter()
            .find(|t| t.key() == Some(TAG_BUILD))
            .and_then(|t| t.value().map(str::to_string)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_three_rules_events_name_their_subject() {
        let command = json!({"detail-type": "EC2 Command Invocation Status-change Notification",
            "detail": {"command-id": "c-1", "instance-id": "i-1", "status": "Success"}});
        assert_eq!(
            subject(&command).unwrap(),
            Some(Subject::Instance("i-1".into()))
        );
        let ami = json!({"detail-type": "EC2 AMI State Change",
            "detail": {"ImageId": "ami-1", "State": "available"}});
        assert_eq!(subject(&ami).unwrap(), Some(Subject::Image("ami-1".into())));
        let other = json!({"detail-type": "Scheduled Event", "detail": {}});
        assert_eq!(subject(&other).unwrap(), None);
    }

    #[test]
    fn a_malformed_event_names_what_is_missing() {
        let e = subject(&json!({"detail-type": "EC2 AMI State Change", "detail": {}})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "event: EC2 AMI State Change: no detail.ImageId"
        );
        assert!(subject(&json!({})).is_err());
    }

    #[test]
    fn every_parked_step_needs_its_function() {
        let mut vars: BTreeMap<String, String> =
            ["LAUNCH", "PROVISION", "CLEAN", "CAPTURE", "TEST"]
                .iter()
                .map(|s| (format!("BAKEHOUSE_{s}_FUNCTION"), format!("fn-{s}")))
                .collect();
        let settings = EventSettings::from_vars(&EnvVars::from_map(vars.clone())).unwrap();
        assert_eq!(settings.functions[&Step::Capture], "fn-CAPTURE");
        vars.remove("BAKEHOUSE_TEST_FUNCTION");
        let e = EventSettings::from_vars(&EnvVars::from_map(vars)).unwrap_err();
        assert!(e.to_string().contains("BAKEHOUSE_TEST_FUNCTION"), "{e}");
    }
}
