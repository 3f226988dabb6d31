//! Recipe schedules: one EventBridge Scheduler schedule per recipe with a
//! `schedule`, in the deployment's schedule group, whose target starts the
//! pipeline with `{"recipe": NAME, "trigger": "schedule"}` (the recipe as
//! stored at its last push; the bake key makes an unchanged rebuild cheap).

use aws_sdk_scheduler::error::DisplayErrorContext;
use aws_sdk_scheduler::operation::delete_schedule::DeleteScheduleError;
use aws_sdk_scheduler::operation::get_schedule::GetScheduleError;
use aws_sdk_scheduler::types::{FlexibleTimeWindow, FlexibleTimeWindowMode, ScheduleState, Target};
use sha2::{Digest, Sha256};

/// Longest schedule name EventBridge Scheduler accepts.
pub const MAX_SCHEDULE_NAME: usize = 64;

/// Errors managing schedules.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// EventBridge Scheduler refused or failed.
    #[error("schedule {name}: {message}")]
    Scheduler {
        /// The schedule name.
        name: String,
        /// What the service said.
        message: String,
    },
}

/// Where schedules go and what they start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleSettings {
    /// The schedule group (one per deployment).
    pub group: String,
    /// The pipeline state machine the schedules start.
    pub state_machine_arn: String,
    /// The role EventBridge Scheduler assumes (allowed only
    /// `states:StartExecution` on the state machine).
    pub role_arn: String,
    /// Time zone of cron expressions (IANA name, default `UTC`).
    pub timezone: String,
}

/// What [`Schedules::put`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleChange {
    /// The schedule did not exist and was created.
    Created,
    /// The schedule existed with other settings and was updated.
    Updated,
    /// The schedule existed exactly so.
    Unchanged,
}

/// Creates, updates and deletes recipe schedules.
#[derive(Clone, Debug)]
pub struct Schedules {
    client: aws_sdk_scheduler::Client,
    settings: ScheduleSettings,
}

fn service_err<E>(name: &str, e: E) -> ScheduleError
where
    E: std::error::Error + 'static,
{
    ScheduleError::Scheduler {
        name: name.to_string(),
        message: DisplayErrorContext(e).to_string(),
    }
}

/// The schedule name of a recipe: the recipe name, cut to 64 characters
/// with an 8-digit hash suffix when longer.
pub fn schedule_name(recipe: &str) -> String {
    if recipe.len() <= MAX_SCHEDULE_NAME {
        return recipe.to_string();
    }
    let digest = hex::encode(Sha256::digest(recipe.as_bytes()));
    let mut name: String = recipe.chars().take(MAX_SCHEDULE_NAME - 9).collect();
    name.push('-');
    name.push_str(&digest[..8]);
    name
}

/// The execution input a schedule starts: `{"recipe": NAME, "trigger":
/// "schedule"}`.
pub fn schedule_input(recipe: &str) -> String {
    serde_json::json!({"recipe": recipe, "trigger": "schedule"}).to_string()
}

impl Schedules {
    /// Schedules managed through `client` with `settings`.
    pub fn new(client: aws_sdk_scheduler::Client, settings: ScheduleSettings) -> Schedules {
        Schedules { client, settings }
    }

    /// The settings.
    pub fn settings(&self) -> &ScheduleSettings {
        &self.settings
    }

    /// Creates or updates the schedule of `recipe` to `expression` (an
    /// EventBridge `cron(...)`/`rate(...)` expression).
    pub async fn put(
        &self,
        recipe: &str,
        expression: &str,
    ) -> Result<ScheduleChange, ScheduleError> {
        let name = schedule_name(recipe);
        let input = schedule_input(recipe);
        let existing = match self
            .client
            .get_schedule()
            .name(&name)
            .group_name(&self.settings.group)
            .send()
            .await
        {
            Ok(out) => Some(out),
            Err(e) => match e.into_service_error() {
                GetScheduleError::ResourceNotFoundException(_) => None,
                other => return Err(service_err(&name, other)),
            },
        };
        if let Some(out) = &existing {
            let target = out.target.as_ref();
            let same = out.schedule_expression.as_deref() == Some(expression)
                && out.schedule_expression_timezone.as_deref()
                    == Some(self.settings.timezone.as_str())
                && target.map(|t| t.arn.as_str()) == Some(self.settings.state_machine_arn.as_str())
                && target.map(|t| t.role_arn.as_str()) == Some(self.settings.role_arn.as_str())
                && target.and_then(|t| t.input.as_deref()) == Some(input.as_str())
                && out.state == Some(ScheduleState::Enabled);
            if same {
                return Ok(ScheduleChange::Unchanged);
            }
        }
        let window = FlexibleTimeWindow::builder()
            .mode(FlexibleTimeWindowMode::Off)
            .build()
            .map_err(|e| service_err(&name, e))?;
        let target = Target::builder()
            .arn(&self.settings.state_machine_arn)
            .role_arn(&self.settings.role_arn)
            .input(&input)
            .build()
            .map_err(|e| service_err(&name, e))?;
        let description = format!("bakehouse: rebuild recipe {recipe}");
        // CreateSchedule and UpdateSchedule take the same fields but are
        // different builder types.
        macro_rules! send {
            ($request:expr) => {
                $request
                    .name(&name)
                    .group_name(&self.settings.group)
                    .schedule_expression(expression)
                    .schedule_expression_timezone(&self.settings.timezone)
                    .flexible_time_window(window)
                    .target(target)
                    .state(ScheduleState::Enabled)
                    .description(description)
                    .send()
                    .await
                    .map_err(|e| service_err(&name, e))
            };
        }
        let change = if existing.is_some() {
            send!(self.client.update_schedule())?;
            ScheduleChange::Updated
        } else {
            send!(self.client.create_schedule())?;
            ScheduleChange::Created
        };
        tracing::info!(schedule = %name, expression, ?change, "schedule written");
        Ok(change)
    }

    /// Deletes the schedule of `recipe`; returns whether there was one.
    pub async fn delete(&self, recipe: &str) -> Result<bool, ScheduleError> {
        let name = schedule_name(recipe);
        match self
            .client
            .delete_schedule()
            .name(&name)
            .group_name(&self.settings.group)
            .send()
            .await
        {
            Ok(_) => {
                tracing::info!(schedule = %name, "schedule deleted");
                Ok(true)
            }
            Err(e) => match e.into_service_error() {
                DeleteScheduleError::ResourceNotFoundException(_) => Ok(false),
                other => Err(service_err(&name, other)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_is_the_documented_shape() {
        let v: serde_json::Value = serde_json::from_str(&schedule_input("web")).unwrap_or_default();
        assert_eq!(
            v,
            serde_json::json!({"recipe": "web", "trigger": "schedule"})
        );
    }

    #[test]
    fn long_names_fit() {
        assert_eq!(schedule_name("web"), "web");
        let long = "x".repeat(128);
        let name = schedule_name(&long);
        assert_eq!(name.len(), MAX_SCHEDULE_NAME);
        assert_ne!(name, schedule_name(&"x".repeat(127)));
    }
}
