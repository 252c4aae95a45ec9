//! In-memory stand-ins for what the transports call out to: SQS ([`FakeQueue`]), the payload bucket
//! ([`FakePayloadStore`]) and a provider ([`RecordingTransport`]). Each records every call it gets, so a
//! test can assert what was sent where and, as much, what was never called.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, StreamBody};

use crate::transport::envelope::ReplyMessage;
use crate::transport::queue::{MessageQueue, PayloadStore, QueueError, QueuePage, ReceivedMessage};
use crate::transport::{BoxError, Transport, TransportError, UpstreamRequest, UpstreamResponse};

/// One call made on a [`FakeQueue`], with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueCall {
    Send {
        queue_url: String,
        body: String,
    },
    Receive {
        queue_url: String,
    },
    Delete {
        queue_url: String,
        entries: Vec<(String, String)>,
    },
    ChangeVisibility {
        queue_url: String,
        receipt_handle: String,
        timeout: Duration,
    },
    CreateQueue {
        name: String,
        attributes: Vec<(String, String)>,
        tags: Vec<(String, String)>,
    },
    TagQueue {
        queue_url: String,
        tags: Vec<(String, String)>,
    },
    ListQueues {
        prefix: String,
    },
    ListQueueTags {
        queue_url: String,
    },
    DeleteQueue {
        queue_url: String,
    },
}

#[derive(Default)]
struct FakeQueueState {
    calls: Vec<QueueCall>,
    /// Messages waiting, by queue URL: (message id, body).
    messages: BTreeMap<String, VecDeque<(String, String)>>,
    tags: BTreeMap<String, HashMap<String, String>>,
    /// Queues that were deleted: every call on them fails as SQS's would.
    gone: HashSet<String>,
    /// Scripted failures, by queue URL, for calls that are not about a missing queue.
    failing: HashMap<String, QueueError>,
    next_id: u64,
}

/// SQS in memory. Any URL may be sent to (as if the queue existed) until it is deleted
/// ([`FakeQueue::remove`] or `delete_queue`); from then on every call on it fails with
/// [`QueueError::Gone`]. Created queues are `https://sqs.fake/000000000000/{name}`.
#[derive(Default)]
pub struct FakeQueue {
    state: Mutex<FakeQueueState>,
    arrived: tokio::sync::Notify,
}

impl FakeQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, FakeQueueState> {
        self.state.lock().expect("fake queue lock")
    }

    /// The URL the fake gives a queue created under `name`.
    pub fn url_of(name: &str) -> String {
        format!("https://sqs.fake/000000000000/{name}")
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<QueueCall> {
        self.lock().calls.clone()
    }

    /// The bodies of every send attempted to `queue_url` (whether or not it succeeded), in order.
    pub fn sent_to(&self, queue_url: &str) -> Vec<String> {
        self.lock()
            .calls
            .iter()
            .filter_map(|call| match call {
                QueueCall::Send {
                    queue_url: url,
                    body,
                } if url == queue_url => Some(body.clone()),
                _ => None,
            })
            .collect()
    }

    /// The sends to `queue_url`, read as reply messages (an unreadable body fails the test).
    pub fn replies_sent_to(&self, queue_url: &str) -> Vec<ReplyMessage> {
        self.sent_to(queue_url)
            .iter()
            .map(|body| serde_json::from_str(body).expect("a reply message"))
            .collect()
    }

    /// Deletes a queue behind the code's back (a sweep, an environment gone).
    pub fn remove(&self, queue_url: &str) {
        let mut state = self.lock();
        state.gone.insert(queue_url.to_string());
        state.messages.remove(queue_url);
        state.tags.remove(queue_url);
        drop(state);
        // A receive waiting on it returns, as SQS would end it early; the next one finds it gone.
        self.arrived.notify_waiters();
    }

    /// Makes every later call on `queue_url` fail with `error`.
    pub fn fail(&self, queue_url: &str, error: QueueError) {
        self.lock().failing.insert(queue_url.to_string(), error);
    }

    /// Puts a message on `queue_url` as another party would (no call is recorded).
    pub fn push(&self, queue_url: &str, body: String) {
        let mut state = self.lock();
        state.next_id += 1;
        let id = format!("m{}", state.next_id);
        state
            .messages
            .entry(queue_url.to_string())
            .or_default()
            .push_back((id, body));
        drop(state);
        self.arrived.notify_waiters();
    }

    /// The tags of a queue as they stand.
    pub fn tags_of(&self, queue_url: &str) -> HashMap<String, String> {
        self.lock().tags.get(queue_url).cloned().unwrap_or_default()
    }

    /// Records `call`, then fails it if its queue is gone or scripted to fail.
    fn enter(&self, call: QueueCall, queue_url: &str) -> Result<(), QueueError> {
        let mut state = self.lock();
        state.calls.push(call);
        if state.gone.contains(queue_url) {
            return Err(QueueError::Gone(format!(
                "AWS.SimpleQueueService.NonExistentQueue: {queue_url}"
            )));
        }
        match state.failing.get(queue_url) {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        }
    }

    fn take_messages(&self, queue_url: &str, max: usize) -> Vec<ReceivedMessage> {
        let mut state = self.lock();
        let Some(waiting) = state.messages.get_mut(queue_url) else {
            return Vec::new();
        };
        let count = waiting.len().min(max);
        waiting
            .drain(..count)
            .map(|(id, body)| ReceivedMessage {
                receipt_handle: Some(format!("receipt-{id}")),
                message_id: Some(id),
                body: Some(body),
            })
            .collect()
    }
}

impl MessageQueue for FakeQueue {
    fn send_message<'a>(
        &'a self,
        queue_url: &'a str,
        body: String,
    ) -> BoxFuture<'a, Result<(), QueueError>> {
        let call = QueueCall::Send {
            queue_url: queue_url.to_string(),
            body: body.clone(),
        };
        let result = self
            .enter(call, queue_url)
            .map(|()| self.push(queue_url, body));
        async move { result }.boxed()
    }

    fn receive_messages<'a>(
        &'a self,
        queue_url: &'a str,
        max_messages: i32,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<ReceivedMessage>, QueueError>> {
        async move {
            let call = QueueCall::Receive {
                queue_url: queue_url.to_string(),
            };
            self.enter(call, queue_url)?;
            let max = usize::try_from(max_messages).unwrap_or(0);
            // Long polling: register for arrivals before looking, so none slips in between.
            let arrived = self.arrived.notified();
            let messages = self.take_messages(queue_url, max);
            if !messages.is_empty() {
                return Ok(messages);
            }
            let _ = tokio::time::timeout(wait, arrived).await;
            Ok(self.take_messages(queue_url, max))
        }
        .boxed()
    }

    fn delete_messages<'a>(
        &'a self,
        queue_url: &'a str,
        entries: Vec<(String, String)>,
    ) -> BoxFuture<'a, Result<(), QueueError>> {
        let call = QueueCall::Delete {
            queue_url: queue_url.to_string(),
            entries,
        };
        let result = self.enter(call, queue_url);
        async move { result }.boxed()
    }

    fn change_visibility<'a>(
        &'a self,
        queue_url: &'a str,
        receipt_handle: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), QueueError>> {
        let call = QueueCall::ChangeVisibility {
            queue_url: queue_url.to_string(),
            receipt_handle: receipt_handle.to_string(),
            timeout,
        };
        let result = self.enter(call, queue_url);
        async move { result }.boxed()
    }

    fn create_queue<'a>(
        &'a self,
        name: &'a str,
        attributes: Vec<(String, String)>,
        tags: Vec<(String, String)>,
    ) -> BoxFuture<'a, Result<String, QueueError>> {
        let url = Self::url_of(name);
        let mut state = self.lock();
        state.calls.push(QueueCall::CreateQueue {
            name: name.to_string(),
            attributes,
            tags: tags.clone(),
        });
        state.gone.remove(&url);
        state.tags.entry(url.clone()).or_default().extend(tags);
        drop(state);
        async move { Ok(url) }.boxed()
    }

    fn tag_queue<'a>(
        &'a self,
        queue_url: &'a str,
        tags: Vec<(String, String)>,
    ) -> BoxFuture<'a, Result<(), QueueError>> {
        let call = QueueCall::TagQueue {
            queue_url: queue_url.to_string(),
            tags: tags.clone(),
        };
        let result = self.enter(call, queue_url).map(|()| {
            self.lock()
                .tags
                .entry(queue_url.to_string())
                .or_default()
                .extend(tags);
        });
        async move { result }.boxed()
    }

    fn list_queues<'a>(
        &'a self,
        prefix: &'a str,
        _next_token: Option<String>,
    ) -> BoxFuture<'a, Result<QueuePage, QueueError>> {
        let mut state = self.lock();
        state.calls.push(QueueCall::ListQueues {
            prefix: prefix.to_string(),
        });
        let queue_urls = state
            .tags
            .keys()
            .filter(|url| {
                url.rsplit('/')
                    .next()
                    .is_some_and(|name| name.starts_with(prefix))
            })
            .cloned()
            .collect();
        drop(state);
        async move {
            Ok(QueuePage {
                queue_urls,
                next_token: None,
            })
        }
        .boxed()
    }

    fn list_queue_tags<'a>(
        &'a self,
        queue_url: &'a str,
    ) -> BoxFuture<'a, Result<HashMap<String, String>, QueueError>> {
        let call = QueueCall::ListQueueTags {
            queue_url: queue_url.to_string(),
        };
        let result = self
            .enter(call, queue_url)
            .map(|()| self.tags_of(queue_url));
        async move { result }.boxed()
    }

    fn delete_queue<'a>(&'a self, queue_url: &'a str) -> BoxFuture<'a, Result<(), QueueError>> {
        let call = QueueCall::DeleteQueue {
            queue_url: queue_url.to_string(),
        };
        let result = self.enter(call, queue_url).map(|()| self.remove(queue_url));
        async move { result }.boxed()
    }
}

/// One call made on a [`FakePayloadStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreCall {
    Put {
        bucket: String,
        key: String,
        len: usize,
    },
    Get {
        bucket: String,
        key: String,
    },
    Exists {
        bucket: String,
        key: String,
    },
}

/// A payload bucket in memory; a missing object is an error on `get`, `false` on `exists`.
#[derive(Default)]
pub struct FakePayloadStore {
    objects: Mutex<HashMap<(String, String), Bytes>>,
    calls: Mutex<Vec<StoreCall>>,
}

impl FakePayloadStore {
    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<StoreCall> {
        self.calls.lock().expect("fake store lock").clone()
    }

    /// Stores an object as another party would (no call is recorded).
    pub fn insert(&self, bucket: &str, key: &str, body: impl Into<Bytes>) {
        self.objects
            .lock()
            .expect("fake store lock")
            .insert((bucket.to_string(), key.to_string()), body.into());
    }

    pub fn object(&self, bucket: &str, key: &str) -> Option<Bytes> {
        self.objects
            .lock()
            .expect("fake store lock")
            .get(&(bucket.to_string(), key.to_string()))
            .cloned()
    }

    fn record(&self, call: StoreCall) {
        self.calls.lock().expect("fake store lock").push(call);
    }
}

impl PayloadStore for FakePayloadStore {
    fn put<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        body: Bytes,
    ) -> BoxFuture<'a, Result<(), BoxError>> {
        self.record(StoreCall::Put {
            bucket: bucket.to_string(),
            key: key.to_string(),
            len: body.len(),
        });
        self.insert(bucket, key, body);
        async { Ok(()) }.boxed()
    }

    fn get<'a>(&'a self, bucket: &'a str, key: &'a str) -> BoxFuture<'a, Result<Bytes, BoxError>> {
        self.record(StoreCall::Get {
            bucket: bucket.to_string(),
            key: key.to_string(),
        });
        let result = self
            .object(bucket, key)
            .ok_or_else(|| format!("NoSuchKey: {bucket}/{key}").into());
        async move { result }.boxed()
    }

    fn exists<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<bool, BoxError>> {
        self.record(StoreCall::Exists {
            bucket: bucket.to_string(),
            key: key.to_string(),
        });
        let found = self.object(bucket, key).is_some();
        async move { Ok(found) }.boxed()
    }
}

type Respond = Box<dyn Fn() -> Result<UpstreamResponse, TransportError> + Send + Sync>;

/// A provider that records the requests it gets and answers each the same scripted way.
pub struct RecordingTransport {
    requests: Mutex<Vec<UpstreamRequest>>,
    respond: Respond,
}

impl RecordingTransport {
    /// Answers with `status`, `headers` and a body that arrives as `chunks`, one frame each.
    pub fn answering(status: StatusCode, headers: HeaderMap, chunks: Vec<&'static [u8]>) -> Self {
        RecordingTransport {
            requests: Mutex::new(Vec::new()),
            respond: Box::new(move || {
                let frames = chunks
                    .clone()
                    .into_iter()
                    .map(|chunk| Ok::<_, BoxError>(http_body::Frame::data(Bytes::from(chunk))));
                Ok(UpstreamResponse {
                    status,
                    headers: headers.clone(),
                    body: StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync(),
                })
            }),
        }
    }

    /// Answers with `status` and a body that never ends (a stream that runs long).
    pub fn stalling(status: StatusCode) -> Self {
        RecordingTransport {
            requests: Mutex::new(Vec::new()),
            respond: Box::new(move || {
                let frames =
                    futures_util::stream::pending::<Result<http_body::Frame<Bytes>, BoxError>>();
                Ok(UpstreamResponse {
                    status,
                    headers: HeaderMap::new(),
                    body: StreamBody::new(frames).boxed_unsync(),
                })
            }),
        }
    }

    /// Fails every request with the error `make` builds.
    pub fn failing(make: fn() -> TransportError) -> Self {
        RecordingTransport {
            requests: Mutex::new(Vec::new()),
            respond: Box::new(move || Err(make())),
        }
    }

    /// The requests received so far, in order.
    pub fn requests(&self) -> Vec<UpstreamRequest> {
        self.requests.lock().expect("transport lock").clone()
    }
}

impl Transport for RecordingTransport {
    fn send(
        &self,
        request: UpstreamRequest,
    ) -> BoxFuture<'_, Result<UpstreamResponse, TransportError>> {
        self.requests.lock().expect("transport lock").push(request);
        let result = (self.respond)();
        async move { result }.boxed()
    }
}
