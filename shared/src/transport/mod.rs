//! How a request reaches its provider, behind one trait so the route code does not care.
//!
//! - [`direct`]: the route function calls the provider itself (lowest latency).
//! - [`queue`]: an envelope on the provider's SQS queue; the dispatcher function calls the provider and
//!   answers on the waiting environment's own reply queue.
//!
//! A transport receives a request already authorized and stripped of client credentials; it injects the
//! upstream credential and returns the provider's status, headers and a body that streams as it arrives.

pub mod direct;
pub mod envelope;
pub mod queue;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;

use crate::paths::UpstreamPath;
use crate::providers::Provider;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A response body relayed chunk by chunk, never buffered whole.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// A client request as it will be sent upstream (credentials already removed).
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    pub request_id: String,
    pub provider: Provider,
    /// The authorized principal's subject (for the dispatcher's logs; never a credential).
    pub subject: Option<String>,
    pub method: Method,
    /// Path below the route prefix, rebuilt from the classified segments (only a provider grammar
    /// makes one).
    pub path: UpstreamPath,
    /// Encoded query string without the leading `?` (and without `key=`), possibly empty.
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

pub struct UpstreamResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: ProxyBody,
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("the provider did not answer within {0} ms")]
    Timeout(u128),
    #[error("the provider could not be reached")]
    Connect(String),
    #[error("the upstream credential could not be prepared")]
    Credential(String),
    #[error("the request could not be sent upstream")]
    Request(String),
    /// The URL would not carry the classified path (see [`crate::paths`]); nothing was sent.
    #[error("the request path cannot be relayed as authorized")]
    Path(#[from] crate::paths::PathError),
}

pub trait Transport: Send + Sync {
    /// Sends one request and resolves once the provider's status and headers arrived; the body streams.
    fn send(
        &self,
        request: UpstreamRequest,
    ) -> BoxFuture<'_, Result<UpstreamResponse, TransportError>>;

    /// Prepares what the transport needs (the queue transport's reply queue), once at init, so the
    /// first request does not pay for it.
    fn prepare(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(async { Ok(()) })
    }
}
