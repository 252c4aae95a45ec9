//! The local stack: every Lambda handler in one process behind an API Gateway REST emulation, AWS
//! services through the real AWS SDK against moto, and bundled mock providers, with no AWS account and
//! no Docker. Run it with `./local/run.sh`; settings are environment variables (see README).

mod apigw;
mod control;
mod event_sources;
mod faults;
mod mock;
mod moto;
mod ports;
mod resources;
mod settings;
mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use aws_credential_types::Credentials;
use gateway_shared::proxy::{Route, RouteConfig};
use gateway_shared::Provider;
use serde_json::json;
use tokio::net::TcpListener;

use crate::resources::BoxError;
use crate::settings::{LocalSettings, MOCK_PORT_SETTINGS};

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
    let _ = std::fs::remove_file(local.state_file());

    // Every port is taken (or, for moto's, checked) before anything starts, so that a start with a taken
    // port fails at once and names the port and the setting that moves it.
    let http_listener =
        ports::bind(&local.host, local.http_port, "GATEWAY_LOCAL_HTTP_PORT").await?;
    let https_listener =
        ports::bind(&local.host, local.https_port, "GATEWAY_LOCAL_HTTPS_PORT").await?;
    let control_listener = ports::bind(
        control::HOST,
        local.control_port,
        "GATEWAY_LOCAL_CONTROL_PORT",
    )
    .await?;
    let azure_upstream = upstream(&local, local.azure_endpoint.clone(), 0).await?;
    let bedrock_upstream = upstream(&local, local.bedrock_endpoint.clone(), 1).await?;
    let gemini_upstream = upstream(&local, local.gemini_endpoint.clone(), 2).await?;

    let mut moto = match &local.aws_endpoint_url {
        Some(_) => None,
        None => Some(moto::start(&local).await?),
    };
    let aws_endpoint = local.aws_endpoint();
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
        .endpoint_url(&aws_endpoint)
        .credentials_provider(credentials)
        .load()
        .await;
    let cognito = aws_sdk_cognitoidentityprovider::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let s3 = aws_sdk_s3::Client::new(&sdk);
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
    let policy = gateway_shared::proxy::load_policy(local.policy_file.as_deref())?;

    let pool = resources::create_user_pool(&cognito, &policy).await?;
    let azure_key = local
        .azure_key
        .clone()
        .unwrap_or_else(|| format!("local-azure-{}", uuid::Uuid::new_v4().simple()));
    let gemini_key = local
        .gemini_key
        .clone()
        .unwrap_or_else(|| format!("local-gemini-{}", uuid::Uuid::new_v4().simple()));
    let azure_secret = resources::put_secret(
        &secrets,
        "llm-gateway/local/azure-openai-api-key",
        &azure_key,
    )
    .await?;
    let gemini_secret =
        resources::put_secret(&secrets, "llm-gateway/local/gemini-api-key", &gemini_key).await?;
    let usage_keys: serde_json::Map<String, serde_json::Value> = resources::DEPARTMENTS
        .iter()
        .map(|d| {
            (
                d.to_string(),
                format!("usage-key-{d}-{}", uuid::Uuid::new_v4().simple()).into(),
            )
        })
        .collect();
    let usage_secret = resources::put_secret(
        &secrets,
        "llm-gateway/local/department-usage-keys",
        &serde_json::Value::Object(usage_keys).to_string(),
    )
    .await?;

    // The audit trail: queue (+ DLQ) -> audit writer (SQS event source) -> S3.
    let audit_bucket = "llm-gateway-local-audit".to_string();
    resources::create_audit_bucket(&s3, &audit_bucket).await?;
    let (audit_queue, audit_dlq) =
        resources::create_queue_with_dlq(&sqs, "llm-gateway-audit", 30, 5).await?;
    let writer = Arc::new(audit_writer::Writer::from_config(
        audit_writer::WriterConfig {
            bucket: audit_bucket.clone(),
            prefix: "audit/".into(),
        },
        &sdk,
    ));
    tokio::spawn(event_sources::sqs_event_source(
        sqs.clone(),
        audit_queue.url.clone(),
        audit_queue.arn.clone(),
        move |event| {
            let writer = writer.clone();
            async move { writer.handle(event).await }
        },
    ));
    let audit: Arc<dyn gateway_shared::audit::AuditSink> = Arc::new(
        gateway_shared::audit::SqsAuditSink::new(sqs.clone(), audit_queue.url.clone()),
    );

    // Mock providers, unless a real (or other test) upstream is configured for that provider.
    let mut upstreams = HashMap::new();
    let mut mocks = serde_json::Map::new();
    for (provider, mock, upstream, expected_key) in [
        (
            Provider::AzureOpenAi,
            mock::MockProvider::AzureOpenAi,
            azure_upstream,
            Some(azure_key.clone()),
        ),
        (
            Provider::BedrockClaude,
            mock::MockProvider::Bedrock,
            bedrock_upstream,
            None,
        ),
        (
            Provider::Gemini,
            mock::MockProvider::Gemini,
            gemini_upstream,
            Some(gemini_key.clone()),
        ),
    ] {
        let url = match upstream {
            Upstream::Configured(url) => url,
            Upstream::Mock(listener) => {
                let url = format!("http://{}", listener.local_addr()?);
                let router = mock::router(mock::MockState {
                    provider: mock,
                    recorder: mock::Recorder::default(),
                    expected_key,
                });
                tokio::spawn(async move { axum::serve(listener, router).await });
                mocks.insert(state_key(provider).into(), url.clone().into());
                url
            }
        };
        upstreams.insert(provider, url);
    }

    let mut route_settings: HashMap<String, String> = HashMap::new();
    route_settings.insert("AWS_REGION".into(), local.region.clone());
    route_settings.insert(
        "GATEWAY_AZURE_OPENAI_ENDPOINT".into(),
        upstreams[&Provider::AzureOpenAi].clone(),
    );
    route_settings.insert(
        "GATEWAY_AZURE_OPENAI_KEY_SECRET_ID".into(),
        azure_secret.clone(),
    );
    route_settings.insert(
        "GATEWAY_GEMINI_ENDPOINT".into(),
        upstreams[&Provider::Gemini].clone(),
    );
    route_settings.insert("GATEWAY_GEMINI_KEY_SECRET_ID".into(), gemini_secret.clone());
    route_settings.insert(
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME".into(),
        upstreams[&Provider::BedrockClaude].clone(),
    );
    let jwks_url = format!("{aws_endpoint}/{}/.well-known/jwks.json", pool.user_pool_id);
    route_settings.insert("COGNITO_USER_POOL_ID".into(), pool.user_pool_id.clone());
    route_settings.insert("COGNITO_APP_CLIENT_IDS".into(), pool.app_client_id.clone());
    route_settings.insert("COGNITO_JWKS_URL".into(), jwks_url.clone());
    route_settings.insert("GATEWAY_USAGE_KEYS_SECRET_ID".into(), usage_secret);
    for name in [
        "GATEWAY_UPSTREAM_CONNECT_TIMEOUT_MS",
        "GATEWAY_UPSTREAM_RESPONSE_TIMEOUT_MS",
        "GATEWAY_MAX_REQUEST_BYTES",
        "GATEWAY_SCOPE_POLICY_FILE",
        "GATEWAY_BEDROCK_REGION",
        "GATEWAY_DISPATCH_FLUSH_MS",
        "GATEWAY_QUEUE_INLINE_MAX_BYTES",
    ] {
        if let Ok(value) = std::env::var(name) {
            route_settings.insert(name.into(), value);
        }
    }

    // The queue transport: a request queue (+ DLQ) per provider, the payload bucket, and the dispatcher
    // behind an SQS event source on each request queue.
    let payload_bucket = "llm-gateway-local-payloads".to_string();
    resources::create_bucket(&s3, &payload_bucket).await?;
    route_settings.insert("GATEWAY_PAYLOAD_BUCKET".into(), payload_bucket.clone());
    route_settings.insert(
        "GATEWAY_DISPATCH_VISIBILITY_SECS".into(),
        local.dispatch_visibility_secs.to_string(),
    );
    route_settings.insert(
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
    route_settings.insert(
        "GATEWAY_DISPATCH_QUEUE_URLS".into(),
        created
            .iter()
            .map(|(provider, queue, _)| format!("{}={}", provider.route_prefix(), queue.url))
            .collect::<Vec<_>>()
            .join(","),
    );
    let dispatcher = Arc::new(dispatcher::Dispatcher::from_config(
        dispatcher::DispatcherConfig::from_settings(&route_settings)?,
        &sdk,
        audit.clone(),
    )?);
    let mut request_queues = serde_json::Map::new();
    let mut routes = HashMap::new();
    for (provider, queue, dlq) in created {
        let dispatcher = dispatcher.clone();
        tokio::spawn(event_sources::sqs_event_source(
            sqs.clone(),
            queue.url.clone(),
            queue.arn.clone(),
            move |event| {
                let dispatcher = dispatcher.clone();
                async move { faults::dispatch_with_injected_crashes(&dispatcher, event).await }
            },
        ));
        let mut settings = route_settings.clone();
        settings.insert(
            "GATEWAY_TRANSPORT".into(),
            local.transport_for(provider).into(),
        );
        settings.insert("GATEWAY_REQUEST_QUEUE_URL".into(), queue.url.clone());
        let config = RouteConfig::from_settings(provider, &settings)?;
        let route = Route::from_config(&config, &sdk, audit.clone())?;
        route.prepare().await;
        routes.insert(provider, route);
        request_queues.insert(
            state_key(provider).into(),
            json!({"url": queue.url, "dlq": dlq.url, "transport": local.transport_for(provider)}),
        );
    }
    let authorizer_config = authorizer::AuthorizerConfig::from_settings(&route_settings)?;
    let authorizer = authorizer::State::from_config(authorizer_config, &sdk, audit.clone()).await?;
    let gateway = Arc::new(apigw::Gateway {
        region: local.region.clone(),
        authorizer,
        routes,
    });
    // The gateway's client ports carry API Gateway's surface only; the control endpoints have their own.
    let router = axum::Router::new()
        .fallback(apigw::handle)
        .with_state(gateway);
    let control_url = format!("http://{}", control_listener.local_addr()?);
    let control_router = control::router(sqs.clone());
    tokio::spawn(async move { axum::serve(control_listener, control_router).await });

    let base_url = format!("http://{}", http_listener.local_addr()?);
    let https_base_url = format!("https://localhost:{}", https_listener.local_addr()?.port());
    let certificate = tls::self_signed(&local.dir.join("tls"))?;
    let http_router = router.clone();
    tokio::spawn(async move {
        axum::serve(
            http_listener,
            http_router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    tokio::spawn(tls::serve(https_listener, certificate.acceptor, router));

    let demo_password = format!("Demo-{}!a1", uuid::Uuid::new_v4().simple());
    let demo_groups = vec![
        "gateway-all".to_string(),
        format!("{}engineering", policy.department_group_prefix()),
    ];
    let token = resources::create_user_and_sign_in(
        &cognito,
        &pool,
        "demo",
        &demo_password,
        &demo_groups,
        "engineering",
    )
    .await?;

    let ca_bundle = certificate.cert_path.canonicalize()?.display().to_string();
    let state = json!({
        "base_url": base_url,
        "https_base_url": https_base_url,
        "control_url": control_url,
        "ca_bundle": ca_bundle,
        "aws_endpoint_url": aws_endpoint,
        "region": local.region,
        "user_pool_id": pool.user_pool_id,
        "app_client_id": pool.app_client_id,
        "issuer": format!("https://cognito-idp.{}.amazonaws.com/{}", local.region, pool.user_pool_id),
        "jwks_url": jwks_url,
        "demo_user": {"username": "demo", "password": demo_password, "groups": demo_groups},
        "groups": pool.groups,
        "secrets": {"azure_openai": azure_secret, "gemini": gemini_secret},
        "upstreams": {
            "azure_openai": upstreams[&Provider::AzureOpenAi],
            "bedrock": upstreams[&Provider::BedrockClaude],
            "gemini": upstreams[&Provider::Gemini],
        },
        "mocks": mocks,
        "upstream_response_timeout_ms": route_settings
            .get("GATEWAY_UPSTREAM_RESPONSE_TIMEOUT_MS")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(120_000),
        "buckets": {"audit": audit_bucket, "payloads": payload_bucket},
        "queues": {
            "audit": audit_queue.url,
            "audit_dlq": audit_dlq.url,
            "requests": request_queues,
            "reply_prefix": "llm-gateway-reply-",
        },
    });
    // Written last and atomically: its presence means the stack is ready.
    let state_file = local.state_file();
    let tmp = state_file.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&state)?)?;
    std::fs::rename(&tmp, &state_file)?;
    print_banner(&state, &token, &state_file.display().to_string());

    shutdown_signal().await;
    if let Some(child) = moto.as_mut() {
        let _ = child.kill().await;
    }
    let _ = std::fs::remove_file(&state_file);
    Ok(())
}

fn state_key(provider: Provider) -> &'static str {
    match provider {
        Provider::AzureOpenAi => "azure_openai",
        Provider::BedrockClaude => "bedrock",
        Provider::Gemini => "gemini",
    }
}

/// Where a provider route sends requests: a configured endpoint, or the bundled mock on its listener.
enum Upstream {
    Configured(String),
    Mock(TcpListener),
}

/// The upstream of the provider whose mock port is `local.mock_ports[index]`.
async fn upstream(
    local: &LocalSettings,
    configured: Option<String>,
    index: usize,
) -> Result<Upstream, BoxError> {
    Ok(match configured {
        Some(url) => Upstream::Configured(url),
        None => Upstream::Mock(
            ports::bind(
                &local.host,
                local.mock_ports[index],
                MOCK_PORT_SETTINGS[index],
            )
            .await?,
        ),
    })
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

fn print_banner(state: &serde_json::Value, token: &str, state_file: &str) {
    let base = state["base_url"].as_str().unwrap_or_default();
    let https = state["https_base_url"].as_str().unwrap_or_default();
    let ca = state["ca_bundle"].as_str().unwrap_or_default();
    let region = state["region"].as_str().unwrap_or_default();
    println!(
        r#"
LLM gateway local stack is up.
  gateway (HTTP):   {base}
  gateway (HTTPS):  {https}   (self-signed CA bundle: {ca})
  AWS (moto):       {aws}
  control:          {control}   (local only: /_local/metrics, /_local/sweep-reply-queues)
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
        aws = state["aws_endpoint_url"].as_str().unwrap_or_default(),
        control = state["control_url"].as_str().unwrap_or_default(),
    );
}
