//! Each function's environment, built the way `cdk/lib/functions.ts` builds it for Lambda: the same
//! variables, with the configuration's values (`config/gateway.json`) and the local stack's resources.
//! The stack passes each handler its own map and records them all in the state file, where
//! `tests/test_deployment_parity.py` compares them with the synthesized template.

use std::collections::{BTreeMap, HashMap};

use gateway_local::deployment::Resolved;
use gateway_shared::providers::TransportKind;
use gateway_shared::Provider;

pub type Environment = HashMap<String, String>;

/// Tuning settings passed through from the local stack's own environment when set (the tests shorten
/// timeouts with them); in a deployment they keep their defaults or come from the configuration.
const PASSED_THROUGH: &[&str] = &[
    "GATEWAY_UPSTREAM_CONNECT_TIMEOUT_MS",
    "GATEWAY_UPSTREAM_RESPONSE_TIMEOUT_MS",
    "GATEWAY_MAX_REQUEST_BYTES",
    "GATEWAY_SCOPE_POLICY_FILE",
    "GATEWAY_BEDROCK_REGION",
    "GATEWAY_DISPATCH_FLUSH_MS",
    "GATEWAY_QUEUE_INLINE_MAX_BYTES",
    "GATEWAY_STREAM_CUT_MARGIN_MS",
    "GATEWAY_AUDIT_BODIES",
    "GATEWAY_AUDIT_BODY_MAX_BYTES",
];

/// The audit digest job's settings passed through when set.
const DIGEST_PASSED_THROUGH: &[&str] = &[
    "GATEWAY_AUDIT_DIGEST_GRACE_SECS",
    "GATEWAY_AUDIT_FUNCTION_TIMEOUT_SECS",
    "GATEWAY_AUDIT_DIGEST_MAX_HOURS",
];

pub const AUDIT_PREFIX: &str = "audit/";
pub const DIGEST_PREFIX: &str = "digests/";

/// Every function's environment, by function name (the `functions/` crate, as the CDK names them).
#[derive(Default)]
pub struct Environments(BTreeMap<String, Environment>);

impl Environments {
    /// Records `env` as `function`'s and hands it back for the handler's `from_settings`.
    pub fn record(&mut self, function: &str, env: Environment) -> &Environment {
        self.0.insert(function.to_string(), env);
        &self.0[function]
    }

    pub fn into_state(self) -> BTreeMap<String, BTreeMap<String, String>> {
        self.0
            .into_iter()
            .map(|(name, env)| (name, env.into_iter().collect()))
            .collect()
    }
}

/// What every function gets: Lambda sets `AWS_REGION` itself, and the configured log level (recorded
/// as a deployment would set it; the one process hosting every handler logs as its own `RUST_LOG` says).
pub fn base(region: &str, deployment: &Resolved) -> Environment {
    HashMap::from([
        ("AWS_REGION".to_string(), region.to_string()),
        (
            "RUST_LOG".to_string(),
            deployment.environment.log_level.clone(),
        ),
    ])
}

fn pass_through(env: &mut Environment, names: &[&str]) {
    for name in names {
        if let Ok(value) = std::env::var(name) {
            env.insert(name.to_string(), value);
        }
    }
}

/// The audit queue every function sends its events to.
pub fn with_audit_queue(mut env: Environment, audit_queue_url: &str) -> Environment {
    env.insert("GATEWAY_AUDIT_QUEUE_URL".into(), audit_queue_url.into());
    env
}

/// A provider's upstream: where it is and its key's secret.
pub fn insert_upstream(
    env: &mut Environment,
    provider: Provider,
    url: &str,
    secret_id: Option<&str>,
) {
    for (name, value) in provider.upstream().settings_for(Some(url), secret_id) {
        env.insert(name.into(), value);
    }
}

/// The configured upstream timeouts: a direct route's and the dispatcher's calls, and how long a
/// queue route waits for its reply.
pub fn insert_timeouts(env: &mut Environment, deployment: &Resolved) {
    let functions = &deployment.config.functions;
    env.insert(
        "GATEWAY_UPSTREAM_CONNECT_TIMEOUT_MS".into(),
        functions.upstream_connect_timeout_ms.to_string(),
    );
    env.insert(
        "GATEWAY_UPSTREAM_RESPONSE_TIMEOUT_MS".into(),
        functions.upstream_response_timeout_ms.to_string(),
    );
}

/// How a route records bodies: the configured switch and bound, the audit bucket and the bodies key.
pub fn insert_audit_bodies(
    env: &mut Environment,
    deployment: &Resolved,
    audit_bucket: &str,
    bodies_key: &str,
) {
    let functions = &deployment.config.functions;
    if functions.audit_bodies {
        env.insert("GATEWAY_AUDIT_BODIES".into(), "on".into());
        env.insert(
            "GATEWAY_AUDIT_BODY_MAX_BYTES".into(),
            functions.audit_body_max_bytes.to_string(),
        );
        env.insert("GATEWAY_AUDIT_BUCKET".into(), audit_bucket.into());
        env.insert("GATEWAY_AUDIT_BODY_KEY_ID".into(), bodies_key.into());
    } else {
        env.insert("GATEWAY_AUDIT_BODIES".into(), "off".into());
    }
}

/// The queue transport's side of a route: its request queue, the reply queues' prefix, the payloads.
pub struct QueueRoute<'a> {
    pub request_queue_url: &'a str,
    pub reply_prefix: &'a str,
    pub payload_bucket: &'a str,
}

/// A route function: its transport, the audit trail, then either its upstream (direct) or its queue.
pub struct RouteInputs<'a> {
    pub transport: TransportKind,
    pub upstream_url: &'a str,
    pub secret_id: Option<&'a str>,
    pub audit_queue_url: &'a str,
    pub audit_bucket: &'a str,
    pub bodies_key: &'a str,
    pub queue: Option<QueueRoute<'a>>,
}

pub fn route(
    region: &str,
    deployment: &Resolved,
    provider: Provider,
    inputs: RouteInputs<'_>,
) -> Environment {
    let mut env = with_budget_tables(
        with_audit_queue(base(region, deployment), inputs.audit_queue_url),
        deployment,
    );
    // A changed budget applies within the same bound as a revocation.
    if let Some(secs) = deployment.environment.identity.revocation_cache_seconds {
        env.insert("GATEWAY_SETTINGS_CACHE_SECS".into(), secs.to_string());
    }
    env.insert(
        TransportKind::SETTING.into(),
        inputs.transport.as_str().into(),
    );
    insert_audit_bodies(&mut env, deployment, inputs.audit_bucket, inputs.bodies_key);
    insert_timeouts(&mut env, deployment);
    // The provider's region, where configured: the route records it and prices by it.
    if let (Some(region), Some(setting)) = (
        deployment.regions.get(&provider),
        provider.upstream().region_settings.first(),
    ) {
        env.insert((*setting).into(), region.clone());
    }
    match inputs.queue {
        Some(queue) => {
            env.insert(
                "GATEWAY_REQUEST_QUEUE_URL".into(),
                queue.request_queue_url.into(),
            );
            env.insert(
                "GATEWAY_REPLY_QUEUE_PREFIX".into(),
                queue.reply_prefix.into(),
            );
            env.insert("GATEWAY_PAYLOAD_BUCKET".into(), queue.payload_bucket.into());
        }
        None => insert_upstream(&mut env, provider, inputs.upstream_url, inputs.secret_id),
    }
    pass_through(&mut env, PASSED_THROUGH);
    env
}

/// The dispatcher: the request queues it trusts, the payloads, the replies, and every queued
/// provider's upstream.
pub struct DispatcherInputs<'a> {
    pub queue_urls: &'a [(Provider, String)],
    pub upstreams: &'a [(Provider, String, Option<String>)],
    pub reply_prefix: &'a str,
    pub payload_bucket: &'a str,
    pub visibility_secs: u32,
    pub max_receives: u32,
    pub audit_queue_url: &'a str,
}

pub fn dispatcher(
    region: &str,
    deployment: &Resolved,
    inputs: DispatcherInputs<'_>,
) -> Environment {
    let mut env = with_audit_queue(base(region, deployment), inputs.audit_queue_url);
    env.insert(
        "GATEWAY_DISPATCH_QUEUE_URLS".into(),
        inputs
            .queue_urls
            .iter()
            .map(|(provider, url)| format!("{}={url}", provider.route_prefix()))
            .collect::<Vec<_>>()
            .join(","),
    );
    env.insert(
        "GATEWAY_REPLY_QUEUE_PREFIX".into(),
        inputs.reply_prefix.into(),
    );
    env.insert(
        "GATEWAY_PAYLOAD_BUCKET".into(),
        inputs.payload_bucket.into(),
    );
    env.insert(
        "GATEWAY_DISPATCH_VISIBILITY_SECS".into(),
        inputs.visibility_secs.to_string(),
    );
    env.insert(
        "GATEWAY_DISPATCH_MAX_RECEIVES".into(),
        inputs.max_receives.to_string(),
    );
    insert_timeouts(&mut env, deployment);
    for (provider, url, secret_id) in inputs.upstreams {
        insert_upstream(&mut env, *provider, url, secret_id.as_deref());
    }
    pass_through(&mut env, PASSED_THROUGH);
    env
}

/// The authorizer: the user pool, the departments' usage-plan keys, the audit queue. `COGNITO_JWKS_URL`
/// is local only: Lambda reads the pool's public JWKS, the local stack moto's.
pub struct AuthorizerInputs<'a> {
    pub user_pool_id: &'a str,
    pub app_client_id: &'a str,
    pub jwks_url: &'a str,
    pub usage_keys_secret_id: &'a str,
    pub audit_queue_url: &'a str,
    pub revocation_table: &'a str,
}

/// The budget tables: the routes reserve (and read settings), the admin API reads and writes.
fn with_budget_tables(mut env: Environment, deployment: &Resolved) -> Environment {
    env.insert("GATEWAY_USAGE_TABLE".into(), deployment.usage_table_name());
    env.insert(
        "GATEWAY_DEPARTMENT_TABLE".into(),
        deployment.department_table_name(),
    );
    env
}

/// Every function that reads or writes API keys names the one table.
fn with_apikey_table(mut env: Environment, deployment: &Resolved) -> Environment {
    env.insert(
        "GATEWAY_APIKEY_TABLE".into(),
        deployment.apikey_table_name(),
    );
    env
}

pub fn authorizer(
    region: &str,
    deployment: &Resolved,
    inputs: AuthorizerInputs<'_>,
) -> Environment {
    let mut env = with_apikey_table(
        with_audit_queue(base(region, deployment), inputs.audit_queue_url),
        deployment,
    );
    env.insert("COGNITO_USER_POOL_ID".into(), inputs.user_pool_id.into());
    env.insert("COGNITO_APP_CLIENT_IDS".into(), inputs.app_client_id.into());
    env.insert("COGNITO_JWKS_URL".into(), inputs.jwks_url.into());
    env.insert(
        "GATEWAY_USAGE_KEYS_SECRET_ID".into(),
        inputs.usage_keys_secret_id.into(),
    );
    env.insert(
        "GATEWAY_REVOCATION_TABLE".into(),
        inputs.revocation_table.into(),
    );
    if let Some(secs) = deployment.environment.identity.revocation_cache_seconds {
        env.insert("GATEWAY_REVOCATION_CACHE_SECS".into(), secs.to_string());
    }
    pass_through(
        &mut env,
        &["GATEWAY_SCOPE_POLICY_FILE", "GATEWAY_REVOCATION_CACHE_SECS"],
    );
    env
}

pub fn audit_writer(region: &str, deployment: &Resolved, audit_bucket: &str) -> Environment {
    let mut env = with_apikey_table(base(region, deployment), deployment);
    env.insert("GATEWAY_USAGE_TABLE".into(), deployment.usage_table_name());
    env.insert("GATEWAY_AUDIT_BUCKET".into(), audit_bucket.into());
    env.insert("GATEWAY_AUDIT_PREFIX".into(), AUDIT_PREFIX.into());
    env
}

/// The digest job: the trail, its signing key, the configured grace and run length, and the routes'
/// timeout (how late a final may come).
pub fn audit_digest(
    region: &str,
    deployment: &Resolved,
    audit_bucket: &str,
    digest_key: &str,
    route_timeout_secs: u64,
) -> Environment {
    let functions = &deployment.config.functions;
    let mut env = base(region, deployment);
    env.insert("GATEWAY_AUDIT_BUCKET".into(), audit_bucket.into());
    env.insert("GATEWAY_AUDIT_DIGEST_KEY_ID".into(), digest_key.into());
    env.insert("GATEWAY_AUDIT_PREFIX".into(), AUDIT_PREFIX.into());
    env.insert("GATEWAY_AUDIT_DIGEST_PREFIX".into(), DIGEST_PREFIX.into());
    env.insert(
        "GATEWAY_AUDIT_DIGEST_GRACE_SECS".into(),
        functions.audit_digest_grace_secs.to_string(),
    );
    env.insert(
        "GATEWAY_AUDIT_FUNCTION_TIMEOUT_SECS".into(),
        route_timeout_secs.to_string(),
    );
    env.insert(
        "GATEWAY_AUDIT_DIGEST_MAX_HOURS".into(),
        functions.audit_digest_max_hours.to_string(),
    );
    pass_through(&mut env, DIGEST_PASSED_THROUGH);
    env
}

/// What every function that manages users gets: the pool, the departments with the names files may
/// use for them, the revocation table, the invitations' sender, the audit queue.
pub struct DirectoryInputs<'a> {
    pub user_pool_id: &'a str,
    pub department_group_prefix: &'a str,
    pub revocation_table: &'a str,
    /// The SES identity invitations come from (the local stack always has one, so tests read them).
    pub mail_from: Option<&'a str>,
    pub audit_queue_url: &'a str,
}

fn with_directory(
    mut env: Environment,
    deployment: &Resolved,
    inputs: &DirectoryInputs<'_>,
) -> Environment {
    env = with_audit_queue(env, inputs.audit_queue_url);
    env.insert("COGNITO_USER_POOL_ID".into(), inputs.user_pool_id.into());
    env.insert(
        "GATEWAY_DEPARTMENT_GROUP_PREFIX".into(),
        inputs.department_group_prefix.into(),
    );
    env.insert(
        "GATEWAY_REVOCATION_TABLE".into(),
        inputs.revocation_table.into(),
    );
    if let Some(from) = inputs.mail_from {
        env.insert("GATEWAY_MAIL_FROM".into(), from.into());
    }
    if let Some(offset) = deployment
        .environment
        .identity
        .provisioning_utc_offset_minutes
    {
        env.insert(
            "GATEWAY_PROVISIONING_UTC_OFFSET_MINUTES".into(),
            offset.to_string(),
        );
    }
    let departments: serde_json::Map<String, serde_json::Value> = deployment
        .config
        .departments
        .iter()
        .map(|(id, d)| (id.clone(), serde_json::json!(d.names)))
        .collect();
    env.insert(
        "GATEWAY_DEPARTMENTS".into(),
        serde_json::Value::Object(departments).to_string(),
    );
    env
}

/// The scheduler: the reply queues it sweeps, the directory its date job keeps in step, the budget
/// tables its alerts read, and the (audit, reports) buckets of its rollups.
pub fn scheduler(
    region: &str,
    deployment: &Resolved,
    reply_prefix: &str,
    directory: &DirectoryInputs<'_>,
    (audit_bucket, reports_bucket): (&str, &str),
    usage_plans: &str,
) -> Environment {
    let mut env = with_budget_tables(
        with_directory(base(region, deployment), deployment, directory),
        deployment,
    );
    env.insert("GATEWAY_USAGE_PLANS".into(), usage_plans.into());
    env.insert("GATEWAY_REPLY_QUEUE_PREFIX".into(), reply_prefix.into());
    env.insert("GATEWAY_AUDIT_BUCKET".into(), audit_bucket.into());
    env.insert("GATEWAY_AUDIT_PREFIX".into(), AUDIT_PREFIX.into());
    env.insert("GATEWAY_REPORTS_BUCKET".into(), reports_bucket.into());
    env
}

/// Where HR files arrive and reports go.
pub struct ProvisioningInputs<'a> {
    pub bucket: &'a str,
    pub reports_bucket: &'a str,
}

fn with_provisioning(mut env: Environment, inputs: &ProvisioningInputs<'_>) -> Environment {
    env.insert("GATEWAY_PROVISIONING_BUCKET".into(), inputs.bucket.into());
    env.insert(
        "GATEWAY_REPORTS_BUCKET".into(),
        inputs.reports_bucket.into(),
    );
    env
}

/// The provisioner: the directory, the buckets, the age identity's secret.
pub fn provisioner(
    region: &str,
    deployment: &Resolved,
    directory: &DirectoryInputs<'_>,
    provisioning: &ProvisioningInputs<'_>,
    identity_secret_id: &str,
) -> Environment {
    let mut env = with_provisioning(
        with_directory(base(region, deployment), deployment, directory),
        provisioning,
    );
    env.insert(
        "GATEWAY_PROVISIONING_IDENTITY_SECRET_ID".into(),
        identity_secret_id.into(),
    );
    env
}

/// The admin API: the directory and the buckets (upload tickets, downloads, job reports).
pub fn admin_api(
    region: &str,
    deployment: &Resolved,
    directory: &DirectoryInputs<'_>,
    provisioning: &ProvisioningInputs<'_>,
    usage_plans: &str,
) -> Environment {
    let mut env = with_budget_tables(
        with_apikey_table(
            with_provisioning(
                with_directory(base(region, deployment), deployment, directory),
                provisioning,
            ),
            deployment,
        ),
        deployment,
    );
    env.insert("GATEWAY_UPLOAD_URL_TTL_SECS".into(), "300".into());
    // The departments' usage plans (ids and configured limits), which department settings may change.
    env.insert("GATEWAY_USAGE_PLANS".into(), usage_plans.into());
    env
}
