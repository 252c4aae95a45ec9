//! Local-only control endpoints (not part of the API Gateway surface): fire the scheduler's reply-queue
//! sweep now (as an EventBridge schedule would), and read the SQS call counter for benchmarks.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::Json;
use serde_json::{json, Value};

pub async fn sweep_reply_queues(
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

pub async fn metrics() -> Json<Value> {
    Json(json!({"sqs_calls": gateway_shared::transport::queue::sqs_calls()}))
}
