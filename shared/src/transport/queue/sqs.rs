//! What the queue transport needs from SQS, as a narrow trait ([`MessageQueue`]) with exactly the calls
//! it makes, implemented for `aws_sdk_sqs::Client`. The route side, the dispatcher and the sweeper take
//! the trait, so their branches (a swept queue, a reply queue that is gone) can be tested against an
//! in-memory fake instead of a live SQS endpoint. Also here: the call counter the benchmarks read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

static SQS_CALLS: AtomicU64 = AtomicU64::new(0);

/// SQS API calls made by the queue transport and the dispatcher in this process (for benchmarks).
pub fn sqs_calls() -> u64 {
    SQS_CALLS.load(Ordering::Relaxed)
}

// Counted where the call is made rather than in the client, so the figure covers the same calls it
// always did (the transport's own traffic, not visibility extensions or sweeps).
pub(super) fn count_call() {
    SQS_CALLS.fetch_add(1, Ordering::Relaxed);
}

/// A failed SQS call. A queue that no longer exists is told apart because both sides act on it: the
/// route recreates its swept reply queue, the dispatcher stops answering an environment that is gone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    Failed(String),
}

impl QueueError {
    pub fn is_gone(&self) -> bool {
        matches!(self, QueueError::Gone(_))
    }

    /// Classifies an error by its text: SQS names a missing queue differently in its query and JSON
    /// protocols (and moto in its own way), and every one of them says so in the message.
    pub fn from_message(message: String) -> QueueError {
        if message.contains("NonExistentQueue") || message.contains("QueueDoesNotExist") {
            QueueError::Gone(message)
        } else {
            QueueError::Failed(message)
        }
    }
}

/// A received message, as far as the transport reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub message_id: Option<String>,
    pub receipt_handle: Option<String>,
    pub body: Option<String>,
}

/// One page of queue URLs and the token of the next, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueuePage {
    pub queue_urls: Vec<String>,
    pub next_token: Option<String>,
}

/// The SQS calls the queue transport makes, and no others.
pub trait MessageQueue: Send + Sync {
    fn send_message<'a>(
        &'a self,
        queue_url: &'a str,
        body: String,
    ) -> BoxFuture<'a, Result<(), QueueError>>;

    /// Up to `max_messages`, long-polling for at most `wait`.
    fn receive_messages<'a>(
        &'a self,
        queue_url: &'a str,
        max_messages: i32,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<ReceivedMessage>, QueueError>>;

    /// Deletes received messages, given as (message id, receipt handle), in one call.
    fn delete_messages<'a>(
        &'a self,
        queue_url: &'a str,
        entries: Vec<(String, String)>,
    ) -> BoxFuture<'a, Result<(), QueueError>>;

    fn change_visibility<'a>(
        &'a self,
        queue_url: &'a str,
        receipt_handle: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), QueueError>>;

    /// Creates a queue with the given attributes (by their SQS names) and tags; returns its URL.
    fn create_queue<'a>(
        &'a self,
        name: &'a str,
        attributes: Vec<(String, String)>,
        tags: Vec<(String, String)>,
    ) -> BoxFuture<'a, Result<String, QueueError>>;

    fn tag_queue<'a>(
        &'a self,
        queue_url: &'a str,
        tags: Vec<(String, String)>,
    ) -> BoxFuture<'a, Result<(), QueueError>>;

    fn list_queues<'a>(
        &'a self,
        prefix: &'a str,
        next_token: Option<String>,
    ) -> BoxFuture<'a, Result<QueuePage, QueueError>>;

    fn list_queue_tags<'a>(
        &'a self,
        queue_url: &'a str,
    ) -> BoxFuture<'a, Result<HashMap<String, String>, QueueError>>;

    fn delete_queue<'a>(&'a self, queue_url: &'a str) -> BoxFuture<'a, Result<(), QueueError>>;
}

fn sdk_error<E: std::error::Error + 'static, R: std::fmt::Debug>(
    error: aws_sdk_sqs::error::SdkError<E, R>,
) -> QueueError {
    QueueError::from_message(aws_sdk_sqs::error::DisplayErrorContext(error).to_string())
}

fn seconds(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs()).unwrap_or(i32::MAX)
}

impl MessageQueue for aws_sdk_sqs::Client {
    fn send_message<'a>(
        &'a self,
        queue_url: &'a str,
        body: String,
    ) -> BoxFuture<'a, Result<(), QueueError>> {
        async move {
            self.send_message()
                .queue_url(queue_url)
                .message_body(body)
                .send()
                .await
                .map(|_| ())
                .map_err(sdk_error)
        }
        .boxed()
    }

    fn receive_messages<'a>(
        &'a self,
        queue_url: &'a str,
        max_messages: i32,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<ReceivedMessage>, QueueError>> {
        async move {
            let out = self
                .receive_message()
                .queue_url(queue_url)
                .max_number_of_messages(max_messages)
                .wait_time_seconds(seconds(wait))
                .send()
                .await
                .map_err(sdk_error)?;
            Ok(out
                .messages
                .unwrap_or_default()
                .into_iter()
                .map(|m| ReceivedMessage {
                    message_id: m.message_id,
                    receipt_handle: m.receipt_handle,
                    body: m.body,
                })
                .collect())
        }
        .boxed()
    }

    fn delete_messages<'a>(
        &'a self,
        queue_url: &'a str,
        entries: Vec<(String, String)>,
    ) -> BoxFuture<'a, Result<(), QueueError>> {
        async move {
            let entries = entries
                .into_iter()
                .filter_map(|(id, handle)| {
                    aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                        .id(id)
                        .receipt_handle(handle)
                        .build()
                        .ok()
                })
                .collect();
            self.delete_message_batch()
                .queue_url(queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map(|_| ())
                .map_err(sdk_error)
        }
        .boxed()
    }

    fn change_visibility<'a>(
        &'a self,
        queue_url: &'a str,
        receipt_handle: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), QueueError>> {
        async move {
            self.change_message_visibility()
                .queue_url(queue_url)
                .receipt_handle(receipt_handle)
                .visibility_timeout(seconds(timeout))
                .send()
                .await
                .map(|_| ())
                .map_err(sdk_error)
        }
        .boxed()
    }

    fn create_queue<'a>(
        &'a self,
        name: &'a str,
        attributes: Vec<(String, String)>,
        tags: Vec<(String, String)>,
    ) -> BoxFuture<'a, Result<String, QueueError>> {
        async move {
            let attributes = attributes
                .into_iter()
                .map(|(k, v)| (aws_sdk_sqs::types::QueueAttributeName::from(k.as_str()), v))
                .collect();
            let created = self
                .create_queue()
                .queue_name(name)
                .set_attributes(Some(attributes))
                .set_tags(Some(tags.into_iter().collect()))
                .send()
                .await
                .map_err(sdk_error)?;
            created
                .queue_url
                .ok_or_else(|| QueueError::Failed("the queue was created without a URL".into()))
        }
        .boxed()
    }

    fn tag_queue<'a>(
        &'a self,
        queue_url: &'a str,
        tags: Vec<(String, String)>,
    ) -> BoxFuture<'a, Result<(), QueueError>> {
        async move {
            self.tag_queue()
                .queue_url(queue_url)
                .set_tags(Some(tags.into_iter().collect()))
                .send()
                .await
                .map(|_| ())
                .map_err(sdk_error)
        }
        .boxed()
    }

    fn list_queues<'a>(
        &'a self,
        prefix: &'a str,
        next_token: Option<String>,
    ) -> BoxFuture<'a, Result<QueuePage, QueueError>> {
        async move {
            let page = self
                .list_queues()
                .queue_name_prefix(prefix)
                .set_next_token(next_token)
                .send()
                .await
                .map_err(sdk_error)?;
            Ok(QueuePage {
                queue_urls: page.queue_urls.unwrap_or_default(),
                next_token: page.next_token,
            })
        }
        .boxed()
    }

    fn list_queue_tags<'a>(
        &'a self,
        queue_url: &'a str,
    ) -> BoxFuture<'a, Result<HashMap<String, String>, QueueError>> {
        async move {
            let out = self
                .list_queue_tags()
                .queue_url(queue_url)
                .send()
                .await
                .map_err(sdk_error)?;
            Ok(out.tags.unwrap_or_default())
        }
        .boxed()
    }

    fn delete_queue<'a>(&'a self, queue_url: &'a str) -> BoxFuture<'a, Result<(), QueueError>> {
        async move {
            self.delete_queue()
                .queue_url(queue_url)
                .send()
                .await
                .map(|_| ())
                .map_err(sdk_error)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_queue_is_told_apart_in_every_protocol_s_wording() {
        for message in [
            "service error: AWS.SimpleQueueService.NonExistentQueue: The specified queue does not exist",
            "service error: QueueDoesNotExist: The specified queue does not exist.",
        ] {
            assert!(QueueError::from_message(message.into()).is_gone(), "{message}");
        }
        assert!(!QueueError::from_message("dispatch failure: timeout".into()).is_gone());
    }
}
