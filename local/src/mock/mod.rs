//! Bundled mock upstream providers for the local stack.
//!
//! Each provider (Azure OpenAI, Bedrock, Gemini) is served by its own router on
//! its own port. Every router exposes `GET /_mock/requests` (recorded requests
//! as JSON) and `DELETE /_mock/requests` (clear, 204); everything else goes to
//! a fallback handler that records the request, checks the injected upstream
//! credentials and answers in the provider's wire format.
//!
//! Fault injection by model / deployment name: `mock-error-500`,
//! `mock-error-429`, `mock-hang` (sleep 120 s first), `mock-slow` (300 ms
//! between stream chunks, 300 ms delay for non-stream responses).

mod azure_openai;
mod bedrock;
mod eventstream;
mod gemini;
mod recorder;

pub use recorder::{RecordedRequest, Recorder};

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::StreamExt;
use gateway_shared::Provider;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use serde_json::Value;

/// Name used in reply texts: `Mock <name> reply to: ...`.
fn display_name(provider: Provider) -> &'static str {
    match provider {
        Provider::AzureOpenAi => "Azure OpenAI",
        Provider::BedrockClaude => "Bedrock",
        Provider::Gemini => "Gemini",
    }
}

#[derive(Clone)]
pub struct MockState {
    pub provider: Provider,
    pub recorder: Recorder,
    /// Azure/Gemini upstream API key; `None` for Bedrock (or to skip the check).
    pub expected_key: Option<String>,
}

/// Full router for one provider, including `/_mock/requests`.
pub fn router(state: MockState) -> Router {
    Router::new()
        .route("/_mock/requests", get(list_requests).delete(clear_requests))
        .fallback(handle)
        .with_state(state)
}

async fn list_requests(State(state): State<MockState>) -> Response {
    match serde_json::to_vec(&state.recorder.all()) {
        Ok(body) => with_headers(
            StatusCode::OK,
            &[("content-type", "application/json".to_string())],
            Body::from(body),
        ),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}

async fn clear_requests(State(state): State<MockState>) -> StatusCode {
    state.recorder.clear();
    StatusCode::NO_CONTENT
}

async fn handle(
    State(state): State<MockState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state
        .recorder
        .record(RecordedRequest::new(&method, &uri, &headers, &body));
    tracing::debug!(
        provider = ?state.provider,
        %method,
        path = uri.path(),
        "mock provider request"
    );
    let req = MockRequest {
        method,
        path: uri.path().to_string(),
        query: uri.query().unwrap_or("").to_string(),
        headers,
        body,
    };
    match state.provider {
        Provider::AzureOpenAi => azure_openai::handle(&state, req).await,
        Provider::BedrockClaude => bedrock::handle(&state, req).await,
        Provider::Gemini => gemini::handle(&state, req).await,
    }
}

/// A request as seen by a provider handler.
pub(crate) struct MockRequest {
    pub method: Method,
    /// Raw (still percent-encoded) path.
    pub path: String,
    /// Raw query string.
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl MockRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// First value of a query parameter (decoded), if present.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .find_map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(&key.replace('+', " ")) == name)
                    .then(|| percent_decode(&value.replace('+', " ")))
            })
    }

    /// Parses the body as JSON; an empty body is treated as `{}`.
    pub fn json(&self) -> Result<Value, serde_json::Error> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Object(serde_json::Map::new()));
        }
        serde_json::from_slice(&self.body)
    }
}

/// Fault requested through the model / deployment name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    None,
    Error500,
    Error429,
    Hang,
    Slow,
}

impl Fault {
    pub fn for_model(model: &str) -> Self {
        if model.contains("mock-error-500") {
            Fault::Error500
        } else if model.contains("mock-error-429") {
            Fault::Error429
        } else if model.contains("mock-hang") {
            Fault::Hang
        } else if model.contains("mock-slow") {
            Fault::Slow
        } else {
            Fault::None
        }
    }

    pub fn is_slow(self) -> bool {
        self == Fault::Slow
    }

    /// Sleeps before answering for `mock-hang`.
    pub async fn pre_delay(self) {
        if self == Fault::Hang {
            tokio::time::sleep(HANG_DELAY).await;
        }
    }

    /// Delay applied to non-streaming responses for `mock-slow`.
    pub async fn non_stream_delay(self) {
        if self == Fault::Slow {
            tokio::time::sleep(SLOW_DELAY).await;
        }
    }
}

pub(crate) const HANG_DELAY: Duration = Duration::from_secs(120);
pub(crate) const SLOW_DELAY: Duration = Duration::from_millis(300);

/// `Mock <provider> reply to: <text>`.
pub(crate) fn reply_text(provider: Provider, user_text: &str) -> String {
    format!(
        "Mock {} reply to: {}",
        display_name(provider),
        user_text.trim()
    )
}

/// Whitespace-separated words (may be 0).
pub(crate) fn word_count(text: &str) -> u64 {
    u64::try_from(text.split_whitespace().count()).unwrap_or(u64::MAX)
}

/// Input token count: words in the request text, at least 1.
pub(crate) fn input_tokens(text: &str) -> u64 {
    word_count(text).max(1)
}

/// Splits text into chunks of one word plus its trailing whitespace, so the
/// concatenation of the chunks is exactly the input. Leading whitespace is
/// attached to the first chunk.
pub(crate) fn word_chunks(text: &str) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut current = String::new();
    let mut seen_word = false;
    let mut prev_ws = false;
    for ch in text.chars() {
        let ws = ch.is_whitespace();
        if !ws && prev_ws && seen_word {
            chunks.push(std::mem::take(&mut current));
        }
        if !ws {
            seen_word = true;
        }
        current.push(ch);
        prev_ws = ws;
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// Text of a message's content: a plain string, or the concatenation of the
/// `text` fields of its parts / blocks (parts without text are skipped).
pub(crate) fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|part| match part {
                Value::String(s) => Some(s.as_str()),
                other => other.get("text").and_then(Value::as_str),
            })
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// The last message whose role is `user`, or the last message at all.
pub(crate) fn last_user_message(messages: Option<&Value>) -> Option<&Value> {
    let messages = messages?.as_array()?;
    messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .or_else(|| messages.last())
}

/// Decodes `%XX` escapes; invalid escapes are kept verbatim.
pub(crate) fn percent_decode(input: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex);
            let lo = bytes.get(i + 2).copied().and_then(hex);
            if let (Some(hi), Some(lo)) = (hi, lo) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub(crate) fn unix_secs() -> u64 {
    recorder::unix_ms() / 1000
}

/// Builds a response with the given status, headers (lowercase names) and body.
pub(crate) fn with_headers(
    status: StatusCode,
    headers: &[(&'static str, String)],
    body: Body,
) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let map = response.headers_mut();
    for (name, value) in headers {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(name), Ok(value)) => {
                map.append(name, value);
            }
            _ => tracing::warn!(header = *name, "mock: dropping invalid response header"),
        }
    }
    response
}

/// JSON response (`application/json`) with extra headers.
pub(crate) fn json_response(
    status: StatusCode,
    body: &Value,
    extra_headers: &[(&'static str, String)],
) -> Response {
    json_response_with_type(status, body, "application/json", extra_headers)
}

pub(crate) fn json_response_with_type(
    status: StatusCode,
    body: &Value,
    content_type: &str,
    extra_headers: &[(&'static str, String)],
) -> Response {
    let mut headers = Vec::with_capacity(extra_headers.len() + 1);
    headers.push((CONTENT_TYPE.as_str(), content_type.to_string()));
    headers.extend(extra_headers.iter().cloned());
    with_headers(status, &headers, Body::from(body.to_string()))
}

/// A body that yields `chunks` one by one as the client reads, waiting
/// [`SLOW_DELAY`] between chunks when `slow`.
pub(crate) fn streaming_body(chunks: Vec<Bytes>, slow: bool) -> Body {
    let stream = futures_util::stream::iter(chunks.into_iter().enumerate()).then(
        move |(i, chunk)| async move {
            if slow && i > 0 {
                tokio::time::sleep(SLOW_DELAY).await;
            }
            Ok::<Bytes, Infallible>(chunk)
        },
    );
    Body::from_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn word_chunks_round_trip() {
        let text = "Mock Gemini reply to:  hello\nworld ";
        let chunks = word_chunks(text);
        assert_eq!(chunks.concat(), text);
        assert_eq!(chunks.len(), 6);
        assert_eq!(chunks[0], "Mock ");
        assert_eq!(chunks[4], "hello\n");
        assert_eq!(chunks[5], "world ");
        assert!(word_chunks("").is_empty());
        assert_eq!(word_chunks("  a b"), vec!["  a ", "b"]);
    }

    #[test]
    fn counts_and_reply() {
        assert_eq!(input_tokens(""), 1);
        assert_eq!(input_tokens("hello there  world"), 3);
        let reply = reply_text(Provider::AzureOpenAi, "hi there");
        assert_eq!(reply, "Mock Azure OpenAI reply to: hi there");
        assert_eq!(word_count(&reply), 7);
        assert!(word_chunks(&reply_text(Provider::BedrockClaude, "")).len() >= 3);
    }

    #[test]
    fn decoding_helpers() {
        assert_eq!(
            percent_decode("anthropic.claude-3-5-sonnet-20240620-v1%3A0"),
            "anthropic.claude-3-5-sonnet-20240620-v1:0"
        );
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz%2f"), "%zz/");
        let req = MockRequest {
            method: Method::POST,
            path: "/".into(),
            query: "alt=sse&api-version=2024-10-21&x".into(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
        };
        assert_eq!(req.query_param("alt").as_deref(), Some("sse"));
        assert_eq!(
            req.query_param("api-version").as_deref(),
            Some("2024-10-21")
        );
        assert_eq!(req.query_param("x").as_deref(), Some(""));
        assert_eq!(req.query_param("key"), None);
        assert_eq!(req.json().unwrap(), json!({}));
    }

    #[test]
    fn content_and_last_user() {
        let messages = json!([
            {"role": "system", "content": "sys"},
            {"role": "user", "content": [{"type": "text", "text": "a "}, {"type": "image"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": "x"}
        ]);
        let last = last_user_message(Some(&messages)).unwrap();
        assert_eq!(content_text(&last["content"]), "a b");
        assert_eq!(Fault::for_model("gpt-mock-error-429"), Fault::Error429);
        assert_eq!(Fault::for_model("x.mock-slow:0"), Fault::Slow);
        assert_eq!(Fault::for_model("gpt-4o"), Fault::None);
    }

    #[tokio::test]
    async fn control_endpoints_are_not_recorded() {
        let recorder = Recorder::new();
        let base = test_support::spawn(MockState {
            provider: Provider::Gemini,
            recorder: recorder.clone(),
            expected_key: Some("k".into()),
        })
        .await;
        let client = test_support::client();
        let resp = client
            .post(format!("{base}/v1beta/models/m:countTokens"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        let resp = client
            .get(format!("{base}/_mock/requests"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let listed: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        assert_eq!(listed.as_array().unwrap().len(), 1);
        assert_eq!(listed[0]["path"], "/v1beta/models/m:countTokens");
        assert_eq!(listed[0]["method"], "POST");
        let resp = client
            .delete(format!("{base}/_mock/requests"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        assert!(recorder.all().is_empty());
    }
}

/// Helpers for the provider tests: serve a mock router on an ephemeral port.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    pub async fn spawn(state: MockState) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, router(state)).await.unwrap();
        });
        format!("http://{addr}")
    }

    pub fn client() -> reqwest::Client {
        reqwest::Client::builder().no_proxy().build().unwrap()
    }
}
