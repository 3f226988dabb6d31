//! Wire forms of the model's one-of choices. serde reads these plain structs
//! (so unknown keys are named and located) and converts them into the enums of
//! [`super::model`]; the same structs serialize the enums back.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::model::{Base, BaseFilter, BumpPart, ShellProvisioner, ShellSource, VersionPolicy};

/// The kinds of base, in the order they are reported.
pub(crate) const BASE_KINDS: [&str; 4] = ["image", "filter", "registry", "path"];

/// `base:` as written.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a map with one of `image`, `filter`, `registry` or `path`"
)]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct RawBase {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    filter: Option<BaseFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    registry: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path: Option<String>,
}

/// Message for a base with zero or several kinds, given the kinds present.
pub(crate) fn base_kind_message(present: &[&str]) -> String {
    let accepted = BASE_KINDS
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if present.is_empty() {
        format!("exactly one of {accepted} is required, found none")
    } else {
        let found = present
            .iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(" and ");
        format!("exactly one of {accepted} is allowed, found {found}")
    }
}

impl TryFrom<RawBase> for Base {
    type Error = String;

    fn try_from(raw: RawBase) -> Result<Self, Self::Error> {
        let mut present = Vec::new();
        let mut chosen = None;
        if let Some(v) = raw.image {
            present.push("image");
            chosen = chosen.or(Some(Base::Image(v)));
        }
        if let Some(v) = raw.filter {
            present.push("filter");
            chosen = chosen.or(Some(Base::Filter(v)));
        }
        if let Some(v) = raw.registry {
            present.push("registry");
            chosen = chosen.or(Some(Base::Registry(v)));
        }
        if let Some(v) = raw.path {
            present.push("path");
            chosen = chosen.or(Some(Base::Path(v)));
        }
        match chosen {
            Some(base) if present.len() == 1 => Ok(base),
            _ => Err(base_kind_message(&present)),
        }
    }
}

impl From<Base> for RawBase {
    fn from(base: Base) -> Self {
        let mut raw = RawBase::default();
        match base {
            Base::Image(v) => raw.image = Some(v),
            Base::Filter(v) => raw.filter = Some(v),
            Base::Registry(v) => raw.registry = Some(v),
            Base::Path(v) => raw.path = Some(v),
        }
        raw
    }
}

/// `version:` as written.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a map such as {bump: minor} or {version: \"2.0\"}"
)]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct RawVersion {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bump: Option<BumpPart>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<String>,
}

impl TryFrom<RawVersion> for VersionPolicy {
    type Error = String;

    fn try_from(raw: RawVersion) -> Result<Self, Self::Error> {
        match (raw.bump, raw.version) {
            (Some(part), None) => Ok(VersionPolicy::Bump(part)),
            (None, Some(v)) => Ok(VersionPolicy::Exact(v)),
            (Some(_), Some(_)) => Err("set either `bump` or `version`, not both".to_string()),
            (None, None) => Err(
                "one of `bump` (major, minor, patch) or `version` (e.g. \"2.0\") is required"
                    .to_string(),
            ),
        }
    }
}

impl From<VersionPolicy> for RawVersion {
    fn from(policy: VersionPolicy) -> Self {
        match policy {
            VersionPolicy::Bump(part) => RawVersion {
                bump: Some(part),
                version: None,
            },
            VersionPolicy::Exact(v) => RawVersion {
                bump: None,
                version: Some(v),
            },
        }
    }
}

/// A shell provisioner as written.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a shell provisioner with `inline` or `script`"
)]
pub struct RawShell {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    inline: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    script: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    env: BTreeMap<String, String>,
}

/// Message for a shell provisioner with both or neither source.
pub(crate) fn shell_source_message(both: bool) -> String {
    if both {
        "a shell provisioner takes `inline` or `script`, not both".to_string()
    } else {
        "a shell provisioner needs `inline` (a list of commands) or `script` (a file)".to_string()
    }
}

impl TryFrom<RawShell> for ShellProvisioner {
    type Error = String;

    fn try_from(raw: RawShell) -> Result<Self, Self::Error> {
        let source = match (raw.inline, raw.script) {
            (Some(lines), None) => ShellSource::Inline(lines),
            (None, Some(script)) => ShellSource::Script(script),
            (Some(_), Some(_)) => return Err(shell_source_message(true)),
            (None, None) => return Err(shell_source_message(false)),
        };
        Ok(ShellProvisioner {
            source,
            env: raw.env,
        })
    }
}

impl From<ShellProvisioner> for RawShell {
    fn from(shell: ShellProvisioner) -> Self {
        let (inline, script) = match shell.source {
            ShellSource::Inline(lines) => (Some(lines), None),
            ShellSource::Script(path) => (None, Some(path)),
        };
        RawShell {
            inline,
            script,
            env: shell.env,
        }
    }
}
