//! When buffered audit events leave: after each invocation's response has gone (a streamed body
//! included), before Lambda freezes the execution environment. No audit call sits between the
//! provider's last byte and the client's.
//!
//! In Lambda an internal extension, in the function's own binary, registers for INVOKE events. Lambda
//! does not freeze the environment until every extension has asked for its next event, so the extension
//! waits for the invocation to end, flushes the buffer, and only then asks; the client already has its
//! response (API Gateway returns it as the runtime posts it, or as the stream ends). The local stack
//! runs the same flush after each invocation ([`Invocations::flush_after_each`]), so what the tests
//! exercise is what runs.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::Mutex;

use super::AuditBuffer;

/// The invocations of one function in this execution environment, and the buffer their events go to.
pub struct Invocations {
    buffer: AuditBuffer,
    ended_sender: UnboundedSender<()>,
    ended: Mutex<UnboundedReceiver<()>>,
}

/// Held for the length of one invocation; dropped when its response is over (for a stream, when the
/// body ends or the client goes away), which lets the flush run.
pub struct InvocationGuard {
    ended: UnboundedSender<()>,
}

impl Drop for InvocationGuard {
    fn drop(&mut self) {
        // The receiver lives as long as `Invocations`; a send can only fail when the process ends.
        let _ = self.ended.send(());
    }
}

impl Invocations {
    pub fn new(buffer: AuditBuffer) -> Arc<Self> {
        let (ended_sender, ended) = unbounded_channel();
        Arc::new(Invocations {
            buffer,
            ended_sender,
            ended: Mutex::new(ended),
        })
    }

    pub fn buffer(&self) -> &AuditBuffer {
        &self.buffer
    }

    /// Marks the start of an invocation; keep the guard until its response is over.
    pub fn begin(&self) -> InvocationGuard {
        InvocationGuard {
            ended: self.ended_sender.clone(),
        }
    }

    /// Waits for the end of the next invocation (at most `limit`, so that an invocation that never
    /// began one, an event the runtime could not read, cannot hold the environment), then flushes.
    async fn flush_after_next(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, async { self.ended.lock().await.recv().await }).await;
        self.buffer.flush().await;
    }

    /// The local stack's lifecycle: flushes after every invocation that ends, until the process ends.
    pub fn flush_after_each(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let invocations = self.clone();
        tokio::spawn(async move {
            loop {
                let ended = invocations.ended.lock().await.recv().await;
                invocations.buffer.flush().await;
                if ended.is_none() {
                    return;
                }
            }
        })
    }

    /// Registers the internal extension, which must happen before the runtime starts (the runtime's
    /// first poll ends Init), and returns the future that runs it next to the runtime.
    pub async fn register_extension(
        self: &Arc<Self>,
    ) -> Result<impl Future<Output = Result<(), lambda_runtime::Error>>, lambda_runtime::Error>
    {
        let invocations = self.clone();
        let extension = lambda_extension::Extension::new()
            .with_extension_name("llm-gateway-audit")
            // Internal extensions receive INVOKE only; SHUTDOWN goes to external ones.
            .with_events(&["INVOKE"])
            .with_events_processor(lambda_extension::service_fn(
                move |event: lambda_extension::LambdaEvent| {
                    let invocations = invocations.clone();
                    async move {
                        if let lambda_extension::NextEvent::Invoke(invoke) = event.next {
                            invocations
                                .flush_after_next(until_deadline(invoke.deadline_ms))
                                .await;
                        }
                        Ok::<(), lambda_extension::Error>(())
                    }
                },
            ))
            .register()
            .await?;
        Ok(extension.run())
    }
}

/// Time left until the invocation's deadline (milliseconds since the epoch), never negative.
fn until_deadline(deadline_ms: u64) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Duration::from_millis(deadline_ms).saturating_sub(now)
}

/// Runs a function's Lambda runtime next to its audit extension; either one ending ends the process.
pub async fn run_with_extension<R>(
    invocations: &Arc<Invocations>,
    runtime: impl FnOnce() -> R,
) -> Result<(), lambda_runtime::Error>
where
    R: Future<Output = Result<(), lambda_runtime::Error>>,
{
    let extension = invocations.register_extension().await?;
    tokio::try_join!(runtime(), extension)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use futures_util::future::BoxFuture;
    use futures_util::FutureExt;

    use super::*;
    use crate::audit::buffer::Deliver;
    use crate::audit::{AuditEvent, AuditSink, Decision};

    #[derive(Clone, Default)]
    struct Delivered(Arc<StdMutex<Vec<String>>>);

    impl Deliver for Delivered {
        fn deliver(&self, events: Vec<AuditEvent>) -> BoxFuture<'_, ()> {
            self.0
                .lock()
                .unwrap()
                .extend(events.into_iter().map(|e| e.request_id));
            async {}.boxed()
        }
    }

    #[tokio::test]
    async fn events_leave_only_after_the_invocation_ends() {
        let delivered = Delivered::default();
        let invocations = Invocations::new(AuditBuffer::new(delivered.clone()));
        let guard = invocations.begin();
        invocations
            .buffer()
            .record(AuditEvent::new("r1", Decision::Allow, 200));
        let flush = {
            let invocations = invocations.clone();
            tokio::spawn(async move { invocations.flush_after_next(Duration::from_secs(30)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            delivered.0.lock().unwrap().is_empty(),
            "nothing may leave while the response is still going"
        );
        drop(guard);
        flush.await.unwrap();
        assert_eq!(*delivered.0.lock().unwrap(), vec!["r1"]);
    }

    #[tokio::test]
    async fn an_invocation_that_never_began_cannot_hold_the_environment() {
        let delivered = Delivered::default();
        let invocations = Invocations::new(AuditBuffer::new(delivered.clone()));
        invocations
            .buffer()
            .record(AuditEvent::new("r2", Decision::Deny, 403));
        invocations
            .flush_after_next(Duration::from_millis(20))
            .await;
        assert_eq!(*delivered.0.lock().unwrap(), vec!["r2"]);
    }

    #[tokio::test]
    async fn the_local_lifecycle_flushes_after_each_invocation() {
        let delivered = Delivered::default();
        let invocations = Invocations::new(AuditBuffer::new(delivered.clone()));
        let _loop = invocations.flush_after_each();
        for id in ["a", "b"] {
            let guard = invocations.begin();
            invocations
                .buffer()
                .record(AuditEvent::new(id, Decision::Allow, 200));
            drop(guard);
            for _ in 0..200 {
                if delivered.0.lock().unwrap().iter().any(|d| d == id) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        assert_eq!(*delivered.0.lock().unwrap(), vec!["a", "b"]);
    }

    #[test]
    fn a_past_deadline_leaves_no_time() {
        assert_eq!(until_deadline(0), Duration::ZERO);
    }
}
