//! Handler tests for the authorizer, fed with `events/authorizer.json` and tokens from a test issuer whose
//! JWKS is served on 127.0.0.1.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::sync::Arc;
use std::time::Duration;

use authorizer::{handle, is_allowed, AuthorizerError, Request, State, DENY_REASON_KEY};
use gateway_shared::audit::{Decision, Outcome, Record};
use gateway_shared::auth::{IssuerConfig, Verifier};
use gateway_shared::scopes::Policy;
use gateway_shared::testing::{serve_jwks, RecordingSink, TestIssuer};
use serde_json::Value;

const POOL: &str = "us-east-1_handlertest";
const CLIENT: &str = "app-client";

async fn state() -> (State, TestIssuer, Arc<RecordingSink>) {
    let issuer = TestIssuer::new(
        &format!("https://cognito-idp.us-east-1.amazonaws.com/{POOL}"),
        "kid-1",
    );
    let (jwks_url, _, _) = serve_jwks(vec![issuer.jwk()]).await;
    let config = IssuerConfig::cognito("us-east-1", POOL, Some(jwks_url), vec![CLIENT.into()]);
    let http = gateway_shared::transport::direct::http_client(Duration::from_secs(2)).unwrap();
    let audit = Arc::new(RecordingSink::default());
    let state = State::new(
        Verifier::new(vec![config], http),
        Arc::new(Policy::default_policy().unwrap()),
        None,
        audit.clone(),
    );
    (state, issuer, audit)
}

fn event_with(token: &str, path: Option<&str>) -> Request {
    let mut event = raw_event(token);
    if let Some(path) = path {
        event["path"] = path.into();
    }
    serde_json::from_value(event).unwrap()
}

#[tokio::test]
async fn allows_a_permitted_route_with_principal_context() {
    let (state, issuer, audit) = state().await;
    let token = issuer.sign(&issuer.access_claims(CLIENT, &["gateway-text", "dept-engineering"]));
    let answer = handle(&state, event_with(&token, None)).await.unwrap();
    assert!(is_allowed(&answer));
    assert_eq!(answer.principal_id.as_deref(), Some("user-sub-1"));
    assert_eq!(answer.context["department"], "engineering");
    assert_eq!(answer.context["scopes"], "text");
    assert_eq!(answer.context["authMethod"], "cognito");
    assert!(
        answer.context.values().all(|v| v.is_string()),
        "API Gateway context takes scalars only"
    );
    let statement = &answer.policy_document.statement[0];
    assert_eq!(
        statement.resource,
        ["arn:aws:execute-api:us-east-1:123456789012:a1b2c3d4e5/prod/POST/azure-openai/openai/deployments/gpt-4o-mini/chat/completions"]
    );
    let serialized = serde_json::to_value(&answer).unwrap();
    assert!(
        audit.finals().is_empty(),
        "an allowed request's final is the route's to record"
    );
    let records = audit.events();
    assert_eq!(records.len(), 1, "the allow itself is recorded");
    let authorized = &records[0];
    assert_eq!(authorized.record, Record::Authorized);
    assert_eq!(authorized.decision, Decision::Allow);
    assert_eq!(authorized.outcome, Outcome::Pending);
    assert_eq!(authorized.operation.as_deref(), Some("chat.completions"));
    assert_eq!(authorized.model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(
        authorized.principal.as_ref().map(|p| p.subject.as_str()),
        Some("user-sub-1")
    );
    assert!(!serde_json::to_string(authorized).unwrap().contains(&token));
    assert!(
        !serialized.to_string().contains(&token),
        "the token never travels in the answer"
    );
}

#[tokio::test]
async fn denies_with_a_reason_when_the_scope_is_missing() {
    let (state, issuer, audit) = state().await;
    let token = issuer.sign(&issuer.access_claims(CLIENT, &["gateway-gemini"]));
    let answer = handle(&state, event_with(&token, None)).await.unwrap();
    assert!(!is_allowed(&answer));
    let reason = answer.context[DENY_REASON_KEY].as_str().unwrap();
    assert!(reason.contains("text:openai"), "{reason}");
    assert_eq!(answer.usage_identifier_key, None);

    let text_only = issuer.sign(&issuer.access_claims(CLIENT, &["gateway-text"]));
    let audio = event_with(
        &text_only,
        Some("/azure-openai/openai/deployments/whisper/audio/transcriptions"),
    );
    let answer = handle(&state, audio).await.unwrap();
    assert!(!is_allowed(&answer));
    assert!(answer.context[DENY_REASON_KEY]
        .as_str()
        .unwrap()
        .contains("audio:stt"));

    let events = audit.events();
    assert_eq!(events.len(), 2);
    assert!(events
        .iter()
        .all(|e| e.decision == Decision::Deny && e.status == 403));
    assert_eq!(events[0].principal.as_ref().unwrap().subject, "user-sub-1");
    assert_eq!(events[1].operation.as_deref(), Some("audio.transcriptions"));
    assert_eq!(events[1].model.as_deref(), Some("whisper"));
}

#[tokio::test]
async fn denies_paths_outside_the_gateway_routes() {
    let (state, issuer, _) = state().await;
    let token = issuer.sign(&issuer.access_claims(CLIENT, &["gateway-all"]));
    for path in [
        "/admin/users",
        "/azure-openai/openai/files",
        "/bedrock-claude/model/amazon.titan-text-express-v1/invoke",
    ] {
        let answer = handle(&state, event_with(&token, Some(path)))
            .await
            .unwrap();
        assert!(!is_allowed(&answer), "{path} must be denied");
    }
}

#[tokio::test]
async fn refuses_missing_and_invalid_tokens_as_unauthorized() {
    let (state, issuer, audit) = state().await;
    let mut expired = issuer.access_claims(CLIENT, &["gateway-all"]);
    expired["exp"] = 1_000_000_000u64.into();
    let mut id_token = issuer.access_claims(CLIENT, &["gateway-all"]);
    id_token["token_use"] = "id".into();
    for token in [
        "",
        "garbage",
        &issuer.sign(&expired),
        &issuer.sign(&id_token),
    ] {
        let result = handle(&state, event_with(token, None)).await;
        assert!(
            matches!(result, Err(AuthorizerError::Unauthorized)),
            "{token:.20}: {result:?}"
        );
    }
    let events = audit.events();
    assert_eq!(events.len(), 4, "every refusal is audited");
    assert!(events
        .iter()
        .all(|e| e.decision == Decision::Unauthorized && e.status == 401));
    assert_eq!(
        events[0].reason.as_deref(),
        Some("no credential in any supported place")
    );
    assert_eq!(events[2].reason.as_deref(), Some("token has expired"));
    assert_eq!(
        events[3].reason.as_deref(),
        Some("token is not an access token")
    );
    assert_eq!(
        events[2].credential_source.as_deref(),
        Some("api-key-header")
    );
    assert_eq!(events[2].operation.as_deref(), Some("chat.completions"));
    assert_eq!(events[2].source_ip.as_deref(), Some("203.0.113.10"));
    let diagnostic: lambda_runtime::Diagnostic = AuthorizerError::Unauthorized.into();
    assert_eq!(
        diagnostic.error_message, "Unauthorized",
        "the exact text API Gateway maps to 401"
    );
}

fn raw_event(token: &str) -> Value {
    let path_file = format!(
        "{}/../../events/authorizer.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(path_file)
        .unwrap()
        .replace("REPLACE_WITH_GATEWAY_TOKEN", token);
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn the_method_is_part_of_the_decision() {
    let (state, issuer, audit) = state().await;
    let token = issuer.sign(&issuer.access_claims(CLIENT, &["gateway-all"]));
    // Listing stored completions under the shared key: a 403 that names the reason.
    let mut list = raw_event(&token);
    list["httpMethod"] = "GET".into();
    list["path"] = "/azure-openai/openai/v1/chat/completions".into();
    let answer = authorizer::handle_event(&state, list).await.unwrap();
    assert!(!is_allowed(&answer));
    assert!(answer.context[DENY_REASON_KEY]
        .as_str()
        .unwrap()
        .contains("shared key"));
    assert_eq!(
        audit.events()[0].operation.as_deref(),
        Some("chat.completions.list")
    );
    // A path outside the grammar passes to the route, which answers its 404 (audited there).
    let mut unknown = raw_event(&token);
    unknown["path"] =
        "/azure-openai/openai/deployments/gpt-4o-mini/chat/completions/x\\..\\..\\..\\audio\\speech"
            .into();
    let answer = authorizer::handle_event(&state, unknown).await.unwrap();
    assert!(is_allowed(&answer));
}

#[tokio::test]
async fn an_unreadable_event_is_audited_and_refused() {
    let (state, issuer, audit) = state().await;
    let token = issuer.sign(&issuer.access_claims(CLIENT, &["gateway-all"]));
    let mut event = raw_event(&token);
    event["headers"]["x-evil"] = "a\u{0}b".into();
    let result = authorizer::handle_event(&state, event).await;
    assert!(matches!(result, Err(AuthorizerError::Unauthorized)));
    let events = audit.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].decision, Decision::Unauthorized);
    assert!(!serde_json::to_string(&events[0]).unwrap().contains(&token));
}

#[tokio::test]
async fn a_token_issued_in_the_future_is_refused() {
    let (state, issuer, audit) = state().await;
    let mut claims = issuer.access_claims(CLIENT, &["gateway-all"]);
    let later = claims["iat"].as_u64().unwrap() + 600;
    claims["iat"] = later.into();
    let result = handle(&state, event_with(&issuer.sign(&claims), None)).await;
    assert!(matches!(result, Err(AuthorizerError::Unauthorized)));
    assert!(audit.events()[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("future"));
}
