//! The scheduler Lambda (EventBridge rules, each naming its job in the event: `{"job": "..."}`).

use std::sync::Arc;

use lambda_runtime::{service_fn, LambdaEvent};
use scheduler::{Scheduler, SchedulerConfig};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    gateway_shared::telemetry::init();
    let settings = gateway_shared::config::Env;
    let config = SchedulerConfig::from_settings(&settings)?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let audit = gateway_shared::audit::buffer_from_settings(&settings, &sdk);
    let scheduler = Scheduler::new(config, Arc::new(aws_sdk_sqs::Client::new(&sdk)))
        .with_users(&sdk, Arc::new(audit.clone()))
        .with_budget_alerts(&sdk)
        .with_rollups(&sdk)
        .with_usage_plans(&sdk, Arc::new(audit.clone()));
    let (scheduler, audit) = (&scheduler, &audit);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            // An error fails the invocation: the rule's retry runs it again and the Errors metric alarms.
            let result = scheduler
                .handle(event.payload, gateway_shared::audit::clock::now_millis())
                .await;
            audit.flush().await;
            result.map_err(lambda_runtime::Error::from)
        },
    ))
    .await
}
