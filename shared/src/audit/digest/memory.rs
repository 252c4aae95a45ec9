//! In-memory fakes of the audit bucket (versioned, with delete markers, as Object Lock keeps it) and of
//! the signing key, for tests of the digest job and the verify command. Test builds only.
#![allow(
    clippy::expect_used,
    reason = "test fakes: a poisoned lock is a broken test, not an input error"
)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::store::{
    AuditStore, DigestSigner, DigestVerifier, Listed, NewObject, PutOutcome, SignError, Signature,
    StoreError, Stored,
};
use super::{sha256, SIGNING_ALGORITHM};

#[derive(Debug, Clone)]
enum Version {
    Object(Stored),
    DeleteMarker { version_id: String },
}

/// A versioned bucket: every put adds a version, a delete adds a delete marker, nothing is ever lost.
#[derive(Debug, Default)]
pub struct MemoryStore {
    keys: Mutex<BTreeMap<String, Vec<Version>>>,
    next_version: AtomicUsize,
    /// Fail every call whose key or prefix contains this text (to test error paths).
    pub fail_on: Mutex<Option<String>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore::default()
    }

    fn new_version(&self) -> String {
        format!("v{}", self.next_version.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn check(&self, operation: &'static str, key: &str) -> Result<(), StoreError> {
        match self.fail_on.lock().expect("lock").as_deref() {
            Some(text) if key.contains(text) => Err(StoreError {
                operation,
                key: key.to_string(),
                message: "injected failure".into(),
            }),
            _ => Ok(()),
        }
    }

    /// Writes a new version (as PutObject does, overwriting under versioning); returns its version id.
    pub fn put(&self, key: &str, bytes: Vec<u8>, metadata: BTreeMap<String, String>) -> String {
        let version_id = self.new_version();
        self.keys
            .lock()
            .expect("lock")
            .entry(key.to_string())
            .or_default()
            .push(Version::Object(Stored {
                bytes,
                version_id: Some(version_id.clone()),
                metadata,
            }));
        version_id
    }

    /// Adds a delete marker (DeleteObject without a version id).
    pub fn delete(&self, key: &str) {
        let version_id = self.new_version();
        self.keys
            .lock()
            .expect("lock")
            .entry(key.to_string())
            .or_default()
            .push(Version::DeleteMarker { version_id });
    }

    /// The current version, if any.
    pub fn current(&self, key: &str) -> Option<Stored> {
        match self.keys.lock().expect("lock").get(key)?.last()? {
            Version::Object(stored) => Some(stored.clone()),
            Version::DeleteMarker { .. } => None,
        }
    }

    /// Keys with a current object under `prefix`.
    pub fn current_keys(&self, prefix: &str) -> Vec<String> {
        self.keys
            .lock()
            .expect("lock")
            .iter()
            .filter(|(key, versions)| {
                key.starts_with(prefix) && matches!(versions.last(), Some(Version::Object(_)))
            })
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// How many versions (delete markers included) a key has.
    pub fn version_count(&self, key: &str) -> usize {
        self.keys.lock().expect("lock").get(key).map_or(0, Vec::len)
    }
}

impl AuditStore for MemoryStore {
    fn list_latest<'a>(
        &'a self,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Listed>, StoreError>> {
        async move {
            self.check("ListObjectVersions", prefix)?;
            Ok(self
                .keys
                .lock()
                .expect("lock")
                .iter()
                .filter(|(key, _)| key.starts_with(prefix))
                .filter_map(|(key, versions)| {
                    Some(match versions.last()? {
                        Version::Object(stored) => Listed {
                            key: key.clone(),
                            version_id: stored.version_id.clone(),
                            delete_marker: false,
                        },
                        Version::DeleteMarker { version_id } => Listed {
                            key: key.clone(),
                            version_id: Some(version_id.clone()),
                            delete_marker: true,
                        },
                    })
                })
                .collect())
        }
        .boxed()
    }

    fn first_key<'a>(
        &'a self,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        async move {
            self.check("ListObjectsV2", prefix)?;
            Ok(self.current_keys(prefix).into_iter().next())
        }
        .boxed()
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Stored>, StoreError>> {
        async move {
            self.check("GetObject", key)?;
            Ok(self.current(key))
        }
        .boxed()
    }

    fn put_if_absent(&self, object: NewObject) -> BoxFuture<'_, Result<PutOutcome, StoreError>> {
        async move {
            self.check("PutObject", &object.key)?;
            if self.current(&object.key).is_some() {
                return Ok(PutOutcome::AlreadyExists);
            }
            let version_id = self.put(&object.key, object.bytes, object.metadata);
            Ok(PutOutcome::Created {
                version_id: Some(version_id),
            })
        }
        .boxed()
    }
}

/// A stand-in for the KMS key: the "signature" is SHA-256 over a secret and the digest, so only a
/// key with the same secret makes or accepts it. Counts its calls.
#[derive(Debug)]
pub struct FakeKey {
    pub key_id: String,
    secret: Vec<u8>,
    pub signed: AtomicUsize,
    pub verified: AtomicUsize,
}

impl FakeKey {
    pub fn new(key_id: &str, secret: &str) -> Self {
        FakeKey {
            key_id: key_id.to_string(),
            secret: secret.as_bytes().to_vec(),
            signed: AtomicUsize::new(0),
            verified: AtomicUsize::new(0),
        }
    }

    fn signature(&self, digest: [u8; 32]) -> Vec<u8> {
        let mut input = self.secret.clone();
        input.extend_from_slice(&digest);
        sha256(&input).to_vec()
    }
}

impl DigestSigner for FakeKey {
    fn sign(&self, sha256: [u8; 32]) -> BoxFuture<'_, Result<Signature, SignError>> {
        self.signed.fetch_add(1, Ordering::Relaxed);
        let signature = Signature {
            key_id: self.key_id.clone(),
            algorithm: SIGNING_ALGORITHM.into(),
            bytes: self.signature(sha256),
        };
        async move { Ok(signature) }.boxed()
    }
}

impl DigestVerifier for FakeKey {
    fn verify<'a>(
        &'a self,
        sha256: [u8; 32],
        signature: &'a [u8],
    ) -> BoxFuture<'a, Result<bool, SignError>> {
        self.verified.fetch_add(1, Ordering::Relaxed);
        let valid = self.signature(sha256) == signature;
        async move { Ok(valid) }.boxed()
    }
}
