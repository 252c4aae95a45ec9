//! Local-only fault injection for the SQS event sources:
//! - a request whose path names `mock-dispatch-crash` makes the emulated dispatcher fail its first
//!   delivery (as a crashed invocation would), so tests can watch SQS redeliver it and the client still
//!   get its answer;
//! - an audit record whose user agent names `mock-audit-writer-crash` makes the emulated audit writer
//!   crash on its first delivery after its S3 write and before SQS deletes the batch, so tests can
//!   watch the redelivered batch be written again without losing or doubling a request's outcome.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};

pub const CRASH_MARKER: &str = "mock-dispatch-crash";
pub const WRITER_CRASH_MARKER: &str = "mock-audit-writer-crash";

fn first_delivery(record: &aws_lambda_events::sqs::SqsMessage) -> bool {
    record
        .attributes
        .get("ApproximateReceiveCount")
        .is_none_or(|count| count == "1")
}

pub async fn write_audit_with_injected_crashes(
    writer: &audit_writer::Writer,
    event: SqsEvent,
) -> SqsBatchResponse {
    let crash = event.records.iter().any(|record| {
        first_delivery(record)
            && record
                .body
                .as_deref()
                .is_some_and(|b| b.contains(WRITER_CRASH_MARKER))
    });
    let ids: Vec<String> = event
        .records
        .iter()
        .filter_map(|r| r.message_id.clone())
        .collect();
    let mut response = writer.handle(event).await;
    if crash {
        tracing::warn!(
            records = ids.len(),
            "injected audit writer crash after the S3 write"
        );
        response = SqsBatchResponse::default();
        for id in ids {
            response.add_failure(id);
        }
    }
    response
}

pub async fn dispatch_with_injected_crashes(
    dispatcher: &dispatcher::Dispatcher,
    mut event: SqsEvent,
) -> SqsBatchResponse {
    let mut crashed = Vec::new();
    event.records.retain(|record| {
        let first_delivery = first_delivery(record);
        let marked = record
            .body
            .as_deref()
            .is_some_and(|b| b.contains(CRASH_MARKER));
        if first_delivery && marked {
            crashed.push(record.message_id.clone().unwrap_or_default());
            false
        } else {
            true
        }
    });
    if !crashed.is_empty() {
        tracing::warn!(?crashed, "injected dispatcher crash (first delivery)");
    }
    let mut response = if event.records.is_empty() {
        SqsBatchResponse::default()
    } else {
        dispatcher.handle(event).await
    };
    for id in crashed {
        response.add_failure(id);
    }
    response
}
