//! Errors of the image registry.

/// Everything that can go wrong in the registry. The variant name is the
/// error type a Lambda returns, so the state machine can route on it.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A version or version pattern is malformed.
    #[error("invalid version {input:?}: {reason}")]
    InvalidVersion {
        /// What was given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A name, label or other field does not have the required form.
    #[error("invalid {field} {value:?}: {reason}")]
    InvalidField {
        /// Which field.
        field: &'static str,
        /// What was given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A provider name that the registry does not know.
    #[error("unknown provider {0:?}: expected one of aws, azure, gcp, local")]
    UnknownProvider(String),
    /// An add without any image.
    #[error("no image ids given: an image version needs at least one artifact")]
    NoArtifacts,
    /// Two artifacts of one version share a name.
    #[error("duplicate artifact name {name:?} in {package} {version}: artifact names must be unique within a package version")]
    DuplicateArtifactName {
        /// Package name.
        package: String,
        /// Package version.
        version: String,
        /// The repeated artifact name.
        name: String,
    },
    /// Some image ids matched nothing; nothing was stored.
    #[error("no image found for {}: nothing was stored", .0.join(", "))]
    ImagesNotFound(Vec<String>),
    /// A package with this name and version is already stored.
    #[error("package {name} version {version} already exists: a second package with the same name needs a different version")]
    VersionExists {
        /// Package name.
        name: String,
        /// The version that exists.
        version: String,
    },
    /// Adding to an existing version with a different label or OS.
    #[error(
        "package {name} version {version} is stored with {field} {stored:?}, not {given:?}; \
         a package keeps its {field} (leave the flag out to keep the stored value)"
    )]
    Mismatch {
        /// Package name.
        name: String,
        /// Package version.
        version: String,
        /// `label` or `os`.
        field: &'static str,
        /// What the stored version has.
        stored: String,
        /// What the add asked for.
        given: String,
    },
    /// No package version matches a lookup.
    #[error("no {what} matches {query}")]
    NotFound {
        /// What was looked for (e.g. "active package version").
        what: &'static str,
        /// The query, as the user wrote it.
        query: String,
    },
    /// The resolved version has no artifact for the requested location.
    #[error("{name} {version} has no artifact for provider {provider}{}", region.as_ref().map(|r| format!(" in region {r}")).unwrap_or_default())]
    NoArtifactForLocation {
        /// Package name.
        name: String,
        /// Package version.
        version: String,
        /// Requested provider.
        provider: String,
        /// Requested region, if any.
        region: Option<String>,
    },
    /// The store changed underneath an optimistic write; retried internally.
    #[error("concurrent update of package {0}")]
    Conflict(String),
    /// The bake key is already registered to another version.
    #[error("bake key {key} is already registered as {name} {version}")]
    BakeKeyExists {
        /// The bake key.
        key: String,
        /// Package that has it.
        name: String,
        /// Version that has it.
        version: String,
    },
    /// Optimistic retries gave up.
    #[error("could not register package {0}: too many concurrent updates")]
    TooMuchContention(String),
    /// Looking up images in a location failed.
    #[error("looking up images in {location}: {message}")]
    Lookup {
        /// Where the lookup ran (e.g. `aws/eu-west-1`).
        location: String,
        /// What failed.
        message: String,
    },
    /// The DynamoDB store failed.
    #[error("DynamoDB: {0}")]
    Dynamo(String),
    /// The SQLite store failed.
    #[error("SQLite registry: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored record could not be read back.
    #[error("corrupt registry record {key}: {message}")]
    Corrupt {
        /// Which record.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl RegistryError {
    /// The error type name the state machine routes on.
    pub fn kind(&self) -> &'static str {
        match self {
            RegistryError::Conflict(_)
            | RegistryError::TooMuchContention(_)
            | RegistryError::Dynamo(_)
            | RegistryError::Lookup { .. } => "Retryable",
            _ => "NonRetryable",
        }
    }
}
