//! The provisioner Lambda (S3 notifications from the provisioning bucket).

use lambda_runtime::{service_fn, LambdaEvent};
use provisioner::{Provisioner, ProvisionerConfig};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    gateway_shared::telemetry::init();
    let config = ProvisionerConfig::from_settings(&gateway_shared::config::Env)?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let provisioner = Provisioner::from_config(config, &sdk).await?;
    let provisioner = &provisioner;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            provisioner
                .handle(event.payload, gateway_shared::audit::clock::now_millis())
                .await
                .map_err(lambda_runtime::Error::from)
        },
    ))
    .await
}
