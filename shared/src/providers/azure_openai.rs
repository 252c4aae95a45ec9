//! Azure OpenAI: the deployment API `/openai/deployments/{deployment}/{operation}?api-version=` (the
//! deployment is the model), and the v1 API `/openai/v1/{operation}` plus `/openai/responses` (model in
//! the JSON body). Errors look like `{"error":{"code","message"}}`, which the openai SDK turns into
//! `APIStatusError` subclasses.

use http::HeaderName;
use serde_json::json;

use super::grammar::{token_model_syntax, Grammar, Rule};
use super::upstream::{CredentialSpec, DefaultEndpoint, TransportKind, UpstreamSpec};
use super::{with_request_id, ErrorBody, ProviderApi};
use crate::audit::usage::{CacheCounts, UsageShape};
use crate::error::ErrorKind;
use crate::paths::SegmentEncoding;

pub struct AzureOpenAi;

/// What `/azure-openai` relays. `{version?}` is the v1 API's `v1` segment: the AzureOpenAI client sends
/// `/openai/files`, the v1 OpenAI client `/openai/v1/files`, for the same stored objects.
const RULES: &[Rule] = &[
    Rule::relay(
        "POST",
        "/openai/deployments/{model}/chat/completions",
        "chat.completions",
    ),
    Rule::relay(
        "POST",
        "/openai/deployments/{model}/completions",
        "completions",
    ),
    Rule::relay(
        "POST",
        "/openai/deployments/{model}/embeddings",
        "embeddings",
    ),
    Rule::relay(
        "POST",
        "/openai/deployments/{model}/audio/transcriptions",
        "audio.transcriptions",
    ),
    Rule::relay(
        "POST",
        "/openai/deployments/{model}/audio/translations",
        "audio.translations",
    ),
    Rule::relay(
        "POST",
        "/openai/deployments/{model}/audio/speech",
        "audio.speech",
    ),
    Rule::relay(
        "POST",
        "/openai/deployments/{model}/images/generations",
        "images.generations",
    ),
    Rule::relay(
        "POST",
        "/openai/deployments/{model}/images/edits",
        "images.edits",
    ),
    Rule::body_model(
        "POST",
        "/openai/{version}/chat/completions",
        "chat.completions",
    ),
    Rule::body_model("POST", "/openai/{version}/completions", "completions"),
    Rule::body_model("POST", "/openai/{version}/embeddings", "embeddings"),
    Rule::body_model("POST", "/openai/{version?}/responses", "responses"),
    Rule::body_model(
        "POST",
        "/openai/{version}/audio/transcriptions",
        "audio.transcriptions",
    ),
    Rule::body_model(
        "POST",
        "/openai/{version}/audio/translations",
        "audio.translations",
    ),
    Rule::body_model("POST", "/openai/{version}/audio/speech", "audio.speech"),
    Rule::body_model(
        "POST",
        "/openai/{version}/images/generations",
        "images.generations",
    ),
    Rule::body_model("POST", "/openai/{version}/images/edits", "images.edits"),
    Rule::relay("GET", "/openai/{version?}/models", "models.list"),
    Rule::relay("GET", "/openai/{version?}/models/{model}", "models.get"),
    // Objects stored upstream under the shared key: other users' data unless the policy says otherwise.
    Rule::stored(
        "GET",
        "/openai/{version?}/chat/completions",
        "chat.completions.list",
    ),
    Rule::stored(
        "GET",
        "/openai/{version?}/chat/completions/{id}",
        "chat.completions.retrieve",
    ),
    Rule::stored(
        "POST",
        "/openai/{version?}/chat/completions/{id}",
        "chat.completions.update",
    ),
    Rule::stored(
        "DELETE",
        "/openai/{version?}/chat/completions/{id}",
        "chat.completions.delete",
    ),
    Rule::stored(
        "GET",
        "/openai/{version?}/chat/completions/{id}/messages",
        "chat.completions.messages",
    ),
    Rule::stored(
        "GET",
        "/openai/{version?}/responses/{id}",
        "responses.retrieve",
    ),
    Rule::stored(
        "DELETE",
        "/openai/{version?}/responses/{id}",
        "responses.delete",
    ),
    Rule::stored(
        "POST",
        "/openai/{version?}/responses/{id}/cancel",
        "responses.cancel",
    ),
    Rule::stored(
        "GET",
        "/openai/{version?}/responses/{id}/input_items",
        "responses.input_items",
    ),
    Rule::stored("GET", "/openai/{version?}/files", "files.list"),
    Rule::stored("POST", "/openai/{version?}/files", "files.create"),
    Rule::stored("GET", "/openai/{version?}/files/{id}", "files.retrieve"),
    Rule::stored("DELETE", "/openai/{version?}/files/{id}", "files.delete"),
    Rule::stored(
        "GET",
        "/openai/{version?}/files/{id}/content",
        "files.content",
    ),
    Rule::stored("GET", "/openai/{version?}/batches", "batches.list"),
    Rule::stored("POST", "/openai/{version?}/batches", "batches.create"),
    Rule::stored("GET", "/openai/{version?}/batches/{id}", "batches.retrieve"),
    Rule::stored(
        "POST",
        "/openai/{version?}/batches/{id}/cancel",
        "batches.cancel",
    ),
    Rule::stored(
        "GET",
        "/openai/{version?}/fine_tuning/jobs",
        "fine_tuning.jobs.list",
    ),
    Rule::stored(
        "POST",
        "/openai/{version?}/fine_tuning/jobs",
        "fine_tuning.jobs.create",
    ),
    Rule::stored(
        "GET",
        "/openai/{version?}/fine_tuning/jobs/{id}",
        "fine_tuning.jobs.retrieve",
    ),
    Rule::stored(
        "POST",
        "/openai/{version?}/fine_tuning/jobs/{id}/cancel",
        "fine_tuning.jobs.cancel",
    ),
    Rule::stored(
        "GET",
        "/openai/{version?}/fine_tuning/jobs/{id}/events",
        "fine_tuning.jobs.events",
    ),
    Rule::stored("GET", "/openai/{version?}/assistants", "assistants.list"),
    Rule::stored("POST", "/openai/{version?}/assistants", "assistants.create"),
    Rule::stored(
        "GET",
        "/openai/{version?}/assistants/{id}",
        "assistants.retrieve",
    ),
    Rule::stored(
        "DELETE",
        "/openai/{version?}/assistants/{id}",
        "assistants.delete",
    ),
    Rule::stored("POST", "/openai/{version?}/threads", "threads.create"),
    Rule::stored("GET", "/openai/{version?}/threads/{id}", "threads.retrieve"),
    Rule::stored(
        "DELETE",
        "/openai/{version?}/threads/{id}",
        "threads.delete",
    ),
    Rule::stored(
        "GET",
        "/openai/{version?}/threads/{id}/messages",
        "threads.messages.list",
    ),
    Rule::stored(
        "POST",
        "/openai/{version?}/threads/{id}/runs",
        "threads.runs.create",
    ),
    Rule::stored(
        "GET",
        "/openai/{version?}/vector_stores",
        "vector_stores.list",
    ),
    Rule::stored(
        "POST",
        "/openai/{version?}/vector_stores",
        "vector_stores.create",
    ),
    Rule::stored(
        "GET",
        "/openai/{version?}/vector_stores/{id}",
        "vector_stores.retrieve",
    ),
    Rule::stored(
        "DELETE",
        "/openai/{version?}/vector_stores/{id}",
        "vector_stores.delete",
    ),
];

static GRAMMAR: Grammar = Grammar {
    rules: RULES,
    versions: &["v1"],
    model_syntax: token_model_syntax,
};

/// Each customer has their own Azure resource, so the endpoint has no default. Outside AWS: reached
/// through the dispatcher in the VPC unless the deployment says otherwise.
static UPSTREAM: UpstreamSpec = UpstreamSpec {
    endpoint_setting: "GATEWAY_AZURE_OPENAI_ENDPOINT",
    default_endpoint: DefaultEndpoint::Required,
    credential: CredentialSpec::ApiKey {
        header: HeaderName::from_static("api-key"),
        secret_id_setting: "GATEWAY_AZURE_OPENAI_KEY_SECRET_ID",
    },
    default_transport: TransportKind::Queue,
    // Where the resource or endpoint serves requests is not in its URL: named by the deployment.
    region_settings: &["GATEWAY_AZURE_OPENAI_REGION"],
};

impl ProviderApi for AzureOpenAi {
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
        let code = match kind {
            ErrorKind::BadRequest => "BadRequest",
            ErrorKind::Unauthorized => "Unauthorized",
            ErrorKind::Forbidden => "PermissionDenied",
            ErrorKind::NotFound => "NotFound",
            ErrorKind::PayloadTooLarge => "PayloadTooLarge",
            ErrorKind::RateLimited => "RateLimitExceeded",
            ErrorKind::Internal => "InternalServerError",
            ErrorKind::BadGateway => "BadGateway",
            ErrorKind::GatewayTimeout => "Timeout",
        };
        ErrorBody {
            headers: Vec::new(),
            json: json!({
                "error": {
                    "code": code,
                    "message": with_request_id(message, request_id),
                    "type": "gateway_error",
                    "param": null,
                    "request_id": request_id,
                }
            }),
        }
    }

    // Chat (`max_completion_tokens`, the older `max_tokens`) and the Responses API.
    fn output_limit_fields(&self) -> &'static [&'static str] {
        &[
            "/max_completion_tokens",
            "/max_tokens",
            "/max_output_tokens",
        ]
    }

    fn usage_shapes(&self) -> &'static [UsageShape] {
        const CHAT_CACHE: CacheCounts = CacheCounts::WithinInput {
            read: &["prompt_tokens_details", "cached_tokens"],
        };
        const RESPONSES_CACHE: CacheCounts = CacheCounts::WithinInput {
            read: &["input_tokens_details", "cached_tokens"],
        };
        &[
            // Chat completions, completions and embeddings (body and the stream's last chunk).
            UsageShape {
                path: &["usage"],
                input: "prompt_tokens",
                output: "completion_tokens",
                total: Some("total_tokens"),
                more_output: None,
                cache: CHAT_CACHE,
            },
            // The Responses API's body.
            UsageShape {
                path: &["usage"],
                input: "input_tokens",
                output: "output_tokens",
                total: Some("total_tokens"),
                more_output: None,
                cache: RESPONSES_CACHE,
            },
            // The Responses API stream's `response.completed` event.
            UsageShape {
                path: &["response", "usage"],
                input: "input_tokens",
                output: "output_tokens",
                total: Some("total_tokens"),
                more_output: None,
                cache: RESPONSES_CACHE,
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use crate::providers::{Access, ModelAt, Provider};
    use http::Method;

    fn classify(
        method: Method,
        path: &str,
    ) -> Option<(&'static str, Option<String>, ModelAt, Access)> {
        Provider::AzureOpenAi.classify(&method, path).ok().map(|c| {
            (
                c.operation.name,
                c.operation.model,
                c.operation.model_at,
                c.operation.access,
            )
        })
    }

    #[test]
    fn deployment_api_names_the_model_in_the_path() {
        let (name, model, at, access) =
            classify(Method::POST, "/openai/deployments/gpt-4o/chat/completions").unwrap();
        assert_eq!(
            (name, model.as_deref(), at, access),
            (
                "chat.completions",
                Some("gpt-4o"),
                ModelAt::Path,
                Access::Relay
            )
        );
        assert_eq!(
            classify(Method::POST, "/openai/deployments/gpt-4o/audio/speech")
                .unwrap()
                .0,
            "audio.speech"
        );
        assert_eq!(classify(Method::POST, "/openai/deployments/gpt-4o"), None);
        assert_eq!(classify(Method::POST, "/admin"), None);
    }

    #[test]
    fn v1_api_names_the_model_in_the_body() {
        let (name, model, at, _) = classify(Method::POST, "/openai/v1/embeddings").unwrap();
        assert_eq!((name, model, at), ("embeddings", None, ModelAt::Body));
        assert_eq!(
            classify(Method::POST, "/openai/responses").unwrap().0,
            "responses"
        );
        assert_eq!(
            classify(Method::POST, "/openai/v1/responses").unwrap().0,
            "responses"
        );
        assert_eq!(classify(Method::POST, "/openai/v2/embeddings"), None);
    }

    #[test]
    fn the_method_is_part_of_the_operation() {
        // The review's findings: listing stored completions, reading their messages, deleting a
        // response, all under the shared key, used to pass as inference.
        for (method, path, op) in [
            (
                Method::GET,
                "/openai/v1/chat/completions",
                "chat.completions.list",
            ),
            (
                Method::GET,
                "/openai/v1/chat/completions/chatcmpl-1/messages",
                "chat.completions.messages",
            ),
            (
                Method::DELETE,
                "/openai/v1/responses/resp_1",
                "responses.delete",
            ),
            (Method::GET, "/openai/files", "files.list"),
            (Method::GET, "/openai/v1/files", "files.list"),
        ] {
            let (name, _, _, access) = classify(method, path).unwrap();
            assert_eq!((name, access), (op, Access::Stored), "{path}");
        }
        assert_eq!(
            classify(Method::GET, "/openai/deployments/gpt-4o/chat/completions"),
            None
        );
        assert_eq!(classify(Method::PUT, "/openai/v1/chat/completions"), None);
        assert_eq!(
            classify(
                Method::POST,
                "/openai/deployments/gpt-4o/chat/completions/x"
            ),
            None
        );
    }
}
