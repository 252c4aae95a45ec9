//! Request and response bodies in the audit trail, envelope-encrypted under the audit KMS key.
//!
//! The route captures each request's body and the response bytes that passed to the client, each up
//! to a bound ([`Capture`]: `Bytes` handles, no copy on the request path), and attaches them to the
//! request's final event as [`CapturedBodies`], which is never serialized and never printed. The flush
//! ([`SealingDelivery`], a [`Deliver`] decorator in front of the audit queue) asks KMS for one data key
//! per flushed batch, seals each request's two parts with AES-256-GCM, writes one object per request to
//! the audit bucket and puts a [`BodiesRef`] (key, sizes, truncated flags) in the event before it goes
//! on. If KMS or S3 fails, the event still goes on, its reference saying why no object was written.
//!
//! The object, `bodies/year=YYYY/month=MM/day=DD/hour=HH/<request id>.json` (the final event's hour;
//! the request id percent-encoded outside `[A-Za-z0-9._-]`), is a [`BodiesObject`]: the KMS key's id,
//! the encrypted data key and its encryption context, and per part (`request`, `response`) a random
//! 96-bit nonce, the ciphertext with its 16-byte tag, the plaintext size and the truncated flag. Each
//! part's additional authenticated data ([`aad`]) binds the format, the request id, the part's name,
//! its size and its truncated flag, so a part moved to another request or direction, or a flag or size
//! edited, fails authentication like an altered ciphertext byte. `gateway-audit bodies` opens them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use aws_lc_rs::aead::{Aad, Nonce, RandomizedNonceKey, AES_256_GCM, NONCE_LEN};
use base64::Engine;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::buffer::Deliver;
use super::{clock, AuditEvent};
use crate::config::{self, ConfigError, Settings};

/// The object format's name, also the first line of every part's AAD.
pub const FORMAT: &str = "llm-gateway-audit-bodies/1";
/// The one algorithm the format uses.
pub const ALGORITHM: &str = "AES-256-GCM";
/// Where body objects go in the audit bucket (the events are under `audit/`).
pub const PREFIX: &str = "bodies/";
/// Per direction: large enough for any chat exchange, small enough that a flush stays quick and a
/// warm environment's memory is not held by a long audio upload.
pub const DEFAULT_MAX_BYTES: usize = 1024 * 1024;
/// The KMS encryption context of every data key: a key policy can limit the audit key's use to
/// bodies (`kms:EncryptionContext:purpose`), and CloudTrail shows what each Decrypt was for.
pub const ENCRYPTION_CONTEXT: (&str, &str) = ("purpose", "llm-gateway-audit-bodies");
/// Objects sealed concurrently in one flush.
const CONCURRENT_PUTS: usize = 8;

// ---------------------------------------------------------------------------------------------------
// Settings

/// `GATEWAY_AUDIT_BODIES` and what recording bodies needs, read once at init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodiesConfig {
    /// `GATEWAY_AUDIT_BODIES=off`: events carry no bodies.
    Off,
    On(BodiesOn),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodiesOn {
    /// `GATEWAY_AUDIT_BODY_MAX_BYTES`: kept per direction; beyond it the part is `truncated`.
    pub max_bytes: usize,
    /// `GATEWAY_AUDIT_BUCKET`: the audit bucket (objects under `bodies/`).
    pub bucket: String,
    /// `GATEWAY_AUDIT_BODY_KEY_ID`: the KMS key (id, ARN or alias) data keys are generated under.
    pub key_id: String,
}

impl BodiesConfig {
    /// `GATEWAY_AUDIT_BODIES` (`on`, the default, or `off`); when on, `GATEWAY_AUDIT_BUCKET` and
    /// `GATEWAY_AUDIT_BODY_KEY_ID` are required and `GATEWAY_AUDIT_BODY_MAX_BYTES` is read (1 MiB).
    pub fn from_settings(settings: &dyn Settings) -> Result<BodiesConfig, ConfigError> {
        const SWITCH: &str = "GATEWAY_AUDIT_BODIES";
        match settings.get(SWITCH).map(|v| v.trim().to_ascii_lowercase()) {
            None => {}
            Some(value) if value == "on" => {}
            Some(value) if value == "off" => return Ok(BodiesConfig::Off),
            Some(value) => {
                return Err(ConfigError::Invalid {
                    name: SWITCH,
                    reason: format!("expected on or off, got {value:?}"),
                })
            }
        }
        let needed = |name: &'static str| {
            settings.get(name).ok_or_else(|| ConfigError::Invalid {
                name,
                reason: format!(
                    "required while {SWITCH} is on (the default); set it, or set {SWITCH}=off"
                ),
            })
        };
        let max_bytes =
            config::usize_setting(settings, "GATEWAY_AUDIT_BODY_MAX_BYTES", DEFAULT_MAX_BYTES)?;
        if max_bytes == 0 {
            return Err(ConfigError::Invalid {
                name: "GATEWAY_AUDIT_BODY_MAX_BYTES",
                reason: format!("must be at least 1 (to record no bodies, set {SWITCH}=off)"),
            });
        }
        Ok(BodiesConfig::On(BodiesOn {
            max_bytes,
            bucket: needed("GATEWAY_AUDIT_BUCKET")?.trim().to_string(),
            key_id: needed("GATEWAY_AUDIT_BODY_KEY_ID")?.trim().to_string(),
        }))
    }

    /// How much of each direction the route keeps; `None`: it keeps nothing.
    pub fn capture_limit(&self) -> Option<usize> {
        match self {
            BodiesConfig::Off => None,
            BodiesConfig::On(on) => Some(on.max_bytes),
        }
    }

    /// The audit delivery with the sealing stage in front of it (unchanged when bodies are off).
    pub fn delivery(
        &self,
        inner: Box<dyn Deliver>,
        sdk: &aws_config::SdkConfig,
    ) -> Box<dyn Deliver> {
        match self {
            BodiesConfig::Off => inner,
            BodiesConfig::On(on) => Box::new(SealingDelivery::new(
                inner,
                Arc::new(KmsKeys::new(
                    aws_sdk_kms::Client::new(sdk),
                    on.key_id.clone(),
                )),
                Arc::new(S3BodyStore::new(
                    aws_sdk_s3::Client::new(sdk),
                    on.bucket.clone(),
                )),
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Capture (on the request path: handles, no copies)

/// One direction's bytes, kept up to a bound. Holds `Bytes` handles (a reference count each), so
/// capturing costs the request path no copy; the bytes are joined only when the flush seals them.
#[derive(Clone, Default)]
pub struct Capture {
    chunks: Vec<Bytes>,
    len: usize,
    limit: usize,
    truncated: bool,
}

impl Capture {
    /// An empty capture that keeps at most `limit` bytes.
    pub fn new(limit: usize) -> Capture {
        Capture {
            limit,
            ..Capture::default()
        }
    }

    /// `data`, as far as the bound allows.
    pub fn of(data: &Bytes, limit: usize) -> Capture {
        let mut capture = Capture::new(limit);
        capture.push(data);
        capture
    }

    /// Keeps what of `data` fits; anything beyond the bound marks the capture truncated.
    pub fn push(&mut self, data: &Bytes) {
        let room = self.limit - self.len;
        if data.len() <= room {
            if !data.is_empty() {
                self.chunks.push(data.clone());
                self.len += data.len();
            }
            return;
        }
        if room > 0 {
            self.chunks.push(data.slice(..room));
            self.len = self.limit;
        }
        self.truncated = true;
    }

    /// Bytes kept.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the bound cut what passed.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// The kept bytes in one buffer, wiped when dropped (it becomes the ciphertext when sealed).
    fn joined(&self) -> Zeroizing<Vec<u8>> {
        let mut joined = Zeroizing::new(Vec::with_capacity(self.len + AES_256_GCM.tag_len()));
        for chunk in &self.chunks {
            joined.extend_from_slice(chunk);
        }
        joined
    }
}

impl PartialEq for Capture {
    fn eq(&self, other: &Capture) -> bool {
        self.truncated == other.truncated && *self.joined() == *other.joined()
    }
}

impl fmt::Debug for Capture {
    /// Sizes only: the bytes are what the audit trail must never print.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Capture")
            .field("bytes", &self.len)
            .field("truncated", &self.truncated)
            .finish_non_exhaustive()
    }
}

/// A request's captured bodies, riding with its final event until the flush seals them.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct CapturedBodies {
    pub request: Capture,
    pub response: Capture,
}

impl CapturedBodies {
    /// The request's body as it arrived, the response still to come.
    pub fn of_request(body: &Bytes, limit: usize) -> CapturedBodies {
        CapturedBodies {
            request: Capture::of(body, limit),
            response: Capture::new(limit),
        }
    }

    fn part(&self, part: Part) -> &Capture {
        match part {
            Part::Request => &self.request,
            Part::Response => &self.response,
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// The event's reference

/// Where a request's bodies are, in its final event (`bodies`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BodiesRef {
    /// The object's key in the audit bucket; `None` when it could not be written (see `error`).
    pub key: Option<String>,
    pub request: PartRef,
    pub response: PartRef,
    /// Why no object was written (KMS or S3 failed); the event was delivered all the same.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRef {
    /// Bytes kept (at most the bound; `bytes_in` and `bytes_out` are the whole sizes).
    pub bytes: u64,
    /// The bound cut this part.
    pub truncated: bool,
}

impl PartRef {
    fn of(capture: &Capture) -> PartRef {
        PartRef {
            bytes: capture.len() as u64,
            truncated: capture.truncated(),
        }
    }
}

impl BodiesRef {
    fn new(captured: &CapturedBodies, key: Option<String>, error: Option<String>) -> BodiesRef {
        BodiesRef {
            key,
            request: PartRef::of(&captured.request),
            response: PartRef::of(&captured.response),
            error,
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// The object

/// One request's sealed bodies, as stored (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BodiesObject {
    /// [`FORMAT`].
    pub format: String,
    pub request_id: String,
    /// The final event that references this object.
    pub event_id: String,
    /// That event's time.
    pub time: String,
    /// The KMS key the data key was generated under (its ARN, as KMS names it).
    pub key_id: String,
    /// The data key, encrypted by KMS (base64); KMS `Decrypt` with `encryption_context` opens it.
    pub encrypted_data_key: String,
    pub encryption_context: BTreeMap<String, String>,
    /// [`ALGORITHM`].
    pub algorithm: String,
    pub request: SealedPart,
    pub response: SealedPart,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedPart {
    /// 96 random bits (base64), never reused under a data key.
    pub nonce: String,
    /// Ciphertext followed by the 16-byte GCM tag (base64).
    pub ciphertext: String,
    /// Plaintext bytes.
    pub bytes: u64,
    pub truncated: bool,
}

/// The two parts of a request's bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Request,
    Response,
}

impl Part {
    pub const BOTH: [Part; 2] = [Part::Request, Part::Response];

    pub fn name(self) -> &'static str {
        match self {
            Part::Request => "request",
            Part::Response => "response",
        }
    }
}

impl BodiesObject {
    pub fn part(&self, part: Part) -> &SealedPart {
        match part {
            Part::Request => &self.request,
            Part::Response => &self.response,
        }
    }

    pub fn part_mut(&mut self, part: Part) -> &mut SealedPart {
        match part {
            Part::Request => &mut self.request,
            Part::Response => &mut self.response,
        }
    }
}

/// The additional authenticated data of one part: what may not change without the tag failing.
pub fn aad(request_id: &str, part: Part, bytes: u64, truncated: bool) -> Vec<u8> {
    format!(
        "{FORMAT}\nrequest_id={request_id}\npart={}\nbytes={bytes}\ntruncated={truncated}",
        part.name()
    )
    .into_bytes()
}

/// Request ids are API Gateway's (UUIDs); anything else is percent-encoded so a key stays one name.
const KEY_SAFE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

/// `bodies/<partition>/<request id>.json`, `partition` as [`clock::partition`] makes it.
pub fn object_key(partition: &str, request_id: &str) -> String {
    format!("{PREFIX}{partition}/{}.json", object_name(request_id))
}

/// The request id as it appears in object keys (and the auditor's file names).
pub fn object_name(request_id: &str) -> String {
    utf8_percent_encode(request_id, KEY_SAFE).to_string()
}

/// The key of a request's object, from its final event's time.
pub fn object_key_for(time: &str, request_id: &str) -> Option<String> {
    Some(object_key(&clock::partition(time)?, request_id))
}

#[derive(Debug, thiserror::Error)]
pub enum BodiesError {
    #[error("KMS GenerateDataKey failed: {0}")]
    GenerateDataKey(String),
    #[error("KMS answered without {0}")]
    IncompleteDataKey(&'static str),
    #[error("the data key is not an AES-256 key")]
    BadDataKey,
    #[error("sealing failed")]
    Seal,
    #[error("the event's time {0:?} has no hour partition")]
    Time(String),
    #[error("the object could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("S3 PutObject {key} failed: {message}")]
    Put { key: String, message: String },
}

/// A plaintext data key and its KMS-encrypted form. The plaintext is wiped when dropped and never
/// printed.
pub struct DataKey {
    plaintext: Zeroizing<Vec<u8>>,
    pub encrypted: Vec<u8>,
    /// The KMS key it was generated under.
    pub key_id: String,
}

impl DataKey {
    pub fn new(plaintext: Zeroizing<Vec<u8>>, encrypted: Vec<u8>, key_id: String) -> DataKey {
        DataKey {
            plaintext,
            encrypted,
            key_id,
        }
    }

    fn cipher(&self) -> Result<RandomizedNonceKey, BodiesError> {
        if self.plaintext.len() != AES_256_GCM.key_len() {
            return Err(BodiesError::BadDataKey);
        }
        RandomizedNonceKey::new(&AES_256_GCM, &self.plaintext).map_err(|_| BodiesError::BadDataKey)
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("key_id", &self.key_id)
            .field("plaintext", &"<redacted>")
            .finish_non_exhaustive()
    }
}

fn b64() -> &'static base64::engine::GeneralPurpose {
    &base64::engine::general_purpose::STANDARD
}

/// Seals one request's bodies under `key` into its object.
pub fn seal(
    key: &DataKey,
    event: &AuditEvent,
    captured: &CapturedBodies,
) -> Result<BodiesObject, BodiesError> {
    let cipher = key.cipher()?;
    let seal_part = |part: Part| -> Result<SealedPart, BodiesError> {
        let capture = captured.part(part);
        let (bytes, truncated) = (capture.len() as u64, capture.truncated());
        let mut data = capture.joined();
        let nonce = cipher
            .seal_in_place_append_tag(
                Aad::from(aad(&event.request_id, part, bytes, truncated)),
                &mut *data,
            )
            .map_err(|_| BodiesError::Seal)?;
        Ok(SealedPart {
            nonce: b64().encode(nonce.as_ref()),
            ciphertext: b64().encode(&*data),
            bytes,
            truncated,
        })
    };
    Ok(BodiesObject {
        format: FORMAT.into(),
        request_id: event.request_id.clone(),
        event_id: event.event_id.clone(),
        time: event.time.clone(),
        key_id: key.key_id.clone(),
        encrypted_data_key: b64().encode(&key.encrypted),
        encryption_context: encryption_context(),
        algorithm: ALGORITHM.into(),
        request: seal_part(Part::Request)?,
        response: seal_part(Part::Response)?,
    })
}

pub fn encryption_context() -> BTreeMap<String, String> {
    BTreeMap::from([(
        ENCRYPTION_CONTEXT.0.to_string(),
        ENCRYPTION_CONTEXT.1.to_string(),
    )])
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("not a bodies object of format {FORMAT} with {ALGORITHM}: {0}")]
    Format(String),
    #[error("the {part} part's {field} is not valid base64")]
    Encoding {
        part: &'static str,
        field: &'static str,
    },
    #[error("the {part} part's nonce is not {NONCE_LEN} bytes")]
    Nonce { part: &'static str },
    #[error("the decrypted data key is not an AES-256 key")]
    Key,
    #[error("AUTHENTICATION FAILED for the {part} part of request {request_id}: its ciphertext, nonce, size or truncated flag was altered, it belongs to another request or direction, or the data key is not the one it was sealed with")]
    Authentication {
        part: &'static str,
        request_id: String,
    },
}

/// One part, opened and authenticated.
pub struct OpenedPart {
    pub bytes: Vec<u8>,
    pub truncated: bool,
}

impl fmt::Debug for OpenedPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenedPart")
            .field("bytes", &self.bytes.len())
            .field("truncated", &self.truncated)
            .finish()
    }
}

/// Opens one part of the object stored for `request_id` (the id asked for, not the one the object
/// names: a part sealed for another request fails here).
pub fn open_part(
    plaintext_key: &[u8],
    request_id: &str,
    object: &BodiesObject,
    part: Part,
) -> Result<OpenedPart, OpenError> {
    if object.format != FORMAT || object.algorithm != ALGORITHM {
        return Err(OpenError::Format(format!(
            "format {:?}, algorithm {:?}",
            object.format, object.algorithm
        )));
    }
    let cipher =
        RandomizedNonceKey::new(&AES_256_GCM, plaintext_key).map_err(|_| OpenError::Key)?;
    let sealed = object.part(part);
    let name = part.name();
    let nonce = b64()
        .decode(&sealed.nonce)
        .map_err(|_| OpenError::Encoding {
            part: name,
            field: "nonce",
        })?;
    let nonce =
        Nonce::try_assume_unique_for_key(&nonce).map_err(|_| OpenError::Nonce { part: name })?;
    let mut data = b64()
        .decode(&sealed.ciphertext)
        .map_err(|_| OpenError::Encoding {
            part: name,
            field: "ciphertext",
        })?;
    let plaintext_len = cipher
        .open_in_place(
            nonce,
            Aad::from(aad(request_id, part, sealed.bytes, sealed.truncated)),
            &mut data,
        )
        .map_err(|_| OpenError::Authentication {
            part: name,
            request_id: request_id.to_string(),
        })?
        .len();
    data.truncate(plaintext_len);
    Ok(OpenedPart {
        bytes: data,
        truncated: sealed.truncated,
    })
}

// ---------------------------------------------------------------------------------------------------
// KMS and S3, behind narrow traits

/// Makes data keys (KMS `GenerateDataKey`, AES_256).
pub trait DataKeys: Send + Sync {
    fn generate(&self) -> BoxFuture<'_, Result<DataKey, BodiesError>>;
}

/// Stores sealed objects (S3 `PutObject` into the audit bucket).
pub trait BodyStore: Send + Sync {
    fn put(&self, key: String, body: Vec<u8>) -> BoxFuture<'_, Result<(), BodiesError>>;
}

/// The audit body key in KMS.
pub struct KmsKeys {
    client: aws_sdk_kms::Client,
    key_id: String,
}

impl KmsKeys {
    pub fn new(client: aws_sdk_kms::Client, key_id: String) -> Self {
        KmsKeys { client, key_id }
    }
}

impl DataKeys for KmsKeys {
    fn generate(&self) -> BoxFuture<'_, Result<DataKey, BodiesError>> {
        async move {
            let output = self
                .client
                .generate_data_key()
                .key_id(&self.key_id)
                .key_spec(aws_sdk_kms::types::DataKeySpec::Aes256)
                .encryption_context(ENCRYPTION_CONTEXT.0, ENCRYPTION_CONTEXT.1)
                .send()
                .await
                .map_err(|e| {
                    BodiesError::GenerateDataKey(
                        aws_sdk_kms::error::DisplayErrorContext(e).to_string(),
                    )
                })?;
            // Moved out of the response, never copied: the wrapper wipes it when the key is dropped.
            let plaintext = Zeroizing::new(
                output
                    .plaintext
                    .ok_or(BodiesError::IncompleteDataKey("a plaintext key"))?
                    .into_inner(),
            );
            let encrypted = output
                .ciphertext_blob
                .ok_or(BodiesError::IncompleteDataKey("an encrypted key"))?
                .into_inner();
            let key_id = output.key_id.unwrap_or_else(|| self.key_id.clone());
            Ok(DataKey::new(plaintext, encrypted, key_id))
        }
        .boxed()
    }
}

/// Objects in the audit bucket.
pub struct S3BodyStore {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3BodyStore {
    pub fn new(client: aws_sdk_s3::Client, bucket: String) -> Self {
        S3BodyStore { client, bucket }
    }
}

impl BodyStore for S3BodyStore {
    fn put(&self, key: String, body: Vec<u8>) -> BoxFuture<'_, Result<(), BodiesError>> {
        async move {
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(&key)
                .content_type("application/json")
                .body(body.into())
                .send()
                .await
                .map_err(|e| BodiesError::Put {
                    message: aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
                    key: key.clone(),
                })?;
            Ok(())
        }
        .boxed()
    }
}

// ---------------------------------------------------------------------------------------------------
// The flush stage

/// Seals the bodies of the events being flushed, stores them, and hands the events (with their
/// references, without their plaintext) to the next delivery. Never holds an event back: whatever
/// fails is noted in the event's reference.
pub struct SealingDelivery<D> {
    inner: D,
    keys: Arc<dyn DataKeys>,
    store: Arc<dyn BodyStore>,
}

impl<D: Deliver> SealingDelivery<D> {
    pub fn new(inner: D, keys: Arc<dyn DataKeys>, store: Arc<dyn BodyStore>) -> Self {
        SealingDelivery { inner, keys, store }
    }

    async fn seal_all(&self, events: &mut [AuditEvent]) {
        let with_bodies: Vec<usize> = events
            .iter()
            .enumerate()
            .filter(|(_, event)| event.captured.is_some())
            .map(|(index, _)| index)
            .collect();
        if with_bodies.is_empty() {
            return;
        }
        let key = match self.keys.generate().await {
            Ok(key) => key,
            Err(error) => {
                tracing::error!(%error, events = with_bodies.len(), "audit bodies not stored: no data key");
                let reason = format!("bodies not stored: {error}");
                for &index in &with_bodies {
                    let event = &mut events[index];
                    if let Some(captured) = event.captured.take() {
                        event.bodies = Some(BodiesRef::new(&captured, None, Some(reason.clone())));
                    }
                }
                return;
            }
        };
        // Seal everything first, so the plaintext key and bodies are gone before the network calls.
        let mut sealed = Vec::with_capacity(with_bodies.len());
        for &index in &with_bodies {
            let event = &mut events[index];
            let Some(captured) = event.captured.take() else {
                continue;
            };
            let object = object_key_for(&event.time, &event.request_id)
                .ok_or_else(|| BodiesError::Time(event.time.clone()))
                .and_then(|object_key| {
                    let object = seal(&key, event, &captured)?;
                    Ok((object_key, serde_json::to_vec(&object)?))
                });
            sealed.push((index, BodiesRef::new(&captured, None, None), object));
        }
        drop(key);
        let stored: Vec<(usize, BodiesRef)> = futures_util::stream::iter(sealed)
            .map(|(index, mut reference, object)| async move {
                let result = match object {
                    Ok((object_key, body)) => self
                        .store
                        .put(object_key.clone(), body)
                        .await
                        .map(|()| object_key),
                    Err(error) => Err(error),
                };
                match result {
                    Ok(object_key) => reference.key = Some(object_key),
                    Err(error) => {
                        tracing::error!(%error, "audit bodies not stored");
                        reference.error = Some(format!("bodies not stored: {error}"));
                    }
                }
                (index, reference)
            })
            .buffered(CONCURRENT_PUTS)
            .collect()
            .await;
        for (index, reference) in stored {
            events[index].bodies = Some(reference);
        }
    }
}

impl<D: Deliver> Deliver for SealingDelivery<D> {
    fn deliver(&self, mut events: Vec<AuditEvent>) -> BoxFuture<'_, ()> {
        async move {
            self.seal_all(&mut events).await;
            self.inner.deliver(events).await;
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests;
