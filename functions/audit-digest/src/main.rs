//! The audit-digest Lambda (EventBridge schedule, hourly): digests every hour that ended more than the
//! grace period ago and is not digested yet, and reports incomplete requests.

use audit_digest::{DigestConfig, Job};
use lambda_runtime::{service_fn, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    gateway_shared::telemetry::init();
    let config = DigestConfig::from_settings(&gateway_shared::config::Env)?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let job = Job::from_config(config, &sdk);
    let job = &job;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            // An error fails the invocation: the schedule's retry runs it again and the Errors metric
            // alarms.
            job.handle(event.payload)
                .await
                .map_err(lambda_runtime::Error::from)
        },
    ))
    .await
}
