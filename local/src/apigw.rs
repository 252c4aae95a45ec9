//! The parts of API Gateway REST the stack uses, emulated in-process: the proxy resource
//! `/{provider}/{proxy+}`, the REQUEST authorizer (called on every request, TTL 0), the mapping of its
//! answer to 401/403 (the gateway responses the CDK stack declares, in each provider's error shape), and
//! the Lambda proxy integration with response streaming. Handlers are the very functions the Lambda
//! binaries run; events are built as API Gateway builds them and handed over as JSON, as Lambda does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use authorizer::{AuthorizerError, DENY_REASON_KEY};
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::Response;
use base64::Engine;
use gateway_shared::audit::lifecycle::Invocations;
use gateway_shared::proxy::{GuardedStream, Route};
use gateway_shared::{ErrorKind, GatewayError, Provider};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Map, Value};

pub const STAGE: &str = "local";
pub const ACCOUNT_ID: &str = "000000000000";
pub const API_ID: &str = "local";
/// API Gateway REST's payload limit.
const MAX_PAYLOAD_BYTES: usize = 10 * 1024 * 1024;

pub struct Gateway {
    pub region: String,
    /// The route functions' timeout: each invocation gets its deadline, as Lambda gives one.
    pub function_timeout: std::time::Duration,
    pub authorizer: Function<authorizer::State>,
    pub routes: HashMap<Provider, Function<Route>>,
    /// The admin API (`/admin/{proxy+}`, its own REST API in the stack), behind the same authorizer.
    pub admin: Function<admin_api::AdminApi>,
    /// The provider routes' usage plans, selected by the authorizer's usage-plan key.
    pub usage_plans: crate::usage_plans::UsagePlans,
}

/// What a path reaches: a provider's route or the admin API; each answers errors in its own shape.
#[derive(Clone, Copy)]
enum Target {
    Provider(Provider),
    Admin,
}

impl Target {
    fn of(path: &str) -> Option<(Target, &str)> {
        if let Some(rest) = gateway_shared::scopes::admin_path(path) {
            return Some((Target::Admin, rest));
        }
        Provider::from_path(path).map(|(provider, rest)| (Target::Provider(provider), rest))
    }

    fn prefix(self) -> &'static str {
        match self {
            Target::Provider(provider) => provider.route_prefix(),
            Target::Admin => gateway_shared::scopes::ADMIN_ROUTE,
        }
    }

    /// The gateway response API Gateway answers for `error`, in this target's shape.
    fn error(self, error: GatewayError, request_id: &str) -> Response {
        match self {
            Target::Provider(provider) => {
                provider.error_response(&error, request_id).map(Body::from)
            }
            Target::Admin => {
                let status = error.kind.status();
                let mut response = Response::new(Body::from(
                    admin_api::gateway_error_body(status.as_u16(), &error.message).to_string(),
                ));
                *response.status_mut() = status;
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                response
            }
        }
    }
}

/// A function's handler and its execution environment's invocations, whose audit records leave after
/// each invocation ends, as the Lambda extension sends them (`gateway_shared::audit::lifecycle`).
pub struct Function<H> {
    pub handler: H,
    pub invocations: Arc<Invocations>,
}

/// Every request enters here (the axum fallback), like API Gateway's front door.
pub async fn handle(
    State(gateway): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let mut response = gateway.serve(request, peer, &request_id).await;
    let headers = response.headers_mut();
    // API Gateway keeps its own request id header and renames an integration's one.
    if let Some(value) = headers.remove("x-amzn-requestid") {
        headers.insert(
            HeaderName::from_static("x-amzn-remapped-x-amzn-requestid"),
            value,
        );
    }
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert(HeaderName::from_static("x-amzn-requestid"), value);
    }
    response
}

impl Gateway {
    async fn serve(&self, request: Request, peer: SocketAddr, request_id: &str) -> Response {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path().to_string();
        let Some((target, rest)) = Target::of(&path) else {
            // What API Gateway REST answers for a path no resource matches.
            return plain(
                StatusCode::FORBIDDEN,
                json!({"message": "Missing Authentication Token"}),
                Some("MissingAuthenticationTokenException"),
            );
        };
        let route = match target {
            Target::Provider(provider) => match self.routes.get(&provider) {
                Some(route) => Some(route),
                None => {
                    return plain(
                        StatusCode::NOT_FOUND,
                        json!({"message": "route not deployed"}),
                        None,
                    )
                }
            },
            Target::Admin => None,
        };
        let body = match http_body_util::Limited::new(body, MAX_PAYLOAD_BYTES)
            .collect()
            .await
        {
            Ok(collected) => collected.to_bytes(),
            Err(_) => {
                return target.error(
                    GatewayError::new(
                        ErrorKind::PayloadTooLarge,
                        "request body exceeds API Gateway's 10 MB limit",
                    ),
                    request_id,
                )
            }
        };

        let query = parse_query(parts.uri.query().unwrap_or(""));
        let (single_headers, multi_headers) = header_maps(&parts.headers);
        let user_agent = parts
            .headers
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let resource = format!("/{}/{{proxy+}}", target.prefix());
        let proxy = rest.trim_start_matches('/').to_string();
        let method = parts.method.as_str();
        let identity = json!({"sourceIp": peer.ip().to_string(), "userAgent": user_agent});
        let context = json!({
            "accountId": ACCOUNT_ID, "apiId": API_ID, "stage": STAGE, "requestId": request_id,
            "resourceId": "proxy", "resourcePath": resource, "httpMethod": method,
            "path": format!("/{STAGE}{path}"), "identity": identity,
        });

        let authorizer_event = json!({
            "type": "REQUEST",
            "methodArn": format!("arn:aws:execute-api:{}:{ACCOUNT_ID}:{API_ID}/{STAGE}/{method}{path}", self.region),
            "resource": resource, "path": path, "httpMethod": method,
            "headers": single_headers, "multiValueHeaders": multi_headers,
            "queryStringParameters": query.single, "multiValueQueryStringParameters": query.multi,
            "pathParameters": {"proxy": proxy}, "stageVariables": {},
            "requestContext": context,
        });
        let started = Instant::now();
        let decision = {
            let _invocation = self.authorizer.invocations.begin();
            authorizer::handle_event(&self.authorizer.handler, authorizer_event).await
        };
        let answer = match decision {
            Ok(answer) => answer,
            Err(AuthorizerError::Unauthorized) => {
                return target.error(GatewayError::unauthorized(), request_id)
            }
            Err(AuthorizerError::Internal(reason)) => {
                tracing::error!(request_id, reason, "authorizer failed");
                return target.error(
                    GatewayError::new(
                        ErrorKind::Internal,
                        "the gateway could not check the token; try again",
                    ),
                    request_id,
                );
            }
        };
        if !authorizer::is_allowed(&answer) {
            let reason = answer
                .context
                .get(DENY_REASON_KEY)
                .and_then(Value::as_str)
                .unwrap_or("access denied");
            return target.error(
                GatewayError::new(ErrorKind::Forbidden, format!("Forbidden: {reason}")),
                request_id,
            );
        }

        if let Target::Provider(_) = target {
            use crate::usage_plans::Verdict;
            let refusal = match self
                .usage_plans
                .admit(answer.usage_identifier_key.as_deref())
            {
                Verdict::Admitted => None,
                Verdict::Throttled => Some(GatewayError::throttled()),
                Verdict::QuotaExceeded => Some(GatewayError::quota_exceeded()),
                Verdict::NoPlan => Some(GatewayError::no_usage_plan()),
            };
            if let Some(error) = refusal {
                return target.error(error, request_id);
            }
        }

        let mut authorizer_context: Map<String, Value> = answer.context;
        authorizer_context.insert(
            "principalId".into(),
            answer.principal_id.unwrap_or_default().into(),
        );
        authorizer_context.insert(
            "integrationLatency".into(),
            (started.elapsed().as_millis() as u64).into(),
        );
        let mut context = context;
        context["authorizer"] = Value::Object(authorizer_context);
        context["protocol"] = "HTTP/1.1".into();
        let proxy_event = json!({
            "resource": resource, "path": path, "httpMethod": method,
            "headers": single_headers, "multiValueHeaders": multi_headers,
            "queryStringParameters": query.single, "multiValueQueryStringParameters": query.multi,
            "pathParameters": {"proxy": proxy}, "stageVariables": null,
            "requestContext": context,
            // binaryMediaTypes */*: API Gateway hands every body over base64-encoded, byte for byte.
            "body": base64::engine::general_purpose::STANDARD.encode(&body),
            "isBase64Encoded": true,
        });
        let Some(route) = route else {
            return self.invoke_admin(proxy_event, request_id).await;
        };
        // The response streams as Lambda streams it, holding the invocation until its last byte.
        let invocation = route.invocations.begin();
        let deadline = std::time::SystemTime::now() + self.function_timeout;
        let response = route
            .handler
            .handle_until(proxy_event, Some(deadline))
            .await;
        response.map(|body| Body::from_stream(GuardedStream::new(body, invocation)))
    }
}

impl Gateway {
    /// The admin API's Lambda proxy integration (buffered): the event as lambda_http reads it.
    async fn invoke_admin(&self, proxy_event: Value, request_id: &str) -> Response {
        let request = match lambda_http::request::from_str(&proxy_event.to_string()) {
            Ok(request) => request,
            Err(error) => {
                tracing::error!(request_id, %error, "proxy event unreadable");
                return Target::Admin.error(
                    GatewayError::new(ErrorKind::Internal, "Internal server error"),
                    request_id,
                );
            }
        };
        let response = {
            let _invocation = self.admin.invocations.begin();
            self.admin.handler.handle(request).await
        };
        let (parts, body) = response.into_parts();
        let bytes = match body {
            lambda_http::Body::Empty => Vec::new(),
            lambda_http::Body::Text(text) => text.into_bytes(),
            lambda_http::Body::Binary(bytes) => bytes,
            _ => Vec::new(),
        };
        Response::from_parts(parts, Body::from(bytes))
    }
}

struct Query {
    single: HashMap<String, String>,
    multi: HashMap<String, Vec<String>>,
}

/// API Gateway hands query parameters over decoded, last value wins in the single-value map.
fn parse_query(raw: &str) -> Query {
    let mut single = HashMap::new();
    let mut multi: HashMap<String, Vec<String>> = HashMap::new();
    for (key, value) in form_urlencoded::parse(raw.as_bytes()) {
        single.insert(key.to_string(), value.to_string());
        multi
            .entry(key.to_string())
            .or_default()
            .push(value.to_string());
    }
    Query { single, multi }
}

fn header_maps(headers: &HeaderMap) -> (HashMap<String, String>, HashMap<String, Vec<String>>) {
    let mut single = HashMap::new();
    let mut multi: HashMap<String, Vec<String>> = HashMap::new();
    for (name, value) in headers {
        let Ok(text) = value.to_str() else { continue };
        single.insert(name.as_str().to_string(), text.to_string());
        multi
            .entry(name.as_str().to_string())
            .or_default()
            .push(text.to_string());
    }
    (single, multi)
}

fn plain(status: StatusCode, body: Value, error_type: Option<&'static str>) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(error_type) = error_type {
        response.headers_mut().insert(
            HeaderName::from_static("x-amzn-errortype"),
            HeaderValue::from_static(error_type),
        );
    }
    response
}
