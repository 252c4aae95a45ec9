//! The provisioner Lambda (S3 notifications from the provisioning bucket).

use std::sync::Arc;

use lambda_runtime::{service_fn, LambdaEvent};
use provisioner::{Provisioner, ProvisionerConfig};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    gateway_shared::telemetry::init();
    let settings = gateway_shared::config::Env;
    let config = ProvisionerConfig::from_settings(&settings)?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let audit = gateway_shared::audit::buffer_from_settings(&settings, &sdk);
    let provisioner = Provisioner::from_config(config, &sdk, Arc::new(audit.clone())).await?;
    let (provisioner, audit) = (&provisioner, &audit);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            let result = provisioner
                .handle(event.payload, gateway_shared::audit::clock::now_millis())
                .await;
            // The run's audit events leave before the invocation ends (the environment may freeze).
            audit.flush().await;
            result.map_err(lambda_runtime::Error::from)
        },
    ))
    .await
}
