//! The API Gateway REST proxy event as the route functions read it: one parser for every
//! client-controlled field (method, path, query, headers, body encoding), which never panics.
//!
//! The event arrives as JSON. The stock adapter (`lambda_http`) rebuilds a URL from the client's `Host`
//! and `X-Forwarded-Proto` headers and unwraps the result, so one bad header value ends the execution
//! environment before any handler (or audit) runs. Here every field is read leniently into
//! [`RequestMeta`] first (what the audit needs even for a bad request), then checked into a
//! [`ProxyRequest`]; anything malformed is a [`GatewayError`] the route answers in the provider's shape.

use std::collections::HashMap;

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::Deserialize;
use serde_json::Value;

use crate::error::{ErrorKind, GatewayError};

/// What is known of a request before its client-controlled parts are checked.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    /// API Gateway's request id (`unknown` if the event has none).
    pub request_id: String,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    /// `requestContext.authorizer`: what the authorizer returned (strings, numbers, booleans).
    pub authorizer: HashMap<String, Value>,
}

/// A request whose method, path, query, headers and body were read without loss or guesswork.
#[derive(Debug, Clone)]
pub struct ProxyRequest {
    pub method: Method,
    /// The path as the client sent it (with the route prefix, without the stage).
    pub path: String,
    /// Decoded query parameters, every value of every name, in the event's order.
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// The fields of the event the gateway reads; everything optional, so shape errors become our errors.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawEvent {
    http_method: Option<String>,
    path: Option<String>,
    headers: Option<SingleValueMap>,
    multi_value_headers: Option<MultiValueMap>,
    query_string_parameters: Option<SingleValueMap>,
    multi_value_query_string_parameters: Option<MultiValueMap>,
    request_context: Option<Value>,
    body: Option<String>,
    is_base64_encoded: Option<bool>,
}

fn bad(message: impl Into<String>) -> GatewayError {
    GatewayError::new(ErrorKind::BadRequest, message)
}

/// Reads an event. The meta is returned in every case (the audit event of a refused request needs it).
pub fn parse_event(event: Value) -> (RequestMeta, Result<ProxyRequest, GatewayError>) {
    let raw: RawEvent = match serde_json::from_value(event) {
        Ok(raw) => raw,
        Err(e) => {
            let meta = RequestMeta {
                request_id: "unknown".into(),
                ..RequestMeta::default()
            };
            return (
                meta,
                Err(bad(format!("the request event is malformed: {e}"))),
            );
        }
    };
    let meta = read_meta(raw.request_context.as_ref());
    (meta, read_request(raw))
}

fn read_meta(context: Option<&Value>) -> RequestMeta {
    let text = |value: Option<&Value>| value.and_then(Value::as_str).map(str::to_string);
    let context = context.cloned().unwrap_or(Value::Null);
    let identity = context.get("identity");
    RequestMeta {
        request_id: text(context.get("requestId")).unwrap_or_else(|| "unknown".into()),
        source_ip: text(identity.and_then(|i| i.get("sourceIp"))),
        user_agent: text(identity.and_then(|i| i.get("userAgent"))),
        authorizer: context
            .get("authorizer")
            .and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
    }
}

fn read_request(raw: RawEvent) -> Result<ProxyRequest, GatewayError> {
    let method = raw
        .http_method
        .as_deref()
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .ok_or_else(|| bad("the request method is missing or malformed"))?;
    let path = raw
        .path
        .filter(|p| p.starts_with('/'))
        .ok_or_else(|| bad("the request path is missing or malformed"))?;

    let mut headers = HeaderMap::new();
    let header_pairs = name_value_pairs(raw.multi_value_headers, raw.headers);
    for (name, value) in header_pairs {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| bad("a request header name is malformed"))?;
        let value = HeaderValue::from_str(&value).map_err(|_| {
            bad(format!(
                "the value of request header '{header}' is malformed"
            ))
        })?;
        headers.append(header, value);
    }

    let query = name_value_pairs(
        raw.multi_value_query_string_parameters,
        raw.query_string_parameters,
    );

    let body = match (raw.body, raw.is_base64_encoded.unwrap_or(false)) {
        (None, _) => Bytes::new(),
        (Some(text), false) => Bytes::from(text),
        (Some(text), true) => base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map(Bytes::from)
            .map_err(|_| bad("the request body is not valid base64"))?,
    };
    Ok(ProxyRequest {
        method,
        path,
        query,
        headers,
        body,
    })
}

type MultiValueMap = HashMap<String, Option<Vec<Option<String>>>>;
type SingleValueMap = HashMap<String, Option<String>>;

/// Every (name, value) of a header or query map pair. API Gateway sends both maps; the multi-value
/// one is the complete one when present.
fn name_value_pairs(
    multi: Option<MultiValueMap>,
    single: Option<SingleValueMap>,
) -> Vec<(String, String)> {
    match multi {
        Some(multi) if !multi.is_empty() => multi
            .into_iter()
            .flat_map(|(name, values)| {
                values
                    .unwrap_or_default()
                    .into_iter()
                    .flatten()
                    .map(move |value| (name.clone(), value))
            })
            .collect(),
        _ => single
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(name, value)| value.map(|v| (name, v)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_a_rest_proxy_event() {
        let (meta, request) = parse_event(json!({
            "httpMethod": "POST",
            "path": "/gemini/v1beta/models/m:generateContent",
            "headers": {"x-goog-api-key": "t"},
            "multiValueHeaders": {"x-goog-api-key": ["t"], "accept": ["a", "b"]},
            "multiValueQueryStringParameters": {"alt": ["sse"]},
            "requestContext": {"requestId": "r1", "identity": {"sourceIp": "10.0.0.1"},
                               "authorizer": {"sub": "s"}},
            "body": "e30=",
            "isBase64Encoded": true,
        }));
        let request = request.unwrap();
        assert_eq!(meta.request_id, "r1");
        assert_eq!(meta.source_ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(meta.authorizer["sub"], "s");
        assert_eq!(request.method, Method::POST);
        assert_eq!(request.headers.get_all("accept").iter().count(), 2);
        assert_eq!(request.query, vec![("alt".to_string(), "sse".to_string())]);
        assert_eq!(&request.body[..], b"{}");
    }

    #[test]
    fn malformed_parts_are_errors_not_panics() {
        for event in [
            json!({"httpMethod": "POST", "path": "/x", "headers": {"X-Forwarded-Proto": "a b", "host": "a b"}}),
            json!({"httpMethod": "POST", "path": "/x", "headers": {"bad header": "v"}}),
            json!({"httpMethod": "POST", "path": "/x", "headers": {"x": "line\nbreak"}}),
            json!({"httpMethod": "PO ST", "path": "/x"}),
            json!({"httpMethod": "POST", "path": "x"}),
            json!({"httpMethod": "POST", "path": "/x", "body": "!!", "isBase64Encoded": true}),
            json!({"httpMethod": 7}),
            json!([]),
        ] {
            let (meta, _) = parse_event(event.clone());
            assert!(!meta.request_id.is_empty(), "{event}");
        }
        let (_, ok) = parse_event(
            json!({"httpMethod": "POST", "path": "/x", "headers": {"X-Forwarded-Proto": "a b"}}),
        );
        assert!(ok.is_ok(), "an odd X-Forwarded-Proto is only a header");
        let (_, bad_value) =
            parse_event(json!({"httpMethod": "POST", "path": "/x", "headers": {"x": "a\u{0}b"}}));
        assert_eq!(bad_value.unwrap_err().kind, ErrorKind::BadRequest);
    }
}
