//! Request recorder shared by every mock provider.
//!
//! Every request that reaches a mock (except the `/_mock/requests` control
//! endpoints) is recorded before any auth check, so tests can inspect exactly
//! what the gateway sent upstream: raw path, raw query, headers, body digest.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, Method, Uri};
use serde::{Deserialize, Serialize};

/// One request as it arrived on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedRequest {
    pub method: String,
    /// Raw path exactly as received (percent-encoding preserved).
    pub path: String,
    /// Raw query string, `""` when absent.
    pub query: String,
    /// Lowercase header name -> value; repeated headers joined with `", "`.
    pub headers: BTreeMap<String, String>,
    pub body_len: usize,
    /// Lowercase hex SHA-256 of the body.
    pub body_sha256: String,
    /// Unix time in milliseconds when the request was recorded.
    pub received_at_ms: u64,
}

impl RecordedRequest {
    pub fn new(method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Self {
        let mut map: BTreeMap<String, String> = BTreeMap::new();
        for (name, value) in headers {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            map.entry(name.as_str().to_ascii_lowercase())
                .and_modify(|existing| {
                    existing.push_str(", ");
                    existing.push_str(&value);
                })
                .or_insert(value);
        }
        Self {
            method: method.as_str().to_string(),
            path: uri.path().to_string(),
            query: uri.query().unwrap_or("").to_string(),
            headers: map,
            body_len: body.len(),
            body_sha256: to_hex(&sha256(body)),
            received_at_ms: unix_ms(),
        }
    }
}

pub const MAX_RECORDED: usize = 10_000;

/// Cheap-clone, thread-safe list of recorded requests.
#[derive(Clone, Debug)]
pub struct Recorder {
    inner: Arc<Mutex<Vec<RecordedRequest>>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Keeps the newest [`MAX_RECORDED`] requests, so a long-running stack or a benchmark does not grow
    /// without bound.
    pub fn record(&self, request: RecordedRequest) {
        let mut journal = self.lock();
        if journal.len() >= MAX_RECORDED {
            let excess = journal.len() + 1 - MAX_RECORDED;
            journal.drain(..excess);
        }
        journal.push(request);
    }

    /// Snapshot of every recorded request, oldest first.
    pub fn all(&self) -> Vec<RecordedRequest> {
        self.lock().clone()
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<RecordedRequest>> {
        // A panic while holding the lock cannot leave the Vec inconsistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn records_raw_path_query_and_joined_headers() {
        let uri: Uri = "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke?a=1&b=%2F"
            .parse()
            .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("X-Amz-Date", HeaderValue::from_static("20240101T000000Z"));
        headers.append("accept", HeaderValue::from_static("text/plain"));
        headers.append("accept", HeaderValue::from_static("application/json"));
        let req = RecordedRequest::new(&Method::POST, &uri, &headers, b"abc");

        assert_eq!(req.method, "POST");
        assert_eq!(
            req.path,
            "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke"
        );
        assert_eq!(req.query, "a=1&b=%2F");
        assert_eq!(req.headers["x-amz-date"], "20240101T000000Z");
        assert_eq!(req.headers["accept"], "text/plain, application/json");
        assert_eq!(req.body_len, 3);
        assert_eq!(
            req.body_sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(req.received_at_ms > 1_600_000_000_000);

        let no_query = RecordedRequest::new(
            &Method::GET,
            &"/v1beta/models/x:generateContent".parse().unwrap(),
            &HeaderMap::new(),
            b"",
        );
        assert_eq!(no_query.query, "");
        assert_eq!(no_query.path, "/v1beta/models/x:generateContent");
    }

    #[test]
    fn recorder_clones_share_state_and_clear() {
        let recorder = Recorder::default();
        let clone = recorder.clone();
        let uri: Uri = "/a".parse().unwrap();
        recorder.record(RecordedRequest::new(
            &Method::GET,
            &uri,
            &HeaderMap::new(),
            b"",
        ));
        clone.record(RecordedRequest::new(
            &Method::POST,
            &uri,
            &HeaderMap::new(),
            b"x",
        ));
        let all = recorder.all();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].method, "GET");
        assert_eq!(all[1].method, "POST");

        let json = serde_json::to_value(&all).unwrap();
        assert_eq!(json[1]["body_len"], 1);
        assert_eq!(json[0]["query"], "");

        clone.clear();
        assert!(recorder.all().is_empty());
    }
}
