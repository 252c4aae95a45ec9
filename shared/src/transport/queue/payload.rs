//! Bodies on the queue: inline in the message when they fit, else through the payload bucket. Both
//! sides (route and dispatcher) store and resolve payloads the same way, from the same settings.
//!
//! The bucket is reached through [`PayloadStore`], a narrow trait with the three object calls the
//! transport and the dispatcher make, implemented for `aws_sdk_s3::Client`; tests use an in-memory
//! store and can tell that a refused request never touched the bucket.

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use crate::config::{self, ConfigError, Settings};
use crate::transport::envelope::Payload;
use crate::transport::{BoxError, TransportError};

pub const DEFAULT_INLINE_MAX_BYTES: usize = 192 * 1024;

/// Where bodies too large for an SQS message go. Both sides of the queue (route and dispatcher) read
/// it from the same settings, so they agree on the limit.
#[derive(Debug, Clone)]
pub struct PayloadSettings {
    pub bucket: Option<String>,
    pub inline_max_bytes: usize,
}

impl PayloadSettings {
    /// `GATEWAY_PAYLOAD_BUCKET` (optional), `GATEWAY_QUEUE_INLINE_MAX_BYTES` (default 192 KiB).
    pub fn from_settings(settings: &dyn Settings) -> Result<Self, ConfigError> {
        Ok(PayloadSettings {
            bucket: settings.get("GATEWAY_PAYLOAD_BUCKET"),
            inline_max_bytes: config::usize_setting(
                settings,
                "GATEWAY_QUEUE_INLINE_MAX_BYTES",
                DEFAULT_INLINE_MAX_BYTES,
            )?,
        })
    }

    /// The body inline when it fits, else written to the payload bucket under `key`.
    pub async fn store(
        &self,
        s3: &dyn PayloadStore,
        key: String,
        body: Bytes,
    ) -> Result<Payload, TransportError> {
        if body.len() <= self.inline_max_bytes {
            return Ok(Payload::inline(&body));
        }
        let bucket = self.bucket.clone().ok_or_else(|| {
            TransportError::Request(format!(
                "a body of {} bytes exceeds the queue's inline limit and no payload bucket is configured",
                body.len()
            ))
        })?;
        s3.put(&bucket, &key, body)
            .await
            .map_err(|e| TransportError::Connect(format!("payload bucket: {e}")))?;
        Ok(Payload::S3 { bucket, key })
    }
}

/// A payload's bytes: decoded inline, or read from the payload bucket.
pub async fn resolve_payload(s3: &dyn PayloadStore, payload: Payload) -> Result<Bytes, BoxError> {
    match payload {
        Payload::Inline { .. } => payload
            .decode_inline()
            .map(Bytes::from)
            .ok_or_else(|| "reply data is not base64".into()),
        Payload::S3 { bucket, key } => s3.get(&bucket, &key).await,
    }
}

/// The object calls made on the payload bucket, and no others.
pub trait PayloadStore: Send + Sync {
    fn put<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        body: Bytes,
    ) -> BoxFuture<'a, Result<(), BoxError>>;

    fn get<'a>(&'a self, bucket: &'a str, key: &'a str) -> BoxFuture<'a, Result<Bytes, BoxError>>;

    /// Whether the object exists; an error means it could not be told.
    fn exists<'a>(&'a self, bucket: &'a str, key: &'a str)
        -> BoxFuture<'a, Result<bool, BoxError>>;
}

fn sdk_error<E: std::error::Error + 'static, R: std::fmt::Debug>(
    error: aws_sdk_s3::error::SdkError<E, R>,
) -> BoxError {
    aws_sdk_s3::error::DisplayErrorContext(error)
        .to_string()
        .into()
}

impl PayloadStore for aws_sdk_s3::Client {
    fn put<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        body: Bytes,
    ) -> BoxFuture<'a, Result<(), BoxError>> {
        async move {
            self.put_object()
                .bucket(bucket)
                .key(key)
                .body(body.into())
                .send()
                .await
                .map(|_| ())
                .map_err(sdk_error)
        }
        .boxed()
    }

    fn get<'a>(&'a self, bucket: &'a str, key: &'a str) -> BoxFuture<'a, Result<Bytes, BoxError>> {
        async move {
            let object = self
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map_err(sdk_error)?;
            Ok(object.body.collect().await?.into_bytes())
        }
        .boxed()
    }

    fn exists<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<bool, BoxError>> {
        async move {
            match self.head_object().bucket(bucket).key(key).send().await {
                Ok(_) => Ok(true),
                Err(error) if error.as_service_error().is_some_and(|e| e.is_not_found()) => {
                    Ok(false)
                }
                Err(error) => Err(sdk_error(error)),
            }
        }
        .boxed()
    }
}
