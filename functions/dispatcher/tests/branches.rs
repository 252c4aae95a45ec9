//! The dispatcher's branches, through its handler, against in-memory SQS, payload bucket and provider
//! fakes (`gateway_shared::testing`). Each test pins what was sent where and what was never called: no
//! upstream call for an expired, already answered or forged request, no S3 call for a forged one, and
//! whether SQS is left to retry the message (a batch item failure) or may delete it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use dispatcher::trust::RequestQueue;
use dispatcher::{Backends, Dispatcher, DispatcherConfig};
use gateway_shared::audit::{clock, AuditSink, Decision};
use gateway_shared::testing::{
    FakePayloadStore, FakeQueue, QueueCall, RecordingSink, RecordingTransport, StoreCall,
};
use gateway_shared::transport::envelope::{
    Payload, ReplyErrorKind, ReplyMessage, RequestEnvelope, ENVELOPE_VERSION,
};
use gateway_shared::transport::queue::{PayloadSettings, QueueError};
use gateway_shared::transport::{Transport, TransportError};
use gateway_shared::Provider;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::json;

const ACCOUNT_URL: &str = "https://sqs.us-east-1.amazonaws.com/123456789012";
const AZURE_ARN: &str = "arn:aws:sqs:us-east-1:123456789012:llm-gateway-requests-azure-openai";
const GEMINI_ARN: &str = "arn:aws:sqs:us-east-1:123456789012:llm-gateway-requests-gemini";
const REPLY_TO: &str =
    "https://sqs.us-east-1.amazonaws.com/123456789012/llm-gateway-reply-azure-openai-3f9a1c2b7d4e-0";
const BUCKET: &str = "payloads";
const REQUEST_ID: &str = "req-1";
const MESSAGE_ID: &str = "msg-1";
/// Small, so a few upstream chunks make several reply batches (and a larger one goes through S3).
const INLINE_MAX: usize = 8;

struct Harness {
    dispatcher: Dispatcher,
    sqs: Arc<FakeQueue>,
    s3: Arc<FakePayloadStore>,
    upstream: Arc<RecordingTransport>,
    audit: Arc<RecordingSink>,
}

fn config() -> DispatcherConfig {
    DispatcherConfig {
        upstreams: Vec::new(),
        payloads: PayloadSettings {
            bucket: Some(BUCKET.into()),
            inline_max_bytes: INLINE_MAX,
        },
        // Long enough never to fire within a test: batches are cut by size, which is deterministic.
        flush_window: Duration::from_secs(10),
        max_receives: 3,
        connect_timeout: Duration::from_secs(5),
        response_timeout: Duration::from_secs(120),
        // Extensions come every 10 s; none within a test unless it waits for one.
        visibility: Duration::from_secs(30),
        queues: vec![
            RequestQueue::new(
                Provider::AzureOpenAi,
                &format!("{ACCOUNT_URL}/llm-gateway-requests-azure-openai"),
            )
            .unwrap(),
            RequestQueue::new(
                Provider::Gemini,
                &format!("{ACCOUNT_URL}/llm-gateway-requests-gemini"),
            )
            .unwrap(),
        ],
        reply_queue_prefix: "llm-gateway-reply-".into(),
        policy_file: None,
    }
}

/// A dispatcher serving the Azure OpenAI and Gemini queues, with an upstream for Azure OpenAI only.
fn harness(upstream: RecordingTransport) -> Harness {
    harness_with(config(), upstream)
}

fn harness_with(config: DispatcherConfig, upstream: RecordingTransport) -> Harness {
    let sqs = Arc::new(FakeQueue::default());
    let s3 = Arc::new(FakePayloadStore::default());
    let upstream = Arc::new(upstream);
    let audit = Arc::new(RecordingSink::default());
    let mut upstreams: HashMap<Provider, Arc<dyn Transport>> = HashMap::new();
    upstreams.insert(Provider::AzureOpenAi, upstream.clone());
    let dispatcher = Dispatcher::new(
        config,
        Backends {
            upstreams,
            sqs: sqs.clone(),
            s3: s3.clone(),
            audit: audit.clone() as Arc<dyn AuditSink>,
        },
    )
    .unwrap();
    Harness {
        dispatcher,
        sqs,
        s3,
        upstream,
        audit,
    }
}

fn answering(chunks: Vec<&'static [u8]>) -> RecordingTransport {
    let mut headers = HeaderMap::new();
    headers.insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    RecordingTransport::answering(StatusCode::OK, headers, chunks)
}

fn never_called() -> RecordingTransport {
    answering(vec![b"{}"])
}

/// A route's envelope for a chat completion, due in a minute.
fn envelope() -> RequestEnvelope {
    RequestEnvelope {
        version: ENVELOPE_VERSION,
        request_id: REQUEST_ID.into(),
        provider: Provider::AzureOpenAi,
        principal: Some("user-sub-1".into()),
        method: "POST".into(),
        path: "/openai/deployments/gpt-4o-mini/chat/completions".into(),
        query: "api-version=2024-10-21".into(),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            // Never relayed, whoever queued it.
            ("api-key".into(), "client-secret".into()),
        ],
        body: Payload::inline(b"{\"messages\":[]}"),
        reply_to: REPLY_TO.into(),
        deadline_ms: clock::now_millis() + 60_000,
    }
}

fn event(body: &str, source_arn: &str, receives: u32) -> SqsEvent {
    serde_json::from_value(json!({"Records": [{
        "messageId": MESSAGE_ID,
        "receiptHandle": "receipt-1",
        "body": body,
        "attributes": {"ApproximateReceiveCount": receives.to_string()},
        "eventSource": "aws:sqs",
        "eventSourceARN": source_arn,
    }]}))
    .unwrap()
}

fn envelope_event(envelope: &RequestEnvelope, receives: u32) -> SqsEvent {
    event(
        &serde_json::to_string(envelope).unwrap(),
        AZURE_ARN,
        receives,
    )
}

fn failures(response: &SqsBatchResponse) -> Vec<String> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect()
}

fn inline(message: &ReplyMessage) -> Option<String> {
    message
        .data
        .as_ref()
        .map(|d| String::from_utf8(d.decode_inline().expect("inline data")).unwrap())
}

fn done_marker() -> String {
    format!("dispatch-done/{REQUEST_ID}")
}

// === happy path ===

#[tokio::test]
async fn an_answer_is_relayed_as_ordered_replies_head_batches_end() {
    let h = harness(answering(vec![b"data: 1\n", b"data: 2\n", b"[DONE]"]));
    let response = h.dispatcher.handle(envelope_event(&envelope(), 1)).await;

    assert!(failures(&response).is_empty(), "SQS may delete the message");
    let requests = h.upstream.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.request_id, REQUEST_ID);
    assert_eq!(request.method, http::Method::POST);
    assert_eq!(
        request.path.as_str(),
        "/openai/deployments/gpt-4o-mini/chat/completions"
    );
    assert_eq!(request.query, "api-version=2024-10-21");
    assert_eq!(request.body.as_ref(), b"{\"messages\":[]}");
    assert_eq!(request.headers["content-type"], "application/json");
    assert!(
        request.headers.get("api-key").is_none(),
        "a queued credential is never relayed"
    );

    let replies = h.sqs.replies_sent_to(REPLY_TO);
    let seqs: Vec<u64> = replies.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [0, 1, 2]);
    assert!(replies
        .iter()
        .all(|r| r.request_id == REQUEST_ID && r.attempt == "msg-1-1" && r.error.is_none()));
    let head = replies[0].head.as_ref().expect("the head comes first");
    assert_eq!(head.status, 200);
    assert!(head
        .headers
        .contains(&("content-type".into(), "text/event-stream".into())));
    assert!(replies[1..].iter().all(|r| r.head.is_none()));
    // Each chunk reaching the batch size is sent at once; the short rest goes with the end.
    let bodies: Vec<Option<String>> = replies.iter().map(inline).collect();
    assert_eq!(
        bodies,
        [
            Some("data: 1\n".into()),
            Some("data: 2\n".into()),
            Some("[DONE]".into())
        ]
    );
    let ends: Vec<bool> = replies.iter().map(|r| r.end).collect();
    assert_eq!(ends, [false, false, true]);

    assert_eq!(
        h.s3.calls(),
        [StoreCall::Put {
            bucket: BUCKET.into(),
            key: done_marker(),
            len: 0
        }],
        "a first delivery is not looked up; once answered it is marked done"
    );
    assert!(h.audit.events().is_empty());
}

#[tokio::test]
async fn large_bodies_travel_through_the_payload_bucket_both_ways() {
    let h = harness(answering(vec![b"a reply batch over the limit"]));
    h.s3.insert(
        BUCKET,
        &format!("payloads/{REQUEST_ID}/request"),
        &b"a request body over the limit"[..],
    );
    let mut envelope = envelope();
    envelope.body = Payload::S3 {
        bucket: BUCKET.into(),
        key: format!("payloads/{REQUEST_ID}/request"),
    };
    let response = h.dispatcher.handle(envelope_event(&envelope, 1)).await;

    assert!(failures(&response).is_empty());
    assert_eq!(
        h.upstream.requests()[0].body.as_ref(),
        b"a request body over the limit"
    );
    let replies = h.sqs.replies_sent_to(REPLY_TO);
    assert_eq!(replies.len(), 2, "the batch at once, then the end");
    let key = format!("payloads/{REQUEST_ID}/msg-1-1-0");
    assert!(replies[0].head.is_some() && !replies[0].end);
    assert_eq!(
        replies[0].data,
        Some(Payload::S3 {
            bucket: BUCKET.into(),
            key: key.clone()
        })
    );
    assert!(replies[1].end && replies[1].data.is_none());
    assert_eq!(
        h.s3.object(BUCKET, &key).unwrap().as_ref(),
        b"a reply batch over the limit"
    );
}

#[tokio::test]
async fn an_upstream_failure_is_answered_as_an_error_reply() {
    let h = harness(RecordingTransport::failing(|| {
        TransportError::Connect("connection refused".into())
    }));
    let response = h.dispatcher.handle(envelope_event(&envelope(), 1)).await;

    assert!(failures(&response).is_empty());
    assert_eq!(h.upstream.requests().len(), 1);
    let replies = h.sqs.replies_sent_to(REPLY_TO);
    assert_eq!(replies.len(), 1);
    assert!(replies[0].end && replies[0].head.is_none() && replies[0].data.is_none());
    assert_eq!(
        replies[0].error.as_ref().map(|e| &e.kind),
        Some(&ReplyErrorKind::Connect)
    );
}

// === expired ===

#[tokio::test]
async fn an_expired_request_is_answered_with_a_timeout_and_not_sent_upstream() {
    let h = harness(never_called());
    let mut envelope = envelope();
    envelope.deadline_ms = clock::now_millis() - 1_000;
    let response = h.dispatcher.handle(envelope_event(&envelope, 1)).await;

    assert!(
        failures(&response).is_empty(),
        "answered, so SQS deletes it"
    );
    assert!(h.upstream.requests().is_empty());
    let replies = h.sqs.replies_sent_to(REPLY_TO);
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].seq, 0);
    assert!(replies[0].end && replies[0].head.is_none() && replies[0].data.is_none());
    assert_eq!(
        replies[0].error.as_ref().map(|e| &e.kind),
        Some(&ReplyErrorKind::Timeout)
    );
    assert!(
        h.s3.calls().is_empty(),
        "no payload read, no done-marker lookup or write"
    );
    assert!(h.audit.events().is_empty());
}

#[tokio::test]
async fn an_expired_request_whose_waiter_is_gone_is_dropped() {
    let h = harness(never_called());
    h.sqs.remove(REPLY_TO);
    let mut envelope = envelope();
    envelope.deadline_ms = clock::now_millis() - 1_000;
    let response = h.dispatcher.handle(envelope_event(&envelope, 1)).await;

    assert!(
        failures(&response).is_empty(),
        "nobody waits: not retried, SQS deletes it"
    );
    assert!(h.upstream.requests().is_empty());
    assert_eq!(
        h.sqs.sent_to(REPLY_TO).len(),
        1,
        "one attempt, no retry loop"
    );
}

#[tokio::test]
async fn an_expired_request_whose_answer_cannot_be_sent_is_retried() {
    let h = harness(never_called());
    h.sqs.fail(REPLY_TO, QueueError::Failed("throttled".into()));
    let mut envelope = envelope();
    envelope.deadline_ms = clock::now_millis() - 1_000;
    let response = h.dispatcher.handle(envelope_event(&envelope, 1)).await;

    assert_eq!(failures(&response), [MESSAGE_ID], "left to SQS to retry");
    assert!(h.upstream.requests().is_empty());
    assert!(
        h.audit.events().is_empty(),
        "audited only on its last receive"
    );
}

// === redelivery ===

#[tokio::test]
async fn a_redelivered_request_already_answered_is_not_sent_twice() {
    let h = harness(never_called());
    h.s3.insert(BUCKET, &done_marker(), &b""[..]);
    let response = h.dispatcher.handle(envelope_event(&envelope(), 2)).await;

    assert!(failures(&response).is_empty(), "SQS deletes the duplicate");
    assert!(h.upstream.requests().is_empty());
    assert!(
        h.sqs.calls().is_empty(),
        "no second answer either: the client has its own"
    );
    assert_eq!(
        h.s3.calls(),
        [StoreCall::Exists {
            bucket: BUCKET.into(),
            key: done_marker()
        }]
    );
}

#[tokio::test]
async fn a_redelivered_request_never_answered_is_dispatched_once_and_marked() {
    let h = harness(answering(vec![b"{}"]));
    let response = h.dispatcher.handle(envelope_event(&envelope(), 2)).await;

    assert!(failures(&response).is_empty());
    assert_eq!(h.upstream.requests().len(), 1);
    let replies = h.sqs.replies_sent_to(REPLY_TO);
    assert!(replies.iter().all(|r| r.attempt == "msg-1-2"));
    assert!(h.s3.object(BUCKET, &done_marker()).is_some());
}

// === reply queue gone ===

#[tokio::test]
async fn a_reply_queue_gone_drops_the_answer_without_retrying() {
    let h = harness(answering(vec![b"data: 1\n", b"data: 2\n", b"[DONE]"]));
    h.sqs.remove(REPLY_TO);
    let response = h.dispatcher.handle(envelope_event(&envelope(), 1)).await;

    assert!(
        failures(&response).is_empty(),
        "not retried: a redelivery would call the provider again for nobody"
    );
    assert_eq!(h.upstream.requests().len(), 1);
    assert_eq!(
        h.sqs.sent_to(REPLY_TO).len(),
        1,
        "the relay stops at the first refused send"
    );
    assert!(
        h.s3.object(BUCKET, &done_marker()).is_none(),
        "not marked answered: it was not"
    );
    assert!(h.audit.events().is_empty());
}

#[tokio::test]
async fn a_reply_that_cannot_be_sent_is_retried_and_dead_lettered_on_the_last_receive() {
    let h = harness(answering(vec![b"{}"]));
    h.sqs.fail(REPLY_TO, QueueError::Failed("throttled".into()));
    let first = h.dispatcher.handle(envelope_event(&envelope(), 1)).await;
    assert_eq!(failures(&first), [MESSAGE_ID]);
    assert!(h.audit.events().is_empty());

    let last = h.dispatcher.handle(envelope_event(&envelope(), 3)).await;
    assert_eq!(failures(&last), [MESSAGE_ID]);
    let events = h.audit.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].decision, Decision::Error);
    assert_eq!(events[0].request_id, REQUEST_ID);
    assert!(events[0].reason.as_deref().unwrap().contains("dead-letter"));
}

// === forged ===

/// Each way an envelope can fail the trust checks, as (name, envelope, source queue ARN).
fn forgeries() -> Vec<(&'static str, RequestEnvelope, &'static str)> {
    let with = |change: fn(&mut RequestEnvelope)| {
        let mut envelope = envelope();
        change(&mut envelope);
        envelope
    };
    vec![
        ("on another provider's queue", envelope(), GEMINI_ARN),
        (
            "from a queue not served",
            envelope(),
            "arn:aws:sqs:us-east-1:123456789012:someone-else",
        ),
        (
            "reply_to in another account",
            with(|e| {
                e.reply_to =
                    "https://sqs.us-east-1.amazonaws.com/999999999999/llm-gateway-reply-x".into()
            }),
            AZURE_ARN,
        ),
        (
            "reply_to on a foreign host",
            with(|e| e.reply_to = "https://evil.example/123456789012/llm-gateway-reply-x".into()),
            AZURE_ARN,
        ),
        (
            "payload in a foreign bucket",
            with(|e| {
                e.body = Payload::S3 {
                    bucket: "someone-elses".into(),
                    key: format!("payloads/{REQUEST_ID}/request"),
                }
            }),
            AZURE_ARN,
        ),
        (
            "payload of another request",
            with(|e| {
                e.body = Payload::S3 {
                    bucket: BUCKET.into(),
                    key: "payloads/req-2/request".into(),
                }
            }),
            AZURE_ARN,
        ),
        (
            "deadline a day ahead",
            with(|e| e.deadline_ms = clock::now_millis() + 86_400_000),
            AZURE_ARN,
        ),
        (
            "path outside the grammar",
            with(|e| e.path = "/openai/v1/realtime".into()),
            AZURE_ARN,
        ),
    ]
}

#[tokio::test]
async fn forged_envelopes_are_audited_once_and_touch_nothing() {
    for (name, envelope, source) in forgeries() {
        let h = harness(never_called());
        let body = serde_json::to_string(&envelope).unwrap();
        for receives in 1..=3 {
            let response = h.dispatcher.handle(event(&body, source, receives)).await;
            assert_eq!(
                failures(&response),
                [MESSAGE_ID],
                "{name}: left to SQS to dead-letter"
            );
        }
        let events = h.audit.events();
        assert_eq!(events.len(), 1, "{name}: audited on its first receive only");
        assert_eq!(events[0].decision, Decision::Deny, "{name}");
        assert_eq!(events[0].status, 400, "{name}");
        assert_eq!(events[0].transport.as_deref(), Some("queue"), "{name}");
        let reason = events[0].reason.as_deref().unwrap();
        assert!(reason.contains("nothing sent upstream"), "{name}: {reason}");
        assert!(h.upstream.requests().is_empty(), "{name}: no upstream call");
        assert!(h.s3.calls().is_empty(), "{name}: no S3 call");
        assert!(
            h.sqs.calls().is_empty(),
            "{name}: no reply to a forged address"
        );
    }
}

#[tokio::test]
async fn a_message_that_is_not_an_envelope_is_refused_like_a_forged_one() {
    let h = harness(never_called());
    let response = h
        .dispatcher
        .handle(event("{\"hello\": 1}", AZURE_ARN, 1))
        .await;

    assert_eq!(failures(&response), [MESSAGE_ID]);
    let events = h.audit.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].decision, Decision::Deny);
    assert_eq!(events[0].provider.as_deref(), Some("azure-openai"));
    assert!(h.upstream.requests().is_empty());
    assert!(h.s3.calls().is_empty());
    assert!(h.sqs.calls().is_empty());
}

// === configuration gaps ===

#[tokio::test]
async fn a_provider_without_an_upstream_is_answered_with_a_request_error() {
    let h = harness(never_called());
    let mut envelope = envelope();
    envelope.provider = Provider::Gemini;
    envelope.path = "/v1beta/models/gemini-2.0-flash:generateContent".into();
    envelope.query = String::new();
    let body = serde_json::to_string(&envelope).unwrap();
    let response = h.dispatcher.handle(event(&body, GEMINI_ARN, 1)).await;

    assert!(failures(&response).is_empty());
    assert!(h.upstream.requests().is_empty());
    let replies = h.sqs.replies_sent_to(REPLY_TO);
    assert_eq!(replies.len(), 1);
    assert_eq!(
        replies[0].error.as_ref().map(|e| &e.kind),
        Some(&ReplyErrorKind::Request)
    );
    assert!(h.s3.calls().is_empty());
}

// === a long dispatch ===

#[tokio::test]
async fn a_long_stream_keeps_its_message_invisible() {
    let mut config = config();
    // Extended every 50 ms; the real figure is seconds, but only the cadence matters here.
    config.visibility = Duration::from_millis(150);
    let h = harness_with(config, RecordingTransport::stalling(StatusCode::OK));
    let dispatcher = Arc::new(h.dispatcher);
    let running = tokio::spawn({
        let dispatcher = dispatcher.clone();
        async move { dispatcher.handle(envelope_event(&envelope(), 1)).await }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    running.abort();

    let calls = h.sqs.calls();
    assert!(calls.len() >= 2, "extended again and again: {calls:?}");
    let extension = QueueCall::ChangeVisibility {
        queue_url: format!("{ACCOUNT_URL}/llm-gateway-requests-azure-openai"),
        receipt_handle: "receipt-1".into(),
        timeout: Duration::from_millis(150),
    };
    assert!(calls.iter().all(|c| *c == extension), "{calls:?}");
    assert_eq!(h.upstream.requests().len(), 1);
}
