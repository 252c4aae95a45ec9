//! Event sources, emulated. S3 to EventBridge: new objects under the given prefixes of a bucket reach a
//! handler as the "Object Created" event an EventBridge rule delivers. SQS: Lambda's event source mapping, long-polls a queue, hands batches to a handler as the
//! `SqsEvent` Lambda would build, deletes what the handler processed and leaves reported failures for
//! SQS to redeliver after the visibility timeout (and finally move to the queue's dead-letter queue).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use serde_json::json;

/// Lambda's SQS event source keeps several batches in flight at once (five to start with), each in its
/// own execution environment, so one slow invocation (a long stream) never holds up the messages
/// behind it.
const CONCURRENT_BATCHES: usize = 5;

pub async fn sqs_event_source<F, Fut>(
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    queue_arn: String,
    handler: F,
) where
    F: Fn(SqsEvent) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = SqsBatchResponse> + Send + 'static,
{
    let handler = Arc::new(handler);
    let slots = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_BATCHES));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let received = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await;
        let messages = match received {
            Ok(out) => out.messages.unwrap_or_default(),
            Err(error) => {
                tracing::warn!(queue = %queue_url, error = %aws_sdk_sqs::error::DisplayErrorContext(&error), "receive failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        let records: Vec<serde_json::Value> = messages
            .iter()
            .map(|m| {
                let attributes: serde_json::Map<String, serde_json::Value> = m
                    .attributes()
                    .map(|a| a.iter().map(|(k, v)| (k.as_str().to_string(), v.clone().into())).collect())
                    .unwrap_or_default();
                json!({
                    "messageId": m.message_id(), "receiptHandle": m.receipt_handle(), "body": m.body(),
                    "md5OfBody": m.md5_of_body(), "attributes": attributes, "messageAttributes": {},
                    "eventSource": "aws:sqs", "eventSourceARN": queue_arn, "awsRegion": "us-east-1",
                })
            })
            .collect();
        let event: SqsEvent = match serde_json::from_value(json!({ "Records": records })) {
            Ok(event) => event,
            Err(error) => {
                tracing::error!(%error, "SQS event could not be built");
                continue;
            }
        };
        let (sqs, queue_url, handler) = (sqs.clone(), queue_url.clone(), handler.clone());
        tokio::spawn(async move {
            let response = handler(event).await;
            delete_processed(&sqs, &queue_url, &messages, &response).await;
            drop(slot);
        });
    }
}

/// Deletes what the handler processed; reported failures stay for SQS to redeliver.
async fn delete_processed(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    messages: &[aws_sdk_sqs::types::Message],
    response: &SqsBatchResponse,
) {
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    let entries: Vec<DeleteMessageBatchRequestEntry> = messages
        .iter()
        .filter(|m| !failed.contains(&m.message_id().unwrap_or_default()))
        .filter_map(|m| {
            DeleteMessageBatchRequestEntry::builder()
                .id(m.message_id().unwrap_or_default())
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .build()
                .ok()
        })
        .collect();
    if !entries.is_empty() {
        if let Err(error) = sqs
            .delete_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&error), "delete failed; messages will be redelivered");
        }
    }
}

/// A bucket's "Object Created" events through EventBridge to a function (a rule matching `prefixes`),
/// emulated by listing the bucket twice a second: each new object, or new version of one (its ETag), is
/// handed over once.
pub async fn s3_object_created<F, Fut>(
    s3: aws_sdk_s3::Client,
    bucket: String,
    prefixes: Vec<String>,
    handler: F,
) where
    F: Fn(serde_json::Value) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut seen = std::collections::HashSet::new();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for prefix in &prefixes {
            let listed = s3
                .list_objects_v2()
                .bucket(&bucket)
                .prefix(prefix)
                .send()
                .await;
            let objects = match listed {
                Ok(out) => out.contents.unwrap_or_default(),
                Err(error) => {
                    tracing::warn!(%bucket, error = %aws_sdk_s3::error::DisplayErrorContext(&error), "list failed");
                    continue;
                }
            };
            for object in objects {
                let (Some(key), Some(etag)) = (object.key(), object.e_tag()) else {
                    continue;
                };
                if !seen.insert((key.to_string(), etag.to_string())) {
                    continue;
                }
                let event = json!({
                    "version": "0", "source": "aws.s3", "detail-type": "Object Created",
                    "detail": {
                        "version": "0", "bucket": {"name": bucket},
                        "object": {"key": key, "etag": etag.trim_matches('"'), "size": object.size()},
                        "reason": "PutObject",
                    },
                });
                handler(event).await;
            }
        }
    }
}
