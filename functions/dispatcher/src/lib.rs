//! The dispatcher: takes queued requests (SQS event source, `ReportBatchItemFailures`), calls the provider
//! with the upstream credential (the same direct transport the routes use when they call providers
//! themselves), and relays the answer to the waiting environment's reply queue.
//!
//! Nothing in a message is trusted that can be checked ([`trust`]): a forged or corrupt envelope is
//! refused before any S3 or upstream call, audited once, and left to SQS to dead-letter.
//!
//! Failure handling, so nothing is lost silently:
//! - a request past its deadline is answered with a timeout error without calling the provider;
//! - a redelivered request that was already answered (its done marker exists) is not sent twice;
//! - a record that cannot be handled is reported as a batch item failure, so SQS retries it; on its last
//!   receive (`GATEWAY_DISPATCH_MAX_RECEIVES`, the queue's `maxReceiveCount`) it is audited, and SQS then
//!   moves it to the dead-letter queue.

pub mod trust;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use bytes::Bytes;
use gateway_shared::audit::{sha256_hex, AuditEvent, AuditSink, Decision};
use gateway_shared::config::{self, ConfigError, Settings};
use gateway_shared::headers::upstream_request_headers;
use gateway_shared::transport::direct::{http_client, DirectTransport, UpstreamConfig};
use gateway_shared::transport::envelope::{
    header_map, ReplyError, ReplyErrorKind, RequestEnvelope,
};
use gateway_shared::transport::queue::{
    relay_response, resolve_payload, MessageQueue, PayloadSettings, PayloadStore, ReplySendError,
    ReplySender,
};
use gateway_shared::transport::{Transport, UpstreamRequest};
use gateway_shared::Provider;
use trust::{Forged, RequestQueue, TrustPolicy};

#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    pub upstreams: Vec<UpstreamConfig>,
    pub payloads: PayloadSettings,
    pub flush_window: Duration,
    pub max_receives: u32,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// The request queues' visibility timeout; the dispatcher keeps a message invisible while it works.
    pub visibility: Duration,
    /// The request queues served, by provider (`GATEWAY_DISPATCH_QUEUE_URLS`).
    pub queues: Vec<RequestQueue>,
    /// `GATEWAY_REPLY_QUEUE_PREFIX`: the routes' reply queues, the only places replies go.
    pub reply_queue_prefix: String,
    pub policy_file: Option<String>,
}

impl DispatcherConfig {
    /// The upstream settings of every provider that has them (as for a direct route), plus
    /// `GATEWAY_PAYLOAD_BUCKET`, `GATEWAY_QUEUE_INLINE_MAX_BYTES`, `GATEWAY_DISPATCH_FLUSH_MS` (25),
    /// `GATEWAY_DISPATCH_MAX_RECEIVES` (3), `GATEWAY_UPSTREAM_CONNECT_TIMEOUT_MS`,
    /// `GATEWAY_UPSTREAM_RESPONSE_TIMEOUT_MS`, `GATEWAY_DISPATCH_QUEUE_URLS` (required),
    /// `GATEWAY_REPLY_QUEUE_PREFIX`, `GATEWAY_SCOPE_POLICY_FILE`.
    pub fn from_settings(settings: &dyn Settings) -> Result<Self, ConfigError> {
        let upstreams: Vec<UpstreamConfig> = Provider::ALL
            .into_iter()
            .filter_map(|p| UpstreamConfig::from_settings(p, settings).ok())
            .collect();
        if upstreams.is_empty() {
            return Err(ConfigError::Missing(
                "upstream settings for at least one provider",
            ));
        }
        Ok(DispatcherConfig {
            upstreams,
            payloads: PayloadSettings::from_settings(settings)?,
            flush_window: config::duration_ms(
                settings,
                "GATEWAY_DISPATCH_FLUSH_MS",
                Duration::from_millis(25),
            )?,
            max_receives: config::usize_setting(settings, "GATEWAY_DISPATCH_MAX_RECEIVES", 3)?
                as u32,
            connect_timeout: config::duration_ms(
                settings,
                "GATEWAY_UPSTREAM_CONNECT_TIMEOUT_MS",
                Duration::from_secs(5),
            )?,
            response_timeout: config::duration_ms(
                settings,
                "GATEWAY_UPSTREAM_RESPONSE_TIMEOUT_MS",
                Duration::from_secs(120),
            )?,
            visibility: Duration::from_secs(config::usize_setting(
                settings,
                "GATEWAY_DISPATCH_VISIBILITY_SECS",
                30,
            )? as u64),
            queues: trust::request_queues_from_settings(settings)?,
            reply_queue_prefix: settings
                .get("GATEWAY_REPLY_QUEUE_PREFIX")
                .unwrap_or_else(|| "llm-gateway-reply-".into()),
            policy_file: settings.get("GATEWAY_SCOPE_POLICY_FILE"),
        })
    }
}

/// What the dispatcher calls out to. The Lambda passes the AWS clients and a direct transport per
/// provider ([`Dispatcher::from_config`]); tests pass fakes, so every branch runs without a network
/// and can be checked for the calls it did not make.
pub struct Backends {
    pub upstreams: HashMap<Provider, Arc<dyn Transport>>,
    pub sqs: Arc<dyn MessageQueue>,
    pub s3: Arc<dyn PayloadStore>,
    pub audit: Arc<dyn AuditSink>,
}

pub struct Dispatcher {
    upstreams: HashMap<Provider, Arc<dyn Transport>>,
    sqs: Arc<dyn MessageQueue>,
    s3: Arc<dyn PayloadStore>,
    config: DispatcherConfig,
    trust: TrustPolicy,
    audit: Arc<dyn AuditSink>,
}

/// Why a record was not handled (it will be retried, then dead-lettered).
#[derive(Debug)]
struct Failure {
    request_id: Option<String>,
    provider: Option<Provider>,
    reason: String,
    /// A forged or corrupt envelope: audited on its first receive, never retried into an upstream.
    forged: bool,
}

impl Dispatcher {
    pub fn from_config(
        config: DispatcherConfig,
        sdk: &aws_config::SdkConfig,
        audit: Arc<dyn AuditSink>,
    ) -> Result<Self, ConfigError> {
        let mut upstreams: HashMap<Provider, Arc<dyn Transport>> = HashMap::new();
        for upstream in &config.upstreams {
            let http = http_client(config.connect_timeout).map_err(|e| ConfigError::Invalid {
                name: "GATEWAY_UPSTREAM_CONNECT_TIMEOUT_MS",
                reason: format!("HTTP client could not be built: {e}"),
            })?;
            upstreams.insert(
                upstream.provider,
                Arc::new(DirectTransport::new(
                    http,
                    upstream.build(sdk)?,
                    config.response_timeout,
                )),
            );
        }
        let backends = Backends {
            upstreams,
            sqs: Arc::new(aws_sdk_sqs::Client::new(sdk)),
            s3: Arc::new(aws_sdk_s3::Client::new(sdk)),
            audit,
        };
        Self::new(config, backends)
    }

    /// The dispatcher over the given backends; `config.upstreams` is not read (the upstreams are given).
    pub fn new(config: DispatcherConfig, backends: Backends) -> Result<Self, ConfigError> {
        let trust = TrustPolicy {
            queues: config.queues.clone(),
            reply_queue_prefix: config.reply_queue_prefix.clone(),
            payload_bucket: config.payloads.bucket.clone(),
            // A route waits at most the response timeout for the status line; a minute covers clock
            // skew between the two functions.
            max_deadline: config.response_timeout + Duration::from_secs(60),
            policy: Arc::new(gateway_shared::proxy::load_policy(
                config.policy_file.as_deref(),
            )?),
        };
        Ok(Dispatcher {
            upstreams: backends.upstreams,
            sqs: backends.sqs,
            s3: backends.s3,
            config,
            trust,
            audit: backends.audit,
        })
    }

    /// Handles one batch; records run concurrently (a long stream must not hold up the others).
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        let results =
            futures_util::future::join_all(event.records.iter().map(|r| self.dispatch(r))).await;
        let mut response = SqsBatchResponse::default();
        for (record, result) in event.records.iter().zip(results) {
            let Err(failure) = result else { continue };
            let message_id = record.message_id.clone().unwrap_or_default();
            let receives = receive_count(record);
            tracing::error!(message_id, receives, reason = %failure.reason, "dispatch failed; SQS will retry");
            if failure.forged {
                if receives <= 1 {
                    self.audit_forged(record, &failure).await;
                }
            } else if receives >= self.config.max_receives {
                self.audit_dead_letter(record, &failure, receives).await;
            }
            response.add_failure(message_id);
        }
        response
    }

    async fn audit_dead_letter(&self, record: &SqsMessage, failure: &Failure, receives: u32) {
        let message_id = record.message_id.clone().unwrap_or_default();
        let request_id = failure
            .request_id
            .clone()
            .unwrap_or_else(|| format!("sqs-message-{message_id}"));
        let mut event = AuditEvent::new(&request_id, Decision::Error, 500);
        event.provider = failure.provider.map(|p| p.route_prefix().to_string());
        event.transport = Some("queue".into());
        event.reason = Some(format!(
            "request message {message_id} failed on receive {receives} of {} and goes to the dead-letter queue: {}",
            self.config.max_receives, failure.reason
        ));
        event.request_sha256 = record.body.as_deref().map(|b| sha256_hex(b.as_bytes()));
        self.audit.record(event);
    }

    async fn audit_forged(&self, record: &SqsMessage, failure: &Failure) {
        let message_id = record.message_id.clone().unwrap_or_default();
        let request_id = format!("sqs-message-{message_id}");
        let mut event = AuditEvent::new(&request_id, Decision::Deny, 400);
        event.provider = self
            .trust
            .source_queue(record.event_source_arn.as_deref())
            .map(|q| q.provider.route_prefix().to_string());
        event.transport = Some("queue".into());
        event.reason = Some(format!(
            "request message {message_id} refused, nothing sent upstream; it goes to the dead-letter queue: {}",
            failure.reason
        ));
        event.request_sha256 = record.body.as_deref().map(|b| sha256_hex(b.as_bytes()));
        self.audit.record(event);
    }

    /// Dispatches one record while keeping it invisible to other consumers: the queue's visibility
    /// timeout can stay short (fast retries after a crash) however long a stream runs.
    async fn dispatch(&self, record: &SqsMessage) -> Result<(), Failure> {
        tokio::select! {
            result = self.dispatch_record(record) => result,
            () = self.keep_invisible(record) => Ok(()),
        }
    }

    async fn keep_invisible(&self, record: &SqsMessage) {
        let (Some(queue), Some(handle)) = (
            self.trust.source_queue(record.event_source_arn.as_deref()),
            &record.receipt_handle,
        ) else {
            return std::future::pending().await;
        };
        let every = self.config.visibility / 3;
        loop {
            tokio::time::sleep(every).await;
            let extended = self
                .sqs
                .change_visibility(&queue.url, handle, self.config.visibility)
                .await;
            if let Err(error) = extended {
                tracing::warn!(%error, "visibility not extended");
            }
        }
    }

    async fn dispatch_record(&self, record: &SqsMessage) -> Result<(), Failure> {
        let fail = |request_id: Option<&str>, provider: Option<Provider>, reason: String| Failure {
            request_id: request_id.map(str::to_string),
            provider,
            reason,
            forged: false,
        };
        let refuse = |forged: Forged| Failure {
            request_id: None,
            provider: None,
            reason: forged.to_string(),
            forged: true,
        };
        let envelope: RequestEnvelope = serde_json::from_str(record.body.as_deref().unwrap_or(""))
            .map_err(|e| refuse(Forged(format!("not a request envelope: {e}"))))?;
        let now = gateway_shared::audit::clock::now_millis();
        // Before any S3, SQS or upstream call: everything the envelope claims must hold up.
        let checked = self
            .trust
            .check(&envelope, record.event_source_arn.as_deref(), now)
            .map_err(refuse)?;
        let (request_id, provider) = (envelope.request_id.as_str(), envelope.provider);
        let receives = receive_count(record);
        let attempt = format!(
            "{}-{receives}",
            record.message_id.as_deref().unwrap_or("message")
        );
        let mut sender = ReplySender::new(
            self.sqs.clone(),
            self.s3.clone(),
            self.config.payloads.clone(),
            &envelope,
            attempt,
        );
        let reply_failed =
            |e: ReplySendError| fail(Some(request_id), Some(provider), e.to_string());

        if now >= envelope.deadline_ms {
            tracing::warn!(
                request_id,
                "request expired in the queue; answering with a timeout"
            );
            let error = ReplyError {
                kind: ReplyErrorKind::Timeout,
                message: "the request waited in the queue past its deadline".into(),
            };
            return match sender.send(None, Vec::new(), true, Some(error)).await {
                Ok(()) | Err(ReplySendError::ReplyQueueGone) => Ok(()),
                Err(e) => Err(reply_failed(e)),
            };
        }
        if receives > 1 && self.already_answered(request_id).await {
            tracing::info!(
                request_id,
                "redelivered request was already answered; not calling the provider again"
            );
            return Ok(());
        }
        let Some(upstream) = self.upstreams.get(&provider) else {
            let error = ReplyError {
                kind: ReplyErrorKind::Request,
                message: format!("no upstream configured for /{}", provider.route_prefix()),
            };
            return sender
                .send(None, Vec::new(), true, Some(error))
                .await
                .map_err(reply_failed);
        };
        let body = resolve_payload(self.s3.as_ref(), envelope.body.clone())
            .await
            .map_err(|e| {
                fail(
                    Some(request_id),
                    Some(provider),
                    format!("request payload: {e}"),
                )
            })?;
        // Filtered again: a header the route would have stripped (a credential, hop-by-hop) is never
        // relayed, whoever queued it.
        let headers = upstream_request_headers(&header_map(&envelope.headers));
        let request = UpstreamRequest {
            request_id: request_id.to_string(),
            provider,
            subject: envelope.principal.clone(),
            method: checked.method,
            path: checked.classified.path,
            query: envelope.query.clone(),
            headers,
            body,
        };
        let remaining = Duration::from_millis(envelope.deadline_ms.saturating_sub(now));
        let result = match tokio::time::timeout(remaining, upstream.send(request)).await {
            Ok(result) => result,
            Err(_) => Err(gateway_shared::transport::TransportError::Timeout(
                remaining.as_millis(),
            )),
        };
        match relay_response(
            &mut sender,
            result,
            self.config.flush_window,
            self.config.payloads.inline_max_bytes,
        )
        .await
        {
            Ok(()) => {
                tracing::info!(request_id, messages = sender.sent(), "reply relayed");
                self.mark_answered(request_id).await;
                Ok(())
            }
            Err(ReplySendError::ReplyQueueGone) => {
                tracing::warn!(request_id, "the waiting environment is gone; reply dropped");
                Ok(())
            }
            Err(e) => Err(reply_failed(e)),
        }
    }

    fn done_key(request_id: &str) -> String {
        format!("dispatch-done/{request_id}")
    }

    async fn already_answered(&self, request_id: &str) -> bool {
        let Some(bucket) = &self.config.payloads.bucket else {
            return false;
        };
        match self.s3.exists(bucket, &Self::done_key(request_id)).await {
            Ok(answered) => answered,
            Err(error) => {
                // Calling the provider again is the lesser harm than never answering.
                tracing::warn!(request_id, %error, "done marker not readable; dispatching");
                false
            }
        }
    }

    /// Marks a request answered, so a redelivery of its message does not call the provider twice.
    async fn mark_answered(&self, request_id: &str) {
        let Some(bucket) = &self.config.payloads.bucket else {
            return;
        };
        if let Err(error) = self
            .s3
            .put(bucket, &Self::done_key(request_id), Bytes::new())
            .await
        {
            tracing::warn!(request_id, %error, "done marker not written");
        }
    }
}

fn receive_count(record: &SqsMessage) -> u32 {
    record
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_event_carries_a_request_envelope() {
        let event: SqsEvent =
            serde_json::from_str(include_str!("../../../events/dispatcher.json")).unwrap();
        let record = &event.records[0];
        assert_eq!(receive_count(record), 1);
        let envelope: RequestEnvelope =
            serde_json::from_str(record.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            envelope.version,
            gateway_shared::transport::envelope::ENVELOPE_VERSION
        );
        assert_eq!(envelope.provider, Provider::AzureOpenAi);
        assert!(envelope
            .body
            .decode_inline()
            .unwrap()
            .starts_with(b"{\"messages\""));
    }

    #[test]
    fn config_needs_an_upstream_and_reads_queue_settings() {
        let empty: HashMap<String, String> = HashMap::new();
        assert!(DispatcherConfig::from_settings(&empty).is_err());
        let mut settings = HashMap::new();
        settings.insert("AWS_REGION".to_string(), "us-east-1".to_string());
        settings.insert(
            "GATEWAY_DISPATCH_VISIBILITY_SECS".to_string(),
            "45".to_string(),
        );
        assert!(
            DispatcherConfig::from_settings(&settings).is_err(),
            "the queues served are required"
        );
        settings.insert(
            "GATEWAY_DISPATCH_QUEUE_URLS".to_string(),
            "bedrock-claude=https://sqs.us-east-1.amazonaws.com/1/llm-gateway-requests-bedrock-claude"
                .to_string(),
        );
        let config = DispatcherConfig::from_settings(&settings).unwrap();
        assert_eq!(config.upstreams.len(), 1, "Bedrock needs only a region");
        assert_eq!(config.visibility, Duration::from_secs(45));
        assert_eq!(config.max_receives, 3);
    }
}
