//! Sweeping reply queues whose environment is gone (the scheduler function runs this).

use std::time::Duration;

use super::reply_queue::{HEARTBEAT_TAG, REPLY_QUEUE_TAG};
use super::sqs::MessageQueue;
use crate::audit::clock;

/// Deletes reply queues (by prefix) whose heartbeat is older than `idle`: environments that are gone.
/// The scheduler function calls this; a live environment recreates its queue if it was swept anyway.
pub async fn sweep_reply_queues(
    sqs: &dyn MessageQueue,
    prefix: &str,
    idle: Duration,
) -> Result<Vec<String>, String> {
    let now = clock::now_millis() / 1000;
    let mut deleted = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let page = sqs
            .list_queues(prefix, next.take())
            .await
            .map_err(|e| e.to_string())?;
        for url in page.queue_urls {
            let tags = sqs.list_queue_tags(&url).await.map_err(|e| e.to_string())?;
            let is_reply = tags.contains_key(REPLY_QUEUE_TAG);
            let heartbeat = tags
                .get(HEARTBEAT_TAG)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            if is_reply && now.saturating_sub(heartbeat) > idle.as_secs() {
                sqs.delete_queue(&url).await.map_err(|e| e.to_string())?;
                deleted.push(url);
            }
        }
        next = page.next_token;
        if next.is_none() {
            return Ok(deleted);
        }
    }
}
