//! What the digest job and the verify command need from S3 and KMS, as narrow traits with exactly the
//! calls they make, implemented for aws-sdk-s3 and aws-sdk-kms; tests use the in-memory fakes in
//! [`super::memory`].

use std::collections::BTreeMap;

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{MessageType, SigningAlgorithmSpec};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::SIGNING_ALGORITHM;

/// The latest entry of a key: a current object version, or a delete marker over older versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    /// `None` in a bucket without versioning.
    pub version_id: Option<String>,
    pub delete_marker: bool,
}

/// A current object version's bytes and user metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub bytes: Vec<u8>,
    pub version_id: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

/// An object to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewObject {
    pub key: String,
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
    pub content_encoding: Option<&'static str>,
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    Created {
        version_id: Option<String>,
    },
    /// A current object is already at the key (a concurrent or earlier run wrote it): nothing written.
    AlreadyExists,
}

#[derive(Debug, thiserror::Error)]
#[error("S3 {operation} {key}: {message}")]
pub struct StoreError {
    pub operation: &'static str,
    pub key: String,
    pub message: String,
}

/// The audit bucket's calls, and no others.
pub trait AuditStore: Send + Sync {
    /// The latest entry of every key under `prefix` (current versions and delete markers), by key.
    fn list_latest<'a>(&'a self, prefix: &'a str)
        -> BoxFuture<'a, Result<Vec<Listed>, StoreError>>;

    /// The first key under `prefix` that has a current object, in key order.
    fn first_key<'a>(
        &'a self,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>>;

    /// The current version of `key`; `None` when there is none (never written, or a delete marker).
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Stored>, StoreError>>;

    /// Writes `object` unless a current object is at its key (`If-None-Match: *`), so that two runs
    /// never both write an hour's digest.
    fn put_if_absent(&self, object: NewObject) -> BoxFuture<'_, Result<PutOutcome, StoreError>>;
}

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("KMS {operation} with key {key_id}: {message}")]
    Kms {
        operation: &'static str,
        key_id: String,
        message: String,
    },
}

/// A signature over a digest, and what made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The key's ARN as KMS reports it.
    pub key_id: String,
    pub algorithm: String,
    pub bytes: Vec<u8>,
}

pub trait DigestSigner: Send + Sync {
    /// Signs a SHA-256 digest (RSASSA-PSS SHA-256, message type DIGEST).
    fn sign(&self, sha256: [u8; 32]) -> BoxFuture<'_, Result<Signature, SignError>>;
}

pub trait DigestVerifier: Send + Sync {
    /// `Ok(false)` when `signature` is not this key's signature over `sha256`; `Err` when that could not
    /// be told (KMS unreachable, no permission).
    fn verify<'a>(
        &'a self,
        sha256: [u8; 32],
        signature: &'a [u8],
    ) -> BoxFuture<'a, Result<bool, SignError>>;
}

/// The audit bucket through aws-sdk-s3.
#[derive(Debug, Clone)]
pub struct S3AuditStore {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3AuditStore {
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        S3AuditStore {
            client,
            bucket: bucket.into(),
        }
    }
}

fn s3_error<E: std::error::Error + 'static, R: std::fmt::Debug>(
    operation: &'static str,
    key: &str,
) -> impl FnOnce(aws_sdk_s3::error::SdkError<E, R>) -> StoreError {
    let key = key.to_string();
    move |error| StoreError {
        operation,
        key,
        message: aws_sdk_s3::error::DisplayErrorContext(error).to_string(),
    }
}

/// S3 reports "no version id" as the string `null`.
fn version(id: Option<&str>) -> Option<String> {
    id.filter(|v| !v.is_empty() && *v != "null")
        .map(str::to_string)
}

impl AuditStore for S3AuditStore {
    fn list_latest<'a>(
        &'a self,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Listed>, StoreError>> {
        async move {
            let mut listed = Vec::new();
            let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
            loop {
                let page = self
                    .client
                    .list_object_versions()
                    .bucket(&self.bucket)
                    .prefix(prefix)
                    .set_key_marker(key_marker.take())
                    .set_version_id_marker(version_marker.take())
                    .send()
                    .await
                    .map_err(s3_error("ListObjectVersions", prefix))?;
                for entry in page.versions() {
                    if let (Some(key), Some(true)) = (entry.key(), entry.is_latest()) {
                        listed.push(Listed {
                            key: key.to_string(),
                            version_id: version(entry.version_id()),
                            delete_marker: false,
                        });
                    }
                }
                for marker in page.delete_markers() {
                    if let (Some(key), Some(true)) = (marker.key(), marker.is_latest()) {
                        listed.push(Listed {
                            key: key.to_string(),
                            version_id: version(marker.version_id()),
                            delete_marker: true,
                        });
                    }
                }
                if page.is_truncated() != Some(true) {
                    break;
                }
                key_marker = page.next_key_marker().map(str::to_string);
                version_marker = page.next_version_id_marker().map(str::to_string);
                if key_marker.is_none() {
                    break;
                }
            }
            listed.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(listed)
        }
        .boxed()
    }

    fn first_key<'a>(
        &'a self,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        async move {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .max_keys(1)
                .send()
                .await
                .map_err(s3_error("ListObjectsV2", prefix))?;
            Ok(page
                .contents()
                .first()
                .and_then(|o| o.key())
                .map(str::to_string))
        }
        .boxed()
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Stored>, StoreError>> {
        async move {
            let object = match self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
            {
                Ok(object) => object,
                // A key whose latest entry is a delete marker answers NoSuchKey too.
                Err(error) if error.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
                    return Ok(None)
                }
                Err(error) => return Err(s3_error("GetObject", key)(error)),
            };
            let version_id = version(object.version_id());
            let metadata = object
                .metadata()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default();
            let bytes = object
                .body
                .collect()
                .await
                .map_err(|e| StoreError {
                    operation: "GetObject",
                    key: key.to_string(),
                    message: e.to_string(),
                })?
                .into_bytes()
                .to_vec();
            Ok(Some(Stored {
                bytes,
                version_id,
                metadata,
            }))
        }
        .boxed()
    }

    fn put_if_absent(&self, object: NewObject) -> BoxFuture<'_, Result<PutOutcome, StoreError>> {
        async move {
            let key = object.key;
            let put = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(&key)
                .if_none_match("*")
                // Object Lock refuses a put without Content-MD5 or a checksum.
                .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
                .content_type(object.content_type)
                .set_content_encoding(object.content_encoding.map(str::to_string))
                .set_metadata(Some(object.metadata.into_iter().collect()))
                .body(object.bytes.into())
                .send()
                .await;
            match put {
                Ok(out) => Ok(PutOutcome::Created {
                    version_id: version(out.version_id()),
                }),
                Err(error)
                    if error
                        .raw_response()
                        .is_some_and(|r| r.status().as_u16() == 412) =>
                {
                    Ok(PutOutcome::AlreadyExists)
                }
                Err(error) => Err(s3_error("PutObject", &key)(error)),
            }
        }
        .boxed()
    }
}

/// The digest signing key through aws-sdk-kms: signs for the digest job, verifies for the auditor.
#[derive(Debug, Clone)]
pub struct KmsDigestKey {
    client: aws_sdk_kms::Client,
    key_id: String,
}

impl KmsDigestKey {
    /// `key_id`: any form KMS takes (key id, ARN, alias); the verifier should pass the key's ARN.
    pub fn new(client: aws_sdk_kms::Client, key_id: impl Into<String>) -> Self {
        KmsDigestKey {
            client,
            key_id: key_id.into(),
        }
    }

    fn error(&self, operation: &'static str, message: String) -> SignError {
        SignError::Kms {
            operation,
            key_id: self.key_id.clone(),
            message,
        }
    }
}

impl DigestSigner for KmsDigestKey {
    fn sign(&self, sha256: [u8; 32]) -> BoxFuture<'_, Result<Signature, SignError>> {
        async move {
            let out = self
                .client
                .sign()
                .key_id(&self.key_id)
                .message(Blob::new(sha256.to_vec()))
                .message_type(MessageType::Digest)
                .signing_algorithm(SigningAlgorithmSpec::RsassaPssSha256)
                .send()
                .await
                .map_err(|e| {
                    self.error(
                        "Sign",
                        aws_sdk_kms::error::DisplayErrorContext(e).to_string(),
                    )
                })?;
            let bytes = out
                .signature()
                .map(|b| b.as_ref().to_vec())
                .filter(|b| !b.is_empty())
                .ok_or_else(|| self.error("Sign", "no signature returned".into()))?;
            Ok(Signature {
                key_id: out.key_id().unwrap_or(&self.key_id).to_string(),
                algorithm: SIGNING_ALGORITHM.to_string(),
                bytes,
            })
        }
        .boxed()
    }
}

impl DigestVerifier for KmsDigestKey {
    fn verify<'a>(
        &'a self,
        sha256: [u8; 32],
        signature: &'a [u8],
    ) -> BoxFuture<'a, Result<bool, SignError>> {
        async move {
            if signature.is_empty() {
                return Ok(false);
            }
            let verified = self
                .client
                .verify()
                .key_id(&self.key_id)
                .message(Blob::new(sha256.to_vec()))
                .message_type(MessageType::Digest)
                .signing_algorithm(SigningAlgorithmSpec::RsassaPssSha256)
                .signature(Blob::new(signature.to_vec()))
                .send()
                .await;
            match verified {
                Ok(out) => Ok(out.signature_valid()),
                // KMS answers a signature that does not verify with this error, not with `false`.
                Err(error)
                    if error
                        .as_service_error()
                        .is_some_and(|e| e.is_kms_invalid_signature_exception()) =>
                {
                    Ok(false)
                }
                Err(error) => Err(self.error(
                    "Verify",
                    aws_sdk_kms::error::DisplayErrorContext(error).to_string(),
                )),
            }
        }
        .boxed()
    }
}
