//! Local-only control endpoints (not part of the API Gateway surface): invoke the scheduler with a job
//! now, fire its reply-queue sweep now (as an EventBridge schedule would), run the hourly audit digest job now, and read the SQS
//! call counter for benchmarks. They have a listener of their own on 127.0.0.1
//! (`GATEWAY_LOCAL_CONTROL_PORT`), never the gateway's client ports.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use gateway_shared::audit::clock::Hour;
use gateway_shared::audit::lifecycle::Invocations;
use serde_json::{json, Value};

/// The control listener's address: loopback only, whatever `GATEWAY_LOCAL_HOST` says.
pub const HOST: &str = "127.0.0.1";

#[derive(Clone)]
pub struct Control {
    pub audit_digest: Arc<audit_digest::Job>,
    pub scheduler: Scheduled,
}

/// The scheduler function and its execution environment (whose audit events leave after each run).
#[derive(Clone)]
pub struct Scheduled {
    pub scheduler: Arc<scheduler::Scheduler>,
    pub invocations: Arc<Invocations>,
}

impl Scheduled {
    /// One invocation with `event`, as an EventBridge rule makes it.
    pub async fn run(
        &self,
        event: Value,
        now_millis: u64,
    ) -> Result<Value, scheduler::SchedulerError> {
        let _invocation = self.invocations.begin();
        self.scheduler.handle(event, now_millis).await
    }
}

pub fn router(control: Control) -> Router {
    Router::new()
        .route("/_local/scheduler", post(run_scheduler))
        .route("/_local/sweep-reply-queues", post(sweep_reply_queues))
        .route("/_local/audit-digest", post(run_audit_digest))
        .route("/_local/metrics", get(metrics))
        .with_state(control)
}

async fn sweep_reply_queues(
    State(control): State<Control>,
    Query(params): Query<HashMap<String, String>>,
) -> Json<Value> {
    let idle = params
        .get("idle_secs")
        .and_then(|v| v.parse().ok())
        .unwrap_or(3600);
    let prefix = params
        .get("prefix")
        .cloned()
        .unwrap_or_else(|| scheduler::DEFAULT_REPLY_PREFIX.into());
    // The scheduler function's own sweep, with the prefix and idle limit the caller narrows it to.
    match control
        .scheduler
        .scheduler
        .sweep(&prefix, Duration::from_secs(idle))
        .await
    {
        Ok(deleted) => Json(json!({"deleted": deleted})),
        Err(error) => Json(json!({"error": error.to_string()})),
    }
}

/// The scheduler function, invoked now with the posted event (`{"job": "user-dates"}`), as its rule
/// would; `?now_millis=` runs it as of another time (tests move the calendar, not the clock).
/// Answers 200 and the job's answer, or 500 and the error.
async fn run_scheduler(
    State(control): State<Control>,
    Query(params): Query<HashMap<String, String>>,
    Json(event): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let now = params
        .get("now_millis")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(gateway_shared::audit::clock::now_millis);
    match control.scheduler.run(event, now).await {
        Ok(answer) => (StatusCode::OK, Json(answer)),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": error.to_string()})),
        ),
    }
}

/// The hourly audit job, now: as the schedule runs it (hours that ended more than the grace period
/// ago), or with `?through=YYYY-MM-DDTHH` through that hour, which the caller declares closed even if
/// it has not ended (tests digest the hour they just wrote). Answers the run's summary as JSON.
async fn run_audit_digest(
    State(control): State<Control>,
    Query(params): Query<HashMap<String, String>>,
) -> (StatusCode, Json<Value>) {
    let run = match params.get("through") {
        None => {
            control
                .audit_digest
                .run_scheduled(gateway_shared::audit::clock::now_millis() as i64)
                .await
        }
        Some(text) => match Hour::parse(text) {
            Some(through) => control.audit_digest.run_through(through).await,
            None => {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(
                        json!({"error": format!("through={text:?} is not an hour (YYYY-MM-DDTHH)")}),
                    ),
                )
            }
        },
    };
    match run {
        Ok(summary) => (StatusCode::OK, Json(json!(summary))),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": error.to_string()})),
        ),
    }
}

async fn metrics() -> Json<Value> {
    Json(json!({"sqs_calls": gateway_shared::transport::queue::sqs_calls()}))
}
