//! Azure OpenAI: `/openai/deployments/{deployment}/{operation...}?api-version=` and the v1 API
//! `/openai/v1/{operation...}` (model in the body). Errors look like `{"error":{"code","message"}}`,
//! which the openai SDK turns into `APIStatusError` subclasses.

use serde_json::json;

use super::{percent_decode, segments, with_request_id, ErrorBody, Operation, ProviderApi};
use crate::audit::usage::UsageShape;
use crate::error::ErrorKind;

pub struct AzureOpenAi;

impl ProviderApi for AzureOpenAi {
    fn operation(&self, path: &str) -> Option<Operation> {
        let parts = segments(path)?;
        match parts.as_slice() {
            ["openai", "deployments", deployment, rest @ ..] if !rest.is_empty() => {
                Some(Operation {
                    name: rest.join("."),
                    model: Some(percent_decode(deployment)),
                })
            }
            ["openai", "v1", rest @ ..] if !rest.is_empty() => Some(Operation {
                name: rest.join("."),
                model: None,
            }),
            _ => None,
        }
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

    fn usage_shapes(&self) -> &'static [UsageShape] {
        &[UsageShape {
            path: &["usage"],
            input: "prompt_tokens",
            output: "completion_tokens",
            total: Some("total_tokens"),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_deployment_and_operation() {
        let op = AzureOpenAi
            .operation("/openai/deployments/gpt-4o/chat/completions")
            .unwrap();
        assert_eq!(op.name, "chat.completions");
        assert_eq!(op.model.as_deref(), Some("gpt-4o"));
        let v1 = AzureOpenAi.operation("/openai/v1/embeddings").unwrap();
        assert_eq!(v1.name, "embeddings");
        assert_eq!(v1.model, None);
        assert_eq!(AzureOpenAi.operation("/openai/deployments/gpt-4o"), None);
        assert_eq!(AzureOpenAi.operation("/admin"), None);
    }
}
