//! The route side: [`QueueTransport`] puts a request envelope on the provider's request queue and
//! waits on the environment's reply queue for the status, then streams the body as replies arrive.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use http::StatusCode;
use http_body_util::{BodyExt, StreamBody};
use tokio::sync::mpsc;

use super::assembler::{Assembler, ReplyEvent};
use super::payload::{resolve_payload, PayloadSettings, PayloadStore};
use super::reply_queue::{Delivery, ReplyQueue, WaiterGuard};
use super::sqs::{count_call, MessageQueue};
use crate::audit::clock;
use crate::config::{self, ConfigError, Settings};
use crate::providers::Provider;
use crate::transport::envelope::{
    header_map, header_pairs, Payload, ReplyError, ReplyErrorKind, RequestEnvelope,
    ENVELOPE_VERSION,
};
use crate::transport::{BoxError, Transport, TransportError, UpstreamRequest, UpstreamResponse};

#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub request_queue_url: String,
    pub reply_queue_prefix: String,
    pub payloads: PayloadSettings,
    pub response_timeout: Duration,
    pub idle_timeout: Duration,
}

impl QueueConfig {
    /// `GATEWAY_REQUEST_QUEUE_URL` (required), `GATEWAY_REPLY_QUEUE_PREFIX` (default
    /// `llm-gateway-reply-`), the [`PayloadSettings`], `GATEWAY_STREAM_IDLE_TIMEOUT_MS` (300000).
    pub fn from_settings(
        settings: &dyn Settings,
        response_timeout: Duration,
    ) -> Result<Self, ConfigError> {
        Ok(QueueConfig {
            request_queue_url: config::required(settings, "GATEWAY_REQUEST_QUEUE_URL")?,
            reply_queue_prefix: settings
                .get("GATEWAY_REPLY_QUEUE_PREFIX")
                .unwrap_or_else(|| "llm-gateway-reply-".into()),
            payloads: PayloadSettings::from_settings(settings)?,
            response_timeout,
            idle_timeout: config::duration_ms(
                settings,
                "GATEWAY_STREAM_IDLE_TIMEOUT_MS",
                Duration::from_secs(300),
            )?,
        })
    }
}

pub struct QueueTransport {
    provider: Provider,
    config: QueueConfig,
    sqs: Arc<dyn MessageQueue>,
    s3: Arc<dyn PayloadStore>,
    reply: Arc<ReplyQueue>,
}

impl QueueTransport {
    pub fn new(provider: Provider, config: QueueConfig, sdk: &aws_config::SdkConfig) -> Self {
        Self::with_clients(
            provider,
            config,
            Arc::new(aws_sdk_sqs::Client::new(sdk)),
            Arc::new(aws_sdk_s3::Client::new(sdk)),
        )
    }

    /// The transport over the given SQS and payload bucket clients (fakes, in tests). Each transport is
    /// one execution environment: it gets a reply queue of its own, named at random.
    pub fn with_clients(
        provider: Provider,
        config: QueueConfig,
        sqs: Arc<dyn MessageQueue>,
        s3: Arc<dyn PayloadStore>,
    ) -> Self {
        let environment = uuid::Uuid::new_v4().simple().to_string();
        let reply = Arc::new(ReplyQueue::new(
            sqs.clone(),
            format!(
                "{}{}-{}",
                config.reply_queue_prefix,
                provider.route_prefix(),
                &environment[..12]
            ),
        ));
        QueueTransport {
            provider,
            config,
            sqs,
            s3,
            reply,
        }
    }

    async fn send_inner(
        &self,
        request: UpstreamRequest,
    ) -> Result<UpstreamResponse, TransportError> {
        let reply_to = self.reply.url().await?;
        let body = self
            .config
            .payloads
            .store(
                self.s3.as_ref(),
                format!("payloads/{}/request", request.request_id),
                request.body.clone(),
            )
            .await?;
        let envelope = RequestEnvelope {
            version: ENVELOPE_VERSION,
            request_id: request.request_id.clone(),
            provider: self.provider,
            principal: request.subject.clone(),
            method: request.method.to_string(),
            path: request.path.to_string(),
            query: request.query,
            headers: header_pairs(&request.headers),
            body,
            reply_to,
            deadline_ms: clock::now_millis() + self.config.response_timeout.as_millis() as u64,
        };
        let message =
            serde_json::to_string(&envelope).map_err(|e| TransportError::Request(e.to_string()))?;
        let (mut replies, guard) = self.reply.register(&request.request_id);
        count_call();
        self.sqs
            .send_message(&self.config.request_queue_url, message)
            .await
            .map_err(|e| TransportError::Connect(format!("request queue: {e}")))?;

        let deadline = tokio::time::Instant::now() + self.config.response_timeout;
        let mut assembler = Assembler::default();
        let head = loop {
            match assembler.next_event() {
                Some(ReplyEvent::Head(head)) => break head,
                Some(ReplyEvent::Error(error)) => {
                    return Err(reply_error(error, self.config.response_timeout))
                }
                Some(ReplyEvent::Data(_) | ReplyEvent::End) => {
                    return Err(TransportError::Request("reply without a status".into()))
                }
                None => match tokio::time::timeout_at(deadline, replies.recv()).await {
                    Ok(Some(delivery)) => assembler.accept(delivery),
                    Ok(None) => return Err(TransportError::Connect("reply channel closed".into())),
                    Err(_) => {
                        return Err(TransportError::Timeout(
                            self.config.response_timeout.as_millis(),
                        ))
                    }
                },
            }
        };

        let headers = header_map(&head.headers);
        let reader = BodyReader {
            replies,
            assembler,
            _guard: guard,
            s3: self.s3.clone(),
            own_payloads: OwnPayloads {
                bucket: self.config.payloads.bucket.clone(),
                prefix: format!("payloads/{}/", request.request_id),
            },
            idle_timeout: self.config.idle_timeout,
            finished: false,
        };
        let stream = futures_util::stream::unfold(reader, |mut reader| async move {
            let item = reader.next_chunk().await?;
            Some((item, reader))
        });
        Ok(UpstreamResponse {
            status: StatusCode::from_u16(head.status).unwrap_or(StatusCode::BAD_GATEWAY),
            headers,
            body: StreamBody::new(futures_util::StreamExt::map(stream, |r| {
                r.map(http_body::Frame::data)
            }))
            .boxed_unsync(),
        })
    }
}

impl Transport for QueueTransport {
    fn send(
        &self,
        request: UpstreamRequest,
    ) -> BoxFuture<'_, Result<UpstreamResponse, TransportError>> {
        self.send_inner(request).boxed()
    }

    fn prepare(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        async { self.reply.url().await.map(|_| ()) }.boxed()
    }
}

fn reply_error(error: ReplyError, response_timeout: Duration) -> TransportError {
    match error.kind {
        ReplyErrorKind::Timeout => TransportError::Timeout(response_timeout.as_millis()),
        ReplyErrorKind::Connect | ReplyErrorKind::Stream => TransportError::Connect(error.message),
        ReplyErrorKind::Credential => TransportError::Credential(error.message),
        ReplyErrorKind::Request => TransportError::Request(error.message),
        ReplyErrorKind::Path => TransportError::Path(crate::paths::PathError::Mismatch),
    }
}

struct BodyReader {
    replies: mpsc::UnboundedReceiver<Delivery>,
    assembler: Assembler,
    _guard: WaiterGuard,
    s3: Arc<dyn PayloadStore>,
    own_payloads: OwnPayloads,
    idle_timeout: Duration,
    finished: bool,
}

/// Where this request's reply bodies may lie: the payload bucket, under the request's own prefix. A
/// reply pointing elsewhere (another request's body, another bucket) is never read: the route would
/// otherwise hand its client whatever object a forged reply names.
struct OwnPayloads {
    bucket: Option<String>,
    prefix: String,
}

impl OwnPayloads {
    fn check(&self, payload: &Payload) -> Result<(), BoxError> {
        match payload {
            Payload::S3 { bucket, key }
                if self.bucket.as_deref() != Some(bucket.as_str())
                    || !key.starts_with(&self.prefix)
                    || key.contains("..") =>
            {
                tracing::warn!(
                    bucket,
                    key,
                    "a reply pointed outside this request's payloads; refused"
                );
                Err("a reply body pointed outside this request's payloads".into())
            }
            _ => Ok(()),
        }
    }
}

impl BodyReader {
    async fn next_chunk(&mut self) -> Option<Result<Bytes, BoxError>> {
        loop {
            if self.finished {
                return None;
            }
            match self.assembler.next_event() {
                Some(ReplyEvent::Data(payload)) => {
                    if let Err(refused) = self.own_payloads.check(&payload) {
                        self.finished = true;
                        return Some(Err(refused));
                    }
                    return Some(resolve_payload(self.s3.as_ref(), payload).await);
                }
                Some(ReplyEvent::End) => {
                    self.finished = true;
                    return None;
                }
                Some(ReplyEvent::Error(error)) => {
                    self.finished = true;
                    return Some(Err(
                        format!("upstream stream failed: {}", error.message).into()
                    ));
                }
                Some(ReplyEvent::Head(_)) => continue,
                None => match tokio::time::timeout(self.idle_timeout, self.replies.recv()).await {
                    Ok(Some(delivery)) => self.assembler.accept(delivery),
                    Ok(None) | Err(_) => {
                        self.finished = true;
                        return Some(Err("stream reply timed out".into()));
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        reason = "test code: a panic is the failure report"
    )]

    use std::time::Instant;

    use http::{HeaderMap, HeaderValue, Method};

    use super::*;
    use crate::testing::{FakePayloadStore, FakeQueue, QueueCall, StoreCall};
    use crate::transport::envelope::{Payload, ReplyHead, ReplyMessage};
    use crate::transport::queue::{HEARTBEAT_TAG, REPLY_QUEUE_TAG};

    const REQUEST_QUEUE: &str = "https://sqs.fake/000000000000/llm-gateway-requests-azure-openai";
    const BUCKET: &str = "payloads";

    struct Harness {
        transport: Arc<QueueTransport>,
        sqs: Arc<FakeQueue>,
        s3: Arc<FakePayloadStore>,
    }

    fn harness(response_timeout: Duration, idle_timeout: Duration) -> Harness {
        let sqs = Arc::new(FakeQueue::default());
        let s3 = Arc::new(FakePayloadStore::default());
        let config = QueueConfig {
            request_queue_url: REQUEST_QUEUE.into(),
            reply_queue_prefix: "llm-gateway-reply-".into(),
            payloads: PayloadSettings {
                bucket: Some(BUCKET.into()),
                inline_max_bytes: 16,
            },
            response_timeout,
            idle_timeout,
        };
        let transport = Arc::new(QueueTransport::with_clients(
            Provider::AzureOpenAi,
            config,
            sqs.clone(),
            s3.clone(),
        ));
        Harness { transport, sqs, s3 }
    }

    fn request(request_id: &str, body: &'static [u8]) -> UpstreamRequest {
        let classified = Provider::AzureOpenAi
            .classify(
                &Method::POST,
                "/openai/deployments/gpt-4o-mini/chat/completions",
            )
            .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        UpstreamRequest {
            request_id: request_id.into(),
            provider: Provider::AzureOpenAi,
            subject: Some("user-sub-1".into()),
            method: Method::POST,
            path: classified.path,
            query: "api-version=2024-10-21".into(),
            headers,
            body: Bytes::from_static(body),
        }
    }

    type Pending = tokio::task::JoinHandle<Result<UpstreamResponse, TransportError>>;

    fn send(h: &Harness, request: UpstreamRequest) -> Pending {
        let transport = h.transport.clone();
        tokio::spawn(async move { transport.send(request).await })
    }

    /// The `n`th envelope the route queued, once it is there (what the dispatcher would receive).
    async fn queued(sqs: &FakeQueue, n: usize) -> RequestEnvelope {
        let started = Instant::now();
        loop {
            if let Some(body) = sqs.sent_to(REQUEST_QUEUE).get(n) {
                return serde_json::from_str(body).unwrap();
            }
            assert!(started.elapsed() < Duration::from_secs(5), "nothing queued");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Answers `envelope` as the dispatcher would, with one reply message.
    fn answer(
        sqs: &FakeQueue,
        envelope: &RequestEnvelope,
        (attempt, seq): (&str, u64),
        head: Option<u16>,
        data: &[u8],
        end: bool,
    ) {
        let message = ReplyMessage {
            request_id: envelope.request_id.clone(),
            attempt: attempt.into(),
            seq,
            head: head.map(|status| ReplyHead {
                status,
                headers: vec![("content-type".into(), "text/event-stream".into())],
            }),
            data: (!data.is_empty()).then(|| Payload::inline(data)),
            end,
            error: None,
        };
        sqs.push(&envelope.reply_to, serde_json::to_string(&message).unwrap());
    }

    async fn body_text(response: UpstreamResponse) -> Result<String, BoxError> {
        let bytes = response.body.collect().await?.to_bytes();
        Ok(String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn replies_in_any_order_make_one_ordered_body_and_are_deleted() {
        let h = harness(Duration::from_secs(5), Duration::from_secs(5));
        let pending = send(&h, request("req-1", b"{}"));
        let envelope = queued(&h.sqs, 0).await;

        assert_eq!(envelope.request_id, "req-1");
        assert_eq!(envelope.body, Payload::inline(b"{}"));
        assert_eq!(envelope.method, "POST");
        assert_eq!(
            envelope.path,
            "/openai/deployments/gpt-4o-mini/chat/completions"
        );
        assert!(envelope.deadline_ms <= clock::now_millis() + 5_000);
        let name = envelope.reply_to.rsplit('/').next().unwrap().to_string();
        assert!(
            name.starts_with("llm-gateway-reply-azure-openai-") && name.ends_with("-0"),
            "{name}"
        );
        let created = h.sqs.calls().into_iter().find_map(|call| match call {
            QueueCall::CreateQueue {
                name, attributes, ..
            } => Some((name, attributes)),
            _ => None,
        });
        let (created_name, attributes) = created.expect("the reply queue was created");
        assert_eq!(created_name, name);
        assert!(attributes.contains(&("SqsManagedSseEnabled".into(), "true".into())));
        let tags = h.sqs.tags_of(&envelope.reply_to);
        assert_eq!(tags.get(REPLY_QUEUE_TAG).map(String::as_str), Some("true"));
        assert!(tags.contains_key(HEARTBEAT_TAG));

        answer(&h.sqs, &envelope, ("a", 2), None, b"c", true);
        answer(&h.sqs, &envelope, ("a", 1), None, b"b", false);
        answer(&h.sqs, &envelope, ("a", 0), Some(201), b"a", false);
        let response = pending.await.unwrap().unwrap();
        assert_eq!(response.status, StatusCode::CREATED);
        assert_eq!(response.headers["content-type"], "text/event-stream");
        assert_eq!(body_text(response).await.unwrap(), "abc");

        let started = Instant::now();
        loop {
            let deleted: usize = h
                .sqs
                .calls()
                .iter()
                .filter_map(|call| match call {
                    QueueCall::Delete { queue_url, entries } if *queue_url == envelope.reply_to => {
                        Some(entries.len())
                    }
                    _ => None,
                })
                .sum();
            if deleted == 3 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{deleted} deleted"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_reply_body_pointing_at_another_requests_payload_is_never_read() {
        let h = harness(Duration::from_secs(5), Duration::from_secs(5));
        h.s3.insert(BUCKET, "payloads/someone-else/request", "their prompt");
        h.s3.insert("other-bucket", "payloads/req-own/a-1", "elsewhere");
        for (n, (bucket, key)) in [
            (BUCKET, "payloads/someone-else/request"),
            ("other-bucket", "payloads/req-own/a-1"),
            (BUCKET, "payloads/req-own/../someone-else/request"),
        ]
        .into_iter()
        .enumerate()
        {
            let pending = send(&h, request("req-own", b"{}"));
            let envelope = queued(&h.sqs, n).await;
            let head = ReplyMessage {
                request_id: envelope.request_id.clone(),
                attempt: "a".into(),
                seq: 0,
                head: Some(ReplyHead {
                    status: 200,
                    headers: vec![],
                }),
                data: Some(Payload::S3 {
                    bucket: bucket.into(),
                    key: key.into(),
                }),
                end: true,
                error: None,
            };
            h.sqs
                .push(&envelope.reply_to, serde_json::to_string(&head).unwrap());
            let response = pending.await.unwrap().unwrap();
            let body = body_text(response).await;
            assert!(body.is_err(), "{bucket}/{key} was read: {body:?}");
            let read = h
                .s3
                .calls()
                .into_iter()
                .any(|call| matches!(call, StoreCall::Get { ref key, .. } if key.contains("someone-else") || key.ends_with("a-1")));
            assert!(!read, "{bucket}/{key} reached S3");
        }
    }

    #[tokio::test]
    async fn a_large_request_body_goes_through_the_payload_bucket() {
        let h = harness(Duration::from_secs(5), Duration::from_secs(5));
        let pending = send(&h, request("req-big", b"a body over sixteen bytes"));
        let envelope = queued(&h.sqs, 0).await;
        pending.abort();

        let key = "payloads/req-big/request".to_string();
        assert_eq!(
            envelope.body,
            Payload::S3 {
                bucket: BUCKET.into(),
                key: key.clone()
            }
        );
        assert_eq!(
            h.s3.calls(),
            [StoreCall::Put {
                bucket: BUCKET.into(),
                key: key.clone(),
                len: 25
            }]
        );
        assert_eq!(
            h.s3.object(BUCKET, &key).unwrap().as_ref(),
            b"a body over sixteen bytes"
        );
    }

    #[tokio::test]
    async fn no_status_before_the_deadline_is_a_timeout() {
        let h = harness(Duration::from_millis(200), Duration::from_secs(5));
        let result = send(&h, request("req-late", b"{}")).await.unwrap();
        assert!(matches!(result, Err(TransportError::Timeout(200))));
    }

    #[tokio::test]
    async fn an_error_reply_becomes_the_transport_error() {
        let h = harness(Duration::from_secs(5), Duration::from_secs(5));
        let pending = send(&h, request("req-refused", b"{}"));
        let envelope = queued(&h.sqs, 0).await;
        let message = ReplyMessage {
            request_id: envelope.request_id.clone(),
            attempt: "a".into(),
            seq: 0,
            head: None,
            data: None,
            end: true,
            error: Some(ReplyError {
                kind: ReplyErrorKind::Credential,
                message: "no upstream key".into(),
            }),
        };
        h.sqs
            .push(&envelope.reply_to, serde_json::to_string(&message).unwrap());
        let result = pending.await.unwrap();
        assert!(
            matches!(&result, Err(TransportError::Credential(m)) if m == "no upstream key"),
            "{:?}",
            result.err()
        );
    }

    #[tokio::test]
    async fn a_reply_queue_swept_while_waiting_fails_the_request_at_once_and_is_replaced() {
        let h = harness(Duration::from_secs(20), Duration::from_secs(20));
        let pending = send(&h, request("req-swept", b"{}"));
        let envelope = queued(&h.sqs, 0).await;
        let swept_at = Instant::now();
        h.sqs.remove(&envelope.reply_to);

        let result = pending.await.unwrap();
        assert!(
            swept_at.elapsed() < Duration::from_secs(5),
            "not at the deadline"
        );
        assert!(
            matches!(&result, Err(TransportError::Connect(m)) if m.contains("deleted while the request was in flight")),
            "{:?}",
            result.err()
        );

        let next = send(&h, request("req-next", b"{}"));
        let envelope_next = queued(&h.sqs, 1).await;
        next.abort();
        let stem = envelope.reply_to.trim_end_matches("-0");
        assert_eq!(envelope_next.reply_to, format!("{stem}-1"));
    }

    #[tokio::test]
    async fn a_reply_queue_swept_during_a_stream_ends_the_body_at_once() {
        let h = harness(Duration::from_secs(20), Duration::from_secs(20));
        let pending = send(&h, request("req-stream", b"{}"));
        let envelope = queued(&h.sqs, 0).await;
        answer(&h.sqs, &envelope, ("a", 0), Some(200), b"first", false);
        let mut body = pending.await.unwrap().unwrap().body;
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first.as_ref(), b"first");

        let swept_at = Instant::now();
        h.sqs.remove(&envelope.reply_to);
        let next = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("the stream ends long before its idle timeout");
        let error = next.unwrap().unwrap_err().to_string();
        assert!(
            error.contains("deleted while the request was in flight"),
            "{error}"
        );
        assert!(swept_at.elapsed() < Duration::from_secs(5));
        assert!(body.frame().await.is_none(), "nothing after the error");
    }
}
