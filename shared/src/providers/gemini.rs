//! Gemini API: `/{version}/models/{model}:{method}` (generateContent, streamGenerateContent, countTokens,
//! embedContent, ...) plus model listing. The version segment is the client's (google-genai picks it), so it
//! is relayed as sent. Errors are Google's `{"error":{"code","message","status"}}`.

use serde_json::json;

use super::{percent_decode, segments, with_request_id, ErrorBody, Operation, ProviderApi};
use crate::audit::usage::UsageShape;
use crate::error::ErrorKind;

pub struct Gemini;

impl ProviderApi for Gemini {
    fn operation(&self, path: &str) -> Option<Operation> {
        let parts = segments(path)?;
        let (version, rest) = parts.split_first()?;
        if !version.starts_with('v') {
            return None;
        }
        match rest {
            ["models"] => Some(Operation {
                name: "models.list".to_string(),
                model: None,
            }),
            ["models", model_and_method] => {
                let decoded = percent_decode(model_and_method);
                match decoded.split_once(':') {
                    Some((model, method)) if !method.is_empty() => Some(Operation {
                        name: method.to_string(),
                        model: Some(model.to_string()),
                    }),
                    Some(_) => None,
                    None => Some(Operation {
                        name: "models.get".to_string(),
                        model: Some(decoded),
                    }),
                }
            }
            _ => None,
        }
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

    fn usage_shapes(&self) -> &'static [UsageShape] {
        &[UsageShape {
            path: &["usageMetadata"],
            input: "promptTokenCount",
            output: "candidatesTokenCount",
            total: Some("totalTokenCount"),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_model_and_method_with_raw_or_encoded_colon() {
        for path in [
            "/v1beta/models/gemini-2.0-flash:streamGenerateContent",
            "/v1beta/models/gemini-2.0-flash%3AstreamGenerateContent",
        ] {
            let op = Gemini.operation(path).unwrap();
            assert_eq!(op.name, "streamGenerateContent");
            assert_eq!(op.model.as_deref(), Some("gemini-2.0-flash"));
        }
        assert_eq!(Gemini.operation("/v1/models").unwrap().name, "models.list");
        assert_eq!(
            Gemini.operation("/v1/models/gemini-pro").unwrap().name,
            "models.get"
        );
        assert_eq!(Gemini.operation("/upload/v1beta/files"), None);
        assert_eq!(Gemini.operation("/v1beta/models/x:"), None);
    }
}
