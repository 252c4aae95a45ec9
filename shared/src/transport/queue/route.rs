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
use super::reply_queue::{ReplyQueue, WaiterGuard};
use super::sqs::{count_call, MessageQueue};
use crate::audit::clock;
use crate::config::{self, ConfigError, Settings};
use crate::providers::Provider;
use crate::transport::envelope::{
    header_map, header_pairs, ReplyError, ReplyErrorKind, ReplyMessage, RequestEnvelope,
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
                    Ok(Some(message)) => assembler.push(message),
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
    replies: mpsc::UnboundedReceiver<ReplyMessage>,
    assembler: Assembler,
    _guard: WaiterGuard,
    s3: Arc<dyn PayloadStore>,
    idle_timeout: Duration,
    finished: bool,
}

impl BodyReader {
    async fn next_chunk(&mut self) -> Option<Result<Bytes, BoxError>> {
        loop {
            if self.finished {
                return None;
            }
            match self.assembler.next_event() {
                Some(ReplyEvent::Data(payload)) => {
                    return Some(resolve_payload(self.s3.as_ref(), payload).await)
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
                    Ok(Some(message)) => self.assembler.push(message),
                    Ok(None) | Err(_) => {
                        self.finished = true;
                        return Some(Err("stream reply timed out".into()));
                    }
                },
            }
        }
    }
}
