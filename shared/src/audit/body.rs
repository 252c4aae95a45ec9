//! A response body that audits itself: it relays every frame untouched while counting bytes, noting the
//! first byte's time, reading token usage and (when the route records bodies) keeping a bounded handle
//! on each frame's bytes in the event's [`super::CapturedBodies`], and records the request's final audit event when the body
//! ends (into the buffer: nothing waits; the event leaves after the response, see
//! [`super::lifecycle`]). A client that goes away early still gets its request audited
//! (`client_closed`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_util::FutureExt;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

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
    cut: Option<Cut>,
}

/// Where a stream ends if it is still running: its last bytes and the time to send them.
struct Cut {
    at: Pin<Box<tokio::time::Sleep>>,
    last: Bytes,
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
            cut: None,
        }
    }

    /// Ends the body at `at` with `last` (the provider's stream error), recorded as `deadline_cut`,
    /// unless it has ended by then.
    pub fn cut_at(mut self, at: tokio::time::Instant, last: Bytes) -> Self {
        self.cut = Some(Cut {
            at: Box::pin(tokio::time::sleep_until(at)),
            last,
        });
        self
    }

    fn finished_event(&mut self, outcome: Outcome) -> Option<AuditEvent> {
        let mut event = self.event.take()?;
        let scanner = self.scanner.take();
        event.stream = scanner.as_ref().is_some_and(UsageScanner::is_stream);
        // Only a successful response is estimated when the provider reported no usage.
        let estimate_from = (200..300).contains(&event.status).then_some(event.bytes_in);
        event.usage = scanner.and_then(|scanner| scanner.finish(estimate_from));
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
        if let Some(cut) = this.cut.as_mut() {
            if cut.at.as_mut().poll(cx).is_ready() {
                let last = std::mem::take(&mut cut.last);
                this.cut = None;
                this.bytes_out += last.len() as u64;
                tracing::warn!(
                    request_id = this.event.as_ref().map(|e| e.request_id.as_str()),
                    "stream cut before the function's timeout"
                );
                this.record(Outcome::DeadlineCut);
                return Poll::Ready(Some(Ok(Frame::data(last))));
            }
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
        if self.event.is_none() {
            return;
        }
        // Dropped before its end was read. Clients often close as soon as they have what they need
        // (the openai SDK stops at `data: [DONE]`), so look whether anything was left: an upstream
        // body already at its end means the client got every byte (complete); anything still to
        // come, or not arrived yet, means it went away early (client_closed).
        // The stream's own end marker counts as its end: under load the upstream's end of body can
        // trail the marker the client stopped at.
        let ended_by_marker = self
            .scanner
            .as_ref()
            .is_some_and(UsageScanner::saw_end_marker);
        let outcome = loop {
            match self.inner.frame().now_or_never() {
                Some(None) => break Outcome::Complete,
                Some(Some(Ok(frame))) if frame.data_ref().is_none_or(|data| data.is_empty()) => {}
                None if ended_by_marker => break Outcome::Complete,
                _ => break Outcome::ClientClosed,
            }
        };
        self.record(outcome);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures_util::StreamExt;
    use http_body_util::{BodyExt, StreamBody};

    use super::*;
    use crate::audit::{AuditEvent, Decision, UsageScanner};

    #[derive(Default)]
    struct Recorded(Mutex<Vec<AuditEvent>>);

    impl AuditSink for Recorded {
        fn record(&self, event: AuditEvent) {
            self.0.lock().unwrap().push(event);
        }
    }

    /// A body that yields `chunks`, then neither ends nor yields (the upstream's end not arrived yet).
    fn stalled_after(chunks: &[&'static str]) -> ProxyBody {
        let frames = futures_util::stream::iter(
            chunks
                .iter()
                .map(|c| Ok::<_, BoxError>(Frame::data(Bytes::from_static(c.as_bytes()))))
                .collect::<Vec<_>>(),
        )
        .chain(futures_util::stream::pending());
        StreamBody::new(frames).boxed_unsync()
    }

    /// Reads `frames` frames of an SSE response, then drops the body as a client that stops reading.
    async fn outcome_when_dropped_after(chunks: &[&'static str], frames: usize) -> Outcome {
        let sink = Arc::new(Recorded::default());
        let mut body = AuditedBody::new(
            stalled_after(chunks),
            UsageScanner::new(&[], Some("text/event-stream")),
            AuditEvent::new("r1", Decision::Allow, 200),
            sink.clone(),
            Instant::now(),
        );
        for _ in 0..frames {
            body.frame().await.unwrap().unwrap();
        }
        drop(body);
        let events = sink.0.lock().unwrap();
        assert_eq!(events.len(), 1, "one final event");
        events[0].outcome
    }

    #[tokio::test]
    async fn a_client_that_stops_at_the_done_marker_got_the_whole_stream() {
        let chunks = ["data: {\"choices\":[]}\n\n", "data: [DONE]\n\n"];
        assert_eq!(
            outcome_when_dropped_after(&chunks, 2).await,
            Outcome::Complete
        );
    }

    #[tokio::test]
    async fn a_client_that_leaves_before_the_end_closed_early() {
        let chunks = ["data: {\"choices\":[]}\n\n", "data: [DONE]\n\n"];
        assert_eq!(
            outcome_when_dropped_after(&chunks, 1).await,
            Outcome::ClientClosed
        );
        // Without an end marker, a stream whose end has not arrived is not known to be complete.
        let chunks = ["data: {\"candidates\":[]}\n\n"];
        assert_eq!(
            outcome_when_dropped_after(&chunks, 1).await,
            Outcome::ClientClosed
        );
    }
}
