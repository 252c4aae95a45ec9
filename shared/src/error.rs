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

    /// API Gateway's THROTTLED (a usage plan's or the stage's rate); the words of the CDK stack's
    /// gateway response (cdk/lib/provider-errors.ts).
    pub fn throttled() -> Self {
        GatewayError::new(
            ErrorKind::RateLimited,
            "Too many requests: your department's or the gateway's request rate limit was exceeded; retry after a short pause",
        )
    }

    /// API Gateway's QUOTA_EXCEEDED (a usage plan's daily quota).
    pub fn quota_exceeded() -> Self {
        GatewayError::new(
            ErrorKind::RateLimited,
            "Too many requests: your department's daily request quota is used up; it resets at 00:00 UTC",
        )
    }

    /// API Gateway's INVALID_API_KEY: no usage-plan key came back for the caller.
    pub fn no_usage_plan() -> Self {
        GatewayError::new(
            ErrorKind::Forbidden,
            "Forbidden: your account has no department with a usage plan on this gateway; ask the platform team to add you to a department group",
        )
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
