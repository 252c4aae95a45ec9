//! `gateway-audit bodies`: fetches one request's sealed bodies from the audit bucket, has KMS decrypt
//! the data key (kms:Decrypt; refused without it, naming the permission), authenticates and decrypts
//! both parts, and writes or prints them with their truncated flags. Nothing is written unless both
//! parts authenticate; an altered object fails loudly (exit 4).
//!
//! The object format is `gateway_shared::audit::bodies` ([`BodiesObject`]).

use std::path::{Path, PathBuf};

use base64::Engine;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use gateway_shared::audit::bodies::{
    self, encryption_context, object_key, object_name, open_part, BodiesObject, OpenError,
    OpenedPart, Part,
};
use gateway_shared::audit::clock;
use serde_json::{json, Value};
use zeroize::Zeroizing;

const HELP: &str = "usage: gateway-audit bodies --request-id ID [--hour YYYY-MM-DDTHH | --key KEY] [--bucket BUCKET] [--out DIR]

Fetches the request's encrypted bodies from the audit bucket, decrypts them and prints a JSON summary
(sizes, truncated flags, the bodies as text or base64); with --out, writes them byte for byte to
DIR/<request id>.request and DIR/<request id>.response and prints where.

  --request-id ID  the API Gateway request id (x-gateway-request-id, the events' request_id)
  --hour H         the hour of the request's final event (UTC, e.g. 2026-11-25T03): looks there only
  --key KEY        the object's key, as the final event's bodies.key gives it
  --bucket BUCKET  the audit bucket (default: $GATEWAY_AUDIT_BUCKET)
  --out DIR        write the bodies to files instead of printing them

Without --hour or --key the whole bodies/ prefix is listed. Needs s3:ListBucket and s3:GetObject on the
audit bucket's bodies/ prefix and kms:Decrypt on the bodies key (encryption context
purpose=llm-gateway-audit-bodies). Exit codes: 0 done, 1 failed, 2 usage, 3 refused for want of a
permission, 4 authentication failed (the object was altered).";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub request_id: String,
    pub hour: Option<String>,
    pub key: Option<String>,
    pub bucket: String,
    pub out: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum BodiesCliError {
    #[error("{0}\n\n{HELP}")]
    Usage(String),
    #[error("refused: reading audit bodies needs {permission} on {resource}, which these credentials lack ({message})")]
    Denied {
        permission: &'static str,
        resource: String,
        message: String,
    },
    #[error("no bodies object for request {request_id} in {searched} (were bodies recorded? the final event's `bodies` says where they are, or why not)")]
    NotFound {
        request_id: String,
        searched: String,
    },
    #[error("{0}")]
    Open(#[from] OpenError),
    #[error("{key} is not a bodies object: {message}")]
    Format { key: String, message: String },
    #[error("S3: {0}")]
    S3(String),
    #[error("KMS Decrypt: {0}")]
    Kms(String),
    #[error("AUTHENTICATION FAILED: KMS would not open the object's data key under {key_id} with its encryption context: the encrypted key was altered or belongs to another key ({message})")]
    KeyRejected { key_id: String, message: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl BodiesCliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            BodiesCliError::Usage(_) => 2,
            BodiesCliError::Denied { .. } => 3,
            BodiesCliError::Open(OpenError::Authentication { .. })
            | BodiesCliError::KeyRejected { .. } => 4,
            _ => 1,
        }
    }
}

pub fn parse_args(
    args: Vec<String>,
    default_bucket: Option<String>,
) -> Result<Option<Args>, BodiesCliError> {
    let mut request_id = None;
    let mut hour = None;
    let mut key = None;
    let mut bucket = default_bucket;
    let mut out = None;
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .filter(|v| !v.starts_with("--"))
                .ok_or_else(|| BodiesCliError::Usage(format!("{name} needs a value")))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--request-id" => request_id = Some(value("--request-id")?),
            "--hour" => hour = Some(value("--hour")?),
            "--key" => key = Some(value("--key")?),
            "--bucket" => bucket = Some(value("--bucket")?),
            "--out" => out = Some(PathBuf::from(value("--out")?)),
            other => return Err(BodiesCliError::Usage(format!("unknown option {other:?}"))),
        }
    }
    let request_id = request_id
        .filter(|id| !id.trim().is_empty())
        .ok_or_else(|| BodiesCliError::Usage("--request-id is required".into()))?;
    let bucket = bucket.ok_or_else(|| {
        BodiesCliError::Usage("--bucket (or GATEWAY_AUDIT_BUCKET) is required".into())
    })?;
    if hour.is_some() && key.is_some() {
        return Err(BodiesCliError::Usage(
            "give --hour or --key, not both".into(),
        ));
    }
    if let Some(hour) = &hour {
        hour_partition(hour)?;
    }
    Ok(Some(Args {
        request_id,
        hour,
        key,
        bucket,
        out,
    }))
}

/// `2026-11-25T03` -> `year=2026/month=11/day=25/hour=03`.
fn hour_partition(hour: &str) -> Result<String, BodiesCliError> {
    let valid = hour.len() == 13 && hour.as_bytes()[4] == b'-' && hour.as_bytes()[10] == b'T';
    valid
        .then(|| clock::partition(&format!("{hour}:00:00.000Z")))
        .flatten()
        .ok_or_else(|| {
            BodiesCliError::Usage(format!("--hour {hour:?}: expected YYYY-MM-DDTHH (UTC)"))
        })
}

// ---- S3 and KMS, behind what this command needs of them

pub trait ObjectSource: Send + Sync {
    /// The object's bytes, `None` when there is no such key.
    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<Vec<u8>>, BodiesCliError>>;
    /// Every key under `prefix`.
    fn list(&self, prefix: &str) -> BoxFuture<'_, Result<Vec<String>, BodiesCliError>>;
}

pub trait KeyOpener: Send + Sync {
    /// The plaintext of a data key KMS encrypted under `key_id`.
    fn decrypt(
        &self,
        key_id: &str,
        encrypted: Vec<u8>,
    ) -> BoxFuture<'_, Result<Zeroizing<Vec<u8>>, BodiesCliError>>;
}

fn error_code<E: aws_sdk_s3::error::ProvideErrorMetadata>(error: &E) -> Option<&str> {
    error.code()
}

struct S3Source {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Source {
    fn denied(
        &self,
        permission: &'static str,
        code: Option<&str>,
        message: String,
    ) -> Option<BodiesCliError> {
        (code == Some("AccessDenied")).then(|| BodiesCliError::Denied {
            permission,
            resource: format!("s3://{}/{}", self.bucket, bodies::PREFIX),
            message,
        })
    }
}

impl ObjectSource for S3Source {
    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<Vec<u8>>, BodiesCliError>> {
        let key = key.to_string();
        async move {
            let got = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(&key)
                .send()
                .await;
            let output = match got {
                Ok(output) => output,
                Err(error) => {
                    if error.as_service_error().is_some_and(|e| e.is_no_such_key()) {
                        return Ok(None);
                    }
                    let message = aws_sdk_s3::error::DisplayErrorContext(&error).to_string();
                    let code = error.as_service_error().and_then(error_code);
                    return Err(self
                        .denied("s3:GetObject", code, message.clone())
                        .unwrap_or(BodiesCliError::S3(message)));
                }
            };
            let bytes = output
                .body
                .collect()
                .await
                .map_err(|e| BodiesCliError::S3(format!("reading {key}: {e}")))?;
            Ok(Some(bytes.to_vec()))
        }
        .boxed()
    }

    fn list(&self, prefix: &str) -> BoxFuture<'_, Result<Vec<String>, BodiesCliError>> {
        let prefix = prefix.to_string();
        async move {
            let mut keys = Vec::new();
            let mut pages = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&prefix)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|error| {
                    let message = aws_sdk_s3::error::DisplayErrorContext(&error).to_string();
                    let code = error.as_service_error().and_then(error_code);
                    self.denied("s3:ListBucket", code, message.clone())
                        .unwrap_or(BodiesCliError::S3(message))
                })?;
                keys.extend(
                    page.contents()
                        .iter()
                        .filter_map(|o| o.key().map(str::to_string)),
                );
            }
            Ok(keys)
        }
        .boxed()
    }
}

struct Kms {
    client: aws_sdk_kms::Client,
}

impl KeyOpener for Kms {
    fn decrypt(
        &self,
        key_id: &str,
        encrypted: Vec<u8>,
    ) -> BoxFuture<'_, Result<Zeroizing<Vec<u8>>, BodiesCliError>> {
        let key_id = key_id.to_string();
        async move {
            let (context_key, context_value) = bodies::ENCRYPTION_CONTEXT;
            let decrypted = self
                .client
                .decrypt()
                // Named, not left to the ciphertext: a forged object cannot send us to another key.
                .key_id(&key_id)
                .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(encrypted))
                .encryption_context(context_key, context_value)
                .send()
                .await
                .map_err(|error| {
                    let message = aws_sdk_kms::error::DisplayErrorContext(&error).to_string();
                    match error
                        .as_service_error()
                        .and_then(|e| aws_sdk_kms::error::ProvideErrorMetadata::code(e))
                    {
                        Some("AccessDeniedException") => BodiesCliError::Denied {
                            permission: "kms:Decrypt",
                            resource: key_id.clone(),
                            message,
                        },
                        // KMS authenticates the encrypted key (and its context) as GCM does the parts.
                        Some("InvalidCiphertextException" | "IncorrectKeyException") => {
                            BodiesCliError::KeyRejected {
                                key_id: key_id.clone(),
                                message,
                            }
                        }
                        _ => BodiesCliError::Kms(message),
                    }
                })?;
            let plaintext = decrypted
                .plaintext
                .ok_or_else(|| BodiesCliError::Kms("no plaintext in the answer".into()))?;
            Ok(Zeroizing::new(plaintext.into_inner()))
        }
        .boxed()
    }
}

// ---- the command

/// One request's bodies, opened.
#[derive(Debug)]
pub struct Opened {
    pub key: String,
    pub object: BodiesObject,
    pub request: OpenedPart,
    pub response: OpenedPart,
}

/// Finds the object, opens the data key and both parts.
pub async fn open(
    args: &Args,
    source: &dyn ObjectSource,
    keys: &dyn KeyOpener,
) -> Result<Opened, BodiesCliError> {
    let (key, raw) = find(args, source).await?;
    let object: BodiesObject =
        serde_json::from_slice(&raw).map_err(|e| BodiesCliError::Format {
            key: key.clone(),
            message: e.to_string(),
        })?;
    if object.encryption_context != encryption_context() {
        return Err(BodiesCliError::Format {
            key,
            message: format!(
                "unexpected encryption context {:?}",
                object.encryption_context
            ),
        });
    }
    let encrypted = base64::engine::general_purpose::STANDARD
        .decode(&object.encrypted_data_key)
        .map_err(|e| BodiesCliError::Format {
            key: key.clone(),
            message: format!("encrypted_data_key: {e}"),
        })?;
    let data_key = keys.decrypt(&object.key_id, encrypted).await?;
    let request = open_part(&data_key, &args.request_id, &object, Part::Request)?;
    let response = open_part(&data_key, &args.request_id, &object, Part::Response)?;
    drop(data_key);
    Ok(Opened {
        key,
        object,
        request,
        response,
    })
}

async fn find(args: &Args, source: &dyn ObjectSource) -> Result<(String, Vec<u8>), BodiesCliError> {
    let not_found = |searched: String| BodiesCliError::NotFound {
        request_id: args.request_id.clone(),
        searched,
    };
    let key = match (&args.key, &args.hour) {
        (Some(key), _) => key.clone(),
        (None, Some(hour)) => object_key(&hour_partition(hour)?, &args.request_id),
        (None, None) => {
            // The file name is the request id, encoded as the writer encodes it.
            let name = format!("/{}.json", object_name(&args.request_id));
            let found = source
                .list(bodies::PREFIX)
                .await?
                .into_iter()
                .find(|key| key.ends_with(&name));
            found.ok_or_else(|| not_found(format!("s3://{}/{}", args.bucket, bodies::PREFIX)))?
        }
    };
    match source.get(&key).await? {
        Some(raw) => Ok((key, raw)),
        None => Err(not_found(format!("s3://{}/{key}", args.bucket))),
    }
}

/// Writes (with `--out`) and describes the opened bodies.
fn report(args: &Args, opened: &Opened) -> Result<Value, BodiesCliError> {
    let file_stem = object_name(&args.request_id);
    let mut parts = serde_json::Map::new();
    for (part, opened_part) in [
        (Part::Request, &opened.request),
        (Part::Response, &opened.response),
    ] {
        let mut described = json!({
            "bytes": opened_part.bytes.len(),
            "truncated": opened_part.truncated,
        });
        match &args.out {
            Some(dir) => {
                let path = dir.join(format!("{file_stem}.{}", part.name()));
                write(&path, &opened_part.bytes)?;
                described["file"] = path.display().to_string().into();
            }
            None => match std::str::from_utf8(&opened_part.bytes) {
                Ok(text) => described["text"] = text.into(),
                Err(_) => {
                    described["base64"] = base64::engine::general_purpose::STANDARD
                        .encode(&opened_part.bytes)
                        .into()
                }
            },
        }
        parts.insert(part.name().into(), described);
    }
    let mut summary = json!({
        "request_id": args.request_id,
        "object": format!("s3://{}/{}", args.bucket, opened.key),
        "kms_key_id": opened.object.key_id,
        "event_id": opened.object.event_id,
        "time": opened.object.time,
        "authenticated": true,
    });
    if let Some(object) = summary.as_object_mut() {
        object.extend(parts);
    }
    Ok(summary)
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), BodiesCliError> {
    let failed = |source| BodiesCliError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    std::fs::write(path, bytes).map_err(failed)
}

pub async fn main(args: Vec<String>) -> u8 {
    let args = match parse_args(args, std::env::var("GATEWAY_AUDIT_BUCKET").ok()) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{HELP}");
            return 0;
        }
        Err(error) => {
            eprintln!("gateway-audit bodies: {error}");
            return error.exit_code();
        }
    };
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let source = S3Source {
        client: aws_sdk_s3::Client::new(&sdk),
        bucket: args.bucket.clone(),
    };
    let keys = Kms {
        client: aws_sdk_kms::Client::new(&sdk),
    };
    let result = match open(&args, &source, &keys).await {
        Ok(opened) => report(&args, &opened),
        Err(error) => Err(error),
    };
    match result {
        Ok(summary) => {
            println!("{summary:#}");
            0
        }
        Err(error) => {
            eprintln!("gateway-audit bodies: {error}");
            error.exit_code()
        }
    }
}

#[cfg(test)]
mod tests;
