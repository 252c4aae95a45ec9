//! The per-environment reply queue on the route side: created at first use, tagged with a heartbeat
//! at most once a minute (so the sweeper can tell live environments from gone ones), recreated under a
//! new name if it was swept. One poller demultiplexes its replies to the waiting requests by request id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use tokio::sync::mpsc;

use super::sqs::{count_call, MessageQueue};
use crate::audit::clock;
use crate::transport::envelope::{ReplyError, ReplyErrorKind, ReplyMessage};
use crate::transport::TransportError;

const HEARTBEAT_EVERY: Duration = Duration::from_secs(60);
/// Marks a queue as a reply queue, so the sweeper never deletes anything else under the prefix.
pub const REPLY_QUEUE_TAG: &str = "llm-gateway:reply-queue";
/// Unix seconds of the environment's last sign of life.
pub const HEARTBEAT_TAG: &str = "llm-gateway:heartbeat";

/// The heartbeat tag as of now.
fn heartbeat() -> (String, String) {
    (
        HEARTBEAT_TAG.to_string(),
        (clock::now_millis() / 1000).to_string(),
    )
}

/// What the poller hands a waiting request.
pub(super) enum Delivery {
    Reply(ReplyMessage),
    /// The reply queue was deleted under the request: nothing the dispatcher sends can arrive any
    /// more, so this ends the answer wherever it stands (it is not a reply, so not in sequence).
    Lost(ReplyError),
}

struct ReplyQueueState {
    url: Option<String>,
    /// Bumped when the queue was found swept, so the next one gets a name SQS has not just deleted
    /// (a deleted name cannot be reused for 60 seconds).
    generation: u32,
    heartbeat_at: Option<Instant>,
}

pub(super) struct ReplyQueue {
    sqs: Arc<dyn MessageQueue>,
    name_stem: String,
    state: tokio::sync::Mutex<ReplyQueueState>,
    waiters: Mutex<HashMap<String, mpsc::UnboundedSender<Delivery>>>,
    polling: AtomicBool,
}

impl ReplyQueue {
    /// A reply queue named `{name_stem}-{generation}`, created when first needed.
    pub(super) fn new(sqs: Arc<dyn MessageQueue>, name_stem: String) -> Self {
        ReplyQueue {
            sqs,
            name_stem,
            state: tokio::sync::Mutex::new(ReplyQueueState {
                url: None,
                generation: 0,
                heartbeat_at: None,
            }),
            waiters: Mutex::new(HashMap::new()),
            polling: AtomicBool::new(false),
        }
    }

    fn lock_waiters(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<Delivery>>> {
        self.waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The queue's URL, creating it on first use (or after it was swept) and refreshing its heartbeat.
    pub(super) async fn url(&self) -> Result<String, TransportError> {
        let mut state = self.state.lock().await;
        if let Some(url) = state.url.clone() {
            let stale = state
                .heartbeat_at
                .is_none_or(|at| at.elapsed() >= HEARTBEAT_EVERY);
            if !stale {
                return Ok(url);
            }
            count_call();
            match self.sqs.tag_queue(&url, vec![heartbeat()]).await {
                Ok(_) => {
                    state.heartbeat_at = Some(Instant::now());
                    return Ok(url);
                }
                Err(error) if error.is_gone() => {
                    tracing::warn!(url, "reply queue was swept; creating a new one");
                    state.url = None;
                    state.generation += 1;
                }
                Err(error) => return Err(TransportError::Connect(error.to_string())),
            }
        }
        let name = format!("{}-{}", self.name_stem, state.generation);
        count_call();
        let attributes = [
            (QueueAttributeName::SqsManagedSseEnabled, "true"),
            (QueueAttributeName::MessageRetentionPeriod, "900"),
        ];
        let url = self
            .sqs
            .create_queue(
                &name,
                attributes
                    .into_iter()
                    .map(|(k, v)| (k.as_str().to_string(), v.to_string()))
                    .collect(),
                vec![(REPLY_QUEUE_TAG.into(), "true".into()), heartbeat()],
            )
            .await
            .map_err(|e| TransportError::Connect(format!("reply queue {name}: {e}")))?;
        tracing::info!(url, "reply queue ready");
        state.url = Some(url.clone());
        state.heartbeat_at = Some(Instant::now());
        Ok(url)
    }

    async fn forget(&self, url: &str) {
        let mut state = self.state.lock().await;
        if state.url.as_deref() == Some(url) {
            state.url = None;
            state.generation += 1;
        }
    }

    pub(super) fn register(
        self: &Arc<Self>,
        request_id: &str,
    ) -> (mpsc::UnboundedReceiver<Delivery>, WaiterGuard) {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock_waiters().insert(request_id.to_string(), tx);
        if !self.polling.swap(true, Ordering::AcqRel) {
            tokio::spawn(self.clone().poll());
        }
        (
            rx,
            WaiterGuard {
                queue: self.clone(),
                request_id: request_id.to_string(),
            },
        )
    }

    /// Receives replies while anyone waits, hands each to its request, deletes what it received.
    async fn poll(self: Arc<Self>) {
        loop {
            if self.lock_waiters().is_empty() {
                self.polling.store(false, Ordering::Release);
                // A request may have registered between the check and the store.
                if self.lock_waiters().is_empty() || self.polling.swap(true, Ordering::AcqRel) {
                    return;
                }
            }
            let url = match self.url().await {
                Ok(url) => url,
                Err(error) => {
                    tracing::warn!(%error, "reply queue unavailable");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            count_call();
            let received = self
                .sqs
                .receive_messages(&url, 10, Duration::from_secs(2))
                .await;
            let messages = match received {
                Ok(messages) => messages,
                Err(error) => {
                    if error.is_gone() {
                        // Swept while in use: the replies of requests in flight went to a queue that is
                        // gone, so fail them now (a clean 502) rather than at their deadline; the next
                        // request creates a new queue.
                        self.forget(&url).await;
                        self.fail_waiters(
                            "the reply queue was deleted while the request was in flight",
                        );
                    } else {
                        tracing::warn!(%error, "reply receive failed");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    continue;
                }
            };
            let mut deletes = Vec::new();
            for message in &messages {
                let parsed = message
                    .body
                    .as_deref()
                    .and_then(|b| serde_json::from_str::<ReplyMessage>(b).ok());
                match parsed {
                    Some(reply) => {
                        if let Some(tx) = self.lock_waiters().get(&reply.request_id) {
                            let _ = tx.send(Delivery::Reply(reply));
                        }
                    }
                    None => tracing::warn!("unreadable reply message dropped"),
                }
                if let (Some(id), Some(handle)) = (&message.message_id, &message.receipt_handle) {
                    deletes.push((id.clone(), handle.clone()));
                }
            }
            if !deletes.is_empty() {
                count_call();
                if let Err(error) = self.sqs.delete_messages(&url, deletes).await {
                    tracing::warn!(%error, "reply delete failed");
                }
            }
        }
    }
}

impl ReplyQueue {
    fn fail_waiters(&self, message: &str) {
        for tx in self.lock_waiters().values() {
            let _ = tx.send(Delivery::Lost(ReplyError {
                kind: ReplyErrorKind::Connect,
                message: message.into(),
            }));
        }
    }
}

/// Unregisters a waiting request when its reader is dropped (answered, failed or abandoned).
pub(super) struct WaiterGuard {
    queue: Arc<ReplyQueue>,
    request_id: String,
}

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        self.queue.lock_waiters().remove(&self.request_id);
    }
}
