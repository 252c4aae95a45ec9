//! Handler tests for the route functions, fed with the API Gateway events in `events/`. The transport is a
//! recording fake (the trait's contract is the seam): these tests pin what the route sends upstream and
//! how it answers, independent of any network.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use gateway_shared::audit::{Decision, Outcome, Record};
use gateway_shared::proxy::Route;
use gateway_shared::scopes::Policy;
use gateway_shared::testing::RecordingSink;
use gateway_shared::transport::{Transport, TransportError, UpstreamRequest, UpstreamResponse};
use gateway_shared::Provider;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;

enum Script {
    Answer(StatusCode, &'static str),
    Fail(fn() -> TransportError),
    /// A stream (of `content-type`) that sends its first event and then never ends.
    EndlessStream(&'static str, &'static [u8]),
}

struct FakeTransport {
    seen: Mutex<Vec<UpstreamRequest>>,
    script: Script,
}

impl Transport for FakeTransport {
    fn send(
        &self,
        request: UpstreamRequest,
    ) -> BoxFuture<'_, Result<UpstreamResponse, TransportError>> {
        self.seen.lock().unwrap().push(request);
        let result = match &self.script {
            Script::Answer(status, body) => {
                let mut headers = HeaderMap::new();
                headers.insert("content-type", HeaderValue::from_static("application/json"));
                headers.insert("x-upstream", HeaderValue::from_static("yes"));
                Ok(UpstreamResponse {
                    status: *status,
                    headers,
                    body: Full::new(Bytes::from_static(body.as_bytes()))
                        .map_err(|never| match never {})
                        .boxed_unsync(),
                })
            }
            Script::Fail(make) => Err(make()),
            Script::EndlessStream(content_type, first) => {
                let (content_type, first): (&'static str, &'static [u8]) = (content_type, first);
                let mut headers = HeaderMap::new();
                headers.insert("content-type", HeaderValue::from_static(content_type));
                let first = futures_util::stream::once(async move {
                    Ok::<_, gateway_shared::transport::BoxError>(http_body::Frame::data(
                        Bytes::from_static(first),
                    ))
                });
                let body = first.chain(futures_util::stream::pending());
                Ok(UpstreamResponse {
                    status: StatusCode::OK,
                    headers,
                    body: http_body_util::StreamBody::new(body).boxed_unsync(),
                })
            }
        };
        async move { result }.boxed()
    }
}

fn route(provider: Provider, script: Script) -> (Route, Arc<FakeTransport>, Arc<RecordingSink>) {
    route_with_limit(provider, script, 1024 * 1024)
}

fn route_with_limit(
    provider: Provider,
    script: Script,
    max_request_bytes: usize,
) -> (Route, Arc<FakeTransport>, Arc<RecordingSink>) {
    let transport = Arc::new(FakeTransport {
        seen: Mutex::new(Vec::new()),
        script,
    });
    let audit = Arc::new(RecordingSink::default());
    let policy = Arc::new(Policy::default_policy().unwrap());
    let route = Route::new(
        provider,
        policy,
        (transport.clone(), "fake"),
        max_request_bytes,
        audit.clone(),
    );
    (route, transport, audit)
}

fn event(name: &str) -> Value {
    let path = format!("{}/../events/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn request(event: &Value) -> Value {
    event.clone()
}

async fn body_json(response: http::Response<gateway_shared::transport::ProxyBody>) -> Value {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn azure_request_is_relayed_without_client_credentials() {
    let (route, transport, audit) = route(
        Provider::AzureOpenAi,
        Script::Answer(StatusCode::OK, r#"{"ok":true}"#),
    );
    let response = route.handle(request(&event("azure-openai"))).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-gateway-request-id"],
        "req-azure-openai-0001"
    );
    assert_eq!(response.headers()["x-upstream"], "yes");
    assert_eq!(body_json(response).await, serde_json::json!({"ok": true}));

    let seen = transport.seen.lock().unwrap();
    let sent = &seen[0];
    assert_eq!(
        sent.path.as_str(),
        "/openai/deployments/gpt-4o-mini/chat/completions"
    );
    assert_eq!(sent.query, "api-version=2024-10-21");
    assert_eq!(sent.request_id, "req-azure-openai-0001");
    for dropped in ["api-key", "cookie", "host", "x-forwarded-for"] {
        assert!(
            !sent.headers.contains_key(dropped),
            "{dropped} must not go upstream"
        );
    }
    assert_eq!(sent.headers["x-stainless-lang"], "python");
    let body: Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(body["messages"][0]["content"], "hello");

    let records = audit.events();
    assert_eq!(
        records.iter().map(|r| r.record).collect::<Vec<_>>(),
        vec![Record::Accepted, Record::Final],
        "an accepted record when the provider is called, one final when the body ended"
    );
    assert_eq!(records[0].request_id, records[1].request_id);
    assert_ne!(records[0].event_id, records[1].event_id);
    assert_eq!(records[0].operation.as_deref(), Some("chat.completions"));
    assert!(records[0].principal.is_some());
    let events = audit.finals();
    let e = &events[0];
    assert_eq!(
        (e.decision, e.outcome, e.status),
        (Decision::Allow, Outcome::Complete, 200)
    );
    assert_eq!(e.request_id, "req-azure-openai-0001");
    assert_eq!(e.principal.as_ref().unwrap().subject, "2f1a9c3e-demo");
    assert_eq!(
        e.principal.as_ref().unwrap().department.as_deref(),
        Some("engineering")
    );
    assert_eq!(e.operation.as_deref(), Some("chat.completions"));
    assert_eq!(e.model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(e.bytes_out, 11);
    assert_eq!(e.bytes_in as usize, sent.body.len());
    assert_eq!(
        e.request_sha256.as_deref(),
        Some(gateway_shared::audit::sha256_hex(&sent.body).as_str())
    );
    assert_eq!(e.source_ip.as_deref(), Some("203.0.113.10"));
    assert_eq!(e.transport.as_deref(), Some("fake"));
    let json = serde_json::to_string(e).unwrap();
    assert!(!json.contains("CLIENT-GATEWAY-TOKEN") && !json.contains("session=abc"));
}

#[tokio::test]
async fn usage_is_read_from_the_relayed_body() {
    let (route, _, audit) = route(
        Provider::AzureOpenAi,
        Script::Answer(
            StatusCode::OK,
            r#"{"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#,
        ),
    );
    let response = route.handle(request(&event("azure-openai"))).await;
    assert_eq!(
        audit.finals().len(),
        0,
        "no event before the body has been relayed"
    );
    body_json(response).await;
    let usage = audit.finals()[0].usage.unwrap();
    assert_eq!(
        (usage.input_tokens, usage.output_tokens, usage.total_tokens),
        (3, 4, 7)
    );
}

#[tokio::test]
async fn a_client_that_goes_away_is_still_audited() {
    let (route, _, audit) = route(Provider::AzureOpenAi, Script::Answer(StatusCode::OK, "{}"));
    let response = route.handle(request(&event("azure-openai"))).await;
    drop(response);
    tokio::task::yield_now().await;
    let events = audit.finals();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].outcome, Outcome::ClientClosed);
}

#[tokio::test]
async fn a_client_that_closes_after_the_last_byte_got_a_complete_response() {
    // As the openai SDK does after `data: [DONE]`: every byte read, the end never polled.
    let (route, _, audit) = route(
        Provider::AzureOpenAi,
        Script::Answer(StatusCode::OK, r#"{"ok":true}"#),
    );
    let mut body = route
        .handle(request(&event("azure-openai")))
        .await
        .into_body();
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), r#"{"ok":true}"#);
    drop(body);
    assert_eq!(audit.finals()[0].outcome, Outcome::Complete);

    // A stream with more to come when the client leaves is not complete.
    let (streaming, _, audit) = self::route(
        Provider::AzureOpenAi,
        Script::EndlessStream("text/event-stream", b"data: {}\n\n"),
    );
    let mut body = streaming
        .handle(request(&event("azure-openai")))
        .await
        .into_body();
    body.frame().await.unwrap().unwrap();
    drop(body);
    assert_eq!(audit.finals()[0].outcome, Outcome::ClientClosed);
}

#[tokio::test]
async fn bedrock_model_id_is_encoded_as_botocore_does() {
    let (route, transport, _) = route(
        Provider::BedrockClaude,
        Script::Answer(StatusCode::OK, "{}"),
    );
    let response = route.handle(request(&event("bedrock-claude"))).await;
    assert_eq!(response.status(), 200);
    let seen = transport.seen.lock().unwrap();
    assert_eq!(
        seen[0].path.as_str(),
        "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    );
    assert!(!seen[0].headers.contains_key("authorization"));
    assert_eq!(
        seen[0].headers["amz-sdk-invocation-id"],
        "7d9f1b1e-0000-4000-8000-000000000001"
    );
}

#[tokio::test]
async fn gemini_key_query_parameter_is_dropped() {
    let (route, transport, _) = route(Provider::Gemini, Script::Answer(StatusCode::OK, "{}"));
    route.handle(request(&event("gemini"))).await;
    let seen = transport.seen.lock().unwrap();
    assert_eq!(
        seen[0].path.as_str(),
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent"
    );
    assert_eq!(seen[0].query, "alt=sse");
}

#[tokio::test]
async fn missing_authorizer_context_fails_closed_with_401() {
    let mut ev = event("azure-openai");
    ev["requestContext"]
        .as_object_mut()
        .unwrap()
        .remove("authorizer");
    let (route, transport, audit) =
        route(Provider::AzureOpenAi, Script::Answer(StatusCode::OK, "{}"));
    let response = route.handle(request(&ev)).await;
    assert_eq!(response.status(), 401);
    let body = body_json(response).await;
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("req-azure-openai-0001"));
    assert!(transport.seen.lock().unwrap().is_empty());
    assert_eq!(audit.finals()[0].decision, Decision::Unauthorized);
}

#[tokio::test]
async fn scope_is_checked_again_from_the_context() {
    let mut ev = event("gemini");
    ev["requestContext"]["authorizer"]["scopes"] = "text:openai".into();
    let (route, transport, audit) = route(Provider::Gemini, Script::Answer(StatusCode::OK, "{}"));
    let response = route.handle(request(&ev)).await;
    assert_eq!(response.status(), 403);
    let body = body_json(response).await;
    assert_eq!(body["error"]["status"], "PERMISSION_DENIED");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("text:gemini"));
    assert!(transport.seen.lock().unwrap().is_empty());
    assert_eq!(
        audit.events().len(),
        1,
        "a refused request is never accepted: its final is its only record"
    );
    let events = audit.finals();
    assert_eq!(
        (events[0].decision, events[0].status),
        (Decision::Deny, 403)
    );
    assert!(events[0].reason.as_deref().unwrap().contains("text:gemini"));
}

#[tokio::test]
async fn event_for_another_route_is_refused() {
    let (route, transport, audit) = route(Provider::Gemini, Script::Answer(StatusCode::OK, "{}"));
    let response = route.handle(request(&event("azure-openai"))).await;
    assert_eq!(response.status(), 404);
    assert!(transport.seen.lock().unwrap().is_empty());
    assert_eq!(audit.finals()[0].status, 404);
}

#[tokio::test]
async fn oversized_body_is_refused_before_relaying() {
    let (small, transport, audit) = route_with_limit(
        Provider::AzureOpenAi,
        Script::Answer(StatusCode::OK, "{}"),
        10,
    );
    let response = small.handle(request(&event("azure-openai"))).await;
    assert_eq!(response.status(), 413);
    assert!(transport.seen.lock().unwrap().is_empty());
    let events = audit.finals();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].decision, Decision::Error);
    assert_eq!(events[0].status, 413);
}

#[tokio::test]
async fn transport_failures_map_to_provider_shaped_502_and_504() {
    let (route_timeout, _, timeout_audit) = route(
        Provider::BedrockClaude,
        Script::Fail(|| TransportError::Timeout(100)),
    );
    let response = route_timeout
        .handle(request(&event("bedrock-claude")))
        .await;
    assert_eq!(response.status(), 504);
    assert_eq!(
        response.headers()["x-amzn-errortype"],
        "ModelTimeoutException"
    );
    let body = body_json(response).await;
    assert!(body["message"].as_str().unwrap().contains("did not answer"));
    let events = timeout_audit.finals();
    assert_eq!(
        (events[0].decision, events[0].status),
        (Decision::Error, 504)
    );
    assert!(events[0].latency.upstream_ms.is_some());

    let (route_down, _, _) = route(
        Provider::AzureOpenAi,
        Script::Fail(|| TransportError::Connect("connection refused to 10.0.0.5".into())),
    );
    let response = route_down.handle(request(&event("azure-openai"))).await;
    assert_eq!(response.status(), 502);
    let body = body_json(response).await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        !message.contains("10.0.0.5"),
        "internal addresses stay in the logs: {message}"
    );
}

/// The review's concrete bypasses, through the route handler: each is refused in the provider's error
/// shape, audited, and nothing reaches the transport.
#[tokio::test]
async fn path_confusion_and_method_confusion_are_refused() {
    let cases: [(Provider, &str, &str, u16); 9] = [
        (
            Provider::AzureOpenAi,
            "POST",
            "/azure-openai/openai/deployments/gpt-4o-mini/chat/completions/x\\..\\..\\..\\audio\\speech",
            400,
        ),
        (
            Provider::AzureOpenAi,
            "POST",
            "/azure-openai/openai/deployments/gpt-4o-mini/chat/completions/x%5c..%5c..%5c..%5cfiles",
            400,
        ),
        (
            Provider::Gemini,
            "POST",
            "/gemini/v1beta/models/gemini-2.0-flash:generateContent.\\..\\veo-3.0-generate-001:predictLongRunning",
            400,
        ),
        (
            Provider::Gemini,
            "GET",
            "/gemini/v1beta/models/gemini-2.0-flash:generateContent.\\..\\..\\..\\v1beta\\files",
            400,
        ),
        (
            Provider::AzureOpenAi,
            "GET",
            "/azure-openai/openai/v1/chat/completions",
            403,
        ),
        (
            Provider::AzureOpenAi,
            "GET",
            "/azure-openai/openai/v1/chat/completions/chatcmpl-1/messages",
            403,
        ),
        (
            Provider::AzureOpenAi,
            "DELETE",
            "/azure-openai/openai/v1/responses/resp_1",
            403,
        ),
        (
            Provider::BedrockClaude,
            "POST",
            "/bedrock-claude/model/anthropic.claude-3-5-sonnet-20241022-v2:0%2F..%2Famazon.nova-pro-v1:0/invoke",
            404,
        ),
        (
            Provider::AzureOpenAi,
            "POST",
            "/azure-openai/openai/deployments/gpt-4o-mini/chat/completions/extra",
            404,
        ),
    ];
    for (provider, method, path, status) in cases {
        let mut ev = event(provider.route_prefix());
        ev["httpMethod"] = method.into();
        ev["path"] = path.into();
        ev["requestContext"]["authorizer"]["scopes"] = "all".into();
        let (route, transport, audit) = route(provider, Script::Answer(StatusCode::OK, "{}"));
        let response = route.handle(ev).await;
        assert_eq!(response.status(), status, "{method} {path}");
        assert!(
            transport.seen.lock().unwrap().is_empty(),
            "{path} reached upstream"
        );
        let events = audit.finals();
        assert_eq!(events.len(), 1, "{path} audited once");
        assert_eq!(events[0].status, status);
        if provider == Provider::BedrockClaude {
            assert!(response.headers().contains_key("x-amzn-errortype"));
        } else {
            let body = body_json(response).await;
            assert!(body["error"]["message"].is_string(), "{body}");
        }
    }
}

#[tokio::test]
async fn a_model_named_in_the_body_is_the_one_checked() {
    let policy = gateway_shared::scopes::DEFAULT_POLICY_JSON.replace(
        "\"models\": {",
        "\"models\": {\"azure-openai\": [\"gpt-4o-mini\"],",
    );
    let transport = Arc::new(FakeTransport {
        seen: Mutex::new(Vec::new()),
        script: Script::Answer(StatusCode::OK, "{}"),
    });
    let audit = Arc::new(RecordingSink::default());
    let route = Route::new(
        Provider::AzureOpenAi,
        Arc::new(Policy::from_json(&policy).unwrap()),
        (transport.clone(), "fake"),
        1024 * 1024,
        audit.clone(),
    );
    let send = |body: &str| {
        let mut ev = event("azure-openai");
        ev["path"] = "/azure-openai/openai/v1/chat/completions".into();
        ev["body"] = body.into();
        ev["isBase64Encoded"] = false.into();
        ev
    };
    for (body, status) in [
        (r#"{"model":"gpt-4o-mini","messages":[]}"#, 200),
        (r#"{"model":"o1-pro","messages":[]}"#, 403),
        (r#"{"messages":[]}"#, 403),
        (r#"{"model":"gpt-4o-mini","model":"o1-pro"}"#, 400),
        (r#"{"model":7}"#, 400),
        ("not json", 403),
    ] {
        let response = route.handle(send(body)).await;
        assert_eq!(response.status(), status, "{body}");
    }
    assert_eq!(
        transport.seen.lock().unwrap().len(),
        1,
        "only the allowed model went upstream"
    );
    tokio::task::yield_now().await;
    let events = audit.finals();
    assert_eq!(events.len(), 6, "every request audited");
    assert!(events
        .iter()
        .any(|e| e.status == 403 && e.model.as_deref() == Some("o1-pro")));
}

#[tokio::test]
async fn headers_the_http_adapter_cannot_parse_get_a_provider_shaped_400() {
    // `X-Forwarded-Proto: a b` made the stock adapter panic while building a URL; here it is only a
    // header (dropped before relaying). A header value with a NUL is a clear 400.
    let (route, transport, audit) =
        route(Provider::AzureOpenAi, Script::Answer(StatusCode::OK, "{}"));
    let mut odd = event("azure-openai");
    odd["headers"]["X-Forwarded-Proto"] = "a b".into();
    odd["multiValueHeaders"]["X-Forwarded-Proto"] = serde_json::json!(["a b"]);
    odd["headers"]["Host"] = "a b".into();
    odd["multiValueHeaders"]["Host"] = serde_json::json!(["a b"]);
    assert_eq!(route.handle(odd).await.status(), 200);
    let mut bad = event("azure-openai");
    bad["multiValueHeaders"]["x-evil"] = serde_json::json!(["a\u{0}b"]);
    let response = route.handle(bad).await;
    assert_eq!(response.status(), 400);
    let body = body_json(response).await;
    assert_eq!(body["error"]["code"], "BadRequest");
    assert_eq!(transport.seen.lock().unwrap().len(), 1);
    tokio::task::yield_now().await;
    let events = audit.finals();
    assert_eq!(events.len(), 2);
    assert!(events.iter().any(|e| e.status == 400));
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[ -~]{0,20}",
            ".{0,12}",
            prop::sample::select(vec![
                "a b".to_string(),
                "\u{0}".to_string(),
                "x\r\ny: z".to_string(),
                "https".to_string(),
                "\u{ff0e}\u{ff0e}".to_string(),
                "%2e%2e".to_string(),
                "".to_string(),
            ]),
        ]
    }

    fn event_strategy() -> impl Strategy<Value = Value> {
        (
            prop::collection::vec((text(), text()), 0..6),
            prop::collection::vec((text(), text()), 0..4),
            prop::option::of(text()),
            prop::option::of(prop::sample::select(vec![
                "GET", "POST", "DELETE", "X Y", "",
            ])),
            any::<bool>(),
            prop::option::of(".{0,40}"),
        )
            .prop_map(|(headers, query, path, method, base64, body)| {
                let mut ev = event("azure-openai");
                for (name, value) in headers {
                    ev["headers"][name.as_str()] = value.clone().into();
                    ev["multiValueHeaders"][name.as_str()] = serde_json::json!([value]);
                }
                for (name, value) in query {
                    ev["queryStringParameters"][name.as_str()] = value.clone().into();
                    ev["multiValueQueryStringParameters"][name.as_str()] =
                        serde_json::json!([value]);
                }
                if let Some(path) = path {
                    ev["path"] = format!("/azure-openai/{path}").into();
                }
                if let Some(method) = method {
                    ev["httpMethod"] = method.into();
                }
                ev["isBase64Encoded"] = base64.into();
                if let Some(body) = body {
                    ev["body"] = body.into();
                }
                ev
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        /// Whatever a client puts in the event, the route answers (never panics), in the provider's
        /// shape when it refuses, audits the request, and relays only what classifies.
        #[test]
        fn any_event_gets_an_answer_and_an_audit_event(ev in event_strategy()) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let (route, transport, audit) = route(Provider::AzureOpenAi, Script::Answer(StatusCode::OK, "{}"));
            let status = runtime.block_on(async {
                let response = route.handle(ev).await;
                let status = response.status();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                if status != StatusCode::OK {
                    let json: Value = serde_json::from_slice(&body).unwrap();
                    assert!(json["error"]["message"].is_string());
                }
                tokio::task::yield_now().await;
                status
            });
            prop_assert!([200, 400, 403, 404, 413].contains(&status.as_u16()), "{}", status);
            prop_assert_eq!(audit.finals().len(), 1);
            for sent in transport.seen.lock().unwrap().iter() {
                prop_assert!(Provider::AzureOpenAi.classify(&sent.method, sent.path.as_str()).is_ok());
            }
        }
    }
}

#[tokio::test]
async fn a_stream_still_running_at_the_deadline_is_ended_in_the_providers_framing_and_audited() {
    let first: &[u8] = b"data: {\"choices\":[{\"delta\":{\"content\":\"hel\"}}]}\n\n";
    let (route, _, audit) = route(
        Provider::AzureOpenAi,
        Script::EndlessStream("text/event-stream", first),
    );
    let route = route.with_stream_cut_margin(std::time::Duration::from_millis(100));
    let deadline = std::time::SystemTime::now() + std::time::Duration::from_millis(400);
    let response = route
        .handle_until(request(&event("azure-openai")), Some(deadline))
        .await;
    let started = std::time::Instant::now();
    let bytes = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        response.into_body().collect(),
    )
    .await
    .expect("the stream must end before the deadline")
    .unwrap()
    .to_bytes();
    assert!(started.elapsed() < std::time::Duration::from_millis(1000));
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("data: {\"choices\""), "{text}");
    let last = text.trim_end().rsplit("\n\n").next().unwrap();
    let error: Value = serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("time limit"));
    let finals = audit.finals();
    assert_eq!(finals.len(), 1);
    assert_eq!(finals[0].outcome, Outcome::DeadlineCut);
    assert_eq!(finals[0].bytes_out, bytes.len() as u64);
}

#[tokio::test]
async fn bedrock_streams_end_with_an_exception_frame_boto3_can_read() {
    let first = gateway_shared::eventstream::encode_frame(
        &[(":event-type", "messageStart"), (":message-type", "event")],
        br#"{"role":"assistant"}"#,
    );
    let first: &'static [u8] = Box::leak(first.into_boxed_slice());
    let (route, _, audit) = route(
        Provider::BedrockClaude,
        Script::EndlessStream("application/vnd.amazon.eventstream", first),
    );
    let route = route.with_stream_cut_margin(std::time::Duration::ZERO);
    let deadline = std::time::SystemTime::now() + std::time::Duration::from_millis(200);
    let response = route
        .handle_until(request(&event("bedrock-claude")), Some(deadline))
        .await;
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let frames: Vec<_> = gateway_shared::eventstream::FrameDecoder::default()
        .feed(&bytes)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(frames.len(), 2, "the first event, then the exception");
    let message: Value = serde_json::from_slice(&frames[1].payload).unwrap();
    assert!(message["message"].as_str().unwrap().contains("time limit"));
    assert_eq!(audit.finals()[0].outcome, Outcome::DeadlineCut);
}

#[tokio::test]
async fn without_a_deadline_nothing_is_cut() {
    let (route, _, _) = route(
        Provider::AzureOpenAi,
        Script::EndlessStream("text/event-stream", b"data: {}\n\n"),
    );
    let response = route.handle(request(&event("azure-openai"))).await;
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(300), body.frame())
            .await
            .is_err(),
        "the stream keeps running"
    );
}
