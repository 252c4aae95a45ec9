//! What differs between the providers, as one small trait and three unit-struct impls.
//!
//! The set of providers is closed, so [`Provider`] is an enum and every question about a provider is an
//! exhaustive match: a new provider does not compile until it answers them all. Anything that is policy
//! (which scope an operation needs, which models a route allows) lives in [`crate::scopes`], not here.

mod azure_openai;
mod bedrock;
mod gemini;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response};
use serde::{Deserialize, Serialize};

use crate::audit::usage::UsageShape;
use crate::error::{ErrorKind, GatewayError};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Provider {
    #[serde(rename = "azure-openai")]
    AzureOpenAi,
    #[serde(rename = "bedrock-claude")]
    BedrockClaude,
    #[serde(rename = "gemini")]
    Gemini,
}

/// What a request asks the provider to do, read from its path (never from its body, which the authorizer
/// does not see).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// Dotted operation name, e.g. `chat.completions`, `converse-stream`, `generateContent`.
    pub name: String,
    /// Model, deployment or model id when the path names one (percent-decoded).
    pub model: Option<String>,
}

/// A gateway error rendered in a provider's wire format.
pub struct ErrorBody {
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub json: serde_json::Value,
}

/// The per-provider facts the data path needs.
pub trait ProviderApi: Sync {
    /// Reads the operation and model from the path below the route prefix; `None` for paths the gateway
    /// does not relay.
    fn operation(&self, path: &str) -> Option<Operation>;

    /// Renders one of the gateway's own errors the way this provider's API would, so the stock SDK raises
    /// its usual exception with our message.
    fn error_body(&self, kind: ErrorKind, message: &str, request_id: &str) -> ErrorBody;

    /// Where responses report token usage (JSON bodies and stream events alike).
    fn usage_shapes(&self) -> &'static [UsageShape];
}

impl Provider {
    pub const ALL: [Provider; 3] = [
        Provider::AzureOpenAi,
        Provider::BedrockClaude,
        Provider::Gemini,
    ];

    /// The path segment the route is mounted under: `/azure-openai/...`.
    pub fn route_prefix(self) -> &'static str {
        match self {
            Provider::AzureOpenAi => "azure-openai",
            Provider::BedrockClaude => "bedrock-claude",
            Provider::Gemini => "gemini",
        }
    }

    fn api(self) -> &'static dyn ProviderApi {
        match self {
            Provider::AzureOpenAi => &azure_openai::AzureOpenAi,
            Provider::BedrockClaude => &bedrock::Bedrock,
            Provider::Gemini => &gemini::Gemini,
        }
    }

    /// Splits `/gemini/v1beta/models/x:generateContent` into the provider and the path below its prefix.
    pub fn from_path(path: &str) -> Option<(Provider, &str)> {
        let trimmed = path.strip_prefix('/')?;
        Provider::ALL.into_iter().find_map(|provider| {
            let rest = trimmed.strip_prefix(provider.route_prefix())?;
            if rest.is_empty() {
                Some((provider, "/"))
            } else if rest.starts_with('/') {
                Some((provider, rest))
            } else {
                None
            }
        })
    }

    pub fn operation(self, path: &str) -> Option<Operation> {
        self.api().operation(path)
    }

    pub fn usage_shapes(self) -> &'static [UsageShape] {
        self.api().usage_shapes()
    }

    pub fn error_body(self, error: &GatewayError, request_id: &str) -> ErrorBody {
        self.api()
            .error_body(error.kind, &error.message, request_id)
    }

    /// A complete HTTP response for one of the gateway's own errors.
    pub fn error_response(self, error: &GatewayError, request_id: &str) -> Response<Bytes> {
        let body = self.error_body(error, request_id);
        let mut response = Response::new(Bytes::from(body.json.to_string()));
        *response.status_mut() = error.kind.status();
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Ok(value) = HeaderValue::from_str(request_id) {
            headers.insert(REQUEST_ID_HEADER, value);
        }
        for (name, value) in body.headers {
            headers.insert(name, value);
        }
        response
    }
}

/// Set on every response the gateway produces or relays, so a user can quote it to the platform team.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-gateway-request-id");

/// The message shown to clients: the gateway's text plus the request id to quote.
fn with_request_id(message: &str, request_id: &str) -> String {
    format!("{message} (gateway request id: {request_id})")
}

/// Path segments split on `/`, skipping empty ones; `None` if any segment is `.` or `..` (raw or
/// percent-encoded), which an upstream would resolve into a path the policy never saw.
fn segments(path: &str) -> Option<Vec<&str>> {
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let traverses = parts.iter().any(|s| {
        let decoded = percent_decode(s);
        decoded == "." || decoded == ".."
    });
    (!traverses).then_some(parts)
}

fn percent_decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_path_splits_prefix_and_rejects_lookalikes() {
        assert_eq!(
            Provider::from_path("/gemini/v1beta/models/m:generateContent"),
            Some((Provider::Gemini, "/v1beta/models/m:generateContent"))
        );
        assert_eq!(Provider::from_path("/geminix/v1"), None);
        assert_eq!(Provider::from_path("/other/x"), None);
        assert_eq!(
            Provider::from_path("/azure-openai"),
            Some((Provider::AzureOpenAi, "/"))
        );
    }

    #[test]
    fn dot_segments_never_classify() {
        for (provider, path) in [
            (
                Provider::AzureOpenAi,
                "/openai/deployments/d/chat/completions/../../../files",
            ),
            (
                Provider::AzureOpenAi,
                "/openai/deployments/d/chat/completions/%2e%2e/x",
            ),
            (Provider::BedrockClaude, "/model/../invoke"),
            (Provider::Gemini, "/v1beta/models/./x:generateContent"),
        ] {
            assert_eq!(provider.operation(path), None, "{path}");
        }
    }

    #[test]
    fn error_response_carries_status_and_request_id() {
        let err = GatewayError::new(ErrorKind::Forbidden, "no");
        for provider in Provider::ALL {
            let response = provider.error_response(&err, "req-1");
            assert_eq!(response.status(), 403);
            assert_eq!(response.headers()[REQUEST_ID_HEADER], "req-1");
            let text = String::from_utf8_lossy(response.body()).into_owned();
            assert!(text.contains("req-1"), "{provider:?}: {text}");
        }
    }
}
