//! What the dispatcher trusts in a queued request: only what it can check.
//!
//! A message on a request queue carries a provider, a path, a reply address, maybe an S3 pointer and a
//! deadline. Anyone who can send to the queue (a misconfigured role, a compromised function) could
//! forge one, so before any S3 or upstream call the envelope must hold up against the dispatcher's own
//! configuration:
//! - the provider is the one whose queue the message came from;
//! - `reply_to` is a reply queue of this deployment (same endpoint and account as the request queue,
//!   the deployment's reply prefix);
//! - an S3 payload lies in the payload bucket, under that request's own key;
//! - the deadline is not further away than the gateway ever waits;
//! - the method and path pass the provider's grammar again (the route's classification is not
//!   trusted), and the request id is a plain token (it names S3 keys).

use std::sync::Arc;
use std::time::Duration;

use gateway_shared::config::{ConfigError, Settings};
use gateway_shared::providers::Classified;
use gateway_shared::scopes::Policy;
use gateway_shared::transport::envelope::{Payload, RequestEnvelope, ENVELOPE_VERSION};
use gateway_shared::Provider;

/// A request queue the dispatcher serves: its provider and its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestQueue {
    pub provider: Provider,
    pub url: String,
    /// `scheme://host[:port]` of the URL.
    origin: String,
    account: String,
    name: String,
}

impl RequestQueue {
    pub fn new(provider: Provider, url: &str) -> Option<RequestQueue> {
        let (origin, account, name) = split_queue_url(url)?;
        Some(RequestQueue {
            provider,
            url: url.to_string(),
            origin,
            account,
            name,
        })
    }

    /// Whether an event source ARN (`arn:aws:sqs:{region}:{account}:{name}`) names this queue.
    pub fn is_source(&self, arn: &str) -> bool {
        let mut parts = arn.rsplitn(3, ':');
        matches!((parts.next(), parts.next()), (Some(name), Some(account)) if name == self.name && account == self.account)
    }
}

/// `https://sqs.{region}.amazonaws.com/{account}/{name}` -> (origin, account, name).
fn split_queue_url(url: &str) -> Option<(String, String, String)> {
    let parsed = reqwest::Url::parse(url).ok()?;
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return None;
    }
    let mut segments = parsed.path_segments()?;
    let (account, name) = (segments.next()?, segments.next()?);
    if segments.next().is_some() || account.is_empty() || name.is_empty() {
        return None;
    }
    Some((
        parsed.origin().ascii_serialization(),
        account.to_string(),
        name.to_string(),
    ))
}

/// `GATEWAY_DISPATCH_QUEUE_URLS`: `azure-openai=https://sqs…/llm-gateway-requests-azure-openai,gemini=…`.
pub fn request_queues_from_settings(
    settings: &dyn Settings,
) -> Result<Vec<RequestQueue>, ConfigError> {
    const NAME: &str = "GATEWAY_DISPATCH_QUEUE_URLS";
    let invalid = |reason: String| ConfigError::Invalid { name: NAME, reason };
    let text = settings.get(NAME).ok_or(ConfigError::Missing(NAME))?;
    let mut queues = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (route, url) = entry
            .split_once('=')
            .ok_or_else(|| invalid(format!("{entry:?} is not route=queue-url")))?;
        let provider = Provider::ALL
            .into_iter()
            .find(|p| p.route_prefix() == route.trim())
            .ok_or_else(|| invalid(format!("{route:?} is not a gateway route")))?;
        let queue = RequestQueue::new(provider, url.trim())
            .ok_or_else(|| invalid(format!("{url:?} is not an SQS queue URL")))?;
        queues.push(queue);
    }
    if queues.is_empty() {
        return Err(invalid("no queue given".into()));
    }
    Ok(queues)
}

/// What the dispatcher checks envelopes against.
#[derive(Debug, Clone)]
pub struct TrustPolicy {
    pub queues: Vec<RequestQueue>,
    pub reply_queue_prefix: String,
    pub payload_bucket: Option<String>,
    /// The furthest a deadline may lie ahead: the route's wait for the status line, plus clock skew.
    pub max_deadline: Duration,
    /// The scope policy: an operation it grants to nobody is never relayed, whoever queued it.
    pub policy: Arc<Policy>,
}

/// An envelope that does not hold up; it is refused without any S3 or upstream call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("forged or corrupt request envelope: {0}")]
pub struct Forged(pub String);

/// An envelope that held up, with its path classified again.
#[derive(Debug)]
pub struct Checked {
    pub queue: RequestQueue,
    pub classified: Classified,
    pub method: http::Method,
}

fn forged(reason: impl Into<String>) -> Forged {
    Forged(reason.into())
}

/// Request ids name S3 keys (`payloads/{id}/…`, `dispatch-done/{id}`): letters, digits, `-`, `_`.
pub fn request_id_syntax(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

impl TrustPolicy {
    /// The queue an event came from, by its source ARN.
    pub fn source_queue(&self, source_arn: Option<&str>) -> Option<&RequestQueue> {
        let arn = source_arn?;
        self.queues.iter().find(|q| q.is_source(arn))
    }

    pub fn check(
        &self,
        envelope: &RequestEnvelope,
        source_arn: Option<&str>,
        now_ms: u64,
    ) -> Result<Checked, Forged> {
        if envelope.version != ENVELOPE_VERSION {
            return Err(forged(format!(
                "envelope version {} is not supported",
                envelope.version
            )));
        }
        if !request_id_syntax(&envelope.request_id) {
            return Err(forged("the request id is not a plain token"));
        }
        let queue = self.source_queue(source_arn).ok_or_else(|| {
            forged("the message came from a queue this dispatcher does not serve")
        })?;
        if queue.provider != envelope.provider {
            return Err(forged(format!(
                "an envelope for /{} arrived on the queue of /{}",
                envelope.provider.route_prefix(),
                queue.provider.route_prefix()
            )));
        }
        let (origin, account, name) = split_queue_url(&envelope.reply_to)
            .ok_or_else(|| forged("reply_to is not an SQS queue URL"))?;
        if origin != queue.origin
            || account != queue.account
            || !name.starts_with(&self.reply_queue_prefix)
        {
            return Err(forged("reply_to is not a reply queue of this deployment"));
        }
        if let Payload::S3 { bucket, key } = &envelope.body {
            let own_key = format!("payloads/{}/request", envelope.request_id);
            if self.payload_bucket.as_deref() != Some(bucket.as_str()) || *key != own_key {
                return Err(forged(
                    "the payload pointer lies outside this request's place in the payload bucket",
                ));
            }
        }
        if envelope.deadline_ms > now_ms.saturating_add(self.max_deadline.as_millis() as u64) {
            return Err(forged(
                "the deadline lies further ahead than the gateway ever waits",
            ));
        }
        let method = http::Method::from_bytes(envelope.method.as_bytes())
            .map_err(|_| forged("the method is malformed"))?;
        let classified = envelope
            .provider
            .classify(&method, &envelope.path)
            .map_err(|e| forged(format!("the path does not pass the grammar: {e}")))?;
        let operation = classified.operation.name;
        if self
            .policy
            .required_scope(envelope.provider, operation)
            .is_none()
        {
            return Err(forged(format!(
                "operation '{operation}' is granted to nobody by the scope policy"
            )));
        }
        Ok(Checked {
            queue: queue.clone(),
            classified,
            method,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const NOW: u64 = 1_800_000_000_000;

    fn policy() -> TrustPolicy {
        let mut settings = HashMap::new();
        settings.insert(
            "GATEWAY_DISPATCH_QUEUE_URLS".to_string(),
            "azure-openai=https://sqs.us-east-1.amazonaws.com/123456789012/llm-gateway-requests-azure-openai, gemini=https://sqs.us-east-1.amazonaws.com/123456789012/llm-gateway-requests-gemini".to_string(),
        );
        TrustPolicy {
            queues: request_queues_from_settings(&settings).unwrap(),
            reply_queue_prefix: "llm-gateway-reply-".into(),
            payload_bucket: Some("payloads".into()),
            max_deadline: Duration::from_secs(180),
            policy: Arc::new(Policy::default_policy().unwrap()),
        }
    }

    const AZURE_ARN: &str = "arn:aws:sqs:us-east-1:123456789012:llm-gateway-requests-azure-openai";

    fn envelope() -> RequestEnvelope {
        RequestEnvelope {
            version: ENVELOPE_VERSION,
            request_id: "req-1".into(),
            provider: Provider::AzureOpenAi,
            principal: Some("sub".into()),
            method: "POST".into(),
            path: "/openai/deployments/gpt-4o-mini/chat/completions".into(),
            query: "api-version=2024-10-21".into(),
            headers: Vec::new(),
            body: Payload::inline(b"{}"),
            reply_to: "https://sqs.us-east-1.amazonaws.com/123456789012/llm-gateway-reply-azure-openai-abc".into(),
            deadline_ms: NOW + 60_000,
        }
    }

    #[test]
    fn a_route_s_envelope_holds_up() {
        let checked = policy().check(&envelope(), Some(AZURE_ARN), NOW).unwrap();
        assert_eq!(checked.classified.operation.name, "chat.completions");
        assert_eq!(checked.queue.provider, Provider::AzureOpenAi);
    }

    #[test]
    fn forged_envelopes_are_refused() {
        let policy = policy();
        type Mutation = Box<dyn Fn(&mut RequestEnvelope)>;
        let cases: Vec<(&str, Mutation, Option<&str>)> = vec![
            (
                "provider from another queue",
                Box::new(|e| e.provider = Provider::Gemini),
                Some(AZURE_ARN),
            ),
            (
                "unknown source queue",
                Box::new(|_| {}),
                Some("arn:aws:sqs:us-east-1:123456789012:other"),
            ),
            ("no source", Box::new(|_| {}), None),
            (
                "other account's source",
                Box::new(|_| {}),
                Some("arn:aws:sqs:us-east-1:999999999999:llm-gateway-requests-azure-openai"),
            ),
            (
                "reply to a foreign host",
                Box::new(|e| {
                    e.reply_to = "https://evil.example/123456789012/llm-gateway-reply-x".into()
                }),
                Some(AZURE_ARN),
            ),
            (
                "reply to another account",
                Box::new(|e| {
                    e.reply_to =
                        "https://sqs.us-east-1.amazonaws.com/999999999999/llm-gateway-reply-x"
                            .into()
                }),
                Some(AZURE_ARN),
            ),
            (
                "reply to a non-reply queue",
                Box::new(|e| {
                    e.reply_to =
                        "https://sqs.us-east-1.amazonaws.com/123456789012/llm-gateway-audit".into()
                }),
                Some(AZURE_ARN),
            ),
            (
                "payload in another bucket",
                Box::new(|e| {
                    e.body = Payload::S3 {
                        bucket: "other".into(),
                        key: "payloads/req-1/request".into(),
                    }
                }),
                Some(AZURE_ARN),
            ),
            (
                "payload of another request",
                Box::new(|e| {
                    e.body = Payload::S3 {
                        bucket: "payloads".into(),
                        key: "payloads/req-2/request".into(),
                    }
                }),
                Some(AZURE_ARN),
            ),
            (
                "payload outside the prefix",
                Box::new(|e| {
                    e.body = Payload::S3 {
                        bucket: "payloads".into(),
                        key: "audit/x".into(),
                    }
                }),
                Some(AZURE_ARN),
            ),
            (
                "deadline a day ahead",
                Box::new(|e| e.deadline_ms = NOW + 86_400_000),
                Some(AZURE_ARN),
            ),
            (
                "path with backslashes",
                Box::new(|e| {
                    e.path = "/openai/deployments/gpt-4o-mini/chat/completions/x\\..\\..\\..\\audio\\speech".into()
                }),
                Some(AZURE_ARN),
            ),
            (
                "path outside the grammar",
                Box::new(|e| e.path = "/openai/v1/realtime".into()),
                Some(AZURE_ARN),
            ),
            (
                "stored files, granted to nobody",
                Box::new(|e| {
                    e.method = "GET".into();
                    e.path = "/openai/v1/files".into();
                }),
                Some(AZURE_ARN),
            ),
            (
                "request id with a slash",
                Box::new(|e| e.request_id = "../x".into()),
                Some(AZURE_ARN),
            ),
            ("old version", Box::new(|e| e.version = 0), Some(AZURE_ARN)),
            (
                "bad method",
                Box::new(|e| e.method = "PO ST".into()),
                Some(AZURE_ARN),
            ),
        ];
        for (name, mutate, source) in cases {
            let mut envelope = envelope();
            mutate(&mut envelope);
            assert!(policy.check(&envelope, source, NOW).is_err(), "{name}");
        }
        // Once the policy grants an operation to some scope, a queued request for it is relayed (the
        // route decided who may call it).
        let granted = gateway_shared::scopes::DEFAULT_POLICY_JSON.replace(
            "\"responses\": \"text:openai\",",
            "\"responses\": \"text:openai\", \"files.list\": \"text:openai\",",
        );
        let policy = TrustPolicy {
            policy: Arc::new(Policy::from_json(&granted).unwrap()),
            ..policy
        };
        let mut list = envelope();
        list.method = "GET".into();
        list.path = "/openai/v1/files".into();
        let checked = policy.check(&list, Some(AZURE_ARN), NOW).unwrap();
        assert_eq!(checked.classified.operation.name, "files.list");
    }

    #[test]
    fn queue_settings_are_validated() {
        let mut settings = HashMap::new();
        assert!(request_queues_from_settings(&settings).is_err());
        settings.insert(
            "GATEWAY_DISPATCH_QUEUE_URLS".to_string(),
            "nope=https://sqs/1/q".to_string(),
        );
        assert!(request_queues_from_settings(&settings).is_err());
        settings.insert(
            "GATEWAY_DISPATCH_QUEUE_URLS".to_string(),
            "gemini=not a url".to_string(),
        );
        assert!(request_queues_from_settings(&settings).is_err());
    }
}
