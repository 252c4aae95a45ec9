//! The audit-writer Lambda (SQS event source with `ReportBatchItemFailures`).

use audit_writer::{Writer, WriterConfig};
use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{service_fn, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    gateway_shared::telemetry::init();
    let config = WriterConfig::from_settings(&gateway_shared::config::Env)?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let writer = Writer::from_config(config, &sdk);
    let writer = &writer;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, lambda_runtime::Error>(writer.handle(event.payload).await)
    }))
    .await
}
