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

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is the failure report"
    )]

    use super::*;
    use crate::testing::{FakeQueue, QueueCall};

    #[tokio::test]
    async fn only_reply_queues_idle_past_the_limit_are_deleted() {
        let sqs = FakeQueue::default();
        let now = (clock::now_millis() / 1000).to_string();
        let queues: [(&str, &[(&str, &str)]); 4] = [
            (
                "llm-gateway-reply-gone",
                &[(REPLY_QUEUE_TAG, "true"), (HEARTBEAT_TAG, "1")],
            ),
            ("llm-gateway-reply-never-beat", &[(REPLY_QUEUE_TAG, "true")]),
            (
                "llm-gateway-reply-live",
                &[(REPLY_QUEUE_TAG, "true"), (HEARTBEAT_TAG, &now)],
            ),
            // Under the prefix, but not a reply queue: never the sweeper's to delete.
            ("llm-gateway-reply-other", &[(HEARTBEAT_TAG, "1")]),
        ];
        for (name, tags) in queues {
            let tags = tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            sqs.create_queue(name, Vec::new(), tags).await.unwrap();
        }
        sqs.create_queue(
            "elsewhere",
            Vec::new(),
            vec![(REPLY_QUEUE_TAG.into(), "true".into())],
        )
        .await
        .unwrap();

        let mut deleted = sweep_reply_queues(&sqs, "llm-gateway-reply-", Duration::from_secs(3600))
            .await
            .unwrap();
        deleted.sort();
        assert_eq!(
            deleted,
            [
                FakeQueue::url_of("llm-gateway-reply-gone"),
                FakeQueue::url_of("llm-gateway-reply-never-beat")
            ]
        );
        let deletes: Vec<QueueCall> = sqs
            .calls()
            .into_iter()
            .filter(|c| matches!(c, QueueCall::DeleteQueue { .. }))
            .collect();
        assert_eq!(deletes.len(), 2);
    }
}
