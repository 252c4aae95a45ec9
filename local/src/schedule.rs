//! The EventBridge schedules, emulated: the audit digest job once an hour, a minute after the previous
//! hour has ended plus the grace period (the CDK rule fires at the same minute), and the scheduler's
//! reply-queue sweep every hour.

use std::sync::Arc;
use std::time::Duration;

use gateway_shared::audit::clock::{self, Hour};

pub async fn hourly_audit_digest(job: Arc<audit_digest::Job>) {
    let offset = job.config().grace.as_millis() as i64 + 60_000;
    loop {
        let now = clock::now_millis() as i64;
        let next = Hour::containing_millis(now - offset).next().start_millis() + offset;
        tokio::time::sleep(Duration::from_millis((next - now).max(0) as u64)).await;
        match job.run_scheduled(clock::now_millis() as i64).await {
            Ok(summary) => tracing::info!(?summary, "scheduled audit digest run"),
            Err(error) => tracing::error!(%error, "scheduled audit digest run failed"),
        }
    }
}

/// The scheduler's hourly reply-queue sweep, as the CDK rule sends it.
pub async fn hourly_reply_queue_sweep(scheduler: Arc<scheduler::Scheduler>) {
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        match scheduler
            .handle(serde_json::json!({"job": "sweep-reply-queues"}))
            .await
        {
            Ok(answer) => tracing::info!(%answer, "scheduled reply-queue sweep"),
            Err(error) => tracing::error!(%error, "scheduled reply-queue sweep failed"),
        }
    }
}
