//! The `test` step of the build pipeline as a Lambda function.

use bakehouse::build::Step;
use lambda_runtime::service_fn;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    // Configuration and clients once per cold start; the handler is in the library.
    let pipeline = bakehouse::lambda::cold_start().await?;
    lambda_runtime::run(service_fn(|event| {
        bakehouse::lambda::handle(&pipeline, Step::Test, event)
    }))
    .await
}
