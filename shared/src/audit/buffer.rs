//! Audit events held per execution environment and delivered off the response path.
//!
//! A handler records its events into an [`AuditBuffer`]: recording never waits on the network. The
//! buffer is delivered in batches after the invocation's response has gone and before the environment
//! freezes ([`super::lifecycle`]), or at once in the background when a record must leave while the
//! upstream call is still in flight (the `accepted` record: if the sandbox dies mid-request, the trail
//! still knows the request existed).
//!
//! Delivery goes through a [`Deliver`] implementation: [`SqsDelivery`] sends `SendMessageBatch`es
//! (ten entries, 256 KiB at most each), retries entries SQS refused once, and writes what still fails
//! to the log, where CloudWatch keeps it: nothing recorded is dropped silently.

use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::{log_event, AuditEvent, AuditSink};

/// SQS's limits on one `SendMessageBatch`.
const MAX_BATCH_ENTRIES: usize = 10;
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// Where a buffer's events go when it is flushed.
pub trait Deliver: Send + Sync {
    /// Delivers `events`, in order; falls back (to the log) for what cannot be delivered.
    fn deliver(&self, events: Vec<AuditEvent>) -> BoxFuture<'_, ()>;
}

impl Deliver for Box<dyn Deliver> {
    fn deliver(&self, events: Vec<AuditEvent>) -> BoxFuture<'_, ()> {
        (**self).deliver(events)
    }
}

/// The events of one execution environment not delivered yet.
#[derive(Clone)]
pub struct AuditBuffer {
    inner: Arc<Inner>,
}

struct Inner {
    pending: Mutex<Vec<AuditEvent>>,
    delivery: Box<dyn Deliver>,
    /// One delivery at a time, so events leave in the order they were recorded.
    delivering: tokio::sync::Mutex<()>,
}

impl AuditBuffer {
    pub fn new(delivery: impl Deliver + 'static) -> Self {
        AuditBuffer {
            inner: Arc::new(Inner {
                pending: Mutex::new(Vec::new()),
                delivery: Box::new(delivery),
                delivering: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Delivers everything recorded so far; returns when it is delivered (or written to the log).
    pub async fn flush(&self) {
        let _turn = self.inner.delivering.lock().await;
        let events = std::mem::take(&mut *self.lock_pending());
        if !events.is_empty() {
            self.inner.delivery.deliver(events).await;
        }
    }

    /// Events recorded and not yet taken by a flush.
    pub fn pending(&self) -> usize {
        self.lock_pending().len()
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, Vec<AuditEvent>> {
        // A poisoned lock only means a recorder panicked mid-push; the events are still whole.
        self.inner
            .pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl AuditSink for AuditBuffer {
    fn record(&self, event: AuditEvent) {
        self.lock_pending().push(event);
    }

    fn send_now(&self) {
        let buffer = self.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { buffer.flush().await });
            }
            // Outside a runtime nothing can be sent now; the invocation's end flushes it.
            Err(_) => tracing::debug!("no runtime: audit events wait for the invocation's end"),
        }
    }
}

/// Delivers to the audit queue with `SendMessageBatch`.
pub struct SqsDelivery {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsDelivery {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: String) -> Self {
        SqsDelivery { client, queue_url }
    }

    /// Sends one batch; returns the events SQS did not take.
    async fn send_batch(&self, batch: Vec<(AuditEvent, String)>) -> Vec<(AuditEvent, String)> {
        let entries = batch.iter().enumerate().filter_map(|(index, (_, body))| {
            aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                .id(index.to_string())
                .message_body(body)
                .build()
                .ok()
        });
        let sent = self
            .client
            .send_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries.collect()))
            .send()
            .await;
        match sent {
            Ok(output) => {
                let failed: Vec<usize> = output
                    .failed()
                    .iter()
                    .filter_map(|entry| entry.id().parse().ok())
                    .collect();
                for entry in output.failed() {
                    tracing::warn!(
                        code = entry.code(),
                        message = entry.message().unwrap_or_default(),
                        "audit queue refused an entry"
                    );
                }
                batch
                    .into_iter()
                    .enumerate()
                    .filter(|(index, _)| failed.contains(index))
                    .map(|(_, entry)| entry)
                    .collect()
            }
            Err(error) => {
                tracing::error!(error = %aws_sdk_sqs::error::DisplayErrorContext(&error), "audit queue unavailable");
                batch
            }
        }
    }
}

impl Deliver for SqsDelivery {
    fn deliver(&self, events: Vec<AuditEvent>) -> BoxFuture<'_, ()> {
        async move {
            let mut refused = Vec::new();
            for batch in batches(events) {
                refused.extend(self.send_batch(batch).await);
            }
            // One retry for what SQS refused or could not take (throttling, a dropped connection).
            let mut lost = Vec::new();
            for batch in batches_of_serialized(refused) {
                lost.extend(self.send_batch(batch).await);
            }
            for (event, _) in lost {
                log_event(&event, "audit queue unavailable");
            }
        }
        .boxed()
    }
}

/// The events as SQS batches within both limits, in order; an event that cannot be serialized is
/// reported and skipped (it has no JSON to deliver anywhere).
fn batches(events: Vec<AuditEvent>) -> Vec<Vec<(AuditEvent, String)>> {
    let serialized = events.into_iter().filter_map(|event| {
        match serde_json::to_string(&event) {
            Ok(body) => Some((event, body)),
            Err(error) => {
                tracing::error!(request_id = %event.request_id, %error, "audit event could not be serialized");
                None
            }
        }
    });
    batches_of_serialized(serialized.collect())
}

fn batches_of_serialized(events: Vec<(AuditEvent, String)>) -> Vec<Vec<(AuditEvent, String)>> {
    let mut batches: Vec<Vec<(AuditEvent, String)>> = Vec::new();
    let mut bytes = 0;
    for (event, body) in events {
        let full = batches.last().is_none_or(|batch| {
            batch.len() == MAX_BATCH_ENTRIES || bytes + body.len() > MAX_BATCH_BYTES
        });
        if full {
            batches.push(Vec::new());
            bytes = 0;
        }
        bytes += body.len();
        if let Some(batch) = batches.last_mut() {
            batch.push((event, body));
        }
    }
    batches
}

/// Writes events to the log (no audit queue configured).
pub struct LogDelivery;

impl Deliver for LogDelivery {
    fn deliver(&self, events: Vec<AuditEvent>) -> BoxFuture<'_, ()> {
        for event in &events {
            log_event(event, "no audit queue configured");
        }
        async {}.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Decision;

    #[derive(Clone, Default)]
    struct Collect(Arc<Mutex<Vec<Vec<String>>>>);

    impl Deliver for Collect {
        fn deliver(&self, events: Vec<AuditEvent>) -> BoxFuture<'_, ()> {
            let ids = events.into_iter().map(|e| e.request_id).collect();
            self.0.lock().unwrap().push(ids);
            async {}.boxed()
        }
    }

    fn event(id: &str) -> AuditEvent {
        AuditEvent::new(id, Decision::Allow, 200)
    }

    #[tokio::test]
    async fn recording_waits_for_nothing_and_a_flush_delivers_in_order_once() {
        let delivered = Collect::default();
        let buffer = AuditBuffer::new(delivered.clone());
        buffer.record(event("a"));
        buffer.record(event("b"));
        assert_eq!(buffer.pending(), 2);
        assert!(
            delivered.0.lock().unwrap().is_empty(),
            "nothing leaves before a flush"
        );
        buffer.flush().await;
        buffer.flush().await;
        assert_eq!(*delivered.0.lock().unwrap(), vec![vec!["a", "b"]]);
        assert_eq!(buffer.pending(), 0);
    }

    #[tokio::test]
    async fn send_now_delivers_in_the_background() {
        let delivered = Collect::default();
        let buffer = AuditBuffer::new(delivered.clone());
        buffer.record(event("accepted"));
        buffer.send_now();
        for _ in 0..100 {
            if !delivered.0.lock().unwrap().is_empty() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(*delivered.0.lock().unwrap(), vec![vec!["accepted"]]);
    }

    #[test]
    fn batches_respect_sqs_entry_and_byte_limits_in_order() {
        let events: Vec<AuditEvent> = (0..23).map(|i| event(&i.to_string())).collect();
        let sizes: Vec<usize> = batches(events).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![10, 10, 3]);

        let mut big = event("big");
        big.reason = Some("x".repeat(100 * 1024));
        let events = vec![big.clone(), big.clone(), big, event("small")];
        let batches = batches(events);
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 2]);
        for batch in &batches {
            let bytes: usize = batch.iter().map(|(_, body)| body.len()).sum();
            assert!(bytes <= MAX_BATCH_BYTES);
        }
        let order: Vec<&str> = batches
            .iter()
            .flatten()
            .map(|(e, _)| e.request_id.as_str())
            .collect();
        assert_eq!(order, vec!["big", "big", "big", "small"]);
    }
}
