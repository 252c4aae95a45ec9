//! The messages of the queue transport.
//!
//! A route puts one [`RequestEnvelope`] on its provider's request queue; the dispatcher answers with
//! [`ReplyMessage`]s on the reply queue the envelope names. A reply carries the status and headers (first
//! message), body bytes, an end mark or an error, in any combination: a short answer is one message, a
//! stream is a few messages of batched chunks. Standard queues may reorder, so every reply has a sequence
//! number, and an attempt id so a retried dispatch never mixes with a failed one. Bodies larger than an
//! SQS message go through S3 ([`Payload::S3`]).

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::providers::Provider;

pub const ENVELOPE_VERSION: u32 = 1;

/// Headers as JSON-friendly pairs (values that are not visible ASCII are dropped).
pub fn header_pairs(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter_map(|(k, v)| {
            v.to_str()
                .ok()
                .map(|v| (k.as_str().to_string(), v.to_string()))
        })
        .collect()
}

/// The inverse of [`header_pairs`]; invalid names or values are dropped.
pub fn header_map(pairs: &[(String, String)]) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    for (name, value) in pairs {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::try_from(name.as_str()),
            http::HeaderValue::from_str(value),
        ) {
            headers.append(name, value);
        }
    }
    headers
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Payload {
    Inline { base64: String },
    S3 { bucket: String, key: String },
}

impl Payload {
    pub fn inline(bytes: &[u8]) -> Payload {
        Payload::Inline {
            base64: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }

    pub fn decode_inline(&self) -> Option<Vec<u8>> {
        match self {
            Payload::Inline { base64 } => base64::engine::general_purpose::STANDARD
                .decode(base64)
                .ok(),
            Payload::S3 { .. } => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestEnvelope {
    pub version: u32,
    pub request_id: String,
    pub provider: Provider,
    /// Subject of the authorized principal, for the dispatcher's logs and dead-letter audit.
    pub principal: Option<String>,
    pub method: String,
    pub path: String,
    pub query: String,
    /// Already stripped of client credentials by the route.
    pub headers: Vec<(String, String)>,
    pub body: Payload,
    /// URL of the waiting environment's reply queue.
    pub reply_to: String,
    /// Unix milliseconds after which nobody waits for the answer any more.
    pub deadline_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyHead {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyErrorKind {
    Timeout,
    Connect,
    Credential,
    Request,
    /// The path would not have been relayed as classified; nothing was sent.
    Path,
    /// The upstream body broke off after the head was sent.
    Stream,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyError {
    pub kind: ReplyErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyMessage {
    pub request_id: String,
    pub attempt: String,
    pub seq: u64,
    pub head: Option<ReplyHead>,
    pub data: Option<Payload>,
    pub end: bool,
    pub error: Option<ReplyError>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_with_tagged_payloads() {
        let envelope = RequestEnvelope {
            version: ENVELOPE_VERSION,
            request_id: "r1".into(),
            provider: Provider::Gemini,
            principal: Some("sub".into()),
            method: "POST".into(),
            path: "/v1beta/models/m:generateContent".into(),
            query: "alt=sse".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: Payload::inline(b"{}"),
            reply_to: "https://sqs/reply".into(),
            deadline_ms: 1,
        };
        let json = serde_json::to_value(&envelope).unwrap();
        assert_eq!(json["provider"], "gemini");
        assert_eq!(json["body"]["kind"], "inline");
        let back: RequestEnvelope = serde_json::from_value(json).unwrap();
        assert_eq!(back.body.decode_inline().unwrap(), b"{}");
        assert_eq!(back, envelope);
    }
}
