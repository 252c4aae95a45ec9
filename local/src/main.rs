//! The local stack: every Lambda handler in one process behind an API Gateway REST emulation, AWS
//! services through the real AWS SDK against moto, and bundled mock providers, with no AWS account and
//! no Docker. Run it with `./local/run.sh`; settings are environment variables (see README).
//!
//! A start runs in phases, each a function below: take every port, start AWS (moto), provision
//! identity and secrets, start the audit trail, the upstreams, the queue transport, then the routes and
//! the authorizer, serve, sign the demo user in, and publish the state file that says the stack is up.

mod apigw;
mod control;
mod event_sources;
mod faults;
mod mock;
mod moto;
mod ports;
mod resources;
mod schedule;
mod settings;
mod tls;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use aws_credential_types::Credentials;
use axum::serve::ListenerExt;
use gateway_local::state::{
    AuditBodies, Buckets, DemoUser, Keys, Queues, RequestQueue, StackState,
};
use gateway_shared::audit::lifecycle::Invocations;
use gateway_shared::audit::{AuditBuffer, BodiesConfig, SqsDelivery};
use gateway_shared::providers::upstream::CredentialSpec;
use gateway_shared::providers::TransportKind;
use gateway_shared::proxy::{Route, RouteConfig};
use gateway_shared::scopes::Policy;
use gateway_shared::Provider;
use tokio::net::TcpListener;

use crate::resources::{BoxError, UserPool};
use crate::settings::{local_provider, LocalSettings};

const AUDIT_BUCKET: &str = "llm-gateway-local-audit";
const PAYLOAD_BUCKET: &str = "llm-gateway-local-payloads";
const REPLY_QUEUE_PREFIX: &str = "llm-gateway-reply-";
const DEFAULT_RESPONSE_TIMEOUT_MS: u64 = 120_000;

/// The route settings the local stack passes through from its own environment when set.
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

/// The audit digest job's settings the local stack passes through when set.
const DIGEST_PASSED_THROUGH: &[&str] = &[
    "GATEWAY_AUDIT_DIGEST_GRACE_SECS",
    "GATEWAY_AUDIT_FUNCTION_TIMEOUT_SECS",
    "GATEWAY_AUDIT_DIGEST_MAX_HOURS",
];

#[tokio::main]
async fn main() {
    gateway_shared::telemetry::init();
    if let Err(error) = run().await {
        eprintln!("local stack failed: {error}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), BoxError> {
    let local = LocalSettings::from_env()?;
    std::fs::create_dir_all(&local.dir)?;
    let state_file = local.state_file();
    let _ = std::fs::remove_file(&state_file);

    let mut listeners = Listeners::bind(&local).await?;
    let mut aws = Aws::start(&local).await?;
    let policy = gateway_shared::proxy::load_policy(local.policy_file.as_deref())?;
    let pool = resources::create_user_pool(&aws.cognito(), &policy).await?;
    let secrets = Secrets::provision(&local, &aws.sdk).await?;
    let audit = start_audit_trail(&local, &aws).await?;
    let upstreams = start_upstreams(std::mem::take(&mut listeners.mocks), &local, &secrets)?;
    let mut settings = route_settings(&local, &aws, &pool, &secrets, &upstreams);
    audit.insert_route_settings(&mut settings);
    let audit_bodies = BodiesConfig::from_settings(&settings)?;
    let request_queues = start_queue_transport(&local, &aws, &audit, &mut settings).await?;
    let routes = build_routes(&local, &aws, &audit, &settings, &request_queues).await?;
    let authorizer_invocations = audit.function();
    let authorizer = apigw::Function {
        handler: authorizer::State::from_config(
            authorizer::AuthorizerConfig::from_settings(&settings)?,
            &aws.sdk,
            Arc::new(authorizer_invocations.buffer().clone()),
        )
        .await?,
        invocations: authorizer_invocations,
    };
    let served = serve(
        listeners,
        &local,
        control::Control {
            sqs: aws.sqs(),
            audit_digest: audit.digest_job.clone(),
        },
        apigw::Gateway {
            region: local.region.clone(),
            function_timeout: local.function_timeout,
            authorizer,
            routes,
        },
    )?;
    let (demo_user, token) = sign_in_demo_user(&aws, &pool, &policy).await?;

    let state = StackState {
        base_url: served.base_url,
        https_base_url: served.https_base_url,
        control_url: served.control_url,
        ca_bundle: served.ca_bundle,
        aws_endpoint_url: aws.endpoint.clone(),
        region: local.region.clone(),
        issuer: format!(
            "https://cognito-idp.{}.amazonaws.com/{}",
            local.region, pool.user_pool_id
        ),
        jwks_url: jwks_url(&aws, &pool),
        user_pool_id: pool.user_pool_id,
        app_client_id: pool.app_client_id,
        demo_user,
        groups: pool.groups,
        secrets: secrets.secret_ids(),
        upstreams: upstreams.urls,
        mocks: upstreams.mocks,
        upstream_response_timeout_ms: settings
            .get("GATEWAY_UPSTREAM_RESPONSE_TIMEOUT_MS")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(DEFAULT_RESPONSE_TIMEOUT_MS),
        buckets: Buckets {
            audit: AUDIT_BUCKET.into(),
            payloads: PAYLOAD_BUCKET.into(),
        },
        audit_bodies: AuditBodies {
            enabled: audit_bodies.capture_limit().is_some(),
            max_bytes: audit_bodies
                .capture_limit()
                .unwrap_or(gateway_shared::audit::bodies::DEFAULT_MAX_BYTES),
        },
        queues: Queues {
            audit: audit.queue_url,
            audit_dlq: audit.dlq_url,
            requests: request_queues
                .into_iter()
                .map(|(provider, queues)| (provider, queues.state))
                .collect(),
            reply_prefix: REPLY_QUEUE_PREFIX.into(),
        },
        keys: Keys {
            audit_digest: audit.digest_key,
            audit_bodies: audit.bodies_key.clone(),
        },
    };
    // Written last: its presence means the stack is ready.
    state.write_atomically(&state_file)?;
    print_banner(&state, &token, &state_file.display().to_string());

    shutdown_signal().await;
    aws.stop().await;
    let _ = std::fs::remove_file(&state_file);
    Ok(())
}

/// Every port the stack serves on, taken before anything starts, so that a start with a taken port
/// fails at once and names the port and the setting that moves it. (moto's is checked when it starts.)
struct Listeners {
    http: TcpListener,
    https: TcpListener,
    control: TcpListener,
    /// The bundled mocks' ports, for providers without a configured endpoint.
    mocks: BTreeMap<Provider, TcpListener>,
}

impl Listeners {
    async fn bind(local: &LocalSettings) -> Result<Self, BoxError> {
        let http = ports::bind(&local.host, local.http_port, "GATEWAY_LOCAL_HTTP_PORT").await?;
        let https = ports::bind(&local.host, local.https_port, "GATEWAY_LOCAL_HTTPS_PORT").await?;
        let control = ports::bind(
            control::HOST,
            local.control_port,
            "GATEWAY_LOCAL_CONTROL_PORT",
        )
        .await?;
        let mut mocks = BTreeMap::new();
        for provider in Provider::ALL {
            if local.endpoints.contains_key(&provider) {
                continue;
            }
            let listener = ports::bind(
                &local.host,
                local.mock_ports[&provider],
                local_provider(provider).mock_port_setting,
            )
            .await?;
            mocks.insert(provider, listener);
        }
        Ok(Listeners {
            http,
            https,
            control,
            mocks,
        })
    }
}

/// AWS as the functions see it: moto (unless `AWS_ENDPOINT_URL` names another endpoint) and one SDK
/// configuration for every client.
struct Aws {
    sdk: aws_config::SdkConfig,
    endpoint: String,
    moto: Option<tokio::process::Child>,
}

impl Aws {
    async fn start(local: &LocalSettings) -> Result<Self, BoxError> {
        let moto = match &local.aws_endpoint_url {
            Some(_) => None,
            None => Some(moto::start(local).await?),
        };
        let endpoint = local.aws_endpoint();
        let credentials = match (
            std::env::var("AWS_ACCESS_KEY_ID"),
            std::env::var("AWS_SECRET_ACCESS_KEY"),
        ) {
            (Ok(id), Ok(secret)) => Credentials::new(
                id,
                secret,
                std::env::var("AWS_SESSION_TOKEN").ok(),
                None,
                "environment",
            ),
            _ => Credentials::new("test", "test", None, None, "local-stack"),
        };
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(local.region.clone()))
            .endpoint_url(&endpoint)
            .credentials_provider(credentials)
            .load()
            .await;
        Ok(Aws {
            sdk,
            endpoint,
            moto,
        })
    }

    fn cognito(&self) -> aws_sdk_cognitoidentityprovider::Client {
        aws_sdk_cognitoidentityprovider::Client::new(&self.sdk)
    }

    fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.sdk)
    }

    fn s3(&self) -> aws_sdk_s3::Client {
        aws_sdk_s3::Client::new(&self.sdk)
    }

    fn kms(&self) -> aws_sdk_kms::Client {
        aws_sdk_kms::Client::new(&self.sdk)
    }

    async fn stop(&mut self) {
        if let Some(child) = self.moto.as_mut() {
            let _ = child.kill().await;
        }
    }
}

/// The upstream keys (given, or random for the mocks) stored in Secrets Manager, and the departments'
/// usage-plan keys.
struct Secrets {
    /// Per key-taking provider: the secret's id and the key the mock expects.
    upstream_keys: BTreeMap<Provider, (String, String)>,
    usage_keys_secret: String,
}

impl Secrets {
    async fn provision(
        local: &LocalSettings,
        sdk: &aws_config::SdkConfig,
    ) -> Result<Self, BoxError> {
        let client = aws_sdk_secretsmanager::Client::new(sdk);
        let mut upstream_keys = BTreeMap::new();
        for provider in Provider::ALL {
            let CredentialSpec::ApiKey { .. } = provider.upstream().credential else {
                continue;
            };
            let name = provider.route_prefix();
            let key = local
                .keys
                .get(&provider)
                .cloned()
                .unwrap_or_else(|| format!("local-{name}-{}", uuid::Uuid::new_v4().simple()));
            let secret_id =
                resources::put_secret(&client, &format!("llm-gateway/local/{name}-api-key"), &key)
                    .await?;
            upstream_keys.insert(provider, (secret_id, key));
        }
        let usage_keys: serde_json::Map<String, serde_json::Value> = resources::DEPARTMENTS
            .iter()
            .map(|d| {
                (
                    d.to_string(),
                    format!("usage-key-{d}-{}", uuid::Uuid::new_v4().simple()).into(),
                )
            })
            .collect();
        let usage_keys_secret = resources::put_secret(
            &client,
            "llm-gateway/local/department-usage-keys",
            &serde_json::Value::Object(usage_keys).to_string(),
        )
        .await?;
        Ok(Secrets {
            upstream_keys,
            usage_keys_secret,
        })
    }

    fn secret_ids(&self) -> BTreeMap<Provider, String> {
        self.upstream_keys
            .iter()
            .map(|(provider, (secret_id, _))| (*provider, secret_id.clone()))
            .collect()
    }
}

/// The audit trail: queue (+ DLQ) -> audit writer (SQS event source) -> S3; the routes' bodies,
/// sealed under the bodies key, beside the events; and the hourly digest job (its schedule, and the
/// control endpoint that runs it now).
struct AuditTrail {
    sdk: aws_config::SdkConfig,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    dlq_url: String,
    digest_job: Arc<audit_digest::Job>,
    /// ARN of the digest signing key.
    digest_key: String,
    /// ARN of the key the routes seal bodies under.
    bodies_key: String,
}

impl AuditTrail {
    /// A function's execution environment as far as auditing goes: its own buffer, delivered to the
    /// audit queue after each of its invocations ends, as the Lambda extension does.
    fn function(&self) -> Arc<Invocations> {
        let invocations = Invocations::new(AuditBuffer::new(SqsDelivery::new(
            self.sqs.clone(),
            self.queue_url.clone(),
        )));
        invocations.flush_after_each();
        invocations
    }

    /// A route's execution environment: as [`Self::function`], with the route's bodies sealed and
    /// stored at each flush before its events leave (as `run_from_env` builds it in Lambda).
    fn route_function(&self, bodies: &BodiesConfig) -> Arc<Invocations> {
        let delivery = bodies.delivery(
            Box::new(SqsDelivery::new(self.sqs.clone(), self.queue_url.clone())),
            &self.sdk,
        );
        let invocations = Invocations::new(AuditBuffer::new(delivery));
        invocations.flush_after_each();
        invocations
    }

    /// What the routes need to record bodies (the switch and the bound pass through from the stack's
    /// environment, see `PASSED_THROUGH`).
    fn insert_route_settings(&self, settings: &mut HashMap<String, String>) {
        settings.insert("GATEWAY_AUDIT_BUCKET".into(), AUDIT_BUCKET.into());
        settings.insert("GATEWAY_AUDIT_BODY_KEY_ID".into(), self.bodies_key.clone());
    }
}

async fn start_audit_trail(local: &LocalSettings, aws: &Aws) -> Result<AuditTrail, BoxError> {
    let sqs = aws.sqs();
    resources::create_audit_bucket(
        &aws.s3(),
        AUDIT_BUCKET,
        i32::from(local.audit_retention_days),
    )
    .await?;
    let digest_key = resources::create_digest_key(&aws_sdk_kms::Client::new(&aws.sdk)).await?;
    let mut digest_settings: HashMap<String, String> = HashMap::from([
        ("GATEWAY_AUDIT_BUCKET".to_string(), AUDIT_BUCKET.to_string()),
        (
            "GATEWAY_AUDIT_DIGEST_KEY_ID".to_string(),
            digest_key.clone(),
        ),
    ]);
    for name in DIGEST_PASSED_THROUGH {
        if let Ok(value) = std::env::var(name) {
            digest_settings.insert(name.to_string(), value);
        }
    }
    let digest_job = Arc::new(audit_digest::Job::from_config(
        audit_digest::DigestConfig::from_settings(&digest_settings)?,
        &aws.sdk,
    ));
    tokio::spawn(schedule::hourly_audit_digest(digest_job.clone()));
    let bodies_key = resources::create_audit_bodies_key(&aws.kms()).await?;
    let (queue, dlq) = resources::create_queue_with_dlq(&sqs, "llm-gateway-audit", 30, 5).await?;
    let writer = Arc::new(audit_writer::Writer::from_config(
        audit_writer::WriterConfig {
            bucket: AUDIT_BUCKET.into(),
            prefix: "audit/".into(),
        },
        &aws.sdk,
    ));
    tokio::spawn(event_sources::sqs_event_source(
        sqs.clone(),
        queue.url.clone(),
        queue.arn.clone(),
        move |event| {
            let writer = writer.clone();
            async move { faults::write_audit_with_injected_crashes(&writer, event).await }
        },
    ));
    Ok(AuditTrail {
        sdk: aws.sdk.clone(),
        sqs,
        queue_url: queue.url,
        dlq_url: dlq.url,
        digest_job,
        digest_key,
        bodies_key,
    })
}

/// Where each route sends its requests, and which of those are bundled mocks.
struct Upstreams {
    urls: BTreeMap<Provider, String>,
    mocks: BTreeMap<Provider, String>,
}

/// Starts a mock for every provider without a configured endpoint; the mock expects the key the
/// gateway must inject (SigV4 providers: none).
fn start_upstreams(
    mock_listeners: BTreeMap<Provider, TcpListener>,
    local: &LocalSettings,
    secrets: &Secrets,
) -> Result<Upstreams, BoxError> {
    let mut urls = local.endpoints.clone();
    let mut mocks = BTreeMap::new();
    for (provider, listener) in mock_listeners {
        let url = format!("http://{}", listener.local_addr()?);
        let router = mock::router(mock::MockState {
            provider,
            recorder: mock::Recorder::default(),
            expected_key: secrets
                .upstream_keys
                .get(&provider)
                .map(|(_, key)| key.clone()),
        });
        tokio::spawn(async move { axum::serve(listener.tap_io(no_delay), router).await });
        mocks.insert(provider, url.clone());
        urls.insert(provider, url);
    }
    Ok(Upstreams { urls, mocks })
}

fn jwks_url(aws: &Aws, pool: &UserPool) -> String {
    format!(
        "{}/{}/.well-known/jwks.json",
        aws.endpoint, pool.user_pool_id
    )
}

/// The settings every function gets (as a Lambda's environment): each provider's upstream as its
/// `UpstreamSpec` names it, Cognito, and the pass-through tuning settings.
fn route_settings(
    local: &LocalSettings,
    aws: &Aws,
    pool: &UserPool,
    secrets: &Secrets,
    upstreams: &Upstreams,
) -> HashMap<String, String> {
    let mut settings: HashMap<String, String> = HashMap::new();
    settings.insert("AWS_REGION".into(), local.region.clone());
    for (provider, url) in &upstreams.urls {
        let secret_id = secrets
            .upstream_keys
            .get(provider)
            .map(|(id, _)| id.as_str());
        for (name, value) in provider.upstream().settings_for(Some(url), secret_id) {
            settings.insert(name.into(), value);
        }
    }
    settings.insert("COGNITO_USER_POOL_ID".into(), pool.user_pool_id.clone());
    settings.insert("COGNITO_APP_CLIENT_IDS".into(), pool.app_client_id.clone());
    settings.insert("COGNITO_JWKS_URL".into(), jwks_url(aws, pool));
    settings.insert(
        "GATEWAY_USAGE_KEYS_SECRET_ID".into(),
        secrets.usage_keys_secret.clone(),
    );
    for name in PASSED_THROUGH {
        if let Ok(value) = std::env::var(name) {
            settings.insert(name.to_string(), value);
        }
    }
    settings
}

/// A provider's request queue as the stack made it.
struct ProviderQueues {
    url: String,
    state: RequestQueue,
}

/// The queue transport: a request queue (+ DLQ) per provider, the payload bucket, and the dispatcher
/// behind an SQS event source on each request queue. The queues exist before the dispatcher is built,
/// since it trusts messages only from the queue URLs it is given.
async fn start_queue_transport(
    local: &LocalSettings,
    aws: &Aws,
    audit: &AuditTrail,
    settings: &mut HashMap<String, String>,
) -> Result<BTreeMap<Provider, ProviderQueues>, BoxError> {
    let sqs = aws.sqs();
    resources::create_bucket(&aws.s3(), PAYLOAD_BUCKET).await?;
    settings.insert("GATEWAY_PAYLOAD_BUCKET".into(), PAYLOAD_BUCKET.into());
    settings.insert(
        "GATEWAY_DISPATCH_VISIBILITY_SECS".into(),
        local.dispatch_visibility_secs.to_string(),
    );
    settings.insert(
        "GATEWAY_DISPATCH_MAX_RECEIVES".into(),
        local.dispatch_max_receives.to_string(),
    );
    let mut created = Vec::new();
    for provider in Provider::ALL {
        let (queue, dlq) = resources::create_queue_with_dlq(
            &sqs,
            &format!("llm-gateway-requests-{}", provider.route_prefix()),
            local.dispatch_visibility_secs,
            local.dispatch_max_receives,
        )
        .await?;
        created.push((provider, queue, dlq));
    }
    settings.insert(
        "GATEWAY_DISPATCH_QUEUE_URLS".into(),
        created
            .iter()
            .map(|(provider, queue, _)| format!("{}={}", provider.route_prefix(), queue.url))
            .collect::<Vec<_>>()
            .join(","),
    );
    let invocations = audit.function();
    let dispatcher = Arc::new(apigw::Function {
        handler: dispatcher::Dispatcher::from_config(
            dispatcher::DispatcherConfig::from_settings(settings)?,
            &aws.sdk,
            Arc::new(invocations.buffer().clone()),
        )?,
        invocations,
    });
    let mut queues = BTreeMap::new();
    for (provider, queue, dlq) in created {
        let dispatcher = dispatcher.clone();
        tokio::spawn(event_sources::sqs_event_source(
            sqs.clone(),
            queue.url.clone(),
            queue.arn.clone(),
            move |event| {
                let dispatcher = dispatcher.clone();
                async move {
                    let _invocation = dispatcher.invocations.begin();
                    faults::dispatch_with_injected_crashes(&dispatcher.handler, event).await
                }
            },
        ));
        queues.insert(
            provider,
            ProviderQueues {
                url: queue.url.clone(),
                state: RequestQueue {
                    url: queue.url,
                    dlq: dlq.url,
                    transport: local.transport_for(provider).as_str().into(),
                },
            },
        );
    }
    Ok(queues)
}

/// One route per provider, on the transport the settings choose, prepared (reply queue, secrets) as a
/// warm execution environment would be.
async fn build_routes(
    local: &LocalSettings,
    aws: &Aws,
    audit: &AuditTrail,
    settings: &HashMap<String, String>,
    queues: &BTreeMap<Provider, ProviderQueues>,
) -> Result<HashMap<Provider, apigw::Function<Route>>, BoxError> {
    let mut routes = HashMap::new();
    for (provider, queue) in queues {
        let mut settings = settings.clone();
        settings.insert(
            TransportKind::SETTING.into(),
            local.transport_for(*provider).as_str().into(),
        );
        settings.insert("GATEWAY_REQUEST_QUEUE_URL".into(), queue.url.clone());
        let config = RouteConfig::from_settings(*provider, &settings)?;
        let invocations = audit.route_function(&config.audit_bodies);
        let route = Route::from_config(&config, &aws.sdk, Arc::new(invocations.buffer().clone()))?;
        route.prepare().await;
        routes.insert(
            *provider,
            apigw::Function {
                handler: route,
                invocations,
            },
        );
    }
    Ok(routes)
}

/// Where the stack answers.
struct Served {
    base_url: String,
    https_base_url: String,
    control_url: String,
    ca_bundle: String,
}

/// The gateway's client ports (HTTP and HTTPS) carry API Gateway's surface only; the control endpoints
/// have their own loopback listener.
fn serve(
    listeners: Listeners,
    local: &LocalSettings,
    control: control::Control,
    gateway: apigw::Gateway,
) -> Result<Served, BoxError> {
    let router = axum::Router::new()
        .fallback(apigw::handle)
        .with_state(Arc::new(gateway));
    let control_url = format!("http://{}", listeners.control.local_addr()?);
    let control_router = control::router(control);
    let control = listeners.control;
    tokio::spawn(async move { axum::serve(control.tap_io(no_delay), control_router).await });

    let base_url = format!("http://{}", listeners.http.local_addr()?);
    let https_base_url = format!("https://localhost:{}", listeners.https.local_addr()?.port());
    let certificate = tls::self_signed(&local.dir.join("tls"))?;
    let http_router = router.clone();
    let http = listeners.http;
    tokio::spawn(async move {
        axum::serve(
            http.tap_io(no_delay),
            http_router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    tokio::spawn(tls::serve(listeners.https, certificate.acceptor, router));
    Ok(Served {
        base_url,
        https_base_url,
        control_url,
        ca_bundle: certificate.cert_path.canonicalize()?.display().to_string(),
    })
}

/// Responses leave as they are written: API Gateway and the providers do not hold a small write back
/// for the peer's ACK (Nagle), and a 40 ms delayed-ACK stall here would be measured as the gateway's.
fn no_delay(stream: &mut tokio::net::TcpStream) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::warn!(%error, "TCP_NODELAY not set");
    }
}

/// The demo user (every scope, department engineering), signed in for the banner's token.
async fn sign_in_demo_user(
    aws: &Aws,
    pool: &UserPool,
    policy: &Policy,
) -> Result<(DemoUser, String), BoxError> {
    let password = format!("Demo-{}!a1", uuid::Uuid::new_v4().simple());
    let groups = vec![
        "gateway-all".to_string(),
        format!("{}engineering", policy.department_group_prefix()),
    ];
    let token = resources::create_user_and_sign_in(
        &aws.cognito(),
        pool,
        "demo",
        &password,
        &groups,
        "engineering",
    )
    .await?;
    Ok((
        DemoUser {
            username: "demo".into(),
            password,
            groups,
        },
        token,
    ))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = ctrl_c.await;
}

fn print_banner(state: &StackState, token: &str, state_file: &str) {
    let base = &state.base_url;
    let https = &state.https_base_url;
    let ca = &state.ca_bundle;
    let region = &state.region;
    println!(
        r#"
LLM gateway local stack is up.
  gateway (HTTP):   {base}
  gateway (HTTPS):  {https}   (self-signed CA bundle: {ca})
  AWS (moto):       {aws}
  control:          {control}   (local only: /_local/metrics, /_local/sweep-reply-queues, /_local/audit-digest)
  state file:       {state_file}

A fresh access token for the demo user (groups gateway-all, dept-engineering; valid 1 hour):
export GATEWAY_TOKEN='{token}'

Each Python snippet below is self-contained: paste it into python3 with GATEWAY_TOKEN exported.

# Azure OpenAI (openai)
import os
from openai import AzureOpenAI
client = AzureOpenAI(azure_endpoint="{base}/azure-openai", api_version="2024-10-21", api_key=os.environ["GATEWAY_TOKEN"])
print(client.chat.completions.create(model="gpt-4o-mini", messages=[{{"role": "user", "content": "hello"}}]).choices[0].message.content)

# Bedrock Claude (boto3 >= 1.39, HTTPS required for bearer tokens)
import os
import boto3
os.environ["AWS_BEARER_TOKEN_BEDROCK"] = os.environ["GATEWAY_TOKEN"]
brt = boto3.client("bedrock-runtime", region_name="{region}", endpoint_url="{https}/bedrock-claude", verify="{ca}")
print(brt.converse(modelId="anthropic.claude-3-5-sonnet-20240620-v1:0", messages=[{{"role": "user", "content": [{{"text": "hello"}}]}}])["output"])

# Gemini (google-genai)
import os
from google import genai
client = genai.Client(api_key=os.environ["GATEWAY_TOKEN"], http_options=genai.types.HttpOptions(base_url="{base}/gemini"))
print(client.models.generate_content(model="gemini-2.0-flash", contents="hello").text)

Stop with Ctrl-C."#,
        aws = state.aws_endpoint_url,
        control = state.control_url,
    );
}
