//! The audit writer: takes batches of audit events from the audit queue and writes each batch to S3 as
//! gzip-compressed JSON lines under `audit/year=YYYY/month=MM/day=DD/hour=HH/` (one object per hour the
//! batch spans), the layout the Athena table in `docs/athena/audit_events.sql` reads.
//!
//! A record that is not a valid audit event is reported as a batch item failure, so SQS retries it and
//! finally moves it to the dead-letter queue; a failed S3 write fails exactly the records of that object.
//! Object keys derive from the message ids, so a retried batch overwrites its own object instead of
//! duplicating it.

use std::collections::BTreeMap;
use std::io::Write;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use flate2::write::GzEncoder;
use gateway_shared::audit::{clock, sha256_hex, AuditEvent};
use gateway_shared::config::{self, ConfigError, Settings};

#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub bucket: String,
    pub prefix: String,
}

impl WriterConfig {
    /// `GATEWAY_AUDIT_BUCKET` (required), `GATEWAY_AUDIT_PREFIX` (default `audit/`).
    pub fn from_settings(settings: &dyn Settings) -> Result<Self, ConfigError> {
        let mut prefix = settings
            .get("GATEWAY_AUDIT_PREFIX")
            .unwrap_or_else(|| "audit/".into());
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(WriterConfig {
            bucket: config::required(settings, "GATEWAY_AUDIT_BUCKET")?,
            prefix,
        })
    }
}

pub struct Writer {
    s3: aws_sdk_s3::Client,
    config: WriterConfig,
}

/// One S3 object to write: its key, gzip body and the messages it carries.
#[derive(Debug)]
pub struct AuditObject {
    pub key: String,
    pub body: Vec<u8>,
    pub message_ids: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("gzip encoding failed: {0}")]
    Gzip(#[from] std::io::Error),
}

/// Groups valid events by hour partition into gzip JSONL objects; returns them and the ids of the records
/// that are not audit events.
pub fn batch_objects(
    event: &SqsEvent,
    prefix: &str,
) -> Result<(Vec<AuditObject>, Vec<String>), BatchError> {
    let mut partitions: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut rejected = Vec::new();
    for record in &event.records {
        let id = record.message_id.clone().unwrap_or_default();
        let parsed = record
            .body
            .as_deref()
            .and_then(|body| serde_json::from_str::<AuditEvent>(body).ok());
        let Some(audit) = parsed else {
            tracing::error!(message_id = %id, "record is not an audit event; it will be retried, then dead-lettered");
            rejected.push(id);
            continue;
        };
        let Some(partition) = clock::partition(&audit.time) else {
            tracing::error!(message_id = %id, "audit event has an unreadable time");
            rejected.push(id);
            continue;
        };
        // Re-serialized from the typed event: one canonical JSON line, nothing the schema does not know.
        match serde_json::to_string(&audit) {
            Ok(line) => partitions.entry(partition).or_default().push((id, line)),
            Err(_) => rejected.push(id),
        }
    }
    let mut objects = Vec::new();
    for (partition, lines) in partitions {
        let mut ids: Vec<String> = lines.iter().map(|(id, _)| id.clone()).collect();
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
        for (_, line) in &lines {
            gz.write_all(line.as_bytes())?;
            gz.write_all(b"\n")?;
        }
        let body = gz.finish()?;
        ids.sort();
        let name = &sha256_hex(ids.join(",").as_bytes())[..32];
        objects.push(AuditObject {
            key: format!("{prefix}{partition}/{name}.jsonl.gz"),
            body,
            message_ids: ids,
        });
    }
    Ok((objects, rejected))
}

impl Writer {
    pub fn new(s3: aws_sdk_s3::Client, config: WriterConfig) -> Self {
        Writer { s3, config }
    }

    pub fn from_config(config: WriterConfig, sdk: &aws_config::SdkConfig) -> Self {
        Writer::new(aws_sdk_s3::Client::new(sdk), config)
    }

    /// Writes one SQS batch; the response lists the records to retry.
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        let mut response = SqsBatchResponse::default();
        let (objects, rejected) = match batch_objects(&event, &self.config.prefix) {
            Ok(batch) => batch,
            Err(error) => {
                tracing::error!(%error, "batch could not be encoded; retrying all of it");
                let all = event.records.iter().filter_map(|r| r.message_id.clone());
                response.set_failures(all);
                return response;
            }
        };
        for id in rejected {
            response.add_failure(id);
        }
        for object in objects {
            let put = self
                .s3
                .put_object()
                .bucket(&self.config.bucket)
                .key(&object.key)
                .content_type("application/x-ndjson")
                .content_encoding("gzip")
                .body(object.body.into())
                .send()
                .await;
            match put {
                Ok(_) => {
                    tracing::info!(key = %object.key, events = object.message_ids.len(), "audit events written")
                }
                Err(error) => {
                    tracing::error!(key = %object.key, error = %aws_sdk_s3::error::DisplayErrorContext(&error), "audit object not written; its records will be retried");
                    for id in object.message_ids {
                        response.add_failure(id);
                    }
                }
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use aws_lambda_events::sqs::SqsMessage;
    use gateway_shared::audit::Decision;

    use super::*;

    fn record(id: &str, body: &str) -> SqsMessage {
        let mut message = SqsMessage::default();
        message.message_id = Some(id.into());
        message.body = Some(body.into());
        message
    }

    fn event_at(time: &str, request_id: &str) -> String {
        let mut event = AuditEvent::new(request_id, Decision::Allow, 200);
        event.time = time.into();
        serde_json::to_string(&event).unwrap()
    }

    #[test]
    fn groups_by_hour_and_rejects_non_events() {
        let mut sqs = SqsEvent::default();
        sqs.records = vec![
            record("m1", &event_at("2026-11-25T03:10:00.000Z", "r1")),
            record("m2", &event_at("2026-11-25T04:00:00.000Z", "r2")),
            record("m3", &event_at("2026-11-25T03:59:59.999Z", "r3")),
            record("m4", "{not json"),
            record("m5", r#"{"some":"other message"}"#),
        ];
        let (objects, rejected) = batch_objects(&sqs, "audit/").unwrap();
        assert_eq!(rejected, ["m4", "m5"]);
        assert_eq!(objects.len(), 2);
        assert!(objects[0]
            .key
            .starts_with("audit/year=2026/month=11/day=25/hour=03/"));
        assert!(objects[0].key.ends_with(".jsonl.gz"));
        assert_eq!(objects[0].message_ids, ["m1", "m3"]);

        let mut text = String::new();
        flate2::read::GzDecoder::new(objects[0].body.as_slice())
            .read_to_string(&mut text)
            .unwrap();
        let lines: Vec<AuditEvent> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines
                .iter()
                .map(|e| e.request_id.as_str())
                .collect::<Vec<_>>(),
            ["r1", "r3"]
        );
    }

    #[test]
    fn keys_are_stable_for_a_retried_batch() {
        let mut sqs = SqsEvent::default();
        sqs.records = vec![
            record("m1", &event_at("2026-11-25T03:10:00.000Z", "r1")),
            record("m2", &event_at("2026-11-25T03:11:00.000Z", "r2")),
        ];
        let (first, _) = batch_objects(&sqs, "audit/").unwrap();
        sqs.records.reverse();
        let (again, _) = batch_objects(&sqs, "audit/").unwrap();
        assert_eq!(first[0].key, again[0].key);
    }
}

#[cfg(test)]
mod fixture_tests {
    use super::*;

    #[test]
    fn sample_event_becomes_one_partitioned_object() {
        let text = include_str!("../../../events/audit-writer.json");
        let event: SqsEvent = serde_json::from_str(text).unwrap();
        let (objects, rejected) = batch_objects(&event, "audit/").unwrap();
        assert!(rejected.is_empty());
        assert_eq!(objects.len(), 1);
        assert!(objects[0]
            .key
            .starts_with("audit/year=2026/month=11/day=25/hour=03/"));
    }
}
