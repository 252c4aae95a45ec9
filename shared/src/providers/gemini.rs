//! Gemini API: `/{version}/models/{model}:{method}` (generateContent, streamGenerateContent,
//! countTokens, embedContent, ...) plus model listing. The version is the client's (google-genai picks
//! it) among the ones Google publishes. Errors are Google's `{"error":{"code","message","status"}}`.

use http::HeaderName;
use serde_json::json;

use super::grammar::{token_model_syntax, Grammar, Rule};
use super::upstream::{CredentialSpec, DefaultEndpoint, TransportKind, UpstreamSpec};
use super::{with_request_id, ErrorBody, ProviderApi};
use crate::audit::usage::{CacheCounts, UsageShape};
use crate::error::ErrorKind;
use crate::paths::SegmentEncoding;

pub struct Gemini;

const RULES: &[Rule] = &[
    Rule::relay(
        "POST",
        "/{version}/models/{model}:generateContent",
        "generateContent",
    ),
    Rule::relay(
        "POST",
        "/{version}/models/{model}:streamGenerateContent",
        "streamGenerateContent",
    ),
    Rule::relay(
        "POST",
        "/{version}/models/{model}:countTokens",
        "countTokens",
    ),
    Rule::relay(
        "POST",
        "/{version}/models/{model}:embedContent",
        "embedContent",
    ),
    Rule::relay(
        "POST",
        "/{version}/models/{model}:batchEmbedContents",
        "batchEmbedContents",
    ),
    Rule::relay("POST", "/{version}/models/{model}:predict", "predict"),
    Rule::relay(
        "POST",
        "/{version}/models/{model}:predictLongRunning",
        "predictLongRunning",
    ),
    Rule::relay("GET", "/{version}/models", "models.list"),
    Rule::relay("GET", "/{version}/models/{model}", "models.get"),
    // Objects stored upstream under the shared key (long-running operations, files, caches, tuned
    // models, batches): other users' data unless the policy says otherwise.
    Rule::stored(
        "GET",
        "/{version}/models/{model}/operations/{id}",
        "operations.get",
    ),
    Rule::stored("GET", "/{version}/operations", "operations.list"),
    Rule::stored("GET", "/{version}/operations/{id}", "operations.get"),
    Rule::stored("GET", "/{version}/files", "files.list"),
    Rule::stored("POST", "/{version}/files", "files.create"),
    Rule::stored("POST", "/upload/{version}/files", "files.upload"),
    Rule::stored("GET", "/{version}/files/{id}", "files.get"),
    Rule::stored("DELETE", "/{version}/files/{id}", "files.delete"),
    Rule::stored("GET", "/{version}/cachedContents", "cachedContents.list"),
    Rule::stored("POST", "/{version}/cachedContents", "cachedContents.create"),
    Rule::stored(
        "GET",
        "/{version}/cachedContents/{id}",
        "cachedContents.get",
    ),
    Rule::stored(
        "PATCH",
        "/{version}/cachedContents/{id}",
        "cachedContents.patch",
    ),
    Rule::stored(
        "DELETE",
        "/{version}/cachedContents/{id}",
        "cachedContents.delete",
    ),
    Rule::stored("GET", "/{version}/tunedModels", "tunedModels.list"),
    Rule::stored("POST", "/{version}/tunedModels", "tunedModels.create"),
    Rule::stored("GET", "/{version}/tunedModels/{id}", "tunedModels.get"),
    Rule::stored(
        "DELETE",
        "/{version}/tunedModels/{id}",
        "tunedModels.delete",
    ),
    Rule::stored(
        "POST",
        "/{version}/models/{model}:batchGenerateContent",
        "batches.create",
    ),
    Rule::stored("GET", "/{version}/batches", "batches.list"),
    Rule::stored("GET", "/{version}/batches/{id}", "batches.get"),
    Rule::stored("DELETE", "/{version}/batches/{id}", "batches.delete"),
];

static GRAMMAR: Grammar = Grammar {
    rules: RULES,
    versions: &["v1", "v1beta", "v1alpha"],
    model_syntax: token_model_syntax,
};

/// Google's one public endpoint; outside AWS, so through the dispatcher by default.
static UPSTREAM: UpstreamSpec = UpstreamSpec {
    endpoint_setting: "GATEWAY_GEMINI_ENDPOINT",
    default_endpoint: DefaultEndpoint::Fixed("https://generativelanguage.googleapis.com"),
    credential: CredentialSpec::ApiKey {
        header: HeaderName::from_static("x-goog-api-key"),
        secret_id_setting: "GATEWAY_GEMINI_KEY_SECRET_ID",
    },
    default_transport: TransportKind::Queue,
    // Where the resource or endpoint serves requests is not in its URL: named by the deployment.
    region_settings: &["GATEWAY_GEMINI_REGION"],
};

impl ProviderApi for Gemini {
    fn upstream(&self) -> &'static UpstreamSpec {
        &UPSTREAM
    }

    fn grammar(&self) -> &'static Grammar {
        &GRAMMAR
    }

    fn segment_encoding(&self) -> SegmentEncoding {
        SegmentEncoding::KeepColon
    }

    fn error_body(&self, kind: ErrorKind, message: &str, request_id: &str) -> ErrorBody {
        let status = match kind {
            ErrorKind::BadRequest | ErrorKind::PayloadTooLarge => "INVALID_ARGUMENT",
            ErrorKind::Unauthorized => "UNAUTHENTICATED",
            ErrorKind::Forbidden => "PERMISSION_DENIED",
            ErrorKind::NotFound => "NOT_FOUND",
            ErrorKind::RateLimited => "RESOURCE_EXHAUSTED",
            ErrorKind::Internal => "INTERNAL",
            ErrorKind::BadGateway => "UNAVAILABLE",
            ErrorKind::GatewayTimeout => "DEADLINE_EXCEEDED",
        };
        ErrorBody {
            headers: Vec::new(),
            json: json!({
                "error": {
                    "code": kind.status().as_u16(),
                    "message": with_request_id(message, request_id),
                    "status": status,
                }
            }),
        }
    }

    // The REST API's camelCase; protobuf JSON parsers accept the snake_case name too.
    fn output_limit_fields(&self) -> &'static [&'static str] {
        &[
            "/generationConfig/maxOutputTokens",
            "/generation_config/max_output_tokens",
        ]
    }

    fn usage_shapes(&self) -> &'static [UsageShape] {
        &[UsageShape {
            path: &["usageMetadata"],
            input: "promptTokenCount",
            output: "candidatesTokenCount",
            total: Some("totalTokenCount"),
            // Thinking models' thoughts are billed as output but left out of the candidates' count.
            more_output: Some("thoughtsTokenCount"),
            cache: CacheCounts::WithinInput {
                read: &["cachedContentTokenCount"],
            },
        }]
    }
}

#[cfg(test)]
mod tests {
    use crate::providers::{Access, Provider};
    use http::Method;

    fn classify(method: Method, path: &str) -> Option<(&'static str, Option<String>, Access)> {
        Provider::Gemini
            .classify(&method, path)
            .ok()
            .map(|c| (c.operation.name, c.operation.model, c.operation.access))
    }

    #[test]
    fn reads_model_and_method_with_raw_or_encoded_colon() {
        for path in [
            "/v1beta/models/gemini-2.0-flash:streamGenerateContent",
            "/v1beta/models/gemini-2.0-flash%3AstreamGenerateContent",
        ] {
            let (name, model, access) = classify(Method::POST, path).unwrap();
            assert_eq!(
                (name, model.as_deref(), access),
                (
                    "streamGenerateContent",
                    Some("gemini-2.0-flash"),
                    Access::Relay
                )
            );
        }
        assert_eq!(
            classify(Method::GET, "/v1/models").unwrap().0,
            "models.list"
        );
        assert_eq!(
            classify(Method::GET, "/v1/models/gemini-pro").unwrap().0,
            "models.get"
        );
        assert_eq!(classify(Method::POST, "/v1beta/models/x:"), None);
        assert_eq!(
            classify(Method::POST, "/v1beta/models/x:deleteEverything"),
            None
        );
        assert_eq!(classify(Method::POST, "/v9/models/x:generateContent"), None);
        assert_eq!(
            classify(Method::GET, "/v1beta/models/x:generateContent"),
            None
        );
    }

    #[test]
    fn the_review_s_paths_never_classify_as_text() {
        for path in [
            "/v1beta/models/gemini-2.0-flash:generateContent.\\..\\veo-3.0-generate-001:predictLongRunning",
            "/v1beta/models/gemini-2.0-flash:generateContent.\\..\\..\\..\\v1beta\\files",
            "/v1beta/models/gemini-2.0-flash:generateContent.%5c..%5cveo:predictLongRunning",
        ] {
            assert!(Provider::Gemini.classify(&Method::POST, path).is_err(), "{path}");
            assert!(Provider::Gemini.classify(&Method::GET, path).is_err(), "{path}");
        }
        let (name, _, access) = classify(Method::GET, "/v1beta/files").unwrap();
        assert_eq!((name, access), ("files.list", Access::Stored));
        assert_eq!(
            classify(Method::POST, "/upload/v1beta/files").unwrap().2,
            Access::Stored
        );
    }
}
