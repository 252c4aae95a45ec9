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
use futures_util::FutureExt;
use gateway_shared::proxy::Route;
use gateway_shared::scopes::Policy;
use gateway_shared::transport::{Transport, TransportError, UpstreamRequest, UpstreamResponse};
use gateway_shared::Provider;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;

enum Script {
    Answer(StatusCode, &'static str),
    Fail(fn() -> TransportError),
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
        };
        async move { result }.boxed()
    }
}

fn route(provider: Provider, script: Script) -> (Route, Arc<FakeTransport>) {
    let transport = Arc::new(FakeTransport {
        seen: Mutex::new(Vec::new()),
        script,
    });
    let policy = Arc::new(Policy::default_policy().unwrap());
    (
        Route::new(provider, policy, transport.clone(), 1024 * 1024),
        transport,
    )
}

fn event(name: &str) -> Value {
    let path = format!("{}/../events/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn request(event: &Value) -> lambda_http::Request {
    lambda_http::request::from_str(&event.to_string()).unwrap()
}

async fn body_json(response: http::Response<gateway_shared::transport::ProxyBody>) -> Value {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn azure_request_is_relayed_without_client_credentials() {
    let (route, transport) = route(
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
        sent.path,
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
}

#[tokio::test]
async fn bedrock_path_keeps_the_clients_encoding() {
    let (route, transport) = route(
        Provider::BedrockClaude,
        Script::Answer(StatusCode::OK, "{}"),
    );
    let response = route.handle(request(&event("bedrock-claude"))).await;
    assert_eq!(response.status(), 200);
    let seen = transport.seen.lock().unwrap();
    assert_eq!(
        seen[0].path,
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
    let (route, transport) = route(Provider::Gemini, Script::Answer(StatusCode::OK, "{}"));
    route.handle(request(&event("gemini"))).await;
    let seen = transport.seen.lock().unwrap();
    assert_eq!(
        seen[0].path,
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
    let (route, transport) = route(Provider::AzureOpenAi, Script::Answer(StatusCode::OK, "{}"));
    let response = route.handle(request(&ev)).await;
    assert_eq!(response.status(), 401);
    let body = body_json(response).await;
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("req-azure-openai-0001"));
    assert!(transport.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn scope_is_checked_again_from_the_context() {
    let mut ev = event("gemini");
    ev["requestContext"]["authorizer"]["scopes"] = "text:openai".into();
    let (route, transport) = route(Provider::Gemini, Script::Answer(StatusCode::OK, "{}"));
    let response = route.handle(request(&ev)).await;
    assert_eq!(response.status(), 403);
    let body = body_json(response).await;
    assert_eq!(body["error"]["status"], "PERMISSION_DENIED");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("text:gemini"));
    assert!(transport.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn event_for_another_route_is_refused() {
    let (route, transport) = route(Provider::Gemini, Script::Answer(StatusCode::OK, "{}"));
    let response = route.handle(request(&event("azure-openai"))).await;
    assert_eq!(response.status(), 404);
    assert!(transport.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn oversized_body_is_refused_before_relaying() {
    let transport = Arc::new(FakeTransport {
        seen: Mutex::new(Vec::new()),
        script: Script::Answer(StatusCode::OK, "{}"),
    });
    let policy = Arc::new(Policy::default_policy().unwrap());
    let small = Route::new(Provider::AzureOpenAi, policy, transport.clone(), 10);
    let response = small.handle(request(&event("azure-openai"))).await;
    assert_eq!(response.status(), 413);
    assert!(transport.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn transport_failures_map_to_provider_shaped_502_and_504() {
    let (route_timeout, _) = route(
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

    let (route_down, _) = route(
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
