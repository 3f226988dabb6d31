//! The reaper Lambda function (run on a schedule): reads its settings and
//! builds its clients once at cold start, then runs one sweep per
//! invocation with [`bakehouse::triggers::reaper::Reaper::sweep`].

use bakehouse::triggers::reaper::{Reaper, ReaperSettings};
use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    bakehouse::lambda::init_tracing();
    let vars = bakehouse::config::EnvVars::from_process();
    let settings = ReaperSettings::from_vars(&vars)?;
    let table = bakehouse::config::TableConfig::from_vars(&vars)?.table;
    let sdk = bakehouse::aws::from_env(None).await;
    let reaper = Reaper::with_table(&sdk, &table, settings);
    let reaper = &reaper;
    lambda_runtime::run(service_fn(
        move |_event: LambdaEvent<serde_json::Value>| async move {
            let report = reaper.sweep().await?;
            tracing::info!(
                terminated = report.terminated.len(),
                kept = report.kept.len(),
                images = report.images_deregistered.len(),
                snapshots = report.snapshots_deleted.len(),
                errors = report.errors.len(),
                "sweep done"
            );
            Ok::<_, Error>(report)
        },
    ))
    .await
}
