//! A response body that audits itself: it relays every frame untouched while counting bytes, noting the
//! first byte's time, reading token usage and (when the route records bodies) keeping a bounded handle
//! on each frame's bytes in the event's [`super::CapturedBodies`], and records the request's final audit event when the body
//! ends (into the buffer: nothing waits; the event leaves after the response, see
//! [`super::lifecycle`]). A client that goes away early still gets its request audited
//! (`client_closed`).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::Bytes;
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

    fn record(&mut self, outcome: Outcome) {
        if let Some(event) = self.finished_event(outcome) {
            self.sink.record(event);
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
                    // The bytes that pass to the client are the response the audit trail keeps.
                    if let Some(captured) = this.event.as_mut().and_then(|e| e.captured.as_mut()) {
                        captured.response.push(data);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(error)) => {
                this.record(Outcome::UpstreamError);
                Poll::Ready(Some(Err(error)))
            }
            None => {
                this.record(Outcome::Complete);
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        // Not ended until the final event is recorded, so the end is always polled (else the drop would
        // record a complete response as `client_closed`).
        self.event.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for AuditedBody {
    fn drop(&mut self) {
        // The client went away before the end: audit what was sent.
        self.record(Outcome::ClientClosed);
    }
}
