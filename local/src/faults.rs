//! Local-only fault injection for the dispatcher's event source: a request whose path names
//! `mock-dispatch-crash` makes the emulated function fail its first delivery (as a crashed invocation
//! would), so tests can watch SQS redeliver it and the client still get its answer.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};

pub const CRASH_MARKER: &str = "mock-dispatch-crash";

pub async fn dispatch_with_injected_crashes(
    dispatcher: &dispatcher::Dispatcher,
    mut event: SqsEvent,
) -> SqsBatchResponse {
    let mut crashed = Vec::new();
    event.records.retain(|record| {
        let first_delivery = record
            .attributes
            .get("ApproximateReceiveCount")
            .is_none_or(|count| count == "1");
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
