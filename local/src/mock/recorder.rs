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

    pub fn record(&self, request: RecordedRequest) {
        self.lock().push(request);
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

/// SHA-256 (FIPS 180-4). Small self-contained implementation so the mocks
/// need no extra crypto dependency; verified against the standard vectors.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];

    let bit_len = u64::try_from(data.len())
        .unwrap_or(u64::MAX)
        .wrapping_mul(8);
    let mut msg = Vec::with_capacity(data.len() + 72);
    msg.extend_from_slice(data);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_be_bytes());

    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (slot, word) in w.iter_mut().zip(block.chunks_exact(4)) {
            *slot = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }

        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for (k, wi) in K.iter().zip(w.iter()) {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(*k)
                .wrapping_add(*wi);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (state, v) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *state = state.wrapping_add(v);
        }
    }

    let mut out = [0u8; 32];
    for (chunk, v) in out.chunks_exact_mut(4).zip(h) {
        chunk.copy_from_slice(&v.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn hex_sha(data: &[u8]) -> String {
        to_hex(&sha256(data))
    }

    #[test]
    fn sha256_standard_vectors() {
        assert_eq!(
            hex_sha(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex_sha(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex_sha(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        assert_eq!(
            hex_sha(&vec![b'a'; 1_000_000]),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
    }

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
