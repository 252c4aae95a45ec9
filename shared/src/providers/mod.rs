//! What differs between the providers, as one small trait and three unit-struct impls.
//!
//! The set of providers is closed, so [`Provider`] is an enum and every question about a provider is an
//! exhaustive match: a new provider does not compile until it answers them all. Anything that is policy
//! (which scope an operation needs, which models a route allows) lives in [`crate::scopes`], not here.

mod azure_openai;
mod bedrock;
mod gemini;
pub mod grammar;
pub mod upstream;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response};
use serde::{Deserialize, Serialize};

use crate::audit::usage::UsageShape;
use crate::error::{ErrorKind, GatewayError};
use crate::paths::{PathError, RequestPath, SegmentEncoding, UpstreamPath};
pub use grammar::{Access, Grammar, ModelAt, Rule};
pub use upstream::{TransportKind, UpstreamSpec};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Provider {
    #[serde(rename = "azure-openai")]
    AzureOpenAi,
    #[serde(rename = "bedrock-claude")]
    BedrockClaude,
    #[serde(rename = "gemini")]
    Gemini,
}

/// What a request asks the provider to do, read from its method and path by the provider's grammar
/// (the body, which the authorizer does not see, only ever adds the model for [`ModelAt::Body`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// Dotted operation name from the grammar, e.g. `chat.completions`, `converse-stream`,
    /// `generateContent`, `files.list`.
    pub name: &'static str,
    /// The model the request names: decoded from the path, or (route only) read from the body.
    pub model: Option<String>,
    pub model_at: ModelAt,
    pub access: Access,
}

/// A request the grammar accepted: its operation and the path to send upstream, rebuilt from the
/// classified segments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classified {
    pub operation: Operation,
    pub path: UpstreamPath,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassifyError {
    #[error("{0}")]
    Path(#[from] PathError),
    #[error("{method} {path} is not an API the gateway relays on /{route}")]
    NotRelayed {
        method: String,
        path: String,
        route: &'static str,
    },
}

impl ClassifyError {
    /// The refusal as the client sees it: a bad path is a 400, an unknown API a 404.
    pub fn to_gateway_error(&self) -> GatewayError {
        let kind = match self {
            ClassifyError::Path(_) => ErrorKind::BadRequest,
            ClassifyError::NotRelayed { .. } => ErrorKind::NotFound,
        };
        GatewayError::new(kind, self.to_string())
    }
}

/// A gateway error rendered in a provider's wire format.
pub struct ErrorBody {
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub json: serde_json::Value,
}

/// The per-provider facts the data path needs.
pub trait ProviderApi: Sync {
    /// The relayed API: (method, path shape) -> operation.
    fn grammar(&self) -> &'static Grammar;

    /// How path segments are written upstream.
    fn segment_encoding(&self) -> SegmentEncoding;

    /// Renders one of the gateway's own errors the way this provider's API would, so the stock SDK raises
    /// its usual exception with our message.
    fn error_body(&self, kind: ErrorKind, message: &str, request_id: &str) -> ErrorBody;

    /// Where responses report token usage (JSON bodies and stream events alike).
    fn usage_shapes(&self) -> &'static [UsageShape];

    /// Where a request body caps the output tokens (JSON pointers, first present wins): what a
    /// budget reserves for the answer. None present: the model's default limit.
    fn output_limit_fields(&self) -> &'static [&'static str];

    /// Where the API is, the credential it takes, the transport its route uses by default.
    fn upstream(&self) -> &'static UpstreamSpec;

    /// The last bytes of a stream the gateway ends early (before the function's timeout), in the
    /// provider's stream framing, so the SDK raises its usual streaming error. By default an SSE event
    /// carrying the provider's error JSON, which the openai and google-genai SDKs raise on.
    fn stream_cut(&self, message: &str, request_id: &str) -> Bytes {
        let body = self.error_body(ErrorKind::GatewayTimeout, message, request_id);
        Bytes::from(format!("data: {}\n\n", body.json))
    }
}

impl Provider {
    pub const ALL: [Provider; 3] = [
        Provider::AzureOpenAi,
        Provider::BedrockClaude,
        Provider::Gemini,
    ];

    /// The path segment the route is mounted under (`/azure-openai/...`), and the provider's one
    /// spelling everywhere else: its function crate, audit events, the local stack's state file.
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

    /// Classifies a request by its method and its path below the route prefix (as the client encoded
    /// it). The one entry point for the authorizer, the route and the dispatcher alike.
    pub fn classify(self, method: &http::Method, path: &str) -> Result<Classified, ClassifyError> {
        let parsed = RequestPath::parse(path)?;
        let api = self.api();
        let operation =
            api.grammar()
                .classify(method, &parsed)
                .ok_or_else(|| ClassifyError::NotRelayed {
                    method: method.to_string(),
                    path: path.to_string(),
                    route: self.route_prefix(),
                })?;
        Ok(Classified {
            operation,
            path: UpstreamPath::from_segments(parsed.segments(), api.segment_encoding()),
        })
    }

    /// The relayed API's table (for policy checks and documentation).
    pub fn grammar(self) -> &'static Grammar {
        self.api().grammar()
    }

    /// Whether `model` is a well-formed model name for this provider.
    pub fn model_syntax(self, model: &str) -> bool {
        (self.api().grammar().model_syntax)(model)
    }

    /// Where the provider's API is and how the gateway authenticates to it.
    pub fn upstream(self) -> &'static UpstreamSpec {
        self.api().upstream()
    }

    pub fn usage_shapes(self) -> &'static [UsageShape] {
        self.api().usage_shapes()
    }

    pub fn output_limit_fields(self) -> &'static [&'static str] {
        self.api().output_limit_fields()
    }

    /// See [`ProviderApi::stream_cut`].
    pub fn stream_cut(self, message: &str, request_id: &str) -> Bytes {
        self.api().stream_cut(message, request_id)
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
