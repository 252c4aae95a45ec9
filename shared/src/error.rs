//! The errors the gateway itself answers with (as opposed to provider errors, which pass through untouched).
//!
//! Every error has a kind that fixes its HTTP status; each provider renders it in its own JSON shape
//! (see [`crate::providers`]) so stock SDKs raise their normal exceptions. Messages must never contain a
//! credential: they are shown to clients and written to logs.

use http::StatusCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Internal,
    BadGateway,
    GatewayTimeout,
}

impl ErrorKind {
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::BadGateway => StatusCode::BAD_GATEWAY,
            ErrorKind::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct GatewayError {
    pub kind: ErrorKind,
    pub message: String,
}

impl GatewayError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        GatewayError {
            kind,
            message: message.into(),
        }
    }

    /// The one message used for every authentication failure: the precise reason goes to the logs only,
    /// so a caller probing with forged tokens learns nothing about which check failed.
    pub fn unauthorized() -> Self {
        GatewayError::new(
            ErrorKind::Unauthorized,
            "Unauthorized: the gateway token or API key is missing, expired or invalid. Sign in again for a fresh token, or ask an administrator for a new key.",
        )
    }
}
