//! The route handler every provider Lambda runs (`/azure-openai`, `/bedrock-claude`, `/gemini`).
//!
//! Phases, in order: read the authorizer's context (fail closed without it); check the scope again from
//! that context (a misconfigured authorizer cache must not open a route); rewrite the request (path below
//! the prefix as the client encoded it, query without `key`, headers without client credentials); relay it
//! through the configured transport; stream the provider's answer back untouched. Failures the gateway
//! causes are answered in the provider's own error shape with the request id.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderValue, Response};
use http_body_util::{BodyExt, Full};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

use crate::audit::body::AuditedBody;
use crate::audit::lifecycle::{run_with_extension, InvocationGuard, Invocations};
use crate::audit::{
    sha256_hex, AuditBuffer, AuditEvent, AuditSink, BodiesConfig, CapturedBodies, Decision,
    Outcome, Principal, Record, UsageScanner,
};
use crate::auth::AuthContext;
use crate::config::{self, ConfigError, Settings};
use crate::error::{ErrorKind, GatewayError};
use crate::headers::upstream_request_headers;
use crate::providers::{ModelAt, Provider, TransportKind, REQUEST_ID_HEADER};
use crate::request_event::{parse_event, ProxyRequest, RequestMeta};
use crate::scopes::{BodyModel, Decision as PolicyDecision, Policy};
use crate::transport::direct::{http_client, DirectTransport, UpstreamConfig};
use crate::transport::queue::{QueueConfig, QueueTransport};
use crate::transport::{ProxyBody, Transport, TransportError, UpstreamRequest};

/// Lambda's request payload limit for streamed invocations; larger bodies are refused before relaying.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 6 * 1024 * 1024;

#[derive(Debug, Clone)]
pub enum TransportConfig {
    /// The route calls the provider itself.
    Direct(UpstreamConfig),
    /// The route hands the request to the dispatcher through SQS.
    Queue(QueueConfig),
}

impl TransportConfig {
    pub fn name(&self) -> &'static str {
        match self {
            TransportConfig::Direct(_) => "direct",
            TransportConfig::Queue(_) => "queue",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub provider: Provider,
    pub transport: TransportConfig,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub max_request_bytes: usize,
    pub policy_file: Option<String>,
    /// How long before the function's timeout a stream still running is ended cleanly
    /// (`GATEWAY_STREAM_CUT_MARGIN_MS`); it also leaves the audit flush its time.
    pub stream_cut_margin: Duration,
    /// Whether (and how much of) request and response bodies the audit trail keeps, encrypted.
    pub audit_bodies: BodiesConfig,
    /// The provider region requests go to ([`crate::providers::UpstreamSpec::region`]).
    pub region: Option<String>,
}

/// Room for the cut frame, the client's last read and the audit flush before Lambda ends the
/// invocation.
pub const DEFAULT_STREAM_CUT_MARGIN: Duration = Duration::from_secs(5);

impl RouteConfig {
    /// Reads the route's settings: `GATEWAY_TRANSPORT` (`direct` or `queue`; default the provider's
    /// [`crate::providers::UpstreamSpec::default_transport`]: providers outside AWS through the queue and
    /// the dispatcher's private links, Bedrock directly), then the upstream settings
    /// ([`UpstreamConfig`]) or the queue settings ([`QueueConfig`]); and
    /// `GATEWAY_UPSTREAM_CONNECT_TIMEOUT_MS`, `GATEWAY_UPSTREAM_RESPONSE_TIMEOUT_MS`,
    /// `GATEWAY_MAX_REQUEST_BYTES`, `GATEWAY_SCOPE_POLICY_FILE`; and the audit bodies' settings
    /// ([`BodiesConfig`]: `GATEWAY_AUDIT_BODIES`, `GATEWAY_AUDIT_BODY_MAX_BYTES`,
    /// `GATEWAY_AUDIT_BUCKET`, `GATEWAY_AUDIT_BODY_KEY_ID`).
    pub fn from_settings(
        provider: Provider,
        settings: &dyn Settings,
    ) -> Result<RouteConfig, ConfigError> {
        let response_timeout = config::duration_ms(
            settings,
            "GATEWAY_UPSTREAM_RESPONSE_TIMEOUT_MS",
            Duration::from_secs(120),
        )?;
        let transport = match settings.get(TransportKind::SETTING) {
            Some(name) => TransportKind::parse(&name)?,
            None => provider.upstream().default_transport,
        };
        let transport = match transport {
            TransportKind::Direct => {
                TransportConfig::Direct(UpstreamConfig::from_settings(provider, settings)?)
            }
            TransportKind::Queue => {
                TransportConfig::Queue(QueueConfig::from_settings(settings, response_timeout)?)
            }
        };
        Ok(RouteConfig {
            provider,
            transport,
            connect_timeout: config::duration_ms(
                settings,
                "GATEWAY_UPSTREAM_CONNECT_TIMEOUT_MS",
                Duration::from_secs(5),
            )?,
            response_timeout,
            max_request_bytes: config::usize_setting(
                settings,
                "GATEWAY_MAX_REQUEST_BYTES",
                DEFAULT_MAX_REQUEST_BYTES,
            )?,
            stream_cut_margin: config::duration_ms(
                settings,
                "GATEWAY_STREAM_CUT_MARGIN_MS",
                DEFAULT_STREAM_CUT_MARGIN,
            )?,
            policy_file: settings.get("GATEWAY_SCOPE_POLICY_FILE"),
            audit_bodies: BodiesConfig::from_settings(settings)?,
            region: provider.upstream().region(settings),
        })
    }
}

/// Loads the scope policy from `GATEWAY_SCOPE_POLICY_FILE`, or the one shipped in the repository.
pub fn load_policy(file: Option<&str>) -> Result<Policy, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        name: "GATEWAY_SCOPE_POLICY_FILE",
        reason,
    };
    match file {
        None => Policy::default_policy().map_err(|e| invalid(e.to_string())),
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| invalid(format!("{path}: {e}")))?;
            Policy::from_json(&text).map_err(|e| invalid(format!("{path}: {e}")))
        }
    }
}

/// What one request asks of a route's admission check, after it passed the scope policy.
pub struct AdmissionRequest<'a> {
    pub provider: Provider,
    pub method: &'a http::Method,
    /// What the grammar made of the request (name, model, access).
    pub operation: &'a crate::providers::Operation,
    /// The provider region the request goes to (regional prices).
    pub region: Option<&'a str>,
    pub principal: &'a AuthContext,
    pub body: &'a [u8],
}

/// A check a request must pass before it is forwarded, beside the scope policy: the budgets
/// (`crate::budgets::Gate`). It answers what it reserved for the request, or the error to answer
/// (in the provider's shape) instead of forwarding.
pub trait Admission: Send + Sync {
    fn admit<'a>(
        &'a self,
        request: AdmissionRequest<'a>,
    ) -> futures_util::future::BoxFuture<
        'a,
        Result<Option<crate::audit::BudgetReservation>, GatewayError>,
    >;
}

pub struct Route {
    admission: Option<Arc<dyn Admission>>,
    provider: Provider,
    policy: Arc<Policy>,
    transport: Arc<dyn Transport>,
    transport_name: &'static str,
    max_request_bytes: usize,
    audit: Arc<dyn AuditSink>,
    stream_cut_margin: Duration,
    /// How much of each body the final event carries for the audit trail; `None`: none.
    body_capture: Option<usize>,
    region: Option<String>,
}

impl Route {
    /// `transport` is the transport and its name for the audit trail (`direct`, `queue`).
    pub fn new(
        provider: Provider,
        policy: Arc<Policy>,
        transport: (Arc<dyn Transport>, &'static str),
        max_request_bytes: usize,
        audit: Arc<dyn AuditSink>,
    ) -> Self {
        Route {
            admission: None,
            provider,
            policy,
            transport: transport.0,
            transport_name: transport.1,
            max_request_bytes,
            audit,
            stream_cut_margin: DEFAULT_STREAM_CUT_MARGIN,
            body_capture: None,
            region: None,
        }
    }

    /// The provider region this route's requests go to, for the audit trail and regional prices.
    pub fn with_region(mut self, region: Option<String>) -> Self {
        self.region = region;
        self
    }

    /// How long before the invocation's deadline a running stream is ended (see
    /// [`RouteConfig::stream_cut_margin`]).
    pub fn with_stream_cut_margin(mut self, margin: Duration) -> Self {
        self.stream_cut_margin = margin;
        self
    }

    /// Checks every request with `admission` (the budgets) before forwarding it.
    pub fn with_admission(mut self, admission: Arc<dyn Admission>) -> Self {
        self.admission = Some(admission);
        self
    }

    /// Keeps up to `limit` bytes of each request's body and of its response for the audit trail
    /// (`None`: keeps none; the default).
    pub fn with_body_capture(mut self, limit: Option<usize>) -> Self {
        self.body_capture = limit;
        self
    }

    /// Builds the route with its clients, once per execution environment.
    pub fn from_config(
        config: &RouteConfig,
        sdk: &aws_config::SdkConfig,
        audit: Arc<dyn AuditSink>,
    ) -> Result<Route, ConfigError> {
        let policy = Arc::new(load_policy(config.policy_file.as_deref())?);
        let transport: Arc<dyn Transport> = match &config.transport {
            TransportConfig::Direct(upstream) => {
                let http =
                    http_client(config.connect_timeout).map_err(|e| ConfigError::Invalid {
                        name: "GATEWAY_UPSTREAM_CONNECT_TIMEOUT_MS",
                        reason: format!("HTTP client could not be built: {e}"),
                    })?;
                Arc::new(DirectTransport::new(
                    http,
                    upstream.build(sdk)?,
                    config.response_timeout,
                ))
            }
            TransportConfig::Queue(queue) => {
                Arc::new(QueueTransport::new(config.provider, queue.clone(), sdk))
            }
        };
        Ok(Route::new(
            config.provider,
            policy,
            (transport, config.transport.name()),
            config.max_request_bytes,
            audit,
        )
        .with_stream_cut_margin(config.stream_cut_margin)
        .with_body_capture(config.audit_bodies.capture_limit())
        .with_region(config.region.clone()))
    }

    /// Readies the transport (the queue transport creates its reply queue); failures are logged, and
    /// the first request retries.
    pub async fn prepare(&self) {
        if let Err(error) = self.transport.prepare().await {
            tracing::warn!(%error, "transport not prepared at init");
        }
    }

    /// Handles one API Gateway proxy event; never fails and never panics: every failure, a malformed
    /// event included, becomes a provider-shaped error. Exactly one final audit event is recorded per
    /// request, when its response has ended (and an accepted one when the provider is called).
    pub async fn handle(&self, event: Value) -> Response<ProxyBody> {
        self.handle_until(event, None).await
    }

    /// [`Route::handle`] for an invocation that ends at `deadline` (Lambda's, from the invocation's
    /// context): a stream still running [`RouteConfig::stream_cut_margin`] before it is ended cleanly
    /// with the provider's stream error, and audited as `deadline_cut`, instead of being killed
    /// mid-frame with no final record.
    pub async fn handle_until(
        &self,
        event: Value,
        deadline: Option<std::time::SystemTime>,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        let (meta, request) = parse_event(event);
        let request_id = meta.request_id.clone();
        let mut event = AuditEvent::new(&request_id, Decision::Allow, 0);
        event.provider = Some(self.provider.route_prefix().to_string());
        event.transport = Some(self.transport_name.to_string());
        event.region = self.region.clone();
        event.source_ip = meta.source_ip.clone();
        event.user_agent = meta.user_agent.clone();
        let relayed = match request {
            Ok(request) => self.relay(request, &meta, &mut event).await,
            Err(error) => Err(error),
        };
        let response = match relayed {
            Ok(response) => {
                event.status = response.status().as_u16();
                let content_type = response
                    .headers()
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok());
                let scanner = UsageScanner::new(self.provider.usage_shapes(), content_type);
                let cut = deadline.filter(|_| scanner.is_stream()).map(|deadline| {
                    let left = deadline
                        .duration_since(std::time::SystemTime::now())
                        .unwrap_or_default()
                        .saturating_sub(self.stream_cut_margin);
                    let message = "the stream was ended before the gateway function's time limit; send the rest as a new request";
                    (
                        tokio::time::Instant::now() + left,
                        self.provider.stream_cut(message, &request_id),
                    )
                });
                response.map(|body| {
                    let body = AuditedBody::new(body, scanner, event, self.audit.clone(), started);
                    match cut {
                        Some((at, last)) => body.cut_at(at, last).boxed_unsync(),
                        None => body.boxed_unsync(),
                    }
                })
            }
            Err(error) => {
                tracing::warn!(request_id, provider = self.provider.route_prefix(), kind = ?error.kind, message = %error.message, "gateway error");
                event.decision = match error.kind {
                    ErrorKind::Unauthorized => Decision::Unauthorized,
                    // A budget's refusal is a decision of the gateway's rules, like the policy's.
                    ErrorKind::Forbidden | ErrorKind::RateLimited => Decision::Deny,
                    _ => Decision::Error,
                };
                event.status = error.kind.status().as_u16();
                event.reason = Some(error.message.clone());
                event.outcome = Outcome::Refused;
                event.latency.total_ms = started.elapsed().as_millis() as u64;
                let response = self.provider.error_response(&error, &request_id);
                if let Some(captured) = event.captured.as_mut() {
                    captured.response.push(response.body());
                }
                self.audit.record(event);
                response.map(|body| {
                    Full::new(body)
                        .map_err(|never| match never {})
                        .boxed_unsync()
                })
            }
        };
        tracing::info!(
            request_id,
            provider = self.provider.route_prefix(),
            status = response.status().as_u16(),
            latency_ms = started.elapsed().as_millis() as u64,
            "request relayed"
        );
        with_request_id(response, &request_id)
    }

    async fn relay(
        &self,
        request: ProxyRequest,
        meta: &RequestMeta,
        event: &mut AuditEvent,
    ) -> Result<Response<ProxyBody>, GatewayError> {
        let request_id = meta.request_id.as_str();
        let principal =
            AuthContext::from_fields(&meta.authorizer).ok_or_else(GatewayError::unauthorized)?;
        event.principal = Some(Principal::from(&principal));
        event.credential_source = principal.credential_source.clone();
        let ProxyRequest {
            method,
            path,
            query,
            headers,
            body,
        } = request;
        // Sized before anything reads it: an oversized body is never hashed or parsed.
        event.bytes_in = body.len() as u64;
        // A bounded handle on the body (no copy), for the final record only; sealed at the flush.
        if let Some(limit) = self.body_capture {
            event.captured = Some(CapturedBodies::of_request(&body, limit));
        }
        if body.len() > self.max_request_bytes {
            return Err(GatewayError::new(
                ErrorKind::PayloadTooLarge,
                format!(
                    "request body is {} bytes; the gateway accepts at most {}",
                    body.len(),
                    self.max_request_bytes
                ),
            ));
        }
        let rest = match Provider::from_path(&path) {
            Some((provider, rest)) if provider == self.provider => rest,
            _ => {
                return Err(GatewayError::new(
                    ErrorKind::NotFound,
                    format!(
                        "this function serves /{} only",
                        self.provider.route_prefix()
                    ),
                ))
            }
        };
        let classified = self
            .provider
            .classify(&method, rest)
            .map_err(|e| e.to_gateway_error())?;
        let mut operation = classified.operation;
        event.operation = Some(operation.name.to_string());
        let body_model = if operation.model_at == ModelAt::Body {
            operation.model = model_in_body(&body)?;
            BodyModel::Read(operation.model.as_deref())
        } else {
            BodyModel::NotRead
        };
        event.model = operation.model.clone();
        if let PolicyDecision::Deny { reason } = self.policy.decide(
            self.provider,
            &operation,
            principal.scopes.iter().map(String::as_str),
            body_model,
        ) {
            return Err(GatewayError::new(ErrorKind::Forbidden, reason));
        }
        if let Some(admission) = &self.admission {
            event.budget = admission
                .admit(AdmissionRequest {
                    provider: self.provider,
                    method: &method,
                    operation: &operation,
                    region: self.region.as_deref(),
                    principal: &principal,
                    body: &body,
                })
                .await?;
        }

        let query = upstream_query(&query);
        let headers = upstream_request_headers(&headers);
        event.request_sha256 = Some(sha256_hex(&body));
        tracing::debug!(request_id, operation = operation.name, model = ?operation.model, subject = %principal.subject, "relaying");
        // The accepted record leaves now, beside the upstream call and never ahead of it: if this
        // environment dies before the final, the trail still knows the request was relayed.
        let mut accepted = event.as_record(Record::Accepted);
        accepted.outcome = Outcome::Pending;
        self.audit.record(accepted);
        self.audit.send_now();
        let upstream_started = Instant::now();
        let upstream = self
            .transport
            .send(UpstreamRequest {
                request_id: request_id.to_string(),
                provider: self.provider,
                subject: Some(principal.subject.clone()),
                method,
                path: classified.path,
                query,
                headers,
                body,
            })
            .await
            .map_err(transport_error);
        event.latency.upstream_ms = Some(upstream_started.elapsed().as_millis() as u64);
        let upstream = upstream?;
        let mut response = Response::new(upstream.body);
        *response.status_mut() = upstream.status;
        *response.headers_mut() = upstream.headers;
        Ok(response)
    }
}

/// The `model` field of a JSON request body, for operations that name their model there (Azure's v1
/// API). A body that is not JSON (multipart audio) names none; a JSON body whose `model` is not one
/// string (a number, or the key given twice) is refused, so the model checked is the model relayed.
fn model_in_body(body: &[u8]) -> Result<Option<String>, GatewayError> {
    #[derive(serde::Deserialize)]
    struct ModelOnly {
        model: Option<String>,
    }
    match serde_json::from_slice::<ModelOnly>(body) {
        Ok(parsed) => Ok(parsed.model),
        Err(e) if e.is_data() => Err(GatewayError::new(
            ErrorKind::BadRequest,
            format!("the request body's 'model' must be given once, as a string: {e}"),
        )),
        Err(_) => Ok(None),
    }
}

fn transport_error(error: TransportError) -> GatewayError {
    let kind = match &error {
        TransportError::Timeout(_) => ErrorKind::GatewayTimeout,
        TransportError::Connect(_) | TransportError::Request(_) => ErrorKind::BadGateway,
        TransportError::Credential(_) => ErrorKind::Internal,
        TransportError::Path(_) => ErrorKind::BadRequest,
    };
    // The detail (which may name hosts) goes to the log; the client sees the category.
    tracing::error!(error = ?error, "upstream call failed");
    GatewayError::new(kind, error.to_string())
}

fn with_request_id(mut response: Response<ProxyBody>, request_id: &str) -> Response<ProxyBody> {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// RFC 3986 unreserved characters stay; everything else is percent-encoded.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The query to send upstream: every parameter but `key` (a gateway token placed where google-genai puts
/// its API key), re-encoded, in a stable order.
pub fn upstream_query(params: &[(String, String)]) -> String {
    let mut pairs: Vec<(&str, &str)> = params
        .iter()
        .filter(|(k, _)| k != "key")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, QUERY_VALUE),
                utf8_percent_encode(v, QUERY_VALUE)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Runs a route as a streaming Lambda function (API Gateway REST `responseTransferMode: STREAM`). The
/// event is taken as plain JSON and read by [`parse_event`], never by an adapter that can panic.
pub async fn run(route: Route, invocations: Arc<Invocations>) -> Result<(), lambda_runtime::Error> {
    let route = Arc::new(route);
    let runtime = {
        let invocations = invocations.clone();
        move || {
            lambda_runtime::run(lambda_runtime::service_fn(
                move |invocation: lambda_runtime::LambdaEvent<Value>| {
                    let (route, guard) = (route.clone(), invocations.begin());
                    let deadline =
                        std::time::UNIX_EPOCH + Duration::from_millis(invocation.context.deadline);
                    async move {
                        let response = route.handle_until(invocation.payload, Some(deadline)).await;
                        Ok::<_, lambda_runtime::Error>(into_stream_response(response, guard))
                    }
                },
            ))
        }
    };
    run_with_extension(&invocations, runtime).await
}

/// The streaming Lambda response of an HTTP response: status and headers in the prelude, then the body
/// as it arrives.
fn into_stream_response(
    response: Response<ProxyBody>,
    guard: InvocationGuard,
) -> lambda_runtime::StreamResponse<GuardedStream> {
    let (parts, body) = response.into_parts();
    let mut headers = parts.headers;
    let cookies = headers
        .get_all(http::header::SET_COOKIE)
        .iter()
        .map(|c| String::from_utf8_lossy(c.as_bytes()).into_owned())
        .collect();
    headers.remove(http::header::SET_COOKIE);
    lambda_runtime::StreamResponse {
        metadata_prelude: lambda_runtime::MetadataPrelude {
            status_code: parts.status,
            headers,
            cookies,
        },
        stream: GuardedStream::new(body, guard),
    }
}

/// The response body as Lambda streams it, holding the invocation open until the stream is over (its
/// end, or the client going away), so the audit flush runs after the last byte, not before.
pub struct GuardedStream {
    body: http_body_util::BodyDataStream<ProxyBody>,
    _invocation: InvocationGuard,
}

impl GuardedStream {
    pub fn new(body: ProxyBody, invocation: InvocationGuard) -> Self {
        GuardedStream {
            body: http_body_util::BodyDataStream::new(body),
            _invocation: invocation,
        }
    }
}

impl futures_util::Stream for GuardedStream {
    type Item = Result<bytes::Bytes, crate::transport::BoxError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::pin::Pin::new(&mut self.body).poll_next(cx)
    }
}

/// The route with the budget check its settings ask for (`crate::budgets::Gate::from_settings`).
#[cfg(feature = "budgets")]
pub async fn with_budgets(
    route: Route,
    settings: &dyn Settings,
    sdk: &aws_config::SdkConfig,
) -> Result<Route, ConfigError> {
    Ok(
        match crate::budgets::Gate::from_settings(settings, sdk).await? {
            Some(gate) => route.with_admission(Arc::new(gate)),
            None => route,
        },
    )
}

/// Reads configuration from the environment, builds the route and runs it: the whole `main` of a route
/// function.
pub async fn run_from_env(provider: Provider) -> Result<(), lambda_runtime::Error> {
    crate::telemetry::init();
    let config = RouteConfig::from_settings(provider, &config::Env)?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let delivery = config.audit_bodies.delivery(
        crate::audit::delivery_from_settings(&config::Env, &sdk),
        &sdk,
    );
    let invocations = Invocations::new(AuditBuffer::new(delivery));
    let route = Route::from_config(&config, &sdk, Arc::new(invocations.buffer().clone()))?;
    #[cfg(feature = "budgets")]
    let route = with_budgets(route, &config::Env, &sdk).await?;
    route.prepare().await;
    run(route, invocations).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap as Map;

    #[test]
    fn query_drops_key_and_reencodes() {
        let params: Vec<(String, String)> = [
            ("key", "token"),
            ("alt", "sse"),
            ("api-version", "2024-10-21"),
            ("q", "a b&c"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let query = upstream_query(&params);
        assert_eq!(query, "alt=sse&api-version=2024-10-21&q=a%20b%26c");
    }

    #[test]
    fn config_requires_provider_settings() {
        let empty: Map<String, String> = Map::new();
        assert!(matches!(
            RouteConfig::from_settings(Provider::AzureOpenAi, &empty),
            Err(ConfigError::Missing("GATEWAY_REQUEST_QUEUE_URL"))
        ));
        let mut direct: Map<String, String> = Map::new();
        direct.insert("GATEWAY_TRANSPORT".into(), "direct".into());
        assert!(matches!(
            RouteConfig::from_settings(Provider::AzureOpenAi, &direct),
            Err(ConfigError::Missing("GATEWAY_AZURE_OPENAI_ENDPOINT"))
        ));
        let mut settings: Map<String, String> = Map::new();
        settings.insert("AWS_REGION".into(), "eu-west-1".into());
        let error = RouteConfig::from_settings(Provider::BedrockClaude, &settings).unwrap_err();
        assert!(
            error.to_string().contains("GATEWAY_AUDIT_BUCKET"),
            "bodies are recorded by default and need their bucket: {error}"
        );
        settings.insert("GATEWAY_AUDIT_BUCKET".into(), "audit".into());
        settings.insert("GATEWAY_AUDIT_BODY_KEY_ID".into(), "alias/bodies".into());
        let bedrock = RouteConfig::from_settings(Provider::BedrockClaude, &settings).unwrap();
        assert_eq!(
            bedrock.audit_bodies.capture_limit(),
            Some(crate::audit::bodies::DEFAULT_MAX_BYTES)
        );
        let TransportConfig::Direct(upstream) = bedrock.transport else {
            panic!("direct is Bedrock's default transport")
        };
        assert_eq!(
            upstream.base_url,
            "https://bedrock-runtime.eu-west-1.amazonaws.com"
        );
        settings.insert("GATEWAY_TRANSPORT".into(), "queue".into());
        assert!(matches!(
            RouteConfig::from_settings(Provider::AzureOpenAi, &settings),
            Err(ConfigError::Missing("GATEWAY_REQUEST_QUEUE_URL"))
        ));
        settings.insert("GATEWAY_REQUEST_QUEUE_URL".into(), "http://sqs/q".into());
        let queued = RouteConfig::from_settings(Provider::AzureOpenAi, &settings).unwrap();
        assert_eq!(
            queued.transport.name(),
            "queue",
            "queue routes need no upstream key"
        );
        settings.insert("GATEWAY_TRANSPORT".into(), "carrier-pigeon".into());
        assert!(RouteConfig::from_settings(Provider::BedrockClaude, &settings).is_err());
        settings.insert("GATEWAY_TRANSPORT".into(), "direct".into());
        settings.insert(
            "AWS_ENDPOINT_URL_BEDROCK_RUNTIME".into(),
            "not a url".into(),
        );
        assert!(RouteConfig::from_settings(Provider::BedrockClaude, &settings).is_err());
    }
}
