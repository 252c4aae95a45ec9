//! A response body that audits itself: it relays every frame untouched while counting bytes, noting the
//! first byte's time and reading token usage, and emits the request's audit event when the body ends,
//! before the end reaches the client, so the event is delivered while the Lambda invocation is still
//! running. A client that goes away early still gets its request audited (`client_closed`).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body::{Body, Frame, SizeHint};

use super::{AuditEvent, AuditSink, Outcome, UsageScanner};
use crate::transport::{BoxError, ProxyBody};

pub struct AuditedBody {
    inner: ProxyBody,
    scanner: Option<UsageScanner>,
    event: Option<AuditEvent>,
    sink: Arc<dyn AuditSink>,
    started: Instant,
    bytes_out: u64,
    first_byte_ms: Option<u64>,
    emitting: Option<BoxFuture<'static, ()>>,
    deferred_error: Option<BoxError>,
}

impl AuditedBody {
    pub fn new(
        inner: ProxyBody,
        scanner: UsageScanner,
        event: AuditEvent,
        sink: Arc<dyn AuditSink>,
        started: Instant,
    ) -> Self {
        AuditedBody {
            inner,
            scanner: Some(scanner),
            event: Some(event),
            sink,
            started,
            bytes_out: 0,
            first_byte_ms: None,
            emitting: None,
            deferred_error: None,
        }
    }

    fn finished_event(&mut self, outcome: Outcome) -> Option<AuditEvent> {
        let mut event = self.event.take()?;
        let scanner = self.scanner.take();
        event.stream = scanner.as_ref().is_some_and(UsageScanner::is_stream);
        event.usage = scanner.and_then(UsageScanner::finish);
        event.outcome = outcome;
        event.bytes_out = self.bytes_out;
        event.latency.first_byte_ms = self.first_byte_ms;
        event.latency.total_ms = self.started.elapsed().as_millis() as u64;
        Some(event)
    }

    fn start_emitting(&mut self, outcome: Outcome) {
        if let Some(event) = self.finished_event(outcome) {
            let sink = self.sink.clone();
            self.emitting = Some(Box::pin(async move { sink.emit(event).await }));
        }
    }
}

impl Body for AuditedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(emitting) = this.emitting.as_mut() {
                ready!(emitting.as_mut().poll(cx));
                this.emitting = None;
                return Poll::Ready(this.deferred_error.take().map(Err));
            }
            if this.event.is_none() {
                return Poll::Ready(None);
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        if !data.is_empty() && this.first_byte_ms.is_none() {
                            this.first_byte_ms = Some(this.started.elapsed().as_millis() as u64);
                        }
                        this.bytes_out += data.len() as u64;
                        if let Some(scanner) = this.scanner.as_mut() {
                            scanner.feed(data);
                        }
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Some(Err(error)) => {
                    this.deferred_error = Some(error);
                    this.start_emitting(Outcome::UpstreamError);
                }
                None => this.start_emitting(Outcome::Complete),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.event.is_none() && self.emitting.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for AuditedBody {
    fn drop(&mut self) {
        // The client went away before the end: audit what was sent, best effort (no await in drop).
        if let Some(event) = self.finished_event(Outcome::ClientClosed) {
            let sink = self.sink.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { sink.emit(event).await });
            } else {
                tracing::warn!(request_id = %event.request_id, "client closed; audit event dropped without a runtime");
            }
        }
    }
}
