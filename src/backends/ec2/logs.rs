//! The full output of a remote build's commands. SSM Run Command sends it
//! to a CloudWatch Logs group when asked (`CloudWatchOutputConfig`); the
//! agent on the builder writes one stream per command, instance, plugin and
//! output stream: `<command id>/<instance id>/<plugin>/stdout|stderr`. A
//! build's commands are in its ledger, so their output is found by the
//! command id; the record's `log` names the group.

use std::collections::HashSet;

use aws_config::SdkConfig;

use crate::build::{BuildRecord, ResourceKind};

/// How a build record's `log` names a CloudWatch Logs group:
/// `cloudwatch-logs:REGION:GROUP` (group names have no `:`).
const LOCATION_PREFIX: &str = "cloudwatch-logs:";

/// A failure to read command output from CloudWatch Logs.
#[derive(Debug, thiserror::Error)]
pub enum CommandLogsError {
    /// A CloudWatch Logs call failed.
    #[error("CloudWatch Logs {call} on group {group} (region {region}): {message}")]
    Aws {
        /// The call.
        call: &'static str,
        /// The log group.
        group: String,
        /// Its region.
        region: String,
        /// What the service said.
        message: String,
    },
}

/// The CloudWatch Logs group (and its region) a remote build's commands
/// write their output to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandLogs {
    /// The region of the group (the builder's region).
    pub region: String,
    /// The group name.
    pub group: String,
}

impl CommandLogs {
    /// The text a build record's `log` holds for this group.
    pub fn location(&self) -> String {
        format!("{LOCATION_PREFIX}{}:{}", self.region, self.group)
    }

    /// The group a record's `log` names; `None` for anything else (a local
    /// build's log file).
    pub fn parse(location: &str) -> Option<CommandLogs> {
        let rest = location.strip_prefix(LOCATION_PREFIX)?;
        let (region, group) = rest.split_once(':')?;
        if region.is_empty() || group.is_empty() {
            return None;
        }
        Some(CommandLogs {
            region: region.to_string(),
            group: group.to_string(),
        })
    }
}

/// Reads the output of a build's commands from their group, remembering
/// what it returned so that following a running build prints each line
/// once.
pub struct CommandLogReader {
    client: aws_sdk_cloudwatchlogs::Client,
    logs: CommandLogs,
    seen: HashSet<String>,
}

impl CommandLogReader {
    /// A reader using `config` (credentials, endpoint) in the group's region.
    pub fn new(config: &SdkConfig, logs: CommandLogs) -> CommandLogReader {
        let regional = crate::aws::in_region(config, &logs.region);
        CommandLogReader {
            client: aws_sdk_cloudwatchlogs::Client::new(&regional),
            logs,
            seen: HashSet::new(),
        }
    }

    fn error(
        &self,
        call: &'static str,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> CommandLogsError {
        CommandLogsError::Aws {
            call,
            group: self.logs.group.clone(),
            region: self.logs.region.clone(),
            message: aws_sdk_cloudwatchlogs::error::DisplayErrorContext(&e).to_string(),
        }
    }

    /// The lines not returned before, of every command in the record's
    /// ledger in the order they were sent, each prefixed with
    /// `[<command name>] `; stdout and stderr interleaved by time.
    pub async fn new_lines(
        &mut self,
        record: &BuildRecord,
    ) -> Result<Vec<String>, CommandLogsError> {
        let mut lines = Vec::new();
        for command in record
            .resources
            .iter()
            .filter(|r| r.kind == ResourceKind::Command)
        {
            let Some(id) = command.id.as_deref() else {
                continue;
            };
            let streams = self.streams(id).await?;
            if streams.is_empty() {
                continue;
            }
            let mut token: Option<String> = None;
            loop {
                let page = self
                    .client
                    .filter_log_events()
                    .log_group_name(&self.logs.group)
                    .set_log_stream_names(Some(streams.clone()))
                    .set_next_token(token.clone())
                    .send()
                    .await
                    .map_err(|e| self.error("FilterLogEvents", e))?;
                for event in page.events() {
                    let key = event.event_id().map(str::to_string).unwrap_or_else(|| {
                        format!(
                            "{}@{}@{}",
                            event.log_stream_name().unwrap_or_default(),
                            event.timestamp().unwrap_or_default(),
                            event.message().unwrap_or_default()
                        )
                    });
                    if !self.seen.insert(key) {
                        continue;
                    }
                    let text = event.message().unwrap_or_default();
                    for line in text.lines() {
                        lines.push(format!("[{}] {line}", command.name));
                    }
                }
                // The token repeats once the end is reached.
                let next = page.next_token().map(str::to_string);
                if next.is_none() || next == token || page.events().is_empty() {
                    break;
                }
                token = next;
            }
        }
        Ok(lines)
    }

    /// The streams SSM wrote for one command (any instance, plugin, stdout
    /// and stderr), at most 100 (FilterLogEvents' limit; a command has two
    /// per instance).
    async fn streams(&self, command_id: &str) -> Result<Vec<String>, CommandLogsError> {
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .describe_log_streams()
                .log_group_name(&self.logs.group)
                .log_stream_name_prefix(format!("{command_id}/"))
                .set_next_token(token.clone())
                .send()
                .await
                .map_err(|e| self.error("DescribeLogStreams", e))?;
            names.extend(
                page.log_streams()
                    .iter()
                    .filter_map(|s| s.log_stream_name().map(str::to_string)),
            );
            let next = page.next_token().map(str::to_string);
            if next.is_none() || next == token || names.len() >= 100 {
                break;
            }
            token = next;
        }
        names.truncate(100);
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_round_trips_and_local_paths_are_not_groups() {
        let logs = CommandLogs {
            region: "eu-west-1".into(),
            group: "/bakehouse/prod/commands".into(),
        };
        assert_eq!(
            logs.location(),
            "cloudwatch-logs:eu-west-1:/bakehouse/prod/commands"
        );
        assert_eq!(CommandLogs::parse(&logs.location()), Some(logs));
        assert_eq!(CommandLogs::parse("/home/me/.bakehouse/logs/b.log"), None);
        assert_eq!(CommandLogs::parse("cloudwatch-logs:eu-west-1"), None);
        assert_eq!(CommandLogs::parse("cloudwatch-logs::g"), None);
    }
}
