//! Bedrock runtime: `/model/{modelId}/{invoke|invoke-with-response-stream|converse|converse-stream|count-tokens}`.
//! boto3 percent-encodes the model id (`...-v1%3A0`, and the `/` of an ARN as `%2F`); the gateway decodes
//! it for the policy and re-encodes it the same way upstream (and signs that). Errors are rest-json:
//! `x-amzn-ErrorType` names the exception and the body carries `message`, which botocore turns into
//! `ClientError` with that code.

use http::{HeaderName, HeaderValue};
use serde_json::json;

use super::grammar::{Grammar, Rule};
use super::upstream::{CredentialSpec, DefaultEndpoint, TransportKind, UpstreamSpec};
use super::{with_request_id, ErrorBody, ProviderApi};
use crate::audit::usage::{CacheCounts, UsageShape};
use crate::error::ErrorKind;
use crate::paths::SegmentEncoding;

pub struct Bedrock;

const ERROR_TYPE_HEADER: HeaderName = HeaderName::from_static("x-amzn-errortype");

const RULES: &[Rule] = &[
    Rule::relay("POST", "/model/{model}/invoke", "invoke"),
    Rule::relay(
        "POST",
        "/model/{model}/invoke-with-response-stream",
        "invoke-with-response-stream",
    ),
    Rule::relay("POST", "/model/{model}/converse", "converse"),
    Rule::relay("POST", "/model/{model}/converse-stream", "converse-stream"),
    Rule::relay("POST", "/model/{model}/count-tokens", "count-tokens"),
];

static GRAMMAR: Grammar = Grammar {
    rules: RULES,
    versions: &[],
    model_syntax: bedrock_model_syntax,
};

/// Resource types a Bedrock model ARN may name.
const ARN_RESOURCE_TYPES: &[&str] = &[
    "foundation-model",
    "inference-profile",
    "application-inference-profile",
    "provisioned-model",
    "custom-model",
    "imported-model",
];

/// A model id (`anthropic.claude-3-5-sonnet-20240620-v1:0`), an inference profile id
/// (`us.anthropic.claude-...`), or a model ARN (`arn:aws:bedrock:{region}:{account}:{type}/{id}`). The
/// ARN's one `/` is the only place a `/` is legitimate in a model; `..` never is.
pub fn bedrock_model_syntax(model: &str) -> bool {
    fn id_part(id: &str) -> bool {
        !id.is_empty()
            && id.len() <= 256
            && id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
            && !id.contains("..")
    }
    let Some(arn) = model.strip_prefix("arn:") else {
        return id_part(model);
    };
    let mut fields = arn.splitn(5, ':');
    let (Some(partition), Some(service), Some(region), Some(account), Some(resource)) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return false;
    };
    let Some((kind, id)) = resource.split_once('/') else {
        return false;
    };
    matches!(partition, "aws" | "aws-cn" | "aws-us-gov")
        && service == "bedrock"
        && !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && account.len() <= 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && ARN_RESOURCE_TYPES.contains(&kind)
        && id_part(id)
}

/// Inside AWS: signed with the route's own role and called directly. The endpoint setting is the AWS
/// SDK's own service-specific variable, so one spelling serves the SDKs and the gateway.
const REGION_SETTINGS: &[&str] = &["GATEWAY_BEDROCK_REGION", "AWS_REGION"];

static UPSTREAM: UpstreamSpec = UpstreamSpec {
    endpoint_setting: "AWS_ENDPOINT_URL_BEDROCK_RUNTIME",
    default_endpoint: DefaultEndpoint::AwsRegional {
        service: "bedrock-runtime",
    },
    credential: CredentialSpec::SigV4 {
        service: "bedrock",
        region_settings: REGION_SETTINGS,
    },
    default_transport: TransportKind::Direct,
    // The region requests are signed for is the region they are served (and priced) in.
    region_settings: REGION_SETTINGS,
};

impl ProviderApi for Bedrock {
    fn upstream(&self) -> &'static UpstreamSpec {
        &UPSTREAM
    }

    /// An exception frame, as Bedrock ends a stream that fails midway; boto3 raises it as an
    /// `EventStreamError`. `internalServerException` is in the union of both streaming operations
    /// (invoke-with-response-stream and converse-stream).
    fn stream_cut(&self, message: &str, request_id: &str) -> bytes::Bytes {
        let payload = json!({ "message": with_request_id(message, request_id) }).to_string();
        bytes::Bytes::from(crate::eventstream::encode_frame(
            &[
                (":exception-type", "internalServerException"),
                (":content-type", "application/json"),
                (":message-type", "exception"),
            ],
            payload.as_bytes(),
        ))
    }

    fn grammar(&self) -> &'static Grammar {
        &GRAMMAR
    }

    fn segment_encoding(&self) -> SegmentEncoding {
        SegmentEncoding::EncodeColon
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

    // InvokeModel's Anthropic body, and Converse's inference configuration.
    fn output_limit_fields(&self) -> &'static [&'static str] {
        &["/max_tokens", "/inferenceConfig/maxTokens"]
    }

    fn usage_shapes(&self) -> &'static [UsageShape] {
        // Anthropic counts cache reads and writes beside `input_tokens`, which leaves them out.
        const ANTHROPIC_CACHE: CacheCounts = CacheCounts::BesideInput {
            read: "cache_read_input_tokens",
            write: "cache_creation_input_tokens",
        };
        &[
            // InvokeModel body (Anthropic messages) and the stream's message_delta.
            UsageShape {
                path: &["usage"],
                input: "input_tokens",
                output: "output_tokens",
                total: None,
                more_output: None,
                cache: ANTHROPIC_CACHE,
            },
            // The stream's message_start.
            UsageShape {
                path: &["message", "usage"],
                input: "input_tokens",
                output: "output_tokens",
                total: None,
                more_output: None,
                cache: ANTHROPIC_CACHE,
            },
            // Converse body and converse-stream's metadata event.
            UsageShape {
                path: &["usage"],
                input: "inputTokens",
                output: "outputTokens",
                total: Some("totalTokens"),
                more_output: None,
                cache: CacheCounts::BesideInput {
                    read: "cacheReadInputTokens",
                    write: "cacheWriteInputTokens",
                },
            },
            // invoke-with-response-stream's final chunk.
            UsageShape {
                path: &["amazon-bedrock-invocationMetrics"],
                input: "inputTokenCount",
                output: "outputTokenCount",
                total: None,
                more_output: None,
                cache: CacheCounts::BesideInput {
                    read: "cacheReadInputTokenCount",
                    write: "cacheWriteInputTokenCount",
                },
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Provider;
    use http::Method;

    #[test]
    fn decodes_model_id_for_policy_and_reencodes_it_upstream() {
        let classified = Provider::BedrockClaude
            .classify(
                &Method::POST,
                "/model/anthropic.claude-3-5-sonnet-20240620-v1:0/converse-stream",
            )
            .unwrap();
        assert_eq!(classified.operation.name, "converse-stream");
        assert_eq!(
            classified.operation.model.as_deref(),
            Some("anthropic.claude-3-5-sonnet-20240620-v1:0")
        );
        assert_eq!(
            classified.path.as_str(),
            "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream"
        );
        let arn = Provider::BedrockClaude
            .classify(
                &Method::POST,
                "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-3-haiku-20240307-v1%3A0/invoke",
            )
            .unwrap();
        assert_eq!(
            arn.operation.model.as_deref(),
            Some("arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-haiku-20240307-v1:0")
        );
        assert!(arn
            .path
            .as_str()
            .contains("inference-profile%2Fus.anthropic"));
        for (method, path) in [
            (Method::POST, "/model/x"),
            (Method::POST, "/guardrail/x/version/1/apply"),
            (Method::GET, "/model/anthropic.claude-v2/invoke"),
        ] {
            assert!(
                Provider::BedrockClaude.classify(&method, path).is_err(),
                "{path}"
            );
        }
    }

    #[test]
    fn model_ids_never_carry_a_path() {
        for good in [
            "anthropic.claude-3-5-sonnet-20241022-v2:0",
            "us.anthropic.claude-3-5-sonnet-20241022-v2:0",
            "anthropic.claude-instant-v1:2:100k",
            "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-v2",
            "arn:aws-us-gov:bedrock:us-gov-west-1:123456789012:provisioned-model/abc123",
        ] {
            assert!(bedrock_model_syntax(good), "{good}");
        }
        for bad in [
            "anthropic.claude-3-5-sonnet-20241022-v2:0/../amazon.nova-pro-v1:0",
            "anthropic.claude-3-5-sonnet-20241022-v2:0/x",
            "anthropic..claude",
            "arn:aws:bedrock:us-east-1::foundation-model/../x",
            "arn:aws:bedrock:us-east-1::foundation-model/a/b",
            "arn:aws:s3:::bucket/key",
            "arn:aws:bedrock:us-east-1::knowledge-base/x",
            "",
        ] {
            assert!(!bedrock_model_syntax(bad), "{bad}");
        }
        // The review's finding: an encoded `/..` inside a model id reached another model.
        assert!(Provider::BedrockClaude
            .classify(
                &Method::POST,
                "/model/anthropic.claude-3-5-sonnet-20241022-v2:0%2F..%2Famazon.nova-pro-v1:0/invoke"
            )
            .is_err());
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
