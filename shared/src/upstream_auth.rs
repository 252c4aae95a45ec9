//! Injecting the upstream credential into a request that already lost the client's.
//!
//! Azure OpenAI and Gemini take an API key in a header (which header is data); Bedrock takes a SigV4
//! signature made with the function's own role. The key or signature exists only on the outgoing request.

use std::time::SystemTime;

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use crate::secrets::SecretCache;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamAuthError {
    #[error("upstream key unavailable: {0}")]
    Secret(#[from] crate::secrets::SecretError),
    #[error("upstream key is not a valid header value")]
    KeyNotHeaderSafe,
    #[error("AWS credentials unavailable: {0}")]
    Credentials(String),
    #[error("request could not be signed: {0}")]
    Signing(String),
}

pub enum UpstreamAuth {
    /// An API key from Secrets Manager in the given header (`api-key`, `x-goog-api-key`).
    ApiKeyHeader {
        header: HeaderName,
        secret: SecretCache,
    },
    /// SigV4 with the execution role's credentials (`service` is the signing name, `bedrock`).
    SigV4 {
        credentials: SharedCredentialsProvider,
        region: String,
        service: &'static str,
    },
}

impl UpstreamAuth {
    pub async fn apply(&self, request: &mut http::Request<Bytes>) -> Result<(), UpstreamAuthError> {
        match self {
            UpstreamAuth::ApiKeyHeader { header, secret } => {
                let stored = secret.get().await?;
                let key = crate::secrets::api_key(stored.expose()).ok_or_else(|| {
                    crate::secrets::SecretError::NoApiKey(secret.secret_id().to_string())
                })?;
                let mut value = HeaderValue::from_str(key.expose())
                    .map_err(|_| UpstreamAuthError::KeyNotHeaderSafe)?;
                value.set_sensitive(true);
                request.headers_mut().insert(header.clone(), value);
                Ok(())
            }
            UpstreamAuth::SigV4 {
                credentials,
                region,
                service,
            } => {
                let creds = credentials
                    .provide_credentials()
                    .await
                    .map_err(|e| UpstreamAuthError::Credentials(e.to_string()))?;
                let identity = creds.into();
                let params = v4::SigningParams::builder()
                    .identity(&identity)
                    .region(region)
                    .name(service)
                    .time(SystemTime::now())
                    .settings(SigningSettings::default())
                    .build()
                    .map_err(|e| UpstreamAuthError::Signing(e.to_string()))?
                    .into();
                let uri = request.uri().to_string();
                let headers: Vec<(&str, &str)> = request
                    .headers()
                    .iter()
                    .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v)))
                    .collect();
                let signable = SignableRequest::new(
                    request.method().as_str(),
                    uri,
                    headers.into_iter(),
                    SignableBody::Bytes(request.body()),
                )
                .map_err(|e| UpstreamAuthError::Signing(e.to_string()))?;
                let (instructions, _signature) = sign(signable, &params)
                    .map_err(|e| UpstreamAuthError::Signing(e.to_string()))?
                    .into_parts();
                instructions.apply_to_request_http1x(request);
                Ok(())
            }
        }
    }
}
