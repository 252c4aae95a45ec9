//! API Gateway REST REQUEST authorizer.
//!
//! Finds the gateway credential wherever the stock SDK put it: a `gwk_` API key (checked against the
//! key table's in-memory mirror, see `gateway_shared::apikeys`) or else a JWT (verified, then checked
//! against revocations). It resolves the principal's scopes and department (a key's are stored with
//! it; a token's come from its groups through the scope policy), and decides the route:
//! - no credential or a bad one: the error `Unauthorized` (API Gateway answers 401);
//! - valid but not allowed: a Deny policy with the reason in the context (API Gateway answers 403);
//! - allowed: an Allow policy, the principal in the context, and the department's usage-plan key.
//!
//! API Gateway calls it on every request (TTL 0, no identity source: the credential may sit in one of
//! several headers), so keys, policy and clients live in [`State`], built once per execution environment.

mod usage_keys;

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::apigw::{
    ApiGatewayCustomAuthorizerPolicy, ApiGatewayCustomAuthorizerRequestTypeRequest,
    ApiGatewayCustomAuthorizerResponse,
};
use aws_lambda_events::iam::{IamPolicyEffect, IamPolicyStatement};
use gateway_shared::apikeys::{self, ApiKeyList, ApiKeys, Refusal};
use gateway_shared::audit::{
    AuditEvent, AuditSink, Decision as AuditDecision, Outcome as AuditOutcome, Principal,
    Record as AuditRecord,
};
use gateway_shared::auth::{extract_credential, AuthContext, Credential, IssuerConfig, Verifier};
use gateway_shared::config::{self, ConfigError, Settings};
use gateway_shared::revocation::{RevocationList, Revocations};
use gateway_shared::scopes::{BodyModel, Decision, Policy};
use gateway_shared::secrets::SecretCache;
use gateway_shared::Provider;
use serde_json::Value;

pub use usage_keys::UsageKeys;

pub type Response = ApiGatewayCustomAuthorizerResponse<serde_json::Map<String, Value>>;
pub type Request = ApiGatewayCustomAuthorizerRequestTypeRequest;

/// Context key carrying the reason of a Deny, shown to the caller in the 403 body.
pub const DENY_REASON_KEY: &str = "reason";

#[derive(Debug, Clone)]
pub struct AuthorizerConfig {
    pub issuers: Vec<IssuerConfig>,
    pub usage_keys_secret_id: Option<String>,
    pub policy_file: Option<String>,
    /// The DynamoDB table of revoked users (disabled, signed out).
    pub revocation_table: String,
    /// How old the authorizer's copy of the revocations may be: the staleness bound of a revocation
    /// (of a user's tokens or of an API key).
    pub revocation_cache: Duration,
    /// The DynamoDB table of API keys.
    pub apikey_table: String,
}

/// The default staleness bound of a revocation; environments set theirs (config/gateway.json).
pub const DEFAULT_REVOCATION_CACHE: Duration = Duration::from_secs(30);
/// Above this a disabled user's tokens would keep working for too long to call it revocation.
const MAX_REVOCATION_CACHE: Duration = Duration::from_secs(300);

impl AuthorizerConfig {
    /// `COGNITO_USER_POOL_ID`, `COGNITO_APP_CLIENT_IDS` (comma-separated), `COGNITO_REGION` (default
    /// `AWS_REGION`), `COGNITO_JWKS_URL` (default the pool's public JWKS), `GATEWAY_USAGE_KEYS_SECRET_ID`
    /// (optional: JSON `{department: api key value}`), `GATEWAY_SCOPE_POLICY_FILE` (optional),
    /// `GATEWAY_REVOCATION_TABLE` (required), `GATEWAY_REVOCATION_CACHE_SECS` (30, at most 300),
    /// `GATEWAY_APIKEY_TABLE` (required).
    pub fn from_settings(settings: &dyn Settings) -> Result<Self, ConfigError> {
        let pool = config::required(settings, "COGNITO_USER_POOL_ID")?;
        let region = settings
            .get("COGNITO_REGION")
            .or_else(|| settings.get("AWS_REGION"))
            .ok_or(ConfigError::Missing("COGNITO_REGION or AWS_REGION"))?;
        let client_ids: Vec<String> = config::required(settings, "COGNITO_APP_CLIENT_IDS")?
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if client_ids.is_empty() {
            return Err(ConfigError::Invalid {
                name: "COGNITO_APP_CLIENT_IDS",
                reason: "no client id given".into(),
            });
        }
        let jwks_url = settings
            .get("COGNITO_JWKS_URL")
            .map(|u| config::base_url("COGNITO_JWKS_URL", u))
            .transpose()?;
        let revocation_cache = config::duration_secs(
            settings,
            "GATEWAY_REVOCATION_CACHE_SECS",
            DEFAULT_REVOCATION_CACHE,
        )?;
        if revocation_cache > MAX_REVOCATION_CACHE || revocation_cache.is_zero() {
            return Err(ConfigError::Invalid {
                name: "GATEWAY_REVOCATION_CACHE_SECS",
                reason: format!(
                    "{} s: between 1 and {} s (a revoked token works at most this long)",
                    revocation_cache.as_secs(),
                    MAX_REVOCATION_CACHE.as_secs()
                ),
            });
        }
        Ok(AuthorizerConfig {
            issuers: vec![IssuerConfig::cognito(&region, &pool, jwks_url, client_ids)],
            usage_keys_secret_id: settings.get("GATEWAY_USAGE_KEYS_SECRET_ID"),
            policy_file: settings.get("GATEWAY_SCOPE_POLICY_FILE"),
            revocation_table: config::required(settings, "GATEWAY_REVOCATION_TABLE")?,
            revocation_cache,
            apikey_table: config::required(settings, "GATEWAY_APIKEY_TABLE")?,
        })
    }
}

pub struct State {
    verifier: Verifier,
    policy: Arc<Policy>,
    usage_keys: Option<UsageKeys>,
    audit: Arc<dyn AuditSink>,
    /// None only in tests without a table.
    revocations: Option<RevocationList>,
    /// None only in tests without a table: then every API key is refused as unknown.
    api_keys: Option<ApiKeyList>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthorizerError {
    /// The only error text API Gateway maps to 401.
    #[error("Unauthorized")]
    Unauthorized,
    #[error("authorizer failure: {0}")]
    Internal(String),
}

impl From<AuthorizerError> for lambda_runtime::Diagnostic {
    fn from(error: AuthorizerError) -> Self {
        let error_type = match error {
            AuthorizerError::Unauthorized => "Unauthorized",
            AuthorizerError::Internal(_) => "AuthorizerFailure",
        };
        lambda_runtime::Diagnostic {
            error_type: error_type.into(),
            error_message: error.to_string(),
        }
    }
}

impl State {
    pub fn new(
        verifier: Verifier,
        policy: Arc<Policy>,
        usage_keys: Option<UsageKeys>,
        audit: Arc<dyn AuditSink>,
    ) -> Self {
        State {
            verifier,
            policy,
            usage_keys,
            audit,
            revocations: None,
            api_keys: None,
        }
    }

    /// Accepts the API keys of this table, as it said at most the list's ttl ago.
    pub fn with_api_keys(mut self, api_keys: ApiKeyList) -> Self {
        self.api_keys = Some(api_keys);
        self
    }

    /// Refuses the tokens of disabled and signed-out users, as the table said at most the list's ttl ago.
    pub fn with_revocations(mut self, revocations: RevocationList) -> Self {
        self.revocations = Some(revocations);
        self
    }

    pub async fn from_config(
        config: AuthorizerConfig,
        sdk: &aws_config::SdkConfig,
        audit: Arc<dyn AuditSink>,
    ) -> Result<Self, ConfigError> {
        let http = gateway_shared::transport::direct::http_client(Duration::from_secs(3)).map_err(
            |e| ConfigError::Invalid {
                name: "COGNITO_JWKS_URL",
                reason: format!("HTTP client could not be built: {e}"),
            },
        )?;
        let verifier = Verifier::new(config.issuers, http);
        // A failed prefetch is not fatal: the first request retries, and answers 500 if keys stay unreachable.
        if let Err(error) = verifier.prefetch().await {
            tracing::warn!(%error, "issuer keys not prefetched at init");
        }
        let policy = Arc::new(gateway_shared::proxy::load_policy(
            config.policy_file.as_deref(),
        )?);
        let usage_keys = config.usage_keys_secret_id.map(|id| {
            UsageKeys::new(SecretCache::new(
                aws_sdk_secretsmanager::Client::new(sdk),
                id,
                Duration::from_secs(300),
            ))
        });
        let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
        let revocations = RevocationList::new(
            Revocations::new(dynamodb.clone(), config.revocation_table),
            config.revocation_cache,
        );
        let api_keys = ApiKeyList::new(
            ApiKeys::new(dynamodb, config.apikey_table),
            config.revocation_cache,
        );
        // A failed first poll is not fatal: requests poll again, and are refused while it fails.
        let (revocations_loaded, keys_loaded) =
            tokio::join!(revocations.start("revocations"), api_keys.start("api keys"));
        if let Err(error) = revocations_loaded {
            tracing::warn!(%error, "revocations not loaded at init");
        }
        if let Err(error) = keys_loaded {
            tracing::warn!(%error, "API keys not loaded at init");
        }
        Ok(State::new(verifier, policy, usage_keys, audit)
            .with_revocations(revocations)
            .with_api_keys(api_keys))
    }
}

/// Decides one request given as the raw event JSON. An event that does not read as a REQUEST
/// authorizer event (API Gateway passes client headers through; one the typed reader refuses) is
/// audited and refused with 401.
pub async fn handle_event(state: &State, event: Value) -> Result<Response, AuthorizerError> {
    let request_id = event
        .pointer("/requestContext/requestId")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string();
    let source_ip = event
        .pointer("/requestContext/identity/sourceIp")
        .and_then(Value::as_str)
        .map(str::to_string);
    match serde_json::from_value::<Request>(event) {
        Ok(request) => handle(state, request).await,
        Err(error) => {
            tracing::info!(request_id, %error, decision = "unauthorized", "malformed authorizer event");
            let mut audit = AuditEvent::new(&request_id, AuditDecision::Unauthorized, 401);
            audit.source_ip = source_ip;
            audit.reason = Some(format!("the request could not be read: {error}"));
            state.audit.record(audit);
            Err(AuthorizerError::Unauthorized)
        }
    }
}

/// Decides one request. Never panics; logs the decision with its reason but never the token. Requests it
/// refuses (401, 403, 500) get their final audit record here; allowed ones an `authorized` record here
/// and their final from the route when they end.
pub async fn handle(state: &State, request: Request) -> Result<Response, AuthorizerError> {
    let request_id = request
        .request_context
        .request_id
        .clone()
        .unwrap_or_default();
    let method_arn = request.method_arn.clone().unwrap_or_default();
    let path = request.path.clone().unwrap_or_default();

    let mut headers = request.multi_value_headers.clone();
    for (name, value) in &request.headers {
        if !headers.contains_key(name) {
            headers.insert(name.clone(), value.clone());
        }
    }
    let mut event = refusal_event(&request_id, &request, &headers, &path);
    let key_query = request
        .multi_value_query_string_parameters
        .first("key")
        .or_else(|| request.query_string_parameters.first("key"));
    let credential = match extract_credential(&headers, key_query) {
        Ok(credential) => credential,
        Err(error) => {
            tracing::info!(request_id, %error, decision = "unauthorized", "no usable credential");
            event.reason = Some(error.to_string());
            state.audit.record(event);
            return Err(AuthorizerError::Unauthorized);
        }
    };
    event.credential_source = Some(credential.source.as_str().to_string());
    let principal = if apikeys::is_api_key(credential.token.expose()) {
        key_principal(state, &request_id, &credential, &mut event).await?
    } else {
        token_principal(state, &request_id, &credential, &mut event).await?
    };
    let by_key = principal.auth_method == apikeys::AUTH_METHOD;

    // The same grammar and the same policy the route applies again; the body (and a model named
    // there) is the route's to check.
    let admin = gateway_shared::scopes::admin_path(&path).is_some();
    let decision = match Provider::from_path(&path) {
        // An API key is a program's credential for the provider routes; administering the
        // gateway takes a person's sign-in (and a key never holds an admin scope anyway).
        _ if admin && by_key => Decision::Deny {
            reason: "an API key cannot call the admin API; sign in as an administrator".into(),
        },
        // The admin API: one rule by resource and method; the admin API checks the same rule again.
        _ if admin => match request.http_method.as_ref() {
            None => Decision::Deny {
                reason: "the request has no method".into(),
            },
            Some(method) => state.policy.decide_admin(
                method.as_str(),
                gateway_shared::scopes::admin_path(&path).unwrap_or_default(),
                principal.scopes.iter().map(String::as_str),
            ),
        },
        None => Decision::Deny {
            reason: format!("{path} is not a gateway route"),
        },
        Some((provider, rest)) => match request
            .http_method
            .as_ref()
            .map(|method| provider.classify(method, rest))
        {
            None => Decision::Deny {
                reason: "the request has no method".into(),
            },
            // Not an API the gateway relays (or a path it refuses to read): the route classifies it
            // again and answers 404 or 400 in the provider's shape, audited, with nothing sent
            // upstream. A 403 here would tell the SDK the caller lacks a permission instead.
            Some(Err(error)) => {
                tracing::info!(request_id, %error, "not a relayed API; the route refuses it");
                Decision::Allow {
                    required_scope: String::new(),
                }
            }
            Some(Ok(classified)) => state.policy.decide(
                provider,
                &classified.operation,
                principal.scopes.iter().map(String::as_str),
                BodyModel::NotRead,
            ),
        },
    };

    let mut context = principal.to_fields();
    let (effect, usage_key) = match &decision {
        Decision::Allow { required_scope } => {
            tracing::info!(request_id, subject = %principal.subject, department = ?principal.department, required_scope, decision = "allow", "authorized");
            // The allow is recorded too: a request let through that never reaches its route
            // (throttled by the usage plan, an invoke failure) is then reported as incomplete.
            let mut authorized = event.as_record(AuditRecord::Authorized);
            authorized.decision = AuditDecision::Allow;
            authorized.status = 0;
            authorized.outcome = AuditOutcome::Pending;
            authorized.principal = Some(Principal::from(&principal));
            state.audit.record(authorized);
            // A caller in no department falls under the `default` plan (the stage's throttle):
            // without a key API Gateway would refuse it outright.
            let key = match &state.usage_keys {
                Some(keys) => {
                    keys.for_department(
                        principal
                            .department
                            .as_deref()
                            .unwrap_or(usage_keys::DEFAULT_PLAN),
                    )
                    .await
                }
                None => None,
            };
            (IamPolicyEffect::Allow, key)
        }
        Decision::Deny { reason } => {
            tracing::info!(request_id, subject = %principal.subject, reason, decision = "deny", "forbidden");
            context.insert(DENY_REASON_KEY.into(), reason.clone().into());
            event.decision = AuditDecision::Deny;
            event.status = 403;
            event.reason = Some(reason.clone());
            event.principal = Some(Principal::from(&principal));
            state.audit.record(event);
            (IamPolicyEffect::Deny, None)
        }
    };

    let mut statement = IamPolicyStatement::default();
    statement.action = vec!["execute-api:Invoke".into()];
    statement.effect = effect;
    statement.resource = vec![method_arn];
    let mut policy_document = ApiGatewayCustomAuthorizerPolicy::default();
    policy_document.version = Some("2012-10-17".into());
    policy_document.statement = vec![statement];
    let mut response = Response::default();
    response.principal_id = Some(principal.subject);
    response.policy_document = policy_document;
    response.context = context;
    response.usage_identifier_key = usage_key;
    Ok(response)
}

/// The principal of a JWT: verified, not revoked; scopes and department from its groups.
async fn token_principal(
    state: &State,
    request_id: &str,
    credential: &Credential,
    event: &mut AuditEvent,
) -> Result<AuthContext, AuthorizerError> {
    let token = match state.verifier.verify(credential.token.expose()).await {
        Ok(token) => token,
        Err(error) if error.is_internal() => {
            tracing::error!(request_id, %error, "token could not be checked");
            return Err(refuse_internal(state, event, error.to_string()));
        }
        Err(error) => {
            tracing::info!(request_id, %error, source = credential.source.as_str(), decision = "unauthorized", "token refused");
            return Err(refuse(state, event, error.to_string()));
        }
    };

    if let Some(revocations) = &state.revocations {
        match revocations.get(&token.subject).await {
            Ok(record) => {
                if let Some(why) = record.and_then(|r| r.refusal(token.issued_at)) {
                    tracing::info!(request_id, subject = %token.subject, why, decision = "unauthorized", "token revoked");
                    event.principal = Some(Principal {
                        subject: token.subject.clone(),
                        username: token.username.clone(),
                        client_id: token.client_id.clone(),
                        auth_method: Some(token.auth_method.clone()),
                        department: None,
                    });
                    return Err(refuse(state, event, why.to_string()));
                }
            }
            // Fails closed: a token that cannot be checked against revocations is not let through.
            Err(error) => {
                tracing::error!(request_id, %error, "revocations could not be read");
                return Err(refuse_internal(state, event, error.to_string()));
            }
        }
    }

    let scopes = state.policy.granted_scopes(
        token.scopes.iter().map(String::as_str),
        token.groups.iter().map(String::as_str),
    );
    Ok(AuthContext {
        subject: token.subject.clone(),
        username: token.username.clone(),
        department: state
            .policy
            .department(token.groups.iter().map(String::as_str)),
        scopes: scopes.into_iter().collect(),
        auth_method: token.auth_method.clone(),
        client_id: token.client_id.clone(),
        credential_source: Some(credential.source.as_str().to_string()),
    })
}

/// The principal of an API key: its stored department and scopes (admin scopes and scopes the
/// policy no longer defines are dropped), audited as `apikey:<id>`.
async fn key_principal(
    state: &State,
    request_id: &str,
    credential: &Credential,
    event: &mut AuditEvent,
) -> Result<AuthContext, AuthorizerError> {
    let now_secs = gateway_shared::audit::clock::now_millis() / 1000;
    let Some(keys) = &state.api_keys else {
        return Err(refuse(state, event, Refusal::Unknown.to_string()));
    };
    let record = match apikeys::authenticate(keys, credential.token.expose(), now_secs).await {
        Ok(record) => record,
        Err(error @ Refusal::Unavailable(_)) => {
            tracing::error!(request_id, %error, "API keys could not be read");
            return Err(refuse_internal(state, event, error.to_string()));
        }
        Err(refusal) => {
            // The id of a well-formed key names what was refused; a malformed one names nothing.
            if let Some(id) = apikeys::parse(credential.token.expose()) {
                event.principal = Some(Principal {
                    subject: format!("{}{id}", apikeys::SUBJECT_PREFIX),
                    username: None,
                    client_id: None,
                    auth_method: Some(apikeys::AUTH_METHOD.into()),
                    department: None,
                });
            }
            tracing::info!(request_id, %refusal, source = credential.source.as_str(), decision = "unauthorized", "API key refused");
            return Err(refuse(state, event, refusal.to_string()));
        }
    };
    Ok(AuthContext {
        subject: record.subject(),
        username: Some(record.name.clone()),
        department: Some(record.department.clone()),
        scopes: record
            .scopes
            .iter()
            .filter(|s| state.policy.knows(s) && !gateway_shared::scopes::is_admin_scope(s))
            .cloned()
            .collect(),
        auth_method: apikeys::AUTH_METHOD.into(),
        client_id: None,
        credential_source: Some(credential.source.as_str().to_string()),
    })
}

/// Records the 401 and answers it.
fn refuse(state: &State, event: &mut AuditEvent, reason: String) -> AuthorizerError {
    event.reason = Some(reason);
    state.audit.record(event.clone());
    AuthorizerError::Unauthorized
}

/// Records the 500 (the credential could not be checked) and answers it.
fn refuse_internal(state: &State, event: &mut AuditEvent, reason: String) -> AuthorizerError {
    event.decision = AuditDecision::Error;
    event.status = 500;
    event.reason = Some(reason.clone());
    state.audit.record(event.clone());
    AuthorizerError::Internal(reason)
}

/// The audit event of a refused request, with what is known before the credential is checked.
fn refusal_event(
    request_id: &str,
    request: &Request,
    headers: &http::HeaderMap,
    path: &str,
) -> AuditEvent {
    let mut event = AuditEvent::new(request_id, AuditDecision::Unauthorized, 401);
    event.source_ip = request
        .request_context
        .identity
        .as_ref()
        .and_then(|i| i.source_ip.clone());
    event.user_agent = headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if gateway_shared::scopes::admin_path(path).is_some() {
        event.provider = Some(gateway_shared::scopes::ADMIN_ROUTE.to_string());
    } else if let Some((provider, rest)) = Provider::from_path(path) {
        event.provider = Some(provider.route_prefix().to_string());
        let classified = request
            .http_method
            .as_ref()
            .and_then(|method| provider.classify(method, rest).ok());
        if let Some(classified) = classified {
            event.operation = Some(classified.operation.name.to_string());
            event.model = classified.operation.model;
        }
    }
    event
}

/// Whether an authorizer answer lets the request through.
pub fn is_allowed(response: &Response) -> bool {
    !response.policy_document.statement.is_empty()
        && response
            .policy_document
            .statement
            .iter()
            .all(|s| s.effect == IamPolicyEffect::Allow)
}
