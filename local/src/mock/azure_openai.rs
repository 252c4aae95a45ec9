//! Mock Azure OpenAI: chat completions (plain and SSE) and embeddings.
//!
//! Paths:
//! - `/openai/deployments/{deployment}/chat/completions?api-version=...`
//! - `/openai/deployments/{deployment}/embeddings?api-version=...`
//! - `/openai/v1/chat/completions`, `/openai/v1/embeddings` (model from body)

use axum::response::Response;
use base64::Engine as _;
use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{json, Value};

use super::recorder::sha256;
use super::{
    content_text, input_tokens, json_response, last_user_message, new_uuid, percent_decode,
    reply_text, streaming_body, unix_secs, with_headers, word_chunks, word_count, Fault,
    MockRequest, MockState,
};
use gateway_shared::Provider;

const PROVIDER: Provider = Provider::AzureOpenAi;
/// Number of floats in each mock embedding vector.
const EMBEDDING_DIMS: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operation {
    Chat,
    Embeddings,
}

pub(super) async fn handle(state: &MockState, req: MockRequest) -> Response {
    if let Some(expected) = state.expected_key.as_deref() {
        if req.header("api-key") != Some(expected) {
            return error(
                StatusCode::UNAUTHORIZED,
                "Access denied due to invalid subscription key or wrong API endpoint.",
            );
        }
    }

    let Some((operation, path_model)) = route(&req) else {
        return error(StatusCode::NOT_FOUND, "Resource not found");
    };

    let body = match req.json() {
        Ok(body) => body,
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("We could not parse the JSON body of your request: {err}"),
            )
        }
    };
    let model = path_model
        .or_else(|| {
            body.get("model")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| "gpt-mock".to_string());

    let fault = Fault::for_model(&model);
    match fault {
        Fault::Error500 => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The server had an error while processing your request. (mock)",
            )
        }
        Fault::Error429 => {
            return error(
                StatusCode::TOO_MANY_REQUESTS,
                "Requests to the ChatCompletions_Create Operation have exceeded the call rate limit. (mock)",
            )
        }
        _ => fault.pre_delay().await,
    }

    match operation {
        Operation::Chat => chat(&body, &model, fault).await,
        Operation::Embeddings => {
            fault.non_stream_delay().await;
            embeddings(&body, &model)
        }
    }
}

/// Returns the operation and, for deployment paths, the deployment name.
fn route(req: &MockRequest) -> Option<(Operation, Option<String>)> {
    if req.method != Method::POST {
        return None;
    }
    if let Some(rest) = req.path.strip_prefix("/openai/deployments/") {
        let (deployment, op) = rest.split_once('/')?;
        if deployment.is_empty() || req.query_param("api-version").is_none() {
            return None;
        }
        let operation = parse_operation(op)?;
        return Some((operation, Some(percent_decode(deployment))));
    }
    let op = req.path.strip_prefix("/openai/v1/")?;
    Some((parse_operation(op)?, None))
}

fn parse_operation(op: &str) -> Option<Operation> {
    match op.trim_end_matches('/') {
        "chat/completions" => Some(Operation::Chat),
        "embeddings" => Some(Operation::Embeddings),
        _ => None,
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    json_response(
        status,
        &json!({"error": {"code": status.as_u16().to_string(), "message": message}}),
        &request_id_headers(),
    )
}

fn request_id_headers() -> Vec<(&'static str, String)> {
    let id = new_uuid();
    vec![("apim-request-id", id.clone()), ("x-request-id", id)]
}

async fn chat(body: &Value, model: &str, fault: Fault) -> Response {
    let user_text = last_user_message(body.get("messages"))
        .and_then(|m| m.get("content"))
        .map(content_text)
        .unwrap_or_default();
    let reply = reply_text(PROVIDER, &user_text);
    let prompt_tokens = input_tokens(&user_text);
    let completion_tokens = word_count(&reply);
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    });
    let id = format!("chatcmpl-mock-{}", new_uuid());
    let created = unix_secs();

    if body.get("stream").and_then(Value::as_bool) != Some(true) {
        fault.non_stream_delay().await;
        return json_response(
            StatusCode::OK,
            &json!({
                "id": id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": reply},
                    "finish_reason": "stop",
                    "logprobs": null,
                }],
                "usage": usage,
            }),
            &request_id_headers(),
        );
    }

    let include_usage = body
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        == Some(true);
    let chunk = |choices: Value| {
        json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
        })
    };
    let mut events: Vec<Value> = word_chunks(&reply)
        .into_iter()
        .map(|word| {
            chunk(json!([{
                "index": 0,
                "delta": {"role": "assistant", "content": word},
                "finish_reason": null,
            }]))
        })
        .collect();
    events.push(chunk(json!([{
        "index": 0,
        "delta": {},
        "finish_reason": "stop",
    }])));
    if include_usage {
        let mut last = chunk(json!([]));
        last["usage"] = usage;
        events.push(last);
    }
    let mut frames: Vec<Bytes> = events
        .iter()
        .map(|event| Bytes::from(format!("data: {event}\n\n")))
        .collect();
    frames.push(Bytes::from_static(b"data: [DONE]\n\n"));

    let mut headers = request_id_headers();
    headers.push(("content-type", "text/event-stream".to_string()));
    headers.push(("cache-control", "no-cache".to_string()));
    with_headers(
        StatusCode::OK,
        &headers,
        streaming_body(frames, fault.is_slow()),
    )
}

/// Inputs of an embeddings request: a string, a list of strings, a token
/// array, or a list of token arrays. Token arrays are rendered as text.
fn embedding_inputs(input: Option<&Value>) -> Vec<String> {
    fn one(value: &Value) -> String {
        match value {
            Value::String(s) => s.clone(),
            Value::Array(tokens) => tokens
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" "),
            other => other.to_string(),
        }
    }
    match input {
        None | Some(Value::Null) => vec![String::new()],
        Some(Value::Array(items)) if items.iter().all(Value::is_number) && !items.is_empty() => {
            vec![one(&Value::Array(items.clone()))]
        }
        Some(Value::Array(items)) => items.iter().map(one).collect(),
        Some(other) => vec![one(other)],
    }
}

/// Deterministic pseudo-embedding in [-1, 1] derived from the text's SHA-256.
fn embedding_vector(text: &str) -> [f32; EMBEDDING_DIMS] {
    let digest = sha256(text.as_bytes());
    let mut out = [0f32; EMBEDDING_DIMS];
    for (slot, bytes) in out.iter_mut().zip(digest.chunks_exact(4)) {
        let raw = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let unit = f64::from(raw) / f64::from(u32::MAX);
        // Round to a few decimals so JSON and base64 forms match closely.
        let value = ((unit * 2.0 - 1.0) * 10_000.0).round() / 10_000.0;
        *slot = value as f32;
    }
    out
}

fn embeddings(body: &Value, model: &str) -> Response {
    let base64_format = body.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let inputs = embedding_inputs(body.get("input"));
    let mut tokens = 0u64;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            tokens += input_tokens(text);
            let vector = embedding_vector(text);
            let embedding = if base64_format {
                let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }),
        &request_id_headers(),
    )
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{client, spawn};
    use super::super::Recorder;
    use super::*;

    async fn base() -> String {
        spawn(MockState {
            provider: Provider::AzureOpenAi,
            recorder: Recorder::new(),
            expected_key: Some("azure-key".into()),
        })
        .await
    }

    #[tokio::test]
    async fn chat_non_stream_and_auth() {
        let base = base().await;
        let url =
            format!("{base}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21");
        let body = r#"{"messages":[{"role":"user","content":"hello there"}]}"#;

        let resp = client().post(&url).body(body).send().await.unwrap();
        assert_eq!(resp.status(), 401);
        let err: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        assert_eq!(err["error"]["code"], "401");

        let resp = client()
            .post(&url)
            .header("api-key", "azure-key")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().contains_key("apim-request-id"));
        let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        assert_eq!(
            v["choices"][0]["message"]["content"],
            "Mock Azure OpenAI reply to: hello there"
        );
        assert_eq!(v["model"], "gpt-4o");
        assert_eq!(v["usage"]["prompt_tokens"], 2);
        assert_eq!(v["usage"]["completion_tokens"], 7);
        assert_eq!(v["usage"]["total_tokens"], 9);

        // Missing api-version -> 404.
        let resp = client()
            .post(format!("{base}/openai/deployments/gpt-4o/chat/completions"))
            .header("api-key", "azure-key")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404);

        let resp = client()
            .post(format!(
                "{base}/openai/deployments/x-mock-error-429/chat/completions?api-version=1"
            ))
            .header("api-key", "azure-key")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 429);
        let err: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        assert_eq!(err["error"]["code"], "429");
    }

    #[tokio::test]
    async fn chat_stream_with_usage() {
        let base = base().await;
        let resp = client()
            .post(format!("{base}/openai/v1/chat/completions"))
            .header("api-key", "azure-key")
            .body(r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":[{"type":"text","text":"one two three"}]}]}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let text = String::from_utf8(resp.bytes().await.unwrap().to_vec()).unwrap();
        let events: Vec<&str> = text
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| e.strip_prefix("data: ").unwrap())
            .collect();
        assert_eq!(*events.last().unwrap(), "[DONE]");
        let parsed: Vec<Value> = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        let content: String = parsed
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(content, "Mock Azure OpenAI reply to: one two three");
        let n = parsed.len();
        assert!(n >= 5);
        assert_eq!(parsed[n - 2]["choices"][0]["finish_reason"], "stop");
        assert_eq!(parsed[n - 1]["choices"], json!([]));
        assert_eq!(parsed[n - 1]["usage"]["prompt_tokens"], 3);
        assert_eq!(parsed[n - 1]["usage"]["completion_tokens"], 8);
    }

    #[tokio::test]
    async fn embeddings_float_and_base64() {
        let base = base().await;
        let url = format!("{base}/openai/deployments/emb/embeddings?api-version=2024-10-21");
        let resp = client()
            .post(&url)
            .header("api-key", "azure-key")
            .body(r#"{"input":["a b","c"],"encoding_format":"base64"}"#)
            .send()
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        assert_eq!(v["data"].as_array().unwrap().len(), 2);
        assert_eq!(v["usage"]["prompt_tokens"], 3);
        let raw = base64::engine::general_purpose::STANDARD
            .decode(v["data"][0]["embedding"].as_str().unwrap())
            .unwrap();
        assert_eq!(raw.len(), 32);
        let first = f32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);

        let resp = client()
            .post(&url)
            .header("api-key", "azure-key")
            .body(r#"{"input":"a b"}"#)
            .send()
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        let floats = v["data"][0]["embedding"].as_array().unwrap();
        assert_eq!(floats.len(), 8);
        assert!((floats[0].as_f64().unwrap() - f64::from(first)).abs() < 1e-6);
        assert_eq!(v["model"], "emb");
    }
}
