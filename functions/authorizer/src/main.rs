//! The authorizer Lambda: configuration and clients built once, then [`authorizer::handle`] per request.

use authorizer::{handle_event, AuthorizerConfig, State};
use lambda_runtime::{service_fn, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    gateway_shared::telemetry::init();
    let config = AuthorizerConfig::from_settings(&gateway_shared::config::Env)?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let audit = gateway_shared::audit::sink_from_settings(&gateway_shared::config::Env, &sdk);
    let state = State::from_config(config, &sdk, audit).await?;
    let state = &state;
    // Taken as plain JSON: an event the typed reader refuses (a malformed client header) is still
    // audited and answered 401, instead of failing the invocation.
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            handle_event(state, event.payload).await
        },
    ))
    .await
}
