//! The dispatcher side: [`ReplySender`] numbers and sends the replies of one dispatch attempt, and
//! [`relay_response`] turns a provider's answer into few of them (head, batched body, end).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;

use super::payload::{PayloadSettings, PayloadStore};
use super::sqs::{count_call, MessageQueue};
use crate::transport::envelope::{
    header_pairs, ReplyError, ReplyErrorKind, ReplyHead, ReplyMessage, RequestEnvelope,
};
use crate::transport::{TransportError, UpstreamResponse};

#[derive(Debug, thiserror::Error)]
pub enum ReplySendError {
    #[error("the reply queue no longer exists (nobody is waiting)")]
    ReplyQueueGone,
    #[error("reply could not be sent: {0}")]
    Send(String),
}

/// Sends the replies of one dispatch attempt, numbering them.
pub struct ReplySender {
    pub sqs: Arc<dyn MessageQueue>,
    pub s3: Arc<dyn PayloadStore>,
    pub payloads: PayloadSettings,
    pub reply_to: String,
    pub request_id: String,
    pub attempt: String,
    seq: u64,
}

impl ReplySender {
    pub fn new(
        sqs: Arc<dyn MessageQueue>,
        s3: Arc<dyn PayloadStore>,
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
            let stored = self
                .payloads
                .store(self.s3.as_ref(), key, Bytes::from(data))
                .await;
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
        match self.sqs.send_message(&self.reply_to, body).await {
            Ok(()) => {
                self.seq += 1;
                Ok(())
            }
            Err(error) if error.is_gone() => Err(ReplySendError::ReplyQueueGone),
            Err(error) => Err(ReplySendError::Send(error.to_string())),
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
