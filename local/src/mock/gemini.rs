//! Mock Gemini API (generativelanguage.googleapis.com):
//! `/{version}/models/{model}:generateContent`, `:streamGenerateContent`
//! (`alt=sse` for SSE, otherwise a JSON array) and `:countTokens`.

use axum::response::Response;
use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{json, Value};

use super::{
    content_text, input_tokens, json_response_with_type, last_user_message, new_uuid,
    percent_decode, reply_text, streaming_body, with_headers, word_chunks, word_count, Fault,
    MockRequest, MockState,
};
use gateway_shared::Provider;

const PROVIDER: Provider = Provider::Gemini;
const JSON_CONTENT_TYPE: &str = "application/json; charset=UTF-8";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operation {
    Generate,
    StreamGenerate,
    CountTokens,
}

pub(super) async fn handle(state: &MockState, req: MockRequest) -> Response {
    if let Some(expected) = state.expected_key.as_deref() {
        match req.header("x-goog-api-key") {
            Some(key) if key == expected => {}
            Some(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    "API key not valid. Please pass a valid API key.",
                )
            }
            None => {
                return error(
                    StatusCode::FORBIDDEN,
                    "PERMISSION_DENIED",
                    "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
                )
            }
        }
    }

    let Some((operation, model)) = route(&req) else {
        return error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("Requested entity was not found: {}", req.path),
        );
    };

    let fault = Fault::for_model(&model);
    match fault {
        Fault::Error500 => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting (mock)",
            )
        }
        Fault::Error429 => {
            return error(
                StatusCode::TOO_MANY_REQUESTS,
                "RESOURCE_EXHAUSTED",
                "Resource has been exhausted (e.g. check quota). (mock)",
            )
        }
        _ => fault.pre_delay().await,
    }

    let body = match req.json() {
        Ok(body) => body,
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                &format!("Invalid JSON payload received. {err}"),
            )
        }
    };

    match operation {
        Operation::Generate => {
            fault.non_stream_delay().await;
            generate(&body, &model)
        }
        Operation::StreamGenerate => {
            let sse = req.query_param("alt").as_deref() == Some("sse");
            stream_generate(&body, &model, fault, sse)
        }
        Operation::CountTokens => {
            fault.non_stream_delay().await;
            count_tokens(&body)
        }
    }
}

/// Parses `/{version}/models/{model}:{method}`; the `:` may be percent-encoded.
fn route(req: &MockRequest) -> Option<(Operation, String)> {
    if req.method != Method::POST {
        return None;
    }
    let path = req.path.strip_prefix('/')?;
    let (version, rest) = path.split_once('/')?;
    if version.is_empty() {
        return None;
    }
    let rest = percent_decode(rest.strip_prefix("models/")?);
    let (model, method) = rest.rsplit_once(':')?;
    if model.is_empty() || model.contains('/') {
        return None;
    }
    let operation = match method {
        "generateContent" => Operation::Generate,
        "streamGenerateContent" => Operation::StreamGenerate,
        "countTokens" => Operation::CountTokens,
        _ => return None,
    };
    Some((operation, model.to_string()))
}

fn error(status: StatusCode, google_status: &str, message: &str) -> Response {
    json_response_with_type(
        status,
        &json!({"error": {
            "code": status.as_u16(),
            "message": message,
            "status": google_status,
        }}),
        JSON_CONTENT_TYPE,
        &[],
    )
}

/// Concatenated `parts[].text` of the last user content.
fn user_text(contents: Option<&Value>) -> String {
    last_user_message(contents)
        .and_then(|c| c.get("parts"))
        .map(content_text)
        .unwrap_or_default()
}

fn usage(prompt: u64, candidates: u64) -> Value {
    json!({
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates,
        "totalTokenCount": prompt + candidates,
    })
}

fn response_json(text: &str, finished: bool, usage: Value, model: &str, id: &str) -> Value {
    let mut candidate = json!({
        "content": {"parts": [{"text": text}], "role": "model"},
        "index": 0,
    });
    if finished {
        candidate["finishReason"] = json!("STOP");
    }
    json!({
        "candidates": [candidate],
        "usageMetadata": usage,
        "modelVersion": model,
        "responseId": id,
    })
}

fn generate(body: &Value, model: &str) -> Response {
    let text = user_text(body.get("contents"));
    let reply = reply_text(PROVIDER, &text);
    let usage = usage(input_tokens(&text), word_count(&reply));
    let id = format!("mock-{}", new_uuid());
    json_response_with_type(
        StatusCode::OK,
        &response_json(&reply, true, usage, model, &id),
        JSON_CONTENT_TYPE,
        &[],
    )
}

fn stream_generate(body: &Value, model: &str, fault: Fault, sse: bool) -> Response {
    let text = user_text(body.get("contents"));
    let prompt_tokens = input_tokens(&text);
    let reply = reply_text(PROVIDER, &text);
    let id = format!("mock-{}", new_uuid());
    let chunks = word_chunks(&reply);
    let last = chunks.len().saturating_sub(1);
    let mut so_far = String::new();
    let events: Vec<Value> = chunks
        .iter()
        .enumerate()
        .map(|(i, word)| {
            so_far.push_str(word);
            let usage = usage(prompt_tokens, word_count(&so_far));
            response_json(word, i == last, usage, model, &id)
        })
        .collect();

    if !sse {
        // Without alt=sse the API returns one JSON array of responses.
        return json_response_with_type(
            StatusCode::OK,
            &Value::Array(events),
            JSON_CONTENT_TYPE,
            &[],
        );
    }
    let frames: Vec<Bytes> = events
        .iter()
        .map(|event| Bytes::from(format!("data: {event}\r\n\r\n")))
        .collect();
    with_headers(
        StatusCode::OK,
        &[
            ("content-type", "text/event-stream".to_string()),
            ("cache-control", "no-cache".to_string()),
        ],
        streaming_body(frames, fault.is_slow()),
    )
}

fn count_tokens(body: &Value) -> Response {
    let contents = body
        .get("contents")
        .or_else(|| body.pointer("/generateContentRequest/contents"));
    json_response_with_type(
        StatusCode::OK,
        &json!({"totalTokens": input_tokens(&user_text(contents))}),
        JSON_CONTENT_TYPE,
        &[],
    )
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{client, spawn};
    use super::super::Recorder;
    use super::*;

    async fn base() -> String {
        spawn(MockState {
            provider: Provider::Gemini,
            recorder: Recorder::new(),
            expected_key: Some("g-key".into()),
        })
        .await
    }

    const BODY: &str =
        r#"{"contents":[{"role":"user","parts":[{"text":"hello "},{"text":"world"}]}]}"#;

    #[tokio::test]
    async fn generate_and_auth() {
        let base = base().await;
        let url = format!("{base}/v1beta/models/gemini-2.0-flash:generateContent");
        let resp = client().post(&url).body(BODY).send().await.unwrap();
        assert_eq!(resp.status(), 403);
        let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        assert_eq!(v["error"]["status"], "PERMISSION_DENIED");

        let resp = client()
            .post(&url)
            .header("x-goog-api-key", "g-key")
            .body(BODY)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        assert_eq!(
            v["candidates"][0]["content"]["parts"][0]["text"],
            "Mock Gemini reply to: hello world"
        );
        assert_eq!(v["candidates"][0]["finishReason"], "STOP");
        assert_eq!(v["usageMetadata"]["promptTokenCount"], 2);
        assert_eq!(v["usageMetadata"]["candidatesTokenCount"], 6);
        assert_eq!(v["modelVersion"], "gemini-2.0-flash");

        // Encoded colon and error injection.
        let resp = client()
            .post(format!(
                "{base}/v1/models/x-mock-error-500%3AgenerateContent"
            ))
            .header("x-goog-api-key", "g-key")
            .body(BODY)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 500);
        let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        assert_eq!(v["error"]["status"], "INTERNAL");
        assert_eq!(v["error"]["code"], 500);

        let resp = client()
            .post(format!("{base}/v1beta/models/m:embedContent"))
            .header("x-goog-api-key", "g-key")
            .body(BODY)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404);

        let resp = client()
            .post(format!("{base}/v1beta/models/m:countTokens"))
            .header("x-goog-api-key", "g-key")
            .body(BODY)
            .send()
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        assert_eq!(v, json!({"totalTokens": 2}));
    }

    #[tokio::test]
    async fn stream_sse() {
        let base = base().await;
        let resp = client()
            .post(format!(
                "{base}/v1beta/models/gemini-mock-slow:streamGenerateContent?alt=sse"
            ))
            .header("x-goog-api-key", "g-key")
            .body(BODY)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let started = std::time::Instant::now();
        let text = String::from_utf8(resp.bytes().await.unwrap().to_vec()).unwrap();
        let events: Vec<Value> = text
            .split("\r\n\r\n")
            .filter(|e| !e.is_empty())
            .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
            .collect();
        assert_eq!(events.len(), 6);
        // mock-slow: 300 ms between chunks.
        assert!(started.elapsed() >= std::time::Duration::from_millis(1200));
        let joined: String = events
            .iter()
            .map(|e| {
                e["candidates"][0]["content"]["parts"][0]["text"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert_eq!(joined, "Mock Gemini reply to: hello world");
        let last = &events[5];
        assert_eq!(last["candidates"][0]["finishReason"], "STOP");
        assert_eq!(last["usageMetadata"]["candidatesTokenCount"], 6);
        assert_eq!(last["usageMetadata"]["totalTokenCount"], 8);
        assert!(events[0]["candidates"][0].get("finishReason").is_none());
        assert_eq!(events[0]["usageMetadata"]["promptTokenCount"], 2);
    }
}
