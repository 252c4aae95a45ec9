//! What the route keeps of request and response bodies for the audit trail: the request's body and the
//! response bytes that passed to the client, each up to the bound, on the final record only.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::sync::Arc;

use base64::Engine;
use gateway_shared::audit::{AuditEvent, Outcome, Record};
use gateway_shared::proxy::Route;
use gateway_shared::scopes::Policy;
use gateway_shared::testing::{RecordingSink, RecordingTransport};
use gateway_shared::Provider;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;

const CHUNKS: [&[u8]; 3] = [
    b"data: {\"a\":1}\n\n",
    b"data: {\"b\":2}\n\n",
    b"data: [DONE]\n\n",
];

fn event() -> Value {
    let path = format!("{}/../events/azure-openai.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn request_body(event: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(event["body"].as_str().unwrap())
        .unwrap()
}

fn route(capture: Option<usize>) -> (Route, Arc<RecordingSink>) {
    let mut headers = HeaderMap::new();
    headers.insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    let transport = Arc::new(RecordingTransport::answering(
        StatusCode::OK,
        headers,
        CHUNKS.to_vec(),
    ));
    let audit = Arc::new(RecordingSink::default());
    let route = Route::new(
        Provider::AzureOpenAi,
        Arc::new(Policy::default_policy().unwrap()),
        (transport, "fake"),
        1024 * 1024,
        audit.clone(),
    )
    .with_body_capture(capture);
    (route, audit)
}

fn one_final(audit: &RecordingSink) -> AuditEvent {
    let finals = audit.finals();
    assert_eq!(finals.len(), 1);
    finals.into_iter().next().unwrap()
}

#[tokio::test]
async fn the_final_record_carries_the_request_and_the_bytes_that_passed() {
    let (route, audit) = route(Some(1024 * 1024));
    let event = event();
    let response = route.handle(event.clone()).await;
    let sent = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(sent, CHUNKS.concat());

    let records = audit.events();
    assert_eq!(records[0].record, Record::Accepted);
    assert!(
        records[0].captured.is_none() && records[0].bodies.is_none(),
        "the accepted record carries no bodies"
    );
    let last = one_final(&audit);
    let captured = last.captured.unwrap();
    let expected = gateway_shared::audit::bodies::CapturedBodies {
        request: gateway_shared::audit::bodies::Capture::of(
            &bytes::Bytes::from(request_body(&event)),
            1024 * 1024,
        ),
        response: gateway_shared::audit::bodies::Capture::of(&sent, 1024 * 1024),
    };
    assert_eq!(captured, expected);
    assert!(!captured.request.truncated() && !captured.response.truncated());
}

#[tokio::test]
async fn a_route_with_bodies_off_records_none() {
    let (route, audit) = route(None);
    let response = route.handle(event()).await;
    response.into_body().collect().await.unwrap();
    assert!(audit.events().iter().all(|e| e.captured.is_none()));
}

#[tokio::test]
async fn the_bound_cuts_each_direction_and_says_so() {
    let (route, audit) = route(Some(20));
    let event = event();
    let response = route.handle(event.clone()).await;
    response.into_body().collect().await.unwrap();
    let captured = one_final(&audit).captured.unwrap();
    assert_eq!(captured.request.len(), 20);
    assert!(captured.request.truncated());
    assert_eq!(captured.response.len(), 20);
    assert!(captured.response.truncated());
    let expected =
        gateway_shared::audit::bodies::Capture::of(&bytes::Bytes::from(CHUNKS.concat()), 20);
    assert_eq!(captured.response, expected);
}

#[tokio::test]
async fn a_client_that_leaves_midway_leaves_the_bytes_that_passed() {
    let (route, audit) = route(Some(1024));
    let mut body = route.handle(event()).await.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    drop(body);
    let last = one_final(&audit);
    assert_eq!(last.outcome, Outcome::ClientClosed);
    let captured = last.captured.unwrap();
    assert_eq!(
        captured.response,
        gateway_shared::audit::bodies::Capture::of(&first, 1024)
    );
}

#[tokio::test]
async fn a_refused_request_keeps_its_body_and_the_gateways_answer() {
    let (route, audit) = route(Some(1024));
    let mut event = event();
    event["path"] = "/azure-openai/openai/deployments/gpt-4o-mini/nothing-here".into();
    let response = route.handle(event.clone()).await;
    assert_eq!(response.status(), 404);
    let sent = response.into_body().collect().await.unwrap().to_bytes();
    let captured = one_final(&audit).captured.unwrap();
    assert_eq!(
        captured.request,
        gateway_shared::audit::bodies::Capture::of(&bytes::Bytes::from(request_body(&event)), 1024)
    );
    assert_eq!(
        captured.response,
        gateway_shared::audit::bodies::Capture::of(&sent, 1024)
    );
}
