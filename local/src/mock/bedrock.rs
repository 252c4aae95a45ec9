//! Mock Amazon Bedrock runtime: InvokeModel (Anthropic messages body),
//! InvokeModelWithResponseStream, Converse and ConverseStream.
//!
//! Paths: `/model/{modelId}/{invoke|invoke-with-response-stream|converse|converse-stream}`;
//! the model id may be percent-encoded (`...-v1%3A0`).

use axum::response::Response;
use base64::Engine as _;
use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{json, Value};

use super::eventstream::event_frame;
use super::{
    content_text, input_tokens, json_response, last_user_message, new_uuid, percent_decode,
    reply_text, streaming_body, with_headers, word_chunks, word_count, Fault, MockRequest,
    MockState, SLOW_DELAY,
};
use gateway_shared::Provider;

const PROVIDER: Provider = Provider::BedrockClaude;
const EVENTSTREAM_CONTENT_TYPE: &str = "application/vnd.amazon.eventstream";
const LATENCY_MS: u64 = 12;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operation {
    Invoke,
    InvokeStream,
    Converse,
    ConverseStream,
}

pub(super) async fn handle(_state: &MockState, req: MockRequest) -> Response {
    let signed = req
        .header("authorization")
        .is_some_and(|v| v.starts_with("AWS4-HMAC-SHA256 Credential="))
        && req.headers.contains_key("x-amz-date");
    if !signed {
        return error(
            StatusCode::FORBIDDEN,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        );
    }

    let Some((operation, model)) = route(&req) else {
        return error(
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            "Unknown operation.",
        );
    };

    let fault = Fault::for_model(&model);
    match fault {
        Fault::Error500 => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerException",
                "The system encountered an unexpected error during processing. Try your request again. (mock)",
            )
        }
        Fault::Error429 => {
            return error(
                StatusCode::TOO_MANY_REQUESTS,
                "ThrottlingException",
                "Too many requests, please wait before trying again. (mock)",
            )
        }
        _ => fault.pre_delay().await,
    }

    let body = match req.json() {
        Ok(body) => body,
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                "ValidationException",
                &format!("Malformed input request: {err}"),
            )
        }
    };

    match operation {
        Operation::Invoke => {
            fault.non_stream_delay().await;
            invoke(&body)
        }
        Operation::InvokeStream => invoke_stream(&body, fault),
        Operation::Converse => {
            fault.non_stream_delay().await;
            converse(&body)
        }
        Operation::ConverseStream => converse_stream(&body, fault),
    }
}

/// Returns the operation and the decoded model id.
fn route(req: &MockRequest) -> Option<(Operation, String)> {
    if req.method != Method::POST {
        return None;
    }
    let rest = req.path.strip_prefix("/model/")?;
    let (model, action) = rest.rsplit_once('/')?;
    if model.is_empty() {
        return None;
    }
    let operation = match action {
        "invoke" => Operation::Invoke,
        "invoke-with-response-stream" => Operation::InvokeStream,
        "converse" => Operation::Converse,
        "converse-stream" => Operation::ConverseStream,
        _ => return None,
    };
    Some((operation, percent_decode(model)))
}

fn error(status: StatusCode, error_type: &str, message: &str) -> Response {
    json_response(
        status,
        &json!({"message": message}),
        &[
            ("x-amzn-errortype", error_type.to_string()),
            ("x-amzn-requestid", new_uuid()),
        ],
    )
}

/// Text of the last user message of an Anthropic messages body (falls back to
/// a legacy `prompt` / Titan `inputText` field).
fn invoke_user_text(body: &Value) -> String {
    if let Some(message) = last_user_message(body.get("messages")) {
        return message.get("content").map(content_text).unwrap_or_default();
    }
    ["prompt", "inputText"]
        .iter()
        .find_map(|key| body.get(*key).and_then(Value::as_str))
        .unwrap_or_default()
        .to_string()
}

/// Text of the last user message of a Converse body (`content[].text`).
fn converse_user_text(body: &Value) -> String {
    last_user_message(body.get("messages"))
        .and_then(|m| m.get("content"))
        .map(content_text)
        .unwrap_or_default()
}

struct Completion {
    reply: String,
    input_tokens: u64,
    output_tokens: u64,
    cache_write: u64,
    cache_read: u64,
}

impl Completion {
    fn new(user_text: &str) -> Self {
        let reply = reply_text(PROVIDER, user_text);
        let output_tokens = word_count(&reply);
        Self {
            reply,
            input_tokens: input_tokens(user_text),
            output_tokens,
            cache_write: 0,
            cache_read: 0,
        }
    }

    /// An Anthropic messages body: prompt caching as Anthropic reports it.
    fn of_messages(body: &Value) -> Self {
        let (cache_write, cache_read) = prompt_cache(body);
        Self {
            cache_write,
            cache_read,
            ..Self::new(&invoke_user_text(body))
        }
    }

    /// Anthropic's usage object: cache reads and writes beside `input_tokens`, which leaves them out.
    fn anthropic_usage(&self, output_tokens: u64) -> Value {
        json!({
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_write,
            "cache_read_input_tokens": self.cache_read,
            "output_tokens": output_tokens,
        })
    }
}

/// Prompt prefixes cached so far (one process-wide cache, as a provider's is per account).
static PROMPT_CACHE: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// `system` blocks up to the last one marked `cache_control` form the cached prefix: the first request
/// with a prefix writes it to the cache, later ones read it. Returns (written, read) tokens.
fn prompt_cache(body: &Value) -> (u64, u64) {
    let Some(system) = body.get("system").and_then(Value::as_array) else {
        return (0, 0);
    };
    let (mut prefix, mut cached) = (String::new(), None);
    for block in system {
        prefix.push_str(
            block
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        );
        if block.get("cache_control").is_some() {
            cached = Some(prefix.clone());
        }
    }
    let Some(cached) = cached else {
        return (0, 0);
    };
    let tokens = input_tokens(&cached);
    let mut cache = PROMPT_CACHE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if cache.contains(&cached) {
        (0, tokens)
    } else {
        cache.push(cached);
        (tokens, 0)
    }
}

fn invoke(body: &Value) -> Response {
    let c = Completion::of_messages(body);
    json_response(
        StatusCode::OK,
        &json!({
            "id": format!("msg_mock_{}", new_uuid()),
            "type": "message",
            "role": "assistant",
            "model": "claude-mock",
            "content": [{"type": "text", "text": c.reply}],
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": c.anthropic_usage(c.output_tokens),
        }),
        &[
            ("x-amzn-requestid", new_uuid()),
            (
                "x-amzn-bedrock-input-token-count",
                c.input_tokens.to_string(),
            ),
            (
                "x-amzn-bedrock-output-token-count",
                c.output_tokens.to_string(),
            ),
            ("x-amzn-bedrock-invocation-latency", LATENCY_MS.to_string()),
        ],
    )
}

fn stream_response(frames: Vec<Bytes>, fault: Fault, extra: &[(&'static str, String)]) -> Response {
    let mut headers = vec![
        ("content-type", EVENTSTREAM_CONTENT_TYPE.to_string()),
        ("x-amzn-requestid", new_uuid()),
    ];
    headers.extend(extra.iter().cloned());
    with_headers(
        StatusCode::OK,
        &headers,
        streaming_body(frames, fault.is_slow()),
    )
}

/// Wraps an Anthropic stream event as an InvokeModelWithResponseStream chunk.
fn chunk_frame(event: &Value) -> Bytes {
    let encoded = base64::engine::general_purpose::STANDARD.encode(event.to_string());
    event_frame("chunk", json!({"bytes": encoded}).to_string().as_bytes())
}

fn invoke_stream(body: &Value, fault: Fault) -> Response {
    let c = Completion::of_messages(body);
    let chunks = word_chunks(&c.reply);
    let slow_ms = if fault.is_slow() {
        u64::try_from(SLOW_DELAY.as_millis()).unwrap_or(u64::MAX)
    } else {
        0
    };
    let chunk_count = u64::try_from(chunks.len()).unwrap_or(u64::MAX);

    let mut events = vec![
        json!({
            "type": "message_start",
            "message": {
                "id": format!("msg_mock_{}", new_uuid()),
                "type": "message",
                "role": "assistant",
                "model": "claude-mock",
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": c.anthropic_usage(1),
            },
        }),
        json!({
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "text", "text": ""},
        }),
    ];
    events.extend(chunks.into_iter().map(|word| {
        json!({
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": word},
        })
    }));
    events.push(json!({"type": "content_block_stop", "index": 0}));
    events.push(json!({
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": null},
        "usage": {"output_tokens": c.output_tokens},
    }));
    events.push(json!({
        "type": "message_stop",
        "amazon-bedrock-invocationMetrics": {
            "inputTokenCount": c.input_tokens,
            "outputTokenCount": c.output_tokens,
            "cacheReadInputTokenCount": c.cache_read,
            "cacheWriteInputTokenCount": c.cache_write,
            "invocationLatency": LATENCY_MS + slow_ms.saturating_mul(chunk_count + 4),
            "firstByteLatency": LATENCY_MS,
        },
    }));

    let frames = events.iter().map(chunk_frame).collect();
    stream_response(
        frames,
        fault,
        &[(
            "x-amzn-bedrock-content-type",
            "application/json".to_string(),
        )],
    )
}

fn converse_usage(c: &Completion) -> Value {
    json!({
        "inputTokens": c.input_tokens,
        "outputTokens": c.output_tokens,
        "totalTokens": c.input_tokens + c.output_tokens,
    })
}

fn converse(body: &Value) -> Response {
    let c = Completion::new(&converse_user_text(body));
    json_response(
        StatusCode::OK,
        &json!({
            "output": {"message": {"role": "assistant", "content": [{"text": c.reply}]}},
            "stopReason": "end_turn",
            "usage": converse_usage(&c),
            "metrics": {"latencyMs": LATENCY_MS},
        }),
        &[("x-amzn-requestid", new_uuid())],
    )
}

fn converse_stream(body: &Value, fault: Fault) -> Response {
    let c = Completion::new(&converse_user_text(body));
    let mut frames = vec![event_frame(
        "messageStart",
        json!({"role": "assistant"}).to_string().as_bytes(),
    )];
    frames.extend(word_chunks(&c.reply).into_iter().map(|word| {
        event_frame(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": word}})
                .to_string()
                .as_bytes(),
        )
    }));
    frames.push(event_frame(
        "contentBlockStop",
        json!({"contentBlockIndex": 0}).to_string().as_bytes(),
    ));
    frames.push(event_frame(
        "messageStop",
        json!({"stopReason": "end_turn"}).to_string().as_bytes(),
    ));
    frames.push(event_frame(
        "metadata",
        json!({"usage": converse_usage(&c), "metrics": {"latencyMs": LATENCY_MS}})
            .to_string()
            .as_bytes(),
    ));
    stream_response(frames, fault, &[])
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{client, spawn};
    use super::super::Recorder;
    use super::*;

    const AUTH: &str = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240101/us-east-1/bedrock/aws4_request, SignedHeaders=host;x-amz-date, Signature=abc";

    /// Splits an event-stream body into (event-type, payload) pairs.
    fn parse_frames(mut data: &[u8]) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let total = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
            let headers_len = u32::from_be_bytes([data[4], data[5], data[6], data[7]]) as usize;
            let frame = &data[..total];
            assert_eq!(
                u32::from_be_bytes([
                    frame[total - 4],
                    frame[total - 3],
                    frame[total - 2],
                    frame[total - 1]
                ]),
                crc32fast::hash(&frame[..total - 4])
            );
            let headers = &frame[12..12 + headers_len];
            // First header is :event-type.
            let name_len = headers[0] as usize;
            assert_eq!(&headers[1..1 + name_len], b":event-type");
            let vlen = u16::from_be_bytes([headers[2 + name_len], headers[3 + name_len]]) as usize;
            let value =
                String::from_utf8(headers[4 + name_len..4 + name_len + vlen].to_vec()).unwrap();
            let payload: Value =
                serde_json::from_slice(&frame[12 + headers_len..total - 4]).unwrap();
            out.push((value, payload));
            data = &data[total..];
        }
        out
    }

    async fn base() -> (String, Recorder) {
        let recorder = Recorder::new();
        let base = spawn(MockState {
            provider: Provider::BedrockClaude,
            recorder: recorder.clone(),
            expected_key: None,
        })
        .await;
        (base, recorder)
    }

    #[tokio::test]
    async fn invoke_and_auth() {
        let (base, recorder) = base().await;
        let url = format!("{base}/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke");
        let body = r#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":10,"messages":[{"role":"user","content":[{"type":"text","text":"hi there"}]}]}"#;

        let resp = client().post(&url).body(body).send().await.unwrap();
        assert_eq!(resp.status(), 403);
        assert_eq!(
            resp.headers()["x-amzn-errortype"],
            "UnrecognizedClientException"
        );
        let recorded = recorder.all();
        assert_eq!(recorded.len(), 1);
        assert_eq!(
            recorded[0].path,
            "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke"
        );

        let resp = client()
            .post(&url)
            .header("authorization", AUTH)
            .header("x-amz-date", "20240101T000000Z")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-amzn-bedrock-input-token-count"], "2");
        let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        assert_eq!(v["content"][0]["text"], "Mock Bedrock reply to: hi there");
        assert_eq!(v["usage"]["output_tokens"], 6);

        let resp = client()
            .post(format!("{base}/model/x.mock-error-429%3A0/converse"))
            .header("authorization", AUTH)
            .header("x-amz-date", "20240101T000000Z")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()["x-amzn-errortype"], "ThrottlingException");
    }

    #[tokio::test]
    async fn invoke_stream_events() {
        let (base, _) = base().await;
        let resp = client()
            .post(format!(
                "{base}/model/anthropic.claude-v2/invoke-with-response-stream"
            ))
            .header("authorization", AUTH)
            .header("x-amz-date", "20240101T000000Z")
            .body(r#"{"messages":[{"role":"user","content":"a b c"}]}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()["content-type"], EVENTSTREAM_CONTENT_TYPE);
        let frames = parse_frames(&resp.bytes().await.unwrap());
        let events: Vec<Value> = frames
            .iter()
            .map(|(event_type, payload)| {
                assert_eq!(event_type, "chunk");
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(payload["bytes"].as_str().unwrap())
                    .unwrap();
                serde_json::from_slice(&raw).unwrap()
            })
            .collect();
        let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(types[0], "message_start");
        assert_eq!(types[1], "content_block_start");
        assert_eq!(types[types.len() - 1], "message_stop");
        assert_eq!(types[types.len() - 2], "message_delta");
        assert_eq!(types[types.len() - 3], "content_block_stop");
        let text: String = events
            .iter()
            .filter_map(|e| e["delta"]["text"].as_str())
            .collect();
        assert_eq!(text, "Mock Bedrock reply to: a b c");
        assert_eq!(events[0]["message"]["usage"]["input_tokens"], 3);
        let metrics = &events[events.len() - 1]["amazon-bedrock-invocationMetrics"];
        assert_eq!(metrics["outputTokenCount"], 7);
    }

    #[tokio::test]
    async fn converse_and_stream() {
        let (base, _) = base().await;
        let body = r#"{"messages":[{"role":"user","content":[{"text":"x y"}]}]}"#;
        let resp = client()
            .post(format!("{base}/model/amazon.nova-lite-v1%3A0/converse"))
            .header("authorization", AUTH)
            .header("x-amz-date", "20240101T000000Z")
            .body(body)
            .send()
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        assert_eq!(
            v["output"]["message"]["content"][0]["text"],
            "Mock Bedrock reply to: x y"
        );
        assert_eq!(v["usage"]["totalTokens"], 8);

        let resp = client()
            .post(format!(
                "{base}/model/amazon.nova-lite-v1%3A0/converse-stream"
            ))
            .header("authorization", AUTH)
            .header("x-amz-date", "20240101T000000Z")
            .body(body)
            .send()
            .await
            .unwrap();
        let frames = parse_frames(&resp.bytes().await.unwrap());
        let types: Vec<&str> = frames.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(types[0], "messageStart");
        assert_eq!(
            &types[types.len() - 3..],
            &["contentBlockStop", "messageStop", "metadata"]
        );
        assert!(types.iter().filter(|t| **t == "contentBlockDelta").count() >= 3);
        assert_eq!(frames[frames.len() - 1].1["usage"]["inputTokens"], 2);
    }
}
