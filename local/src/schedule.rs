//! The EventBridge schedules, emulated: the audit digest job once an hour, a minute after the previous
//! hour has ended plus the grace period (the CDK rule fires at the same minute), the scheduler's
//! reply-queue sweep every hour, its budget alerts every five minutes, and its date job daily.

use std::sync::Arc;
use std::time::Duration;

use gateway_shared::audit::clock::{self, Hour};

use crate::control::Scheduled;

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

/// The hourly reply-queue sweep, as the CDK rule sends it.
pub const REPLY_QUEUE_SWEEP: (&str, Duration) = ("sweep-reply-queues", Duration::from_secs(3600));
/// The budget alerts, as the CDK rule sends them.
pub const BUDGET_ALERTS: (&str, Duration) = ("budget-alerts", Duration::from_secs(300));

/// Yesterday's usage rollup (the CDK rule runs it daily just after midnight UTC; here a day after
/// the stack started, and on demand through the control endpoint).
pub const USAGE_ROLLUP: (&str, Duration) = ("usage-rollup", Duration::from_secs(24 * 3600));

/// The usage plans put back to their settings, as the CDK rule sends it.
pub const USAGE_PLANS: (&str, Duration) = ("usage-plans", Duration::from_secs(900));

/// A scheduler job every `period` (`{"job": name}`), as a CDK `rate()` rule sends it.
pub async fn every(scheduled: Scheduled, (job, period): (&'static str, Duration)) {
    loop {
        tokio::time::sleep(period).await;
        match scheduled
            .run(serde_json::json!({ "job": job }), clock::now_millis())
            .await
        {
            Ok(answer) => tracing::info!(%answer, job, "scheduled job"),
            Err(error) => tracing::error!(%error, job, "scheduled job failed"),
        }
    }
}

/// The scheduler's daily date job, a few minutes after each midnight where HR dates are meant (the
/// CDK rule's cron), and once at start so a stack that slept through a midnight catches up.
pub async fn daily_user_dates(scheduled: Scheduled) {
    let offset_ms = i64::from(scheduled.scheduler.utc_offset_minutes()) * 60_000;
    let day_ms: i64 = 24 * 3600 * 1000;
    let after_midnight_ms: i64 = 5 * 60_000;
    loop {
        match scheduled
            .run(
                serde_json::json!({"job": "user-dates"}),
                clock::now_millis(),
            )
            .await
        {
            Ok(answer) => tracing::info!(%answer, "scheduled date job"),
            Err(error) => tracing::error!(%error, "scheduled date job failed"),
        }
        let now = clock::now_millis() as i64;
        let local = now + offset_ms;
        let next =
            (local - after_midnight_ms).div_euclid(day_ms) * day_ms + day_ms + after_midnight_ms;
        tokio::time::sleep(Duration::from_millis((next - local).max(1000) as u64)).await;
    }
}
