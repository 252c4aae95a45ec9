//! The `direct` transport: the route function calls the provider over HTTPS itself.

use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, TryStreamExt};
use http_body_util::{BodyExt, StreamBody};

use super::{Transport, TransportError, UpstreamRequest, UpstreamResponse};
use crate::config::{ConfigError, Settings};
use crate::headers::client_response_headers;
use crate::paths::{same_path, upstream_url, PathError};
use crate::providers::upstream::ResolvedCredential;
use crate::providers::Provider;
use crate::secrets::SecretCache;
use crate::upstream_auth::UpstreamAuth;

/// Where a provider's upstream is and how to authenticate to it, as configured: the provider's
/// [`crate::providers::UpstreamSpec`] resolved against the function's settings.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub provider: Provider,
    pub base_url: String,
    pub credential: ResolvedCredential,
}

const SECRET_TTL: Duration = Duration::from_secs(300);

impl UpstreamConfig {
    /// Reads the settings the provider's spec names (see [`crate::providers::UpstreamSpec::settings`]).
    pub fn from_settings(provider: Provider, settings: &dyn Settings) -> Result<Self, ConfigError> {
        let (base_url, credential) = provider.upstream().resolve(settings)?;
        Ok(UpstreamConfig {
            provider,
            base_url,
            credential,
        })
    }

    /// The upstream with its credential source (secret cache or signing credentials).
    pub fn build(&self, sdk: &aws_config::SdkConfig) -> Result<Upstream, ConfigError> {
        let auth = match &self.credential {
            ResolvedCredential::SigV4 { service, region } => UpstreamAuth::SigV4 {
                credentials: sdk.credentials_provider().ok_or(ConfigError::Missing(
                    "AWS credentials for signing upstream requests",
                ))?,
                region: region.clone(),
                service,
            },
            ResolvedCredential::ApiKey { header, secret_id } => UpstreamAuth::ApiKeyHeader {
                header: header.clone(),
                secret: SecretCache::new(
                    aws_sdk_secretsmanager::Client::new(sdk),
                    secret_id.clone(),
                    SECRET_TTL,
                ),
            },
        };
        Ok(Upstream {
            base_url: self.base_url.clone(),
            auth,
        })
    }
}

pub struct Upstream {
    /// `https://host[:port][/base]`, from configuration only, never from the request.
    pub base_url: String,
    pub auth: UpstreamAuth,
}

pub struct DirectTransport {
    client: reqwest::Client,
    upstream: Upstream,
    /// Deadline for the provider's status line and headers (streams may then run long).
    response_timeout: Duration,
}

impl DirectTransport {
    pub fn new(client: reqwest::Client, upstream: Upstream, response_timeout: Duration) -> Self {
        DirectTransport {
            client,
            upstream,
            response_timeout,
        }
    }

    async fn send_inner(
        &self,
        request: UpstreamRequest,
    ) -> Result<UpstreamResponse, TransportError> {
        // The one place a URL is made for a provider: from the configured base and the classified
        // path, refused if the URL type would send any other path.
        let url = upstream_url(&self.upstream.base_url, &request.path, &request.query)?;
        let mut outgoing = http::Request::builder()
            .method(request.method)
            .uri(url.as_str())
            .body(request.body)
            .map_err(|e| TransportError::Request(e.to_string()))?;
        *outgoing.headers_mut() = request.headers;
        self.upstream
            .auth
            .apply(&mut outgoing)
            .await
            .map_err(|e| TransportError::Credential(e.to_string()))?;
        // Signed (SigV4) over the same path; checked once more after the HTTP client re-parsed it.
        if outgoing.uri().path() != url.path() {
            return Err(PathError::Mismatch.into());
        }
        let outgoing = reqwest::Request::try_from(outgoing.map(reqwest::Body::from))
            .map_err(|e| TransportError::Request(e.without_url().to_string()))?;
        if !same_path(outgoing.url(), &url) {
            return Err(PathError::Mismatch.into());
        }

        let response = tokio::time::timeout(self.response_timeout, self.client.execute(outgoing))
            .await
            .map_err(|_| TransportError::Timeout(self.response_timeout.as_millis()))?
            .map_err(|e| {
                if e.is_timeout() {
                    TransportError::Timeout(self.response_timeout.as_millis())
                } else {
                    TransportError::Connect(e.without_url().to_string())
                }
            })?;
        let status = response.status();
        let headers = client_response_headers(response.headers());
        let stream = response
            .bytes_stream()
            .map_ok(http_body::Frame::data)
            .map_err(|e| -> super::BoxError { Box::new(e.without_url()) });
        Ok(UpstreamResponse {
            status,
            headers,
            body: StreamBody::new(stream).boxed_unsync(),
        })
    }
}

impl Transport for DirectTransport {
    fn send(
        &self,
        request: UpstreamRequest,
    ) -> BoxFuture<'_, Result<UpstreamResponse, TransportError>> {
        self.send_inner(request).boxed()
    }
}

/// The HTTP client every transport and the JWKS fetcher share: built once per execution environment.
/// It follows no redirect: a provider's 3xx is relayed as it came, so the upstream key is never sent to
/// a host the configuration did not name.
pub fn http_client(connect_timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-route HTTP server on 127.0.0.1 answering every request with `response`; counts requests.
    async fn serve(response: String) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut buffer = [0u8; 4096];
                let _ = socket.read(&mut buffer).await;
                let _ = socket.write_all(response.as_bytes()).await;
            }
        });
        (url, hits)
    }

    #[tokio::test]
    async fn a_redirect_is_relayed_never_followed() {
        let (elsewhere, elsewhere_hits) =
            serve("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".into()).await;
        let (provider, _) = serve(format!(
            "HTTP/1.1 307 Temporary Redirect\r\nlocation: {elsewhere}/steal\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        ))
        .await;
        let client = http_client(Duration::from_secs(2)).unwrap();
        let response = client
            .post(format!("{provider}/openai/deployments/d/chat/completions"))
            .header("api-key", "upstream-secret")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 307);
        assert_eq!(
            elsewhere_hits.load(Ordering::SeqCst),
            0,
            "the upstream key must not follow a redirect"
        );
    }
}
