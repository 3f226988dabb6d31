//! The EC2 + SSM builder backend: a builder instance launched from the base
//! AMI, provisioned and cleaned through SSM Run Command
//! (`AWS-RunShellScript`; `AWS-RunPowerShellScript` and Sysprep for
//! `os: windows`, see `scripts_windows`), stopped, captured with CreateImage, copied to the
//! publish regions and shared with the publish accounts; the test step boots
//! the new AMI as a test instance and runs the recipe's tests on it.
//!
//! Every resource is recorded in the build's ledger before it is created
//! and carries the tags `bakehouse:build` and `bakehouse:recipe`, so a
//! retried step finds what an earlier attempt made (by ledger, tag or
//! deterministic name: EC2's own idempotency tokens are honoured too, but
//! not relied on) and teardown can always find everything.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use sha2::{Digest, Sha256};

use crate::pipeline::{BuildContext, BuilderBackend, Progress, ResolvedBase, StepError};
use crate::recipe::LoadedRecipe;
use crate::registry::{Artifact, Provider, Registry};

mod base;
mod error;
mod image;
mod instance;
pub mod logs;
mod publish;
mod retention;
mod scripts;
mod scripts_windows;
mod ssm;
mod tar;
mod teardown;
mod test_instance;

/// Tag naming the build on every resource the backend creates.
pub const TAG_BUILD: &str = "bakehouse:build";
/// Tag naming the recipe on every resource the backend creates.
pub const TAG_RECIPE: &str = "bakehouse:recipe";

/// Settings of the EC2 backend, read once when a function starts. A recipe's
/// `builder` settings override the defaults given here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ec2Settings {
    /// Region builders run in and images are first captured in (the first
    /// artifact of every version). `None`: the SDK configuration's region
    /// (`us-east-1` if that has none either).
    pub region: Option<String>,
    /// Instance type when the recipe names none (default `t3.small`).
    pub instance_type: String,
    /// Instance profile of the builder when the recipe names none; it needs
    /// the `AmazonSSMManagedInstanceCore` permissions (default
    /// `bakehouse-builder`; `None` launches without a profile, which only
    /// works where SSM is enabled account-wide through Default Host
    /// Management).
    pub instance_profile: Option<String>,
    /// Subnet when the recipe names none (`None`: the default VPC).
    pub subnet_id: Option<String>,
    /// Security groups when the recipe names none (empty: the VPC default).
    pub security_group_ids: Vec<String>,
    /// Launch waits until SSM reports the builder's agent online
    /// (`DescribeInstanceInformation`) before provisioning. On by default;
    /// off against moto, which does not implement that call (it answers
    /// HTTP 500), where commands are accepted for any instance anyway.
    pub ssm_online_check: bool,
    /// Largest payload (a file provisioner's file, a script, a Salt state
    /// tree or Ansible directory as tar) sent inline in one SSM command,
    /// before base64. SSM limits a command's parameters to roughly 64 KiB
    /// after encoding, hence the 48 KiB default.
    pub max_inline_file_bytes: usize,
    /// Upper bound of a whole build, counted from its start, when the recipe
    /// sets no `builder.time_limit_minutes` (default 60 minutes). A step
    /// still waiting past it fails the build; SSM commands get the remaining
    /// time as their execution timeout.
    pub time_limit: Duration,
    /// CloudWatch Logs group SSM sends every command's full output to
    /// (`BAKEHOUSE_COMMAND_LOG_GROUP`; the SAM template creates it, with
    /// retention). The build record's `log` names it, and `bakehouse builds
    /// logs` reads it. `None`: output stays in SSM (24,000 characters per
    /// stream) and the record's notes keep the tails.
    pub command_log_group: Option<String>,
}

impl Default for Ec2Settings {
    fn default() -> Self {
        Ec2Settings {
            region: None,
            instance_type: "t3.small".into(),
            instance_profile: Some("bakehouse-builder".into()),
            subnet_id: None,
            security_group_ids: Vec::new(),
            ssm_online_check: true,
            max_inline_file_bytes: 48 * 1024,
            time_limit: Duration::from_secs(60 * 60),
            command_log_group: None,
        }
    }
}

/// The EC2 + SSM builder backend.
pub struct Ec2Backend {
    config: SdkConfig,
    settings: Ec2Settings,
    region: String,
    ec2_clients: Mutex<HashMap<String, aws_sdk_ec2::Client>>,
    ssm: aws_sdk_ssm::Client,
}

impl std::fmt::Debug for Ec2Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ec2Backend")
            .field("region", &self.region)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Ec2Backend {
    /// A backend using `config` (credentials, endpoint) with clients per
    /// region built from it on demand.
    pub fn new(config: &SdkConfig, settings: Ec2Settings) -> Ec2Backend {
        let region = settings
            .region
            .clone()
            .or_else(|| config.region().map(|r| r.to_string()))
            .unwrap_or_else(|| "us-east-1".into());
        let home = crate::aws::in_region(config, &region);
        let mut clients = HashMap::new();
        clients.insert(region.clone(), aws_sdk_ec2::Client::new(&home));
        Ec2Backend {
            config: config.clone(),
            ssm: aws_sdk_ssm::Client::new(&home),
            settings,
            region,
            ec2_clients: Mutex::new(clients),
        }
    }

    /// The region builders run in.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The settings.
    pub fn settings(&self) -> &Ec2Settings {
        &self.settings
    }

    /// The EC2 client of a region.
    fn ec2(&self, region: &str) -> aws_sdk_ec2::Client {
        let mut clients = self
            .ec2_clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        clients
            .entry(region.to_string())
            .or_insert_with(|| {
                aws_sdk_ec2::Client::new(&crate::aws::in_region(&self.config, region))
            })
            .clone()
    }

    /// The build's time limit: the recipe's, else the settings'.
    fn time_limit(&self, ctx: &BuildContext) -> Duration {
        ctx.recipe
            .as_ref()
            .and_then(|r| r.recipe.builder.time_limit_minutes)
            .map(|m| Duration::from_secs(u64::from(m) * 60))
            .unwrap_or(self.settings.time_limit)
    }

    /// Time left before the build's time limit (zero when past it).
    fn time_left(&self, ctx: &BuildContext) -> Duration {
        let limit =
            chrono::Duration::from_std(self.time_limit(ctx)).unwrap_or(chrono::Duration::MAX);
        let deadline = ctx.record.created_at + limit;
        (deadline - chrono::Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO)
    }

    /// `Progress::Wait`, unless the build is past its time limit, which
    /// fails it naming what it was waiting for.
    fn wait<T>(&self, ctx: &BuildContext, waiting_for: &str) -> Result<Progress<T>, StepError> {
        if self.time_left(ctx).is_zero() {
            return Err(StepError::BuildFailed(format!(
                "{} step: the build exceeded its time limit of {} minutes while waiting for {waiting_for}",
                ctx.step,
                self.time_limit(ctx).as_secs() / 60
            )));
        }
        tracing::debug!(build = %ctx.build_id, step = %ctx.step, polls = ctx.polls, "waiting for {waiting_for}");
        Ok(Progress::Wait)
    }
}

/// A deterministic idempotency token (at most 64 ASCII characters, as EC2
/// requires) for one purpose within one build.
fn client_token(build_id: &str, purpose: &str) -> String {
    let digest = hex::encode(Sha256::digest(format!("{build_id}\n{purpose}").as_bytes()));
    format!("bakehouse-{}", &digest[..40])
}

/// The AMI name of a build: `bakehouse-<recipe>-<build id>`, made valid for
/// EC2 (3 to 128 characters; anything but letters, digits and `()[]./-'@_`
/// becomes `-`, and an over-long name is cut and ends in a hash).
pub fn image_name(recipe: &str, build_id: &str) -> String {
    let raw = format!("bakehouse-{recipe}-{build_id}");
    let clean: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "()[]./-'@_".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    if clean.len() <= 128 {
        return clean;
    }
    let digest = hex::encode(Sha256::digest(raw.as_bytes()));
    format!("{}-{}", &clean[..115], &digest[..12])
}

/// The tags every resource of a build carries.
fn build_tags(build_id: &str, recipe: &str) -> Vec<aws_sdk_ec2::types::Tag> {
    vec![tag(TAG_BUILD, build_id), tag(TAG_RECIPE, recipe)]
}

fn tag(key: &str, value: &str) -> aws_sdk_ec2::types::Tag {
    aws_sdk_ec2::types::Tag::builder()
        .key(key)
        .value(value)
        .build()
}

fn filter(name: &str, values: &[&str]) -> aws_sdk_ec2::types::Filter {
    aws_sdk_ec2::types::Filter::builder()
        .name(name)
        .set_values(Some(values.iter().map(|v| v.to_string()).collect()))
        .build()
}

#[async_trait]
impl BuilderBackend for Ec2Backend {
    fn provider(&self) -> Provider {
        Provider::Aws
    }

    async fn resolve_base(
        &self,
        recipe: &LoadedRecipe,
        registry: &Registry,
    ) -> Result<ResolvedBase, StepError> {
        self.resolve(recipe, registry).await
    }

    async fn launch(&self, ctx: &BuildContext) -> Result<Progress, StepError> {
        self.launch_builder(ctx).await
    }

    async fn provision(&self, ctx: &BuildContext) -> Result<Progress, StepError> {
        self.provision_builder(ctx).await
    }

    async fn clean(&self, ctx: &BuildContext) -> Result<Progress, StepError> {
        self.clean_builder(ctx).await
    }

    async fn capture(&self, ctx: &BuildContext) -> Result<Progress<Vec<Artifact>>, StepError> {
        self.capture_image(ctx).await
    }

    async fn test(&self, ctx: &BuildContext) -> Result<Progress, StepError> {
        self.test_image(ctx).await
    }

    async fn teardown(&self, ctx: &BuildContext, succeeded: bool) -> Result<(), StepError> {
        self.teardown_build(ctx, succeeded, false).await.map(|_| ())
    }

    async fn teardown_keeping_builder(
        &self,
        ctx: &BuildContext,
    ) -> Result<Option<String>, StepError> {
        let kept = self.teardown_build(ctx, false, true).await?;
        Ok((!kept.is_empty()).then(|| {
            kept.iter()
                .map(|(region, id)| format!("instance {id} in {region}"))
                .collect::<Vec<_>>()
                .join(", ")
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{BuildRecord, SqliteBuildStore, Step};
    use crate::registry::{Trigger, TriggerKind};

    fn context(age_minutes: i64, time_limit_minutes: Option<u32>) -> BuildContext {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let store =
            SqliteBuildStore::new(std::sync::Arc::new(std::sync::Mutex::new(conn))).unwrap();
        let mut record = BuildRecord::new(
            "b",
            "web",
            Default::default(),
            Trigger::of(TriggerKind::Cli),
            false,
        );
        record.created_at -= chrono::Duration::minutes(age_minutes);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.yaml");
        let mut yaml = "name: web\nbase: {image: ami-12345678}\n".to_string();
        if let Some(m) = time_limit_minutes {
            yaml.push_str(&format!("builder: {{time_limit_minutes: {m}}}\n"));
        }
        let recipe = crate::recipe::parse(&yaml, crate::recipe::Format::Yaml, &path).unwrap();
        BuildContext {
            build_id: "b".into(),
            recipe: Some(recipe),
            polls: 3,
            record,
            step: Step::Capture,
            store: std::sync::Arc::new(store),
        }
    }

    #[tokio::test]
    async fn waiting_past_the_time_limit_fails_the_build() {
        let config = aws_config::SdkConfig::builder()
            .region(aws_config::Region::new("eu-west-1"))
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        let backend = Ec2Backend::new(&config, Ec2Settings::default());
        assert_eq!(backend.region(), "eu-west-1");
        assert_eq!(
            backend.wait::<()>(&context(59, None), "x").unwrap(),
            Progress::Wait
        );
        let err = backend
            .wait::<()>(&context(61, None), "image ami-1 to become available")
            .unwrap_err();
        assert_eq!(err.name(), "BuildFailed");
        assert_eq!(
            err.message(),
            "capture step: the build exceeded its time limit of 60 minutes while waiting for image ami-1 to become available"
        );
        // The recipe's limit wins over the settings'.
        assert!(backend.wait::<()>(&context(61, Some(90)), "x").is_ok());
        assert!(backend.wait::<()>(&context(31, Some(30)), "x").is_err());
        let pinned = Ec2Backend::new(
            &config,
            Ec2Settings {
                region: Some("us-east-2".into()),
                ..Ec2Settings::default()
            },
        );
        assert_eq!(pinned.region(), "us-east-2");
    }

    #[test]
    fn image_names_are_valid_and_deterministic() {
        assert_eq!(image_name("web", "exec-1"), "bakehouse-web-exec-1");
        assert_eq!(image_name("web", "a:b c"), "bakehouse-web-a-b-c");
        let long = "x".repeat(200);
        let name = image_name("web", &long);
        assert_eq!(name.len(), 128);
        assert_eq!(name, image_name("web", &long));
        assert_ne!(name, image_name("web", &format!("{long}y")));
    }

    #[test]
    fn client_tokens_fit_ec2_and_differ_by_purpose() {
        let a = client_token("build-1", "builder");
        assert!(a.len() <= 64 && a.is_ascii());
        assert_eq!(a, client_token("build-1", "builder"));
        assert_ne!(a, client_token("build-1", "copy/eu-west-1"));
        assert_ne!(a, client_token("build-2", "builder"));
    }
}
