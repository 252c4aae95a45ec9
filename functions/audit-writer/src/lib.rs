//! The audit writer: takes batches of audit events from the audit queue and writes each batch to S3 as
//! one object of gzip-compressed JSON lines under `audit/year=YYYY/month=MM/day=DD/hour=HH/`, the
//! layout the Athena table in `docs/athena/audit_events.sql` reads.
//!
//! The hour is the one in which the writer writes the object, not the events' times: once an hour has
//! ended (plus the writer's timeout), nothing lands in it any more, which is what lets the hourly
//! digest list an hour's objects completely (see `gateway_shared::audit::digest`). Events reach the
//! writer seconds after they happen, so an event sits in its own hour's partition or the next one's.
//!
//! A record that is not a valid audit event is reported as a batch item failure, so SQS retries it and
//! finally moves it to the dead-letter queue; a failed S3 write fails exactly the records of that object.
//! Object keys derive from the message ids, so a retried batch overwrites its own object instead of
//! duplicating it.

use std::io::Write;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use flate2::write::GzEncoder;
use gateway_shared::audit::clock::Hour;
use gateway_shared::audit::{sha256_hex, AuditEvent};
use gateway_shared::config::{self, ConfigError, Settings};
use gateway_shared::pricing::PriceTable;

#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub bucket: String,
    pub prefix: String,
    /// Prices each request's outcome as it is written (`cost_usd`, `cost_status`).
    pub prices: PriceTable,
}

impl WriterConfig {
    /// `GATEWAY_AUDIT_BUCKET` (required), `GATEWAY_AUDIT_PREFIX` (default `audit/`),
    /// `GATEWAY_PRICE_FILE` (optional: a price table replacing the built-in `config/prices.json`).
    pub fn from_settings(settings: &dyn Settings) -> Result<Self, ConfigError> {
        let mut prefix = settings
            .get("GATEWAY_AUDIT_PREFIX")
            .unwrap_or_else(|| "audit/".into());
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        let invalid = |reason: String| ConfigError::Invalid {
            name: "GATEWAY_PRICE_FILE",
            reason,
        };
        let prices = match settings.get("GATEWAY_PRICE_FILE") {
            None => {
                PriceTable::built_in().map_err(|e| invalid(format!("the built-in table: {e}")))?
            }
            Some(path) => PriceTable::from_json(
                &std::fs::read_to_string(&path).map_err(|e| invalid(format!("{path}: {e}")))?,
            )
            .map_err(|e| invalid(format!("{path}: {e}")))?,
        };
        Ok(WriterConfig {
            bucket: config::required(settings, "GATEWAY_AUDIT_BUCKET")?,
            prefix,
            prices,
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

/// The batch's valid events as one gzip JSONL object in the partition of `written_in` (none if no
/// record is valid), and the ids of the records that are not audit events.
pub fn batch_objects(
    event: &SqsEvent,
    prefix: &str,
    written_in: Hour,
    prices: &PriceTable,
) -> Result<(Option<AuditObject>, Vec<String>), BatchError> {
    let mut lines: Vec<(String, String)> = Vec::new();
    let mut rejected = Vec::new();
    for record in &event.records {
        let id = record.message_id.clone().unwrap_or_default();
        let parsed = record
            .body
            .as_deref()
            .and_then(|body| serde_json::from_str::<AuditEvent>(body).ok());
        let Some(mut audit) = parsed else {
            tracing::error!(message_id = %id, "record is not an audit event; it will be retried, then dead-lettered");
            rejected.push(id);
            continue;
        };
        prices.apply(&mut audit);
        // Re-serialized from the typed event: one canonical JSON line, nothing the schema does not know.
        match serde_json::to_string(&audit) {
            Ok(line) => lines.push((id, line)),
            Err(_) => rejected.push(id),
        }
    }
    if lines.is_empty() {
        return Ok((None, rejected));
    }
    let mut ids: Vec<String> = lines.iter().map(|(id, _)| id.clone()).collect();
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
    for (_, line) in &lines {
        gz.write_all(line.as_bytes())?;
        gz.write_all(b"\n")?;
    }
    let body = gz.finish()?;
    ids.sort();
    let name = &sha256_hex(ids.join(",").as_bytes())[..32];
    let object = AuditObject {
        key: format!("{prefix}{}/{name}.jsonl.gz", written_in.partition()),
        body,
        message_ids: ids,
    };
    Ok((Some(object), rejected))
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
        // The hour is taken once, as the write starts; a put that ends after the hour is still within the
        // writer's timeout, which the digest's grace period exceeds.
        let written_in = Hour::now();
        let (object, rejected) =
            match batch_objects(&event, &self.config.prefix, written_in, &self.config.prices) {
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
        if let Some(object) = object {
            let put = self
                .s3
                .put_object()
                .bucket(&self.config.bucket)
                .key(&object.key)
                // The bucket's Object Lock default retention refuses a put without Content-MD5 or a
                // checksum; S3 also checks the bytes against it.
                .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
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

    fn hour(text: &str) -> Hour {
        Hour::parse(text).unwrap()
    }

    #[test]
    fn one_object_in_the_write_hour_whatever_the_event_times_and_non_events_rejected() {
        let mut sqs = SqsEvent::default();
        sqs.records = vec![
            record("m1", &event_at("2026-11-25T03:10:00.000Z", "r1")),
            record("m2", &event_at("2026-11-25T04:00:00.000Z", "r2")),
            record("m3", &event_at("2026-11-25T03:59:59.999Z", "r3")),
            record("m4", "{not json"),
            record("m5", r#"{"some":"other message"}"#),
        ];
        let (object, rejected) = batch_objects(
            &sqs,
            "audit/",
            hour("2026-11-25T04"),
            &PriceTable::built_in().unwrap(),
        )
        .unwrap();
        let object = object.unwrap();
        assert_eq!(rejected, ["m4", "m5"]);
        assert!(object
            .key
            .starts_with("audit/year=2026/month=11/day=25/hour=04/"));
        assert!(object.key.ends_with(".jsonl.gz"));
        assert_eq!(object.message_ids, ["m1", "m2", "m3"]);

        let mut text = String::new();
        flate2::read::GzDecoder::new(object.body.as_slice())
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
            ["r1", "r2", "r3"]
        );
    }

    #[test]
    fn a_batch_of_non_events_writes_nothing() {
        let mut sqs = SqsEvent::default();
        sqs.records = vec![record("m1", "{not json")];
        let (object, rejected) = batch_objects(
            &sqs,
            "audit/",
            hour("2026-11-25T04"),
            &PriceTable::built_in().unwrap(),
        )
        .unwrap();
        assert!(object.is_none());
        assert_eq!(rejected, ["m1"]);
    }

    #[test]
    fn keys_are_stable_for_a_retried_batch() {
        let mut sqs = SqsEvent::default();
        sqs.records = vec![
            record("m1", &event_at("2026-11-25T03:10:00.000Z", "r1")),
            record("m2", &event_at("2026-11-25T03:11:00.000Z", "r2")),
        ];
        let at = hour("2026-11-25T03");
        let (first, _) =
            batch_objects(&sqs, "audit/", at, &PriceTable::built_in().unwrap()).unwrap();
        sqs.records.reverse();
        let (again, _) =
            batch_objects(&sqs, "audit/", at, &PriceTable::built_in().unwrap()).unwrap();
        assert_eq!(first.unwrap().key, again.unwrap().key);
    }
}

#[cfg(test)]
mod fixture_tests {
    use super::*;

    #[test]
    fn sample_event_becomes_one_object_in_the_write_hour() {
        let text = include_str!("../../../events/audit-writer.json");
        let event: SqsEvent = serde_json::from_str(text).unwrap();
        let written_in = Hour::parse("2026-11-25T04").unwrap();
        let (object, rejected) = batch_objects(
            &event,
            "audit/",
            written_in,
            &PriceTable::built_in().unwrap(),
        )
        .unwrap();
        assert!(rejected.is_empty());
        let object = object.unwrap();
        assert!(object
            .key
            .starts_with("audit/year=2026/month=11/day=25/hour=04/"));
        // The sample's gpt-4o-mini request (1 input, 6 output tokens) is priced as it is written.
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::GzDecoder::new(&object.body[..]),
            &mut text,
        )
        .unwrap();
        let written: AuditEvent = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(written.cost_status.as_deref(), Some("priced"));
        let expected = (0.15 + 6.0 * 0.60) / 1_000_000.0;
        assert!((written.cost_usd.unwrap() - expected).abs() < 1e-15);
    }
}
