//! The dispatcher Lambda (SQS event source on the provider request queues, `ReportBatchItemFailures`);
//! its audit records leave after each batch (see `gateway_shared::audit::lifecycle`).

use std::sync::Arc;

use aws_lambda_events::sqs::SqsEvent;
use dispatcher::{Dispatcher, DispatcherConfig};
use gateway_shared::audit::lifecycle::{run_with_extension, Invocations};
use lambda_runtime::{service_fn, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    gateway_shared::telemetry::init();
    let settings = gateway_shared::config::Env;
    let config = DispatcherConfig::from_settings(&settings)?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let invocations =
        Invocations::new(gateway_shared::audit::buffer_from_settings(&settings, &sdk));
    let dispatcher = Dispatcher::from_config(config, &sdk, Arc::new(invocations.buffer().clone()))?;
    let (dispatcher, lifecycle) = (&dispatcher, &invocations);
    run_with_extension(&invocations, || {
        lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
            let _invocation = lifecycle.begin();
            Ok::<_, lambda_runtime::Error>(dispatcher.handle(event.payload).await)
        }))
    })
    .await
}
