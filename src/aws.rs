//! Building AWS SDK configuration once, from the standard environment
//! (`AWS_PROFILE`, `AWS_REGION`, `AWS_ENDPOINT_URL`, credentials chain) or
//! for an explicit endpoint (moto in tests and benchmarks).

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;

/// SDK configuration from the standard environment, optionally pinned to a
/// region.
pub async fn from_env(region: Option<&str>) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(r) = region {
        loader = loader.region(Region::new(r.to_string()));
    }
    loader.load().await
}

/// SDK configuration for a local endpoint such as a moto server, with
/// static test credentials.
pub async fn for_endpoint(endpoint: &str, region: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(region.to_string()))
        .credentials_provider(Credentials::new("test", "test", None, None, "static"))
        .load()
        .await
}

/// The same configuration in another region (for per-region clients).
pub fn in_region(config: &SdkConfig, region: &str) -> SdkConfig {
    config
        .to_builder()
        .region(Region::new(region.to_string()))
        .build()
}
