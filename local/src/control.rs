//! Local-only control endpoints (not part of the API Gateway surface): fire the scheduler's reply-queue
//! sweep now (as an EventBridge schedule would), and read the SQS call counter for benchmarks. They have a
//! listener of their own on 127.0.0.1 (`GATEWAY_LOCAL_CONTROL_PORT`), never the gateway's client ports.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// The control listener's address: loopback only, whatever `GATEWAY_LOCAL_HOST` says.
pub const HOST: &str = "127.0.0.1";

pub fn router(sqs: aws_sdk_sqs::Client) -> Router {
    Router::new()
        .route("/_local/sweep-reply-queues", post(sweep_reply_queues))
        .route("/_local/metrics", get(metrics))
        .with_state(sqs)
}

async fn sweep_reply_queues(
    State(sqs): State<aws_sdk_sqs::Client>,
    Query(params): Query<HashMap<String, String>>,
) -> Json<Value> {
    let idle = params
        .get("idle_secs")
        .and_then(|v| v.parse().ok())
        .unwrap_or(3600);
    let prefix = params
        .get("prefix")
        .cloned()
        .unwrap_or_else(|| "llm-gateway-reply-".into());
    match gateway_shared::transport::queue::sweep_reply_queues(
        &sqs,
        &prefix,
        Duration::from_secs(idle),
    )
    .await
    {
        Ok(deleted) => Json(json!({"deleted": deleted})),
        Err(error) => Json(json!({"error": error})),
    }
}

async fn metrics() -> Json<Value> {
    Json(json!({"sqs_calls": gateway_shared::transport::queue::sqs_calls()}))
}
