//! The admin API: one Lambda function behind the gateway's authorizer, one router
//! (`schemas/admin-api.openapi.yaml` describes every route): users, API keys.
//!
//! The authorizer lets a request through only with the admin scope its resource and method need
//! (`admin:users[:read]`, `admin:apikeys[:read]`; `gateway_shared::scopes::admin_resource_scopes`);
//! this function checks the same rule again on the principal API Gateway hands over, so a misrouted
//! request fails closed. Paths are matched segment
//! by segment; a user id segment is the provisioning rules' user_id alphabet only, so no path can name
//! one user and change another. Every change is audited with the acting administrator.

pub mod apikeys;
pub mod departments;
pub mod files;
pub mod users;

use std::sync::Arc;
use std::time::Duration;

use gateway_shared::apikeys::ApiKeys;
use gateway_shared::audit::{AdminAction, AuditEvent, AuditSink, Principal};
use gateway_shared::auth::AuthContext;
use gateway_shared::config::{self, ConfigError, Settings};
use gateway_shared::directory::{Directory, DirectoryError, DirectorySettings};
use gateway_shared::provisioning::plan::{self, Change as Planned};
use gateway_shared::scopes::{Decision, Policy};
use gateway_shared::usage_plans::UsagePlans;
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::{json, Value};

use users::{Edit, NewUser, UserPatch};

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub directory: DirectorySettings,
    pub provisioning_bucket: String,
    pub reports_bucket: String,
    /// How long an upload URL stays valid.
    pub upload_ttl: Duration,
    pub policy_file: Option<String>,
    /// The DynamoDB table of API keys.
    pub apikey_table: String,
    /// The departments' budget settings and the usage counters.
    pub department_table: String,
    pub usage_table: String,
    /// The departments' API Gateway usage plans (`GATEWAY_USAGE_PLANS`); `None`: not managed here.
    pub usage_plans:
        Option<std::collections::BTreeMap<String, gateway_shared::usage_plans::DeployedPlan>>,
}

impl AdminConfig {
    /// [`DirectorySettings`], `GATEWAY_PROVISIONING_BUCKET`, `GATEWAY_REPORTS_BUCKET` (required),
    /// `GATEWAY_UPLOAD_URL_TTL_SECS` (300, 60 to 3600), `GATEWAY_SCOPE_POLICY_FILE` (optional),
    /// `GATEWAY_APIKEY_TABLE`, `GATEWAY_DEPARTMENT_TABLE`, `GATEWAY_USAGE_TABLE` (required),
    /// `GATEWAY_USAGE_PLANS` (optional: the departments' usage plans the settings may change).
    pub fn from_settings(settings: &dyn Settings) -> Result<Self, ConfigError> {
        let upload_ttl = config::duration_secs(
            settings,
            "GATEWAY_UPLOAD_URL_TTL_SECS",
            Duration::from_secs(300),
        )?;
        if !(60..=3600).contains(&upload_ttl.as_secs()) {
            return Err(ConfigError::Invalid {
                name: "GATEWAY_UPLOAD_URL_TTL_SECS",
                reason: "between 60 and 3600 seconds".into(),
            });
        }
        Ok(AdminConfig {
            directory: DirectorySettings::from_settings(settings)?,
            provisioning_bucket: config::required(settings, "GATEWAY_PROVISIONING_BUCKET")?,
            reports_bucket: config::required(settings, "GATEWAY_REPORTS_BUCKET")?,
            upload_ttl,
            policy_file: settings.get("GATEWAY_SCOPE_POLICY_FILE"),
            apikey_table: config::required(settings, "GATEWAY_APIKEY_TABLE")?,
            department_table: config::required(settings, "GATEWAY_DEPARTMENT_TABLE")?,
            usage_table: config::required(settings, "GATEWAY_USAGE_TABLE")?,
            usage_plans: gateway_shared::usage_plans::deployed_plans(settings)?,
        })
    }
}

/// An answer that is not a success, in the admin error shape
/// `{"error": {"code", "message", "details"?}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// (field, reason) pairs of a validation failure.
    pub details: Vec<(String, String)>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }

    pub fn invalid(details: Vec<(String, String)>) -> Self {
        let message = details
            .iter()
            .map(|(_, reason)| reason.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        ApiError {
            status: 400,
            code: "bad_request",
            message,
            details,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "bad_request", message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(404, "not_found", message)
    }

    pub(crate) fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "admin request failed");
        ApiError::new(
            500,
            "internal",
            "the request could not be completed; try again",
        )
    }

    pub fn body(&self) -> Value {
        let mut error = json!({"code": self.code, "message": self.message});
        if !self.details.is_empty() {
            error["details"] = self
                .details
                .iter()
                .map(|(field, reason)| json!({"field": field, "reason": reason}))
                .collect();
        }
        json!({ "error": error })
    }
}

impl From<DirectoryError> for ApiError {
    fn from(error: DirectoryError) -> Self {
        match error {
            DirectoryError::NoSuchUser(user) => {
                ApiError::not_found(format!("user {user} does not exist"))
            }
            DirectoryError::Exists(user) => {
                ApiError::new(409, "conflict", format!("user {user} exists already"))
            }
            other => ApiError::internal(other),
        }
    }
}

/// The admin error body for an HTTP status the gateway itself answers (401, 403, 429, ...), as the
/// admin API's gateway responses declare it.
pub fn gateway_error_body(status: u16, message: &str) -> Value {
    let code = match status {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        429 => "throttled",
        _ => "internal",
    };
    ApiError::new(status, code, message).body()
}

/// One answer: status, JSON or bytes, extra headers.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
}

impl Answer {
    fn json(status: u16, body: Value) -> Answer {
        Answer {
            status,
            body: body.to_string().into_bytes(),
            content_type: "application/json",
            headers: Vec::new(),
        }
    }

    fn no_content() -> Answer {
        Answer {
            status: 204,
            body: Vec::new(),
            content_type: "application/json",
            headers: Vec::new(),
        }
    }
}

pub struct AdminApi {
    config: AdminConfig,
    directory: Directory,
    s3: aws_sdk_s3::Client,
    api_keys: ApiKeys,
    department_settings: gateway_shared::budgets::SettingsStore,
    usage: gateway_shared::budgets::UsageCounters,
    usage_plans: Option<UsagePlans>,
    policy: Arc<Policy>,
    audit: Arc<dyn AuditSink>,
}

/// The routes, by method and path segments below `/admin`.
enum Route<'a> {
    Health,
    ListUsers,
    CreateUser,
    Download,
    Upload,
    SyncStatus,
    GetUser(&'a str),
    PatchUser(&'a str),
    DeleteUser(&'a str),
    Disable(&'a str),
    Enable(&'a str),
    PasswordReset(&'a str),
    SignOut(&'a str),
    UserUsage(&'a str),
    ListKeys,
    IssueKey,
    GetKey(&'a str),
    RevokeKey(&'a str),
    RotateKey(&'a str),
    KeyUsage(&'a str),
    ListDepartments,
    DepartmentsSummary,
    Chargeback,
    GetDepartment(&'a str),
    PutDepartment(&'a str),
    DepartmentUsage(&'a str),
}

/// A user id in a path: the provisioning rules' user_id alphabet, at most 32 characters, and not a
/// dot segment.
fn user_segment(segment: &str) -> Option<&str> {
    let ok = !segment.is_empty()
        && segment.len() <= gateway_shared::provisioning::rows::MAX_USER_ID_CHARS
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !segment.bytes().all(|b| b == b'.');
    ok.then_some(segment)
}

/// A department id in a path: lowercase letters, digits, `-` and `_` (whether it is configured is the
/// handler's to say).
fn department_segment(segment: &str) -> Option<&str> {
    let ok = !segment.is_empty()
        && segment.len() <= 64
        && segment
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'));
    ok.then_some(segment)
}

/// An API key id in a path: exactly a key id's 16 lowercase hex digits.
fn key_segment(segment: &str) -> Option<&str> {
    gateway_shared::apikeys::valid_id(segment).then_some(segment)
}

fn route<'a>(method: &str, path: &'a str) -> Result<Route<'a>, ApiError> {
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    let not_found = || ApiError::not_found(format!("no admin route {method} {path}"));
    let wrong_method = || {
        ApiError::new(
            405,
            "method_not_allowed",
            format!("{method} is not allowed on {path}"),
        )
    };
    let route = match segments[..] {
        ["system", "health"] => match method {
            "GET" => Route::Health,
            _ => return Err(wrong_method()),
        },
        ["users"] => match method {
            "GET" => Route::ListUsers,
            "POST" => Route::CreateUser,
            _ => return Err(wrong_method()),
        },
        ["users", "csv", "download"] => match method {
            "GET" => Route::Download,
            _ => return Err(wrong_method()),
        },
        ["users", "csv", "upload"] => match method {
            "POST" => Route::Upload,
            _ => return Err(wrong_method()),
        },
        ["users", "sync", "status"] => match method {
            "GET" => Route::SyncStatus,
            _ => return Err(wrong_method()),
        },
        ["users", id] => {
            let id = user_segment(id).ok_or_else(not_found)?;
            match method {
                "GET" => Route::GetUser(id),
                "PATCH" => Route::PatchUser(id),
                "DELETE" => Route::DeleteUser(id),
                _ => return Err(wrong_method()),
            }
        }
        ["users", id, action] => {
            let id = user_segment(id).ok_or_else(not_found)?;
            match (method, action) {
                ("PUT", "disable") => Route::Disable(id),
                ("PUT", "enable") => Route::Enable(id),
                ("POST", "password-reset") => Route::PasswordReset(id),
                ("POST", "sign-out") => Route::SignOut(id),
                ("GET", "usage") => Route::UserUsage(id),
                (_, "disable" | "enable" | "password-reset" | "sign-out" | "usage") => {
                    return Err(wrong_method())
                }
                _ => return Err(not_found()),
            }
        }
        ["apikeys"] => match method {
            "GET" => Route::ListKeys,
            "POST" => Route::IssueKey,
            _ => return Err(wrong_method()),
        },
        ["apikeys", id] => {
            let id = key_segment(id).ok_or_else(not_found)?;
            match method {
                "GET" => Route::GetKey(id),
                _ => return Err(wrong_method()),
            }
        }
        ["apikeys", id, action] => {
            let id = key_segment(id).ok_or_else(not_found)?;
            match (method, action) {
                ("POST", "revoke") => Route::RevokeKey(id),
                ("POST", "rotate") => Route::RotateKey(id),
                ("GET", "usage") => Route::KeyUsage(id),
                (_, "revoke" | "rotate" | "usage") => return Err(wrong_method()),
                _ => return Err(not_found()),
            }
        }
        ["departments"] => match method {
            "GET" => Route::ListDepartments,
            _ => return Err(wrong_method()),
        },
        ["departments", "summary"] => match method {
            "GET" => Route::DepartmentsSummary,
            _ => return Err(wrong_method()),
        },
        ["reports", "chargeback"] => match method {
            "GET" => Route::Chargeback,
            _ => return Err(wrong_method()),
        },
        ["departments", id] => {
            let id = department_segment(id).ok_or_else(not_found)?;
            match method {
                "GET" => Route::GetDepartment(id),
                "PUT" => Route::PutDepartment(id),
                _ => return Err(wrong_method()),
            }
        }
        ["departments", id, "usage"] => {
            let id = department_segment(id).ok_or_else(not_found)?;
            match method {
                "GET" => Route::DepartmentUsage(id),
                _ => return Err(wrong_method()),
            }
        }
        _ => return Err(not_found()),
    };
    Ok(route)
}

/// One change, for its audit event.
struct Change<'a> {
    action: &'static str,
    target: Option<&'a str>,
    changed: Vec<String>,
    source: Option<String>,
}

/// What one request is about, for its audit event.
struct Call<'a> {
    request_id: String,
    principal: &'a AuthContext,
    source_ip: Option<String>,
    user_agent: Option<String>,
}

impl AdminApi {
    pub fn new(
        config: AdminConfig,
        sdk: &aws_config::SdkConfig,
        audit: Arc<dyn AuditSink>,
    ) -> Result<Self, ConfigError> {
        let policy = Arc::new(gateway_shared::proxy::load_policy(
            config.policy_file.as_deref(),
        )?);
        Ok(AdminApi {
            directory: config.directory.directory(sdk),
            s3: aws_sdk_s3::Client::new(sdk),
            api_keys: ApiKeys::from_sdk(sdk, config.apikey_table.clone()),
            department_settings: gateway_shared::budgets::SettingsStore::from_sdk(
                sdk,
                config.department_table.clone(),
            ),
            usage: gateway_shared::budgets::UsageCounters::from_sdk(
                sdk,
                config.usage_table.clone(),
            ),
            usage_plans: config
                .usage_plans
                .clone()
                .map(|plans| UsagePlans::from_sdk(sdk, plans)),
            policy,
            audit,
            config,
        })
    }

    /// One request as Lambda (or the local stack) hands it over from API Gateway.
    pub async fn handle(&self, request: Request) -> Response<Body> {
        let request_id = request
            .lambda_context_ref()
            .map(|c| c.request_id.clone())
            .filter(|id| !id.is_empty())
            .or_else(|| request_context_id(&request))
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let answer = match self.answer(&request, &request_id).await {
            Ok(answer) => answer,
            Err(error) => Answer::json(error.status, error.body()),
        };
        let mut response = Response::builder()
            .status(answer.status)
            .header(http::header::CONTENT_TYPE, answer.content_type)
            .header("x-gateway-request-id", &request_id)
            .header(http::header::CACHE_CONTROL, "no-store");
        for (name, value) in &answer.headers {
            response = response.header(*name, value);
        }
        let body = if answer.body.is_empty() {
            Body::Empty
        } else {
            Body::Binary(answer.body)
        };
        response.body(body).unwrap_or_else(|_| {
            let mut fallback = Response::new(Body::Empty);
            *fallback.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
            fallback
        })
    }

    async fn answer(&self, request: &Request, request_id: &str) -> Result<Answer, ApiError> {
        let fields = authorizer_fields(request);
        let principal = AuthContext::from_fields(&fields)
            .ok_or_else(|| ApiError::new(401, "unauthorized", "Unauthorized"))?;
        let method = request.method().as_str();
        // The `{proxy+}` value is the path below the admin route whatever stage or base path the
        // client's URL had (the authorizer decided on the same request).
        let proxy = request
            .path_parameters_ref()
            .and_then(|p| p.first("proxy"))
            .unwrap_or_default()
            .to_string();
        let path = format!("/{proxy}");
        let path = path.as_str();
        let refused = if principal.auth_method == gateway_shared::apikeys::AUTH_METHOD {
            Some("an API key cannot call the admin API; sign in as an administrator".to_string())
        } else {
            match self.policy.decide_admin(
                method,
                path,
                principal.scopes.iter().map(String::as_str),
            ) {
                Decision::Deny { reason } => Some(reason),
                Decision::Allow { .. } => None,
            }
        };
        if let Some(reason) = refused {
            return Err(ApiError::new(
                403,
                "forbidden",
                format!("Forbidden: {reason}"),
            ));
        }
        let call = Call {
            request_id: request_id.to_string(),
            principal: &principal,
            source_ip: request.request_context_ref().and_then(|c| match c {
                lambda_http::request::RequestContext::ApiGatewayV1(c) => {
                    c.identity.source_ip.clone()
                }
                _ => None,
            }),
            user_agent: request
                .headers()
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        };
        let parameters = request.query_string_parameters();
        let query: std::collections::HashMap<String, String> = parameters
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        let query = |name: &str| query.get(name).cloned();
        let now = gateway_shared::audit::clock::now_millis();
        match route(method, path)? {
            Route::Health => self.health().await,
            Route::ListUsers => self.list(query).await,
            Route::CreateUser => self.create(&call, json_body(request)?, now).await,
            Route::GetUser(id) => Ok(Answer::json(
                200,
                users::user_json(&self.directory.user(id).await?),
            )),
            Route::PatchUser(id) => self.patch(&call, id, json_body(request)?, now).await,
            Route::DeleteUser(id) => {
                let result = self.directory.delete(id, now / 1000).await;
                self.audited(
                    &call,
                    "users.delete",
                    Some(id),
                    vec![],
                    result.map(|()| Answer::no_content()),
                )
            }
            Route::Disable(id) => self.set_enabled(&call, id, false, now).await,
            Route::Enable(id) => self.set_enabled(&call, id, true, now).await,
            Route::PasswordReset(id) => {
                let result = self.directory.reset_password(id, now / 1000).await;
                let result = self.then_user(id, result).await;
                self.audited(
                    &call,
                    "users.password-reset",
                    Some(id),
                    vec!["password".into()],
                    result,
                )
            }
            Route::SignOut(id) => {
                let result = self.directory.sign_out(id, now / 1000).await.map(|before| {
                    Answer::json(
                        200,
                        json!({
                            "user_id": id,
                            "revoked_before": gateway_shared::audit::clock::rfc3339_from_millis(before * 1000),
                        }),
                    )
                });
                self.audited(&call, "users.sign-out", Some(id), vec![], result)
            }
            Route::Download => files::download(self, query("encoding").as_deref()).await,
            Route::Upload => {
                let body = if request.body().is_empty() {
                    json!({})
                } else {
                    json_body(request)?
                };
                let (answer, key) = files::upload(self, body, now).await?;
                self.record(
                    &call,
                    Change {
                        action: "users.csv-upload",
                        target: None,
                        changed: Vec::new(),
                        source: Some(key),
                    },
                    201,
                    None,
                );
                Ok(answer)
            }
            Route::SyncStatus => files::sync_status(self, query("limit").as_deref()).await,
            Route::ListKeys => {
                if let Some(department) = query("department") {
                    self.department(&department).map_err(|_| {
                        ApiError::bad_request(format!("department {department} is not configured"))
                    })?;
                }
                let keys = self.api_keys.list().await?;
                let keys = apikeys::filter(
                    keys,
                    query("department").as_deref(),
                    query("status").as_deref(),
                    now / 1000,
                )?;
                let views: Vec<Value> = keys.iter().map(|k| apikeys::view(k, now / 1000)).collect();
                Ok(Answer::json(200, json!({ "api_keys": views })))
            }
            Route::GetKey(id) => Ok(Answer::json(
                200,
                apikeys::view(&self.api_keys.get(id).await?, now / 1000),
            )),
            Route::IssueKey => {
                let new =
                    apikeys::new_key(&json_body(request)?, &self.departments(), &self.policy)?;
                let result = self.issue_key(&call, &new, now).await;
                let (id, changed) = match &result {
                    Ok((record, _)) => (Some(record.id.clone()), key_fields()),
                    Err(_) => (None, Vec::new()),
                };
                self.audited(
                    &call,
                    "apikeys.issue",
                    id.as_deref(),
                    changed,
                    result.map(|(_, answer)| answer),
                )
            }
            Route::RevokeKey(id) => {
                let result = self
                    .api_keys
                    .revoke(
                        id,
                        &actor_name(call.principal),
                        &gateway_shared::audit::clock::rfc3339_from_millis(now),
                    )
                    .await
                    .map(|record| Answer::json(200, apikeys::view(&record, now / 1000)));
                self.audited(
                    &call,
                    "apikeys.revoke",
                    Some(id),
                    vec!["revoked_at".into()],
                    result,
                )
            }
            Route::RotateKey(id) => {
                let body = if request.body().is_empty() {
                    json!({})
                } else {
                    json_body(request)?
                };
                let grace = apikeys::grace_secs(&body)?;
                let result = self.rotate_key(&call, id, grace, now).await;
                self.audited(
                    &call,
                    "apikeys.rotate",
                    Some(id),
                    vec!["replaced_by".into(), "expires_at".into()],
                    result,
                )
            }
            Route::UserUsage(id) => {
                let user = self.directory.user(id).await?;
                let month = departments::month(query("month"), now)?;
                let sub = user
                    .sub
                    .clone()
                    .ok_or_else(|| ApiError::internal(format!("user {id} has no sub")))?;
                let settings = match &user.department {
                    Some(department) => self.department_settings.get(department).await?,
                    None => None,
                };
                let mut usage = departments::usage(
                    &self.usage,
                    "u",
                    &sub,
                    &month,
                    settings.as_ref().map(|s| &s.user_budget),
                )
                .await?;
                usage["user_id"] = json!(id);
                usage["department"] = json!(user.department);
                Ok(Answer::json(200, usage))
            }
            Route::KeyUsage(id) => {
                let key = self.api_keys.get(id).await?;
                let month = departments::month(query("month"), now)?;
                // A key is one user of its department: the department's per-user limits are its own.
                let settings = self.department_settings.get(&key.department).await?;
                let mut usage = departments::usage(
                    &self.usage,
                    "u",
                    &key.subject(),
                    &month,
                    settings.as_ref().map(|s| &s.user_budget),
                )
                .await?;
                usage["id"] = json!(key.id);
                usage["department"] = json!(key.department);
                usage["last_used_at"] = json!(key.last_used_at);
                Ok(Answer::json(200, usage))
            }
            Route::Chargeback => {
                files::chargeback(self, query("month"), query("format").as_deref()).await
            }
            Route::DepartmentsSummary => {
                let month = departments::month(query("month"), now)?;
                let stored = self.department_settings.list().await?;
                let mut rows = Vec::new();
                for department in self.departments() {
                    let budget = stored
                        .iter()
                        .find(|s| s.department == department)
                        .map(|s| s.budget);
                    let mut usage =
                        departments::usage(&self.usage, "d", &department, &month, budget.as_ref())
                            .await?;
                    usage["department"] = json!(department);
                    rows.push(usage);
                }
                Ok(Answer::json(
                    200,
                    json!({ "month": month, "departments": rows }),
                ))
            }
            Route::ListDepartments => {
                let stored = self.department_settings.list().await?;
                let views: Vec<Value> = self
                    .departments()
                    .iter()
                    .map(|d| {
                        let settings = stored.iter().find(|s| &s.department == d).cloned();
                        departments::view(d, settings, self.usage_plans.as_ref())
                    })
                    .collect();
                Ok(Answer::json(200, json!({ "departments": views })))
            }
            Route::GetDepartment(id) => {
                let id = self.department(id)?;
                Ok(Answer::json(
                    200,
                    departments::view(
                        id,
                        self.department_settings.get(id).await?,
                        self.usage_plans.as_ref(),
                    ),
                ))
            }
            Route::PutDepartment(id) => {
                let id = self.department(id)?;
                let update = departments::update(json_body(request)?)?;
                let plan = departments::plan_of(self.usage_plans.as_ref(), id, &update)?;
                let settings = update.into_settings(
                    id,
                    &actor_name(call.principal),
                    &gateway_shared::audit::clock::rfc3339_from_millis(now),
                );
                let result = match self.department_settings.put(&settings).await {
                    Err(error) => Err(ApiError::from(error)),
                    Ok(()) => departments::apply_plan(plan, settings.usage_plan)
                        .await
                        .map(|()| {
                            Answer::json(
                                200,
                                departments::view(id, Some(settings), self.usage_plans.as_ref()),
                            )
                        }),
                };
                self.audited(
                    &call,
                    "departments.update",
                    Some(id),
                    [
                        "budget",
                        "user_budget",
                        "alert_thresholds_percent",
                        "contacts",
                        "usage_plan",
                    ]
                    .map(String::from)
                    .to_vec(),
                    result,
                )
            }
            Route::DepartmentUsage(id) if query("from").is_some() || query("to").is_some() => {
                let id = self.department(id)?;
                let (Some(from), Some(to)) = (query("from"), query("to")) else {
                    return Err(ApiError::bad_request(
                        "from and to go together (YYYY-MM-DD)",
                    ));
                };
                Ok(Answer::json(
                    200,
                    departments::usage_range(self, id, &from, &to, query("group_by").as_deref())
                        .await?,
                ))
            }
            Route::DepartmentUsage(id) => {
                let id = self.department(id)?;
                let month = departments::month(query("month"), now)?;
                let settings = self.department_settings.get(id).await?;
                let mut usage = departments::usage(
                    &self.usage,
                    "d",
                    id,
                    &month,
                    settings.as_ref().map(|s| &s.budget),
                )
                .await?;
                usage["department"] = json!(id);
                Ok(Answer::json(200, usage))
            }
        }
    }

    /// The configured department ids.
    fn departments(&self) -> std::collections::BTreeSet<String> {
        self.config
            .directory
            .departments
            .values()
            .cloned()
            .collect()
    }

    /// A configured department, or 404.
    fn department<'a>(&self, id: &'a str) -> Result<&'a str, ApiError> {
        if self.departments().contains(id) {
            Ok(id)
        } else {
            Err(ApiError::not_found(format!(
                "department {id} is not configured"
            )))
        }
    }

    /// Stores a new key; answers its record and the 201 that shows the key once.
    async fn issue_key(
        &self,
        call: &Call<'_>,
        new: &apikeys::NewKey,
        now: u64,
    ) -> Result<(gateway_shared::apikeys::ApiKeyRecord, Answer), ApiError> {
        let (record, key) = apikeys::issue(new, &actor_name(call.principal), now, None)?;
        self.api_keys.create(&record).await?;
        let answer = Answer::json(201, apikeys::issued(&record, &key, now / 1000));
        Ok((record, answer))
    }

    /// A successor with the same name, department and scopes and a fresh lifetime; the old key keeps
    /// working for `grace` seconds (or until it expires, if sooner). The old key is marked replaced
    /// first (a conditional write: of concurrent rotations one wins, the others store nothing); if
    /// storing the successor then fails, the mark is undone, so the key can be rotated again.
    async fn rotate_key(
        &self,
        call: &Call<'_>,
        id: &str,
        grace: u64,
        now: u64,
    ) -> Result<Answer, ApiError> {
        let old = self.api_keys.get(id).await?;
        let now_secs = now / 1000;
        if old.status(now_secs) != gateway_shared::apikeys::Status::Active
            || old.replaced_by.is_some()
        {
            let state = if old.replaced_by.is_some() {
                "already rotated"
            } else {
                old.status(now_secs).as_str()
            };
            return Err(gateway_shared::apikeys::ApiKeyError::NotActive(id.into(), state).into());
        }
        let new = apikeys::NewKey {
            name: old.name.clone(),
            department: old.department.clone(),
            scopes: old.scopes.clone(),
            lifetime_days: apikeys::DEFAULT_LIFETIME_DAYS,
        };
        let (record, key) = apikeys::issue(&new, &actor_name(call.principal), now, Some(id))?;
        let until = old.expires_at.min(now_secs + grace);
        self.api_keys
            .replace(id, &record.id, until, now_secs)
            .await?;
        if let Err(error) = self.api_keys.create(&record).await {
            if let Err(undo) = self.api_keys.unreplace(id, old.expires_at).await {
                tracing::error!(error = %undo, key_id = %id, "a failed rotation could not be undone; the key stays marked replaced");
            }
            return Err(error.into());
        }
        let answer = Answer::json(201, apikeys::issued(&record, &key, now_secs));
        self.record(
            call,
            Change {
                action: "apikeys.issue",
                target: Some(&record.id),
                changed: key_fields(),
                source: Some(format!("rotation of {id}")),
            },
            201,
            None,
        );
        Ok(answer)
    }

    /// Records the change's audit event and turns a directory failure into its answer.
    /// The user as the change left them, or the change's failure.
    async fn then_user(
        &self,
        id: &str,
        change: Result<(), DirectoryError>,
    ) -> Result<Answer, DirectoryError> {
        change?;
        Ok(Answer::json(
            200,
            users::user_json(&self.directory.user(id).await?),
        ))
    }

    fn audited<E: Into<ApiError>>(
        &self,
        call: &Call<'_>,
        action: &'static str,
        target: Option<&str>,
        changed: Vec<String>,
        result: Result<Answer, E>,
    ) -> Result<Answer, ApiError> {
        let change = Change {
            action,
            target,
            changed,
            source: None,
        };
        match result {
            Ok(answer) => {
                self.record(call, change, answer.status, None);
                Ok(answer)
            }
            Err(error) => {
                let error: ApiError = error.into();
                self.record(call, change, error.status, Some(&error.message));
                Err(error)
            }
        }
    }

    fn record(&self, call: &Call<'_>, change: Change, status: u16, reason: Option<&str>) {
        let mut event = AuditEvent::admin(
            &call.request_id,
            AdminAction {
                actor: "admin-api".into(),
                action: change.action.into(),
                target: change.target.map(str::to_string),
                changed: change.changed,
                source: change.source,
            },
            status,
        );
        event.principal = Some(Principal::from(call.principal));
        event.credential_source = call.principal.credential_source.clone();
        event.source_ip = call.source_ip.clone();
        event.user_agent = call.user_agent.clone();
        event.reason = reason.map(str::to_string);
        self.audit.record(event);
    }

    async fn health(&self) -> Result<Answer, ApiError> {
        let (directory, revocations, api_keys) = tokio::join!(
            self.directory.check(),
            self.directory.revocations().check(),
            self.api_keys.check()
        );
        let verdict = |r: Result<(), String>| match r {
            Ok(()) => "ok".to_string(),
            Err(e) => {
                tracing::error!(error = %e, "health check failed");
                "unavailable".to_string()
            }
        };
        let directory = verdict(directory.map_err(|e| e.to_string()));
        let revocations = verdict(revocations.map_err(|e| e.to_string()));
        let api_keys = verdict(api_keys.map_err(|e| e.to_string()));
        let ok = directory == "ok" && revocations == "ok" && api_keys == "ok";
        Ok(Answer::json(
            if ok { 200 } else { 503 },
            json!({
                "status": if ok { "ok" } else { "degraded" },
                "checks": {"directory": directory, "revocations": revocations, "api_keys": api_keys},
                "time": gateway_shared::audit::clock::rfc3339_now(),
            }),
        ))
    }

    async fn list(&self, query: impl Fn(&str) -> Option<String>) -> Result<Answer, ApiError> {
        let limit = match query("limit") {
            None => 50,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=100).contains(n))
                .ok_or_else(|| {
                    ApiError::invalid(vec![(
                        "limit".into(),
                        "limit is a number from 1 to 100".into(),
                    )])
                })?,
        };
        let department = query("department");
        if let Some(d) = &department {
            if !self.config.directory.department_ids().contains(d.as_str()) {
                return Err(ApiError::invalid(vec![(
                    "department".into(),
                    format!("department {d:?} is not a configured department id"),
                )]));
            }
        }
        const STATUSES: [&str; 9] = [
            "UNCONFIRMED",
            "CONFIRMED",
            "FORCE_CHANGE_PASSWORD",
            "RESET_REQUIRED",
            "EMAIL_VERIFY_REQUIRED",
            "ARCHIVED",
            "COMPROMISED",
            "EXTERNAL_PROVIDER",
            "UNKNOWN",
        ];
        let status = query("status");
        if let Some(s) = &status {
            if !STATUSES.contains(&s.as_str()) {
                return Err(ApiError::invalid(vec![(
                    "status".into(),
                    format!("status is one of {}", STATUSES.join(", ")),
                )]));
            }
        }
        let enabled = match query("enabled").as_deref() {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(_) => {
                return Err(ApiError::invalid(vec![(
                    "enabled".into(),
                    "enabled is true or false".into(),
                )]))
            }
        };
        let name = query("name").map(|n| n.to_lowercase());
        let after = match query("cursor") {
            None => None,
            Some(cursor) => Some(decode_cursor(&cursor).ok_or_else(|| {
                ApiError::invalid(vec![(
                    "cursor".into(),
                    "cursor is not one this API gave".into(),
                )])
            })?),
        };
        let all = self
            .directory
            .users(self.config.directory.department_ids().into_iter())
            .await?;
        let mut matching = all
            .values()
            .filter(|u| {
                after
                    .as_deref()
                    .is_none_or(|after| u.username.as_str() > after)
            })
            .filter(|u| department.is_none() || u.department == department)
            .filter(|u| status.as_deref().is_none_or(|s| u.status() == s))
            .filter(|u| enabled.is_none_or(|e| u.enabled == e))
            .filter(|u| {
                name.as_deref().is_none_or(|needle| {
                    [
                        Some(&u.username),
                        u.attributes.get("name"),
                        u.attributes.get("custom:alias_id"),
                    ]
                    .into_iter()
                    .flatten()
                    .any(|text| text.to_lowercase().contains(needle))
                })
            });
        let page: Vec<Value> = matching
            .by_ref()
            .take(limit)
            .map(users::user_json)
            .collect();
        let next_cursor = match matching.next() {
            Some(_) => page
                .last()
                .and_then(|u| u["user_id"].as_str())
                .map(encode_cursor),
            None => None,
        };
        Ok(Answer::json(
            200,
            json!({"users": page, "next_cursor": next_cursor}),
        ))
    }

    async fn create(&self, call: &Call<'_>, body: Value, now: u64) -> Result<Answer, ApiError> {
        let new = NewUser::from_json(&body)?;
        let (record, department) = self.validate(&new.cells(), new.alias_id.as_deref())?;
        match self.directory.user(&record.user_id).await {
            Ok(_) => {
                return Err(ApiError::new(
                    409,
                    "conflict",
                    format!("user {} exists already", record.user_id),
                ))
            }
            Err(DirectoryError::NoSuchUser(_)) => {}
            Err(other) => return Err(other.into()),
        }
        let today = self.config.directory.today(now);
        let planned = plan::plan_row(&record, &department, None, today);
        let Planned::Create {
            mut attributes,
            enabled,
            ..
        } = planned.change
        else {
            return Err(ApiError::internal("a new user planned as a change"));
        };
        if let Some(alias) = &new.alias_id {
            attributes.insert("custom:alias_id".into(), alias.clone());
        }
        let changed: Vec<String> = attributes.keys().cloned().collect();
        let result = self
            .directory
            .create(
                &record.user_id,
                &attributes,
                &department,
                enabled,
                now / 1000,
            )
            .await;
        let result = match result {
            Ok(()) => {
                let user = self.directory.user(&record.user_id).await?;
                let mut answer = Answer::json(201, users::user_json(&user));
                answer
                    .headers
                    .push(("location", format!("/admin/users/{}", record.user_id)));
                Ok(answer)
            }
            Err(e) => Err(e),
        };
        self.audited(call, "users.create", Some(&record.user_id), changed, result)
    }

    async fn patch(
        &self,
        call: &Call<'_>,
        id: &str,
        body: Value,
        now: u64,
    ) -> Result<Answer, ApiError> {
        let patch = UserPatch::from_json(&body)?;
        if patch.is_empty() {
            return Err(ApiError::bad_request(
                "the patch changes nothing: name at least one field",
            ));
        }
        let user = self.directory.user(id).await?;
        let cells = patch.apply(users::current_cells(&user))?;
        let alias = match &patch.alias_id {
            Edit::Set(alias) => Some(alias.as_str()),
            _ => None,
        };
        let (record, department) = self.validate(&cells, alias)?;
        let today = self.config.directory.today(now);
        let before = user.planning();
        let mut planned = plan::plan_row(&record, &department, Some(&before), today);
        let email_changed =
            record.email != user.attributes.get("email").cloned().unwrap_or_default();
        let mut changed = Vec::new();
        if let Planned::Update {
            attributes,
            move_department,
            set_enabled,
        } = &mut planned.change
        {
            if email_changed {
                // A new address is unverified until its owner confirms it (EMAIL_VERIFY_REQUIRED).
                attributes.insert("email_verified".into(), "false".into());
            }
            changed = attributes.keys().cloned().collect();
            if move_department.is_some() {
                changed.push("department".into());
            }
            if set_enabled.is_some() {
                changed.push("enabled".into());
            }
        }
        let mut result = self.directory.apply(&planned, now / 1000).await;
        match &patch.alias_id {
            Edit::Keep => {}
            Edit::Set(alias) => {
                if result.is_ok() {
                    result = self
                        .directory
                        .update_attributes(
                            id,
                            &[("custom:alias_id".to_string(), alias.clone())].into(),
                        )
                        .await;
                }
                changed.push("custom:alias_id".into());
            }
            // Cognito refuses to delete an attribute the user does not have.
            Edit::Clear if !user.attributes.contains_key("custom:alias_id") => {}
            // Cognito refuses to delete an attribute the user does not have.
            Edit::Clear if !user.attributes.contains_key("custom:alias_id") => {}
            Edit::Clear => {
                if result.is_ok() {
                    result = self
                        .directory
                        .update_attributes(
                            id,
                            &[("custom:alias_id".to_string(), String::new())].into(),
                        )
                        .await;
                }
                changed.push("custom:alias_id".into());
            }
        }
        let result = self.then_user(id, result).await;
        self.audited(call, "users.update", Some(id), changed, result)
    }

    /// Disable and enable set the HR status too, so the daily date job keeps the administrator's
    /// decision instead of undoing it at midnight.
    async fn set_enabled(
        &self,
        call: &Call<'_>,
        id: &str,
        enabled: bool,
        now: u64,
    ) -> Result<Answer, ApiError> {
        let user = self.directory.user(id).await?;
        if enabled {
            if let Some((_, start, end)) = plan::lifecycle(&user.attributes) {
                let today = self.config.directory.today(now);
                let (would, why) = plan::enabled_on(
                    gateway_shared::provisioning::Status::Active,
                    start,
                    end,
                    today,
                );
                if !would {
                    return Err(ApiError::new(
                        409,
                        "conflict",
                        format!(
                            "user {id} cannot be enabled today ({why}); change the dates first"
                        ),
                    ));
                }
            }
        }
        let action = if enabled {
            "users.enable"
        } else {
            "users.disable"
        };
        let status = if enabled { "active" } else { "inactive" };
        let mut result = Ok(());
        if plan::lifecycle(&user.attributes).is_some() {
            result = self
                .directory
                .update_attributes(
                    id,
                    &[("custom:status".to_string(), status.to_string())].into(),
                )
                .await;
        }
        if result.is_ok() && user.enabled != enabled {
            result = self.directory.set_enabled(id, enabled, now / 1000).await;
        }
        let result = self.then_user(id, result).await;
        self.audited(
            call,
            action,
            Some(id),
            vec!["enabled".into(), "custom:status".into()],
            result,
        )
    }

    /// A user's cells by the file's rules, its department configured, its alias well formed: every
    /// failure named at once.
    fn validate(
        &self,
        cells: &[String; 9],
        alias: Option<&str>,
    ) -> Result<(gateway_shared::provisioning::UserRecord, String), ApiError> {
        let checked = users::check(cells);
        let mut details = match &checked {
            Ok(_) => Vec::new(),
            Err(error) => error.details.clone(),
        };
        let department = self
            .config
            .directory
            .department(&cells[3])
            .map(str::to_string);
        if department.is_none() && !details.iter().any(|(field, _)| field == "department") {
            details.push((
                "department".into(),
                format!("department {:?} is not configured", cells[3]),
            ));
        }
        if let Some(Err(error)) = alias.map(users::check_alias) {
            details.extend(error.details);
        }
        match (checked, department) {
            (Ok(record), Some(department)) if details.is_empty() => Ok((record, department)),
            _ => Err(ApiError::invalid(details)),
        }
    }
}

/// The attributes an issued key sets, for its audit event (never their values).
fn key_fields() -> Vec<String> {
    ["name", "department", "scopes", "expires_at"]
        .map(String::from)
        .to_vec()
}

/// Who did it, as a key's `created_by` and `revoked_by` name them: the user name, else the subject.
fn actor_name(principal: &AuthContext) -> String {
    principal
        .username
        .clone()
        .unwrap_or_else(|| principal.subject.clone())
}

fn json_body(request: &Request) -> Result<Value, ApiError> {
    let is_json = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        });
    if !is_json {
        return Err(ApiError::new(
            415,
            "unsupported_media_type",
            "the body must be application/json",
        ));
    }
    let body: &[u8] = request.body().as_ref();
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    Ok(value)
}

fn authorizer_fields(request: &Request) -> std::collections::HashMap<String, Value> {
    match request.request_context_ref() {
        Some(lambda_http::request::RequestContext::ApiGatewayV1(context)) => context
            .authorizer
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        _ => Default::default(),
    }
}

fn request_context_id(request: &Request) -> Option<String> {
    match request.request_context_ref() {
        Some(lambda_http::request::RequestContext::ApiGatewayV1(context)) => {
            context.request_id.clone()
        }
        _ => None,
    }
}

fn encode_cursor(user_id: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(user_id)
}

fn decode_cursor(cursor: &str) -> Option<String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    user_segment(&text).map(str::to_string)
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is the failure report"
    )]

    use super::*;

    #[test]
    fn routes_match_whole_segments_and_refuse_dot_and_foreign_ids() {
        assert!(matches!(
            route("GET", "/users/001"),
            Ok(Route::GetUser("001"))
        ));
        assert!(matches!(
            route("PUT", "/users/a.b/disable"),
            Ok(Route::Disable("a.b"))
        ));
        assert!(matches!(
            route("GET", "/users/csv/download"),
            Ok(Route::Download)
        ));
        for path in [
            "/users/..",
            "/users/./disable",
            "/users/a%2Fb",
            "/users//disable",
            "/users/001/disable/again",
            "/users/001/../002",
            "/system/health/",
            "/nothing",
        ] {
            let error = route("PUT", path).err().unwrap();
            assert_eq!(error.status, 404, "{path}");
        }
        assert_eq!(
            route("POST", "/users/001/disable").err().unwrap().status,
            405
        );
        assert_eq!(route("DELETE", "/users").err().unwrap().status, 405);
    }

    /// The path a route came from, rebuilt: equal to the request's path when the route names exactly
    /// the user (and action) the path does.
    fn path_of(route: &Route<'_>) -> String {
        match route {
            Route::Health => "/system/health".into(),
            Route::ListUsers | Route::CreateUser => "/users".into(),
            Route::Download => "/users/csv/download".into(),
            Route::Upload => "/users/csv/upload".into(),
            Route::SyncStatus => "/users/sync/status".into(),
            Route::GetUser(id) | Route::PatchUser(id) | Route::DeleteUser(id) => {
                format!("/users/{id}")
            }
            Route::Disable(id) => format!("/users/{id}/disable"),
            Route::Enable(id) => format!("/users/{id}/enable"),
            Route::PasswordReset(id) => format!("/users/{id}/password-reset"),
            Route::SignOut(id) => format!("/users/{id}/sign-out"),
            Route::UserUsage(id) => format!("/users/{id}/usage"),
            Route::ListKeys | Route::IssueKey => "/apikeys".into(),
            Route::GetKey(id) => format!("/apikeys/{id}"),
            Route::RevokeKey(id) => format!("/apikeys/{id}/revoke"),
            Route::RotateKey(id) => format!("/apikeys/{id}/rotate"),
            Route::KeyUsage(id) => format!("/apikeys/{id}/usage"),
            Route::ListDepartments => "/departments".into(),
            Route::DepartmentsSummary => "/departments/summary".into(),
            Route::Chargeback => "/reports/chargeback".into(),
            Route::GetDepartment(id) | Route::PutDepartment(id) => format!("/departments/{id}"),
            Route::DepartmentUsage(id) => format!("/departments/{id}/usage"),
        }
    }

    proptest::proptest! {
        /// Whatever the path, a route is either refused or names exactly what the path names: no
        /// encoding, dot segment, doubled slash or trailing junk reaches another user or action.
        #[test]
        fn a_route_names_exactly_what_its_path_names(
            method in proptest::sample::select(vec!["GET", "POST", "PUT", "PATCH", "DELETE"]),
            path in "(/(users|system|health|csv|upload|download|sync|status|disable|enable|sign-out|password-reset|apikeys|revoke|rotate|usage|departments|summary|reports|chargeback|sales|0123456789abcdef|\\.|\\.\\.|%2[fF]|%2e|[A-Za-z0-9._%-]{0,8})){0,4}/?",
        ) {
            if let Ok(route) = route(method, &path) {
                proptest::prop_assert_eq!(path_of(&route), path.clone());
                if let Route::GetUser(id) | Route::PatchUser(id) | Route::DeleteUser(id)
                    | Route::Disable(id) | Route::Enable(id) | Route::PasswordReset(id)
                    | Route::SignOut(id) | Route::UserUsage(id) = route
                {
                    proptest::prop_assert!(user_segment(id).is_some());
                    proptest::prop_assert!(!id.contains('%') && id != "." && id != "..");
                }
                if let Route::GetKey(id) | Route::RevokeKey(id) | Route::RotateKey(id) = route {
                    proptest::prop_assert!(gateway_shared::apikeys::valid_id(id));
                }
            }
        }
    }

    #[test]
    fn cursors_round_trip_and_refuse_forgeries() {
        assert_eq!(
            decode_cursor(&encode_cursor("00123")).as_deref(),
            Some("00123")
        );
        assert_eq!(decode_cursor(&encode_cursor("../x")), None);
        assert_eq!(decode_cursor("%%%"), None);
    }

    #[test]
    fn errors_have_the_admin_shape() {
        let body = ApiError::invalid(vec![("email".into(), "email is empty".into())]).body();
        assert_eq!(body["error"]["code"], "bad_request");
        assert_eq!(body["error"]["details"][0]["field"], "email");
        assert_eq!(
            gateway_error_body(403, "Forbidden")["error"]["code"],
            "forbidden"
        );
    }
}
