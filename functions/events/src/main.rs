//! The events Lambda function (EventBridge rules on SSM command, AMI and
//! instance state changes): reads its settings and builds its clients once
//! at cold start, then hands each event to
//! [`bakehouse::triggers::events::Events::handle`].

use bakehouse::config::{EnvVars, TableConfig};
use bakehouse::triggers::events::{EventSettings, Events};
use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    bakehouse::lambda::init_tracing();
    let vars = EnvVars::from_process();
    let settings = EventSettings::from_vars(&vars)?;
    let table = TableConfig::from_vars(&vars)?.table;
    let sdk = bakehouse::aws::from_env(None).await;
    let events = Events::with_table(&sdk, &table, settings);
    let events = &events;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            Ok::<_, Error>(events.handle(&event.payload).await?)
        },
    ))
    .await
}
