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
//!
//! It also records when each API key was last used (`last_used_at` in the key table), from the
//! events of requests the authorizer let through: off the request path, one conditional write per
//! key per batch, which only ever moves the time forward (so a retried batch changes nothing).

use std::collections::BTreeMap;
use std::io::Write;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use flate2::write::GzEncoder;
use gateway_shared::apikeys::ApiKeys;
use gateway_shared::audit::clock::Hour;
use gateway_shared::audit::{sha256_hex, AuditEvent, BudgetReservation, Decision, Record};
use gateway_shared::budgets::{self, UsageCounters};
use gateway_shared::config::{self, ConfigError, Settings};
use gateway_shared::pricing::PriceTable;

#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub bucket: String,
    pub prefix: String,
    /// Prices each request's outcome as it is written (`cost_usd`, `cost_status`).
    pub prices: PriceTable,
    /// The API key table whose `last_used_at` the writer keeps (None: not recorded).
    pub apikey_table: Option<String>,
    /// The usage counters the writer settles requests on (None: no budgets).
    pub usage_table: Option<String>,
}

impl WriterConfig {
    /// `GATEWAY_AUDIT_BUCKET` (required), `GATEWAY_AUDIT_PREFIX` (default `audit/`),
    /// `GATEWAY_PRICE_FILE` (optional: a price table replacing the built-in `config/prices.json`),
    /// `GATEWAY_APIKEY_TABLE` (optional: where keys' last use is recorded), `GATEWAY_USAGE_TABLE`
    /// (optional: the usage counters requests are settled on).
    pub fn from_settings(settings: &dyn Settings) -> Result<Self, ConfigError> {
        let mut prefix = settings
            .get("GATEWAY_AUDIT_PREFIX")
            .unwrap_or_else(|| "audit/".into());
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        let prices = PriceTable::from_settings(settings)?;
        Ok(WriterConfig {
            bucket: config::required(settings, "GATEWAY_AUDIT_BUCKET")?,
            prefix,
            prices,
            apikey_table: settings.get("GATEWAY_APIKEY_TABLE"),
            usage_table: settings.get("GATEWAY_USAGE_TABLE"),
        })
    }
}

pub struct Writer {
    s3: aws_sdk_s3::Client,
    api_keys: Option<ApiKeys>,
    counters: Option<UsageCounters>,
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

/// What one SQS batch comes to.
#[derive(Debug, Default)]
pub struct Batch {
    /// The valid events as one object (none if no record is valid).
    pub object: Option<AuditObject>,
    /// The ids of the records that are not audit events.
    pub rejected: Vec<String>,
    /// API key id -> the latest time (epoch ms) the authorizer let one of its requests through.
    pub key_uses: BTreeMap<String, u64>,
}

/// The batch's audit events (priced), by message id, and the ids of the records that are not
/// audit events.
pub fn parse_batch(
    event: &SqsEvent,
    prices: &PriceTable,
) -> (Vec<(String, AuditEvent)>, Vec<String>) {
    let mut events = Vec::new();
    let mut rejected = Vec::new();
    for record in &event.records {
        let id = record.message_id.clone().unwrap_or_default();
        let parsed = record
            .body
            .as_deref()
            .and_then(|body| serde_json::from_str::<AuditEvent>(body).ok());
        match parsed {
            Some(mut audit) => {
                prices.apply(&mut audit);
                events.push((id, audit));
            }
            None => {
                tracing::error!(message_id = %id, "record is not an audit event; it will be retried, then dead-lettered");
                rejected.push(id);
            }
        }
    }
    (events, rejected)
}

/// The events as one gzip JSONL object in the partition of `written_in`, and the API keys' uses.
pub fn assemble(
    events: &[(String, AuditEvent)],
    mut rejected: Vec<String>,
    prefix: &str,
    written_in: Hour,
) -> Result<Batch, BatchError> {
    let mut lines: Vec<(&str, String)> = Vec::new();
    let mut key_uses = BTreeMap::new();
    for (id, audit) in events {
        if let Some((key, at)) = key_use(audit) {
            let latest = key_uses.entry(key).or_insert(at);
            *latest = (*latest).max(at);
        }
        // Re-serialized from the typed event: one canonical JSON line, nothing the schema does not know.
        match serde_json::to_string(audit) {
            Ok(line) => lines.push((id, line)),
            Err(_) => rejected.push(id.clone()),
        }
    }
    if lines.is_empty() {
        return Ok(Batch {
            object: None,
            rejected,
            key_uses,
        });
    }
    let mut ids: Vec<String> = lines.iter().map(|(id, _)| id.to_string()).collect();
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
    Ok(Batch {
        object: Some(object),
        rejected,
        key_uses,
    })
}

/// [`parse_batch`] then [`assemble`]: the whole batch as one object.
pub fn batch_objects(
    event: &SqsEvent,
    prefix: &str,
    written_in: Hour,
    prices: &PriceTable,
) -> Result<Batch, BatchError> {
    let (events, rejected) = parse_batch(event, prices);
    assemble(&events, rejected, prefix, written_in)
}

/// What settling one request's usage writes (see `gateway_shared::budgets`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    pub request_id: String,
    pub reservation: Option<BudgetReservation>,
    /// The month counters its usage goes to besides those it reserved on.
    pub also: Vec<String>,
    pub tokens: u64,
    pub cost_micros: u64,
}

/// The settlement of a request's final record on a provider route, if it had a principal. What it
/// used: the reported (or estimated) usage and its cost; a request that got no answer from the
/// provider used nothing; one whose usage is unknown keeps what it reserved.
pub fn settlement(event: &AuditEvent) -> Option<Settlement> {
    if event.record != Record::Final || event.admin.is_some() {
        return None;
    }
    let provider = event.provider.as_deref()?;
    if !gateway_shared::Provider::ALL
        .iter()
        .any(|p| p.route_prefix() == provider)
    {
        return None;
    }
    let principal = event.principal.as_ref()?;
    let reserved = event.budget.as_ref();
    let (tokens, cost_micros) = match &event.usage {
        Some(usage) => (
            usage
                .total_tokens
                .max(usage.input_tokens + usage.output_tokens),
            event
                .cost_usd
                .map(budgets::micros)
                .or(reserved.map(|r| r.cost_micros))
                .unwrap_or(0),
        ),
        None if event.status >= 400 || event.decision != Decision::Allow => (0, 0),
        None => reserved.map_or((0, 0), |r| (r.tokens, r.cost_micros)),
    };
    if reserved.is_none() && tokens == 0 && cost_micros == 0 {
        return None;
    }
    // The request's start: its reservation's month, so a request across midnight of the 1st is
    // counted in one month only.
    let time = gateway_shared::audit::clock::millis_from_rfc3339(&event.time)?;
    let started = time.saturating_sub(event.latency.total_ms);
    let reserved_scopes: Vec<&str> = reserved
        .map(|r| {
            r.counters
                .iter()
                .filter_map(|c| c.split_once("#m#").map(|(scope, _)| scope))
                .collect()
        })
        .unwrap_or_default();
    let also = budgets::counters::month_counters(
        principal.department.as_deref(),
        &principal.subject,
        started,
    )
    .into_iter()
    .filter(|key| {
        key.split_once("#m#")
            .is_none_or(|(scope, _)| !reserved_scopes.contains(&scope))
    })
    .collect();
    Some(Settlement {
        request_id: event.request_id.clone(),
        reservation: reserved.cloned(),
        also,
        tokens,
        cost_micros,
    })
}

/// The key and time of an API key's use: a request the authorizer let through with the key.
fn key_use(event: &AuditEvent) -> Option<(String, u64)> {
    if event.record != Record::Authorized {
        return None;
    }
    let principal = event.principal.as_ref()?;
    if principal.auth_method.as_deref() != Some(gateway_shared::apikeys::AUTH_METHOD) {
        return None;
    }
    let id = principal
        .subject
        .strip_prefix(gateway_shared::apikeys::SUBJECT_PREFIX)
        .filter(|id| gateway_shared::apikeys::valid_id(id))?;
    let at = gateway_shared::audit::clock::millis_from_rfc3339(&event.time)?;
    Some((id.to_string(), at))
}

impl Writer {
    pub fn new(s3: aws_sdk_s3::Client, api_keys: Option<ApiKeys>, config: WriterConfig) -> Self {
        Writer {
            s3,
            api_keys,
            counters: None,
            config,
        }
    }

    pub fn from_config(config: WriterConfig, sdk: &aws_config::SdkConfig) -> Self {
        let api_keys = config
            .apikey_table
            .clone()
            .map(|table| ApiKeys::from_sdk(sdk, table));
        let counters = config
            .usage_table
            .clone()
            .map(|table| UsageCounters::from_sdk(sdk, table));
        let mut writer = Writer::new(aws_sdk_s3::Client::new(sdk), api_keys, config);
        writer.counters = counters;
        writer
    }

    /// Writes one SQS batch; the response lists the records to retry.
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        let mut response = SqsBatchResponse::default();
        // The hour is taken once, as the write starts; a put that ends after the hour is still within the
        // writer's timeout, which the digest's grace period exceeds.
        let written_in = Hour::now();
        let (mut events, rejected) = parse_batch(&event, &self.config.prices);
        // Settled before they are written: an event whose settlement failed is retried with it, so
        // the trail never holds an event twice and no usage goes uncounted.
        let unsettled = self.settle(&events).await;
        events.retain(|(id, _)| !unsettled.contains(id));
        for id in unsettled {
            response.add_failure(id);
        }
        let Batch {
            object,
            rejected,
            key_uses,
        } = match assemble(&events, rejected, &self.config.prefix, written_in) {
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
        self.record_key_uses(key_uses).await;
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

    /// Settles the batch's requests; answers the message ids whose settlement failed. A request that
    /// reserved is settled on its own (once, by its marker); the usage of those that reserved nothing
    /// is summed per counter and added in one write per counter.
    async fn settle(&self, events: &[(String, AuditEvent)]) -> Vec<String> {
        let Some(counters) = &self.counters else {
            return Vec::new();
        };
        let now = gateway_shared::audit::clock::now_millis();
        let mut reserved = Vec::new();
        // Per counter: (tokens, cost in micro-dollars, requests), and the messages that add to it.
        type Sum<'a> = ((u64, u64, u64), Vec<&'a String>);
        let mut sums: BTreeMap<String, Sum<'_>> = BTreeMap::new();
        for (id, event) in events {
            let Some(settlement) = settlement(event) else {
                continue;
            };
            if settlement.reservation.is_some() {
                reserved.push((id, settlement));
                continue;
            }
            for key in &settlement.also {
                let ((tokens, cost, requests), ids) = sums.entry(key.clone()).or_default();
                *tokens += settlement.tokens;
                *cost += settlement.cost_micros;
                *requests += 1;
                ids.push(id);
            }
        }
        let settling = reserved.iter().map(|(id, settlement)| async move {
            let result = counters
                .settle(
                    &settlement.request_id,
                    settlement.reservation.as_ref(),
                    &settlement.also,
                    settlement.tokens,
                    settlement.cost_micros,
                    now,
                )
                .await
                .map(|_| ());
            (vec![*id], result)
        });
        let adding = sums.iter().map(|(key, (sum, ids))| async move {
            (ids.clone(), counters.add(key, *sum, now).await)
        });
        let (settled, added) = futures_util::future::join(
            futures_util::future::join_all(settling),
            futures_util::future::join_all(adding),
        )
        .await;
        let mut failed = Vec::new();
        for (ids, result) in settled.into_iter().chain(added) {
            if let Err(error) = result {
                for id in ids {
                    tracing::error!(message_id = %id, %error, "usage not settled; the event will be retried");
                    if !failed.contains(id) {
                        failed.push(id.clone());
                    }
                }
            }
        }
        failed
    }

    /// Last use is bookkeeping, not evidence (the audit events are): a failed write is logged and
    /// the batch still succeeds, so the events are not written twice for it.
    async fn record_key_uses(&self, uses: BTreeMap<String, u64>) {
        let Some(keys) = &self.api_keys else {
            return;
        };
        let writes = uses.iter().map(|(id, at)| keys.touch(id, *at));
        for (result, id) in futures_util::future::join_all(writes)
            .await
            .into_iter()
            .zip(uses.keys())
        {
            if let Err(error) = result {
                tracing::warn!(key_id = %id, %error, "API key last use not recorded");
            }
        }
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
        let Batch {
            object, rejected, ..
        } = batch_objects(
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
        let Batch {
            object, rejected, ..
        } = batch_objects(
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
    fn an_api_keys_latest_allowed_request_is_its_last_use() {
        let principal = |subject: &str, method: &str| gateway_shared::audit::Principal {
            subject: subject.into(),
            username: None,
            department: None,
            client_id: None,
            auth_method: Some(method.into()),
        };
        let event = |time: &str, record: Record, subject: &str, method: &str| {
            let mut e = AuditEvent::new("r", Decision::Allow, 0);
            e.time = time.into();
            e.record = record;
            e.principal = Some(principal(subject, method));
            serde_json::to_string(&e).unwrap()
        };
        let key = "apikey:0123456789abcdef";
        let mut sqs = SqsEvent::default();
        sqs.records = vec![
            record(
                "m1",
                &event(
                    "2026-11-25T03:10:00.000Z",
                    Record::Authorized,
                    key,
                    "api-key",
                ),
            ),
            record(
                "m2",
                &event(
                    "2026-11-25T03:12:00.000Z",
                    Record::Authorized,
                    key,
                    "api-key",
                ),
            ),
            record(
                "m3",
                &event(
                    "2026-11-25T03:11:00.000Z",
                    Record::Authorized,
                    key,
                    "api-key",
                ),
            ),
            // A final record, a user's token, a subject that only looks like a key: none counts.
            record(
                "m4",
                &event("2026-11-25T03:20:00.000Z", Record::Final, key, "api-key"),
            ),
            record(
                "m5",
                &event(
                    "2026-11-25T03:20:00.000Z",
                    Record::Authorized,
                    "apikey:0123456789abcdee",
                    "cognito",
                ),
            ),
            record(
                "m6",
                &event(
                    "2026-11-25T03:20:00.000Z",
                    Record::Authorized,
                    "apikey:../x",
                    "api-key",
                ),
            ),
        ];
        let batch = batch_objects(
            &sqs,
            "audit/",
            hour("2026-11-25T03"),
            &PriceTable::built_in().unwrap(),
        )
        .unwrap();
        assert_eq!(
            batch.key_uses.into_iter().collect::<Vec<_>>(),
            vec![(
                "0123456789abcdef".to_string(),
                gateway_shared::audit::clock::millis_from_rfc3339("2026-11-25T03:12:00.000Z")
                    .unwrap()
            )]
        );
    }

    fn final_event(usage: Option<(u64, u64)>, budget: Option<BudgetReservation>) -> AuditEvent {
        let mut e = AuditEvent::new("req-1", Decision::Allow, 200);
        e.record = Record::Final;
        e.time = "2026-12-01T00:00:01.000Z".into();
        e.latency.total_ms = 2_000;
        e.provider = Some("azure-openai".into());
        e.model = Some("gpt-4o-mini".into());
        e.principal = Some(gateway_shared::audit::Principal {
            subject: "sub-1".into(),
            username: None,
            department: Some("sales".into()),
            client_id: None,
            auth_method: Some("cognito".into()),
        });
        e.usage = usage.map(|(i, o)| gateway_shared::audit::Usage {
            input_tokens: i,
            output_tokens: o,
            total_tokens: i + o,
            estimated: false,
            ..Default::default()
        });
        e.budget = budget;
        PriceTable::built_in().unwrap().apply(&mut e);
        e
    }

    #[test]
    fn a_requests_usage_goes_to_its_start_months_counters_once() {
        // Started in November, ended in December: counted in November only.
        let plain = settlement(&final_event(Some((10, 5)), None)).unwrap();
        assert_eq!(plain.also, ["d#sales#m#2026-11", "u#sub-1#m#2026-11"]);
        assert_eq!(plain.tokens, 15);
        assert!(plain.cost_micros > 0);
        let reservation = BudgetReservation {
            counters: vec!["d#sales#m#2026-11".into(), "d#sales#t#29435678".into()],
            tokens: 500,
            cost_micros: 900,
        };
        let reserved = settlement(&final_event(Some((10, 5)), Some(reservation.clone()))).unwrap();
        assert_eq!(
            reserved.also,
            ["u#sub-1#m#2026-11"],
            "the reserved month counter is not added to twice"
        );
        assert_eq!(reserved.reservation, Some(reservation.clone()));
        // No usage reported on a success: the reservation stands; on a refusal: nothing was used.
        let unknown = settlement(&final_event(None, Some(reservation.clone()))).unwrap();
        assert_eq!((unknown.tokens, unknown.cost_micros), (500, 900));
        let mut refused = final_event(None, Some(reservation));
        refused.status = 502;
        let refused = settlement(&refused).unwrap();
        assert_eq!((refused.tokens, refused.cost_micros), (0, 0));
        // Nothing to settle: a request without usage or reservation, and records other than finals.
        assert_eq!(settlement(&final_event(None, None)), None);
        let mut accepted = final_event(Some((1, 1)), None);
        accepted.record = Record::Accepted;
        assert_eq!(settlement(&accepted), None);
    }

    #[test]
    fn keys_are_stable_for_a_retried_batch() {
        let mut sqs = SqsEvent::default();
        sqs.records = vec![
            record("m1", &event_at("2026-11-25T03:10:00.000Z", "r1")),
            record("m2", &event_at("2026-11-25T03:11:00.000Z", "r2")),
        ];
        let at = hour("2026-11-25T03");
        let Batch { object: first, .. } =
            batch_objects(&sqs, "audit/", at, &PriceTable::built_in().unwrap()).unwrap();
        sqs.records.reverse();
        let Batch { object: again, .. } =
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
        let Batch {
            object, rejected, ..
        } = batch_objects(
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
