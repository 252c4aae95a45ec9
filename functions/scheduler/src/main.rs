//! The scheduler Lambda (EventBridge rules, each naming its job in the event: `{"job": "..."}`).

use std::sync::Arc;

use lambda_runtime::{service_fn, LambdaEvent};
use scheduler::{Scheduler, SchedulerConfig};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    gateway_shared::telemetry::init();
    let config = SchedulerConfig::from_settings(&gateway_shared::config::Env)?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let scheduler = Scheduler::new(config, Arc::new(aws_sdk_sqs::Client::new(&sdk)));
    let scheduler = &scheduler;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            // An error fails the invocation: the rule's retry runs it again and the Errors metric alarms.
            scheduler
                .handle(event.payload)
                .await
                .map_err(lambda_runtime::Error::from)
        },
    ))
    .await
}
