//! Sweeping reply queues whose environment is gone (the scheduler function runs this).

use std::time::Duration;

use super::reply_queue::{HEARTBEAT_TAG, REPLY_QUEUE_TAG};
use super::sqs::sqs_error;
use crate::audit::clock;

/// Deletes reply queues (by prefix) whose heartbeat is older than `idle`: environments that are gone.
/// The scheduler function calls this; a live environment recreates its queue if it was swept anyway.
pub async fn sweep_reply_queues(
    sqs: &aws_sdk_sqs::Client,
    prefix: &str,
    idle: Duration,
) -> Result<Vec<String>, String> {
    let now = clock::now_millis() / 1000;
    let mut deleted = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let page = sqs
            .list_queues()
            .queue_name_prefix(prefix)
            .set_next_token(next.clone())
            .send()
            .await
            .map_err(|e| sqs_error(&e))?;
        for url in page.queue_urls() {
            let tags = sqs
                .list_queue_tags()
                .queue_url(url)
                .send()
                .await
                .map_err(|e| sqs_error(&e))?;
            let tags = tags.tags();
            let is_reply = tags.is_some_and(|t| t.contains_key(REPLY_QUEUE_TAG));
            let heartbeat = tags
                .and_then(|t| t.get(HEARTBEAT_TAG))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            if is_reply && now.saturating_sub(heartbeat) > idle.as_secs() {
                sqs.delete_queue()
                    .queue_url(url)
                    .send()
                    .await
                    .map_err(|e| sqs_error(&e))?;
                deleted.push(url.clone());
            }
        }
        next = page.next_token().map(str::to_string);
        if next.is_none() {
            return Ok(deleted);
        }
    }
}
