//! The admin API Lambda: configuration and clients built once, then [`admin_api::AdminApi::handle`]
//! per request (lambda_http reads API Gateway's proxy event); audit events leave before each answer
//! is returned, so a frozen environment holds none.

use std::sync::Arc;

use admin_api::{AdminApi, AdminConfig};
use lambda_http::{service_fn, Request};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    gateway_shared::telemetry::init();
    let settings = gateway_shared::config::Env;
    let config = AdminConfig::from_settings(&settings)?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let audit = gateway_shared::audit::buffer_from_settings(&settings, &sdk);
    let api = AdminApi::new(config, &sdk, Arc::new(audit.clone()))?;
    let (api, audit) = (&api, &audit);
    lambda_http::run(service_fn(move |request: Request| async move {
        let response = api.handle(request).await;
        audit.flush().await;
        Ok::<_, std::convert::Infallible>(response)
    }))
    .await
}
