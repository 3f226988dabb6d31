//! The lifecycle Lambda function (run on a schedule): builds its clients
//! once at cold start, then applies every package's retention policy per
//! invocation with [`bakehouse::lifecycle::Lifecycle::run`]. An event
//! `{"dry_run": true}` only reports.

use bakehouse::config::{EnvVars, TableConfig};
use bakehouse::lifecycle::Lifecycle;
use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    bakehouse::lambda::init_tracing();
    let config = TableConfig::from_vars(&EnvVars::from_process())?;
    let sdk = bakehouse::aws::from_env(None).await;
    let lifecycle = Lifecycle::with_table(&sdk, &config.table);
    let lifecycle = &lifecycle;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            let dry_run = event.payload["dry_run"].as_bool().unwrap_or(false);
            let report = lifecycle
                .run(None, None, dry_run, chrono::Utc::now())
                .await?;
            tracing::info!(
                decisions = report.decisions.len(),
                actions = report.actions.len(),
                skipped = report.skipped.len(),
                dry_run,
                "lifecycle done"
            );
            Ok::<_, Error>(report)
        },
    ))
    .await
}
