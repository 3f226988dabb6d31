//! The webhook Lambda function (behind a function URL): reads its settings
//! and the webhook secret once at cold start, then hands every request to
//! [`bakehouse::triggers::webhook::Webhook::handle`].

use aws_lambda_events::lambda_function_urls::LambdaFunctionUrlRequest;
use bakehouse::triggers::webhook::{Webhook, WebhookSettings};
use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    bakehouse::lambda::init_tracing();
    let settings = WebhookSettings::from_env()?;
    let sdk = bakehouse::aws::from_env(None).await;
    let webhook = Webhook::from_settings(&sdk, settings).await?;
    let webhook = &webhook;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<LambdaFunctionUrlRequest>| async move {
            Ok::<_, Error>(webhook.handle(event.payload).await)
        },
    ))
    .await
}
