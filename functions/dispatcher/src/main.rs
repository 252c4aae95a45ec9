//! The dispatcher Lambda (SQS event source on the provider request queues, `ReportBatchItemFailures`).

use aws_lambda_events::sqs::SqsEvent;
use dispatcher::{Dispatcher, DispatcherConfig};
use lambda_runtime::{service_fn, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    gateway_shared::telemetry::init();
    let settings = gateway_shared::config::Env;
    let config = DispatcherConfig::from_settings(&settings)?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let audit = gateway_shared::audit::sink_from_settings(&settings, &sdk);
    let dispatcher = Dispatcher::from_config(config, &sdk, audit)?;
    let dispatcher = &dispatcher;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, lambda_runtime::Error>(dispatcher.handle(event.payload).await)
    }))
    .await
}
