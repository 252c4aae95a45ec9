//! Test helpers: an OIDC issuer with a fresh RSA key, a JWKS endpoint on 127.0.0.1 that counts its
//! fetches, token minting, a recording audit sink, and in-memory fakes of what the transports call
//! ([`transport`]). Compiled for tests only (`test-util` feature for other crates).
#![allow(
    clippy::expect_used,
    reason = "test setup: a failure here is a broken test, not an input error"
)]

pub mod transport;

pub use transport::{FakePayloadStore, FakeQueue, QueueCall, RecordingTransport, StoreCall};

/// A function's settings as a map (what `crate::config::Settings` reads), from name-value pairs.
pub fn settings(pairs: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub struct TestIssuer {
    pub kid: String,
    pub issuer: String,
    encoding: EncodingKey,
    jwk: Value,
}

impl TestIssuer {
    /// A new RSA-2048 key under `kid`, issuing as `issuer`.
    pub fn new(issuer: &str, kid: &str) -> TestIssuer {
        let pair =
            rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("RSA key generation");
        let encoding = EncodingKey::from_rsa_pem(pair.serialize_pem().as_bytes()).expect("RSA PEM");
        let (n, e) = rsa_public_components(pair.public_key_raw());
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        TestIssuer {
            kid: kid.to_string(),
            issuer: issuer.to_string(),
            encoding,
            jwk: json!({"kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid, "n": b64(&n), "e": b64(&e)}),
        }
    }

    pub fn jwk(&self) -> Value {
        self.jwk.clone()
    }

    /// Signs `claims` with RS256 under this issuer's key id.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("signing")
    }

    /// Cognito-shaped access token claims for `client_id`, valid for an hour from now.
    pub fn access_claims(&self, client_id: &str, groups: &[&str]) -> Value {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        json!({
            "iss": self.issuer, "sub": "user-sub-1", "client_id": client_id, "token_use": "access",
            "scope": "aws.cognito.signin.user.admin", "username": "alice", "cognito:groups": groups,
            "iat": now, "exp": now + 3600,
        })
    }
}

/// Serves `GET <anything>` with the JWKS document holding `keys`; returns the URL and a fetch counter.
/// The keys can be swapped through the returned handle to simulate rotation.
pub async fn serve_jwks(
    keys: Vec<Value>,
) -> (String, Arc<AtomicUsize>, Arc<std::sync::Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().expect("addr")
    );
    let fetches = Arc::new(AtomicUsize::new(0));
    let current = Arc::new(std::sync::Mutex::new(keys));
    let (counter, shared) = (fetches.clone(), current.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            counter.fetch_add(1, Ordering::SeqCst);
            let body = json!({"keys": *shared.lock().expect("lock")}).to_string();
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        }
    });
    (url, fetches, current)
}

/// Reads `n` and `e` from a PKCS#1 `RSAPublicKey` (SEQUENCE { INTEGER n, INTEGER e }).
fn rsa_public_components(der: &[u8]) -> (Vec<u8>, Vec<u8>) {
    fn read_tlv(input: &[u8]) -> (u8, &[u8], &[u8]) {
        let tag = input[0];
        let (len, header) = match input[1] {
            short if short < 0x80 => (short as usize, 2),
            long => {
                let count = (long & 0x7f) as usize;
                let len = input[2..2 + count]
                    .iter()
                    .fold(0usize, |acc, b| (acc << 8) | *b as usize);
                (len, 2 + count)
            }
        };
        (tag, &input[header..header + len], &input[header + len..])
    }
    let (_, sequence, _) = read_tlv(der);
    let (_, n, rest) = read_tlv(sequence);
    let (_, e, _) = read_tlv(rest);
    let strip = |v: &[u8]| {
        v.iter()
            .skip_while(|b| **b == 0)
            .copied()
            .collect::<Vec<u8>>()
    };
    (strip(n), strip(e))
}

/// An audit sink that keeps what it is given, for asserting on the events a handler emits.
#[derive(Default)]
pub struct RecordingSink {
    events: std::sync::Mutex<Vec<crate::audit::AuditEvent>>,
}

impl RecordingSink {
    /// Every record, in order.
    pub fn events(&self) -> Vec<crate::audit::AuditEvent> {
        self.events.lock().expect("lock").clone()
    }

    /// The final records only: a request's one outcome each.
    pub fn finals(&self) -> Vec<crate::audit::AuditEvent> {
        self.events()
            .into_iter()
            .filter(|e| e.record == crate::audit::Record::Final)
            .collect()
    }
}

impl crate::audit::AuditSink for RecordingSink {
    fn record(&self, event: crate::audit::AuditEvent) {
        self.events.lock().expect("lock").push(event);
    }
}
