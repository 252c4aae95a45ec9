//! Bodies on the queue: inline in the message when they fit, else through the payload bucket. Both
//! sides (route and dispatcher) store and resolve payloads the same way, from the same settings.

use bytes::Bytes;

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
        s3: &aws_sdk_s3::Client,
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
        put_payload(s3, &bucket, &key, body).await?;
        Ok(Payload::S3 { bucket, key })
    }
}

/// A payload's bytes: decoded inline, or read from the payload bucket.
pub async fn resolve_payload(s3: &aws_sdk_s3::Client, payload: Payload) -> Result<Bytes, BoxError> {
    match payload {
        Payload::Inline { .. } => payload
            .decode_inline()
            .map(Bytes::from)
            .ok_or_else(|| "reply data is not base64".into()),
        Payload::S3 { bucket, key } => {
            let object = s3.get_object().bucket(&bucket).key(&key).send().await?;
            Ok(object.body.collect().await?.into_bytes())
        }
    }
}

async fn put_payload(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    body: Bytes,
) -> Result<(), TransportError> {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(body.into())
        .send()
        .await
        .map(|_| ())
        .map_err(|e| {
            TransportError::Connect(format!(
                "payload bucket: {}",
                aws_sdk_s3::error::DisplayErrorContext(e)
            ))
        })
}
