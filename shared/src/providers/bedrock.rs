//! Bedrock runtime: `/model/{modelId}/{invoke|invoke-with-response-stream|converse|converse-stream|count-tokens}`.
//! boto3 percent-encodes the model id (`...-v1%3A0`); the path is relayed as the client encoded it and only
//! decoded here, for policy decisions. Errors are rest-json: `x-amzn-ErrorType` names the exception and the
//! body carries `message`, which botocore turns into `ClientError` with that code.

use http::{HeaderName, HeaderValue};
use serde_json::json;

use super::{percent_decode, segments, with_request_id, ErrorBody, Operation, ProviderApi};
use crate::audit::usage::UsageShape;
use crate::error::ErrorKind;

pub struct Bedrock;

const ERROR_TYPE_HEADER: HeaderName = HeaderName::from_static("x-amzn-errortype");

impl ProviderApi for Bedrock {
    fn operation(&self, path: &str) -> Option<Operation> {
        match segments(path)?.as_slice() {
            ["model", model, action] => Some(Operation {
                name: (*action).to_string(),
                model: Some(percent_decode(model)),
            }),
            _ => None,
        }
    }

    fn error_body(&self, kind: ErrorKind, message: &str, request_id: &str) -> ErrorBody {
        let error_type = match kind {
            ErrorKind::BadRequest | ErrorKind::PayloadTooLarge => "ValidationException",
            ErrorKind::Unauthorized => "UnrecognizedClientException",
            ErrorKind::Forbidden => "AccessDeniedException",
            ErrorKind::NotFound => "ResourceNotFoundException",
            ErrorKind::RateLimited => "ThrottlingException",
            ErrorKind::Internal | ErrorKind::BadGateway => "InternalServerException",
            ErrorKind::GatewayTimeout => "ModelTimeoutException",
        };
        let mut headers = vec![(ERROR_TYPE_HEADER, HeaderValue::from_static(error_type))];
        if let Ok(value) = HeaderValue::from_str(request_id) {
            headers.push((HeaderName::from_static("x-amzn-requestid"), value));
        }
        ErrorBody {
            headers,
            json: json!({ "message": with_request_id(message, request_id) }),
        }
    }

    fn usage_shapes(&self) -> &'static [UsageShape] {
        &[
            // InvokeModel body (Anthropic messages) and the stream's message_delta.
            UsageShape {
                path: &["usage"],
                input: "input_tokens",
                output: "output_tokens",
                total: None,
            },
            // The stream's message_start.
            UsageShape {
                path: &["message", "usage"],
                input: "input_tokens",
                output: "output_tokens",
                total: None,
            },
            // Converse body and converse-stream's metadata event.
            UsageShape {
                path: &["usage"],
                input: "inputTokens",
                output: "outputTokens",
                total: Some("totalTokens"),
            },
            // invoke-with-response-stream's final chunk.
            UsageShape {
                path: &["amazon-bedrock-invocationMetrics"],
                input: "inputTokenCount",
                output: "outputTokenCount",
                total: None,
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_model_id_for_policy_only() {
        let op = Bedrock
            .operation("/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream")
            .unwrap();
        assert_eq!(op.name, "converse-stream");
        assert_eq!(
            op.model.as_deref(),
            Some("anthropic.claude-3-5-sonnet-20240620-v1:0")
        );
        assert_eq!(Bedrock.operation("/model/x"), None);
        assert_eq!(Bedrock.operation("/guardrail/x/version/1/apply"), None);
    }

    #[test]
    fn error_names_the_exception_in_a_header() {
        let body = Bedrock.error_body(ErrorKind::Forbidden, "no", "r1");
        assert!(body
            .headers
            .iter()
            .any(|(n, v)| n == "x-amzn-errortype" && v == "AccessDeniedException"));
        assert!(body.json["message"].as_str().unwrap().contains("r1"));
    }
}
