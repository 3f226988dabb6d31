//! Records of the image registry: a package version and its artifacts.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{RegistryError, Version, VersionPattern};

/// Where an artifact lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Amazon EC2 (an AMI in one region).
    Aws,
    /// Azure (kept for registry compatibility; bakehouse does not build there).
    Azure,
    /// Google Cloud (kept for registry compatibility).
    Gcp,
    /// A disk image on this machine, made by a local build.
    Local,
}

impl FromStr for Provider {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Provider, RegistryError> {
        match s {
            "aws" => Ok(Provider::Aws),
            "azure" | "az" => Ok(Provider::Azure),
            "gcp" => Ok(Provider::Gcp),
            "local" => Ok(Provider::Local),
            other => Err(RegistryError::UnknownProvider(other.to_string())),
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Provider::Aws => "aws",
            Provider::Azure => "azure",
            Provider::Gcp => "gcp",
            Provider::Local => "local",
        })
    }
}

/// The operating system family of an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Os {
    /// Linux.
    Linux,
    /// Windows.
    Windows,
}

impl fmt::Display for Os {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Os::Linux => "linux",
            Os::Windows => "windows",
        })
    }
}

impl FromStr for Os {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Os, RegistryError> {
        match s {
            "linux" => Ok(Os::Linux),
            "windows" => Ok(Os::Windows),
            other => Err(RegistryError::InvalidField {
                field: "os",
                value: other.to_string(),
                reason: "expected linux or windows".into(),
            }),
        }
    }
}

/// Lifecycle status of a package version. Resolution skips deprecated and
/// revoked versions unless asked to include them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// In use; resolution picks it.
    Active,
    /// Superseded; kept for existing users, not picked by resolution.
    Deprecated,
    /// Must not be used (e.g. a vulnerability); not picked by resolution.
    Revoked,
    /// Its images were deleted by the retention policy (`image prune`, the
    /// lifecycle function); kept as history, never resolved.
    Deleted,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Active => "active",
            Status::Deprecated => "deprecated",
            Status::Revoked => "revoked",
            Status::Deleted => "deleted",
        })
    }
}

impl FromStr for Status {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Status, RegistryError> {
        match s {
            "active" => Ok(Status::Active),
            "deprecated" => Ok(Status::Deprecated),
            "revoked" => Ok(Status::Revoked),
            "deleted" => Ok(Status::Deleted),
            other => Err(RegistryError::InvalidField {
                field: "status",
                value: other.to_string(),
                reason: "expected active, deprecated, revoked or deleted".into(),
            }),
        }
    }
}

/// What started the build that produced a version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerKind {
    /// A git push (webhook).
    Push,
    /// An EventBridge schedule.
    Schedule,
    /// By hand from the Step Functions console.
    Console,
    /// The bakehouse CLI (`build`, `image add`).
    Cli,
}

/// The trigger of a build, as recorded with the build and its version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    /// What kind of trigger.
    pub kind: TriggerKind,
    /// Repository (for pushes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// Git ref (for pushes).
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// Commit id (for pushes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Who caused it, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

impl Trigger {
    /// A trigger of the given kind with no details.
    pub fn of(kind: TriggerKind) -> Trigger {
        Trigger {
            kind,
            repository: None,
            git_ref: None,
            commit: None,
            actor: None,
        }
    }
}

/// One location of an image version: an image id for a provider (and region).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// Unique within the package version; by convention `provider/region`.
    pub name: String,
    /// Where the image lives.
    pub provider: Provider,
    /// Provider region, where the provider has regions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The provider's id of the image (an AMI id; a sha256 digest for local).
    pub image_id: String,
    /// Owning account, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Path of a local image file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

impl Artifact {
    /// Whether this artifact serves the given provider and (if given) region.
    pub fn serves(&self, provider: Provider, region: Option<&str>) -> bool {
        self.provider == provider
            && match region {
                None => true,
                Some(r) => self.region.as_deref() == Some(r),
            }
    }
}

/// A package version: the Package record and its Artifact records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageVersion {
    /// Package name (`ImageName`).
    pub name: String,
    /// Version, unique per name.
    pub version: Version,
    /// Label (`Image`); several packages may share one.
    pub label: String,
    /// Always `image`.
    pub package_type: String,
    /// Operating system family.
    pub os: Os,
    /// Lifecycle status.
    pub status: Status,
    /// Content hash of everything that determined the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake_key: Option<String>,
    /// The image this one was built from (`name@version` or an image id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// What started the build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
    /// The build that produced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
    /// One per location.
    pub artifacts: Vec<Artifact>,
}

/// How a resolution finds packages: by `Name` (ImageName) or `Label` (Image).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The package name.
    Name(String),
    /// The label.
    Label(String),
}

impl fmt::Display for Lookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lookup::Name(n) => write!(f, "name {n:?}"),
            Lookup::Label(l) => write!(f, "label {l:?}"),
        }
    }
}

/// A registry reference as written in recipes: `name`, `name@1.x`,
/// `name@1.2`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// Package name (or label when resolved by label).
    pub name: String,
    /// Which versions qualify.
    pub pattern: VersionPattern,
}

impl FromStr for Reference {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Reference, RegistryError> {
        let (name, pattern) = match s.split_once('@') {
            Some((n, p)) => (n, p.parse()?),
            None => (s, VersionPattern::Latest),
        };
        validate_name("name", name)?;
        Ok(Reference {
            name: name.to_string(),
            pattern,
        })
    }
}

impl Reference {
    /// Parses a reference to a name or a label, as recipes write a
    /// registry base: `name`, `Free text label`, either with `@1.x` or
    /// `@1.2`. The part before the first `@` is a name when it follows the
    /// name grammar, else it must be a valid label (labels containing `@`
    /// cannot be written this way).
    pub fn name_or_label(text: &str) -> Result<Reference, RegistryError> {
        let (name, pattern) = match text.split_once('@') {
            Some((n, p)) => (n, p.parse()?),
            None => (text, VersionPattern::Latest),
        };
        if validate_name("name", name).is_err() {
            validate_label(name)?;
        }
        Ok(Reference {
            name: name.to_string(),
            pattern,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pattern {
            VersionPattern::Latest => f.write_str(&self.name),
            ref p => write!(f, "{}@{p}", self.name),
        }
    }
}

/// Checks a package name: starts with a letter or digit, then letters,
/// digits, `.`, `_`, `-`; at most 128 characters.
pub fn validate_name(field: &'static str, name: &str) -> Result<(), RegistryError> {
    let invalid = |reason: &str| RegistryError::InvalidField {
        field,
        value: name.to_string(),
        reason: reason.to_string(),
    };
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok {
        return Err(invalid("must start with a letter or digit"));
    }
    if name.len() > 128 {
        return Err(invalid("must be at most 128 characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(invalid(&format!(
            "character {c:?} is not allowed (letters, digits, '.', '_', '-')"
        )));
    }
    Ok(())
}

/// Checks a label: non-empty, printable, at most 256 characters.
pub fn validate_label(label: &str) -> Result<(), RegistryError> {
    if label.trim().is_empty() || label.len() > 256 || label.chars().any(char::is_control) {
        return Err(RegistryError::InvalidField {
            field: "label",
            value: label.to_string(),
            reason: "must be 1 to 256 printable characters".into(),
        });
    }
    Ok(())
}
