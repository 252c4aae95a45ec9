//! The `queue` transport: the route puts a [`RequestEnvelope`] on its provider's request queue and waits
//! on its execution environment's own reply queue; the dispatcher function (in the VPC that reaches the
//! provider) calls the provider and answers with [`ReplyMessage`]s ([`relay_response`]).
//!
//! - One reply queue per execution environment (created at first use, tagged with a heartbeat at most once
//!   a minute, recreated under a new name if it was swept), so replies never compete across environments.
//!   Within an environment, one poller demultiplexes replies to waiting requests by request id.
//! - Replies are reordered by sequence number and locked to the first dispatch attempt that answers, so a
//!   retried dispatch never interleaves with a failed one.
//! - The status must arrive before the deadline ([`QueueConfig::response_timeout`]) or the client gets a
//!   504; a stream then may run as long as messages keep coming within [`QueueConfig::idle_timeout`].
//! - Streams cost a bounded number of SQS calls: the dispatcher batches chunks for a short window.
//! - Bodies over [`PayloadSettings::inline_max_bytes`] travel through the payload bucket.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use http::StatusCode;
use http_body_util::{BodyExt, StreamBody};
use tokio::sync::mpsc;

use super::envelope::{
    header_map, header_pairs, Payload, ReplyError, ReplyErrorKind, ReplyHead, ReplyMessage,
    RequestEnvelope, ENVELOPE_VERSION,
};
use super::{BoxError, Transport, TransportError, UpstreamRequest, UpstreamResponse};
use crate::audit::clock;
use crate::config::{self, ConfigError, Settings};
use crate::providers::Provider;

pub const DEFAULT_INLINE_MAX_BYTES: usize = 192 * 1024;
const HEARTBEAT_EVERY: Duration = Duration::from_secs(60);
pub const REPLY_QUEUE_TAG: &str = "llm-gateway:reply-queue";
pub const HEARTBEAT_TAG: &str = "llm-gateway:heartbeat";

static SQS_CALLS: AtomicU64 = AtomicU64::new(0);

/// SQS API calls made by the queue transport and the dispatcher in this process (for benchmarks).
pub fn sqs_calls() -> u64 {
    SQS_CALLS.load(Ordering::Relaxed)
}

fn count_call() {
    SQS_CALLS.fetch_add(1, Ordering::Relaxed);
}

/// Where bodies too large for an SQS message go. Both sides of the queue (route and dispatcher) read
/// it from the same settings, so they agree on the limit.
#[derive(Debug, Clone)]
pub struct PayloadSettings {
    pub bucket: Option<String>,
    pub inline_max_bytes: usize,
}

impl PayloadSettings {
    /// `GATEWAY_PAYLOAD_BUCKET` (optional), `GATEWAY_QUEUE_INLINE_MAX_BYTES` (default 192 KiB).
    pub fn from_settings(settings: &dyn Settings) -> Result<Self, ConfigError> {
        Ok(PayloadSettings {
            bucket: settings.get("GATEWAY_PAYLOAD_BUCKET"),
            inline_max_bytes: config::usize_setting(
                settings,
                "GATEWAY_QUEUE_INLINE_MAX_BYTES",
                DEFAULT_INLINE_MAX_BYTES,
            )?,
        })
    }

    /// The body inline when it fits, else written to the payload bucket under `key`.
    pub async fn store(
        &self,
        s3: &aws_sdk_s3::Client,
        key: String,
        body: Bytes,
    ) -> Result<Payload, TransportError> {
        if body.len() <= self.inline_max_bytes {
            return Ok(Payload::inline(&body));
        }
        let bucket = self.bucket.clone().ok_or_else(|| {
            TransportError::Request(format!(
                "a body of {} bytes exceeds the queue's inline limit and no payload bucket is configured",
                body.len()
            ))
        })?;
        put_payload(s3, &bucket, &key, body).await?;
        Ok(Payload::S3 { bucket, key })
    }
}

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

fn sqs_error<E: std::error::Error + 'static, R: std::fmt::Debug>(
    error: &aws_sdk_sqs::error::SdkError<E, R>,
) -> String {
    aws_sdk_sqs::error::DisplayErrorContext(error).to_string()
}

fn is_missing_queue(message: &str) -> bool {
    message.contains("NonExistentQueue") || message.contains("QueueDoesNotExist")
}

// === reply queue (route side) ===

struct ReplyQueueState {
    url: Option<String>,
    generation: u32,
    heartbeat_at: Option<Instant>,
}

struct ReplyQueue {
    sqs: aws_sdk_sqs::Client,
    name_stem: String,
    state: tokio::sync::Mutex<ReplyQueueState>,
    waiters: Mutex<HashMap<String, mpsc::UnboundedSender<ReplyMessage>>>,
    polling: AtomicBool,
}

impl ReplyQueue {
    fn lock_waiters(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<ReplyMessage>>> {
        self.waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The queue's URL, creating it on first use (or after it was swept) and refreshing its heartbeat.
    async fn url(&self) -> Result<String, TransportError> {
        let mut state = self.state.lock().await;
        if let Some(url) = state.url.clone() {
            let stale = state
                .heartbeat_at
                .is_none_or(|at| at.elapsed() >= HEARTBEAT_EVERY);
            if !stale {
                return Ok(url);
            }
            count_call();
            match self
                .sqs
                .tag_queue()
                .queue_url(&url)
                .tags(HEARTBEAT_TAG, (clock::now_millis() / 1000).to_string())
                .send()
                .await
            {
                Ok(_) => {
                    state.heartbeat_at = Some(Instant::now());
                    return Ok(url);
                }
                Err(error) if is_missing_queue(&sqs_error(&error)) => {
                    tracing::warn!(url, "reply queue was swept; creating a new one");
                    state.url = None;
                    state.generation += 1;
                }
                Err(error) => return Err(TransportError::Connect(sqs_error(&error))),
            }
        }
        let name = format!("{}-{}", self.name_stem, state.generation);
        count_call();
        let created = self
            .sqs
            .create_queue()
            .queue_name(&name)
            .attributes(
                aws_sdk_sqs::types::QueueAttributeName::SqsManagedSseEnabled,
                "true",
            )
            .attributes(
                aws_sdk_sqs::types::QueueAttributeName::MessageRetentionPeriod,
                "900",
            )
            .tags(REPLY_QUEUE_TAG, "true")
            .tags(HEARTBEAT_TAG, (clock::now_millis() / 1000).to_string())
            .send()
            .await
            .map_err(|e| {
                TransportError::Connect(format!("reply queue {name}: {}", sqs_error(&e)))
            })?;
        let url = created
            .queue_url
            .ok_or_else(|| TransportError::Connect("reply queue created without a URL".into()))?;
        tracing::info!(url, "reply queue ready");
        state.url = Some(url.clone());
        state.heartbeat_at = Some(Instant::now());
        Ok(url)
    }

    async fn forget(&self, url: &str) {
        let mut state = self.state.lock().await;
        if state.url.as_deref() == Some(url) {
            state.url = None;
            state.generation += 1;
        }
    }

    fn register(
        self: &Arc<Self>,
        request_id: &str,
    ) -> (mpsc::UnboundedReceiver<ReplyMessage>, WaiterGuard) {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock_waiters().insert(request_id.to_string(), tx);
        if !self.polling.swap(true, Ordering::AcqRel) {
            tokio::spawn(self.clone().poll());
        }
        (
            rx,
            WaiterGuard {
                queue: self.clone(),
                request_id: request_id.to_string(),
            },
        )
    }

    /// Receives replies while anyone waits, hands each to its request, deletes what it received.
    async fn poll(self: Arc<Self>) {
        loop {
            if self.lock_waiters().is_empty() {
                self.polling.store(false, Ordering::Release);
                // A request may have registered between the check and the store.
                if self.lock_waiters().is_empty() || self.polling.swap(true, Ordering::AcqRel) {
                    return;
                }
            }
            let url = match self.url().await {
                Ok(url) => url,
                Err(error) => {
                    tracing::warn!(%error, "reply queue unavailable");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            count_call();
            let received = self
                .sqs
                .receive_message()
                .queue_url(&url)
                .max_number_of_messages(10)
                .wait_time_seconds(2)
                .send()
                .await;
            let messages = match received {
                Ok(out) => out.messages.unwrap_or_default(),
                Err(error) => {
                    let text = sqs_error(&error);
                    if is_missing_queue(&text) {
                        // Swept while in use: the replies of requests in flight went to a queue that is
                        // gone, so fail them now (a clean 502) rather than at their deadline; the next
                        // request creates a new queue.
                        self.forget(&url).await;
                        self.fail_waiters(
                            "the reply queue was deleted while the request was in flight",
                        );
                    } else {
                        tracing::warn!(error = %text, "reply receive failed");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    continue;
                }
            };
            let mut deletes = Vec::new();
            for message in &messages {
                let parsed = message
                    .body()
                    .and_then(|b| serde_json::from_str::<ReplyMessage>(b).ok());
                match parsed {
                    Some(reply) => {
                        if let Some(tx) = self.lock_waiters().get(&reply.request_id) {
                            let _ = tx.send(reply);
                        }
                    }
                    None => tracing::warn!("unreadable reply message dropped"),
                }
                if let (Some(id), Some(handle)) = (message.message_id(), message.receipt_handle()) {
                    if let Ok(entry) = aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                        .id(id)
                        .receipt_handle(handle)
                        .build()
                    {
                        deletes.push(entry);
                    }
                }
            }
            if !deletes.is_empty() {
                count_call();
                if let Err(error) = self
                    .sqs
                    .delete_message_batch()
                    .queue_url(&url)
                    .set_entries(Some(deletes))
                    .send()
                    .await
                {
                    tracing::warn!(error = %sqs_error(&error), "reply delete failed");
                }
            }
        }
    }
}

impl ReplyQueue {
    fn fail_waiters(&self, message: &str) {
        for (request_id, tx) in self.lock_waiters().iter() {
            let _ = tx.send(ReplyMessage {
                request_id: request_id.clone(),
                attempt: "reply-queue-lost".into(),
                seq: 0,
                head: None,
                data: None,
                end: true,
                error: Some(ReplyError {
                    kind: ReplyErrorKind::Connect,
                    message: message.into(),
                }),
            });
        }
    }
}

struct WaiterGuard {
    queue: Arc<ReplyQueue>,
    request_id: String,
}

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        self.queue.lock_waiters().remove(&self.request_id);
    }
}

// === reassembly ===

enum ReplyEvent {
    Head(ReplyHead),
    Data(Payload),
    End,
    Error(ReplyError),
}

/// Orders replies by sequence number, locked to the first attempt whose sequence 0 arrives.
#[derive(Default)]
struct Assembler {
    attempt: Option<String>,
    next_seq: u64,
    pending: HashMap<String, BTreeMap<u64, ReplyMessage>>,
    ready: VecDeque<ReplyEvent>,
}

impl Assembler {
    fn push(&mut self, message: ReplyMessage) {
        if self.attempt.as_ref().is_some_and(|a| *a != message.attempt) {
            return;
        }
        if self.attempt.is_none() && message.seq == 0 {
            self.attempt = Some(message.attempt.clone());
            self.pending
                .retain(|attempt, _| *attempt == message.attempt);
        }
        self.pending
            .entry(message.attempt.clone())
            .or_default()
            .insert(message.seq, message);
        let Some(attempt) = self.attempt.clone() else {
            return;
        };
        while let Some(message) = self
            .pending
            .get_mut(&attempt)
            .and_then(|m| m.remove(&self.next_seq))
        {
            self.next_seq += 1;
            if let Some(head) = message.head {
                self.ready.push_back(ReplyEvent::Head(head));
            }
            if let Some(data) = message.data {
                self.ready.push_back(ReplyEvent::Data(data));
            }
            if let Some(error) = message.error {
                self.ready.push_back(ReplyEvent::Error(error));
            }
            if message.end {
                self.ready.push_back(ReplyEvent::End);
            }
        }
    }
}

// === transport ===

pub struct QueueTransport {
    provider: Provider,
    config: QueueConfig,
    sqs: aws_sdk_sqs::Client,
    s3: aws_sdk_s3::Client,
    reply: Arc<ReplyQueue>,
}

impl QueueTransport {
    pub fn new(provider: Provider, config: QueueConfig, sdk: &aws_config::SdkConfig) -> Self {
        let sqs = aws_sdk_sqs::Client::new(sdk);
        let environment = uuid::Uuid::new_v4().simple().to_string();
        let reply = Arc::new(ReplyQueue {
            sqs: sqs.clone(),
            name_stem: format!(
                "{}{}-{}",
                config.reply_queue_prefix,
                provider.route_prefix(),
                &environment[..12]
            ),
            state: tokio::sync::Mutex::new(ReplyQueueState {
                url: None,
                generation: 0,
                heartbeat_at: None,
            }),
            waiters: Mutex::new(HashMap::new()),
            polling: AtomicBool::new(false),
        });
        QueueTransport {
            provider,
            config,
            sqs,
            s3: aws_sdk_s3::Client::new(sdk),
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
                &self.s3,
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
            .send_message()
            .queue_url(&self.config.request_queue_url)
            .message_body(message)
            .send()
            .await
            .map_err(|e| TransportError::Connect(format!("request queue: {}", sqs_error(&e))))?;

        let deadline = tokio::time::Instant::now() + self.config.response_timeout;
        let mut assembler = Assembler::default();
        let head = loop {
            match assembler.ready.pop_front() {
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
    s3: aws_sdk_s3::Client,
    idle_timeout: Duration,
    finished: bool,
}

impl BodyReader {
    async fn next_chunk(&mut self) -> Option<Result<Bytes, BoxError>> {
        loop {
            if self.finished {
                return None;
            }
            match self.assembler.ready.pop_front() {
                Some(ReplyEvent::Data(payload)) => {
                    return Some(resolve_payload(&self.s3, payload).await)
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

/// A payload's bytes: decoded inline, or read from the payload bucket.
pub async fn resolve_payload(s3: &aws_sdk_s3::Client, payload: Payload) -> Result<Bytes, BoxError> {
    match payload {
        Payload::Inline { .. } => payload
            .decode_inline()
            .map(Bytes::from)
            .ok_or_else(|| "reply data is not base64".into()),
        Payload::S3 { bucket, key } => {
            let object = s3.get_object().bucket(&bucket).key(&key).send().await?;
            Ok(object.body.collect().await?.into_bytes())
        }
    }
}

async fn put_payload(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    body: Bytes,
) -> Result<(), TransportError> {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(body.into())
        .send()
        .await
        .map(|_| ())
        .map_err(|e| {
            TransportError::Connect(format!(
                "payload bucket: {}",
                aws_sdk_s3::error::DisplayErrorContext(e)
            ))
        })
}

// === dispatcher side ===

#[derive(Debug, thiserror::Error)]
pub enum ReplySendError {
    #[error("the reply queue no longer exists (nobody is waiting)")]
    ReplyQueueGone,
    #[error("reply could not be sent: {0}")]
    Send(String),
}

/// Sends the replies of one dispatch attempt, numbering them.
pub struct ReplySender {
    pub sqs: aws_sdk_sqs::Client,
    pub s3: aws_sdk_s3::Client,
    pub payloads: PayloadSettings,
    pub reply_to: String,
    pub request_id: String,
    pub attempt: String,
    seq: u64,
}

impl ReplySender {
    pub fn new(
        sqs: aws_sdk_sqs::Client,
        s3: aws_sdk_s3::Client,
        payloads: PayloadSettings,
        envelope: &RequestEnvelope,
        attempt: String,
    ) -> Self {
        ReplySender {
            sqs,
            s3,
            payloads,
            reply_to: envelope.reply_to.clone(),
            request_id: envelope.request_id.clone(),
            attempt,
            seq: 0,
        }
    }

    /// Messages sent so far.
    pub fn sent(&self) -> u64 {
        self.seq
    }

    pub async fn send(
        &mut self,
        head: Option<ReplyHead>,
        data: Vec<u8>,
        end: bool,
        error: Option<ReplyError>,
    ) -> Result<(), ReplySendError> {
        if head.is_none() && data.is_empty() && !end && error.is_none() {
            return Ok(());
        }
        let data = if data.is_empty() {
            None
        } else {
            let key = format!("payloads/{}/{}-{}", self.request_id, self.attempt, self.seq);
            let stored = self.payloads.store(&self.s3, key, Bytes::from(data)).await;
            Some(stored.map_err(|e| ReplySendError::Send(e.to_string()))?)
        };
        let message = ReplyMessage {
            request_id: self.request_id.clone(),
            attempt: self.attempt.clone(),
            seq: self.seq,
            head,
            data,
            end,
            error,
        };
        let body =
            serde_json::to_string(&message).map_err(|e| ReplySendError::Send(e.to_string()))?;
        count_call();
        match self
            .sqs
            .send_message()
            .queue_url(&self.reply_to)
            .message_body(body)
            .send()
            .await
        {
            Ok(_) => {
                self.seq += 1;
                Ok(())
            }
            Err(error) => {
                let text = sqs_error(&error);
                if is_missing_queue(&text) {
                    Err(ReplySendError::ReplyQueueGone)
                } else {
                    Err(ReplySendError::Send(text))
                }
            }
        }
    }
}

/// Relays a provider's answer (or failure) as replies: the head with whatever body arrives within the
/// flush window, then batches of at most `max_batch` bytes or one window's worth of chunks, then the end.
pub async fn relay_response(
    sender: &mut ReplySender,
    result: Result<UpstreamResponse, TransportError>,
    flush_window: Duration,
    max_batch: usize,
) -> Result<(), ReplySendError> {
    let response = match result {
        Ok(response) => response,
        Err(error) => {
            let kind = match &error {
                TransportError::Timeout(_) => ReplyErrorKind::Timeout,
                TransportError::Connect(_) => ReplyErrorKind::Connect,
                TransportError::Credential(_) => ReplyErrorKind::Credential,
                TransportError::Request(_) => ReplyErrorKind::Request,
                TransportError::Path(_) => ReplyErrorKind::Path,
            };
            let message = error.to_string();
            return sender
                .send(None, Vec::new(), true, Some(ReplyError { kind, message }))
                .await;
        }
    };
    let mut head = Some(ReplyHead {
        status: response.status.as_u16(),
        headers: header_pairs(&response.headers),
    });
    let mut body = response.body;
    let mut buffer: Vec<u8> = Vec::new();
    let mut window = Box::pin(tokio::time::sleep(flush_window));
    let mut window_open = true;
    loop {
        tokio::select! {
            frame = body.frame() => match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        buffer.extend_from_slice(&data);
                        if !window_open {
                            window.as_mut().reset(tokio::time::Instant::now() + flush_window);
                            window_open = true;
                        }
                        if buffer.len() >= max_batch {
                            sender.send(head.take(), std::mem::take(&mut buffer), false, None).await?;
                            window_open = false;
                        }
                    }
                }
                Some(Err(error)) => {
                    let error = ReplyError { kind: ReplyErrorKind::Stream, message: error.to_string() };
                    return sender.send(head.take(), std::mem::take(&mut buffer), true, Some(error)).await;
                }
                None => return sender.send(head.take(), std::mem::take(&mut buffer), true, None).await,
            },
            () = window.as_mut(), if window_open => {
                sender.send(head.take(), std::mem::take(&mut buffer), false, None).await?;
                window_open = false;
            }
        }
    }
}

// === sweeping ===

/// Deletes reply queues (by prefix) whose heartbeat is older than `idle`: environments that are gone.
/// The scheduler function calls this; a live environment recreates its queue if it was swept anyway.
pub async fn sweep_reply_queues(
    sqs: &aws_sdk_sqs::Client,
    prefix: &str,
    idle: Duration,
) -> Result<Vec<String>, String> {
    let now = clock::now_millis() / 1000;
    let mut deleted = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let page = sqs
            .list_queues()
            .queue_name_prefix(prefix)
            .set_next_token(next.clone())
            .send()
            .await
            .map_err(|e| sqs_error(&e))?;
        for url in page.queue_urls() {
            let tags = sqs
                .list_queue_tags()
                .queue_url(url)
                .send()
                .await
                .map_err(|e| sqs_error(&e))?;
            let tags = tags.tags();
            let is_reply = tags.is_some_and(|t| t.contains_key(REPLY_QUEUE_TAG));
            let heartbeat = tags
                .and_then(|t| t.get(HEARTBEAT_TAG))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            if is_reply && now.saturating_sub(heartbeat) > idle.as_secs() {
                sqs.delete_queue()
                    .queue_url(url)
                    .send()
                    .await
                    .map_err(|e| sqs_error(&e))?;
                deleted.push(url.clone());
            }
        }
        next = page.next_token().map(str::to_string);
        if next.is_none() {
            return Ok(deleted);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(attempt: &str, seq: u64, data: &str, end: bool) -> ReplyMessage {
        ReplyMessage {
            request_id: "r".into(),
            attempt: attempt.into(),
            seq,
            head: (seq == 0).then(|| ReplyHead {
                status: 200,
                headers: vec![],
            }),
            data: Some(Payload::inline(data.as_bytes())),
            end,
            error: None,
        }
    }

    fn drain(assembler: &mut Assembler) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(event) = assembler.ready.pop_front() {
            out.push(match event {
                ReplyEvent::Head(h) => format!("head {}", h.status),
                ReplyEvent::Data(p) => String::from_utf8(p.decode_inline().unwrap()).unwrap(),
                ReplyEvent::End => "end".into(),
                ReplyEvent::Error(e) => format!("error {}", e.message),
            });
        }
        out
    }

    #[test]
    fn reorders_by_sequence() {
        let mut assembler = Assembler::default();
        assembler.push(message("a", 2, "c", true));
        assembler.push(message("a", 1, "b", false));
        assert!(
            drain(&mut assembler).is_empty(),
            "nothing before sequence 0"
        );
        assembler.push(message("a", 0, "a", false));
        assert_eq!(drain(&mut assembler), ["head 200", "a", "b", "c", "end"]);
    }

    #[test]
    fn locks_to_the_first_attempt_that_answers() {
        let mut assembler = Assembler::default();
        assembler.push(message("retry", 1, "late", true));
        assembler.push(message("first", 0, "x", false));
        assembler.push(message("retry", 0, "y", false));
        assembler.push(message("first", 1, "z", true));
        assert_eq!(drain(&mut assembler), ["head 200", "x", "z", "end"]);
    }
}
