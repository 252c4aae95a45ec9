//! The `direct` transport: the route function calls the provider over HTTPS itself.

use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, TryStreamExt};
use http_body_util::{BodyExt, StreamBody};

use super::{Transport, TransportError, UpstreamRequest, UpstreamResponse};
use crate::headers::client_response_headers;
use crate::upstream_auth::UpstreamAuth;

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
        let mut url = format!("{}{}", self.upstream.base_url, request.path);
        if !request.query.is_empty() {
            url.push('?');
            url.push_str(&request.query);
        }
        let mut outgoing = http::Request::builder()
            .method(request.method)
            .uri(&url)
            .body(request.body)
            .map_err(|e| TransportError::Request(e.to_string()))?;
        *outgoing.headers_mut() = request.headers;
        self.upstream
            .auth
            .apply(&mut outgoing)
            .await
            .map_err(|e| TransportError::Credential(e.to_string()))?;
        let outgoing = reqwest::Request::try_from(outgoing.map(reqwest::Body::from))
            .map_err(|e| TransportError::Request(e.without_url().to_string()))?;

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
pub fn http_client(connect_timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .build()
}
