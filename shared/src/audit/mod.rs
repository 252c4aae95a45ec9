//! The audit trail: for every request exactly one `final` [`AuditEvent`], allowed or denied, written by
//! whichever function decided its fate (the authorizer for 401/403, the route for everything it
//! handled), plus the records that let a lost final be noticed: the authorizer's `authorized` (it let
//! the request through) and the route's `accepted` (sent while the upstream call is in flight).
//!
//! Functions record into an [`AuditBuffer`], which never waits on the network; the buffer is delivered
//! to the audit SQS queue in batches after the response has gone ([`lifecycle`]), and the audit-writer
//! function batches the queue into S3. If the queue cannot take an event, the event is written to the
//! log instead (CloudWatch keeps it), so no event is lost silently. An event never holds a credential: no tokens, keys, cookies or headers, only
//! ids, decisions, sizes, usage and the SHA-256 of the request body. Request and response bodies are
//! kept apart from the events, encrypted ([`bodies`]); a final event carries only their reference.
//! The JSON Schema of the event is `schemas/audit-event.schema.json`.

pub mod bodies;
pub mod body;
pub mod buffer;
pub mod clock;
pub mod digest;
pub mod lifecycle;
pub mod usage;

use serde::{Deserialize, Serialize};
use sha2::Digest;

pub use bodies::{BodiesConfig, BodiesRef, CapturedBodies};
pub use buffer::{AuditBuffer, Deliver, LogDelivery, SqsDelivery};
pub use usage::{Usage, UsageScanner};

/// 2: events carry `record` (authorized, accepted, final, incomplete). 3: directory changes carry
/// `admin` (who changed which user how). 4: requests under a budget carry `budget`. 5: requests carry
/// the `region` they went to, and usage its cached and cache-written input tokens.
pub const SCHEMA_VERSION: u32 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Authorized and relayed (whatever the provider answered).
    Allow,
    /// Valid credential, not permitted (403).
    Deny,
    /// Missing or invalid credential (401).
    Unauthorized,
    /// Refused or failed by the gateway after authorization (404, 413, 502, 504, 500).
    Error,
}

/// Which of a request's records an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Record {
    /// The authorizer let the request through to its route.
    Authorized,
    /// The route is calling the provider (sent at once, while the call is in flight).
    Accepted,
    /// The request's one outcome.
    #[default]
    Final,
    /// Made by the audit trail for a request that was authorized or accepted but whose final never
    /// came (throttled before the route, invoke failure, a sandbox killed mid-request).
    Incomplete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Not decided yet: the `authorized` and `accepted` records.
    Pending,
    /// The whole response reached the client.
    Complete,
    /// The upstream stream broke off midway.
    UpstreamError,
    /// The client went away before the end.
    ClientClosed,
    /// The gateway ended the stream cleanly, in the provider's framing, before the function's
    /// timeout would have cut it mid-frame.
    DeadlineCut,
    /// The gateway answered without relaying.
    Refused,
    /// Never learned: the `incomplete` records the audit trail makes for requests whose final never came.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Principal {
    pub subject: String,
    pub username: Option<String>,
    pub department: Option<String>,
    pub client_id: Option<String>,
    pub auth_method: Option<String>,
}

impl From<&crate::auth::AuthContext> for Principal {
    fn from(context: &crate::auth::AuthContext) -> Self {
        Principal {
            subject: context.subject.clone(),
            username: context.username.clone(),
            department: context.department.clone(),
            client_id: context.client_id.clone(),
            auth_method: Some(context.auth_method.clone()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Latency {
    pub total_ms: u64,
    /// Until the provider's status and headers arrived.
    pub upstream_ms: Option<u64>,
    /// Until the first response byte left the gateway.
    pub first_byte_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub schema_version: u32,
    pub event_id: String,
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    /// API Gateway's request id (also `x-amzn-RequestId` and `x-gateway-request-id`).
    pub request_id: String,
    /// Events written before records existed are finals.
    #[serde(default)]
    pub record: Record,
    pub decision: Decision,
    pub reason: Option<String>,
    /// The HTTP status the client got; 0 on records made before there was one (authorized, accepted).
    pub status: u16,
    pub outcome: Outcome,
    pub principal: Option<Principal>,
    /// Where the credential was found (`api-key-header`, `authorization-bearer`, ...).
    pub credential_source: Option<String>,
    pub provider: Option<String>,
    pub operation: Option<String>,
    pub model: Option<String>,
    /// The provider region the request went to, where the deployment knows it (Bedrock's signing
    /// region; `GATEWAY_AZURE_OPENAI_REGION`, `GATEWAY_GEMINI_REGION`): regional prices match it.
    #[serde(default)]
    pub region: Option<String>,
    pub stream: bool,
    pub transport: Option<String>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub latency: Latency,
    pub usage: Option<Usage>,
    /// Cost in USD of the request's usage at the price table's rates on its day (set by the audit
    /// writer, `crate::pricing`); `None` when it cannot be priced, and `cost_status` says why.
    pub cost_usd: Option<f64>,
    /// `priced`, `unknown_model`, `no_model` or `no_usage`: set on requests' outcomes, so an
    /// unpriced request is flagged, never silently free.
    #[serde(default)]
    pub cost_status: Option<String>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_sha256: Option<String>,
    /// Where the request's encrypted bodies are (final records of routes that record bodies).
    #[serde(default)]
    pub bodies: Option<BodiesRef>,
    /// The plaintext bodies, from the route until the flush seals them: never serialized (so never in
    /// SQS or a log), sizes only in Debug.
    #[serde(skip)]
    pub captured: Option<CapturedBodies>,
    /// Directory changes (provisioning, the date job, the admin API): what was done to whom.
    #[serde(default)]
    pub admin: Option<AdminAction>,
    /// What the request reserved under its budgets before it was forwarded (accepted and final
    /// records; the audit writer settles it to the real usage, `crate::budgets`).
    #[serde(default)]
    pub budget: Option<BudgetReservation>,
}

/// A request's reservation: the usage counters it was added to, and its worst case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetReservation {
    pub counters: Vec<String>,
    pub tokens: u64,
    /// Micro-dollars.
    pub cost_micros: u64,
}

/// One change to a user: by whom (`actor`: the function; the acting administrator is the event's
/// principal), what, to whom, and which attributes; never the attributes' values or a password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminAction {
    /// `admin-api`, `provisioner` or `scheduler`.
    pub actor: String,
    /// `users.create`, `users.update`, `users.disable`, ...
    pub action: String,
    /// The user_id changed (None for actions on no one user, such as an upload ticket).
    pub target: Option<String>,
    /// Names of the attributes written.
    pub changed: Vec<String>,
    /// What the change came from: the provisioning file's key, the job's name.
    pub source: Option<String>,
}

impl AuditEvent {
    /// The final event of one directory change, complete with `status`.
    pub fn admin(request_id: &str, action: AdminAction, status: u16) -> AuditEvent {
        let mut event = AuditEvent::new(request_id, Decision::Allow, status);
        event.outcome = if status < 400 {
            Outcome::Complete
        } else {
            Outcome::Refused
        };
        if status >= 400 {
            event.decision = Decision::Error;
        }
        event.provider = Some("admin".into());
        event.operation = Some(action.action.clone());
        event.admin = Some(action);
        event
    }
}

impl AuditEvent {
    /// The same request's record of another kind, with a new id and time (the accepted record is the
    /// final-to-be as it stands when the upstream call starts). Only a final carries bodies.
    pub fn as_record(&self, record: Record) -> AuditEvent {
        let (bodies, captured) = match record {
            Record::Final => (self.bodies.clone(), self.captured.clone()),
            _ => (None, None),
        };
        AuditEvent {
            event_id: uuid::Uuid::new_v4().to_string(),
            time: clock::rfc3339_now(),
            record,
            bodies,
            captured,
            ..self.clone()
        }
    }

    /// A new `final` event for `request_id` with everything else empty; callers fill in what they know.
    pub fn new(request_id: &str, decision: Decision, status: u16) -> AuditEvent {
        AuditEvent {
            schema_version: SCHEMA_VERSION,
            event_id: uuid::Uuid::new_v4().to_string(),
            time: clock::rfc3339_now(),
            request_id: request_id.to_string(),
            record: Record::Final,
            decision,
            reason: None,
            status,
            outcome: Outcome::Refused,
            principal: None,
            credential_source: None,
            provider: None,
            operation: None,
            model: None,
            region: None,
            stream: false,
            transport: None,
            bytes_in: 0,
            bytes_out: 0,
            latency: Latency::default(),
            usage: None,
            cost_usd: None,
            cost_status: None,
            source_ip: None,
            user_agent: None,
            request_sha256: None,
            bodies: None,
            captured: None,
            admin: None,
            budget: None,
        }
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    let digest = sha2::Sha256::digest(data);
    let mut out = String::with_capacity(64);
    for byte in digest.iter() {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// Where audit events go. Recording never waits and never fails the request: implementations buffer
/// ([`AuditBuffer`]) and deliver after the response, or keep the event (tests).
pub trait AuditSink: Send + Sync {
    fn record(&self, event: AuditEvent);

    /// Starts delivering what has been recorded, in the background, without waiting for it.
    fn send_now(&self) {}
}

pub(crate) fn log_event(event: &AuditEvent, why: &str) {
    match serde_json::to_string(event) {
        Ok(json) => tracing::warn!(audit_event = %json, why, "audit event written to the log"),
        Err(error) => {
            tracing::error!(request_id = %event.request_id, %error, "audit event could not be serialized")
        }
    }
}

/// The function's audit buffer: delivered to `GATEWAY_AUDIT_QUEUE_URL`, or to the log when it is unset.
pub fn buffer_from_settings(
    settings: &dyn crate::config::Settings,
    sdk: &aws_config::SdkConfig,
) -> AuditBuffer {
    AuditBuffer::new(delivery_from_settings(settings, sdk))
}

/// Where the function's audit events go: `GATEWAY_AUDIT_QUEUE_URL`, or the log when it is unset.
pub fn delivery_from_settings(
    settings: &dyn crate::config::Settings,
    sdk: &aws_config::SdkConfig,
) -> Box<dyn Deliver> {
    match settings.get("GATEWAY_AUDIT_QUEUE_URL") {
        Some(url) => Box::new(SqsDelivery::new(aws_sdk_sqs::Client::new(sdk), url)),
        None => {
            tracing::warn!("GATEWAY_AUDIT_QUEUE_URL is not set: audit events go to the log only");
            Box::new(LogDelivery)
        }
    }
}

/// The audit events in an audit object's bytes (gzip JSONL), and how many non-empty lines (or
/// undecodable bytes) were not events.
pub fn read_events(bytes: &[u8]) -> (Vec<AuditEvent>, usize) {
    let mut text = String::new();
    use std::io::Read;
    if flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut text)
        .is_err()
    {
        return (Vec::new(), 1);
    }
    let mut events = Vec::new();
    let mut unreadable = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<AuditEvent>(line) {
            Ok(event) => events.push(event),
            Err(_) => unreadable += 1,
        }
    }
    (events, unreadable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_serializes_with_snake_case_enums_and_no_secret_fields() {
        let mut event = AuditEvent::new("r1", Decision::Unauthorized, 401);
        event.reason = Some("token has expired".into());
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["decision"], "unauthorized");
        assert_eq!(json["outcome"], "refused");
        assert_eq!(json["schema_version"], SCHEMA_VERSION);
        assert_eq!(json["record"], "final");
        let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
        for forbidden in ["token", "headers", "authorization", "api_key"] {
            assert!(!keys.iter().any(|k| k.contains(forbidden)), "{forbidden}");
        }
    }

    #[test]
    fn sha256_hex_matches_known_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
