//! The authorizer Lambda: configuration and clients built once, then [`authorizer::handle`] per request.

use authorizer::{handle, AuthorizerConfig, State};
use lambda_runtime::{service_fn, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    gateway_shared::telemetry::init();
    let config = AuthorizerConfig::from_settings(&gateway_shared::config::Env)?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let audit = gateway_shared::audit::sink_from_settings(&gateway_shared::config::Env, &sdk);
    let state = State::from_config(config, &sdk, audit).await?;
    let state = &state;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<authorizer::Request>| async move {
        handle(state, event.payload).await
    }))
    .await
}
