//! The authorizer Lambda: configuration and clients built once, then [`authorizer::handle`] per request;
//! its audit records leave after each answer (see `gateway_shared::audit::lifecycle`).

// The handler's future nests the DynamoDB client's (the revocation read) inside the runtime's and the
// extension's; its layout needs more than the default query depth.
#![recursion_limit = "256"]

use std::sync::Arc;

use authorizer::{handle_event, AuthorizerConfig, State};
use gateway_shared::audit::lifecycle::{run_with_extension, Invocations};
use lambda_runtime::{service_fn, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    gateway_shared::telemetry::init();
    let settings = gateway_shared::config::Env;
    let config = AuthorizerConfig::from_settings(&settings)?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let invocations =
        Invocations::new(gateway_shared::audit::buffer_from_settings(&settings, &sdk));
    let state = State::from_config(config, &sdk, Arc::new(invocations.buffer().clone())).await?;
    let (state, lifecycle) = (&state, &invocations);
    // Taken as plain JSON: an event the typed reader refuses (a malformed client header) is still
    // audited and answered 401, instead of failing the invocation.
    run_with_extension(&invocations, || {
        lambda_runtime::run(service_fn(
            move |event: LambdaEvent<serde_json::Value>| async move {
                let _invocation = lifecycle.begin();
                handle_event(state, event.payload).await
            },
        ))
    })
    .await
}
